//! The registry API's limits (`mesh registry serve` flags): anonymous joins per source and in
//! total (GCRA token buckets from `governor`), and parameter watches in total and per node.
//!
//! A source is an IPv4 address or an IPv6 /64 (whoever holds one IPv6 address usually holds
//! its whole /64). Each refusal is an error that carries its `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use super::error::RegistryError;

/// `count` events per `per`, in bursts of up to `count` (`5/1h`, `100/h`, `10/30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events per period (and the burst).
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// `count` per `per`; `None` when either is zero.
    pub fn new(count: u32, per: Duration) -> Option<Rate> {
        let count = NonZeroU32::new(count)?;
        (!per.is_zero()).then_some(Rate { count, per })
    }

    fn quota(&self) -> Quota {
        // One event comes back every per/count; at least a nanosecond.
        let every = (self.per / self.count.get()).max(Duration::from_nanos(1));
        Quota::with_period(every)
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.count)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?} is not a rate such as 5/1h, 100/h or 10/30s");
        let (n, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        // "h" reads as "1h"
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            humantime::parse_duration(per)
        } else {
            humantime::parse_duration(&format!("1{per}"))
        }
        .map_err(|_| bad())?;
        Rate::new(n, per).ok_or_else(|| format!("{s:?}: a rate needs a count and a period above 0"))
    }
}

/// A rate, or no limit (`off`): a CLI value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateOrOff(pub Option<Rate>);

/// Parses a rate or `off` (no limit), as a clap value parser.
pub fn parse_rate_or_off(s: &str) -> Result<RateOrOff, String> {
    match s.trim() {
        "off" | "none" => Ok(RateOrOff(None)),
        other => other.parse().map(|r| RateOrOff(Some(r))),
    }
}

/// Default limit of anonymous joins per source: 5 an hour.
pub const DEFAULT_ANON_JOINS_PER_SOURCE: (u32, Duration) = (5, Duration::from_secs(3600));
/// Default limit of anonymous joins in total: 100 an hour.
pub const DEFAULT_ANON_JOINS: (u32, Duration) = (100, Duration::from_secs(3600));
/// Default limit of parameter watches held at once. A few watchers are enough: they pass
/// every change on to the mesh, and the rest of the nodes learn it from their neighbours.
pub const DEFAULT_MAX_WATCHERS: usize = 64;
/// Default limit of parameter watches one node holds at once (one, plus one while a
/// renewal swaps its client).
pub const DEFAULT_MAX_WATCHERS_PER_NODE: usize = 2;

/// The API's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Anonymous joins per source (IPv4 address or IPv6 /64); `None`: no limit.
    pub anon_joins_per_source: Option<Rate>,
    /// Anonymous joins from all sources together; `None`: no limit.
    pub anon_joins: Option<Rate>,
    /// Parameter watches held at once.
    pub max_watchers: usize,
    /// Parameter watches one node holds at once.
    pub max_watchers_per_node: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        let rate = |(n, per): (u32, Duration)| Rate::new(n, per);
        Limits {
            anon_joins_per_source: rate(DEFAULT_ANON_JOINS_PER_SOURCE),
            anon_joins: rate(DEFAULT_ANON_JOINS),
            max_watchers: DEFAULT_MAX_WATCHERS,
            max_watchers_per_node: DEFAULT_MAX_WATCHERS_PER_NODE,
        }
    }
}

