//! The registry end to end: an in-process `mesh registry serve` on 127.0.0.1, driven through
//! `registry_client` (and raw requests for bad input).

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestRegistry, free_port};
use ipnet::Ipv6Net;
use re6mesh::identity;
use re6mesh::registry::{self, Registry};
use re6mesh::registry_client::{ClientError, NodeKey, RegistryClient};
use re6mesh::token::JoinToken;
use x509_parser::prelude::*;

fn overlaps(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(b) || b.contains(a)
}

/// A well-formed, correctly self-signed CSR carrying an Ed25519 key.
fn ed25519_csr_pem() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

/// A well-formed, correctly self-signed CSR carrying an RSA-2048 key (the fuzz seed: ring
/// cannot generate RSA keys).
fn rsa_csr_pem() -> String {
    let der = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/registry_csr/rsa2048.der"),
    )
    .unwrap();
    identity::der_to_pem(&der, "CERTIFICATE REQUEST")
}

/// Everything a request could change in the registry's store.
#[derive(Debug, PartialEq)]
struct StoreSnapshot {
    nodes: Vec<registry::store::NodeRow>,
    tokens: Vec<registry::store::TokenRow>,
    params: Vec<u8>,
    crl: Vec<u8>,
}

fn snapshot(reg: &TestRegistry) -> StoreSnapshot {
    let s = reg.registry().store().unwrap();
    StoreSnapshot {
        nodes: s.nodes().unwrap(),
        tokens: s.tokens().unwrap(),
        params: s.params().unwrap().document,
        crl: s.crl().unwrap(),
    }
}

/// Sends each body to `path` and checks the answer: a 4xx with a JSON error containing the
/// needle.
async fn expect_4xx(client: &RegistryClient, path: &str, cases: Vec<(&str, Vec<u8>, &str)>) {
    for (what, body, needle) in cases {
        let (status, resp) = client.raw("POST", path, Some(body)).await.unwrap();
        let text = String::from_utf8_lossy(&resp);
        assert!(
            (400..500).contains(&status),
            "{path} {what}: status {status} {text}"
        );
        let parsed: re6mesh::registry_api::ErrorBody = serde_json::from_slice(&resp)
            .unwrap_or_else(|e| panic!("{path} {what}: not an error body ({e}): {text}"));
        assert!(parsed.error.contains(needle), "{path} {what}: {text}");
    }
}

/// The CRL the registry serves, checked against the CA; returns its number and serials.
fn crl_number_and_serials(der: &[u8], ca_der: &[u8]) -> (String, Vec<String>) {
    let (_, crl) = CertificateRevocationList::from_der(der).unwrap();
    let (_, ca) = X509Certificate::from_der(ca_der).unwrap();
    crl.verify_signature(ca.public_key())
        .expect("CRL signed by the CA");
    let number = crl.crl_number().map(|n| n.to_string()).unwrap_or_default();
    let serials = crl
        .iter_revoked_certificates()
        .map(|rc| identity::serial_hex(rc.raw_serial()))
        .collect();
    (number, serials)
}

