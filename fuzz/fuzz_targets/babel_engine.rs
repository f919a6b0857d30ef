//! Stateful target: arbitrary sequences of packets (structured or raw, signed or not,
//! from LAN neighbours or the tunnel peer), time advances and commands fed to a Babel
//! engine wired to a second engine over a tunnel; RFC 9616 timestamps and Acknowledgment
//! Requests are on, and the messages include timestamps, Ack Requests and Acks, unicast
//! and multicast Hellos. No panic, and after every operation
//! the FIB matches the selection and every selected route is feasible and finite (see
//! `re6mesh::mesh::babel::fuzzing`, which also runs the seeds under `cargo test`).
//!
//! Run: `cargo +nightly fuzz run babel_engine /tmp/babel-engine-corpus fuzz/corpus/babel_engine`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = re6mesh::mesh::babel::fuzzing::check_engine(data) {
        panic!("{violation}");
    }
});
