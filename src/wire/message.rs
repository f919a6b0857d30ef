//! Fully resolved Babel messages and the packet-level parser (RFC 8966
//! section 4.5 parser state, section 4.6 TLV semantics; RFC 9229 AE 4; RFC
//! 9616 timestamps; RFC 9079 source prefixes).
//!
//! [`parse_packet`] walks the body once, keeping per-packet state — default
//! prefix for IPv4 and IPv6, current router-id, current IPv4 and IPv6 next
//! hop (initially the packet source) — and turns each meaningful TLV into a
//! self-contained [`Message`]. Router-Id, Next Hop and padding TLVs only change
//! state and produce no message. Anything the RFCs tell a receiver to ignore
//! is recorded in [`ParsedPacket::ignored`] and parsing continues; only a
//! header problem, or a TLV whose length overruns the body (after which no TLV
//! boundary can be trusted), ends parsing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::packet::Packet;
use super::prefix::{Prefix, RouterId};
use super::tlv::{SubTlvs, TlvIter, TlvRepr, kind, sub_kind};
use super::{Error, INFINITY};

/// Knobs of the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// Understand the RFC 9079 Source Prefix sub-TLV (the Babel engine does:
    /// exits announce `::/0 from` the network prefix). When false (the
    /// default) the sub-TLV is an unknown mandatory sub-TLV and the enclosing
    /// Update / Route Request / Seqno Request is ignored, as RFC 9079 section
    /// 4 requires of routers that do not implement it.
    pub source_specific: bool,
}

/// A Hello (RFC 8966 section 4.6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Unicast Hello (flag 0x8000).
    pub unicast: bool,
    /// Hello seqno.
    pub seqno: u16,
    /// Interval until the next Hello, centiseconds; 0 = none scheduled.
    pub interval: u16,
    /// RFC 9616 origin timestamp, if a 4-byte Timestamp sub-TLV was present.
    pub timestamp: Option<u32>,
}

/// The two timestamps of an IHU's RFC 9616 Timestamp sub-TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IhuTimestamp {
    /// Origin timestamp copied from the neighbour's Hello.
    pub origin: u32,
    /// Time the sender received that Hello.
    pub receive: u32,
}

/// An IHU (RFC 8966 section 4.6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ihu {
    /// The neighbour address this IHU is about; `None` = AE 0, "any".
    pub address: Option<IpAddr>,
    /// Receive cost.
    pub rxcost: u16,
    /// IHU interval, centiseconds.
    pub interval: u16,
    /// RFC 9616 timestamps, if an 8-byte Timestamp sub-TLV was present.
    pub timestamp: Option<IhuTimestamp>,
}

/// A route announcement or retraction for one prefix (RFC 8966 section
/// 4.6.9), with everything the packet's parser state implied filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// Destination prefix (IPv4 for AE 1 and AE 4, IPv6 for AE 2 and 3).
    pub prefix: Prefix,
    /// RFC 9079 source prefix; only with [`ParseOptions::source_specific`].
    pub source_prefix: Option<Prefix>,
    /// Router-id in force for this Update. Always `Some` when the metric is
    /// finite (an Update without one is ignored); may be `None` for a
    /// retraction, which needs none (BIRD sends such retractions).
    pub router_id: Option<RouterId>,
    /// Next hop: from a Next Hop TLV of the right family or the packet
    /// source. IPv6 for AE 4 updates (IPv4 prefix via an IPv6 next hop). A
    /// retraction with no next hop of its family in force gets the packet
    /// source (a retraction's next hop carries no meaning).
    pub next_hop: IpAddr,
    /// Metric; [`INFINITY`] = retraction.
    pub metric: u16,
    /// Route seqno.
    pub seqno: u16,
    /// Update interval, centiseconds.
    pub interval: u16,
    /// re6mesh route origin signature (sub-TLV [`sub_kind::ROUTE_SIGNATURE`], exactly
    /// 64 bytes; a sub-TLV of another length is skipped as unknown). The first one counts.
    pub signature: Option<RouteSignature>,
}

