//! The Babel engine proper: tables, timers, selection, and the sans-IO interface.
//!
//! See the module docs of [`crate::mesh::babel`] for the drain order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::budget::{Budget, BudgetCounters};
use super::codec;
use super::cost::{self, CostMultiplier, HelloHistory, RttCostParams, WIRED_NOMINAL};
use super::mac::{self, MacKeys, MacVerdict, PcVerdict, RxAuth};
use super::msg::{INFINITY, Msg, RouteSignature, RouterId};
use super::origin::{Origin, RouteOrigin};
// Routes are keyed by destination and RFC 9079 source prefix: `Prefix` here is that key
// (it dereferences to the destination prefix).
use super::prefix::RouteKey as Prefix;
use super::seqno::Seqno;
use super::time::{Time, cs, to_cs};
use crate::wire::{self, PcState};

/// The Babel UDP port; also used for both ports of the tunnel pseudo-header.
pub const BABEL_PORT: u16 = 6696;
/// The Babel link-local multicast group.
pub const BABEL_MULTICAST: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 6);

/// Source table entries are forgotten after this long without use (RFC 8966: 3 minutes).
const SOURCE_GC: Duration = Duration::from_secs(180);
/// A time no timer reaches.
const NEVER: Time = Time::from_millis(u64::MAX);
/// Hop count of the seqno requests this node originates.
const SEQNO_REQUEST_HOPS: u8 = 64;
/// Spacing of seqno request resends.
const REQUEST_RESEND: Duration = Duration::from_millis(1000);
/// Resends of one seqno request after the first send.
const REQUEST_RESENDS: u8 = 2;
/// Minimum spacing of the unscheduled Hellos sent to greet a new neighbour.
const GREETING_SPACING: Duration = Duration::from_millis(500);
/// LAN neighbours are dropped after this many Hello slots without any Hello.
const LAN_NEIGHBOUR_SLOTS: u8 = 16;
/// How long a reliably sent packet waits for its Acknowledgment before it is resent
/// (RFC 8966 section 3.3; announced in the Acknowledgment Request's interval field).
pub const ACK_TIMEOUT: Duration = Duration::from_millis(500);
/// Resends of an unacknowledged packet before giving up (the periodic updates and the
/// seqno request timer remain the fallback).
pub const ACK_RETRIES: u8 = 3;
/// Smoothing of RFC 9616 RTT samples, babeld's `rtt-decay`: a new sample weighs 42/256.
const RTT_DECAY: u64 = 42;
/// A measured RTT is forgotten after this long without a new sample (babeld: 3 minutes).
const RTT_VALIDITY: Duration = Duration::from_secs(180);
/// RFC 9616 samples whose local or remote waiting time exceeds this are discarded
/// (stale echoes, or a clock that jumped; babeld uses the same 10-minute window).
const RTT_SAMPLE_WINDOW_US: u32 = 600_000_000;

/// Identifies an interface (a LAN or a tunnel) within one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfaceId(pub u32);

/// A neighbour: the interface it is on and its address there (link-local on a LAN, the
/// peer's prefix::1 on a tunnel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighbourId {
    /// The interface.
    pub iface: IfaceId,
    /// The neighbour's address on it.
    pub addr: IpAddr,
}

/// What kind of link an interface is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfaceKind {
    /// A QUIC tunnel: unicast, exactly one neighbour, RTT-based cost. The RFC 8967
    /// pseudo-header uses `local` and `peer` (the two nodes' prefix::1) with port 6696.
    Tunnel {
        /// This node's address (prefix::1).
        local: Ipv6Addr,
        /// The peer's address (prefix::1).
        peer: Ipv6Addr,
    },
    /// A multicast LAN (ff02::1:6, UDP 6696), interoperable with babeld and BIRD.
    Lan {
        /// This node's link-local address on the LAN.
        link_local: Ipv6Addr,
        /// This node's IPv4 address on the LAN, announced as next hop for IPv4 routes;
        /// without it IPv4 routes are announced v4-via-v6.
        ipv4: Option<Ipv4Addr>,
        /// Lossy link (ETX, appendix A.2.2) instead of wired-like (2-out-of-3, A.2.1).
        lossy: bool,
    },
}

