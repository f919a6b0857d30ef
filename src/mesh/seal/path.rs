//! The data path's decisions about sealing (docs/SEALING.md, "Data path"), sans-IO: what a
//! packet from the TUN needs (plain on a direct tunnel, sealed otherwise) and what a
//! datagram from a tunnel is (ours to deliver or open, a sealed frame to relay, or a drop).
//! The IO shell only calls these and [`Sealer`](super::session::Sealer).

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::wire;
use crate::mesh::forward::parse_header;
use crate::mesh::tunnels::frame;

/// How a packet from the TUN leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromTun {
    /// The next hop is the destination's own node: QUIC protects it end to end, send as is.
    Plain,
    /// A relay carries it: seal it for the node of this prefix.
    Seal(Ipv6Net),
}

/// Subnet routes as the data path sees them (issue 15): a LAN behind a node, reachable
/// through the mesh. Its packets are always sealed for (and by) that node, never plain:
/// the node's neighbours would take them for plain transit otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subnets {
    /// Prefixes this node advertises: packets for them are ours (to the TUN; the OS
    /// forwards them to the LAN).
    pub own: Vec<Ipv6Net>,
    /// Subnet grants of the parameters, `(prefix, node prefix)`: sources in `prefix` are
    /// that node's.
    pub granted: Vec<(Ipv6Net, Ipv6Net)>,
    /// Selected subnet routes, `(prefix, the node that announces it)`.
    pub via: Vec<(Ipv6Net, Ipv6Net)>,
    /// The exit in use (its node prefix): packets routed by the exit route (`::/0 from` the
    /// network) are sealed for it.
    pub exit: Option<Ipv6Net>,
    /// Selected IPv4 routes (issue 15), `(prefix, the node that originates it)`: IPv4
    /// packets for `prefix` travel to that node, and IPv4 sources in it are that node's.
    pub v4: Vec<(ipnet::Ipv4Net, Ipv6Net)>,
    /// IPv4 prefixes this node advertises: IPv4 packets for them are ours (to the TUN; the
    /// OS forwards them to the LAN).
    pub own_v4: Vec<ipnet::Ipv4Net>,
    /// `--use-exit PREFIX`: the exit node this node's internet traffic must leave by, carried
    /// to it inside IPv6 (`node/datapath_exit.rs`) so that relays preferring another exit
    /// cannot divert it.
    pub pinned_exit: Option<Ipv6Net>,
}

impl Subnets {
    /// The node that originates the longest selected IPv4 route to `dst`.
    pub fn v4_owner(&self, dst: &std::net::Ipv4Addr) -> Option<Ipv6Net> {
        self.v4
            .iter()
            .filter(|(p, _)| p.contains(dst))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|(_, n)| *n)
    }

    /// `dst` is in a prefix this node advertises.
    pub fn is_own(&self, dst: &Ipv6Addr) -> bool {
        self.own.iter().any(|p| p.contains(dst))
    }

    /// `src` may come from the node of prefix `node`: its own prefix or a subnet granted
    /// to it.
    pub fn is_from(&self, node: &Ipv6Net, src: &Ipv6Addr) -> bool {
        node.contains(src)
            || self
                .granted
                .iter()
                .any(|(p, n)| n == node && p.contains(src))
    }

    /// The node that announces the selected subnet route `prefix`; for `::/0` (the exit
    /// route), the exit in use.
    pub fn owner(&self, prefix: &Ipv6Net) -> Option<Ipv6Net> {
        if prefix.prefix_len() == 0 {
            return self.exit;
        }
        self.via.iter().find(|(p, _)| p == prefix).map(|(_, n)| *n)
    }
}

