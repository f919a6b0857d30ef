//! `mesh up`: loads the state, brings the parameters up to date, opens the endpoint, the TUN
//! device and the control socket, starts the long-lived tasks and hands over to the shell.
#![allow(clippy::disallowed_methods)] // IO shell: `mesh up` set-up spawns the long-lived tasks, seeds the core

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::NodeConfig;
use super::control_api::{Handler, Shared};
use super::core::{self, CoreConfig, Input, NodeCore, Now, Snapshot};
use super::datapath::DataPath;
use super::shell::{
    EVENT_QUEUE, Registry, Shell, ShellEvent, fetch_key_bytes, fetch_params_and_crl, unix_now,
};
use crate::control::{self, ControlHandler, NodeStateName};
use crate::identity;
use crate::mesh::babel::time::Time;
use crate::mesh::lan_discovery::{self, LanAuth, LanPeers};
use crate::mesh::netstate::NetState;
use crate::mesh::peers::{DEFAULT_CAPACITY, PeerCache};
use crate::mesh::tunnels::{HelloInfo, Trust, TunnelEndpoint, TunnelError};
use crate::registry_client::{ClientError, RegistryClient, Watched};

/// Parameter watch: first and longest wait after a failed watch.
const WATCH_RETRY_MIN: Duration = Duration::from_secs(1);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(60);
/// Parameter watch: wait after the registry said it holds as many watches as it allows.
const WATCH_BUSY_RETRY: Duration = Duration::from_secs(600);
/// The longest a registry's Retry-After keeps the watch away.
const WATCH_BUSY_MAX: Duration = Duration::from_secs(3600);

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
    let (mut net, crl_err) =
        NetState::with_stored_crl(st.ca_der.clone(), st.signed.clone(), st.crl_der.as_deref())?;
    if let Some(e) = crl_err {
        warn!(error = %e, "the stored CRL is unusable; waiting for a fresh one");
    }
    let health = super::control_api::RegistryHealth::new(&st.facts.registry_url);
    let (signed, crl) = fetch_params_and_crl(&client.load(), Some(&health)).await;
    match net.offer(signed.as_ref(), crl.as_deref()) {
        Ok(a) if a.any() => {
            if let Err(e) =
                crate::state::save_params(&cfg.state_dir, net.signed(), net.crl_to_store())
            {
                warn!(error = %e, "cannot store the new parameters");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "the registry's parameters or CRL were refused"),
    }
    let params = net.params().clone();
    if let Some(msg) = core::protocol_too_old(&params) {
        anyhow::bail!(msg);
    }
    let keys = fetch_key_bytes(&client.load(), &cfg.state_dir, Some(&health)).await;
    let mac = core::mac_keys(&params, &keys);
    if params.mac.sign.is_some() && mac.sign.is_none() {
        warn!(
            "the network signs Babel packets but this node has no key yet; routing waits for the registry"
        );
    }

    // An exit announces `::/0 from` the network only with the registry's grant: without
    // it every other node would refuse the route.
    if cfg.exit.is_some()
        && !params
            .routes
            .iter()
            .any(|g| g.kind == crate::params::GrantKind::Exit && g.node == prefix)
    {
        anyhow::bail!(
            "this node ({prefix}) is not authorised as an exit: on the registry, run \
             `mesh registry authorize {prefix} exit ::/0` (then start it again)"
        );
    }
    if let Some(super::exit::UseExit::Node(e)) = cfg.use_exit
        && !params
            .routes
            .iter()
            .any(|g| g.kind == crate::params::GrantKind::Exit && g.node == e)
    {
        warn!(exit = %e, "--use-exit names a node the registry has not authorised as an exit (yet)");
    }

    let trust = Trust::new(&st.ca_der)?;
    trust.set_revoked(net.revoked().clone());
    let revoked = net.revoked().clone();
    let endpoint = Arc::new(
        TunnelEndpoint::bind_marked(
            cfg.listen,
            cfg.use_exit.map(|_| super::exit::FWMARK),
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
            observed: None,
        },
        params.min_protocol,
    );
    let tun = Arc::new(crate::tun::Tun::open(
        &cfg.tun_name,
        me,
        params.network,
        cfg.tun_mtu,
    )?);
    // IPv4 over the mesh (issue 15): the address the certificate names, when the network
    // has an IPv4 range that holds it; the range is routed into the TUN with it.
    let my_ipv4 = info
        .ipv4
        .filter(|a| params.ipv4.is_some_and(|r| r.contains(a)));
    if let (Some(a), Some(range)) = (my_ipv4, params.ipv4) {
        match tun.add_ipv4(a, range) {
            Ok(()) => info!(address = %a, %range, "IPv4 over the mesh"),
            Err(e) => {
                warn!(address = %a, error = %e, "cannot give the TUN device its IPv4 address")
            }
        }
    }
    // Exit and use-exit: the OS side (undone when `exit_os` goes, on every way out).
    let mut exit_os = super::exit::ExitSetup::default();
    if let Some(mode) = cfg.exit {
        super::exit::start_exit(&mut exit_os, mode, params.network, tun.name())
            .map_err(anyhow::Error::msg)?;
        info!(?mode, "exit: forwarding the mesh's traffic to the uplink");
    }
    if let Some(u) = cfg.use_exit {
        super::exit::start_use_exit(&mut exit_os, tun.name(), me).map_err(anyhow::Error::msg)?;
        info!(use_exit = %u, "this host's internet traffic goes through the mesh's exit");
    }

    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let started = Instant::now();
    let babel_dropped = Arc::<std::sync::atomic::AtomicU64>::default();
    let book = Arc::new(super::traffic::TrafficBook::default());
    super::sealing::test_hook::init();
    let seal = Arc::new(super::sealing::SealPath::new(
        prefix,
        params.network,
        st.ca_der.clone(),
        revoked,
        unix_now(),
        &st.cert_der,
        &st.key.to_der(),
        started,
    )?);
    {
        // Handshakes time out, sessions age out, certificates expire: checked every second.
        let seal = seal.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                seal.tick(Instant::now(), unix_now());
            }
        });
    }
    // Port mapping on the home router (mesh::portmap): the tunnel port over IPv4, unless
    // turned off or an --endpoint says where the node is reached.
    let tunnel_port = endpoint.local_addr().map(|a| a.port()).unwrap_or(0);
    let map_port = cfg.port_mapping
        && cfg.endpoints.is_empty()
        && tunnel_port != 0
        && match cfg.listen.ip().to_canonical() {
            // a port the outside cannot reach through IPv4 NAT is not mapped
            std::net::IpAddr::V4(a) => !a.is_loopback(),
            std::net::IpAddr::V6(a) => a.is_unspecified(),
        };
    if !cfg.port_mapping {
        info!("port mapping off (--no-port-mapping)");
    } else if !cfg.endpoints.is_empty() {
        info!("port mapping off: --endpoint says where this node is reached");
    }
    let port_view = Arc::new(if map_port {
        super::portmap_io::PortMapView::default()
    } else {
        super::portmap_io::PortMapView::off(tunnel_port)
    });
    let addresses_changed = Arc::new(tokio::sync::Notify::new());
    let shared = Arc::new(Shared {
        babel_dropped: babel_dropped.clone(),
        book: book.clone(),
        snapshot: Mutex::new(Snapshot {
            state: NodeStateName::Connecting,
            peers: vec![],
            routes: vec![],
            tunnels: 0,
            selected: 0,
            params_version: params.version,
            crl_missing: net.crl_wanted(),
            held: 0,
            counters: Default::default(),
            babel_budget: Default::default(),
            babel_origin: Default::default(),
            paths: Default::default(),
            serial: info.serial.clone(),
            not_after: info.not_after,
            name: info.name.clone(),
            exit: None,
        }),
        registry: health,
        seal: seal.clone(),
        port_mapping: port_view.clone(),
        tx: tx.clone(),
        started,
        prefix,
        network: params.network,
        ipv4: my_ipv4,
    });
    let control = control::server::ControlServer::bind(&cfg.state_dir, 0o600).await?;
    // As a service (the installers' group exists, and the node runs as root or with that
    // group, as the unit's `User=re6mesh`/`Group=re6mesh`) the group may use the socket too.
    #[cfg(unix)]
    if let Some(gid) = control::service_group_id()
        && (crate::paths::is_root() || crate::platform::privilege::effective_gid() == gid)
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
        if let Some(addr) = cfg.metrics {
            super::metrics::start(addr, h.clone()).await?;
        }
        tokio::spawn(control.run(h, async move {
            let _ = stop.changed().await;
        }));
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(ShellEvent::Input(Input::Exit)).await;
        });
    }

    // The core.
    let (cache, cache_err) = PeerCache::load(&PeerCache::path(&cfg.state_dir), DEFAULT_CAPACITY);
    if let Some(e) = cache_err
        && !e.is_missing()
    {
        warn!(error = %e, "the peer cache is unusable; starting with an empty one");
    }
    let core = NodeCore::new(
        CoreConfig {
            prefix,
            net,
            keys,
            serial: info.serial.clone(),
            name: info.name.clone(),
            not_before: info.not_before,
            not_after: info.not_after,
            static_peers: cfg.peers.clone(),
            endpoints: cfg.endpoints.clone(),
            listen_port: endpoint.local_addr().map(|a| a.port()).unwrap_or(0),
            country: cfg.country.clone(),
            babel_timers: cfg.babel_timers,
            cache,
            origin: Some(core::OriginSetup {
                cert_der: st.cert_der.clone(),
                key_pkcs8: core::SecretBytes::new(st.key.to_der()),
                exit_only: match cfg.use_exit {
                    Some(super::exit::UseExit::Node(e)) => Some(e),
                    _ => None,
                },
            }),
            advertise_routes: cfg.advertise_routes.clone(),
            advertise_routes_v4: cfg.advertise_routes_v4.clone(),
            exit: cfg.exit.is_some(),
            ipv4: my_ipv4,
        },
        rand::random(),
        Now {
            time: Time::ZERO,
            unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        },
    );
    let data = DataPath {
        prefix,
        me,
        fib: core.fib_reader(),
        table: Arc::new(ArcSwap::from_pointee(HashMap::new())),
        tun,
        babel_dropped,
        book,
        seal: seal.clone(),
        network: params.network,
        v4: Arc::new(super::datapath_v4::V4State::new(my_ipv4)),
        subnets: Arc::new(ArcSwap::from_pointee(crate::mesh::seal::path::Subnets {
            // an exit: every address outside the network is ours (the OS forwards it)
            own: cfg
                .advertise_routes
                .iter()
                .copied()
                .chain(if cfg.exit.is_some() {
                    crate::mesh::seal::path::outside(&params.network)
                } else {
                    Vec::new()
                })
                .collect(),
            own_v4: cfg.advertise_routes_v4.clone(),
            pinned_exit: match cfg.use_exit {
                Some(super::exit::UseExit::Node(e)) => Some(e),
                _ => None,
            },
            ..Default::default()
        })),
    };

    // The host's addresses, for the endpoint candidates (mesh::reach): now, then on every
    // change the OS reports (roaming: roam_io.rs).
    super::roam_io::spawn(tx.clone(), cfg.tun_name.clone(), addresses_changed.clone());
    // TUN reader: packets from local applications.
    tokio::spawn(data.clone().run_tun_reader());
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
                            let _ = tx.send(ShellEvent::Established(Box::new(t))).await;
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
    if cfg.registry_watch {
        spawn_registry_watch(
            tx.clone(),
            cfg.state_dir.clone(),
            client.clone(),
            params.version,
            shared.clone(),
        );
    }
    if let Some(period) = cfg.registry_poll {
        spawn_registry_poll(
            tx.clone(),
            cfg.state_dir.clone(),
            client.clone(),
            period,
            shared.clone(),
        );
    }

    // `--lan`: neighbours announce themselves on the LAN and get tunnels to their link-local
    // addresses (src/mesh/lan_discovery.rs).
    let timers_hello = cfg
        .babel_timers
        .map(|t| t.hello)
        .unwrap_or_else(|| Duration::from_secs(u64::from(params.hello_interval.max(1))));
    let lan = LanPeers::new(LanAuth::new(&params, mac), timers_hello);
    if !cfg.lan.is_empty() {
        let ann = lan_discovery::Announcement {
            prefix,
            port: endpoint
                .local_addr()
                .map_or(cfg.listen.port(), |a| a.port()),
        };
        let tx = tx.clone();
        let found = move |d: lan_discovery::Discovered| {
            let ev = ShellEvent::Input(Input::LanPeer {
                prefix: d.prefix,
                addr: d.addr,
            });
            if tx.try_send(ev).is_err() {
                debug!("event queue full: LAN announcement dropped");
            }
        };
        lan_discovery::start(&cfg.lan, ann, lan.pace(), lan.subscribe(), found).await?;
    }

    let registry = Registry {
        client,
        url: st.facts.registry_url.clone(),
        ca_der: st.ca_der.clone(),
        key: Arc::new(st.key),
    };
    let port_map = map_port.then(|| {
        super::portmap_io::PortMapTask::spawn(
            tunnel_port,
            tx.clone(),
            port_view.clone(),
            addresses_changed.clone(),
        )
    });
    let shell = Shell::new(
        core,
        started,
        cfg.state_dir.clone(),
        endpoint.clone(),
        registry,
        lan,
        data,
        shared,
        tx,
    );
    let result = shell.run(rx).await;
    exit_os.remove();
    if let Some(p) = port_map {
        p.stop(PORT_MAP_REMOVAL).await;
    }
    let _ = stop_tx.send(true);
    endpoint.close();
    result
}

