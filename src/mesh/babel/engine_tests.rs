//! Unit tests of the engine (two or three nodes; whole topologies live in
//! `mesh::sim_tests`).

use super::*;

use crate::mesh::babel::MacKey;

const RID_X: RouterId = RouterId([0, 0, 0, 0, 0, 0, 0, 0x42]);

fn setup() -> (Engine, NeighbourId, NeighbourId, Prefix) {
    setup_with(|_| {})
}

/// `setup` with the LAN's configuration adjusted by `f`.
fn setup_with(f: impl FnOnce(&mut IfaceConfig)) -> (Engine, NeighbourId, NeighbourId, Prefix) {
    setup_full(Config::default(), f)
}

/// `setup` with engine configuration `cfg` and the LAN's adjusted by `f`.
fn setup_full(
    cfg_engine: Config,
    f: impl FnOnce(&mut IfaceConfig),
) -> (Engine, NeighbourId, NeighbourId, Prefix) {
    let mut e = Engine::new(cfg_engine, [0, 0, 0, 0, 0, 0, 0, 9], [1; 32], Time::ZERO);
    let me: Ipv6Addr = "fe80::9".parse().unwrap();
    let mut cfg = IfaceConfig::lan("eth0", me);
    f(&mut cfg);
    let iface = e.add_interface(Time::ZERO, cfg);
    let mut ns = Vec::new();
    for a in ["fe80::a", "fe80::b"] {
        let nid = NeighbourId {
            iface,
            addr: a.parse().unwrap(),
        };
        let hello = Msg::Hello {
            unicast: false,
            seqno: Seqno(1),
            interval_cs: 400,
            timestamp: None,
        };
        let ihu = Msg::Ihu {
            rxcost: 96,
            interval_cs: 400,
            addr: Some(IpAddr::V6(me)),
            timestamp: None,
        };
        e.handle_messages(Time::ZERO, nid, true, vec![hello, ihu]);
        ns.push(nid);
    }
    drain(&mut e);
    (e, ns[0], ns[1], "2001:db8:42::/48".parse().unwrap())
}

fn update(e: &mut Engine, from: NeighbourId, prefix: Prefix, seqno: u16, metric: u16) {
    let m = Msg::Update {
        prefix,
        router_id: RID_X,
        seqno: Seqno(seqno),
        metric,
        interval_cs: 1600,
        next_hop: None,
        signature: None,
    };
    e.handle_messages(Time::from_millis(10), from, true, vec![m]);
    e.flush(Time::from_millis(10));
}

fn drain(e: &mut Engine) -> Vec<(IpAddr, Msg)> {
    let mut out = Vec::new();
    while let Some(t) = e.poll_transmit(Time::ZERO) {
        let d = codec::decode(&t.bytes, t.src.ip()).expect("own packets decode");
        out.extend(d.msgs.into_iter().map(|m| (t.dst.ip(), m)));
    }
    out
}

fn info(e: &Engine, nid: NeighbourId, p: Prefix) -> RouteInfo {
    e.routes()
        .into_iter()
        .find(|r| r.prefix == p && r.next_hop == Some(nid.addr))
        .expect("route present")
}

#[test]
fn feasibility_rejects_unfeasible_updates_and_keeps_the_selected_route() {
    let (mut e, a, b, p) = setup();
    update(&mut e, a, p, 10, 100);
    assert_eq!(
        e.selected_route(p).map(|r| (r.next_hop, r.metric)),
        Some((a.addr, 196))
    );
    drain(&mut e); // the triggered update set the feasibility distance to (10, 196)

    update(&mut e, b, p, 10, 300);
    let rb = info(&e, b, p);
    assert!(
        !rb.feasible && !rb.selected,
        "metric 300 >= FD 196 with the same seqno"
    );

    update(&mut e, b, p, 10, 150);
    let rb = info(&e, b, p);
    assert!(
        rb.feasible && !rb.selected,
        "feasible but worse (246 > 196)"
    );

    update(&mut e, a, p, 10, INFINITY); // A retracts
    assert_eq!(
        e.selected_route(p).map(|r| (r.next_hop, r.metric)),
        Some((b.addr, 246))
    );
    drain(&mut e);

    // An unfeasible update for the selected route from the same source is ignored
    // (the route keeps its old, feasible metric) and triggers a seqno request.
    update(&mut e, b, p, 10, 250);
    assert_eq!(e.selected_route(p).map(|r| r.metric), Some(246));
    let sent = drain(&mut e);
    assert!(
        sent.iter().any(|(dst, m)| *dst == b.addr
            && matches!(m, Msg::SeqnoRequest { seqno: Seqno(11), router_id, .. } if *router_id == RID_X)),
        "unicast seqno request for 11 to B: {sent:?}"
    );
    // A newer seqno is always feasible.
    update(&mut e, b, p, 11, 250);
    assert_eq!(e.selected_route(p).map(|r| r.metric), Some(346));
    let changes: Vec<RouteChange> = std::iter::from_fn(|| e.poll_route_change()).collect();
    assert!(matches!(changes.last(), Some(RouteChange::Changed(r)) if r.metric == 346));
}

