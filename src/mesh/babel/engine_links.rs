//! Neighbours of the [`Engine`](super::Engine): Hellos and IHUs received, link costs and
//! the RTT penalty (RFC 8966 3.4, appendix A; RFC 9616).

use super::*;

impl Engine {
    pub(super) fn insert_neighbour(&mut self, id: NeighbourId) {
        self.neighbours.insert(id, Neighbour::new());
        self.events.push_back(Event::NeighbourUp(id));
    }

    pub(super) fn recount_routes(&mut self) {
        self.budget
            .recount(self.routes.values().flat_map(|rs| rs.keys()));
    }

    pub(super) fn drop_neighbour(&mut self, now: Time, id: NeighbourId) {
        if self.neighbours.remove(&id).is_none() {
            return;
        }
        self.events.push_back(Event::NeighbourDown(id));
        self.acks.retain(|(n, _), _| *n != id);
        let mut touched = Vec::new();
        for (p, rs) in self.routes.iter_mut() {
            if rs.remove(&id).is_some() {
                touched.push(*p);
            }
        }
        self.routes.retain(|_, rs| !rs.is_empty());
        self.recount_routes();
        self.budget.forget(id);
        self.origin.forget_neighbour(id);
        for r in self.requests.values_mut() {
            r.targets.retain(|t| *t != id);
            if r.requester == Some(id) {
                r.requester = None;
            }
        }
        for p in touched {
            self.reselect(now, p);
        }
    }

    /// A Hello (RFC 8966 section 3.4.1, 4.6.5): updates the multicast or the unicast
    /// history (U flag), the stream's deadline, and the RFC 9616 timestamp to echo.
    pub(super) fn on_hello(
        &mut self,
        now: Time,
        nid: NeighbourId,
        unicast: bool,
        seqno: Seqno,
        interval_cs: u16,
        timestamp: Option<u32>,
    ) {
        let is_tunnel = self
            .ifaces
            .get(&nid.iface)
            .is_some_and(|i| i.cfg.is_tunnel());
        let new = !self.neighbours.contains_key(&nid);
        if new {
            if is_tunnel {
                // A tunnel's neighbour comes from the host only.
                return;
            }
            self.insert_neighbour(nid);
        }
        let before = self.neighbour_cost(nid);
        let Some(n) = self.neighbours.get_mut(&nid) else {
            return;
        };
        let stream = if unicast { &mut n.uhello } else { &mut n.hello };
        stream.history.receive(seqno);
        if interval_cs > 0 {
            // The interval announces the next Hello of the same kind (4.6.5).
            stream.interval = cs(interval_cs);
            stream.deadline = Some(now + cs(interval_cs) * 3 / 2);
        }
        if let Some(ts) = timestamp {
            n.hello_ts = Some((ts, micros(now)));
        }
        if new {
            self.greet(now, nid);
            // A neighbour that was already running will not ask: tell it everything.
            self.full_update(nid.iface, Some(nid.addr));
        }
        self.cost_changed(now, nid, before);
    }

    /// Reselects after a neighbour's cost moved from `before`. A known neighbour whose link
    /// comes back from infinite cost (a healed partition) is asked for a full update at
    /// once: its routes have expired here, and it has no reason to resend them before its
    /// next periodic update (up to an update interval later).
    pub(super) fn cost_changed(&mut self, now: Time, nid: NeighbourId, before: u16) {
        let after = self.neighbour_cost(nid);
        if after == before {
            return;
        }
        let known = self
            .neighbours
            .get(&nid)
            .is_some_and(|n| n.link_history().valid() >= 3);
        if before == INFINITY && known {
            self.queue(
                nid.iface,
                Some(nid.addr),
                Msg::RouteRequest { prefix: None },
            );
        }
        self.reselect_all(now);
    }

    /// A new neighbour: send an unscheduled Hello and an IHU at once so both sides see a
    /// working link one round trip later instead of one Hello interval later.
    pub(super) fn greet(&mut self, now: Time, nid: NeighbourId) {
        let Some(i) = self.ifaces.get_mut(&nid.iface) else {
            return;
        };
        if i.last_greeting
            .is_some_and(|t| now.saturating_since(t) < GREETING_SPACING)
        {
            return;
        }
        i.last_greeting = Some(now);
        i.hello_seqno = i.hello_seqno.next();
        let seqno = i.hello_seqno;
        let timestamp = i.cfg.timestamps.then_some(micros(now));
        self.queue(
            nid.iface,
            None,
            Msg::Hello {
                unicast: false,
                seqno,
                interval_cs: 0,
                timestamp,
            },
        );
        self.queue_ihus(nid.iface);
    }