/// Per-interface timers; changeable at run time with [`Engine::set_timers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Hello interval (also the IHU interval: an IHU rides with every Hello).
    pub hello: Duration,
    /// Periodic full update interval.
    pub update: Duration,
}

impl Timers {
    /// Both intervals raised to at least one centisecond, the wire's unit: a zero
    /// interval would make the timer due again the moment it fires (found by the
    /// `babel_engine` fuzz target: `handle_timeout` never got past it).
    pub fn clamped(self) -> Self {
        const MIN: Duration = Duration::from_millis(10);
        Timers {
            hello: self.hello.max(MIN),
            update: self.update.max(MIN),
        }
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            hello: Duration::from_secs(4),
            update: Duration::from_secs(16),
        }
    }
}

/// Configuration of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceConfig {
    /// Name shown in route listings (`iface` field).
    pub name: String,
    /// Link kind.
    pub kind: IfaceKind,
    /// Timers.
    pub timers: Timers,
    /// Largest Babel packet (header, body and trailer) to send.
    pub max_packet: usize,
    /// RFC 9616: put Timestamp sub-TLVs in our Hellos and IHUs and measure the RTT to
    /// each neighbour from the ones it returns. The smoothed RTT adds the same penalty as
    /// a host-supplied RTT ([`Engine::set_rtt`], which takes precedence). Off by default.
    pub timestamps: bool,
    /// RFC 8966 section 3.3: send urgent retractions and seqno requests with an
    /// Acknowledgment Request and resend them until acknowledged (at most
    /// [`ACK_RETRIES`] times). Off by default.
    pub acks: bool,
}

impl IfaceConfig {
    /// A tunnel with default timers and a packet size that fits a 1280-byte-MTU path.
    pub fn tunnel(name: &str, local: Ipv6Addr, peer: Ipv6Addr) -> Self {
        IfaceConfig {
            name: name.to_string(),
            kind: IfaceKind::Tunnel { local, peer },
            timers: Timers::default(),
            max_packet: 1200,
            timestamps: false,
            acks: false,
        }
    }

    /// A wired-like LAN with default timers.
    pub fn lan(name: &str, link_local: Ipv6Addr) -> Self {
        IfaceConfig {
            name: name.to_string(),
            kind: IfaceKind::Lan {
                link_local,
                ipv4: None,
                lossy: false,
            },
            timers: Timers::default(),
            max_packet: 1452,
            timestamps: false,
            acks: false,
        }
    }

    fn local_addr(&self) -> IpAddr {
        match self.kind {
            IfaceKind::Tunnel { local, .. } => IpAddr::V6(local),
            IfaceKind::Lan { link_local, .. } => IpAddr::V6(link_local),
        }
    }

    fn is_tunnel(&self) -> bool {
        matches!(self.kind, IfaceKind::Tunnel { .. })
    }
}

