//! Tests of the registry store (split from store.rs).

use super::*;
use x509_parser::prelude::{CertificateRevocationList, FromDer};

const NETWORK: &str = "fd00:5eed::/48";

/// A fresh registry database (anonymous joins on, certificates always inside the renewal
/// window) and its CA.
fn registry(dir: &Path) -> (Ca, std::path::PathBuf) {
    let network: Ipv6Net = NETWORK.parse().unwrap();
    let t = super::super::now();
    let ca = Ca::generate(&network, odt(t)).unwrap();
    let path = dir.join("registry.db");
    let mut s = Store::open(&path).unwrap();
    let opts = InitOptions {
        network,
        url: "https://127.0.0.1:1".into(),
        node_prefix_len: 64,
        anonymous: true,
        no_mac: false,
    };
    s.initialise(&ca, &opts, t).unwrap();
    s.set_param(&ca, "cert_validity", "20d", t).unwrap();
    (ca, path)
}

fn new_key() -> (rcgen::KeyPair, CsrKey) {
    let kp = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&kp)
        .unwrap()
        .pem()
        .unwrap();
    let key = super::super::ca::csr_public_key(csr.as_bytes()).unwrap();
    (kp, key)
}

fn csr_key(kp: &rcgen::KeyPair) -> CsrKey {
    let csr = rcgen::CertificateParams::default()
        .serialize_request(kp)
        .unwrap()
        .pem()
        .unwrap();
    super::super::ca::csr_public_key(csr.as_bytes()).unwrap()
}

/// Serials listed in the newest CRL.
fn crl_serials(s: &Store) -> HashSet<String> {
    let der = s.crl().unwrap();
    let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
    crl.iter_revoked_certificates()
        .map(|rc| crate::identity::serial_hex(rc.raw_serial()))
        .collect()
}

