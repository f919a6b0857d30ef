//! `mesh babel run`: the sans-IO Babel engine ([`crate::mesh::babel`]) as a standalone
//! RFC 8966/8967 router on real interfaces, interoperable with babeld and BIRD.
//!
//! The IO shell owns, per interface, two UDP sockets ([`LanSocket`]: one bound to the multicast
//! group, one to the link-local address, so each packet's destination — needed by the MAC
//! pseudo-header — is known without IPV6_RECVPKTINFO), a single timer, and the kernel routes
//! ([`Netlink`]: main table, route protocol 250, stale ones flushed at start, all removed at
//! exit). A control socket ([`control`]) lists routes and counters. SIGTERM/SIGINT: the
//! engine's shutdown (wildcard retraction and a 10 ms Hello on every interface), those
//! packets sent, routes removed, exit.

#![allow(clippy::disallowed_methods)] // IO shell: the `mesh babel run` router: sockets, timers, tasks, a fresh router-id

pub mod control;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Notify, mpsc};

use crate::control::Route;
use crate::mesh::babel::{
    Config, Engine, Event, IfaceConfig, IfaceId, IfaceKind, MacKey, MacKeys, Prefix, Reject,
    RouteChange, RouteKey, Seqno, Time, Timers,
};

use self::control::{Handler, Shared};
use crate::platform::{LanSocket, Netlink};

/// What `mesh babel run` is told.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Interfaces to run Babel on.
    pub ifaces: Vec<String>,
    /// Own prefixes.
    pub announce: Vec<Prefix>,
    /// HMAC-SHA256 key (RFC 8967); `None`: no MAC (unsigned packets only).
    pub key: Option<Vec<u8>>,
    /// Hello interval.
    pub hello: Duration,
    /// Update interval.
    pub update: Duration,
    /// UDP port.
    pub port: u16,
    /// Multicast group.
    pub group: Ipv6Addr,
    /// Control socket path.
    pub control: Option<PathBuf>,
    /// State directory (router-id and seqno kept across restarts).
    pub state_dir: Option<PathBuf>,
}

/// How often the selected routes are re-installed in the kernel.
const RESYNC: Duration = Duration::from_secs(2);

struct Rx {
    iface: usize,
    src: SocketAddr,
    dst: SocketAddr,
    bytes: Vec<u8>,
}

fn reason_name(r: Reject) -> &'static str {
    match r {
        Reject::Malformed => "malformed",
        Reject::BadMac => "bad_mac",
        Reject::Unsigned => "unsigned",
        Reject::NoCounter => "no_counter",
        Reject::Replay => "replay",
        Reject::Challenged => "challenged",
        Reject::UnknownSource => "unknown_source",
    }
}

/// Router-id and seqno from `<state-dir>/babel-state.json`, or fresh ones.
#[derive(serde::Serialize, serde::Deserialize)]
struct Persisted {
    router_id: String,
    seqno: u16,
}

