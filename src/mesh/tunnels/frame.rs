//! Tunnel datagram framing (CONVENTIONS "Tunnels and MTU"): one type byte, then the payload.
//! Sans-IO.

/// Datagram type: an IPv6 packet.
pub const TYPE_IPV6: u8 = 0;
/// Datagram type: a Babel packet.
pub const TYPE_BABEL: u8 = 1;
/// Datagram type: an IPv6 packet sealed end to end for a far node ([`crate::mesh::seal`]).
pub const TYPE_SEALED: u8 = 2;
/// Datagram type: a sealing handshake message ([`crate::mesh::seal`]).
pub const TYPE_SEAL_HANDSHAKE: u8 = 3;
/// Bytes of framing in front of every payload.
pub const HEADER_LEN: usize = 1;

/// A received datagram, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// An IPv6 packet.
    Ipv6(&'a [u8]),
    /// A Babel packet.
    Babel(&'a [u8]),
}

/// Why a datagram is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Zero bytes.
    #[error("empty tunnel datagram")]
    Empty,
    /// A type this version does not know.
    #[error("unknown tunnel datagram type {0}")]
    UnknownType(u8),
    /// An IPv6 datagram that is not IPv6.
    #[error("tunnel datagram of type IPv6 does not hold an IPv6 packet")]
    NotIpv6,
}

/// Parses a datagram. IPv6 payloads must at least carry version 6 and a full fixed header.
pub fn parse(buf: &[u8]) -> Result<Datagram<'_>, FrameError> {
    let (&ty, payload) = buf.split_first().ok_or(FrameError::Empty)?;
    match ty {
        TYPE_IPV6 => {
            if payload.len() < 40 || payload[0] >> 4 != 6 {
                return Err(FrameError::NotIpv6);
            }
            Ok(Datagram::Ipv6(payload))
        }
        TYPE_BABEL => Ok(Datagram::Babel(payload)),
        other => Err(FrameError::UnknownType(other)),
    }
}

/// Writes the header for `ty` and `payload` into `out` (cleared first).
pub fn encode_into(ty: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(HEADER_LEN + payload.len());
    out.push(ty);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv6_packet() -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p
    }

    #[test]
    fn round_trips_both_types() {
        let mut out = Vec::new();
        encode_into(TYPE_IPV6, &ipv6_packet(), &mut out);
        assert_eq!(parse(&out), Ok(Datagram::Ipv6(&ipv6_packet()[..])));
        encode_into(TYPE_BABEL, b"\x2a\x02\x00\x00", &mut out);
        assert_eq!(parse(&out), Ok(Datagram::Babel(b"\x2a\x02\x00\x00")));
    }

    #[test]
    fn rejects_empty_unknown_and_non_ipv6() {
        assert_eq!(parse(&[]), Err(FrameError::Empty));
        assert_eq!(parse(&[7, 1, 2]), Err(FrameError::UnknownType(7)));
        let mut v4 = vec![TYPE_IPV6, 0x45];
        v4.extend_from_slice(&[0; 40]);
        assert_eq!(parse(&v4), Err(FrameError::NotIpv6));
        assert_eq!(parse(&[TYPE_IPV6, 0x60]), Err(FrameError::NotIpv6));
    }
}
