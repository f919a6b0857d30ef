//! The node's decisions, sans-IO: [`NodeCore`].
//!
//! Everything the node *decides* lives here — which tunnels to keep and close, how parameters
//! and the CRL spread and apply, when to renew the certificate, the lock cycle, dial races and
//! the reaction to a peer's close code — in the quinn-proto style: inputs go in through
//! [`NodeCore::handle`] and [`NodeCore::handle_timeout`] with the time as an argument, and what
//! the node must do comes out of [`NodeCore::poll_action`] as typed [`Action`]s, which the IO
//! shell (`shell.rs`) executes and the simulator (`mesh::sim::nodes`) models. No tokio, no
//! quinn connection, no clock read, no global RNG: the same inputs and seed give the same
//! actions.
//!
//! Drain order after every input: engine transmits → route changes (FIB publish) → engine
//! events; then [`NodeCore::poll_action`] until `None`, and [`NodeCore::poll_timeout`] for the
//! next wake-up.
//!
//! Budgets (what a neighbour can make this node do):
//! * a `ParamsRequest` is answered at most once per [`PARAMS_ANSWER_INTERVAL`] per tunnel; the
//!   excess is ignored and counted ([`Counters::params_requests_ignored`]);
//! * at most [`MAX_PEERS_PER_MESSAGE`] peer addresses are taken from one `Peers` message;
//! * a neighbour that does not read its control stream (the shell's queue to it is full) loses
//!   its tunnel ([`Input::ControlStalled`] → [`CloseCode::Control`]);
//! * Babel datagrams beyond the shell's per-tunnel queue are dropped before they reach the core
//!   (counted by the shell), as a router drops on a full queue.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use ipnet::Ipv6Net;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tracing::{debug, info, warn};

use crate::control::{self, NodeStateName};
use crate::identity;
use crate::mesh::babel::cost::CostMultiplier;
use crate::mesh::babel::mac::{MacKey, MacKeys};
use crate::mesh::babel::time::Time;
use crate::mesh::babel::{
    Config, Engine, Event, FibRoute, IfaceConfig, IfaceId, NeighbourId, RouteChange, Timers,
};
use crate::mesh::fib::{Fib, FibReader};
use crate::mesh::lan_discovery::LanAuth;
use crate::mesh::netstate::NetState;
use crate::mesh::peers::{Hearsay, PeerCache, usable_endpoint};
use crate::mesh::punch::Puncher;
use crate::mesh::reach::Reach;
use crate::mesh::tunnels::control::{ControlMsg, PeerAddr};
use crate::mesh::tunnels::policy::{self, Candidate, Observation, PolicyConfig, TunnelManager};
use crate::mesh::tunnels::{CloseCode, HelloInfo, valid_country};
use crate::params::{NetworkParams, PROTOCOL_VERSION, SignedParams};
use crate::registry_client::ClientError;
use crate::wire::Prefix;

mod interface;
mod ipv4;
mod origin;
mod params;
mod punching;
mod roam;
mod tunnels;
mod view;

pub use interface::{
    Action, CoreConfig, Counters, Input, InstallError, MacKeyBytes, Now, Renewal, SecretBytes,
    Snapshot, SubnetRoutes, TunnelId, TunnelInfo,
};
pub use origin::{
    CERT_ANSWER_BURST, CERT_ANSWER_RATE, CERT_CACHE, CERT_REQUEST_TIMEOUT,
    CERT_REQUESTS_PER_NEIGHBOUR, CertRefused, CertStore, KeySigner, OriginSetup, verify_route,
};
use params::timers_of;
pub use params::{exit_key, mac_keys, protocol_too_old, renew_at, router_id_for};
pub use punching::Made;
pub use roam::{is_stranded, rebind_to};

