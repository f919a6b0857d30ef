//! The simulator at scale: random meshes of hundreds of engines (`sim.rs`).

use super::*;

/// A random connected mesh: a random spanning tree plus `extra` random tunnels.
fn random_mesh(nodes: usize, extra: usize, seed: u8) -> Sim {
    let mut sim = Sim::new(u64::from(seed));
    let n = sim.add_nodes(nodes);
    let mut r = ChaCha8Rng::from_seed([seed; 32]);
    for i in 1..nodes {
        let j = (r.next_u32() as usize) % i;
        sim.tunnel(n[i], n[j], LinkParams::default());
    }
    for _ in 0..extra {
        let a = (r.next_u32() as usize) % nodes;
        let b = (r.next_u32() as usize) % nodes;
        if a != b {
            sim.tunnel(n[a], n[b], LinkParams::default());
        }
    }
    sim
}

#[test]
fn hundred_nodes_converge_fast_and_stay_quiet() {
    let mut sim = random_mesh(100, 100, 3);
    let t = sim
        .run_until_converged(Duration::from_secs(120))
        .expect("converges");
    assert!(t < Duration::from_secs(1), "converged in {t:?}");
    sim.check_loop_free().expect("loop-free");
    // Steady state: Hellos every 4 s and full updates every ~14 s per tunnel end.
    sim.run_for(Duration::from_secs(16));
    let sent = sim.stats.sent;
    sim.run_for(Duration::from_secs(32));
    let per_node_per_s = (sim.stats.sent - sent) as f64 / 100.0 / 32.0;
    assert!(
        per_node_per_s < 2.0,
        "{per_node_per_s} packets per node per second"
    );
    assert!(sim.converged());
}

#[test]
fn random_churn_never_forms_a_forwarding_loop() {
    // Links flap silently, tunnels die and come back, RTTs and locks change; after
    // every single step no forwarding walk may loop, and once calm returns
    // everything converges again.
    for seed in 0..4u8 {
        let mut sim = random_mesh(12, 10, 40 + seed);
        sim.check_loops = true;
        sim.run_until_converged(Duration::from_secs(30))
            .expect("converges");
        let mut r = ChaCha8Rng::from_seed([seed; 32]);
        let links = sim.link_count();
        let mut killed = BTreeSet::new();
        for _ in 0..60 {
            let l = (r.next_u32() as usize) % links;
            let node = sim.links[l].members[(r.next_u32() % 2) as usize].0;
            match r.next_u32() % 6 {
                0 => sim.set_link_up(l, false),
                1 => sim.set_link_up(l, !killed.contains(&l)),
                2 => {
                    sim.kill_tunnel(l);
                    killed.insert(l);
                }
                3 => {
                    sim.revive_tunnel(l);
                    killed.remove(&l);
                }
                4 => sim.set_rtt(
                    l,
                    node,
                    Duration::from_millis(u64::from(r.next_u32() % 300)),
                ),
                _ => {
                    let m = [
                        CostMultiplier::NORMAL,
                        CostMultiplier::SOFT_LOCK,
                        CostMultiplier(300),
                    ];
                    sim.set_multiplier(l, node, m[(r.next_u32() % 3) as usize]);
                }
            }
            sim.run_for(Duration::from_millis(u64::from(r.next_u32() % 3000)));
        }
        for l in 0..links {
            sim.revive_tunnel(l);
            sim.set_link_up(l, true);
        }
        let t = sim.run_until_converged(Duration::from_secs(120));
        assert!(t.is_some(), "seed {seed}: reconverges after the churn");
    }
}

