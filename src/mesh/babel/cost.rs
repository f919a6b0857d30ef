//! Link quality: Hello history (RFC 8966 appendix A.1) and the link cost algorithms:
//! k-out-of-j with k=2, j=3 for wired-like links (A.2.1), ETX for lossy links (A.2.2),
//! and an RTT-based cost for tunnels in the spirit of RFC 9616.

use std::time::Duration;

use super::msg::INFINITY;
use super::seqno::Seqno;

/// Nominal cost of a wired-like link (babeld's default).
pub const WIRED_NOMINAL: u16 = 96;
/// Nominal ETX unit: a perfect lossy link costs 256.
pub const ETX_UNIT: u16 = 256;

/// The last 16 Hellos of a neighbour, most recent in bit 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelloHistory {
    bits: u16,
    /// How many of the 16 bits carry information (saturates at 16).
    valid: u8,
    expected: Option<Seqno>,
}

impl HelloHistory {
    /// Records a received Hello with seqno `s` (A.1).
    ///
    /// A seqno more than 16 away from the expected one resets the history (the neighbour
    /// restarted). A late Hello that the timer already counted as missed fills its slot.
    pub fn receive(&mut self, s: Seqno) {
        let Some(exp) = self.expected else {
            self.reset(s);
            return;
        };
        let d = s.distance(exp);
        if !(-16..=16).contains(&d) {
            self.reset(s);
        } else if d < 0 {
            // Late: bit k (0 = most recent) is seqno exp-1-k.
            let k = (-d - 1) as u32;
            if k < 16 {
                self.bits |= 1 << k;
            }
        } else {
            for _ in 0..d {
                self.shift(false);
            }
            self.shift(true);
            self.expected = Some(s.next());
        }
    }

    /// The Hello timer fired: the expected Hello did not come.
    pub fn missed(&mut self) {
        if let Some(exp) = self.expected {
            self.shift(false);
            self.expected = Some(exp.next());
        }
    }

    fn reset(&mut self, s: Seqno) {
        self.bits = 1;
        self.valid = 1;
        self.expected = Some(s.next());
    }

    fn shift(&mut self, got: bool) {
        self.bits = (self.bits << 1) | u16::from(got);
        self.valid = (self.valid + 1).min(16);
    }

    /// Raw bits (bit 0 = most recent).
    pub fn bits(&self) -> u16 {
        self.bits
    }

    /// Number of meaningful bits.
    pub fn valid(&self) -> u8 {
        self.valid
    }

    /// No Hello heard in the whole known history.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// 2-out-of-3 rxcost (A.2.1): `nominal` if at least two of the last three Hellos
    /// arrived, infinite otherwise. While fewer than three Hellos are known, every known
    /// one must have arrived (so a new neighbour is usable after its first Hello instead
    /// of its second: discovery is one Hello interval faster).
    pub fn rxcost_two_of_three(&self, nominal: u16) -> u16 {
        let n = u32::from(self.valid.min(3));
        if n == 0 {
            return INFINITY;
        }
        let got = (self.bits & ((1u16 << n) - 1)).count_ones();
        let need = n.min(2);
        if got >= need { nominal } else { INFINITY }
    }

    /// ETX rxcost (A.2.2): `256 / beta` with beta the fraction of Hellos received over the
    /// known history (at most 16).
    pub fn rxcost_etx(&self) -> u16 {
        let got = self.bits.count_ones();
        let n = u32::from(self.valid);
        if got == 0 || n == 0 {
            return INFINITY;
        }
        clamp(u32::from(ETX_UNIT) * n / got)
    }

    /// Fraction of Hellos received as a factor in 1/256 units (256 = no loss); 256 when
    /// nothing is known yet.
    pub fn loss_factor(&self) -> u32 {
        let got = self.bits.count_ones();
        let n = u32::from(self.valid);
        if n == 0 {
            return 256;
        }
        (256 * n).checked_div(got).unwrap_or(u32::MAX)
    }
}

fn clamp(v: u32) -> u16 {
    u16::try_from(v.min(u32::from(INFINITY - 1))).unwrap_or(INFINITY - 1)
}

/// Link cost for the 2-out-of-3 algorithm: infinite unless both directions work, else the
/// larger of the two (both are the nominal cost on a healthy link).
pub fn cost_two_of_three(rxcost: u16, txcost: u16) -> u16 {
    if rxcost == INFINITY || txcost == INFINITY {
        INFINITY
    } else {
        rxcost.max(txcost)
    }
}

