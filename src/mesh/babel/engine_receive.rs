//! Packet input of the [`Engine`](super::Engine): checking a received Babel packet's
//! source and MAC (with the challenge for a neighbour whose packet counter is unknown),
//! decoding it, and dispatching its messages (Hellos and IHUs first, then updates,
//! retractions, route and seqno requests and acknowledgments) to the handlers of the
//! other engine modules.

use super::*;

impl Engine {
    /// Handles a received Babel packet. `src`/`dst` are the packet's addresses as the
    /// pseudo-header wants them: on a LAN the real ones, on a tunnel the two nodes'
    /// prefix::1 with port 6696.
    pub fn handle_packet(
        &mut self,
        now: Time,
        iface: IfaceId,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
    ) {
        self.now = self.now.max(now);
        let reject = |e: &mut Self, reason| {
            e.events.push_back(Event::PacketRejected {
                iface,
                src: src.ip(),
                reason,
            })
        };
        let Some(i) = self.ifaces.get(&iface) else {
            return reject(self, Reject::UnknownSource);
        };
        if let IfaceKind::Tunnel { peer, .. } = i.cfg.kind
            && src.ip() != IpAddr::V6(peer)
        {
            return reject(self, Reject::UnknownSource);
        }
        if self.ifaces.values().any(|i| i.cfg.local_addr() == src.ip()) {
            // Our own packet: two of our interfaces share a link (or the link loops back).
            // We are not our own neighbour (RFC 8966 section 3.4: neighbours are other
            // nodes), and our own updates must not be learnt back.
            return reject(self, Reject::UnknownSource);
        }
        let verdict = mac::check(&self.keys, src, dst, bytes);
        match verdict {
            MacVerdict::BadMac => return reject(self, Reject::BadMac),
            MacVerdict::UnsignedRejected => return reject(self, Reject::Unsigned),
            MacVerdict::Malformed => return reject(self, Reject::Malformed),
            _ => {}
        }
        let Ok(decoded) = codec::decode(bytes, src.ip()) else {
            return reject(self, Reject::Malformed);
        };
        let nid = NeighbourId {
            iface,
            addr: src.ip(),
        };
        let multicast = dst.ip().is_multicast();
        if let MacVerdict::Verified(_) = verdict {
            // Challenge Requests are answered before the counter check (RFC 8967 4.3), so
            // a neighbour we do not know yet still learns our index.
            let requests: Vec<Vec<u8>> = decoded
                .msgs
                .iter()
                .filter_map(|m| match m {
                    Msg::ChallengeRequest { nonce } => Some(nonce.clone()),
                    _ => None,
                })
                .collect();
            let reply_to = requests
                .last()
                .filter(|_| self.auth.entry(nid).or_default().may_reply(now));
            if let Some(nonce) = reply_to {
                self.queue(
                    iface,
                    Some(nid.addr),
                    Msg::ChallengeReply {
                        nonce: nonce.clone(),
                    },
                );
                // babeld and BIRD drop what we sent before their challenge completed and
                // do not ask again: give them everything right behind the reply.
                self.full_update(iface, Some(nid.addr));
            }
            let replies: Vec<&[u8]> = decoded
                .msgs
                .iter()
                .filter_map(|m| match m {
                    Msg::ChallengeReply { nonce } => Some(nonce.as_slice()),
                    _ => None,
                })
                .collect();
            let pc = decoded.pc.as_ref().map(|(c, i)| (*c, i.as_slice()));
            let auth = self.auth.entry(nid).or_default();
            match auth.check(now, pc, &replies, multicast) {
                PcVerdict::Accept => {}
                PcVerdict::ChallengeSucceeded => {
                    self.events.push_back(Event::ChallengeSucceeded(nid));
                    // Better than babeld: the packets dropped during the challenge held
                    // routes; ask for all of them now instead of waiting a full interval.
                    self.queue(iface, Some(nid.addr), Msg::RouteRequest { prefix: None });
                }
                PcVerdict::Challenge => {
                    if auth.may_challenge(now) {
                        let mut nonce = vec![0u8; mac::NONCE_LEN];
                        self.rng.fill_bytes(&mut nonce);
                        if let Some(a) = self.auth.get_mut(&nid) {
                            a.challenge = Some((nonce.clone(), now));
                        }
                        self.queue(iface, Some(nid.addr), Msg::ChallengeRequest { nonce });
                    }
                    reject(self, Reject::Challenged);
                    self.flush(now);
                    return;
                }
                PcVerdict::Replay => {
                    reject(self, Reject::Replay);
                    self.flush(now);
                    return;
                }
                PcVerdict::NoCounter => {
                    reject(self, Reject::NoCounter);
                    self.flush(now);
                    return;
                }
            }
        }
        self.handle_messages(now, nid, multicast, decoded.msgs);
        self.flush(now);
    }

