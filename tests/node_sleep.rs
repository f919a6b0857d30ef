#![cfg(target_os = "linux")]
//! Laptops sleep (issue "Laptops in the real world"): a node frozen for 30 s (SIGSTOP, as a
//! suspended laptop's process is) finds its tunnels dead on waking and is back in the mesh
//! within seconds, without anyone restarting it.

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod ring;

use std::time::{Duration, Instant};

use re6mesh::netns::require_root;
use ring::*;

#[test]
fn root_sleep_a_node_frozen_for_30_s_is_back_in_the_mesh_within_seconds_of_waking() {
    if !require_root(
        "root_sleep_a_node_frozen_for_30_s_is_back_in_the_mesh_within_seconds_of_waking",
    ) {
        return;
    }
    let ring = start_ring();
    wait_all_pairs(&ring, Duration::from_secs(60));
    let sleeper = 3;
    let pid = ring.pids[sleeper].expect("n3 runs");
    let signal = |sig: &str| {
        let o = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    // its neighbours notice: their routes to n3 go (the tunnels' idle timeout is ~1 s)
    let target = node_addr(&ring.prefixes[sleeper]);
    let t = Instant::now();
    while ping_ok(&ring.rig, 0, &target) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "n3 still answers while frozen"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let frozen_at = t.elapsed();
    while t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
    }
    signal("-CONT");
    let woke = Instant::now();
    let back = loop {
        if (0..N)
            .filter(|j| *j != sleeper)
            .all(|j| ping_ok(&ring.rig, sleeper, &node_addr(&ring.prefixes[j])))
        {
            break woke.elapsed();
        }
        assert!(
            woke.elapsed() < Duration::from_secs(60),
            "n3 not back in the mesh 60 s after waking"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "sleep: n3 unreachable {frozen_at:?} after freezing; frozen 30 s; every other node \
         reachable from it {back:?} after waking"
    );
    wait_all_pairs(&ring, Duration::from_secs(30));
}