#[tokio::test(flavor = "multi_thread")]
async fn join_with_token_issues_a_certificate_with_the_conventions_fields() {
    let reg = TestRegistry::start().await;
    let node = reg.join_node().await;
    let c = &node.cert;
    let (_, cert) = X509Certificate::from_der(&c.cert_der).unwrap();
    // CN = prefix in CIDR text
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(cn, c.prefix.to_string());
    assert_eq!(c.prefix.prefix_len(), 64);
    assert!(
        "fd5e:1234:5678::/48"
            .parse::<Ipv6Net>()
            .unwrap()
            .contains(&c.prefix)
    );
    // SANs: node address and URI
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let mut ip_ok = false;
    let mut uri_ok = false;
    for n in &san.value.general_names {
        match n {
            GeneralName::IPAddress(b) => ip_ok = *b == identity::node_address(&c.prefix).octets(),
            GeneralName::URI(u) => uri_ok = *u == format!("re6mesh:node:{}", c.prefix),
            _ => {}
        }
    }
    assert!(ip_ok && uri_ok, "SANs: {:?}", san.value.general_names);
    // EKU serverAuth + clientAuth, not a CA
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!cert.is_ca());
    // 128-bit positive serial
    let serial = cert.raw_serial();
    assert!(
        serial.len() == 16 && serial[0] & 0x80 == 0,
        "serial {serial:?}"
    );
    // validity ≈ 365 days
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400;
    assert_eq!(days, 365);
    // signed by the CA, and the CA has the CONVENTIONS properties
    let (_, ca) = X509Certificate::from_der(&c.ca_der).unwrap();
    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the CA");
    assert!(ca.is_ca());
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    // the params it got verify and name the network
    assert_eq!(c.params.network.to_string(), "fd5e:1234:5678::/48");
    assert!(c.params.mac.sign.is_some());
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn same_token_twice_is_refused_but_a_retry_with_the_same_key_gets_the_same_certificate() {
    let reg = TestRegistry::start().await;
    let token = JoinToken::decode(&reg.token()).unwrap();
    let client = RegistryClient::for_token(&token).unwrap();
    let key = NodeKey::generate().unwrap();
    let first = client.join(Some(&token.secret), &key).await.unwrap();
    // a lost response: the same key again gets the same certificate
    let again = client.join(Some(&token.secret), &key).await.unwrap();
    assert_eq!(first.cert_der, again.cert_der);
    // any other reuse is refused
    let other = NodeKey::generate().unwrap();
    let err = client.join(Some(&token.secret), &other).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 403, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("already been used"), "{err}");
    assert_eq!(reg.registry().store().unwrap().nodes().unwrap().len(), 1);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_and_unknown_tokens_are_refused() {
    let reg = TestRegistry::start().await;
    let r = reg.registry();
    let expired = r.create_token(None, Some(registry::now() - 1), 1).unwrap();
    let t = JoinToken::decode(&expired).unwrap();
    let key = NodeKey::generate().unwrap();
    let err = RegistryClient::for_token(&t)
        .unwrap()
        .join(Some(&t.secret), &key)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    // a secret the registry never minted
    let mut forged = t.clone();
    forged.secret = [1; 24];
    let err = RegistryClient::for_token(&forged)
        .unwrap()
        .join(Some(&forged.secret), &key)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Refused { status: 401, .. }),
        "{err}"
    );
    assert!(r.store().unwrap().nodes().unwrap().is_empty());
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_another_registry_is_refused_before_the_secret_is_sent() {
    let reg = TestRegistry::start().await;
    let genuine = JoinToken::decode(&reg.token()).unwrap();
    let mut t = genuine.clone();
    t.ca_fingerprint[0] ^= 0xff; // another network's CA
    let key = NodeKey::generate().unwrap();
    let err = RegistryClient::for_token(&t)
        .unwrap()
        .join(Some(&t.secret), &key)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::PinMismatch { .. }), "{err}");
    // the real token was not consumed: the secret never reached the server
    let tokens = reg.registry().store().unwrap().tokens().unwrap();
    assert_eq!(tokens[0].uses_left, 1);
    // and the genuine token still works
    RegistryClient::for_token(&genuine)
        .unwrap()
        .join(Some(&genuine.secret), &key)
        .await
        .unwrap();
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_join_is_refused_by_default_and_allowed_when_configured() {
    let reg = TestRegistry::start().await;
    let t = JoinToken::decode(&reg.token()).unwrap();
    let client = RegistryClient::for_token(&t).unwrap();
    let key = NodeKey::generate().unwrap();
    let err = client.join(None, &key).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Refused { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("without a token"), "{err}");
    // the parameter set later opens it (takes effect on the running server at once)
    let r = reg.registry();
    r.store()
        .unwrap()
        .set_param(&r.ca, "anonymous", "true", registry::now())
        .unwrap();
    let c = client.join(None, &key).await.unwrap();
    assert_eq!(c.prefix.prefix_len(), 64);
    reg.stop().await;

    let reg = TestRegistry::start_with(|o| o.anonymous = true).await;
    let t = JoinToken::decode(&reg.token()).unwrap();
    RegistryClient::for_token(&t)
        .unwrap()
        .join(None, &key)
        .await
        .unwrap();
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_parallel_joins_get_distinct_non_overlapping_prefixes() {
    let reg = TestRegistry::start().await;
    let token = JoinToken::decode(&reg.token_uses(100)).unwrap();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let key = NodeKey::generate().unwrap();
            RegistryClient::for_token(&token)
                .unwrap()
                .join(Some(&token.secret), &key)
                .await
        }));
    }
    let mut prefixes = Vec::new();
    for t in tasks {
        prefixes.push(t.await.unwrap().expect("join").prefix);
    }
    let elapsed = started.elapsed();
    println!(
        "100 parallel joins on loopback: {elapsed:?} ({:.0} joins/s)",
        100.0 / elapsed.as_secs_f64()
    );
    let set: HashSet<_> = prefixes.iter().collect();
    assert_eq!(set.len(), 100);
    for (i, a) in prefixes.iter().enumerate() {
        for b in &prefixes[i + 1..] {
            assert!(!overlaps(a, b), "{a} overlaps {b}");
        }
    }
    // a 101st join with that token is refused
    let key = NodeKey::generate().unwrap();
    let err = RegistryClient::for_token(&token)
        .unwrap()
        .join(Some(&token.secret), &key)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused { status: 403, .. }));
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_is_refused_early_allowed_in_the_window_and_after_a_serial_revocation() {
    let reg = TestRegistry::start().await;
    let r = reg.registry();
    let node = reg.join_node().await;
    // a fresh 365-day certificate: too early
    let err = node.client.renew(&node.key).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 409, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("too early"), "{err}");

    // revoked by serial: renew gives a new serial, same prefix
    r.store()
        .unwrap()
        .revoke(&r.ca, &node.cert.serial, registry::now())
        .unwrap();
    let renewed = node.client.renew(&node.key).await.unwrap();
    assert_eq!(renewed.prefix, node.cert.prefix);
    assert_ne!(renewed.serial, node.cert.serial);
    // `nodes` lists the new certificate, even when it was issued in the same second as the old
    let rows = r.store().unwrap().nodes().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].serial, renewed.serial);
    assert!(!rows[0].revoked);
    // the new certificate works for authenticated calls, the old one does not
    node.client_for(&reg.url, &renewed)
        .mac_keys()
        .await
        .unwrap();
    assert!(node.client.mac_keys().await.is_err());

    // inside the 30-day window: allowed for the key on record only
    r.store()
        .unwrap()
        .set_param(&r.ca, "cert_validity", "20d", registry::now())
        .unwrap();
    let short = reg.join_node().await;
    let (before, _) = short.client.params().await.unwrap();
    let new_key = NodeKey::generate().unwrap();
    let err = short.client.renew(&new_key).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 403, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("keeps the node's key"), "{err}");
    let renewed = short.client.renew(&short.key).await.unwrap();
    assert_eq!(renewed.prefix, short.cert.prefix);
    assert_ne!(renewed.serial, short.cert.serial);
    assert!(renewed.not_after >= short.cert.not_after);
    // the new certificate supersedes the old one: revoked, in a new CRL named by new
    // parameters (the renewal's answer carries them), and the old one no longer authenticates
    assert!(renewed.params.version > before.version);
    let (after, _) = short.client.params().await.unwrap();
    assert_eq!(after.version, renewed.params.version);
    let (_, serials) =
        crl_number_and_serials(&short.client.crl().await.unwrap(), &short.cert.ca_der);
    assert!(serials.contains(&short.cert.serial), "{serials:?}");
    assert!(!serials.contains(&renewed.serial), "{serials:?}");
    assert!(short.client.mac_keys().await.is_err());
    short
        .client_for(&reg.url, &renewed)
        .mac_keys()
        .await
        .unwrap();
    let row = r
        .store()
        .unwrap()
        .nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.prefix == short.cert.prefix.to_string())
        .unwrap();
    assert_eq!(
        (row.serial.as_str(), row.revoked),
        (renewed.serial.as_str(), false)
    );
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ban_refuses_renewal_and_frees_the_prefix_once_the_certificate_expired() {
    let reg =
        TestRegistry::start_with(|o| o.network = "fd5e:1234:5678::/63".parse().unwrap()).await;
    let r = reg.registry();
    r.store()
        .unwrap()
        .set_param(&r.ca, "cert_validity", "3s", registry::now())
        .unwrap();
    let a = reg.join_node().await;
    let (before, _) = a.client.params().await.unwrap();
    let msg = r
        .store()
        .unwrap()
        .revoke(&r.ca, &a.cert.prefix.to_string(), registry::now())
        .unwrap();
    assert!(msg.to_string().contains("banned"), "{msg}");
    // the ban publishes a new CRL listing the serial, and new parameters naming that CRL
    let (after, _) = a.client.params().await.unwrap();
    assert!(after.version > before.version);
    assert!(after.crl.number > before.crl.number);
    let der = a.client.crl().await.unwrap();
    assert_eq!(hex::encode(identity::fingerprint(&der)), after.crl.sha256);
    let (number, serials) = crl_number_and_serials(&der, &a.cert.ca_der);
    assert_eq!(number, after.crl.number.to_string());
    assert_eq!(serials, vec![a.cert.serial.clone()]);
    let err = a.client.renew(&a.key).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 403, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("banned"), "{err}");
    // while the banned certificate is valid its prefix stays reserved: the /63 has one /64 left
    let b = reg.join_node().await;
    assert_ne!(b.cert.prefix, a.cert.prefix);
    let t = JoinToken::decode(&reg.token()).unwrap();
    let err = RegistryClient::for_token(&t)
        .unwrap()
        .join(Some(&t.secret), &NodeKey::generate().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 503, .. }),
        "{err}"
    );
    // after expiry the banned node's prefix is reused
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let c = RegistryClient::for_token(&t)
        .unwrap()
        .join(Some(&t.secret), &NodeKey::generate().unwrap())
        .await
        .unwrap();
    assert_eq!(c.prefix, a.cert.prefix);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_publishes_a_crl_listing_the_serial_and_bumps_the_parameters() {
    let reg = TestRegistry::start().await;
    let r = reg.registry();
    let a = reg.join_node().await;
    let b = reg.join_node().await;
    let (before, _) = b.client.params().await.unwrap();
    r.store()
        .unwrap()
        .revoke(&r.ca, &a.cert.serial, registry::now())
        .unwrap();
    let (after, signed) = b.client.params().await.unwrap();
    assert!(after.version > before.version);
    assert!(after.crl.number > before.crl.number);
    // the signature verifies (client did it) and fails on a tampered document
    let mut tampered = signed.clone();
    tampered.document[10] ^= 1;
    assert!(tampered.verify(&a.cert.ca_der).is_err());
    // the CRL parses, is signed by the CA, lists the serial, and matches the parameters' hash
    let der = b.client.crl().await.unwrap();
    assert_eq!(hex::encode(identity::fingerprint(&der)), after.crl.sha256);
    let (number, serials) = crl_number_and_serials(&der, &a.cert.ca_der);
    assert_eq!(number, after.crl.number.to_string());
    assert_eq!(serials, vec![a.cert.serial.clone()]);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mac_rotation_serves_the_keys_named_by_the_parameters_and_never_to_revoked_nodes() {
    let reg = TestRegistry::start().await;
    let r = reg.registry();
    let node = reg.join_node().await;
    let mut seen = Vec::new();
    for step in 0..4 {
        if step > 0 {
            r.store()
                .unwrap()
                .rotate_mac(&r.ca, registry::now())
                .unwrap();
        }
        let (p, _) = node.client.params().await.unwrap();
        let keys = node.client.mac_keys().await.unwrap();
        assert_eq!(keys.params_version, p.version);
        let ids: Vec<_> = keys.keys.iter().map(|k| k.id.clone()).collect();
        for id in p.mac.sign.iter().chain(p.mac.accept.iter()) {
            assert!(ids.contains(id), "key {id} not served at step {step}");
        }
        assert!(keys.keys.iter().all(|k| k.key.len() == 64));
        seen.push((p.mac.sign.clone().unwrap(), p.mac.accept.clone()));
    }
    // (sign K1) → (sign K1, accept K2) → (sign K2, accept K1) → (sign K2)
    let k1 = seen[0].0.clone();
    let k2 = seen[1].1.clone().unwrap();
    assert_eq!(
        seen,
        vec![
            (k1.clone(), None),
            (k1.clone(), Some(k2.clone())),
            (k2.clone(), Some(k1.clone())),
            (k2.clone(), None),
        ]
    );
    // the public parameters never carry key bytes
    let (_, signed) = node.client.params().await.unwrap();
    let keys = node.client.mac_keys().await.unwrap();
    let doc = String::from_utf8(signed.document).unwrap();
    assert!(keys.keys.iter().all(|k| !doc.contains(&k.key)));
    // a revoked node gets nothing
    r.store()
        .unwrap()
        .revoke(&r.ca, &node.cert.serial, registry::now())
        .unwrap();
    let err = node.client.mac_keys().await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 403, .. }),
        "{err}"
    );
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn introducing_mac_on_a_no_mac_network_goes_through_accept_unsigned() {
    let reg = TestRegistry::start_with(|o| o.no_mac = true).await;
    let r = reg.registry();
    let node = reg.join_node().await;
    assert_eq!(node.cert.params.mac, Default::default());
    r.store()
        .unwrap()
        .rotate_mac(&r.ca, registry::now())
        .unwrap();
    let (p, _) = node.client.params().await.unwrap();
    assert!(p.mac.sign.is_some() && p.mac.accept_unsigned && p.mac.accept.is_none());
    r.store()
        .unwrap()
        .rotate_mac(&r.ca, registry::now())
        .unwrap();
    let (q, _) = node.client.params().await.unwrap();
    assert_eq!(q.mac.sign, p.mac.sign);
    assert!(!q.mac.accept_unsigned);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_certificate_is_told_to_rejoin() {
    let reg = TestRegistry::start().await;
    let r = reg.registry();
    r.store()
        .unwrap()
        .set_param(&r.ca, "cert_validity", "1s", registry::now())
        .unwrap();
    let node = reg.join_node().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for err in [
        node.client.mac_keys().await.unwrap_err(),
        node.client.renew(&node.key).await.unwrap_err(),
    ] {
        assert_eq!(err.code(), Some("expired"), "{err}");
        assert!(err.to_string().contains("join again"), "{err}");
    }
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_returns_another_live_node_with_its_endpoints() {
    let reg = TestRegistry::start().await;
    let a = reg.join_node().await;
    let b = reg.join_node().await;
    assert_eq!(a.client.bootstrap().await.unwrap(), None);
    let ep: std::net::SocketAddr = "[fd00::2]:6464".parse().unwrap();
    b.client.report_endpoints(&[ep], 1).await.unwrap();
    let got = a.client.bootstrap().await.unwrap().unwrap();
    assert_eq!(got.prefix, b.cert.prefix);
    assert_eq!(got.endpoints, vec![ep]);
    assert_eq!(got.live, 1);
    assert_eq!(got.peers.len(), 1);
    assert_eq!(got.peers[0].prefix, b.cert.prefix);
    // b never gets itself
    assert_eq!(b.client.bootstrap().await.unwrap(), None);
    // with many live nodes, one answer names up to 8 of them, all different, never the asker
    let mut more = Vec::new();
    for i in 0..10u16 {
        let n = reg.join_node().await;
        let ep: std::net::SocketAddr = format!("[fd00::1:{i:x}]:6464").parse().unwrap();
        n.client.report_endpoints(&[ep], 1).await.unwrap();
        more.push(n);
    }
    let got = a.client.bootstrap().await.unwrap().unwrap();
    assert_eq!(got.live, 11);
    assert_eq!(got.peers.len(), re6mesh::registry_api::BOOTSTRAP_PEERS);
    let distinct: std::collections::BTreeSet<_> = got.peers.iter().map(|p| p.prefix).collect();
    assert_eq!(distinct.len(), got.peers.len());
    assert!(!distinct.contains(&a.cert.prefix));
    assert_eq!(
        (got.prefix, &got.endpoints),
        (got.peers[0].prefix, &got.peers[0].endpoints)
    );
    // bad endpoints are refused
    let err = a
        .client
        .report_endpoints(&["[::]:0".parse().unwrap()], 1)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused { status: 400, .. }));
    let nodes = reg.registry().store().unwrap().nodes().unwrap();
    let row = nodes
        .iter()
        .find(|n| n.prefix == b.cert.prefix.to_string())
        .unwrap();
    assert_eq!(row.protocol, Some(1));
    assert!(row.last_seen.is_some());
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let reg = TestRegistry::start().await;
    let token_text = reg.token();
    let t = JoinToken::decode(&token_text).unwrap();
    let client = RegistryClient::for_token(&t).unwrap();
    let secret =
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, t.secret);
    let good_csr = NodeKey::generate().unwrap().csr_pem().unwrap();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384_csr = rcgen::CertificateParams::default()
        .serialize_request(&p384)
        .unwrap()
        .pem()
        .unwrap();
    let ed25519_csr = ed25519_csr_pem();
    let rsa_csr = rsa_csr_pem();
    let mut bad_sig = good_csr.clone();
    // flip a base64 character inside the signature (near the end of the PEM body)
    let pos = bad_sig.rfind("-----END").unwrap() - 6;
    let ch = if &bad_sig[pos..pos + 1] == "A" {
        "B"
    } else {
        "A"
    };
    bad_sig.replace_range(pos..pos + 1, ch);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage JSON", b"{not json".to_vec(), "not acceptable"),
        ("unknown field", serde_json::to_vec(&serde_json::json!({"token": secret, "csr": good_csr, "admin": true})).unwrap(), "unknown field"),
        ("malformed CSR", serde_json::to_vec(&serde_json::json!({"token": secret, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"})).unwrap(), "malformed"),
        ("CSR with a P-384 key", serde_json::to_vec(&serde_json::json!({"token": secret, "csr": p384_csr})).unwrap(), "P-256"),
        ("CSR with an Ed25519 key", serde_json::to_vec(&serde_json::json!({"token": secret, "csr": ed25519_csr})).unwrap(), "P-256"),
        ("CSR with an RSA key", serde_json::to_vec(&serde_json::json!({"token": secret, "csr": rsa_csr})).unwrap(), "P-256"),
        ("CSR with a broken signature", serde_json::to_vec(&serde_json::json!({"token": secret, "csr": bad_sig})).unwrap(), "signature"),
        ("oversized body", serde_json::to_vec(&serde_json::json!({"token": secret, "csr": "x".repeat(100_000)})).unwrap(), "larger than"),
        ("token not base64", serde_json::to_vec(&serde_json::json!({"token": "***", "csr": good_csr})).unwrap(), "base64"),
    ];
    for (what, body, needle) in cases {
        let (status, resp) = client.raw("POST", "/join", Some(body)).await.unwrap();
        let text = String::from_utf8_lossy(&resp);
        assert!(
            (400..500).contains(&status),
            "{what}: status {status} {text}"
        );
        assert!(text.contains(needle), "{what}: {text}");
        let parsed: re6mesh::registry_api::ErrorBody = serde_json::from_slice(&resp).unwrap();
        assert!(!parsed.error.is_empty());
    }
    // an unknown path
    let (status, _) = client.raw("GET", "/nope", None).await.unwrap();
    assert_eq!(status, 404);
    // nothing was stored, the token is intact
    let r = reg.registry();
    assert!(r.store().unwrap().nodes().unwrap().is_empty());
    assert_eq!(r.store().unwrap().tokens().unwrap()[0].uses_left, 1);
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_renew_and_endpoints_bodies_get_a_clear_4xx_and_change_nothing() {
    let reg = TestRegistry::start().await;
    let r = reg.registry();
    let a = reg.join_node().await;
    let b = reg.join_node().await;
    // a is revoked by serial, so a good renewal would go through at once (not "too early")
    r.store()
        .unwrap()
        .revoke(&r.ca, &a.cert.serial, registry::now())
        .unwrap();
    let good_csr = NodeKey::generate().unwrap().csr_pem().unwrap();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384_csr = rcgen::CertificateParams::default()
        .serialize_request(&p384)
        .unwrap()
        .pem()
        .unwrap();
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let before = snapshot(&reg);

    let renew: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage JSON", b"{not json".to_vec(), "not acceptable"),
        ("empty body", Vec::new(), "not acceptable"),
        (
            "unknown field",
            json(serde_json::json!({"csr": good_csr, "prefix": "fd5e:1234:5678::/56"})),
            "unknown field",
        ),
        ("missing CSR", json(serde_json::json!({})), "missing field"),
        (
            "CSR of the wrong type",
            json(serde_json::json!({"csr": 5})),
            "invalid type",
        ),
        (
            "malformed CSR",
            json(
                serde_json::json!({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}),
            ),
            "malformed",
        ),
        (
            "CSR with a P-384 key",
            json(serde_json::json!({"csr": p384_csr})),
            "P-256",
        ),
        (
            "CSR with an Ed25519 key",
            json(serde_json::json!({"csr": ed25519_csr_pem()})),
            "P-256",
        ),
        (
            "CSR with an RSA key",
            json(serde_json::json!({"csr": rsa_csr_pem()})),
            "P-256",
        ),
        (
            "oversized body",
            json(serde_json::json!({"csr": "x".repeat(100_000)})),
            "larger than",
        ),
    ];
    expect_4xx(&a.client, "/renew", renew).await;

    let ep = "[fd00::2]:6464";
    let seventeen: Vec<String> = (1..=17).map(|i| format!("[fd00::{i}]:6464")).collect();
    let endpoints: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage JSON", b"[[[".to_vec(), "not acceptable"),
        ("empty body", Vec::new(), "not acceptable"),
        (
            "unknown field",
            json(
                serde_json::json!({"endpoints": [ep], "protocol": 1, "prefix": "fd5e:1234:5678::/56"}),
            ),
            "unknown field",
        ),
        (
            "missing protocol",
            json(serde_json::json!({"endpoints": [ep]})),
            "missing field",
        ),
        (
            "negative protocol",
            json(serde_json::json!({"endpoints": [ep], "protocol": -1})),
            "invalid value",
        ),
        (
            "endpoints not a list",
            json(serde_json::json!({"endpoints": ep, "protocol": 1})),
            "invalid type",
        ),
        (
            "not an address",
            json(serde_json::json!({"endpoints": ["nowhere:6464"], "protocol": 1})),
            "socket address",
        ),
        (
            "too many endpoints",
            json(serde_json::json!({"endpoints": seventeen, "protocol": 1})),
            "at most 16",
        ),
        (
            "port 0",
            json(serde_json::json!({"endpoints": ["[fd00::2]:0"], "protocol": 1})),
            "unicast",
        ),
        (
            "unspecified address",
            json(serde_json::json!({"endpoints": ["[::]:6464"], "protocol": 1})),
            "unicast",
        ),
        (
            "multicast address",
            json(serde_json::json!({"endpoints": ["[ff02::1]:6464"], "protocol": 1})),
            "unicast",
        ),
        (
            "link-local address (its scope means nothing to another host)",
            json(serde_json::json!({"endpoints": ["[fe80::1]:6464"], "protocol": 1})),
            "link-local",
        ),
        (
            "IPv4 link-local address",
            json(serde_json::json!({"endpoints": ["169.254.3.4:6464"], "protocol": 1})),
            "link-local",
        ),
        (
            "oversized body",
            json(serde_json::json!({"endpoints": [ep], "protocol": 1, "pad": "x".repeat(100_000)})),
            "larger than",
        ),
    ];
    expect_4xx(&b.client, "/endpoints", endpoints).await;

    // nothing changed: no new certificate, no endpoints, no last contact, same CRL and parameters
    assert_eq!(snapshot(&reg), before);

    // the same clients with good bodies do change the store (the snapshot would have seen it)
    let renewed = a.client.renew(&a.key).await.unwrap();
    assert_ne!(renewed.serial, a.cert.serial);
    b.client
        .report_endpoints(&[ep.parse().unwrap()], 1)
        .await
        .unwrap();
    let after = snapshot(&reg);
    let row = |s: &StoreSnapshot, p: &Ipv6Net| {
        s.nodes
            .iter()
            .find(|n| n.prefix == p.to_string())
            .cloned()
            .unwrap()
    };
    assert_eq!(row(&after, &a.cert.prefix).serial, renewed.serial);
    assert_eq!(row(&after, &b.cert.prefix).protocol, Some(1));
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_commands_work_while_the_server_runs_and_take_effect_at_once() {
    let reg = TestRegistry::start().await;
    let node = reg.join_node().await;
    let r = Registry::open(&reg.path()).unwrap();
    let v = r
        .store()
        .unwrap()
        .set_param(&r.ca, "hello_interval", "1", registry::now())
        .unwrap();
    let (p, _) = node.client.params().await.unwrap();
    assert_eq!(p.version, v);
    assert_eq!(p.hello_interval, 1);
    // bad settings change nothing
    assert!(
        r.store()
            .unwrap()
            .set_param(&r.ca, "hello_interval", "0", registry::now())
            .is_err()
    );
    assert!(
        r.store()
            .unwrap()
            .set_param(&r.ca, "no_such_key", "1", registry::now())
            .is_err()
    );
    let (q, _) = node.client.params().await.unwrap();
    assert_eq!(q.version, v);
    let _ = free_port();
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_watch_answers_at_once_when_behind_and_as_soon_as_a_change_is_made() {
    let reg = TestRegistry::start().await;
    let r = reg.registry();
    let node = reg.join_node().await;
    let (p, _) = node.client.params().await.unwrap();
    // behind: the current parameters at once
    let t = std::time::Instant::now();
    let (got, _) = node
        .client
        .watch_params(p.version - 1)
        .await
        .unwrap()
        .expect("not busy");
    assert_eq!(got.version, p.version);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // up to date: held until a change is made by another process (here: the store)
    let watcher = {
        let client = second_client(&reg, &node);
        let v = p.version;
        tokio::spawn(async move {
            let r = client.watch_params(v).await;
            (r, std::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !watcher.is_finished(),
        "the watch answered before any change"
    );
    let changed = std::time::Instant::now();
    r.store()
        .unwrap()
        .set_param(&r.ca, "max_clients", "13", registry::now())
        .unwrap();
    let (res, at) = watcher.await.unwrap();
    let (got, signed) = res.unwrap().expect("not busy");
    println!(
        "parameter watch: answered {:?} after the change",
        at - changed
    );
    assert!(got.version > p.version);
    assert_eq!(got.tunnel.max_clients, 13);
    assert!(signed.verify(&node.cert.ca_der).is_ok());
    // nothing changes: the watch ends after the hold time with the same version
    let t = std::time::Instant::now();
    let (same, _) = node
        .client
        .watch_params(got.version)
        .await
        .unwrap()
        .expect("not busy");
    assert_eq!(same.version, got.version);
    let held = t.elapsed();
    assert!(
        held >= re6mesh::registry::server::WATCH_HOLD - Duration::from_millis(100),
        "{held:?}"
    );
    // a watch without a version is a bad request
    let (status, body) = node.client.raw("GET", "/params/watch", None).await.unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_beyond_the_limit_are_told_the_registry_is_busy() {
    let reg = TestRegistry::start_max_watchers(1).await;
    let node = reg.join_node().await;
    let (p, _) = node.client.params().await.unwrap();
    let first = {
        let client = second_client(&reg, &node);
        let v = p.version;
        tokio::spawn(async move { client.watch_params(v).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // the second one is refused at once: busy, not an error
    assert!(node.client.watch_params(p.version).await.unwrap().is_none());
    let (status, body) = node
        .client
        .raw("GET", &format!("/params/watch?after={}", p.version), None)
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("\"busy\""));
    // when the first ends, its slot is free again
    first.abort();
    let _ = first.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        node.client
            .watch_params(p.version - 1)
            .await
            .unwrap()
            .is_some()
    );
    reg.stop().await;
}

/// Another client with the same node identity (a watch runs in a task of its own).
fn second_client(reg: &TestRegistry, node: &common::TestNode) -> RegistryClient {
    RegistryClient::with_identity(&reg.url, &node.cert.ca_der, &node.cert.cert_der, &node.key)
        .unwrap()
}

/// Polls `f` every 50 ms until it returns `Some`, for at most 20 s (a condition, not a delay).
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn limits() -> registry::limits::Limits {
    registry::limits::Limits::default()
}

fn per_hour(n: u32) -> Option<registry::limits::Rate> {
    registry::limits::Rate::new(n, Duration::from_secs(3600))
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_joins_are_limited_per_source_with_a_429_and_retry_after() {
    let reg = TestRegistry::start_with_limits(
        |o| o.anonymous = true,
        registry::limits::Limits {
            anon_joins_per_source: per_hour(3),
            anon_joins: None,
            ..limits()
        },
    )
    .await;
    let t = JoinToken::decode(&reg.token()).unwrap();
    let client = RegistryClient::for_token(&t).unwrap();
    for _ in 0..3 {
        client
            .join(None, &NodeKey::generate().unwrap())
            .await
            .unwrap();
    }
    let before = snapshot(&reg);
    let err = client
        .join(None, &NodeKey::generate().unwrap())
        .await
        .unwrap_err();
    let ClientError::Refused {
        status,
        code,
        retry_after,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    println!("4th anonymous join from 127.0.0.1 at 3/h: {err} (Retry-After {retry_after:?})");
    assert_eq!((*status, code.as_str()), (429, "rate_limited"), "{err}");
    // 3 an hour: one comes back within 20 minutes
    assert!(
        retry_after.is_some_and(|s| (1..=1200).contains(&s)),
        "{retry_after:?}"
    );
    assert!(err.to_string().contains("join token"), "{err}");
    assert_eq!(snapshot(&reg), before, "a refused join changed the store");
    // joins with a token are not counted
    reg.join_node().await;
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_joins_are_limited_in_total_with_a_503_and_retry_after() {
    let reg = TestRegistry::start_with_limits(
        |o| o.anonymous = true,
        registry::limits::Limits {
            anon_joins_per_source: None,
            anon_joins: per_hour(2),
            ..limits()
        },
    )
    .await;
    let t = JoinToken::decode(&reg.token()).unwrap();
    let client = RegistryClient::for_token(&t).unwrap();
    for _ in 0..2 {
        client
            .join(None, &NodeKey::generate().unwrap())
            .await
            .unwrap();
    }
    let err = client
        .join(None, &NodeKey::generate().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 503, code, retry_after: Some(s), .. }
            if code == "busy" && (1..=1800).contains(s)),
        "{err}"
    );
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_need_a_valid_node_certificate_and_are_capped_per_node() {
    let reg = TestRegistry::start_with_limits(
        |_| {},
        registry::limits::Limits {
            max_watchers_per_node: 1,
            ..limits()
        },
    )
    .await;
    let r = reg.registry();
    let a = reg.join_node().await;
    let b = reg.join_node().await;
    let (p, _) = a.client.params().await.unwrap();
    // no client certificate: 401
    let t = JoinToken::decode(&reg.token()).unwrap();
    let anon = RegistryClient::for_token(&t).unwrap();
    let (status, body) = anon
        .raw("GET", &format!("/params/watch?after={}", p.version), None)
        .await
        .unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("client certificate"));
    // one watch of a held; its second one is refused (429, poll instead), b's is served
    // The holder retries until it has the slot (the probe below may hold it for a moment); the
    // probe asks for a version that is already out, so it never waits when it is served.
    let held = {
        let client = second_client(&reg, &a);
        let v = p.version;
        tokio::spawn(async move {
            // `watch_params` reads a refusal as "nothing new"; the raw status tells them apart
            let path = format!("/params/watch?after={v}");
            while !matches!(client.raw("GET", &path, None).await, Ok((200, _))) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let err = wait_for("a's second watch to be refused", || {
        let c = &a.client;
        let v = p.version - 1;
        async move {
            match c
                .raw("GET", &format!("/params/watch?after={v}"), None)
                .await
            {
                Ok((429, body)) => Some(String::from_utf8_lossy(&body).into_owned()),
                _ => None,
            }
        }
    })
    .await;
    assert!(err.contains("rate_limited"), "{err}");
    // the node is told when to come back (it waits that long before watching again)
    match a.client.watch(p.version).await.unwrap() {
        re6mesh::registry_client::Watched::Busy { retry_after } => {
            assert!(
                retry_after.is_some_and(|d| d.as_secs() > 0),
                "{retry_after:?}"
            )
        }
        other => panic!("a third watch was taken: {other:?}"),
    }
    assert!(a.client.watch_params(p.version).await.unwrap().is_none());
    assert!(
        b.client
            .watch_params(p.version - 1)
            .await
            .unwrap()
            .is_some()
    );
    // when the held watch ends, a may watch again
    held.abort();
    let _ = held.await;
    wait_for("a's watch slot to come back", || {
        let c = &a.client;
        let v = p.version - 1;
        async move { c.watch_params(v).await.ok().flatten() }
    })
    .await;
    // a revoked certificate may not watch: 403
    r.store()
        .unwrap()
        .revoke(&r.ca, &b.cert.serial, registry::now())
        .unwrap();
    let (status, body) = b
        .client
        .raw("GET", &format!("/params/watch?after={}", p.version), None)
        .await
        .unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    reg.stop().await;
}
