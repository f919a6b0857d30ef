//! Behaviour tests: several engines wired together by the simulator (virtual clock,
//! in-memory links), named after what they prove.

use std::time::Duration;

use super::*;
use crate::mesh::sim::{LinkParams, Sim, WalkError, node_addr, node_prefix, node_prefix_v4};

fn fast() -> LinkParams {
    LinkParams {
        latency: Duration::from_millis(5),
        ..LinkParams::default()
    }
}

fn k(id: u32) -> MacKey {
    MacKey::new(id, vec![id as u8; 32])
}

fn keys(sign: Option<u32>, accept: &[u32], unsigned: bool) -> MacKeys {
    MacKeys {
        sign: sign.map(k),
        accept: accept.iter().map(|&i| k(i)).collect(),
        accept_unsigned: unsigned,
    }
}

fn selected(sim: &Sim, node: usize, p: &Prefix) -> Option<FibRoute> {
    sim.nodes[node].engine.selected_route(p).cloned()
}

fn rejected(sim: &Sim, node: usize, reason: Reject) -> usize {
    sim.nodes[node]
        .events
        .iter()
        .filter(|e| matches!(e, Event::PacketRejected { reason: r, .. } if *r == reason))
        .count()
}

#[test]
fn lan_neighbours_discover_each_other_via_hello_and_ihu() {
    let mut sim = Sim::new(10);
    let n = sim.add_nodes(2);
    sim.lan(&n, false, fast());
    sim.run_for(Duration::from_millis(100));
    for i in 0..2 {
        let ns = sim.nodes[i].engine.neighbours();
        assert_eq!(ns.len(), 1, "node {i} has one neighbour");
        assert_eq!(
            (ns[0].rxcost, ns[0].txcost, ns[0].cost),
            (96, 96, 96),
            "node {i}"
        );
    }
    // Well under one Hello interval thanks to the greeting Hello + IHU.
    assert!(sim.converged(), "routes exchanged within 100 ms");
    assert!(
        sim.nodes[0]
            .events
            .contains(&Event::NeighbourUp(sim.nodes[0].engine.neighbours()[0].id))
    );
}

#[test]
fn lossy_lan_uses_etx_and_cost_grows_with_loss() {
    let mut clean = Sim::new(11);
    let n = clean.add_nodes(2);
    clean.lan(&n, true, fast());
    clean.run_for(Duration::from_secs(80));
    assert_eq!(
        clean.nodes[0].engine.neighbours()[0].cost,
        256,
        "perfect lossy link = 1 ETX"
    );

    let mut lossy = Sim::new(12);
    let n = lossy.add_nodes(2);
    let mut p = fast();
    p.loss_ppm = 300_000;
    lossy.lan(&n, true, p);
    lossy.run_for(Duration::from_secs(80));
    let c = lossy.nodes[0].engine.neighbours()[0].cost;
    // 30% loss each way: ETX ≈ 1/(0.7·0.7) ≈ 2 → ≈ 520, with sampling noise over 16 Hellos.
    assert!((300..=1200).contains(&c), "ETX cost with 30% loss: {c}");
}

#[test]
fn route_learnt_across_two_hops_ipv6_and_ipv4_via_ipv6() {
    let mut sim = Sim::new(13);
    let n = sim.add_nodes(3);
    sim.with_engine(n[2], |e, now| e.originate(now, node_prefix_v4(2)));
    sim.lan(&[n[0], n[1]], false, fast());
    sim.lan(&[n[1], n[2]], false, fast());
    let t = sim
        .run_until_converged(Duration::from_secs(30))
        .expect("converges");
    assert!(t < Duration::from_secs(1), "{t:?}");
    sim.run_for(Duration::from_secs(1));
    let r6 = selected(&sim, 0, &node_prefix(2)).expect("IPv6 route");
    assert_eq!(r6.metric, 192);
    let r4 = selected(&sim, 0, &node_prefix_v4(2)).expect("IPv4 route");
    assert_eq!(r4.metric, 192);
    assert_eq!(
        r4.next_hop, r6.next_hop,
        "v4 via b's link-local address (RFC 9229)"
    );
    assert!(matches!(r4.next_hop, std::net::IpAddr::V6(a) if a.segments()[0] == 0xfe80));
    let info: Vec<RouteInfo> = sim.nodes[0]
        .engine
        .routes()
        .into_iter()
        .filter(|r| r.prefix == node_prefix(2))
        .collect();
    assert_eq!(info.len(), 1);
    assert!(info[0].selected && !info[0].local && info[0].feasible);
    assert_eq!(info[0].router_id, sim.nodes[2].engine.router_id());
    assert_eq!(info[0].iface, "lan0");
    let own: Vec<RouteInfo> = sim.nodes[0]
        .engine
        .routes()
        .into_iter()
        .filter(|r| r.local)
        .collect();
    assert_eq!(own.len(), 1);
    assert_eq!(
        (own[0].prefix, own[0].metric, own[0].next_hop),
        (node_prefix(0).into(), 0, None)
    );
}