/// The source a per-source limit counts: an IPv4 address (IPv4-mapped ones included) or an
/// IPv6 /64.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The anonymous-join limiters.
pub struct JoinLimiter {
    per_source: Option<DefaultKeyedRateLimiter<IpAddr>>,
    total: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

impl JoinLimiter {
    /// Limiters for `limits`.
    pub fn new(limits: &Limits) -> JoinLimiter {
        JoinLimiter {
            per_source: limits
                .anon_joins_per_source
                .map(|r| DefaultKeyedRateLimiter::keyed(r.quota())),
            total: limits
                .anon_joins
                .map(|r| DefaultDirectRateLimiter::direct(r.quota())),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one anonymous join for `ip`, or says when to come back: 429 when this source is
    /// over its limit, 503 when all sources together are. A join refused for its source does
    /// not use up the total.
    pub fn check(&self, ip: IpAddr) -> Result<(), RegistryError> {
        if let Some(l) = &self.per_source
            && let Err(not_until) = l.check_key(&source_of(ip))
        {
            let secs = retry_secs(not_until.wait_time_from(self.clock.now()));
            return Err(RegistryError::RateLimited(
                format!(
                    "too many joins without a token from {}; try again in {secs} s or ask for a join token",
                    source_of(ip)
                ),
                secs,
            ));
        }
        if let Some(l) = &self.total
            && let Err(not_until) = l.check()
        {
            let secs = retry_secs(not_until.wait_time_from(self.clock.now()));
            return Err(RegistryError::Busy(
                format!(
                    "this registry takes no more joins without a token for now; try again in {secs} s or ask for a join token"
                ),
                secs,
            ));
        }
        Ok(())
    }

    /// Forgets sources whose buckets are full again (bounds the memory of the per-source map).
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_source {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Sources remembered now.
    pub fn sources(&self) -> usize {
        self.per_source.as_ref().map_or(0, |l| l.len())
    }
}

/// Parameter watches held, in total and per node.
pub struct WatchCounts {
    max: usize,
    max_per_node: usize,
    held: Mutex<(usize, HashMap<i64, usize>)>,
}

/// `Retry-After` of a refused watch: a held watch ends within its hold time.
const WATCH_RETRY_SECS: u64 = 15;

impl WatchCounts {
    /// Counters for `limits`.
    pub fn new(limits: &Limits) -> WatchCounts {
        WatchCounts {
            max: limits.max_watchers,
            max_per_node: limits.max_watchers_per_node,
            held: Mutex::new((0, HashMap::new())),
        }
    }

    /// Takes a watch slot for `node`; give it back with [`WatchCounts::release`].
    pub fn take(&self, node: i64) -> Result<(), RegistryError> {
        let mut held = self
            .held
            .lock()
            .map_err(|_| RegistryError::Internal("watch counter lock poisoned".into()))?;
        let (total, per_node) = &mut *held;
        let mine = per_node.get(&node).copied().unwrap_or(0);
        if mine >= self.max_per_node {
            return Err(RegistryError::RateLimited(
                format!(
                    "this node already holds {mine} parameter watches (at most {}); end one first",
                    self.max_per_node
                ),
                WATCH_RETRY_SECS,
            ));
        }
        if *total >= self.max {
            return Err(RegistryError::Busy(
                format!(
                    "this registry already holds {} parameter watches; poll /api/v1/params instead",
                    self.max
                ),
                WATCH_RETRY_SECS,
            ));
        }
        *total += 1;
        per_node.insert(node, mine + 1);
        Ok(())
    }

    /// Gives back a slot of `node`.
    pub fn release(&self, node: i64) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        let (total, per_node) = &mut *held;
        *total = total.saturating_sub(1);
        match per_node.get_mut(&node) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                per_node.remove(&node);
            }
        }
    }

    /// Watches held now.
    pub fn held(&self) -> usize {
        self.held.lock().map(|h| h.0).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_or_without_a_count_of_periods() {
        let r: Rate = "5/h".parse().unwrap();
        assert_eq!((r.count.get(), r.per), (5, Duration::from_secs(3600)));
        let r: Rate = "100/30s".parse().unwrap();
        assert_eq!((r.count.get(), r.per), (100, Duration::from_secs(30)));
        for bad in ["", "5", "x/h", "5/", "5/xyz", "0/h", "5/0s", "-1/h"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_rate_or_off("off"), Ok(RateOrOff(None)));
        assert_eq!("5/1h".parse::<Rate>().unwrap().to_string(), "5/1h");
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let s = |a: &str| source_of(a.parse().unwrap()).to_string();
        assert_eq!(s("192.0.2.7"), "192.0.2.7");
        assert_eq!(s("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(s("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(s("2001:db8:1:2::1"), s("2001:db8:1:2:ffff::9"));
        assert_ne!(s("2001:db8:1:2::1"), s("2001:db8:1:3::1"));
    }

    #[test]
    fn one_source_over_its_limit_leaves_the_others_their_own() {
        let limits = Limits {
            anon_joins_per_source: Rate::new(2, Duration::from_secs(3600)),
            anon_joins: Rate::new(3, Duration::from_secs(3600)),
            ..Limits::default()
        };
        let l = JoinLimiter::new(&limits);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let a2: IpAddr = "2001:db8::2".parse().unwrap(); // same /64
        let b: IpAddr = "192.0.2.1".parse().unwrap();
        l.check(a).unwrap();
        l.check(a2).unwrap();
        let e = l.check(a).unwrap_err();
        assert!(matches!(e, RegistryError::RateLimited(..)), "{e}");
        // an hour for 2: one comes back after 30 min
        let secs = e.retry_after().unwrap();
        assert!((1700..=1800).contains(&secs), "{secs}");
        // b has its own bucket, and takes the last join of the total
        l.check(b).unwrap();
        let e = l.check(b).unwrap_err();
        assert!(matches!(e, RegistryError::Busy(..)), "{e}");
        assert!(e.retry_after().unwrap() > 0);
        assert_eq!(l.sources(), 2);
        // no limit at all
        let none = JoinLimiter::new(&Limits {
            anon_joins_per_source: None,
            anon_joins: None,
            ..Limits::default()
        });
        for _ in 0..1000 {
            none.check(a).unwrap();
        }
    }

    #[test]
    fn watch_slots_are_capped_per_node_and_in_total() {
        let w = WatchCounts::new(&Limits {
            max_watchers: 3,
            max_watchers_per_node: 2,
            ..Limits::default()
        });
        w.take(1).unwrap();
        w.take(1).unwrap();
        assert!(matches!(w.take(1), Err(RegistryError::RateLimited(..))));
        w.take(2).unwrap();
        assert!(matches!(w.take(3), Err(RegistryError::Busy(..))));
        w.release(1);
        w.take(3).unwrap();
        assert_eq!(w.held(), 3);
        w.release(1);
        w.release(2);
        w.release(3);
        assert_eq!(w.held(), 0);
        w.take(1).unwrap();
        w.take(1).unwrap();
    }
}
