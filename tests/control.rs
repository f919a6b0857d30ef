//! The control socket with a fake node behind it.

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

use std::sync::Arc;
use std::sync::Mutex;

use re6mesh::control::client::{ControlClient, ControlClientError};
use re6mesh::control::locate::{self, Probe};
use re6mesh::control::server::{ControlBindError, ControlServer};
use re6mesh::control::*;

struct Fake {
    state: Mutex<NodeStateName>,
}

impl ControlHandler for Fake {
    fn status(&self) -> Status {
        Status {
            state: *self.state.lock().unwrap(),
            prefix: "fd00:1:0:1::/64".into(),
            address: "fd00:1:0:1::1".into(),
            network: "fd00:1::/48".into(),
            params_version: 3,
            protocol: 1,
            tunnels: 1,
            routes: 2,
            uptime_secs: 5,
            error: None,
            warnings: Vec::new(),
            counters: Default::default(),
            traffic: Default::default(),
            drops: Default::default(),
            paths: Default::default(),
            certificate: None,
            registry: None,
            seal: None,
            port_mapping: None,
            exit: None,
            ipv4: None,
        }
    }
    fn peers(&self) -> Vec<Peer> {
        vec![Peer {
            prefix: "fd00:1:0:2::/64".into(),
            endpoint: "[fd99::2]:6464".into(),
            rtt_ms: 0.4,
            initiated: true,
            state: "up".into(),
            params_version: 3,
            traffic: Default::default(),
            last_rx_ms_ago: None,
            name: Some("n2".into()),
            made: "direct".into(),
        }]
    }
    fn routes(&self) -> Vec<Route> {
        vec![Route {
            prefix: "fd00:1:0:2::/64".into(),
            next_hop: "fd00:1:0:2::1".into(),
            iface: "t-fd00:1:0:2".into(),
            metric: 96,
            router_id: router_id_text(&[1, 2, 3, 4, 5, 6, 7, 8]),
            seqno: 7,
            selected: true,
            local: false,
            path: "direct".into(),
            name: Some("n2".into()),
            origin: None,
        }]
    }
    fn up(&self) -> Result<String, String> {
        *self.state.lock().unwrap() = NodeStateName::Up;
        Ok("connecting".into())
    }
    fn down(&self) -> Result<String, String> {
        let mut s = self.state.lock().unwrap();
        if *s == NodeStateName::Down {
            return Err("already down".into());
        }
        *s = NodeStateName::Down;
        Ok("disconnected".into())
    }
    fn exit(&self) -> Result<String, String> {
        Ok("bye".into())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn control_socket_answers_reads_and_actions_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let client = ControlClient::new(dir.path());
    assert!(matches!(
        client.status().await,
        Err(ControlClientError::NotRunning(_))
    ));
    // what a plain `mesh status` probes: the directory's endpoint (socket, or named pipe)
    assert_eq!(locate::probe(dir.path()).await, Probe::Nothing);
    let server = ControlServer::bind(dir.path(), 0o600).await.unwrap();
    let sock = server.path().to_path_buf();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let fake = Arc::new(Fake {
        state: Mutex::new(NodeStateName::Up),
    });
    let task = tokio::spawn(server.run(fake, async {
        let _ = rx.await;
    }));
    // a second node on the same state directory is refused (on Windows by the pipe's
    // FILE_FLAG_FIRST_PIPE_INSTANCE, which Wine 8.0 ignores: scripts/wine-test says Wine)
    if cfg!(windows) && std::env::var_os("RE6MESH_UNDER_WINE").is_some() {
        println!("SKIPPED second bind refused: Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE");
    } else {
        match ControlServer::bind(dir.path(), 0o600).await {
            Err(ControlBindError::InUse(_)) => {}
            Err(e) => panic!("second bind: {e}"),
            Ok(_) => panic!("second bind: accepted"),
        }
    }

    assert_eq!(locate::probe(dir.path()).await, Probe::Answers);
    let st = client.status().await.unwrap();
    assert_eq!(st.state, NodeStateName::Up);
    let v = serde_json::to_value(&st).unwrap();
    assert_eq!(v["state"], "up");
    let routes = client.routes().await.unwrap();
    let r = serde_json::to_value(&routes[0]).unwrap();
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
        assert!(r.get(f).is_some(), "route field {f} missing");
    }
    assert_eq!(r["router_id"], "01:02:03:04:05:06:07:08");
    assert_eq!(client.peers().await.unwrap().len(), 1);
    // the graph the live page draws: this node, its tunnel peer (also a route destination)
    let g: serde_json::Value = client.get("/v1/graph").await.unwrap();
    let nodes: Vec<&str> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["fd00:1:0:1::/64", "fd00:1:0:2::/64"]);
    assert_eq!(g["edges"].as_array().unwrap().len(), 1);
    let d = client.action("down").await.unwrap();
    assert!(d.ok);
    assert_eq!(client.status().await.unwrap().state, NodeStateName::Down);
    let again = client.action("down").await.unwrap();
    assert!(!again.ok && again.message.contains("already"));
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(!sock.exists(), "socket left behind");
    assert_eq!(locate::probe(dir.path()).await, Probe::Nothing);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // a socket whose owner died: bound, then the listener dropped
    let path = dir.path().join(SOCKET_NAME);
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    ControlServer::bind(dir.path(), 0o600).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mesh_status_peers_routes_down_talk_to_the_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControlServer::bind(dir.path(), 0o600).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let fake = Arc::new(Fake {
        state: Mutex::new(NodeStateName::Up),
    });
    let task = tokio::spawn(server.run(fake, async {
        let _ = rx.await;
    }));
    let d = dir.path().to_str().unwrap().to_owned();
    let run = move |args: &[&str]| {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--state-dir", &d]);
        std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
            .args(&full)
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(move || {
        let st = run(&["status", "--json"]);
        let human = run(&["status"]);
        let routes = run(&["routes", "--json"]);
        let peers = run(&["peers"]);
        let down = run(&["down"]);
        let down2 = run(&["down"]);
        (st, human, routes, peers, down, down2)
    })
    .await
    .unwrap();
    let (st, human, routes, peers, down, down2) = out;
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["state"], "up");
    assert_eq!(v["params_version"], 3);
    assert!(String::from_utf8_lossy(&human.stdout).contains("state           up"));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&routes.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["metric"], 96);
    assert!(String::from_utf8_lossy(&peers.stdout).contains("fd00:1:0:2::/64"));
    assert!(down.status.success());
    assert_eq!(down2.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down2.stderr).contains("already down"));
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    // no node: one clear sentence, exit 1
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["status", "--state-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no node is running"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// As a service the socket belongs to the `re6mesh` group with mode 0660 (CONVENTIONS); the
/// handover itself is checked here with a group every Debian system has.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn root_control_socket_can_be_shared_with_a_group() {
    if !re6mesh::netns::require_root("root_control_socket_can_be_shared_with_a_group") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    let gid = group_id(&groups, "daemon").expect("group daemon in /etc/group");
    assert_ne!(gid, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = ControlServer::bind(dir.path(), 0o600).await.unwrap();
    let meta = std::fs::metadata(server.path()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_ne!(meta.gid(), gid);
    server.share_with_group(gid).unwrap();
    let meta = std::fs::metadata(server.path()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
}

/// Issue 16: after `sudo mesh up`, a plain `mesh status` run by a member of the socket's group
/// finds the system node in /var/lib/re6mesh without `--state-dir`, and a non-member is told
/// why not. The "system" directory is a tmpfs over /var/lib in a private mount namespace, so
/// the machine's own /var/lib/re6mesh is never touched; the user is nobody, with and without
/// the socket's group.
#[cfg(target_os = "linux")]
#[test]
fn root_status_as_a_user_finds_the_system_node() {
    if !re6mesh::netns::require_root("root_status_as_a_user_finds_the_system_node") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let o = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(exe)
        .args(["--exact", INNER_SYSTEM_NODE, "--ignored", "--nocapture"])
        .env("RE6MESH_INNER_SYSTEM_NODE", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{text}");
    assert!(o.status.success(), "inner test failed:\n{text}");
    assert!(text.contains("1 passed"), "inner test did not run:\n{text}");
}

#[cfg(target_os = "linux")]
const INNER_SYSTEM_NODE: &str = "inner_status_as_a_user_finds_the_system_node";

/// Runs only inside the mount namespace made by the test above.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
#[ignore = "runs in a private mount namespace, started by root_status_as_a_user_finds_the_system_node"]
async fn inner_status_as_a_user_finds_the_system_node() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    assert!(
        std::env::var_os("RE6MESH_INNER_SYSTEM_NODE").is_some(),
        "run through the root_ test"
    );
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs", "/var/lib"])
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs on /var/lib");
    let dir = re6mesh::paths::system_node_dir();
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    // The socket's group stands in for re6mesh: `daemon`, which nobody is not in (nobody's
    // own group, nogroup, would let the outsider in).
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    let gid = group_id(&groups, "daemon").expect("group daemon in /etc/group");
    assert_ne!(gid, 65534);
    // what `sudo mesh up` does: the node shares its socket, the CLI opens the directory
    let server = ControlServer::bind(&dir, 0o600).await.unwrap();
    server.share_with_group(gid).unwrap();
    assert!(re6mesh::control::locate::share_dir_with_group(&dir, gid).unwrap());
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o710);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let fake = Arc::new(Fake {
        state: Mutex::new(NodeStateName::Up),
    });
    let task = tokio::spawn(server.run(fake, async {
        let _ = rx.await;
    }));
    let as_nobody = |groups: String, args: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", &groups])
                .arg(env!("CARGO_BIN_EXE_mesh"))
                .args(args)
                // a home without a node of its own: the search goes on to the system node
                .env("HOME", "/nonexistent-re6mesh-test")
                .env_remove("MESH_STATE_DIR")
                .env_remove("XDG_DATA_HOME")
                .output()
                .unwrap()
        })
    };
    let member = as_nobody(format!("--groups={gid}"), &["status"])
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&member.stdout);
    assert!(
        member.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&member.stderr)
    );
    assert!(
        out.contains("node            system node (/var/lib/re6mesh)"),
        "{out}"
    );
    assert!(out.contains("state           up"), "{out}");
    let down = as_nobody(format!("--groups={gid}"), &["down"])
        .await
        .unwrap();
    assert!(
        down.status.success(),
        "a member disconnects the node without sudo"
    );

    let outsider = as_nobody("--clear-groups".into(), &["status"])
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&outsider.stderr);
    assert_eq!(outsider.status.code(), Some(1), "{err}");
    assert!(
        err.contains("may not use the system node's control socket"),
        "{err}"
    );
    assert!(err.contains("usermod -aG re6mesh"), "{err}");
    println!("member: {}\noutsider: {}", out.trim(), err.trim());
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
