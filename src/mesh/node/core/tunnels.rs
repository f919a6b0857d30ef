//! Tunnels: admission and the duplicate rule, the control stream, the housekeeping round
//! (static peers, bootstrap, the tunnel manager), LAN neighbours.

use super::*;

impl NodeCore {
    pub(super) fn tunnel_up(&mut self, now: Now, tunnel: TunnelId, info: TunnelInfo) {
        let peer = info.peer_prefix;
        let reject = |core: &mut NodeCore, code: CloseCode| {
            core.actions.push_back(Action::Close { tunnel, code });
        };
        if self.down || self.tunnels.contains_key(&tunnel) {
            return reject(self, CloseCode::Shutdown);
        }
        // The handshake already refused revoked serials; a CRL applied while it was in flight
        // is caught here.
        if self.net.revoked().contains(&info.peer_serial) {
            return reject(self, CloseCode::Revoked);
        }
        if info.peer_not_after <= now.unix {
            self.counters.peer_certificate_expired += 1;
            return reject(self, CloseCode::Expired);
        }
        if peer == self.prefix {
            return reject(self, CloseCode::Internal);
        }
        let mut replaced = None;
        // Make before break: a duplicate that wins takes over the Babel interface and
        // neighbour of the tunnel it replaces, so the routes through this peer stay in place
        // (a fresh interface would learn them again only after a few hellos: a route flap).
        let mut handover = None;
        if let Some(&existing) = self.by_prefix.get(&peer) {
            // One connection per pair: the lower prefix keeps the one it initiated.
            let keep_new = if self.prefix < peer {
                info.initiated
            } else {
                !info.initiated
            };
            let old_initiated = self.tunnels.get(&existing).map(|e| e.initiated);
            if !keep_new || old_initiated == Some(info.initiated) {
                return reject(self, CloseCode::Duplicate);
            }
            if let Some(old) = self.tunnels.remove(&existing) {
                self.schedule(
                    now.time + DUPLICATE_CLOSE_DELAY,
                    Later::CloseReplaced(existing),
                );
                self.by_iface.remove(&old.iface);
                self.by_prefix.remove(&peer);
                self.reach.forget(&peer);
                self.tm.tunnel_down(now.time, peer);
                self.later.retain(|_, job| match job {
                    Later::KillAnswer(id, _) | Later::KillClose(id) => *id != existing,
                    Later::CloseReplaced(_) => true,
                });
                info!(peer = %peer, why = "replaced by a duplicate", "tunnel down");
                self.snapshot_dirty = true;
                replaced = Some(old.made);
                handover = Some((old.iface, old.neighbour));
            }
        }
        // A refused newcomer that took over an interface takes it down with it.
        let reject = |core: &mut NodeCore, code: CloseCode| {
            if let Some((iface, neighbour)) = handover {
                let _ = core.engine.remove_neighbour(now.time, neighbour);
                let _ = core.engine.remove_interface(now.time, iface);
            }
            reject(core, code)
        };
        let is_static = self.static_peers.contains_key(&peer);
        if !info.initiated
            && !is_static
            && !self.tm.accept_incoming(peer, info.hello.country.as_deref())
        {
            return reject(self, CloseCode::TooMany);
        }
        if !is_static {
            self.tm.tunnel_up(now.time, peer, info.initiated);
        }
        self.dialing.remove(&peer);
        let peer_addr = identity::node_address(&peer);
        let (iface, neighbour) = match handover {
            Some(h) => h,
            None => {
                let mut icfg = IfaceConfig::tunnel(&format!("t-{peer}"), self.me, peer_addr);
                icfg.timers = self.timers;
                let iface = self.engine.add_interface(now.time, icfg);
                let Ok(neighbour) =
                    self.engine
                        .add_neighbour(now.time, iface, IpAddr::V6(peer_addr))
                else {
                    let _ = self.engine.remove_interface(now.time, iface);
                    return reject(self, CloseCode::Internal);
                };
                (iface, neighbour)
            }
        };
        // Punched when a punch with this peer was under way (either side's handshakes may
        // win), or when it replaces a punched duplicate.
        // Mapped when the peer dialled the address our router forwards to us (its hello
        // says where it sees us: the address it dialled).
        let mapped = !info.initiated
            && info.hello.observed.is_some_and(|o| {
                Some(SocketAddr::new(o.ip().to_canonical(), o.port())) == self.reach.mapped()
            });
        let made = if self.punch.tunnel_up(&peer) || replaced == Some(Made::Punched) {
            Made::Punched
        } else if mapped || replaced == Some(Made::Mapped) {
            Made::Mapped
        } else {
            Made::Direct
        };
        info!(peer = %peer, remote = %info.remote, initiated = info.initiated, made = made.name(), "tunnel up");
        // First-hand: the peer's own word, over its authenticated tunnel. Loopback is taken
        // only from a peer on this host.
        let local = info.remote.ip().to_canonical().is_loopback();
        let endpoints: Vec<SocketAddr> = info
            .hello
            .endpoints
            .iter()
            .filter(|a| usable_endpoint(a, local))
            .copied()
            .collect();
        if endpoints.len() < info.hello.endpoints.len() {
            self.counters.peer_addresses_refused +=
                u64::try_from(info.hello.endpoints.len() - endpoints.len()).unwrap_or(u64::MAX);
        }
        if !endpoints.is_empty() {
            self.cache.record_seen(peer, endpoints, now.unix_u64());
        }
        if info.hello.country.is_some() {
            self.cache.set_country(peer, info.hello.country.clone());
        }
        if let Some(seen) = info.hello.observed {
            self.reach.observed(peer, seen, local);
        }
        self.cache.record_success(peer, now.unix_u64());
        self.by_prefix.insert(peer, tunnel);
        self.by_iface.insert(iface, tunnel);
        self.tunnels.insert(
            tunnel,
            TunnelEntry {
                iface,
                peer_prefix: peer,
                neighbour,
                initiated: info.initiated,
                peer_params: info.hello.params_version,
                peer_serial: info.peer_serial,
                peer_name: None,
                peer_not_after: info.peer_not_after,
                remote: info.remote,
                rtt: Duration::ZERO,
                last_params_answer: None,
                held: false,
                made,
            },
        );
        if self.net.crl_wanted() {
            // Fail closed: the CRL the parameters name may revoke this peer. Until it is
            // here the tunnel carries only control messages (which can bring the CRL).
            if let Some(t) = self.tunnels.get_mut(&tunnel) {
                t.held = true;
            }
            self.counters.tunnels_held += 1;
            info!(%peer, "tunnel held until the CRL the parameters name arrives");
            self.actions.push_back(Action::Hold { tunnel });
            self.send_control(tunnel, ControlMsg::ParamsRequest);
        } else {
            self.actions.push_back(Action::Activate { tunnel, iface });
        }
        // Parameters: the older side pulls from the newer one, and the newer side pushes
        // too — the hello was written before the handshake finished, so parameters applied
        // in between would otherwise reach this neighbour only with the next change.
        let (theirs, mine) = (info.hello.params_version, self.net.params().version);
        if theirs > mine && !self.net.crl_wanted() {
            self.send_control(tunnel, ControlMsg::ParamsRequest);
        } else if theirs < mine {
            let m = self.params_message();
            if let Some(t) = self.tunnels.get_mut(&tunnel) {
                t.peer_params = mine;
            }
            self.send_control(tunnel, m);
        }
        // Share the peers we know.
        let peers: Vec<PeerAddr> = self
            .cache
            .iter()
            // only what we know first-hand: hearsay travels one hop at most
            .filter(|(p, e)| **p != peer && e.failures == 0 && e.heard_from.is_none())
            .take(PEERS_SHARED)
            .map(|(p, e)| PeerAddr {
                prefix: *p,
                endpoints: e.endpoints.clone(),
                country: e.country.clone(),
            })
            .chain((!self.my_endpoints.is_empty()).then(|| PeerAddr {
                prefix: self.prefix,
                endpoints: self.my_endpoints.clone(),
                country: self.country.clone(),
            }))
            .collect();
        self.send_control(tunnel, ControlMsg::Peers { peers });
        self.snapshot_dirty = true;
    }

