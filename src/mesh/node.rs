//! The node: the event loop wiring TUN ⇄ forwarder ⇄ tunnels ⇄ Babel engine ⇄ registry
//! (DESIGN §2, §5, §6). Thin IO shell around the sans-IO parts.
//!
//! Tasks:
//! * **core** — owns the [`Engine`], the [`Fib`] writer, the tunnel manager
//!   ([`TunnelManager`]), the peer cache ([`PeerCache`]) and the parameters/CRL in force
//!   ([`NetState`]); receives Babel packets, tunnel up/down, control-stream messages,
//!   parameter offers, MAC keys and control requests on one channel; after every input drains
//!   the engine in its documented order (transmits, route changes → FIB publish, events,
//!   timeout); every 500 ms: RTTs into Babel, renewal, `--peer` dials, a tunnel-manager round;
//! * **TUN reader** and one **reader per tunnel** — the data path: datagram or packet in,
//!   [`Forwarder::decide`] against the lock-free FIB snapshot, datagram or packet out.
//!   Transit traffic never touches the kernel;
//! * **acceptor**, **dialers**, and one **control-stream reader/writer** per tunnel;
//! * **registry poll** — parameters, CRL and MAC keys every 5 minutes (configurable, can be
//!   off); neighbours bring newer parameters sooner.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use ipnet::Ipv6Net;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::babel::cost::CostMultiplier;
use super::babel::mac::{MacKey, MacKeys};
use super::babel::time::Time;
use super::babel::{Config, Engine, Event, IfaceConfig, IfaceId, NeighbourId, RouteChange, Timers};
use super::fib::{Fib, FibReader};
use super::forward::{Decision, Forwarder, Lookup, RateLimit};
use super::netstate::NetState;
use super::peers::{DEFAULT_CAPACITY, PeerCache};
use super::tunnels::control::{ControlMsg, PeerAddr};
use super::tunnels::frame::{self, Datagram};
use super::tunnels::policy::{Action, Candidate, Observation, PolicyConfig, TunnelManager};
use super::tunnels::{
    HelloInfo, Trust, Tunnel, TunnelEndpoint, TunnelError, TunnelTimers, valid_country,
};
use crate::control::{self, ControlHandler, NodeStateName};
use crate::identity;
use crate::params::SignedParams;
use crate::registry_client::{Certified, NodeKey, RegistryClient};
use crate::wire::Prefix;

/// Everything `mesh up` can set.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// State directory (identity, parameters, control socket).
    pub state_dir: PathBuf,
    /// UDP address of the tunnel endpoint.
    pub listen: SocketAddr,
    /// TUN device name.
    pub tun_name: String,
    /// TUN MTU.
    pub tun_mtu: u16,
    /// Static peers (prefix and endpoint).
    pub peers: Vec<(Ipv6Net, SocketAddr)>,
    /// Endpoints announced to the registry and to neighbours.
    pub endpoints: Vec<SocketAddr>,
    /// Tunnel keep-alive / idle timeout.
    pub tunnel_timers: TunnelTimers,
    /// Babel timers on tunnels (`None`: the hello interval of the parameters, update ×4).
    pub babel_timers: Option<Timers>,
    /// Registry poll period (`None`: never poll after start).
    pub registry_poll: Option<Duration>,
    /// Hold a parameter watch (long poll) on the registry, so changes arrive at once; the
    /// registry admits a limited number of watchers, the others rely on the poll and on
    /// their neighbours.
    pub registry_watch: bool,
    /// LAN interfaces where neighbours are discovered (`--lan`, Linux only).
    pub lan: Vec<String>,
    /// The country this node is in (ISO 3166 alpha-2), stated to peers for the country
    /// rules of the parameters.
    pub country: Option<String>,
}

/// A snapshot for the control API, refreshed by the core.
#[derive(Debug, Clone)]
struct Snapshot {
    state: NodeStateName,
    peers: Vec<control::Peer>,
    routes: Vec<control::Route>,
    tunnels: usize,
    selected: usize,
    params_version: u64,
    error: Option<String>,
}

enum Input {
    Babel {
        iface: IfaceId,
        bytes: Vec<u8>,
    },
    TunnelUp(Box<Tunnel>),
    TunnelDown {
        iface: IfaceId,
        /// The peer closed it because our certificate is revoked.
        revoked_me: bool,
    },
    /// MAC key bytes by id, fresh from the registry.
    KeyBytes(Vec<(String, Vec<u8>)>),
    /// Parameters and/or a CRL from the registry (`from: None`) or from the neighbour on
    /// a tunnel — not verified yet.
    Offer {
        signed: Option<SignedParams>,
        crl: Option<Vec<u8>>,
        from: Option<IfaceId>,
    },
    /// A control-stream message from the neighbour on `iface`.
    Control {
        iface: IfaceId,
        msg: ControlMsg,
    },
    /// The outcome of a certificate renewal.
    Renewed(Result<Box<Certified>, String>),
    /// A dial failed on every address of the peer.
    DialFailed(Ipv6Net),
    /// A peer refused our certificate as revoked.
    RevokedHint,
    Peers(Vec<PeerAddr>),
    /// A node announced itself on a `--lan` interface (MAC verified, prefix in the network).
    LanPeer {
        prefix: Ipv6Net,
        addr: std::net::SocketAddrV6,
    },
    Down,
    Up,
    Exit,
}

/// The tunnels the data path can send on.
type TunnelTable = ArcSwap<HashMap<IfaceId, quinn::Connection>>;

struct Shared {
    snapshot: Mutex<Snapshot>,
    tx: mpsc::UnboundedSender<Input>,
    started: Instant,
    prefix: Ipv6Net,
    network: Ipv6Net,
}

struct Handler(Arc<Shared>);

impl ControlHandler for Handler {
    fn status(&self) -> control::Status {
        let s = self
            .0
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        control::Status {
            state: s.state,
            prefix: self.0.prefix.to_string(),
            address: identity::node_address(&self.0.prefix).to_string(),
            network: self.0.network.to_string(),
            params_version: s.params_version,
            protocol: crate::params::PROTOCOL_VERSION,
            tunnels: s.tunnels,
            routes: s.selected,
            uptime_secs: self.0.started.elapsed().as_secs(),
            error: s.error,
        }
    }
    fn peers(&self) -> Vec<control::Peer> {
        self.0
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .peers
            .clone()
    }
    fn routes(&self) -> Vec<control::Route> {
        self.0
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .routes
            .clone()
    }
    fn up(&self) -> Result<String, String> {
        self.0
            .tx
            .send(Input::Up)
            .map_err(|_| "the node is stopping".to_string())?;
        Ok("connecting".into())
    }
    fn down(&self) -> Result<String, String> {
        let st = self
            .0
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state;
        if st == NodeStateName::Down {
            return Err("the node is already down".into());
        }
        self.0
            .tx
            .send(Input::Down)
            .map_err(|_| "the node is stopping".to_string())?;
        Ok("disconnected: tunnels closed; `mesh up` reconnects".into())
    }
    fn exit(&self) -> Result<String, String> {
        self.0
            .tx
            .send(Input::Exit)
            .map_err(|_| "the node is stopping".to_string())?;
        Ok("the node is exiting".into())
    }
}

