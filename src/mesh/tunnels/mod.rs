//! QUIC tunnels between nodes (DESIGN §6, CONVENTIONS "Tunnels and MTU").
//!
//! One quinn endpoint per node serves both roles. A [`Tunnel`] is one QUIC connection to one
//! neighbour, authenticated both ways by [`tls`]; it carries datagrams framed by [`frame`]
//! (IPv6 packets and Babel packets) and one control stream of [`control`] messages.
//! Keep-alive and idle timeout are short (250 ms / 1 s by default) so a silent tunnel is
//! declared dead within about a second.
//!
//! Full-size packets: `min_mtu` = [`QUIC_MIN_MTU`] makes quinn pad the client's Initial and the
//! server's ack-eliciting Initials to 1360 bytes of UDP payload, so a handshake only completes
//! on a path that carries 1360-byte packets both ways. When a handshake times out, the dialler
//! tells a too-small path from an unreachable peer: a second handshake of 1200-byte packets
//! (what every IPv6 path carries) from a throwaway endpoint, then one more full-size attempt.
//! Small succeeds, full-size fails again: the path is refused with one clear sentence
//! ([`TunnelError::PathMtu`]), and the small connection is closed with [`CloseCode::PathMtu`] so the
//! peer logs the same sentence.

pub mod close;
pub mod control;
pub mod frame;
pub mod policy;
pub mod sched;
mod sender;
pub mod tls;
pub mod traffic;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ipnet::Ipv6Net;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::identity;
pub use close::CloseCode;
pub use tls::Trust;

/// QUIC `initial_mtu` and `min_mtu` (UDP payload bytes): a path that cannot carry this is not
/// used.
pub const QUIC_MIN_MTU: u16 = 1360;
/// UDP payload of the diagnostic handshake after a full-size one timed out: quinn's minimum,
/// which every IPv6 path carries (1248 < 1280).
const DIAG_MTU: u16 = 1200;
/// Estimated RTT of the diagnostic handshake before it has a sample: short, so that it
/// retransmits three times within the idle timeout (it only has to tell "alive" from "dead").
const DIAG_INITIAL_RTT: Duration = Duration::from_millis(100);
/// How long the diagnostic connection may take to send its close once the verdict is known.
const DIAG_CLOSE_LINGER: Duration = Duration::from_millis(500);
/// quinn's datagram send buffer per tunnel. Small: the queue that matters is the scheduler's
/// in front of it ([`sched`], Babel first, data bounded in time), and a Babel packet waits
/// behind at most this much data (64 KiB: ~0.5 ms at 1 Gbit/s) once it leaves that queue.
pub const DATAGRAM_QUEUE: usize = 64 * 1024;

/// quinn's buffer of received datagrams the tunnel reader has not taken yet (quinn drops the
/// oldest beyond it; its default is 1.25 MB).
pub const DATAGRAM_RECV_BUFFER: usize = 8 * 1024 * 1024;

/// UDP socket buffers asked for (send and receive). The kernel's default (~208 KiB) overflows
/// at a Gbit/s: each lost UDP GRO batch is ~10 inner TCP segments lost, since QUIC does not
/// retransmit datagrams. Capped by `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Timers of the tunnels (set short in tests through configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelTimers {
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// Silence after which a tunnel is dead.
    pub idle_timeout: Duration,
}

impl Default for TunnelTimers {
    fn default() -> Self {
        TunnelTimers {
            keep_alive: Duration::from_millis(250),
            idle_timeout: Duration::from_secs(1),
        }
    }
}

/// Tunnel failures, by whom to blame.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// Local configuration (identity, socket).
    #[error("tunnel set-up failed: {0}")]
    Setup(String),
    /// The peer could not be reached or refused us, or we refused it.
    #[error("tunnel to {addr} failed: {reason}")]
    Connect {
        /// Peer address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer's certificate is not a node certificate of this network.
    #[error("the peer at {0} presented no usable node certificate")]
    PeerIdentity(SocketAddr),
    /// The path carries small packets but not [`QUIC_MIN_MTU`]-byte ones (one sentence, see
    /// [`path_mtu_sentence`]).
    #[error("{0}")]
    PathMtu(String),
    /// The peer refused our certificate as revoked (TLS alert, or the tunnel closed with
    /// [`CloseCode::Revoked`] during the hello): this node should ask the registry and renew.
    #[error("the peer at {0} refused this node's certificate as revoked")]
    Revoked(SocketAddr),
}

