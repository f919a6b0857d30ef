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
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
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
use crate::mesh::peers::PeerCache;
use crate::mesh::tunnels::control::{ControlMsg, PeerAddr};
use crate::mesh::tunnels::policy::{self, Candidate, Observation, PolicyConfig, TunnelManager};
use crate::mesh::tunnels::{CloseCode, HelloInfo, valid_country};
use crate::params::{NetworkParams, PROTOCOL_VERSION, SignedParams};
use crate::registry_client::ClientError;
use crate::wire::Prefix;

/// How often the core runs its housekeeping round (renewal, dials, tunnel manager).
pub const TICK: Duration = Duration::from_millis(500);
/// How long the higher prefix of two `--peer`s (or LAN neighbours) defers its dial, so the
/// two rarely race to two tunnels (one of which the duplicate rule would close).
pub const STATIC_DIAL_DEFER: Duration = Duration::from_millis(1500);
/// Wait before a failed `--peer` dial is retried.
pub const STATIC_RETRY: Duration = Duration::from_secs(2);
/// How long the side that agrees to retire a tunnel keeps it hard-locked before answering,
/// so Babel routes around it on this side too before the peer closes it.
pub const KILL_ANSWER_DELAY: Duration = Duration::from_secs(1);
/// After answering a kill request, how long until this side closes the tunnel itself (if the
/// requester has not).
pub const KILL_CLOSE_DELAY: Duration = Duration::from_secs(2);
/// A dial that has not come to anything in this long is forgotten.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Parameters and CRL are asked of the registry at most this often.
pub const REGISTRY_FETCH_INTERVAL: Duration = Duration::from_secs(5);
/// A node with nothing to dial asks the registry for a bootstrap peer this often.
pub const BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(10);
/// A node whose peer cache holds fewer peers than the tunnel manager wants asks this often.
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

/// A tunnel, as the shell names it (unique for the life of the process, never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelId(pub u64);

impl std::fmt::Display for TunnelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// The time, as the core needs it: a monotonic clock for timers and the wall clock (Unix
/// seconds) for certificate validity and the peer cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since the node started.
    pub time: Time,
    /// Unix time in seconds.
    pub unix: i64,
}

impl Now {
    fn unix_u64(self) -> u64 {
        u64::try_from(self.unix).unwrap_or(0)
    }
}

/// What the shell knows of a tunnel that completed its handshake and hello.
#[derive(Debug, Clone)]
pub struct TunnelInfo {
    /// The neighbour's prefix (from its certificate).
    pub peer_prefix: Ipv6Net,
    /// The neighbour's certificate serial.
    pub peer_serial: String,
    /// We dialled it.
    pub initiated: bool,
    /// The neighbour's hello.
    pub hello: HelloInfo,
    /// The neighbour's UDP address.
    pub remote: SocketAddr,
}

/// A renewed certificate, as the registry issued it.
#[derive(Debug, Clone)]
pub struct Renewal {
    /// The prefix in the new certificate.
    pub prefix: Ipv6Net,
    /// Its serial.
    pub serial: String,
    /// Its validity (Unix seconds).
    pub not_before: i64,
    /// See `not_before`.
    pub not_after: i64,
    /// The certificate (DER), for the shell to install.
    pub cert_der: Vec<u8>,
    /// The parameters that came with it (their CRL names the old serial when it was revoked).
    pub signed_params: SignedParams,
}

/// The shell could not put a renewed certificate in use.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot use the renewed certificate: {0}")]
pub struct InstallError(pub String);

/// Inputs to [`NodeCore::handle`].
#[derive(Debug)]
pub enum Input {
    /// A tunnel completed its handshake and hello (dialled or accepted).
    TunnelUp {
        /// The shell's name for it.
        tunnel: TunnelId,
        /// What the handshake told.
        info: TunnelInfo,
    },
    /// A tunnel is gone. `code`: the close code the peer sent, if it sent one of ours.
    TunnelDown {
        /// Which.
        tunnel: TunnelId,
        /// The peer's close code.
        code: Option<CloseCode>,
    },
    /// A Babel packet arrived on a tunnel.
    Babel {
        /// On which tunnel.
        tunnel: TunnelId,
        /// The packet.
        bytes: Vec<u8>,
    },
    /// A control-stream message from the neighbour on a tunnel.
    Control {
        /// From which tunnel.
        tunnel: TunnelId,
        /// The message.
        msg: ControlMsg,
    },
    /// The shell's queue to a neighbour's control stream is full: it does not read.
    ControlStalled(TunnelId),
    /// The tunnel's smoothed RTT (QUIC's).
    Rtt {
        /// Which tunnel.
        tunnel: TunnelId,
        /// Its RTT.
        rtt: Duration,
    },
    /// A dial ([`Action::Dial`]) failed on every address. `revoked`: a peer refused our
    /// certificate as revoked.
    DialFailed {
        /// The peer dialled.
        peer: Ipv6Net,
        /// Refused as revoked.
        revoked: bool,
    },
    /// Parameters and/or a CRL, not verified yet, from the registry (`from: None`) or from the
    /// neighbour on a tunnel.
    Offer {
        /// Signed parameters.
        signed: Option<SignedParams>,
        /// CRL (DER).
        crl: Option<Vec<u8>>,
        /// Who sent it.
        from: Option<TunnelId>,
    },
    /// MAC key bytes by registry key id.
    KeyBytes(Vec<(String, Vec<u8>)>),
    /// Peer addresses (from the registry's bootstrap answer).
    Peers(Vec<PeerAddr>),
    /// The outcome of [`Action::Renew`].
    Renewed(Result<Renewal, ClientError>),
    /// The outcome of [`Action::InstallCertificate`].
    CertificateInstalled(Result<(), InstallError>),
    /// A node announced itself on a `--lan` interface (MAC verified, prefix in the network).
    LanPeer {
        /// Its prefix.
        prefix: Ipv6Net,
        /// Its link-local tunnel endpoint.
        addr: SocketAddrV6,
    },
    /// `mesh down`.
    Down,
    /// `mesh up` on a running node.
    Up,
    /// `mesh down --exit`, SIGINT, SIGTERM.
    Exit,
}

