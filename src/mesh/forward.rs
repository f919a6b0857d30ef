//! The forwarding decision of the data path (DESIGN §2), sans-IO: an IPv6 packet comes from
//! the TUN or from a tunnel, the FIB has been consulted, and this module says what to do —
//! deliver, forward with the hop limit decremented (in place), or answer with an ICMPv6
//! error (Destination Unreachable, Time Exceeded, Packet Too Big; RFC 4443), rate-limited so
//! nothing is silently black-holed yet nobody is flooded. No allocation except for the
//! (rare, rate-limited) ICMPv6 error itself.

use std::net::Ipv6Addr;
use std::time::Instant;

/// Fixed IPv6 header length.
pub const IPV6_HEADER: usize = 40;
/// The IPv6 minimum MTU: an ICMPv6 error never exceeds it (RFC 4443 §2.4 c).
pub const MIN_MTU: usize = 1280;
const NEXT_HEADER_ICMPV6: u8 = 58;

/// ICMPv6 error types.
pub mod icmp {
    /// Destination Unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet Too Big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time Exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Destination Unreachable code: no route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Time Exceeded code: hop limit exceeded in transit.
    pub const HOP_LIMIT: u8 = 0;
}

/// The fields of an IPv6 header the data path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header {
    /// Source.
    pub src: Ipv6Addr,
    /// Destination.
    pub dst: Ipv6Addr,
    /// Hop limit.
    pub hop_limit: u8,
    /// Next header.
    pub next_header: u8,
}

/// Reads the header; `None` when the bytes are not a plausible IPv6 packet (too short, not
/// version 6, or a payload length that disagrees with the bytes).
pub fn parse_header(pkt: &[u8]) -> Option<Ipv6Header> {
    let h = pkt.get(..IPV6_HEADER)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if IPV6_HEADER + payload_len != pkt.len() {
        return None;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    Some(Ipv6Header {
        src: src.into(),
        dst: dst.into(),
        hop_limit: h[7],
        next_header: h[6],
    })
}

/// What the FIB said about the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<T> {
    /// The destination is this node (its prefix).
    Local,
    /// Send to this next hop, whose largest payload is `mtu`.
    Via {
        /// The next hop (a tunnel handle).
        next: T,
        /// Largest IPv6 packet the next hop carries.
        mtu: usize,
    },
    /// No route.
    NoRoute,
}

/// The forwarding decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<T> {
    /// Write it to the TUN.
    Deliver,
    /// Send it (hop limit already decremented in the buffer) to `next`.
    Forward(T),
    /// Send this ICMPv6 error back towards the source (route it like any packet).
    Reply(Vec<u8>),
    /// Drop silently: malformed, or an error we must not or may not (rate limit) answer.
    Drop(DropReason),
}

/// Why a packet was dropped (counted by the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a valid IPv6 packet.
    Malformed,
    /// An ICMPv6 error was due but RFC 4443 forbids it (error about an error, multicast…).
    NoErrorAllowed,
    /// An ICMPv6 error was due but the rate limit is exhausted.
    RateLimited,
}

/// Token bucket for ICMPv6 errors (RFC 4443 §2.4 f).
#[derive(Debug, Clone)]
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Option<Instant>,
}

impl RateLimit {
    /// `per_sec` errors per second on average, bursts of `burst`.
    pub fn new(per_sec: f64, burst: f64) -> RateLimit {
        RateLimit {
            tokens: burst,
            burst,
            per_sec,
            last: None,
        }
    }

    /// Takes a token at `now` if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for RateLimit {
    /// 100 errors per second, bursts of 20.
    fn default() -> Self {
        RateLimit::new(100.0, 20.0)
    }
}

/// The forwarder of one node.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// This node's address (source of ICMPv6 errors).
    pub me: Ipv6Addr,
    limit: RateLimit,
}

impl Forwarder {
    /// A forwarder whose ICMPv6 errors come from `me`.
    pub fn new(me: Ipv6Addr, limit: RateLimit) -> Forwarder {
        Forwarder { me, limit }
    }