#[test]
fn starvation_sends_a_seqno_request_and_a_retraction() {
    let (mut e, a, b, p) = setup();
    update(&mut e, a, p, 10, 100);
    drain(&mut e); // FD (10, 196)
    update(&mut e, b, p, 10, 400); // unfeasible alternative
    update(&mut e, a, p, 10, INFINITY);
    assert_eq!(e.selected_route(p), None);
    let sent = drain(&mut e);
    assert!(
        sent.iter().any(
            |(_, m)| matches!(m, Msg::Update { metric: INFINITY, prefix, .. } if *prefix == p)
        )
    );
    assert!(sent.iter().any(|(dst, m)| *dst == b.addr
        && matches!(
            m,
            Msg::SeqnoRequest {
                seqno: Seqno(11),
                ..
            }
        )));
    // Duplicate suppression: a second loss event does not resend at once.
    update(&mut e, b, p, 10, 401);
    assert!(
        !drain(&mut e)
            .iter()
            .any(|(_, m)| matches!(m, Msg::SeqnoRequest { .. }))
    );
}

#[test]
fn seqno_requests_are_answered_or_forwarded_once() {
    let (mut e, a, b, p) = setup();
    update(&mut e, a, p, 10, 100);
    drain(&mut e);
    let req = |s: u16, hops: u8| Msg::SeqnoRequest {
        prefix: p,
        seqno: Seqno(s),
        hop_count: hops,
        router_id: RID_X,
    };
    // Satisfiable locally: answered with an update to the requester.
    e.handle_messages(Time::from_millis(20), b, false, vec![req(10, 5)]);
    e.flush(Time::from_millis(20));
    let sent = drain(&mut e);
    assert!(sent.iter().any(|(d, m)| *d == b.addr
        && matches!(
            m,
            Msg::Update {
                seqno: Seqno(10),
                ..
            }
        )));
    // Newer than ours: forwarded to the next hop with one hop less, once.
    e.handle_messages(Time::from_millis(30), b, false, vec![req(11, 5)]);
    e.handle_messages(Time::from_millis(31), b, false, vec![req(11, 5)]);
    e.flush(Time::from_millis(31));
    let fwd: Vec<_> = drain(&mut e)
        .into_iter()
        .filter(|(d, m)| *d == a.addr && matches!(m, Msg::SeqnoRequest { hop_count: 4, .. }))
        .collect();
    assert_eq!(fwd.len(), 1, "forwarded once (duplicate suppression)");
    // Hop count exhausted: dropped.
    e.handle_messages(Time::from_millis(40), b, false, vec![req(12, 1)]);
    e.flush(Time::from_millis(40));
    assert!(
        !drain(&mut e)
            .iter()
            .any(|(_, m)| matches!(m, Msg::SeqnoRequest { .. }))
    );
}

#[test]
fn own_router_id_echo_bumps_our_seqno() {
    let (mut e, a, _, _) = setup();
    let mine: Prefix = "2001:db8:9::/48".parse().unwrap();
    e.originate(Time::ZERO, mine);
    let s = e.seqno();
    let m = Msg::Update {
        prefix: mine,
        router_id: e.router_id(),
        seqno: Seqno(s.0.wrapping_add(5)),
        metric: 96,
        interval_cs: 1600,
        next_hop: None,
        signature: None,
    };
    e.handle_messages(Time::ZERO, a, true, vec![m]);
    assert_eq!(
        e.seqno(),
        Seqno(s.0.wrapping_add(6)),
        "announcements from a previous life lose"
    );
    assert!(e.routes().iter().all(|r| r.local || r.prefix != mine));
}

