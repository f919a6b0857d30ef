//! Babel wire format: RFC 8966 (Babel), RFC 8967 (MAC authentication),
//! RFC 9229 (IPv4 routes with an IPv6 next hop, AE 4), RFC 9616 (Timestamp
//! sub-TLV) and RFC 9079 (Source Prefix sub-TLV).
//!
//! No clock, no randomness, no IO: bytes in, values out, and back.
//!
//! # Layers
//!
//! From the bytes up, each layer usable on its own:
//!
//! 1. [`packet`] — [`Packet`], a zero-copy view of the UDP payload: the 4-byte
//!    header, the *body* (exactly `body length` bytes of TLVs) and the
//!    *trailer* (whatever follows the body; it carries the MAC TLVs).
//! 2. [`tlv`] — [`Tlv`], a zero-copy view of one TLV, and [`TlvRepr`], its
//!    lossless decoded form: `emit(parse(x)) == x` byte for byte, padding and
//!    reserved fields included. [`PacketRepr`] is a whole packet as two TLV
//!    lists. Strict: a TLV that overruns the body or is too short for its
//!    fixed fields is an error.
//! 3. [`message`] — the receiver's view. [`parse_packet`] runs the per-packet
//!    parser state of RFC 8966 section 4.5 (default prefix per address family,
//!    current router-id, current next hops) and hands out fully resolved
//!    [`Message`]s: an [`Update`] carries its [`Prefix`], router-id and next hop
//!    even when the wire used prefix compression, a Router-Id TLV or the packet
//!    source. TLVs the RFCs say to ignore are listed in [`Ignored`] with a
//!    reason, and parsing goes on with the next TLV.
//! 4. [`emit`] — the sender's view. [`Emitter`] packs a list of [`Message`]s
//!    into packets no larger than a given size, adding Router-Id and Next Hop
//!    TLVs only where the state of the packet so far does not already say the
//!    same, compressing prefixes, and appending a PC TLV when asked.
//! 5. [`mac`] — RFC 8967 HMAC-SHA256: [`mac::sign`] appends a MAC TLV in place
//!    in the caller's buffer (no allocation), [`mac::verify`] tries a list of
//!    keys in constant time per key and says which one matched.
//!
//! `fuzzing::check_packet` states the round-trip property the fuzz target
//! (`fuzz/fuzz_targets/babel_packet.rs`) and the capture tests check (test support: built
//! for tests and with the `fuzzing` feature only, not into the `mesh` binary).
//!
//! # Receive path
//!
//! ```text
//! udp payload ──► mac::verify(payload, &pseudo, &keys) ──► Ok(key index)
//!             ──► parse_packet(payload, source, &options) ──► ParsedPacket { messages, ignored }
//!             ──► engine: PC / challenge checks (needs state), then messages
//! ```
//!
//! # Send path
//!
//! ```text
//! engine messages ──► Emitter::new(config).push(..)..finish() ──► Vec<packet bytes>
//!                 ──► mac::sign(buf, len, &pseudo, key) per key ──► socket
//! ```

pub mod emit;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod ipv4;
pub mod mac;
pub mod message;
pub mod packet;
pub mod prefix;
pub mod tlv;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod test_util;

pub use emit::{EmitConfig, EmitError, Emitter, PcState, emit_packets};
pub use mac::{MacError, PseudoHeader};
pub use message::{
    Hello, IgnoreReason, Ignored, Ihu, IhuTimestamp, Message, ParseOptions, ParsedPacket,
    RouteRequest, RouteSignature, SeqnoRequest, Update, parse_packet, parse_packet_into,
};
pub use packet::{Packet, PacketRepr};
pub use prefix::{Prefix, PrefixParseError, RouterId};
pub use tlv::{SubTlv, SubTlvs, Tlv, TlvRepr};

use std::net::Ipv6Addr;

/// UDP port of Babel (RFC 8966 section 5).
pub const BABEL_PORT: u16 = 6696;

/// Link-local multicast group of Babel over IPv6, `ff02::1:6`.
pub const BABEL_MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 6);

/// Metric value that means "unreachable"; an Update with it is a retraction.
pub const INFINITY: u16 = 0xFFFF;

/// What went wrong decoding or encoding bytes. The peer is to blame for
/// `Truncated`, `BadMagic`, `BadVersion` and `Malformed` on input; the caller
/// for `BufferTooSmall`, `TooLong` and `Malformed` on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A length field points past the end of the data it must fit in.
    #[error("truncated: a length field runs past the end of the data")]
    Truncated,
    /// The first byte is not 42: not a Babel packet.
    #[error("not a Babel packet (magic byte is not 42)")]
    BadMagic,
    /// The version byte is not 2.
    #[error("unsupported Babel version (only version 2 is spoken)")]
    BadVersion,
    /// Fields are inconsistent: a TLV too short for its fixed fields, a broken
    /// sub-TLV, or (when emitting) a prefix whose byte count does not match
    /// its length.
    #[error("malformed TLV: fields are inconsistent with its length")]
    Malformed,
    /// The output buffer is too small for what is being written.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A value does not fit its length field (TLV payload > 255 bytes, body
    /// > 65535 bytes).
    #[error("value too long for its length field")]
    TooLong,
}
