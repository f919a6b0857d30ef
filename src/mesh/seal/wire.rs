//! Sealed tunnel datagrams (docs/SEALING.md), parse and emit. Sans-IO, no allocation on
//! parse. Offsets count from the frame type byte ([`frame::TYPE_SEALED`] or
//! [`frame::TYPE_SEAL_HANDSHAKE`]), so a relay rewrites the hop limit in the very buffer
//! it received and sends it on.
//!
//! ```text
//! sealed data:  type=2 | dst[16] | hop[1] | src[16] | receiver[4] | counter[8] | ciphertext | tag[16]
//! handshake:    type=3 | dst[16] | hop[1] | src[16] | msg[1] | receiver[4] | noise message
//! ```
//!
//! The ciphertext of a data frame is the inner IPv6 packet *without its source and
//! destination addresses* (bytes 8..40): the clear `src` and `dst` are those addresses,
//! authenticated as associated data, so sealing costs 29 bytes and a 1280-byte packet fits
//! a tunnel on a 1360-byte path ([`MIN_TUNNEL_PAYLOAD`]). The clear source lets the receiver
//! answer a frame for a session it does not know (a handshake towards that source) and
//! check the source against the sender's certificate before opening.

use std::net::Ipv6Addr;

use crate::mesh::forward::IPV6_HEADER;
use crate::mesh::tunnels::frame;

/// Bytes of the clear routing header both sealed types start with: type, dst, hop limit.
pub const ROUTE_LEN: usize = 1 + 16 + 1;
/// Offset of the hop limit a relay decrements.
pub const HOP_OFFSET: usize = 17;
/// Offset of the clear source address (both sealed types).
pub const SRC_OFFSET: usize = ROUTE_LEN;
/// Clear bytes in front of a data frame's ciphertext.
pub const DATA_HEADER_LEN: usize = ROUTE_LEN + 16 + 4 + 8;
/// Bytes of the inner packet's header that travel in clear (source and destination).
pub const CLEAR_ADDRS: std::ops::Range<usize> = 8..40;
/// Length of a data frame's associated data.
pub const AAD_LEN: usize = 16 + 16 + 4 + 8;
/// Bytes in front of a handshake's Noise message.
pub const HANDSHAKE_HEADER_LEN: usize = ROUTE_LEN + 16 + 1 + 4;
/// AEAD tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to an IPv6 packet (the inner addresses travel in clear instead).
pub const OVERHEAD: usize = DATA_HEADER_LEN - frame::HEADER_LEN + TAG_LEN - 32;
/// Largest datagram quinn sends on the smallest path re6mesh accepts: 1360 bytes of UDP
/// payload minus the short header (1 flags + 8 connection ID + 4 packet number + 16 tag)
/// minus the DATAGRAM frame bound (9), as `quinn::Connection::max_datagram_size` computes.
pub const MIN_TUNNEL_DATAGRAM: usize = 1360 - (1 + 8 + 4 + 16) - 9;
/// The same, as [`TunnelLink::max_payload`](crate::mesh::tunnels::TunnelLink::max_payload)
/// reports it (after the frame type byte).
pub const MIN_TUNNEL_PAYLOAD: usize = MIN_TUNNEL_DATAGRAM - frame::HEADER_LEN;
/// Hop limit a sealed frame starts with.
pub const INITIAL_HOPS: u8 = 64;

/// Handshake message numbers (Noise XX: `-> e`, `<- e, ee, s, es`, `-> s, se`).
pub const MSG1: u8 = 1;
/// Second handshake message.
pub const MSG2: u8 = 2;
/// Third handshake message.
pub const MSG3: u8 = 3;

/// A sealed data frame, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFrame<'a> {
    /// The destination (the inner packet's, in clear).
    pub dst: Ipv6Addr,
    /// Hops left.
    pub hop_limit: u8,
    /// The source (the inner packet's, in clear).
    pub src: Ipv6Addr,
    /// The receiver's session index.
    pub receiver: u32,
    /// The sender's message counter (the AEAD nonce).
    pub counter: u64,
    /// Ciphertext and tag.
    pub sealed: &'a [u8],
}

/// A handshake frame, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeFrame<'a> {
    /// The destination node address.
    pub dst: Ipv6Addr,
    /// Hops left.
    pub hop_limit: u8,
    /// The sending node's address (where the answer goes).
    pub src: Ipv6Addr,
    /// [`MSG1`], [`MSG2`] or [`MSG3`].
    pub msg: u8,
    /// The receiver's handshake index (0 in message 1).
    pub receiver: u32,
    /// The Noise message.
    pub noise: &'a [u8],
}

