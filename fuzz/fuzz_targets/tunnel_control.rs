//! What a neighbour sends on a tunnel: datagram framing, the control stream (length-prefixed
//! JSON, split anywhere), and the signed parameters and CRL a `params` message carries.
#![no_main]
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use re6mesh::mesh::netstate::verify_crl;
use re6mesh::mesh::tunnels::control::{ControlMsg, Decoder};
use re6mesh::mesh::tunnels::frame;
use re6mesh::params::SignedParams;

// Any valid P-256 CA certificate (the one of the signed_params target).
const CA_DER: &[u8] = include_bytes!("../data/signed_params_ca.der");

fuzz_target!(|data: &[u8]| {
    let _ = frame::parse(data);
    // the first byte chooses where the stream is split
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let mut d = Decoder::default();
    for chunk in [&rest[..at], &rest[at..]] {
        d.push(chunk);
        while let Ok(Some(msg)) = d.next_message() {
            if let ControlMsg::Params { params, crl } = msg {
                if let Ok(sp) = SignedParams::from_json(&params) {
                    let _ = sp.verify(CA_DER);
                }
                if let Some(der) = crl.and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok()) {
                    let _ = verify_crl(CA_DER, &der);
                }
            }
        }
    }
});