/// The 64-byte route origin signature: ECDSA P-256 r‖s.
pub type RouteSignature = [u8; 64];

impl Update {
    /// True for a retraction (metric 0xFFFF).
    pub fn is_retraction(&self) -> bool {
        self.metric == INFINITY
    }
}

/// A Route Request (RFC 8966 section 4.6.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRequest {
    /// Requested prefix; `None` = wildcard (AE 0, "send a full update").
    pub prefix: Option<Prefix>,
    /// RFC 9079 source prefix.
    pub source_prefix: Option<Prefix>,
}

/// A Seqno Request (RFC 8966 section 4.6.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqnoRequest {
    /// Prefix.
    pub prefix: Prefix,
    /// RFC 9079 source prefix.
    pub source_prefix: Option<Prefix>,
    /// Requested seqno.
    pub seqno: u16,
    /// Hop count (a request with 0 or 1 is not forwarded further).
    pub hop_count: u8,
    /// Router-id of the source whose seqno is requested.
    pub router_id: RouterId,
}

/// One resolved message. The engine matches on this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Acknowledgment Request: reply with an Ack carrying `opaque` within
    /// `interval` centiseconds.
    AckRequest {
        /// Opaque value to echo.
        opaque: u16,
        /// Deadline, centiseconds.
        interval: u16,
    },
    /// Acknowledgment.
    Ack {
        /// Opaque value of the request being acknowledged.
        opaque: u16,
    },
    /// Hello.
    Hello(Hello),
    /// IHU.
    Ihu(Ihu),
    /// Update or retraction of one prefix.
    Update(Update),
    /// Wildcard retraction (Update AE 0): every route from this neighbour,
    /// all address families, is retracted.
    WildcardRetraction {
        /// Seqno field (carries no meaning for a wildcard retraction).
        seqno: u16,
        /// Interval field, centiseconds (babeld sends 0xFFFF).
        interval: u16,
    },
    /// Route Request.
    RouteRequest(RouteRequest),
    /// Seqno Request.
    SeqnoRequest(SeqnoRequest),
    /// RFC 8967 packet counter.
    Pc {
        /// Counter.
        counter: u32,
        /// Sender's index.
        index: Vec<u8>,
    },
    /// RFC 8967 Challenge Request.
    ChallengeRequest {
        /// Nonce to echo in the reply.
        nonce: Vec<u8>,
    },
    /// RFC 8967 Challenge Reply.
    ChallengeReply {
        /// Nonce of the request being answered.
        nonce: Vec<u8>,
    },
}

/// Why a TLV produced no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The TLV's length overruns the body; the rest of the body is dropped.
    Truncated,
    /// Too short for its fixed fields, or a sub-TLV overruns the TLV.
    Malformed,
    /// Unknown TLV type (silently skipped per RFC 8966 section 4.3).
    UnknownType,
    /// Address encoding not valid for this TLV.
    UnknownAe(u8),
    /// Prefix length longer than the address family allows (e.g. plen 172
    /// for IPv6, babeld 1.12.1 bug), or non-zero with AE 0.
    BadPrefixLength,
    /// Omitted is larger than the prefix (ceil(plen/8) bytes), or non-zero
    /// with AE 3 (which has no compression).
    BadOmitted,
    /// Omitted > 0 but no default prefix was set earlier in the packet.
    NoDefaultPrefix,
    /// AE 0 Update with a finite metric (only wildcard retractions exist).
    WildcardNotRetraction,
    /// Finite-metric Update with no router-id in force.
    NoRouterId,
    /// No next hop of the right family (IPv4 prefix from an IPv6 source
    /// without a Next Hop TLV).
    NoNextHop,
    /// Router-Id TLV with the reserved value all-zeros or all-ones; the
    /// current router-id is cleared so later Updates are not misattributed.
    ReservedRouterId,
    /// Sub-TLV with the mandatory bit that this parser does not understand.
    UnknownMandatorySubTlv(u8),
    /// Source Prefix sub-TLV that is invalid (length 0, too long, repeated,
    /// on a wildcard).
    BadSourcePrefix,
    /// MAC TLV in the body (it belongs in the trailer).
    MacInBody,
}

