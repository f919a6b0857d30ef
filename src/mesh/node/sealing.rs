//! The node's sealing state for the data path (docs/SEALING.md, "Sharing on the data path"):
//! the [`Sealer`] and the [`CertStore`] its handshakes check certificates against, behind one
//! `Mutex` taken only for handshakes, session set-up and the once-a-second tick, and the
//! sessions published in an `ArcSwap` so that sealing and opening a packet take no global
//! lock. The caller passes `now` (the data path reads the clock).
#![allow(clippy::disallowed_methods)] // IO shell: seeds the Sealer and the Noise static key from the OS RNG; the failure log's rate limit reads the clock

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipnet::Ipv6Net;
use tracing::{info, warn};

use super::core::{CertStore, KeySigner};
use crate::mesh::seal::handshake::LocalIdentity;
use crate::mesh::seal::session::{
    Output, Published, SealConfig, SealCounters, SealError, SealStats, Sealer,
};
use crate::mesh::seal::wire;

/// How often a sealing failure is logged at most (it is counted every time).
const LOG_EVERY: Duration = Duration::from_secs(10);

struct Inner {
    sealer: Sealer,
    certs: CertStore,
    network: Ipv6Net,
    revoked: HashSet<String>,
}

/// Sealing, shared by the data path's tasks and the shell.
pub(crate) struct SealPath {
    inner: Mutex<Inner>,
    published: ArcSwap<Published>,
    counters: Arc<SealCounters>,
    rekey_after: Duration,
    reject_after: Duration,
    rekey_messages: u64,
    base: Instant,
    /// Milliseconds after `base` of the last failure logged (+1; 0 = never).
    last_log: AtomicU64,
}

impl std::fmt::Debug for SealPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealPath").finish_non_exhaustive()
    }
}

/// What [`SealPath::open`] made of a sealed data frame.
#[derive(Debug, Default)]
pub(crate) struct Opened {
    /// Where the opened packet is in the frame's buffer: a frame type byte, then the IPv6
    /// packet (see [`crate::mesh::seal::session::Session::open_in_place`]).
    pub deliver: Option<std::ops::Range<usize>>,
    /// Datagrams to route by their clear destination (a handshake).
    pub send: Vec<Vec<u8>>,
}

/// This node's sealing identity: a fresh Noise static key signed with the node key.
fn identity(cert_der: &[u8], key_pkcs8: &[u8]) -> anyhow::Result<LocalIdentity> {
    let signer = KeySigner::new(key_pkcs8).map_err(anyhow::Error::msg)?;
    LocalIdentity::new(cert_der.to_vec(), |m| signer.sign_bytes(m), rand::random())
        .map_err(|e| anyhow::anyhow!("cannot make the sealing identity: {e}"))
}

