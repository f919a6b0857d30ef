//! The node's local control endpoint, one API over a Unix socket (Linux, macOS) and a named
//! pipe (Windows). The endpoint of a state directory is [`endpoint`]; a server binds it with
//! [`Listener::bind`] (serve it with `axum::serve`), a client opens it with [`connect`].

#[cfg(unix)]
#[path = "unix.rs"]
mod imp;
#[cfg(windows)]
#[path = "windows.rs"]
mod imp;

pub use imp::{Listener, Stream, connect, endpoint};

/// Why a control endpoint cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on this endpoint.
    #[error("another process answers on it")]
    InUse,
    /// The OS refused.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
