use super::*;

const PORT: u16 = 6464;

fn t(secs: u64) -> Time {
    Time::from_millis(secs * 1000)
}

fn route(gw: &str, local: &str) -> Route {
    Route {
        gateway: gw.parse().unwrap(),
        local: local.parse().unwrap(),
    }
}

fn home() -> Route {
    route("192.168.1.1", "192.168.1.20")
}

fn mapping(protocol: Protocol, external: &str, lifetime: u64) -> Mapping {
    Mapping {
        protocol,
        gateway: "192.168.1.1".parse().unwrap(),
        external: external.parse().unwrap(),
        lifetime: Duration::from_secs(lifetime),
    }
}

/// The protocol of the map request out (and that it is a new mapping, not a renewal).
fn asked(m: &mut PortMapper) -> Protocol {
    match m.poll_request() {
        Some(Request::Map {
            protocol,
            previous: None,
            internal_port: PORT,
            ..
        }) => protocol,
        other => panic!("expected a new map request, got {other:?}"),
    }
}

/// Starts `m` at `now` up to its first map request (the route look answered with `r`).
fn start(m: &mut PortMapper, now: Time, r: Result<Route, String>) {
    m.handle_timeout(now);
    assert_eq!(m.poll_request(), Some(Request::FindRoute));
    m.on_route(now, r);
}

