//! TLV and sub-TLV tests, one module per format, each with smoltcp's five
//! tests:
//!
//! * **deconstruct** — the zero-copy view ([`Tlv`], [`TlvIter`], [`SubTlvs`])
//!   reads type, length and payload, and the next TLV starts right after;
//! * **construct** — the sender builds exactly these bytes from high-level
//!   values (the [`Emitter`](crate::wire::Emitter), [`mac::sign`], or the view's
//!   setters where nothing else writes the format);
//! * **parse** — bytes → [`TlvRepr`] → resolved [`Message`];
//! * **emit** — [`TlvRepr`] → the same bytes, and nothing into a buffer one
//!   byte short;
//! * **reject** — a TLV cut short of its length byte, or a length byte too
//!   short for the fixed fields, is refused, and the resolving parser records
//!   why and goes on where it can.
//!
//! The byte vectors are laid out by hand from the RFC figures: RFC 8966
//! section 4.6 (TLVs) and 4.4 (sub-TLVs, mandatory bit), RFC 8967 section 4
//! (MAC, PC, Challenge Request / Reply), RFC 9616 section 3 (Timestamp) and
//! RFC 9079 section 7 (Source Prefix). Where a capture in
//! `shared/testdata/babel` has the format, its bytes are used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::wire::message::{
    Hello, IgnoreReason, Ignored, Ihu, IhuTimestamp, Message, ParseOptions, ParsedPacket,
    RouteRequest, SeqnoRequest, Update,
};
use crate::wire::test_util::{SRC, emitted_body, resolve, resolve_with};

/// No sub-TLVs.
const NONE: SubTlvs<'static> = SubTlvs(&[]);

/// Router-id of babeld "a" in the captures.
const ID: RouterId = RouterId([0xbc, 0xdf, 0xb0, 0x6a, 0xc4, 0xdb, 0x64, 0xda]);

/// The neighbour, fe80::d0a3:b7ff:fe0c:d769 (BIRD "b" in the captures).
const PEER: IpAddr = IpAddr::V6(Ipv6Addr::new(
    0xfe80, 0, 0, 0, 0xd0a3, 0xb7ff, 0xfe0c, 0xd769,
));

/// [`PEER`]'s low 64 bits: its AE 3 (link-local) encoding.
const PEER_LOW: [u8; 8] = [0xd0, 0xa3, 0xb7, 0xff, 0xfe, 0x0c, 0xd7, 0x69];

/// 2001:db8::1, an AE 2 address.
const GLOBAL: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];

/// Router-Id TLV for [`ID`].
const ROUTER_ID: [u8; 12] = [
    0x06, 0x0a, 0x00, 0x00, 0xbc, 0xdf, 0xb0, 0x6a, 0xc4, 0xdb, 0x64, 0xda,
];

/// Update AE 2, no flags, 2001:db8:c::/64, interval 16 s, seqno 50324, metric 96.
const UPDATE_V6: [u8; 20] = [
    0x08, 0x12, 0x02, 0x00, 0x40, 0x00, 0x06, 0x40, 0xc4, 0x94, 0x00, 0x60, 0x20, 0x01, 0x0d, 0xb8,
    0x00, 0x0c, 0x00, 0x00,
];

/// Update AE 1, 198.51.100.0/24, otherwise as [`UPDATE_V6`].
const UPDATE_V4: [u8; 15] = [
    0x08, 0x0d, 0x01, 0x00, 0x18, 0x00, 0x06, 0x40, 0xc4, 0x94, 0x00, 0x60, 198, 51, 100,
];

/// Body of the README's worked example 1 (`r1-babeld-bird-babeld__a-b.pcap`
/// frame 1): multicast Hello, wildcard Route Request, PC with babeld's
/// 8-byte index.
const CAPTURE_BODY: [u8; 26] = [
    0x04, 0x06, 0x00, 0x00, 0xe8, 0x0c, 0x01, 0x90, // Hello
    0x09, 0x02, 0x00, 0x00, // Route Request AE 0
    0x11, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x17, 0xe2, 0x9e, 0x3e, 0x58, 0xa9, 0x65, 0x4f, // PC
];

/// An Ack that follows a refused TLV, to show that parsing goes on.
const NEXT_ACK: [u8; 4] = [0x03, 0x02, 0x00, 0x09];

fn view(bytes: &[u8]) -> Tlv<&[u8]> {
    Tlv::new_checked(bytes).expect("the TLV fits its buffer")
}

fn parse(bytes: &[u8]) -> TlvRepr<'_> {
    TlvRepr::parse(&view(bytes)).expect("the TLV parses")
}

fn reasons(parsed: &ParsedPacket) -> Vec<IgnoreReason> {
    parsed.ignored.iter().map(|i| i.reason).collect()
}

/// `tlv` with `sub` appended to its sub-TLVs (length byte adjusted).
fn with_sub(tlv: &[u8], sub: &[u8]) -> Vec<u8> {
    let mut out = [tlv, sub].concat();
    out[1] += u8::try_from(sub.len()).expect("short sub-TLV");
    out
}

/// An Update of `prefix` via `next_hop` with the fields of [`UPDATE_V6`].
fn update(prefix: &str, next_hop: IpAddr) -> Message {
    Message::Update(Update {
        prefix: prefix.parse().expect("valid prefix"),
        source_prefix: None,
        router_id: Some(ID),
        next_hop,
        metric: 96,
        seqno: 50324,
        interval: 1600,
        signature: None,
    })
}

/// Deconstruct: the view sees type `ty`, the length and the payload, and in a
/// body the next TLV (a Pad1 here) starts right after this one.
fn assert_view(bytes: &[u8], ty: u8) {
    let tlv = view(bytes);
    assert_eq!(tlv.tlv_type(), ty);
    assert_eq!(tlv.total_len(), bytes.len());
    if ty == kind::PAD1 {
        assert_eq!(tlv.length(), 0);
        assert_eq!(tlv.value(), &[] as &[u8]);
    } else {
        assert_eq!(usize::from(tlv.length()), bytes.len() - 2);
        assert_eq!(tlv.value(), &bytes[2..]);
    }
    let area = [bytes, &[kind::PAD1]].concat();
    let framing: Vec<_> = TlvIter::new(&area)
        .map(|t| t.map(|t| (t.tlv_type(), t.total_len())))
        .collect();
    assert_eq!(framing, vec![Ok((ty, bytes.len())), Ok((kind::PAD1, 1))]);
}

/// Emit: exactly `bytes` (every byte written), and a buffer one byte short is
/// refused.
fn assert_emits(repr: &TlvRepr<'_>, bytes: &[u8]) {
    assert_eq!(repr.buffer_len(), bytes.len());
    let mut buf = vec![0xa5; bytes.len()];
    assert_eq!(repr.emit(&mut buf), Ok(bytes.len()));
    assert_eq!(buf, bytes);
    assert_eq!(
        repr.emit(&mut buf[..bytes.len() - 1]),
        Err(Error::BufferTooSmall)
    );
}

/// Impossible lengths. Cut one byte short of what its length byte announces,
/// the TLV is `Truncated`, and a receiver drops it (no later TLV boundary can
/// be trusted). With `fixed` > 0 (the bytes of fixed fields the TLV needs), a
/// length byte of `fixed - 1` is `Malformed`: the receiver ignores that TLV
/// and goes on with the next one.
fn assert_rejects_short(bytes: &[u8], fixed: usize) {
    let cut = &bytes[..bytes.len() - 1];
    assert_eq!(Tlv::new_checked(cut), Err(Error::Truncated));
    assert_eq!(
        resolve(cut).ignored,
        vec![Ignored {
            offset: 0,
            tlv_type: bytes[0],
            reason: IgnoreReason::Truncated
        }]
    );
    if fixed > 0 {
        let mut short = bytes[..fixed + 1].to_vec();
        short[1] = u8::try_from(fixed - 1).expect("short fixed part");
        assert_eq!(TlvRepr::parse(&view(&short)), Err(Error::Malformed));
        let parsed = resolve(&[&short[..], &NEXT_ACK].concat());
        assert_eq!(reasons(&parsed), vec![IgnoreReason::Malformed]);
        assert_eq!(parsed.messages, vec![Message::Ack { opaque: 9 }]);
    }
}

