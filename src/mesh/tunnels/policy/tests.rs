//! Unit tests, a multi-node fake world and property tests for the tunnel manager.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ipnet::Ipv6Net;
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;

fn pfx(i: usize) -> Ipv6Net {
    format!("fd00:0:0:{:x}::/64", i + 1).parse().unwrap()
}

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn cands(ids: &[usize]) -> Vec<Candidate> {
    ids.iter().map(|i| Candidate::new(pfx(*i))).collect()
}

fn fast_cfg() -> PolicyConfig {
    PolicyConfig {
        client_count: 3,
        max_clients: 6,
        refresh: Duration::from_secs(10),
        soft_lock_wait: Duration::from_secs(3),
        hard_lock_hold: Duration::from_secs(1),
        lock_timeout: Duration::from_secs(4),
        dial_timeout: Duration::from_secs(2),
        dial_backoff: Duration::from_secs(5),
        isolated_client_count: 2,
        isolated_after: Duration::from_secs(3600),
        closed_countries: Vec::new(),
        my_country: None,
        own_prefix: Some(pfx(0)),
    }
}

fn drain(tm: &mut TunnelManager) -> Vec<Action> {
    std::iter::from_fn(|| tm.poll_action()).collect()
}

/// A manager with outgoing tunnels to peers 1, 2, 3 (established at 0 ms).
fn with_three() -> TunnelManager {
    let mut tm = TunnelManager::new(fast_cfg(), t(0), 7);
    for i in 1..=3 {
        tm.tunnel_up(t(0), pfx(i), true);
    }
    tm
}

#[test]
fn country_rule() {
    let mut c = PolicyConfig {
        closed_countries: vec!["CN".into(), "IR".into()],
        ..PolicyConfig::default()
    };
    // Open country: anyone but closed ones; unknown allowed.
    c.my_country = Some("FR".into());
    assert!(c.country_allows(Some("DE")));
    assert!(c.country_allows(None));
    assert!(!c.country_allows(Some("CN")));
    assert!(!c.country_allows(Some("cn")));
    // Unknown own country behaves as open.
    c.my_country = None;
    assert!(c.country_allows(Some("FR")));
    assert!(!c.country_allows(Some("IR")));
    // Closed country: compatriots only, unknown refused.
    c.my_country = Some("cn".into());
    assert!(c.country_allows(Some("CN")));
    assert!(!c.country_allows(Some("IR")));
    assert!(!c.country_allows(Some("FR")));
    assert!(!c.country_allows(None));
    // No rules: everything.
    let open = PolicyConfig::default();
    assert!(open.country_allows(Some("CN")) && open.country_allows(None));
}

#[test]
fn from_params_copies_the_policy() {
    let p = TunnelPolicy {
        client_count: 4,
        max_clients: 9,
        refresh: 60,
    };
    let r = CountryRules {
        closed: vec!["CN".into()],
    };
    let c = PolicyConfig::from_params(&p, &r, Some(pfx(0)), Some("FR".into()));
    assert_eq!((c.client_count, c.max_clients), (4, 9));
    assert_eq!(c.refresh, Duration::from_secs(60));
    assert_eq!(c.isolated_after, Duration::from_secs(60));
    assert_eq!(c.closed_countries, vec!["CN".to_string()]);
    assert_eq!(c.own_prefix, Some(pfx(0)));
}

#[test]
fn dials_from_the_cache_when_babel_knows_nothing() {
    let mut tm = TunnelManager::new(fast_cfg(), t(0), 1);
    let cached = cands(&[0, 5, 6, 7, 8]);
    tm.tick(
        t(500),
        &Observation {
            cached: &cached,
            ..Observation::default()
        },
    );
    // Own prefix skipped, cache order kept, exactly client_count dials.
    assert_eq!(
        drain(&mut tm),
        vec![
            Action::Dial(pfx(5)),
            Action::Dial(pfx(6)),
            Action::Dial(pfx(7))
        ]
    );
    // Dials in progress count: nothing more.
    tm.tick(
        t(1000),
        &Observation {
            cached: &cached,
            ..Observation::default()
        },
    );
    assert!(drain(&mut tm).is_empty());
}

#[test]
fn prefers_routable_non_neighbours_at_random_then_the_cache() {
    let mut tm = TunnelManager::new(fast_cfg(), t(0), 3);
    tm.tunnel_up(t(0), pfx(1), true);
    let routable = cands(&[1, 2, 3, 4, 5, 6]);
    let cached = cands(&[9]);
    tm.tick(
        t(500),
        &Observation {
            routable: &routable,
            cached: &cached,
            ..Observation::default()
        },
    );
    let a = drain(&mut tm);
    assert_eq!(a.len(), 2);
    for x in &a {
        let Action::Dial(p) = x else { panic!("{x:?}") };
        assert!(*p != pfx(1) && *p != pfx(9), "{a:?}");
    }
    // Only one routable candidate left that is not a neighbour: the cache completes.
    let mut tm = TunnelManager::new(fast_cfg(), t(0), 3);
    tm.tunnel_up(t(0), pfx(1), true);
    let routable = cands(&[1, 2]);
    tm.tick(
        t(500),
        &Observation {
            routable: &routable,
            cached: &cached,
            ..Observation::default()
        },
    );
    assert_eq!(
        drain(&mut tm),
        vec![Action::Dial(pfx(2)), Action::Dial(pfx(9))]
    );
}