/// What the shell must do, from [`NodeCore::poll_action`], in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start carrying the tunnel's traffic: it is the engine's interface `iface` (the FIB names
    /// next hops by interface).
    Activate {
        /// Which tunnel.
        tunnel: TunnelId,
        /// Its interface.
        iface: IfaceId,
    },
    /// Close a tunnel with a code. The core has forgotten it already.
    Close {
        /// Which tunnel.
        tunnel: TunnelId,
        /// Why.
        code: CloseCode,
    },
    /// Dial a peer, trying its addresses in order; answer with [`Input::TunnelUp`] or
    /// [`Input::DialFailed`].
    Dial {
        /// Its prefix.
        peer: Ipv6Net,
        /// Its addresses.
        addrs: Vec<SocketAddr>,
    },
    /// Send a Babel packet on a tunnel.
    SendBabel {
        /// Which tunnel.
        tunnel: TunnelId,
        /// The packet.
        bytes: Vec<u8>,
    },
    /// Send a control-stream message on a tunnel.
    SendControl {
        /// Which tunnel.
        tunnel: TunnelId,
        /// The message.
        msg: ControlMsg,
    },
    /// Ask the registry for its parameters and CRL; answer with [`Input::Offer`].
    FetchParams,
    /// Ask the registry for the MAC key bytes; answer with [`Input::KeyBytes`].
    FetchKeys,
    /// Ask the registry for a bootstrap peer; answer with [`Input::Peers`] when it has one.
    FetchBootstrap,
    /// Renew the certificate (same key, same prefix); answer with [`Input::Renewed`].
    Renew,
    /// Store the renewed certificate and use it for new tunnels and registry requests; answer
    /// with [`Input::CertificateInstalled`].
    InstallCertificate {
        /// The certificate (DER).
        cert_der: Vec<u8>,
    },
    /// Store the parameters and CRL in force.
    SaveParams {
        /// Signed parameters.
        signed: Box<SignedParams>,
        /// The CRL (DER).
        crl: Option<Vec<u8>>,
    },
    /// Store the peer cache (its JSON form).
    SavePeerCache(Vec<u8>),
    /// Refuse handshakes from these serials from now on.
    SetRevoked(HashSet<String>),
    /// What new tunnels say in their hello, and the minimum protocol they accept.
    SetHello {
        /// The hello.
        hello: HelloInfo,
        /// The minimum protocol.
        min_protocol: u32,
    },
    /// The keys LAN discovery signs and verifies with.
    LanAuth(Box<LanAuth>),
    /// LAN discovery pace (the hello interval) and whether it announces at all.
    LanPace {
        /// Hello interval.
        hello: Duration,
        /// Announce (false while the node is down).
        active: bool,
    },
    /// Remove the node address from the TUN device (`mesh down`: applications see the network
    /// gone, not a black hole).
    TunWithdraw,
    /// Put the node address back.
    TunRestore,
    /// Stop the node: the shell calls [`NodeCore::begin_shutdown`], lingers
    /// [`NodeCore::linger`], then [`NodeCore::finish_shutdown`]. `error`: why it must stop.
    Stop {
        /// The one sentence to exit with, for a stop the user did not ask for.
        error: Option<String>,
    },
}

/// What the node counts of what it refused or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `ParamsRequest`s beyond [`PARAMS_ANSWER_INTERVAL`].
    pub params_requests_ignored: u64,
    /// Tunnels closed because the neighbour did not read its control stream.
    pub control_stalled: u64,
    /// Parameters or CRLs refused (bad signature, older, mismatched).
    pub offers_refused: u64,
    /// Babel packets for a tunnel the core does not know.
    pub babel_unknown_tunnel: u64,
}

/// What the control API shows, built by [`NodeCore::snapshot`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Node state.
    pub state: NodeStateName,
    /// Tunnels.
    pub peers: Vec<control::Peer>,
    /// Babel's routes.
    pub routes: Vec<control::Route>,
    /// Number of tunnels.
    pub tunnels: usize,
    /// Selected routes other than our own.
    pub selected: usize,
    /// Parameters version in force.
    pub params_version: u64,
}

/// What [`NodeCore::new`] starts from (the shell loads it from the state directory).
#[derive(Debug)]
pub struct CoreConfig {
    /// This node's prefix.
    pub prefix: Ipv6Net,
    /// Parameters and CRL in force.
    pub net: NetState,
    /// MAC key bytes known, by registry key id.
    pub keys: Vec<(String, Vec<u8>)>,
    /// This node's certificate serial.
    pub serial: String,
    /// Its validity (Unix seconds).
    pub not_before: i64,
    /// See `not_before`.
    pub not_after: i64,
    /// Peers given with `--peer`: always kept connected.
    pub static_peers: Vec<(Ipv6Net, SocketAddr)>,
    /// Endpoints announced to neighbours.
    pub endpoints: Vec<SocketAddr>,
    /// The country this node states.
    pub country: Option<String>,
    /// Babel timers fixed by configuration (`None`: from the parameters).
    pub babel_timers: Option<Timers>,
    /// The peer cache as loaded.
    pub cache: PeerCache,
}

