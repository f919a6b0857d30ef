//! The [`Engine`](super::Engine)'s route table: for each prefix, the routes the neighbours
//! announced for it.
//!
//! Sized for large meshes (docs/ARCHITECTURE.md §5.3): a node holds one route per prefix
//! and neighbour, so the table is most of an engine's memory. Each prefix keeps its routes
//! in one exactly sized vector sorted by neighbour (a handful of entries: a B-tree node
//! per prefix cost four times as much), a route's fields are compact (the interval in
//! milliseconds), and the originator's 64-byte signature is shared by every neighbour's
//! copy of the same announcement instead of being stored once per copy. Iteration order is
//! the neighbour order, as with the map it replaces, so the engine's outputs are the same.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{INFINITY, NeighbourId, RouteOrigin, RouteSignature, RouterId, Seqno, Time};

/// An originator's signature, shared between the copies of one announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Sig(Arc<RouteSignature>);

impl Sig {
    /// The signature bytes.
    pub(super) fn bytes(&self) -> RouteSignature {
        *self.0
    }
}

/// One neighbour's route to a prefix.
#[derive(Clone, Debug)]
pub(super) struct Route {
    pub(super) router_id: RouterId,
    pub(super) seqno: Seqno,
    /// Metric as advertised by the neighbour.
    pub(super) metric: u16,
    pub(super) next_hop: IpAddr,
    /// The announced update interval, in milliseconds ([`Route::interval`]).
    interval_ms: u32,
    pub(super) expires: Time,
    /// The originator's signature of (prefix, router_id, seqno), re-attached when this
    /// route is announced.
    pub(super) sig: Option<Sig>,
    /// Whether the origin policy accepted it (unknown: not selectable).
    pub(super) origin: RouteOrigin,
    /// A Route Request was sent because the route is about to expire.
    pub(super) refresh_asked: bool,
}

impl Route {
    /// A fresh route (not yet asked to refresh). `interval` is kept to the millisecond
    /// (the engine's clock's unit; wire intervals are centiseconds), at most 2³² ms.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        router_id: RouterId,
        seqno: Seqno,
        metric: u16,
        next_hop: IpAddr,
        interval: Duration,
        expires: Time,
        sig: Option<Sig>,
        origin: RouteOrigin,
    ) -> Route {
        Route {
            router_id,
            seqno,
            metric,
            next_hop,
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            expires,
            sig,
            origin,
            refresh_asked: false,
        }
    }

    /// The update interval the neighbour announced with it.
    pub(super) fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_ms))
    }

    /// When it asks for the engine's attention next, were it selected: its refresh time
    /// (a Route Request before it lapses) while not asked and finite, else its expiry. A
    /// lower bound of what `poll_timeout` takes from it.
    pub(super) fn deadline(&self) -> Time {
        if !self.refresh_asked && self.metric < INFINITY {
            self.refresh_time()
        } else {
            self.expires
        }
    }

    /// When a selected route is refreshed: half an interval before it expires.
    pub(super) fn refresh_time(&self) -> Time {
        Time::from_millis(
            self.expires
                .as_millis()
                .saturating_sub(u64::from(self.interval_ms / 2)),
        )
    }
}

/// The routes of one prefix, by neighbour: a vector sorted by [`NeighbourId`], with the
/// map operations the engine uses.
#[derive(Clone, Debug, Default)]
pub(super) struct Routes(Vec<(NeighbourId, Route)>);

type Pair<'a> = (&'a NeighbourId, &'a Route);

impl Routes {
    fn find(&self, nid: &NeighbourId) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.cmp(nid))
    }

    pub(super) fn get(&self, nid: &NeighbourId) -> Option<&Route> {
        self.find(nid).ok().map(|i| &self.0[i].1)
    }

    pub(super) fn get_mut(&mut self, nid: &NeighbourId) -> Option<&mut Route> {
        self.find(nid).ok().map(|i| &mut self.0[i].1)
    }

    pub(super) fn contains_key(&self, nid: &NeighbourId) -> bool {
        self.find(nid).is_ok()
    }

    /// Inserts or replaces `nid`'s route; the vector grows by exactly one entry.
    pub(super) fn insert(&mut self, nid: NeighbourId, route: Route) -> Option<Route> {
        match self.find(&nid) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, route)),
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (nid, route));
                None
            }
        }
    }

    pub(super) fn remove(&mut self, nid: &NeighbourId) -> Option<Route> {
        let i = self.find(nid).ok()?;
        let (_, r) = self.0.remove(i);
        self.0.shrink_to_fit();
        Some(r)
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&NeighbourId, &mut Route) -> bool) {
        let before = self.0.len();
        self.0.retain_mut(|(n, r)| keep(n, r));
        if self.0.len() != before {
            self.0.shrink_to_fit();
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = Pair<'_>> {
        self.into_iter()
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &NeighbourId> {
        self.0.iter().map(|(n, _)| n)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Route> {
        self.0.iter().map(|(_, r)| r)
    }

    /// `sig` as stored: shared with a route of this prefix that carries the same bytes
    /// (every neighbour relays the originator's signature unchanged), else new.
    pub(super) fn share(&self, sig: Option<RouteSignature>) -> Option<Sig> {
        let sig = sig?;
        let held = self
            .values()
            .filter_map(|r| r.sig.as_ref())
            .find(|s| *s.0 == sig);
        Some(held.cloned().unwrap_or_else(|| Sig(Arc::new(sig))))
    }
}

impl<'a> IntoIterator for &'a Routes {
    type Item = Pair<'a>;
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (NeighbourId, Route)>,
        fn(&'a (NeighbourId, Route)) -> Pair<'a>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        fn pair((n, r): &(NeighbourId, Route)) -> Pair<'_> {
            (n, r)
        }
        self.0
            .iter()
            .map(pair as fn(&'a (NeighbourId, Route)) -> Pair<'a>)
    }
}
