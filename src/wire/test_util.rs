//! Helpers shared by the wire-format unit tests: wrapping a body in a packet,
//! resolving it as a receiver would, and the body the sender builds.

use std::net::{IpAddr, Ipv6Addr};

use super::emit::{EmitConfig, PcState, emit_packets};
use super::message::{Message, ParseOptions, ParsedPacket, parse_packet};
use super::packet::Packet;

/// Source of the packets under test: babeld "a" in the captures,
/// fe80::c047:f6ff:fe20:f1f4. It is also the receiver's initial next hop.
pub(crate) const SRC: IpAddr = IpAddr::V6(Ipv6Addr::new(
    0xfe80, 0, 0, 0, 0xc047, 0xf6ff, 0xfe20, 0xf1f4,
));

/// A Babel packet: header (magic 42, version 2, body length) and `body`, no trailer.
pub(crate) fn packet(body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("test body fits a packet");
    let mut p = vec![42, 2];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// `body` as a receiver resolves it, from [`SRC`], default options.
pub(crate) fn resolve(body: &[u8]) -> ParsedPacket {
    resolve_with(body, &ParseOptions::default())
}

/// `body` as a receiver resolves it, from [`SRC`].
pub(crate) fn resolve_with(body: &[u8], options: &ParseOptions) -> ParsedPacket {
    parse_packet(&packet(body), SRC, options).expect("the header is valid")
}

/// The body of the one packet the emitter builds from `messages`, sent from
/// [`SRC`], with a PC TLV when `pc` is given.
pub(crate) fn emitted_body(messages: &[Message], pc: Option<&mut PcState>) -> Vec<u8> {
    let config = EmitConfig {
        max_len: 1400,
        source: SRC,
        trailer_reserve: 0,
    };
    let packets = emit_packets(messages, config, pc).expect("the messages can be sent");
    let [only] = &packets[..] else {
        panic!("expected one packet, got {}", packets.len())
    };
    let view = Packet::new_checked(&only[..]).expect("the emitter builds valid packets");
    assert!(view.trailer().is_empty());
    view.body().to_vec()
}