/// The Babel router-id of the node owning `prefix`: the first 8 bytes of SHA-256 of its CIDR
/// text, never all zeros or all ones (RFC 8966 forbids those). Stable across restarts and
/// unique per prefix (the first 64 bits alone would collide for node prefixes longer than /64
/// inside one /64).
pub fn router_id_for(prefix: &Ipv6Net) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(prefix.to_string().as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    if id == [0; 8] || id == [0xff; 8] {
        id[7] ^= 1;
    }
    id
}

/// The one sentence a node says when the network requires a newer protocol.
pub fn protocol_too_old(params: &NetworkParams) -> Option<String> {
    (params.min_protocol > PROTOCOL_VERSION).then(|| {
        format!(
            "this network now requires protocol {} but this mesh speaks {}; upgrade mesh",
            params.min_protocol, PROTOCOL_VERSION
        )
    })
}

/// The MAC keys of `params` from the key bytes known.
pub fn mac_keys(params: &NetworkParams, keys: &[(String, Vec<u8>)]) -> MacKeys {
    let find = |id: &Option<String>, slot: u32| {
        id.as_ref()
            .and_then(|id| keys.iter().find(|(k, _)| k == id))
            .map(|(_, b)| MacKey::new(slot, b.clone()))
    };
    let sign = find(&params.mac.sign, 1);
    let accept = find(&params.mac.accept, 2);
    // Rotation step (sign K2, accept K1) reached before K2's bytes: everybody still accepts
    // K1, so sign with it until K2 arrives rather than send unsigned packets nobody takes.
    let sign = match (sign, &accept) {
        (None, Some(a)) => Some(MacKey::new(1, a.bytes().to_vec())),
        (s, _) => s,
    };
    MacKeys {
        sign,
        accept: accept.into_iter().collect(),
        accept_unsigned: params.mac.accept_unsigned,
    }
}

/// When to renew: 30 days before expiry, or half-way through a shorter validity (the registry
/// backdates `not_before` for clock skew; that is not validity).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before - identity::CERT_BACKDATE_SECS).max(0);
    not_after - (30 * 86_400).min(lifetime / 2)
}

fn timers_of(params: &NetworkParams) -> Timers {
    let hello = Duration::from_secs(u64::from(params.hello_interval.max(1)));
    Timers {
        hello,
        update: hello * 4,
    }
}

