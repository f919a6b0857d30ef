//! What the node shows of itself: the control API's [`Snapshot`], the names of the nodes
//! its routes lead to, and the routes outside the network prefix it uses (subnet routes, the
//! exit in use) with their origin nodes.

use std::net::IpAddr;

use ipnet::Ipv6Net;
use tracing::{debug, info};

use super::*;

impl NodeCore {
    /// The name of the node owning `prefix` (CIDR text, as in a route): ours, a neighbour's,
    /// or one from a certificate held for origin checks.
    fn name_of(&self, prefix: &str) -> Option<String> {
        let mut net: Ipv6Net = prefix.parse().ok()?;
        // a subnet route is named after the node it leads to
        if let Some((_, owner)) = self.subnet_routes.via.iter().find(|(p, _)| *p == net) {
            net = *owner;
        }
        if net == self.prefix {
            return self.my_name.clone();
        }
        if let Some(t) = self.tunnels.values().find(|t| t.peer_prefix == net) {
            return t.peer_name.clone();
        }
        self.engine
            .origin_policy::<origin::CertStore>()
            .and_then(|s| s.name(&net))
            .map(str::to_owned)
    }

    /// What the node counted (the puncher's counters included).
    pub fn counters(&self) -> Counters {
        let p = self.punch.counters;
        Counters {
            punch_requests_sent: p.requests_sent,
            punch_requests_answered: p.requests_answered,
            punches: p.punches,
            tunnels_punched: p.punched,
            punch_failures: p.failed,
            punch_requests_refused: p.refused_rate,
            punch_signals_malformed: p.refused_malformed,
            punch_answers_unexpected: p.refused_unexpected,
            ..self.counters
        }
    }

    /// The selected routes outside the network prefix granted (`routes` of the parameters)
    /// to the node that originates them, each with that node's prefix. Exits (`::/0`) are
    /// not among them: sending traffic to an exit is the user's choice, not a route.
    pub fn subnet_routes(&self) -> Vec<(Ipv6Net, Ipv6Net)> {
        let params = self.net.params();
        let mut out: Vec<(Ipv6Net, Ipv6Net)> = params
            .routes
            .iter()
            .filter(|g| g.kind == crate::params::GrantKind::Route)
            .filter(|g| !params.network.contains(&g.prefix) && g.node != self.prefix)
            .filter_map(|g| {
                let p = Prefix::new(IpAddr::V6(g.prefix.network()), g.prefix.prefix_len())?;
                let rid = self.engine.selected_origin(p)?;
                (rid.0 == router_id_for(&g.node)).then_some((g.prefix, g.node))
            })
            .collect();
        out.sort();
        out.dedup_by_key(|(p, _)| *p);
        out
    }

    /// The node that originates `key`, for a route outside the network prefix: this node
    /// for its own, else the node the parameters grant that route (an exit for `::/0 from`
    /// the network, a subnet route for its prefix) whose router-id is `rid`. `None` for the
    /// network's own prefixes (IPv6, and the addresses of its IPv4 range) and for a route
    /// nobody was granted.
    pub(super) fn origin_node(
        &self,
        key: &crate::mesh::babel::RouteKey,
        rid: &crate::mesh::babel::RouterId,
        local: bool,
    ) -> Option<Ipv6Net> {
        let params = self.net.params();
        let inside = match key.dst.addr() {
            IpAddr::V6(a) => params.network.contains(&a),
            // IPv4: a node's own address is in the network's range; a subnet is granted
            IpAddr::V4(a) => {
                let dst = ipnet::Ipv4Net::new(a, key.dst.len()).ok()?;
                if params.ipv4.is_some_and(|r| r.contains(&dst)) {
                    return None;
                }
                if local {
                    return Some(self.prefix);
                }
                return params
                    .routes_v4
                    .iter()
                    .find(|g| g.prefix == dst && rid.0 == router_id_for(&g.node))
                    .map(|g| g.node);
            }
        };
        if !key.is_source_specific() && inside {
            return None;
        }
        if local {
            return Some(self.prefix);
        }
        let dst = match key.dst.addr() {
            IpAddr::V6(a) => Ipv6Net::new(a, key.dst.len()).ok(),
            IpAddr::V4(_) => None, // answered above
        };
        params
            .routes
            .iter()
            .filter(|g| rid.0 == router_id_for(&g.node))
            .find(|g| match g.kind {
                crate::params::GrantKind::Exit => key.is_source_specific(),
                crate::params::GrantKind::Route => {
                    !key.is_source_specific() && Some(g.prefix) == dst
                }
            })
            .map(|g| g.node)
    }

    /// The network prefix of the parameters in force.
    pub fn snapshot_network(&self) -> Ipv6Net {
        self.net.params().network
    }

    /// The exit in use (issue 15): the node prefix of the origin of the selected
    /// `::/0 from` the network route, if the parameters grant that node `exit`. `None` on an
    /// exit itself (its own route is never selected from a neighbour).
    pub fn exit_in_use(&self) -> Option<Ipv6Net> {
        let params = self.net.params();
        let rid = self.engine.selected_origin(exit_key(&params.network))?;
        params
            .routes
            .iter()
            .filter(|g| g.kind == crate::params::GrantKind::Exit)
            .find(|g| rid.0 == router_id_for(&g.node))
            .map(|g| g.node)
    }