    pub(super) fn tunnel_down(&mut self, now: Now, tunnel: TunnelId, why: &str) {
        let Some(t) = self.tunnels.remove(&tunnel) else {
            return;
        };
        let _ = self.engine.remove_neighbour(now.time, t.neighbour);
        let _ = self.engine.remove_interface(now.time, t.iface);
        self.by_iface.remove(&t.iface);
        if self.by_prefix.get(&t.peer_prefix) == Some(&tunnel) {
            self.by_prefix.remove(&t.peer_prefix);
            self.reach.forget(&t.peer_prefix);
            self.tm.tunnel_down(now.time, t.peer_prefix);
            if self.static_peers.contains_key(&t.peer_prefix) && t.peer_prefix < self.prefix {
                self.static_retry
                    .insert(t.peer_prefix, now.time + STATIC_DIAL_DEFER);
            }
        }
        self.later.retain(|_, job| match job {
            Later::KillAnswer(id, _) | Later::KillClose(id) | Later::CloseReplaced(id) => {
                *id != tunnel
            }
        });
        info!(peer = %t.peer_prefix, why, "tunnel down");
        self.snapshot_dirty = true;
    }

    /// Peer addresses from the registry (`from: None`: first-hand, the registry checked
    /// them when the peer reported them) or from a neighbour's `Peers` message (hearsay:
    /// bounded per neighbour, never overwriting what we know; see [`PeerCache::record_hearsay`]).
    pub(super) fn learn_peers(&mut self, now: Now, peers: Vec<PeerAddr>, from: Option<TunnelId>) {
        let network = self.net.params().network;
        let informant = match from {
            None => None,
            Some(id) => match self.tunnels.get(&id) {
                Some(t) => Some((t.peer_prefix, t.remote.ip().to_canonical().is_loopback())),
                None => return,
            },
        };
        for p in peers.into_iter().take(MAX_PEERS_PER_MESSAGE) {
            if p.prefix == self.prefix || !network.contains(&p.prefix) || p.endpoints.is_empty() {
                continue;
            }
            let allow_loopback = informant.is_none_or(|(_, local)| local);
            let n = p.endpoints.len();
            let endpoints: Vec<SocketAddr> = p
                .endpoints
                .into_iter()
                .filter(|a| usable_endpoint(a, allow_loopback))
                .collect();
            if endpoints.len() < n {
                self.counters.peer_addresses_refused +=
                    u64::try_from(n - endpoints.len()).unwrap_or(u64::MAX);
            }
            if endpoints.is_empty() {
                continue;
            }
            let taken = match informant {
                None => {
                    self.cache.record_seen(p.prefix, endpoints, now.unix_u64());
                    true
                }
                Some((source, _)) => {
                    match self
                        .cache
                        .record_hearsay(source, p.prefix, endpoints, now.unix_u64())
                    {
                        Hearsay::Added | Hearsay::Replaced => true,
                        Hearsay::Kept => false,
                        Hearsay::OverBudget => {
                            self.counters.hearsay_over_budget += 1;
                            false
                        }
                    }
                }
            };
            if taken && let Some(c) = p.country.filter(|c| valid_country(c)) {
                self.cache.set_country(p.prefix, Some(c));
            }
        }
    }

