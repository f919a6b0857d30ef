//! `mesh status|peers|routes|down`: read the running node through its control socket.

use crate::control::human_bytes;
use clap::Args;

use super::StateDir;
use crate::control::client::ControlClient;
use crate::control::locate::{Candidates, NodeChoice, locate};

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    state: StateDir,
    /// JSON output (one object for status, JSON Lines for lists).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PeersArgs {
    #[command(flatten)]
    show: ShowArgs,
    /// With `--json`, also the far nodes (reached through a neighbour): one line each with
    /// `reach: "relayed"` and `via`, the neighbour's prefix; tunnels get `reach: "direct"`.
    /// The table always shows them.
    #[arg(long)]
    far: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    state: StateDir,
    /// Make the node process exit instead of staying down.
    #[arg(long)]
    exit: bool,
    /// JSON output: {"action", "message", "state_dir"}.
    #[arg(long)]
    json: bool,
}

/// The node to talk to (`--state-dir`, else the user's running node, else the system node)
/// and a client for it.
fn client(
    rt: &tokio::runtime::Runtime,
    s: &StateDir,
) -> anyhow::Result<(NodeChoice, ControlClient)> {
    let choice = rt.block_on(locate(&Candidates::for_this_process(s.state_dir.clone())))?;
    tracing::debug!(node = %choice.describe(), "talking to");
    let client = ControlClient::new(choice.dir());
    Ok((choice, client))
}

#[allow(clippy::disallowed_methods)] // CLI (IO shell): "last answer 12s ago" needs the clock
pub fn status(a: ShowArgs) -> anyhow::Result<()> {
    let rt = super::runtime()?;
    let (choice, client) = client(&rt, &a.state)?;
    let st = rt.block_on(client.status())?;
    if a.json {
        println!("{}", serde_json::to_string(&st)?);
        return Ok(());
    }
    let state = serde_json::to_value(st.state)?;
    println!("node            {}", choice.describe());
    if let Some(name) = st.certificate.as_ref().and_then(|c| c.name.as_deref()) {
        println!("name            {name}");
    }
    println!("state           {}", state.as_str().unwrap_or("?"));
    println!("prefix          {}", st.prefix);
    println!("address         {}", st.address);
    if let Some(a) = &st.ipv4 {
        println!("IPv4 address    {a}");
    }
    println!("network         {}", st.network);
    println!(
        "parameters      version {} (protocol {})",
        st.params_version, st.protocol
    );
    println!("tunnels         {}", st.tunnels);
    println!(
        "routes          {} ({} direct, {} relayed)",
        st.routes, st.paths.direct, st.paths.relayed
    );
    if let Some(c) = &st.certificate {
        println!("certificate     {}", certificate_line(c));
    }
    if let Some(r) = &st.registry {
        println!(
            "registry        {}",
            registry_line(r, time::OffsetDateTime::now_utc().unix_timestamp())
        );
    }
    if let Some(p) = &st.port_mapping {
        println!("port mapping    {}", port_mapping_line(p));
    }
    if let Some(e) = &st.exit {
        println!("exit            {e}");
    }
    println!(
        "uptime          {}",
        humantime::format_duration(std::time::Duration::from_secs(st.uptime_secs))
    );
    if let Some(e) = st.error {
        println!("error           {e}");
    }
    for w in &st.warnings {
        println!("warning         {w}");
    }
    if !st.counters.is_empty() {
        let list: Vec<String> = st
            .counters
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("dropped         {}", list.join(", "));
    }
    let t = st.traffic;
    println!(
        "traffic         received {} in {} packets, sent {} in {} packets (Babel: received {}, sent {})",
        human_bytes(t.rx_bytes),
        t.rx_packets,
        human_bytes(t.tx_bytes),
        t.tx_packets,
        human_bytes(t.babel_rx_bytes),
        human_bytes(t.babel_tx_bytes),
    );
    if !st.drops.is_empty() {
        let list: Vec<String> = st.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("data drops      {}", list.join(", "));
    }
    Ok(())
}

