//! Origin authentication of routes with whole nodes (issue 13, "Insider-proof routing"):
//! real node keys and CA-signed certificates, certificates learnt over the mesh, and a
//! hostile member forging Updates through its real tunnels (MAC-signed: it is a member).

use super::*;
use crate::mesh::babel::msg::Msg;
use crate::mesh::babel::{FibRoute, Prefix, RouterId, Seqno};
use crate::mesh::node::core::router_id_for;

fn policy() -> TunnelPolicy {
    TunnelPolicy {
        client_count: 0,
        max_clients: 8,
        refresh: 300,
    }
}

/// `n` nodes in a ring of `--peer`s, node 0 watching the registry.
fn ring(seed: u64, n: usize, origin_auth: bool) -> NodeNet {
    let mut net = NodeNet::new(seed, policy(), 1);
    for i in 0..n {
        net.add_node(NodeSetup {
            peers: vec![(i + 1) % n, (i + n - 1) % n],
            watch: i == 0,
            origin_auth,
            ..NodeSetup::default()
        });
    }
    for i in 0..n {
        net.start(i);
    }
    net
}

fn babel_prefix(net: Ipv6Net) -> Prefix {
    Prefix::new(IpAddr::V6(net.network()), net.prefix_len()).expect("a prefix")
}

fn selected(net: &NodeNet, i: NodeIdx, p: Prefix) -> Option<FibRoute> {
    net.core(i)?
        .selected_routes()
        .into_iter()
        .find(|r| r.prefix == p)
}

#[test]
fn a_ring_with_signed_routes_converges_to_full_reachability() {
    let mut net = ring(3, 7, true);
    let t = net
        .run_until_true(
            Duration::from_secs(30),
            Duration::from_millis(100),
            NodeNet::fully_reachable,
        )
        .expect("full reachability with origin authentication");
    eprintln!("7-node ring, signed routes: full reachability after {t:?} (virtual)");
    let mut unknown = 0;
    for i in 0..7 {
        let s = net.core(i).expect("running").snapshot();
        let o = s.babel_origin;
        assert_eq!(o.routes_unauthenticated, 0, "node {i}: {o:?}");
        assert!(o.signatures_made >= 1, "node {i}: {o:?}");
        assert!(o.signatures_verified >= 6, "node {i}: {o:?}");
        assert_eq!(s.counters.certs_refused, 0);
        // Non-neighbours' certificates are learnt over the mesh.
        unknown += o.routes_origin_unknown;
    }
    assert!(unknown > 0);
}

/// The forgeries of the hostile node `h` against `victim`, as seen by its neighbours.
fn forgeries(net: &NodeNet, h: NodeIdx, victim: NodeIdx) -> Vec<Msg> {
    let vp = babel_prefix(prefix_of(victim));
    // The victim's current seqno, as a neighbour of the hostile node sees it.
    let seqno = net
        .core((h + 1) % net.nodes.len())
        .expect("running")
        .snapshot()
        .routes
        .iter()
        .find(|r| r.prefix == vp.to_string())
        .map_or(0, |r| r.seqno);
    let more =
        Prefix::new(IpAddr::V6(identity::node_address(&prefix_of(victim))), 128).expect("a /128");
    let outside: Prefix = "2001:db8::/32".parse().expect("a prefix");
    let update = |prefix: Prefix, rid, sig| Msg::Update {
        prefix: prefix.into(),
        router_id: rid,
        seqno: Seqno(seqno.wrapping_add(100)),
        metric: 0,
        interval_cs: 400,
        next_hop: None,
        signature: sig,
    };
    let mine = RouterId(router_id_for(&prefix_of(h)));
    let theirs = RouterId(router_id_for(&prefix_of(victim)));
    vec![
        // The victim's /64 with its router-id and a higher seqno: forged and unsigned.
        update(vp, theirs, Some([0x55; 64])),
        update(vp, theirs, None),
        // The victim's /64 with our own router-id.
        update(vp, mine, Some([0x56; 64])),
        // A more specific inside it, and a prefix outside the network.
        update(more, mine, Some([0x57; 64])),
        update(outside, mine, Some([0x58; 64])),
    ]
}

/// Runs the attack of node 0 against node 4 in a ring of 8 for 20 s; returns the net and
/// every honest node's selected route to the victim before the attack.
fn attack(origin_auth: bool) -> (NodeNet, Vec<Option<FibRoute>>) {
    let n = 8;
    let (h, victim) = (0, 4);
    let mut net = ring(11, n, origin_auth);
    net.run_until_true(
        Duration::from_secs(30),
        Duration::from_millis(100),
        NodeNet::fully_reachable,
    )
    .expect("converges");
    net.run_for(Duration::from_secs(5));
    let vp = babel_prefix(prefix_of(victim));
    let before: Vec<Option<FibRoute>> = (0..n).map(|i| selected(&net, i, vp)).collect();
    for _ in 0..40 {
        let msgs = forgeries(&net, h, victim);
        for to in [1, n - 1] {
            net.input(
                h,
                Input::ForgeBabel {
                    to: prefix_of(to),
                    msgs: msgs.clone(),
                },
            );
        }
        net.run_for(Duration::from_millis(500));
    }
    (net, before)
}

