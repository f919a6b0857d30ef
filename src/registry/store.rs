//! The registry's state in SQLite (WAL, `synchronous=FULL`) and every operation on it.
//!
//! Each operation that writes runs in its own `BEGIN IMMEDIATE` transaction, so the admin
//! commands (a separate process) and the server can work on the same file at once; the
//! server caches nothing that an admin command changes. Time comes in as an argument
//! (`now`, Unix seconds).

#![allow(clippy::disallowed_methods)] // IO shell: SQLite store: fresh MAC keys and token secrets from the OS RNG

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use super::allocator;
use super::ca::{Ca, CsrKey};
use super::error::RegistryError;
use super::mac::{self, Slot, Slots};
use crate::params::{self as np, CrlRef, NetworkParams, SignedParams, TunnelPolicy};
use crate::token::hash_secret;

type Result<T> = std::result::Result<T, RegistryError>;

/// What [`Store::revoke`] did (`mesh registry revoke [--json]`).
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    /// A certificate revoked, or a node banned.
    #[serde(flatten)]
    pub what: Revocation,
    /// The parameters version that publishes the new CRL.
    pub params_version: u64,
}

/// A certificate revoked (by serial) or a node banned (by prefix).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Revocation {
    /// That certificate is in the CRL; the node may renew.
    Revoked {
        /// Its serial (hex).
        serial: String,
    },
    /// The node is banned; its certificates are in the CRL.
    Banned {
        /// Its prefix (CIDR).
        prefix: String,
    },
}

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.what {
            Revocation::Banned { prefix } => write!(
                f,
                "banned node {prefix}; its prefix is freed once its certificates expire"
            )?,
            Revocation::Revoked { serial } => write!(f, "revoked certificate {serial}")?,
        }
        write!(f, " (parameters version {})", self.params_version)
    }
}

/// Renewal opens this long before expiry.
pub const RENEW_WINDOW_SECS: i64 = 30 * 86400;
/// Default node certificate validity.
pub const DEFAULT_CERT_VALIDITY_SECS: i64 = 365 * 86400;
/// Default validity of the first certificate of an anonymous join: a node that never shows up
/// gives its prefix back when it expires; a live one renews it half-way.
pub const DEFAULT_ANONYMOUS_VALIDITY_SECS: i64 = 7 * 86400;
/// An unbanned node whose certificates all expired this long ago loses its prefix.
pub const DEFAULT_RECLAIM_AFTER_SECS: i64 = 30 * 86400;
/// A node that reported its endpoints this recently counts as live for bootstrap.
pub const LIVE_SECS: i64 = 15 * 60;
/// A revoked certificate stays in the CRL until this long after its expiry (then every
/// verifier refuses it anyway, clocks a little behind included). Superseded serials thus leave
/// the CRL about 31 days after a renewal in the window.
pub const CRL_KEEP_EXPIRED_SECS: i64 = 86400;
/// Longest node prefix: a node's address is prefix::1, which a /128 cannot hold (two /128
/// nodes fd::/128 and fd::1/128 would both get the address fd::1).
pub const MAX_NODE_PREFIX_LEN: u8 = 127;

/// Settings an admin can change with `mesh registry params set KEY=VALUE`.
pub const SETTABLE: &[(&str, &str)] = &[
    ("protocol", "protocol version announced by the registry"),
    ("min_protocol", "nodes below this protocol version stop"),
    ("hello_interval", "Babel Hello interval on tunnels, seconds"),
    ("client_count", "outgoing tunnels each node keeps"),
    ("max_clients", "incoming tunnels each node accepts"),
    ("tunnel_refresh", "seconds between tunnel refreshes"),
    (
        "closed_countries",
        "comma-separated ISO country codes whose nodes tunnel only among themselves",
    ),
    ("node_prefix_len", "default prefix length of new nodes"),
    ("anonymous", "true: nodes may join without a token"),
    (
        "cert_validity",
        "validity of new node certificates (e.g. 365d, 2s)",
    ),
    (
        "ipv4",
        "IPv4 range of the network (e.g. 10.42.0.0/16; `off`, the default: no IPv4): each node gets one address from it",
    ),
    (
        "anonymous_validity",
        "validity of the first certificate of a node that joined without a token (e.g. 7d)",
    ),
];

