//! The sealing core with real CA-signed certificates: handshakes (success and each
//! failure), data through a relay that sees only ciphertext, tampering, replay, spoofed
//! sources, rekeying, revocation and the handshake budget.

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use super::handshake::{self, HandshakeError, LocalIdentity};
use super::session::{
    COLLISION_WINDOW, HANDSHAKE_RETRY, HANDSHAKE_RETRY_MAX, SealConfig, SealError, Sealer,
    UNKNOWN_SESSION_INTERVAL, retry_after,
};
use super::{session, wire};
use crate::identity::node_address;
use crate::mesh::node::core::{CertRefused, CertStore, KeySigner};
use crate::registry::ca::{Ca, csr_public_key};

const NOW: i64 = 1_800_000_000;
const MARKER: &[u8] = b"MARKER-a-to-c-1c0ffee";

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

struct World {
    ca: Ca,
    network: Ipv6Net,
}

struct Node {
    prefix: Ipv6Net,
    serial: String,
    sealer: Sealer,
    store: CertStore,
}

fn net(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

impl World {
    fn new() -> World {
        let network = net("fd00:1::/48");
        World {
            ca: Ca::generate(&network, at(NOW)).unwrap(),
            network,
        }
    }

    /// (cert DER, serial, identity) for `prefix`.
    fn identity(&self, prefix: &str, seed: u8) -> (Vec<u8>, String, LocalIdentity) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let (der, serial, _) = self
            .ca
            .issue_node(
                &csr_public_key(csr.der()).unwrap(),
                &net(prefix),
                at(NOW),
                time::Duration::days(1),
            )
            .unwrap();
        // The node's own signer, as the node will build its identity.
        let signer = KeySigner::new(&key.serialize_der()).unwrap();
        let id = LocalIdentity::new(der.clone(), |m| signer.sign_bytes(m), [seed; 32]).unwrap();
        (der, serial, id)
    }

    fn store(&self) -> CertStore {
        CertStore::new(
            self.network,
            self.ca.cert_der().to_vec(),
            HashSet::new(),
            NOW,
        )
    }

    fn node(&self, prefix: &str, seed: u8, cfg: SealConfig) -> Node {
        let (_, serial, id) = self.identity(prefix, seed);
        Node {
            prefix: net(prefix),
            serial,
            sealer: Sealer::new(net(prefix), id, cfg, [seed.wrapping_add(100); 32]),
            store: self.store(),
        }
    }
}

/// An IPv6 packet from `src` to `dst` carrying `payload`.
fn packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// Any instant will do as the start of a test's time.
#[allow(clippy::disallowed_methods)] // test: any instant will do as `now`
fn t0() -> Instant {
    Instant::now()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Carries datagrams between `nodes` by their clear destination, through a relay that
/// records every frame and may rewrite it, until nothing is left; returns what each node
/// delivered.
fn run(
    nodes: &mut [&mut Node],
    frames: Vec<Vec<u8>>,
    now: Instant,
    relay: &mut dyn FnMut(&mut [u8]) -> Vec<Vec<u8>>,
) -> Vec<Vec<Vec<u8>>> {
    let mut delivered = vec![Vec::new(); nodes.len()];
    let mut rounds = 0;
    // In order, as on one path (a data frame overtaking message 3 finds no session yet).
    let mut frames: std::collections::VecDeque<Vec<u8>> = frames.into();
    while let Some(mut f) = frames.pop_front() {
        rounds += 1;
        assert!(rounds < 1000, "frames loop");
        assert_eq!(
            wire::relay(&mut f),
            Ok(wire::Relay::Forward(wire::route(&f).unwrap().0))
        );
        for mut f in relay(&mut f) {
            let (dst, _) = wire::route(&f).unwrap();
            let Some(i) = nodes.iter().position(|n| n.prefix.contains(&dst)) else {
                continue;
            };
            let n = &mut *nodes[i];
            if let Ok(out) = n.sealer.receive(&f, &mut n.store, now) {
                delivered[i].extend(out.deliver);
                frames.extend(out.send);
            }
            f.clear();
        }
    }
    delivered
}

fn pass(f: &mut [u8]) -> Vec<Vec<u8>> {
    vec![f.to_vec()]
}

#[test]
fn a_and_c_set_up_a_session_through_a_relay_that_sees_only_ciphertext() {
    let w = World::new();
    let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
    let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
    let t0 = t0();
    let (src, dst) = (node_address(&a.prefix), node_address(&c.prefix));
    let pkt = packet(src, dst, MARKER);
    // No session yet: the packet waits, message 1 leaves.
    let first = a.sealer.seal(c.prefix, &pkt, t0).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0][0],
        crate::mesh::tunnels::frame::TYPE_SEAL_HANDSHAKE
    );
    let mut seen = Vec::new();
    let got = run(&mut [&mut a, &mut c], first, t0, &mut |f| {
        seen.push(f.to_vec());
        vec![f.to_vec()]
    });
    assert_eq!(
        got[1],
        vec![pkt.clone()],
        "C gets the queued packet, intact"
    );
    assert!(
        !seen.iter().any(|f| contains(f, MARKER)),
        "the relay saw the marker"
    );
    assert!(
        seen.iter()
            .any(|f| f[0] == crate::mesh::tunnels::frame::TYPE_SEALED)
    );
    // Both ways now, without a new handshake.
    let back = packet(dst, src, b"pong");
    let out = c.sealer.seal(a.prefix, &back, t0).unwrap();
    assert_eq!(out.len(), 1);
    let got = run(&mut [&mut a, &mut c], out, t0, &mut pass);
    assert_eq!(got[0], vec![back]);
    let (sa, sc) = (a.sealer.counters().stats(), c.sealer.counters().stats());
    assert_eq!((sa.handshakes_started, sa.handshakes_completed), (1, 1));
    assert_eq!((sc.handshakes_started, sc.handshakes_completed), (0, 1));
    assert_eq!(
        (sc.opened, sa.opened, sa.sealed_tx, sc.sealed_tx),
        (1, 1, 1, 1)
    );
}

