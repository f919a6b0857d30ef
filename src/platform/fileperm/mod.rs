//! Files only their owner may read (private keys, the peer cache): on Unix the mode bits
//! given to [`crate::fsutil::write_atomic`] (0600) are the whole story; on Windows a file
//! inherits the ACL of its directory, and `%ProgramData%`'s lets every local user read, so a
//! private file gets a protected DACL of its own there.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub use imp::make_private;

/// Whether a Unix mode asks for a file nobody but its owner reads or writes.
pub fn is_private_mode(mode: u32) -> bool {
    mode & 0o077 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_modes_without_group_or_other_bits_are_private() {
        assert!(is_private_mode(0o600));
        assert!(is_private_mode(0o400));
        assert!(!is_private_mode(0o640));
        assert!(!is_private_mode(0o644));
        assert!(!is_private_mode(0o602));
    }

    /// On every OS a private file can be made and read back by its owner (on Windows this
    /// runs the DACL calls: under Wine in CI).
    #[test]
    fn a_private_file_is_still_readable_by_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        std::fs::write(&p, b"secret").unwrap();
        make_private(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        std::fs::write(&p, b"changed").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"changed");
    }
}
