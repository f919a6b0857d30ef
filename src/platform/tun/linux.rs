//! Linux (and other Unix systems tun-rs supports): any free interface name.

use std::net::Ipv6Addr;

/// Default TUN name (CONVENTIONS).
pub const DEFAULT_NAME: &str = "mesh0";

/// The name to ask tun-rs for: `name` itself.
pub fn requested_name(name: &str) -> Result<Option<&str>, String> {
    Ok(Some(name))
}

/// Removes `address/prefix_len` from the device.
pub fn remove_address_v6(
    dev: &tun_rs::AsyncDevice,
    address: Ipv6Addr,
    prefix_len: u8,
) -> std::io::Result<()> {
    dev.remove_address_v6(address, prefix_len)
}