/// A and C with an established session.
fn pair(w: &World, cfg: SealConfig) -> (Node, Node, Instant) {
    let mut a = w.node("fd00:1:0:a::/64", 1, cfg.clone());
    let mut c = w.node("fd00:1:0:c::/64", 3, cfg);
    let t0 = t0();
    let pkt = packet(node_address(&a.prefix), node_address(&c.prefix), b"hi");
    let first = a.sealer.seal(c.prefix, &pkt, t0).unwrap();
    let got = run(&mut [&mut a, &mut c], first, t0, &mut pass);
    assert_eq!(got[1].len(), 1);
    (a, c, t0)
}

#[test]
fn tampered_replayed_and_spoofed_frames_are_dropped_and_counted() {
    let w = World::new();
    let (mut a, mut c, t0) = pair(&w, SealConfig::default());
    let (src, dst) = (node_address(&a.prefix), node_address(&c.prefix));
    let d = a
        .sealer
        .seal(c.prefix, &packet(src, dst, MARKER), t0)
        .unwrap();
    // Every byte but the hop limit is authenticated.
    for i in (0..d[0].len()).filter(|i| *i != wire::HOP_OFFSET && *i > 0) {
        let mut t = d[0].clone();
        t[i] ^= 0x40;
        let r = c.sealer.receive(&t, &mut c.store, t0);
        assert!(r.is_err(), "byte {i} flipped was accepted");
    }
    let s = c.sealer.counters().stats();
    assert!(s.auth_failures > 0 && s.opened == 1, "{s:?}");
    assert!(
        c.sealer
            .receive(&d[0], &mut c.store, t0)
            .unwrap()
            .deliver
            .is_some()
    );
    assert_eq!(
        c.sealer.receive(&d[0], &mut c.store, t0),
        Err(SealError::Replay)
    );
    assert_eq!(c.sealer.counters().stats().replays, 1);
    // A source outside A's prefix, sealed by A's own session: opened, then refused.
    let spoof = packet("fd00:1:0:b::5".parse().unwrap(), dst, b"spoof");
    let d = a.sealer.seal(c.prefix, &spoof, t0).unwrap();
    assert_eq!(
        c.sealer.receive(&d[0], &mut c.store, t0),
        Err(SealError::SpoofedSource)
    );
    assert_eq!(c.sealer.counters().stats().spoofed_sources, 1);
    // Not ours, unknown session.
    let mut other = d[0].clone();
    other[34] ^= 1;
    assert_eq!(
        c.sealer.receive(&other, &mut c.store, t0),
        Err(SealError::UnknownSession)
    );
    other[1..17].copy_from_slice(&node_address(&a.prefix).octets());
    assert_eq!(
        c.sealer.receive(&other, &mut c.store, t0),
        Err(SealError::NotForUs)
    );
}

#[test]
fn tampered_handshake_messages_fail() {
    let w = World::new();
    for msg in [wire::MSG1, wire::MSG2, wire::MSG3] {
        let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
        let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
        let t0 = t0();
        let pkt = packet(node_address(&a.prefix), node_address(&c.prefix), b"x");
        let first = a.sealer.seal(c.prefix, &pkt, t0).unwrap();
        let got = run(&mut [&mut a, &mut c], first, t0, &mut |f| {
            if f[0] == crate::mesh::tunnels::frame::TYPE_SEAL_HANDSHAKE && f[34] == msg {
                let n = f.len();
                f[n - 20] ^= 1;
            }
            vec![f.to_vec()]
        });
        assert!(got[1].is_empty(), "message {msg} tampered, yet delivered");
        let failures = a.sealer.counters().stats().handshake_failures
            + c.sealer.counters().stats().handshake_failures;
        assert_eq!(failures, 1, "message {msg}");
        assert_eq!(c.sealer.session_count(), 0);
    }
}

