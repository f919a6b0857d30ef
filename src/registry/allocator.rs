//! Prefix allocation: a buddy allocator over the network prefix, as re6st does it.
//!
//! The free space is the set of maximal aligned blocks of the buddy tree that contain no
//! allocated prefix. A request for a /N takes the free block with the **longest** prefix
//! length that can hold it (best fit; lowest address on ties) and splits it down to /N.
//! Freeing is removing a prefix from the used set: buddies merge back implicitly, because
//! free blocks are always recomputed as maximal. Sans-IO: the caller supplies the used set
//! (the registry reads it inside the same SQLite transaction that records the result).

use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

/// Why no prefix can be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The requested length is shorter than the network's or longer than 128.
    #[error("prefix length /{requested} is impossible inside {network}")]
    BadLength {
        /// The network.
        network: Ipv6Net,
        /// The requested length.
        requested: u8,
    },
    /// No free block is large enough.
    #[error("the network {network} has no free /{requested} left")]
    Exhausted {
        /// The network.
        network: Ipv6Net,
        /// The requested length.
        requested: u8,
    },
}

fn block(addr: u128, len: u8) -> Ipv6Net {
    // `len` is always <= 128 here.
    Ipv6Net::new(addr.into(), len).unwrap_or_default()
}

fn overlaps(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(b) || b.contains(a)
}

/// Every maximal free block of the buddy tree rooted at `network`, in address order.
pub fn free_blocks(network: Ipv6Net, used: &[Ipv6Net]) -> Vec<Ipv6Net> {
    let network = network.trunc();
    let mut used: Vec<Ipv6Net> = used
        .iter()
        .filter(|u| overlaps(u, &network))
        .copied()
        .collect();
    used.sort();
    let mut out = Vec::new();
    walk(network, &used, &mut out);
    out
}

fn walk(node: Ipv6Net, used: &[Ipv6Net], out: &mut Vec<Ipv6Net>) {
    let inside: Vec<Ipv6Net> = used
        .iter()
        .filter(|u| overlaps(u, &node))
        .copied()
        .collect();
    if inside.is_empty() {
        out.push(node);
        return;
    }
    if inside.iter().any(|u| u.contains(&node)) || node.prefix_len() >= 128 {
        return;
    }
    let len = node.prefix_len() + 1;
    let base = u128::from(node.network());
    let half = 1u128 << (128 - u32::from(len));
    walk(block(base, len), &inside, out);
    walk(block(base | half, len), &inside, out);
}

/// Chooses a free /`len` inside `network` given the prefixes in use.
pub fn allocate(network: Ipv6Net, used: &[Ipv6Net], len: u8) -> Result<Ipv6Net, AllocError> {
    let network = network.trunc();
    if len < network.prefix_len() || len > 128 {
        return Err(AllocError::BadLength {
            network,
            requested: len,
        });
    }
    let best = free_blocks(network, used)
        .into_iter()
        .filter(|b| b.prefix_len() <= len)
        // longest prefix length first (smallest block that fits), then lowest address
        .min_by(|a, b| {
            b.prefix_len()
                .cmp(&a.prefix_len())
                .then(a.network().cmp(&b.network()))
        });
    match best {
        Some(b) => Ok(block(u128::from(b.network()), len)),
        None => Err(AllocError::Exhausted {
            network,
            requested: len,
        }),
    }
}

