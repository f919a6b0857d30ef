//! macOS utun: devices are named `utunN`. The default, plain `utun`, lets the system pick the
//! first free number; `utunN` asks for that one.

use std::net::{IpAddr, Ipv6Addr};

/// Default TUN name on macOS: `utun`, numbered by the system (the name in use is logged and
/// shown by `mesh status`' routes).
pub const DEFAULT_NAME: &str = "utun";

/// The name to ask tun-rs for: `None` (system's choice) for `utun`, `utunN` as given; any
/// other name is refused with a sentence.
pub fn requested_name(name: &str) -> Result<Option<&str>, String> {
    super::utun_request(name)
}

/// Removes `address` from the device (utun has one prefix per address).
pub fn remove_address_v6(
    dev: &tun_rs::AsyncDevice,
    address: Ipv6Addr,
    prefix_len: u8,
) -> std::io::Result<()> {
    let _ = prefix_len;
    dev.remove_address(IpAddr::V6(address))
}

/// Routes to subnets behind other nodes (issue 15) are installed on Linux only: here the
/// administrator adds them (`route add -inet6` / `netsh interface ipv6 add route`).
pub fn route_v6(index: u32, prefix: Ipv6Addr, len: u8, add: bool) -> std::io::Result<()> {
    let _ = (index, prefix, len, add);
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "routes to subnets behind other nodes are installed on Linux only; add them by hand",
    ))
}

/// No persistent per-user TUN devices here (`mesh setup-tun` is Linux only).
pub fn attach_persistent(
    name: &str,
    address: Ipv6Addr,
    prefix_len: u8,
) -> std::io::Result<super::Attached> {
    let _ = (name, address, prefix_len);
    Ok(super::Attached::Absent)
}
