//! The per-packet path without IO (issue "Speed"), on 1,280-byte packets:
//!
//! * `framing`: a tunnel datagram parsed (`frame::parse`) and one framed (`encode_into`);
//! * `forward`: what the data path does for a packet from the TUN to a far node, minus the
//!   IO: parse the header, look the destination up in the FIB snapshot (10,000 routes), the
//!   forwarder's decision (hop limit, size against the next hop's MTU), and the hand-over to
//!   a fake tunnel (a counter per interface); and the same for a packet from a tunnel for
//!   this node (delivered).
//!
//! FIB lookups at 1,000 / 10,000 / 100,000 routes are in `benches/babel.rs` (`fib_lookup`).
//! No assertions on time. Run: `cargo bench --bench datapath` (add `-- --quick`).

#![allow(clippy::disallowed_methods)] // bench: wall-clock time is what it measures

use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use re6mesh::mesh::babel::{FibRoute, IfaceId, Prefix, RouteChange};
use re6mesh::mesh::fib::Fib;
use re6mesh::mesh::forward::{Decision, Forwarder, Lookup, RateLimit, parse_header};
use re6mesh::mesh::tunnels::frame;

const ME: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
const PACKETS: usize = 1_000;

/// A 1,280-byte IPv6/UDP packet from `src` to `dst`, after one framing byte.
fn framed(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut p = vec![0u8; 1 + 1280];
    p[0] = frame::TYPE_IPV6;
    let h = &mut p[1..];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(1280u16 - 40).to_be_bytes());
    h[6] = 17;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    p
}

/// 10,000 /64 node prefixes behind 8 tunnels, and packets to 1,000 of them.
fn setup() -> (Fib, Vec<Vec<u8>>) {
    let mut fib = Fib::new();
    for i in 0..10_000u32 {
        let a = Ipv6Addr::new(0xfd00, 2, (i >> 16) as u16, i as u16, 0, 0, 0, 0);
        fib.apply(&RouteChange::Added(FibRoute {
            prefix: Prefix::new(IpAddr::V6(a), 64).expect("a /64").into(),
            next_hop: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, (i % 8) as u16 + 1)),
            iface: IfaceId(i % 8),
            metric: 96,
        }));
    }
    fib.publish();
    let pkts = (0..PACKETS as u32)
        .map(|i| {
            let k = i.wrapping_mul(7_919) % 10_000;
            let dst = Ipv6Addr::new(0xfd00, 2, (k >> 16) as u16, k as u16, 0, 0, 0, 1);
            framed(ME, dst)
        })
        .collect();
    (fib, pkts)
}

fn framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing");
    let pkt = framed(ME, Ipv6Addr::new(0xfd00, 2, 0, 1, 0, 0, 0, 1));
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| frame::parse(black_box(&pkt)).is_ok())
    });
    let mut out = Vec::with_capacity(pkt.len());
    g.bench_function("encode_into", |b| {
        b.iter(|| {
            frame::encode_into(frame::TYPE_IPV6, black_box(&pkt[1..]), &mut out);
            out.len()
        })
    });
    g.finish();
}

fn forward(c: &mut Criterion) {
    let (fib, mut pkts) = setup();
    let reader = fib.reader();
    // what is measured is the forwarding path: every packet must find its tunnel
    let found = pkts
        .iter()
        .filter_map(|p| parse_header(&p[1..]))
        .filter(|h| reader.lookup(IpAddr::V6(h.dst)).is_some())
        .count();
    assert_eq!(found, PACKETS, "packets without a route");
    let mut g = c.benchmark_group("forward");
    g.throughput(Throughput::Elements(PACKETS as u64));
    let now = Instant::now();
    g.bench_function("from_tun_to_a_tunnel", |b| {
        let mut fwd = Forwarder::new(ME, RateLimit::default());
        let mut sent = [0u64; 8];
        b.iter(|| {
            for p in pkts.iter_mut() {
                // the hop limit goes down on every pass: put it back
                p[1 + 7] = 64;
                let pkt = &mut p[1..];
                let Some(h) = parse_header(pkt) else { continue };
                let lookup = match reader.lookup_from(IpAddr::V6(h.dst), IpAddr::V6(h.src)) {
                    Some(e) => Lookup::Via {
                        next: e.iface.0 as usize,
                        mtu: 1_400,
                    },
                    None => Lookup::NoRoute,
                };
                if let Decision::Forward(t) = fwd.decide(pkt, false, lookup, now) {
                    sent[t % 8] += 1;
                }
            }
            black_box(sent)
        })
    });
    g.bench_function("from_a_tunnel_delivered", |b| {
        let mut fwd = Forwarder::new(ME, RateLimit::default());
        let mut local = 0u64;
        b.iter(|| {
            for p in pkts.iter_mut() {
                if !matches!(frame::parse(p), Ok(frame::Datagram::Ipv6(_))) {
                    continue;
                }
                let d: Decision<usize> = fwd.decide(&mut p[1..], true, Lookup::Local, now);
                if d == Decision::Deliver {
                    local += 1;
                }
            }
            black_box(local)
        })
    });
    g.finish();
}

criterion_group!(benches, framing, forward);
criterion_main!(benches);
