//! `mesh up --lan IFACE`: nodes on a shared LAN find each other and get QUIC tunnels over
//! their link-local addresses (CONVENTIONS "LAN interfaces": the LAN is for discovery, data
//! always flows through tunnels).
//!
//! Every hello interval (and at once at start, whenever the MAC keys change, and when it hears
//! a neighbour for the first time, so that one need not wait a whole interval) a node sends,
//! from `[its link-local]:6696` to `[ff02::1:6]:6696`, one Babel packet (RFC 8966) holding
//!
//! * a standard multicast Hello TLV (seqno incremented per packet, the interval in
//!   centiseconds), and
//! * one TLV of the experimental type [`TLV_NODE`] (RFC 8966 §4.3 reserves 224–254 for
//!   experimental use; standard routers skip unknown TLVs):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Type = 224   |  Length = 20  |  Version = 1  |  Prefix len   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |       Tunnel UDP port         |   Prefix (16 bytes) ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! signed (RFC 8967 MAC TLV in the trailer) with the network's current sign key over the
//! pseudo-header of the real link-local source, the group and port 6696 on both sides.
//!
//! A receiver verifies the MAC with the accept keys (an unsigned packet passes only when the
//! parameters say "accept unsigned", or on a network without MAC at all), ignores its own
//! packets, refuses prefixes outside the network, and reports `(prefix,
//! [link-local%ifindex]:port)`; the node then keeps a tunnel to that address like a `--peer`.
//! Nothing else is trusted from the packet: the tunnel handshake still checks the peer's
//! certificate against the CA, the CRL and the announced prefix. A replayed packet can only
//! make a node dial the genuine sender's address (the source address is under the MAC), so
//! no packet counter is needed.
//!
//! [`build`] and [`parse`] are sans-IO; [`start`] is the small tokio shell (Linux): per
//! interface the sockets of [`crate::platform::LanSocket`], one sender task and one receiver task per
//! socket.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use ipnet::Ipv6Net;
use tokio::sync::watch;

use super::babel::mac::{self, MacKeys, MacVerdict};
use crate::params::NetworkParams;
use crate::wire::mac::{MAC_TLV_LEN, sign};
use crate::wire::packet::{Packet, PacketRepr};
use crate::wire::tlv::{Tlv, TlvIter, TlvRepr};

/// Type of the node TLV (RFC 8966 §4.3: 224–254 are for experimental use).
pub const TLV_NODE: u8 = 224;
/// Version of the node TLV's layout.
pub const NODE_TLV_VERSION: u8 = 1;
/// Payload length of a version 1 node TLV.
pub const NODE_TLV_LEN: usize = 20;

/// What a node announces on its LAN interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// The node's prefix.
    pub prefix: Ipv6Net,
    /// Its tunnel UDP port.
    pub port: u16,
}

/// A neighbour found on a LAN interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovered {
    /// Its prefix (inside the network, not ours).
    pub prefix: Ipv6Net,
    /// Its tunnel endpoint: link-local address with the interface's scope id, tunnel port.
    pub addr: SocketAddrV6,
}

/// The keys and network in force, as the discovery tasks need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanAuth {
    /// The node's MAC keys (sign, accept, accept unsigned).
    pub keys: MacKeys,
    /// The whole network prefix: announced prefixes must lie inside it.
    pub network: Ipv6Net,
    /// The parameters name a MAC key: without key bytes nothing is sent or accepted.
    pub mac_required: bool,
}

impl LanAuth {
    /// From the parameters in force and the keys derived from them.
    pub fn new(params: &NetworkParams, keys: MacKeys) -> LanAuth {
        LanAuth {
            keys,
            network: params.network,
            mac_required: params.mac.sign.is_some() || params.mac.accept.is_some(),
        }
    }
}

