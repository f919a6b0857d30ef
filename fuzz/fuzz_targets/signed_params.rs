//! Signed network parameters as they arrive from the registry or a peer: transport JSON,
//! base64, signature check, document parse.
#![no_main]
use libfuzzer_sys::fuzz_target;
use re6mesh::params::{NetworkParams, SignedParams, SignedParamsJson};

// A CA certificate from the seed corpus run (any valid P-256 certificate works here).
const CA_DER: &[u8] = include_bytes!("../data/signed_params_ca.der");

fuzz_target!(|data: &[u8]| {
    if let Ok(j) = serde_json::from_slice::<SignedParamsJson>(data)
        && let Ok(sp) = SignedParams::from_json(&j)
    {
        let _ = sp.verify(CA_DER);
    }
    let _ = serde_json::from_slice::<NetworkParams>(data);
});
