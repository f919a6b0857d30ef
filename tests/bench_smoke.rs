#![cfg(target_os = "linux")]
//! CI's seconds-long smoke of the throughput harness (issue "Speed"): `scripts/bench-throughput
//! --quick --only mesh` with this build's `mesh` (one 2 s iperf3 through two nodes in network
//! namespaces the script creates and removes). It asserts that the harness ran and printed its
//! figures, never a speed: the benchmark itself stays out of CI (docs/PERFORMANCE.md).

use std::process::Command;

use re6mesh::netns::require_root;

#[test]
fn root_bench_throughput_smoke() {
    if !require_root("root_bench_throughput_smoke") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench-throughput");
    let out = Command::new(script)
        .args(["--quick", "--only", "mesh"])
        .env("BENCH_MESH", env!("CARGO_BIN_EXE_mesh"))
        .output()
        .expect("scripts/bench-throughput runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the harness failed:\n{text}");
    // the table's row, with a throughput figure in its first column
    let row = text
        .lines()
        .find(|l| l.starts_with("| re6mesh direct |"))
        .unwrap_or_else(|| panic!("no re6mesh row in the table:\n{text}"));
    let first = row.split('|').nth(2).unwrap_or_default();
    let figure = first
        .split_whitespace()
        .next()
        .and_then(|v| v.replace(',', "").parse::<f64>().ok());
    assert!(
        figure.is_some_and(f64::is_finite),
        "no throughput figure in {row:?}"
    );
    // and the scheduler's line: how long Babel packets waited under the transfer
    assert!(
        text.contains("Babel queueing delay under load:"),
        "no Babel queueing delay line:\n{text}"
    );
}