mod framing {
    //! What holds for every TLV: the iterator, unknown types and AEs.
    use super::*;

    #[test]
    fn iterator_stops_at_overrun() {
        let body = [0x00, 0x01, 0x00, 0x04, 0x06, 0, 0];
        let mut it = TlvIter::new(&body);
        assert!(matches!(it.next(), Some(Ok(t)) if t.tlv_type() == kind::PAD1));
        assert!(matches!(it.next(), Some(Ok(t)) if t.tlv_type() == kind::PADN));
        assert_eq!(it.next(), Some(Err(Error::Truncated)));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn rejects_a_type_byte_without_its_length_byte() {
        assert_eq!(Tlv::new_checked(&[0x04u8][..]), Err(Error::Truncated));
    }

    #[test]
    fn keeps_unknown_tlv_opaque_and_skips_it() {
        let bytes = [0xc8, 0x01, 0x09];
        let repr = parse(&bytes);
        assert_eq!(
            repr,
            TlvRepr::Unknown {
                ty: 0xc8,
                value: &[9]
            }
        );
        assert_emits(&repr, &bytes);
        let parsed = resolve(&[&bytes[..], &NEXT_ACK].concat());
        assert_eq!(reasons(&parsed), vec![IgnoreReason::UnknownType]);
        assert_eq!(parsed.messages, vec![Message::Ack { opaque: 9 }]);
        // A known type cannot be smuggled out as an unknown one.
        let fake = TlvRepr::Unknown {
            ty: kind::HELLO,
            value: &[0; 6],
        };
        assert_eq!(fake.emit(&mut [0; 8]), Err(Error::Malformed));
    }

    #[test]
    fn keeps_unknown_ae_payload_opaque() {
        let bytes = [0x07, 0x04, 9, 0, 0xde, 0xad];
        let repr = parse(&bytes);
        assert_eq!(
            repr,
            TlvRepr::NextHop {
                ae: 9,
                reserved: 0,
                addr: &[0xde, 0xad],
                sub_tlvs: NONE
            }
        );
        assert_emits(&repr, &bytes);
    }

    #[test]
    fn refuses_to_emit_inconsistent_prefix() {
        let repr = TlvRepr::RouteRequest {
            ae: 2,
            plen: 64,
            prefix: &[0x20, 0x01],
            sub_tlvs: NONE,
        };
        let mut buf = [0u8; 16];
        assert_eq!(repr.emit(&mut buf), Err(Error::Malformed));
    }

    #[test]
    fn rejects_sub_tlv_overrunning_its_tlv() {
        // Hello with a Timestamp sub-TLV claiming 4 bytes but carrying 2.
        let bytes = [0x04, 0x0a, 0, 0, 0, 1, 1, 0x90, 3, 4, 0xaa, 0xbb];
        assert_eq!(TlvRepr::parse(&view(&bytes)), Err(Error::Malformed));
        // A sub-TLV type byte without its length byte.
        let bytes = [0x04, 0x07, 0, 0, 0, 1, 1, 0x90, 3];
        assert_eq!(TlvRepr::parse(&view(&bytes)), Err(Error::Malformed));
    }
}

mod padding {
    //! Pad1 and PadN (RFC 8966 section 4.6.1 and 4.6.2).
    use super::*;

    /// Pad1: the type byte alone.
    const PAD1: [u8; 1] = [0x00];
    /// PadN with three MBZ bytes.
    const PADN: [u8; 5] = [0x01, 0x03, 0x00, 0x00, 0x00];

    #[test]
    fn deconstructs_pad1_and_padn() {
        assert_view(&PAD1, kind::PAD1);
        assert_view(&PADN, kind::PADN);
        // Pad1 has no length byte: the next byte is the next TLV.
        assert_eq!(view(&[0x00, 0x06]).total_len(), 1);
    }

    #[test]
    fn constructs_pad1_and_padn() {
        // The emitter never pads; the view's setters write both.
        let mut pad1 = [0xff];
        Tlv::new_unchecked(&mut pad1[..]).set_tlv_type(kind::PAD1);
        assert_eq!(pad1, PAD1);
        let mut padn = [0xff; 5];
        let mut tlv = Tlv::new_unchecked(&mut padn[..]);
        tlv.set_tlv_type(kind::PADN);
        tlv.set_length(3);
        tlv.value_mut().fill(0);
        assert_eq!(padn, PADN);
    }

    #[test]
    fn parses_pad1_and_padn() {
        assert_eq!(parse(&PAD1), TlvRepr::Pad1);
        assert_eq!(parse(&PADN), TlvRepr::PadN { data: &[0, 0, 0] });
        // MBZ is not checked on receipt; the bytes are kept for re-emission.
        let dirty = [0x01, 0x02, 0xde, 0xad];
        assert_eq!(
            parse(&dirty),
            TlvRepr::PadN {
                data: &[0xde, 0xad]
            }
        );
        let parsed = resolve(&[&PAD1[..], &PADN, &dirty, &NEXT_ACK].concat());
        assert_eq!(parsed.messages, vec![Message::Ack { opaque: 9 }]);
        assert!(parsed.ignored.is_empty(), "padding is not reported");
    }

    #[test]
    fn emits_pad1_and_padn() {
        assert_emits(&TlvRepr::Pad1, &PAD1);
        assert_emits(&TlvRepr::PadN { data: &[0, 0, 0] }, &PADN);
        assert_emits(&TlvRepr::PadN { data: &[] }, &[0x01, 0x00]);
    }

    #[test]
    fn rejects_truncated_padn() {
        assert_eq!(Tlv::new_checked(&[] as &[u8]), Err(Error::Truncated));
        assert_rejects_short(&PADN, 0);
    }
}

mod ack_request {
    //! Acknowledgment Request (RFC 8966 section 4.6.3): Reserved (16 bits),
    //! Opaque (16), Interval (16, centiseconds), sub-TLVs.
    use super::*;

    /// Opaque 0x1234, answer within 4 s.
    pub(super) const ACK_REQ: [u8; 8] = [0x02, 0x06, 0x00, 0x00, 0x12, 0x34, 0x01, 0x90];

    fn message() -> Message {
        Message::AckRequest {
            opaque: 0x1234,
            interval: 400,
        }
    }

    #[test]
    fn deconstructs_ack_request() {
        assert_view(&ACK_REQ, kind::ACK_REQ);
    }

    #[test]
    fn constructs_ack_request() {
        assert_eq!(emitted_body(&[message()], None), ACK_REQ);
    }

    #[test]
    fn parses_ack_request() {
        assert_eq!(
            parse(&ACK_REQ),
            TlvRepr::AckReq {
                reserved: 0,
                opaque: 0x1234,
                interval: 400,
                sub_tlvs: NONE
            }
        );
        assert_eq!(resolve(&ACK_REQ).messages, vec![message()]);
        // Reserved is ignored on receipt.
        let mut reserved = ACK_REQ;
        reserved[2..4].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(resolve(&reserved).messages, vec![message()]);
    }

    #[test]
    fn emits_ack_request() {
        let repr = TlvRepr::AckReq {
            reserved: 0,
            opaque: 0x1234,
            interval: 400,
            sub_tlvs: NONE,
        };
        assert_emits(&repr, &ACK_REQ);
    }

    #[test]
    fn rejects_short_ack_request() {
        assert_rejects_short(&ACK_REQ, 6);
    }
}

mod ack {
    //! Acknowledgment (RFC 8966 section 4.6.4): Opaque (16 bits), sub-TLVs.
    use super::*;

    pub(super) const ACK: [u8; 4] = [0x03, 0x02, 0x12, 0x34];

    #[test]
    fn deconstructs_ack() {
        assert_view(&ACK, kind::ACK);
    }

    #[test]
    fn constructs_ack() {
        assert_eq!(emitted_body(&[Message::Ack { opaque: 0x1234 }], None), ACK);
    }

