//! Every QUIC application close code a tunnel is closed with, documented once.
//!
//! The code travels in the CONNECTION_CLOSE frame; the peer reads it back with
//! [`CloseCode::from_error`] and the node core reacts to it (e.g. [`CloseCode::Revoked`]: ask the
//! registry at once and renew). Unknown codes from a newer peer read as `None`: the tunnel is
//! simply gone.

/// Why a tunnel was closed (QUIC application error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum CloseCode {
    /// The node stops, goes down (`mesh down`) or is down when the tunnel comes up.
    Shutdown = 0,
    /// The peer is not who it was dialled as (unexpected prefix), or a local fault.
    Internal = 1,
    /// The peer's protocol is below the network minimum.
    Protocol = 2,
    /// The peer broke the control protocol (bad or missing hello, stalled control stream).
    Control = 3,
    /// A second tunnel to the same peer: the pair keeps the one the lower prefix initiated.
    Duplicate = 4,
    /// This node accepts no more incoming tunnels (the tunnel manager's `max_clients`).
    TooMany = 5,
    /// The peer's certificate is revoked (the CRL in force names its serial).
    Revoked = 6,
    /// The tunnel manager retired the tunnel (end of the lock cycle).
    Retired = 7,
    /// The path does not carry full-size packets (sent on the diagnostic connection).
    PathMtu = 8,
    /// The peer's certificate has expired.
    Expired = 9,
}

impl CloseCode {
    /// Every code, in wire order.
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Shutdown,
        CloseCode::Internal,
        CloseCode::Protocol,
        CloseCode::Control,
        CloseCode::Duplicate,
        CloseCode::TooMany,
        CloseCode::Revoked,
        CloseCode::Retired,
        CloseCode::PathMtu,
        CloseCode::Expired,
    ];

    /// The code on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The code read back from the wire (`None`: a code this version does not know).
    pub fn from_code(code: u64) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.code()) == code)
    }

    /// The reason text sent with the code (for the peer's logs).
    pub fn reason(self) -> &'static [u8] {
        match self {
            CloseCode::Shutdown => b"node shutting down",
            CloseCode::Internal => b"internal error or unexpected peer",
            CloseCode::Protocol => b"protocol below the network minimum",
            CloseCode::Control => b"control protocol broken",
            CloseCode::Duplicate => b"duplicate tunnel",
            CloseCode::TooMany => b"too many tunnels",
            CloseCode::Revoked => b"certificate revoked",
            CloseCode::Retired => b"retired by the tunnel manager",
            CloseCode::PathMtu => b"path does not carry full-size packets",
            CloseCode::Expired => b"certificate expired",
        }
    }

    /// The code a peer closed a connection with, if it closed it with one of ours.
    pub fn from_error(e: &quinn::ConnectionError) -> Option<CloseCode> {
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => {
                CloseCode::from_code(c.error_code.into_inner())
            }
            _ => None,
        }
    }

    /// Closes `conn` with this code and its reason.
    pub fn close(self, conn: &quinn::Connection) {
        conn.close(self.code().into(), self.reason());
    }
}

/// True when a connection error is the peer's TLS refusal of our certificate as revoked
/// (alert `certificate_revoked`, carried as QUIC CRYPTO_ERROR 0x100 + 44 in the peer's
/// CONNECTION_CLOSE). Our own refusal of the peer's certificate is a local
/// `TransportError` with the same code, and is not this.
pub fn is_revoked_alert(e: &quinn::ConnectionError) -> bool {
    const CERTIFICATE_REVOKED: u8 = 44;
    let revoked = quinn::TransportErrorCode::crypto(CERTIFICATE_REVOKED);
    matches!(e, quinn::ConnectionError::ConnectionClosed(c) if c.error_code == revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself_and_unknown_codes_read_as_none() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(u64::from(c.code())), Some(c));
            assert!(!c.reason().is_empty());
        }
        assert_eq!(CloseCode::from_code(10), None);
        assert_eq!(CloseCode::Expired.code(), 9);
        assert_eq!(CloseCode::from_code(u64::MAX), None);
        // wire values are a contract: a change here breaks mixed-version networks
        assert_eq!(CloseCode::Revoked.code(), 6);
        assert_eq!(CloseCode::Retired.code(), 7);
        assert_eq!(CloseCode::PathMtu.code(), 8);
    }
}
