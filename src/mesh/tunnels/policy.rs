//! The tunnel manager (re6st's `TunnelManager`, DESIGN §6) as a sans-IO state machine.
//!
//! It decides which tunnels to open, which incoming ones to accept and which one to retire;
//! the host (the node's core) does the IO and reports what happened. It never reads a clock
//! or a global RNG: time comes in as [`Time`] on every call, randomness from a
//! [`ChaCha8Rng`] seeded by the host, so a run is reproducible for a seed.
//!
//! # Behaviour
//!
//! * **Outgoing tunnels.** Keep [`PolicyConfig::client_count`] outgoing tunnels (counting
//!   dials in progress) to random peers that Babel can route to but that are not neighbours
//!   yet ([`Observation::routable`]). When there are not enough of those (at start Babel
//!   knows nothing), the peer cache fills in ([`Observation::cached`], taken in the order
//!   given: [`crate::mesh::peers::PeerCache::candidates`] already randomises and prefers
//!   fresh, non-failed peers).
//! * **A node nobody connects to keeps only 2 outgoing tunnels.** When the node has had no
//!   incoming tunnel for [`PolicyConfig::isolated_after`] (it is probably unreachable, a
//!   leaf behind NAT), the target drops to [`PolicyConfig::isolated_client_count`] (2): a
//!   leaf carries no transit, two tunnels give it redundancy, and every tunnel it opens
//!   costs another node one of its `max_clients` slots. Surplus tunnels are retired one per
//!   refresh through the normal lock cycle. The first incoming tunnel restores the full
//!   target.
//! * **Incoming tunnels.** [`TunnelManager::accept_incoming`] admits at most
//!   [`PolicyConfig::max_clients`].
//! * **Refresh.** Every [`PolicyConfig::refresh`], the outgoing tunnel that routes the fewest
//!   prefixes (ties: the oldest) is retired through re6st's lock cycle, then a new random peer
//!   is dialled (the retired peer is avoided for one refresh interval):
//!
//!   ```text
//!   SoftLock ──(no selected route uses it any more, or soft_lock_wait)──▶ HardLock
//!   HardLock ──(hard_lock_hold)──▶ SendKillRequest
//!   KillRequest ──KillResponse{accepted: true}──▶ Close ──tunnel down──▶ done (dial a new peer)
//!   KillRequest ──KillResponse{accepted: false} or lock_timeout──▶ Unlock (abort)
//!   any state ──the peer closed the tunnel──▶ done
//!   any state before Close ──it became our only tunnel──▶ Unlock (abort)
//!   ```
//!
//!   At most one cycle runs at a time; the last tunnel is never retired; a tunnel is only
//!   retired to be replaced when a replacement candidate exists (or when it is surplus).
//! * **Kill requests from the peer.** [`TunnelManager::on_kill_request`] accepts unless the
//!   tunnel is this node's only live one (two simultaneous requests cannot both take the last
//!   two tunnels: an accepted tunnel no longer counts as live).
//! * **Countries** ([`crate::params::CountryRules`]): a node in a `closed` country only has
//!   tunnels with nodes of the same country; a node elsewhere never chooses (nor accepts) a
//!   peer known to be in a closed country. A peer whose country is unknown is allowed unless
//!   this node is in a closed country (then it cannot be shown to be a compatriot).
//!
//! # Usage from the host's 500 ms housekeeping tick
//!
//! ```
//! use re6mesh::mesh::babel::time::Time;
//! use re6mesh::mesh::tunnels::policy::{Action, Candidate, Observation, PolicyConfig, TunnelManager};
//! # let params = re6mesh::params::TunnelPolicy { client_count: 10, max_clients: 20, refresh: 300 };
//! # let countries = re6mesh::params::CountryRules::default();
//! # let me: ipnet::Ipv6Net = "fd00:1::/64".parse().unwrap();
//! # let now = Time::ZERO;
//! let cfg = PolicyConfig::from_params(&params, &countries, Some(me), None);
//! let mut tm = TunnelManager::new(cfg, now, /* seed */ 42);
//!
//! // On every tunnel event:            tm.tunnel_up(now, peer, initiated);
//! //                                    tm.tunnel_down(now, peer);   tm.dial_failed(now, peer);
//! // Incoming tunnel, before keeping it: if !tm.accept_incoming(peer, country) { close it }
//! // Control message KillRequest:       let ok = tm.on_kill_request(now, peer);
//! //                                    send KillResponse { accepted: ok }; if ok, close it.
//! // Control message KillResponse:      tm.on_kill_response(now, peer, accepted);
//!
//! // Every 500 ms: what Babel and the peer cache know now.
//! let routes_via: Vec<(ipnet::Ipv6Net, usize)> = vec![]; // selected routes per tunnel peer
//! let routable: Vec<Candidate> = vec![];   // prefixes of selected, non-local routes
//! let cached: Vec<Candidate> = vec![];     // peer_cache.candidates(now_unix, 16, &mut rng)
//! tm.tick(now, &Observation { routes_via: &routes_via, routable: &routable, cached: &cached });
//! while let Some(action) = tm.poll_action() {
//!     match action {
//!         Action::Dial(_peer) => { /* endpoints from the peer cache; spawn the dial */ }
//!         Action::SoftLock(_peer) => { /* engine.set_cost_multiplier(.., CostMultiplier::SOFT_LOCK) */ }
//!         Action::HardLock(_peer) => { /* engine.set_cost_multiplier(.., CostMultiplier::HARD_LOCK) */ }
//!         Action::SendKillRequest(_peer) => { /* ControlMsg::KillRequest on its control stream */ }
//!         Action::Close(_peer) => { /* close the QUIC connection, then tunnel_down */ }
//!         Action::Unlock(_peer) => { /* engine.set_cost_multiplier(.., CostMultiplier::NORMAL) */ }
//!     }
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ipnet::Ipv6Net;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::mesh::babel::time::Time;
use crate::params::{CountryRules, TunnelPolicy};

