//! Mutual TLS between nodes (CONVENTIONS "Tunnels and MTU"): ALPN `re6mesh/1`, both ends
//! present node certificates; a peer is accepted when its chain leads to the network CA,
//! it is within its validity, its serial is not revoked — checked against a set that is
//! swapped atomically when the CRL changes, so revocation applies without a restart — and,
//! when dialling a known peer, its certificate carries the expected prefix (its SAN
//! iPAddress is prefix::1, which is the name we dial). Sessions are never resumed, so every
//! tunnel runs these checks.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::identity;

/// The ALPN protocol of tunnels.
pub const ALPN: &[u8] = b"re6mesh/1";

/// Trust shared by both directions: the CA and the revoked serials.
#[derive(Debug)]
pub struct Trust {
    roots: Arc<RootCertStore>,
    revoked: ArcSwap<HashSet<String>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// Why the TLS set-up cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA certificate is not usable.
    #[error("the network CA certificate is unusable: {0}")]
    BadCa(String),
    /// The node certificate and key do not go together.
    #[error("the node certificate or key is unusable: {0}")]
    BadIdentity(String),
}

impl Trust {
    /// Trust in `ca_der` with no serial revoked yet.
    pub fn new(ca_der: &[u8]) -> Result<Arc<Trust>, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_der.to_vec()))
            .map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
        Ok(Arc::new(Trust {
            roots: Arc::new(roots),
            revoked: ArcSwap::from_pointee(HashSet::new()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }))
    }

    /// Replaces the revoked set (serials as lowercase hex, see [`identity::serial_hex`]).
    pub fn set_revoked(&self, serials: HashSet<String>) {
        self.revoked.store(Arc::new(serials));
    }

    /// True when `serial` is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.load().contains(serial)
    }

    fn check_revoked(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let info = identity::cert_info(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if info.prefix.is_none() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        if self.is_revoked(&info.serial) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct PeerServerVerifier {
    trust: Arc<Trust>,
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // chain, validity and name (the expected node address)
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        self.trust.check_revoked(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct PeerClientVerifier {
    trust: Arc<Trust>,
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.trust.check_revoked(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// rustls configurations for both roles with this node's identity.
pub fn configs(
    trust: &Arc<Trust>,
    cert_der: &[u8],
    key_pkcs8: &[u8],
) -> Result<(rustls::ServerConfig, rustls::ClientConfig), TlsSetupError> {
    let chain = vec![CertificateDer::from(cert_der.to_vec())];
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec()));
    let bad = |e: rustls::Error| TlsSetupError::BadIdentity(e.to_string());

    let client_inner =
        WebPkiClientVerifier::builder_with_provider(trust.roots.clone(), trust.provider.clone())
            .build()
            .map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(trust.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(bad)?
        .with_client_cert_verifier(Arc::new(PeerClientVerifier {
            trust: trust.clone(),
            inner: client_inner,
        }))
        .with_single_cert(chain.clone(), key())
        .map_err(bad)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption, ever: a resumed TLS 1.3 handshake skips certificate verification, so a
    // peer revoked after its first tunnel could come back with a ticket. Tunnels are long-lived;
    // a full handshake per tunnel costs nothing worth saving.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;

    let server_inner =
        WebPkiServerVerifier::builder_with_provider(trust.roots.clone(), trust.provider.clone())
            .build()
            .map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
    let mut client = rustls::ClientConfig::builder_with_provider(trust.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(bad)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerServerVerifier {
            trust: trust.clone(),
            inner: server_inner,
        }))
        .with_client_auth_cert(chain, key())
        .map_err(bad)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    client.resumption = rustls::client::Resumption::disabled();
    Ok((server, client))
}
