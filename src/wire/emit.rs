//! Packing resolved [`Message`]s into Babel packets (the sender's side of
//! [`super::message`]).
//!
//! The [`Emitter`] keeps the same per-packet state a receiver keeps (default
//! prefixes, router-id, next hops) and writes only what that state does not
//! already imply:
//!
//! * a Router-Id TLV only when an Update's router-id differs from the one in
//!   force (or flag 0x40 instead, when the prefix's low 8 bytes *are* the
//!   router-id);
//! * a Next Hop TLV only when an Update's next hop differs from the current one
//!   of its family (initially the packet source);
//! * every IPv4/IPv6 Update sets flag 0x80 (it costs nothing) and omits the
//!   leading bytes it shares with the previous prefix of the same AE. AE 1 and
//!   AE 4 never compress against each other, so receivers that keep one
//!   default prefix for both (babeld) and those that keep one per AE agree.
//!
//! Messages keep their order; sort Updates by (router-id, family, prefix)
//! before pushing them to get the best compression. A new packet starts
//! whenever the next message would not fit in [`EmitConfig::max_len`], which
//! already accounts for the PC TLV and the MAC trailer space.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::message::{Message, Update};
use super::packet::{HEADER_LEN, emit_header};
use super::prefix::{Prefix, RouterId, is_ae3_link_local};
use super::tlv::{MAX_VALUE_LEN, kind, sub_kind};

/// How to build packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmitConfig {
    /// Largest Babel packet (UDP payload) to produce, MAC trailer included.
    pub max_len: usize,
    /// Address the packets will be sent from: the receiver's initial next hop.
    pub source: IpAddr,
    /// Bytes to leave free after the body for [`super::mac::sign`]: 34 per
    /// key the packet will be signed with ([`super::mac::MAC_TLV_LEN`]).
    pub trailer_reserve: usize,
}

/// RFC 8967 packet-counter state of one interface. With it, every packet
/// emitted gets a PC TLV (at the end of the body) with `counter`, which is
/// then incremented. The engine picks a fresh random `index` at start-up
/// and whenever `counter` would wrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcState {
    /// The sender's index (RFC 8967: at most 32 bytes).
    pub index: Vec<u8>,
    /// The counter to put in the next packet.
    pub counter: u32,
}

/// Why messages could not be packed. Always the caller's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// One message cannot fit in an empty packet of `max_len` bytes.
    #[error("message of {needed} bytes does not fit in a packet of {max_len} bytes")]
    TooLarge {
        /// Bytes the message needs, with header, PC and trailer reserve.
        needed: usize,
        /// The configured maximum.
        max_len: usize,
    },
    /// A variable-length field is longer than its TLV can carry (nonce or
    /// PC index).
    #[error("a nonce or PC index is longer than a TLV can carry")]
    FieldTooLong,
    /// A finite-metric Update without a router-id.
    #[error("an update with a finite metric needs a router-id")]
    MissingRouterId,
    /// Router-id all-zeros or all-ones, which RFC 8966 forbids on the wire.
    #[error("router-id all-zeros or all-ones cannot be sent")]
    ReservedRouterId,
    /// Prefix and next hop families cannot be combined (IPv6 prefix via IPv4
    /// next hop), or a source prefix of another family than the prefix.
    #[error("prefix, source prefix and next hop address families do not combine")]
    FamilyMismatch,
}

/// Packs messages into packets; see the module docs.
#[derive(Debug)]
pub struct Emitter<'pc> {
    config: EmitConfig,
    pc: Option<&'pc mut PcState>,
    packets: Vec<Vec<u8>>,
    current: Vec<u8>,
    state: TxState,
}

/// What the receiver's parser state will be after the TLVs written so far.
#[derive(Debug, Clone, Copy, Default)]
struct TxState {
    router_id: Option<RouterId>,
    next_hop_v4: Option<Ipv4Addr>,
    next_hop_v6: Option<Ipv6Addr>,
    /// Default prefix bytes and the AE that set them.
    default_v4: Option<([u8; 4], u8)>,
    default_v6: Option<[u8; 16]>,
}

impl TxState {
    fn new(source: IpAddr) -> TxState {
        let (next_hop_v4, next_hop_v6) = match source {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => (a.to_ipv4_mapped(), Some(a)),
        };
        TxState {
            next_hop_v4,
            next_hop_v6,
            ..TxState::default()
        }
    }
}