/// Runs a bare handshake between identities and stores; the initiator's result.
fn handshake_between(
    i: &LocalIdentity,
    i_addr: Ipv6Addr,
    r: &LocalIdentity,
    r_addr: Ipv6Addr,
    i_store: &mut CertStore,
    r_store: &mut CertStore,
) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
    let (hs, m1) = handshake::initiate(i, i_addr, r_addr, 7, [1; 32]).unwrap();
    let (rhs, m2) = handshake::respond(r, r_addr, i_addr, &m1, 9, [2; 32]).unwrap();
    let (est, m3) = match hs.finish_initiator(i, &m2, i_store) {
        Ok(x) => x,
        Err(e) => return (Err(e), Ok(())),
    };
    assert_eq!(est.remote_index, 9);
    let r_est = rhs.finish_responder(&m3, r_store).map(|e| {
        assert_eq!(e.send, est.recv);
        assert_eq!(e.recv, est.send);
        assert_eq!(e.remote_index, 7);
    });
    (Ok(()), r_est)
}

#[test]
fn handshakes_refuse_another_ca_a_revoked_or_expired_cert_and_the_wrong_prefix() {
    let w = World::new();
    let (_, _, a) = w.identity("fd00:1:0:a::/64", 1);
    let (_, c_serial, c) = w.identity("fd00:1:0:c::/64", 3);
    let (aa, ca) = (
        "fd00:1:0:a::1".parse().unwrap(),
        "fd00:1:0:c::1".parse().unwrap(),
    );
    // Success, as a reference.
    let r = handshake_between(&a, aa, &c, ca, &mut w.store(), &mut w.store());
    assert_eq!(r, (Ok(()), Ok(())));
    // C from another CA (same prefix): A refuses it.
    let other = World::new();
    let (_, _, c2) = other.identity("fd00:1:0:c::/64", 3);
    let r = handshake_between(&a, aa, &c2, ca, &mut w.store(), &mut w.store());
    assert_eq!(r.0, Err(HandshakeError::Cert(CertRefused::NotOurs)));
    // A from another CA: C refuses it at message 3.
    let (_, _, a2) = other.identity("fd00:1:0:a::/64", 1);
    let r = handshake_between(&a2, aa, &c, ca, &mut w.store(), &mut w.store());
    assert_eq!(r.1, Err(HandshakeError::Cert(CertRefused::NotOurs)));
    // C revoked in A's CRL.
    let mut revoked = w.store();
    revoked.set_trust(w.network, HashSet::from([c_serial]));
    let r = handshake_between(&a, aa, &c, ca, &mut revoked, &mut w.store());
    assert_eq!(r.0, Err(HandshakeError::Cert(CertRefused::Revoked)));
    // Expired by A's clock.
    let mut late = w.store();
    late.set_time(NOW + 2 * 86_400);
    let r = handshake_between(&a, aa, &c, ca, &mut late, &mut w.store());
    assert_eq!(r.0, Err(HandshakeError::Cert(CertRefused::Expired)));
    // C's certificate answering for an address outside its prefix.
    let b: Ipv6Addr = "fd00:1:0:b::1".parse().unwrap();
    let r = handshake_between(&a, aa, &c, b, &mut w.store(), &mut w.store());
    assert!(
        matches!(r.0, Err(HandshakeError::WrongPrefix(_, x)) if x == b),
        "{r:?}"
    );
    // A claiming an address outside its prefix: C refuses at message 3.
    let r = handshake_between(&a, b, &c, ca, &mut w.store(), &mut w.store());
    assert!(
        matches!(r.1, Err(HandshakeError::WrongPrefix(_, x)) if x == b),
        "{r:?}"
    );
}

#[test]
fn a_static_key_signed_by_another_certificate_key_is_refused() {
    let w = World::new();
    let (_, _, a) = w.identity("fd00:1:0:a::/64", 1);
    // C's certificate, but the static key signed by some other key.
    let (c_der, _, _) = w.identity("fd00:1:0:c::/64", 3);
    let rng = ring::rand::SystemRandom::new();
    let pk = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk.as_ref(), &rng).unwrap();
    let forged = LocalIdentity::new(
        c_der,
        |m| kp.sign(&rng, m).ok().map(|s| s.as_ref().to_vec()),
        [3; 32],
    )
    .unwrap();
    let (aa, ca) = (
        "fd00:1:0:a::1".parse().unwrap(),
        "fd00:1:0:c::1".parse().unwrap(),
    );
    let r = handshake_between(&a, aa, &forged, ca, &mut w.store(), &mut w.store());
    assert_eq!(r.0, Err(HandshakeError::BadSignature));
}