#[test]
fn lan_churn_never_forms_a_forwarding_loop() {
    // Shared LANs (no split horizon, several neighbours per interface), some lossy,
    // flapping silently.
    for seed in 0..3u8 {
        let mut sim = Sim::new(u64::from(seed) + 100);
        sim.check_loops = true;
        let n = sim.add_nodes(10);
        let mut r = ChaCha8Rng::from_seed([seed + 100; 32]);
        let mut lans = Vec::new();
        for i in 1..10 {
            let j = (r.next_u32() as usize) % i;
            let k = (r.next_u32() as usize) % 10;
            let mut members = vec![n[i], n[j]];
            if k != i && k != j {
                members.push(n[k]);
            }
            let lossy = r.next_u32() % 3 == 0;
            lans.push(sim.lan(&members, lossy, LinkParams::default()));
        }
        sim.run_until_converged(Duration::from_secs(60))
            .expect("converges");
        for _ in 0..40 {
            let l = lans[(r.next_u32() as usize) % lans.len()];
            match r.next_u32() % 3 {
                0 => sim.set_link_up(l, false),
                1 => sim.set_link_up(l, true),
                _ => sim.set_loss(l, r.next_u32() % 300_000),
            }
            sim.run_for(Duration::from_millis(u64::from(r.next_u32() % 8000)));
        }
        for &l in &lans {
            sim.set_link_up(l, true);
            sim.set_loss(l, 0);
        }
        let t = sim.run_until_converged(Duration::from_secs(300));
        assert!(t.is_some(), "seed {seed}: reconverges");
    }
}

#[test]
#[ignore = "manual measurement: cargo test --release -- --ignored --nocapture"]
fn probe_figures() {
    let fast = LinkParams {
        latency: Duration::from_millis(5),
        ..LinkParams::default()
    };
    let mut sim = Sim::new(1);
    let n = sim.add_nodes(8);
    for w in n.windows(2) {
        sim.tunnel(w[0], w[1], fast);
    }
    println!(
        "line of 8, 5 ms links: {:?}",
        sim.run_until_converged(Duration::from_secs(60))
    );

    let mut sim = Sim::new(2);
    let n = sim.add_nodes(6);
    let links: Vec<_> = (0..6)
        .map(|i| sim.tunnel(n[i], n[(i + 1) % 6], fast))
        .collect();
    sim.run_until_converged(Duration::from_secs(60));
    sim.kill_tunnel(links[0]);
    println!(
        "ring of 6, tunnel killed: rerouted in {:?}",
        sim.run_until_converged(Duration::from_secs(60))
    );

    let mut sim = Sim::new(2);
    let n = sim.add_nodes(6);
    let links: Vec<_> = (0..6)
        .map(|i| sim.tunnel(n[i], n[(i + 1) % 6], fast))
        .collect();
    sim.run_until_converged(Duration::from_secs(60));
    sim.set_link_up(links[0], false);
    println!(
        "ring of 6, tunnel silently cut: rerouted in {:?}",
        sim.run_until_converged(Duration::from_secs(60))
    );

    let mut sim = Sim::new(3);
    let n = sim.add_nodes(3);
    let k = crate::mesh::babel::MacKeys::sign(crate::mesh::babel::MacKey::new(1, vec![1; 32]));
    sim.set_keys_all(&k);
    sim.tunnel(n[0], n[1], fast);
    sim.tunnel(n[1], n[2], fast);
    println!(
        "3-node line with MAC (challenges): {:?}",
        sim.run_until_converged(Duration::from_secs(60))
    );

    let mut sim = Sim::new(4);
    let n = sim.add_nodes(3);
    sim.lan(&[n[0], n[1]], false, fast);
    sim.lan(&[n[1], n[2]], false, fast);
    println!(
        "3-node LAN line: {:?}",
        sim.run_until_converged(Duration::from_secs(60))
    );
}

#[test]
#[ignore = "manual measurement: cargo test --release -- --ignored --nocapture"]
fn probe_scale() {
    for &nn in &[50usize, 100, 200, 400] {
        let mut sim = random_mesh(nn, nn, 7);
        let t = sim.run_until_converged(Duration::from_secs(120));
        let sent = sim.stats.sent;
        sim.run_for(Duration::from_secs(64));
        let steady = (sim.stats.sent - sent) as f64 / nn as f64 / 64.0;
        println!(
            "{nn} nodes, {} routes: converged in {t:?} (virtual); {sent} packets to converge; steady {steady:.2} pkt/node/s",
            sim.selected_count()
        );
    }
}
