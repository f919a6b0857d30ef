#![cfg(target_os = "linux")]
//! The TUN device, inside a network namespace made by the test: the test binary re-runs
//! itself inside the namespace (`ip netns exec NS <this binary> --exact inner…`).

use std::net::{Ipv6Addr, UdpSocket};
use std::process::Command;

use bytes::BytesMut;
use re6mesh::mesh::forward::upper_layer_checksum;
use re6mesh::netns::{Rig, require_root};
use re6mesh::tun::{SendBatch, Tun};

const INNER: &str = "inner_tun_routes_the_network_prefix_and_reads_packets";
const INNER_GRO: &str = "inner_tun_writes_a_flow_s_packets_coalesced";

#[test]
fn root_tun_routes_the_network_prefix_and_reads_packets() {
    if !require_root("root_tun_routes_the_network_prefix_and_reads_packets") {
        return;
    }
    run_inner("rmttun", INNER);
}

#[test]
fn root_tun_writes_a_flow_s_packets_coalesced() {
    if !require_root("root_tun_writes_a_flow_s_packets_coalesced") {
        return;
    }
    run_inner("rmtgro", INNER_GRO);
}

/// Runs the test `inner` of this binary inside a namespace made for it.
fn run_inner(prefix: &str, inner: &str) {
    let mut rig = Rig::new(prefix).unwrap();
    let ns = rig.add_ns("a").unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args(["--exact", inner, "--ignored", "--nocapture"])
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

/// Opens `mesh0` (node address fd42:7:0:1::1 in fd42:7::/48, MTU 1280) and runs `body` with
/// it on a one-thread runtime; only inside the namespace a `root_` test made.
fn in_namespace<F: std::future::Future<Output = ()>>(body: impl FnOnce(Tun, Ipv6Addr) -> F) {
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
        body(tun, me).await;
    });
}

/// Runs only inside the namespace made by the test above.
#[test]
#[ignore = "runs inside a network namespace, started by root_tun_routes_the_network_prefix_and_reads_packets"]
fn inner_tun_routes_the_network_prefix_and_reads_packets() {
    in_namespace(|tun, me| async move {
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

/// An IPv6 TCP segment (ACK, correct checksum) of the flow fd42:7:0:2::1:5000 →
/// fd42:7:0:1::1:6000 carrying `len` bytes at sequence number `seq`.
fn tcp_segment(seq: u32, len: usize) -> Vec<u8> {
    let src: Ipv6Addr = "fd42:7:0:2::1".parse().unwrap();
    let dst: Ipv6Addr = "fd42:7:0:1::1".parse().unwrap();
    let tcp_len = 20 + len;
    let mut p = vec![0u8; 40 + tcp_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    p[6] = 6; // TCP
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    let t = &mut p[40..];
    t[0..2].copy_from_slice(&5000u16.to_be_bytes());
    t[2..4].copy_from_slice(&6000u16.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x10; // ACK
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    for (i, b) in t[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let csum = upper_layer_checksum(&src, &dst, 6, &p[40..]);
    p[56..58].copy_from_slice(&csum.to_be_bytes());
    p
}

/// Runs only inside the namespace made by `root_tun_writes_a_flow_s_packets_coalesced`.
#[test]
#[ignore = "runs inside a network namespace, started by root_tun_writes_a_flow_s_packets_coalesced"]
fn inner_tun_writes_a_flow_s_packets_coalesced() {
    in_namespace(|tun, _me| async move {
        assert!(tun.offload(), "the TUN device was opened without offload");
        let rx_packets = || {
            std::fs::read_to_string("/sys/class/net/mesh0/statistics/rx_packets")
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        // 20 full-size segments of one flow, in order, each after one byte of headroom (the
        // tunnel framing), as the data path hands them over
        const SEGMENTS: u32 = 20;
        const PAYLOAD: usize = 1280 - 60;
        let pkts: Vec<BytesMut> = (0..SEGMENTS)
            .map(|i| {
                let mut b = BytesMut::from(&[0u8][..]);
                b.extend_from_slice(&tcp_segment(1000 + i * PAYLOAD as u32, PAYLOAD));
                b
            })
            .collect();
        let before = rx_packets();
        let mut batch = SendBatch::default();
        tun.send_batch(&mut batch, &pkts, 1).await.unwrap();
        let written = rx_packets() - before;
        // one GRO super-packet (the kernel counts one received packet per write); without
        // coalescing it would be 20
        assert_eq!(
            written, 1,
            "{SEGMENTS} segments of one flow took {written} writes"
        );
    });
}
