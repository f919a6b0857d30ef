//! Signed, versioned network parameters (DESIGN §5, CONVENTIONS "Network parameters").
//!
//! The registry signs the exact bytes of a UTF-8 JSON document with the CA key (ECDSA P-256,
//! SHA-256, ASN.1 DER signature). The document travels as those bytes plus the signature and
//! is never re-serialised before verifying. Readers ignore unknown fields. Sans-IO.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// re6st's tunnel policy defaults.
pub const DEFAULT_CLIENT_COUNT: u32 = 10;
/// Maximum accepted incoming tunnels.
pub const DEFAULT_MAX_CLIENTS: u32 = 20;
/// Seconds between two tunnel refreshes.
pub const DEFAULT_TUNNEL_REFRESH: u32 = 300;
/// Babel Hello interval, seconds.
pub const DEFAULT_HELLO_INTERVAL: u32 = 4;

/// The network parameters document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkParams {
    /// Strictly increasing version.
    pub version: u64,
    /// When the registry issued this version (Unix seconds).
    pub issued_at: i64,
    /// The whole network prefix (routed into the TUN device).
    pub network: Ipv6Net,
    /// Default node prefix length.
    pub node_prefix_len: u8,
    /// The registry's protocol version.
    pub protocol: u32,
    /// Nodes below this protocol version must stop.
    pub min_protocol: u32,
    /// Babel Hello interval on tunnels, seconds.
    pub hello_interval: u32,
    /// Tunnel manager policy.
    pub tunnel: TunnelPolicy,
    /// Country restrictions when choosing peers.
    pub countries: CountryRules,
    /// The CRL that is in force.
    pub crl: CrlRef,
    /// Ids of the Babel MAC keys (never key bytes).
    pub mac: MacState,
    /// Routes outside the network prefix that nodes may announce: exits and subnet routes
    /// (`mesh registry authorize`). Absent in older documents: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteGrant>,
    /// The network's IPv4 range (`mesh registry params set ipv4=10.42.0.0/16`): each node's
    /// certificate names one address from it, and IPv4 travels over the mesh. Absent (older
    /// documents, and the default): the network carries no IPv4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Net>,
    /// IPv4 subnet routes the registry authorised (`mesh registry authorize NODE route
    /// 192.168.1.0/24`, issue 15). Absent in older documents: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes_v4: Vec<RouteGrantV4>,
}

/// The registry's authorisation of one node to originate one IPv4 prefix (a LAN behind it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteGrantV4 {
    /// The authorised node's prefix.
    pub node: Ipv6Net,
    /// The IPv4 prefix it may announce.
    pub prefix: Ipv4Net,
}

/// Why an IPv4 subnet grant is refused: the default route, host bits set, or overlapping
/// the network's IPv4 range.
pub fn check_grant_v4(range: Option<&Ipv4Net>, prefix: &Ipv4Net) -> Result<(), String> {
    if prefix.prefix_len() == 0 {
        return Err("0.0.0.0/0 is not a subnet route (IPv4 through exits is not supported)".into());
    }
    if *prefix != prefix.trunc() {
        return Err(format!(
            "{prefix} has host bits set (did you mean {}?)",
            prefix.trunc()
        ));
    }
    if let Some(r) = range
        && (r.contains(prefix) || prefix.contains(r))
    {
        return Err(format!(
            "{prefix} overlaps the network's IPv4 range {r}: a subnet route must lie outside it"
        ));
    }
    Ok(())
}

/// What a [`RouteGrant`] lets its node announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// The default route `::/0`, for traffic from the network prefix (an exit node).
    Exit,
    /// A subnet route: an IPv6 prefix outside the network prefix (a LAN behind the node).
    Route,
}

impl GrantKind {
    /// The word used on the command line and in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Exit => "exit",
            GrantKind::Route => "route",
        }
    }
}

impl std::str::FromStr for GrantKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exit" => Ok(GrantKind::Exit),
            "route" => Ok(GrantKind::Route),
            _ => Err(format!("{s:?} is neither `exit` nor `route`")),
        }
    }
}

/// The registry's authorisation of one node to originate one prefix outside the network.
/// The node is named by its prefix: origin checks find its certificate (and so its key)
/// by that prefix, and its router-id is derived from it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteGrant {
    /// The authorised node's prefix.
    pub node: Ipv6Net,
    /// Exit or subnet route.
    pub kind: GrantKind,
    /// The prefix it may announce (`::/0` for an exit).
    pub prefix: Ipv6Net,
}

