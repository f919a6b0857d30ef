//! Adapter between the engine's [`Msg`]s and the `wire` module's resolved messages and
//! packet emitter. All byte-level work (prefix compression, router-id and next-hop state,
//! PC TLV placement, packet splitting) is the wire module's.

use std::net::IpAddr;

use crate::wire::{
    self, EmitConfig, Hello, Ihu, IhuTimestamp, Message, ParseOptions, PcState, RouteRequest,
    SeqnoRequest, Update,
};

use super::msg::{Decoded, Msg, RouterId};
use super::prefix::RouteKey;
use super::seqno::Seqno;

/// Why a packet could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The packet as a whole is unusable (bad magic, version or lengths).
    #[error("malformed Babel packet: {0}")]
    Malformed(#[from] wire::Error),
    /// The messages could not be packed (a local bug: a message too large, etc.).
    #[error("cannot emit: {0}")]
    Emit(#[from] wire::EmitError),
}

/// Decodes a received packet (MAC already checked). `src` is the packet's source address:
/// the default next hop. Per-TLV problems are skipped by the wire parser, as RFC 8966 says.
pub fn decode(packet: &[u8], src: IpAddr) -> Result<Decoded, CodecError> {
    // RFC 9079: the Source Prefix sub-TLV is understood (source-specific routes are
    // routes of their own, keyed by destination and source).
    let options = ParseOptions {
        source_specific: true,
    };
    let parsed = wire::parse_packet(packet, src, &options)?;
    let mut out = Decoded::default();
    for m in parsed.messages {
        match m {
            Message::Hello(h) => out.msgs.push(Msg::Hello {
                unicast: h.unicast,
                seqno: Seqno(h.seqno),
                interval_cs: h.interval,
                timestamp: h.timestamp,
            }),
            Message::Ihu(i) => out.msgs.push(Msg::Ihu {
                rxcost: i.rxcost,
                interval_cs: i.interval,
                addr: i.address,
                timestamp: i.timestamp.map(|t| (t.origin, t.receive)),
            }),
            Message::Update(u) => {
                out.msgs.push(Msg::Update {
                    prefix: RouteKey::from_source(u.prefix, u.source_prefix),
                    router_id: u.router_id.unwrap_or_default(),
                    seqno: Seqno(u.seqno),
                    metric: u.metric,
                    interval_cs: u.interval,
                    next_hop: Some(u.next_hop),
                    signature: u.signature,
                });
            }
            Message::WildcardRetraction { interval, .. } => {
                out.msgs.push(Msg::WildcardRetraction {
                    interval_cs: interval,
                })
            }
            Message::RouteRequest(r) => out.msgs.push(Msg::RouteRequest {
                // A source-specific request for a wildcard does not exist (RFC 9079 7.4).
                prefix: match (r.prefix, r.source_prefix) {
                    (Some(p), s) => Some(RouteKey::from_source(p, s)),
                    (None, None) => None,
                    (None, Some(_)) => continue,
                },
            }),
            Message::SeqnoRequest(r) => out.msgs.push(Msg::SeqnoRequest {
                prefix: RouteKey::from_source(r.prefix, r.source_prefix),
                seqno: Seqno(r.seqno),
                hop_count: r.hop_count,
                router_id: r.router_id,
            }),
            Message::Pc { counter, index } => {
                if out.pc.is_none() {
                    out.pc = Some((counter, index));
                }
            }
            Message::ChallengeRequest { nonce } => out.msgs.push(Msg::ChallengeRequest { nonce }),
            Message::ChallengeReply { nonce } => out.msgs.push(Msg::ChallengeReply { nonce }),
            Message::AckRequest { opaque, interval } => out.msgs.push(Msg::AckRequest {
                opaque,
                interval_cs: interval,
            }),
            Message::Ack { opaque } => out.msgs.push(Msg::Ack { opaque }),
        }
    }
    Ok(out)
}

fn to_wire(m: &Msg, source: IpAddr) -> Message {
    match m {
        Msg::Hello {
            unicast,
            seqno,
            interval_cs,
            timestamp,
        } => Message::Hello(Hello {
            unicast: *unicast,
            seqno: seqno.0,
            interval: *interval_cs,
            timestamp: *timestamp,
        }),
        Msg::Ihu {
            rxcost,
            interval_cs,
            addr,
            timestamp,
        } => Message::Ihu(Ihu {
            address: *addr,
            rxcost: *rxcost,
            interval: *interval_cs,
            timestamp: timestamp.map(|(origin, receive)| IhuTimestamp { origin, receive }),
        }),
        Msg::Update {
            prefix,
            router_id,
            seqno,
            metric,
            interval_cs,
            next_hop,
            signature,
        } => Message::Update(Update {
            prefix: prefix.dst,
            source_prefix: prefix.src,
            router_id: Some(*router_id),
            next_hop: next_hop.unwrap_or(source),
            metric: *metric,
            seqno: seqno.0,
            interval: *interval_cs,
            // A retraction carries none (nothing to authenticate).
            signature: signature.filter(|_| *metric != super::msg::INFINITY),
        }),
        Msg::WildcardRetraction { interval_cs } => Message::WildcardRetraction {
            seqno: 0,
            interval: *interval_cs,
        },
        Msg::RouteRequest { prefix } => Message::RouteRequest(RouteRequest {
            prefix: prefix.map(|p| p.dst),
            source_prefix: prefix.and_then(|p| p.src),
        }),
        Msg::SeqnoRequest {
            prefix,
            seqno,
            hop_count,
            router_id,
        } => Message::SeqnoRequest(SeqnoRequest {
            prefix: prefix.dst,
            source_prefix: prefix.src,
            seqno: seqno.0,
            hop_count: *hop_count,
            router_id: *router_id,
        }),
        Msg::AckRequest {
            opaque,
            interval_cs,
        } => Message::AckRequest {
            opaque: *opaque,
            interval: *interval_cs,
        },
        Msg::Ack { opaque } => Message::Ack { opaque: *opaque },
        Msg::ChallengeRequest { nonce } => Message::ChallengeRequest {
            nonce: nonce.clone(),
        },
        Msg::ChallengeReply { nonce } => Message::ChallengeReply {
            nonce: nonce.clone(),
        },
    }
}

fn update_key(m: &Msg) -> Option<(RouterId, bool, RouteKey)> {
    match m {
        Msg::Update {
            prefix, router_id, ..
        } => Some((*router_id, !prefix.is_ipv4(), *prefix)),
        _ => None,
    }
}

/// Encodes messages into as many packets as needed (each at most `max_len` bytes once
/// signed with `sign_keys` keys). With `pc`, every packet gets a PC TLV and the counter
/// advances. Updates are sorted by (router-id, family, prefix) for compression; all other
/// messages keep their order and come first.
pub fn encode(
    msgs: &[Msg],
    source: IpAddr,
    max_len: usize,
    sign_keys: usize,
    pc: Option<&mut PcState>,
) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut others: Vec<&Msg> = msgs.iter().filter(|m| update_key(m).is_none()).collect();
    let mut updates: Vec<&Msg> = msgs.iter().filter(|m| update_key(m).is_some()).collect();
    updates.sort_by_key(|m| update_key(m));
    others.extend(updates);
    let wire_msgs: Vec<Message> = others.into_iter().map(|m| to_wire(m, source)).collect();
    let cfg = EmitConfig {
        max_len,
        source,
        trailer_reserve: wire::mac::MAC_TLV_LEN * sign_keys,
    };
    Ok(wire::emit_packets(&wire_msgs, cfg, pc)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tlv::sub_kind;

    #[test]
    fn an_update_carrying_a_route_signature_round_trips() {
        let src: IpAddr = "fe80::1".parse().unwrap();
        let sig: [u8; 64] = std::array::from_fn(|i| i as u8);
        let msgs = vec![
            Msg::Update {
                prefix: "fd00:1:2:3::/64".parse().unwrap(),
                router_id: RouterId([1, 2, 3, 4, 5, 6, 7, 8]),
                seqno: Seqno(77),
                metric: 96,
                interval_cs: 1600,
                next_hop: Some(src),
                signature: Some(sig),
            },
            Msg::Update {
                prefix: "fd00:1:2:4::/64".parse().unwrap(),
                router_id: RouterId([1, 2, 3, 4, 5, 6, 7, 8]),
                seqno: Seqno(78),
                metric: 100,
                interval_cs: 1600,
                next_hop: Some(src),
                signature: None,
            },
        ];
        let pkts = encode(&msgs, src, 1400, 0, None).unwrap();
        assert_eq!(pkts.len(), 1);
        // The sub-TLV is on the wire: type 112, length 64, the bytes.
        let at = pkts[0]
            .windows(66)
            .position(|w| w[0] == sub_kind::ROUTE_SIGNATURE && w[1] == 64 && w[2..] == sig)
            .expect("sub-TLV 112 present");
        assert!(at > 4);
        assert_eq!(decode(&pkts[0], src).unwrap().msgs, msgs);
        // A retraction never carries one.
        let mut retraction = msgs[0].clone();
        if let Msg::Update { metric, .. } = &mut retraction {
            *metric = super::super::msg::INFINITY;
        }
        let pkts = encode(std::slice::from_ref(&retraction), src, 1400, 0, None).unwrap();
        let back = decode(&pkts[0], src).unwrap().msgs;
        assert!(matches!(
            back[0],
            Msg::Update {
                signature: None,
                ..
            }
        ));
        // A signature sub-TLV of another length is skipped (the Update still counts).
        let mut bytes = encode(&msgs[..1], src, 1400, 0, None).unwrap().remove(0);
        let len_at = bytes
            .windows(2)
            .position(|w| w == [sub_kind::ROUTE_SIGNATURE, 64])
            .unwrap();
        bytes[len_at] = sub_kind::ROUTE_SIGNATURE + 1;
        let back = decode(&bytes, src).unwrap().msgs;
        assert!(matches!(
            back[0],
            Msg::Update {
                signature: None,
                ..
            }
        ));
    }
}