impl<'pc> Emitter<'pc> {
    /// A new emitter; `pc` adds a PC TLV to every packet.
    pub fn new(mut config: EmitConfig, pc: Option<&'pc mut PcState>) -> Emitter<'pc> {
        // The body length field is 16 bits.
        config.max_len = config
            .max_len
            .min(HEADER_LEN + usize::from(u16::MAX) + config.trailer_reserve);
        Emitter {
            config,
            pc,
            packets: Vec::new(),
            current: Vec::new(),
            state: TxState::new(config.source),
        }
    }

    /// Bytes reserved in every packet besides the body's messages.
    fn overhead(&self) -> usize {
        let pc = self.pc.as_ref().map_or(0, |pc| 2 + 4 + pc.index.len());
        HEADER_LEN + pc + self.config.trailer_reserve
    }

    /// Adds one message, starting a new packet if it does not fit.
    pub fn push(&mut self, message: &Message) -> Result<(), EmitError> {
        if self
            .pc
            .as_ref()
            .is_some_and(|pc| 4 + pc.index.len() > MAX_VALUE_LEN)
        {
            return Err(EmitError::FieldTooLong);
        }
        // A retraction without router-id must not inherit one.
        let bare_retraction = matches!(message, Message::Update(u) if u.router_id.is_none());
        if bare_retraction && self.state.router_id.is_some() {
            self.flush();
        }
        let mut scratch = Vec::with_capacity(64);
        let mut state = self.state;
        encode(message, &mut state, &mut scratch)?;
        if self.overhead() + self.current.len() + scratch.len() > self.config.max_len {
            self.flush();
            state = self.state;
            scratch.clear();
            encode(message, &mut state, &mut scratch)?;
            let needed = self.overhead() + scratch.len();
            if needed > self.config.max_len {
                return Err(EmitError::TooLarge {
                    needed,
                    max_len: self.config.max_len,
                });
            }
        }
        self.current.extend_from_slice(&scratch);
        self.state = state;
        Ok(())
    }

    /// Adds every message in order.
    pub fn extend<'m>(
        &mut self,
        messages: impl IntoIterator<Item = &'m Message>,
    ) -> Result<(), EmitError> {
        for m in messages {
            self.push(m)?;
        }
        Ok(())
    }

    /// Finishes the current packet (if it holds anything) and starts a new one.
    pub fn flush(&mut self) {
        if self.current.is_empty() {
            self.state = TxState::new(self.config.source);
            return;
        }
        let mut body = core::mem::take(&mut self.current);
        if let Some(pc) = self.pc.as_deref_mut() {
            body.push(kind::PC);
            // Checked in push(): 4 + index <= 255.
            body.push((4 + pc.index.len()) as u8);
            body.extend_from_slice(&pc.counter.to_be_bytes());
            body.extend_from_slice(&pc.index);
            pc.counter = pc.counter.wrapping_add(1);
        }
        let mut packet = vec![0u8; HEADER_LEN];
        // max_len is clamped in new(), so the body fits 16 bits.
        let body_len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        let _ = emit_header(&mut packet, body_len);
        packet.extend_from_slice(&body);
        packet.reserve(self.config.trailer_reserve);
        self.packets.push(packet);
        self.state = TxState::new(self.config.source);
    }

    /// Finishes and returns all packets, each a complete Babel packet
    /// without trailer, with `trailer_reserve` spare capacity for signing.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.flush();
        self.packets
    }
}

/// Packs `messages` into packets in one call.
pub fn emit_packets(
    messages: &[Message],
    config: EmitConfig,
    pc: Option<&mut PcState>,
) -> Result<Vec<Vec<u8>>, EmitError> {
    let mut emitter = Emitter::new(config, pc);
    emitter.extend(messages)?;
    Ok(emitter.finish())
}

fn tlv(out: &mut Vec<u8>, ty: u8, value: &[u8]) -> Result<(), EmitError> {
    let len = u8::try_from(value.len()).map_err(|_| EmitError::FieldTooLong)?;
    out.push(ty);
    out.push(len);
    out.extend_from_slice(value);
    Ok(())
}

/// AE and bytes of an address field.
fn address_field(addr: IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (1, a.octets().to_vec()),
        IpAddr::V6(a) if is_ae3_link_local(&a) => (3, a.octets()[8..].to_vec()),
        IpAddr::V6(a) => (2, a.octets().to_vec()),
    }
}

