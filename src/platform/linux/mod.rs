//! Linux: UDP sockets bound per interface (socket2), route netlink, and the watch of the
//! host's network (`netwatch`: roaming).

pub mod lan_sock;
pub mod netlink;
pub mod netwatch;
