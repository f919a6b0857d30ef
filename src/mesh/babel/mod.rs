//! Sans-IO Babel routing engine: RFC 8966, RFC 8967 MAC authentication with RFC 9467
//! relaxed packet counters, RFC 9616 Hello/IHU timestamps and an RTT-based cost.
//!
//! The engine owns no socket, timer or clock, and draws no randomness of its own: the host
//! feeds it
//! - packets: [`Engine::handle_packet`]`(now, iface, src, dst, bytes)`,
//! - timer expiry: [`Engine::handle_timeout`]`(now)`,
//! - commands: [`Engine::add_interface`], [`Engine::remove_interface`],
//!   [`Engine::add_neighbour`], [`Engine::remove_neighbour`], [`Engine::originate`],
//!   [`Engine::withdraw`], [`Engine::set_cost_multiplier`], [`Engine::set_rtt`],
//!   [`Engine::set_mac_keys`], [`Engine::set_timers`],
//!
//! and the RNG seed at construction. Time is a [`Time`] (milliseconds from an epoch the host
//! chooses).
//!
//! # Drain order
//! After **every** input (packet, timeout or command), drain in this order:
//! 1. [`Engine::poll_transmit`] until `None` — packets to send now (`Transmit::at == now`);
//! 2. [`Engine::poll_route_change`] until `None` — apply to the FIB in order, then publish
//!    it once ([`crate::mesh::fib::Fib::publish`]);
//! 3. [`Engine::poll_event`] until `None` — logging, neighbour up/down, rejected packets;
//! 4. [`Engine::poll_timeout`] — arm the single timer; call [`Engine::handle_timeout`] when
//!    it fires (calling it early is harmless).
//!
//! Transmits come first so Babel packets are never delayed behind FIB work; route changes
//! are queued in the order the decisions were made, so applying them in order always
//! leaves the FIB equal to [`Engine::selected_routes`]. Hellos, IHUs, requests, challenge
//! TLVs, answers and retractions of lost routes leave at once; other triggered updates are
//! held for [`Config::batch`] (20 ms) so changes arriving together share packets — they
//! come out of a later [`Engine::handle_timeout`].
//!
//! # Interfaces
//! * **Tunnels** ([`IfaceKind::Tunnel`]): one neighbour, given by the host (the QUIC
//!   connection is up) and removed by it ([`Engine::remove_neighbour`]) the moment the
//!   connection dies. Cost: 96 scaled by the Hello loss seen both ways (ETX-like), plus an
//!   RTT penalty from the RTT the host measures ([`Engine::set_rtt`]; 0 below 10 ms, +150
//!   above 120 ms, linear in between); infinite after three missed Hellos. Updates towards
//!   a route's own next hop are poisoned (metric 65535). Pseudo-header: the two nodes'
//!   prefix::1, port 6696 both sides.
//! * **LANs** ([`IfaceKind::Lan`]): multicast ff02::1:6 / UDP 6696, neighbours discovered by
//!   Hello, IHU with AE 3, 2-out-of-3 (wired) or ETX (lossy) cost as in RFC 8966 appendix A,
//!   IPv4 routes with an IPv4 next hop when the LAN has one, else v4-via-v6 (RFC 9229).
//!   Checked against real babeld 1.12 packets from `shared/testdata/babel`.
//! * Per interface, [`IfaceConfig::timestamps`] adds RFC 9616 Timestamp sub-TLVs and
//!   measures each neighbour's RTT (smoothed as babeld does; the host's
//!   [`Engine::set_rtt`] wins), which adds the same RTT penalty to the cost; and
//!   [`IfaceConfig::acks`] sends urgent retractions and seqno requests with an
//!   Acknowledgment Request, resent unicast until acknowledged (RFC 8966 3.3).
//! * Multicast and unicast Hellos are kept in separate histories (RFC 8966 3.4.1); the
//!   cost uses the multicast one unless a neighbour only sends unicast Hellos.
//! * Packets from our own addresses and updates with our own router-id are ignored;
//!   source-specific (RFC 9079) routes are routes of their own, keyed by [`RouteKey`]
//!   (destination, source).
//!
//! # Authentication
//! [`Engine::set_mac_keys`] takes the registry's slots: one key signs, the sign and accept
//! keys verify, and "accept unsigned" admits packets without any MAC (never packets with a
//! bad one). A neighbour's first signed packet with an unknown PC index is dropped and
//! challenged (RFC 8967 4.3); when the challenge succeeds we immediately send it a unicast
//! wildcard Route Request, and after answering a challenge we immediately send the
//! challenger a full update, so no routes wait for the next periodic update. PCs are
//! checked separately for unicast and multicast packets (RFC 9467). Keys change live;
//! counter state is kept, so a compatible rotation step never drops an adjacency.
//!
//! # Budgets
//! What one neighbour can make the engine hold or do is capped ([`Config`]'s
//! `max_routes_per_neighbour`, `max_routes`, `max_sources`, `max_requests`,
//! `max_requests_per_neighbour`, `request_rate`/`request_burst`, `seqno_bump_interval`;
//! docs/BABEL.md, "Budgets"). At a cap the new item is dropped, counted in
//! [`Engine::budget_counters`] and logged once per neighbour; refreshes and retractions of
//! routes already held always pass.
//!
//! # Origin authentication
//! With an [`OriginPolicy`] ([`Engine::set_origin_policy`]) every received Update is
//! checked against its originator's signature (sub-TLV 112): invalid ones are dropped,
//! unknown ones held unselectable until [`Engine::origin_known`]; with a [`RouteSigner`]
//! ([`Engine::set_route_signer`]) our own announcements are signed once per seqno.
//! Relays re-attach the signature they received. Without either, nothing changes
//! ([`origin`], docs/BABEL.md "Origin authentication").
//!
//! # Loop freedom
//! Routes are selected only if feasible (RFC 8966 3.5.1) against the source table, which
//! records the smallest metric this node announced per (prefix, router-id, seqno). An
//! unfeasible update for the selected route from the same source is ignored (3.5.4,
//! optional behaviour) and answered by a seqno request; starvation (only unfeasible routes
//! left) and a much better unfeasible route send seqno requests to the neighbours holding
//! them, which forward them (hop count, duplicate suppression) towards the source. Route
//! selection uses hysteresis (a new route must be better by max(16, metric/16)).

mod budget;
pub mod codec;
pub mod cost;
mod engine;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod mac;
pub mod msg;
pub mod origin;
pub mod prefix;
pub mod seqno;
pub mod time;

#[cfg(test)]
mod tests;

pub use budget::BudgetCounters;
pub use cost::{CostMultiplier, RttCostParams};
pub use engine::{
    ACK_RETRIES, ACK_TIMEOUT, BABEL_MULTICAST, BABEL_PORT, CommandError, Config, Engine, Event,
    FibRoute, IfaceConfig, IfaceId, IfaceKind, NeighbourId, NeighbourInfo, Reject, RouteChange,
    RouteInfo, Timers, Transmit,
};
pub use mac::{MacKey, MacKeys};
pub use msg::{INFINITY, RouterId};
pub use origin::{OriginCounters, OriginPolicy, OriginVerdict, RouteSignature, RouteSigner};
pub use prefix::{Prefix, RouteKey};
pub use seqno::Seqno;
pub use time::Time;
