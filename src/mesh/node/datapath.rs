//! The data path: the TUN reader and one datagram reader per tunnel. Packet in,
//! [`Forwarder::decide`] against the lock-free FIB snapshot and the tunnel table, datagram or
//! TUN write out; transit traffic never touches the kernel. Babel datagrams go to the shell's
//! loop within a per-tunnel budget.
//!
//! Sealing (docs/SEALING.md): a packet from the TUN whose next hop is not the destination's
//! own node leaves sealed for that node ([`seal::path::from_tun`]); from a tunnel, plain
//! packets must come from the neighbour's prefix and be for this node, sealed frames for this
//! node are opened (or handed to the handshake), and sealed frames for others are relayed by
//! their clear destination without being opened ([`seal::path::from_tunnel`]).
#![allow(clippy::disallowed_methods)] // IO shell: the data path stamps packets for the ICMPv6 rate limit

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use ipnet::Ipv6Net;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::core::{Input, TunnelId};
use super::sealing::{SealPath, test_hook};
use super::shell::ShellEvent;
use super::traffic::{DropWhy, TrafficBook};
use crate::mesh::babel::IfaceId;
use crate::mesh::fib::FibReader;
use crate::mesh::forward::{Decision, Forwarder, Lookup, RateLimit, parse_header};
use crate::mesh::seal::path::{FromTun, FromTunnel, PathDrop, Subnets};
use crate::mesh::seal::session::SealError;
use crate::mesh::seal::{self, wire};
use crate::mesh::tunnels::frame::{self, Datagram};
use crate::mesh::tunnels::{CloseCode, SendError, TunnelLink};
use crate::tun::{RecvBatch, Tun, WRITE_BATCH};

/// Babel packets of one tunnel waiting for the core: beyond this, the tunnel's Babel packets
/// are dropped (counted) until the core catches up, so one flooding neighbour can neither grow
/// this node's memory nor crowd out the others' packets.
pub(super) const BABEL_BUDGET: usize = 64;

/// Packets for this node's TUN gathered from one batch of reads (written with buffers from
/// the TUN's pool, [`Tun::send_pooled`]).
#[derive(Default)]
pub(super) struct Deliveries {
    /// Each after [`frame::HEADER_LEN`] bytes.
    pub(super) pkts: Vec<BytesMut>,
}

/// A tunnel the data path can send on, with the prefix of the node at its other end.
#[derive(Debug, Clone)]
pub(super) struct Hop {
    pub(super) link: TunnelLink,
    pub(super) peer: Ipv6Net,
}

/// The tunnels the data path can send on, by the engine interface the FIB names.
pub(super) type TunnelTable = ArcSwap<HashMap<IfaceId, Hop>>;

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
    /// Sessions with far nodes, handshakes.
    pub(super) seal: Arc<SealPath>,
    /// The network prefix: an address inside it is never routed by a route outside it
    /// (an exit's `::/0`, a subnet route), so an unreachable node stays unreachable.
    pub(super) network: Ipv6Net,
    /// Subnet routes (issue 15): ours, granted, selected (the shell updates them).
    pub(super) subnets: Arc<ArcSwap<Subnets>>,
    /// IPv4 over the mesh (issue 15, datapath_v4.rs).
    pub(super) v4: Arc<super::datapath_v4::V4State>,
}

impl DataPath {
    /// Reads packets from local applications until the TUN device fails.
    pub(super) async fn run_tun_reader(self) {
        let mut fwd = Forwarder::new(self.me, RateLimit::default());
        // One read may return many packets (a TSO super-segment split by the TUN layer); each
        // is a slice of one large pool after the tunnel framing byte (no allocation or copy
        // per packet).
        let mut batch = RecvBatch::default();
        let mut packets = Vec::with_capacity(WRITE_BATCH);
        let mut local = Deliveries::default();
        loop {
            if let Err(e) = self
                .tun
                .recv_batch(&mut batch, frame::HEADER_LEN, &mut packets)
                .await
            {
                warn!(error = %e, "TUN read failed");
                break;
            }
            // one clock read per batch (the rate limits and sessions need no finer time)
            let now = Instant::now();
            for framed in packets.drain(..) {
                self.route_packet(framed, false, &mut fwd, &mut local, now)
                    .await;
            }
            self.flush(&mut local).await;
        }
    }

    /// Writes the packets gathered for this node's TUN in one batch (GRO-coalesced with
    /// offload: one write and one pass through the kernel's TCP stack per flow and batch).
    async fn flush(&self, d: &mut Deliveries) {
        if d.pkts.is_empty() {
            return;
        }
        if let Err(e) = self.tun.send_pooled(&d.pkts, frame::HEADER_LEN).await {
            for _ in 0..d.pkts.len() {
                self.book.drops.count(DropWhy::TunWriteFailed);
            }
            debug!(error = %e, packets = d.pkts.len(), "TUN write failed");
        }
        d.pkts.clear();
    }