/// Appends an RFC 9079 Source Prefix sub-TLV.
fn source_prefix_sub(
    out: &mut Vec<u8>,
    prefix: &Prefix,
    source: Option<Prefix>,
) -> Result<(), EmitError> {
    let Some(sp) = source else { return Ok(()) };
    if sp.is_ipv4() != prefix.is_ipv4() || sp.is_empty() {
        return Err(EmitError::FamilyMismatch);
    }
    let (bytes, _) = sp.addr_bytes();
    let n = sp.wire_bytes();
    out.push(sub_kind::SOURCE_PREFIX);
    out.push((1 + n) as u8);
    out.push(sp.len());
    out.extend_from_slice(bytes.get(..n).unwrap_or(&[]));
    Ok(())
}

fn encode(message: &Message, state: &mut TxState, out: &mut Vec<u8>) -> Result<(), EmitError> {
    match message {
        Message::AckRequest { opaque, interval } => {
            let mut v = vec![0, 0];
            v.extend_from_slice(&opaque.to_be_bytes());
            v.extend_from_slice(&interval.to_be_bytes());
            tlv(out, kind::ACK_REQ, &v)
        }
        Message::Ack { opaque } => tlv(out, kind::ACK, &opaque.to_be_bytes()),
        Message::Hello(h) => {
            let flags: u16 = if h.unicast { 0x8000 } else { 0 };
            let mut v = Vec::with_capacity(12);
            v.extend_from_slice(&flags.to_be_bytes());
            v.extend_from_slice(&h.seqno.to_be_bytes());
            v.extend_from_slice(&h.interval.to_be_bytes());
            if let Some(ts) = h.timestamp {
                v.extend_from_slice(&[sub_kind::TIMESTAMP, 4]);
                v.extend_from_slice(&ts.to_be_bytes());
            }
            tlv(out, kind::HELLO, &v)
        }
        Message::Ihu(i) => {
            let (ae, addr) = match i.address {
                None => (0, Vec::new()),
                Some(a) => address_field(a),
            };
            let mut v = vec![ae, 0];
            v.extend_from_slice(&i.rxcost.to_be_bytes());
            v.extend_from_slice(&i.interval.to_be_bytes());
            v.extend_from_slice(&addr);
            if let Some(ts) = i.timestamp {
                v.extend_from_slice(&[sub_kind::TIMESTAMP, 8]);
                v.extend_from_slice(&ts.origin.to_be_bytes());
                v.extend_from_slice(&ts.receive.to_be_bytes());
            }
            tlv(out, kind::IHU, &v)
        }
        Message::Update(u) => encode_update(u, state, out),
        Message::WildcardRetraction { seqno, interval } => {
            let mut v = vec![0, 0, 0, 0];
            v.extend_from_slice(&interval.to_be_bytes());
            v.extend_from_slice(&seqno.to_be_bytes());
            v.extend_from_slice(&0xFFFFu16.to_be_bytes());
            tlv(out, kind::UPDATE, &v)
        }
        Message::RouteRequest(r) => {
            let Some(prefix) = r.prefix else {
                if r.source_prefix.is_some() {
                    return Err(EmitError::FamilyMismatch);
                }
                return tlv(out, kind::ROUTE_REQUEST, &[0, 0]);
            };
            let ae = if prefix.is_ipv4() { 1 } else { 2 };
            let (bytes, _) = prefix.addr_bytes();
            let mut v = vec![ae, prefix.len()];
            v.extend_from_slice(bytes.get(..prefix.wire_bytes()).unwrap_or(&[]));
            source_prefix_sub(&mut v, &prefix, r.source_prefix)?;
            tlv(out, kind::ROUTE_REQUEST, &v)
        }
        Message::SeqnoRequest(r) => {
            let prefix = r.prefix;
            let ae = if prefix.is_ipv4() { 1 } else { 2 };
            let (bytes, _) = prefix.addr_bytes();
            let mut v = vec![ae, prefix.len()];
            v.extend_from_slice(&r.seqno.to_be_bytes());
            v.push(r.hop_count);
            v.push(0);
            v.extend_from_slice(&r.router_id.0);
            v.extend_from_slice(bytes.get(..prefix.wire_bytes()).unwrap_or(&[]));
            source_prefix_sub(&mut v, &prefix, r.source_prefix)?;
            tlv(out, kind::SEQNO_REQUEST, &v)
        }
        Message::Pc { counter, index } => {
            let mut v = counter.to_be_bytes().to_vec();
            v.extend_from_slice(index);
            tlv(out, kind::PC, &v)
        }
        Message::ChallengeRequest { nonce } => tlv(out, kind::CHALLENGE_REQUEST, nonce),
        Message::ChallengeReply { nonce } => tlv(out, kind::CHALLENGE_REPLY, nonce),
    }
}

