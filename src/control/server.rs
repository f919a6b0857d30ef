//! Serves a [`ControlHandler`] on the control endpoint (a Unix socket; a named pipe on Windows).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::graph::{GraphBody, NodeObservation, Observation, build_graph};
use super::{ActionReply, ControlHandler, Peer, Route, Status};
use crate::platform::control_socket;

type H = Arc<dyn ControlHandler>;

async fn status(State(h): State<H>) -> Json<Status> {
    Json(h.status())
}

async fn peers(State(h): State<H>) -> Json<Vec<Peer>> {
    Json(h.peers())
}

async fn routes(State(h): State<H>) -> Json<Vec<Route>> {
    Json(h.routes())
}

/// The network as this node sees it (itself, its tunnels, every node it routes to), in the
/// live page's graph shape.
async fn graph(State(h): State<H>) -> Json<GraphBody> {
    let status = h.status();
    let obs = Observation {
        nodes: vec![NodeObservation {
            name: status
                .certificate
                .as_ref()
                .and_then(|c| c.name.clone())
                .unwrap_or_else(|| "this node".into()),
            prefix: Some(status.prefix.clone()),
            status: Some(status),
            peers: h.peers(),
            routes: h.routes(),
            revoked: false,
            error: None,
        }],
        links: Vec::new(),
        info: Vec::new(),
    };
    Json(build_graph(&obs))
}

fn reply(r: Result<String, String>) -> (StatusCode, Json<ActionReply>) {
    match r {
        Ok(message) => (StatusCode::OK, Json(ActionReply { ok: true, message })),
        Err(message) => (
            StatusCode::CONFLICT,
            Json(ActionReply { ok: false, message }),
        ),
    }
}

async fn up(State(h): State<H>) -> (StatusCode, Json<ActionReply>) {
    reply(h.up())
}

async fn down(State(h): State<H>) -> (StatusCode, Json<ActionReply>) {
    reply(h.down())
}

async fn exit(State(h): State<H>) -> (StatusCode, Json<ActionReply>) {
    reply(h.exit())
}

/// The control API router (also mountable on TCP for the local web page).
pub fn router(handler: H) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/routes", get(routes))
        .route("/v1/graph", get(graph))
        .route("/v1/up", post(up))
        .route("/v1/down", post(down))
        .route("/v1/exit", post(exit))
        .with_state(handler)
}

/// A bound control endpoint ([`crate::platform::control_socket`]: a Unix socket, a named
/// pipe on Windows); a socket file is removed when the server ends or is dropped.
pub struct ControlServer {
    listener: control_socket::Listener,
    path: PathBuf,
}

/// Why the control socket cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum ControlBindError {
    /// Another node answers on this socket.
    #[error("a node is already running for this state directory (its control socket {0} answers)")]
    InUse(PathBuf),
    /// The OS refused.
    #[error("cannot create the control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
}

impl ControlServer {
    /// Binds the control endpoint of state directory `dir` (`<dir>/control.sock`) with `mode`
    /// (0600 per-user, 0660 as a service; Unix only). A stale socket file (nobody answering)
    /// is replaced; a live one is an error.
    pub async fn bind(dir: &Path, mode: u32) -> Result<ControlServer, ControlBindError> {
        let path = control_socket::endpoint(dir);
        let listener = control_socket::Listener::bind(&path, mode)
            .await
            .map_err(|e| match e {
                control_socket::BindError::InUse => ControlBindError::InUse(path.clone()),
                control_socket::BindError::Io(source) => ControlBindError::Io {
                    path: path.clone(),
                    source,
                },
            })?;
        Ok(ControlServer { listener, path })
    }

    /// Hands the socket to group `gid` with mode 0660: how a node run as a service lets the
    /// members of the `re6mesh` group use `mesh status` (CONVENTIONS, node lifecycle).
    #[cfg(unix)]
    pub fn share_with_group(&self, gid: u32) -> std::io::Result<()> {
        self.listener.share_with_group(gid)
    }

    /// The socket path (the pipe name on Windows).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `shutdown` completes, then removes the socket file.
    pub async fn run(
        self,
        handler: H,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, router(handler))
            .with_graceful_shutdown(shutdown)
            .await
    }
}