/// Engine-wide configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Tunnel cost parameters.
    pub rtt: RttCostParams,
    /// Triggered updates are held this long so that route changes arriving together leave
    /// in one packet per interface (everything else is sent at once).
    pub batch: Duration,
    /// Budgets (docs/BABEL.md, "Budgets"): routes one neighbour can have in the table.
    /// An Update for a prefix the neighbour has no entry for is dropped at this cap
    /// (counted in [`BudgetCounters::routes_over_budget`]); refreshes and retractions of
    /// its held routes still go through. Default 4,096: a whole mesh's prefixes many
    /// times over (each node announces a handful), yet a flooding member can make every
    /// other node hold at most this many of its routes per tunnel.
    pub max_routes_per_neighbour: usize,
    /// Routes in the table from all neighbours together (new ones dropped beyond it,
    /// [`BudgetCounters::routes_total_over_budget`]), and lost routes whose retraction
    /// is held for repetition ([`BudgetCounters::retractions_over_budget`]). Default
    /// 65,536: 16 full neighbours; some 10 MB of routes at most.
    pub max_routes: usize,
    /// Entries of the source table (the feasibility distances of what we announced,
    /// kept 3 minutes). A selected route whose (prefix, router-id) would need a new
    /// entry beyond it is announced as a retraction instead, which needs none
    /// ([`BudgetCounters::sources_over_budget`]); our own prefixes are always
    /// announced. Default 131,072: twice `max_routes`, as entries outlive the routes
    /// they came from by 3 minutes.
    pub max_sources: usize,
    /// Seqno requests pending in total (forwarded ones; our own are bounded by the
    /// route table). A request that would need a new pending entry beyond it is not
    /// forwarded ([`BudgetCounters::requests_over_budget`]). Default 1,024: requests
    /// are rare (starvation, a much better unfeasible route) and live 3 seconds.
    pub max_requests: usize,
    /// Seqno requests pending on behalf of one neighbour; beyond it that neighbour's
    /// new requests are not forwarded ([`BudgetCounters::requests_over_neighbour_budget`]).
    /// Default 64.
    pub max_requests_per_neighbour: usize,
    /// Seqno requests accepted from one neighbour per second (a token bucket refilled
    /// from the `now` the engine is handed); beyond it, and the burst, they are ignored
    /// ([`BudgetCounters::requests_rate_limited`]). Default 32 per second: a node that
    /// lost many routes at once asks once per prefix, resends each twice a second apart.
    pub request_rate: u32,
    /// The token bucket's size: requests accepted at once from one neighbour. Default
    /// 256.
    pub request_burst: u32,
    /// Our seqno is increased on someone else's word (a seqno request for our prefix,
    /// an update from a previous life with our router-id) at most once per this
    /// interval ([`BudgetCounters::seqno_bumps_limited`]; the update is still sent).
    /// Default 1 s: the requester resends after 1 s, so a legitimate second bump is
    /// only delayed; a neighbour cannot drive our seqno round the 16-bit circle.
    pub seqno_bump_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rtt: RttCostParams::default(),
            batch: Duration::from_millis(20),
            max_routes_per_neighbour: 4096,
            max_routes: 65_536,
            max_sources: 131_072,
            max_requests: 1024,
            max_requests_per_neighbour: 64,
            request_rate: 32,
            request_burst: 256,
            seqno_bump_interval: Duration::from_secs(1),
        }
    }
}

/// A packet to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Interface to send on (for a tunnel: the tunnel's datagram channel).
    pub iface: IfaceId,
    /// Source address and port (the pseudo-header's).
    pub src: SocketAddr,
    /// Destination: ff02::1:6 or a neighbour (on tunnels always the peer).
    pub dst: SocketAddr,
    /// The Babel packet.
    pub bytes: Vec<u8>,
    /// When it should leave (never later than the `now` it was produced at).
    pub at: Time,
}

/// A selected route as the FIB needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibRoute {
    /// Destination prefix.
    pub prefix: Prefix,
    /// Next hop address.
    pub next_hop: IpAddr,
    /// Interface of the next hop.
    pub iface: IfaceId,
    /// Metric.
    pub metric: u16,
}

/// A change of the selected route for a prefix (own prefixes never appear).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// A prefix became reachable.
    Added(FibRoute),
    /// Next hop, interface or metric changed.
    Changed(FibRoute),
    /// The prefix is no longer reachable.
    Removed(Prefix),
}

/// Why a packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not a Babel packet or malformed framing.
    Malformed,
    /// No MAC verified with any key.
    BadMac,
    /// Unsigned while unsigned packets are not accepted.
    Unsigned,
    /// Signed but no PC TLV.
    NoCounter,
    /// Counter not increasing (replay).
    Replay,
    /// Unknown counter index: a challenge was sent.
    Challenged,
    /// Unknown interface or source not allowed on it.
    UnknownSource,
}

