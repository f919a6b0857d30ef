use super::*;

fn p(i: u16) -> Ipv6Net {
    format!("fd43:bb:0:{i:x}::/64").parse().unwrap()
}
fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn steps(x: &mut Puncher) -> Vec<Step> {
    std::iter::from_fn(|| x.poll_step()).collect()
}

fn sent(s: &[Step]) -> Signal {
    match &s[0] {
        Step::Send { signal, .. } => signal.clone(),
        other => panic!("not a send: {other:?}"),
    }
}

#[test]
fn candidate_order_keeps_the_announced_order_without_unusable_or_repeated_addresses() {
    let c = [
        sa("203.0.113.1:6464"),
        sa("127.0.0.1:6464"),
        sa("[fe80::1]:6464"),
        sa("0.0.0.0:6464"),
        sa("192.0.2.1:0"),
        sa("[::ffff:203.0.113.1]:6464"),
        sa("192.168.1.2:6464"),
        sa("[2001:db8::2]:6464"),
    ];
    assert_eq!(
        punch_order(&c),
        vec![
            sa("203.0.113.1:6464"),
            sa("192.168.1.2:6464"),
            sa("[2001:db8::2]:6464")
        ]
    );
    let many: Vec<SocketAddr> = (1..30u16)
        .map(|i| sa(&format!("192.0.2.{i}:6464")))
        .collect();
    assert_eq!(punch_order(&many).len(), MAX_PUNCH_ADDRS);
    assert_eq!(punch_order(&many)[0], sa("192.0.2.1:6464"));
}

#[test]
fn signals_round_trip_and_garbage_is_refused() {
    let s = Signal {
        v: 1,
        kind: Kind::Request,
        id: 7,
        candidates: vec![sa("203.0.113.1:6464"), sa("[2001:db8::2]:6464")],
        start_in_ms: 1000,
    };
    assert_eq!(Signal::decode(&s.encode()), Some(s.clone()));
    assert_eq!(Signal::decode(b"not json"), None);
    let mut v2 = s.clone();
    v2.v = 2;
    assert_eq!(Signal::decode(&v2.encode()), None);
    assert_eq!(Signal::decode(&vec![b' '; MAX_SIGNAL_BYTES + 1]), None);
    // a request with 8 IPv6 candidates fits
    let big = Signal {
        candidates: vec![sa("[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535"); 8],
        id: u64::MAX,
        ..s
    };
    assert!(
        big.encode().len() < MAX_SIGNAL_BYTES,
        "{}",
        big.encode().len()
    );
}

/// Both sides of one punch, with a one-way mesh delay of 150 ms: both start their
/// handshakes at the same moment (within a few ms), each to the other's candidates.
#[test]
fn both_sides_punch_at_the_agreed_moment() {
    let (a, b) = (p(1), p(2));
    let (ca, cb) = (vec![sa("203.0.113.1:6464")], vec![sa("203.0.113.2:6464")]);
    let mut pa = Puncher::new(1);
    let mut pb = Puncher::new(100);
    // A's plain dial failed at 10 s
    assert!(pa.start(t(10_000), b, &ca));
    let req = steps(&mut pa);
    assert!(matches!(&req[0], Step::Send { to, .. } if *to == b));
    let req = sent(&req);
    assert_eq!(req.kind, Kind::Request);
    assert_eq!(req.start_in_ms, 1000);
    // B receives it 150 ms later and answers at once
    pb.on_signal(t(10_150), a, &req.encode(), &cb).unwrap();
    let ans = sent(&steps(&mut pb));
    assert_eq!((ans.kind, ans.id), (Kind::Answer, req.id));
    assert_eq!(pb.poll_timeout(), Some(t(11_150)));
    // A has the answer 150 ms later
    pa.on_signal(t(10_300), b, &ans.encode(), &ca).unwrap();
    assert_eq!(pa.poll_timeout(), Some(t(11_150)));
    // nothing before the moment
    pa.poll(t(11_149));
    pb.poll(t(11_149));
    assert!(steps(&mut pa).is_empty() && steps(&mut pb).is_empty());
    pa.poll(t(11_150));
    pb.poll(t(11_150));
    assert_eq!(
        steps(&mut pa),
        vec![Step::Punch {
            peer: b,
            addrs: cb.clone()
        }]
    );
    assert_eq!(
        steps(&mut pb),
        vec![Step::Punch {
            peer: a,
            addrs: ca.clone()
        }]
    );
    // the tunnel comes up on both: punched, and the attempt is over
    assert!(pa.tunnel_up(&b));
    assert!(pb.tunnel_up(&a));
    assert!(!pa.active(&b));
    assert_eq!(pa.poll_timeout(), None);
    assert_eq!(pa.counters.punched, 1);
}

