//! Port mapping's IO shell: runs the [`PortMapper`] (`mesh::portmap`, every decision) against
//! the real router — PCP and NAT-PMP through crab_nat, UPnP IGD through `mesh::upnp` (SSDP
//! from the LAN interface, then HTTP/1.1 on hyper's client) — and the host's default route
//! (`/proc/net/route` on Linux; elsewhere "not supported here": PCP and NAT-PMP are skipped,
//! UPnP is still tried).
//!
//! One task, one request at a time. The mapped address goes to the core as
//! [`Input::PortMapped`] (a reachability candidate of kind mapped); the status goes to the
//! control API (`mesh status`: `port_mapping`). At exit [`PortMapTask::stop`] removes the
//! mapping, waiting at most the time it is given.
#![allow(clippy::disallowed_methods)] // IO shell: the port mapping task reads the clock, sleeps and is spawned

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::core::Input;
use super::shell::ShellEvent;
use crate::control::PortMappingStatus;
use crate::mesh::babel::time::Time;
use crate::mesh::portmap::{Mapping, PortMapper, Protocol, Request, Route};
use crate::mesh::upnp;

/// The protocols this shell speaks (in the machine's order: PCP, NAT-PMP, UPnP IGD).
const SPOKEN: [Protocol; 3] = [Protocol::Pcp, Protocol::NatPmp, Protocol::Upnp];
/// The longest one request to the router may take (every retry included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// PCP and NAT-PMP: first wait for an answer, doubled per retry (RFC 6887's 3 s start is
/// for lossy links; a home router answers within milliseconds or not at all).
const FIRST_WAIT: Duration = Duration::from_millis(250);
const RETRIES: usize = 2;
const MAX_WAIT: Duration = Duration::from_secs(1);
/// UPnP: how long SSDP answers are awaited (the searches say MX 1).
const SSDP_WAIT: Duration = Duration::from_millis(1500);
/// UPnP: the longest one HTTP exchange with the gateway may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// The port mapping status shared with the control API.
#[derive(Default)]
pub(super) struct PortMapView(Mutex<Option<(PortMappingStatus, Option<Instant>)>>);

impl PortMapView {
    /// A view that says "off" (`--no-port-mapping`, or `--endpoint` given).
    pub(super) fn off(internal_port: u16) -> PortMapView {
        PortMapView(Mutex::new(Some((
            PortMappingStatus {
                state: "off".into(),
                internal_port,
                ..Default::default()
            },
            None,
        ))))
    }

    fn set(&self, s: PortMappingStatus) {
        let at = Instant::now();
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((s, Some(at)));
    }

    /// The status now (`next_in_secs` counted down since it was written).
    pub(super) fn read(&self) -> Option<PortMappingStatus> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (s, at) = g.as_ref()?;
        let mut s = s.clone();
        if let (Some(n), Some(at)) = (s.next_in_secs, at) {
            s.next_in_secs = Some(n.saturating_sub(at.elapsed().as_secs()));
        }
        Some(s)
    }
}

