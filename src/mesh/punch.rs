//! Hole punching coordinated through the mesh (issue 14), sans-IO: [`Puncher`].
//!
//! Two nodes behind NATs cannot dial each other, but they can already talk through the mesh:
//! a datagram from one node's mesh address to the other's travels sealed end to end through
//! the relays (docs/SEALING.md), and the receiver's data path has checked that its inner
//! source lies in the sender's certificate prefix. That is the carrier of a punch signal: a
//! UDP datagram from `[prefix::1]:`[`SIGNAL_PORT`] to `[peer::1]:`[`SIGNAL_PORT`] through the
//! node's own TUN. The node that has just failed to dial a peer it can route to sends it a
//! [`Signal`] `Request` with its candidates and a start offset; the peer answers with its own
//! candidates and schedules its handshakes for the receipt time plus the offset; the
//! requester, when the answer arrives, schedules its handshakes for the same moment (its
//! send time + the offset + half the round trip it measured). At that moment both send QUIC
//! handshakes from their tunnel socket (the endpoint they use for everything, so an
//! endpoint-independent NAT maps them to the address their peer was told) to every
//! candidate of the other: each side's outgoing Initial opens its NAT for the other's.
//!
//! Budgets (what another member can make this node do): a request is answered at most once
//! per [`ANSWER_INTERVAL`] per source and [`ANSWER_BURST`] per minute in all; the excess
//! is dropped and counted. A punch sends handshakes to at most [`MAX_PUNCH_ADDRS`] addresses
//! (the core's per-address dial limit applies on top). A failed punch backs off per peer,
//! [`BACKOFF_FIRST`] doubling up to [`BACKOFF_MAX`]; at most [`MAX_RETRY_PEERS`] peers are
//! retried.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::mesh::babel::time::Time;
use crate::registry_api::usable_endpoint;

/// The UDP port of punch signals on every node's mesh address.
pub const SIGNAL_PORT: u16 = 6463;
/// How long after the request's receipt both sides start their handshakes.
pub const START_OFFSET: Duration = Duration::from_millis(1000);
/// A request not answered in this long has failed.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A punch whose handshakes have not come to anything in this long has failed (the shell
/// reports the end of its handshakes sooner; this is the backstop).
pub const PUNCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Wait after the first failed punch for a pair; doubled after every further failure.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(15);
/// The longest wait between punches for a pair.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A source's requests are answered at most this often.
pub const ANSWER_INTERVAL: Duration = Duration::from_secs(5);
/// Requests answered per minute, all sources together.
pub const ANSWER_BURST: u32 = 20;
/// Addresses one punch sends handshakes to at most.
pub const MAX_PUNCH_ADDRS: usize = 8;
/// Peers kept for retries at most (the most-failed is dropped first).
pub const MAX_RETRY_PEERS: usize = 32;
/// Sources whose last answer is remembered (older entries go first).
pub const MAX_SOURCES: usize = 256;
/// The largest signal taken (a request with 8 IPv6 candidates is ≈ 450 bytes).
pub const MAX_SIGNAL_BYTES: usize = 1200;
/// The largest start offset taken from a request.
pub const MAX_START_OFFSET: Duration = Duration::from_secs(5);

/// Signal kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// "Let us punch: here are my candidates; start in `start_in_ms`."
    Request,
    /// "Agreed: here are mine."
    Answer,
}

/// One punch signal (JSON, version 1; readers ignore unknown fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub v: u8,
    pub kind: Kind,
    /// Chosen by the requester; the answer repeats it.
    pub id: u64,
    /// The sender's candidates, best first.
    pub candidates: Vec<SocketAddr>,
    /// Request: how long after its receipt the handshakes start.
    #[serde(default)]
    pub start_in_ms: u32,
}

impl Signal {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for anything too long, malformed or of another version.
    pub fn decode(bytes: &[u8]) -> Option<Signal> {
        if bytes.len() > MAX_SIGNAL_BYTES {
            return None;
        }
        serde_json::from_slice::<Signal>(bytes)
            .ok()
            .filter(|s| s.v == 1)
    }
}

/// What the core must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `signal` to node `to` through the mesh.
    Send { to: Ipv6Net, signal: Signal },
    /// Send handshakes to `peer` at `addrs`, all at once, from the tunnel socket.
    Punch {
        peer: Ipv6Net,
        addrs: Vec<SocketAddr>,
    },
}

/// Why a signal was not taken (each a counter in the core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    RateLimited,
    Unexpected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// We asked; no answer yet.
    Requested { sent: Time },
    /// Handshakes start at `at`.
    Scheduled { at: Time, addrs: Vec<SocketAddr> },
    /// Handshakes sent at `since`.
    Punching { since: Time },
}

#[derive(Debug, Clone)]
struct Attempt {
    id: u64,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    failures: u32,
    next: Time,
}

/// Counters of the puncher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PunchCounters {
    pub requests_sent: u64,
    pub requests_answered: u64,
    pub punches: u64,
    pub punched: u64,
    pub failed: u64,
    pub refused_rate: u64,
    pub refused_malformed: u64,
    pub refused_unexpected: u64,
}