/// One ignored TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ignored {
    /// Offset of the TLV from the start of the body.
    pub offset: usize,
    /// TLV type byte.
    pub tlv_type: u8,
    /// Why.
    pub reason: IgnoreReason,
}

/// The outcome of [`parse_packet`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedPacket {
    /// Resolved messages, in packet order.
    pub messages: Vec<Message>,
    /// TLVs that produced no message and why (padding is not listed).
    pub ignored: Vec<Ignored>,
    /// Number of MAC TLVs in the trailer.
    pub trailer_macs: usize,
}

/// Parses a Babel packet (UDP payload) received from `source`.
///
/// Errors only when the packet as a whole is unusable (short header, body
/// longer than the datagram, wrong magic or version). Call
/// [`super::mac::verify`] first when MAC authentication is on.
pub fn parse_packet(
    payload: &[u8],
    source: IpAddr,
    options: &ParseOptions,
) -> Result<ParsedPacket, Error> {
    let mut out = ParsedPacket::default();
    parse_packet_into(payload, source, options, &mut out)?;
    Ok(out)
}

/// [`parse_packet`] into a caller-owned [`ParsedPacket`] (cleared first), so
/// the vectors can be reused across packets.
pub fn parse_packet_into(
    payload: &[u8],
    source: IpAddr,
    options: &ParseOptions,
    out: &mut ParsedPacket,
) -> Result<(), Error> {
    out.messages.clear();
    out.ignored.clear();
    out.trailer_macs = 0;
    let packet = Packet::new_checked(payload)?;
    let mut state = State::new(source);
    let mut iter = TlvIter::new(packet.body_slice());
    loop {
        let offset = iter.offset();
        let Some(item) = iter.next() else { break };
        let tlv = match item {
            Ok(tlv) => tlv,
            Err(_) => {
                let tlv_type = packet.body_slice().get(offset).copied().unwrap_or(0);
                out.ignored.push(Ignored {
                    offset,
                    tlv_type,
                    reason: IgnoreReason::Truncated,
                });
                break;
            }
        };
        let tlv_type = tlv.tlv_type();
        let result = match TlvRepr::parse(&tlv) {
            Ok(repr) => state.resolve(&repr, options),
            Err(_) => {
                state.forget(tlv_type);
                Err(IgnoreReason::Malformed)
            }
        };
        match result {
            Ok(Some(message)) => out.messages.push(message),
            Ok(None) => {}
            Err(reason) => out.ignored.push(Ignored {
                offset,
                tlv_type,
                reason,
            }),
        }
    }
    out.trailer_macs = TlvIter::new(packet.trailer_slice())
        .map_while(Result::ok)
        .filter(|t| t.tlv_type() == kind::MAC)
        .count();
    Ok(())
}

/// Per-packet parser state (RFC 8966 section 4.5).
struct State {
    /// Default prefix for AE 1 and AE 4 (IPv4), full 4 bytes.
    default_v4: Option<[u8; 4]>,
    /// Default prefix for AE 2 (IPv6), full 16 bytes.
    default_v6: Option<[u8; 16]>,
    router_id: Option<RouterId>,
    next_hop_v4: Option<Ipv4Addr>,
    next_hop_v6: Option<Ipv6Addr>,
    source: IpAddr,
}

type Resolved = Result<Option<Message>, IgnoreReason>;

impl State {
    fn new(source: IpAddr) -> State {
        let (next_hop_v4, next_hop_v6) = match source {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => (a.to_ipv4_mapped(), Some(a)),
        };
        State {
            default_v4: None,
            default_v6: None,
            router_id: None,
            next_hop_v4,
            next_hop_v6,
            source,
        }
    }