#[test]
fn asks_for_a_selected_route_shortly_before_it_expires() {
    let (mut e, a, _, p) = setup();
    update(&mut e, a, p, 10, 100); // at 10 ms, interval 16 s: expires at 56.01 s
    drain(&mut e);
    // Keep the neighbour alive meanwhile (Hellos and IHUs), but no new update.
    let mut t = Time::from_millis(10);
    let mut asked_at = None;
    let mut seq = 2;
    while t < Time::from_millis(60_000) && asked_at.is_none() {
        t = e
            .poll_timeout()
            .unwrap_or(t)
            .min(t + Duration::from_secs(4));
        let hello = Msg::Hello {
            unicast: false,
            seqno: Seqno(seq),
            interval_cs: 400,
            timestamp: None,
        };
        let ihu = Msg::Ihu {
            rxcost: 96,
            interval_cs: 400,
            addr: Some("fe80::9".parse().unwrap()),
            timestamp: None,
        };
        seq += 1;
        e.handle_messages(t, a, true, vec![hello, ihu]);
        e.handle_timeout(t);
        if drain(&mut e)
            .iter()
            .any(|(d, m)| *d == a.addr && *m == Msg::RouteRequest { prefix: Some(p) })
        {
            asked_at = Some(t);
        }
    }
    let at = asked_at.expect("a unicast Route Request before expiry");
    assert!(
        at >= Time::from_millis(48_000) && at < Time::from_millis(56_010),
        "asked at {at}"
    );
    assert!(e.selected_route(p).is_some(), "still selected when asking");
}

#[test]
fn answers_ack_requests_unicast() {
    let (mut e, a, _, _) = setup();
    e.handle_messages(
        Time::ZERO,
        a,
        true,
        vec![Msg::AckRequest {
            opaque: 0x1234,
            interval_cs: 50,
        }],
    );
    e.flush(Time::ZERO);
    let sent = drain(&mut e);
    assert!(
        sent.iter()
            .any(|(d, m)| *d == a.addr && *m == Msg::Ack { opaque: 0x1234 })
    );
}

/// Packets sent, each as (destination, messages).
fn drain_packets(e: &mut Engine) -> Vec<(IpAddr, Vec<Msg>)> {
    std::iter::from_fn(|| e.poll_transmit(Time::ZERO))
        .map(|t| {
            let d = codec::decode(&t.bytes, t.src.ip()).expect("own packets decode");
            (t.dst.ip(), d.msgs)
        })
        .collect()
}

fn hello_msg(seqno: u16, unicast: bool) -> Msg {
    Msg::Hello {
        unicast,
        seqno: Seqno(seqno),
        interval_cs: 400,
        timestamp: None,
    }
}

fn ihu_for_me() -> Msg {
    Msg::Ihu {
        rxcost: 96,
        interval_cs: 400,
        addr: Some("fe80::9".parse().unwrap()),
        timestamp: None,
    }
}

fn neighbour(e: &Engine, nid: NeighbourId) -> NeighbourInfo {
    e.neighbours()
        .into_iter()
        .find(|n| n.id == nid)
        .expect("neighbour known")
}

// ------------------------------------------------------------ unicast Hellos

#[test]
fn unicast_hellos_keep_their_own_history() {
    // RFC 8966 3.4.1 / A.1: unicast Hellos have their own seqno space. Mixed into the
    // multicast history, every unicast Hello would look like a restart and reset it.
    let (mut e, a, _, _) = setup(); // a: multicast Hello 1 at 0 s
    for s in 2..=4u16 {
        let t = Time::from_millis(u64::from(s) * 100);
        e.handle_messages(t, a, true, vec![hello_msg(s, false)]);
        e.handle_messages(t, a, false, vec![hello_msg(900 + s, true)]);
    }
    let n = e.neighbours.get(&a).expect("a");
    assert_eq!(
        (n.hello.history.bits(), n.hello.history.valid()),
        (0b1111, 4)
    );
    assert_eq!(
        (n.uhello.history.bits(), n.uhello.history.valid()),
        (0b111, 3)
    );
    assert_eq!(
        neighbour(&e, a).reach,
        0b1111,
        "the cost uses the multicast one"
    );
    assert_eq!(neighbour(&e, a).cost, 96);
}

#[test]
fn a_neighbour_heard_only_through_unicast_hellos_is_usable_and_times_out() {
    let (mut e, _, _, _) = setup();
    let iface = e.ifaces.keys().next().copied().expect("iface");
    let c = NeighbourId {
        iface,
        addr: "fe80::c".parse().unwrap(),
    };
    e.handle_messages(
        Time::ZERO,
        c,
        false,
        vec![hello_msg(700, true), ihu_for_me()],
    );
    assert_eq!(
        neighbour(&e, c).cost,
        96,
        "only unicast Hellos: their history"
    );
    assert_eq!(neighbour(&e, c).reach, 1);
    // The unicast Hellos stop (IHUs keep coming): the unicast stream's own deadline
    // (1.5 intervals, then one per interval) counts them missed.
    for ms in [4_000, 6_000, 8_000, 10_000] {
        let t = Time::from_millis(ms);
        e.handle_messages(t, c, false, vec![ihu_for_me()]);
        e.handle_timeout(t);
    }
    assert_eq!(neighbour(&e, c).reach, 0b100);
    assert_eq!(
        neighbour(&e, c).cost,
        INFINITY,
        "two of the last three missed"
    );
    // A multicast Hello arrives: from now on the multicast history rules (A.1).
    let t = Time::from_millis(10_500);
    e.handle_messages(t, c, true, vec![hello_msg(3, false), ihu_for_me()]);
    assert_eq!(neighbour(&e, c).reach, 1);
    assert_eq!(neighbour(&e, c).cost, 96);
}