/// `serial 1f…, valid until 2027-03-01 12:00 UTC (in 87 days)`; `EXPIRED` once past.
fn certificate_line(c: &crate::control::CertificateStatus) -> String {
    let until = time::OffsetDateTime::from_unix_timestamp(c.not_after)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| c.not_after.to_string());
    if c.expires_in_secs <= 0 {
        format!("serial {}, EXPIRED since {until}", c.serial)
    } else {
        format!(
            "serial {}, valid until {until} (in {})",
            c.serial,
            ago(c.expires_in_secs)
        )
    }
}

/// `reachable (last answer 12s ago)`, `unreachable for 5m: <error> (last answer 2h ago)`.
fn registry_line(r: &crate::control::RegistryStatus, now: i64) -> String {
    let last_ok = match r.last_ok {
        Some(t) => format!("last answer {} ago", ago(now - t)),
        None => "no answer since the node started".to_owned(),
    };
    if r.reachable {
        format!("{} reachable ({last_ok})", r.url)
    } else if let Some(t) = r.last_error {
        format!(
            "{} unreachable since {} ago: {} ({last_ok}; the mesh works without it, renewals and new parameters wait)",
            r.url,
            ago(now - t),
            r.error.as_deref().unwrap_or("?"),
        )
    } else {
        format!("{} not asked yet", r.url)
    }
}

/// `mapped 198.51.100.1:6464 → :6464 by pcp at 192.168.1.1 (lifetime 2h, renewed in 59m)`,
/// `searching`, `retrying in 30s (last error: …)`, `off`.
fn port_mapping_line(p: &crate::control::PortMappingStatus) -> String {
    let mut s = p.state.clone();
    if let Some(e) = &p.external {
        s.push_str(&format!(" {e} → :{}", p.internal_port));
    }
    if let (Some(proto), Some(gw)) = (&p.protocol, &p.gateway) {
        s.push_str(&format!(" by {proto} at {gw}"));
    }
    let next = p
        .next_in_secs
        .map(|n| ago(i64::try_from(n).unwrap_or(i64::MAX)));
    match (p.lifetime_secs, next) {
        (Some(0), Some(n)) => s.push_str(&format!(" (until removed, confirmed in {n})")),
        (Some(l), Some(n)) => s.push_str(&format!(
            " (lifetime {}, renewed in {n})",
            ago(i64::try_from(l).unwrap_or(i64::MAX))
        )),
        (None, Some(n)) => s.push_str(&format!(" in {n}")),
        _ => {}
    }
    if let Some(e) = &p.last_error
        && p.state != "mapped"
        && p.state != "off"
    {
        s.push_str(&format!(" (last error: {e})"));
    }
    s
}