/// Serials of a node (by prefix) and whether each is revoked in the database.
fn serials_of(s: &Store, prefix: &Ipv6Net) -> Vec<(String, bool)> {
    let mut st = s
        .conn
        .prepare(
            "SELECT c.serial, c.revoked_at IS NOT NULL FROM certs c JOIN nodes n ON n.id = c.node_id
             WHERE n.prefix = ?1 ORDER BY c.rowid",
        )
        .unwrap();
    st.query_map([prefix.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

use std::collections::HashSet;

/// A renewal racing a ban (two connections, as the server and `mesh registry revoke`
/// are): whichever wins, no certificate of the banned node is left out of the CRL.
#[test]
fn renew_racing_a_ban_never_leaves_a_certificate_of_the_banned_node_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, path) = registry(dir.path());
    let mut admin = Store::open(&path).unwrap();
    let mut server = Store::open(&path).unwrap();
    let rounds = 60;
    let (mut renewed, mut leaked) = (0, Vec::new());
    for _ in 0..rounds {
        let (kp, key) = new_key();
        let t = super::super::now();
        let joined = admin.join(&ca, None, &key, t).unwrap();
        let barrier = std::sync::Barrier::new(2);
        let (renew, ban) = std::thread::scope(|sc| {
            let renew = sc.spawn(|| {
                let key = csr_key(&kp);
                barrier.wait();
                server.renew(&ca, &joined.serial, &key, t)
            });
            let ban = sc.spawn(|| {
                barrier.wait();
                admin.revoke(&ca, &joined.prefix.to_string(), t)
            });
            (renew.join().unwrap(), ban.join().unwrap())
        });
        ban.unwrap();
        if renew.is_ok() {
            renewed += 1;
        }
        let check = Store::open(&path).unwrap();
        let listed = crl_serials(&check);
        for (serial, revoked) in serials_of(&check, &joined.prefix) {
            if !revoked || !listed.contains(&serial) {
                leaked.push(serial);
            }
        }
    }
    println!(
        "renew vs ban: renew won {renewed} of {rounds} rounds; certificates of banned nodes left out of the CRL: {}",
        leaked.len()
    );
    assert!(
        leaked.is_empty(),
        "valid certificates of banned nodes: {leaked:?}"
    );
}

/// A node revoked by serial renews only with the key on record; each renewal supersedes
/// (revokes, in the CRL) the node's older certificates, so a prefix has one valid one.
#[test]
fn renewal_keeps_the_key_on_record_and_supersedes_older_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, path) = registry(dir.path());
    let mut s = Store::open(&path).unwrap();
    let t = super::super::now();
    let (kp, key) = new_key();
    let first = s.join(&ca, None, &key, t).unwrap();
    s.revoke(&ca, &first.serial, t).unwrap();
    // a new key is refused, and nothing changes
    let (crl_before, params_before) = (s.crl().unwrap(), s.params_version().unwrap());
    let (_, stolen) = new_key();
    let err = s.renew(&ca, &first.serial, &stolen, t).unwrap_err();
    assert!(matches!(err, RegistryError::Forbidden(_)), "{err}");
    assert!(err.to_string().contains("keeps the node's key"), "{err}");
    assert_eq!(serials_of(&s, &first.prefix).len(), 1);
    assert_eq!(s.crl().unwrap(), crl_before);
    assert_eq!(s.params_version().unwrap(), params_before);
    // the key on record renews
    let second = s.renew(&ca, &first.serial, &csr_key(&kp), t).unwrap();
    assert_eq!(second.prefix, first.prefix);
    // a renewal in the window (20-day certificates) supersedes the valid one
    let third = s.renew(&ca, &second.serial, &csr_key(&kp), t).unwrap();
    let serials = serials_of(&s, &first.prefix);
    let valid: Vec<_> = serials.iter().filter(|(_, r)| !r).collect();
    assert_eq!(valid, vec![&(third.serial.clone(), false)]);
    let listed = crl_serials(&s);
    for serial in [&first.serial, &second.serial] {
        assert!(listed.contains(serial), "{serial} not in the CRL");
    }
    assert!(!listed.contains(&third.serial));
    assert!(s.params_version().unwrap() > params_before);
    let rows = s.nodes().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].serial.as_str(), rows[0].revoked),
        (third.serial.as_str(), false)
    );
    // the superseded certificate still renews (a lost answer is retried with it), and the
    // one it supersedes is revoked in turn
    let fourth = s.renew(&ca, &second.serial, &csr_key(&kp), t).unwrap();
    assert!(crl_serials(&s).contains(&third.serial));
    assert!(!crl_serials(&s).contains(&fourth.serial));
}

/// Revoked certificates leave the CRL a day after they expire.
#[test]
fn the_crl_drops_revoked_certificates_a_day_after_their_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, path) = registry(dir.path());
    let mut s = Store::open(&path).unwrap();
    let t = super::super::now();
    let (_, key) = new_key();
    let a = s.join(&ca, None, &key, t).unwrap();
    s.revoke(&ca, &a.serial, t).unwrap();
    assert!(crl_serials(&s).contains(&a.serial));
    let expiry = crate::identity::cert_info(&a.cert_der).unwrap().not_after;
    // any later CRL still lists it until a day after its expiry
    let (_, other) = new_key();
    let b = s.join(&ca, None, &other, t).unwrap();
    s.revoke(&ca, &b.serial, expiry + CRL_KEEP_EXPIRED_SECS - 10)
        .unwrap();
    assert!(crl_serials(&s).contains(&a.serial));
    s.rotate_mac(&ca, expiry).unwrap();
    let (_, third) = new_key();
    let c = s.join(&ca, None, &third, expiry).unwrap();
    s.revoke(&ca, &c.serial, expiry + CRL_KEEP_EXPIRED_SECS + 10)
        .unwrap();
    let listed = crl_serials(&s);
    assert!(!listed.contains(&a.serial) && !listed.contains(&b.serial));
    assert!(listed.contains(&c.serial));
}