    /// Processes the messages of an accepted packet (hellos and IHUs first).
    pub(super) fn handle_messages(
        &mut self,
        now: Time,
        nid: NeighbourId,
        multicast: bool,
        msgs: Vec<Msg>,
    ) {
        let (link, rest): (Vec<Msg>, Vec<Msg>) = msgs
            .into_iter()
            .partition(|m| matches!(m, Msg::Hello { .. } | Msg::Ihu { .. }));
        // RFC 9616 section 3.3: an RTT sample needs the transmit time of a Hello in the
        // same packet as the IHU that echoes ours.
        let hello_ts = link.iter().find_map(|m| match m {
            Msg::Hello { timestamp, .. } => *timestamp,
            _ => None,
        });
        for m in link {
            match m {
                Msg::Hello {
                    unicast,
                    seqno,
                    interval_cs,
                    timestamp,
                } => self.on_hello(now, nid, unicast, seqno, interval_cs, timestamp),
                Msg::Ihu {
                    rxcost,
                    interval_cs,
                    addr,
                    timestamp,
                } => {
                    let sample = timestamp.zip(hello_ts);
                    self.on_ihu(now, nid, rxcost, interval_cs, addr, sample)
                }
                _ => {}
            }
        }
        if !self.neighbours.contains_key(&nid) {
            // Routing information only from neighbours (RFC 8966 3.4).
            return;
        }
        for m in rest {
            match m {
                Msg::Update {
                    prefix,
                    router_id,
                    seqno,
                    metric,
                    interval_cs,
                    next_hop,
                    signature,
                } => {
                    // Reselect at once so that anything queued later in this packet (e.g.
                    // an answer to a request) sees consistent tables.
                    let satisfied = self.requests.get(&(prefix, router_id)).is_some_and(|r| {
                        metric < INFINITY
                            && seqno.at_least(r.seqno)
                            && self.feasible(prefix, router_id, seqno, metric)
                    });
                    if self.on_update(
                        now,
                        nid,
                        prefix,
                        router_id,
                        seqno,
                        metric,
                        interval_cs,
                        next_hop,
                        signature,
                    ) {
                        self.reselect(now, prefix);
                    }
                    if satisfied && self.selected.contains_key(&prefix) {
                        // Whoever asked for this seqno gets it now, not at the next update.
                        self.requests.remove(&(prefix, router_id));
                        self.triggered_update(prefix);
                    }
                }
                Msg::WildcardRetraction { .. } => {
                    let mut hit = Vec::new();
                    let mut earliest = self.route_deadline;
                    for (p, rs) in self.routes.iter_mut() {
                        if let Some(r) = rs.get_mut(&nid) {
                            r.metric = INFINITY;
                            r.expires = now + r.interval() * 2;
                            earliest = earliest.min(r.deadline());
                            hit.push(*p);
                        }
                    }
                    self.route_deadline = earliest;
                    for p in hit {
                        self.reselect(now, p);
                    }
                }
                Msg::RouteRequest { prefix } => {
                    let dest = if multicast { None } else { Some(nid.addr) };
                    match prefix {
                        None => self.full_update(nid.iface, dest),
                        Some(p) => self.queue_update(nid.iface, dest, p),
                    }
                }
                Msg::SeqnoRequest {
                    prefix,
                    seqno,
                    hop_count,
                    router_id,
                } if self.budget.admit_request(&self.cfg, nid, now) => {
                    self.on_seqno_request(now, nid, prefix, seqno, hop_count, router_id)
                }
                Msg::AckRequest { opaque, .. } => {
                    // RFC 8966 3.3 / 4.6.3: always answered, unicast.
                    self.queue(nid.iface, Some(nid.addr), Msg::Ack { opaque });
                }
                Msg::Ack { opaque } => {
                    // RFC 8966 4.6.4: the packet that carried this opaque arrived.
                    self.acks.remove(&(nid, opaque));
                }
                _ => {}
            }
        }
    }
}
