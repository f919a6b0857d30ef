//! Babel engine, simulator and FIB measurements. No assertions on time anywhere.
//!
//! * `update_processing`: a tunnel neighbour sends a full update of 1 000 / 10 000 routes
//!   (one router-id each, the worst case for compression) to a fresh engine (every route
//!   new: selection, FIB changes, triggered updates), and again to an engine that already
//!   holds them (the periodic refresh: nothing changes).
//! * `sim_converge`: wall time of a 100-node random mesh converging from cold; the
//!   virtual convergence time is printed. The 1 000-node figure is measured once, outside
//!   criterion's sampling (one run takes seconds), and printed with memory per node.
//! * `fib_lookup`: longest-prefix match on the published snapshot at 1 000 / 10 000 /
//!   100 000 routes against the naive linear scan (`Fib::lookup_slow`) over the same table,
//!   in the same run; the ratio is printed.
//!
//! Memory per node comes from a counting global allocator (this bench binary only): live
//! heap bytes after convergence divided by the node count.
//!
//! Run: `cargo bench --bench babel` (add `-- --quick` for a fast pass).

#![allow(clippy::disallowed_methods)] // bench: wall-clock time is what it measures

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use re6mesh::mesh::babel::codec;
use re6mesh::mesh::babel::msg::Msg;
use re6mesh::mesh::babel::{
    BABEL_PORT, Config, Engine, IfaceConfig, IfaceId, Prefix, RouteChange, RouterId, Seqno, Time,
};
use re6mesh::mesh::fib::Fib;
use re6mesh::mesh::sim::{LinkParams, Sim};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::LIVE;

const ME: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 1);
const PEER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 2, 0, 0, 0, 1);

fn prefix(i: usize) -> Prefix {
    let a = Ipv6Addr::new(0xfd10, (i >> 16) as u16, i as u16, 0, 0, 0, 0, 0);
    Prefix::new(IpAddr::V6(a), 64).expect("valid /64")
}

/// The packets of a full update of `n` routes from the tunnel peer.
fn full_update_packets(n: usize) -> Vec<Vec<u8>> {
    let msgs: Vec<Msg> = (0..n)
        .map(|i| Msg::Update {
            prefix: prefix(i).into(),
            router_id: RouterId((i as u64 + 100).to_be_bytes()),
            seqno: Seqno(7),
            metric: 96 + (i % 512) as u16,
            interval_cs: 1600,
            next_hop: None,
            signature: None,
        })
        .collect();
    codec::encode(&msgs, IpAddr::V6(PEER), 1200, 0, None).expect("encodes")
}

fn engine() -> (Engine, IfaceId) {
    let mut e = Engine::new(
        Config::default(),
        [0, 0, 0, 0, 0, 0, 0, 1],
        [7; 32],
        Time::ZERO,
    );
    let iface = e.add_interface(Time::ZERO, IfaceConfig::tunnel("t", ME, PEER));
    drain(&mut e, Time::ZERO);
    (e, iface)
}

fn drain(e: &mut Engine, now: Time) -> usize {
    let mut n = 0;
    while e.poll_transmit(now).is_some() {
        n += 1;
    }
    while let Some(c) = e.poll_route_change() {
        black_box(&c);
        n += matches!(c, RouteChange::Added(_)) as usize;
    }
    while e.poll_event().is_some() {}
    n
}

fn feed(e: &mut Engine, iface: IfaceId, packets: &[Vec<u8>], now: Time) {
    let src = SocketAddr::new(IpAddr::V6(PEER), BABEL_PORT);
    let dst = SocketAddr::new(IpAddr::V6(ME), BABEL_PORT);
    for p in packets {
        e.handle_packet(now, iface, src, dst, p);
        drain(e, now);
    }
    // The batched triggered updates leave 20 ms later.
    let later = now + Duration::from_millis(25);
    e.handle_timeout(later);
    drain(e, later);
}