/// One row of `mesh registry nodes`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeRow {
    /// Node prefix (CIDR).
    pub prefix: String,
    /// Serial of its newest certificate.
    pub serial: String,
    /// Expiry of that certificate (RFC 3339).
    pub expires: String,
    /// That certificate is revoked.
    pub revoked: bool,
    /// The node is banned.
    pub banned: bool,
    /// Last contact (RFC 3339), if any.
    pub last_seen: Option<String>,
    /// Protocol version it reported.
    pub protocol: Option<u32>,
    /// Its name (in its certificate), if it has one.
    pub name: Option<String>,
}

/// One row of `mesh registry token list`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenRow {
    /// Id to use with `token delete`.
    pub id: i64,
    /// Prefix length the token hands out.
    pub prefix_len: u8,
    /// Expiry (RFC 3339), if any.
    pub expires: Option<String>,
    /// Uses left.
    pub uses_left: u32,
    /// Uses granted.
    pub uses_total: u32,
    /// Creation time (RFC 3339).
    pub created: String,
}

/// A certificate handed out by join or renew.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate DER.
    pub cert_der: Vec<u8>,
    /// Node prefix.
    pub prefix: Ipv6Net,
    /// Serial hex.
    pub serial: String,
}

/// The node behind an authenticated request.
#[derive(Debug, Clone)]
pub struct AuthNode {
    /// Row id.
    pub node_id: i64,
    /// Prefix.
    pub prefix: Ipv6Net,
    /// Serial of the presented certificate.
    pub serial: String,
    /// That serial is revoked.
    pub revoked: bool,
}

/// Options of `mesh registry init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Network prefix.
    pub network: Ipv6Net,
    /// Registry URL (`https://host:port`).
    pub url: String,
    /// Default node prefix length.
    pub node_prefix_len: u8,
    /// Allow joins without a token.
    pub anonymous: bool,
    /// Create the network without a MAC key.
    pub no_mac: bool,
}

/// Formats Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn odt(now: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn new_key_slot() -> Slot {
    Slot::Key {
        id: hex::encode(rand::random::<[u8; 8]>()),
        bytes: rand::random(),
    }
}

