//! The persistent peer cache (DESIGN §6 "Peer addresses"): where other nodes can be
//! reached, kept across restarts in `<state-dir>/peers.json`.
//!
//! Everything is pure except [`PeerCache::load`] and [`PeerCache::save`]. Time is unix
//! seconds passed in by the caller; randomness comes from the caller's RNG.
//!
//! * Bounded ([`DEFAULT_CAPACITY`] = 256 entries): when full, a new peer evicts the entry with
//!   the most failures, then the stalest (`last_seen`), then the highest prefix.
//! * Failures back off exponentially: after `n` consecutive failures a peer is not offered
//!   again before `last_failure + 30 s × 2^(n-1)` (at most one hour). A success clears them.
//! * [`PeerCache::candidates`] returns up to `n` random peers, preferring, in this order,
//!   fresh peers without failures (seen within [`FRESH_SECS`]), stale peers without
//!   failures, then failed peers whose backoff is over.
//! * Load never fails: a missing or corrupt file yields an empty cache plus a
//!   [`CacheLoadError`] for the log (warning level, except [`CacheLoadError::Missing`] which
//!   is the normal first start).
//!
//! # Usage by the host
//!
//! ```no_run
//! use re6mesh::mesh::peers::{PeerCache, DEFAULT_CAPACITY};
//! # let state_dir = std::path::Path::new("/tmp");
//! # let (prefix, endpoints, now): (ipnet::Ipv6Net, Vec<std::net::SocketAddr>, u64) =
//! #     ("fd00:1::/64".parse().unwrap(), vec![], 0);
//! let path = PeerCache::path(state_dir);
//! let (mut cache, warning) = PeerCache::load(&path, DEFAULT_CAPACITY);
//! if let Some(w) = warning { /* warn!(%w) unless w.is_missing() */ }
//! cache.record_seen(prefix, endpoints, now);    // hello, peer exchange, bootstrap, LAN
//! cache.record_success(prefix, now);            // tunnel up
//! cache.record_failure(prefix, now);            // dial failed on every endpoint
//! cache.forget(prefix);                        // revoked
//! let mut rng = <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::seed_from_u64(1);
//! let candidates = cache.candidates(now, 16, &mut rng); // → policy's Observation::cached
//! if cache.is_dirty() { let _ = cache.save(&path); }  // e.g. once a minute and at exit
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::Ipv6Net;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

/// Entries kept by default.
pub const DEFAULT_CAPACITY: usize = 256;
/// Endpoints kept per peer.
pub const MAX_ENDPOINTS: usize = 8;
/// A peer seen within this many seconds is fresh (one day).
pub const FRESH_SECS: u64 = 24 * 3600;
/// Backoff after the first failure, doubled for each further one.
pub const BACKOFF_BASE_SECS: u64 = 30;
/// Longest backoff.
pub const BACKOFF_MAX_SECS: u64 = 3600;
/// File name in the state directory.
pub const FILE_NAME: &str = "peers.json";
/// Format version written in the file.
const FORMAT: u32 = 1;
/// Entries one neighbour's hearsay (its `Peers` messages) may hold in the cache.
pub const MAX_HEARSAY_PER_SOURCE: usize = 32;

pub use crate::registry_api::usable_endpoint;

/// What [`PeerCache::record_hearsay`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hearsay {
    /// A new entry.
    Added,
    /// The peer was known: first-hand knowledge (or a working address) is not overwritten.
    Kept,
    /// Its endpoints replaced those of an entry heard of before whose dials failed.
    Replaced,
    /// The informant already holds [`MAX_HEARSAY_PER_SOURCE`] entries, or the cache is full
    /// of first-hand entries: nothing changed.
    OverBudget,
}

/// What the cache knows about one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Where it can be reached (most recent announcement).
    pub endpoints: Vec<SocketAddr>,
    /// When it was last seen or heard of (unix seconds).
    pub last_seen: u64,
    /// Consecutive failures to reach it.
    #[serde(default)]
    pub failures: u32,
    /// When the last failure happened (unix seconds).
    #[serde(default)]
    pub last_failure: Option<u64>,
    /// Its country (ISO 3166 alpha-2), if known.
    #[serde(default)]
    pub country: Option<String>,
    /// `None`: first-hand (the peer's own hello, the registry, the command line); else the
    /// neighbour whose `Peers` message told us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_from: Option<Ipv6Net>,
}