/// The running task.
pub(super) struct PortMapTask {
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl PortMapTask {
    /// Starts mapping `internal_port`; `changed` is notified when the host's addresses change.
    pub(super) fn spawn(
        internal_port: u16,
        tx: mpsc::Sender<ShellEvent>,
        view: Arc<PortMapView>,
        changed: Arc<Notify>,
    ) -> PortMapTask {
        let (stop_tx, stop_rx) = oneshot::channel();
        let done = tokio::spawn(run(internal_port, tx, view, changed, stop_rx));
        PortMapTask {
            stop: Some(stop_tx),
            done,
        }
    }

    /// Removes the mapping (if one is held) and ends the task, waiting at most `budget`.
    pub(super) async fn stop(mut self, budget: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(budget, &mut self.done).await.is_err() {
            warn!(
                "the router did not answer the port mapping's removal in time; it expires by itself"
            );
            self.done.abort();
        }
    }
}

async fn run(
    port: u16,
    tx: mpsc::Sender<ShellEvent>,
    view: Arc<PortMapView>,
    changed: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    let base = Instant::now();
    let now = || Time::from_millis(u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut m = PortMapper::with_protocols(port, now(), &SPOKEN);
    let mut io = RouterIo::default();
    let mut announced: Option<SocketAddr> = None;
    'run: loop {
        m.handle_timeout(now());
        while let Some(req) = m.poll_request() {
            view.set(m.status(now()));
            tokio::select! {
                answer = io.execute(req) => answer.feed(&mut m, now()),
                _ = &mut stop => break 'run,
            }
        }
        let status = m.status(now());
        view.set(status.clone());
        let external = m.external();
        if external != announced {
            match (external, &status.protocol) {
                (Some(a), Some(p)) => {
                    info!(external = %a, protocol = %p, "port mapped on the home router")
                }
                _ => info!(error = ?m.last_error(), "no port mapping on the home router now"),
            }
            announced = external;
            if tx
                .send(ShellEvent::Input(Input::PortMapped(external)))
                .await
                .is_err()
            {
                break 'run;
            }
        }
        let wait = m
            .poll_timeout()
            .map(|t| base + Duration::from_millis(t.as_millis()))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(wait.into()) => {}
            _ = changed.notified() => m.network_changed(now()),
            _ = &mut stop => break 'run,
        }
    }
    // Stopping: remove the mapping held (the caller bounds the wait).
    m.stop(now());
    if let Some(Request::Unmap(mapping)) = m.poll_request() {
        view.set(m.status(now()));
        let r = io.unmap(mapping).await;
        match &r {
            Ok(()) => {
                info!(external = %mapping.external, "port mapping removed from the home router")
            }
            Err(e) => warn!(error = %e, "cannot remove the port mapping; it expires by itself"),
        }
        m.on_unmapped(now(), r);
    }
    view.set(m.status(now()));
}

/// An answer from the router (or the route look) for the machine.
enum Answer {
    Route(Result<Route, String>),
    Mapped(Result<Mapping, String>),
    Unmapped(Result<(), String>),
}

impl Answer {
    fn feed(self, m: &mut PortMapper, now: Time) {
        match self {
            Answer::Route(r) => {
                if let Err(e) = &r {
                    debug!(error = %e, "no default route for PCP or NAT-PMP");
                }
                m.on_route(now, r)
            }
            Answer::Mapped(r) => {
                if let Err(e) = &r {
                    debug!(error = %e, "port mapping attempt failed");
                }
                m.on_mapped(now, r)
            }
            Answer::Unmapped(r) => m.on_unmapped(now, r),
        }
    }
}

/// What the shell holds of the router between requests (renewal and removal use it).
#[derive(Default)]
struct RouterIo {
    /// The PCP or NAT-PMP mapping held.
    natpmp: Option<crab_nat::PortMapping>,
    /// The UPnP mapping held.
    upnp: Option<UpnpHeld>,
}

/// A UPnP mapping: the service that holds it, our address as its client, the external port.
struct UpnpHeld {
    service: upnp::Service,
    client: Ipv4Addr,
    external_port: u16,
}