/// Why a received packet causes no dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not a well-formed Babel packet, or a malformed node TLV.
    #[error("malformed packet")]
    Malformed,
    /// A well-formed Babel packet without a Hello and a node TLV (e.g. a babeld on the LAN).
    #[error("not a re6mesh discovery packet")]
    NotDiscovery,
    /// A node TLV of a layout this build does not know.
    #[error("node TLV version {0} is not supported")]
    Version(u8),
    /// No MAC, and unsigned packets are not accepted.
    #[error("unsigned packet")]
    Unsigned,
    /// MACs present, none verifies (another network, or a key this node lacks).
    #[error("bad MAC (another network, or a key this node does not have)")]
    BadMac,
    /// The network uses MAC keys but this node has none yet.
    #[error("this node has no MAC key yet")]
    NoKey,
    /// The announced prefix is outside the network.
    #[error("announced prefix {0} is outside the network")]
    ForeignPrefix(Ipv6Net),
    /// Our own announcement.
    #[error("own packet")]
    Own,
    /// The source is not an IPv6 link-local address.
    #[error("source {0} is not an IPv6 link-local address")]
    NotLinkLocal(IpAddr),
}

/// Why no packet could be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The network signs its packets but this node has no key bytes yet.
    #[error("the network uses MAC keys and this node has none yet")]
    NoKey,
    /// Signing failed (cannot happen with a well-formed packet).
    #[error("cannot sign the packet: {0}")]
    Mac(#[from] crate::wire::MacError),
    /// Encoding failed (cannot happen with a well-formed packet).
    #[error("cannot encode the packet: {0}")]
    Wire(#[from] crate::wire::Error),
}

fn pseudo(src: SocketAddr, dst: SocketAddr) -> crate::wire::PseudoHeader {
    mac::pseudo(src, dst)
}

/// The node TLV's payload.
pub fn encode_node_tlv(ann: &Announcement) -> [u8; NODE_TLV_LEN] {
    let mut v = [0u8; NODE_TLV_LEN];
    v[0] = NODE_TLV_VERSION;
    v[1] = ann.prefix.prefix_len();
    v[2..4].copy_from_slice(&ann.port.to_be_bytes());
    v[4..20].copy_from_slice(&ann.prefix.network().octets());
    v
}

/// Decodes a node TLV's payload (longer payloads of version 1 are accepted: later fields
/// may follow).
pub fn decode_node_tlv(value: &[u8]) -> Result<Announcement, Rejected> {
    let (&version, rest) = value.split_first().ok_or(Rejected::Malformed)?;
    if version != NODE_TLV_VERSION {
        return Err(Rejected::Version(version));
    }
    let fixed = rest.get(..NODE_TLV_LEN - 1).ok_or(Rejected::Malformed)?;
    let plen = fixed[0];
    let port = u16::from_be_bytes([fixed[1], fixed[2]]);
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&fixed[3..19]);
    let prefix = Ipv6Net::new(Ipv6Addr::from(octets), plen).map_err(|_| Rejected::Malformed)?;
    // Canonical prefixes only (no host bits), and a real port.
    if prefix.trunc() != prefix || port == 0 {
        return Err(Rejected::Malformed);
    }
    Ok(Announcement { prefix, port })
}

/// Builds one discovery packet sent from `src` to `dst` (the real link-local address and
/// the group, port 6696 on both sides), signed with the sign key. Unsigned only on a
/// network without MAC or while the parameters accept unsigned packets.
pub fn build(
    ann: &Announcement,
    seqno: u16,
    interval: Duration,
    src: SocketAddr,
    dst: SocketAddr,
    auth: &LanAuth,
) -> Result<Vec<u8>, BuildError> {
    let key = match &auth.keys.sign {
        Some(k) => Some(k.bytes()),
        None if !auth.mac_required || auth.keys.accept_unsigned => None,
        None => return Err(BuildError::NoKey),
    };
    let centis = u16::try_from(interval.as_millis() / 10).unwrap_or(u16::MAX);
    let node = encode_node_tlv(ann);
    let repr = PacketRepr {
        body: vec![
            TlvRepr::Hello {
                flags: 0,
                seqno,
                interval: centis,
                sub_tlvs: Default::default(),
            },
            TlvRepr::Unknown {
                ty: TLV_NODE,
                value: &node,
            },
        ],
        trailer: vec![],
    };
    let mut buf = vec![0u8; repr.buffer_len() + MAC_TLV_LEN];
    let mut len = repr.emit(&mut buf)?;
    if let Some(key) = key {
        len = sign(&mut buf, len, &pseudo(src, dst), key)?;
    }
    buf.truncate(len);
    Ok(buf)
}