/// The manager's settings. [`PolicyConfig::from_params`] fills them from the network
/// parameters with re6st-like defaults for the timers; tests shorten the timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Outgoing tunnels to keep.
    pub client_count: usize,
    /// Incoming tunnels to accept at most.
    pub max_clients: usize,
    /// Interval between two retirements.
    pub refresh: Duration,
    /// Longest time in soft lock before the hard lock, if Babel has not routed around the
    /// tunnel by then.
    pub soft_lock_wait: Duration,
    /// Time in hard lock before the kill request (route retractions propagate meanwhile).
    pub hard_lock_hold: Duration,
    /// Longest wait for the kill response, and then for the tunnel to go down; on expiry the
    /// cycle is aborted and the tunnel unlocked.
    pub lock_timeout: Duration,
    /// A dial not reported up (or failed) within this is counted as failed.
    pub dial_timeout: Duration,
    /// A peer whose dial failed is not dialled again for this long.
    pub dial_backoff: Duration,
    /// Outgoing target of a node nobody connects to.
    pub isolated_client_count: usize,
    /// Time without any incoming tunnel after which the node counts as one nobody connects to.
    pub isolated_after: Duration,
    /// Country codes (ISO 3166 alpha-2) whose nodes only have tunnels among themselves.
    pub closed_countries: Vec<String>,
    /// This node's country, if known.
    pub my_country: Option<String>,
    /// This node's prefix (never dialled, whatever the inputs say).
    pub own_prefix: Option<Ipv6Net>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            client_count: 10,
            max_clients: 20,
            refresh: Duration::from_secs(300),
            soft_lock_wait: Duration::from_secs(30),
            hard_lock_hold: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(15),
            dial_backoff: Duration::from_secs(60),
            isolated_client_count: 2,
            isolated_after: Duration::from_secs(300),
            closed_countries: Vec::new(),
            my_country: None,
            own_prefix: None,
        }
    }
}