impl RouterIo {
    async fn execute(&mut self, req: Request) -> Answer {
        match req {
            Request::FindRoute => Answer::Route(default_route()),
            Request::Map {
                protocol,
                route,
                internal_port,
                lifetime,
                previous,
            } => {
                let r = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    self.map(protocol, route, internal_port, lifetime, previous),
                )
                .await
                .unwrap_or_else(|_| Err("no answer in time".into()));
                Answer::Mapped(r)
            }
            Request::Unmap(m) => Answer::Unmapped(self.unmap(m).await),
        }
    }

    async fn map(
        &mut self,
        protocol: Protocol,
        route: Option<Route>,
        port: u16,
        lifetime: Duration,
        previous: Option<Mapping>,
    ) -> Result<Mapping, String> {
        let internal = NonZeroU16::new(port).ok_or("the tunnel port is not known")?;
        let secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        match protocol {
            Protocol::Pcp | Protocol::NatPmp => {
                let route = route.ok_or("no default gateway")?;
                let held = self
                    .natpmp
                    .take()
                    .filter(|_| previous.is_some_and(|p| p.protocol == protocol));
                let pm = match held {
                    Some(mut h) => match h.renew().await {
                        Ok(()) => h,
                        Err(e) => {
                            self.natpmp = Some(h);
                            return Err(e.to_string());
                        }
                    },
                    None => {
                        let options = crab_nat::PortMappingOptions {
                            external_port: Some(internal),
                            lifetime_seconds: Some(secs),
                            timeout_config: Some(timeouts()),
                        };
                        let gw = crab_nat::GatewayAddress::from(route.gateway);
                        if protocol == Protocol::Pcp {
                            let base = crab_nat::pcp::BaseMapRequest::new(
                                gw,
                                route.local,
                                crab_nat::InternetProtocol::Udp,
                                internal,
                            );
                            crab_nat::pcp::port_mapping(base, None, None, options)
                                .await
                                .map_err(|e| e.to_string())?
                        } else {
                            crab_nat::natpmp::port_mapping(
                                gw,
                                crab_nat::InternetProtocol::Udp,
                                internal,
                                options,
                            )
                            .await
                            .map_err(|e| e.to_string())?
                        }
                    }
                };
                let ip = match pm.mapping_type() {
                    crab_nat::PortMappingType::Pcp { external_ip, .. } => external_ip,
                    crab_nat::PortMappingType::NatPmp => {
                        crab_nat::natpmp::external_address(pm.gateway(), Some(timeouts()))
                            .await
                            .map(IpAddr::V4)
                            .map_err(|e| format!("external address: {e}"))?
                    }
                };
                let m = Mapping {
                    protocol,
                    gateway: route.gateway,
                    external: SocketAddr::new(ip.to_canonical(), pm.external_port().get()),
                    lifetime: Duration::from_secs(u64::from(pm.lifetime())),
                };
                self.natpmp = Some(pm);
                Ok(m)
            }
            Protocol::Upnp => {
                let held = self
                    .upnp
                    .take()
                    .filter(|_| previous.is_some_and(|p| p.protocol == Protocol::Upnp));
                let (service, client) = match held {
                    Some(h) => (h.service, h.client),
                    None => {
                        let service = upnp_discover(route).await?;
                        let client = match local_ip_towards(service.control.addr.ip())? {
                            IpAddr::V4(a) => a,
                            IpAddr::V6(a) => {
                                return Err(format!("the UPnP gateway is reached over IPv6 ({a})"));
                            }
                        };
                        (service, client)
                    }
                };
                let external_port = internal.get();
                let r = upnp_add(&service, client, external_port, secs).await;
                let (lease, ip) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        if previous.is_some() {
                            // keep the service for the next renewal attempt
                            self.upnp = Some(UpnpHeld {
                                service,
                                client,
                                external_port,
                            });
                        }
                        return Err(e);
                    }
                };
                let m = Mapping {
                    protocol,
                    gateway: service.control.addr.ip(),
                    external: SocketAddr::new(IpAddr::V4(ip), external_port),
                    lifetime: Duration::from_secs(u64::from(lease)),
                };
                self.upnp = Some(UpnpHeld {
                    service,
                    client,
                    external_port,
                });
                Ok(m)
            }
        }
    }

    async fn unmap(&mut self, m: Mapping) -> Result<(), String> {
        match m.protocol {
            Protocol::Pcp | Protocol::NatPmp => match self.natpmp.take() {
                Some(h) => h.try_drop().await.map_err(|(e, _)| e.to_string()),
                None => Ok(()),
            },
            Protocol::Upnp => match self.upnp.take() {
                Some(h) => {
                    let (action, body) =
                        upnp::delete_port_mapping(&h.service.service_type, h.external_port);
                    soap(&h.service, "DeletePortMapping", action, body)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                None => Ok(()),
            },
        }
    }
}

