//! Budgets (issue 13, "Flooding"): what one neighbour can make the engine hold or do.
//!
//! The caps are fields of [`Config`]; this module keeps the state behind them (route
//! counts, per-neighbour token buckets, the last request-caused seqno bump) and the
//! [`BudgetCounters`] the host shows. At a cap the new item is dropped and counted, and a
//! warning is logged once per neighbour and cap; nothing that is already held is refused
//! (refreshes and retractions of held routes always go through). Below the caps the
//! engine behaves exactly as without them.

use std::collections::{BTreeMap, BTreeSet};

use super::engine::{Config, NeighbourId};
use super::time::Time;

/// What the caps refused so far. Read with [`crate::mesh::babel::Engine::budget_counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetCounters {
    /// Updates for a new prefix dropped because their neighbour already had
    /// [`Config::max_routes_per_neighbour`] routes in the table.
    pub routes_over_budget: u64,
    /// Updates for a new prefix dropped because the table held [`Config::max_routes`]
    /// routes in total.
    pub routes_total_over_budget: u64,
    /// Announcements of a selected route sent as a retraction because the source table
    /// held [`Config::max_sources`] entries (counted per announcement).
    pub sources_over_budget: u64,
    /// Lost routes whose retraction was sent once but not held for repetition because
    /// [`Config::max_routes`] retractions were already held.
    pub retractions_over_budget: u64,
    /// Seqno requests not forwarded because [`Config::max_requests`] were pending.
    pub requests_over_budget: u64,
    /// Seqno requests not forwarded because [`Config::max_requests_per_neighbour`] of
    /// that neighbour's were pending.
    pub requests_over_neighbour_budget: u64,
    /// Seqno requests ignored because their neighbour exceeded
    /// [`Config::request_rate`] / [`Config::request_burst`].
    pub requests_rate_limited: u64,
    /// Seqno increases asked for (by a request, or an update carrying our router-id)
    /// not made because the last one was less than [`Config::seqno_bump_interval`] ago.
    pub seqno_bumps_limited: u64,
}

impl BudgetCounters {
    /// Every counter by name, for `mesh status --json`.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("routes_over_budget", self.routes_over_budget),
            ("routes_total_over_budget", self.routes_total_over_budget),
            ("sources_over_budget", self.sources_over_budget),
            ("retractions_over_budget", self.retractions_over_budget),
            ("requests_over_budget", self.requests_over_budget),
            (
                "requests_over_neighbour_budget",
                self.requests_over_neighbour_budget,
            ),
            ("requests_rate_limited", self.requests_rate_limited),
            ("seqno_bumps_limited", self.seqno_bumps_limited),
        ]
    }
}

/// One cap, for the log-once bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cap {
    RoutesPerNeighbour,
    Routes,
    Sources,
    Retractions,
    Requests,
    RequestsPerNeighbour,
    RequestRate,
    SeqnoBumps,
}

impl Cap {
    fn what(self) -> &'static str {
        match self {
            Cap::RoutesPerNeighbour => "routes from this neighbour at max_routes_per_neighbour",
            Cap::Routes => "routes at max_routes",
            Cap::Sources => "sources at max_sources",
            Cap::Retractions => "held retractions at max_routes",
            Cap::Requests => "pending seqno requests at max_requests",
            Cap::RequestsPerNeighbour => {
                "pending seqno requests from this neighbour at max_requests_per_neighbour"
            }
            Cap::RequestRate => "seqno requests from this neighbour above request_rate",
            Cap::SeqnoBumps => "seqno bumps above one per seqno_bump_interval",
        }
    }
}

/// A token bucket in thousandths of a token, refilled from the `now` the engine is given.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli: u64,
    at: Time,
}

/// The budget state of one engine.
#[derive(Debug, Default)]
pub(super) struct Budget {
    counters: BudgetCounters,
    /// Routes (entries of the route table, retractions held included) per neighbour.
    per_neighbour: BTreeMap<NeighbourId, usize>,
    /// Sum of `per_neighbour`.
    total: usize,
    /// Seqno request budget per neighbour.
    buckets: BTreeMap<NeighbourId, Bucket>,
    /// When our seqno was last increased on someone else's word.
    last_bump: Option<Time>,
    /// (neighbour, cap) pairs already logged; `None` for caps no neighbour is behind.
    logged: BTreeSet<(Option<NeighbourId>, Cap)>,
}

impl Budget {
    pub(super) fn counters(&self) -> BudgetCounters {
        self.counters
    }

    /// Routes held from `nid` (for tests and the route count the host may show).
    #[cfg(test)]
    pub(super) fn routes_from(&self, nid: NeighbourId) -> usize {
        self.per_neighbour.get(&nid).copied().unwrap_or(0)
    }

    /// Routes held in total.
    pub(super) fn routes(&self) -> usize {
        self.total
    }

