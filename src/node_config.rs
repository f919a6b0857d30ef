//! The node's configuration file, `<state-dir>/node.toml`: the options of `mesh up`, kept so
//! that the service, the tray and the command line start the same node (issue 16).
//!
//! One rule for names: a key is the `mesh up` option without its dashes (`--peer` → `peer`,
//! `--registry-poll` → `registry-poll`). [`NodeOptions`] is at once the clap option group of
//! `mesh up` and the file's schema, so the two cannot drift apart. Repeatable options are
//! arrays. Precedence: an option given on the command line, then the file, then the built-in
//! default.
//!
//! ```toml
//! listen = "[::]:6464"
//! peer = ["fd12:3456:789a:1::/64@192.0.2.1:6464"]
//! lan = ["eth0"]
//! country = "FR"
//! registry-poll = 600
//! ```
//!
//! Written by `mesh set KEY=VALUE …` and `mesh up --save`; an unknown key or a bad value is
//! an error naming the file and the line, and nothing is changed.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::mesh::node::NodeConfig;
use crate::mesh::tunnels::TunnelTimers;

/// File name inside the node's state directory.
pub const FILE_NAME: &str = "node.toml";

/// Default UDP port of the node's tunnels.
pub const DEFAULT_PORT: u16 = 6464;
/// Default seconds between registry polls.
pub const DEFAULT_REGISTRY_POLL_SECS: u64 = 300;
/// Default tunnel idle timeout in milliseconds.
pub const DEFAULT_TUNNEL_TIMEOUT_MS: u64 = 1000;

/// The options of `mesh up`, as flags and as `node.toml`. Every field is optional: what is
/// unset takes the file's value, then the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeOptions {
    /// UDP address for tunnels: `[ADDR:]PORT` (default: all addresses, port 6464).
    #[arg(long, value_name = "[ADDR:]PORT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Listen>,
    /// TUN device name (default: mesh0).
    #[arg(long, value_name = "NAME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tun: Option<String>,
    /// A peer to keep a tunnel to: `PREFIX@ADDR:PORT` (repeatable).
    #[arg(long, value_name = "PREFIX@ADDR:PORT")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer: Vec<PeerSpec>,
    /// An endpoint where this node can be reached, announced to the registry and peers (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint: Vec<SocketAddr>,
    /// Babel hello interval on tunnels in seconds (default: the network parameters').
    #[arg(long, value_name = "SECS", value_parser = parse_hello)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_hello"
    )]
    pub hello_interval: Option<f64>,
    /// Seconds between registry polls for parameters and keys (0: never; default: 300).
    #[arg(long, value_name = "SECS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_poll: Option<u64>,
    /// Do not hold a parameter watch (long poll) on the registry; changes then come from
    /// neighbours and from the poll.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_registry_watch: Option<bool>,
    /// Do not ask the home router to forward the tunnel port (PCP, NAT-PMP);
    /// by default the node asks, and removes the mapping when it exits.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_port_mapping: Option<bool>,
    /// Tunnel idle timeout in milliseconds, keep-alive is a quarter of it (default: 1000).
    #[arg(long, value_name = "MS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_timeout_ms: Option<u64>,
    /// A LAN interface where nodes of the network discover each other (MAC-signed Babel
    /// Hellos) and then get tunnels over their link-local addresses (repeatable; Linux).
    #[arg(long, value_name = "IFACE")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lan: Vec<String>,
    /// The country this node is in (ISO 3166 alpha-2, e.g. FR), stated to peers so the
    /// network's country rules can be applied when tunnels are chosen.
    #[arg(long, value_name = "CC")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Country>,
    /// Serve Prometheus metrics over HTTP at this address (`GET /metrics`; off by default;
    /// a non-loopback address is allowed, with a warning).
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// Make a LAN behind this node reachable from the mesh: announce this IPv6 prefix, or IPv4
    /// prefix on a network with an IPv4 range (repeatable). Other nodes take it only when the registry authorised this node for it
    /// (`mesh registry authorize NODE route PREFIX`); this node's OS must forward between
    /// the TUN and that LAN (IPv6 forwarding on).
    #[arg(long, value_name = "PREFIX")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertise_route: Vec<ipnet::IpNet>,
    /// Be an exit: let the mesh reach the internet through this node (announces `::/0
    /// from` the network prefix; needs `mesh registry authorize NODE exit ::/0`). Turns on
    /// IPv6 forwarding and NAT66 on the uplink (nftables, Linux), undone on stop.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<bool>,
    /// With `--exit`: forward the mesh's packets as they are, no NAT66 (the operator routes
    /// the network prefix to this node).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_routed: Option<bool>,
    /// Send this host's internet traffic through an exit of the mesh: `auto` (the best one,
    /// the next one when it dies) or an exit node's prefix. The tunnels' own packets and
    /// the LAN (DNS on it included) keep the normal routes (Linux policy routing).
    #[arg(long, value_name = "auto|PREFIX")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_exit: Option<UseExitArg>,
}

