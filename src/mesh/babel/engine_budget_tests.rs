//! The engine's budgets (issue 13): routes per neighbour and in all, pending and
//! forwarded seqno requests, held retractions; what a flooding neighbour gets.

use super::*;

#[test]
fn a_flood_of_new_routes_stops_at_the_neighbours_budget() {
    let (mut e, a, b, p) = setup();
    let cap = Config::default().max_routes_per_neighbour;
    let rid_b = RouterId([0, 0, 0, 0, 0, 0, 0, 0xb]);
    let pa: Prefix = "2001:db8:a::/48".parse().unwrap();
    let pb: Prefix = "2001:db8:b::/48".parse().unwrap();
    update(&mut e, a, pa, 10, 100);
    update(&mut e, b, p, 10, 100);
    receive(
        &mut e,
        Time::from_millis(10),
        b,
        &[update_msg(pb, rid_b, 3, 50)],
    );
    drain(&mut e);
    let honest = selected(&e);
    assert_eq!(honest.len(), 3);
    let from_b: Vec<RouteInfo> = e
        .routes()
        .into_iter()
        .filter(|r| r.next_hop == Some(b.addr))
        .collect();

    // A floods a million distinct /128s, 10,000 per burst, each burst its own packets.
    const FLOOD: u32 = 1_000_000;
    let t = Time::from_millis(20);
    for chunk in 0..FLOOD / 10_000 {
        let msgs: Vec<Msg> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| update_msg(flood_prefix(i), RID_X, 1, 10))
            .collect();
        receive(&mut e, t, a, &msgs);
    }
    let accepted = cap - 1; // A's honest route already held one place
    assert_eq!(e.budget.routes_from(a), cap);
    assert_eq!(
        e.routes()
            .iter()
            .filter(|r| r.next_hop == Some(a.addr))
            .count(),
        cap
    );
    assert_eq!(
        e.budget_counters().routes_over_budget,
        u64::from(FLOOD) - accepted as u64
    );
    assert_eq!(e.budget_counters().routes_total_over_budget, 0);
    assert_eq!(e.route_count(), cap + from_b.len());
    // The honest routes are untouched: B's entries, and every honest selection.
    let now_from_b: Vec<RouteInfo> = e
        .routes()
        .into_iter()
        .filter(|r| r.next_hop == Some(b.addr))
        .collect();
    assert_eq!(now_from_b, from_b);
    for r in &honest {
        assert_eq!(e.selected_route(r.prefix), Some(r));
    }
    // B, below its budget, still gets new routes in.
    let pc: Prefix = "2001:db8:c::/48".parse().unwrap();
    receive(
        &mut e,
        Time::from_millis(30),
        b,
        &[update_msg(pc, rid_b, 3, 50)],
    );
    assert_eq!(
        e.selected_route(pc).map(|r| r.next_hop),
        Some(b.addr),
        "B is not punished for A's flood"
    );
    // The counts follow the table through expiry too.
    e.handle_timeout(Time::from_millis(30));
    assert_eq!(
        e.route_count(),
        e.routes().iter().filter(|r| !r.local).count()
    );
}

