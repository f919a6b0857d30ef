//! The simulator's registry: [`SimRegistry`] (a real CA with the network's signed
//! parameters, the CRL, the Babel MAC key slots, certificate issue and renewal refused for
//! a banned prefix, per-prefix serials; it can be marked down), and the [`NodeNet`] methods
//! that use it as an administrator does (publish parameters, revoke, ban, rotate the MAC
//! key) and deliver what it publishes to the nodes that watch it.

use super::*;

/// The simulated registry.
pub struct SimRegistry {
    ca: Ca,
    /// Answers requests (false: every request fails as unreachable).
    pub up: bool,
    /// One-way latency between the registry and any node.
    pub latency: Duration,
    params: NetworkParams,
    pub(super) signed: SignedParams,
    pub(super) crl: Vec<u8>,
    pub(super) revoked: Vec<(String, i64)>,
    pub(super) banned: BTreeSet<Ipv6Net>,
    pub(super) slots: Slots,
    pub(super) next_key: u8,
    next_serial: u64,
    /// Certificate validity given at renewal.
    pub validity: Duration,
    /// Current serial of each prefix.
    serials: BTreeMap<Ipv6Net, String>,
}

impl SimRegistry {
    pub(super) fn new(policy: TunnelPolicy, hello_interval: u32) -> SimRegistry {
        let now = time::OffsetDateTime::from_unix_timestamp(UNIX_START)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let network: Ipv6Net = NETWORK.parse().expect("valid network");
        let ca = Ca::generate(&network, now).expect("CA generation");
        let crl = ca.crl(1, &[], now).expect("CRL");
        let params = NetworkParams {
            version: 1,
            issued_at: UNIX_START,
            network,
            node_prefix_len: 64,
            protocol: PROTOCOL_VERSION,
            min_protocol: PROTOCOL_VERSION,
            hello_interval,
            tunnel: policy,
            countries: CountryRules::default(),
            crl: CrlRef {
                number: 1,
                sha256: hex::encode(identity::fingerprint(&crl)),
            },
            mac: MacState::default(),
            routes: Vec::new(),
            ipv4: None,
            routes_v4: Vec::new(),
        };
        let signed = sign(&ca, &params);
        SimRegistry {
            ca,
            up: true,
            latency: Duration::from_millis(20),
            params,
            signed,
            crl,
            revoked: Vec::new(),
            banned: BTreeSet::new(),
            slots: [None, None, None],
            next_key: 0,
            next_serial: 0,
            validity: Duration::from_secs(365 * 86_400),
            serials: BTreeMap::new(),
        }
    }

    /// The parameters in force at the registry.
    pub fn params(&self) -> &NetworkParams {
        &self.params
    }

    /// The CA certificate.
    pub fn ca_der(&self) -> &[u8] {
        self.ca.cert_der()
    }

    /// The current serial of `prefix`.
    pub fn serial_of(&self, prefix: &Ipv6Net) -> Option<&str> {
        self.serials.get(prefix).map(String::as_str)
    }

    /// A real key and certificate for `prefix` (origin authentication), at `unix`; with
    /// `key` (PKCS#8), a renewal: same key, new certificate.
    pub(super) fn issue_real(
        &mut self,
        prefix: Ipv6Net,
        unix: i64,
        key: Option<&[u8]>,
    ) -> (OriginSetup, String, i64) {
        let key = match key {
            Some(der) => rcgen::KeyPair::try_from(der).expect("our own key"),
            None => {
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key")
            }
        };
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .expect("CSR");
        let csr_key = crate::registry::ca::csr_public_key(csr.der()).expect("our own CSR");
        let at = time::OffsetDateTime::from_unix_timestamp(unix)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let validity =
            time::Duration::seconds(i64::try_from(self.validity.as_secs()).unwrap_or(i64::MAX / 2));
        // named after its index, as a registry names nodes at join (`n3` is node 3)
        let name = format!("n{}", prefix.network().segments()[3]);
        let (der, serial, not_after) = self
            .ca
            .issue_node_named(&csr_key, &prefix, Some(&name), at, validity)
            .expect("node certificate");
        self.serials.insert(prefix, serial.clone());
        let setup = OriginSetup {
            cert_der: der,
            key_pkcs8: SecretBytes::new(key.serialize_der()),
            exit_only: None,
        };
        (setup, serial, not_after)
    }