/// The registry database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (and if needed creates the schema of) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Store { conn })
    }

    fn tx(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// Writes the initial configuration, MAC key, CRL and parameters (version 1).
    pub fn initialise(&mut self, ca: &Ca, opts: &InitOptions, now: i64) -> Result<()> {
        let tx = self.tx()?;
        let exists: i64 = tx.query_row("SELECT COUNT(*) FROM params", [], |r| r.get(0))?;
        if exists > 0 {
            return Err(RegistryError::Conflict(
                "this registry is already initialised".into(),
            ));
        }
        let cfg = [
            ("network", opts.network.to_string()),
            ("url", opts.url.clone()),
            ("node_prefix_len", opts.node_prefix_len.to_string()),
            ("anonymous", opts.anonymous.to_string()),
            ("protocol", np::PROTOCOL_VERSION.to_string()),
            ("min_protocol", np::PROTOCOL_VERSION.to_string()),
            ("hello_interval", np::DEFAULT_HELLO_INTERVAL.to_string()),
            ("client_count", np::DEFAULT_CLIENT_COUNT.to_string()),
            ("max_clients", np::DEFAULT_MAX_CLIENTS.to_string()),
            ("tunnel_refresh", np::DEFAULT_TUNNEL_REFRESH.to_string()),
            ("closed_countries", String::new()),
            ("cert_validity", DEFAULT_CERT_VALIDITY_SECS.to_string()),
            (
                "anonymous_validity",
                DEFAULT_ANONYMOUS_VALIDITY_SECS.to_string(),
            ),
            ("reclaim_after", DEFAULT_RECLAIM_AFTER_SECS.to_string()),
        ];
        for (k, v) in cfg {
            tx.execute(
                "INSERT INTO config (key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        let slots: Slots = if opts.no_mac {
            [None, None, None]
        } else {
            [Some(new_key_slot()), None, None]
        };
        write_slots(&tx, &slots)?;
        write_crl(&tx, ca, now)?;
        bump_params(&tx, ca, now)?;
        tx.commit()?;
        Ok(())
    }

    /// A configuration value.
    pub fn config(&self, key: &str) -> Result<Option<String>> {
        Ok(get_config(&self.conn, key)?)
    }

    /// Creates a token; returns its secret. `expires_at` is Unix seconds.
    pub fn create_token(
        &mut self,
        prefix_len: Option<u8>,
        expires_at: Option<i64>,
        uses: u32,
        now: i64,
    ) -> Result<[u8; crate::token::SECRET_LEN]> {
        let tx = self.tx()?;
        let network = network(&tx)?;
        let len = match prefix_len {
            Some(l) => l,
            None => cfg_num(&tx, "node_prefix_len")?,
        };
        if len < network.prefix_len() || len > 128 {
            return Err(RegistryError::BadRequest(format!(
                "prefix length /{len} does not fit inside the network {network}"
            )));
        }
        if len > MAX_NODE_PREFIX_LEN {
            return Err(RegistryError::BadRequest(format!(
                "a node prefix must be /{MAX_NODE_PREFIX_LEN} or shorter, not /{len}: the node's address is prefix::1"
            )));
        }
        if uses == 0 {
            return Err(RegistryError::BadRequest(
                "a token needs at least one use".into(),
            ));
        }
        let secret: [u8; crate::token::SECRET_LEN] = rand::random();
        tx.execute(
            "INSERT INTO tokens (secret_hash, prefix_len, expires_at, uses_left, uses_total, created_at)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            params![hash_secret(&secret).to_vec(), len, expires_at, uses, now],
        )?;
        tx.commit()?;
        Ok(secret)
    }

    /// Lists tokens.
    pub fn tokens(&self) -> Result<Vec<TokenRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, prefix_len, expires_at, uses_left, uses_total, created_at FROM tokens ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(TokenRow {
                id: r.get(0)?,
                prefix_len: r.get(1)?,
                expires: r.get::<_, Option<i64>>(2)?.map(rfc3339),
                uses_left: r.get(3)?,
                uses_total: r.get(4)?,
                created: rfc3339(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes a token by id.
    pub fn delete_token(&mut self, id: i64) -> Result<()> {
        let tx = self.tx()?;
        let n = tx.execute("DELETE FROM tokens WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(RegistryError::NotFound(format!(
                "there is no token with id {id}"
            )));
        }
        tx.commit()?;
        Ok(())
    }

    /// Join: a token secret (or none, for anonymous joins) and a verified CSR key.
    pub fn join(
        &mut self,
        ca: &Ca,
        secret: Option<&[u8]>,
        key: &CsrKey,
        now: i64,
    ) -> Result<Issued> {
        self.join_named(ca, secret, key, None, now)
    }

    /// [`Store::join`] asking for a node name (checked by the caller with
    /// `identity::validate_name`): a new node gets it, made unique in the network with `-2`,
    /// `-3`, … when another node holds it; a re-key join keeps the name on record, unless
    /// it had none.
    pub fn join_named(
        &mut self,
        ca: &Ca,
        secret: Option<&[u8]>,
        key: &CsrKey,
        name: Option<&str>,
        now: i64,
    ) -> Result<Issued> {
        if let Some(n) = name {
            crate::identity::validate_name(n)
                .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        }
        let tx = self.tx()?;
        let (len, token_id) = match secret {
            Some(secret) => {
                type Row = (i64, u8, Option<i64>, u32, Option<i64>);
                let row: Option<Row> = tx
                    .query_row(
                        "SELECT id, prefix_len, expires_at, uses_left, node_id FROM tokens WHERE secret_hash = ?1",
                        [hash_secret(secret).to_vec()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                let Some((id, len, expires_at, uses_left, rekey_node)) = row else {
                    return Err(RegistryError::Unauthorized(
                        "this join token is not known to the registry".into(),
                    ));
                };
                // A retry with the same key after a lost response gets the same certificate.
                let previous: Option<String> = tx
                    .query_row(
                        "SELECT serial FROM token_uses WHERE token_id = ?1 AND pubkey = ?2",
                        params![id, key.raw],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(serial) = previous {
                    let (der, prefix): (Vec<u8>, String) = tx.query_row(
                        "SELECT c.der, n.prefix FROM certs c JOIN nodes n ON n.id = c.node_id WHERE c.serial = ?1",
                        [&serial],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    let prefix = parse_prefix(&prefix)?;
                    return Ok(Issued {
                        cert_der: der,
                        prefix,
                        serial,
                    });
                }
                if expires_at.is_some_and(|e| e <= now) {
                    return Err(RegistryError::Forbidden(
                        "this join token has expired".into(),
                    ));
                }
                if uses_left == 0 {
                    return Err(RegistryError::Forbidden(
                        "this join token has already been used".into(),
                    ));
                }
                if let Some(node_id) = rekey_node {
                    if let Some(n) = name {
                        let unique = unique_name(&tx, n, Some(node_id))?;
                        tx.execute(
                            "UPDATE nodes SET name = ?1 WHERE id = ?2 AND name IS NULL",
                            params![unique, node_id],
                        )?;
                    }
                    let issued = rekey_join(&tx, ca, node_id, key, now)?;
                    use_token(&tx, id, key, &issued.serial)?;
                    tx.commit()?;
                    return Ok(issued);
                }
                (len, Some(id))
            }
            None => {
                if get_config(&tx, "anonymous")?.as_deref() != Some("true") {
                    return Err(RegistryError::Unauthorized(
                        "this registry does not accept joins without a token".into(),
                    ));
                }
                (cfg_num(&tx, "node_prefix_len")?, None)
            }
        };
        reclaim(&tx, now)?;
        let network = network(&tx)?;
        let used = used_prefixes(&tx)?;
        let prefix = allocator::allocate(network, &used, len)
            .map_err(|e| RegistryError::Exhausted(e.to_string()))?;
        let name = match name {
            Some(n) => Some(unique_name(&tx, n, None)?),
            None => None,
        };
        tx.execute(
            "INSERT INTO nodes (prefix, pubkey, created_at, name) VALUES (?1, ?2, ?3, ?4)",
            params![prefix.to_string(), key.raw, now, name],
        )?;
        let node_id = tx.last_insert_rowid();
        let issued = issue(&tx, ca, node_id, prefix, key, token_id.is_none(), now)?;
        if let Some(id) = token_id {
            use_token(&tx, id, key, &issued.serial)?;
        }
        tx.commit()?;
        Ok(issued)
    }

    /// `mesh registry rekey PREFIX`: for a node whose key was lost or stolen. Revokes every
    /// certificate of the node (new CRL and parameters), forgets its key so that no renewal
    /// succeeds, and mints a one-use token bound to the node: `mesh join` with it and a new
    /// key gives the node a certificate for the same prefix. Returns the token secret.
    pub fn rekey(
        &mut self,
        ca: &Ca,
        prefix: &Ipv6Net,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<[u8; crate::token::SECRET_LEN]> {
        let tx = self.tx()?;
        let node: Option<(i64, Option<i64>)> = tx
            .query_row(
                "SELECT id, banned_at FROM nodes WHERE prefix = ?1",
                [prefix.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((node_id, banned)) = node else {
            return Err(RegistryError::NotFound(format!(
                "no node has the prefix {prefix}"
            )));
        };
        if banned.is_some() {
            return Err(RegistryError::Conflict(format!(
                "the node {prefix} is banned; a banned node cannot be re-keyed"
            )));
        }
        tx.execute(
            "UPDATE certs SET revoked_at = ?1 WHERE node_id = ?2 AND revoked_at IS NULL",
            params![now, node_id],
        )?;
        tx.execute("UPDATE nodes SET pubkey = X'' WHERE id = ?1", [node_id])?;
        // an earlier re-key token of this node is replaced
        tx.execute(
            "DELETE FROM tokens WHERE node_id = ?1 AND id NOT IN (SELECT token_id FROM token_uses)",
            [node_id],
        )?;
        let secret: [u8; crate::token::SECRET_LEN] = rand::random();
        tx.execute(
            "INSERT INTO tokens (secret_hash, prefix_len, expires_at, uses_left, uses_total, created_at, node_id)
             VALUES (?1, ?2, ?3, 1, 1, ?4, ?5)",
            params![
                hash_secret(&secret).to_vec(),
                prefix.prefix_len(),
                expires_at,
                now,
                node_id
            ],
        )?;
        write_crl(&tx, ca, now)?;
        bump_params(&tx, ca, now)?;
        tx.commit()?;
        Ok(secret)
    }

    /// Identifies the node behind a client certificate; refuses unknown serials, banned
    /// nodes and expired certificates. Revoked serials are reported, not refused (renew
    /// needs them).
    pub fn authenticate(&self, serial: &str, now: i64) -> Result<AuthNode> {
        authenticate(&self.conn, serial, now)
    }

    /// Like [`Store::authenticate`], and also refuses revoked serials.
    pub fn authenticate_valid(&self, serial: &str, now: i64) -> Result<AuthNode> {
        let node = self.authenticate(serial, now)?;
        if node.revoked {
            return Err(RegistryError::Forbidden(
                "this certificate is revoked; renew it before using the network".into(),
            ));
        }
        Ok(node)
    }

    /// Renew: within [`RENEW_WINDOW_SECS`] of expiry, or at any time when revoked by serial
    /// (or superseded), and only for the key on record. The new certificate supersedes
    /// (revokes, in a new CRL and parameters version) the node's older ones.
    ///
    /// Every check runs inside the transaction that issues the certificate: a ban or a
    /// revocation committed while this call waits for the write lock is seen, so it cannot
    /// issue a certificate that the ban's CRL does not list.
    pub fn renew(&mut self, ca: &Ca, serial: &str, key: &CsrKey, now: i64) -> Result<Issued> {
        let tx = self.tx()?;
        let node = authenticate(&tx, serial, now)?;
        let not_after: i64 = tx.query_row(
            "SELECT not_after FROM certs WHERE serial = ?1",
            [serial],
            |r| r.get(0),
        )?;
        if !node.revoked && not_after - now > RENEW_WINDOW_SECS {
            return Err(RegistryError::Conflict(format!(
                "too early to renew: renewal opens 30 days before expiry ({})",
                rfc3339(not_after - RENEW_WINDOW_SECS)
            )));
        }
        let on_record: Vec<u8> = tx.query_row(
            "SELECT pubkey FROM nodes WHERE id = ?1",
            [node.node_id],
            |r| r.get(0),
        )?;
        if on_record != key.raw {
            return Err(RegistryError::Forbidden(
                "a renewal keeps the node's key, and this request is for another key; \
                 a node that lost its key (or whose key was stolen) needs the registry admin \
                 (`mesh registry rekey PREFIX`)"
                    .into(),
            ));
        }
        let issued = issue(&tx, ca, node.node_id, node.prefix, key, false, now)?;
        tx.execute(
            "UPDATE nodes SET last_seen = ?1 WHERE id = ?2",
            params![now, node.node_id],
        )?;
        // The new certificate supersedes every older one of the node: one valid certificate
        // per prefix, published in the same transaction.
        let superseded = tx.execute(
            "UPDATE certs SET revoked_at = ?1 WHERE node_id = ?2 AND serial != ?3 AND revoked_at IS NULL",
            params![now, node.node_id, issued.serial],
        )?;
        if superseded > 0 {
            write_crl(&tx, ca, now)?;
            bump_params(&tx, ca, now)?;
        }
        tx.commit()?;
        Ok(issued)
    }

    /// Revokes one certificate by serial (the node may renew), or bans the node owning a
    /// prefix (its serials revoked; its prefix freed once they have expired). Returns a
    /// description of what was done.
    pub fn revoke(&mut self, ca: &Ca, target: &str, now: i64) -> Result<Revoked> {
        let tx = self.tx()?;
        let what = if let Ok(prefix) = target.parse::<Ipv6Net>() {
            let node: Option<(i64, Option<i64>)> = tx
                .query_row(
                    "SELECT id, banned_at FROM nodes WHERE prefix = ?1",
                    [prefix.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((id, banned)) = node else {
                return Err(RegistryError::NotFound(format!(
                    "no node has the prefix {prefix}"
                )));
            };
            if banned.is_some() {
                return Err(RegistryError::Conflict(format!(
                    "the node {prefix} is already banned"
                )));
            }
            tx.execute(
                "UPDATE nodes SET banned_at = ?1 WHERE id = ?2",
                params![now, id],
            )?;
            tx.execute(
                "UPDATE certs SET revoked_at = ?1 WHERE node_id = ?2 AND revoked_at IS NULL",
                params![now, id],
            )?;
            Revocation::Banned {
                prefix: prefix.to_string(),
            }
        } else {
            let serial = target.trim().trim_start_matches("0x").to_ascii_lowercase();
            let serial = match hex::decode(&serial) {
                Ok(b) if !b.is_empty() => crate::identity::serial_hex(&b),
                _ => {
                    return Err(RegistryError::BadRequest(format!(
                        "{target:?} is neither a prefix (CIDR) nor a certificate serial (hex)"
                    )));
                }
            };
            let row: Option<Option<i64>> = tx
                .query_row(
                    "SELECT revoked_at FROM certs WHERE serial = ?1",
                    [&serial],
                    |r| r.get(0),
                )
                .optional()?;
            match row {
                None => {
                    return Err(RegistryError::NotFound(format!(
                        "no certificate has the serial {serial}"
                    )));
                }
                Some(Some(_)) => {
                    return Err(RegistryError::Conflict(format!(
                        "the certificate {serial} is already revoked"
                    )));
                }
                Some(None) => {}
            }
            tx.execute(
                "UPDATE certs SET revoked_at = ?1 WHERE serial = ?2",
                params![now, serial],
            )?;
            Revocation::Revoked { serial }
        };
        write_crl(&tx, ca, now)?;
        let v = bump_params(&tx, ca, now)?;
        tx.commit()?;
        Ok(Revoked {
            what,
            params_version: v,
        })
    }

    /// Nodes for `mesh registry nodes`, each with its newest certificate (the last one
    /// inserted: a renewal in the same second as the previous issue ties on `issued_at`).
    pub fn nodes(&self) -> Result<Vec<NodeRow>> {
        let mut st = self.conn.prepare(
            "SELECT n.prefix, c.serial, c.not_after, c.revoked_at, n.banned_at, n.last_seen, n.protocol, n.name
             FROM nodes n JOIN certs c ON c.rowid = (
                 SELECT rowid FROM certs WHERE node_id = n.id ORDER BY issued_at DESC, rowid DESC LIMIT 1)
             ORDER BY n.prefix",
        )?;
        let rows = st.query_map([], |r| {
            Ok(NodeRow {
                prefix: r.get(0)?,
                serial: r.get(1)?,
                expires: rfc3339(r.get(2)?),
                revoked: r.get::<_, Option<i64>>(3)?.is_some(),
                banned: r.get::<_, Option<i64>>(4)?.is_some(),
                last_seen: r.get::<_, Option<i64>>(5)?.map(rfc3339),
                protocol: r.get(6)?,
                name: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest signed parameters.
    /// The version of the newest parameters document (cheap: what watchers compare).
    pub fn params_version(&self) -> Result<u64> {
        let v: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(version), 0) FROM params", [], |r| {
                    r.get(0)
                })?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    pub fn params(&self) -> Result<SignedParams> {
        Ok(self.conn.query_row(
            "SELECT document, signature FROM params ORDER BY version DESC LIMIT 1",
            [],
            |r| {
                Ok(SignedParams {
                    document: r.get(0)?,
                    signature: r.get(1)?,
                })
            },
        )?)
    }

    /// The newest CRL (DER).
    pub fn crl(&self) -> Result<Vec<u8>> {
        Ok(self.conn.query_row(
            "SELECT der FROM crl ORDER BY number DESC LIMIT 1",
            [],
            |r| r.get(0),
        )?)
    }

    /// Sets one parameter and publishes a new parameters version.
    pub fn set_param(&mut self, ca: &Ca, key: &str, value: &str, now: i64) -> Result<u64> {
        let value = validate_setting(key, value)?;
        let tx = self.tx()?;
        if key == "node_prefix_len" {
            let network = network(&tx)?;
            let len: u8 = value
                .parse()
                .map_err(|_| RegistryError::BadRequest("bad length".into()))?;
            if len < network.prefix_len() {
                return Err(RegistryError::BadRequest(format!(
                    "node_prefix_len /{len} is shorter than the network {network}"
                )));
            }
        }
        if key == "ipv4"
            && let Ok(range) = value.parse::<Ipv4Net>()
        {
            let outside: Vec<Ipv4Addr> = used_ipv4(&tx)?
                .into_iter()
                .filter(|a| !range.contains(a))
                .collect();
            if let Some(a) = outside.first() {
                return Err(RegistryError::Conflict(format!(
                    "{} node(s) hold IPv4 addresses outside {range} (e.g. {a}), in certificates \
                     that may still be valid; choose a range that contains them",
                    outside.len()
                )));
            }
        }
        tx.execute(
            "INSERT INTO config (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        let v = bump_params(&tx, ca, now)?;
        tx.commit()?;
        Ok(v)
    }

    /// One step of the MAC key cycle; returns the new parameters version.
    pub fn rotate_mac(&mut self, ca: &Ca, now: i64) -> Result<u64> {
        let tx = self.tx()?;
        let slots = read_slots(&tx)?;
        write_slots(&tx, &mac::rotate(&slots, new_key_slot()))?;
        let v = bump_params(&tx, ca, now)?;
        tx.commit()?;
        Ok(v)
    }

    /// The MAC keys the current parameters reference (id, bytes).
    pub fn mac_keys(&self) -> Result<Vec<(String, [u8; 32])>> {
        Ok(read_slots(&self.conn)?
            .into_iter()
            .flatten()
            .filter_map(|s| match s {
                Slot::Key { id, bytes } => Some((id, bytes)),
                Slot::Unsigned => None,
            })
            .collect())
    }

    /// Records a node's endpoints and protocol version (and that it is alive).
    pub fn set_endpoints(
        &mut self,
        node_id: i64,
        endpoints: &[SocketAddr],
        protocol: u32,
        now: i64,
    ) -> Result<()> {
        let json =
            serde_json::to_string(endpoints).map_err(|e| RegistryError::Internal(e.to_string()))?;
        let tx = self.tx()?;
        tx.execute(
            "UPDATE nodes SET endpoints = ?1, protocol = ?2, last_seen = ?3 WHERE id = ?4",
            params![json, protocol, now, node_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a node as seen.
    pub fn touch(&self, node_id: i64, now: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE nodes SET last_seen = ?1 WHERE id = ?2",
            params![now, node_id],
        )?;
        Ok(())
    }

    /// Up to `limit` random other live nodes with endpoints, not banned and with a valid
    /// certificate, and how many there are in all.
    pub fn bootstrap(&self, except: i64, now: i64, limit: usize) -> Result<LivePeers> {
        const LIVE: &str = "FROM nodes n
             WHERE n.id != ?1 AND n.banned_at IS NULL AND n.endpoints != '[]' AND n.last_seen >= ?2
               AND EXISTS (SELECT 1 FROM certs c WHERE c.node_id = n.id AND c.revoked_at IS NULL AND c.not_after > ?3)";
        let args = params![except, now - LIVE_SECS, now];
        let live: u32 = self
            .conn
            .query_row(&format!("SELECT count(*) {LIVE}"), args, |r| r.get(0))?;
        let mut stmt = self.conn.prepare(&format!(
            "SELECT n.prefix, n.endpoints {LIVE} ORDER BY random() LIMIT {}",
            limit.min(1000)
        ))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if rows.is_empty() {
            return Err(RegistryError::NotFound(
                "no other live node is known yet".into(),
            ));
        }
        let mut out = Vec::with_capacity(rows.len());
        for (prefix, endpoints) in rows {
            let endpoints = serde_json::from_str(&endpoints)
                .map_err(|e| RegistryError::Internal(e.to_string()))?;
            out.push((parse_prefix(&prefix)?, endpoints));
        }
        Ok(LivePeers { peers: out, live })
    }
}

/// [`Store::bootstrap`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePeers {
    /// Prefix and endpoints of each node named.
    pub peers: Vec<(Ipv6Net, Vec<SocketAddr>)>,
    /// Live nodes in all (the asker left out).
    pub live: u32,
}

/// [`Store::authenticate`] on a connection or inside a transaction.
fn authenticate(conn: &Connection, serial: &str, now: i64) -> Result<AuthNode> {
    type Row = (i64, String, i64, Option<i64>, Option<i64>);
    let row: Option<Row> = conn
        .query_row(
            "SELECT n.id, n.prefix, c.not_after, c.revoked_at, n.banned_at
             FROM certs c JOIN nodes n ON n.id = c.node_id WHERE c.serial = ?1",
            [serial],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((node_id, prefix, not_after, revoked_at, banned_at)) = row else {
        return Err(RegistryError::Unauthorized(
            "this certificate was not issued by this registry (or its node was removed)".into(),
        ));
    };
    if banned_at.is_some() {
        return Err(RegistryError::Forbidden(
            "this node is banned from the network".into(),
        ));
    }
    if not_after <= now {
        return Err(RegistryError::Expired);
    }
    Ok(AuthNode {
        node_id,
        prefix: parse_prefix(&prefix)?,
        serial: serial.to_owned(),
        revoked: revoked_at.is_some(),
    })
}

fn parse_prefix(s: &str) -> Result<Ipv6Net> {
    s.parse()
        .map_err(|_| RegistryError::Internal(format!("corrupt prefix {s:?} in the database")))
}

fn get_config(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM config WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
}

fn cfg_num<T: std::str::FromStr>(conn: &Connection, key: &str) -> Result<T> {
    get_config(conn, key)?
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            RegistryError::Internal(format!("configuration value {key} is missing or invalid"))
        })
}

fn network(conn: &Connection) -> Result<Ipv6Net> {
    let v = get_config(conn, "network")?
        .ok_or_else(|| RegistryError::Internal("the registry is not initialised".into()))?;
    parse_prefix(&v)
}

#[path = "store_nodes.rs"]
mod nodes;
#[path = "store_params.rs"]
mod params_io;
#[path = "store_schema.rs"]
mod schema;
use nodes::{
    ipv4_range, issue, reclaim, rekey_join, unique_name, use_token, used_ipv4, used_prefixes,
};
use params_io::{bump_params, read_slots, validate_setting, write_crl, write_slots};
use schema::{SCHEMA, migrate};

#[path = "grants.rs"]
mod grants;
pub use grants::GrantRow;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
