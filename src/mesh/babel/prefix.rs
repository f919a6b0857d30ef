//! Prefixes: the wire module's [`Prefix`] (host bits cleared, ordered, CIDR `Display`), and
//! the engine's route key [`RouteKey`]: a destination prefix with, for a source-specific
//! route (RFC 9079), a source prefix.

use std::fmt;
use std::ops::Deref;

pub use crate::wire::Prefix;

/// What the engine keys routes by (RFC 9079 section 3): the destination prefix and, for a
/// source-specific route, the source prefix. `src: None` is an ordinary route (source
/// `::/0`). Dereferences to the destination, so code that only cares about the
/// destination reads it as a [`Prefix`]. `Display` prints `DST` or `DST from SRC`, and
/// `FromStr` reads the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Destination prefix.
    pub dst: Prefix,
    /// Source prefix of a source-specific route; `None` for an ordinary one.
    pub src: Option<Prefix>,
}

impl RouteKey {
    /// The source-specific key `dst from src` (a zero-length source is an ordinary
    /// route, RFC 9079 section 3: it is normalised to `None`).
    pub fn from_source(dst: Prefix, src: Option<Prefix>) -> RouteKey {
        RouteKey {
            dst,
            src: src.filter(|s| !s.is_empty()),
        }
    }

    /// True for a source-specific route.
    pub fn is_source_specific(&self) -> bool {
        self.src.is_some()
    }

    /// The destination prefix.
    pub fn dst(&self) -> Prefix {
        self.dst
    }
}

impl From<Prefix> for RouteKey {
    fn from(dst: Prefix) -> RouteKey {
        RouteKey { dst, src: None }
    }
}

impl From<&Prefix> for RouteKey {
    fn from(dst: &Prefix) -> RouteKey {
        RouteKey::from(*dst)
    }
}

impl From<&RouteKey> for RouteKey {
    fn from(k: &RouteKey) -> RouteKey {
        *k
    }
}

impl Deref for RouteKey {
    type Target = Prefix;
    fn deref(&self) -> &Prefix {
        &self.dst
    }
}

impl PartialEq<Prefix> for RouteKey {
    fn eq(&self, other: &Prefix) -> bool {
        self.src.is_none() && self.dst == *other
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.src {
            Some(s) => write!(f, "{} from {}", self.dst, s),
            None => write!(f, "{}", self.dst),
        }
    }
}

impl std::str::FromStr for RouteKey {
    type Err = crate::wire::PrefixParseError;
    fn from_str(s: &str) -> Result<RouteKey, Self::Err> {
        match s.split_once(" from ") {
            Some((d, src)) => Ok(RouteKey::from_source(
                d.trim().parse()?,
                Some(src.trim().parse()?),
            )),
            None => Ok(RouteKey::from(s.trim().parse::<Prefix>()?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_host_bits_and_checks_length() {
        let p: Prefix = "2001:db8:a::1/64".parse().unwrap();
        assert_eq!(p.to_string(), "2001:db8:a::/64");
        let q: Prefix = "198.51.100.77/26".parse().unwrap();
        assert_eq!(q.to_string(), "198.51.100.64/26");
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!(p.contains("2001:db8:a::ff".parse().unwrap()));
        assert!(!p.contains("198.51.100.1".parse().unwrap()));
    }

    #[test]
    fn route_keys_print_and_parse_their_source() {
        let k: RouteKey = "::/0 from fd00:1::/48".parse().unwrap();
        assert!(k.is_source_specific());
        assert_eq!(k.to_string(), "::/0 from fd00:1::/48");
        assert_eq!(k.len(), 0);
        let plain: RouteKey = "fd00:1:0:3::/64".parse().unwrap();
        assert!(!plain.is_source_specific());
        assert_eq!(plain, "fd00:1:0:3::/64".parse::<Prefix>().unwrap());
        // a zero-length source is an ordinary route
        let z: RouteKey = "2001:db8::/32 from ::/0".parse().unwrap();
        assert!(!z.is_source_specific());
        assert!(k != "::/0".parse::<RouteKey>().unwrap());
        assert!("::/0 from nonsense".parse::<RouteKey>().is_err());
    }
}
