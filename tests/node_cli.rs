//! `mesh up` refuses to start with one clear sentence (no root needed: it stops before the
//! TUN device).

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestRegistry;

fn up(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args([
            "up",
            "--foreground",
            "--state-dir",
            dir.to_str().unwrap(),
            "--registry-poll",
            "0",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn one_sentence(o: &std::process::Output, needle: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.trim().lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "{err}"
    );
}

#[test]
fn up_without_joining_says_to_join() {
    let dir = tempfile::tempdir().unwrap();
    one_sentence(&up(dir.path(), &[]), "mesh join");
}

#[tokio::test(flavor = "multi_thread")]
async fn up_with_an_expired_certificate_says_to_rejoin_and_a_busy_port_is_named() {
    let reg = TestRegistry::start().await;
    let r = reg.registry();
    // a node with a good certificate, whose UDP port is taken
    let token = reg.token();
    let good = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["join", &token, "--state-dir", good.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let g = good.path().to_path_buf();
    let o = tokio::task::spawn_blocking(move || up(&g, &["--listen", &port]))
        .await
        .unwrap();
    one_sentence(&o, "UDP");

    // a node whose certificate has expired
    r.store()
        .unwrap()
        .set_param(&r.ca, "cert_validity", "1s", re6mesh::registry::now())
        .unwrap();
    let token = reg.token();
    let old = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["join", &token, "--state-dir", old.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let d = old.path().to_path_buf();
    let o = tokio::task::spawn_blocking(move || up(&d, &[]))
        .await
        .unwrap();
    one_sentence(&o, "expired");
    reg.stop().await;
}