#[test]
fn random_choice_depends_on_the_seed_only() {
    let routable = cands(&(1..40).collect::<Vec<_>>());
    let run = |seed| {
        let mut tm = TunnelManager::new(fast_cfg(), t(0), seed);
        tm.tick(
            t(500),
            &Observation {
                routable: &routable,
                ..Observation::default()
            },
        );
        drain(&mut tm)
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

#[test]
fn failed_and_timed_out_dials_back_off() {
    let mut tm = TunnelManager::new(fast_cfg(), t(0), 1);
    let cached = cands(&[5, 6, 7, 8]);
    let obs = Observation {
        cached: &cached,
        ..Observation::default()
    };
    tm.tick(t(0), &obs);
    assert_eq!(drain(&mut tm).len(), 3); // 5, 6, 7
    tm.dial_failed(t(100), pfx(5));
    tm.tunnel_up(t(100), pfx(6), true);
    tm.tick(t(500), &obs);
    // 5 is backing off: 8 instead.
    assert_eq!(drain(&mut tm), vec![Action::Dial(pfx(8))]);
    // 7 and 8 never answer: they time out (dial_timeout 2 s) and back off too.
    tm.tick(t(2600), &obs);
    assert!(drain(&mut tm).is_empty(), "everyone is backing off");
    assert_eq!(tm.dialing(), 0);
    // After the backoff (5 s from 100 ms for 5), candidates are tried again.
    tm.tick(t(5200), &obs);
    assert_eq!(drain(&mut tm), vec![Action::Dial(pfx(5))]);
    // 7 and 8 are out of backoff, 5 timed out again: the two missing dials.
    tm.tick(t(7700), &obs);
    assert_eq!(
        drain(&mut tm),
        vec![Action::Dial(pfx(7)), Action::Dial(pfx(8))]
    );
}

#[test]
fn lock_cycle_exact_sequence() {
    let mut tm = with_three();
    let routable = cands(&[1, 2, 3, 4]);
    let mut routes = vec![(pfx(1), 5), (pfx(2), 1), (pfx(3), 3)];
    let step = |tm: &mut TunnelManager, ms: u64, routes: &[(Ipv6Net, usize)]| {
        tm.tick(
            t(ms),
            &Observation {
                routes_via: routes,
                routable: &routable,
                cached: &[],
            },
        );
        drain(tm)
    };
    // Before the refresh: nothing (the target is met).
    assert!(step(&mut tm, 9_500, &routes).is_empty());
    // Refresh: the tunnel routing the fewest prefixes (2) is soft-locked.
    assert_eq!(
        step(&mut tm, 10_000, &routes),
        vec![Action::SoftLock(pfx(2))]
    );
    assert_eq!(tm.lock_state(&pfx(2)), Some(LockState::SoftLocked));
    // Babel still routes through it: wait.
    assert!(step(&mut tm, 10_500, &routes).is_empty());
    // Babel routed around it: hard lock.
    routes[1].1 = 0;
    assert_eq!(
        step(&mut tm, 11_000, &routes),
        vec![Action::HardLock(pfx(2))]
    );
    // hard_lock_hold (1 s), then the kill request.
    assert!(step(&mut tm, 11_500, &routes).is_empty());
    assert_eq!(
        step(&mut tm, 12_000, &routes),
        vec![Action::SendKillRequest(pfx(2))]
    );
    assert_eq!(tm.lock_state(&pfx(2)), Some(LockState::KillSent));
    // Accepted: close.
    tm.on_kill_response(t(12_100), pfx(2), true);
    assert_eq!(drain(&mut tm), vec![Action::Close(pfx(2))]);
    assert_eq!(tm.lock_state(&pfx(2)), Some(LockState::Closing));
    // No dial while closing: the tunnel still counts.
    assert!(step(&mut tm, 12_500, &routes).is_empty());
    tm.tunnel_down(t(12_600), pfx(2));
    assert_eq!(tm.lock_cycle(), None);
    // Then a new random peer: the only candidate left (not the retired one).
    let routes = vec![(pfx(1), 5), (pfx(3), 3)];
    assert_eq!(step(&mut tm, 13_000, &routes), vec![Action::Dial(pfx(4))]);
    // The next refresh is a full interval after the previous one.
    tm.tunnel_up(t(13_100), pfx(4), true);
    assert!(step(&mut tm, 19_500, &routes).is_empty());
    // At 20 s the only possible replacement is the retired peer, still avoided (one refresh
    // interval): no retirement.
    assert!(step(&mut tm, 20_000, &routes).is_empty());
    // At 30 s it may be dialled again: the new tunnel (no route) is retired.
    assert_eq!(
        step(&mut tm, 30_000, &routes),
        vec![Action::SoftLock(pfx(4))]
    );
}

#[test]
fn soft_lock_times_out_into_hard_lock() {
    let mut tm = with_three();
    let routable = cands(&[1, 2, 3, 4]);
    let routes = [(pfx(1), 2), (pfx(2), 2), (pfx(3), 2)];
    let obs = Observation {
        routes_via: &routes,
        routable: &routable,
        cached: &[],
    };
    tm.tick(t(10_000), &obs);
    // Equal routes: the oldest, then the lowest prefix.
    assert_eq!(drain(&mut tm), vec![Action::SoftLock(pfx(1))]);
    tm.tick(t(12_500), &obs);
    assert!(drain(&mut tm).is_empty());
    tm.tick(t(13_000), &obs); // soft_lock_wait = 3 s
    assert_eq!(drain(&mut tm), vec![Action::HardLock(pfx(1))]);
}

fn to_kill_sent(tm: &mut TunnelManager) -> Ipv6Net {
    let routable = cands(&[1, 2, 3, 4]);
    let obs = Observation {
        routes_via: &[],
        routable: &routable,
        cached: &[],
    };
    tm.tick(t(10_000), &obs);
    tm.tick(t(10_500), &obs);
    tm.tick(t(11_500), &obs);
    let a = drain(tm);
    let Some(Action::SoftLock(p)) = a.first().copied() else {
        panic!("{a:?}")
    };
    assert_eq!(
        a,
        vec![
            Action::SoftLock(p),
            Action::HardLock(p),
            Action::SendKillRequest(p)
        ]
    );
    p
}

#[test]
fn refused_kill_unlocks() {
    let mut tm = with_three();
    let p = to_kill_sent(&mut tm);
    tm.on_kill_response(t(11_600), p, false);
    assert_eq!(drain(&mut tm), vec![Action::Unlock(p)]);
    assert_eq!(tm.lock_cycle(), None);
    // A stray late answer changes nothing.
    tm.on_kill_response(t(11_700), p, true);
    assert!(drain(&mut tm).is_empty());
}

#[test]
fn unanswered_kill_times_out_and_unlocks() {
    let mut tm = with_three();
    let p = to_kill_sent(&mut tm);
    let obs = Observation::default();
    tm.tick(t(15_000), &obs);
    assert!(drain(&mut tm).is_empty());
    tm.tick(t(15_500), &obs); // lock_timeout = 4 s after 11.5 s
    assert_eq!(drain(&mut tm), vec![Action::Unlock(p)]);
    assert_eq!(tm.lock_cycle(), None);
}

#[test]
fn close_that_never_happens_times_out() {
    let mut tm = with_three();
    let p = to_kill_sent(&mut tm);
    tm.on_kill_response(t(11_600), p, true);
    assert_eq!(drain(&mut tm), vec![Action::Close(p)]);
    tm.tick(t(15_700), &Observation::default());
    assert_eq!(drain(&mut tm), vec![Action::Unlock(p)]);
    assert_eq!(tm.live(), 3);
}

#[test]
fn peer_closing_mid_cycle_completes_it() {
    let mut tm = with_three();
    let p = to_kill_sent(&mut tm);
    tm.tunnel_down(t(11_600), p);
    assert_eq!(tm.lock_cycle(), None);
    assert!(drain(&mut tm).is_empty());
}

#[test]
fn replaced_connection_ends_the_cycle() {
    let mut tm = with_three();
    let p = to_kill_sent(&mut tm);
    tm.tunnel_up(t(11_600), p, false);
    assert_eq!(tm.lock_cycle(), None);
    assert_eq!((tm.outgoing(), tm.incoming()), (2, 1));
    tm.on_kill_response(t(11_700), p, true);
    assert!(drain(&mut tm).is_empty());
}

#[test]
fn never_retires_the_last_tunnel() {
    let mut cfg = fast_cfg();
    cfg.client_count = 1;
    let mut tm = TunnelManager::new(cfg, t(0), 1);
    tm.tunnel_up(t(0), pfx(1), true);
    let routable = cands(&[1, 2, 3]);
    for ms in (0..60_000).step_by(500) {
        tm.tick(
            t(ms),
            &Observation {
                routable: &routable,
                ..Observation::default()
            },
        );
    }
    assert!(drain(&mut tm).is_empty());
}

#[test]
fn aborts_when_the_tunnel_becomes_the_only_one() {
    let mut tm = TunnelManager::new(fast_cfg(), t(0), 1);
    tm.tunnel_up(t(0), pfx(1), true);
    tm.tunnel_up(t(0), pfx(2), false);
    let routable = cands(&[1, 2, 5]);
    let routes = [(pfx(1), 1)];
    let obs = Observation {
        routes_via: &routes,
        routable: &routable,
        cached: &[],
    };
    // Target 3, one outgoing: below target, so no retirement, only dials.
    tm.tick(t(10_000), &obs);
    assert_eq!(drain(&mut tm), vec![Action::Dial(pfx(5))]);
    // Make the target 1: the outgoing tunnel is at target and can be retired.
    let mut cfg = fast_cfg();
    cfg.client_count = 1;
    tm.set_config(cfg);
    tm.dial_failed(t(10_100), pfx(5));
    let routable = cands(&[1, 2, 6]);
    let obs = Observation {
        routes_via: &routes,
        routable: &routable,
        cached: &[],
    };
    tm.tick(t(20_000), &obs);
    assert_eq!(drain(&mut tm), vec![Action::SoftLock(pfx(1))]);
    // The incoming tunnel goes: the locked one is the last, keep it.
    tm.tunnel_down(t(20_100), pfx(2));
    tm.tick(t(20_500), &obs);
    assert_eq!(drain(&mut tm), vec![Action::Unlock(pfx(1))]);
    assert_eq!(tm.lock_cycle(), None);
}

#[test]
fn no_retirement_without_a_replacement() {
    let mut tm = with_three();
    let routable = cands(&[1, 2, 3]);
    tm.tick(
        t(10_000),
        &Observation {
            routable: &routable,
            ..Observation::default()
        },
    );
    assert!(drain(&mut tm).is_empty());
}

#[test]
fn kill_requests_keep_one_live_tunnel() {
    let mut tm = TunnelManager::new(fast_cfg(), t(0), 1);
    assert!(!tm.on_kill_request(t(0), pfx(1)), "unknown tunnel");
    tm.tunnel_up(t(0), pfx(1), false);
    assert!(!tm.on_kill_request(t(0), pfx(1)), "only tunnel");
    tm.tunnel_up(t(0), pfx(2), false);
    tm.tunnel_up(t(0), pfx(3), true);
    assert!(tm.on_kill_request(t(1), pfx(1)));
    assert!(tm.on_kill_request(t(1), pfx(1)), "asked twice");
    // 1 is agreed to close: 2 is not the last live one... 3 remains.
    assert!(tm.on_kill_request(t(2), pfx(2)));
    assert!(!tm.on_kill_request(t(3), pfx(3)), "would leave none");
    tm.tunnel_down(t(4), pfx(1));
    tm.tunnel_down(t(4), pfx(2));
    assert_eq!(tm.live(), 1);
}

#[test]
fn kill_request_does_not_count_our_own_victim() {
    let mut tm = TunnelManager::new(fast_cfg(), t(0), 1);
    tm.tunnel_up(t(0), pfx(1), true);
    tm.tunnel_up(t(0), pfx(2), true);
    tm.tunnel_up(t(0), pfx(3), true);
    let p = to_kill_sent(&mut tm);
    let others: Vec<Ipv6Net> = [1, 2, 3].map(pfx).into_iter().filter(|x| *x != p).collect();
    assert!(tm.on_kill_request(t(11_600), others[0]));
    // The last other one must stay: our victim will go.
    assert!(!tm.on_kill_request(t(11_600), others[1]));
}

#[test]
fn accept_incoming_respects_max_clients_and_countries() {
    let mut cfg = fast_cfg();
    cfg.max_clients = 2;
    cfg.closed_countries = vec!["CN".into()];
    let mut tm = TunnelManager::new(cfg, t(0), 1);
    assert!(tm.accept_incoming(pfx(1), None));
    tm.tunnel_up(t(0), pfx(1), false);
    assert!(!tm.accept_incoming(pfx(2), Some("CN")));
    assert!(!tm.accept_incoming(pfx(0), None), "own prefix");
    assert!(tm.accept_incoming(pfx(2), Some("FR")));
    tm.tunnel_up(t(0), pfx(2), false);
    assert!(!tm.accept_incoming(pfx(3), None), "full");
    assert!(tm.accept_incoming(pfx(1), None), "replacing a duplicate");
    // Outgoing tunnels do not use incoming slots.
    tm.tunnel_up(t(0), pfx(4), true);
    tm.tunnel_down(t(0), pfx(1));
    assert!(tm.accept_incoming(pfx(3), None));
}

#[test]
fn closed_country_peers_are_never_dialled() {
    let mut cfg = fast_cfg();
    cfg.closed_countries = vec!["CN".into()];
    cfg.my_country = Some("FR".into());
    let mut tm = TunnelManager::new(cfg, t(0), 1);
    let routable = vec![
        Candidate {
            prefix: pfx(1),
            country: Some("CN".into()),
        },
        Candidate {
            prefix: pfx(2),
            country: Some("DE".into()),
        },
    ];
    let cached = vec![
        Candidate {
            prefix: pfx(3),
            country: Some("CN".into()),
        },
        Candidate::new(pfx(4)),
    ];
    tm.tick(
        t(0),
        &Observation {
            routable: &routable,
            cached: &cached,
            routes_via: &[],
        },
    );
    assert_eq!(
        drain(&mut tm),
        vec![Action::Dial(pfx(2)), Action::Dial(pfx(4))]
    );
}

#[test]
fn isolated_node_keeps_two_outgoing_tunnels() {
    let mut cfg = fast_cfg();
    cfg.client_count = 4;
    cfg.isolated_after = Duration::from_secs(20);
    let mut tm = TunnelManager::new(cfg, t(0), 1);
    for i in 1..=4 {
        tm.tunnel_up(t(0), pfx(i), true);
    }
    let routable = cands(&(1..10).collect::<Vec<_>>());
    let mut closes = 0;
    for ms in (0..200_000).step_by(500) {
        tm.tick(
            t(ms),
            &Observation {
                routable: &routable,
                ..Observation::default()
            },
        );
        for a in drain(&mut tm) {
            match a {
                Action::SendKillRequest(p) => tm.on_kill_response(t(ms), p, true),
                Action::Close(p) => {
                    tm.tunnel_down(t(ms), p);
                    closes += 1;
                }
                Action::Dial(p) => tm.tunnel_up(t(ms), p, true),
                _ => {}
            }
        }
        // Drain the Close queued by on_kill_response.
        for a in drain(&mut tm) {
            if let Action::Close(p) = a {
                tm.tunnel_down(t(ms), p);
                closes += 1;
            }
        }
        if ms < 20_000 {
            assert_eq!(tm.outgoing_target(t(ms)), 4);
        }
    }
    assert!(tm.is_isolated(t(200_000)));
    assert_eq!(tm.outgoing(), 2);
    assert!(closes >= 2);
    // An incoming tunnel restores the full target at once.
    tm.tunnel_up(t(200_000), pfx(20), false);
    assert_eq!(tm.outgoing_target(t(200_000)), 4);
    tm.tick(
        t(200_500),
        &Observation {
            routable: &routable,
            ..Observation::default()
        },
    );
    assert_eq!(drain(&mut tm).len(), 2);
}

// ---------------------------------------------------------------------------------------
// A fake world: N managers, tunnels between them, shortest-path routes with the lock
// multipliers, kill requests over a lossy control channel.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mult {
    Normal,
    Soft,
    Hard,
}

#[derive(Clone, Debug)]
struct WorldCfg {
    nodes: usize,
    policy: PolicyConfig,
    /// Nodes that cannot be dialled (behind NAT).
    unreachable: BTreeSet<usize>,
    countries: Vec<Option<String>>,
    /// Probability (per mille) that a kill request is lost.
    loss_per_mille: u64,
    /// Probability (per mille, per tick) that a random tunnel dies.
    failure_per_mille: u64,
    /// Nodes in the bootstrap cache.
    bootstrap: Vec<usize>,
}

#[derive(Debug)]
enum Msg {
    KillRequest {
        from: usize,
        to: usize,
    },
    KillResponse {
        from: usize,
        to: usize,
        accepted: bool,
    },
    DialResult {
        from: usize,
        to: usize,
    },
}

struct World {
    cfg: WorldCfg,
    now: u64,
    tms: Vec<TunnelManager>,
    /// Undirected tunnels: (dialler, acceptor).
    links: BTreeSet<(usize, usize)>,
    mult: BTreeMap<(usize, usize), Mult>,
    inflight: Vec<(u64, Msg)>,
    rng: ChaCha8Rng,
    /// Every action, by node: the determinism witness.
    log: Vec<(u64, usize, Action)>,
    /// Per (node, peer): where the lock cycle stands as seen from the actions.
    seen: BTreeMap<(usize, usize), LockState>,
    ever_had_tunnel: Vec<bool>,
    /// Each node's peer cache: the bootstrap nodes, what neighbours told it, and what the
    /// "registry" handed out while it had no tunnel.
    known: Vec<BTreeSet<usize>>,
}

const TICK: u64 = 500;

impl World {
    fn new(cfg: WorldCfg, seed: u64) -> World {
        let tms = (0..cfg.nodes)
            .map(|i| {
                let mut p = cfg.policy.clone();
                p.own_prefix = Some(pfx(i));
                p.my_country = cfg.countries.get(i).cloned().flatten();
                TunnelManager::new(p, t(0), seed.wrapping_mul(1000).wrapping_add(i as u64))
            })
            .collect();
        let known = (0..cfg.nodes)
            .map(|i| cfg.bootstrap.iter().copied().filter(|b| *b != i).collect())
            .collect();
        World {
            known,
            ever_had_tunnel: vec![false; cfg.nodes],
            cfg,
            now: 0,
            tms,
            links: BTreeSet::new(),
            mult: BTreeMap::new(),
            inflight: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            log: Vec::new(),
            seen: BTreeMap::new(),
        }
    }

    fn idx(&self, p: Ipv6Net) -> usize {
        (0..self.cfg.nodes).find(|i| pfx(*i) == p).unwrap()
    }

    fn country(&self, i: usize) -> Option<&str> {
        self.cfg.countries.get(i).and_then(|c| c.as_deref())
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains(&(a, b)) || self.links.contains(&(b, a))
    }

    fn neighbours(&self, a: usize) -> Vec<usize> {
        self.links
            .iter()
            .filter_map(|&(x, y)| {
                if x == a {
                    Some(y)
                } else if y == a {
                    Some(x)
                } else {
                    None
                }
            })
            .collect()
    }

    fn tunnels_of(&self, a: usize) -> usize {
        self.neighbours(a).len()
    }

    fn incoming_of(&self, a: usize) -> usize {
        self.links.iter().filter(|(_, y)| *y == a).count()
    }

    fn per_mille(&mut self, p: u64) -> bool {
        self.rng.next_u64() % 1000 < p
    }

    /// Dijkstra from `src` with the multipliers: 1 normal, 16 soft, unusable hard. Returns
    /// the first hop per reachable destination.
    fn routes(&self, src: usize) -> BTreeMap<usize, usize> {
        let n = self.cfg.nodes;
        let mut dist = vec![u64::MAX; n];
        let mut first = vec![usize::MAX; n];
        let mut done = vec![false; n];
        dist[src] = 0;
        for _ in 0..n {
            let Some(u) = (0..n)
                .filter(|i| !done[*i] && dist[*i] != u64::MAX)
                .min_by_key(|i| (dist[*i], *i))
            else {
                break;
            };
            done[u] = true;
            for v in self.neighbours(u) {
                let cost = match self.mult.get(&(u, v)).copied().unwrap_or(Mult::Normal) {
                    Mult::Normal => 1,
                    Mult::Soft => 16,
                    Mult::Hard => continue,
                };
                let d = dist[u] + cost;
                if d < dist[v] {
                    dist[v] = d;
                    first[v] = if u == src { v } else { first[u] };
                }
            }
        }
        (0..n)
            .filter(|i| *i != src && dist[*i] != u64::MAX)
            .map(|i| (i, first[i]))
            .collect()
    }

    fn close(&mut self, a: usize, b: usize) {
        self.links.remove(&(a, b));
        self.links.remove(&(b, a));
        let now = t(self.now);
        for (x, y) in [(a, b), (b, a)] {
            self.mult.remove(&(x, y));
            self.seen.remove(&(x, y));
            self.tms[x].tunnel_down(now, pfx(y));
        }
    }

    fn record(&mut self, node: usize, a: Action) {
        self.log.push((self.now, node, a));
        let peer = |p: Ipv6Net| self.idx(p);
        let locked_here = |w: &World| w.seen.keys().filter(|(x, _)| *x == node).count();
        match a {
            Action::SoftLock(p) => {
                let j = peer(p);
                assert!(self.linked(node, j), "lock of a missing tunnel");
                assert_eq!(locked_here(self), 0, "two lock cycles at once on {node}");
                assert!(
                    self.links.contains(&(node, j)),
                    "only outgoing tunnels are retired"
                );
                assert!(self.seen.insert((node, j), LockState::SoftLocked).is_none());
                self.mult.insert((node, j), Mult::Soft);
            }
            Action::HardLock(p) => {
                let j = peer(p);
                assert_eq!(self.seen.get(&(node, j)), Some(&LockState::SoftLocked));
                self.seen.insert((node, j), LockState::HardLocked);
                self.mult.insert((node, j), Mult::Hard);
            }
            Action::SendKillRequest(p) => {
                let j = peer(p);
                assert_eq!(self.seen.get(&(node, j)), Some(&LockState::HardLocked));
                self.seen.insert((node, j), LockState::KillSent);
                if !self.per_mille(self.cfg.loss_per_mille) {
                    self.inflight
                        .push((self.now + TICK, Msg::KillRequest { from: node, to: j }));
                }
            }
            Action::Close(p) => {
                let j = peer(p);
                assert_eq!(self.seen.get(&(node, j)), Some(&LockState::KillSent));
                assert!(
                    self.tunnels_of(node) >= 2,
                    "closing the last tunnel of {node}"
                );
                self.close(node, j);
            }
            Action::Unlock(p) => {
                let j = peer(p);
                assert!(self.seen.remove(&(node, j)).is_some(), "unlock of unlocked");
                self.mult.insert((node, j), Mult::Normal);
            }
            Action::Dial(p) => {
                let j = peer(p);
                assert_ne!(j, node);
                assert!(!self.linked(node, j), "dial of a neighbour");
                assert!(
                    self.tms[node].config().country_allows(self.country(j)),
                    "dial against the country rule"
                );
                self.inflight
                    .push((self.now + TICK, Msg::DialResult { from: node, to: j }));
            }
        }
    }

    fn deliver(&mut self, m: Msg) {
        let now = t(self.now);
        match m {
            Msg::DialResult { from, to } => {
                let ok = !self.cfg.unreachable.contains(&to)
                    && !self.linked(from, to)
                    && self.tms[to].accept_incoming(pfx(from), self.country(from));
                if ok {
                    self.links.insert((from, to));
                    // Peer exchange on the new tunnel.
                    let all: BTreeSet<usize> = self.known[from]
                        .union(&self.known[to])
                        .copied()
                        .chain([from, to])
                        .collect();
                    for x in [from, to] {
                        self.known[x] = all.iter().copied().filter(|y| *y != x).collect();
                    }
                    self.tms[from].tunnel_up(now, pfx(to), true);
                    self.tms[to].tunnel_up(now, pfx(from), false);
                } else {
                    self.tms[from].dial_failed(now, pfx(to));
                }
            }
            Msg::KillRequest { from, to } => {
                if !self.linked(from, to) {
                    return;
                }
                let accepted = self.tms[to].on_kill_request(now, pfx(from));
                if accepted {
                    // The answering side replies, then closes.
                    assert!(self.tunnels_of(to) >= 2, "{to} accepted to lose its last");
                    if self.rng.next_u64().is_multiple_of(2) {
                        self.tms[from].on_kill_response(now, pfx(to), true);
                        self.drain_node(from);
                    }
                    if self.linked(from, to) {
                        self.close(from, to);
                    }
                } else {
                    self.inflight.push((
                        self.now + TICK,
                        Msg::KillResponse {
                            from: to,
                            to: from,
                            accepted,
                        },
                    ));
                }
            }
            Msg::KillResponse { from, to, accepted } => {
                if self.linked(from, to) {
                    self.tms[to].on_kill_response(now, pfx(from), accepted);
                    self.drain_node(to);
                }
            }
        }
    }

    fn drain_node(&mut self, i: usize) {
        while let Some(a) = self.tms[i].poll_action() {
            self.record(i, a);
        }
    }

    fn step(&mut self) {
        self.now += TICK;
        let now = t(self.now);
        // Messages due.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.inflight)
            .into_iter()
            .partition(|(at, _)| *at <= self.now);
        self.inflight = later;
        for (_, m) in due {
            self.deliver(m);
        }
        // Random failures.
        if self.cfg.failure_per_mille > 0 && !self.links.is_empty() {
            let f = self.cfg.failure_per_mille;
            if self.per_mille(f) {
                let k = (self.rng.next_u64() % self.links.len() as u64) as usize;
                let (a, b) = *self.links.iter().nth(k).unwrap();
                self.close(a, b);
            }
        }
        // A node without tunnels asks the "registry" for a random bootstrap peer.
        for i in 0..self.cfg.nodes {
            if self.tunnels_of(i) == 0 {
                let b = (self.rng.next_u64() % self.cfg.nodes as u64) as usize;
                if b != i {
                    self.known[i].insert(b);
                }
            }
        }
        // Ticks.
        for i in 0..self.cfg.nodes {
            let routes = self.routes(i);
            let mut via: BTreeMap<usize, usize> = BTreeMap::new();
            for hop in routes.values() {
                *via.entry(*hop).or_default() += 1;
            }
            let routes_via: Vec<(Ipv6Net, usize)> =
                via.iter().map(|(h, n)| (pfx(*h), *n)).collect();
            let routable: Vec<Candidate> = routes
                .keys()
                .map(|d| Candidate {
                    prefix: pfx(*d),
                    country: self.country(*d).map(str::to_string),
                })
                .collect();
            let mut known: Vec<usize> = self.known[i].iter().copied().collect();
            for k in (1..known.len()).rev() {
                let j = (self.rng.next_u64() % (k as u64 + 1)) as usize;
                known.swap(k, j);
            }
            let cached: Vec<Candidate> = known
                .into_iter()
                .map(|d| Candidate {
                    prefix: pfx(d),
                    country: self.country(d).map(str::to_string),
                })
                .collect();
            self.tms[i].tick(
                now,
                &Observation {
                    routes_via: &routes_via,
                    routable: &routable,
                    cached: &cached,
                },
            );
            self.drain_node(i);
        }
        self.check();
    }

    fn check(&mut self) {
        for i in 0..self.cfg.nodes {
            let tm = &self.tms[i];
            assert!(
                self.incoming_of(i) <= tm.config().max_clients,
                "max_clients"
            );
            assert_eq!(tm.incoming(), self.incoming_of(i));
            assert_eq!(tm.outgoing() + tm.incoming(), self.tunnels_of(i));
            assert!(tm.lock_cycle().is_none() || self.seen.keys().any(|(x, _)| *x == i));
            for j in self.neighbours(i) {
                assert!(
                    tm.config().country_allows(self.country(j)),
                    "tunnel {i}-{j} breaks the country rule"
                );
            }
            if self.tunnels_of(i) > 0 {
                self.ever_had_tunnel[i] = true;
            } else if self.cfg.failure_per_mille == 0 {
                assert!(!self.ever_had_tunnel[i], "node {i} lost all its tunnels");
            }
        }
    }

    fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.step();
        }
    }

    fn count(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.log.iter().filter(|(_, _, a)| f(a)).count()
    }
}

