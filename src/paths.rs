//! Default state directories (CONVENTIONS: "Command line").

use std::path::PathBuf;

/// True when the process runs as root (effective uid 0). Always false on Windows
/// ([`crate::platform::privilege`]).
pub fn is_root() -> bool {
    crate::platform::privilege::is_root()
}

fn user_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "re6mesh")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".re6mesh"))
}

/// The node's default state directory: `/var/lib/re6mesh` as root, the platform data
/// directory otherwise.
pub fn default_node_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/var/lib/re6mesh")
    } else {
        user_data_dir()
    }
}

/// The registry's default state directory: `/var/lib/re6mesh/registry` as root,
/// `<data dir>/registry` otherwise.
pub fn default_registry_dir() -> PathBuf {
    default_node_dir().join("registry")
}
