//! The control socket's view of the node: a snapshot the shell refreshes from the core, and
//! the requests (`up`, `down`, `exit`) sent to the shell's loop.
#![allow(clippy::disallowed_methods)] // IO shell: uptime for the control API

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::Ipv6Net;
use tokio::sync::mpsc;

use super::core::{Input, Snapshot};
use super::shell::ShellEvent;
use crate::control::{self, ControlHandler, NodeStateName};
use crate::identity;

/// What the control handler shares with the shell.
pub(super) struct Shared {
    pub(super) snapshot: Mutex<Snapshot>,
    pub(super) tx: mpsc::Sender<ShellEvent>,
    pub(super) started: Instant,
    pub(super) prefix: Ipv6Net,
    pub(super) network: Ipv6Net,
    /// This node's IPv4 address (issue 15), when it has one.
    pub(super) ipv4: Option<std::net::Ipv4Addr>,
    /// Babel packets the data path dropped at a tunnel's budget (counted there).
    pub(super) babel_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// The tunnels' traffic and the data path's drops (counted there).
    pub(super) book: Arc<super::traffic::TrafficBook>,
    /// The last exchanges with the registry (recorded by the shell).
    pub(super) registry: RegistryHealth,
    /// Sealing with far nodes (sessions, counters).
    pub(super) seal: Arc<super::sealing::SealPath>,
    /// The tunnel port's mapping on the home router (written by the port mapping task).
    pub(super) port_mapping: Arc<super::portmap_io::PortMapView>,
}

/// What the shell saw of the registry: the last success and the last failure.
pub(super) struct RegistryHealth(Mutex<control::RegistryStatus>);

impl RegistryHealth {
    pub(super) fn new(url: &str) -> RegistryHealth {
        RegistryHealth(Mutex::new(control::RegistryStatus {
            url: url.to_owned(),
            ..Default::default()
        }))
    }

    /// Records the outcome of one request to the registry at `unix`.
    pub(super) fn record<T, E: std::fmt::Display>(&self, r: &Result<T, E>, unix: i64) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(_) => {
                g.last_ok = Some(unix);
                g.reachable = true;
            }
            Err(e) => {
                g.last_error = Some(unix);
                g.error = Some(e.to_string());
                g.reachable = false;
            }
        }
    }

    fn read(&self) -> control::RegistryStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Shared {
    pub(super) fn set_snapshot(&self, s: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn request(&self, input: Input) -> Result<(), String> {
        self.tx
            .try_send(ShellEvent::Input(input))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => "the node is busy; try again".to_string(),
                mpsc::error::TrySendError::Closed(_) => "the node is stopping".to_string(),
            })
    }
}

pub(super) struct Handler(pub(super) Arc<Shared>);

impl ControlHandler for Handler {
    fn status(&self) -> control::Status {
        let s = self.0.snapshot();
        control::Status {
            state: s.state,
            prefix: self.0.prefix.to_string(),
            address: identity::node_address(&self.0.prefix).to_string(),
            network: self.0.network.to_string(),
            params_version: s.params_version,
            protocol: crate::params::PROTOCOL_VERSION,
            tunnels: s.tunnels,
            routes: s.selected,
            uptime_secs: self.0.started.elapsed().as_secs(),
            error: None,
            warnings: s
                .crl_missing
                .then(|| {
                    format!(
                        "the CRL the parameters name has not arrived yet: {} new tunnel(s) held \
                         (control only) until it does",
                        s.held
                    )
                })
                .into_iter()
                .collect(),
            counters: s
                .counters
                .named()
                .into_iter()
                .chain(s.babel_budget.named())
                .chain([(
                    "babel_packets_dropped",
                    self.0
                        .babel_dropped
                        .load(std::sync::atomic::Ordering::Relaxed),
                )])
                .chain(s.babel_origin.named())
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            traffic: self.0.book.totals(),
            drops: self
                .0
                .book
                .drops
                .read()
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            paths: s.paths,
            certificate: Some(control::CertificateStatus {
                name: s.name.clone(),
                expires_in_secs: s
                    .not_after
                    .saturating_sub(time::OffsetDateTime::now_utc().unix_timestamp()),
                serial: s.serial,
                not_after: s.not_after,
            }),
            registry: Some(self.0.registry.read()),
            seal: Some(control::SealStatus {
                sessions: self.0.seal.sessions() as u64,
                stats: self.0.seal.stats(),
            }),
            port_mapping: self.0.port_mapping.read(),
            exit: s.exit.clone(),
            ipv4: self.0.ipv4.map(|a| a.to_string()),
        }
    }
    fn peers(&self) -> Vec<control::Peer> {
        let mut peers = self.0.snapshot().peers;
        self.0.book.fill_peers(&mut peers, Instant::now());
        peers
    }
    fn routes(&self) -> Vec<control::Route> {
        self.0.snapshot().routes
    }
    fn up(&self) -> Result<String, String> {
        self.0.request(Input::Up)?;
        Ok("connecting".into())
    }
    fn down(&self) -> Result<String, String> {
        if self.0.snapshot().state == NodeStateName::Down {
            return Err("the node is already down".into());
        }
        self.0.request(Input::Down)?;
        Ok("disconnected: tunnels closed; `mesh up` reconnects".into())
    }
    fn exit(&self) -> Result<String, String> {
        self.0.request(Input::Exit)?;
        Ok("the node is exiting".into())
    }
}

#[cfg(test)]
mod tests {
    use super::RegistryHealth;

    #[test]
    fn the_registry_record_keeps_the_last_success_and_the_last_failure() {
        let h = RegistryHealth::new("https://reg:8443");
        assert!(!h.read().reachable && h.read().last_ok.is_none());
        h.record(&Ok::<(), String>(()), 100);
        h.record(&Err::<(), _>("connection refused"), 160);
        let r = h.read();
        assert_eq!(
            (r.last_ok, r.last_error, r.reachable),
            (Some(100), Some(160), false)
        );
        assert_eq!(r.error.as_deref(), Some("connection refused"));
        h.record(&Ok::<(), String>(()), 200);
        let r = h.read();
        // the failure stays visible after the registry is back
        assert_eq!(
            (r.last_ok, r.last_error, r.reachable),
            (Some(200), Some(160), true)
        );
    }
}
