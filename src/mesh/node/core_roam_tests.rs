//! Roaming, one decision at a time (`core/roam.rs`): a change of the host's network makes
//! every tunnel prove its path, stranded tunnels are dialled again, and a neighbour whose
//! tunnel moved is told where it is seen now.

use super::*;

fn p(i: u16) -> Ipv6Net {
    net_prefix(i)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A core for node 1 whose host has `addrs`.
fn core(addrs: &[&str]) -> NodeCore {
    core_with(addrs, vec![])
}

/// The same, with `--peer`s.
fn core_with(addrs: &[&str], static_peers: Vec<(Ipv6Net, SocketAddr)>) -> NodeCore {
    let mut c = World::new().core_with_peers(1, static_peers);
    c.handle(
        at(0),
        Input::LocalAddresses(addrs.iter().map(|a| ip(a)).collect()),
    );
    c
}

/// Tunnel `id` to node `peer` comes up: `initiated` by us, the peer at `remote`, and the
/// peer sees us at `observed`.
fn up(c: &mut NodeCore, id: u64, peer: u16, initiated: bool, remote: &str, observed: &str) {
    c.handle(
        at(10),
        Input::TunnelUp {
            tunnel: TunnelId(id),
            info: TunnelInfo {
                peer_prefix: p(peer),
                peer_serial: format!("{peer:02x}"),
                initiated,
                hello: HelloInfo {
                    protocol: PROTOCOL_VERSION,
                    params_version: 1,
                    endpoints: vec![sa(&format!("198.51.100.{peer}:6464"))],
                    country: None,
                    observed: Some(sa(observed)),
                },
                remote: sa(remote),
                peer_not_after: 1_900_000_000,
                peer_cert: vec![],
            },
        },
    );
}

fn actions(c: &mut NodeCore) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

/// The repeated hellos among `a`: (tunnel, where we say we see the neighbour).
fn hellos(a: &[Action]) -> Vec<(TunnelId, Option<SocketAddr>)> {
    a.iter()
        .filter_map(|a| match a {
            Action::SendControl {
                tunnel,
                msg: ControlMsg::Hello { observed, .. },
            } => Some((*tunnel, *observed)),
            _ => None,
        })
        .collect()
}

fn reported(a: &[Action]) -> Vec<Vec<SocketAddr>> {
    a.iter()
        .filter_map(|a| match a {
            Action::ReportEndpoints(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_change_of_network_makes_every_tunnel_prove_its_path_and_redials_the_stranded_one() {
    let mut c = core(&["192.168.1.20"]);
    // one tunnel we dialled (QUIC migrates it), one a peer dialled at our LAN address
    up(&mut c, 1, 2, true, "203.0.113.10:6464", "203.0.113.1:6464");
    up(
        &mut c,
        2,
        3,
        false,
        "192.168.1.30:6464",
        "192.168.1.20:6464",
    );
    let _ = actions(&mut c);
    // the laptop moves to another home: its address is another one
    c.handle(
        at(1000),
        Input::NetworkChanged {
            addrs: vec![ip("192.168.3.2")],
            stranded: vec![TunnelId(2)],
        },
    );
    let a = actions(&mut c);
    // the tunnel we dialled gets a hello at once (it moves in one round trip)
    assert_eq!(
        hellos(&a),
        vec![(TunnelId(1), Some(sa("203.0.113.10:6464")))]
    );
    // the stranded one is closed and its peer dialled again, its known address first
    assert!(a.contains(&Action::Close {
        tunnel: TunnelId(2),
        code: CloseCode::Shutdown
    }));
    let dial = a.iter().find_map(|a| match a {
        Action::Dial { peer, addrs } if *peer == p(3) => Some(addrs.clone()),
        _ => None,
    });
    assert_eq!(
        dial,
        Some(vec![sa("198.51.100.3:6464"), sa("192.168.1.30:6464")])
    );
    // the new local candidate is announced (the old observation stays until the
    // neighbour says otherwise)
    assert_eq!(
        reported(&a),
        vec![vec![sa("203.0.113.1:6464"), sa("192.168.3.2:6464")]]
    );
    assert_eq!(c.neighbours(), vec![p(2)]);
    let counters = c.counters();
    assert_eq!(
        (counters.network_changes, counters.tunnels_stranded),
        (1, 1)
    );
}

#[test]
fn a_new_default_route_with_the_same_addresses_still_probes_every_tunnel() {
    let mut c = core(&["192.168.1.20"]);
    up(&mut c, 1, 2, true, "203.0.113.10:6464", "203.0.113.1:6464");
    up(&mut c, 2, 3, true, "203.0.113.11:6464", "203.0.113.1:6464");
    let _ = actions(&mut c);
    c.handle(
        at(1000),
        Input::NetworkChanged {
            addrs: vec![ip("192.168.1.20")],
            stranded: vec![],
        },
    );
    let a = actions(&mut c);
    assert_eq!(
        hellos(&a),
        vec![
            (TunnelId(1), Some(sa("203.0.113.10:6464"))),
            (TunnelId(2), Some(sa("203.0.113.11:6464")))
        ]
    );
    // nothing new to tell the registry, nothing closed, nothing dialled
    assert!(reported(&a).is_empty(), "{a:?}");
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Close { .. } | Action::Dial { .. })),
        "{a:?}"
    );
    // a poll that finds the same addresses is no change at all
    c.handle(at(2000), Input::LocalAddresses(vec![ip("192.168.1.20")]));
    assert!(hellos(&actions(&mut c)).is_empty());
}

#[test]
fn the_moved_node_learns_its_new_public_address_from_the_neighbour_and_announces_it() {
    // the public node's side: its neighbour's tunnel moved (QUIC migration)
    let mut pubnode = core(&["203.0.113.10"]);
    up(
        &mut pubnode,
        1,
        2,
        false,
        "203.0.113.1:6464",
        "203.0.113.10:6464",
    );
    let _ = actions(&mut pubnode);
    pubnode.handle(
        at(1000),
        Input::PathMoved {
            tunnel: TunnelId(1),
            remote: sa("203.0.113.2:40000"),
        },
    );
    let a = actions(&mut pubnode);
    assert_eq!(
        hellos(&a),
        vec![(TunnelId(1), Some(sa("203.0.113.2:40000")))]
    );
    assert_eq!(pubnode.snapshot().peers[0].endpoint, "203.0.113.2:40000");
    assert_eq!(pubnode.counters().paths_moved, 1);
    // told once: the same address again is no move
    pubnode.handle(
        at(1500),
        Input::PathMoved {
            tunnel: TunnelId(1),
            remote: sa("203.0.113.2:40000"),
        },
    );
    assert!(hellos(&actions(&mut pubnode)).is_empty());

    // the laptop's side: that hello replaces the old observation in its candidates
    let mut laptop = core(&["192.168.1.20"]);
    up(
        &mut laptop,
        1,
        9,
        true,
        "203.0.113.10:6464",
        "203.0.113.1:6464",
    );
    laptop.handle(
        at(900),
        Input::NetworkChanged {
            addrs: vec![ip("192.168.3.2")],
            stranded: vec![],
        },
    );
    let _ = actions(&mut laptop);
    laptop.handle(
        at(1100),
        Input::Control {
            tunnel: TunnelId(1),
            msg: ControlMsg::Hello {
                protocol: PROTOCOL_VERSION,
                params_version: 1,
                endpoints: vec![],
                country: None,
                observed: Some(sa("203.0.113.2:40000")),
            },
        },
    );
    let a = actions(&mut laptop);
    assert_eq!(
        reported(&a),
        vec![vec![sa("203.0.113.2:40000"), sa("192.168.3.2:6464")]]
    );
    // and every neighbour hears the new candidates
    assert_eq!(hellos(&a).len(), 1);
}

#[test]
fn a_node_that_is_down_probes_nothing() {
    let mut c = core(&["192.168.1.20"]);
    c.handle(at(5), Input::Down);
    let _ = actions(&mut c);
    c.handle(
        at(1000),
        Input::NetworkChanged {
            addrs: vec![ip("192.168.3.2")],
            stranded: vec![TunnelId(7)],
        },
    );
    let a = actions(&mut c);
    assert!(hellos(&a).is_empty() && reported(&a).is_empty(), "{a:?}");
}

#[test]
fn stranded_tunnels_and_the_socket_to_move_are_told_by_the_addresses_left() {
    let now = [ip("192.168.3.2"), ip("2001:db8::5")];
    // dialled by us: the OS picks the source, it follows
    assert!(!is_stranded(None, &now));
    assert!(!is_stranded(Some(ip("192.168.3.2")), &now));
    // a dual-stack socket names an IPv4 address mapped
    assert!(!is_stranded(Some(ip("::ffff:192.168.3.2")), &now));
    assert!(is_stranded(Some(ip("::ffff:192.168.1.20")), &now));
    assert!(is_stranded(Some(ip("2001:db8::4")), &now));
    assert!(!is_stranded(Some(ip("::1")), &now));
    assert!(!is_stranded(Some(ip("127.0.0.1")), &now));

    assert_eq!(rebind_to(sa("[::]:6464"), &now), None);
    assert_eq!(rebind_to(sa("0.0.0.0:6464"), &now), None);
    assert_eq!(rebind_to(sa("192.168.3.2:6464"), &now), None);
    assert_eq!(
        rebind_to(sa("192.168.1.20:6464"), &now),
        Some(sa("0.0.0.0:6464"))
    );
    assert_eq!(
        rebind_to(sa("[2001:db8::4]:7000"), &now),
        Some(sa("[::]:7000"))
    );
}

#[test]
fn a_stranded_peer_given_with_peer_is_dialled_again_at_its_configured_address_first() {
    let mut c = core_with(&["192.168.1.20"], vec![(p(3), sa("192.0.2.3:6464"))]);
    up(
        &mut c,
        2,
        3,
        false,
        "192.168.1.30:6464",
        "192.168.1.20:6464",
    );
    let _ = actions(&mut c);
    c.handle(
        at(1000),
        Input::NetworkChanged {
            addrs: vec![ip("10.0.0.7")],
            stranded: vec![TunnelId(2)],
        },
    );
    let a = actions(&mut c);
    let dials: Vec<Vec<SocketAddr>> = a
        .iter()
        .filter_map(|a| match a {
            Action::Dial { peer, addrs } if *peer == p(3) => Some(addrs.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        dials,
        vec![vec![
            sa("192.0.2.3:6464"),
            sa("198.51.100.3:6464"),
            sa("192.168.1.30:6464")
        ]]
    );
    // the next round does not dial it a second time while that dial is in flight
    c.handle_timeout(at(1600));
    assert!(
        !actions(&mut c)
            .iter()
            .any(|a| matches!(a, Action::Dial { .. })),
    );
}
