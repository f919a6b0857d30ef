//! RFC 8967 MAC authentication with RFC 9467 relaxed packet counters.
//!
//! Keys follow the registry's slots (CONVENTIONS "MAC keys"): one key signs, several keys
//! verify, and the transitional "accept unsigned" state lets unsigned packets in while a
//! network moves from no MAC to MAC. With no key at all the interface runs unauthenticated.

use std::fmt;
use std::net::SocketAddr;

use subtle::ConstantTimeEq;

use crate::wire::mac::{self as wmac, MacError, PseudoHeader};

use super::time::Time;

/// Length of the packet-counter index this engine generates.
pub const INDEX_LEN: usize = 8;
/// Length of the challenge nonces this engine generates.
pub const NONCE_LEN: usize = 16;
/// How long a Challenge Request stays valid (RFC 8967 section 4.3: 30 s).
pub const CHALLENGE_TIMEOUT_MS: u64 = 30_000;
/// Minimum spacing of Challenge Requests and Replies to one neighbour (RFC 8967: 300 ms).
pub const CHALLENGE_RATE_MS: u64 = 300;

/// An HMAC-SHA256 key. Its bytes never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct MacKey {
    id: u32,
    bytes: Vec<u8>,
}

impl MacKey {
    /// A key with a local identifier (e.g. the registry slot) used only in logs.
    pub fn new(id: u32, bytes: impl Into<Vec<u8>>) -> Self {
        MacKey {
            id,
            bytes: bytes.into(),
        }
    }

    /// The local identifier.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for MacKey {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacKey(id={}, {} bytes)", self.id, self.bytes.len())
    }
}

/// The RFC 8967 pseudo-header for a datagram.
pub fn pseudo(src: SocketAddr, dst: SocketAddr) -> PseudoHeader {
    PseudoHeader {
        src: src.ip(),
        src_port: src.port(),
        dst: dst.ip(),
        dst_port: dst.port(),
    }
}

/// The key set in force: the registry's sign/accept slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MacKeys {
    /// The key that signs outgoing packets (`None`: send unsigned).
    pub sign: Option<MacKey>,
    /// Further keys accepted on input (the sign key is always accepted too).
    pub accept: Vec<MacKey>,
    /// Transitional state: also accept packets that carry no MAC at all.
    pub accept_unsigned: bool,
}

impl MacKeys {
    /// No key: authentication off, everything accepted, nothing signed.
    pub fn none() -> Self {
        MacKeys::default()
    }

    /// Sign (and accept) with one key.
    pub fn sign(key: MacKey) -> Self {
        MacKeys {
            sign: Some(key),
            accept: Vec::new(),
            accept_unsigned: false,
        }
    }

    /// True when at least one key is configured.
    pub fn enabled(&self) -> bool {
        self.sign.is_some() || !self.accept.is_empty()
    }

    /// Every key that verifies input.
    pub fn verifying(&self) -> impl Iterator<Item = &MacKey> {
        self.sign.iter().chain(self.accept.iter())
    }
}

/// Outcome of the MAC step for one received packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacVerdict {
    /// Authentication is off on this node.
    Disabled,
    /// A MAC verified with the key of this id.
    Verified(u32),
    /// No MAC, accepted because of the "accept unsigned" state.
    UnsignedAccepted,
    /// No MAC and unsigned packets are not accepted.
    UnsignedRejected,
    /// MACs present but none verifies with any key.
    BadMac,
    /// Not a Babel packet.
    Malformed,
}

/// Checks a whole received packet's MACs against the key set.
pub fn check(keys: &MacKeys, src: SocketAddr, dst: SocketAddr, packet: &[u8]) -> MacVerdict {
    if !keys.enabled() {
        return MacVerdict::Disabled;
    }
    let all: Vec<&MacKey> = keys.verifying().collect();
    match wmac::verify(packet, &pseudo(src, dst), &all) {
        Ok(i) => MacVerdict::Verified(all.get(i).map_or(0, |k| k.id())),
        Err(MacError::NoMac) if keys.accept_unsigned => MacVerdict::UnsignedAccepted,
        Err(MacError::NoMac) => MacVerdict::UnsignedRejected,
        Err(MacError::Packet(_)) => MacVerdict::Malformed,
        Err(_) => MacVerdict::BadMac,
    }
}

