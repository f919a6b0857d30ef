//! Timers of the [`Engine`](super::Engine): what is due at a given time, and when
//! something next is.

use super::*;

impl Engine {
    /// Handles timer expiry: Hellos, IHUs, periodic updates, neighbour and route expiry,
    /// request resends, garbage collection. Call it when [`Engine::poll_timeout`] is due.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        let ids: Vec<IfaceId> = self.ifaces.keys().copied().collect();
        for id in ids {
            let Some(i) = self.ifaces.get_mut(&id) else {
                continue;
            };
            let timers = i.cfg.timers;
            if i.next_hello <= now {
                i.next_hello = advance(i.next_hello, timers.hello, now);
                self.send_hello(now, id);
            }
            let Some(i) = self.ifaces.get_mut(&id) else {
                continue;
            };
            if i.next_update <= now {
                let j = timers.update / 4;
                let jitter =
                    Duration::from_millis(self.rng.next_u64() % (j.as_millis() as u64 + 1));
                if let Some(i) = self.ifaces.get_mut(&id) {
                    i.next_update = now + timers.update.saturating_sub(jitter);
                }
                self.full_update(id, None);
            }
        }
        // Neighbour Hello and IHU timers.
        let mut costs_changed = false;
        let mut dead = Vec::new();
        for (nid, n) in self.neighbours.iter_mut() {
            let mut missed = false;
            for stream in [&mut n.hello, &mut n.uhello] {
                if let Some(d) = stream.deadline.filter(|d| *d <= now) {
                    stream.history.missed();
                    missed = true;
                    stream.deadline = if stream.interval.is_zero() {
                        None
                    } else {
                        Some(advance(d, stream.interval, now))
                    };
                }
            }
            if missed {
                costs_changed = true;
                let tunnel = self
                    .ifaces
                    .get(&nid.iface)
                    .is_some_and(|i| i.cfg.is_tunnel());
                // Gone when neither kind of Hello was heard for 16 slots.
                let (m, u) = (&n.hello.history, &n.uhello.history);
                if !tunnel
                    && m.is_empty()
                    && u.is_empty()
                    && m.valid().max(u.valid()) >= LAN_NEIGHBOUR_SLOTS
                {
                    dead.push(*nid);
                }
            }
            if n.ihu_deadline.is_some_and(|d| d <= now) {
                n.txcost = INFINITY;
                n.ihu_deadline = None;
                costs_changed = true;
            }
            if n.measured.is_some_and(|(_, at)| at + RTT_VALIDITY <= now) {
                // No RFC 9616 sample for 3 minutes: the RTT is no longer known.
                n.measured = None;
                costs_changed = true;
            }
        }
        for nid in dead {
            self.drop_neighbour(now, nid);
            self.auth.remove(&nid);
        }
        // Route expiry: first to a retraction that is held, then gone.
        let mut touched = BTreeSet::new();
        let mut earliest = self.route_deadline;
        for (p, rs) in self.routes.iter_mut() {
            rs.retain(|_, r| {
                if r.expires > now {
                    return true;
                }
                touched.insert(*p);
                if r.metric < INFINITY {
                    r.metric = INFINITY;
                    r.expires = now + r.interval() * 2;
                    earliest = earliest.min(r.deadline());
                    true
                } else {
                    false
                }
            });
        }
        self.route_deadline = earliest;
        self.routes.retain(|_, rs| !rs.is_empty());
        self.recount_routes();
        if costs_changed {
            self.reselect_all(now);
        } else {
            for p in touched {
                self.reselect(now, p);
            }
        }
        self.retracting.retain(|_, until| *until > now);
        self.sources.retain(|_, s| s.gc > now);
        self.resend_unacknowledged(now);
        // Seqno request resends.
        let due: Vec<(Prefix, RouterId)> = self
            .requests
            .iter()
            .filter(|(_, r)| r.resend_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(r) = self.requests.get_mut(&key) else {
                continue;
            };
            if r.resends_left == 0 {
                self.requests.remove(&key);
                // Still starving? Selection asks again (at most once per resend cycle).
                self.reselect(now, key.0);
                continue;
            }
            r.resends_left -= 1;
            r.resend_at = now + REQUEST_RESEND;
            let (targets, seqno, hop_count) = (r.targets.clone(), r.seqno, r.hop_count);
            for t in targets {
                self.queue(
                    t.iface,
                    Some(t.addr),
                    Msg::SeqnoRequest {
                        prefix: key.0,
                        seqno,
                        hop_count,
                        router_id: key.1,
                    },
                );
            }
        }
        // A selected route close to expiry: ask its neighbour before it lapses
        // (RFC 8966 3.8.2.1), once. Last, after every reselection above: a route selected
        // by one of them may be due too (the engine proptest found a timeout left due).
        let mut ask = Vec::new();
        // Both maps are in prefix order: walked together, without a lookup per prefix.
        let mut routes = self.routes.iter_mut().peekable();
        for (p, (nid, _)) in &self.selected {
            while routes.next_if(|(q, _)| *q < p).is_some() {}
            if let Some((_, rs)) = routes.next_if(|(q, _)| *q == p)
                && let Some(r) = rs.get_mut(nid)
                && !r.refresh_asked
                && r.metric < INFINITY
                && r.expires <= now + r.interval() / 2
            {
                r.refresh_asked = true;
                ask.push((*nid, *p));
            }
        }
        for (nid, p) in ask {
            self.queue(
                nid.iface,
                Some(nid.addr),
                Msg::RouteRequest { prefix: Some(p) },
            );
        }
        self.route_deadline = self
            .routes
            .values()
            .flat_map(|rs| rs.values())
            .map(Route::deadline)
            .min()
            .unwrap_or(NEVER);
        self.flush(now);
    }

    /// When [`Engine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut t: Option<Time> = None;
        let mut at = |x: Time| t = Some(t.map_or(x, |t| t.min(x)));
        for i in self.ifaces.values() {
            at(i.next_hello);
            at(i.next_update);
        }
        for n in self.neighbours.values() {
            n.hello.deadline.into_iter().for_each(&mut at);
            n.uhello.deadline.into_iter().for_each(&mut at);
            n.ihu_deadline.into_iter().for_each(&mut at);
            if let Some((_, t)) = n.measured {
                at(t + RTT_VALIDITY);
            }
        }
        for a in self.acks.values() {
            at(a.deadline);
        }
        for r in self.requests.values() {
            at(r.resend_at);
        }
        for u in self.retracting.values() {
            at(*u);
        }
        for s in self.sources.values() {
            at(s.gc);
        }
        for o in self.outbox.values() {
            at(o.due);
        }
        if t.is_none_or(|t| self.route_deadline < t) {
            let mut at = |x: Time| t = Some(t.map_or(x, |t| t.min(x)));
            // Every route's expiry, and the refresh time of the selected ones: one walk of
            // both maps (both in prefix order; a lookup per selected prefix made this the
            // simulator's hottest function).
            let mut selected = self.selected.iter().peekable();
            for (p, rs) in &self.routes {
                for r in rs.values() {
                    at(r.expires);
                }
                while selected.next_if(|(s, _)| *s < p).is_some() {}
                if let Some((_, (nid, _))) = selected.next_if(|(s, _)| *s == p)
                    && let Some(r) = rs.get(nid)
                    && !r.refresh_asked
                    && r.metric < INFINITY
                {
                    at(r.refresh_time());
                }
            }
        }
        t
    }
}
