//! Node lifecycle helpers of [`Store`](super::Store): unique node names, issuing a
//! certificate and recording it, spending a join token, the join of a re-key token,
//! allocating IPv4 addresses from the network's range, and freeing the prefixes of banned
//! or long-expired nodes ([`reclaim`]). Each runs inside the caller's transaction.

use super::*;

/// `wanted`, or `wanted-2`, `wanted-3`, … : the first that no other node (than `except`)
/// that is not banned holds. Cut so that the suffix keeps it within a DNS label.
pub(super) fn unique_name(
    tx: &Transaction<'_>,
    wanted: &str,
    except: Option<i64>,
) -> Result<String> {
    let taken = |n: &str| -> Result<bool> {
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM nodes WHERE name = ?1 AND banned_at IS NULL AND id IS NOT ?2",
            params![n, except],
            |r| r.get(0),
        )?;
        Ok(count > 0)
    };
    if !taken(wanted)? {
        return Ok(wanted.to_owned());
    }
    for i in 2u32..10_000 {
        let suffix = format!("-{i}");
        let keep = crate::identity::MAX_NAME_LEN - suffix.len();
        let stem: String = wanted.chars().take(keep).collect();
        let candidate = format!("{}{suffix}", stem.trim_end_matches('-'));
        if !taken(&candidate)? {
            return Ok(candidate);
        }
    }
    Err(RegistryError::Conflict(format!(
        "the name {wanted:?} and its numbered variants are all taken; choose another with --name"
    )))
}

pub(super) fn issue(
    tx: &Transaction<'_>,
    ca: &Ca,
    node_id: i64,
    prefix: Ipv6Net,
    key: &CsrKey,
    anonymous: bool,
    now: i64,
) -> Result<Issued> {
    let mut validity: i64 = cfg_num(tx, "cert_validity")?;
    if anonymous {
        // a registry made before this setting has none: the default
        let first: i64 = get_config(tx, "anonymous_validity")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_ANONYMOUS_VALIDITY_SECS);
        validity = validity.min(first);
    }
    let name: Option<String> =
        tx.query_row("SELECT name FROM nodes WHERE id = ?1", [node_id], |r| {
            r.get(0)
        })?;
    let ipv4 = node_ipv4(tx, node_id)?;
    let (der, serial, not_after) = ca.issue_node_full(
        key,
        &prefix,
        name.as_deref(),
        ipv4,
        odt(now),
        Duration::seconds(validity),
    )?;
    tx.execute(
        "INSERT INTO certs (serial, node_id, der, not_after, issued_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![serial, node_id, der, not_after, now],
    )?;
    Ok(Issued {
        cert_der: der,
        prefix,
        serial,
    })
}

/// Records one use of a token by `key`.
pub(super) fn use_token(tx: &Transaction<'_>, id: i64, key: &CsrKey, serial: &str) -> Result<()> {
    tx.execute(
        "UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ?1",
        [id],
    )?;
    tx.execute(
        "INSERT INTO token_uses (token_id, pubkey, serial) VALUES (?1, ?2, ?3)",
        params![id, key.raw, serial],
    )?;
    Ok(())
}

/// The join of a re-key token: the node keeps its prefix and gets `key` on record and a
/// certificate for it; any older certificate still valid is superseded.
pub(super) fn rekey_join(
    tx: &Transaction<'_>,
    ca: &Ca,
    node_id: i64,
    key: &CsrKey,
    now: i64,
) -> Result<Issued> {
    let (prefix, banned): (String, Option<i64>) = tx.query_row(
        "SELECT prefix, banned_at FROM nodes WHERE id = ?1",
        [node_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if banned.is_some() {
        return Err(RegistryError::Forbidden(
            "this node is banned from the network".into(),
        ));
    }
    tx.execute(
        "UPDATE nodes SET pubkey = ?1 WHERE id = ?2",
        params![key.raw, node_id],
    )?;
    let issued = issue(tx, ca, node_id, parse_prefix(&prefix)?, key, false, now)?;
    let superseded = tx.execute(
        "UPDATE certs SET revoked_at = ?1 WHERE node_id = ?2 AND serial != ?3 AND revoked_at IS NULL",
        params![now, node_id, issued.serial],
    )?;
    if superseded > 0 {
        write_crl(tx, ca, now)?;
        bump_params(tx, ca, now)?;
    }
    Ok(issued)
}

/// The network's IPv4 range, when it has one.
pub(super) fn ipv4_range(conn: &Connection) -> Result<Option<Ipv4Net>> {
    match get_config(conn, "ipv4")?.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            RegistryError::Internal(format!("corrupt IPv4 range {v:?} in the database"))
        }),
    }
}

/// IPv4 addresses held by nodes (banned ones included until [`reclaim`] drops them, so an
/// address is never handed out again while a certificate naming it may be valid).
pub(super) fn used_ipv4(conn: &Connection) -> Result<Vec<Ipv4Addr>> {
    let mut st = conn.prepare("SELECT ipv4 FROM nodes WHERE ipv4 IS NOT NULL")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|r| {
        let s = r?;
        s.parse().map_err(|_| {
            RegistryError::Internal(format!("corrupt IPv4 address {s:?} in the database"))
        })
    })
    .collect()
}

/// The IPv4 address a certificate for `node_id` names: the one on record, or a new one from
/// the range when the node has none yet (a network that turned IPv4 on after it joined). `None`
/// on a network without IPv4.
pub(super) fn node_ipv4(tx: &Transaction<'_>, node_id: i64) -> Result<Option<Ipv4Addr>> {
    let Some(range) = ipv4_range(tx)? else {
        return Ok(None);
    };
    let held: Option<String> =
        tx.query_row("SELECT ipv4 FROM nodes WHERE id = ?1", [node_id], |r| {
            r.get(0)
        })?;
    if let Some(a) = held.and_then(|s| s.parse::<Ipv4Addr>().ok())
        && range.contains(&a)
    {
        return Ok(Some(a));
    }
    let addr = allocator::allocate_v4(range, &used_ipv4(tx)?).ok_or_else(|| {
        RegistryError::Exhausted(format!("the IPv4 range {range} has no free address left"))
    })?;
    tx.execute(
        "UPDATE nodes SET ipv4 = ?1 WHERE id = ?2",
        params![addr.to_string(), node_id],
    )?;
    Ok(Some(addr))
}

/// Prefixes in use: every node row (banned ones included until [`reclaim`] drops them).
pub(super) fn used_prefixes(conn: &Connection) -> Result<Vec<Ipv6Net>> {
    let mut st = conn.prepare("SELECT prefix FROM nodes")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|r| parse_prefix(&r?)).collect()
}

/// Frees the prefixes of banned nodes and of nodes never seen (no endpoint report, bootstrap,
/// key request or renewal ever) whose certificates have all expired, and of other nodes whose
/// certificates expired more than `reclaim_after` ago.
pub(super) fn reclaim(tx: &Transaction<'_>, now: i64) -> Result<()> {
    let grace: i64 = cfg_num(tx, "reclaim_after")?;
    tx.execute(
        "DELETE FROM nodes WHERE id IN (
            SELECT n.id FROM nodes n
            WHERE COALESCE((SELECT MAX(not_after) FROM certs WHERE node_id = n.id), 0)
                  <= CASE WHEN n.banned_at IS NOT NULL OR n.last_seen IS NULL THEN ?1
                          ELSE ?1 - ?2 END)",
        params![now, grace],
    )?;
    Ok(())
}
