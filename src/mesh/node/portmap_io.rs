//! Port mapping's IO shell: runs the [`PortMapper`] (`mesh::portmap`, every decision) against
//! the real router — PCP and NAT-PMP through crab_nat — and the host's default route
//! (`/proc/net/route` on Linux; elsewhere "not supported here", and nothing is mapped). UPnP
//! IGD is not spoken yet (see [`SPOKEN`]).
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

use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::core::Input;
use super::shell::ShellEvent;
use crate::control::PortMappingStatus;
use crate::mesh::babel::time::Time;
use crate::mesh::portmap::{Mapping, PortMapper, Protocol, Request, Route};

/// The protocols this shell speaks. UPnP IGD (igd-next) would come last: its tokio client
/// brings hyper's HTTP/2, url and ICU into every build, so it waits.
const SPOKEN: [Protocol; 2] = [Protocol::Pcp, Protocol::NatPmp];
const UPNP_MISSING: &str = "UPnP IGD is not spoken by this build";
/// The longest one request to the router may take (every retry included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// PCP and NAT-PMP: first wait for an answer, doubled per retry (RFC 6887's 3 s start is
/// for lossy links; a home router answers within milliseconds or not at all).
const FIRST_WAIT: Duration = Duration::from_millis(250);
const RETRIES: usize = 2;
const MAX_WAIT: Duration = Duration::from_secs(1);

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
            Protocol::Upnp => Err(UPNP_MISSING.into()),
        }
    }

    async fn unmap(&mut self, m: Mapping) -> Result<(), String> {
        match m.protocol {
            Protocol::Pcp | Protocol::NatPmp => match self.natpmp.take() {
                Some(h) => h.try_drop().await.map_err(|(e, _)| e.to_string()),
                None => Ok(()),
            },
            Protocol::Upnp => Err(UPNP_MISSING.into()),
        }
    }
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
