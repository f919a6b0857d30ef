//! Sessions and the [`Sealer`] that sets them up (docs/SEALING.md). Sans-IO: `now` is an
//! argument and every random number comes from the seed given to [`Sealer::new`].
//!
//! Sharing for the data path: a [`Session`] is `Sync` and used through an `Arc` — sealing
//! takes the next counter from an atomic, opening locks only that session's replay window
//! for the check-and-set — so the per-packet path needs the [`Sealer`] (handshakes, the
//! session tables) only to look a session up or when a handshake message arrives.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::handshake::{self, CertCheck, Established, Handshake, LocalIdentity, Peer};
use super::replay::ReplayWindow;
use super::wire::{self, DATA_HEADER_LEN, TAG_LEN};
use crate::identity;
use crate::mesh::forward::{IPV6_HEADER, parse_header};
use crate::mesh::tunnels::frame;

/// Limits of sessions and handshakes.
#[derive(Debug, Clone)]
pub struct SealConfig {
    /// A session this old starts a new handshake when it sends (WireGuard's 120 s).
    pub rekey_after: Duration,
    /// A session this old is not used any more, either way.
    pub reject_after: Duration,
    /// A session that sent this many messages starts a new handshake.
    pub rekey_messages: u64,
    /// A session that sent this many messages sends no more.
    pub reject_messages: u64,
    /// A handshake unfinished after this is forgotten.
    pub handshake_timeout: Duration,
    /// Handshakes in progress, both roles: beyond it new ones are refused (counted), so a
    /// hostile member cannot grow this node's memory.
    pub max_pending: usize,
    /// Packets held per far node while its session is set up (beyond: dropped, counted).
    pub queue_per_peer: usize,
    /// Far nodes with packets held.
    pub max_queues: usize,
}

impl Default for SealConfig {
    fn default() -> Self {
        SealConfig {
            rekey_after: Duration::from_secs(120),
            reject_after: Duration::from_secs(180),
            rekey_messages: 1 << 60,
            reject_messages: u64::MAX - (1 << 13),
            handshake_timeout: Duration::from_secs(5),
            max_pending: 64,
            queue_per_peer: 8,
            max_queues: 64,
        }
    }
}

/// What sealing counted (shared with the data path's tasks; read by `mesh status`).
#[derive(Debug, Default)]
pub struct SealCounters {
    /// Data frames sealed and handed out to send.
    pub sealed_tx: AtomicU64,
    /// Data frames addressed to this node.
    pub sealed_rx: AtomicU64,
    /// Data frames opened and delivered.
    pub opened: AtomicU64,
    /// Data frames whose tag did not verify (tampered, or not for that session).
    pub auth_failures: AtomicU64,
    /// Data frames whose counter was seen or is below the window.
    pub replays: AtomicU64,
    /// Opened packets whose inner source is outside the sender's certificate prefix.
    pub spoofed_sources: AtomicU64,
    /// Data frames for an unknown session index.
    pub unknown_session: AtomicU64,
    /// Packets dropped for want of a session (queue full, handshake refused).
    pub no_session_drops: AtomicU64,
    /// Handshakes started as initiator.
    pub handshakes_started: AtomicU64,
    /// Handshakes that completed (both roles).
    pub handshakes_completed: AtomicU64,
    /// Handshake messages refused (bad message, certificate, signature, prefix).
    pub handshake_failures: AtomicU64,
    /// Handshakes refused because [`SealConfig::max_pending`] were in progress.
    pub pending_full: AtomicU64,
    /// Sessions ended by a revocation or an expiry of the peer's certificate.
    pub sessions_revoked: AtomicU64,
    /// First messages ignored because this node's own, younger initiation towards that
    /// node wins the tie-break (both ends initiated at once).
    pub handshake_collisions: AtomicU64,
    /// Handshakes started because a data frame for this node named an unknown session
    /// (the peer restarted, or the session here expired).
    pub unknown_session_handshakes: AtomicU64,
}

