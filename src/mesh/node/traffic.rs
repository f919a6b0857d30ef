//! The node's traffic book: the live tunnels' counters (by tunnel, with their peer prefix),
//! the totals of the tunnels that closed, and the data path's drops by reason. The data path
//! bumps relaxed atomics; the book's lock is taken only when a tunnel starts or ends and when
//! the control API or the metrics endpoint reads it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::Ipv6Net;

use super::core::TunnelId;
use crate::control::{Peer, Traffic};
use crate::mesh::forward::DropReason;
use crate::mesh::forward_v4::V4Drop;
use crate::mesh::tunnels::traffic::LinkTraffic;

/// Why the data path dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropWhy {
    /// Not a valid IPv6 packet.
    Malformed,
    /// An ICMPv6 error was due but RFC 4443 forbids it.
    NoErrorAllowed,
    /// An ICMPv6 error was due but the rate limit is exhausted.
    RateLimited,
    /// The next tunnel's send queue was full (older data dropped to make room).
    QueueFull,
    /// QUIC refused the datagram (tunnel closing, too large).
    SendFailed,
    /// A datagram from a tunnel that is neither IPv6 nor Babel.
    BadDatagram,
    /// The TUN device refused a packet for this node.
    TunWriteFailed,
    /// A packet whose source is not its sender's: a plain one from outside the neighbour's
    /// prefix, or a sealed one from outside the far node's certificate prefix.
    SpoofedSource,
    /// A plain packet from a tunnel for another node (transit is sealed, never plain).
    PlainTransit,
    /// A sealed frame whose clear hop limit ran out.
    SealedHopLimit,
    /// A sealed frame to relay, or a handshake answer, with no route to its destination.
    NoRoute,
    /// A packet for a far node that could not be sealed (no session can be set up).
    NoSession,
    /// A sealed frame for this node that did not open (tampered, replayed, unknown session).
    OpenFailed,
    /// An IPv4 packet larger than the path, without DF (fragmenting is left to the sender).
    TooBig,
}

impl DropWhy {
    /// Every reason, in the order of [`Drops`].
    pub(crate) const ALL: [DropWhy; 14] = [
        DropWhy::Malformed,
        DropWhy::NoErrorAllowed,
        DropWhy::RateLimited,
        DropWhy::QueueFull,
        DropWhy::SendFailed,
        DropWhy::BadDatagram,
        DropWhy::TunWriteFailed,
        DropWhy::SpoofedSource,
        DropWhy::PlainTransit,
        DropWhy::SealedHopLimit,
        DropWhy::NoRoute,
        DropWhy::NoSession,
        DropWhy::OpenFailed,
        DropWhy::TooBig,
    ];

    /// The reason's name in `mesh status` and in the metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            DropWhy::Malformed => "malformed",
            DropWhy::NoErrorAllowed => "no_error_allowed",
            DropWhy::RateLimited => "rate_limited",
            DropWhy::QueueFull => "queue_full",
            DropWhy::SendFailed => "send_failed",
            DropWhy::BadDatagram => "bad_datagram",
            DropWhy::TunWriteFailed => "tun_write_failed",
            DropWhy::SpoofedSource => "spoofed_source",
            DropWhy::PlainTransit => "plain_transit",
            DropWhy::SealedHopLimit => "sealed_hop_limit",
            DropWhy::NoRoute => "no_route",
            DropWhy::NoSession => "no_session",
            DropWhy::OpenFailed => "open_failed",
            DropWhy::TooBig => "too_big",
        }
    }
}

impl From<V4Drop> for DropWhy {
    fn from(r: V4Drop) -> DropWhy {
        match r {
            V4Drop::Malformed => DropWhy::Malformed,
            V4Drop::NoErrorAllowed => DropWhy::NoErrorAllowed,
            V4Drop::RateLimited => DropWhy::RateLimited,
            V4Drop::TooBig => DropWhy::TooBig,
        }
    }
}

impl From<DropReason> for DropWhy {
    fn from(r: DropReason) -> DropWhy {
        match r {
            DropReason::Malformed => DropWhy::Malformed,
            DropReason::NoErrorAllowed => DropWhy::NoErrorAllowed,
            DropReason::RateLimited => DropWhy::RateLimited,
        }
    }
}

/// The data path's drops, by reason.
#[derive(Debug, Default)]
pub(crate) struct Drops([AtomicU64; DropWhy::ALL.len()]);

impl Drops {
    /// One more packet dropped for `why`.
    pub(crate) fn count(&self, why: DropWhy) {
        self.0[why as usize].fetch_add(1, Relaxed);
    }

