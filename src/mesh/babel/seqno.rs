//! Babel sequence numbers: 16-bit, compared modulo 2^16 (RFC 8966 section 3.2.1).

use std::cmp::Ordering;
use std::fmt;

/// A 16-bit sequence number with wrap-around comparison.
///
/// `a < b` iff `0 < (b - a) mod 2^16 < 2^15`. Two numbers exactly 2^15 apart are
/// incomparable; [`Seqno::compare`] returns `None` for them and the engine treats such a
/// pair as "not newer" (the conservative choice for feasibility).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Seqno(pub u16);

impl Seqno {
    /// Wrap-around comparison; `None` when the distance is exactly 2^15.
    pub fn compare(self, other: Seqno) -> Option<Ordering> {
        let d = other.0.wrapping_sub(self.0);
        match d {
            0 => Some(Ordering::Equal),
            0x8000 => None,
            d if d < 0x8000 => Some(Ordering::Less),
            _ => Some(Ordering::Greater),
        }
    }

    /// `self` is strictly newer than `other`.
    pub fn newer_than(self, other: Seqno) -> bool {
        self.compare(other) == Some(Ordering::Greater)
    }

    /// `self` is newer than or equal to `other`.
    pub fn at_least(self, other: Seqno) -> bool {
        matches!(
            self.compare(other),
            Some(Ordering::Greater | Ordering::Equal)
        )
    }

    /// The next sequence number (wrapping).
    pub fn next(self) -> Seqno {
        Seqno(self.0.wrapping_add(1))
    }

    /// Signed distance `self - other` in (-2^15, 2^15].
    pub fn distance(self, other: Seqno) -> i32 {
        i32::from(self.0.wrapping_sub(other.0) as i16)
    }
}

impl fmt::Display for Seqno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_across_wrap_around() {
        assert!(Seqno(0).newer_than(Seqno(0xffff)));
        assert!(Seqno(5).newer_than(Seqno(0xfff0)));
        assert!(!Seqno(0xfff0).newer_than(Seqno(5)));
        assert!(Seqno(0x7fff).newer_than(Seqno(0)));
        assert_eq!(Seqno(0x8000).compare(Seqno(0)), None);
        assert!(!Seqno(0x8000).newer_than(Seqno(0)));
        assert!(!Seqno(0).newer_than(Seqno(0x8000)));
        assert!(Seqno(7).at_least(Seqno(7)));
        assert_eq!(Seqno(0xffff).next(), Seqno(0));
        assert_eq!(Seqno(2).distance(Seqno(0xfffe)), 4);
    }

    #[test]
    fn newer_than_is_antisymmetric() {
        for a in (0..=0xffffu16).step_by(97) {
            for b in (0..=0xffffu16).step_by(89) {
                let (a, b) = (Seqno(a), Seqno(b));
                assert!(!(a.newer_than(b) && b.newer_than(a)));
            }
        }
    }
}
