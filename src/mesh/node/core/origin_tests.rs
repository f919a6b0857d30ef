//! The node's origin policy with real keys and CA-signed certificates.

use super::*;
use crate::registry::ca::{Ca, csr_public_key};

const NOW: i64 = 1_800_000_000;

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

struct World {
    ca: Ca,
    network: Ipv6Net,
}

impl World {
    fn new() -> World {
        let network: Ipv6Net = "fd00:1::/48".parse().unwrap();
        World {
            ca: Ca::generate(&network, at(NOW)).unwrap(),
            network,
        }
    }

    /// A key and a certificate for `prefix`: (cert DER, serial, PKCS#8 key).
    fn node(&self, prefix: &str, validity_secs: i64) -> (Vec<u8>, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let (der, serial, _) = self
            .ca
            .issue_node(
                &csr_public_key(csr.der()).unwrap(),
                &prefix.parse().unwrap(),
                at(NOW),
                time::Duration::seconds(validity_secs),
            )
            .unwrap();
        (der, serial, key.serialize_der())
    }

    fn store(&self) -> CertStore {
        CertStore::new(
            self.network,
            self.ca.cert_der().to_vec(),
            HashSet::new(),
            NOW,
        )
    }
}

fn bp(s: &str) -> RouteKey {
    s.parse().unwrap()
}

const RID: RouterId = RouterId([1, 2, 3, 4, 5, 6, 7, 8]);

#[test]
fn a_route_is_valid_only_when_exactly_a_certified_node_prefix_signs_it() {
    let w = World::new();
    let (a_cert, _, a_key) = w.node("fd00:1:0:a::/64", 86_400);
    let (_, _, b_key) = w.node("fd00:1:0:b::/64", 86_400);
    let mut store = w.store();
    assert_eq!(
        store.admit(&a_cert, false),
        Ok("fd00:1:0:a::/64".parse().unwrap())
    );
    let a = bp("fd00:1:0:a::/64");
    let mut a_signer = KeySigner::new(&a_key).unwrap();
    let mut b_signer = KeySigner::new(&b_key).unwrap();
    let sig = a_signer.sign(a, RID, Seqno(9)).unwrap();
    assert_eq!(store.verify(a, RID, Seqno(9), &sig), OriginVerdict::Valid);
    // Another seqno, router-id or prefix length than what was signed.
    assert_eq!(
        store.verify(a, RID, Seqno(10), &sig),
        OriginVerdict::Invalid
    );
    assert_eq!(
        store.verify(a, RouterId([9; 8]), Seqno(9), &sig),
        OriginVerdict::Invalid
    );
    // Signed by another member's key.
    let forged = b_signer.sign(a, RID, Seqno(9)).unwrap();
    assert_eq!(
        store.verify(a, RID, Seqno(9), &forged),
        OriginVerdict::Invalid
    );
    // A more specific inside a certified node prefix, even signed by its owner.
    let more = bp("fd00:1:0:a::1/128");
    let sig = a_signer.sign(more, RID, Seqno(9)).unwrap();
    assert_eq!(
        store.verify(more, RID, Seqno(9), &sig),
        OriginVerdict::Invalid
    );
    // Outside the network without a grant (exits, subnet routes: issue 15), IPv4 too.
    for p in ["2001:db8::/32", "::/0", "fd00:2::/64", "10.0.0.0/8"] {
        let p = bp(p);
        let sig = a_signer.sign(p, RID, Seqno(9)).unwrap();
        assert_eq!(store.verify(p, RID, Seqno(9), &sig), OriginVerdict::Invalid);
    }
    // Inside the network, no certificate known yet: ask.
    let b = bp("fd00:1:0:b::/64");
    let sig = b_signer.sign(b, RID, Seqno(9)).unwrap();
    assert_eq!(store.verify(b, RID, Seqno(9), &sig), OriginVerdict::Unknown);
}

#[test]
fn certificates_of_another_ca_expired_or_revoked_are_not_taken() {
    let w = World::new();
    let other = World::new();
    let (foreign, _, _) = other.node("fd00:1:0:a::/64", 86_400);
    let mut store = w.store();
    assert_eq!(store.admit(&foreign, false), Err(CertRefused::NotOurs));
    assert_eq!(store.admit(b"junk", false), Err(CertRefused::NotOurs));
    let (outside, _, _) = World {
        ca: Ca::generate(&"fd00:2::/48".parse().unwrap(), at(NOW)).unwrap(),
        network: "fd00:2::/48".parse().unwrap(),
    }
    .node("fd00:2:0:1::/64", 86_400);
    assert!(store.admit(&outside, false).is_err());
    let (short, _, _) = w.node("fd00:1:0:c::/64", 10);
    let mut later = w.store();
    later.set_time(NOW + 20);
    assert_eq!(later.admit(&short, false), Err(CertRefused::Expired));
    let (cert, serial, _) = w.node("fd00:1:0:d::/64", 86_400);
    let mut revoking = CertStore::new(
        w.network,
        w.ca.cert_der().to_vec(),
        [serial].into_iter().collect(),
        NOW,
    );
    assert_eq!(revoking.admit(&cert, false), Err(CertRefused::Revoked));
    assert!(revoking.is_empty());
}

