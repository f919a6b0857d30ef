//! `mesh up --metrics ADDR:PORT`: a Prometheus endpoint (`GET /metrics`, text format) over
//! the same view as `mesh status` and `mesh peers`. Metrics (all prefixed `re6mesh_`):
//! * `tunnel_rx_bytes_total`, `tunnel_tx_bytes_total`, `tunnel_rx_packets_total`,
//!   `tunnel_tx_packets_total` — per tunnel, labels `peer` (the peer prefix) and `kind`
//!   (`data`: IPv6 packets, `babel`);
//! * `rx_bytes_total`, `tx_bytes_total`, `rx_packets_total`, `tx_packets_total` — node-wide,
//!   closed tunnels included, label `kind`;
//! * `tunnels`, `routes_selected`, `uptime_seconds`, `params_version` — gauges;
//! * `state` — gauge, 1 for the current state (label `state`);
//! * `routes_by_path` — gauge, selected routes to other nodes, label `path` (`direct`,
//!   `relayed`);
//! * `certificate_expiry_seconds` — gauge, seconds until this node's certificate expires;
//! * `registry_reachable` — gauge, 1 when the last request to the registry succeeded;
//! * `events_total` — every counter of `mesh status --json`'s `counters` map (core, Babel
//!   budgets, origin authentication), label `name`;
//! * `forward_drops_total` — the data path's drops, label `reason`;
//! * `seal_sessions` — gauge, sealed sessions with far nodes; `seal_events_total` — the
//!   sealing counters of `mesh status --json`'s `seal` object, label `name`.
#![allow(clippy::disallowed_methods)] // IO shell: the metrics server is a spawned task

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::control::{ControlHandler, Peer, Status, Traffic};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

