//! Subnet routes authorised by the registry (issue 15): a route outside the network prefix
//! is taken by every node only from the node the parameters grant it to; the same prefix
//! announced (and signed) by any other member is refused and counted.

use super::*;
use crate::mesh::babel::Prefix;
use crate::mesh::node::core::router_id_for;
use crate::params::{GrantKind, RouteGrant};

const LAN: &str = "2001:db8:5::/48";

fn lan() -> Ipv6Net {
    LAN.parse().expect("a prefix")
}

fn grant(node: NodeIdx) -> RouteGrant {
    RouteGrant {
        node: prefix_of(node),
        kind: GrantKind::Route,
        prefix: lan(),
    }
}

/// A ring of `n` origin-checking nodes; `advertisers` announce [`LAN`].
fn ring(seed: u64, n: usize, advertisers: &[NodeIdx], granted: &[NodeIdx]) -> NodeNet {
    let grants = granted.iter().map(|g| grant(*g)).collect();
    granted_ring(seed, n, grants, |i| NodeSetup {
        advertise_routes: if advertisers.contains(&i) {
            vec![lan()]
        } else {
            vec![]
        },
        ..NodeSetup::default()
    })
}

fn rid(i: NodeIdx) -> String {
    crate::control::router_id_text(&router_id_for(&prefix_of(i)))
}

/// The router-id of the route node `i` selected for [`LAN`], if any.
fn lan_origin(net: &NodeNet, i: NodeIdx) -> Option<String> {
    net.core(i)?
        .snapshot()
        .routes
        .into_iter()
        .find(|r| r.prefix == LAN && r.selected && !r.local)
        .map(|r| r.router_id)
}

/// True when no node but `except` holds any route for [`LAN`] from `from`.
fn nobody_holds(net: &NodeNet, from: NodeIdx, n: usize) -> bool {
    (0..n).filter(|i| *i != from).all(|i| {
        net.core(i).is_some_and(|c| {
            !c.snapshot()
                .routes
                .iter()
                .any(|r| r.prefix == LAN && r.router_id == rid(from) && r.metric < u16::MAX)
        })
    })
}

#[test]
fn an_authorised_subnet_route_is_selected_everywhere_and_an_unauthorised_one_ignored() {
    let n = 8;
    let (good, bad) = (2, 6);
    let mut net = ring(21, n, &[good, bad], &[good]);
    let t = net
        .run_until_true(Duration::from_secs(40), Duration::from_millis(100), |net| {
            net.fully_reachable()
                && (0..n)
                    .filter(|i| *i != good && *i != bad)
                    .all(|i| lan_origin(net, i) == Some(rid(good)))
        })
        .expect("every node selects the authorised node's route");
    eprintln!("authorised subnet route selected by every node after {t:?} (virtual)");
    net.run_for(Duration::from_secs(10));
    for i in (0..n).filter(|i| *i != good && *i != bad) {
        assert_eq!(lan_origin(&net, i), Some(rid(good)), "node {i}");
    }
    // The unauthorised node keeps its own (local) route; nobody took its announcement,
    // and its neighbours counted what they refused.
    assert!(
        nobody_holds(&net, bad, n),
        "someone took the unauthorised route"
    );
    for i in [bad - 1, bad + 1] {
        let o = net.core(i).expect("running").snapshot().babel_origin;
        assert!(o.routes_unauthenticated > 0, "node {i}: {o:?}");
    }
    // `mesh routes` names the node a subnet route leads to.
    let named = net
        .core(0)
        .expect("running")
        .snapshot()
        .routes
        .into_iter()
        .find(|r| r.prefix == LAN && r.selected)
        .and_then(|r| r.name);
    assert_eq!(named.as_deref(), Some("n2"));
    let origin = net
        .core(0)
        .expect("running")
        .snapshot()
        .routes
        .into_iter()
        .find(|r| r.prefix == LAN && r.selected)
        .and_then(|r| r.origin);
    assert_eq!(origin, Some(prefix_of(good).to_string()));
    let p: Prefix = LAN.parse().expect("a prefix");
    assert!(
        net.core(0)
            .expect("running")
            .selected_routes()
            .iter()
            .any(|r| r.prefix == p)
    );

    // The grant moves to the other node: every node follows the signed parameters.
    net.set_params(|p| p.routes = vec![grant(bad)]);
    let t = net
        .run_until_true(Duration::from_secs(40), Duration::from_millis(100), |net| {
            (0..n)
                .filter(|i| *i != good && *i != bad)
                .all(|i| lan_origin(net, i) == Some(rid(bad)))
                && nobody_holds(net, good, n)
        })
        .expect("the grant moved");
    eprintln!("grant moved: every node follows after {t:?} (virtual)");
    // And withdrawn: nobody routes the LAN through the mesh any more.
    net.set_params(|p| p.routes = vec![]);
    net.run_until_true(Duration::from_secs(40), Duration::from_millis(100), |net| {
        (0..n).all(|i| lan_origin(net, i).is_none())
    })
    .expect("the withdrawn grant is honoured");
    assert!(net.fully_reachable());
}