#[test]
fn a_neighbour_at_its_budget_can_still_refresh_and_retract() {
    let (mut e, a, b, _) = setup_cfg(Config {
        max_routes_per_neighbour: 8,
        ..Config::default()
    });
    let t = Time::from_millis(10);
    let first: Vec<Msg> = (0..8)
        .map(|i| update_msg(flood_prefix(i), RID_X, 1, 10))
        .collect();
    receive(&mut e, t, a, &first);
    assert_eq!(e.budget.routes_from(a), 8);
    receive(&mut e, t, a, &[update_msg(flood_prefix(8), RID_X, 1, 10)]);
    assert_eq!(e.selected_route(flood_prefix(8)), None, "over the budget");
    assert_eq!(e.budget_counters().routes_over_budget, 1);

    // A refresh with a new seqno and metric is taken.
    receive(
        &mut e,
        Time::from_millis(20),
        a,
        &[update_msg(flood_prefix(0), RID_X, 2, 40)],
    );
    assert_eq!(
        e.selected_route(flood_prefix(0)).map(|r| r.metric),
        Some(136)
    );
    // A retraction is taken: the route is lost and retracted.
    drain(&mut e);
    receive(
        &mut e,
        Time::from_millis(30),
        a,
        &[update_msg(flood_prefix(1), RID_X, 1, INFINITY)],
    );
    assert_eq!(e.selected_route(flood_prefix(1)), None);
    assert!(drain(&mut e).iter().any(|(_, m)| matches!(
        m,
        Msg::Update { prefix, metric: INFINITY, .. } if *prefix == flood_prefix(1)
    )));
    // A wildcard retraction too.
    receive(
        &mut e,
        Time::from_millis(40),
        a,
        &[Msg::WildcardRetraction { interval_cs: 1600 }],
    );
    assert!(
        (0..8).all(|i| e.selected_route(flood_prefix(i)).is_none()),
        "every route of A retracted"
    );
    assert_eq!(e.budget_counters().routes_over_budget, 1, "nothing refused");
    // Retracted routes keep their places until they expire (2 intervals); then A may
    // announce new prefixes again.
    e.handle_timeout(Time::from_millis(40) + Duration::from_secs(33));
    assert_eq!(e.budget.routes_from(a), 0);
    receive(
        &mut e,
        Time::from_millis(34_000),
        a,
        &[update_msg(flood_prefix(8), RID_X, 1, 10)],
    );
    let held = |e: &Engine, p: Prefix, n: NeighbourId| {
        e.routes()
            .iter()
            .any(|r| r.prefix == p && r.next_hop == Some(n.addr))
    };
    assert!(held(&e, flood_prefix(8), a));
    // B was never limited.
    receive(
        &mut e,
        Time::from_millis(34_000),
        b,
        &[update_msg(flood_prefix(100), RID_X, 1, 10)],
    );
    assert!(held(&e, flood_prefix(100), b));
}

#[test]
fn the_total_route_budget_caps_all_neighbours_together() {
    let (mut e, a, b, _) = setup_cfg(Config {
        max_routes_per_neighbour: 8,
        max_routes: 10,
        ..Config::default()
    });
    let t = Time::from_millis(10);
    let msgs = |from: u32| -> Vec<Msg> {
        (from..from + 8)
            .map(|i| update_msg(flood_prefix(i), RID_X, 1, 10))
            .collect()
    };
    receive(&mut e, t, a, &msgs(0));
    receive(&mut e, t, b, &msgs(100));
    assert_eq!(e.route_count(), 10);
    assert_eq!(e.budget.routes_from(b), 2);
    let c = e.budget_counters();
    assert_eq!((c.routes_over_budget, c.routes_total_over_budget), (0, 6));
    // Refreshes are still taken at the total cap.
    receive(&mut e, t, b, &[update_msg(flood_prefix(100), RID_X, 2, 10)]);
    assert_eq!(e.budget_counters().routes_total_over_budget, 6);
    assert_eq!(info(&e, b, flood_prefix(100)).seqno, Seqno(2));
}

#[test]
fn a_full_source_table_announces_retractions_not_unrecorded_routes() {
    let (mut e, a, _, _) = setup_cfg(Config {
        max_sources: 4,
        ..Config::default()
    });
    let own: Prefix = "2001:db8:99::/48".parse().unwrap();
    e.originate(Time::from_millis(5), own);
    let t = Time::from_millis(10);
    let msgs: Vec<Msg> = (0..8)
        .map(|i| update_msg(flood_prefix(i), RID_X, 1, 10))
        .collect();
    receive(&mut e, t, a, &msgs);
    assert_eq!(selected(&e).len(), 8, "all selected and installed");
    let t2 = t + Config::default().batch;
    e.handle_timeout(t2);
    let sent = drain(&mut e);
    let finite = |p: Prefix| {
        sent.iter().any(|(_, m)| {
            matches!(m, Msg::Update { prefix, metric, .. } if *prefix == p && *metric < INFINITY)
        })
    };
    let announced = (0..8).filter(|i| finite(flood_prefix(*i))).count();
    assert_eq!(
        announced, 3,
        "the source table's 4 places: our own prefix, then 3 routes"
    );
    assert!(finite(own), "our own prefixes are always announced");
    assert_eq!(e.budget_counters().sources_over_budget, 5);
    assert_eq!(e.sources.len(), 4);
}

