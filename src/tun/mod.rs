//! The TUN device (crate tun-rs): the node address, the route of the whole network prefix,
//! the MTU. Thin on purpose: the platform code lives in tun-rs (Linux tun, macOS utun,
//! Windows wintun), and what it leaves to us (default name, address removal, the privilege
//! hint) in [`crate::platform::tun`]. Runtime-tested on Linux; macOS and Windows are
//! compile-checked.
//!
//! The device gets the node address (prefix::1) with the *network* prefix length, so the
//! kernel routes the whole network prefix into it without a separate route.

mod batch;

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

pub use batch::{RecvBatch, SendBatch, WRITE_BATCH};

/// Default TUN name: `mesh0` (CONVENTIONS); `utun` on macOS, where the system numbers the
/// device (`utunN`).
pub const DEFAULT_NAME: &str = crate::platform::tun::DEFAULT_NAME;
/// Default TUN MTU (CONVENTIONS).
pub const DEFAULT_MTU: u16 = 1280;

/// Why the TUN device cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// No permission (root / CAP_NET_ADMIN / Administrator needed; on Linux a user may also
    /// be given a persistent TUN device with `mesh setup-tun`).
    #[error("no permission to open the TUN device {name}: {hint}")]
    Permission {
        /// Device name.
        name: String,
        /// What to do ([`crate::platform::privilege::tun_hint`]).
        hint: String,
    },
    /// The persistent TUN device set up for this user lacks the node address.
    #[error(
        "the TUN device {name} set up for you lacks this node's address {address}/{prefix_len} \
         (it was set up before `mesh join`, or for another join): have root run \
         `mesh setup-tun --user USER` again"
    )]
    WithoutAddress {
        /// Device name.
        name: String,
        /// The node address.
        address: Ipv6Addr,
        /// The network's prefix length.
        prefix_len: u8,
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
    /// A persistent device root set up for this user (`mesh setup-tun`): its address, route
    /// and MTU are root's, and stay as they are (see [`Tun::withdraw`]).
    given: bool,
    /// Opened with offload (Linux: virtio-net header on every read and write, TSO/GRO).
    offload: bool,
    /// The device MTU when opened (the largest packet a split super-segment holds).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    mtu: u16,
    /// Write buffers shared by every writer ([`Tun::send_pooled`]).
    pool: std::sync::Mutex<Vec<SendBatch>>,
}

impl TunError {
    /// The process exit code for this error: 2 when the user must first set something up
    /// (privilege, or a TUN device of their own), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            TunError::Permission { .. } | TunError::WithoutAddress { .. } => 2,
            TunError::Name(_) | TunError::Os { .. } => 1,
        }
    }
}