fn encode_update(u: &Update, state: &mut TxState, out: &mut Vec<u8>) -> Result<(), EmitError> {
    if u.router_id.is_none() && !u.is_retraction() {
        return Err(EmitError::MissingRouterId);
    }
    if u.router_id.is_some_and(|id| id.is_reserved()) {
        return Err(EmitError::ReservedRouterId);
    }
    let prefix = u.prefix;
    // Next hop and AE.
    let ae = match (prefix.is_ipv4(), u.next_hop) {
        (true, IpAddr::V4(nh)) => {
            if state.next_hop_v4 != Some(nh) {
                tlv(out, kind::NEXT_HOP, &[&[1u8, 0][..], &nh.octets()].concat())?;
                state.next_hop_v4 = Some(nh);
            }
            1
        }
        (is_v4, IpAddr::V6(nh)) => {
            if state.next_hop_v6 != Some(nh) {
                let (ae, bytes) = address_field(IpAddr::V6(nh));
                tlv(out, kind::NEXT_HOP, &[&[ae, 0][..], &bytes].concat())?;
                state.next_hop_v6 = Some(nh);
            }
            if is_v4 { 4 } else { 2 }
        }
        (false, IpAddr::V4(_)) => return Err(EmitError::FamilyMismatch),
    };
    let (bytes, size) = prefix.addr_bytes();
    let full = bytes.get(..size).unwrap_or(&[]);
    let nbytes = prefix.wire_bytes();
    // Router-id: flag 0x40 when the address's low 8 bytes are the id (IPv6
    // only), else a Router-Id TLV when it changes.
    let mut flags = 0x80u8;
    if let Some(id) = u.router_id.filter(|id| state.router_id != Some(*id)) {
        if !prefix.is_ipv4() && full.get(8..16) == Some(&id.0[..]) {
            flags |= 0x40;
        } else {
            tlv(out, kind::ROUTER_ID, &[&[0u8, 0][..], &id.0].concat())?;
        }
        state.router_id = Some(id);
    }
    // Compression against the default prefix of the same AE.
    let default: Option<&[u8]> = match ae {
        1 | 4 => state
            .default_v4
            .as_ref()
            .filter(|(_, set_by)| *set_by == ae)
            .map(|(d, _)| &d[..]),
        _ => state.default_v6.as_ref().map(|d| &d[..]),
    };
    let omitted = default.map_or(0, |d| {
        full.iter()
            .take(nbytes)
            .zip(d.iter())
            .take_while(|(a, b)| a == b)
            .count()
    });
    match ae {
        1 | 4 => {
            let mut d = [0u8; 4];
            d.copy_from_slice(bytes.get(..4).unwrap_or(&[0; 4]));
            state.default_v4 = Some((d, ae));
        }
        _ => state.default_v6 = Some(bytes),
    }
    let mut v = Vec::with_capacity(10 + nbytes);
    v.extend_from_slice(&[ae, flags, prefix.len(), omitted as u8]);
    v.extend_from_slice(&u.interval.to_be_bytes());
    v.extend_from_slice(&u.seqno.to_be_bytes());
    v.extend_from_slice(&u.metric.to_be_bytes());
    v.extend_from_slice(full.get(omitted..nbytes).unwrap_or(&[]));
    source_prefix_sub(&mut v, &prefix, u.source_prefix)?;
    if let Some(sig) = &u.signature {
        v.extend_from_slice(&[sub_kind::ROUTE_SIGNATURE, 64]);
        v.extend_from_slice(sig);
    }
    tlv(out, kind::UPDATE, &v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::{Hello, Ihu, ParseOptions, RouteRequest, parse_packet};

    const SRC: IpAddr = IpAddr::V6(Ipv6Addr::new(
        0xfe80, 0, 0, 0, 0xc047, 0xf6ff, 0xfe20, 0xf1f4,
    ));

    fn config(max_len: usize) -> EmitConfig {
        EmitConfig {
            max_len,
            source: SRC,
            trailer_reserve: 34,
        }
    }

    fn update(p: &str, id: u8) -> Message {
        Message::Update(Update {
            prefix: p.parse().unwrap(),
            source_prefix: None,
            router_id: Some(RouterId([id; 8])),
            next_hop: SRC,
            metric: 96,
            seqno: 7,
            interval: 1600,
            signature: None,
        })
    }

    fn roundtrip(messages: &[Message], max_len: usize) -> Vec<Vec<u8>> {
        let packets = emit_packets(messages, config(max_len), None).unwrap();
        let mut back = Vec::new();
        for p in &packets {
            assert!(p.len() + 34 <= max_len);
            let parsed = parse_packet(p, SRC, &ParseOptions::default()).unwrap();
            assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
            back.extend(parsed.messages);
        }
        assert_eq!(back, messages);
        packets
    }

    #[test]
    fn compresses_prefixes_and_shares_router_id() {
        let msgs: Vec<Message> = (0..50u16)
            .map(|i| update(&format!("2001:db8:{i:x}::/64"), 1))
            .collect();
        let packets = roundtrip(&msgs, 1400);
        assert_eq!(packets.len(), 1);
        // Header, one Router-Id, a full first Update (12 + 8 bytes), then 49
        // Updates that omit at least 4 bytes; uncompressed would be 1016.
        assert!(
            packets[0].len() <= 4 + 12 + 20 + 49 * 15,
            "{}",
            packets[0].len()
        );
    }

    #[test]
    fn splits_at_max_len() {
        let msgs: Vec<Message> = (0..200u16)
            .map(|i| update(&format!("2001:db8:{i:x}::/64"), (i / 70) as u8 + 1))
            .collect();
        let packets = roundtrip(&msgs, 300);
        assert!(packets.len() > 5);
    }

    #[test]
    fn emits_ipv4_with_next_hops_and_ae4() {
        let v4nh: IpAddr = "192.0.2.1".parse().unwrap();
        let mut a = update("198.51.100.0/26", 1);
        if let Message::Update(u) = &mut a {
            u.next_hop = v4nh;
        }
        let b = update("198.51.100.64/26", 1); // AE 4 via SRC
        let msgs = vec![
            Message::Hello(Hello {
                unicast: false,
                seqno: 1,
                interval: 400,
                timestamp: None,
            }),
            Message::Ihu(Ihu {
                address: Some(SRC),
                rxcost: 96,
                interval: 1200,
                timestamp: None,
            }),
            a,
            b,
            Message::RouteRequest(RouteRequest {
                prefix: None,
                source_prefix: None,
            }),
        ];
        roundtrip(&msgs, 1400);
    }

    #[test]
    fn retraction_without_router_id_starts_a_new_packet() {
        let mut r = update("2001:db8:1::/64", 1);
        if let Message::Update(u) = &mut r {
            u.router_id = None;
            u.metric = 0xFFFF;
        }
        let packets = roundtrip(&[update("2001:db8::/64", 1), r], 1400);
        assert_eq!(packets.len(), 2);
    }

    #[test]
    fn adds_pc_to_every_packet() {
        let mut pc = PcState {
            index: vec![1; 8],
            counter: 5,
        };
        let msgs: Vec<Message> = (0..40u16)
            .map(|i| update(&format!("2001:db8:{i:x}::/64"), 1))
            .collect();
        let packets = emit_packets(&msgs, config(200), Some(&mut pc)).unwrap();
        assert_eq!(pc.counter, 5 + packets.len() as u32);
        for (n, p) in packets.iter().enumerate() {
            let parsed = parse_packet(p, SRC, &ParseOptions::default()).unwrap();
            assert_eq!(
                parsed.messages.last(),
                Some(&Message::Pc {
                    counter: 5 + n as u32,
                    index: vec![1; 8]
                })
            );
        }
    }

    #[test]
    fn refuses_message_larger_than_packet() {
        let m = Message::ChallengeRequest {
            nonce: vec![0; 200],
        };
        assert!(matches!(
            emit_packets(&[m], config(100), None),
            Err(EmitError::TooLarge { .. })
        ));
    }
}