    pub(super) fn issue(&mut self, prefix: Ipv6Net) -> String {
        self.next_serial += 1;
        // canonical form, as certificates and CRLs give it
        let serial = identity::serial_hex(&self.next_serial.to_be_bytes());
        self.serials.insert(prefix, serial.clone());
        serial
    }

    pub(super) fn publish(&mut self, change: impl FnOnce(&mut NetworkParams)) {
        let mut p = self.params.clone();
        change(&mut p);
        p.version += 1;
        self.signed = sign(&self.ca, &p);
        self.params = p;
    }

    pub(super) fn publish_crl(&mut self, now: i64) {
        let at = time::OffsetDateTime::from_unix_timestamp(now)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let number = self.params.crl.number + 1;
        self.crl = self.ca.crl(number, &self.revoked, at).expect("CRL");
        let sha = hex::encode(identity::fingerprint(&self.crl));
        self.publish(|p| {
            p.crl = CrlRef {
                number,
                sha256: sha,
            }
        });
    }

    pub(super) fn keys(&self) -> MacKeyBytes {
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| match s {
                Slot::Key { id, bytes } => Some((id.clone(), SecretBytes::new(bytes.to_vec()))),
                Slot::Unsigned => None,
            })
            .collect()
    }
}

fn sign(ca: &Ca, p: &NetworkParams) -> SignedParams {
    let document = p.to_bytes();
    SignedParams {
        signature: ca.sign(&document).expect("signing"),
        document,
    }
}

impl NodeNet {
    // ----- the registry, as an administrator uses it -----

    /// Publishes a parameter change (new version, signed).
    pub fn set_params(&mut self, change: impl FnOnce(&mut NetworkParams)) {
        self.registry.publish(change);
        self.notify_watchers();
    }

    /// Revokes node `i`'s current certificate (by serial).
    pub fn revoke(&mut self, i: NodeIdx) {
        let serial = self.nodes[i].serial.clone();
        let unix = self.at().unix;
        self.registry.revoked.push((serial, unix));
        self.registry.publish_crl(unix);
        self.notify_watchers();
    }

    /// Bans node `i`: its certificate is revoked and it may not renew.
    pub fn ban(&mut self, i: NodeIdx) {
        self.registry.banned.insert(prefix_of(i));
        self.revoke(i);
    }

    /// One step of the MAC key cycle (CONVENTIONS: sign K1 → sign K1 accept K2 → …).
    pub fn rotate_mac(&mut self) {
        self.registry.next_key += 1;
        let n = self.registry.next_key;
        let fresh = Slot::Key {
            id: format!("k{n:02}"),
            bytes: [n; 32],
        };
        self.registry.slots = mac_cycle::rotate(&self.registry.slots, fresh);
        let st = mac_cycle::state(&self.registry.slots);
        self.set_params(|p| p.mac = st);
    }

    pub(super) fn notify_watchers(&mut self) {
        if !self.registry.up {
            return;
        }
        let at = self.now + self.registry.latency;
        let watchers: Vec<NodeIdx> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].setup.watch && self.running(*i))
            .collect();
        for i in watchers {
            let offer = self.offer_from_registry();
            self.push(at, Ev::Input(i, Box::new(offer)));
            if self.registry_answers_keys(i) {
                let keys = Input::KeyBytes(self.registry.keys());
                self.push(at, Ev::Input(i, Box::new(keys)));
            }
        }
    }

    pub(super) fn offer_from_registry(&self) -> Input {
        Input::Offer {
            signed: Some(self.registry.signed.clone()),
            crl: Some(self.registry.crl.clone()),
            from: None,
        }
    }

    pub(super) fn registry_answers_keys(&self, i: NodeIdx) -> bool {
        let serial = &self.nodes[i].serial;
        self.registry.up && !self.registry.revoked.iter().any(|(s, _)| s == serial)
    }
}