#[test]
fn tunnels_send_multicast_style_hellos_that_the_peer_counts() {
    // A tunnel is point-to-point: our scheduled Hellos go to the peer's address with
    // the U flag clear, and the peer files them in its multicast history.
    let t0 = Time::ZERO;
    let (la, lb): (Ipv6Addr, Ipv6Addr) = ("fd00::a".parse().unwrap(), "fd00::b".parse().unwrap());
    let mut a = Engine::new(Config::default(), [0, 0, 0, 0, 0, 0, 0, 0xa], [1; 32], t0);
    let mut b = Engine::new(Config::default(), [0, 0, 0, 0, 0, 0, 0, 0xb], [2; 32], t0);
    let ia = a.add_interface(t0, IfaceConfig::tunnel("t", la, lb));
    let ib = b.add_interface(t0, IfaceConfig::tunnel("t", lb, la));
    let mut t = t0;
    for _ in 0..4 {
        a.handle_timeout(t);
        while let Some(tx) = a.poll_transmit(t) {
            let d = codec::decode(&tx.bytes, tx.src.ip()).expect("decodes");
            for m in &d.msgs {
                if let Msg::Hello { unicast, .. } = m {
                    assert!(!unicast, "U flag clear on tunnels");
                }
            }
            b.handle_packet(t, ib, tx.src, tx.dst, &tx.bytes);
        }
        t = t + Duration::from_secs(4);
    }
    let _ = ia;
    let nid = NeighbourId {
        iface: ib,
        addr: IpAddr::V6(la),
    };
    let n = b.neighbours.get(&nid).expect("peer");
    assert_eq!(n.hello.history.bits() & 0b1111, 0b1111);
    assert_eq!(n.uhello.history.valid(), 0);
    assert_eq!(neighbour(&b, nid).cost, 96);
}

// ------------------------------------------------------------ RFC 9616 timestamps

#[test]
fn rtt_sample_follows_rfc_9616_with_wrap_around() {
    // Our Hello left at 1 000 µs, reached the peer at 50 000 (its clock); its Hello
    // left at 80 000 and reached us at 61 000: RTT = 60 000 − 30 000 = 30 ms.
    assert_eq!(
        rtt_sample(1_000, 50_000, 80_000, 61_000),
        Some(Duration::from_millis(30))
    );
    // The same across the 2³² µs wrap of both clocks.
    let w = u32::MAX - 500;
    assert_eq!(
        rtt_sample(
            w,
            w.wrapping_add(7_000),
            w.wrapping_add(9_000),
            w.wrapping_add(12_000)
        ),
        Some(Duration::from_millis(10))
    );
    // Clock skew never gives a negative RTT; stale echoes are discarded.
    assert_eq!(rtt_sample(0, 0, 5_000, 1_000), Some(Duration::ZERO));
    assert_eq!(rtt_sample(0, 0, 0, RTT_SAMPLE_WINDOW_US), None);
    assert_eq!(rtt_sample(0, 0, RTT_SAMPLE_WINDOW_US, 1), None);
}

