//! What a relay or a far node parses of a sealed datagram (docs/SEALING.md): the clear
//! route, data frames, handshake frames, and the relay's in-place hop limit rewrite;
//! emit ∘ parse must give the same bytes back.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6mesh::mesh::seal::wire::fuzz_check(data);
});
