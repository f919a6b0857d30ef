//! The two UDP sockets of one Babel LAN interface.
//!
//! The RFC 8967 pseudo-header needs each packet's destination address (multicast group or
//! our link-local address), so instead of one wildcard socket with IPV6_RECVPKTINFO each
//! interface gets two sockets whose bound address *is* the destination:
//! * `mcast`, bound to `[ff02::1:6%IF]:6696` (SO_REUSEADDR), group joined on IF: it receives
//!   only the multicast packets of that interface;
//! * `ucast`, bound to `[fe80::…%IF]:6696`: it receives the unicast packets sent to us (IHUs,
//!   challenges) and sends everything, multicast included, so every packet leaves from our
//!   link-local address and port 6696 (babeld verifies MACs with 6696 as both ports).
//!   Multicast loopback is off on it, so we never hear ourselves.
//!
//! Binding to a link-local or link-scoped multicast address with a scope id ties the socket
//! to the interface, so no SO_BINDTODEVICE (and no `unsafe`) is needed, and a babeld (or
//! another `mesh babel run`) holding `[::]:6696` makes the `ucast` bind fail with "port in
//! use", as it should.

#![allow(clippy::disallowed_methods)] // IO shell: waits (clock, sleep) for a usable link-local address

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::netlink::Netlink;

/// One LAN interface's sockets and addresses.
pub struct LanSocket {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Our link-local address (the source of everything we send).
    pub link_local: Ipv6Addr,
    /// An IPv4 address of the interface, announced as next hop for IPv4 routes.
    pub ipv4: Option<Ipv4Addr>,
    /// Multicast group.
    pub group: Ipv6Addr,
    /// UDP port.
    pub port: u16,
    /// Bound to the group: receives multicast.
    pub mcast: Arc<UdpSocket>,
    /// Bound to the link-local address: receives unicast, sends everything.
    pub ucast: Arc<UdpSocket>,
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    if name.is_empty() || name.contains('/') || name.len() > 15 {
        bail!("{name:?} is not a valid interface name");
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .map_err(|_| anyhow::anyhow!("interface {name} does not exist"))?;
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("cannot read the index of interface {name}"))
}

fn bind_err(e: std::io::Error, what: &str, port: u16) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "UDP port {port} is already in use on {what} (is babeld or another router running?)"
        ),
        std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!("no permission to bind UDP port {port} on {what} (run as root)")
        }
        _ => anyhow::anyhow!("cannot bind UDP port {port} on {what}: {e}"),
    }
}

impl LanSocket {
    /// Opens the sockets of interface `name`. Waits up to 5 s for a usable link-local
    /// address (duplicate address detection).
    pub async fn open(
        name: &str,
        port: u16,
        group: Ipv6Addr,
        nl: &mut Netlink,
    ) -> anyhow::Result<LanSocket> {
        let ifindex = ifindex(name)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let (link_local, ipv4, ucast) = loop {
            let addrs = nl
                .addresses(ifindex)
                .with_context(|| format!("cannot read the addresses of interface {name}"))?;
            let Some(ll) = addrs.link_local.first().copied() else {
                if Instant::now() >= deadline {
                    bail!("interface {name} has no IPv6 link-local address (is it up?)");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match Self::ucast_socket(ll, port, ifindex) {
                Ok(s) => break (ll, addrs.ipv4.first().copied(), s),
                // Tentative address (DAD running): retry.
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrNotAvailable
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(bind_err(e, &format!("{ll}%{name}"), port)),
            }
        };
        let mcast = Self::mcast_socket(group, port, ifindex)
            .map_err(|e| bind_err(e, &format!("{group}%{name}"), port))?;
        Ok(LanSocket {
            name: name.to_owned(),
            ifindex,
            link_local,
            ipv4,
            group,
            port,
            mcast: Arc::new(UdpSocket::from_std(mcast.into())?),
            ucast: Arc::new(UdpSocket::from_std(ucast.into())?),
        })
    }

    fn ucast_socket(ll: Ipv6Addr, port: u16, ifindex: u32) -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(true)?;
        s.set_nonblocking(true)?;
        s.set_multicast_if_v6(ifindex)?;
        s.set_multicast_loop_v6(false)?;
        s.set_multicast_hops_v6(1)?;
        s.bind(&SocketAddrV6::new(ll, port, 0, ifindex).into())?;
        Ok(s)
    }

    fn mcast_socket(group: Ipv6Addr, port: u16, ifindex: u32) -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(true)?;
        s.set_nonblocking(true)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddrV6::new(group, port, 0, ifindex).into())?;
        s.join_multicast_v6(&group, ifindex)?;
        Ok(s)
    }

    /// Where a packet to `dst` goes: link-scoped addresses get this interface's scope id.
    pub fn scoped(&self, dst: SocketAddr) -> SocketAddr {
        match dst {
            SocketAddr::V6(v6) => {
                SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, self.ifindex))
            }
            v4 => v4,
        }
    }
}
