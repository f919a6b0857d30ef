//! re6mesh: a resilient, scalable IPv6 mesh network in one binary.
//!
//! The crate is layered like this (see `docs/ARCHITECTURE.md` for the full map):
//!
//! * **Sans-IO cores** — no sockets, no tokio, no clock reads, no global RNG (`clippy.toml`
//!   enforces it): [`params`] (signed network parameters), [`token`] (join tokens),
//!   [`identity`] (certificate fields), [`registry::allocator`] (prefix allocation),
//!   [`registry::mac`] (the MAC key cycle), [`update`] (what `mesh update` installs or refuses).
//! * **IO shells** — [`registry`] (the CA and its HTTPS API), [`registry_client`] (the node's
//!   side of that API), [`cli`] (the `mesh` command); each opts out of the clippy rule at the
//!   top of its module, saying why.
//! * **Test and demo support** — [`netns`] (network namespaces with cleanup on every exit path);
//!   `mesh::sim` and the fuzz properties, built only for tests and with the features `sim` /
//!   `fuzzing`.
//! * **Platform layer** — [`platform`]: what differs between Linux, macOS and Windows, one
//!   module per concern (control socket, privilege, process stop, TUN naming, Linux LAN
//!   sockets and netlink).
//!
//! No `unsafe` anywhere (denied crate-wide) except `platform::fileperm`'s Windows file, three
//! advapi32 calls that give a key file a private ACL; it allows it for itself alone.
#![deny(unsafe_code)]

pub mod cli;
pub mod control;
pub mod demo;
pub mod fsutil;
pub mod identity;
#[cfg(target_os = "linux")]
pub mod lan;
pub mod mesh;
pub mod netns;
pub mod node_config;
pub mod params;
pub mod paths;
pub mod platform;
pub mod registry;
pub mod registry_api;
pub mod registry_client;
pub mod state;
pub mod token;
pub mod tray;
pub mod tun;
pub mod ui;
pub mod update;
pub mod wire;