/// The prefixes that cover exactly the addresses outside `network`: one per bit of its
/// length (the sibling at each level), so `/48` gives 48. An exit node owns them all
/// (`Subnets::own`), and an exit grant gives them all to its node (`Subnets::granted`,
/// the sealed sessions' source checks) without any address of the network.
pub fn outside(network: &Ipv6Net) -> Vec<Ipv6Net> {
    let bits = u128::from(network.network());
    (1..=network.prefix_len())
        .filter_map(|len| {
            let flipped = bits ^ (1u128 << (128 - u32::from(len)));
            Ipv6Net::new(Ipv6Addr::from(flipped), len)
                .ok()
                .map(|p| p.trunc())
        })
        .collect()
}

/// `dst` of a packet from the TUN, the FIB's matching prefix (a node prefix, origin
/// authentication allows no other) and the prefix of the tunnel's peer.
pub fn from_tun(dst: Ipv6Addr, fib_prefix: Ipv6Net, next_hop: Ipv6Net) -> FromTun {
    if next_hop.contains(&dst) {
        FromTun::Plain
    } else {
        FromTun::Seal(fib_prefix)
    }
}

/// The largest inner packet sent sealed when the first hop carries `first_hop_payload` bytes
/// per datagram (after the frame type byte): the sealing overhead off the smaller of that and
/// [`wire::MIN_TUNNEL_PAYLOAD`], what every tunnel carries (`min_mtu`). The relays' tunnels
/// may be smaller than the first hop's, and a relay cannot answer Packet Too Big for a packet
/// it cannot read, so the Packet Too Big a relayed destination gets quotes a size that
/// crosses any relay. With the default TUN MTU (1280) it is never reached.
pub fn sealed_mtu(first_hop_payload: usize) -> usize {
    first_hop_payload
        .min(wire::MIN_TUNNEL_PAYLOAD)
        .saturating_sub(wire::OVERHEAD)
}

/// What a datagram from a tunnel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromTunnel {
    /// A plain packet from the neighbour's own prefix to this node: deliver.
    DeliverPlain,
    /// A sealed frame (data or handshake) for this node: give it to the `Sealer`.
    Open,
    /// A sealed frame for someone else: forward by this destination (hop limit decremented
    /// in place), never opened.
    Relay(Ipv6Addr),
    /// Dropped, counted.
    Drop(PathDrop),
}

/// Why the data path drops a datagram from a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathDrop {
    /// Not a parseable IPv6 packet or sealed frame.
    Malformed,
    /// A plain packet whose source is outside the neighbour's prefix.
    SpoofedSource,
    /// A plain packet for another node: transit of plain packets does not exist.
    PlainTransit,
    /// A sealed frame whose hop limit ran out.
    HopLimit,
}

/// Classifies datagram `d` (type byte first) from the tunnel to the node of `neighbour`;
/// `me` is this node's prefix. A sealed frame to relay has its hop limit decremented in `d`.
/// Babel datagrams are not for this function.
pub fn from_tunnel(d: &mut [u8], me: Ipv6Net, neighbour: Ipv6Net) -> FromTunnel {
    from_tunnel_with(d, me, neighbour, &Subnets::default())
}

