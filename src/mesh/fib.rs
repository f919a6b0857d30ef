//! Forwarding table: longest-prefix match over the Babel engine's selected routes.
//!
//! The writer ([`Fib`]) applies [`RouteChange`]s to its own ordered table and, once per
//! batch, [`Fib::publish`]es an immutable [`FibTable`] snapshot through an `ArcSwap`. Data
//! path readers ([`FibReader`]) load the current snapshot without locks and look addresses
//! up without allocating: per address family, one sorted array per prefix length present
//! (longest first), each searched by binary search on the masked address.
//!
//! Source-specific routes (RFC 9079: an exit's `::/0 from` the network prefix) are kept
//! apart, a short list scanned by [`FibTable::lookup_from`], which takes the packet's
//! source too: destination first (the longest matching destination wins), then the
//! source (a source-specific route beats an ordinary one of the same destination). Plain
//! [`FibTable::lookup`] never returns a source-specific route.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::collections::BTreeMap;

use crate::mesh::babel::{FibRoute, IfaceId, Prefix, RouteChange, RouteKey};

/// What a lookup returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibEntry {
    /// The matching prefix.
    pub prefix: Prefix,
    /// The source prefix of a source-specific route (RFC 9079); `None` for an ordinary
    /// one.
    pub src: Option<Prefix>,
    /// Next hop address.
    pub next_hop: IpAddr,
    /// Outgoing interface (tunnel).
    pub iface: IfaceId,
    /// Route metric.
    pub metric: u16,
}

impl From<&FibRoute> for FibEntry {
    fn from(r: &FibRoute) -> Self {
        FibEntry {
            prefix: r.prefix.dst,
            src: r.prefix.src,
            next_hop: r.next_hop,
            iface: r.iface,
            metric: r.metric,
        }
    }
}

/// One prefix length's entries, sorted by masked address.
#[derive(Debug, Default)]
struct Level {
    len: u8,
    keys: Vec<u128>,
    entries: Vec<FibEntry>,
}

/// An immutable snapshot, cheap to search.
#[derive(Debug, Default)]
pub struct FibTable {
    v4: Vec<Level>,
    v6: Vec<Level>,
    /// Source-specific routes (a handful: one per exit selected), scanned.
    specific: Vec<FibEntry>,
}

fn key_of(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn mask_key(key: u128, len: u8, bits: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let shift = u32::from(bits - len);
        (key >> shift) << shift
    }
}

impl FibTable {
    fn build<'a>(entries: impl Iterator<Item = &'a FibEntry>) -> Self {
        let mut v4: BTreeMap<u8, Vec<(u128, FibEntry)>> = BTreeMap::new();
        let mut v6: BTreeMap<u8, Vec<(u128, FibEntry)>> = BTreeMap::new();
        let mut specific = Vec::new();
        for e in entries {
            if e.src.is_some() {
                specific.push(*e);
                continue;
            }
            let map = if e.prefix.is_ipv4() { &mut v4 } else { &mut v6 };
            map.entry(e.prefix.len())
                .or_default()
                .push((key_of(e.prefix.addr()), *e));
        }
        let levels = |m: BTreeMap<u8, Vec<(u128, FibEntry)>>| -> Vec<Level> {
            m.into_iter()
                .rev()
                .map(|(len, mut v)| {
                    v.sort_by_key(|(k, _)| *k);
                    Level {
                        len,
                        keys: v.iter().map(|(k, _)| *k).collect(),
                        entries: v.into_iter().map(|(_, e)| e).collect(),
                    }
                })
                .collect()
        };
        FibTable {
            v4: levels(v4),
            v6: levels(v6),
            specific,
        }
    }

    /// Longest-prefix match on `dst` among the ordinary routes and the source-specific
    /// routes whose source prefix holds `src` (RFC 9079 section 3: destination first,
    /// then source).
    pub fn lookup_from(&self, dst: IpAddr, src: IpAddr) -> Option<&FibEntry> {
        let plain = self.lookup(dst);
        let specific = self
            .specific
            .iter()
            .filter(|e| e.prefix.contains(dst) && e.src.is_some_and(|s| s.contains(src)))
            .max_by_key(|e| (e.prefix.len(), e.src.map_or(0, |s| s.len())));
        match (plain, specific) {
            (Some(p), Some(s)) if p.prefix.len() > s.prefix.len() => Some(p),
            (_, Some(s)) => Some(s),
            (p, None) => p,
        }
    }

    /// Longest-prefix match.
    pub fn lookup(&self, addr: IpAddr) -> Option<&FibEntry> {
        let (levels, bits) = match addr {
            IpAddr::V4(_) => (&self.v4, 32),
            IpAddr::V6(_) => (&self.v6, 128),
        };
        let key = key_of(addr);
        for level in levels {
            let k = mask_key(key, level.len, bits);
            if let Ok(i) = level.keys.binary_search(&k) {
                return level.entries.get(i);
            }
        }
        None
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.v4
            .iter()
            .chain(&self.v6)
            .map(|l| l.keys.len())
            .sum::<usize>()
            + self.specific.len()
    }

    /// True if there is no route.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The writer side: owned by the task that drains the engine.
