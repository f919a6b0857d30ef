//! The simulator's own tests: links, loss, partitions, small meshes (`sim.rs`).

use super::*;

fn fast() -> LinkParams {
    LinkParams {
        latency: Duration::from_millis(5),
        ..LinkParams::default()
    }
}

#[test]
fn line_of_eight_converges_without_loops() {
    let mut sim = Sim::new(1);
    sim.check_loops = true;
    let n = sim.add_nodes(8);
    for w in n.windows(2) {
        sim.tunnel(w[0], w[1], fast());
    }
    let t = sim
        .run_until_converged(Duration::from_secs(60))
        .expect("converges");
    assert!(t < Duration::from_secs(2), "line converged in {t:?}");
    assert_eq!(sim.walk(0, 7).map(|p| p.len()), Ok(8));
}

#[test]
fn ring_reroutes_after_cut_without_loops() {
    let mut sim = Sim::new(2);
    sim.check_loops = true;
    let n = sim.add_nodes(6);
    let mut links = Vec::new();
    for i in 0..6 {
        links.push(sim.tunnel(n[i], n[(i + 1) % 6], fast()));
    }
    sim.run_until_converged(Duration::from_secs(60))
        .expect("converges");
    assert_eq!(sim.walk(0, 1).map(|p| p.len()), Ok(2));
    sim.kill_tunnel(links[0]);
    let t = sim
        .run_until_converged(Duration::from_secs(60))
        .expect("reconverges");
    assert_eq!(
        sim.walk(0, 1).map(|p| p.len()),
        Ok(6),
        "goes the long way round"
    );
    assert!(t < Duration::from_secs(5), "rerouted in {t:?}");
}

#[test]
fn grid_converges_and_survives_silent_partition() {
    let mut sim = Sim::new(3);
    sim.check_loops = true;
    let side = 4;
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
    sim.run_until_converged(Duration::from_secs(60))
        .expect("converges");
    // Silently cut every link of node 5: nobody is told, Hellos stop.
    for &l in &links {
        let m = &sim.links[l].members;
        if m.iter().any(|x| x.0 == 5) {
            sim.set_link_up(l, false);
        }
    }
    sim.run_for(Duration::from_secs(120));
    sim.check_loop_free().expect("no loops");
    for a in 0..16 {
        for b in 0..16 {
            if a != b && a != 5 && b != 5 {
                assert!(sim.walk(a, b).is_ok(), "{a}->{b}: {:?}", sim.walk(a, b));
            }
        }
    }
    for a in 0..16 {
        if a != 5 {
            assert_eq!(
                sim.walk(a, 5),
                Err(WalkError::NoRoute(a)),
                "5 unreachable from {a}"
            );
        }
    }
}

#[test]
fn random_mesh_with_loss_converges_loop_free() {
    let mut sim = Sim::new(4);
    sim.check_loops = true;
    let n = sim.add_nodes(20);
    // A random spanning tree plus extra edges, some lossy.
    let mut r = ChaCha8Rng::from_seed([9; 32]);
    let mut params = fast();
    for i in 1..20 {
        let j = (r.next_u32() as usize) % i;
        params.loss_ppm = if i % 3 == 0 { 100_000 } else { 0 };
        sim.tunnel(n[i], n[j], params);
    }
    for _ in 0..10 {
        let a = (r.next_u32() as usize) % 20;
        let b = (r.next_u32() as usize) % 20;
        if a != b {
            sim.tunnel(n[a], n[b], fast());
        }
    }
    let t = sim
        .run_until_converged(Duration::from_secs(120))
        .expect("converges");
    assert!(t < Duration::from_secs(30), "converged in {t:?}");
}