    #[test]
    fn parses_ack() {
        assert_eq!(
            parse(&ACK),
            TlvRepr::Ack {
                opaque: 0x1234,
                sub_tlvs: NONE
            }
        );
        assert_eq!(
            resolve(&ACK).messages,
            vec![Message::Ack { opaque: 0x1234 }]
        );
    }

    #[test]
    fn emits_ack() {
        let repr = TlvRepr::Ack {
            opaque: 0x1234,
            sub_tlvs: NONE,
        };
        assert_emits(&repr, &ACK);
    }

    #[test]
    fn rejects_short_ack() {
        assert_rejects_short(&ACK, 2);
    }
}

mod hello {
    //! Hello (RFC 8966 section 4.6.5): Flags (16 bits, U = 0x8000 for a
    //! unicast Hello, the rest MBZ), Seqno (16), Interval (16, centiseconds),
    //! sub-TLVs.
    use super::*;

    /// The capture's multicast Hello: seqno 0xe80c, next one in 4 s.
    pub(super) const MULTICAST: [u8; 8] = [0x04, 0x06, 0x00, 0x00, 0xe8, 0x0c, 0x01, 0x90];
    /// A unicast Hello, seqno 5 (unicast Hellos count separately).
    const UNICAST: [u8; 8] = [0x04, 0x06, 0x80, 0x00, 0x00, 0x05, 0x01, 0x90];

    fn hello(unicast: bool, seqno: u16) -> Message {
        Message::Hello(Hello {
            unicast,
            seqno,
            interval: 400,
            timestamp: None,
        })
    }

    #[test]
    fn deconstructs_hello() {
        assert_view(&MULTICAST, kind::HELLO);
        assert_view(&UNICAST, kind::HELLO);
    }

    #[test]
    fn constructs_hello() {
        assert_eq!(emitted_body(&[hello(false, 0xe80c)], None), MULTICAST);
        assert_eq!(emitted_body(&[hello(true, 5)], None), UNICAST);
    }

    #[test]
    fn parses_hello() {
        assert_eq!(
            parse(&MULTICAST),
            TlvRepr::Hello {
                flags: 0,
                seqno: 0xe80c,
                interval: 400,
                sub_tlvs: NONE
            }
        );
        assert_eq!(
            parse(&UNICAST),
            TlvRepr::Hello {
                flags: 0x8000,
                seqno: 5,
                interval: 400,
                sub_tlvs: NONE
            }
        );
        assert_eq!(resolve(&MULTICAST).messages, vec![hello(false, 0xe80c)]);
        assert_eq!(resolve(&UNICAST).messages, vec![hello(true, 5)]);
        // Only the U bit means anything; the other flag bits are ignored.
        let mut others = UNICAST;
        others[2..4].copy_from_slice(&[0x7f, 0xff]);
        assert_eq!(resolve(&others).messages, vec![hello(false, 5)]);
        others[2] = 0xff;
        assert_eq!(resolve(&others).messages, vec![hello(true, 5)]);
    }

    #[test]
    fn emits_hello() {
        let repr = |flags, seqno| TlvRepr::Hello {
            flags,
            seqno,
            interval: 400,
            sub_tlvs: NONE,
        };
        assert_emits(&repr(0, 0xe80c), &MULTICAST);
        assert_emits(&repr(0x8000, 5), &UNICAST);
    }

    #[test]
    fn rejects_short_hello() {
        assert_rejects_short(&UNICAST, 6);
    }
}

mod ihu {
    //! IHU (RFC 8966 section 4.6.6): AE, Reserved, Rxcost (16 bits),
    //! Interval (16, centiseconds), Address (per AE, never compressed),
    //! sub-TLVs.
    use super::*;

    /// About [`PEER`], AE 3: rxcost 96, next IHU within 12 s.
    pub(super) const IHU_LL: [u8; 16] = [
        0x05, 0x0e, 0x03, 0x00, 0x00, 0x60, 0x04, 0xb0, 0xd0, 0xa3, 0xb7, 0xff, 0xfe, 0x0c, 0xd7,
        0x69,
    ];
    /// AE 0: about whoever receives it (no address).
    const IHU_ANY: [u8; 8] = [0x05, 0x06, 0x00, 0x00, 0x00, 0x60, 0x04, 0xb0];
    /// AE 1: about 192.0.2.1.
    const IHU_V4: [u8; 12] = [0x05, 0x0a, 0x01, 0x00, 0x00, 0x60, 0x04, 0xb0, 192, 0, 2, 1];

    /// AE 2: about 2001:db8::1.
    fn ihu_v6() -> Vec<u8> {
        [
            &[0x05, 0x16, 0x02, 0x00, 0x00, 0x60, 0x04, 0xb0][..],
            &GLOBAL,
        ]
        .concat()
    }

    fn ihu(address: Option<IpAddr>) -> Message {
        Message::Ihu(Ihu {
            address,
            rxcost: 96,
            interval: 1200,
            timestamp: None,
        })
    }

    fn all() -> Vec<(Vec<u8>, Option<IpAddr>)> {
        vec![
            (IHU_LL.to_vec(), Some(PEER)),
            (IHU_ANY.to_vec(), None),
            (
                IHU_V4.to_vec(),
                Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            ),
            (ihu_v6(), Some(IpAddr::V6(Ipv6Addr::from(GLOBAL)))),
        ]
    }

    #[test]
    fn deconstructs_ihu() {
        for (bytes, _) in all() {
            assert_view(&bytes, kind::IHU);
        }
    }

    #[test]
    fn constructs_ihu() {
        // The emitter picks the shortest AE: 3 for fe80::/64, else 1 or 2.
        for (bytes, address) in all() {
            assert_eq!(emitted_body(&[ihu(address)], None), bytes, "{address:?}");
        }
    }

    #[test]
    fn parses_ihu() {
        assert_eq!(
            parse(&IHU_LL),
            TlvRepr::Ihu {
                ae: 3,
                reserved: 0,
                rxcost: 96,
                interval: 1200,
                addr: &PEER_LOW,
                sub_tlvs: NONE
            }
        );
        for (bytes, address) in all() {
            let parsed = resolve(&bytes);
            assert_eq!(parsed.messages, vec![ihu(address)], "{bytes:02x?}");
        }
    }

    #[test]
    fn emits_ihu() {
        let repr = |ae, addr| TlvRepr::Ihu {
            ae,
            reserved: 0,
            rxcost: 96,
            interval: 1200,
            addr,
            sub_tlvs: NONE,
        };
        assert_emits(&repr(3, &PEER_LOW), &IHU_LL);
        assert_emits(&repr(0, &[]), &IHU_ANY);
        assert_emits(&repr(2, &GLOBAL), &ihu_v6());
    }

    #[test]
    fn rejects_short_ihu() {
        // AE 3 makes the 8 address bytes part of the fixed fields.
        assert_rejects_short(&IHU_LL, 14);
        // AE 4 (RFC 9229) is for prefixes only; AE 9 is unknown.
        let mut ae4 = IHU_V4;
        ae4[2] = 4;
        assert_eq!(reasons(&resolve(&ae4)), vec![IgnoreReason::UnknownAe(4)]);
        let mut ae9 = IHU_V4;
        ae9[2] = 9;
        assert_eq!(reasons(&resolve(&ae9)), vec![IgnoreReason::UnknownAe(9)]);
    }
}

mod router_id {
    //! Router-Id (RFC 8966 section 4.6.7): Reserved (16 bits), Router-Id
    //! (64), sub-TLVs. Sets the router-id of the Updates that follow.
    use super::*;

    #[test]
    fn deconstructs_router_id() {
        assert_view(&ROUTER_ID, kind::ROUTER_ID);
    }

    #[test]
    fn constructs_router_id() {
        // The prefix's low 64 bits are not the id, so the emitter writes a
        // Router-Id TLV before the Update.
        let body = emitted_body(&[update("2001:db8:c::/64", SRC)], None);
        assert_eq!(body[..12], ROUTER_ID);
        assert_eq!(body[12], kind::UPDATE);
    }

