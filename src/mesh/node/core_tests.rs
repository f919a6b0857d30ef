//! Unit tests of the node core, one decision at a time (whole networks of cores run in
//! `mesh::sim::nodes`).

use super::*;
use crate::params::{CrlRef, MacState, TunnelPolicy};
use crate::registry::ca::Ca;

/// A fixed wall-clock date (the core's `Now.unix` below starts there too).
fn epoch() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

struct World {
    ca: Ca,
    crl: Vec<u8>,
}

const NETWORK: &str = "fd00:1::/48";

fn net_prefix(i: u16) -> Ipv6Net {
    format!("fd00:1:0:{i:x}::/64").parse().unwrap()
}

impl World {
    fn new() -> World {
        let ca = Ca::generate(&NETWORK.parse().unwrap(), epoch()).unwrap();
        let crl = ca.crl(1, &[], epoch()).unwrap();
        World { ca, crl }
    }

    fn params(&self, version: u64, min_protocol: u32) -> SignedParams {
        let p = NetworkParams {
            version,
            issued_at: 0,
            network: NETWORK.parse().unwrap(),
            node_prefix_len: 64,
            protocol: PROTOCOL_VERSION,
            min_protocol,
            hello_interval: 4,
            tunnel: TunnelPolicy {
                client_count: 3,
                max_clients: 2,
                refresh: 300,
            },
            countries: Default::default(),
            crl: CrlRef {
                number: 1,
                sha256: hex::encode(identity::fingerprint(&self.crl)),
            },
            mac: MacState::default(),
            routes: Vec::new(),
            ipv4: None,
            routes_v4: Vec::new(),
        };
        let document = p.to_bytes();
        SignedParams {
            signature: self.ca.sign(&document).unwrap(),
            document,
        }
    }

    fn core(&self, me: u16) -> NodeCore {
        self.core_with_peers(me, vec![])
    }

    /// [`World::core`] with `--peer`s.
    fn core_with_peers(&self, me: u16, static_peers: Vec<(Ipv6Net, SocketAddr)>) -> NodeCore {
        let mut net = NetState::new(self.ca.cert_der().to_vec(), self.params(1, 1)).unwrap();
        net.offer(None, Some(&self.crl)).unwrap();
        NodeCore::new(
            CoreConfig {
                prefix: net_prefix(me),
                net,
                keys: vec![],
                serial: "01".into(),
                name: None,
                not_before: 0,
                not_after: i64::MAX / 2,
                static_peers,
                endpoints: vec![],
                listen_port: 6464,
                country: None,
                babel_timers: None,
                cache: PeerCache::new(16),
                origin: None,
                advertise_routes: vec![],
                advertise_routes_v4: vec![],
                exit: false,
                ipv4: None,
            },
            [7; 32],
            at(0),
        )
    }
}

impl World {
    /// A core whose parameters name a CRL it does not hold (restart with the registry away).
    fn core_without_crl(&self, me: u16) -> NodeCore {
        let mut c = self.core(me);
        let net = NetState::new(self.ca.cert_der().to_vec(), self.params(1, 1)).unwrap();
        c.net = net;
        c
    }
}

fn at(ms: u64) -> Now {
    Now {
        time: Time::from_millis(ms),
        unix: 1_800_000_000 + i64::try_from(ms / 1000).unwrap(),
    }
}

fn info(peer: u16, initiated: bool) -> TunnelInfo {
    TunnelInfo {
        peer_prefix: net_prefix(peer),
        peer_serial: format!("{peer:02x}"),
        initiated,
        hello: HelloInfo {
            protocol: PROTOCOL_VERSION,
            params_version: 1,
            endpoints: vec![],
            country: None,
            observed: None,
        },
        remote: "192.0.2.1:1".parse().unwrap(),
        peer_not_after: 1_900_000_000,
        peer_cert: vec![],
    }
}

fn actions(core: &mut NodeCore) -> Vec<Action> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

fn closes(a: &[Action]) -> Vec<(TunnelId, CloseCode)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Close { tunnel, code } => Some((*tunnel, *code)),
            _ => None,
        })
        .collect()
}

fn up(core: &mut NodeCore, id: u64, peer: u16, initiated: bool) -> Vec<Action> {
    core.handle(
        at(10),
        Input::TunnelUp {
            tunnel: TunnelId(id),
            info: info(peer, initiated),
        },
    );
    actions(core)
}