/// A rough duration for people: `12s`, `5m`, `3h`, `87 days`.
fn ago(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

pub fn peers(args: PeersArgs) -> anyhow::Result<()> {
    let a = args.show;
    let rt = super::runtime()?;
    let c = client(&rt, &a.state)?.1;
    let peers = rt.block_on(c.peers())?;
    let far = if args.far || !a.json {
        far_nodes(&peers, &rt.block_on(c.routes())?)
    } else {
        Vec::new()
    };
    if a.json {
        for p in &peers {
            let mut v = serde_json::to_value(p)?;
            if args.far
                && let Some(o) = v.as_object_mut()
            {
                o.insert("reach".into(), "direct".into());
            }
            println!("{v}");
        }
        for f in &far {
            println!("{}", serde_json::to_string(f)?);
        }
        return Ok(());
    }
    println!(
        "{:<26} {:<30} {:>9} {:<9} {:<12} {:<8} {:>6} {:>10} {:>10} {:<12} NAME",
        "PREFIX", "ENDPOINT", "RTT", "DIALLED", "STATE", "MADE", "PARAMS", "RX", "TX", "LAST RX"
    );
    for p in &peers {
        println!("{}", peer_line(p));
    }
    if !far.is_empty() {
        println!("\nfar nodes (no tunnel: relayed)");
        println!("{:<26} {:<26} {:>6} NAME", "PREFIX", "VIA", "METRIC");
        for f in &far {
            println!(
                "{:<26} {:<26} {:>6} {}",
                f.prefix,
                f.via_name
                    .as_ref()
                    .map_or_else(|| f.via.clone(), |n| format!("{} ({n})", f.via)),
                f.metric,
                f.name.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

/// A node reached through a neighbour (`mesh peers`).
#[derive(Debug, serde::Serialize)]
struct FarNode {
    prefix: String,
    /// Always `relayed`.
    reach: &'static str,
    /// The neighbour (tunnel peer prefix) the selected route goes through.
    via: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    via_name: Option<String>,
    metric: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// The selected relayed routes, by the tunnel they leave on.
fn far_nodes(peers: &[crate::control::Peer], routes: &[crate::control::Route]) -> Vec<FarNode> {
    routes
        .iter()
        .filter(|r| r.selected && !r.local && r.path == "relayed")
        .map(|r| {
            let hop = r.next_hop.parse::<std::net::Ipv6Addr>().ok();
            let via = peers.iter().find(|p| {
                p.prefix
                    .parse::<ipnet::Ipv6Net>()
                    .is_ok_and(|n| hop.is_some_and(|h| n.contains(&h)))
            });
            FarNode {
                prefix: r.prefix.clone(),
                reach: "relayed",
                via: via.map_or_else(|| r.next_hop.clone(), |p| p.prefix.clone()),
                via_name: via.and_then(|p| p.name.clone()),
                metric: r.metric,
                name: r.name.clone(),
            }
        })
        .collect()
}

/// One line of the human `mesh peers` table.
fn peer_line(p: &crate::control::Peer) -> String {
    let last = match p.last_rx_ms_ago {
        Some(ms) if ms < 10_000 => format!("{ms}ms ago"),
        Some(ms) => format!("{}s ago", ms / 1000),
        None => "never".to_owned(),
    };
    format!(
        "{:<26} {:<30} {:>7.1}ms {:<9} {:<12} {:<8} {:>6} {:>10} {:>10} {:<12} {}",
        p.prefix,
        p.endpoint,
        p.rtt_ms,
        if p.initiated { "yes" } else { "no" },
        p.state,
        p.made,
        p.params_version,
        human_bytes(p.traffic.rx_bytes + p.traffic.babel_rx_bytes),
        human_bytes(p.traffic.tx_bytes + p.traffic.babel_tx_bytes),
        last,
        p.name.as_deref().unwrap_or("-")
    )
}

pub fn routes(a: ShowArgs) -> anyhow::Result<()> {
    let rt = super::runtime()?;
    let routes = rt.block_on(client(&rt, &a.state)?.1.routes())?;
    print_routes(routes, a.json)
}

/// Prints routes as JSON Lines or as a table (shared by `mesh routes` and `mesh babel routes`).
pub(super) fn print_routes(routes: Vec<crate::control::Route>, json: bool) -> anyhow::Result<()> {
    if json {
        for r in routes {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    }
    println!(
        "{:<26} {:<28} {:<16} {:>6} {:<24} {:>6} {:<11} {:<3} NAME",
        "PREFIX", "NEXT HOP", "IFACE", "METRIC", "ROUTER ID", "SEQNO", "PATH", "SEL"
    );
    for r in routes {
        let metric = if r.metric == u16::MAX {
            "inf".to_owned()
        } else {
            r.metric.to_string()
        };
        println!(
            "{:<26} {:<28} {:<16} {:>6} {:<24} {:>6} {:<11} {:<3} {}",
            r.prefix,
            if r.local {
                "(local)".to_owned()
            } else {
                r.next_hop
            },
            r.iface,
            metric,
            r.router_id,
            r.seqno,
            if r.path.is_empty() { "-" } else { &r.path },
            if r.selected { "*" } else { "" },
            r.name.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub fn down(a: DownArgs) -> anyhow::Result<()> {
    let what = if a.exit { "exit" } else { "down" };
    let rt = super::runtime()?;
    let (choice, client) = client(&rt, &a.state)?;
    let reply = rt.block_on(client.action(what))?;
    if !reply.ok {
        anyhow::bail!("{}", reply.message);
    }
    if a.json {
        let v = serde_json::json!({
            "action": what,
            "message": reply.message,
            "state_dir": choice.dir().display().to_string(),
        });
        println!("{v}");
    } else {
        println!("{}", reply.message);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_line_for_the_port_mapping() {
        use crate::control::PortMappingStatus;
        let mut p = PortMappingStatus {
            state: "mapped".into(),
            protocol: Some("pcp".into()),
            gateway: Some("192.168.1.1".into()),
            external: Some("198.51.100.1:6464".into()),
            internal_port: 6464,
            lifetime_secs: Some(7200),
            next_in_secs: Some(3540),
            last_error: Some("nat-pmp: no answer".into()),
        };
        assert_eq!(
            super::port_mapping_line(&p),
            "mapped 198.51.100.1:6464 → :6464 by pcp at 192.168.1.1 (lifetime 2h, renewed in 59m)"
        );
        p = PortMappingStatus {
            state: "retrying".into(),
            next_in_secs: Some(30),
            last_error: Some("upnp: no UPnP router found".into()),
            ..Default::default()
        };
        assert_eq!(
            super::port_mapping_line(&p),
            "retrying in 30s (last error: upnp: no UPnP router found)"
        );
    }

    #[test]
    fn status_lines_for_the_certificate_and_the_registry() {
        use super::{certificate_line, registry_line};
        use crate::control::{CertificateStatus, RegistryStatus};
        let c = CertificateStatus {
            name: None,
            serial: "1f".into(),
            not_after: 1_800_000_000,
            expires_in_secs: 87 * 86_400 + 5,
        };
        assert_eq!(
            certificate_line(&c),
            "serial 1f, valid until 2027-01-15 08:00 UTC (in 87 days)"
        );
        let c = CertificateStatus {
            expires_in_secs: -3,
            ..c
        };
        assert!(certificate_line(&c).contains("EXPIRED since 2027-01-15"));
        let mut r = RegistryStatus {
            url: "https://reg.example:8443".into(),
            ..Default::default()
        };
        assert_eq!(
            registry_line(&r, 1000),
            "https://reg.example:8443 not asked yet"
        );
        r.last_ok = Some(988);
        r.reachable = true;
        assert_eq!(
            registry_line(&r, 1000),
            "https://reg.example:8443 reachable (last answer 12s ago)"
        );
        r.last_error = Some(700);
        r.error = Some("connection refused".into());
        r.reachable = false;
        r.last_ok = Some(400);
        let l = registry_line(&r, 1000);
        assert!(
            l.starts_with(
                "https://reg.example:8443 unreachable since 5m ago: connection refused (last answer 10m ago"
            ),
            "{l}"
        );
    }

    #[test]
    fn peer_line_shows_traffic_in_binary_units() {
        let mut p = crate::control::Peer {
            prefix: "fd00:0:0:1::/64".into(),
            endpoint: "[fd98::2]:6464".into(),
            rtt_ms: 1.5,
            initiated: true,
            state: "up".into(),
            params_version: 3,
            traffic: Default::default(),
            last_rx_ms_ago: None,
            name: None,
            made: "direct".into(),
        };
        assert!(
            super::peer_line(&p).ends_with("0 B        0 B never        -"),
            "{}",
            super::peer_line(&p)
        );
        p.traffic.rx_bytes = 1_258_000;
        p.traffic.babel_rx_bytes = 291;
        p.traffic.tx_bytes = 2048;
        p.last_rx_ms_ago = Some(12_345);
        p.name = Some("laptop-anna".into());
        let line = super::peer_line(&p);
        assert!(line.contains("1.2 MiB"), "{line}");
        assert!(line.contains("2.0 KiB"), "{line}");
        assert!(line.ends_with("12s ago      laptop-anna"), "{line}");
    }
}