    #[test]
    fn parses_router_id() {
        assert_eq!(
            parse(&ROUTER_ID),
            TlvRepr::RouterId {
                reserved: 0,
                router_id: ID,
                sub_tlvs: NONE
            }
        );
        // No message of its own; it names the source of the next Update.
        assert_eq!(resolve(&ROUTER_ID), ParsedPacket::default());
        let parsed = resolve(&[&ROUTER_ID[..], &UPDATE_V6].concat());
        assert_eq!(parsed.messages, vec![update("2001:db8:c::/64", SRC)]);
        // All-zeros and all-ones are reserved: the TLV is refused and no
        // router-id is in force afterwards.
        for reserved in [0x00, 0xff] {
            let mut bad = ROUTER_ID;
            bad[4..].fill(reserved);
            let parsed = resolve(&[&ROUTER_ID[..], &bad, &UPDATE_V6].concat());
            assert_eq!(
                reasons(&parsed),
                vec![IgnoreReason::ReservedRouterId, IgnoreReason::NoRouterId]
            );
        }
    }

    #[test]
    fn emits_router_id() {
        let repr = TlvRepr::RouterId {
            reserved: 0,
            router_id: ID,
            sub_tlvs: NONE,
        };
        assert_emits(&repr, &ROUTER_ID);
    }

    #[test]
    fn rejects_short_router_id() {
        assert_rejects_short(&ROUTER_ID, 10);
    }
}

mod next_hop {
    //! Next Hop (RFC 8966 section 4.6.8): AE (1, 2 or 3), Reserved, Next hop
    //! (per AE), sub-TLVs. Sets the next hop of the following Updates of its
    //! address family.
    use super::*;

    /// AE 1: 192.0.2.1.
    pub(super) const NH_V4: [u8; 8] = [0x07, 0x06, 0x01, 0x00, 192, 0, 2, 1];
    /// AE 3: [`PEER`].
    pub(super) const NH_LL: [u8; 12] = [
        0x07, 0x0a, 0x03, 0x00, 0xd0, 0xa3, 0xb7, 0xff, 0xfe, 0x0c, 0xd7, 0x69,
    ];

    /// AE 2: 2001:db8::1.
    fn nh_v6() -> Vec<u8> {
        [&[0x07, 0x12, 0x02, 0x00][..], &GLOBAL].concat()
    }

    #[test]
    fn deconstructs_next_hop() {
        assert_view(&NH_V4, kind::NEXT_HOP);
        assert_view(&NH_LL, kind::NEXT_HOP);
        assert_view(&nh_v6(), kind::NEXT_HOP);
    }

    #[test]
    fn constructs_next_hop() {
        // The emitter writes a Next Hop TLV first when the next hop is not
        // the packet source.
        let v4 = emitted_body(
            &[update("198.51.100.0/24", "192.0.2.1".parse().unwrap())],
            None,
        );
        assert_eq!(v4[..8], NH_V4);
        let ll = emitted_body(&[update("2001:db8:c::/64", PEER)], None);
        assert_eq!(ll[..12], NH_LL);
        let global = IpAddr::V6(Ipv6Addr::from(GLOBAL));
        let v6 = emitted_body(&[update("2001:db8:c::/64", global)], None);
        assert_eq!(v6[..20], nh_v6()[..]);
        // Via the packet source: no Next Hop TLV.
        let direct = emitted_body(&[update("2001:db8:c::/64", SRC)], None);
        assert_eq!(direct[0], kind::ROUTER_ID);
    }

    #[test]
    fn parses_next_hop() {
        assert_eq!(
            parse(&NH_V4),
            TlvRepr::NextHop {
                ae: 1,
                reserved: 0,
                addr: &[192, 0, 2, 1],
                sub_tlvs: NONE
            }
        );
        assert_eq!(resolve(&NH_LL), ParsedPacket::default());
        let v4 = resolve(&[&NH_V4[..], &ROUTER_ID, &UPDATE_V4].concat());
        assert_eq!(
            v4.messages,
            vec![update("198.51.100.0/24", "192.0.2.1".parse().unwrap())]
        );
        let ll = resolve(&[&NH_LL[..], &ROUTER_ID, &UPDATE_V6].concat());
        assert_eq!(ll.messages, vec![update("2001:db8:c::/64", PEER)]);
        // An IPv4 next hop leaves IPv6 Updates alone.
        let mixed = resolve(&[&NH_V4[..], &ROUTER_ID, &UPDATE_V6].concat());
        assert_eq!(mixed.messages, vec![update("2001:db8:c::/64", SRC)]);
    }

    #[test]
    fn emits_next_hop() {
        let repr = |ae, addr| TlvRepr::NextHop {
            ae,
            reserved: 0,
            addr,
            sub_tlvs: NONE,
        };
        assert_emits(&repr(1, &[192, 0, 2, 1]), &NH_V4);
        assert_emits(&repr(3, &PEER_LOW), &NH_LL);
        assert_emits(&repr(2, &GLOBAL), &nh_v6());
    }

    #[test]
    fn rejects_short_next_hop() {
        assert_rejects_short(&NH_V4, 6);
        // AE 0 carries no next hop, so it cannot be one.
        let ae0 = [0x07, 0x02, 0x00, 0x00];
        assert_eq!(reasons(&resolve(&ae0)), vec![IgnoreReason::UnknownAe(0)]);
    }
}

mod update {
    //! Update (RFC 8966 section 4.6.9). Prefix compression, AE 0-4 and the
    //! router-id flag are resolved one level up, see `message.rs`.
    use super::*;

    // Update AE 2, flags 0x80, plen 64, omitted 0, interval 1600, seqno 50324,
    // metric 96, prefix 2001:db8:c::, then a PadN sub-TLV of 1 byte.
    static UPDATE_BYTES: [u8; 23] = [
        0x08, 0x15, 0x02, 0x80, 0x40, 0x00, 0x06, 0x40, 0xc4, 0x94, 0x00, 0x60, 0x20, 0x01, 0x0d,
        0xb8, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x01, 0x00,
    ];

    fn update_repr() -> TlvRepr<'static> {
        TlvRepr::Update {
            ae: 2,
            flags: 0x80,
            plen: 64,
            omitted: 0,
            interval: 1600,
            seqno: 50324,
            metric: 96,
            prefix: &UPDATE_BYTES[12..20],
            sub_tlvs: SubTlvs::new(&UPDATE_BYTES[20..]).unwrap(),
        }
    }

    #[test]
    fn deconstructs_tlv() {
        let tlv = Tlv::new_checked(&UPDATE_BYTES[..]).unwrap();
        assert_eq!(tlv.tlv_type(), kind::UPDATE);
        assert_eq!(tlv.length(), 21);
        assert_eq!(tlv.total_len(), 23);
        assert_eq!(tlv.value(), &UPDATE_BYTES[2..]);
        let pad1 = Tlv::new_checked(&[0u8, 0xff][..]).unwrap();
        assert_eq!(pad1.total_len(), 1);
        assert_eq!(pad1.value(), &[] as &[u8]);
    }

    #[test]
    fn constructs_tlv() {
        let mut bytes = [0u8; 23];
        let mut tlv = Tlv::new_unchecked(&mut bytes[..]);
        tlv.set_tlv_type(kind::UPDATE);
        tlv.set_length(21);
        tlv.value_mut().copy_from_slice(&UPDATE_BYTES[2..]);
        assert_eq!(bytes, UPDATE_BYTES);
    }

    #[test]
    fn parses_update() {
        let tlv = Tlv::new_checked(&UPDATE_BYTES[..]).unwrap();
        let repr = TlvRepr::parse(&tlv).unwrap();
        assert_eq!(repr, update_repr());
        let TlvRepr::Update { sub_tlvs, .. } = repr else {
            panic!("not an update")
        };
        let subs: Vec<_> = sub_tlvs.iter().collect();
        assert_eq!(
            subs,
            vec![SubTlv {
                ty: sub_kind::PADN,
                value: &[0]
            }]
        );
    }

    #[test]
    fn emits_update() {
        let repr = update_repr();
        assert_eq!(repr.buffer_len(), 23);
        let mut buf = [0u8; 23];
        assert_eq!(repr.emit(&mut buf).unwrap(), 23);
        assert_eq!(buf, UPDATE_BYTES);
    }