/// Things the host may want to log or act upon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A neighbour was added to the neighbour table.
    NeighbourUp(NeighbourId),
    /// A neighbour left the table (timeout, removal).
    NeighbourDown(NeighbourId),
    /// A challenge completed: the neighbour's counter index is now known.
    ChallengeSucceeded(NeighbourId),
    /// A route was received whose origin the [`super::OriginPolicy`] cannot tell yet: it
    /// is held unselectable; call [`Engine::origin_known`] once the policy can tell (e.g.
    /// ask `neighbour` for the certificate of `prefix`).
    OriginUnknown {
        /// The announced prefix.
        prefix: Prefix,
        /// Who announced it.
        neighbour: NeighbourId,
    },
    /// A packet was dropped.
    PacketRejected {
        /// Interface.
        iface: IfaceId,
        /// Source address.
        src: IpAddr,
        /// Why.
        reason: Reject,
    },
}

/// One row of `mesh babel routes` (CONVENTIONS route fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination.
    pub prefix: Prefix,
    /// Next hop (`None` for own prefixes).
    pub next_hop: Option<IpAddr>,
    /// Interface name (empty for own prefixes).
    pub iface: String,
    /// Metric through this route (65535 = unreachable).
    pub metric: u16,
    /// Originator.
    pub router_id: RouterId,
    /// Source seqno.
    pub seqno: Seqno,
    /// Selected for forwarding.
    pub selected: bool,
    /// Own prefix.
    pub local: bool,
    /// Satisfies the feasibility condition now.
    pub feasible: bool,
}

/// A neighbour as listed for status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourInfo {
    /// Identity.
    pub id: NeighbourId,
    /// Interface name.
    pub iface: String,
    /// Link cost after the multiplier.
    pub cost: u16,
    /// Our rxcost for it.
    pub rxcost: u16,
    /// Its rxcost for us (from IHU), infinite if unknown.
    pub txcost: u16,
    /// Hello history bits, most recent in bit 0.
    pub reach: u16,
    /// Host-supplied RTT.
    pub rtt: Option<Duration>,
    /// Smoothed RTT measured with RFC 9616 timestamps, if any.
    pub measured_rtt: Option<Duration>,
    /// Cost multiplier.
    pub multiplier: CostMultiplier,
}

/// Errors of the command interface (local misuse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such interface.
    #[error("no interface {0:?}")]
    NoSuchInterface(IfaceId),
    /// No such neighbour.
    #[error("no neighbour {0:?}")]
    NoSuchNeighbour(NeighbourId),
    /// Neighbours are discovered on LANs, not added.
    #[error("neighbours can only be added on tunnels")]
    NotATunnel,
}

struct Iface {
    cfg: IfaceConfig,
    hello_seqno: Seqno,
    next_hello: Time,
    next_update: Time,
    last_greeting: Option<Time>,
    tx: PcState,
}

/// One Hello stream of a neighbour: its history, the announced interval and when the
/// next Hello is overdue. RFC 8966 section 3.4.1 / appendix A.1: multicast and unicast
/// Hellos have separate seqno spaces, so each gets its own history and timer.
#[derive(Default)]
struct HelloStream {
    history: HelloHistory,
    interval: Duration,
    deadline: Option<Time>,
}

struct Neighbour {
    /// Multicast Hellos (U flag clear). On a tunnel these are the Hellos the peer sends on
    /// the point-to-point link: re6mesh sends them with the U flag clear.
    hello: HelloStream,
    /// Unicast Hellos (U flag set, RFC 8966 section 4.6.5).
    uhello: HelloStream,
    txcost: u16,
    ihu_deadline: Option<Time>,
    /// RTT supplied by the host ([`Engine::set_rtt`]); takes precedence over `measured`.
    rtt: Option<Duration>,
    /// RFC 9616: the neighbour's last Hello timestamp and when we received it (our
    /// clock, µs modulo 2³²), echoed in our next IHU to it.
    hello_ts: Option<(u32, u32)>,
    /// RFC 9616: smoothed measured RTT and the time of its last sample.
    measured: Option<(Duration, Time)>,
    multiplier: CostMultiplier,
}

