//! RFC 8967 MAC authentication, HMAC-SHA256.
//!
//! ```text
//! MAC = HMAC-SHA256(key, pseudo-header || packet[0 .. 4 + body length])
//! pseudo-header = src address (16) || src port (2) || dst address (16) || dst port (2)
//! ```
//!
//! The MAC covers the header and body, not the trailer, which holds the MAC
//! TLVs themselves (type 16, length 32): a packet may carry one per key and
//! a receiver accepts it if any MAC matches any of its keys. No key id is on
//! the wire. IPv4 addresses enter the pseudo-header as IPv4-mapped IPv6
//! addresses (`::ffff:a.b.c.d`), as babeld and BIRD do (both keep 16-byte
//! addresses internally); every capture in `shared/testdata/babel` is IPv6, so
//! only that case is checked against other implementations.
//!
//! Signing works in place in the caller's buffer and allocates nothing.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::Error;
use super::packet::{HEADER_LEN, Packet};
use super::tlv::{TlvIter, kind};

/// Length of an HMAC-SHA256 MAC.
pub const MAC_LEN: usize = 32;
/// Length of a MAC TLV carrying an HMAC-SHA256 MAC (type, length, MAC).
pub const MAC_TLV_LEN: usize = 2 + MAC_LEN;
/// Length of the pseudo-header.
pub const PSEUDO_HEADER_LEN: usize = 36;

/// Addresses and ports of the datagram, as they enter the MAC.
///
/// For multicast the destination is `ff02::1:6`. babeld uses its protocol
/// port (6696) for both ports whatever the real source port: send from 6696.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PseudoHeader {
    /// Source address.
    pub src: IpAddr,
    /// Source UDP port.
    pub src_port: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination UDP port.
    pub dst_port: u16,
}

impl PseudoHeader {
    /// The 36 pseudo-header bytes.
    pub fn to_bytes(&self) -> [u8; PSEUDO_HEADER_LEN] {
        let mut out = [0u8; PSEUDO_HEADER_LEN];
        out[0..16].copy_from_slice(&ip16(self.src));
        out[16..18].copy_from_slice(&self.src_port.to_be_bytes());
        out[18..34].copy_from_slice(&ip16(self.dst));
        out[34..36].copy_from_slice(&self.dst_port.to_be_bytes());
        out
    }
}

fn ip16(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Why a MAC could not be made or checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// The packet itself is unusable (peer's fault on receive, caller's on send).
    #[error("bad Babel packet: {0}")]
    Packet(#[from] Error),
    /// The trailer has no MAC TLV (an unsigned packet).
    #[error("packet carries no MAC")]
    NoMac,
    /// No MAC in the trailer matches any of the keys.
    #[error("no MAC matches any configured key")]
    Mismatch,
    /// The signing buffer has no room for the MAC TLV.
    #[error("no room in the buffer for the MAC TLV")]
    BufferTooSmall,
    /// The key was refused by the HMAC implementation (cannot happen for
    /// HMAC-SHA256, which takes keys of any length).
    #[error("unusable MAC key")]
    BadKey,
}

/// HMAC-SHA256 of pseudo-header and `header_and_body` (the first
/// `4 + body length` bytes of the packet).
pub fn compute(
    key: &[u8],
    pseudo: &PseudoHeader,
    header_and_body: &[u8],
) -> Result<[u8; MAC_LEN], MacError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| MacError::BadKey)?;
    mac.update(&pseudo.to_bytes());
    mac.update(header_and_body);
    Ok(mac.finalize().into_bytes().into())
}

/// Appends a MAC TLV for `key` to the packet in `buf[..len]` (header, body
/// and possibly MAC TLVs of other keys already in the trailer) and returns
/// the new length. Nothing is allocated; `buf` needs `len + 34` bytes.
pub fn sign(
    buf: &mut [u8],
    len: usize,
    pseudo: &PseudoHeader,
    key: &[u8],
) -> Result<usize, MacError> {
    let packet_bytes = buf.get(..len).ok_or(MacError::BufferTooSmall)?;
    let packet = Packet::new_checked(packet_bytes)?;
    let covered = HEADER_LEN + usize::from(packet.body_len());
    let mac = compute(key, pseudo, packet.header_and_body())?;
    let end = len + MAC_TLV_LEN;
    let dst = buf.get_mut(len..end).ok_or(MacError::BufferTooSmall)?;
    debug_assert!(covered <= len);
    dst[0] = kind::MAC;
    dst[1] = MAC_LEN as u8;
    dst[2..].copy_from_slice(&mac);
    Ok(end)
}

