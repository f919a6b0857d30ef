//! The node's IO shell: one tokio loop that feeds the [`NodeCore`] and executes its
//! [`Action`]s. The only place in the node that spawns tasks or reads the clock.
//!
//! Channels and budgets (a peer pushes, the node decides what happens when it is full):
//! * everything reaches the loop on one bounded queue ([`EVENT_QUEUE`]);
//! * Babel datagrams: at most `datapath::BABEL_BUDGET` per tunnel queued, the rest dropped
//!   (counted), never waited for (the data path must not stall behind the control plane);
//! * control messages from a peer: the reader waits for room (back-pressure: it stops reading
//!   the stream, QUIC flow control stops the peer);
//! * control messages to a peer: at most [`CONTROL_QUEUE`] queued; a peer that does not read
//!   them is reported to the core ([`Input::ControlStalled`]), which closes its tunnel.
#![allow(clippy::disallowed_methods)] // IO shell: the node's event loop spawns tasks and reads the clock

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipnet::Ipv6Net;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::{debug, info, warn};

use super::control_api::{RegistryHealth, Shared};
use super::core::{
    Action, Input, InstallError, MacKeyBytes, NodeCore, Now, Renewal, SecretBytes, TunnelId,
    TunnelInfo,
};
use super::datapath::DataPath;
use crate::identity;
use crate::mesh::babel::time::Time;
use crate::mesh::lan_discovery::LanPeers;
use crate::mesh::peers::PeerCache;
use crate::mesh::tunnels::control::{ControlMsg, PeerAddr};
use crate::mesh::tunnels::{CloseCode, ControlStream, Tunnel, TunnelEndpoint, TunnelError};
use crate::params::SignedParams;
use crate::registry_client::{ClientError, NodeKey, RegistryClient};

/// Events queued for the loop.
pub(super) const EVENT_QUEUE: usize = 4096;
/// Control messages queued for one neighbour.
pub(super) const CONTROL_QUEUE: usize = 64;
/// How often the tunnels' RTTs are read into the core.
const RTT_SAMPLE: Duration = Duration::from_millis(500);

const MAC_CACHE: &str = "mac-keys.json";

/// What reaches the shell's loop.
pub(super) enum ShellEvent {
    /// An input for the core as it is.
    Input(Input),
    /// A Babel packet, holding its tunnel's budget until the core has it.
    Babel {
        tunnel: TunnelId,
        bytes: Vec<u8>,
        _permit: OwnedSemaphorePermit,
    },
    /// A tunnel finished its handshake and hello (dialled or accepted).
    Established(Box<Tunnel>),
    /// The host's network changed (`roam_io`): its addresses now.
    Network(Vec<std::net::IpAddr>),
}

/// The registry side of the shell: a client that follows certificate renewals.
pub(super) struct Registry {
    pub(super) client: Arc<ArcSwap<RegistryClient>>,
    pub(super) url: String,
    pub(super) ca_der: Vec<u8>,
    pub(super) key: Arc<NodeKey>,
}

/// A live tunnel as the shell holds it.
struct Live {
    link: crate::mesh::tunnels::TunnelLink,
    /// The node at its other end.
    peer: ipnet::Ipv6Net,
    /// `None` while the core holds the tunnel (control stream only).
    iface: Option<crate::mesh::babel::IfaceId>,
    ctl: mpsc::Sender<ControlMsg>,
    /// The neighbour's address as last told to the core (QUIC may move it).
    remote: std::net::SocketAddr,
}

pub(super) struct Shell {
    pub(super) core: NodeCore,
    pub(super) base: Instant,
    pub(super) dir: PathBuf,
    pub(super) endpoint: Arc<TunnelEndpoint>,
    pub(super) registry: Registry,
    pub(super) lan: LanPeers,
    pub(super) data: DataPath,
    pub(super) shared: Arc<Shared>,
    pub(super) tx: mpsc::Sender<ShellEvent>,
    pub(super) next_id: u64,
    pub(super) pending: HashMap<TunnelId, Tunnel>,
    live: HashMap<TunnelId, Live>,
    /// Inputs the shell produced itself while executing actions (handled next).
    follow_up: VecDeque<Input>,
    stop: Option<Option<String>>,
    /// Punch signals through the mesh (`signal.rs`).
    signals: super::signal::Signals,
}

