//! Arbitrary bytes as a received `--lan` discovery packet: parsing never panics, nothing
//! unsigned or wrongly signed is accepted on a network with MAC keys, and whatever an
//! unauthenticated network accepts survives build → parse unchanged. The property lives in
//! `re6mesh::mesh::lan_discovery::fuzz_check` so the seed corpus also runs under plain
//! `cargo test --lib lan_discovery`.
//!
//! Run: `cargo +nightly fuzz run lan_discovery /tmp/lan-corpus fuzz/corpus/lan_discovery`
//! (new inputs go to the first directory, the committed seeds stay as they are).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = re6mesh::mesh::lan_discovery::fuzz_check(data) {
        panic!("{violation}");
    }
});