/// The one sentence logged, on both sides, when a path does not carry [`QUIC_MIN_MTU`]-byte
/// packets. `peer` is how the peer is shown (address, with or without port).
pub fn path_mtu_sentence(peer: &dyn std::fmt::Display, ip: IpAddr) -> String {
    let ip_udp = if ip.to_canonical().is_ipv4() {
        20 + 8
    } else {
        40 + 8
    };
    format!(
        "the path to {peer} does not carry {QUIC_MIN_MTU}-byte packets (QUIC handshakes padded \
         to {QUIC_MIN_MTU} bytes time out while {DIAG_MTU}-byte ones complete); re6mesh needs an \
         underlay MTU of at least {} bytes ({QUIC_MIN_MTU} bytes of UDP payload)",
        usize::from(QUIC_MIN_MTU) + ip_udp
    )
}

/// What a node says about itself in the first control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloInfo {
    /// Protocol version.
    pub protocol: u32,
    /// Network parameters version.
    pub params_version: u64,
    /// Reachable UDP endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// The country the node says it is in (ISO 3166 alpha-2), for the country rules.
    pub country: Option<String>,
    /// Where the sender sees the receiver's packets come from (filled per connection when
    /// the hello is sent; what the node sets is ignored).
    pub observed: Option<SocketAddr>,
}

/// How long the control-stream hello exchange may take.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// One established tunnel: authenticated both ways, hellos exchanged.
#[derive(Debug)]
pub struct Tunnel {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    /// The neighbour's prefix (from its certificate).
    pub peer_prefix: Ipv6Net,
    /// The neighbour's certificate serial.
    pub peer_serial: String,
    /// When the neighbour's certificate expires (Unix seconds).
    pub peer_not_after: i64,
    /// The neighbour's certificate (DER).
    pub peer_cert: Vec<u8>,
    /// We dialled it (false: it dialled us).
    pub initiated: bool,
    /// The neighbour's hello.
    pub peer_hello: HelloInfo,
    /// Control stream, send half.
    pub control_send: quinn::SendStream,
    /// Control stream, receive half, with whatever followed the hello already decoded.
    pub control_recv: quinn::RecvStream,
    /// Decoder holding bytes received after the hello.
    pub control_decoder: control::Decoder,
}

fn peer_identity(
    conn: &quinn::Connection,
) -> Result<(Ipv6Net, identity::CertInfo, Vec<u8>), TunnelError> {
    let addr = conn.remote_address();
    let der = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().map(|c| c.to_vec()))
        .ok_or(TunnelError::PeerIdentity(addr))?;
    let info = identity::cert_info(&der).map_err(|_| TunnelError::PeerIdentity(addr))?;
    let prefix = info.prefix.ok_or(TunnelError::PeerIdentity(addr))?;
    Ok((prefix, info, der))
}

async fn read_hello(
    recv: &mut quinn::RecvStream,
    decoder: &mut control::Decoder,
) -> Result<HelloInfo, String> {
    let mut buf = [0u8; 2048];
    loop {
        match decoder.next_message().map_err(|e| e.to_string())? {
            Some(control::ControlMsg::Hello {
                protocol,
                params_version,
                endpoints,
                country,
                observed,
            }) => {
                return Ok(HelloInfo {
                    protocol,
                    params_version,
                    endpoints,
                    country: country.filter(|c| valid_country(c)),
                    observed,
                });
            }
            Some(other) => return Err(format!("expected a hello, got {other:?}")),
            None => {}
        }
        match recv.read(&mut buf).await.map_err(|e| e.to_string())? {
            Some(n) => decoder.push(&buf[..n]),
            None => return Err("the control stream ended before the hello".into()),
        }
    }
}

