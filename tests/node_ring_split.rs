#![cfg(target_os = "linux")]
//! A mesh that could split heals itself (issue 14, "Tests that must exist"): six nodes in a
//! ring of namespaces where tunnel UDP passes only between ring neighbours (nftables, a
//! stand-in for firewalls and NATs that let a node reach only a few others), every node
//! with `--endpoint`, none with `--peer`: each node knows only the registry, which hands
//! out bootstrap peers it may not be able to reach.
//!
//! ```text
//!   n0 ── n1 ── n2
//!   │            │        every node also on a bridge (fd99::/64) where the registry is
//!   n5 ── n4 ── n3
//! ```
//!
//! * started ten times (peer caches wiped between starts, so each is a first start): every
//!   pair routable within 60 s each time; the worst time is printed;
//! * a deliberately split mesh — the halves {n0,n1,n2} and {n3,n4,n5} started with the two
//!   links between them closed — joins once the links open; the time is printed.

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use re6mesh::netns::{Rig, require_root};

mod common;
use common::nodes::{MESH, NsRegistry, print_logs};

const N: usize = 6;

/// Node `i`'s address on the ring link towards `towards` (link `i` joins n_i and n_{i+1}).
fn link_addr(i: usize, towards: usize) -> String {
    if towards == (i + 1) % N {
        format!("fd98:{i}::1")
    } else {
        format!("fd98:{towards}::2")
    }
}

struct Ring {
    rig: Rig,
    tmp: tempfile::TempDir,
    prefixes: Vec<ipnet::Ipv6Net>,
    pids: Vec<Option<u32>>,
}

impl Drop for Ring {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(self.tmp.path(), Some(15));
        }
    }
}

fn sh(rig: &Rig, ns: &str, argv: &[&str]) {
    rig.exec(ns, argv)
        .unwrap_or_else(|e| panic!("{ns}: {argv:?}: {e}"));
}

/// The ring, the registry serving on the bridge, every node joined (none started).
fn build(tag: &str) -> Ring {
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new(tag).unwrap();
    rig.add_ns("br").unwrap();
    sh(&rig, "br", &["ip", "link", "add", "br0", "type", "bridge"]);
    sh(&rig, "br", &["ip", "link", "set", "br0", "up"]);
    sh(
        &rig,
        "br",
        &["ip", "-6", "addr", "add", "fd99::100/64", "dev", "br0"],
    );
    for i in 0..N {
        let n = format!("n{i}");
        rig.add_ns(&n).unwrap();
        let (_, in_br) = rig.link(&n, "br").unwrap();
        sh(&rig, "br", &["ip", "link", "set", &in_br, "master", "br0"]);
        let a = format!("fd99::{}/64", i + 1);
        sh(&rig, &n, &["ip", "-6", "addr", "add", &a, "dev", "to-br"]);
    }
    for i in 0..N {
        let j = (i + 1) % N;
        let (a, b) = rig.link(&format!("n{i}"), &format!("n{j}")).unwrap();
        for (ns, dev, addr) in [(i, a, link_addr(i, j)), (j, b, link_addr(j, i))] {
            let addr = format!("{addr}/64");
            sh(
                &rig,
                &format!("n{ns}"),
                &["ip", "-6", "addr", "add", &addr, "dev", &dev],
            );
        }
        // tunnel UDP only to and from the two ring neighbours' link addresses
        let (l, r) = ((i + N - 1) % N, (i + 1) % N);
        let allowed = format!("{}, {}", link_addr(l, i), link_addr(r, i));
        let rules = format!(
            "table inet ring {{
               chain out {{ type filter hook output priority 0; udp dport 6464 ip6 daddr != {{ {allowed} }} drop; }}
               chain in {{ type filter hook input priority 0; udp sport 6464 ip6 saddr != {{ {allowed} }} drop; }}
             }}"
        );
        let f = tmp.path().join(format!("n{i}.nft"));
        std::fs::write(&f, rules).unwrap();
        sh(&rig, &format!("n{i}"), &["nft", "-f", f.to_str().unwrap()]);
    }
    let reg = NsRegistry::serve(
        &mut rig,
        tmp.path(),
        "br",
        "fd99::100",
        22000 + (std::process::id() % 1000) as u16,
        &["--network", "fd43:cc::/48"],
    );
    let prefixes = (0..N)
        .map(|i| reg.join(&rig, &format!("n{i}"), None))
        .collect();
    Ring {
        rig,
        tmp,
        prefixes,
        pids: vec![None; N],
    }
}