fn world_cfg(nodes: usize) -> WorldCfg {
    let mut policy = fast_cfg();
    policy.own_prefix = None;
    WorldCfg {
        nodes,
        policy,
        unreachable: BTreeSet::new(),
        countries: Vec::new(),
        loss_per_mille: 0,
        failure_per_mille: 0,
        bootstrap: vec![0],
    }
}

#[test]
fn world_reaches_targets_and_keeps_refreshing() {
    let mut w = World::new(world_cfg(16), 5);
    w.run(2 * 60 * 10); // 10 minutes, 60 refreshes
    for i in 0..16 {
        let tm = &w.tms[i];
        assert!(
            tm.outgoing() + tm.dialing() + 1 >= tm.config().client_count,
            "node {i}: {} out, {} dialing",
            tm.outgoing(),
            tm.dialing()
        );
    }
    let out: usize = w.tms.iter().map(|m| m.outgoing()).sum();
    assert!(out >= 16 * 3 * 9 / 10, "{out} outgoing tunnels");
    // The network is connected: every node routes to every other one.
    for i in 0..16 {
        assert_eq!(w.routes(i).len(), 15, "node {i}");
    }
    // Tunnels were retired and replaced through complete cycles.
    let closes = w.count(|a| matches!(a, Action::Close(_)));
    assert!(closes > 50, "{closes} retirements");
}

