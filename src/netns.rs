//! Network namespaces for tests and `mesh demo`: per-run names, veth links, processes
//! started inside, and cleanup on every exit path (drop, panic unwind, and — for runs that
//! were killed — [`cleanup_stale`] at the next start). Only processes this rig started are
//! ended, by PID. Linux only; uses the `ip` command from iproute2.
//!
//! Names: namespace `<tag>-<pid>-<name>`, so a run's leftovers are recognisable and the
//! owner's liveness can be checked. veth ends are created directly inside their namespaces
//! (`ip link add … netns A type veth peer … netns B`), so interface names never collide in
//! the host namespace.

#![allow(clippy::disallowed_methods)] // IO shell: starts, waits for and stops processes in namespaces

use std::collections::BTreeMap;
use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Errors from the rig.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr.
        stderr: String,
    },
    /// Spawning failed (is iproute2 installed?).
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The error.
        source: io::Error,
    },
    /// A bad name.
    #[error("{0}")]
    Name(String),
}

type Result<T> = std::result::Result<T, NetnsError>;

/// Whether privileged network tests can run here. When not root: outside CI prints one loud
/// line and returns false (the caller returns early); inside CI (`CI` set) panics, because
/// CI runs as root and a skipped test there would hide a failure.
pub fn require_root(test: &str) -> bool {
    if crate::paths::is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root for network namespaces, and CI must run as root");
    }
    // Written straight to stderr rather than with eprintln!, which the test harness captures.
    let line = format!(
        "SKIPPED {test}: needs root for network namespaces (run the test command as root; CI does)\n"
    );
    let _ = io::Write::write_all(&mut io::stderr(), line.as_bytes());
    false
}

fn run(cmd: &mut Command) -> Result<Output> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: line.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd: line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// All namespace names (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces `<tag>-<pid>-*` whose owning process is gone (a run that was killed).
/// Returns the names deleted.
pub fn cleanup_stale(tag: &str) -> Result<Vec<String>> {
    let mut gone = Vec::new();
    for ns in list_namespaces()? {
        let Some(rest) = ns.strip_prefix(&format!("{tag}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            ip(&["netns", "del", &ns])?;
            gone.push(ns);
        }
    }
    Ok(gone)
}

/// A set of namespaces, links and processes owned by one run.
pub struct Rig {
    prefix: String,
    namespaces: Vec<String>,
    children: BTreeMap<u32, Child>,
}

impl Rig {
    /// A new rig; namespaces will be named `<tag>-<pid>-<name>`. Leftovers of killed runs
    /// with the same tag are removed first.
    pub fn new(tag: &str) -> Result<Rig> {
        if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(NetnsError::Name(format!(
                "rig tag {tag:?} must be alphanumeric"
            )));
        }
        cleanup_stale(tag)?;
        Ok(Rig {
            prefix: format!("{tag}-{}-", std::process::id()),
            namespaces: Vec::new(),
            children: BTreeMap::new(),
        })
    }

    /// The full namespace name for `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates namespace `name` with loopback up and IPv6 duplicate address detection off
    /// (addresses usable at once). Returns its full name.
    pub fn add_ns(&mut self, name: &str) -> Result<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(NetnsError::Name(format!(
                "namespace name {name:?} must be alphanumeric"
            )));
        }
        let full = self.ns(name);
        ip(&["netns", "add", &full])?;
        self.namespaces.push(full.clone());
        self.exec(name, &["ip", "link", "set", "lo", "up"])?;
        for k in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.forwarding=1",
        ] {
            self.exec(name, &["sysctl", "-qw", k])?;
        }
        Ok(full)
    }

    /// Joins namespaces `a` and `b` with a veth pair, both ends up. The end in `a` is named
    /// `<a-name-hint>` = `to-<b>` (truncated to 15 bytes) and vice versa. Returns (end in a,
    /// end in b).
    pub fn link(&mut self, a: &str, b: &str) -> Result<(String, String)> {
        let ia = iface_name(b);
        let ib = iface_name(a);
        ip(&[
            "link",
            "add",
            &ia,
            "netns",
            &self.ns(a),
            "type",
            "veth",
            "peer",
            "name",
            &ib,
            "netns",
            &self.ns(b),
        ])?;
        self.exec(a, &["ip", "link", "set", &ia, "up"])?;
        self.exec(b, &["ip", "link", "set", &ib, "up"])?;
        Ok((ia, ib))
    }

    /// Runs a command inside namespace `name` and waits for it; fails on a non-zero exit.
    pub fn exec(&self, name: &str, argv: &[&str]) -> Result<Output> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(name)]).args(argv);
        run(&mut c)
    }

    /// Like [`Rig::exec`] but returns the output whatever the exit status.
    pub fn exec_status(&self, name: &str, argv: &[&str]) -> Result<Output> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(name)])
            .args(argv)
            .stdin(Stdio::null());
        c.output().map_err(|source| NetnsError::Spawn {
            cmd: argv.join(" "),
            source,
        })
    }

    /// Starts a long-running process inside namespace `name`; returns its PID. The rig ends
    /// it on drop.
    pub fn spawn(
        &mut self,
        name: &str,
        program: &str,
        args: &[&str],
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<u32> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(name), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| NetnsError::Spawn {
                cmd: program.to_owned(),
                source,
            })?;
        // `ip netns exec` execs the program in place, so the PID is the program's.
        let pid = child.id();
        self.children.insert(pid, child);
        Ok(pid)
    }

    /// Sends SIGTERM to one of this rig's processes and waits up to `grace` for it to exit
    /// (then SIGKILL). Returns its exit status if it exited.
    pub fn stop(&mut self, pid: u32, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.children.remove(&pid)?;
        terminate(&mut child, grace)
    }

    /// The child process with this PID, if the rig started it and it was not stopped.
    pub fn child(&mut self, pid: u32) -> Option<&mut Child> {
        self.children.get_mut(&pid)
    }

    /// Full names of the namespaces created so far.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

fn iface_name(peer: &str) -> String {
    let mut n = format!("to-{peer}");
    n.truncate(15);
    n
}

fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    crate::platform::process::request_stop(child.id());
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

impl Drop for Rig {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.children.keys().copied().collect();
        for pid in pids {
            self.stop(pid, Duration::from_secs(2));
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("warning: could not delete network namespace {ns}: {e}");
            }
        }
    }
}
