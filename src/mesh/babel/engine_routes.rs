//! Route handling of the [`Engine`](super::Engine): feasibility, updates received, route
//! selection, seqno requests (RFC 8966 3.5, 3.6, 3.8).

use super::*;
use crate::mesh::babel::origin::OriginVerdict;

impl Engine {
    /// The feasibility condition (RFC 8966 3.5.1).
    pub(super) fn feasible(
        &self,
        prefix: Prefix,
        rid: RouterId,
        seqno: Seqno,
        metric: u16,
    ) -> bool {
        if metric == INFINITY {
            return true;
        }
        match self.sources.get(&(prefix, rid)) {
            None => true,
            Some(s) => seqno.newer_than(s.seqno) || (seqno == s.seqno && metric < s.metric),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_update(
        &mut self,
        now: Time,
        nid: NeighbourId,
        prefix: Prefix,
        rid: RouterId,
        seqno: Seqno,
        metric: u16,
        interval_cs: u16,
        next_hop: Option<IpAddr>,
        sig: Option<RouteSignature>,
    ) -> bool {
        if rid == self.router_id {
            // Updates carrying our own router-id are never learnt (we would route to
            // ourselves through a neighbour). One from a previous life with a *newer*
            // seqno makes our next announcements newer still; our current seqno coming
            // back (we hear ourselves, or a neighbour echoes us) changes nothing — bumping
            // on it would start a seqno race with our own echo.
            if metric < INFINITY
                && seqno.newer_than(self.seqno)
                && self.budget.admit_bump(&self.cfg, Some(nid), now)
            {
                self.seqno = seqno.next();
                for p in self.local.clone() {
                    self.triggered_update(p);
                }
            }
            return false;
        }
        if prefix.addr().is_multicast() || is_link_local(prefix.addr()) {
            return false;
        }
        let held = self
            .routes
            .get(&prefix)
            .is_some_and(|rs| rs.contains_key(&nid));
        if !held && metric < INFINITY && !self.budget.admit_route(&self.cfg, nid) {
            // A new route beyond the budget: dropped before any other work (a flood
            // costs one lookup per Update). Retractions of routes not held are ignored
            // below anyway; the only path that does not insert needs a held route.
            return false;
        }
        let update_default = self
            .ifaces
            .get(&nid.iface)
            .map_or(Duration::from_secs(16), |i| i.cfg.timers.update);
        let interval = if interval_cs == 0 {
            update_default
        } else {
            cs(interval_cs)
        };
        let tunnel = self
            .ifaces
            .get(&nid.iface)
            .is_some_and(|i| i.cfg.is_tunnel());
        let next_hop = match next_hop {
            _ if tunnel => nid.addr,
            Some(h) if !h.is_ipv4() || prefix.is_ipv4() => h,
            _ => nid.addr,
        };
        if metric == INFINITY {
            let Some(r) = self.routes.get_mut(&prefix).and_then(|rs| rs.get_mut(&nid)) else {
                return false;
            };
            // RFC 8966 3.5.4: the entry takes the retraction's router-id and seqno too, or
            // a neighbour that keeps poisoning the prefix after its source changed
            // router-id would keep the stale source in our table forever.
            r.router_id = rid;
            r.seqno = seqno;
            r.sig = None;
            r.metric = INFINITY;
            r.expires = now + interval * 2;
            self.route_deadline = self.route_deadline.min(r.deadline());
            return true;
        }
        // Origin authentication (origin.rs): before anything else can act on the update
        // (a forged one must not even trigger a seqno request).
        let origin = match self
            .origin
            .check(prefix, rid, seqno, sig.as_ref(), Some((nid, now)))
        {
            OriginVerdict::Valid => RouteOrigin::Valid,
            OriginVerdict::Invalid => {
                if !held {
                    // Counted by `admit_route` above, never inserted.
                    self.budget.release_route(nid);
                }
                return false;
            }
            OriginVerdict::Unknown => {
                self.events.push_back(Event::OriginUnknown {
                    prefix,
                    neighbour: nid,
                });
                RouteOrigin::Unknown
            }
        };
        let feasible = self.feasible(prefix, rid, seqno, metric);
        let is_selected = self.selected.get(&prefix).is_some_and(|(s, _)| *s == nid);
        let same_source = self
            .routes
            .get(&prefix)
            .and_then(|rs| rs.get(&nid))
            .is_some_and(|r| r.router_id == rid);
        if let Some(r) = self
            .routes
            .get_mut(&prefix)
            .and_then(|rs| rs.get_mut(&nid))
            .filter(|_| is_selected && !feasible && same_source && origin == RouteOrigin::Valid)
        {
            // RFC 8966 3.5.4: an unfeasible update for the selected route may be
            // ignored. Keeping the old values stays loop-free (the neighbour's
            // feasibility distance is at most what it announced before) and avoids
            // losing the route on every metric increase; a seqno request brings a
            // fresh seqno that makes the new metric acceptable.
            r.expires = now + interval * 7 / 2;
            self.route_deadline = self.route_deadline.min(r.deadline());
            let want = self
                .sources
                .get(&(prefix, rid))
                .map_or(seqno, |s| s.seqno)
                .next();
            self.request_seqno(now, prefix, rid, want, vec![nid]);
            return false;
        }
        let rs = self.routes.entry(prefix).or_default();
        let sig = rs.share(sig);
        let route = Route::new(
            rid,
            seqno,
            metric,
            next_hop,
            interval,
            now + interval * 7 / 2,
            sig,
            origin,
        );
        self.route_deadline = self.route_deadline.min(route.deadline());
        rs.insert(nid, route);
        true
    }

    pub(super) fn reselect_all(&mut self, now: Time) {
        let prefixes: Vec<Prefix> = self.routes.keys().copied().collect();
        for p in prefixes {
            self.reselect(now, p);
        }
    }

    /// Route selection for one prefix, with hysteresis, FIB changes, triggered updates
    /// and starvation handling.
    pub(super) fn reselect(&mut self, now: Time, prefix: Prefix) {
        if self.local.contains(&prefix) {
            return;
        }
        let mut best: Option<(u16, NeighbourId)> = None;
        let mut current: Option<u16> = None;
        let mut unfeasible: Vec<(NeighbourId, RouterId)> = Vec::new();
        let cur_nid = self.selected.get(&prefix).map(|(n, _)| *n);
        if let Some(rs) = self.routes.get(&prefix) {
            for (nid, r) in rs {
                let m = self.route_metric(*nid, r);
                if m == INFINITY || r.origin != RouteOrigin::Valid {
                    // Unknown origin: held, never selected, no seqno request for it.
                    continue;
                }
                if !self.feasible(prefix, r.router_id, r.seqno, r.metric) {
                    unfeasible.push((*nid, r.router_id));
                    continue;
                }
                if Some(*nid) == cur_nid {
                    current = Some(m);
                }
                if best.is_none_or(|(bm, _)| m < bm) {
                    best = Some((m, *nid));
                }
            }
        }
        let choice = match (current, best) {
            (Some(cm), Some((bm, bn))) => {
                let margin = (cm / 16).max(16);
                if bm.saturating_add(margin) < cm {
                    Some(bn)
                } else {
                    cur_nid
                }
            }
            (None, b) => b.map(|(_, n)| n),
            (Some(_), None) => cur_nid,
        };
        let old = self.selected.get(&prefix).cloned();
        let new = choice.and_then(|nid| {
            let r = self.routes.get(&prefix)?.get(&nid)?;
            Some((
                nid,
                FibRoute {
                    prefix,
                    next_hop: r.next_hop,
                    iface: nid.iface,
                    metric: self.route_metric(nid, r),
                },
                r.router_id,
                r.seqno,
            ))
        });
        match (&old, &new) {
            (None, None) => {}
            (None, Some((nid, fr, _, _))) => {
                self.changes.push_back(RouteChange::Added(fr.clone()));
                self.selected.insert(prefix, (*nid, fr.clone()));
                self.retracting.remove(&prefix);
                self.triggered_update(prefix);
            }
            (Some(_), None) => {
                self.selected.remove(&prefix);
                self.changes.push_back(RouteChange::Removed(prefix));
                let hold = self.max_update_interval() * 3;
                if self.retracting.contains_key(&prefix)
                    || self
                        .budget
                        .admit_retraction(&self.cfg, self.retracting.len())
                {
                    self.retracting.insert(prefix, now + hold);
                }
                self.urgent_update(prefix);
            }
            (Some((onid, ofr)), Some((nid, fr, rid, _))) => {
                let old_rid = self
                    .routes
                    .get(&prefix)
                    .and_then(|rs| rs.get(onid))
                    .map(|r| r.router_id);
                if ofr != fr {
                    self.changes.push_back(RouteChange::Changed(fr.clone()));
                }
                let big = ofr.metric.abs_diff(fr.metric) >= (ofr.metric / 8).max(16);
                let trigger = old_rid != Some(*rid) || onid != nid || big;
                self.selected.insert(prefix, (*nid, fr.clone()));
                if trigger {
                    self.triggered_update(prefix);
                }
            }
        }
        if let (Some((_, fr)), false) = (self.selected.get(&prefix), unfeasible.is_empty()) {
            // A much better route is held back by feasibility only: ask its source for a
            // new seqno (RFC 8966 3.8.2.2) so we can switch to it.
            let sel_metric = fr.metric;
            let better: Vec<(NeighbourId, RouterId)> = unfeasible
                .iter()
                .filter(|(nid, _)| {
                    self.routes
                        .get(&prefix)
                        .and_then(|rs| rs.get(nid))
                        .is_some_and(|r| {
                            self.route_metric(*nid, r)
                                .saturating_add((sel_metric / 16).max(16))
                                < sel_metric
                        })
                })
                .copied()
                .collect();
            for (nid, rid) in better {
                let want = self
                    .sources
                    .get(&(prefix, rid))
                    .map_or(Seqno(0), |s| s.seqno)
                    .next();
                self.request_seqno(now, prefix, rid, want, vec![nid]);
            }
        }
        if !self.selected.contains_key(&prefix) && !unfeasible.is_empty() {
            // Starvation (RFC 8966 3.8.2.1): ask the originators for a newer seqno.
            let mut by_rid: BTreeMap<RouterId, Vec<NeighbourId>> = BTreeMap::new();
            for (nid, rid) in unfeasible {
                by_rid.entry(rid).or_default().push(nid);
            }
            for (rid, targets) in by_rid {
                let want = self
                    .sources
                    .get(&(prefix, rid))
                    .map_or(Seqno(0), |s| s.seqno)
                    .next();
                self.request_seqno(now, prefix, rid, want, targets);
            }
        }
    }

    pub(super) fn request_seqno(
        &mut self,
        now: Time,
        prefix: Prefix,
        rid: RouterId,
        seqno: Seqno,
        targets: Vec<NeighbourId>,
    ) {
        if self
            .requests
            .get(&(prefix, rid))
            .is_some_and(|p| p.seqno.at_least(seqno))
        {
            return; // duplicate suppression
        }
        for t in &targets {
            self.queue(
                t.iface,
                Some(t.addr),
                Msg::SeqnoRequest {
                    prefix,
                    seqno,
                    hop_count: SEQNO_REQUEST_HOPS,
                    router_id: rid,
                },
            );
        }
        self.requests.insert(
            (prefix, rid),
            PendingRequest {
                seqno,
                hop_count: SEQNO_REQUEST_HOPS,
                requester: None,
                targets,
                resend_at: now + REQUEST_RESEND,
                resends_left: REQUEST_RESENDS,
            },
        );
    }

    pub(super) fn on_seqno_request(
        &mut self,
        now: Time,
        from: NeighbourId,
        prefix: Prefix,
        seqno: Seqno,
        hop_count: u8,
        rid: RouterId,
    ) {
        if self.local.contains(&prefix) {
            if rid == self.router_id
                && seqno.newer_than(self.seqno)
                && self.budget.admit_bump(&self.cfg, Some(from), now)
            {
                self.seqno = seqno;
            }
            self.triggered_update(prefix);
            return;
        }
        let Some((sel_nid, _)) = self.selected.get(&prefix).cloned() else {
            return;
        };
        let Some(r) = self
            .routes
            .get(&prefix)
            .and_then(|rs| rs.get(&sel_nid))
            .cloned()
        else {
            return;
        };
        if r.router_id != rid || r.seqno.at_least(seqno) {
            self.queue_update(from.iface, Some(from.addr), prefix);
            return;
        }
        if hop_count < 2 {
            return;
        }
        // Forward towards the source: through the selected route, or, when that leads back
        // to the requester, through the best other feasible route with the same source.
        let next = if sel_nid != from {
            Some(sel_nid)
        } else {
            self.routes.get(&prefix).and_then(|rs| {
                rs.iter()
                    .filter(|(n, r)| {
                        **n != from
                            && r.router_id == rid
                            && r.origin == RouteOrigin::Valid
                            && self.route_metric(**n, r) < INFINITY
                            && self.feasible(prefix, r.router_id, r.seqno, r.metric)
                    })
                    .min_by_key(|(n, r)| self.route_metric(**n, r))
                    .map(|(n, _)| *n)
            })
        };
        let Some(next) = next else { return };
        if self
            .requests
            .get(&(prefix, rid))
            .is_some_and(|p| p.seqno.at_least(seqno))
        {
            return; // already forwarded
        }
        let replaces = self
            .requests
            .get(&(prefix, rid))
            .is_some_and(|p| p.requester == Some(from));
        if !replaces {
            let from_nid = self
                .requests
                .values()
                .filter(|p| p.requester == Some(from))
                .count();
            let pending =
                self.requests.len() - usize::from(self.requests.contains_key(&(prefix, rid)));
            if !self
                .budget
                .admit_forward(&self.cfg, from, pending, from_nid)
            {
                return;
            }
        }
        self.queue(
            next.iface,
            Some(next.addr),
            Msg::SeqnoRequest {
                prefix,
                seqno,
                hop_count: hop_count - 1,
                router_id: rid,
            },
        );
        self.requests.insert(
            (prefix, rid),
            PendingRequest {
                seqno,
                hop_count: hop_count - 1,
                requester: Some(from),
                targets: vec![next],
                resend_at: now + REQUEST_RESEND,
                resends_left: REQUEST_RESENDS,
            },
        );
    }
}
