//! What goes in and out of the core: inputs, actions, the time, the configuration.

use super::*;

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
    pub(super) fn unix_u64(self) -> u64 {
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
    /// When the neighbour's certificate expires (Unix seconds): the tunnel closes then.
    pub peer_not_after: i64,
    /// We dialled it.
    pub initiated: bool,
    /// The neighbour's hello.
    pub hello: HelloInfo,
    /// The neighbour's UDP address.
    pub remote: SocketAddr,
    /// The neighbour's certificate (DER) as TLS checked it; empty when unknown. Origin
    /// authentication knows the neighbour's routes' owner from it first-hand.
    pub peer_cert: Vec<u8>,
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
    /// The host's interface addresses now (at start, then whenever the shell looks again).
    LocalAddresses(Vec<IpAddr>),
    /// The host's network changed (the OS said so: an address, a link or the default route
    /// came or went; or a poll found other addresses): every tunnel proves its path now
    /// (roaming, `roam.rs`).
    NetworkChanged {
        /// The host's interface addresses now.
        addrs: Vec<IpAddr>,
        /// Tunnels this node accepted on a local address the host no longer has: QUIC cannot
        /// move them (only the dialling side migrates).
        stranded: Vec<TunnelId>,
    },
    /// QUIC moved a tunnel to another remote address (the neighbour roamed, or its NAT
    /// mapped it anew).
    PathMoved {
        /// Which tunnel.
        tunnel: TunnelId,
        /// The neighbour's address now.
        remote: SocketAddr,
    },
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
    /// A punch signal arrived on the signal port of this node's mesh address from `src`
    /// (through the data path: sealed by its sender, or from the neighbour owning `src`).
    Signal {
        /// The sender's address.
        src: Ipv6Addr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// The home router forwards this public address and port to the tunnel port (port
    /// mapping, `mesh::portmap`), or no longer does (`None`).
    PortMapped(Option<SocketAddr>),
    /// Every handshake of an [`Action::Punch`] ended without a tunnel.
    PunchFailed {
        /// The peer punched.
        peer: Ipv6Net,
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
    KeyBytes(MacKeyBytes),
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
    /// Test support: this node (a hostile member) sends `msgs` as a Babel packet on its
    /// tunnel to `to`, MAC-signed as usual.
    #[cfg(any(test, feature = "sim"))]
    ForgeBabel {
        /// The neighbour's prefix.
        to: Ipv6Net,
        /// The messages (e.g. forged Updates).
        msgs: Vec<crate::mesh::babel::msg::Msg>,
    },
    /// Test support: this node (a hostile member) sends `msg` on its tunnel to `to`.
    #[cfg(any(test, feature = "sim"))]
    ForgeControl {
        /// The neighbour's prefix.
        to: Ipv6Net,
        /// The message.
        msg: ControlMsg,
    },
}

/// What the shell must do, from [`NodeCore::poll_action`], in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the tunnel's control stream only: no Babel, no data, in either direction, until
    /// [`Action::Activate`] (a tunnel that came up while the CRL the parameters name is
    /// missing; its peer may be revoked there).
    Hold {
        /// Which tunnel.
        tunnel: TunnelId,
    },
    /// Start carrying the tunnel's traffic: it is the engine's interface `iface` (the FIB names
    /// next hops by interface). Also ends a [`Action::Hold`].
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
    /// Send a punch signal through the mesh: a UDP datagram from this node's address to
    /// `[to]:`[`SIGNAL_PORT`](crate::mesh::punch::SIGNAL_PORT), from the same port.
    SendSignal {
        /// The far node's address.
        to: Ipv6Addr,
        /// The signal.
        bytes: Vec<u8>,
    },
    /// Send QUIC handshakes to `peer` at every address of `addrs` at once, from the tunnel
    /// socket, with no path diagnosis; the first to finish is the tunnel (it comes up as a
    /// dialled one); none: [`Input::PunchFailed`].
    Punch {
        /// Its prefix.
        peer: Ipv6Net,
        /// Its candidates, best first.
        addrs: Vec<SocketAddr>,
    },
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
    /// Report these endpoint candidates to the registry (they changed; see
    /// [`crate::mesh::reach`]).
    ReportEndpoints(Vec<SocketAddr>),
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
    /// The subnet routes changed (issue 15).
    SubnetRoutes(SubnetRoutes),
    /// Stop the node: the shell calls [`NodeCore::begin_shutdown`], lingers
    /// [`NodeCore::linger`], then [`NodeCore::finish_shutdown`]. `error`: why it must stop.
    Stop {
        /// The one sentence to exit with, for a stop the user did not ask for.
        error: Option<String>,
    },
}

/// Subnet routes through the mesh (issue 15), as the shell and the data path need them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetRoutes {
    /// Each selected route outside the network prefix that the parameters grant to the
    /// node that announces it, as `(prefix, that node's prefix)`: the shell routes these
    /// prefixes into the TUN device and the data path seals their packets for that node.
    pub via: Vec<(Ipv6Net, Ipv6Net)>,
    /// Every subnet grant of the parameters, `(prefix, node prefix)`: packets from
    /// addresses in `prefix` are that node's (source checks of plain and sealed packets).
    /// An exit grant gives its node every address outside the network prefix (as the
    /// prefixes that cover exactly that: [`crate::mesh::seal::path::outside`]).
    pub granted: Vec<(Ipv6Net, Ipv6Net)>,
    /// The exit in use: the node prefix of the origin of the selected `::/0 from` the
    /// network route, when the parameters grant that node `exit`. The data path seals
    /// packets from the network to outside addresses for it.
    pub exit: Option<Ipv6Net>,
    /// Selected IPv4 routes and the node that originates each (a node's /32, whose
    /// certificate names that address): IPv4 packets for them travel to that node.
    pub v4: Vec<(ipnet::Ipv4Net, Ipv6Net)>,
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
    /// Babel packets for a tunnel the core does not know, or holds (CRL missing).
    pub babel_unknown_tunnel: u64,
    /// Tunnels closed because the neighbour's certificate expired.
    pub peer_certificate_expired: u64,
    /// Tunnels that came up while the CRL was missing and were held.
    pub tunnels_held: u64,
    /// Peer addresses refused (loopback from afar, link-local, multicast, unspecified…).
    pub peer_addresses_refused: u64,
    /// Peers a neighbour told us of beyond its share of the peer cache.
    pub hearsay_over_budget: u64,
    /// Dials that left out an address dialled for another peer moments before.
    pub dials_rate_limited: u64,
    /// LAN announcements of new neighbours beyond [`super::MAX_LAN_NEIGHBOURS`].
    pub lan_over_budget: u64,
    /// Dials to known nodes Babel had no route to (a split mesh healing itself).
    pub explore_dials: u64,
    /// Certificates a neighbour sent that were refused (not asked for, another prefix, not
    /// the CA's, expired, revoked).
    pub certs_refused: u64,
    /// Certificate requests from a neighbour beyond [`super::CERT_ANSWER_RATE`] (ignored).
    pub cert_requests_ignored: u64,
    /// Certificate requests not sent because [`super::CERT_REQUESTS_PER_NEIGHBOUR`] were
    /// in flight to that neighbour (asked again at a later tick).
    pub cert_requests_deferred: u64,
    /// Punch requests sent through the mesh.
    pub punch_requests_sent: u64,
    /// Punch requests answered.
    pub punch_requests_answered: u64,
    /// Punches (handshakes sent at the agreed moment).
    pub punches: u64,
    /// Tunnels made by a punch.
    pub tunnels_punched: u64,
    /// Punches that failed (no answer, or no handshake got through).
    pub punch_failures: u64,
    /// Punch requests over the per-source or overall budget (dropped).
    pub punch_requests_refused: u64,
    /// Punch signals that were malformed or carried no usable candidate.
    pub punch_signals_malformed: u64,
    /// Punch answers to no request of ours.
    pub punch_answers_unexpected: u64,
    /// Changes of the host's network (roaming).
    pub network_changes: u64,
    /// Tunnels closed and dialled again because their local address was gone.
    pub tunnels_stranded: u64,
    /// Tunnels QUIC moved to a neighbour's new address.
    pub paths_moved: u64,
}

