//! Tests of the message parser (`message.rs`).

use super::*;
use crate::wire::test_util::{SRC, resolve, resolve_with};

const RID: [u8; 12] = [6, 10, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];

#[test]
fn resolves_prefix_compression_and_router_id() {
    let mut body = RID.to_vec();
    // 2001:db8:a::/64 with flag 0x80, then 2001:db8:b::/64 omitting 4 bytes.
    body.extend_from_slice(&[8, 18, 2, 0x80, 64, 0, 0, 100, 0, 7, 0, 96]);
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0x0a, 0, 0]);
    body.extend_from_slice(&[8, 14, 2, 0, 64, 4, 0, 100, 0, 7, 0, 96, 0, 0x0b, 0, 0]);
    let parsed = resolve(&body);
    assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
    let prefixes: Vec<String> = parsed
        .messages
        .iter()
        .map(|m| match m {
            Message::Update(u) => {
                assert_eq!(u.router_id, Some(RouterId([1, 2, 3, 4, 5, 6, 7, 8])));
                assert_eq!(u.next_hop, SRC);
                u.prefix.to_string()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(prefixes, ["2001:db8:a::/64", "2001:db8:b::/64"]);
}

#[test]
fn ignores_unknown_tlv() {
    let body = [0x42, 2, 0xaa, 0xbb, 3, 2, 0x12, 0x34];
    let parsed = resolve(&body);
    assert_eq!(parsed.messages, vec![Message::Ack { opaque: 0x1234 }]);
    assert_eq!(parsed.ignored[0].reason, IgnoreReason::UnknownType);
}

#[test]
fn ignores_update_with_unknown_mandatory_sub_tlv_but_keeps_state() {
    let mut body = RID.to_vec();
    // Sets default prefix 2001:db8:c::/64 but carries mandatory sub-TLV 0x99.
    body.extend_from_slice(&[8, 21, 2, 0x80, 64, 0, 0, 100, 0, 7, 0, 96]);
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0x99, 1, 0]);
    // Next update omits 8 bytes: must still resolve against that default.
    body.extend_from_slice(&[8, 10, 2, 0, 64, 8, 0, 100, 0, 7, 0, 96]);
    let parsed = resolve(&body);
    assert_eq!(
        parsed.ignored[0].reason,
        IgnoreReason::UnknownMandatorySubTlv(0x99)
    );
    let Message::Update(u) = &parsed.messages[0] else {
        panic!()
    };
    assert_eq!(u.prefix.to_string(), "2001:db8:c::/64");
}

#[test]
fn ignores_bad_plen_and_continues() {
    let mut body = vec![8, 12, 2, 0, 172, 0, 0, 100, 0, 7, 0xff, 0xff, 1, 2];
    body.extend_from_slice(&[3, 2, 0, 9]);
    let parsed = resolve(&body);
    assert_eq!(parsed.ignored[0].reason, IgnoreReason::Malformed);
    assert_eq!(parsed.messages, vec![Message::Ack { opaque: 9 }]);
}

#[test]
fn rejects_truncated_tlv_and_drops_rest() {
    let body = [3, 2, 0, 9, 4, 20, 0, 0];
    let parsed = resolve(&body);
    assert_eq!(parsed.messages, vec![Message::Ack { opaque: 9 }]);
    assert_eq!(
        parsed.ignored,
        vec![Ignored {
            offset: 4,
            tlv_type: 4,
            reason: IgnoreReason::Truncated
        }]
    );
}

#[test]
fn ignores_update_omitting_more_than_its_prefix() {
    let mut body = RID.to_vec();
    body.extend_from_slice(&[8, 18, 2, 0x80, 64, 0, 0, 100, 0, 7, 0, 96]);
    body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0x0a, 0, 0]);
    // plen 16 (2 bytes) but omitted 4.
    body.extend_from_slice(&[8, 10, 2, 0, 16, 4, 0, 100, 0, 7, 0, 96]);
    let parsed = resolve(&body);
    assert_eq!(parsed.messages.len(), 1);
    assert_eq!(parsed.ignored[0].reason, IgnoreReason::BadOmitted);
}

#[test]
fn ignores_requests_with_unknown_mandatory_sub_tlv() {
    let body = [
        9, 5, 2, 8, 0x20, 0x99, 0, // Route Request 2000::/8 + mandatory 0x99
        9, 2, 0, 0, // wildcard Route Request
        10, 18, 2, 8, 0, 1, 64, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x20, 0x81, 1, 0, // Seqno Request
    ];
    let parsed = resolve(&body);
    assert_eq!(
        parsed.messages,
        vec![Message::RouteRequest(RouteRequest {
            prefix: None,
            source_prefix: None
        })]
    );
    assert_eq!(
        parsed.ignored.iter().map(|i| i.reason).collect::<Vec<_>>(),
        vec![
            IgnoreReason::UnknownMandatorySubTlv(0x99),
            IgnoreReason::UnknownMandatorySubTlv(0x81)
        ]
    );
}

