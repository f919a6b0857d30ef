//! Linux: UDP sockets bound per interface (socket2) and route netlink.

pub mod lan_sock;
pub mod netlink;