/// How often the core runs its housekeeping round (renewal, dials, tunnel manager).
pub const TICK: Duration = Duration::from_millis(500);
/// How long the higher prefix of two `--peer`s (or LAN neighbours) defers its dial, so the
/// two rarely race to two tunnels (one of which the duplicate rule would close).
pub const STATIC_DIAL_DEFER: Duration = Duration::from_millis(1500);
/// Wait before a failed `--peer` dial is retried.
pub const STATIC_RETRY: Duration = Duration::from_secs(2);
/// How long the side that agrees to retire a tunnel keeps it soft-locked at least before
/// it looks whether its routes have moved off it (then every [`KILL_ANSWER_RECHECK`]).
pub const KILL_ANSWER_DELAY: Duration = Duration::from_millis(500);
/// The longest an agreed kill request waits for the routes to move off the tunnel, as a
/// fraction of the lock timeout (the requester gives up after one lock timeout, and both
/// sides have it from the same parameters): half of it.
pub const KILL_ANSWER_MAX_DIVISOR: u32 = 2;
/// How often that wait looks again.
pub const KILL_ANSWER_RECHECK: Duration = Duration::from_millis(200);
pub const KILL_CLOSE_DELAY: Duration = Duration::from_secs(2);
/// How long a connection a duplicate replaced stays open: the peer sees the duplicate come
/// up a little after we do (the handshake ends at the two sides at different moments) and
/// hands its routes over too, if the replaced connection is still there; closed at once, the
/// peer would lose its routes through us until Babel learnt them again over the new one.
pub const DUPLICATE_CLOSE_DELAY: Duration = Duration::from_secs(2);
/// Every Babel packet sent over a tunnel is padded to this many bytes (trailer PadN), so its
/// datagram is as large as the largest data datagram on the smallest path re6mesh accepts
/// ([`QUIC_MIN_MTU`](crate::mesh::tunnels::QUIC_MIN_MTU) bytes of UDP payload). A path whose
/// MTU shrinks below that after the handshake then loses Babel's hellos as it loses the
/// data, so the neighbour's link cost goes to infinity and the routes move to other tunnels
/// — instead of a tunnel that stays up on its small keep-alives and black-holes every
/// full-size packet (QUIC's own black-hole detection stops at `min_mtu`).
pub const BABEL_PADDED_LEN: usize =
    crate::mesh::seal::wire::MIN_TUNNEL_DATAGRAM - crate::mesh::tunnels::frame::HEADER_LEN;
/// A dial that has not come to anything in this long is forgotten.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Parameters and CRL are asked of the registry at most this often.
pub const REGISTRY_FETCH_INTERVAL: Duration = Duration::from_secs(5);
/// A node with nothing to dial asks the registry for a bootstrap peer this often.
pub const BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(10);
/// A node whose peer cache holds fewer peers than the tunnel manager wants asks this often.
/// A node we know of but cannot route to is dialled at most this often (one at a time).
pub const EXPLORE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`BOOTSTRAP_INTERVAL`].
pub const BOOTSTRAP_TOP_UP_INTERVAL: Duration = Duration::from_secs(60);
/// The peer cache is written at most this often (and at exit).
pub const CACHE_SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// Wait after a failed renewal.
pub const RENEW_RETRY: Duration = Duration::from_secs(60);
/// Wait after a successful renewal before another can start (never renew in a loop).
pub const RENEW_SETTLE: Duration = Duration::from_secs(5);
/// A neighbour's `ParamsRequest` is answered at most this often per tunnel.
pub const PARAMS_ANSWER_INTERVAL: Duration = Duration::from_secs(1);
/// Peer addresses taken from one `Peers` message (or a bootstrap answer).
pub const MAX_PEERS_PER_MESSAGE: usize = 256;
/// Peer addresses shared with a new neighbour.
pub const PEERS_SHARED: usize = 64;
/// How long a node lingers after retracting its routes, so the retractions leave (longer when
/// it stops because of the parameters it has just passed on).
pub const LINGER: Duration = Duration::from_millis(50);
/// See [`LINGER`].
pub const LINGER_FATAL: Duration = Duration::from_millis(300);
/// While the CRL the parameters name is missing, each neighbour is asked for it this often.
pub const CRL_ASK_INTERVAL: Duration = Duration::from_secs(5);
/// LAN neighbours dialled at most (an open LAN is anyone's to announce on).
pub const MAX_LAN_NEIGHBOURS: usize = 64;
/// An address dialled for one peer is not dialled for another one within this time.
pub const DIAL_ADDR_INTERVAL: Duration = Duration::from_secs(30);
/// Addresses remembered for [`DIAL_ADDR_INTERVAL`] (beyond: the old ones are forgotten).
pub const MAX_DIALLED_ADDRS: usize = 4096;