/// A plain copy of [`SealCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealStats {
    pub sealed_tx: u64,
    pub sealed_rx: u64,
    pub opened: u64,
    pub auth_failures: u64,
    pub replays: u64,
    pub spoofed_sources: u64,
    pub unknown_session: u64,
    pub no_session_drops: u64,
    pub handshakes_started: u64,
    pub handshakes_completed: u64,
    pub handshake_failures: u64,
    pub pending_full: u64,
    pub sessions_revoked: u64,
    pub handshake_collisions: u64,
    pub unknown_session_handshakes: u64,
}

impl SealCounters {
    /// A snapshot.
    pub fn stats(&self) -> SealStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SealStats {
            sealed_tx: g(&self.sealed_tx),
            sealed_rx: g(&self.sealed_rx),
            opened: g(&self.opened),
            auth_failures: g(&self.auth_failures),
            replays: g(&self.replays),
            spoofed_sources: g(&self.spoofed_sources),
            unknown_session: g(&self.unknown_session),
            no_session_drops: g(&self.no_session_drops),
            handshakes_started: g(&self.handshakes_started),
            handshakes_completed: g(&self.handshakes_completed),
            handshake_failures: g(&self.handshake_failures),
            pending_full: g(&self.pending_full),
            sessions_revoked: g(&self.sessions_revoked),
            handshake_collisions: g(&self.handshake_collisions),
            unknown_session_handshakes: g(&self.unknown_session_handshakes),
        }
    }
}

/// A simultaneous initiation younger than this wins the tie-break at the node with the lower
/// address (it ignores the other's message 1).
pub const COLLISION_WINDOW: Duration = Duration::from_secs(1);
/// An initiation unanswered for this long is started again when a packet waits (a lost
/// message 1 or 2 costs this, not the whole handshake timeout); each further attempt waits
/// twice as long, up to [`HANDSHAKE_RETRY_MAX`]. The attempt before stays valid (its
/// message 2 may merely be late on a slow path), so a short first interval cannot starve a
/// handshake whose round trip is longer.
pub const HANDSHAKE_RETRY: Duration = Duration::from_millis(250);
/// The longest interval between two initiations towards one node.
pub const HANDSHAKE_RETRY_MAX: Duration = Duration::from_secs(1);

/// How long attempt `attempt` (0 for the first) waits for its answer before the next.
pub fn retry_after(attempt: u32) -> Duration {
    HANDSHAKE_RETRY
        .saturating_mul(1u32 << attempt.min(8))
        .min(HANDSHAKE_RETRY_MAX)
}
/// A data frame for an unknown session starts at most one handshake towards its source per
/// this interval.
pub const UNKNOWN_SESSION_INTERVAL: Duration = Duration::from_secs(1);

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Why a packet was not sealed or a frame not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not an IPv6 packet / not a sealed frame.
    #[error("malformed")]
    Malformed,
    /// The session sent all it may; a new one is being set up.
    #[error("session used up")]
    Exhausted,
    /// The tag did not verify.
    #[error("authentication failed")]
    AuthFailed,
    /// Counter seen before or too old.
    #[error("replayed")]
    Replay,
    /// Inner source outside the sender's prefix.
    #[error("spoofed source")]
    SpoofedSource,
    /// No session with that index.
    #[error("unknown session")]
    UnknownSession,
    /// No session and none can be set up now (queue or handshake table full).
    #[error("no session")]
    NoSession,
    /// A handshake message was refused.
    #[error("handshake refused")]
    Handshake,
    /// Not addressed to this node.
    #[error("not for this node")]
    NotForUs,
}

/// One direction pair of keys with a far node.
pub struct Session {
    /// The far node.
    pub peer: Peer,
    /// Our index (the receiver index of frames to us).
    pub local_index: u32,
    /// Its index.
    pub remote_index: u32,
    send: LessSafeKey,
    recv: LessSafeKey,
    next_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
    born: Instant,
    /// Subnet grants `(prefix, node prefix)`: a source in `prefix` is that node's too.
    subnets: Subnets,
}