fn hello_msg(h: &HelloInfo) -> Vec<u8> {
    control::encode(&control::ControlMsg::Hello {
        protocol: h.protocol,
        params_version: h.params_version,
        endpoints: h.endpoints.clone(),
        country: h.country.clone(),
        observed: h.observed,
    })
}

/// An ISO 3166 alpha-2 code as the country rules use it: two upper-case ASCII letters.
pub fn valid_country(c: &str) -> bool {
    c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())
}

impl Tunnel {
    async fn establish(
        conn: quinn::Connection,
        initiated: bool,
        mut me: HelloInfo,
        min_protocol: u32,
    ) -> Result<Tunnel, TunnelError> {
        let addr = conn.remote_address();
        me.observed = Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()));
        let err = |reason: String| TunnelError::Connect { addr, reason };
        let (peer_prefix, peer_cert, peer_cert_der) = peer_identity(&conn)?;
        let exchange = async {
            let mut decoder = control::Decoder::default();
            // The dialler opens the stream and speaks first; the peer answers. A peer that
            // refused our certificate closes the connection, so this also confirms that the
            // handshake was accepted on the other side.
            let (mut send, mut recv) = if initiated {
                let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                send.write_all(&hello_msg(&me))
                    .await
                    .map_err(|e| e.to_string())?;
                (send, recv)
            } else {
                conn.accept_bi().await.map_err(|e| e.to_string())?
            };
            let peer = read_hello(&mut recv, &mut decoder).await?;
            if !initiated {
                send.write_all(&hello_msg(&me))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>((send, recv, decoder, peer))
        };
        let (send, recv, decoder, peer) = match tokio::time::timeout(HELLO_TIMEOUT, exchange).await
        {
            Ok(Ok(x)) => x,
            Ok(Err(_)) if closed_for_path_mtu(&conn) => {
                // the dialler's diagnostic connection: it found the path too small
                let ip = addr.ip().to_canonical();
                return Err(TunnelError::PathMtu(path_mtu_sentence(&ip, ip)));
            }
            Ok(Err(e)) => {
                if conn.close_reason().is_some_and(|r| {
                    close::is_revoked_alert(&r)
                        || CloseCode::from_error(&r) == Some(CloseCode::Revoked)
                }) {
                    return Err(TunnelError::Revoked(addr));
                }
                CloseCode::Control.close(&conn);
                return Err(err(format!("control hello failed: {e}")));
            }
            Err(_) => {
                CloseCode::Control.close(&conn);
                return Err(err("control hello timed out".into()));
            }
        };
        if peer.protocol < min_protocol {
            CloseCode::Protocol.close(&conn);
            return Err(err(format!(
                "the peer speaks protocol {} but the network requires at least {min_protocol}",
                peer.protocol
            )));
        }
        Ok(Tunnel {
            conn,
            peer_prefix,
            peer_serial: peer_cert.serial,
            peer_not_after: peer_cert.not_after,
            peer_cert: peer_cert_der,
            initiated,
            peer_hello: peer,
            control_send: send,
            control_recv: recv,
            control_decoder: decoder,
        })
    }

    /// The data-path handle of this tunnel (starts its sender task: needs a tokio runtime).
    pub fn link(&self) -> TunnelLink {
        TunnelLink::new(self.conn.clone())
    }

    /// Splits the tunnel into its data-path handle (starting its sender task: needs a tokio
    /// runtime) and its control stream.
    pub fn split(self) -> (TunnelLink, ControlStream) {
        (
            TunnelLink::new(self.conn),
            ControlStream {
                send: self.control_send,
                recv: self.control_recv,
                decoder: self.control_decoder,
            },
        )
    }
}

/// The control stream of a tunnel, after the hello.
#[derive(Debug)]
pub struct ControlStream {
    /// Send half.
    pub send: quinn::SendStream,
    /// Receive half.
    pub recv: quinn::RecvStream,
    /// Decoder holding the bytes received after the hello.
    pub decoder: control::Decoder,
}