    /// Reads one tunnel's datagrams until it closes, then reports it down with the peer's
    /// close code.
    pub(super) async fn run_tunnel_reader(
        self,
        tunnel: TunnelId,
        link: TunnelLink,
        neighbour: Ipv6Net,
        tx: mpsc::Sender<ShellEvent>,
    ) {
        let mut fwd = Forwarder::new(self.me, RateLimit::default());
        let budget = Arc::new(Semaphore::new(BABEL_BUDGET));
        let traffic = link.traffic().clone();
        let mut datagrams = Vec::with_capacity(WRITE_BATCH);
        let mut local = Deliveries::default();
        loop {
            // Every datagram QUIC already holds, then their packets for this node in one TUN
            // write: the reader writes itself (no task hop), and the batches grow by
            // themselves when the writes fall behind.
            self.flush(&mut local).await;
            if let Err(e) = link.read_datagrams(&mut datagrams, WRITE_BATCH).await {
                debug!(%tunnel, error = %e, "tunnel closed");
                let code = CloseCode::from_error(&e);
                let _ = tx
                    .send(ShellEvent::Input(Input::TunnelDown { tunnel, code }))
                    .await;
                return;
            }
            let now = Instant::now();
            for d in datagrams.drain(..) {
                if matches!(
                    d.first(),
                    Some(&frame::TYPE_SEALED) | Some(&frame::TYPE_SEAL_HANDSHAKE)
                ) {
                    traffic.rx_data(d.len() - frame::HEADER_LEN, now);
                    let framed = d.try_into_mut().unwrap_or_else(|d| BytesMut::from(&d[..]));
                    self.sealed_from_tunnel(framed, neighbour, &mut fwd, &mut local, now)
                        .await;
                    continue;
                }
                match frame::parse(&d) {
                    Ok(Datagram::Babel(b)) => {
                        traffic.rx_babel(b.len(), now);
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
                        traffic.rx_data(p.len(), now);
                        // Zero-copy when quinn hands us the only reference to the buffer.
                        let mut framed =
                            d.try_into_mut().unwrap_or_else(|d| BytesMut::from(&d[..]));
                        let subnets = self.subnets.load_full();
                        match seal::path::from_tunnel_with(
                            &mut framed,
                            self.prefix,
                            neighbour,
                            &subnets,
                        ) {
                            FromTunnel::DeliverPlain => {
                                self.route_packet(framed, true, &mut fwd, &mut local, now)
                                    .await;
                            }
                            FromTunnel::Drop(why) => self.path_drop(why, &tunnel),
                            // not for a plain packet
                            FromTunnel::Open | FromTunnel::Relay(_) => {
                                self.book.drops.count(DropWhy::Malformed);
                            }
                        }
                    }
                    Err(e) => {
                        self.book.drops.count(DropWhy::BadDatagram);
                        debug!(%tunnel, error = %e, "bad datagram");
                    }
                }
            }
        }
    }

