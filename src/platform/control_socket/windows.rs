//! Named pipe `\\.\pipe\re6mesh-control-<hash of the state directory>`. A pipe disappears
//! with its server, so there is no stale file to replace; a second server is refused by
//! `first_pipe_instance`. Remote clients are rejected. Access follows the pipe's default
//! security descriptor: the owner, administrators and LocalSystem may write to it.
#![allow(clippy::disallowed_methods)] // IO shell: waits for a busy pipe instance

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;
use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeServer, ServerOptions};

use super::BindError;

/// A connected control stream.
pub type Stream = tokio::net::windows::named_pipe::NamedPipeClient;

/// Windows' ERROR_PIPE_BUSY: every instance of the pipe is serving another client.
const ERROR_PIPE_BUSY: i32 = 231;

/// The control endpoint of state directory `dir`: a pipe named after a hash of the absolute,
/// lower-cased directory (Windows paths are case-insensitive), so the node and the CLI find
/// the same pipe however the directory was spelled.
pub fn endpoint(dir: &Path) -> PathBuf {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let key = abs.to_string_lossy().to_lowercase();
    let hash = sha2::Sha256::digest(key.as_bytes());
    PathBuf::from(format!(
        r"\\.\pipe\re6mesh-control-{}",
        hex::encode(&hash[..8])
    ))
}

/// Connects to the control endpoint `path`, waiting (up to 5 s) while every pipe instance
/// is busy.
pub async fn connect(path: &Path) -> io::Result<Stream> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match ClientOptions::new().open(path) {
            Err(e)
                if e.raw_os_error() == Some(ERROR_PIPE_BUSY)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r,
        }
    }
}

/// A bound control pipe: always one instance waiting for the next client.
pub struct Listener {
    next: NamedPipeServer,
    path: PathBuf,
}

impl Listener {
    /// Creates the first instance of pipe `path`; [`BindError::InUse`] when another server
    /// has it. `mode` (Unix permission bits) has no meaning here.
    pub async fn bind(path: &Path, mode: u32) -> Result<Listener, BindError> {
        let _ = mode;
        let next = ServerOptions::new()
            .first_pipe_instance(true)
            .reject_remote_clients(true)
            .create(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => BindError::InUse,
                _ => BindError::Io(e),
            })?;
        Ok(Listener {
            next,
            path: path.to_path_buf(),
        })
    }

    /// Waits for the next client on the waiting instance, with a fresh instance put in its
    /// place first (so a client is never refused, and an instance that failed is dropped).
    async fn accept_one(&mut self) -> io::Result<NamedPipeServer> {
        let fresh = ServerOptions::new()
            .reject_remote_clients(true)
            .create(&self.path)?;
        let waiting = std::mem::replace(&mut self.next, fresh);
        waiting.connect().await?;
        Ok(waiting)
    }
}

impl axum::serve::Listener for Listener {
    type Io = NamedPipeServer;
    type Addr = PathBuf;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.accept_one().await {
                Ok(io) => return (io, self.path.clone()),
                Err(e) => {
                    // as axum does for TCP: log, pause, retry
                    tracing::warn!(error = %e, "control pipe accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.path.clone())
    }
}
