//! Unix socket `<state-dir>/control.sock`, with Unix permission bits.

use std::io;
use std::path::{Path, PathBuf};

use super::BindError;

/// A connected control stream.
pub type Stream = tokio::net::UnixStream;

/// The control endpoint of state directory `dir`: `<dir>/control.sock`.
pub fn endpoint(dir: &Path) -> PathBuf {
    dir.join(crate::control::SOCKET_NAME)
}

/// Connects to the control endpoint `path`.
pub async fn connect(path: &Path) -> io::Result<Stream> {
    tokio::net::UnixStream::connect(path).await
}

/// A bound control socket; removes its file when dropped.
pub struct Listener {
    inner: tokio::net::UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds `path` with permission bits `mode`. A stale socket file (nobody answering) is
    /// replaced; a live one is [`BindError::InUse`].
    pub async fn bind(path: &Path, mode: u32) -> Result<Listener, BindError> {
        use std::os::unix::fs::PermissionsExt;
        if path.exists() {
            if connect(path).await.is_ok() {
                return Err(BindError::InUse);
            }
            let _ = std::fs::remove_file(path);
        }
        let inner = tokio::net::UnixListener::bind(path)?;
        let listener = Listener {
            inner,
            path: path.to_path_buf(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        Ok(listener)
    }

    /// Hands the socket to group `gid` with mode 0660.
    pub fn share_with_group(&self, gid: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(&self.path, None, Some(gid))?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o660))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = tokio::net::unix::SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send {
        axum::serve::Listener::accept(&mut self.inner)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
