//! The registry fuzz targets' seed corpora, run through the same parsers in the normal suite:
//! real inputs are accepted, and the expected rejections happen.

use std::path::Path;

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "empty corpus {name}");
    out
}

#[test]
fn csr_seeds_accept_p256_and_refuse_p384() {
    for (name, bytes) in corpus("registry_csr") {
        let r = re6mesh::registry::ca::csr_public_key(&bytes);
        if name.starts_with("p256") {
            assert!(r.is_ok(), "{name}: {:?}", r.err());
        } else {
            assert!(r.is_err(), "{name} accepted");
        }
    }
}

#[test]
fn request_seeds_parse() {
    for (name, bytes) in corpus("registry_request") {
        if name.ends_with(".json") {
            let ok = serde_json::from_slice::<re6mesh::registry_api::JoinRequest>(&bytes).is_ok()
                || serde_json::from_slice::<re6mesh::registry_api::EndpointsRequest>(&bytes)
                    .is_ok();
            assert!(ok, "{name}");
        } else {
            re6mesh::token::JoinToken::decode(std::str::from_utf8(&bytes).unwrap()).unwrap();
        }
    }
}

#[test]
fn params_seed_verifies_against_its_ca_and_not_when_tampered() {
    let ca =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/data/signed_params_ca.der"))
            .unwrap();
    for (name, bytes) in corpus("signed_params") {
        let j: re6mesh::params::SignedParamsJson = serde_json::from_slice(&bytes).unwrap();
        let mut sp = re6mesh::params::SignedParams::from_json(&j).unwrap();
        sp.verify(&ca).unwrap_or_else(|e| panic!("{name}: {e}"));
        sp.document[5] ^= 1;
        assert!(sp.verify(&ca).is_err());
    }
}
