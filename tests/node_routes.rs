#![cfg(target_os = "linux")]
//! Subnet routes end to end (root, issue 15): a plain host h on a LAN behind node c (no
//! re6mesh on h) is reached from node a two hops away, because c announces the LAN with
//! `mesh up --advertise-route` and the registry authorised c for it. Node d announces the
//! same prefix without authorisation: nobody takes it (b, its neighbour, counts what it
//! refused), and a's route stays through c.
//!
//! ```text
//!   a ──── b ──── c ──── h     a–b fd99:ab::/64, b–c fd99:bc::/64, c–h 2001:db8:5::/64
//!          │                   (the registry is served in b)
//!          d                   b–d fd99:bd::/64
//! ```

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;
use common::nodes::{LogsOnPanic, NsRegistry, counter, routes_for, spawn_up};
use common::wait_until;

use std::time::{Duration, Instant};

use re6mesh::netns::{Rig, require_root};

const LAN: &str = "2001:db8:5::/64";
const HOST: &str = "2001:db8:5::9";

#[test]
fn root_routes_a_lan_behind_an_authorised_node_is_reached_and_an_unauthorised_one_ignored() {
    if !require_root(
        "root_routes_a_lan_behind_an_authorised_node_is_reached_and_an_unauthorised_one_ignored",
    ) {
        return;
    }
    let test_start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut rig = Rig::new("rmtroute").unwrap();
    for n in ["a", "b", "c", "d", "h"] {
        rig.add_ns(n).unwrap();
    }
    let (ab_a, ab_b) = rig.link("a", "b").unwrap();
    let (bc_b, bc_c) = rig.link("b", "c").unwrap();
    let (bd_b, bd_d) = rig.link("b", "d").unwrap();
    let (ch_c, ch_h) = rig.link("c", "h").unwrap();
    for (ns, dev, addr) in [
        ("a", &ab_a, "fd99:ab::1/64"),
        ("b", &ab_b, "fd99:ab::2/64"),
        ("b", &bc_b, "fd99:bc::1/64"),
        ("c", &bc_c, "fd99:bc::2/64"),
        ("b", &bd_b, "fd99:bd::1/64"),
        ("d", &bd_d, "fd99:bd::2/64"),
        ("c", &ch_c, "2001:db8:5::1/64"),
        ("h", &ch_h, "2001:db8:5::9/64"),
    ] {
        rig.exec(ns, &["ip", "-6", "addr", "add", addr, "dev", dev, "nodad"])
            .unwrap();
    }
    // c and d reach the registry on b ([fd99:ab::2]); a reaches neither c nor d nor h on
    // the underlay: everything a sends them crosses the mesh
    for (ns, via) in [("c", "fd99:bc::1"), ("d", "fd99:bd::1")] {
        rig.exec(
            ns,
            &["ip", "-6", "route", "add", "fd99:ab::/64", "via", via],
        )
        .unwrap();
    }
    // h is a plain host: its router is c; c forwards between its TUN and the LAN
    rig.exec(
        "h",
        &[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:5::1",
        ],
    )
    .unwrap();
    rig.exec("c", &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();

    let reg = NsRegistry::serve(
        &mut rig,
        tmp.path(),
        "b",
        "fd99:ab::2",
        19000 + (std::process::id() % 1000) as u16,
        &["--network", "fd42:ab::/48"],
    );
    let _logs = LogsOnPanic(tmp.path().to_path_buf());
    let prefixes: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| reg.join(&rig, n, Some(n)))
        .collect();
    // c (by name) is authorised for its LAN; d is not
    reg.cli(&["authorize", "c", "route", LAN]);
    let grants = reg.cli(&["grants", "--json"]);
    assert!(
        grants.contains(LAN) && grants.contains(&prefixes[2].to_string()),
        "{grants}"
    );

    let b_ab = format!("{}@[fd99:ab::2]:6464", prefixes[1]);
    let b_bc = format!("{}@[fd99:bc::1]:6464", prefixes[1]);
    let b_bd = format!("{}@[fd99:bd::1]:6464", prefixes[1]);
    let started = Instant::now();
    for (n, peer, advertise) in [
        ("b", None, false),
        ("a", Some(&b_ab), false),
        ("c", Some(&b_bc), true),
        ("d", Some(&b_bd), true),
    ] {
        let mut args = Vec::new();
        if let Some(p) = peer {
            args.extend(["--peer", p.as_str()]);
        }
        if advertise {
            args.extend(["--advertise-route", LAN]);
        }
        spawn_up(&mut rig, tmp.path(), n, &args);
    }
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let rid = |i: usize| {
        re6mesh::control::router_id_text(&re6mesh::mesh::node::router_id_for(&prefixes[i]))
    };
    let (rid_c, rid_d) = (rid(2), rid(3));
    wait_until(
        "a to select c's route to the LAN",
        Duration::from_secs(30),
        || routes_for(&rig, "a", &da, LAN).contains(&(rid_c.clone(), true)),
    );
    println!(
        "a selected c's subnet route {:?} after start",
        started.elapsed()
    );

    // a pings the plain host h: a's OS sends the LAN into the TUN, b relays the sealed
    // packets, c opens them and its OS forwards them to h; the replies come back the same way
    let ping = rig
        .exec_status(
            "a",
            &["ping", "-6", "-c", "5", "-i", "0.2", "-W", "2", HOST],
        )
        .unwrap();
    let out = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(ping.status.success(), "ping a -> h failed:\n{out}");
    for l in out.lines().rev().take(2) {
        println!("a -> h: {l}");
    }
    // a routes the LAN into its TUN; the route goes with the device
    let r = rig.exec("a", &["ip", "-6", "route", "show", LAN]).unwrap();
    let r = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(r.contains("mesh0") && r.contains("proto 250"), "{r}");

    // d's announcement of the same LAN is refused by b (counted) and reaches nobody: a
    // holds no route from d, only c's
    let refused = wait_until(
        "b to count d's unauthorised announcement",
        Duration::from_secs(10),
        || counter(&rig, "b", &db, "routes_unauthenticated") > 0,
    );
    println!("b refused d's announcement ({refused:?} after the ping)");
    let held = routes_for(&rig, "a", &da, LAN);
    assert!(
        held.iter().all(|(r, _)| *r == rid_c) && !held.iter().any(|(r, _)| *r == rid_d),
        "a holds {held:?}; c is {rid_c}, d is {rid_d}"
    );
    let held_b = routes_for(&rig, "b", &db, LAN);
    assert!(
        !held_b.iter().any(|(r, _)| *r == rid_d),
        "b holds {held_b:?}"
    );
    println!("subnet routes test: {:?} in all", test_start.elapsed());
}
