//! The 7-node ring rig shared by the node tests: a registry on a bridge that every node
//! reaches, and a ring of veth links n0–n1–…–n6–n0 that carries the tunnels. nftables lets
//! each node's tunnel UDP (port 6464) reach only its two ring neighbours, so routes are
//! multi-hop and a ring link can be cut for real (veth down) or silently (nftables drop).
//! The real binary runs in every namespace.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use re6mesh::netns::Rig;

pub const MESH: &str = env!("CARGO_BIN_EXE_mesh");
pub const N: usize = 7;

/// Node `i`'s address on the bridge (registry traffic; hostile senders come from here).
pub fn underlay(i: usize) -> String {
    format!("fd99::{}", i + 1)
}

/// Node `i`'s address on the ring link towards node `i + 1` (link `i`) or `i − 1`.
pub fn link_addr(i: usize, towards: usize) -> String {
    if towards == (i + 1) % N {
        format!("fd98:{i}::1")
    } else {
        format!("fd98:{towards}::2")
    }
}

/// How a ring starts.
pub struct RingOptions {
    /// `mesh registry params set` arguments applied before anyone joins.
    pub params: Vec<String>,
    /// `--registry-poll` seconds per node (0 = off).
    pub poll: fn(usize) -> u64,
    /// Whether node `i` holds a parameter watch on the registry (`--no-registry-watch`
    /// otherwise).
    pub watch: fn(usize) -> bool,
    /// Extra `mesh registry serve` arguments.
    pub serve_args: Vec<String>,
    /// Tunnels over the bridge, where every node reaches every other (no nftables ring
    /// rule): the tunnel manager can open tunnels to non-neighbours.
    pub open: bool,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            params: vec!["client_count=2".into()],
            poll: |_| 0,
            watch: |_| false,
            serve_args: vec![],
            open: false,
        }
    }
}

pub struct Ring {
    pub rig: Rig,
    pub tmp: tempfile::TempDir,
    pub reg: PathBuf,
    pub prefixes: Vec<ipnet::Ipv6Net>,
    pub started: Instant,
    pub pids: Vec<Option<u32>>,
    pub registry_pid: Option<u32>,
    port: u16,
    poll: fn(usize) -> u64,
    watch: fn(usize) -> bool,
    serve_args: Vec<String>,
    open: bool,
}