#[test]
fn a_crl_or_an_expiry_drops_the_certificate_and_its_routes_become_unknown() {
    let w = World::new();
    let (a_cert, a_serial, a_key) = w.node("fd00:1:0:a::/64", 100);
    let (b_cert, _, b_key) = w.node("fd00:1:0:b::/64", 86_400);
    let mut store = w.store();
    store.admit(&a_cert, false).unwrap();
    store.admit(&b_cert, false).unwrap();
    let (a, b) = (bp("fd00:1:0:a::/64"), bp("fd00:1:0:b::/64"));
    let sa = KeySigner::new(&a_key)
        .unwrap()
        .sign(a, RID, Seqno(1))
        .unwrap();
    let sb = KeySigner::new(&b_key)
        .unwrap()
        .sign(b, RID, Seqno(1))
        .unwrap();
    assert_eq!(store.verify(a, RID, Seqno(1), &sa), OriginVerdict::Valid);
    let gone = store.set_trust(w.network, [a_serial].into_iter().collect());
    assert_eq!(gone, vec!["fd00:1:0:a::/64".parse::<Ipv6Net>().unwrap()]);
    assert_eq!(store.verify(a, RID, Seqno(1), &sa), OriginVerdict::Unknown);
    assert_eq!(store.admit(&a_cert, false), Err(CertRefused::Revoked));
    assert_eq!(store.verify(b, RID, Seqno(1), &sb), OriginVerdict::Valid);
    // b expires.
    let (c_cert, _, _) = w.node("fd00:1:0:c::/64", 50);
    store.admit(&c_cert, false).unwrap();
    assert_eq!(
        store.set_time(NOW + 60),
        vec!["fd00:1:0:c::/64".parse::<Ipv6Net>().unwrap()]
    );
    assert_eq!(store.len(), 1);
}

/// The CPU cost of origin authentication (a printed figure, never asserted on).
#[test]
#[allow(clippy::disallowed_methods)] // measuring the test itself, not deciding anything
fn verifications_per_second() {
    let w = World::new();
    let (cert, _, key) = w.node("fd00:1:0:a::/64", 86_400);
    let mut store = w.store();
    store.admit(&cert, false).unwrap();
    let a = bp("fd00:1:0:a::/64");
    let mut signer = KeySigner::new(&key).unwrap();
    let n = 300u32;
    let start = std::time::Instant::now();
    let sigs: Vec<RouteSignature> = (0..n)
        .map(|i| signer.sign(a, RID, Seqno(i as u16)).unwrap())
        .collect();
    let signing = start.elapsed();
    let start = std::time::Instant::now();
    for (i, sig) in sigs.iter().enumerate() {
        assert_eq!(
            store.verify(a, RID, Seqno(i as u16), sig),
            OriginVerdict::Valid
        );
    }
    let verifying = start.elapsed();
    eprintln!(
        "origin authentication ({} build): {:.0} signatures/s, {:.0} verifications/s",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        f64::from(n) / signing.as_secs_f64(),
        f64::from(n) / verifying.as_secs_f64()
    );
}