#[test]
fn timestamps_are_sent_echoed_and_measured_only_when_configured() {
    let (mut e, a, _, _) = setup_with(|c| c.timestamps = true);
    // a's Hello with its transmit time 7 000 µs reaches us at 1 s.
    let t1 = Time::from_millis(1_000);
    let h = Msg::Hello {
        unicast: false,
        seqno: Seqno(2),
        interval_cs: 400,
        timestamp: Some(7_000),
    };
    e.handle_messages(t1, a, true, vec![h]);
    // Our next Hello carries our time, our IHU to a echoes (7 000, our receive time).
    e.handle_timeout(Time::from_millis(4_000));
    let sent = drain(&mut e);
    assert!(sent.iter().any(|(_, m)| matches!(
        m,
        Msg::Hello {
            timestamp: Some(4_000_000),
            ..
        }
    )));
    assert!(sent.iter().any(|(_, m)| matches!(
        m,
        Msg::Ihu { addr: Some(x), timestamp: Some((7_000, 1_000_000)), .. } if *x == a.addr
    )));
    // a answers: its IHU echoes our 4 s Hello (received at its 10 000 µs), its Hello
    // left at its 40 000 µs, the packet reaches us at 4.05 s: RTT = 50 − 30 = 20 ms.
    let t2 = Time::from_millis(4_050);
    let h = Msg::Hello {
        unicast: false,
        seqno: Seqno(3),
        interval_cs: 400,
        timestamp: Some(40_000),
    };
    let ihu = Msg::Ihu {
        rxcost: 96,
        interval_cs: 400,
        addr: Some("fe80::9".parse().unwrap()),
        timestamp: Some((4_000_000, 10_000)),
    };
    e.handle_messages(t2, a, true, vec![h, ihu]);
    let n = neighbour(&e, a);
    assert_eq!(n.measured_rtt, Some(Duration::from_millis(20)));
    assert_eq!(n.rtt, None, "the host-supplied RTT is separate");
    // 20 ms: penalty 150 × (20 − 10) / (120 − 10) = 13.
    assert_eq!(n.cost, 96 + 13);
    // A second sample of 130 ms is smoothed: (42 × 130 + 214 × 20) / 256 = 38.04 ms.
    let t3 = Time::from_millis(8_130);
    let h = Msg::Hello {
        unicast: false,
        seqno: Seqno(4),
        interval_cs: 400,
        timestamp: Some(50_000),
    };
    let ihu = Msg::Ihu {
        rxcost: 96,
        interval_cs: 400,
        addr: Some("fe80::9".parse().unwrap()),
        timestamp: Some((8_000_000, 50_000)),
    };
    e.handle_messages(t3, a, true, vec![h, ihu]);
    let rtt = neighbour(&e, a).measured_rtt.expect("measured");
    assert_eq!(rtt.as_micros(), (42 * 130_000 + 214 * 20_000) / 256);
    // The host's RTT, when given, wins (unchanged set_rtt semantics).
    e.set_rtt(t3, a, Duration::from_millis(5))
        .expect("neighbour");
    assert_eq!(neighbour(&e, a).cost, 96);

    // Without the option: no Timestamp sub-TLVs out, and none used in.
    let (mut e, a, _, _) = setup();
    e.handle_timeout(Time::from_millis(4_000));
    assert!(drain(&mut e).iter().all(|(_, m)| !matches!(
        m,
        Msg::Hello {
            timestamp: Some(_),
            ..
        } | Msg::Ihu {
            timestamp: Some(_),
            ..
        }
    )));
    let h = Msg::Hello {
        unicast: false,
        seqno: Seqno(2),
        interval_cs: 400,
        timestamp: Some(40_000),
    };
    let ihu = Msg::Ihu {
        rxcost: 96,
        interval_cs: 400,
        addr: Some("fe80::9".parse().unwrap()),
        timestamp: Some((4_000_000, 10_000)),
    };
    e.handle_messages(Time::from_millis(4_050), a, true, vec![h, ihu]);
    assert_eq!(neighbour(&e, a).measured_rtt, None);
    assert_eq!(neighbour(&e, a).cost, 96);
}

#[test]
fn a_measured_rtt_is_forgotten_three_minutes_after_its_last_sample() {
    let (mut e, a, _, _) = setup_with(|c| c.timestamps = true);
    let t = Time::from_millis(4_050);
    let h = Msg::Hello {
        unicast: false,
        seqno: Seqno(2),
        interval_cs: 400,
        timestamp: Some(40_000),
    };
    let ihu = Msg::Ihu {
        rxcost: 96,
        interval_cs: 400,
        addr: Some("fe80::9".parse().unwrap()),
        timestamp: Some((4_000_000, 10_000)),
    };
    e.handle_messages(t, a, true, vec![h, ihu]);
    assert_eq!(neighbour(&e, a).cost, 96 + 13);
    // The neighbour stays (Hellos and IHUs without timestamps), samples stop.
    let mut seq = 3;
    let mut now = t;
    while now < Time::from_millis(4_050 + 180_000) {
        now = now + Duration::from_secs(4);
        e.handle_messages(now, a, true, vec![hello_msg(seq, false), ihu_for_me()]);
        e.handle_timeout(now);
        seq += 1;
        if now < Time::from_millis(4_050 + 176_000) {
            assert_eq!(neighbour(&e, a).cost, 96 + 13, "at {now}");
        }
    }
    e.handle_timeout(now);
    assert_eq!(neighbour(&e, a).measured_rtt, None);
    assert_eq!(neighbour(&e, a).cost, 96);
}

// ------------------------------------------------------------ Acknowledgments

