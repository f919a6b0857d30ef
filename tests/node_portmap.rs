#![cfg(target_os = "linux")]
//! Port mapping (issue 14): a laptop behind a home router that runs Debian's miniupnpd
//! (NAT-PMP, PCP, UPnP IGD over nftables) asks it to forward its tunnel port, announces the
//! mapped address, and a node outside dials it there. Private addresses only, inside
//! namespaces this test makes:
//!
//! ```text
//!                  inet (bridge 10.99.0.0/24)
//!          ┌───────────────┼────────────────┐
//!   pub 10.99.0.10      r 10.99.0.1      far 10.99.0.20
//!   registry + P        NAT (masquerade),
//!   STUN for miniupnpd  miniupnpd, drops
//!                       what nobody asked for
//!                          │
//!                       l 192.168.50.2 (no --endpoint, no --peer)
//! ```
//!
//! miniupnpd 2.3 maps nothing while its outside address is private unless a STUN answer
//! says the router is reachable as it is: `pub` runs a tiny STUN responder for it.
//!
//! Two routers: one speaking everything (the node maps with PCP, the first it tries), one
//! with NAT-PMP and PCP off (`enable_natpmp=no` turns off both in miniupnpd 2.3), where the
//! node finds the router by SSDP and maps through UPnP IGD's SOAP calls.

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::nodes::{MESH, NsRegistry, print_logs, sh};
use common::wait_until;
use re6mesh::netns::{Rig, require_root};

const MINIUPNPD: &str = "/usr/sbin/miniupnpd";

/// A STUN binding responder (RFC 5389 MAPPED-ADDRESS = the request's source), enough for
/// miniupnpd's check that the router is reachable at its outside address.
const STUN: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 3478))
while True:
    d, (ip, port) = s.recvfrom(2048)
    if len(d) >= 20 and d[0:2] == b"\x00\x01":
        a = struct.pack("!HHBBH4s", 1, 8, 0, 1, port, socket.inet_aton(ip))
        s.sendto(struct.pack("!HH", 0x0101, len(a)) + d[4:20] + a, (ip, port))
"#;

struct Net {
    rig: Rig,
    tmp: tempfile::TempDir,
    prefixes: Vec<(String, ipnet::Ipv6Net)>,
    pids: Vec<(String, u32)>,
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(self.tmp.path(), Some(30));
        }
    }
}

impl Net {
    fn dir(&self, n: &str) -> PathBuf {
        self.tmp.path().join(n)
    }

    fn log(&self, n: &str) -> String {
        std::fs::read_to_string(self.tmp.path().join(format!("{n}.log"))).unwrap_or_default()
    }

    fn logfile(&self, n: &str) -> Stdio {
        Stdio::from(std::fs::File::create(self.tmp.path().join(format!("{n}.log"))).unwrap())
    }

    fn prefix(&self, n: &str) -> ipnet::Ipv6Net {
        self.prefixes
            .iter()
            .find(|(m, _)| m == n)
            .map(|(_, p)| *p)
            .unwrap()
    }

    fn up(&mut self, n: &str, extra: &[&str]) {
        let dir = self.dir(n);
        let log = self.logfile(n);
        let mut args = vec![
            "up",
            "--foreground",
            "-v",
            "--state-dir",
            dir.to_str().unwrap(),
            "--listen",
            "[::]:6464",
            "--hello-interval",
            "0.5",
        ];
        args.extend_from_slice(extra);
        let pid = self.rig.spawn(n, MESH, &args, Stdio::null(), log).unwrap();
        self.pids.push((n.to_string(), pid));
    }

    /// `mesh status --json` of node `n`.
    fn status(&self, n: &str) -> serde_json::Value {
        Command::new(MESH)
            .args(["status", "--json", "--state-dir"])
            .arg(self.dir(n))
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default()
    }