#[test]
fn a_round_tries_pcp_then_nat_pmp_then_upnp_and_renews_at_half_the_lifetime() {
    let mut m = PortMapper::new(PORT, t(0));
    assert_eq!(m.poll_timeout(), Some(t(0)));
    start(&mut m, t(0), Ok(home()));
    match m.poll_request() {
        Some(Request::Map {
            protocol: Protocol::Pcp,
            route: Some(r),
            lifetime,
            ..
        }) => {
            assert_eq!(r, home());
            assert_eq!(lifetime, LIFETIME);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        m.poll_timeout(),
        None,
        "nothing is due while a request is out"
    );
    assert_eq!(m.status(t(0)).state, "searching");
    m.on_mapped(t(1), Err("no answer".into()));
    assert_eq!(asked(&mut m), Protocol::NatPmp);
    m.on_mapped(t(2), Err("unsupported".into()));
    match m.poll_request() {
        Some(Request::Map {
            protocol: Protocol::Upnp,
            route: None,
            lifetime,
            ..
        }) => assert_eq!(lifetime, UPNP_LEASE),
        other => panic!("{other:?}"),
    }
    let granted = mapping(Protocol::Upnp, "198.51.100.1:6464", 3600);
    m.on_mapped(t(3), Ok(granted));
    assert_eq!(m.external(), Some("198.51.100.1:6464".parse().unwrap()));
    let s = m.status(t(3));
    assert_eq!(s.state, "mapped");
    assert_eq!(s.protocol.as_deref(), Some("upnp"));
    assert_eq!(s.external.as_deref(), Some("198.51.100.1:6464"));
    assert_eq!((s.lifetime_secs, s.next_in_secs), (Some(3600), Some(1800)));
    assert_eq!(s.last_error.as_deref(), Some("nat-pmp: unsupported"));

    // Renewal at half the lifetime, same protocol and router, the route looked at between.
    let renew = t(3 + 1800);
    for _ in 0..100 {
        let Some(next) = m.poll_timeout() else {
            panic!("no timeout")
        };
        if next >= renew {
            break;
        }
        m.handle_timeout(next);
        assert_eq!(m.poll_request(), Some(Request::FindRoute));
        m.on_route(next, Ok(home()));
        assert!(m.external().is_some(), "the same route changes nothing");
    }
    assert_eq!(m.poll_timeout(), Some(renew));
    m.handle_timeout(renew);
    match m.poll_request() {
        Some(Request::Map {
            protocol: Protocol::Upnp,
            previous: Some(p),
            ..
        }) => assert_eq!(p, granted),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.status(renew).state, "renewing");
    assert!(m.external().is_some(), "still announced while renewing");
    // The router's public address changed meanwhile: the answer says so.
    m.on_mapped(renew, Ok(mapping(Protocol::Upnp, "203.0.113.5:6464", 3600)));
    assert_eq!(m.external(), Some("203.0.113.5:6464".parse().unwrap()));
}

#[test]
fn without_a_default_gateway_only_upnp_is_tried() {
    let mut m = PortMapper::new(PORT, t(0));
    start(&mut m, t(0), Err("not supported here".into()));
    assert_eq!(asked(&mut m), Protocol::Upnp);
    assert!(m.last_error().unwrap().contains("not supported here"));
}

/// Runs `m` to its next request other than a route look (answered with `r`): when, what.
fn next_request(m: &mut PortMapper, r: Route) -> (Time, Request) {
    for _ in 0..1000 {
        let next = m.poll_timeout().expect("a timeout");
        m.handle_timeout(next);
        while let Some(req) = m.poll_request() {
            match req {
                Request::FindRoute => m.on_route(next, Ok(r)),
                other => return (next, other),
            }
        }
    }
    panic!("no request");
}

#[test]
fn failed_rounds_back_off_then_give_up_until_the_network_changes() {
    let mut m = PortMapper::new(PORT, t(0));
    let mut now = t(0);
    let mut waits = Vec::new();
    start(&mut m, now, Ok(home()));
    for round in 1..=GIVE_UP_AFTER {
        if round > 1 {
            let (at, req) = next_request(&mut m, home());
            assert!(matches!(
                req,
                Request::Map {
                    protocol: Protocol::Pcp,
                    ..
                }
            ));
            waits.push(at.saturating_since(now).as_secs());
            now = at;
            m.on_mapped(now, Err("no answer".into()));
        } else {
            assert_eq!(asked(&mut m), Protocol::Pcp);
            m.on_mapped(now, Err("no answer".into()));
        }
        for _ in 0..2 {
            assert!(m.poll_request().is_some());
            m.on_mapped(now, Err("no answer".into()));
        }
        if round < GIVE_UP_AFTER {
            assert_eq!(m.status(now).state, "retrying");
        }
    }
    // 30 s, 60 s, 120 s between the four rounds
    assert_eq!(waits, vec![30, 60, 120]);
    assert_eq!(backoff(1), RETRY_FIRST);
    assert_eq!(backoff(30), RETRY_MAX);
    let s = m.status(now);
    assert_eq!(s.state, "unavailable");
    assert_eq!(s.last_error.as_deref(), Some("upnp: no answer"));
    // given up: only route looks, which find the same network
    let next = m.poll_timeout().unwrap();
    m.handle_timeout(next);
    assert_eq!(m.poll_request(), Some(Request::FindRoute));
    m.on_route(next, Ok(home()));
    assert_eq!(m.poll_request(), None);
    assert_eq!(m.status(next).state, "unavailable");
    // the host's addresses changed: the route is looked at now; a new local address
    // towards the same gateway address is another network, and a round starts
    let later = next + Duration::from_secs(5);
    m.network_changed(later);
    assert_eq!(m.poll_timeout(), Some(later));
    m.handle_timeout(later);
    assert_eq!(m.poll_request(), Some(Request::FindRoute));
    m.on_route(later, Ok(route("192.168.1.1", "192.168.1.77")));
    assert_eq!(asked(&mut m), Protocol::Pcp);
}

#[test]
fn a_failed_renewal_is_retried_and_an_expired_mapping_starts_a_new_round() {
    let mut m = PortMapper::new(PORT, t(0));
    start(&mut m, t(0), Ok(home()));
    assert_eq!(asked(&mut m), Protocol::Pcp);
    m.on_mapped(t(0), Ok(mapping(Protocol::Pcp, "198.51.100.1:6464", 120)));
    // renewal at half the lifetime, then at half the remaining time after each failure
    let mut renewals = Vec::new();
    for _ in 0..3 {
        let (at, req) = next_request(&mut m, home());
        assert!(matches!(
            req,
            Request::Map {
                protocol: Protocol::Pcp,
                previous: Some(_),
                ..
            }
        ));
        renewals.push(at.as_millis() / 1000);
        m.on_mapped(at, Err("no answer".into()));
        assert_eq!(m.external(), Some("198.51.100.1:6464".parse().unwrap()));
    }
    assert_eq!(renewals, vec![60, 90, 105]);
    assert_eq!(
        m.status(t(105)).last_error.as_deref(),
        Some("pcp renewal: no answer")
    );
    // the last retry: its answer (a failure) comes when the mapping has expired
    let (at, _) = next_request(&mut m, home());
    assert_eq!(at, t(112) + Duration::from_millis(500));
    m.on_mapped(t(120), Err("no answer".into()));
    assert_eq!(m.external(), None, "expired: no longer announced");
    assert_eq!(asked(&mut m), Protocol::Pcp, "a new round at once");
}

#[test]
fn a_new_default_gateway_drops_the_mapping_and_maps_again() {
    let mut m = PortMapper::new(PORT, t(0));
    start(&mut m, t(0), Ok(home()));
    assert_eq!(asked(&mut m), Protocol::Pcp);
    m.on_mapped(t(0), Ok(mapping(Protocol::Pcp, "198.51.100.1:6464", 7200)));
    m.handle_timeout(t(30));
    assert_eq!(m.poll_request(), Some(Request::FindRoute));
    m.on_route(t(30), Ok(route("10.0.0.1", "10.0.0.5")));
    assert_eq!(m.external(), None, "that router is behind us");
    match m.poll_request() {
        Some(Request::Map {
            protocol: Protocol::Pcp,
            route: Some(r),
            previous: None,
            ..
        }) => assert_eq!(r, route("10.0.0.1", "10.0.0.5")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_permanent_mapping_is_confirmed_every_half_hour() {
    let mut m = PortMapper::new(PORT, t(0));
    start(&mut m, t(0), Err("none".into()));
    assert_eq!(asked(&mut m), Protocol::Upnp);
    m.on_mapped(t(0), Ok(mapping(Protocol::Upnp, "198.51.100.1:6464", 0)));
    let s = m.status(t(0));
    assert_eq!(
        (s.lifetime_secs, s.next_in_secs),
        (Some(0), Some(PERMANENT_RECHECK.as_secs()))
    );
}

#[test]
fn stop_removes_the_mapping_held_and_nothing_else() {
    let mut m = PortMapper::new(PORT, t(0));
    start(&mut m, t(0), Ok(home()));
    assert_eq!(asked(&mut m), Protocol::Pcp);
    let granted = mapping(Protocol::Pcp, "198.51.100.1:6464", 7200);
    m.on_mapped(t(0), Ok(granted));
    m.stop(t(10));
    assert_eq!(m.external(), None, "no longer announced");
    assert_eq!(m.poll_request(), Some(Request::Unmap(granted)));
    assert_eq!(m.status(t(10)).state, "removing");
    // a late answer to something else changes nothing
    m.on_mapped(t(10), Ok(granted));
    assert_eq!(m.external(), None);
    m.on_unmapped(t(11), Ok(()));
    assert!(m.is_stopped());
    assert_eq!(m.poll_request(), None);
    assert_eq!(m.poll_timeout(), None);
    m.handle_timeout(t(10_000));
    assert_eq!(m.poll_request(), None);

    // stopped while searching: nothing to remove, the request out is abandoned
    let mut m = PortMapper::new(PORT, t(0));
    start(&mut m, t(0), Ok(home()));
    m.stop(t(1));
    assert_eq!(m.poll_request(), None);
    assert!(m.is_stopped());
    m.on_mapped(t(2), Ok(granted));
    assert_eq!(
        m.external(),
        None,
        "an abandoned request's answer is not taken"
    );

    // a removal that fails still stops, and says why
    let mut m = PortMapper::new(PORT, t(0));
    start(&mut m, t(0), Ok(home()));
    assert_eq!(asked(&mut m), Protocol::Pcp);
    m.on_mapped(t(0), Ok(granted));
    m.stop(t(1));
    assert!(m.poll_request().is_some());
    m.on_unmapped(t(3), Err("timed out".into()));
    assert!(m.is_stopped());
    assert_eq!(m.last_error(), Some("removal: timed out"));
}

#[test]
fn answers_nobody_asked_for_are_ignored() {
    let mut m = PortMapper::new(PORT, t(0));
    m.on_route(t(0), Ok(home()));
    m.on_mapped(t(0), Ok(mapping(Protocol::Pcp, "198.51.100.1:6464", 7200)));
    m.on_unmapped(t(0), Ok(()));
    assert_eq!(m.external(), None);
    assert!(!m.is_stopped());
    assert_eq!(m.poll_timeout(), Some(t(0)));
}

#[test]
fn a_machine_without_upnp_tries_only_what_its_shell_speaks() {
    let mut m = PortMapper::with_protocols(PORT, t(0), &[Protocol::NatPmp, Protocol::Pcp]);
    start(&mut m, t(0), Ok(home()));
    assert_eq!(asked(&mut m), Protocol::Pcp, "in the usual order");
    m.on_mapped(t(0), Err("no answer".into()));
    assert_eq!(asked(&mut m), Protocol::NatPmp);
    m.on_mapped(t(1), Err("no answer".into()));
    assert_eq!(m.poll_request(), None, "no UPnP");
    let s = m.status(t(1));
    assert_eq!((s.state.as_str(), s.next_in_secs), ("retrying", Some(30)));
    // no default gateway: nothing to try at all, the round fails at once
    let mut m = PortMapper::with_protocols(PORT, t(0), &[Protocol::Pcp, Protocol::NatPmp]);
    start(&mut m, t(0), Err("no IPv4 default route".into()));
    assert_eq!(m.poll_request(), None);
    assert_eq!(m.status(t(0)).state, "retrying");
}
