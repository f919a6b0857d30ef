//! The network CA: key and certificate, node and server certificates, the CRL and the
//! signature on the network parameters (CONVENTIONS "Identity and certificates").

use std::net::IpAddr;

use ::time::{Duration, OffsetDateTime};
use ipnet::Ipv6Net;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber, SigningKey,
};
use rustls_pki_types::CertificateSigningRequestDer;
use x509_parser::prelude::FromDer;

use crate::identity;

/// Errors of CA operations.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The certification request cannot be parsed.
    #[error("the certificate signing request is malformed")]
    MalformedCsr,
    /// The request's self-signature does not verify.
    #[error("the certificate signing request's signature does not verify")]
    BadCsrSignature,
    /// The request carries a key other than ECDSA P-256.
    #[error("the certificate signing request must carry an ECDSA P-256 key")]
    WrongKeyType,
    /// Certificate generation failed (a bug or a broken CA key).
    #[error("certificate generation failed: {0}")]
    Internal(String),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Internal(e.to_string())
    }
}

/// The CA: its key pair and certificate.
pub struct Ca {
    key: KeyPair,
    cert_der: Vec<u8>,
}

/// A public key taken from a verified CSR.
pub struct CsrKey {
    inner: rcgen::PublicKey,
    /// Raw uncompressed point (65 bytes).
    pub raw: Vec<u8>,
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// Node and server certificates start this long before they are issued (see
/// [`crate::identity::CERT_BACKDATE_SECS`]).
pub const BACKDATE_SECS: i64 = crate::identity::CERT_BACKDATE_SECS;

/// Parses a PEM or DER CSR, checks its self-signature and that its key is ECDSA P-256, and
/// returns only the public key (nothing else from the CSR is used).
pub fn csr_public_key(csr: &[u8]) -> Result<CsrKey, CaError> {
    let der = match std::str::from_utf8(csr) {
        Ok(text) if text.contains("-----BEGIN") => {
            identity::pem_to_der(text, "CERTIFICATE REQUEST").ok_or(CaError::MalformedCsr)?
        }
        _ => csr.to_vec(),
    };
    let (rest, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der)
            .map_err(|_| CaError::MalformedCsr)?;
    if !rest.is_empty() {
        return Err(CaError::MalformedCsr);
    }
    let spki = &parsed.certification_request_info.subject_pki;
    let is_ec = spki.algorithm.algorithm.to_id_string() == OID_EC_PUBLIC_KEY;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let raw = spki.subject_public_key.data.to_vec();
    if !is_ec || curve.as_deref() != Some(OID_P256) || raw.len() != 65 {
        return Err(CaError::WrongKeyType);
    }
    parsed
        .verify_signature()
        .map_err(|_| CaError::BadCsrSignature)?;
    let params = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
        der.as_slice(),
    ))
    .map_err(|_| CaError::MalformedCsr)?;
    Ok(CsrKey {
        inner: params.public_key,
        raw,
    })
}

/// A fresh random positive serial of 128 bits.
#[allow(clippy::disallowed_methods)] // a serial must be unpredictable: from the OS RNG, as the keys are
fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f;
    b[0] |= 0x40; // keep it 16 bytes long and positive
    SerialNumber::from_slice(&b)
}

impl Ca {
    /// Creates a new CA (ECDSA P-256, CA:TRUE, keyCertSign + cRLSign, 10 years).
    pub fn generate(network: &Ipv6Net, now: OffsetDateTime) -> Result<Ca, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = Self::ca_params(network, now);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            key,
            cert_der: cert.der().to_vec(),
        })
    }

    fn ca_params(network: &Ipv6Net, now: OffsetDateTime) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("re6mesh CA {network}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - Duration::seconds(BACKDATE_SECS);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial());
        params
    }

    /// Loads a CA from its PKCS#8 PEM key and DER certificate.
    pub fn load(key_pem: &str, cert_der: Vec<u8>) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Ca { key, cert_der })
    }

    /// The CA key as PKCS#8 PEM (store with mode 0600).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> String {
        identity::der_to_pem(&self.cert_der, "CERTIFICATE")
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, CaError> {
        let der = rustls_pki_types::CertificateDer::from(self.cert_der.as_slice());
        Ok(Issuer::from_ca_cert_der(&der, &self.key)?)
    }

    /// Signs arbitrary bytes (the network parameters) with the CA key.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        Ok(self.key.sign(msg)?)
    }

    /// Issues a node certificate for `prefix` over `key` (CONVENTIONS fields).
    /// Returns (DER, serial hex, not_after Unix seconds).
    pub fn issue_node(
        &self,
        key: &CsrKey,
        prefix: &Ipv6Net,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<(Vec<u8>, String, i64), CaError> {
        self.issue_node_named(key, prefix, None, now, validity)
    }

    /// [`Ca::issue_node`] with the node's name as a second URI SAN (`re6mesh:name:NAME`).
    pub fn issue_node_named(
        &self,
        key: &CsrKey,
        prefix: &Ipv6Net,
        name: Option<&str>,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<(Vec<u8>, String, i64), CaError> {
        self.issue_node_full(key, prefix, name, None, now, validity)
    }

    /// [`Ca::issue_node_named`] with the node's IPv4 address (on a network with an IPv4
    /// range) as a second iPAddress SAN.
    pub fn issue_node_full(
        &self,
        key: &CsrKey,
        prefix: &Ipv6Net,
        name: Option<&str>,
        ipv4: Option<std::net::Ipv4Addr>,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<(Vec<u8>, String, i64), CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, prefix.to_string());
        let uri = identity::node_uri(prefix);
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V6(identity::node_address(prefix))),
            SanType::URI(
                uri.try_into()
                    .map_err(|e: rcgen::Error| CaError::Internal(e.to_string()))?,
            ),
        ];
        if let Some(v4) = ipv4 {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(v4)));
        }
        if let Some(name) = name {
            identity::validate_name(name).map_err(|e| CaError::Internal(e.to_string()))?;
            params.subject_alt_names.push(SanType::URI(
                identity::name_uri(name)
                    .try_into()
                    .map_err(|e: rcgen::Error| CaError::Internal(e.to_string()))?,
            ));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - Duration::seconds(BACKDATE_SECS);
        params.not_after = now + validity;
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let cert = params.signed_by(&key.inner, &self.issuer()?)?;
        Ok((
            cert.der().to_vec(),
            identity::serial_hex(&serial.to_bytes()),
            params.not_after.unix_timestamp(),
        ))
    }

    /// Issues the registry's own TLS certificate with `host` (IP or DNS name) as SAN.
    /// Returns (certificate DER, key PKCS#8 PEM).
    pub fn issue_server(
        &self,
        host: &str,
        now: OffsetDateTime,
    ) -> Result<(Vec<u8>, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("re6mesh registry {host}"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - Duration::seconds(BACKDATE_SECS);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.der().to_vec(), key.serialize_pem()))
    }

    /// Signs a CRL listing `revoked` (serial hex, revocation time), numbered `number`.
    pub fn crl(
        &self,
        number: u64,
        revoked: &[(String, i64)],
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, CaError> {
        let revoked_certs = revoked
            .iter()
            .filter_map(|(serial, at)| {
                let bytes = hex::decode(serial).ok()?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: OffsetDateTime::from_unix_timestamp(*at).ok()?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.der().to_vec())
    }
}
