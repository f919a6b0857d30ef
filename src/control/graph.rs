//! The network as a graph: what a client saw of some nodes ([`Observation`]) turned into the
//! nodes, tunnels and underlay links the live page draws ([`GraphBody`]). Pure: the node's
//! control socket serves one node's view (`GET /v1/graph`), the web page (`crate::ui`) many
//! nodes' views, both through [`build_graph`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{NodeStateName, Peer, Route, Status};

/// What a source saw of one node.
#[derive(Debug, Clone, Default)]
pub struct NodeObservation {
    /// Display name (`n3`, or empty when unknown).
    pub name: String,
    /// The node prefix when known in advance (the demo knows it; `mesh ui` learns it).
    pub prefix: Option<String>,
    /// `GET /v1/status`, or `None` when the control socket did not answer.
    pub status: Option<Status>,
    /// Live tunnels.
    pub peers: Vec<Peer>,
    /// Babel routes.
    pub routes: Vec<Route>,
    /// The registry says this node's certificate is revoked (demo only).
    pub revoked: bool,
    /// Why the node could not be asked.
    pub error: Option<String>,
}

/// One underlay link of the demo (a veth pair), by node prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    /// One end (node prefix).
    pub a: String,
    /// Other end (node prefix).
    pub b: String,
    /// Whether the link is up (not cut from the page).
    pub up: bool,
}

/// Everything a source saw at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// The nodes observed directly.
    pub nodes: Vec<NodeObservation>,
    /// Underlay links (demo only).
    pub links: Vec<LinkView>,
    /// Lines of information shown on the page (convergence time, ping matrix…).
    pub info: Vec<String>,
}

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    /// Node prefix (CIDR); the node's identity in the graph.
    pub prefix: String,
    /// Display name (may be empty).
    pub name: String,
    /// Node address (prefix::1).
    pub address: String,
    /// Its IPv4 address, on a network with an IPv4 range (from its status: observed nodes
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// `up`, `connecting`, `down`, `revoked`, … as `mesh status` says; `reachable` or
    /// `unreachable` for a node only known through routes; `unknown` when not answering.
    pub state: String,
    /// Parameters version in force (0 when unknown).
    pub params_version: u64,
    /// Revoked (greyed out on the page).
    pub revoked: bool,
    /// Whether this node was observed directly (its own control socket answered).
    pub observed: bool,
    /// Its Babel routes (empty when not observed directly).
    pub routes: Vec<Route>,
    /// An exit node: it announces the mesh's way to the internet (`mesh up --exit`), as it
    /// says itself or as the routes of an observed node show.
    #[serde(default)]
    pub exit: bool,
    /// The exit node (prefix) this node sends its internet traffic to (`--use-exit`), as it
    /// says itself; absent when it uses none or is not observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_exit: Option<String>,
    /// The subnet routes it makes reachable (`--advertise-route`), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
}

/// A tunnel between two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphEdge {
    /// Lower prefix (text order).
    pub a: String,
    /// Higher prefix.
    pub b: String,
    /// Round-trip time in milliseconds (mean of both ends' views, 0.1 ms steps).
    pub rtt_ms: f64,
}

/// A graph without its version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GraphBody {
    /// Nodes, sorted by prefix.
    pub nodes: Vec<GraphNode>,
    /// Tunnels, sorted.
    pub edges: Vec<GraphEdge>,
    /// Underlay links (demo).
    pub links: Vec<LinkView>,
    /// Information lines.
    pub info: Vec<String>,
}

