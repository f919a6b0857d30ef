//! The node's local control API (CONVENTIONS "Node lifecycle"): HTTP/1.1 + JSON on the Unix
//! socket `<state-dir>/control.sock` (mode 0600 for a per-user run; 0660 with group `re6mesh` when
//! root runs the node and that group exists, as the installers create it for the service). Read-only calls
//! (`GET /v1/status`, `/v1/peers`, `/v1/routes`) and actions (`POST /v1/up`, `/v1/down`,
//! `/v1/exit`) are distinct. Used by the CLI (`mesh status|peers|routes|up|down`), later by
//! the tray and the web page; `curl --unix-socket` works too.

pub mod client;
pub mod graph;
pub mod locate;
pub mod server;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// File name of the socket inside the state directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Node states reported by `mesh status` (CONVENTIONS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStateName {
    /// Process started, identity loading.
    Starting,
    /// Looking for peers, no tunnel yet.
    Connecting,
    /// At least one tunnel, routes exchanged.
    Up,
    /// Disconnected on request (`mesh down`), process still running.
    Down,
    /// This node's certificate is revoked.
    Revoked,
    /// This node's certificate has expired.
    Expired,
    /// Something failed; see `error`.
    Error,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Lifecycle state.
    pub state: NodeStateName,
    /// Node prefix (CIDR).
    pub prefix: String,
    /// Node address.
    pub address: String,
    /// Network prefix.
    pub network: String,
    /// Parameters version in force.
    pub params_version: u64,
    /// Protocol version.
    pub protocol: u32,
    /// Live tunnels.
    pub tunnels: usize,
    /// Selected routes.
    pub routes: usize,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Last error, if any.
    pub error: Option<String>,
    /// What the user should know although the node runs (e.g. the CRL is missing and new
    /// tunnels are held), one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the node refused or dropped, by counter name (a hostile or broken peer shows
    /// here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
    /// Node-wide tunnel traffic since the node started (closed tunnels included).
    #[serde(flatten, default)]
    pub traffic: Traffic,
    /// Packets the data path dropped, by reason (`malformed`, `no_error_allowed`,
    /// `rate_limited`, `queue_full`, `send_failed`, `bad_datagram`, `tun_write_failed`,
    /// `spoofed_source`, `plain_transit`, `sealed_hop_limit`, `no_route`, `no_session`,
    /// `open_failed`, `too_big`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drops: BTreeMap<String, u64>,
    /// Of the selected routes to other nodes, how many go straight through a tunnel to that
    /// node and how many through a relay.
    #[serde(default)]
    pub paths: Paths,
    /// This node's certificate (absent from nodes that predate the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
    /// The last exchanges with the registry (absent where there is no registry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryStatus>,
    /// End-to-end sealing across relays (docs/SEALING.md; absent where there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<SealStatus>,
    /// The tunnel port's mapping on the home router (PCP, NAT-PMP; absent where
    /// the node has none to report, e.g. the LAN daemon or an older node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mapping: Option<PortMappingStatus>,
    /// The exit (issue 15): `this node` on an exit (`--exit`), else the exit in use (its
    /// node prefix and name); absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// This node's IPv4 address (issue 15: a network with an IPv4 range); absent when it
    /// has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
}

/// `status.port_mapping`: the tunnel port forwarded by the home router.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortMappingStatus {
    /// `off` (`--no-port-mapping`, or `--endpoint` given), `searching`, `mapped`,
    /// `renewing`, `retrying` (no router answered; tried again later), `unavailable` (given
    /// up until the network changes), `stopped`.
    pub state: String,
    /// `pcp`, `nat-pmp` or `upnp` while mapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The router that holds the mapping (or the default gateway while searching).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The public address and port the router forwards to the tunnel port: a candidate of
    /// kind mapped, announced to the registry and the neighbours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
    /// The node's tunnel port.
    pub internal_port: u16,
    /// The lifetime the router granted, seconds (0: until removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime_secs: Option<u64>,
    /// Seconds until the next renewal (mapped) or attempt (retrying).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_in_secs: Option<u64>,
    /// The last failure (kept after a later success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Sealing with far nodes: live sessions and the counters of