fn mac_keys(params: &crate::params::NetworkParams, keys: &[(String, Vec<u8>)]) -> MacKeys {
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

const MAC_CACHE: &str = "mac-keys.json";

/// MAC key bytes from the registry (written to the cache), or from the cache when the
/// registry cannot answer.
async fn fetch_key_bytes(client: &RegistryClient, dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    match client.mac_keys().await {
        Ok(resp) => {
            let keys: Vec<(String, Vec<u8>)> = resp
                .keys
                .into_iter()
                .filter_map(|k| Some((k.id, hex::decode(k.key).ok()?)))
                .collect();
            let cache: Vec<(String, String)> = keys
                .iter()
                .map(|(i, k)| (i.clone(), hex::encode(k)))
                .collect();
            let _ = crate::fsutil::write_atomic(
                &dir.join(MAC_CACHE),
                &serde_json::to_vec(&cache).unwrap_or_default(),
                0o600,
            );
            keys
        }
        Err(e) => {
            warn!(error = %e, "cannot fetch the MAC keys; using the cached ones");
            std::fs::read(dir.join(MAC_CACHE))
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<(String, String)>>(&b).ok())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(i, k)| Some((i, hex::decode(k).ok()?)))
                .collect()
        }
    }
}

/// Parameter watch: first and longest wait after a failed watch.
const WATCH_RETRY_MIN: Duration = Duration::from_secs(1);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(60);
/// Parameter watch: wait after the registry said it holds as many watches as it allows.
const WATCH_BUSY_RETRY: Duration = Duration::from_secs(600);

/// The registry's current parameters and CRL (the core verifies both before use).
async fn fetch_params_and_crl(client: &RegistryClient) -> (Option<SignedParams>, Option<Vec<u8>>) {
    let signed = match client.params().await {
        Ok((_, signed)) => Some(signed),
        Err(e) => {
            warn!(error = %e, "cannot fetch the network parameters from the registry");
            None
        }
    };
    let crl = match client.crl().await {
        Ok(d) => Some(d),
        Err(e) => {
            warn!(error = %e, "cannot fetch the CRL from the registry");
            None
        }
    };
    (signed, crl)
}

/// The Babel router-id of the node owning `prefix`: the first 8 bytes of SHA-256 of its CIDR
/// text, never all zeros or all ones (RFC 8966 forbids those).
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

/// How long the higher prefix of two `--peer`s defers its dial (see the duplicate rule).
const STATIC_DIAL_DEFER: Duration = Duration::from_millis(1500);

/// QUIC application close code: "your certificate is revoked".
const CLOSE_REVOKED: u32 = 6;
/// QUIC application close code: the tunnel manager retired the tunnel.
const CLOSE_RETIRED: u32 = 7;
/// How long the side that agrees to retire a tunnel keeps it hard-locked before answering,
/// so Babel routes around it on this side too before the peer closes it.
const KILL_ANSWER_DELAY: Duration = Duration::from_secs(1);

fn unix_now() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

