//! Origin authentication of routes, the node's side (issue 13, "Insider-proof routing").
//!
//! The engine (`mesh::babel::origin`) carries signatures and asks a policy; this module is
//! that policy, [`CertStore`], and the signer of our own routes, [`KeySigner`]:
//! * a route for a prefix inside the network prefix is valid only when the prefix is
//!   *exactly* a node prefix whose certificate (CA-signed, not expired at `now`, serial not
//!   in the CRL in force) verifies its signature; a prefix strictly inside a known node
//!   prefix (a more specific) is refused; a prefix inside the network for which no
//!   certificate is known yet is *unknown*: held unselectable while the core asks the
//!   neighbour that announced it for the certificate (`ControlMsg::CertRequest` /
//!   `ControlMsg::Cert`);
//! * a prefix outside the network prefix is valid only when the parameters grant it
//!   (`routes`, `mesh registry authorize`, issue 15) to the node whose router-id announces
//!   it, and that node's certificate (found by its node prefix, as above) verifies the
//!   signature; without a grant it is refused, and with a grant to a node whose certificate
//!   is not known yet it is unknown (the core asks for that node's certificate);
//!
//! Certificates come from TLS (our own, each tunnel peer's) and over the mesh. Budgets:
//! at most [`CERT_CACHE`] certificates (least recently used evicted; ours is pinned; an
//! evicted one is simply asked for again), [`CERT_REQUESTS_PER_NEIGHBOUR`] requests in flight per neighbour
//! (one per prefix in all), each forgotten after [`CERT_REQUEST_TIMEOUT`]; answers to one
//! neighbour's requests at most [`CERT_ANSWER_BURST`] at once, refilled at
//! [`CERT_ANSWER_RATE`] per second (the excess counted in
//! [`Counters::cert_requests_ignored`]). A CRL change or an expiry drops the certificates
//! it concerns and re-evaluates their routes (they become unknown: not selectable).

use std::collections::{BTreeMap, HashSet};

use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::mesh::babel::origin::{
    OriginPolicy, OriginVerdict, RouteSignature, RouteSigner, signed_bytes,
};
use crate::mesh::babel::{RouteKey, RouterId, Seqno};

/// Certificates held (beyond it the least recently used unpinned one goes).
pub const CERT_CACHE: usize = 4096;
/// Certificate requests in flight to one neighbour.
pub const CERT_REQUESTS_PER_NEIGHBOUR: usize = 16;
/// An unanswered certificate request is forgotten (and may be made again) after this.
pub const CERT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Certificate requests answered at once per neighbour.
pub const CERT_ANSWER_BURST: u32 = 64;
/// Certificate requests answered per second per neighbour, after the burst.
pub const CERT_ANSWER_RATE: u32 = 16;

/// What the node needs to sign its routes and check everyone else's.
#[derive(Debug, Clone)]
pub struct OriginSetup {
    /// This node's certificate (DER).
    pub cert_der: Vec<u8>,
    /// Its key, PKCS#8 DER.
    pub key_pkcs8: SecretBytes,
    /// `--use-exit PREFIX`: the exit routes of every other exit node are refused.
    pub exit_only: Option<Ipv6Net>,
}

/// Signs our routes with the node key: ECDSA P-256 / SHA-256, fixed 64-byte r‖s. ECDSA's
/// per-signature nonce comes from the OS (ring's `SystemRandom`, the only way ring signs);
/// it decides nothing: the bytes of a signature differ between runs, never what any node
/// does with it (the simulator stays reproducible).
pub struct KeySigner {
    key: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl KeySigner {
    /// The signer of a PKCS#8 P-256 key.
    pub fn new(pkcs8: &[u8]) -> Result<KeySigner, String> {
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|e| format!("the node key cannot sign routes: {e}"))?;
        Ok(KeySigner { key, rng })
    }

