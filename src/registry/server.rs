//! The registry's HTTPS API: axum handlers behind a tokio-rustls accept loop that hands the
//! client certificate (if any) to the handlers as a request extension.
//!
//! Client certificates are optional at the TLS layer (joining has none). The TLS layer
//! checks the chain to the CA and tolerates expiry (so an expired node can be told to
//! rejoin); it does not look at the CRL — a node revoked by serial must still reach
//! `renew`. Every handler checks serial, ban, revocation and expiry itself.

#![allow(clippy::disallowed_methods)] // IO shell: the HTTPS server: tasks, blocking SQLite calls, periodic work

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::{info, warn};

use super::error::RegistryError;
use super::limits::{JoinLimiter, Limits, WatchCounts};
use super::store::Store;
use super::{Registry, files, now};
use crate::identity;
use crate::registry_api::*;

/// The client certificate of the connection a request came on, if any.
#[derive(Clone, Debug, Default)]
pub struct PeerCert(pub Option<Vec<u8>>);

/// The remote address of the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

#[derive(Clone)]
struct AppState {
    reg: Arc<Registry>,
    store: Arc<Mutex<Store>>,
    /// The newest parameters version, as last seen in the database (see [`WATCH_CHECK`]).
    version: watch::Receiver<u64>,
    /// Watches held now, in total and per node.
    watches: Arc<WatchCounts>,
    /// Anonymous joins, per source and in total.
    joins: Arc<JoinLimiter>,
}

/// How long `GET /api/v1/params/watch` holds a request before it answers with unchanged
/// parameters (below the clients' request timeout).
pub const WATCH_HOLD: Duration = Duration::from_secs(15);
/// How often the server reads the newest parameters version. The `mesh registry` commands
/// write the database directly, so the server learns of a change by looking.
pub const WATCH_CHECK: Duration = Duration::from_millis(250);
pub use super::limits::DEFAULT_MAX_WATCHERS;

/// One held watch of a node; its slot comes back when it is dropped, however the request ends.
struct WatchSlot(Arc<WatchCounts>, i64);

impl WatchSlot {
    fn take(st: &AppState, node: i64) -> Result<WatchSlot, RegistryError> {
        st.watches.take(node)?;
        Ok(WatchSlot(st.watches.clone(), node))
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// An error answer: JSON [`ErrorBody`] with the status of [`RegistryError::status_and_code`].
pub struct ApiError(RegistryError);

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.0.status_and_code();
        if status.is_server_error() && self.0.retry_after().is_none() {
            warn!(error = %self.0, "request failed");
        }
        let mut resp = (
            status,
            Json(ErrorBody {
                code: code.into(),
                error: self.0.to_string(),
            }),
        )
            .into_response();
        if let Some(secs) = self.0.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
}

fn bad_json(r: JsonRejection) -> ApiError {
    let status = r.status();
    let msg = format!("the request body is not acceptable: {}", r.body_text());
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError(RegistryError::BadRequest(format!(
            "the request body is larger than {MAX_BODY} bytes"
        )));
    }
    ApiError(RegistryError::BadRequest(msg))
}

type ApiResult<T> = Result<T, ApiError>;

async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&Registry, &mut Store) -> Result<T, RegistryError> + Send + 'static,
) -> ApiResult<T> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = st
            .store
            .lock()
            .map_err(|_| RegistryError::Internal("database lock poisoned".into()))?;
        f(&st.reg, &mut store)
    })
    .await
    .map_err(|e| ApiError(RegistryError::Internal(e.to_string())))?
    .map_err(ApiError)
}

fn peer_serial(peer: &PeerCert) -> Result<String, RegistryError> {
    let der = peer.0.as_ref().ok_or_else(|| {
        RegistryError::Unauthorized("this call needs the node's client certificate".into())
    })?;
    let info = identity::cert_info(der).map_err(|e| RegistryError::Unauthorized(e.to_string()))?;
    Ok(info.serial)
}

fn cert_response(
    reg: &Registry,
    store: &Store,
    issued: super::store::Issued,
) -> Result<CertResponse, RegistryError> {
    Ok(CertResponse {
        certificate: identity::der_to_pem(&issued.cert_der, "CERTIFICATE"),
        ca: reg.ca.cert_pem(),
        prefix: issued.prefix,
        address: identity::node_address(&issued.prefix),
        params: store.params()?.to_json(),
    })
}