#[test]
fn a_seqno_request_flood_is_rate_limited_and_pending_requests_bounded() {
    let (mut e, a, b, _) = setup();
    let c = lan_neighbour(&mut e, a.iface, "fe80::c");
    let cfg = Config::default();
    // A announces 600 prefixes, selected through it.
    let t = Time::from_millis(10);
    let msgs: Vec<Msg> = (0..600)
        .map(|i| update_msg(flood_prefix(i), RID_X, 10, 10))
        .collect();
    receive(&mut e, t, a, &msgs);
    e.handle_timeout(t + cfg.batch);
    drain(&mut e);
    let req = |i: u32| Msg::SeqnoRequest {
        prefix: flood_prefix(i % 600),
        seqno: Seqno(11),
        hop_count: 10,
        router_id: RID_X,
    };
    let forwarded = |sent: &[(IpAddr, Msg)]| {
        sent.iter()
            .filter(|(d, m)| *d == a.addr && matches!(m, Msg::SeqnoRequest { .. }))
            .count()
    };
    // B sends 100,000 requests at once, each for a newer seqno than A's: all would be
    // forwarded to A without the budgets.
    let t = Time::from_millis(100);
    let flood: Vec<Msg> = (0..100_000).map(req).collect();
    receive(&mut e, t, b, &flood);
    let burst = cfg.request_burst as usize;
    let per_nb = cfg.max_requests_per_neighbour;
    assert_eq!(forwarded(&drain(&mut e)), per_nb);
    let k = e.budget_counters();
    assert_eq!(k.requests_rate_limited, 100_000 - burst as u64);
    assert_eq!(k.requests_over_neighbour_budget, (burst - per_nb) as u64);
    // C, an honest neighbour, still gets its (other) requests through.
    receive(&mut e, t, c, &[req(500)]);
    assert_eq!(forwarded(&drain(&mut e)), 1);
    // Over ten seconds B keeps flooding: at most its rate gets through the bucket, and
    // no more than its pending share is ever forwarded at once.
    let mut total_forwarded = 0;
    for step in 1..=100u64 {
        let now = t + Duration::from_millis(100 * step);
        e.handle_timeout(now);
        let resent = drain(&mut e);
        total_forwarded += forwarded(&resent);
        let batch: Vec<Msg> = (0..1000).map(|i| req(i + step as u32)).collect();
        receive(&mut e, now, b, &batch);
        total_forwarded += forwarded(&drain(&mut e));
        let pending_b = e
            .requests
            .values()
            .filter(|r| r.requester == Some(b))
            .count();
        assert!(pending_b <= per_nb, "{pending_b} pending for B");
    }
    let admitted =
        100 * 1000 - (e.budget_counters().requests_rate_limited - k.requests_rate_limited);
    assert!(
        admitted <= u64::from(cfg.request_rate) * 10 + 1,
        "{admitted} admitted in 10 s"
    );
    // New forwards plus their two resends each: bounded by the admitted requests.
    assert!(
        total_forwarded as u64 <= 3 * (admitted + per_nb as u64),
        "{total_forwarded} forwarded"
    );
}

