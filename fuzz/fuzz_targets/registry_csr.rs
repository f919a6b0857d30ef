//! The registry's CSR parser (bytes from the network, in `POST /api/v1/join` and `renew`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = re6mesh::registry::ca::csr_public_key(data) {
        // only P-256 keys ever get through
        assert_eq!(key.raw.len(), 65);
        assert_eq!(key.raw[0], 4);
    }
});
