//! The property the `babel_engine` fuzz target checks, as a plain function so the seed
//! corpus also runs under `cargo test`.
//!
//! Two engines: `E` (the one under test) with a LAN interface and a tunnel to a real
//! second engine `P`. The input is a sequence of operations: structured or raw packets
//! from up to three LAN neighbours or from the tunnel peer (signed with the right key, a
//! second key, a wrong key or not at all, with fuzzer-chosen packet counters), time
//! advances, and commands (originate/withdraw, cost multiplier, RTT, keys, timers, seqno,
//! neighbour and interface removal). Traffic between `E` and `P` is delivered at once.
//!
//! After every operation, for both engines:
//! 1. the FIB fed with the route changes equals the selected routes;
//! 2. every selected route is feasible, finite, not an own prefix, and its metric is the
//!    one the route table shows;
//! 3. after [`Engine::handle_timeout`]`(t)`, [`Engine::poll_timeout`] is later than `t`
//!    (no busy loop);
//! 4. P, which checks route origins (E signs its own, half the structured LAN Updates
//!    carry a valid fake signature that E relays), never selects a route whose origin its
//!    policy does not know yet (2001::/16 while the harness has it unknown).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::codec;
use super::msg::{INFINITY, Msg, RouterId};
use super::origin::{OriginPolicy, OriginVerdict, RouteSignature, RouteSigner, signed_bytes};
use super::{
    BABEL_MULTICAST, BABEL_PORT, Config, CostMultiplier, Engine, IfaceConfig, IfaceId, MacKey,
    MacKeys, NeighbourId, Prefix, RouteKey, Seqno, Time, Timers, Transmit,
};
use crate::mesh::fib::Fib;
use crate::wire::{self, PcState};

const E_TUN: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 1);
const P_TUN: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 2, 0, 0, 0, 1);
const E_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Reads the input; yields zeros once it is exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn key(id: u32) -> MacKey {
    MacKey::new(id, vec![id as u8; 32])
}

fn keys_variant(v: u8) -> MacKeys {
    match v % 5 {
        0 => MacKeys::none(),
        1 => MacKeys::sign(key(1)),
        2 => MacKeys {
            sign: Some(key(1)),
            accept: vec![key(2)],
            accept_unsigned: false,
        },
        3 => MacKeys {
            sign: Some(key(2)),
            accept: vec![key(1)],
            accept_unsigned: false,
        },
        _ => MacKeys {
            sign: Some(key(1)),
            accept: Vec::new(),
            accept_unsigned: true,
        },
    }
}

fn prefix(i: &mut Input) -> RouteKey {
    let b = i.u8();
    if b >= 0xf8 {
        // an exit's source-specific default route (RFC 9079)
        let any = Prefix::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("::/0");
        let net = Prefix::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0)), 16);
        return RouteKey::from_source(any, net);
    }
    let ip = match b % 4 {
        0 | 1 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, u16::from(b % 8), 0, 0, 0, 0)),
        2 => IpAddr::V4(std::net::Ipv4Addr::new(10, b % 8, 0, 0)),
        _ => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, u16::from(b), 0, 0, 0, 0, 0)),
    };
    let len = match ip {
        IpAddr::V4(_) => 16,
        IpAddr::V6(_) if b % 4 == 3 => 48,
        IpAddr::V6(_) => 64,
    };
    Prefix::new(ip, len)
        .unwrap_or_else(|| Prefix::new(ip, 0).expect("length 0 is valid"))
        .into()
}

fn router_id(i: &mut Input) -> RouterId {
    RouterId([0, 0, 0, 0, 0, 0, 0, i.u8() % 6])
}

