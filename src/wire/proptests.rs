//! Property tests: lossless TLV round trip for arbitrary `TlvRepr`s, message
//! round trip through the emitter for arbitrary `Message`s, and no panic on
//! arbitrary bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::emit::{EmitConfig, PcState, emit_packets};
use super::fuzzing::check_packet;
use super::message::{
    Hello, Ihu, IhuTimestamp, Message, ParseOptions, RouteRequest, SeqnoRequest, Update,
    parse_packet,
};
use super::packet::{Packet, PacketRepr};
use super::prefix::{Prefix, RouterId};
use super::tlv::{SubTlvs, Tlv, TlvRepr, address_len, request_prefix_len, update_prefix_len};

/// Owned description of a TLV, from which a borrowed `TlvRepr` is built.
#[derive(Debug, Clone)]
enum Spec {
    Pad1,
    PadN(Vec<u8>),
    AckReq(u16, u16, u16, Vec<u8>),
    Ack(u16, Vec<u8>),
    Hello(u16, u16, u16, Vec<u8>),
    Ihu(u8, u8, u16, u16, Vec<u8>, Vec<u8>),
    RouterId(u16, [u8; 8], Vec<u8>),
    NextHop(u8, u8, Vec<u8>, Vec<u8>),
    Update([u8; 4], [u16; 3], Vec<u8>, Vec<u8>),
    RouteRequest(u8, u8, Vec<u8>, Vec<u8>),
    SeqnoRequest(u8, u8, u16, u8, u8, [u8; 8], Vec<u8>, Vec<u8>),
    Mac(Vec<u8>),
    Pc(u32, Vec<u8>),
    ChallengeRequest(Vec<u8>),
    ChallengeReply(Vec<u8>),
    Unknown(u8, Vec<u8>),
}

fn subs(b: &[u8]) -> SubTlvs<'_> {
    SubTlvs::new(b).expect("generated sub-TLVs are well framed")
}

impl Spec {
    fn repr(&self) -> TlvRepr<'_> {
        match self {
            Spec::Pad1 => TlvRepr::Pad1,
            Spec::PadN(d) => TlvRepr::PadN { data: d },
            Spec::AckReq(r, o, i, s) => TlvRepr::AckReq {
                reserved: *r,
                opaque: *o,
                interval: *i,
                sub_tlvs: subs(s),
            },
            Spec::Ack(o, s) => TlvRepr::Ack {
                opaque: *o,
                sub_tlvs: subs(s),
            },
            Spec::Hello(f, q, i, s) => TlvRepr::Hello {
                flags: *f,
                seqno: *q,
                interval: *i,
                sub_tlvs: subs(s),
            },
            Spec::Ihu(ae, r, c, i, a, s) => TlvRepr::Ihu {
                ae: *ae,
                reserved: *r,
                rxcost: *c,
                interval: *i,
                addr: a,
                sub_tlvs: subs(s),
            },
            Spec::RouterId(r, id, s) => TlvRepr::RouterId {
                reserved: *r,
                router_id: RouterId(*id),
                sub_tlvs: subs(s),
            },
            Spec::NextHop(ae, r, a, s) => TlvRepr::NextHop {
                ae: *ae,
                reserved: *r,
                addr: a,
                sub_tlvs: subs(s),
            },
            Spec::Update([ae, flags, plen, omitted], [i, q, m], p, s) => TlvRepr::Update {
                ae: *ae,
                flags: *flags,
                plen: *plen,
                omitted: *omitted,
                interval: *i,
                seqno: *q,
                metric: *m,
                prefix: p,
                sub_tlvs: subs(s),
            },
            Spec::RouteRequest(ae, plen, p, s) => TlvRepr::RouteRequest {
                ae: *ae,
                plen: *plen,
                prefix: p,
                sub_tlvs: subs(s),
            },
            Spec::SeqnoRequest(ae, plen, q, h, r, id, p, s) => TlvRepr::SeqnoRequest {
                ae: *ae,
                plen: *plen,
                seqno: *q,
                hop_count: *h,
                reserved: *r,
                router_id: RouterId(*id),
                prefix: p,
                sub_tlvs: subs(s),
            },
            Spec::Mac(m) => TlvRepr::Mac { mac: m },
            Spec::Pc(c, i) => TlvRepr::Pc {
                counter: *c,
                index: i,
            },
            Spec::ChallengeRequest(n) => TlvRepr::ChallengeRequest { nonce: n },
            Spec::ChallengeReply(n) => TlvRepr::ChallengeReply { nonce: n },
            Spec::Unknown(t, v) => TlvRepr::Unknown { ty: *t, value: v },
        }
    }
}

