//! The node as a system service, one file per service manager behind the same three calls
//! (`mesh service install|uninstall|status`): [`systemd`] (Linux), [`launchd`] (macOS, a
//! LaunchDaemon) and [`windows`] (the Service Control Manager). The text each one installs (unit,
//! plist, service command line) is made by pure functions compiled and unit-tested on every OS;
//! only the calls into the service manager are used on their own OS.
//!
//! Every service runs the node in the foreground as root/LocalSystem or its own user, on the
//! system state directory ([`crate::paths::system_node_dir`]), with the options of its
//! `node.toml`.

use std::process::Command;

use anyhow::{Context, bail};

pub mod launchd;
pub mod systemd;
pub mod windows;

/// What `mesh service install` was asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    /// Print what would be installed and change nothing.
    pub print: bool,
}

#[cfg(target_os = "linux")]
pub use systemd::{install, status, uninstall};

#[cfg(target_os = "macos")]
pub use launchd::{install, status, uninstall};

#[cfg(windows)]
pub use windows::{install, status, uninstall};

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub use unsupported::{install, status, uninstall};

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod unsupported {
    const WHY: &str = "`mesh service` knows systemd (Linux), launchd (macOS) and Windows services only; run `mesh up --foreground` from this system's own service manager";

    pub fn install(o: super::InstallOptions) -> anyhow::Result<()> {
        let _ = o;
        anyhow::bail!(WHY)
    }

    pub fn uninstall() -> anyhow::Result<()> {
        anyhow::bail!(WHY)
    }

    pub fn status() -> anyhow::Result<()> {
        anyhow::bail!(WHY)
    }
}

/// Runs a system tool (`systemctl`, `launchctl`, `useradd`, …); its failure as one sentence.
fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let line = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installing and removing a system service needs root.
fn require_root(what: &str) -> anyhow::Result<()> {
    if !crate::paths::is_root() {
        bail!("`mesh service {what}` changes the system: run it with sudo");
    }
    Ok(())
}

/// One `status` line: a left-aligned label, then the value.
fn status_line(label: &str, value: &str) {
    println!("{label:<16}{value}");
}

/// The `status` line of the file that defines the service (a unit, a plist).
fn file_status_line(label: &str, path: &std::path::Path) {
    let state = if path.exists() {
        "installed"
    } else {
        "not installed"
    };
    status_line(label, &format!("{} ({state})", path.display()));
}

/// Removes the file that defines the service and says what was kept (`kept`: more than
/// the state directory, e.g. a group).
fn remove_definition(path: &std::path::Path, kept: &str) -> anyhow::Result<()> {
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    println!(
        "removed {}; the state directory {}{kept} kept",
        path.display(),
        crate::paths::system_node_dir().display()
    );
    Ok(())
}
