//! Real babeld 1.12.1 / BIRD 2.0.12 captures (`shared/testdata/babel`, see its
//! README): every packet decodes, re-encodes byte-exact, verifies (or not) as
//! the README's table says, and the README's oddities behave as described.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use re6mesh::wire::mac::{self, MacError, PseudoHeader};
use re6mesh::wire::{
    IgnoreReason, Message, Packet, PacketRepr, ParseOptions, ParsedPacket, TlvRepr, fuzzing,
    parse_packet,
};
use support::pcap::{Datagram, capture_files, read_udp};

const GOOD_KEY: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
const WRONG_KEY: [u8; 32] = [0xff; 32];

fn babel_datagrams(path: &Path) -> Vec<Datagram> {
    read_udp(path)
        .into_iter()
        .filter(|d| d.src_port == 6696 || d.dst_port == 6696)
        .collect()
}

fn pseudo(d: &Datagram) -> PseudoHeader {
    PseudoHeader {
        src: d.src,
        src_port: d.src_port,
        dst: d.dst,
        dst_port: d.dst_port,
    }
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn parse(d: &Datagram) -> ParsedPacket {
    parse_packet(&d.payload, d.src, &ParseOptions::default())
        .unwrap_or_else(|e| panic!("frame {}: {e}", d.frame))
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frame(file: &str, n: usize) -> Datagram {
    let path = support::pcap::capture_dir().join(file);
    babel_datagrams(&path)
        .into_iter()
        .find(|d| d.frame == n)
        .unwrap_or_else(|| panic!("{file} has no frame {n}"))
}

#[test]
fn every_capture_packet_decodes_and_reencodes_byte_exact() {
    let mut total = 0;
    for path in capture_files() {
        for d in babel_datagrams(&path) {
            total += 1;
            let at = format!("{} frame {}", name(&path), d.frame);
            let packet =
                Packet::new_checked(&d.payload[..]).unwrap_or_else(|e| panic!("{at}: {e}"));
            let repr = PacketRepr::parse(&packet).unwrap_or_else(|e| panic!("{at}: {e}"));
            // The TLV layer keeps padding, reserved fields and raw prefix
            // bytes, so re-emission is exact for every packet, trailer
            // included. (The *message* layer cannot be byte-exact: the choice
            // of compression, Router-Id and Next Hop TLVs is the sender's; it
            // is checked for semantic equality by fuzzing::check_packet.)
            let mut buf = vec![0u8; repr.buffer_len()];
            let n = repr.emit(&mut buf).unwrap();
            assert_eq!(&buf[..n], &d.payload[..], "{at}");
            assert_eq!(repr.body_len(), usize::from(packet.body_len()), "{at}");
            parse(&d);
            fuzzing::check_packet(&d.payload).unwrap_or_else(|e| panic!("{at}: {e}"));
        }
    }
    assert_eq!(total, 1093, "packets in all captures (README table sum)");
}

/// Per-file counts of the README table, same column order.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Counts {
    pkts: usize,
    hello: usize,
    ihu: usize,
    router_id: usize,
    next_hop: usize,
    update: usize,
    retraction: usize,
    wildcard_retraction: usize,
    route_req: usize,
    wildcard_route_req: usize,
    seqno_req: usize,
    pc: usize,
    challenge_req: usize,
    challenge_reply: usize,
    mac: usize,
}

#[rustfmt::skip]
const README_TABLE: &[(&str, [usize; 15])] = &[
    ("r0-babeld-bird-babeld-garbage__b-c.pcap", [76, 42, 15, 32, 17, 47, 17, 7, 0, 5, 17, 76, 5, 5, 76]),
    ("r1-babeld-bird-babeld__a-b.pcap", [43, 24, 10, 12, 10, 22, 12, 3, 4, 3, 8, 43, 2, 2, 43]),
    ("r1-babeld-bird-babeld__b-c.pcap", [51, 27, 9, 17, 13, 30, 10, 7, 2, 5, 8, 51, 4, 4, 51]),
    ("r1-babeld-bird-babeld__b-x.pcap", [37, 24, 0, 19, 11, 30, 6, 3, 0, 3, 8, 37, 0, 0, 37]),
    ("r1-babeld-bird-babeld__b-y.pcap", [37, 23, 9, 19, 11, 30, 6, 3, 0, 3, 8, 24, 0, 0, 24]),
    ("r2-babeld-babeld-babeld__a-b.pcap", [60, 45, 19, 26, 19, 40, 20, 4, 8, 4, 0, 60, 3, 3, 60]),
    ("r2-babeld-babeld-babeld__b-c.pcap", [69, 48, 25, 25, 17, 40, 16, 8, 4, 6, 0, 69, 6, 6, 69]),
    ("r2-babeld-babeld-babeld__b-x.pcap", [56, 48, 0, 31, 19, 48, 19, 4, 4, 4, 0, 56, 0, 0, 56]),
    ("r2-babeld-babeld-babeld__b-y.pcap", [55, 47, 21, 33, 20, 52, 20, 4, 4, 4, 0, 31, 0, 0, 31]),
    ("r3-triangle-babeld__a-b.pcap", [162, 132, 48, 77, 52, 131, 21, 4, 10, 4, 2, 162, 4, 4, 162]),
    ("r3-triangle-babeld__a-c.pcap", [139, 118, 56, 87, 38, 145, 26, 8, 6, 7, 0, 139, 5, 5, 139]),
    ("r3-triangle-babeld__b-c.pcap", [171, 137, 52, 83, 52, 119, 41, 8, 6, 6, 2, 171, 6, 6, 171]),
    ("r4-babeld-babeld-bird__a-b.pcap", [54, 33, 14, 24, 21, 26, 26, 4, 8, 4, 0, 54, 4, 4, 54]),
    ("r4-babeld-babeld-bird__b-c.pcap", [57, 31, 15, 27, 19, 38, 14, 5, 4, 4, 0, 57, 6, 6, 57]),
    ("r5-v4viav6-babeld__a-c.pcap", [26, 22, 9, 4, 0, 8, 0, 8, 2, 4, 0, 26, 2, 2, 26]),
];

fn count(path: &Path) -> Counts {
    let mut c = Counts::default();
    for d in babel_datagrams(path) {
        c.pkts += 1;
        let packet = Packet::new_checked(&d.payload[..]).unwrap();
        let repr = PacketRepr::parse(&packet).unwrap();
        for tlv in &repr.body {
            match *tlv {
                TlvRepr::Hello { .. } => c.hello += 1,
                TlvRepr::Ihu { .. } => c.ihu += 1,
                TlvRepr::RouterId { .. } => c.router_id += 1,
                TlvRepr::NextHop { .. } => c.next_hop += 1,
                TlvRepr::Update { ae: 0, .. } => c.wildcard_retraction += 1,
                // The table (made with babel_pcap.py) counts an Update whose
                // prefix cannot be decoded (r2's plen 172) as "Update", not
                // as "Retraction", whatever its metric.
                TlvRepr::Update {
                    ae, plen, metric, ..
                } => {
                    let max = if ae == 1 || ae == 4 { 32 } else { 128 };
                    if metric == 0xFFFF && plen <= max {
                        c.retraction += 1
                    } else {
                        c.update += 1
                    }
                }
                TlvRepr::RouteRequest { ae: 0, .. } => c.wildcard_route_req += 1,
                TlvRepr::RouteRequest { .. } => c.route_req += 1,
                TlvRepr::SeqnoRequest { .. } => c.seqno_req += 1,
                TlvRepr::Pc { .. } => c.pc += 1,
                TlvRepr::ChallengeRequest { .. } => c.challenge_req += 1,
                TlvRepr::ChallengeReply { .. } => c.challenge_reply += 1,
                ref other => panic!("unexpected TLV in body: {other:?}"),
            }
        }
        for tlv in &repr.trailer {
            match tlv {
                TlvRepr::Mac { mac } => {
                    assert_eq!(mac.len(), 32);
                    c.mac += 1
                }
                other => panic!("unexpected TLV in trailer: {other:?}"),
            }
        }
    }
    c
}

#[test]
fn tlv_counts_match_readme_table() {
    let files: Vec<String> = capture_files().iter().map(|p| name(p)).collect();
    let table: Vec<String> = README_TABLE.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(files, table, "capture files differ from the README table");
    for (file, n) in README_TABLE {
        let got = count(&support::pcap::capture_dir().join(file));
        let want = Counts {
            pkts: n[0],
            hello: n[1],
            ihu: n[2],
            router_id: n[3],
            next_hop: n[4],
            update: n[5],
            retraction: n[6],
            wildcard_retraction: n[7],
            route_req: n[8],
            wildcard_route_req: n[9],
            seqno_req: n[10],
            pc: n[11],
            challenge_req: n[12],
            challenge_reply: n[13],
            mac: n[14],
        };
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn mac_results_match_readme_table() {
    let expected: BTreeMap<&str, (usize, usize, usize)> = [
        ("r1-babeld-bird-babeld__b-x.pcap", (24, 13, 0)),
        ("r1-babeld-bird-babeld__b-y.pcap", (24, 0, 13)),
        ("r2-babeld-babeld-babeld__b-x.pcap", (32, 24, 0)),
        ("r2-babeld-babeld-babeld__b-y.pcap", (31, 0, 24)),
    ]
    .into_iter()
    .collect();
    let keys = [GOOD_KEY, WRONG_KEY];
    for path in capture_files() {
        let file = name(&path);
        let (mut good, mut wrong, mut none) = (0, 0, 0);
        let datagrams = babel_datagrams(&path);
        for d in &datagrams {
            match mac::verify(&d.payload, &pseudo(d), &keys) {
                Ok(0) => good += 1,
                Ok(_) => wrong += 1,
                Err(MacError::NoMac) => none += 1,
                Err(e) => panic!("{file} frame {}: {e}", d.frame),
            }
            // Verification with the wrong key alone must fail for the good packets, and vice versa.
            let only_wrong = mac::verify(&d.payload, &pseudo(d), &[WRONG_KEY]);
            let only_good = mac::verify(&d.payload, &pseudo(d), &[GOOD_KEY]);
            assert!(
                only_wrong.is_err() || only_good.is_err(),
                "{file} frame {}",
                d.frame
            );
        }
        let want = expected
            .get(file.as_str())
            .copied()
            .unwrap_or((datagrams.len(), 0, 0));
        assert_eq!((good, wrong, none), want, "{file}: (good, wrong, none)");
    }
}

#[test]
fn intruder_routes_only_come_in_rejected_packets() {
    let intruder: [&str; 4] = [
        "2001:db8:ff01::/64",
        "2001:db8:ff02::/64",
        "198.51.100.192/28",
        "198.51.100.208/28",
    ];
    let mut seen = 0;
    for path in capture_files() {
        for d in babel_datagrams(&path) {
            let accepted = mac::verify(&d.payload, &pseudo(&d), &[GOOD_KEY]).is_ok();
            for m in parse(&d).messages {
                let Message::Update(u) = m else { continue };
                if intruder.contains(&u.prefix.to_string().as_str()) {
                    seen += 1;
                    assert!(!accepted, "{} frame {}", name(&path), d.frame);
                }
            }
        }
    }
    assert!(seen > 0, "the intruders' updates are in the captures");
}

#[test]
fn readme_worked_examples_byte_for_byte() {
    // Example 1: r1 a-b frame 1, babeld a, multicast.
    let d = frame("r1-babeld-bird-babeld__a-b.pcap", 1);
    assert_eq!(
        pseudo(&d).to_bytes().to_vec(),
        hex("fe80000000000000c047f6fffe20f1f4 1a28 ff020000000000000000000000010006 1a28")
    );
    let packet = Packet::new_checked(&d.payload[..]).unwrap();
    assert_eq!(
        packet.header_and_body().to_vec(),
        hex("2a02001a 0406 0000 e80c 0190 0902 0000 110c 00000000 17e29e3e58a9654f")
    );
    let mac1 = hex("28b1d27bc0d4a7ed513834bb43e62ea4258078b0661be8949a40144ec76e7318");
    assert_eq!(
        packet.trailer().to_vec(),
        [&[0x10, 0x20][..], &mac1].concat()
    );
    assert_eq!(
        mac::compute(&GOOD_KEY, &pseudo(&d), packet.header_and_body())
            .unwrap()
            .to_vec(),
        mac1
    );
    // Signing the body in place reproduces the captured packet exactly.
    let mut buf = [0u8; 128];
    let len = packet.header_and_body().len();
    buf[..len].copy_from_slice(packet.header_and_body());
    let n = mac::sign(&mut buf, len, &pseudo(&d), &GOOD_KEY).unwrap();
    assert_eq!(&buf[..n], &d.payload[..]);
    assert_eq!(
        parse(&d).messages,
        vec![
            Message::Hello(re6mesh::wire::Hello {
                unicast: false,
                seqno: 0xe80c,
                interval: 400,
                timestamp: None
            }),
            Message::RouteRequest(re6mesh::wire::RouteRequest {
                prefix: None,
                source_prefix: None
            }),
            Message::Pc {
                counter: 0,
                index: hex("17e29e3e58a9654f")
            },
        ]
    );

    // Example 2: r1 a-b frame 5, BIRD b, unicast Challenge Request.
    let d = frame("r1-babeld-bird-babeld__a-b.pcap", 5);
    assert_eq!(
        pseudo(&d).to_bytes().to_vec(),
        hex("fe80000000000000d0a3b7fffe0cd769 1a28 fe80000000000000c047f6fffe20f1f4 1a28")
    );
    let packet = Packet::new_checked(&d.payload[..]).unwrap();
    assert_eq!(
        packet.header_and_body().to_vec(),
        hex(
            "2a020032 120a 55a539fb6b45b6feda3e 1124 00000002 6fa117a03e5c9f45e41e1220f8ae6b3dd5a280f6256290f602070379b1055b4d"
        )
    );
    let mac2 = hex("8c743611f2f7fb10e9a5232e46b3aee1a2f366128f856fab8eca2863e1522019");
    assert_eq!(
        packet.trailer().to_vec(),
        [&[0x10, 0x20][..], &mac2].concat()
    );
    assert_eq!(
        mac::verify(&d.payload, &pseudo(&d), &[WRONG_KEY, GOOD_KEY]),
        Ok(1)
    );
    assert_eq!(
        parse(&d).messages,
        vec![
            Message::ChallengeRequest {
                nonce: hex("55a539fb6b45b6feda3e")
            },
            Message::Pc {
                counter: 2,
                index: hex("6fa117a03e5c9f45e41e1220f8ae6b3dd5a280f6256290f602070379b1055b4d")
            },
        ]
    );
}

fn updates(p: &ParsedPacket) -> Vec<(String, u16)> {
    p.messages
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some((u.prefix.to_string(), u.metric)),
            _ => None,
        })
        .collect()
}

#[test]
fn r0_update_with_mandatory_source_prefix_is_ignored_whole() {
    let d = frame("r0-babeld-bird-babeld-garbage__b-c.pcap", 27);
    let parsed = parse(&d);
    assert_eq!(parsed.ignored.len(), 1);
    assert_eq!(
        parsed.ignored[0].reason,
        IgnoreReason::UnknownMandatorySubTlv(0x80)
    );
    // The TLV after it (which sets its own default prefix) still parses.
    assert_eq!(
        updates(&parsed),
        vec![("2001:db8:c:1::/64".to_string(), 0xFFFF)]
    );
    assert!(matches!(
        parsed.messages.last(),
        Some(Message::Pc { counter: 10, .. })
    ));

    // A source-specific router would take it as a (garbage) source-specific retraction.
    let ss = parse_packet(
        &d.payload,
        d.src,
        &ParseOptions {
            source_specific: true,
        },
    )
    .unwrap();
    assert!(ss.ignored.is_empty());
    let Message::Update(bogus) = &ss.messages[0] else {
        panic!("{:?}", ss.messages)
    };
    assert_eq!(
        bogus.prefix.to_string(),
        "e77:8a2d:2df5:25ee:1020:eb9d:2850:0/111"
    );
    assert_eq!(bogus.source_prefix.unwrap().len(), 75);

    // README: 4 such bogus Updates in the file, every one ignored.
    let mut n = 0;
    for d in babel_datagrams(
        &support::pcap::capture_dir().join("r0-babeld-bird-babeld-garbage__b-c.pcap"),
    ) {
        for i in parse(&d).ignored {
            assert_eq!(i.reason, IgnoreReason::UnknownMandatorySubTlv(0x80));
            n += 1;
        }
    }
    assert_eq!(n, 4);
}

#[test]
fn r2_retraction_with_plen_172_is_ignored_and_parsing_continues() {
    let d = frame("r2-babeld-babeld-babeld__b-c.pcap", 29);
    let parsed = parse(&d);
    assert_eq!(parsed.ignored.len(), 1);
    assert_eq!(parsed.ignored[0].reason, IgnoreReason::BadPrefixLength);
    assert_eq!(parsed.ignored[0].tlv_type, 8);
    assert_eq!(
        updates(&parsed),
        vec![("2001:db8:c:1::/64".to_string(), 0xFFFF)]
    );
    assert!(matches!(
        parsed.messages.last(),
        Some(Message::Pc { counter: 13, .. })
    ));
}

#[test]
fn r3_default_route_retraction_parses() {
    for (file, n) in [
        ("r3-triangle-babeld__a-c.pcap", 99),
        ("r3-triangle-babeld__b-c.pcap", 118),
    ] {
        let parsed = parse(&frame(file, n));
        assert!(parsed.ignored.is_empty(), "{file}: {:?}", parsed.ignored);
        assert!(
            updates(&parsed).contains(&("::/0".to_string(), 0xFFFF)),
            "{file} frame {n}: {:?}",
            parsed.messages
        );
    }
}

#[test]
fn only_the_documented_bogus_tlvs_are_ignored() {
    let mut by_file: BTreeMap<String, Vec<IgnoreReason>> = BTreeMap::new();
    for path in capture_files() {
        for d in babel_datagrams(&path) {
            for i in parse(&d).ignored {
                by_file.entry(name(&path)).or_default().push(i.reason);
            }
        }
    }
    for (file, reasons) in &by_file {
        let want = if file.starts_with("r0-") {
            IgnoreReason::UnknownMandatorySubTlv(0x80)
        } else if file.starts_with("r2-") {
            IgnoreReason::BadPrefixLength
        } else {
            panic!("{file}: unexpected ignored TLVs {reasons:?}")
        };
        assert!(reasons.iter().all(|r| *r == want), "{file}: {reasons:?}");
    }
    assert!(by_file.keys().any(|f| f.starts_with("r0-")));
    assert!(by_file.keys().any(|f| f.starts_with("r2-")));
}

#[test]
fn r5_ae4_updates_are_ipv4_prefixes_via_ipv6_next_hops() {
    let path = support::pcap::capture_dir().join("r5-v4viav6-babeld__a-c.pcap");
    let mut v4 = Vec::new();
    for d in babel_datagrams(&path) {
        let packet = Packet::new_checked(&d.payload[..]).unwrap();
        let ae4 = PacketRepr::parse(&packet)
            .unwrap()
            .body
            .iter()
            .filter(|t| matches!(t, TlvRepr::Update { ae: 4, .. }))
            .count();
        let parsed = parse(&d);
        let mut here = 0;
        for m in &parsed.messages {
            let Message::Update(u) = m else { continue };
            if u.prefix.is_ipv4() {
                here += 1;
                assert_eq!(u.next_hop, d.src, "next hop is the IPv6 link-local sender");
                assert!(matches!(u.next_hop, IpAddr::V6(_)));
                assert!(u.router_id.is_some());
                v4.push(u.prefix.to_string());
            }
        }
        assert_eq!(here, ae4, "frame {}", d.frame);
    }
    v4.sort();
    v4.dedup();
    assert_eq!(v4, ["198.51.100.0/26", "198.51.100.128/26"]);
}

/// Regenerates `fuzz/corpus/babel_packet/` from the captures:
/// `cargo test --test babel_captures -- --ignored write_fuzz_seed_corpus`.
#[test]
#[ignore = "writes files; run by hand to regenerate the fuzz seed corpus"]
fn write_fuzz_seed_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/babel_packet");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for path in capture_files() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        for d in babel_datagrams(&path) {
            if seen.insert(d.payload.clone()) {
                std::fs::write(dir.join(format!("{stem}-{:03}", d.frame)), &d.payload).unwrap();
            }
        }
    }
}

#[test]
fn fuzz_seed_corpus_passes_the_fuzz_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/babel_packet");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        fuzzing::check_packet(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 1000, "seed corpus has {n} files");
}
