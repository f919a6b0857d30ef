//! Whether this process has the privilege the node needs for its TUN device, and what to tell
//! the user when it has not.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub use imp::{TUN_HINT, is_root};
