//! TUN differences tun-rs leaves to us: the default device name (macOS utun devices are
//! numbered by the system), the IPv6 address removal call, and (Linux) the persistent TUN
//! device root gives a user so that their node needs no privilege (`mesh setup-tun`).

#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows.rs"]
mod imp;
#[cfg(not(any(target_os = "macos", windows)))]
#[path = "linux.rs"]
mod imp;

pub use imp::{DEFAULT_NAME, attach_persistent, remove_address_v6, requested_name, route_v6};

/// What `attach_persistent` found (Linux: `mesh setup-tun`; elsewhere always `Absent`).
pub enum Attached {
    /// No persistent TUN device of that name.
    Absent,
    /// Opened, and it has the node address.
    Ready(tun_rs::AsyncDevice),
    /// Opened, but it lacks the node address (set up before `mesh join`, or for another join).
    WithoutAddress,
}
#[cfg(target_os = "linux")]
pub use imp::{global_addresses_v6, owner, remove_persistent, setup_persistent};

/// macOS' rule for utun names, here so every OS's tests check it: `utun` means "the system
/// picks the number" (`None`), `utunN` asks for that device; anything else is refused with a
/// sentence.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
fn utun_request(name: &str) -> Result<Option<&str>, String> {
    match name.strip_prefix("utun") {
        Some("") => Ok(None),
        Some(n) if n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(name)),
        _ => Err(format!(
            "on macOS the TUN device must be named utun (the system picks the number) or utunN, not {name:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utun_names_follow_macos_rules() {
        assert_eq!(super::utun_request("utun"), Ok(None));
        assert_eq!(super::utun_request("utun7"), Ok(Some("utun7")));
        for bad in ["mesh0", "utunx", "utun-1", "utun123456", "UTUN3", ""] {
            let e = super::utun_request(bad).unwrap_err();
            assert!(e.contains("utunN"), "{bad}: {e}");
        }
    }
}
