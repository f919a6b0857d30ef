#![cfg(target_os = "linux")]
//! The shared namespace helper itself (root only).

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

use std::process::Stdio;
use std::time::Duration;

use re6mesh::netns::{Rig, cleanup_stale, list_namespaces, require_root};

#[test]
fn root_netns_rig_links_namespaces_and_cleans_up_everything() {
    if !require_root("root_netns_rig_links_namespaces_and_cleans_up_everything") {
        return;
    }
    let (names, pid) = {
        let mut rig = Rig::new("rmtnetns").unwrap();
        rig.add_ns("a").unwrap();
        rig.add_ns("b").unwrap();
        let (ia, ib) = rig.link("a", "b").unwrap();
        rig.exec(
            "a",
            &["ip", "-6", "addr", "add", "fd99::1/64", "dev", &ia, "nodad"],
        )
        .unwrap();
        rig.exec(
            "b",
            &["ip", "-6", "addr", "add", "fd99::2/64", "dev", &ib, "nodad"],
        )
        .unwrap();
        let out = rig
            .exec("a", &["ping", "-6", "-c", "1", "-W", "2", "fd99::2"])
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 received"));
        let pid = rig
            .spawn("b", "sleep", &["300"], Stdio::null(), Stdio::null())
            .unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        (rig.namespaces().to_vec(), pid)
    }; // dropped here
    let left = list_namespaces().unwrap();
    for n in &names {
        assert!(!left.contains(n), "namespace {n} left behind");
    }
    std::thread::sleep(Duration::from_millis(50));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "process {pid} still running: {stat}"
    );
}

#[test]
fn root_netns_leftovers_of_a_killed_run_are_removed() {
    if !require_root("root_netns_leftovers_of_a_killed_run_are_removed") {
        return;
    }
    // A namespace named as if by a run whose PID no longer exists.
    let dead_pid = 4_000_000; // above pid_max's default: never alive
    let name = format!("rmtstale-{dead_pid}-x");
    std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    let gone = cleanup_stale("rmtstale").unwrap();
    assert_eq!(gone, vec![name.clone()]);
    assert!(!list_namespaces().unwrap().contains(&name));
}

#[test]
fn root_netns_a_panicking_test_still_cleans_up() {
    if !require_root("root_netns_a_panicking_test_still_cleans_up") {
        return;
    }
    let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let n2 = names.clone();
    let r = std::panic::catch_unwind(move || {
        let mut rig = Rig::new("rmtpanic").unwrap();
        rig.add_ns("a").unwrap();
        n2.lock().unwrap().extend(rig.namespaces().to_vec());
        panic!("boom");
    });
    assert!(r.is_err());
    let left = list_namespaces().unwrap();
    for n in names.lock().unwrap().iter() {
        assert!(!left.contains(n), "{n} left behind after a panic");
    }
}