struct TunnelEntry {
    iface: IfaceId,
    peer_prefix: Ipv6Net,
    neighbour: NeighbourId,
    initiated: bool,
    peer_params: u64,
    peer_serial: String,
    /// The peer's name in its certificate.
    peer_name: Option<String>,
    remote: SocketAddr,
    peer_not_after: i64,
    rtt: Duration,
    last_params_answer: Option<Time>,
    /// Came up while the CRL was missing: control stream only until it arrives.
    held: bool,
    /// How it was made.
    made: Made,
}

/// Certificate renewal: one struct per state.
enum Renewing {
    /// None in flight; the next may start at `next_try`.
    Idle { next_try: Time },
    /// [`Action::Renew`] sent.
    Requested,
    /// [`Action::InstallCertificate`] sent for this renewal.
    Installing(Box<Renewal>),
}

/// Work scheduled for later (the lock cycle's answer side).
#[derive(Debug, Clone, Copy)]
enum Later {
    /// Answer a kill request we agreed to (received at the given time), once no selected
    /// route uses the tunnel any more or half the lock timeout has passed.
    KillAnswer(TunnelId, Time),
    /// Close the tunnel we agreed to retire, if the requester has not.
    KillClose(TunnelId),
    /// Close a connection a duplicate replaced (it no longer carries anything here).
    CloseReplaced(TunnelId),
}

/// The node core. See the module documentation.
pub struct NodeCore {
    engine: Engine,
    fib: Fib,
    me: Ipv6Addr,
    prefix: Ipv6Net,
    timers: Timers,
    /// Babel timers set by configuration (tests): parameters do not change them.
    fixed_timers: bool,
    tunnels: BTreeMap<TunnelId, TunnelEntry>,
    by_iface: BTreeMap<IfaceId, TunnelId>,
    by_prefix: BTreeMap<Ipv6Net, TunnelId>,
    /// Peers we know addresses of (persistent, with failure marks).
    cache: PeerCache,
    cache_saved: Time,
    /// re6st's tunnel manager: which tunnels to open, accept and retire.
    tm: TunnelManager,
    /// Randomness for the peer cache's choices.
    rng: ChaCha8Rng,
    /// Peers given with `--peer` or found on the LAN: always kept connected.
    static_peers: BTreeMap<Ipv6Net, SocketAddr>,
    /// When each static peer may be dialled again.
    static_retry: BTreeMap<Ipv6Net, Time>,
    /// Dials in progress and when they started (a peer is not dialled twice at once).
    dialing: BTreeMap<Ipv6Net, Time>,
    /// Address → (the peer it was last dialled for, when): see [`DIAL_ADDR_INTERVAL`].
    dialled_addrs: BTreeMap<SocketAddr, (Ipv6Net, Time)>,
    /// LAN neighbours heard (dialled through `static_peers`) and when.
    lan_heard: BTreeMap<Ipv6Net, (SocketAddrV6, Time)>,
    down: bool,
    /// The endpoint candidates last announced (hello, registry, `Peers`).
    my_endpoints: Vec<SocketAddr>,
    reach: Reach,
    country: Option<String>,
    /// Parameters and CRL in force.
    net: NetState,
    /// MAC key bytes known, by registry key id.
    keys: MacKeyBytes,
    my_serial: String,
    my_name: Option<String>,
    revoked: bool,
    not_before: i64,
    not_after: i64,
    renewing: Renewing,
    /// Why the node must stop (e.g. the network requires a newer protocol).
    fatal: Option<String>,
    stopped: bool,
    last_bootstrap: Option<Time>,
    /// Last dial to a known node Babel has no route to (see `explore`).
    last_explore: Option<Time>,
    /// Bootstrap requests made in a row while isolated (their interval backs off).
    isolated_asks: u32,
    last_registry_fetch: Option<Time>,
    registry_fetch_pending: bool,
    /// When the neighbours were last asked for the missing CRL.
    last_crl_ask: Option<Time>,
    next_tick: Time,
    later: BTreeMap<(Time, u64), Later>,
    later_seq: u64,
    actions: VecDeque<Action>,
    snapshot_dirty: bool,
    counters: Counters,
    /// Origin authentication of routes (`origin.rs`): `None` when off.
    origin: Option<origin::OriginRequests>,
    /// The subnet routes last given to the shell ([`Action::SubnetRoutes`]).
    subnet_routes: SubnetRoutes,
    /// Hole punching through the mesh (`punching.rs`).
    punch: Puncher,
    /// This node's IPv4 address (issue 15), when its certificate names one.
    my_ipv4: Option<std::net::Ipv4Addr>,
    /// The host's network changed: every tunnel gets a repeated hello at the end of this
    /// input (`roam.rs`).
    probe_paths: bool,
}

