//! IPv4 over the mesh, the core's side (issue 15): which node each selected IPv4 route
//! leads to (the data path carries IPv4 packets to that node), and this node's address.

use super::*;

impl NodeCore {
    /// This node's IPv4 address (in its certificate), when the network has an IPv4 range.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.my_ipv4
    }

    /// The network's IPv4 range of the parameters in force.
    pub fn ipv4_range(&self) -> Option<ipnet::Ipv4Net> {
        self.net.params().ipv4
    }

    /// The selected IPv4 routes with the node that originates each: a /32 belongs to the
    /// node whose certificate names the address (and whose router-id announces it). Routes
    /// whose origin is not known that way are left out (with origin checks off, none is
    /// known: IPv4 needs them).
    pub(super) fn v4_routes(&self) -> Vec<(ipnet::Ipv4Net, Ipv6Net)> {
        let Some(store) = self.engine.origin_policy::<origin::CertStore>() else {
            return Vec::new();
        };
        let mut out: Vec<(ipnet::Ipv4Net, Ipv6Net)> = self
            .engine
            .selected_routes()
            .filter(|r| !r.prefix.is_source_specific())
            .filter_map(|r| {
                let IpAddr::V4(a) = r.prefix.addr() else {
                    return None;
                };
                let net = ipnet::Ipv4Net::new(a, r.prefix.len()).ok()?;
                let rid = self.engine.selected_origin(r.prefix)?;
                let owner = if r.prefix.len() == 32 {
                    store
                        .ipv4_owner(a, rid)
                        .or_else(|| store.grantee_v4(&net, rid))?
                } else {
                    store.grantee_v4(&net, rid)?
                };
                (owner != self.prefix).then_some((net, owner))
            })
            .collect();
        out.sort();
        out.dedup_by_key(|(p, _)| *p);
        out
    }
}
