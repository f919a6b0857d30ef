//! Babel wire-format throughput at realistic sizes: a Hello + IHU packet (the
//! most frequent packet on a link) and a full update of 50 prefixes; parse
//! (resolved messages vs. the lossless TLV layer, side by side), emit, and
//! RFC 8967 MAC sign / verify. No assertions on time anywhere.

use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use re6mesh::wire::mac::{self, PseudoHeader};
use re6mesh::wire::{
    BABEL_MULTICAST_V6, EmitConfig, Hello, Ihu, Message, Packet, PacketRepr, ParseOptions,
    ParsedPacket, PcState, RouterId, Update, emit_packets, parse_packet_into,
};

const SRC: IpAddr = IpAddr::V6(Ipv6Addr::new(
    0xfe80, 0, 0, 0, 0xc047, 0xf6ff, 0xfe20, 0xf1f4,
));
const PEER: IpAddr = IpAddr::V6(Ipv6Addr::new(
    0xfe80, 0, 0, 0, 0xd0a3, 0xb7ff, 0xfe0c, 0xd769,
));
const KEY: [u8; 32] = [0x42; 32];

fn config() -> EmitConfig {
    EmitConfig {
        max_len: 1400,
        source: SRC,
        trailer_reserve: mac::MAC_TLV_LEN,
    }
}

fn hello_ihu() -> Vec<Message> {
    vec![
        Message::Hello(Hello {
            unicast: false,
            seqno: 0xe80c,
            interval: 400,
            timestamp: None,
        }),
        Message::Ihu(Ihu {
            address: Some(PEER),
            rxcost: 96,
            interval: 1200,
            timestamp: None,
        }),
    ]
}

fn full_update(n: u16) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::Update(Update {
                prefix: format!("fd12:3456:789a:{i:x}::/64").parse().unwrap(),
                source_prefix: None,
                router_id: Some(RouterId([0xbc, 0xdf, 0xb0, 0x6a, 0xc4, 0xdb, 0x64, 0xda])),
                next_hop: SRC,
                metric: 96 + i,
                seqno: 1234,
                interval: 1600,
                signature: None,
            })
        })
        .collect()
}

fn pseudo() -> PseudoHeader {
    PseudoHeader {
        src: SRC,
        src_port: 6696,
        dst: IpAddr::V6(BABEL_MULTICAST_V6),
        dst_port: 6696,
    }
}

/// One signed packet holding `messages` (with a PC TLV, as on the wire).
fn signed_packet(messages: &[Message]) -> Vec<u8> {
    let mut pc = PcState {
        index: vec![0x17; 8],
        counter: 0,
    };
    let mut packets = emit_packets(messages, config(), Some(&mut pc)).unwrap();
    assert_eq!(packets.len(), 1);
    let mut p = packets.remove(0);
    mac::sign_vec(&mut p, &pseudo(), &KEY).unwrap();
    p
}

fn cases() -> Vec<(&'static str, Vec<Message>)> {
    vec![("hello_ihu", hello_ihu()), ("update_50", full_update(50))]
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, messages) in cases() {
        let packet = signed_packet(&messages);
        group.throughput(Throughput::Bytes(packet.len() as u64));
        let mut out = ParsedPacket::default();
        group.bench_with_input(BenchmarkId::new("resolved", name), &packet, |b, p| {
            b.iter(|| {
                parse_packet_into(black_box(p), SRC, &ParseOptions::default(), &mut out).unwrap();
                black_box(out.messages.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("tlv_lossless", name), &packet, |b, p| {
            b.iter(|| {
                let view = Packet::new_checked(&black_box(p)[..]).unwrap();
                black_box(PacketRepr::parse(&view).unwrap().body.len())
            })
        });
    }
    group.finish();
}

fn emit(c: &mut Criterion) {
    let mut group = c.benchmark_group("emit");
    for (name, messages) in cases() {
        let len = signed_packet(&messages).len() - mac::MAC_TLV_LEN;
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("emitter", name), &messages, |b, m| {
            let mut pc = PcState {
                index: vec![0x17; 8],
                counter: 0,
            };
            b.iter(|| black_box(emit_packets(black_box(m), config(), Some(&mut pc)).unwrap()))
        });
    }
    group.finish();
}

fn mac_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("mac");
    for (name, messages) in cases() {
        let signed = signed_packet(&messages);
        let unsigned_len = signed.len() - mac::MAC_TLV_LEN;
        group.throughput(Throughput::Bytes(signed.len() as u64));
        group.bench_with_input(BenchmarkId::new("sign_in_place", name), &signed, |b, s| {
            let mut buf = s.clone();
            b.iter(|| {
                black_box(mac::sign(&mut buf, unsigned_len, &pseudo(), black_box(&KEY)).unwrap())
            })
        });
        group.bench_with_input(BenchmarkId::new("verify_1_key", name), &signed, |b, s| {
            b.iter(|| black_box(mac::verify(black_box(s), &pseudo(), &[KEY]).unwrap()))
        });
        group.bench_with_input(
            BenchmarkId::new("verify_2nd_of_2_keys", name),
            &signed,
            |b, s| {
                b.iter(|| {
                    black_box(mac::verify(black_box(s), &pseudo(), &[[0u8; 32], KEY]).unwrap())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse, emit, mac_bench);
criterion_main!(benches);
