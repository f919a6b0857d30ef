//! Changes of the host's network from the kernel (rtnetlink multicast groups), for roaming:
//! an address, a link or a default route that comes or goes (Wi-Fi to Ethernet, a new
//! hotspot) is known at once instead of at the next poll.
//!
//! The watch only says *that* something changed and whether a default route was among it;
//! the node then lists the addresses again (`if-addrs`) and its core decides. Messages the
//! kernel sends are decoded with `netlink-packet-route`; one that does not decode counts as a
//! change (the worst it costs is one look at the addresses).

use std::io;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};

/// `RTMGRP_LINK`: links created, removed, up, down.
const RTMGRP_LINK: u32 = 0x1;
/// `RTMGRP_IPV4_IFADDR`.
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
/// `RTMGRP_IPV4_ROUTE`.
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
/// `RTMGRP_IPV6_IFADDR`.
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
/// `RTMGRP_IPV6_ROUTE`.
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// `ENOBUFS` (Linux): the socket's buffer overflowed, messages were lost.
const ENOBUFS: i32 = 105;

/// What one batch of kernel messages said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// An address or a link came, went or changed.
    pub addresses: bool,
    /// A default route came or went (the way out changed even if no address did).
    pub default_route: bool,
}

impl Change {
    /// Both of them.
    pub fn merge(self, other: Change) -> Change {
        Change {
            addresses: self.addresses || other.addresses,
            default_route: self.default_route || other.default_route,
        }
    }

    /// Anything at all.
    pub fn any(self) -> bool {
        self.addresses || self.default_route
    }
}

/// A route-netlink socket subscribed to the link, address and route groups.
pub struct NetWatch {
    sock: TokioSocket,
}

impl NetWatch {
    /// Subscribes. Must run inside a tokio runtime.
    pub fn open() -> io::Result<NetWatch> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
        let groups = RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_ROUTE;
        sock.socket_mut().bind(&SocketAddr::new(0, groups))?;
        Ok(NetWatch { sock })
    }

    /// Waits for the next batch of kernel messages that changes something; returns what.
    /// A lost batch (the socket's buffer overflowed: `ENOBUFS`) counts as every change.
    pub async fn next(&mut self) -> io::Result<Change> {
        loop {
            match self.sock.recv_from_full().await {
                Ok((data, _)) => {
                    let c = classify(&data);
                    if c.any() {
                        return Ok(c);
                    }
                }
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    return Ok(Change {
                        addresses: true,
                        default_route: true,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a datagram of kernel messages says (several messages may share one datagram).
pub fn classify(mut data: &[u8]) -> Change {
    let mut c = Change::default();
    while !data.is_empty() {
        let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data) else {
            // undecodable: look again rather than miss a change
            c.addresses = true;
            break;
        };
        if let NetlinkPayload::InnerMessage(inner) = &m.payload {
            c = c.merge(classify_one(inner));
        }
        let len = usize::try_from(m.header.length).unwrap_or(0);
        if len == 0 || len > data.len() {
            break;
        }
        data = &data[len..];
    }
    c
}

fn classify_one(m: &RouteNetlinkMessage) -> Change {
    match m {
        RouteNetlinkMessage::NewAddress(_)
        | RouteNetlinkMessage::DelAddress(_)
        | RouteNetlinkMessage::NewLink(_)
        | RouteNetlinkMessage::DelLink(_) => Change {
            addresses: true,
            default_route: false,
        },
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => Change {
            addresses: false,
            // only the way out matters: routes the node itself adds (subnets into the TUN)
            // and the kernel's per-prefix routes are not a move
            default_route: r.header.destination_prefix_length == 0
                && r.header.kind == netlink_packet_route::route::RouteType::Unicast,
        },
        _ => Change::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::address::AddressMessage;
    use netlink_packet_route::route::{RouteMessage, RouteType};

    fn bytes(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            let mut p = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(m));
            p.finalize();
            let mut b = vec![0u8; p.buffer_len()];
            p.serialize(&mut b[..]);
            out.extend(b);
        }
        out
    }

    fn route(len: u8) -> RouteNetlinkMessage {
        let mut r = RouteMessage::default();
        r.header.destination_prefix_length = len;
        r.header.kind = RouteType::Unicast;
        RouteNetlinkMessage::NewRoute(r)
    }

    #[test]
    fn addresses_and_default_routes_are_changes_other_routes_are_not() {
        let a = RouteNetlinkMessage::NewAddress(AddressMessage::default());
        assert_eq!(
            classify(&bytes(vec![a])),
            Change {
                addresses: true,
                default_route: false
            }
        );
        assert!(!classify(&bytes(vec![route(64)])).any());
        assert_eq!(
            classify(&bytes(vec![route(64), route(0)])),
            Change {
                addresses: false,
                default_route: true
            }
        );
        // garbage from the socket: look again
        assert!(classify(&[0xff; 7]).addresses);
        assert!(!classify(&[]).any());
    }
}
