//! The node: the event loop wiring TUN ⇄ forwarder ⇄ tunnels ⇄ Babel engine ⇄ registry
//! (DESIGN §2, §6). Thin IO shell around the sans-IO parts.
//!
//! Tasks:
//! * **core** — owns the [`Engine`] and the [`Fib`] writer; receives Babel packets, tunnel
//!   up/down, MAC keys and control requests on one channel; after every input drains the
//!   engine in its documented order (transmits, route changes → FIB publish, events,
//!   timeout);
//! * **TUN reader** and one **reader per tunnel** — the data path: datagram or packet in,
//!   [`Forwarder::decide`] against the lock-free FIB snapshot, datagram or packet out.
//!   Transit traffic never touches the kernel;
//! * **acceptor** and **dialer** — incoming tunnels and the simple policy of keeping
//!   `client_count` outgoing tunnels to known peers (static `--peer`s, the registry's
//!   bootstrap peer, addresses learnt from neighbours);
//! * **registry poll** — parameters and MAC keys every 5 minutes (configurable, can be off).

use std::collections::{BTreeMap, HashMap, HashSet};
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

use super::babel::mac::{MacKey, MacKeys};
use super::babel::time::Time;
use super::babel::{Config, Engine, Event, IfaceConfig, IfaceId, NeighbourId, RouteChange, Timers};
use super::fib::{Fib, FibReader};
use super::forward::{Decision, Forwarder, Lookup, RateLimit};
use super::tunnels::control::{ControlMsg, PeerAddr};
use super::tunnels::frame::{self, Datagram};
use super::tunnels::{HelloInfo, Trust, Tunnel, TunnelEndpoint, TunnelTimers};
use crate::control::{self, ControlHandler, NodeStateName};
use crate::identity;
use crate::registry_client::RegistryClient;
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
    },
    Keys(MacKeys),
    /// Revoked serials from a CRL verified against the CA.
    Crl(HashSet<String>),
    Peers(Vec<PeerAddr>),
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
    MacKeys {
        sign: find(&params.mac.sign, 1),
        accept: find(&params.mac.accept, 2).into_iter().collect(),
        accept_unsigned: params.mac.accept_unsigned,
    }
}

const MAC_CACHE: &str = "mac-keys.json";

