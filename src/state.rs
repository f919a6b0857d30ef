//! The node's state directory: key (0600), certificate, CA, signed parameters with their CRL
//! and the registry URL. Every write is atomic; the parameters and the CRL are one file, so
//! they are stored as a unit (a crash never leaves new parameters next to an old CRL file).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::fsutil::{create_private_dir, write_atomic};
use crate::identity;
use crate::params::{NetworkParams, SignedParams, SignedParamsJson};
use crate::registry_client::{Certified, NodeKey};

/// File names in the node state directory.
pub mod files {
    /// Node key (PKCS#8 PEM, 0600).
    pub const KEY: &str = "node.key";
    /// Node certificate (PEM).
    pub const CERT: &str = "node.pem";
    /// Network CA (PEM).
    pub const CA: &str = "ca.pem";
    /// Signed parameters and the CRL stored with them, one JSON document
    /// ([`super::StoredNetwork`]).
    pub const NETWORK: &str = "network.json";
    /// Earlier versions: the signed parameters alone (read when `network.json` is missing).
    pub const LEGACY_PARAMS: &str = "params.json";
    /// Earlier versions: the CRL alone (read with `params.json`).
    pub const LEGACY_CRL: &str = "crl.der";
    /// Known peers (the node's peer cache).
    pub const PEERS: &str = "peers.json";
    /// Node facts (registry URL, prefix).
    pub const NODE: &str = "node.json";
}

/// `node.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFacts {
    /// Registry URL.
    pub registry_url: String,
    /// Node prefix.
    pub prefix: ipnet::Ipv6Net,
}

/// `network.json`: the signed parameters and the CRL stored with them — the one they name,
/// or while that one is wanted the last CRL verified (its revocations stay in force).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredNetwork {
    /// Signed parameters.
    pub params: SignedParamsJson,
    /// The CRL (base64 DER), when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<String>,
}

/// A joined node's state.
pub struct NodeState {
    /// Directory.
    pub dir: PathBuf,
    /// Key.
    pub key: NodeKey,
    /// Certificate (DER).
    pub cert_der: Vec<u8>,
    /// CA (DER).
    pub ca_der: Vec<u8>,
    /// Facts.
    pub facts: NodeFacts,
    /// Parameters (verified at load).
    pub params: NetworkParams,
    /// Their signed form.
    pub signed: SignedParams,
    /// The stored CRL, if any (not verified here).
    pub crl_der: Option<Vec<u8>>,
}

/// True when `dir` holds a joined node.
pub fn is_joined(dir: &Path) -> bool {
    dir.join(files::CERT).exists() && dir.join(files::KEY).exists()
}