/// Checks the MAC step of a received packet against the keys in force.
fn authenticate(
    bytes: &[u8],
    src: SocketAddr,
    dst: SocketAddr,
    auth: &LanAuth,
) -> Result<(), Rejected> {
    if !auth.mac_required {
        // A network without MAC: tunnels run unauthenticated too (the certificate check
        // is what protects them).
        return Ok(());
    }
    match mac::check(&auth.keys, src, dst, bytes) {
        MacVerdict::Verified(_) | MacVerdict::UnsignedAccepted => Ok(()),
        MacVerdict::UnsignedRejected => Err(Rejected::Unsigned),
        MacVerdict::BadMac => Err(Rejected::BadMac),
        MacVerdict::Malformed => Err(Rejected::Malformed),
        // The parameters name a key this node has no bytes for (yet).
        MacVerdict::Disabled => {
            let no_keys: [&[u8]; 0] = [];
            let unsigned = crate::wire::mac::verify(bytes, &pseudo(src, dst), &no_keys)
                == Err(crate::wire::MacError::NoMac);
            if auth.keys.accept_unsigned && unsigned {
                Ok(())
            } else {
                Err(Rejected::NoKey)
            }
        }
    }
}

/// The announcement of a discovery packet, without authentication or policy checks: a
/// well-formed Babel packet whose body holds a Hello and exactly one node TLV.
pub fn parse_announcement(bytes: &[u8]) -> Result<Announcement, Rejected> {
    let packet = Packet::new_checked(bytes).map_err(|_| Rejected::Malformed)?;
    let mut hello = false;
    let mut node = None;
    for tlv in TlvIter::new(packet.body_slice()) {
        let tlv: Tlv<&[u8]> = tlv.map_err(|_| Rejected::Malformed)?;
        match TlvRepr::parse(&tlv).map_err(|_| Rejected::Malformed)? {
            TlvRepr::Hello { .. } => hello = true,
            TlvRepr::Unknown {
                ty: TLV_NODE,
                value,
            } => {
                if node.is_some() {
                    return Err(Rejected::Malformed);
                }
                node = Some(decode_node_tlv(value)?);
            }
            _ => {}
        }
    }
    match (hello, node) {
        (true, Some(a)) => Ok(a),
        _ => Err(Rejected::NotDiscovery),
    }
}

/// Verifies and decodes one packet received on interface `ifindex` from `src` (sent to
/// `dst`): MAC, content, then policy (not ours, inside the network, link-local source).
pub fn parse(
    bytes: &[u8],
    src: SocketAddr,
    dst: SocketAddr,
    ifindex: u32,
    auth: &LanAuth,
    own: &Ipv6Net,
) -> Result<Discovered, Rejected> {
    // Cheap framing check first, so garbage is called malformed rather than unsigned.
    Packet::new_checked(bytes).map_err(|_| Rejected::Malformed)?;
    authenticate(bytes, src, dst, auth)?;
    let ann = parse_announcement(bytes)?;
    if ann.prefix == *own {
        return Err(Rejected::Own);
    }
    if !auth.network.contains(&ann.prefix) || ann.prefix.prefix_len() <= auth.network.prefix_len() {
        return Err(Rejected::ForeignPrefix(ann.prefix));
    }
    let ip = match src.ip() {
        IpAddr::V6(ip) if ip.is_unicast_link_local() => ip,
        other => return Err(Rejected::NotLinkLocal(other)),
    };
    Ok(Discovered {
        prefix: ann.prefix,
        addr: SocketAddrV6::new(ip, ann.port, 0, ifindex),
    })
}

/// How the node announces itself: every `hello` (the Babel hello interval in force), and only
/// while `active` (a node that is `down` falls silent, so its neighbours let it go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanPace {
    /// Interval between announcements.
    pub hello: Duration,
    /// Whether to announce at all.
    pub active: bool,
}

/// The node's side of discovery: the keys and pace the tasks use (the neighbours heard are
/// the node core's, bounded there).
#[derive(Debug)]
pub struct LanPeers {
    auth: watch::Sender<LanAuth>,
    pace: watch::Sender<LanPace>,
}