fn msg(i: &mut Input, lan_ll: IpAddr) -> Msg {
    match i.u8() % 11 {
        0 | 1 => Msg::Hello {
            unicast: i.u8() & 1 == 1,
            seqno: Seqno(i.u16()),
            interval_cs: u16::from(i.u8()) * 4,
            timestamp: if i.u8() & 1 == 0 {
                None
            } else {
                Some(i.u16().into())
            },
        },
        2 => Msg::Ihu {
            rxcost: if i.u8() & 1 == 0 { 96 } else { i.u16() },
            interval_cs: u16::from(i.u8()) * 4,
            addr: if i.u8() & 1 == 0 { Some(lan_ll) } else { None },
            timestamp: if i.u8() & 1 == 0 {
                None
            } else {
                Some((i.u16().into(), i.u16().into()))
            },
        },
        3..=5 => {
            // Fields read in the same order as before signatures existed (the corpus
            // keeps its meaning); an even seqno gets the fake originator's signature.
            let prefix = prefix(i);
            let router_id = router_id(i);
            let seqno = Seqno(u16::from(i.u8()));
            let metric = if i.u8() & 3 == 0 {
                INFINITY
            } else {
                u16::from(i.u8())
            };
            Msg::Update {
                prefix,
                router_id,
                seqno,
                metric,
                interval_cs: u16::from(i.u8()) * 8,
                next_hop: None,
                signature: seqno
                    .0
                    .is_multiple_of(2)
                    .then(|| fake_sig(prefix, router_id, seqno)),
            }
        }
        6 => Msg::RouteRequest {
            prefix: if i.u8() & 1 == 0 {
                None
            } else {
                Some(prefix(i))
            },
        },
        7 => Msg::SeqnoRequest {
            prefix: prefix(i),
            seqno: Seqno(u16::from(i.u8())),
            hop_count: i.u8(),
            router_id: router_id(i),
        },
        8 => Msg::WildcardRetraction {
            interval_cs: u16::from(i.u8()) * 8,
        },
        9 => Msg::AckRequest {
            opaque: i.u16(),
            interval_cs: u16::from(i.u8()),
        },
        _ => Msg::Ack { opaque: i.u16() },
    }
}

/// A packet of fuzzer-chosen messages from `src`, signed as the fuzzer says.
fn structured(i: &mut Input, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let n = 1 + usize::from(i.u8() % 6);
    let msgs: Vec<Msg> = (0..n).map(|_| msg(i, IpAddr::V6(E_LL))).collect();
    let how = i.u8();
    let sign = match how % 4 {
        0 => None,
        1 => Some(key(1)),
        2 => Some(key(2)),
        _ => Some(key(9)),
    };
    let mut pc = PcState {
        index: vec![how; 4],
        counter: i.u32(),
    };
    let pc = sign.as_ref().map(|_| &mut pc);
    let Ok(packets) = codec::encode(&msgs, src.ip(), 1400, usize::from(sign.is_some()), pc) else {
        return Vec::new();
    };
    let Some(mut p) = packets.into_iter().next() else {
        return Vec::new();
    };
    if let Some(k) = sign {
        let _ = wire::mac::sign_vec(&mut p, &super::mac::pseudo(src, dst), k.bytes());
    }
    p
}

/// The fake originator signature of the harness: SHA-256 of the signed bytes, twice.
fn fake_sig(prefix: RouteKey, rid: RouterId, seqno: Seqno) -> RouteSignature {
    use sha2::{Digest, Sha256};
    let d: [u8; 32] = Sha256::digest(signed_bytes(prefix, rid, seqno)).into();
    let mut s = [0u8; 64];
    s[..32].copy_from_slice(&d);
    s[32..].copy_from_slice(&d);
    s
}

/// P's origin policy: the fake signature is valid, except that prefixes in 2001::/16 are
/// unknown while `known` is false (the harness toggles it and calls `origin_known`).
struct FuzzPolicy {
    known: bool,
}