/// Why a grant is refused (`mesh registry authorize`).
pub fn check_grant(network: &Ipv6Net, kind: GrantKind, prefix: &Ipv6Net) -> Result<(), String> {
    match kind {
        GrantKind::Exit if prefix.prefix_len() != 0 => Err(format!(
            "an exit is authorised for ::/0 (traffic from the network to anywhere), not {prefix}"
        )),
        GrantKind::Exit => Ok(()),
        GrantKind::Route if prefix.prefix_len() == 0 => {
            Err("::/0 is an exit: use `authorize NODE exit ::/0`".into())
        }
        GrantKind::Route if network.contains(prefix) || prefix.contains(network) => Err(format!(
            "{prefix} overlaps the network {network}: a subnet route must lie outside it"
        )),
        GrantKind::Route if *prefix != prefix.trunc() => Err(format!(
            "{prefix} has host bits set (did you mean {}?)",
            prefix.trunc()
        )),
        GrantKind::Route => Ok(()),
    }
}

/// Tunnel manager policy (re6st defaults: 10 / 20 / 300 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelPolicy {
    /// Outgoing tunnels to keep.
    pub client_count: u32,
    /// Incoming tunnels to accept at most.
    pub max_clients: u32,
    /// Seconds between tunnel refreshes.
    pub refresh: u32,
}

/// Country rules: nodes located in a `closed` country only open tunnels to nodes of the
/// same country (re6st's country restriction).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountryRules {
    /// ISO 3166 alpha-2 codes, upper case.
    #[serde(default)]
    pub closed: Vec<String>,
}

/// Reference to the CRL in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlRef {
    /// The CRL number (increases with every revocation).
    pub number: u64,
    /// SHA-256 of the CRL DER, lowercase hex.
    pub sha256: String,
}

/// Which MAC keys are in force, by id (CONVENTIONS: the three-slot cycle).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacState {
    /// Key id used to sign outgoing Babel packets; `None` on a network without MAC.
    pub sign: Option<String>,
    /// Key id additionally accepted on incoming packets.
    pub accept: Option<String>,
    /// Unsigned packets are accepted (only in the transition that introduces MAC).
    #[serde(default)]
    pub accept_unsigned: bool,
}

/// A parameters document exactly as signed, plus its detached signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedParams {
    /// The exact JSON bytes.
    pub document: Vec<u8>,
    /// ECDSA P-256 / SHA-256 signature (ASN.1 DER) by the CA key.
    pub signature: Vec<u8>,
}

/// The JSON transport form of [`SignedParams`] (base64 fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedParamsJson {
    /// base64 of the document bytes.
    pub document: String,
    /// base64 of the signature.
    pub signature: String,
}

/// Why a parameters document is rejected.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    /// The signature does not verify with the network CA.
    #[error("the network parameters are not signed by this network's CA")]
    BadSignature,
    /// The transport encoding is broken.
    #[error("the network parameters are malformed: {0}")]
    Malformed(String),
}

impl SignedParams {
    /// Verifies the signature with the CA certificate, then parses the document.
    pub fn verify(&self, ca_der: &[u8]) -> Result<NetworkParams, ParamsError> {
        crate::identity::verify_signature(ca_der, &self.document, &self.signature)
            .map_err(|_| ParamsError::BadSignature)?;
        serde_json::from_slice(&self.document).map_err(|e| ParamsError::Malformed(e.to_string()))
    }

    /// The transport form.
    pub fn to_json(&self) -> SignedParamsJson {
        SignedParamsJson {
            document: B64.encode(&self.document),
            signature: B64.encode(&self.signature),
        }
    }

    /// Decodes the transport form (does not verify).
    pub fn from_json(j: &SignedParamsJson) -> Result<Self, ParamsError> {
        Ok(SignedParams {
            document: B64
                .decode(&j.document)
                .map_err(|e| ParamsError::Malformed(e.to_string()))?,
            signature: B64
                .decode(&j.signature)
                .map_err(|e| ParamsError::Malformed(e.to_string()))?,
        })
    }
}

impl NetworkParams {
    /// Serialises the document (the registry signs these bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// True when `other` is a newer version than `self`.
    pub fn is_older_than(&self, other: &NetworkParams) -> bool {
        self.version < other.version
    }