/// Grants of the parameters (issue 15): a prefix outside the network is valid from the node
/// it is granted to (its router-id, its key), refused from any other, unknown until the
/// grantee's certificate is held; a grant inside the network is ignored.
#[test]
fn a_route_outside_the_network_is_valid_only_from_the_node_it_is_granted_to() {
    use crate::params::{GrantKind, RouteGrant};
    let w = World::new();
    let (a_cert, _, a_key) = w.node("fd00:1:0:a::/64", 86_400);
    let (b_cert, _, b_key) = w.node("fd00:1:0:b::/64", 86_400);
    let (a_net, b_net): (Ipv6Net, Ipv6Net) = (
        "fd00:1:0:a::/64".parse().unwrap(),
        "fd00:1:0:b::/64".parse().unwrap(),
    );
    let (a_rid, b_rid) = (
        RouterId(router_id_for(&a_net)),
        RouterId(router_id_for(&b_net)),
    );
    let mut store = w.store();
    store.admit(&b_cert, false).unwrap();
    let lan = bp("2001:db8:5::/48");
    let exit = bp("::/0 from fd00:1::/48");
    let grants = vec![
        RouteGrant {
            node: a_net,
            kind: GrantKind::Route,
            prefix: "2001:db8:5::/48".parse().unwrap(),
        },
        RouteGrant {
            node: b_net,
            kind: GrantKind::Exit,
            prefix: "::/0".parse().unwrap(),
        },
        // Ignored: inside the network.
        RouteGrant {
            node: b_net,
            kind: GrantKind::Route,
            prefix: "fd00:1:0:a::/64".parse().unwrap(),
        },
    ];
    let changed = store.set_grants(&grants);
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(store.set_grants(&grants).is_empty(), "nothing changed");
    assert_eq!(
        store.granted_to(&a_net),
        vec!["2001:db8:5::/48".parse().unwrap()]
    );
    let mut a_signer = KeySigner::new(&a_key).unwrap();
    let mut b_signer = KeySigner::new(&b_key).unwrap();
    // a's certificate is not held yet: unknown (and a is the one to ask about).
    let sig = a_signer.sign(lan, a_rid, Seqno(3)).unwrap();
    assert_eq!(
        store.verify(lan, a_rid, Seqno(3), &sig),
        OriginVerdict::Unknown
    );
    assert_eq!(
        store.grantees_unknown(&"2001:db8:5::/48".parse().unwrap()),
        vec![a_net]
    );
    store.admit(&a_cert, false).unwrap();
    assert_eq!(
        store.verify(lan, a_rid, Seqno(3), &sig),
        OriginVerdict::Valid
    );
    // b announcing a's LAN (its own router-id and key): refused.
    let sig_b = b_signer.sign(lan, b_rid, Seqno(3)).unwrap();
    assert_eq!(
        store.verify(lan, b_rid, Seqno(3), &sig_b),
        OriginVerdict::Invalid
    );
    // b claiming a's router-id: a's key does not verify b's signature.
    let forged = b_signer.sign(lan, a_rid, Seqno(3)).unwrap();
    assert_eq!(
        store.verify(lan, a_rid, Seqno(3), &forged),
        OriginVerdict::Invalid
    );
    // A more specific of the granted prefix is not granted.
    let more = bp("2001:db8:5:1::/64");
    let sig = a_signer.sign(more, a_rid, Seqno(3)).unwrap();
    assert_eq!(
        store.verify(more, a_rid, Seqno(3), &sig),
        OriginVerdict::Invalid
    );
    // The exit: from b only.
    let sig = b_signer.sign(exit, b_rid, Seqno(4)).unwrap();
    assert_eq!(
        store.verify(exit, b_rid, Seqno(4), &sig),
        OriginVerdict::Valid
    );
    let sig = a_signer.sign(exit, a_rid, Seqno(4)).unwrap();
    assert_eq!(
        store.verify(exit, a_rid, Seqno(4), &sig),
        OriginVerdict::Invalid
    );
    // An exit announces `::/0 from` the network only: not a plain ::/0, not from another
    // source, and its signature of one is no signature of another.
    for other in [
        "::/0",
        "::/0 from fd00:2::/48",
        "2001:db8::/32 from fd00:1::/48",
    ] {
        let other = bp(other);
        let sig = b_signer.sign(other, b_rid, Seqno(4)).unwrap();
        assert_eq!(
            store.verify(other, b_rid, Seqno(4), &sig),
            OriginVerdict::Invalid,
            "{other}"
        );
    }
    let sig = b_signer.sign(exit, b_rid, Seqno(4)).unwrap();
    assert_eq!(
        store.verify(bp("::/0"), b_rid, Seqno(4), &sig),
        OriginVerdict::Invalid
    );
    // `--use-exit a`: b's exit route is refused.
    store.set_exit_only(Some(a_net));
    assert_eq!(
        store.verify(exit, b_rid, Seqno(4), &sig),
        OriginVerdict::Invalid
    );
    store.set_exit_only(Some(b_net));
    assert_eq!(
        store.verify(exit, b_rid, Seqno(4), &sig),
        OriginVerdict::Valid
    );
    store.set_exit_only(None);
    // The grant inside the network was ignored: a's prefix stays a's alone.
    let a = bp("fd00:1:0:a::/64");
    let sig = b_signer.sign(a, b_rid, Seqno(4)).unwrap();
    assert_eq!(
        store.verify(a, b_rid, Seqno(4), &sig),
        OriginVerdict::Invalid
    );
    // Grants withdrawn: refused again.
    assert_eq!(store.set_grants(&[]).len(), 2);
    let sig = a_signer.sign(lan, a_rid, Seqno(5)).unwrap();
    assert_eq!(
        store.verify(lan, a_rid, Seqno(5), &sig),
        OriginVerdict::Invalid
    );
}

