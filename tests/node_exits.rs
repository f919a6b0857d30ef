#![cfg(target_os = "linux")]
//! Exit nodes end to end (root, issue 15): laptop l, three hops from two exits e1 and e2,
//! runs `mesh up --use-exit auto` and reaches a server on the "internet" namespace i (a
//! plain host, no re6mesh) by ping and TCP; the exits run `mesh up --exit` (NAT66 with
//! nftables) with the registry's grant. The exit in use is killed (by PID): l's 10 Hz ping
//! resumes through the other one (the gap is printed). l's own underlay UDP keeps leaving
//! directly (fwmark + policy routing), checked on the routing decision and on the counters.
//!
//! ```text
//!   l ──── r1 ──── r2 ──── e1 ──── i (server 2001:db8:99::9)
//!                   └───── e2 ─────┘
//!   l–r1 fd99:1::/64, r1–r2 fd99:2::/64 (the registry in r2), r2–e1 fd99:3::/64,
//!   r2–e2 fd99:4::/64, e1–i 2001:db8:e1::/64, e2–i 2001:db8:e2::/64
//! ```

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;
use common::nodes::{
    LogsOnPanic, NsRegistry, add_addrs, log_file, ns_mesh, routes_json, spawn_up, status_json,
};
use common::wait_until;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use re6mesh::netns::{Rig, require_root};

const SERVER: &str = "2001:db8:99::9";
const NODES: [&str; 5] = ["l", "r1", "r2", "e1", "e2"];

/// The exit route (`::/0 from …`) node `ns` selected, if any.
fn exit_route(rig: &Rig, ns: &str, dir: &Path) -> Option<serde_json::Value> {
    routes_json(rig, ns, dir).into_iter().find(|r| {
        r["prefix"]
            .as_str()
            .is_some_and(|p| p.starts_with("::/0 from "))
            && r["selected"] == true
            && r["metric"] != 65535
    })
}

/// The router-id of the exit route node `ns` selected, if any.
fn exit_in_use(rig: &Rig, ns: &str, dir: &Path) -> Option<String> {
    exit_route(rig, ns, dir).and_then(|r| r["router_id"].as_str().map(str::to_owned))
}

/// Transmitted bytes of `dev` in `ns`.
fn tx_bytes(rig: &Rig, ns: &str, dev: &str) -> u64 {
    let o = rig
        .exec(
            ns,
            &["cat", &format!("/sys/class/net/{dev}/statistics/tx_bytes")],
        )
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Polls `f` every 100 ms until it gives a value (panics after `timeout`).
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let mut out = None;
    wait_until(what, timeout, || {
        out = f();
        out.is_some()
    });
    out.expect("wait_until returned")
}