/// Well-framed sub-TLV area of at most ~60 bytes.
fn sub_tlvs() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(vec![0u8]),
            (1u8..=255, prop::collection::vec(any::<u8>(), 0..12)).prop_map(|(t, v)| {
                let mut out = vec![t, v.len() as u8];
                out.extend(v);
                out
            }),
        ],
        0..4,
    )
    .prop_map(|parts| parts.concat())
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn addr_field() -> impl Strategy<Value = (u8, Vec<u8>, Vec<u8>)> {
    // Known AE: exact address length plus sub-TLVs; unknown AE: opaque rest.
    prop_oneof![
        (0u8..=3, sub_tlvs()).prop_flat_map(|(ae, s)| {
            let n = address_len(ae).unwrap_or(0);
            (Just(ae), prop::collection::vec(any::<u8>(), n..=n), Just(s))
        }),
        (4u8..=255, bytes(20)).prop_map(|(ae, rest)| (ae, rest, Vec::new())),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        Just(Spec::Pad1),
        bytes(20).prop_map(Spec::PadN),
        (any::<u16>(), any::<u16>(), any::<u16>(), sub_tlvs())
            .prop_map(|(r, o, i, s)| Spec::AckReq(r, o, i, s)),
        (any::<u16>(), sub_tlvs()).prop_map(|(o, s)| Spec::Ack(o, s)),
        (any::<u16>(), any::<u16>(), any::<u16>(), sub_tlvs())
            .prop_map(|(f, q, i, s)| Spec::Hello(f, q, i, s)),
        (addr_field(), any::<u8>(), any::<u16>(), any::<u16>())
            .prop_map(|((ae, a, s), r, c, i)| Spec::Ihu(ae, r, c, i, a, s)),
        (any::<u16>(), any::<[u8; 8]>(), sub_tlvs())
            .prop_map(|(r, id, s)| Spec::RouterId(r, id, s)),
        (addr_field(), any::<u8>()).prop_map(|((ae, a, s), r)| Spec::NextHop(ae, r, a, s)),
        (
            0u8..=6,
            any::<u8>(),
            any::<u8>(),
            0u8..=20,
            any::<[u16; 3]>(),
            sub_tlvs()
        )
            .prop_flat_map(|(ae, flags, plen, omitted, f, s)| {
                let n = update_prefix_len(ae, plen, omitted);
                let prefix = match n {
                    Some(n) => prop::collection::vec(any::<u8>(), n..=n).boxed(),
                    None => bytes(20).boxed(),
                };
                let s = if n.is_some() { s } else { Vec::new() };
                (prefix, Just(s))
                    .prop_map(move |(p, s)| Spec::Update([ae, flags, plen, omitted], f, p, s))
            }),
        (0u8..=6, any::<u8>(), sub_tlvs()).prop_flat_map(|(ae, plen, s)| {
            let n = request_prefix_len(ae, plen);
            let prefix = match n {
                Some(n) => prop::collection::vec(any::<u8>(), n..=n).boxed(),
                None => bytes(20).boxed(),
            };
            let s = if n.is_some() { s } else { Vec::new() };
            (prefix, Just(s)).prop_map(move |(p, s)| Spec::RouteRequest(ae, plen, p, s))
        }),
        (
            0u8..=6,
            any::<u8>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<[u8; 8]>(),
            sub_tlvs()
        )
            .prop_flat_map(|(ae, plen, q, h, r, id, s)| {
                let n = request_prefix_len(ae, plen);
                let prefix = match n {
                    Some(n) => prop::collection::vec(any::<u8>(), n..=n).boxed(),
                    None => bytes(20).boxed(),
                };
                let s = if n.is_some() { s } else { Vec::new() };
                (prefix, Just(s))
                    .prop_map(move |(p, s)| Spec::SeqnoRequest(ae, plen, q, h, r, id, p, s))
            }),
        bytes(40).prop_map(Spec::Mac),
        (any::<u32>(), bytes(40)).prop_map(|(c, i)| Spec::Pc(c, i)),
        bytes(40).prop_map(Spec::ChallengeRequest),
        bytes(40).prop_map(Spec::ChallengeReply),
        (20u8..=255, bytes(40))
            .prop_filter("known types", |(t, _)| !(16..=19).contains(t))
            .prop_map(|(t, v)| Spec::Unknown(t, v)),
    ]
}