/// `mesh registry rekey`: the old key stops renewing at once; the bound token gives the
/// same prefix to a new key, once (a retry with that key gets the same certificate).
#[test]
fn rekey_ejects_the_old_key_and_hands_the_prefix_to_the_token_s_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, path) = registry(dir.path());
    let mut s = Store::open(&path).unwrap();
    let t = super::super::now();
    let (old_kp, old_key) = new_key();
    let a = s.join(&ca, None, &old_key, t).unwrap();
    let (_, other) = new_key();
    let b = s.join(&ca, None, &other, t).unwrap();
    let v = s.params_version().unwrap();
    let secret = s.rekey(&ca, &a.prefix, None, t).unwrap();
    assert!(s.params_version().unwrap() > v);
    assert!(crl_serials(&s).contains(&a.serial));
    // the old key (the thief's copy too) no longer renews
    let err = s.renew(&ca, &a.serial, &csr_key(&old_kp), t).unwrap_err();
    assert!(matches!(err, RegistryError::Forbidden(_)), "{err}");
    // the token and a new key: same prefix, new certificate; the old key still cannot renew
    let (new_kp, new_key_) = new_key();
    let c = s.join(&ca, Some(&secret), &new_key_, t).unwrap();
    assert_eq!(c.prefix, a.prefix);
    let again = s.join(&ca, Some(&secret), &csr_key(&new_kp), t).unwrap();
    assert_eq!(again.serial, c.serial);
    let (_, third) = new_key();
    assert!(matches!(
        s.join(&ca, Some(&secret), &third, t),
        Err(RegistryError::Forbidden(_))
    ));
    assert!(s.renew(&ca, &a.serial, &csr_key(&old_kp), t).is_err());
    let d = s.renew(&ca, &c.serial, &csr_key(&new_kp), t).unwrap();
    assert_eq!(d.prefix, a.prefix);
    let valid: Vec<_> = serials_of(&s, &a.prefix)
        .into_iter()
        .filter(|(_, r)| !r)
        .collect();
    assert_eq!(valid, vec![(d.serial.clone(), false)]);
    // b untouched; unknown and banned prefixes are refused
    assert!(serials_of(&s, &b.prefix).iter().all(|(_, r)| !r));
    let nowhere: Ipv6Net = "fd00:5eed:0:ffff::/64".parse().unwrap();
    assert!(matches!(
        s.rekey(&ca, &nowhere, None, t),
        Err(RegistryError::NotFound(_))
    ));
    s.revoke(&ca, &b.prefix.to_string(), t).unwrap();
    assert!(matches!(
        s.rekey(&ca, &b.prefix, None, t),
        Err(RegistryError::Conflict(_))
    ));
}

/// A database made before re-key tokens gains their column when opened.
#[test]
fn an_older_database_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old_schema = SCHEMA
        .replace(
            ",\n    node_id INTEGER REFERENCES nodes(id) ON DELETE CASCADE",
            "",
        )
        .replace(",\n    name TEXT,\n    ipv4 TEXT)", ")");
    let old_schema = old_schema
        .split_once("CREATE TABLE IF NOT EXISTS route_grants")
        .map(|(before, _)| before.to_owned())
        .unwrap();
    assert_ne!(old_schema, SCHEMA);
    assert!(!old_schema.contains("name TEXT"));
    Connection::open(&path)
        .unwrap()
        .execute_batch(&old_schema)
        .unwrap();
    let s = Store::open(&path).unwrap();
    let n: i64 = s
        .conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('tokens') WHERE name = 'node_id'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = s
        .conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('nodes') WHERE name = 'name'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = s
        .conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'route_grants'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = s
        .conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('nodes') WHERE name = 'ipv4'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(s);
    Store::open(&path).unwrap();
}