/// Writes the key (once) and everything a join or renewal returned.
pub fn save(dir: &Path, registry_url: &str, key: &NodeKey, c: &Certified) -> anyhow::Result<()> {
    create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let w = |name: &str, bytes: &[u8], mode: u32| {
        write_atomic(&dir.join(name), bytes, mode)
            .with_context(|| format!("cannot write {}", dir.join(name).display()))
    };
    w(files::KEY, key.to_pem().as_bytes(), 0o600)?;
    w(
        files::CA,
        identity::der_to_pem(&c.ca_der, "CERTIFICATE").as_bytes(),
        0o644,
    )?;
    write_network(dir, &c.signed_params, None)?;
    let facts = serde_json::to_vec_pretty(&NodeFacts {
        registry_url: registry_url.to_owned(),
        prefix: c.prefix,
    })?;
    w(files::NODE, &facts, 0o644)?;
    // The certificate last: its presence marks the node as joined.
    w(
        files::CERT,
        identity::der_to_pem(&c.cert_der, "CERTIFICATE").as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// Stores a renewed certificate (same key, same prefix).
pub fn save_cert(dir: &Path, cert_der: &[u8]) -> anyhow::Result<()> {
    write_atomic(
        &dir.join(files::CERT),
        identity::der_to_pem(cert_der, "CERTIFICATE").as_bytes(),
        0o644,
    )
    .with_context(|| format!("cannot write {}", dir.join(files::CERT).display()))
}

/// Stores parameters and the CRL to keep with them (see [`StoredNetwork`]) in one atomic
/// write.
pub fn save_params(
    dir: &Path,
    signed: &SignedParams,
    crl_der: Option<&[u8]>,
) -> anyhow::Result<()> {
    write_network(dir, signed, crl_der)
}

fn write_network(dir: &Path, signed: &SignedParams, crl_der: Option<&[u8]>) -> anyhow::Result<()> {
    use base64::Engine as _;
    let doc = StoredNetwork {
        params: signed.to_json(),
        crl: crl_der.map(|d| base64::engine::general_purpose::STANDARD.encode(d)),
    };
    let path = dir.join(files::NETWORK);
    write_atomic(&path, &serde_json::to_vec_pretty(&doc)?, 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The files of an older version, now superseded (their content is in network.json).
    for old in [files::LEGACY_PARAMS, files::LEGACY_CRL] {
        let _ = std::fs::remove_file(dir.join(old));
    }
    Ok(())
}

/// Reads `network.json`, or the two files an older version wrote.
fn read_network(dir: &Path) -> anyhow::Result<(SignedParamsJson, Option<Vec<u8>>)> {
    use base64::Engine as _;
    let path = dir.join(files::NETWORK);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let doc: StoredNetwork = serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged", path.display()))?;
            let crl = doc
                .crl
                .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
                .transpose()
                .with_context(|| format!("the CRL in {} is damaged", path.display()))?;
            Ok((doc.params, crl))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let legacy = dir.join(files::LEGACY_PARAMS);
            let text = std::fs::read_to_string(&legacy).with_context(|| {
                format!("cannot read {} (nor {})", path.display(), legacy.display())
            })?;
            let pj: SignedParamsJson = serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged", legacy.display()))?;
            Ok((pj, std::fs::read(dir.join(files::LEGACY_CRL)).ok()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Loads and checks a joined node's state.
pub fn load(dir: &Path) -> anyhow::Result<NodeState> {
    if !is_joined(dir) {
        bail!(
            "this node has not joined a network yet (no certificate in {}); run `mesh join <TOKEN>`",
            dir.display()
        );
    }
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .with_context(|| format!("cannot read {}", dir.join(name).display()))
    };
    let key = NodeKey::from_pem(&read(files::KEY)?)?;
    let cert_der =
        identity::pem_to_der(&read(files::CERT)?, "CERTIFICATE").context("node.pem is damaged")?;
    let ca_der =
        identity::pem_to_der(&read(files::CA)?, "CERTIFICATE").context("ca.pem is damaged")?;
    let facts: NodeFacts =
        serde_json::from_str(&read(files::NODE)?).context("node.json is damaged")?;
    let (pj, crl_der) = read_network(dir)?;
    let signed = SignedParams::from_json(&pj)?;
    let params = signed
        .verify(&ca_der)
        .context("the stored parameters are not signed by the network CA")?;
    Ok(NodeState {
        dir: dir.to_path_buf(),
        key,
        cert_der,
        ca_der,
        facts,
        params,
        signed,
        crl_der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{CrlRef, MacState, NetworkParams, TunnelPolicy};
    use crate::registry::ca::Ca;

    fn signed(ca: &Ca) -> SignedParams {
        let p = NetworkParams {
            version: 3,
            issued_at: 0,
            network: "fd00:1::/48".parse().unwrap(),
            node_prefix_len: 64,
            protocol: crate::params::PROTOCOL_VERSION,
            min_protocol: 1,
            hello_interval: 4,
            tunnel: TunnelPolicy {
                client_count: 3,
                max_clients: 2,
                refresh: 300,
            },
            countries: Default::default(),
            crl: CrlRef {
                number: 1,
                sha256: "00".repeat(32),
            },
            mac: MacState::default(),
            routes: Vec::new(),
            ipv4: None,
            routes_v4: Vec::new(),
        };
        let document = p.to_bytes();
        SignedParams {
            signature: ca.sign(&document).unwrap(),
            document,
        }
    }

    #[test]
    fn parameters_and_crl_are_one_file_and_the_older_two_files_are_read_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let ca = Ca::generate(&"fd00:1::/48".parse().unwrap(), now).unwrap();
        let s = signed(&ca);
        // an older version's layout
        std::fs::write(
            dir.path().join(files::LEGACY_PARAMS),
            serde_json::to_vec(&s.to_json()).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join(files::LEGACY_CRL), b"crl-bytes").unwrap();
        let (pj, crl) = read_network(dir.path()).unwrap();
        assert_eq!(SignedParams::from_json(&pj).unwrap(), s);
        assert_eq!(crl.as_deref(), Some(&b"crl-bytes"[..]));
        // the next save writes one file and removes the two
        save_params(dir.path(), &s, Some(b"newer-crl")).unwrap();
        assert!(!dir.path().join(files::LEGACY_PARAMS).exists());
        assert!(!dir.path().join(files::LEGACY_CRL).exists());
        let (pj, crl) = read_network(dir.path()).unwrap();
        assert_eq!(SignedParams::from_json(&pj).unwrap(), s);
        assert_eq!(crl.as_deref(), Some(&b"newer-crl"[..]));
        // without a CRL
        save_params(dir.path(), &s, None).unwrap();
        assert_eq!(read_network(dir.path()).unwrap().1, None);
        // a damaged file is an error that names it, not an empty CRL
        std::fs::write(dir.path().join(files::NETWORK), b"{\"params\": 1}").unwrap();
        let e = format!("{:#}", read_network(dir.path()).unwrap_err());
        assert!(e.contains("network.json is damaged"), "{e}");
    }
}
