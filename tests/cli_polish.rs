//! Issue 16, CLI polish: completions, man pages, `--version`, and the new `--json` outputs, as
//! a user runs them (the real binary; no root, no state directory unless the command needs one).

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::TestRegistry;
use re6mesh::control::server::ControlServer;
use re6mesh::control::*;

fn mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .env_remove("MESH_STATE_DIR")
        .output()
        .expect("run mesh")
}

fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    let out = ok_stdout(o);
    assert_eq!(out.trim().lines().count(), 1, "not one line: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn is_commit(s: &str) -> bool {
    s == "unknown" || (s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn completions_for_every_shell_name_real_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ok_stdout(&mesh(&["completions", shell]));
        for sub in ["join", "status", "registry", "completions", "update"] {
            assert!(out.contains(sub), "{shell}: no {sub} in the completions");
        }
    }
    assert_eq!(mesh(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn man_prints_roff_and_out_writes_one_page_per_command() {
    let out = ok_stdout(&mesh(&["man"]));
    assert!(out.contains(".TH mesh 1"), "{out}");
    assert!(out.contains("join"), "subcommands listed: {out}");
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    ok_stdout(&mesh(&["man", "--out", pages.to_str().unwrap()]));
    for page in [
        "mesh.1",
        "mesh-up.1",
        "mesh-join.1",
        "mesh-registry-init.1",
        "mesh-update.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}

#[test]
fn version_names_the_protocol_and_the_commit() {
    let line = ok_stdout(&mesh(&["--version"]));
    let line = line.trim();
    let prefix = format!(
        "mesh {} (protocol {}, commit ",
        env!("CARGO_PKG_VERSION"),
        re6mesh::params::PROTOCOL_VERSION
    );
    let commit = line
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?} is not {prefix:?}…)"));
    assert!(is_commit(commit), "{commit:?}");
    let v = json(&mesh(&["version", "--json"]));
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["protocol"], re6mesh::params::PROTOCOL_VERSION);
    assert_eq!(v["commit"], commit);
}

#[tokio::test(flavor = "multi_thread")]
async fn join_json_holds_the_prefix_and_a_second_join_says_not_joined() {
    let reg = TestRegistry::start().await;
    let token = reg.token();
    let node = tempfile::tempdir().unwrap();
    let d = node.path().to_str().unwrap().to_owned();
    let (first, second) = tokio::task::spawn_blocking(move || {
        let args = ["join", &token, "--state-dir", &d, "--json"];
        (mesh(&args), mesh(&args))
    })
    .await
    .unwrap();
    let st = re6mesh::state::load(node.path()).unwrap();
    let v = json(&first);
    assert_eq!(v["joined"], true);
    assert_eq!(v["prefix"], st.facts.prefix.to_string());
    assert_eq!(v["network"], "fd5e:1234:5678::/48");
    assert_eq!(
        v["address"],
        re6mesh::identity::node_address(&st.facts.prefix).to_string()
    );
    // no --name: the host's name, as the registry put it in the certificate
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert_eq!(
        v["name"],
        serde_json::json!(re6mesh::identity::name_from_hostname(&host)),
        "{v}"
    );
    let v2 = json(&second);
    assert_eq!(v2["joined"], false);
    assert_eq!(v2["name"], v["name"]);
    assert_eq!(v2["prefix"], v["prefix"]);
    reg.stop().await;
}

struct Fake(Mutex<NodeStateName>);

impl ControlHandler for Fake {
    fn status(&self) -> Status {
        Status {
            state: *self.0.lock().unwrap(),
            prefix: "fd00:1:0:1::/64".into(),
            address: "fd00:1:0:1::1".into(),
            network: "fd00:1::/48".into(),
            params_version: 3,
            protocol: 1,
            tunnels: 0,
            routes: 0,
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
        Vec::new()
    }
    fn routes(&self) -> Vec<Route> {
        Vec::new()
    }
    fn up(&self) -> Result<String, String> {
        if *self.0.lock().unwrap() == NodeStateName::Revoked {
            return Err("this node is revoked".into());
        }
        Ok("connecting".into())
    }
    fn down(&self) -> Result<String, String> {
        let mut s = self.0.lock().unwrap();
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
async fn down_json_is_one_object_and_a_refusal_stays_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let server = ControlServer::bind(dir.path(), 0o600).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let fake = Arc::new(Fake(Mutex::new(NodeStateName::Up)));
    let task = tokio::spawn(server.run(fake.clone(), async {
        let _ = rx.await;
    }));
    let d = dir.path().to_str().unwrap().to_owned();
    let (first, again, up) = tokio::task::spawn_blocking(move || {
        let args = ["down", "--json", "--state-dir", &d];
        (
            mesh(&args),
            mesh(&args),
            mesh(&["up", "--json", "--state-dir", &d]),
        )
    })
    .await
    .unwrap();
    let v = json(&first);
    assert_eq!(v["action"], "down");
    assert_eq!(v["message"], "disconnected");
    assert!(v["state_dir"].is_string());
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stdout.is_empty());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already down"));
    // `mesh up --json` asks the running node, one object, nothing saved
    let v = json(&up);
    assert_eq!(v["action"], "up", "{v}");
    assert_eq!(v["message"], "connecting", "{v}");
    assert!(v["state_dir"].is_string(), "{v}");
    assert_eq!(v["saved"], serde_json::Value::Null, "{v}");
    // a refusal by the running node: exit 1, its sentence on stderr, nothing on stdout
    *fake.0.lock().unwrap() = NodeStateName::Revoked;
    let d = dir.path().to_str().unwrap().to_owned();
    let refused = tokio::task::spawn_blocking(move || mesh(&["up", "--json", "--state-dir", &d]))
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("this node is revoked"));
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_init_revoke_and_mac_rotate_json() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("reg");
    let f = fresh.to_str().unwrap().to_owned();
    let init = tokio::task::spawn_blocking(move || {
        mesh(&[
            "registry",
            "init",
            "--state-dir",
            &f,
            "--url",
            "https://127.0.0.1:8443",
            "--network",
            "fd11:2233:4455::/48",
            "--json",
        ])
    })
    .await
    .unwrap();
    let v = json(&init);
    assert_eq!(v["network"], "fd11:2233:4455::/48");
    assert_eq!(v["url"], "https://127.0.0.1:8443");
    assert_eq!(v["node_prefix_len"], 64);
    assert_eq!(v["mac"], true);
    assert_eq!(v["state_dir"], fresh.to_str().unwrap());

    let reg = TestRegistry::start().await;
    let a = reg.join_node().await;
    let b = reg.join_node().await;
    let d = reg.path().to_str().unwrap().to_owned();
    let serial = a.cert.serial.clone();
    let prefix = b.cert.prefix.to_string();
    let (revoke, ban, rotate) = tokio::task::spawn_blocking(move || {
        let revoke = mesh(&["registry", "revoke", &serial, "--state-dir", &d, "--json"]);
        let ban = mesh(&["registry", "revoke", &prefix, "--state-dir", &d, "--json"]);
        let rotate = mesh(&["registry", "mac", "rotate", "--state-dir", &d, "--json"]);
        (revoke, ban, rotate)
    })
    .await
    .unwrap();
    let r = json(&revoke);
    assert_eq!(r["action"], "revoked");
    assert_eq!(r["serial"], a.cert.serial.as_str());
    let v1 = r["params_version"].as_u64().expect("params_version");
    let b2 = json(&ban);
    assert_eq!(b2["action"], "banned");
    assert_eq!(b2["prefix"], b.cert.prefix.to_string());
    assert_eq!(b2["params_version"].as_u64(), Some(v1 + 1));
    let m = json(&rotate);
    assert_eq!(m["params_version"].as_u64(), Some(v1 + 2));
    assert!(m["sign"].is_string() && m["accept"].is_string(), "{m}");
    assert_eq!(m["accept_unsigned"], false);
    reg.stop().await;
}