/// Fetches parameters and MAC keys from the registry; falls back to the cache on failure.
async fn fetch_keys(
    client: &RegistryClient,
    dir: &std::path::Path,
    params: &mut crate::params::NetworkParams,
) -> Vec<(String, Vec<u8>)> {
    match client.params().await {
        Ok((p, signed)) => {
            if p.version > params.version {
                let _ = crate::fsutil::write_atomic(
                    &dir.join(crate::state::files::PARAMS),
                    &serde_json::to_vec_pretty(&signed.to_json()).unwrap_or_default(),
                    0o644,
                );
                *params = p;
            }
        }
        Err(e) => warn!(error = %e, "cannot fetch the network parameters; using the cached ones"),
    }
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

/// Fetches the CRL and returns its revoked serials, after checking the CA's signature.
async fn fetch_crl(client: &RegistryClient, ca_der: &[u8]) -> Option<HashSet<String>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = match client.crl().await {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "cannot fetch the CRL");
            return None;
        }
    };
    let (_, ca) = X509Certificate::from_der(ca_der).ok()?;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).ok()?;
    if crl.verify_signature(ca.public_key()).is_err() {
        warn!("the CRL from the registry is not signed by the network CA; ignored");
        return None;
    }
    Some(
        crl.iter_revoked_certificates()
            .map(|r| identity::serial_hex(r.raw_serial()))
            .collect(),
    )
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
    let mut params = st.params.clone();
    let client = Arc::new(RegistryClient::with_identity(
        &st.facts.registry_url,
        &st.ca_der,
        &st.cert_der,
        &st.key,
    )?);
    let keys = fetch_keys(&client, &cfg.state_dir, &mut params).await;
    if params.min_protocol > crate::params::PROTOCOL_VERSION {
        anyhow::bail!(
            "this network requires protocol {} but this mesh speaks {}; upgrade mesh",
            params.min_protocol,
            crate::params::PROTOCOL_VERSION
        );
    }
    let mac = mac_keys(&params, &keys);
    if params.mac.sign.is_some() && mac.sign.is_none() {
        warn!(
            "the network signs Babel packets but this node has no key yet; routing waits for the registry"
        );
    }

    let trust = Trust::new(&st.ca_der)?;
    let initial_crl = fetch_crl(&client, &st.ca_der).await;
    if let Some(revoked) = &initial_crl {
        trust.set_revoked(revoked.clone());
    }
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
                        Err(e) => info!(%from, error = %e, "incoming tunnel refused"),
                    }
                });
            }
        });
    }
    // Registry poll.
    if let Some(period) = cfg.registry_poll {
        let (tx, dir, mut params, ca) = (
            tx.clone(),
            cfg.state_dir.clone(),
            params.clone(),
            st.ca_der.clone(),
        );
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let keys = fetch_keys(&client, &dir, &mut params).await;
                if tx.send(Input::Keys(mac_keys(&params, &keys))).is_err() {
                    break;
                }
                if let Some(revoked) = fetch_crl(&client, &ca).await
                    && tx.send(Input::Crl(revoked)).is_err()
                {
                    break;
                }
            }
        });
    }

    let core = Core {
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
        client_count: params.tunnel.client_count.max(1) as usize,
        max_clients: params.tunnel.max_clients as usize,
        tunnels: BTreeMap::new(),
        by_prefix: HashMap::new(),
        base: Instant::now(),
        known: cfg.peers.iter().map(|(p, a)| (*p, vec![*a])).collect(),
        dialing: HashMap::new(),
        down: false,
        my_endpoints: cfg.endpoints.clone(),
        params_version: params.version,
        my_serial: info.serial.clone(),
        registry: client.clone(),
        last_bootstrap: None,
        revoked: initial_crl.is_some_and(|r| r.contains(&info.serial)),
    };
    core.run(rx).await;
    let _ = stop_tx.send(true);
    endpoint.close();
    Ok(())
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
    client_count: usize,
    max_clients: usize,
    tunnels: BTreeMap<IfaceId, TunnelEntry>,
    by_prefix: HashMap<Ipv6Net, IfaceId>,
    base: Instant,
    known: BTreeMap<Ipv6Net, Vec<SocketAddr>>,
    /// Dials in progress and when they started (a peer is not dialled twice at once).
    dialing: HashMap<Ipv6Net, Instant>,
    down: bool,
    my_endpoints: Vec<SocketAddr>,
    params_version: u64,
    my_serial: String,
    revoked: bool,
    registry: Arc<RegistryClient>,
    last_bootstrap: Option<Instant>,
}

