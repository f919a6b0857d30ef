//! The control socket of `mesh babel run`: the standard control API (`GET /v1/routes` with
//! the CONVENTIONS route fields, `/v1/status`, `POST /v1/exit`) plus `GET /v1/babel/stats`
//! (packet counters, neighbours), served on a Unix socket at an exact path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::control::{ControlHandler, NodeStateName, Peer, Route, Status};

/// Packet counters and neighbours, `GET /v1/babel/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Router-id (`xx:…`).
    pub router_id: String,
    /// Babel packets received (accepted or not).
    pub rx_packets: u64,
    /// Packets received per source address.
    pub rx_by_source: BTreeMap<String, u64>,
    /// Packets rejected per reason (`bad_mac`, `unsigned`, `challenged`, …).
    pub rejected: BTreeMap<String, u64>,
    /// Packets rejected per source address.
    pub rejected_by_source: BTreeMap<String, u64>,
    /// Packets sent.
    pub tx_packets: u64,
    /// Current neighbours (`addr%iface`).
    pub neighbours: Vec<String>,
}

/// What the router publishes after every input.
#[derive(Default)]
pub struct Shared {
    /// Routes as listed.
    pub routes: Vec<Route>,
    /// Counters.
    pub stats: Stats,
}

/// The router's [`ControlHandler`].
pub struct Handler {
    /// Published state.
    pub shared: Arc<Mutex<Shared>>,
    /// Notified by `POST /v1/exit`.
    pub exit: Arc<Notify>,
    /// Start time.
    pub started: Instant,
}

impl ControlHandler for Handler {
    fn status(&self) -> Status {
        let (routes, neighbours) = self
            .shared
            .lock()
            .map(|s| {
                (
                    s.routes.iter().filter(|r| r.selected && !r.local).count(),
                    s.stats.neighbours.len(),
                )
            })
            .unwrap_or_default();
        Status {
            state: if neighbours > 0 {
                NodeStateName::Up
            } else {
                NodeStateName::Connecting
            },
            prefix: String::new(),
            address: String::new(),
            network: String::new(),
            params_version: 0,
            protocol: 0,
            tunnels: neighbours,
            routes,
            uptime_secs: self.started.elapsed().as_secs(),
            error: None,
            warnings: Vec::new(),
            counters: Default::default(),
            traffic: Default::default(),
            drops: Default::default(),
            paths: Default::default(),
            certificate: None,
            registry: None,
            seal: None,
            port_mapping: None,
            exit: None,
            ipv4: None,
        }
    }

    fn peers(&self) -> Vec<Peer> {
        Vec::new()
    }

    fn routes(&self) -> Vec<Route> {
        self.shared
            .lock()
            .map(|s| s.routes.clone())
            .unwrap_or_default()
    }

    fn up(&self) -> Result<String, String> {
        Err("mesh babel run has no up/down; stop it with SIGTERM or POST /v1/exit".into())
    }

    fn down(&self) -> Result<String, String> {
        self.up()
    }

    fn exit(&self) -> Result<String, String> {
        self.exit.notify_one();
        Ok("the Babel router is exiting".into())
    }
}

async fn stats(State(h): State<Arc<Handler>>) -> Json<Stats> {
    Json(h.shared.lock().map(|s| s.stats.clone()).unwrap_or_default())
}

/// Binds `path` (mode 0600; a stale socket file is replaced, a live one is an error) and
/// serves until `shutdown`; removes the file at the end.
pub async fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another router answers on the control socket {} (stop it first)",
                path.display()
            );
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot create the control socket {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        anyhow::anyhow!(
            "cannot set the mode of the control socket {}: {e}",
            path.display()
        )
    })?;
    Ok(listener)
}

/// Serves the control API on `listener` until `shutdown`, then removes `path`.
pub async fn serve(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    handler: Arc<Handler>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = crate::control::server::router(handler.clone()).merge(
        axum::Router::new()
            .route("/v1/babel/stats", get(stats))
            .with_state(handler),
    );
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!("control socket stopped: {e}");
    }
    let _ = std::fs::remove_file(&path);
}

/// `GET uri` on the control socket at `path`, decoded as JSON.
pub async fn get_json<T: DeserializeOwned>(path: &Path, uri: &str) -> anyhow::Result<T> {
    use crate::control::client::{ControlClient, ControlClientError};
    ControlClient::at(path.to_path_buf())
        .get(uri)
        .await
        .map_err(|e| match e {
            ControlClientError::NotRunning(_) => anyhow::anyhow!(
                "no Babel router answers on {} (is `mesh babel run --control {}` running?)",
                path.display(),
                path.display()
            ),
            other => other.into(),
        })
}