#[test]
fn withdraw_retracts_the_route_everywhere_at_once() {
    let mut sim = Sim::new(14);
    let n = sim.add_nodes(3);
    sim.tunnel(n[0], n[1], fast());
    sim.tunnel(n[1], n[2], fast());
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    sim.run_for(Duration::from_secs(5));
    sim.with_engine(n[2], |e, now| e.withdraw(now, node_prefix(2)));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(selected(&sim, 1, &node_prefix(2)), None);
    assert_eq!(selected(&sim, 0, &node_prefix(2)), None);
    assert_eq!(sim.walk(0, 2), Err(WalkError::NoRoute(0)));
    // ...and it stays retracted through periodic updates.
    sim.run_for(Duration::from_secs(60));
    assert_eq!(selected(&sim, 0, &node_prefix(2)), None);
    // Originating again brings it back immediately.
    sim.with_engine(n[2], |e, now| e.originate(now, node_prefix(2)));
    sim.run_for(Duration::from_millis(50));
    assert!(selected(&sim, 0, &node_prefix(2)).is_some());
}

#[test]
fn routes_expire_when_hellos_stop() {
    let mut sim = Sim::new(15);
    let n = sim.add_nodes(3);
    sim.lan(&[n[0], n[1]], false, fast());
    let bc = sim.lan(&[n[1], n[2]], false, fast());
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    sim.set_link_up(bc, false);
    sim.run_for(Duration::from_secs(4));
    assert!(
        selected(&sim, 1, &node_prefix(2)).is_some(),
        "one lost Hello is tolerated"
    );
    // 2-out-of-3: after two missed Hellos (≈ 4 s · 1.5 + 4 s) the link is down.
    sim.run_for(Duration::from_secs(8));
    assert_eq!(selected(&sim, 1, &node_prefix(2)), None);
    assert_eq!(selected(&sim, 0, &node_prefix(2)), None);
    // The entries themselves expire (3.5 update intervals), then the held retraction goes.
    sim.run_for(Duration::from_secs(100));
    assert!(
        sim.nodes[1]
            .engine
            .routes()
            .iter()
            .all(|r| r.prefix != node_prefix(2))
    );
    assert!(
        sim.nodes[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::NeighbourDown(_)))
    );
}

#[test]
fn remove_neighbour_drops_its_routes_at_once() {
    let mut sim = Sim::new(16);
    let n = sim.add_nodes(3);
    sim.tunnel(n[0], n[1], fast());
    let bc = sim.tunnel(n[1], n[2], fast());
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    sim.kill_tunnel(bc);
    assert_eq!(
        selected(&sim, 1, &node_prefix(2)),
        None,
        "no waiting for timeouts"
    );
    assert!(
        sim.nodes[1]
            .engine
            .routes()
            .iter()
            .all(|r| r.prefix != node_prefix(2))
    );
    sim.run_for(Duration::from_millis(20));
    assert_eq!(
        selected(&sim, 0, &node_prefix(2)),
        None,
        "retraction reached the next node"
    );
}