/// Per-neighbour receiving state (RFC 8967 section 4.3 with RFC 9467's separate
/// counters for unicast and multicast packets).
#[derive(Clone, Debug, Default)]
pub struct RxAuth {
    /// Index of the neighbour's current counter, once a challenge succeeded.
    pub index: Option<Vec<u8>>,
    /// Highest counter accepted in a unicast packet.
    pub last_unicast: Option<u32>,
    /// Highest counter accepted in a multicast packet.
    pub last_multicast: Option<u32>,
    /// Outstanding challenge: nonce and when it was sent.
    pub challenge: Option<(Vec<u8>, Time)>,
    /// When we last sent a Challenge Request.
    pub last_request_sent: Option<Time>,
    /// When we last sent a Challenge Reply.
    pub last_reply_sent: Option<Time>,
}

/// Result of the packet-counter step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcVerdict {
    /// Known index, counter increased: accept.
    Accept,
    /// The packet answered our challenge: index learnt, accept.
    ChallengeSucceeded,
    /// Unknown or changed index and no valid reply: drop and challenge.
    Challenge,
    /// Known index, counter not increased (replay or reordering beyond RFC 9467): drop.
    Replay,
    /// A signed packet without PC TLV: drop.
    NoCounter,
}

impl RxAuth {
    /// Runs the counter check for a packet whose MAC verified.
    pub fn check(
        &mut self,
        now: Time,
        pc: Option<(u32, &[u8])>,
        replies: &[&[u8]],
        multicast: bool,
    ) -> PcVerdict {
        let Some((counter, index)) = pc else {
            return PcVerdict::NoCounter;
        };
        if let Some((nonce, sent)) = &self.challenge {
            let fresh = now.as_millis().saturating_sub(sent.as_millis()) <= CHALLENGE_TIMEOUT_MS;
            if fresh
                && replies
                    .iter()
                    .any(|r| bool::from(r.ct_eq(nonce.as_slice())))
            {
                self.index = Some(index.to_vec());
                self.last_unicast = Some(counter);
                self.last_multicast = Some(counter);
                self.challenge = None;
                return PcVerdict::ChallengeSucceeded;
            }
        }
        if self.index.as_deref() != Some(index) {
            return PcVerdict::Challenge;
        }
        let slot = if multicast {
            &mut self.last_multicast
        } else {
            &mut self.last_unicast
        };
        match *slot {
            Some(last) if counter <= last => PcVerdict::Replay,
            _ => {
                *slot = Some(counter);
                PcVerdict::Accept
            }
        }
    }

    /// Whether a Challenge Request may be sent now (rate limit); records it if so.
    pub fn may_challenge(&mut self, now: Time) -> bool {
        let ok = self
            .last_request_sent
            .is_none_or(|t| now.as_millis().saturating_sub(t.as_millis()) >= CHALLENGE_RATE_MS);
        if ok {
            self.last_request_sent = Some(now);
        }
        ok
    }