#[test]
fn a_new_tunnel_is_activated_and_told_our_peers() {
    let w = World::new();
    let mut c = w.core(1);
    let _ = actions(&mut c);
    let a = up(&mut c, 1, 2, true);
    assert!(
        matches!(
            a[0],
            Action::Activate {
                tunnel: TunnelId(1),
                ..
            }
        ),
        "{a:?}"
    );
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::SendControl {
                msg: ControlMsg::Peers { .. },
                ..
            }
        )),
        "{a:?}"
    );
    assert_eq!(c.neighbours(), vec![net_prefix(2)]);
}

#[test]
fn of_two_tunnels_to_one_peer_the_pair_keeps_the_one_the_lower_prefix_initiated() {
    let w = World::new();
    // we are the lower prefix: our own dial wins over the peer's
    let mut c = w.core(1);
    up(&mut c, 1, 2, false);
    let a = up(&mut c, 2, 2, true);
    assert_eq!(closes(&a), vec![], "closed a moment later");
    c.handle_timeout(at(10 + 2_000));
    assert_eq!(
        closes(&actions(&mut c)),
        vec![(TunnelId(1), CloseCode::Duplicate)]
    );
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Activate {
            tunnel: TunnelId(2),
            ..
        }
    )));
    // a third one, initiated by the peer again, is refused
    let a = up(&mut c, 3, 2, false);
    assert_eq!(closes(&a), vec![(TunnelId(3), CloseCode::Duplicate)]);
    // we are the higher prefix: the peer's dial wins
    let mut c = w.core(3);
    up(&mut c, 1, 2, true);
    let a = up(&mut c, 2, 2, false);
    assert_eq!(closes(&a), vec![]);
    c.handle_timeout(at(10 + 2_000));
    assert_eq!(
        closes(&actions(&mut c)),
        vec![(TunnelId(1), CloseCode::Duplicate)]
    );
}

fn activated_iface(a: &[Action], id: u64) -> Option<IfaceId> {
    a.iter().find_map(|a| match a {
        Action::Activate { tunnel, iface } if *tunnel == TunnelId(id) => Some(*iface),
        _ => None,
    })
}

#[test]
fn a_duplicate_that_wins_takes_over_the_babel_interface_so_routes_do_not_flap() {
    let w = World::new();
    let mut c = w.core(1);
    let first = activated_iface(&up(&mut c, 1, 2, false), 1).expect("activated");
    let ids = |c: &NodeCore| {
        c.engine
            .neighbours()
            .iter()
            .map(|n| n.id)
            .collect::<Vec<_>>()
    };
    let before = ids(&c);
    assert_eq!(before.len(), 1);
    let a = up(&mut c, 2, 2, true);
    // the replaced connection stays open a moment: the peer may not have the new one yet
    assert_eq!(closes(&a), vec![]);
    assert_eq!(
        activated_iface(&a, 2),
        Some(first),
        "the winner carries the same interface: {a:?}"
    );
    assert_eq!(ids(&c), before, "the neighbour stays");
    assert_eq!(c.neighbours(), vec![net_prefix(2)]);
    c.handle_timeout(at(10 + 1_000));
    assert_eq!(closes(&actions(&mut c)), vec![]);
    c.handle_timeout(at(10 + 2_000));
    assert_eq!(
        closes(&actions(&mut c)),
        vec![(TunnelId(1), CloseCode::Duplicate)]
    );
    // the old tunnel's end, reported afterwards, changes nothing
    c.handle(
        at(2_100),
        Input::TunnelDown {
            tunnel: TunnelId(1),
            code: Some(CloseCode::Duplicate),
        },
    );
    let _ = actions(&mut c);
    assert_eq!(c.neighbours(), vec![net_prefix(2)]);
    assert_eq!(ids(&c), before);
    // a loser is refused without touching the interface
    let a = up(&mut c, 3, 2, false);
    assert_eq!(closes(&a), vec![(TunnelId(3), CloseCode::Duplicate)]);
    assert_eq!(ids(&c), before);
}

