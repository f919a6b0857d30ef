//! Per-tunnel traffic counters: relaxed atomics bumped by the data path (no lock, no
//! allocation per packet), read by the control API and the metrics endpoint.
#![allow(clippy::disallowed_methods)] // IO shell: stamps the time of the last datagram received

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::control::Traffic;

/// The counters of one tunnel.
#[derive(Debug)]
pub struct LinkTraffic {
    base: Instant,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
    babel_rx_bytes: AtomicU64,
    babel_tx_bytes: AtomicU64,
    babel_rx_packets: AtomicU64,
    babel_tx_packets: AtomicU64,
    /// Milliseconds after `base` of the last datagram received, plus one (0: none yet).
    last_rx: AtomicU64,
    /// The scheduler's counts ([`super::sched::SchedStats`]), published by its task.
    babel_delay_samples: AtomicU64,
    babel_delay_over_5ms: AtomicU64,
    babel_delay_max_us: AtomicU64,
    data_dropped_late: AtomicU64,
    data_dropped_full: AtomicU64,
}

impl Default for LinkTraffic {
    fn default() -> Self {
        LinkTraffic::new()
    }
}

impl LinkTraffic {
    /// Zeroed counters.
    pub fn new() -> LinkTraffic {
        LinkTraffic {
            base: Instant::now(),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            babel_rx_bytes: AtomicU64::new(0),
            babel_tx_bytes: AtomicU64::new(0),
            babel_rx_packets: AtomicU64::new(0),
            babel_tx_packets: AtomicU64::new(0),
            last_rx: AtomicU64::new(0),
            babel_delay_samples: AtomicU64::new(0),
            babel_delay_over_5ms: AtomicU64::new(0),
            babel_delay_max_us: AtomicU64::new(0),
            data_dropped_late: AtomicU64::new(0),
            data_dropped_full: AtomicU64::new(0),
        }
    }

    fn stamp(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.base).as_millis())
            .unwrap_or(u64::MAX - 1);
        self.last_rx.fetch_max(ms + 1, Relaxed);
    }

    /// An IPv6 packet of `len` bytes arrived at `now`.
    pub fn rx_data(&self, len: usize, now: Instant) {
        self.rx_packets.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(len as u64, Relaxed);
        self.stamp(now);
    }

    /// A Babel packet of `len` bytes arrived at `now`.
    pub fn rx_babel(&self, len: usize, now: Instant) {
        self.babel_rx_packets.fetch_add(1, Relaxed);
        self.babel_rx_bytes.fetch_add(len as u64, Relaxed);
        self.stamp(now);
    }

    /// An IPv6 packet of `len` bytes was queued for sending.
    pub fn tx_data(&self, len: usize) {
        self.tx_packets.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(len as u64, Relaxed);
    }

    /// A Babel packet of `len` bytes was queued for sending.
    pub fn tx_babel(&self, len: usize) {
        self.babel_tx_packets.fetch_add(1, Relaxed);
        self.babel_tx_bytes.fetch_add(len as u64, Relaxed);
    }

    /// The scheduler's counts so far (they only grow).
    pub fn set_sched(&self, s: &super::sched::SchedStats) {
        self.babel_delay_samples
            .store(s.babel_delay.count(), Relaxed);
        self.babel_delay_over_5ms
            .store(s.babel_delay.over_5ms(), Relaxed);
        self.babel_delay_max_us.store(s.babel_delay.max_us, Relaxed);
        self.data_dropped_late.store(s.data_dropped_late, Relaxed);
        self.data_dropped_full.store(s.data_dropped_full, Relaxed);
    }

    /// The counts now.
    pub fn read(&self) -> Traffic {
        Traffic {
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            babel_rx_bytes: self.babel_rx_bytes.load(Relaxed),
            babel_tx_bytes: self.babel_tx_bytes.load(Relaxed),
            babel_rx_packets: self.babel_rx_packets.load(Relaxed),
            babel_tx_packets: self.babel_tx_packets.load(Relaxed),
            babel_delay_samples: self.babel_delay_samples.load(Relaxed),
            babel_delay_over_5ms: self.babel_delay_over_5ms.load(Relaxed),
            babel_delay_max_us: self.babel_delay_max_us.load(Relaxed),
            data_dropped_late: self.data_dropped_late.load(Relaxed),
            data_dropped_full: self.data_dropped_full.load(Relaxed),
        }
    }

    /// Milliseconds between the last datagram received and `now`; `None` if none arrived.
    pub fn last_rx_ms_ago(&self, now: Instant) -> Option<u64> {
        let at = self.last_rx.load(Relaxed).checked_sub(1)?;
        let now_ms =
            u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        Some(now_ms.saturating_sub(at))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counts_data_and_babel_apart_and_stamps_the_last_rx() {
        let t = LinkTraffic::new();
        let t0 = t.base;
        assert_eq!(t.last_rx_ms_ago(t0), None);
        t.rx_data(100, t0 + Duration::from_millis(10));
        t.rx_data(1280, t0 + Duration::from_millis(20));
        t.tx_data(60);
        t.rx_babel(40, t0 + Duration::from_millis(15));
        t.tx_babel(30);
        t.tx_babel(30);
        let r = t.read();
        assert_eq!((r.rx_packets, r.rx_bytes), (2, 1380));
        assert_eq!((r.tx_packets, r.tx_bytes), (1, 60));
        assert_eq!((r.babel_rx_packets, r.babel_rx_bytes), (1, 40));
        assert_eq!((r.babel_tx_packets, r.babel_tx_bytes), (2, 60));
        // the latest stamp wins, even when an earlier one is recorded after it
        assert_eq!(t.last_rx_ms_ago(t0 + Duration::from_millis(120)), Some(100));
        let mut sum = r;
        sum.add(&r);
        assert_eq!(sum.rx_bytes, 2760);
    }
}
