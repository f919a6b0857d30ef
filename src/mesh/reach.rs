//! Where this node can be reached, without flags (issue "Laptops in the real world"):
//! the UDP endpoint candidates it announces in its tunnel hellos and reports to the registry.
//! Sans-IO: the shell feeds the interface addresses, the core the neighbours' observations.
//!
//! Sources, in the order they are announced:
//! 1. `--endpoint` (configured): when given, the only candidates — an operator's override.
//! 2. Mapped: the public address and port the home router forwards to the tunnel port on our
//!    request (UPnP IGD, NAT-PMP, PCP: `mesh::portmap`) — the one candidate known to accept
//!    handshakes nobody punched for.
//! 3. Observed: the address and port a neighbour sees our tunnel packets come from (its
//!    tunnel hello says so) — the STUN answer, from parties that already proved their
//!    certificate. Behind an endpoint-independent NAT this is the router's public address and
//!    the port it mapped, which other nodes can dial too. At most [`MAX_OBSERVED`], the
//!    addresses seen by the most distinct neighbours first; one neighbour counts once, so a
//!    lying neighbour can add one address (others only dial it, rate-limited per address).
//! 4. Local: this host's interface addresses (global and unique-local unicast, IPv6 first)
//!    with the tunnel socket's port — what a node with a public address or on the same LAN
//!    needs. Addresses inside the mesh network are left out (the TUN's own address: dialling
//!    it would route the tunnel through itself).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::{IpNet, Ipv6Net};

use crate::registry_api::usable_endpoint;

/// Observed addresses announced at most.
pub const MAX_OBSERVED: usize = 2;
/// Candidates announced at most (the registry takes 16).
pub const MAX_CANDIDATES: usize = 8;

/// The candidate set and what was last announced.
#[derive(Debug, Clone)]
pub struct Reach {
    port: u16,
    network: Ipv6Net,
    configured: Vec<SocketAddr>,
    /// The port mapping's public address and port.
    mapped: Option<SocketAddr>,
    local: Vec<IpAddr>,
    /// Per neighbour (its prefix): the address it sees us at.
    observed: BTreeMap<Ipv6Net, SocketAddr>,
    announced: Option<Vec<SocketAddr>>,
}

impl Reach {
    /// A node whose tunnel socket listens on `port`, in mesh `network`, with the
    /// `--endpoint`s given (possibly none).
    pub fn new(port: u16, network: Ipv6Net, configured: Vec<SocketAddr>) -> Reach {
        Reach {
            port,
            network,
            configured,
            mapped: None,
            local: Vec::new(),
            observed: BTreeMap::new(),
            announced: None,
        }
    }

    /// The mesh network changed (new parameters).
    pub fn set_network(&mut self, network: Ipv6Net) {
        self.network = network;
    }

    /// The host's interface addresses now (the shell's periodic look, or an OS event).
    pub fn set_local(&mut self, addrs: &[IpAddr]) {
        let mut v: Vec<IpAddr> = addrs
            .iter()
            .map(|a| a.to_canonical())
            .filter(|a| {
                let ok = usable_endpoint(&SocketAddr::new(*a, self.port.max(1)), false);
                ok && !IpNet::from(self.network).contains(a)
            })
            .collect();
        // IPv6 first, then stable order
        v.sort_by_key(|a| (a.is_ipv4(), *a));
        v.dedup();
        self.local = v;
    }

    /// The home router forwards `addr` to the tunnel port (`None`: no longer).
    pub fn set_mapped(&mut self, addr: Option<SocketAddr>) {
        self.mapped = addr
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .filter(|a| usable_endpoint(a, false));
    }

    /// The mapped candidate, if any.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// Neighbour `peer` sees our tunnel at `addr`. `over_loopback`: the tunnel runs over
    /// loopback (tests on one host), where a loopback observation is the truth.
    pub fn observed(&mut self, peer: Ipv6Net, addr: SocketAddr, over_loopback: bool) {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        if usable_endpoint(&addr, over_loopback) {
            self.observed.insert(peer, addr);
        }
    }

    /// The tunnel to `peer` is gone: its observation goes with it.
    pub fn forget(&mut self, peer: &Ipv6Net) {
        self.observed.remove(peer);
    }