#[test]
fn a_tunnel_from_a_serial_the_crl_names_is_closed_as_revoked() {
    let w = World::new();
    let mut c = w.core(1);
    let crl = w.ca.crl(2, &[("02".into(), 0)], epoch()).unwrap();
    let mut p = NetState::new(w.ca.cert_der().to_vec(), w.params(1, 1)).unwrap();
    let _ = p.offer(None, Some(&crl));
    // the parameters name the CRL: build version 2 naming it
    let mut doc = p.params().clone();
    doc.version = 2;
    doc.crl = CrlRef {
        number: 2,
        sha256: hex::encode(identity::fingerprint(&crl)),
    };
    let document = doc.to_bytes();
    let signed = SignedParams {
        signature: w.ca.sign(&document).unwrap(),
        document,
    };
    up(&mut c, 1, 2, true);
    up(&mut c, 2, 3, true);
    c.handle(
        at(20),
        Input::Offer {
            signed: Some(signed),
            crl: Some(crl),
            from: None,
        },
    );
    let a = actions(&mut c);
    assert_eq!(closes(&a), vec![(TunnelId(1), CloseCode::Revoked)]);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::SetRevoked(s) if s.contains("02")))
    );
    // the survivor hears of the new parameters
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::SendControl {
                tunnel: TunnelId(2),
                msg: ControlMsg::Params { .. }
            }
        )),
        "{a:?}"
    );
    // and a new tunnel from the revoked serial is refused
    let a = up(&mut c, 3, 2, false);
    assert_eq!(closes(&a), vec![(TunnelId(3), CloseCode::Revoked)]);
}

#[test]
fn a_peer_closing_with_the_revoked_code_or_refusing_a_dial_as_revoked_sends_us_to_the_registry() {
    let w = World::new();
    let mut c = w.core(1);
    up(&mut c, 1, 2, true);
    c.handle(
        at(100),
        Input::TunnelDown {
            tunnel: TunnelId(1),
            code: Some(CloseCode::Revoked),
        },
    );
    assert!(actions(&mut c).contains(&Action::FetchParams));
    // within the 5 s limit: not again at once, but at the next round after it
    c.handle(
        at(200),
        Input::DialFailed {
            peer: net_prefix(3),
            revoked: true,
        },
    );
    assert!(!actions(&mut c).contains(&Action::FetchParams));
    c.handle_timeout(at(5_200));
    assert!(actions(&mut c).contains(&Action::FetchParams));
    // a plain close or failure does not
    up(&mut c, 2, 4, true);
    c.handle(
        at(20_000),
        Input::TunnelDown {
            tunnel: TunnelId(2),
            code: Some(CloseCode::Retired),
        },
    );
    c.handle(
        at(20_000),
        Input::DialFailed {
            peer: net_prefix(3),
            revoked: false,
        },
    );
    assert!(!actions(&mut c).contains(&Action::FetchParams));
}

#[test]
fn params_requests_are_answered_at_most_once_a_second_per_tunnel() {
    let w = World::new();
    let mut c = w.core(1);
    up(&mut c, 1, 2, true);
    let answers = |c: &mut NodeCore| {
        actions(c)
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::SendControl {
                        msg: ControlMsg::Params { .. },
                        ..
                    }
                )
            })
            .count()
    };
    for i in 0..100 {
        c.handle(
            at(1_000 + i),
            Input::Control {
                tunnel: TunnelId(1),
                msg: ControlMsg::ParamsRequest,
            },
        );
    }
    assert_eq!(answers(&mut c), 1);
    assert_eq!(c.counters().params_requests_ignored, 99);
    c.handle(
        at(2_000),
        Input::Control {
            tunnel: TunnelId(1),
            msg: ControlMsg::ParamsRequest,
        },
    );
    assert_eq!(answers(&mut c), 1);
}

#[test]
fn a_neighbour_that_does_not_read_its_control_stream_loses_its_tunnel() {
    let w = World::new();
    let mut c = w.core(1);
    up(&mut c, 1, 2, true);
    c.handle(at(50), Input::ControlStalled(TunnelId(1)));
    let a = actions(&mut c);
    assert_eq!(closes(&a), vec![(TunnelId(1), CloseCode::Control)]);
    assert!(c.neighbours().is_empty());
    assert_eq!(c.counters().control_stalled, 1);
}

#[test]
fn peers_beyond_the_budget_of_one_message_are_not_taken() {
    let w = World::new();
    let mut c = w.core(1);
    up(&mut c, 1, 2, true);
    let peers = (10..2000u16)
        .map(|i| PeerAddr {
            prefix: net_prefix(i),
            endpoints: vec!["192.0.2.9:1".parse().unwrap()],
            country: None,
        })
        .collect();
    c.handle(
        at(50),
        Input::Control {
            tunnel: TunnelId(1),
            msg: ControlMsg::Peers { peers },
        },
    );
    // the cache's own capacity (16 here) bounds it further
    assert!(c.peer_cache().len() <= 16);
}