impl PolicyConfig {
    /// From the network parameters; `isolated_after` is one refresh interval, the other
    /// timers keep their defaults.
    pub fn from_params(
        tunnel: &TunnelPolicy,
        countries: &CountryRules,
        own_prefix: Option<Ipv6Net>,
        my_country: Option<String>,
    ) -> Self {
        let refresh = Duration::from_secs(u64::from(tunnel.refresh.max(1)));
        let d = PolicyConfig::default();
        PolicyConfig {
            client_count: tunnel.client_count as usize,
            max_clients: tunnel.max_clients as usize,
            refresh,
            isolated_after: refresh,
            // A short refresh (tests, small networks) shortens the lock cycle with it.
            soft_lock_wait: d.soft_lock_wait.min(refresh / 3),
            hard_lock_hold: d
                .hard_lock_hold
                .min(refresh / 6)
                .max(Duration::from_secs(1)),
            lock_timeout: d.lock_timeout.min(refresh / 2).max(Duration::from_secs(2)),
            closed_countries: countries.closed.clone(),
            my_country,
            own_prefix,
            ..d
        }
    }

    /// The country rule: may this node have a tunnel with a peer of country `peer`?
    pub fn country_allows(&self, peer: Option<&str>) -> bool {
        let closed = |c: &str| {
            self.closed_countries
                .iter()
                .any(|x| x.eq_ignore_ascii_case(c))
        };
        match self.my_country.as_deref() {
            Some(me) if closed(me) => peer.is_some_and(|p| p.eq_ignore_ascii_case(me)),
            _ => !peer.is_some_and(closed),
        }
    }
}

/// What the host must do. Drained with [`TunnelManager::poll_action`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Open an outgoing tunnel to this peer (endpoints from the peer cache). Report the
    /// outcome with [`TunnelManager::tunnel_up`] or [`TunnelManager::dial_failed`].
    Dial(Ipv6Net),
    /// Set the neighbour's cost multiplier to `CostMultiplier::SOFT_LOCK` (×16).
    SoftLock(Ipv6Net),
    /// Set the neighbour's cost multiplier to `CostMultiplier::HARD_LOCK` (unusable).
    HardLock(Ipv6Net),
    /// Send `ControlMsg::KillRequest` on the tunnel's control stream.
    SendKillRequest(Ipv6Net),
    /// Close the tunnel (the peer agreed), then report [`TunnelManager::tunnel_down`].
    Close(Ipv6Net),
    /// Restore the cost multiplier to `CostMultiplier::NORMAL` (the cycle was aborted).
    Unlock(Ipv6Net),
}

/// Where the lock cycle stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockState {
    /// Expensive: Babel routes around it if it can.
    SoftLocked,
    /// Unusable.
    HardLocked,
    /// Kill request sent, waiting for the response.
    KillSent,
    /// The peer agreed; closing.
    Closing,
}

/// A peer the manager may dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The peer's prefix.
    pub prefix: Ipv6Net,
    /// Its country (ISO 3166 alpha-2), if known.
    pub country: Option<String>,
}

impl Candidate {
    /// A candidate whose country is unknown.
    pub fn new(prefix: Ipv6Net) -> Self {
        Candidate {
            prefix,
            country: None,
        }
    }
}

/// What the host observes at each tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation<'a> {
    /// For each tunnel peer, the number of selected (non-local) Babel routes whose next hop
    /// is that tunnel. Tunnels missing here count 0.
    pub routes_via: &'a [(Ipv6Net, usize)],
    /// Prefixes of the selected, non-local Babel routes that are node prefixes the host can
    /// dial (it has endpoints for them): the preferred candidates.
    pub routable: &'a [Candidate],
    /// Candidates from the peer cache, best first; used when `routable` is not enough.
    pub cached: &'a [Candidate],
}