fn ack_requests(pkts: &[(IpAddr, Vec<Msg>)], dst: IpAddr, p: Prefix) -> Vec<u16> {
    pkts.iter()
        .filter(|(d, ms)| {
            *d == dst
                && ms.iter().any(
                    |m| matches!(m, Msg::Update { prefix, metric: INFINITY, .. } if *prefix == p),
                )
        })
        .filter_map(|(_, ms)| {
            ms.iter().find_map(|m| match m {
                Msg::AckRequest {
                    opaque,
                    interval_cs: 50,
                } => Some(*opaque),
                _ => None,
            })
        })
        .collect()
}

#[test]
fn urgent_retraction_is_resent_until_acknowledged_then_given_up() {
    let (mut e, a, b, p) = setup_with(|c| c.acks = true);
    update(&mut e, a, p, 10, 100);
    drain(&mut e);
    update(&mut e, a, p, 10, INFINITY); // lost: urgent retraction at 10 ms
    let mcast = IpAddr::V6(BABEL_MULTICAST);
    let first = ack_requests(&drain_packets(&mut e), mcast, p);
    assert_eq!(
        first.len(),
        1,
        "one multicast retraction with an Ack Request"
    );
    assert_eq!(e.pending_acks(), 2, "both neighbours must acknowledge");
    // b acknowledges; a stays silent.
    e.handle_messages(
        Time::from_millis(20),
        b,
        false,
        vec![Msg::Ack { opaque: first[0] }],
    );
    assert_eq!(e.pending_acks(), 1);
    let mut resends = Vec::new();
    for ms in [509, 510, 1_010, 1_510, 2_010, 2_510] {
        e.handle_timeout(Time::from_millis(ms));
        let pkts = drain_packets(&mut e);
        assert!(ack_requests(&pkts, b.addr, p).is_empty(), "b acknowledged");
        assert!(
            ack_requests(&pkts, mcast, p).is_empty(),
            "resends are unicast"
        );
        resends.extend(ack_requests(&pkts, a.addr, p).into_iter().map(|o| (ms, o)));
    }
    let times: Vec<u64> = resends.iter().map(|r| r.0).collect();
    assert_eq!(
        times,
        vec![510, 1_010, 1_510],
        "ACK_RETRIES resends, then give up"
    );
    assert_eq!(e.pending_acks(), 0);
    let opaques: BTreeSet<u16> = resends.iter().map(|r| r.1).chain(first).collect();
    assert_eq!(opaques.len(), 4, "a fresh opaque per packet");
}

#[test]
fn an_ack_stops_the_resends_and_acks_are_only_asked_where_configured() {
    let (mut e, a, b, p) = setup_with(|c| c.acks = true);
    update(&mut e, a, p, 10, 100);
    drain(&mut e);
    update(&mut e, a, p, 10, INFINITY);
    let first = ack_requests(&drain_packets(&mut e), IpAddr::V6(BABEL_MULTICAST), p);
    for n in [a, b] {
        e.handle_messages(
            Time::from_millis(30),
            n,
            false,
            vec![Msg::Ack { opaque: first[0] }],
        );
    }
    assert_eq!(e.pending_acks(), 0);
    e.handle_timeout(Time::from_millis(600));
    assert!(ack_requests(&drain_packets(&mut e), a.addr, p).is_empty());
    // An Ack from a non-neighbour or with a foreign opaque changes nothing and does
    // not panic; and without the option nothing asks for Acks.
    let (mut e, a, _, p) = setup();
    update(&mut e, a, p, 10, 100);
    drain(&mut e);
    update(&mut e, a, p, 10, INFINITY);
    let pkts = drain_packets(&mut e);
    assert!(
        pkts.iter()
            .all(|(_, ms)| !ms.iter().any(|m| matches!(m, Msg::AckRequest { .. })))
    );
    assert_eq!(e.pending_acks(), 0);
}

#[test]
fn seqno_requests_ask_for_an_ack_on_ack_interfaces() {
    let (mut e, a, b, p) = setup_with(|c| c.acks = true);
    update(&mut e, a, p, 10, 100);
    drain(&mut e);
    update(&mut e, b, p, 10, 400); // unfeasible alternative
    update(&mut e, a, p, 10, INFINITY); // starvation: seqno request to b
    let pkts = drain_packets(&mut e);
    let to_b: Vec<&Vec<Msg>> = pkts
        .iter()
        .filter(|(d, ms)| *d == b.addr && ms.iter().any(|m| matches!(m, Msg::SeqnoRequest { .. })))
        .map(|(_, ms)| ms)
        .collect();
    assert_eq!(to_b.len(), 1);
    let opaque = to_b[0]
        .iter()
        .find_map(|m| match m {
            Msg::AckRequest { opaque, .. } => Some(*opaque),
            _ => None,
        })
        .expect("the seqno request's packet asks for an Ack");
    assert!(e.acks.contains_key(&(b, opaque)));
    // Not acknowledged: resent unicast to b after ACK_TIMEOUT (before the request's
    // own 1 s resend timer).
    e.handle_timeout(Time::from_millis(510));
    assert!(drain_packets(&mut e).iter().any(|(d, ms)| *d == b.addr
        && ms.iter().any(|m| matches!(m, Msg::SeqnoRequest { .. }))
        && ms.iter().any(|m| matches!(m, Msg::AckRequest { .. }))));
}

