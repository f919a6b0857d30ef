//! The demo network (Linux): namespaces, links, registry, nodes, what the live page shows, the
//! ping matrix and the MAC key rotation step (driven from `super::run`). Everything created lives in a [`Rig`] and a per-run directory,
//! both removed when [`Network`] is dropped (normal exit, Ctrl-C, a node crash, a panic).

#![allow(clippy::disallowed_methods)] // IO shell: runs the demo network: processes, tasks, waiting, wall-clock timings

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::topology::{Topology, generate};
use crate::control::graph::{LinkView, NodeObservation, Observation};
use crate::netns::Rig;
use crate::ui::server::{Action, ActionHandler};
use crate::ui::{SnapshotSource, observe_node};

/// Namespace tag of the demo (`meshdemo-<pid>-<name>`).
pub const TAG: &str = "meshdemo";
/// Prefix of the per-run directory in the temporary directory (`re6mesh-demo-<pid>`).
const RUN_DIR_PREFIX: &str = "re6mesh-demo-";
/// Registry address on the management bridge.
const REGISTRY_ADDR: &str = "fd99::100";
const REGISTRY_PORT: u16 = 8443;
const NODE_PORT: u16 = 6464;
/// Babel hello interval on the demo's tunnels (seconds): short, so the mesh forms fast.
const HELLO: &str = "0.25";
/// Seconds between registry polls (CRL, parameters, MAC keys).
pub(super) const REGISTRY_POLL: u64 = 1;

/// What `mesh demo` was asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Port of the live page on 127.0.0.1.
    pub port: u16,
    /// All-pairs ping matrix, refreshed.
    pub ping: bool,
    /// Rotate the MAC keys through all three steps while pinging.
    pub mac_rotation: bool,
    /// Stop after this long (from when the page is served).
    pub duration: Option<Duration>,
    /// Topology seed.
    pub seed: u64,
    /// The `mesh` binary run in every namespace.
    pub exe: PathBuf,
}

struct DemoNode {
    name: String,
    dir: PathBuf,
    prefix: String,
    address: String,
    pid: u32,
}

struct DemoLink {
    a: usize,
    b: usize,
    /// Interface in a's namespace (towards b) and in b's.
    if_a: String,
    if_b: String,
    addr_a: String,
    addr_b: String,
}

/// Mutable view state shared with the page.
#[derive(Default)]
struct Shared {
    links_up: Vec<bool>,
    revoked: BTreeSet<usize>,
    converged: Option<String>,
    matrix: Option<String>,
    last_action: Option<String>,
}