impl Shell {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        core: NodeCore,
        base: Instant,
        dir: PathBuf,
        endpoint: Arc<TunnelEndpoint>,
        registry: Registry,
        lan: LanPeers,
        data: DataPath,
        shared: Arc<Shared>,
        tx: mpsc::Sender<ShellEvent>,
    ) -> Shell {
        let signals = super::signal::Signals::new(identity::node_address(&core.prefix()));
        Shell {
            core,
            base,
            dir,
            endpoint,
            registry,
            lan,
            data,
            shared,
            tx,
            next_id: 0,
            pending: HashMap::new(),
            live: HashMap::new(),
            follow_up: VecDeque::new(),
            stop: None,
            signals,
        }
    }

    fn now(&self) -> Now {
        Now {
            time: Time::from_millis(
                u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX),
            ),
            unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }

    /// Runs until the core says stop (or every sender is gone); returns the core's reason.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<ShellEvent>) -> anyhow::Result<()> {
        let mut rtt_tick = tokio::time::interval(RTT_SAMPLE);
        self.execute();
        while self.stop.is_none() {
            let deadline = match self.core.poll_timeout() {
                Some(t) => self.base + Duration::from_millis(t.as_millis()),
                None => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    self.event(ev);
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
                _ = rtt_tick.tick() => {
                    self.signals.ensure(&self.tx);
                    let now = self.now();
                    for (id, l) in &mut self.live {
                        self.core.handle(now, Input::Rtt { tunnel: *id, rtt: l.link.rtt() });
                        let remote = l.link.remote_address();
                        if remote != l.remote {
                            l.remote = remote;
                            self.core.handle(now, Input::PathMoved { tunnel: *id, remote });
                        }
                    }
                }
            }
            self.execute();
            if let Some(s) = self.core.take_snapshot() {
                self.shared.set_snapshot(s);
            }
        }
        // Clean shutdown: retract our routes, let them leave, close tunnels.
        let now = self.now();
        self.core.begin_shutdown(now);
        self.execute();
        tokio::time::sleep(self.core.linger()).await;
        self.core.finish_shutdown();
        self.execute();
        for (_, t) in self.pending.drain() {
            CloseCode::Shutdown.close(&t.conn);
        }
        self.endpoint.close();
        // Subnet routes into the TUN go with the device, but not with a persistent one.
        if !self.data.subnets.load().via.is_empty() {
            self.subnet_routes(super::core::SubnetRoutes::default());
        }
        info!("node stopped");
        match self.stop.flatten() {
            Some(msg) => Err(anyhow::anyhow!(msg)),
            None => Ok(()),
        }
    }

    fn event(&mut self, ev: ShellEvent) {
        let now = self.now();
        match ev {
            ShellEvent::Input(input) => {
                if let Input::TunnelDown { tunnel, .. } = &input {
                    self.forget(*tunnel);
                }
                self.core.handle(now, input);
            }
            ShellEvent::Babel { tunnel, bytes, .. } => {
                self.core.handle(now, Input::Babel { tunnel, bytes });
            }
            ShellEvent::Established(t) => {
                self.next_id += 1;
                let tunnel = TunnelId(self.next_id);
                let info = TunnelInfo {
                    peer_prefix: t.peer_prefix,
                    peer_serial: t.peer_serial.clone(),
                    peer_not_after: t.peer_not_after,
                    initiated: t.initiated,
                    hello: t.peer_hello.clone(),
                    remote: t.conn.remote_address(),
                    peer_cert: t.peer_cert.clone(),
                };
                self.pending.insert(tunnel, *t);
                self.core.handle(now, Input::TunnelUp { tunnel, info });
                // the core answers a TunnelUp with Activate or Close, except while stopping
                self.execute();
                if let Some(t) = self.pending.remove(&tunnel) {
                    CloseCode::Shutdown.close(&t.conn);
                }
            }
            ShellEvent::Network(addrs) => self.network_changed(now, addrs),
        }
    }

    /// The host's network changed: the tunnels stranded on a gone address are named, the
    /// endpoint leaves an address the host no longer has, and the core decides the rest.
    fn network_changed(&mut self, now: Now, addrs: Vec<std::net::IpAddr>) {
        let mut stranded: Vec<TunnelId> = self
            .live
            .iter()
            .filter(|(_, l)| super::core::is_stranded(l.link.local_ip(), &addrs))
            .map(|(id, _)| *id)
            .collect();
        stranded.sort();
        if let Ok(bound) = self.endpoint.local_addr()
            && let Some(to) = super::core::rebind_to(bound, &addrs)
        {
            match self.endpoint.rebind(to) {
                Ok(()) => {
                    info!(from = %bound, %to, "the tunnel socket's address is gone: it listens on every address now")
                }
                Err(e) => {
                    warn!(from = %bound, %to, error = %e, "the tunnel socket's address is gone and it cannot move")
                }
            }
        }
        self.core
            .handle(now, Input::NetworkChanged { addrs, stranded });
    }

    fn forget(&mut self, tunnel: TunnelId) {
        self.data.book.close(tunnel);
        if let Some(Live {
            iface: Some(iface), ..
        }) = self.live.remove(&tunnel)
            // a duplicate that replaced this tunnel carries the interface on
            && !self.live.values().any(|l| l.iface == Some(iface))
        {
            let mut map = (**self.data.table.load()).clone();
            map.remove(&iface);
            self.data.table.store(Arc::new(map));
        }
    }

    /// Executes the core's actions, and feeds back what executing them produced.
    fn execute(&mut self) {
        loop {
            while let Some(a) = self.core.poll_action() {
                self.action(a);
            }
            let Some(input) = self.follow_up.pop_front() else {
                break;
            };
            let now = self.now();
            self.core.handle(now, input);
        }
    }

    fn spawn_input<F>(&self, f: F)
    where
        F: std::future::Future<Output = Option<Input>> + Send + 'static,
    {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            if let Some(input) = f.await {
                let _ = tx.send(ShellEvent::Input(input)).await;
            }
        });
    }

    fn action(&mut self, a: Action) {
        match a {
            Action::Hold { tunnel } => self.hold(tunnel),
            Action::Activate { tunnel, iface } => self.activate(tunnel, iface),
            Action::Close { tunnel, code } => {
                if let Some(t) = self.pending.remove(&tunnel) {
                    code.close(&t.conn);
                } else if let Some(l) = self.live.get(&tunnel) {
                    l.link.close(code);
                    self.forget(tunnel);
                }
            }
            Action::Dial { peer, addrs } => {
                let (endpoint, tx) = (self.endpoint.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let mut revoked = false;
                    for addr in addrs {
                        match endpoint.connect(addr, peer).await {
                            Ok(t) => {
                                let _ = tx.send(ShellEvent::Established(Box::new(t))).await;
                                return;
                            }
                            Err(e @ TunnelError::PathMtu(_)) => warn!(%peer, "dial failed: {e}"),
                            Err(e @ TunnelError::Revoked(_)) => {
                                info!(%peer, "{e}");
                                revoked = true;
                            }
                            Err(e) => debug!(%peer, %addr, error = %e, "dial failed"),
                        }
                    }
                    let failed = Input::DialFailed { peer, revoked };
                    let _ = tx.send(ShellEvent::Input(failed)).await;
                });
            }
            Action::SendSignal { to, bytes } => self.signals.send(&self.tx, to, &bytes),
            Action::Punch { peer, addrs } => {
                super::signal::punch(self.endpoint.clone(), self.tx.clone(), peer, addrs)
            }
            Action::SendBabel { tunnel, bytes } => {
                if let Some(l) = self.live.get(&tunnel)
                    && let Err(e) = l.link.send_babel(&bytes)
                {
                    debug!(%tunnel, error = %e, "Babel datagram not sent");
                }
            }
            Action::SendControl { tunnel, msg } => {
                if let Some(l) = self.live.get(&tunnel)
                    && let Err(mpsc::error::TrySendError::Full(_)) = l.ctl.try_send(msg)
                {
                    self.follow_up.push_back(Input::ControlStalled(tunnel));
                }
            }
            Action::FetchParams => {
                let (client, shared) = (self.registry.client.load_full(), self.shared.clone());
                self.spawn_input(async move {
                    let (signed, crl) = fetch_params_and_crl(&client, Some(&shared.registry)).await;
                    Some(Input::Offer {
                        signed,
                        crl,
                        from: None,
                    })
                });
            }
            Action::FetchKeys => {
                let (client, dir) = (self.registry.client.load_full(), self.dir.clone());
                let shared = self.shared.clone();
                self.spawn_input(async move {
                    Some(Input::KeyBytes(
                        fetch_key_bytes(&client, &dir, Some(&shared.registry)).await,
                    ))
                });
            }
            Action::ReportEndpoints(endpoints) => {
                let (client, shared) = (self.registry.client.load_full(), self.shared.clone());
                self.spawn_input(async move {
                    let r = client
                        .report_endpoints(&endpoints, crate::params::PROTOCOL_VERSION)
                        .await;
                    shared.registry.record(&r, unix_now());
                    match r {
                        Ok(()) => debug!(?endpoints, "endpoints reported to the registry"),
                        Err(e) => {
                            warn!(error = %e, "cannot report this node's endpoints to the registry")
                        }
                    }
                    None
                });
            }
            Action::FetchBootstrap => {
                let (client, shared) = (self.registry.client.load_full(), self.shared.clone());
                self.spawn_input(async move {
                    let r = client.bootstrap().await;
                    shared.registry.record(&r, unix_now());
                    match r {
                        Ok(Some(b)) => {
                            let mut peers: Vec<PeerAddr> = b
                                .peers
                                .into_iter()
                                .map(|p| PeerAddr {
                                    prefix: p.prefix,
                                    endpoints: p.endpoints,
                                    country: None,
                                })
                                .collect();
                            if peers.is_empty() {
                                // a registry of the first protocol version: one peer
                                peers.push(PeerAddr {
                                    prefix: b.prefix,
                                    endpoints: b.endpoints,
                                    country: None,
                                });
                            }
                            info!(
                                peer = %b.prefix,
                                peers = peers.len(),
                                live = b.live,
                                "bootstrap peers from the registry"
                            );
                            Some(Input::Peers(peers))
                        }
                        Ok(None) => {
                            debug!("the registry knows no other live node yet");
                            None
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot ask the registry for a bootstrap peer");
                            None
                        }
                    }
                });
            }
            Action::Renew => {
                let (client, key) = (self.registry.client.load_full(), self.registry.key.clone());
                let shared = self.shared.clone();
                self.spawn_input(async move {
                    let r = client.renew(&key).await;
                    shared.registry.record(&r, unix_now());
                    let r = r.and_then(|c| {
                        let info = identity::cert_info(&c.cert_der)
                            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
                        Ok(Renewal {
                            prefix: c.prefix,
                            serial: c.serial,
                            not_before: info.not_before,
                            not_after: c.not_after,
                            cert_der: c.cert_der,
                            signed_params: c.signed_params,
                        })
                    });
                    Some(Input::Renewed(r))
                });
            }
            Action::InstallCertificate { cert_der } => {
                let r = self.install(&cert_der);
                self.follow_up.push_back(Input::CertificateInstalled(r));
            }
            Action::SaveParams { signed, crl } => {
                if let Err(e) = crate::state::save_params(&self.dir, &signed, crl.as_deref()) {
                    warn!(error = %e, "cannot store the new parameters");
                }
            }
            Action::SavePeerCache(json) => {
                if let Err(e) =
                    crate::fsutil::write_atomic(&PeerCache::path(&self.dir), &json, 0o600)
                {
                    warn!(error = %e, "cannot save the peer cache");
                }
            }
            Action::SetRevoked(set) => {
                // Sealed sessions end with the tunnels: same CRL, same moment.
                self.data.seal.set_revoked(set.clone(), unix_now());
                self.endpoint.trust().set_revoked(set)
            }
            Action::SetHello {
                hello,
                min_protocol,
            } => self.endpoint.set_hello(hello, min_protocol),
            Action::LanAuth(auth) => self.lan.set_auth(*auth),
            Action::LanPace { hello, active } => {
                self.lan.set_hello(hello);
                self.lan.set_active(active);
            }
            Action::TunWithdraw => {
                if let Err(e) = self.data.tun.withdraw() {
                    warn!(error = %e, "cannot remove the node address from the TUN device");
                }
            }
            Action::TunRestore => {
                if let Err(e) = self.data.tun.restore() {
                    warn!(error = %e, "cannot put the node address back on the TUN device");
                }
            }
            Action::SubnetRoutes(r) => self.subnet_routes(r),
            Action::Stop { error } => self.stop = Some(error),
        }
    }

    /// New subnet routes (issue 15): the data path learns their owners and the grants
    /// first, then the OS routes the new prefixes into the TUN and forgets the old ones.
    fn subnet_routes(&mut self, r: super::core::SubnetRoutes) {
        self.data.seal.set_subnets(r.granted.clone());
        let old = self.data.subnets.load_full();
        let gone: Vec<Ipv6Net> = old
            .via
            .iter()
            .filter(|(p, _)| !r.via.iter().any(|(q, _)| q == p))
            .map(|(p, _)| *p)
            .collect();
        let new: Vec<Ipv6Net> = r
            .via
            .iter()
            .filter(|(p, _)| !old.via.iter().any(|(q, _)| q == p))
            .map(|(p, _)| *p)
            .collect();
        self.data
            .subnets
            .store(Arc::new(crate::mesh::seal::path::Subnets {
                own: old.own.clone(),
                granted: r.granted,
                via: r.via,
                exit: r.exit,
                v4: r.v4.clone(),
                own_v4: old.own_v4.clone(),
                pinned_exit: old.pinned_exit,
            }));
        // IPv4 subnets behind other nodes (the /32s of the range are routed with it)
        let range = self.core.ipv4_range();
        let outside = |p: &ipnet::Ipv4Net| !range.is_some_and(|r| r.contains(p));
        for (p, add) in
            r.v4.iter()
                .map(|(p, _)| *p)
                .filter(|p| outside(p) && !old.v4.iter().any(|(q, _)| q == p))
                .map(|p| (p, true))
                .chain(
                    old.v4
                        .iter()
                        .map(|(p, _)| *p)
                        .filter(|p| outside(p) && !r.v4.iter().any(|(q, _)| q == p))
                        .map(|p| (p, false)),
                )
        {
            match self.data.tun.route_v4(p, add) {
                Ok(()) => info!(prefix = %p, add, "IPv4 subnet route into the TUN device"),
                Err(e) => {
                    warn!(prefix = %p, add, error = %e, "cannot change the route of an IPv4 subnet behind another node")
                }
            }
        }
        for (p, add) in new
            .into_iter()
            .map(|p| (p, true))
            .chain(gone.into_iter().map(|p| (p, false)))
        {
            match self.data.tun.route_v6(p, add) {
                Ok(()) => info!(prefix = %p, add, "subnet route into the TUN device"),
                Err(e) => {
                    warn!(prefix = %p, add, error = %e, "cannot change the route of a subnet behind another node")
                }
            }
        }
    }

    /// Puts a tunnel the core accepted to work: data path table, control stream tasks,
    /// datagram reader.
    /// Starts a tunnel's control stream only (no Babel, no data): the core holds it.
    fn hold(&mut self, tunnel: TunnelId) {
        let Some(t) = self.pending.remove(&tunnel) else {
            return;
        };
        let peer = t.peer_prefix;
        let (link, ctl) = t.split();
        self.data.book.open(tunnel, peer, link.traffic().clone());
        let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
        spawn_control_tasks(tunnel, ctl, ctl_rx, self.tx.clone());
        // Nobody reads its datagrams yet: report its end (a second report from the data
        // reader after activation is ignored by the core).
        let (watched, tx) = (link.clone(), self.tx.clone());
        tokio::spawn(async move {
            let code = CloseCode::from_error(&watched.closed().await);
            let _ = tx
                .send(ShellEvent::Input(Input::TunnelDown { tunnel, code }))
                .await;
        });
        let remote = link.remote_address();
        self.live.insert(
            tunnel,
            Live {
                link,
                peer,
                iface: None,
                ctl: ctl_tx,
                remote,
            },
        );
    }

    fn activate(&mut self, tunnel: TunnelId, iface: crate::mesh::babel::IfaceId) {
        if let Some(l) = self.live.get_mut(&tunnel)
            && l.iface.is_none()
        {
            // a held tunnel released
            l.iface = Some(iface);
            let (link, peer) = (l.link.clone(), l.peer);
            self.start_data(tunnel, iface, link, peer);
            return;
        }
        let Some(t) = self.pending.remove(&tunnel) else {
            return;
        };
        let peer = t.peer_prefix;
        let (link, ctl) = t.split();
        self.data.book.open(tunnel, peer, link.traffic().clone());
        let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
        spawn_control_tasks(tunnel, ctl, ctl_rx, self.tx.clone());
        self.start_data(tunnel, iface, link.clone(), peer);
        let remote = link.remote_address();
        self.live.insert(
            tunnel,
            Live {
                link,
                peer,
                iface: Some(iface),
                ctl: ctl_tx,
                remote,
            },
        );
    }

    /// The tunnel carries traffic: a next hop of the FIB, its datagrams read.
    fn start_data(
        &mut self,
        tunnel: TunnelId,
        iface: crate::mesh::babel::IfaceId,
        link: crate::mesh::tunnels::TunnelLink,
        peer: ipnet::Ipv6Net,
    ) {
        let mut map = (**self.data.table.load()).clone();
        map.insert(
            iface,
            super::datapath::Hop {
                link: link.clone(),
                peer,
            },
        );
        self.data.table.store(Arc::new(map));
        tokio::spawn(
            self.data
                .clone()
                .run_tunnel_reader(tunnel, link, peer, self.tx.clone()),
        );
    }

    /// Stores a renewed certificate and switches the endpoint and the registry client to it.
    fn install(&self, cert_der: &[u8]) -> Result<(), InstallError> {
        let r = &self.registry;
        crate::state::save_cert(&self.dir, cert_der).map_err(|e| InstallError(e.to_string()))?;
        self.endpoint
            .set_identity(cert_der, &r.key.to_der())
            .map_err(|e| InstallError(e.to_string()))?;
        let client = RegistryClient::with_identity(&r.url, &r.ca_der, cert_der, &r.key)
            .map_err(|e| InstallError(e.to_string()))?;
        r.client.store(Arc::new(client));
        self.data.seal.set_identity(cert_der, &r.key.to_der());
        Ok(())
    }
}

