//! Sending for the [`Engine`](super::Engine): Hellos, IHUs, the outbox, updates built at
//! send time (recording the source table), packets, reliable delivery (RFC 8966 3.3).

use super::*;

impl Engine {
    pub(super) fn max_update_interval(&self) -> Duration {
        self.ifaces
            .values()
            .map(|i| i.cfg.timers.update)
            .max()
            .unwrap_or(Duration::from_secs(16))
    }

    pub(super) fn jitter(&mut self, max: Duration) -> Duration {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.next_u64() % (ms.saturating_add(1)))
    }

    pub(super) fn send_hello(&mut self, _now: Time, id: IfaceId) {
        let Some(i) = self.ifaces.get_mut(&id) else {
            return;
        };
        i.hello_seqno = i.hello_seqno.next();
        let msg = Msg::Hello {
            unicast: false,
            seqno: i.hello_seqno,
            interval_cs: to_cs(i.cfg.timers.hello),
            timestamp: i.cfg.timestamps.then_some(micros(self.now)),
        };
        self.queue(id, None, msg);
        self.queue_ihus(id);
    }

    pub(super) fn queue_ihus(&mut self, id: IfaceId) {
        let Some(i) = self.ifaces.get(&id) else {
            return;
        };
        let interval_cs = to_cs(i.cfg.timers.hello);
        let tunnel = i.cfg.is_tunnel();
        let timestamps = i.cfg.timestamps;
        let nids: Vec<(NeighbourId, Option<(u32, u32)>)> = self
            .neighbours
            .iter()
            .filter(|(n, _)| n.iface == id)
            .map(|(n, x)| (*n, x.hello_ts.filter(|_| timestamps)))
            .collect();
        for (nid, timestamp) in nids {
            let rxcost = self.rxcost(nid);
            let addr = if tunnel { None } else { Some(nid.addr) };
            self.queue(
                id,
                None,
                Msg::Ihu {
                    rxcost,
                    interval_cs,
                    addr,
                    // RFC 9616 section 3.2: echo the neighbour's last Hello timestamp
                    // with the time we received it.
                    timestamp,
                },
            );
        }
    }

    pub(super) fn outgoing(
        &mut self,
        iface: IfaceId,
        dest: Option<IpAddr>,
        due: Time,
    ) -> &mut Outgoing {
        // A tunnel has one destination: keep one queue so messages share packets.
        let tunnel = self.ifaces.get(&iface).is_some_and(|i| i.cfg.is_tunnel());
        let dest = if tunnel { None } else { dest };
        let o = self.outbox.entry((iface, dest)).or_insert(Outgoing {
            msgs: Vec::new(),
            updates: BTreeSet::new(),
            urgent: BTreeSet::new(),
            due,
        });
        o.due = o.due.min(due);
        o
    }

    pub(super) fn queue(&mut self, iface: IfaceId, dest: Option<IpAddr>, msg: Msg) {
        let now = self.now;
        self.outgoing(iface, dest, now).msgs.push(msg);
    }

    /// Queues the update for `prefix` to be sent at once.
    pub(super) fn queue_update(&mut self, iface: IfaceId, dest: Option<IpAddr>, prefix: Prefix) {
        let now = self.now;
        self.outgoing(iface, dest, now).updates.insert(prefix);
    }

    /// Builds the update for `prefix` as this interface should see it: own prefix,
    /// selected route (poisoned on a tunnel towards its own next hop), or a retraction;
    /// records it in the source table.
    pub(super) fn build_update(&mut self, iface: IfaceId, prefix: Prefix) -> Option<Msg> {
        let i = self.ifaces.get(&iface)?;
        let interval_cs = to_cs(i.cfg.timers.update);
        let next_hop = match (prefix.is_ipv4(), &i.cfg.kind) {
            (true, IfaceKind::Lan { ipv4: Some(v4), .. }) => Some(IpAddr::V4(*v4)),
            (true, IfaceKind::Lan { link_local, .. }) => Some(IpAddr::V6(*link_local)),
            _ => None,
        };
        let tunnel = i.cfg.is_tunnel();
        let (rid, seqno, metric, signature) = if self.local.contains(&prefix) {
            let sig = self
                .origin
                .own_signature(prefix, self.router_id, self.seqno);
            (self.router_id, self.seqno, 0, sig)
        } else if let Some((nid, _)) = self.selected.get(&prefix) {
            let r = self.routes.get(&prefix).and_then(|rs| rs.get(nid))?;
            if tunnel && nid.iface == iface {
                (r.router_id, r.seqno, INFINITY, None)
            } else {
                // Relayed as received: the originator's signature goes with it.
                (
                    r.router_id,
                    r.seqno,
                    self.route_metric(*nid, r),
                    r.sig.as_ref().map(|s| s.bytes()),
                )
            }
        } else {
            (self.router_id, self.seqno, INFINITY, None)
        };
        let over = metric < INFINITY
            && !self.local.contains(&prefix)
            && !self.sources.contains_key(&(prefix, rid))
            && !self.budget.admit_source(&self.cfg, self.sources.len());
        // No room to record what we announce: announce a retraction, which needs none.
        let metric = if over { INFINITY } else { metric };
        if metric < INFINITY {
            let gc = self.sources_gc_time();
            let s = self
                .sources
                .entry((prefix, rid))
                .or_insert(Source { seqno, metric, gc });
            if seqno.newer_than(s.seqno) {
                s.seqno = seqno;
                s.metric = metric;
            } else if seqno == s.seqno && metric < s.metric {
                s.metric = metric;
            }
            s.gc = gc;
        }
        Some(Msg::Update {
            prefix,
            router_id: rid,
            seqno,
            metric,
            interval_cs,
            next_hop,
            signature: signature.filter(|_| metric < INFINITY),
        })
    }

    pub(super) fn sources_gc_time(&self) -> Time {
        self.now + SOURCE_GC
    }

    pub(super) fn full_update(&mut self, iface: IfaceId, dest: Option<IpAddr>) {
        let mut prefixes: BTreeSet<Prefix> = self.local.clone();
        prefixes.extend(self.selected.keys().copied());
        prefixes.extend(self.retracting.keys().copied());
        for p in prefixes {
            self.queue_update(iface, dest, p);
        }
    }

    /// Announces a change on every interface after the batching delay.
    pub(super) fn triggered_update(&mut self, prefix: Prefix) {
        self.announce(prefix, self.now + self.cfg.batch);
    }

    /// Announces a change on every interface at once (route lost: neighbours must stop
    /// using us now).
    /// On interfaces with `acks`, the retraction is sent reliably (RFC 8966 3.3, 3.7.2).
    pub(super) fn urgent_update(&mut self, prefix: Prefix) {
        self.announce(prefix, self.now);
        let ids: Vec<IfaceId> = self.ifaces.keys().copied().collect();
        let now = self.now;
        for id in ids {
            self.outgoing(id, None, now).urgent.insert(prefix);
        }
    }

    pub(super) fn announce(&mut self, prefix: Prefix, due: Time) {
        let ids: Vec<IfaceId> = self.ifaces.keys().copied().collect();
        for id in ids {
            self.outgoing(id, None, due).updates.insert(prefix);
        }
    }

    pub(super) fn take_opaque(&mut self) -> u16 {
        let o = self.next_opaque;
        self.next_opaque = o.wrapping_add(1);
        o
    }

    /// Turns the outbox into packets: one or more per destination, each with its own
    /// packet counter and MAC when a sign key is set. On interfaces with `acks`, urgent
    /// retractions and seqno requests go in packets of their own that carry an
    /// Acknowledgment Request (RFC 8966 3.3).
    pub(super) fn flush(&mut self, now: Time) {
        let (due, later): (BTreeMap<OutKey, Outgoing>, BTreeMap<OutKey, Outgoing>) =
            std::mem::take(&mut self.outbox)
                .into_iter()
                .partition(|(_, o)| o.due <= now);
        self.outbox = later;
        for ((iface, dest), out) in due {
            let Some((acks, tunnel)) = self
                .ifaces
                .get(&iface)
                .map(|i| (i.cfg.acks, i.cfg.is_tunnel()))
            else {
                continue;
            };
            let mut msgs = Vec::new();
            let mut reliable = Vec::new();
            for m in out.msgs {
                match m {
                    Msg::SeqnoRequest {
                        prefix,
                        seqno,
                        hop_count,
                        router_id,
                    } if acks && (dest.is_some() || tunnel) => {
                        // Seqno requests are unicast (a tunnel's one queue is unicast too).
                        reliable.push(Reliable::SeqnoRequest {
                            prefix,
                            seqno,
                            hop_count,
                            router_id,
                        })
                    }
                    m => msgs.push(m),
                }
            }
            for p in out.updates {
                if let Some(m) = self.build_update(iface, p) {
                    let retraction = matches!(
                        m,
                        Msg::Update {
                            metric: INFINITY,
                            ..
                        }
                    );
                    if acks && retraction && out.urgent.contains(&p) {
                        reliable.push(Reliable::Update(p));
                    } else {
                        msgs.push(m);
                    }
                }
            }
            self.emit(now, iface, dest, msgs);
            if !reliable.is_empty() {
                self.emit_reliable(now, iface, dest, reliable, ACK_RETRIES);
            }
        }
    }

    /// Sends `items` with an Acknowledgment Request, in packets small enough that each
    /// carries its own request, and waits for every addressed neighbour's Ack (all of the
    /// interface's neighbours for a multicast packet). Unacknowledged packets are resent
    /// unicast after [`ACK_TIMEOUT`], `retries_left` more times.
    pub(super) fn emit_reliable(
        &mut self,
        now: Time,
        iface: IfaceId,
        dest: Option<IpAddr>,
        items: Vec<Reliable>,
        retries_left: u8,
    ) {
        let Some(i) = self.ifaces.get(&iface) else {
            return;
        };
        // An update is at most 56 bytes with uncompressed prefix, Router-Id and Next Hop
        // TLVs (122 with a route signature): keep each chunk well inside one packet.
        let per_update = if self.origin.active() { 128 } else { 64 };
        let per_packet = (i.cfg.max_packet.saturating_sub(96) / per_update).max(1);
        let targets: Vec<NeighbourId> = match (dest, i.cfg.is_tunnel()) {
            (Some(addr), false) => vec![NeighbourId { iface, addr }],
            _ => self
                .neighbours
                .keys()
                .filter(|n| n.iface == iface)
                .copied()
                .collect(),
        };
        for chunk in items.chunks(per_packet) {
            let opaque = self.take_opaque();
            let mut msgs = vec![Msg::AckRequest {
                opaque,
                interval_cs: to_cs(ACK_TIMEOUT),
            }];
            for item in chunk {
                match item {
                    Reliable::Update(p) => {
                        if let Some(m) = self.build_update(iface, *p) {
                            msgs.push(m);
                        }
                    }
                    Reliable::SeqnoRequest {
                        prefix,
                        seqno,
                        hop_count,
                        router_id,
                    } => msgs.push(Msg::SeqnoRequest {
                        prefix: *prefix,
                        seqno: *seqno,
                        hop_count: *hop_count,
                        router_id: *router_id,
                    }),
                }
            }
            self.emit(now, iface, dest, msgs);
            for t in &targets {
                if self.neighbours.contains_key(t) {
                    self.acks.insert(
                        (*t, opaque),
                        PendingAck {
                            items: chunk.to_vec(),
                            deadline: now + ACK_TIMEOUT,
                            retries_left,
                        },
                    );
                }
            }
        }
    }

    /// Resends the packets whose Acknowledgment is overdue, unicast to the neighbour that
    /// did not answer, or gives up after [`ACK_RETRIES`] resends.
    pub(super) fn resend_unacknowledged(&mut self, now: Time) {
        let due: Vec<(NeighbourId, u16)> = self
            .acks
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(a) = self.acks.remove(&key) else {
                continue;
            };
            if a.retries_left > 0 {
                let nid = key.0;
                self.emit_reliable(now, nid.iface, Some(nid.addr), a.items, a.retries_left - 1);
            }
        }
    }

    /// Encodes, signs and queues `msgs` for one destination at once.
    pub(super) fn emit(
        &mut self,
        now: Time,
        iface: IfaceId,
        dest: Option<IpAddr>,
        mut msgs: Vec<Msg>,
    ) {
        if msgs.is_empty() {
            return;
        }
        let Some(i) = self.ifaces.get_mut(&iface) else {
            return;
        };
        let src_ip = i.cfg.local_addr();
        let dst_ip = match (&i.cfg.kind, dest) {
            (IfaceKind::Tunnel { peer, .. }, _) => IpAddr::V6(*peer),
            (_, Some(a)) => a,
            (_, None) => IpAddr::V6(BABEL_MULTICAST),
        };
        let src = SocketAddr::new(src_ip, BABEL_PORT);
        let dst = SocketAddr::new(dst_ip, BABEL_PORT);
        // Link-level and authentication TLVs first, then the rest in queue order.
        msgs.sort_by_key(|m| match m {
            Msg::ChallengeRequest { .. } | Msg::ChallengeReply { .. } => 0,
            Msg::Hello { .. } => 1,
            Msg::Ihu { .. } => 2,
            _ => 3,
        });
        let signing = self.keys.sign.clone();
        if signing.is_some() && i.tx.counter > u32::MAX - 0x10000 {
            // Far from wrapping: switch to a fresh index (RFC 8967 4.1).
            let mut index = vec![0u8; mac::INDEX_LEN];
            self.rng.fill_bytes(&mut index);
            i.tx = PcState { index, counter: 0 };
        }
        let pc = if signing.is_some() {
            Some(&mut i.tx)
        } else {
            None
        };
        let packets = match codec::encode(
            &msgs,
            src_ip,
            i.cfg.max_packet,
            usize::from(signing.is_some()),
            pc,
        ) {
            Ok(p) => p,
            Err(_) => return, // only a local bug can get here: nothing sensible to send
        };
        for mut bytes in packets {
            let signed = signing.as_ref().is_none_or(|key| {
                wire::mac::sign_vec(&mut bytes, &mac::pseudo(src, dst), key.bytes()).is_ok()
            });
            if !signed {
                continue;
            }
            self.transmits.push_back(Transmit {
                iface,
                src,
                dst,
                bytes,
                at: now,
            });
        }
    }
}