/// The subnet grants of the parameters, `(prefix, node prefix)` (issue 15), shared by the
/// sealer and its sessions: packets from a LAN behind a node come sealed by that node.
pub type Subnets = Arc<arc_swap::ArcSwap<Vec<(Ipv6Net, Ipv6Net)>>>;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("local_index", &self.local_index)
            .finish_non_exhaustive()
    }
}

fn nonce(counter: u64) -> Nonce {
    // Noise's ChaChaPoly nonce: 32 zero bits, then the counter little-endian.
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn key(k: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is what CHACHA20_POLY1305 takes: this cannot fail.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).unwrap_or_else(|_| unreachable!()))
}

/// Where [`Session::open_in_place`] puts the opened packet's type byte: its payload stays at
/// [`DATA_HEADER_LEN`] + 8, so the 1 + 40 bytes in front of it start here.
pub const OPENED_START: usize =
    DATA_HEADER_LEN + wire::CLEAR_ADDRS.start - frame::HEADER_LEN - IPV6_HEADER;

impl Session {
    fn new(e: Established, local_index: u32, now: Instant, subnets: Subnets) -> Session {
        Session {
            subnets,
            peer: e.peer,
            local_index,
            remote_index: e.remote_index,
            send: key(&e.send),
            recv: key(&e.recv),
            next_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::default()),
            born: now,
        }
    }

    /// Seals the IPv6 packet `pkt` into `out` (a whole datagram, type byte first).
    pub fn seal(&self, pkt: &[u8], limit: u64, out: &mut Vec<u8>) -> Result<(), SealError> {
        let h = parse_header(pkt).ok_or(SealError::Malformed)?;
        let counter = self.next_counter.fetch_add(1, Ordering::Relaxed);
        if counter >= limit {
            return Err(SealError::Exhausted);
        }
        wire::emit_data_header(h.dst, h.src, self.remote_index, counter, out);
        out.reserve(pkt.len() + TAG_LEN);
        out.extend_from_slice(&pkt[..wire::CLEAR_ADDRS.start]);
        out.extend_from_slice(&pkt[IPV6_HEADER..]);
        let aad = wire::data_aad(out);
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), &mut out[DATA_HEADER_LEN..])
            .map_err(|_| SealError::Malformed)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens a data frame for this session: the inner packet, its source checked against
    /// the peer's prefix. Allocates; the data path uses [`Session::open_in_place`].
    pub fn open(&self, d: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut buf = d.to_vec();
        let r = self.open_in_place(&mut buf)?;
        Ok(buf
            .get(r.start + frame::HEADER_LEN..r.end)
            .ok_or(SealError::Malformed)?
            .to_vec())
    }

    /// Opens the data frame `d` in its own buffer, with no allocation: on success
    /// `d[range]` is a frame type byte (to be set by the caller) followed by the inner IPv6
    /// packet, its source checked against the peer's prefix. The inner packet's header is
    /// put back together in front of its payload, which stays where it was: the 8 header
    /// bytes that travelled sealed and the clear addresses move, nothing else (see
    /// [`OPENED_START`]). On error `d` may hold a partly decrypted frame: drop it.
    pub fn open_in_place(&self, d: &mut [u8]) -> Result<std::ops::Range<usize>, SealError> {
        let f = wire::parse_data(d).map_err(|_| SealError::Malformed)?;
        let (src, dst, counter) = (f.src, f.dst, f.counter);
        if !self.window().check(counter) {
            return Err(SealError::Replay);
        }
        let aad = wire::data_aad(d);
        let sealed = d.get_mut(DATA_HEADER_LEN..).ok_or(SealError::Malformed)?;
        let n = self
            .recv
            .open_in_place(nonce(counter), Aad::from(aad), sealed)
            .map_err(|_| SealError::AuthFailed)?
            .len();
        // The clear source is authenticated (AAD) now: it must be the peer's (its node
        // prefix, or a subnet the parameters grant it).
        if !self.peer.prefix.contains(&src)
            && !self
                .subnets
                .load()
                .iter()
                .any(|(p, n)| *n == self.peer.prefix && p.contains(&src))
        {
            return Err(SealError::SpoofedSource);
        }
        if !self.window().accept(counter) {
            return Err(SealError::Replay);
        }
        let head = wire::CLEAR_ADDRS.start;
        if n < head {
            return Err(SealError::Malformed);
        }
        // [header | 8 sealed header bytes | payload | tag] becomes
        // [.. | type | 8 header bytes | src | dst | payload] with the payload in place.
        let end = DATA_HEADER_LEN + n;
        let start = OPENED_START;
        d.copy_within(
            DATA_HEADER_LEN..DATA_HEADER_LEN + head,
            start + frame::HEADER_LEN,
        );
        let at = start + frame::HEADER_LEN + head;
        d[at..at + 16].copy_from_slice(&src.octets());
        d[at + 16..at + 32].copy_from_slice(&dst.octets());
        let pkt = d
            .get(start + frame::HEADER_LEN..end)
            .ok_or(SealError::Malformed)?;
        parse_header(pkt).ok_or(SealError::Malformed)?;
        Ok(start..end)
    }

    fn window(&self) -> std::sync::MutexGuard<'_, ReplayWindow> {
        // A panic while holding it cannot leave the window inconsistent (plain bit sets).
        self.replay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages sealed so far (the next counter).
    pub fn sent(&self) -> u64 {
        self.next_counter.load(Ordering::Relaxed)
    }

    /// How long ago the handshake that made it completed.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.born)
    }

    /// Opens `d` as [`Session::open`] does and counts the outcome in `counters` (what the
    /// data path does without the [`Sealer`]'s lock).
    pub fn open_counted(&self, d: &[u8], counters: &SealCounters) -> Result<Vec<u8>, SealError> {
        count_open(self.open(d), counters)
    }

    /// [`Session::open_in_place`], the outcome counted in `counters`.
    pub fn open_in_place_counted(
        &self,
        d: &mut [u8],
        counters: &SealCounters,
    ) -> Result<std::ops::Range<usize>, SealError> {
        count_open(self.open_in_place(d), counters)
    }
}