    /// The raw public key (65 bytes).
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// Signs `msg` (ECDSA P-256 / SHA-256, fixed 64-byte r‖s): what binds the sealing
    /// handshake's Noise static key to this node's certificate
    /// ([`LocalIdentity::new`](crate::mesh::seal::handshake::LocalIdentity::new)).
    pub fn sign_bytes(&self, msg: &[u8]) -> Option<Vec<u8>> {
        self.key
            .sign(&self.rng, msg)
            .ok()
            .map(|s| s.as_ref().to_vec())
    }
}

impl RouteSigner for KeySigner {
    fn sign(&mut self, prefix: RouteKey, rid: RouterId, seqno: Seqno) -> Option<RouteSignature> {
        let sig = self
            .key
            .sign(&self.rng, &signed_bytes(prefix, rid, seqno))
            .ok()?;
        sig.as_ref().try_into().ok()
    }
}

/// Checks a route signature against a raw P-256 public key.
pub fn verify_route(
    public_key: &[u8],
    prefix: RouteKey,
    rid: RouterId,
    seqno: Seqno,
    sig: &RouteSignature,
) -> bool {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(&signed_bytes(prefix, rid, seqno), sig)
        .is_ok()
}

/// Why a certificate was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRefused {
    /// Not a certificate, or not signed by the network's CA.
    #[error("not a certificate of this network's CA")]
    NotOurs,
    /// No node prefix, or one outside the network.
    #[error("no node prefix inside the network")]
    NoPrefix,
    /// Expired or not yet valid.
    #[error("expired or not yet valid")]
    Expired,
    /// Its serial is in the CRL in force.
    #[error("revoked")]
    Revoked,
    /// Not the prefix asked for.
    #[error("not the certificate asked for")]
    Unexpected,
}

struct CertEntry {
    serial: String,
    not_before: i64,
    not_after: i64,
    public_key: Vec<u8>,
    der: Vec<u8>,
    /// The node's name in the certificate.
    name: Option<String>,
    /// The node's IPv4 address in the certificate (issue 15).
    ipv4: Option<std::net::Ipv4Addr>,
    used: u64,
    pinned: bool,
}

/// The node's origin policy: the certificates it knows, the CRL in force, the time.
pub struct CertStore {
    network: Ipv6Net,
    ca_der: Vec<u8>,
    revoked: HashSet<String>,
    unix: i64,
    certs: BTreeMap<Ipv6Net, CertEntry>,
    /// Prefixes outside the network → the node prefixes authorised to announce them.
    grants: BTreeMap<Ipv6Net, Vec<Ipv6Net>>,
    /// `--use-exit PREFIX`: the only exit node whose exit route is taken.
    exit_only: Option<Ipv6Net>,
    /// The network's IPv4 range (parameters): a /32 in it is the route of the node whose
    /// certificate names that address.
    ipv4_range: Option<ipnet::Ipv4Net>,
    /// IPv4 subnet grants (parameters `routes_v4`): prefix → the nodes authorised.
    grants_v4: BTreeMap<ipnet::Ipv4Net, Vec<Ipv6Net>>,
    clock: u64,
}

impl CertStore {
    /// An empty store for `network`, trusting `ca_der`, with the CRL `revoked` in force.
    pub fn new(network: Ipv6Net, ca_der: Vec<u8>, revoked: HashSet<String>, unix: i64) -> Self {
        CertStore {
            network,
            ca_der,
            revoked,
            unix,
            certs: BTreeMap::new(),
            grants: BTreeMap::new(),
            exit_only: None,
            ipv4_range: None,
            grants_v4: BTreeMap::new(),
            clock: 0,
        }
    }

    /// The grants of the parameters in force; returns the granted prefixes whose
    /// grantees changed (their routes must be judged again). Grants of prefixes inside
    /// the network (or containing it, but for the exit's `::/0`) are ignored.
    pub fn set_grants(&mut self, grants: &[crate::params::RouteGrant]) -> Vec<Ipv6Net> {
        let mut new: BTreeMap<Ipv6Net, Vec<Ipv6Net>> = BTreeMap::new();
        for g in grants {
            if crate::params::check_grant(&self.network, g.kind, &g.prefix).is_err()
                || !self.network.contains(&g.node)
            {
                continue;
            }
            let nodes = new.entry(g.prefix).or_default();
            if !nodes.contains(&g.node) {
                nodes.push(g.node);
            }
        }
        let changed = new
            .iter()
            .filter(|(p, n)| self.grants.get(*p) != Some(*n))
            .map(|(p, _)| *p)
            .chain(
                self.grants
                    .keys()
                    .filter(|p| !new.contains_key(*p))
                    .copied(),
            )
            .collect();
        self.grants = new;
        changed
    }

