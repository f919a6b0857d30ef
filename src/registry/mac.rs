//! The Babel MAC key cycle (CONVENTIONS "Network parameters", seed 001 "HMAC for Babel").
//!
//! Three slots k0, k1, k2 (re6st's babel_hmac0/1/2). The lowest filled slot is the **sign**
//! key, the next filled slot the **accept** key; an *empty* key in a slot means "accept
//! unsigned packets" (only used while MAC is being introduced). Each rotation is one step,
//! compatible with the previous state:
//!
//! ```text
//! (sign K1) → (sign K1, accept K2) → (sign K2, accept K1) → (sign K2) → …
//! (no MAC)  → (sign K1, accept unsigned) → (sign K1)
//! ```
//! Sans-IO: the new key's bytes and id come in as arguments.

use crate::params::MacState;

/// A key in a slot.
#[derive(Clone, PartialEq, Eq)]
pub enum Slot {
    /// A real key: id and 32 bytes.
    Key {
        /// Public id (named in the parameters).
        id: String,
        /// Secret bytes.
        bytes: [u8; 32],
    },
    /// The "empty key" of the MAC introduction: accept unsigned packets.
    Unsigned,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Key { id, .. } => write!(f, "Key({id})"),
            Slot::Unsigned => write!(f, "Unsigned"),
        }
    }
}

/// The three registry slots.
pub type Slots = [Option<Slot>; 3];

/// One rotation step; `fresh` is a newly generated key, used only when the step needs one.
pub fn rotate(slots: &Slots, fresh: Slot) -> Slots {
    let [k0, k1, _k2] = slots.clone();
    match (k0, k1) {
        // (sign K1) → (sign K1, accept K2)
        (Some(a), None) => [Some(a), Some(fresh), None],
        // (sign K1, accept K2) → (sign K2, accept K1)
        (Some(a), Some(b)) => [None, Some(b), Some(a)],
        // (sign K2, accept K1 | unsigned) → (sign K2)
        (None, Some(b)) => [Some(b), None, None],
        // (no MAC) → (sign K1, accept unsigned)
        (None, None) => [None, Some(fresh), Some(Slot::Unsigned)],
    }
}

/// The sign/accept state the parameters publish for these slots.
pub fn state(slots: &Slots) -> MacState {
    let mut filled = slots.iter().flatten();
    let mut st = MacState::default();
    match filled.next() {
        Some(Slot::Key { id, .. }) => st.sign = Some(id.clone()),
        Some(Slot::Unsigned) | None => return st,
    }
    match filled.next() {
        Some(Slot::Key { id, .. }) => st.accept = Some(id.clone()),
        Some(Slot::Unsigned) => st.accept_unsigned = true,
        None => {}
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Slot {
        Slot::Key {
            id: format!("K{n}"),
            bytes: [n; 32],
        }
    }

    fn st(sign: Option<&str>, accept: Option<&str>, unsigned: bool) -> MacState {
        MacState {
            sign: sign.map(str::to_owned),
            accept: accept.map(str::to_owned),
            accept_unsigned: unsigned,
        }
    }

    #[test]
    fn three_rotations_follow_the_seed_cycle() {
        let s0: Slots = [Some(key(1)), None, None];
        assert_eq!(state(&s0), st(Some("K1"), None, false));
        let s1 = rotate(&s0, key(2));
        assert_eq!(state(&s1), st(Some("K1"), Some("K2"), false));
        let s2 = rotate(&s1, key(3));
        assert_eq!(state(&s2), st(Some("K2"), Some("K1"), false));
        let s3 = rotate(&s2, key(4));
        assert_eq!(state(&s3), st(Some("K2"), None, false));
        // and the cycle goes on with a new key
        let s4 = rotate(&s3, key(5));
        assert_eq!(state(&s4), st(Some("K2"), Some("K5"), false));
    }

    #[test]
    fn introducing_mac_passes_through_accept_unsigned() {
        let none: Slots = [None, None, None];
        assert_eq!(state(&none), MacState::default());
        let s1 = rotate(&none, key(1));
        assert_eq!(state(&s1), st(Some("K1"), None, true));
        let s2 = rotate(&s1, key(9));
        assert_eq!(state(&s2), st(Some("K1"), None, false));
    }

    #[test]
    fn every_step_keeps_the_previous_sign_key_acceptable() {
        let mut slots: Slots = [Some(key(1)), None, None];
        for n in 2..10 {
            let before = state(&slots);
            slots = rotate(&slots, key(n));
            let after = state(&slots);
            let accepted = [after.sign.clone(), after.accept.clone()];
            assert!(accepted.contains(&before.sign), "{before:?} -> {after:?}");
            // and nodes still in the previous state accept what the new state signs
            let was_accepted = [before.sign.clone(), before.accept.clone()];
            assert!(
                was_accepted.contains(&after.sign),
                "{before:?} -> {after:?}"
            );
        }
    }
}
