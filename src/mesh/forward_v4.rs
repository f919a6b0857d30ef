//! IPv4 over the mesh (issue 15), the forwarding decisions, sans-IO.
//!
//! The mesh itself is IPv6: an IPv4 packet from the TUN travels to the node that originates
//! the IPv4 route of its destination (its /32, or a granted subnet behind it) inside an IPv6
//! packet (IPv4-in-IPv6, next header 4, RFC 2473) from this node's address to that node's
//! address. That packet is then routed, and sealed across relays, like any other
//! (docs/SEALING.md): the sealed destination is the originating node, relays see nothing of
//! the IPv4 packet, and the originating node's session proves where it came from.
//!
//! TTL: the IPv6 packet leaves with hop limit [`ENCAP_HOP_LIMIT`]; relays take one off the
//! sealed frame's clear hop limit each, which the opening node carries into the inner
//! packet. So at the far end `ENCAP_HOP_LIMIT - hop limit` is the number of relays crossed,
//! and the IPv4 TTL is decremented by that many (RFC 1624 incremental checksum); a packet
//! whose TTL ran out on the way gets an ICMPv4 Time Exceeded there — from the far node's
//! IPv4 address, as the relays never see inside a sealed frame. From the TUN, a packet with no
//! route gets Destination Unreachable (network unreachable), and one too large for the
//! tunnel with Don't Fragment set gets Fragmentation Needed with the MTU that fits (RFC 1191);
//! those two come from the packet's destination address (the host would drop ICMPv4 from
//! its own address as a martian).
//! ICMPv4 errors are rate-limited like ICMPv6 ones and never sent about ICMP errors,
//! later fragments, or to/from broadcast, multicast or unspecified addresses (RFC 1812 §4.3.2.7).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use crate::mesh::forward::{IPV6_HEADER, RateLimit};
use crate::wire::ipv4::{self, Ipv4Header, PROTO_ICMP};

/// The IPv6 next header value of an encapsulated IPv4 packet.
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Hop limit of the IPv6 packet that carries an IPv4 one (see the module documentation).
pub const ENCAP_HOP_LIMIT: u8 = 255;
/// Bytes the encapsulation adds.
pub const ENCAP_OVERHEAD: usize = IPV6_HEADER;
/// ICMPv4 errors quote at most this much of the packet (RFC 1812: the whole error within
/// 576 bytes).
const MAX_ERROR_LEN: usize = 576;

/// ICMPv4 types and codes used here.
pub mod icmp {
    /// Destination Unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Time Exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Destination Unreachable code: network unreachable.
    pub const NET_UNREACHABLE: u8 = 0;
    /// Destination Unreachable code: fragmentation needed and DF set.
    pub const FRAG_NEEDED: u8 = 4;
    /// Time Exceeded code: TTL exceeded in transit.
    pub const TTL_EXCEEDED: u8 = 0;
}

/// What to do with an IPv4 packet.
#[derive(Debug, PartialEq, Eq)]
pub enum V4Decision {
    /// Go on (send it, or deliver it with its TTL already updated in place).
    Pass,
    /// Answer the source with this ICMPv4 error (instead of the packet).
    Reply(Vec<u8>),
    /// Drop it, for this reason.
    Drop(V4Drop),
}

/// Why an IPv4 packet is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V4Drop {
    /// Not a valid IPv4 packet.
    Malformed,
    /// An ICMPv4 error was due but is not allowed (about an error, a fragment, a broadcast;
    /// or this node has no IPv4 address to send it from).
    NoErrorAllowed,
    /// An ICMPv4 error was due but the rate limit is exhausted.
    RateLimited,
    /// Larger than the path and without DF: fragmenting is left to the sender's path MTU
    /// discovery.
    TooBig,
}

/// The IPv4 forwarding state of a node: its IPv4 address (the source of its ICMPv4 errors)
/// and the errors' rate limit.
#[derive(Debug, Clone)]
pub struct V4Forwarder {
    /// This node's IPv4 address (`None`: the network has no IPv4, no error is sent).
    pub me: Option<Ipv4Addr>,
    limit: RateLimit,
}

impl V4Forwarder {
    /// A forwarder whose errors come from `me`.
    pub fn new(me: Option<Ipv4Addr>, limit: RateLimit) -> V4Forwarder {
        V4Forwarder { me, limit }
    }

