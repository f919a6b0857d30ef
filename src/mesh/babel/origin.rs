//! Origin authentication of routes (issue 13, "Insider-proof routing").
//!
//! The MAC key is shared by every member, so it keeps strangers out but lets any member
//! announce any prefix. With origin authentication the originator signs
//! `(prefix, plen, router-id, seqno)` ([`signed_bytes`]) with its certificate key each
//! time its seqno changes; the 64-byte signature travels with the route through every
//! relay as sub-TLV 112 of the Update ([`crate::wire::tlv::sub_kind::ROUTE_SIGNATURE`]),
//! and relays store it with the route and re-attach it whenever they announce it.
//!
//! The engine stays sans-IO and knows nothing of certificates: the host gives it
//! * an [`OriginPolicy`] ([`super::Engine::set_origin_policy`]), asked about every
//!   received Update with a finite metric (retractions need no check): [`OriginVerdict::Valid`]
//!   (learnt as usual), [`OriginVerdict::Invalid`] (dropped, counted in
//!   [`OriginCounters::routes_unauthenticated`]) or [`OriginVerdict::Unknown`] (the
//!   policy cannot tell yet, e.g. the certificate for that prefix is not known: the route
//!   is kept but is **not selectable**, an [`super::Event::OriginUnknown`] tells the host,
//!   which calls [`super::Engine::origin_known`] once it can tell);
//! * a [`RouteSigner`] ([`super::Engine::set_route_signer`]) for its own prefixes, called
//!   only when the seqno (or the router-id) changes: the current signature is cached.
//!
//! An Update without a signature is [`OriginVerdict::Invalid`] when a policy is set (the
//! policy is not asked). Verdicts [`OriginVerdict::Valid`] are cached by
//! `(prefix, router-id, seqno)` together with the signature, so the same announcement
//! heard from several neighbours (or refreshed every update interval) is verified once;
//! the cache holds at most [`VERIFIED_CACHE`] entries (the oldest go first).
//!
//! Without a policy and a signer (`mesh babel run`, the simulator's plain engines) nothing
//! changes: no signature is sent, every route is selectable, received signatures are
//! still relayed unchanged.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use super::engine::NeighbourId;
use super::msg::RouterId;
// Routes are keyed by destination and RFC 9079 source prefix: `Prefix` here is that key
// (it dereferences to the destination prefix).
use super::prefix::RouteKey as Prefix;
use super::seqno::Seqno;
use super::time::Time;

pub use crate::wire::RouteSignature;

/// Domain separation: the first bytes of everything a route signature covers, so such a
/// signature can never be taken for a signature of anything else made with the node key.
pub const SIGNATURE_DOMAIN: &[u8; 17] = b"re6mesh route v1\0";

/// Length of [`signed_bytes`]: domain, family, prefix length, 16 address bytes,
/// router-id, seqno.
pub const SIGNED_LEN: usize = 17 + 1 + 1 + 16 + 8 + 2;

/// Verified `(prefix, router-id, seqno, signature)` tuples kept.
pub const VERIFIED_CACHE: usize = 4096;
/// Signatures one neighbour can make us check at once (cache misses: verifications that
/// the cache of verified announcements did not spare). A new neighbour's first full
/// update of a mesh this size needs no more.
pub const VERIFY_BURST: u32 = 4096;
/// Signatures one neighbour can make us check per second after the burst. Beyond it its
/// Updates are dropped unchecked and counted ([`OriginCounters::verifications_over_budget`]);
/// honest neighbours stay far below it (their announcements hit the cache; a new seqno
/// is one verification per origin), while a member sending bogus signatures costs at
/// most this many verifications per second (≈ 3 % of a core, see docs/BABEL.md).
pub const VERIFY_RATE: u32 = 512;