    /// The network's IPv4 range of the parameters in force (`None`: no IPv4 route is taken).
    pub fn set_ipv4_range(&mut self, range: Option<ipnet::Ipv4Net>) {
        self.ipv4_range = range;
    }

    /// The IPv4 subnet grants of the parameters in force (ignored without an IPv4 range).
    pub fn set_grants_v4(&mut self, grants: &[crate::params::RouteGrantV4]) {
        self.grants_v4.clear();
        for g in grants {
            if crate::params::check_grant_v4(self.ipv4_range.as_ref(), &g.prefix).is_err()
                || !self.network.contains(&g.node)
            {
                continue;
            }
            let nodes = self.grants_v4.entry(g.prefix).or_default();
            if !nodes.contains(&g.node) {
                nodes.push(g.node);
            }
        }
    }

    /// The node (prefix) granted the IPv4 subnet `prefix` whose router-id is `rid`.
    pub fn grantee_v4(&self, prefix: &ipnet::Ipv4Net, rid: RouterId) -> Option<Ipv6Net> {
        self.grants_v4
            .get(prefix)?
            .iter()
            .find(|n| RouterId(router_id_for(n)) == rid)
            .copied()
    }

    /// The nodes granted the IPv4 subnet `prefix` whose certificate is not held (to ask for).
    pub fn grantees_unknown_v4(&self, prefix: &ipnet::Ipv4Net) -> Vec<Ipv6Net> {
        self.not_held(self.grants_v4.get(prefix))
    }

    /// The IPv4 subnets granted to the node of `node` prefix.
    pub fn granted_to_v4(&self, node: &Ipv6Net) -> Vec<ipnet::Ipv4Net> {
        granted_in(&self.grants_v4, node)
    }

    /// The node (prefix) whose valid certificate names `addr` and whose router-id is `rid`.
    pub fn ipv4_owner(&self, addr: std::net::Ipv4Addr, rid: RouterId) -> Option<Ipv6Net> {
        self.certs
            .iter()
            .find(|(p, e)| e.ipv4 == Some(addr) && RouterId(router_id_for(p)) == rid)
            .map(|(p, _)| *p)
    }

    /// The IPv4 address the certificate held for `prefix` names.
    pub fn ipv4_of(&self, prefix: &Ipv6Net) -> Option<std::net::Ipv4Addr> {
        self.certs.get(prefix).and_then(|e| e.ipv4)
    }

    /// An IPv4 route (issue 15): a /32 inside the network's IPv4 range is valid when the
    /// certificate that names that address belongs to the node of router-id `rid` and
    /// verifies the signature; refused when a certificate held names it for another node or
    /// the announcer's names another address; unknown while neither is held (the node's own
    /// prefix route brings its certificate); anything else is refused.
    fn verdict_v4(
        &mut self,
        prefix: RouteKey,
        rid: RouterId,
        seqno: Seqno,
        sig: &RouteSignature,
    ) -> OriginVerdict {
        let IpAddr::V4(addr) = prefix.addr() else {
            return OriginVerdict::Invalid;
        };
        if prefix.is_source_specific() || self.ipv4_range.is_none() {
            return OriginVerdict::Invalid;
        }
        if !(prefix.len() == 32 && self.ipv4_range.is_some_and(|r| r.contains(&addr))) {
            // a subnet route: granted to the announcer
            let Ok(net) = ipnet::Ipv4Net::new(addr, prefix.len()) else {
                return OriginVerdict::Invalid;
            };
            let Some(node) = self.grantee_v4(&net, rid) else {
                return OriginVerdict::Invalid;
            };
            return self.verify_by(node, prefix, rid, seqno, sig);
        }
        let Some(owner) = self.ipv4_owner(addr, rid) else {
            // Refused when the address is another node's, or the announcer's certificate
            // names another address (or none); unknown while neither is held.
            let taken = self.certs.values().any(|e| e.ipv4 == Some(addr));
            let announcer_known = self.certs.keys().any(|p| RouterId(router_id_for(p)) == rid);
            return if taken || announcer_known {
                OriginVerdict::Invalid
            } else {
                OriginVerdict::Unknown
            };
        };
        self.verify_by(owner, prefix, rid, seqno, sig)
    }

