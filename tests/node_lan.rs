#![cfg(target_os = "linux")]
//! `mesh up --lan` end to end (root): nodes on a shared LAN discover each other with
//! MAC-signed Hellos and get tunnels over their link-local addresses; a node of another
//! network on the same LAN is never dialled.
//!
//! ```text
//!            reg (two registries on [fd99::100]; forwards the underlay, drops UDP 6464)
//!          /  |  \
//!         a   b   c        underlay veths: registry only (no --peer, no --endpoint)
//!          \  |  /
//!            lan (bridge br0)  the LAN: a, b in network 1, c in network 2
//! ```

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use re6mesh::netns::{Rig, require_root};

const MESH: &str = env!("CARGO_BIN_EXE_mesh");
const REG_ADDR: &str = "fd99::100";

/// Prints the logs if the test fails after this point (or always with `MESH_TEST_LOGS=1`).
struct LogsOnPanic(PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("MESH_TEST_LOGS").is_some() {
            for f in ["a.log", "b.log", "c.log", "registry1.log", "registry2.log"] {
                eprintln!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(self.0.join(f)).unwrap_or_default()
                );
            }
        }
    }
}

fn ns_mesh(rig: &Rig, ns: &str, args: &[&str]) -> std::process::Output {
    let mut argv = vec![MESH];
    argv.extend_from_slice(args);
    rig.exec_status(ns, &argv).unwrap()
}

