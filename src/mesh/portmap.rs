//! Port mapping on the home router (issue 14), sans-IO: [`PortMapper`].
//!
//! A laptop behind a home router's NAT cannot be dialled from outside unless the router
//! forwards a port to it. Most home routers offer that on request: PCP (RFC 6887), its
//! predecessor NAT-PMP (RFC 6886), or UPnP IGD. This machine decides *what* to ask and
//! *when*; the shell (`mesh::node::portmap_io`) talks to the router (crab_nat for PCP and
//! NAT-PMP, `mesh::upnp` for UPnP IGD), finds the default gateway, and feeds the answers back
//! with the time as an argument. The mapped public address and port becomes a reachability
//! candidate of kind "mapped" (`mesh::reach`).
//!
//! Decisions:
//! * **Protocols**, in order: PCP, NAT-PMP (both need the default gateway), then UPnP IGD (found
//!   by SSDP, also where the gateway cannot be found), of those the shell speaks. The first
//!   that maps wins; the tunnel port is asked for as the external port too (the router may
//!   pick another).
//! * **Renewal** at half the granted lifetime ([`LIFETIME`] asked; a mapping granted "until
//!   removed" is confirmed every [`PERMANENT_RECHECK`]), with the same protocol and router. A
//!   failed renewal is retried at half the remaining time (at least [`MIN_RENEW`]); a mapping
//!   that expires unrenewed is dropped and a new round starts.
//! * **Back-off**: a round in which no protocol mapped is retried after [`RETRY_FIRST`],
//!   doubling up to [`RETRY_MAX`]; after [`GIVE_UP_AFTER`] such rounds in a row the machine
//!   gives up (`unavailable`) until the network changes.
//! * **Network changes**: the default gateway (and our address towards it) is looked at every
//!   [`GATEWAY_CHECK`] in every state; a change drops the mapping (its router is elsewhere now),
//!   resets the back-off and starts a round at once. A change of the external address shows in
//!   the renewal's answer and replaces the candidate.
//! * **Stop**: a mapping held is removed (the shell bounds the time it waits for the router);
//!   nothing else is sent after.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::control::PortMappingStatus;
use crate::mesh::babel::time::Time;

/// The lifetime asked of PCP and NAT-PMP routers (RFC 6886's recommendation).
pub const LIFETIME: Duration = Duration::from_secs(7200);
/// The lease asked of UPnP routers (some grant only permanent ones: then 0).
pub const UPNP_LEASE: Duration = Duration::from_secs(3600);
/// A mapping granted until removed is confirmed this often.
pub const PERMANENT_RECHECK: Duration = Duration::from_secs(1800);
/// The shortest wait before a renewal (a router granting seconds is not asked in a loop).
pub const MIN_RENEW: Duration = Duration::from_secs(5);
/// The default gateway is looked at this often (a change means another network).
pub const GATEWAY_CHECK: Duration = Duration::from_secs(30);
/// Wait after the first round in which nothing mapped; doubled after each further one.
pub const RETRY_FIRST: Duration = Duration::from_secs(30);
/// The longest wait between rounds.
pub const RETRY_MAX: Duration = Duration::from_secs(1800);
/// Failed rounds in a row after which the machine waits for the network to change.
pub const GIVE_UP_AFTER: u32 = 4;

/// A port mapping protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    NatPmp,
    /// UPnP Internet Gateway Device.
    Upnp,
}

impl Protocol {
    /// The order of a round.
    pub const ORDER: [Protocol; 3] = [Protocol::Pcp, Protocol::NatPmp, Protocol::Upnp];

    /// `pcp`, `nat-pmp`, `upnp` (status and logs).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pcp => "pcp",
            Protocol::NatPmp => "nat-pmp",
            Protocol::Upnp => "upnp",
        }
    }

    /// Whether the protocol talks to the default gateway (PCP, NAT-PMP) rather than to a
    /// device found by discovery (UPnP).
    pub fn needs_gateway(self) -> bool {
        !matches!(self, Protocol::Upnp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The default route as the shell found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The default gateway.
    pub gateway: IpAddr,
    /// This host's address towards it (PCP's client address).
    pub local: IpAddr,
}

/// A mapping the router granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// How it was made (renewed and removed the same way).
    pub protocol: Protocol,
    /// The router that holds it.
    pub gateway: IpAddr,
    /// The public address and port forwarded to the tunnel port.
    pub external: SocketAddr,
    /// The lifetime granted (zero: until removed).
    pub lifetime: Duration,
}

