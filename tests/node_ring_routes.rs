#![cfg(target_os = "linux")]
//! A hostile member on the 7-node ring rig (tests/ring) speaks Babel to n3 over a real tunnel,
//! with a real certificate and the network's MAC key (issue "insider-proof routing"): it
//! floods routes and seqno requests, and tries to draw another node's traffic to itself.
//! The honest nodes keep every route and every pair keeps talking.

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod ring;

use std::process::Command;
use std::time::{Duration, Instant};

use re6mesh::netns::require_root;
use ring::*;

/// The node the hostile member dials.
const ENTRY: usize = 3;
/// The node whose prefix the hijack attempts target (two hops from n3 round the ring).
const VICTIM: usize = 5;

#[test]
fn root_ring_a_member_flooding_routes_and_seqno_requests_is_contained() {
    if !require_root("root_ring_a_member_flooding_routes_and_seqno_requests_is_contained") {
        return;
    }
    let ring = start_ring();
    wait_all_pairs(&ring, Duration::from_secs(60));
    let rss_before: Vec<u64> = (0..N).map(|i| rss_kib(&ring, i)).collect();
    let inner = run_inner(&ring, "flood");
    println!("{}", inner.trim());
    let counters = wait_for_counters(&ring, ENTRY, |c| {
        (c("routes_over_budget") > 0 || c("routes_unauthenticated") > 0)
            && c("requests_rate_limited") > 0
    });
    println!("flood: n{ENTRY}'s counters {counters}");
    let rss_after: Vec<u64> = (0..N).map(|i| rss_kib(&ring, i)).collect();
    println!("flood: RSS per node before {rss_before:?} KiB, after {rss_after:?} KiB");
    // a million routes held would be hundreds of MB on every node; the budgets hold 4096 per
    // neighbour and 65,536 in all
    for i in 0..N {
        assert!(
            rss_after[i] < rss_before[i] + 64 * 1024,
            "n{i} grew from {} to {} KiB",
            rss_before[i],
            rss_after[i]
        );
    }
    let settled = wait_honest_routes(&ring);
    println!("flood: every honest route in place {settled:?} after the flood");
    wait_all_pairs(&ring, Duration::from_secs(30));
}

#[test]
fn root_ring_a_member_cannot_hijack_another_nodes_prefix() {
    if !require_root("root_ring_a_member_cannot_hijack_another_nodes_prefix") {
        return;
    }
    let mut ring = start_ring();
    wait_all_pairs(&ring, Duration::from_secs(60));
    let victim = node_addr(&ring.prefixes[VICTIM]);
    // n3 and n0 keep pinging the victim while the member lies: a hijacked route would
    // swallow the pings (the member forwards nothing)
    let (p3, out3) = ring.ping_series(ENTRY, &victim, 150);
    let (p0, out0) = ring.ping_series(0, &victim, 150);
    let inner = run_inner(&ring, "hijack");
    println!("{}", inner.trim());
    assert_honest_routes(&ring);
    ring.wait_pid(p3, Duration::from_secs(30));
    ring.wait_pid(p0, Duration::from_secs(30));
    for (from, out) in [(ENTRY, out3), (0, out0)] {
        let seqs = received_seqs(&std::fs::read_to_string(&out).unwrap());
        println!(
            "hijack attempts: n{from} → n{VICTIM}: {} of 150 answered",
            seqs.len()
        );
        assert!(
            seqs.len() >= 145,
            "n{from} → n{VICTIM}: {} of 150 pings answered while a member announced n{VICTIM}'s prefix",
            seqs.len()
        );
    }
    let counters = wait_for_counters(&ring, ENTRY, |c| c("routes_unauthenticated") > 0);
    println!("hijack attempts: n{ENTRY}'s counters {counters}");
    wait_all_pairs(&ring, Duration::from_secs(30));
}

