//! The engine's own view of Babel messages: one variant per TLV with everything resolved
//! (full prefixes, router-id and next hop attached to each update). `codec` maps these to
//! and from the `wire` module's formats; the engine never sees compression state.

use std::net::IpAddr;

// Routes are keyed by destination and RFC 9079 source prefix: `Prefix` here is that key
// (it dereferences to the destination prefix).
use super::prefix::RouteKey as Prefix;
use super::seqno::Seqno;

/// The infinite metric / cost (RFC 8966: 0xFFFF).
pub const INFINITY: u16 = 0xFFFF;

pub use crate::wire::{RouteSignature, RouterId};

/// One Babel TLV as the engine understands it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Hello (RFC 8966 4.6.5). `interval_cs == 0` is an unscheduled Hello.
    Hello {
        /// Unicast flag.
        unicast: bool,
        /// The sender's Hello seqno.
        seqno: Seqno,
        /// Interval until the next scheduled Hello, centiseconds.
        interval_cs: u16,
        /// RFC 9616 section 3.1: the sender's transmit time (µs, modulo 2³²).
        timestamp: Option<u32>,
    },
    /// IHU (4.6.6). `addr` is `None` for AE 0 (applies to any receiver).
    Ihu {
        /// The sender's rxcost towards the addressed neighbour.
        rxcost: u16,
        /// Interval until the next IHU, centiseconds.
        interval_cs: u16,
        /// The neighbour this IHU is for.
        addr: Option<IpAddr>,
        /// RFC 9616 section 3.2: (origin, receive) — the addressed neighbour's last Hello
        /// timestamp and when the sender received that Hello (sender's clock, µs).
        timestamp: Option<(u32, u32)>,
    },
    /// An Update or retraction (4.6.9) with its router-id and next hop resolved.
    Update {
        /// The prefix.
        prefix: Prefix,
        /// Originator (from the Router-Id TLV in force).
        router_id: RouterId,
        /// Source seqno.
        seqno: Seqno,
        /// Metric; [`INFINITY`] for a retraction.
        metric: u16,
        /// Interval until the next update, centiseconds.
        interval_cs: u16,
        /// Next hop in force for the prefix's family (received), or to announce (sent).
        next_hop: Option<IpAddr>,
        /// The originator's route signature (sub-TLV 112), carried unchanged by relays
        /// ([`super::origin`]).
        signature: Option<RouteSignature>,
    },
    /// A retraction of every route of the sender (Update with AE 0).
    WildcardRetraction {
        /// Interval field, centiseconds.
        interval_cs: u16,
    },
    /// Route Request (4.6.10); `None` is the wildcard request.
    RouteRequest {
        /// The requested prefix.
        prefix: Option<Prefix>,
    },
    /// Seqno Request (4.6.11).
    SeqnoRequest {
        /// The requested prefix.
        prefix: Prefix,
        /// The requested (minimal) seqno.
        seqno: Seqno,
        /// Remaining hops.
        hop_count: u8,
        /// The source's router-id.
        router_id: RouterId,
    },
    /// Acknowledgment Request (4.6.3): must be answered with an [`Msg::Ack`].
    AckRequest {
        /// Opaque value to echo.
        opaque: u16,
        /// How long the sender waits for the Ack before resending, centiseconds.
        interval_cs: u16,
    },
    /// Acknowledgment (4.6.4).
    Ack {
        /// The request's opaque value.
        opaque: u16,
    },
    /// RFC 8967 Challenge Request.
    ChallengeRequest {
        /// Nonce to echo.
        nonce: Vec<u8>,
    },
    /// RFC 8967 Challenge Reply.
    ChallengeReply {
        /// Echoed nonce.
        nonce: Vec<u8>,
    },
}

/// A decoded packet: body messages plus the RFC 8967 packet counter, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Body TLVs in order (unknown and malformed ones already skipped by the codec).
    pub msgs: Vec<Msg>,
    /// First PC TLV: (counter, index).
    pub pc: Option<(u32, Vec<u8>)>,
}