impl NodeCore {
    /// A core at `now`, with every random choice derived from `seed`.
    pub fn new(cfg: CoreConfig, seed: [u8; 32], now: Now) -> NodeCore {
        let mut rng = ChaCha8Rng::from_seed(seed);
        let params = cfg.net.params().clone();
        let timers = cfg.babel_timers.unwrap_or_else(|| timers_of(&params));
        let prefix = cfg.prefix;
        let mut engine_seed = [0u8; 32];
        engine_seed[..16].copy_from_slice(&u128::from(prefix.network()).to_be_bytes());
        rng.fill_bytes(&mut engine_seed[16..]);
        let mut engine = Engine::new(
            Config::default(),
            router_id_for(&prefix),
            engine_seed,
            now.time,
        );
        let mac = mac_keys(&params, &cfg.keys);
        engine.set_mac_keys(mac.clone());
        if let Some(p) = Prefix::new(IpAddr::V6(prefix.network()), prefix.prefix_len()) {
            engine.originate(now.time, p);
        }
        for r in &cfg.advertise_routes {
            if let Some(p) = Prefix::new(IpAddr::V6(r.network()), r.prefix_len()) {
                engine.originate(now.time, p);
            }
        }
        if cfg.exit {
            engine.originate(now.time, exit_key(&params.network));
        }
        if let Some(a) = cfg.ipv4
            && let Some(p) = Prefix::new(IpAddr::V4(a), 32)
        {
            engine.originate(now.time, p);
        }
        for r in &cfg.advertise_routes_v4 {
            if let Some(p) = Prefix::new(IpAddr::V4(r.network()), r.prefix_len()) {
                engine.originate(now.time, p);
            }
        }
        let mut cache = cfg.cache;
        for (p, a) in &cfg.static_peers {
            cache.record_seen(*p, vec![*a], now.unix_u64());
        }
        let tm = TunnelManager::new(
            PolicyConfig::from_params(
                &params.tunnel,
                &params.countries,
                Some(prefix),
                cfg.country.clone(),
            ),
            now.time,
            rng.next_u64(),
        );
        let revoked = cfg.net.revoked().contains(&cfg.serial);
        let punch = Puncher::new(rng.next_u64());
        let mut core = NodeCore {
            engine,
            fib: Fib::new(),
            me: identity::node_address(&prefix),
            prefix,
            timers,
            fixed_timers: cfg.babel_timers.is_some(),
            tunnels: BTreeMap::new(),
            by_iface: BTreeMap::new(),
            by_prefix: BTreeMap::new(),
            cache,
            cache_saved: now.time,
            tm,
            rng,
            // Of two --peer peers that name each other, the lower prefix dials first.
            static_retry: cfg
                .static_peers
                .iter()
                .filter(|(p, _)| *p < prefix)
                .map(|(p, _)| (*p, now.time + STATIC_DIAL_DEFER))
                .collect(),
            static_peers: cfg.static_peers.into_iter().collect(),
            dialing: BTreeMap::new(),
            dialled_addrs: BTreeMap::new(),
            lan_heard: BTreeMap::new(),
            down: false,
            my_endpoints: Vec::new(),
            reach: Reach::new(cfg.listen_port, params.network, cfg.endpoints),
            country: cfg.country,
            net: cfg.net,
            keys: cfg.keys,
            my_serial: cfg.serial,
            my_name: cfg.name,
            revoked,
            not_before: cfg.not_before,
            not_after: cfg.not_after,
            renewing: Renewing::Idle { next_try: now.time },
            fatal: None,
            stopped: false,
            last_bootstrap: None,
            last_explore: None,
            isolated_asks: 0,
            last_registry_fetch: None,
            registry_fetch_pending: false,
            last_crl_ask: None,
            next_tick: now.time,
            later: BTreeMap::new(),
            later_seq: 0,
            actions: VecDeque::new(),
            snapshot_dirty: true,
            counters: Counters::default(),
            origin: None,
            subnet_routes: SubnetRoutes::default(),
            punch,
            my_ipv4: cfg.ipv4,
            probe_paths: false,
        };
        if let Some(setup) = cfg.origin {
            core.origin_init(now, setup);
        }
        core.refresh_reach();
        core.actions
            .push_back(Action::SetRevoked(core.net.revoked().clone()));
        core.actions
            .push_back(Action::LanAuth(Box::new(LanAuth::new(&params, mac))));
        core.actions.push_back(Action::LanPace {
            hello: timers.hello,
            active: true,
        });
        if revoked {
            warn!("this node's certificate is revoked; renewing it");
        }
        core
    }