async fn ca_cert(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        st.reg.ca.cert_pem(),
    )
}

async fn params(State(st): State<AppState>) -> ApiResult<Json<crate::params::SignedParamsJson>> {
    Ok(Json(blocking(&st, |_, s| s.params()).await?.to_json()))
}

#[derive(Deserialize)]
struct WatchQuery {
    after: u64,
}

/// `GET /api/v1/params/watch?after=V`: the current parameters as soon as their version is
/// above V, or after [`WATCH_HOLD`] whatever they are (a long poll). Only for nodes with a
/// valid (not revoked, not banned, not expired) certificate; at most `max_watchers` at once
/// (beyond: 503 `busy`) and `max_watchers_per_node` per node (beyond: 429 `rate_limited`).
async fn watch_params(
    State(st): State<AppState>,
    Extension(peer): Extension<PeerCert>,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> ApiResult<Json<crate::params::SignedParamsJson>> {
    let Query(q) = q.map_err(|e| {
        ApiError(RegistryError::BadRequest(format!(
            "a watch needs ?after=VERSION (a parameters version): {}",
            e.body_text()
        )))
    })?;
    let serial = peer_serial(&peer).map_err(|_| {
        RegistryError::Unauthorized(
            "a parameter watch needs a node's client certificate; poll /api/v1/params instead"
                .into(),
        )
    })?;
    let node = blocking(&st, move |_, s| s.authenticate_valid(&serial, now())).await?;
    let _slot = WatchSlot::take(&st, node.node_id)?;
    let mut version = st.version.clone();
    let _ = tokio::time::timeout(WATCH_HOLD, version.wait_for(|v| *v > q.after)).await;
    params(State(st)).await
}

async fn crl(State(st): State<AppState>) -> ApiResult<impl IntoResponse> {
    let der = blocking(&st, |_, s| s.crl()).await?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der))
}

async fn join(
    State(st): State<AppState>,
    Extension(PeerAddr(remote)): Extension<PeerAddr>,
    body: Result<Json<JoinRequest>, JsonRejection>,
) -> ApiResult<Json<CertResponse>> {
    let Json(req) = body.map_err(bad_json)?;
    if req.token.is_none() {
        // before any work: a refused anonymous join costs a JSON parse
        st.joins.check(remote.ip()).inspect_err(|e| {
            info!(%remote, error = %e, "anonymous join refused by the rate limit");
        })?;
    }
    let key = super::ca::csr_public_key(req.csr.as_bytes()).map_err(RegistryError::from)?;
    if let Some(name) = &req.name {
        crate::identity::validate_name(name)
            .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
    }
    let name = req.name.clone();
    let secret = match &req.token {
        Some(t) => {
            use base64::Engine;
            Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .map_err(|_| {
                        RegistryError::BadRequest("the token secret is not base64url".into())
                    })?,
            )
        }
        None => None,
    };
    let resp = blocking(&st, move |reg, s| {
        let issued = s.join_named(&reg.ca, secret.as_deref(), &key, name.as_deref(), now())?;
        info!(prefix = %issued.prefix, serial = %issued.serial, "node joined");
        cert_response(reg, s, issued)
    })
    .await?;
    Ok(Json(resp))
}

async fn renew(
    State(st): State<AppState>,
    Extension(peer): Extension<PeerCert>,
    body: Result<Json<RenewRequest>, JsonRejection>,
) -> ApiResult<Json<CertResponse>> {
    let serial = peer_serial(&peer)?;
    let Json(req) = body.map_err(bad_json)?;
    let key = super::ca::csr_public_key(req.csr.as_bytes()).map_err(RegistryError::from)?;
    let resp = blocking(&st, move |reg, s| {
        let issued = s.renew(&reg.ca, &serial, &key, now())?;
        info!(prefix = %issued.prefix, old = %serial, serial = %issued.serial, "certificate renewed");
        cert_response(reg, s, issued)
    })
    .await?;
    Ok(Json(resp))
}

