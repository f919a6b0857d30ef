//! The node's side of the registry API: join, renew, parameters, CRL, MAC keys, endpoints
//! and bootstrap, over HTTPS (hyper + rustls).
//!
//! Trust: on first contact (join) the server's chain must contain a CA whose SHA-256
//! equals the fingerprint in the join token — checked inside the TLS handshake, so a
//! registry with another CA never sees the token secret. Afterwards the stored CA is the
//! only trust anchor, and the node presents its certificate (mutual TLS). Every parameters
//! document is verified against the CA before it is returned.

#![allow(clippy::disallowed_methods)] // IO shell: drives the HTTPS connection to the registry in a task

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ipnet::Ipv6Net;
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::identity;
use crate::params::{NetworkParams, SignedParams};
use crate::registry_api::*;
use crate::token::JoinToken;

/// How long one request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest response body read.
const MAX_RESPONSE: usize = 1 << 20;

/// What can go wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry's CA is not the one the join token names: nothing was sent.
    #[error("the registry at {url} does not have the CA named in the join token; nothing was sent")]
    PinMismatch {
        /// The registry URL.
        url: String,
    },
    /// The registry cannot be reached (network, TLS, timeout).
    #[error("cannot reach the registry at {url}: {reason}")]
    Unreachable {
        /// The registry URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The registry refused the request.
    #[error("the registry refused: {message} (HTTP {status}, {code})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable code from the registry.
        code: String,
        /// The registry's sentence.
        message: String,
        /// When the registry said to try again (`Retry-After`, seconds), if it did.
        retry_after: Option<u64>,
    },
    /// The registry answered something we cannot use.
    #[error("the registry sent an invalid answer: {0}")]
    BadResponse(String),
    /// A local problem (bad URL, key generation).
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The registry's error code, when it refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// Verifies the server against the CA whose fingerprint is pinned (first contact).
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: [u8; 32],
    mismatch: Arc<AtomicBool>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| identity::fingerprint(c) == self.fingerprint)
        else {
            self.mismatch.store(true, Ordering::SeqCst);
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What [`RegistryClient::watch`] brings back.
#[derive(Debug)]
pub enum Watched {
    /// The current parameters (newer than asked for, or the same after the hold time).
    Params(Box<NetworkParams>, SignedParams),
    /// No watch slot: try again after `retry_after` (the registry's `Retry-After`).
    Busy {
        /// When the registry said to come back, if it did.
        retry_after: Option<std::time::Duration>,
    },
}

/// A node's identity: its key and certificate.
pub struct NodeKey {
    key: KeyPair,
}

impl NodeKey {
    /// A fresh ECDSA P-256 key.
    pub fn generate() -> Result<NodeKey> {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|key| NodeKey { key })
            .map_err(|e| ClientError::Local(format!("cannot generate a key: {e}")))
    }

    /// Loads a PKCS#8 PEM key.
    pub fn from_pem(pem: &str) -> Result<NodeKey> {
        KeyPair::from_pem(pem)
            .map(|key| NodeKey { key })
            .map_err(|e| ClientError::Local(format!("the node key is damaged: {e}")))
    }

    /// PKCS#8 PEM (store 0600).
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// PKCS#8 DER.
    pub fn to_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// Raw public point.
    pub fn public_raw(&self) -> &[u8] {
        self.key.public_key_raw()
    }

    /// A PEM certification request for this key.
    pub fn csr_pem(&self) -> Result<String> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "re6mesh node");
        params
            .serialize_request(&self.key)
            .and_then(|c| c.pem())
            .map_err(|e| ClientError::Local(format!("cannot build the certificate request: {e}")))
    }
}

/// What join and renew return, verified.
#[derive(Debug, Clone)]
pub struct Certified {
    /// Node certificate (DER).
    pub cert_der: Vec<u8>,
    /// CA certificate (DER).
    pub ca_der: Vec<u8>,
    /// Node prefix.
    pub prefix: Ipv6Net,
    /// Certificate serial (hex).
    pub serial: String,
    /// Certificate expiry (Unix seconds).
    pub not_after: i64,
    /// Verified parameters.
    pub params: NetworkParams,
    /// The signed form, to store and to pass on to peers.
    pub signed_params: SignedParams,
}

/// A client bound to one registry.
pub struct RegistryClient {
    url: String,
    authority: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    ca_der: Option<Vec<u8>>,
    pinned: Option<([u8; 32], Arc<AtomicBool>)>,
}

