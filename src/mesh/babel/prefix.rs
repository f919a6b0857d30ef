//! Prefixes: the wire module's [`Prefix`] (host bits cleared, ordered, CIDR `Display`).

pub use crate::wire::Prefix;

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
}