#[test]
fn the_pending_request_budget_caps_all_neighbours_together() {
    let (mut e, a, b, _) = setup_cfg(Config {
        max_requests: 100,
        ..Config::default()
    });
    let c = lan_neighbour(&mut e, a.iface, "fe80::c");
    let t = Time::from_millis(10);
    let msgs: Vec<Msg> = (0..200)
        .map(|i| update_msg(flood_prefix(i), RID_X, 10, 10))
        .collect();
    receive(&mut e, t, a, &msgs);
    drain(&mut e);
    let req = |i: u32| Msg::SeqnoRequest {
        prefix: flood_prefix(i),
        seqno: Seqno(11),
        hop_count: 10,
        router_id: RID_X,
    };
    let t = Time::from_millis(20);
    receive(&mut e, t, b, &(0..64).map(req).collect::<Vec<_>>());
    receive(&mut e, t, c, &(64..128).map(req).collect::<Vec<_>>());
    assert_eq!(e.requests.len(), 100);
    let k = e.budget_counters();
    assert_eq!(
        (k.requests_over_budget, k.requests_over_neighbour_budget),
        (28, 0)
    );
}

#[test]
fn request_driven_seqno_bumps_are_rate_limited() {
    let (mut e, _, b, _) = setup();
    let own: Prefix = "2001:db8:99::/48".parse().unwrap();
    e.originate(Time::from_millis(5), own);
    drain(&mut e);
    let me = e.router_id();
    let start = e.seqno();
    // B asks for our seqno + 1, a hundred times in a row, each time one more.
    let t = Time::from_millis(10);
    for _ in 0..100 {
        let want = e.seqno().next();
        receive(
            &mut e,
            t,
            b,
            &[Msg::SeqnoRequest {
                prefix: own,
                seqno: want,
                hop_count: 10,
                router_id: me,
            }],
        );
    }
    assert_eq!(e.seqno(), start.next(), "one bump");
    assert_eq!(e.budget_counters().seqno_bumps_limited, 99);
    // Updates echoing our router-id with a newer seqno share the same limit.
    let newer = e.seqno().next().0;
    receive(&mut e, t, b, &[update_msg(own, me, newer, 10)]);
    assert_eq!(e.seqno(), start.next());
    assert_eq!(e.budget_counters().seqno_bumps_limited, 100);
    // A second later a bump is allowed again.
    let t = t + Config::default().seqno_bump_interval;
    let want = e.seqno().next();
    receive(
        &mut e,
        t,
        b,
        &[Msg::SeqnoRequest {
            prefix: own,
            seqno: want,
            hop_count: 10,
            router_id: me,
        }],
    );
    assert_eq!(e.seqno(), want);
}

#[test]
fn held_retractions_are_capped_by_the_route_budget() {
    let (mut e, a, _, _) = setup_cfg(Config {
        max_routes: 4,
        ..Config::default()
    });
    // A announces and retracts five prefixes in turn, with a short interval so that each
    // retracted route leaves the table before the next: the retractions we repeat (held
    // 3 update intervals) would outgrow the table.
    let mut t = Time::from_millis(10);
    for i in 0..5 {
        let short = |metric| Msg::Update {
            prefix: flood_prefix(i),
            router_id: RID_X,
            seqno: Seqno(1),
            metric,
            interval_cs: 10,
            next_hop: None,
            signature: None,
        };
        receive(&mut e, t, a, &[short(10)]);
        assert!(e.selected_route(flood_prefix(i)).is_some());
        receive(&mut e, t, a, &[short(INFINITY)]);
        let sent = drain(&mut e);
        assert!(
            sent.iter().any(|(_, m)| matches!(
                m,
                Msg::Update { prefix, metric: INFINITY, .. } if *prefix == flood_prefix(i)
            )),
            "every loss is retracted at once"
        );
        t = t + Duration::from_millis(300);
        e.handle_timeout(t);
        assert_eq!(e.route_count(), 0);
    }
    assert_eq!(e.retracting.len(), 4);
    assert_eq!(e.budget_counters().retractions_over_budget, 1);
}