    /// A malformed Router-Id or Next Hop TLV meant to change the state; do
    /// not let what follows inherit the old value (babeld does the same):
    /// no router-id, next hops back to the packet source.
    fn forget(&mut self, tlv_type: u8) {
        match tlv_type {
            kind::ROUTER_ID => self.router_id = None,
            kind::NEXT_HOP => {
                let fresh = State::new(self.source);
                self.next_hop_v4 = fresh.next_hop_v4;
                self.next_hop_v6 = fresh.next_hop_v6;
            }
            _ => {}
        }
    }

    fn resolve(&mut self, repr: &TlvRepr<'_>, options: &ParseOptions) -> Resolved {
        match *repr {
            TlvRepr::Pad1 | TlvRepr::PadN { .. } => Ok(None),
            TlvRepr::AckReq {
                opaque,
                interval,
                sub_tlvs,
                ..
            } => {
                check_mandatory(sub_tlvs, &[])?;
                Ok(Some(Message::AckRequest { opaque, interval }))
            }
            TlvRepr::Ack { opaque, sub_tlvs } => {
                check_mandatory(sub_tlvs, &[])?;
                Ok(Some(Message::Ack { opaque }))
            }
            TlvRepr::Hello {
                flags,
                seqno,
                interval,
                sub_tlvs,
            } => {
                check_mandatory(sub_tlvs, &[])?;
                let timestamp = sub_tlvs
                    .iter()
                    .find(|s| s.ty == sub_kind::TIMESTAMP && s.value.len() == 4)
                    .and_then(|s| s.value.try_into().ok())
                    .map(u32::from_be_bytes);
                Ok(Some(Message::Hello(Hello {
                    unicast: flags & 0x8000 != 0,
                    seqno,
                    interval,
                    timestamp,
                })))
            }
            TlvRepr::Ihu {
                ae,
                rxcost,
                interval,
                addr,
                sub_tlvs,
                ..
            } => {
                let address = match ae {
                    0 => None,
                    1..=3 => Some(address(ae, addr).ok_or(IgnoreReason::UnknownAe(ae))?),
                    _ => return Err(IgnoreReason::UnknownAe(ae)),
                };
                check_mandatory(sub_tlvs, &[])?;
                let timestamp = sub_tlvs
                    .iter()
                    .find(|s| s.ty == sub_kind::TIMESTAMP && s.value.len() == 8)
                    .and_then(|s| match s.value {
                        [a, b, c, d, e, f, g, h] => Some(IhuTimestamp {
                            origin: u32::from_be_bytes([*a, *b, *c, *d]),
                            receive: u32::from_be_bytes([*e, *f, *g, *h]),
                        }),
                        _ => None,
                    });
                Ok(Some(Message::Ihu(Ihu {
                    address,
                    rxcost,
                    interval,
                    timestamp,
                })))
            }
            TlvRepr::RouterId {
                router_id,
                sub_tlvs,
                ..
            } => {
                if router_id.is_reserved() {
                    self.router_id = None;
                    return Err(IgnoreReason::ReservedRouterId);
                }
                // State changes even if a mandatory sub-TLV makes the TLV
                // otherwise ignored (RFC 8966 section 4.4).
                self.router_id = Some(router_id);
                check_mandatory(sub_tlvs, &[])?;
                Ok(None)
            }
            TlvRepr::NextHop {
                ae, addr, sub_tlvs, ..
            } => {
                match (ae, address(ae, addr)) {
                    (1, Some(IpAddr::V4(a))) => self.next_hop_v4 = Some(a),
                    (2 | 3, Some(IpAddr::V6(a))) => self.next_hop_v6 = Some(a),
                    _ => return Err(IgnoreReason::UnknownAe(ae)),
                }
                check_mandatory(sub_tlvs, &[])?;
                Ok(None)
            }
            TlvRepr::Update {
                ae,
                flags,
                plen,
                omitted,
                interval,
                seqno,
                metric,
                prefix,
                sub_tlvs,
            } => self.update(
                ae, flags, plen, omitted, interval, seqno, metric, prefix, sub_tlvs, options,
            ),
            TlvRepr::RouteRequest {
                ae,
                plen,
                prefix,
                sub_tlvs,
            } => {
                check_mandatory(sub_tlvs, known_mandatory(options))?;
                if ae == 0 {
                    if plen != 0 {
                        return Err(IgnoreReason::BadPrefixLength);
                    }
                    if source_prefix(0, sub_tlvs, options)?.is_some() {
                        return Err(IgnoreReason::BadSourcePrefix);
                    }
                    return Ok(Some(Message::RouteRequest(RouteRequest {
                        prefix: None,
                        source_prefix: None,
                    })));
                }
                let prefix = request_prefix(ae, plen, prefix)?;
                let source_prefix = source_prefix(ae, sub_tlvs, options)?;
                Ok(Some(Message::RouteRequest(RouteRequest {
                    prefix: Some(prefix),
                    source_prefix,
                })))
            }
            TlvRepr::SeqnoRequest {
                ae,
                plen,
                seqno,
                hop_count,
                router_id,
                prefix,
                sub_tlvs,
                ..
            } => {
                check_mandatory(sub_tlvs, known_mandatory(options))?;
                if ae == 0 {
                    return Err(IgnoreReason::UnknownAe(0));
                }
                let prefix = request_prefix(ae, plen, prefix)?;
                let source_prefix = source_prefix(ae, sub_tlvs, options)?;
                Ok(Some(Message::SeqnoRequest(SeqnoRequest {
                    prefix,
                    source_prefix,
                    seqno,
                    hop_count,
                    router_id,
                })))
            }
            TlvRepr::Mac { .. } => Err(IgnoreReason::MacInBody),
            TlvRepr::Pc { counter, index } => Ok(Some(Message::Pc {
                counter,
                index: index.to_vec(),
            })),
            TlvRepr::ChallengeRequest { nonce } => Ok(Some(Message::ChallengeRequest {
                nonce: nonce.to_vec(),
            })),
            TlvRepr::ChallengeReply { nonce } => Ok(Some(Message::ChallengeReply {
                nonce: nonce.to_vec(),
            })),
            TlvRepr::Unknown { .. } => Err(IgnoreReason::UnknownType),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        ae: u8,
        flags: u8,
        plen: u8,
        omitted: u8,
        interval: u16,
        seqno: u16,
        metric: u16,
        raw: &[u8],
        sub_tlvs: SubTlvs<'_>,
        options: &ParseOptions,
    ) -> Resolved {
        if ae == 0 {
            if plen != 0 || omitted != 0 {
                return Err(IgnoreReason::BadPrefixLength);
            }
            check_mandatory(sub_tlvs, known_mandatory(options))?;
            if source_prefix(0, sub_tlvs, options)?.is_some() {
                return Err(IgnoreReason::BadSourcePrefix);
            }
            if metric != INFINITY {
                return Err(IgnoreReason::WildcardNotRetraction);
            }
            return Ok(Some(Message::WildcardRetraction { seqno, interval }));
        }
        // More omitted bytes than the prefix has is meaningless (babeld takes
        // them anyway; we follow the stricter reading), and AE 3 has no
        // compression at all.
        let max_omitted = if ae == 3 {
            0
        } else {
            usize::from(plen).div_ceil(8)
        };
        if usize::from(omitted) > max_omitted {
            return Err(IgnoreReason::BadOmitted);
        }
        // Rebuild the full address, then update the parser state (flags 0x80
        // and 0x40) before anything can make us ignore the TLV: RFC 8966
        // section 4.4 keeps state changes of an otherwise-ignored Update.
        let addr: IpAddr = match ae {
            1 | 4 => {
                if plen > 32 {
                    return Err(IgnoreReason::BadPrefixLength);
                }
                let full = decompress::<4>(raw, omitted, self.default_v4.as_ref())?;
                if flags & 0x80 != 0 {
                    self.default_v4 = Some(full);
                }
                IpAddr::V4(Ipv4Addr::from(full))
            }
            2 => {
                if plen > 128 {
                    return Err(IgnoreReason::BadPrefixLength);
                }
                let full = decompress::<16>(raw, omitted, self.default_v6.as_ref())?;
                if flags & 0x80 != 0 {
                    self.default_v6 = Some(full);
                }
                IpAddr::V6(Ipv6Addr::from(full))
            }
            3 => {
                if plen > 128 {
                    return Err(IgnoreReason::BadPrefixLength);
                }
                // fe80::/64 is implied; no compression exists for AE 3.
                let mut full = [0u8; 16];
                full[0] = 0xfe;
                full[1] = 0x80;
                let tail = full
                    .get_mut(8..8 + raw.len())
                    .ok_or(IgnoreReason::Malformed)?;
                tail.copy_from_slice(raw);
                IpAddr::V6(Ipv6Addr::from(full))
            }
            _ => return Err(IgnoreReason::UnknownAe(ae)),
        };
        if flags & 0x40 != 0 {
            // A reserved id is treated like a reserved Router-Id TLV.
            let id = router_id_from(addr);
            self.router_id = if id.is_reserved() { None } else { Some(id) };
        }
        check_mandatory(sub_tlvs, known_mandatory(options))?;
        let source_prefix = source_prefix(ae, sub_tlvs, options)?;
        if metric != INFINITY && self.router_id.is_none() {
            return Err(IgnoreReason::NoRouterId);
        }
        // A retraction needs no next hop (BIRD sends IPv4 retractions without
        // a Next Hop TLV); it then gets the packet source.
        let next_hop = match (ae, self.next_hop_v4, self.next_hop_v6) {
            (1, Some(nh), _) => IpAddr::V4(nh),
            (2..=4, _, Some(nh)) => IpAddr::V6(nh),
            _ if metric == INFINITY => self.source,
            _ => return Err(IgnoreReason::NoNextHop),
        };
        let prefix = Prefix::new(addr, plen).ok_or(IgnoreReason::BadPrefixLength)?;
        Ok(Some(Message::Update(Update {
            prefix,
            source_prefix,
            router_id: self.router_id,
            next_hop,
            metric,
            seqno,
            interval,
            signature: route_signature(sub_tlvs),
        })))
    }
}

/// Full address bytes from `omitted` bytes of the default prefix followed by
/// the `raw` bytes on the wire, zero-filled.
fn decompress<const N: usize>(
    raw: &[u8],
    omitted: u8,
    default: Option<&[u8; N]>,
) -> Result<[u8; N], IgnoreReason> {
    let omitted = usize::from(omitted);
    if omitted > N {
        return Err(IgnoreReason::BadOmitted);
    }
    let mut full = [0u8; N];
    if omitted > 0 {
        let default = default.ok_or(IgnoreReason::NoDefaultPrefix)?;
        let (dst, src) = (full.get_mut(..omitted), default.get(..omitted));
        match (dst, src) {
            (Some(d), Some(s)) => d.copy_from_slice(s),
            _ => return Err(IgnoreReason::BadOmitted),
        }
    }
    let dst = full
        .get_mut(omitted..omitted + raw.len())
        .ok_or(IgnoreReason::BadPrefixLength)?;
    dst.copy_from_slice(raw);
    Ok(full)
}

/// Router-id from the low 8 bytes of an address (Update flag 0x40). For
/// IPv4 the address is taken in its IPv4-mapped IPv6 form, as babeld does.
fn router_id_from(addr: IpAddr) -> RouterId {
    let bytes = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[8..]);
    RouterId(id)
}

