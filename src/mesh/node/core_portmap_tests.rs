//! The core's side of port mapping (`mesh::portmap`): the mapped candidate and the tunnels
//! made to it.

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn reported(a: &[Action]) -> Vec<Vec<SocketAddr>> {
    a.iter()
        .filter_map(|a| match a {
            Action::ReportEndpoints(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn made(c: &NodeCore, peer: u16) -> String {
    let p = net_prefix(peer).to_string();
    c.snapshot()
        .peers
        .into_iter()
        .find(|t| t.prefix == p)
        .map(|t| t.made)
        .unwrap_or_default()
}

#[test]
fn the_mapped_address_is_announced_first_and_a_tunnel_dialled_to_it_says_mapped() {
    let w = World::new();
    let mut c = w.core(1);
    c.handle(
        at(0),
        Input::LocalAddresses(vec!["192.168.1.20".parse().unwrap()]),
    );
    let _ = actions(&mut c);
    // the router forwards a public port to us: the first candidate, reported at once
    c.handle(at(1), Input::PortMapped(Some(sa("198.51.100.1:6464"))));
    assert_eq!(
        reported(&actions(&mut c)),
        vec![vec![sa("198.51.100.1:6464"), sa("192.168.1.20:6464")]]
    );
    // the mapping goes, the candidate with it; it comes back
    c.handle(at(2), Input::PortMapped(None));
    assert_eq!(
        reported(&actions(&mut c)),
        vec![vec![sa("192.168.1.20:6464")]]
    );
    c.handle(at(3), Input::PortMapped(Some(sa("198.51.100.1:6464"))));
    assert_eq!(reported(&actions(&mut c)).len(), 1);
    // a node dialled us there (its hello says where it sees us: what it dialled)
    let mut i = info(2, false);
    i.hello.observed = Some(sa("[::ffff:198.51.100.1]:6464"));
    c.handle(
        at(10),
        Input::TunnelUp {
            tunnel: TunnelId(1),
            info: i,
        },
    );
    assert_eq!(made(&c, 2), "mapped");
    // one dialled at our LAN address is direct, and so is one we dialled ourselves
    let mut i = info(3, false);
    i.hello.observed = Some(sa("192.168.1.20:6464"));
    c.handle(
        at(11),
        Input::TunnelUp {
            tunnel: TunnelId(2),
            info: i,
        },
    );
    assert_eq!(made(&c, 3), "direct");
    let mut i = info(4, true);
    i.hello.observed = Some(sa("198.51.100.1:6464"));
    c.handle(
        at(12),
        Input::TunnelUp {
            tunnel: TunnelId(3),
            info: i,
        },
    );
    assert_eq!(made(&c, 4), "direct");
}
