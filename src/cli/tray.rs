//! `mesh tray`: the node's state as a tray icon with a menu (src/tray).

use std::time::Duration;

use clap::Args;

use super::StateDir;

#[derive(Debug, Args)]
pub struct TrayArgs {
    #[command(flatten)]
    state: StateDir,
    /// How often to ask the node for its state.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_poll)]
    poll: Duration,
    /// Where "Open the live page" serves the page: `ADDR:PORT` (loopback; port 0 picks a free one).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    page_listen: std::net::SocketAddr,
}

fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
        return Err(format!(
            "{s:?}: give a poll interval between 100ms and 10min"
        ));
    }
    Ok(d)
}

#[cfg(all(target_os = "linux", feature = "tray"))]
pub fn run(a: TrayArgs) -> anyhow::Result<()> {
    let rt = super::runtime()?;
    let opts = crate::tray::sni::Options {
        state_dir: a.state.state_dir,
        poll: a.poll,
        page_listen: a.page_listen,
    };
    rt.block_on(crate::tray::sni::run(
        opts,
        super::registry::shutdown_signal(),
    ))
}

#[cfg(not(all(target_os = "linux", feature = "tray")))]
pub fn run(a: TrayArgs) -> anyhow::Result<()> {
    let _ = a;
    let why = if cfg!(target_os = "linux") {
        "this mesh was built without the tray (cargo feature `tray`)"
    } else {
        "the tray is not yet available on this OS (Linux only for now)"
    };
    Err(super::Unavailable(why.into()).into())
}