#[test]
fn a_renewal_for_another_prefix_or_one_that_cannot_be_installed_changes_nothing() {
    let w = World::new();
    let mut c = w.core(1);
    c.revoked = true;
    c.handle_timeout(at(0));
    assert!(actions(&mut c).contains(&Action::Renew));
    let renewal = |prefix| Renewal {
        prefix,
        serial: "99".into(),
        not_before: 0,
        not_after: i64::MAX / 2,
        cert_der: vec![1, 2, 3],
        signed_params: w.params(1, 1),
    };
    c.handle(at(10), Input::Renewed(Ok(renewal(net_prefix(5)))));
    assert!(
        actions(&mut c)
            .iter()
            .all(|a| !matches!(a, Action::InstallCertificate { .. }))
    );
    assert_eq!(c.serial(), "01");
    // retried after a minute, not before
    c.handle_timeout(at(30_000));
    assert!(!actions(&mut c).contains(&Action::Renew));
    c.handle_timeout(at(61_000));
    assert!(actions(&mut c).contains(&Action::Renew));
    c.handle(at(61_010), Input::Renewed(Ok(renewal(net_prefix(1)))));
    assert!(actions(&mut c).contains(&Action::InstallCertificate {
        cert_der: vec![1, 2, 3]
    }));
    c.handle(
        at(61_020),
        Input::CertificateInstalled(Err(InstallError("disk full".into()))),
    );
    assert_eq!(c.serial(), "01");
    assert!(c.is_revoked());
    // an answer nobody waits for is ignored
    c.handle(at(61_030), Input::CertificateInstalled(Ok(())));
    assert_eq!(c.serial(), "01");
    c.handle_timeout(at(122_000));
    assert!(actions(&mut c).contains(&Action::Renew));
    c.handle(at(122_010), Input::Renewed(Ok(renewal(net_prefix(1)))));
    c.handle(at(122_020), Input::CertificateInstalled(Ok(())));
    assert_eq!(c.serial(), "99");
    assert!(!c.is_revoked());
}

#[test]
fn a_network_requiring_a_newer_protocol_stops_the_node_after_passing_the_news_on() {
    let w = World::new();
    let mut c = w.core(1);
    up(&mut c, 1, 2, true);
    up(&mut c, 2, 3, true);
    c.handle(
        at(100),
        Input::Offer {
            signed: Some(w.params(2, PROTOCOL_VERSION + 1)),
            crl: None,
            from: Some(TunnelId(1)),
        },
    );
    let a = actions(&mut c);
    let params_to = a.iter().position(|a| {
        matches!(
            a,
            Action::SendControl {
                tunnel: TunnelId(2),
                msg: ControlMsg::Params { .. }
            }
        )
    });
    let stop = a
        .iter()
        .position(|a| matches!(a, Action::Stop { error: Some(_) }));
    assert!(
        params_to.is_some() && stop.is_some() && params_to < stop,
        "{a:?}"
    );
    assert!(
        a.iter().all(|a| !matches!(
            a,
            Action::SendControl {
                tunnel: TunnelId(1),
                ..
            }
        )),
        "the sender is not sent its own news: {a:?}"
    );
    assert_eq!(c.linger(), LINGER_FATAL);
}

#[test]
fn mesh_down_closes_every_tunnel_withdraws_the_address_and_refuses_new_ones() {
    let w = World::new();
    let mut c = w.core(1);
    up(&mut c, 1, 2, true);
    c.handle(at(100), Input::Down);
    let a = actions(&mut c);
    assert_eq!(closes(&a), vec![(TunnelId(1), CloseCode::Shutdown)]);
    assert!(a.contains(&Action::TunWithdraw));
    assert!(a.contains(&Action::LanPace {
        hello: Duration::from_secs(4),
        active: false
    }));
    let a = up(&mut c, 2, 3, false);
    assert_eq!(closes(&a), vec![(TunnelId(2), CloseCode::Shutdown)]);
    c.handle(at(200), Input::Up);
    assert!(actions(&mut c).contains(&Action::TunRestore));
}

#[test]
fn the_same_inputs_and_seed_give_the_same_actions() {
    let w = World::new();
    let run = || {
        let mut c = w.core(1);
        c.handle(
            at(0),
            Input::Peers(
                (2..40u16)
                    .map(|i| PeerAddr {
                        prefix: net_prefix(i),
                        endpoints: vec![format!("192.0.2.{i}:1").parse().unwrap()],
                        country: None,
                    })
                    .collect(),
            ),
        );
        let mut out = Vec::new();
        for t in (0..5_000).step_by(500) {
            c.handle_timeout(at(t));
            out.extend(actions(&mut c).into_iter().map(|a| format!("{a:?}")));
        }
        out
    };
    let (a, b) = (run(), run());
    assert!(a.iter().any(|s| s.starts_with("Dial")), "{a:?}");
    assert_eq!(a, b);
}