/// Registry watch: a long poll that brings a change into the mesh within a moment.
fn spawn_registry_watch(
    tx: mpsc::Sender<ShellEvent>,
    dir: std::path::PathBuf,
    client: Arc<ArcSwap<RegistryClient>>,
    mut after: u64,
    shared: Arc<Shared>,
) {
    tokio::spawn(async move {
        let mut backoff = WATCH_RETRY_MIN;
        while !tx.is_closed() {
            let c = client.load_full();
            let r = c.watch(after).await;
            shared.registry.record(&r, unix_now());
            match r {
                Ok(Watched::Params(p, signed)) => {
                    backoff = WATCH_RETRY_MIN;
                    if p.version <= after {
                        continue;
                    }
                    after = p.version;
                    let crl = c.crl().await;
                    shared.registry.record(&crl, unix_now());
                    let crl = crl
                        .map_err(|e| warn!(error = %e, "cannot fetch the CRL from the registry"))
                        .ok();
                    if !offer_and_keys(&tx, &c, &dir, Some(signed), crl, &shared).await {
                        break;
                    }
                }
                Ok(Watched::Busy { retry_after }) => {
                    // The registry's Retry-After, within sane bounds; its absence: 10 min.
                    let wait = retry_after
                        .unwrap_or(WATCH_BUSY_RETRY)
                        .clamp(WATCH_RETRY_MIN, WATCH_BUSY_MAX);
                    info!(
                        retry_in_s = wait.as_secs(),
                        "the registry holds as many parameter watches as it allows: changes come from the neighbours and the poll"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    let wait = match &e {
                        ClientError::Refused {
                            retry_after: Some(s),
                            ..
                        } => backoff.max(Duration::from_secs(*s)).min(WATCH_BUSY_MAX),
                        _ => backoff,
                    };
                    debug!(error = %e, retry_in_s = wait.as_secs(), "parameter watch failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(WATCH_RETRY_MAX);
                }
            }
        }
    });
}

/// Registry poll: the fallback when no neighbour brings newer parameters.
fn spawn_registry_poll(
    tx: mpsc::Sender<ShellEvent>,
    dir: std::path::PathBuf,
    client: Arc<ArcSwap<RegistryClient>>,
    period: Duration,
    shared: Arc<Shared>,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let c = client.load_full();
            let (signed, crl) = fetch_params_and_crl(&c, Some(&shared.registry)).await;
            if !offer_and_keys(&tx, &c, &dir, signed, crl, &shared).await {
                break;
            }
        }
    });
}

/// Hands the registry's parameters and CRL to the core, then the MAC key bytes (fetched after,
/// so new key ids are known); false once the node is gone.
async fn offer_and_keys(
    tx: &mpsc::Sender<ShellEvent>,
    client: &RegistryClient,
    dir: &std::path::Path,
    signed: Option<crate::params::SignedParams>,
    crl: Option<Vec<u8>>,
    shared: &Shared,
) -> bool {
    let offer = Input::Offer {
        signed,
        crl,
        from: None,
    };
    if tx.send(ShellEvent::Input(offer)).await.is_err() {
        return false;
    }
    let keys = fetch_key_bytes(client, dir, Some(&shared.registry)).await;
    tx.send(ShellEvent::Input(Input::KeyBytes(keys)))
        .await
        .is_ok()
}

/// The longest the node waits at exit for the router to remove the port mapping.
const PORT_MAP_REMOVAL: Duration = Duration::from_secs(2);