    pub(super) fn control_message(&mut self, now: Now, tunnel: TunnelId, msg: ControlMsg) {
        if !self.tunnels.contains_key(&tunnel) {
            return;
        }
        match msg {
            ControlMsg::Peers { peers } => self.learn_peers(now, peers, Some(tunnel)),
            ControlMsg::ParamsRequest => {
                let version = self.net.params().version;
                let Some(t) = self.tunnels.get_mut(&tunnel) else {
                    return;
                };
                if t.last_params_answer
                    .is_some_and(|l| now.time.saturating_since(l) < PARAMS_ANSWER_INTERVAL)
                {
                    self.counters.params_requests_ignored += 1;
                    return;
                }
                t.last_params_answer = Some(now.time);
                t.peer_params = t.peer_params.max(version);
                let m = self.params_message();
                self.send_control(tunnel, m);
            }
            ControlMsg::Params { params, crl } => {
                use base64::Engine as _;
                let signed = match SignedParams::from_json(&params) {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(error = %e, "malformed parameters from a neighbour");
                        self.counters.offers_refused += 1;
                        return;
                    }
                };
                let crl =
                    crl.and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok());
                self.offer(now, Some(signed), crl, Some(tunnel));
            }
            ControlMsg::KillRequest => {
                // The end of the peer's lock cycle: agree unless the tunnel manager says
                // this is our last tunnel, or the peer is one we were told to keep (--peer).
                let Some(t) = self.tunnels.get(&tunnel) else {
                    return;
                };
                let (peer, neighbour) = (t.peer_prefix, t.neighbour);
                let accepted = !self.static_peers.contains_key(&peer)
                    && self.tm.on_kill_request(now.time, peer);
                if !accepted {
                    self.send_control(tunnel, ControlMsg::KillResponse { accepted });
                    return;
                }
                info!(%peer, "tunnel retired at the peer's request");
                // Our side of the lock: a soft lock first, so that Babel keeps the route
                // while it asks for a seqno that makes the way around feasible (a hard lock
                // now would retract it: starvation until the new seqno arrives). The answer
                // waits until no selected route uses the tunnel (see `Later::KillAnswer`).
                let _ =
                    self.engine
                        .set_cost_multiplier(now.time, neighbour, CostMultiplier::SOFT_LOCK);
                self.schedule(
                    now.time + KILL_ANSWER_DELAY,
                    Later::KillAnswer(tunnel, now.time),
                );
            }
            ControlMsg::KillResponse { accepted } => {
                if let Some(t) = self.tunnels.get(&tunnel) {
                    let peer = t.peer_prefix;
                    self.tm.on_kill_response(now.time, peer, accepted);
                }
            }
            ControlMsg::Hello {
                endpoints,
                observed,
                ..
            } => {
                // A repeated hello: the neighbour's candidates changed, or it tells us
                // where it sees us now. First-hand, validated as in `tunnel_up`.
                let Some(t) = self.tunnels.get(&tunnel) else {
                    return;
                };
                let (peer, local) = (t.peer_prefix, t.remote.ip().to_canonical().is_loopback());
                let n = endpoints.len();
                let usable: Vec<SocketAddr> = endpoints
                    .into_iter()
                    .filter(|a| usable_endpoint(a, local))
                    .collect();
                if usable.len() < n {
                    self.counters.peer_addresses_refused +=
                        u64::try_from(n - usable.len()).unwrap_or(u64::MAX);
                }
                if !usable.is_empty() {
                    self.cache.record_seen(peer, usable, now.unix_u64());
                }
                if let Some(seen) = observed {
                    self.reach.observed(peer, seen, local);
                }
            }
            m @ (ControlMsg::CertRequest { .. } | ControlMsg::Cert { .. }) => {
                self.origin_control(now, tunnel, m)
            }
        }
    }

    pub(super) fn housekeeping(&mut self, now: Now) {
        self.lan_expire(now);
        self.maybe_renew(now);
        // The parameters name a CRL we lack (no neighbour had it): ask the registry
        // (rate-limited there).
        if self.registry_fetch_pending || self.net.crl_wanted() {
            self.fetch_from_registry(now);
        }
        if self.net.crl_wanted() {
            self.ask_neighbours_for_crl(now);
        }
        self.close_expired(now);
        self.maybe_bootstrap(now);
        // Dial: peers given with --peer are always kept connected; the tunnel manager
        // chooses the others. A dial gives up within the tunnel idle timeout per address.
        let by_prefix = &self.by_prefix;
        self.dialing.retain(|p, started| {
            now.time.saturating_since(*started) < DIAL_TIMEOUT && !by_prefix.contains_key(p)
        });
        if !self.down {
            let statics: Vec<(Ipv6Net, SocketAddr)> = self
                .static_peers
                .iter()
                .filter(|(p, _)| {
                    **p != self.prefix
                        && !self.by_prefix.contains_key(p)
                        && !self.dialing.contains_key(p)
                        && self.static_retry.get(p).is_none_or(|t| *t <= now.time)
                })
                .map(|(p, a)| (*p, *a))
                .collect();
            for (peer, addr) in statics {
                self.dial(now, peer, vec![addr]);
            }
            self.run_tunnel_manager(now);
        }
        if self.cache.is_dirty()
            && now.time.saturating_since(self.cache_saved) >= CACHE_SAVE_INTERVAL
        {
            self.actions
                .push_back(Action::SavePeerCache(self.cache.to_json()));
            self.cache.mark_saved();
            self.cache_saved = now.time;
        }
        self.snapshot_dirty = true;
    }

    /// Asks the registry for bootstrap peers: at once, then after 2, 4, 8 s, then every
    /// [`BOOTSTRAP_INTERVAL`] while nobody is
    /// known and no tunnel is up, and every [`BOOTSTRAP_TOP_UP_INTERVAL`] while the peer cache
    /// holds fewer peers to dial than the tunnel manager wants. Without the second, nodes that
    /// started together can stay in islands that only know each other (found in the
    /// simulator: 8 nodes, two islands, forever).
    pub(super) fn maybe_bootstrap(&mut self, now: Now) {
        if self.down {
            return;
        }
        let unix = now.unix_u64();
        let isolated = self.tunnels.is_empty()
            && self.dialing.is_empty()
            && self.cache.candidates(unix, 1, &mut self.rng).is_empty();
        let want = usize::try_from(self.net.params().tunnel.client_count).unwrap_or(usize::MAX);
        if !isolated {
            self.isolated_asks = 0;
        }
        let interval = if isolated {
            // at once, then 2 s, 4 s, 8 s, then every BOOTSTRAP_INTERVAL: the first node of a network
            // may report its address a moment after the second asked
            (Duration::from_secs(1) * (1u32 << self.isolated_asks.min(4))).min(BOOTSTRAP_INTERVAL)
        } else {
            let (tunnels, statics) = (&self.by_prefix, &self.static_peers);
            let spare = self
                .cache
                .candidates_where(unix, want, &mut self.rng, |p, _| {
                    !tunnels.contains_key(p) && !statics.contains_key(p)
                })
                .len();
            if spare >= want {
                return;
            }
            BOOTSTRAP_TOP_UP_INTERVAL
        };
        if self
            .last_bootstrap
            .is_none_or(|t| now.time.saturating_since(t) >= interval)
        {
            self.last_bootstrap = Some(now.time);
            if isolated {
                self.isolated_asks = self.isolated_asks.saturating_add(1);
            }
            self.actions.push_back(Action::FetchBootstrap);
        }
    }

    /// The addresses of `addrs` that may be dialled for `peer` now (see [`NodeCore::dial`]),
    /// recorded as dialled for it.
    pub(super) fn limit_addrs(
        &mut self,
        now: Now,
        peer: Ipv6Net,
        addrs: Vec<SocketAddr>,
    ) -> Vec<SocketAddr> {
        let limited = !self.static_peers.contains_key(&peer);
        let n = addrs.len();
        let addrs: Vec<SocketAddr> = if limited {
            addrs
                .into_iter()
                .filter(|a| {
                    self.dialled_addrs.get(a).is_none_or(|(p, t)| {
                        *p == peer || now.time.saturating_since(*t) >= DIAL_ADDR_INTERVAL
                    })
                })
                .collect()
        } else {
            addrs
        };
        if addrs.len() < n {
            self.counters.dials_rate_limited += 1;
        }
        if limited && !addrs.is_empty() {
            if self.dialled_addrs.len() >= MAX_DIALLED_ADDRS {
                self.dialled_addrs
                    .retain(|_, (_, t)| now.time.saturating_since(*t) < DIAL_ADDR_INTERVAL);
            }
            if self.dialled_addrs.len() < MAX_DIALLED_ADDRS {
                for a in &addrs {
                    self.dialled_addrs.insert(*a, (peer, now.time));
                }
            }
        }
        addrs
    }

    /// Dials `peer`. An address dialled for another peer within [`DIAL_ADDR_INTERVAL`] is
    /// left out (many prefixes pointed at one victim address by false hearsay must not turn
    /// the mesh into a handshake flood against it); `--peer` and LAN addresses are not
    /// limited. Returns false when no address is left: nothing was dialled.
    pub(super) fn dial(&mut self, now: Now, peer: Ipv6Net, addrs: Vec<SocketAddr>) -> bool {
        let addrs = self.limit_addrs(now, peer, addrs);
        if addrs.is_empty() {
            return false;
        }
        self.dialing.insert(peer, now.time);
        self.actions.push_back(Action::Dial { peer, addrs });
        true
    }

    /// A mesh split in parts that cannot route to each other heals itself (issue 14): the
    /// tunnel manager picks among the nodes Babel can route to, so a part whose nodes have
    /// their tunnels among themselves never tries the others. Every [`EXPLORE_INTERVAL`],
    /// while no dial is in flight, one known node (the peer cache: the registry's bootstrap
    /// answers, neighbours) that has no selected route and is not in its failure back-off is
    /// dialled. In a joined mesh every known live node is routed and nothing happens; a dead
    /// entry costs one handshake per back-off period (30 s doubling to an hour).
    pub(super) fn explore(&mut self, now: Now) {
        if self.down
            || !self.dialing.is_empty()
            || self
                .last_explore
                .is_some_and(|t| now.time.saturating_since(t) < EXPLORE_INTERVAL)
        {
            return;
        }
        let node_len = self.net.params().node_prefix_len;
        let routed: std::collections::BTreeSet<Ipv6Net> = self
            .engine
            .selected_routes()
            .filter_map(|r| match r.prefix.addr() {
                IpAddr::V6(a) if r.prefix.len() == node_len => Ipv6Net::new(a, node_len).ok(),
                _ => None,
            })
            .collect();
        let (me, tunnels, statics) = (self.prefix, &self.by_prefix, &self.static_peers);
        let Some(p) = self
            .cache
            .candidates_where(now.unix_u64(), 1, &mut self.rng, |p, _| {
                *p != me
                    && !tunnels.contains_key(p)
                    && !statics.contains_key(p)
                    && !routed.contains(p)
            })
            .into_iter()
            .next()
        else {
            return;
        };
        self.last_explore = Some(now.time);
        let addrs = self.cache.endpoints(&p).to_vec();
        if !addrs.is_empty() {
            debug!(peer = %p, "dialling a known node Babel cannot route to");
            self.counters.explore_dials += 1;
            self.dial(now, p, addrs);
        }
    }

    /// How many selected routes have this tunnel peer as next hop.
    pub(super) fn selected_routes_via(&self, peer: Ipv6Net) -> usize {
        let hop = IpAddr::V6(identity::node_address(&peer));
        self.engine
            .selected_routes()
            .filter(|r| r.next_hop == hop)
            .count()
    }

    /// One round of re6st's tunnel manager over what Babel and the peer cache know now.
    pub(super) fn run_tunnel_manager(&mut self, now: Now) {
        let by_addr: BTreeMap<IpAddr, Ipv6Net> = self
            .tunnels
            .values()
            .map(|t| {
                (
                    IpAddr::V6(identity::node_address(&t.peer_prefix)),
                    t.peer_prefix,
                )
            })
            .collect();
        let mut via: BTreeMap<Ipv6Net, usize> = BTreeMap::new();
        let mut routable = Vec::new();
        let node_len = self.net.params().node_prefix_len;
        for r in self.engine.selected_routes() {
            if let Some(p) = by_addr.get(&r.next_hop) {
                *via.entry(*p).or_default() += 1;
            }
            if let IpAddr::V6(a) = r.prefix.addr()
                && r.prefix.len() == node_len
                && let Ok(p) = Ipv6Net::new(a, node_len)
                && p != self.prefix
                && !self.by_prefix.contains_key(&p)
                && !self.static_peers.contains_key(&p)
                && !self.cache.endpoints(&p).is_empty()
            {
                routable.push(Candidate {
                    prefix: p,
                    country: self.cache.get(&p).and_then(|e| e.country.clone()),
                });
            }
        }
        // static peers are not the manager's: it neither counts nor retires them
        let routes_via: Vec<(Ipv6Net, usize)> = self
            .tunnels
            .values()
            .filter(|t| !self.static_peers.contains_key(&t.peer_prefix))
            .map(|t| (t.peer_prefix, via.get(&t.peer_prefix).copied().unwrap_or(0)))
            .collect();
        let (tunnels, dialing, statics) = (&self.by_prefix, &self.dialing, &self.static_peers);
        let cached: Vec<Candidate> = self
            .cache
            .candidates_where(now.unix_u64(), 16, &mut self.rng, |p, _| {
                !tunnels.contains_key(p) && !dialing.contains_key(p) && !statics.contains_key(p)
            })
            .into_iter()
            .filter(|p| *p != self.prefix)
            .map(|p| Candidate {
                prefix: p,
                country: self.cache.get(&p).and_then(|e| e.country.clone()),
            })
            .collect();
        self.tm.tick(
            now.time,
            &Observation {
                routes_via: &routes_via,
                routable: &routable,
                cached: &cached,
            },
        );
        self.explore(now);
        while let Some(action) = self.tm.poll_action() {
            let (policy::Action::Dial(p)
            | policy::Action::SoftLock(p)
            | policy::Action::HardLock(p)
            | policy::Action::Unlock(p)
            | policy::Action::SendKillRequest(p)
            | policy::Action::Close(p)) = action;
            let entry = self.by_prefix.get(&p).copied();
            match action {
                policy::Action::Dial(p) => {
                    let addrs = self.cache.endpoints(&p).to_vec();
                    if addrs.is_empty()
                        || self.dialing.contains_key(&p)
                        || self.by_prefix.contains_key(&p)
                    {
                        self.tm.dial_failed(now.time, p);
                    } else {
                        debug!(peer = %p, "tunnel manager: dial");
                        if !self.dial(now, p, addrs) {
                            self.tm.dial_failed(now.time, p);
                        }
                    }
                }
                policy::Action::SoftLock(p)
                | policy::Action::HardLock(p)
                | policy::Action::Unlock(p) => {
                    let m = match action {
                        policy::Action::SoftLock(_) => CostMultiplier::SOFT_LOCK,
                        policy::Action::HardLock(_) => CostMultiplier::HARD_LOCK,
                        _ => CostMultiplier::NORMAL,
                    };
                    if let Some(n) = entry
                        .and_then(|id| self.tunnels.get(&id))
                        .map(|t| t.neighbour)
                    {
                        info!(peer = %p, ?action, "tunnel manager");
                        let _ = self.engine.set_cost_multiplier(now.time, n, m);
                    }
                }
                policy::Action::SendKillRequest(_) => {
                    if let Some(id) = entry {
                        self.send_control(id, ControlMsg::KillRequest);
                    }
                }
                policy::Action::Close(p) => {
                    if let Some(id) = entry {
                        info!(peer = %p, "tunnel manager: retiring the tunnel");
                        self.close(now, id, CloseCode::Retired, "retired by the tunnel manager");
                    }
                }
            }
        }
    }

    /// A neighbour announced itself on a `--lan` interface: kept connected like a `--peer`,
    /// over its link-local address, while it keeps announcing itself. A `--peer` given for
    /// the same prefix keeps its address.
    pub(super) fn lan_peer(&mut self, now: Now, prefix: Ipv6Net, addr: SocketAddrV6) {
        if prefix == self.prefix
            || (self.static_peers.contains_key(&prefix) && !self.lan_heard.contains_key(&prefix))
        {
            return;
        }
        if !self.lan_heard.contains_key(&prefix) && self.lan_heard.len() >= MAX_LAN_NEIGHBOURS {
            self.counters.lan_over_budget += 1;
            return;
        }
        let fresh = self
            .lan_heard
            .insert(prefix, (addr, now.time))
            .is_none_or(|(old, _)| old != addr);
        self.static_peers.insert(prefix, SocketAddr::V6(addr));
        if fresh {
            info!(peer = %prefix, %addr, "LAN neighbour");
            if prefix < self.prefix {
                // Both sides hear each other: the lower prefix dials first, as for --peer.
                self.static_retry
                    .insert(prefix, now.time + STATIC_DIAL_DEFER);
            } else if !self.down
                && !self.by_prefix.contains_key(&prefix)
                && !self.dialing.contains_key(&prefix)
            {
                // Dial now rather than at the next tick.
                self.dial(now, prefix, vec![SocketAddr::V6(addr)]);
            }
        }
    }

    /// Stops dialling LAN neighbours not heard for ten hello intervals (at least 10 s).
    pub(super) fn lan_expire(&mut self, now: Now) {
        let max_age = (self.timers.hello * 10).max(Duration::from_secs(10));
        let gone: Vec<Ipv6Net> = self
            .lan_heard
            .iter()
            .filter(|(_, (_, at))| now.time.saturating_since(*at) > max_age)
            .map(|(p, _)| *p)
            .collect();
        for prefix in gone {
            info!(peer = %prefix, "LAN neighbour silent; no longer dialled");
            self.lan_heard.remove(&prefix);
            self.static_peers.remove(&prefix);
            self.static_retry.remove(&prefix);
        }
    }
}