    /// The signature checked with the certificate of `owner` (unknown while not held).
    fn verify_by(
        &mut self,
        owner: Ipv6Net,
        prefix: RouteKey,
        rid: RouterId,
        seqno: Seqno,
        sig: &RouteSignature,
    ) -> OriginVerdict {
        self.clock += 1;
        let clock = self.clock;
        let (unix, revoked) = (self.unix, &self.revoked);
        let Some(e) = self.certs.get_mut(&owner) else {
            return OriginVerdict::Unknown;
        };
        if e.not_after <= unix || e.not_before > unix || revoked.contains(&e.serial) {
            return OriginVerdict::Unknown;
        }
        e.used = clock;
        if verify_route(&e.public_key, prefix, rid, seqno, sig) {
            OriginVerdict::Valid
        } else {
            OriginVerdict::Invalid
        }
    }

    /// `--use-exit PREFIX`: takes the exit route of that exit node only (the others are
    /// refused like unauthorised ones).
    pub fn set_exit_only(&mut self, node: Option<Ipv6Net>) {
        self.exit_only = node;
    }

    /// The exit of `--use-exit PREFIX`, if any.
    pub fn exit_only(&self) -> Option<Ipv6Net> {
        self.exit_only
    }

    /// The prefixes outside the network granted to the node of `node` prefix.
    pub fn granted_to(&self, node: &Ipv6Net) -> Vec<Ipv6Net> {
        granted_in(&self.grants, node)
    }

    /// The nodes granted `prefix` whose certificate is not held (to ask for).
    pub fn grantees_unknown(&self, prefix: &Ipv6Net) -> Vec<Ipv6Net> {
        self.not_held(self.grants.get(prefix))
    }

    /// Those of `nodes` whose certificate is not held.
    fn not_held(&self, nodes: Option<&Vec<Ipv6Net>>) -> Vec<Ipv6Net> {
        nodes
            .into_iter()
            .flatten()
            .filter(|n| !self.certs.contains_key(*n))
            .copied()
            .collect()
    }