    /// Names of the top-level fields that differ (for logs and "what changed").
    pub fn diff(&self, other: &NetworkParams) -> Vec<&'static str> {
        let mut out = Vec::new();
        macro_rules! cmp {
            ($($f:ident),*) => { $( if self.$f != other.$f { out.push(stringify!($f)); } )* };
        }
        cmp!(
            network,
            node_prefix_len,
            protocol,
            min_protocol,
            hello_interval,
            tunnel,
            countries,
            crl,
            mac,
            routes,
            ipv4,
            routes_v4
        );
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(version: u64) -> NetworkParams {
        NetworkParams {
            version,
            issued_at: 1_700_000_000,
            network: "fd00:1::/48".parse().unwrap(),
            node_prefix_len: 64,
            protocol: 1,
            min_protocol: 1,
            hello_interval: 4,
            tunnel: TunnelPolicy {
                client_count: 10,
                max_clients: 20,
                refresh: 300,
            },
            countries: CountryRules::default(),
            crl: CrlRef {
                number: 1,
                sha256: "00".into(),
            },
            mac: MacState {
                sign: Some("k".into()),
                accept: None,
                accept_unsigned: false,
            },
            routes: Vec::new(),
            ipv4: None,
            routes_v4: Vec::new(),
        }
    }

    #[test]
    fn ipv4_range_round_trips_and_older_documents_have_none() {
        let mut p = sample(4);
        let bytes = p.to_bytes();
        assert!(!String::from_utf8_lossy(&bytes).contains("ipv4"));
        let old: NetworkParams = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(old.ipv4, None);
        p.ipv4 = Some("10.42.0.0/16".parse().unwrap());
        let back: NetworkParams = serde_json::from_slice(&p.to_bytes()).unwrap();
        assert_eq!(back.ipv4, p.ipv4);
        assert_eq!(sample(4).diff(&p), vec!["ipv4"]);
    }

    #[test]
    fn route_grants_round_trip_and_older_documents_have_none() {
        let mut p = sample(4);
        p.routes = vec![
            RouteGrant {
                node: "fd00:1:0:2::/64".parse().unwrap(),
                kind: GrantKind::Route,
                prefix: "2001:db8:5::/48".parse().unwrap(),
            },
            RouteGrant {
                node: "fd00:1:0:3::/64".parse().unwrap(),
                kind: GrantKind::Exit,
                prefix: "::/0".parse().unwrap(),
            },
        ];
        let bytes = p.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""kind":"exit""#), "{text}");
        let back: NetworkParams = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, p);
        assert_eq!(sample(4).diff(&p), vec!["routes"]);
        // A document without the field (older registry) parses, with no grants.
        let mut v: serde_json::Value = serde_json::from_slice(&sample(4).to_bytes()).unwrap();
        assert!(v.get("routes").is_none());
        v.as_object_mut().unwrap().remove("routes");
        let old: NetworkParams = serde_json::from_value(v).unwrap();
        assert!(old.routes.is_empty());
    }

    #[test]
    fn grants_outside_the_network_only() {
        let net: Ipv6Net = "fd00:1::/48".parse().unwrap();
        let ok = |k, p: &str| check_grant(&net, k, &p.parse().unwrap());
        assert!(ok(GrantKind::Exit, "::/0").is_ok());
        assert!(ok(GrantKind::Exit, "2001:db8::/32").is_err());
        assert!(ok(GrantKind::Route, "2001:db8::/32").is_ok());
        assert!(ok(GrantKind::Route, "::/0").is_err());
        assert!(ok(GrantKind::Route, "fd00:1:0:5::/64").is_err());
        assert!(ok(GrantKind::Route, "fd00::/8").is_err());
        assert!(ok(GrantKind::Route, "2001:db8::1/32").is_err());
        assert_eq!("exit".parse::<GrantKind>(), Ok(GrantKind::Exit));
        assert!("gateway".parse::<GrantKind>().is_err());
    }

    #[test]
    fn readers_ignore_unknown_fields() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample(3).to_bytes()).unwrap();
        v["future_field"] = serde_json::json!({"x": 1});
        let p: NetworkParams = serde_json::from_value(v).unwrap();
        assert_eq!(p, sample(3));
    }

    #[test]
    fn diff_names_changed_fields() {
        let a = sample(1);
        let mut b = sample(2);
        b.hello_interval = 1;
        b.mac.accept = Some("z".into());
        assert_eq!(a.diff(&b), vec!["hello_interval", "mac"]);
        assert!(a.is_older_than(&b));
    }

    #[test]
    fn transport_form_round_trips_and_rejects_bad_base64() {
        let s = SignedParams {
            document: b"{}".to_vec(),
            signature: vec![1, 2, 3],
        };
        assert_eq!(SignedParams::from_json(&s.to_json()).unwrap(), s);
        let bad = SignedParamsJson {
            document: "***".into(),
            signature: String::new(),
        };
        assert!(SignedParams::from_json(&bad).is_err());
    }
}
