//! Which node does a plain `mesh status` talk to? (issue 16: "as `tailscale status` finds
//! tailscaled").
//!
//! Search order, first match wins:
//! 1. `--state-dir DIR` / `MESH_STATE_DIR`: that node, and only that one.
//! 2. As root: the system state directory (`/var/lib/re6mesh`), root's default.
//! 3. As a normal user: the user's own state directory when a node answers there, then the
//!    system node (run as root by `sudo mesh up` or the service) through its control socket,
//!    which is group `re6mesh`, mode 0660, in a directory that group may traverse.
//!
//! When the system node's socket exists but the user may not open it, the answer says so and
//! what to do, instead of "no node is running".

use std::path::{Path, PathBuf};

use crate::platform::control_socket;

/// Which node a command talks to, and why that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChoice {
    /// The directory given with `--state-dir` or `MESH_STATE_DIR`.
    Explicit(PathBuf),
    /// The user's own node (a per-user state directory).
    User(PathBuf),
    /// The system node, run by root or the service.
    System(PathBuf),
}

impl NodeChoice {
    /// The node's state directory.
    pub fn dir(&self) -> &Path {
        match self {
            NodeChoice::Explicit(d) | NodeChoice::User(d) | NodeChoice::System(d) => d,
        }
    }

    /// A short description for humans: "system node (/var/lib/re6mesh)".
    pub fn describe(&self) -> String {
        let (what, d) = match self {
            NodeChoice::Explicit(d) => ("node of --state-dir", d),
            NodeChoice::User(d) => ("your own node", d),
            NodeChoice::System(d) => ("system node", d),
        };
        format!("{what} ({})", d.display())
    }
}

/// Where to look: built from the command line and the process's identity.
#[derive(Debug, Clone)]
pub struct Candidates {
    /// `--state-dir` / `MESH_STATE_DIR`, if given.
    pub explicit: Option<PathBuf>,
    /// The user's own state directory (unused as root).
    pub user: PathBuf,
    /// The system node's state directory.
    pub system: PathBuf,
    /// The process runs as root.
    pub root: bool,
}

impl Candidates {
    /// The candidates for this process: `explicit`, the user's data directory, `/var/lib/re6mesh`.
    pub fn for_this_process(explicit: Option<PathBuf>) -> Candidates {
        Candidates {
            explicit,
            user: crate::paths::user_node_dir(),
            system: crate::paths::system_node_dir(),
            root: crate::paths::is_root(),
        }
    }

    /// The directory a new node would use when none runs (what `mesh up` starts in).
    pub fn default_dir(&self) -> PathBuf {
        match (&self.explicit, self.root) {
            (Some(d), _) => d.clone(),
            (None, true) => self.system.clone(),
            (None, false) => self.user.clone(),
        }
    }
}

/// What a connection attempt on a control socket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Something accepted the connection.
    Answers,
    /// No socket, or nothing listening behind it.
    Nothing,
    /// The socket or a directory on its path is not ours to open.
    Denied,
}

/// Why no node could be chosen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocateError {
    /// Nothing answers anywhere we looked.
    #[error("no node is running (nothing answers on {})", list(.0))]
    NotRunning(Vec<PathBuf>),
    /// The system node's socket is there, but this user may not use it.
    #[error("{}", denied_sentence(.socket, *.group_exists))]
    SystemDenied {
        /// The socket refused.
        socket: PathBuf,
        /// Group `re6mesh` exists on this machine.
        group_exists: bool,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" nor on ")
}

/// Windows: the service's pipe keeps its default security (LocalSystem, Administrators).
#[cfg(windows)]
fn denied_sentence(socket: &Path, group_exists: bool) -> String {
    let _ = group_exists;
    format!(
        "you may not use the system node's control endpoint {} (it is the service's): run the command from an Administrator prompt",
        socket.display()
    )
}

#[cfg(not(windows))]
fn denied_sentence(socket: &Path, group_exists: bool) -> String {
    // Also what a user sees when root's state directory is still private (0700): the socket
    // may or may not be there, and either way the remedy is the same.
    let why = format!(
        "you may not use the system node's control socket {} (it is root's)",
        socket.display()
    );
    if group_exists {
        format!(
            "{why}: add yourself to group {g} (`sudo usermod -aG {g} $USER`, then log in again), or use sudo",
            g = super::SERVICE_GROUP
        )
    } else {
        format!(
            "{why}: create group {g} (`sudo groupadd --system {g}`), add yourself to it (`sudo usermod -aG {g} $USER`, then log in again) and restart the node, or use sudo",
            g = super::SERVICE_GROUP
        )
    }
}