#[test]
fn a_late_answer_punches_at_once() {
    let (a, b) = (p(1), p(2));
    let mut pa = Puncher::new(1);
    pa.start(t(0), b, &[sa("203.0.113.1:6464")]);
    let req = sent(&steps(&mut pa));
    let ans = Signal {
        v: 1,
        kind: Kind::Answer,
        id: req.id,
        candidates: vec![sa("203.0.113.2:6464")],
        start_in_ms: 0,
    };
    // a 4 s round trip: the moment (0 + 1 s + 2 s) has passed
    pa.on_signal(t(4_000), b, &ans.encode(), &[]).unwrap();
    assert_eq!(pa.poll_timeout(), Some(t(4_000)));
    let _ = a;
}

#[test]
fn answers_must_match_a_request() {
    let b = p(2);
    let mut pa = Puncher::new(1);
    let stray = Signal {
        v: 1,
        kind: Kind::Answer,
        id: 5,
        candidates: vec![sa("203.0.113.2:6464")],
        start_in_ms: 0,
    };
    assert_eq!(
        pa.on_signal(t(0), b, &stray.encode(), &[]),
        Err(Refused::Unexpected)
    );
    pa.start(t(0), b, &[sa("203.0.113.1:6464")]);
    let req = sent(&steps(&mut pa));
    let wrong = Signal {
        id: req.id.wrapping_add(1),
        ..stray.clone()
    };
    assert_eq!(
        pa.on_signal(t(100), b, &wrong.encode(), &[]),
        Err(Refused::Unexpected)
    );
    // from another node than the one asked
    let right = Signal {
        id: req.id,
        ..stray
    };
    assert_eq!(
        pa.on_signal(t(100), p(3), &right.encode(), &[]),
        Err(Refused::Unexpected)
    );
    assert_eq!(pa.counters.refused_unexpected, 3);
    assert!(pa.on_signal(t(100), b, &right.encode(), &[]).is_ok());
    // a second copy of the answer changes nothing
    assert_eq!(
        pa.on_signal(t(120), b, &right.encode(), &[]),
        Err(Refused::Unexpected)
    );
}

#[test]
fn failures_back_off_exponentially_up_to_five_minutes() {
    assert_eq!(backoff(1), Duration::from_secs(15));
    assert_eq!(backoff(2), Duration::from_secs(30));
    assert_eq!(backoff(3), Duration::from_secs(60));
    assert_eq!(backoff(5), Duration::from_secs(240));
    assert_eq!(backoff(6), BACKOFF_MAX);
    assert_eq!(backoff(60), BACKOFF_MAX);

    // the whole cycle against a peer behind a symmetric NAT: answered, punched, failed
    let (a, b) = (p(1), p(2));
    let mine = [sa("203.0.113.1:6464")];
    let mut pa = Puncher::new(1);
    let mut now = t(0);
    let mut starts = Vec::new();
    for _ in 0..8 {
        // the core asks whenever a retry is due
        let due = pa.retries_due(now);
        assert!(pa.retries_due(now).is_empty() || due == vec![b]);
        if pa.start(now, b, &mine) {
            starts.push(now.as_millis() / 1000);
            let req = sent(&steps(&mut pa));
            let ans = Signal {
                v: 1,
                kind: Kind::Answer,
                id: req.id,
                candidates: vec![sa("203.0.113.2:40000")],
                start_in_ms: 0,
            };
            pa.on_signal(now + Duration::from_millis(100), b, &ans.encode(), &[])
                .unwrap();
            now = now + Duration::from_millis(1100);
            pa.poll(now);
            assert!(matches!(steps(&mut pa)[..], [Step::Punch { .. }]));
            now = now + Duration::from_secs(4);
            pa.punch_failed(now, b);
            assert!(!pa.active(&b));
            // not again before the back-off
            assert!(!pa.start(now, b, &mine));
        }
        now = pa.backed_off_until(&b).unwrap();
    }
    // 5.1 s per attempt, then 15, 30, 60, 120, 240, 300, 300 s
    assert_eq!(starts, vec![0, 20, 55, 120, 245, 490, 795, 1100]);
    assert_eq!(pa.counters.failed, 8);
    // a tunnel coming up ends the back-off
    pa.tunnel_up(&b);
    assert!(pa.start(now, b, &mine));
    let _ = a;
}

