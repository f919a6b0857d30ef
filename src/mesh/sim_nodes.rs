//! Whole nodes in the simulator: N [`NodeCore`]s, a simulated registry and an underlay with
//! latency, loss, path MTU and partitions, on one virtual clock.
//!
//! The simulator plays the node's shell: it executes each core's [`Action`]s the way
//! `mesh::node::shell` does, against models instead of sockets:
//! * **tunnels** — a dial succeeds after two one-way latencies when the target runs, the path
//!   is up and carries [`QUIC_MIN_MTU`]-byte packets, and neither side's trust set (what the
//!   core last sent in [`Action::SetRevoked`]) names the other's serial; a refusal of our
//!   serial comes back as `DialFailed { revoked: true }` after one round trip, anything else
//!   after the dial timeout. Babel datagrams see the path's loss; control messages are
//!   reliable and ordered; a close reaches the peer with its code; a cut path or a silently
//!   killed node ends its tunnels after the QUIC idle timeout;
//! * **the registry** ([`SimRegistry`]) — the CA, signed parameters, the CRL, the MAC key cycle,
//!   renewal (refused for a banned prefix), bootstrap peers and parameter watches; it can be
//!   down.
//!
//! Every random choice (core seeds, loss, bootstrap picks) derives from one seed, so a run is
//! reproducible: the same seed gives the same event sequence.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use ipnet::Ipv6Net;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::identity;
use crate::mesh::babel::Timers;
use crate::mesh::babel::time::Time;
use crate::mesh::netstate::NetState;
use crate::mesh::node::core::{
    Action, CoreConfig, Input, MacKeyBytes, NodeCore, Now, OriginSetup, Renewal, SecretBytes,
    TunnelId, TunnelInfo,
};
use crate::mesh::peers::PeerCache;
use crate::mesh::tunnels::control::PeerAddr;
use crate::mesh::tunnels::{HelloInfo, QUIC_MIN_MTU};
use crate::params::{
    CountryRules, CrlRef, MacState, NetworkParams, PROTOCOL_VERSION, SignedParams, TunnelPolicy,
};
use crate::registry::ca::Ca;
use crate::registry::mac::{self as mac_cycle, Slot, Slots};
use crate::registry_client::ClientError;

/// Index of a node.
pub type NodeIdx = usize;

/// The network prefix of every simulated network.
pub const NETWORK: &str = "fd00:1::/48";
/// Unix time at the start of every simulation.
pub const UNIX_START: i64 = 1_800_000_000;
/// How long a dial to a dead or unreachable peer takes to fail (the real one: ≈ 4 s).
pub const DIAL_FAIL_AFTER: Duration = Duration::from_secs(4);
/// How long a punch signal takes through the mesh (a few relays).
pub const SIGNAL_LATENCY: Duration = Duration::from_millis(60);
/// Silence after which QUIC declares a tunnel dead (the real default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Node `i`'s prefix: `fd00:1:0:i::/64`.
pub fn prefix_of(i: NodeIdx) -> Ipv6Net {
    let seg = u16::try_from(i).expect("at most 65536 simulated nodes");
    Ipv6Net::new(Ipv6Addr::new(0xfd00, 1, 0, seg, 0, 0, 0, 0), 64)
        .expect("64 is a valid prefix length")
}

/// Node `i`'s underlay address.
pub fn addr_of(i: NodeIdx) -> SocketAddr {
    let seg = u16::try_from(i).expect("at most 65536 simulated nodes");
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, seg),
        6464,
        0,
        0,
    ))
}

fn node_of_addr(a: &SocketAddr) -> Option<NodeIdx> {
    match a {
        SocketAddr::V6(v6) if v6.ip().segments()[..7] == [0xfd99, 0, 0, 0, 0, 0, 0] => {
            Some(usize::from(v6.ip().segments()[7]))
        }
        _ => None,
    }
}

/// The underlay path between two nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    /// One-way latency.
    pub latency: Duration,
    /// Loss of datagrams (Babel), parts per million. Control messages are reliable.
    pub loss_ppm: u32,
    /// Largest UDP payload the path carries: checked at the handshake (a tunnel needs
    /// [`QUIC_MIN_MTU`]) and on every Babel datagram (a larger one is lost).
    pub mtu: u16,
    /// The path carries anything at all.
    pub up: bool,
}

