//! QUIC tunnels between nodes on loopback, with identities from a real in-process registry.

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestNode, TestRegistry};
use re6mesh::mesh::tunnels::frame::{self, Datagram};
use re6mesh::mesh::tunnels::{Trust, TunnelEndpoint, TunnelError, TunnelTimers};

fn endpoint(node: &TestNode) -> TunnelEndpoint {
    let trust = Trust::new(&node.cert.ca_der).unwrap();
    TunnelEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        trust,
        &node.cert.cert_der,
        &node.key.to_der(),
        TunnelTimers::default(),
    )
    .unwrap()
}

fn ipv6_packet(tag: u8) -> Vec<u8> {
    let mut p = vec![tag; 60];
    p[0] = 0x60;
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_names_both_peers_and_carries_datagrams_both_ways() {
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let (ea, eb) = (endpoint(&a), endpoint(&b));
    let b_addr = eb.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let t = eb.accept().await.unwrap().finish().await.unwrap();
        (eb, t)
    });
    let ta = ea.connect(b_addr, b.cert.prefix).await.unwrap();
    let (_eb, tb) = accept.await.unwrap();
    assert_eq!(ta.peer_prefix, b.cert.prefix);
    assert_eq!(tb.peer_prefix, a.cert.prefix);
    assert_eq!(tb.peer_serial, a.cert.serial);
    assert!(ta.initiated && !tb.initiated);
    // the hellos were exchanged on the control stream
    assert_eq!(ta.peer_hello.protocol, re6mesh::params::PROTOCOL_VERSION);
    assert_eq!(tb.peer_hello.protocol, re6mesh::params::PROTOCOL_VERSION);
    // a 1280-byte IPv6 packet (the TUN MTU) fits in one datagram
    let (la, lb) = (ta.link(), tb.link());
    assert!(
        la.max_payload() >= 1280,
        "max payload {:?}",
        la.max_payload()
    );
    la.send_packet_copy(&ipv6_packet(1)).unwrap();
    let got = tb.conn.read_datagram().await.unwrap();
    assert_eq!(frame::parse(&got), Ok(Datagram::Ipv6(&ipv6_packet(1)[..])));
    lb.send_babel(b"\x2a\x02\x00\x00").unwrap();
    let got = ta.conn.read_datagram().await.unwrap();
    assert_eq!(frame::parse(&got), Ok(Datagram::Babel(b"\x2a\x02\x00\x00")));
    // the data path's reads: every datagram already received, in order, at most `max` a call
    for tag in 10..40 {
        la.send_packet_copy(&ipv6_packet(tag)).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 30 {
        let mut batch = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), lb.read_datagrams(&mut batch, 8))
            .await
            .expect("datagrams within 5 s")
            .unwrap();
        assert!((1..=8).contains(&batch.len()), "batch of {}", batch.len());
        got.extend(batch);
    }
    for (d, tag) in got.iter().zip(10..40) {
        assert_eq!(frame::parse(d), Ok(Datagram::Ipv6(&ipv6_packet(tag)[..])));
    }
    // closed: an error, nothing taken
    ta.conn.close(0u32.into(), b"");
    let mut batch = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), lb.read_datagrams(&mut batch, 8))
        .await
        .expect("the close within 5 s");
    assert!(closed.is_err() && batch.is_empty());
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dialling_a_peer_that_is_not_the_expected_prefix_fails() {
    let reg = TestRegistry::start().await;
    let (a, b, c) = (
        reg.join_node().await,
        reg.join_node().await,
        reg.join_node().await,
    );
    let (ea, eb) = (endpoint(&a), endpoint(&b));
    let b_addr = eb.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(acc) = eb.accept().await {
            tokio::spawn(async move { acc.finish().await.map(std::mem::forget) });
        }
    });
    let err = ea.connect(b_addr, c.cert.prefix).await.unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_serials_are_refused_in_both_directions_and_the_set_swaps_live() {
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let (ea, eb) = (Arc::new(endpoint(&a)), Arc::new(endpoint(&b)));
    let b_addr = eb.local_addr().unwrap();
    let eb2 = eb.clone();
    tokio::spawn(async move {
        while let Some(acc) = eb2.accept().await {
            tokio::spawn(async move { acc.finish().await.map(std::mem::forget) });
        }
    });
    // b revokes a: a's handshake is refused by b, and a is told why (a typed error, so the
    // node asks the registry and renews)
    eb.trust()
        .set_revoked(HashSet::from([a.cert.serial.clone()]));
    let err = ea.connect(b_addr, b.cert.prefix).await.unwrap_err();
    assert!(
        matches!(err, re6mesh::mesh::tunnels::TunnelError::Revoked(at) if at == b_addr),
        "{err:?}"
    );
    // b lifts it, a revokes b: a refuses b's certificate
    eb.trust().set_revoked(HashSet::new());
    ea.trust()
        .set_revoked(HashSet::from([b.cert.serial.clone()]));
    let err = ea.connect(b_addr, b.cert.prefix).await.unwrap_err();
    // refusing the peer is not being refused
    assert!(
        !matches!(err, re6mesh::mesh::tunnels::TunnelError::Revoked(_)),
        "{err:?}"
    );
    // nobody revokes anyone: it works, without any restart
    ea.trust().set_revoked(HashSet::new());
    ea.connect(b_addr, b.cert.prefix).await.unwrap();
    reg.stop().await;
}