impl Drop for Ring {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in (0..N)
                .map(|i| format!("n{i}.log"))
                .chain(["registry.log".to_string()])
            {
                let f = self.tmp.path().join(&name);
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!(
                    "--- {name} (last lines)\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

pub fn mesh_in(rig: &Rig, ns: &str, args: &[&str]) -> std::process::Output {
    let mut argv = vec![MESH];
    argv.extend_from_slice(args);
    rig.exec_status(ns, &argv).unwrap()
}

pub fn node_addr(p: &ipnet::Ipv6Net) -> String {
    re6mesh::identity::node_address(p).to_string()
}

pub fn ping_ok(rig: &Rig, from: usize, to: &str) -> bool {
    rig.exec_status(
        &format!("n{from}"),
        &["ping", "-6", "-c", "1", "-W", "1", to],
    )
    .map(|o| o.status.success())
    .unwrap_or(false)
}

pub fn start_ring() -> Ring {
    start_ring_with(RingOptions::default())
}

pub fn start_ring_with(opts: RingOptions) -> Ring {
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new("rmtring").unwrap();
    rig.add_ns("br").unwrap();
    rig.exec("br", &["ip", "link", "add", "br0", "type", "bridge"])
        .unwrap();
    rig.exec("br", &["ip", "link", "set", "br0", "up"]).unwrap();
    rig.exec(
        "br",
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd99::100/64",
            "dev",
            "br0",
            "nodad",
        ],
    )
    .unwrap();
    for i in 0..N {
        let n = format!("n{i}");
        rig.add_ns(&n).unwrap();
        // a link that goes down and up again keeps its addresses (Linux drops IPv6
        // addresses on link down by default)
        rig.exec(
            &n,
            &["sysctl", "-qw", "net.ipv6.conf.all.keep_addr_on_down=1"],
        )
        .unwrap();
        let (_, in_br) = rig.link(&n, "br").unwrap();
        rig.exec("br", &["ip", "link", "set", &in_br, "master", "br0"])
            .unwrap();
        rig.exec(
            &n,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{}/64", underlay(i)),
                "dev",
                "to-br",
                "nodad",
            ],
        )
        .unwrap();
    }
    // the ring links: link i joins n_i (fd98:i::1) and n_{i+1} (fd98:i::2)
    for i in 0..N {
        let j = (i + 1) % N;
        let (a, b) = rig.link(&format!("n{i}"), &format!("n{j}")).unwrap();
        for (ns, dev, addr) in [(i, a, link_addr(i, j)), (j, b, link_addr(j, i))] {
            rig.exec(
                &format!("n{ns}"),
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{addr}/64"),
                    "dev",
                    &dev,
                    "nodad",
                ],
            )
            .unwrap();
        }
    }
    for i in (0..N).filter(|_| !opts.open) {
        let n = format!("n{i}");
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
        rig.exec(&n, &["nft", "-f", f.to_str().unwrap()]).unwrap();
    }
    let reg = tmp.path().join("registry");
    let port = 19000 + (std::process::id() % 1000) as u16;
    let o = Command::new(MESH)
        .args([
            "registry",
            "init",
            "--state-dir",
            reg.to_str().unwrap(),
            "--url",
            &format!("https://[fd99::100]:{port}"),
            "--network",
            "fd43:bb::/48",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut ring = Ring {
        rig,
        tmp,
        reg,
        prefixes: vec![],
        started: Instant::now(),
        pids: vec![None; N],
        registry_pid: None,
        port,
        poll: opts.poll,
        watch: opts.watch,
        serve_args: opts.serve_args,
        open: opts.open,
    };
    for p in &opts.params {
        ring.registry_ok(&["params", "set", p]);
    }
    ring.start_registry();
    for i in 0..N {
        let token = ring.registry_ok(&["token", "create"]);
        let dir = ring.dir(i);
        let o = mesh_in(
            &ring.rig,
            &format!("n{i}"),
            &["join", token.trim(), "--state-dir", dir.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        ring.prefixes
            .push(re6mesh::state::load(&dir).unwrap().facts.prefix);
    }
    ring.started = Instant::now();
    for i in 0..N {
        ring.start_node(i);
    }
    ring
}

impl Ring {
    /// Node `i`'s state directory.
    pub fn dir(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("n{i}"))
    }

    fn log(&self, name: &str) -> Stdio {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join(name))
            .unwrap();
        Stdio::from(f)
    }

    /// Runs `mesh registry ARGS --state-dir REG`; panics unless it succeeds; returns stdout.
    pub fn registry_ok(&self, args: &[&str]) -> String {
        let o = self.registry(args);
        assert!(
            o.status.success(),
            "mesh registry {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs `mesh registry ARGS --state-dir REG`.
    pub fn registry(&self, args: &[&str]) -> std::process::Output {
        Command::new(MESH)
            .arg("registry")
            .args(args)
            .arg("--state-dir")
            .arg(&self.reg)
            .output()
            .unwrap()
    }

    pub fn start_registry(&mut self) {
        let listen = format!("[::]:{}", self.port);
        let mut args = vec![
            "registry",
            "serve",
            "--state-dir",
            self.reg.to_str().unwrap(),
            "--listen",
            &listen,
        ];
        let extra: Vec<&str> = self.serve_args.iter().map(String::as_str).collect();
        args.extend(extra);
        let (o, e) = (Stdio::null(), self.log("registry.log"));
        let pid = self.rig.spawn("br", MESH, &args, o, e).unwrap();
        self.registry_pid = Some(pid);
        // wait until it accepts connections
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(
                &format!("[fd99::100]:{}", self.port).parse().unwrap(),
                Duration::from_millis(100),
            )
            .is_ok()
                || self
                    .rig
                    .exec_status("br", &["ss", "-Htln", &format!("sport = :{}", self.port)])
                    .map(|o| !o.stdout.is_empty())
                    .unwrap_or(false)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the registry did not start");
    }

    pub fn stop_registry(&mut self) {
        if let Some(pid) = self.registry_pid.take() {
            self.rig.stop(pid, Duration::from_secs(5));
        }
    }

    pub fn start_node(&mut self, i: usize) {
        self.start_node_opts(i, true);
    }

    /// Starts node `i`; `with_peers`: with its ring neighbours as `--peer`s (otherwise it
    /// finds peers in its peer cache, from neighbours or from the registry).
    pub fn start_node_opts(&mut self, i: usize, with_peers: bool) {
        let dir = self.dir(i);
        let (l, r) = ((i + N - 1) % N, (i + 1) % N);
        let addr = |of: usize, towards: usize| {
            if self.open {
                underlay(of)
            } else {
                link_addr(of, towards)
            }
        };
        let pl = format!("{}@[{}]:6464", self.prefixes[l], addr(l, i));
        let pr = format!("{}@[{}]:6464", self.prefixes[r], addr(r, i));
        let el = format!("[{}]:6464", addr(i, l));
        let er = format!("[{}]:6464", addr(i, r));
        let poll = format!("{}", (self.poll)(i));
        let mut args = vec![
            "up",
            "--foreground",
            "--state-dir",
            dir.to_str().unwrap(),
            "--listen",
            "[::]:6464",
            "--endpoint",
            &el,
            "--hello-interval",
            "0.5",
            "--registry-poll",
            &poll,
        ];
        if er != el {
            args.extend(["--endpoint", &er]);
        }
        if with_peers {
            args.extend(["--peer", &pl, "--peer", &pr]);
        }
        if !(self.watch)(i) {
            args.push("--no-registry-watch");
        }
        let (o, e) = (Stdio::null(), self.log(&format!("n{i}.log")));
        let pid = self.rig.spawn(&format!("n{i}"), MESH, &args, o, e).unwrap();
        self.pids[i] = Some(pid);
    }

    pub fn stop_node(&mut self, i: usize) {
        if let Some(pid) = self.pids[i].take() {
            self.rig.stop(pid, Duration::from_secs(5));
        }
    }

    /// `mesh status --json` of node `i` (None while it does not answer).
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let o = Command::new(MESH)
            .args(["status", "--json", "--state-dir"])
            .arg(self.dir(i))
            .output()
            .ok()?;
        serde_json::from_slice(&o.stdout).ok()
    }

    /// `mesh peers --json` of node `i`: the peers' prefixes.
    pub fn peers(&self, i: usize) -> Vec<String> {
        self.peer_lines(i)
            .iter()
            .filter_map(|v| v["prefix"].as_str().map(str::to_owned))
            .collect()
    }

    /// `mesh peers --json` of node `i`, one value per tunnel.
    pub fn peer_lines(&self, i: usize) -> Vec<serde_json::Value> {
        let o = Command::new(MESH)
            .args(["peers", "--json", "--state-dir"])
            .arg(self.dir(i))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect()
    }

    /// Starts a 10 Hz ping from node `from` to `to`; returns (pid, output file).
    pub fn ping_series(&mut self, from: usize, to: &str, count: u32) -> (u32, PathBuf) {
        self.ping_series_sized(from, to, count, 56)
    }

    /// [`Ring::ping_series`] with `size` bytes of ICMP payload (1232 fills a 1280-byte
    /// IPv6 packet).
    pub fn ping_series_sized(
        &mut self,
        from: usize,
        to: &str,
        count: u32,
        size: u32,
    ) -> (u32, PathBuf) {
        let out = self.tmp.path().join(format!(
            "ping-{from}-{to}-{size}-{}.out",
            Instant::now().elapsed().as_nanos()
        ));
        let pid = self
            .rig
            .spawn(
                &format!("n{from}"),
                "ping",
                &[
                    "-6",
                    "-i",
                    "0.1",
                    "-c",
                    &count.to_string(),
                    "-W",
                    "1",
                    "-s",
                    &size.to_string(),
                    to,
                ],
                Stdio::from(std::fs::File::create(&out).unwrap()),
                Stdio::null(),
            )
            .unwrap();
        (pid, out)
    }

    /// Waits for a process of the rig to end (up to `timeout`).
    pub fn wait_pid(&mut self, pid: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self
            .rig
            .child(pid)
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const SERVER_PY: &str = r#"
import socket, hashlib
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 5001)); s.listen(1)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"#;

const CLIENT_PY: &str = r#"
import socket, hashlib, sys, random
r = random.Random(7); data = bytes(r.getrandbits(8) for _ in range(int(sys.argv[2])))
c = socket.create_connection((sys.argv[1], 5001), timeout=60); c.sendall(data); c.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

impl Ring {
    /// Sends `bytes` random bytes over TCP from node `from` to node `to` and checks the
    /// SHA-256 at the far end; returns how long the transfer took.
    pub fn tcp_transfer(&mut self, from: usize, to: usize, bytes: usize) -> Duration {
        let server = self.tmp.path().join(format!("server-{from}-{to}.out"));
        let pid = self
            .rig
            .spawn(
                &format!("n{to}"),
                "python3",
                &["-c", SERVER_PY],
                Stdio::from(std::fs::File::create(&server).unwrap()),
                Stdio::null(),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let client = self
            .rig
            .exec_status(
                &format!("n{from}"),
                &[
                    "python3",
                    "-c",
                    CLIENT_PY,
                    &node_addr(&self.prefixes[to]),
                    &bytes.to_string(),
                ],
            )
            .unwrap();
        assert!(
            client.status.success(),
            "client: {}",
            String::from_utf8_lossy(&client.stderr)
        );
        // The client is done once its last bytes are in its socket buffer (most of a
        // megabyte): the transfer ends when the server has read them all and exits. Under loss
        // on every hop that tail can take many retransmission timeouts, so wait on the server,
        // as long as the client's own 60 s socket timeout.
        self.wait_pid(pid, Duration::from_secs(60));
        let elapsed = t.elapsed();
        let sent = String::from_utf8_lossy(&client.stdout).trim().to_owned();
        let got = std::fs::read_to_string(&server).unwrap().trim().to_owned();
        assert_eq!(
            got, sent,
            "the bytes received differ from the bytes sent (or the server had not finished after {elapsed:?})"
        );
        elapsed
    }
}

pub fn all_pairs(ring: &Ring) -> bool {
    (0..N).all(|i| {
        (0..N)
            .filter(|j| *j != i)
            .all(|j| ping_ok(&ring.rig, i, &node_addr(&ring.prefixes[j])))
    })
}

pub fn wait_all_pairs(ring: &Ring, timeout: Duration) -> Duration {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if all_pairs(ring) {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("not every pair reaches every other after {timeout:?}");
}

/// Received `icmp_seq` numbers of a `ping` output.
pub fn received_seqs(out: &str) -> Vec<u32> {
    out.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// Longest run of missing sequence numbers between 1 and `last`.
pub fn longest_gap(seqs: &[u32], last: u32) -> u32 {
    let mut got = vec![false; last as usize + 1];
    for s in seqs {
        if let Some(g) = got.get_mut(*s as usize) {
            *g = true;
        }
    }
    let (mut best, mut cur) = (0, 0);
    for g in got.iter().skip(1) {
        if *g {
            cur = 0;
        } else {
            cur += 1;
            best = best.max(cur);
        }
    }
    best
}

/// Waits (up to 30 s) until node `i`'s status counters satisfy `done`; returns them.
pub fn wait_for_counters(
    ring: &Ring,
    i: usize,
    done: impl Fn(&dyn Fn(&str) -> u64) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counters = ring
            .status(i)
            .map(|s| s["counters"].clone())
            .unwrap_or_default();
        let get = |k: &str| counters[k].as_u64().unwrap_or(0);
        if done(&get) {
            return counters;
        }
        assert!(
            Instant::now() < deadline,
            "n{i}'s counters never got there: {counters}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
