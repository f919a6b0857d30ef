//! The signed state the registry publishes, as helpers of [`Store`](super::Store): checking
//! a `mesh registry params set` value ([`validate_setting`]), reading and writing the Babel
//! MAC key slots, signing and storing the next CRL ([`write_crl`]) and building, signing
//! and storing the next parameters version ([`bump_params`]). Each runs inside the caller's
//! transaction.

use super::*;

/// Checks and normalises a `params set` value.
pub(super) fn validate_setting(key: &str, value: &str) -> Result<String> {
    let bad =
        |what: &str| RegistryError::BadRequest(format!("{key} must be {what}, not {value:?}"));
    let value = value.trim();
    let out = match key {
        "protocol" | "min_protocol" | "client_count" | "max_clients" => value
            .parse::<u32>()
            .map_err(|_| bad("a non-negative integer"))?
            .to_string(),
        "hello_interval" | "tunnel_refresh" => {
            let v = value
                .parse::<u32>()
                .map_err(|_| bad("a positive number of seconds"))?;
            if v == 0 {
                return Err(bad("a positive number of seconds"));
            }
            v.to_string()
        }
        "node_prefix_len" => {
            let v = value.parse::<u8>().map_err(|_| bad("a prefix length"))?;
            if v > MAX_NODE_PREFIX_LEN {
                return Err(bad(
                    "a prefix length up to 127 (the node's address is prefix::1)",
                ));
            }
            v.to_string()
        }
        "anonymous" => match value {
            "true" | "yes" | "1" => "true".into(),
            "false" | "no" | "0" => "false".into(),
            _ => return Err(bad("true or false")),
        },
        "cert_validity" | "anonymous_validity" => {
            let d = humantime::parse_duration(value).map_err(|_| bad("a duration such as 365d"))?;
            if d.as_secs() == 0 {
                return Err(bad("a duration of at least one second"));
            }
            d.as_secs().to_string()
        }
        "ipv4" => match value {
            "" | "off" | "none" | "false" => String::new(),
            _ => {
                let net: Ipv4Net = value
                    .parse()
                    .map_err(|_| bad("an IPv4 range such as 10.42.0.0/16, or off"))?;
                if net != net.trunc() {
                    return Err(bad("a range without host bits set"));
                }
                if net.prefix_len() < 8 || net.prefix_len() > 30 {
                    return Err(bad("an IPv4 range from /8 to /30"));
                }
                net.to_string()
            }
        },
        "closed_countries" => {
            let mut codes = Vec::new();
            for c in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()) {
                    return Err(bad("comma-separated two-letter country codes"));
                }
                codes.push(c.to_ascii_uppercase());
            }
            codes.join(",")
        }
        _ => {
            let known: Vec<&str> = SETTABLE.iter().map(|(k, _)| *k).collect();
            return Err(RegistryError::BadRequest(format!(
                "unknown parameter {key:?}; settable: {}",
                known.join(", ")
            )));
        }
    };
    Ok(out)
}

pub(super) fn read_slots(conn: &Connection) -> Result<Slots> {
    let mut slots: Slots = [None, None, None];
    let mut st = conn.prepare("SELECT slot, key_id, key FROM mac_slots")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<Vec<u8>>>(2)?,
        ))
    })?;
    for row in rows {
        let (slot, id, key) = row?;
        let idx = usize::try_from(slot).ok().filter(|i| *i < 3);
        let Some(idx) = idx else { continue };
        slots[idx] = Some(match (id, key) {
            (Some(id), Some(key)) => {
                let bytes: [u8; 32] = key.try_into().map_err(|_| {
                    RegistryError::Internal("corrupt MAC key in the database".into())
                })?;
                Slot::Key { id, bytes }
            }
            _ => Slot::Unsigned,
        });
    }
    Ok(slots)
}

pub(super) fn write_slots(tx: &Transaction<'_>, slots: &Slots) -> Result<()> {
    tx.execute("DELETE FROM mac_slots", [])?;
    for (i, s) in slots.iter().enumerate() {
        match s {
            None => {}
            Some(Slot::Unsigned) => {
                tx.execute("INSERT INTO mac_slots (slot) VALUES (?1)", [i as i64])?;
            }
            Some(Slot::Key { id, bytes }) => {
                tx.execute(
                    "INSERT INTO mac_slots (slot, key_id, key) VALUES (?1, ?2, ?3)",
                    params![i as i64, id, bytes.to_vec()],
                )?;
            }
        }
    }
    Ok(())
}

pub(super) fn write_crl(tx: &Transaction<'_>, ca: &Ca, now: i64) -> Result<()> {
    let number: u64 = tx.query_row("SELECT COALESCE(MAX(number), 0) + 1 FROM crl", [], |r| {
        r.get(0)
    })?;
    let mut st = tx.prepare(
        "SELECT serial, revoked_at FROM certs WHERE revoked_at IS NOT NULL AND not_after > ?1
         ORDER BY revoked_at",
    )?;
    let revoked = st
        .query_map([now - CRL_KEEP_EXPIRED_SECS], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let der = ca.crl(number, &revoked, odt(now))?;
    tx.execute(
        "INSERT INTO crl (number, der) VALUES (?1, ?2)",
        params![number as i64, der],
    )?;
    Ok(())
}

/// Builds, signs and stores the next parameters version from the current state.
pub(super) fn bump_params(tx: &Transaction<'_>, ca: &Ca, now: i64) -> Result<u64> {
    let version: u64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM params",
        [],
        |r| r.get(0),
    )?;
    let (crl_number, crl_der): (u64, Vec<u8>) = tx.query_row(
        "SELECT number, der FROM crl ORDER BY number DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let closed = get_config(tx, "closed_countries")?.unwrap_or_default();
    let doc = NetworkParams {
        version,
        issued_at: now,
        network: network(tx)?,
        node_prefix_len: cfg_num(tx, "node_prefix_len")?,
        protocol: cfg_num(tx, "protocol")?,
        min_protocol: cfg_num(tx, "min_protocol")?,
        hello_interval: cfg_num(tx, "hello_interval")?,
        tunnel: TunnelPolicy {
            client_count: cfg_num(tx, "client_count")?,
            max_clients: cfg_num(tx, "max_clients")?,
            refresh: cfg_num(tx, "tunnel_refresh")?,
        },
        countries: np::CountryRules {
            closed: closed
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
        },
        crl: CrlRef {
            number: crl_number,
            sha256: hex::encode(crate::identity::fingerprint(&crl_der)),
        },
        mac: mac::state(&read_slots(tx)?),
        routes: grants::in_params(tx)?,
        ipv4: ipv4_range(tx)?,
        routes_v4: grants::in_params_v4(tx)?,
    };
    let document = doc.to_bytes();
    let signature = ca.sign(&document)?;
    tx.execute(
        "INSERT INTO params (version, document, signature) VALUES (?1, ?2, ?3)",
        params![version as i64, document, signature],
    )?;
    Ok(version)
}
