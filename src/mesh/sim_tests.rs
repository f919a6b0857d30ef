//! Simulator tests at network scale: convergence within a bound derived from the timers,
//! rerouting, loop freedom after every step, starvation, restarts, key rotation, intruders,
//! loss, MTU and partitions. The two-or-three-node behaviours live in
//! `mesh::babel::tests`; these check that they hold across whole topologies.
//!
//! The bounds come from the engine's timers (module docs of [`crate::mesh::babel`]):
//! * a new or better route crosses one hop in `L + B` (link latency, then the receiver
//!   holds its triggered update for the batching delay `B` = [`Config::batch`]);
//! * on a tunnel the neighbour exists from the start (the host adds it), so a fresh mesh
//!   converges in `D · (L + B)` after the tunnels come up, `D` the hop diameter;
//! * a silently dead tunnel is noticed when its third Hello is missed: the first deadline
//!   is 1.5 Hello intervals after the last Hello, then one per interval: `3.5 · H`;
//! * lost routes are retracted at once (no batching), so retractions cross a hop in `L`.
//!
//! Every bound below states which of these terms it adds, plus a small explicit slack.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;
use crate::mesh::babel::{MacKey, RouterId, Seqno};

const L: Duration = Duration::from_millis(5);

fn fast() -> LinkParams {
    LinkParams {
        latency: L,
        ..LinkParams::default()
    }
}

fn batch() -> Duration {
    Config::default().batch
}

fn hello() -> Duration {
    Timers::default().hello
}

fn update() -> Duration {
    Timers::default().update
}

/// Per-hop propagation of good news.
fn hop() -> Duration {
    L + batch()
}

fn mul(d: Duration, k: usize) -> Duration {
    d * u32::try_from(k).unwrap_or(u32::MAX)
}

fn line(sim: &mut Sim, n: usize) -> Vec<LinkIdx> {
    let nodes = sim.add_nodes(n);
    nodes
        .windows(2)
        .map(|w| sim.tunnel(w[0], w[1], fast()))
        .collect()
}

fn ring(sim: &mut Sim, n: usize) -> Vec<LinkIdx> {
    let nodes = sim.add_nodes(n);
    (0..n)
        .map(|i| sim.tunnel(nodes[i], nodes[(i + 1) % n], fast()))
        .collect()
}

fn grid(sim: &mut Sim, side: usize) -> Vec<LinkIdx> {
    let n = sim.add_nodes(side * side);
    let mut links = Vec::new();
    for r in 0..side {
        for c in 0..side {
            let i = r * side + c;
            if c + 1 < side {
                links.push(sim.tunnel(n[i], n[i + 1], fast()));
            }
            if r + 1 < side {
                links.push(sim.tunnel(n[i], n[i + side], fast()));
            }
        }
    }
    links
}

/// A random connected graph: random spanning tree plus `extra` random tunnels, each with
/// a latency of 1–10 ms and the given loss drawn per link from `loss_ppm`.
fn random(sim: &mut Sim, n: usize, extra: usize, seed: u8, loss_ppm: &[u32]) -> Vec<LinkIdx> {
    let nodes = sim.add_nodes(n);
    let mut r = ChaCha8Rng::from_seed([seed; 32]);
    let params = |r: &mut ChaCha8Rng| LinkParams {
        latency: Duration::from_millis(1 + u64::from(r.next_u32() % 10)),
        loss_ppm: loss_ppm
            .get(r.next_u32() as usize % loss_ppm.len().max(1))
            .copied()
            .unwrap_or(0),
        ..LinkParams::default()
    };
    let mut links = Vec::new();
    for i in 1..n {
        let j = r.next_u32() as usize % i;
        let p = params(&mut r);
        links.push(sim.tunnel(nodes[i], nodes[j], p));
    }
    for _ in 0..extra {
        let a = r.next_u32() as usize % n;
        let b = r.next_u32() as usize % n;
        if a != b {
            let p = params(&mut r);
            links.push(sim.tunnel(nodes[a], nodes[b], p));
        }
    }
    links
}