#[test]
fn seqno_request_resolves_starvation() {
    // Ring of 6: when 0-1 dies, 0's only remaining path to 1 (via 5) is unfeasible for 5
    // (its feasibility distance came from the shorter path through 0). Seqno requests
    // travel 5→4→3→2→1, 1 bumps its seqno, and the long way becomes feasible.
    let mut sim = Sim::new(17);
    sim.check_loops = true;
    let n = sim.add_nodes(6);
    let links: Vec<_> = (0..6)
        .map(|i| sim.tunnel(n[i], n[(i + 1) % 6], fast()))
        .collect();
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    let before = sim.nodes[1].engine.seqno();
    sim.kill_tunnel(links[0]);
    let t = sim
        .run_until_converged(Duration::from_secs(30))
        .expect("reconverges");
    assert!(
        t < Duration::from_millis(500),
        "starvation resolved in {t:?}, not an update interval"
    );
    assert!(
        sim.nodes[1].engine.seqno().newer_than(before),
        "the source bumped its seqno"
    );
    assert_eq!(sim.walk(0, 1).map(|p| p.len()), Ok(6));
}

#[test]
fn wrong_key_is_never_accepted() {
    let mut sim = Sim::new(18);
    let n = sim.add_nodes(3);
    sim.set_keys(n[0], keys(Some(1), &[], false));
    sim.set_keys(n[1], keys(Some(1), &[], false));
    sim.set_keys(n[2], keys(Some(2), &[], false));
    sim.tunnel(n[0], n[1], fast());
    sim.tunnel(n[1], n[2], fast());
    sim.run_for(Duration::from_secs(60));
    assert!(selected(&sim, 0, &node_prefix(1)).is_some());
    assert_eq!(selected(&sim, 1, &node_prefix(2)), None);
    assert_eq!(selected(&sim, 0, &node_prefix(2)), None);
    assert_eq!(selected(&sim, 2, &node_prefix(1)), None);
    assert!(rejected(&sim, 1, Reject::BadMac) > 10);
    assert!(rejected(&sim, 2, Reject::BadMac) > 10);
}

#[test]
fn unsigned_accepted_only_in_the_accept_unsigned_state() {
    let mut sim = Sim::new(19);
    let n = sim.add_nodes(2);
    sim.set_keys(n[0], keys(Some(1), &[], false)); // node 1 has no key: sends unsigned
    sim.tunnel(n[0], n[1], fast());
    sim.run_for(Duration::from_secs(30));
    assert_eq!(selected(&sim, 0, &node_prefix(1)), None, "unsigned refused");
    assert!(rejected(&sim, 0, Reject::Unsigned) > 0);
    // Transition state (no MAC) -> (sign K1, accept unsigned).
    sim.set_keys(n[0], keys(Some(1), &[], true));
    sim.run_for(Duration::from_secs(5));
    assert!(
        selected(&sim, 0, &node_prefix(1)).is_some(),
        "unsigned accepted in transition"
    );
    assert!(
        selected(&sim, 1, &node_prefix(0)).is_some(),
        "keyless node accepts signed packets"
    );
    // Next step (sign K1) everywhere.
    sim.set_keys(n[1], keys(Some(1), &[], false));
    sim.set_keys(n[0], keys(Some(1), &[], false));
    let before = rejected(&sim, 0, Reject::Unsigned) + rejected(&sim, 0, Reject::BadMac);
    sim.run_for(Duration::from_secs(30));
    assert!(selected(&sim, 0, &node_prefix(1)).is_some());
    assert_eq!(
        rejected(&sim, 0, Reject::Unsigned) + rejected(&sim, 0, Reject::BadMac),
        before
    );
    // And a node that falls back to unsigned is cut off again.
    sim.set_keys(n[1], MacKeys::none());
    sim.run_for(Duration::from_secs(30));
    assert_eq!(selected(&sim, 0, &node_prefix(1)), None);
}