impl Default for Path {
    fn default() -> Self {
        Path {
            latency: Duration::from_millis(20),
            loss_ppm: 0,
            mtu: 1452,
            up: true,
        }
    }
}

/// How a node is set up.
#[derive(Clone, Debug, Default)]
pub struct NodeSetup {
    /// Static peers (`--peer`), by node index.
    pub peers: Vec<NodeIdx>,
    /// Holds a parameter watch on the registry.
    pub watch: bool,
    /// Polls the registry this often.
    pub poll: Option<Duration>,
    /// Babel timers fixed by configuration.
    pub babel_timers: Option<Timers>,
    /// The country it states.
    pub country: Option<String>,
    /// Origin authentication of routes: the node gets a real key and CA-signed
    /// certificate (a renewal: a new one for the same key) and signs and checks routes.
    pub origin_auth: bool,
    /// Prefixes outside the network it announces (`--advertise-route`).
    pub advertise_routes: Vec<Ipv6Net>,
    /// An exit (`--exit`): announces `::/0 from` the network prefix.
    pub exit: bool,
}

/// One simulated node.
pub struct SimNode {
    /// The core (`None` while the node is stopped).
    pub core: Option<NodeCore>,
    /// Its setup.
    pub setup: NodeSetup,
    /// Why it stopped, once it did (`Some(None)`: asked to).
    pub stopped: Option<Option<String>>,
    /// When each parameters version was applied (from its `SaveParams`).
    pub applied_at: BTreeMap<u64, Time>,
    /// Its certificate (DER) when it has a real one (origin authentication), else empty.
    pub cert: Vec<u8>,
    origin: Option<OriginSetup>,
    serial: String,
    not_before: i64,
    not_after: i64,
    pending_cert: Option<(String, i64, i64, Option<OriginSetup>)>,
    trust: HashSet<String>,
    min_protocol: u32,
    saved: Option<(SignedParams, Option<Vec<u8>>)>,
    saved_cache: Option<Vec<u8>>,
    keys: MacKeyBytes,
    wake_gen: u64,
}

#[derive(Debug, Clone, Copy)]
struct End {
    node: NodeIdx,
    peer: NodeIdx,
    peer_tunnel: TunnelId,
}

enum Ev {
    Input(NodeIdx, Box<Input>),
    Wake(NodeIdx, u64),
    /// The node's linger after a stop is over.
    FinishStop(NodeIdx),
    /// A tunnel's underlay went silent: both ends learn it after the idle timeout.
    Silent(TunnelId),
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Events processed.
    pub events: u64,
    /// Babel datagrams sent.
    pub babel_sent: u64,
    /// Babel datagrams lost.
    pub babel_lost: u64,
    /// Control messages sent.
    pub control_sent: u64,
    /// Tunnels established.
    pub tunnels_up: u64,
    /// Dials that failed.
    pub dials_failed: u64,
    /// Punches (handshakes at an agreed moment).
    pub punches: u64,
}

/// A network of whole nodes. See the module documentation.
pub struct NodeNet {
    now: Time,
    rng: ChaCha8Rng,
    /// The nodes.
    pub nodes: Vec<SimNode>,
    /// The registry.
    pub registry: SimRegistry,
    default_path: Path,
    paths: BTreeMap<(NodeIdx, NodeIdx), Path>,
    /// Nodes on the far side of a partition (`None`: no partition).
    partition: Option<BTreeSet<NodeIdx>>,
    ends: BTreeMap<TunnelId, End>,
    next_tunnel: u64,
    queue: BTreeMap<(Time, u64), Ev>,
    seq: u64,
    /// Counters.
    pub stats: NetStats,
}