impl Ring {
    fn dir(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("n{i}"))
    }

    /// Starts node `i`: its two ring addresses as `--endpoint`, no `--peer`.
    fn start(&mut self, i: usize) {
        let dir = self.dir(i);
        let (l, r) = ((i + N - 1) % N, (i + 1) % N);
        let el = format!("[{}]:6464", link_addr(i, l));
        let er = format!("[{}]:6464", link_addr(i, r));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join(format!("n{i}.log")))
            .unwrap();
        let pid = self
            .rig
            .spawn(
                &format!("n{i}"),
                MESH,
                &[
                    "up",
                    "--foreground",
                    "--state-dir",
                    dir.to_str().unwrap(),
                    "--listen",
                    "[::]:6464",
                    "--endpoint",
                    &el,
                    "--endpoint",
                    &er,
                    "--hello-interval",
                    "0.5",
                    "--no-registry-watch",
                ],
                Stdio::null(),
                Stdio::from(log),
            )
            .unwrap();
        self.pids[i] = Some(pid);
    }

    /// Stops every node (all asked at once), then wipes their peer caches: the next start is
    /// a first start again.
    fn stop_all(&mut self) {
        for pid in self.pids.iter().flatten() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        for i in 0..N {
            if let Some(pid) = self.pids[i].take() {
                self.rig.stop(pid, Duration::from_secs(5));
            }
            let _ = std::fs::remove_file(re6mesh::mesh::peers::PeerCache::path(&self.dir(i)));
        }
    }

    /// Node `i` has a selected, finite route to node `j`'s prefix.
    fn routes(&self, i: usize) -> Vec<String> {
        let Ok(o) = Command::new(MESH)
            .args(["routes", "--json", "--state-dir"])
            .arg(self.dir(i))
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| {
                r["selected"].as_bool() == Some(true)
                    && r["metric"].as_u64().is_some_and(|m| m < 0xffff)
            })
            .filter_map(|r| r["prefix"].as_str().map(str::to_owned))
            .collect()
    }

    /// Every node of `set` routes to every other node of `set`.
    fn routable(&self, set: &[usize]) -> bool {
        set.iter().all(|&i| {
            let have = self.routes(i);
            set.iter()
                .filter(|&&j| j != i)
                .all(|&j| have.contains(&self.prefixes[j].to_string()))
        })
    }

    /// Waits until every pair of `set` is routable; the time it took.
    fn wait_routable(&self, set: &[usize], timeout: Duration, what: &str) -> Duration {
        let t = Instant::now();
        while !self.routable(set) {
            if t.elapsed() > timeout {
                let seen: Vec<String> = set
                    .iter()
                    .map(|&i| format!("n{i}: {} routes", self.routes(i).len()))
                    .collect();
                panic!("{what}: not every pair routable after {timeout:?} ({seen:?})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        t.elapsed()
    }

    /// Closes (or opens again) the two ring links between the halves (n2–n3 and n5–n0).
    fn split(&self, closed: bool) {
        for (i, towards) in [(2, 3), (3, 2), (5, 0), (0, 5)] {
            let ns = format!("n{i}");
            if closed {
                let other = link_addr(towards, i);
                let rules = format!(
                    "table inet split {{
                       chain out {{ type filter hook output priority -1; udp dport 6464 ip6 daddr {other} drop; }}
                       chain in {{ type filter hook input priority -1; udp sport 6464 ip6 saddr {other} drop; }}
                     }}"
                );
                let f = self.tmp.path().join(format!("split-{i}.nft"));
                std::fs::write(&f, rules).unwrap();
                sh(&self.rig, &ns, &["nft", "-f", f.to_str().unwrap()]);
            } else {
                sh(&self.rig, &ns, &["nft", "delete", "table", "inet", "split"]);
            }
        }
    }
}

const ALL: [usize; N] = [0, 1, 2, 3, 4, 5];

#[test]
fn root_ring_split_six_nodes_with_no_peer_form_one_mesh_at_every_start_and_split_halves_join() {
    if !require_root(
        "root_ring_split_six_nodes_with_no_peer_form_one_mesh_at_every_start_and_split_halves_join",
    ) {
        return;
    }
    let mut ring = build("rmtsplit");
    let mut times = Vec::new();
    for start in 0..10 {
        for i in 0..N {
            ring.start(i);
        }
        let t = ring.wait_routable(
            &ALL,
            Duration::from_secs(60),
            &format!("start {}", start + 1),
        );
        times.push(t);
        ring.stop_all();
    }
    let worst = times.iter().max().copied().unwrap_or_default();
    println!(
        "ring of six, no --peer: every pair routable after {:?} (10 starts), worst {worst:?}",
        times
            .iter()
            .map(|t| format!("{:.1}s", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );

    // the split: each half forms alone, then the links between them open
    ring.split(true);
    for i in 0..N {
        ring.start(i);
    }
    let halves = [[0, 1, 2], [3, 4, 5]];
    for h in &halves {
        ring.wait_routable(h, Duration::from_secs(60), &format!("half {h:?}"));
    }
    assert!(
        !ring.routable(&ALL),
        "the halves reach each other through the closed links"
    );
    ring.split(false);
    let joined = ring.wait_routable(&ALL, Duration::from_secs(60), "the joined halves");
    println!(
        "ring of six split in halves: one mesh {joined:?} after the links between them opened"
    );
    ring.stop_all();
}