/// IPv4 over the mesh (issue 15): a /32 of the network's IPv4 range is valid only from the
/// node whose certificate names that address (by router-id and signature); unknown until
/// such a certificate is held; every other IPv4 route is refused.
#[test]
fn an_ipv4_address_is_routed_only_for_the_node_whose_certificate_names_it() {
    let w = World::new();
    let key = |_| rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let node = |prefix: &str, v4: Option<&str>, kp: &rcgen::KeyPair| {
        let csr = rcgen::CertificateParams::default()
            .serialize_request(kp)
            .unwrap();
        let (der, _, _) =
            w.ca.issue_node_full(
                &csr_public_key(csr.der()).unwrap(),
                &prefix.parse().unwrap(),
                None,
                v4.map(|a| a.parse().unwrap()),
                at(NOW),
                time::Duration::seconds(86_400),
            )
            .unwrap();
        der
    };
    let (ka, kb) = (key(0), key(1));
    let a_cert = node("fd00:1:0:a::/64", Some("10.42.0.1"), &ka);
    let b_cert = node("fd00:1:0:b::/64", None, &kb);
    assert_eq!(
        identity::cert_info(&a_cert).unwrap().ipv4,
        Some("10.42.0.1".parse().unwrap())
    );
    let rid_a = RouterId(router_id_for(&"fd00:1:0:a::/64".parse().unwrap()));
    let rid_b = RouterId(router_id_for(&"fd00:1:0:b::/64".parse().unwrap()));
    let mut a_signer = KeySigner::new(&ka.serialize_der()).unwrap();
    let mut b_signer = KeySigner::new(&kb.serialize_der()).unwrap();
    let p = bp("10.42.0.1/32");
    let sig_a = a_signer.sign(p, rid_a, Seqno(3)).unwrap();
    let sig_b = b_signer.sign(p, rid_b, Seqno(3)).unwrap();
    let mut store = w.store();
    // a network without IPv4: refused
    store.admit(&a_cert, false).unwrap();
    assert_eq!(
        store.verify(p, rid_a, Seqno(3), &sig_a),
        OriginVerdict::Invalid
    );
    store.set_ipv4_range(Some("10.42.0.0/16".parse().unwrap()));
    assert_eq!(
        store.verify(p, rid_a, Seqno(3), &sig_a),
        OriginVerdict::Valid
    );
    assert_eq!(
        store.ipv4_owner("10.42.0.1".parse().unwrap(), rid_a),
        Some("fd00:1:0:a::/64".parse().unwrap())
    );
    // b announces a's address: a's certificate names it, b's does not
    assert_eq!(
        store.verify(p, rid_b, Seqno(3), &sig_b),
        OriginVerdict::Invalid
    );
    let mut only_b = w.store();
    only_b.set_ipv4_range(Some("10.42.0.0/16".parse().unwrap()));
    assert_eq!(
        only_b.verify(p, rid_b, Seqno(3), &sig_b),
        OriginVerdict::Unknown
    );
    only_b.admit(&b_cert, false).unwrap();
    assert_eq!(
        only_b.verify(p, rid_b, Seqno(3), &sig_b),
        OriginVerdict::Invalid
    );
    // b's key under a's router-id: the signature does not verify
    let forged = b_signer.sign(p, rid_a, Seqno(3)).unwrap();
    assert_eq!(
        store.verify(p, rid_a, Seqno(3), &forged),
        OriginVerdict::Invalid
    );
    // not a /32, or outside the range: refused
    for q in ["10.42.0.0/24", "10.43.0.1/32", "192.168.1.0/24"] {
        let q = bp(q);
        let sig = a_signer.sign(q, rid_a, Seqno(3)).unwrap();
        assert_eq!(
            store.verify(q, rid_a, Seqno(3), &sig),
            OriginVerdict::Invalid
        );
    }
    // the certificate is not known (yet): unknown, not taken
    let mut fresh = w.store();
    fresh.set_ipv4_range(Some("10.42.0.0/16".parse().unwrap()));
    assert_eq!(
        fresh.verify(p, rid_a, Seqno(3), &sig_a),
        OriginVerdict::Unknown
    );
}
