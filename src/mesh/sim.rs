//! Deterministic N-node simulator over the Babel engine and the FIB.
//!
//! Nodes are [`Engine`]s with a [`Fib`] each; links are tunnels (two ends) or LANs (any
//! number of members) with latency, loss, an MTU and an up/down state. A virtual clock jumps
//! from one wake-up to the next (the earliest engine timeout or packet delivery); every
//! random choice (engine seeds, loss) derives from one seed, so a run is reproducible.
//!
//! Faults: silent link cuts ([`Sim::set_link_up`]), partitions that heal
//! ([`Sim::partition`], [`Sim::heal`]), tunnels the hosts see die ([`Sim::kill_tunnel`]),
//! per-link loss and MTU ([`Sim::set_loss`], [`Sim::set_mtu`]), node restarts with an older
//! seqno or a new router-id ([`Sim::restart_node`]). With [`Sim::check_loops`] every step
//! re-walks the forwarding graph of each destination whose routes changed (or all, after a
//! link state change) and checks every drained node's FIB against its engine;
//! [`Sim::run_until_converged`] uses the same incremental bookkeeping, so both stay
//! cheap at a few hundred nodes. Scale tests live in `sim_tests.rs`.
//!
//! Addressing: node `i` owns `fd00:0:0:i::/64` (its "prefix::1" is `fd00:0:0:i::1`) and,
//! when asked, `10.i.0.0/16`; its router-id is `i` big-endian. LAN members use link-local
//! `fe80::<i>:<link>`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::mesh::babel::{
    Config, CostMultiplier, Engine, Event, IfaceConfig, IfaceId, IfaceKind, MacKeys, NeighbourId,
    Prefix, RouteChange, RouteKey, Time, Timers,
};
use crate::mesh::fib::Fib;

/// Index of a node.
pub type NodeIdx = usize;
/// Index of a link.
pub type LinkIdx = usize;

/// Properties of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkParams {
    /// One-way latency.
    pub latency: Duration,
    /// Loss probability in parts per million.
    pub loss_ppm: u32,
    /// Packets larger than this are dropped.
    pub mtu: usize,
    /// Timers of the interfaces on this link.
    pub timers: Timers,
    /// RFC 9616 timestamps on the interfaces of this link ([`IfaceConfig::timestamps`]).
    pub timestamps: bool,
    /// Reliable urgent messages on the interfaces of this link ([`IfaceConfig::acks`]).
    pub acks: bool,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            latency: Duration::from_millis(10),
            loss_ppm: 0,
            mtu: 1400,
            timers: Timers::default(),
            timestamps: false,
            acks: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum LinkKind {
    Tunnel,
    Lan { lossy: bool },
}

struct Link {
    kind: LinkKind,
    params: LinkParams,
    /// (node, interface on that node, the node's address on the link)
    members: Vec<(NodeIdx, IfaceId, IpAddr)>,
    up: bool,
}

/// One simulated node.
pub struct Node {
    /// The engine.
    pub engine: Engine,
    /// Its forwarding table, fed from route changes.
    pub fib: Fib,
    /// Events seen so far.
    pub events: Vec<Event>,
    /// Interface → link.
    ifaces: BTreeMap<IfaceId, LinkIdx>,
    /// Interface → the configuration it was added with (to re-add it after a restart).
    cfgs: BTreeMap<IfaceId, IfaceConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    node: NodeIdx,
    iface: IfaceId,
    src: SocketAddr,
    dst: SocketAddr,
    bytes: Vec<u8>,
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets sent by engines.
    pub sent: u64,
    /// Bytes sent by engines.
    pub bytes: u64,
    /// Packets lost (loss, MTU, link down).
    pub dropped: u64,
    /// Of which: larger than the link MTU.
    pub mtu_dropped: u64,
    /// Largest packet an engine sent.
    pub max_packet: usize,
    /// Steps (wake-ups) executed.
    pub steps: u64,
}

/// What went wrong in a forwarding walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The walk came back to a node it had visited.
    Loop(Vec<NodeIdx>),
    /// A node has no route.
    NoRoute(NodeIdx),
    /// A next hop that is not a neighbour on that interface.
    BadNextHop(NodeIdx),
    /// The next hop is across a link that is down (the routing has not noticed yet).
    DeadLink(NodeIdx),
}