    /// The candidates, best first.
    pub fn candidates(&self) -> Vec<SocketAddr> {
        if !self.configured.is_empty() {
            return self.configured.clone();
        }
        let mut votes: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for a in self.observed.values() {
            *votes.entry(*a).or_default() += 1;
        }
        let mut seen: Vec<(SocketAddr, usize)> = votes.into_iter().collect();
        seen.sort_by(|(a, n), (b, m)| m.cmp(n).then(a.cmp(b)));
        let mut out: Vec<SocketAddr> = self.mapped.into_iter().collect();
        for (a, _) in seen.into_iter().take(MAX_OBSERVED) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        if self.port != 0 {
            for ip in &self.local {
                let a = SocketAddr::new(*ip, self.port);
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out.truncate(MAX_CANDIDATES);
        out
    }

    /// The candidates when they differ from what was last announced (then they count as
    /// announced); `None` when nothing changed.
    pub fn poll_changed(&mut self) -> Option<Vec<SocketAddr>> {
        let now = self.candidates();
        if self.announced.as_ref() == Some(&now) {
            return None;
        }
        self.announced = Some(now.clone());
        Some(now)
    }

    /// What was last announced.
    pub fn announced(&self) -> &[SocketAddr] {
        self.announced.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Ipv6Net {
        "fd43:bb::/48".parse().unwrap()
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn p(i: u16) -> Ipv6Net {
        format!("fd43:bb:0:{i:x}::/64").parse().unwrap()
    }

    #[test]
    fn configured_endpoints_override_everything() {
        let mut r = Reach::new(6464, net(), vec![sa("[2001:db8::1]:7000")]);
        r.set_local(&["2001:db8::2".parse().unwrap()]);
        r.observed(p(1), sa("198.51.100.7:40000"), false);
        assert_eq!(r.candidates(), vec![sa("[2001:db8::1]:7000")]);
    }

    #[test]
    fn local_addresses_get_the_tunnel_port_and_leave_out_the_unusable_and_the_mesh() {
        let mut r = Reach::new(6464, net(), vec![]);
        let addrs: Vec<IpAddr> = [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "169.254.1.1",
            "0.0.0.0",
            "192.0.2.10",
            "2001:db8::2",
            "fd43:bb:0:1::1", // the TUN's own address, inside the mesh
            "::ffff:192.0.2.10",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        r.set_local(&addrs);
        assert_eq!(
            r.candidates(),
            vec![sa("[2001:db8::2]:6464"), sa("192.0.2.10:6464")]
        );
    }

    #[test]
    fn observed_addresses_come_first_most_confirmed_first_and_at_most_two() {
        let mut r = Reach::new(6464, net(), vec![]);
        r.set_local(&["192.168.1.20".parse().unwrap()]);
        r.observed(p(1), sa("198.51.100.7:40000"), false);
        r.observed(p(2), sa("203.0.113.9:5000"), false);
        r.observed(p(3), sa("203.0.113.9:5000"), false);
        r.observed(p(4), sa("192.0.2.99:1"), false);
        // ties: the lower address first (stable)
        assert_eq!(
            r.candidates(),
            vec![
                sa("203.0.113.9:5000"),
                sa("192.0.2.99:1"),
                sa("192.168.1.20:6464")
            ]
        );
        // one neighbour counts once, however often it says so
        r.observed(p(4), sa("192.0.2.99:1"), false);
        r.observed(p(4), sa("192.0.2.99:1"), false);
        assert_eq!(r.candidates()[0], sa("203.0.113.9:5000"));
        // a neighbour gone takes its observation along
        r.forget(&p(2));
        r.forget(&p(3));
        assert_eq!(
            r.candidates(),
            vec![
                sa("192.0.2.99:1"),
                sa("198.51.100.7:40000"),
                sa("192.168.1.20:6464")
            ]
        );
    }

    #[test]
    fn a_loopback_observation_counts_only_over_loopback() {
        let mut r = Reach::new(6464, net(), vec![]);
        r.observed(p(1), sa("127.0.0.1:6464"), false);
        r.observed(p(2), sa("[fe80::1]:6464"), false);
        assert!(r.candidates().is_empty());
        r.observed(p(3), sa("[::ffff:127.0.0.1]:6464"), true);
        assert_eq!(r.candidates(), vec![sa("127.0.0.1:6464")]);
    }

    #[test]
    fn changes_are_announced_once() {
        let mut r = Reach::new(6464, net(), vec![]);
        assert_eq!(r.poll_changed(), Some(vec![]));
        assert_eq!(r.poll_changed(), None);
        r.set_local(&["2001:db8::2".parse().unwrap()]);
        assert_eq!(r.poll_changed(), Some(vec![sa("[2001:db8::2]:6464")]));
        r.set_local(&["2001:db8::2".parse().unwrap()]);
        assert_eq!(r.poll_changed(), None);
        assert_eq!(r.announced(), &[sa("[2001:db8::2]:6464")]);
    }

    #[test]
    fn the_mapped_candidate_comes_first_once_and_goes_when_the_mapping_does() {
        let mut r = Reach::new(6464, net(), vec![]);
        r.set_local(&["192.168.1.20".parse().unwrap()]);
        r.observed(p(1), sa("198.51.100.7:40000"), false);
        r.observed(p(2), sa("198.51.100.7:6464"), false);
        r.set_mapped(Some(sa("[::ffff:198.51.100.7]:6464")));
        assert_eq!(r.mapped(), Some(sa("198.51.100.7:6464")));
        assert_eq!(
            r.candidates(),
            vec![
                sa("198.51.100.7:6464"),
                sa("198.51.100.7:40000"),
                sa("192.168.1.20:6464")
            ]
        );
        // the mapping goes: what the neighbours see stays (ties: lower address first)
        r.set_mapped(None);
        r.forget(&p(2));
        assert_eq!(
            r.candidates(),
            vec![sa("198.51.100.7:40000"), sa("192.168.1.20:6464")]
        );
        // a router answering nonsense (an unspecified address) adds nothing
        r.set_mapped(Some(sa("0.0.0.0:6464")));
        assert_eq!(r.mapped(), None);
        // --endpoint still overrides
        let mut r = Reach::new(6464, net(), vec![sa("[2001:db8::1]:7000")]);
        r.set_mapped(Some(sa("198.51.100.7:6464")));
        assert_eq!(r.candidates(), vec![sa("[2001:db8::1]:7000")]);
    }

    #[test]
    fn never_more_than_eight() {
        let mut r = Reach::new(6464, net(), vec![]);
        let many: Vec<IpAddr> = (1..40u16)
            .map(|i| format!("2001:db8::{i:x}").parse().unwrap())
            .collect();
        r.set_local(&many);
        assert_eq!(r.candidates().len(), MAX_CANDIDATES);
    }
}
