//! Linux (and other Unix systems tun-rs supports): any free interface name; persistent TUN
//! devices given to a user (`mesh setup-tun --user NAME`), which that user's node opens
//! without CAP_NET_ADMIN.

use std::io;
use std::net::Ipv6Addr;

use super::Attached;

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
) -> io::Result<()> {
    dev.remove_address_v6(address, prefix_len)
}

/// Routes `prefix/len` into the device of index `index` (`add`), or removes that route: a
/// subnet behind another node (issue 15). Route protocol 250, as `mesh babel run`'s routes;
/// the kernel drops them with the device.
#[cfg(target_os = "linux")]
pub fn route_v6(index: u32, prefix: Ipv6Addr, len: u8, add: bool) -> io::Result<()> {
    let mut nl = crate::platform::Netlink::open()?;
    if add {
        nl.replace_dev_route(std::net::IpAddr::V6(prefix), len, index)
    } else {
        nl.delete_route(std::net::IpAddr::V6(prefix), len)
    }
}

/// Routes into the device: Linux only for now.
#[cfg(not(target_os = "linux"))]
pub fn route_v6(index: u32, prefix: Ipv6Addr, len: u8, add: bool) -> io::Result<()> {
    let _ = (index, prefix, len, add);
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "routes to subnets behind other nodes are installed on Linux only",
    ))
}

/// Whether `name` is an existing TUN device (sysfs: only TUN/TAP devices have `tun_flags`).
#[cfg(target_os = "linux")]
fn is_tun(name: &str) -> bool {
    // an interface name never holds '/', and "." / ".." are not devices
    !name.is_empty()
        && !name.contains('/')
        && name != "."
        && name != ".."
        && std::path::Path::new(&format!("/sys/class/net/{name}/tun_flags")).exists()
}

/// Opens the existing persistent TUN device `name` as it is, changing nothing on it (MTU,
/// address and link state need CAP_NET_ADMIN): how a user's node uses the device root gave it
/// with `mesh setup-tun --user`. The kernel refuses (EPERM) a device that belongs to someone
/// else.
#[cfg(target_os = "linux")]
pub fn attach_persistent(name: &str, address: Ipv6Addr, prefix_len: u8) -> io::Result<Attached> {
    if !is_tun(name) {
        return Ok(Attached::Absent);
    }
    let dev = tun_rs::DeviceBuilder::new()
        .name(name)
        .inherit_enable_state()
        .build_async()?;
    if global_addresses_v6(dev.if_index()?)?.contains(&(address, prefix_len)) {
        Ok(Attached::Ready(dev))
    } else {
        Ok(Attached::WithoutAddress)
    }
}

/// Not on this system.
#[cfg(not(target_os = "linux"))]
pub fn attach_persistent(name: &str, address: Ipv6Addr, prefix_len: u8) -> io::Result<Attached> {
    let _ = (name, address, prefix_len);
    Ok(Attached::Absent)
}

/// The global (not link-local) IPv6 addresses of interface `index`, with their prefix lengths.
#[cfg(target_os = "linux")]
pub fn global_addresses_v6(index: u32) -> io::Result<Vec<(Ipv6Addr, u8)>> {
    crate::platform::Netlink::open()?.addresses_v6(index)
}

/// Creates the TUN device `name` (replacing an existing TUN device of that name), persistent,
/// owned by `uid`,
/// with `mtu`, up, and — when given — `address` with the network's prefix length as its only
/// global address (so the kernel routes the network prefix into it). Root (CAP_NET_ADMIN).
#[cfg(target_os = "linux")]
pub fn setup_persistent(
    name: &str,
    uid: u32,
    mtu: u16,
    address: Option<(Ipv6Addr, u8)>,
) -> io::Result<()> {
    // The owner is set by iproute2 (`ip tuntap add … user UID`): tun-rs 2.8's `user()` hands
    // TUNSETOWNER a pointer where the kernel takes the uid by value (the device ends up owned
    // by part of a stack address), and this crate does no ioctl of its own (no unsafe).
    if is_tun(name) {
        remove_persistent(name)?;
    }
    let out = std::process::Command::new("ip")
        .args([
            "tuntap",
            "add",
            "dev",
            name,
            "mode",
            "tun",
            "user",
            &uid.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `ip` (iproute2): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip tuntap add dev {name} mode tun user {uid}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // MTU, link state and address on the (now persistent) device, as root
    let dev = tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .enable(true)
        .build_sync()?;
    if let Some((a, len)) = address {
        dev.add_address_v6(a, len)?;
    }
    Ok(())
}

/// Deletes the persistent TUN device `name` (`mesh setup-tun --remove`). `Ok(false)` when
/// there is none; refuses an interface that is not a TUN device.
#[cfg(target_os = "linux")]
pub fn remove_persistent(name: &str) -> io::Result<bool> {
    let index_file = format!("/sys/class/net/{name}/ifindex");
    if name.contains('/') || !std::path::Path::new(&index_file).exists() {
        return Ok(false);
    }
    if !is_tun(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name} is not a TUN device; left alone"),
        ));
    }
    let index: u32 = std::fs::read_to_string(&index_file)?
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("unreadable {index_file}")))?;
    crate::platform::Netlink::open()?.delete_link(index)?;
    Ok(true)
}

/// The owner uid of TUN device `name` (`None`: no owner set, or no such device).
#[cfg(target_os = "linux")]
pub fn owner(name: &str) -> Option<u32> {
    if !is_tun(name) {
        return None;
    }
    // -1 (no owner) does not parse as u32
    std::fs::read_to_string(format!("/sys/class/net/{name}/owner"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
