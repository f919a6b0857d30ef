//! The registry: the network's certificate authority and coordinator.
//!
//! State directory layout (all created by [`init`]):
//!
//! | file | what |
//! |---|---|
//! | `ca.key` (0600) | CA private key, PKCS#8 PEM |
//! | `ca.pem` | CA certificate |
//! | `server.key` (0600), `server.pem` | the registry's TLS key and certificate (SAN = host of the URL) |
//! | `registry.db` | SQLite (WAL): tokens, nodes, certificates, MAC slots, CRLs, parameters |
//!
//! [`store`] holds every operation; [`server`] is the HTTPS API over it; the admin
//! commands of the CLI call [`store`] directly, so they work whether or not the server runs.

#![allow(clippy::disallowed_methods)] // IO shell: the registry's state directory: the clock, a random network id

pub mod allocator;
pub mod ca;
pub mod error;
pub mod limits;
pub mod mac;
pub mod server;
pub mod store;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ipnet::Ipv6Net;

pub use error::RegistryError;
use store::{InitOptions, Store};

/// File names inside the registry state directory.
pub mod files {
    /// CA key.
    pub const CA_KEY: &str = "ca.key";
    /// CA certificate.
    pub const CA_CERT: &str = "ca.pem";
    /// Server key.
    pub const SERVER_KEY: &str = "server.key";
    /// Server certificate.
    pub const SERVER_CERT: &str = "server.pem";
    /// Database.
    pub const DB: &str = "registry.db";
}

/// An opened registry state directory.
pub struct Registry {
    /// The state directory.
    pub dir: PathBuf,
    /// The CA.
    pub ca: ca::Ca,
}

/// Current time, Unix seconds (the IO shell reads the clock; the store takes it as input).
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A random ULA /48 (RFC 4193: fd00::/8 + 40-bit random global id).
pub fn random_ula48() -> Ipv6Net {
    let gid: [u8; 5] = rand::random();
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..6].copy_from_slice(&gid);
    Ipv6Net::new(b.into(), 48).unwrap_or_default()
}

/// The host part of an https URL (brackets removed for IPv6 literals).
pub fn url_host(url: &str) -> anyhow::Result<String> {
    crate::token::url_host(url)
        .with_context(|| format!("the registry URL {url:?} must look like https://HOST[:PORT]"))
}

/// `mesh registry init`: creates the CA, the server certificate, the database, the first
/// MAC key and parameters. Refuses to touch an existing registry.
pub fn init(dir: &Path, opts: &InitOptions) -> anyhow::Result<Registry> {
    let host = url_host(&opts.url)?;
    for f in [files::CA_KEY, files::CA_CERT, files::DB] {
        if dir.join(f).exists() {
            bail!(
                "a registry already exists in {} (found {f}); refusing to overwrite it",
                dir.display()
            );
        }
    }
    if opts.node_prefix_len < opts.network.prefix_len() || opts.node_prefix_len > 128 {
        bail!(
            "node prefix length /{} does not fit inside the network {}",
            opts.node_prefix_len,
            opts.network
        );
    }
    if opts.node_prefix_len > store::MAX_NODE_PREFIX_LEN {
        bail!(
            "a node prefix must be /{} or shorter, not /{}: the node's address is prefix::1",
            store::MAX_NODE_PREFIX_LEN,
            opts.node_prefix_len
        );
    }
    crate::fsutil::create_private_dir(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let now_t = time::OffsetDateTime::now_utc();
    let ca = ca::Ca::generate(&opts.network, now_t)?;
    let (server_der, server_key) = ca.issue_server(&host, now_t)?;
    let w = |name: &str, bytes: &[u8], mode: u32| {
        crate::fsutil::write_atomic(&dir.join(name), bytes, mode)
            .with_context(|| format!("cannot write {}", dir.join(name).display()))
    };
    w(files::CA_KEY, ca.key_pem().as_bytes(), 0o600)?;
    w(files::CA_CERT, ca.cert_pem().as_bytes(), 0o644)?;
    w(files::SERVER_KEY, server_key.as_bytes(), 0o600)?;
    w(
        files::SERVER_CERT,
        crate::identity::der_to_pem(&server_der, "CERTIFICATE").as_bytes(),
        0o644,
    )?;
    let mut store = Store::open(&dir.join(files::DB))?;
    store.initialise(&ca, opts, now())?;
    Ok(Registry {
        dir: dir.to_path_buf(),
        ca,
    })
}

impl Registry {
    /// Opens an existing registry.
    pub fn open(dir: &Path) -> anyhow::Result<Registry> {
        if !dir.join(files::DB).exists() {
            bail!(
                "no registry in {} — create one with `mesh registry init --state-dir {}`",
                dir.display(),
                dir.display()
            );
        }
        let key = std::fs::read_to_string(dir.join(files::CA_KEY))
            .with_context(|| format!("cannot read the CA key in {}", dir.display()))?;
        let cert = std::fs::read_to_string(dir.join(files::CA_CERT))
            .with_context(|| format!("cannot read the CA certificate in {}", dir.display()))?;
        let der = crate::identity::pem_to_der(&cert, "CERTIFICATE")
            .context("the CA certificate file is damaged")?;
        let ca = ca::Ca::load(&key, der).context("the CA key file is damaged")?;
        Ok(Registry {
            dir: dir.to_path_buf(),
            ca,
        })
    }

    /// Opens the database (one connection per caller).
    pub fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.dir.join(files::DB))?)
    }

    /// The registry URL recorded at init.
    pub fn url(&self) -> anyhow::Result<String> {
        self.store()?
            .config("url")?
            .context("the registry database has no URL")
    }

    /// `mesh registry rekey PREFIX`: revokes the node's certificates and forgets its key;
    /// returns a one-use join token (printable form) that gives the same prefix to a new key.
    pub fn rekey(&self, prefix: &Ipv6Net, expires_at: Option<i64>) -> anyhow::Result<String> {
        let secret = self.store()?.rekey(&self.ca, prefix, expires_at, now())?;
        Ok(crate::token::JoinToken {
            url: self.url()?,
            ca_fingerprint: crate::identity::fingerprint(self.ca.cert_der()),
            secret,
        }
        .encode())
    }

    /// Mints a join token (printable form).
    pub fn create_token(
        &self,
        prefix_len: Option<u8>,
        expires_at: Option<i64>,
        uses: u32,
    ) -> anyhow::Result<String> {
        let secret = self
            .store()?
            .create_token(prefix_len, expires_at, uses, now())?;
        Ok(crate::token::JoinToken {
            url: self.url()?,
            ca_fingerprint: crate::identity::fingerprint(self.ca.cert_der()),
            secret,
        }
        .encode())
    }
}
