//! The data path: the TUN reader and one datagram reader per tunnel. Packet in,
//! [`Forwarder::decide`] against the lock-free FIB snapshot and the tunnel table, datagram or
//! TUN write out; transit traffic never touches the kernel. Babel datagrams go to the shell's
//! loop within a per-tunnel budget.
#![allow(clippy::disallowed_methods)] // IO shell: the data path stamps packets for the ICMPv6 rate limit

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use ipnet::Ipv6Net;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::core::{Input, TunnelId};
use super::shell::ShellEvent;
use super::traffic::{DropWhy, TrafficBook};
use crate::mesh::babel::IfaceId;
use crate::mesh::fib::FibReader;
use crate::mesh::forward::{Decision, Forwarder, Lookup, RateLimit, parse_header};
use crate::mesh::tunnels::frame::{self, Datagram};
use crate::mesh::tunnels::{CloseCode, SendError, TunnelLink};
use crate::tun::{RecvBatch, Tun, WRITE_BATCH};

/// Babel packets of one tunnel waiting for the core: beyond this, the tunnel's Babel packets
/// are dropped (counted) until the core catches up, so one flooding neighbour can neither grow
/// this node's memory nor crowd out the others' packets.
pub(super) const BABEL_BUDGET: usize = 64;

/// The tunnels the data path can send on, by the engine interface the FIB names.
pub(super) type TunnelTable = ArcSwap<HashMap<IfaceId, TunnelLink>>;

/// What the data path needs, shared by its tasks.
#[derive(Clone)]
pub(super) struct DataPath {
    pub(super) prefix: Ipv6Net,
    pub(super) me: Ipv6Addr,
    pub(super) fib: FibReader,
    pub(super) table: Arc<TunnelTable>,
    pub(super) tun: Arc<Tun>,
    /// Babel packets dropped because a tunnel's budget (or the shell's queue) was full.
    pub(super) babel_dropped: Arc<AtomicU64>,
    /// Traffic counters and drops by reason.
    pub(super) book: Arc<TrafficBook>,
}

impl DataPath {
    /// Reads packets from local applications until the TUN device fails; starts the TUN
    /// writer (batched, GRO-coalesced with offload) that delivers what the tunnels bring.
    pub(super) async fn run_tun_reader(self) {
        tokio::spawn(self.tun.clone().run_writer());
        let mut fwd = Forwarder::new(self.me, RateLimit::default());
        // One read may return many packets (a TSO super-segment split by the TUN layer); each
        // is a slice of one large pool after the tunnel framing byte (no allocation or copy
        // per packet).
        let mut batch = RecvBatch::default();
        let mut packets = Vec::with_capacity(WRITE_BATCH);
        loop {
            if let Err(e) = self
                .tun
                .recv_batch(&mut batch, frame::HEADER_LEN, &mut packets)
                .await
            {
                warn!(error = %e, "TUN read failed");
                break;
            }
            for framed in packets.drain(..) {
                self.route_packet(framed, false, &mut fwd).await;
            }
        }
    }

    /// Reads one tunnel's datagrams until it closes, then reports it down with the peer's
    /// close code.
    pub(super) async fn run_tunnel_reader(
        self,
        tunnel: TunnelId,
        link: TunnelLink,
        tx: mpsc::Sender<ShellEvent>,
    ) {
        let mut fwd = Forwarder::new(self.me, RateLimit::default());
        let budget = Arc::new(Semaphore::new(BABEL_BUDGET));
        let traffic = link.traffic().clone();
        loop {
            let d = match link.read_datagram().await {
                Ok(d) => d,
                Err(e) => {
                    debug!(%tunnel, error = %e, "tunnel closed");
                    let code = CloseCode::from_error(&e);
                    let _ = tx
                        .send(ShellEvent::Input(Input::TunnelDown { tunnel, code }))
                        .await;
                    return;
                }
            };
            match frame::parse(&d) {
                Ok(Datagram::Babel(b)) => {
                    traffic.rx_babel(b.len(), Instant::now());
                    let sent = budget
                        .clone()
                        .try_acquire_owned()
                        .ok()
                        .is_some_and(|permit| {
                            tx.try_send(ShellEvent::Babel {
                                tunnel,
                                bytes: b.to_vec(),
                                _permit: permit,
                            })
                            .is_ok()
                        });
                    if !sent {
                        self.babel_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Datagram::Ipv6(p)) => {
                    traffic.rx_data(p.len(), Instant::now());
                    // Zero-copy when quinn hands us the only reference to the buffer.
                    let framed = d.try_into_mut().unwrap_or_else(|d| BytesMut::from(&d[..]));
                    self.route_packet(framed, true, &mut fwd).await;
                }
                Err(e) => {
                    self.book.drops.count(DropWhy::BadDatagram);
                    debug!(%tunnel, error = %e, "bad datagram");
                }
            }
        }
    }

    /// Routes one IPv6 packet. `framed` holds the tunnel type byte followed by the packet, so
    /// a forwarded packet leaves in the same buffer it arrived in (no copy, no allocation).
    async fn route_packet(&self, mut framed: BytesMut, from_tunnel: bool, fwd: &mut Forwarder) {
        let Some(pkt) = framed.get_mut(frame::HEADER_LEN..) else {
            return;
        };
        let Some(h) = parse_header(pkt) else {
            self.book.drops.count(DropWhy::Malformed);
            return;
        };
        let lookup = if self.prefix.contains(&h.dst) {
            Lookup::Local
        } else {
            match self.next_hop(h.dst) {
                Some(link) => {
                    let mtu = link.max_payload();
                    Lookup::Via { next: link, mtu }
                }
                None => Lookup::NoRoute,
            }
        };
        match fwd.decide(pkt, from_tunnel, lookup, Instant::now()) {
            Decision::Deliver => {
                if self.tun.deliver(framed, frame::HEADER_LEN).await.is_err() {
                    self.book.drops.count(DropWhy::TunWriteFailed);
                }
            }
            Decision::Forward(link) => match link.send_packet(framed) {
                Ok(()) => {}
                Err(SendError::QueueFull) => {
                    self.book.drops.count(DropWhy::QueueFull);
                    debug!("tunnel queue full: data packet dropped");
                }
                Err(e) => {
                    self.book.drops.count(DropWhy::SendFailed);
                    debug!(error = %e, "datagram not sent");
                }
            },
            Decision::Reply(icmp) => {
                // The error goes back to the source: to our own TUN if it is ours, else routed.
                if !from_tunnel {
                    let _ = self.tun.send(&icmp).await;
                } else if let Some(h) = parse_header(&icmp)
                    && let Some(link) = self.next_hop(h.dst)
                {
                    let _ = link.send_packet_copy(&icmp);
                }
            }
            Decision::Drop(reason) => {
                self.book.drops.count(reason.into());
                debug!(?reason, "packet dropped");
            }
        }
    }

    fn next_hop(&self, dst: Ipv6Addr) -> Option<TunnelLink> {
        let e = self.fib.lookup(IpAddr::V6(dst))?;
        self.table.load().get(&e.iface).cloned()
    }
}