impl Neighbour {
    fn new() -> Self {
        Neighbour {
            hello: HelloStream::default(),
            uhello: HelloStream::default(),
            txcost: INFINITY,
            ihu_deadline: None,
            rtt: None,
            hello_ts: None,
            measured: None,
            multiplier: CostMultiplier::NORMAL,
        }
    }

    /// The history the link cost is computed from: the multicast one, as RFC 8966
    /// section 3.4.1 / appendix A says, unless no multicast Hello was ever received from
    /// this neighbour and unicast ones were (a neighbour that only sends unicast Hellos).
    fn link_history(&self) -> &HelloHistory {
        if self.hello.history.valid() == 0 && self.uhello.history.valid() > 0 {
            &self.uhello.history
        } else {
            &self.hello.history
        }
    }

    /// The RTT the cost uses: the host's, else the RFC 9616 measurement (forgotten by
    /// `handle_timeout` [`RTT_VALIDITY`] after its last sample).
    fn effective_rtt(&self) -> Option<Duration> {
        self.rtt.or(self.measured.map(|(r, _)| r))
    }
}

/// Something sent reliably (RFC 8966 section 3.3): resent until acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reliable {
    /// The update for a prefix, rebuilt from the current tables at each (re)send.
    Update(Prefix),
    /// A seqno request.
    SeqnoRequest {
        prefix: Prefix,
        seqno: Seqno,
        hop_count: u8,
        router_id: RouterId,
    },
}

/// A reliably sent packet awaiting one neighbour's Acknowledgment.
#[derive(Clone, Debug)]
struct PendingAck {
    items: Vec<Reliable>,
    deadline: Time,
    retries_left: u8,
}

#[derive(Clone, Copy, Debug)]
struct Source {
    seqno: Seqno,
    metric: u16,
    gc: Time,
}

#[derive(Clone, Debug)]
struct PendingRequest {
    seqno: Seqno,
    hop_count: u8,
    requester: Option<NeighbourId>,
    targets: Vec<NeighbourId>,
    resend_at: Time,
    resends_left: u8,
}

/// Outgoing destination within an interface: `None` = the interface's multicast group
/// (on a tunnel: the peer).
type OutKey = (IfaceId, Option<IpAddr>);

/// What waits to be sent to one destination. Updates are kept as prefixes and built at
/// send time, so they carry the freshest state and the source table records exactly what
/// left.
struct Outgoing {
    msgs: Vec<Msg>,
    updates: BTreeSet<Prefix>,
    /// Updates that are urgent (lost routes): sent reliably on interfaces with `acks`.
    urgent: BTreeSet<Prefix>,
    due: Time,
}

/// The Babel routing engine. See the [module docs](crate::mesh::babel).
pub struct Engine {
    cfg: Config,
    router_id: RouterId,
    seqno: Seqno,
    rng: ChaCha8Rng,
    keys: MacKeys,
    next_iface: u32,
    ifaces: BTreeMap<IfaceId, Iface>,
    neighbours: BTreeMap<NeighbourId, Neighbour>,
    auth: BTreeMap<NeighbourId, RxAuth>,
    routes: BTreeMap<Prefix, Routes>,
    selected: BTreeMap<Prefix, (NeighbourId, FibRoute)>,
    local: BTreeSet<Prefix>,
    retracting: BTreeMap<Prefix, Time>,
    sources: BTreeMap<(Prefix, RouterId), Source>,
    requests: BTreeMap<(Prefix, RouterId), PendingRequest>,
    outbox: BTreeMap<OutKey, Outgoing>,
    transmits: VecDeque<Transmit>,
    changes: VecDeque<RouteChange>,
    events: VecDeque<Event>,
    /// Reliably sent packets awaiting an Acknowledgment, by (neighbour, opaque).
    acks: BTreeMap<(NeighbourId, u16), PendingAck>,
    /// Opaque value of the next Acknowledgment Request.
    next_opaque: u16,
    /// The `now` of the input being handled (for timestamps set deep inside helpers).
    now: Time,
    /// Route counts, request buckets and counters behind the [`Config`] caps.
    budget: Budget,
    /// Origin authentication: policy, signer, verified cache (`origin.rs`).
    origin: Origin,
    /// No route's [`Route::deadline`] is earlier (a lower bound, made exact at the end of
    /// each `handle_timeout`): while it is later than every other timer, `poll_timeout`
    /// skips its walk of the route table, which was the simulator's hottest loop.
    route_deadline: Time,
}

