//! IPv4 headers for the data path (issue 15, IPv4 over the mesh): a small zero-copy reading
//! of the fields the forwarder needs, the in-place TTL decrement with its incremental checksum
//! update (RFC 1624), and the Internet checksum (RFC 1071).
//!
//! Hand-written like the IPv6 one (`mesh::forward::parse_header`) rather than taken from
//! etherparse: the data path reads five fields and edits two in place without allocating,
//! which is a few lines here, and the whole of it is fuzzed (`fuzz/fuzz_targets/ipv4_header.rs`).
//! Sans-IO.

use std::net::Ipv4Addr;

/// The shortest IPv4 header (no options).
pub const MIN_HEADER: usize = 20;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Offset of the TTL byte.
pub const TTL_OFFSET: usize = 8;
/// Offset of the header checksum.
pub const CHECKSUM_OFFSET: usize = 10;

/// The fields of an IPv4 header the data path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// Protocol (the payload's).
    pub protocol: u8,
    /// Header length in bytes (options included).
    pub header_len: usize,
    /// The Don't Fragment flag.
    pub dont_fragment: bool,
    /// The fragment offset is not zero (not the packet's first fragment).
    pub later_fragment: bool,
}

/// Reads the header of `pkt`; `None` when the bytes are not a plausible IPv4 packet: too
/// short, not version 4, a header length under 20 bytes or past the end, a total length
/// that disagrees with the bytes, or a bad header checksum.
pub fn parse(pkt: &[u8]) -> Option<Ipv4Header> {
    let first = *pkt.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < MIN_HEADER {
        return None;
    }
    let h = pkt.get(..header_len)?;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if total != pkt.len() || checksum(h) != 0 {
        return None;
    }
    let flags = u16::from_be_bytes([h[6], h[7]]);
    Some(Ipv4Header {
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        ttl: h[TTL_OFFSET],
        protocol: h[9],
        header_len,
        dont_fragment: flags & 0x4000 != 0,
        later_fragment: flags & 0x1fff != 0,
    })
}

/// The Internet checksum of `bytes` (RFC 1071): zero over a header whose checksum is right.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sets the TTL of the (already parsed) packet `pkt` to `ttl` and updates the header checksum
/// incrementally (RFC 1624, eqn. 3), without reading the rest of the header. `false` (and
/// nothing changed) when `pkt` is shorter than a header.
pub fn set_ttl(pkt: &mut [u8], ttl: u8) -> bool {
    if pkt.len() < MIN_HEADER {
        return false;
    }
    let old_word = u16::from_be_bytes([pkt[TTL_OFFSET], pkt[TTL_OFFSET + 1]]);
    let new_word = u16::from_be_bytes([ttl, pkt[TTL_OFFSET + 1]]);
    let old_sum = u16::from_be_bytes([pkt[CHECKSUM_OFFSET], pkt[CHECKSUM_OFFSET + 1]]);
    // HC' = ~(~HC + ~m + m')
    let mut sum = u32::from(!old_sum) + u32::from(!old_word) + u32::from(new_word);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    pkt[TTL_OFFSET] = ttl;
    pkt[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    true
}

/// Writes a 20-byte IPv4 header (no options, DF clear, TTL 64) in front of a payload of
/// `payload_len` bytes into `out`, with its checksum.
pub fn emit_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
    out: &mut Vec<u8>,
) {
    let total = u16::try_from(MIN_HEADER + payload_len).unwrap_or(u16::MAX);
    let start = out.len();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 64, protocol, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let sum = checksum(&out[start..]);
    out[start + CHECKSUM_OFFSET..start + CHECKSUM_OFFSET + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Fuzzing entry (`fuzz/fuzz_targets/ipv4_header.rs`): the parser on arbitrary bytes; on a
/// packet it accepts, the TTL rewrite keeps it valid, and an ICMPv4 error about it parses.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) {
    let Some(h) = parse(data) else {
        return;
    };
    assert!(h.header_len >= MIN_HEADER && h.header_len <= data.len());
    let mut copy = data.to_vec();
    let ttl = h.ttl.wrapping_sub(1);
    assert!(set_ttl(&mut copy, ttl));
    let again = parse(&copy).expect("a TTL rewrite keeps the packet valid");
    assert_eq!(again, Ipv4Header { ttl, ..h });
    let err = crate::mesh::forward_v4::icmp_error(h.dst, h.src, 11, 0, 0, data);
    let e = parse(&err).expect("an ICMPv4 error parses");
    assert_eq!((e.src, e.dst, e.protocol), (h.dst, h.src, PROTO_ICMP));
    assert_eq!(checksum(&err[MIN_HEADER..]), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn packet(ttl: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        emit_header(
            Ipv4Addr::new(10, 42, 0, 1),
            Ipv4Addr::new(10, 42, 0, 3),
            17,
            payload.len(),
            &mut p,
        );
        set_ttl(&mut p, ttl);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn fuzz_seeds_hold() {
        for f in std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/ipv4_header"
        ))
        .unwrap()
        {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            fuzz_check(&bytes);
        }
        fuzz_check(&packet(1, b"payload"));
        fuzz_check(&packet(0, b""));
    }

    #[test]
    fn parses_what_it_emits() {
        let p = packet(9, b"hello");
        let h = parse(&p).unwrap();
        assert_eq!(h.src, Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(h.dst, Ipv4Addr::new(10, 42, 0, 3));
        assert_eq!((h.ttl, h.protocol, h.header_len), (9, 17, 20));
        assert!(!h.dont_fragment && !h.later_fragment);
    }

    #[test]
    fn ttl_update_keeps_the_checksum_right() {
        for ttl in [0u8, 1, 2, 63, 64, 128, 255] {
            let mut p = packet(ttl, b"x");
            for new in [0u8, 1, ttl.wrapping_sub(1), 255] {
                assert!(set_ttl(&mut p, new));
                assert_eq!(checksum(&p[..20]), 0, "{ttl} -> {new}");
                assert_eq!(parse(&p).unwrap().ttl, new);
            }
        }
        assert!(!set_ttl(&mut [0u8; 19], 1));
    }

    #[test]
    fn refuses_what_is_not_an_ipv4_packet() {
        let p = packet(9, b"hello");
        assert!(parse(&p[..p.len() - 1]).is_none());
        let mut bad = p.clone();
        bad[12] ^= 1; // checksum no longer matches
        assert!(parse(&bad).is_none());
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert!(parse(&v6).is_none());
        let mut short_ihl = p.clone();
        short_ihl[0] = 0x44;
        assert!(parse(&short_ihl).is_none());
        let mut long_ihl = p;
        long_ihl[0] = 0x4f;
        assert!(parse(&long_ihl).is_none());
        assert!(parse(&[]).is_none());
    }
}
