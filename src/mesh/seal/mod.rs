//! End-to-end sealing across relays (issue 12, docs/SEALING.md), the sans-IO core: packets
//! between two nodes that are not neighbours are encrypted and authenticated by the origin
//! node for the destination node, so a relay forwards ciphertext by its clear destination.
//!
//! * [`wire`]: the sealed data and handshake datagrams;
//! * [`path`]: the data path's decisions (plain on a direct tunnel, sealed otherwise; relay
//!   by clear destination; plain packets only from the neighbour's prefix, for this node);
//! * [`replay`]: the receive window (RFC 6479, 2048 counters);
//! * [`handshake`]: Noise `XX` (25519, ChaChaPoly, BLAKE2s, via `snow`) whose payloads carry
//!   each node's certificate and its ECDSA signature over its Noise static key;
//! * [`session`]: transport keys (ring's ChaCha20-Poly1305), counters, rekey limits, and the
//!   [`session::Sealer`] that owns handshakes and sessions per far node.
//!
//! No clock is read (`now` is an argument) and randomness comes from a seed the caller gives.

pub mod handshake;
pub mod path;
pub mod replay;
pub mod session;
pub mod wire;

#[cfg(test)]
mod tests;