impl PeerEntry {
    /// The end of the failure backoff (`None`: no failure).
    pub fn retry_at(&self) -> Option<u64> {
        if self.failures == 0 {
            return None;
        }
        let shift = (self.failures - 1).min(16);
        let backoff = BACKOFF_BASE_SECS
            .saturating_mul(1u64 << shift)
            .min(BACKOFF_MAX_SECS);
        Some(self.last_failure.unwrap_or(0).saturating_add(backoff))
    }

    /// May it be tried at `now`?
    pub fn available(&self, now: u64) -> bool {
        self.retry_at().is_none_or(|at| now >= at)
    }

    /// 0: fresh without failures, 1: stale without failures, 2: failed (backoff over).
    fn class(&self, now: u64) -> u8 {
        if self.failures > 0 {
            2
        } else if now.saturating_sub(self.last_seen) <= FRESH_SECS {
            0
        } else {
            1
        }
    }
}

/// Why the saved cache could not be used (the cache starts empty).
#[derive(Debug, thiserror::Error)]
pub enum CacheLoadError {
    /// No file yet (first start): not worth a warning.
    #[error("no peer cache at {0} yet; starting with an empty one")]
    Missing(PathBuf),
    /// The file exists but cannot be read.
    #[error("cannot read the peer cache {path}: {reason}; starting with an empty one")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a peer cache (truncated, edited, another format).
    #[error("the peer cache {path} is corrupt ({reason}); starting with an empty one")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl CacheLoadError {
    /// The normal first start (log at debug level, not as a warning).
    pub fn is_missing(&self) -> bool {
        matches!(self, CacheLoadError::Missing(_))
    }
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    prefix: Ipv6Net,
    #[serde(flatten)]
    entry: PeerEntry,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    peers: Vec<FileEntry>,
}

/// The bounded peer cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCache {
    capacity: usize,
    entries: BTreeMap<Ipv6Net, PeerEntry>,
    dirty: bool,
}

impl Default for PeerCache {
    fn default() -> Self {
        PeerCache::new(DEFAULT_CAPACITY)
    }
}