/// A node's name goes into its certificate, is made unique in the network, survives
/// renewals, and a bad one is refused with nothing changed.
#[test]
fn node_names_are_unique_in_the_certificate_and_kept_on_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, path) = registry(dir.path());
    let mut s = Store::open(&path).unwrap();
    let t = super::super::now();
    let name_in = |der: &[u8]| crate::identity::cert_info(der).unwrap().name;
    let (kp, key) = new_key();
    let a = s.join_named(&ca, None, &key, Some("anna"), t).unwrap();
    assert_eq!(name_in(&a.cert_der).as_deref(), Some("anna"));
    let (_, key_b) = new_key();
    let b = s.join_named(&ca, None, &key_b, Some("anna"), t).unwrap();
    assert_eq!(name_in(&b.cert_der).as_deref(), Some("anna-2"));
    let (_, key_c) = new_key();
    let c = s.join_named(&ca, None, &key_c, None, t).unwrap();
    assert_eq!(name_in(&c.cert_der), None);
    let rows = s.nodes().unwrap();
    let mut names: Vec<_> = rows.iter().map(|r| r.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![None, Some("anna".into()), Some("anna-2".into())]
    );
    // a renewal keeps the name
    s.revoke(&ca, &a.serial, t).unwrap();
    let renewed = s.renew(&ca, &a.serial, &csr_key(&kp), t).unwrap();
    assert_eq!(name_in(&renewed.cert_der).as_deref(), Some("anna"));
    // a bad name is refused before anything is allocated
    let before = s.nodes().unwrap().len();
    let (_, key_d) = new_key();
    let err = s
        .join_named(&ca, None, &key_d, Some("Anna Laptop"), t)
        .unwrap_err();
    assert!(matches!(err, RegistryError::BadRequest(_)), "{err}");
    assert_eq!(s.nodes().unwrap().len(), before);
    // a banned node's name is free again
    s.revoke(&ca, &b.prefix.to_string(), t).unwrap();
    let (_, key_e) = new_key();
    let e = s.join_named(&ca, None, &key_e, Some("anna"), t).unwrap();
    assert_eq!(name_in(&e.cert_der).as_deref(), Some("anna-2"));
}

/// An anonymous node's first certificate is short; if the node never shows up its prefix
/// comes back when that certificate expires, while a node seen keeps its prefix.
#[test]
fn a_never_seen_anonymous_node_gives_its_prefix_back_when_its_first_certificate_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, path) = registry(dir.path());
    let mut s = Store::open(&path).unwrap();
    let t = super::super::now();
    let (_, key) = new_key();
    let a = s.join(&ca, None, &key, t).unwrap();
    let a_end = crate::identity::cert_info(&a.cert_der).unwrap().not_after;
    assert_eq!(a_end, t + DEFAULT_ANONYMOUS_VALIDITY_SECS);
    // a token join gets the full validity (20 days here)
    let secret = s.create_token(None, None, 1, t).unwrap();
    let (_, other) = new_key();
    let b = s.join(&ca, Some(&secret), &other, t).unwrap();
    let b_end = crate::identity::cert_info(&b.cert_der).unwrap().not_after;
    assert_eq!(b_end, t + 20 * 86400);
    // the renewal of an anonymous node has the full validity
    let (kp2, key2) = new_key();
    let c = s.join(&ca, None, &key2, t).unwrap();
    let c2 = s.renew(&ca, &c.serial, &csr_key(&kp2), t).unwrap();
    let c2_end = crate::identity::cert_info(&c2.cert_der).unwrap().not_after;
    assert_eq!(c2_end, t + 20 * 86400);
    // a never seen: its prefix is the first one handed out after its certificate expired
    let (_, key3) = new_key();
    let d = s.join(&ca, None, &key3, a_end + 1).unwrap();
    assert_eq!(d.prefix, a.prefix);
    // d is seen: after its certificate expired it keeps its prefix for reclaim_after
    let node = s.authenticate(&d.serial, a_end + 1).unwrap();
    s.touch(node.node_id, a_end + 1).unwrap();
    let d_end = crate::identity::cert_info(&d.cert_der).unwrap().not_after;
    let (_, key4) = new_key();
    let e = s.join(&ca, None, &key4, d_end + 1).unwrap();
    assert_ne!(e.prefix, d.prefix);
    // a bad value is refused
    assert!(s.set_param(&ca, "anonymous_validity", "0s", t).is_err());
    s.set_param(&ca, "anonymous_validity", "1d", t).unwrap();
}

