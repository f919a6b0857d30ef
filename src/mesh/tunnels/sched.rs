//! The send scheduler of one tunnel, sans-IO (issue "Speed"): what leaves next, and which data
//! packets are dropped. [`super::sender`] is its IO shell in front of quinn.
//!
//! - Babel packets always leave first (quinn writes DATAGRAM frames before STREAM frames, so
//!   the priority has to be ours, in front of a small quinn datagram buffer).
//! - Data waits in a queue bounded in *time*, not bytes: CoDel (RFC 8289) at dequeue, so a
//!   standing queue above [`SchedConfig::target`] for an [`SchedConfig::interval`] costs the
//!   inner TCP one drop, then drops spaced by `interval / sqrt(count)`, instead of a tail-drop
//!   burst that takes a whole TSO train. A byte cap ([`SchedConfig::data_cap`]) drops the
//!   *oldest* packets as a last resort.
//! - How long Babel packets waited (push to handed to QUIC) is kept as a histogram
//!   ([`DelayHistogram`]), the figure the issue asks to print (goal: under 5 ms while a
//!   transfer saturates the tunnel).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Upper bounds (µs) of the [`DelayHistogram`] buckets; the last bucket is everything above.
pub const DELAY_BOUNDS_US: [u64; 4] = [1_000, 5_000, 25_000, 100_000];

/// Queue policy of one tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedConfig {
    /// CoDel target: the standing queueing delay data is allowed.
    pub target: Duration,
    /// CoDel interval: how long the delay must stay above `target` before the first drop.
    pub interval: Duration,
    /// Hard cap of queued data bytes: beyond it the oldest data packets are dropped. Large
    /// enough that the slow-start bursts of a few inner TCP flows (tens of ms at the
    /// tunnel's rate) meet CoDel, not the cap: 4 MiB (13 ms at 2.5 Gbit/s) cost four
    /// streams 1,600–4,700 drops per 5 s; 16 MiB none (docs/PERFORMANCE.md).
    pub data_cap: usize,
    /// Babel packets queued at most (they leave first; this only bounds memory if the
    /// tunnel stalls).
    pub babel_cap: usize,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            data_cap: 16 * 1024 * 1024,
            babel_cap: 256,
        }
    }
}

/// Counts of queueing delays by bucket ([`DELAY_BOUNDS_US`]) and the largest seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DelayHistogram {
    /// Samples at or below each bound, the last one above the last bound.
    pub buckets: [u64; DELAY_BOUNDS_US.len() + 1],
    /// Largest delay seen, in microseconds.
    pub max_us: u64,
}

impl DelayHistogram {
    /// Adds one delay.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = DELAY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(DELAY_BOUNDS_US.len());
        self.buckets[i] += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Samples above 5 ms (the goal is none under a saturating transfer).
    pub fn over_5ms(&self) -> u64 {
        self.buckets[2..].iter().sum()
    }
}

/// What the scheduler counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStats {
    /// Babel packets' time from [`SendQueue::push_babel`] to handed to QUIC.
    pub babel_delay: DelayHistogram,
    /// Data packets dropped by CoDel (waited too long).
    pub data_dropped_late: u64,
    /// Data packets dropped because the byte cap was reached (oldest first).
    pub data_dropped_full: u64,
    /// Babel packets dropped because the Babel queue was full.
    pub babel_dropped: u64,
}

#[derive(Debug)]
struct Queued {
    bytes: Bytes,
    at: Instant,
}

/// A packet to hand to QUIC now.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A Babel datagram, queued at `queued_at` (report [`SendQueue::babel_sent`] once QUIC took
    /// it).
    Babel {
        /// The framed datagram.
        bytes: Bytes,
        /// When it was pushed.
        queued_at: Instant,
    },
    /// A data datagram.
    Data(Bytes),
}

/// CoDel's dequeue state (RFC 8289 §5).
#[derive(Debug, Default)]
struct CoDel {
    first_above: Option<Instant>,
    drop_next: Option<Instant>,
    count: u32,
    last_count: u32,
    dropping: bool,
}