fn converge(sim: &mut Sim, bound: Duration, what: &str) -> Duration {
    let t = sim
        .run_until_converged(bound * 4)
        .unwrap_or_else(|| panic!("{what}: no convergence within 4 × {bound:?}"));
    println!("{what}: {t:?} (bound {bound:?})");
    assert!(t <= bound, "{what}: converged in {t:?}, bound {bound:?}");
    t
}

#[test]
fn line_ring_and_grid_converge_within_diameter_times_hop_delay() {
    // Loop freedom is checked after every step, and the FIB against the engine.
    for (name, build) in [
        (
            "line of 40",
            (|s: &mut Sim| drop(line(s, 40))) as fn(&mut Sim),
        ),
        ("ring of 50", |s: &mut Sim| drop(ring(s, 50))),
        ("grid 10×10", |s: &mut Sim| drop(grid(s, 10))),
    ] {
        let mut sim = Sim::new(31);
        sim.check_loops = true;
        build(&mut sim);
        let d = sim.hop_diameter();
        // D hops of (L + B), plus one batching delay for the first announcement.
        let bound = mul(hop(), d) + batch();
        converge(&mut sim, bound, name);
        sim.check_loop_free().expect("loop-free");
    }
}

#[test]
fn random_graph_of_250_nodes_converges_within_diameter_times_hop_delay() {
    // Latencies 1–10 ms per link: a hop takes at most 10 ms + B. Loop freedom and the
    // FIB are checked after every step, as in the other scale tests.
    let mut sim = Sim::new(32);
    sim.check_loops = true;
    random(&mut sim, 250, 150, 32, &[0]);
    let d = sim.hop_diameter();
    let bound = mul(Duration::from_millis(10) + batch(), d) + batch();
    converge(&mut sim, bound, &format!("random 250 nodes, diameter {d}"));
    assert!(
        sim.converged(),
        "the cached check agrees with the full walk"
    );
    sim.check_loop_free().expect("loop-free");
    assert_eq!(sim.selected_count(), 250 * 249);
}

#[test]
#[ignore = "large: cargo test --release --lib -- --ignored random_graph_of_600"]
fn random_graph_of_600_nodes_converges_loop_free() {
    let mut sim = Sim::new(33);
    sim.check_loops = true;
    random(&mut sim, 600, 600, 33, &[0]);
    let d = sim.hop_diameter();
    let bound = mul(Duration::from_millis(10) + batch(), d) + batch();
    converge(&mut sim, bound, &format!("random 600 nodes, diameter {d}"));
}

#[test]
fn silent_cut_in_a_grid_reroutes_within_hello_detection_bound() {
    // 8×8 grid, the middle link of the top row dies silently. Both ends notice at the
    // third missed Hello (3.5 H), retract or switch at once, and a seqno request may have
    // to reach the source and come back (2 D hops) before the detour is feasible.
    let mut sim = Sim::new(34);
    sim.check_loops = true;
    let links = grid(&mut sim, 8);
    let d = sim.hop_diameter();
    converge(&mut sim, mul(hop(), d) + batch(), "grid 8×8");
    let cut = links
        .iter()
        .copied()
        .find(|&l| sim.link_nodes(l) == vec![3, 4])
        .expect("link 3-4");
    assert_eq!(sim.walk(3, 4).map(|p| p.len()), Ok(2));
    sim.set_link_up(cut, false);
    let bound = hello() * 7 / 2 + mul(hop(), 2 * d + 2);
    converge(&mut sim, bound, "grid 8×8 after silent cut");
    assert_eq!(sim.walk(3, 4).map(|p| p.len()), Ok(4), "goes round the cut");
}

