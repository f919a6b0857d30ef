//! rtnetlink (Linux): interface addresses, and the kernel routes of `mesh babel run`.
//!
//! Routes are installed in the main table with route protocol [`RTPROT_MESH`] (250), so they
//! are recognisable (`ip route show proto 250`), can be flushed at start (leftovers of a run
//! that was killed) and are all removed at exit. Every request is synchronous and acked:
//! a netlink round trip inside a namespace takes microseconds.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
    RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Route protocol number of the routes `mesh babel run` installs (babeld uses 42, BIRD 12;
/// 250 is unassigned in `/etc/iproute2/rt_protos`).
pub const RTPROT_MESH: u8 = 250;

/// The addresses of one interface.
#[derive(Debug, Clone, Default)]
pub struct IfaceAddrs {
    /// IPv6 link-local addresses.
    pub link_local: Vec<Ipv6Addr>,
    /// IPv4 addresses.
    pub ipv4: Vec<Ipv4Addr>,
}

/// A route-netlink socket.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl Netlink {
    /// Opens a route-netlink socket.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 1 })
    }

    /// Sends one request; returns the messages answered (for a dump) after the kernel's
    /// Done or ack. A NACK is returned as the OS error it carries.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = flags;
        hdr.sequence_number = seq;
        let mut packet = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf[..]);
        self.sock.send(&buf, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off < data.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| other(format!("undecodable netlink answer: {e}")))?;
                let len = m.header.length as usize;
                if m.header.sequence_number == seq {
                    match m.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(out),
                                Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            };
                        }
                        NetlinkPayload::InnerMessage(inner) => {
                            out.push(inner);
                            if !dump {
                                return Ok(out);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// The IPv6 link-local and IPv4 addresses of interface `index`.
    pub fn addresses(&mut self, index: u32) -> io::Result<IfaceAddrs> {
        let msgs = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut a = IfaceAddrs::default();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(m) = m else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            for attr in &m.attributes {
                match attr {
                    AddressAttribute::Address(IpAddr::V6(v6))
                        if (m.header.scope == AddressScope::Link
                            || (v6.segments()[0] & 0xffc0) == 0xfe80)
                            && !a.link_local.contains(v6) =>
                    {
                        a.link_local.push(*v6);
                    }
                    AddressAttribute::Local(IpAddr::V4(v4))
                    | AddressAttribute::Address(IpAddr::V4(v4))
                        if !a.ipv4.contains(v4) =>
                    {
                        a.ipv4.push(*v4);
                    }
                    _ => {}
                }
            }
        }
        Ok(a)
    }

    /// The global (not link-local) IPv6 addresses of interface `index` with their prefix
    /// lengths.
    pub fn addresses_v6(&mut self, index: u32) -> io::Result<Vec<(Ipv6Addr, u8)>> {
        let msgs = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(m) = m else {
                continue;
            };
            if m.header.index != index || m.header.scope == AddressScope::Link {
                continue;
            }
            for attr in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V6(v6)) = attr
                    && (v6.segments()[0] & 0xffc0) != 0xfe80
                    && !out.contains(&(*v6, m.header.prefix_len))
                {
                    out.push((*v6, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Deletes interface `index` (a persistent TUN device: `mesh setup-tun --remove`).
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(m), NLM_F_REQUEST | NLM_F_ACK)
            .map(|_| ())
    }

    /// A route message for destination `dst/len` from source `src` (a source-specific route,
    /// RFC 9079: `ip -6 route … from SRC`; IPv6 only in Linux). Host bits already cleared.
    fn route_message_from(dst: IpAddr, len: u8, src: Option<(IpAddr, u8)>) -> RouteMessage {
        let mut m = Self::route_message(dst, len);
        if let Some((addr, slen)) = src {
            m.header.source_prefix_length = slen;
            m.attributes
                .push(RouteAttribute::Source(RouteAddress::from(addr)));
        }
        m
    }

    /// A route message for destination `dst/len` (host bits already cleared by the caller).
    fn route_message(dst: IpAddr, len: u8) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = if dst.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = len;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::from(RTPROT_MESH);
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        m
    }

    /// Installs or replaces the route to `dst/len` via `next_hop` on interface `oif`. An IPv4
    /// destination with an IPv6 next hop (RFC 9229) uses RTA_VIA.
    pub fn replace_route(
        &mut self,
        dst: IpAddr,
        len: u8,
        next_hop: IpAddr,
        oif: u32,
    ) -> io::Result<()> {
        self.replace_route_from(dst, len, None, next_hop, oif)
    }

    /// [`Netlink::replace_route`] for a source-specific route (`src`: prefix and length;
    /// `None` is an ordinary route). The kernel refuses a source prefix on an IPv4 route.
    pub fn replace_route_from(
        &mut self,
        dst: IpAddr,
        len: u8,
        src: Option<(IpAddr, u8)>,
        next_hop: IpAddr,
        oif: u32,
    ) -> io::Result<()> {
        let mut m = Self::route_message_from(dst, len, src);
        match (dst.is_ipv4(), next_hop) {
            (true, IpAddr::V6(v6)) => m.attributes.push(RouteAttribute::Via(RouteVia::Inet6(v6))),
            _ => m
                .attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(next_hop))),
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(|_| ())
    }

    /// Installs or replaces the route to `dst/len` straight into interface `oif` (no
    /// gateway: a point-to-point device such as the node's TUN).
    pub fn replace_dev_route(&mut self, dst: IpAddr, len: u8, oif: u32) -> io::Result<()> {
        let mut m = Self::route_message(dst, len);
        m.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(|_| ())
    }

    /// Deletes our route to `dst/len` (absent is fine).
    pub fn delete_route(&mut self, dst: IpAddr, len: u8) -> io::Result<()> {
        self.delete_route_from(dst, len, None)
    }

    /// Deletes our route to `dst/len` from `src` (absent is fine).
    pub fn delete_route_from(
        &mut self,
        dst: IpAddr,
        len: u8,
        src: Option<(IpAddr, u8)>,
    ) -> io::Result<()> {
        match self.request(
            RouteNetlinkMessage::DelRoute(Self::route_message_from(dst, len, src)),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Err(e) if e.raw_os_error() == Some(3) => Ok(()), // ESRCH: not there
            r => r.map(|_| ()),
        }
    }

    /// Deletes every route of protocol [`RTPROT_MESH`] in the main table (both families).
    /// Returns how many were deleted.
    pub fn flush_ours(&mut self) -> io::Result<usize> {
        let mut n = 0;
        for family in [AddressFamily::Inet6, AddressFamily::Inet] {
            let mut q = RouteMessage::default();
            q.header.address_family = family;
            let msgs =
                self.request(RouteNetlinkMessage::GetRoute(q), NLM_F_REQUEST | NLM_F_DUMP)?;
            for m in msgs {
                let RouteNetlinkMessage::NewRoute(mut m) = m else {
                    continue;
                };
                if m.header.protocol != RouteProtocol::from(RTPROT_MESH)
                    || m.header.table != RouteHeader::RT_TABLE_MAIN
                {
                    continue;
                }
                m.attributes.retain(|a| {
                    matches!(
                        a,
                        RouteAttribute::Destination(_)
                            | RouteAttribute::Source(_)
                            | RouteAttribute::Oif(_)
                            | RouteAttribute::Gateway(_)
                            | RouteAttribute::Via(_)
                            | RouteAttribute::Priority(_)
                    )
                });
                match self.request(RouteNetlinkMessage::DelRoute(m), NLM_F_REQUEST | NLM_F_ACK) {
                    Ok(_) => n += 1,
                    Err(e) if e.raw_os_error() == Some(3) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }
}
