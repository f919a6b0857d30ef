//! TUN differences tun-rs leaves to us: the default device name (macOS utun devices are
//! numbered by the system) and the IPv6 address removal call.

#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows.rs"]
mod imp;
#[cfg(not(any(target_os = "macos", windows)))]
#[path = "linux.rs"]
mod imp;

pub use imp::{DEFAULT_NAME, remove_address_v6, requested_name};

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