fn state_text(s: NodeStateName) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn round_rtt(ms: f64) -> f64 {
    if ms.is_finite() && ms >= 0.0 {
        (ms * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn address_of(prefix: &str) -> String {
    prefix
        .parse::<ipnet::Ipv6Net>()
        .map(|p| crate::identity::node_address(&p).to_string())
        .unwrap_or_default()
}

/// The exit prefix in `status.exit` (`PREFIX`, `PREFIX (name)`); `None` for none and for
/// `this node`.
fn exit_prefix(exit: Option<&str>) -> Option<String> {
    let first = exit?.split_whitespace().next()?;
    first.parse::<ipnet::Ipv6Net>().ok().map(|p| p.to_string())
}

/// Flags the exits and lists the subnet routes: a node that says it is an exit, and the
/// origins (granted, as the observing node checked) of the routes outside the network that
/// observed nodes hold.
fn mark_exits_and_subnets(obs: &Observation, nodes: &mut BTreeMap<String, GraphNode>) {
    for o in &obs.nodes {
        if let Some(s) = &o.status
            && s.exit.as_deref() == Some("this node")
            && let Some(n) = nodes.get_mut(&s.prefix)
        {
            n.exit = true;
        }
        for r in &o.routes {
            let Some(n) = r.origin.as_ref().and_then(|p| nodes.get_mut(p)) else {
                continue;
            };
            if r.prefix.contains(" from ") {
                n.exit = true;
            } else if !n.subnets.contains(&r.prefix) {
                n.subnets.push(r.prefix.clone());
            }
        }
    }
    for n in nodes.values_mut() {
        n.subnets.sort();
    }
}

/// Builds the graph from observations: directly observed nodes, plus nodes known only as a
/// peer or a route destination (so one node's view shows the whole network it routes to);
/// one edge per tunnel pair with the mean RTT of both ends.
pub fn build_graph(obs: &Observation) -> GraphBody {
    let mut nodes: BTreeMap<String, GraphNode> = BTreeMap::new();
    for o in &obs.nodes {
        let prefix = o
            .status
            .as_ref()
            .map(|s| s.prefix.clone())
            .filter(|p| !p.is_empty())
            .or_else(|| o.prefix.clone())
            .unwrap_or_else(|| o.name.clone());
        let (state, params_version, address) = match &o.status {
            Some(s) => (state_text(s.state), s.params_version, s.address.clone()),
            None => ("unknown".to_owned(), 0, address_of(&prefix)),
        };
        let revoked =
            o.revoked || o.status.as_ref().map(|s| s.state) == Some(NodeStateName::Revoked);
        let mut routes = o.routes.clone();
        routes.sort_by(|a, b| {
            (&a.prefix, !a.selected, a.metric).cmp(&(&b.prefix, !b.selected, b.metric))
        });
        nodes.insert(
            prefix.clone(),
            GraphNode {
                prefix,
                name: o.name.clone(),
                address,
                ipv4: o.status.as_ref().and_then(|s| s.ipv4.clone()),
                state,
                params_version,
                revoked,
                observed: o.status.is_some(),
                routes,
                exit: false,
                uses_exit: o
                    .status
                    .as_ref()
                    .and_then(|s| exit_prefix(s.exit.as_deref())),
                subnets: Vec::new(),
            },
        );
    }
    // Nodes seen only as peers or route destinations.
    let mut inferred: BTreeMap<String, GraphNode> = BTreeMap::new();
    for o in &obs.nodes {
        for p in &o.peers {
            let n = inferred
                .entry(p.prefix.clone())
                .or_insert_with(|| GraphNode {
                    prefix: p.prefix.clone(),
                    name: String::new(),
                    address: address_of(&p.prefix),
                    ipv4: None,
                    state: "reachable".into(),
                    params_version: 0,
                    revoked: false,
                    observed: false,
                    routes: Vec::new(),
                    exit: false,
                    uses_exit: None,
                    subnets: Vec::new(),
                });
            n.params_version = n.params_version.max(p.params_version);
            if n.name.is_empty()
                && let Some(name) = &p.name
            {
                n.name.clone_from(name);
            }
        }
        for r in o.routes.iter().filter(|r| !r.local) {
            let reachable = r.selected && r.metric != u16::MAX;
            let n = inferred
                .entry(r.prefix.clone())
                .or_insert_with(|| GraphNode {
                    prefix: r.prefix.clone(),
                    name: String::new(),
                    address: address_of(&r.prefix),
                    ipv4: None,
                    state: "unreachable".into(),
                    params_version: 0,
                    revoked: false,
                    observed: false,
                    routes: Vec::new(),
                    exit: false,
                    uses_exit: None,
                    subnets: Vec::new(),
                });
            if reachable {
                n.state = "reachable".into();
            }
            if n.name.is_empty()
                && let Some(name) = &r.name
            {
                n.name.clone_from(name);
            }
        }
    }
    for (k, v) in inferred {
        nodes.entry(k).or_insert(v);
    }
    mark_exits_and_subnets(obs, &mut nodes);
    // Edges: one per pair, RTT averaged over the ends that report it.
    let mut edges: BTreeMap<(String, String), (f64, u32)> = BTreeMap::new();
    for o in &obs.nodes {
        let Some(me) = o
            .status
            .as_ref()
            .map(|s| s.prefix.clone())
            .or_else(|| o.prefix.clone())
        else {
            continue;
        };
        for p in &o.peers {
            if p.prefix == me {
                continue;
            }
            let key = if me < p.prefix {
                (me.clone(), p.prefix.clone())
            } else {
                (p.prefix.clone(), me.clone())
            };
            let e = edges.entry(key).or_insert((0.0, 0));
            if p.rtt_ms.is_finite() {
                e.0 += p.rtt_ms;
                e.1 += 1;
            }
        }
    }
    let edges = edges
        .into_iter()
        .map(|((a, b), (sum, n))| GraphEdge {
            a,
            b,
            rtt_ms: if n > 0 {
                round_rtt(sum / f64::from(n))
            } else {
                0.0
            },
        })
        .collect();
    let mut links = obs.links.clone();
    links.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
    GraphBody {
        nodes: nodes.into_values().collect(),
        edges,
        links,
        info: obs.info.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(prefix: &str, state: NodeStateName, v: u64) -> Status {
        Status {
            state,
            prefix: prefix.into(),
            address: address_of(prefix),
            network: "fd00:1::/48".into(),
            params_version: v,
            protocol: 1,
            tunnels: 0,
            routes: 0,
            uptime_secs: 1,
            error: None,
            warnings: Vec::new(),
            counters: Default::default(),
            traffic: Default::default(),
            drops: Default::default(),
            paths: Default::default(),
            certificate: None,
            registry: None,
            seal: None,
            port_mapping: None,
            exit: None,
            ipv4: None,
        }
    }

    fn peer(prefix: &str, rtt: f64) -> Peer {
        Peer {
            prefix: prefix.into(),
            endpoint: "[fd98::2]:6464".into(),
            rtt_ms: rtt,
            initiated: true,
            state: "up".into(),
            params_version: 3,
            traffic: Default::default(),
            last_rx_ms_ago: None,
            name: None,
            made: "direct".into(),
        }
    }

    fn route(prefix: &str, selected: bool, metric: u16) -> Route {
        Route {
            prefix: prefix.into(),
            next_hop: "fd00:1:0:2::1".into(),
            iface: "t-x".into(),
            metric,
            router_id: "00:00:00:00:00:00:00:01".into(),
            seqno: 1,
            selected,
            local: false,
            path: String::new(),
            name: None,
            origin: None,
        }
    }

    const A: &str = "fd00:1:0:1::/64";
    const B: &str = "fd00:1:0:2::/64";
    const C: &str = "fd00:1:0:3::/64";

    #[test]
    fn edges_are_deduplicated_with_mean_rtt_and_revoked_nodes_flagged() {
        let obs = Observation {
            nodes: vec![
                NodeObservation {
                    name: "n0".into(),
                    status: Some(status(A, NodeStateName::Up, 3)),
                    peers: vec![peer(B, 1.0)],
                    routes: vec![route(B, true, 96), route(C, true, 192)],
                    ..Default::default()
                },
                NodeObservation {
                    name: "n1".into(),
                    status: Some(status(B, NodeStateName::Up, 3)),
                    peers: vec![peer(A, 2.0), peer(C, 0.04)],
                    ..Default::default()
                },
                NodeObservation {
                    name: "n2".into(),
                    prefix: Some(C.into()),
                    status: Some(status(C, NodeStateName::Revoked, 2)),
                    ..Default::default()
                },
            ],
            links: vec![LinkView {
                a: B.into(),
                b: A.into(),
                up: false,
            }],
            info: vec!["hello".into()],
        };
        let g = build_graph(&obs);
        assert_eq!(g.nodes.len(), 3);
        assert_eq!(g.edges.len(), 2);
        assert_eq!(g.edges[0].a, A);
        assert_eq!(g.edges[0].b, B);
        assert!((g.edges[0].rtt_ms - 1.5).abs() < 1e-9);
        assert!((g.edges[1].rtt_ms - 0.0).abs() < 1e-9);
        let c = g.nodes.iter().find(|n| n.prefix == C).expect("node C");
        assert!(c.revoked);
        assert_eq!(c.state, "revoked");
        assert_eq!(c.params_version, 2);
        let a = g.nodes.iter().find(|n| n.prefix == A).expect("node A");
        assert_eq!(a.routes.len(), 2);
        assert_eq!(a.address, "fd00:1:0:1::1");
        assert_eq!(g.links.len(), 1);
        assert_eq!(g.info, vec!["hello".to_owned()]);
    }

    #[test]
    fn one_node_view_infers_the_nodes_it_routes_to() {
        let obs = Observation {
            nodes: vec![NodeObservation {
                name: "this node".into(),
                status: Some(status(A, NodeStateName::Up, 4)),
                peers: vec![peer(B, 0.5)],
                routes: vec![route(B, true, 96), route(C, false, u16::MAX)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let g = build_graph(&obs);
        let names: Vec<(&str, &str, bool)> = g
            .nodes
            .iter()
            .map(|n| (n.prefix.as_str(), n.state.as_str(), n.observed))
            .collect();
        assert_eq!(
            names,
            vec![
                (A, "up", true),
                (B, "reachable", false),
                (C, "unreachable", false)
            ]
        );
        assert_eq!(g.nodes[1].params_version, 3);
        assert_eq!(g.edges.len(), 1);
    }

    #[test]
    fn exits_subnets_and_the_exit_in_use_are_shown() {
        let mut laptop = status(A, NodeStateName::Up, 4);
        laptop.exit = Some(format!("{C} (n2)"));
        laptop.ipv4 = Some("10.42.0.1".into());
        let mut exit_route = route("::/0 from fd00:1::/48", true, 192);
        exit_route.origin = Some(C.into());
        let mut subnet = route("2001:db8:7::/48", true, 96);
        subnet.origin = Some(B.into());
        // a route outside the network that no grant covers: no origin, nobody flagged
        let stray = route("2001:db8:9::/48", false, 96);
        let mut exit_status = status(C, NodeStateName::Up, 4);
        exit_status.exit = Some("this node".into());
        let obs = Observation {
            nodes: vec![
                NodeObservation {
                    name: "laptop".into(),
                    status: Some(laptop),
                    peers: vec![peer(B, 0.5)],
                    routes: vec![
                        route(B, true, 96),
                        route(C, true, 192),
                        exit_route,
                        subnet.clone(),
                        subnet,
                        stray,
                    ],
                    ..Default::default()
                },
                NodeObservation {
                    name: "n2".into(),
                    status: Some(exit_status),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let g = build_graph(&obs);
        let get = |p: &str| g.nodes.iter().find(|n| n.prefix == p).expect("node");
        assert_eq!(get(A).uses_exit.as_deref(), Some(C));
        assert_eq!(get(A).ipv4.as_deref(), Some("10.42.0.1"));
        assert_eq!(get(B).ipv4, None);
        assert!(!get(A).exit);
        assert!(get(C).exit);
        assert_eq!(get(C).uses_exit, None);
        assert_eq!(get(B).subnets, vec!["2001:db8:7::/48".to_owned()]);
        assert!(!get(B).exit);
        assert!(get(A).subnets.is_empty() && get(C).subnets.is_empty());
        // a node that says it is an exit, with nobody routing to it
        let mut alone = status(B, NodeStateName::Up, 4);
        alone.exit = Some("this node".into());
        let g = build_graph(&Observation {
            nodes: vec![NodeObservation {
                status: Some(alone),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(g.nodes[0].exit);
        assert_eq!(g.nodes[0].uses_exit, None);
    }

    #[test]
    fn a_silent_node_is_unknown_but_keeps_its_known_prefix() {
        let obs = Observation {
            nodes: vec![NodeObservation {
                name: "n4".into(),
                prefix: Some(B.into()),
                revoked: true,
                error: Some("no node".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let g = build_graph(&obs);
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].prefix, B);
        assert_eq!(g.nodes[0].state, "unknown");
        assert!(g.nodes[0].revoked);
        assert_eq!(g.nodes[0].address, "fd00:1:0:2::1");
    }
}