fn as_gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The Prometheus text of a status and its peers.
pub(crate) fn render(st: &Status, peers: &[Peer]) -> String {
    let mut reg = Registry::with_prefix("re6mesh");
    let t_rx_b = counter_family(&mut reg, "tunnel_rx_bytes", "Bytes received on a tunnel.");
    let t_tx_b = counter_family(&mut reg, "tunnel_tx_bytes", "Bytes sent on a tunnel.");
    let t_rx_p = counter_family(
        &mut reg,
        "tunnel_rx_packets",
        "Packets received on a tunnel.",
    );
    let t_tx_p = counter_family(&mut reg, "tunnel_tx_packets", "Packets sent on a tunnel.");
    let put = |rb: &Family<Labels, Counter>,
               tb: &Family<Labels, Counter>,
               rp: &Family<Labels, Counter>,
               tp: &Family<Labels, Counter>,
               base: &[(&str, &str)],
               t: &Traffic| {
        for (kind, v) in [
            ("data", [t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets]),
            (
                "babel",
                [
                    t.babel_rx_bytes,
                    t.babel_tx_bytes,
                    t.babel_rx_packets,
                    t.babel_tx_packets,
                ],
            ),
        ] {
            let mut l = base.to_vec();
            l.push(("kind", kind));
            let l = labels(&l);
            rb.get_or_create(&l).inc_by(v[0]);
            tb.get_or_create(&l).inc_by(v[1]);
            rp.get_or_create(&l).inc_by(v[2]);
            tp.get_or_create(&l).inc_by(v[3]);
        }
    };
    for p in peers {
        put(
            &t_rx_b,
            &t_tx_b,
            &t_rx_p,
            &t_tx_p,
            &[("peer", &p.prefix)],
            &p.traffic,
        );
    }
    let rx_b = counter_family(&mut reg, "rx_bytes", "Bytes received on all tunnels.");
    let tx_b = counter_family(&mut reg, "tx_bytes", "Bytes sent on all tunnels.");
    let rx_p = counter_family(&mut reg, "rx_packets", "Packets received on all tunnels.");
    let tx_p = counter_family(&mut reg, "tx_packets", "Packets sent on all tunnels.");
    put(&rx_b, &tx_b, &rx_p, &tx_p, &[], &st.traffic);
    let sched = counter_family(
        &mut reg,
        "scheduler_packets",
        "Tunnel send scheduler: Babel packets handed to QUIC (babel_sent), of them waiting over \
         5 ms (babel_over_5ms), data dropped for waiting too long (data_late) or a full queue \
         (data_full).",
    );
    for (what, v) in [
        ("babel_sent", st.traffic.babel_delay_samples),
        ("babel_over_5ms", st.traffic.babel_delay_over_5ms),
        ("data_late", st.traffic.data_dropped_late),
        ("data_full", st.traffic.data_dropped_full),
    ] {
        sched.get_or_create(&labels(&[("what", what)])).inc_by(v);
    }
    gauge(
        &mut reg,
        "babel_queue_delay_max_microseconds",
        "Longest a Babel packet waited in a tunnel's send scheduler before QUIC took it.",
        as_gauge(st.traffic.babel_delay_max_us),
    );

    gauge(
        &mut reg,
        "tunnels",
        "Live tunnels.",
        as_gauge(st.tunnels as u64),
    );
    gauge(
        &mut reg,
        "routes_selected",
        "Selected routes.",
        as_gauge(st.routes as u64),
    );
    gauge(
        &mut reg,
        "uptime_seconds",
        "Seconds since the node started.",
        as_gauge(st.uptime_secs),
    );
    gauge(
        &mut reg,
        "params_version",
        "Network parameters version in force.",
        as_gauge(st.params_version),
    );
    let by_path = Family::<Labels, Gauge>::default();
    reg.register(
        "routes_by_path",
        "Selected routes to other nodes, by path (direct: the next hop is that node).",
        by_path.clone(),
    );
    for (path, n) in [("direct", st.paths.direct), ("relayed", st.paths.relayed)] {
        by_path
            .get_or_create(&labels(&[("path", path)]))
            .set(as_gauge(n as u64));
    }
    if let Some(c) = &st.certificate {
        gauge(
            &mut reg,
            "certificate_expiry_seconds",
            "Seconds until this node's certificate expires (renewed well before).",
            c.expires_in_secs,
        );
    }
    if let Some(r) = &st.registry {
        gauge(
            &mut reg,
            "registry_reachable",
            "1 when the last request to the registry succeeded.",
            i64::from(r.reachable),
        );
    }
    let state = Family::<Labels, Gauge>::default();
    reg.register(
        "state",
        "The node's state (1 for the current one).",
        state.clone(),
    );
    let name = serde_json::to_value(st.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    state.get_or_create(&labels(&[("state", &name)])).set(1);

    let events = counter_family(
        &mut reg,
        "events",
        "What the node refused or dropped (mesh status counters), by name.",
    );
    for (k, v) in &st.counters {
        events.get_or_create(&labels(&[("name", k)])).inc_by(*v);
    }
    let drops = counter_family(
        &mut reg,
        "forward_drops",
        "Packets the data path dropped, by reason.",
    );
    for (k, v) in &st.drops {
        drops.get_or_create(&labels(&[("reason", k)])).inc_by(*v);
    }
    if let Some(seal) = &st.seal {
        gauge(
            &mut reg,
            "seal_sessions",
            "Sealed sessions with far nodes.",
            as_gauge(seal.sessions),
        );
        let events = counter_family(
            &mut reg,
            "seal_events",
            "End-to-end sealing counters (mesh status seal), by name.",
        );
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&seal.stats) {
            for (k, v) in m {
                events
                    .get_or_create(&labels(&[("name", &k)]))
                    .inc_by(v.as_u64().unwrap_or(0));
            }
        }
    }

    let mut out = String::new();
    // writing into a String cannot fail
    let _ = encode(&mut out, &reg);
    out
}

