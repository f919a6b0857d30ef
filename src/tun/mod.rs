//! The TUN device (crate tun-rs): the node address, the route of the whole network prefix,
//! the MTU. Thin on purpose: the platform code lives in tun-rs (Linux tun, macOS utun,
//! Windows wintun), and what it leaves to us (default name, address removal, the privilege
//! hint) in [`crate::platform::tun`]. Runtime-tested on Linux; macOS and Windows are
//! compile-checked.
//!
//! The device gets the node address (prefix::1) with the *network* prefix length, so the
//! kernel routes the whole network prefix into it without a separate route.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

/// Default TUN name: `mesh0` (CONVENTIONS); `utun` on macOS, where the system numbers the
/// device (`utunN`).
pub const DEFAULT_NAME: &str = crate::platform::tun::DEFAULT_NAME;
/// Default TUN MTU (CONVENTIONS).
pub const DEFAULT_MTU: u16 = 1280;

/// Why the TUN device cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// No permission (root / CAP_NET_ADMIN / Administrator needed).
    #[error("no permission to create the TUN device {name}: {hint}", hint = crate::platform::privilege::TUN_HINT)]
    Permission {
        /// Device name.
        name: String,
    },
    /// A name this OS cannot give a TUN device (macOS: only `utun` or `utunN`).
    #[error("{0}")]
    Name(String),
    /// Anything else the OS refused.
    #[error("cannot create the TUN device {name}: {source}")]
    Os {
        /// Device name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An open TUN device.
pub struct Tun {
    dev: tun_rs::AsyncDevice,
    name: String,
    address: Ipv6Addr,
    prefix_len: u8,
}

impl Tun {
    /// Creates `name` with `address`/`network.prefix_len()` and `mtu`, up. Needs a tokio
    /// runtime.
    pub fn open(
        name: &str,
        address: Ipv6Addr,
        network: Ipv6Net,
        mtu: u16,
    ) -> Result<Tun, TunError> {
        let mut builder = tun_rs::DeviceBuilder::new();
        if let Some(n) = crate::platform::tun::requested_name(name).map_err(TunError::Name)? {
            builder = builder.name(n);
        }
        let dev = builder
            .mtu(mtu)
            .ipv6(address, network.prefix_len())
            .build_async()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::PermissionDenied => TunError::Permission {
                    name: name.to_owned(),
                },
                _ => TunError::Os {
                    name: name.to_owned(),
                    source,
                },
            })?;
        // the name in use: on macOS the system may have picked the number
        let name = dev.name().unwrap_or_else(|_| name.to_owned());
        Ok(Tun {
            dev,
            name,
            address,
            prefix_len: network.prefix_len(),
        })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the node address (and with it the route of the network prefix): `mesh down`.
    pub fn withdraw(&self) -> std::io::Result<()> {
        crate::platform::tun::remove_address_v6(&self.dev, self.address, self.prefix_len)
    }

    /// Puts the node address (and the route) back: `mesh up` after `mesh down`.
    pub fn restore(&self) -> std::io::Result<()> {
        self.dev.add_address_v6(self.address, self.prefix_len)
    }

    /// Reads one packet into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.dev.recv(buf).await
    }

    /// Writes one packet.
    pub async fn send(&self, packet: &[u8]) -> std::io::Result<usize> {
        self.dev.send(packet).await
    }
}