impl PeerCache {
    /// An empty cache of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        PeerCache {
            capacity: capacity.max(1),
            entries: BTreeMap::new(),
            dirty: false,
        }
    }

    /// `<state-dir>/peers.json`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// One peer.
    pub fn get(&self, prefix: &Ipv6Net) -> Option<&PeerEntry> {
        self.entries.get(prefix)
    }

    /// Its endpoints (empty if unknown).
    pub fn endpoints(&self, prefix: &Ipv6Net) -> &[SocketAddr] {
        self.entries
            .get(prefix)
            .map(|e| e.endpoints.as_slice())
            .unwrap_or(&[])
    }

    /// All entries, by prefix.
    pub fn iter(&self) -> impl Iterator<Item = (&Ipv6Net, &PeerEntry)> {
        self.entries.iter()
    }

    /// Changed since the last [`PeerCache::save`] / [`PeerCache::mark_saved`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the cache as saved.
    pub fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// The peer was seen at `now` with these endpoints, first-hand: its own hello, the
    /// registry, the command line (an empty list keeps the known ones). First-hand knowledge
    /// replaces hearsay. Failures are kept: only a tunnel proves it reachable. The caller
    /// checks the addresses ([`usable_endpoint`]).
    pub fn record_seen(&mut self, prefix: Ipv6Net, endpoints: Vec<SocketAddr>, now: u64) {
        let mut endpoints = endpoints;
        dedup_keep_order(&mut endpoints);
        endpoints.truncate(MAX_ENDPOINTS);
        if let Some(e) = self.entries.get_mut(&prefix) {
            if !endpoints.is_empty() {
                e.endpoints = endpoints;
                e.heard_from = None;
            }
            e.last_seen = e.last_seen.max(now);
            self.dirty = true;
            return;
        }
        if endpoints.is_empty() {
            // Nothing to dial: not worth a slot.
            return;
        }
        self.make_room();
        self.insert_new(prefix, endpoints, now, None);
    }

    /// Neighbour `from` says the peer is at these endpoints. Hearsay never overwrites what
    /// is known first-hand, nor addresses that have not failed; one neighbour holds at most
    /// [`MAX_HEARSAY_PER_SOURCE`] entries; and it evicts only hearsay or failed entries. So a
    /// member cannot redirect the dials to the peers we know, nor fill the cache with its own
    /// inventions (eclipse).
    pub fn record_hearsay(
        &mut self,
        from: Ipv6Net,
        prefix: Ipv6Net,
        endpoints: Vec<SocketAddr>,
        now: u64,
    ) -> Hearsay {
        let mut endpoints = endpoints;
        dedup_keep_order(&mut endpoints);
        endpoints.truncate(MAX_ENDPOINTS);
        if endpoints.is_empty() {
            return Hearsay::Kept;
        }
        if let Some(e) = self.entries.get_mut(&prefix) {
            if e.heard_from.is_some() && e.failures > 0 && e.endpoints != endpoints {
                e.endpoints = endpoints;
                e.heard_from = Some(from);
                self.dirty = true;
                return Hearsay::Replaced;
            }
            return Hearsay::Kept;
        }
        let held = self
            .entries
            .values()
            .filter(|e| e.heard_from == Some(from))
            .count();
        if held >= MAX_HEARSAY_PER_SOURCE {
            return Hearsay::OverBudget;
        }
        if self.entries.len() >= self.capacity {
            let victim = self
                .entries
                .iter()
                .filter(|(_, e)| e.heard_from.is_some() || e.failures > 0)
                .max_by_key(|(p, e)| (e.failures, std::cmp::Reverse(e.last_seen), **p))
                .map(|(p, _)| *p);
            match victim {
                Some(v) => {
                    self.entries.remove(&v);
                }
                None => return Hearsay::OverBudget,
            }
        }
        self.insert_new(prefix, endpoints, now, Some(from));
        Hearsay::Added
    }

    fn insert_new(
        &mut self,
        prefix: Ipv6Net,
        endpoints: Vec<SocketAddr>,
        now: u64,
        heard_from: Option<Ipv6Net>,
    ) {
        self.entries.insert(
            prefix,
            PeerEntry {
                endpoints,
                last_seen: now,
                failures: 0,
                last_failure: None,
                country: None,
                heard_from,
            },
        );
        self.dirty = true;
    }

    /// Records the peer's country.
    pub fn set_country(&mut self, prefix: Ipv6Net, country: Option<String>) {
        if let Some(e) = self.entries.get_mut(&prefix)
            && e.country != country
        {
            e.country = country;
            self.dirty = true;
        }
    }

    /// A dial to the peer failed on every endpoint.
    pub fn record_failure(&mut self, prefix: Ipv6Net, now: u64) {
        if let Some(e) = self.entries.get_mut(&prefix) {
            e.failures = e.failures.saturating_add(1);
            e.last_failure = Some(now);
            self.dirty = true;
        }
    }

    /// A tunnel with the peer came up: failures cleared, seen now.
    pub fn record_success(&mut self, prefix: Ipv6Net, now: u64) {
        if let Some(e) = self.entries.get_mut(&prefix) {
            e.failures = 0;
            e.last_failure = None;
            e.last_seen = e.last_seen.max(now);
            self.dirty = true;
        }
    }

    /// Forgets a peer (revoked). Returns whether it was known.
    pub fn forget(&mut self, prefix: Ipv6Net) -> bool {
        let known = self.entries.remove(&prefix).is_some();
        self.dirty |= known;
        known
    }

    /// Drops the peers not seen for `max_age` seconds. Returns how many.
    pub fn expire(&mut self, now: u64, max_age: u64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.saturating_sub(e.last_seen) <= max_age);
        let n = before - self.entries.len();
        self.dirty |= n > 0;
        n
    }

    /// Up to `n` peers to try at `now`, random within each preference class (see the module
    /// documentation); peers in failure backoff are left out.
    pub fn candidates<R: RngCore + ?Sized>(&self, now: u64, n: usize, rng: &mut R) -> Vec<Ipv6Net> {
        self.candidates_where(now, n, rng, |_, _| true)
    }

    /// [`PeerCache::candidates`] among the peers `keep` accepts (e.g. not already a
    /// neighbour).
    pub fn candidates_where<R, F>(
        &self,
        now: u64,
        n: usize,
        rng: &mut R,
        mut keep: F,
    ) -> Vec<Ipv6Net>
    where
        R: RngCore + ?Sized,
        F: FnMut(&Ipv6Net, &PeerEntry) -> bool,
    {
        let mut classes: [Vec<Ipv6Net>; 3] = Default::default();
        for (p, e) in &self.entries {
            if e.available(now) && keep(p, e) {
                classes[usize::from(e.class(now))].push(*p);
            }
        }
        let mut out = Vec::with_capacity(n.min(self.entries.len()));
        for mut class in classes {
            // Partial Fisher–Yates: only as many draws as needed.
            let mut i = 0;
            while i < class.len() && out.len() < n {
                let j = i + below(rng, class.len() - i);
                class.swap(i, j);
                out.push(class[i]);
                i += 1;
            }
            if out.len() >= n {
                break;
            }
        }
        out
    }

    fn make_room(&mut self) {
        while self.entries.len() >= self.capacity {
            let Some(victim) = self
                .entries
                .iter()
                .max_by_key(|(p, e)| {
                    (
                        e.heard_from.is_some(),
                        e.failures,
                        std::cmp::Reverse(e.last_seen),
                        **p,
                    )
                })
                .map(|(p, _)| *p)
            else {
                return;
            };
            self.entries.remove(&victim);
        }
    }

    /// The file contents (pretty JSON, entries by prefix).
    pub fn to_json(&self) -> Vec<u8> {
        let file = CacheFile {
            version: FORMAT,
            peers: self
                .entries
                .iter()
                .map(|(p, e)| FileEntry {
                    prefix: *p,
                    entry: e.clone(),
                })
                .collect(),
        };
        let mut v = serde_json::to_vec_pretty(&file).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses file contents into a cache of at most `capacity` entries (the best ones are
    /// kept if the file has more). Entries without endpoints are dropped.
    pub fn from_json(bytes: &[u8], capacity: usize) -> Result<PeerCache, String> {
        let file: CacheFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.version != FORMAT {
            return Err(format!("unknown format version {}", file.version));
        }
        let mut cache = PeerCache::new(capacity);
        let mut peers = file.peers;
        // Best first, so that make_room evicts the worst of a too-long file.
        peers.sort_by_key(|f| (f.entry.failures, std::cmp::Reverse(f.entry.last_seen)));
        for f in peers {
            let mut e = f.entry;
            dedup_keep_order(&mut e.endpoints);
            e.endpoints.truncate(MAX_ENDPOINTS);
            if e.endpoints.is_empty() || cache.entries.contains_key(&f.prefix) {
                continue;
            }
            if cache.entries.len() >= cache.capacity {
                break;
            }
            cache.entries.insert(f.prefix, e);
        }
        Ok(cache)
    }

    /// Reads `path`. Never fails: a missing, unreadable or corrupt file gives an empty cache
    /// and the reason (see [`CacheLoadError::is_missing`] for the log level).
    pub fn load(path: &Path, capacity: usize) -> (PeerCache, Option<CacheLoadError>) {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (
                    PeerCache::new(capacity),
                    Some(CacheLoadError::Missing(path.to_path_buf())),
                );
            }
            Err(e) => {
                return (
                    PeerCache::new(capacity),
                    Some(CacheLoadError::Unreadable {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    }),
                );
            }
        };
        match PeerCache::from_json(&bytes, capacity) {
            Ok(c) => (c, None),
            Err(reason) => (
                PeerCache::new(capacity),
                Some(CacheLoadError::Corrupt {
                    path: path.to_path_buf(),
                    reason,
                }),
            ),
        }
    }

    /// Writes `path` atomically (temporary file, fsync, rename), mode 0600, and marks the
    /// cache saved.
    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        crate::fsutil::write_atomic(path, &self.to_json(), 0o600)?;
        self.dirty = false;
        Ok(())
    }
}

