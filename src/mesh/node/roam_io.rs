//! The host's addresses for the node (roaming, issue 14): listed at start, then again on
//! every change the OS reports — Linux: rtnetlink (`platform::NetWatch`), debounced
//! `NETWORK_SETTLE` (200 ms); elsewhere, or when netlink cannot be opened: every
//! [`LOCAL_ADDRESS_INTERVAL`]. A change reaches the shell as [`ShellEvent::Network`]; the
//! shell names the tunnels it strands and the core decides (`core/roam.rs`).
#![allow(clippy::disallowed_methods)] // IO shell: a task that waits on the OS and reads the clock

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tracing::warn;

use super::core::Input;
use super::shell::ShellEvent;

/// How often the addresses are listed again where the OS does not say when they change.
pub(super) const LOCAL_ADDRESS_INTERVAL: Duration = Duration::from_secs(30);
/// Linux: a change is acted on once the OS has said nothing more for this long (a move is a burst
/// of messages: the old address and route go, a link comes, the new address and route).
#[cfg(target_os = "linux")]
pub(super) const NETWORK_SETTLE: Duration = Duration::from_millis(200);
/// ... but no later than this after the first message of the burst.
#[cfg(target_os = "linux")]
pub(super) const NETWORK_SETTLE_MAX: Duration = Duration::from_secs(1);

/// Starts the task. `changed` is notified whenever the addresses differ from the last look
/// (the port mapping asks the router again).
pub(super) fn spawn(tx: mpsc::Sender<ShellEvent>, tun_name: String, changed: Arc<Notify>) {
    tokio::spawn(async move {
        tokio::select! {
            _ = watch(&tx, &tun_name, &changed) => {}
            _ = tx.closed() => {}
        }
    });
}

async fn watch(tx: &mpsc::Sender<ShellEvent>, tun_name: &str, changed: &Notify) {
    let mut last = local_addresses(tun_name);
    if tx
        .send(ShellEvent::Input(Input::LocalAddresses(last.clone())))
        .await
        .is_err()
    {
        return;
    }
    let mut os = OsWatch::open();
    loop {
        let route = os.next().await;
        let addrs = local_addresses(tun_name);
        let moved = addrs != last;
        if moved {
            changed.notify_one();
        }
        if moved || route {
            last = addrs.clone();
            if tx.send(ShellEvent::Network(addrs)).await.is_err() {
                return;
            }
        }
    }
}

/// Where changes come from.
struct OsWatch {
    #[cfg(target_os = "linux")]
    netlink: Option<crate::platform::NetWatch>,
}

impl OsWatch {
    fn open() -> OsWatch {
        #[cfg(target_os = "linux")]
        {
            let netlink = crate::platform::NetWatch::open()
                .map_err(|e| {
                    warn!(error = %e, "cannot watch the host's network (netlink); looking every 30 s")
                })
                .ok();
            OsWatch { netlink }
        }
        #[cfg(not(target_os = "linux"))]
        {
            OsWatch {}
        }
    }

    /// Waits for the next change (settled); true when a default route was among it.
    async fn next(&mut self) -> bool {
        #[cfg(target_os = "linux")]
        if let Some(w) = &mut self.netlink {
            match settled(w).await {
                Ok(route) => return route,
                Err(e) => {
                    warn!(error = %e, "the watch of the host's network failed; looking every 30 s");
                    self.netlink = None;
                }
            }
        }
        tokio::time::sleep(LOCAL_ADDRESS_INTERVAL).await;
        false
    }
}

/// The next burst of kernel messages, once it has settled: whether a default route changed.
#[cfg(target_os = "linux")]
async fn settled(w: &mut crate::platform::NetWatch) -> std::io::Result<bool> {
    let first = w.next().await?;
    let mut change = first;
    let until = tokio::time::Instant::now() + NETWORK_SETTLE_MAX;
    loop {
        let wait = NETWORK_SETTLE.min(until.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, w.next()).await {
            Ok(c) => change = change.merge(c?),
            Err(_quiet) => break,
        }
        if tokio::time::Instant::now() >= until {
            break;
        }
    }
    Ok(change.default_route)
}

/// The host's interface addresses, but the TUN's own and loopback ones (the core filters
/// the rest: link-local, inside the mesh), sorted.
pub(super) fn local_addresses(tun_name: &str) -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => {
            let mut v: Vec<IpAddr> = list
                .into_iter()
                .filter(|i| i.name != tun_name && !i.is_loopback())
                .map(|i| i.ip())
                .collect();
            v.sort();
            v.dedup();
            v
        }
        Err(e) => {
            warn!(error = %e, "cannot list this host's addresses");
            Vec::new()
        }
    }
}