#[test]
fn sessions_rekey_after_their_time_and_old_frames_still_open() {
    let w = World::new();
    let cfg = SealConfig::default();
    let (mut a, mut c, t0) = pair(&w, cfg.clone());
    let (src, dst) = (node_address(&a.prefix), node_address(&c.prefix));
    let old = a
        .sealer
        .seal(c.prefix, &packet(src, dst, b"old"), t0)
        .unwrap();
    let later = t0 + cfg.rekey_after;
    let out = a
        .sealer
        .seal(c.prefix, &packet(src, dst, b"due"), later)
        .unwrap();
    assert_eq!(out.len(), 2, "the packet and message 1 of a new handshake");
    let got = run(&mut [&mut a, &mut c], out, later, &mut pass);
    assert_eq!(got[1].len(), 1);
    assert_eq!(a.sealer.counters().stats().handshakes_completed, 2);
    // New packets use the new session; the old one's late frame still opens.
    let new = a
        .sealer
        .seal(c.prefix, &packet(src, dst, b"new"), later)
        .unwrap();
    assert_eq!(new.len(), 1);
    assert_ne!(
        new[0][34..38],
        old[0][34..38],
        "same receiver index: not rekeyed"
    );
    let got = run(
        &mut [&mut a, &mut c],
        vec![old[0].clone(), new[0].clone()],
        later,
        &mut pass,
    );
    assert_eq!(got[1].len(), 2);
    // Past the reject time nothing of the first session opens any more.
    let dead = t0 + cfg.reject_after;
    c.sealer.tick(dead);
    assert_eq!(
        c.sealer.receive(&old[0], &mut c.store, dead),
        Err(SealError::UnknownSession)
    );
}

#[test]
fn a_session_sends_no_more_than_its_message_limit_then_rekeys() {
    let w = World::new();
    let cfg = SealConfig {
        rekey_messages: 3,
        reject_messages: 5,
        ..SealConfig::default()
    };
    let (mut a, c, t0) = pair(&w, cfg);
    let (src, dst) = (node_address(&a.prefix), node_address(&c.prefix));
    let p = packet(src, dst, b"n");
    // The pair's handshake sent one; 1 and 2 are plain sends, from 3 on a rekey is due.
    assert_eq!(a.sealer.seal(c.prefix, &p, t0).unwrap().len(), 1);
    assert_eq!(a.sealer.seal(c.prefix, &p, t0).unwrap().len(), 1);
    assert_eq!(a.sealer.seal(c.prefix, &p, t0).unwrap().len(), 2);
    assert_eq!(a.sealer.seal(c.prefix, &p, t0).unwrap().len(), 1);
    // Counter 5: exhausted, the packet waits for the new session (no plaintext).
    let out = a.sealer.seal(c.prefix, &p, t0).unwrap();
    assert!(out.is_empty(), "a handshake is already in progress");
    assert_eq!(a.sealer.counters().stats().sealed_tx, 5);
}

#[test]
fn revoking_a_peer_ends_its_session_at_once() {
    let w = World::new();
    let (a, mut c, t0) = pair(&w, SealConfig::default());
    let mut a = a;
    assert_eq!(c.sealer.end_untrusted(&HashSet::new(), NOW), 0);
    let d = a
        .sealer
        .seal(
            c.prefix,
            &packet(node_address(&a.prefix), node_address(&c.prefix), b"r"),
            t0,
        )
        .unwrap();
    assert_eq!(
        c.sealer
            .end_untrusted(&HashSet::from([a.serial.clone()]), NOW),
        1
    );
    assert_eq!(
        c.sealer.receive(&d[0], &mut c.store, t0),
        Err(SealError::UnknownSession)
    );
    assert!(c.sealer.session_for(&a.prefix, t0).is_none());
    assert_eq!(c.sealer.counters().stats().sessions_revoked, 1);
    // Expiry does the same.
    let (mut a, mut c, _) = pair(&w, SealConfig::default());
    a.sealer.tick(t0);
    assert_eq!(c.sealer.end_untrusted(&HashSet::new(), NOW + 86_400), 1);
}

