//! Default state directories (CONVENTIONS: "Command line").

use std::path::PathBuf;

/// True when the process runs as root (effective uid 0). Always false on Windows
/// ([`crate::platform::privilege`]).
pub fn is_root() -> bool {
    crate::platform::privilege::is_root()
}

/// The state directory of a per-user node: the platform data directory (`~/.local/share/re6mesh`
/// on Linux).
pub fn user_node_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "re6mesh")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".re6mesh"))
}

/// The state directory of the system node (run by root or the service): `/var/lib/re6mesh`
/// (Windows: `%ProgramData%\re6mesh`).
pub fn system_node_dir() -> PathBuf {
    crate::platform::privilege::system_state_dir()
}

/// The node's default state directory: `/var/lib/re6mesh` as root, the platform data
/// directory otherwise. Commands that talk to a running node look further: see
/// [`crate::control::locate`].
pub fn default_node_dir() -> PathBuf {
    if is_root() {
        system_node_dir()
    } else {
        user_node_dir()
    }
}

/// The registry's default state directory: `/var/lib/re6mesh/registry` as root,
/// `<data dir>/registry` otherwise.
pub fn default_registry_dir() -> PathBuf {
    default_node_dir().join("registry")
}
