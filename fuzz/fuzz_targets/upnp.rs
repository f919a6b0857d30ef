//! Arbitrary bytes as what a UPnP gateway sends: an SSDP search answer, a device description
//! and a SOAP answer. Parsing never panics, stays bounded, and whatever is accepted is well
//! formed (a control URL with a path, one of the asked-for services, a usable external
//! address). The property lives in `re6mesh::mesh::upnp::fuzz_check` so the seed corpus
//! (miniupnpd 2.3.1's real answers) also runs under plain `cargo test --lib upnp`.
//!
//! Run: `cargo +nightly fuzz run upnp /tmp/upnp-corpus fuzz/corpus/upnp`
//! (new inputs go to the first directory, the committed seeds stay as they are).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = re6mesh::mesh::upnp::fuzz_check(data) {
        panic!("{violation}");
    }
});