fn update_processing(c: &mut Criterion) {
    let mut g = c.benchmark_group("update_processing");
    g.sample_size(10);
    for n in [1_000usize, 10_000] {
        let packets = full_update_packets(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("new_routes", n), &packets, |b, p| {
            b.iter_batched(
                engine,
                |(mut e, iface)| {
                    feed(&mut e, iface, p, Time::from_millis(10));
                    e
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("refresh", n), &packets, |b, p| {
            let (mut e, iface) = engine();
            feed(&mut e, iface, p, Time::from_millis(10));
            let mut now = Time::from_millis(100);
            b.iter(|| {
                now = now + Duration::from_millis(100);
                feed(&mut e, iface, p, now);
            })
        });
    }
    g.finish();
}

/// A random connected mesh: random spanning tree plus `n` extra tunnels.
fn random_mesh(n: usize, seed: u8) -> Sim {
    let mut sim = Sim::new(u64::from(seed));
    let nodes = sim.add_nodes(n);
    let mut r = ChaCha8Rng::from_seed([seed; 32]);
    for i in 1..n {
        let j = r.next_u32() as usize % i;
        sim.tunnel(nodes[i], nodes[j], LinkParams::default());
    }
    for _ in 0..n {
        let a = r.next_u32() as usize % n;
        let b = r.next_u32() as usize % n;
        if a != b {
            sim.tunnel(nodes[a], nodes[b], LinkParams::default());
        }
    }
    sim
}

fn converge_once(n: usize) -> (Duration, Duration, usize, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut sim = random_mesh(n, 5);
    let virt = sim
        .run_until_converged(Duration::from_secs(600))
        .unwrap_or(Duration::MAX);
    let wall = start.elapsed();
    let bytes = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let routes = sim.selected_count();
    drop(sim);
    (wall, virt, bytes / n, routes)
}

fn sim_converge(c: &mut Criterion) {
    for n in [100usize, 1_000] {
        let (wall, virt, per_node, routes) = converge_once(n);
        eprintln!(
            "sim {n} nodes (10 ms links, tree + {n} extra tunnels): converged in {virt:?} \
             virtual, {wall:?} wall; {routes} selected routes; ~{} KiB heap per node",
            per_node / 1024
        );
    }
    let mut g = c.benchmark_group("sim_converge");
    g.sample_size(10);
    g.bench_function("100_nodes", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let mut sim = random_mesh(100, 5);
                black_box(sim.run_until_converged(Duration::from_secs(600)));
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// A FIB shaped like a real mesh: mostly /64s, some /48 and /56 aggregates, IPv4 /16s.
fn fib(n: usize) -> (Fib, Vec<IpAddr>) {
    let mut fib = Fib::new();
    let mut r = ChaCha8Rng::from_seed([3; 32]);
    let mut probes = Vec::new();
    for i in 0..n {
        let v = r.next_u32();
        let (prefix, probe) = match i % 10 {
            0 => {
                let a = Ipv4Addr::new(10, (v >> 8) as u8, v as u8, 0);
                (
                    Prefix::new(IpAddr::V4(a), 24),
                    IpAddr::V4(Ipv4Addr::from(u32::from(a) | 7)),
                )
            }
            1 => {
                let a = Ipv6Addr::new(0xfd00, (v >> 16) as u16, 0, 0, 0, 0, 0, 0);
                (
                    Prefix::new(IpAddr::V6(a), 32),
                    IpAddr::V6(Ipv6Addr::new(0xfd00, (v >> 16) as u16, 9, 9, 0, 0, 0, 1)),
                )
            }
            _ => {
                let a = Ipv6Addr::new(0xfd00, 1, (v >> 16) as u16, v as u16, 0, 0, 0, 0);
                (
                    Prefix::new(IpAddr::V6(a), 64),
                    IpAddr::V6(Ipv6Addr::new(
                        0xfd00,
                        1,
                        (v >> 16) as u16,
                        v as u16,
                        0,
                        0,
                        0,
                        1,
                    )),
                )
            }
        };
        let Some(prefix) = prefix else { continue };
        fib.apply(&RouteChange::Added(re6mesh::mesh::babel::FibRoute {
            prefix: prefix.into(),
            next_hop: IpAddr::V6(PEER),
            iface: IfaceId((i % 8) as u32),
            metric: 96,
        }));
        probes.push(probe);
    }
    fib.publish();
    // Shuffle-ish and add misses.
    probes.push(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
    probes.rotate_left(n / 3);
    probes.truncate(1_000);
    (fib, probes)
}

fn fib_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("fib_lookup");
    for n in [1_000usize, 10_000, 100_000] {
        let (fib, probes) = fib(n);
        let snap = fib.reader().snapshot();
        g.throughput(Throughput::Elements(probes.len() as u64));
        g.bench_with_input(BenchmarkId::new("lpm_snapshot", n), &probes, |b, p| {
            b.iter(|| p.iter().filter(|a| snap.lookup(**a).is_some()).count())
        });
        // (the linear scan at 100,000 routes takes ~0.1 s a round: only the ratio below)
        if n <= 10_000 {
            g.bench_with_input(BenchmarkId::new("linear_scan", n), &probes, |b, p| {
                b.iter(|| p.iter().filter(|a| fib.lookup_slow(**a).is_some()).count())
            });
        }
        // Same-run ratio, independent of criterion's reporting.
        let rounds = match n {
            0..=5_000 => 30,
            5_001..=50_000 => 3,
            _ => 1,
        };
        let t = Instant::now();
        for _ in 0..rounds * 10 {
            black_box(probes.iter().filter(|a| snap.lookup(**a).is_some()).count());
        }
        let fast = t.elapsed() / 10;
        let t = Instant::now();
        for _ in 0..rounds {
            black_box(
                probes
                    .iter()
                    .filter(|a| fib.lookup_slow(**a).is_some())
                    .count(),
            );
        }
        let slow = t.elapsed();
        eprintln!(
            "fib {n} routes: snapshot LPM is {:.0}× faster than the linear scan",
            slow.as_secs_f64() / fast.as_secs_f64().max(1e-12)
        );
    }
    g.finish();
}

criterion_group!(benches, update_processing, fib_lookup, sim_converge);
criterion_main!(benches);