impl Engine {
    /// A new engine. `rng_seed` drives every random choice (jitter, nonces, PC indexes,
    /// the initial seqno): the same seed and inputs give the same outputs.
    pub fn new(cfg: Config, router_id: [u8; 8], rng_seed: [u8; 32], now: Time) -> Self {
        let mut rng = ChaCha8Rng::from_seed(rng_seed);
        let seqno = Seqno(rng.next_u32() as u16);
        // Not drawn from the RNG: keeps every other random choice (and so the simulator's
        // figures) as they were before Acks existed. Opaques only need to be distinct.
        let next_opaque = seqno.0.rotate_left(8);
        Engine {
            cfg,
            router_id: RouterId(router_id),
            seqno,
            rng,
            keys: MacKeys::none(),
            next_iface: 0,
            ifaces: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            auth: BTreeMap::new(),
            routes: BTreeMap::new(),
            selected: BTreeMap::new(),
            local: BTreeSet::new(),
            retracting: BTreeMap::new(),
            sources: BTreeMap::new(),
            requests: BTreeMap::new(),
            outbox: BTreeMap::new(),
            transmits: VecDeque::new(),
            changes: VecDeque::new(),
            events: VecDeque::new(),
            acks: BTreeMap::new(),
            next_opaque,
            now,
            budget: Budget::default(),
            origin: Origin::default(),
            route_deadline: NEVER,
        }
    }

    /// This node's router-id.
    pub fn router_id(&self) -> RouterId {
        self.router_id
    }

    /// This node's current seqno.
    pub fn seqno(&self) -> Seqno {
        self.seqno
    }

    /// Sets this node's seqno, e.g. to one persisted before a restart (so neighbours'
    /// source tables do not make the new announcements unfeasible for minutes).
    pub fn set_seqno(&mut self, now: Time, seqno: Seqno) {
        self.now = self.now.max(now);
        self.seqno = seqno;
        for p in self.local.clone() {
            self.triggered_update(p);
        }
        self.flush(now);
    }

    // ---------------------------------------------------------------- commands

    /// Adds an interface. A tunnel gets its single neighbour at once (the QUIC connection
    /// is up, so the link is known to work both ways). Sends a Hello and a wildcard Route
    /// Request immediately.
    pub fn add_interface(&mut self, now: Time, mut cfg: IfaceConfig) -> IfaceId {
        self.now = self.now.max(now);
        cfg.timers = cfg.timers.clamped();
        let id = IfaceId(self.next_iface);
        self.next_iface += 1;
        let mut index = vec![0u8; mac::INDEX_LEN];
        self.rng.fill_bytes(&mut index);
        let hello_seqno = Seqno(self.rng.next_u32() as u16);
        let update_jitter = self.jitter(cfg.timers.update / 4);
        let peer = match cfg.kind {
            IfaceKind::Tunnel { peer, .. } => Some(IpAddr::V6(peer)),
            IfaceKind::Lan { .. } => None,
        };
        self.ifaces.insert(
            id,
            Iface {
                hello_seqno,
                next_hello: now,
                next_update: now + cfg.timers.update.saturating_sub(update_jitter),
                last_greeting: None,
                tx: PcState { index, counter: 0 },
                cfg,
            },
        );
        if let Some(addr) = peer {
            self.insert_neighbour(NeighbourId { iface: id, addr });
        }
        self.send_hello(now, id);
        self.queue(id, None, Msg::RouteRequest { prefix: None });
        self.full_update(id, None);
        self.flush(now);
        id
    }