impl LanPeers {
    /// With the keys and hello interval in force at start.
    pub fn new(auth: LanAuth, hello: Duration) -> LanPeers {
        LanPeers {
            auth: watch::channel(auth).0,
            pace: watch::channel(LanPace {
                hello,
                active: true,
            })
            .0,
        }
    }

    /// What the discovery tasks watch (they stop when this `LanPeers` is dropped).
    pub fn subscribe(&self) -> watch::Receiver<LanAuth> {
        self.auth.subscribe()
    }

    /// The pace the sending tasks follow.
    pub fn pace(&self) -> watch::Receiver<LanPace> {
        self.pace.subscribe()
    }

    /// A new hello interval (the parameters changed it).
    pub fn set_hello(&self, hello: Duration) {
        self.pace
            .send_if_modified(|p| std::mem::replace(&mut p.hello, hello) != hello);
    }

    /// Announce (the node is up) or fall silent (it is down).
    pub fn set_active(&self, active: bool) {
        self.pace
            .send_if_modified(|p| std::mem::replace(&mut p.active, active) != active);
    }

    /// New keys or parameters for the discovery tasks.
    pub fn set_auth(&self, auth: LanAuth) {
        self.auth.send_if_modified(|cur| {
            let changed = *cur != auth;
            *cur = auth;
            changed
        });
    }
}

/// The property the `lan_discovery` fuzz target checks: [`parse`] never panics, and whatever
/// it accepts (unauthenticated network) survives [`build`] → [`parse`] unchanged; with a MAC
/// key nothing unsigned or wrongly signed gets through.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_check(data: &[u8]) -> Result<(), String> {
    use super::babel::mac::MacKey;
    let network: Ipv6Net = "fd00::/8".parse().map_err(|_| "bad network")?;
    let own: Ipv6Net = "fd00:1::/64".parse().map_err(|_| "bad prefix")?;
    let src = SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)), 6696);
    let dst = SocketAddr::new(IpAddr::V6(crate::wire::BABEL_MULTICAST_V6), 6696);
    let open = LanAuth {
        keys: MacKeys::none(),
        network,
        mac_required: false,
    };
    let signed = LanAuth {
        keys: MacKeys::sign(MacKey::new(1, [7u8; 32])),
        network,
        mac_required: true,
    };
    if let Ok(d) = parse(data, src, dst, 3, &signed, &own) {
        return Err(format!("forged packet accepted: {d:?}"));
    }
    let Ok(d) = parse(data, src, dst, 3, &open, &own) else {
        return Ok(());
    };
    let ann = Announcement {
        prefix: d.prefix,
        port: d.addr.port(),
    };
    let again = build(&ann, 1, Duration::from_secs(4), src, dst, &signed)
        .map_err(|e| format!("cannot rebuild {ann:?}: {e}"))?;
    match parse(&again, src, dst, 3, &signed, &own) {
        Ok(d2) if d2 == d => Ok(()),
        other => Err(format!("{d:?} rebuilt then parsed as {other:?}")),
    }
}

#[cfg(target_os = "linux")]
pub use self::io::start;

/// Without Linux there are no LAN sockets.
#[cfg(not(target_os = "linux"))]
pub async fn start<F>(
    _ifaces: &[String],
    _ann: Announcement,
    _pace: watch::Receiver<LanPace>,
    _auth: watch::Receiver<LanAuth>,
    _found: F,
) -> anyhow::Result<()>
where
    F: Fn(Discovered) + Send + Sync + 'static,
{
    anyhow::bail!("LAN discovery (--lan) is only available on Linux")
}

#[cfg(target_os = "linux")]
mod io {
    #![allow(clippy::disallowed_methods)] // IO shell: the discovery tasks, their sockets and timers

    use std::collections::HashSet;
    use std::net::{SocketAddr, SocketAddrV6};
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::Context;
    use ipnet::Ipv6Net;
    use tokio::net::UdpSocket;
    use tokio::sync::{Notify, watch};
    use tracing::{debug, trace};

    use super::{Announcement, Discovered, LanAuth, LanPace, build, parse};
    use crate::platform::{LanSocket, Netlink};
    use crate::wire::{BABEL_MULTICAST_V6, BABEL_PORT};

