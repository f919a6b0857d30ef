//! Linux and macOS: the effective user id.

/// True when the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// What to do when the TUN device is refused for lack of privilege.
#[cfg(target_os = "linux")]
pub const TUN_HINT: &str = "run as root or grant CAP_NET_ADMIN";
/// What to do when the TUN device is refused for lack of privilege.
#[cfg(not(target_os = "linux"))]
pub const TUN_HINT: &str = "run it as root (sudo)";