#[test]
fn starvation_on_a_long_ring_is_resolved_by_forwarded_seqno_requests() {
    // Ring of 30: when 0-1 dies, every node on 0's side holds an unfeasible route to 1
    // only. The seqno request travels hop by hop to 1 (L each, forwarded at once), the
    // fresh update comes back (L + B each): about N · (2L + B), far below an update
    // interval, which is what waiting for the next periodic update would cost.
    let n = 30;
    let mut sim = Sim::new(35);
    sim.check_loops = true;
    let links = ring(&mut sim, n);
    converge(&mut sim, mul(hop(), n / 2) + batch(), "ring of 30");
    let before = sim.nodes[1].engine.seqno();
    sim.kill_tunnel(links[0]);
    let bound = mul(L + L + batch(), n) + batch();
    converge(&mut sim, bound, "ring of 30 after cut");
    assert!(bound < update());
    assert!(sim.nodes[1].engine.seqno().newer_than(before));
    assert_eq!(sim.walk(0, 1).map(|p| p.len()), Ok(n));
}

#[test]
fn acks_on_a_ring_are_answered_and_starvation_still_resolves_within_the_bound() {
    // The same ring of 30 with Acknowledgment Requests on every tunnel (RFC 8966 3.3):
    // the retractions and seqno requests after the cut ask for Acks, every peer engine
    // answers them (nothing is left pending once the network is quiet, well before the
    // first resend), and convergence keeps the bound of the plain ring.
    let n = 30;
    let mut sim = Sim::new(35);
    sim.check_loops = true;
    let nodes = sim.add_nodes(n);
    let params = LinkParams {
        acks: true,
        ..fast()
    };
    let links: Vec<LinkIdx> = (0..n)
        .map(|i| sim.tunnel(nodes[i], nodes[(i + 1) % n], params))
        .collect();
    converge(
        &mut sim,
        mul(hop(), n / 2) + batch(),
        "ring of 30 with acks",
    );
    sim.kill_tunnel(links[0]);
    let pending = |sim: &Sim| -> usize { sim.nodes.iter().map(|x| x.engine.pending_acks()).sum() };
    assert!(
        pending(&sim) > 0,
        "the retractions after the cut asked for Acks"
    );
    let bound = mul(L + L + batch(), n) + batch();
    converge(&mut sim, bound, "ring of 30 with acks after cut");
    sim.run_for(2 * L + Duration::from_millis(1));
    assert_eq!(pending(&sim), 0, "every Ack Request was answered");
    assert_eq!(sim.walk(0, 1).map(|p| p.len()), Ok(n));
}

#[test]
fn rfc_9616_timestamps_measure_the_rtt_and_feed_the_cost() {
    // LAN 0–1, 30 ms each way: RTT 60 ms, cost 96 + 150 · (60 − 10) / 110 = 164.
    // Tunnel 2–3, 25 ms each way: RTT 50 ms, cost 96 + 150 · 40 / 110 = 150.
    // LAN 4–5, 30 ms, timestamps off: 96 (the RTT is not known).
    let mut sim = Sim::new(41);
    sim.check_loops = true;
    let n = sim.add_nodes(6);
    let ms = Duration::from_millis;
    let with = |latency, timestamps| LinkParams {
        latency,
        timestamps,
        ..LinkParams::default()
    };
    sim.lan(&[n[0], n[1]], false, with(ms(30), true));
    let t = sim.tunnel(n[2], n[3], with(ms(25), true));
    sim.lan(&[n[4], n[5]], false, with(ms(30), false));
    sim.run_for(Duration::from_secs(20));
    let nb = |sim: &Sim, i: usize| sim.nodes[i].engine.neighbours()[0].clone();
    for i in [0, 1] {
        assert_eq!(nb(&sim, i).measured_rtt, Some(ms(60)), "node {i}");
        assert_eq!(nb(&sim, i).cost, 164, "node {i}");
    }
    let r = sim.nodes[0].engine.selected_route(node_prefix(1)).cloned();
    assert_eq!(r.map(|r| r.metric), Some(164));
    for i in [2, 3] {
        assert_eq!(nb(&sim, i).measured_rtt, Some(ms(50)), "node {i}");
        assert_eq!(nb(&sim, i).cost, 150, "node {i}");
    }
    assert_eq!((nb(&sim, 4).measured_rtt, nb(&sim, 4).cost), (None, 96));
    // The host-supplied RTT (what the QUIC tunnel measures) still takes precedence.
    sim.set_rtt(t, n[2], ms(5));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(nb(&sim, 2).cost, 96);
    assert_eq!(
        nb(&sim, 3).cost,
        150,
        "the other end keeps its own measurement"
    );
}