    /// A reader of the FIB this core publishes (for the data path).
    pub fn fib_reader(&self) -> FibReader {
        self.fib.reader()
    }

    /// This node's prefix.
    pub fn prefix(&self) -> Ipv6Net {
        self.prefix
    }

    /// The parameters in force.
    pub fn params(&self) -> &NetworkParams {
        self.net.params()
    }

    /// The certificate serial in use.
    pub fn serial(&self) -> &str {
        &self.my_serial
    }

    /// True while the certificate in use is revoked (a renewal is due).
    pub fn is_revoked(&self) -> bool {
        self.revoked
    }

    /// True after `mesh down`.
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Prefixes of the neighbours with a tunnel, in order.
    pub fn neighbours(&self) -> Vec<Ipv6Net> {
        self.by_prefix.keys().copied().collect()
    }

    /// Every selected route (for tests and the simulator).
    pub fn selected_routes(&self) -> Vec<FibRoute> {
        self.engine.selected_routes().cloned().collect()
    }

    /// The peer cache.
    pub fn peer_cache(&self) -> &PeerCache {
        &self.cache
    }

    /// Handles one input at `now`.
    pub fn handle(&mut self, now: Now, input: Input) {
        if self.stopped {
            return;
        }
        match input {
            Input::TunnelUp { tunnel, mut info } => {
                let cert = std::mem::take(&mut info.peer_cert);
                self.tunnel_up(now, tunnel, info);
                if let Some(t) = self.tunnels.get_mut(&tunnel) {
                    t.peer_name = identity::cert_info(&cert).ok().and_then(|i| i.name);
                    self.origin_tunnel_up(now, &cert);
                }
            }
            Input::TunnelDown { tunnel, code } => {
                self.tunnel_down(now, tunnel, "closed");
                if code == Some(CloseCode::Revoked) {
                    // A neighbour applied a CRL naming us before we heard of it: ask the
                    // registry now (then renew) rather than wait for its next poll.
                    self.fetch_from_registry(now);
                }
            }
            Input::Babel { tunnel, bytes } => match self.tunnels.get(&tunnel) {
                Some(t) if !t.held => {
                    let src =
                        SocketAddr::new(IpAddr::V6(identity::node_address(&t.peer_prefix)), 6696);
                    let dst = SocketAddr::new(IpAddr::V6(self.me), 6696);
                    self.engine
                        .handle_packet(now.time, t.iface, src, dst, &bytes);
                }
                _ => self.counters.babel_unknown_tunnel += 1,
            },
            Input::Control { tunnel, msg } => self.control_message(now, tunnel, msg),
            Input::ControlStalled(tunnel) => {
                if self.tunnels.contains_key(&tunnel) {
                    warn!(%tunnel, "the neighbour does not read its control stream; closing");
                    self.counters.control_stalled += 1;
                    self.close(now, tunnel, CloseCode::Control, "control stream stalled");
                }
            }
            Input::Rtt { tunnel, rtt } => {
                if let Some(t) = self.tunnels.get_mut(&tunnel) {
                    t.rtt = rtt;
                    let _ = self.engine.set_rtt(now.time, t.neighbour, rtt);
                }
            }
            Input::DialFailed { peer, revoked } => {
                if revoked && !self.revoked {
                    // The peer refused our certificate as revoked.
                    self.fetch_from_registry(now);
                }
                self.dialing.remove(&peer);
                self.cache.record_failure(peer, now.unix_u64());
                if self.static_peers.contains_key(&peer) {
                    self.static_retry.insert(peer, now.time + STATIC_RETRY);
                } else {
                    self.tm.dial_failed(now.time, peer);
                }
                if !revoked {
                    self.punch_after_failed_dial(now, peer);
                }
            }
            Input::Offer { signed, crl, from } => self.offer(now, signed, crl, from),
            Input::KeyBytes(keys) => {
                for (id, bytes) in keys {
                    self.keys.retain(|(i, _)| *i != id);
                    self.keys.push((id, bytes));
                }
                self.set_mac_keys();
            }
            Input::Peers(peers) => self.learn_peers(now, peers, None),
            Input::Renewed(r) => self.renewed(now, r),
            Input::CertificateInstalled(r) => self.installed(now, r),
            Input::LanPeer { prefix, addr } => self.lan_peer(now, prefix, addr),
            Input::Down => self.go_down(now),
            Input::Up => {
                if self.down {
                    self.actions.push_back(Action::TunRestore);
                }
                self.down = false;
                self.push_lan_pace();
                self.snapshot_dirty = true;
            }
            Input::Exit => self.stop(None),
            Input::LocalAddresses(addrs) => self.reach.set_local(&addrs),
            Input::NetworkChanged { addrs, stranded } => self.network_changed(now, addrs, stranded),
            Input::PathMoved { tunnel, remote } => self.path_moved(tunnel, remote),
            Input::PortMapped(addr) => {
                if let Some(a) = addr {
                    info!(external = %a, "the home router forwards the tunnel port");
                }
                self.reach.set_mapped(addr);
            }
            Input::Signal { src, bytes } => self.punch_signal(now, src, &bytes),
            Input::PunchFailed { peer } => self.punch_failed(now, peer),
            #[cfg(any(test, feature = "sim"))]
            Input::ForgeBabel { to, msgs } => {
                if let Some(t) = self.by_prefix.get(&to).and_then(|t| self.tunnels.get(t)) {
                    self.engine.forge(now.time, t.iface, msgs);
                }
            }
            #[cfg(any(test, feature = "sim"))]
            Input::ForgeControl { to, msg } => {
                if let Some(&t) = self.by_prefix.get(&to) {
                    self.send_control(t, msg);
                }
            }
        }
        self.refresh_reach();
        self.drain(now);
    }

