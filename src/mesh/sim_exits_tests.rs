//! Exit nodes (issue 15): two exits announce `::/0 from` the network prefix (RFC 9079);
//! every node selects one with the usual metric and feasibility, moves to the other when the
//! one in use dies, and ignores an exit the parameters do not authorise.

use super::*;
use crate::mesh::node::core::{exit_key, router_id_for};
use crate::params::{GrantKind, RouteGrant};

fn exit_grant(node: NodeIdx) -> RouteGrant {
    RouteGrant {
        node: prefix_of(node),
        kind: GrantKind::Exit,
        prefix: "::/0".parse().expect("a prefix"),
    }
}

/// A ring of `n` origin-checking nodes; `exits` run `--exit`, `granted` have the grant.
fn ring(seed: u64, n: usize, exits: &[NodeIdx], granted: &[NodeIdx]) -> NodeNet {
    let grants = granted.iter().map(|g| exit_grant(*g)).collect();
    granted_ring(seed, n, grants, |i| NodeSetup {
        exit: exits.contains(&i),
        ..NodeSetup::default()
    })
}

/// The exit node `i` uses (the node prefix of the selected exit route's origin).
fn exit_of(net: &NodeNet, i: NodeIdx) -> Option<Ipv6Net> {
    net.core(i)?.exit_in_use()
}

#[test]
fn every_node_selects_an_exit_moves_when_it_dies_and_ignores_an_unauthorised_one() {
    let n = 8;
    let (e1, e2, rogue) = (2, 5, 7);
    let mut net = ring(31, n, &[e1, e2, rogue], &[e1, e2]);
    let users: Vec<NodeIdx> = (0..n).filter(|i| ![e1, e2, rogue].contains(i)).collect();
    let t = net
        .run_until_true(Duration::from_secs(40), Duration::from_millis(100), |net| {
            net.fully_reachable() && users.iter().all(|i| exit_of(net, *i).is_some())
        })
        .expect("every node selects an exit");
    eprintln!("every node selected an exit after {t:?} (virtual)");
    net.run_for(Duration::from_secs(5));
    let mut by_exit = [0usize; 2];
    for &i in &users {
        let e = exit_of(&net, i).expect("an exit");
        assert!(
            e == prefix_of(e1) || e == prefix_of(e2),
            "node {i} uses {e}"
        );
        by_exit[usize::from(e == prefix_of(e2))] += 1;
        // the FIB holds it as a source-specific route
        let c = net.core(i).expect("running");
        let key = exit_key(&c.snapshot_network());
        assert!(
            c.selected_routes().iter().any(|r| r.prefix == key),
            "node {i}"
        );
    }
    eprintln!("nodes using exit 1 / exit 2: {by_exit:?}");
    // The rogue exit's announcement is refused by its neighbours (origin check): nobody
    // holds it.
    for i in [rogue - 1, (rogue + 1) % n] {
        let o = net.core(i).expect("running").snapshot().babel_origin;
        assert!(o.routes_unauthenticated > 0, "node {i}: {o:?}");
    }
    let rogue_rid = crate::control::router_id_text(&router_id_for(&prefix_of(rogue)));
    for i in (0..n).filter(|i| *i != rogue) {
        let snap = net.core(i).expect("running").snapshot();
        assert!(
            !snap
                .routes
                .iter()
                .any(|r| r.prefix.starts_with("::/0") && r.router_id == rogue_rid),
            "node {i} holds the rogue exit's route"
        );
    }
    // `mesh routes` shows the exit route source-specific, named after its exit.
    let snap = net.core(0).expect("running").snapshot();
    let shown = snap
        .routes
        .iter()
        .find(|r| r.selected && r.prefix.starts_with("::/0 from "))
        .expect("the exit route is listed");
    assert!(shown.name.is_some(), "{shown:?}");
    // ... and the exit it leads to (the live page marks that node an exit)
    let used = exit_of(&net, 0).expect("an exit").to_string();
    assert_eq!(shown.origin.as_deref(), Some(used.as_str()), "{shown:?}");
    // an exit's own route names itself
    let own = net.core(e1).expect("running").snapshot();
    let local = own
        .routes
        .iter()
        .find(|r| r.local && r.prefix.starts_with("::/0 from "))
        .expect("the exit's own route");
    assert_eq!(local.origin, Some(prefix_of(e1).to_string()));
    assert!(
        own.routes
            .iter()
            .filter(|r| !r.local && !r.prefix.contains(" from "))
            .all(|r| r.origin.is_none()),
        "routes inside the network have no origin"
    );

    // Kill the exit node 0 uses: everyone moves to the other one.
    let used = exit_of(&net, 0).expect("an exit");
    let (dead, other) = if used == prefix_of(e1) {
        (e1, e2)
    } else {
        (e2, e1)
    };
    net.kill(dead);
    let t = net
        .run_until_true(Duration::from_secs(30), Duration::from_millis(50), |net| {
            users
                .iter()
                .all(|i| exit_of(net, *i) == Some(prefix_of(other)))
        })
        .expect("every node moves to the other exit");
    eprintln!("exit {dead} killed: every node uses exit {other} after {t:?} (virtual)");
}