/// Finds the UPnP gateway: an SSDP search from our address towards the default gateway (any
/// interface when there is none), then the first answering device's description. Only the
/// device that answered is fetched from, and its control URL must be on it.
async fn upnp_discover(route: Option<Route>) -> Result<upnp::Service, String> {
    let local = match route {
        Some(Route {
            local: IpAddr::V4(a),
            ..
        }) => a,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let sock = ssdp_socket(local).map_err(|e| format!("SSDP socket: {e}"))?;
    for target in upnp::SEARCH_TARGETS {
        sock.send_to(&upnp::search_request(target), upnp::SSDP_ADDR)
            .await
            .map_err(|e| format!("SSDP search: {e}"))?;
    }
    let deadline = tokio::time::Instant::now() + SSDP_WAIT;
    let mut buf = vec![0u8; upnp::MAX_SSDP + 1];
    let mut last_error = "no UPnP gateway answered the SSDP search".to_string();
    let mut tried = Vec::new();
    loop {
        let (n, from) = match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            Err(_) => return Err(last_error),
            Ok(Err(e)) => return Err(format!("SSDP: {e}")),
            Ok(Ok(x)) => x,
        };
        let location = match upnp::parse_search_response(buf.get(..n).unwrap_or_default()) {
            Ok(l) => l,
            Err(e) => {
                debug!(%from, error = %e, "SSDP answer ignored");
                continue;
            }
        };
        if location.addr.ip() != from.ip() || tried.contains(&location) {
            continue;
        }
        tried.push(location.clone());
        let described =
            http(&location, None, upnp::MAX_DESCRIPTION)
                .await
                .and_then(|(status, body)| {
                    if status != 200 {
                        return Err(format!("HTTP {status} for {location}"));
                    }
                    upnp::parse_description(&body, &location).map_err(|e| e.to_string())
                });
        match described {
            Ok(s) if s.control.addr.ip() == from.ip() => {
                debug!(location = %location, control = %s.control, service = %s.service_type, "UPnP gateway found");
                return Ok(s);
            }
            Ok(s) => last_error = format!("the control URL {} is not on {from}", s.control),
            Err(e) => last_error = format!("{location}: {e}"),
        }
    }
}

/// A UDP socket for SSDP: bound to `local`, multicast out of its interface, two hops at most.
fn ssdp_socket(local: Ipv4Addr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_nonblocking(true)?;
    s.set_multicast_ttl_v4(2)?;
    if !local.is_unspecified() {
        s.set_multicast_if_v4(&local)?;
    }
    s.bind(&SocketAddr::from((local, 0)).into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// `AddPortMapping` (again with lease 0 when the router grants only permanent ones), then
/// `GetExternalIPAddress`: the lease granted and the external address.
async fn upnp_add(
    service: &upnp::Service,
    client: Ipv4Addr,
    port: u16,
    lease: u32,
) -> Result<(u32, Ipv4Addr), String> {
    let add = |lease| {
        let (action, body) =
            upnp::add_port_mapping(&service.service_type, port, client, port, lease);
        soap(service, "AddPortMapping", action, body)
    };
    let lease = match add(lease).await {
        Ok(_) => lease,
        Err(upnp::UpnpError::Fault {
            code: upnp::ONLY_PERMANENT_LEASES,
            ..
        }) => {
            add(0).await.map_err(|e| e.to_string())?;
            0
        }
        Err(e) => return Err(e.to_string()),
    };
    let (action, body) = upnp::get_external_ip_address(&service.service_type);
    let values = soap(service, "GetExternalIPAddress", action, body)
        .await
        .map_err(|e| format!("external address: {e}"))?;
    let ip = upnp::parse_external_ip(&values).map_err(|e| format!("external address: {e}"))?;
    Ok((lease, ip))
}

/// One SOAP call to the service's control URL.
async fn soap(
    service: &upnp::Service,
    name: &str,
    action: String,
    body: String,
) -> Result<Vec<(String, String)>, upnp::UpnpError> {
    let (status, answer) = http(&service.control, Some((action, body)), upnp::MAX_SOAP)
        .await
        .map_err(upnp::UpnpError::Bad)?;
    upnp::parse_soap_response(status, &answer, name)
}

/// One HTTP/1.1 exchange (GET, or a SOAP POST), bounded in time and in answer size.
async fn http(
    url: &upnp::HttpUrl,
    soap: Option<(String, String)>,
    max: usize,
) -> Result<(u16, Bytes), String> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(url.addr)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .uri(url.path.as_str())
            .header(hyper::header::HOST, url.authority());
        let (req, body) = match soap {
            Some((action, body)) => (
                req.method("POST")
                    .header(hyper::header::CONTENT_TYPE, "text/xml; charset=\"utf-8\"")
                    .header("SOAPAction", action),
                body,
            ),
            None => (req.method("GET"), String::new()),
        };
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{url}: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map_err(|e| format!("{url}: the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer in time")))
}