/// A peer that connected once must not get around a later revocation by resuming its TLS
/// session (a resumed TLS 1.3 handshake skips certificate verification): tunnels never resume.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_peer_cannot_come_back_by_resuming_an_earlier_session() {
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let (ea, eb) = (Arc::new(endpoint(&a)), Arc::new(endpoint(&b)));
    let b_addr = eb.local_addr().unwrap();
    let eb2 = eb.clone();
    tokio::spawn(async move {
        while let Some(acc) = eb2.accept().await {
            tokio::spawn(async move { acc.finish().await.map(std::mem::forget) });
        }
    });
    // a full handshake, then a second one (any session ticket has been received by now)
    for _ in 0..2 {
        let t = ea.connect(b_addr, b.cert.prefix).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        t.conn.close(0u32.into(), b"bye");
    }
    eb.trust()
        .set_revoked(HashSet::from([a.cert.serial.clone()]));
    for attempt in 0..3 {
        assert!(
            ea.connect(b_addr, b.cert.prefix).await.is_err(),
            "attempt {attempt}: a revoked peer got a tunnel"
        );
    }
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_of_another_network_is_refused() {
    let reg = TestRegistry::start().await;
    let other = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, other.join_node().await);
    let (ea, eb) = (endpoint(&a), endpoint(&b));
    let b_addr = eb.local_addr().unwrap();
    let acc = tokio::spawn(async move { eb.accept().await.unwrap().finish().await.is_ok() });
    assert!(ea.connect(b_addr, b.cert.prefix).await.is_err());
    assert!(!acc.await.unwrap());
    reg.stop().await;
    other.stop().await;
}

/// The next verdict of a server's accept loop: the peer's prefix, or why it was refused.
async fn verdict(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<ipnet::Ipv6Net, String>>,
) -> Result<ipnet::Ipv6Net, String> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the server gave no verdict")
        .expect("the accept loop ended")
}