fn router_id() -> impl Strategy<Value = RouterId> {
    any::<[u8; 8]>()
        .prop_filter("reserved", |b| *b != [0; 8] && *b != [0xff; 8])
        .prop_map(RouterId)
}

const SRC: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x42));

fn v6() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        Just(SRC),
        any::<u64>()
            .prop_map(|low| IpAddr::V6(Ipv6Addr::from((0xfe80u128 << 112) | u128::from(low)))),
        any::<u32>()
            .prop_map(|low| IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(low)))),
    ]
}

fn v4() -> impl Strategy<Value = IpAddr> {
    any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
}

fn prefix(is_v4: bool) -> BoxedStrategy<Prefix> {
    if is_v4 {
        (any::<u32>(), 0u8..=32)
            .prop_filter_map("valid", |(a, l)| Prefix::new(IpAddr::V4(a.into()), l))
            .boxed()
    } else {
        (any::<u128>(), 0u8..=128)
            .prop_filter_map("valid", |(a, l)| Prefix::new(IpAddr::V6(a.into()), l))
            .boxed()
    }
}

fn source_prefix(is_v4: bool) -> BoxedStrategy<Option<Prefix>> {
    prop_oneof![
        3 => Just(None),
        1 => prefix(is_v4).prop_filter("non-empty", |p| !p.is_empty()).prop_map(Some),
    ]
    .boxed()
}