impl Tun {
    /// Creates `name` with `address`/`network.prefix_len()` and `mtu`, up. Without the
    /// privilege for that, opens the persistent device root set up for this user with `mesh
    /// setup-tun` (Linux), as it is. Needs a tokio runtime.
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
        let prefix_len = network.prefix_len();
        let os = |source| TunError::Os {
            name: name.to_owned(),
            source,
        };
        // TSO/GRO through the virtio-net header (batch.rs): Linux only
        #[cfg(target_os = "linux")]
        let builder = builder.offload(true);
        let (dev, given) = match builder.mtu(mtu).ipv6(address, prefix_len).build_async() {
            Ok(dev) => (dev, false),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                use crate::platform::tun::Attached;
                let refused = || TunError::Permission {
                    name: name.to_owned(),
                    hint: crate::platform::privilege::tun_hint(name),
                };
                match crate::platform::tun::attach_persistent(name, address, prefix_len) {
                    Ok(Attached::Ready(dev)) => (dev, true),
                    Ok(Attached::WithoutAddress) => {
                        return Err(TunError::WithoutAddress {
                            name: name.to_owned(),
                            address,
                            prefix_len,
                        });
                    }
                    Ok(Attached::Absent) => return Err(refused()),
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        return Err(refused());
                    }
                    Err(e) => return Err(os(e)),
                }
            }
            // a persistent device that already has the address (set up for a user, opened here
            // by root or with the capability): use it as it is
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match crate::platform::tun::attach_persistent(name, address, prefix_len) {
                    Ok(crate::platform::tun::Attached::Ready(dev)) => (dev, true),
                    _ => return Err(os(e)),
                }
            }
            Err(e) => return Err(os(e)),
        };
        // the name in use: on macOS the system may have picked the number
        let name = dev.name().unwrap_or_else(|_| name.to_owned());
        if given {
            tracing::info!(
                device = %name,
                "using the persistent TUN device set up for this user: its address stays while the node is down"
            );
        }
        #[cfg(target_os = "linux")]
        let offload = dev.tcp_gso();
        #[cfg(not(target_os = "linux"))]
        let offload = false;
        let mtu = dev.mtu().unwrap_or(mtu);
        Ok(Tun {
            dev,
            name,
            address,
            prefix_len,
            given,
            offload,
            mtu,
            pool: Default::default(),
        })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the node address (and with it the route of the network prefix): `mesh down`.
    /// On a device set up for this user (`mesh setup-tun`) the address is root's and stays:
    /// removing it needs CAP_NET_ADMIN, and `mesh up` could not put it back. The node is down
    /// all the same (tunnels closed, nothing forwarded): what is sent to the network meanwhile
    /// is dropped instead of being refused by the kernel.
    pub fn withdraw(&self) -> std::io::Result<()> {
        if self.given {
            return Ok(());
        }
        crate::platform::tun::remove_address_v6(&self.dev, self.address, self.prefix_len)
    }

    /// Puts the node address (and the route) back: `mesh up` after `mesh down` (nothing to do
    /// on a device set up for this user: its address never left).
    pub fn restore(&self) -> std::io::Result<()> {
        if self.given {
            return Ok(());
        }
        self.dev.add_address_v6(self.address, self.prefix_len)
    }

    /// Routes `prefix` into this device (`add`) or removes that route: a subnet behind
    /// another node (issue 15), so the OS sends packets for it into the mesh.
    pub fn route_v6(&self, prefix: Ipv6Net, add: bool) -> std::io::Result<()> {
        let index = self.dev.if_index()?;
        crate::platform::tun::route_v6(index, prefix.network(), prefix.prefix_len(), add)
    }

    /// Gives the device the IPv4 address `addr` with the prefix length of `range` (IPv4
    /// over the mesh, issue 15), which routes the range into it. Linux; elsewhere an error
    /// says what is missing (docs/PLATFORMS.md).
    pub fn add_ipv4(&self, addr: std::net::Ipv4Addr, range: ipnet::Ipv4Net) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            if self.given {
                return Err(std::io::Error::other(
                    "a TUN device set up for this user (mesh setup-tun) has no IPv4 address: give it one as root",
                ));
            }
            self.dev.add_address_v4(addr, range.prefix_len())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (addr, range);
            Err(std::io::Error::other(
                "IPv4 over the mesh is not supported on this system yet",
            ))
        }
    }

    /// Routes the IPv4 `prefix` into this device (`add`) or removes that route: an IPv4
    /// subnet behind another node (issue 15). Linux only.
    pub fn route_v4(&self, prefix: ipnet::Ipv4Net, add: bool) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            let index = self.dev.if_index()?;
            let mut nl = crate::platform::Netlink::open()?;
            let dst = std::net::IpAddr::V4(prefix.network());
            if add {
                nl.replace_dev_route(dst, prefix.prefix_len(), index)
            } else {
                nl.delete_route(dst, prefix.prefix_len())
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (prefix, add);
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "routes to IPv4 subnets behind other nodes are installed on Linux only",
            ))
        }
    }

    /// Whether this is a persistent device root set up for this user (`mesh setup-tun`).
    pub fn is_given(&self) -> bool {
        self.given
    }

    /// Reads one packet into `buf` (with offload, the first packet of what one read returns:
    /// the data path uses [`Tun::recv_batch`]).
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.offload {
            return self.dev.recv(buf).await;
        }
        let mut batch = RecvBatch::default();
        let mut out = Vec::new();
        while out.is_empty() {
            self.recv_batch(&mut batch, 0, &mut out).await?;
        }
        let p = &out[0];
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        Ok(n)
    }

    /// Writes one packet (with offload, after a virtio-net header saying "nothing to do").
    pub async fn send(&self, packet: &[u8]) -> std::io::Result<usize> {
        #[cfg(target_os = "linux")]
        if self.offload {
            let hdr = [0u8; tun_rs::VIRTIO_NET_HDR_LEN];
            let bufs = [std::io::IoSlice::new(&hdr), std::io::IoSlice::new(packet)];
            return self
                .dev
                .send_vectored(&bufs)
                .await
                .map(|n| n.saturating_sub(hdr.len()));
        }
        self.dev.send(packet).await
    }
}