impl NodeNet {
    /// An empty network whose registry publishes `policy` and `hello_interval` (seconds).
    pub fn new(seed: u64, policy: TunnelPolicy, hello_interval: u32) -> NodeNet {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_be_bytes());
        NodeNet {
            now: Time::ZERO,
            rng: ChaCha8Rng::from_seed(s),
            nodes: Vec::new(),
            registry: SimRegistry::new(policy, hello_interval),
            default_path: Path::default(),
            paths: BTreeMap::new(),
            partition: None,
            ends: BTreeMap::new(),
            next_tunnel: 0,
            queue: BTreeMap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    /// Virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    fn at(&self) -> Now {
        Now {
            time: self.now,
            unix: UNIX_START + i64::try_from(self.now.as_millis() / 1000).unwrap_or(0),
        }
    }

    /// Sets the path used between nodes without a path of their own.
    pub fn set_default_path(&mut self, p: Path) {
        self.default_path = p;
    }

    /// Sets the path between `a` and `b` (both directions).
    pub fn set_path(&mut self, a: NodeIdx, b: NodeIdx, p: Path) {
        self.paths.insert((a.min(b), a.max(b)), p);
        if !p.up {
            self.silence_between(|x, y| (x.min(y), x.max(y)) == (a.min(b), a.max(b)));
        }
    }

    /// The path between `a` and `b`.
    pub fn path(&self, a: NodeIdx, b: NodeIdx) -> Path {
        let mut p = self
            .paths
            .get(&(a.min(b), a.max(b)))
            .copied()
            .unwrap_or(self.default_path);
        if let Some(side) = &self.partition
            && side.contains(&a) != side.contains(&b)
        {
            p.up = false;
        }
        p
    }

    /// Cuts `side` off from the other nodes (tunnels across go silent).
    pub fn partition(&mut self, side: &[NodeIdx]) {
        let side: BTreeSet<NodeIdx> = side.iter().copied().collect();
        self.partition = Some(side.clone());
        self.silence_between(|a, b| side.contains(&a) != side.contains(&b));
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    fn silence_between(&mut self, cut: impl Fn(NodeIdx, NodeIdx) -> bool) {
        let silent: Vec<TunnelId> = self
            .ends
            .iter()
            .filter(|(id, e)| e.node < e.peer || (e.node == e.peer && id.0 < e.peer_tunnel.0))
            .filter(|(_, e)| cut(e.node, e.peer))
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            let at = self.now + IDLE_TIMEOUT;
            self.push(at, Ev::Silent(id));
        }
    }

    /// Adds a node (not started: see [`NodeNet::start`]); its certificate is issued now.
    pub fn add_node(&mut self, setup: NodeSetup) -> NodeIdx {
        let i = self.nodes.len();
        let validity = i64::try_from(self.registry.validity.as_secs()).unwrap_or(i64::MAX);
        let unix = self.at().unix;
        let (origin, serial, not_after) = if setup.origin_auth {
            let (o, serial, not_after) = self.registry.issue_real(prefix_of(i), unix, None);
            (Some(o), serial, not_after)
        } else {
            (None, self.registry.issue(prefix_of(i)), unix + validity)
        };
        self.nodes.push(SimNode {
            core: None,
            setup,
            stopped: None,
            applied_at: BTreeMap::new(),
            cert: origin
                .as_ref()
                .map(|o| o.cert_der.clone())
                .unwrap_or_default(),
            origin,
            serial,
            not_before: unix - identity::CERT_BACKDATE_SECS,
            not_after,
            pending_cert: None,
            trust: HashSet::new(),
            min_protocol: PROTOCOL_VERSION,
            saved: None,
            saved_cache: None,
            keys: self.registry.keys(),
            wake_gen: 0,
        });
        i
    }

