//! The node (`mesh up`): a sans-IO core and a thin tokio shell around it (ARCHITECTURE §5).
//!
//! * [`core`] — [`NodeCore`]: every decision (tunnels kept and closed, parameters and CRL,
//!   renewal, the lock cycle, dial races, close codes), driven by `handle(now, input)` /
//!   `handle_timeout(now)` and read out through `poll_action()` / `poll_timeout()`. The
//!   simulator (`mesh::sim::nodes`) runs whole networks of them on a virtual clock.
//! * `shell` — the one tokio loop that feeds the core and executes its actions; the only
//!   place that spawns tasks or reads the clock.
//! * `datapath` — the TUN reader and one reader per tunnel: packet in,
//!   [`Forwarder::decide`](crate::mesh::forward::Forwarder::decide) against the lock-free FIB
//!   snapshot, datagram or TUN write out, through
//!   [`TunnelLink`](crate::mesh::tunnels::TunnelLink) (framing and MTU in one place).
//! * `setup` — [`run`]: state, parameters, endpoint, TUN, then the shell.
//! * `traffic` — the tunnels' traffic counters and the data path's drops by reason.
//! * `roam_io` — the host's addresses, listed again whenever the OS says they changed.
//! * `control_api` — the control socket's view of the node.

mod control_api;
pub mod core;
mod datapath;
mod datapath_exit;
mod datapath_v4;
pub mod exit;
mod metrics;
mod portmap_io;
mod roam_io;
mod sealing;
mod setup;
mod shell;
mod signal;
mod traffic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv6Net;

pub use self::core::{NodeCore, router_id_for};
pub use setup::run;

use super::babel::Timers;
use super::tunnels::TunnelTimers;

/// Everything `mesh up` can set.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// State directory (identity, parameters, control socket).
    pub state_dir: PathBuf,
    /// UDP address of the tunnel endpoint.
    pub listen: SocketAddr,
    /// TUN device name.
    pub tun_name: String,
    /// TUN MTU.
    pub tun_mtu: u16,
    /// Static peers (prefix and endpoint).
    pub peers: Vec<(Ipv6Net, SocketAddr)>,
    /// Endpoints announced to the registry and to neighbours.
    pub endpoints: Vec<SocketAddr>,
    /// Tunnel keep-alive / idle timeout.
    pub tunnel_timers: TunnelTimers,
    /// Babel timers on tunnels (`None`: the hello interval of the parameters, update ×4).
    pub babel_timers: Option<Timers>,
    /// Registry poll period (`None`: never poll after start).
    pub registry_poll: Option<Duration>,
    /// Hold a parameter watch (long poll) on the registry, so changes arrive at once; the
    /// registry admits a limited number of watchers, the others rely on the poll and on
    /// their neighbours.
    pub registry_watch: bool,
    /// Ask the home router to forward the tunnel port (PCP, NAT-PMP; off with
    /// `--no-port-mapping`, and when `--endpoint` is given).
    pub port_mapping: bool,
    /// LAN interfaces where neighbours are discovered (`--lan`, Linux only).
    pub lan: Vec<String>,
    /// The country this node is in (ISO 3166 alpha-2), stated to peers for the country
    /// rules of the parameters.
    pub country: Option<String>,
    /// Where to serve Prometheus metrics (`--metrics`; `None`: off).
    pub metrics: Option<SocketAddr>,
    /// Prefixes outside the network announced for a LAN behind this node
    /// (`--advertise-route`).
    pub advertise_routes: Vec<Ipv6Net>,
    /// IPv4 prefixes announced for a LAN behind this node (`--advertise-route`, on a network
    /// with an IPv4 range).
    pub advertise_routes_v4: Vec<ipnet::Ipv4Net>,
    /// `--exit`: announce the exit route and forward what it brings to the uplink
    /// (`None`: not an exit).
    pub exit: Option<exit::ExitMode>,
    /// `--use-exit auto|PREFIX`: send this host's internet traffic through an exit.
    pub use_exit: Option<exit::UseExit>,
}