    #[test]
    fn rejects_impossible_length() {
        // Length byte says 21, only 10 bytes of payload present.
        assert_eq!(Tlv::new_checked(&UPDATE_BYTES[..12]), Err(Error::Truncated));
        // Length 3: too short for the Update's fixed fields.
        let short = [0x08, 0x03, 0x02, 0x80, 0x40];
        let tlv = Tlv::new_checked(&short[..]).unwrap();
        assert_eq!(TlvRepr::parse(&tlv), Err(Error::Malformed));
    }

    #[test]
    fn rejects_truncated_update() {
        // plen 64 needs 8 prefix bytes; only 4 present.
        let bytes = [
            0x08, 0x0e, 2, 0, 64, 0, 0, 1, 0, 1, 0, 0, 0x20, 0x01, 0x0d, 0xb8,
        ];
        let tlv = Tlv::new_checked(&bytes[..]).unwrap();
        assert_eq!(TlvRepr::parse(&tlv), Err(Error::Malformed));
    }

    #[test]
    fn parses_wildcard_retraction() {
        // AE 0, plen 0, metric infinity: every route of the sender.
        let bytes = [0x08, 0x0a, 0, 0, 0, 0, 0xff, 0xff, 0xd1, 0xac, 0xff, 0xff];
        let repr = parse(&bytes);
        assert_eq!(
            repr,
            TlvRepr::Update {
                ae: 0,
                flags: 0,
                plen: 0,
                omitted: 0,
                interval: 0xffff,
                seqno: 0xd1ac,
                metric: 0xffff,
                prefix: &[],
                sub_tlvs: NONE
            }
        );
        assert_emits(&repr, &bytes);
        assert_rejects_short(&bytes, 10);
    }
}

mod route_request {
    //! Route Request (RFC 8966 section 4.6.10): AE, Plen, Prefix (never
    //! compressed), sub-TLVs. AE 0 asks for a full update.
    use super::*;

    const RR_WILDCARD: [u8; 4] = [0x09, 0x02, 0x00, 0x00];
    /// 2001:db8:c::/64.
    pub(super) const RR_V6: [u8; 12] = [
        0x09, 0x0a, 0x02, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0c, 0x00, 0x00,
    ];
    /// 198.51.100.0/24.
    const RR_V4: [u8; 7] = [0x09, 0x05, 0x01, 0x18, 198, 51, 100];

    fn request(prefix: Option<&str>) -> Message {
        Message::RouteRequest(RouteRequest {
            prefix: prefix.map(|p| p.parse().expect("valid prefix")),
            source_prefix: None,
        })
    }

    fn requests() -> Vec<Message> {
        vec![
            request(None),
            request(Some("2001:db8:c::/64")),
            request(Some("198.51.100.0/24")),
        ]
    }

    #[test]
    fn deconstructs_route_request() {
        assert_view(&RR_WILDCARD, kind::ROUTE_REQUEST);
        assert_view(&RR_V6, kind::ROUTE_REQUEST);
        assert_view(&RR_V4, kind::ROUTE_REQUEST);
    }

    #[test]
    fn constructs_route_request() {
        assert_eq!(
            emitted_body(&requests(), None),
            [&RR_WILDCARD[..], &RR_V6, &RR_V4].concat()
        );
    }

    #[test]
    fn parses_route_request() {
        assert_eq!(
            parse(&RR_WILDCARD),
            TlvRepr::RouteRequest {
                ae: 0,
                plen: 0,
                prefix: &[],
                sub_tlvs: NONE
            }
        );
        assert_eq!(
            parse(&RR_V6),
            TlvRepr::RouteRequest {
                ae: 2,
                plen: 64,
                prefix: &RR_V6[4..],
                sub_tlvs: NONE
            }
        );
        let parsed = resolve(&[&RR_WILDCARD[..], &RR_V6, &RR_V4].concat());
        assert_eq!(parsed.messages, requests());
    }

    #[test]
    fn emits_route_request() {
        let repr = |ae, plen, prefix| TlvRepr::RouteRequest {
            ae,
            plen,
            prefix,
            sub_tlvs: NONE,
        };
        assert_emits(&repr(0, 0, &[]), &RR_WILDCARD);
        assert_emits(&repr(2, 64, &RR_V6[4..]), &RR_V6);
        assert_emits(&repr(1, 24, &[198, 51, 100]), &RR_V4);
    }

    #[test]
    fn rejects_short_route_request() {
        // Plen 64 makes 8 prefix bytes part of the fixed fields.
        assert_rejects_short(&RR_V6, 10);
        // A wildcard has no prefix length; IPv4 has no /33.
        let wildcard_plen = [0x09, 0x02, 0x00, 0x08];
        let v4_33 = [0x09, 0x07, 0x01, 0x21, 198, 51, 100, 0, 0];
        assert_eq!(
            reasons(&resolve(&[&wildcard_plen[..], &v4_33].concat())),
            vec![IgnoreReason::BadPrefixLength; 2]
        );
    }
}

mod seqno_request {
    //! Seqno Request (RFC 8966 section 4.6.11): AE, Plen, Seqno (16 bits),
    //! Hop Count, Reserved, Router-Id (64), Prefix (never compressed),
    //! sub-TLVs.
    use super::*;

    /// 2001:db8:c::/64 from [`ID`], seqno 50324, 64 hops left.
    pub(super) const SR: [u8; 24] = [
        0x0a, 0x16, 0x02, 0x40, 0xc4, 0x94, 0x40, 0x00, 0xbc, 0xdf, 0xb0, 0x6a, 0xc4, 0xdb, 0x64,
        0xda, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x0c, 0x00, 0x00,
    ];

    fn message() -> Message {
        Message::SeqnoRequest(SeqnoRequest {
            prefix: "2001:db8:c::/64".parse().unwrap(),
            source_prefix: None,
            seqno: 50324,
            hop_count: 64,
            router_id: ID,
        })
    }

    fn repr() -> TlvRepr<'static> {
        TlvRepr::SeqnoRequest {
            ae: 2,
            plen: 64,
            seqno: 50324,
            hop_count: 64,
            reserved: 0,
            router_id: ID,
            prefix: &SR[16..],
            sub_tlvs: NONE,
        }
    }

    #[test]
    fn deconstructs_seqno_request() {
        assert_view(&SR, kind::SEQNO_REQUEST);
    }

    #[test]
    fn constructs_seqno_request() {
        assert_eq!(emitted_body(&[message()], None), SR);
    }

    #[test]
    fn parses_seqno_request() {
        assert_eq!(parse(&SR), repr());
        assert_eq!(resolve(&SR).messages, vec![message()]);
    }

    #[test]
    fn emits_seqno_request() {
        assert_emits(&repr(), &SR);
    }

    #[test]
    fn rejects_short_seqno_request() {
        assert_rejects_short(&SR, 22);
        // A seqno request is always about one prefix: AE 0 is meaningless.
        let mut ae0 = SR[..16].to_vec();
        ae0[1] = 14;
        ae0[2] = 0;
        ae0[3] = 0;
        assert_eq!(reasons(&resolve(&ae0)), vec![IgnoreReason::UnknownAe(0)]);
    }
}

mod mac_tlv {
    //! MAC (RFC 8967 section 4.1): the MAC alone, in the packet trailer.
    use super::*;
    use crate::wire::mac::{self, MacError, PseudoHeader};
    use crate::wire::message::parse_packet;
    use crate::wire::packet::{HEADER_LEN, Packet, PacketRepr};
    use crate::wire::test_util::packet;
    use crate::wire::{BABEL_MULTICAST_V6, BABEL_PORT};

    /// The trailer of the README's worked example 1: HMAC-SHA256 of
    /// [`CAPTURE_BODY`] under [`key`].
    const MAC_TLV: [u8; 34] = [
        0x10, 0x20, 0x28, 0xb1, 0xd2, 0x7b, 0xc0, 0xd4, 0xa7, 0xed, 0x51, 0x38, 0x34, 0xbb, 0x43,
        0xe6, 0x2e, 0xa4, 0x25, 0x80, 0x78, 0xb0, 0x66, 0x1b, 0xe8, 0x94, 0x9a, 0x40, 0x14, 0x4e,
        0xc7, 0x6e, 0x73, 0x18,
    ];