/// The case above fails on the client side (the foreign node does not trust this network's
/// CA). Here the foreign client trusts the real network CA, so it accepts the server; only the
/// certificate it presents comes from another CA, and the server must be the one to refuse it.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_refuses_a_client_whose_certificate_comes_from_another_ca() {
    let reg = TestRegistry::start().await;
    let other = TestRegistry::start().await;
    let (a, b, foreign) = (
        reg.join_node().await,
        reg.join_node().await,
        other.join_node().await,
    );
    let ea = endpoint(&a);
    let a_addr = ea.local_addr().unwrap();
    // the server's verdict on every incoming tunnel: the peer's prefix, or why it was refused
    let (tx, mut verdicts) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(acc) = ea.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let r = acc.finish().await.map(|t| {
                    let p = t.peer_prefix;
                    std::mem::forget(t);
                    p
                });
                let _ = tx.send(r.map_err(|e| e.to_string()));
            });
        }
    });
    let client = |cert_der: &[u8], key_der: &[u8]| {
        TunnelEndpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            Trust::new(&a.cert.ca_der).unwrap(),
            cert_der,
            key_der,
            TunnelTimers::default(),
        )
        .unwrap()
    };
    // a node certificate of the same shape (both test networks are fd5e:1234:5678::/48),
    // issued by the other network's CA
    let ef = client(&foreign.cert.cert_der, &foreign.key.to_der());
    let f_side = ef.connect(a_addr, a.cert.prefix).await;
    let a_side = verdict(&mut verdicts).await;
    let a_err = a_side.expect_err("the server accepted a certificate of another CA");
    // BadSignature here (both test CAs have the same name), UnknownIssuer for a CA of another
    // name: either way the server's own certificate check refused it
    assert!(
        a_err.contains("invalid peer certificate")
            && (a_err.contains("BadSignature") || a_err.contains("UnknownIssuer")),
        "server side: {a_err}"
    );
    let f_err = f_side
        .expect_err("the foreign client got a tunnel")
        .to_string();
    // the client's own handshake completed (it accepted the server and went on to the hello);
    // the server's abort then ended it ("aborted by peer: …" or "connection lost", by timing)
    assert!(
        f_err.contains("control hello failed"),
        "client side: {f_err}"
    );

    // control: the same client trust with a certificate of this network gets a tunnel
    let eb = client(&b.cert.cert_der, &b.key.to_der());
    let t = eb.connect(a_addr, a.cert.prefix).await.unwrap();
    assert_eq!(t.peer_prefix, a.cert.prefix);
    assert_eq!(verdict(&mut verdicts).await, Ok(b.cert.prefix));
    reg.stop().await;
    other.stop().await;
}