impl OriginPolicy for FuzzPolicy {
    fn verify(
        &mut self,
        prefix: RouteKey,
        rid: RouterId,
        seqno: Seqno,
        sig: &RouteSignature,
    ) -> OriginVerdict {
        if !self.known && unknown_class(prefix) {
            OriginVerdict::Unknown
        } else if *sig == fake_sig(prefix, rid, seqno) {
            OriginVerdict::Valid
        } else {
            OriginVerdict::Invalid
        }
    }
}

fn unknown_class(p: RouteKey) -> bool {
    matches!(p.addr(), IpAddr::V6(a) if a.segments()[0] == 0x2001)
}

/// E signs its own routes with the fake scheme.
struct FuzzSigner;

impl RouteSigner for FuzzSigner {
    fn sign(&mut self, prefix: RouteKey, rid: RouterId, seqno: Seqno) -> Option<RouteSignature> {
        Some(fake_sig(prefix, rid, seqno))
    }
}

struct Side {
    engine: Engine,
    fib: Fib,
}

impl Side {
    fn drain(&mut self, out: &mut Vec<Transmit>) {
        while let Some(t) = self.engine.poll_transmit(Time::ZERO) {
            out.push(t);
        }
        while let Some(c) = self.engine.poll_route_change() {
            self.fib.apply(&c);
        }
        self.fib.publish();
        while self.engine.poll_event().is_some() {}
    }

    fn check(&self, who: &str) -> Result<(), String> {
        let fib: Vec<_> = self
            .fib
            .routes()
            .map(|e| {
                let key = RouteKey::from_source(e.prefix, e.src);
                (key, e.next_hop, e.iface, e.metric)
            })
            .collect();
        let sel: Vec<_> = self
            .engine
            .selected_routes()
            .map(|r| (r.prefix, r.next_hop, r.iface, r.metric))
            .collect();
        if fib != sel {
            return Err(format!("{who}: FIB {fib:?} differs from selection {sel:?}"));
        }
        let local: Vec<RouteKey> = self.engine.local_prefixes().copied().collect();
        for r in self
            .engine
            .routes()
            .iter()
            .filter(|r| r.selected && !r.local)
        {
            let Some(f) = self.engine.selected_route(r.prefix) else {
                return Err(format!("{who}: {r:?} marked selected without a FIB route"));
            };
            if !r.feasible || r.metric == INFINITY || f.metric != r.metric {
                return Err(format!("{who}: bad selected route {r:?} / {f:?}"));
            }
            if local.contains(&r.prefix) {
                return Err(format!("{who}: own prefix {} selected", r.prefix));
            }
        }
        Ok(())
    }
}

/// E's LAN: RFC 9616 timestamps and reliable urgent messages on, so the fuzzer reaches
/// the RTT and Ack code.
fn lan_cfg() -> IfaceConfig {
    let mut c = IfaceConfig::lan("lan", E_LL);
    c.timestamps = true;
    c.acks = true;
    c
}

/// The E–P tunnel, both ends with timestamps and Acks (two real engines exercise both
/// directions of RFC 9616 and RFC 8966 3.3).
fn tunnel_cfg(local: Ipv6Addr, peer: Ipv6Addr) -> IfaceConfig {
    let mut c = IfaceConfig::tunnel("t", local, peer);
    c.timestamps = true;
    c.acks = true;
    c
}