    /// Node `n`'s tunnel to node `to`, from `mesh peers --json`.
    fn tunnel(&self, n: &str, to: &str) -> Option<serde_json::Value> {
        let o = Command::new(MESH)
            .args(["peers", "--json", "--state-dir"])
            .arg(self.dir(n))
            .output()
            .ok()?;
        let want = self.prefix(to).to_string();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|p| p["prefix"].as_str() == Some(want.as_str()))
    }

    /// The router's port forwards (miniupnpd's nftables chain).
    fn forwards(&self) -> String {
        self.rig
            .exec_status(
                "r",
                &[
                    "nft",
                    "list",
                    "chain",
                    "inet",
                    "homefw",
                    "prerouting_miniupnpd",
                ],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// The small internet, miniupnpd on the router, the registry on pub, the nodes joined.
/// `natpmp`: whether the router speaks NAT-PMP and PCP (UPnP IGD it always speaks).
fn build(tag: &str, port: u16, natpmp: bool) -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new(tag).unwrap();
    for n in ["inet", "pub", "r", "far", "l"] {
        rig.add_ns(n).unwrap();
    }
    sh(&rig, "inet", "ip link add br0 type bridge");
    sh(&rig, "inet", "ip link set br0 up");
    for (n, addr) in [
        ("pub", "10.99.0.10/24"),
        ("r", "10.99.0.1/24"),
        ("far", "10.99.0.20/24"),
    ] {
        let (mine, in_br) = rig.link(n, "inet").unwrap();
        sh(&rig, "inet", &format!("ip link set {in_br} master br0"));
        sh(&rig, n, &format!("ip addr add {addr} dev {mine}"));
    }
    let (in_r, in_l) = rig.link("r", "l").unwrap();
    sh(
        &rig,
        "r",
        &format!("ip addr add 192.168.50.1/24 dev {in_r}"),
    );
    sh(
        &rig,
        "l",
        &format!("ip addr add 192.168.50.2/24 dev {in_l}"),
    );
    sh(&rig, "l", "ip route add default via 192.168.50.1");
    sh(&rig, "r", "sysctl -qw net.ipv4.ip_forward=1");
    // The home router: masquerade out, nothing unsolicited in (to itself or forwarded) but
    // what miniupnpd forwards; the LAN may talk to it (NAT-PMP/PCP 5351, SSDP, UPnP HTTP).
    // The laptop may not open a tunnel to far's port itself: far's dial to the mapped port is
    // what these tests prove (else both dial, and the laptop's own tunnel can win the race:
    // seen once in CI, `made: direct`).
    let ruleset = format!(
        "table inet homefw {{
            chain input {{
                type filter hook input priority 0; policy drop;
                ct state established,related accept
                iifname \"lo\" accept
                iifname \"{in_r}\" accept
            }}
            chain forward {{
                type filter hook forward priority 0; policy drop;
                ct state established,related accept
                iifname \"{in_r}\" ip daddr 10.99.0.20 udp dport 6464 drop
                iifname \"{in_r}\" accept
                jump miniupnpd
            }}
            chain miniupnpd {{
            }}
            chain prerouting {{
                type nat hook prerouting priority -100; policy accept;
                jump prerouting_miniupnpd
            }}
            chain postrouting {{
                type nat hook postrouting priority 100; policy accept;
                jump postrouting_miniupnpd
                oifname \"to-inet\" masquerade
            }}
            chain prerouting_miniupnpd {{
            }}
            chain postrouting_miniupnpd {{
            }}
        }}"
    );
    let rules = tmp.path().join("router.nft");
    std::fs::write(&rules, ruleset).unwrap();
    rig.exec("r", &["nft", "-f", rules.to_str().unwrap()])
        .unwrap();

    let mut net = Net {
        rig,
        tmp,
        prefixes: Vec::new(),
        pids: Vec::new(),
    };
    // STUN on pub, then miniupnpd on the router (it asks STUN once, at start)
    let stun = net.logfile("stun");
    net.rig
        .spawn(
            "pub",
            "python3",
            &["-c", STUN, "10.99.0.10"],
            Stdio::null(),
            stun,
        )
        .unwrap();
    wait_until("the STUN responder", Duration::from_secs(10), || {
        net.rig
            .exec_status("pub", &["ss", "-Hlun", "sport", "=", ":3478"])
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    let conf = net.tmp.path().join("miniupnpd.conf");
    std::fs::write(
        &conf,
        format!(
            "ext_ifname=to-inet\n\
             listening_ip={in_r}\n\
             port=0\n\
             enable_natpmp={}\n\
             enable_upnp=yes\n\
             secure_mode=yes\n\
             ext_perform_stun=yes\n\
             ext_stun_host=10.99.0.10\n\
             ext_stun_port=3478\n\
             upnp_table_name=homefw\n\
             upnp_nat_table_name=homefw\n\
             allow 1024-65535 192.168.50.0/24 1024-65535\n\
             deny 0-65535 0.0.0.0/0 0-65535\n",
            if natpmp { "yes" } else { "no" }
        ),
    )
    .unwrap();
    let pidfile = net.tmp.path().join("miniupnpd.pid");
    let log = net.logfile("miniupnpd");
    net.rig
        .spawn(
            "r",
            MINIUPNPD,
            &[
                "-d",
                "-f",
                conf.to_str().unwrap(),
                "-P",
                pidfile.to_str().unwrap(),
            ],
            Stdio::null(),
            log,
        )
        .unwrap();
    wait_until("miniupnpd to listen", Duration::from_secs(20), || {
        let l = net.log("miniupnpd");
        l.contains("Port forwarding is now enabled")
            && l.contains("HTTP listening on port")
            && (!natpmp || l.contains("Listening for NAT-PMP/PCP"))
    });

    // the registry on pub, every node joined
    let reg = NsRegistry::serve(
        &mut net.rig,
        net.tmp.path(),
        "pub",
        "10.99.0.10",
        port,
        &["--network", "fd47:cc::/48"],
    );
    for n in ["pub", "l", "far"] {
        let p = reg.join(&net.rig, n, None);
        net.prefixes.push((n.to_string(), p));
    }
    net
}

/// Whether the test can run (root, miniupnpd installed); says why not.
fn can_run(name: &str) -> bool {
    if !require_root(name) {
        return false;
    }
    if !std::path::Path::new(MINIUPNPD).exists() {
        // scripts/test installs it (miniupnpd-nftables); a bare `cargo test` may lack it
        assert!(
            std::env::var_os("CI").is_none(),
            "{MINIUPNPD} is missing: scripts/test installs miniupnpd-nftables"
        );
        eprintln!(
            "SKIPPED {name}: {MINIUPNPD} is not installed (apt-get install miniupnpd-nftables)"
        );
        return false;
    }
    true
}

#[test]
fn root_portmap_a_laptop_behind_a_mapping_router_is_dialled_at_its_mapped_port() {
    if can_run("root_portmap_a_laptop_behind_a_mapping_router_is_dialled_at_its_mapped_port") {
        let port = 22000 + (std::process::id() % 1000) as u16;
        mapped_and_dialled("rmtpmap", port, true);
    }
}

#[test]
fn root_portmap_upnp_only_router_maps_through_upnp_igd() {
    if can_run("root_portmap_upnp_only_router_maps_through_upnp_igd") {
        let port = 23000 + (std::process::id() % 1000) as u16;
        mapped_and_dialled("rmtupnp", port, false);
    }
}

/// The laptop maps its port (with UPnP IGD when `natpmp` is off), `far` dials it there, and
/// the mapping is gone after the laptop's SIGTERM.
fn mapped_and_dialled(tag: &str, port: u16, natpmp: bool) {
    let start = Instant::now();
    let mut net = build(tag, port, natpmp);
    let built = start.elapsed();
    net.up("pub", &[]);
    net.up("l", &[]);
    let t = Instant::now();
    // the laptop's mapping appears in its status
    let mut pm = serde_json::Value::Null;
    let took = wait_until("the laptop's port mapping", Duration::from_secs(30), || {
        pm = net.status("l")["port_mapping"].clone();
        pm["state"] == "mapped"
    });
    println!("portmap[{tag}]: mapped {took:?} after the laptop started: {pm}");
    assert_eq!(pm["external"], "10.99.0.1:6464", "{pm}");
    assert_eq!(pm["internal_port"], 6464, "{pm}");
    let want = if natpmp { "pcp" } else { "upnp" };
    assert_eq!(
        pm["protocol"], want,
        "the first protocol the router speaks: {pm}"
    );
    if !natpmp {
        assert_eq!(pm["gateway"], "192.168.50.1", "the UPnP gateway: {pm}");
        assert!(
            !net.log("miniupnpd").contains("Listening for NAT-PMP/PCP"),
            "the router speaks neither NAT-PMP nor PCP"
        );
    }
    assert!(pm["lifetime_secs"].as_u64().is_some_and(|l| l > 0), "{pm}");
    assert!(
        net.forwards().contains("dnat ip to 192.168.50.2:6464"),
        "the router forwards the port: {}",
        net.forwards()
    );
    // announced as the first candidate
    wait_until(
        "the mapped candidate announced",
        Duration::from_secs(10),
        || {
            net.log("l")
                .lines()
                .rfind(|l| l.contains("this node can be reached at"))
                .is_some_and(|l| l.contains("endpoints=[10.99.0.1:6464"))
        },
    );
    // a node outside dials it there (the router drops anything it was not asked to forward)
    let mapped = format!("{}@10.99.0.1:6464", net.prefix("l"));
    net.up("far", &["--peer", &mapped, "--no-port-mapping"]);
    let mut far_side = None;
    let took = wait_until(
        "far's tunnel to the laptop",
        Duration::from_secs(30),
        || {
            far_side = net.tunnel("far", "l");
            far_side.is_some()
        },
    );
    let far_side = far_side.unwrap_or_default();
    let remote: Option<std::net::SocketAddr> =
        far_side["endpoint"].as_str().and_then(|e| e.parse().ok());
    assert_eq!(
        remote.map(|a| (a.ip().to_canonical().to_string(), a.port())),
        Some(("10.99.0.1".to_string(), 6464)),
        "far's tunnel goes to the router's public address and the mapped port: {far_side}"
    );
    let mut l_side = None;
    wait_until(
        "the laptop's side of the tunnel",
        Duration::from_secs(10),
        || {
            l_side = net.tunnel("l", "far");
            l_side.is_some()
        },
    );
    let l_side = l_side.unwrap_or_default();
    assert_eq!(
        net.status("far")["port_mapping"]["state"],
        "off",
        "--no-port-mapping"
    );
    assert_eq!(l_side["made"], "mapped", "{l_side}");
    assert_eq!(l_side["initiated"], false, "{l_side}");
    println!(
        "portmap[{tag}]: far dialled the laptop at its mapped port {took:?} after far started \
         (laptop's side: made {}); {:?} from the laptop's start; rig built in {built:?}",
        l_side["made"],
        t.elapsed()
    );

    // a clean exit removes the mapping from the router
    let (_, pid) = net.pids.iter().find(|(n, _)| n == "l").cloned().unwrap();
    let t = Instant::now();
    let st = net.rig.stop(pid, Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "the laptop's exit: {st:?}");
    assert!(
        net.log("l")
            .contains("port mapping removed from the home router"),
        "{}",
        net.log("l")
    );
    assert!(
        !net.forwards().contains("192.168.50.2"),
        "the router still forwards: {}",
        net.forwards()
    );
    println!(
        "portmap[{tag}]: the laptop exited and removed its mapping in {:?}; whole test {:?}",
        t.elapsed(),
        start.elapsed()
    );
}