    /// An IHU for us (RFC 8966 4.6.6). `sample` is the IHU's RFC 9616 timestamps with
    /// the transmit timestamp of the Hello in the same packet.
    pub(super) fn on_ihu(
        &mut self,
        now: Time,
        nid: NeighbourId,
        rxcost: u16,
        interval_cs: u16,
        addr: Option<IpAddr>,
        sample: Option<((u32, u32), u32)>,
    ) {
        let Some(i) = self.ifaces.get(&nid.iface) else {
            return;
        };
        if addr.is_some_and(|a| a != i.cfg.local_addr()) {
            return;
        }
        let timestamps = i.cfg.timestamps;
        let before = self.neighbour_cost(nid);
        let Some(n) = self.neighbours.get_mut(&nid) else {
            return;
        };
        n.txcost = rxcost;
        if let Some(((origin, receive), transmit)) = sample.filter(|_| timestamps)
            && let Some(rtt) = rtt_sample(origin, receive, transmit, micros(now))
        {
            // Smoothed like babeld: new = (42·sample + 214·old) / 256.
            let smoothed = match n.measured {
                Some((old, at)) if now.saturating_since(at) < RTT_VALIDITY => {
                    let us = (RTT_DECAY * rtt.as_micros() as u64
                        + (256 - RTT_DECAY) * old.as_micros() as u64)
                        / 256;
                    Duration::from_micros(us)
                }
                _ => rtt,
            };
            n.measured = Some((smoothed, now));
        }
        let interval = if interval_cs == 0 {
            i.cfg.timers.hello
        } else {
            cs(interval_cs)
        };
        n.ihu_deadline = Some(now + interval * 7 / 2);
        self.cost_changed(now, nid, before);
    }

    /// Our rxcost for a neighbour, per the interface's algorithm.
    pub(super) fn rxcost(&self, nid: NeighbourId) -> u16 {
        let (Some(i), Some(n)) = (self.ifaces.get(&nid.iface), self.neighbours.get(&nid)) else {
            return INFINITY;
        };
        let h = n.link_history();
        match i.cfg.kind {
            IfaceKind::Lan { lossy: false, .. } => h.rxcost_two_of_three(WIRED_NOMINAL),
            IfaceKind::Lan { lossy: true, .. } => h.rxcost_etx(),
            IfaceKind::Tunnel { .. } => {
                if h.valid() == 0 {
                    cost::ETX_UNIT
                } else {
                    h.rxcost_etx()
                }
            }
        }
    }

    /// The neighbour's link cost after the multiplier.
    pub(super) fn neighbour_cost(&self, nid: NeighbourId) -> u16 {
        let (Some(i), Some(n)) = (self.ifaces.get(&nid.iface), self.neighbours.get(&nid)) else {
            return INFINITY;
        };
        let rtt = n.effective_rtt();
        let raw = match i.cfg.kind {
            IfaceKind::Lan { lossy, .. } => {
                let (rx, tx) = (self.rxcost(nid), n.txcost);
                let c = if lossy {
                    cost::cost_etx(rx, tx)
                } else {
                    cost::cost_two_of_three(rx, tx)
                };
                // babeld's style: the RTT penalty (host-supplied, or measured with RFC
                // 9616 timestamps) is added to a finite link cost.
                match rtt {
                    Some(r) if c < INFINITY => {
                        cost::add_penalty(c, cost::rtt_penalty(&self.cfg.rtt, r))
                    }
                    _ => c,
                }
            }
            IfaceKind::Tunnel { .. } => {
                let h = n.link_history();
                if h.valid() >= 3 && h.bits() & 0b111 == 0 {
                    INFINITY
                } else {
                    let peer = if n.ihu_deadline.is_some() {
                        Some(n.txcost)
                    } else {
                        None
                    };
                    cost::cost_tunnel(&self.cfg.rtt, h, peer, rtt)
                }
            }
        };
        n.multiplier.apply(raw)
    }

    pub(super) fn route_metric(&self, nid: NeighbourId, r: &Route) -> u16 {
        if r.metric == INFINITY {
            return INFINITY;
        }
        let c = self.neighbour_cost(nid);
        u16::try_from((u32::from(c) + u32::from(r.metric)).min(u32::from(INFINITY)))
            .unwrap_or(INFINITY)
    }
}