/// [`SealStats`](crate::mesh::seal::session::SealStats).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealStatus {
    /// Established sessions (at most two per far node: current and previous keys).
    pub sessions: u64,
    /// The counters.
    #[serde(flatten)]
    pub stats: crate::mesh::seal::session::SealStats,
}

/// How the selected routes to other nodes leave this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Paths {
    /// Through a tunnel to the destination node itself.
    pub direct: usize,
    /// Through a tunnel to another node, which relays.
    pub relayed: usize,
}

/// `status.certificate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// This node's name, from its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Serial number (hex).
    pub serial: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Seconds until then at the time of the answer (negative: expired).
    pub expires_in_secs: i64,
}

/// `status.registry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryStatus {
    /// The registry's URL.
    pub url: String,
    /// When a request to it last succeeded (Unix seconds); `None`: not since the node started.
    pub last_ok: Option<i64>,
    /// When one last failed (Unix seconds), and why.
    pub last_error: Option<i64>,
    /// See `last_error`.
    pub error: Option<String>,
    /// The last request succeeded (nodes work without the registry; this only tells
    /// whether renewals, new parameters and bootstrap peers can come from it now).
    pub reachable: bool,
}

/// How a route leaves this node: `local` (one of ours), `direct` (the next hop is the
/// destination node), `relayed` (another node forwards), `unreachable` (retracted).
pub fn route_path(r: &Route) -> &'static str {
    if r.local {
        "local"
    } else if r.metric == u16::MAX {
        "unreachable"
    } else {
        match (
            r.prefix.parse::<ipnet::Ipv6Net>(),
            r.next_hop.parse::<std::net::Ipv6Addr>(),
        ) {
            (Ok(p), Ok(h)) if p.contains(&h) => "direct",
            _ => "relayed",
        }
    }
}

/// Traffic of a tunnel (or of all of them): IPv6 data and Babel, counted by the data path.
/// Every field defaults to 0, so JSON from an older node still parses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Traffic {
    /// IPv6 data bytes received (packet bytes, without tunnel framing).
    pub rx_bytes: u64,
    /// IPv6 data bytes sent.
    pub tx_bytes: u64,
    /// IPv6 data packets received.
    pub rx_packets: u64,
    /// IPv6 data packets sent.
    pub tx_packets: u64,
    /// Babel bytes received.
    pub babel_rx_bytes: u64,
    /// Babel bytes sent.
    pub babel_tx_bytes: u64,
    /// Babel packets received.
    pub babel_rx_packets: u64,
    /// Babel packets sent.
    pub babel_tx_packets: u64,
    /// Babel packets handed to QUIC by the tunnel's scheduler (the queueing delay samples).
    pub babel_delay_samples: u64,
    /// Of those, how many waited more than 5 ms between queued and handed to QUIC.
    pub babel_delay_over_5ms: u64,
    /// The longest such wait, in microseconds (the largest of all tunnels in a sum).
    pub babel_delay_max_us: u64,
    /// Data packets the scheduler dropped because they waited too long (CoDel).
    pub data_dropped_late: u64,
    /// Data packets the scheduler dropped, oldest first, because its queue was full.
    pub data_dropped_full: u64,
}