    /// The captures' key, bytes 0x00..=0x1f.
    fn key() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    /// Multicast from [`SRC`], port 6696 both ends.
    fn pseudo() -> PseudoHeader {
        PseudoHeader {
            src: SRC,
            src_port: BABEL_PORT,
            dst: IpAddr::V6(BABEL_MULTICAST_V6),
            dst_port: BABEL_PORT,
        }
    }

    /// The whole signed capture packet.
    fn signed() -> Vec<u8> {
        [packet(&CAPTURE_BODY), MAC_TLV.to_vec()].concat()
    }

    #[test]
    fn deconstructs_mac() {
        assert_view(&MAC_TLV, kind::MAC);
        let signed = signed();
        let packet = Packet::new_checked(&signed[..]).unwrap();
        assert_eq!(packet.trailer(), &MAC_TLV);
        let trailer: Vec<_> = packet.trailer_tlvs().collect();
        assert_eq!(trailer, vec![Ok(view(&MAC_TLV))]);
    }

    #[test]
    fn constructs_mac() {
        let len = HEADER_LEN + CAPTURE_BODY.len();
        let mut buf = [packet(&CAPTURE_BODY), vec![0; 2 * mac::MAC_TLV_LEN]].concat();
        let len = mac::sign(&mut buf, len, &pseudo(), &key()).unwrap();
        assert_eq!(buf[..len], signed());
        // A second key appends a second MAC TLV; the body stays covered alone.
        let len = mac::sign(&mut buf, len, &pseudo(), &[0xff; 32]).unwrap();
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        let kinds: Vec<_> = packet
            .trailer_tlvs()
            .map(|t| t.map(|t| (t.tlv_type(), t.length())))
            .collect();
        assert_eq!(kinds, vec![Ok((kind::MAC, 32)); 2]);
        assert_eq!(packet.trailer()[..34], MAC_TLV);
    }

    #[test]
    fn parses_mac() {
        assert_eq!(parse(&MAC_TLV), TlvRepr::Mac { mac: &MAC_TLV[2..] });
        // In the trailer: counted, and the body's messages are all there.
        let parsed = parse_packet(&signed(), SRC, &ParseOptions::default()).unwrap();
        assert_eq!(parsed.trailer_macs, 1);
        assert_eq!(parsed.messages, resolve(&CAPTURE_BODY).messages);
        assert_eq!(mac::verify(&signed(), &pseudo(), &[key()]), Ok(0));
        // In the body it means nothing (it would cover itself).
        let parsed = resolve(&[&MAC_TLV[..], &NEXT_ACK].concat());
        assert_eq!(reasons(&parsed), vec![IgnoreReason::MacInBody]);
        assert_eq!(parsed.messages, vec![Message::Ack { opaque: 9 }]);
    }

    #[test]
    fn emits_mac() {
        let repr = TlvRepr::Mac { mac: &MAC_TLV[2..] };
        assert_emits(&repr, &MAC_TLV);
        // The whole capture packet, trailer included, re-emits byte for byte.
        let signed = signed();
        let pkt = Packet::new_checked(&signed[..]).unwrap();
        let packet = PacketRepr::parse(&pkt).unwrap();
        assert_eq!(packet.trailer, vec![repr]);
        let mut buf = vec![0; packet.buffer_len()];
        assert_eq!(packet.emit(&mut buf), Ok(signed.len()));
        assert_eq!(buf, signed);
    }

    #[test]
    fn rejects_truncated_mac() {
        assert_rejects_short(&MAC_TLV, 0);
        // A MAC TLV cut short in the trailer is no MAC: the packet counts as
        // unsigned, and the lossless layer refuses it.
        let mut cut = signed();
        cut.pop();
        let pkt = Packet::new_checked(&cut[..]).unwrap();
        assert_eq!(PacketRepr::parse(&pkt), Err(Error::Truncated));
        let parsed = parse_packet(&cut, SRC, &ParseOptions::default()).unwrap();
        assert_eq!(parsed.trailer_macs, 0);
        assert_eq!(mac::verify(&cut, &pseudo(), &[key()]), Err(MacError::NoMac));
    }
}

mod pc {
    //! PC (RFC 8967 section 4.2): PC (32 bits), Index (the rest: babeld
    //! sends 8 bytes, BIRD 32).
    use super::*;
    use crate::wire::PcState;

    /// babeld's PC from the capture: counter 0, 8-byte index.
    fn pc_babeld() -> &'static [u8] {
        &CAPTURE_BODY[12..]
    }

    /// BIRD-style: counter 7, 32-byte index.
    fn pc_bird() -> Vec<u8> {
        [&[0x11, 0x24, 0x00, 0x00, 0x00, 0x07][..], &[0x5a; 32]].concat()
    }

    #[test]
    fn deconstructs_pc() {
        assert_view(pc_babeld(), kind::PC);
        assert_view(&pc_bird(), kind::PC);
    }

    #[test]
    fn constructs_pc() {
        // The emitter ends every packet with the interface's PC: this
        // rebuilds the capture's body exactly.
        let mut pc = PcState {
            index: CAPTURE_BODY[18..].to_vec(),
            counter: 0,
        };
        let messages = [
            Message::Hello(Hello {
                unicast: false,
                seqno: 0xe80c,
                interval: 400,
                timestamp: None,
            }),
            Message::RouteRequest(RouteRequest {
                prefix: None,
                source_prefix: None,
            }),
        ];
        assert_eq!(emitted_body(&messages, Some(&mut pc)), CAPTURE_BODY);
        assert_eq!(pc.counter, 1);
    }

    #[test]
    fn parses_pc() {
        assert_eq!(
            parse(pc_babeld()),
            TlvRepr::Pc {
                counter: 0,
                index: &CAPTURE_BODY[18..]
            }
        );
        let parsed = resolve(&[pc_babeld(), &pc_bird()].concat());
        assert_eq!(
            parsed.messages,
            vec![
                Message::Pc {
                    counter: 0,
                    index: CAPTURE_BODY[18..].to_vec()
                },
                Message::Pc {
                    counter: 7,
                    index: vec![0x5a; 32]
                }
            ]
        );
    }

    #[test]
    fn emits_pc() {
        let babeld = TlvRepr::Pc {
            counter: 0,
            index: &CAPTURE_BODY[18..],
        };
        assert_emits(&babeld, pc_babeld());
        let bird = TlvRepr::Pc {
            counter: 7,
            index: &[0x5a; 32],
        };
        assert_emits(&bird, &pc_bird());
    }

    #[test]
    fn rejects_short_pc() {
        assert_rejects_short(pc_babeld(), 4);
    }
}

mod challenge {
    //! Challenge Request and Challenge Reply (RFC 8967 sections 4.3 and
    //! 4.4): the nonce alone, 0 to 192 bytes.
    use super::*;

    const NONCE: [u8; 8] = [0x8d, 0x3b, 0x1f, 0x62, 0x0e, 0xa7, 0x55, 0xc4];
    const REQUEST: [u8; 10] = [0x12, 0x08, 0x8d, 0x3b, 0x1f, 0x62, 0x0e, 0xa7, 0x55, 0xc4];
    const REPLY: [u8; 10] = [0x13, 0x08, 0x8d, 0x3b, 0x1f, 0x62, 0x0e, 0xa7, 0x55, 0xc4];

    fn request() -> Message {
        Message::ChallengeRequest {
            nonce: NONCE.to_vec(),
        }
    }

    fn reply() -> Message {
        Message::ChallengeReply {
            nonce: NONCE.to_vec(),
        }
    }

    #[test]
    fn deconstructs_challenge_request() {
        assert_view(&REQUEST, kind::CHALLENGE_REQUEST);
    }

    #[test]
    fn constructs_challenge_request() {
        assert_eq!(emitted_body(&[request()], None), REQUEST);
    }

