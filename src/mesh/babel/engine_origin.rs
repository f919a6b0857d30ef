//! Origin authentication commands and queries of the [`Engine`](super::Engine) (the state
//! and the rules are in `origin.rs`).

use std::any::Any;

use super::*;
use crate::mesh::babel::origin::{OriginCounters, OriginPolicy, OriginVerdict, RouteSigner};

impl Engine {
    /// Checks every Update received from now on with `policy` (module docs of
    /// [`crate::mesh::babel::origin`]); `None` stops checking. Routes already held are
    /// not re-checked (call [`Engine::origin_known`] for their prefixes).
    pub fn set_origin_policy(&mut self, policy: Option<Box<dyn OriginPolicy>>) {
        self.origin.set_policy(policy);
    }

    /// Signs our own announcements with `signer` from now on (once per seqno).
    pub fn set_route_signer(&mut self, now: Time, signer: Option<Box<dyn RouteSigner>>) {
        self.now = self.now.max(now);
        self.origin.set_signer(signer);
        for p in self.local.clone() {
            self.triggered_update(p);
        }
        self.flush(now);
    }

    /// The policy set with [`Engine::set_origin_policy`], as its own type.
    pub fn origin_policy_mut<P: OriginPolicy>(&mut self) -> Option<&mut P> {
        let policy: &mut dyn Any = self.origin.policy_mut()?.as_mut();
        policy.downcast_mut::<P>()
    }

    /// The origin policy in force, as its concrete type (read only).
    pub fn origin_policy<P: OriginPolicy>(&self) -> Option<&P> {
        let policy: &dyn Any = self.origin.policy()?;
        policy.downcast_ref::<P>()
    }

    /// What origin authentication did so far.
    pub fn origin_counters(&self) -> OriginCounters {
        self.origin.counters
    }

    /// Verified announcements cached.
    pub fn origin_cached(&self) -> usize {
        self.origin.cached()
    }

    /// The policy's answer for `prefix` may have changed (its certificate became known,
    /// was revoked or expired): forgets the cached verdicts for it and asks the policy
    /// again about every finite route held for it. Valid ones become selectable, unknown
    /// ones stay held, invalid ones are dropped (and counted); then the prefix is
    /// reselected. An ordinary key stands for every route of that destination, source-specific
    /// ones included (a grant of `::/0` concerns `::/0 from` the network prefix).
    pub fn origin_known(&mut self, now: Time, prefix: impl Into<Prefix>) {
        let prefix = prefix.into();
        self.now = self.now.max(now);
        if !self.origin.enforcing() {
            return;
        }
        if prefix.src.is_none() {
            let specific: Vec<Prefix> = self
                .routes
                .keys()
                .filter(|k| k.dst == prefix.dst && k.src.is_some())
                .copied()
                .collect();
            for k in specific {
                self.origin_known_key(now, k);
            }
        }
        self.origin_known_key(now, prefix);
    }

    /// The policy's answers may have changed for any prefix at once (a whole class of
    /// certificates, not one): every cached verdict is forgotten and every route held is
    /// judged again. [`Engine::origin_known`] is the per-prefix form; a host that cannot
    /// name every prefix whose verdict may be cached (the cache outlives the routes) calls
    /// this.
    pub fn origin_policy_changed(&mut self, now: Time) {
        self.now = self.now.max(now);
        if !self.origin.enforcing() {
            return;
        }
        self.origin.forget_all();
        let keys: Vec<Prefix> = self.routes.keys().copied().collect();
        for k in keys {
            self.origin_known_key(now, k);
        }
    }

    fn origin_known_key(&mut self, now: Time, prefix: Prefix) {
        self.origin.forget(prefix);
        let Some(rs) = self.routes.get(&prefix) else {
            return;
        };
        let held: Vec<(NeighbourId, RouterId, Seqno, Option<RouteSignature>)> = rs
            .iter()
            .filter(|(_, r)| r.metric < INFINITY)
            .map(|(n, r)| (*n, r.router_id, r.seqno, r.sig.as_ref().map(|s| s.bytes())))
            .collect();
        let mut dropped = false;
        for (nid, rid, seqno, sig) in held {
            let verdict = self.origin.check(prefix, rid, seqno, sig.as_ref(), None);
            let Some(r) = self.routes.get_mut(&prefix).and_then(|rs| rs.get_mut(&nid)) else {
                continue;
            };
            match verdict {
                OriginVerdict::Valid => r.origin = RouteOrigin::Valid,
                OriginVerdict::Unknown => r.origin = RouteOrigin::Unknown,
                OriginVerdict::Invalid => {
                    if let Some(rs) = self.routes.get_mut(&prefix) {
                        rs.remove(&nid);
                    }
                    dropped = true;
                }
            }
        }
        if dropped {
            self.routes.retain(|_, rs| !rs.is_empty());
            self.recount_routes();
        }
        self.reselect(now, prefix);
        self.flush(now);
    }

    /// Test support: sends `msgs` on `iface` at once, through the normal emit path (MAC,
    /// packet counter) — how the simulator makes a hostile member forge Updates.
    #[cfg(any(test, feature = "sim"))]
    pub fn forge(&mut self, now: Time, iface: IfaceId, msgs: Vec<Msg>) {
        self.now = self.now.max(now);
        self.emit(now, iface, None, msgs);
    }

    /// Prefixes with a route held unselectable for want of a verdict, each with the
    /// neighbours that announced it (for the host to retry what it asks).
    pub fn origin_unknown(&self) -> Vec<(Prefix, Vec<NeighbourId>)> {
        self.routes
            .iter()
            .filter_map(|(p, rs)| {
                let ns: Vec<NeighbourId> = rs
                    .iter()
                    .filter(|(_, r)| r.origin == RouteOrigin::Unknown && r.metric < INFINITY)
                    .map(|(n, _)| *n)
                    .collect();
                (!ns.is_empty()).then_some((*p, ns))
            })
            .collect()
    }
}
