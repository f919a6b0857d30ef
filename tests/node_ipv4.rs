#![cfg(target_os = "linux")]
//! IPv4 over the mesh end to end (root, issue 15): a network with an IPv4 range
//! (`mesh registry params set ipv4=…`); four nodes in a line, UDP only between neighbours.
//! Each node's certificate names its IPv4 address and its TUN carries it; a reaches e's
//! address three hops away (ping, 10 MB over TCP, checksummed), and pings with TTL 1 and 2
//! are answered with an ICMPv4 Time Exceeded (they expire at the relays b and c, which cannot
//! see inside the sealed packet: e, which opens it, answers for that hop). A plain host h on a
//! LAN behind c is reached from a over IPv4: c announces the LAN (`--advertise-route`,
//! authorised by the registry); d, hanging off b, announces the same LAN without
//! authorisation: refused by b (counted), so a's route stays through c.
//!
//! ```text
//!   a ──── b ──── c ──── h   a–b fd99:4ab::/64, b–c fd99:4bc::/64 (the registry is served in
//!          │      │          b), c–h 192.168.77.0/24, b–d fd99:4bd::/64, c–e fd99:4ce::/64
//!          d      e          (c forwards e's registry traffic; UDP 6464 it does not forward)
//! ```

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;
use common::nodes::{
    LogsOnPanic, NsRegistry, counter, routes_for, routes_json, spawn_up, status_json,
};
use common::wait_until;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use re6mesh::netns::{Rig, require_root};

const RANGE: &str = "10.77.0.0/24";
const LAN: &str = "192.168.77.0/24";
const HOST: &str = "192.168.77.9";

/// Node `ns` has selected a route to exactly `prefix`.
fn has_route(rig: &Rig, ns: &str, dir: &Path, prefix: &str) -> bool {
    routes_json(rig, ns, dir)
        .iter()
        .any(|r| r["prefix"].as_str() == Some(prefix) && r["selected"] == true)
}

const SERVER_PY: &str = r#"
import socket, hashlib
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"#;

// connects as soon as the server listens (retrying for up to 10 s), then sends
const CLIENT_PY: &str = r#"
import socket, hashlib, sys, random, time
r = random.Random(7); data = bytes(r.getrandbits(8) for _ in range(int(sys.argv[2])))
deadline = time.time() + 10
while True:
    try:
        c = socket.create_connection((sys.argv[1], 5001), timeout=60); break
    except ConnectionRefusedError:
        if time.time() > deadline: raise
        time.sleep(0.05)
c.sendall(data); c.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

