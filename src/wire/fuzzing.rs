//! The property the `babel_packet` fuzz target checks, as a plain function so
//! the seed corpus also runs in ordinary `cargo test` (no nightly needed).

use std::net::{IpAddr, Ipv6Addr};

use super::emit::{EmitConfig, emit_packets};
use super::mac::{self, PseudoHeader};
use super::message::{ParseOptions, parse_packet};
use super::packet::{Packet, PacketRepr};
use super::{BABEL_MULTICAST_V6, BABEL_PORT};

/// Source address the check pretends packets came from.
pub const FUZZ_SOURCE: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));

/// Parses `data`; if it parses, checks that
/// 1. the lossless TLV layer re-emits the exact input bytes, and
/// 2. emitting the resolved messages and parsing the result gives the same
///    messages back with nothing ignored (both parser modes).
///
/// Returns a description of the first violation. Never panics on any input.
pub fn check_packet(data: &[u8]) -> Result<(), String> {
    // MAC verification must cope with anything.
    let pseudo = PseudoHeader {
        src: FUZZ_SOURCE,
        src_port: BABEL_PORT,
        dst: IpAddr::V6(BABEL_MULTICAST_V6),
        dst_port: BABEL_PORT,
    };
    let _ = mac::verify(data, &pseudo, &[[0u8; 32]]);

    let packet = Packet::new_checked(data);
    if let Some(repr) = packet.as_ref().ok().and_then(|p| PacketRepr::parse(p).ok()) {
        let mut buf = vec![0u8; repr.buffer_len()];
        let n = repr
            .emit(&mut buf)
            .map_err(|e| format!("emit failed: {e}"))?;
        if buf.get(..n) != Some(data) {
            return Err("lossless re-emission differs from the input".into());
        }
    }

    for options in [
        ParseOptions::default(),
        ParseOptions {
            source_specific: true,
        },
    ] {
        let Ok(parsed) = parse_packet(data, FUZZ_SOURCE, &options) else {
            continue;
        };
        let config = EmitConfig {
            max_len: 1400,
            source: FUZZ_SOURCE,
            trailer_reserve: mac::MAC_TLV_LEN,
        };
        let packets = emit_packets(&parsed.messages, config, None)
            .map_err(|e| format!("cannot emit parsed messages: {e}"))?;
        let mut again = Vec::with_capacity(parsed.messages.len());
        for p in &packets {
            let reparsed = parse_packet(p, FUZZ_SOURCE, &options)
                .map_err(|e| format!("emitted packet does not parse: {e}"))?;
            if !reparsed.ignored.is_empty() {
                return Err(format!(
                    "emitted packet has ignored TLVs: {:?}",
                    reparsed.ignored
                ));
            }
            again.extend(reparsed.messages);
        }
        if again != parsed.messages {
            return Err(format!(
                "round trip changed messages:\n  before {:?}\n  after  {:?}",
                parsed.messages, again
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_signature_seed_passes_and_carries_its_signature() {
        let seed = include_bytes!("../../fuzz/corpus/babel_packet/re6mesh-update-route-signature");
        check_packet(seed).unwrap();
        let src = "fe80::1".parse().unwrap();
        let parsed = crate::wire::parse_packet(seed, src, &Default::default()).unwrap();
        let sig: [u8; 64] = std::array::from_fn(|i| i as u8);
        assert!(matches!(
            &parsed.messages[..],
            [crate::wire::Message::Update(u)] if u.signature == Some(sig) && u.seqno == 77
        ));
    }
}