fn rid_of(sim: &Sim, node: NodeIdx) -> RouterId {
    sim.nodes[node].engine.router_id()
}

/// Every node's selected route to `node`'s prefix comes from `rid`.
fn all_route_via(sim: &Sim, node: NodeIdx, rid: RouterId) -> bool {
    let p = node_prefix(node);
    (0..sim.nodes.len()).filter(|&i| i != node).all(|i| {
        sim.nodes[i]
            .engine
            .routes()
            .iter()
            .any(|r| r.prefix == p && r.selected && r.router_id == rid)
    })
}

#[test]
fn restart_with_an_older_seqno_is_handled_without_loops() {
    // The restarted node comes back with a seqno 1000 behind what its neighbours' source
    // tables hold: its updates are unfeasible, so they ask it for a newer seqno (and its
    // own old announcements echo back); either way it jumps ahead and everyone takes the
    // new routes. Bound: the restart itself re-adds tunnels at once, so one seqno request
    // round trip per hop plus the propagation: 2 D (L + B), plus slack of one second for
    // request resends.
    let mut sim = Sim::new(36);
    sim.check_loops = true;
    grid(&mut sim, 6);
    let d = sim.hop_diameter();
    converge(&mut sim, mul(hop(), d) + batch(), "grid 6×6");
    let centre = 14;
    let before = sim.nodes[centre].engine.seqno();
    let older = Seqno(before.0.wrapping_sub(1000));
    sim.restart_node(centre, Some(older), false);
    let bound = mul(hop(), 2 * d) + Duration::from_secs(1);
    converge(&mut sim, bound, "grid 6×6 after restart with older seqno");
    assert!(
        sim.nodes[centre].engine.seqno().newer_than(before),
        "the restarted node caught up past its old seqno"
    );
    // And the network stays settled: two update intervals later every next hop is the
    // same (no flapping between the old and new seqno).
    let fibs = |s: &Sim| -> Vec<Vec<(Prefix, IpAddr)>> {
        s.nodes
            .iter()
            .map(|n| n.fib.routes().map(|e| (e.prefix, e.next_hop)).collect())
            .collect()
    };
    let settled = fibs(&sim);
    sim.run_for(update() * 2);
    assert!(sim.converged());
    assert_eq!(fibs(&sim), settled, "next hops unchanged");
}

#[test]
fn restart_with_a_new_router_id_replaces_the_old_source_everywhere() {
    // New router-id: no source entry exists for it, so its routes are feasible at once;
    // routes from the old router-id are replaced by the same neighbours' new updates.
    let mut sim = Sim::new(37);
    sim.check_loops = true;
    grid(&mut sim, 6);
    let d = sim.hop_diameter();
    converge(&mut sim, mul(hop(), d) + batch(), "grid 6×6");
    let centre = 21;
    let old = rid_of(&sim, centre);
    sim.restart_node(centre, None, true);
    let new = rid_of(&sim, centre);
    assert_ne!(old, new);
    let bound = mul(hop(), d) + batch();
    let start = sim.now();
    while !(sim.converged_cached() && all_route_via(&sim, centre, new)) {
        assert!(sim.step(start + bound * 4), "no convergence");
    }
    let t = sim.now() - start;
    println!("grid 6×6 after restart with a new router-id: {t:?} (bound {bound:?})");
    assert!(t <= bound, "{t:?} > {bound:?}");
    // The old router-id's routes are gone from every table within their expiry.
    sim.run_for(update() * 4);
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(
            !n.engine.routes().iter().any(|r| r.router_id == old),
            "node {i} still holds routes from the old router-id: {:?}",
            n.engine
                .routes()
                .into_iter()
                .filter(|r| r.router_id == old)
                .collect::<Vec<_>>()
        );
    }
}

