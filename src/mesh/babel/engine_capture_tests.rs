//! The engine against packets captured from real babeld and BIRD routers
//! (`../shared/testdata/babel`): learning through the MAC challenge, refusing intruders, and
//! mutated captures that must never make it panic.

use super::*;

/// (frame number, time, src, dst, payload) of the UDP/6696 datagrams of a capture.
fn capture(file: &str) -> Vec<(usize, Time, SocketAddr, SocketAddr, Vec<u8>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/testdata/babel")
        .join(file);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let (mut off, mut frame, mut t0) = (24, 0, None);
    while off + 16 <= data.len() {
        let le = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
        let ms = u64::from(le(off)) * 1000 + u64::from(le(off + 4)) / 1000;
        let len = le(off + 8) as usize;
        let pkt = &data[off + 16..off + 16 + len];
        off += 16 + len;
        frame += 1;
        let t = ms - *t0.get_or_insert(ms);
        if pkt.len() < 62 || pkt[12..14] != [0x86, 0xdd] || pkt[20] != 17 {
            continue;
        }
        let ip = |o: usize| {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&pkt[o..o + 16]).unwrap(),
            ))
        };
        let port = |o: usize| u16::from_be_bytes([pkt[o], pkt[o + 1]]);
        let (src, dst) = (
            SocketAddr::new(ip(22), port(54)),
            SocketAddr::new(ip(38), port(56)),
        );
        out.push((frame, Time::from_millis(t), src, dst, pkt[62..].to_vec()));
    }
    out
}

#[test]
fn learns_routes_from_a_real_babeld_after_the_mac_challenge() {
    // We play b in r2 (babeld a - babeld b), with b's link-local address and the key.
    let key = MacKey::new(1, (0u8..32).collect::<Vec<u8>>());
    let b: Ipv6Addr = "fe80::e05f:29ff:fe72:4578".parse().unwrap();
    let a: IpAddr = "fe80::d831:93ff:fe16:2f1a".parse().unwrap();
    let mut e = Engine::new(
        Config::default(),
        [0, 0, 0, 0, 0, 0, 0, 0xbb],
        [5; 32],
        Time::ZERO,
    );
    e.set_mac_keys(MacKeys::sign(key));
    let iface = e.add_interface(Time::ZERO, IfaceConfig::lan("b-a", b));
    drain(&mut e);
    let nid = NeighbourId { iface, addr: a };
    let from_a: Vec<_> = capture("r2-babeld-babeld-babeld__a-b.pcap")
        .into_iter()
        .filter(|d| d.2.ip() == a)
        .collect();
    let mut challenged = false;
    for (frame, t, src, dst, bytes) in from_a.iter().filter(|d| d.1 < Time::from_millis(20_000)) {
        if *frame == 9 {
            // a answers the nonce b sent in the capture: make it ours.
            let nonce = vec![0xef, 0x4d, 0x0e, 0x2c, 0xe5, 0xd9, 0xfb, 0x32];
            e.auth.entry(nid).or_default().challenge = Some((nonce, *t));
        }
        e.handle_packet(*t, iface, *src, *dst, bytes);
        let sent = drain(&mut e);
        if *frame == 1 {
            assert!(
                sent.iter()
                    .any(|(d, m)| *d == a && matches!(m, Msg::ChallengeRequest { .. }))
            );
            challenged = true;
        }
        if *frame == 9 {
            assert!(
                sent.iter()
                    .any(|(d, m)| *d == a && matches!(m, Msg::RouteRequest { prefix: None })),
                "unicast wildcard Route Request right after the challenge"
            );
        }
        if *frame == 12 {
            assert!(
                sent.iter()
                    .any(|(d, m)| *d == a && matches!(m, Msg::ChallengeReply { .. }))
            );
        }
    }
    assert!(challenged);
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(events.contains(&Event::ChallengeSucceeded(nid)));
    assert!(!events.iter().any(|ev| matches!(
        ev,
        Event::PacketRejected {
            reason: Reject::BadMac | Reject::Replay,
            ..
        }
    )));
    let v6: Prefix = "2001:db8:a::/64".parse().unwrap();
    let v4: Prefix = "198.51.100.0/26".parse().unwrap();
    let r6 = e.selected_route(v6).expect("a's IPv6 prefix learnt");
    assert_eq!((r6.next_hop, r6.metric), (a, 96));
    let r4 = e.selected_route(v4).expect("a's IPv4 prefix learnt");
    assert_eq!(
        r4.next_hop,
        "192.0.2.1".parse::<IpAddr>().unwrap(),
        "Next Hop TLV"
    );
    let info = e.routes().into_iter().find(|r| r.prefix == v6).unwrap();
    assert_eq!(info.router_id.to_string(), "9c:23:8c:c9:73:ac:36:ed");
}