pub struct Fib {
    routes: BTreeMap<RouteKey, FibEntry>,
    shared: Arc<ArcSwap<FibTable>>,
    dirty: bool,
}

impl Default for Fib {
    fn default() -> Self {
        Fib::new()
    }
}

impl Fib {
    /// An empty FIB.
    pub fn new() -> Self {
        Fib {
            routes: BTreeMap::new(),
            shared: Arc::new(ArcSwap::from_pointee(FibTable::default())),
            dirty: false,
        }
    }

    /// A reader for the data path; clone it freely.
    pub fn reader(&self) -> FibReader {
        FibReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Applies one change (not visible to readers until [`Fib::publish`]).
    pub fn apply(&mut self, change: &RouteChange) {
        match change {
            RouteChange::Added(r) | RouteChange::Changed(r) => {
                self.routes.insert(r.prefix, FibEntry::from(r));
            }
            RouteChange::Removed(p) => {
                self.routes.remove(p);
            }
        }
        self.dirty = true;
    }

    /// Publishes the current table to readers if anything changed. Call once per drained
    /// batch of route changes.
    pub fn publish(&mut self) {
        if self.dirty {
            self.shared
                .store(Arc::new(FibTable::build(self.routes.values())));
            self.dirty = false;
        }
    }

    /// Number of routes in the writer's view.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True if the writer's view is empty.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The writer's view, in prefix order.
    pub fn routes(&self) -> impl Iterator<Item = &FibEntry> {
        self.routes.values()
    }

    /// Longest-prefix match on the writer's (possibly unpublished) view; linear, for
    /// checks and tests.
    pub fn lookup_slow(&self, addr: IpAddr) -> Option<&FibEntry> {
        self.routes
            .values()
            .filter(|e| e.src.is_none() && e.prefix.contains(addr))
            .max_by_key(|e| e.prefix.len())
    }
}

/// Lock-free reader handle.
#[derive(Clone)]
pub struct FibReader {
    shared: Arc<ArcSwap<FibTable>>,
}

impl FibReader {
    /// Longest-prefix match on the latest published snapshot. Lock-free, no allocation.
    pub fn lookup(&self, addr: IpAddr) -> Option<FibEntry> {
        self.shared.load().lookup(addr).copied()
    }

    /// [`FibTable::lookup_from`] on the latest published snapshot: the route for a packet
    /// from `src` to `dst`, source-specific routes included.
    pub fn lookup_from(&self, dst: IpAddr, src: IpAddr) -> Option<FibEntry> {
        self.shared.load().lookup_from(dst, src).copied()
    }

    /// The latest snapshot, for batches of lookups.
    pub fn snapshot(&self) -> Arc<FibTable> {
        self.shared.load_full()
    }
}

/// Whether the FIB route `matched` may carry a packet for `dst`: an address inside the
/// network prefix is routed only by a route inside it, so an exit's `::/0` or a subnet route
/// never captures the traffic of a node that is unreachable (issue 15).
pub fn may_route(
    network: &ipnet::Ipv6Net,
    dst: &std::net::Ipv6Addr,
    matched: &ipnet::Ipv6Net,
) -> bool {
    !network.contains(dst) || network.contains(matched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn route(p: &str, hop: u8) -> RouteChange {
        RouteChange::Added(FibRoute {
            prefix: p.parse().unwrap(),
            next_hop: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(hop))),
            iface: IfaceId(u32::from(hop)),
            metric: 96,
        })
    }

    #[test]
    fn longest_prefix_wins_and_families_stay_apart() {
        let mut fib = Fib::new();
        let reader = fib.reader();
        for (p, h) in [
            ("::/0", 1),
            ("fd00::/8", 2),
            ("fd00:1::/32", 3),
            ("fd00:1:2::/48", 4),
            ("10.0.0.0/8", 5),
            ("0.0.0.0/0", 6),
        ] {
            fib.apply(&route(p, h));
        }
        assert_eq!(
            reader.lookup("fd00:1:2::1".parse().unwrap()),
            None,
            "unpublished"
        );
        fib.publish();
        let hop = |a: &str| reader.lookup(a.parse().unwrap()).map(|e| e.iface.0);
        assert_eq!(hop("fd00:1:2::1"), Some(4));
        assert_eq!(hop("fd00:1:3::1"), Some(3));
        assert_eq!(hop("fd00:9::1"), Some(2));
        assert_eq!(hop("2001:db8::1"), Some(1));
        assert_eq!(hop("10.1.2.3"), Some(5));
        assert_eq!(hop("192.0.2.1"), Some(6));
        fib.apply(&RouteChange::Removed("fd00:1:2::/48".parse().unwrap()));
        fib.apply(&RouteChange::Removed("0.0.0.0/0".parse().unwrap()));
        fib.publish();
        assert_eq!(hop("fd00:1:2::1"), Some(3));
        assert_eq!(hop("192.0.2.1"), None);
        assert_eq!(fib.reader().snapshot().len(), 4);
    }