fn k(id: u32) -> MacKey {
    MacKey::new(id, vec![id as u8 ^ 0x5a; 32])
}

fn keys(sign: u32, accept: &[u32]) -> MacKeys {
    MacKeys {
        sign: Some(k(sign)),
        accept: accept.iter().map(|&i| k(i)).collect(),
        accept_unsigned: false,
    }
}

/// A mesh of tunnels and LANs (some lossy-LAN members), 16 nodes, all with `keys`.
fn mixed(sim: &mut Sim, seed: u8, keys: &MacKeys) {
    let n = sim.add_nodes(16);
    sim.set_keys_all(keys);
    let mut r = ChaCha8Rng::from_seed([seed; 32]);
    for i in 1..16 {
        let j = r.next_u32() as usize % i;
        if i % 4 == 0 {
            let k = r.next_u32() as usize % 16;
            let mut m = vec![n[i], n[j]];
            if k != i && k != j {
                m.push(n[k]);
            }
            sim.lan(&m, i % 8 == 0, fast());
        } else {
            sim.tunnel(n[i], n[j], fast());
        }
    }
    for _ in 0..6 {
        let a = r.next_u32() as usize % 16;
        let b = r.next_u32() as usize % 16;
        if a != b {
            sim.tunnel(n[a], n[b], fast());
        }
    }
}

#[test]
fn key_rotation_across_a_mixed_mesh_never_drops_an_adjacency_or_a_route() {
    // All three steps of the registry's rotation (sign K1 → sign K1 accept K2 →
    // sign K2 accept K1 → sign K2), each node applying each step at its own random time
    // within a 10 s window (registry polling). After every simulator step every node
    // still reaches every other, and no neighbour is ever lost or re-challenged.
    let mut sim = Sim::new(38);
    mixed(&mut sim, 38, &keys(1, &[]));
    sim.run_until_converged(Duration::from_secs(10))
        .expect("converges with MAC");
    let down = |s: &Sim| {
        s.nodes
            .iter()
            .flat_map(|n| &n.events)
            .filter(|e| matches!(e, Event::NeighbourDown(_)))
            .count()
    };
    let rejected = |s: &Sim| {
        s.nodes
            .iter()
            .flat_map(|n| &n.events)
            .filter(|e| matches!(e, Event::PacketRejected { .. }))
            .count()
    };
    let (down0, rej0) = (down(&sim), rejected(&sim));
    let mut r = ChaCha8Rng::from_seed([38; 32]);
    for step in [keys(1, &[2]), keys(2, &[1]), keys(2, &[])] {
        let start = sim.now();
        let mut when: Vec<(Time, NodeIdx)> = (0..16)
            .map(|i| {
                let ms = u64::from(r.next_u32() % 10_000);
                (start + Duration::from_millis(ms), i)
            })
            .collect();
        when.sort();
        for (at, node) in when {
            while sim.step(at) {
                assert!(sim.converged_cached(), "route lost at {}", sim.now());
            }
            sim.run_until(at);
            sim.set_keys(node, step.clone());
        }
        let end = sim.now() + update() * 2;
        while sim.step(end) {
            assert!(sim.converged_cached(), "route lost at {}", sim.now());
        }
    }
    assert_eq!(down(&sim), down0, "no adjacency dropped");
    assert_eq!(rejected(&sim), rej0, "no packet refused during rotation");
}