    type Found = Arc<dyn Fn(Discovered) + Send + Sync>;

    /// Opens the sockets of every interface (failing with one sentence when one cannot be
    /// used) and spawns the discovery tasks; they end when the [`super::LanPeers`] whose
    /// receiver `auth` is goes away. `found` gets every neighbour heard.
    pub async fn start<F>(
        ifaces: &[String],
        ann: Announcement,
        pace: watch::Receiver<LanPace>,
        auth: watch::Receiver<LanAuth>,
        found: F,
    ) -> anyhow::Result<()>
    where
        F: Fn(Discovered) + Send + Sync + 'static,
    {
        let found: Found = Arc::new(found);
        let mut nl = Netlink::open()
            .context("cannot open a netlink socket to read the LAN interfaces' addresses")?;
        let mut names: Vec<&String> = ifaces.iter().collect();
        names.sort();
        names.dedup();
        let mut socks = Vec::new();
        for name in names {
            let s = LanSocket::open(name, BABEL_PORT, BABEL_MULTICAST_V6, &mut nl)
                .await
                .with_context(|| format!("cannot use LAN interface {name} for discovery"))?;
            tracing::info!(iface = %name, link_local = %s.link_local, "LAN discovery on");
            socks.push(Arc::new(s));
        }
        for s in socks {
            // A new neighbour gets our announcement at once, so it need not wait a whole
            // hello interval to dial us.
            let new_neighbour = Arc::new(Notify::new());
            tokio::spawn(send_loop(
                s.clone(),
                ann,
                pace.clone(),
                auth.clone(),
                new_neighbour.clone(),
            ));
            let group = SocketAddr::V6(SocketAddrV6::new(s.group, s.port, 0, 0));
            let mine = SocketAddr::V6(SocketAddrV6::new(s.link_local, s.port, 0, 0));
            for (sock, dst) in [(s.mcast.clone(), group), (s.ucast.clone(), mine)] {
                tokio::spawn(recv_loop(
                    s.clone(),
                    sock,
                    dst,
                    ann.prefix,
                    auth.clone(),
                    found.clone(),
                    new_neighbour.clone(),
                ));
            }
        }
        Ok(())
    }

