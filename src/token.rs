//! Join tokens: one printable string holding the registry URL, the SHA-256 fingerprint of
//! the network CA and a one-time secret (DESIGN §4).
//!
//! Format: `mesh1-` followed by unpadded base64url of
//! `secret[24] || ca_fingerprint[32] || url (UTF-8)`. The registry stores only SHA-256(secret).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The textual prefix of every token (versioned).
pub const TOKEN_PREFIX: &str = "mesh1-";
/// Length of the secret in bytes.
pub const SECRET_LEN: usize = 24;

/// A decoded join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The registry's base URL (`https://host:port`).
    pub url: String,
    /// SHA-256 of the CA certificate (DER).
    pub ca_fingerprint: [u8; 32],
    /// The one-time secret.
    pub secret: [u8; SECRET_LEN],
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("url", &self.url)
            .field("ca_fingerprint", &hex::encode(self.ca_fingerprint))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a string is not a join token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Wrong prefix: not a re6mesh token (or a newer format).
    #[error("this is not a re6mesh join token (it should start with \"{TOKEN_PREFIX}\")")]
    BadPrefix,
    /// Not base64url, or too short.
    #[error("the join token is damaged (was it copied completely?)")]
    Damaged,
    /// The URL inside is not an https URL.
    #[error("the join token holds an invalid registry URL")]
    BadUrl,
}

impl JoinToken {
    /// Encodes the token as its printable form.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(SECRET_LEN + 32 + self.url.len());
        raw.extend_from_slice(&self.secret);
        raw.extend_from_slice(&self.ca_fingerprint);
        raw.extend_from_slice(self.url.as_bytes());
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// Decodes a printable token (surrounding whitespace is ignored).
    pub fn decode(text: &str) -> Result<Self, TokenError> {
        let body = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::BadPrefix)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Damaged)?;
        if raw.len() <= SECRET_LEN + 32 {
            return Err(TokenError::Damaged);
        }
        let (secret, rest) = raw.split_at(SECRET_LEN);
        let (fp, url) = rest.split_at(32);
        let url = std::str::from_utf8(url).map_err(|_| TokenError::BadUrl)?;
        if !url.starts_with("https://") || url.len() <= "https://".len() {
            return Err(TokenError::BadUrl);
        }
        let mut token = JoinToken {
            url: url.to_owned(),
            ca_fingerprint: [0; 32],
            secret: [0; SECRET_LEN],
        };
        token.ca_fingerprint.copy_from_slice(fp);
        token.secret.copy_from_slice(secret);
        Ok(token)
    }

    /// The hash under which the registry stores the secret.
    pub fn secret_hash(&self) -> [u8; 32] {
        hash_secret(&self.secret)
    }
}

/// The host part of an `https://` URL (brackets removed from IPv6 literals).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// SHA-256 of a token secret.
pub fn hash_secret(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JoinToken {
        JoinToken {
            url: "https://127.0.0.1:8443".into(),
            ca_fingerprint: [7; 32],
            secret: [9; SECRET_LEN],
        }
    }

    #[test]
    fn round_trips() {
        let t = sample();
        let s = t.encode();
        assert!(s.starts_with("mesh1-"));
        assert!(s.chars().all(|c| c.is_ascii_graphic()));
        assert_eq!(JoinToken::decode(&format!("  {s}\n")).unwrap(), t);
    }

    #[test]
    fn rejects_foreign_and_damaged_tokens() {
        assert_eq!(JoinToken::decode("abc"), Err(TokenError::BadPrefix));
        assert_eq!(JoinToken::decode("mesh1-!!"), Err(TokenError::Damaged));
        assert_eq!(JoinToken::decode("mesh1-AAAA"), Err(TokenError::Damaged));
        let mut t = sample();
        t.url = "http://x".into();
        assert_eq!(JoinToken::decode(&t.encode()), Err(TokenError::BadUrl));
    }

    #[test]
    fn url_host_handles_names_and_literals() {
        assert_eq!(
            url_host("https://reg.example:8443/x").as_deref(),
            Some("reg.example")
        );
        assert_eq!(url_host("https://[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(url_host("https://127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(url_host("http://a"), None);
        assert_eq!(url_host("https://"), None);
    }

    #[test]
    fn debug_hides_the_secret() {
        let dbg = format!("{:?}", sample());
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains("9, 9"));
    }
}
