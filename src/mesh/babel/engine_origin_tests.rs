//! Origin authentication in the engine (`origin.rs`, `engine_origin.rs`): a fake
//! signature scheme stands for the node's ECDSA keys (the node core's tests use real ones).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::*;
use crate::mesh::babel::origin::{
    OriginPolicy, OriginVerdict, RouteSignature, RouteSigner, signed_bytes,
};

/// The fake signature of `key`: SHA-256(key ‖ signed bytes), twice.
fn fake_sign(key: u8, prefix: Prefix, rid: RouterId, seqno: Seqno) -> RouteSignature {
    let mut h = Sha256::new();
    h.update([key]);
    h.update(signed_bytes(prefix, rid, seqno));
    let d: [u8; 32] = h.finalize().into();
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&d);
    sig[32..].copy_from_slice(&d);
    sig
}

/// Owners' keys by prefix; a prefix without one is unknown.
#[derive(Default)]
struct Keys {
    owners: BTreeMap<Prefix, u8>,
    calls: u64,
}

impl OriginPolicy for Keys {
    fn verify(
        &mut self,
        prefix: Prefix,
        rid: RouterId,
        seqno: Seqno,
        sig: &RouteSignature,
    ) -> OriginVerdict {
        self.calls += 1;
        match self.owners.get(&prefix) {
            None => OriginVerdict::Unknown,
            Some(k) if fake_sign(*k, prefix, rid, seqno) == *sig => OriginVerdict::Valid,
            Some(_) => OriginVerdict::Invalid,
        }
    }
}

struct Signer {
    key: u8,
    made: Arc<AtomicU64>,
}

impl RouteSigner for Signer {
    fn sign(&mut self, prefix: Prefix, rid: RouterId, seqno: Seqno) -> Option<RouteSignature> {
        self.made.fetch_add(1, Ordering::Relaxed);
        Some(fake_sign(self.key, prefix, rid, seqno))
    }
}

const OWNER: u8 = 7;

fn with_policy(owners: &[(Prefix, u8)]) -> (Engine, NeighbourId, NeighbourId, Prefix) {
    let (mut e, a, b, p) = setup();
    e.set_origin_policy(Some(Box::new(Keys {
        owners: owners.iter().copied().collect(),
        calls: 0,
    })));
    (e, a, b, p)
}

fn signed(prefix: Prefix, seqno: u16, metric: u16, key: u8) -> Msg {
    Msg::Update {
        prefix,
        router_id: RID_X,
        seqno: Seqno(seqno),
        metric,
        interval_cs: 1600,
        next_hop: None,
        signature: Some(fake_sign(key, prefix, RID_X, Seqno(seqno))),
    }
}