/// The bytes an originator signs: [`SIGNATURE_DOMAIN`] ‖ family (4 or 6) ‖ plen ‖ the
/// prefix address (16 bytes; an IPv4 address in the first 4, zeros after; host bits are
/// always clear) ‖ router-id (8) ‖ seqno (2, big-endian) — [`SIGNED_LEN`] bytes; for a
/// source-specific route (RFC 9079) followed by the source prefix's plen and address (16
/// bytes), so a signature of `::/0 from P` never passes for `::/0` or `::/0 from Q`.
pub fn signed_bytes(prefix: Prefix, router_id: RouterId, seqno: Seqno) -> Vec<u8> {
    fn addr16(a: IpAddr) -> (u8, [u8; 16]) {
        match a {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                (4u8, b)
            }
            IpAddr::V6(a) => (6u8, a.octets()),
        }
    }
    let mut out = Vec::with_capacity(SIGNED_LEN + 17);
    out.extend_from_slice(SIGNATURE_DOMAIN);
    let (family, addr) = addr16(prefix.addr());
    out.push(family);
    out.push(prefix.len());
    out.extend_from_slice(&addr);
    out.extend_from_slice(&router_id.0);
    out.extend_from_slice(&seqno.0.to_be_bytes());
    if let Some(src) = prefix.src {
        out.push(src.len());
        out.extend_from_slice(&addr16(src.addr()).1);
    }
    out
}

/// What an [`OriginPolicy`] says of a signed announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginVerdict {
    /// Signed by the prefix's owner: learnt as usual.
    Valid,
    /// Forged, or a prefix nobody may announce: dropped and counted.
    Invalid,
    /// Cannot tell yet (the owner's certificate is not known): kept, not selectable, until
    /// the host calls [`super::Engine::origin_known`].
    Unknown,
}

/// The host's judgement of announcements (see the module docs). `Any` lets the host get
/// its own type back with [`super::Engine::origin_policy_mut`].
pub trait OriginPolicy: Any + Send {
    /// Is `signature` the owner's signature of `(prefix, router_id, seqno)`
    /// ([`signed_bytes`]), and may that owner announce `prefix`?
    fn verify(
        &mut self,
        prefix: Prefix,
        router_id: RouterId,
        seqno: Seqno,
        signature: &RouteSignature,
    ) -> OriginVerdict;
}

/// Signs this node's own announcements.
pub trait RouteSigner: Send {
    /// The signature of [`signed_bytes`]`(prefix, router_id, seqno)`, or `None` when the
    /// key cannot sign (the announcement then goes out unsigned and policies refuse it).
    fn sign(&mut self, prefix: Prefix, router_id: RouterId, seqno: Seqno)
    -> Option<RouteSignature>;
}

/// What origin authentication did. Read with [`super::Engine::origin_counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginCounters {
    /// Updates dropped: no signature, a bad one, or a prefix the policy refuses.
    pub routes_unauthenticated: u64,
    /// Updates held unselectable because the policy could not tell yet.
    pub routes_origin_unknown: u64,
    /// Signatures checked by the policy (cache misses).
    pub signatures_verified: u64,
    /// Updates whose signature was found in the cache of verified ones.
    pub signatures_cached: u64,
    /// Signatures made for our own announcements.
    pub signatures_made: u64,
    /// Updates dropped unchecked because their neighbour exceeded [`VERIFY_BURST`] /
    /// [`VERIFY_RATE`] verifications.
    pub verifications_over_budget: u64,
}

impl OriginCounters {
    /// Every counter by name, for `mesh status --json`.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("routes_unauthenticated", self.routes_unauthenticated),
            ("routes_origin_unknown", self.routes_origin_unknown),
            ("signatures_verified", self.signatures_verified),
            ("signatures_cached", self.signatures_cached),
            ("signatures_made", self.signatures_made),
            ("verifications_over_budget", self.verifications_over_budget),
        ]
    }
}

type Key = (Prefix, RouterId, u16);

/// The engine's origin-authentication state.
#[derive(Default)]
pub(super) struct Origin {
    policy: Option<Box<dyn OriginPolicy>>,
    signer: Option<Box<dyn RouteSigner>>,
    verified: BTreeMap<Key, RouteSignature>,
    /// Insertion order of `verified`, oldest first (entries already gone are skipped).
    order: VecDeque<Key>,
    own: BTreeMap<Prefix, (RouterId, Seqno, RouteSignature)>,
    /// Per neighbour: verification tokens and when they were last refilled.
    tokens: BTreeMap<NeighbourId, (u32, Time)>,
    pub(super) counters: OriginCounters,
}