/// What the shell must do (one at a time; the answer goes to the matching `on_*` method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Find the default route → [`PortMapper::on_route`].
    FindRoute,
    /// Ask for (or renew, when `previous` is set) a mapping of `internal_port` →
    /// [`PortMapper::on_mapped`]. `route` is set for PCP and NAT-PMP.
    Map {
        protocol: Protocol,
        route: Option<Route>,
        internal_port: u16,
        lifetime: Duration,
        previous: Option<Mapping>,
    },
    /// Remove the mapping → [`PortMapper::on_unmapped`].
    Unmap(Mapping),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The next round starts at the given time.
    Idle(Time),
    /// A round: the protocol tried now (index into the machine's protocols).
    Round(usize),
    /// Mapped; renewed at `renew_at`; gone at `expires`.
    Mapped {
        mapping: Mapping,
        renew_at: Time,
        expires: Time,
    },
    /// Too many failed rounds: waiting for the network to change.
    GaveUp,
    /// Removing the mapping before the stop.
    Removing,
    Stopped,
}

/// What the machine waits for from the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Route,
    Map,
    Unmap,
}

/// The port mapping state machine. See the module documentation.
#[derive(Debug, Clone)]
pub struct PortMapper {
    internal_port: u16,
    /// The protocols the shell speaks, in [`Protocol::ORDER`].
    protocols: Vec<Protocol>,
    state: State,
    awaiting: Option<Awaiting>,
    queued: Option<Request>,
    /// The default route last seen (`None`: none, or not found).
    route: Option<Route>,
    /// Whether a route look has ever answered (the first answer is no change).
    route_known: bool,
    next_route_check: Time,
    /// Failed rounds in a row.
    failures: u32,
    last_error: Option<String>,
}

impl PortMapper {
    /// A machine for the tunnel port `internal_port`, whose first round starts at `now`,
    /// trying every protocol.
    pub fn new(internal_port: u16, now: Time) -> PortMapper {
        PortMapper::with_protocols(internal_port, now, &Protocol::ORDER)
    }

    /// Like [`PortMapper::new`], trying only `protocols` (still in [`Protocol::ORDER`]): the
    /// ones the shell speaks.
    pub fn with_protocols(internal_port: u16, now: Time, protocols: &[Protocol]) -> PortMapper {
        PortMapper {
            internal_port,
            protocols: Protocol::ORDER
                .into_iter()
                .filter(|p| protocols.contains(p))
                .collect(),
            state: State::Idle(now),
            awaiting: None,
            queued: None,
            route: None,
            route_known: false,
            next_route_check: now + GATEWAY_CHECK,
            failures: 0,
            last_error: None,
        }
    }

    /// The public address and port of the mapping held (the "mapped" candidate).
    pub fn external(&self) -> Option<SocketAddr> {
        match self.state {
            State::Mapped { mapping, .. } => Some(mapping.external),
            _ => None,
        }
    }

    /// The mapping held.
    pub fn mapping(&self) -> Option<Mapping> {
        match self.state {
            State::Mapped { mapping, .. } => Some(mapping),
            _ => None,
        }
    }

    /// Whether the machine has stopped (after [`PortMapper::stop`] and any removal).
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// The last failure.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The next request for the shell, if any (taken: it is handed out once).
    pub fn poll_request(&mut self) -> Option<Request> {
        self.queued.take()
    }