    async fn send_loop(
        s: Arc<LanSocket>,
        ann: Announcement,
        mut pace: watch::Receiver<LanPace>,
        mut auth: watch::Receiver<LanAuth>,
        new_neighbour: Arc<Notify>,
    ) {
        let src = SocketAddr::V6(SocketAddrV6::new(s.link_local, s.port, 0, 0));
        let dst = SocketAddr::V6(SocketAddrV6::new(s.group, s.port, 0, 0));
        let mut seqno: u16 = rand::random();
        let ticker = |hello: Duration| {
            let mut t = tokio::time::interval(hello.max(Duration::from_millis(50)));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let mut now = *pace.borrow_and_update();
        let mut tick = ticker(now.hello);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = new_neighbour.notified() => {}
                changed = auth.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                changed = pace.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = *pace.borrow_and_update();
                    if next.hello != now.hello {
                        // the first tick is immediate: the new interval is announced at once
                        tick = ticker(next.hello);
                    }
                    if next.active != now.active {
                        debug!(iface = %s.name, active = next.active, "LAN discovery announcements");
                    }
                    now = next;
                }
            }
            if !now.active {
                continue;
            }
            let hello = now.hello.max(Duration::from_millis(50));
            let current = auth.borrow_and_update().clone();
            match build(&ann, seqno, hello, src, dst, &current) {
                Ok(p) => {
                    seqno = seqno.wrapping_add(1);
                    if let Err(e) = s.ucast.send_to(&p, s.scoped(dst)).await {
                        debug!(iface = %s.name, error = %e, "LAN discovery packet not sent");
                    }
                }
                Err(e) => debug!(iface = %s.name, error = %e, "no LAN discovery packet sent"),
            }
        }
    }

    async fn recv_loop(
        s: Arc<LanSocket>,
        sock: Arc<UdpSocket>,
        dst: SocketAddr,
        own: Ipv6Net,
        mut auth: watch::Receiver<LanAuth>,
        found: Found,
        new_neighbour: Arc<Notify>,
    ) {
        let mut buf = vec![0u8; 65536];
        let mut heard: HashSet<Ipv6Net> = HashSet::new();
        loop {
            let (n, from) = tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(iface = %s.name, error = %e, "LAN discovery receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                changed = auth.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            };
            // The pseudo-header holds addresses without zone.
            let src = match from {
                SocketAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0)),
                v4 => v4,
            };
            let Some(bytes) = buf.get(..n) else { continue };
            let current = auth.borrow().clone();
            match parse(bytes, src, dst, s.ifindex, &current, &own) {
                Ok(d) => {
                    trace!(iface = %s.name, peer = %d.prefix, addr = %d.addr, "LAN neighbour heard");
                    if heard.len() >= 4096 {
                        heard.clear();
                    }
                    if heard.insert(d.prefix) {
                        new_neighbour.notify_one();
                    }
                    found(d);
                }
                Err(super::Rejected::Own) => {}
                Err(reason) => debug!(
                    iface = %s.name,
                    from = %src,
                    %reason,
                    "LAN discovery packet ignored"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::babel::mac::MacKey;

    const SRC: &str = "[fe80::1]:6696";
    const DST: &str = "[ff02::1:6]:6696";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn network() -> Ipv6Net {
        "fd42:aa::/48".parse().unwrap()
    }

    fn own() -> Ipv6Net {
        "fd42:aa:0:2::/64".parse().unwrap()
    }

    fn announcement() -> Announcement {
        Announcement {
            prefix: "fd42:aa:0:1::/64".parse().unwrap(),
            port: 6464,
        }
    }

    fn auth(key: u8) -> LanAuth {
        LanAuth {
            keys: MacKeys::sign(MacKey::new(1, [key; 32])),
            network: network(),
            mac_required: true,
        }
    }

    fn packet(key: u8) -> Vec<u8> {
        build(
            &announcement(),
            0x1234,
            Duration::from_millis(500),
            addr(SRC),
            addr(DST),
            &auth(key),
        )
        .unwrap()
    }

    // Hello seqno 0x1234 interval 50 cs, node TLV fd42:aa:0:1::/64 port 6464, then the MAC.
    static PACKET_BODY: [u8; 34] = [
        0x2a, 0x02, 0x00, 0x1e, // header, body 30
        0x04, 0x06, 0x00, 0x00, 0x12, 0x34, 0x00, 0x32, // Hello
        0xe0, 0x14, 0x01, 0x40, 0x19, 0x40, // node TLV: version 1, /64, port 6464
        0xfd, 0x42, 0x00, 0xaa, 0x00, 0x00, 0x00, 0x01, // prefix
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn constructs_packet() {
        let p = packet(1);
        assert_eq!(&p[..34], &PACKET_BODY[..]);
        assert_eq!(p.len(), 34 + MAC_TLV_LEN);
        assert_eq!(&p[34..36], &[crate::wire::tlv::kind::MAC, 32]);
    }

    #[test]
    fn parses_round_trip() {
        let d = parse(&packet(1), addr(SRC), addr(DST), 7, &auth(1), &own()).unwrap();
        assert_eq!(d.prefix, announcement().prefix);
        assert_eq!(
            d.addr,
            SocketAddrV6::new("fe80::1".parse().unwrap(), 6464, 0, 7)
        );
        assert_eq!(parse_announcement(&PACKET_BODY), Ok(announcement()));
    }

    #[test]
    fn rejects_wrong_key() {
        assert_eq!(
            parse(&packet(2), addr(SRC), addr(DST), 7, &auth(1), &own()),
            Err(Rejected::BadMac)
        );
    }

    #[test]
    fn rejects_other_source_address_or_port_under_the_mac() {
        for src in ["[fe80::2]:6696", "[fe80::1]:6697"] {
            assert_eq!(
                parse(&packet(1), addr(src), addr(DST), 7, &auth(1), &own()),
                Err(Rejected::BadMac)
            );
        }
    }

    #[test]
    fn rejects_tampered_content() {
        let mut p = packet(1);
        p[17] ^= 1; // port
        assert_eq!(
            parse(&p, addr(SRC), addr(DST), 7, &auth(1), &own()),
            Err(Rejected::BadMac)
        );
    }

    #[test]
    fn rejects_unsigned_unless_accept_unsigned() {
        let unsigned = &PACKET_BODY[..];
        assert_eq!(
            parse(unsigned, addr(SRC), addr(DST), 7, &auth(1), &own()),
            Err(Rejected::Unsigned)
        );
        let mut transition = auth(1);
        transition.keys.accept_unsigned = true;
        assert!(parse(unsigned, addr(SRC), addr(DST), 7, &transition, &own()).is_ok());
        // The parameters name a key whose bytes this node lacks.
        let keyless = LanAuth {
            keys: MacKeys::none(),
            network: network(),
            mac_required: true,
        };
        assert_eq!(
            parse(unsigned, addr(SRC), addr(DST), 7, &keyless, &own()),
            Err(Rejected::NoKey)
        );
        assert_eq!(
            parse(&packet(1), addr(SRC), addr(DST), 7, &keyless, &own()),
            Err(Rejected::NoKey)
        );
        assert_eq!(
            build(
                &announcement(),
                0,
                Duration::from_secs(4),
                addr(SRC),
                addr(DST),
                &keyless
            ),
            Err(BuildError::NoKey)
        );
        // A network without MAC: unsigned both ways.
        let open = LanAuth {
            mac_required: false,
            ..keyless
        };
        let p = build(
            &announcement(),
            0x1234,
            Duration::from_millis(500),
            addr(SRC),
            addr(DST),
            &open,
        )
        .unwrap();
        assert_eq!(&p[..], unsigned);
        assert!(parse(&p, addr(SRC), addr(DST), 7, &open, &own()).is_ok());
    }

    #[test]
    fn rejects_truncated() {
        let p = packet(1);
        for n in 0..p.len() {
            let r = parse(&p[..n], addr(SRC), addr(DST), 7, &auth(1), &own());
            assert!(r.is_err(), "{n} bytes accepted");
        }
        // Body shortened consistently: the node TLV overruns it.
        let mut short = PACKET_BODY[..30].to_vec();
        short[3] = 26;
        assert_eq!(parse_announcement(&short), Err(Rejected::Malformed));
        // Node TLV too short for its fields.
        let mut tiny = PACKET_BODY[..18].to_vec();
        tiny[3] = 14;
        tiny[13] = 4;
        assert_eq!(parse_announcement(&tiny), Err(Rejected::Malformed));
    }

    #[test]
    fn rejects_malformed_node_tlv() {
        let with = |i: usize, v: u8| {
            let mut p = PACKET_BODY;
            p[i] = v;
            parse_announcement(&p)
        };
        assert_eq!(with(14, 2), Err(Rejected::Version(2)));
        assert_eq!(with(15, 129), Err(Rejected::Malformed)); // prefix length
        assert_eq!(with(15, 16), Err(Rejected::Malformed)); // host bits set
        let mut port0 = PACKET_BODY;
        port0[16] = 0;
        port0[17] = 0;
        assert_eq!(parse_announcement(&port0), Err(Rejected::Malformed));
        assert_eq!(with(4, 0x01), Err(Rejected::NotDiscovery)); // Hello → PadN
        assert_eq!(with(12, 0xe1), Err(Rejected::NotDiscovery)); // other TLV type
    }

    #[test]
    fn rejects_foreign_prefix() {
        for prefix in ["fd42:bb:0:1::/64", "fd42:aa::/48", "fd42::/32"] {
            let ann = Announcement {
                prefix: prefix.parse().unwrap(),
                port: 6464,
            };
            let p = build(
                &ann,
                1,
                Duration::from_secs(4),
                addr(SRC),
                addr(DST),
                &auth(1),
            )
            .unwrap();
            assert_eq!(
                parse(&p, addr(SRC), addr(DST), 7, &auth(1), &own()),
                Err(Rejected::ForeignPrefix(ann.prefix))
            );
        }
    }

    #[test]
    fn pace_changes_wake_the_senders_only_when_something_changed() {
        let peers = LanPeers::new(auth(1), Duration::from_secs(1));
        let mut rx = peers.pace();
        assert_eq!(
            *rx.borrow_and_update(),
            LanPace {
                hello: Duration::from_secs(1),
                active: true
            }
        );
        peers.set_hello(Duration::from_secs(1));
        peers.set_active(true);
        assert!(!rx.has_changed().unwrap(), "nothing changed");
        peers.set_active(false);
        assert!(rx.has_changed().unwrap());
        assert!(!rx.borrow_and_update().active);
        peers.set_hello(Duration::from_secs(4));
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            *rx.borrow_and_update(),
            LanPace {
                hello: Duration::from_secs(4),
                active: false
            }
        );
    }

    #[test]
    fn ignores_own_packet() {
        let mine = announcement().prefix;
        assert_eq!(
            parse(&packet(1), addr(SRC), addr(DST), 7, &auth(1), &mine),
            Err(Rejected::Own)
        );
    }

    #[test]
    fn rejects_non_link_local_source() {
        let src = addr("[fd99::1]:6696");
        let ann = announcement();
        let p = build(&ann, 1, Duration::from_secs(4), src, addr(DST), &auth(1)).unwrap();
        assert_eq!(
            parse(&p, src, addr(DST), 7, &auth(1), &own()),
            Err(Rejected::NotLinkLocal(src.ip()))
        );
    }

    #[test]
    fn standard_babel_packets_are_not_discovery() {
        // A babeld Hello + PC, signed with our key: authentic but no node TLV.
        let mut p = vec![
            0x2a, 0x02, 0x00, 0x16, 0x04, 0x06, 0x00, 0x00, 0x00, 0x01, 0x01, 0x90, 0x11, 0x0c,
            0x00, 0x00, 0x00, 0x01, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        ];
        crate::wire::mac::sign_vec(&mut p, &pseudo(addr(SRC), addr(DST)), &[1u8; 32]).unwrap();
        assert_eq!(
            parse(&p, addr(SRC), addr(DST), 7, &auth(1), &own()),
            Err(Rejected::NotDiscovery)
        );
    }

    #[test]
    fn accepts_the_previous_key_during_rotation() {
        let mut rotating = auth(2);
        rotating.keys.accept = vec![MacKey::new(2, vec![1u8; 32])];
        assert!(parse(&packet(1), addr(SRC), addr(DST), 7, &rotating, &own()).is_ok());
    }

    #[test]
    fn new_keys_reach_the_discovery_tasks() {
        let peers = LanPeers::new(auth(1), Duration::from_secs(1));
        let rx = peers.subscribe();
        peers.set_auth(auth(3));
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn fuzz_property_holds_on_emitted_packets_and_the_corpus() {
        let open = LanAuth {
            keys: MacKeys::none(),
            network: network(),
            mac_required: false,
        };
        let unsigned = build(
            &announcement(),
            9,
            Duration::from_secs(4),
            addr(SRC),
            addr(DST),
            &open,
        )
        .unwrap();
        for p in [packet(1), unsigned, PACKET_BODY.to_vec()] {
            fuzz_check(&p).unwrap();
        }
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/lan_discovery");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).unwrap();
                fuzz_check(&bytes).unwrap_or_else(|v| panic!("{}: {v}", e.path().display()));
            }
        }
    }

    /// Writes the seed corpus of the fuzz target:
    /// `cargo test --lib lan_discovery::tests::write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/lan_discovery");
        std::fs::create_dir_all(&dir).unwrap();
        let open = LanAuth {
            keys: MacKeys::none(),
            network: "fd00::/8".parse().unwrap(),
            mac_required: false,
        };
        let seeds = [
            ("signed", packet(1)),
            (
                "unsigned",
                build(
                    &announcement(),
                    1,
                    Duration::from_secs(4),
                    addr(SRC),
                    addr(DST),
                    &open,
                )
                .unwrap(),
            ),
            (
                "unsigned-48",
                build(
                    &Announcement {
                        prefix: "fd42:aa:1::/48".parse().unwrap(),
                        port: 443,
                    },
                    2,
                    Duration::from_millis(500),
                    addr(SRC),
                    addr(DST),
                    &open,
                )
                .unwrap(),
            ),
            ("version2", {
                let mut p = PACKET_BODY.to_vec();
                p[14] = 2;
                p
            }),
        ];
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("emitted-{name}")), bytes).unwrap();
        }
    }
}