    #[test]
    fn parses_challenge_request() {
        assert_eq!(parse(&REQUEST), TlvRepr::ChallengeRequest { nonce: &NONCE });
        assert_eq!(resolve(&REQUEST).messages, vec![request()]);
        // An empty nonce is allowed.
        assert_eq!(
            resolve(&[0x12, 0x00]).messages,
            vec![Message::ChallengeRequest { nonce: vec![] }]
        );
    }

    #[test]
    fn emits_challenge_request() {
        assert_emits(&TlvRepr::ChallengeRequest { nonce: &NONCE }, &REQUEST);
    }

    #[test]
    fn rejects_truncated_challenge_request() {
        assert_rejects_short(&REQUEST, 0);
    }

    #[test]
    fn deconstructs_challenge_reply() {
        assert_view(&REPLY, kind::CHALLENGE_REPLY);
    }

    #[test]
    fn constructs_challenge_reply() {
        assert_eq!(emitted_body(&[reply()], None), REPLY);
    }

    #[test]
    fn parses_challenge_reply() {
        assert_eq!(parse(&REPLY), TlvRepr::ChallengeReply { nonce: &NONCE });
        assert_eq!(resolve(&REPLY).messages, vec![reply()]);
        assert_eq!(
            resolve(&[0x13, 0x00]).messages,
            vec![Message::ChallengeReply { nonce: vec![] }]
        );
    }

    #[test]
    fn emits_challenge_reply() {
        assert_emits(&TlvRepr::ChallengeReply { nonce: &NONCE }, &REPLY);
    }

    #[test]
    fn rejects_truncated_challenge_reply() {
        assert_rejects_short(&REPLY, 0);
    }
}

mod timestamp_sub_tlv {
    //! Timestamp sub-TLV (RFC 9616 section 3), type 3, not mandatory: in a
    //! Hello the transmit time (32 bits), in an IHU the origin time copied
    //! from the neighbour's Hello and the receive time (32 bits each).
    use super::*;

    const TS: [u8; 6] = [0x03, 0x04, 0x84, 0x7f, 0x3b, 0x4b];
    const HELLO_TS: [u8; 14] = [
        0x04, 0x0c, 0x00, 0x00, 0xe8, 0x0c, 0x01, 0x90, 0x03, 0x04, 0x84, 0x7f, 0x3b, 0x4b,
    ];
    const IHU_TS: [u8; 26] = [
        0x05, 0x18, 0x03, 0x00, 0x00, 0x60, 0x04, 0xb0, 0xd0, 0xa3, 0xb7, 0xff, 0xfe, 0x0c, 0xd7,
        0x69, 0x03, 0x08, 0x84, 0x7f, 0x3b, 0x4b, 0x05, 0x71, 0x9a, 0x2c,
    ];

    fn hello(timestamp: Option<u32>) -> Message {
        Message::Hello(Hello {
            unicast: false,
            seqno: 0xe80c,
            interval: 400,
            timestamp,
        })
    }

    fn ihu(timestamp: Option<IhuTimestamp>) -> Message {
        Message::Ihu(Ihu {
            address: Some(PEER),
            rxcost: 96,
            interval: 1200,
            timestamp,
        })
    }

    const IHU_STAMPS: IhuTimestamp = IhuTimestamp {
        origin: 0x847f_3b4b,
        receive: 0x0571_9a2c,
    };

    #[test]
    fn deconstructs_timestamp_sub_tlv() {
        let hello: Vec<_> = SubTlvs::new(&HELLO_TS[8..]).unwrap().iter().collect();
        assert_eq!(
            hello,
            vec![SubTlv {
                ty: sub_kind::TIMESTAMP,
                value: &TS[2..]
            }]
        );
        assert!(!hello[0].is_mandatory());
        let ihu: Vec<_> = SubTlvs::new(&IHU_TS[16..]).unwrap().iter().collect();
        assert_eq!(
            ihu,
            vec![SubTlv {
                ty: sub_kind::TIMESTAMP,
                value: &IHU_TS[18..]
            }]
        );
        // Between Pad1 and PadN sub-TLVs.
        let padded = [&[0x00, 0x01, 0x01, 0x00][..], &TS].concat();
        let subs: Vec<_> = SubTlvs::new(&padded).unwrap().iter().collect();
        let types: Vec<_> = subs.iter().map(|s| s.ty).collect();
        assert_eq!(types, [sub_kind::PAD1, sub_kind::PADN, sub_kind::TIMESTAMP]);
        assert_eq!(subs[2].value, &TS[2..]);
    }

    #[test]
    fn constructs_timestamp_sub_tlv() {
        assert_eq!(emitted_body(&[hello(Some(0x847f_3b4b))], None), HELLO_TS);
        assert_eq!(emitted_body(&[ihu(Some(IHU_STAMPS))], None), IHU_TS);
    }

    #[test]
    fn parses_timestamp_sub_tlv() {
        assert_eq!(
            parse(&HELLO_TS),
            TlvRepr::Hello {
                flags: 0,
                seqno: 0xe80c,
                interval: 400,
                sub_tlvs: SubTlvs(&TS)
            }
        );
        let parsed = resolve(&[&HELLO_TS[..], &IHU_TS].concat());
        assert_eq!(
            parsed.messages,
            vec![hello(Some(0x847f_3b4b)), ihu(Some(IHU_STAMPS))]
        );
        // Padding sub-TLVs around it change nothing.
        let padded = with_sub(
            &hello::MULTICAST,
            &[&[0x00, 0x01, 0x01, 0x00][..], &TS].concat(),
        );
        assert_eq!(resolve(&padded).messages, vec![hello(Some(0x847f_3b4b))]);
    }

    #[test]
    fn emits_timestamp_sub_tlv() {
        let hello = TlvRepr::Hello {
            flags: 0,
            seqno: 0xe80c,
            interval: 400,
            sub_tlvs: SubTlvs::new(&TS).unwrap(),
        };
        assert_emits(&hello, &HELLO_TS);
        let ihu = TlvRepr::Ihu {
            ae: 3,
            reserved: 0,
            rxcost: 96,
            interval: 1200,
            addr: &PEER_LOW,
            sub_tlvs: SubTlvs::new(&IHU_TS[16..]).unwrap(),
        };
        assert_emits(&ihu, &IHU_TS);
    }

    #[test]
    fn rejects_malformed_timestamp_sub_tlv() {
        // Overrunning its TLV: the TLV is malformed.
        let mut overrun = [&hello::MULTICAST[..], &TS[..4]].concat();
        overrun[1] += 4;
        assert_eq!(TlvRepr::parse(&view(&overrun)), Err(Error::Malformed));
        assert_eq!(reasons(&resolve(&overrun)), vec![IgnoreReason::Malformed]);
        // The wrong size for its TLV (IHU-sized in a Hello, Hello-sized in an
        // IHU): the sub-TLV is not understood, and it is not mandatory, so
        // the TLV counts without a timestamp.
        let long = with_sub(&hello::MULTICAST, &IHU_TS[16..]);
        let short = with_sub(&ihu::IHU_LL, &TS);
        let parsed = resolve(&[long, short].concat());
        assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
        assert_eq!(parsed.messages, vec![hello(None), ihu(None)]);
    }
}

mod source_prefix_sub_tlv {
    //! Source Prefix sub-TLV (RFC 9079 section 7.1), type 128 (mandatory):
    //! Source Plen, then the source prefix in ceil(plen / 8) bytes, of the
    //! enclosing TLV's address family, never compressed; plen 0 is invalid.
    use super::*;

    /// Source 2001:db8::/32.
    const SOURCE: [u8; 7] = [0x80, 0x05, 0x20, 0x20, 0x01, 0x0d, 0xb8];
    /// Update AE 2 flags 0x80 ::/0 from 2001:db8::/32, the fields of [`UPDATE_V6`].
    const UPDATE_SS: [u8; 19] = [
        0x08, 0x11, 0x02, 0x80, 0x00, 0x00, 0x06, 0x40, 0xc4, 0x94, 0x00, 0x60, 0x80, 0x05, 0x20,
        0x20, 0x01, 0x0d, 0xb8,
    ];
    /// Route Request for ::/0 from 2001:db8::/32.
    const RR_SS: [u8; 11] = [
        0x09, 0x09, 0x02, 0x00, 0x80, 0x05, 0x20, 0x20, 0x01, 0x0d, 0xb8,
    ];
    /// Seqno Request for ::/0 from 2001:db8::/32, the fields of `seqno_request::SR`.
    const SR_SS: [u8; 23] = [
        0x0a, 0x15, 0x02, 0x00, 0xc4, 0x94, 0x40, 0x00, 0xbc, 0xdf, 0xb0, 0x6a, 0xc4, 0xdb, 0x64,
        0xda, 0x80, 0x05, 0x20, 0x20, 0x01, 0x0d, 0xb8,
    ];