#[test]
fn malformed_router_id_clears_the_router_id() {
    let mut body = RID.to_vec();
    body.extend_from_slice(&[6, 4, 0, 0, 9, 9]); // Router-Id too short
    body.extend_from_slice(&[8, 11, 2, 0, 8, 0, 0, 100, 0, 7, 0, 1, 0x20]);
    let parsed = resolve(&body);
    assert_eq!(
        parsed.ignored.iter().map(|i| i.reason).collect::<Vec<_>>(),
        vec![IgnoreReason::Malformed, IgnoreReason::NoRouterId]
    );
}

#[test]
fn ignores_ipv4_update_without_ipv4_next_hop() {
    let mut body = RID.to_vec();
    body.extend_from_slice(&[8, 13, 1, 0, 24, 0, 0, 100, 0, 7, 0, 96, 192, 0, 2]);
    let parsed = resolve(&body);
    assert_eq!(parsed.ignored[0].reason, IgnoreReason::NoNextHop);
}

#[test]
fn decodes_ae4_with_ipv6_next_hop() {
    let mut body = RID.to_vec();
    body.extend_from_slice(&[8, 14, 4, 0, 26, 0, 0, 100, 0, 7, 0, 0, 198, 51, 100, 128]);
    let parsed = resolve(&body);
    let Message::Update(u) = &parsed.messages[0] else {
        panic!()
    };
    assert_eq!(u.prefix.to_string(), "198.51.100.128/26");
    assert_eq!(u.next_hop, SRC);
}

#[test]
fn ignores_wildcard_update_with_finite_metric() {
    let body = [8, 10, 0, 0, 0, 0, 0, 100, 0, 7, 0, 1];
    assert_eq!(
        resolve(&body).ignored[0].reason,
        IgnoreReason::WildcardNotRetraction
    );
    let body = [8, 10, 0, 0, 8, 0, 0, 100, 0, 7, 0xff, 0xff];
    assert_eq!(
        resolve(&body).ignored[0].reason,
        IgnoreReason::BadPrefixLength
    );
}

#[test]
fn ignores_finite_update_without_router_id() {
    let body = [8, 11, 2, 0, 8, 0, 0, 100, 0, 7, 0, 1, 0x20];
    assert_eq!(resolve(&body).ignored[0].reason, IgnoreReason::NoRouterId);
    // ...but a retraction needs none.
    let body = [8, 11, 2, 0, 8, 0, 0, 100, 0, 7, 0xff, 0xff, 0x20];
    let parsed = resolve(&body);
    assert!(matches!(&parsed.messages[0], Message::Update(u) if u.router_id.is_none()));
}

#[test]
fn decodes_source_prefix_only_when_asked() {
    let mut body = RID.to_vec();
    body.extend_from_slice(&[8, 15, 2, 0, 16, 0, 0, 100, 0, 7, 0, 1, 0x20, 0x01]);
    body.extend_from_slice(&[0x80, 1, 0]); // source plen 0: invalid
    body.extend_from_slice(&[8, 17, 2, 0, 16, 0, 0, 100, 0, 7, 0, 1, 0x20, 0x01]);
    body.extend_from_slice(&[0x80, 3, 12, 0xfd, 0x00]);
    let plain = resolve(&body);
    assert!(plain.messages.is_empty());
    let ss = resolve_with(
        &body,
        &ParseOptions {
            source_specific: true,
        },
    );
    assert_eq!(ss.ignored[0].reason, IgnoreReason::BadSourcePrefix);
    let Message::Update(u) = &ss.messages[0] else {
        panic!()
    };
    assert_eq!(u.source_prefix.unwrap().to_string(), "fd00::/12");
}

#[test]
fn decodes_hello_and_ihu_timestamps() {
    let body = [
        4, 12, 0x80, 0, 0, 5, 1, 0x90, 3, 4, 0, 0, 0, 42, // unicast Hello + ts
        5, 24, 3, 0, 0, 96, 4, 0xb0, 0xc0, 0x47, 0xf6, 0xff, 0xfe, 0x20, 0xf1, 0xf4, 3, 8, 0, 0, 0,
        42, 0, 0, 0, 43,
    ];
    let parsed = resolve(&body);
    assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
    assert_eq!(
        parsed.messages,
        vec![
            Message::Hello(Hello {
                unicast: true,
                seqno: 5,
                interval: 400,
                timestamp: Some(42)
            }),
            Message::Ihu(Ihu {
                address: Some(SRC),
                rxcost: 96,
                interval: 1200,
                timestamp: Some(IhuTimestamp {
                    origin: 42,
                    receive: 43
                })
            })
        ]
    );
}