    /// Tells the shell when [`NodeCore::subnet_routes`], the exit in use or the grants
    /// changed.
    pub(super) fn publish_subnet_routes(&mut self) {
        let params = self.net.params();
        let mut granted: Vec<(Ipv6Net, Ipv6Net)> = params
            .routes
            .iter()
            .filter(|g| g.kind == crate::params::GrantKind::Route)
            .filter(|g| !params.network.contains(&g.prefix))
            .map(|g| (g.prefix, g.node))
            .collect();
        // An exit's packets come from anywhere outside the network.
        let outside = crate::mesh::seal::path::outside(&params.network);
        for g in params
            .routes
            .iter()
            .filter(|g| g.kind == crate::params::GrantKind::Exit)
        {
            granted.extend(outside.iter().map(|p| (*p, g.node)));
        }
        granted.sort();
        granted.dedup();
        let now = SubnetRoutes {
            via: self.subnet_routes(),
            granted,
            exit: self.exit_in_use(),
            v4: self.v4_routes(),
        };
        if now != self.subnet_routes {
            if now.via != self.subnet_routes.via {
                info!(routes = ?now.via, "subnet routes through the mesh");
            }
            if now.v4 != self.subnet_routes.v4 {
                debug!(routes = now.v4.len(), "IPv4 routes through the mesh");
            }
            if now.exit != self.subnet_routes.exit {
                match now.exit {
                    Some(e) => info!(exit = %e, "exit in use"),
                    None => info!("no exit reachable"),
                }
            }
            self.subnet_routes = now.clone();
            self.actions.push_back(Action::SubnetRoutes(now));
        }
    }

    /// The control API's view.
    pub fn snapshot(&self) -> Snapshot {
        let routes: Vec<control::Route> = self
            .engine
            .routes()
            .into_iter()
            .map(|r| {
                let origin = self.origin_node(&r.prefix, &r.router_id, r.local);
                let mut route = control::Route {
                    prefix: r.prefix.to_string(),
                    next_hop: r.next_hop.map(|a| a.to_string()).unwrap_or_default(),
                    iface: r.iface.clone(),
                    metric: r.metric,
                    router_id: control::router_id_text(&r.router_id.0),
                    seqno: r.seqno.0,
                    selected: r.selected,
                    local: r.local,
                    path: String::new(),
                    name: None,
                    origin: origin.map(|o| o.to_string()),
                };
                route.path = control::route_path(&route).to_owned();
                // an exit or subnet route is named after the node it leads to
                route.name = match origin {
                    Some(o) => self.name_of(&o.to_string()),
                    None if r.prefix.is_source_specific() => None,
                    None => self.name_of(&route.prefix),
                };
                route
            })
            .collect();
        let peers = self
            .tunnels
            .values()
            .map(|t| control::Peer {
                prefix: t.peer_prefix.to_string(),
                endpoint: t.remote.to_string(),
                rtt_ms: t.rtt.as_secs_f64() * 1000.0,
                initiated: t.initiated,
                state: if t.held { "held" } else { "up" }.into(),
                params_version: t.peer_params,
                // filled in by the shell's control API from the data path's counters
                traffic: Default::default(),
                last_rx_ms_ago: None,
                name: t.peer_name.clone(),
                made: t.made.name().into(),
            })
            .collect();
        let selected = routes.iter().filter(|r| r.selected && !r.local).count();
        let on = |path: &str| {
            routes
                .iter()
                .filter(|r| r.selected && r.path == path)
                .count()
        };
        let paths = control::Paths {
            direct: on("direct"),
            relayed: on("relayed"),
        };
        let state = if self.revoked {
            NodeStateName::Revoked
        } else if self.down {
            NodeStateName::Down
        } else if self.tunnels.is_empty() {
            NodeStateName::Connecting
        } else {
            NodeStateName::Up
        };
        Snapshot {
            state,
            peers,
            routes,
            tunnels: self.tunnels.len(),
            selected,
            params_version: self.net.params().version,
            crl_missing: self.net.crl_wanted(),
            held: self.tunnels.values().filter(|t| t.held).count(),
            counters: self.counters(),
            babel_budget: self.engine.budget_counters(),
            babel_origin: self.engine.origin_counters(),
            paths,
            serial: self.my_serial.clone(),
            not_after: self.not_after,
            name: self.my_name.clone(),
            exit: if self.engine.local_prefixes().any(|k| k.is_source_specific()) {
                Some("this node".into())
            } else {
                // `--use-exit PREFIX`: that exit, reached inside IPv6 even where the relays
                // route by another (node/datapath_exit.rs)
                let pinned = self
                    .engine
                    .origin_policy::<origin::CertStore>()
                    .and_then(|s| s.exit_only());
                pinned.or_else(|| self.exit_in_use()).map(|e| {
                    let name = self.name_of(&e.to_string());
                    let pin = if pinned.is_some() { ", pinned" } else { "" };
                    match name {
                        Some(n) => format!("{e} ({n}){pin}"),
                        None => format!("{e}{pin}"),
                    }
                })
            },
        }
    }
}