    /// Routes one IPv6 packet. `framed` holds the tunnel type byte followed by the packet, so
    /// a packet sent plain leaves in the same buffer it arrived in (no copy, no allocation).
    /// From a tunnel, only packets for this node come here (plain ones checked by
    /// [`seal::path::from_tunnel`], or opened); from the TUN, a packet for a far node whose
    /// next hop is a relay is sealed.
    async fn route_packet(
        &self,
        mut framed: BytesMut,
        from_tunnel: bool,
        fwd: &mut Forwarder,
        local: &mut Deliveries,
        now: Instant,
    ) {
        if framed.get(frame::HEADER_LEN).map(|b| b >> 4) == Some(4) && !from_tunnel {
            // IPv4 from a local application (datapath_v4.rs)
            return self.v4_from_tun(framed).await;
        }
        if !from_tunnel
            && let Some(exit) = framed
                .get(frame::HEADER_LEN..)
                .and_then(parse_header)
                .and_then(|h| self.pinned_exit_for(&self.subnets.load(), &h.dst))
        {
            // for the internet, through the pinned exit (datapath_exit.rs)
            if let Some(icmp) = self.to_pinned_exit(&mut framed, exit, fwd, now) {
                let _ = self.tun.send(&icmp).await;
            }
            return;
        }
        let Some(pkt) = framed.get_mut(frame::HEADER_LEN..) else {
            return;
        };
        let Some(h) = parse_header(pkt) else {
            self.book.drops.count(DropWhy::Malformed);
            return;
        };
        let (lookup, seal_for) = {
            // a short-lived guard: dropped before any await
            let subnets = self.subnets.load();
            if self.prefix.contains(&h.dst) || (from_tunnel && subnets.is_own(&h.dst)) {
                // ours, or for the LAN behind us: the OS forwards it there
                (Lookup::Local, None)
            } else if from_tunnel {
                // transit is sealed, never plain (checked before; kept as a guard)
                self.book.drops.count(DropWhy::PlainTransit);
                return;
            } else {
                // A subnet route's packets are sealed for the node that announces it.
                let hop = self.next_hop(h.dst, h.src).and_then(|(hop, fib_prefix)| {
                    if self.network.contains(&fib_prefix) {
                        Some((hop, fib_prefix, false))
                    } else {
                        subnets.owner(&fib_prefix).map(|o| (hop, o, true))
                    }
                });
                match hop {
                    Some((hop, fib_prefix, subnet)) => {
                        let seal_for = if subnet {
                            Some(fib_prefix)
                        } else {
                            match seal::path::from_tun(h.dst, fib_prefix, hop.peer) {
                                FromTun::Plain => None,
                                FromTun::Seal(p) => Some(p),
                            }
                        };
                        // A sealed packet is OVERHEAD bytes larger and must cross relays whose
                        // tunnels may be smaller: Packet Too Big quotes less.
                        let mtu = if seal_for.is_some() {
                            seal::path::sealed_mtu(hop.link.max_payload())
                        } else {
                            hop.link.max_payload()
                        };
                        (
                            Lookup::Via {
                                next: hop.link,
                                mtu,
                            },
                            seal_for,
                        )
                    }
                    None => (Lookup::NoRoute, None),
                }
            }
        };
        match fwd.decide(pkt, from_tunnel, lookup, now) {
            Decision::Deliver => {
                test_hook::record("deliver", &framed[frame::HEADER_LEN..]);
                if self.v4_deliver(&mut framed, local) || self.exit_deliver(&mut framed, local) {
                    return;
                }
                // written with the rest of the batch ([`DataPath::flush`])
                local.pkts.push(framed);
            }
            Decision::Forward(link) => match seal_for {
                Some(peer) => self.send_sealed(peer, &framed[frame::HEADER_LEN..], &link, now),
                None => self.send_result(link.send_packet(framed)),
            },
            Decision::Reply(icmp) => {
                // The error goes back to the source: to our own TUN if it is ours, else routed
                // like any packet this node sends (sealed for a far node).
                if !from_tunnel {
                    let _ = self.tun.send(&icmp).await;
                } else {
                    self.originate(&icmp, now);
                }
            }
            Decision::Drop(reason) => {
                self.book.drops.count(reason.into());
                debug!(?reason, "packet dropped");
            }
        }
    }

    /// Sends a packet this node made (an ICMPv6 error) towards its destination: plain on a
    /// direct tunnel, sealed through a relay.
    fn originate(&self, pkt: &[u8], now: Instant) {
        let Some(h) = parse_header(pkt) else {
            return;
        };
        let Some((hop, fib_prefix)) = self.next_hop(h.dst, h.src) else {
            return;
        };
        match seal::path::from_tun(h.dst, fib_prefix, hop.peer) {
            FromTun::Plain => self.send_result(hop.link.send_packet_copy(pkt)),
            FromTun::Seal(peer) => self.send_sealed(peer, pkt, &hop.link, now),
        }
    }

    /// Seals `pkt` for the far node of `peer` and sends what that gives on `link` (the next
    /// hop towards it). No plaintext fallback: a packet that cannot be sealed is dropped.
    pub(super) fn send_sealed(&self, peer: Ipv6Net, pkt: &[u8], link: &TunnelLink, now: Instant) {
        match self.seal.seal(peer, pkt, now, |f| {
            self.send_result(link.send_frame(Bytes::from(f)))
        }) {
            Ok(()) => {}
            Err(e) => {
                self.book.drops.count(DropWhy::NoSession);
                self.seal
                    .log_failure("packet for a far node dropped: no sealed session", &peer, e);
            }
        }
    }

    pub(super) fn send_result(&self, r: Result<(), SendError>) {
        match r {
            Ok(()) => {}
            Err(SendError::QueueFull) => {
                self.book.drops.count(DropWhy::QueueFull);
                debug!("tunnel queue full: data packet dropped");
            }
            Err(e) => {
                self.book.drops.count(DropWhy::SendFailed);
                debug!(error = %e, "datagram not sent");
            }
        }
    }

