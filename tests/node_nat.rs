#![cfg(target_os = "linux")]
//! Laptops behind home routers (issue "Laptops in the real world"), in a small internet of
//! network namespaces, all IPv4 underlay as at home:
//!
//! ```text
//!                 inet (bridge 203.0.113.0/24)
//!          ┌───────────────┼────────────────┐
//!   pub 203.0.113.10   r1 203.0.113.1     r2 203.0.113.2
//!   registry + P       NAT (masquerade)   NAT (masquerade random: symmetric,
//!                                              or masquerade like r1)
//!                          │                  │
//!                      l1 192.168.1.2     l2 192.168.2.2
//! ```
//!
//! No node is given `--endpoint` or `--peer`.

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;
use common::nodes::{MESH, NsRegistry, print_logs, sh};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use re6mesh::netns::{Rig, require_root};

struct Net {
    rig: Rig,
    tmp: tempfile::TempDir,
    prefixes: Vec<(String, ipnet::Ipv6Net)>,
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(self.tmp.path(), Some(25));
        }
    }
}

/// The small internet, the registry serving on pub, every node joined (not started).
/// `symmetric`: r2 picks a random port per flow; else it keeps the port as r1 does.
fn build(tag: &str, port: u16, symmetric: bool) -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new(tag).unwrap();
    for n in ["inet", "pub", "r1", "r2", "l1", "l2"] {
        rig.add_ns(n).unwrap();
    }
    sh(&rig, "inet", "ip link add br0 type bridge");
    sh(&rig, "inet", "ip link set br0 up");
    for (n, addr) in [
        ("pub", "203.0.113.10/24"),
        ("r1", "203.0.113.1/24"),
        ("r2", "203.0.113.2/24"),
    ] {
        let (mine, in_br) = rig.link(n, "inet").unwrap();
        sh(&rig, "inet", &format!("ip link set {in_br} master br0"));
        sh(&rig, n, &format!("ip addr add {addr} dev {mine}"));
    }
    for (r, l, lan) in [("r1", "l1", "192.168.1"), ("r2", "l2", "192.168.2")] {
        let (in_r, in_l) = rig.link(r, l).unwrap();
        sh(&rig, r, &format!("ip addr add {lan}.1/24 dev {in_r}"));
        sh(&rig, l, &format!("ip addr add {lan}.2/24 dev {in_l}"));
        sh(&rig, l, &format!("ip route add default via {lan}.1"));
        sh(&rig, r, "sysctl -qw net.ipv4.ip_forward=1");
        sh(&rig, r, "nft add table ip nat");
        // a home router's firewall: nothing unsolicited reaches the router itself (an
        // unsolicited packet to its public port would otherwise leave a conntrack entry
        // that makes the NAT pick another port for the laptop's own flow to that sender)
        sh(&rig, r, "nft add table inet fw");
        rig.exec(
            r,
            &[
                "nft",
                "add chain inet fw input { type filter hook input priority 0 ; policy drop ; }",
            ],
        )
        .unwrap();
        sh(
            &rig,
            r,
            "nft add rule inet fw input ct state established,related accept",
        );
        rig.exec(
            r,
            &[
                "nft",
                "add chain ip nat post { type nat hook postrouting priority 100 ; }",
            ],
        )
        .unwrap();
    }
    // r1: a home router's NAT (Linux keeps the source port when it can: endpoint-independent
    // mapping); r2: a new random port per flow (symmetric)
    sh(
        &rig,
        "r1",
        "nft add rule ip nat post oifname to-inet masquerade",
    );
    sh(
        &rig,
        "r2",
        if symmetric {
            "nft add rule ip nat post oifname to-inet masquerade random"
        } else {
            "nft add rule ip nat post oifname to-inet masquerade"
        },
    );

    let reg = NsRegistry::serve(
        &mut rig,
        tmp.path(),
        "pub",
        "203.0.113.10",
        port,
        &["--network", "fd47:aa::/48"],
    );
    let prefixes = ["pub", "l1", "l2"]
        .iter()
        .map(|n| (n.to_string(), reg.join(&rig, n, None)))
        .collect();
    Net { rig, tmp, prefixes }
}

impl Net {
    fn dir(&self, n: &str) -> PathBuf {
        self.tmp.path().join(n)
    }

    fn prefix(&self, n: &str) -> ipnet::Ipv6Net {
        self.prefixes
            .iter()
            .find(|(m, _)| m == n)
            .map(|(_, p)| *p)
            .unwrap()
    }

