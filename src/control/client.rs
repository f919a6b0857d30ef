//! The CLI's side of the control API.

#![allow(clippy::disallowed_methods)] // IO shell: drives the HTTP connection on the control socket in a task

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::{ActionReply, Peer, Route, Status};

/// Why the node cannot be asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlClientError {
    /// Nothing answers on the socket.
    #[error("no node is running for this state directory (nothing answers on {0})")]
    NotRunning(PathBuf),
    /// Permission denied on the socket.
    #[error("no permission to talk to the node on {0} (run as root or join the re6mesh group)")]
    Permission(PathBuf),
    /// The node answered something unusable.
    #[error("the node gave an invalid answer: {0}")]
    BadAnswer(String),
}

/// A client for the control endpoint of a state directory (`<dir>/control.sock`; a named
/// pipe on Windows).
pub struct ControlClient {
    path: PathBuf,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl ControlClient {
    /// A client for the node of state directory `dir`.
    pub fn new(dir: &Path) -> ControlClient {
        ControlClient {
            path: crate::platform::control_socket::endpoint(dir),
        }
    }

    /// A client for the control socket at `path` (e.g. `mesh babel run --control PATH`).
    pub fn at(path: PathBuf) -> ControlClient {
        ControlClient { path }
    }

    /// `GET uri`, decoded as JSON.
    pub async fn get<T: DeserializeOwned>(&self, uri: &str) -> Result<T, ControlClientError> {
        self.call("GET", uri).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
    ) -> Result<T, ControlClientError> {
        let stream = crate::platform::control_socket::connect(&self.path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    ControlClientError::Permission(self.path.clone())
                }
                _ => ControlClientError::NotRunning(self.path.clone()),
            })?;
        let bad = |e: String| ControlClientError::BadAnswer(e);
        let fut = async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| bad(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, "localhost")
                .body(Full::new(Bytes::new()))
                .map_err(|e| bad(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| bad(e.to_string()))?;
            let body = Limited::new(resp.into_body(), 16 << 20)
                .collect()
                .await
                .map_err(|e| bad(e.to_string()))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| bad("timed out".into()))?
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ControlClientError> {
        self.call("GET", "/v1/status").await
    }

    /// `GET /v1/peers`.
    pub async fn peers(&self) -> Result<Vec<Peer>, ControlClientError> {
        self.call("GET", "/v1/peers").await
    }

    /// `GET /v1/routes`.
    pub async fn routes(&self) -> Result<Vec<Route>, ControlClientError> {
        self.call("GET", "/v1/routes").await
    }

    /// `POST /v1/up|down|exit`.
    pub async fn action(&self, what: &str) -> Result<ActionReply, ControlClientError> {
        self.call("POST", &format!("/v1/{what}")).await
    }
}