#[test]
fn a_flood_of_first_messages_is_bounded_and_counted() {
    let w = World::new();
    let cfg = SealConfig {
        max_pending: 4,
        ..SealConfig::default()
    };
    let mut c = w.node("fd00:1:0:c::/64", 3, cfg);
    let (_, _, a) = w.identity("fd00:1:0:a::/64", 1);
    let t0 = t0();
    let (aa, ca) = ("fd00:1:0:a::1".parse().unwrap(), node_address(&c.prefix));
    for i in 0..10 {
        let (_, m1) = handshake::initiate(&a, aa, ca, i + 1, [i as u8; 32]).unwrap();
        let mut f = Vec::new();
        wire::emit_handshake(ca, aa, wire::MSG1, 0, &m1, &mut f);
        let r = c.sealer.receive(&f, &mut c.store, t0);
        assert_eq!(r.is_ok(), i < 4, "{i}");
    }
    assert_eq!(c.sealer.counters().stats().pending_full, 6);
    // They time out and room is made.
    c.sealer.tick(t0 + Duration::from_secs(6));
    let (_, m1) = handshake::initiate(&a, aa, ca, 99, [9; 32]).unwrap();
    let mut f = Vec::new();
    wire::emit_handshake(ca, aa, wire::MSG1, 0, &m1, &mut f);
    assert!(
        c.sealer
            .receive(&f, &mut c.store, t0 + Duration::from_secs(6))
            .is_ok()
    );
}

#[test]
fn packets_waiting_for_a_session_are_bounded() {
    let w = World::new();
    let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
    let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
    let t0 = t0();
    let (src, dst) = (node_address(&a.prefix), node_address(&c.prefix));
    let mut first = Vec::new();
    for i in 0..20u8 {
        first.extend(
            a.sealer
                .seal(c.prefix, &packet(src, dst, &[i]), t0)
                .unwrap(),
        );
    }
    assert_eq!(first.len(), 1, "one handshake");
    assert_eq!(a.sealer.counters().stats().no_session_drops, 12);
    let got = run(&mut [&mut a, &mut c], first, t0, &mut pass);
    let payloads: Vec<u8> = got[1].iter().map(|p| p[40]).collect();
    assert_eq!(
        payloads,
        (12..20).collect::<Vec<u8>>(),
        "the newest 8, in order"
    );
}

#[test]
fn sealed_frames_fit_the_smallest_tunnel() {
    let w = World::new();
    let (mut a, c, t0) = pair(&w, SealConfig::default());
    let (src, dst) = (node_address(&a.prefix), node_address(&c.prefix));
    let big = packet(src, dst, &[0x5a; 1280 - 40]);
    let d = a.sealer.seal(c.prefix, &big, t0).unwrap();
    assert_eq!(d[0].len(), 1 + 1280 + wire::OVERHEAD);
    assert!(d[0].len() <= wire::MIN_TUNNEL_DATAGRAM);
    let _ = c;
}

#[test]
fn frames_open_in_place_into_the_very_packet_that_was_sealed() {
    let w = World::new();
    let (mut a, c, t0) = pair(&w, SealConfig::default());
    let (src, dst) = (node_address(&a.prefix), node_address(&c.prefix));
    for len in [0, 1, 7, 8, 100, 1240] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let pkt = packet(src, dst, &payload);
        let mut d = a.sealer.seal(c.prefix, &pkt, t0).unwrap().remove(0);
        let f = wire::parse_data(&d).unwrap();
        let s = c.sealer.session_by_index(f.receiver).unwrap();
        let r = s.open_in_place(&mut d).unwrap();
        assert_eq!(r.start, session::OPENED_START);
        assert_eq!(&d[r.start + 1..r.end], &pkt[..], "payload of {len} bytes");
        // the payload never moved: it was decrypted where it arrived
        assert_eq!(r.start + 1 + 40, wire::DATA_HEADER_LEN + 8);
        // a replay of the same frame is refused, in place too
        let mut again = a.sealer.seal(c.prefix, &pkt, t0).unwrap().remove(0);
        let copy = again.clone();
        assert!(s.open_in_place(&mut again).is_ok());
        let mut replay = copy.clone();
        assert_eq!(s.open_in_place(&mut replay), Err(SealError::Replay));
        // a flipped ciphertext byte does not open
        let mut bad = a.sealer.seal(c.prefix, &pkt, t0).unwrap().remove(0);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(s.open_in_place(&mut bad), Err(SealError::AuthFailed));
    }
}

#[test]
fn handshake_messages_fit_the_smallest_tunnel() {
    let w = World::new();
    let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
    let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
    let t0 = t0();
    let first = a
        .sealer
        .seal(
            c.prefix,
            &packet(node_address(&a.prefix), node_address(&c.prefix), b"x"),
            t0,
        )
        .unwrap();
    let mut largest = 0;
    run(&mut [&mut a, &mut c], first, t0, &mut |f| {
        largest = largest.max(f.len());
        vec![f.to_vec()]
    });
    assert!(largest <= wire::MIN_TUNNEL_DATAGRAM, "{largest}");
}