fn count_open<T>(r: Result<T, SealError>, counters: &SealCounters) -> Result<T, SealError> {
    match &r {
        Ok(_) => inc(&counters.opened),
        Err(e) => inc(match e {
            SealError::Replay => &counters.replays,
            SealError::SpoofedSource => &counters.spoofed_sources,
            _ => &counters.auth_failures,
        }),
    }
    r
}

/// The sessions the data path uses without the [`Sealer`]'s lock (published in an
/// `ArcSwap` after every change, see docs/SEALING.md "Sharing on the data path").
#[derive(Debug, Default)]
pub struct Published {
    /// The session to send with, by far node prefix.
    pub by_prefix: HashMap<Ipv6Net, Arc<Session>>,
    /// Every established session, by our index.
    pub by_index: HashMap<u32, Arc<Session>>,
}

struct Pending {
    hs: Handshake,
    started: Instant,
    /// The far node's address (the handshake's destination or source).
    peer_addr: Ipv6Addr,
    initiator: bool,
}

/// This node's initiation towards one far node: the attempt in force and the one before
/// it (still answerable).
#[derive(Debug, Clone, Copy)]
struct Initiation {
    current: u32,
    previous: Option<u32>,
    /// How many attempts came before the current one.
    attempt: u32,
}

/// What [`Sealer::receive`] produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// An opened packet for this node's TUN.
    pub deliver: Option<Vec<u8>>,
    /// Datagrams to route by their clear destination (handshake answers, queued packets).
    pub send: Vec<Vec<u8>>,
}