    /// Checks `der` (CA signature, node prefix inside the network, validity at the store's
    /// time, CRL) and keeps it. `pinned` ones (ours, tunnel peers') are never evicted.
    pub fn admit(&mut self, der: &[u8], pinned: bool) -> Result<Ipv6Net, CertRefused> {
        let info = identity::cert_info(der).map_err(|_| CertRefused::NotOurs)?;
        let prefix = info.prefix.ok_or(CertRefused::NoPrefix)?;
        if !self.network.contains(&prefix) || info.public_key.len() != 65 {
            return Err(CertRefused::NoPrefix);
        }
        if info.not_before > self.unix || info.not_after <= self.unix {
            return Err(CertRefused::Expired);
        }
        if self.revoked.contains(&info.serial) {
            return Err(CertRefused::Revoked);
        }
        if self
            .certs
            .get(&prefix)
            .is_none_or(|e| e.der.as_slice() != der)
        {
            // Not the one we hold already: check the CA's signature.
            let (_, ca) =
                X509Certificate::from_der(&self.ca_der).map_err(|_| CertRefused::NotOurs)?;
            let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertRefused::NotOurs)?;
            cert.verify_signature(Some(ca.public_key()))
                .map_err(|_| CertRefused::NotOurs)?;
        }
        self.clock += 1;
        let pinned = pinned || self.certs.get(&prefix).is_some_and(|e| e.pinned);
        self.certs.insert(
            prefix,
            CertEntry {
                serial: info.serial,
                not_before: info.not_before,
                not_after: info.not_after,
                public_key: info.public_key,
                der: der.to_vec(),
                name: info.name,
                ipv4: info.ipv4,
                used: self.clock,
                pinned,
            },
        );
        while self.certs.len() > CERT_CACHE {
            let Some(old) = self
                .certs
                .iter()
                .filter(|(_, e)| !e.pinned)
                .min_by_key(|(_, e)| e.used)
                .map(|(p, _)| *p)
            else {
                break;
            };
            self.certs.remove(&old);
        }
        Ok(prefix)
    }

    /// The certificate held for exactly `prefix`.
    pub fn cert_der(&self, prefix: &Ipv6Net) -> Option<&[u8]> {
        self.certs.get(prefix).map(|e| e.der.as_slice())
    }

    /// The node name in the certificate held for exactly `prefix`.
    pub fn name(&self, prefix: &Ipv6Net) -> Option<&str> {
        self.certs.get(prefix).and_then(|e| e.name.as_deref())
    }

    /// Certificates held.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// A new CRL (or network): drops the certificates it revokes; returns their prefixes.
    pub fn set_trust(&mut self, network: Ipv6Net, revoked: HashSet<String>) -> Vec<Ipv6Net> {
        self.network = network;
        self.revoked = revoked;
        self.drop_where(|net, revoked, unix, p, e| {
            !net.contains(p) || revoked.contains(&e.serial) || e.not_after <= unix
        })
    }

    /// The time moves on: drops the certificates that expired; returns their prefixes.
    pub fn set_time(&mut self, unix: i64) -> Vec<Ipv6Net> {
        self.unix = unix;
        self.drop_where(|_, _, unix, _, e| e.not_after <= unix)
    }

    fn drop_where(
        &mut self,
        f: impl Fn(&Ipv6Net, &HashSet<String>, i64, &Ipv6Net, &CertEntry) -> bool,
    ) -> Vec<Ipv6Net> {
        let gone: Vec<Ipv6Net> = self
            .certs
            .iter()
            .filter(|(p, e)| f(&self.network, &self.revoked, self.unix, p, e))
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            self.certs.remove(p);
        }
        gone
    }

    fn verdict(
        &mut self,
        prefix: RouteKey,
        rid: RouterId,
        seqno: Seqno,
        sig: &RouteSignature,
    ) -> OriginVerdict {
        let IpAddr::V6(addr) = prefix.addr() else {
            return self.verdict_v4(prefix, rid, seqno, sig);
        };
        let Ok(net) = Ipv6Net::new(addr, prefix.len()) else {
            return OriginVerdict::Invalid;
        };
        // The one source-specific route a network carries is an exit's `::/0 from` the
        // network prefix (RFC 9079); an exit announces nothing else as `::/0`.
        let exit_route = prefix.src.and_then(|s| net_of(&s)) == Some(self.network);
        if prefix.is_source_specific() != exit_route
            || (exit_route && net.prefix_len() != 0)
            || (!exit_route && net.prefix_len() == 0)
        {
            return OriginVerdict::Invalid;
        }
        // Inside the network: the certificate of exactly that node prefix. Outside: the
        // certificate of the node the parameters grant it to, found by the router-id.
        let owner = if self.network.contains(&net) {
            net
        } else {
            let granted = self.grants.get(&net).and_then(|nodes| {
                nodes
                    .iter()
                    .find(|n| RouterId(router_id_for(n)) == rid)
                    .copied()
            });
            let Some(node) = granted else {
                return OriginVerdict::Invalid;
            };
            if exit_route && self.exit_only.is_some_and(|e| e != node) {
                return OriginVerdict::Invalid;
            }
            node
        };
        self.clock += 1;
        let clock = self.clock;
        let (unix, revoked) = (self.unix, &self.revoked);
        if let Some(e) = self.certs.get_mut(&owner) {
            if e.not_after <= unix || e.not_before > unix || revoked.contains(&e.serial) {
                return OriginVerdict::Unknown;
            }
            e.used = clock;
            return if verify_route(&e.public_key, prefix, rid, seqno, sig) {
                OriginVerdict::Valid
            } else {
                OriginVerdict::Invalid
            };
        }
        if owner != net {
            // A granted node whose certificate is not known yet.
            return OriginVerdict::Unknown;
        }
        // A more specific inside a certified node prefix is nobody's to announce.
        for len in (0..net.prefix_len()).rev() {
            if let Ok(sup) = Ipv6Net::new(addr, len)
                && self.certs.contains_key(&sup.trunc())
            {
                return OriginVerdict::Invalid;
            }
        }
        OriginVerdict::Unknown
    }
}