struct TunnelEntry {
    iface: IfaceId,
    peer_prefix: Ipv6Net,
    neighbour: NeighbourId,
    initiated: bool,
    peer_params: u64,
    peer_serial: String,
    remote: SocketAddr,
    rtt: Duration,
    last_params_answer: Option<Time>,
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
    /// Answer a kill request we agreed to.
    KillAnswer(TunnelId),
    /// Close the tunnel we agreed to retire, if the requester has not.
    KillClose(TunnelId),
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
    /// LAN neighbours heard (dialled through `static_peers`) and when.
    lan_heard: BTreeMap<Ipv6Net, (SocketAddrV6, Time)>,
    down: bool,
    my_endpoints: Vec<SocketAddr>,
    country: Option<String>,
    /// Parameters and CRL in force.
    net: NetState,
    /// MAC key bytes known, by registry key id.
    keys: Vec<(String, Vec<u8>)>,
    my_serial: String,
    revoked: bool,
    not_before: i64,
    not_after: i64,
    renewing: Renewing,
    /// Why the node must stop (e.g. the network requires a newer protocol).
    fatal: Option<String>,
    stopped: bool,
    last_bootstrap: Option<Time>,
    last_registry_fetch: Option<Time>,
    registry_fetch_pending: bool,
    next_tick: Time,
    later: BTreeMap<(Time, u64), Later>,
    later_seq: u64,
    actions: VecDeque<Action>,
    snapshot_dirty: bool,
    counters: Counters,
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
            lan_heard: BTreeMap::new(),
            down: false,
            my_endpoints: cfg.endpoints,
            country: cfg.country,
            net: cfg.net,
            keys: cfg.keys,
            my_serial: cfg.serial,
            revoked,
            not_before: cfg.not_before,
            not_after: cfg.not_after,
            renewing: Renewing::Idle { next_try: now.time },
            fatal: None,
            stopped: false,
            last_bootstrap: None,
            last_registry_fetch: None,
            registry_fetch_pending: false,
            next_tick: now.time,
            later: BTreeMap::new(),
            later_seq: 0,
            actions: VecDeque::new(),
            snapshot_dirty: true,
            counters: Counters::default(),
        };
        core.push_hello();
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

    /// What the node counted.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Handles one input at `now`.
    pub fn handle(&mut self, now: Now, input: Input) {
        if self.stopped {
            return;
        }
        match input {
            Input::TunnelUp { tunnel, info } => self.tunnel_up(now, tunnel, info),
            Input::TunnelDown { tunnel, code } => {
                self.tunnel_down(now, tunnel, "closed");
                if code == Some(CloseCode::Revoked) {
                    // A neighbour applied a CRL naming us before we heard of it: ask the
                    // registry now (then renew) rather than wait for its next poll.
                    self.fetch_from_registry(now);
                }
            }
            Input::Babel { tunnel, bytes } => match self.tunnels.get(&tunnel) {
                Some(t) => {
                    let src =
                        SocketAddr::new(IpAddr::V6(identity::node_address(&t.peer_prefix)), 6696);
                    let dst = SocketAddr::new(IpAddr::V6(self.me), 6696);
                    self.engine
                        .handle_packet(now.time, t.iface, src, dst, &bytes);
                }
                None => self.counters.babel_unknown_tunnel += 1,
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
            }
            Input::Offer { signed, crl, from } => self.offer(now, signed, crl, from),
            Input::KeyBytes(keys) => {
                for (id, bytes) in keys {
                    self.keys.retain(|(i, _)| *i != id);
                    self.keys.push((id, bytes));
                }
                self.set_mac_keys();
            }
            Input::Peers(peers) => self.learn_peers(now, peers),
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
        }
        self.drain(now);
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

    /// The control API's view.
    pub fn snapshot(&self) -> Snapshot {
        let routes: Vec<control::Route> = self
            .engine
            .routes()
            .into_iter()
            .map(|r| control::Route {
                prefix: r.prefix.to_string(),
                next_hop: r.next_hop.map(|a| a.to_string()).unwrap_or_default(),
                iface: r.iface.clone(),
                metric: r.metric,
                router_id: control::router_id_text(&r.router_id.0),
                seqno: r.seqno.0,
                selected: r.selected,
                local: r.local,
            })
            .collect();
        let peers = self
            .tunnels
            .values()
            .map(|t| control::Peer {
                prefix: t.peer_prefix.to_string(),
                endpoint: t.remote.to_string(),
                rtt_ms: t.rtt.as_secs_f64() * 1000.0,
                initiated: t.initiated,
                state: "up".into(),
                params_version: t.peer_params,
            })
            .collect();
        let selected = routes.iter().filter(|r| r.selected && !r.local).count();
        let state = if self.revoked {
            NodeStateName::Revoked
        } else if self.down {
            NodeStateName::Down
        } else if self.tunnels.is_empty() {
            NodeStateName::Connecting
        } else {
            NodeStateName::Up
        };
        Snapshot {
            state,
            peers,
            routes,
            tunnels: self.tunnels.len(),
            selected,
            params_version: self.net.params().version,
        }
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
            Later::KillAnswer(tunnel) => {
                if self.tunnels.contains_key(&tunnel) {
                    self.send_control(tunnel, ControlMsg::KillResponse { accepted: true });
                    self.schedule(now.time + KILL_CLOSE_DELAY, Later::KillClose(tunnel));
                }
            }
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

    fn tunnel_up(&mut self, now: Now, tunnel: TunnelId, info: TunnelInfo) {
        let peer = info.peer_prefix;
        let reject = |core: &mut NodeCore, code: CloseCode| {
            core.actions.push_back(Action::Close { tunnel, code });
        };
        if self.down || self.tunnels.contains_key(&tunnel) {
            return reject(self, CloseCode::Shutdown);
        }
        // The handshake already refused revoked serials; a CRL applied while it was in flight
        // is caught here.
        if self.net.revoked().contains(&info.peer_serial) {
            return reject(self, CloseCode::Revoked);
        }
        if peer == self.prefix {
            return reject(self, CloseCode::Internal);
        }
        if let Some(&existing) = self.by_prefix.get(&peer) {
            // One connection per pair: the lower prefix keeps the one it initiated.
            let keep_new = if self.prefix < peer {
                info.initiated
            } else {
                !info.initiated
            };
            let old_initiated = self.tunnels.get(&existing).map(|e| e.initiated);
            if !keep_new || old_initiated == Some(info.initiated) {
                return reject(self, CloseCode::Duplicate);
            }
            self.close(
                now,
                existing,
                CloseCode::Duplicate,
                "replaced by a duplicate",
            );
        }
        let is_static = self.static_peers.contains_key(&peer);
        if !info.initiated
            && !is_static
            && !self.tm.accept_incoming(peer, info.hello.country.as_deref())
        {
            return reject(self, CloseCode::TooMany);
        }
        if !is_static {
            self.tm.tunnel_up(now.time, peer, info.initiated);
        }
        self.dialing.remove(&peer);
        let peer_addr = identity::node_address(&peer);
        let mut icfg = IfaceConfig::tunnel(&format!("t-{peer}"), self.me, peer_addr);
        icfg.timers = self.timers;
        let iface = self.engine.add_interface(now.time, icfg);
        let Ok(neighbour) = self
            .engine
            .add_neighbour(now.time, iface, IpAddr::V6(peer_addr))
        else {
            let _ = self.engine.remove_interface(now.time, iface);
            return reject(self, CloseCode::Internal);
        };
        info!(peer = %peer, remote = %info.remote, initiated = info.initiated, "tunnel up");
        if !info.hello.endpoints.is_empty() {
            self.cache
                .record_seen(peer, info.hello.endpoints.clone(), now.unix_u64());
        }
        if info.hello.country.is_some() {
            self.cache.set_country(peer, info.hello.country.clone());
        }
        self.cache.record_success(peer, now.unix_u64());
        self.by_prefix.insert(peer, tunnel);
        self.by_iface.insert(iface, tunnel);
        self.tunnels.insert(
            tunnel,
            TunnelEntry {
                iface,
                peer_prefix: peer,
                neighbour,
                initiated: info.initiated,
                peer_params: info.hello.params_version,
                peer_serial: info.peer_serial,
                remote: info.remote,
                rtt: Duration::ZERO,
                last_params_answer: None,
            },
        );
        self.actions.push_back(Action::Activate { tunnel, iface });
        // Parameters: the older side pulls from the newer one, and the newer side pushes
        // too — the hello was written before the handshake finished, so parameters applied
        // in between would otherwise reach this neighbour only with the next change.
        let (theirs, mine) = (info.hello.params_version, self.net.params().version);
        if theirs > mine {
            self.send_control(tunnel, ControlMsg::ParamsRequest);
        } else if theirs < mine {
            let m = self.params_message();
            if let Some(t) = self.tunnels.get_mut(&tunnel) {
                t.peer_params = mine;
            }
            self.send_control(tunnel, m);
        }
        // Share the peers we know.
        let peers: Vec<PeerAddr> = self
            .cache
            .iter()
            .filter(|(p, e)| **p != peer && e.failures == 0)
            .take(PEERS_SHARED)
            .map(|(p, e)| PeerAddr {
                prefix: *p,
                endpoints: e.endpoints.clone(),
                country: e.country.clone(),
            })
            .chain((!self.my_endpoints.is_empty()).then(|| PeerAddr {
                prefix: self.prefix,
                endpoints: self.my_endpoints.clone(),
                country: self.country.clone(),
            }))
            .collect();
        self.send_control(tunnel, ControlMsg::Peers { peers });
        self.snapshot_dirty = true;
    }

    fn tunnel_down(&mut self, now: Now, tunnel: TunnelId, why: &str) {
        let Some(t) = self.tunnels.remove(&tunnel) else {
            return;
        };
        let _ = self.engine.remove_neighbour(now.time, t.neighbour);
        let _ = self.engine.remove_interface(now.time, t.iface);
        self.by_iface.remove(&t.iface);
        if self.by_prefix.get(&t.peer_prefix) == Some(&tunnel) {
            self.by_prefix.remove(&t.peer_prefix);
            self.tm.tunnel_down(now.time, t.peer_prefix);
            if self.static_peers.contains_key(&t.peer_prefix) && t.peer_prefix < self.prefix {
                self.static_retry
                    .insert(t.peer_prefix, now.time + STATIC_DIAL_DEFER);
            }
        }
        self.later.retain(|_, job| match job {
            Later::KillAnswer(id) | Later::KillClose(id) => *id != tunnel,
        });
        info!(peer = %t.peer_prefix, why, "tunnel down");
        self.snapshot_dirty = true;
    }

    fn learn_peers(&mut self, now: Now, peers: Vec<PeerAddr>) {
        let network = self.net.params().network;
        for p in peers.into_iter().take(MAX_PEERS_PER_MESSAGE) {
            if p.prefix != self.prefix && network.contains(&p.prefix) && !p.endpoints.is_empty() {
                self.cache
                    .record_seen(p.prefix, p.endpoints, now.unix_u64());
                if let Some(c) = p.country.filter(|c| valid_country(c)) {
                    self.cache.set_country(p.prefix, Some(c));
                }
            }
        }
    }

    /// The signed parameters and CRL in force, for a neighbour.
    fn params_message(&self) -> ControlMsg {
        use base64::Engine as _;
        ControlMsg::Params {
            params: self.net.signed().to_json(),
            crl: self
                .net
                .crl_der()
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d)),
        }
    }

    fn control_message(&mut self, now: Now, tunnel: TunnelId, msg: ControlMsg) {
        if !self.tunnels.contains_key(&tunnel) {
            return;
        }
        match msg {
            ControlMsg::Peers { peers } => self.learn_peers(now, peers),
            ControlMsg::ParamsRequest => {
                let version = self.net.params().version;
                let Some(t) = self.tunnels.get_mut(&tunnel) else {
                    return;
                };
                if t.last_params_answer
                    .is_some_and(|l| now.time.saturating_since(l) < PARAMS_ANSWER_INTERVAL)
                {
                    self.counters.params_requests_ignored += 1;
                    return;
                }
                t.last_params_answer = Some(now.time);
                t.peer_params = t.peer_params.max(version);
                let m = self.params_message();
                self.send_control(tunnel, m);
            }
            ControlMsg::Params { params, crl } => {
                use base64::Engine as _;
                let signed = match SignedParams::from_json(&params) {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(error = %e, "malformed parameters from a neighbour");
                        self.counters.offers_refused += 1;
                        return;
                    }
                };
                let crl =
                    crl.and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
                self.offer(now, Some(signed), crl, Some(tunnel));
            }
            ControlMsg::KillRequest => {
                // The end of the peer's lock cycle: agree unless the tunnel manager says
                // this is our last tunnel, or the peer is one we were told to keep (--peer).
                let Some(t) = self.tunnels.get(&tunnel) else {
                    return;
                };
                let (peer, neighbour) = (t.peer_prefix, t.neighbour);
                let accepted = !self.static_peers.contains_key(&peer)
                    && self.tm.on_kill_request(now.time, peer);
                if !accepted {
                    self.send_control(tunnel, ControlMsg::KillResponse { accepted });
                    return;
                }
                info!(%peer, "tunnel retired at the peer's request");
                // Our side of the lock: Babel routes around the tunnel here too before it
                // closes, then we answer and the peer closes it.
                let _ =
                    self.engine
                        .set_cost_multiplier(now.time, neighbour, CostMultiplier::HARD_LOCK);
                self.schedule(now.time + KILL_ANSWER_DELAY, Later::KillAnswer(tunnel));
            }
            ControlMsg::KillResponse { accepted } => {
                if let Some(t) = self.tunnels.get(&tunnel) {
                    let peer = t.peer_prefix;
                    self.tm.on_kill_response(now.time, peer, accepted);
                }
            }
            ControlMsg::Hello { .. } => {}
        }
    }

    /// Takes newer parameters and/or a CRL from the registry or a neighbour, applies them
    /// without restarting and passes them on to the other neighbours.
    fn offer(
        &mut self,
        now: Now,
        signed: Option<SignedParams>,
        crl: Option<Vec<u8>>,
        from: Option<TunnelId>,
    ) {
        let old = self.net.params().clone();
        let applied = match self.net.offer(signed.as_ref(), crl.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                let who = from
                    .and_then(|i| self.tunnels.get(&i))
                    .map(|t| t.peer_prefix.to_string())
                    .unwrap_or_else(|| "the registry".into());
                warn!(from = %who, error = %e, "refused parameters or CRL");
                self.counters.offers_refused += 1;
                return;
            }
        };
        if let Some(i) = from
            && let Some(t) = self.tunnels.get_mut(&i)
            && let Some(v) = applied.offered
        {
            // The sender has at least what it sent.
            t.peer_params = t.peer_params.max(v);
        }
        if !applied.any() {
            return;
        }
        self.actions.push_back(Action::SaveParams {
            signed: Box::new(self.net.signed().clone()),
            crl: self.net.crl_der().map(<[u8]>::to_vec),
        });
        if applied.params {
            let p = self.net.params().clone();
            info!(version = p.version, changed = ?old.diff(&p), "network parameters applied");
            if let Some(msg) = protocol_too_old(&p) {
                // Pass the news on before stopping: our neighbours must stop too.
                tracing::error!("{msg}");
                self.fatal = Some(msg.clone());
                self.announce(from);
                self.stop(Some(msg));
                return;
            }
            self.tm.set_config(PolicyConfig::from_params(
                &p.tunnel,
                &p.countries,
                Some(self.prefix),
                self.country.clone(),
            ));
            if !self.fixed_timers && p.hello_interval != old.hello_interval {
                self.timers = timers_of(&p);
                for t in self.tunnels.values() {
                    let _ = self.engine.set_timers(now.time, t.iface, self.timers);
                }
                self.push_lan_pace();
            }
            self.push_hello();
            // Key ids we hold bytes for take effect now; new ids are fetched from the
            // registry (only authenticated, non-revoked nodes get them).
            self.set_mac_keys();
            let missing = [&p.mac.sign, &p.mac.accept]
                .into_iter()
                .flatten()
                .any(|id| !self.keys.iter().any(|(k, _)| k == id));
            if missing {
                self.actions.push_back(Action::FetchKeys);
            }
        }
        if applied.crl {
            self.apply_crl(now);
        }
        self.announce(from);
        self.snapshot_dirty = true;
    }

    /// Sends the parameters and CRL in force to every neighbour but `from`.
    fn announce(&mut self, from: Option<TunnelId>) {
        let m = self.params_message();
        let v = self.net.params().version;
        let mut to = Vec::new();
        for (id, t) in self.tunnels.iter_mut() {
            if Some(*id) != from {
                t.peer_params = t.peer_params.max(v);
                to.push(*id);
            }
        }
        for id in to {
            self.send_control(id, m.clone());
        }
    }

    /// Applies the CRL in force at once: handshakes from revoked serials are refused from now
    /// on, live tunnels to them are closed and their addresses forgotten; if our own serial is
    /// in it, we renew.
    fn apply_crl(&mut self, now: Now) {
        let revoked = self.net.revoked().clone();
        if revoked.contains(&self.my_serial) && !self.revoked {
            warn!("this node's certificate is revoked; renewing it");
            self.revoked = true;
        }
        let dead: Vec<(TunnelId, Ipv6Net)> = self
            .tunnels
            .iter()
            .filter(|(_, t)| revoked.contains(&t.peer_serial))
            .map(|(id, t)| (*id, t.peer_prefix))
            .collect();
        self.actions.push_back(Action::SetRevoked(revoked));
        for (id, prefix) in dead {
            self.close(now, id, CloseCode::Revoked, "peer certificate revoked");
            self.cache.forget(prefix);
        }
        self.snapshot_dirty = true;
    }

    /// Starts a renewal with the registry (same key, same prefix, new serial) when the
    /// certificate is revoked or close to expiry.
    fn maybe_renew(&mut self, now: Now) {
        let due = self.revoked || now.unix >= renew_at(self.not_before, self.not_after);
        let Renewing::Idle { next_try } = self.renewing else {
            return;
        };
        if !due || now.time < next_try {
            return;
        }
        self.renewing = Renewing::Requested;
        info!(revoked = self.revoked, "renewing this node's certificate");
        self.actions.push_back(Action::Renew);
    }

    fn renewed(&mut self, now: Now, r: Result<Renewal, ClientError>) {
        if !matches!(self.renewing, Renewing::Requested) {
            debug!("a renewal answer nobody waits for; ignored");
            return;
        }
        let retry = Renewing::Idle {
            next_try: now.time + RENEW_RETRY,
        };
        match r {
            Err(e) => {
                warn!(error = %e, "certificate renewal failed; retrying in a minute");
                self.renewing = retry;
            }
            Ok(c) if c.prefix != self.prefix => {
                warn!(got = %c.prefix, "the registry renewed with another prefix; ignored");
                self.renewing = retry;
            }
            Ok(c) => {
                self.actions.push_back(Action::InstallCertificate {
                    cert_der: c.cert_der.clone(),
                });
                self.renewing = Renewing::Installing(Box::new(c));
            }
        }
    }

    fn installed(&mut self, now: Now, r: Result<(), InstallError>) {
        let Renewing::Installing(c) = std::mem::replace(
            &mut self.renewing,
            Renewing::Idle {
                next_try: now.time + RENEW_RETRY,
            },
        ) else {
            debug!("an installed certificate nobody waits for; ignored");
            return;
        };
        if let Err(e) = r {
            warn!(error = %e, "retrying the renewal in a minute");
            return;
        }
        info!(serial = %c.serial, not_after = c.not_after, "certificate renewed");
        self.my_serial = c.serial.clone();
        self.not_before = c.not_before;
        self.not_after = c.not_after;
        self.revoked = false;
        self.renewing = Renewing::Idle {
            next_try: now.time + RENEW_SETTLE,
        };
        // Parameters that came with the certificate (the CRL names our old serial).
        self.offer(now, Some(c.signed_params), None, None);
        self.snapshot_dirty = true;
    }

    fn housekeeping(&mut self, now: Now) {
        self.lan_expire(now);
        self.maybe_renew(now);
        // The parameters name a CRL we lack (no neighbour had it): ask the registry
        // (rate-limited there).
        if self.registry_fetch_pending || self.net.crl_wanted() {
            self.fetch_from_registry(now);
        }
        self.maybe_bootstrap(now);
        // Dial: peers given with --peer are always kept connected; the tunnel manager
        // chooses the others. A dial gives up within the tunnel idle timeout per address.
        let by_prefix = &self.by_prefix;
        self.dialing.retain(|p, started| {
            now.time.saturating_since(*started) < DIAL_TIMEOUT && !by_prefix.contains_key(p)
        });
        if !self.down {
            let statics: Vec<(Ipv6Net, SocketAddr)> = self
                .static_peers
                .iter()
                .filter(|(p, _)| {
                    **p != self.prefix
                        && !self.by_prefix.contains_key(p)
                        && !self.dialing.contains_key(p)
                        && self.static_retry.get(p).is_none_or(|t| *t <= now.time)
                })
                .map(|(p, a)| (*p, *a))
                .collect();
            for (peer, addr) in statics {
                self.dial(now, peer, vec![addr]);
            }
            self.run_tunnel_manager(now);
        }
        if self.cache.is_dirty()
            && now.time.saturating_since(self.cache_saved) >= CACHE_SAVE_INTERVAL
        {
            self.actions
                .push_back(Action::SavePeerCache(self.cache.to_json()));
            self.cache.mark_saved();
            self.cache_saved = now.time;
        }
        self.snapshot_dirty = true;
    }

    /// Asks the registry for a bootstrap peer: every [`BOOTSTRAP_INTERVAL`] while nobody is
    /// known and no tunnel is up, and every [`BOOTSTRAP_TOP_UP_INTERVAL`] while the peer cache
    /// holds fewer peers to dial than the tunnel manager wants. Without the second, nodes that
    /// started together can stay in islands that only know each other (found in the
    /// simulator: 8 nodes, two islands, forever).
    fn maybe_bootstrap(&mut self, now: Now) {
        if self.down {
            return;
        }
        let unix = now.unix_u64();
        let isolated = self.tunnels.is_empty()
            && self.dialing.is_empty()
            && self.cache.candidates(unix, 1, &mut self.rng).is_empty();
        let want = usize::try_from(self.net.params().tunnel.client_count).unwrap_or(usize::MAX);
        let interval = if isolated {
            BOOTSTRAP_INTERVAL
        } else {
            let (tunnels, statics) = (&self.by_prefix, &self.static_peers);
            let spare = self
                .cache
                .candidates_where(unix, want, &mut self.rng, |p, _| {
                    !tunnels.contains_key(p) && !statics.contains_key(p)
                })
                .len();
            if spare >= want {
                return;
            }
            BOOTSTRAP_TOP_UP_INTERVAL
        };
        if self
            .last_bootstrap
            .is_none_or(|t| now.time.saturating_since(t) >= interval)
        {
            self.last_bootstrap = Some(now.time);
            self.actions.push_back(Action::FetchBootstrap);
        }
    }

    fn dial(&mut self, now: Now, peer: Ipv6Net, addrs: Vec<SocketAddr>) {
        self.dialing.insert(peer, now.time);
        self.actions.push_back(Action::Dial { peer, addrs });
    }

    /// One round of re6st's tunnel manager over what Babel and the peer cache know now.
    fn run_tunnel_manager(&mut self, now: Now) {
        let by_addr: BTreeMap<IpAddr, Ipv6Net> = self
            .tunnels
            .values()
            .map(|t| {
                (
                    IpAddr::V6(identity::node_address(&t.peer_prefix)),
                    t.peer_prefix,
                )
            })
            .collect();
        let mut via: BTreeMap<Ipv6Net, usize> = BTreeMap::new();
        let mut routable = Vec::new();
        let node_len = self.net.params().node_prefix_len;
        for r in self.engine.selected_routes() {
            if let Some(p) = by_addr.get(&r.next_hop) {
                *via.entry(*p).or_default() += 1;
            }
            if let IpAddr::V6(a) = r.prefix.addr()
                && r.prefix.len() == node_len
                && let Ok(p) = Ipv6Net::new(a, node_len)
                && p != self.prefix
                && !self.by_prefix.contains_key(&p)
                && !self.static_peers.contains_key(&p)
                && !self.cache.endpoints(&p).is_empty()
            {
                routable.push(Candidate {
                    prefix: p,
                    country: self.cache.get(&p).and_then(|e| e.country.clone()),
                });
            }
        }
        // static peers are not the manager's: it neither counts nor retires them
        let routes_via: Vec<(Ipv6Net, usize)> = self
            .tunnels
            .values()
            .filter(|t| !self.static_peers.contains_key(&t.peer_prefix))
            .map(|t| (t.peer_prefix, via.get(&t.peer_prefix).copied().unwrap_or(0)))
            .collect();
        let (tunnels, dialing, statics) = (&self.by_prefix, &self.dialing, &self.static_peers);
        let cached: Vec<Candidate> = self
            .cache
            .candidates_where(now.unix_u64(), 16, &mut self.rng, |p, _| {
                !tunnels.contains_key(p) && !dialing.contains_key(p) && !statics.contains_key(p)
            })
            .into_iter()
            .filter(|p| *p != self.prefix)
            .map(|p| Candidate {
                prefix: p,
                country: self.cache.get(&p).and_then(|e| e.country.clone()),
            })
            .collect();
        self.tm.tick(
            now.time,
            &Observation {
                routes_via: &routes_via,
                routable: &routable,
                cached: &cached,
            },
        );
        while let Some(action) = self.tm.poll_action() {
            let (policy::Action::Dial(p)
            | policy::Action::SoftLock(p)
            | policy::Action::HardLock(p)
            | policy::Action::Unlock(p)
            | policy::Action::SendKillRequest(p)
            | policy::Action::Close(p)) = action;
            let entry = self.by_prefix.get(&p).copied();
            match action {
                policy::Action::Dial(p) => {
                    let addrs = self.cache.endpoints(&p).to_vec();
                    if addrs.is_empty()
                        || self.dialing.contains_key(&p)
                        || self.by_prefix.contains_key(&p)
                    {
                        self.tm.dial_failed(now.time, p);
                    } else {
                        debug!(peer = %p, "tunnel manager: dial");
                        self.dial(now, p, addrs);
                    }
                }
                policy::Action::SoftLock(p)
                | policy::Action::HardLock(p)
                | policy::Action::Unlock(p) => {
                    let m = match action {
                        policy::Action::SoftLock(_) => CostMultiplier::SOFT_LOCK,
                        policy::Action::HardLock(_) => CostMultiplier::HARD_LOCK,
                        _ => CostMultiplier::NORMAL,
                    };
                    if let Some(n) = entry
                        .and_then(|id| self.tunnels.get(&id))
                        .map(|t| t.neighbour)
                    {
                        info!(peer = %p, ?action, "tunnel manager");
                        let _ = self.engine.set_cost_multiplier(now.time, n, m);
                    }
                }
                policy::Action::SendKillRequest(_) => {
                    if let Some(id) = entry {
                        self.send_control(id, ControlMsg::KillRequest);
                    }
                }
                policy::Action::Close(p) => {
                    if let Some(id) = entry {
                        info!(peer = %p, "tunnel manager: retiring the tunnel");
                        self.close(now, id, CloseCode::Retired, "retired by the tunnel manager");
                    }
                }
            }
        }
    }

    /// Parameters and CRL from the registry now (at most every [`REGISTRY_FETCH_INTERVAL`]).
    fn fetch_from_registry(&mut self, now: Now) {
        if self
            .last_registry_fetch
            .is_some_and(|t| now.time.saturating_since(t) < REGISTRY_FETCH_INTERVAL)
        {
            self.registry_fetch_pending = true;
            return;
        }
        self.registry_fetch_pending = false;
        self.last_registry_fetch = Some(now.time);
        self.actions.push_back(Action::FetchParams);
    }

    /// Engine output in its documented order: transmits, route changes (FIB), events.
    fn drain(&mut self, now: Now) {
        while let Some(t) = self.engine.poll_transmit(now.time) {
            if let Some(&tunnel) = self.by_iface.get(&t.iface) {
                self.actions.push_back(Action::SendBabel {
                    tunnel,
                    bytes: t.bytes,
                });
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
        while let Some(e) = self.engine.poll_event() {
            match e {
                Event::PacketRejected { src, reason, .. } => {
                    debug!(%src, ?reason, "Babel packet rejected")
                }
                other => debug!(?other, "babel"),
            }
        }
    }

    /// The MAC keys of the parameters in force, for the Babel engine and LAN discovery.
    fn set_mac_keys(&mut self) {
        let keys = mac_keys(self.net.params(), &self.keys);
        self.actions
            .push_back(Action::LanAuth(Box::new(LanAuth::new(
                self.net.params(),
                keys.clone(),
            ))));
        self.engine.set_mac_keys(keys);
    }

    /// A neighbour announced itself on a `--lan` interface: kept connected like a `--peer`,
    /// over its link-local address, while it keeps announcing itself. A `--peer` given for
    /// the same prefix keeps its address.
    fn lan_peer(&mut self, now: Now, prefix: Ipv6Net, addr: SocketAddrV6) {
        if prefix == self.prefix
            || (self.static_peers.contains_key(&prefix) && !self.lan_heard.contains_key(&prefix))
        {
            return;
        }
        let fresh = self
            .lan_heard
            .insert(prefix, (addr, now.time))
            .is_none_or(|(old, _)| old != addr);
        self.static_peers.insert(prefix, SocketAddr::V6(addr));
        if fresh {
            info!(peer = %prefix, %addr, "LAN neighbour");
            if prefix < self.prefix {
                // Both sides hear each other: the lower prefix dials first, as for --peer.
                self.static_retry
                    .insert(prefix, now.time + STATIC_DIAL_DEFER);
            } else if !self.down
                && !self.by_prefix.contains_key(&prefix)
                && !self.dialing.contains_key(&prefix)
            {
                // Dial now rather than at the next tick.
                self.dial(now, prefix, vec![SocketAddr::V6(addr)]);
            }
        }
    }

    /// Stops dialling LAN neighbours not heard for ten hello intervals (at least 10 s).
    fn lan_expire(&mut self, now: Now) {
        let max_age = (self.timers.hello * 10).max(Duration::from_secs(10));
        let gone: Vec<Ipv6Net> = self
            .lan_heard
            .iter()
            .filter(|(_, (_, at))| now.time.saturating_since(*at) > max_age)
            .map(|(p, _)| *p)
            .collect();
        for prefix in gone {
            info!(peer = %prefix, "LAN neighbour silent; no longer dialled");
            self.lan_heard.remove(&prefix);
            self.static_peers.remove(&prefix);
            self.static_retry.remove(&prefix);
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
