//! JSON bodies of the registry's HTTPS API (`/api/v1/...`), shared by the server
//! ([`crate::registry`]) and the client ([`crate::registry_client`]) so neither depends on the
//! other. Request bodies reject unknown fields; responses are read leniently.

use std::net::{Ipv6Addr, SocketAddr};

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::params::SignedParamsJson;

/// Path prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";
/// Largest request body the registry reads.
pub const MAX_BODY: usize = 16 * 1024;

/// `POST /api/v1/join`: a CSR plus a token secret (absent for an anonymous join). `Debug`
/// does not show the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// base64url (no padding) of the token secret.
    #[serde(default)]
    pub token: Option<String>,
    /// PEM certification request; only its P-256 public key is used.
    pub csr: String,
    /// The name the node asks for (a DNS label, `identity::validate_name`); the registry
    /// makes it unique in the network (`-2`, `-3`, … when taken) and puts it in the
    /// certificate. Absent: no name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /api/v1/renew` (mutual TLS with the current certificate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// PEM certification request.
    pub csr: String,
}

/// Answer to join and renew.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertResponse {
    /// The node certificate (PEM).
    pub certificate: String,
    /// The network CA certificate (PEM).
    pub ca: String,
    /// The node prefix.
    pub prefix: Ipv6Net,
    /// The node address (prefix::1).
    pub address: Ipv6Addr,
    /// The current signed network parameters.
    pub params: SignedParamsJson,
}

/// One MAC key as served to authenticated nodes. `Debug` does not show the key.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MacKeyJson {
    /// Key id (as named in the parameters).
    pub id: String,
    /// 32 key bytes, lowercase hex.
    pub key: String,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("csr", &self.csr)
            .field("name", &self.name)
            .finish()
    }
}

impl std::fmt::Debug for MacKeyJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacKeyJson")
            .field("id", &self.id)
            .field("key", &"<secret>")
            .finish()
    }
}

/// `GET /api/v1/mac-keys` (mutual TLS, non-revoked nodes only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MacKeysResponse {
    /// The parameters version these keys belong to.
    pub params_version: u64,
    /// Every key currently referenced by the parameters.
    pub keys: Vec<MacKeyJson>,
}

/// `POST /api/v1/endpoints`: where this node can be reached over UDP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsRequest {
    /// Reachable UDP endpoints (at most 16).
    pub endpoints: Vec<SocketAddr>,
    /// The node's protocol version.
    pub protocol: u32,
}

/// Most endpoints a node may report.
pub const MAX_ENDPOINTS: usize = 16;

/// `GET /api/v1/bootstrap`: random other live nodes (the first also in `prefix`/`endpoints`,
/// the shape of the first protocol version).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BootstrapResponse {
    /// The first peer's prefix.
    pub prefix: Ipv6Net,
    /// The first peer's endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Up to [`BOOTSTRAP_PEERS`] live nodes in random order, the first included: a node that
    /// can reach only some of them (firewalls, NATs) still finds a way into every part of
    /// the mesh.
    #[serde(default)]
    pub peers: Vec<BootstrapPeer>,
    /// Live nodes the registry knows besides the asker (with endpoints, not banned).
    #[serde(default)]
    pub live: u32,
}

/// One node of a [`BootstrapResponse`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BootstrapPeer {
    /// Its prefix.
    pub prefix: Ipv6Net,
    /// Its endpoints.
    pub endpoints: Vec<SocketAddr>,
}

/// Nodes one bootstrap answer names at most.
pub const BOOTSTRAP_PEERS: usize = 8;

/// Every error answer: a machine-readable code and one clear sentence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code, e.g. `token_used`, `revoked`, `expired`.
    pub code: String,
    /// What went wrong and what to do.
    pub error: String,
}

/// May `addr` be dialled as a peer's endpoint? Not unspecified, multicast, broadcast or port
/// 0; not link-local (a scope id from another host names one of *its* interfaces: LAN
/// neighbours come from LAN discovery, never from the cache); loopback only when the one who
/// told us is on this host too (`allow_loopback`), e.g. nodes in tests on one machine.
pub fn usable_endpoint(addr: &std::net::SocketAddr, allow_loopback: bool) -> bool {
    let ip = addr.ip().to_canonical();
    let link_local = match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        std::net::IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !link_local
        && (allow_loopback || !ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let j = JoinRequest {
            token: Some("c2VjcmV0LXRva2Vu".into()),
            csr: "CSR".into(),
            name: None,
        };
        let k = MacKeyJson {
            id: "k1".into(),
            key: "00112233445566778899aabbccddeeff".into(),
        };
        let text = format!("{j:?} {k:?}");
        assert!(!text.contains("c2VjcmV0LXRva2Vu"), "{text}");
        assert!(!text.contains("00112233"), "{text}");
        assert!(text.contains("k1") && text.contains("<secret>"), "{text}");
    }

    #[test]
    fn usable_endpoints() {
        let ok = |s: &str, lo: bool| usable_endpoint(&s.parse().unwrap(), lo);
        assert!(ok("192.0.2.1:6000", false));
        assert!(!ok("[fe80::1%2]:6000", false));
        assert!(!ok("[::ffff:127.0.0.1]:6000", false));
        assert!(ok("[::1]:6000", true));
    }
}