impl OriginPolicy for CertStore {
    fn verify(
        &mut self,
        prefix: RouteKey,
        rid: RouterId,
        seqno: Seqno,
        sig: &RouteSignature,
    ) -> OriginVerdict {
        self.verdict(prefix, rid, seqno, sig)
    }
}

/// The core's bookkeeping of certificate requests and answers.
#[derive(Default)]
pub(super) struct OriginRequests {
    /// Prefix → (asked on, when).
    in_flight: BTreeMap<Ipv6Net, (TunnelId, Time)>,
    /// Per neighbour: answer tokens and when they were last refilled.
    answers: BTreeMap<TunnelId, (u32, Time)>,
}

fn babel_prefix(net: &Ipv6Net) -> Option<Prefix> {
    Prefix::new(IpAddr::V6(net.network()), net.prefix_len())
}

fn net_of(p: &Prefix) -> Option<Ipv6Net> {
    match p.addr() {
        IpAddr::V6(a) => Ipv6Net::new(a, p.len()).ok(),
        IpAddr::V4(_) => None,
    }
}

impl NodeCore {
    /// Turns origin authentication on (at construction).
    pub(super) fn origin_init(&mut self, now: Now, setup: OriginSetup) {
        let mut store = CertStore::new(
            self.net.params().network,
            self.net.ca_der().to_vec(),
            self.net.revoked().clone(),
            now.unix,
        );
        if let Err(e) = store.admit(&setup.cert_der, true) {
            warn!(error = %e, "this node's certificate cannot vouch for its routes");
        }
        store.set_grants(&self.net.params().routes);
        store.set_ipv4_range(self.net.params().ipv4);
        store.set_grants_v4(&self.net.params().routes_v4);
        store.set_exit_only(setup.exit_only);
        match KeySigner::new(setup.key_pkcs8.expose()) {
            Ok(signer) => self
                .engine
                .set_route_signer(now.time, Some(Box::new(signer))),
            Err(e) => warn!(error = %e, "routes go out unsigned"),
        }
        self.engine.set_origin_policy(Some(Box::new(store)));
        self.origin = Some(OriginRequests::default());
    }

    fn store(&mut self) -> Option<&mut CertStore> {
        self.engine.origin_policy_mut::<CertStore>()
    }

    /// A tunnel came up: its peer's certificate (checked by TLS) is known first-hand.
    pub(super) fn origin_tunnel_up(&mut self, now: Now, peer_cert: &[u8]) {
        self.origin_cert(now, peer_cert, false);
    }

    /// Our own certificate changed (renewal): it vouches for our routes from now on.
    pub(super) fn origin_own_cert(&mut self, now: Now, cert_der: &[u8]) {
        self.origin_cert(now, cert_der, true);
    }

    fn origin_cert(&mut self, now: Now, der: &[u8], pinned: bool) {
        if der.is_empty() || self.origin.is_none() {
            return;
        }
        let Some(store) = self.store() else { return };
        match store.admit(der, pinned) {
            Ok(p) => self.origin_node_known(now, p),
            Err(e) => debug!(error = %e, "certificate not kept for origin checks"),
        }
    }

