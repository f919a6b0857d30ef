//! The node's state directory: key (0600), certificate, CA, signed parameters and the
//! registry URL. Every write is atomic.

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
    /// Signed parameters (JSON transport form).
    pub const PARAMS: &str = "params.json";
    /// The CRL named by the parameters (DER), cached by the node.
    pub const CRL: &str = "crl.der";
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
    /// The cached CRL, if any (not verified here).
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
    let params = serde_json::to_vec_pretty(&c.signed_params.to_json())?;
    w(files::PARAMS, &params, 0o644)?;
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

/// Stores parameters (and their CRL when known) taken from the registry or a neighbour.
pub fn save_params(
    dir: &Path,
    signed: &SignedParams,
    crl_der: Option<&[u8]>,
) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(&signed.to_json())?;
    write_atomic(&dir.join(files::PARAMS), &json, 0o644)
        .with_context(|| format!("cannot write {}", dir.join(files::PARAMS).display()))?;
    if let Some(der) = crl_der {
        write_atomic(&dir.join(files::CRL), der, 0o644)
            .with_context(|| format!("cannot write {}", dir.join(files::CRL).display()))?;
    }
    Ok(())
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
    let pj: SignedParamsJson =
        serde_json::from_str(&read(files::PARAMS)?).context("params.json is damaged")?;
    let signed = SignedParams::from_json(&pj)?;
    let params = signed
        .verify(&ca_der)
        .context("params.json is not signed by the network CA")?;
    let crl_der = std::fs::read(dir.join(files::CRL)).ok();
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