fn announced(out: &[(IpAddr, Msg)], p: Prefix) -> Vec<(u16, Option<RouteSignature>, Seqno)> {
    out.iter()
        .filter_map(|(_, m)| match m {
            Msg::Update {
                prefix,
                metric,
                signature,
                seqno,
                ..
            } if *prefix == p => Some((*metric, *signature, *seqno)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_validly_signed_route_is_selected_and_relayed_with_its_signature_intact() {
    let p: Prefix = "fd00:1:2:3::/64".parse().unwrap();
    let (mut e, a, _, _) = with_policy(&[(p, OWNER)]);
    let t = Time::from_millis(10);
    receive(&mut e, t, a, &[signed(p, 5, 96, OWNER)]);
    assert!(e.selected_route(p).is_some());
    // The triggered re-announcement (and every later one) carries the originator's
    // signature, byte for byte, through the wire format.
    e.handle_timeout(Time::from_millis(40));
    let out = drain(&mut e);
    let ann = announced(&out, p);
    assert!(!ann.is_empty());
    for (metric, sig, seqno) in ann {
        assert!(metric < INFINITY);
        assert_eq!(seqno, Seqno(5));
        assert_eq!(sig, Some(fake_sign(OWNER, p, RID_X, Seqno(5))));
    }
    // So is the answer to a route request.
    let t = Time::from_millis(50);
    receive(&mut e, t, a, &[Msg::RouteRequest { prefix: Some(p) }]);
    let ann = announced(&drain(&mut e), p);
    assert_eq!(ann.len(), 1);
    assert_eq!(ann[0].1, Some(fake_sign(OWNER, p, RID_X, Seqno(5))));
    assert_eq!(e.origin_counters().signatures_verified, 1);
}

#[test]
fn forged_unsigned_and_unowned_routes_are_dropped_and_counted() {
    let p: Prefix = "fd00:1:2:3::/64".parse().unwrap();
    let (mut e, a, b, _) = with_policy(&[(p, OWNER)]);
    let t = Time::from_millis(10);
    // b holds the genuine route.
    receive(&mut e, t, b, &[signed(p, 5, 200, OWNER)]);
    let before = e
        .selected_route(p)
        .cloned()
        .expect("genuine route selected");
    // a forges: a higher seqno and a better metric signed with its own key, the same
    // without a signature, and a more specific prefix inside p.
    let more: Prefix = "fd00:1:2:3::1/128".parse().unwrap();
    let unsigned = Msg::Update {
        prefix: p,
        router_id: RID_X,
        seqno: Seqno(6),
        metric: 1,
        interval_cs: 1600,
        next_hop: None,
        signature: None,
    };
    receive(
        &mut e,
        t,
        a,
        &[signed(p, 9, 1, 99), unsigned, signed(more, 9, 1, 99)],
    );
    assert_eq!(e.selected_route(p), Some(&before));
    assert!(e.selected_route(more).is_none());
    assert!(
        !e.routes()
            .iter()
            .any(|r| r.prefix == p && r.next_hop == Some(a.addr))
    );
    let c = e.origin_counters();
    // The /128 nobody owns is unknown to this policy (held, never selected).
    assert_eq!(c.routes_unauthenticated, 2);
    assert_eq!(c.routes_origin_unknown, 1);
    // Retractions need no signature.
    receive(&mut e, t, b, &[update_msg(p, RID_X, 5, INFINITY)]);
    assert!(e.selected_route(p).is_none());
}

#[test]
fn an_unknown_origin_is_held_unselectable_until_the_host_knows_it() {
    let p: Prefix = "fd00:1:2:3::/64".parse().unwrap();
    let (mut e, a, _, _) = with_policy(&[]);
    let t = Time::from_millis(10);
    receive(&mut e, t, a, &[signed(p, 5, 96, OWNER)]);
    assert!(e.selected_route(p).is_none());
    let mut events = Vec::new();
    while let Some(ev) = e.poll_event() {
        events.push(ev);
    }
    assert!(events.contains(&Event::OriginUnknown {
        prefix: p,
        neighbour: a
    }));
    assert_eq!(e.origin_unknown(), vec![(p, vec![a])]);
    // Not announced either (it is not selected) and no seqno request for it.
    let out = drain(&mut e);
    assert!(announced(&out, p).iter().all(|(m, _, _)| *m == INFINITY));
    assert!(
        !out.iter()
            .any(|(_, m)| matches!(m, Msg::SeqnoRequest { prefix, .. } if *prefix == p))
    );
    // The certificate arrives: the host tells the policy and the engine.
    e.origin_policy_mut::<Keys>()
        .expect("our policy")
        .owners
        .insert(p, OWNER);
    e.origin_known(Time::from_millis(20), p);
    assert!(e.selected_route(p).is_some());
    assert!(e.origin_unknown().is_empty());
    // Then it is revoked: unknown again, no longer selectable.
    e.origin_policy_mut::<Keys>()
        .expect("our policy")
        .owners
        .remove(&p);
    e.origin_known(Time::from_millis(30), p);
    assert!(e.selected_route(p).is_none());
    // A certificate for another key (the prefix changed hands): the held route is dropped.
    e.origin_policy_mut::<Keys>()
        .expect("our policy")
        .owners
        .insert(p, 3);
    e.origin_known(Time::from_millis(40), p);
    assert!(e.routes().iter().all(|r| r.prefix != p));
}

#[test]
fn the_same_announcement_from_several_neighbours_is_verified_once() {
    let p: Prefix = "fd00:1:2:3::/64".parse().unwrap();
    let (mut e, a, b, _) = with_policy(&[(p, OWNER)]);
    let t = Time::from_millis(10);
    receive(&mut e, t, a, &[signed(p, 5, 96, OWNER)]);
    receive(&mut e, t, b, &[signed(p, 5, 120, OWNER)]);
    receive(&mut e, t, a, &[signed(p, 5, 96, OWNER)]);
    let c = e.origin_counters();
    assert_eq!((c.signatures_verified, c.signatures_cached), (1, 2));
    assert_eq!(e.origin_policy_mut::<Keys>().map(|k| k.calls), Some(1));
    assert_eq!(e.origin_cached(), 1);
    // A new seqno is a new announcement.
    receive(&mut e, t, a, &[signed(p, 6, 96, OWNER)]);
    assert_eq!(e.origin_counters().signatures_verified, 2);
}

#[test]
fn own_announcements_are_signed_once_per_seqno() {
    let (mut e, a, _, mine) = setup();
    let made = Arc::new(AtomicU64::new(0));
    e.set_route_signer(
        Time::ZERO,
        Some(Box::new(Signer {
            key: OWNER,
            made: made.clone(),
        })),
    );
    e.originate(Time::ZERO, mine);
    e.handle_timeout(Time::from_millis(30));
    let s0 = e.seqno();
    let ann = announced(&drain(&mut e), mine);
    assert!(!ann.is_empty());
    assert!(
        ann.iter()
            .all(|(_, sig, s)| *s == s0 && *sig == Some(fake_sign(OWNER, mine, e.router_id(), s0)))
    );
    // Full updates and requests re-send the cached signature.
    for i in 1..5 {
        receive(
            &mut e,
            Time::from_millis(40 + i),
            a,
            &[Msg::RouteRequest { prefix: None }],
        );
    }
    assert!(!announced(&drain(&mut e), mine).is_empty());
    assert_eq!(made.load(Ordering::Relaxed), 1);
    // A seqno bump (a neighbour's request) re-signs, once.
    let want = s0.next();
    let rid = e.router_id();
    receive(
        &mut e,
        Time::from_millis(2000),
        a,
        &[Msg::SeqnoRequest {
            prefix: mine,
            seqno: want,
            hop_count: 8,
            router_id: rid,
        }],
    );
    e.handle_timeout(Time::from_millis(2030));
    let ann = announced(&drain(&mut e), mine);
    assert_eq!(e.seqno(), want);
    assert!(ann.contains(&(0, Some(fake_sign(OWNER, mine, e.router_id(), want)), want)));
    assert_eq!(made.load(Ordering::Relaxed), 2);
    assert_eq!(e.origin_counters().signatures_made, 2);
}

#[test]
fn without_a_policy_signatures_are_relayed_and_unsigned_routes_learnt() {
    let p: Prefix = "fd00:1:2:3::/64".parse().unwrap();
    let q: Prefix = "fd00:1:2:4::/64".parse().unwrap();
    let (mut e, a, _, _) = setup();
    let t = Time::from_millis(10);
    receive(
        &mut e,
        t,
        a,
        &[signed(p, 5, 96, OWNER), update_msg(q, RID_X, 5, 96)],
    );
    assert!(e.selected_route(p).is_some() && e.selected_route(q).is_some());
    e.handle_timeout(Time::from_millis(40));
    let out = drain(&mut e);
    assert_eq!(
        announced(&out, p)[0].1,
        Some(fake_sign(OWNER, p, RID_X, Seqno(5)))
    );
    assert_eq!(announced(&out, q)[0].1, None);
    assert_eq!(e.origin_counters(), Default::default());
}

#[test]
fn a_neighbour_sending_bogus_signatures_is_held_to_its_verification_budget() {
    use crate::mesh::babel::origin::{VERIFY_BURST, VERIFY_RATE};
    let p: Prefix = "fd00:1:2:3::/64".parse().unwrap();
    let (mut e, a, b, _) = with_policy(&[(p, OWNER)]);
    let t = Time::from_millis(10);
    // Every Update a new seqno (no cache hit), every signature wrong.
    let n = VERIFY_BURST + 1000;
    for chunk in (0..n).collect::<Vec<u32>>().chunks(16) {
        let msgs: Vec<Msg> = chunk.iter().map(|i| signed(p, *i as u16, 96, 99)).collect();
        receive(&mut e, t, a, &msgs);
    }
    let c = e.origin_counters();
    assert_eq!(c.signatures_verified, u64::from(VERIFY_BURST));
    assert_eq!(c.verifications_over_budget, 1000);
    assert_eq!(c.routes_unauthenticated, u64::from(VERIFY_BURST));
    // Refused routes use none of the neighbour's route budget.
    assert_eq!(e.budget_counters(), Default::default());
    assert_eq!(e.route_count(), 0);
    // Another neighbour's genuine route is still checked and taken.
    receive(&mut e, t, b, &[signed(p, 7, 96, OWNER)]);
    assert!(e.selected_route(p).is_some());
    // One second later a has VERIFY_RATE more.
    for i in 0..(VERIFY_RATE + 10) {
        receive(
            &mut e,
            Time::from_millis(1010),
            a,
            &[signed(p, (n + i) as u16, 96, 99)],
        );
    }
    let c2 = e.origin_counters();
    assert_eq!(
        c2.signatures_verified - c.signatures_verified,
        u64::from(VERIFY_RATE) + 1
    );
}