#[test]
fn key_rotation_never_drops_an_adjacency() {
    let mut sim = Sim::new(20);
    let n = sim.add_nodes(3);
    sim.set_keys_all(&keys(Some(1), &[], false));
    sim.tunnel(n[0], n[1], fast());
    sim.tunnel(n[1], n[2], fast());
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    let challenged: Vec<usize> = (0..3)
        .map(|i| rejected(&sim, i, Reject::Challenged))
        .collect();
    let steps = [
        keys(Some(1), &[2], false),
        keys(Some(2), &[1], false),
        keys(Some(2), &[], false),
    ];
    for step in steps {
        // Nodes apply each step at different times (registry polling), 3 s apart.
        for &node in &n {
            sim.set_keys(node, step.clone());
            for _ in 0..3 {
                sim.run_for(Duration::from_secs(1));
                assert!(
                    sim.converged(),
                    "routes held through rotation at {}",
                    sim.now()
                );
            }
        }
        sim.run_for(Duration::from_secs(20));
    }
    for (i, &before) in challenged.iter().enumerate() {
        assert!(
            !sim.nodes[i]
                .events
                .iter()
                .any(|e| matches!(e, Event::NeighbourDown(_))),
            "node {i}"
        );
        assert_eq!(rejected(&sim, i, Reject::BadMac), 0, "node {i}");
        assert_eq!(
            rejected(&sim, i, Reject::Challenged),
            before,
            "node {i}: no new challenge"
        );
    }
}

#[test]
fn challenge_is_followed_by_an_immediate_full_update() {
    // With MAC, each side drops the other's first packets (unknown PC index) and
    // challenges. babeld then waits for the next periodic update (16 s); we ask with a
    // unicast wildcard Route Request as soon as the challenge succeeds.
    let mut sim = Sim::new(21);
    let n = sim.add_nodes(3);
    sim.set_keys_all(&keys(Some(7), &[], false));
    sim.tunnel(n[0], n[1], fast());
    sim.tunnel(n[1], n[2], fast());
    let t = sim
        .run_until_converged(Duration::from_secs(30))
        .expect("converges");
    assert!(
        t < Duration::from_millis(200),
        "2-hop route learnt in {t:?} (update interval 16 s)"
    );
    for i in 0..3 {
        assert!(
            sim.nodes[i]
                .events
                .iter()
                .any(|e| matches!(e, Event::ChallengeSucceeded(_)))
        );
    }
    assert!(rejected(&sim, 1, Reject::Challenged) >= 1);
}

#[test]
fn seqno_wrap_around_keeps_routes_feasible() {
    // The source's seqno wraps from 0xffff to 0 while its route gets worse: the worse
    // metric is unfeasible with the old seqno, the wrapped seqno must count as newer.
    let mut sim = Sim::new(22);
    let n = sim.add_nodes(4);
    sim.with_engine(n[2], |e, now| e.set_seqno(now, Seqno(0xffff)));
    // 3 - 0 - 1 - 2: node 0 announces the route to 3, so it has a feasibility distance.
    sim.tunnel(n[3], n[0], fast());
    sim.tunnel(n[0], n[1], fast());
    let bc = sim.tunnel(n[1], n[2], fast());
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        selected(&sim, 0, &node_prefix(2)).map(|r| r.metric),
        Some(192)
    );
    sim.set_multiplier(bc, n[1], CostMultiplier(512)); // link 1-2 costs twice as much
    sim.run_for(Duration::from_millis(500));
    let wrapped = sim.nodes[2].engine.seqno();
    assert!(
        wrapped.0 < 8 && wrapped.newer_than(Seqno(0xffff)),
        "seqno request made the source wrap: {wrapped}"
    );
    let r = selected(&sim, 0, &node_prefix(2)).expect("still routed");
    assert_eq!(
        r.metric,
        96 + 192,
        "the worse metric was accepted with the wrapped seqno"
    );
    let info = sim.nodes[0]
        .engine
        .routes()
        .into_iter()
        .find(|r| r.prefix == node_prefix(2));
    assert_eq!(info.map(|r| r.seqno), Some(wrapped));
    assert_eq!(
        selected(&sim, 3, &node_prefix(2)).map(|r| r.metric),
        Some(96 * 2 + 192)
    );
}