#[test]
fn world_with_lost_kill_requests_unlocks_on_timeout() {
    let mut cfg = world_cfg(10);
    cfg.loss_per_mille = 1000;
    let mut w = World::new(cfg, 9);
    w.run(2 * 60 * 5);
    assert_eq!(w.count(|a| matches!(a, Action::Close(_))), 0);
    let kills = w.count(|a| matches!(a, Action::SendKillRequest(_)));
    let unlocks = w.count(|a| matches!(a, Action::Unlock(_)));
    assert!(kills > 10);
    // Every kill request but those still waiting ended in an unlock.
    assert!(
        unlocks + 10 >= kills && unlocks <= kills + 10,
        "{kills} {unlocks}"
    );
}

#[test]
fn world_respects_countries() {
    let mut cfg = world_cfg(12);
    cfg.policy.closed_countries = vec!["CN".into()];
    cfg.countries = (0..12)
        .map(|i| match i % 3 {
            0 => Some("CN".into()),
            1 => Some("FR".into()),
            _ => None,
        })
        .collect();
    cfg.bootstrap = vec![0, 1];
    let mut w = World::new(cfg, 3);
    w.run(2 * 60 * 5);
    // The Chinese nodes form their own mesh, the others theirs.
    for i in (0..12).filter(|i| i % 3 == 0) {
        assert!(w.tunnels_of(i) > 0);
        assert!(w.neighbours(i).iter().all(|j| j % 3 == 0));
    }
    for i in (0..12).filter(|i| i % 3 != 0) {
        assert!(w.tunnels_of(i) > 0);
        assert!(w.neighbours(i).iter().all(|j| j % 3 != 0));
    }
}