    /// Announces the endpoint candidates when they changed: in the hello of new tunnels, to
    /// the registry, and to every neighbour in a repeated hello (which also goes out after a
    /// change of the host's network, changed or not: every tunnel proves its path).
    fn refresh_reach(&mut self) {
        if self.down {
            self.probe_paths = false;
            return;
        }
        self.reach.set_network(self.net.params().network);
        let changed = self.reach.poll_changed();
        let probe = std::mem::take(&mut self.probe_paths);
        if let Some(c) = changed.clone() {
            if c != self.my_endpoints {
                info!(endpoints = ?c, "this node can be reached at");
            }
            self.my_endpoints = c.clone();
            self.push_hello();
            if !c.is_empty() {
                self.actions.push_back(Action::ReportEndpoints(c));
            }
        } else if !probe {
            return;
        }
        let hellos: Vec<(TunnelId, ControlMsg)> = self
            .tunnels
            .iter()
            .map(|(id, t)| (*id, self.repeated_hello(t.remote)))
            .collect();
        for (id, m) in hellos {
            self.send_control(id, m);
        }
    }

    /// The next time [`NodeCore::handle_timeout`] must run (`None` once stopping).
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.stopped {
            return None;
        }
        let mut t = self.next_tick;
        if let Some(e) = self.engine.poll_timeout() {
            t = t.min(e);
        }
        if let Some(((l, _), _)) = self.later.first_key_value() {
            t = t.min(*l);
        }
        if let Some(p) = self.punch.poll_timeout() {
            t = t.min(p);
        }
        Some(t)
    }

    /// Runs what is due at `now`: engine timers, scheduled answers, the housekeeping round.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.stopped {
            return;
        }
        if self.engine.poll_timeout().is_some_and(|t| t <= now.time) {
            self.engine.handle_timeout(now.time);
        }
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 > now.time {
                break;
            }
            let job = entry.remove();
            self.run_later(now, job);
        }
        if now.time >= self.next_tick {
            self.next_tick = now.time + TICK;
            self.housekeeping(now);
            self.origin_tick(now);
            self.punch_tick(now);
        } else if self.punch.poll_timeout().is_some_and(|p| p <= now.time) {
            self.punch_tick(now);
        }
        self.drain(now);
    }

    /// The next action for the shell.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The control API's view, when it changed since the last call.
    pub fn take_snapshot(&mut self) -> Option<Snapshot> {
        if !std::mem::take(&mut self.snapshot_dirty) {
            return None;
        }
        Some(self.snapshot())
    }

    /// Starts a clean stop: our routes are retracted (the transmits come out of
    /// [`NodeCore::poll_action`]). The shell then waits [`NodeCore::linger`] and calls
    /// [`NodeCore::finish_shutdown`].
    pub fn begin_shutdown(&mut self, now: Now) {
        self.engine.shutdown(now.time);
        self.drain(now);
        self.stopped = true;
    }

    /// How long the retractions get to leave.
    pub fn linger(&self) -> Duration {
        if self.fatal.is_some() {
            LINGER_FATAL
        } else {
            LINGER
        }
    }

    /// Closes every tunnel and saves the peer cache (actions to execute).
    pub fn finish_shutdown(&mut self) {
        for id in self.tunnels.keys() {
            self.actions.push_back(Action::Close {
                tunnel: *id,
                code: CloseCode::Shutdown,
            });
        }
        self.actions
            .push_back(Action::SavePeerCache(self.cache.to_json()));
        self.cache.mark_saved();
    }

    fn stop(&mut self, error: Option<String>) {
        self.actions.push_back(Action::Stop { error });
    }

    fn push_hello(&mut self) {
        let p = self.net.params();
        self.actions.push_back(Action::SetHello {
            hello: HelloInfo {
                protocol: PROTOCOL_VERSION,
                params_version: p.version,
                endpoints: self.my_endpoints.clone(),
                country: self.country.clone(),
                observed: None,
            },
            min_protocol: p.min_protocol,
        });
    }

    fn push_lan_pace(&mut self) {
        self.actions.push_back(Action::LanPace {
            hello: self.timers.hello,
            active: !self.down,
        });
    }

    fn schedule(&mut self, at: Time, job: Later) {
        self.later_seq += 1;
        self.later.insert((at, self.later_seq), job);
    }

    fn run_later(&mut self, now: Now, job: Later) {
        match job {
            Later::KillAnswer(tunnel, asked) => {
                let Some(t) = self.tunnels.get(&tunnel) else {
                    return;
                };
                // Make before break: Babel may need a seqno round trip before a feasible
                // route around the soft-locked tunnel exists; closing earlier is a gap.
                let (peer, neighbour) = (t.peer_prefix, t.neighbour);
                let max = self.tm.config().lock_timeout / KILL_ANSWER_MAX_DIVISOR;
                if self.selected_routes_via(peer) > 0 && now.time.saturating_since(asked) < max {
                    self.schedule(
                        now.time + KILL_ANSWER_RECHECK,
                        Later::KillAnswer(tunnel, asked),
                    );
                    return;
                }
                // Routes have moved (or we waited long enough): unusable from now on, and
                // the answer lets the peer close it.
                let _ =
                    self.engine
                        .set_cost_multiplier(now.time, neighbour, CostMultiplier::HARD_LOCK);
                {
                    self.send_control(tunnel, ControlMsg::KillResponse { accepted: true });
                    self.schedule(now.time + KILL_CLOSE_DELAY, Later::KillClose(tunnel));
                }
            }
            Later::CloseReplaced(tunnel) => self.actions.push_back(Action::Close {
                tunnel,
                code: CloseCode::Duplicate,
            }),
            Later::KillClose(tunnel) => {
                if self.tunnels.contains_key(&tunnel) {
                    self.close(
                        now,
                        tunnel,
                        CloseCode::Retired,
                        "retired at the peer's request",
                    );
                }
            }
        }
    }

    fn send_control(&mut self, tunnel: TunnelId, msg: ControlMsg) {
        self.actions.push_back(Action::SendControl { tunnel, msg });
    }

    /// Closes a tunnel and forgets it now.
    fn close(&mut self, now: Now, tunnel: TunnelId, code: CloseCode, why: &str) {
        if self.tunnels.contains_key(&tunnel) {
            self.actions.push_back(Action::Close { tunnel, code });
            self.tunnel_down(now, tunnel, why);
        }
    }

    fn go_down(&mut self, now: Now) {
        self.down = true;
        let ids: Vec<TunnelId> = self.tunnels.keys().copied().collect();
        for id in ids {
            self.close(now, id, CloseCode::Shutdown, "node going down");
        }
        self.push_lan_pace();
        self.actions.push_back(Action::TunWithdraw);
        self.snapshot_dirty = true;
    }

    /// Engine output in its documented order: transmits, route changes (FIB), events.
    fn drain(&mut self, now: Now) {
        while let Some(t) = self.engine.poll_transmit(now.time) {
            if let Some(&tunnel) = self.by_iface.get(&t.iface)
                && self.tunnels.get(&tunnel).is_some_and(|e| !e.held)
            {
                let mut bytes = t.bytes;
                crate::wire::packet::pad_trailer(&mut bytes, BABEL_PADDED_LEN);
                self.actions.push_back(Action::SendBabel { tunnel, bytes });
            }
        }
        let mut changed = false;
        while let Some(c) = self.engine.poll_route_change() {
            if let RouteChange::Removed(p) | RouteChange::Added(FibRoute { prefix: p, .. }) = &c {
                debug!(prefix = %p, "route change");
            }
            self.fib.apply(&c);
            changed = true;
        }
        if changed {
            self.fib.publish();
            self.snapshot_dirty = true;
        }
        // Cheap (one lookup per grant); also catches an originator change that left the
        // next hop as it was.
        self.publish_subnet_routes();
        let mut unknown = Vec::new();
        while let Some(e) = self.engine.poll_event() {
            match e {
                Event::OriginUnknown { prefix, neighbour } => unknown.push((prefix, neighbour)),
                Event::PacketRejected { src, reason, .. } => {
                    debug!(%src, ?reason, "Babel packet rejected")
                }
                other => debug!(?other, "babel"),
            }
        }
        for (prefix, neighbour) in unknown {
            self.origin_ask(now, prefix, neighbour);
        }
    }
}

#[cfg(test)]
#[path = "../core_tests.rs"]
mod tests;
