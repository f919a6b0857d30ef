//! `mesh demo`: a whole network in namespaces on this machine, drawn live in the browser.

#![allow(clippy::disallowed_methods)] // IO shell: a random demo seed when none is given

use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of nodes (2 to 64).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=64))]
    nodes: u16,
    /// Port of the live page on 127.0.0.1.
    #[arg(long, value_name = "P", default_value_t = 8642)]
    port: u16,
    /// Refresh an all-pairs ping matrix; with --duration, exit 1 when the last one is not full.
    #[arg(long)]
    ping: bool,
    /// Rotate the MAC keys through the three steps of the cycle while pinging; report losses.
    #[arg(long)]
    mac_rotation: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "S")]
    duration: Option<u64>,
    /// Topology seed (default: random; printed, so a network can be built again).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
}

#[cfg(target_os = "linux")]
pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let exe =
        std::env::current_exe().context("cannot find the mesh binary to run in the namespaces")?;
    crate::demo::run::run(crate::demo::net::DemoOptions {
        nodes: usize::from(a.nodes),
        port: a.port,
        ping: a.ping,
        mac_rotation: a.mac_rotation,
        duration: a.duration.map(Duration::from_secs),
        seed: a.seed.unwrap_or_else(|| rand::random::<u64>() % 1_000_000),
        exe,
    })
}

#[cfg(not(target_os = "linux"))]
pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let _ = (a, Duration::ZERO);
    anyhow::bail!("mesh demo needs Linux network namespaces; run it on a Linux machine as root")
}