    /// Removes an interface, its neighbours and their routes.
    pub fn remove_interface(&mut self, now: Time, iface: IfaceId) -> Result<(), CommandError> {
        self.now = self.now.max(now);
        if !self.ifaces.contains_key(&iface) {
            return Err(CommandError::NoSuchInterface(iface));
        }
        let gone: Vec<NeighbourId> = self
            .neighbours
            .keys()
            .filter(|n| n.iface == iface)
            .copied()
            .collect();
        for n in gone {
            self.drop_neighbour(now, n);
        }
        self.auth.retain(|n, _| n.iface != iface);
        self.outbox.retain(|k, _| k.0 != iface);
        self.ifaces.remove(&iface);
        self.flush(now);
        Ok(())
    }

    /// (Re-)adds the neighbour of a tunnel interface.
    pub fn add_neighbour(
        &mut self,
        now: Time,
        iface: IfaceId,
        addr: IpAddr,
    ) -> Result<NeighbourId, CommandError> {
        self.now = self.now.max(now);
        let i = self
            .ifaces
            .get(&iface)
            .ok_or(CommandError::NoSuchInterface(iface))?;
        if !i.cfg.is_tunnel() {
            return Err(CommandError::NotATunnel);
        }
        let id = NeighbourId { iface, addr };
        if !self.neighbours.contains_key(&id) {
            self.insert_neighbour(id);
            self.send_hello(now, iface);
            self.queue(iface, None, Msg::RouteRequest { prefix: None });
            self.full_update(iface, None);
            self.flush(now);
        }
        Ok(id)
    }

    /// Removes a neighbour at once (its tunnel died): its routes leave the table, routes
    /// are reselected and retracted or re-announced as needed.
    pub fn remove_neighbour(&mut self, now: Time, id: NeighbourId) -> Result<(), CommandError> {
        self.now = self.now.max(now);
        if !self.neighbours.contains_key(&id) {
            return Err(CommandError::NoSuchNeighbour(id));
        }
        self.drop_neighbour(now, id);
        self.auth.remove(&id);
        self.flush(now);
        Ok(())
    }

    /// Sets a neighbour's cost multiplier (re6st tunnel lock).
    pub fn set_cost_multiplier(
        &mut self,
        now: Time,
        id: NeighbourId,
        m: CostMultiplier,
    ) -> Result<(), CommandError> {
        self.now = self.now.max(now);
        let n = self
            .neighbours
            .get_mut(&id)
            .ok_or(CommandError::NoSuchNeighbour(id))?;
        n.multiplier = m;
        self.reselect_all(now);
        self.flush(now);
        Ok(())
    }

    /// Supplies the RTT the host measured on a tunnel (or a LAN neighbour).
    pub fn set_rtt(
        &mut self,
        now: Time,
        id: NeighbourId,
        rtt: Duration,
    ) -> Result<(), CommandError> {
        self.now = self.now.max(now);
        let n = self
            .neighbours
            .get_mut(&id)
            .ok_or(CommandError::NoSuchNeighbour(id))?;
        n.rtt = Some(rtt);
        self.reselect_all(now);
        self.flush(now);
        Ok(())
    }

    /// Replaces the MAC keys, live. Neighbours' counter state is kept (the index does not
    /// depend on the key), so a compatible rotation step never drops an adjacency.
    pub fn set_mac_keys(&mut self, keys: MacKeys) {
        self.keys = keys;
    }

    /// Changes an interface's timers without restarting it.
    pub fn set_timers(
        &mut self,
        now: Time,
        iface: IfaceId,
        timers: Timers,
    ) -> Result<(), CommandError> {
        self.now = self.now.max(now);
        let i = self
            .ifaces
            .get_mut(&iface)
            .ok_or(CommandError::NoSuchInterface(iface))?;
        let timers = timers.clamped();
        i.cfg.timers = timers;
        i.next_hello = i.next_hello.min(now + timers.hello);
        i.next_update = i.next_update.min(now + timers.update);
        Ok(())
    }

