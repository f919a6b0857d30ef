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

/// Every value is checked by its clap value parser, so a bad one is a usage error (exit 2)
/// reported before any socket is opened.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("key").args(["key_file", "key_hex"])))]
pub struct RunArgs {
    /// Interface to run Babel on (repeat for several).
    #[arg(long = "iface", value_name = "IF", required = true)]
    ifaces: Vec<String>,
    /// Prefix to announce, IPv6 or IPv4 (repeat for several).
    #[arg(long = "announce", value_name = "CIDR", value_parser = parse_prefix)]
    announce: Vec<Prefix>,
    /// MAC algorithm (only hmac-sha256).
    #[arg(long, value_name = "ALG", requires = "key", value_parser = parse_key_alg)]
    key_alg: Option<String>,
    /// File holding the MAC key in hex (at most 64 bytes, as babeld; surrounding whitespace
    /// ignored). Keep it 0600: this is the secret of every router on the link.
    #[arg(long, value_name = "FILE", conflicts_with = "key_hex", value_parser = read_key_file)]
    key_file: Option<MacKey>,
    /// MAC key in hex on the command line. Any local user can read it in the process list
    /// (`ps`): prefer --key-file.
    #[arg(long, value_name = "HEX", value_parser = parse_key)]
    key_hex: Option<MacKey>,
    /// Hello interval in seconds (0.01 to 655).
    #[arg(long, value_name = "S", default_value = "4", value_parser = parse_interval)]
    hello_interval: Duration,
    /// Update interval in seconds (0.01 to 655).
    #[arg(long, value_name = "S", default_value = "16", value_parser = parse_interval)]
    update_interval: Duration,
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

/// The bytes of `--key-hex`; `Debug` does not print them.
#[derive(Clone)]
struct MacKey(Vec<u8>);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MacKey({} bytes)", self.0.len())
    }
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

// Value parsers: clap prints "invalid value 'V' for '--OPTION <X>': <this message>" and
// exits with code 2.

fn parse_prefix(s: &str) -> Result<Prefix, String> {
    s.parse().map_err(|_| {
        "not a prefix in CIDR notation (e.g. 2001:db8:a::/64 or 198.51.100.0/26)".to_owned()
    })
}

fn parse_key_alg(s: &str) -> Result<String, String> {
    if s == "hmac-sha256" {
        Ok(s.to_owned())
    } else {
        Err("not supported (only hmac-sha256)".to_owned())
    }
}

fn parse_key(s: &str) -> Result<MacKey, String> {
    let k = hex::decode(s.trim()).map_err(|_| "not a hexadecimal string".to_owned())?;
    if k.is_empty() || k.len() > 64 {
        return Err("the key must be 1 to 64 bytes long (babeld refuses longer keys)".to_owned());
    }
    Ok(MacKey(k))
}

fn read_key_file(s: &str) -> Result<MacKey, String> {
    let text = std::fs::read_to_string(s).map_err(|e| format!("cannot read the key file: {e}"))?;
    parse_key(&text)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| "not a number of seconds".to_owned())?;
    // NaN fails the range check too.
    if !(0.01..=655.0).contains(&secs) {
        return Err("must be between 0.01 and 655 seconds".to_owned());
    }
    Ok(Duration::from_secs_f64(secs))
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
    // hmac-sha256 is the only algorithm: its value parser refuses any other.
    let _ = a.key_alg;
    if a.key_hex.is_some() {
        eprintln!(
            "warning: --key-hex shows the key to every local user (ps); use --key-file FILE instead"
        );
    }
    let cfg = RouterConfig {
        ifaces: a.ifaces,
        announce: a.announce,
        key: a.key_file.or(a.key_hex).map(|k| k.0),
        hello: a.hello_interval,
        update: a.update_interval,
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