    /// Starts (or restarts) node `i` from what it stored: parameters and CRL, peer cache.
    /// A fresh node fetches the registry's parameters first, as `mesh up` does (when the
    /// registry is up).
    pub fn start(&mut self, i: NodeIdx) {
        let reg = &self.registry;
        let (signed, crl) = match (&self.nodes[i].saved, reg.up) {
            (_, true) => (reg.signed.clone(), Some(reg.crl.clone())),
            (Some((s, c)), false) => (s.clone(), c.clone()),
            (None, false) => (reg.signed.clone(), None),
        };
        let mut net = NetState::new(reg.ca_der().to_vec(), signed).expect("registry parameters");
        if let Some(c) = &crl {
            let _ = net.offer(None, Some(c));
        }
        if reg.up {
            self.nodes[i].keys = reg.keys();
        }
        let cache = self.nodes[i]
            .saved_cache
            .as_deref()
            .and_then(|b| PeerCache::from_json(b, crate::mesh::peers::DEFAULT_CAPACITY).ok())
            .unwrap_or_else(|| PeerCache::new(crate::mesh::peers::DEFAULT_CAPACITY));
        let n = &self.nodes[i];
        let cfg = CoreConfig {
            prefix: prefix_of(i),
            net,
            keys: n.keys.clone(),
            serial: n.serial.clone(),
            name: n
                .origin
                .as_ref()
                .and_then(|o| crate::identity::cert_info(&o.cert_der).ok())
                .and_then(|i| i.name),
            not_before: n.not_before,
            not_after: n.not_after,
            static_peers: n
                .setup
                .peers
                .iter()
                .map(|p| (prefix_of(*p), addr_of(*p)))
                .collect(),
            endpoints: vec![addr_of(i)],
            listen_port: addr_of(i).port(),
            country: n.setup.country.clone(),
            babel_timers: n.setup.babel_timers,
            cache,
            origin: n.origin.clone(),
            advertise_routes: n.setup.advertise_routes.clone(),
            advertise_routes_v4: Vec::new(),
            exit: n.setup.exit,
            ipv4: None,
        };
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let core = NodeCore::new(cfg, seed, self.at());
        let n = &mut self.nodes[i];
        n.core = Some(core);
        n.stopped = None;
        self.after_handle(i);
    }

    /// Adds `n` nodes with the same setup and starts them.
    pub fn add_started(&mut self, n: usize, setup: &NodeSetup) -> Vec<NodeIdx> {
        (0..n)
            .map(|_| {
                let i = self.add_node(setup.clone());
                self.start(i);
                i
            })
            .collect()
    }

    /// Kills node `i` without a word (power cut): its tunnels go silent.
    pub fn kill(&mut self, i: NodeIdx) {
        self.nodes[i].core = None;
        self.nodes[i].stopped = Some(Some("killed".into()));
        self.silence_between(|a, b| a == i || b == i);
    }

    /// Sends `input` to node `i` now (e.g. `Input::Down`, `Input::Exit`).
    pub fn input(&mut self, i: NodeIdx, input: Input) {
        let at = self.now;
        self.push(at, Ev::Input(i, Box::new(input)));
    }

    /// True while node `i` runs.
    pub fn running(&self, i: NodeIdx) -> bool {
        self.nodes[i].core.is_some()
    }

    /// Node `i`'s core.
    pub fn core(&self, i: NodeIdx) -> Option<&NodeCore> {
        self.nodes[i].core.as_ref()
    }

    /// The certificate serial node `i` uses.
    pub fn serial(&self, i: NodeIdx) -> &str {
        &self.nodes[i].serial
    }

    // ----- running -----

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    /// Runs one event at or before `limit`; false when none is due.
    pub fn step(&mut self, limit: Time) -> bool {
        let Some(entry) = self.queue.first_entry() else {
            return false;
        };
        if entry.key().0 > limit {
            return false;
        }
        let ((at, _), ev) = entry.remove_entry();
        self.now = self.now.max(at);
        let now = self.at();
        self.stats.events += 1;
        match ev {
            Ev::Input(i, input) => {
                if let Some(c) = self.nodes[i].core.as_mut() {
                    c.handle(now, *input);
                    self.after_handle(i);
                }
            }
            Ev::Wake(i, generation) => {
                if self.nodes[i].wake_gen == generation
                    && let Some(c) = self.nodes[i].core.as_mut()
                {
                    c.handle_timeout(now);
                    self.after_handle(i);
                }
            }
            Ev::FinishStop(i) => {
                if let Some(c) = self.nodes[i].core.as_mut() {
                    c.finish_shutdown();
                    self.execute(i);
                }
                self.nodes[i].core = None;
            }
            Ev::Silent(id) => {
                if let Some(e) = self.ends.remove(&id) {
                    self.ends.remove(&e.peer_tunnel);
                    let at = self.now;
                    self.push(
                        at,
                        Ev::Input(
                            e.node,
                            Box::new(Input::TunnelDown {
                                tunnel: id,
                                code: None,
                            }),
                        ),
                    );
                    self.push(
                        at,
                        Ev::Input(
                            e.peer,
                            Box::new(Input::TunnelDown {
                                tunnel: e.peer_tunnel,
                                code: None,
                            }),
                        ),
                    );
                }
            }
        }
        true
    }