/// `mesh registry authorize/unauthorize/grants`: grants go into the signed parameters by
/// node prefix, bad ones change nothing, a banned node's grants leave the parameters.
#[test]
fn route_grants_are_published_in_the_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, path) = registry(dir.path());
    let mut s = Store::open(&path).unwrap();
    let t = super::super::now();
    let (_, key) = new_key();
    let a = s.join_named(&ca, None, &key, Some("gw"), t).unwrap();
    let (_, key_b) = new_key();
    let b = s.join(&ca, None, &key_b, t).unwrap();
    let params = |s: &Store| s.params().unwrap().verify(ca.cert_der()).unwrap();
    let v0 = s.params_version().unwrap();
    // by name and by prefix
    let v1 = s
        .authorize(&ca, "gw", "route", "2001:db8:5::/48", t)
        .unwrap();
    assert!(v1 > v0);
    s.authorize(&ca, &b.prefix.to_string(), "exit", "::/0", t)
        .unwrap();
    let p = params(&s);
    assert_eq!(p.routes.len(), 2);
    assert!(p.routes.iter().any(|g| g.node == a.prefix
        && g.kind == crate::params::GrantKind::Route
        && g.prefix.to_string() == "2001:db8:5::/48"));
    assert!(p.routes.iter().any(|g| g.node == b.prefix
        && g.kind == crate::params::GrantKind::Exit
        && g.prefix.prefix_len() == 0));
    // refused, nothing changes: twice, inside the network, unknown node, bad kind, exit not ::/0
    let v = s.params_version().unwrap();
    for (node, kind, prefix) in [
        ("gw", "route", "2001:db8:5::/48"),
        ("gw", "route", "fd00:5eed:0:9::/64"),
        ("nobody", "route", "2001:db8:6::/48"),
        ("gw", "gateway", "2001:db8:6::/48"),
        ("gw", "exit", "2001:db8::/32"),
        ("gw", "route", "not a prefix"),
    ] {
        assert!(
            s.authorize(&ca, node, kind, prefix, t).is_err(),
            "{node} {kind} {prefix}"
        );
    }
    assert!(matches!(
        s.unauthorize(&ca, "gw", "route", "2001:db8:7::/48", t),
        Err(RegistryError::NotFound(_))
    ));
    assert_eq!(s.params_version().unwrap(), v);
    let rows = s.grants().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter()
            .find(|r| r.kind == "route")
            .unwrap()
            .name
            .as_deref(),
        Some("gw")
    );
    // withdrawn
    s.unauthorize(&ca, "gw", "route", "2001:db8:5::/48", t)
        .unwrap();
    assert_eq!(params(&s).routes.len(), 1);
    // a banned node's grant leaves the parameters (and is listed as banned)
    s.revoke(&ca, &b.prefix.to_string(), t).unwrap();
    assert!(params(&s).routes.is_empty());
    assert!(s.grants().unwrap()[0].banned);
    assert!(
        s.authorize(&ca, &b.prefix.to_string(), "exit", "::/0", t)
            .is_err()
    );
}