    /// The certificate of the node of prefix `p` changed: its own routes and those the
    /// parameters grant it are judged again.
    fn origin_node_known(&mut self, now: Now, p: Ipv6Net) {
        let granted = self.store().map(|s| s.granted_to(&p)).unwrap_or_default();
        for net in std::iter::once(p).chain(granted) {
            if let Some(bp) = babel_prefix(&net) {
                self.engine.origin_known(now.time, bp);
            }
        }
        // its IPv4 address and IPv4 subnets (issue 15)
        let own = self
            .store()
            .and_then(|s| s.ipv4_of(&p))
            .and_then(|a| ipnet::Ipv4Net::new(a, 32).ok());
        let granted = self
            .store()
            .map(|s| s.granted_to_v4(&p))
            .unwrap_or_default();
        for net in own.into_iter().chain(granted) {
            if let Some(bp) = Prefix::new(IpAddr::V4(net.network()), net.prefix_len()) {
                self.engine.origin_known(now.time, bp);
            }
        }
    }

    /// The engine holds a route it cannot judge: ask the neighbour that sent it.
    pub(super) fn origin_ask(&mut self, now: Now, prefix: RouteKey, neighbour: NeighbourId) {
        if let IpAddr::V4(a) = prefix.addr() {
            // an IPv4 subnet: what is missing is a grantee's certificate
            let Ok(net) = ipnet::Ipv4Net::new(a, prefix.len()) else {
                return;
            };
            let nodes = self
                .store()
                .map(|s| s.grantees_unknown_v4(&net))
                .unwrap_or_default();
            for node in nodes {
                self.origin_ask_cert(now, node, neighbour);
            }
            return;
        }
        let Some(net) = net_of(&prefix) else { return };
        if !self.net.params().network.contains(&net) {
            // A granted route: what is missing is a granted node's certificate.
            let nodes = self
                .store()
                .map(|s| s.grantees_unknown(&net))
                .unwrap_or_default();
            for node in nodes {
                self.origin_ask_cert(now, node, neighbour);
            }
            return;
        }
        self.origin_ask_cert(now, net, neighbour);
    }

    /// Asks `neighbour` for the certificate of the node prefix `net`.
    fn origin_ask_cert(&mut self, now: Now, net: Ipv6Net, neighbour: NeighbourId) {
        let Some(&tunnel) = self.by_iface.get(&neighbour.iface) else {
            return;
        };
        let Some(o) = self.origin.as_mut() else {
            return;
        };
        o.in_flight
            .retain(|_, (_, at)| now.time.saturating_since(*at) < CERT_REQUEST_TIMEOUT);
        if o.in_flight.contains_key(&net) {
            return;
        }
        if o.in_flight.values().filter(|(t, _)| *t == tunnel).count() >= CERT_REQUESTS_PER_NEIGHBOUR
        {
            self.counters.cert_requests_deferred += 1;
            return;
        }
        o.in_flight.insert(net, (tunnel, now.time));
        self.send_control(tunnel, ControlMsg::CertRequest { prefix: net });
    }