/// Handshakes and sessions of one node, per far node.
pub struct Sealer {
    prefix: Ipv6Net,
    addr: Ipv6Addr,
    id: LocalIdentity,
    cfg: SealConfig,
    rng: ChaCha20Rng,
    pending: HashMap<u32, Pending>,
    /// Established sessions by our index.
    sessions: HashMap<u32, Arc<Session>>,
    /// The session to send with, by far node prefix.
    current: HashMap<Ipv6Net, Arc<Session>>,
    /// Our handshake in progress, by far node address.
    initiating: HashMap<Ipv6Addr, Initiation>,
    /// Packets waiting for a session, by far node address.
    queues: HashMap<Ipv6Addr, VecDeque<Vec<u8>>>,
    /// When a frame for an unknown session last started a handshake, by its source.
    unknown_answered: HashMap<Ipv6Addr, Instant>,
    /// The session tables changed since [`Sealer::take_changed`].
    changed: bool,
    counters: Arc<SealCounters>,
    subnets: Subnets,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("prefix", &self.prefix)
            .field("sessions", &self.sessions.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for the node of `prefix`, presenting `id`; randomness from `seed`.
    pub fn new(prefix: Ipv6Net, id: LocalIdentity, cfg: SealConfig, seed: [u8; 32]) -> Sealer {
        Sealer {
            prefix,
            addr: identity::node_address(&prefix),
            id,
            cfg,
            rng: ChaCha20Rng::from_seed(seed),
            pending: HashMap::new(),
            sessions: HashMap::new(),
            current: HashMap::new(),
            initiating: HashMap::new(),
            queues: HashMap::new(),
            unknown_answered: HashMap::new(),
            changed: false,
            counters: Arc::default(),
            subnets: Arc::default(),
        }
    }

    /// The subnet grants of the parameters in force (sessions see them at once).
    pub fn set_subnets(&mut self, granted: Vec<(Ipv6Net, Ipv6Net)>) {
        self.subnets.store(Arc::new(granted));
    }

    /// The limits in force.
    pub fn config(&self) -> &SealConfig {
        &self.cfg
    }

    /// Presents `id` from now on (a renewed certificate); sessions stay.
    pub fn set_identity(&mut self, id: LocalIdentity) {
        self.id = id;
    }

    /// True once after the session tables changed (the caller republishes [`Published`]).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The sessions, for the data path's lock-free lookups.
    pub fn published(&self) -> Published {
        Published {
            by_prefix: self.current.clone(),
            by_index: self.sessions.clone(),
        }
    }

    /// The established session of our index `index`.
    pub fn session_by_index(&self, index: u32) -> Option<Arc<Session>> {
        self.sessions.get(&index).cloned()
    }

    /// A data frame for this node named a session it does not have: starts a handshake
    /// towards its clear source `src` (of node prefix `peer`), at most once per
    /// [`UNKNOWN_SESSION_INTERVAL`] per source; message 1, if one leaves.
    pub fn unknown_session(
        &mut self,
        src: Ipv6Addr,
        peer: Ipv6Net,
        now: Instant,
    ) -> Option<Vec<u8>> {
        if !peer.contains(&src) || peer.contains(&self.addr) {
            return None;
        }
        if self
            .unknown_answered
            .get(&src)
            .is_some_and(|t| now.saturating_duration_since(*t) < UNKNOWN_SESSION_INTERVAL)
        {
            return None;
        }
        if self.unknown_answered.len() >= 4 * self.cfg.max_pending {
            self.unknown_answered
                .retain(|_, t| now.saturating_duration_since(*t) < UNKNOWN_SESSION_INTERVAL);
            if self.unknown_answered.len() >= 4 * self.cfg.max_pending {
                return None;
            }
        }
        self.unknown_answered.insert(src, now);
        let m = self.initiate(peer, now).ok().flatten()?;
        inc(&self.counters.unknown_session_handshakes);
        Some(m)
    }

    /// The counters (shared).
    pub fn counters(&self) -> &Arc<SealCounters> {
        &self.counters
    }

    /// The session to send to the far node of `peer` with, if it is usable at `now`.
    pub fn session_for(&self, peer: &Ipv6Net, now: Instant) -> Option<Arc<Session>> {
        self.current
            .get(peer)
            .filter(|s| now.saturating_duration_since(s.born) < self.cfg.reject_after)
            .cloned()
    }

    /// Established sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Seals `pkt` for the far node of prefix `peer`: the datagrams to send (the sealed
    /// packet, and a handshake message when a session is due). Without a session the packet
    /// waits (bounded) while one is set up.
    pub fn seal(
        &mut self,
        peer: Ipv6Net,
        pkt: &[u8],
        now: Instant,
    ) -> Result<Vec<Vec<u8>>, SealError> {
        let mut out = Vec::new();
        if let Some(s) = self.session_for(&peer, now) {
            let due = now.saturating_duration_since(s.born) >= self.cfg.rekey_after
                || s.sent() >= self.cfg.rekey_messages;
            let mut d = Vec::new();
            match s.seal(pkt, self.cfg.reject_messages, &mut d) {
                Ok(()) => {
                    inc(&self.counters.sealed_tx);
                    out.push(d);
                    // A refused rekey is counted; the packet has left all the same.
                    if due && let Ok(Some(m)) = self.initiate(peer, now) {
                        out.push(m);
                    }
                    return Ok(out);
                }
                Err(SealError::Exhausted) => {}
                Err(e) => return Err(e),
            }
        }
        parse_header(pkt).ok_or(SealError::Malformed)?;
        let dst = identity::node_address(&peer);
        if !self.initiating.contains_key(&dst) && self.pending.len() >= self.cfg.max_pending {
            inc(&self.counters.pending_full);
            inc(&self.counters.no_session_drops);
            return Err(SealError::NoSession);
        }
        if !self.queues.contains_key(&dst) && self.queues.len() >= self.cfg.max_queues {
            inc(&self.counters.no_session_drops);
            return Err(SealError::NoSession);
        }
        let q = self.queues.entry(dst).or_default();
        if q.len() >= self.cfg.queue_per_peer {
            q.pop_front();
            inc(&self.counters.no_session_drops);
        }
        q.push_back(pkt.to_vec());
        out.extend(self.initiate(peer, now)?);
        Ok(out)
    }

    /// Starts a handshake with `peer` unless one is in progress: message 1, if any.
    fn initiate(&mut self, peer: Ipv6Net, now: Instant) -> Result<Option<Vec<u8>>, SealError> {
        let dst = identity::node_address(&peer);
        let mut attempt = 0;
        let mut previous = None;
        if let Some(&ini) = self.initiating.get(&dst) {
            let young = self.pending.get(&ini.current).is_some_and(|p| {
                now.saturating_duration_since(p.started) < retry_after(ini.attempt)
            });
            if young {
                return Ok(None);
            }
            // No answer in time (message 1 or 2 lost, e.g. on a route that was changing):
            // start again rather than wait for the timeout. The attempt just superseded may
            // still be answered; the one before it goes.
            if let Some(old) = ini.previous {
                self.pending.remove(&old);
            }
            attempt = ini.attempt.saturating_add(1);
            previous = self
                .pending
                .contains_key(&ini.current)
                .then_some(ini.current);
        }
        if self.pending.len() >= self.cfg.max_pending {
            inc(&self.counters.pending_full);
            return Err(SealError::NoSession);
        }
        let index = self.fresh_index();
        let seed = self.seed();
        let (hs, msg) = handshake::initiate(&self.id, self.addr, dst, index, seed)
            .map_err(|_| SealError::Handshake)?;
        self.pending.insert(
            index,
            Pending {
                hs,
                started: now,
                peer_addr: dst,
                initiator: true,
            },
        );
        self.initiating.insert(
            dst,
            Initiation {
                current: index,
                previous,
                attempt,
            },
        );
        inc(&self.counters.handshakes_started);
        let mut d = Vec::new();
        wire::emit_handshake(dst, self.addr, wire::MSG1, 0, &msg, &mut d);
        Ok(Some(d))
    }

    /// A sealed frame (data or handshake) whose clear destination is in this node's prefix.
    pub fn receive(
        &mut self,
        d: &[u8],
        certs: &mut dyn CertCheck,
        now: Instant,
    ) -> Result<Output, SealError> {
        let (dst, _) = wire::route(d).map_err(|_| SealError::Malformed)?;
        if !self.prefix.contains(&dst) {
            return Err(SealError::NotForUs);
        }
        match d.first() {
            Some(&crate::mesh::tunnels::frame::TYPE_SEALED) => {
                inc(&self.counters.sealed_rx);
                let f = wire::parse_data(d).map_err(|_| SealError::Malformed)?;
                let Some(s) = self.sessions.get(&f.receiver) else {
                    inc(&self.counters.unknown_session);
                    return Err(SealError::UnknownSession);
                };
                if now.saturating_duration_since(s.born) >= self.cfg.reject_after {
                    inc(&self.counters.unknown_session);
                    return Err(SealError::UnknownSession);
                }
                let p = s.open_counted(d, &self.counters)?;
                Ok(Output {
                    deliver: Some(p),
                    send: Vec::new(),
                })
            }
            _ => self.receive_handshake(d, certs, now).inspect_err(|_| {
                inc(&self.counters.handshake_failures);
            }),
        }
    }

    fn receive_handshake(
        &mut self,
        d: &[u8],
        certs: &mut dyn CertCheck,
        now: Instant,
    ) -> Result<Output, SealError> {
        let f = wire::parse_handshake(d).map_err(|_| SealError::Malformed)?;
        let mut out = Output::default();
        match f.msg {
            wire::MSG1 => {
                // Both ends initiated at once: the lower address keeps its own initiation
                // while it is young, the higher one answers the lower's.
                if self.addr < f.src
                    && let Some(mine) = self.initiating.get(&f.src)
                    && self.pending.get(&mine.current).is_some_and(|p| {
                        now.saturating_duration_since(p.started) < COLLISION_WINDOW
                    })
                {
                    inc(&self.counters.handshake_collisions);
                    return Ok(out);
                }
                if self.pending.len() >= self.cfg.max_pending {
                    inc(&self.counters.pending_full);
                    return Err(SealError::NoSession);
                }
                let index = self.fresh_index();
                let seed = self.seed();
                let (hs, msg) = handshake::respond(&self.id, f.dst, f.src, f.noise, index, seed)
                    .map_err(|_| SealError::Handshake)?;
                let remote = hs.remote_index().unwrap_or(0);
                self.pending.insert(
                    index,
                    Pending {
                        hs,
                        started: now,
                        peer_addr: f.src,
                        initiator: false,
                    },
                );
                let mut m = Vec::new();
                wire::emit_handshake(f.src, f.dst, wire::MSG2, remote, &msg, &mut m);
                out.send.push(m);
            }
            wire::MSG2 => {
                let p = self.take_pending(f.receiver, true, f.src)?;
                let (est, msg3) =
                    p.hs.finish_initiator(&self.id, f.noise, certs)
                        .map_err(|_| SealError::Handshake)?;
                let s = self.install(est, f.receiver, now);
                let mut m = Vec::new();
                wire::emit_handshake(
                    p.peer_addr,
                    self.addr,
                    wire::MSG3,
                    s.remote_index,
                    &msg3,
                    &mut m,
                );
                out.send.push(m);
                self.flush(&s, p.peer_addr, &mut out);
            }
            _ => {
                let p = self.take_pending(f.receiver, false, f.src)?;
                let est =
                    p.hs.finish_responder(f.noise, certs)
                        .map_err(|_| SealError::Handshake)?;
                let s = self.install(est, f.receiver, now);
                // The responder had packets waiting too (its own initiation lost the
                // tie-break, or is still under way): they leave on this session.
                self.flush(&s, p.peer_addr, &mut out);
            }
        }
        Ok(out)
    }

    /// What waited for a session with `peer_addr` leaves now, sealed with `s`.
    fn flush(&mut self, s: &Session, peer_addr: Ipv6Addr, out: &mut Output) {
        if let Some(q) = self.queues.remove(&peer_addr) {
            for pkt in q {
                let mut d = Vec::new();
                if s.seal(&pkt, self.cfg.reject_messages, &mut d).is_ok() {
                    inc(&self.counters.sealed_tx);
                    out.send.push(d);
                }
            }
        }
    }

    fn take_pending(
        &mut self,
        index: u32,
        initiator: bool,
        src: Ipv6Addr,
    ) -> Result<Pending, SealError> {
        match self.pending.get(&index) {
            Some(p) if p.initiator == initiator && p.peer_addr == src => {}
            _ => return Err(SealError::Handshake),
        }
        let p = self.pending.remove(&index).ok_or(SealError::Handshake)?;
        if initiator && let Some(ini) = self.initiating.remove(&p.peer_addr) {
            // One answered attempt ends the initiation: the other is not needed.
            for i in [Some(ini.current), ini.previous].into_iter().flatten() {
                self.pending.remove(&i);
            }
        }
        Ok(p)
    }

    fn install(&mut self, est: Established, index: u32, now: Instant) -> Arc<Session> {
        let s = Arc::new(Session::new(est, index, now, self.subnets.clone()));
        inc(&self.counters.handshakes_completed);
        self.changed = true;
        // Keep the current and the previous session of a peer (in-flight packets of the
        // old keys still open); older ones go.
        let prefix = s.peer.prefix;
        let previous = self.current.insert(prefix, s.clone());
        let keep = previous.map(|p| p.local_index);
        self.sessions
            .retain(|i, o| o.peer.prefix != prefix || Some(*i) == keep);
        self.sessions.insert(index, s.clone());
        s
    }

    /// Forgets handshakes past their timeout and sessions past their lifetime.
    pub fn tick(&mut self, now: Instant) {
        let (hs_timeout, reject) = (self.cfg.handshake_timeout, self.cfg.reject_after);
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.started) < hs_timeout);
        let pending = &self.pending;
        let initiating = &mut self.initiating;
        initiating.retain(|_, ini| pending.contains_key(&ini.current));
        for ini in initiating.values_mut() {
            if ini.previous.is_some_and(|i| !pending.contains_key(&i)) {
                ini.previous = None;
            }
        }
        let queues = &mut self.queues;
        queues.retain(|a, _| initiating.contains_key(a));
        self.unknown_answered
            .retain(|_, t| now.saturating_duration_since(*t) < UNKNOWN_SESSION_INTERVAL);
        let before = self.sessions.len();
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.born) < reject);
        let sessions = &self.sessions;
        self.current
            .retain(|_, s| sessions.contains_key(&s.local_index));
        self.changed |= self.sessions.len() != before;
    }

    /// Ends at once the sessions whose peer certificate is revoked or expired at `unix`;
    /// returns how many.
    pub fn end_untrusted(&mut self, revoked: &HashSet<String>, unix: i64) -> usize {
        let before = self.sessions.len();
        self.sessions
            .retain(|_, s| !revoked.contains(&s.peer.serial) && s.peer.not_after > unix);
        let sessions = &self.sessions;
        self.current
            .retain(|_, s| sessions.contains_key(&s.local_index));
        let n = before - self.sessions.len();
        self.changed |= n > 0;
        self.counters
            .sessions_revoked
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    fn fresh_index(&mut self) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if i != 0 && !self.pending.contains_key(&i) && !self.sessions.contains_key(&i) {
                return i;
            }
        }
    }

    fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s
    }
}