/// Runs the node until SIGINT/SIGTERM or `mesh down --exit`.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let st = crate::state::load(&cfg.state_dir)?;
    let now_unix = time::OffsetDateTime::now_utc().unix_timestamp();
    let info = identity::cert_info(&st.cert_der)?;
    if info.not_after <= now_unix {
        anyhow::bail!(
            "this node's certificate has expired; join again with a new token (`mesh join --force <TOKEN>`)"
        );
    }
    let prefix = st.facts.prefix;
    let me = identity::node_address(&prefix);
    let client = Arc::new(ArcSwap::from_pointee(RegistryClient::with_identity(
        &st.facts.registry_url,
        &st.ca_der,
        &st.cert_der,
        &st.key,
    )?));
    // Parameters and CRL: the stored ones, then whatever newer the registry has.
    let mut net = NetState::new(st.ca_der.clone(), st.signed.clone())?;
    if let Some(der) = &st.crl_der
        && let Err(e) = net.offer(None, Some(der))
    {
        warn!(error = %e, "the cached CRL is unusable; waiting for a fresh one");
    }
    let (signed, crl) = fetch_params_and_crl(&client.load()).await;
    match net.offer(signed.as_ref(), crl.as_deref()) {
        Ok(a) if a.any() => {
            if let Err(e) = crate::state::save_params(&cfg.state_dir, net.signed(), net.crl_der()) {
                warn!(error = %e, "cannot store the new parameters");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "the registry's parameters or CRL were refused"),
    }
    let params = net.params().clone();
    if let Some(msg) = protocol_too_old(&params) {
        anyhow::bail!(msg);
    }
    let keys = fetch_key_bytes(&client.load(), &cfg.state_dir).await;
    let mac = mac_keys(&params, &keys);
    if params.mac.sign.is_some() && mac.sign.is_none() {
        warn!(
            "the network signs Babel packets but this node has no key yet; routing waits for the registry"
        );
    }

    let trust = Trust::new(&st.ca_der)?;
    trust.set_revoked(net.revoked().clone());
    let endpoint = Arc::new(
        TunnelEndpoint::bind(
            cfg.listen,
            trust,
            &st.cert_der,
            &st.key.to_der(),
            cfg.tunnel_timers,
        )
        .context("cannot open the tunnel endpoint")?,
    );
    endpoint.set_hello(
        HelloInfo {
            protocol: crate::params::PROTOCOL_VERSION,
            params_version: params.version,
            endpoints: cfg.endpoints.clone(),
            country: cfg.country.clone(),
        },
        params.min_protocol,
    );
    let tun = Arc::new(crate::tun::Tun::open(
        &cfg.tun_name,
        me,
        params.network,
        cfg.tun_mtu,
    )?);
    if !cfg.endpoints.is_empty()
        && let Err(e) = client
            .load()
            .report_endpoints(&cfg.endpoints, crate::params::PROTOCOL_VERSION)
            .await
    {
        warn!(error = %e, "cannot report this node's endpoints to the registry");
    }

    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        snapshot: Mutex::new(Snapshot {
            state: NodeStateName::Connecting,
            peers: vec![],
            routes: vec![],
            tunnels: 0,
            selected: 0,
            params_version: params.version,
            error: None,
        }),
        tx: tx.clone(),
        started: Instant::now(),
        prefix,
        network: params.network,
    });
    let control = control::server::ControlServer::bind(&cfg.state_dir, 0o600).await?;
    // As a service (root, and the installers' group exists) the group may use the socket too.
    #[cfg(unix)]
    if rustix::process::geteuid().is_root()
        && let Some(gid) = control::service_group_id()
    {
        match control.share_with_group(gid) {
            Ok(()) => info!(
                group = control::SERVICE_GROUP,
                "control socket shared with the group (mode 0660)"
            ),
            Err(e) => {
                warn!(error = %e, "cannot give the control socket to the re6mesh group; only root can use it")
            }
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let mut stop = stop_rx.clone();
        let h: Arc<dyn ControlHandler> = Arc::new(Handler(shared.clone()));
        tokio::spawn(control.run(h, async move {
            let _ = stop.changed().await;
        }));
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(Input::Exit);
        });
    }

    let fib = Fib::new();
    let table: Arc<TunnelTable> = Arc::new(ArcSwap::from_pointee(HashMap::new()));
    let timers = cfg.babel_timers.unwrap_or(Timers {
        hello: Duration::from_secs(u64::from(params.hello_interval.max(1))),
        update: Duration::from_secs(u64::from(params.hello_interval.max(1)) * 4),
    });
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&u128::from(prefix.network()).to_be_bytes());
    seed[16..].copy_from_slice(&rand::random::<[u8; 16]>());
    // Stable across restarts and unique per prefix (the first 64 bits alone would collide
    // for node prefixes longer than /64 inside one /64).
    let router_id = router_id_for(&prefix);
    let mut engine = Engine::new(Config::default(), router_id, seed, Time::ZERO);
    engine.set_mac_keys(mac);
    if let Some(p) = Prefix::new(IpAddr::V6(prefix.network()), prefix.prefix_len()) {
        engine.originate(Time::ZERO, p);
    }

    // TUN reader: packets from local applications.
    {
        let (tun, fibr, table) = (tun.clone(), fib.reader(), table.clone());
        let mut fwd = Forwarder::new(me, RateLimit::default());
        tokio::spawn(async move {
            // One large buffer; each packet is split off it (amortised: no allocation per
            // packet until the buffer is used up and replaced).
            let mut pool = BytesMut::new();
            let want = frame::HEADER_LEN + 65535;
            loop {
                if pool.len() < want {
                    if pool.capacity() < want {
                        pool = BytesMut::with_capacity(1 << 20);
                    }
                    // zero-fills only what the last packet took
                    pool.resize(want, 0);
                }
                let n = match tun.recv(&mut pool[frame::HEADER_LEN..want]).await {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(error = %e, "TUN read failed");
                        break;
                    }
                };
                let framed = pool.split_to(frame::HEADER_LEN + n);
                route_packet(framed, false, prefix, &fibr, &table, &tun, &mut fwd).await;
            }
        });
    }
    // Acceptor.
    {
        let (endpoint, tx) = (endpoint.clone(), tx.clone());
        tokio::spawn(async move {
            while let Some(acc) = endpoint.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let from = acc.remote_address();
                    match acc.finish().await {
                        Ok(t) => {
                            let _ = tx.send(Input::TunnelUp(Box::new(t)));
                        }
                        Err(e @ TunnelError::PathMtu(_)) => {
                            warn!(%from, "incoming tunnel refused: {e}");
                        }
                        Err(e) => info!(%from, error = %e, "incoming tunnel refused"),
                    }
                });
            }
        });
    }
    // Registry watch: a long poll that brings a change into the mesh within a moment.
    if cfg.registry_watch {
        let (tx, dir, client) = (tx.clone(), cfg.state_dir.clone(), client.clone());
        let mut after = params.version;
        tokio::spawn(async move {
            let mut backoff = WATCH_RETRY_MIN;
            while !tx.is_closed() {
                let c = client.load_full();
                match c.watch_params(after).await {
                    Ok(Some((p, signed))) => {
                        backoff = WATCH_RETRY_MIN;
                        if p.version <= after {
                            continue;
                        }
                        after = p.version;
                        let crl = c
                            .crl()
                            .await
                            .map_err(
                                |e| warn!(error = %e, "cannot fetch the CRL from the registry"),
                            )
                            .ok();
                        let offer = Input::Offer {
                            signed: Some(signed),
                            crl,
                            from: None,
                        };
                        if tx.send(offer).is_err() {
                            break;
                        }
                        let keys = fetch_key_bytes(&c, &dir).await;
                        if tx.send(Input::KeyBytes(keys)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => {
                        info!(
                            "the registry holds as many parameter watches as it allows: changes come from the neighbours and the poll"
                        );
                        tokio::time::sleep(WATCH_BUSY_RETRY).await;
                    }
                    Err(e) => {
                        debug!(error = %e, "parameter watch failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(WATCH_RETRY_MAX);
                    }
                }
            }
        });
    }
    // Registry poll: the fallback when no neighbour brings newer parameters.
    if let Some(period) = cfg.registry_poll {
        let (tx, dir, client) = (tx.clone(), cfg.state_dir.clone(), client.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let c = client.load_full();
                let (signed, crl) = fetch_params_and_crl(&c).await;
                if tx
                    .send(Input::Offer {
                        signed,
                        crl,
                        from: None,
                    })
                    .is_err()
                {
                    break;
                }
                let keys = fetch_key_bytes(&c, &dir).await;
                if tx.send(Input::KeyBytes(keys)).is_err() {
                    break;
                }
            }
        });
    }

    // `--lan`: neighbours announce themselves on the LAN and get tunnels to their link-local
    // addresses (src/mesh/lan_discovery.rs).
    let lan = super::lan_discovery::LanPeers::new(
        super::lan_discovery::LanAuth::new(&params, mac_keys(&params, &keys)),
        timers.hello,
    );
    if !cfg.lan.is_empty() {
        let ann = super::lan_discovery::Announcement {
            prefix,
            port: endpoint
                .local_addr()
                .map_or(cfg.listen.port(), |a| a.port()),
        };
        let tx = tx.clone();
        let found = move |d: super::lan_discovery::Discovered| {
            let _ = tx.send(Input::LanPeer {
                prefix: d.prefix,
                addr: d.addr,
            });
        };
        super::lan_discovery::start(&cfg.lan, ann, lan.pace(), lan.subscribe(), found).await?;
    }
    let (mut cache, cache_err) =
        PeerCache::load(&PeerCache::path(&cfg.state_dir), DEFAULT_CAPACITY);
    if let Some(e) = cache_err
        && !e.is_missing()
    {
        warn!(error = %e, "the peer cache is unusable; starting with an empty one");
    }
    for (p, a) in &cfg.peers {
        cache.record_seen(*p, vec![*a], unix_now());
    }
    let core = Core {
        lan,
        engine,
        fib,
        table,
        tun,
        endpoint: endpoint.clone(),
        tx: tx.clone(),
        shared: shared.clone(),
        me,
        prefix,
        timers,
        fixed_timers: cfg.babel_timers.is_some(),
        tunnels: BTreeMap::new(),
        by_prefix: HashMap::new(),
        base: Instant::now(),
        cache,
        cache_saved: Instant::now(),
        rng: rand_core::SeedableRng::from_seed(rand::random::<[u8; 32]>()),
        tm: TunnelManager::new(
            PolicyConfig::from_params(
                &params.tunnel,
                &params.countries,
                Some(prefix),
                cfg.country.clone(),
            ),
            Time::ZERO,
            rand::random(),
        ),
        static_peers: cfg.peers.iter().copied().collect(),
        dialing: HashMap::new(),
        down: false,
        my_endpoints: cfg.endpoints.clone(),
        country: cfg.country.clone(),
        revoked: net.revoked().contains(&info.serial),
        net,
        keys,
        my_serial: info.serial.clone(),
        cert: Identity {
            dir: cfg.state_dir.clone(),
            registry_url: st.facts.registry_url.clone(),
            ca_der: st.ca_der.clone(),
            key: Arc::new(st.key),
            not_before: info.not_before,
            not_after: info.not_after,
        },
        renewing: false,
        next_renewal_try: Instant::now(),
        fatal: None,
        registry: client.clone(),
        last_bootstrap: None,
        last_registry_fetch: None,
        registry_fetch_pending: false,
        // Of two --peer peers that name each other, the lower prefix dials first: the
        // higher one waits a moment, so they rarely race to two tunnels (one of which the
        // duplicate rule would close, dropping the routes it already carried).
        static_retry: cfg
            .peers
            .iter()
            .filter(|(p, _)| *p < prefix)
            .map(|(p, _)| (*p, Instant::now() + STATIC_DIAL_DEFER))
            .collect(),
    };
    let result = core.run(rx).await;
    let _ = stop_tx.send(true);
    endpoint.close();
    result
}