fn update() -> impl Strategy<Value = Message> {
    any::<bool>().prop_flat_map(|is_v4| {
        let next_hop = if is_v4 {
            prop_oneof![v4(), v6()].boxed()
        } else {
            v6().boxed()
        };
        (
            prefix(is_v4),
            source_prefix(is_v4),
            prop::option::of(router_id()),
            next_hop,
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            prop::option::of(prop::array::uniform32(any::<u8>())),
        )
            .prop_map(
                |(prefix, source_prefix, router_id, next_hop, metric, seqno, interval, sig)| {
                    // The 64-byte route signature sub-TLV, when present.
                    let signature = sig.map(|h| {
                        let mut s = [0u8; 64];
                        s[..32].copy_from_slice(&h);
                        s[32..].copy_from_slice(&h);
                        s
                    });
                    // No router-id is only possible on a retraction.
                    let metric = if router_id.is_none() { 0xFFFF } else { metric };
                    Message::Update(Update {
                        prefix,
                        source_prefix,
                        router_id,
                        next_hop,
                        metric,
                        seqno,
                        interval,
                        signature,
                    })
                },
            )
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u16>(), any::<u16>())
            .prop_map(|(opaque, interval)| Message::AckRequest { opaque, interval }),
        any::<u16>().prop_map(|opaque| Message::Ack { opaque }),
        (
            any::<bool>(),
            any::<u16>(),
            any::<u16>(),
            any::<Option<u32>>()
        )
            .prop_map(
                |(unicast, seqno, interval, timestamp)| Message::Hello(Hello {
                    unicast,
                    seqno,
                    interval,
                    timestamp
                })
            ),
        (
            prop::option::of(prop_oneof![v4(), v6()]),
            any::<u16>(),
            any::<u16>(),
            any::<Option<(u32, u32)>>()
        )
            .prop_map(|(address, rxcost, interval, ts)| Message::Ihu(Ihu {
                address,
                rxcost,
                interval,
                timestamp: ts.map(|(origin, receive)| IhuTimestamp { origin, receive }),
            })),
        update(),
        update(),
        update(),
        (any::<u16>(), any::<u16>())
            .prop_map(|(seqno, interval)| Message::WildcardRetraction { seqno, interval }),
        prop_oneof![
            Just(Message::RouteRequest(RouteRequest {
                prefix: None,
                source_prefix: None
            })),
            any::<bool>().prop_flat_map(|v4| (prefix(v4), source_prefix(v4)).prop_map(|(p, s)| {
                Message::RouteRequest(RouteRequest {
                    prefix: Some(p),
                    source_prefix: s,
                })
            })),
        ],
        (any::<bool>(), any::<u16>(), any::<u8>(), any::<[u8; 8]>()).prop_flat_map(
            |(v4, seqno, hop_count, id)| (prefix(v4), source_prefix(v4)).prop_map(
                move |(prefix, source_prefix)| Message::SeqnoRequest(SeqnoRequest {
                    prefix,
                    source_prefix,
                    seqno,
                    hop_count,
                    router_id: RouterId(id),
                })
            )
        ),
        (any::<u32>(), bytes(33)).prop_map(|(counter, index)| Message::Pc { counter, index }),
        bytes(64).prop_map(|nonce| Message::ChallengeRequest { nonce }),
        bytes(64).prop_map(|nonce| Message::ChallengeReply { nonce }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tlv_repr_round_trips(spec in spec()) {
        let repr = spec.repr();
        let mut buf = vec![0u8; repr.buffer_len()];
        let n = repr.emit(&mut buf).unwrap();
        prop_assert_eq!(n, buf.len());
        let tlv = Tlv::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(tlv.total_len(), n);
        prop_assert_eq!(TlvRepr::parse(&tlv).unwrap(), repr);
    }

    #[test]
    fn packet_repr_round_trips(specs in prop::collection::vec(spec(), 0..12), macs in prop::collection::vec(bytes(40), 0..3)) {
        let body: Vec<TlvRepr<'_>> = specs.iter().map(Spec::repr).collect();
        let trailer: Vec<TlvRepr<'_>> = macs.iter().map(|m| TlvRepr::Mac { mac: m }).collect();
        let repr = PacketRepr { body, trailer };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        let packet = Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(PacketRepr::parse(&packet).unwrap(), repr);
        prop_assert!(check_packet(&buf).is_ok(), "{:?}", check_packet(&buf));
    }

    #[test]
    fn messages_round_trip_through_emitter(
        messages in prop::collection::vec(message(), 0..40),
        max_len in 300usize..1500,
        with_pc in any::<bool>(),
    ) {
        let config = EmitConfig { max_len, source: SRC, trailer_reserve: 34 };
        let mut pc = PcState { index: vec![7; 8], counter: 1 };
        let packets = emit_packets(&messages, config, with_pc.then_some(&mut pc)).unwrap();
        let mut back = Vec::new();
        for p in &packets {
            prop_assert!(p.len() + 34 <= max_len);
            let parsed = parse_packet(p, SRC, &ParseOptions { source_specific: true }).unwrap();
            prop_assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
            back.extend(parsed.messages.into_iter().filter(|m| !(with_pc && matches!(m, Message::Pc { index, .. } if index == &vec![7u8; 8]))));
        }
        if with_pc {
            // Only the generated PC messages with another index survive the filter.
            let expected: Vec<Message> = messages.iter().filter(|m| !matches!(m, Message::Pc { index, .. } if index == &vec![7u8; 8])).cloned().collect();
            prop_assert_eq!(back, expected);
        } else {
            prop_assert_eq!(back, messages);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(data in bytes(600)) {
        prop_assert!(check_packet(&data).is_ok());
    }

    #[test]
    fn never_panics_on_arbitrary_bodies(body in bytes(600), extra in 0usize..8) {
        let mut data = vec![42, 2];
        data.extend_from_slice(&((body.len().saturating_sub(extra)) as u16).to_be_bytes());
        data.extend_from_slice(&body);
        prop_assert!(check_packet(&data).is_ok(), "{:?}", check_packet(&data));
    }
}