    /// A packet from the TUN: `route` is `None` without a route to its destination, else
    /// the largest packet (encapsulated) the path carries. Never changes the packet. Its
    /// errors come from the destination's address, as from the far end: the host drops
    /// ICMPv4 from one of its own addresses (a martian source), this node's included.
    pub fn from_tun(&mut self, pkt: &[u8], route: Option<usize>, now: Instant) -> V4Decision {
        let Some(h) = ipv4::parse(pkt) else {
            return V4Decision::Drop(V4Drop::Malformed);
        };
        match route {
            None => self.error(
                pkt,
                &h,
                h.dst,
                (icmp::DEST_UNREACHABLE, icmp::NET_UNREACHABLE),
                0,
                now,
            ),
            Some(mtu) if pkt.len() + ENCAP_OVERHEAD > mtu => {
                if !h.dont_fragment {
                    // fragmenting is left to the sender's path MTU discovery
                    return V4Decision::Drop(V4Drop::TooBig);
                }
                let fits = mtu.saturating_sub(ENCAP_OVERHEAD);
                let fits = u32::try_from(fits).unwrap_or(0).min(0xffff);
                self.error(
                    pkt,
                    &h,
                    h.dst,
                    (icmp::DEST_UNREACHABLE, icmp::FRAG_NEEDED),
                    fits,
                    now,
                )
            }
            Some(_) => V4Decision::Pass,
        }
    }

    /// A packet that came out of the mesh after `relays` relays: its TTL is decremented
    /// by that many in place, or it expired on the way (Time Exceeded).
    pub fn arrived(&mut self, pkt: &mut [u8], relays: u8, now: Instant) -> V4Decision {
        let Some(h) = ipv4::parse(pkt) else {
            return V4Decision::Drop(V4Drop::Malformed);
        };
        if relays == 0 {
            return V4Decision::Pass;
        }
        if h.ttl <= relays {
            let Some(me) = self.me else {
                return V4Decision::Drop(V4Drop::NoErrorAllowed);
            };
            return self.error(
                pkt,
                &h,
                me,
                (icmp::TIME_EXCEEDED, icmp::TTL_EXCEEDED),
                0,
                now,
            );
        }
        ipv4::set_ttl(pkt, h.ttl - relays);
        V4Decision::Pass
    }

    fn error(
        &mut self,
        pkt: &[u8],
        h: &Ipv4Header,
        from: Ipv4Addr,
        (ty, code): (u8, u8),
        rest: u32,
        now: Instant,
    ) -> V4Decision {
        if self.me.is_none() || !error_allowed(pkt, h) {
            return V4Decision::Drop(V4Drop::NoErrorAllowed);
        }
        if !self.limit.take(now) {
            return V4Decision::Drop(V4Drop::RateLimited);
        }
        V4Decision::Reply(icmp_error(from, h.src, ty, code, rest, pkt))
    }
}

fn special(a: Ipv4Addr) -> bool {
    a.is_unspecified() || a.is_broadcast() || a.is_multicast()
}

/// RFC 1812 §4.3.2.7: no error about an ICMP error, a later fragment, or to or from a
/// broadcast, multicast or unspecified address.
fn error_allowed(pkt: &[u8], h: &Ipv4Header) -> bool {
    if special(h.src) || special(h.dst) || h.later_fragment {
        return false;
    }
    if h.protocol == PROTO_ICMP {
        // errors: 3 unreachable, 4 source quench, 5 redirect, 11 time exceeded, 12 parameter
        match pkt.get(h.header_len) {
            Some(0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) => {}
            _ => return false,
        }
    }
    true
}