/// Why a sealed datagram does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not one of the two sealed types.
    #[error("not a sealed datagram")]
    NotSealed,
    /// Shorter than its header (and tag).
    #[error("sealed datagram too short")]
    Short,
    /// A handshake message number other than 1, 2, 3.
    #[error("unknown handshake message {0}")]
    BadMessage(u8),
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    a.into()
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The clear destination and hop limit of either sealed type (what a relay needs).
pub fn route(d: &[u8]) -> Result<(Ipv6Addr, u8), WireError> {
    match d.first() {
        Some(&frame::TYPE_SEALED) | Some(&frame::TYPE_SEAL_HANDSHAKE) => {}
        _ => return Err(WireError::NotSealed),
    }
    if d.len() < ROUTE_LEN {
        return Err(WireError::Short);
    }
    Ok((addr(&d[1..17]), d[HOP_OFFSET]))
}

/// Parses a data frame (type byte included).
pub fn parse_data(d: &[u8]) -> Result<DataFrame<'_>, WireError> {
    if d.first() != Some(&frame::TYPE_SEALED) {
        return Err(WireError::NotSealed);
    }
    // Smallest inner packet: a bare IPv6 header, 8 bytes once its addresses are taken out.
    if d.len() < DATA_HEADER_LEN + IPV6_HEADER - 32 + TAG_LEN {
        return Err(WireError::Short);
    }
    let mut c = [0u8; 8];
    c.copy_from_slice(&d[38..46]);
    Ok(DataFrame {
        dst: addr(&d[1..17]),
        hop_limit: d[HOP_OFFSET],
        src: addr(&d[18..34]),
        receiver: be32(&d[34..38]),
        counter: u64::from_be_bytes(c),
        sealed: &d[DATA_HEADER_LEN..],
    })
}

/// Parses a handshake frame (type byte included).
pub fn parse_handshake(d: &[u8]) -> Result<HandshakeFrame<'_>, WireError> {
    if d.first() != Some(&frame::TYPE_SEAL_HANDSHAKE) {
        return Err(WireError::NotSealed);
    }
    if d.len() < HANDSHAKE_HEADER_LEN {
        return Err(WireError::Short);
    }
    let msg = d[34];
    if !(MSG1..=MSG3).contains(&msg) {
        return Err(WireError::BadMessage(msg));
    }
    Ok(HandshakeFrame {
        dst: addr(&d[1..17]),
        hop_limit: d[HOP_OFFSET],
        src: addr(&d[18..34]),
        msg,
        receiver: be32(&d[35..39]),
        noise: &d[HANDSHAKE_HEADER_LEN..],
    })
}

/// Writes a data frame's clear header into `out` (cleared first); the caller appends the
/// ciphertext and tag.
pub fn emit_data_header(
    dst: Ipv6Addr,
    src: Ipv6Addr,
    receiver: u32,
    counter: u64,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.push(frame::TYPE_SEALED);
    out.extend_from_slice(&dst.octets());
    out.push(INITIAL_HOPS);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
}

/// The associated data of a data frame: everything clear but the hop limit (which relays
/// change): dst ‖ src ‖ receiver index ‖ counter. `d` holds at least the clear header.
pub fn data_aad(d: &[u8]) -> [u8; AAD_LEN] {
    let mut a = [0u8; AAD_LEN];
    a[..16].copy_from_slice(&d[1..17]);
    a[16..].copy_from_slice(&d[18..DATA_HEADER_LEN]);
    a
}

/// The clear source of either sealed type (where an answer goes).
pub fn source(d: &[u8]) -> Result<Ipv6Addr, WireError> {
    route(d)?;
    let b = d.get(SRC_OFFSET..SRC_OFFSET + 16).ok_or(WireError::Short)?;
    Ok(addr(b))
}

/// Writes a handshake frame into `out` (cleared first).
pub fn emit_handshake(
    dst: Ipv6Addr,
    src: Ipv6Addr,
    msg: u8,
    receiver: u32,
    noise: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.reserve(HANDSHAKE_HEADER_LEN + noise.len());
    out.push(frame::TYPE_SEAL_HANDSHAKE);
    out.extend_from_slice(&dst.octets());
    out.push(INITIAL_HOPS);
    out.extend_from_slice(&src.octets());
    out.push(msg);
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(noise);
}