    /// Whether a Challenge Reply may be sent now (rate limit); records it if so.
    pub fn may_reply(&mut self, now: Time) -> bool {
        let ok = self
            .last_reply_sent
            .is_none_or(|t| now.as_millis().saturating_sub(t.as_millis()) >= CHALLENGE_RATE_MS);
        if ok {
            self.last_reply_sent = Some(now);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn signed(key: &MacKey, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        // Hello + PC, as babeld sends them.
        let mut p = hex("2a020016040600000001019011 0c000000011122334455667788"
            .replace(' ', "")
            .as_str());
        wmac::sign_vec(&mut p, &pseudo(src, dst), key.bytes()).unwrap();
        p
    }

    #[test]
    fn verifies_with_any_accepted_key_and_rejects_others() {
        let k1 = MacKey::new(
            1,
            hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        );
        let k2 = MacKey::new(2, vec![0xff; 32]);
        let src: SocketAddr = "[fe80::c047:f6ff:fe20:f1f4]:6696".parse().unwrap();
        let dst: SocketAddr = "[ff02::1:6]:6696".parse().unwrap();
        let p = signed(&k1, src, dst);
        let keys = MacKeys {
            sign: Some(k2.clone()),
            accept: vec![k1.clone()],
            accept_unsigned: false,
        };
        assert_eq!(check(&keys, src, dst, &p), MacVerdict::Verified(1));
        assert_eq!(check(&MacKeys::sign(k2), src, dst, &p), MacVerdict::BadMac);
        let other: SocketAddr = "[fe80::1]:6696".parse().unwrap();
        assert_eq!(
            check(&MacKeys::sign(k1), other, dst, &p),
            MacVerdict::BadMac,
            "pseudo-header covered"
        );
    }

    #[test]
    fn unsigned_accepted_only_in_transition_state() {
        let src: SocketAddr = "[fe80::1]:6696".parse().unwrap();
        let dst: SocketAddr = "[ff02::1:6]:6696".parse().unwrap();
        let unsigned = hex("2a02000804060000000101 90".replace(' ', "").as_str());
        let mut keys = MacKeys::sign(MacKey::new(1, vec![1; 32]));
        assert_eq!(
            check(&keys, src, dst, &unsigned),
            MacVerdict::UnsignedRejected
        );
        keys.accept_unsigned = true;
        assert_eq!(
            check(&keys, src, dst, &unsigned),
            MacVerdict::UnsignedAccepted
        );
        let wrong = signed(&MacKey::new(9, vec![9; 32]), src, dst);
        assert_eq!(
            check(&keys, src, dst, &wrong),
            MacVerdict::BadMac,
            "a bad MAC is never 'unsigned'"
        );
        assert_eq!(
            check(&MacKeys::none(), src, dst, &wrong),
            MacVerdict::Disabled
        );
    }

    #[test]
    fn counters_are_relaxed_per_unicast_and_multicast() {
        let mut rx = RxAuth::default();
        let t = Time::from_millis(1000);
        assert_eq!(
            rx.check(t, Some((5, b"idx1")), &[], true),
            PcVerdict::Challenge
        );
        rx.challenge = Some((b"nonce".to_vec(), t));
        assert_eq!(
            rx.check(t, Some((7, b"idx1")), &[b"nonce"], false),
            PcVerdict::ChallengeSucceeded
        );
        assert_eq!(
            rx.check(t, Some((6, b"idx1")), &[], true),
            PcVerdict::Replay
        );
        assert_eq!(
            rx.check(t, Some((9, b"idx1")), &[], false),
            PcVerdict::Accept
        );
        // a multicast packet sent before the unicast one, delivered late (RFC 9467)
        assert_eq!(
            rx.check(t, Some((8, b"idx1")), &[], true),
            PcVerdict::Accept
        );
        assert_eq!(
            rx.check(t, Some((8, b"idx1")), &[], true),
            PcVerdict::Replay
        );
        assert_eq!(
            rx.check(t, Some((10, b"idx2")), &[], true),
            PcVerdict::Challenge
        );
        assert_eq!(rx.check(t, None, &[], true), PcVerdict::NoCounter);
        // stale reply
        rx.challenge = Some((b"n2".to_vec(), t));
        let late = Time::from_millis(1000 + CHALLENGE_TIMEOUT_MS + 1);
        assert_eq!(
            rx.check(late, Some((1, b"idx3")), &[b"n2"], true),
            PcVerdict::Challenge
        );
    }
}
