//! IPv4 over the mesh, the data path's side (issue 15; the decisions are in
//! [`crate::mesh::forward_v4`]). An IPv4 packet from the TUN goes, inside an IPv6 packet, to
//! the node that originates the route of its destination — plain to a neighbour, sealed for
//! it across relays, like any packet of this node's. An IPv6 packet for this node that
//! carries IPv4 is unpacked (its IPv4 source checked against the node that sent it, its TTL
//! taken down by the relays crossed) and written to the TUN.
#![allow(clippy::disallowed_methods)] // IO shell: stamps packets for the ICMPv4 rate limit

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tracing::debug;

use super::datapath::{DataPath, Deliveries};
use super::traffic::DropWhy;
use crate::mesh::forward::{RateLimit, parse_header};
use crate::mesh::forward_v4::{self as v4, V4Decision, V4Forwarder};
use crate::mesh::seal::path::FromTun;
use crate::mesh::seal::{self};
use crate::mesh::tunnels::frame;
use crate::wire::ipv4;

/// The IPv4 state the data path's tasks share (ICMPv4 errors are rare: one lock for them).
#[derive(Debug)]
pub(super) struct V4State {
    /// This node's IPv4 address (read on every packet: outside the lock).
    me: Option<Ipv4Addr>,
    fwd: Mutex<V4Forwarder>,
}

impl V4State {
    /// IPv4 with `me` as this node's address (`None`: the network has no IPv4).
    pub(super) fn new(me: Option<Ipv4Addr>) -> V4State {
        V4State {
            me,
            fwd: Mutex::new(V4Forwarder::new(me, RateLimit::default())),
        }
    }

    fn fwd(&self) -> std::sync::MutexGuard<'_, V4Forwarder> {
        self.fwd.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DataPath {
    /// An IPv4 packet from the TUN (`framed`: the frame type byte, then the packet).
    pub(super) async fn v4_from_tun(&self, framed: BytesMut) {
        let Some(pkt) = framed.get(frame::HEADER_LEN..) else {
            return;
        };
        if let Some(icmp) = self.v4_send(pkt, Instant::now()) {
            // an error for a local application
            let _ = self.tun.send(&icmp).await;
        }
    }

    /// Sends the IPv4 packet `pkt` (from the TUN, or an ICMPv4 error this node made) to the
    /// node that originates the route of its destination. Returns the ICMPv4 error due to
    /// its source instead, if any.
    fn v4_send(&self, pkt: &[u8], now: Instant) -> Option<Vec<u8>> {
        let Some(h) = ipv4::parse(pkt) else {
            self.book.drops.count(DropWhy::Malformed);
            return None;
        };
        let owner = self.subnets.load().v4_owner(&h.dst);
        let route = owner.and_then(|owner| {
            let dst6 = crate::identity::node_address(&owner);
            let (hop, fib_prefix) = self.next_hop(dst6, self.me)?;
            let seal_for = match seal::path::from_tun(dst6, fib_prefix, hop.peer) {
                FromTun::Plain => None,
                FromTun::Seal(p) => Some(p),
            };
            let mtu = if seal_for.is_some() {
                seal::path::sealed_mtu(hop.link.max_payload())
            } else {
                hop.link.max_payload()
            };
            Some((dst6, hop, seal_for, mtu))
        });
        match self
            .v4
            .fwd()
            .from_tun(pkt, route.as_ref().map(|r| r.3), now)
        {
            V4Decision::Pass => {}
            V4Decision::Reply(icmp) => return Some(icmp),
            V4Decision::Drop(why) => {
                self.book.drops.count(why.into());
                return None;
            }
        }
        let (dst6, hop, seal_for, _) = route?;
        let mut out = Vec::with_capacity(frame::HEADER_LEN + v4::ENCAP_OVERHEAD + pkt.len());
        out.push(frame::TYPE_IPV6);
        v4::emit_encap_header(self.me, dst6, pkt.len(), &mut out);
        out.extend_from_slice(pkt);
        match seal_for {
            Some(peer) => self.send_sealed(peer, &out[frame::HEADER_LEN..], &hop.link, now),
            None => self.send_result(hop.link.send_packet(BytesMut::from(&out[..]))),
        }
        None
    }

    /// `framed` (type byte, IPv6 packet for this node) carries IPv4: unpacks it and adds it
    /// to the TUN's batch `local`. `false` when it carries no IPv4 (the caller delivers it as
    /// it is).
    pub(super) fn v4_deliver(&self, framed: &mut BytesMut, local: &mut Deliveries) -> bool {
        let Some(outer) = framed.get(frame::HEADER_LEN..) else {
            return false;
        };
        let Some((relays, at)) = v4::decap(outer) else {
            return false;
        };
        let Some(h6) = parse_header(outer) else {
            return false;
        };
        let now = Instant::now();
        let inner = &outer[at..];
        let Some(h) = ipv4::parse(inner) else {
            self.book.drops.count(DropWhy::Malformed);
            return true;
        };
        // The IPv4 source must be the sending node's (the route to it leads there), and the
        // packet must be for this node.
        let subnets = self.subnets.load();
        let from_sender = subnets
            .v4_owner(&h.src)
            .is_some_and(|n| n.contains(&h6.src));
        let for_us = self.v4.me == Some(h.dst) || subnets.own_v4.iter().any(|p| p.contains(&h.dst));
        if !from_sender || !for_us {
            self.book.drops.count(DropWhy::SpoofedSource);
            debug!(src = %h.src, dst = %h.dst, "IPv4 packet from the mesh refused");
            return true;
        }
        let mut pkt = std::mem::take(framed);
        pkt.advance(at);
        // [type | IPv4 packet]: the type byte moves up to just before the IPv4 packet
        if let Some(t) = pkt.first_mut() {
            *t = frame::TYPE_IPV6;
        }
        let decision = match pkt.get_mut(frame::HEADER_LEN..) {
            Some(p) => self.v4.fwd().arrived(p, relays, now),
            None => return true,
        };
        match decision {
            V4Decision::Pass => {
                // written with the rest of the batch ([`DataPath::flush`])
                local.pkts.push(pkt);
            }
            V4Decision::Reply(icmp) => {
                if let Some(back) = self.v4_send(&icmp, now) {
                    debug!(len = back.len(), "no route back for an ICMPv4 error");
                }
            }
            V4Decision::Drop(why) => self.book.drops.count(why.into()),
        }
        true
    }
}
