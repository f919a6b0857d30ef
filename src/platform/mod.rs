//! What differs per operating system, one module per concern, one file per OS inside it
//! (chosen with `#[cfg(...)] #[path = ...] mod imp;`, the layout of quinn-udp). The code
//! above this layer is the same on Linux, macOS and Windows; nothing else in the crate
//! should need a `cfg` on the OS except the Linux-only features (`mesh babel run`, LAN
//! discovery, `mesh demo`, network namespaces), which say so with one sentence elsewhere.
//!
//! * [`control_socket`]: the node's local control endpoint — a Unix socket
//!   `<state-dir>/control.sock` on Linux and macOS, a named pipe on Windows.
//! * [`privilege`]: "are we root/administrator", the hint to print when we are not, and the
//!   system-wide state directory.
//! * [`process`]: asking a child process to stop (SIGTERM; no equivalent on Windows).
//! * [`tun`]: the TUN device's default name and the address calls tun-rs spells differently
//!   per OS (Linux `mesh0`; macOS `utun`, numbered by the system; Windows wintun `mesh0`).
//!
//! Runtime-tested on Linux; Windows and macOS are compile-checked (`scripts/cross-check`),
//! and the Windows unit tests run under Wine where it has the calls.

pub mod control_socket;
pub mod privilege;
pub mod process;
pub mod tun;
