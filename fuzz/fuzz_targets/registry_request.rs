//! JSON request bodies the registry accepts, and the join token a user pastes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use re6mesh::registry_api::{EndpointsRequest, JoinRequest, RenewRequest};
use re6mesh::token::JoinToken;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<JoinRequest>(data);
    let _ = serde_json::from_slice::<RenewRequest>(data);
    let _ = serde_json::from_slice::<EndpointsRequest>(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(token) = JoinToken::decode(text)
    {
        assert_eq!(JoinToken::decode(&token.encode()).ok(), Some(token));
    }
});