fn split_url(url: &str) -> Result<(String, ServerName<'static>)> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        ClientError::Local(format!("the registry URL {url:?} must start with https://"))
    })?;
    let authority = rest.split('/').next().unwrap_or_default().to_owned();
    let host = crate::token::url_host(url)
        .ok_or_else(|| ClientError::Local(format!("the registry URL {url:?} has no host")))?;
    let name = ServerName::try_from(host.clone())
        .map_err(|_| ClientError::Local(format!("the registry URL {url:?} has an invalid host")))?;
    let authority = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority
        } else {
            format!("{authority}:443")
        }
    } else if authority.contains(':') {
        authority
    } else {
        format!("{authority}:443")
    };
    Ok((authority, name))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl RegistryClient {
    /// A client for the first contact: trusts only the CA pinned by the token.
    pub fn for_token(token: &JoinToken) -> Result<RegistryClient> {
        let (authority, server_name) = split_url(&token.url)?;
        let mismatch = Arc::new(AtomicBool::new(false));
        let verifier = PinnedCaVerifier {
            fingerprint: token.ca_fingerprint,
            mismatch: mismatch.clone(),
            provider: provider(),
        };
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Local(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(RegistryClient {
            url: token.url.clone(),
            authority,
            server_name,
            tls: Arc::new(cfg),
            ca_der: None,
            pinned: Some((token.ca_fingerprint, mismatch)),
        })
    }

    /// A client for a joined node: trusts the stored CA and presents the node certificate.
    pub fn with_identity(
        url: &str,
        ca_der: &[u8],
        cert_der: &[u8],
        key: &NodeKey,
    ) -> Result<RegistryClient> {
        let (authority, server_name) = split_url(url)?;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_der.to_vec()))
            .map_err(|e| {
                ClientError::Local(format!("the stored CA certificate is unusable: {e}"))
            })?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Local(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from(cert_der.to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_der())),
            )
            .map_err(|e| {
                ClientError::Local(format!("the node key does not match its certificate: {e}"))
            })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(RegistryClient {
            url: url.to_owned(),
            authority,
            server_name,
            tls: Arc::new(cfg),
            ca_der: Some(ca_der.to_vec()),
            pinned: None,
        })
    }

    /// The registry URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn request(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Answer> {
        let fut = self.request_inner(method, path, body);
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Unreachable {
                url: self.url.clone(),
                reason: "timed out".into(),
            }),
        }
    }

    async fn request_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer> {
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = match connector.connect(self.server_name.clone(), tcp).await {
            Ok(t) => t,
            Err(e) => {
                if let Some((_, flag)) = &self.pinned
                    && flag.load(Ordering::SeqCst)
                {
                    return Err(ClientError::PinMismatch {
                        url: self.url.clone(),
                    });
                }
                return Err(unreachable(format!("TLS: {e}")));
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let has_body = body.is_some();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{API_PREFIX}{path}"))
            .header(hyper::header::HOST, &self.authority);
        if has_body {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::BadResponse(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ClientError::Local(e.to_string()))?),
            None => None,
        };
        let a = self.request(method, path, body).await?;
        a.check()?;
        serde_json::from_slice(&a.body).map_err(|e| ClientError::BadResponse(e.to_string()))
    }

    fn verify_certified(&self, resp: CertResponse, key: &NodeKey) -> Result<Certified> {
        let ca_der = identity::pem_to_der(&resp.ca, "CERTIFICATE")
            .ok_or_else(|| ClientError::BadResponse("the CA certificate is not PEM".into()))?;
        match (&self.pinned, &self.ca_der) {
            (Some((fp, _)), _) if identity::fingerprint(&ca_der) != *fp => {
                return Err(ClientError::PinMismatch {
                    url: self.url.clone(),
                });
            }
            (_, Some(known)) if *known != ca_der => {
                return Err(ClientError::BadResponse(
                    "the registry changed its CA".into(),
                ));
            }
            _ => {}
        }
        let cert_der = identity::pem_to_der(&resp.certificate, "CERTIFICATE")
            .ok_or_else(|| ClientError::BadResponse("the node certificate is not PEM".into()))?;
        let info =
            identity::cert_info(&cert_der).map_err(|e| ClientError::BadResponse(e.to_string()))?;
        if info.public_key != key.public_raw() {
            return Err(ClientError::BadResponse(
                "the certificate is not for this node's key".into(),
            ));
        }
        if info.prefix != Some(resp.prefix) {
            return Err(ClientError::BadResponse(
                "the certificate does not carry the announced prefix".into(),
            ));
        }
        let signed = SignedParams::from_json(&resp.params)
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let params = signed
            .verify(&ca_der)
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        Ok(Certified {
            cert_der,
            ca_der,
            prefix: resp.prefix,
            serial: info.serial,
            not_after: info.not_after,
            params,
            signed_params: signed,
        })
    }

    /// Joins with the token's secret (or anonymously with `None`).
    pub async fn join(&self, secret: Option<&[u8]>, key: &NodeKey) -> Result<Certified> {
        self.join_with_csr(secret, key, key.csr_pem()?, None).await
    }

    /// [`RegistryClient::join`] with the CSR already built from `key` ([`NodeKey::csr_pem`]),
    /// for callers that show each step, asking for the node name `name`.
    pub async fn join_with_csr(
        &self,
        secret: Option<&[u8]>,
        key: &NodeKey,
        csr: String,
        name: Option<&str>,
    ) -> Result<Certified> {
        let req = JoinRequest {
            token: secret.map(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)),
            csr,
            name: name.map(str::to_owned),
        };
        let resp: CertResponse = self.call("POST", "/join", Some(&req)).await?;
        self.verify_certified(resp, key)
    }

    /// Renews the certificate (mutual TLS) for `key` (the same or a new key).
    pub async fn renew(&self, key: &NodeKey) -> Result<Certified> {
        let req = RenewRequest {
            csr: key.csr_pem()?,
        };
        let resp: CertResponse = self.call("POST", "/renew", Some(&req)).await?;
        self.verify_certified(resp, key)
    }

    /// The current parameters, verified against the CA.
    pub async fn params(&self) -> Result<(NetworkParams, SignedParams)> {
        let ca = self.ca_der.as_ref().ok_or_else(|| {
            ClientError::Local("join first: no CA to verify the parameters with".into())
        })?;
        let j: crate::params::SignedParamsJson = self.call("GET", "/params", None::<&()>).await?;
        let signed =
            SignedParams::from_json(&j).map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let params = signed
            .verify(ca)
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        Ok((params, signed))
    }

    /// [`RegistryClient::watch`], with a refusal for want of watch slots as `Ok(None)`.
    pub async fn watch_params(&self, after: u64) -> Result<Option<(NetworkParams, SignedParams)>> {
        Ok(match self.watch(after).await? {
            Watched::Params(p, s) => Some((*p, s)),
            Watched::Busy { .. } => None,
        })
    }

    /// Waits (up to the registry's hold time, 15 s) for parameters newer than `after`, and
    /// returns the current ones, verified against the CA, either way; or
    /// [`Watched::Busy`] when the registry holds as many watches as it allows, in total or
    /// for this node (poll instead, and watch again after its `Retry-After`). Needs this
    /// node's identity ([`RegistryClient::with_identity`]).
    pub async fn watch(&self, after: u64) -> Result<Watched> {
        let ca = self.ca_der.as_ref().ok_or_else(|| {
            ClientError::Local("join first: no CA to verify the parameters with".into())
        })?;
        let a = self
            .request("GET", &format!("/params/watch?after={after}"), None)
            .await?;
        if let Err(e) = a.check() {
            return match e {
                ClientError::Refused {
                    code, retry_after, ..
                } if code == "busy" || code == "rate_limited" => Ok(Watched::Busy {
                    retry_after: retry_after.map(std::time::Duration::from_secs),
                }),
                e => Err(e),
            };
        }
        let j: crate::params::SignedParamsJson =
            serde_json::from_slice(&a.body).map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let signed =
            SignedParams::from_json(&j).map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let params = signed
            .verify(ca)
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        Ok(Watched::Params(Box::new(params), signed))
    }

    /// The CRL (DER), signature checked against the CA.
    pub async fn crl(&self) -> Result<Vec<u8>> {
        let a = self.request("GET", "/crl", None).await?;
        a.check()?;
        Ok(a.body.to_vec())
    }

    /// The MAC keys in force (mutual TLS, refused to revoked nodes).
    pub async fn mac_keys(&self) -> Result<MacKeysResponse> {
        self.call("GET", "/mac-keys", None::<&()>).await
    }

    /// Reports this node's reachable UDP endpoints.
    pub async fn report_endpoints(
        &self,
        endpoints: &[std::net::SocketAddr],
        protocol: u32,
    ) -> Result<()> {
        let body = serde_json::to_vec(&EndpointsRequest {
            endpoints: endpoints.to_vec(),
            protocol,
        })
        .map_err(|e| ClientError::Local(e.to_string()))?;
        self.request("POST", "/endpoints", Some(body))
            .await?
            .check()
    }

    /// Sends raw bytes to an API path and returns the status and body, unchecked. For tests
    /// and diagnostics (`path` is relative to `/api/v1`).
    #[doc(hidden)]
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        let a = self.request(method, path, body).await?;
        Ok((a.status.as_u16(), a.body.to_vec()))
    }

    /// A random other live node, or `None` when the registry knows none.
    pub async fn bootstrap(&self) -> Result<Option<BootstrapResponse>> {
        match self.call("GET", "/bootstrap", None::<&()>).await {
            Ok(b) => Ok(Some(b)),
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One answer of the registry.
struct Answer {
    status: StatusCode,
    /// `Retry-After`, seconds.
    retry_after: Option<u64>,
    body: Bytes,
}

impl Answer {
    fn check(&self) -> Result<()> {
        check_status(self.status, self.retry_after, &self.body)
    }
}

fn check_status(status: StatusCode, retry_after: Option<u64>, body: &[u8]) -> Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.code, e.error),
        Err(_) => (
            "unknown".into(),
            String::from_utf8_lossy(body).chars().take(200).collect(),
        ),
    };
    Err(ClientError::Refused {
        status: status.as_u16(),
        code,
        message,
        retry_after,
    })
}