/// The reply times (seconds, from `ping -D`) in `text`.
fn reply_times(text: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

#[test]
fn root_exits_a_laptop_reaches_the_internet_through_an_exit_and_fails_over() {
    if !require_root("root_exits_a_laptop_reaches_the_internet_through_an_exit_and_fails_over") {
        return;
    }
    let test_start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new("rmtexit").unwrap();
    for n in NODES.iter().chain(&["i"]) {
        rig.add_ns(n).unwrap();
    }
    let (l_r1, r1_l) = rig.link("l", "r1").unwrap();
    let (r1_r2, r2_r1) = rig.link("r1", "r2").unwrap();
    let (r2_e1, e1_r2) = rig.link("r2", "e1").unwrap();
    let (r2_e2, e2_r2) = rig.link("r2", "e2").unwrap();
    let (e1_i, i_e1) = rig.link("e1", "i").unwrap();
    let (e2_i, i_e2) = rig.link("e2", "i").unwrap();
    add_addrs(
        &rig,
        &[
            ("l", &l_r1, "fd99:1::1/64"),
            ("r1", &r1_l, "fd99:1::2/64"),
            ("r1", &r1_r2, "fd99:2::1/64"),
            ("r2", &r2_r1, "fd99:2::2/64"),
            ("r2", &r2_e1, "fd99:3::1/64"),
            ("e1", &e1_r2, "fd99:3::2/64"),
            ("r2", &r2_e2, "fd99:4::1/64"),
            ("e2", &e2_r2, "fd99:4::2/64"),
            ("e1", &e1_i, "2001:db8:e1::1/64"),
            ("i", &i_e1, "2001:db8:e1::2/64"),
            ("e2", &e2_i, "2001:db8:e2::1/64"),
            ("i", &i_e2, "2001:db8:e2::2/64"),
            ("i", &"lo".to_string(), "2001:db8:99::9/128"),
        ],
    );
    // l's default route is its uplink r1 (its tunnel to r1 goes to r1's far address, through
    // that default route: what --use-exit must keep out of the TUN); the exits' default
    // route is the internet; everyone reaches the registry in r2 on the underlay
    for (ns, args) in [
        ("l", vec!["default", "via", "fd99:1::2"]),
        ("e1", vec!["default", "via", "2001:db8:e1::2"]),
        ("e2", vec!["default", "via", "2001:db8:e2::2"]),
        ("r2", vec!["fd99:1::/64", "via", "fd99:2::1"]),
        ("e1", vec!["fd99:2::/64", "via", "fd99:3::1"]),
        ("e2", vec!["fd99:2::/64", "via", "fd99:4::1"]),
    ] {
        let mut argv = vec!["ip", "-6", "route", "add"];
        argv.extend(args);
        rig.exec(ns, &argv).unwrap();
    }
    rig.exec("r1", &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();

    let reg = NsRegistry::serve(
        &mut rig,
        tmp.path(),
        "r2",
        "fd99:2::2",
        19000 + (std::process::id() % 1000) as u16,
        &["--network", "fd42:e1::/48"],
    );
    let log = |name: &str| log_file(tmp.path(), name);
    let _logs = LogsOnPanic(tmp.path().to_path_buf());
    let prefixes: Vec<_> = NODES.iter().map(|n| reg.join(&rig, n, Some(n))).collect();

    // An exit without the grant is refused at start, naming the command.
    let dl = tmp.path().join("l");
    let o = ns_mesh(
        &rig,
        "l",
        &[
            "up",
            "--foreground",
            "--state-dir",
            dl.to_str().unwrap(),
            "--exit",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success() && err.contains("mesh registry authorize"),
        "{err}"
    );

    for n in ["e1", "e2"] {
        reg.cli(&["authorize", n, "exit", "::/0"]);
    }

    let r1_far = format!("{}@[fd99:2::1]:6464", prefixes[1]);
    let r2_from_r1 = format!("{}@[fd99:2::2]:6464", prefixes[2]);
    let r2_from_e1 = format!("{}@[fd99:3::1]:6464", prefixes[2]);
    let r2_from_e2 = format!("{}@[fd99:4::1]:6464", prefixes[2]);
    let started = Instant::now();
    let mut pids = std::collections::HashMap::new();
    for (n, peer, extra) in [
        ("r2", None, vec![]),
        ("r1", Some(&r2_from_r1), vec![]),
        ("e1", Some(&r2_from_e1), vec!["--exit"]),
        ("e2", Some(&r2_from_e2), vec!["--exit"]),
        ("l", Some(&r1_far), vec!["--use-exit", "auto"]),
    ] {
        let mut args = vec!["--no-port-mapping"];
        if let Some(p) = peer {
            args.extend(["--peer", p.as_str()]);
        }
        args.extend(extra);
        let pid = spawn_up(&mut rig, tmp.path(), n, &args);
        pids.insert(n, pid);
    }
    let rid = |i: usize| {
        re6mesh::control::router_id_text(&re6mesh::mesh::node::router_id_for(&prefixes[i]))
    };
    let (rid_e1, rid_e2) = (rid(3), rid(4));
    let used = wait_for("l to select an exit", Duration::from_secs(30), || {
        exit_in_use(&rig, "l", &dl).filter(|r| *r == rid_e1 || *r == rid_e2)
    });
    println!("l selected an exit after {:?}", started.elapsed());
    // `mesh status` names the exit in use, and says so on an exit.
    let exit_line = |ns: &str| {
        status_json(&rig, ns, &tmp.path().join(ns))["exit"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let shown = exit_line("l");
    assert!(
        shown.ends_with("(e1)") || shown.ends_with("(e2)"),
        "status of l: exit {shown:?}"
    );
    assert_eq!(exit_line("e1"), "this node");
    println!("mesh status on l: exit {shown}");
    // `mesh routes --json` names the exit node the route leads to (`origin`; the live page
    // marks that node an exit from it).
    let origin = exit_route(&rig, "l", &dl).and_then(|r| r["origin"].as_str().map(str::to_owned));
    assert_eq!(
        origin.as_deref(),
        shown.split_whitespace().next(),
        "the exit route's origin on l"
    );

    // The exits forward with NAT66 in a table of their own.
    let t = rig
        .exec("e1", &["nft", "list", "table", "ip6", "re6mesh_exit"])
        .unwrap();
    let t = String::from_utf8_lossy(&t.stdout).to_string();
    assert!(
        t.contains("masquerade") && t.contains("fd42:e1::/48"),
        "{t}"
    );

    // The tunnel socket's packets (marked) keep the underlay route; everything else from l
    // goes into the TUN.
    let marked = rig
        .exec(
            "l",
            &["ip", "-6", "route", "get", "fd99:2::1", "mark", "0x6d65"],
        )
        .unwrap();
    let marked = String::from_utf8_lossy(&marked.stdout).to_string();
    assert!(
        marked.contains(&l_r1) && !marked.contains("mesh0"),
        "{marked}"
    );
    let unmarked = rig
        .exec("l", &["ip", "-6", "route", "get", SERVER])
        .unwrap();
    let unmarked = String::from_utf8_lossy(&unmarked.stdout).to_string();
    assert!(unmarked.contains("mesh0"), "{unmarked}");

    // Ping and a small TCP transfer from l to the server, through the exit.
    let underlay_before = tx_bytes(&rig, "l", &l_r1);
    let ping = wait_for("l to ping the server", Duration::from_secs(15), || {
        let p = rig
            .exec_status(
                "l",
                &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", SERVER],
            )
            .unwrap();
        p.status
            .success()
            .then(|| String::from_utf8_lossy(&p.stdout).to_string())
    });
    for l in ping.lines().rev().take(2) {
        println!("l -> server: {l}");
    }
    let server = rig
        .spawn(
            "i",
            "python3",
            &[
                "-c",
                "import socket\n\
                 s=socket.socket(socket.AF_INET6)\n\
                 s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                 s.bind(('2001:db8:99::9',8099))\n\
                 s.listen(1)\n\
                 c,_=s.accept()\n\
                 c.sendall(b'x'*262144)\n\
                 c.close()\n",
            ],
            Stdio::null(),
            log("server.log"),
        )
        .unwrap();
    let got = wait_for("the TCP transfer", Duration::from_secs(20), || {
        let o = rig
            .exec_status(
                "l",
                &[
                    "python3",
                    "-c",
                    "import socket\n\
                     s=socket.create_connection(('2001:db8:99::9',8099),timeout=5)\n\
                     n=0\n\
                     while True:\n\
                     \x20   d=s.recv(65536)\n\
                     \x20   if not d: break\n\
                     \x20   n+=len(d)\n\
                     print(n)\n",
                ],
            )
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n == 262_144)
    });
    rig.stop(server, Duration::from_secs(1));
    println!("l fetched {got} bytes over TCP from the server through the exit");
    // what l sent to the internet left on the underlay, sealed (no loop through the TUN)
    let underlay = tx_bytes(&rig, "l", &l_r1) - underlay_before;
    assert!(underlay > 3 * 84, "underlay tx {underlay} bytes");
    println!("l's underlay sent {underlay} bytes meanwhile");

    // 10 Hz ping; kill the exit in use; the ping resumes through the other one.
    let ping_pid = rig
        .spawn(
            "l",
            "ping",
            &["-6", "-D", "-i", "0.1", "-W", "1", "-w", "25", SERVER],
            log("ping.log"),
            Stdio::null(),
        )
        .unwrap();
    let ping_log = tmp.path().join("ping.log");
    wait_until("the 10 Hz ping to answer", Duration::from_secs(10), || {
        reply_times(&std::fs::read_to_string(&ping_log).unwrap_or_default()).len() >= 10
    });
    let (dead, other, other_rid) = if used == rid_e1 {
        ("e1", "e2", rid_e2.clone())
    } else {
        ("e2", "e1", rid_e1.clone())
    };
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let kill = Command::new("kill")
        .args(["-KILL", &pids[dead].to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    println!("killed {dead} (the exit in use)");
    let moved = wait_until(
        "l to move to the other exit",
        Duration::from_secs(20),
        || exit_in_use(&rig, "l", &dl).as_deref() == Some(other_rid.as_str()),
    );
    println!("l selected {other} {moved:?} after the kill");
    let resumed = wait_for("the ping to resume", Duration::from_secs(20), || {
        let t = reply_times(&std::fs::read_to_string(&ping_log).unwrap_or_default());
        (t.iter().filter(|x| **x > killed_at).count() >= 10).then_some(t)
    });
    rig.stop(ping_pid, Duration::from_secs(1));
    let before = resumed
        .iter()
        .copied()
        .filter(|x| *x <= killed_at)
        .fold(0.0, f64::max);
    let after = resumed
        .iter()
        .copied()
        .filter(|x| *x > killed_at)
        .fold(f64::MAX, f64::min);
    println!(
        "exit failover {dead} -> {other}: ping gap {:.2} s (last reply before the kill to the \
         first after; goal < 2 s)",
        after - before
    );
    println!("exits test: {:?} in all", test_start.elapsed());
}

/// Packets node `ns` counted in the nftables counter `name` of its table `ip6 seen`.
fn seen(rig: &Rig, ns: &str, name: &str) -> u64 {
    let o = rig
        .exec_status(ns, &["nft", "list", "counter", "ip6", "seen", name])
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `--use-exit PREFIX` where the relay prefers another exit: r1 is next to e1 and two hops
/// from e2, so it selects (and announces) only e1's exit route; l pins e2. l's internet
/// traffic travels inside IPv6 to e2's node address and leaves by e2 (counted on the server's
/// side by the source e2's NAT66 gives it), never by e1.
///
/// ```text
///   l ── r1 ── e1 ── i (server 2001:db8:99::9)
///         │          │
///         r2 ─────── e2
/// ```
#[test]
fn root_exits_a_pinned_exit_is_reached_through_a_relay_that_prefers_another() {
    if !require_root("root_exits_a_pinned_exit_is_reached_through_a_relay_that_prefers_another") {
        return;
    }
    let test_start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new("rmtpin").unwrap();
    for n in ["l", "r1", "r2", "e1", "e2", "i"] {
        rig.add_ns(n).unwrap();
    }
    let (l_r1, r1_l) = rig.link("l", "r1").unwrap();
    let (r1_e1, e1_r1) = rig.link("r1", "e1").unwrap();
    let (r1_r2, r2_r1) = rig.link("r1", "r2").unwrap();
    let (r2_e2, e2_r2) = rig.link("r2", "e2").unwrap();
    let (e1_i, i_e1) = rig.link("e1", "i").unwrap();
    let (e2_i, i_e2) = rig.link("e2", "i").unwrap();
    add_addrs(
        &rig,
        &[
            ("l", &l_r1, "fd99:1::1/64"),
            ("r1", &r1_l, "fd99:1::2/64"),
            ("r1", &r1_e1, "fd99:2::1/64"),
            ("e1", &e1_r1, "fd99:2::2/64"),
            ("r1", &r1_r2, "fd99:3::1/64"),
            ("r2", &r2_r1, "fd99:3::2/64"),
            ("r2", &r2_e2, "fd99:4::1/64"),
            ("e2", &e2_r2, "fd99:4::2/64"),
            ("e1", &e1_i, "2001:db8:e1::1/64"),
            ("i", &i_e1, "2001:db8:e1::2/64"),
            ("e2", &e2_i, "2001:db8:e2::1/64"),
            ("i", &i_e2, "2001:db8:e2::2/64"),
            ("i", &"lo".to_string(), "2001:db8:99::9/128"),
        ],
    );
    // everyone reaches the registry on r1; r2 forwards e2's registry traffic; neither
    // forwards tunnel traffic (the rig's namespaces forward IPv6), so the tunnels are the
    // links of the drawing and r1 sees e2 two hops away
    for (ns, args) in [
        ("l", vec!["default", "via", "fd99:1::2"]),
        ("e1", vec!["default", "via", "2001:db8:e1::2"]),
        ("e2", vec!["default", "via", "2001:db8:e2::2"]),
        ("e1", vec!["fd99:1::/64", "via", "fd99:2::1"]),
        ("r2", vec!["fd99:1::/64", "via", "fd99:3::1"]),
        ("e2", vec!["fd99:1::/64", "via", "fd99:4::1"]),
        ("r1", vec!["fd99:4::/64", "via", "fd99:3::2"]),
    ] {
        let mut argv = vec!["ip", "-6", "route", "add"];
        argv.extend(args);
        rig.exec(ns, &argv).unwrap();
    }
    rig.exec("r2", &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();
    for ns in ["r1", "r2"] {
        rig.exec(
            ns,
            &[
                "nft",
                "add table ip6 rmt; add chain ip6 rmt pass { type filter hook forward priority 0; }; \
                 add rule ip6 rmt pass udp dport 6464 drop; add rule ip6 rmt pass udp sport 6464 drop",
            ],
        )
        .unwrap();
    }
    // the server's side counts echo requests by the exit they left by (NAT66 source)
    rig.exec(
        "i",
        &[
            "nft",
            "add table ip6 seen; add counter ip6 seen e1; add counter ip6 seen e2; \
             add chain ip6 seen in { type filter hook input priority 0; }; \
             add rule ip6 seen in ip6 saddr 2001:db8:e1::1 icmpv6 type echo-request counter name e1; \
             add rule ip6 seen in ip6 saddr 2001:db8:e2::1 icmpv6 type echo-request counter name e2",
        ],
    )
    .unwrap();

    let reg = NsRegistry::serve(
        &mut rig,
        tmp.path(),
        "r1",
        "fd99:1::2",
        19000 + ((std::process::id() + 300) % 1000) as u16,
        &["--network", "fd42:e2::/48"],
    );
    let _logs = LogsOnPanic(tmp.path().to_path_buf());
    let names = ["l", "r1", "r2", "e1", "e2"];
    let prefixes: Vec<_> = names.iter().map(|n| reg.join(&rig, n, Some(n))).collect();
    for n in ["e1", "e2"] {
        reg.cli(&["authorize", n, "exit", "::/0"]);
    }
    let at = |i: usize, addr: &str| format!("{}@[{addr}]:6464", prefixes[i]);
    let e2_prefix = prefixes[4].to_string();
    let (r1_from_l, r1_from_e1, r1_from_r2, r2_from_e2) = (
        at(1, "fd99:1::2"),
        at(1, "fd99:2::1"),
        at(1, "fd99:3::1"),
        at(2, "fd99:4::1"),
    );
    for (n, peer, extra) in [
        ("r1", None, vec![]),
        ("e1", Some(&r1_from_e1), vec!["--exit"]),
        ("r2", Some(&r1_from_r2), vec![]),
        ("e2", Some(&r2_from_e2), vec!["--exit"]),
        (
            "l",
            Some(&r1_from_l),
            vec!["--use-exit", e2_prefix.as_str()],
        ),
    ] {
        let mut args = vec!["--no-port-mapping"];
        if let Some(p) = peer {
            args.extend(["--peer", p.as_str()]);
        }
        args.extend(extra);
        spawn_up(&mut rig, tmp.path(), n, &args);
    }
    let rid = |i: usize| {
        re6mesh::control::router_id_text(&re6mesh::mesh::node::router_id_for(&prefixes[i]))
    };
    // the relay selects e1's exit route, so that is the only one it announces to l
    let dr1 = tmp.path().join("r1");
    let started = Instant::now();
    wait_for(
        "r1 to select e1's exit route",
        Duration::from_secs(30),
        || exit_in_use(&rig, "r1", &dr1).filter(|r| *r == rid(3)),
    );
    println!(
        "r1 selected e1's exit route {:?} after start; l pins e2",
        started.elapsed()
    );
    // l reaches the server, and every echo request left by e2
    let ping = wait_for(
        "l to reach the server through e2",
        Duration::from_secs(20),
        || {
            let o = rig
                .exec_status(
                    "l",
                    &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", SERVER],
                )
                .unwrap();
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
        },
    );
    println!(
        "l -> server: {}",
        ping.lines().rev().nth(1).unwrap_or_default()
    );
    let (via_e1, via_e2) = (seen(&rig, "i", "e1"), seen(&rig, "i", "e2"));
    assert!(
        via_e2 >= 3 && via_e1 == 0,
        "echo requests by e1: {via_e1}, by e2: {via_e2}"
    );
    println!("echo requests at the server: {via_e2} by e2, {via_e1} by e1");
    // `mesh status` names the pinned exit
    let st = status_json(&rig, "l", &tmp.path().join("l"));
    assert_eq!(
        st["exit"].as_str(),
        Some(format!("{e2_prefix} (e2), pinned").as_str()),
        "{st}"
    );
    println!("pinned exit test: {:?} in all", test_start.elapsed());
}