    /// A sealed frame or handshake message from the tunnel to `neighbour`.
    async fn sealed_from_tunnel(
        &self,
        mut framed: BytesMut,
        neighbour: Ipv6Net,
        fwd: &mut Forwarder,
        local: &mut Deliveries,
        now: Instant,
    ) {
        let subnets = self.subnets.load_full();
        match seal::path::from_tunnel_with(&mut framed, self.prefix, neighbour, &subnets) {
            FromTunnel::Open => {
                // The relays each took one off the clear hop limit: the inner packet arrives
                // as if routed hop by hop (traceroute, hop counts).
                let relays = wire::INITIAL_HOPS
                    .saturating_sub(framed.get(wire::HOP_OFFSET).copied().unwrap_or(0));
                let r = if framed.first() == Some(&frame::TYPE_SEALED) {
                    self.seal
                        .open(&mut framed, now, |src| {
                            // (from our own address: a source outside the network is
                            // the exit's we use)
                            self.next_hop(src, self.prefix.addr())
                                .map(|(_, p)| p)
                                .filter(|p| p.contains(&src))
                                // a host behind a node: that node's session
                                .map(|p| subnets.owner(&p).unwrap_or(p))
                                // the internet, from the pinned exit (which relays that
                                // prefer another exit leave this node without a route to)
                                .or_else(|| {
                                    subnets.pinned_exit.filter(|e| {
                                        !self.network.contains(&src) && subnets.is_from(e, &src)
                                    })
                                })
                        })
                        .map(|o| (o.deliver, o.send))
                } else {
                    self.seal.handshake(&framed, now).map(|o| (None, o.send))
                };
                match r {
                    Ok((deliver, send)) => {
                        for d in send {
                            self.forward_frame(Bytes::from(d));
                        }
                        if let Some(at) = deliver {
                            // opened in place: no allocation, no copy of the payload
                            framed.truncate(at.end);
                            framed.advance(at.start);
                            if let Some(t) = framed.first_mut() {
                                *t = frame::TYPE_IPV6;
                            }
                            if let Some(h) = framed.get_mut(frame::HEADER_LEN + 7) {
                                *h = h.saturating_sub(relays).max(1);
                            }
                            self.route_packet(framed, true, fwd, local, now).await;
                        }
                    }
                    Err(e) => {
                        self.book.drops.count(if e == SealError::SpoofedSource {
                            DropWhy::SpoofedSource
                        } else {
                            DropWhy::OpenFailed
                        });
                        let src = wire::source(&framed).map(|a| a.to_string());
                        let src = src.as_deref().unwrap_or("?");
                        debug!(%src, error = %e, "sealed frame for this node refused");
                    }
                }
            }
            FromTunnel::Relay(_) => {
                test_hook::record("relay", &framed);
                let tamper = test_hook::tamper();
                if framed.first() == Some(&frame::TYPE_SEALED) && tamper != test_hook::Tamper::None
                {
                    if tamper == test_hook::Tamper::Replay {
                        self.forward_frame(Bytes::copy_from_slice(&framed));
                    } else if let Some(last) = framed.last_mut() {
                        *last ^= 1;
                    }
                }
                self.forward_frame(framed.freeze());
            }
            FromTunnel::Drop(why) => self.path_drop(why, &neighbour),
            FromTunnel::DeliverPlain => self.book.drops.count(DropWhy::Malformed),
        }
    }

    /// Sends a sealed frame (hop limit already set) to the next hop towards its clear
    /// destination.
    fn forward_frame(&self, d: Bytes) {
        let (Ok((dst, _)), Ok(src)) = (wire::route(&d), wire::source(&d)) else {
            self.book.drops.count(DropWhy::Malformed);
            return;
        };
        match self.next_hop(dst, src) {
            Some((hop, _)) => self.send_result(hop.link.send_frame(d)),
            None => self.book.drops.count(DropWhy::NoRoute),
        }
    }

    fn path_drop(&self, why: PathDrop, from: &dyn std::fmt::Display) {
        self.book.drops.count(match why {
            PathDrop::Malformed => DropWhy::Malformed,
            PathDrop::SpoofedSource => DropWhy::SpoofedSource,
            PathDrop::PlainTransit => DropWhy::PlainTransit,
            PathDrop::HopLimit => DropWhy::SealedHopLimit,
        });
        debug!(%from, ?why, "datagram from a tunnel dropped");
    }

    /// The tunnel towards `dst` for a packet from `src` and the FIB prefix that matched
    /// (`::/0` for the exit route, `::/0 from` the network: source-specific, RFC 9079).
    pub(super) fn next_hop(&self, dst: Ipv6Addr, src: Ipv6Addr) -> Option<(Hop, Ipv6Net)> {
        let e = self.fib.lookup_from(IpAddr::V6(dst), IpAddr::V6(src))?;
        let IpAddr::V6(a) = e.prefix.addr() else {
            return None;
        };
        let prefix = Ipv6Net::new(a, e.prefix.len()).ok()?;
        if !crate::mesh::fib::may_route(&self.network, &dst, &prefix) {
            // An address of the network that no node prefix covers is unreachable, whatever
            // exit or subnet route would match it.
            return None;
        }
        let hop = self.table.load().get(&e.iface).cloned()?;
        Some((hop, prefix))
    }
}