/// A UDP relay between two endpoints that can go silent (a cut link).
async fn relay(target: SocketAddr, cut: Arc<AtomicBool>) -> SocketAddr {
    let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let front = sock.local_addr().unwrap();
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    let (s1, b1, c1, cut1) = (sock.clone(), back.clone(), client.clone(), cut.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s1.recv_from(&mut buf).await {
            *c1.lock().unwrap() = Some(from);
            if !cut1.load(Ordering::SeqCst) {
                let _ = b1.send_to(&buf[..n], target).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let to = *client.lock().unwrap();
            if let (Some(to), false) = (to, cut.load(Ordering::SeqCst)) {
                let _ = sock.send_to(&buf[..n], to).await;
            }
        }
    });
    front
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_tunnel_is_declared_dead_within_about_a_second() {
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let (ea, eb) = (endpoint(&a), endpoint(&b));
    let cut = Arc::new(AtomicBool::new(false));
    let front = relay(eb.local_addr().unwrap(), cut.clone()).await;
    tokio::spawn(async move {
        while let Some(acc) = eb.accept().await {
            tokio::spawn(async move { acc.finish().await.map(std::mem::forget) });
        }
    });
    let ta = ea.connect(front, b.cert.prefix).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cut.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let reason = ta.conn.closed().await;
    let dead_after = started.elapsed();
    println!("silent tunnel declared dead after {dead_after:?} ({reason})");
    assert!(
        matches!(reason, quinn::ConnectionError::TimedOut),
        "{reason}"
    );
    assert!(dead_after < Duration::from_secs(3), "took {dead_after:?}");
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_below_the_minimum_protocol_is_refused() {
    use re6mesh::mesh::tunnels::HelloInfo;
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let (ea, eb) = (endpoint(&a), endpoint(&b));
    // b requires protocol 2; a speaks 1
    eb.set_hello(
        HelloInfo {
            protocol: 2,
            params_version: 5,
            endpoints: vec![],
            country: None,
            observed: None,
        },
        2,
    );
    let b_addr = eb.local_addr().unwrap();
    let acc = tokio::spawn(async move { eb.accept().await.unwrap().finish().await });
    let a_side = ea.connect(b_addr, b.cert.prefix).await;
    let b_side = acc.await.unwrap();
    let b_err = b_side.unwrap_err().to_string();
    assert!(b_err.contains("requires at least 2"), "{b_err}");
    // a completed its hello before b judged it; the tunnel is closed by b at once
    if let Ok(t) = a_side {
        assert_eq!(t.peer_hello.protocol, 2);
        let reason = t.conn.closed().await;
        assert!(reason.to_string().contains("protocol"), "{reason}");
    }
    reg.stop().await;
}

/// The country a node states travels in its hello (for the country rules); anything that is
/// not a two-letter upper-case code is dropped on receipt.
#[tokio::test(flavor = "multi_thread")]
async fn the_hello_carries_a_valid_country_and_drops_an_invalid_one() {
    use re6mesh::mesh::tunnels::HelloInfo;
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let (ea, eb) = (Arc::new(endpoint(&a)), Arc::new(endpoint(&b)));
    let hello = |country: &str| HelloInfo {
        protocol: re6mesh::params::PROTOCOL_VERSION,
        params_version: 1,
        endpoints: vec![],
        country: Some(country.into()),
        observed: None,
    };
    let b_addr = eb.local_addr().unwrap();
    for (sent, seen) in [("FR", Some("FR")), ("france", None)] {
        eb.set_hello(hello(sent), 1);
        let eb2 = eb.clone();
        let acc = tokio::spawn(async move { eb2.accept().await.unwrap().finish().await });
        let t = ea.connect(b_addr, b.cert.prefix).await.unwrap();
        assert_eq!(t.peer_hello.country.as_deref(), seen, "sent {sent:?}");
        let _b_side = acc.await.unwrap().unwrap();
        t.conn.close(0u32.into(), b"bye");
    }
    reg.stop().await;
}

/// A UDP relay in front of `target` for any number of clients (one back socket per client,
/// like a NAT) that drops datagrams longer than `max_up` bytes on their way to `target` and
/// longer than `max_down` bytes on their way back: a path with a small MTU. Besides, it drops
/// each datagram with probability `loss`, and all of them for the first `silent_for`.
async fn mtu_relay(
    target: SocketAddr,
    max_up: usize,
    max_down: usize,
    loss: f64,
    silent_for: Duration,
) -> SocketAddr {
    let opens = Instant::now() + silent_for;
    let pass = move || Instant::now() >= opens && rand::random::<f64>() >= loss;
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let front_addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut backs: HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = front.recv_from(&mut buf).await {
            let back = match backs.get(&from) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    let (b2, f2) = (b.clone(), front.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok((n, _)) = b2.recv_from(&mut buf).await {
                            if n <= max_down && pass() {
                                let _ = f2.send_to(&buf[..n], from).await;
                            }
                        }
                    });
                    backs.insert(from, b.clone());
                    b
                }
            };
            if n <= max_up && pass() {
                let _ = back.send_to(&buf[..n], target).await;
            }
        }
    });
    front_addr
}

/// Finishes every incoming tunnel of `e`; the outcomes come out of the channel.
fn accept_all(
    e: TunnelEndpoint,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<re6mesh::mesh::tunnels::Tunnel, TunnelError>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(acc) = e.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(acc.finish().await);
            });
        }
    });
    rx
}

/// UDP payload of a 1300-byte IPv6 packet: more than the 1200 bytes of a minimal QUIC
/// handshake, less than the 1360 re6mesh needs.
const SMALL_PATH: usize = 1300 - 48;