/// The queues of one tunnel.
#[derive(Debug)]
pub struct SendQueue {
    cfg: SchedConfig,
    babel: VecDeque<Queued>,
    data: VecDeque<Queued>,
    data_bytes: usize,
    codel: CoDel,
    stats: SchedStats,
    /// A popped datagram is being handed to QUIC (until [`SendQueue::handed`]).
    busy: bool,
}

/// Below this many queued bytes CoDel never drops (RFC 8289: one MTU).
const CODEL_MIN_BYTES: usize = 1500;

impl SendQueue {
    /// Empty queues with `cfg`.
    pub fn new(cfg: SchedConfig) -> SendQueue {
        SendQueue {
            cfg,
            babel: VecDeque::new(),
            data: VecDeque::new(),
            data_bytes: 0,
            codel: CoDel::default(),
            stats: SchedStats::default(),
            busy: false,
        }
    }

    /// Whether a new datagram may go straight to QUIC (when QUIC has room) without changing
    /// the order: nothing queued and nothing popped still on its way. Saves waking the
    /// sender task per packet while the tunnel keeps up.
    pub fn may_bypass(&self) -> bool {
        !self.busy && self.is_empty()
    }

    /// The datagram [`SendQueue::pop`] returned has been handed to QUIC (or failed).
    pub fn handed(&mut self) {
        self.busy = false;
    }

    /// Queues a data datagram; returns how many older data packets were dropped to make
    /// room under the byte cap.
    pub fn push_data(&mut self, bytes: Bytes, now: Instant) -> usize {
        let mut evicted = 0;
        while self.data_bytes + bytes.len() > self.cfg.data_cap {
            let Some(old) = self.data.pop_front() else {
                break;
            };
            self.data_bytes -= old.bytes.len();
            evicted += 1;
        }
        self.stats.data_dropped_full += evicted as u64;
        self.data_bytes += bytes.len();
        self.data.push_back(Queued { bytes, at: now });
        evicted
    }

    /// Queues a Babel datagram; false (counted) when the Babel queue is full.
    pub fn push_babel(&mut self, bytes: Bytes, now: Instant) -> bool {
        if self.babel.len() >= self.cfg.babel_cap {
            self.stats.babel_dropped += 1;
            return false;
        }
        self.babel.push_back(Queued { bytes, at: now });
        true
    }

    /// The next datagram to hand to QUIC at `now`: Babel first, then data that CoDel keeps.
    /// Report [`SendQueue::handed`] once QUIC took it.
    pub fn pop(&mut self, now: Instant) -> Option<Next> {
        let next = if let Some(q) = self.babel.pop_front() {
            Some(Next::Babel {
                bytes: q.bytes,
                queued_at: q.at,
            })
        } else {
            self.pop_data(now).map(Next::Data)
        };
        self.busy = next.is_some();
        next
    }

    /// QUIC took a Babel datagram queued at `queued_at`, at `now`.
    pub fn babel_sent(&mut self, queued_at: Instant, now: Instant) {
        self.stats
            .babel_delay
            .record(now.saturating_duration_since(queued_at));
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.babel.is_empty() && self.data.is_empty()
    }

    /// Data bytes queued.
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// The counts so far.
    pub fn stats(&self) -> SchedStats {
        self.stats
    }

    fn control_law(&self, t: Instant) -> Instant {
        let sqrt = f64::from(self.codel.count.max(1)).sqrt();
        t + self.cfg.interval.div_f64(sqrt)
    }

    /// RFC 8289 `dodequeue`: the head packet and whether CoDel may drop it.
    fn head(&mut self, now: Instant) -> Option<(Bytes, bool)> {
        let Some(q) = self.data.pop_front() else {
            self.codel.first_above = None;
            return None;
        };
        self.data_bytes -= q.bytes.len();
        let sojourn = now.saturating_duration_since(q.at);
        let mut ok_to_drop = false;
        if sojourn < self.cfg.target || self.data_bytes < CODEL_MIN_BYTES {
            self.codel.first_above = None;
        } else {
            match self.codel.first_above {
                None => self.codel.first_above = Some(now + self.cfg.interval),
                Some(t) if now >= t => ok_to_drop = true,
                Some(_) => {}
            }
        }
        Some((q.bytes, ok_to_drop))
    }

