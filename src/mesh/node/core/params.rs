//! Parameters, CRL, MAC keys and the certificate: offers taken and passed on, the CRL applied,
//! renewal as a small state machine.

use super::*;

/// The Babel router-id of the node owning `prefix`: the first 8 bytes of SHA-256 of its CIDR
/// text, never all zeros or all ones (RFC 8966 forbids those). Stable across restarts and
/// unique per prefix (the first 64 bits alone would collide for node prefixes longer than /64
/// inside one /64).
pub fn router_id_for(prefix: &Ipv6Net) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(prefix.to_string().as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    if id == [0; 8] || id == [0xff; 8] {
        id[7] ^= 1;
    }
    id
}

/// The one sentence a node says when the network requires a newer protocol.
pub fn protocol_too_old(params: &NetworkParams) -> Option<String> {
    (params.min_protocol > PROTOCOL_VERSION).then(|| {
        format!(
            "this network now requires protocol {} but this mesh speaks {}; upgrade mesh",
            params.min_protocol, PROTOCOL_VERSION
        )
    })
}

/// The MAC keys of `params` from the key bytes known.
pub fn mac_keys(params: &NetworkParams, keys: &[(String, SecretBytes)]) -> MacKeys {
    let find = |id: &Option<String>, slot: u32| {
        id.as_ref()
            .and_then(|id| keys.iter().find(|(k, _)| k == id))
            .map(|(_, b)| MacKey::new(slot, b.expose().to_vec()))
    };
    let sign = find(&params.mac.sign, 1);
    let accept = find(&params.mac.accept, 2);
    // Rotation step (sign K2, accept K1) reached before K2's bytes: everybody still accepts
    // K1, so sign with it until K2 arrives rather than send unsigned packets nobody takes.
    let sign = match (sign, &accept) {
        (None, Some(a)) => Some(MacKey::new(1, a.bytes().to_vec())),
        (s, _) => s,
    };
    MacKeys {
        sign,
        accept: accept.into_iter().collect(),
        accept_unsigned: params.mac.accept_unsigned,
    }
}

/// When to renew: 30 days before expiry, or half-way through a shorter validity (the registry
/// backdates `not_before` for clock skew; that is not validity).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before - identity::CERT_BACKDATE_SECS).max(0);
    not_after - (30 * 86_400).min(lifetime / 2)
}

pub(super) fn timers_of(params: &NetworkParams) -> Timers {
    let hello = Duration::from_secs(u64::from(params.hello_interval.max(1)));
    Timers {
        hello,
        update: hello * 4,
    }
}

