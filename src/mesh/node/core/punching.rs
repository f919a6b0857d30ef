//! Hole punching in the core (issue 14): the [`Puncher`](crate::mesh::punch::Puncher)'s
//! schedule wired to dials, tunnels and the signal datagrams the shell carries through the
//! mesh (see `mesh::punch` for the protocol and its budgets).

use super::*;
use crate::mesh::punch::Step;

/// How a tunnel was made (`mesh peers`: `made`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Made {
    /// A plain handshake to (or from) an announced candidate.
    #[default]
    Direct,
    /// Handshakes from both sides at a moment agreed through the mesh.
    Punched,
    /// Dialled to the address and port our home router forwards to us (port mapping): the
    /// peer's hello says it dialled our mapped candidate.
    Mapped,
}

impl Made {
    pub fn name(self) -> &'static str {
        match self {
            Made::Direct => "direct",
            Made::Punched => "punched",
            Made::Mapped => "mapped",
        }
    }
}

impl NodeCore {
    /// Whether Babel has a selected route to `peer`'s prefix (a punch signal can reach it).
    pub fn routable(&self, peer: &Ipv6Net) -> bool {
        let node_len = self.net.params().node_prefix_len;
        self.engine.selected_routes().any(|r| {
            r.prefix.len() == node_len
                && matches!(r.prefix.addr(), IpAddr::V6(a) if peer.contains(&a))
        })
    }

    /// A plain dial of `peer` failed: punch when the mesh can carry the request.
    pub(super) fn punch_after_failed_dial(&mut self, now: Now, peer: Ipv6Net) {
        if self.down
            || self.by_prefix.contains_key(&peer)
            || self.lan_heard.contains_key(&peer)
            || !self.routable(&peer)
        {
            return;
        }
        if self.punch.start(now.time, peer, &self.my_endpoints) {
            info!(%peer, "cannot dial it: asking it through the mesh to punch a hole");
        }
        self.punch_drain(now);
    }

    /// A signal datagram from the node address `src` (the data path has checked it is the
    /// sender's: sealed, or from the neighbour whose prefix it is).
    pub(super) fn punch_signal(&mut self, now: Now, src: Ipv6Addr, bytes: &[u8]) {
        let node_len = self.net.params().node_prefix_len;
        let Ok(from) = Ipv6Net::new(src, node_len).map(|n| n.trunc()) else {
            return;
        };
        if self.down || from == self.prefix || !self.net.params().network.contains(&from) {
            return;
        }
        if let Err(why) = self
            .punch
            .on_signal(now.time, from, bytes, &self.my_endpoints)
        {
            debug!(peer = %from, ?why, "punch signal not taken");
        }
        self.punch_drain(now);
    }

    /// The punch's handshakes to `peer` all ended without a tunnel.
    pub(super) fn punch_failed(&mut self, now: Now, peer: Ipv6Net) {
        if !self.by_prefix.contains_key(&peer) {
            info!(%peer, "hole punching failed; the mesh keeps relaying (retried later)");
        }
        self.punch.punch_failed(now.time, peer);
    }

    /// Due punches and retries (every tick, and at the puncher's own timeouts).
    pub(super) fn punch_tick(&mut self, now: Now) {
        self.punch.poll(now.time);
        for peer in self.punch.retries_due(now.time) {
            let wanted = !self.down && !self.by_prefix.contains_key(&peer) && self.routable(&peer);
            if !wanted {
                self.punch.forget(&peer);
            } else if !self.dialing.contains_key(&peer) {
                self.punch.start(now.time, peer, &self.my_endpoints);
            }
        }
        self.punch_drain(now);
    }

    fn punch_drain(&mut self, now: Now) {
        while let Some(step) = self.punch.poll_step() {
            match step {
                Step::Send { to, signal } => self.actions.push_back(Action::SendSignal {
                    to: identity::node_address(&to),
                    bytes: signal.encode(),
                }),
                Step::Punch { peer, addrs } => {
                    if self.by_prefix.contains_key(&peer) {
                        // a tunnel came up meanwhile (the peer's punch, or a plain dial)
                        self.punch.tunnel_up(&peer);
                        continue;
                    }
                    let addrs = self.limit_addrs(now, peer, addrs);
                    if addrs.is_empty() {
                        self.punch.punch_failed(now.time, peer);
                        continue;
                    }
                    info!(%peer, ?addrs, "punching");
                    self.actions.push_back(Action::Punch { peer, addrs });
                }
            }
        }
    }
}