/// Why a datagram was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The scheduler's queue was full: the packet was queued and older data dropped to make
    /// room (or, for Babel, the packet was dropped), as a router drops on a full queue.
    #[error("tunnel send queue full")]
    QueueFull,
    /// QUIC refused it (closed, too large, datagrams off).
    #[error("datagram not sent: {0}")]
    Quic(#[from] quinn::SendDatagramError),
}

/// The data path's handle on a tunnel: cheap to clone, and the one place that frames
/// datagrams ([`frame`]) and knows how large a packet the tunnel carries. Sends go through
/// the tunnel's scheduler ([`sched`]): Babel first, data bounded in time.
#[derive(Debug, Clone)]
pub struct TunnelLink {
    conn: quinn::Connection,
    /// What this tunnel carried (sends counted here, receipts by the reader).
    traffic: std::sync::Arc<traffic::LinkTraffic>,
    sender: Arc<sender::Sender>,
}

impl TunnelLink {
    fn new(conn: quinn::Connection) -> TunnelLink {
        let traffic = Arc::new(traffic::LinkTraffic::new());
        TunnelLink {
            sender: sender::Sender::start(conn.clone(), traffic.clone()),
            conn,
            traffic,
        }
    }

    /// Largest IPv6 or Babel packet that fits one datagram now (0 when datagrams do not work).
    pub fn max_payload(&self) -> usize {
        self.conn
            .max_datagram_size()
            .map(|m| m.saturating_sub(frame::HEADER_LEN))
            .unwrap_or(0)
    }

    /// Queues the IPv6 packet that follows the [`frame::HEADER_LEN`] bytes reserved at the
    /// start of `framed` (no copy). [`SendError::QueueFull`]: it was queued, but the queue was
    /// full and older data was dropped to make room.
    pub fn send_packet(&self, mut framed: bytes::BytesMut) -> Result<(), SendError> {
        let Some(ty) = framed.first_mut() else {
            return Ok(());
        };
        *ty = frame::TYPE_IPV6;
        self.send_frame(framed.freeze())
    }

    /// Queues a datagram framed by the caller (type byte first: a sealed frame or a
    /// handshake message, [`crate::mesh::seal::wire`]) as data, behind Babel.
    pub fn send_frame(&self, framed: Bytes) -> Result<(), SendError> {
        let len = framed.len().saturating_sub(frame::HEADER_LEN);
        self.fits(framed.len())?;
        self.traffic.tx_data(len);
        if self.sender.push_data(framed) > 0 {
            return Err(SendError::QueueFull);
        }
        Ok(())
    }

    /// Frames and sends an IPv6 packet held elsewhere (one copy: ICMPv6 errors).
    pub fn send_packet_copy(&self, pkt: &[u8]) -> Result<(), SendError> {
        let mut v = bytes::BytesMut::with_capacity(frame::HEADER_LEN + pkt.len());
        v.extend_from_slice(&[frame::TYPE_IPV6]);
        v.extend_from_slice(pkt);
        self.send_packet(v)
    }

    /// Whether a datagram of `len` bytes (framed) fits the tunnel now.
    fn fits(&self, len: usize) -> Result<(), SendError> {
        match self.conn.max_datagram_size() {
            None => Err(SendError::Quic(quinn::SendDatagramError::UnsupportedByPeer)),
            Some(max) if len > max => Err(SendError::Quic(quinn::SendDatagramError::TooLarge)),
            Some(_) => Ok(()),
        }
    }

    /// Frames and queues a Babel packet (it leaves before any queued data).
    pub fn send_babel(&self, payload: &[u8]) -> Result<(), SendError> {
        let mut v = Vec::with_capacity(frame::HEADER_LEN + payload.len());
        frame::encode_into(frame::TYPE_BABEL, payload, &mut v);
        self.fits(v.len())?;
        if !self.sender.push_babel(Bytes::from(v)) {
            return Err(SendError::QueueFull);
        }
        self.traffic.tx_babel(payload.len());
        Ok(())
    }

    /// The next datagram (still framed); an error once the tunnel is closed.
    pub async fn read_datagram(&self) -> Result<Bytes, quinn::ConnectionError> {
        self.conn.read_datagram().await
    }