#[test]
fn node_with_a_wrong_key_never_enters_anybodys_tables() {
    // The intruder shares a LAN with three good nodes and a tunnel with a fourth
    // (a misconfigured node of our own network: the tunnel is up, the key is wrong).
    // After every step: no route with its router-id or prefix anywhere, no LAN
    // neighbour entry for it, and the tunnel neighbour's Hello history stays empty.
    let mut sim = Sim::new(39);
    sim.check_loops = true;
    mixed(&mut sim, 39, &keys(1, &[]));
    let intruder = sim.add_node();
    sim.set_keys(intruder, keys(9, &[]));
    let lan = sim.lan(&[intruder, 2, 5, 7], false, fast());
    let tun = sim.tunnel(intruder, 11, fast());
    let bad_rid = rid_of(&sim, intruder);
    let bad_prefix = node_prefix(intruder);
    let ll = IpAddr::V6(Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        0,
        0,
        intruder as u16,
        lan as u16,
    ));
    let end = sim.now() + update() * 3;
    while sim.step(end) {
        for (i, n) in sim.nodes.iter().enumerate().filter(|(i, _)| *i != intruder) {
            assert!(
                !n.engine
                    .routes()
                    .iter()
                    .any(|r| r.router_id == bad_rid || r.prefix == bad_prefix),
                "node {i} took a route from the intruder at {}: {:?}",
                sim.now(),
                n.engine
                    .routes()
                    .into_iter()
                    .filter(|r| r.router_id == bad_rid || r.prefix == bad_prefix)
                    .collect::<Vec<_>>()
            );
            for nb in n.engine.neighbours() {
                assert_ne!(nb.id.addr, ll, "node {i}: intruder in the neighbour table");
                if nb.id.addr == IpAddr::V6(node_addr(intruder)) {
                    assert_eq!(nb.reach, 0, "node {i}: intruder's Hellos accepted");
                }
            }
        }
    }
    assert!(sim.nodes[intruder].engine.selected_routes().count() == 0);
    let _ = tun;
    // The good nodes are unaffected.
    let good: Vec<_> = (0..16).collect();
    for &a in &good {
        for &b in &good {
            if a != b {
                assert!(sim.walk(a, b).is_ok(), "{a}->{b}");
            }
        }
    }
}

#[test]
fn lossy_links_converge_and_the_tunnel_cost_avoids_the_lossy_one() {
    // 60 nodes, every link drawn from {0, 5, 10, 20 %} loss. Lost triggered updates are
    // repaired by the next periodic full update (every ≤ U) or by a Route Request when a
    // route nears expiry; with ≤ 20 % loss per hop a route fails to cross a hop in k
    // consecutive intervals with probability 0.2^k, so the (seeded) run is held to
    // D hops plus three update intervals.
    let mut sim = Sim::new(40);
    sim.check_loops = true;
    random(&mut sim, 60, 40, 40, &[0, 50_000, 100_000, 200_000]);
    let d = sim.hop_diameter();
    let bound = mul(Duration::from_millis(10) + batch(), d) + update() * 3;
    converge(&mut sim, bound, &format!("60 lossy nodes, diameter {d}"));

    // Square: 0-1 direct with 50 % loss, or 0-2-1 clean. ETX-like tunnel cost:
    // 96 / (0.5 · 0.5) ≈ 384 > 96 + 96.
    let mut sim = Sim::new(41);
    let n = sim.add_nodes(3);
    let direct = sim.tunnel(
        n[0],
        n[1],
        LinkParams {
            loss_ppm: 500_000,
            ..fast()
        },
    );
    sim.tunnel(n[0], n[2], fast());
    sim.tunnel(n[2], n[1], fast());
    sim.run_for(hello() * 16);
    assert_eq!(sim.walk(0, 1), Ok(vec![0, 2, 1]), "avoids the lossy tunnel");
    sim.set_loss(direct, 0);
    sim.run_for(hello() * 20);
    assert_eq!(sim.walk(0, 1), Ok(vec![0, 1]), "back once the loss is gone");
}