#[test]
fn an_unanswered_request_fails_and_backs_off() {
    let b = p(2);
    let mut pa = Puncher::new(1);
    assert!(pa.start(t(0), b, &[sa("203.0.113.1:6464")]));
    assert!(
        !pa.start(t(10), b, &[sa("203.0.113.1:6464")]),
        "one at a time"
    );
    assert_eq!(pa.poll_timeout(), Some(t(5_000)));
    pa.poll(t(5_000));
    assert!(!pa.active(&b));
    assert_eq!(pa.backed_off_until(&b), Some(t(20_000)));
    assert!(pa.retries_due(t(19_999)).is_empty());
    assert_eq!(pa.retries_due(t(20_000)), vec![b]);
    pa.forget(&b);
    assert!(pa.retries_due(t(20_000)).is_empty());
    // a node with no candidate has nothing to offer
    assert!(!pa.start(t(20_000), b, &[]));
}

#[test]
fn requests_are_rate_limited_per_source_and_in_all() {
    let me = [sa("203.0.113.2:6464")];
    let req = |id: u64| Signal {
        v: 1,
        kind: Kind::Request,
        id,
        candidates: vec![sa("198.51.100.7:6464")],
        start_in_ms: 60_000,
    };
    let mut pb = Puncher::new(1);
    assert!(pb.on_signal(t(0), p(1), &req(1).encode(), &me).is_ok());
    // the start offset is capped
    assert_eq!(pb.poll_timeout(), Some(t(0) + MAX_START_OFFSET));
    assert_eq!(
        pb.on_signal(t(4_999), p(1), &req(2).encode(), &me),
        Err(Refused::RateLimited)
    );
    assert!(pb.on_signal(t(5_000), p(1), &req(3).encode(), &me).is_ok());
    // many sources: ANSWER_BURST a minute in all
    let mut ok = 0;
    for i in 0..100u16 {
        if pb
            .on_signal(t(6_000), p(10 + i), &req(10).encode(), &me)
            .is_ok()
        {
            ok += 1;
        }
    }
    assert_eq!(ok, ANSWER_BURST - 2);
    assert_eq!(
        pb.counters.refused_rate,
        1 + 100 - u64::from(ANSWER_BURST - 2)
    );
    // a minute later the budget is back
    assert!(
        pb.on_signal(t(60_000), p(500), &req(10).encode(), &me)
            .is_ok()
    );
    // a request with no usable candidate is not answered
    let bad = Signal {
        candidates: vec![sa("127.0.0.1:6464")],
        ..req(11)
    };
    assert_eq!(
        pb.on_signal(t(60_000), p(501), &bad.encode(), &me),
        Err(Refused::Malformed)
    );
    assert_eq!(
        pb.on_signal(t(60_000), p(502), b"\xff\xfe", &me),
        Err(Refused::Malformed)
    );
    // answering makes no more than one punch per request, to at most MAX_PUNCH_ADDRS
    let all = steps(&mut pb);
    assert!(all.iter().all(|s| matches!(s, Step::Send { .. })));
}

#[test]
fn the_retry_set_is_bounded() {
    let mut pa = Puncher::new(1);
    let mine = [sa("203.0.113.1:6464")];
    for i in 0..(MAX_RETRY_PEERS as u16 + 10) {
        pa.start(t(0), p(i + 1), &mine);
    }
    pa.poll(t(5_000));
    assert_eq!(pa.retries_due(t(1_000_000)).len(), MAX_RETRY_PEERS);
}