/// ETX link cost: `256 / (alpha * beta)` where `alpha = 256 / txcost` and
/// `beta = 256 / rxcost`, i.e. `max(txcost, 256) * rxcost / 256`.
pub fn cost_etx(rxcost: u16, txcost: u16) -> u16 {
    if rxcost == INFINITY || txcost == INFINITY {
        return INFINITY;
    }
    let tx = u32::from(txcost.max(ETX_UNIT));
    clamp(tx * u32::from(rxcost) / u32::from(ETX_UNIT))
}

/// Parameters of the RTT-based tunnel cost (RFC 9616 section 3 style).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttCostParams {
    /// Cost of a perfect tunnel.
    pub base: u16,
    /// RTT at or below which no penalty applies.
    pub rtt_min: Duration,
    /// RTT at or above which the full penalty applies.
    pub rtt_max: Duration,
    /// The full penalty.
    pub max_penalty: u16,
}

impl Default for RttCostParams {
    fn default() -> Self {
        RttCostParams {
            base: WIRED_NOMINAL,
            rtt_min: Duration::from_millis(10),
            rtt_max: Duration::from_millis(120),
            max_penalty: 150,
        }
    }
}

/// RTT penalty: 0 below `rtt_min`, `max_penalty` above `rtt_max`, linear in between.
pub fn rtt_penalty(p: &RttCostParams, rtt: Duration) -> u16 {
    if rtt <= p.rtt_min {
        0
    } else if rtt >= p.rtt_max || p.rtt_max <= p.rtt_min {
        p.max_penalty
    } else {
        let num = (rtt - p.rtt_min).as_micros() * u128::from(p.max_penalty);
        let den = (p.rtt_max - p.rtt_min).as_micros();
        u16::try_from(num / den).unwrap_or(p.max_penalty)
    }
}

/// A finite link cost plus an RTT penalty, saturating below infinity.
pub fn add_penalty(cost: u16, penalty: u16) -> u16 {
    if cost == INFINITY {
        return INFINITY;
    }
    clamp(u32::from(cost) + u32::from(penalty))
}

/// Tunnel cost: `base` scaled by the loss seen in both directions (local Hello history and
/// the peer's ETX-style rxcost from its IHU, when known), plus the RTT penalty.
pub fn cost_tunnel(
    p: &RttCostParams,
    history: &HelloHistory,
    peer_rxcost: Option<u16>,
    rtt: Option<Duration>,
) -> u16 {
    let rx = history.loss_factor();
    if rx == u32::MAX {
        return INFINITY;
    }
    let tx = match peer_rxcost {
        Some(c) if c == INFINITY => return INFINITY,
        Some(c) => u32::from(c.max(ETX_UNIT)),
        None => 256,
    };
    let scaled = u64::from(p.base) * u64::from(rx) * u64::from(tx) / (256 * 256);
    let pen = rtt.map_or(0, |r| rtt_penalty(p, r));
    clamp(
        u32::try_from(scaled)
            .unwrap_or(u32::MAX)
            .saturating_add(u32::from(pen)),
    )
}

/// re6st's tunnel lock: a per-neighbour cost multiplier in 1/256 units, as re6st's babeld
/// control protocol has it: 256 = ×1 (normal), 4096 = ×16 (soft lock: still usable as a
/// last resort), 0 = unusable (hard lock: infinite cost, the neighbour stays a neighbour).
///
/// A literal ×4096 would push every route through the neighbour to metric ≥ 65535, i.e. make
/// the soft lock a hard one; the 1/256 reading keeps the two states distinct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostMultiplier(pub u16);

impl Default for CostMultiplier {
    fn default() -> Self {
        CostMultiplier::NORMAL
    }
}

impl CostMultiplier {
    /// No adjustment.
    pub const NORMAL: CostMultiplier = CostMultiplier(256);
    /// re6st's soft lock (×16).
    pub const SOFT_LOCK: CostMultiplier = CostMultiplier(4096);
    /// re6st's hard lock: unusable.
    pub const HARD_LOCK: CostMultiplier = CostMultiplier(0);