// ------------------------------------------------------------ hearing ourselves

#[test]
fn hearing_itself_on_a_shared_link_is_ignored() {
    // Two interfaces of the same node on one link: everything one sends, the other
    // hears. No neighbour, no route, no seqno change (which would feed on itself).
    let t0 = Time::ZERO;
    let mut e = Engine::new(Config::default(), [0, 0, 0, 0, 0, 0, 0, 9], [1; 32], t0);
    let mine: Prefix = "2001:db8:9::/48".parse().unwrap();
    e.originate(t0, mine);
    let ia = e.add_interface(t0, IfaceConfig::lan("a", "fe80::1".parse().unwrap()));
    let ib = e.add_interface(t0, IfaceConfig::lan("b", "fe80::2".parse().unwrap()));
    let seqno = e.seqno();
    let mut t = t0;
    let mut heard = 0;
    for _ in 0..20 {
        e.handle_timeout(t);
        let txs: Vec<Transmit> = std::iter::from_fn(|| e.poll_transmit(t)).collect();
        for tx in txs {
            let other = if tx.iface == ia { ib } else { ia };
            e.handle_packet(t, other, tx.src, tx.dst, &tx.bytes);
            heard += 1;
        }
        t = e
            .poll_timeout()
            .unwrap_or(t)
            .max(t + Duration::from_millis(1));
    }
    assert!(heard > 10);
    assert!(e.neighbours().is_empty(), "not our own neighbour");
    assert!(
        e.routes().iter().all(|r| r.local),
        "nothing learnt from ourselves"
    );
    assert_eq!(e.seqno(), seqno, "no seqno race with our own echo");
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(events.iter().any(|ev| matches!(
        ev,
        Event::PacketRejected {
            reason: Reject::UnknownSource,
            ..
        }
    )));
}

#[test]
fn updates_with_our_own_router_id_are_never_learnt() {
    let (mut e, a, _, _) = setup();
    let mine: Prefix = "2001:db8:9::/48".parse().unwrap();
    let other: Prefix = "2001:db8:99::/48".parse().unwrap();
    e.originate(Time::ZERO, mine);
    let s = e.seqno();
    let echo = |prefix| Msg::Update {
        prefix,
        router_id: RouterId([0, 0, 0, 0, 0, 0, 0, 9]),
        seqno: s,
        metric: 96,
        interval_cs: 1600,
        next_hop: None,
        signature: None,
    };
    // A neighbour relays our own announcement, and one carrying our router-id for a
    // prefix we do not originate (a stale or forged one): neither is installed.
    e.handle_messages(Time::ZERO, a, true, vec![echo(mine), echo(other)]);
    assert_eq!(e.seqno(), s, "our current seqno coming back is not news");
    assert!(e.routes().iter().all(|r| r.local));
    assert_eq!(e.selected_route(other), None);
}

// ------------------------------------------------------------ RFC 9079