#[test]
fn small_mtu_splits_updates_and_loses_nothing() {
    // Every node announces 30 extra prefixes over 256-byte-MTU tunnels: full updates
    // must be split into packets that fit (the simulator drops larger ones).
    let mut sim = Sim::new(42);
    let n = sim.add_nodes(6);
    for &i in &n {
        sim.with_engine(i, |e, now| {
            for j in 0..30u16 {
                let a = Ipv6Addr::new(0xfd01, i as u16, j, 0, 0, 0, 0, 0);
                e.originate(now, Prefix::new(IpAddr::V6(a), 48).expect("valid"));
            }
        });
    }
    let small = LinkParams { mtu: 256, ..fast() };
    for w in n.windows(2) {
        sim.tunnel(w[0], w[1], small);
    }
    converge(&mut sim, mul(hop(), 5) + batch(), "line of 6, MTU 256");
    sim.run_for(hop() * 10);
    assert_eq!(sim.stats.mtu_dropped, 0, "no packet exceeded the MTU");
    assert!(sim.stats.max_packet <= 256);
    for (i, node) in sim.nodes.iter().enumerate() {
        assert_eq!(node.engine.selected_routes().count(), 5 * 31, "node {i}");
    }
}

#[test]
fn partition_heals_and_reconverges_loop_free() {
    // 40 random nodes split into two halves by silently cutting every link between them.
    // Within 3.5 H the border nodes notice; their retractions cross the partition sides
    // at L per hop (plus seqno request round trips for those that try a detour that
    // does not exist): every cross-partition walk then ends in "no route", never a loop.
    // On heal, the next Hello on each cut link (≤ H) revives it; the engine then asks the
    // revived neighbour for a full update at once instead of waiting for its next
    // periodic one (up to U = 16 s; this test caught that).
    let mut sim = Sim::new(43);
    sim.check_loops = true;
    random(&mut sim, 40, 30, 43, &[0]);
    let d = sim.hop_diameter();
    let ten = Duration::from_millis(10);
    converge(&mut sim, mul(ten + batch(), d) + batch(), "40 nodes");
    let side: Vec<NodeIdx> = (0..20).collect();
    let cut = sim.partition(&side);
    assert!(!cut.is_empty());
    let settle = hello() * 7 / 2 + mul(ten + ten + batch(), 2 * d) + Duration::from_secs(3);
    sim.run_for(settle);
    for a in 0..40 {
        for b in 0..40 {
            let across = (a < 20) != (b < 20);
            let w = sim.walk(a, b);
            if across {
                assert!(
                    matches!(w, Err(WalkError::NoRoute(_))),
                    "{a}->{b} after {settle:?}: {w:?}"
                );
            }
        }
    }
    // Stay partitioned past route expiry and the retraction hold, then heal.
    sim.run_for(update() * 6);
    sim.heal(&cut);
    // Nodes still starving for the far side re-issue their seqno requests at most every
    // 3 s (1 s resend spacing, two resends, then selection asks again): one such cycle on
    // top of the revival Hello and a request/answer crossing of the diameter.
    let bound = hello() + Duration::from_secs(3) + mul(ten + ten + batch(), 2 * d);
    converge(&mut sim, bound, "40 nodes after the partition heals");
}