/// Binds `addr` and serves `/metrics` from `handler` until the process ends. A non-loopback
/// address is allowed, with a warning (the metrics tell who this node's peers are).
pub(super) async fn start(
    addr: SocketAddr,
    handler: Arc<dyn ControlHandler>,
) -> anyhow::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        warn!(%addr, "the metrics endpoint listens beyond this machine: anyone who reaches it sees this node's peers and traffic");
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for metrics on {addr}: {e}; choose another --metrics address"
        )
    })?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let h = handler.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(&h.status(), &h.peers()),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    info!(%bound, "metrics endpoint: http://{bound}/metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::control::NodeStateName;

    #[test]
    fn renders_tunnels_totals_counters_and_drops() {
        let st = Status {
            state: NodeStateName::Up,
            prefix: "fd00:0:0:1::/64".into(),
            address: "fd00:0:0:1::1".into(),
            network: "fd00::/48".into(),
            params_version: 4,
            protocol: 1,
            tunnels: 1,
            routes: 2,
            uptime_secs: 9,
            error: None,
            warnings: vec![],
            counters: BTreeMap::from([("routes_unauthenticated".to_owned(), 3)]),
            traffic: Traffic {
                rx_bytes: 1500,
                tx_bytes: 700,
                babel_delay_over_5ms: 4,
                babel_delay_max_us: 6100,
                ..Traffic::default()
            },
            drops: BTreeMap::from([("queue_full".to_owned(), 2)]),
            paths: crate::control::Paths {
                direct: 1,
                relayed: 3,
            },
            certificate: Some(crate::control::CertificateStatus {
                name: None,
                serial: "1f".into(),
                not_after: 2_000_000_000,
                expires_in_secs: 86_400,
            }),
            registry: Some(crate::control::RegistryStatus {
                reachable: true,
                ..Default::default()
            }),
            seal: Some(crate::control::SealStatus {
                sessions: 2,
                stats: crate::mesh::seal::session::SealStats {
                    opened: 7,
                    spoofed_sources: 1,
                    ..Default::default()
                },
            }),
            port_mapping: None,
            exit: None,
            ipv4: None,
        };
        let peer = Peer {
            prefix: "fd00:0:0:2::/64".into(),
            endpoint: "[fd99::2]:6464".into(),
            rtt_ms: 1.0,
            initiated: true,
            state: "up".into(),
            params_version: 4,
            traffic: Traffic {
                rx_bytes: 1040,
                rx_packets: 10,
                babel_tx_packets: 5,
                ..Traffic::default()
            },
            last_rx_ms_ago: Some(3),
            name: None,
            made: "direct".into(),
        };
        let text = render(&st, &[peer]);
        for line in [
            r#"re6mesh_tunnel_rx_bytes_total{peer="fd00:0:0:2::/64",kind="data"} 1040"#,
            r#"re6mesh_tunnel_rx_packets_total{peer="fd00:0:0:2::/64",kind="data"} 10"#,
            r#"re6mesh_tunnel_tx_packets_total{peer="fd00:0:0:2::/64",kind="babel"} 5"#,
            r#"re6mesh_rx_bytes_total{kind="data"} 1500"#,
            r#"re6mesh_tx_bytes_total{kind="data"} 700"#,
            r#"re6mesh_scheduler_packets_total{what="babel_over_5ms"} 4"#,
            "re6mesh_babel_queue_delay_max_microseconds 6100",
            "re6mesh_tunnels 1",
            "re6mesh_routes_selected 2",
            r#"re6mesh_routes_by_path{path="relayed"} 3"#,
            "re6mesh_certificate_expiry_seconds 86400",
            "re6mesh_registry_reachable 1",
            r#"re6mesh_state{state="up"} 1"#,
            r#"re6mesh_events_total{name="routes_unauthenticated"} 3"#,
            r#"re6mesh_forward_drops_total{reason="queue_full"} 2"#,
            "re6mesh_seal_sessions 2",
            r#"re6mesh_seal_events_total{name="opened"} 7"#,
            r#"re6mesh_seal_events_total{name="spoofed_sources"} 1"#,
            "# TYPE re6mesh_tunnel_rx_bytes counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