#[test]
fn without_the_crl_new_tunnels_are_held_and_neighbours_asked_until_one_brings_it() {
    let w = World::new();
    let mut c = w.core_without_crl(1);
    let _ = actions(&mut c);
    let a = up(&mut c, 1, 2, true);
    assert!(
        a.contains(&Action::Hold {
            tunnel: TunnelId(1)
        }),
        "{a:?}"
    );
    assert!(
        !a.iter().any(|a| matches!(a, Action::Activate { .. })),
        "{a:?}"
    );
    assert!(a.contains(&Action::SendControl {
        tunnel: TunnelId(1),
        msg: ControlMsg::ParamsRequest
    }));
    // nothing of Babel passes either way while held
    c.handle(
        at(20),
        Input::Babel {
            tunnel: TunnelId(1),
            bytes: vec![42, 2, 0, 0],
        },
    );
    assert_eq!(c.counters.babel_unknown_tunnel, 1);
    c.handle_timeout(at(6_000));
    let a = actions(&mut c);
    assert!(
        !a.iter().any(|a| matches!(a, Action::SendBabel { .. })),
        "{a:?}"
    );
    // asked again every CRL_ASK_INTERVAL, not on every tick
    assert!(a.contains(&Action::SendControl {
        tunnel: TunnelId(1),
        msg: ControlMsg::ParamsRequest
    }));
    c.handle_timeout(at(6_500));
    assert!(!actions(&mut c).contains(&Action::SendControl {
        tunnel: TunnelId(1),
        msg: ControlMsg::ParamsRequest
    }));
    let snap = c.snapshot();
    assert!(snap.crl_missing);
    assert_eq!(snap.held, 1);
    // a wrong CRL (another number, CA-signed) changes nothing
    use base64::Engine as _;
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let other = w.ca.crl(7, &[], epoch()).unwrap();
    let params = w.params(1, 1).to_json();
    c.handle(
        at(7_000),
        Input::Control {
            tunnel: TunnelId(1),
            msg: ControlMsg::Params {
                params: params.clone(),
                crl: Some(b64(&other)),
            },
        },
    );
    let a = actions(&mut c);
    assert!(
        !a.iter().any(|a| matches!(a, Action::Activate { .. })),
        "{a:?}"
    );
    assert!(c.snapshot().crl_missing);
    // the neighbour brings the right one: the tunnel starts carrying traffic
    c.handle(
        at(7_100),
        Input::Control {
            tunnel: TunnelId(1),
            msg: ControlMsg::Params {
                params,
                crl: Some(b64(&w.crl)),
            },
        },
    );
    let a = actions(&mut c);
    assert!(
        a.iter().any(|a| matches!(
            a,
            Action::Activate {
                tunnel: TunnelId(1),
                ..
            }
        )),
        "{a:?}"
    );
    let snap = c.snapshot();
    assert!(!snap.crl_missing);
    assert_eq!(snap.held, 0);
    // and a later tunnel is activated at once
    let a = up(&mut c, 2, 3, true);
    assert!(matches!(
        a[0],
        Action::Activate {
            tunnel: TunnelId(2),
            ..
        }
    ));
}

#[test]
fn an_expired_peer_certificate_is_refused_and_a_tunnel_closes_when_its_peer_expires() {
    let w = World::new();
    let mut c = w.core(1);
    let _ = actions(&mut c);
    // at(ms).unix = 1_800_000_000 + ms / 1000
    let mut i = info(2, true);
    i.peer_not_after = 1_800_000_000;
    c.handle(
        at(10),
        Input::TunnelUp {
            tunnel: TunnelId(1),
            info: i,
        },
    );
    assert_eq!(
        closes(&actions(&mut c)),
        vec![(TunnelId(1), CloseCode::Expired)]
    );
    let mut i = info(3, true);
    i.peer_not_after = 1_800_000_030;
    c.handle(
        at(10),
        Input::TunnelUp {
            tunnel: TunnelId(2),
            info: i,
        },
    );
    assert!(closes(&actions(&mut c)).is_empty());
    c.handle_timeout(at(29_000));
    assert!(closes(&actions(&mut c)).is_empty());
    c.handle_timeout(at(31_000));
    assert_eq!(
        closes(&actions(&mut c)),
        vec![(TunnelId(2), CloseCode::Expired)]
    );
    assert_eq!(c.counters.peer_certificate_expired, 2);
}