/// Issue 13 ("Flooding"): a member with two tunnels into a ring of honest nodes sends
/// thousands of random /128 Updates (random router-ids and seqnos) through both. Each
/// honest node holds at most its per-neighbour budget from any neighbour and its total
/// budget overall, the flooder's tunnel partners count what they dropped, and every
/// honest pair stays reachable, loop-free, throughout.
#[test]
fn a_member_flooding_random_routes_is_held_to_its_budget() {
    use crate::mesh::babel::{BABEL_PORT, codec, msg::Msg};

    const PER_NEIGHBOUR: usize = 64;
    const TOTAL: usize = 256;
    const ROUNDS: u32 = 100;
    const PER_ROUND: u32 = 500;
    let mut sim = Sim::new(13);
    sim.set_engine_config(Config {
        max_routes_per_neighbour: PER_NEIGHBOUR,
        max_routes: TOTAL,
        ..Config::default()
    });
    let honest: Vec<NodeIdx> = (0..6).collect();
    ring(&mut sim, honest.len());
    let flooder = sim.add_node();
    let tunnels = [
        sim.tunnel(flooder, 0, fast()),
        sim.tunnel(flooder, 3, fast()),
    ];
    assert!(
        sim.run_until_converged(update()).is_some(),
        "converges before the flood"
    );
    sim.check_loops = true;
    // The flooder's side of its tunnels: (victim, victim's interface, flooder's address).
    let entries: Vec<(NodeIdx, IfaceId, IpAddr, IpAddr)> = tunnels
        .iter()
        .map(|l| {
            let m = &sim.links[*l].members;
            let (f, v) = if m[0].0 == flooder {
                (m[0], m[1])
            } else {
                (m[1], m[0])
            };
            (v.0, v.1, f.2, v.2)
        })
        .collect();
    let mut rng = ChaCha8Rng::from_seed([13; 32]);
    for _ in 0..ROUNDS {
        for &(victim, iface, from, to) in &entries {
            let msgs: Vec<Msg> = (0..PER_ROUND)
                .map(|_| {
                    let addr = 0x2001_0db8_u128 << 96 | u128::from(rng.next_u64());
                    let mut rid = [0u8; 8];
                    rng.fill_bytes(&mut rid);
                    Msg::Update {
                        prefix: Prefix::new(IpAddr::V6(Ipv6Addr::from(addr)), 128)
                            .expect("a /128")
                            .into(),
                        router_id: RouterId(rid),
                        seqno: Seqno(rng.next_u32() as u16),
                        metric: (rng.next_u32() % 512) as u16,
                        interval_cs: 400,
                        next_hop: None,
                        signature: None,
                    }
                })
                .collect();
            let pkts = codec::encode(&msgs, from, 1400, 0, None).expect("encodes");
            sim.with_engine(victim, |e, now| {
                for p in &pkts {
                    let src = SocketAddr::new(from, BABEL_PORT);
                    let dst = SocketAddr::new(to, BABEL_PORT);
                    e.handle_packet(now, iface, src, dst, p);
                }
            });
        }
        sim.run_for(Duration::from_millis(200));
        for &n in &honest {
            let e = &sim.nodes[n].engine;
            assert!(e.route_count() <= TOTAL, "node {n}: {}", e.route_count());
            let mut per: BTreeMap<(String, Option<IpAddr>), usize> = BTreeMap::new();
            for r in e.routes().into_iter().filter(|r| !r.local) {
                *per.entry((r.iface, r.next_hop)).or_default() += 1;
            }
            assert!(
                per.values().all(|c| *c <= PER_NEIGHBOUR),
                "node {n}: {per:?}"
            );
        }
    }
    for &(victim, ..) in &entries {
        let k = sim.nodes[victim].engine.budget_counters();
        assert!(
            k.routes_over_budget >= u64::from(ROUNDS * PER_ROUND) - PER_NEIGHBOUR as u64,
            "node {victim}: {k:?}"
        );
    }
    for &a in &honest {
        for &b in &honest {
            if a != b {
                assert!(sim.walk(a, b).is_ok(), "{a}->{b}: {:?}", sim.walk(a, b));
            }
        }
    }
    sim.check_loop_free().expect("loop-free");
}