/// `--use-exit`'s value, as text in `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UseExitArg(pub crate::mesh::node::exit::UseExit);

impl std::str::FromStr for UseExitArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(UseExitArg)
    }
}

impl TryFrom<String> for UseExitArg {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<UseExitArg> for String {
    fn from(u: UseExitArg) -> String {
        u.0.to_string()
    }
}

/// The keys of `node.toml`, in file order.
pub const KEYS: &[&str] = &[
    "listen",
    "tun",
    "peer",
    "endpoint",
    "hello-interval",
    "registry-poll",
    "no-registry-watch",
    "no-port-mapping",
    "tunnel-timeout-ms",
    "lan",
    "country",
    "metrics",
    "advertise-route",
    "exit",
    "exit-routed",
    "use-exit",
];

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid: bad TOML, unknown key or bad value.
    #[error("{path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the fault, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// `mesh set` was given a key the file does not have.
    #[error("unknown setting {0:?} (known: {known})", known = KEYS.join(", "))]
    UnknownKey(String),
    /// `mesh set` was given a bad value.
    #[error("bad value for {key}: {message}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl NodeOptions {
    /// The path of the file in state directory `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// Reads `<dir>/node.toml`; no file means no options.
    pub fn load(dir: &Path) -> Result<NodeOptions, ConfigError> {
        let path = NodeOptions::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NodeOptions::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        NodeOptions::parse(&text, &path)
    }

