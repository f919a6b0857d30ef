//! Platform plumbing below both [`crate::mesh`] and [`crate::lan`]: the sockets of a Babel LAN
//! interface and the rtnetlink calls that read interface addresses and install kernel routes.
//!
//! Nothing here uses the Babel engine or the mesh: addresses, prefixes as `(address, length)`,
//! sockets. `mesh::lan_discovery` (`mesh up --lan`) and `lan` (`mesh babel run`) both build on
//! it, so neither imports the other. The implementation is chosen per OS (`imp`); only Linux has
//! one today, and callers gate their use of it on `target_os = "linux"` as before.

#[cfg(target_os = "linux")]
#[path = "linux/mod.rs"]
mod imp;

#[cfg(target_os = "linux")]
pub use imp::lan_sock::LanSocket;
#[cfg(target_os = "linux")]
pub use imp::netlink::{IfaceAddrs, Netlink, RTPROT_MESH};