/// Runs the operations in `data`; returns the first invariant violation. Never panics
/// unless the engine does.
pub fn check_engine(data: &[u8]) -> Result<(), String> {
    let mut i = Input(data);
    let now0 = Time::from_millis(1_000);
    let mut now = now0;
    let mut e = Side {
        engine: Engine::new(Config::default(), [0, 0, 0, 0, 0, 0, 0, 1], [1; 32], now),
        fib: Fib::new(),
    };
    let mut p = Side {
        engine: Engine::new(Config::default(), [0, 0, 0, 0, 0, 0, 0, 2], [2; 32], now),
        fib: Fib::new(),
    };
    let keys = keys_variant(i.u8());
    e.engine.set_mac_keys(keys.clone());
    p.engine.set_mac_keys(keys);
    // Origin authentication: E signs, P checks (E itself stays without a policy so that
    // unsigned LAN routes still reach every path of it).
    let mut known = false;
    e.engine.set_route_signer(now, Some(Box::new(FuzzSigner)));
    p.engine
        .set_origin_policy(Some(Box::new(FuzzPolicy { known })));
    e.engine
        .originate(now, Prefix::new(IpAddr::V6(E_TUN), 64).expect("/64"));
    p.engine
        .originate(now, Prefix::new(IpAddr::V6(P_TUN), 64).expect("/64"));
    let mut lan = e.engine.add_interface(now, lan_cfg());
    let e_tun = e.engine.add_interface(now, tunnel_cfg(E_TUN, P_TUN));
    let p_tun = p.engine.add_interface(now, tunnel_cfg(P_TUN, E_TUN));
    let lan_peers: [IpAddr; 3] = [
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa)),
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xb)),
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xc)),
    ];
    let tun_nid = NeighbourId {
        iface: e_tun,
        addr: IpAddr::V6(P_TUN),
    };
    let mut steps = 0;
    while !i.is_empty() && steps < 256 {
        steps += 1;
        let op = i.u8();
        match op % 8 {
            0 | 1 => {
                let src = SocketAddr::new(lan_peers[usize::from(i.u8() % 3)], BABEL_PORT);
                let dst = if i.u8() & 1 == 0 {
                    SocketAddr::new(IpAddr::V6(BABEL_MULTICAST), BABEL_PORT)
                } else {
                    SocketAddr::new(IpAddr::V6(E_LL), BABEL_PORT)
                };
                let bytes = if op % 8 == 0 {
                    structured(&mut i, src, dst)
                } else {
                    let n = usize::from(i.u8());
                    i.bytes(n)
                };
                e.engine.handle_packet(now, lan, src, dst, &bytes);
            }
            2 | 3 => {
                let src = SocketAddr::new(IpAddr::V6(P_TUN), BABEL_PORT);
                let dst = SocketAddr::new(IpAddr::V6(E_TUN), BABEL_PORT);
                let bytes = if op % 8 == 2 {
                    structured(&mut i, src, dst)
                } else {
                    let n = usize::from(i.u8());
                    i.bytes(n)
                };
                e.engine.handle_packet(now, e_tun, src, dst, &bytes);
            }
            4 | 5 => {
                let ms = u64::from(i.u16()) * 4;
                now = now + Duration::from_millis(ms);
                // Timers are at least 10 ms apart, so an advance of `ms` wakes each engine
                // at most about ms / 10 times per timer; anything far beyond is a busy loop.
                let max_wakeups = ms / 10 * 8 + 10_000;
                for side in [&mut e, &mut p] {
                    let mut guard = 0;
                    while let Some(t) = side.engine.poll_timeout().filter(|t| *t <= now) {
                        side.engine.handle_timeout(t.max(now0));
                        if side.engine.poll_timeout().is_some_and(|n| n <= t) {
                            return Err(format!("busy loop: timeout at {t} stays due"));
                        }
                        guard += 1;
                        if guard > max_wakeups {
                            return Err(format!("more than {max_wakeups} timeouts in {ms} ms"));
                        }
                    }
                    side.engine.handle_timeout(now);
                }
                if ms.is_multiple_of(3) {
                    // The "certificates" of 2001::/16 become known, or are revoked.
                    known = !known;
                    if let Some(pol) = p.engine.origin_policy_mut::<FuzzPolicy>() {
                        pol.known = known;
                    }
                    let held: std::collections::BTreeSet<RouteKey> = p
                        .engine
                        .routes()
                        .iter()
                        .map(|r| r.prefix)
                        .filter(|q| unknown_class(*q))
                        .collect();
                    for q in held {
                        p.engine.origin_known(now, q);
                    }
                    // The class changed as a whole: verdicts cached for prefixes P holds no
                    // route for any more must go too (the proptest found one that outlived
                    // its route and made the next Update of it selectable while unknown).
                    p.engine.origin_policy_changed(now);
                }
            }
            6 => {
                let which = i.u8();
                let nid = if which & 1 == 0 {
                    tun_nid
                } else {
                    NeighbourId {
                        iface: lan,
                        addr: lan_peers[usize::from(which / 2 % 3)],
                    }
                };
                match i.u8() % 10 {
                    0 => e.engine.originate(now, prefix(&mut i)),
                    1 => e.engine.withdraw(now, prefix(&mut i)),
                    2 => {
                        let m = [0, 1, 256, 300, 4096, 65535][usize::from(i.u8() % 6)];
                        let _ = e.engine.set_cost_multiplier(now, nid, CostMultiplier(m));
                    }
                    3 => {
                        let rtt = Duration::from_millis(u64::from(i.u16()));
                        let _ = e.engine.set_rtt(now, nid, rtt);
                    }
                    4 => e.engine.set_mac_keys(keys_variant(i.u8())),
                    5 => p.engine.set_mac_keys(keys_variant(i.u8())),
                    6 => {
                        let _ = e.engine.remove_neighbour(now, nid);
                        let _ = p.engine.remove_neighbour(
                            now,
                            NeighbourId {
                                iface: p_tun,
                                addr: IpAddr::V6(E_TUN),
                            },
                        );
                    }
                    7 => {
                        let _ = e.engine.add_neighbour(now, e_tun, IpAddr::V6(P_TUN));
                        let _ = p.engine.add_neighbour(now, p_tun, IpAddr::V6(E_TUN));
                    }
                    8 => {
                        let t = Timers {
                            hello: Duration::from_millis(u64::from(i.u16())),
                            update: Duration::from_millis(u64::from(i.u16()) * 4),
                        };
                        let iface = if which & 1 == 0 { e_tun } else { lan };
                        let _ = e.engine.set_timers(now, iface, t);
                    }
                    _ => e.engine.set_seqno(now, Seqno(i.u16())),
                }
            }
            _ => {
                // The LAN interface goes away and comes back (new id).
                let _ = e.engine.remove_interface(now, lan);
                lan = e.engine.add_interface(now, lan_cfg());
                let _ = IfaceId(0);
            }
        }
        // Deliver E <-> P traffic until quiet (bounded: engines may answer each other).
        for _ in 0..8 {
            let (mut from_e, mut from_p) = (Vec::new(), Vec::new());
            e.drain(&mut from_e);
            p.drain(&mut from_p);
            if from_e
                .iter()
                .chain(&from_p)
                .all(|t| t.iface != e_tun && t.iface != p_tun)
            {
                break;
            }
            for t in from_e.into_iter().filter(|t| t.iface == e_tun) {
                p.engine.handle_packet(now, p_tun, t.src, t.dst, &t.bytes);
            }
            for t in from_p.into_iter().filter(|t| t.iface == p_tun) {
                e.engine.handle_packet(now, e_tun, t.src, t.dst, &t.bytes);
            }
        }
        let mut sink = Vec::new();
        e.drain(&mut sink);
        p.drain(&mut sink);
        e.check("E")?;
        p.check("P")?;
        if !known && let Some(r) = p.engine.selected_routes().find(|r| unknown_class(r.prefix)) {
            return Err(format!("P: {r:?} selected while its origin is unknown"));
        }
    }
    Ok(())
}