    /// Parses the file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<NodeOptions, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().to_owned(),
        })
    }

    /// The file's text: a header and the set keys.
    pub fn to_toml(&self) -> String {
        // Serialising plain strings, numbers and arrays cannot fail.
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# re6mesh node configuration: the options of `mesh up` (a key is the option's name).\n\
             # Written by `mesh set KEY=VALUE` and `mesh up --save`; command-line options override it.\n\
             {body}"
        )
    }

    /// Writes `<dir>/node.toml` atomically (mode 0644: it holds no secret, and the tray of a
    /// `re6mesh` group member may read it). Returns the path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, ConfigError> {
        let path = NodeOptions::path(dir);
        let write = |source| ConfigError::Write {
            path: path.clone(),
            source,
        };
        crate::fsutil::create_private_dir(dir).map_err(write)?;
        crate::fsutil::write_atomic(&path, self.to_toml().as_bytes(), 0o644).map_err(write)?;
        Ok(path)
    }

    /// Sets `key` from its command-line text: the option's value, a comma-separated list for
    /// repeatable options; an empty value removes the key (back to the default).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let value = value.trim();
        let bad = |message: String| ConfigError::BadValue {
            key: key.to_owned(),
            message,
        };
        fn one<T: FromStr<Err = String>>(v: &str) -> Result<Option<T>, String> {
            if v.is_empty() {
                Ok(None)
            } else {
                v.parse().map(Some)
            }
        }
        fn list<T: FromStr>(v: &str) -> Result<Vec<T>, String>
        where
            T::Err: fmt::Display,
        {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().map_err(|e| format!("{s:?}: {e}")))
                .collect()
        }
        fn number<T: FromStr>(v: &str) -> Result<Option<T>, String> {
            if v.is_empty() {
                return Ok(None);
            }
            v.parse()
                .map(Some)
                .map_err(|_| format!("{v:?} is not a whole number"))
        }
        match key {
            "listen" => self.listen = one(value).map_err(bad)?,
            "tun" => self.tun = (!value.is_empty()).then(|| value.to_owned()),
            "peer" => self.peer = list(value).map_err(bad)?,
            "endpoint" => self.endpoint = list(value).map_err(bad)?,
            "hello-interval" => {
                self.hello_interval = if value.is_empty() {
                    None
                } else {
                    Some(parse_hello(value).map_err(bad)?)
                }
            }
            "registry-poll" => self.registry_poll = number(value).map_err(bad)?,
            "no-registry-watch" => {
                self.no_registry_watch = match value {
                    "" => None,
                    "true" => Some(true),
                    "false" => Some(false),
                    v => return Err(bad(format!("{v:?} is not true or false"))),
                }
            }
            "no-port-mapping" => {
                self.no_port_mapping = match value {
                    "" => None,
                    "true" => Some(true),
                    "false" => Some(false),
                    v => return Err(bad(format!("{v:?} is not true or false"))),
                }
            }
            "tunnel-timeout-ms" => self.tunnel_timeout_ms = number(value).map_err(bad)?,
            "lan" => self.lan = list(value).map_err(bad)?,
            "country" => self.country = one(value).map_err(bad)?,
            "metrics" => {
                self.metrics = if value.is_empty() {
                    None
                } else {
                    Some(value.parse().map_err(|_| {
                        bad(format!(
                            "{value:?} is not an address and port, e.g. [::1]:9464 or 127.0.0.1:9464"
                        ))
                    })?)
                }
            }
            "advertise-route" => self.advertise_route = list(value).map_err(bad)?,
            "exit" | "exit-routed" => {
                let v = match value {
                    "" => None,
                    "true" => Some(true),
                    "false" => Some(false),
                    v => return Err(bad(format!("{v:?} is not true or false"))),
                };
                if key == "exit" {
                    self.exit = v;
                } else {
                    self.exit_routed = v;
                }
            }
            "use-exit" => self.use_exit = one(value).map_err(bad)?,
            _ => return Err(ConfigError::UnknownKey(key.to_owned())),
        }
        Ok(())
    }

    /// `self` (the command line) over `file`: a set option wins, an unset one takes the file's.
    pub fn over(self, file: NodeOptions) -> NodeOptions {
        fn list<T>(flags: Vec<T>, file: Vec<T>) -> Vec<T> {
            if flags.is_empty() { file } else { flags }
        }
        NodeOptions {
            listen: self.listen.or(file.listen),
            tun: self.tun.or(file.tun),
            peer: list(self.peer, file.peer),
            endpoint: list(self.endpoint, file.endpoint),
            hello_interval: self.hello_interval.or(file.hello_interval),
            registry_poll: self.registry_poll.or(file.registry_poll),
            no_registry_watch: self.no_registry_watch.or(file.no_registry_watch),
            no_port_mapping: self.no_port_mapping.or(file.no_port_mapping),
            tunnel_timeout_ms: self.tunnel_timeout_ms.or(file.tunnel_timeout_ms),
            lan: list(self.lan, file.lan),
            country: self.country.or(file.country),
            metrics: self.metrics.or(file.metrics),
            advertise_route: list(self.advertise_route, file.advertise_route),
            exit: self.exit.or(file.exit),
            exit_routed: self.exit_routed.or(file.exit_routed),
            use_exit: self.use_exit.or(file.use_exit),
        }
    }

    /// The node's configuration, defaults filled in, for state directory `state_dir`.
    pub fn node_config(&self, state_dir: PathBuf) -> NodeConfig {
        let idle = Duration::from_millis(
            self.tunnel_timeout_ms
                .unwrap_or(DEFAULT_TUNNEL_TIMEOUT_MS)
                .max(100),
        );
        let poll = self.registry_poll.unwrap_or(DEFAULT_REGISTRY_POLL_SECS);
        NodeConfig {
            state_dir,
            listen: self.listen.map(|l| l.0).unwrap_or_else(|| {
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, DEFAULT_PORT))
            }),
            tun_name: self
                .tun
                .clone()
                .unwrap_or_else(|| crate::tun::DEFAULT_NAME.to_owned()),
            tun_mtu: crate::tun::DEFAULT_MTU,
            peers: self.peer.iter().map(|p| (p.prefix, p.addr)).collect(),
            endpoints: self.endpoint.clone(),
            tunnel_timers: TunnelTimers {
                keep_alive: idle / 4,
                idle_timeout: idle,
            },
            babel_timers: self.hello_interval.map(|h| {
                let hello = Duration::from_secs_f64(h.max(0.05));
                crate::mesh::babel::Timers {
                    hello,
                    update: hello * 4,
                }
            }),
            registry_poll: (poll > 0).then(|| Duration::from_secs(poll)),
            registry_watch: !self.no_registry_watch.unwrap_or(false),
            port_mapping: !self.no_port_mapping.unwrap_or(false),
            lan: self.lan.clone(),
            country: self.country.as_ref().map(|c| c.0.clone()),
            metrics: self.metrics,
            advertise_routes: self
                .advertise_route
                .iter()
                .filter_map(|p| match p {
                    ipnet::IpNet::V6(p) => Some(p.trunc()),
                    ipnet::IpNet::V4(_) => None,
                })
                .collect(),
            advertise_routes_v4: self
                .advertise_route
                .iter()
                .filter_map(|p| match p {
                    ipnet::IpNet::V4(p) => Some(p.trunc()),
                    ipnet::IpNet::V6(_) => None,
                })
                .collect(),
            exit: self.exit.unwrap_or(false).then(|| {
                if self.exit_routed.unwrap_or(false) {
                    crate::mesh::node::exit::ExitMode::Routed
                } else {
                    crate::mesh::node::exit::ExitMode::Nat66
                }
            }),
            use_exit: self.use_exit.as_ref().map(|u| u.0),
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn parse_hello(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(h) if h.is_finite() && h > 0.0 => Ok(h),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// `hello-interval = 2` (a TOML integer) and `= 0.5` both mean seconds.
fn de_hello<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(i64),
        Float(f64),
    }
    let h = match Num::deserialize(d)? {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    };
    parse_hello(&h.to_string())
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `--listen [ADDR:]PORT`: a bare port means all addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Listen(pub SocketAddr);

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Listen, String> {
        if let Ok(port) = s.parse::<u16>() {
            return Ok(Listen(SocketAddr::from((
                std::net::Ipv6Addr::UNSPECIFIED,
                port,
            ))));
        }
        s.parse()
            .map(Listen)
            .map_err(|_| format!("{s:?} is not `[ADDR:]PORT` (e.g. 6464, [::]:6464)"))
    }
}