    /// Runs every event up to `until`, then sets the clock there.
    pub fn run_until(&mut self, until: Time) {
        while self.step(until) {}
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs in `granularity` slices until `done` holds (checked after each slice) or `max`
    /// passed; returns how long it took.
    pub fn run_until_true(
        &mut self,
        max: Duration,
        granularity: Duration,
        mut done: impl FnMut(&NodeNet) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        loop {
            if done(self) {
                return Some(self.now.saturating_since(start));
            }
            if self.now.saturating_since(start) >= max {
                return None;
            }
            self.run_for(granularity);
        }
    }

    /// True when every running node has a selected route to every other running node.
    pub fn fully_reachable(&self) -> bool {
        let running: Vec<NodeIdx> = (0..self.nodes.len()).filter(|i| self.running(*i)).collect();
        running.iter().all(|i| self.reaches_all(*i, &running))
    }

    fn reaches_all(&self, i: NodeIdx, others: &[NodeIdx]) -> bool {
        let Some(c) = self.core(i) else {
            return false;
        };
        let have: BTreeSet<Ipv6Addr> = c
            .selected_routes()
            .into_iter()
            .filter_map(|r| match r.prefix.addr() {
                IpAddr::V6(a) if r.prefix.len() == 64 => Some(a),
                _ => None,
            })
            .collect();
        others
            .iter()
            .all(|o| *o == i || have.contains(&prefix_of(*o).network()))
    }

    /// True when node `i` has a selected route to node `j`'s prefix.
    pub fn has_route(&self, i: NodeIdx, j: NodeIdx) -> bool {
        self.reaches_all(i, &[j])
    }

    fn after_handle(&mut self, i: NodeIdx) {
        self.execute(i);
        let Some(t) = self.nodes[i].core.as_ref().and_then(NodeCore::poll_timeout) else {
            return;
        };
        let t = t.max(self.now);
        let n = &mut self.nodes[i];
        n.wake_gen += 1;
        let generation = n.wake_gen;
        self.push(t, Ev::Wake(i, generation));
    }

    fn new_tunnel(&mut self) -> TunnelId {
        self.next_tunnel += 1;
        TunnelId(self.next_tunnel)
    }

    fn deliver(&mut self, to: NodeIdx, after: Duration, input: Input) {
        let at = self.now + after;
        self.push(at, Ev::Input(to, Box::new(input)));
    }

    fn execute(&mut self, i: NodeIdx) {
        loop {
            let Some(a) = self.nodes[i].core.as_mut().and_then(NodeCore::poll_action) else {
                return;
            };
            self.action(i, a);
        }
    }

    fn action(&mut self, i: NodeIdx, a: Action) {
        let reg_rtt = self.registry.latency * 2;
        match a {
            // a held tunnel's Babel is dropped by the core itself (both directions)
            Action::Activate { .. }
            | Action::Hold { .. }
            | Action::LanAuth(_)
            | Action::LanPace { .. } => {}
            Action::TunWithdraw | Action::TunRestore | Action::SubnetRoutes(_) => {}
            // the simulated registry knows every node at `addr_of` already
            Action::ReportEndpoints(_) => {}
            Action::Close { tunnel, code } => {
                if let Some(e) = self.ends.remove(&tunnel) {
                    self.ends.remove(&e.peer_tunnel);
                    let p = self.path(i, e.peer);
                    let down = Input::TunnelDown {
                        tunnel: e.peer_tunnel,
                        code: Some(code),
                    };
                    // a close that cannot cross the path is learnt by the idle timeout
                    let after = if p.up { p.latency } else { IDLE_TIMEOUT };
                    self.deliver(e.peer, after, down);
                }
            }
            Action::Dial { peer, addrs } => self.dial(i, peer, &addrs),
            // A signal reaches the far node when the sender routes to it (sealed through the
            // relays in the real node); a punch is a dial whose failure says so (the model
            // has no NAT: a path that is up takes a plain dial as well).
            Action::SendSignal { to, bytes } => {
                if let Some(j) = (0..self.nodes.len()).find(|j| prefix_of(*j).contains(&to))
                    && self.nodes[i]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.routable(&prefix_of(j)))
                {
                    let src = crate::identity::node_address(&prefix_of(i));
                    self.deliver(j, SIGNAL_LATENCY, Input::Signal { src, bytes });
                }
            }
            Action::Punch { peer, addrs } => {
                self.stats.punches += 1;
                self.dial_as(i, peer, &addrs, true)
            }
            Action::SendBabel { tunnel, bytes } => {
                if let Some(e) = self.ends.get(&tunnel).copied() {
                    self.stats.babel_sent += 1;
                    let p = self.path(i, e.peer);
                    // the UDP payload: frame type byte, then what QUIC adds around a datagram
                    // (the difference between QUIC_MIN_MTU and the datagram quinn fits in it)
                    let udp = bytes.len()
                        + crate::mesh::tunnels::frame::HEADER_LEN
                        + (usize::from(QUIC_MIN_MTU)
                            - crate::mesh::seal::wire::MIN_TUNNEL_DATAGRAM);
                    let lost = !p.up
                        || udp > usize::from(p.mtu)
                        || (p.loss_ppm > 0 && self.rng.next_u32() % 1_000_000 < p.loss_ppm);
                    if lost {
                        self.stats.babel_lost += 1;
                    } else {
                        let input = Input::Babel {
                            tunnel: e.peer_tunnel,
                            bytes,
                        };
                        self.deliver(e.peer, p.latency, input);
                    }
                }
            }
            Action::SendControl { tunnel, msg } => {
                if let Some(e) = self.ends.get(&tunnel).copied() {
                    self.stats.control_sent += 1;
                    let p = self.path(i, e.peer);
                    if p.up {
                        let input = Input::Control {
                            tunnel: e.peer_tunnel,
                            msg,
                        };
                        self.deliver(e.peer, p.latency, input);
                    }
                }
            }
            Action::FetchParams => {
                let input = if self.registry.up {
                    self.offer_from_registry()
                } else {
                    Input::Offer {
                        signed: None,
                        crl: None,
                        from: None,
                    }
                };
                self.deliver(i, reg_rtt, input);
            }
            Action::FetchKeys => {
                if self.registry_answers_keys(i) {
                    let keys = Input::KeyBytes(self.registry.keys());
                    self.deliver(i, reg_rtt, keys);
                }
            }
            Action::FetchBootstrap => {
                if self.registry.up {
                    let mut live: Vec<NodeIdx> = (0..self.nodes.len())
                        .filter(|j| *j != i && self.running(*j))
                        .collect();
                    if !live.is_empty() {
                        // up to BOOTSTRAP_PEERS in random order, as the registry answers
                        let mut peers = Vec::new();
                        while !live.is_empty() && peers.len() < crate::registry_api::BOOTSTRAP_PEERS
                        {
                            let j = live.swap_remove(self.rng.next_u32() as usize % live.len());
                            peers.push(PeerAddr {
                                prefix: prefix_of(j),
                                endpoints: vec![addr_of(j)],
                                country: None,
                            });
                        }
                        self.deliver(i, reg_rtt, Input::Peers(peers));
                    }
                }
            }
            Action::Renew => {
                let prefix = prefix_of(i);
                let r = if !self.registry.up {
                    Err(ClientError::Unreachable {
                        url: "sim".into(),
                        reason: "the registry is down".into(),
                    })
                } else if self.registry.banned.contains(&prefix) {
                    Err(ClientError::Refused {
                        status: 403,
                        code: "banned".into(),
                        message: "this node is banned".into(),
                        retry_after: None,
                    })
                } else {
                    // the new certificate supersedes the old one (revoked, new CRL), as the
                    // registry does
                    let old = self.nodes[i].serial.clone();
                    let unix = self.at().unix;
                    if !self.registry.revoked.iter().any(|(s, _)| *s == old) {
                        self.registry.revoked.push((old, unix));
                    }
                    let validity =
                        i64::try_from(self.registry.validity.as_secs()).unwrap_or(i64::MAX);
                    let (serial, na, origin) = match &self.nodes[i].origin {
                        // origin authentication: a real certificate for the same key
                        Some(o) => {
                            let key = o.key_pkcs8.expose().to_vec();
                            let (o, serial, na) =
                                self.registry.issue_real(prefix, unix, Some(&key));
                            (serial, na, Some(o))
                        }
                        None => (self.registry.issue(prefix), unix + validity, None),
                    };
                    self.registry.publish_crl(unix);
                    self.notify_watchers();
                    let nb = unix - identity::CERT_BACKDATE_SECS;
                    let cert_der = origin
                        .as_ref()
                        .map(|o| o.cert_der.clone())
                        .unwrap_or_default();
                    self.nodes[i].pending_cert = Some((serial.clone(), nb, na, origin));
                    Ok(Renewal {
                        prefix,
                        serial,
                        not_before: nb,
                        not_after: na,
                        cert_der,
                        signed_params: self.registry.signed.clone(),
                    })
                };
                self.deliver(i, reg_rtt, Input::Renewed(r));
            }
            Action::InstallCertificate { .. } => {
                let n = &mut self.nodes[i];
                if let Some((serial, nb, na, origin)) = n.pending_cert.take() {
                    n.serial = serial;
                    n.not_before = nb;
                    n.not_after = na;
                    if let Some(o) = origin {
                        n.cert = o.cert_der.clone();
                        n.origin = Some(o);
                    }
                }
                self.deliver(i, Duration::ZERO, Input::CertificateInstalled(Ok(())));
            }
            Action::SaveParams { signed, crl } => {
                if let Some(c) = self.nodes[i].core.as_ref() {
                    let v = c.params().version;
                    let now = self.now;
                    self.nodes[i].applied_at.entry(v).or_insert(now);
                }
                self.nodes[i].saved = Some((*signed, crl));
            }
            Action::SavePeerCache(json) => self.nodes[i].saved_cache = Some(json),
            Action::SetRevoked(set) => self.nodes[i].trust = set,
            Action::SetHello { min_protocol, .. } => self.nodes[i].min_protocol = min_protocol,
            Action::Stop { error } => {
                self.nodes[i].stopped = Some(error);
                let now = self.at();
                let linger = match self.nodes[i].core.as_mut() {
                    Some(c) => {
                        c.begin_shutdown(now);
                        c.linger()
                    }
                    None => Duration::ZERO,
                };
                let at = self.now + linger;
                self.push(at, Ev::FinishStop(i));
            }
        }
    }

