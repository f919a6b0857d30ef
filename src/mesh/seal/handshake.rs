//! The sealing handshake: Noise `XX` (`Noise_XX_25519_ChaChaPoly_BLAKE2s`, via `snow`) with
//! the libp2p-noise identity binding: each side's handshake payload carries its node
//! certificate (DER) and an ECDSA P-256 signature, by the certificate key, over its Noise
//! static key. Why `XX`: neither side needs the other's static key beforehand (`IK` would
//! need a directory of Noise keys); ephemeral-ephemeral DH gives forward secrecy; the
//! responder's identity is encrypted; the pattern and the binding are both reviewed designs
//! (Noise rev. 34, libp2p noise spec). The prologue binds both node addresses, so a message
//! cannot be replayed towards another node pair.
//!
//! ```text
//! -> e                     payload: initiator index (4)
//! <- e, ee, s, es          payload: responder index (4) | cert len (2) | cert | sig (64)
//! -> s, se                 payload: cert len (2) | cert | sig (64)
//! ```
//!
//! A certificate is taken when [`CertCheck`] accepts it (CA signature, validity, CRL: the
//! node's [`CertStore`]) and its node prefix contains the address the session is for.
//! Sans-IO: the ephemeral keys come from the seed the caller passes.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use ring::signature;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use crate::identity;
use crate::mesh::node::core::{CertRefused, CertStore};

/// The Noise protocol name.
pub const NOISE: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"re6mesh seal v1";
/// What a node signs with its certificate key, followed by its Noise static public key.
pub const STATIC_SIG_CONTEXT: &[u8] = b"re6mesh seal v1 noise static key:";
const SIG_LEN: usize = 64;
/// Largest Noise message (the spec's limit).
pub const MAX_NOISE: usize = 65535;

/// Checks a peer's certificate: the node's [`CertStore`] in production.
pub trait CertCheck {
    /// The certificate's node prefix when it chains to the network CA, is valid now and is
    /// not revoked.
    fn check(&mut self, der: &[u8]) -> Result<Ipv6Net, CertRefused>;
}

impl CertCheck for CertStore {
    fn check(&mut self, der: &[u8]) -> Result<Ipv6Net, CertRefused> {
        self.admit(der, false)
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Noise refused the message (tampered, wrong keys, out of order).
    #[error("noise: {0}")]
    Noise(String),
    /// The payload is not what this version sends.
    #[error("malformed handshake payload")]
    Malformed,
    /// The certificate was refused.
    #[error("certificate refused: {0}")]
    Cert(#[from] CertRefused),
    /// The certificate's prefix does not contain the address the handshake is for.
    #[error("certificate prefix {0} does not contain {1}")]
    WrongPrefix(Ipv6Net, Ipv6Addr),
    /// The signature over the Noise static key does not verify.
    #[error("bad signature over the noise static key")]
    BadSignature,
}

fn noise(e: snow::Error) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

/// This node, as the handshake presents it.
pub struct LocalIdentity {
    cert_der: Vec<u8>,
    static_private: Vec<u8>,
    static_sig: Vec<u8>,
}

impl std::fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIdentity").finish_non_exhaustive()
    }
}

impl LocalIdentity {
    /// A fresh Noise static key (from `seed`) bound to `cert_der` by `sign`, which signs
    /// with the certificate's key (ECDSA P-256, fixed 64-byte r‖s).
    pub fn new(
        cert_der: Vec<u8>,
        sign: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
        seed: [u8; 32],
    ) -> Result<LocalIdentity, HandshakeError> {
        let kp = builder(seed)?.generate_keypair().map_err(noise)?;
        let mut msg = STATIC_SIG_CONTEXT.to_vec();
        msg.extend_from_slice(&kp.public);
        let static_sig = sign(&msg).ok_or(HandshakeError::BadSignature)?;
        if static_sig.len() != SIG_LEN || cert_der.len() > usize::from(u16::MAX) {
            return Err(HandshakeError::Malformed);
        }
        Ok(LocalIdentity {
            cert_der,
            static_private: kp.private,
            static_sig,
        })
    }

    fn payload(&self, index: Option<u32>) -> Vec<u8> {
        let mut p = Vec::with_capacity(6 + self.cert_der.len() + SIG_LEN);
        if let Some(i) = index {
            p.extend_from_slice(&i.to_be_bytes());
        }
        p.extend_from_slice(&(self.cert_der.len() as u16).to_be_bytes());
        p.extend_from_slice(&self.cert_der);
        p.extend_from_slice(&self.static_sig);
        p
    }
}

/// The far node a handshake authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node prefix.
    pub prefix: Ipv6Net,
    /// Its certificate serial (lowercase hex).
    pub serial: String,
    /// Its certificate's end of validity, Unix seconds.
    pub not_after: i64,
}

/// Transport keys (Noise split), and the peer's session index.
pub struct Established {
    /// Key for what this side sends.
    pub send: [u8; 32],
    /// Key for what this side receives.
    pub recv: [u8; 32],
    /// The far node.
    pub peer: Peer,
    /// Its index for this session (the receiver index of what we send).
    pub remote_index: u32,
}