    const SS: ParseOptions = ParseOptions {
        source_specific: true,
    };

    fn messages() -> Vec<Message> {
        let default = "::/0".parse().unwrap();
        let source = Some("2001:db8::/32".parse().unwrap());
        vec![
            Message::Update(Update {
                prefix: default,
                source_prefix: source,
                router_id: Some(ID),
                next_hop: SRC,
                metric: 96,
                seqno: 50324,
                interval: 1600,
                signature: None,
            }),
            Message::RouteRequest(RouteRequest {
                prefix: Some(default),
                source_prefix: source,
            }),
            Message::SeqnoRequest(SeqnoRequest {
                prefix: default,
                source_prefix: source,
                seqno: 50324,
                hop_count: 64,
                router_id: ID,
            }),
        ]
    }

    fn body() -> Vec<u8> {
        [&ROUTER_ID[..], &UPDATE_SS, &RR_SS, &SR_SS].concat()
    }

    #[test]
    fn deconstructs_source_prefix_sub_tlv() {
        for (tlv, at) in [(&UPDATE_SS[..], 12), (&RR_SS[..], 4), (&SR_SS[..], 16)] {
            let subs: Vec<_> = SubTlvs::new(&tlv[at..]).unwrap().iter().collect();
            assert_eq!(
                subs,
                vec![SubTlv {
                    ty: sub_kind::SOURCE_PREFIX,
                    value: &SOURCE[2..]
                }]
            );
            assert!(subs[0].is_mandatory());
        }
    }

    #[test]
    fn constructs_source_prefix_sub_tlv() {
        assert_eq!(emitted_body(&messages(), None), body());
    }

    #[test]
    fn parses_source_prefix_sub_tlv() {
        let TlvRepr::Update { sub_tlvs, .. } = parse(&UPDATE_SS) else {
            panic!("not an update")
        };
        assert_eq!(sub_tlvs.as_bytes(), SOURCE);
        let parsed = resolve_with(&body(), &SS);
        assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
        assert_eq!(parsed.messages, messages());
        // A router without source-specific routing must ignore all three
        // (the sub-TLV is mandatory).
        let plain = resolve(&body());
        assert!(plain.messages.is_empty());
        assert_eq!(
            reasons(&plain),
            vec![IgnoreReason::UnknownMandatorySubTlv(sub_kind::SOURCE_PREFIX); 3]
        );
    }

    #[test]
    fn emits_source_prefix_sub_tlv() {
        let repr = TlvRepr::Update {
            ae: 2,
            flags: 0x80,
            plen: 0,
            omitted: 0,
            interval: 1600,
            seqno: 50324,
            metric: 96,
            prefix: &[],
            sub_tlvs: SubTlvs::new(&SOURCE).unwrap(),
        };
        assert_emits(&repr, &UPDATE_SS);
        let repr = TlvRepr::RouteRequest {
            ae: 2,
            plen: 0,
            prefix: &[],
            sub_tlvs: SubTlvs::new(&SOURCE).unwrap(),
        };
        assert_emits(&repr, &RR_SS);
    }

    #[test]
    fn rejects_malformed_source_prefix_sub_tlv() {
        let bad = [
            vec![0x80, 0x01, 0x00],                          // source plen 0
            vec![0x80, 0x04, 0x20, 0x20, 0x01, 0x0d],        // /32 in 3 bytes
            [&[0x80, 0x12, 0x81][..], &[0x20; 17]].concat(), // /129
            [SOURCE, SOURCE].concat(),                       // twice
        ];
        for sub in bad {
            let body = [&ROUTER_ID[..], &with_sub(&UPDATE_V6, &sub)].concat();
            let parsed = resolve_with(&body, &SS);
            assert_eq!(
                reasons(&parsed),
                vec![IgnoreReason::BadSourcePrefix],
                "{sub:02x?}"
            );
        }
        // A wildcard request has no address family for it; IPv4 has no /33.
        let wildcard = with_sub(&[0x09, 0x02, 0x00, 0x00], &SOURCE);
        let v4 = with_sub(&UPDATE_V4, &[0x80, 0x06, 0x21, 198, 51, 100, 0, 0]);
        let body = [&wildcard[..], &next_hop::NH_V4, &ROUTER_ID, &v4].concat();
        let parsed = resolve_with(&body, &SS);
        assert_eq!(reasons(&parsed), vec![IgnoreReason::BadSourcePrefix; 2]);
        // Overrunning its TLV: malformed.
        // (The sub-TLV claims 5 bytes and holds 3.)
        let overrun = with_sub(&UPDATE_V6, &SOURCE[..5]);
        assert_eq!(TlvRepr::parse(&view(&overrun)), Err(Error::Malformed));
    }
}

mod mandatory_sub_tlvs {
    //! RFC 8966 section 4.4: a sub-TLV type with bit 0x80 set is mandatory;
    //! a TLV holding one the receiver does not understand is ignored as a
    //! whole, except for the parser state a Router-Id, Next Hop or Update
    //! sets. Unknown sub-TLVs without the bit are skipped.
    use super::*;

    /// Unknown sub-TLV 0x9f, mandatory.
    const MANDATORY: [u8; 3] = [0x9f, 0x01, 0x00];
    /// The same type without the mandatory bit, 0x1f.
    const OPTIONAL: [u8; 3] = [0x1f, 0x01, 0x00];

    /// Every TLV that carries sub-TLVs and yields a message.
    fn tlvs() -> [&'static [u8]; 7] {
        [
            &ack_request::ACK_REQ,
            &ack::ACK,
            &hello::MULTICAST,
            &ihu::IHU_LL,
            &UPDATE_V6,
            &route_request::RR_V6,
            &seqno_request::SR,
        ]
    }

    #[test]
    fn skips_unknown_optional_sub_tlvs() {
        for tlv in tlvs() {
            let plain = resolve(&[&ROUTER_ID[..], tlv].concat());
            assert!(plain.ignored.is_empty(), "{tlv:02x?}: {:?}", plain.ignored);
            assert_eq!(plain.messages.len(), 1, "{tlv:02x?}");
            let optional = resolve(&[&ROUTER_ID[..], &with_sub(tlv, &OPTIONAL)].concat());
            assert_eq!(optional, plain, "{tlv:02x?}");
        }
    }

    #[test]
    fn ignores_tlv_with_unknown_mandatory_sub_tlv() {
        for tlv in tlvs() {
            let body = [&ROUTER_ID[..], &with_sub(tlv, &MANDATORY), &NEXT_ACK].concat();
            let parsed = resolve(&body);
            assert_eq!(
                parsed.ignored,
                vec![Ignored {
                    offset: ROUTER_ID.len(),
                    tlv_type: tlv[0],
                    reason: IgnoreReason::UnknownMandatorySubTlv(0x9f)
                }],
                "{tlv:02x?}"
            );
            assert_eq!(parsed.messages, vec![Message::Ack { opaque: 9 }]);
        }
    }

    #[test]
    fn keeps_state_set_by_ignored_router_id_and_next_hop() {
        let body = [
            with_sub(&ROUTER_ID, &MANDATORY),
            with_sub(&next_hop::NH_LL, &MANDATORY),
            UPDATE_V6.to_vec(),
        ]
        .concat();
        let parsed = resolve(&body);
        assert_eq!(
            reasons(&parsed),
            vec![IgnoreReason::UnknownMandatorySubTlv(0x9f); 2]
        );
        assert_eq!(parsed.messages, vec![update("2001:db8:c::/64", PEER)]);
    }
}