    fn dial(&mut self, i: NodeIdx, peer: Ipv6Net, addrs: &[SocketAddr]) {
        self.dial_as(i, peer, addrs, false)
    }

    /// A dial, or a punch's handshakes (`punch`: a failure is reported as such).
    fn dial_as(&mut self, i: NodeIdx, peer: Ipv6Net, addrs: &[SocketAddr], punch: bool) {
        let fail = |revoked| {
            if punch {
                Input::PunchFailed { peer }
            } else {
                Input::DialFailed { peer, revoked }
            }
        };
        let Some(j) = addrs
            .iter()
            .filter_map(node_of_addr)
            .find(|j| *j < self.nodes.len() && prefix_of(*j) == peer)
        else {
            self.stats.dials_failed += 1;
            return self.deliver(i, DIAL_FAIL_AFTER, fail(false));
        };
        let p = self.path(i, j);
        let (a, b) = (&self.nodes[i], &self.nodes[j]);
        if !p.up || p.mtu < QUIC_MIN_MTU || b.core.is_none() || b.stopped.is_some() {
            self.stats.dials_failed += 1;
            return self.deliver(i, DIAL_FAIL_AFTER, fail(false));
        }
        if b.trust.contains(&a.serial) {
            self.stats.dials_failed += 1;
            return self.deliver(i, p.latency * 2, fail(true));
        }
        if a.trust.contains(&b.serial) || PROTOCOL_VERSION < b.min_protocol.max(a.min_protocol) {
            self.stats.dials_failed += 1;
            return self.deliver(i, p.latency * 2, fail(false));
        }
        let (ti, tj) = (self.new_tunnel(), self.new_tunnel());
        self.ends.insert(
            ti,
            End {
                node: i,
                peer: j,
                peer_tunnel: tj,
            },
        );
        self.ends.insert(
            tj,
            End {
                node: j,
                peer: i,
                peer_tunnel: ti,
            },
        );
        self.stats.tunnels_up += 1;
        let hello = |n: &SimNode, idx: NodeIdx, params_version: u64| HelloInfo {
            protocol: PROTOCOL_VERSION,
            params_version,
            endpoints: vec![addr_of(idx)],
            country: n.setup.country.clone(),
            observed: None,
        };
        let version = |n: &SimNode| n.core.as_ref().map_or(0, |c| c.params().version);
        let (va, vb) = (version(&self.nodes[i]), version(&self.nodes[j]));
        let info_i = TunnelInfo {
            peer_prefix: prefix_of(j),
            peer_serial: self.nodes[j].serial.clone(),
            peer_not_after: self.nodes[j].not_after,
            initiated: true,
            hello: hello(&self.nodes[j], j, vb),
            remote: addr_of(j),
            peer_cert: self.nodes[j].cert.clone(),
        };
        let info_j = TunnelInfo {
            peer_prefix: prefix_of(i),
            peer_serial: self.nodes[i].serial.clone(),
            peer_not_after: self.nodes[i].not_after,
            initiated: false,
            hello: hello(&self.nodes[i], i, va),
            remote: addr_of(i),
            peer_cert: self.nodes[i].cert.clone(),
        };
        // the acceptor completes after 1.5 round trips, the dialler after 2
        self.deliver(
            j,
            p.latency * 3,
            Input::TunnelUp {
                tunnel: tj,
                info: info_j,
            },
        );
        self.deliver(
            i,
            p.latency * 4,
            Input::TunnelUp {
                tunnel: ti,
                info: info_i,
            },
        );
    }