/// Routes one IPv6 packet. `framed` holds the tunnel type byte followed by the packet, so a
/// forwarded packet leaves in the same buffer it arrived in (no copy, no allocation).
async fn route_packet(
    mut framed: BytesMut,
    from_tunnel: bool,
    prefix: Ipv6Net,
    fib: &FibReader,
    table: &TunnelTable,
    tun: &crate::tun::Tun,
    fwd: &mut Forwarder,
) {
    let Some(pkt) = framed.get_mut(frame::HEADER_LEN..) else {
        return;
    };
    let Some(h) = super::forward::parse_header(pkt) else {
        return;
    };
    let lookup = if prefix.contains(&h.dst) {
        Lookup::Local
    } else {
        match fib
            .lookup(IpAddr::V6(h.dst))
            .and_then(|e| table.load().get(&e.iface).cloned())
        {
            Some(conn) => {
                let mtu = conn
                    .max_datagram_size()
                    .map(|m| m.saturating_sub(frame::HEADER_LEN))
                    .unwrap_or(0);
                Lookup::Via { next: conn, mtu }
            }
            None => Lookup::NoRoute,
        }
    };
    match fwd.decide(pkt, from_tunnel, lookup, Instant::now()) {
        Decision::Deliver => {
            let _ = tun.send(pkt).await;
        }
        Decision::Forward(conn) => {
            if conn.datagram_send_buffer_space() < super::tunnels::BABEL_RESERVE {
                debug!("tunnel queue full: data packet dropped");
                return;
            }
            framed[0] = frame::TYPE_IPV6;
            if let Err(e) = conn.send_datagram(framed.freeze()) {
                debug!(error = %e, "datagram not sent");
            }
        }
        Decision::Reply(icmp) => {
            // The error goes back to the source: to our own TUN if it is ours, else routed.
            if !from_tunnel {
                let _ = tun.send(&icmp).await;
            } else if let Some(h) = super::forward::parse_header(&icmp)
                && let Some(e) = fib.lookup(IpAddr::V6(h.dst))
                && let Some(conn) = table.load().get(&e.iface)
            {
                let mut v = Vec::with_capacity(icmp.len() + 1);
                frame::encode_into(frame::TYPE_IPV6, &icmp, &mut v);
                let _ = conn.send_datagram(Bytes::from(v));
            }
        }
        Decision::Drop(reason) => debug!(?reason, "packet dropped"),
    }
}

struct TunnelEntry {
    conn: quinn::Connection,
    peer_prefix: Ipv6Net,
    neighbour: NeighbourId,
    initiated: bool,
    peer_params: u64,
    peer_serial: String,
    /// Messages for the peer's control stream.
    ctl: mpsc::UnboundedSender<ControlMsg>,
}

/// What the node needs to renew its certificate.
struct Identity {
    dir: PathBuf,
    registry_url: String,
    ca_der: Vec<u8>,
    key: Arc<NodeKey>,
    not_before: i64,
    not_after: i64,
}

impl Identity {
    /// When to renew: 30 days before expiry, or half-way through a shorter validity (the
    /// registry backdates `not_before` by a few minutes for clock skew; that is not validity).
    fn renew_at(&self) -> i64 {
        let backdate = crate::registry::ca::BACKDATE_SECS;
        let lifetime = (self.not_after - self.not_before - backdate).max(0);
        self.not_after - (30 * 86_400).min(lifetime / 2)
    }
}

/// The one sentence a node says when the network requires a newer protocol.
fn protocol_too_old(params: &crate::params::NetworkParams) -> Option<String> {
    (params.min_protocol > crate::params::PROTOCOL_VERSION).then(|| {
        format!(
            "this network now requires protocol {} but this mesh speaks {}; upgrade mesh",
            params.min_protocol,
            crate::params::PROTOCOL_VERSION
        )
    })
}

struct Core {
    engine: Engine,
    fib: Fib,
    table: Arc<TunnelTable>,
    tun: Arc<crate::tun::Tun>,
    endpoint: Arc<TunnelEndpoint>,
    tx: mpsc::UnboundedSender<Input>,
    shared: Arc<Shared>,
    me: Ipv6Addr,
    prefix: Ipv6Net,
    timers: Timers,
    /// Babel timers set by configuration (tests): parameters do not change them.
    fixed_timers: bool,
    tunnels: BTreeMap<IfaceId, TunnelEntry>,
    by_prefix: HashMap<Ipv6Net, IfaceId>,
    base: Instant,
    /// Peers we know addresses of (persistent, with failure marks).
    cache: PeerCache,
    cache_saved: Instant,
    /// re6st's tunnel manager: which tunnels to open, accept and retire.
    tm: TunnelManager,
    /// Randomness for the peer cache's choices.
    rng: rand_chacha::ChaCha8Rng,
    /// Peers given with `--peer`: always kept connected.
    static_peers: HashMap<Ipv6Net, SocketAddr>,
    /// Dials in progress and when they started (a peer is not dialled twice at once).
    dialing: HashMap<Ipv6Net, Instant>,
    down: bool,
    my_endpoints: Vec<SocketAddr>,
    country: Option<String>,
    /// Parameters and CRL in force.
    net: NetState,
    /// MAC key bytes known, by registry key id.
    keys: Vec<(String, Vec<u8>)>,
    my_serial: String,
    revoked: bool,
    cert: Identity,
    renewing: bool,
    next_renewal_try: Instant,
    /// Why the node must stop (e.g. the network requires a newer protocol).
    fatal: Option<String>,
    registry: Arc<ArcSwap<RegistryClient>>,
    last_bootstrap: Option<Instant>,
    /// Neighbours found by `--lan` discovery (dialled through `static_peers`) and the keys
    /// the discovery tasks sign and verify with.
    lan: super::lan_discovery::LanPeers,
    last_registry_fetch: Option<Instant>,
    registry_fetch_pending: bool,
    /// When each --peer may be dialled again after a failure.
    static_retry: HashMap<Ipv6Net, Instant>,
}