fn timeouts() -> crab_nat::TimeoutConfig {
    crab_nat::TimeoutConfig {
        initial_timeout: FIRST_WAIT,
        max_retries: RETRIES,
        max_retry_timeout: Some(MAX_WAIT),
    }
}

/// This host's address towards `ip` (a UDP socket connected, nothing sent).
fn local_ip_towards(ip: IpAddr) -> Result<IpAddr, String> {
    let any: SocketAddr = match ip {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
    s.connect((ip, crab_nat::GATEWAY_PORT))
        .map_err(|e| format!("no route to {ip}: {e}"))?;
    s.local_addr().map(|a| a.ip()).map_err(|e| e.to_string())
}

/// The IPv4 default route: its gateway and our address towards it.
fn default_route() -> Result<Route, String> {
    let gateway = default_gateway()?;
    Ok(Route {
        gateway: IpAddr::V4(gateway),
        local: local_ip_towards(IpAddr::V4(gateway))?,
    })
}

#[cfg(target_os = "linux")]
fn default_gateway() -> Result<Ipv4Addr, String> {
    let text = std::fs::read_to_string("/proc/net/route")
        .map_err(|e| format!("cannot read /proc/net/route: {e}"))?;
    parse_proc_net_route(&text).ok_or_else(|| "no IPv4 default route".into())
}

#[cfg(not(target_os = "linux"))]
fn default_gateway() -> Result<Ipv4Addr, String> {
    Err("finding the default gateway is not supported here (PCP and NAT-PMP need it)".into())
}

/// The gateway of the IPv4 default route with the lowest metric in `/proc/net/route`'s text
/// (hexadecimal fields in the host's byte order); `None` when there is none.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_proc_net_route(text: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, gw, flags, metric, mask) = (
                hex(f.get(1).copied()?)?,
                hex(f.get(2).copied()?)?,
                hex(f.get(3).copied()?)?,
                f.get(6)?.parse::<u32>().ok()?,
                hex(f.get(7).copied()?)?,
            );
            let up_via_gateway = RTF_UP | RTF_GATEWAY;
            let default = dest == 0 && mask == 0 && (flags & up_via_gateway) == up_via_gateway;
            (default && gw != 0).then(|| (metric, Ipv4Addr::from(gw.to_ne_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gw)| gw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake UPnP gateway on loopback: answers each SOAP call with the next canned answer
    /// (status, body) and records the `SOAPAction`s it got.
    async fn fake_gateway(
        answers: Vec<(u16, Vec<u8>)>,
    ) -> (upnp::Service, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (log, answers) = (log.clone(), answers.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let action = req
                                .headers()
                                .get("soapaction")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            log.lock().unwrap().push(action);
                            let (status, body) =
                                answers.lock().unwrap().next().unwrap_or((500, Vec::new()));
                            async move {
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        let service = upnp::Service {
            service_type: "urn:schemas-upnp-org:service:WANIPConnection:1".into(),
            control: upnp::HttpUrl {
                addr,
                path: "/ctl/IPConn".into(),
            },
        };
        (service, seen)
    }

    fn corpus(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus/upnp")
                .join(name),
        )
        .unwrap()
    }

    fn fault(code: u16) -> Vec<u8> {
        format!(
            "<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode>{code}</errorCode>\
             <errorDescription>E{code}</errorDescription></UPnPError></detail></s:Fault>\
             </s:Body></s:Envelope>"
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn upnp_renewal_and_removal_go_to_the_held_service() {
        let (service, seen) = fake_gateway(vec![
            (200, corpus("soap-add-ok")),
            (200, corpus("soap-external-ip")),
            (500, fault(501)),
            (200, corpus("soap-delete-ok")),
        ])
        .await;
        let previous = Mapping {
            protocol: Protocol::Upnp,
            gateway: IpAddr::V4(Ipv4Addr::LOCALHOST),
            external: "10.99.0.1:6464".parse().unwrap(),
            lifetime: Duration::from_secs(3600),
        };
        let mut io = RouterIo {
            natpmp: None,
            upnp: Some(UpnpHeld {
                service: service.clone(),
                client: Ipv4Addr::LOCALHOST,
                external_port: 6464,
            }),
        };
        let lease = Duration::from_secs(3600);
        let m = io
            .map(Protocol::Upnp, None, 6464, lease, Some(previous))
            .await
            .unwrap();
        assert_eq!(m, previous, "renewed: same external address, lease granted");
        // a failed renewal keeps the service for the next attempt
        let e = io
            .map(Protocol::Upnp, None, 6464, lease, Some(previous))
            .await
            .unwrap_err();
        assert!(e.contains("501"), "{e}");
        assert!(io.upnp.is_some());
        io.unmap(previous).await.unwrap();
        assert!(io.upnp.is_none());
        let st = &service.service_type;
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!("\"{st}#AddPortMapping\""),
                format!("\"{st}#GetExternalIPAddress\""),
                format!("\"{st}#AddPortMapping\""),
                format!("\"{st}#DeletePortMapping\""),
            ]
        );
    }

    #[tokio::test]
    async fn upnp_router_granting_only_permanent_leases_gets_asked_for_one() {
        let (service, seen) = fake_gateway(vec![
            (500, fault(upnp::ONLY_PERMANENT_LEASES)),
            (200, corpus("soap-add-ok")),
            (200, corpus("soap-external-ip")),
        ])
        .await;
        let (lease, ip) = upnp_add(&service, Ipv4Addr::LOCALHOST, 6464, 3600)
            .await
            .unwrap();
        assert_eq!((lease, ip), (0, Ipv4Addr::new(10, 99, 0, 1)));
        assert_eq!(seen.lock().unwrap().len(), 3);
        // a conflict is an error, said as the router said it
        let (service, _) = fake_gateway(vec![(500, corpus("soap-add-fault"))]).await;
        let e = upnp_add(&service, Ipv4Addr::LOCALHOST, 6464, 3600)
            .await
            .unwrap_err();
        assert!(
            e.contains("718") && e.contains("ConflictInMappingEntry"),
            "{e}"
        );
    }

    #[test]
    fn the_default_gateway_is_read_from_proc_net_route() {
        let le = |ip: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(ip));
        let text = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             wlan0\t00000000\t{}\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eth0\t00000000\t{}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n\
             down0\t00000000\t{}\t0002\t0\t0\t0\t00000000\t0\t0\t0\n",
            le([192, 168, 1, 1]),
            le([10, 0, 0, 1]),
            le([10, 0, 0, 0]),
            le([255, 255, 255, 0]),
            le([172, 16, 0, 1]),
        );
        assert_eq!(
            parse_proc_net_route(&text),
            Some(Ipv4Addr::new(10, 0, 0, 1)),
            "the lowest metric of the default routes that are up"
        );
        assert_eq!(parse_proc_net_route("Iface\tDestination\n"), None);
        assert_eq!(parse_proc_net_route("header\nbroken line\n\u{0}\t\n"), None);
    }
}
