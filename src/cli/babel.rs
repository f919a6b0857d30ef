//! `mesh babel run|routes|stats`: a standalone Babel router on real interfaces
//! ([`crate::lan`]), and its control socket.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::control::Route;
use crate::lan::control::{Stats, get_json};
use crate::lan::{RouterConfig, run};
use crate::mesh::babel::{BABEL_MULTICAST, BABEL_PORT, Prefix};

#[derive(Debug, Subcommand)]
pub enum BabelCmd {
    /// Run a Babel router (RFC 8966, MAC RFC 8967) on real interfaces, in the foreground;
    /// selected routes go to the kernel (route protocol 250).
    Run(RunArgs),
    /// List the running router's routes (JSON Lines with --json).
    Routes(ShowArgs),
    /// Show the running router's packet counters and neighbours (one JSON object).
    Stats(ShowArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to run Babel on (repeat for several).
    #[arg(long = "iface", value_name = "IF", required = true)]
    ifaces: Vec<String>,
    /// Prefix to announce, IPv6 or IPv4 (repeat for several).
    #[arg(long = "announce", value_name = "CIDR")]
    announce: Vec<String>,
    /// MAC algorithm (only hmac-sha256).
    #[arg(long, value_name = "ALG", requires = "key_hex")]
    key_alg: Option<String>,
    /// MAC key in hex (at most 64 bytes, as babeld).
    #[arg(long, value_name = "HEX")]
    key_hex: Option<String>,
    /// Hello interval in seconds.
    #[arg(long, value_name = "S", default_value_t = 4.0)]
    hello_interval: f64,
    /// Update interval in seconds.
    #[arg(long, value_name = "S", default_value_t = 16.0)]
    update_interval: f64,
    /// UDP port.
    #[arg(long, default_value_t = BABEL_PORT)]
    port: u16,
    /// Multicast group.
    #[arg(long, default_value_t = BABEL_MULTICAST)]
    group: Ipv6Addr,
    /// Control socket path (default: <state-dir>/control.sock when --state-dir is given).
    #[arg(long, value_name = "SOCKET")]
    control: Option<PathBuf>,
    /// State directory: the router-id and seqno are kept there across restarts.
    #[arg(long, value_name = "DIR", env = "MESH_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Control socket of the router.
    #[arg(long, value_name = "SOCKET")]
    control: Option<PathBuf>,
    /// State directory of the router (its control.sock).
    #[arg(long, value_name = "DIR", env = "MESH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// JSON output (JSON Lines for routes).
    #[arg(long)]
    json: bool,
}

fn interval(s: f64, what: &str) -> anyhow::Result<Duration> {
    if !(0.01..=655.0).contains(&s) {
        anyhow::bail!("--{what} must be between 0.01 and 655 seconds");
    }
    Ok(Duration::from_secs_f64(s))
}

fn socket_path(control: Option<PathBuf>, state_dir: Option<PathBuf>) -> Option<PathBuf> {
    control.or_else(|| state_dir.map(|d| d.join(crate::control::SOCKET_NAME)))
}

pub fn run_cmd(cmd: BabelCmd) -> anyhow::Result<()> {
    match cmd {
        BabelCmd::Run(a) => run_router(a),
        BabelCmd::Routes(a) => routes(a),
        BabelCmd::Stats(a) => stats(a),
    }
}

fn run_router(a: RunArgs) -> anyhow::Result<()> {
    let mut announce = Vec::new();
    for p in &a.announce {
        let prefix: Prefix = p
            .parse()
            .map_err(|_| anyhow::anyhow!("--announce {p} is not a prefix in CIDR notation"))?;
        announce.push(prefix);
    }
    if let Some(alg) = &a.key_alg
        && alg != "hmac-sha256"
    {
        anyhow::bail!("--key-alg {alg} is not supported (only hmac-sha256)");
    }
    let key = match &a.key_hex {
        Some(h) => {
            let k = hex::decode(h.trim())
                .map_err(|_| anyhow::anyhow!("--key-hex is not a hexadecimal string"))?;
            if k.is_empty() || k.len() > 64 {
                anyhow::bail!("--key-hex must be 1 to 64 bytes long (babeld refuses longer keys)");
            }
            Some(k)
        }
        None => None,
    };
    let cfg = RouterConfig {
        ifaces: a.ifaces,
        announce,
        key,
        hello: interval(a.hello_interval, "hello-interval")?,
        update: interval(a.update_interval, "update-interval")?,
        port: a.port,
        group: a.group,
        control: socket_path(a.control, a.state_dir.clone()),
        state_dir: a.state_dir,
    };
    super::runtime()?.block_on(run(cfg))
}

fn show_path(a: &ShowArgs) -> anyhow::Result<PathBuf> {
    socket_path(a.control.clone(), a.state_dir.clone())
        .context("give the router's control socket with --control SOCKET")
}

fn routes(a: ShowArgs) -> anyhow::Result<()> {
    let path = show_path(&a)?;
    let routes: Vec<Route> = super::runtime()?.block_on(get_json(&path, "/v1/routes"))?;
    super::node::print_routes(routes, a.json)
}

fn stats(a: ShowArgs) -> anyhow::Result<()> {
    let path = show_path(&a)?;
    let s: Stats = super::runtime()?.block_on(get_json(&path, "/v1/babel/stats"))?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!("router id       {}", s.router_id);
    println!("received        {}", s.rx_packets);
    println!("sent            {}", s.tx_packets);
    println!("neighbours      {}", s.neighbours.join(" "));
    for (k, v) in &s.rejected {
        println!("rejected {k:<14} {v}");
    }
    for (k, v) in &s.rx_by_source {
        let rej = s.rejected_by_source.get(k).copied().unwrap_or(0);
        println!("from {k:<40} {v} received, {rej} rejected");
    }
    Ok(())
}