/// The `seal_wire` fuzz corpus: real frames of one exchange (message 1, 2, 3, a data
/// frame), regenerated when missing or when `RE6MESH_WRITE_SEEDS` is set; each goes
/// through the fuzz property here too.
#[test]
fn fuzz_seeds_are_real_frames() {
    let w = World::new();
    let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
    let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
    let t0 = t0();
    let pkt = packet(node_address(&a.prefix), node_address(&c.prefix), b"seed");
    let first = a.sealer.seal(c.prefix, &pkt, t0).unwrap();
    let mut frames = Vec::new();
    run(&mut [&mut a, &mut c], first, t0, &mut |f| {
        frames.push(f.to_vec());
        vec![f.to_vec()]
    });
    let names = ["handshake-msg1", "handshake-msg2", "handshake-msg3", "data"];
    assert_eq!(frames.len(), names.len());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/seal_wire");
    for (name, f) in names.iter().zip(&frames) {
        wire::fuzz_check(f);
        let path = dir.join(name);
        if !path.exists() || std::env::var_os("RE6MESH_WRITE_SEEDS").is_some() {
            std::fs::write(&path, f).unwrap();
        }
        let seed = std::fs::read(&path).unwrap();
        wire::fuzz_check(&seed);
        assert_eq!(seed[0], f[0], "{name}");
        assert!(wire::route(&seed).is_ok(), "{name}");
    }
}

#[test]
fn both_nodes_starting_a_handshake_at_once_end_with_working_sessions() {
    let w = World::new();
    let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
    let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
    let t0 = t0();
    let (aa, ca) = (node_address(&a.prefix), node_address(&c.prefix));
    let mut first = a.sealer.seal(c.prefix, &packet(aa, ca, b"a1"), t0).unwrap();
    first.extend(c.sealer.seal(a.prefix, &packet(ca, aa, b"c1"), t0).unwrap());
    let got = run(&mut [&mut a, &mut c], first, t0, &mut pass);
    assert_eq!((got[0].len(), got[1].len()), (1, 1));
    // The tie-break: A (the lower address) ignored C's message 1 and kept its own; C
    // answered A's and, once message 3 came, sent what it had queued.
    let (sa, sc) = (a.sealer.counters().stats(), c.sealer.counters().stats());
    assert_eq!((sa.handshake_collisions, sc.handshake_collisions), (1, 0));
    assert_eq!((sa.handshakes_completed, sc.handshakes_completed), (1, 1));
    assert_eq!(a.sealer.session_count(), 1);
    for _ in 0..3 {
        let mut out = a.sealer.seal(c.prefix, &packet(aa, ca, b"a"), t0).unwrap();
        out.extend(c.sealer.seal(a.prefix, &packet(ca, aa, b"c"), t0).unwrap());
        assert_eq!(out.len(), 2, "no new handshake");
        let got = run(&mut [&mut a, &mut c], out, t0, &mut pass);
        assert_eq!((got[0].len(), got[1].len()), (1, 1));
    }
}

#[test]
fn an_unanswered_initiation_is_started_again_after_the_retry_interval() {
    let w = World::new();
    let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
    let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
    let t0 = t0();
    let (aa, ca) = (node_address(&a.prefix), node_address(&c.prefix));
    let lost = a.sealer.seal(c.prefix, &packet(aa, ca, b"1"), t0).unwrap();
    assert_eq!(lost.len(), 1);
    let soon = t0 + HANDSHAKE_RETRY / 2;
    assert!(
        a.sealer
            .seal(c.prefix, &packet(aa, ca, b"2"), soon)
            .unwrap()
            .is_empty()
    );
    let later = t0 + HANDSHAKE_RETRY;
    let again = a
        .sealer
        .seal(c.prefix, &packet(aa, ca, b"3"), later)
        .unwrap();
    assert_eq!(again.len(), 1, "a new message 1");
    // the first message 1 is lost; the second sets the session up and every packet that
    // waited arrives
    let got = run(&mut [&mut a, &mut c], again, later, &mut pass);
    assert_eq!(got[1].len(), 3);
    assert_eq!(a.sealer.counters().stats().handshakes_started, 2);
}

