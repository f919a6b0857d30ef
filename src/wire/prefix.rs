//! Addresses, prefixes and router-ids as the rest of the crate sees them.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 prefix in canonical form: every bit past `len` is zero.
///
/// Built with [`Prefix::new`], which masks the host bits and refuses a length
/// longer than the address, so two `Prefix` values that name the same network
/// always compare equal. `Display` prints CIDR (`2001:db8:a::/64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix `addr/len`, host bits cleared; `None` if `len` exceeds
    /// 32 (IPv4) or 128 (IPv6).
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return None;
                }
                let bits = u32::from(a) & mask_u32(len);
                Some(Prefix {
                    addr: IpAddr::V4(Ipv4Addr::from(bits)),
                    len,
                })
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return None;
                }
                let bits = u128::from(a) & mask_u128(len);
                Some(Prefix {
                    addr: IpAddr::V6(Ipv6Addr::from(bits)),
                    len,
                })
            }
        }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for a zero-length prefix (`0.0.0.0/0`, `::/0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if this is an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// True if `addr` lies inside this prefix (different families never match).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => u32::from(a) & mask_u32(self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask_u128(self.len) == u128::from(net)
            }
            _ => false,
        }
    }

    /// Number of address bytes needed to carry `len` bits on the wire.
    pub(crate) fn wire_bytes(&self) -> usize {
        usize::from(self.len).div_ceil(8)
    }

    /// The address as 4 or 16 network-order bytes in a 16-byte array,
    /// with the number of meaningful bytes.
    pub(crate) fn addr_bytes(&self) -> ([u8; 16], usize) {
        addr_bytes(self.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Error from parsing a CIDR string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a CIDR prefix (expected ADDR/LEN with LEN <= 32 for IPv4, <= 128 for IPv6)")]
pub struct PrefixParseError;

impl core::str::FromStr for Prefix {
    type Err = PrefixParseError;
    fn from_str(s: &str) -> Result<Prefix, PrefixParseError> {
        let (a, l) = s.split_once('/').ok_or(PrefixParseError)?;
        let addr: IpAddr = a.parse().map_err(|_| PrefixParseError)?;
        let len: u8 = l.parse().map_err(|_| PrefixParseError)?;
        Prefix::new(addr, len).ok_or(PrefixParseError)
    }
}

/// A Babel router-id: 8 opaque bytes (RFC 8966 section 3.2.1).
///
/// All-zeros and all-ones are reserved and never valid in a Router-Id TLV.
/// `Display` prints `xx:xx:xx:xx:xx:xx:xx:xx` as CONVENTIONS.md requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RouterId(pub [u8; 8]);

impl RouterId {
    /// True for the two values RFC 8966 forbids (all zeros, all ones).
    pub fn is_reserved(&self) -> bool {
        self.0 == [0; 8] || self.0 == [0xff; 8]
    }
}

impl fmt::Display for RouterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

fn mask_u32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn mask_u128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

/// `addr` as bytes in a 16-byte array plus the count of meaningful bytes.
pub(crate) fn addr_bytes(addr: IpAddr) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (out, 4)
        }
        IpAddr::V6(a) => {
            out.copy_from_slice(&a.octets());
            (out, 16)
        }
    }
}

/// True for an address in fe80::/64, the only link-local addresses AE 3 can carry.
pub(crate) fn is_ae3_link_local(addr: &Ipv6Addr) -> bool {
    let o = addr.octets();
    o[..8] == [0xfe, 0x80, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_host_bits() {
        let p = Prefix::new("198.51.100.77".parse().unwrap(), 26).unwrap();
        assert_eq!(p.to_string(), "198.51.100.64/26");
        let p = Prefix::new("2001:db8:a::1".parse().unwrap(), 64).unwrap();
        assert_eq!(p.to_string(), "2001:db8:a::/64");
        let p = Prefix::new("2001:db8:a::1".parse().unwrap(), 0).unwrap();
        assert_eq!(p.to_string(), "::/0");
    }

    #[test]
    fn rejects_overlong_prefix_length() {
        assert!(Prefix::new("10.0.0.0".parse().unwrap(), 33).is_none());
        assert!(Prefix::new("::".parse().unwrap(), 129).is_none());
        assert!("::/172".parse::<Prefix>().is_err());
    }

    #[test]
    fn parses_cidr_and_contains() {
        let p: Prefix = "2001:db8:b::/64".parse().unwrap();
        assert!(p.contains("2001:db8:b::1".parse().unwrap()));
        assert!(!p.contains("2001:db8:c::1".parse().unwrap()));
        assert!(!p.contains("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn router_id_displays_colon_hex() {
        let id = RouterId([0, 0, 0, 0, 0xc6, 0x33, 0x64, 0x41]);
        assert_eq!(id.to_string(), "00:00:00:00:c6:33:64:41");
        assert!(RouterId([0; 8]).is_reserved());
    }
}