impl Core {
    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
        for t in self.tunnels.values() {
            t.conn.close(0u32.into(), b"node shutting down");
        }
        info!("node stopped");
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
            Input::TunnelDown { iface } => self.tunnel_down(iface, "closed"),
            Input::Keys(k) => self.engine.set_mac_keys(k),
            Input::Crl(revoked) => self.apply_crl(revoked),
            Input::Peers(peers) => {
                for p in peers {
                    if p.prefix != self.prefix && !p.endpoints.is_empty() && self.known.len() < 1024
                    {
                        self.known.entry(p.prefix).or_insert(p.endpoints);
                    }
                }
            }
            Input::Down => {
                self.down = true;
                let ids: Vec<IfaceId> = self.tunnels.keys().copied().collect();
                for id in ids {
                    if let Some(t) = self.tunnels.get(&id) {
                        t.conn.close(0u32.into(), b"node going down");
                    }
                    self.tunnel_down(id, "node going down");
                }
            }
            Input::Up => self.down = false,
            Input::Exit => return false,
        }
        true
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
            t.conn.close(6u32.into(), b"certificate revoked");
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
        let incoming = self.tunnels.values().filter(|e| !e.initiated).count();
        if !t.initiated && incoming >= self.max_clients {
            t.conn.close(5u32.into(), b"too many tunnels");
            return;
        }
        let now = self.now();
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
            self.known.insert(peer, t.peer_hello.endpoints.clone());
        }
        self.tunnels.insert(
            id,
            TunnelEntry {
                conn: t.conn.clone(),
                peer_prefix: peer,
                neighbour,
                initiated: t.initiated,
                peer_params: t.peer_hello.params_version,
                peer_serial: t.peer_serial.clone(),
            },
        );
        // Share the peers we know.
        let peers: Vec<PeerAddr> = self
            .known
            .iter()
            .filter(|(p, _)| **p != peer)
            .take(64)
            .map(|(p, e)| PeerAddr {
                prefix: *p,
                endpoints: e.clone(),
            })
            .chain((!self.my_endpoints.is_empty()).then(|| PeerAddr {
                prefix: self.prefix,
                endpoints: self.my_endpoints.clone(),
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

    /// Applies a CRL at once: handshakes from revoked serials are refused from now on, live
    /// tunnels to them are closed and their addresses forgotten.
    fn apply_crl(&mut self, revoked: HashSet<String>) {
        if revoked.contains(&self.my_serial) {
            warn!(
                "this node's certificate is revoked; renew it (`mesh join --force` until automatic renewal lands)"
            );
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
                t.conn.close(6u32.into(), b"certificate revoked");
            }
            self.tunnel_down(id, "peer certificate revoked");
            self.known.remove(&prefix);
        }
        self.refresh_snapshot();
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
        }
        let mut map = (**self.table.load()).clone();
        map.remove(&iface);
        self.table.store(Arc::new(map));
        info!(peer = %t.peer_prefix, why, "tunnel down");
    }

    fn housekeeping(&mut self) {
        let now = self.now();
        // RTT from QUIC into the Babel cost.
        for t in self.tunnels.values() {
            let _ = self.engine.set_rtt(now, t.neighbour, t.conn.rtt());
        }
        // Nobody known and no tunnel: ask the registry for a bootstrap peer (every 10 s).
        if !self.down
            && self.tunnels.is_empty()
            && self.known.keys().all(|p| *p == self.prefix)
            && self
                .last_bootstrap
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            self.last_bootstrap = Some(Instant::now());
            let (client, tx) = (self.registry.clone(), self.tx.clone());
            tokio::spawn(async move {
                match client.bootstrap().await {
                    Ok(Some(b)) => {
                        info!(peer = %b.prefix, "bootstrap peer from the registry");
                        let _ = tx.send(Input::Peers(vec![PeerAddr {
                            prefix: b.prefix,
                            endpoints: b.endpoints,
                        }]));
                    }
                    Ok(None) => debug!("the registry knows no other live node yet"),
                    Err(e) => warn!(error = %e, "cannot ask the registry for a bootstrap peer"),
                }
            });
        }
        // Dial: keep client_count outgoing tunnels to known peers. A dial gives up within
        // the tunnel idle timeout per address; after 5 s the peer may be tried again.
        self.dialing.retain(|p, started| {
            started.elapsed() < Duration::from_secs(5) && !self.by_prefix.contains_key(p)
        });
        if !self.down {
            let outgoing =
                self.tunnels.values().filter(|t| t.initiated).count() + self.dialing.len();
            let wanted = self.client_count.saturating_sub(outgoing);
            let candidates: Vec<(Ipv6Net, Vec<SocketAddr>)> = self
                .known
                .iter()
                .filter(|(p, _)| {
                    **p != self.prefix
                        && !self.by_prefix.contains_key(p)
                        && !self.dialing.contains_key(p)
                })
                .take(wanted)
                .map(|(p, e)| (*p, e.clone()))
                .collect();
            for (peer, addrs) in candidates {
                self.dialing.insert(peer, Instant::now());
                let (endpoint, tx) = (self.endpoint.clone(), self.tx.clone());
                tokio::spawn(async move {
                    for addr in addrs {
                        match endpoint.connect(addr, peer).await {
                            Ok(t) => {
                                let _ = tx.send(Input::TunnelUp(Box::new(t)));
                                return;
                            }
                            Err(e) => debug!(%peer, %addr, error = %e, "dial failed"),
                        }
                    }
                });
            }
        }
        self.refresh_snapshot();
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
        s.params_version = self.params_version;
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
                        Ok(Some(ControlMsg::Peers { peers })) => {
                            let _ = tx.send(Input::Peers(peers));
                        }
                        Ok(Some(_)) => {}
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
                    let _ = tx.send(Input::TunnelDown { iface });
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