#[test]
fn soft_lock_avoids_a_neighbour_but_keeps_it_as_last_resort() {
    let mut sim = Sim::new(23);
    let n = sim.add_nodes(3);
    let ab = sim.tunnel(n[0], n[1], fast());
    sim.tunnel(n[1], n[2], fast());
    let ac = sim.tunnel(n[0], n[2], fast());
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    assert_eq!(sim.walk(0, 2).map(|p| p.len()), Ok(2), "direct");
    sim.set_multiplier(ac, n[0], CostMultiplier::SOFT_LOCK);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.walk(0, 2),
        Ok(vec![0, 1, 2]),
        "around the soft-locked tunnel"
    );
    sim.kill_tunnel(ab);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        sim.walk(0, 2),
        Ok(vec![0, 2]),
        "soft-locked tunnel still usable"
    );
    assert_eq!(
        selected(&sim, 0, &node_prefix(2)).map(|r| r.metric),
        Some(96 * 16)
    );
}

#[test]
fn hard_lock_makes_a_neighbour_unusable() {
    let mut sim = Sim::new(24);
    let n = sim.add_nodes(2);
    let ab = sim.tunnel(n[0], n[1], fast());
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    sim.set_multiplier(ab, n[0], CostMultiplier::HARD_LOCK);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(selected(&sim, 0, &node_prefix(1)), None);
    let ns = sim.nodes[0].engine.neighbours();
    assert_eq!(
        (ns.len(), ns[0].cost),
        (1, INFINITY),
        "still a neighbour, infinite cost"
    );
    sim.set_multiplier(ab, n[0], CostMultiplier::NORMAL);
    sim.run_for(Duration::from_millis(100));
    assert!(
        selected(&sim, 0, &node_prefix(1)).is_some(),
        "unlock restores the route"
    );
}

#[test]
fn rtt_steers_traffic_to_the_faster_tunnel() {
    let mut sim = Sim::new(25);
    let n = sim.add_nodes(3);
    let ab = sim.tunnel(n[0], n[1], fast());
    sim.tunnel(n[1], n[2], fast());
    let ac = sim.tunnel(n[0], n[2], fast());
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    sim.set_rtt(ac, n[0], Duration::from_millis(200)); // +150: 246 > 96 + 96
    sim.set_rtt(ab, n[0], Duration::from_millis(5));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.walk(0, 2), Ok(vec![0, 1, 2]));
    assert_eq!(
        selected(&sim, 0, &node_prefix(2)).map(|r| r.metric),
        Some(192)
    );
}

#[test]
fn timers_change_live_without_dropping_neighbours() {
    let mut sim = Sim::new(26);
    let n = sim.add_nodes(2);
    sim.lan(&n, false, fast());
    sim.run_until_converged(Duration::from_secs(10))
        .expect("converges");
    let fastt = Timers {
        hello: Duration::from_secs(1),
        update: Duration::from_secs(4),
    };
    for node in 0..2 {
        sim.with_engine(node, |e, now| {
            let id = e.neighbours()[0].id.iface;
            e.set_timers(now, id, fastt).expect("iface exists");
        });
    }
    let sent = sim.stats.sent;
    sim.run_for(Duration::from_secs(20));
    assert!(sim.stats.sent - sent >= 2 * 20, "Hellos every second now");
    assert!(sim.converged());
    assert!(
        !sim.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::NeighbourDown(_)))
    );
    let _ = node_addr(0);
}

#[test]
fn shutdown_makes_neighbours_drop_us_within_a_poll() {
    let mut sim = Sim::new(27);
    let n = sim.add_nodes(3);
    sim.lan(&[n[0], n[1]], false, fast());
    sim.lan(&[n[1], n[2]], false, fast());
    sim.run_until_converged(Duration::from_secs(30))
        .expect("converges");
    sim.with_engine(n[2], |e, now| e.shutdown(now));
    sim.set_keys(n[2], keys(Some(99), &[], false)); // silence it from now on
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        selected(&sim, 1, &node_prefix(2)),
        None,
        "wildcard retraction honoured"
    );
    assert_eq!(selected(&sim, 0, &node_prefix(2)), None);
}