    /// `CertRequest` and `Cert` from a neighbour.
    pub(super) fn origin_control(&mut self, now: Now, tunnel: TunnelId, msg: ControlMsg) {
        use base64::Engine as _;
        match msg {
            ControlMsg::CertRequest { prefix } => {
                let Some(o) = self.origin.as_mut() else {
                    // Not checking origins: we hold no certificates to give.
                    return self.send_control(tunnel, ControlMsg::Cert { prefix, cert: None });
                };
                let (tokens, at) = o
                    .answers
                    .entry(tunnel)
                    .or_insert((CERT_ANSWER_BURST, now.time));
                let elapsed = now.time.saturating_since(*at);
                let refill =
                    u32::try_from(elapsed.as_millis() * u128::from(CERT_ANSWER_RATE) / 1000)
                        .unwrap_or(u32::MAX);
                if refill > 0 {
                    *tokens = tokens.saturating_add(refill).min(CERT_ANSWER_BURST);
                    *at = now.time;
                }
                if *tokens == 0 {
                    self.counters.cert_requests_ignored += 1;
                    return;
                }
                *tokens -= 1;
                let cert = self.store().and_then(|s| {
                    s.cert_der(&prefix)
                        .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
                });
                self.send_control(tunnel, ControlMsg::Cert { prefix, cert });
            }
            ControlMsg::Cert { prefix, cert } => {
                let Some(o) = self.origin.as_mut() else {
                    return;
                };
                // Only answers to what we asked this neighbour are taken.
                if o.in_flight.get(&prefix).is_none_or(|(t, _)| *t != tunnel) {
                    self.counters.certs_refused += 1;
                    return;
                }
                o.in_flight.remove(&prefix);
                let Some(der) =
                    cert.and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
                else {
                    return;
                };
                let Some(store) = self.store() else { return };
                let taken = store.cert_der(&prefix).is_some_and(|d| d == der.as_slice());
                match identity::cert_prefix(&der) {
                    Ok(p) if p == prefix => {}
                    _ => {
                        self.counters.certs_refused += 1;
                        return;
                    }
                }
                if taken {
                    return;
                }
                match store.admit(&der, false) {
                    Ok(p) => self.origin_node_known(now, p),
                    Err(e) => {
                        debug!(%prefix, error = %e, "certificate from a neighbour refused");
                        self.counters.certs_refused += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// The CRL or the parameters changed: drop what they revoke, re-evaluate those routes.
    pub(super) fn origin_trust_changed(&mut self, now: Now) {
        let (network, revoked) = (self.net.params().network, self.net.revoked().clone());
        let routes = self.net.params().routes.clone();
        let v4 = self.net.params().ipv4;
        let routes_v4 = self.net.params().routes_v4.clone();
        let Some(store) = self.store() else { return };
        let gone = store.set_trust(network, revoked);
        let regranted = store.set_grants(&routes);
        store.set_ipv4_range(v4);
        store.set_grants_v4(&routes_v4);
        self.origin_recheck(now, gone);
        for p in regranted {
            info!(prefix = %p, "route grants changed: its routes are judged again");
            if let Some(bp) = babel_prefix(&p) {
                self.engine.origin_known(now.time, bp);
            }
        }
        self.publish_subnet_routes();
    }

    /// Every tick: expired certificates go, unknown routes are asked about again.
    pub(super) fn origin_tick(&mut self, now: Now) {
        let tunnels = &self.tunnels;
        let Some(o) = self.origin.as_mut() else {
            return;
        };
        o.answers.retain(|t, _| tunnels.contains_key(t));
        o.in_flight.retain(|_, (t, at)| {
            tunnels.contains_key(t) && now.time.saturating_since(*at) < CERT_REQUEST_TIMEOUT
        });
        let Some(store) = self.store() else { return };
        let gone = store.set_time(now.unix);
        self.origin_recheck(now, gone);
        // Asked again in turn of every neighbour that announced it, so one that never
        // answers (or answers nothing) does not keep the route held when another could.
        let turn = usize::try_from(now.time.as_millis() / TICK.as_millis() as u64).unwrap_or(0);
        for (p, ns) in self.engine.origin_unknown() {
            if let Some(n) = ns.get(turn % ns.len().max(1)) {
                self.origin_ask(now, p, *n);
            }
        }
    }

    fn origin_recheck(&mut self, now: Now, gone: Vec<Ipv6Net>) {
        for p in gone {
            info!(prefix = %p, "certificate revoked or expired: its routes are no longer selectable");
            self.origin_node_known(now, p);
        }
    }
}

/// The prefixes (IPv6 or IPv4) of `grants` granted to the node of `node` prefix.
fn granted_in<P: Copy>(grants: &BTreeMap<P, Vec<Ipv6Net>>, node: &Ipv6Net) -> Vec<P> {
    grants
        .iter()
        .filter(|(_, n)| n.contains(node))
        .map(|(p, _)| *p)
        .collect()
}

#[cfg(test)]
#[path = "origin_tests.rs"]
mod tests;