    /// Decides for `pkt`, which arrived from a tunnel (`from_tunnel`) or from the TUN.
    /// `lookup` is the FIB's answer for the packet's destination.
    pub fn decide<T>(
        &mut self,
        pkt: &mut [u8],
        from_tunnel: bool,
        lookup: Lookup<T>,
        now: Instant,
    ) -> Decision<T> {
        let Some(h) = parse_header(pkt) else {
            return Decision::Drop(DropReason::Malformed);
        };
        match lookup {
            Lookup::Local => {
                if from_tunnel {
                    Decision::Deliver
                } else {
                    // From our own TUN to ourselves: the kernel would not do this; drop.
                    Decision::Drop(DropReason::Malformed)
                }
            }
            Lookup::NoRoute => self.error(pkt, &h, icmp::DEST_UNREACHABLE, icmp::NO_ROUTE, 0, now),
            Lookup::Via { next, mtu } => {
                // Packets from our own TUN leave with the hop limit the kernel set.
                if from_tunnel {
                    if h.hop_limit <= 1 {
                        return self.error(pkt, &h, icmp::TIME_EXCEEDED, icmp::HOP_LIMIT, 0, now);
                    }
                    pkt[7] = h.hop_limit - 1;
                }
                if pkt.len() > mtu {
                    let mtu32 = u32::try_from(mtu).unwrap_or(u32::MAX);
                    if from_tunnel {
                        pkt[7] = h.hop_limit; // the error quotes the packet as received
                    }
                    return self.error(pkt, &h, icmp::PACKET_TOO_BIG, 0, mtu32, now);
                }
                Decision::Forward(next)
            }
        }
    }

    fn error<T>(
        &mut self,
        pkt: &[u8],
        h: &Ipv6Header,
        ty: u8,
        code: u8,
        param: u32,
        now: Instant,
    ) -> Decision<T> {
        if !error_allowed(pkt, h) {
            return Decision::Drop(DropReason::NoErrorAllowed);
        }
        if !self.limit.take(now) {
            return Decision::Drop(DropReason::RateLimited);
        }
        Decision::Reply(icmp_error(self.me, h.src, ty, code, param, pkt))
    }
}

/// RFC 4443 §2.4 (e): no error about an ICMPv6 error, nor to a multicast or unspecified
/// source, nor about a multicast destination (except Packet Too Big).
fn error_allowed(pkt: &[u8], h: &Ipv6Header) -> bool {
    if h.src.is_unspecified() || h.src.is_multicast() {
        return false;
    }
    if h.next_header == NEXT_HEADER_ICMPV6 {
        // ICMPv6 types < 128 are errors.
        match pkt.get(IPV6_HEADER) {
            Some(t) if *t < 128 => return false,
            None => return false,
            _ => {}
        }
    }
    true
}

/// Builds an ICMPv6 error from `src` to `dst` quoting as much of `offending` as fits in the
/// minimum MTU, with a correct checksum.
pub fn icmp_error(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ty: u8,
    code: u8,
    param: u32,
    offending: &[u8],
) -> Vec<u8> {
    let quoted = offending.len().min(MIN_MTU - IPV6_HEADER - 8);
    let icmp_len = 8 + quoted;
    let mut p = Vec::with_capacity(IPV6_HEADER + icmp_len);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(icmp_len as u16).to_be_bytes());
    p.push(NEXT_HEADER_ICMPV6);
    p.push(64);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[ty, code, 0, 0]);
    p.extend_from_slice(&param.to_be_bytes());
    p.extend_from_slice(&offending[..quoted]);
    let sum = icmpv6_checksum(&src, &dst, &p[IPV6_HEADER..]);
    p[IPV6_HEADER + 2..IPV6_HEADER + 4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// ICMPv6 checksum over the IPv6 pseudo-header and the message (checksum field zero).
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    upper_layer_checksum(src, dst, NEXT_HEADER_ICMPV6, msg)
}