/// [`from_tunnel`] with subnet routes: packets for the prefixes we advertise are ours, and
/// a neighbour's plain packets may come from the subnets granted to it.
pub fn from_tunnel_with(
    d: &mut [u8],
    me: Ipv6Net,
    neighbour: Ipv6Net,
    subnets: &Subnets,
) -> FromTunnel {
    match d.first() {
        Some(&frame::TYPE_IPV6) => {
            let Some(h) = d.get(frame::HEADER_LEN..).and_then(parse_header) else {
                return FromTunnel::Drop(PathDrop::Malformed);
            };
            if !subnets.is_from(&neighbour, &h.src) {
                FromTunnel::Drop(PathDrop::SpoofedSource)
            } else if !me.contains(&h.dst) && !subnets.is_own(&h.dst) {
                FromTunnel::Drop(PathDrop::PlainTransit)
            } else {
                FromTunnel::DeliverPlain
            }
        }
        Some(&frame::TYPE_SEALED) | Some(&frame::TYPE_SEAL_HANDSHAKE) => {
            let Ok((dst, _)) = wire::route(d) else {
                return FromTunnel::Drop(PathDrop::Malformed);
            };
            if me.contains(&dst) || subnets.is_own(&dst) {
                return FromTunnel::Open;
            }
            match wire::relay(d) {
                Ok(wire::Relay::Forward(dst)) => FromTunnel::Relay(dst),
                Ok(wire::Relay::HopLimit) => FromTunnel::Drop(PathDrop::HopLimit),
                Err(_) => FromTunnel::Drop(PathDrop::Malformed),
            }
        }
        _ => FromTunnel::Drop(PathDrop::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn framed(src: &str, dst: &str) -> Vec<u8> {
        let mut p = vec![frame::TYPE_IPV6, 0x60, 0, 0, 0, 0, 0, 17, 64];
        p.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        p
    }

    #[test]
    fn outside_covers_everything_but_the_network() {
        let n = net("fd00:1::/48");
        let out = outside(&n);
        assert_eq!(out.len(), 48);
        for a in ["fd00:1::1", "fd00:1:0:ffff::9"] {
            let a: Ipv6Addr = a.parse().unwrap();
            assert!(!out.iter().any(|p| p.contains(&a)), "{a}");
        }
        for a in [
            "2001:db8::1",
            "::1",
            "fd00:2::1",
            "fd00:1:ffff::1",
            "ffff::1",
        ] {
            let a: Ipv6Addr = a.parse().unwrap();
            assert_eq!(out.iter().filter(|p| p.contains(&a)).count(), 1, "{a}");
        }
        // an exit node: every outside destination is its own, sealed for it
        let me = net("fd00:1:0:c::/64");
        let s = Subnets {
            own: out,
            ..Subnets::default()
        };
        let mut d = framed("fd00:1:0:b::1", "2001:db8::1");
        assert_eq!(
            from_tunnel_with(&mut d, me, net("fd00:1:0:b::/64"), &s),
            FromTunnel::DeliverPlain
        );
    }

    #[test]
    fn the_sealed_mtu_fits_the_smallest_relay_tunnel() {
        // a first hop with a big path MTU: the relays' may be the smallest allowed
        assert_eq!(sealed_mtu(1413), wire::MIN_TUNNEL_PAYLOAD - wire::OVERHEAD);
        assert_eq!(sealed_mtu(wire::MIN_TUNNEL_PAYLOAD), 1292);
        assert!(sealed_mtu(wire::MIN_TUNNEL_PAYLOAD) >= 1280);
        assert_eq!(sealed_mtu(1000), 1000 - wire::OVERHEAD);
        assert_eq!(sealed_mtu(0), 0);
    }

    #[test]
    fn direct_tunnels_stay_plain_relayed_packets_are_sealed() {
        let c = net("fd00:1:0:c::/64");
        let b = net("fd00:1:0:b::/64");
        let dst = "fd00:1:0:c::42".parse().unwrap();
        assert_eq!(from_tun(dst, c, c), FromTun::Plain);
        assert_eq!(from_tun(dst, c, b), FromTun::Seal(c));
    }

    #[test]
    fn plain_packets_must_come_from_the_neighbour_and_be_for_us() {
        let (me, b) = (net("fd00:1:0:c::/64"), net("fd00:1:0:b::/64"));
        let mut ok = framed("fd00:1:0:b::1", "fd00:1:0:c::1");
        assert_eq!(from_tunnel(&mut ok, me, b), FromTunnel::DeliverPlain);
        let mut spoof = framed("fd00:1:0:a::1", "fd00:1:0:c::1");
        assert_eq!(
            from_tunnel(&mut spoof, me, b),
            FromTunnel::Drop(PathDrop::SpoofedSource)
        );
        let mut transit = framed("fd00:1:0:b::1", "fd00:1:0:d::1");
        assert_eq!(
            from_tunnel(&mut transit, me, b),
            FromTunnel::Drop(PathDrop::PlainTransit)
        );
        let mut short = framed("fd00:1:0:b::1", "fd00:1:0:c::1");
        short.pop();
        assert_eq!(
            from_tunnel(&mut short, me, b),
            FromTunnel::Drop(PathDrop::Malformed)
        );
        assert_eq!(
            from_tunnel(&mut [frame::TYPE_BABEL, 0], me, b),
            FromTunnel::Drop(PathDrop::Malformed)
        );
    }

    #[test]
    fn sealed_frames_are_opened_here_or_relayed_by_their_clear_destination() {
        let (me, a) = (net("fd00:1:0:b::/64"), net("fd00:1:0:a::/64"));
        let c: Ipv6Addr = "fd00:1:0:c::1".parse().unwrap();
        let mut d = Vec::new();
        wire::emit_data_header(c, "fd00:1:0:a::1".parse().unwrap(), 5, 9, &mut d);
        d.extend_from_slice(&[0; 40]);
        let before = d.clone();
        assert_eq!(from_tunnel(&mut d, me, a), FromTunnel::Relay(c));
        assert_eq!(d[wire::HOP_OFFSET], wire::INITIAL_HOPS - 1);
        assert_eq!(d[..wire::HOP_OFFSET], before[..wire::HOP_OFFSET]);
        assert_eq!(d[wire::HOP_OFFSET + 1..], before[wire::HOP_OFFSET + 1..]);
        d[wire::HOP_OFFSET] = 1;
        assert_eq!(
            from_tunnel(&mut d, me, a),
            FromTunnel::Drop(PathDrop::HopLimit)
        );
        let mut h = Vec::new();
        wire::emit_handshake(
            "fd00:1:0:b::1".parse().unwrap(),
            c,
            wire::MSG1,
            0,
            b"e",
            &mut h,
        );
        // For us even from a neighbour that is not its source: sealed frames are end to end.
        assert_eq!(from_tunnel(&mut h, me, a), FromTunnel::Open);
        assert_eq!(
            from_tunnel(&mut [frame::TYPE_SEALED, 1, 2], me, a),
            FromTunnel::Drop(PathDrop::Malformed)
        );
    }

    #[test]
    fn subnet_packets_are_ours_when_we_advertise_them_and_a_granted_node_s_sources() {
        let me = net("fd00:1:0:c::/64");
        let b = net("fd00:1:0:b::/64");
        let lan = net("2001:db8:5::/48");
        let s = Subnets {
            own: vec![lan],
            granted: vec![(net("2001:db8:7::/48"), b)],
            via: vec![(net("2001:db8:7::/48"), b)],
            exit: None,
            v4: vec![],
            own_v4: vec![],
            pinned_exit: None,
        };
        // plain from b, for a host on our LAN: ours to deliver
        let mut ok = framed("fd00:1:0:b::1", "2001:db8:5::9");
        assert_eq!(
            from_tunnel_with(&mut ok, me, b, &s),
            FromTunnel::DeliverPlain
        );
        assert_eq!(
            from_tunnel(&mut ok, me, b),
            FromTunnel::Drop(PathDrop::PlainTransit)
        );
        // plain from b's granted LAN to us: b's source
        let mut from_lan = framed("2001:db8:7::9", "fd00:1:0:c::1");
        assert_eq!(
            from_tunnel_with(&mut from_lan, me, b, &s),
            FromTunnel::DeliverPlain
        );
        // our own LAN's sources are not b's
        let mut spoof = framed("2001:db8:5::9", "fd00:1:0:c::1");
        assert_eq!(
            from_tunnel_with(&mut spoof, me, b, &s),
            FromTunnel::Drop(PathDrop::SpoofedSource)
        );
        assert_eq!(s.owner(&net("2001:db8:7::/48")), Some(b));
        assert_eq!(s.owner(&lan), None);
    }
}