/// The control stream's writer and reader tasks of one tunnel.
fn spawn_control_tasks(
    tunnel: TunnelId,
    ctl: ControlStream,
    mut ctl_rx: mpsc::Receiver<ControlMsg>,
    tx: mpsc::Sender<ShellEvent>,
) {
    let ControlStream {
        mut send,
        mut recv,
        mut decoder,
    } = ctl;
    tokio::spawn(async move {
        while let Some(m) = ctl_rx.recv().await {
            if send
                .write_all(&crate::mesh::tunnels::control::encode(&m))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            loop {
                match decoder.next_message() {
                    Ok(Some(msg)) => {
                        // waits for room: a peer that floods its control stream is slowed
                        // down by QUIC flow control, not buffered here
                        let ev = ShellEvent::Input(Input::Control { tunnel, msg });
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(%tunnel, error = %e, "control stream broken");
                        return;
                    }
                }
            }
            match recv.read(&mut buf).await {
                Ok(Some(n)) => decoder.push(&buf[..n]),
                _ => return,
            }
        }
    });
}

/// MAC key bytes from the registry (written to the cache), or from the cache when the
/// registry cannot answer.
pub(super) async fn fetch_key_bytes(
    client: &RegistryClient,
    dir: &std::path::Path,
    health: Option<&RegistryHealth>,
) -> MacKeyBytes {
    let r = client.mac_keys().await;
    if let Some(h) = health {
        h.record(&r, unix_now());
    }
    match r {
        Ok(resp) => {
            let keys: MacKeyBytes = resp
                .keys
                .into_iter()
                .filter_map(|k| Some((k.id, SecretBytes::new(hex::decode(k.key).ok()?))))
                .collect();
            let cache: Vec<(String, String)> = keys
                .iter()
                .map(|(i, k)| (i.clone(), hex::encode(k.expose())))
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
                .filter_map(|(i, k)| Some((i, SecretBytes::new(hex::decode(k).ok()?))))
                .collect()
        }
    }
}

/// The registry's current parameters and CRL (the core verifies both before use).
pub(super) async fn fetch_params_and_crl(
    client: &RegistryClient,
    health: Option<&RegistryHealth>,
) -> (Option<SignedParams>, Option<Vec<u8>>) {
    let r = client.params().await;
    if let Some(h) = health {
        h.record(&r, unix_now());
    }
    let signed = match r {
        Ok((_, signed)) => Some(signed),
        Err(e) => {
            warn!(error = %e, "cannot fetch the network parameters from the registry");
            None
        }
    };
    let r = client.crl().await;
    if let Some(h) = health {
        h.record(&r, unix_now());
    }
    let crl = match r {
        Ok(d) => Some(d),
        Err(e) => {
            warn!(error = %e, "cannot fetch the CRL from the registry");
            None
        }
    };
    (signed, crl)
}

/// The wall clock, Unix seconds (for the control API's registry record).
pub(super) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
