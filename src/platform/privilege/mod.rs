//! Whether this process has the privilege the node needs for its TUN device, what to tell
//! the user when it has not, and (Unix) who the user is.

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub use imp::{TUN_HINT, is_root, system_state_dir, tun_hint};
#[cfg(unix)]
pub use imp::{User, effective_gid, effective_uid, find_user, linux_user_hint, user_in};