/// Address of an IHU / Next Hop address field.
fn address(ae: u8, raw: &[u8]) -> Option<IpAddr> {
    match (ae, raw) {
        (1, &[a, b, c, d]) => Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
        (2, raw) => {
            let bytes: [u8; 16] = raw.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        (3, raw) => {
            let low: [u8; 8] = raw.try_into().ok()?;
            let mut bytes = [0u8; 16];
            bytes[0] = 0xfe;
            bytes[1] = 0x80;
            bytes[8..].copy_from_slice(&low);
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Prefix of a Route / Seqno Request (never compressed).
fn request_prefix(ae: u8, plen: u8, raw: &[u8]) -> Result<Prefix, IgnoreReason> {
    let addr = match ae {
        1 | 4 => {
            if plen > 32 {
                return Err(IgnoreReason::BadPrefixLength);
            }
            IpAddr::V4(Ipv4Addr::from(decompress::<4>(raw, 0, None)?))
        }
        2 => {
            if plen > 128 {
                return Err(IgnoreReason::BadPrefixLength);
            }
            IpAddr::V6(Ipv6Addr::from(decompress::<16>(raw, 0, None)?))
        }
        3 => {
            if plen > 128 {
                return Err(IgnoreReason::BadPrefixLength);
            }
            let mut full = [0u8; 16];
            full[0] = 0xfe;
            full[1] = 0x80;
            let tail = full
                .get_mut(8..8 + raw.len())
                .ok_or(IgnoreReason::Malformed)?;
            tail.copy_from_slice(raw);
            IpAddr::V6(Ipv6Addr::from(full))
        }
        _ => return Err(IgnoreReason::UnknownAe(ae)),
    };
    Prefix::new(addr, plen).ok_or(IgnoreReason::BadPrefixLength)
}

const SOURCE_SPECIFIC: &[u8] = &[sub_kind::SOURCE_PREFIX];

fn known_mandatory(options: &ParseOptions) -> &'static [u8] {
    if options.source_specific {
        SOURCE_SPECIFIC
    } else {
        &[]
    }
}

/// RFC 8966 section 4.4: an unknown sub-TLV with the mandatory bit set makes
/// the whole TLV ignored.
fn check_mandatory(sub_tlvs: SubTlvs<'_>, known: &[u8]) -> Result<(), IgnoreReason> {
    for sub in sub_tlvs.iter() {
        if sub.is_mandatory() && !known.contains(&sub.ty) {
            return Err(IgnoreReason::UnknownMandatorySubTlv(sub.ty));
        }
    }
    Ok(())
}

/// The first route signature sub-TLV of exactly 64 bytes, if any.
fn route_signature(sub_tlvs: SubTlvs<'_>) -> Option<RouteSignature> {
    sub_tlvs
        .iter()
        .find(|s| s.ty == sub_kind::ROUTE_SIGNATURE && s.value.len() == 64)
        .and_then(|s| s.value.try_into().ok())
}

/// RFC 9079 Source Prefix sub-TLV: source plen, then ceil(plen/8) bytes,
/// family given by the enclosing AE. At most one; plen 0 is invalid.
fn source_prefix(
    ae: u8,
    sub_tlvs: SubTlvs<'_>,
    options: &ParseOptions,
) -> Result<Option<Prefix>, IgnoreReason> {
    let mut found = None;
    for sub in sub_tlvs.iter() {
        if sub.ty != sub_kind::SOURCE_PREFIX {
            continue;
        }
        if !options.source_specific {
            return Err(IgnoreReason::UnknownMandatorySubTlv(sub.ty));
        }
        if found.is_some() {
            return Err(IgnoreReason::BadSourcePrefix);
        }
        let Some((&plen, raw)) = sub.value.split_first() else {
            return Err(IgnoreReason::BadSourcePrefix);
        };
        if plen == 0 || raw.len() != usize::from(plen).div_ceil(8) {
            return Err(IgnoreReason::BadSourcePrefix);
        }
        let addr = match ae {
            1 | 4 if plen <= 32 => decompress::<4>(raw, 0, None).map(|b| IpAddr::V4(b.into())),
            2 if plen <= 128 => decompress::<16>(raw, 0, None).map(|b| IpAddr::V6(b.into())),
            _ => return Err(IgnoreReason::BadSourcePrefix),
        }
        .map_err(|_| IgnoreReason::BadSourcePrefix)?;
        found = Some(Prefix::new(addr, plen).ok_or(IgnoreReason::BadSourcePrefix)?);
    }
    Ok(found)
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