    fn pop_data(&mut self, now: Instant) -> Option<Bytes> {
        let Some((mut p, mut ok)) = self.head(now) else {
            self.codel.dropping = false;
            return None;
        };
        if self.codel.dropping {
            if !ok {
                self.codel.dropping = false;
            }
            while self.codel.dropping && self.codel.drop_next.is_some_and(|t| now >= t) {
                self.stats.data_dropped_late += 1;
                self.codel.count += 1;
                match self.head(now) {
                    None => {
                        self.codel.dropping = false;
                        return None;
                    }
                    Some((q, o)) => {
                        (p, ok) = (q, o);
                    }
                }
                if !ok {
                    self.codel.dropping = false;
                } else if let Some(t) = self.codel.drop_next {
                    self.codel.drop_next = Some(self.control_law(t));
                }
            }
        } else if ok {
            self.stats.data_dropped_late += 1;
            let next = self.head(now);
            self.codel.dropping = true;
            let delta = self.codel.count.saturating_sub(self.codel.last_count);
            let recent = self
                .codel
                .drop_next
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.interval * 16);
            self.codel.count = if delta > 1 && recent { delta } else { 1 };
            self.codel.drop_next = Some(self.control_law(now));
            self.codel.last_count = self.codel.count;
            match next {
                None => {
                    self.codel.dropping = false;
                    return None;
                }
                Some((q, _)) => p = q,
            }
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(n: u8, len: usize) -> Bytes {
        Bytes::from(vec![n; len])
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    #[allow(clippy::disallowed_methods)] // test host: the only way to get an Instant
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn babel_leaves_before_queued_data() {
        let t0 = start();
        let mut q = SendQueue::new(SchedConfig::default());
        for i in 0..10 {
            q.push_data(pkt(i, 1200), t0);
        }
        assert!(q.push_babel(pkt(99, 60), t0 + ms(1)));
        match q.pop(t0 + ms(2)) {
            Some(Next::Babel { bytes, queued_at }) => {
                assert_eq!(bytes[0], 99);
                assert_eq!(queued_at, t0 + ms(1));
                q.babel_sent(queued_at, t0 + ms(3));
            }
            other => panic!("expected Babel first, got {other:?}"),
        }
        // then the data, in order
        for i in 0..10 {
            assert_eq!(q.pop(t0 + ms(2)), Some(Next::Data(pkt(i, 1200))));
            assert!(!q.may_bypass(), "a packet is on its way or queued");
            q.handed();
        }
        assert!(q.may_bypass());
        assert_eq!(q.pop(t0 + ms(2)), None);
        assert!(q.is_empty());
        assert!(q.may_bypass());
        let h = q.stats().babel_delay;
        assert_eq!((h.count(), h.buckets[1], h.max_us), (1, 1, 2_000));
    }

    #[test]
    fn the_byte_cap_drops_the_oldest_data() {
        let t0 = start();
        let cfg = SchedConfig {
            data_cap: 3000,
            ..SchedConfig::default()
        };
        let mut q = SendQueue::new(cfg);
        assert_eq!(q.push_data(pkt(1, 1000), t0), 0);
        assert_eq!(q.push_data(pkt(2, 1000), t0), 0);
        assert_eq!(q.push_data(pkt(3, 1000), t0), 0);
        assert_eq!(q.push_data(pkt(4, 1500), t0), 2);
        assert_eq!(q.data_bytes(), 2500);
        assert_eq!(q.stats().data_dropped_full, 2);
        assert_eq!(q.pop(t0), Some(Next::Data(pkt(3, 1000))));
        assert_eq!(q.pop(t0), Some(Next::Data(pkt(4, 1500))));
    }

    /// The default cap holds a 40 ms burst at 2.5 Gbit/s (the tunnel's rate on the
    /// benchmark machine) that drains within CoDel's interval: nothing dropped.
    #[test]
    fn the_default_cap_holds_a_burst_of_tens_of_ms() {
        let t0 = start();
        let mut q = SendQueue::new(SchedConfig::default());
        let burst: usize = 2_500_000_000 / 8 * 40 / 1000; // bytes
        let n = burst / 1281;
        let mut evicted = 0;
        for i in 0..n {
            evicted += q.push_data(pkt(i as u8, 1281), t0);
        }
        assert_eq!(evicted, 0, "a {burst}-byte burst hit the cap");
        for i in 0..n {
            let now = t0 + Duration::from_micros(40_000 * i as u64 / n as u64);
            assert!(q.pop(now).is_some());
            q.handed();
        }
        assert_eq!(q.stats().data_dropped_late + q.stats().data_dropped_full, 0);
    }

    #[test]
    fn the_babel_queue_is_bounded() {
        let t0 = start();
        let cfg = SchedConfig {
            babel_cap: 2,
            ..SchedConfig::default()
        };
        let mut q = SendQueue::new(cfg);
        assert!(q.push_babel(pkt(1, 10), t0));
        assert!(q.push_babel(pkt(2, 10), t0));
        assert!(!q.push_babel(pkt(3, 10), t0));
        assert_eq!(q.stats().babel_dropped, 1);
    }

    #[test]
    fn a_short_burst_is_not_dropped() {
        // a burst that drains within the interval: delay above target, but not for long
        let t0 = start();
        let mut q = SendQueue::new(SchedConfig::default());
        for i in 0..50 {
            q.push_data(pkt(i, 1200), t0);
        }
        for i in 0..50u8 {
            let now = t0 + ms(10) + ms(u64::from(i));
            assert_eq!(q.pop(now), Some(Next::Data(pkt(i, 1200))));
        }
        assert_eq!(q.stats().data_dropped_late, 0);
    }

    /// A standing queue: nothing is dropped until the delay has stayed above target for an
    /// interval, then single drops spaced by `interval / sqrt(count)` (never a burst).
    #[test]
    fn a_standing_queue_costs_spaced_single_drops() {
        let t0 = start();
        let cfg = SchedConfig::default();
        let mut q = SendQueue::new(cfg);
        for i in 0..1000u32 {
            q.push_data(Bytes::from(i.to_be_bytes().to_vec()), t0);
        }
        let mut drops_at = Vec::new();
        let mut expect = 0u32;
        for k in 0..400u64 {
            let now = t0 + ms(10 + k);
            let before = q.stats().data_dropped_late;
            let Some(Next::Data(b)) = q.pop(now) else {
                panic!("queue ran dry at {k}");
            };
            let id = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let dropped = q.stats().data_dropped_late - before;
            assert_eq!(
                u64::from(id - expect),
                dropped,
                "packets skipped are the ones dropped"
            );
            expect = id + 1;
            if dropped > 0 {
                assert_eq!(dropped, 1, "one drop at a time");
                drops_at.push(now - t0);
            }
        }
        // first above target at 10 ms: first drop one interval later
        assert_eq!(drops_at.first(), Some(&ms(110)), "{drops_at:?}");
        assert!(drops_at.len() >= 3, "{drops_at:?}");
        for w in drops_at.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= ms(40) && gap <= ms(101), "{drops_at:?}");
        }
        // the gaps shrink as count grows
        assert!(
            drops_at[2] - drops_at[1] < drops_at[1] - drops_at[0],
            "{drops_at:?}"
        );
    }

    #[test]
    fn the_histogram_buckets_by_bound() {
        let mut h = DelayHistogram::default();
        for us in [0, 1_000, 1_001, 5_000, 30_000, 200_000] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.buckets, [2, 2, 0, 1, 1]);
        assert_eq!(h.count(), 6);
        assert_eq!(h.over_5ms(), 2);
        assert_eq!(h.max_us, 200_000);
    }
}