impl Origin {
    pub(super) fn set_policy(&mut self, policy: Option<Box<dyn OriginPolicy>>) {
        self.policy = policy;
        self.verified.clear();
        self.order.clear();
    }

    pub(super) fn set_signer(&mut self, signer: Option<Box<dyn RouteSigner>>) {
        self.signer = signer;
        self.own.clear();
    }

    /// True when received announcements are checked.
    pub(super) fn enforcing(&self) -> bool {
        self.policy.is_some()
    }

    /// True when announcements may carry signatures (ours or checked ones).
    pub(super) fn active(&self) -> bool {
        self.policy.is_some() || self.signer.is_some()
    }

    pub(super) fn policy_mut(&mut self) -> Option<&mut Box<dyn OriginPolicy>> {
        self.policy.as_mut()
    }

    pub(super) fn policy(&self) -> Option<&dyn OriginPolicy> {
        self.policy.as_deref()
    }

    /// The verdict on a received finite announcement (no policy: always valid). `from`:
    /// the neighbour it came from, whose verification budget a cache miss uses (`None`:
    /// the host asked, no budget).
    pub(super) fn check(
        &mut self,
        prefix: Prefix,
        rid: RouterId,
        seqno: Seqno,
        sig: Option<&RouteSignature>,
        from: Option<(NeighbourId, Time)>,
    ) -> OriginVerdict {
        let Some(policy) = self.policy.as_mut() else {
            return OriginVerdict::Valid;
        };
        let verdict = match sig {
            None => OriginVerdict::Invalid,
            Some(sig) => {
                let key = (prefix, rid, seqno.0);
                if self.verified.get(&key) == Some(sig) {
                    self.counters.signatures_cached += 1;
                    return OriginVerdict::Valid;
                }
                if let Some((nid, now)) = from {
                    let (tokens, at) = self.tokens.entry(nid).or_insert((VERIFY_BURST, now));
                    let ms = now.saturating_since(*at).as_millis();
                    let refill =
                        u32::try_from(ms * u128::from(VERIFY_RATE) / 1000).unwrap_or(u32::MAX);
                    if refill > 0 {
                        *tokens = tokens.saturating_add(refill).min(VERIFY_BURST);
                        *at = now;
                    }
                    if *tokens == 0 {
                        self.counters.verifications_over_budget += 1;
                        return OriginVerdict::Invalid;
                    }
                    *tokens -= 1;
                }
                self.counters.signatures_verified += 1;
                let v = policy.verify(prefix, rid, seqno, sig);
                if v == OriginVerdict::Valid {
                    self.remember(key, *sig);
                }
                v
            }
        };
        match verdict {
            OriginVerdict::Invalid => self.counters.routes_unauthenticated += 1,
            OriginVerdict::Unknown => self.counters.routes_origin_unknown += 1,
            OriginVerdict::Valid => {}
        }
        verdict
    }

    fn remember(&mut self, key: Key, sig: RouteSignature) {
        if self.verified.insert(key, sig).is_none() {
            self.order.push_back(key);
        }
        while self.verified.len() > VERIFIED_CACHE {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.verified.remove(&old);
        }
        // `order` may hold keys `forget` removed: keep it bounded too.
        while self.order.len() > 2 * VERIFIED_CACHE {
            if let Some(old) = self.order.pop_front() {
                self.verified.remove(&old);
            }
        }
    }

    /// Forgets a neighbour that left (its verification budget).
    pub(super) fn forget_neighbour(&mut self, nid: NeighbourId) {
        self.tokens.remove(&nid);
    }

    /// Forgets the cached verdicts for `prefix` (its certificate changed or went away).
    pub(super) fn forget(&mut self, prefix: Prefix) {
        self.verified.retain(|(p, _, _), _| *p != prefix);
    }

    /// Forgets every cached verdict (the policy changed wholesale).
    pub(super) fn forget_all(&mut self) {
        self.verified.clear();
        self.order.clear();
    }

    /// Verified tuples cached.
    pub(super) fn cached(&self) -> usize {
        self.verified.len()
    }

