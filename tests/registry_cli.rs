//! The `mesh registry …` and `mesh join` commands as a user runs them (the real binary).

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use re6mesh::registry_client::{NodeKey, RegistryClient};
use re6mesh::token::JoinToken;

fn mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .env_remove("MESH_STATE_DIR")
        .output()
        .expect("run mesh")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn init(dir: &Path, port: u16, extra: &[&str]) {
    let url = format!("https://127.0.0.1:{port}");
    let mut args = vec![
        "registry",
        "init",
        "--state-dir",
        dir.to_str().unwrap(),
        "--url",
        &url,
    ];
    args.extend_from_slice(extra);
    let o = mesh(&args);
    assert!(o.status.success(), "init failed: {}", stderr(&o));
}

/// A `mesh registry serve` child process, killed (by its PID) on drop.
struct Serve(Child);

impl Serve {
    /// Where its stderr goes (next to the registry state directory).
    fn log_path(dir: &Path) -> std::path::PathBuf {
        dir.with_extension("serve.log")
    }

    fn start(dir: &Path, port: u16) -> Serve {
        let child = Command::new(env!("CARGO_BIN_EXE_mesh"))
            .args([
                "registry",
                "serve",
                "--state-dir",
                dir.to_str().unwrap(),
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(Serve::log_path(dir)).expect("serve log"),
            ))
            .spawn()
            .expect("spawn serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Serve(child)
    }

    fn kill9(&mut self) {
        // SIGKILL our own child by PID.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[test]
fn every_command_has_help() {
    let cmds: &[&[&str]] = &[
        &["--help"],
        &["registry", "--help"],
        &["registry", "init", "--help"],
        &["registry", "serve", "--help"],
        &["registry", "token", "create", "--help"],
        &["registry", "token", "list", "--help"],
        &["registry", "token", "delete", "--help"],
        &["registry", "nodes", "--help"],
        &["registry", "revoke", "--help"],
        &["registry", "rekey", "--help"],
        &["registry", "params", "--help"],
        &["registry", "params", "set", "--help"],
        &["registry", "mac", "rotate", "--help"],
        &["registry", "authorize", "--help"],
        &["registry", "unauthorize", "--help"],
        &["registry", "grants", "--help"],
        &["join", "--help"],
    ];
    for c in cmds {
        let o = mesh(c);
        assert!(o.status.success(), "{c:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("Usage:"), "{c:?}");
    }
}

#[test]
fn usage_errors_exit_2_and_runtime_errors_exit_1_with_one_sentence() {
    let o = mesh(&["registry", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let o = mesh(&[
        "registry",
        "nodes",
        "--state-dir",
        dir.path().join("none").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: no registry in"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let o = mesh(&[
        "join",
        "not-a-token",
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a re6mesh join token"),
        "{}",
        stderr(&o)
    );
    // a bad rate limit is a usage error that names the option and the form
    for (flag, value) in [
        ("--anon-join-rate", "lots"),
        ("--anon-join-rate-per-source", "0/1h"),
        ("--max-watchers-per-node", "many"),
    ] {
        let o = mesh(&[
            "registry",
            "serve",
            "--state-dir",
            dir.path().to_str().unwrap(),
            flag,
            value,
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{}", stderr(&o));
    }
    let help = stdout(&mesh(&["registry", "serve", "--help"]))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for default in [
        "[default: 5/1h]",
        "[default: 100/1h]",
        "[default: 64]",
        "[default: 2]",
    ] {
        assert!(help.contains(default), "{help}");
    }
}

#[test]
fn init_refuses_to_overwrite_and_admin_commands_work_on_a_stopped_registry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("reg");
    let ds = d.to_str().unwrap();
    init(&d, 8443, &["--network", "fd77:1::/48"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let before = std::fs::read(d.join("ca.key")).unwrap();
    let o = mesh(&[
        "registry",
        "init",
        "--state-dir",
        ds,
        "--url",
        "https://127.0.0.1:8443",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(d.join("ca.key")).unwrap(), before);

    // token create prints only the token
    let o = mesh(&[
        "registry",
        "token",
        "create",
        "--state-dir",
        ds,
        "--expires",
        "1h",
        "--uses",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1);
    let tok = JoinToken::decode(out.trim()).unwrap();
    assert_eq!(tok.url, "https://127.0.0.1:8443");
    let o = mesh(&["registry", "token", "list", "--state-dir", ds, "--json"]);
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["uses_left"], 2);
    let o = mesh(&["registry", "token", "delete", "--state-dir", ds, "1"]);
    assert!(o.status.success());
    let o = mesh(&["registry", "token", "delete", "--state-dir", ds, "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no token with id 1"));

    // params: show, set, bad set
    let o = mesh(&["registry", "params", "--state-dir", ds, "--json"]);
    let p: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(p["network"], "fd77:1::/48");
    assert_eq!(p["tunnel"]["client_count"], 10);
    assert_eq!(p["tunnel"]["max_clients"], 20);
    assert_eq!(p["tunnel"]["refresh"], 300);
    let v = p["version"].as_u64().unwrap();
    let o = mesh(&[
        "registry",
        "params",
        "--state-dir",
        ds,
        "set",
        "client_count=3",
        "closed_countries=cn,ru",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mesh(&["registry", "params", "--state-dir", ds, "--json"]);
    let p: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(p["version"].as_u64().unwrap(), v + 2);
    assert_eq!(p["tunnel"]["client_count"], 3);
    assert_eq!(p["countries"]["closed"], serde_json::json!(["CN", "RU"]));
    let o = mesh(&[
        "registry",
        "params",
        "--state-dir",
        ds,
        "set",
        "client_count=many",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("client_count must be"),
        "{}",
        stderr(&o)
    );

    // mac rotate prints the new state
    let o = mesh(&["registry", "mac", "rotate", "--state-dir", ds]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("accept"), "{}", stdout(&o));
    // revoke of something unknown: a clear error
    let o = mesh(&["registry", "revoke", "--state-dir", ds, "fd77:1:0:9::/64"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no node has the prefix"));
    let o = mesh(&["registry", "revoke", "--state-dir", ds, "zz-not-hex"]);
    assert!(stderr(&o).contains("neither a prefix"));
}

#[test]
fn join_stores_the_identity_and_a_second_join_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    let node = dir.path().join("node");
    let port = free_port();
    init(&reg, port, &[]);
    let _serve = Serve::start(&reg, port);
    // logs written to a file are plain text: no terminal colour codes
    let log = std::fs::read_to_string(Serve::log_path(&reg)).unwrap();
    assert!(log.contains("registry serving"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );
    let token = stdout(&mesh(&[
        "registry",
        "token",
        "create",
        "--state-dir",
        reg.to_str().unwrap(),
    ]));
    let o = mesh(&["join", token.trim(), "--state-dir", node.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("prefix") && out.contains("address"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(node.join("node.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    let st = re6mesh::state::load(&node).unwrap();
    let cert_before = st.cert_der.clone();
    let o = mesh(&["join", token.trim(), "--state-dir", node.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("Already joined"), "{}", stdout(&o));
    assert_eq!(re6mesh::state::load(&node).unwrap().cert_der, cert_before);
    // nodes --json lists it
    let o = mesh(&[
        "registry",
        "nodes",
        "--state-dir",
        reg.to_str().unwrap(),
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["prefix"], st.facts.prefix.to_string());
    assert_eq!(rows[0]["revoked"], false);
}

#[test]
fn kill_9_during_50_joins_loses_no_certificate_and_never_reuses_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    let port = free_port();
    init(&reg, port, &[]);
    let mut serve = Serve::start(&reg, port);
    let token = stdout(&mesh(&[
        "registry",
        "token",
        "create",
        "--state-dir",
        reg.to_str().unwrap(),
        "--uses",
        "200",
    ]));
    let token = JoinToken::decode(token.trim()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (received, failed) = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..50 {
            let token = token.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let key = NodeKey::generate().unwrap();
                let r = RegistryClient::for_token(&token)
                    .unwrap()
                    .join(Some(&token.secret), &key)
                    .await;
                let _ = tx.send(r.map(|c| (c.serial, c.prefix)));
            });
        }
        drop(tx);
        let mut received = Vec::new();
        let mut failed = 0;
        let mut killed = false;
        while let Some(r) = rx.recv().await {
            match r {
                Ok(x) => received.push(x),
                Err(_) => failed += 1,
            }
            if !killed && received.len() >= 5 {
                serve.kill9();
                killed = true;
            }
        }
        (received, failed)
    });
    println!(
        "kill -9 after 5 answers: {} certificates received, {} joins failed",
        received.len(),
        failed
    );
    assert!(
        failed > 0,
        "the kill landed after every join finished; the test proves nothing"
    );
    let _serve = Serve::start(&reg, port);
    let o = mesh(&[
        "registry",
        "nodes",
        "--state-dir",
        reg.to_str().unwrap(),
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let serials: HashSet<String> = rows
        .iter()
        .map(|r| r["serial"].as_str().unwrap().to_owned())
        .collect();
    for (serial, prefix) in &received {
        assert!(
            serials.contains(serial),
            "certificate {serial} for {prefix} was handed out but is not in `nodes`"
        );
    }
    // more joins after the restart: still no prefix twice
    rt.block_on(async {
        for _ in 0..10 {
            let key = NodeKey::generate().unwrap();
            RegistryClient::for_token(&token)
                .unwrap()
                .join(Some(&token.secret), &key)
                .await
                .unwrap();
        }
    });
    let o = mesh(&[
        "registry",
        "nodes",
        "--state-dir",
        reg.to_str().unwrap(),
        "--json",
    ]);
    let prefixes: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["prefix"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let unique: HashSet<_> = prefixes.iter().collect();
    assert_eq!(
        unique.len(),
        prefixes.len(),
        "a prefix was handed out twice: {prefixes:?}"
    );
    assert!(prefixes.len() >= received.len() + 10);
}

#[test]
fn token_create_prefix_len_hands_out_a_prefix_of_exactly_that_length() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    let rs = reg.to_str().unwrap();
    let port = free_port();
    init(&reg, port, &["--network", "fd77:3::/48"]);
    let _serve = Serve::start(&reg, port);
    let network: ipnet::Ipv6Net = "fd77:3::/48".parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // None: the network's default (64), to show that the option is what changes the length
    for (arg, want) in [
        (Some("56"), 56u8),
        (Some("60"), 60),
        (None, 64),
        (Some("62"), 62),
        (Some("127"), 127),
    ] {
        let mut args = vec!["registry", "token", "create", "--state-dir", rs];
        if let Some(n) = arg {
            args.extend(["--prefix-len", n]);
        }
        let o = mesh(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let token = JoinToken::decode(stdout(&o).trim()).unwrap();
        let c = rt
            .block_on(async {
                RegistryClient::for_token(&token)
                    .unwrap()
                    .join(Some(&token.secret), &NodeKey::generate().unwrap())
                    .await
            })
            .unwrap();
        // the answer, the certificate's URI SAN and CN all name a prefix of that length
        assert_eq!(c.prefix.prefix_len(), want, "{args:?}: {}", c.prefix);
        assert!(network.contains(&c.prefix), "{}", c.prefix);
        assert!(
            c.prefix
                .contains(&re6mesh::identity::node_address(&c.prefix))
        );
        assert_eq!(
            re6mesh::identity::cert_prefix(&c.cert_der).unwrap(),
            c.prefix
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&c.cert_der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), c.prefix.to_string());
    }
    // the token list shows the length each token hands out
    let o = mesh(&["registry", "token", "list", "--state-dir", rs, "--json"]);
    let lens: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["prefix_len"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(lens, vec![56, 60, 64, 62, 127]);
    // a length the network cannot hold, or a /128 (no room for the address prefix::1; two
    // /128 nodes would share one address): a clear error, and no token
    for (bad, why) in [
        ("40", "does not fit"),
        ("128", "prefix::1"),
        ("129", "does not fit"),
    ] {
        let o = mesh(&[
            "registry",
            "token",
            "create",
            "--state-dir",
            rs,
            "--prefix-len",
            bad,
        ]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "--prefix-len {bad}: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(why), "{}", stderr(&o));
    }
    let o = mesh(&["registry", "token", "list", "--state-dir", rs, "--json"]);
    assert_eq!(stdout(&o).lines().count(), 5);
    // the same limit for the network's default length
    let o = mesh(&[
        "registry",
        "params",
        "--state-dir",
        rs,
        "set",
        "node_prefix_len=128",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("prefix::1"), "{}", stderr(&o));
    let other = dir.path().join("reg128");
    let o = mesh(&[
        "registry",
        "init",
        "--state-dir",
        other.to_str().unwrap(),
        "--url",
        "https://127.0.0.1:8443",
        "--node-prefix-len",
        "128",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("prefix::1"), "{}", stderr(&o));
    assert!(!other.join("ca.key").exists());
}

/// `mesh registry token list | head -0`: the reader is gone before anything is printed. A
/// print-only command ends quietly with 0, as Unix tools do, instead of panicking.
#[test]
fn a_closed_stdout_ends_a_print_only_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), free_port(), &[]);
    let d = dir.path().to_str().unwrap();
    for _ in 0..3 {
        assert!(
            mesh(&["registry", "token", "create", "--state-dir", d])
                .status
                .success()
        );
    }
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["registry", "token", "list", "--state-dir", d])
        .env_remove("MESH_STATE_DIR")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run mesh");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "nothing said on stderr");
}

#[test]
fn rekey_hands_a_node_s_prefix_to_a_new_key_through_a_bound_token() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    let port = free_port();
    init(&reg, port, &[]);
    let _serve = Serve::start(&reg, port);
    let ds = reg.to_str().unwrap();
    let token = stdout(&mesh(&["registry", "token", "create", "--state-dir", ds]));
    let o = mesh(&["join", token.trim(), "--state-dir", old.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = re6mesh::state::load(&old).unwrap();
    let prefix = before.facts.prefix.to_string();
    // the admin re-keys the node: a token bound to its prefix
    let o = mesh(&[
        "registry",
        "rekey",
        "--state-dir",
        ds,
        &prefix,
        "--expires",
        "1d",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rekey = stdout(&o);
    assert!(rekey.trim().starts_with("mesh1-"), "{rekey}");
    // the old key may not renew any more
    let old_client = RegistryClient::with_identity(
        &before.facts.registry_url,
        &before.ca_der,
        &before.cert_der,
        &before.key,
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(old_client.renew(&before.key)).unwrap_err();
    assert!(err.to_string().contains("keeps the node's key"), "{err}");
    // a new key joins with the token and gets the same prefix
    let o = mesh(&["join", rekey.trim(), "--state-dir", new.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = re6mesh::state::load(&new).unwrap();
    assert_eq!(after.facts.prefix, before.facts.prefix);
    assert_ne!(after.key.public_raw(), before.key.public_raw());
    let serial = re6mesh::identity::cert_info(&after.cert_der)
        .unwrap()
        .serial;
    let o = mesh(&["registry", "nodes", "--json", "--state-dir", ds]);
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["serial"], serial.as_str());
    assert_eq!(rows[0]["revoked"], false);
    // unknown prefix: one clear sentence, exit 1
    let o = mesh(&["registry", "rekey", "--state-dir", ds, "fd77:1:0:9::/64"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no node has the prefix"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_join_whose_answer_was_not_stored_is_retried_with_the_same_key_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    let node = dir.path().join("node");
    let port = free_port();
    init(&reg, port, &[]);
    let _serve = Serve::start(&reg, port);
    let token = stdout(&mesh(&[
        "registry",
        "token",
        "create",
        "--state-dir",
        reg.to_str().unwrap(),
    ]));
    // the certificate cannot be stored (a directory in its place): the registry has used the
    // one-use token, the node has nothing
    std::fs::create_dir_all(node.join("node.pem")).unwrap();
    let o = mesh(&["join", token.trim(), "--state-dir", node.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("run the same `mesh join` again"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir(node.join("node.pem")).unwrap();
    // the same command again: the stored key is sent again, the registry answers with the same
    // certificate (without the stored key the token would be refused as used)
    let o = mesh(&["join", token.trim(), "--state-dir", node.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("reusing the key"), "{}", stderr(&o));
    let st = re6mesh::state::load(&node).unwrap();
    let rows = stdout(&mesh(&[
        "registry",
        "nodes",
        "--json",
        "--state-dir",
        reg.to_str().unwrap(),
    ]));
    assert_eq!(rows.lines().count(), 1, "{rows}");
    assert!(rows.contains(&st.facts.prefix.to_string()), "{rows}");
    assert!(!node.join("join.key").exists());
}

/// `mesh registry authorize`: a bad kind is a usage error (2); an unknown node, a prefix
/// inside the network or a grant that does not exist is one sentence (1) and publishes
/// nothing. (Grants of real nodes: the store tests and tests/node_routes.rs.)
#[test]
fn authorize_refuses_bad_grants_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("reg");
    init(&reg, 1, &["--network", "fd00:77::/48"]);
    let d = reg.to_str().unwrap();
    let version = || {
        let o = mesh(&["registry", "params", "--json", "--state-dir", d]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["version"].as_u64().unwrap()
    };
    let before = version();
    let o = mesh(&[
        "registry",
        "authorize",
        "--state-dir",
        d,
        "gw",
        "gateway",
        "2001:db8::/32",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for (cmd, kind, prefix, says) in [
        (
            "authorize",
            "route",
            "2001:db8::/32",
            "no node has the prefix or name",
        ),
        (
            "authorize",
            "route",
            "fd00:77:0:1::/64",
            "overlaps the network",
        ),
        ("authorize", "exit", "2001:db8::/32", "::/0"),
        (
            "unauthorize",
            "route",
            "2001:db8::/32",
            "no node has the prefix or name",
        ),
    ] {
        let o = mesh(&["registry", cmd, "--state-dir", d, "gw", kind, prefix]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{cmd} {kind} {prefix}: {}",
            stderr(&o)
        );
        let err = stderr(&o);
        assert!(err.contains(says), "{cmd} {kind} {prefix}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(version(), before);
    let o = mesh(&["registry", "grants", "--json", "--state-dir", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim().is_empty(), "{}", stdout(&o));
}