impl SealPath {
    /// Sealing for the node of `prefix` in `network`, presenting `cert_der` (key
    /// `key_pkcs8`), checking peers against `ca_der` and the CRL `revoked` at `unix`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        prefix: Ipv6Net,
        network: Ipv6Net,
        ca_der: Vec<u8>,
        revoked: HashSet<String>,
        unix: i64,
        cert_der: &[u8],
        key_pkcs8: &[u8],
        base: Instant,
    ) -> anyhow::Result<SealPath> {
        let cfg = SealConfig::default();
        let (rekey_after, reject_after, rekey_messages) =
            (cfg.rekey_after, cfg.reject_after, cfg.rekey_messages);
        let sealer = Sealer::new(prefix, identity(cert_der, key_pkcs8)?, cfg, rand::random());
        let counters = sealer.counters().clone();
        Ok(SealPath {
            inner: Mutex::new(Inner {
                sealer,
                certs: CertStore::new(network, ca_der, revoked.clone(), unix),
                network,
                revoked,
            }),
            published: ArcSwap::from_pointee(Published::default()),
            counters,
            rekey_after,
            reject_after,
            rekey_messages,
            base,
            last_log: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The sealer's tables stay consistent across a panic (plain map updates).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, inner: &mut Inner) {
        if inner.sealer.take_changed() {
            self.published.store(Arc::new(inner.sealer.published()));
        }
    }

    /// Seals the IPv6 packet `pkt` for the far node of `peer` and gives `send` the datagrams
    /// to send towards it (the sealed packet; a handshake message when a session is due;
    /// nothing while the packet waits for a session). With a session: one allocation, the
    /// datagram itself.
    pub(crate) fn seal(
        &self,
        peer: Ipv6Net,
        pkt: &[u8],
        now: Instant,
        mut send: impl FnMut(Vec<u8>),
    ) -> Result<(), SealError> {
        if let Some(s) = self.published.load().by_prefix.get(&peer)
            && s.age(now) < self.rekey_after
        {
            let mut d = Vec::with_capacity(pkt.len() + wire::OVERHEAD + 1);
            if s.seal(pkt, self.rekey_messages, &mut d).is_ok() {
                self.counters.sealed_tx.fetch_add(1, Ordering::Relaxed);
                send(d);
                return Ok(());
            }
        }
        let r = {
            let mut inner = self.lock();
            let r = inner.sealer.seal(peer, pkt, now);
            self.publish(&mut inner);
            r
        };
        r.map(|v| v.into_iter().for_each(send))
    }

    /// The subnet grants of the parameters in force (sources sessions may use).
    pub(crate) fn set_subnets(&self, granted: Vec<(Ipv6Net, Ipv6Net)>) {
        self.lock().sealer.set_subnets(granted);
    }

    /// A sealed data frame for this node, opened in its own buffer `d` (no allocation):
    /// where the packet now is, and what to send (a handshake towards the frame's source
    /// when its session is unknown here; `prefix_of` gives the node prefix of an address).
    pub(crate) fn open(
        &self,
        d: &mut [u8],
        now: Instant,
        prefix_of: impl FnOnce(Ipv6Addr) -> Option<Ipv6Net>,
    ) -> Result<Opened, SealError> {
        let f = wire::parse_data(d).map_err(|_| SealError::Malformed)?;
        let (receiver, src) = (f.receiver, f.src);
        self.counters.sealed_rx.fetch_add(1, Ordering::Relaxed);
        let fast = self.published.load().by_index.get(&receiver).cloned();
        let s = match fast {
            Some(s) => Some(s),
            None => self.lock().sealer.session_by_index(receiver),
        };
        if let Some(s) = s.filter(|s| s.age(now) < self.reject_after) {
            return s.open_in_place_counted(d, &self.counters).map(|r| Opened {
                deliver: Some(r),
                send: Vec::new(),
            });
        }
        self.counters
            .unknown_session
            .fetch_add(1, Ordering::Relaxed);
        let mut out = Opened::default();
        if let Some(peer) = prefix_of(src) {
            let mut inner = self.lock();
            out.send
                .extend(inner.sealer.unknown_session(src, peer, now));
            self.publish(&mut inner);
        }
        if out.send.is_empty() {
            Err(SealError::UnknownSession)
        } else {
            Ok(out)
        }
    }

    /// A handshake frame for this node: what to send (answers, packets that waited).
    pub(crate) fn handshake(&self, d: &[u8], now: Instant) -> Result<Output, SealError> {
        let mut inner = self.lock();
        let Inner { sealer, certs, .. } = &mut *inner;
        let r = sealer.receive(d, certs, now);
        self.publish(&mut inner);
        r
    }

    /// Once a second: handshakes time out, sessions age out, certificates expire.
    pub(crate) fn tick(&self, now: Instant, unix: i64) {
        let mut inner = self.lock();
        inner.certs.set_time(unix);
        inner.sealer.tick(now);
        let revoked = std::mem::take(&mut inner.revoked);
        let n = inner.sealer.end_untrusted(&revoked, unix);
        inner.revoked = revoked;
        if n > 0 {
            info!(
                sessions = n,
                "sealed sessions ended: the peer's certificate expired"
            );
        }
        self.publish(&mut inner);
    }

    /// A new CRL is in force (where the node applies it to its tunnels): the sessions of
    /// revoked peers end at once; returns how many.
    pub(crate) fn set_revoked(&self, revoked: HashSet<String>, unix: i64) -> usize {
        let mut inner = self.lock();
        let network = inner.network;
        inner.certs.set_trust(network, revoked.clone());
        let n = inner.sealer.end_untrusted(&revoked, unix);
        inner.revoked = revoked;
        if n > 0 {
            info!(sessions = n, "sealed sessions ended: the peer is revoked");
        }
        self.publish(&mut inner);
        n
    }

    /// A renewed certificate: handshakes present it from now on.
    pub(crate) fn set_identity(&self, cert_der: &[u8], key_pkcs8: &[u8]) {
        match identity(cert_der, key_pkcs8) {
            Ok(id) => self.lock().sealer.set_identity(id),
            Err(e) => warn!(error = %e, "sealing keeps presenting the previous certificate"),
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> SealStats {
        self.counters.stats()
    }

    /// Established sessions.
    pub(crate) fn sessions(&self) -> usize {
        self.published.load().by_index.len()
    }

    /// Logs a sealing failure, at most once per [`LOG_EVERY`] (each one is counted).
    pub(crate) fn log_failure(&self, what: &str, peer: &dyn std::fmt::Display, e: SealError) {
        let now = u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_log.load(Ordering::Relaxed);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(%peer, error = %e, "{what} (counted; logged at most every 10 s)");
        }
    }
}

/// The test-only transit recorder (debug builds only, never in a release build): with
/// `RE6MESH_TEST_TRANSIT_DUMP=<file>` set when the node starts, every datagram this node
/// relays and every packet it delivers to its TUN is appended to the file, one line each:
/// `relay <hex>` or `deliver <hex>`. `RE6MESH_TEST_TRANSIT_TAMPER=flip` flips a bit of the
/// last byte of every sealed data frame relayed, `=replay` relays each sealed data frame
/// twice (tests of docs/SEALING.md, tests/seal.rs).
pub(crate) mod test_hook {
    #[cfg(debug_assertions)]
    use std::io::Write;
    #[cfg(debug_assertions)]
    use std::sync::{Mutex, OnceLock};

    /// What the hook does to relayed sealed data frames.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Tamper {
        /// Nothing.
        None,
        /// Flip a bit of the tag (made only by debug builds' hook).
        #[cfg_attr(not(debug_assertions), allow(dead_code))]
        Flip,
        /// Send it twice.
        Replay,
    }

    #[cfg(debug_assertions)]
    struct Hook {
        file: Option<Mutex<std::fs::File>>,
        tamper: Tamper,
    }

    #[cfg(debug_assertions)]
    static HOOK: OnceLock<Hook> = OnceLock::new();

    /// Reads the environment once, at start.
    pub(crate) fn init() {
        #[cfg(debug_assertions)]
        HOOK.get_or_init(|| {
            let file = std::env::var_os("RE6MESH_TEST_TRANSIT_DUMP").and_then(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
                    .map(Mutex::new)
            });
            let tamper = match std::env::var("RE6MESH_TEST_TRANSIT_TAMPER").as_deref() {
                Ok("flip") => Tamper::Flip,
                Ok("replay") => Tamper::Replay,
                _ => Tamper::None,
            };
            if file.is_some() || tamper != Tamper::None {
                tracing::warn!("TEST HOOK: recording or tampering with transit traffic");
            }
            Hook { file, tamper }
        });
    }

    /// Records `bytes` as `kind`.
    #[inline]
    pub(crate) fn record(kind: &str, bytes: &[u8]) {
        #[cfg(debug_assertions)]
        if let Some(Hook { file: Some(f), .. }) = HOOK.get() {
            let mut line = String::with_capacity(kind.len() + 2 + 2 * bytes.len());
            line.push_str(kind);
            line.push(' ');
            line.push_str(&hex::encode(bytes));
            line.push('\n');
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            let _ = f.write_all(line.as_bytes());
        }
        #[cfg(not(debug_assertions))]
        let _ = (kind, bytes);
    }

    /// What to do to a relayed sealed data frame.
    #[inline]
    pub(crate) fn tamper() -> Tamper {
        #[cfg(debug_assertions)]
        if let Some(h) = HOOK.get() {
            return h.tamper;
        }
        Tamper::None
    }
}
