//! The registry database's schema: the tables a new database is created with
//! ([`SCHEMA`]) and the migrations that bring a database made by an older version up to
//! it ([`migrate`]), run by [`Store::open`](super::Store::open) on every open.

use super::*;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY,
    secret_hash BLOB NOT NULL UNIQUE,
    prefix_len INTEGER NOT NULL,
    expires_at INTEGER,
    uses_left INTEGER NOT NULL,
    uses_total INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    node_id INTEGER REFERENCES nodes(id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS token_uses (
    token_id INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    pubkey BLOB NOT NULL,
    serial TEXT NOT NULL,
    PRIMARY KEY (token_id, pubkey));
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY,
    prefix TEXT NOT NULL UNIQUE,
    pubkey BLOB NOT NULL,
    banned_at INTEGER,
    created_at INTEGER NOT NULL,
    last_seen INTEGER,
    protocol INTEGER,
    endpoints TEXT NOT NULL DEFAULT '[]',
    name TEXT,
    ipv4 TEXT);
CREATE TABLE IF NOT EXISTS certs (
    serial TEXT PRIMARY KEY,
    node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    der BLOB NOT NULL,
    not_after INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    revoked_at INTEGER);
CREATE INDEX IF NOT EXISTS certs_node ON certs(node_id);
CREATE TABLE IF NOT EXISTS mac_slots (
    slot INTEGER PRIMARY KEY CHECK (slot IN (0, 1, 2)),
    key_id TEXT,
    key BLOB);
CREATE TABLE IF NOT EXISTS params (
    version INTEGER PRIMARY KEY,
    document BLOB NOT NULL,
    signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS crl (number INTEGER PRIMARY KEY, der BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS route_grants (
    node_id INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('exit', 'route')),
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (node_id, kind, prefix));
";

/// Brings a database created by an older version up to [`SCHEMA`].
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    let has_node_id: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('tokens') WHERE name = 'node_id'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_node_id {
        // a re-key token is bound to its node (`mesh registry rekey`)
        conn.execute_batch(
            "ALTER TABLE tokens ADD COLUMN node_id INTEGER REFERENCES nodes(id) ON DELETE CASCADE",
        )?;
    }
    let has_name: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('nodes') WHERE name = 'name'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_name {
        // node names (chosen at join, in the certificate)
        conn.execute_batch("ALTER TABLE nodes ADD COLUMN name TEXT")?;
    }
    let has_ipv4: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('nodes') WHERE name = 'ipv4'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_ipv4 {
        // the node's address in the network's IPv4 range (`params set ipv4=RANGE`)
        conn.execute_batch("ALTER TABLE nodes ADD COLUMN ipv4 TEXT")?;
    }
    conn.execute_batch("CREATE UNIQUE INDEX IF NOT EXISTS nodes_ipv4 ON nodes(ipv4)")?;
    Ok(())
}