#[test]
fn world_unreachable_nodes_keep_two() {
    let mut cfg = world_cfg(12);
    cfg.policy.client_count = 4;
    cfg.policy.isolated_after = Duration::from_secs(30);
    cfg.unreachable = (8..12).collect();
    let mut w = World::new(cfg, 4);
    w.run(2 * 60 * 5);
    for i in 8..12 {
        assert_eq!(w.incoming_of(i), 0);
        assert!(
            w.tms[i].outgoing() <= 2,
            "node {i}: {}",
            w.tms[i].outgoing()
        );
        assert!(w.tms[i].outgoing() >= 1);
    }
}

#[test]
fn world_is_deterministic_for_a_seed() {
    let run = |seed| {
        let mut w = World::new(world_cfg(8), seed);
        w.run(2 * 60 * 2);
        (w.log, w.links)
    };
    let a = run(21);
    assert_eq!(a, run(21));
    assert_ne!(a.0, run(22).0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Any seed, size, loss and failure rate: the world's invariants (checked at every
    /// action and tick) hold: lock sequence, one cycle at a time, never the last tunnel by
    /// policy, max_clients, country rule, dials only to non-neighbours.
    #[test]
    fn world_invariants(
        seed in any::<u64>(),
        nodes in 3usize..12,
        client_count in 1usize..5,
        max_clients in 1usize..8,
        loss in 0u64..600,
        failures in prop_oneof![Just(0u64), 0u64..50],
        unreachable in proptest::collection::btree_set(0usize..12, 0..4),
    ) {
        let mut cfg = world_cfg(nodes);
        cfg.policy.client_count = client_count;
        cfg.policy.max_clients = max_clients;
        cfg.policy.isolated_after = Duration::from_secs(40);
        cfg.loss_per_mille = loss;
        cfg.failure_per_mille = failures;
        cfg.unreachable = unreachable.into_iter().filter(|i| *i != 0).collect();
        let mut w = World::new(cfg, seed);
        w.run(2 * 60 * 3);
    }

    /// One manager fed arbitrary events never dials itself, a neighbour, or beyond its
    /// target, and only closes what a peer agreed to close.
    #[test]
    fn single_manager_events(
        seed in any::<u64>(),
        events in proptest::collection::vec((0u8..7, 1usize..10, any::<bool>()), 1..300),
    ) {
        let mut tm = TunnelManager::new(fast_cfg(), t(0), seed);
        let routable = cands(&(0..10).collect::<Vec<_>>());
        let mut now = 0;
        for (kind, peer, flag) in events {
            now += 300;
            let p = pfx(peer);
            match kind {
                0 => if tm.accept_incoming(p, None) || flag { tm.tunnel_up(t(now), p, flag) },
                1 => tm.tunnel_down(t(now), p),
                2 => tm.dial_failed(t(now), p),
                3 => { let _ = tm.on_kill_request(t(now), p); }
                4 => tm.on_kill_response(t(now), p, flag),
                _ => {
                    let routes: Vec<(Ipv6Net, usize)> =
                        (1..10).map(|i| (pfx(i), (i * 7 + now as usize) % 3)).collect();
                    tm.tick(t(now), &Observation { routes_via: &routes, routable: &routable, cached: &[] });
                    let target = tm.outgoing_target(t(now));
                    let mut dials = 0;
                    let mut locked = BTreeSet::new();
                    if let Some((l, _)) = tm.lock_cycle() { locked.insert(l); }
                    for a in drain(&mut tm) {
                        match a {
                            Action::Dial(d) => {
                                dials += 1;
                                prop_assert!(d != pfx(0));
                                prop_assert!(tm.is_dialing(&d));
                            }
                            Action::Close(_) => prop_assert!(false, "close without a response"),
                            _ => {}
                        }
                    }
                    prop_assert!(dials == 0 || tm.outgoing() + tm.dialing() <= target);
                    prop_assert!(locked.len() <= 1);
                }
            }
            for a in drain(&mut tm) {
                if let Action::Close(c) = a {
                    prop_assert!(tm.lock_state(&c) == Some(LockState::Closing));
                }
            }
        }
    }
}