    /// Starts announcing an own prefix.
    pub fn originate(&mut self, now: Time, prefix: impl Into<Prefix>) {
        let prefix = prefix.into();
        self.now = self.now.max(now);
        if self.local.insert(prefix) {
            self.retracting.remove(&prefix);
            if let Some((_, _)) = self.selected.remove(&prefix) {
                self.changes.push_back(RouteChange::Removed(prefix));
            }
            self.triggered_update(prefix);
            self.flush(now);
        }
    }

    /// Stops announcing an own prefix and retracts it.
    pub fn withdraw(&mut self, now: Time, prefix: impl Into<Prefix>) {
        let prefix = prefix.into();
        self.now = self.now.max(now);
        if self.local.remove(&prefix) {
            self.origin.withdraw(prefix);
            let hold = self.max_update_interval() * 3;
            self.retracting.insert(prefix, now + hold);
            self.reselect(now, prefix);
            if !self.selected.contains_key(&prefix) {
                self.urgent_update(prefix);
            }
            self.flush(now);
        }
    }

    /// Leaves the network cleanly: a wildcard retraction and a last Hello announcing a
    /// 10 ms interval on every interface, so neighbours drop us within a poll instead of
    /// timing us out (what babeld does on SIGTERM). Send the transmits, then drop the
    /// engine.
    pub fn shutdown(&mut self, now: Time) {
        self.now = self.now.max(now);
        let ids: Vec<IfaceId> = self.ifaces.keys().copied().collect();
        for id in ids {
            let Some(i) = self.ifaces.get_mut(&id) else {
                continue;
            };
            i.hello_seqno = i.hello_seqno.next();
            let hello = Msg::Hello {
                unicast: false,
                seqno: i.hello_seqno,
                interval_cs: 1,
                timestamp: None,
            };
            let interval_cs = to_cs(i.cfg.timers.update);
            self.queue(id, None, hello);
            self.queue(id, None, Msg::WildcardRetraction { interval_cs });
        }
        self.outbox.values_mut().for_each(|o| o.updates.clear());
        self.flush(now);
    }

    // ---------------------------------------------------------------- outputs

    /// Next packet to send.
    pub fn poll_transmit(&mut self, _now: Time) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next change of the selected routes, for the FIB.
    pub fn poll_route_change(&mut self) -> Option<RouteChange> {
        self.changes.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// `t` as an RFC 9616 timestamp: microseconds modulo 2³².
fn micros(t: Time) -> u32 {
    (t.as_millis().wrapping_mul(1000)) as u32
}

/// One RFC 9616 section 3.3 RTT sample: our Hello left at `origin` (our clock), reached
/// the neighbour at `receive`; its Hello in the packet carrying the echo left at
/// `transmit` (its clock) and the packet reached us at `now` (our clock). RTT =
/// (now − origin) − (transmit − receive), all modulo 2³²; samples with a waiting time
/// outside the validity window are discarded, a negative result (clock skew) counts as 0.
fn rtt_sample(origin: u32, receive: u32, transmit: u32, now: u32) -> Option<Duration> {
    let local = now.wrapping_sub(origin);
    let remote = transmit.wrapping_sub(receive);
    if local >= RTT_SAMPLE_WINDOW_US || remote >= RTT_SAMPLE_WINDOW_US {
        return None;
    }
    Some(Duration::from_micros(u64::from(
        local.saturating_sub(remote),
    )))
}

/// Next periodic deadline after `prev`, skipping missed periods.
fn advance(prev: Time, period: Duration, now: Time) -> Time {
    let next = prev + period;
    if next > now || period.is_zero() {
        next
    } else {
        now + period
    }
}

fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    }
}

#[path = "engine_links.rs"]
mod links;
#[path = "engine_origin.rs"]
mod origin_impl;
#[path = "engine_queries.rs"]
mod queries;
#[path = "engine_receive.rs"]
mod receive;
#[path = "engine_routes.rs"]
mod routes;
#[path = "engine_send.rs"]
mod send;
#[path = "engine_table.rs"]
mod table;
#[path = "engine_timers.rs"]
mod timers;
use table::{Route, Routes};

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