fn status(rig: &Rig, ns: &str, dir: &Path) -> serde_json::Value {
    let o = ns_mesh(
        rig,
        ns,
        &["status", "--json", "--state-dir", dir.to_str().unwrap()],
    );
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

fn peers(rig: &Rig, ns: &str, dir: &Path) -> Vec<serde_json::Value> {
    let o = ns_mesh(
        rig,
        ns,
        &["peers", "--json", "--state-dir", dir.to_str().unwrap()],
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A registry (state in `dir`) for `network`, served in namespace `reg` on `port`.
fn registry(rig: &mut Rig, tmp: &Path, name: &str, network: &str, port: u16) -> PathBuf {
    let dir = tmp.join(name);
    let o = Command::new(MESH)
        .args([
            "registry",
            "init",
            "--state-dir",
            dir.to_str().unwrap(),
            "--url",
            &format!("https://[{REG_ADDR}]:{port}"),
            "--network",
            network,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = std::fs::File::create(tmp.join(format!("{name}.log"))).unwrap();
    rig.spawn(
        "reg",
        MESH,
        &[
            "registry",
            "serve",
            "--state-dir",
            dir.to_str().unwrap(),
            "--listen",
            &format!("[::]:{port}"),
        ],
        Stdio::null(),
        Stdio::from(log),
    )
    .unwrap();
    dir
}

fn join(rig: &Rig, ns: &str, reg: &Path, node: &Path) -> ipnet::Ipv6Net {
    let token = Command::new(MESH)
        .args([
            "registry",
            "token",
            "create",
            "--state-dir",
            reg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    // The registry may still be starting.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = ns_mesh(
            rig,
            ns,
            &["join", &token, "--state-dir", node.to_str().unwrap()],
        );
        if o.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "join {ns}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    re6mesh::state::load(node).unwrap().facts.prefix
}

#[test]
fn root_lan_discovery_tunnels_neighbours_and_ignores_another_network() {
    if !require_root("root_lan_discovery_tunnels_neighbours_and_ignores_another_network") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new("rmtlan").unwrap();
    for n in ["reg", "lan", "a", "b", "c"] {
        rig.add_ns(n).unwrap();
    }
    // Underlay: each node to the registry namespace, which routes between them but drops
    // tunnel UDP, so the only way a tunnel can come up is the LAN.
    rig.exec(
        "reg",
        &[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{REG_ADDR}/128"),
            "dev",
            "lo",
        ],
    )
    .unwrap();
    for (i, n) in ["a", "b", "c"].into_iter().enumerate() {
        let (node_end, reg_end) = rig.link(n, "reg").unwrap();
        let net = format!("fd99:{}::", i + 1);
        rig.exec(
            "reg",
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{net}1/64"),
                "dev",
                &reg_end,
                "nodad",
            ],
        )
        .unwrap();
        rig.exec(
            n,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{net}2/64"),
                "dev",
                &node_end,
                "nodad",
            ],
        )
        .unwrap();
        rig.exec(
            n,
            &[
                "ip",
                "-6",
                "route",
                "add",
                "fd99::/16",
                "via",
                &format!("{net}1"),
            ],
        )
        .unwrap();
    }
    let rules = tmp.path().join("reg.nft");
    std::fs::write(
        &rules,
        "table inet lan_test {
           chain block_tunnels { type filter hook forward priority 0; udp dport 6464 drop; udp sport 6464 drop; }
         }",
    )
    .unwrap();
    rig.exec("reg", &["nft", "-f", rules.to_str().unwrap()])
        .unwrap();
    // The LAN: a bridge (multicast snooping off: every port hears ff02::1:6).
    rig.exec(
        "lan",
        &[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    )
    .unwrap();
    rig.exec("lan", &["ip", "link", "set", "br0", "up"])
        .unwrap();
    let mut lan_if = String::new();
    for n in ["a", "b", "c"] {
        let (node_end, bridge_end) = rig.link(n, "lan").unwrap();
        rig.exec("lan", &["ip", "link", "set", &bridge_end, "master", "br0"])
            .unwrap();
        lan_if = node_end;
    }

    let reg1 = registry(&mut rig, tmp.path(), "registry1", "fd42:aa::/48", 8443);
    let reg2 = registry(&mut rig, tmp.path(), "registry2", "fd42:bb::/48", 8444);
    let _logs = LogsOnPanic(tmp.path().to_path_buf());
    let (da, db, dc) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let pa = join(&rig, "a", &reg1, &da);
    let pb = join(&rig, "b", &reg1, &db);
    let pc = join(&rig, "c", &reg2, &dc);

    let started = Instant::now();
    for (n, dir) in [("a", &da), ("b", &db), ("c", &dc)] {
        let log = std::fs::File::create(tmp.path().join(format!("{n}.log"))).unwrap();
        rig.spawn(
            n,
            "env",
            &[
                "MESH_LOG=info,re6mesh::mesh::lan_discovery=debug",
                MESH,
                "up",
                "--foreground",
                "--state-dir",
                dir.to_str().unwrap(),
                "--listen",
                "[::]:6464",
                "--lan",
                &lan_if,
                "--hello-interval",
                "0.5",
                "--registry-poll",
                "0",
            ],
            Stdio::null(),
            Stdio::from(log),
        )
        .unwrap();
    }

    // a pings b's node address through the tunnel over the LAN.
    let b_addr = re6mesh::identity::node_address(&pb).to_string();
    let a_addr = re6mesh::identity::node_address(&pa).to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_reply = loop {
        let ping = rig
            .exec_status("a", &["ping", "-6", "-c", "1", "-W", "1", &b_addr])
            .unwrap();
        if ping.status.success() {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "a never reached b over the LAN:\n{}",
            String::from_utf8_lossy(&ping.stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("LAN discovery: first ping reply a -> b {first_reply:?} after start");
    let ping = rig
        .exec_status(
            "b",
            &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", &a_addr],
        )
        .unwrap();
    assert!(
        ping.status.success(),
        "ping b -> a failed:\n{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // The tunnel runs over the link-local addresses of the LAN.
    let a_peers = peers(&rig, "a", &da);
    assert_eq!(a_peers.len(), 1, "{a_peers:?}");
    assert_eq!(a_peers[0]["prefix"], pb.to_string());
    let endpoint = a_peers[0]["endpoint"].as_str().unwrap_or_default();
    assert!(endpoint.starts_with("[fe80::"), "{endpoint}");

    // c (another network on the same LAN) hears a and b and is heard by them for many hello
    // intervals, yet nobody dials anybody across networks.
    std::thread::sleep(Duration::from_secs(3));
    for (n, dir, want) in [("a", &da, 1), ("b", &db, 1), ("c", &dc, 0)] {
        let st = status(&rig, n, dir);
        assert_eq!(st["tunnels"], want, "{n}: {st}");
    }
    assert!(peers(&rig, "c", &dc).is_empty());
    let log = |n: &str| std::fs::read_to_string(tmp.path().join(format!("{n}.log"))).unwrap();
    let (la, lb, lc) = (log("a"), log("b"), log("c"));
    for (n, l) in [("a", &la), ("b", &lb), ("c", &lc)] {
        assert!(
            l.lines()
                .any(|x| x.contains("LAN discovery packet ignored") && x.contains("bad MAC")),
            "{n} logged no MAC rejection:\n{l}"
        );
    }
    let c_prefix = pc.to_string();
    for (n, l) in [("a", &la), ("b", &lb)] {
        assert!(
            !l.contains(&c_prefix),
            "{n} mentions the foreign node {c_prefix}:\n{l}"
        );
    }
    assert!(!lc.contains(&pa.to_string()) && !lc.contains(&pb.to_string()));

    // A node that is down falls silent on the LAN, and speaks again once up: counted as the
    // packets from a's link-local address that c (another network) logs and ignores.
    let a_ll = {
        let o = rig
            .exec(
                "a",
                &[
                    "ip", "-6", "-o", "addr", "show", "dev", &lan_if, "scope", "link",
                ],
            )
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        text.split_whitespace()
            .find_map(|w| w.strip_suffix("/64"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no link-local address on a's LAN interface: {text}"))
    };
    let heard_from_a = || {
        log("c")
            .lines()
            .filter(|l| l.contains("LAN discovery packet ignored") && l.contains(&a_ll))
            .count()
    };
    let window = Duration::from_secs(2);
    let before = heard_from_a();
    std::thread::sleep(window);
    let up = heard_from_a() - before;
    assert!(up >= 2, "a announced {up} times in {window:?} while up");
    let o = ns_mesh(&rig, "a", &["down", "--state-dir", da.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    std::thread::sleep(Duration::from_millis(300));
    let before = heard_from_a();
    std::thread::sleep(window);
    let down = heard_from_a() - before;
    assert_eq!(down, 0, "a announced itself {down} times while down");
    let o = ns_mesh(&rig, "a", &["up", "--state-dir", da.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let before = heard_from_a();
    std::thread::sleep(window);
    let again = heard_from_a() - before;
    println!(
        "LAN discovery: a announced {up} times in 2 s while up, {down} while down, {again} after `mesh up`"
    );
    assert!(
        again >= 2,
        "a announced {again} times in {window:?} after up"
    );
}

#[test]
fn root_lan_unknown_interface_fails_with_one_sentence() {
    if !require_root("root_lan_unknown_interface_fails_with_one_sentence") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new("rmtlanbad").unwrap();
    rig.add_ns("reg").unwrap();
    rig.add_ns("a").unwrap();
    rig.exec(
        "reg",
        &[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{REG_ADDR}/128"),
            "dev",
            "lo",
        ],
    )
    .unwrap();
    let (node_end, reg_end) = rig.link("a", "reg").unwrap();
    rig.exec(
        "reg",
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd99:1::1/64",
            "dev",
            &reg_end,
            "nodad",
        ],
    )
    .unwrap();
    rig.exec(
        "a",
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd99:1::2/64",
            "dev",
            &node_end,
            "nodad",
        ],
    )
    .unwrap();
    rig.exec(
        "a",
        &["ip", "-6", "route", "add", "fd99::/16", "via", "fd99:1::1"],
    )
    .unwrap();
    let reg = registry(&mut rig, tmp.path(), "registry1", "fd42:aa::/48", 8443);
    let da = tmp.path().join("a");
    join(&rig, "a", &reg, &da);
    let o = ns_mesh(
        &rig,
        "a",
        &[
            "up",
            "--foreground",
            "--state-dir",
            da.to_str().unwrap(),
            "--registry-poll",
            "0",
            "--lan",
            "nosuch0",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("nosuch0") && last.contains("does not exist"),
        "{err}"
    );
    println!("{last}");
}