/// A path that drops packets above 1300 bytes (both ways, or in one direction only) is refused
/// with one sentence on the dialler's side, and the acceptor logs the same sentence; a path
/// through the same relay without the limit comes up at once (no diagnosis on success).
#[tokio::test(flavor = "multi_thread")]
async fn a_path_without_full_size_packets_is_refused_with_one_clear_sentence_on_both_sides() {
    let reg = TestRegistry::start().await;
    let (a, b) = (
        Arc::new(reg.join_node().await),
        Arc::new(reg.join_node().await),
    );
    let mut cases = Vec::new();
    for (what, up, down) in [
        ("both ways", SMALL_PATH, SMALL_PATH),
        ("towards the acceptor", SMALL_PATH, usize::MAX),
        ("back to the dialler", usize::MAX, SMALL_PATH),
        ("no limit", usize::MAX, usize::MAX),
    ] {
        let (a, b) = (a.clone(), b.clone());
        cases.push(tokio::spawn(async move {
            let (ea, eb) = (endpoint(&a), endpoint(&b));
            let front = mtu_relay(eb.local_addr().unwrap(), up, down, 0.0, Duration::ZERO).await;
            let mut accepted = accept_all(eb);
            let started = Instant::now();
            let dialled = ea.connect(front, b.cert.prefix).await;
            let took = started.elapsed();
            if up == usize::MAX && down == usize::MAX {
                let t = dialled.unwrap();
                assert_eq!(t.peer_prefix, b.cert.prefix);
                assert!(took < Duration::from_secs(1), "{what}: took {took:?}");
                println!("{what}: tunnel up after {took:?}");
                return;
            }
            let err = dialled.unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, TunnelError::PathMtu(_)), "{what}: {msg}");
            assert!(
                msg.starts_with(&format!(
                    "the path to {front} does not carry 1360-byte packets"
                )) && msg.contains("MTU of at least 1388 bytes"), // IPv4 here
                "{what}: {msg}"
            );
            println!("{what}: refused after {took:?}: {msg}");
            // the acceptor saw the small connection closed for this reason
            let peer_side = tokio::time::timeout(Duration::from_secs(3), async {
                while let Some(r) = accepted.recv().await {
                    if let Err(e @ TunnelError::PathMtu(_)) = r {
                        return e.to_string();
                    }
                }
                String::new()
            })
            .await
            .unwrap_or_default();
            assert!(
                peer_side.starts_with("the path to 127.0.0.1 does not carry 1360-byte packets"),
                "{what}: the acceptor said {peer_side:?}"
            );
        }));
    }
    for c in cases {
        c.await.unwrap();
    }
    reg.stop().await;
}

/// A peer that does not answer at all is not blamed on the MTU.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_peer_is_not_blamed_on_the_mtu() {
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let ea = endpoint(&a);
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let err = ea
        .connect(silent.local_addr().unwrap(), b.cert.prefix)
        .await
        .unwrap_err();
    println!("silent peer: {err} after {:?}", started.elapsed());
    assert!(matches!(err, TunnelError::Connect { .. }), "{err}");
    reg.stop().await;
}