#[test]
fn source_specific_routes_are_routes_of_their_own() {
    // RFC 9079: a Source Prefix sub-TLV makes `dst from src` a route of its own, never
    // taken for the plain `dst`; requests keep the source prefix; the route is announced
    // on with its (mandatory) sub-TLV.
    let (mut e, a, _, _) = setup();
    let dst: crate::wire::Prefix = "::/0".parse().unwrap();
    let src: crate::wire::Prefix = "2001:db8:77::/48".parse().unwrap();
    let plain: crate::wire::Prefix = "2001:db8:6::/48".parse().unwrap();
    let key = Prefix::from_source(dst, Some(src));
    let up = |prefix, source_prefix| {
        wire::Message::Update(wire::Update {
            prefix,
            source_prefix,
            router_id: Some(RID_X),
            next_hop: a.addr,
            metric: 10,
            seqno: 1,
            interval: 1600,
            signature: None,
        })
    };
    let msgs = vec![
        up(dst, Some(src)),
        up(plain, None),
        wire::Message::RouteRequest(wire::RouteRequest {
            prefix: Some(dst),
            source_prefix: Some(src),
        }),
    ];
    let cfg = wire::EmitConfig {
        max_len: 1400,
        source: a.addr,
        trailer_reserve: 0,
    };
    let pkts = wire::emit_packets(&msgs, cfg, None).expect("emits");
    assert_eq!(pkts.len(), 1);
    let t = Time::from_millis(10);
    e.handle_packet(
        t,
        a.iface,
        SocketAddr::new(a.addr, BABEL_PORT),
        SocketAddr::new(IpAddr::V6(BABEL_MULTICAST), BABEL_PORT),
        &pkts[0],
    );
    assert!(e.selected_route(plain).is_some());
    let r = e
        .selected_route(key)
        .expect("the source-specific route is learnt");
    assert_eq!(r.prefix, key);
    assert!(e.selected_route(dst).is_none(), "not as a plain ::/0");
    e.handle_timeout(Time::from_millis(100));
    let sent = drain(&mut e);
    // The request for it is answered with it, source prefix and all, and it goes out
    // on the wire with the mandatory sub-TLV.
    assert!(sent.iter().any(|(_, m)| matches!(m,
        Msg::Update { prefix, .. } if *prefix == key)));
    let bytes = codec::encode(
        &[Msg::Update {
            prefix: key,
            router_id: RID_X,
            seqno: Seqno(1),
            metric: 20,
            interval_cs: 1600,
            next_hop: None,
            signature: None,
        }],
        a.addr,
        1400,
        0,
        None,
    )
    .expect("encodes");
    let back = codec::decode(&bytes[0], a.addr).expect("decodes");
    assert!(matches!(back.msgs[0], Msg::Update { prefix, .. } if prefix == key));
    let plain_parser =
        wire::parse_packet(&bytes[0], a.addr, &wire::ParseOptions::default()).expect("parses");
    assert!(
        plain_parser.messages.is_empty(),
        "a router without RFC 9079 ignores it (mandatory sub-TLV)"
    );
}

/// A third LAN neighbour, `addr`, next to the two of `setup`.
fn lan_neighbour(e: &mut Engine, iface: IfaceId, addr: &str) -> NeighbourId {
    let nid = NeighbourId {
        iface,
        addr: addr.parse().expect("an address"),
    };
    let hello = Msg::Hello {
        unicast: false,
        seqno: Seqno(1),
        interval_cs: 400,
        timestamp: None,
    };
    let ihu = Msg::Ihu {
        rxcost: 96,
        interval_cs: 400,
        addr: Some("fe80::9".parse().expect("an address")),
        timestamp: None,
    };
    e.handle_messages(Time::ZERO, nid, true, vec![hello, ihu]);
    drain(e);
    nid
}

/// `msgs` as the packets `from` multicasts, handled at `now` through the whole input path
/// (MAC check, decoding).
fn receive(e: &mut Engine, now: Time, from: NeighbourId, msgs: &[Msg]) {
    let pkts = codec::encode(msgs, from.addr, 1400, 0, None).expect("encodes");
    for bytes in pkts {
        e.handle_packet(
            now,
            from.iface,
            SocketAddr::new(from.addr, BABEL_PORT),
            SocketAddr::new(IpAddr::V6(BABEL_MULTICAST), BABEL_PORT),
            &bytes,
        );
    }
}

/// The `i`th /128 of a flood, outside every prefix the tests announce honestly.
fn flood_prefix(i: u32) -> Prefix {
    let base = u128::from("2001:db8:f100::".parse::<Ipv6Addr>().expect("an address"));
    crate::wire::Prefix::new(IpAddr::V6(Ipv6Addr::from(base + u128::from(i))), 128)
        .expect("a /128")
        .into()
}

fn update_msg(prefix: Prefix, rid: RouterId, seqno: u16, metric: u16) -> Msg {
    Msg::Update {
        prefix,
        router_id: rid,
        seqno: Seqno(seqno),
        metric,
        interval_cs: 1600,
        next_hop: None,
        signature: None,
    }
}

fn selected(e: &Engine) -> Vec<FibRoute> {
    e.selected_routes().cloned().collect()
}

// ---------------------------------------------------------------- helpers of the budget and
// origin tests

/// `setup` with engine configuration `cfg`.
fn setup_cfg(cfg: Config) -> (Engine, NeighbourId, NeighbourId, Prefix) {
    setup_full(cfg, |_| {})
}

#[path = "engine_budget_tests.rs"]
mod budget;

#[path = "engine_capture_tests.rs"]
mod captures;

#[path = "engine_origin_tests.rs"]
mod origin;