/// The lowest address of an IPv4 range that is not in `used` (every node gets one /32 from
/// the network's IPv4 range). The range's first and last addresses (network and broadcast)
/// are never handed out unless the range is a /31 or /32. `None`: the range is full.
pub fn allocate_v4(range: Ipv4Net, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let first = u32::from(range.network());
    let last = u32::from(range.broadcast());
    let (lo, hi) = if range.prefix_len() >= 31 {
        (first, last)
    } else {
        (first + 1, last - 1)
    };
    let taken: std::collections::HashSet<u32> = used.iter().map(|a| u32::from(*a)).collect();
    (lo..=hi).find(|a| !taken.contains(a)).map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_addresses_skip_network_broadcast_and_used() {
        let r: ipnet::Ipv4Net = "10.0.0.0/30".parse().unwrap();
        let a = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
        assert_eq!(allocate_v4(r, &[]), Some(a("10.0.0.1")));
        assert_eq!(allocate_v4(r, &[a("10.0.0.1")]), Some(a("10.0.0.2")));
        assert_eq!(allocate_v4(r, &[a("10.0.0.1"), a("10.0.0.2")]), None);
        let r31: ipnet::Ipv4Net = "10.0.0.0/31".parse().unwrap();
        assert_eq!(allocate_v4(r31, &[]), Some(a("10.0.0.0")));
    }

    #[test]
    fn first_allocation_takes_the_lowest_block() {
        let n = net("fd00:1::/48");
        assert_eq!(allocate(n, &[], 64).unwrap(), net("fd00:1::/64"));
        assert_eq!(
            allocate(n, &[net("fd00:1::/64")], 64).unwrap(),
            net("fd00:1:0:1::/64")
        );
    }

    #[test]
    fn best_fit_prefers_the_smallest_hole() {
        let n = net("fd00::/60");
        // used: /64 #0 and /62 #1 (fd00:0:0:4::/62); the hole at #1 (a /64) is the best fit.
        let used = [net("fd00::/64"), net("fd00:0:0:4::/62")];
        assert_eq!(allocate(n, &used, 64).unwrap(), net("fd00:0:0:1::/64"));
        // a /62 fits neither the /64 hole nor the /63 hole (#2-#3): it splits the free /61 (#8-#15)
        assert_eq!(allocate(n, &used, 62).unwrap(), net("fd00:0:0:8::/62"));
    }

    #[test]
    fn exhausted_and_bad_lengths_are_errors() {
        let n = net("fd00::/63");
        let used = [net("fd00::/64"), net("fd00:0:0:1::/64")];
        assert!(matches!(
            allocate(n, &used, 64),
            Err(AllocError::Exhausted { .. })
        ));
        assert!(matches!(
            allocate(n, &[], 62),
            Err(AllocError::BadLength { .. })
        ));
        assert!(matches!(
            allocate(n, &[], 129),
            Err(AllocError::BadLength { .. })
        ));
    }

    #[test]
    fn freeing_merges_buddies() {
        let n = net("fd00::/62");
        let used = [net("fd00::/64"), net("fd00:0:0:1::/64")];
        assert_eq!(free_blocks(n, &used), vec![net("fd00:0:0:2::/63")]);
        assert_eq!(
            free_blocks(n, &used[..1]),
            vec![net("fd00:0:0:1::/64"), net("fd00:0:0:2::/63")]
        );
        assert_eq!(free_blocks(n, &[]), vec![n]);
    }

    proptest! {
        /// Allocating a random sequence of lengths and freeing random entries never yields an
        /// overlap, and a block is refused only when no free block can hold it.
        #[test]
        fn never_overlaps(ops in proptest::collection::vec((56u8..=66, any::<bool>(), any::<u8>()), 1..80)) {
            let n = net("fd00::/56");
            let mut used: Vec<Ipv6Net> = Vec::new();
            for (len, free, pick) in ops {
                if free && !used.is_empty() {
                    let i = usize::from(pick) % used.len();
                    used.remove(i);
                    continue;
                }
                match allocate(n, &used, len) {
                    Ok(p) => {
                        prop_assert_eq!(p.prefix_len(), len);
                        prop_assert!(n.contains(&p));
                        for u in &used {
                            prop_assert!(!overlaps(u, &p), "{} overlaps {}", p, u);
                        }
                        used.push(p);
                    }
                    Err(AllocError::Exhausted { .. }) => {
                        prop_assert!(free_blocks(n, &used).iter().all(|b| b.prefix_len() > len));
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
    }
}