impl NodeCore {
    /// While the CRL the parameters name is missing, every neighbour is asked for it (a
    /// `ParamsRequest` is answered with the parameters and the CRL the sender holds) at most
    /// every [`CRL_ASK_INTERVAL`].
    fn ask_neighbours_for_crl(&mut self, now: Now) {
        if self
            .last_crl_ask
            .is_some_and(|t| now.time.saturating_since(t) < CRL_ASK_INTERVAL)
        {
            return;
        }
        self.last_crl_ask = Some(now.time);
        let ids: Vec<TunnelId> = self.tunnels.keys().copied().collect();
        for id in ids {
            self.send_control(id, ControlMsg::ParamsRequest);
        }
    }

    /// The CRL in force is the one the parameters name: held tunnels whose peer it does not
    /// revoke start carrying traffic.
    pub(super) fn release_held(&mut self) {
        if self.net.crl_wanted() {
            return;
        }
        for (id, t) in self.tunnels.iter_mut().filter(|(_, t)| t.held) {
            t.held = false;
            info!(peer = %t.peer_prefix, "held tunnel released: the CRL is here");
            self.actions.push_back(Action::Activate {
                tunnel: *id,
                iface: t.iface,
            });
        }
    }

    /// Tunnels whose peer certificate has expired close (the handshake checked validity
    /// only once).
    fn close_expired(&mut self, now: Now) {
        let expired: Vec<TunnelId> = self
            .tunnels
            .iter()
            .filter(|(_, t)| t.peer_not_after <= now.unix)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.counters.peer_certificate_expired += 1;
            self.close(now, id, CloseCode::Expired, "peer certificate expired");
        }
    }
}