    #[test]
    fn an_exit_never_routes_an_unreachable_address_of_the_network() {
        let mut fib = Fib::new();
        fib.apply(&route("::/0", 1));
        fib.apply(&route("fd00:1:0:5::/64", 2));
        fib.apply(&route("2001:db8:5::/64", 3));
        fib.publish();
        let network: ipnet::Ipv6Net = "fd00:1::/48".parse().unwrap();
        let usable = |a: &str| {
            let dst: Ipv6Addr = a.parse().unwrap();
            fib.lookup_slow(IpAddr::V6(dst))
                .and_then(|e| match e.prefix.addr() {
                    IpAddr::V6(p) => ipnet::Ipv6Net::new(p, e.prefix.len()).ok(),
                    IpAddr::V4(_) => None,
                })
                .filter(|m| may_route(&network, &dst, m))
                .is_some()
        };
        assert!(usable("fd00:1:0:5::1"), "a node prefix");
        assert!(usable("2001:db8:5::9"), "a subnet route");
        assert!(usable("2001:db8:77::1"), "the exit, outside the network");
        assert!(
            !usable("fd00:1:0:6::1"),
            "an unreachable node: not the exit"
        );
    }

    #[test]
    fn host_routes_and_changes_replace() {
        let mut fib = Fib::new();
        fib.apply(&route("fd00::1/128", 1));
        fib.apply(&route("fd00::/64", 2));
        fib.publish();
        let r = fib.reader();
        assert_eq!(
            r.lookup("fd00::1".parse().unwrap()).map(|e| e.iface.0),
            Some(1)
        );
        assert_eq!(
            r.lookup("fd00::2".parse().unwrap()).map(|e| e.iface.0),
            Some(2)
        );
        let mut changed = route("fd00::/64", 7);
        if let RouteChange::Added(x) = changed {
            changed = RouteChange::Changed(x);
        }
        fib.apply(&changed);
        fib.publish();
        assert_eq!(
            r.lookup("fd00::2".parse().unwrap()).map(|e| e.iface.0),
            Some(7)
        );
    }

    fn arb_v6_prefix() -> impl Strategy<Value = Prefix> {
        // Few distinct high bits so prefixes nest and collide often.
        (
            0u8..4,
            0u8..4,
            prop_oneof![
                Just(0u8),
                Just(8),
                Just(16),
                Just(17),
                Just(48),
                Just(64),
                Just(127),
                Just(128)
            ],
        )
            .prop_map(|(a, b, len)| {
                let addr = Ipv6Addr::new(
                    0xfd00 | u16::from(a),
                    u16::from(b) << 15,
                    0,
                    0,
                    0,
                    0,
                    0,
                    u16::from(a ^ b),
                );
                Prefix::new(IpAddr::V6(addr), len).unwrap()
            })
    }

    fn arb_v4_prefix() -> impl Strategy<Value = Prefix> {
        (0u8..4, 0u8..4, 0u8..=32).prop_map(|(a, b, len)| {
            Prefix::new(IpAddr::V4(Ipv4Addr::new(10, a, b << 6, a)), len).unwrap()
        })
    }

    fn arb_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..4, 0u8..4, any::<u16>()).prop_map(|(a, b, t)| IpAddr::V6(Ipv6Addr::new(
                0xfd00 | u16::from(a),
                u16::from(b) << 15,
                0,
                0,
                0,
                0,
                0,
                t % 8
            ))),
            (0u8..4, 0u8..4, any::<u8>()).prop_map(|(a, b, t)| IpAddr::V4(Ipv4Addr::new(
                10,
                a,
                b << 6,
                t % 8
            ))),
        ]
    }

    proptest! {
        #[test]
        fn lookup_matches_linear_scan(
            ops in proptest::collection::vec((prop_oneof![arb_v6_prefix(), arb_v4_prefix()], any::<bool>(), 0u8..8), 0..60),
            addrs in proptest::collection::vec(arb_addr(), 1..40),
        ) {
            let mut fib = Fib::new();
            let reader = fib.reader();
            for (p, add, hop) in &ops {
                if *add {
                    fib.apply(&RouteChange::Added(FibRoute {
                        prefix: (*p).into(),
                        next_hop: IpAddr::V6(Ipv6Addr::LOCALHOST),
                        iface: IfaceId(u32::from(*hop)),
                        metric: 1,
                    }));
                } else {
                    fib.apply(&RouteChange::Removed((*p).into()));
                }
            }
            fib.publish();
            for a in addrs {
                prop_assert_eq!(reader.lookup(a), fib.lookup_slow(a).copied());
            }
        }
    }
}