#[test]
fn rejects_the_wrong_key_and_unsigned_intruders_of_the_captures() {
    let key = MacKey::new(1, (0u8..32).collect::<Vec<u8>>());
    for (file, peer, reason) in [
        (
            "r2-babeld-babeld-babeld__b-x.pcap",
            "fe80::4870:daff:fedd:b6e8",
            Reject::BadMac,
        ),
        (
            "r2-babeld-babeld-babeld__b-y.pcap",
            "fe80::1c91:96ff:febb:e50d",
            Reject::Unsigned,
        ),
    ] {
        let peer: IpAddr = peer.parse().unwrap();
        let mut e = Engine::new(
            Config::default(),
            [0, 0, 0, 0, 0, 0, 0, 0xbb],
            [5; 32],
            Time::ZERO,
        );
        e.set_mac_keys(MacKeys::sign(key.clone()));
        let iface = e.add_interface(
            Time::ZERO,
            IfaceConfig::lan("b-x", "fe80::1".parse().unwrap()),
        );
        let mut n = 0;
        for (_, t, src, dst, bytes) in capture(file).into_iter().filter(|d| d.2.ip() == peer) {
            e.handle_packet(t, iface, src, dst, &bytes);
            n += 1;
        }
        assert!(n > 10, "{file}");
        let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
        assert_eq!(
            events
                .iter()
                .filter(|ev| matches!(ev, Event::PacketRejected { reason: r, .. } if *r == reason))
                .count(),
            n,
            "{file}"
        );
        assert!(
            e.neighbours().is_empty() && e.selected_routes().next().is_none(),
            "{file}"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn hostile_packets_never_panic(
        seeds in proptest::collection::vec((0usize..4, proptest::collection::vec(proptest::prelude::any::<(u16, u8)>(), 0..8), proptest::prelude::any::<bool>()), 1..40),
        junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
    ) {
        // Valid packets from a real babeld, mutated, plus raw junk, with MAC on and off.
        let corpus: Vec<_> = capture("r1-babeld-bird-babeld__a-b.pcap");
        for mac_on in [false, true] {
            let mut e = Engine::new(Config::default(), [0, 0, 0, 0, 0, 0, 0, 1], [3; 32], Time::ZERO);
            if mac_on {
                e.set_mac_keys(MacKeys::sign(MacKey::new(1, (0u8..32).collect::<Vec<u8>>())));
            }
            let iface = e.add_interface(Time::ZERO, IfaceConfig::lan("x", "fe80::e05f:29ff:fe72:4578".parse().unwrap()));
            let mut now = Time::ZERO;
            for (i, (pick, flips, truncate)) in seeds.iter().enumerate() {
                let (_, _, src, dst, bytes) = &corpus[(i * 7 + pick) % corpus.len()];
                let mut b = bytes.clone();
                for (pos, val) in flips {
                    if !b.is_empty() {
                        let l = b.len();
                        b[usize::from(*pos) % l] ^= val;
                    }
                }
                if *truncate && !b.is_empty() {
                    b.truncate(usize::from(flips.first().map_or(0, |f| f.0)) % b.len());
                }
                now = now + Duration::from_millis(300);
                e.handle_packet(now, iface, *src, *dst, &b);
                e.handle_packet(now, iface, *src, *dst, &junk);
                e.handle_timeout(now);
                while e.poll_transmit(now).is_some() {}
                while e.poll_route_change().is_some() {}
                while e.poll_event().is_some() {}
                let _ = e.routes();
            }
        }
    }
}