/// The punching schedule of one node.
#[derive(Debug)]
pub struct Puncher {
    next_id: u64,
    attempts: BTreeMap<Ipv6Net, Attempt>,
    retry: BTreeMap<Ipv6Net, Retry>,
    answered: BTreeMap<Ipv6Net, Time>,
    /// Answers in the current minute, and when it started.
    window: (Time, u32),
    steps: VecDeque<Step>,
    pub counters: PunchCounters,
}

/// The order handshakes go out in: as the peer announced them (best first), unusable and
/// repeated addresses left out, at most [`MAX_PUNCH_ADDRS`].
pub fn punch_order(candidates: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in candidates {
        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
        if usable_endpoint(&a, false) && !out.contains(&a) {
            out.push(a);
        }
        if out.len() == MAX_PUNCH_ADDRS {
            break;
        }
    }
    out
}

/// The back-off after `failures` failed punches.
pub fn backoff(failures: u32) -> Duration {
    let n = failures.saturating_sub(1).min(16);
    (BACKOFF_FIRST * (1u32 << n)).min(BACKOFF_MAX)
}

impl Puncher {
    /// `seed`: the first request id (ids need not be secret: the signal is authenticated).
    pub fn new(seed: u64) -> Puncher {
        Puncher {
            next_id: seed,
            attempts: BTreeMap::new(),
            retry: BTreeMap::new(),
            answered: BTreeMap::new(),
            window: (Time::ZERO, 0),
            steps: VecDeque::new(),
            counters: PunchCounters::default(),
        }
    }

    /// The next step for the core.
    pub fn poll_step(&mut self) -> Option<Step> {
        self.steps.pop_front()
    }

    /// An attempt with `peer` is under way.
    pub fn active(&self, peer: &Ipv6Net) -> bool {
        self.attempts.contains_key(peer)
    }

    /// When `peer` may be punched again (`None`: now).
    pub fn backed_off_until(&self, peer: &Ipv6Net) -> Option<Time> {
        self.retry.get(peer).map(|r| r.next)
    }

    /// A plain dial of `peer`, which the mesh routes, failed (or a retry is due): ask it to
    /// punch, unless an attempt is under way or the pair is backing off. `mine`: this
    /// node's candidates. Returns whether a request went out.
    pub fn start(&mut self, now: Time, peer: Ipv6Net, mine: &[SocketAddr]) -> bool {
        if self.attempts.contains_key(&peer) || self.retry.get(&peer).is_some_and(|r| r.next > now)
        {
            return false;
        }
        if mine.is_empty() {
            return false;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.attempts.insert(
            peer,
            Attempt {
                id,
                phase: Phase::Requested { sent: now },
            },
        );
        self.counters.requests_sent += 1;
        self.steps.push_back(Step::Send {
            to: peer,
            signal: Signal {
                v: 1,
                kind: Kind::Request,
                id,
                candidates: mine.to_vec(),
                start_in_ms: u32::try_from(START_OFFSET.as_millis()).unwrap_or(u32::MAX),
            },
        });
        true
    }

    /// A signal from node `from` (authenticated by the mesh: sealed, its source checked).
    pub fn on_signal(
        &mut self,
        now: Time,
        from: Ipv6Net,
        bytes: &[u8],
        mine: &[SocketAddr],
    ) -> Result<(), Refused> {
        let Some(s) = Signal::decode(bytes) else {
            self.counters.refused_malformed += 1;
            return Err(Refused::Malformed);
        };
        match s.kind {
            Kind::Request => self.on_request(now, from, s, mine),
            Kind::Answer => self.on_answer(now, from, s),
        }
    }

    fn on_request(
        &mut self,
        now: Time,
        from: Ipv6Net,
        s: Signal,
        mine: &[SocketAddr],
    ) -> Result<(), Refused> {
        if self
            .answered
            .get(&from)
            .is_some_and(|t| now.saturating_since(*t) < ANSWER_INTERVAL)
        {
            self.counters.refused_rate += 1;
            return Err(Refused::RateLimited);
        }
        if now.saturating_since(self.window.0) >= Duration::from_secs(60) {
            self.window = (now, 0);
        }
        if self.window.1 >= ANSWER_BURST {
            self.counters.refused_rate += 1;
            return Err(Refused::RateLimited);
        }
        let addrs = punch_order(&s.candidates);
        if addrs.is_empty() || mine.is_empty() {
            self.counters.refused_malformed += 1;
            return Err(Refused::Malformed);
        }
        self.window.1 += 1;
        if self.answered.len() >= MAX_SOURCES
            && let Some(oldest) = self
                .answered
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(p, _)| *p)
        {
            self.answered.remove(&oldest);
        }
        self.answered.insert(from, now);
        self.counters.requests_answered += 1;
        let offset = Duration::from_millis(u64::from(s.start_in_ms)).min(MAX_START_OFFSET);
        // Both asked at once: the peer's request wins here, ours there; both sides then
        // punch at their receipt + offset, which is the same moment give or take half a
        // round trip.
        self.attempts.insert(
            from,
            Attempt {
                id: s.id,
                phase: Phase::Scheduled {
                    at: now + offset,
                    addrs,
                },
            },
        );
        self.steps.push_back(Step::Send {
            to: from,
            signal: Signal {
                v: 1,
                kind: Kind::Answer,
                id: s.id,
                candidates: mine.to_vec(),
                start_in_ms: 0,
            },
        });
        Ok(())
    }