    /// Waits for the next datagram, then takes every one already received behind it, up to
    /// `max` in `out` in all (still framed): one wake-up of the reader per batch that QUIC
    /// received (a UDP GRO batch holds ~10 packets), so the TUN writes that follow coalesce
    /// them. An error only when no datagram was taken (the tunnel is closed); one found after
    /// some were taken is reported by the next call.
    pub async fn read_datagrams(
        &self,
        out: &mut Vec<Bytes>,
        max: usize,
    ) -> Result<(), quinn::ConnectionError> {
        use std::future::Future;
        use std::task::Poll;
        out.push(self.conn.read_datagram().await?);
        std::future::poll_fn(|cx| {
            while out.len() < max {
                let mut next = std::pin::pin!(self.conn.read_datagram());
                match next.as_mut().poll(cx) {
                    Poll::Ready(Ok(d)) => out.push(d),
                    Poll::Ready(Err(_)) | Poll::Pending => break,
                }
            }
            Poll::Ready(())
        })
        .await;
        Ok(())
    }

    /// Waits until the tunnel is closed; the reason.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.conn.closed().await
    }

    /// Smoothed RTT measured by QUIC.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// The peer's UDP address (QUIC moves it when the peer migrates).
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// The local address the peer dialled, for a tunnel we accepted (quinn answers from it
    /// for the life of the connection); `None` for one we dialled (the OS picks).
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.conn.local_ip()
    }

    /// This tunnel's traffic counters.
    pub fn traffic(&self) -> &std::sync::Arc<traffic::LinkTraffic> {
        &self.traffic
    }

    /// Closes the tunnel with `code`.
    pub fn close(&self, code: CloseCode) {
        code.close(&self.conn);
    }
}

fn closed_for_path_mtu(conn: &quinn::Connection) -> bool {
    conn.close_reason()
        .is_some_and(|r| CloseCode::from_error(&r) == Some(CloseCode::PathMtu))
}

/// An incoming tunnel whose handshake and hello are not done yet.
pub struct Accepting {
    incoming: quinn::Incoming,
    hello: HelloInfo,
    min_protocol: u32,
}

impl Accepting {
    /// The peer's UDP address.
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Completes the QUIC/TLS handshake and the hello exchange.
    pub async fn finish(self) -> Result<Tunnel, TunnelError> {
        let addr = self.incoming.remote_address();
        let conn = self.incoming.await.map_err(|e| TunnelError::Connect {
            addr,
            reason: e.to_string(),
        })?;
        Tunnel::establish(conn, false, self.hello, self.min_protocol).await
    }
}

/// A node's QUIC endpoint.
pub struct TunnelEndpoint {
    endpoint: quinn::Endpoint,
    trust: Arc<Trust>,
    timers: TunnelTimers,
    /// The client role's configuration; replaced on renewal.
    client: std::sync::Mutex<quinn::ClientConfig>,
    /// What we say in hellos, and the minimum protocol we accept.
    hello: std::sync::Mutex<(HelloInfo, u32)>,
    /// The firewall mark of the socket (`--use-exit`), put on a rebound socket too.
    mark: Option<u32>,
}

fn transport(timers: TunnelTimers) -> Result<Arc<quinn::TransportConfig>, TunnelError> {
    Ok(Arc::new(transport_config(timers)?))
}

fn transport_config(timers: TunnelTimers) -> Result<quinn::TransportConfig, TunnelError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(timers.keep_alive));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(timers.idle_timeout)
            .map_err(|e| TunnelError::Setup(e.to_string()))?,
    ));
    t.initial_mtu(QUIC_MIN_MTU);
    t.datagram_send_buffer_size(DATAGRAM_QUEUE);
    t.datagram_receive_buffer_size(Some(DATAGRAM_RECV_BUFFER));
    t.min_mtu(QUIC_MIN_MTU);
    t.max_concurrent_uni_streams(0u32.into());
    t.max_concurrent_bidi_streams(2u32.into());
    Ok(t)
}