async fn mac_keys(
    State(st): State<AppState>,
    Extension(peer): Extension<PeerCert>,
) -> ApiResult<Json<MacKeysResponse>> {
    let serial = peer_serial(&peer)?;
    let resp = blocking(&st, move |_, s| {
        let t = now();
        let node = s.authenticate_valid(&serial, t)?;
        s.touch(node.node_id, t)?;
        let doc: crate::params::NetworkParams = serde_json::from_slice(&s.params()?.document)
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        Ok(MacKeysResponse {
            params_version: doc.version,
            keys: s
                .mac_keys()?
                .into_iter()
                .map(|(id, k)| MacKeyJson {
                    id,
                    key: hex::encode(k),
                })
                .collect(),
        })
    })
    .await?;
    Ok(Json(resp))
}

async fn endpoints(
    State(st): State<AppState>,
    Extension(peer): Extension<PeerCert>,
    Extension(PeerAddr(remote)): Extension<PeerAddr>,
    body: Result<Json<EndpointsRequest>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let serial = peer_serial(&peer)?;
    let Json(req) = body.map_err(bad_json)?;
    if req.endpoints.len() > MAX_ENDPOINTS {
        return Err(RegistryError::BadRequest(format!(
            "at most {MAX_ENDPOINTS} endpoints may be reported"
        ))
        .into());
    }
    // The registry hands these out as bootstrap peers: loopback only from a node on the
    // registry's own host (where it means something to the others there too).
    let local = remote.ip().to_canonical().is_loopback();
    if let Some(bad) = req
        .endpoints
        .iter()
        .find(|e| !crate::registry_api::usable_endpoint(e, local))
    {
        return Err(RegistryError::BadRequest(format!(
            "endpoint {bad} cannot be dialled by other nodes: endpoints must be global or \
             private unicast addresses with a port (not loopback, link-local, multicast, \
             broadcast or unspecified)"
        ))
        .into());
    }
    blocking(&st, move |_, s| {
        let t = now();
        let node = s.authenticate_valid(&serial, t)?;
        s.set_endpoints(node.node_id, &req.endpoints, req.protocol, t)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn bootstrap(
    State(st): State<AppState>,
    Extension(peer): Extension<PeerCert>,
) -> ApiResult<Json<BootstrapResponse>> {
    let serial = peer_serial(&peer)?;
    let crate::registry::store::LivePeers { peers, live } = blocking(&st, move |_, s| {
        let t = now();
        let node = s.authenticate_valid(&serial, t)?;
        s.touch(node.node_id, t)?;
        s.bootstrap(node.node_id, t, crate::registry_api::BOOTSTRAP_PEERS)
    })
    .await?;
    let peers: Vec<BootstrapPeer> = peers
        .into_iter()
        .map(|(prefix, endpoints)| BootstrapPeer { prefix, endpoints })
        .collect();
    let first = peers.first().cloned().ok_or_else(|| {
        ApiError(RegistryError::NotFound(
            "no other live node is known yet".into(),
        ))
    })?;
    Ok(Json(BootstrapResponse {
        prefix: first.prefix,
        endpoints: first.endpoints,
        peers,
        live,
    }))
}

async fn not_found() -> ApiError {
    ApiError(RegistryError::NotFound(
        "no such API call (this registry speaks /api/v1)".into(),
    ))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/ca", get(ca_cert))
        .route("/api/v1/params", get(params))
        .route("/api/v1/params/watch", get(watch_params))
        .route("/api/v1/crl", get(crl))
        .route("/api/v1/join", post(join))
        .route("/api/v1/renew", post(renew))
        .route("/api/v1/mac-keys", get(mac_keys))
        .route("/api/v1/endpoints", post(endpoints))
        .route("/api/v1/bootstrap", get(bootstrap))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Client-certificate verification: chain to the CA, optional, expiry tolerated.
#[derive(Debug)]
struct ExpiryTolerantVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ExpiryTolerantVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        use rustls::CertificateError as CE;
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(rustls::Error::InvalidCertificate(CE::Expired | CE::ExpiredContext { .. })) => {
                // Verify the chain as of the certificate's last valid second; the handler
                // then answers "expired: rejoin".
                let info = identity::cert_info(end_entity)
                    .map_err(|_| rustls::Error::InvalidCertificate(CE::BadEncoding))?;
                let at = UnixTime::since_unix_epoch(Duration::from_secs(
                    u64::try_from(info.not_after - 1).unwrap_or(0),
                ));
                self.inner.verify_client_cert(end_entity, intermediates, at)
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn tls_config(reg: &Registry) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(reg.ca.cert_der().to_vec()))
        .context("the CA certificate is not usable as a trust anchor")?;
    let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("cannot build the client certificate verifier")?;
    let server_cert = CertificateDer::from_pem_file(reg.dir.join(files::SERVER_CERT))
        .context("cannot read the registry's TLS certificate (server.pem)")?;
    let key = PrivateKeyDer::from_pem_file(reg.dir.join(files::SERVER_KEY))
        .context("cannot read the registry's TLS key (server.key)")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(Arc::new(ExpiryTolerantVerifier { inner }))
        .with_single_cert(
            vec![
                server_cert,
                CertificateDer::from(reg.ca.cert_der().to_vec()),
            ],
            key,
        )
        .context("the registry's TLS key does not match its certificate")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A bound, ready-to-run registry server.
pub struct Server {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    store: Arc<Mutex<Store>>,
    version: watch::Sender<u64>,
    joins: Arc<JoinLimiter>,
}

/// Ends a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every this many version checks (a minute), the join limiter forgets idle sources.
const FORGET_IDLE_TICKS: u32 = 240;

/// Time allowed for a TLS handshake, and for a whole request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Server {
    /// Opens the database and binds `listen`, with the default [`Limits`].
    pub async fn bind(reg: Registry, listen: SocketAddr) -> anyhow::Result<Server> {
        Self::bind_with(reg, listen, Limits::default()).await
    }

    /// Opens the database and binds `listen`, with `limits`.
    pub async fn bind_with(
        reg: Registry,
        listen: SocketAddr,
        limits: Limits,
    ) -> anyhow::Result<Server> {
        let tls = tls_config(&reg)?;
        let store = reg.store()?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (is another registry running?)"))?;
        let current = store.params_version()?;
        let (version, version_rx) = watch::channel(current);
        let joins = Arc::new(JoinLimiter::new(&limits));
        let store = Arc::new(Mutex::new(store));
        let state = AppState {
            reg: Arc::new(reg),
            store: store.clone(),
            version: version_rx,
            watches: Arc::new(WatchCounts::new(&limits)),
            joins: joins.clone(),
        };
        Ok(Server {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            app: router(state),
            store,
            version,
            joins,
        })
    }

    /// Reads the newest parameters version every [`WATCH_CHECK`] and wakes the watches.
    fn spawn_version_check(&self) -> AbortOnDrop {
        let (store, version) = (self.store.clone(), self.version.clone());
        let joins = self.joins.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut ticks = 0u32;
            loop {
                tokio::time::sleep(WATCH_CHECK).await;
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(FORGET_IDLE_TICKS) {
                    joins.forget_idle();
                }
                let store = store.clone();
                let read = tokio::task::spawn_blocking(move || {
                    store
                        .lock()
                        .map_err(|_| "database lock poisoned".to_owned())
                        .and_then(|s| s.params_version().map_err(|e| e.to_string()))
                })
                .await;
                match read {
                    Ok(Ok(v)) => {
                        version.send_if_modified(|cur| {
                            let newer = v > *cur;
                            if newer {
                                *cur = v;
                            }
                            newer
                        });
                    }
                    Ok(Err(e)) => warn!(error = %e, "cannot read the parameters version"),
                    Err(e) => warn!(error = %e, "parameters version check failed"),
                }
            }
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let _version_check = self.spawn_version_check();
        tokio::pin!(shutdown);
        loop {
            let (tcp, remote) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { warn!(error = %e, "accept failed"); continue; }
                },
            };
            let acceptor = self.acceptor.clone();
            let app = self.app.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        info!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        info!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let peer = PeerCert(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec()),
                );
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer.clone());
                        req.extensions_mut().insert(PeerAddr(remote));
                        let app = app.clone();
                        async move {
                            let method = req.method().clone();
                            let path = req.uri().path().to_owned();
                            let resp = match tokio::time::timeout(REQUEST_TIMEOUT, app.oneshot(req))
                                .await
                            {
                                Ok(r) => r,
                                Err(_) => Ok(ApiError(RegistryError::Internal(
                                    "request timed out".into(),
                                ))
                                .into_response()),
                            };
                            if let Ok(r) = &resp {
                                info!(%remote, %method, %path, status = r.status().as_u16(), "request");
                            }
                            resp
                        }
                    },
                );
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tls), svc);
                if let Err(e) = conn.await {
                    info!(%remote, error = %e, "connection ended with an error");
                }
            });
        }
    }
}