/// `params set ipv4=RANGE`: off by default (no address in certificates, none in the
/// parameters); once set, each node gets one address from the range in its certificate,
/// keeps it on renewal, never shares it, and frees it with its prefix.
#[test]
fn ipv4_addresses_come_from_the_range_and_live_as_long_as_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, path) = registry(dir.path());
    let mut s = Store::open(&path).unwrap();
    let t = super::super::now();
    let v4 = |der: &[u8]| crate::identity::cert_info(der).unwrap().ipv4;
    let params = |s: &Store| s.params().unwrap().verify(ca.cert_der()).unwrap();
    let (kp_a, key_a) = new_key();
    let a = s.join(&ca, None, &key_a, t).unwrap();
    assert_eq!(v4(&a.cert_der), None);
    assert_eq!(params(&s).ipv4, None);
    // bad ranges change nothing
    for bad in ["10.42.0.1/16", "10.0.0.0/31", "fd00::/64", "ten"] {
        assert!(s.set_param(&ca, "ipv4", bad, t).is_err(), "{bad}");
    }
    assert_eq!(params(&s).ipv4, None);
    s.set_param(&ca, "ipv4", "10.42.0.0/30", t).unwrap();
    assert_eq!(params(&s).ipv4, Some("10.42.0.0/30".parse().unwrap()));
    // a node that joined before gets its address with its next certificate
    let a2 = s.renew(&ca, &a.serial, &csr_key(&kp_a), t).unwrap();
    assert_eq!(v4(&a2.cert_der), Some("10.42.0.1".parse().unwrap()));
    let (kp_b, key_b) = new_key();
    let b = s.join(&ca, None, &key_b, t).unwrap();
    assert_eq!(v4(&b.cert_der), Some("10.42.0.2".parse().unwrap()));
    // kept on renewal
    let b2 = s.renew(&ca, &b.serial, &csr_key(&kp_b), t).unwrap();
    assert_eq!(v4(&b2.cert_der), Some("10.42.0.2".parse().unwrap()));
    // the /30 has two host addresses: a third node cannot join, and nothing is recorded
    let (_, key_c) = new_key();
    assert!(matches!(
        s.join(&ca, None, &key_c, t),
        Err(RegistryError::Exhausted(_))
    ));
    assert_eq!(s.nodes().unwrap().len(), 2);
    // a range that leaves out held addresses is refused
    assert!(s.set_param(&ca, "ipv4", "10.43.0.0/16", t).is_err());
    s.set_param(&ca, "ipv4", "10.42.0.0/16", t).unwrap();
    // a's address is freed with its prefix once its certificates have expired
    let a_end = crate::identity::cert_info(&a2.cert_der).unwrap().not_after;
    s.revoke(&ca, &a.prefix.to_string(), t).unwrap();
    let (_, key_d) = new_key();
    let d = s.join(&ca, None, &key_d, t).unwrap();
    assert_eq!(v4(&d.cert_der), Some("10.42.0.3".parse().unwrap()));
    let (_, key_e) = new_key();
    let e = s.join(&ca, None, &key_e, a_end + 1).unwrap();
    assert_eq!(v4(&e.cert_der), Some("10.42.0.1".parse().unwrap()));
    // off again: new certificates name no address
    s.set_param(&ca, "ipv4", "off", t).unwrap();
    assert_eq!(params(&s).ipv4, None);
    let (_, key_f) = new_key();
    assert_eq!(
        v4(&s.join(&ca, None, &key_f, a_end + 1).unwrap().cert_der),
        None
    );
}

/// IPv4 subnet grants go into `routes_v4` (never `routes`, which older nodes read as IPv6);
/// one that overlaps the IPv4 range, has host bits, or is an exit is refused.
#[test]
fn ipv4_subnet_grants_are_published_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, path) = registry(dir.path());
    let mut s = Store::open(&path).unwrap();
    let t = super::super::now();
    let (_, key) = new_key();
    let a = s.join_named(&ca, None, &key, Some("gw"), t).unwrap();
    s.set_param(&ca, "ipv4", "10.42.0.0/16", t).unwrap();
    let params = |s: &Store| s.params().unwrap().verify(ca.cert_der()).unwrap();
    s.authorize(&ca, "gw", "route", "192.168.5.0/24", t)
        .unwrap();
    let p = params(&s);
    assert!(p.routes.is_empty());
    assert_eq!(
        p.routes_v4,
        vec![crate::params::RouteGrantV4 {
            node: a.prefix,
            prefix: "192.168.5.0/24".parse().unwrap(),
        }]
    );
    let v = s.params_version().unwrap();
    for (kind, prefix) in [
        ("route", "10.42.7.0/24"),
        ("route", "10.0.0.0/8"),
        ("route", "192.168.6.1/24"),
        ("route", "0.0.0.0/0"),
        ("exit", "0.0.0.0/0"),
        ("route", "192.168.5.0/24"),
    ] {
        assert!(
            s.authorize(&ca, "gw", kind, prefix, t).is_err(),
            "{kind} {prefix}"
        );
    }
    assert_eq!(s.params_version().unwrap(), v);
    s.unauthorize(&ca, "gw", "route", "192.168.5.0/24", t)
        .unwrap();
    assert!(params(&s).routes_v4.is_empty());
}
