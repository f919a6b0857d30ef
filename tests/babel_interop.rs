#![cfg(target_os = "linux")]
//! `mesh babel run` against Debian's babeld (1.12.1) in network namespaces joined by veth,
//! every router with the same HMAC-SHA256 key and short timers (hello 1 s, update 4 s).
//! Root only (`root_*`, one at a time); every measured time is printed (`--nocapture`).

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use re6mesh::netns::{Rig, require_root};

const MESH: &str = env!("CARGO_BIN_EXE_mesh");
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const WRONG_KEY: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

/// A node of the rig: namespace name, own prefixes, loopback addresses.
struct Node {
    name: &'static str,
    v6: &'static str,
    v4: &'static str,
    addr6: &'static str,
    addr4: &'static str,
}

const A: Node = Node {
    name: "a",
    v6: "2001:db8:a::/64",
    v4: "198.51.100.0/26",
    addr6: "2001:db8:a::1",
    addr4: "198.51.100.1",
};
const M: Node = Node {
    name: "m",
    v6: "2001:db8:b::/64",
    v4: "198.51.100.64/26",
    addr6: "2001:db8:b::1",
    addr4: "198.51.100.65",
};
const C: Node = Node {
    name: "c",
    v6: "2001:db8:c::/64",
    v4: "198.51.100.128/26",
    addr6: "2001:db8:c::1",
    addr4: "198.51.100.129",
};
const X: Node = Node {
    name: "x",
    v6: "2001:db8:ff01::/64",
    v4: "198.51.100.192/28",
    addr6: "2001:db8:ff01::1",
    addr4: "198.51.100.193",
};
const Y: Node = Node {
    name: "y",
    v6: "2001:db8:ff02::/64",
    v4: "198.51.100.208/28",
    addr6: "2001:db8:ff02::1",
    addr4: "198.51.100.209",
};

/// A source-specific route (RFC 9079): [`SS_DST`] from a's prefix, redistributed by babeld
/// on a in the line test.
const SS_DST: &str = "2001:db8:5500::/48";

struct Lab {
    rig: Rig,
    dir: tempfile::TempDir,
    next_net: u8,
}

fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Lab {
    fn new(tag: &str) -> Lab {
        assert!(
            have("babeld"),
            "babeld is not installed (apt-get install babeld)"
        );
        Lab {
            rig: Rig::new(tag).expect("rig"),
            dir: tempfile::tempdir().expect("tempdir"),
            next_net: 0,
        }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// A namespace with the node's addresses on lo and blackhole routes for its prefixes
    /// (what babeld redistributes; `mesh babel run` announces with `--announce`).
    fn node(&mut self, n: &Node) {
        self.rig.add_ns(n.name).expect("add_ns");
        let ex = |args: &[&str]| self.rig.exec(n.name, args).expect("exec");
        ex(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        ex(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/128", n.addr6),
            "dev",
            "lo",
        ]);
        ex(&["ip", "addr", "add", &format!("{}/32", n.addr4), "dev", "lo"]);
        // babeld redistributes `proto static` routes but not `proto boot` (the default).
        ex(&[
            "ip",
            "-6",
            "route",
            "add",
            "blackhole",
            n.v6,
            "proto",
            "static",
        ]);
        ex(&["ip", "route", "add", "blackhole", n.v4, "proto", "static"]);
    }

    /// A veth link, with an IPv4 /29 from 198.18.0.0/24 (benchmarking range) on each end.
    fn link(&mut self, a: &str, b: &str) -> (String, String) {
        let (ia, ib) = self.rig.link(a, b).expect("link");
        let n = self.next_net;
        self.next_net += 1;
        let base = n * 8;
        self.rig
            .exec(
                a,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("198.18.0.{}/29", base + 1),
                    "dev",
                    &ia,
                ],
            )
            .expect("addr");
        self.rig
            .exec(
                b,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("198.18.0.{}/29", base + 2),
                    "dev",
                    &ib,
                ],
            )
            .expect("addr");
        (ia, ib)
    }

    /// One link shared by `members`: a bridge (no STP, no multicast snooping) in namespace
    /// `lan`, each member joined to it by a veth named `to-lan`, with an IPv4 address from
    /// 198.18.1.0/24. Returns the members' interface name.
    fn shared_link(&mut self, members: &[&str]) -> String {
        self.rig.add_ns("lan").expect("add_ns lan");
        let br = |args: &[&str]| self.rig.exec("lan", args).expect("bridge");
        br(&[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ]);
        br(&["ip", "link", "set", "br0", "up"]);
        let mut ifc = String::new();
        for (i, m) in members.iter().enumerate() {
            let (mine, port) = self.rig.link(m, "lan").expect("link");
            self.rig
                .exec("lan", &["ip", "link", "set", &port, "master", "br0"])
                .expect("bridge port");
            self.rig
                .exec(
                    m,
                    &[
                        "ip",
                        "addr",
                        "add",
                        &format!("198.18.1.{}/24", i + 1),
                        "dev",
                        &mine,
                    ],
                )
                .expect("addr");
            ifc = mine;
        }
        ifc
    }

    fn babeld(&mut self, n: &Node, ifaces: &[&str], key: Option<&str>, tag: &str) -> u32 {
        let mut conf = String::new();
        let keyref = match key {
            Some(k) => {
                conf.push_str(&format!("key id k1 type hmac-sha256 value {k}\n"));
                " key k1"
            }
            None => "",
        };
        conf.push_str(&format!(
            "default type wired hello-interval 1 update-interval 4{keyref}\n"
        ));
        conf.push_str(&format!("redistribute ip {} eq 64 allow\n", n.v6));
        // the source-specific route `ss_route` adds (RFC 9079), where there is one
        conf.push_str(&format!("redistribute ip {SS_DST} eq 48 allow\n"));
        let v4len = n.v4.split('/').nth(1).unwrap_or("26");
        conf.push_str(&format!("redistribute ip {} eq {v4len} allow\n", n.v4));
        conf.push_str("redistribute local deny\nredistribute deny\n");
        // babeld's read-only local interface, for `babeld_dump`.
        let local = self.path(&format!("{}-{tag}.sock", n.name));
        conf.push_str(&format!("local-path {}\n", local.display()));
        let cf = self.path(&format!("{}-{tag}.conf", n.name));
        std::fs::write(&cf, conf).expect("conf");
        let pid = self.path(&format!("{}-{tag}.pid", n.name));
        let state = self.path(&format!("{}.state", n.name));
        let log = File::create(self.path(&format!("{}-{tag}.log", n.name))).expect("log");
        let mut args: Vec<String> = vec![
            "-c".into(),
            cf.display().to_string(),
            "-I".into(),
            pid.display().to_string(),
            "-S".into(),
            state.display().to_string(),
        ];
        args.extend(ifaces.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = log.try_clone().expect("log");
        self.rig
            .spawn(n.name, "babeld", &args, Stdio::from(log), Stdio::from(err))
            .expect("spawn babeld")
    }

    /// babeld's `dump` (neighbours, routes, …) through its local interface (`local-path`).
    fn babeld_dump(&self, ns: &str, tag: &str) -> String {
        use std::io::{Read, Write};
        let path = self.path(&format!("{ns}-{tag}.sock"));
        let Ok(mut c) = std::os::unix::net::UnixStream::connect(&path) else {
            return String::new();
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = c.write_all(b"dump\nquit\n");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    }

    fn control(&self) -> PathBuf {
        self.path("m.sock")
    }

    fn mesh(&mut self, n: &Node, ifaces: &[&str], tag: &str) -> u32 {
        let sock = self.control();
        let log = File::create(self.path(&format!("{}-{tag}.log", n.name))).expect("log");
        let mut args: Vec<String> = vec!["-v".into(), "babel".into(), "run".into()];
        for i in ifaces {
            args.push("--iface".into());
            args.push(i.to_string());
        }
        for p in [n.v6, n.v4] {
            args.push("--announce".into());
            args.push(p.into());
        }
        let key_file = self.path(&format!("{}.key", n.name));
        std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
        args.push("--key-file".into());
        args.push(key_file.display().to_string());
        for a in [
            "--key-alg",
            "hmac-sha256",
            "--hello-interval",
            "1",
            "--update-interval",
            "4",
        ] {
            args.push(a.into());
        }
        args.push("--control".into());
        args.push(sock.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = log.try_clone().expect("log");
        self.rig
            .spawn(n.name, MESH, &args, Stdio::from(log), Stdio::from(err))
            .expect("spawn mesh")
    }

    /// Kernel route for `prefix` in namespace `ns` (`ip route show exact`), empty if none.
    /// `ip -6 route show SS_DST from SRC` in `ns`: the source-specific route, if installed.
    fn ss_kroute(&self, ns: &str, src: &str) -> String {
        self.rig
            .exec_status(ns, &["ip", "-6", "route", "show", SS_DST, "from", src])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    fn kroute(&self, ns: &str, prefix: &str) -> String {
        let fam = if prefix.contains(':') { "-6" } else { "-4" };
        self.rig
            .exec_status(ns, &["ip", fam, "route", "show", "exact", prefix])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// Whether `ns` has a usable Babel-learnt route (babeld: proto babel; mesh: proto 250).
    /// babeld keeps routes whose metric is infinite as `unreachable` routes: not learnt.
    fn learnt(&self, ns: &str, prefix: &str) -> bool {
        self.kroute(ns, prefix).lines().any(|l| {
            (l.contains("proto babel") || l.contains("proto 250")) && !l.starts_with("unreachable")
        })
    }

    fn ping(&self, ns: &str, src: &str, dst: &str) -> bool {
        self.rig
            .exec_status(ns, &["ping", "-c", "1", "-W", "1", "-I", src, dst])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn mesh_cli(&self, what: &str) -> String {
        let out = std::process::Command::new(MESH)
            .args(["babel", what, "--control"])
            .arg(self.control())
            .arg("--json")
            .output()
            .expect("mesh babel");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn mesh_routes(&self) -> Vec<serde_json::Value> {
        self.mesh_cli("routes")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn mesh_has(&self, prefix: &str) -> bool {
        self.mesh_routes().iter().any(|r| {
            r["prefix"] == prefix && r["selected"] == true && r["metric"].as_u64() < Some(65535)
        })
    }

    fn log(&self, f: &str) -> String {
        std::fs::read_to_string(self.path(f)).unwrap_or_default()
    }

    fn dump(&self, files: &[&str]) {
        for f in files {
            eprintln!("---- {f}\n{}", self.log(f));
        }
    }
}

/// Polls `f` every 50 ms until it is true or `limit` passes; returns the time it took.
fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// a(babeld) — m(mesh) — c(babeld). Returns the lab and the interface names.
fn line(tag: &str) -> (Lab, [String; 4]) {
    let mut lab = Lab::new(tag);
    for n in [&A, &M, &C] {
        lab.node(n);
    }
    let (am, ma) = lab.link("a", "m");
    let (mc, cm) = lab.link("m", "c");
    (lab, [am, ma, mc, cm])
}

fn all_learnt(lab: &Lab) -> bool {
    lab.learnt("a", C.v6)
        && lab.learnt("a", C.v4)
        && lab.learnt("a", M.v6)
        && lab.learnt("a", M.v4)
        && lab.learnt("c", A.v6)
        && lab.learnt("c", A.v4)
        && lab.learnt("c", M.v6)
        && lab.learnt("c", M.v4)
        && lab.learnt("m", A.v6)
        && lab.learnt("m", A.v4)
        && lab.learnt("m", C.v6)
        && lab.learnt("m", C.v4)
}

#[test]
fn root_babel_line_babeld_mesh_babeld() {
    if !require_root("root_babel_line_babeld_mesh_babeld") {
        return;
    }
    let (mut lab, [am, ma, mc, cm]) = line("bbline");
    // a: a source-specific route for babeld to redistribute (`SS_DST from` a's prefix)
    lab.rig
        .exec(
            "a",
            &[
                "ip",
                "-6",
                "route",
                "add",
                "blackhole",
                SS_DST,
                "from",
                A.v6,
                "proto",
                "static",
            ],
        )
        .expect("source-specific route");
    let t0 = Instant::now();
    lab.babeld(&A, &[&am], Some(KEY), "1");
    lab.mesh(&M, &[&ma, &mc], "1");
    lab.babeld(&C, &[&cm], Some(KEY), "1");
    let learnt = wait(Duration::from_secs(30), || all_learnt(&lab));
    let Some(_) = learnt else {
        lab.dump(&["a-1.log", "m-1.log", "c-1.log"]);
        eprintln!("mesh routes: {:?}", lab.mesh_routes());
        eprintln!("mesh stats: {}", lab.mesh_cli("stats"));
        for ns in ["a", "m", "c"] {
            let o = lab.rig.exec_status(ns, &["ip", "-6", "route"]).expect("ip");
            eprintln!("{ns} routes:\n{}", String::from_utf8_lossy(&o.stdout));
        }
        panic!("not every prefix was learnt everywhere within 30 s");
    };
    println!(
        "[mesh] line a-m-c: every prefix (IPv6 and IPv4) learnt everywhere {} after start",
        secs(t0.elapsed())
    );
    // Multi-hop: a's route to c goes through m; the control socket lists it too.
    assert!(
        lab.kroute("a", C.v6).contains("via fe80"),
        "{}",
        lab.kroute("a", C.v6)
    );
    for p in [A.v6, A.v4, C.v6, C.v4] {
        assert!(lab.mesh_has(p), "mesh babel routes lacks {p}");
    }
    let routes = lab.mesh_routes();
    let own = routes
        .iter()
        .find(|r| r["prefix"] == M.v6)
        .expect("own prefix listed");
    assert_eq!(own["local"], true);
    for f in [
        "prefix",
        "next_hop",
        "iface",
        "metric",
        "router_id",
        "seqno",
        "selected",
        "local",
    ] {
        assert!(own.get(f).is_some(), "field {f} missing");
    }
    // Packets flow end to end through our router, both families.
    let p6 = wait(Duration::from_secs(10), || lab.ping("a", A.addr6, C.addr6));
    let p4 = wait(Duration::from_secs(10), || lab.ping("a", A.addr4, C.addr4));
    assert!(p6.is_some(), "IPv6 ping a -> c through m failed");
    assert!(p4.is_some(), "IPv4 ping a -> c through m failed");
    assert!(lab.ping("c", C.addr6, A.addr6) && lab.ping("c", C.addr4, A.addr4));
    assert!(lab.ping("a", A.addr6, M.addr6) && lab.ping("a", A.addr4, M.addr4));
    println!("[mesh] line: ping a -> c through m OK (IPv6 and IPv4)");
    // The source-specific route: m installs it in its kernel with its source prefix (`ip -6
    // route … from`), lists it, and passes it on to c's babeld, which installs it too.
    let ss = wait(Duration::from_secs(15), || {
        let m = lab.ss_kroute("m", A.v6);
        let c = lab.ss_kroute("c", A.v6);
        m.contains("proto 250") && m.contains("via fe80") && c.contains("proto babel")
    });
    let (m, c) = (lab.ss_kroute("m", A.v6), lab.ss_kroute("c", A.v6));
    assert!(
        ss.is_some(),
        "the source-specific route {SS_DST} from {} is not installed on m ({m:?}) and c ({c:?})",
        A.v6
    );
    println!("[mesh] line: source-specific route on m: {m}; on c: {c}");
    let listed = format!("{SS_DST} from {}", A.v6);
    assert!(
        lab.mesh_routes()
            .iter()
            .any(|r| r["prefix"] == listed.as_str()),
        "mesh babel routes lacks {listed}"
    );
}

/// Starts the router in the middle: ours, or babeld for the reference measurements.
fn start_middle(lab: &mut Lab, mesh: bool, ifaces: &[&str], tag: &str) -> u32 {
    if mesh {
        lab.mesh(&M, ifaces, tag)
    } else {
        lab.babeld(&M, ifaces, Some(KEY), tag)
    }
}

/// Line a — m — c: SIGTERM of an end (c), restart; SIGTERM of the middle, restart.
/// `mesh`: our router in the middle (else babeld, for reference). `who` labels the output.
fn sigterm_scenario(tag: &str, mesh: bool) {
    let who = if mesh { "mesh" } else { "babeld(reference)" };
    let (mut lab, [am, ma, mc, cm]) = line(tag);
    let t0 = Instant::now();
    lab.babeld(&A, &[&am], Some(KEY), "1");
    let m1 = start_middle(&mut lab, mesh, &[&ma, &mc], "1");
    let c1 = lab.babeld(&C, &[&cm], Some(KEY), "1");
    let learnt = wait(Duration::from_secs(30), || all_learnt(&lab));
    if learnt.is_none() {
        lab.dump(&["a-1.log", "m-1.log", "c-1.log"]);
    }
    assert!(learnt.is_some(), "initial convergence");
    println!(
        "[{who}] line a-m-c: every prefix learnt everywhere {} after start",
        secs(t0.elapsed())
    );

    // 1. SIGTERM of babeld c: its prefixes leave m (the kernel, and our table) and a.
    let t = Instant::now();
    lab.rig.stop(c1, Duration::from_secs(5));
    let gone = wait(Duration::from_secs(10), || {
        !lab.learnt("m", C.v6)
            && !lab.learnt("m", C.v4)
            && !lab.learnt("a", C.v6)
            && !lab.learnt("a", C.v4)
            && (!mesh || !lab.mesh_has(C.v6))
    });
    assert!(gone.is_some(), "c's prefixes were not withdrawn");
    let gone = t.elapsed();
    println!(
        "[{who}] SIGTERM of end c: its prefixes gone from m and a {} after SIGTERM",
        secs(gone)
    );
    assert!(
        gone < Duration::from_secs(2),
        "withdrawal took {}",
        secs(gone)
    );
    let t = Instant::now();
    lab.babeld(&C, &[&cm], Some(KEY), "2");
    let back = wait(Duration::from_secs(30), || all_learnt(&lab));
    assert!(back.is_some(), "no re-convergence after restarting c");
    println!(
        "[{who}] restart of c: everything learnt again {} after start",
        secs(t.elapsed())
    );

    // 2. SIGTERM of the middle router: its prefixes (and everything through it) leave a and c.
    let t = Instant::now();
    let st = lab.rig.stop(m1, Duration::from_secs(5));
    let stop_time = t.elapsed();
    assert!(
        st.is_some_and(|s| s.success()),
        "middle router did not exit cleanly: {st:?}"
    );
    assert!(stop_time < Duration::from_secs(5));
    let gone = wait(Duration::from_secs(10), || {
        !lab.learnt("a", M.v6)
            && !lab.learnt("a", M.v4)
            && !lab.learnt("c", M.v6)
            && !lab.learnt("c", M.v4)
            && !lab.learnt("a", C.v6)
            && !lab.learnt("c", A.v6)
    });
    assert!(gone.is_some(), "m's prefixes were not withdrawn");
    let gone = t.elapsed();
    println!(
        "[{who}] SIGTERM of middle m: exited in {}, its prefixes and those through it gone from a and c {} after SIGTERM",
        secs(stop_time),
        secs(gone)
    );
    assert!(
        gone < Duration::from_secs(2),
        "withdrawal took {}",
        secs(gone)
    );
    if mesh {
        // Nothing of ours left in the kernel; then a stale route of ours, flushed at start.
        for fam in ["-6", "-4"] {
            let o = lab
                .rig
                .exec_status("m", &["ip", fam, "route", "show", "proto", "250"])
                .expect("ip route");
            let left = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(left.trim().is_empty(), "routes left after exit: {left}");
        }
        lab.rig
            .exec(
                "m",
                &[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    "2001:db8:dead::/64",
                    "dev",
                    "lo",
                    "proto",
                    "250",
                ],
            )
            .expect("stale route");
    }
    let t = Instant::now();
    start_middle(&mut lab, mesh, &[&ma, &mc], "2");
    let back = wait(Duration::from_secs(30), || all_learnt(&lab));
    if back.is_none() {
        lab.dump(&["a-1.log", "m-2.log", "c-2.log"]);
    }
    assert!(back.is_some(), "no re-convergence after restarting m");
    println!(
        "[{who}] restart of m: everything learnt again {} after start",
        secs(t.elapsed())
    );
    if mesh {
        assert!(
            lab.kroute("m", "2001:db8:dead::/64").is_empty(),
            "stale route of protocol 250 not flushed at start"
        );
    }
}

#[test]
fn root_babel_sigterm_withdrawal_and_restart() {
    if !require_root("root_babel_sigterm_withdrawal_and_restart") {
        return;
    }
    sigterm_scenario("bbterm", true);
}

/// The same measurements with babeld in the middle, to compare with.
#[test]
fn root_babel_reference_babeld_in_the_middle() {
    if !require_root("root_babel_reference_babeld_in_the_middle") {
        return;
    }
    sigterm_scenario("bbrefterm", false);
    triangle_scenario("bbreftri", false);
}

/// Link-local address of `ifc` in namespace `ns` (empty if none yet).
fn link_local(lab: &Lab, ns: &str, ifc: &str) -> String {
    let o = lab
        .rig
        .exec(
            ns,
            &[
                "ip", "-6", "-o", "addr", "show", "dev", ifc, "scope", "link",
            ],
        )
        .expect("ip addr");
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_owned()
}

/// a (babeld, our key), m (ours), x (babeld, another key) and y (babeld, no MAC) on ONE link:
/// a Linux bridge in its own namespace, each router joined to it by a veth.
#[test]
fn root_babel_rejects_wrong_key_and_unsigned() {
    if !require_root("root_babel_rejects_wrong_key_and_unsigned") {
        return;
    }
    let mut lab = Lab::new("bbauth");
    let members = [&A, &M, &X, &Y];
    for n in members {
        lab.node(n);
    }
    let ifc = lab.shared_link(&members.map(|n| n.name));
    let t0 = Instant::now();
    lab.babeld(&X, &[&ifc], Some(WRONG_KEY), "1");
    lab.babeld(&Y, &[&ifc], None, "1");
    lab.babeld(&A, &[&ifc], Some(KEY), "1");
    lab.mesh(&M, &[&ifc], "1");
    let lls = || -> Vec<String> {
        members
            .iter()
            .map(|n| link_local(&lab, n.name, &ifc))
            .collect()
    };
    wait(Duration::from_secs(5), || {
        lls().iter().all(|a| a.starts_with("fe80"))
    });
    let lls = lls();
    assert!(lls.iter().all(|a| a.starts_with("fe80")), "{lls:?}");
    let [lla, llm, llx, lly] = [&lls[0], &lls[1], &lls[2], &lls[3]];

    // The positive control: the correctly keyed babeld on the same link and we learn each
    // other, both families.
    let learnt = wait(Duration::from_secs(20), || {
        lab.learnt("m", A.v6)
            && lab.learnt("m", A.v4)
            && lab.learnt("a", M.v6)
            && lab.learnt("a", M.v4)
    });
    if learnt.is_none() {
        lab.dump(&["a-1.log", "m-1.log"]);
        eprintln!("mesh stats: {}", lab.mesh_cli("stats"));
    }
    assert!(learnt.is_some(), "a and m did not learn each other");
    println!(
        "[mesh] shared link a+m+x+y: m and a learnt each other (IPv6 and IPv4) {} after start",
        secs(t0.elapsed())
    );

    // x's and y's packets reach us: at least 5 each (hello 1 s), every one rejected. Waiting
    // for them also gives x and y more than one update interval (4 s) of our packets.
    let stats = || -> serde_json::Value {
        serde_json::from_str(&lab.mesh_cli("stats")).unwrap_or_default()
    };
    let n = |s: &serde_json::Value, map: &str, ll: &str| s[map][ll].as_u64().unwrap_or(0);
    let counted = wait(Duration::from_secs(15), || {
        let s = stats();
        n(&s, "rejected_by_source", llx) >= 5 && n(&s, "rejected_by_source", lly) >= 5
    });
    let s = stats();
    if counted.is_none() {
        lab.dump(&["x-1.log", "y-1.log", "m-1.log"]);
    }
    assert!(
        counted.is_some(),
        "packets of x ({llx}) and y ({lly}) not counted as rejected: {s}"
    );
    println!(
        "[mesh] shared link: 5 packets each of x and y rejected {} after start",
        secs(t0.elapsed())
    );
    for (who, ll) in [("a", lla), ("x", llx), ("y", lly)] {
        println!(
            "[mesh] shared link: from {who} ({ll}): {} packets received, {} rejected",
            n(&s, "rx_by_source", ll),
            n(&s, "rejected_by_source", ll)
        );
    }
    println!("[mesh] shared link: rejected by reason {}", s["rejected"]);
    for ll in [llx, lly] {
        // Received and rejected are counted at two moments of one packet's handling.
        let (rx, rej) = (n(&s, "rx_by_source", ll), n(&s, "rejected_by_source", ll));
        assert!(rej + 1 >= rx, "{ll}: {rx} received but only {rej} rejected");
    }
    assert!(n(&s, "rejected", "bad_mac") >= 5, "{s}");
    assert!(n(&s, "rejected", "unsigned") >= 5, "{s}");
    assert!(
        n(&s, "rx_by_source", lla) > n(&s, "rejected_by_source", lla),
        "a's packets were not accepted: {s}"
    );

    // None of their prefixes in our table (control socket and kernel), nor passed on to a ...
    let routes = lab.mesh_routes();
    for p in [X.v6, X.v4, Y.v6, Y.v4] {
        assert!(
            !routes.iter().any(|r| r["prefix"] == p),
            "{p} entered our table"
        );
        assert!(lab.kroute("m", p).is_empty(), "{p} in m's kernel table");
        assert!(!lab.learnt("a", p), "{p} reached a");
    }
    // ... and they learn nothing from us (nor from a, through us or directly), watched for
    // two more update intervals.
    let t = Instant::now();
    let leak = wait(Duration::from_secs(8), || {
        ["x", "y"]
            .iter()
            .any(|ns| [M.v6, M.v4, A.v6, A.v4].iter().any(|p| lab.learnt(ns, p)))
    });
    for ns in ["x", "y"] {
        for p in [M.v6, M.v4, A.v6, A.v4] {
            assert!(!lab.learnt(ns, p), "{ns} learnt {p}");
        }
    }
    assert!(leak.is_none(), "x or y learnt a route through m or a");
    println!(
        "[mesh] shared link: x and y learnt nothing in {} more",
        secs(t.elapsed())
    );
    // Their own view (babeld's local interface): y, which ignores MACs, hears our Hellos but
    // we never answer it with an IHU, so its cost to us and every route it heard stay
    // infinite; x drops all our packets and has no neighbour at all.
    let (dx, dy) = (lab.babeld_dump("x", "1"), lab.babeld_dump("y", "1"));
    let lines = |d: &str, what: &str| -> Vec<String> {
        d.lines()
            .filter(|l| l.starts_with(what))
            .map(str::to_owned)
            .collect()
    };
    let y_m = lines(&dy, "add neighbour")
        .into_iter()
        .find(|l| l.contains(&format!("address {llm} ")));
    let Some(y_m) = y_m else {
        panic!("y does not hear m ({llm}):\n{dy}");
    };
    println!("[mesh] shared link: y's view of m: {y_m}");
    assert!(y_m.ends_with("cost 65535"), "{y_m}");
    let y_routes = lines(&dy, "add route");
    for p in [M.v6, M.v4] {
        assert!(
            y_routes
                .iter()
                .any(|l| l.contains(&format!("prefix {p} ")) && l.contains(&format!("via {llm} "))),
            "y did not even hear m's update for {p}:\n{dy}"
        );
    }
    assert!(
        y_routes.iter().all(|l| l.contains(" metric 65535 ")),
        "y has a finite route:\n{dy}"
    );
    assert!(
        lines(&dx, "add neighbour").is_empty() && lines(&dx, "add route").is_empty(),
        "x accepted someone's packets:\n{dx}"
    );
    assert!(dx.contains("add xroute"), "x's dump is incomplete:\n{dx}");
    println!(
        "[mesh] shared link: wrong-key x and unsigned y rejected, nothing learnt either way ({} in all)",
        secs(t0.elapsed())
    );
}

/// nft table dropping everything in and out of `ifc` in namespace `ns`.
fn nft_drop(lab: &Lab, ns: &str, ifc: &str, on: bool) {
    if on {
        let rules = format!(
            "table inet cut {{\n chain cin {{ type filter hook input priority -300; iifname \"{ifc}\" drop; }}\n chain cout {{ type filter hook output priority -300; oifname \"{ifc}\" drop; }}\n chain cfwd {{ type filter hook forward priority -300; iifname \"{ifc}\" drop; oifname \"{ifc}\" drop; }}\n}}\n"
        );
        let f = lab.path(&format!("nft-{ns}.conf"));
        std::fs::write(&f, rules).expect("nft file");
        lab.rig
            .exec(ns, &["nft", "-f", &f.display().to_string()])
            .expect("nft");
    } else {
        lab.rig
            .exec(ns, &["nft", "delete", "table", "inet", "cut"])
            .expect("nft delete");
    }
}

#[test]
fn root_babel_triangle_reroute() {
    if !require_root("root_babel_triangle_reroute") {
        return;
    }
    triangle_scenario("bbtri", true);
}

/// Triangle a — m — c plus the direct link a — c; m's route to c is watched.
/// `mesh`: our router in m (else babeld, for reference).
fn triangle_scenario(tag: &str, mesh: bool) {
    let who = if mesh { "mesh" } else { "babeld(reference)" };
    assert!(
        have("nft"),
        "nft is not installed (apt-get install nftables)"
    );
    let mut lab = Lab::new(tag);
    for n in [&A, &M, &C] {
        lab.node(n);
    }
    let (am, ma) = lab.link("a", "m");
    let (mc, cm) = lab.link("m", "c");
    let (ac, ca) = lab.link("a", "c");
    lab.babeld(&A, &[&am, &ac], Some(KEY), "1");
    start_middle(&mut lab, mesh, &[&ma, &mc], "1");
    lab.babeld(&C, &[&cm, &ca], Some(KEY), "1");
    let direct = |lab: &Lab| lab.kroute("m", C.v6).contains(&format!("dev {mc}"));
    let twohop = |lab: &Lab| lab.kroute("m", C.v6).contains(&format!("dev {ma}"));
    let t0 = Instant::now();
    let converged = wait(Duration::from_secs(30), || all_learnt(&lab) && direct(&lab));
    if converged.is_none() && !mesh {
        // babeld sometimes settles on the 2-hop path first and stays there (the direct
        // route is then unfeasible for it): nothing to measure.
        println!(
            "[{who}] triangle: did not settle on the direct m-c link within 30 s ({})",
            lab.kroute("m", C.v6)
        );
        return;
    }
    assert!(
        converged.is_some(),
        "triangle did not converge on the direct link: {}",
        lab.kroute("m", C.v6)
    );
    println!(
        "[{who}] triangle: converged on the direct m-c link {} after start",
        secs(t0.elapsed())
    );
    assert!(lab.ping("m", M.addr6, C.addr6));

    // Each step must happen for our router; babeld's own times are only reported. Two
    // times: m's kernel route moved, and ping m -> c works (needs c to have moved too).
    let step = |what: &str, route: &dyn Fn() -> bool| {
        let t = Instant::now();
        let moved = wait(Duration::from_secs(30), route);
        let flows = moved.and_then(|_| {
            wait(Duration::from_secs(30), || {
                route() && lab.ping("m", M.addr6, C.addr6)
            })
        });
        match (moved, flows) {
            (Some(r), Some(_)) => println!(
                "[{who}] triangle: {what}: m's route after {}, ping m -> c after {}",
                secs(r),
                secs(t.elapsed())
            ),
            _ => {
                println!("[{who}] triangle: {what}: NOT within 30 s");
                assert!(!mesh, "triangle: {what}: not within 30 s");
            }
        }
    };
    let on_twohop = || twohop(&lab);
    let on_direct = || direct(&lab);

    // Silent cut first (babeld, the reference, is slow to come back after a link flap):
    // nftables drops everything on both ends, links stay up.
    nft_drop(&lab, "m", &mc, true);
    nft_drop(&lab, "c", &cm, true);
    step("silent cut (nftables) -> 2-hop path", &on_twohop);
    nft_drop(&lab, "m", &mc, false);
    nft_drop(&lab, "c", &cm, false);
    step("healed -> direct link", &on_direct);

    // Link down (both ends): immediate for the kernel, Babel notices by missing Hellos.
    for (ns, ifc) in [("m", &mc), ("c", &cm)] {
        lab.rig
            .exec(ns, &["ip", "link", "set", ifc, "down"])
            .expect("down");
    }
    step("link down -> 2-hop path", &on_twohop);
    for (ns, ifc) in [("m", &mc), ("c", &cm)] {
        lab.rig
            .exec(ns, &["ip", "link", "set", ifc, "up"])
            .expect("up");
    }
    step("link up -> direct link", &on_direct);
    if std::env::var_os("BABEL_TEST_DUMP").is_some() {
        lab.dump(&["m-1.log"]);
    }
    let _ = ca;
}

/// Bad argument values are usage errors (CONVENTIONS): exit code 2 and one `error:` sentence
/// on stderr naming the option and what is wrong, before any socket is opened.
#[test]
fn babel_run_rejects_bad_arguments() {
    let long_key = "00".repeat(65);
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("babel.key");
    std::fs::write(&key_file, "00\n").expect("key file");
    let key_file = key_file.display().to_string();
    for (args, want) in [
        (
            vec!["--iface", "lo", "--announce", "bogus"],
            "invalid value 'bogus' for '--announce <CIDR>': not a prefix in CIDR notation",
        ),
        (
            vec!["--iface", "lo", "--announce", "10.0.0.0/33"],
            "for '--announce <CIDR>': not a prefix in CIDR notation",
        ),
        (
            vec!["--iface", "lo", "--key-hex", "zz"],
            "invalid value 'zz' for '--key-hex <HEX>': not a hexadecimal string",
        ),
        (
            vec!["--iface", "lo", "--key-hex", long_key.as_str()],
            "for '--key-hex <HEX>': the key must be 1 to 64 bytes long",
        ),
        (
            vec!["--iface", "lo", "--key-file", "/nonexistent/mesh.key"],
            "invalid value '/nonexistent/mesh.key' for '--key-file <FILE>': cannot read the key file",
        ),
        (
            vec![
                "--iface",
                "lo",
                "--key-hex",
                "00",
                "--key-file",
                key_file.as_str(),
            ],
            "cannot be used with",
        ),
        (
            vec!["--iface", "lo", "--key-alg", "hmac-sha256"],
            "the following required arguments were not provided",
        ),
        (
            vec!["--iface", "lo", "--key-alg", "md5", "--key-hex", "00"],
            "invalid value 'md5' for '--key-alg <ALG>': not supported (only hmac-sha256)",
        ),
        (
            vec!["--iface", "lo", "--hello-interval", "0"],
            "invalid value '0' for '--hello-interval <S>': must be between 0.01 and 655 seconds",
        ),
        (
            vec!["--iface", "lo", "--update-interval", "NaN"],
            "invalid value 'NaN' for '--update-interval <S>': must be between 0.01 and 655 seconds",
        ),
        (
            vec!["--iface", "lo", "--hello-interval", "soon"],
            "invalid value 'soon' for '--hello-interval <S>': not a number of seconds",
        ),
    ] {
        let out = std::process::Command::new(MESH)
            .args(["babel", "run"])
            .args(&args)
            .output()
            .expect("mesh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{args:?}: {err}"
        );
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // A runtime failure stays exit code 1.
    let out = std::process::Command::new(MESH)
        .args(["babel", "routes", "--control", "/nonexistent/babel.sock"])
        .output()
        .expect("mesh");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Babel router answers on"));
}
