//! The receive-side replay window (RFC 6479): a 2048-bit bitmap of the counters seen below
//! the highest one, kept as a ring of 64-bit blocks so that sliding forward clears whole
//! blocks instead of shifting bits. Sans-IO.

/// Bits in the window: a counter more than this far below the highest seen is refused.
pub const WINDOW_BITS: u64 = 2048;
const BLOCK_BITS: u64 = 64;
/// One block more than the window, so the block of the highest counter never overlaps the
/// oldest accepted one (RFC 6479 §2).
const BLOCKS: usize = (WINDOW_BITS / BLOCK_BITS) as usize + 1;

/// Counters seen on one session's receive direction.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    blocks: [u64; BLOCKS],
    /// Highest counter accepted + 1 (0: none yet).
    next: u64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            blocks: [0; BLOCKS],
            next: 0,
        }
    }
}

impl ReplayWindow {
    /// True when `counter` may be new: above the window's floor and not seen. Does not
    /// record it: the caller checks, authenticates the packet, then [`ReplayWindow::accept`]s.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= self.next {
            return true;
        }
        if self.next - counter > WINDOW_BITS {
            return false;
        }
        let (block, bit) = Self::slot(counter);
        self.blocks[block] & (1 << bit) == 0
    }

    /// Records `counter` (authenticated); false when it was a replay or too old after all.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            let top = self.next.checked_sub(1).map(|c| c / BLOCK_BITS);
            let new_top = counter / BLOCK_BITS;
            // Clear the blocks the window slides over (at most all of them).
            let first = top.map_or(0, |t| t + 1);
            let clear = new_top
                .saturating_sub(first)
                .saturating_add(1)
                .min(BLOCKS as u64);
            if top.is_none_or(|t| new_top > t) {
                for i in 0..clear {
                    let b = ((new_top - i) % BLOCKS as u64) as usize;
                    self.blocks[b] = 0;
                }
            }
            self.next = counter + 1;
        }
        let (block, bit) = Self::slot(counter);
        self.blocks[block] |= 1 << bit;
        true
    }

    fn slot(counter: u64) -> (usize, u64) {
        (
            ((counter / BLOCK_BITS) % BLOCKS as u64) as usize,
            counter % BLOCK_BITS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_out_of_order_duplicates_and_too_old() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(0));
        assert!(!w.accept(0), "duplicate");
        assert!(w.accept(5));
        assert!(w.accept(3), "late but inside the window");
        assert!(!w.accept(3));
        assert!(w.accept(1));
        assert!(w.accept(10_000));
        assert!(!w.check(10_000 - WINDOW_BITS), "below the window");
        assert!(
            w.accept(10_000 - WINDOW_BITS + 1),
            "the oldest counter still inside"
        );
        assert!(!w.accept(10_000 - WINDOW_BITS + 1));
        assert!(w.accept(9_999));
        assert!(!w.accept(5), "old counters are gone with the slide");
    }

    #[test]
    fn a_slide_clears_stale_bits() {
        let mut w = ReplayWindow::default();
        for c in 0..3000 {
            assert!(w.accept(c), "{c}");
        }
        // Jump by exactly one ring's worth: the blocks reused must not remember old bits.
        let far = 2999 + (BLOCKS as u64) * BLOCK_BITS;
        assert!(w.accept(far));
        for c in far - WINDOW_BITS + 1..far {
            assert!(w.check(c), "{c} wrongly seen");
        }
        // A jump by less than a block keeps the neighbours' bits.
        assert!(w.accept(far + 3));
        assert!(!w.check(far));
        assert!(w.check(far + 1));
    }

    #[test]
    fn matches_a_set_model_on_a_random_walk() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top: Option<u64> = None;
        for _ in 0..200_000 {
            let base = top.unwrap_or(0);
            let c = match rng.random_range(0..10) {
                0 => base + rng.random_range(0..5000),
                1..=5 => base.saturating_sub(rng.random_range(0..2200)),
                _ => base + rng.random_range(0..3),
            };
            let fresh = !seen.contains(&c) && top.is_none_or(|t| c + WINDOW_BITS > t);
            assert_eq!(w.accept(c), fresh, "counter {c}, top {top:?}");
            if fresh {
                seen.insert(c);
                top = Some(top.map_or(c, |t| t.max(c)));
            }
        }
    }
}
