//! Roaming (issue 14): the host's network changed under the node — Wi-Fi to Ethernet, a new
//! hotspot, a laptop carried to another home — and the tunnels follow instead of timing out.
//!
//! * The shell learns of the change from the OS (netlink on Linux, a poll elsewhere) and
//!   gives the core the addresses now ([`Input::NetworkChanged`]). The candidates are
//!   gathered again at once (the interface addresses are among them).
//! * Every tunnel proves its path now: each neighbour gets a repeated hello (our
//!   candidates, and where we see it). It is a reliable, ack-eliciting packet, so a tunnel
//!   this node dialled moves to the new address by QUIC connection migration in one round
//!   trip, and the neighbour sees the new path.
//! * A tunnel this node *accepted* on an address the host no longer has cannot move (QUIC
//!   lets only the side that dialled migrate, and quinn keeps answering from the address
//!   the peer dialled): the shell names it stranded, the core closes it and dials the peer
//!   again from where it is now.
//! * The neighbour's side: the shell notices a tunnel's remote address changed (migration)
//!   and says so ([`Input::PathMoved`]); the core tells that neighbour where it sees it now,
//!   in a repeated hello — the STUN answer the moved node needs to announce its new public
//!   address to the registry and its other neighbours.

use super::*;

impl NodeCore {
    /// The host's network changed: `addrs` are its addresses now, `stranded` the tunnels
    /// whose local address is gone.
    pub(super) fn network_changed(
        &mut self,
        now: Now,
        addrs: Vec<IpAddr>,
        stranded: Vec<TunnelId>,
    ) {
        self.counters.network_changes += 1;
        self.reach.set_local(&addrs);
        if self.down {
            return;
        }
        info!(
            tunnels = self.tunnels.len(),
            stranded = stranded.len(),
            "the host's network changed: every tunnel proves its path"
        );
        for id in stranded {
            let Some(t) = self.tunnels.get(&id) else {
                continue;
            };
            let (peer, remote) = (t.peer_prefix, t.remote);
            self.counters.tunnels_stranded += 1;
            self.close(now, id, CloseCode::Shutdown, "its local address is gone");
            // Dial it again from where we are: its known candidates, then the address its
            // packets came from.
            let mut addrs: Vec<SocketAddr> =
                self.static_peers.get(&peer).copied().into_iter().collect();
            for a in self.cache.endpoints(&peer).iter().chain([&remote]) {
                if !addrs.contains(a) {
                    addrs.push(*a);
                }
            }
            if !self.dialing.contains_key(&peer) {
                self.dial(now, peer, addrs);
            }
        }
        self.probe_paths = true;
    }

    /// QUIC moved the tunnel to the neighbour's new address (it roamed, or its NAT mapped it
    /// anew): tell it where we see it now.
    pub(super) fn path_moved(&mut self, tunnel: TunnelId, remote: SocketAddr) {
        let Some(t) = self.tunnels.get_mut(&tunnel) else {
            return;
        };
        if t.remote == remote {
            return;
        }
        info!(peer = %t.peer_prefix, from = %t.remote, to = %remote, "the neighbour's tunnel moved to another address");
        t.remote = remote;
        self.counters.paths_moved += 1;
        self.snapshot_dirty = true;
        let hello = self.repeated_hello(remote);
        self.send_control(tunnel, hello);
    }

    /// A hello repeated on a live tunnel: our candidates, and where we see the neighbour.
    pub(super) fn repeated_hello(&self, observed: SocketAddr) -> ControlMsg {
        ControlMsg::Hello {
            protocol: PROTOCOL_VERSION,
            params_version: self.net.params().version,
            endpoints: self.my_endpoints.clone(),
            country: self.country.clone(),
            observed: Some(observed),
        }
    }
}

/// Whether a tunnel whose local address is `local` (`None`: one we dialled, the OS picks
/// the source) is stranded once the host has `addrs` (loopback tunnels never are).
pub fn is_stranded(local: Option<IpAddr>, addrs: &[IpAddr]) -> bool {
    let Some(ip) = local.map(|a| a.to_canonical()) else {
        return false;
    };
    !(ip.is_unspecified() || ip.is_loopback() || addrs.iter().any(|a| a.to_canonical() == ip))
}

/// Where the tunnel socket must move when the host has `addrs`: bound to one address that
/// is gone, it listens on every address of that family, same port; `None`: it stays.
pub fn rebind_to(bound: SocketAddr, addrs: &[IpAddr]) -> Option<SocketAddr> {
    let ip = bound.ip().to_canonical();
    if ip.is_unspecified() || ip.is_loopback() || addrs.iter().any(|a| a.to_canonical() == ip) {
        return None;
    }
    let any: IpAddr = match bound.ip() {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    Some(SocketAddr::new(any, bound.port()))
}