/// The simulator.
pub struct Sim {
    now: Time,
    seed: [u8; 32],
    rng: ChaCha8Rng,
    /// Nodes.
    pub nodes: Vec<Node>,
    links: Vec<Link>,
    queue: BinaryHeap<Reverse<(Time, u64, Delivery)>>,
    seq: u64,
    /// Each node's `poll_timeout`, refreshed whenever the node is drained.
    wake: Vec<Option<Time>>,
    /// Check loop freedom after every step (slower).
    pub check_loops: bool,
    /// Counters.
    pub stats: Stats,
    /// Destinations (node indexes) whose forwarding state changed since their last check.
    dirty: BTreeSet<NodeIdx>,
    /// Per destination: every node's forwarding walk reached it at the last check.
    reach_ok: Vec<bool>,
    /// Nodes drained during the current step (FIB-vs-engine check).
    touched: BTreeSet<NodeIdx>,
    restarts: u64,
    /// Configuration of the engines of nodes added (or restarted) from now on.
    engine_cfg: Config,
}

/// Node `i`'s /64.
pub fn node_prefix(i: NodeIdx) -> Prefix {
    let addr = Ipv6Addr::new(0xfd00, 0, 0, (i & 0xffff) as u16, 0, 0, 0, 0);
    Prefix::new(IpAddr::V6(addr), 64).expect("64 is a valid IPv6 prefix length")
}

/// Node `i`'s IPv4 /16.
pub fn node_prefix_v4(i: NodeIdx) -> Prefix {
    let addr = Ipv4Addr::new(10, (i & 0xff) as u8, 0, 0);
    Prefix::new(IpAddr::V4(addr), 16).expect("16 is a valid IPv4 prefix length")
}

/// The node whose /64 `p` is ([`node_prefix`]), if any.
pub fn prefix_owner(p: &Prefix) -> Option<NodeIdx> {
    match p.addr() {
        IpAddr::V6(a) if p.len() == 64 && a.segments()[..3] == [0xfd00, 0, 0] => {
            Some(usize::from(a.segments()[3]))
        }
        _ => None,
    }
}

/// Node `i`'s prefix::1.
pub fn node_addr(i: NodeIdx) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, (i & 0xffff) as u16, 0, 0, 0, 1)
}

