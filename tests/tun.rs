#![cfg(target_os = "linux")]
//! The TUN device, inside a network namespace made by the test: the test binary re-runs
//! itself inside the namespace (`ip netns exec NS <this binary> --exact inner…`).

use std::net::{Ipv6Addr, UdpSocket};
use std::process::Command;

use re6mesh::netns::{Rig, require_root};
use re6mesh::tun::Tun;

const INNER: &str = "inner_tun_routes_the_network_prefix_and_reads_packets";

#[test]
fn root_tun_routes_the_network_prefix_and_reads_packets() {
    if !require_root("root_tun_routes_the_network_prefix_and_reads_packets") {
        return;
    }
    let mut rig = Rig::new("rmttun").unwrap();
    let ns = rig.add_ns("a").unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args(["--exact", INNER, "--ignored", "--nocapture"])
        .env("RE6MESH_INNER_TUN", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner test failed:\n{text}");
    assert!(text.contains("1 passed"), "inner test did not run:\n{text}");
}

/// Runs only inside the namespace made by the test above.
#[test]
#[ignore = "runs inside a network namespace, started by root_tun_routes_the_network_prefix_and_reads_packets"]
fn inner_tun_routes_the_network_prefix_and_reads_packets() {
    assert!(
        std::env::var_os("RE6MESH_INNER_TUN").is_some(),
        "run through the root_ test"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let network = "fd42:7::/48".parse().unwrap();
        let me: Ipv6Addr = "fd42:7:0:1::1".parse().unwrap();
        let tun = Tun::open("mesh0", me, network, 1280).unwrap();
        let route = Command::new("ip")
            .args(["-6", "route", "show", "dev", "mesh0"])
            .output()
            .unwrap();
        let route = String::from_utf8_lossy(&route.stdout).to_string();
        assert!(route.contains("fd42:7::/48"), "routes: {route}");
        let link = Command::new("ip")
            .args(["link", "show", "mesh0"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&link.stdout).contains("mtu 1280"));
        // a packet to another node of the network enters the TUN
        let sock = UdpSocket::bind("[fd42:7:0:1::1]:0").unwrap();
        sock.send_to(b"hello mesh", "[fd42:7:0:2::1]:9").unwrap();
        let mut buf = [0u8; 2000];
        loop {
            let n = tun.recv(&mut buf).await.unwrap();
            let p = &buf[..n];
            // skip router solicitations and the like: look for our UDP packet
            if n >= 48 && p[0] >> 4 == 6 && p[6] == 17 {
                assert_eq!(&p[8..24], &me.octets());
                assert_eq!(
                    &p[24..40],
                    &"fd42:7:0:2::1".parse::<Ipv6Addr>().unwrap().octets()
                );
                assert_eq!(&p[48..], b"hello mesh");
                break;
            }
        }
    });
}