/// Tries to connect to the control endpoint of `dir` (its Unix socket, or its named pipe on
/// Windows).
pub async fn probe(dir: &Path) -> Probe {
    match control_socket::connect(&control_socket::endpoint(dir)).await {
        Ok(_) => Probe::Answers,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Probe::Denied,
        Err(_) => Probe::Nothing,
    }
}

/// Chooses the node to talk to, probing sockets with `probe` (see the module docs for the order).
pub async fn locate_with<F, Fut>(c: &Candidates, probe: F) -> Result<NodeChoice, LocateError>
where
    F: Fn(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Probe>,
{
    if let Some(d) = &c.explicit {
        return Ok(NodeChoice::Explicit(d.clone()));
    }
    if c.root {
        return Ok(NodeChoice::System(c.system.clone()));
    }
    if probe(c.user.clone()).await == Probe::Answers {
        return Ok(NodeChoice::User(c.user.clone()));
    }
    match probe(c.system.clone()).await {
        Probe::Answers => Ok(NodeChoice::System(c.system.clone())),
        Probe::Denied => Err(LocateError::SystemDenied {
            socket: control_socket::endpoint(&c.system),
            group_exists: super::service_group_id().is_some(),
        }),
        Probe::Nothing => Err(LocateError::NotRunning(vec![
            control_socket::endpoint(&c.user),
            control_socket::endpoint(&c.system),
        ])),
    }
}

/// Chooses the node to talk to by connecting to the candidates' control sockets.
pub async fn locate(c: &Candidates) -> Result<NodeChoice, LocateError> {
    locate_with(c, |d| async move { probe(&d).await }).await
}

/// Lets group `re6mesh` traverse a root node's private state directory (0700 → 0710), so its
/// members reach the control socket the node shares with them; nothing else in the directory
/// becomes listable, and the key stays 0600. Only a directory private to root is touched (a
/// directory that already has group or other bits is left as it is). Returns whether it changed.
#[cfg(unix)]
pub fn share_dir_with_group(dir: &Path, gid: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Ok(false);
    }
    std::os::unix::fs::chown(dir, None, Some(gid))?;
    std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode((meta.mode() & 0o7700) | 0o010),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(root: bool, explicit: Option<&str>) -> Candidates {
        Candidates {
            explicit: explicit.map(PathBuf::from),
            user: PathBuf::from("/home/u/.local/share/re6mesh"),
            system: PathBuf::from("/var/lib/re6mesh"),
            root,
        }
    }

    /// Runs `locate_with` with fixed probe outcomes for the user and system directories.
    fn run(c: &Candidates, user: Probe, system: Probe) -> Result<NodeChoice, LocateError> {
        let (u, s) = (c.user.clone(), c.system.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(locate_with(c, move |d| {
            let r = if d == u {
                user
            } else if d == s {
                system
            } else {
                panic!("probed an unexpected directory {}", d.display())
            };
            async move { r }
        }))
    }

    #[test]
    fn explicit_state_dir_wins_without_probing() {
        let c = cands(false, Some("/srv/n1"));
        let got = run(&c, Probe::Answers, Probe::Answers).unwrap();
        assert_eq!(got, NodeChoice::Explicit("/srv/n1".into()));
        let c = cands(true, Some("/srv/n1"));
        assert_eq!(
            run(&c, Probe::Nothing, Probe::Nothing).unwrap(),
            NodeChoice::Explicit("/srv/n1".into())
        );
    }

    #[test]
    fn system_node_is_roots_default() {
        let c = cands(true, None);
        assert_eq!(
            run(&c, Probe::Answers, Probe::Nothing).unwrap(),
            NodeChoice::System("/var/lib/re6mesh".into()),
            "root's default is the system directory, whatever answers elsewhere"
        );
    }

    #[test]
    fn user_node_first_then_system_node() {
        let c = cands(false, None);
        assert_eq!(
            run(&c, Probe::Answers, Probe::Answers).unwrap(),
            NodeChoice::User(c.user.clone())
        );
        assert_eq!(
            run(&c, Probe::Nothing, Probe::Answers).unwrap(),
            NodeChoice::System(c.system.clone())
        );
        assert_eq!(
            run(&c, Probe::Denied, Probe::Answers).unwrap(),
            NodeChoice::System(c.system.clone())
        );
    }

    #[test]
    fn denied_system_socket_says_what_to_do() {
        let c = cands(false, None);
        let e = run(&c, Probe::Nothing, Probe::Denied).unwrap_err();
        assert!(
            matches!(&e, LocateError::SystemDenied { socket, .. } if *socket == control_socket::endpoint(&c.system)),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("you may not use the system node's control"),
            "{text}"
        );
        #[cfg(not(windows))]
        {
            assert!(text.contains("usermod -aG re6mesh"), "{text}");
            let no_group = denied_sentence(Path::new("/x/control.sock"), false);
            assert!(no_group.contains("groupadd --system re6mesh"), "{no_group}");
        }
        #[cfg(windows)]
        assert!(text.contains("from an Administrator prompt"), "{text}");
    }

    #[test]
    fn nothing_anywhere_names_both_sockets() {
        let c = cands(false, None);
        let e = run(&c, Probe::Nothing, Probe::Nothing).unwrap_err();
        #[cfg(unix)]
        assert_eq!(
            e.to_string(),
            "no node is running (nothing answers on /home/u/.local/share/re6mesh/control.sock \
             nor on /var/lib/re6mesh/control.sock)"
        );
        // Windows: the two directories' named pipes
        assert_eq!(
            e.to_string(),
            format!(
                "no node is running (nothing answers on {} nor on {})",
                control_socket::endpoint(&c.user).display(),
                control_socket::endpoint(&c.system).display()
            )
        );
    }

    #[test]
    fn default_dir_for_a_new_node() {
        assert_eq!(
            cands(false, None).default_dir(),
            PathBuf::from("/home/u/.local/share/re6mesh")
        );
        assert_eq!(
            cands(true, None).default_dir(),
            PathBuf::from("/var/lib/re6mesh")
        );
        assert_eq!(cands(true, Some("/d")).default_dir(), PathBuf::from("/d"));
    }

    /// Real sockets in temporary directories: the user's node, then the system node, then none.
    #[cfg(unix)]
    #[tokio::test]
    async fn finds_listening_sockets_in_order() {
        let user = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        let c = Candidates {
            explicit: None,
            user: user.path().to_path_buf(),
            system: system.path().to_path_buf(),
            root: false,
        };
        assert!(matches!(locate(&c).await, Err(LocateError::NotRunning(_))));
        let sys_sock = tokio::net::UnixListener::bind(system.path().join("control.sock")).unwrap();
        assert_eq!(
            locate(&c).await.unwrap(),
            NodeChoice::System(system.path().to_path_buf())
        );
        // a stale socket file in the user's directory (its node is gone) does not hide the system node
        drop(tokio::net::UnixListener::bind(user.path().join("control.sock")).unwrap());
        assert_eq!(
            locate(&c).await.unwrap(),
            NodeChoice::System(system.path().to_path_buf())
        );
        std::fs::remove_file(user.path().join("control.sock")).unwrap();
        let _user_sock = tokio::net::UnixListener::bind(user.path().join("control.sock")).unwrap();
        assert_eq!(
            locate(&c).await.unwrap(),
            NodeChoice::User(user.path().to_path_buf())
        );
        drop(sys_sock);
    }

    /// A socket in a directory this user may not traverse is "denied", not "not running".
    /// Root bypasses permission bits, so this runs as a normal user only.
    #[cfg(unix)]
    #[tokio::test]
    async fn unreachable_socket_is_denied() {
        use std::os::unix::fs::PermissionsExt;
        if crate::paths::is_root() {
            println!("SKIPPED unreachable_socket_is_denied: root ignores permission bits");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let _l = tokio::net::UnixListener::bind(dir.path().join("control.sock")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o000)).unwrap();
        let got = probe(dir.path()).await;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(got, Probe::Denied);
    }

    #[cfg(unix)]
    #[test]
    fn root_share_dir_with_group_only_touches_private_dirs() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !crate::netns::require_root("root_share_dir_with_group_only_touches_private_dirs") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let gid = 65534; // nogroup: any group works, nobody is added to it
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(share_dir_with_group(dir.path(), gid).unwrap());
        let m = std::fs::metadata(dir.path()).unwrap();
        assert_eq!((m.mode() & 0o7777, m.gid()), (0o710, gid));
        // already shared (has group bits): left alone
        assert!(!share_dir_with_group(dir.path(), 0).unwrap());
        assert_eq!(std::fs::metadata(dir.path()).unwrap().gid(), gid);
    }
}