    fn on_answer(&mut self, now: Time, from: Ipv6Net, s: Signal) -> Result<(), Refused> {
        let Some(a) = self.attempts.get_mut(&from) else {
            self.counters.refused_unexpected += 1;
            return Err(Refused::Unexpected);
        };
        let Phase::Requested { sent } = a.phase else {
            self.counters.refused_unexpected += 1;
            return Err(Refused::Unexpected);
        };
        if a.id != s.id {
            self.counters.refused_unexpected += 1;
            return Err(Refused::Unexpected);
        }
        let addrs = punch_order(&s.candidates);
        if addrs.is_empty() {
            self.counters.refused_malformed += 1;
            self.attempts.remove(&from);
            self.fail(now, from);
            return Err(Refused::Malformed);
        }
        // The peer starts at its receipt + offset; its receipt was about half our round
        // trip after we sent.
        let half_rtt = now.saturating_since(sent) / 2;
        let at = (sent + START_OFFSET + half_rtt).max(now);
        a.phase = Phase::Scheduled { at, addrs };
        Ok(())
    }

    /// Runs what is due at `now`: handshakes whose moment came, attempts that timed out.
    pub fn poll(&mut self, now: Time) {
        let mut failed = Vec::new();
        for (peer, a) in self.attempts.iter_mut() {
            match &a.phase {
                Phase::Requested { sent } if now.saturating_since(*sent) >= ANSWER_TIMEOUT => {
                    failed.push(*peer)
                }
                Phase::Scheduled { at, addrs } if *at <= now => {
                    self.counters.punches += 1;
                    self.steps.push_back(Step::Punch {
                        peer: *peer,
                        addrs: addrs.clone(),
                    });
                    a.phase = Phase::Punching { since: now };
                }
                Phase::Punching { since } if now.saturating_since(*since) >= PUNCH_TIMEOUT => {
                    failed.push(*peer)
                }
                _ => {}
            }
        }
        for p in failed {
            self.attempts.remove(&p);
            self.fail(now, p);
        }
    }

    /// The shell's handshakes to `peer` all ended without a tunnel.
    pub fn punch_failed(&mut self, now: Time, peer: Ipv6Net) {
        if self
            .attempts
            .get(&peer)
            .is_some_and(|a| matches!(a.phase, Phase::Punching { .. }))
        {
            self.attempts.remove(&peer);
            self.fail(now, peer);
        }
    }

    fn fail(&mut self, now: Time, peer: Ipv6Net) {
        self.counters.failed += 1;
        let failures = self.retry.get(&peer).map_or(0, |r| r.failures) + 1;
        if !self.retry.contains_key(&peer)
            && self.retry.len() >= MAX_RETRY_PEERS
            && let Some(worst) = self
                .retry
                .iter()
                .max_by_key(|(_, r)| r.failures)
                .map(|(p, _)| *p)
        {
            self.retry.remove(&worst);
        }
        self.retry.insert(
            peer,
            Retry {
                failures,
                next: now + backoff(failures),
            },
        );
    }

    /// A tunnel to `peer` came up: returns whether it came from a punch under way.
    pub fn tunnel_up(&mut self, peer: &Ipv6Net) -> bool {
        self.retry.remove(peer);
        let punched = self
            .attempts
            .remove(peer)
            .is_some_and(|a| !matches!(a.phase, Phase::Requested { .. }));
        if punched {
            self.counters.punched += 1;
        }
        punched
    }

    /// Peers whose retry is due (the core asks again if it still wants them, else
    /// [`Puncher::forget`]s them).
    pub fn retries_due(&self, now: Time) -> Vec<Ipv6Net> {
        self.retry
            .iter()
            .filter(|(p, r)| r.next <= now && !self.attempts.contains_key(p))
            .map(|(p, _)| *p)
            .collect()
    }

    /// `peer` is no longer wanted (unroutable, or a tunnel exists).
    pub fn forget(&mut self, peer: &Ipv6Net) {
        self.retry.remove(peer);
    }

    /// The next time [`Puncher::poll`] has something to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.attempts
            .values()
            .map(|a| match a.phase {
                Phase::Requested { sent } => sent + ANSWER_TIMEOUT,
                Phase::Scheduled { at, .. } => at,
                Phase::Punching { since } => since + PUNCH_TIMEOUT,
            })
            .min()
    }
}

#[cfg(test)]
#[path = "punch_tests.rs"]
mod tests;