/// The checksum of an upper-layer message (ICMPv6, TCP, UDP) over the IPv6 pseudo-header
/// (RFC 8200 §8.1) and the message, its checksum field zero.
pub fn upper_layer_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, next_header]);
    add(msg);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn unlimited() -> RateLimit {
        RateLimit::new(1e12, 1e12)
    }

    /// An arbitrary origin for the tests' virtual time: `Instant` has no constructor but the
    /// clock, so the test (the host here) reads it once and passes it in.
    #[allow(clippy::disallowed_methods)] // test host: the only way to get an Instant
    fn t0() -> Instant {
        Instant::now()
    }

    fn after(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn packet(src: &str, dst: &str, hop: u8, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.push(next);
        p.push(hop);
        p.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(payload);
        p
    }

    fn fwd() -> Forwarder {
        Forwarder::new("fd00::1".parse().unwrap(), unlimited())
    }

    /// RFC 1071 check, written independently: the 16-bit ones' complement sum of the
    /// pseudo-header and the message, checksum included, is 0xffff.
    fn verify_checksum(p: &[u8]) -> bool {
        let len = (p.len() - IPV6_HEADER) as u32;
        let mut words: Vec<u8> = p[8..40].to_vec();
        words.extend_from_slice(&len.to_be_bytes());
        words.extend_from_slice(&[0, 0, 0, 58]);
        words.extend_from_slice(&p[IPV6_HEADER..]);
        if words.len() % 2 == 1 {
            words.push(0);
        }
        let mut sum: u64 = words
            .chunks(2)
            .map(|c| u64::from(c[0]) << 8 | u64::from(c[1]))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn forwards_from_a_tunnel_with_the_hop_limit_decremented() {
        let mut p = packet("fd00:2::1", "fd00:3::1", 64, 17, &[0; 20]);
        let now = t0();
        assert_eq!(
            fwd().decide(&mut p, true, Lookup::Via { next: 7, mtu: 1280 }, now),
            Decision::Forward(7)
        );
        assert_eq!(p[7], 63);
        // from our own TUN the hop limit is left alone
        let mut q = packet("fd00::1", "fd00:3::1", 64, 17, &[0; 20]);
        assert_eq!(
            fwd().decide(&mut q, false, Lookup::Via { next: 7, mtu: 1280 }, now),
            Decision::Forward(7)
        );
        assert_eq!(q[7], 64);
    }

    #[test]
    fn answers_time_exceeded_no_route_and_packet_too_big() {
        let now = t0();
        let mut p = packet("fd00:2::1", "fd00:3::1", 1, 17, &[0; 20]);
        let Decision::Reply(r) =
            fwd().decide(&mut p, true, Lookup::Via { next: 1, mtu: 1280 }, now)
        else {
            panic!("no time exceeded");
        };
        let h = parse_header(&r).unwrap();
        assert_eq!(
            (h.src, h.dst),
            ("fd00::1".parse().unwrap(), "fd00:2::1".parse().unwrap())
        );
        assert_eq!((r[40], r[41]), (icmp::TIME_EXCEEDED, 0));
        assert!(verify_checksum(&r));
        assert_eq!(&r[48..], &p[..]);

        let mut p = packet("fd00:2::1", "fd00:9::1", 9, 17, &[0; 20]);
        let Decision::Reply(r) = fwd().decide::<u8>(&mut p, true, Lookup::NoRoute, now) else {
            panic!()
        };
        assert_eq!((r[40], r[41]), (icmp::DEST_UNREACHABLE, icmp::NO_ROUTE));

        let mut big = packet("fd00:2::1", "fd00:3::1", 9, 17, &[0; 1400]);
        let Decision::Reply(r) =
            fwd().decide(&mut big, true, Lookup::Via { next: 1, mtu: 1280 }, now)
        else {
            panic!()
        };
        assert_eq!(r[40], icmp::PACKET_TOO_BIG);
        assert_eq!(u32::from_be_bytes([r[44], r[45], r[46], r[47]]), 1280);
        assert_eq!(r.len(), MIN_MTU, "an error never exceeds the minimum MTU");
        assert!(verify_checksum(&r));
        assert_eq!(
            r[48 + 7],
            9,
            "the quoted packet has the hop limit as received"
        );
    }

    #[test]
    fn never_answers_an_error_with_an_error_and_respects_the_rate_limit() {
        let now = t0();
        let mut err = packet(
            "fd00:2::1",
            "fd00:9::1",
            9,
            NEXT_HEADER_ICMPV6,
            &[1, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(
            fwd().decide::<u8>(&mut err, true, Lookup::NoRoute, now),
            Decision::Drop(DropReason::NoErrorAllowed)
        );
        // an echo request (type 128) does get an answer
        let mut echo = packet(
            "fd00:2::1",
            "fd00:9::1",
            9,
            NEXT_HEADER_ICMPV6,
            &[128, 0, 0, 0, 0, 0, 0, 0],
        );
        assert!(matches!(
            fwd().decide::<u8>(&mut echo, true, Lookup::NoRoute, now),
            Decision::Reply(_)
        ));
        let mut f = Forwarder::new("fd00::1".parse().unwrap(), RateLimit::new(1.0, 2.0));
        let mut p = packet("fd00:2::1", "fd00:9::1", 9, 17, &[0; 8]);
        let replies = (0..5)
            .filter(|_| {
                matches!(
                    f.decide::<u8>(&mut p, true, Lookup::NoRoute, now),
                    Decision::Reply(_)
                )
            })
            .count();
        assert_eq!(replies, 2);
        assert!(matches!(
            f.decide::<u8>(&mut p, true, Lookup::NoRoute, after(now, 1100)),
            Decision::Reply(_)
        ));
    }

    #[test]
    fn delivers_local_traffic_and_drops_garbage() {
        let now = t0();
        let mut p = packet("fd00:2::1", "fd00::1", 9, 17, &[0; 8]);
        assert_eq!(
            fwd().decide::<u8>(&mut p, true, Lookup::Local, now),
            Decision::Deliver
        );
        let mut bad = vec![0x45; 60];
        assert_eq!(
            fwd().decide::<u8>(&mut bad, true, Lookup::NoRoute, now),
            Decision::Drop(DropReason::Malformed)
        );
        let mut short_len = packet("fd00:2::1", "fd00::1", 9, 17, &[0; 8]);
        short_len.push(0); // payload length disagrees
        assert_eq!(
            fwd().decide::<u8>(&mut short_len, true, Lookup::Local, now),
            Decision::Drop(DropReason::Malformed)
        );
    }
}
