//! Arbitrary bytes as a Babel packet: parsing never panics; whatever parses
//! re-emits byte-exact at the TLV layer, and its resolved messages survive
//! emit → parse unchanged. The property lives in `re6mesh::wire::fuzzing` so
//! the seed corpus also runs under plain `cargo test`.
//!
//! Run: `cargo +nightly fuzz run babel_packet /tmp/babel-corpus fuzz/corpus/babel_packet`
//! (new inputs go to the first directory, the committed seeds stay as they are).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = re6mesh::wire::fuzzing::check_packet(data) {
        panic!("{violation}");
    }
});
