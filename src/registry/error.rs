//! The registry's error type and its one mapping to HTTP (innernet's style: one table).

use axum::http::StatusCode;

/// Every way a registry operation can fail. Each variant says whom to blame.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The client sent something unusable (bad CSR, bad JSON, bad field).
    #[error("{0}")]
    BadRequest(String),
    /// No (valid) credentials: unknown token, no client certificate.
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials known but refused: token used up, revoked, banned.
    #[error("{0}")]
    Forbidden(String),
    /// The node's certificate has expired: it must join again with a new token.
    #[error("this node's certificate has expired; join again with a new token")]
    Expired,
    /// The request conflicts with the state (renewal too early).
    #[error("{0}")]
    Conflict(String),
    /// Nothing to return (no bootstrap peer, unknown token id).
    #[error("{0}")]
    NotFound(String),
    /// The network has no room for another prefix.
    #[error("{0}")]
    Exhausted(String),
    /// The registry is at a configured limit for everyone (parameter watches, anonymous
    /// joins in total): try again after the given seconds.
    #[error("{0}")]
    Busy(String, u64),
    /// This client (source address or node) is over its own limit: try again after the given
    /// seconds.
    #[error("{0}")]
    RateLimited(String, u64),
    /// Storage failed (disk, corruption): the registry's fault.
    #[error("registry storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    /// Anything else that is the registry's fault.
    #[error("internal registry error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// HTTP status and stable machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            RegistryError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            RegistryError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            RegistryError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            RegistryError::Expired => (StatusCode::UNAUTHORIZED, "expired"),
            RegistryError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            RegistryError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            RegistryError::Exhausted(_) => (StatusCode::SERVICE_UNAVAILABLE, "exhausted"),
            RegistryError::Busy(..) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            RegistryError::RateLimited(..) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            RegistryError::Storage(_) | RegistryError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl RegistryError {
    /// Seconds after which a refused request may be sent again (the `Retry-After` header).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            RegistryError::Busy(_, s) | RegistryError::RateLimited(_, s) => Some((*s).max(1)),
            _ => None,
        }
    }
}

impl From<super::ca::CaError> for RegistryError {
    fn from(e: super::ca::CaError) -> Self {
        use super::ca::CaError::*;
        match e {
            MalformedCsr | BadCsrSignature | WrongKeyType => {
                RegistryError::BadRequest(e.to_string())
            }
            Internal(m) => RegistryError::Internal(m),
        }
    }
}