#[test]
fn root_ipv4_ping_tcp_and_ttl_expiry_across_two_relays() {
    if !require_root("root_ipv4_ping_tcp_and_ttl_expiry_across_two_relays") {
        return;
    }
    let test_start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new("rmtipv4").unwrap();
    for n in ["a", "b", "c", "d", "e", "h"] {
        rig.add_ns(n).unwrap();
    }
    let (ab_a, ab_b) = rig.link("a", "b").unwrap();
    let (bc_b, bc_c) = rig.link("b", "c").unwrap();
    let (ch_c, ch_h) = rig.link("c", "h").unwrap();
    let (bd_b, bd_d) = rig.link("b", "d").unwrap();
    let (ce_c, ce_e) = rig.link("c", "e").unwrap();
    // h is a plain IPv4 host; its router is c, which forwards between its TUN and the LAN
    rig.exec(
        "c",
        &["ip", "-4", "addr", "add", "192.168.77.1/24", "dev", &ch_c],
    )
    .unwrap();
    rig.exec(
        "h",
        &["ip", "-4", "addr", "add", "192.168.77.9/24", "dev", &ch_h],
    )
    .unwrap();
    rig.exec(
        "h",
        &["ip", "-4", "route", "add", "default", "via", "192.168.77.1"],
    )
    .unwrap();
    rig.exec("c", &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    for (ns, dev, addr) in [
        ("a", &ab_a, "fd99:4ab::1/64"),
        ("b", &ab_b, "fd99:4ab::2/64"),
        ("b", &bc_b, "fd99:4bc::1/64"),
        ("c", &bc_c, "fd99:4bc::2/64"),
        ("b", &bd_b, "fd99:4bd::1/64"),
        ("d", &bd_d, "fd99:4bd::2/64"),
        ("c", &ce_c, "fd99:4ce::1/64"),
        ("e", &ce_e, "fd99:4ce::2/64"),
    ] {
        rig.exec(ns, &["ip", "-6", "addr", "add", addr, "dev", dev, "nodad"])
            .unwrap();
    }
    // c reaches the registry on b ([fd99:4ab::2]); a and c never reach each other on the
    // underlay: everything between them crosses the mesh through b
    for (ns, via) in [
        ("c", "fd99:4bc::1"),
        ("d", "fd99:4bd::1"),
        ("e", "fd99:4ce::1"),
    ] {
        rig.exec(
            ns,
            &["ip", "-6", "route", "add", "fd99:4ab::/64", "via", via],
        )
        .unwrap();
    }
    // e reaches the registry through c, which forwards its underlay but no tunnel traffic:
    // e's only tunnel is to c, so a reaches e over three hops (a–b–c–e)
    rig.exec(
        "b",
        &[
            "ip",
            "-6",
            "route",
            "add",
            "fd99:4ce::/64",
            "via",
            "fd99:4bc::2",
        ],
    )
    .unwrap();
    rig.exec("c", &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();
    rig.exec(
        "c",
        &[
            "nft",
            "add table ip6 rmt; add chain ip6 rmt pass { type filter hook forward priority 0; }; \
             add rule ip6 rmt pass udp dport 6464 drop; add rule ip6 rmt pass udp sport 6464 drop",
        ],
    )
    .unwrap();

    let reg = NsRegistry::init(
        tmp.path(),
        "fd99:4ab::2",
        19000 + ((std::process::id() + 500) % 1000) as u16,
        &["--network", "fd42:4a::/48"],
    );
    reg.cli(&["params", "set", &format!("ipv4={RANGE}")]);
    reg.start(&mut rig, "b");
    let _logs = LogsOnPanic(tmp.path().to_path_buf());

    let mut prefixes = Vec::new();
    let mut v4 = Vec::new();
    for n in ["a", "b", "c", "d", "e"] {
        prefixes.push(reg.join(&rig, n, Some(n)));
        let st = re6mesh::state::load(&tmp.path().join(n)).unwrap();
        let info = re6mesh::identity::cert_info(&st.cert_der).unwrap();
        let a = info.ipv4.expect("the certificate names an IPv4 address");
        assert!(RANGE.parse::<ipnet::Ipv4Net>().unwrap().contains(&a));
        v4.push(a);
    }
    println!("IPv4 addresses from the registry: {v4:?}");
    // c is authorised for its LAN; b is not
    reg.cli(&["authorize", "c", "route", LAN]);

    let b_ab = format!("{}@[fd99:4ab::2]:6464", prefixes[1]);
    let b_bc = format!("{}@[fd99:4bc::1]:6464", prefixes[1]);
    let started = Instant::now();
    let b_bd = format!("{}@[fd99:4bd::1]:6464", prefixes[1]);
    let c_ce = format!("{}@[fd99:4ce::1]:6464", prefixes[2]);
    for (n, peer) in [
        ("b", None),
        ("a", Some(&b_ab)),
        ("c", Some(&b_bc)),
        ("d", Some(&b_bd)),
        ("e", Some(&c_ce)),
    ] {
        let mut args = Vec::new();
        if let Some(p) = peer {
            args.extend(["--peer", p.as_str()]);
        }
        if n == "c" || n == "d" {
            args.extend(["--advertise-route", LAN]);
        }
        spawn_up(&mut rig, tmp.path(), n, &args);
    }
    let (da, de) = (tmp.path().join("a"), tmp.path().join("e"));
    let (a4, e4) = (v4[0].to_string(), v4[4].to_string());
    wait_until(
        "a and e to select each other's IPv4 route",
        Duration::from_secs(30),
        || {
            has_route(&rig, "a", &da, &format!("{e4}/32"))
                && has_route(&rig, "e", &de, &format!("{a4}/32"))
        },
    );
    println!("IPv4 routes selected {:?} after start", started.elapsed());
    // the TUN carries the address, and the range is routed into it
    let r = rig
        .exec("a", &["ip", "-4", "addr", "show", "dev", "mesh0"])
        .unwrap();
    let r = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(r.contains(&format!("{a4}/24")), "{r}");

    // `mesh status` names the address
    let st = status_json(&rig, "a", &da);
    assert_eq!(st["ipv4"].as_str(), Some(a4.as_str()), "{st}");

    // ping a -> e over IPv4: sealed for e, relayed by b and c
    let ping = rig
        .exec_status("a", &["ping", "-4", "-c", "5", "-i", "0.2", "-W", "2", &e4])
        .unwrap();
    let out = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(ping.status.success(), "ping a -> e failed:\n{out}");
    for l in out.lines().rev().take(2) {
        println!("a -> e: {l}");
    }
    // the reply crossed two relays: its TTL is two less than e's default 64
    assert!(out.contains("ttl=62"), "{out}");

    // TTL 1 and 2: expire at the relays; the ICMPv4 Time Exceeded comes back
    for ttl in ["1", "2"] {
        let ping = rig
            .exec_status("a", &["ping", "-4", "-c", "1", "-t", ttl, "-W", "2", &e4])
            .unwrap();
        let out = String::from_utf8_lossy(&ping.stdout).to_string();
        assert!(
            out.contains("Time to live exceeded"),
            "no ICMPv4 Time Exceeded for TTL {ttl}:\n{out}"
        );
        println!(
            "a -> e with TTL {ttl}: {}",
            out.lines().nth(1).unwrap_or_default()
        );
    }

    // 10 MB over TCP a -> e, checksummed end to end
    let server = tmp.path().join("server.out");
    let pid = rig
        .spawn(
            "e",
            "python3",
            &["-c", SERVER_PY],
            Stdio::from(std::fs::File::create(&server).unwrap()),
            Stdio::null(),
        )
        .unwrap();
    let t = Instant::now();
    let client = rig
        .exec_status(
            "a",
            &[
                "python3",
                "-c",
                CLIENT_PY,
                &e4,
                &(10 * 1024 * 1024).to_string(),
            ],
        )
        .unwrap();
    assert!(
        client.status.success(),
        "client: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    let sent = String::from_utf8_lossy(&client.stdout).trim().to_owned();
    wait_until(
        "the server to read everything",
        Duration::from_secs(60),
        || {
            rig.child(pid)
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
        },
    );
    let elapsed = t.elapsed();
    let got = std::fs::read_to_string(&server).unwrap().trim().to_owned();
    assert_eq!(got, sent, "the bytes received differ from the bytes sent");
    println!(
        "10 MB TCP over IPv4 a -> e across b and c: {elapsed:?} ({:.1} Mbit/s), sha256 match",
        80.0 / elapsed.as_secs_f64()
    );

    // the LAN behind c: a's route to it is c's, b's unauthorised one is refused by a
    let rid = |i: usize| {
        re6mesh::control::router_id_text(&re6mesh::mesh::node::router_id_for(&prefixes[i]))
    };
    let (rid_c, rid_d) = (rid(2), rid(3));
    wait_until(
        "a to select c's route to the LAN",
        Duration::from_secs(20),
        || routes_for(&rig, "a", &da, LAN).contains(&(rid_c.clone(), true)),
    );
    // `mesh routes --json` names the node the IPv4 subnet route leads to (the live page's
    // subnets)
    let origin = routes_json(&rig, "a", &da)
        .into_iter()
        .find(|r| r["prefix"] == LAN && r["selected"] == true)
        .and_then(|r| r["origin"].as_str().map(str::to_owned));
    assert_eq!(
        origin,
        Some(prefixes[2].to_string()),
        "origin of {LAN} on a"
    );
    // a routes the LAN into its TUN (the route goes with the device)
    wait_until(
        "a to route the LAN into its TUN",
        Duration::from_secs(5),
        || {
            let r = rig.exec("a", &["ip", "-4", "route", "show", LAN]).unwrap();
            String::from_utf8_lossy(&r.stdout).contains("mesh0")
        },
    );
    let ping = rig
        .exec_status(
            "a",
            &["ping", "-4", "-c", "3", "-i", "0.2", "-W", "2", HOST],
        )
        .unwrap();
    let out = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(ping.status.success(), "ping a -> h failed:\n{out}");
    println!("a -> h: {}", out.lines().rev().nth(1).unwrap_or_default());
    let db = tmp.path().join("b");
    let refused = wait_until(
        "b to count d's unauthorised announcement",
        Duration::from_secs(10),
        || counter(&rig, "b", &db, "routes_unauthenticated") > 0,
    );
    println!("b refused d's announcement of {LAN} ({refused:?} after the ping)");
    for (ns, dir) in [("a", &da), ("b", &db)] {
        let held = routes_for(&rig, ns, dir, LAN);
        assert!(
            !held.iter().any(|(r, _)| *r == rid_d),
            "{ns} holds {held:?}; d is {rid_d}"
        );
    }
    println!("IPv4 test: {:?} in all", test_start.elapsed());
}