    /// Tunnels live now, as unordered node pairs (one entry per tunnel).
    pub fn tunnels(&self) -> Vec<(NodeIdx, NodeIdx)> {
        self.ends
            .values()
            .filter(|e| e.node < e.peer)
            .map(|e| (e.node, e.peer))
            .collect()
    }

    /// The nodes node `i` has a tunnel with, as its core sees them.
    pub fn neighbours_of(&self, i: NodeIdx) -> Vec<NodeIdx> {
        self.core(i)
            .map(|c| {
                c.neighbours()
                    .iter()
                    .filter_map(|p| {
                        let seg = p.network().segments()[3];
                        Some(usize::from(seg)).filter(|j| prefix_of(*j) == *p)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[path = "sim_registry.rs"]
mod registry;
pub use registry::SimRegistry;

#[cfg(test)]
#[path = "sim_nodes_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sim_origin_tests.rs"]
mod origin_tests;

/// A ring of `n` origin-checking nodes (each with tunnels to its two ring neighbours, node 0
/// watching the registry) under parameters granting `grants`; `setup(i)` says what node `i`
/// announces (`--exit`, `--advertise-route`). Every node is started.
#[cfg(test)]
fn granted_ring(
    seed: u64,
    n: usize,
    grants: Vec<crate::params::RouteGrant>,
    setup: impl Fn(NodeIdx) -> NodeSetup,
) -> NodeNet {
    let mut net = NodeNet::new(
        seed,
        TunnelPolicy {
            client_count: 0,
            max_clients: 8,
            refresh: 300,
        },
        1,
    );
    net.set_params(|p| p.routes = grants);
    for i in 0..n {
        net.add_node(NodeSetup {
            peers: vec![(i + 1) % n, (i + n - 1) % n],
            watch: i == 0,
            origin_auth: true,
            ..setup(i)
        });
    }
    for i in 0..n {
        net.start(i);
    }
    net
}

#[cfg(test)]
#[path = "sim_exits_tests.rs"]
mod exits_tests;
#[cfg(test)]
#[path = "sim_routes_tests.rs"]
mod routes_tests;
