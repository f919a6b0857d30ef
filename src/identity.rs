//! Certificate fields shared by the registry, the registry client and the tunnels
//! (CONVENTIONS: "Identity and certificates").
//!
//! A node certificate names its prefix three times: subject CN (CIDR text), SAN iPAddress
//! (the node address, prefix::1) and SAN URI `re6mesh:node:<CIDR>`. Peers identify each
//! other by the URI.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The URI SAN scheme that carries a node's prefix.
pub const NODE_URI_PREFIX: &str = "re6mesh:node:";

/// Node and server certificates start this long before they are issued, so a peer whose
/// clock is a little behind accepts them at once (so `not_before` is not the start of the
/// validity a node plans its renewal on).
pub const CERT_BACKDATE_SECS: i64 = 300;

/// Errors reading a certificate or a signature.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    BadCertificate(String),
    /// The certificate has no `re6mesh:node:` URI SAN with a valid IPv6 prefix.
    #[error("the certificate carries no re6mesh node prefix")]
    NoPrefix,
    /// The public key is not an ECDSA P-256 key.
    #[error("the key is not an ECDSA P-256 key")]
    NotP256,
    /// A signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
}

/// SHA-256 of a DER certificate: the CA fingerprint that join tokens carry.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// The node address inside a prefix: prefix::1.
pub fn node_address(prefix: &Ipv6Net) -> Ipv6Addr {
    let base = u128::from(prefix.network());
    Ipv6Addr::from(base | 1)
}

/// The URI SAN value for a prefix.
pub fn node_uri(prefix: &Ipv6Net) -> String {
    format!("{NODE_URI_PREFIX}{prefix}")
}

/// What the mesh needs to know about a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// The node prefix from the URI SAN, if this is a node certificate.
    pub prefix: Option<Ipv6Net>,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds.
    pub not_after: i64,
    /// The raw uncompressed EC point of the subject key (65 bytes for P-256).
    pub public_key: Vec<u8>,
}

/// Formats a serial number (big-endian bytes) as canonical lowercase hex.
pub fn serial_hex(bytes: &[u8]) -> String {
    let trimmed: &[u8] = {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        &bytes[first..]
    };
    if trimmed.is_empty() {
        "00".to_owned()
    } else {
        hex::encode(trimmed)
    }
}

/// Parses the fields re6mesh uses from a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, IdentityError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(IdentityError::BadCertificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    let mut prefix = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && let Some(cidr) = uri.strip_prefix(NODE_URI_PREFIX)
                && let Ok(net) = cidr.parse::<Ipv6Net>()
            {
                prefix = Some(net);
            }
        }
    }
    Ok(CertInfo {
        serial: serial_hex(cert.raw_serial()),
        prefix,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// The node prefix of a certificate, or an error when it has none.
pub fn cert_prefix(der: &[u8]) -> Result<Ipv6Net, IdentityError> {
    cert_info(der)?.prefix.ok_or(IdentityError::NoPrefix)
}

/// Verifies an ECDSA P-256 / SHA-256 (ASN.1 DER) signature by the key of certificate `signer_der`.
pub fn verify_signature(signer_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), IdentityError> {
    let info = cert_info(signer_der)?;
    if info.public_key.len() != 65 {
        return Err(IdentityError::NotP256);
    }
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        &info.public_key,
    )
    .verify(msg, sig)
    .map_err(|_| IdentityError::BadSignature)
}

/// Decodes the first PEM block of type `label` into DER.
pub fn pem_to_der(pem_text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem_text.find(&begin)? + begin.len();
    let stop = start + pem_text[start..].find(&end)?;
    let b64: String = pem_text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Encodes DER as a PEM block of type `label`.
pub fn der_to_pem(der: &[u8], label: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_address_is_prefix_one() {
        let p: Ipv6Net = "fd12:3456:789a:1::/64".parse().unwrap();
        assert_eq!(
            node_address(&p),
            "fd12:3456:789a:1::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(node_uri(&p), "re6mesh:node:fd12:3456:789a:1::/64");
    }

    #[test]
    fn serial_hex_strips_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0, 0x12, 0x34]), "1234");
        assert_eq!(serial_hex(&[0]), "00");
    }

    #[test]
    fn pem_round_trip() {
        let der = vec![1u8, 2, 3, 250, 251, 252];
        let pem = der_to_pem(&der, "CERTIFICATE");
        assert_eq!(pem_to_der(&pem, "CERTIFICATE").unwrap(), der);
        assert!(pem_to_der(&pem, "PRIVATE KEY").is_none());
    }

    #[test]
    fn rejects_garbage_certificate() {
        assert!(matches!(
            cert_info(b"nope"),
            Err(IdentityError::BadCertificate(_))
        ));
    }
}