fn load_identity(dir: Option<&PathBuf>) -> ([u8; 8], Option<u16>) {
    let fresh = || loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] && id != [0xff; 8] {
            return id;
        }
    };
    let Some(dir) = dir else {
        return (fresh(), None);
    };
    let parsed = std::fs::read(dir.join("babel-state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Persisted>(&b).ok())
        .and_then(|p| {
            let bytes = hex::decode(p.router_id.replace(':', "")).ok()?;
            let id: [u8; 8] = bytes.try_into().ok()?;
            Some((id, p.seqno))
        });
    match parsed {
        Some((id, seqno)) => (id, Some(seqno)),
        None => (fresh(), None),
    }
}

fn save_identity(dir: Option<&PathBuf>, id: [u8; 8], seqno: Seqno) {
    let Some(dir) = dir else { return };
    let p = Persisted {
        router_id: crate::control::router_id_text(&id),
        seqno: seqno.0.wrapping_add(1),
    };
    let r = std::fs::create_dir_all(dir).and_then(|_| {
        std::fs::write(
            dir.join("babel-state.json"),
            serde_json::to_vec(&p).unwrap_or_default(),
        )
    });
    if let Err(e) = r {
        tracing::warn!("cannot save the Babel state in {}: {e}", dir.display());
    }
}

/// The source prefix of a route key, as the kernel wants it.
fn source_of(k: &RouteKey) -> Option<(IpAddr, u8)> {
    k.src.map(|s| (s.addr(), s.len()))
}

struct Router {
    engine: Engine,
    socks: Vec<LanSocket>,
    ids: Vec<IfaceId>,
    kernel: Netlink,
    installed: BTreeMap<RouteKey, (IpAddr, u32)>,
    shared: Arc<Mutex<Shared>>,
    start: Instant,
}

impl Router {
    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn index_of(&self, id: IfaceId) -> Option<usize> {
        self.ids.iter().position(|i| *i == id)
    }

    /// Drains the engine in the documented order and publishes the state.
    async fn drain(&mut self) {
        let now = self.now();
        let mut sent = 0u64;
        while let Some(t) = self.engine.poll_transmit(now) {
            let Some(i) = self.index_of(t.iface) else {
                continue;
            };
            let s = &self.socks[i];
            match s.ucast.send_to(&t.bytes, s.scoped(t.dst)).await {
                Ok(_) => sent += 1,
                Err(e) => tracing::debug!("cannot send a Babel packet on {}: {e}", s.name),
            }
        }
        while let Some(c) = self.engine.poll_route_change() {
            self.apply(c);
        }
        let mut rejects: Vec<(IpAddr, Reject)> = Vec::new();
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::NeighbourUp(n) => {
                    tracing::info!("neighbour {} up", self.neigh_name(n.iface, n.addr))
                }
                Event::NeighbourDown(n) => {
                    tracing::info!("neighbour {} down", self.neigh_name(n.iface, n.addr))
                }
                Event::ChallengeSucceeded(n) => {
                    tracing::debug!(
                        "challenge of {} succeeded",
                        self.neigh_name(n.iface, n.addr)
                    )
                }
                Event::PacketRejected { iface, src, reason } => {
                    tracing::debug!(
                        "packet from {} rejected: {}",
                        self.neigh_name(iface, src),
                        reason_name(reason)
                    );
                    rejects.push((src, reason));
                }
                // The standalone router sets no origin policy: never emitted here.
                Event::OriginUnknown { .. } => {}
            }
        }
        self.publish(sent, &rejects);
    }

    fn neigh_name(&self, iface: IfaceId, addr: IpAddr) -> String {
        match self.index_of(iface) {
            Some(i) => format!("{addr}%{}", self.socks[i].name),
            None => addr.to_string(),
        }
    }

    fn apply(&mut self, c: RouteChange) {
        match c {
            // Linux routes IPv4 by destination only: a source-specific IPv4 route (RFC 9079)
            // cannot go into its tables (IPv6 ones can: `ip -6 route … from SRC`).
            RouteChange::Added(r) | RouteChange::Changed(r)
                if r.prefix.is_source_specific() && r.prefix.addr().is_ipv4() =>
            {
                tracing::debug!("source-specific IPv4 route {} not installed", r.prefix);
            }
            RouteChange::Added(r) | RouteChange::Changed(r) => {
                let Some(i) = self.index_of(r.iface) else {
                    return;
                };
                let oif = self.socks[i].ifindex;
                match self.kernel.replace_route_from(
                    r.prefix.addr(),
                    r.prefix.len(),
                    source_of(&r.prefix),
                    r.next_hop,
                    oif,
                ) {
                    Ok(()) => {
                        tracing::info!(
                            "route {} via {}%{} metric {}",
                            r.prefix,
                            r.next_hop,
                            self.socks[i].name,
                            r.metric
                        );
                        self.installed.insert(r.prefix, (r.next_hop, oif));
                    }
                    Err(e) => tracing::warn!("cannot install the route to {}: {e}", r.prefix),
                }
            }
            RouteChange::Removed(p) => {
                if self.installed.remove(&p).is_some() {
                    tracing::info!("route {p} removed");
                    if let Err(e) = self
                        .kernel
                        .delete_route_from(p.addr(), p.len(), source_of(&p))
                    {
                        tracing::warn!("cannot remove the route to {p}: {e}");
                    }
                }
            }
        }
    }

    fn publish(&mut self, sent: u64, rejects: &[(IpAddr, Reject)]) {
        let routes: Vec<Route> = self
            .engine
            .routes()
            .into_iter()
            .map(|r| Route {
                prefix: r.prefix.to_string(),
                next_hop: r.next_hop.map(|a| a.to_string()).unwrap_or_default(),
                iface: r.iface,
                metric: r.metric,
                router_id: crate::control::router_id_text(&r.router_id.0),
                seqno: r.seqno.0,
                selected: r.selected,
                local: r.local,
                // next hops are routers' link-local addresses: "direct" means nothing here
                path: String::new(),
                name: None,
                origin: None,
            })
            .collect();
        let neighbours: Vec<String> = self
            .engine
            .neighbours()
            .into_iter()
            .map(|n| format!("{}%{}", n.id.addr, n.iface))
            .collect();
        if let Ok(mut s) = self.shared.lock() {
            s.routes = routes;
            s.stats.tx_packets += sent;
            s.stats.neighbours = neighbours;
            for (src, reason) in rejects {
                *s.stats
                    .rejected
                    .entry(reason_name(*reason).to_owned())
                    .or_default() += 1;
                *s.stats
                    .rejected_by_source
                    .entry(src.to_string())
                    .or_default() += 1;
            }
        }
    }

    fn count_rx(&self, src: IpAddr) {
        if let Ok(mut s) = self.shared.lock() {
            s.stats.rx_packets += 1;
            *s.stats.rx_by_source.entry(src.to_string()).or_default() += 1;
        }
    }

    /// Re-installs every selected route: the kernel deletes routes through an interface that
    /// goes down, and a short flap need not change the selection.
    fn resync_routes(&mut self) {
        for (p, (nh, oif)) in &self.installed {
            if let Err(e) =
                self.kernel
                    .replace_route_from(p.addr(), p.len(), source_of(p), *nh, *oif)
            {
                tracing::debug!("cannot re-install the route to {p}: {e}");
            }
        }
    }

    fn remove_all_routes(&mut self) {
        for (p, _) in std::mem::take(&mut self.installed) {
            if let Err(e) = self
                .kernel
                .delete_route_from(p.addr(), p.len(), source_of(&p))
            {
                tracing::warn!("cannot remove the route to {p}: {e}");
            }
        }
        if let Err(e) = self.kernel.flush_ours() {
            tracing::warn!("cannot flush the kernel routes of protocol 250: {e}");
        }
    }
}