fn dedup_keep_order(v: &mut Vec<SocketAddr>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|a| seen.insert(*a));
}

/// A uniform index below `n` (`n > 0`).
fn below<R: RngCore + ?Sized>(rng: &mut R, n: usize) -> usize {
    let n = n as u64;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return (v % n) as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    fn pfx(i: usize) -> Ipv6Net {
        format!("fd00:0:0:{:x}::/64", i + 1).parse().unwrap()
    }

    fn ep(i: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 6000 + i))
    }

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    const DAY: u64 = 24 * 3600;

    #[test]
    fn record_seen_updates_and_dedups() {
        let mut c = PeerCache::default();
        assert_eq!(c.capacity(), DEFAULT_CAPACITY);
        c.record_seen(pfx(1), vec![], 10);
        assert!(c.is_empty(), "no endpoint, no entry");
        c.record_seen(pfx(1), vec![ep(1), ep(1), ep(2)], 10);
        assert_eq!(c.endpoints(&pfx(1)), &[ep(1), ep(2)]);
        c.record_seen(pfx(1), vec![], 20);
        assert_eq!(c.endpoints(&pfx(1)), &[ep(1), ep(2)]);
        assert_eq!(c.get(&pfx(1)).unwrap().last_seen, 20);
        c.record_seen(pfx(1), vec![ep(3)], 15);
        assert_eq!(c.endpoints(&pfx(1)), &[ep(3)]);
        assert_eq!(c.get(&pfx(1)).unwrap().last_seen, 20, "never goes back");
        c.record_seen(pfx(2), (0..20).map(ep).collect(), 1);
        assert_eq!(c.endpoints(&pfx(2)).len(), MAX_ENDPOINTS);
        assert!(c.endpoints(&pfx(9)).is_empty());
        assert!(c.is_dirty());
    }

    #[test]
    fn only_dialable_addresses_are_usable() {
        let ok = |s: &str, lo: bool| usable_endpoint(&s.parse().unwrap(), lo);
        assert!(ok("192.0.2.1:6000", false));
        assert!(ok("[2001:db8::1]:6000", false));
        assert!(!ok("192.0.2.1:0", false));
        assert!(!ok("0.0.0.0:6000", false));
        assert!(!ok("[::]:6000", false));
        assert!(!ok("224.0.0.1:6000", false));
        assert!(!ok("[ff02::1]:6000", false));
        assert!(!ok("255.255.255.255:6000", false));
        assert!(!ok("169.254.1.1:6000", false));
        assert!(!ok("[fe80::1]:6000", false));
        assert!(!ok("[fe80::1%2]:6000", false));
        assert!(!ok("127.0.0.1:6000", false));
        assert!(!ok("[::1]:6000", false));
        assert!(!ok("[::ffff:127.0.0.1]:6000", false));
        assert!(ok("127.0.0.1:6000", true));
        assert!(ok("[::1]:6000", true));
    }

    #[test]
    fn hearsay_never_overwrites_first_hand_nor_working_addresses() {
        let mut c = PeerCache::default();
        let (liar, other) = (pfx(100), pfx(101));
        c.record_seen(pfx(1), vec![ep(1)], 10);
        assert_eq!(
            c.record_hearsay(liar, pfx(1), vec![ep(66)], 20),
            Hearsay::Kept
        );
        assert_eq!(c.endpoints(&pfx(1)), &[ep(1)]);
        assert_eq!(
            c.get(&pfx(1)).unwrap().last_seen,
            10,
            "hearsay does not refresh"
        );
        // a first-hand entry that fails is still not the liar's to redirect
        c.record_failure(pfx(1), 30);
        assert_eq!(
            c.record_hearsay(liar, pfx(1), vec![ep(66)], 40),
            Hearsay::Kept
        );
        // hearsay about an unknown peer is taken; another's hearsay does not replace it...
        assert_eq!(
            c.record_hearsay(liar, pfx(2), vec![ep(2)], 40),
            Hearsay::Added
        );
        assert_eq!(c.get(&pfx(2)).unwrap().heard_from, Some(liar));
        assert_eq!(
            c.record_hearsay(other, pfx(2), vec![ep(3)], 41),
            Hearsay::Kept
        );
        // ...unless its addresses failed
        c.record_failure(pfx(2), 50);
        assert_eq!(
            c.record_hearsay(other, pfx(2), vec![ep(3)], 51),
            Hearsay::Replaced
        );
        assert_eq!(c.endpoints(&pfx(2)), &[ep(3)]);
        // the peer's own hello makes it first-hand
        c.record_seen(pfx(2), vec![ep(4)], 60);
        assert_eq!(c.get(&pfx(2)).unwrap().heard_from, None);
        // the file keeps the distinction
        let back = PeerCache::from_json(&c.to_json(), DEFAULT_CAPACITY).unwrap();
        assert_eq!(back.get(&pfx(2)).unwrap().heard_from, None);
        c.record_hearsay(liar, pfx(3), vec![ep(5)], 70);
        let back = PeerCache::from_json(&c.to_json(), DEFAULT_CAPACITY).unwrap();
        assert_eq!(back.get(&pfx(3)).unwrap().heard_from, Some(liar));
    }

    #[test]
    fn one_neighbours_hearsay_is_bounded_and_cannot_evict_first_hand_peers() {
        let mut c = PeerCache::new(DEFAULT_CAPACITY);
        for i in 0..40 {
            c.record_seen(pfx(i), vec![ep(1)], 10);
        }
        let liar = pfx(1000);
        let added = (0..10_000)
            .filter(|i| c.record_hearsay(liar, pfx(100 + i), vec![ep(2)], 20) == Hearsay::Added)
            .count();
        assert_eq!(added, MAX_HEARSAY_PER_SOURCE);
        assert_eq!(c.len(), 40 + MAX_HEARSAY_PER_SOURCE);
        for i in 0..40 {
            assert_eq!(c.endpoints(&pfx(i)), &[ep(1)], "first-hand peer {i} kept");
        }
        // a full cache of first-hand peers takes no hearsay at all
        let mut c = PeerCache::new(8);
        for i in 0..8 {
            c.record_seen(pfx(i), vec![ep(1)], 10);
        }
        assert_eq!(
            c.record_hearsay(liar, pfx(50), vec![ep(2)], 20),
            Hearsay::OverBudget
        );
        assert_eq!(c.len(), 8);
        // while first-hand news evicts hearsay first
        let mut c = PeerCache::new(4);
        c.record_hearsay(liar, pfx(50), vec![ep(2)], 100);
        for i in 0..4 {
            c.record_seen(pfx(i), vec![ep(1)], 10);
        }
        assert!(c.get(&pfx(50)).is_none());
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn failures_back_off_and_success_clears() {
        let mut c = PeerCache::default();
        c.record_seen(pfx(1), vec![ep(1)], 0);
        c.record_failure(pfx(1), 100);
        let e = c.get(&pfx(1)).unwrap();
        assert_eq!((e.failures, e.retry_at()), (1, Some(130)));
        assert!(c.candidates(129, 5, &mut rng(1)).is_empty());
        assert_eq!(c.candidates(130, 5, &mut rng(1)), vec![pfx(1)]);
        c.record_failure(pfx(1), 130);
        assert_eq!(c.get(&pfx(1)).unwrap().retry_at(), Some(190));
        for _ in 0..40 {
            c.record_failure(pfx(1), 1000);
        }
        assert_eq!(
            c.get(&pfx(1)).unwrap().retry_at(),
            Some(1000 + BACKOFF_MAX_SECS)
        );
        c.record_success(pfx(1), 2000);
        let e = c.get(&pfx(1)).unwrap();
        assert_eq!((e.failures, e.last_failure, e.last_seen), (0, None, 2000));
        assert!(e.available(2000));
        // Unknown peers are ignored.
        c.record_failure(pfx(7), 1);
        c.record_success(pfx(7), 1);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn candidates_prefer_fresh_then_stale_then_failed() {
        let mut c = PeerCache::default();
        let now = 10 * DAY;
        for i in 0..4 {
            c.record_seen(pfx(i), vec![ep(1)], now - 100); // fresh
        }
        for i in 4..8 {
            c.record_seen(pfx(i), vec![ep(1)], now - 5 * DAY); // stale
        }
        for i in 8..12 {
            c.record_seen(pfx(i), vec![ep(1)], now - 10);
            c.record_failure(pfx(i), now - 3600); // backoff over
        }
        c.record_seen(pfx(12), vec![ep(1)], now);
        c.record_failure(pfx(12), now); // backing off
        for seed in 0..20 {
            let got = c.candidates(now, 12, &mut rng(seed));
            assert_eq!(got.len(), 12);
            let class = |p: &Ipv6Net| (0..13).position(|i| pfx(i) == *p).unwrap() / 4;
            let classes: Vec<usize> = got.iter().map(class).collect();
            assert_eq!(classes, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
            assert!(!got.contains(&pfx(12)));
        }
        // Random within a class, deterministic for a seed.
        let a = c.candidates(now, 2, &mut rng(1));
        assert_eq!(a, c.candidates(now, 2, &mut rng(1)));
        let firsts: std::collections::BTreeSet<Ipv6Net> = (0..50)
            .map(|s| c.candidates(now, 1, &mut rng(s))[0])
            .collect();
        assert_eq!(firsts.len(), 4, "every fresh peer comes first sometimes");
        // Filter.
        let only_odd = c.candidates_where(now, 100, &mut rng(1), |p, _| {
            (0..13).position(|i| pfx(i) == *p).unwrap() % 2 == 1
        });
        assert_eq!(only_odd.len(), 6);
    }

    #[test]
    fn eviction_takes_the_most_failed_then_the_stalest() {
        let mut c = PeerCache::new(3);
        c.record_seen(pfx(1), vec![ep(1)], 100);
        c.record_seen(pfx(2), vec![ep(1)], 50);
        c.record_seen(pfx(3), vec![ep(1)], 200);
        c.record_seen(pfx(4), vec![ep(1)], 300);
        assert!(c.get(&pfx(2)).is_none(), "stalest evicted");
        c.record_failure(pfx(4), 301);
        c.record_seen(pfx(5), vec![ep(1)], 10);
        assert!(c.get(&pfx(4)).is_none(), "failed evicted first");
        assert_eq!(c.len(), 3);
        // Updating a known peer evicts nobody.
        c.record_seen(pfx(5), vec![ep(2)], 11);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn forget_and_expire() {
        let mut c = PeerCache::default();
        c.record_seen(pfx(1), vec![ep(1)], 100);
        c.record_seen(pfx(2), vec![ep(1)], 1000);
        c.mark_saved();
        assert!(!c.forget(pfx(9)));
        assert!(!c.is_dirty());
        assert!(c.forget(pfx(1)));
        assert!(c.is_dirty());
        c.record_seen(pfx(3), vec![ep(1)], 10);
        assert_eq!(c.expire(1100, 500), 1);
        assert!(c.get(&pfx(3)).is_none());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn json_round_trip_and_country() {
        let mut c = PeerCache::default();
        c.record_seen(
            pfx(1),
            vec![ep(1), "[2001:db8::1]:6464".parse().unwrap()],
            5,
        );
        c.record_seen(pfx(2), vec![ep(2)], 6);
        c.record_failure(pfx(2), 7);
        c.set_country(pfx(1), Some("FR".into()));
        let back = PeerCache::from_json(&c.to_json(), DEFAULT_CAPACITY).unwrap();
        assert_eq!(back.entries, c.entries);
        assert!(!back.is_dirty());
        let text = String::from_utf8(c.to_json()).unwrap();
        assert!(text.contains("\"prefix\": \"fd00:0:0:2::/64\""), "{text}");
    }

    #[test]
    fn from_json_rejects_garbage_and_bounds() {
        assert!(PeerCache::from_json(b"", 4).is_err());
        assert!(PeerCache::from_json(b"{\"version\":1", 4).is_err());
        assert!(PeerCache::from_json(b"[1,2,3]", 4).is_err());
        assert!(PeerCache::from_json(b"{\"version\":99,\"peers\":[]}", 4).is_err());
        assert!(
            PeerCache::from_json(
                b"{\"version\":1,\"peers\":[{\"prefix\":\"nope\",\"endpoints\":[],\"last_seen\":1}]}",
                4
            )
            .is_err()
        );
        // Too many entries: the best are kept; no endpoints: dropped; unknown fields ignored.
        let mut big = PeerCache::new(100);
        for i in 0..10 {
            big.record_seen(pfx(i), vec![ep(1)], i as u64);
        }
        let mut v: serde_json::Value = serde_json::from_slice(&big.to_json()).unwrap();
        v["peers"][9]["endpoints"] = serde_json::json!([]);
        v["peers"][0]["future"] = serde_json::json!(true);
        let small = PeerCache::from_json(&serde_json::to_vec(&v).unwrap(), 3).unwrap();
        let kept: Vec<Ipv6Net> = small.iter().map(|(p, _)| *p).collect();
        assert_eq!(kept, vec![pfx(6), pfx(7), pfx(8)]);
    }

    #[test]
    fn load_and_save_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = PeerCache::path(dir.path());
        assert!(path.ends_with("peers.json"));
        // Missing.
        let (c, w) = PeerCache::load(&path, 8);
        assert!(c.is_empty());
        assert!(w.as_ref().is_some_and(CacheLoadError::is_missing), "{w:?}");
        // Save, reload.
        let mut c = PeerCache::new(8);
        c.record_seen(pfx(1), vec![ep(1)], 42);
        c.save(&path).unwrap();
        assert!(!c.is_dirty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (back, w) = PeerCache::load(&path, 8);
        assert!(w.is_none());
        assert_eq!(back.entries, c.entries);
        // No temporary file left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["peers.json".to_string()]);
        // Corrupt.
        std::fs::write(&path, b"{\"version\":1,\"peers\":[{\"pre").unwrap();
        let (c, w) = PeerCache::load(&path, 8);
        assert!(c.is_empty());
        let w = w.unwrap();
        assert!(!w.is_missing());
        assert!(w.to_string().contains("corrupt"), "{w}");
        // Not UTF-8 at all.
        std::fs::write(&path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
        let (c, w) = PeerCache::load(&path, 8);
        assert!(c.is_empty() && matches!(w, Some(CacheLoadError::Corrupt { .. })));
        // A directory where the file should be.
        let (c, w) = PeerCache::load(dir.path(), 8);
        assert!(c.is_empty() && w.is_some());
    }

    proptest! {
        /// Arbitrary bytes never panic the loader.
        #[test]
        fn from_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = PeerCache::from_json(&bytes, 16);
        }

        /// Any sequence of operations: bounded, round-trips through JSON, candidates are
        /// distinct known peers out of backoff, at most n.
        #[test]
        fn operations_keep_the_invariants(
            cap in 1usize..12,
            ops in proptest::collection::vec((0u8..5, 0usize..20, 0u64..10_000), 0..200),
            seed in any::<u64>(),
            n in 0usize..30,
        ) {
            let mut c = PeerCache::new(cap);
            let mut now = 0u64;
            for (op, i, dt) in ops {
                now += dt;
                match op {
                    0 | 1 => c.record_seen(pfx(i), vec![ep(i as u16)], now),
                    2 => c.record_failure(pfx(i), now),
                    3 => c.record_success(pfx(i), now),
                    _ => { c.forget(pfx(i)); }
                }
                prop_assert!(c.len() <= cap);
            }
            let back = PeerCache::from_json(&c.to_json(), cap).unwrap();
            prop_assert_eq!(&back.entries, &c.entries);
            let got = c.candidates(now, n, &mut rng(seed));
            prop_assert!(got.len() <= n);
            let set: std::collections::BTreeSet<_> = got.iter().collect();
            prop_assert_eq!(set.len(), got.len());
            for p in &got {
                prop_assert!(c.get(p).is_some_and(|e| e.available(now)));
            }
            let avail = c.iter().filter(|(_, e)| e.available(now)).count();
            prop_assert_eq!(got.len(), n.min(avail));
        }
    }
}