impl NodeCore {
    /// The signed parameters and CRL in force, for a neighbour.
    pub(super) fn params_message(&self) -> ControlMsg {
        use base64::Engine as _;
        ControlMsg::Params {
            params: self.net.signed().to_json(),
            crl: self
                .net
                .crl_der()
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d)),
        }
    }

    /// Takes newer parameters and/or a CRL from the registry or a neighbour, applies them
    /// without restarting and passes them on to the other neighbours.
    pub(super) fn offer(
        &mut self,
        now: Now,
        signed: Option<SignedParams>,
        crl: Option<Vec<u8>>,
        from: Option<TunnelId>,
    ) {
        let old = self.net.params().clone();
        let applied = match self.net.offer(signed.as_ref(), crl.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                let who = from
                    .and_then(|i| self.tunnels.get(&i))
                    .map(|t| t.peer_prefix.to_string())
                    .unwrap_or_else(|| "the registry".into());
                warn!(from = %who, error = %e, "refused parameters or CRL");
                self.counters.offers_refused += 1;
                return;
            }
        };
        if let Some(i) = from
            && let Some(t) = self.tunnels.get_mut(&i)
            && let Some(v) = applied.offered
        {
            // The sender has at least what it sent.
            t.peer_params = t.peer_params.max(v);
        }
        if !applied.any() {
            return;
        }
        self.actions.push_back(Action::SaveParams {
            signed: Box::new(self.net.signed().clone()),
            crl: self.net.crl_to_store().map(<[u8]>::to_vec),
        });
        if applied.params {
            let p = self.net.params().clone();
            info!(version = p.version, changed = ?old.diff(&p), "network parameters applied");
            if let Some(msg) = protocol_too_old(&p) {
                // Pass the news on before stopping: our neighbours must stop too.
                tracing::error!("{msg}");
                self.fatal = Some(msg.clone());
                self.announce(from);
                self.stop(Some(msg));
                return;
            }
            self.tm.set_config(PolicyConfig::from_params(
                &p.tunnel,
                &p.countries,
                Some(self.prefix),
                self.country.clone(),
            ));
            if !self.fixed_timers && p.hello_interval != old.hello_interval {
                self.timers = timers_of(&p);
                for t in self.tunnels.values() {
                    let _ = self.engine.set_timers(now.time, t.iface, self.timers);
                }
                self.push_lan_pace();
            }
            self.push_hello();
            // Key ids we hold bytes for take effect now; new ids are fetched from the
            // registry (only authenticated, non-revoked nodes get them).
            self.set_mac_keys();
            let missing = [&p.mac.sign, &p.mac.accept]
                .into_iter()
                .flatten()
                .any(|id| !self.keys.iter().any(|(k, _)| k == id));
            if missing {
                self.actions.push_back(Action::FetchKeys);
            }
            // Route grants may have changed.
            self.origin_trust_changed(now);
        }
        if applied.crl {
            self.apply_crl(now);
        }
        self.announce(from);
        self.snapshot_dirty = true;
    }

    /// Sends the parameters and CRL in force to every neighbour but `from`.
    pub(super) fn announce(&mut self, from: Option<TunnelId>) {
        let m = self.params_message();
        let v = self.net.params().version;
        let mut to = Vec::new();
        for (id, t) in self.tunnels.iter_mut() {
            if Some(*id) != from {
                t.peer_params = t.peer_params.max(v);
                to.push(*id);
            }
        }
        for id in to {
            self.send_control(id, m.clone());
        }
    }

    /// Applies the CRL in force at once: handshakes from revoked serials are refused from now
    /// on and live tunnels to them are closed; if our own serial is in it, we renew. The peer's
    /// addresses stay in the cache: a renewal supersedes (revokes) a node's older certificate,
    /// so a revoked serial is most often a peer that will come back with its new one, while a
    /// banned peer fails every handshake and backs off in the cache.
    pub(super) fn apply_crl(&mut self, now: Now) {
        let revoked = self.net.revoked().clone();
        if revoked.contains(&self.my_serial) && !self.revoked {
            warn!("this node's certificate is revoked; renewing it");
            self.revoked = true;
        }
        let dead: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|(_, t)| revoked.contains(&t.peer_serial))
            .map(|(id, _)| *id)
            .collect();
        self.actions.push_back(Action::SetRevoked(revoked));
        for id in dead {
            self.close(now, id, CloseCode::Revoked, "peer certificate revoked");
        }
        self.release_held();
        self.origin_trust_changed(now);
        self.snapshot_dirty = true;
    }

    /// Starts a renewal with the registry (same key, same prefix, new serial) when the
    /// certificate is revoked or close to expiry.
    pub(super) fn maybe_renew(&mut self, now: Now) {
        let due = self.revoked || now.unix >= renew_at(self.not_before, self.not_after);
        let Renewing::Idle { next_try } = self.renewing else {
            return;
        };
        if !due || now.time < next_try {
            return;
        }
        self.renewing = Renewing::Requested;
        info!(revoked = self.revoked, "renewing this node's certificate");
        self.actions.push_back(Action::Renew);
    }

    pub(super) fn renewed(&mut self, now: Now, r: Result<Renewal, ClientError>) {
        if !matches!(self.renewing, Renewing::Requested) {
            debug!("a renewal answer nobody waits for; ignored");
            return;
        }
        let retry = Renewing::Idle {
            next_try: now.time + RENEW_RETRY,
        };
        match r {
            Err(e) => {
                warn!(error = %e, "certificate renewal failed; retrying in a minute");
                self.renewing = retry;
            }
            Ok(c) if c.prefix != self.prefix => {
                warn!(got = %c.prefix, "the registry renewed with another prefix; ignored");
                self.renewing = retry;
            }
            Ok(c) => {
                self.actions.push_back(Action::InstallCertificate {
                    cert_der: c.cert_der.clone(),
                });
                self.renewing = Renewing::Installing(Box::new(c));
            }
        }
    }

    pub(super) fn installed(&mut self, now: Now, r: Result<(), InstallError>) {
        let Renewing::Installing(c) = std::mem::replace(
            &mut self.renewing,
            Renewing::Idle {
                next_try: now.time + RENEW_RETRY,
            },
        ) else {
            debug!("an installed certificate nobody waits for; ignored");
            return;
        };
        if let Err(e) = r {
            warn!(error = %e, "retrying the renewal in a minute");
            return;
        }
        info!(serial = %c.serial, not_after = c.not_after, "certificate renewed");
        self.my_serial = c.serial.clone();
        self.my_name = crate::identity::cert_info(&c.cert_der)
            .ok()
            .and_then(|i| i.name);
        self.not_before = c.not_before;
        self.not_after = c.not_after;
        self.revoked = false;
        self.renewing = Renewing::Idle {
            next_try: now.time + RENEW_SETTLE,
        };
        self.origin_own_cert(now, &c.cert_der);
        // Parameters that came with the certificate (the CRL names our old serial).
        self.offer(now, Some(c.signed_params), None, None);
        self.snapshot_dirty = true;
    }

    /// Parameters and CRL from the registry now (at most every [`REGISTRY_FETCH_INTERVAL`]).
    pub(super) fn fetch_from_registry(&mut self, now: Now) {
        if self
            .last_registry_fetch
            .is_some_and(|t| now.time.saturating_since(t) < REGISTRY_FETCH_INTERVAL)
        {
            self.registry_fetch_pending = true;
            return;
        }
        self.registry_fetch_pending = false;
        self.last_registry_fetch = Some(now.time);
        self.actions.push_back(Action::FetchParams);
    }

    /// The MAC keys of the parameters in force, for the Babel engine and LAN discovery.
    pub(super) fn set_mac_keys(&mut self) {
        let keys = mac_keys(self.net.params(), &self.keys);
        self.actions
            .push_back(Action::LanAuth(Box::new(LanAuth::new(
                self.net.params(),
                keys.clone(),
            ))));
        self.engine.set_mac_keys(keys);
    }
}

/// The exit route's key (issue 15, RFC 9079): `::/0 from` the network prefix.
pub fn exit_key(network: &Ipv6Net) -> crate::mesh::babel::RouteKey {
    let any = Prefix::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
        .expect("a zero length is always valid");
    let net = Prefix::new(IpAddr::V6(network.network()), network.prefix_len());
    crate::mesh::babel::RouteKey::from_source(any, net)
}