#[test]
fn a_late_answer_to_the_superseded_initiation_still_sets_the_session_up_and_retries_back_off() {
    let w = World::new();
    let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
    let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
    let t0 = t0();
    let (aa, ca) = (node_address(&a.prefix), node_address(&c.prefix));
    // a path slower than the first retry interval: message 1 is not lost, only slow
    let first = a.sealer.seal(c.prefix, &packet(aa, ca, b"1"), t0).unwrap();
    assert_eq!(first.len(), 1);
    let t1 = t0 + retry_after(0);
    let second = a.sealer.seal(c.prefix, &packet(aa, ca, b"2"), t1).unwrap();
    assert_eq!(second.len(), 1, "a second attempt after the first interval");
    // the next attempt waits twice as long
    let early = t1 + retry_after(0);
    assert!(retry_after(1) > retry_after(0));
    assert!(
        a.sealer
            .seal(c.prefix, &packet(aa, ca, b"3"), early)
            .unwrap()
            .is_empty(),
        "no third attempt before the doubled interval"
    );
    assert_eq!(retry_after(30), HANDSHAKE_RETRY_MAX);
    // the first attempt's answer arrives now, the second attempt's message 1 was lost
    let got = run(&mut [&mut a, &mut c], first, early, &mut pass);
    assert_eq!(got[1].len(), 3, "every packet that waited arrives");
    let s = a.sealer.counters().stats();
    assert_eq!((s.handshakes_started, s.handshakes_completed), (2, 1));
    // the session is in use: nothing waits, no further attempt
    let later = early + HANDSHAKE_RETRY_MAX;
    let out = a
        .sealer
        .seal(c.prefix, &packet(aa, ca, b"4"), later)
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(a.sealer.counters().stats().handshakes_started, 2);
}

#[test]
fn an_older_simultaneous_initiation_does_not_win_the_tie_break() {
    let w = World::new();
    let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
    let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
    let t0 = t0();
    let (aa, ca) = (node_address(&a.prefix), node_address(&c.prefix));
    let mine = a.sealer.seal(c.prefix, &packet(aa, ca, b"a1"), t0).unwrap();
    let theirs = c.sealer.seal(a.prefix, &packet(ca, aa, b"c1"), t0).unwrap();
    // A's own initiation is older than the window: A answers C's message 1 too.
    let later = t0 + COLLISION_WINDOW;
    let out = a.sealer.receive(&theirs[0], &mut a.store, later).unwrap();
    assert_eq!(out.send.len(), 1);
    assert_eq!(a.sealer.counters().stats().handshake_collisions, 0);
    drop(mine);
}

#[test]
fn a_frame_for_an_unknown_session_starts_a_handshake_towards_its_source_rate_bounded() {
    let w = World::new();
    let (mut a, c, t0) = pair(&w, SealConfig::default());
    let (aa, ca) = (node_address(&a.prefix), node_address(&c.prefix));
    // C restarts: a new sealer, no sessions. A still sends on its old session.
    let mut c = w.node("fd00:1:0:c::/64", 4, SealConfig::default());
    let d = a
        .sealer
        .seal(c.prefix, &packet(aa, ca, b"lost"), t0)
        .unwrap();
    assert_eq!(
        c.sealer.receive(&d[0], &mut c.store, t0),
        Err(SealError::UnknownSession)
    );
    let src = wire::source(&d[0]).unwrap();
    assert_eq!(src, aa);
    let m1 = c.sealer.unknown_session(src, a.prefix, t0).unwrap();
    // at most one per source and interval (and none while that one is under way)
    assert!(c.sealer.unknown_session(src, a.prefix, t0).is_none());
    assert!(
        c.sealer
            .unknown_session(src, a.prefix, t0 + UNKNOWN_SESSION_INTERVAL / 2)
            .is_none()
    );
    assert_eq!(c.sealer.counters().stats().unknown_session_handshakes, 1);
    // a source outside the prefix it claims starts nothing
    assert!(c.sealer.unknown_session(ca, a.prefix, t0).is_none());
    // The handshake completes; both directions work on the new session.
    run(&mut [&mut a, &mut c], vec![m1], t0, &mut pass);
    let d = a
        .sealer
        .seal(c.prefix, &packet(aa, ca, b"again"), t0)
        .unwrap();
    assert_eq!(d.len(), 1);
    let got = run(&mut [&mut a, &mut c], d, t0, &mut pass);
    assert_eq!(got[1].len(), 1);
    let p = c.sealer.published();
    assert_eq!((p.by_prefix.len(), p.by_index.len()), (1, 1));
}

#[test]
fn a_full_handshake_table_refuses_new_peers_but_never_loses_a_sealed_packet() {
    let w = World::new();
    let cfg = SealConfig {
        max_pending: 1,
        ..SealConfig::default()
    };
    let (mut a, c, t0) = pair(&w, cfg);
    let (aa, ca) = (node_address(&a.prefix), node_address(&c.prefix));
    // A handshake towards some other node fills A's table.
    let d: Ipv6Net = net("fd00:1:0:d::/64");
    let out = a
        .sealer
        .seal(d, &packet(aa, node_address(&d), b"d"), t0)
        .unwrap();
    assert_eq!(out.len(), 1);
    // Another new peer: refused, counted, nothing queued.
    let e: Ipv6Net = net("fd00:1:0:e::/64");
    let r = a.sealer.seal(e, &packet(aa, node_address(&e), b"e"), t0);
    assert_eq!(r, Err(SealError::NoSession));
    let s = a.sealer.counters().stats();
    assert_eq!((s.pending_full, s.no_session_drops), (1, 1));
    // C's session is due for a rekey that cannot start: the packet still leaves, sealed.
    let later = t0 + SealConfig::default().rekey_after;
    let out = a
        .sealer
        .seal(c.prefix, &packet(aa, ca, b"c"), later)
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0][0], crate::mesh::tunnels::frame::TYPE_SEALED);
    assert_eq!(a.sealer.counters().stats().pending_full, 2);
}

