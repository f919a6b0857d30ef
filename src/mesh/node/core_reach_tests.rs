//! The core's view of where it can be reached (`mesh::reach`): candidates from its interfaces
//! and its neighbours, reported to the registry and neighbours; and hole punching through the
//! mesh (`mesh::punch`).

use super::*;

#[test]
fn the_node_finds_its_own_endpoints_from_its_interfaces_and_its_neighbours_and_reports_them() {
    let w = World::new();
    let mut c = w.core(1);
    actions(&mut c);
    let reported = |a: &[Action]| {
        a.iter()
            .filter_map(|a| match a {
                Action::ReportEndpoints(e) => Some(e.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    // the interfaces: a public address, a LAN one, link-local, and the TUN's own
    c.handle(
        at(5),
        Input::LocalAddresses(vec![
            "2001:db8:1::5".parse().unwrap(),
            "192.168.1.20".parse().unwrap(),
            "fe80::5".parse().unwrap(),
            IpAddr::V6(identity::node_address(&net_prefix(1))),
        ]),
    );
    let a = actions(&mut c);
    assert_eq!(
        reported(&a),
        vec![vec![sa("[2001:db8:1::5]:6464"), sa("192.168.1.20:6464")]]
    );
    assert!(a.iter().any(|a| matches!(a, Action::SetHello { hello, .. }
        if hello.endpoints == vec![sa("[2001:db8:1::5]:6464"), sa("192.168.1.20:6464")])));
    // the same addresses again: nothing to say
    c.handle(
        at(6),
        Input::LocalAddresses(vec![
            "2001:db8:1::5".parse().unwrap(),
            "192.168.1.20".parse().unwrap(),
        ]),
    );
    assert!(reported(&actions(&mut c)).is_empty());
    // a neighbour sees us behind a NAT: that address comes first, and every neighbour hears
    // the new candidates in a repeated hello
    let mut i = info(2, true);
    i.hello.observed = Some(sa("203.0.113.9:40000"));
    c.handle(
        at(10),
        Input::TunnelUp {
            tunnel: TunnelId(1),
            info: i,
        },
    );
    let a = actions(&mut c);
    let want = vec![
        sa("203.0.113.9:40000"),
        sa("[2001:db8:1::5]:6464"),
        sa("192.168.1.20:6464"),
    ];
    assert_eq!(reported(&a), vec![want.clone()]);
    assert!(a.iter().any(|a| matches!(a, Action::SendControl { tunnel: TunnelId(1), msg: ControlMsg::Hello { endpoints, observed: Some(o), .. } }
        if *endpoints == want && *o == sa("192.0.2.1:1"))));
    // a neighbour that lies about where it sees us can add one address, never a loopback one
    let mut i = info(3, true);
    i.hello.observed = Some(sa("127.0.0.1:6464"));
    c.handle(
        at(20),
        Input::TunnelUp {
            tunnel: TunnelId(2),
            info: i,
        },
    );
    assert!(reported(&actions(&mut c)).is_empty());
    // the tunnel goes: its observation with it
    c.handle(
        at(2_100),
        Input::TunnelDown {
            tunnel: TunnelId(1),
            code: None,
        },
    );
    assert_eq!(
        reported(&actions(&mut c)),
        vec![vec![sa("[2001:db8:1::5]:6464"), sa("192.168.1.20:6464")]]
    );
    // a repeated hello from a neighbour updates what we know of it, first-hand
    let hello = ControlMsg::Hello {
        protocol: PROTOCOL_VERSION,
        params_version: 1,
        endpoints: vec![sa("[2001:db8:3::3]:6464"), sa("[::1]:6464")],
        country: None,
        observed: Some(sa("198.51.100.4:1234")),
    };
    c.handle(
        at(40),
        Input::Control {
            tunnel: TunnelId(2),
            msg: hello,
        },
    );
    assert_eq!(
        c.cache.endpoints(&net_prefix(3)),
        &[sa("[2001:db8:3::3]:6464")]
    );
    assert_eq!(c.counters().peer_addresses_refused, 1);
    assert_eq!(reported(&actions(&mut c))[0][0], sa("198.51.100.4:1234"));
    // --endpoint overrides it all
    let mut fixed = w.core(4);
    let network = fixed.params().network;
    fixed.reach = crate::mesh::reach::Reach::new(6464, network, vec![sa("[2001:db8::77]:7000")]);
    fixed.handle(
        at(5),
        Input::LocalAddresses(vec!["2001:db8:1::5".parse().unwrap()]),
    );
    assert_eq!(
        reported(&actions(&mut fixed)),
        vec![vec![sa("[2001:db8::77]:7000")]]
    );
}

/// A punch request through the mesh is answered with our candidates and our handshakes go
/// out at the requester's moment; signals from ourselves or outside the network, and a
/// second request within the per-source interval, are not taken.
#[test]
fn a_punch_request_is_answered_and_punched_at_the_agreed_moment() {
    use crate::mesh::punch::{Kind, SIGNAL_PORT, Signal};
    let w = World::new();
    let mut c = w.core(1);
    c.handle(
        at(0),
        Input::LocalAddresses(vec!["203.0.113.1".parse().unwrap()]),
    );
    let _ = actions(&mut c);
    let far = identity::node_address(&net_prefix(7));
    let req = Signal {
        v: 1,
        kind: Kind::Request,
        id: 42,
        candidates: vec!["198.51.100.7:6464".parse().unwrap()],
        start_in_ms: 1000,
    };
    c.handle(
        at(1_000),
        Input::Signal {
            src: far,
            bytes: req.encode(),
        },
    );
    let a = actions(&mut c);
    let answer = a
        .iter()
        .find_map(|x| match x {
            Action::SendSignal { to, bytes } if *to == far => Signal::decode(bytes),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no answer: {a:?}"));
    assert_eq!((answer.kind, answer.id), (Kind::Answer, 42));
    assert_eq!(
        answer.candidates,
        vec!["203.0.113.1:6464".parse::<SocketAddr>().unwrap()]
    );
    c.handle_timeout(at(1_999));
    assert!(
        !actions(&mut c)
            .iter()
            .any(|x| matches!(x, Action::Punch { .. })),
        "not before the moment"
    );
    assert!(c.poll_timeout() <= Some(at(2_000).time));
    c.handle_timeout(at(2_000));
    let a = actions(&mut c);
    assert!(
        a.contains(&Action::Punch {
            peer: net_prefix(7),
            addrs: vec!["198.51.100.7:6464".parse().unwrap()]
        }),
        "{a:?}"
    );
    // the tunnel that comes of it says it was punched
    let _ = up(&mut c, 9, 7, false);
    let s = c.snapshot();
    assert_eq!(s.peers[0].made, "punched");
    assert_eq!(s.counters.tunnels_punched, 1);
    // not taken: from ourselves, from outside the network, again within 5 s
    for src in [
        identity::node_address(&net_prefix(1)),
        "fd00:2::1".parse().unwrap(),
        far,
    ] {
        c.handle(
            at(3_000),
            Input::Signal {
                src,
                bytes: req.encode(),
            },
        );
        assert!(
            !actions(&mut c)
                .iter()
                .any(|x| matches!(x, Action::SendSignal { .. })),
            "{src}"
        );
    }
    assert_eq!(c.snapshot().counters.punch_requests_refused, 1);
    let _ = SIGNAL_PORT;
}
