//! `mesh up`: connect the running node, or run the node in the foreground.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use ipnet::Ipv6Net;

use super::StateDir;
use crate::control::client::{ControlClient, ControlClientError};
use crate::mesh::node::{NodeConfig, run};
use crate::mesh::tunnels::TunnelTimers;

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    state: StateDir,
    /// UDP address for tunnels: `[ADDR:]PORT` (default: all addresses, port 6464).
    #[arg(long, value_name = "[ADDR:]PORT", default_value = "6464", value_parser = super::registry::parse_listen)]
    listen: SocketAddr,
    /// TUN device name.
    #[arg(long, value_name = "NAME", default_value = crate::tun::DEFAULT_NAME)]
    tun: String,
    /// Run the node in this process even if the control socket could be asked.
    #[arg(long)]
    foreground: bool,
    /// A peer to keep a tunnel to: `PREFIX@ADDR:PORT` (repeatable).
    #[arg(long = "peer", value_name = "PREFIX@ADDR:PORT", value_parser = parse_peer)]
    peers: Vec<(Ipv6Net, SocketAddr)>,
    /// An endpoint where this node can be reached, announced to the registry and peers (repeatable).
    #[arg(long = "endpoint", value_name = "ADDR:PORT")]
    endpoints: Vec<SocketAddr>,
    /// Babel hello interval on tunnels in seconds (default: the network parameters').
    #[arg(long, value_name = "SECS")]
    hello_interval: Option<f64>,
    /// Seconds between registry polls for parameters and keys (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    registry_poll: u64,
    /// Do not hold a parameter watch (long poll) on the registry; changes then come from
    /// neighbours and from the poll.
    #[arg(long)]
    no_registry_watch: bool,
    /// Tunnel idle timeout in milliseconds (keep-alive is a quarter of it).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    tunnel_timeout_ms: u64,
    /// A LAN interface where nodes of the network discover each other (MAC-signed Babel
    /// Hellos) and then get tunnels over their link-local addresses (repeatable; Linux).
    #[arg(long = "lan", value_name = "IFACE")]
    lan: Vec<String>,
    /// The country this node is in (ISO 3166 alpha-2, e.g. FR), stated to peers so the
    /// network's country rules can be applied when tunnels are chosen.
    #[arg(long, value_name = "CC", value_parser = parse_country)]
    country: Option<String>,
}

fn parse_country(s: &str) -> Result<String, String> {
    let c = s.to_ascii_uppercase();
    if crate::mesh::tunnels::valid_country(&c) {
        Ok(c)
    } else {
        Err(format!("{s:?} is not a two-letter ISO 3166 country code"))
    }
}

fn parse_peer(s: &str) -> Result<(Ipv6Net, SocketAddr), String> {
    let (p, a) = s.split_once('@').ok_or_else(|| {
        "not PREFIX@ADDR:PORT (e.g. fd12:3456:789a:1::/64@192.0.2.1:6464)".to_owned()
    })?;
    Ok((
        p.parse()
            .map_err(|_| format!("{p:?} is not an IPv6 prefix"))?,
        a.parse().map_err(|_| format!("{a:?} is not ADDR:PORT"))?,
    ))
}

pub fn up(a: UpArgs) -> anyhow::Result<()> {
    if !a.lan.is_empty() && !cfg!(target_os = "linux") {
        anyhow::bail!("--lan is only available on Linux; start the node without it");
    }
    let dir = a
        .state
        .state_dir
        .clone()
        .unwrap_or_else(crate::paths::default_node_dir);
    let rt = super::runtime()?;
    if !a.foreground {
        match rt.block_on(ControlClient::new(&dir).action("up")) {
            Ok(r) => {
                println!("{}", r.message);
                return Ok(());
            }
            Err(ControlClientError::NotRunning(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let idle = Duration::from_millis(a.tunnel_timeout_ms.max(100));
    let cfg = NodeConfig {
        state_dir: dir,
        listen: a.listen,
        tun_name: a.tun,
        tun_mtu: crate::tun::DEFAULT_MTU,
        peers: a.peers,
        endpoints: a.endpoints,
        tunnel_timers: TunnelTimers {
            keep_alive: idle / 4,
            idle_timeout: idle,
        },
        babel_timers: a.hello_interval.map(|h| {
            let hello = Duration::from_secs_f64(h.max(0.05));
            crate::mesh::babel::Timers {
                hello,
                update: hello * 4,
            }
        }),
        registry_poll: (a.registry_poll > 0).then(|| Duration::from_secs(a.registry_poll)),
        registry_watch: !a.no_registry_watch,
        lan: a.lan,
        country: a.country,
    };
    rt.block_on(run(cfg, super::registry::shutdown_signal()))
}