    fn addr(&self, n: &str) -> String {
        re6mesh::identity::node_address(&self.prefix(n)).to_string()
    }

    fn up(&mut self, n: &str) {
        let dir = self.dir(n);
        let log =
            Stdio::from(std::fs::File::create(self.tmp.path().join(format!("{n}.log"))).unwrap());
        self.rig
            .spawn(
                n,
                MESH,
                &[
                    "up",
                    "--foreground",
                    "-v",
                    "--state-dir",
                    dir.to_str().unwrap(),
                    "--listen",
                    "[::]:6464",
                    "--hello-interval",
                    "0.5",
                ],
                Stdio::null(),
                log,
            )
            .unwrap();
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        self.rig
            .exec_status(from, &["ping", "-6", "-c", "1", "-W", "1", &self.addr(to)])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn wait_ping(&self, from: &str, to: &str, timeout: Duration) -> Duration {
        let t = Instant::now();
        while !self.ping(from, to) {
            assert!(
                t.elapsed() < timeout,
                "{from} cannot reach {to} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        t.elapsed()
    }

    /// The selected route of node `n` to node `to`'s prefix: its next hop.
    fn next_hop(&self, n: &str, to: &str) -> Option<String> {
        let o = Command::new(MESH)
            .args(["routes", "--json", "--state-dir"])
            .arg(self.dir(n))
            .output()
            .ok()?;
        let want = self.prefix(to).to_string();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["selected"].as_bool() == Some(true) && r["prefix"].as_str() == Some(&want))
            .and_then(|r| r["next_hop"].as_str().map(str::to_owned))
    }

    /// `mesh peers --json` of node `n` (with `--far`: the far nodes too).
    fn peers(&self, n: &str, far: bool) -> Vec<serde_json::Value> {
        let mut cmd = Command::new(MESH);
        cmd.args(["peers", "--json", "--state-dir"])
            .arg(self.dir(n));
        if far {
            cmd.arg("--far");
        }
        let Ok(o) = cmd.output() else {
            return Vec::new();
        };
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn log(&self, n: &str) -> String {
        std::fs::read_to_string(self.tmp.path().join(format!("{n}.log"))).unwrap_or_default()
    }
}

#[test]
fn root_nat_laptops_behind_home_routers_learn_their_public_address_and_reach_each_other() {
    if !require_root(
        "root_nat_laptops_behind_home_routers_learn_their_public_address_and_reach_each_other",
    ) {
        return;
    }
    let port = 19000 + (std::process::id() % 1000) as u16;
    let mut net = build("rmtnat", port, true);
    let start = Instant::now();
    // the public node first: with no flag it finds its own address and reports it
    net.up("pub");
    net.up("l1");
    net.up("l2");
    let t1 = net.wait_ping("l1", "pub", Duration::from_secs(60));
    let t2 = net.wait_ping("l2", "pub", Duration::from_secs(60));
    println!(
        "NAT: l1 reaches the public node {t1:?}, l2 {t2:?} (after start: {:?})",
        start.elapsed()
    );
    // each laptop learnt from its neighbour where the outside sees it: its router's public
    // address (r1 keeps the port; r2 picks a random one)
    let t = Instant::now();
    while !(net.log("l1").contains("203.0.113.1:") && net.log("l2").contains("203.0.113.2:")) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the laptops never learnt their public addresses:\nl1: {}\nl2: {}",
            reach_lines(&net.log("l1")),
            reach_lines(&net.log("l2"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "NAT: l1 {}\nNAT: l2 {}",
        reach_lines(&net.log("l1")),
        reach_lines(&net.log("l2"))
    );
    assert!(
        reach_lines(&net.log("l1")).contains("203.0.113.1:6464"),
        "r1 keeps the port: {}",
        reach_lines(&net.log("l1"))
    );
    // the two laptops reach each other; without hole punching (not yet) through the public
    // node, which `mesh routes` shows as the next hop: relayed
    let t = net.wait_ping("l1", "l2", Duration::from_secs(60));
    let hop = net.next_hop("l1", "l2");
    println!(
        "NAT: l1 reaches l2 {t:?} later, next hop {hop:?} (the public node is {})",
        net.addr("pub")
    );
    assert_eq!(
        hop.as_deref(),
        Some(net.addr("pub").as_str()),
        "relayed through the public node"
    );
    assert!(net.ping("l2", "l1"));
    // `mesh peers` says so: l2 is a far node, relayed through the public node
    let far = net.peers("l1", true);
    let l2 = far
        .iter()
        .find(|p| p["prefix"].as_str() == Some(net.prefix("l2").to_string().as_str()))
        .unwrap_or_else(|| panic!("l2 not in l1's peers: {far:?}"));
    assert_eq!(l2["reach"], "relayed", "{l2}");
    assert_eq!(l2["via"], net.prefix("pub").to_string(), "{l2}");
}

/// Hole punching (issue 14): both homes behind endpoint-independent NATs (Linux masquerade
/// keeps the port), no `--endpoint`, no `--peer`. The laptops cannot dial each other (each
/// router drops what its laptop did not ask for), so after a failed dial one asks the other
/// through the mesh, both send handshakes at the agreed moment, and they get a direct
/// tunnel whose remote address is the other router's public address.
#[test]
fn root_nat_laptops_behind_endpoint_independent_nats_punch_a_direct_tunnel() {
    if !require_root("root_nat_laptops_behind_endpoint_independent_nats_punch_a_direct_tunnel") {
        return;
    }
    let port = 21000 + (std::process::id() % 1000) as u16;
    let mut net = build("rmtpunch", port, false);
    let start = Instant::now();
    net.up("pub");
    net.up("l1");
    net.up("l2");
    let l2 = net.prefix("l2").to_string();
    let t = Instant::now();
    let tunnel = loop {
        let found = net
            .peers("l1", false)
            .into_iter()
            .find(|p| p["prefix"].as_str() == Some(l2.as_str()));
        if let Some(p) = found {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no tunnel from l1 to l2 after 90 s:\nl1: {}\nl2: {}",
            punch_lines(&net.log("l1")),
            punch_lines(&net.log("l2"))
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "punch: l1 has a direct tunnel to l2 {:?} after start: {tunnel}\n{}",
        start.elapsed(),
        punch_lines(&net.log("l1"))
    );
    let remote: Option<std::net::SocketAddr> =
        tunnel["endpoint"].as_str().and_then(|e| e.parse().ok());
    assert_eq!(
        remote.map(|a| a.ip().to_canonical().to_string()).as_deref(),
        Some("203.0.113.2"),
        "the tunnel's remote is r2's public address: {tunnel}"
    );
    assert_eq!(tunnel["made"], "punched", "{tunnel}");
    // and it carries the traffic: l1's route to l2 goes straight to l2
    let t = Instant::now();
    while net.next_hop("l1", "l2").as_deref() != Some(net.addr("l2").as_str()) {
        assert!(t.elapsed() < Duration::from_secs(20), "route not direct");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(net.ping("l1", "l2"));
    let back = net
        .peers("l2", false)
        .into_iter()
        .find(|p| p["prefix"].as_str() == Some(net.prefix("l1").to_string().as_str()));
    eprintln!("punch: l2's side {back:?}");
}

/// The log lines about punching.
fn punch_lines(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("punch") || l.contains("tunnel up"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last "this node can be reached at" line of a log.
fn reach_lines(log: &str) -> String {
    log.lines()
        .rfind(|l| l.contains("this node can be reached at"))
        .unwrap_or("(none)")
        .to_string()
}

/// Roaming: l1 moves from home 1 to home 2 (its Wi-Fi changes: the old link's address and
/// route go, a new link, address and route come) during a 10 Hz ping to l2. Its tunnel to the
/// public node was dialled by l1, so QUIC moves it to the new address (connection migration:
/// the public node sees the same connection arrive from r2's address and validates the new
/// path) instead of timing out and dialling again. The node learns of the move from the OS
/// (netlink), makes its tunnels prove their paths, and announces its new public address
/// (measured: 0.3–0.4 s after the move; the longest ping gap 0 ms, three runs).
#[test]
fn root_nat_a_laptop_moving_to_another_home_keeps_talking() {
    if !require_root("root_nat_a_laptop_moving_to_another_home_keeps_talking") {
        return;
    }
    let port = 20000 + (std::process::id() % 1000) as u16;
    let mut net = build("rmtroam", port, true);
    // home 2's second LAN port, for l1 once it moves
    let (in_r2, in_l1) = net.rig.link("r2", "l1").unwrap();
    sh(
        &net.rig,
        "r2",
        &format!("ip addr add 192.168.3.1/24 dev {in_r2}"),
    );
    net.up("pub");
    net.up("l1");
    net.up("l2");
    net.wait_ping("l1", "l2", Duration::from_secs(60));
    net.wait_ping("l2", "l1", Duration::from_secs(60));
    let out = net.tmp.path().join("roam-ping.out");
    let pid = net
        .rig
        .spawn(
            "l1",
            "ping",
            &["-6", "-i", "0.1", "-c", "150", "-W", "1", &net.addr("l2")],
            Stdio::from(std::fs::File::create(&out).unwrap()),
            Stdio::null(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let ups_before = net.log("l1").matches("tunnel up").count();
    let reach_before = net.log("l1").matches("this node can be reached at").count();
    // the move
    sh(&net.rig, "l1", "ip route del default");
    sh(&net.rig, "l1", "ip addr flush dev to-r1");
    sh(
        &net.rig,
        "l1",
        &format!("ip addr add 192.168.3.2/24 dev {in_l1}"),
    );
    sh(&net.rig, "l1", "ip route add default via 192.168.3.1");
    let moved = Instant::now();
    // l1 learns where the outside sees it now (r2's public address, from the public node)
    // and announces it: the time from the move
    let mut announced = None;
    let t = Instant::now();
    while net
        .rig
        .child(pid)
        .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    {
        assert!(t.elapsed() < Duration::from_secs(40), "ping never ended");
        if announced.is_none() && new_reach_at(&net.log("l1"), reach_before, "203.0.113.2:") {
            announced = Some(moved.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    while announced.is_none() && moved.elapsed() < Duration::from_secs(40) {
        if new_reach_at(&net.log("l1"), reach_before, "203.0.113.2:") {
            announced = Some(moved.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&out).unwrap();
    let seqs: Vec<u32> = text
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|s| s.parse().ok())
        })
        .collect();
    let mut longest = 0;
    let mut prev = 0;
    for s in seqs.iter().copied().chain([151]) {
        longest = longest.max(s.saturating_sub(prev + 1));
        prev = s;
    }
    net.wait_ping("l1", "l2", Duration::from_secs(60));
    let ups_after = net.log("l1").matches("tunnel up").count();
    let l1_log = net.log("l1");
    let up_lines: Vec<&str> = l1_log
        .lines()
        .filter_map(|l| l.split("tunnel up").nth(1))
        .collect();
    println!(
        "roaming: {} of 150 pings answered across the move ({:?} ago), longest gap {} ms; \
         new public candidate announced {announced:?} after the move; \
         tunnels l1 brought up: {ups_before} before the move, {} after ({up_lines:?})",
        seqs.len(),
        moved.elapsed(),
        longest * 100,
        ups_after - ups_before,
    );
    assert!(seqs.len() >= 100, "{text}");
    // the OS told the node (netlink), which asked its tunnels to prove their paths: the
    // public node saw the new address and told l1, which announced it (before the netlink
    // watch: never, the old observation stayed)
    assert!(
        l1_log.contains("the host's network changed"),
        "no network change noticed"
    );
    assert!(
        announced.is_some_and(|t| t < Duration::from_secs(10)),
        "l1 did not announce its new public address: {}",
        reach_lines(&l1_log)
    );
    // the public node's side: the tunnel moved to r2's address (QUIC migration, seen by its
    // shell), and `mesh peers` says so
    let l1_prefix = net.prefix("l1").to_string();
    let t = Instant::now();
    loop {
        let seen = net
            .peers("pub", false)
            .into_iter()
            .find(|p| p["prefix"].as_str() == Some(l1_prefix.as_str()))
            .and_then(|p| p["endpoint"].as_str().map(str::to_owned));
        if seen.as_deref().is_some_and(|e| e.contains("203.0.113.2")) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the public node still sees l1 at {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // migration, not a new handshake: l1 brought up no new tunnel to the public node
    let pub_prefix = format!("peer={}", net.prefix("pub"));
    let to_pub = up_lines.iter().filter(|l| l.contains(&pub_prefix)).count();
    assert_eq!(
        to_pub, 1,
        "the tunnel to the public node was dialled again: {up_lines:?}"
    );
}

/// Whether a "this node can be reached at" line after the first `skip` ones names `at`.
fn new_reach_at(log: &str, skip: usize, at: &str) -> bool {
    log.lines()
        .filter(|l| l.contains("this node can be reached at"))
        .skip(skip)
        .any(|l| l.contains(at))
}