/// Under 5 % random loss each way, a path that carries full-size packets is never blamed on
/// the MTU (a handshake that times out by bad luck is retried once the small one shows the
/// peer alive), and a path that does not is still refused with the sentence.
#[tokio::test(flavor = "multi_thread")]
async fn under_5_percent_loss_the_verdict_holds() {
    const DIALS: usize = 10;
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let mut verdicts = Vec::new();
    for max in [usize::MAX, SMALL_PATH] {
        let (ea, eb) = (Arc::new(endpoint(&a)), endpoint(&b));
        let front = mtu_relay(eb.local_addr().unwrap(), max, max, 0.05, Duration::ZERO).await;
        let mut accepted = accept_all(eb);
        // keep the accepted tunnels open (dropping one closes it)
        tokio::spawn(async move {
            let mut keep = Vec::new();
            while let Some(r) = accepted.recv().await {
                keep.push(r);
            }
        });
        let dials: Vec<_> = (0..DIALS)
            .map(|_| {
                let (ea, prefix) = (ea.clone(), b.cert.prefix);
                tokio::spawn(async move {
                    let started = Instant::now();
                    let r = ea.connect(front, prefix).await;
                    (
                        r.map(|t| t.conn.close(0u32.into(), b"bye")),
                        started.elapsed(),
                    )
                })
            })
            .collect();
        let (mut up, mut mtu, mut other) = (0, 0, 0);
        let mut slowest = Duration::ZERO;
        for d in dials {
            let (r, took) = d.await.unwrap();
            slowest = slowest.max(took);
            match r {
                Ok(()) => up += 1,
                Err(TunnelError::PathMtu(_)) => mtu += 1,
                Err(e) => {
                    println!("{e}");
                    other += 1
                }
            }
        }
        println!(
            "5 % loss, path limit {max}: {up} up, {mtu} refused for the MTU, {other} other \
             failures; slowest {slowest:?}"
        );
        verdicts.push((up, mtu, other));
    }
    let (good, small) = (verdicts[0], verdicts[1]);
    assert_eq!(good.1, 0, "a good path was blamed on the MTU");
    assert!(good.0 >= DIALS - 1, "{good:?}");
    assert_eq!(small.0, 0);
    assert!(small.1 >= DIALS - 1, "{small:?}");
    reg.stop().await;
}

/// A peer that is silent through the first full-size handshake (still starting, or a burst of
/// loss) but answers the small one is not blamed on the MTU: the second full-size handshake
/// brings the tunnel up.
#[tokio::test(flavor = "multi_thread")]
async fn a_peer_silent_only_at_first_gets_its_tunnel_not_an_mtu_verdict() {
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let (ea, eb) = (endpoint(&a), endpoint(&b));
    let silent = Duration::from_millis(3200);
    let front = mtu_relay(
        eb.local_addr().unwrap(),
        usize::MAX,
        usize::MAX,
        0.0,
        silent,
    )
    .await;
    let _accepted = accept_all(eb);
    let started = Instant::now();
    let t = ea.connect(front, b.cert.prefix).await.unwrap();
    let took = started.elapsed();
    println!("path silent for {silent:?}: tunnel up after {took:?}");
    assert_eq!(t.peer_prefix, b.cert.prefix);
    assert!(took > silent, "{took:?}");
    reg.stop().await;
}

/// Roaming (issue 14): an endpoint bound to one address whose address goes moves to the
/// unspecified address, same port (`Endpoint::rebind`), and its tunnel goes on.
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_moved_to_another_socket_keeps_its_tunnels() {
    let reg = TestRegistry::start().await;
    let (a, b) = (reg.join_node().await, reg.join_node().await);
    let (ea, eb) = (endpoint(&a), endpoint(&b));
    let b_addr = eb.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let t = eb.accept().await.unwrap().finish().await.unwrap();
        (eb, t)
    });
    let ta = ea.connect(b_addr, b.cert.prefix).await.unwrap();
    let (_eb, tb) = accept.await.unwrap();
    let (la, lb) = (ta.link(), tb.link());
    let port = ea.local_addr().unwrap().port();
    ea.rebind(SocketAddr::from(([0, 0, 0, 0], port)))
        .expect("the unspecified address, same port, while the old socket is held");
    assert_eq!(
        ea.local_addr().unwrap(),
        SocketAddr::from(([0, 0, 0, 0], port))
    );
    la.send_packet_copy(&ipv6_packet(3)).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), tb.conn.read_datagram())
        .await
        .expect("nothing arrived after the move")
        .unwrap();
    assert_eq!(frame::parse(&got), Ok(Datagram::Ipv6(&ipv6_packet(3)[..])));
    lb.send_packet_copy(&ipv6_packet(4)).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), ta.conn.read_datagram())
        .await
        .expect("nothing came back after the move")
        .unwrap();
    assert_eq!(frame::parse(&got), Ok(Datagram::Ipv6(&ipv6_packet(4)[..])));
    reg.stop().await;
}