impl Traffic {
    /// The sum of two counts.
    pub fn add(&mut self, o: &Traffic) {
        self.rx_bytes += o.rx_bytes;
        self.tx_bytes += o.tx_bytes;
        self.rx_packets += o.rx_packets;
        self.tx_packets += o.tx_packets;
        self.babel_rx_bytes += o.babel_rx_bytes;
        self.babel_tx_bytes += o.babel_tx_bytes;
        self.babel_rx_packets += o.babel_rx_packets;
        self.babel_tx_packets += o.babel_tx_packets;
        self.babel_delay_samples += o.babel_delay_samples;
        self.babel_delay_over_5ms += o.babel_delay_over_5ms;
        self.babel_delay_max_us = self.babel_delay_max_us.max(o.babel_delay_max_us);
        self.data_dropped_late += o.data_dropped_late;
        self.data_dropped_full += o.data_dropped_full;
    }
}

/// `n` bytes for people: `512 B`, `1.2 KiB`, `3.4 MiB`, `5.6 GiB`, `7.8 TiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One line of `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// Peer prefix.
    pub prefix: String,
    /// UDP endpoint of the tunnel.
    pub endpoint: String,
    /// Smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// We dialled it.
    pub initiated: bool,
    /// Tunnel state (`up`, `soft_locked`, `hard_locked`, …).
    pub state: String,
    /// The peer's parameters version.
    pub params_version: u64,
    /// What the tunnel carried (IPv6 data in `rx_bytes`…, Babel in `babel_rx_bytes`…).
    #[serde(flatten, default)]
    pub traffic: Traffic,
    /// Milliseconds since the last datagram (data or Babel) arrived; `None`: none yet.
    #[serde(default)]
    pub last_rx_ms_ago: Option<u64>,
    /// The peer's name, from its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How the tunnel was made: `direct` (a plain handshake to or from an announced
    /// candidate) or `punched` (handshakes from both sides at a moment agreed through the
    /// mesh); `mapped` is kept for candidates from a port mapping.
    #[serde(default = "made_direct")]
    pub made: String,
}

fn made_direct() -> String {
    "direct".into()
}

/// One line of `GET /v1/routes` (CONVENTIONS route fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination (CIDR).
    pub prefix: String,
    /// Next hop address, no zone.
    pub next_hop: String,
    /// Interface or tunnel name.
    pub iface: String,
    /// 0..65535, 65535 = unreachable.
    pub metric: u16,
    /// `xx:xx:…`, 8 bytes.
    pub router_id: String,
    /// Sequence number.
    pub seqno: u16,
    /// Selected for forwarding.
    pub selected: bool,
    /// One of our own prefixes.
    pub local: bool,
    /// `local`, `direct`, `relayed` or `unreachable` ([`route_path`]); empty from nodes
    /// that predate the field.
    #[serde(default)]
    pub path: String,
    /// The name of the node that owns the prefix, from its certificate, when this node
    /// holds it (neighbours, origin-authenticated routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For a route outside the network prefix (an exit's `::/0 from …`, a subnet route):
    /// the prefix of the node that originates it, when the parameters grant it that route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// Formats a Babel router-id as CONVENTIONS says.
pub fn router_id_text(id: &[u8; 8]) -> String {
    id.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What the node answers; implemented by the node, faked in tests.
pub trait ControlHandler: Send + Sync + 'static {
    /// Current status.
    fn status(&self) -> Status;
    /// Live tunnels.
    fn peers(&self) -> Vec<Peer>;
    /// Routes (selected and not).
    fn routes(&self) -> Vec<Route>;
    /// Connect (after `down`). Returns a sentence for the user.
    fn up(&self) -> Result<String, String>;
    /// Disconnect: tunnels closed, address and route withdrawn, process stays.
    fn down(&self) -> Result<String, String>;
    /// Exit the process cleanly.
    fn exit(&self) -> Result<String, String>;
}

/// Answer of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReply {
    /// It worked.
    pub ok: bool,
    /// A sentence for the user.
    pub message: String,
}

/// The group that may use a service's control socket (CONVENTIONS: installers create it).
pub const SERVICE_GROUP: &str = "re6mesh";

/// The id of group `name` in an `/etc/group`-format text, if listed. Malformed lines are skipped.
pub fn group_id(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.trim().parse().ok()
    })
}

