//! Route grants: which node may announce which prefix outside the network (issue 15,
//! `mesh registry authorize|unauthorize|grants`). They go into the signed parameters
//! ([`crate::params::RouteGrant`]), where every node's origin check reads them. A grant
//! belongs to the node (its row): it goes when the node's prefix is reclaimed, and a banned
//! node's grants are left out of the parameters (its certificates are revoked anyway).

use super::*;
use crate::params::{GrantKind, RouteGrant, RouteGrantV4, check_grant, check_grant_v4};

/// One row of `mesh registry grants`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GrantRow {
    /// The node's prefix.
    pub node: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// `exit` or `route`.
    pub kind: String,
    /// The prefix it may announce.
    pub prefix: String,
    /// When the grant was made (RFC 3339).
    pub created: String,
    /// The node is banned (the grant is not in the parameters).
    pub banned: bool,
}

/// A node named on the command line: its prefix (CIDR) or its name.
fn resolve_node(tx: &Transaction<'_>, node: &str) -> Result<(i64, Ipv6Net)> {
    let by_prefix = node.parse::<Ipv6Net>().ok().map(|p| p.to_string());
    let row: Option<(i64, String, Option<i64>)> = tx
        .query_row(
            "SELECT id, prefix, banned_at FROM nodes WHERE prefix = ?1 OR (?1 IS NULL AND name = ?2)
             ORDER BY banned_at IS NOT NULL LIMIT 1",
            params![by_prefix, node],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, prefix, banned)) = row else {
        return Err(RegistryError::NotFound(format!(
            "no node has the prefix or name {node:?} (see `mesh registry nodes`)"
        )));
    };
    if banned.is_some() {
        return Err(RegistryError::Conflict(format!(
            "the node {prefix} is banned"
        )));
    }
    Ok((id, parse_prefix(&prefix)?))
}

/// The kind and the prefix (as stored) of a grant: an IPv6 prefix, or an IPv4 one for a
/// subnet route (issue 15, IPv4 over the mesh).
fn parse_grant(tx: &Transaction<'_>, kind: &str, prefix: &str) -> Result<(GrantKind, String)> {
    let kind: GrantKind = kind.parse().map_err(RegistryError::BadRequest)?;
    if let Ok(v4) = prefix.parse::<ipnet::Ipv4Net>() {
        if kind != GrantKind::Route {
            return Err(RegistryError::BadRequest(
                "an exit is authorised for ::/0; IPv4 prefixes are subnet routes only".into(),
            ));
        }
        check_grant_v4(ipv4_range(tx)?.as_ref(), &v4).map_err(RegistryError::BadRequest)?;
        return Ok((kind, v4.to_string()));
    }
    let prefix: Ipv6Net = prefix.parse().map_err(|_| {
        RegistryError::BadRequest(format!("{prefix:?} is not an IPv6 or IPv4 prefix (CIDR)"))
    })?;
    check_grant(&network(tx)?, kind, &prefix).map_err(RegistryError::BadRequest)?;
    Ok((kind, prefix.to_string()))
}

impl Store {
    /// `mesh registry authorize NODE exit|route PREFIX`: lets the node announce `prefix`
    /// (publishes a new parameters version, returned).
    pub fn authorize(
        &mut self,
        ca: &Ca,
        node: &str,
        kind: &str,
        prefix: &str,
        now: i64,
    ) -> Result<u64> {
        let tx = self.tx()?;
        let (kind, prefix) = parse_grant(&tx, kind, prefix)?;
        let (id, node_prefix) = resolve_node(&tx, node)?;
        let added = tx.execute(
            "INSERT OR IGNORE INTO route_grants (node_id, kind, prefix, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![id, kind.as_str(), prefix, now],
        )?;
        if added == 0 {
            return Err(RegistryError::Conflict(format!(
                "the node {node_prefix} is already authorised for {} {prefix}",
                kind.as_str()
            )));
        }
        let v = bump_params(&tx, ca, now)?;
        tx.commit()?;
        Ok(v)
    }

    /// `mesh registry unauthorize NODE exit|route PREFIX`: withdraws a grant (new
    /// parameters version, returned).
    pub fn unauthorize(
        &mut self,
        ca: &Ca,
        node: &str,
        kind: &str,
        prefix: &str,
        now: i64,
    ) -> Result<u64> {
        let tx = self.tx()?;
        let kind: GrantKind = kind.parse().map_err(RegistryError::BadRequest)?;
        let prefix = match prefix.parse::<ipnet::IpNet>() {
            Ok(p) => p.to_string(),
            Err(_) => {
                return Err(RegistryError::BadRequest(format!(
                    "{prefix:?} is not an IPv6 or IPv4 prefix (CIDR)"
                )));
            }
        };
        let (id, node_prefix) = resolve_node(&tx, node)?;
        let gone = tx.execute(
            "DELETE FROM route_grants WHERE node_id = ?1 AND kind = ?2 AND prefix = ?3",
            params![id, kind.as_str(), prefix],
        )?;
        if gone == 0 {
            return Err(RegistryError::NotFound(format!(
                "the node {node_prefix} has no grant for {} {prefix}",
                kind.as_str()
            )));
        }
        let v = bump_params(&tx, ca, now)?;
        tx.commit()?;
        Ok(v)
    }

    /// Every grant, for `mesh registry grants`.
    pub fn grants(&self) -> Result<Vec<GrantRow>> {
        let mut st = self.conn.prepare(
            "SELECT n.prefix, n.name, g.kind, g.prefix, g.created_at, n.banned_at
             FROM route_grants g JOIN nodes n ON n.id = g.node_id
             ORDER BY g.prefix, n.prefix",
        )?;
        let rows = st.query_map([], |r| {
            Ok(GrantRow {
                node: r.get(0)?,
                name: r.get(1)?,
                kind: r.get(2)?,
                prefix: r.get(3)?,
                created: rfc3339(r.get(4)?),
                banned: r.get::<_, Option<i64>>(5)?.is_some(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// The grants of nodes not banned, as the parameters carry them (sorted).
pub(super) fn in_params(conn: &Connection) -> Result<Vec<RouteGrant>> {
    let mut st = conn.prepare(
        "SELECT n.prefix, g.kind, g.prefix FROM route_grants g JOIN nodes n ON n.id = g.node_id
         WHERE n.banned_at IS NULL",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (node, kind, prefix) in rows {
        if prefix.parse::<ipnet::Ipv4Net>().is_ok() {
            continue; // in `routes_v4`
        }
        let kind = kind
            .parse()
            .map_err(|e| RegistryError::Internal(format!("corrupt grant in the database: {e}")))?;
        out.push(RouteGrant {
            node: parse_prefix(&node)?,
            kind,
            prefix: parse_prefix(&prefix)?,
        });
    }
    out.sort();
    Ok(out)
}

/// The IPv4 subnet grants of nodes not banned, as the parameters carry them (sorted).
pub(super) fn in_params_v4(conn: &Connection) -> Result<Vec<RouteGrantV4>> {
    let mut st = conn.prepare(
        "SELECT n.prefix, g.prefix FROM route_grants g JOIN nodes n ON n.id = g.node_id
         WHERE n.banned_at IS NULL AND g.kind = 'route'",
    )?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out: Vec<RouteGrantV4> = Vec::new();
    for (node, prefix) in rows {
        if let Ok(prefix) = prefix.parse::<ipnet::Ipv4Net>() {
            out.push(RouteGrantV4 {
                node: parse_prefix(&node)?,
                prefix,
            });
        }
    }
    out.sort();
    Ok(out)
}