    fn refuse(&mut self, nid: Option<NeighbourId>, cap: Cap) {
        if self.logged.insert((nid, cap)) {
            match nid {
                Some(n) => tracing::warn!(
                    iface = n.iface.0,
                    neighbour = %n.addr,
                    "babel: {}; further ones are dropped (logged once)",
                    cap.what()
                ),
                None => tracing::warn!(
                    "babel: {}; further ones are dropped (logged once)",
                    cap.what()
                ),
            }
        }
    }

    /// A route from `nid` for a prefix it has no entry for: admitted (and counted) or
    /// refused (and counted as refused).
    pub(super) fn admit_route(&mut self, cfg: &Config, nid: NeighbourId) -> bool {
        let held = self.per_neighbour.get(&nid).copied().unwrap_or(0);
        if held >= cfg.max_routes_per_neighbour {
            self.counters.routes_over_budget += 1;
            self.refuse(Some(nid), Cap::RoutesPerNeighbour);
            return false;
        }
        if self.total >= cfg.max_routes {
            self.counters.routes_total_over_budget += 1;
            self.refuse(Some(nid), Cap::Routes);
            return false;
        }
        *self.per_neighbour.entry(nid).or_default() += 1;
        self.total += 1;
        true
    }

    /// Gives back what [`Budget::admit_route`] counted for a route that was not inserted
    /// after all (its origin was refused).
    pub(super) fn release_route(&mut self, nid: NeighbourId) {
        if let Some(n) = self.per_neighbour.get_mut(&nid) {
            *n = n.saturating_sub(1);
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Recomputes the route counts from the table's (prefix, neighbour) entries, after
    /// entries left it.
    pub(super) fn recount<'a>(&mut self, entries: impl Iterator<Item = &'a NeighbourId>) {
        self.per_neighbour.clear();
        self.total = 0;
        for n in entries {
            *self.per_neighbour.entry(*n).or_default() += 1;
            self.total += 1;
        }
    }

    /// A new (prefix, router-id) entry for the source table, which holds `len`.
    pub(super) fn admit_source(&mut self, cfg: &Config, len: usize) -> bool {
        if len < cfg.max_sources {
            return true;
        }
        self.counters.sources_over_budget += 1;
        self.refuse(None, Cap::Sources);
        false
    }

    /// A new held retraction, `len` being held.
    pub(super) fn admit_retraction(&mut self, cfg: &Config, len: usize) -> bool {
        if len < cfg.max_routes {
            return true;
        }
        self.counters.retractions_over_budget += 1;
        self.refuse(None, Cap::Retractions);
        false
    }

    /// One seqno request received from `nid` at `now`: within its rate or not.
    pub(super) fn admit_request(&mut self, cfg: &Config, nid: NeighbourId, now: Time) -> bool {
        let full = u64::from(cfg.request_burst) * 1000;
        let b = self.buckets.entry(nid).or_insert(Bucket {
            milli: full,
            at: now,
        });
        let elapsed = u64::try_from(now.saturating_since(b.at).as_millis()).unwrap_or(u64::MAX);
        // ms × tokens/s = thousandths of a token.
        let refill = elapsed.saturating_mul(u64::from(cfg.request_rate));
        b.milli = b.milli.saturating_add(refill).min(full);
        b.at = b.at.max(now);
        if b.milli >= 1000 {
            b.milli -= 1000;
            return true;
        }
        self.counters.requests_rate_limited += 1;
        self.refuse(Some(nid), Cap::RequestRate);
        false
    }

    /// A new pending (forwarded) request from `nid`, with `pending` requests pending in
    /// total and `from_nid` of them from `nid`.
    pub(super) fn admit_forward(
        &mut self,
        cfg: &Config,
        nid: NeighbourId,
        pending: usize,
        from_nid: usize,
    ) -> bool {
        if from_nid >= cfg.max_requests_per_neighbour {
            self.counters.requests_over_neighbour_budget += 1;
            self.refuse(Some(nid), Cap::RequestsPerNeighbour);
            return false;
        }
        if pending >= cfg.max_requests {
            self.counters.requests_over_budget += 1;
            self.refuse(Some(nid), Cap::Requests);
            return false;
        }
        true
    }

    /// An increase of our own seqno that someone else asked for (`nid`, if a neighbour
    /// is behind it) at `now`: allowed at most once per [`Config::seqno_bump_interval`].
    pub(super) fn admit_bump(&mut self, cfg: &Config, nid: Option<NeighbourId>, now: Time) -> bool {
        if self
            .last_bump
            .is_some_and(|t| now.saturating_since(t) < cfg.seqno_bump_interval)
        {
            self.counters.seqno_bumps_limited += 1;
            self.refuse(nid, Cap::SeqnoBumps);
            return false;
        }
        self.last_bump = Some(now);
        true
    }

    /// A neighbour left: its bucket and log marks go (its routes are recounted).
    pub(super) fn forget(&mut self, nid: NeighbourId) {
        self.buckets.remove(&nid);
        self.logged.retain(|(n, _)| *n != Some(nid));
    }
}
