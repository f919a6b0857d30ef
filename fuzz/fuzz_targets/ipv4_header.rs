//! The data path's IPv4 header view (IPv4 over the mesh, issue 15): parse, TTL rewrite with
//! its incremental checksum, and the ICMPv4 error quoting the packet.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    re6mesh::wire::ipv4::fuzz_check(data);
});