/// Hand-written seeds: learn a route over the LAN, go through time, rotate keys, lose
/// the tunnel. Also written to `fuzz/corpus/babel_engine/`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let hello_ihu_update = |signed: u8| {
        vec![
            0, 0, 0, // LAN packet from fe80::a to multicast
            2, // three messages
            0, 0, 0, 1, 100, // Hello seqno 1, 4 s
            2, 0, 100, 0, // IHU rxcost 96, 4 s, our address
            3, 5, 3, 7, 1, 0, 200, // Update 2001:db8:5::/48 from rid 3, metric 0?
            signed, 0, 0, 0, 1, // signing, counter 1
        ]
    };
    vec![
        ("origin-unknown-known-revoked", {
            let mut v = vec![0];
            v.extend([
                0, 0, 0, // LAN packet from fe80::a to multicast
                2, // three messages
                0, 0, 0, 1, 100, 0, // Hello seqno 1, 4 s, no timestamp
                2, 0, 100, 0, 0, // IHU rxcost 96, 4 s, our address, no timestamp
                3, 3, 3, 8, 1, 0, 200, // Update 2001:db8:3::/48, rid 3, seqno 8: signed
                0, 0, 0, 0, 1, // unsigned packet
            ]);
            v.extend([4, 0, 10]); // 40 ms: E relays it to P, whose policy cannot tell yet
            v.extend([4, 0, 3]); // 12 ms: known → selectable at P
            v.extend([4, 0, 3]); // revoked → unselectable again
            v.extend([4, 0, 10]);
            v
        }),
        ("lan-learn", {
            let mut v = vec![0];
            v.extend(hello_ihu_update(0));
            v.extend([4, 0, 10]); // advance
            v
        }),
        ("time-passes", {
            let mut v = vec![1];
            for _ in 0..8 {
                v.extend([4, 0x10, 0]);
            }
            v
        }),
        ("key-rotation", {
            let mut v = vec![1];
            v.extend(hello_ihu_update(1));
            v.extend([6, 0, 4, 2, 6, 0, 5, 2, 4, 1, 0, 6, 0, 4, 3, 4, 1, 0]);
            v
        }),
        (
            "tunnel-churn",
            vec![0, 6, 0, 6, 4, 0, 50, 6, 0, 7, 4, 0, 50, 7, 4, 1, 0],
        ),
        (
            "locks-and-rtt",
            vec![0, 6, 0, 2, 4, 6, 0, 2, 0, 6, 0, 3, 0, 200, 4, 0, 100],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seed corpus of the fuzz target (small, generated by
    /// `seeds()` below) must pass.
    #[test]
    fn seed_inputs_keep_the_invariants() {
        for (name, s) in seeds() {
            assert_eq!(check_engine(&s), Ok(()), "seed {name}");
        }
    }

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/babel_engine")
    }

    /// Every committed corpus file passes (the fuzz target's seeds, and anything a fuzz
    /// run found and was minimised into the corpus).
    #[test]
    fn committed_corpus_keeps_the_invariants() {
        let Ok(dir) = std::fs::read_dir(corpus_dir()) else {
            return;
        };
        for f in dir.flatten() {
            let data = std::fs::read(f.path()).expect("readable corpus file");
            assert_eq!(check_engine(&data), Ok(()), "{}", f.path().display());
        }
    }

    #[test]
    fn zero_timers_do_not_busy_loop() {
        // The first finding of the fuzz target: set_timers(hello = 0, update = 0).
        let crash = [
            0x00, 0x06, 0x00, 0x08, 0x00, 0x00, 0x00, 0x12, 0x07, 0x46, 0x04, 0x00, 0x31, 0x04,
            0x32, 0x00, 0x00, 0x00, 0x32,
        ];
        assert_eq!(check_engine(&crash), Ok(()));
    }

    #[test]
    #[ignore = "writes fuzz/corpus/babel_engine from seeds()"]
    fn write_seed_corpus() {
        std::fs::create_dir_all(corpus_dir()).expect("mkdir");
        for (name, s) in seeds() {
            std::fs::write(corpus_dir().join(name), s).expect("write");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn random_operation_sequences_keep_the_invariants(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)
        ) {
            proptest::prop_assert_eq!(check_engine(&data), Ok(()));
        }
    }
}
