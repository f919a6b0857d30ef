//! Registry + 7 nodes on one bridge underlay; nftables lets each node's tunnel UDP reach only
//! its two ring neighbours, so routes are multi-hop; the real binary in every namespace.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use re6mesh::netns::{Rig, require_root};

const MESH: &str = env!("CARGO_BIN_EXE_mesh");
const N: usize = 7;

fn underlay(i: usize) -> String {
    format!("fd99::{}", i + 1)
}

struct Ring {
    rig: Rig,
    tmp: tempfile::TempDir,
    reg: PathBuf,
    prefixes: Vec<ipnet::Ipv6Net>,
    started: Instant,
}

impl Drop for Ring {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..N {
                let f = self.tmp.path().join(format!("n{i}.log"));
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                eprintln!(
                    "--- n{i}.log (last lines)\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

fn mesh_in(rig: &Rig, ns: &str, args: &[&str]) -> std::process::Output {
    let mut argv = vec![MESH];
    argv.extend_from_slice(args);
    rig.exec_status(ns, &argv).unwrap()
}

fn node_addr(p: &ipnet::Ipv6Net) -> String {
    re6mesh::identity::node_address(p).to_string()
}

fn ping_ok(rig: &Rig, from: usize, to: &str) -> bool {
    rig.exec_status(
        &format!("n{from}"),
        &["ping", "-6", "-c", "1", "-W", "1", to],
    )
    .map(|o| o.status.success())
    .unwrap_or(false)
}

fn start_ring() -> Ring {
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
        // tunnel UDP only to and from the two ring neighbours
        let l = underlay((i + N - 1) % N);
        let r = underlay((i + 1) % N);
        let rules = format!(
            "table inet ring {{
               chain out {{ type filter hook output priority 0; udp dport 6464 ip6 daddr != {{ {l}, {r} }} drop; }}
               chain in {{ type filter hook input priority 0; udp sport 6464 ip6 saddr != {{ {l}, {r} }} drop; }}
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
    let o = Command::new(MESH)
        .args([
            "registry",
            "params",
            "--state-dir",
            reg.to_str().unwrap(),
            "set",
            "client_count=2",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let log = |name: &str| Stdio::from(std::fs::File::create(tmp.path().join(name)).unwrap());
    rig.spawn(
        "br",
        MESH,
        &[
            "registry",
            "serve",
            "--state-dir",
            reg.to_str().unwrap(),
            "--listen",
            &format!("[::]:{port}"),
        ],
        Stdio::null(),
        log("registry.log"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let mut prefixes = Vec::new();
    for i in 0..N {
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
        let dir = tmp.path().join(format!("n{i}"));
        let o = mesh_in(
            &rig,
            &format!("n{i}"),
            &["join", &token, "--state-dir", dir.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        prefixes.push(re6mesh::state::load(&dir).unwrap().facts.prefix);
    }
    let started = Instant::now();
    for i in 0..N {
        let dir = tmp.path().join(format!("n{i}"));
        let l = (i + N - 1) % N;
        let r = (i + 1) % N;
        let pl = format!("{}@[{}]:6464", prefixes[l], underlay(l));
        let pr = format!("{}@[{}]:6464", prefixes[r], underlay(r));
        let ep = format!("[{}]:6464", underlay(i));
        let args = [
            "up",
            "--foreground",
            "--state-dir",
            dir.to_str().unwrap(),
            "--listen",
            "[::]:6464",
            "--peer",
            &pl,
            "--peer",
            &pr,
            "--endpoint",
            &ep,
            "--hello-interval",
            "0.5",
            "--registry-poll",
            "0",
        ];
        rig.spawn(
            &format!("n{i}"),
            MESH,
            &args,
            Stdio::null(),
            log(&format!("n{i}.log")),
        )
        .unwrap();
    }
    Ring {
        rig,
        tmp,
        reg,
        prefixes,
        started,
    }
}

fn all_pairs(ring: &Ring) -> bool {
    (0..N).all(|i| {
        (0..N)
            .filter(|j| *j != i)
            .all(|j| ping_ok(&ring.rig, i, &node_addr(&ring.prefixes[j])))
    })
}

fn wait_all_pairs(ring: &Ring, timeout: Duration) -> Duration {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if all_pairs(ring) {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("not every pair reaches every other after {timeout:?}");
}

const SERVER_PY: &str = r#"
import socket, hashlib, sys
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
r = random.Random(7); data = bytes(r.getrandbits(8) for _ in range(10 * 1024 * 1024))
c = socket.create_connection((sys.argv[1], 5001), timeout=60); c.sendall(data); c.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

#[test]
fn root_ring_of_seven_every_pair_reaches_every_other_and_a_tcp_transfer_crosses_three_hops() {
    if !require_root(
        "root_ring_of_seven_every_pair_reaches_every_other_and_a_tcp_transfer_crosses_three_hops",
    ) {
        return;
    }
    let mut ring = start_ring();
    let took = wait_all_pairs(&ring, Duration::from_secs(60));
    println!(
        "7-node ring: all {} pairs reachable {:?} after start ({took:?} of polling)",
        N * (N - 1),
        ring.started.elapsed()
    );

    // 10 MB over TCP from n0 to n3 (3 hops either way round the ring), checksummed end to end
    // the path really is multi-hop: n3's echo reply reaches n0 with its hop limit lowered
    // by the two relays n2 and n1 (or more, the other way round)
    let ping = ring
        .rig
        .exec_status(
            "n0",
            &[
                "ping",
                "-6",
                "-c",
                "1",
                "-W",
                "2",
                &node_addr(&ring.prefixes[3]),
            ],
        )
        .unwrap();
    let out = String::from_utf8_lossy(&ping.stdout).to_string();
    let hlim: u32 = out
        .split(|c: char| c.is_whitespace())
        .find_map(|w| w.strip_prefix("ttl=").or_else(|| w.strip_prefix("hlim=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no hop limit in {out}"));
    assert!(hlim <= 62, "n0 -> n3 took fewer than 3 hops: {out}");

    // 10 MB over TCP from n0 to n3 (3 hops either way round the ring), checksummed end to end
    let server = ring.tmp.path().join("server.out");
    let server_out = Stdio::from(std::fs::File::create(&server).unwrap());
    let pid = ring
        .rig
        .spawn(
            "n3",
            "python3",
            &["-c", SERVER_PY],
            server_out,
            Stdio::null(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let client = ring
        .rig
        .exec_status(
            "n0",
            &["python3", "-c", CLIENT_PY, &node_addr(&ring.prefixes[3])],
        )
        .unwrap();
    let elapsed = t.elapsed();
    let sent = String::from_utf8_lossy(&client.stdout).trim().to_owned();
    assert!(
        client.status.success(),
        "client: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while ring
        .rig
        .child(pid)
        .is_some_and(|c| c.try_wait().ok().flatten().is_none())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = std::fs::read_to_string(&server).unwrap().trim().to_owned();
    assert_eq!(got, sent, "the bytes received differ from the bytes sent");
    println!(
        "10 MB TCP n0 -> n3 over 3 hops: {elapsed:?} ({:.1} Mbit/s), sha256 match",
        80.0 / elapsed.as_secs_f64()
    );
}