/// An ICMPv4 error from `src` to `dst` quoting as much of `offending` as fits in 576 bytes,
/// with correct checksums. `rest` is the 4 bytes after the checksum (the next-hop MTU of
/// Fragmentation Needed in its low 16 bits).
pub fn icmp_error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ty: u8,
    code: u8,
    rest: u32,
    offending: &[u8],
) -> Vec<u8> {
    let quoted = offending.len().min(MAX_ERROR_LEN - ipv4::MIN_HEADER - 8);
    let mut p = Vec::with_capacity(ipv4::MIN_HEADER + 8 + quoted);
    ipv4::emit_header(src, dst, PROTO_ICMP, 8 + quoted, &mut p);
    let at = p.len();
    p.extend_from_slice(&[ty, code, 0, 0]);
    p.extend_from_slice(&rest.to_be_bytes());
    p.extend_from_slice(&offending[..quoted]);
    let sum = ipv4::checksum(&p[at..]);
    p[at + 2..at + 4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Writes the IPv6 header that carries an IPv4 packet of `len` bytes from `src` to `dst`
/// (this node's and the originating node's addresses) into `out`.
pub fn emit_encap_header(src: Ipv6Addr, dst: Ipv6Addr, len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    out.push(NEXT_HEADER_IPV4);
    out.push(ENCAP_HOP_LIMIT);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
}

/// An IPv6 packet (as [`crate::mesh::forward::parse_header`] read it) that carries IPv4:
/// the number of relays it crossed (see the module documentation) and where the IPv4
/// packet starts. `None` when it does not carry IPv4.
pub fn decap(pkt: &[u8]) -> Option<(u8, usize)> {
    if pkt.get(6) != Some(&NEXT_HEADER_IPV4) || pkt.len() <= IPV6_HEADER {
        return None;
    }
    let hop = *pkt.get(7)?;
    Some((ENCAP_HOP_LIMIT.saturating_sub(hop), IPV6_HEADER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // test host: the only way to get an Instant
    fn t0() -> Instant {
        Instant::now()
    }

    fn unlimited() -> V4Forwarder {
        V4Forwarder::new(
            Some(Ipv4Addr::new(10, 42, 0, 2)),
            RateLimit::new(1e12, 1e12),
        )
    }

    fn packet(ttl: u8, df: bool, len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        ipv4::emit_header(
            Ipv4Addr::new(10, 42, 0, 1),
            Ipv4Addr::new(10, 42, 0, 3),
            17,
            len,
            &mut p,
        );
        if df {
            p[6] |= 0x40;
            p[10] = 0;
            p[11] = 0;
            let sum = ipv4::checksum(&p);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        ipv4::set_ttl(&mut p, ttl);
        p.resize(20 + len, 7);
        p
    }

    #[test]
    fn ttl_is_taken_off_per_relay_and_expiry_is_answered() {
        let now = t0();
        let mut f = unlimited();
        let mut p = packet(5, false, 10);
        assert_eq!(f.arrived(&mut p, 2, now), V4Decision::Pass);
        assert_eq!(ipv4::parse(&p).unwrap().ttl, 3);
        let mut p = packet(1, false, 10);
        assert_eq!(f.arrived(&mut p, 0, now), V4Decision::Pass);
        let V4Decision::Reply(e) = f.arrived(&mut p, 1, now) else {
            panic!("no time exceeded")
        };
        let h = ipv4::parse(&e).unwrap();
        assert_eq!(h.src, Ipv4Addr::new(10, 42, 0, 2));
        assert_eq!(h.dst, Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(
            (h.protocol, e[20], e[21]),
            (PROTO_ICMP, icmp::TIME_EXCEEDED, 0)
        );
        assert_eq!(ipv4::checksum(&e[20..]), 0);
        assert_eq!(&e[28..], &p[..]);
        // no error about an error
        let mut e2 = e.clone();
        assert_eq!(
            f.arrived(&mut e2, 64, now),
            V4Decision::Drop(V4Drop::NoErrorAllowed)
        );
    }

    #[test]
    fn no_route_and_too_big_from_the_tun() {
        let now = t0();
        let mut f = unlimited();
        let p = packet(64, true, 1000);
        assert_eq!(f.from_tun(&p, Some(1100), now), V4Decision::Pass);
        let V4Decision::Reply(e) = f.from_tun(&p, None, now) else {
            panic!()
        };
        assert_eq!(
            (e[20], e[21]),
            (icmp::DEST_UNREACHABLE, icmp::NET_UNREACHABLE)
        );
        let V4Decision::Reply(e) = f.from_tun(&p, Some(1000), now) else {
            panic!()
        };
        assert_eq!((e[20], e[21]), (icmp::DEST_UNREACHABLE, icmp::FRAG_NEEDED));
        assert_eq!(u16::from_be_bytes([e[26], e[27]]), 960);
        let p = packet(64, false, 1000);
        assert_eq!(
            f.from_tun(&p, Some(1000), now),
            V4Decision::Drop(V4Drop::TooBig)
        );
        assert_eq!(
            f.from_tun(&p[..30], Some(1000), now),
            V4Decision::Drop(V4Drop::Malformed)
        );
    }

    #[test]
    fn errors_are_rate_limited_and_need_an_address() {
        let now = t0();
        let mut f = V4Forwarder::new(Some(Ipv4Addr::new(10, 42, 0, 2)), RateLimit::new(1.0, 2.0));
        let p = packet(64, false, 10);
        assert!(matches!(f.from_tun(&p, None, now), V4Decision::Reply(_)));
        assert!(matches!(f.from_tun(&p, None, now), V4Decision::Reply(_)));
        assert_eq!(
            f.from_tun(&p, None, now),
            V4Decision::Drop(V4Drop::RateLimited)
        );
        let mut f = V4Forwarder::new(None, RateLimit::default());
        assert_eq!(
            f.from_tun(&p, None, now),
            V4Decision::Drop(V4Drop::NoErrorAllowed)
        );
    }

    #[test]
    fn encapsulation_round_trip() {
        let p = packet(64, false, 10);
        let mut out = Vec::new();
        emit_encap_header(
            "fd00::1".parse().unwrap(),
            "fd00:0:0:1::1".parse().unwrap(),
            p.len(),
            &mut out,
        );
        out.extend_from_slice(&p);
        let h = crate::mesh::forward::parse_header(&out).unwrap();
        assert_eq!(h.next_header, NEXT_HEADER_IPV4);
        assert_eq!(decap(&out), Some((0, 40)));
        out[7] = ENCAP_HOP_LIMIT - 3;
        assert_eq!(decap(&out), Some((3, 40)));
        out[6] = 17;
        assert_eq!(decap(&out), None);
    }
}