/// The diagnostic handshake's transport: [`DIAG_MTU`]-byte packets, no MTU discovery.
fn diag_transport(timers: TunnelTimers) -> Result<Arc<quinn::TransportConfig>, TunnelError> {
    let mut t = transport_config(timers)?;
    t.initial_mtu(DIAG_MTU);
    t.min_mtu(DIAG_MTU);
    t.mtu_discovery_config(None);
    t.initial_rtt(DIAG_INITIAL_RTT);
    Ok(Arc::new(t))
}

/// What a handshake attempt came to.
enum Dialled {
    Up(quinn::Connection),
    /// Nothing came back in time: unreachable peer, or a path too small for the padding.
    TimedOut(TunnelError),
    Failed(TunnelError),
}

async fn dial_once(
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
    addr: SocketAddr,
    name: &str,
) -> Dialled {
    let err = |reason: String| TunnelError::Connect { addr, reason };
    match endpoint.connect_with(client, addr, name) {
        Err(e) => Dialled::Failed(err(e.to_string())),
        Ok(connecting) => match connecting.await {
            Ok(conn) => Dialled::Up(conn),
            Err(e @ quinn::ConnectionError::TimedOut) => Dialled::TimedOut(err(e.to_string())),
            Err(e) if close::is_revoked_alert(&e) => Dialled::Failed(TunnelError::Revoked(addr)),
            Err(e) => Dialled::Failed(err(e.to_string())),
        },
    }
}

fn quinn_configs(
    trust: &Arc<Trust>,
    cert_der: &[u8],
    key_pkcs8: &[u8],
    timers: TunnelTimers,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TunnelError> {
    let (server, client) =
        tls::configs(trust, cert_der, key_pkcs8).map_err(|e| TunnelError::Setup(e.to_string()))?;
    let transport = transport(timers)?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).map_err(|e| TunnelError::Setup(e.to_string()))?,
    ));
    sc.transport_config(transport.clone());
    let mut cc = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client).map_err(|e| TunnelError::Setup(e.to_string()))?,
    ));
    cc.transport_config(transport);
    Ok((sc, cc))
}

/// Asks for [`SOCKET_BUFFER`]-byte UDP socket buffers (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`); what the kernel granted is logged.
fn socket_buffers(socket: &std::net::UdpSocket) {
    let Ok(state) = quinn::udp::UdpSocketState::new(socket.into()) else {
        return;
    };
    let _ = state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER);
    let _ = state.set_send_buffer_size(socket.into(), SOCKET_BUFFER);
    tracing::debug!(
        recv = state.recv_buffer_size(socket.into()).ok(),
        send = state.send_buffer_size(socket.into()).ok(),
        "UDP socket buffers"
    );
}

/// The tunnel socket. Bound to one address, it allows another socket on the same port with
/// `SO_REUSEADDR` (the unspecified address it moves to if that address goes:
/// [`TunnelEndpoint::rebind`]); on the unspecified address, a second node on the port is
/// refused as ever.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    if addr.ip().is_unspecified() {
        std::net::UdpSocket::bind(addr)
    } else {
        reusable_udp_socket(addr)
    }
}

/// Puts the firewall mark of `--use-exit` (SO_MARK, Linux) on the tunnel socket, so policy
/// routing keeps the underlay packets out of the TUN.
fn mark_socket(socket: &std::net::UdpSocket, mark: Option<u32>) -> std::io::Result<()> {
    let Some(mark) = mark else { return Ok(()) };
    #[cfg(target_os = "linux")]
    {
        socket2::SockRef::from(socket).set_mark(mark)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Err(std::io::Error::other(format!(
            "socket marks (mark {mark}) exist on Linux only"
        )))
    }
}

fn reusable_udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