impl Core {
    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let deadline = self
                .engine
                .poll_timeout()
                .map(|t| self.base + Duration::from_millis(t.as_millis()))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    if !self.handle(input) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = self.now();
                    self.engine.handle_timeout(now);
                }
                _ = tick.tick() => {
                    self.housekeeping();
                }
            }
            self.drain();
        }
        // Clean shutdown: retract our routes, let them leave, close tunnels.
        let now = self.now();
        self.engine.shutdown(now);
        self.drain();
        // (a fatal stop passes the parameters that caused it on first: let them leave)
        let linger = if self.fatal.is_some() { 300 } else { 50 };
        tokio::time::sleep(Duration::from_millis(linger)).await;
        for t in self.tunnels.values() {
            t.conn.close(0u32.into(), b"node shutting down");
        }
        self.save_cache();
        info!("node stopped");
        match self.fatal.take() {
            Some(msg) => Err(anyhow::anyhow!(msg)),
            None => Ok(()),
        }
    }

    /// Returns false to stop.
    fn handle(&mut self, input: Input) -> bool {
        let now = self.now();
        match input {
            Input::Babel { iface, bytes } => {
                if let Some(t) = self.tunnels.get(&iface) {
                    let src =
                        SocketAddr::new(IpAddr::V6(identity::node_address(&t.peer_prefix)), 6696);
                    let dst = SocketAddr::new(IpAddr::V6(self.me), 6696);
                    self.engine.handle_packet(now, iface, src, dst, &bytes);
                }
            }
            Input::TunnelUp(t) => self.tunnel_up(*t),
            Input::TunnelDown { iface, revoked_me } => {
                self.tunnel_down(iface, "closed");
                if revoked_me {
                    // A neighbour applied a CRL naming us before we heard of it: ask the
                    // registry now (then renew) rather than wait for its next poll.
                    self.fetch_from_registry();
                }
            }
            Input::KeyBytes(keys) => {
                for (id, bytes) in keys {
                    self.keys.retain(|(i, _)| *i != id);
                    self.keys.push((id, bytes));
                }
                self.set_mac_keys();
            }
            Input::Offer { signed, crl, from } => self.offer(signed, crl, from),
            Input::Control { iface, msg } => self.control_message(iface, msg),
            Input::Renewed(r) => self.renewed(r),
            Input::Peers(peers) => {
                let network = self.net.params().network;
                for p in peers.into_iter().take(256) {
                    if p.prefix != self.prefix
                        && network.contains(&p.prefix)
                        && !p.endpoints.is_empty()
                    {
                        self.cache.record_seen(p.prefix, p.endpoints, unix_now());
                        if let Some(c) = p.country.filter(|c| valid_country(c)) {
                            self.cache.set_country(p.prefix, Some(c));
                        }
                    }
                }
            }
            Input::RevokedHint => {
                if !self.revoked {
                    self.fetch_from_registry();
                }
            }
            Input::DialFailed(peer) => {
                self.dialing.remove(&peer);
                self.cache.record_failure(peer, unix_now());
                if self.static_peers.contains_key(&peer) {
                    self.static_retry
                        .insert(peer, Instant::now() + Duration::from_secs(2));
                } else {
                    self.tm.dial_failed(now, peer);
                }
            }
            Input::Down => {
                self.down = true;
                self.lan.set_active(false);
                let ids: Vec<IfaceId> = self.tunnels.keys().copied().collect();
                for id in ids {
                    if let Some(t) = self.tunnels.get(&id) {
                        t.conn.close(0u32.into(), b"node going down");
                    }
                    self.tunnel_down(id, "node going down");
                }
                // Local applications see the network gone, not a black hole.
                if let Err(e) = self.tun.withdraw() {
                    warn!(error = %e, "cannot remove the node address from the TUN device");
                }
            }
            Input::Up => {
                if self.down
                    && let Err(e) = self.tun.restore()
                {
                    warn!(error = %e, "cannot put the node address back on the TUN device");
                }
                self.down = false;
                self.lan.set_active(true);
            }
            Input::LanPeer { prefix, addr } => self.lan_peer(prefix, addr),
            Input::Exit => return false,
        }
        self.fatal.is_none()
    }

    fn tunnel_up(&mut self, t: Tunnel) {
        let peer = t.peer_prefix;
        if self.down {
            t.conn.close(0u32.into(), b"node is down");
            return;
        }
        // The handshake already refused revoked serials; a CRL applied while it was in flight
        // is caught here.
        if self.endpoint.trust().is_revoked(&t.peer_serial) {
            t.conn.close(CLOSE_REVOKED.into(), b"certificate revoked");
            return;
        }
        if let Some(&existing) = self.by_prefix.get(&peer) {
            // One connection per pair: the lower prefix keeps the one it initiated.
            let keep_new = if self.prefix < peer {
                t.initiated
            } else {
                !t.initiated
            };
            let old_initiated = self.tunnels.get(&existing).map(|e| e.initiated);
            if !keep_new || old_initiated == Some(t.initiated) {
                t.conn.close(4u32.into(), b"duplicate tunnel");
                return;
            }
            if let Some(old) = self.tunnels.get(&existing) {
                old.conn.close(4u32.into(), b"duplicate tunnel");
            }
            self.tunnel_down(existing, "replaced by a duplicate");
        }
        let is_static = self.static_peers.contains_key(&peer);
        if !t.initiated
            && !is_static
            && !self
                .tm
                .accept_incoming(peer, t.peer_hello.country.as_deref())
        {
            t.conn.close(5u32.into(), b"too many tunnels");
            return;
        }
        let now = self.now();
        if !is_static {
            self.tm.tunnel_up(now, peer, t.initiated);
        }
        self.dialing.remove(&peer);
        let peer_addr = identity::node_address(&peer);
        let mut icfg = IfaceConfig::tunnel(&format!("t-{peer}"), self.me, peer_addr);
        icfg.timers = self.timers;
        let id = self.engine.add_interface(now, icfg);
        let Ok(neighbour) = self.engine.add_neighbour(now, id, IpAddr::V6(peer_addr)) else {
            t.conn.close(1u32.into(), b"internal error");
            return;
        };
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        info!(peer = %peer, remote = %t.conn.remote_address(), initiated = t.initiated, "tunnel up");
        let mut map = (**self.table.load()).clone();
        map.insert(id, t.conn.clone());
        self.table.store(Arc::new(map));
        self.by_prefix.insert(peer, id);
        if !t.peer_hello.endpoints.is_empty() {
            self.cache
                .record_seen(peer, t.peer_hello.endpoints.clone(), unix_now());
        }
        if t.peer_hello.country.is_some() {
            self.cache.set_country(peer, t.peer_hello.country.clone());
        }
        self.cache.record_success(peer, unix_now());
        self.tunnels.insert(
            id,
            TunnelEntry {
                conn: t.conn.clone(),
                peer_prefix: peer,
                neighbour,
                initiated: t.initiated,
                peer_params: t.peer_hello.params_version,
                peer_serial: t.peer_serial.clone(),
                ctl: ctl_tx.clone(),
            },
        );
        // Parameters: the older side pulls from the newer one.
        let mine = self.net.params().version;
        if t.peer_hello.params_version > mine {
            let _ = ctl_tx.send(ControlMsg::ParamsRequest);
        }
        // Share the peers we know.
        let peers: Vec<PeerAddr> = self
            .cache
            .iter()
            .filter(|(p, e)| **p != peer && e.failures == 0)
            .take(64)
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
        let _ = ctl_tx.send(ControlMsg::Peers { peers });
        spawn_tunnel_tasks(
            t,
            id,
            self.tx.clone(),
            ctl_rx,
            self.prefix,
            self.fib.reader(),
            self.table.clone(),
            self.tun.clone(),
            self.me,
        );
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

    fn control_message(&mut self, iface: IfaceId, msg: ControlMsg) {
        match msg {
            ControlMsg::Peers { peers } => {
                let _ = self.tx.send(Input::Peers(peers));
            }
            ControlMsg::ParamsRequest => {
                let m = self.params_message();
                if let Some(t) = self.tunnels.get_mut(&iface) {
                    t.peer_params = t.peer_params.max(self.net.params().version);
                    let _ = t.ctl.send(m);
                }
            }
            ControlMsg::Params { params, crl } => {
                use base64::Engine as _;
                let signed = match crate::params::SignedParams::from_json(&params) {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(error = %e, "malformed parameters from a neighbour");
                        return;
                    }
                };
                let crl =
                    crl.and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
                let _ = self.tx.send(Input::Offer {
                    signed: Some(signed),
                    crl,
                    from: Some(iface),
                });
            }
            ControlMsg::KillRequest => {
                // The end of the peer's lock cycle: agree unless the tunnel manager says
                // this is our last tunnel, or the peer is one we were told to keep (--peer).
                let Some(t) = self.tunnels.get(&iface) else {
                    return;
                };
                let (peer, neighbour, ctl, conn) =
                    (t.peer_prefix, t.neighbour, t.ctl.clone(), t.conn.clone());
                let now = self.now();
                let accepted =
                    !self.static_peers.contains_key(&peer) && self.tm.on_kill_request(now, peer);
                if !accepted {
                    let _ = ctl.send(ControlMsg::KillResponse { accepted });
                    return;
                }
                info!(%peer, "tunnel retired at the peer's request");
                // Our side of the lock: Babel routes around the tunnel here too before it
                // closes, then we answer and the peer closes it.
                let _ = self
                    .engine
                    .set_cost_multiplier(now, neighbour, CostMultiplier::HARD_LOCK);
                tokio::spawn(async move {
                    tokio::time::sleep(KILL_ANSWER_DELAY).await;
                    let _ = ctl.send(ControlMsg::KillResponse { accepted });
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    conn.close(CLOSE_RETIRED.into(), b"retired by the tunnel manager");
                });
            }
            ControlMsg::KillResponse { accepted } => {
                if let Some(t) = self.tunnels.get(&iface) {
                    let (peer, now) = (t.peer_prefix, self.now());
                    self.tm.on_kill_response(now, peer, accepted);
                }
            }
            ControlMsg::Hello { .. } => {}
        }
    }

    /// Takes newer parameters and/or a CRL from the registry or a neighbour, applies them
    /// without restarting and passes them on to the other neighbours.
    fn offer(&mut self, signed: Option<SignedParams>, crl: Option<Vec<u8>>, from: Option<IfaceId>) {
        let old = self.net.params().clone();
        let applied = match self.net.offer(signed.as_ref(), crl.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                let who = from
                    .and_then(|i| self.tunnels.get(&i))
                    .map(|t| t.peer_prefix.to_string())
                    .unwrap_or_else(|| "the registry".into());
                warn!(from = %who, error = %e, "refused parameters or CRL");
                return;
            }
        };
        if let Some(i) = from
            && let Some(t) = self.tunnels.get_mut(&i)
        {
            // The sender has at least what it sent.
            if let Some(v) = applied.offered {
                t.peer_params = t.peer_params.max(v);
            }
        }
        if !applied.any() {
            return;
        }
        if let Err(e) =
            crate::state::save_params(&self.cert.dir, self.net.signed(), self.net.crl_der())
        {
            warn!(error = %e, "cannot store the new parameters");
        }
        if applied.params {
            let p = self.net.params().clone();
            info!(version = p.version, changed = ?old.diff(&p), "network parameters applied");
            if let Some(msg) = protocol_too_old(&p) {
                // Pass the news on before stopping: our neighbours must stop too.
                tracing::error!("{msg}");
                self.fatal = Some(msg);
                self.announce(from);
                return;
            }
            self.tm.set_config(PolicyConfig::from_params(
                &p.tunnel,
                &p.countries,
                Some(self.prefix),
                self.country.clone(),
            ));
            if !self.fixed_timers && p.hello_interval != old.hello_interval {
                let hello = Duration::from_secs(u64::from(p.hello_interval.max(1)));
                self.timers = Timers {
                    hello,
                    update: hello * 4,
                };
                let now = self.now();
                for id in self.tunnels.keys() {
                    let _ = self.engine.set_timers(now, *id, self.timers);
                }
                self.lan.set_hello(hello);
            }
            self.endpoint.set_hello(
                HelloInfo {
                    protocol: crate::params::PROTOCOL_VERSION,
                    params_version: p.version,
                    endpoints: self.my_endpoints.clone(),
                    country: self.country.clone(),
                },
                p.min_protocol,
            );
            // Key ids we hold bytes for take effect now; new ids are fetched from the
            // registry (only authenticated, non-revoked nodes get them).
            self.set_mac_keys();
            let missing = [&p.mac.sign, &p.mac.accept]
                .into_iter()
                .flatten()
                .any(|id| !self.keys.iter().any(|(k, _)| k == id));
            if missing {
                let (client, dir, tx) = (
                    self.registry.load_full(),
                    self.cert.dir.clone(),
                    self.tx.clone(),
                );
                tokio::spawn(async move {
                    let keys = fetch_key_bytes(&client, &dir).await;
                    let _ = tx.send(Input::KeyBytes(keys));
                });
            }
        }
        if applied.crl {
            self.apply_crl();
        }
        self.announce(from);
        self.refresh_snapshot();
    }

    /// Sends the parameters and CRL in force to every neighbour but `from`.
    fn announce(&mut self, from: Option<IfaceId>) {
        let m = self.params_message();
        let v = self.net.params().version;
        for (id, t) in self.tunnels.iter_mut() {
            if Some(*id) != from {
                t.peer_params = t.peer_params.max(v);
                let _ = t.ctl.send(m.clone());
            }
        }
    }

    /// Applies the CRL in force at once: handshakes from revoked serials are refused from
    /// now on, live tunnels to them are closed and their addresses forgotten; if our own
    /// serial is in it, we renew.
    fn apply_crl(&mut self) {
        let revoked = self.net.revoked().clone();
        if revoked.contains(&self.my_serial) && !self.revoked {
            warn!("this node's certificate is revoked; renewing it");
            self.revoked = true;
        }
        let dead: Vec<(IfaceId, Ipv6Net)> = self
            .tunnels
            .iter()
            .filter(|(_, t)| revoked.contains(&t.peer_serial))
            .map(|(id, t)| (*id, t.peer_prefix))
            .collect();
        self.endpoint.trust().set_revoked(revoked);
        for (id, prefix) in dead {
            if let Some(t) = self.tunnels.get(&id) {
                t.conn.close(CLOSE_REVOKED.into(), b"certificate revoked");
            }
            self.tunnel_down(id, "peer certificate revoked");
            self.cache.forget(prefix);
        }
        self.refresh_snapshot();
    }

    /// Starts a renewal with the registry (same key, same prefix, new serial) when the
    /// certificate is revoked or close to expiry.
    fn maybe_renew(&mut self) {
        let now_unix = time::OffsetDateTime::now_utc().unix_timestamp();
        let due = self.revoked || now_unix >= self.cert.renew_at();
        if !due || self.renewing || Instant::now() < self.next_renewal_try {
            return;
        }
        self.renewing = true;
        let (client, tx) = (self.registry.load_full(), self.tx.clone());
        let key = self.cert.key.clone();
        info!(revoked = self.revoked, "renewing this node's certificate");
        tokio::spawn(async move {
            let r = client
                .renew(&key)
                .await
                .map(Box::new)
                .map_err(|e| e.to_string());
            let _ = tx.send(Input::Renewed(r));
        });
    }

    fn renewed(&mut self, r: Result<Box<Certified>, String>) {
        self.renewing = false;
        let c = match r {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "certificate renewal failed; retrying in a minute");
                self.next_renewal_try = Instant::now() + Duration::from_secs(60);
                return;
            }
        };
        if c.prefix != self.prefix {
            warn!(got = %c.prefix, "the registry renewed with another prefix; ignored");
            self.next_renewal_try = Instant::now() + Duration::from_secs(60);
            return;
        }
        let set = || -> anyhow::Result<RegistryClient> {
            crate::state::save_cert(&self.cert.dir, &c.cert_der)?;
            self.endpoint
                .set_identity(&c.cert_der, &self.cert.key.to_der())
                .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            Ok(RegistryClient::with_identity(
                &self.cert.registry_url,
                &self.cert.ca_der,
                &c.cert_der,
                &self.cert.key,
            )?)
        };
        match set() {
            Ok(client) => {
                self.registry.store(Arc::new(client));
                info!(serial = %c.serial, not_after = c.not_after, "certificate renewed");
                self.my_serial = c.serial.clone();
                let info = identity::cert_info(&c.cert_der).ok();
                self.cert.not_before = info.map(|i| i.not_before).unwrap_or(self.cert.not_before);
                self.cert.not_after = c.not_after;
                self.revoked = false;
                // never renew in a loop, whatever the validity
                self.next_renewal_try = Instant::now() + Duration::from_secs(5);
                // Parameters that came with the certificate (the CRL names our old serial).
                self.offer(Some(c.signed_params.clone()), None, None);
                self.refresh_snapshot();
            }
            Err(e) => {
                warn!(error = %e, "cannot use the renewed certificate; retrying in a minute");
                self.next_renewal_try = Instant::now() + Duration::from_secs(60);
            }
        }
    }

    fn tunnel_down(&mut self, iface: IfaceId, why: &str) {
        let Some(t) = self.tunnels.remove(&iface) else {
            return;
        };
        let now = self.now();
        let _ = self.engine.remove_neighbour(now, t.neighbour);
        let _ = self.engine.remove_interface(now, iface);
        if self.by_prefix.get(&t.peer_prefix) == Some(&iface) {
            self.by_prefix.remove(&t.peer_prefix);
            self.tm.tunnel_down(now, t.peer_prefix);
            if self.static_peers.contains_key(&t.peer_prefix) && t.peer_prefix < self.prefix {
                self.static_retry
                    .insert(t.peer_prefix, Instant::now() + STATIC_DIAL_DEFER);
            }
        }
        let mut map = (**self.table.load()).clone();
        map.remove(&iface);
        self.table.store(Arc::new(map));
        info!(peer = %t.peer_prefix, why, "tunnel down");
    }

    fn housekeeping(&mut self) {
        let now = self.now();
        self.lan_expire();
        self.maybe_renew();
        // The parameters name a CRL we lack (no neighbour had it): ask the registry
        // (rate-limited there).
        if self.registry_fetch_pending || self.net.crl_wanted() {
            self.fetch_from_registry();
        }
        // RTT from QUIC into the Babel cost.
        for t in self.tunnels.values() {
            let _ = self.engine.set_rtt(now, t.neighbour, t.conn.rtt());
        }
        // Nobody known and no tunnel: ask the registry for a bootstrap peer (every 10 s).
        if !self.down
            && self.tunnels.is_empty()
            && self.dialing.is_empty()
            && self
                .cache
                .candidates(unix_now(), 1, &mut self.rng)
                .is_empty()
            && self
                .last_bootstrap
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            self.last_bootstrap = Some(Instant::now());
            let (client, tx) = (self.registry.load_full(), self.tx.clone());
            tokio::spawn(async move {
                match client.bootstrap().await {
                    Ok(Some(b)) => {
                        info!(peer = %b.prefix, "bootstrap peer from the registry");
                        let _ = tx.send(Input::Peers(vec![PeerAddr {
                            prefix: b.prefix,
                            endpoints: b.endpoints,
                            country: None,
                        }]));
                    }
                    Ok(None) => debug!("the registry knows no other live node yet"),
                    Err(e) => warn!(error = %e, "cannot ask the registry for a bootstrap peer"),
                }
            });
        }
        // Dial: peers given with --peer are always kept connected; the tunnel manager
        // chooses the others. A dial gives up within the tunnel idle timeout per address.
        self.dialing.retain(|p, started| {
            started.elapsed() < Duration::from_secs(30) && !self.by_prefix.contains_key(p)
        });
        if !self.down {
            let statics: Vec<(Ipv6Net, SocketAddr)> = self
                .static_peers
                .iter()
                .filter(|(p, _)| {
                    **p != self.prefix
                        && !self.by_prefix.contains_key(p)
                        && !self.dialing.contains_key(p)
                        && self
                            .static_retry
                            .get(p)
                            .is_none_or(|t| *t <= Instant::now())
                })
                .map(|(p, a)| (*p, *a))
                .collect();
            for (peer, addr) in statics {
                self.dial(peer, vec![addr]);
            }
            self.run_tunnel_manager(now);
        }
        if self.cache.is_dirty() && self.cache_saved.elapsed() > Duration::from_secs(60) {
            self.save_cache();
        }
        self.refresh_snapshot();
    }

    fn dial(&mut self, peer: Ipv6Net, addrs: Vec<SocketAddr>) {
        self.dialing.insert(peer, Instant::now());
        let (endpoint, tx) = (self.endpoint.clone(), self.tx.clone());
        tokio::spawn(async move {
            for addr in addrs {
                match endpoint.connect(addr, peer).await {
                    Ok(t) => {
                        let _ = tx.send(Input::TunnelUp(Box::new(t)));
                        return;
                    }
                    Err(e @ TunnelError::PathMtu(_)) => {
                        warn!(%peer, "dial failed: {e}");
                    }
                    Err(e) => {
                        debug!(%peer, %addr, error = %e, "dial failed");
                        if e.to_string().contains("Revoked") {
                            // The peer refused our certificate as revoked.
                            let _ = tx.send(Input::RevokedHint);
                        }
                    }
                }
            }
            let _ = tx.send(Input::DialFailed(peer));
        });
    }

    /// One round of re6st's tunnel manager over what Babel and the peer cache know now.
    fn run_tunnel_manager(&mut self, now: Time) {
        let by_addr: HashMap<IpAddr, Ipv6Net> = self
            .tunnels
            .values()
            .map(|t| {
                (
                    IpAddr::V6(identity::node_address(&t.peer_prefix)),
                    t.peer_prefix,
                )
            })
            .collect();
        let mut via: HashMap<Ipv6Net, usize> = HashMap::new();
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
            .candidates_where(unix_now(), 16, &mut self.rng, |p, _| {
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
            now,
            &Observation {
                routes_via: &routes_via,
                routable: &routable,
                cached: &cached,
            },
        );
        while let Some(action) = self.tm.poll_action() {
            let entry = |p: &Ipv6Net| self.by_prefix.get(p).and_then(|id| self.tunnels.get(id));
            match action {
                Action::Dial(p) => {
                    let addrs = self.cache.endpoints(&p).to_vec();
                    if addrs.is_empty()
                        || self.dialing.contains_key(&p)
                        || self.by_prefix.contains_key(&p)
                    {
                        self.tm.dial_failed(now, p);
                    } else {
                        debug!(peer = %p, "tunnel manager: dial");
                        self.dial(p, addrs);
                    }
                }
                Action::SoftLock(p) | Action::HardLock(p) | Action::Unlock(p) => {
                    let m = match action {
                        Action::SoftLock(_) => CostMultiplier::SOFT_LOCK,
                        Action::HardLock(_) => CostMultiplier::HARD_LOCK,
                        _ => CostMultiplier::NORMAL,
                    };
                    if let Some(n) = entry(&p).map(|t| t.neighbour) {
                        info!(peer = %p, ?action, "tunnel manager");
                        let _ = self.engine.set_cost_multiplier(now, n, m);
                    }
                }
                Action::SendKillRequest(p) => {
                    if let Some(t) = entry(&p) {
                        let _ = t.ctl.send(ControlMsg::KillRequest);
                    }
                }
                Action::Close(p) => {
                    if let Some(t) = entry(&p) {
                        info!(peer = %p, "tunnel manager: retiring the tunnel");
                        t.conn
                            .close(CLOSE_RETIRED.into(), b"retired by the tunnel manager");
                    }
                }
            }
        }
    }

    /// Parameters and CRL from the registry now (at most every 5 s).
    fn fetch_from_registry(&mut self) {
        if self
            .last_registry_fetch
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            self.registry_fetch_pending = true;
            return;
        }
        self.registry_fetch_pending = false;
        self.last_registry_fetch = Some(Instant::now());
        let (client, tx) = (self.registry.load_full(), self.tx.clone());
        tokio::spawn(async move {
            let (signed, crl) = fetch_params_and_crl(&client).await;
            let _ = tx.send(Input::Offer {
                signed,
                crl,
                from: None,
            });
        });
    }

    fn save_cache(&mut self) {
        if let Err(e) = self.cache.save(&PeerCache::path(&self.cert.dir)) {
            warn!(error = %e, "cannot save the peer cache");
        }
        self.cache_saved = Instant::now();
    }

    fn drain(&mut self) {
        let now = self.now();
        while let Some(t) = self.engine.poll_transmit(now) {
            if let Some(conn) = self.tunnels.get(&t.iface).map(|e| &e.conn) {
                let mut v = Vec::with_capacity(t.bytes.len() + 1);
                frame::encode_into(frame::TYPE_BABEL, &t.bytes, &mut v);
                if let Err(e) = conn.send_datagram(Bytes::from(v)) {
                    debug!(error = %e, "Babel datagram not sent");
                }
            }
        }
        let mut changed = false;
        while let Some(c) = self.engine.poll_route_change() {
            if let RouteChange::Removed(p)
            | RouteChange::Added(super::babel::FibRoute { prefix: p, .. }) = &c
            {
                debug!(prefix = %p, "route change");
            }
            self.fib.apply(&c);
            changed = true;
        }
        if changed {
            self.fib.publish();
        }
        while let Some(e) = self.engine.poll_event() {
            match e {
                Event::PacketRejected { src, reason, .. } => {
                    debug!(%src, ?reason, "Babel packet rejected")
                }
                other => debug!(?other, "babel"),
            }
        }
        if changed {
            self.refresh_snapshot();
        }
    }

    fn refresh_snapshot(&mut self) {
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
                endpoint: t.conn.remote_address().to_string(),
                rtt_ms: t.conn.rtt().as_secs_f64() * 1000.0,
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
        let mut s = self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.state = state;
        s.routes = routes;
        s.peers = peers;
        s.tunnels = self.tunnels.len();
        s.selected = selected;
        s.params_version = self.net.params().version;
    }

    /// The MAC keys of the parameters in force, for the Babel engine and LAN discovery.
    fn set_mac_keys(&mut self) {
        let keys = mac_keys(self.net.params(), &self.keys);
        self.lan.set_auth(super::lan_discovery::LanAuth::new(
            self.net.params(),
            keys.clone(),
        ));
        self.engine.set_mac_keys(keys);
    }

    /// A neighbour announced itself on a `--lan` interface: kept connected like a `--peer`,
    /// over its link-local address, while it keeps announcing itself. A `--peer` given for
    /// the same prefix keeps its address.
    fn lan_peer(&mut self, prefix: Ipv6Net, addr: std::net::SocketAddrV6) {
        if prefix == self.prefix
            || (self.static_peers.contains_key(&prefix) && !self.lan.knows(&prefix))
        {
            return;
        }
        let fresh = self.lan.heard(prefix, addr, Instant::now());
        self.static_peers.insert(prefix, SocketAddr::V6(addr));
        if fresh {
            info!(peer = %prefix, %addr, "LAN neighbour");
            if prefix < self.prefix {
                // Both sides hear each other: the lower prefix dials first, as for --peer.
                self.static_retry
                    .insert(prefix, Instant::now() + STATIC_DIAL_DEFER);
            } else if !self.down
                && !self.by_prefix.contains_key(&prefix)
                && !self.dialing.contains_key(&prefix)
            {
                // Dial now rather than at the next tick.
                self.dial(prefix, vec![SocketAddr::V6(addr)]);
            }
        }
    }

    /// Stops dialling LAN neighbours not heard for ten hello intervals (at least 10 s).
    fn lan_expire(&mut self) {
        let max_age = (self.timers.hello * 10).max(Duration::from_secs(10));
        for prefix in self.lan.expire(Instant::now(), max_age) {
            info!(peer = %prefix, "LAN neighbour silent; no longer dialled");
            self.static_peers.remove(&prefix);
            self.static_retry.remove(&prefix);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_tunnel_tasks(
    t: Tunnel,
    iface: IfaceId,
    tx: mpsc::UnboundedSender<Input>,
    mut ctl_rx: mpsc::UnboundedReceiver<ControlMsg>,
    prefix: Ipv6Net,
    fib: FibReader,
    table: Arc<TunnelTable>,
    tun: Arc<crate::tun::Tun>,
    me: Ipv6Addr,
) {
    let Tunnel {
        conn,
        mut control_send,
        mut control_recv,
        mut control_decoder,
        ..
    } = t;
    // Control stream writer.
    tokio::spawn(async move {
        while let Some(m) = ctl_rx.recv().await {
            if control_send
                .write_all(&super::tunnels::control::encode(&m))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    // Control stream reader.
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                loop {
                    match control_decoder.next_message() {
                        Ok(Some(msg)) => {
                            let _ = tx.send(Input::Control { iface, msg });
                        }
                        Ok(None) => break,
                        Err(e) => {
                            debug!(error = %e, "control stream broken");
                            return;
                        }
                    }
                }
                match control_recv.read(&mut buf).await {
                    Ok(Some(n)) => control_decoder.push(&buf[..n]),
                    _ => return,
                }
            }
        });
    }
    // Datagram reader: the data path for this tunnel.
    tokio::spawn(async move {
        let mut fwd = Forwarder::new(me, RateLimit::default());
        loop {
            let d = match conn.read_datagram().await {
                Ok(d) => d,
                Err(e) => {
                    debug!(error = %e, "tunnel closed");
                    let revoked_me = matches!(
                        &e,
                        quinn::ConnectionError::ApplicationClosed(c)
                            if c.error_code == quinn::VarInt::from_u32(CLOSE_REVOKED)
                    );
                    let _ = tx.send(Input::TunnelDown { iface, revoked_me });
                    return;
                }
            };
            match frame::parse(&d) {
                Ok(Datagram::Babel(b)) => {
                    let _ = tx.send(Input::Babel {
                        iface,
                        bytes: b.to_vec(),
                    });
                }
                Ok(Datagram::Ipv6(_)) => {
                    // Zero-copy when quinn hands us the only reference to the buffer.
                    let framed = d.try_into_mut().unwrap_or_else(|d| BytesMut::from(&d[..]));
                    route_packet(framed, true, prefix, &fib, &table, &tun, &mut fwd).await;
                }
                Err(e) => debug!(error = %e, "bad datagram"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::router_id_for;

    #[test]
    fn router_ids_differ_for_prefixes_sharing_their_first_64_bits() {
        let a = router_id_for(&"fd00:1:2:3:4::/80".parse().unwrap());
        let b = router_id_for(&"fd00:1:2:3:5::/80".parse().unwrap());
        assert_ne!(a, b);
        assert_eq!(a, router_id_for(&"fd00:1:2:3:4::/80".parse().unwrap()));
    }
}