/// Runs the router until SIGTERM, SIGINT or `POST /v1/exit`.
pub async fn run(cfg: RouterConfig) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if cfg.ifaces.is_empty() {
        anyhow::bail!("no interface given (use --iface IF)");
    }
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut kernel = Netlink::open().map_err(|e| anyhow::anyhow!("cannot open rtnetlink: {e}"))?;
    // Deleting a route that does not exist needs CAP_NET_ADMIN all the same: a cheap probe.
    if let Ok(probe) = "100::/128".parse::<Prefix>()
        && let Err(e) = kernel.delete_route(probe.addr(), probe.len())
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        anyhow::bail!("no permission to change kernel routes (run as root or with CAP_NET_ADMIN)");
    }
    if let Some(dir) = &cfg.state_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot create the state directory {}: {e}", dir.display())
        })?;
    }
    // Bound first, so a second router on the same socket fails before sending anything.
    let listener = match &cfg.control {
        Some(path) => Some(control::bind(path).await?),
        None => None,
    };
    let mut socks = Vec::new();
    for name in &cfg.ifaces {
        socks.push(LanSocket::open(name, cfg.port, cfg.group, &mut kernel).await?);
    }
    // Only now (the port is ours: no other router runs here) are stale routes flushed.
    let flushed = kernel.flush_ours().map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!(
                "no permission to change kernel routes (run as root or with CAP_NET_ADMIN)"
            )
        }
        _ => anyhow::anyhow!("cannot flush stale kernel routes of protocol 250: {e}"),
    })?;
    if flushed > 0 {
        tracing::info!("flushed {flushed} stale routes of protocol 250");
    }

    let (router_id, seqno) = load_identity(cfg.state_dir.as_ref());
    let start = Instant::now();
    let seed: [u8; 32] = rand::random();
    let mut engine = Engine::new(Config::default(), router_id, seed, Time::ZERO);
    if let Some(k) = &cfg.key {
        engine.set_mac_keys(MacKeys::sign(MacKey::new(1, k.clone())));
    }
    if let Some(s) = seqno {
        engine.set_seqno(Time::ZERO, Seqno(s));
    }
    let shared = Arc::new(Mutex::new(Shared::default()));
    if let Ok(mut s) = shared.lock() {
        s.stats.router_id = crate::control::router_id_text(&router_id);
    }
    let mut router = Router {
        engine,
        socks,
        ids: Vec::new(),
        kernel,
        installed: BTreeMap::new(),
        shared: shared.clone(),
        start,
    };
    for p in &cfg.announce {
        let now = router.now();
        router.engine.originate(now, *p);
    }
    let timers = Timers {
        hello: cfg.hello,
        update: cfg.update,
    };
    for i in 0..router.socks.len() {
        let s = &router.socks[i];
        let ic = IfaceConfig {
            name: s.name.clone(),
            kind: IfaceKind::Lan {
                link_local: s.link_local,
                ipv4: s.ipv4,
                lossy: false,
            },
            timers,
            max_packet: 1452,
            timestamps: false,
            acks: false,
        };
        let now = router.now();
        let id = router.engine.add_interface(now, ic);
        router.ids.push(id);
        tracing::info!(
            "Babel on {} ({}, port {}, group {})",
            s.name,
            s.link_local,
            s.port,
            s.group
        );
    }
    tracing::info!(
        "router-id {}, announcing {}",
        crate::control::router_id_text(&router_id),
        cfg.announce
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    router.drain().await;

    // Readers: one task per socket, all into one channel.
    let (tx, mut rx) = mpsc::channel::<Rx>(1024);
    let mut readers = Vec::new();
    for (i, s) in router.socks.iter().enumerate() {
        for (sock, dst) in [
            (
                s.mcast.clone(),
                SocketAddr::new(IpAddr::V6(s.group), s.port),
            ),
            (
                s.ucast.clone(),
                SocketAddr::new(IpAddr::V6(s.link_local), s.port),
            ),
        ] {
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok((n, src)) = sock.recv_from(&mut buf).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let src = SocketAddr::new(src.ip(), src.port());
                    let rx = Rx {
                        iface: i,
                        src,
                        dst,
                        bytes: buf[..n].to_vec(),
                    };
                    if tx.send(rx).await.is_err() {
                        return;
                    }
                }
            }));
        }
    }
    drop(tx);

    let exit = Arc::new(Notify::new());
    let stop_control = Arc::new(Notify::new());
    let control_task = match &cfg.control {
        Some(path) => {
            let Some(listener) = listener else {
                anyhow::bail!("the control socket {} was not bound", path.display());
            };
            let handler = Arc::new(Handler {
                shared: shared.clone(),
                exit: exit.clone(),
                started: start,
            });
            let stop = stop_control.clone();
            Some(tokio::spawn(control::serve(
                listener,
                path.clone(),
                handler,
                async move { stop.notified().await },
            )))
        }
        None => None,
    };

    let own: Vec<IpAddr> = router
        .socks
        .iter()
        .map(|s| IpAddr::V6(s.link_local))
        .collect();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        let deadline = router
            .engine
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(start + Duration::from_millis(t.as_millis())));
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rx.recv() => {
                let Some(r) = r else { break "receivers stopped" };
                // Two of our interfaces on one link hear each other: not a neighbour.
                if own.contains(&r.src.ip()) {
                    continue;
                }
                router.count_rx(r.src.ip());
                let now = router.now();
                let id = router.ids[r.iface];
                router.engine.handle_packet(now, id, r.src, r.dst, &r.bytes);
            }
            _ = sleep => {
                let now = router.now();
                router.engine.handle_timeout(now);
            }
            _ = resync.tick() => {
                router.resync_routes();
                continue;
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = exit.notified() => break "exit requested",
        }
        router.drain().await;
    };
    tracing::info!("{why}: retracting routes and exiting");
    let now = router.now();
    router.engine.shutdown(now);
    // Only the transmits matter now; route changes are superseded by removing everything.
    while let Some(t) = router.engine.poll_transmit(now) {
        if let Some(i) = router.index_of(t.iface) {
            let s = &router.socks[i];
            if let Err(e) = s.ucast.send_to(&t.bytes, s.scoped(t.dst)).await {
                tracing::debug!("cannot send the retraction on {}: {e}", s.name);
            }
        }
    }
    router.remove_all_routes();
    save_identity(cfg.state_dir.as_ref(), router_id, router.engine.seqno());
    for r in readers {
        r.abort();
    }
    stop_control.notify_one();
    if let Some(t) = control_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    Ok(())
}
