//! `--use-exit PREFIX` across relays that prefer another exit (issue 15). Babel announces
//! only selected routes and relays forward by their own selection, so a packet routed by the
//! exit route would leave by whichever exit the relays chose. With a pinned exit, a packet
//! from this node to the internet travels instead **inside IPv6** (IPv6-in-IPv6, next header
//! 41, RFC 2473) from this node's address to the exit's node address: it follows the exit
//! node's ordinary route, sealed for it across relays like any packet of this node's. The
//! exit unpacks it when it is delivered — the inner source must belong to the node that sent
//! it, the inner destination outside the network, which an exit treats as its own — and
//! writes it to its TUN; its OS forwards it (NAT66). Replies need nothing new: the exit seals
//! them for this node as usual, and this node accepts a source outside the network from the
//! pinned exit when the parameters grant it `exit`.

use std::net::Ipv6Addr;
use std::time::Instant;

use bytes::BytesMut;
use ipnet::Ipv6Net;
use tracing::debug;

use super::datapath::{DataPath, Deliveries};
use super::traffic::DropWhy;
use crate::mesh::forward::{Decision, Forwarder, IPV6_HEADER, Lookup, parse_header};
use crate::mesh::seal::path::{FromTun, Subnets};
use crate::mesh::seal::{self};
use crate::mesh::tunnels::frame;

/// IPv6-in-IPv6 (RFC 2473).
const NEXT_HEADER_IPV6: u8 = 41;
/// The outer header's hop limit.
const ENCAP_HOP_LIMIT: u8 = 255;

/// The outer IPv6 header of a packet of `len` bytes from `src` to `dst` carrying IPv6.
fn encap_header(src: Ipv6Addr, dst: Ipv6Addr, len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    out.push(NEXT_HEADER_IPV6);
    out.push(ENCAP_HOP_LIMIT);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
}

impl DataPath {
    /// The exit a packet from the TUN to `dst` must be carried to: the pinned one, for an
    /// address outside the network that no selected subnet route covers.
    pub(super) fn pinned_exit_for(&self, subnets: &Subnets, dst: &Ipv6Addr) -> Option<Ipv6Net> {
        let exit = subnets.pinned_exit?;
        let subnet = subnets.via.iter().any(|(p, _)| p.contains(dst));
        (!self.network.contains(dst) && !subnet).then_some(exit)
    }

    /// Sends the packet in `framed` (from the TUN) to the pinned exit `exit` inside IPv6.
    /// Returns the ICMPv6 error due to its source instead, if any.
    pub(super) fn to_pinned_exit(
        &self,
        framed: &mut BytesMut,
        exit: Ipv6Net,
        fwd: &mut Forwarder,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let pkt = framed.get_mut(frame::HEADER_LEN..)?;
        let to = crate::identity::node_address(&exit);
        let route = self.next_hop(to, self.me).map(|(hop, fib_prefix)| {
            let seal_for = match seal::path::from_tun(to, fib_prefix, hop.peer) {
                FromTun::Plain => None,
                FromTun::Seal(p) => Some(p),
            };
            let mtu = if seal_for.is_some() {
                seal::path::sealed_mtu(hop.link.max_payload())
            } else {
                hop.link.max_payload()
            };
            (hop, seal_for, mtu.saturating_sub(IPV6_HEADER))
        });
        let lookup = match &route {
            Some((hop, _, mtu)) => Lookup::Via {
                next: hop.link.clone(),
                mtu: *mtu,
            },
            None => Lookup::NoRoute,
        };
        match fwd.decide(pkt, false, lookup, now) {
            Decision::Forward(link) => {
                let (_, seal_for, _) = route?;
                let mut out = Vec::with_capacity(frame::HEADER_LEN + IPV6_HEADER + pkt.len());
                out.push(frame::TYPE_IPV6);
                encap_header(self.me, to, pkt.len(), &mut out);
                out.extend_from_slice(pkt);
                match seal_for {
                    Some(peer) => self.send_sealed(peer, &out[frame::HEADER_LEN..], &link, now),
                    None => self.send_result(link.send_packet(BytesMut::from(&out[..]))),
                }
                None
            }
            Decision::Reply(icmp) => Some(icmp),
            Decision::Drop(reason) => {
                self.book.drops.count(reason.into());
                None
            }
            Decision::Deliver => None,
        }
    }

    /// `framed` (type byte, IPv6 packet for this node) carries IPv6 for the internet from a
    /// node that pinned this exit: unpacks it and adds it to the TUN's batch `local`. `false`
    /// when it carries no IPv6 (the caller goes on with it as it is).
    pub(super) fn exit_deliver(&self, framed: &mut BytesMut, local: &mut Deliveries) -> bool {
        let Some(outer) = framed.get(frame::HEADER_LEN..) else {
            return false;
        };
        if outer.get(6) != Some(&NEXT_HEADER_IPV6) {
            return false;
        }
        let (Some(h6), Some(inner)) = (parse_header(outer), outer.get(IPV6_HEADER..)) else {
            self.book.drops.count(DropWhy::Malformed);
            return true;
        };
        let Some(h) = parse_header(inner) else {
            self.book.drops.count(DropWhy::Malformed);
            return true;
        };
        // The inner source must be the sending node's (the prefix its address is routed by),
        // the destination outside the network and ours: this node is an exit.
        let sender = self
            .next_hop(h6.src, self.me)
            .map(|(_, p)| p)
            .filter(|p| p.contains(&h6.src) && self.network.contains(&p.network()));
        let subnets = self.subnets.load();
        if !sender.is_some_and(|p| p.contains(&h.src))
            || self.network.contains(&h.dst)
            || !subnets.is_own(&h.dst)
        {
            self.book.drops.count(DropWhy::SpoofedSource);
            debug!(outer = %h6.src, src = %h.src, dst = %h.dst, "tunnelled packet for the internet refused");
            return true;
        }
        let mut pkt = std::mem::take(framed);
        // [type | inner packet]: drop the outer header, the type byte moves up
        let _ = pkt.split_to(IPV6_HEADER);
        if let Some(t) = pkt.first_mut() {
            *t = frame::TYPE_IPV6;
        }
        local.pkts.push(pkt);
        true
    }
}