#[test]
fn a_neighbours_false_peer_lists_neither_redirect_known_peers_nor_aim_dials_at_a_victim() {
    let w = World::new();
    let mut c = w.core(1);
    c.cache = PeerCache::new(256);
    let _ = actions(&mut c);
    let known: SocketAddr = "198.51.100.3:6000".parse().unwrap();
    let victim: SocketAddr = "203.0.113.99:443".parse().unwrap();
    // the registry told us where node 3 is (first-hand)
    c.handle(
        at(5),
        Input::Peers(vec![PeerAddr {
            prefix: net_prefix(3),
            endpoints: vec![known],
            country: None,
        }]),
    );
    up(&mut c, 1, 2, true);
    let peer = |i: u16, a: &str| PeerAddr {
        prefix: net_prefix(i),
        endpoints: vec![a.parse().unwrap()],
        country: None,
    };
    let mut lies = vec![
        peer(3, "203.0.113.66:1"),
        peer(50, "127.0.0.1:22"),
        peer(51, "[fe80::1%1]:6000"),
        peer(52, "[ff02::1]:6000"),
    ];
    lies.extend((100..140).map(|i| peer(i, "203.0.113.99:443")));
    c.handle(
        at(20),
        Input::Control {
            tunnel: TunnelId(1),
            msg: ControlMsg::Peers { peers: lies },
        },
    );
    assert_eq!(c.cache.endpoints(&net_prefix(3)), &[known]);
    for i in 50..53 {
        assert!(c.cache.get(&net_prefix(i)).is_none(), "{i}");
    }
    assert_eq!(c.counters.peer_addresses_refused, 3);
    let heard = (100..140)
        .filter(|i| c.cache.get(&net_prefix(*i)).is_some())
        .count();
    assert_eq!(heard, crate::mesh::peers::MAX_HEARSAY_PER_SOURCE);
    assert_eq!(
        c.counters.hearsay_over_budget,
        40 - crate::mesh::peers::MAX_HEARSAY_PER_SOURCE as u64
    );
    // the tunnel manager dials: the victim's address once per DIAL_ADDR_INTERVAL at most,
    // whatever the number of prefixes pointed at it
    let mut at_victim = 0;
    let mut dials = 0;
    for ms in (100..29_000).step_by(100) {
        c.handle_timeout(at(ms));
        for a in actions(&mut c) {
            if let Action::Dial { peer, addrs } = a {
                dials += 1;
                at_victim += usize::from(addrs.contains(&victim));
                c.handle(
                    at(ms),
                    Input::DialFailed {
                        peer,
                        revoked: false,
                    },
                );
            }
        }
    }
    assert!(dials >= 2, "the manager dialled {dials} times");
    assert_eq!(at_victim, 1, "{dials} dials");
    assert!(c.counters.dials_rate_limited > 0);
}

#[test]
fn lan_neighbours_are_bounded() {
    let w = World::new();
    let mut c = w.core(1);
    let _ = actions(&mut c);
    let n = u16::try_from(MAX_LAN_NEIGHBOURS).unwrap();
    for i in 0..n + 100 {
        c.handle(
            at(10),
            Input::LanPeer {
                prefix: net_prefix(1000 + i),
                addr: SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2), 6464, 0, 3),
            },
        );
    }
    assert_eq!(c.lan_heard.len(), MAX_LAN_NEIGHBOURS);
    assert_eq!(c.counters.lan_over_budget, 100);
    // one already heard still refreshes
    c.handle(
        at(20),
        Input::LanPeer {
            prefix: net_prefix(1000),
            addr: SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2), 6464, 0, 3),
        },
    );
    assert_eq!(c.counters.lan_over_budget, 100);
}

#[test]
fn logging_an_input_never_writes_a_key() {
    let i = Input::KeyBytes(vec![("k1".into(), SecretBytes::new(vec![0xab; 32]))]);
    let text = format!("{i:?}");
    assert!(
        text.contains("k1") && text.contains("32 secret bytes"),
        "{text}"
    );
    assert!(
        !text.contains("171") && !text.to_lowercase().contains("abab"),
        "{text}"
    );
}

#[path = "core_reach_tests.rs"]
mod reach;

#[path = "core_portmap_tests.rs"]
mod portmap;

#[path = "core_roam_tests.rs"]
mod roam;