#[derive(Debug, Clone)]
struct TunnelRec {
    initiated: bool,
    since: Time,
    routes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Cycle {
    prefix: Ipv6Net,
    state: LockState,
    since: Time,
}

/// re6st's tunnel manager. See the module documentation.
#[derive(Debug)]
pub struct TunnelManager {
    cfg: PolicyConfig,
    rng: ChaCha8Rng,
    tunnels: BTreeMap<Ipv6Net, TunnelRec>,
    /// Tunnels whose end is agreed (our cycle in `Closing`, or a kill request we accepted),
    /// with the time of the agreement: no longer counted as live.
    dying: BTreeMap<Ipv6Net, Time>,
    dialing: BTreeMap<Ipv6Net, Time>,
    /// Peers not to dial before the given time (failed dials, retired tunnels).
    avoid: BTreeMap<Ipv6Net, Time>,
    cycle: Option<Cycle>,
    next_refresh: Time,
    /// Last time the node had an incoming tunnel (or the start).
    last_incoming: Time,
    actions: VecDeque<Action>,
}

impl TunnelManager {
    /// A manager started at `now`, its randomness seeded with `seed`.
    pub fn new(cfg: PolicyConfig, now: Time, seed: u64) -> Self {
        TunnelManager {
            next_refresh: now + cfg.refresh,
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            tunnels: BTreeMap::new(),
            dying: BTreeMap::new(),
            dialing: BTreeMap::new(),
            avoid: BTreeMap::new(),
            cycle: None,
            last_incoming: now,
            actions: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Replaces the settings (new network parameters). A changed refresh interval applies
    /// from the next refresh; a lower `client_count` retires surplus tunnels one per refresh.
    pub fn set_config(&mut self, cfg: PolicyConfig) {
        self.cfg = cfg;
    }

    /// The next action for the host, in the order decided.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The lock cycle in progress, if any.
    pub fn lock_cycle(&self) -> Option<(Ipv6Net, LockState)> {
        self.cycle.map(|c| (c.prefix, c.state))
    }

    /// Where this tunnel stands in the lock cycle (`None`: not locked).
    pub fn lock_state(&self, prefix: &Ipv6Net) -> Option<LockState> {
        self.cycle.filter(|c| c.prefix == *prefix).map(|c| c.state)
    }

    /// Outgoing tunnels up.
    pub fn outgoing(&self) -> usize {
        self.tunnels.values().filter(|t| t.initiated).count()
    }

    /// Incoming tunnels up.
    pub fn incoming(&self) -> usize {
        self.tunnels.values().filter(|t| !t.initiated).count()
    }

    /// Dials in progress.
    pub fn dialing(&self) -> usize {
        self.dialing.len()
    }

    /// Is a dial to this peer in progress?
    pub fn is_dialing(&self, prefix: &Ipv6Net) -> bool {
        self.dialing.contains_key(prefix)
    }

    /// Tunnels up and not agreed to close.
    pub fn live(&self) -> usize {
        self.tunnels
            .keys()
            .filter(|p| !self.dying.contains_key(*p))
            .count()
    }

    /// Does the node count as one nobody connects to (at `now`)?
    pub fn is_isolated(&self, now: Time) -> bool {
        self.incoming() == 0 && now.saturating_since(self.last_incoming) >= self.cfg.isolated_after
    }

    /// The outgoing target at `now`.
    pub fn outgoing_target(&self, now: Time) -> usize {
        if self.is_isolated(now) {
            self.cfg.client_count.min(self.cfg.isolated_client_count)
        } else {
            self.cfg.client_count
        }
    }

    /// May this incoming tunnel be kept? False when `max_clients` incoming tunnels are up or
    /// the country rule forbids it. Call it when the incoming tunnel is established, then
    /// [`TunnelManager::tunnel_up`] if it returned true.
    pub fn accept_incoming(&self, prefix: Ipv6Net, country: Option<&str>) -> bool {
        if Some(prefix) == self.cfg.own_prefix || !self.cfg.country_allows(country) {
            return false;
        }
        if self.tunnels.get(&prefix).is_some_and(|t| !t.initiated) {
            // Replaces an incoming tunnel from the same peer: no new slot used.
            return true;
        }
        self.incoming() < self.cfg.max_clients
    }

    /// A tunnel is up. A connection replacing an older one to the same peer (duplicate
    /// rule) may be reported with or without a `tunnel_down` for the old one; a lock cycle
    /// on the old one ends (the new neighbour starts with the normal multiplier).
    pub fn tunnel_up(&mut self, now: Time, prefix: Ipv6Net, initiated: bool) {
        self.dialing.remove(&prefix);
        self.dying.remove(&prefix);
        if self.cycle.is_some_and(|c| c.prefix == prefix) {
            // A new connection replaced the locked one: its neighbour starts unlocked.
            self.cycle = None;
        }
        self.tunnels.insert(
            prefix,
            TunnelRec {
                initiated,
                since: now,
                routes: 0,
            },
        );
        if !initiated {
            self.last_incoming = now;
        }
    }

    /// A tunnel is gone (closed by either side, died, revoked).
    pub fn tunnel_down(&mut self, now: Time, prefix: Ipv6Net) {
        let Some(t) = self.tunnels.remove(&prefix) else {
            return;
        };
        self.dying.remove(&prefix);
        if !t.initiated {
            self.last_incoming = now;
        }
        if self.cycle.is_some_and(|c| c.prefix == prefix) {
            // Retired (or the peer closed it first): dial someone else.
            self.cycle = None;
            self.avoid.insert(prefix, now + self.cfg.refresh);
        }
    }

    /// A dial asked by [`Action::Dial`] failed (no endpoint worked).
    pub fn dial_failed(&mut self, now: Time, prefix: Ipv6Net) {
        if self.dialing.remove(&prefix).is_some() {
            self.avoid.insert(prefix, now + self.cfg.dial_backoff);
        }
    }

    /// The peer asks to close this tunnel: true to accept (answer
    /// `KillResponse { accepted: true }`, then close it), false when no other live tunnel
    /// would remain (tunnels already agreed to close and the one this node is retiring itself
    /// do not count), or when the tunnel is unknown.
    pub fn on_kill_request(&mut self, now: Time, prefix: Ipv6Net) -> bool {
        if !self.tunnels.contains_key(&prefix) {
            return false;
        }
        if self.dying.contains_key(&prefix) {
            return true;
        }
        // Another live tunnel must remain, not counting one we are retiring ourselves.
        let victim = self.cycle.map(|c| c.prefix);
        let others = self
            .tunnels
            .keys()
            .filter(|p| **p != prefix && Some(**p) != victim && !self.dying.contains_key(*p))
            .count();
        if others == 0 {
            return false;
        }
        self.dying.insert(prefix, now);
        true
    }

    /// The peer answered our kill request.
    pub fn on_kill_response(&mut self, now: Time, prefix: Ipv6Net, accepted: bool) {
        let Some(c) = self.cycle.filter(|c| c.prefix == prefix) else {
            return;
        };
        if c.state != LockState::KillSent {
            return;
        }
        if accepted {
            self.dying.insert(prefix, now);
            self.actions.push_back(Action::Close(prefix));
            self.cycle = Some(Cycle {
                prefix,
                state: LockState::Closing,
                since: now,
            });
        } else {
            self.abort();
        }
    }

    /// The periodic step (every 500 ms): timeouts, the lock cycle, the refresh, dials.
    pub fn tick(&mut self, now: Time, obs: &Observation<'_>) {
        for t in self.tunnels.values_mut() {
            t.routes = 0;
        }
        for (p, n) in obs.routes_via {
            if let Some(t) = self.tunnels.get_mut(p) {
                t.routes = t.routes.saturating_add(*n);
            }
        }
        if self.incoming() > 0 {
            self.last_incoming = now;
        }
        self.avoid.retain(|_, until| *until > now);
        let (dial_timeout, backoff) = (self.cfg.dial_timeout, self.cfg.dial_backoff);
        let expired: Vec<Ipv6Net> = self
            .dialing
            .iter()
            .filter(|(_, started)| now.saturating_since(**started) >= dial_timeout)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.dialing.remove(&p);
            self.avoid.insert(p, now + backoff);
        }
        // A kill request we accepted whose tunnel never went down stops counting as dying.
        let lock_timeout = self.cfg.lock_timeout;
        let cycle_prefix = self.cycle.map(|c| c.prefix);
        self.dying.retain(|p, since| {
            Some(*p) == cycle_prefix || now.saturating_since(*since) < lock_timeout
        });
        self.advance_cycle(now);
        if now >= self.next_refresh {
            self.next_refresh = now + self.cfg.refresh;
            if self.cycle.is_none() {
                self.start_retirement(now, obs);
            }
        }
        self.top_up(now, obs);
    }

    fn abort(&mut self) {
        if let Some(c) = self.cycle.take() {
            self.dying.remove(&c.prefix);
            if self.tunnels.contains_key(&c.prefix) {
                self.actions.push_back(Action::Unlock(c.prefix));
            }
        }
    }

    fn advance_cycle(&mut self, now: Time) {
        let Some(c) = self.cycle else { return };
        let Some(t) = self.tunnels.get(&c.prefix) else {
            self.cycle = None;
            return;
        };
        let elapsed = now.saturating_since(c.since);
        if c.state != LockState::Closing && self.live() <= 1 {
            // It became our only tunnel: keep it.
            self.abort();
            return;
        }
        let next = match c.state {
            LockState::SoftLocked if t.routes == 0 || elapsed >= self.cfg.soft_lock_wait => {
                self.actions.push_back(Action::HardLock(c.prefix));
                Some(LockState::HardLocked)
            }
            LockState::HardLocked if elapsed >= self.cfg.hard_lock_hold => {
                self.actions.push_back(Action::SendKillRequest(c.prefix));
                Some(LockState::KillSent)
            }
            LockState::KillSent | LockState::Closing if elapsed >= self.cfg.lock_timeout => {
                self.abort();
                None
            }
            _ => None,
        };
        if let Some(state) = next {
            self.cycle = Some(Cycle {
                prefix: c.prefix,
                state,
                since: now,
            });
        }
    }

    fn start_retirement(&mut self, now: Time, obs: &Observation<'_>) {
        let outgoing = self.outgoing();
        let target = self.outgoing_target(now);
        if outgoing == 0 || outgoing < target || self.live() <= 1 {
            return;
        }
        let Some((&victim, _)) = self
            .tunnels
            .iter()
            .filter(|(p, t)| t.initiated && !self.dying.contains_key(*p))
            .min_by_key(|(p, t)| (t.routes, t.since, **p))
        else {
            return;
        };
        let surplus = outgoing > target;
        if !surplus && !self.eligible(now, obs).any(|c| c.prefix != victim) {
            // Nobody to replace it with: keep it.
            return;
        }
        self.actions.push_back(Action::SoftLock(victim));
        self.cycle = Some(Cycle {
            prefix: victim,
            state: LockState::SoftLocked,
            since: now,
        });
    }

    fn eligible<'o>(
        &'o self,
        now: Time,
        obs: &Observation<'o>,
    ) -> impl Iterator<Item = &'o Candidate> + 'o {
        let routable = obs.routable.iter();
        let cached = obs.cached.iter();
        routable
            .chain(cached)
            .filter(move |c| self.may_dial(now, c))
    }