impl Sim {
    /// An empty simulation.
    pub fn new(seed: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_be_bytes());
        Sim {
            now: Time::ZERO,
            seed: s,
            rng: ChaCha8Rng::from_seed(s),
            nodes: Vec::new(),
            links: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            wake: Vec::new(),
            check_loops: false,
            stats: Stats::default(),
            dirty: BTreeSet::new(),
            reach_ok: Vec::new(),
            touched: BTreeSet::new(),
            restarts: 0,
            engine_cfg: Config::default(),
        }
    }

    /// Virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The engine configuration of nodes added or restarted from now on (default:
    /// [`Config::default`]), e.g. smaller budgets for a flooding test.
    pub fn set_engine_config(&mut self, cfg: Config) {
        self.engine_cfg = cfg;
    }

    /// Adds a node announcing its /64.
    pub fn add_node(&mut self) -> NodeIdx {
        let i = self.nodes.len();
        let mut seed = self.seed;
        seed[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        let mut rid = [0u8; 8];
        rid.copy_from_slice(&(i as u64 + 1).to_be_bytes());
        let mut engine = Engine::new(self.engine_cfg.clone(), rid, seed, self.now);
        engine.originate(self.now, node_prefix(i));
        self.nodes.push(Node {
            engine,
            fib: Fib::new(),
            events: Vec::new(),
            ifaces: BTreeMap::new(),
            cfgs: BTreeMap::new(),
        });
        self.wake.push(None);
        self.reach_ok.push(false);
        self.invalidate_all();
        self.drain(i);
        i
    }

    /// Adds `n` nodes.
    pub fn add_nodes(&mut self, n: usize) -> Vec<NodeIdx> {
        (0..n).map(|_| self.add_node()).collect()
    }

    /// Sets the MAC keys of every node.
    pub fn set_keys_all(&mut self, keys: &MacKeys) {
        for n in &mut self.nodes {
            n.engine.set_mac_keys(keys.clone());
        }
    }

    /// Sets one node's MAC keys.
    pub fn set_keys(&mut self, node: NodeIdx, keys: MacKeys) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.engine.set_mac_keys(keys);
        }
    }

    /// Connects two nodes with a tunnel.
    pub fn tunnel(&mut self, a: NodeIdx, b: NodeIdx, params: LinkParams) -> LinkIdx {
        let l = self.links.len();
        let now = self.now;
        let mut members = Vec::new();
        for (x, y) in [(a, b), (b, a)] {
            let mut cfg = IfaceConfig::tunnel(&format!("t{x}-{y}"), node_addr(x), node_addr(y));
            cfg.timers = params.timers;
            cfg.max_packet = params.mtu;
            cfg.timestamps = params.timestamps;
            cfg.acks = params.acks;
            let id = self.nodes[x].engine.add_interface(now, cfg.clone());
            self.nodes[x].ifaces.insert(id, l);
            self.nodes[x].cfgs.insert(id, cfg);
            members.push((x, id, IpAddr::V6(node_addr(x))));
        }
        self.links.push(Link {
            kind: LinkKind::Tunnel,
            params,
            members,
            up: true,
        });
        self.drain(a);
        self.drain(b);
        l
    }

    /// Puts nodes on a shared LAN.
    pub fn lan(&mut self, nodes: &[NodeIdx], lossy: bool, params: LinkParams) -> LinkIdx {
        let l = self.links.len();
        let now = self.now;
        let mut members = Vec::new();
        for &x in nodes {
            let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, x as u16, l as u16);
            let mut cfg = IfaceConfig::lan(&format!("lan{l}"), ll);
            if let IfaceKind::Lan { lossy: lo, .. } = &mut cfg.kind {
                *lo = lossy;
            }
            cfg.timers = params.timers;
            cfg.max_packet = params.mtu;
            cfg.timestamps = params.timestamps;
            cfg.acks = params.acks;
            let id = self.nodes[x].engine.add_interface(now, cfg.clone());
            self.nodes[x].ifaces.insert(id, l);
            self.nodes[x].cfgs.insert(id, cfg);
            members.push((x, id, IpAddr::V6(ll)));
        }
        self.links.push(Link {
            kind: LinkKind::Lan { lossy },
            params,
            members,
            up: true,
        });
        for &x in nodes {
            self.drain(x);
        }
        l
    }

    /// Silently cuts or heals a link (packets vanish; nobody is told).
    pub fn set_link_up(&mut self, link: LinkIdx, up: bool) {
        if let Some(l) = self.links.get_mut(link) {
            l.up = up;
        }
        self.invalidate_all();
    }

    /// Changes a link's MTU (the engines are not told: their `max_packet` stays).
    pub fn set_mtu(&mut self, link: LinkIdx, mtu: usize) {
        if let Some(l) = self.links.get_mut(link) {
            l.params.mtu = mtu;
        }
    }

    /// Silently cuts every link joining `side` to the rest of the network (a LAN with
    /// members on both sides goes down as a whole) and returns the links it cut, for
    /// [`Sim::heal`]. Links already down are left alone.
    pub fn partition(&mut self, side: &[NodeIdx]) -> Vec<LinkIdx> {
        let side: BTreeSet<NodeIdx> = side.iter().copied().collect();
        let cut: Vec<LinkIdx> = (0..self.links.len())
            .filter(|&l| {
                let m = &self.links[l].members;
                self.links[l].up
                    && m.iter().any(|x| side.contains(&x.0))
                    && m.iter().any(|x| !side.contains(&x.0))
            })
            .collect();
        for &l in &cut {
            self.set_link_up(l, false);
        }
        cut
    }

    /// Brings the links a [`Sim::partition`] cut back up.
    pub fn heal(&mut self, cut: &[LinkIdx]) {
        for &l in cut {
            self.set_link_up(l, true);
        }
    }

    /// Restarts a node: its engine and FIB are replaced by fresh ones (a new RNG seed,
    /// hence a new random initial seqno), announcing the same prefixes on the same links.
    /// `seqno` forces the new engine's seqno (e.g. one older than before the restart, the
    /// hard case for neighbours' source tables); `new_router_id` gives it a router-id it
    /// never had. Peers across tunnels see the QUIC connection close and reopen at once
    /// (neighbour removed and re-added); LAN members are not told anything.
    pub fn restart_node(
        &mut self,
        node: NodeIdx,
        seqno: Option<crate::mesh::babel::Seqno>,
        new_router_id: bool,
    ) {
        let Some(old) = self.nodes.get(node) else {
            return;
        };
        self.restarts += 1;
        let now = self.now;
        let mut seed = self.seed;
        seed[8..16].copy_from_slice(&(node as u64).to_be_bytes());
        seed[16..24].copy_from_slice(&self.restarts.to_be_bytes());
        let rid = if new_router_id {
            let mut rid = [0u8; 8];
            rid[..4].copy_from_slice(&(self.restarts as u32 | 0x8000_0000).to_be_bytes());
            rid[4..].copy_from_slice(&(node as u32 + 1).to_be_bytes());
            rid
        } else {
            old.engine.router_id().0
        };
        let prefixes: Vec<RouteKey> = old.engine.local_prefixes().copied().collect();
        let ifaces: Vec<(IfaceId, LinkIdx, IfaceConfig)> = old
            .ifaces
            .iter()
            .filter_map(|(id, l)| Some((*id, *l, old.cfgs.get(id)?.clone())))
            .collect();
        let mut engine = Engine::new(self.engine_cfg.clone(), rid, seed, now);
        if let Some(s) = seqno {
            engine.set_seqno(now, s);
        }
        for p in prefixes {
            engine.originate(now, p);
        }
        let mut map = BTreeMap::new();
        let mut cfgs = BTreeMap::new();
        let mut peers = Vec::new();
        for (old_id, l, cfg) in ifaces {
            let id = engine.add_interface(now, cfg.clone());
            map.insert(id, l);
            cfgs.insert(id, cfg);
            let link = &mut self.links[l];
            for m in link
                .members
                .iter_mut()
                .filter(|m| m.0 == node && m.1 == old_id)
            {
                m.1 = id;
            }
            if link.kind == LinkKind::Tunnel && link.up {
                let me = IpAddr::V6(node_addr(node));
                peers.extend(
                    link.members
                        .iter()
                        .filter(|m| m.0 != node)
                        .map(|m| (m.0, m.1, me)),
                );
            }
        }
        let n = &mut self.nodes[node];
        n.engine = engine;
        n.fib = Fib::new();
        n.ifaces = map;
        n.cfgs = cfgs;
        self.invalidate_all();
        self.drain(node);
        for (peer, iface, addr) in peers {
            let nid = NeighbourId { iface, addr };
            let e = &mut self.nodes[peer].engine;
            let _ = e.remove_neighbour(now, nid);
            let _ = e.add_neighbour(now, iface, addr);
            self.drain(peer);
        }
    }

    /// Changes a link's loss.
    pub fn set_loss(&mut self, link: LinkIdx, loss_ppm: u32) {
        if let Some(l) = self.links.get_mut(link) {
            l.params.loss_ppm = loss_ppm;
        }
    }

    /// A tunnel dies and both hosts notice at once (QUIC connection closed): the
    /// neighbours are removed from both engines and the link stops carrying packets.
    pub fn kill_tunnel(&mut self, link: LinkIdx) {
        self.invalidate_all();
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        l.up = false;
        let members = l.members.clone();
        for (i, &(node, iface, _)) in members.iter().enumerate() {
            let Some(&(_, _, peer)) = members.get(1 - i.min(1)) else {
                continue;
            };
            let now = self.now;
            let _ = self.nodes[node]
                .engine
                .remove_neighbour(now, NeighbourId { iface, addr: peer });
            self.drain(node);
        }
    }

    /// Brings a killed tunnel back: both hosts re-add the neighbour.
    pub fn revive_tunnel(&mut self, link: LinkIdx) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.kind != LinkKind::Tunnel {
            return;
        }
        l.up = true;
        self.invalidate_all();
        let Some(l) = self.links.get(link) else {
            return;
        };
        let members = l.members.clone();
        for (i, &(node, iface, _)) in members.iter().enumerate() {
            let Some(&(_, _, peer)) = members.get(1 - i.min(1)) else {
                continue;
            };
            let now = self.now;
            let _ = self.nodes[node].engine.add_neighbour(now, iface, peer);
            self.drain(node);
        }
    }

    /// Number of links.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Sets the cost multiplier a node applies to the neighbour across a tunnel.
    pub fn set_multiplier(&mut self, link: LinkIdx, node: NodeIdx, m: CostMultiplier) {
        let Some(l) = self.links.get(link) else {
            return;
        };
        let Some(&(_, iface, _)) = l.members.iter().find(|m| m.0 == node) else {
            return;
        };
        let Some(&(_, _, peer)) = l.members.iter().find(|m| m.0 != node) else {
            return;
        };
        let now = self.now;
        let _ =
            self.nodes[node]
                .engine
                .set_cost_multiplier(now, NeighbourId { iface, addr: peer }, m);
        self.drain(node);
    }

    /// Sets the RTT a node reports for the neighbour across a tunnel.
    pub fn set_rtt(&mut self, link: LinkIdx, node: NodeIdx, rtt: Duration) {
        let Some(l) = self.links.get(link) else {
            return;
        };
        let Some(&(_, iface, _)) = l.members.iter().find(|m| m.0 == node) else {
            return;
        };
        let Some(&(_, _, peer)) = l.members.iter().find(|m| m.0 != node) else {
            return;
        };
        let now = self.now;
        let _ = self.nodes[node]
            .engine
            .set_rtt(now, NeighbourId { iface, addr: peer }, rtt);
        self.drain(node);
    }

    /// Runs a closure on a node's engine at the current time, then drains it.
    pub fn with_engine(&mut self, node: NodeIdx, f: impl FnOnce(&mut Engine, Time)) {
        let now = self.now;
        f(&mut self.nodes[node].engine, now);
        self.drain(node);
    }

    fn drain(&mut self, node: NodeIdx) {
        let now = self.now;
        self.touched.insert(node);
        let mut out = Vec::new();
        {
            let n = &mut self.nodes[node];
            while let Some(t) = n.engine.poll_transmit(now) {
                out.push(t);
            }
            while let Some(c) = n.engine.poll_route_change() {
                n.fib.apply(&c);
                let p = match &c {
                    RouteChange::Added(r) | RouteChange::Changed(r) => r.prefix,
                    RouteChange::Removed(p) => *p,
                };
                if let Some(owner) = prefix_owner(&p) {
                    self.dirty.insert(owner);
                }
            }
            n.fib.publish();
            while let Some(e) = n.engine.poll_event() {
                n.events.push(e);
            }
            self.wake[node] = n.engine.poll_timeout();
        }
        for t in out {
            self.stats.sent += 1;
            self.stats.bytes += t.bytes.len() as u64;
            let Some(&link_idx) = self.nodes[node].ifaces.get(&t.iface) else {
                continue;
            };
            let link = &self.links[link_idx];
            self.stats.max_packet = self.stats.max_packet.max(t.bytes.len());
            if t.bytes.len() > link.params.mtu {
                self.stats.mtu_dropped += 1;
            }
            if !link.up || t.bytes.len() > link.params.mtu {
                self.stats.dropped += 1;
                continue;
            }
            let multicast = t.dst.ip().is_multicast();
            let targets: Vec<(NodeIdx, IfaceId, IpAddr)> = link
                .members
                .iter()
                .filter(|m| {
                    m.0 != node && (multicast || m.2 == t.dst.ip() || link.kind == LinkKind::Tunnel)
                })
                .copied()
                .collect();
            let (latency, loss) = (link.params.latency, link.params.loss_ppm);
            for (to, iface, _) in targets {
                if loss > 0 && (self.rng.next_u32() % 1_000_000) < loss {
                    self.stats.dropped += 1;
                    continue;
                }
                self.seq += 1;
                self.queue.push(Reverse((
                    t.at + latency,
                    self.seq,
                    Delivery {
                        node: to,
                        iface,
                        src: t.src,
                        dst: t.dst,
                        bytes: t.bytes.clone(),
                    },
                )));
            }
        }
    }

    /// The next wake-up: a delivery or an engine timeout.
    fn next_wakeup(&self) -> Option<Time> {
        let q = self.queue.peek().map(|Reverse((t, _, _))| *t);
        let e = self.wake.iter().flatten().min().copied();
        match (q, e) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Executes one wake-up if it is not later than `limit`; returns false otherwise.
    pub fn step(&mut self, limit: Time) -> bool {
        let Some(t) = self.next_wakeup() else {
            return false;
        };
        if t > limit {
            return false;
        }
        self.now = self.now.max(t);
        let now = self.now;
        self.stats.steps += 1;
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, d))) = self.queue.pop() else {
                break;
            };
            self.nodes[d.node]
                .engine
                .handle_packet(now, d.iface, d.src, d.dst, &d.bytes);
            self.drain(d.node);
        }
        for i in 0..self.nodes.len() {
            if self.wake[i].is_some_and(|w| w <= now) {
                self.nodes[i].engine.handle_timeout(now);
                self.drain(i);
            }
        }
        let touched = std::mem::take(&mut self.touched);
        if self.check_loops {
            // Only destinations whose routes changed (or all, after a link state change)
            // can have acquired a loop since the last step.
            for to in std::mem::take(&mut self.dirty) {
                match self.dest_status(to) {
                    Ok(all) => self.reach_ok[to] = all,
                    Err(e) => panic!("forwarding loop at {}: {e:?}", self.now),
                }
            }
            for i in touched {
                let n = &self.nodes[i];
                let fib: Vec<_> = n
                    .fib
                    .routes()
                    .map(|e| (RouteKey::from_source(e.prefix, e.src), e.next_hop, e.iface))
                    .collect();
                let sel: Vec<_> = n
                    .engine
                    .selected_routes()
                    .map(|r| (r.prefix, r.next_hop, r.iface))
                    .collect();
                assert_eq!(
                    fib, sel,
                    "node {i}: FIB out of step with the engine at {}",
                    self.now
                );
            }
        }
        true
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Time) {
        while self.step(until) {}
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until every node reaches every other node's /64 (checked after each step),
    /// or `max` elapses. Returns the virtual time taken.
    pub fn run_until_converged(&mut self, max: Duration) -> Option<Duration> {
        let start = self.now;
        let limit = start + max;
        loop {
            if self.converged_cached() {
                return Some(self.now - start);
            }
            if !self.step(limit) {
                return if self.converged_cached() {
                    Some(self.now - start)
                } else {
                    None
                };
            }
        }
    }

    /// True when every node's FIB walks to every other node's prefix.
    pub fn converged(&self) -> bool {
        let n = self.nodes.len();
        (0..n).all(|from| (0..n).all(|to| from == to || self.walk(from, to).is_ok()))
    }

    /// [`Sim::converged`], recomputing only destinations whose routes or links changed
    /// since the last call, after a cheap necessary test (every FIB holds at least n-1
    /// routes). Loops count as not converged.
    pub fn converged_cached(&mut self) -> bool {
        let n = self.nodes.len();
        if self.nodes.iter().any(|x| x.fib.len() + 1 < n) {
            return false;
        }
        for to in std::mem::take(&mut self.dirty) {
            self.reach_ok[to] = self.dest_status(to).unwrap_or(false);
        }
        self.reach_ok.iter().all(|ok| *ok)
    }

    /// Marks every destination for rechecking.
    fn invalidate_all(&mut self) {
        self.dirty.extend(0..self.nodes.len());
    }

    /// Walks every node's next hop towards node `to` at once (each node's next hop looked
    /// up once, walks memoised): `Ok(true)` if every node reaches `to`, `Ok(false)` if some
    /// have no route or a dead link, `Err` on a forwarding loop or a bad next hop.
    fn dest_status(&self, to: NodeIdx) -> Result<bool, WalkError> {
        const UNKNOWN: u8 = 0;
        const ON_PATH: u8 = 1;
        const REACHES: u8 = 2;
        const FAILS: u8 = 3;
        let n = self.nodes.len();
        let dst = IpAddr::V6(node_addr(to));
        let mut state = vec![UNKNOWN; n];
        state[to] = REACHES;
        let mut all = true;
        let mut path = Vec::new();
        for from in 0..n {
            path.clear();
            let mut cur = from;
            let verdict = loop {
                match state[cur] {
                    REACHES => break REACHES,
                    FAILS => break FAILS,
                    ON_PATH => {
                        path.push(cur);
                        return Err(WalkError::Loop(path));
                    }
                    _ => {}
                }
                state[cur] = ON_PATH;
                path.push(cur);
                let Some(e) = self.nodes[cur].fib.reader().lookup(dst) else {
                    break FAILS;
                };
                let Some(next) = self.next_node(cur, e.iface, e.next_hop) else {
                    return Err(WalkError::BadNextHop(cur));
                };
                if !self.link_up(cur, e.iface) {
                    break FAILS;
                }
                cur = next;
            };
            for &p in &path {
                state[p] = verdict;
            }
            all &= verdict == REACHES;
        }
        Ok(all)
    }

    /// Which node and interface owns `addr` on the link behind `iface` of `node`.
    fn next_node(&self, node: NodeIdx, iface: IfaceId, addr: IpAddr) -> Option<NodeIdx> {
        let l = self.links.get(*self.nodes[node].ifaces.get(&iface)?)?;
        l.members
            .iter()
            .find(|m| m.0 != node && m.2 == addr)
            .map(|m| m.0)
    }

    fn link_up(&self, node: NodeIdx, iface: IfaceId) -> bool {
        self.nodes[node]
            .ifaces
            .get(&iface)
            .and_then(|l| self.links.get(*l))
            .is_some_and(|l| l.up)
    }

    /// Follows FIB next hops from `from` towards node `to`'s prefix::1.
    pub fn walk(&self, from: NodeIdx, to: NodeIdx) -> Result<Vec<NodeIdx>, WalkError> {
        let dst = IpAddr::V6(node_addr(to));
        let mut path = vec![from];
        let mut seen = BTreeSet::from([from]);
        let mut cur = from;
        while cur != to {
            let Some(e) = self.nodes[cur].fib.reader().lookup(dst) else {
                return Err(WalkError::NoRoute(cur));
            };
            let Some(next) = self.next_node(cur, e.iface, e.next_hop) else {
                return Err(WalkError::BadNextHop(cur));
            };
            if !self.link_up(cur, e.iface) {
                return Err(WalkError::DeadLink(cur));
            }
            path.push(next);
            if !seen.insert(next) {
                return Err(WalkError::Loop(path));
            }
            cur = next;
        }
        Ok(path)
    }

    /// Checks that no forwarding walk loops (missing routes are fine).
    pub fn check_loop_free(&self) -> Result<(), WalkError> {
        let n = self.nodes.len();
        for to in 0..n {
            for from in 0..n {
                match self.walk(from, to) {
                    Err(e @ WalkError::Loop(_)) => return Err(e),
                    Err(e @ WalkError::BadNextHop(_)) => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Members of a link (node indexes).
    pub fn link_nodes(&self, link: LinkIdx) -> Vec<NodeIdx> {
        self.links
            .get(link)
            .map(|l| l.members.iter().map(|m| m.0).collect())
            .unwrap_or_default()
    }

    /// Hop distances from `from` over the links that are up (`usize::MAX`: unreachable).
    pub fn hops_from(&self, from: NodeIdx) -> Vec<usize> {
        let n = self.nodes.len();
        let mut adj = vec![Vec::new(); n];
        for l in self.links.iter().filter(|l| l.up) {
            for a in &l.members {
                for b in &l.members {
                    if a.0 != b.0 {
                        adj[a.0].push(b.0);
                    }
                }
            }
        }
        let mut dist = vec![usize::MAX; n];
        let mut q = std::collections::VecDeque::from([from]);
        dist[from] = 0;
        while let Some(u) = q.pop_front() {
            for &v in &adj[u] {
                if dist[v] == usize::MAX {
                    dist[v] = dist[u] + 1;
                    q.push_back(v);
                }
            }
        }
        dist
    }

    /// Largest hop distance between two connected nodes over the links that are up.
    pub fn hop_diameter(&self) -> usize {
        (0..self.nodes.len())
            .flat_map(|i| self.hops_from(i))
            .filter(|d| *d != usize::MAX)
            .max()
            .unwrap_or(0)
    }

    /// Total routes selected across nodes.
    pub fn selected_count(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.engine.selected_routes().count())
            .sum()
    }
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod sim_tests;

/// Whole nodes ([`crate::mesh::node::NodeCore`]) with a simulated registry.
#[path = "sim_nodes.rs"]
pub mod nodes;

#[cfg(test)]
#[path = "sim_unit_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sim_scale_tests.rs"]
mod scale;
