//! What differs per operating system, one module per concern, one file per OS inside it
//! (chosen with `#[cfg(...)] #[path = ...] mod imp;`, the layout of quinn-udp). The code
//! above this layer is the same on Linux, macOS and Windows; nothing else in the crate
//! should need a `cfg` on the OS except the Linux-only features (`mesh babel run`, LAN
//! discovery, `mesh demo`, network namespaces), which say so with one sentence elsewhere.
//! This layer knows neither the mesh nor the Babel engine: addresses, prefixes as
//! `(address, length)`, sockets, devices.
//!
//! * [`control_socket`]: the node's local control endpoint — a Unix socket
//!   `<state-dir>/control.sock` on Linux and macOS, a named pipe on Windows.
//! * [`fileperm`]: files only their owner reads (keys): mode 0600 on Unix, a protected DACL
//!   on Windows (the crate's one `unsafe` module).
//! * [`privilege`]: "are we root/administrator", the hint to print when we are not, and the
//!   system-wide state directory.
//! * [`process`]: asking a child process to stop (SIGTERM; no equivalent on Windows).
//! * [`service`]: the node as a system service — systemd (Linux), launchd (macOS), the Windows
//!   Service Control Manager — behind `mesh service install|uninstall|status`.
//! * [`tun`]: the TUN device's default name and the address calls tun-rs spells differently
//!   per OS (Linux `mesh0`; macOS `utun`, numbered by the system; Windows wintun `mesh0`).
//! * Linux only: the sockets of a Babel LAN interface (`LanSocket`) and the rtnetlink calls
//!   that read interface addresses and install kernel routes (`Netlink`), below both
//!   `mesh::lan_discovery` (`mesh up --lan`) and `lan` (`mesh babel run`), so neither imports
//!   the other.
//!
//! Runtime-tested on Linux; Windows and macOS are compile-checked (`scripts/cross-check`).

pub mod control_socket;
pub mod fileperm;
pub mod privilege;
pub mod process;
pub mod service;
pub mod tun;

#[cfg(target_os = "linux")]
#[path = "linux/mod.rs"]
mod linux;

#[cfg(target_os = "linux")]
pub use linux::lan_sock::LanSocket;
#[cfg(target_os = "linux")]
pub use linux::netlink::{IfaceAddrs, Netlink, RTPROT_MESH};
#[cfg(target_os = "linux")]
pub use linux::netwatch::{Change as NetChange, NetWatch};
