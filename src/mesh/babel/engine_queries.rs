//! Queries of the [`Engine`](super::Engine): read-only views of its state for the
//! daemon's status output and for tests (all routes, selected routes and origins,
//! neighbours with their costs and RTTs, own prefixes, pending acknowledgments, budget
//! counters and the route count).

use super::*;

impl Engine {
    /// All routes: own prefixes first, then every learnt route (selected or not), in
    /// prefix order.
    pub fn routes(&self) -> Vec<RouteInfo> {
        let mut out = Vec::new();
        for p in &self.local {
            out.push(RouteInfo {
                prefix: *p,
                next_hop: None,
                iface: String::new(),
                metric: 0,
                router_id: self.router_id,
                seqno: self.seqno,
                selected: true,
                local: true,
                feasible: true,
            });
        }
        for (p, rs) in &self.routes {
            for (nid, r) in rs {
                out.push(RouteInfo {
                    prefix: *p,
                    next_hop: Some(r.next_hop),
                    iface: self
                        .ifaces
                        .get(&nid.iface)
                        .map(|i| i.cfg.name.clone())
                        .unwrap_or_default(),
                    metric: self.route_metric(*nid, r),
                    router_id: r.router_id,
                    seqno: r.seqno,
                    selected: self.selected.get(p).is_some_and(|(s, _)| s == nid),
                    local: false,
                    feasible: self.feasible(*p, r.router_id, r.seqno, r.metric),
                });
            }
        }
        out
    }

    /// The selected route of a prefix, if any.
    pub fn selected_route(&self, prefix: impl Into<Prefix>) -> Option<&FibRoute> {
        self.selected.get(&prefix.into()).map(|(_, r)| r)
    }

    /// The originator (router-id) of the selected route of a prefix, if any.
    pub fn selected_origin(&self, prefix: impl Into<Prefix>) -> Option<RouterId> {
        let prefix = prefix.into();
        let (nid, _) = self.selected.get(&prefix)?;
        self.routes.get(&prefix)?.get(nid).map(|r| r.router_id)
    }

    /// All selected routes.
    pub fn selected_routes(&self) -> impl Iterator<Item = &FibRoute> {
        self.selected.values().map(|(_, r)| r)
    }

    /// Neighbours with their link state.
    pub fn neighbours(&self) -> Vec<NeighbourInfo> {
        self.neighbours
            .iter()
            .map(|(id, n)| NeighbourInfo {
                id: *id,
                iface: self
                    .ifaces
                    .get(&id.iface)
                    .map(|i| i.cfg.name.clone())
                    .unwrap_or_default(),
                cost: self.neighbour_cost(*id),
                rxcost: self.rxcost(*id),
                txcost: n.txcost,
                reach: n.link_history().bits(),
                rtt: n.rtt,
                measured_rtt: n.measured.map(|(r, _)| r),
                multiplier: n.multiplier,
            })
            .collect()
    }

    /// Own prefixes.
    pub fn local_prefixes(&self) -> impl Iterator<Item = &Prefix> {
        self.local.iter()
    }

    /// Reliably sent packets still waiting for a neighbour's Acknowledgment (one per
    /// neighbour and packet).
    pub fn pending_acks(&self) -> usize {
        self.acks.len()
    }

    /// What the budgets ([`Config::max_routes_per_neighbour`] and the other caps)
    /// refused so far.
    pub fn budget_counters(&self) -> BudgetCounters {
        self.budget.counters()
    }

    /// Routes in the table (entries per prefix and neighbour, held retractions included),
    /// the figure [`Config::max_routes`] caps.
    pub fn route_count(&self) -> usize {
        self.budget.routes()
    }
}
