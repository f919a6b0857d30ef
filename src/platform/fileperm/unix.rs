//! Unix: mode 0600 (the owner reads and writes, nobody else).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Gives `path` mode 0600.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}