    fn may_dial(&self, now: Time, c: &Candidate) -> bool {
        Some(c.prefix) != self.cfg.own_prefix
            && !self.tunnels.contains_key(&c.prefix)
            && !self.dialing.contains_key(&c.prefix)
            && self.avoid.get(&c.prefix).is_none_or(|until| *until <= now)
            && self.cfg.country_allows(c.country.as_deref())
    }

    fn top_up(&mut self, now: Time, obs: &Observation<'_>) {
        let have = self.outgoing() + self.dialing.len();
        let mut need = self.outgoing_target(now).saturating_sub(have);
        if need == 0 {
            return;
        }
        // Routable, not neighbours: a random choice.
        let mut pool: Vec<Ipv6Net> = obs
            .routable
            .iter()
            .filter(|c| self.may_dial(now, c))
            .map(|c| c.prefix)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut chosen = Vec::new();
        while need > 0 && !pool.is_empty() {
            let i = below(&mut self.rng, pool.len());
            chosen.push(pool.swap_remove(i));
            need -= 1;
        }
        // Then the cache, best first.
        for c in obs.cached {
            if need == 0 {
                break;
            }
            if self.may_dial(now, c) && !chosen.contains(&c.prefix) {
                chosen.push(c.prefix);
                need -= 1;
            }
        }
        for p in chosen {
            self.dialing.insert(p, now);
            self.actions.push_back(Action::Dial(p));
        }
    }
}

/// A uniform index below `n` (`n > 0`).
fn below(rng: &mut impl RngCore, n: usize) -> usize {
    // Rejection sampling keeps it unbiased; n is small.
    let n = n as u64;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return (v % n) as usize;
        }
    }
}

#[cfg(test)]
mod tests;