impl Counters {
    /// Every counter by name, for `mesh status --json`.
    pub fn named(&self) -> [(&'static str, u64); 25] {
        [
            ("params_requests_ignored", self.params_requests_ignored),
            ("control_stalled", self.control_stalled),
            ("offers_refused", self.offers_refused),
            ("babel_unknown_tunnel", self.babel_unknown_tunnel),
            ("peer_certificate_expired", self.peer_certificate_expired),
            ("tunnels_held", self.tunnels_held),
            ("peer_addresses_refused", self.peer_addresses_refused),
            ("hearsay_over_budget", self.hearsay_over_budget),
            ("dials_rate_limited", self.dials_rate_limited),
            ("lan_over_budget", self.lan_over_budget),
            ("explore_dials", self.explore_dials),
            ("certs_refused", self.certs_refused),
            ("cert_requests_ignored", self.cert_requests_ignored),
            ("cert_requests_deferred", self.cert_requests_deferred),
            ("punch_requests_sent", self.punch_requests_sent),
            ("punch_requests_answered", self.punch_requests_answered),
            ("punches", self.punches),
            ("tunnels_punched", self.tunnels_punched),
            ("punch_failures", self.punch_failures),
            ("punch_requests_refused", self.punch_requests_refused),
            ("punch_signals_malformed", self.punch_signals_malformed),
            ("punch_answers_unexpected", self.punch_answers_unexpected),
            ("network_changes", self.network_changes),
            ("tunnels_stranded", self.tunnels_stranded),
            ("paths_moved", self.paths_moved),
        ]
    }
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
    /// The parameters name a CRL this node lacks: new tunnels are held (control only).
    pub crl_missing: bool,
    /// Tunnels held for want of the CRL.
    pub held: usize,
    /// What the core counted.
    pub counters: Counters,
    /// What the Babel engine dropped at its budgets (routes, sources, requests, seqno bumps).
    pub babel_budget: crate::mesh::babel::BudgetCounters,
    /// Origin authentication of routes: refused and unknown routes, signatures checked.
    pub babel_origin: crate::mesh::babel::OriginCounters,
    /// Selected routes to other nodes, direct and relayed.
    pub paths: control::Paths,
    /// This node's certificate serial, as in force.
    pub serial: String,
    /// Its end of validity (Unix seconds).
    pub not_after: i64,
    /// This node's name, from its certificate.
    pub name: Option<String>,
    /// The exit (issue 15): `this node` on an exit, else the exit in use (node prefix and
    /// name), `None` when there is none.
    pub exit: Option<String>,
}

/// What [`NodeCore::new`] starts from (the shell loads it from the state directory).
#[derive(Debug)]
pub struct CoreConfig {
    /// This node's prefix.
    pub prefix: Ipv6Net,
    /// Parameters and CRL in force.
    pub net: NetState,
    /// MAC key bytes known, by registry key id.
    pub keys: MacKeyBytes,
    /// This node's certificate serial.
    pub serial: String,
    /// Its name in the certificate.
    pub name: Option<String>,
    /// Its validity (Unix seconds).
    pub not_before: i64,
    /// See `not_before`.
    pub not_after: i64,
    /// Peers given with `--peer`: always kept connected.
    pub static_peers: Vec<(Ipv6Net, SocketAddr)>,
    /// Endpoints announced to neighbours.
    pub endpoints: Vec<SocketAddr>,
    /// The tunnel socket's UDP port (for the candidates made of interface addresses).
    pub listen_port: u16,
    /// The country this node states.
    pub country: Option<String>,
    /// Babel timers fixed by configuration (`None`: from the parameters).
    pub babel_timers: Option<Timers>,
    /// The peer cache as loaded.
    pub cache: PeerCache,
    /// Origin authentication of routes (our certificate and key): `None` leaves it off
    /// (routes unsigned, every route accepted).
    pub origin: Option<OriginSetup>,
    /// Prefixes outside the network this node announces (`mesh up --advertise-route`): a
    /// LAN behind it. Other nodes take them only when the parameters grant them to us.
    pub advertise_routes: Vec<Ipv6Net>,
    /// IPv4 prefixes this node announces (`--advertise-route`, issue 15): taken only when the
    /// parameters grant them to us (`routes_v4`).
    pub advertise_routes_v4: Vec<ipnet::Ipv4Net>,
    /// `mesh up --exit`: announce the exit route `::/0 from` the network prefix (RFC
    /// 9079). Other nodes take it only when the parameters grant us `exit`.
    pub exit: bool,
    /// This node's IPv4 address (in its certificate), on a network with an IPv4 range: its
    /// /32 is announced.
    pub ipv4: Option<std::net::Ipv4Addr>,
}

/// Key material: `Debug` shows its length only, so logging an [`Input`] or a [`CoreConfig`]
/// never writes a key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }

    /// The bytes themselves.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

/// MAC key bytes by key id, as the registry serves them.
pub type MacKeyBytes = Vec<(String, SecretBytes)>;