    /// When [`PortMapper::handle_timeout`] must run next (`None` while a request is out or
    /// once stopped).
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.awaiting.is_some() || self.queued.is_some() {
            return None;
        }
        match self.state {
            State::Idle(at) => Some(at.min(self.next_route_check)),
            State::Mapped { renew_at, .. } => Some(renew_at.min(self.next_route_check)),
            State::GaveUp => Some(self.next_route_check),
            State::Round(_) | State::Removing | State::Stopped => None,
        }
    }

    /// Runs what is due at `now`: a round, a renewal, a look at the default route.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.awaiting.is_some() || self.queued.is_some() {
            return;
        }
        match self.state {
            State::Idle(at) if now >= at => self.ask(Awaiting::Route, Request::FindRoute),
            State::Mapped {
                mapping,
                renew_at,
                expires,
            } => {
                if now >= expires {
                    self.last_error = Some(format!(
                        "{}: the mapping expired without being renewed",
                        mapping.protocol
                    ));
                    self.lost(now);
                } else if now >= renew_at {
                    self.ask(
                        Awaiting::Map,
                        Request::Map {
                            protocol: mapping.protocol,
                            route: self.route.filter(|_| mapping.protocol.needs_gateway()),
                            internal_port: self.internal_port,
                            lifetime: lifetime_for(mapping.protocol),
                            previous: Some(mapping),
                        },
                    );
                } else if now >= self.next_route_check {
                    self.ask(Awaiting::Route, Request::FindRoute);
                }
            }
            State::Idle(_) | State::GaveUp if now >= self.next_route_check => {
                self.ask(Awaiting::Route, Request::FindRoute)
            }
            _ => {}
        }
    }

    /// The host's addresses changed: look at the default route now.
    pub fn network_changed(&mut self, now: Time) {
        self.next_route_check = now;
        if let State::GaveUp = self.state {
            self.state = State::Idle(now);
            self.failures = 0;
        }
    }

    /// The default route (or why there is none: no default route, not supported here).
    pub fn on_route(&mut self, now: Time, route: Result<Route, String>) {
        if self.awaiting != Some(Awaiting::Route) {
            return;
        }
        self.awaiting = None;
        self.next_route_check = now + GATEWAY_CHECK;
        let new = route.as_ref().ok().copied();
        let changed = self.route_known && new != self.route;
        self.route = new;
        self.route_known = true;
        if changed {
            // Another network: the mapping (if any) is on a router we left; start afresh.
            self.failures = 0;
            if matches!(self.state, State::Mapped { .. }) {
                self.last_error = Some("the default gateway changed: mapping again".into());
            }
            self.start_round(now);
            return;
        }
        // a round starts with the route look
        if let State::Idle(at) = self.state
            && now >= at
        {
            if let Err(e) = route {
                self.last_error = Some(format!("no default gateway for PCP or NAT-PMP: {e}"));
            }
            self.start_round(now);
        }
    }

    /// The answer to a [`Request::Map`].
    pub fn on_mapped(&mut self, now: Time, result: Result<Mapping, String>) {
        if self.awaiting != Some(Awaiting::Map) {
            return;
        }
        self.awaiting = None;
        match (self.state, result) {
            (State::Round(_) | State::Mapped { .. }, Ok(mapping)) => {
                self.failures = 0;
                let (renew, life) = schedule(mapping.lifetime);
                self.state = State::Mapped {
                    mapping,
                    renew_at: now + renew,
                    expires: now + life,
                };
            }
            (State::Round(i), Err(e)) => {
                let protocol = self.protocols.get(i).copied().unwrap_or(Protocol::Pcp);
                self.last_error = Some(format!("{protocol}: {e}"));
                self.try_protocol(now, i + 1);
            }
            (
                State::Mapped {
                    mapping, expires, ..
                },
                Err(e),
            ) => {
                self.last_error = Some(format!("{} renewal: {e}", mapping.protocol));
                if now >= expires {
                    self.lost(now);
                } else {
                    let retry = (expires.saturating_since(now) / 2).max(MIN_RENEW);
                    self.state = State::Mapped {
                        mapping,
                        renew_at: now + retry,
                        expires,
                    };
                }
            }
            _ => {}
        }
    }

    /// The answer to a [`Request::Unmap`] (success or not: nothing more is sent).
    pub fn on_unmapped(&mut self, _now: Time, result: Result<(), String>) {
        if self.awaiting != Some(Awaiting::Unmap) {
            return;
        }
        self.awaiting = None;
        if let Err(e) = result {
            self.last_error = Some(format!("removal: {e}"));
        }
        self.state = State::Stopped;
    }

    /// The node stops: a mapping held is removed (see [`PortMapper::poll_request`]), then
    /// the machine is stopped. A request still out is abandoned.
    pub fn stop(&mut self, _now: Time) {
        self.queued = None;
        self.awaiting = None;
        match self.state {
            State::Mapped { mapping, .. } => {
                self.state = State::Removing;
                self.ask(Awaiting::Unmap, Request::Unmap(mapping));
            }
            State::Removing | State::Stopped => {}
            _ => self.state = State::Stopped,
        }
    }

    /// The status for `mesh status` at `now` (`gateway`: the router holding the mapping, or
    /// the default gateway).
    pub fn status(&self, now: Time) -> PortMappingStatus {
        let mut s = PortMappingStatus {
            internal_port: self.internal_port,
            last_error: self.last_error.clone(),
            gateway: self.route.map(|r| r.gateway.to_string()),
            ..Default::default()
        };
        let secs = |t: Time| Some(t.saturating_since(now).as_secs());
        let state = match self.state {
            State::Idle(at) if self.failures > 0 => {
                s.next_in_secs = secs(at);
                "retrying"
            }
            State::Idle(_) | State::Round(_) => "searching",
            State::Mapped {
                mapping, renew_at, ..
            } => {
                s.protocol = Some(mapping.protocol.name().into());
                s.gateway = Some(mapping.gateway.to_string());
                s.external = Some(mapping.external.to_string());
                s.lifetime_secs = Some(mapping.lifetime.as_secs());
                s.next_in_secs = secs(renew_at);
                if self.awaiting == Some(Awaiting::Map) {
                    "renewing"
                } else {
                    "mapped"
                }
            }
            State::GaveUp => "unavailable",
            State::Removing => "removing",
            State::Stopped => "stopped",
        };
        s.state = state.into();
        s
    }

    fn ask(&mut self, awaiting: Awaiting, request: Request) {
        self.awaiting = Some(awaiting);
        self.queued = Some(request);
    }

    fn start_round(&mut self, now: Time) {
        self.try_protocol(now, 0);
    }

    /// Tries `protocols[i]` or the next one that can be tried; ends the round when none is
    /// left.
    fn try_protocol(&mut self, now: Time, mut i: usize) {
        while let Some(&protocol) = self.protocols.get(i) {
            if protocol.needs_gateway() && self.route.is_none() {
                i += 1;
                continue;
            }
            self.state = State::Round(i);
            self.ask(
                Awaiting::Map,
                Request::Map {
                    protocol,
                    route: self.route.filter(|_| protocol.needs_gateway()),
                    internal_port: self.internal_port,
                    lifetime: lifetime_for(protocol),
                    previous: None,
                },
            );
            return;
        }
        // Nothing mapped this round.
        self.failures += 1;
        self.state = if self.failures >= GIVE_UP_AFTER {
            State::GaveUp
        } else {
            State::Idle(now + backoff(self.failures))
        };
    }

    /// The mapping is gone (expired, or its router left): a new round now.
    fn lost(&mut self, now: Time) {
        self.failures = 0;
        self.start_round(now);
    }
}

/// What to ask of `protocol`.
fn lifetime_for(protocol: Protocol) -> Duration {
    match protocol {
        Protocol::Upnp => UPNP_LEASE,
        Protocol::Pcp | Protocol::NatPmp => LIFETIME,
    }
}

/// (renew after, expires after) for a granted lifetime (zero: until removed).
fn schedule(lifetime: Duration) -> (Duration, Duration) {
    if lifetime.is_zero() {
        (PERMANENT_RECHECK, PERMANENT_RECHECK * 2)
    } else {
        ((lifetime / 2).max(MIN_RENEW), lifetime)
    }
}

/// The wait after the `failures`-th failed round in a row.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (RETRY_FIRST * 2u32.pow(doublings)).min(RETRY_MAX)
}

#[cfg(test)]
#[path = "portmap_tests.rs"]
mod tests;