/// Waits (up to 20 s: Babel reconverging after a route was lost) until
/// [`assert_honest_routes`] holds, then checks it once more; returns the wait.
fn wait_honest_routes(ring: &Ring) -> Duration {
    let t = Instant::now();
    loop {
        let ok = std::panic::catch_unwind(|| assert_honest_routes(ring));
        if ok.is_ok() {
            return t.elapsed();
        }
        if t.elapsed() > Duration::from_secs(20) {
            assert_honest_routes(ring);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Every honest node selects a route to every other node's prefix whose next hop is an
/// honest node, and no route more specific than a node prefix inside the network.
fn assert_honest_routes(ring: &Ring) {
    let honest: Vec<String> = ring.prefixes.iter().map(node_addr).collect();
    for i in 0..N {
        let o = Command::new(MESH)
            .args(["routes", "--json", "--state-dir"])
            .arg(ring.dir(i))
            .output()
            .unwrap();
        let routes: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|r: &serde_json::Value| r["selected"].as_bool() == Some(true))
            .collect();
        for (j, p) in ring.prefixes.iter().enumerate().filter(|(j, _)| *j != i) {
            let r = routes
                .iter()
                .find(|r| r["prefix"].as_str() == Some(&p.to_string()))
                .unwrap_or_else(|| panic!("n{i} has no route to n{j} ({p})"));
            let hop = r["next_hop"].as_str().unwrap_or_default();
            assert!(
                honest.iter().any(|h| h == hop),
                "n{i}'s route to n{j} goes through {hop}, not an honest node: {r}"
            );
        }
        for r in &routes {
            let Some(Ok(net)) = r["prefix"].as_str().map(str::parse::<ipnet::Ipv6Net>) else {
                continue;
            };
            for (j, p) in ring.prefixes.iter().enumerate() {
                assert!(
                    !(p.contains(&net) && net.prefix_len() > p.prefix_len()),
                    "n{i} selected {net}, more specific than n{j}'s {p}: {r}"
                );
            }
        }
    }
}

/// Runs the hostile member (the ignored test below) inside the bridge namespace.
fn run_inner(ring: &Ring, mode: &str) -> String {
    let token = ring.registry_ok(&["token", "create"]);
    let prefixes: Vec<String> = ring.prefixes.iter().map(|p| p.to_string()).collect();
    let o = Command::new("ip")
        .args(["netns", "exec", &ring.rig.ns("br")])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "inner_hostile_babel_speaker",
            "--ignored",
            "--nocapture",
        ])
        .env("RE6MESH_INNER_MODE", mode)
        .env(
            "RE6MESH_INNER_TARGET",
            format!("[{}]:6464", underlay(ENTRY)),
        )
        .env("RE6MESH_INNER_PREFIXES", prefixes.join(","))
        .env("RE6MESH_INNER_TOKEN", token.trim())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && text.contains("1 passed"),
        "hostile member:\n{text}"
    );
    text.lines()
        .filter(|l| l.starts_with("hostile"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// VmRSS of node `i`, KiB.
fn rss_kib(ring: &Ring, i: usize) -> u64 {
    let pid = ring.pids[i].expect("node runs");
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// The hostile member: joins with a real token, fetches the MAC keys like any member, dials
/// n3 and speaks Babel on the tunnel by hand (Hello, IHU, RFC 8967 challenge replies), then
/// misbehaves according to `RE6MESH_INNER_MODE`:
/// - `flood`: a million random routes, then seqno requests for every honest prefix;
/// - `hijack`: the victim's /64 with its own router-id, with the victim's router-id and a
///   higher seqno, a /128 inside it, and a prefix outside the network, all at metric 0.
#[test]
#[ignore = "runs inside a network namespace, started by the root_ring tests of this file"]
fn inner_hostile_babel_speaker() {
    use re6mesh::mesh::babel::codec;
    use re6mesh::mesh::babel::msg::Msg;
    use re6mesh::mesh::babel::{Prefix, RouterId, Seqno};
    use re6mesh::mesh::tunnels::frame;
    use re6mesh::mesh::tunnels::{Trust, TunnelEndpoint, TunnelTimers};
    use re6mesh::registry_client::{NodeKey, RegistryClient};
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};

    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} not set: run through a root_ test"))
    };
    let mode = var("RE6MESH_INNER_MODE");
    let target: SocketAddr = var("RE6MESH_INNER_TARGET").parse().unwrap();
    let honest: Vec<ipnet::Ipv6Net> = var("RE6MESH_INNER_PREFIXES")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tok = re6mesh::token::JoinToken::decode(&var("RE6MESH_INNER_TOKEN")).unwrap();
        let key = NodeKey::generate().unwrap();
        let me = RegistryClient::for_token(&tok)
            .unwrap()
            .join(Some(&tok.secret), &key)
            .await
            .unwrap();
        // the MAC key, as any member gets it
        let client =
            RegistryClient::with_identity(&tok.url, &me.ca_der, &me.cert_der, &key).unwrap();
        let keys = client.mac_keys().await.unwrap();
        let sign_id = me
            .params
            .mac
            .sign
            .clone()
            .or(me.params.mac.accept.clone())
            .expect("the network signs Babel");
        let mac = keys
            .keys
            .iter()
            .find(|k| k.id == sign_id)
            .map(|k| hex::decode(&k.key).unwrap())
            .expect("the signing key");
        let ep = TunnelEndpoint::bind(
            "[::]:0".parse().unwrap(),
            Trust::new(&me.ca_der).unwrap(),
            &me.cert_der,
            &key.to_der(),
            TunnelTimers::default(),
        )
        .unwrap();
        let entry = honest[ENTRY];
        let tunnel = ep
            .connect(target, entry)
            .await
            .expect("a member gets its tunnel");
        let (link, _ctl) = tunnel.split();
        let node = re6mesh::identity::node_address;
        let mine = SocketAddr::new(IpAddr::V6(node(&me.prefix)), 6696);
        let theirs = SocketAddr::new(IpAddr::V6(node(&entry)), 6696);
        let mut pc = re6mesh::wire::PcState {
            index: vec![7, 7, 7, 7],
            counter: 1,
        };
        let mut hello_seqno = 0u16;
        let mut send = |msgs: &[Msg], pc: &mut re6mesh::wire::PcState| -> usize {
            let packets = codec::encode(msgs, mine.ip(), 1200, 1, Some(pc)).unwrap();
            let n = packets.len();
            for mut p in packets {
                re6mesh::wire::mac::sign_vec(
                    &mut p,
                    &re6mesh::mesh::babel::mac::pseudo(mine, theirs),
                    &mac,
                )
                .unwrap();
                let _ = link.send_babel(&p);
            }
            n
        };
        // what n3 tells us: the honest routes' router-ids and seqnos
        let learnt = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
            Prefix,
            (RouterId, Seqno),
        >::new()));
        let (chal_tx, mut chal_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        {
            let link = link.clone();
            let learnt = learnt.clone();
            tokio::spawn(async move {
                while let Ok(d) = link.read_datagram().await {
                    let Ok(frame::Datagram::Babel(b)) = frame::parse(&d) else {
                        continue;
                    };
                    let Ok(dec) = codec::decode(b, theirs.ip()) else {
                        continue;
                    };
                    for m in dec.msgs {
                        match m {
                            Msg::ChallengeRequest { nonce } => {
                                let _ = chal_tx.send(nonce);
                            }
                            Msg::Update {
                                prefix,
                                router_id,
                                seqno,
                                metric,
                                ..
                            } if metric != u16::MAX => {
                                learnt
                                    .lock()
                                    .unwrap()
                                    .insert(prefix.dst, (router_id, seqno));
                            }
                            _ => {}
                        }
                    }
                }
            });
        }
        // become a neighbour: Hello + IHU every 200 ms, challenges answered, until n3 has
        // sent us the ring's routes
        let start = Instant::now();
        let mut tick =
            |pc: &mut re6mesh::wire::PcState,
             send: &mut dyn FnMut(&[Msg], &mut re6mesh::wire::PcState) -> usize| {
                hello_seqno = hello_seqno.wrapping_add(1);
                let mut msgs = vec![
                    Msg::Hello {
                        unicast: false,
                        seqno: Seqno(hello_seqno),
                        interval_cs: 50,
                        timestamp: None,
                    },
                    Msg::Ihu {
                        rxcost: 96,
                        interval_cs: 150,
                        addr: None,
                        timestamp: None,
                    },
                ];
                while let Ok(nonce) = chal_rx.try_recv() {
                    msgs.push(Msg::ChallengeReply { nonce });
                }
                send(&msgs, pc);
            };
        while learnt.lock().unwrap().len() < honest.len() - 1 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "n3 never told the member its routes: {:?}",
                learnt.lock().unwrap()
            );
            tick(&mut pc, &mut send);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "hostile member: a neighbour of n3 after {:?}",
            start.elapsed()
        );
        let own_rid = RouterId([0x66; 8]);
        let update = |prefix: Prefix, router_id: RouterId, seqno: Seqno| Msg::Update {
            prefix: prefix.into(),
            router_id,
            seqno,
            metric: 0,
            interval_cs: 400,
            next_hop: None,
            signature: None,
        };
        // the member's own certificate key signs whatever it likes (the victim's prefix too):
        // a well-formed signature, by a member, that must not be enough
        let signer = ::ring::signature::EcdsaKeyPair::from_pkcs8(
            &::ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.to_der(),
            &::ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let signed = |prefix: Prefix, router_id: RouterId, seqno: Seqno| {
            let bytes = re6mesh::mesh::babel::origin::signed_bytes(prefix.into(), router_id, seqno);
            let sig = signer
                .sign(&::ring::rand::SystemRandom::new(), &bytes)
                .unwrap();
            let mut m = update(prefix, router_id, seqno);
            if let Msg::Update { signature, .. } = &mut m {
                *signature = Some(sig.as_ref().try_into().unwrap());
            }
            m
        };
        let mut packets = 0usize;
        match mode.as_str() {
            "flood" => {
                // a million random routes (xorshift; /48 … /128 in 2000::/3 and in the
                // network itself), 1,000 per batch, Hellos in between
                let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
                let net = u128::from(entry.network()) & !((1u128 << 80) - 1);
                let t = Instant::now();
                for batch in 0..1000 {
                    let msgs: Vec<Msg> = (0..1000)
                        .map(|i| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let len = 48 + (x % 81) as u8;
                            let base = if i % 2 == 0 {
                                (x & (u128::MAX >> 3)) | (1u128 << 125)
                            } else {
                                net | (x & ((1u128 << 80) - 1))
                            };
                            let p = ipnet::Ipv6Net::new(Ipv6Addr::from(base), len)
                                .unwrap()
                                .trunc();
                            update(
                                Prefix::new(IpAddr::V6(p.network()), len).unwrap(),
                                own_rid,
                                Seqno(1),
                            )
                        })
                        .collect();
                    packets += send(&msgs, &mut pc);
                    if batch % 20 == 0 {
                        tick(&mut pc, &mut send);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                println!(
                    "hostile member: 1,000,000 routes sent in {packets} packets in {:?}",
                    t.elapsed()
                );
                // seqno requests for every honest prefix, far ahead, hop count 127
                let known: Vec<(Prefix, (RouterId, Seqno))> =
                    learnt.lock().unwrap().clone().into_iter().collect();
                let mut requests = 0;
                for round in 0..200u16 {
                    let msgs: Vec<Msg> = known
                        .iter()
                        .map(|(p, (rid, s))| Msg::SeqnoRequest {
                            prefix: (*p).into(),
                            seqno: Seqno(s.0.wrapping_add(round + 1)),
                            hop_count: 127,
                            router_id: *rid,
                        })
                        .collect();
                    requests += msgs.len();
                    send(&msgs, &mut pc);
                    if round % 10 == 0 {
                        tick(&mut pc, &mut send);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                println!("hostile member: {requests} seqno requests sent");
            }
            "hijack" => {
                let victim = honest[VICTIM];
                let vp = Prefix::new(IpAddr::V6(victim.network()), victim.prefix_len()).unwrap();
                let (vrid, vseq) = learnt.lock().unwrap()[&vp];
                let host = Prefix::new(IpAddr::V6(node(&victim)), 128).unwrap();
                let outside = Prefix::new(IpAddr::V6("2001:db8::".parse().unwrap()), 32).unwrap();
                let t = Instant::now();
                // 10 s of lies, repeated every 200 ms with a rising seqno
                let mut k = 0u16;
                while t.elapsed() < Duration::from_secs(10) {
                    k = k.wrapping_add(1);
                    let msgs = vec![
                        update(vp, vrid, Seqno(vseq.0.wrapping_add(100 + k))),
                        signed(vp, vrid, Seqno(vseq.0.wrapping_add(200 + k))),
                        signed(host, own_rid, Seqno(k)),
                        signed(outside, own_rid, Seqno(k)),
                    ];
                    packets += send(&msgs, &mut pc);
                    tick(&mut pc, &mut send);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // and the victim's /64 under the member's own router-id
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(5) {
                    k = k.wrapping_add(1);
                    packets += send(&[signed(vp, own_rid, Seqno(k))], &mut pc);
                    tick(&mut pc, &mut send);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                println!(
                    "hostile member: hijack announcements sent in {packets} packets over 15 s"
                );
            }
            other => panic!("unknown mode {other}"),
        }
        // keep the neighbourship a little longer so n3 has processed everything
        for _ in 0..10 {
            tick(&mut pc, &mut send);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