/// What a relay does with a sealed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Forward to the next hop towards this destination (hop limit already decremented).
    Forward(Ipv6Addr),
    /// The hop limit ran out: drop (counted).
    HopLimit,
}

/// Decrements the hop limit in place, for a frame this node does not open.
pub fn relay(d: &mut [u8]) -> Result<Relay, WireError> {
    let (dst, hops) = route(d)?;
    if hops <= 1 {
        return Ok(Relay::HopLimit);
    }
    d[HOP_OFFSET] = hops - 1;
    Ok(Relay::Forward(dst))
}

/// Fuzzing entry: every parser on arbitrary bytes, and emit ∘ parse is the identity.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) {
    let _ = route(data);
    if let Ok(f) = parse_data(data) {
        let mut out = Vec::new();
        emit_data_header(f.dst, f.src, f.receiver, f.counter, &mut out);
        out[HOP_OFFSET] = f.hop_limit;
        out.extend_from_slice(f.sealed);
        assert_eq!(out, data);
    }
    if let Ok(f) = parse_handshake(data) {
        let mut out = Vec::new();
        emit_handshake(f.dst, f.src, f.msg, f.receiver, f.noise, &mut out);
        out[HOP_OFFSET] = f.hop_limit;
        assert_eq!(out, data);
    }
    let mut copy = data.to_vec();
    if let Ok(Relay::Forward(dst)) = relay(&mut copy) {
        assert_eq!(route(&copy).map(|r| r.0), Ok(dst));
        assert_eq!(copy[HOP_OFFSET] + 1, data[HOP_OFFSET]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
    const C: Ipv6Addr = Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, 1);

    #[test]
    fn a_sealed_1280_byte_packet_fits_the_smallest_tunnel() {
        assert_eq!(OVERHEAD, 29);
        assert_eq!(MIN_TUNNEL_PAYLOAD, 1321);
        const { assert!(1280 + OVERHEAD <= MIN_TUNNEL_PAYLOAD) };
    }

    #[test]
    fn data_frames_round_trip_and_short_ones_are_refused() {
        let mut out = Vec::new();
        emit_data_header(C, A, 0xdead_beef, 1 << 40 | 7, &mut out);
        out.extend_from_slice(&[0xaa; 8 + TAG_LEN]);
        let f = parse_data(&out).unwrap();
        assert_eq!(
            (f.dst, f.hop_limit, f.src, f.receiver, f.counter),
            (C, INITIAL_HOPS, A, 0xdead_beef, 1 << 40 | 7)
        );
        assert_eq!(f.sealed, &[0xaa; 8 + TAG_LEN][..]);
        assert_eq!(source(&out), Ok(A));
        assert_eq!(parse_data(&out[..out.len() - 1]), Err(WireError::Short));
        assert_eq!(
            parse_data(&[frame::TYPE_IPV6; 80]),
            Err(WireError::NotSealed)
        );
        let aad = data_aad(&out);
        assert_eq!(&aad[..16], &C.octets());
        assert_eq!(&aad[16..32], &A.octets());
        assert_eq!(&aad[32..36], &0xdead_beef_u32.to_be_bytes());
    }

    #[test]
    fn handshakes_round_trip_and_bad_message_numbers_are_refused() {
        let mut out = Vec::new();
        emit_handshake(C, A, MSG2, 9, b"noise", &mut out);
        let f = parse_handshake(&out).unwrap();
        assert_eq!(
            (f.dst, f.src, f.msg, f.receiver, f.noise),
            (C, A, MSG2, 9, &b"noise"[..])
        );
        out[34] = 4;
        assert_eq!(parse_handshake(&out), Err(WireError::BadMessage(4)));
        assert_eq!(parse_handshake(&out[..20]), Err(WireError::Short));
    }

    #[test]
    fn relays_decrement_and_stop_at_one() {
        let mut out = Vec::new();
        emit_handshake(C, A, MSG1, 0, b"", &mut out);
        assert_eq!(relay(&mut out), Ok(Relay::Forward(C)));
        assert_eq!(out[HOP_OFFSET], INITIAL_HOPS - 1);
        out[HOP_OFFSET] = 1;
        assert_eq!(relay(&mut out), Ok(Relay::HopLimit));
        assert_eq!(relay(&mut [frame::TYPE_SEALED; 5]), Err(WireError::Short));
        assert_eq!(
            relay(&mut [frame::TYPE_BABEL; 40]),
            Err(WireError::NotSealed)
        );
        fuzz_check(&out);
    }
}