impl TunnelEndpoint {
    /// Binds the node's UDP port with its identity. Must run inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        trust: Arc<Trust>,
        cert_der: &[u8],
        key_pkcs8: &[u8],
        timers: TunnelTimers,
    ) -> Result<TunnelEndpoint, TunnelError> {
        Self::bind_marked(addr, None, trust, cert_der, key_pkcs8, timers)
    }

    /// [`TunnelEndpoint::bind`] with a firewall mark (SO_MARK, Linux) on the socket:
    /// `--use-exit`'s policy routing keeps the marked underlay packets out of the TUN.
    pub fn bind_marked(
        addr: SocketAddr,
        mark: Option<u32>,
        trust: Arc<Trust>,
        cert_der: &[u8],
        key_pkcs8: &[u8],
        timers: TunnelTimers,
    ) -> Result<TunnelEndpoint, TunnelError> {
        let (sc, cc) = quinn_configs(&trust, cert_der, key_pkcs8, timers)?;
        let setup = |e: std::io::Error| {
            TunnelError::Setup(format!(
                "cannot use UDP {addr}: {e} (is another node running on this port?)"
            ))
        };
        let socket = udp_socket(addr).map_err(setup)?;
        mark_socket(&socket, mark).map_err(setup)?;
        socket_buffers(&socket);
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(sc),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(setup)?;
        let hello = HelloInfo {
            protocol: crate::params::PROTOCOL_VERSION,
            params_version: 0,
            endpoints: Vec::new(),
            country: None,
            observed: None,
        };
        Ok(TunnelEndpoint {
            endpoint,
            trust,
            timers,
            client: std::sync::Mutex::new(cc),
            hello: std::sync::Mutex::new((hello, crate::params::PROTOCOL_VERSION)),
            mark,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Moves the endpoint to a new UDP socket bound to `addr` (its address is gone from the
    /// host): every tunnel goes on from it (QUIC migration, for those we dialled).
    pub fn rebind(&self, addr: SocketAddr) -> std::io::Result<()> {
        let socket = reusable_udp_socket(addr)?;
        mark_socket(&socket, self.mark)?;
        socket_buffers(&socket);
        self.endpoint.rebind(socket)
    }

    /// The trust (to swap the revoked set).
    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// Replaces this node's certificate and key (after a renewal) for new tunnels.
    pub fn set_identity(&self, cert_der: &[u8], key_pkcs8: &[u8]) -> Result<(), TunnelError> {
        let (sc, cc) = quinn_configs(&self.trust, cert_der, key_pkcs8, self.timers)?;
        self.endpoint.set_server_config(Some(sc));
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = cc;
        Ok(())
    }

    /// Sets what new tunnels announce in their hello and the minimum protocol they accept.
    pub fn set_hello(&self, hello: HelloInfo, min_protocol: u32) {
        *self.hello.lock().unwrap_or_else(|p| p.into_inner()) = (hello, min_protocol);
    }

    fn hello(&self) -> (HelloInfo, u32) {
        self.hello.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Dials the node with prefix `expected` at `addr`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Ipv6Net,
    ) -> Result<Tunnel, TunnelError> {
        self.connect_with(addr, expected, true).await
    }

    /// Dials as [`TunnelEndpoint::connect`] but without the path diagnosis after a timeout
    /// (whose throwaway endpoint would not have the NAT mapping of this one): a hole punch's
    /// handshakes.
    pub async fn connect_plain(
        &self,
        addr: SocketAddr,
        expected: Ipv6Net,
    ) -> Result<Tunnel, TunnelError> {
        self.connect_with(addr, expected, false).await
    }

    async fn connect_with(
        &self,
        addr: SocketAddr,
        expected: Ipv6Net,
        diagnose: bool,
    ) -> Result<Tunnel, TunnelError> {
        let name = identity::node_address(&expected).to_string();
        let err = |reason: String| TunnelError::Connect { addr, reason };
        let client = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let conn = match dial_once(&self.endpoint, client.clone(), addr, &name).await {
            Dialled::Up(conn) => conn,
            Dialled::Failed(e) => return Err(e),
            Dialled::TimedOut(e) if !diagnose => return Err(e),
            Dialled::TimedOut(e) => self.after_timeout(addr, &name, client, e).await?,
        };
        // The TLS name check already bound the certificate to the expected address; the
        // prefix comparison is the same fact read from the URI SAN.
        let (prefix, _, _) = peer_identity(&conn)?;
        if prefix != expected {
            CloseCode::Internal.close(&conn);
            return Err(err(format!("the peer is {prefix} instead of {expected}")));
        }
        let (me, min) = self.hello();
        Tunnel::establish(conn, true, me, min).await
    }

    /// A full-size handshake to `addr` timed out. A [`DIAG_MTU`]-byte handshake from a throwaway
    /// endpoint (whose `max_udp_payload_size` keeps the peer's Initials small too) tells an
    /// unreachable peer (returns `first`) from a live one; for a live one the full-size handshake
    /// is tried once more (the first may have met loss or a peer still starting), and when it
    /// times out again the path is refused and the small connection closed with
    /// [`CloseCode::PathMtu`], so the peer logs the same sentence.
    async fn after_timeout(
        &self,
        addr: SocketAddr,
        name: &str,
        client: quinn::ClientConfig,
        first: TunnelError,
    ) -> Result<quinn::Connection, TunnelError> {
        let Some((diag_endpoint, diag)) = self.diag_handshake(addr, name, &client).await else {
            return Err(first);
        };
        let (result, code, reason) = match dial_once(&self.endpoint, client, addr, name).await {
            Dialled::Up(conn) => (Ok(conn), 0, "path checked".to_owned()),
            Dialled::Failed(e) => (Err(e), 0, "path checked".to_owned()),
            Dialled::TimedOut(_) => {
                let msg = path_mtu_sentence(&addr, addr.ip());
                (
                    Err(TunnelError::PathMtu(msg.clone())),
                    CloseCode::PathMtu.code(),
                    msg,
                )
            }
        };
        diag.close(code.into(), reason.as_bytes());
        // let the close leave before the throwaway endpoint goes
        let _ = tokio::time::timeout(DIAG_CLOSE_LINGER, diag_endpoint.wait_idle()).await;
        result
    }

    /// A [`DIAG_MTU`]-byte handshake with the same identity; `None` when it fails.
    async fn diag_handshake(
        &self,
        addr: SocketAddr,
        name: &str,
        client: &quinn::ClientConfig,
    ) -> Option<(quinn::Endpoint, quinn::Connection)> {
        let bind: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = std::net::UdpSocket::bind(bind).ok()?;
        let mut config = quinn::EndpointConfig::default();
        config.max_udp_payload_size(DIAG_MTU).ok()?;
        let endpoint =
            quinn::Endpoint::new(config, None, socket, Arc::new(quinn::TokioRuntime)).ok()?;
        let mut client = client.clone();
        client.transport_config(diag_transport(self.timers).ok()?);
        match dial_once(&endpoint, client, addr, name).await {
            Dialled::Up(conn) => Some((endpoint, conn)),
            Dialled::TimedOut(_) | Dialled::Failed(_) => None,
        }
    }

    /// The next incoming connection attempt; `None` once the endpoint is closed. Finish it
    /// with [`Accepting::finish`] in a task of its own, so a slow peer never blocks the
    /// accept loop.
    pub async fn accept(&self) -> Option<Accepting> {
        let incoming = self.endpoint.accept().await?;
        let (hello, min_protocol) = self.hello();
        Some(Accepting {
            incoming,
            hello,
            min_protocol,
        })
    }

    /// Closes every tunnel and the endpoint.
    pub fn close(&self) {
        let c = CloseCode::Shutdown;
        self.endpoint.close(c.code().into(), c.reason());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_mtu_sentence_names_the_ip_mtu_of_the_family() {
        let v6: SocketAddr = "[fd99:ab::2]:6464".parse().unwrap();
        let s = path_mtu_sentence(&v6, v6.ip());
        assert!(
            s.starts_with("the path to [fd99:ab::2]:6464 does not carry 1360-byte packets"),
            "{s}"
        );
        assert!(s.contains("MTU of at least 1408 bytes"), "{s}");
        for ip in ["192.0.2.1", "::ffff:192.0.2.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let s = path_mtu_sentence(&ip, ip);
            assert!(s.contains("MTU of at least 1388 bytes"), "{s}");
        }
        assert!(!s.contains('\n'));
    }
}