/// The id of the [`SERVICE_GROUP`] on this machine, if it exists.
pub fn service_group_id() -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    group_id(&text, SERVICE_GROUP)
}

#[cfg(test)]
mod tests {
    fn route(prefix: &str, next_hop: &str, metric: u16, local: bool) -> super::Route {
        super::Route {
            prefix: prefix.into(),
            next_hop: next_hop.into(),
            iface: "t-x".into(),
            metric,
            router_id: String::new(),
            seqno: 0,
            selected: true,
            local,
            path: String::new(),
            name: None,
            origin: None,
        }
    }

    #[test]
    fn a_route_is_direct_when_its_next_hop_is_the_destination_node() {
        use super::route_path;
        let r = |p, h, m, l| route_path(&route(p, h, m, l));
        assert_eq!(r("fd00:0:0:2::/64", "fd00:0:0:2::1", 96, false), "direct");
        assert_eq!(r("fd00:0:0:3::/64", "fd00:0:0:2::1", 192, false), "relayed");
        assert_eq!(
            r("fd00:0:0:3::/64", "fd00:0:0:3::1", u16::MAX, false),
            "unreachable"
        );
        assert_eq!(r("fd00:0:0:1::/64", "", 0, true), "local");
        // a next hop that is no address (an older node's JSON) is not claimed direct
        assert_eq!(r("fd00:0:0:3::/64", "", 96, false), "relayed");
    }

    #[test]
    fn group_id_reads_etc_group_lines() {
        let text = "root:x:0:\nre6meshx:x:5:\nre6mesh:x:998:alice,bob\nbad line\nother:x:zz:\n";
        assert_eq!(super::group_id(text, "re6mesh"), Some(998));
        assert_eq!(super::group_id(text, "root"), Some(0));
        assert_eq!(
            super::group_id(text, "other"),
            None,
            "a non-numeric gid is not a gid"
        );
        assert_eq!(super::group_id(text, "missing"), None);
        assert_eq!(super::group_id("", "re6mesh"), None);
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(super::human_bytes(0), "0 B");
        assert_eq!(super::human_bytes(1023), "1023 B");
        assert_eq!(super::human_bytes(1024), "1.0 KiB");
        assert_eq!(super::human_bytes(1_258_291), "1.2 MiB");
        assert_eq!(super::human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(super::human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn old_peer_and_status_json_still_parse() {
        let p: super::Peer = serde_json::from_str(
            r#"{"prefix":"fd00::/64","endpoint":"[::1]:1","rtt_ms":1.0,"initiated":true,"state":"up","params_version":1}"#,
        )
        .expect("old peer JSON");
        assert_eq!(p.traffic, super::Traffic::default());
        assert_eq!(p.last_rx_ms_ago, None);
        let mut p2 = p.clone();
        p2.traffic.rx_bytes = 7;
        p2.last_rx_ms_ago = Some(3);
        let text = serde_json::to_string(&p2).expect("serialise");
        assert!(text.contains(r#""rx_bytes":7"#), "{text}");
        assert!(text.contains(r#""last_rx_ms_ago":3"#), "{text}");
        assert_eq!(
            serde_json::from_str::<super::Peer>(&text).expect("parse"),
            p2
        );
        let s: super::Status = serde_json::from_str(
            r#"{"state":"up","prefix":"p","address":"a","network":"n","params_version":1,"protocol":1,"tunnels":0,"routes":0,"uptime_secs":1,"error":null}"#,
        )
        .expect("old status JSON");
        assert_eq!(s.traffic, super::Traffic::default());
        assert!(s.drops.is_empty());
    }

    #[test]
    fn router_id_is_colon_hex() {
        assert_eq!(
            super::router_id_text(&[0, 1, 0xab, 3, 4, 5, 6, 0xff]),
            "00:01:ab:03:04:05:06:ff"
        );
    }
}