/// The A–B–C line in process, with the data path's decisions (`seal::path`) at every hop:
/// what B forwards never holds A's marker, C delivers it; A to B directly goes plain and B
/// sees the marker (positive control); a spoofed source sent directly is dropped by the
/// neighbour, sent sealed it is dropped by C.
#[test]
fn a_line_a_b_c_relays_only_ciphertext_and_direct_traffic_stays_plain() {
    use super::path::{FromTun, FromTunnel, PathDrop, from_tun, from_tunnel};
    use crate::mesh::tunnels::frame;
    let w = World::new();
    let mut a = w.node("fd00:1:0:a::/64", 1, SealConfig::default());
    let b_prefix = net("fd00:1:0:b::/64");
    let mut c = w.node("fd00:1:0:c::/64", 3, SealConfig::default());
    let t0 = t0();
    let (aa, ca) = (node_address(&a.prefix), node_address(&c.prefix));
    // A's FIB: C's prefix via the tunnel to B.
    let pkt = packet(aa, ca, MARKER);
    assert_eq!(from_tun(ca, c.prefix, b_prefix), FromTun::Seal(c.prefix));
    let mut on_wire: std::collections::VecDeque<(bool, Vec<u8>)> = a
        .sealer
        .seal(c.prefix, &pkt, t0)
        .unwrap()
        .into_iter()
        .map(|d| (true, d))
        .collect();
    let mut b_forwarded = Vec::new();
    let mut c_delivered = Vec::new();
    // `true`: travelling A → B → C; `false`: C → B → A.
    while let Some((east, mut d)) = on_wire.pop_front() {
        let from = if east { a.prefix } else { c.prefix };
        // At B.
        match from_tunnel(&mut d, b_prefix, from) {
            FromTunnel::Relay(dst) => {
                b_forwarded.push(d.clone());
                assert!(if east {
                    c.prefix.contains(&dst)
                } else {
                    a.prefix.contains(&dst)
                });
            }
            other => panic!("B: {other:?}"),
        }
        // At the far end.
        let node = if east { &mut c } else { &mut a };
        assert_eq!(from_tunnel(&mut d, node.prefix, b_prefix), FromTunnel::Open);
        let out = node.sealer.receive(&d, &mut node.store, t0).unwrap();
        if east {
            c_delivered.extend(out.deliver);
        }
        on_wire.extend(out.send.into_iter().map(|d| (!east, d)));
    }
    assert_eq!(c_delivered, vec![pkt]);
    assert!(b_forwarded.len() >= 4);
    assert!(
        !b_forwarded.iter().any(|f| contains(f, MARKER)),
        "B saw the marker"
    );
    // Positive control: A to B directly is plain, and B holds the marker.
    let bb = node_address(&b_prefix);
    assert_eq!(from_tun(bb, b_prefix, b_prefix), FromTun::Plain);
    let mut direct = vec![frame::TYPE_IPV6];
    direct.extend(packet(aa, bb, MARKER));
    assert_eq!(
        from_tunnel(&mut direct, b_prefix, a.prefix),
        FromTunnel::DeliverPlain
    );
    assert!(contains(&direct, MARKER));
    // A spoofed source: plain to the neighbour, dropped there; sealed to C, dropped at C.
    let spoof_src = "fd00:1:0:d::9".parse().unwrap();
    let mut plain = vec![frame::TYPE_IPV6];
    plain.extend(packet(spoof_src, bb, b"spoof"));
    assert_eq!(
        from_tunnel(&mut plain, b_prefix, a.prefix),
        FromTunnel::Drop(PathDrop::SpoofedSource)
    );
    let mut sealed = a
        .sealer
        .seal(c.prefix, &packet(spoof_src, ca, b"spoof"), t0)
        .unwrap();
    assert_eq!(
        from_tunnel(&mut sealed[0], b_prefix, a.prefix),
        FromTunnel::Relay(ca)
    );
    assert_eq!(
        c.sealer.receive(&sealed[0], &mut c.store, t0),
        Err(SealError::SpoofedSource)
    );
    assert_eq!(c.sealer.counters().stats().spoofed_sources, 1);
}
