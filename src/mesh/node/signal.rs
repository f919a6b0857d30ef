//! The shell's side of hole punching (issue 14; protocol in `mesh::punch`): the signal
//! socket on this node's mesh address, and the punch itself — handshakes to every candidate
//! at once from the tunnel endpoint.
//!
//! A signal is a UDP datagram from `[me]:6463` to `[peer]:6463`. It leaves through the TUN
//! like any packet to the mesh, so the data path seals it for the far node (or sends it
//! plain on a direct tunnel), and arrives through the receiver's TUN after its data path
//! checked that the source lies in the sender's certificate prefix (sealed) or is the
//! neighbour's (direct). The socket is bound lazily: the TUN address may still be in
//! duplicate address detection when the shell starts.
#![allow(clippy::disallowed_methods)] // IO shell: spawns the socket's reader and the punch's handshakes

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;

use ipnet::Ipv6Net;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::core::Input;
use super::shell::ShellEvent;
use crate::mesh::punch::{MAX_SIGNAL_BYTES, SIGNAL_PORT};
use crate::mesh::tunnels::TunnelEndpoint;

/// The signal socket (once bound).
pub(super) struct Signals {
    me: Ipv6Addr,
    sock: Option<Arc<UdpSocket>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Signals {
    pub(super) fn new(me: Ipv6Addr) -> Signals {
        Signals {
            me,
            sock: None,
            reader: None,
        }
    }

    /// Binds `[me]:6463` if not yet done, and starts its reader; false while the address
    /// is not usable yet.
    pub(super) fn ensure(&mut self, tx: &mpsc::Sender<ShellEvent>) -> bool {
        if self.sock.is_some() {
            return true;
        }
        let addr = SocketAddrV6::new(self.me, SIGNAL_PORT, 0, 0);
        let std = match std::net::UdpSocket::bind(addr) {
            Ok(s) => s,
            Err(e) => {
                debug!(%addr, error = %e, "signal socket not bound yet");
                return false;
            }
        };
        let sock = match std
            .set_nonblocking(true)
            .and_then(|()| UdpSocket::from_std(std))
        {
            Ok(s) => Arc::new(s),
            Err(e) => {
                debug!(error = %e, "signal socket");
                return false;
            }
        };
        let (reader, tx) = (sock.clone(), tx.clone());
        self.reader = Some(tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_SIGNAL_BYTES + 1];
            loop {
                let Ok((n, from)) = reader.recv_from(&mut buf).await else {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let SocketAddr::V6(from) = from else {
                    continue;
                };
                if from.port() != SIGNAL_PORT {
                    continue;
                }
                let input = Input::Signal {
                    src: *from.ip(),
                    bytes: buf[..n].to_vec(),
                };
                // never wait: a full queue drops the signal (the sender retries later)
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    tx.try_send(ShellEvent::Input(input))
                {
                    return;
                }
            }
        }));
        info!(%addr, "punch signals on");
        self.sock = Some(sock);
        true
    }

    /// Sends `bytes` to `[to]:6463` (dropped when the socket is not bound yet).
    pub(super) fn send(&mut self, tx: &mpsc::Sender<ShellEvent>, to: Ipv6Addr, bytes: &[u8]) {
        if !self.ensure(tx) {
            return;
        }
        if let Some(s) = &self.sock
            && let Err(e) = s.try_send_to(bytes, SocketAddrV6::new(to, SIGNAL_PORT, 0, 0).into())
        {
            debug!(%to, error = %e, "punch signal not sent");
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
    }
}

/// Handshakes to `peer` at every address of `addrs` at once from the tunnel endpoint; the
/// first tunnel made is reported (the others are dropped), none: [`Input::PunchFailed`].
pub(super) fn punch(
    endpoint: Arc<TunnelEndpoint>,
    tx: mpsc::Sender<ShellEvent>,
    peer: Ipv6Net,
    addrs: Vec<SocketAddr>,
) {
    tokio::spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        for addr in addrs {
            let endpoint = endpoint.clone();
            set.spawn(async move { (addr, endpoint.connect_plain(addr, peer).await) });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok((addr, Ok(t))) => {
                    info!(%peer, %addr, "punched through");
                    set.abort_all();
                    let _ = tx.send(ShellEvent::Established(Box::new(t))).await;
                    return;
                }
                Ok((addr, Err(e))) => debug!(%peer, %addr, error = %e, "punch handshake failed"),
                Err(_) => {}
            }
        }
        let _ = tx
            .send(ShellEvent::Input(Input::PunchFailed { peer }))
            .await;
    });
}