/// `--peer PREFIX@ADDR:PORT`: a static peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerSpec {
    /// The peer's prefix.
    pub prefix: Ipv6Net,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl FromStr for PeerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<PeerSpec, String> {
        let (p, a) = s.split_once('@').ok_or_else(|| {
            format!("{s:?} is not PREFIX@ADDR:PORT (e.g. fd12:3456:789a:1::/64@192.0.2.1:6464)")
        })?;
        Ok(PeerSpec {
            prefix: p
                .parse()
                .map_err(|_| format!("{p:?} is not an IPv6 prefix"))?,
            addr: a.parse().map_err(|_| format!("{a:?} is not ADDR:PORT"))?,
        })
    }
}

/// `--country CC`: ISO 3166 alpha-2, kept upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country(pub String);

impl FromStr for Country {
    type Err = String;
    fn from_str(s: &str) -> Result<Country, String> {
        let c = s.to_ascii_uppercase();
        if crate::mesh::tunnels::valid_country(&c) {
            Ok(Country(c))
        } else {
            Err(format!("{s:?} is not a two-letter ISO 3166 country code"))
        }
    }
}

macro_rules! text_conversions {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<$t, String> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    )*};
}
text_conversions!(Listen, PeerSpec, Country);

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.prefix, self.addr)
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> NodeOptions {
        NodeOptions {
            listen: Some("[::1]:7000".parse().unwrap()),
            tun: Some("re6".into()),
            peer: vec![
                "fd12:3456:789a:1::/64@192.0.2.1:6464".parse().unwrap(),
                "fd12:3456:789a:2::/64@[2001:db8::2]:6464".parse().unwrap(),
            ],
            endpoint: vec!["198.51.100.7:6464".parse().unwrap()],
            hello_interval: Some(0.5),
            registry_poll: Some(0),
            no_registry_watch: Some(true),
            no_port_mapping: Some(true),
            tunnel_timeout_ms: Some(2000),
            lan: vec!["eth0".into(), "wlan0".into()],
            country: Some("fr".parse().unwrap()),
            metrics: Some("[::1]:9464".parse().unwrap()),
            advertise_route: vec!["2001:db8:5::/48".parse().unwrap()],
            exit: Some(true),
            exit_routed: Some(false),
            use_exit: Some("auto".parse().unwrap()),
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            NodeOptions::load(dir.path()).unwrap(),
            NodeOptions::default()
        );
        let o = full();
        let path = o.save(dir.path()).unwrap();
        assert_eq!(path, dir.path().join("node.toml"));
        assert_eq!(NodeOptions::load(dir.path()).unwrap(), o);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("registry-poll = 0\n"), "{text}");
        assert!(text.contains("country = \"FR\"\n"), "{text}");
        // an empty configuration is only the header
        NodeOptions::default().save(dir.path()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().all(|l| l.starts_with('#')), "{text}");
    }

    #[test]
    fn every_key_is_listed_and_settable() {
        let toml_keys: Vec<String> = toml::to_string(&full())
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_owned()))
            .collect();
        assert_eq!(toml_keys, KEYS, "KEYS lists the file's keys in order");
        let mut o = NodeOptions::default();
        for (k, v) in [
            ("listen", "[::1]:7000"),
            ("tun", "re6"),
            (
                "peer",
                "fd12:3456:789a:1::/64@192.0.2.1:6464, fd12:3456:789a:2::/64@[2001:db8::2]:6464",
            ),
            ("endpoint", "198.51.100.7:6464"),
            ("hello-interval", "0.5"),
            ("registry-poll", "0"),
            ("no-registry-watch", "true"),
            ("no-port-mapping", "true"),
            ("tunnel-timeout-ms", "2000"),
            ("lan", "eth0,wlan0"),
            ("country", "fr"),
            ("metrics", "[::1]:9464"),
            ("advertise-route", "2001:db8:5::/48"),
            ("exit", "true"),
            ("exit-routed", "false"),
            ("use-exit", "auto"),
        ] {
            o.set(k, v).unwrap();
        }
        assert_eq!(o, full());
        for k in KEYS {
            o.set(k, "").unwrap();
        }
        assert_eq!(o, NodeOptions::default(), "an empty value removes the key");
        let e = o.set("metrics", "9464").unwrap_err().to_string();
        assert!(e.contains("is not an address and port"), "{e}");
    }

    #[test]
    fn command_line_overrides_file_overrides_defaults() {
        let file = full();
        let flags = NodeOptions {
            listen: Some("6500".parse().unwrap()),
            lan: vec!["eth1".into()],
            ..NodeOptions::default()
        };
        let merged = flags.over(file.clone());
        assert_eq!(merged.listen, Some("[::]:6500".parse().unwrap()));
        assert_eq!(
            merged.lan,
            ["eth1"],
            "a list on the command line replaces the file's"
        );
        assert_eq!(merged.peer, file.peer, "unset options keep the file's");
        assert_eq!(merged.country, file.country);

        let c = merged.node_config("/s".into());
        assert_eq!(c.listen, "[::]:6500".parse().unwrap());
        assert_eq!(c.tun_name, "re6");
        assert_eq!(c.registry_poll, None, "registry-poll = 0 means never");
        assert!(!c.registry_watch);
        assert!(!c.port_mapping, "no-port-mapping = true turns it off");
        assert_eq!(c.tunnel_timers.idle_timeout, Duration::from_secs(2));
        assert_eq!(c.tunnel_timers.keep_alive, Duration::from_millis(500));
        assert_eq!(c.country.as_deref(), Some("FR"));
        assert_eq!(c.babel_timers.unwrap().update, Duration::from_secs(2));

        // nothing anywhere: today's defaults of `mesh up`
        let d = NodeOptions::default().node_config("/s".into());
        assert_eq!(d.listen, "[::]:6464".parse().unwrap());
        assert_eq!(d.tun_name, crate::tun::DEFAULT_NAME);
        assert_eq!(d.registry_poll, Some(Duration::from_secs(300)));
        assert!(d.registry_watch);
        assert!(d.port_mapping, "port mapping is on by default");
        assert_eq!(d.tunnel_timers.idle_timeout, Duration::from_secs(1));
        assert!(d.babel_timers.is_none() && d.peers.is_empty() && d.country.is_none());
    }

    #[test]
    fn integer_hello_interval_is_seconds() {
        let o = NodeOptions::parse("hello-interval = 2\n", Path::new("n.toml")).unwrap();
        assert_eq!(o.hello_interval, Some(2.0));
    }

    fn invalid(text: &str) -> (Option<usize>, String) {
        match NodeOptions::parse(text, Path::new("/etc/x/node.toml")) {
            Err(ConfigError::Invalid { line, message, .. }) => (line, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_key_with_its_line() {
        let (line, msg) = invalid("listen = \"6464\"\n\npeers = []\n");
        assert_eq!(line, Some(3));
        assert!(msg.contains("unknown field `peers`"), "{msg}");
        let e = NodeOptions::parse("x = 1", Path::new("/etc/x/node.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/x/node.toml line 1: unknown field `x`"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_values_with_their_line() {
        let (line, msg) = invalid("tun = \"m\"\npeer = [\"fd00::/64@nowhere\"]\n");
        assert_eq!(line, Some(2));
        assert!(msg.contains("\"nowhere\" is not ADDR:PORT"), "{msg}");
        let (line, msg) = invalid("\n\ncountry = \"France\"\n");
        assert_eq!(line, Some(3));
        assert!(msg.contains("not a two-letter ISO 3166"), "{msg}");
        let (line, _) = invalid("registry-poll = -1\n");
        assert_eq!(line, Some(1));
        let (line, _) = invalid("hello-interval = 0\n");
        assert_eq!(line, Some(1));
        let (line, _) = invalid("listen = 6464\n");
        assert_eq!(line, Some(1), "a listen address is a string");
        let (line, _) = invalid("lan = \"eth0\n");
        assert_eq!(line, Some(1), "bad TOML");
    }

    #[test]
    fn set_rejects_unknown_keys_and_bad_values() {
        let mut o = full();
        let e = o.set("peers", "x").unwrap_err();
        assert!(matches!(e, ConfigError::UnknownKey(_)));
        assert!(e.to_string().contains("known: listen, tun, peer"), "{e}");
        assert!(matches!(
            o.set("registry-poll", "soon"),
            Err(ConfigError::BadValue { .. })
        ));
        assert!(o.set("peer", "fd00::/64@192.0.2.1:1,junk").is_err());
        assert!(o.set("no-registry-watch", "yes").is_err());
        assert!(o.set("no-port-mapping", "maybe").is_err());
        assert!(o.set("hello-interval", "-1").is_err());
        assert_eq!(o, full(), "a refused value changes nothing");
    }

    #[test]
    fn unreadable_file_is_an_error_not_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        assert!(matches!(
            NodeOptions::load(dir.path()),
            Err(ConfigError::Read { .. })
        ));
    }
}