    /// Every reason with its count (zeros included).
    pub(crate) fn read(&self) -> Vec<(&'static str, u64)> {
        DropWhy::ALL
            .iter()
            .map(|d| (d.name(), self.0[*d as usize].load(Relaxed)))
            .collect()
    }
}

#[derive(Debug, Default)]
struct Book {
    live: HashMap<TunnelId, (Ipv6Net, Arc<LinkTraffic>)>,
    closed: Traffic,
}

/// The tunnels' counters, live and past.
#[derive(Debug, Default)]
pub(crate) struct TrafficBook {
    book: Mutex<Book>,
    /// The data path's drops.
    pub(crate) drops: Drops,
}

impl TrafficBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A tunnel to `peer` starts counting.
    pub(crate) fn open(&self, tunnel: TunnelId, peer: Ipv6Net, traffic: Arc<LinkTraffic>) {
        self.lock().live.insert(tunnel, (peer, traffic));
    }

    /// A tunnel ended: its counts go to the node's totals.
    pub(crate) fn close(&self, tunnel: TunnelId) {
        let mut b = self.lock();
        if let Some((_, t)) = b.live.remove(&tunnel) {
            let last = t.read();
            b.closed.add(&last);
        }
    }

    /// Node-wide totals: closed tunnels and live ones.
    pub(crate) fn totals(&self) -> Traffic {
        let b = self.lock();
        let mut sum = b.closed;
        for (_, t) in b.live.values() {
            sum.add(&t.read());
        }
        sum
    }

    /// The live tunnels' counts by peer prefix (two tunnels to one peer, briefly during a
    /// race, are summed; the freshest receipt wins).
    pub(crate) fn by_peer(&self, now: Instant) -> BTreeMap<Ipv6Net, (Traffic, Option<u64>)> {
        let b = self.lock();
        let mut out: BTreeMap<Ipv6Net, (Traffic, Option<u64>)> = BTreeMap::new();
        for (peer, t) in b.live.values() {
            let e = out.entry(*peer).or_default();
            e.0.add(&t.read());
            e.1 = match (e.1, t.last_rx_ms_ago(now)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        out
    }

    /// Fills in the peers' traffic from the live tunnels.
    pub(crate) fn fill_peers(&self, peers: &mut [Peer], now: Instant) {
        let by = self.by_peer(now);
        for p in peers {
            if let Ok(net) = p.prefix.parse::<Ipv6Net>()
                && let Some((t, last)) = by.get(&net)
            {
                p.traffic = *t;
                p.last_rx_ms_ago = *last;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().expect("prefix")
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // test: any instant will do as `now`
    fn totals_keep_closed_tunnels_and_peers_get_their_own() {
        let book = TrafficBook::default();
        let (a, b) = (Arc::new(LinkTraffic::new()), Arc::new(LinkTraffic::new()));
        book.open(TunnelId(1), net("fd00:0:0:1::/64"), a.clone());
        book.open(TunnelId(2), net("fd00:0:0:2::/64"), b.clone());
        let now = Instant::now();
        a.rx_data(1000, now);
        a.tx_data(500);
        b.rx_babel(60, now);
        b.tx_data(7);
        let mut peers = vec![Peer {
            prefix: "fd00:0:0:1::/64".into(),
            endpoint: String::new(),
            rtt_ms: 0.0,
            initiated: true,
            state: "up".into(),
            params_version: 1,
            traffic: Traffic::default(),
            last_rx_ms_ago: None,
            name: None,
            made: "direct".into(),
        }];
        book.fill_peers(&mut peers, now);
        assert_eq!(peers[0].traffic.rx_bytes, 1000);
        assert_eq!(peers[0].traffic.tx_bytes, 500);
        assert!(peers[0].last_rx_ms_ago.is_some());
        book.close(TunnelId(1));
        a.rx_data(1, now); // after closing: no longer counted
        let t = book.totals();
        assert_eq!((t.rx_bytes, t.tx_bytes, t.tx_packets), (1000, 507, 2));
        assert_eq!(t.babel_rx_bytes, 60);
        assert_eq!(book.by_peer(now).len(), 1);

        book.drops.count(DropWhy::QueueFull);
        book.drops.count(DropWhy::from(DropReason::RateLimited));
        book.drops.count(DropWhy::QueueFull);
        let d: BTreeMap<_, _> = book.drops.read().into_iter().collect();
        assert_eq!(d["queue_full"], 2);
        assert_eq!(d["rate_limited"], 1);
        assert_eq!(d["malformed"], 0);
        assert_eq!(d.len(), DropWhy::ALL.len());
    }
}