    /// Applies the multiplier to a measured cost, saturating below infinity (except for
    /// the hard lock, which is infinite).
    pub fn apply(self, cost: u16) -> u16 {
        if cost == INFINITY || self.0 == 0 {
            return INFINITY;
        }
        clamp((u32::from(cost) * u32::from(self.0)).div_ceil(256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pattern: &[bool]) -> HelloHistory {
        // pattern[i] = Hello number i arrived; missing ones are detected by the timer.
        let mut h = HelloHistory::default();
        for (i, &got) in pattern.iter().enumerate() {
            if got {
                h.receive(Seqno(i as u16));
            } else {
                h.missed();
            }
        }
        h
    }

    #[test]
    fn two_of_three_tolerates_one_loss_in_three() {
        assert_eq!(hist(&[true]).rxcost_two_of_three(96), 96);
        assert_eq!(hist(&[true, true, true]).rxcost_two_of_three(96), 96);
        assert_eq!(hist(&[true, true, false]).rxcost_two_of_three(96), 96);
        assert_eq!(hist(&[true, false, true]).rxcost_two_of_three(96), 96);
        assert_eq!(
            hist(&[true, true, false, false]).rxcost_two_of_three(96),
            INFINITY
        );
        assert_eq!(
            hist(&[true, false, true, false]).rxcost_two_of_three(96),
            INFINITY
        );
        assert_eq!(cost_two_of_three(96, 96), 96);
        assert_eq!(cost_two_of_three(96, INFINITY), INFINITY);
        assert_eq!(cost_two_of_three(INFINITY, 96), INFINITY);
    }

    #[test]
    fn etx_grows_with_loss_in_either_direction() {
        let perfect = hist(&[true; 16]);
        assert_eq!(perfect.rxcost_etx(), 256);
        let half: Vec<bool> = (0..16).map(|i| i % 2 == 0).collect();
        assert_eq!(hist(&half).rxcost_etx(), 512);
        let quarter: Vec<bool> = (0..16).map(|i| i % 4 == 0).collect();
        assert_eq!(hist(&quarter).rxcost_etx(), 1024);
        assert_eq!(cost_etx(256, 256), 256);
        assert_eq!(cost_etx(512, 256), 512);
        assert_eq!(cost_etx(512, 512), 1024);
        assert_eq!(
            cost_etx(256, 100),
            256,
            "txcost below one is clamped to one"
        );
        assert_eq!(cost_etx(INFINITY, 256), INFINITY);
        let none = hist(&[true, false, false, false]);
        let mut silent = none;
        for _ in 0..16 {
            silent.missed();
        }
        assert_eq!(silent.rxcost_etx(), INFINITY);
    }

    #[test]
    fn late_hello_fills_its_slot_and_restart_resets() {
        let mut h = HelloHistory::default();
        h.receive(Seqno(10));
        h.missed(); // 11 presumed lost
        h.receive(Seqno(11)); // ...but it was only late
        assert_eq!(h.bits() & 0b11, 0b11);
        h.receive(Seqno(500)); // restart
        assert_eq!((h.bits(), h.valid()), (1, 1));
        // wrap-around continuity
        let mut w = HelloHistory::default();
        w.receive(Seqno(0xfffe));
        w.receive(Seqno(0xffff));
        w.receive(Seqno(0));
        assert_eq!((w.bits(), w.valid()), (0b111, 3));
    }

    #[test]
    fn tunnel_cost_adds_rtt_penalty_and_loss() {
        let p = RttCostParams::default();
        let empty = HelloHistory::default();
        assert_eq!(cost_tunnel(&p, &empty, None, None), 96);
        assert_eq!(
            cost_tunnel(&p, &empty, None, Some(Duration::from_millis(5))),
            96
        );
        assert_eq!(
            cost_tunnel(&p, &empty, None, Some(Duration::from_millis(65))),
            96 + 75
        );
        assert_eq!(
            cost_tunnel(&p, &empty, None, Some(Duration::from_secs(1))),
            96 + 150
        );
        assert_eq!(cost_tunnel(&p, &empty, Some(512), None), 192);
        let half: Vec<bool> = (0..16).map(|i| i % 2 == 0).collect();
        assert_eq!(cost_tunnel(&p, &hist(&half), None, None), 192);
        assert_eq!(cost_tunnel(&p, &empty, Some(INFINITY), None), INFINITY);
    }

    #[test]
    fn multiplier_soft_lock_is_times_16_hard_lock_is_infinite() {
        assert_eq!(CostMultiplier::NORMAL.apply(96), 96);
        assert_eq!(CostMultiplier::SOFT_LOCK.apply(96), 96 * 16);
        assert_eq!(CostMultiplier(512).apply(96), 192);
        assert_eq!(CostMultiplier::SOFT_LOCK.apply(60000), INFINITY - 1);
        assert_eq!(CostMultiplier::HARD_LOCK.apply(96), INFINITY);
        assert_eq!(CostMultiplier::SOFT_LOCK.apply(INFINITY), INFINITY);
    }
}