/// A handshake in progress.
pub struct Handshake {
    state: snow::HandshakeState,
    /// The address the far node must own.
    peer_addr: Ipv6Addr,
    remote_index: Option<u32>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

/// Builds message 1 from `me` towards `dst`; `index` is ours for this handshake.
pub fn initiate(
    id: &LocalIdentity,
    me: Ipv6Addr,
    dst: Ipv6Addr,
    index: u32,
    seed: [u8; 32],
) -> Result<(Handshake, Vec<u8>), HandshakeError> {
    let mut state = builder(seed)?
        .local_private_key(&id.static_private)
        .map_err(noise)?
        .prologue(&prologue(me, dst))
        .map_err(noise)?
        .build_initiator()
        .map_err(noise)?;
    let mut out = vec![0u8; 128];
    let n = state
        .write_message(&index.to_be_bytes(), &mut out)
        .map_err(noise)?;
    out.truncate(n);
    Ok((
        Handshake {
            state,
            peer_addr: dst,
            remote_index: None,
        },
        out,
    ))
}

/// Reads message 1 sent by `src` to `me` and writes message 2 with our `index`.
pub fn respond(
    id: &LocalIdentity,
    me: Ipv6Addr,
    src: Ipv6Addr,
    msg1: &[u8],
    index: u32,
    seed: [u8; 32],
) -> Result<(Handshake, Vec<u8>), HandshakeError> {
    let mut state = builder(seed)?
        .local_private_key(&id.static_private)
        .map_err(noise)?
        .prologue(&prologue(src, me))
        .map_err(noise)?
        .build_responder()
        .map_err(noise)?;
    let mut payload = vec![0u8; msg1.len()];
    let n = state.read_message(msg1, &mut payload).map_err(noise)?;
    let remote: [u8; 4] = payload[..n]
        .try_into()
        .map_err(|_| HandshakeError::Malformed)?;
    let mut out = vec![0u8; MAX_NOISE];
    let n = state
        .write_message(&id.payload(Some(index)), &mut out)
        .map_err(noise)?;
    out.truncate(n);
    Ok((
        Handshake {
            state,
            peer_addr: src,
            remote_index: Some(u32::from_be_bytes(remote)),
        },
        out,
    ))
}

impl Handshake {
    /// The far node's index, once its message carrying it was read (responder: message 1).
    pub fn remote_index(&self) -> Option<u32> {
        self.remote_index
    }

    /// Initiator: reads message 2, authenticates the responder, writes message 3.
    pub fn finish_initiator(
        mut self,
        id: &LocalIdentity,
        msg2: &[u8],
        certs: &mut dyn CertCheck,
    ) -> Result<(Established, Vec<u8>), HandshakeError> {
        let mut payload = vec![0u8; msg2.len()];
        let n = self.state.read_message(msg2, &mut payload).map_err(noise)?;
        let (idx, rest) = payload[..n]
            .split_first_chunk::<4>()
            .ok_or(HandshakeError::Malformed)?;
        let peer = self.authenticate(rest, certs)?;
        let mut out = vec![0u8; MAX_NOISE];
        let n = self
            .state
            .write_message(&id.payload(None), &mut out)
            .map_err(noise)?;
        out.truncate(n);
        let (send, recv) = self.state.dangerously_get_raw_split();
        Ok((
            Established {
                send,
                recv,
                peer,
                remote_index: u32::from_be_bytes(*idx),
            },
            out,
        ))
    }

    /// Responder: reads message 3 and authenticates the initiator.
    pub fn finish_responder(
        mut self,
        msg3: &[u8],
        certs: &mut dyn CertCheck,
    ) -> Result<Established, HandshakeError> {
        let remote_index = self.remote_index.ok_or(HandshakeError::Malformed)?;
        let mut payload = vec![0u8; msg3.len()];
        let n = self.state.read_message(msg3, &mut payload).map_err(noise)?;
        let peer = self.authenticate(&payload[..n], certs)?;
        // The initiator's first key is its sending key: ours to receive with.
        let (i_to_r, r_to_i) = self.state.dangerously_get_raw_split();
        Ok(Established {
            send: r_to_i,
            recv: i_to_r,
            peer,
            remote_index,
        })
    }

    /// Checks `cert len | cert | sig` against the remote static key Noise authenticated.
    fn authenticate(&self, p: &[u8], certs: &mut dyn CertCheck) -> Result<Peer, HandshakeError> {
        let (len, rest) = p
            .split_first_chunk::<2>()
            .ok_or(HandshakeError::Malformed)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() != len + SIG_LEN {
            return Err(HandshakeError::Malformed);
        }
        let (der, sig) = rest.split_at(len);
        let prefix = certs.check(der)?;
        if !prefix.contains(&self.peer_addr) {
            return Err(HandshakeError::WrongPrefix(prefix, self.peer_addr));
        }
        let info = identity::cert_info(der).map_err(|_| HandshakeError::Malformed)?;
        let remote_static = self
            .state
            .get_remote_static()
            .ok_or(HandshakeError::Malformed)?;
        let mut msg = STATIC_SIG_CONTEXT.to_vec();
        msg.extend_from_slice(remote_static);
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &info.public_key)
            .verify(&msg, sig)
            .map_err(|_| HandshakeError::BadSignature)?;
        Ok(Peer {
            prefix,
            serial: info.serial,
            not_after: info.not_after,
        })
    }
}

fn prologue(initiator: Ipv6Addr, responder: Ipv6Addr) -> Vec<u8> {
    let mut p = PROLOGUE.to_vec();
    p.extend_from_slice(&initiator.octets());
    p.extend_from_slice(&responder.octets());
    p
}

fn builder(seed: [u8; 32]) -> Result<snow::Builder<'static>, HandshakeError> {
    let params = NOISE.parse().map_err(noise)?;
    Ok(snow::Builder::with_resolver(
        params,
        Box::new(SeededResolver { seed }),
    ))
}

/// snow's default primitives, with randomness from the caller's seed (sans-IO).
struct SeededResolver {
    seed: [u8; 32],
}

struct SeededRng(ChaCha20Rng);

impl Random for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRng(ChaCha20Rng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}