    /// Our signature of `(prefix, rid, seqno)`: the cached one, or a new one when the
    /// seqno or router-id changed. `None` without a signer.
    pub(super) fn own_signature(
        &mut self,
        prefix: Prefix,
        rid: RouterId,
        seqno: Seqno,
    ) -> Option<RouteSignature> {
        if let Some((r, s, sig)) = self.own.get(&prefix)
            && *r == rid
            && *s == seqno
        {
            return Some(*sig);
        }
        let sig = self.signer.as_mut()?.sign(prefix, rid, seqno)?;
        self.counters.signatures_made += 1;
        self.own.insert(prefix, (rid, seqno, sig));
        Some(sig)
    }

    /// Forgets our signature of a prefix we no longer announce.
    pub(super) fn withdraw(&mut self, prefix: Prefix) {
        self.own.remove(&prefix);
    }
}

/// Origin state of a route held in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RouteOrigin {
    /// Verified (or no policy): selectable.
    Valid,
    /// Waiting for the host ([`super::Engine::origin_known`]): not selectable.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_bytes_separate_domain_family_prefix_router_id_and_seqno() {
        let p: Prefix = "fd00:1:2:3::/64".parse().unwrap();
        let b = signed_bytes(p, RouterId([1; 8]), Seqno(0x1234));
        assert_eq!(&b[..17], SIGNATURE_DOMAIN);
        assert_eq!(b[17], 6);
        assert_eq!(b[18], 64);
        assert_eq!(&b[19..23], &[0xfd, 0, 0, 1]);
        assert_eq!(&b[35..43], &[1; 8]);
        assert_eq!(&b[43..], &[0x12, 0x34]);
        let v4: Prefix = "10.0.0.0/8".parse().unwrap();
        let b4 = signed_bytes(v4, RouterId([1; 8]), Seqno(0x1234));
        assert_eq!((b4[17], b4[18], b4[19]), (4, 8, 10));
        // Every field changes the bytes.
        let q: Prefix = "fd00:1:2:3::/65".parse().unwrap();
        assert_ne!(b, signed_bytes(q, RouterId([1; 8]), Seqno(0x1234)));
        assert_ne!(b, signed_bytes(p, RouterId([2; 8]), Seqno(0x1234)));
        assert_ne!(b, signed_bytes(p, RouterId([1; 8]), Seqno(0x1235)));
    }

    struct Count(u64);
    impl OriginPolicy for Count {
        fn verify(
            &mut self,
            _: Prefix,
            _: RouterId,
            _: Seqno,
            _: &RouteSignature,
        ) -> OriginVerdict {
            self.0 += 1;
            OriginVerdict::Valid
        }
    }

    #[test]
    fn the_verified_cache_is_bounded_and_only_hits_on_the_same_signature() {
        let mut o = Origin::default();
        o.set_policy(Some(Box::new(Count(0))));
        let p: Prefix = "fd00::/64".parse().unwrap();
        for i in 0..(VERIFIED_CACHE as u32 + 100) {
            let v = o.check(p, RouterId([1; 8]), Seqno(i as u16), Some(&[1; 64]), None);
            assert_eq!(v, OriginVerdict::Valid);
        }
        assert_eq!(o.cached(), VERIFIED_CACHE);
        let last = Seqno((VERIFIED_CACHE + 99) as u16);
        o.check(p, RouterId([1; 8]), last, Some(&[1; 64]), None);
        assert_eq!(o.counters.signatures_cached, 1);
        // Another signature for the same tuple is verified again.
        o.check(p, RouterId([1; 8]), last, Some(&[2; 64]), None);
        assert_eq!(o.counters.signatures_cached, 1);
        // No signature: refused without asking the policy.
        let before = o.counters.signatures_verified;
        assert_eq!(
            o.check(p, RouterId([1; 8]), last, None, None),
            OriginVerdict::Invalid
        );
        assert_eq!(o.counters.signatures_verified, before);
        assert_eq!(o.counters.routes_unauthenticated, 1);
        o.forget(p);
        assert_eq!(o.cached(), 0);
    }
}
