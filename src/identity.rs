//! Certificate fields shared by the registry, the registry client and the tunnels
//! (CONVENTIONS: "Identity and certificates").
//!
//! A node certificate names its prefix three times: subject CN (CIDR text), SAN iPAddress
//! (the node address, prefix::1) and SAN URI `re6mesh:node:<CIDR>`. Peers identify each
//! other by the URI.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The URI SAN scheme that carries a node's prefix.
pub const NODE_URI_PREFIX: &str = "re6mesh:node:";

/// The URI SAN scheme that carries a node's name (`re6mesh:name:laptop-anna`): a label for
/// people, chosen at join and vouched for by the registry; peers still identify each other
/// by the prefix.
pub const NAME_URI_PREFIX: &str = "re6mesh:name:";

/// The longest node name (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

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
    /// The node's name from the `re6mesh:name:` URI SAN, when it has a valid one.
    pub name: Option<String>,
    /// The node's IPv4 address (an IPv4 iPAddress SAN), on a network with an IPv4 range;
    /// certificates issued before (or without) one have none.
    pub ipv4: Option<Ipv4Addr>,
}

/// Errors in a node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or longer than a DNS label.
    #[error("a node name has 1 to 63 characters")]
    Length,
    /// A character outside `a-z`, `0-9` and `-`, or a `-` at either end.
    #[error(
        "a node name is lowercase letters, digits and '-' (not at either end), like a DNS label: {0:?}"
    )]
    Characters(String),
}

/// Checks a node name: a DNS label in lowercase (`a-z`, `0-9`, `-` inside), 1 to 63 characters.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(NameError::Length);
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Characters(name.to_owned()))
    }
}

/// A node name made from a host name (`Anna's MacBook.local` → `anna-s-macbook`): the first
/// label, lowercased, other characters as `-`, runs of `-` folded, cut to 63. `None` when
/// nothing usable is left.
pub fn name_from_hostname(host: &str) -> Option<String> {
    let first = host.trim().split('.').next().unwrap_or_default();
    let mut out = String::with_capacity(first.len());
    for c in first.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_matches('-').chars().take(MAX_NAME_LEN).collect();
    while out.ends_with('-') {
        out.pop();
    }
    validate_name(&out).ok().map(|()| out)
}

/// The URI SAN value for a node name.
pub fn name_uri(name: &str) -> String {
    format!("{NAME_URI_PREFIX}{name}")
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
    let mut node_name = None;
    let mut ipv4 = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let &GeneralName::IPAddress(&[a, b, c, d]) = name {
                ipv4 = Some(Ipv4Addr::new(a, b, c, d));
                continue;
            }
            let GeneralName::URI(uri) = name else {
                continue;
            };
            if let Some(cidr) = uri.strip_prefix(NODE_URI_PREFIX)
                && let Ok(net) = cidr.parse::<Ipv6Net>()
            {
                prefix = Some(net);
            } else if let Some(n) = uri.strip_prefix(NAME_URI_PREFIX)
                && validate_name(n).is_ok()
            {
                node_name = Some(n.to_owned());
            }
        }
    }
    Ok(CertInfo {
        serial: serial_hex(cert.raw_serial()),
        prefix,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        name: node_name,
        ipv4,
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
    fn names_are_dns_labels() {
        for good in ["a", "laptop-anna", "n0", &"x".repeat(63)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        assert_eq!(validate_name(""), Err(NameError::Length));
        assert_eq!(validate_name(&"x".repeat(64)), Err(NameError::Length));
        for bad in ["-a", "a-", "Anna", "a b", "a.b", "é", "a_b"] {
            assert!(
                matches!(validate_name(bad), Err(NameError::Characters(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn host_names_become_node_names() {
        assert_eq!(
            name_from_hostname("Anna's MacBook.local").as_deref(),
            Some("anna-s-macbook")
        );
        assert_eq!(name_from_hostname("srv01\n").as_deref(), Some("srv01"));
        assert_eq!(name_from_hostname("srv_01").as_deref(), Some("srv-01"));
        assert_eq!(name_from_hostname("--").as_deref(), None);
        assert_eq!(name_from_hostname("").as_deref(), None);
        assert_eq!(name_from_hostname("ÉÉÉ").as_deref(), None);
        let long = format!("{}-{}", "a".repeat(62), "b");
        assert_eq!(name_from_hostname(&long).as_deref(), Some(&*"a".repeat(62)));
    }

    #[test]
    fn rejects_garbage_certificate() {
        assert!(matches!(
            cert_info(b"nope"),
            Err(IdentityError::BadCertificate(_))
        ));
    }
}