#[test]
fn a_hostile_member_cannot_draw_another_nodes_traffic() {
    let (net, before) = attack(true);
    let vp = babel_prefix(prefix_of(4));
    let more = Prefix::new(IpAddr::V6(identity::node_address(&prefix_of(4))), 128).unwrap();
    let outside: Prefix = "2001:db8::/32".parse().unwrap();
    for (i, was) in before.iter().enumerate().skip(1) {
        if i == 4 {
            continue;
        }
        assert_eq!(
            &selected(&net, i, vp),
            was,
            "node {i}'s route to the victim changed"
        );
        assert!(selected(&net, i, more).is_none(), "node {i} took the /128");
        assert!(
            selected(&net, i, outside).is_none(),
            "node {i} took 2001:db8::/32"
        );
    }
    for i in [1, 7] {
        let o = net.core(i).unwrap().snapshot().babel_origin;
        // Every round: 4 refused at once, the /128 and the outside prefix included.
        assert!(o.routes_unauthenticated >= 4 * 40, "node {i}: {o:?}");
    }
    assert!(net.fully_reachable());
}

#[test]
fn without_origin_authentication_the_same_attack_hijacks() {
    // The control experiment: the attack above does bite when nothing checks origins.
    let (net, _) = attack(false);
    let more = Prefix::new(IpAddr::V6(identity::node_address(&prefix_of(4))), 128).unwrap();
    let h_addr = IpAddr::V6(identity::node_address(&prefix_of(0)));
    assert!(
        [1, 7]
            .iter()
            .any(|i| selected(&net, *i, more).is_some_and(|r| r.next_hop == h_addr)),
        "the forged /128 was not taken"
    );
}

#[test]
fn a_revoked_node_s_routes_go_and_its_renewed_certificate_brings_them_back() {
    let mut net = ring(5, 6, true);
    net.run_until_true(
        Duration::from_secs(30),
        Duration::from_millis(100),
        NodeNet::fully_reachable,
    )
    .expect("converges");
    let old = net.serial(3).to_owned();
    let vp = babel_prefix(prefix_of(3));
    net.revoke(3);
    net.run_until_true(Duration::from_secs(5), Duration::from_millis(10), |n| {
        (0..6)
            .filter(|i| *i != 3)
            .all(|i| selected(n, i, vp).is_none())
    })
    .expect("no node selects the revoked node's prefix");
    // Renewed (same key, new certificate): every node learns the new certificate, from
    // the node itself or over the mesh, and selects its routes again.
    let back = net
        .run_until_true(Duration::from_secs(30), Duration::from_millis(100), |n| {
            n.serial(3) != old && n.fully_reachable()
        })
        .expect("renewed and reachable again");
    eprintln!("revoked node's routes valid again {back:?} after they went (virtual)");
    for i in 0..6 {
        let s = net.core(i).unwrap().snapshot();
        assert_eq!(s.babel_origin.routes_unauthenticated, 0, "node {i}");
    }
}

#[test]
fn certificate_requests_and_answers_are_budgeted() {
    use crate::mesh::node::core::CERT_ANSWER_BURST;
    use crate::mesh::tunnels::control::ControlMsg;
    use base64::Engine as _;
    let mut net = ring(7, 5, true);
    net.run_until_true(
        Duration::from_secs(30),
        Duration::from_millis(100),
        NodeNet::fully_reachable,
    )
    .expect("converges");
    let (h, victim) = (0, 1);
    let before = net.core(victim).unwrap().counters();
    // A burst of 200 requests at once: CERT_ANSWER_BURST answered, the rest ignored.
    for _ in 0..200 {
        net.input(
            h,
            Input::ForgeControl {
                to: prefix_of(victim),
                msg: ControlMsg::CertRequest {
                    prefix: prefix_of(3),
                },
            },
        );
    }
    // Certificates nobody asked for: a real one, another prefix's, junk.
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    for (prefix, cert) in [
        (prefix_of(3), Some(b64(&net.nodes[3].cert))),
        (prefix_of(2), Some(b64(&net.nodes[3].cert))),
        (prefix_of(2), Some(b64(b"junk"))),
    ] {
        net.input(
            h,
            Input::ForgeControl {
                to: prefix_of(victim),
                msg: ControlMsg::Cert { prefix, cert },
            },
        );
    }
    net.run_for(Duration::from_millis(200));
    let after = net.core(victim).unwrap().counters();
    assert_eq!(
        after.cert_requests_ignored - before.cert_requests_ignored,
        200 - u64::from(CERT_ANSWER_BURST)
    );
    assert_eq!(after.certs_refused - before.certs_refused, 3);
    // The honest network did not notice.
    assert!(net.fully_reachable());
}

#[test]
fn status_peers_and_routes_name_the_nodes_from_their_certificates() {
    let mut net = ring(5, 7, true);
    net.run_until_true(
        Duration::from_secs(30),
        Duration::from_millis(100),
        NodeNet::fully_reachable,
    )
    .expect("full reachability with origin authentication");
    let name = |j: NodeIdx| Some(format!("n{j}"));
    for i in 0..7 {
        let s = net.core(i).expect("running").snapshot();
        assert_eq!(s.name, name(i), "node {i}'s own name");
        assert_eq!(s.peers.len(), 2, "node {i}: a ring has two neighbours");
        for p in &s.peers {
            let j = (0..7)
                .find(|&j| prefix_of(j).to_string() == p.prefix)
                .expect("a ring member");
            assert_eq!(p.name, name(j), "node {i}'s peer {j}");
        }
        // every selected route, relayed ones included, names its owner: the certificates
        // came over the mesh for origin checks
        let mut relayed = 0;
        for r in s.routes.iter().filter(|r| r.selected) {
            let j = (0..7)
                .find(|&j| prefix_of(j).to_string() == r.prefix)
                .expect("a ring member");
            assert_eq!(r.name, name(j), "node {i}'s route to {j}: {r:?}");
            relayed += usize::from(r.path == "relayed");
        }
        assert_eq!(
            relayed, 4,
            "node {i}: four nodes of a ring of 7 are relayed"
        );
    }
}