/// [`sign`] for a packet held in a `Vec` (as [`super::Emitter`] returns them).
pub fn sign_vec(packet: &mut Vec<u8>, pseudo: &PseudoHeader, key: &[u8]) -> Result<(), MacError> {
    let len = packet.len();
    packet.resize(len + MAC_TLV_LEN, 0);
    match sign(packet, len, pseudo, key) {
        Ok(_) => Ok(()),
        Err(e) => {
            packet.truncate(len);
            Err(e)
        }
    }
}

/// Verifies a received packet: `Ok(i)` when some MAC TLV of the trailer
/// matches `keys[i]` (the first such key). Each candidate comparison is
/// constant-time. MAC TLVs of another length than 32 never match.
pub fn verify<K: AsRef<[u8]>>(
    packet: &[u8],
    pseudo: &PseudoHeader,
    keys: &[K],
) -> Result<usize, MacError> {
    let packet = Packet::new_checked(packet)?;
    let macs = || {
        TlvIter::new(packet.trailer_slice())
            .map_while(Result::ok)
            .filter(|t| t.tlv_type() == kind::MAC && usize::from(t.length()) == MAC_LEN)
    };
    if macs().next().is_none() {
        return Err(MacError::NoMac);
    }
    for (i, key) in keys.iter().enumerate() {
        let expected = compute(key.as_ref(), pseudo, packet.header_and_body())?;
        let mut matched = false;
        for tlv in macs() {
            matched |= bool::from(expected[..].ct_eq(tlv.value_slice()));
        }
        if matched {
            return Ok(i);
        }
    }
    Err(MacError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '|')
            .collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn good_key() -> Vec<u8> {
        (0u8..32).collect()
    }

    // README worked example 1 (r1 a-b frame 1).
    fn example1() -> (PseudoHeader, Vec<u8>, Vec<u8>) {
        let pseudo = PseudoHeader {
            src: "fe80::c047:f6ff:fe20:f1f4".parse().unwrap(),
            src_port: 6696,
            dst: "ff02::1:6".parse().unwrap(),
            dst_port: 6696,
        };
        let body = hex("2a02001a 0406 0000 e80c 0190 | 0902 0000 | 110c 00000000 17e29e3e58a9654f");
        let mac = hex("28b1d27bc0d4a7ed513834bb43e62ea4258078b0661be8949a40144ec76e7318");
        (pseudo, body, mac)
    }

    #[test]
    fn builds_pseudo_header_bytes() {
        let (pseudo, _, _) = example1();
        assert_eq!(
            pseudo.to_bytes().to_vec(),
            hex("fe80000000000000c047f6fffe20f1f4 1a28 ff020000000000000000000000010006 1a28")
        );
    }

    #[test]
    fn signs_worked_example_in_place() {
        let (pseudo, packet, mac) = example1();
        let mut buf = [0u8; 128];
        buf[..packet.len()].copy_from_slice(&packet);
        let n = sign(&mut buf, packet.len(), &pseudo, &good_key()).unwrap();
        assert_eq!(n, packet.len() + 34);
        assert_eq!(&buf[packet.len()..packet.len() + 2], &[0x10, 0x20]);
        assert_eq!(&buf[packet.len() + 2..n], &mac[..]);
        assert_eq!(
            verify(&buf[..n], &pseudo, &[[0xffu8; 32].to_vec(), good_key()]),
            Ok(1)
        );
    }

    #[test]
    fn rejects_wrong_key_missing_mac_and_tampering() {
        let (pseudo, packet, _) = example1();
        let mut signed = packet.clone();
        sign_vec(&mut signed, &pseudo, &good_key()).unwrap();
        assert_eq!(
            verify(&signed, &pseudo, &[[0xffu8; 32]]),
            Err(MacError::Mismatch)
        );
        assert_eq!(
            verify(&packet, &pseudo, &[good_key()]),
            Err(MacError::NoMac)
        );
        let mut tampered = signed.clone();
        tampered[9] ^= 1;
        assert_eq!(
            verify(&tampered, &pseudo, &[good_key()]),
            Err(MacError::Mismatch)
        );
        let mut other = pseudo;
        other.src_port = 6697;
        assert_eq!(
            verify(&signed, &other, &[good_key()]),
            Err(MacError::Mismatch)
        );
    }

    #[test]
    fn refuses_to_sign_without_room() {
        let (pseudo, packet, _) = example1();
        let mut buf = packet.clone();
        let len = buf.len();
        assert_eq!(
            sign(&mut buf, len, &pseudo, &good_key()),
            Err(MacError::BufferTooSmall)
        );
    }

    #[test]
    fn maps_ipv4_to_ipv4_mapped_ipv6() {
        let p = PseudoHeader {
            src: "192.0.2.1".parse().unwrap(),
            src_port: 6696,
            dst: "192.0.2.2".parse().unwrap(),
            dst_port: 6696,
        };
        let b = p.to_bytes();
        assert_eq!(&b[..16], &hex("00000000000000000000ffffc0000201")[..]);
    }
}