/// The per-run directory; removed on drop.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// The demo network. Field order matters: the rig (processes, namespaces) goes first, then
/// the directory their state lived in.
pub struct Network {
    rig: Mutex<Rig>,
    run_dir: RunDir,
    exe: PathBuf,
    reg_dir: PathBuf,
    /// Full namespace names of the nodes (for commands that do not need the rig's lock).
    ns: Vec<String>,
    nodes: Vec<DemoNode>,
    links: Vec<DemoLink>,
    topology: Topology,
    registry_pid: u32,
    shared: Mutex<Shared>,
    started: Instant,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Ends the processes left in the namespaces of killed demo runs (they were started by that
/// run, inside namespaces only it created), then deletes those namespaces and run directories.
pub fn cleanup_killed_runs() -> anyhow::Result<Vec<String>> {
    let mut gone = Vec::new();
    for ns in crate::netns::list_namespaces()? {
        let Some(rest) = ns.strip_prefix(&format!("{TAG}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &ns])
            .stdin(Stdio::null())
            .output()
        {
            for p in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                if let Some(p) = rustix::process::Pid::from_raw(p) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
        gone.push(ns);
    }
    // the namespaces themselves: the rig's own stale cleanup
    crate::netns::cleanup_stale(TAG)?;
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(RUN_DIR_PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !pid_alive(pid) && std::fs::remove_dir_all(e.path()).is_ok() {
                gone.push(e.path().display().to_string());
            }
        }
    }
    Ok(gone)
}

impl Network {
    /// The last `n` lines of each node's log that say what happened to its tunnels, routes,
    /// parameters and handshakes (INFO and above), for a report of lost pings.
    /// What the live page shows as the last thing the demo did.
    pub(super) fn set_last_action(&self, text: String) {
        lock(&self.shared).last_action = Some(text);
    }

    pub(super) fn node_events(&self, n: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(self.run_dir.0.join(format!("{}.log", node.name)))
                .map(|t| strip_ansi(&t))
                .unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
                .collect();
            out.push_str(&format!("  {}:\n", node.name));
            for l in &lines[lines.len().saturating_sub(n)..] {
                out.push_str(&format!("    {l}\n"));
            }
        }
        out
    }
}

/// Removes terminal colour sequences (`ESC [ … letter`) from a log text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// Runs a host command (the demo's own `mesh` admin commands); fails with its stderr.
fn host(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_start_matches("error: ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn checked(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

impl Network {
    /// Builds the network: namespaces, links, filters, registry, joined nodes, started nodes.
    /// Checks `stop` between steps; whatever was created is removed if it fails.
    pub fn build(opts: &DemoOptions, stop: &AtomicBool) -> anyhow::Result<Network> {
        let topology = generate(opts.nodes, opts.seed);
        let mut rig = Rig::new(TAG).context("cannot set up network namespaces")?;
        let run_dir =
            RunDir(std::env::temp_dir().join(format!("{RUN_DIR_PREFIX}{}", std::process::id())));
        std::fs::create_dir_all(&run_dir.0)
            .with_context(|| format!("cannot create {}", run_dir.0.display()))?;
        let n = opts.nodes;

        // Management bridge in the registry's namespace: nodes reach the registry over it,
        // never each other (nftables below drops UDP on it).
        rig.add_ns("reg")?;
        rig.exec("reg", &["ip", "link", "add", "br0", "type", "bridge"])?;
        rig.exec("reg", &["ip", "link", "set", "br0", "up"])?;
        rig.exec(
            "reg",
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{REGISTRY_ADDR}/64"),
                "dev",
                "br0",
                "nodad",
            ],
        )?;
        let mut ns = Vec::new();
        for i in 0..n {
            checked(stop)?;
            let name = node_name(i);
            ns.push(rig.add_ns(&name)?);
            for k in [
                "net.ipv6.conf.all.keep_addr_on_down=1",
                "net.ipv6.conf.default.keep_addr_on_down=1",
            ] {
                rig.exec(&name, &["sysctl", "-qw", k])?;
            }
            let (to_reg, in_reg) = rig.link(&name, "reg")?;
            rig.exec("reg", &["ip", "link", "set", &in_reg, "master", "br0"])?;
            rig.exec(
                &name,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("fd99::{:x}/64", i + 1),
                    "dev",
                    &to_reg,
                    "nodad",
                ],
            )?;
            // no tunnel traffic over the management bridge: underlay shortcuts blocked
            let rules = format!(
                "table inet meshdemo {{\n\
                   chain out {{ type filter hook output priority 0; oifname \"{to_reg}\" meta l4proto udp drop; }}\n\
                   chain in {{ type filter hook input priority 0; iifname \"{to_reg}\" meta l4proto udp drop; }}\n\
                 }}\n"
            );
            let f = run_dir.0.join(format!("{name}.nft"));
            std::fs::write(&f, rules).with_context(|| format!("cannot write {}", f.display()))?;
            rig.exec(&name, &["nft", "-f", &f.to_string_lossy()])?;
        }
        // The topology's links: one veth pair each, a /64 per link.
        let mut links = Vec::new();
        for (k, &(a, b)) in topology.links.iter().enumerate() {
            checked(stop)?;
            let (if_a, if_b) = rig.link(&node_name(a), &node_name(b))?;
            let addr_a = format!("fd98:0:0:{k:x}::1");
            let addr_b = format!("fd98:0:0:{k:x}::2");
            for (who, iface, addr) in [(a, &if_a, &addr_a), (b, &if_b, &addr_b)] {
                rig.exec(
                    &node_name(who),
                    &[
                        "ip",
                        "-6",
                        "addr",
                        "add",
                        &format!("{addr}/64"),
                        "dev",
                        iface,
                        "nodad",
                    ],
                )?;
            }
            links.push(DemoLink {
                a,
                b,
                if_a,
                if_b,
                addr_a,
                addr_b,
            });
        }

        // Registry.
        checked(stop)?;
        let exe = opts.exe.clone();
        let reg_dir = run_dir.0.join("registry");
        let reg = reg_dir.to_string_lossy().into_owned();
        host(Command::new(&exe).args([
            "registry",
            "init",
            "--state-dir",
            &reg,
            "--url",
            &format!("https://[{REGISTRY_ADDR}]:{REGISTRY_PORT}"),
        ]))
        .context("cannot create the demo registry")?;
        let log = |name: &str| -> anyhow::Result<Stdio> {
            let p = run_dir.0.join(name);
            Ok(Stdio::from(std::fs::File::create(&p).with_context(
                || format!("cannot create {}", p.display()),
            )?))
        };
        let registry_pid = rig.spawn(
            "reg",
            &exe.to_string_lossy(),
            &[
                "registry",
                "serve",
                "--state-dir",
                &reg,
                "--listen",
                &format!("[::]:{REGISTRY_PORT}"),
            ],
            Stdio::null(),
            log("registry.log")?,
        )?;

        // Join every node (tokens minted here, joins run inside the namespaces, in parallel).
        let mut tokens = Vec::new();
        for _ in 0..n {
            tokens.push(
                host(Command::new(&exe).args(["registry", "token", "create", "--state-dir", &reg]))
                    .context("cannot mint a join token")?,
            );
        }
        let dirs: Vec<PathBuf> = (0..n).map(|i| run_dir.0.join(node_name(i))).collect();
        let exe_s = exe.to_string_lossy().into_owned();
        let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let (rig, token, dir, exe_s) = (&rig, &tokens[i], &dirs[i], &exe_s);
                    s.spawn(move || -> anyhow::Result<()> {
                        let mut last = String::new();
                        // the registry may still be starting: retry for a few seconds
                        for _ in 0..50 {
                            if stop.load(Ordering::SeqCst) {
                                bail!("interrupted");
                            }
                            let o = rig.exec_status(
                                &node_name(i),
                                &[exe_s, "join", token, "--state-dir", &dir.to_string_lossy()],
                            )?;
                            if o.status.success() {
                                return Ok(());
                            }
                            last = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        bail!(
                            "node {} could not join the demo registry: {last}",
                            node_name(i)
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a join thread panicked")))
                })
                .collect()
        });
        for r in results {
            r?;
        }
        let mut prefixes = Vec::new();
        for d in &dirs {
            prefixes.push(crate::state::load(d)?.facts.prefix);
        }

        // Start the nodes: each dials its higher-numbered topology neighbours at their link
        // addresses.
        checked(stop)?;
        let started = Instant::now();
        // Highest-numbered first: a node dials only higher-numbered ones, which then already
        // listen (a first QUIC packet to a port nobody listens on yet costs a ~1 s resend).
        let mut nodes = Vec::new();
        for i in (0..n).rev() {
            let mut args: Vec<String> = [
                "up",
                "--foreground",
                "--state-dir",
                &dirs[i].to_string_lossy(),
                "--listen",
                &format!("[::]:{NODE_PORT}"),
                "--hello-interval",
                HELLO,
                "--registry-poll",
                &REGISTRY_POLL.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            // Only one end of each link dials (the lower-numbered one): when both dial, the
            // node keeps one of the two tunnels and closes the other about a second later,
            // which makes the routes over it flap once.
            for l in links.iter().filter(|l| l.a == i) {
                let (peer, addr) = (l.b, &l.addr_b);
                args.push("--peer".into());
                args.push(format!("{}@[{addr}]:{NODE_PORT}", prefixes[peer]));
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let pid = rig.spawn(
                &node_name(i),
                &exe_s,
                &argv,
                Stdio::null(),
                log(&format!("{}.log", node_name(i)))?,
            )?;
            nodes.push(DemoNode {
                name: node_name(i),
                dir: dirs[i].clone(),
                prefix: prefixes[i].to_string(),
                address: crate::identity::node_address(&prefixes[i]).to_string(),
                pid,
            });
        }
        nodes.reverse();
        let shared = Shared {
            links_up: vec![true; links.len()],
            ..Shared::default()
        };
        Ok(Network {
            rig: Mutex::new(rig),
            run_dir,
            exe,
            reg_dir,
            ns,
            nodes,
            links,
            topology,
            registry_pid,
            shared: Mutex::new(shared),
            started,
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// One line describing the topology.
    pub fn describe(&self) -> String {
        format!(
            "{} nodes, {} links, non-adjacent pairs: {}, longest shortest path: {} hops",
            self.nodes.len(),
            self.topology.links.len(),
            self.topology.non_adjacent_pairs(),
            self.topology.diameter()
        )
    }

    /// The links as text (`n0–n3 n1–n2 …`).
    pub fn links_text(&self) -> String {
        self.topology
            .links
            .iter()
            .map(|(a, b)| format!("n{a}–n{b}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The first of the rig's processes that exited, with a tail of its log.
    pub fn exited(&self) -> Option<String> {
        let mut rig = lock(&self.rig);
        let mut check = |pid: u32, what: &str, log: &str| -> Option<String> {
            let st = rig.child(pid)?.try_wait().ok().flatten()?;
            let text =
                strip_ansi(&std::fs::read_to_string(self.run_dir.0.join(log)).unwrap_or_default());
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            Some(format!(
                "{what} exited unexpectedly ({st}); last lines of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        };
        if let Some(m) = check(self.registry_pid, "the registry", "registry.log") {
            return Some(m);
        }
        for n in &self.nodes {
            if let Some(m) = check(
                n.pid,
                &format!("node {}", n.name),
                &format!("{}.log", n.name),
            ) {
                return Some(m);
            }
        }
        None
    }

    /// Observes every node through its control socket.
    async fn observe_all(&self) -> Vec<NodeObservation> {
        let mut set = tokio::task::JoinSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let (dir, name, prefix) = (n.dir.clone(), n.name.clone(), n.prefix.clone());
            set.spawn(async move { (i, observe_node(&dir, &name, Some(prefix)).await) });
        }
        let mut out: Vec<Option<NodeObservation>> = vec![None; self.nodes.len()];
        while let Some(r) = set.join_next().await {
            if let Ok((i, o)) = r
                && let Some(slot) = out.get_mut(i)
            {
                *slot = Some(o);
            }
        }
        out.into_iter().flatten().collect()
    }

    /// Nodes (by index) that still lack a selected, finite route to some other live node.
    async fn unconverged(&self) -> Vec<usize> {
        let revoked = lock(&self.shared).revoked.clone();
        let obs = self.observe_all().await;
        let mut missing = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if revoked.contains(&i) {
                continue;
            }
            let Some(o) = obs.iter().find(|o| o.name == node.name) else {
                missing.push(i);
                continue;
            };
            let ok = self.nodes.iter().enumerate().all(|(j, other)| {
                j == i
                    || revoked.contains(&j)
                    || o.routes
                        .iter()
                        .any(|r| r.prefix == other.prefix && r.selected && r.metric != u16::MAX)
            });
            if !ok {
                missing.push(i);
            }
        }
        missing
    }

    /// Waits until every node routes to every other; returns how long since the nodes started.
    pub async fn wait_converged(
        &self,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> Result<Duration, String> {
        let t = Instant::now();
        loop {
            let missing = self.unconverged().await;
            if missing.is_empty() {
                let took = self.started.elapsed();
                lock(&self.shared).converged = Some(format!(
                    "All {} nodes routed to every other {:.1} s after they started.",
                    self.nodes.len(),
                    took.as_secs_f64()
                ));
                return Ok(took);
            }
            if stop.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
            if t.elapsed() > timeout {
                let names: Vec<String> = missing.iter().map(|i| node_name(*i)).collect();
                return Err(format!(
                    "the mesh did not converge within {} s (no full routing table on {})",
                    timeout.as_secs(),
                    names.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One all-pairs ping round (blocking): `result[i][j]` = node i got an answer from j.
    /// Revoked nodes are left out (`None`).
    pub fn ping_matrix(&self) -> Vec<Vec<Option<bool>>> {
        let revoked = lock(&self.shared).revoked.clone();
        let n = self.nodes.len();
        std::thread::scope(|s| {
            let rows: Vec<_> = (0..n)
                .map(|i| {
                    let revoked = &revoked;
                    s.spawn(move || {
                        let mut children = Vec::new();
                        for j in 0..n {
                            if i == j || revoked.contains(&i) || revoked.contains(&j) {
                                children.push(None);
                                continue;
                            }
                            let c = Command::new("ip")
                                .args([
                                    "netns",
                                    "exec",
                                    &self.ns[i],
                                    "ping",
                                    "-6",
                                    "-n",
                                    "-q",
                                    "-c",
                                    "1",
                                    "-W",
                                    "1",
                                ])
                                .arg(&self.nodes[j].address)
                                .stdin(Stdio::null())
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .spawn()
                                .ok();
                            children.push(Some(c));
                        }
                        children
                            .into_iter()
                            .map(|c| {
                                c.map(|c| {
                                    c.and_then(|mut c| c.wait().ok())
                                        .is_some_and(|st| st.success())
                                })
                            })
                            .collect::<Vec<Option<bool>>>()
                    })
                })
                .collect();
            rows.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| vec![Some(false); n]))
                .collect()
        })
    }

    /// (answered, asked) of a matrix.
    pub fn count(m: &[Vec<Option<bool>>]) -> (usize, usize) {
        let all = m.iter().flatten().flatten();
        (all.clone().filter(|b| **b).count(), all.count())
    }

    /// A compact text of a matrix: one row per source, `o` answered, `X` lost, `-` self or revoked.
    pub fn matrix_text(&self, m: &[Vec<Option<bool>>]) -> String {
        let (ok, total) = Self::count(m);
        let mut s = format!("ping matrix: {ok}/{total} pairs answer\n");
        let w = node_name(self.nodes.len().saturating_sub(1)).len();
        let _ = write!(s, "{:w$}  to", "");
        for j in 0..self.nodes.len() {
            let _ = write!(s, " {}", j % 10);
        }
        s.push('\n');
        for (i, row) in m.iter().enumerate() {
            let _ = write!(s, "{:>w$} ", node_name(i));
            s.push_str("   ");
            for c in row {
                s.push_str(match c {
                    Some(true) => " o",
                    Some(false) => " X",
                    None => " -",
                });
            }
            s.push('\n');
        }
        s.trim_end().to_owned()
    }

    /// Records a matrix for the page.
    pub fn set_matrix(&self, text: &str) {
        lock(&self.shared).matrix = Some(text.to_owned());
    }

    /// The registry's parameters version.
    fn registry_version(&self) -> Option<u64> {
        let out = host(Command::new(&self.exe).args([
            "registry",
            "params",
            "--json",
            "--state-dir",
            &self.reg_dir.to_string_lossy(),
        ]))
        .ok()?;
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()?
            .get("version")?
            .as_u64()
    }

    /// One step of the MAC key cycle (`mesh registry mac rotate`).
    pub fn rotate(&self) -> Result<String, String> {
        host(Command::new(&self.exe).args([
            "registry",
            "mac",
            "rotate",
            "--state-dir",
            &self.reg_dir.to_string_lossy(),
        ]))
        .map_err(|e| format!("the MAC key rotation failed: {e}"))
    }

    /// Waits until every live node runs parameters version `v` (or `timeout`); returns
    /// whether they all did.
    pub async fn wait_version(&self, v: u64, timeout: Duration) -> bool {
        let t = Instant::now();
        loop {
            let revoked = lock(&self.shared).revoked.clone();
            let obs = self.observe_all().await;
            let all = self.nodes.iter().enumerate().all(|(i, n)| {
                revoked.contains(&i)
                    || obs.iter().any(|o| {
                        o.name == n.name && o.status.as_ref().is_some_and(|s| s.params_version >= v)
                    })
            });
            if all {
                return true;
            }
            if t.elapsed() > timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The parameters version the registry publishes now (0 if it cannot be read).
    pub fn params_version(&self) -> u64 {
        self.registry_version().unwrap_or(0)
    }

    fn node_by_prefix(&self, prefix: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.prefix == prefix)
    }

    fn link_by_prefixes(&self, a: &str, b: &str) -> Option<usize> {
        let (a, b) = (self.node_by_prefix(a)?, self.node_by_prefix(b)?);
        self.links
            .iter()
            .position(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }

    fn set_link(&self, k: usize, up: bool) -> Result<String, String> {
        let l = &self.links[k];
        let state = if up { "up" } else { "down" };
        {
            let rig = lock(&self.rig);
            for (who, iface, addr) in [(l.a, &l.if_a, &l.addr_a), (l.b, &l.if_b, &l.addr_b)] {
                rig.exec(&node_name(who), &["ip", "link", "set", "dev", iface, state])
                    .map_err(|e| format!("cannot set the link {state}: {e}"))?;
                if up {
                    rig.exec(
                        &node_name(who),
                        &[
                            "ip",
                            "-6",
                            "addr",
                            "replace",
                            &format!("{addr}/64"),
                            "dev",
                            iface,
                            "nodad",
                        ],
                    )
                    .map_err(|e| format!("cannot restore the link address: {e}"))?;
                }
            }
        }
        lock(&self.shared).links_up[k] = up;
        Ok(format!(
            "Link n{}–n{} {}.",
            l.a,
            l.b,
            if up { "healed" } else { "cut" }
        ))
    }

    fn revoke(&self, i: usize) -> Result<String, String> {
        if lock(&self.shared).revoked.contains(&i) {
            return Err(format!("{} is already revoked.", self.nodes[i].name));
        }
        let out = host(Command::new(&self.exe).args([
            "registry",
            "revoke",
            &self.nodes[i].prefix,
            "--state-dir",
            &self.reg_dir.to_string_lossy(),
        ]))
        .map_err(|e| format!("the revocation failed: {e}"))?;
        lock(&self.shared).revoked.insert(i);
        Ok(format!("{} revoked: {out}", self.nodes[i].name))
    }
}

impl ActionHandler for Network {
    fn act(&self, action: &Action) -> Result<String, String> {
        let r = match action {
            Action::Revoke { node } => match self.node_by_prefix(node) {
                Some(i) => self.revoke(i),
                None => Err(format!("{node} is not a node of this demo.")),
            },
            Action::Cut { a, b } | Action::Heal { a, b } => match self.link_by_prefixes(a, b) {
                Some(k) => self.set_link(k, matches!(action, Action::Heal { .. })),
                None => Err("there is no link between those two nodes.".into()),
            },
            Action::Rotate => self.rotate(),
        };
        let line = match &r {
            Ok(m) => m.clone(),
            Err(e) => format!("failed: {e}"),
        };
        println!("page action: {line}");
        lock(&self.shared).last_action = Some(format!("Last action: {line}"));
        r
    }
}

/// The page's view of the whole demo network.
pub struct DemoSource(pub Arc<Network>);

impl SnapshotSource for DemoSource {
    async fn observe(&self) -> Observation {
        let net = &self.0;
        let mut nodes = net.observe_all().await;
        let (links, info) = {
            let sh = lock(&net.shared);
            for o in &mut nodes {
                if let Some(i) = net.nodes.iter().position(|n| n.name == o.name) {
                    o.revoked = sh.revoked.contains(&i);
                }
            }
            let links = net
                .links
                .iter()
                .zip(&sh.links_up)
                .map(|(l, up)| LinkView {
                    a: net.nodes[l.a].prefix.clone(),
                    b: net.nodes[l.b].prefix.clone(),
                    up: *up,
                })
                .collect();
            let mut info = vec![format!("Topology: {}.", net.describe())];
            info.push(
                sh.converged
                    .clone()
                    .unwrap_or_else(|| "Waiting for every node to route to every other…".into()),
            );
            if let Some(a) = &sh.last_action {
                info.push(a.clone());
            }
            if let Some(m) = &sh.matrix {
                info.push(m.clone());
            }
            (links, info)
        };
        Observation { nodes, links, info }
    }
}
