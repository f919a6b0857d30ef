//! `mesh service install|uninstall|status|run`: the node as a system service — systemd on
//! Linux, a launchd daemon on macOS, a Windows service — behind the same command
//! (src/platform/service, one file per service manager).

use clap::{Args, Subcommand};

use super::StateDir;
use crate::platform::service::{self, InstallOptions};

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Install the node as a system service and enable it (root/Administrator): a systemd unit
    /// (Linux; creates group and user re6mesh), a launchd daemon (macOS), a Windows service.
    Install(InstallArgs),
    /// Stop and remove the service (the state directory stays).
    Uninstall,
    /// Is the service installed, enabled, running?
    Status,
    /// The Windows service's entry point, started by the Service Control Manager (on Linux and
    /// macOS the service runs `mesh up --foreground`).
    #[cfg_attr(not(windows), command(hide = true))]
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Print what would be installed (unit, plist or service command line) and change nothing.
    #[arg(long)]
    print: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub state: StateDir,
}

pub fn run(cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Install(a) => service::install(InstallOptions { print: a.print }),
        ServiceCmd::Uninstall => service::uninstall(),
        ServiceCmd::Status => service::status(),
        ServiceCmd::Run(a) => run_service(a),
    }
}

/// The state directory `mesh service run` works on (the system node's by default).
#[cfg(windows)]
pub fn run_dir(a: &RunArgs) -> std::path::PathBuf {
    a.state
        .state_dir
        .clone()
        .unwrap_or_else(crate::paths::system_node_dir)
}

/// Windows: hands the node to the Service Control Manager, which runs it until it says stop.
/// A machine that has not joined yet stops at once, successfully (nothing to run: like
/// systemd's ConditionPathExists), so the SCM does not restart it in a loop.
#[cfg(windows)]
fn run_service(a: RunArgs) -> anyhow::Result<()> {
    let dir = run_dir(&a);
    service::windows::run_dispatcher(Box::new(move |stop| {
        if !crate::state::is_joined(&dir) {
            tracing::warn!(dir = %dir.display(), "not joined yet: nothing to run (`mesh join TOKEN --state-dir DIR`, then start the service)");
            return Ok(());
        }
        let cfg = crate::node_config::NodeOptions::load(&dir)?.node_config(dir);
        super::runtime()?.block_on(crate::mesh::node::run(cfg, stop))
    }))
}

#[cfg(not(windows))]
fn run_service(a: RunArgs) -> anyhow::Result<()> {
    let _ = a.state;
    Err(super::Unavailable(
        "`mesh service run` is the Windows service's entry point; here the service runs `mesh up --foreground` (`mesh service install`)".to_owned(),
    )
    .into())
}
