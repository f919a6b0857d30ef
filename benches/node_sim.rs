//! Whole nodes at scale in the simulator (`mesh::sim::nodes`): figures, never assertions.
//!
//! A random graph of `--peer` tunnels (a random spanning tree, then extra edges until every
//! node has 3–8 tunnels), 20 ms per link, hello interval 4 s, one node holding the registry
//! watch and nobody polling. Printed per size:
//! * virtual time from a cold start to full reachability (every node routes to every other);
//! * virtual time for a parameter change, then a revocation (a new CRL), to reach every node;
//! * wall and CPU time of each phase (one thread; on a shared machine the CPU time is the
//!   figure), live heap per node from a counting allocator, and the process's peak RSS.
//!
//! Run: `cargo bench --bench node_sim` (sizes 1 000 by default; set `NODE_SIM_SIZES`, e.g.
//! `NODE_SIM_SIZES=1000,2000,3000`). The routing state of a Babel network grows as
//! nodes × routes, so memory bounds the largest size a machine can simulate.
#![allow(clippy::disallowed_methods)] // bench host: wall time of each phase

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use re6mesh::mesh::sim::nodes::{NodeNet, NodeSetup};
use re6mesh::params::TunnelPolicy;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::LIVE;

/// Undirected edges: a random spanning tree, then random extra edges until every node has at
/// least 3 (at most 8) neighbours.
fn random_graph(n: usize, rng: &mut ChaCha8Rng) -> Vec<BTreeSet<usize>> {
    let mut adj = vec![BTreeSet::new(); n];
    let pick = |rng: &mut ChaCha8Rng, below: usize| (rng.next_u64() % below as u64) as usize;
    for i in 1..n {
        let j = pick(rng, i);
        adj[i].insert(j);
        adj[j].insert(i);
    }
    for i in 0..n {
        let want = 3 + pick(rng, 6);
        let mut tries = 0;
        while adj[i].len() < want && tries < 50 {
            tries += 1;
            let j = pick(rng, n);
            if j != i && adj[j].len() < 8 {
                adj[i].insert(j);
                adj[j].insert(i);
            }
        }
    }
    adj
}

/// CPU time of this thread so far (Linux: `/proc/thread-self/schedstat`); `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Peak resident set size of the process, in MiB (Linux: `VmHWM` in `/proc/self/status`).
fn peak_rss_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// CPU time since `start` (`None` when it cannot be read).
fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(cpu_time()?.saturating_sub(start?))
}

fn run(n: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
    let adj = random_graph(n, &mut rng);
    let degrees: Vec<usize> = adj.iter().map(BTreeSet::len).collect();
    let heap0 = LIVE.load(Ordering::Relaxed);
    let wall = Instant::now();
    let policy = TunnelPolicy {
        client_count: 0,
        max_clients: 8,
        refresh: 300,
    };
    let mut net = NodeNet::new(n as u64, policy, 4);
    for (i, peers) in adj.iter().enumerate() {
        net.add_node(NodeSetup {
            peers: peers.iter().copied().collect(),
            watch: i == 0,
            ..NodeSetup::default()
        });
    }
    for i in 0..n {
        net.start(i);
    }
    let setup_wall = wall.elapsed();
    let wall = Instant::now();
    let cpu = cpu_time();
    let converged = net.run_until_true(
        Duration::from_secs(600),
        Duration::from_millis(500),
        NodeNet::fully_reachable,
    );
    let converge_wall = wall.elapsed();
    let converge_cpu = cpu_since(cpu).unwrap_or(converge_wall);
    let heap = LIVE.load(Ordering::Relaxed).saturating_sub(heap0);
    let spread = |net: &mut NodeNet, what: &str, change: &dyn Fn(&mut NodeNet)| {
        let wall = Instant::now();
        let cpu = cpu_time();
        change(net);
        let v = net.registry.params().version;
        let took = net.run_until_true(Duration::from_secs(30), Duration::from_millis(20), |net| {
            (0..n).all(|i| net.core(i).is_some_and(|c| c.params().version >= v))
        });
        let wall = wall.elapsed();
        println!(
            "  {what}: on every node after {} (virtual), {wall:?} wall, {:?} CPU",
            took.map_or("never (30 s)".into(), |t| format!("{t:?}")),
            cpu_since(cpu).unwrap_or(wall)
        );
    };
    println!(
        "{n} nodes, {} tunnels (3–8 each, mean {:.1}), 20 ms links, hello 4 s:",
        degrees.iter().sum::<usize>() / 2,
        degrees.iter().sum::<usize>() as f64 / n as f64
    );
    println!(
        "  full reachability after {} (virtual); {converge_wall:?} wall, {converge_cpu:?} CPU \
         ({:.2} ms CPU per node), set-up {setup_wall:?}; {} events; ~{} KiB heap per node, \
         peak RSS {} MiB",
        converged.map_or("never (600 s)".into(), |t| format!("{t:?}")),
        converge_cpu.as_secs_f64() * 1000.0 / n as f64,
        net.stats.events,
        heap / n / 1024,
        peak_rss_mib().map_or("?".into(), |m| m.to_string())
    );
    spread(&mut net, "parameter change", &|net| {
        net.set_params(|p| p.tunnel.max_clients = 9)
    });
    spread(&mut net, "revocation (new CRL)", &|net| net.revoke(n - 1));
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = match std::env::var("NODE_SIM_SIZES") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) if benching => vec![1000],
        Err(_) => vec![50],
    };
    for n in sizes {
        run(n);
    }
}
