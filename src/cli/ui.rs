//! `mesh ui`: the live page for the local node, served from its control socket.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::StateDir;
use crate::control::locate::{Candidates, LocateError, locate};
use crate::ui::NodeSource;
use crate::ui::server::UiServer;

#[derive(Debug, Args)]
pub struct UiArgs {
    #[command(flatten)]
    state: StateDir,
    /// Where to serve the page: `[ADDR:]PORT`, loopback when no address is given (keep it
    /// there: the page shows the whole network).
    #[arg(long, value_name = "[ADDR:]PORT", default_value = "127.0.0.1:8642", value_parser = parse_ui_listen)]
    listen: std::net::SocketAddr,
}

/// `[ADDR:]PORT`; a bare port means 127.0.0.1.
fn parse_ui_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not [ADDR:]PORT (e.g. 8642 or 127.0.0.1:8642)"))
}

pub fn run(a: UiArgs) -> anyhow::Result<()> {
    let rt = super::runtime()?;
    let cands = Candidates::for_this_process(a.state.state_dir.clone());
    // The running node as `mesh status` finds it; with none running yet, the page waits for
    // the one `mesh up` would start.
    let dir = match rt.block_on(locate(&cands)) {
        Ok(choice) => choice.dir().to_path_buf(),
        Err(LocateError::NotRunning(_)) => cands.default_dir(),
        Err(e) => return Err(e.into()),
    };
    rt.block_on(async move {
        let server = UiServer::bind(a.listen).await.with_context(|| {
            format!(
                "cannot listen on {} (is another page running there?)",
                a.listen
            )
        })?;
        println!("The node's live page: {}", server.url());
        println!(
            "(reading {}; Ctrl-C to stop)",
            crate::platform::control_socket::endpoint(&dir).display()
        );
        let source = Arc::new(NodeSource::new(dir));
        server
            .run(
                source,
                "re6mesh — this node",
                None,
                Duration::from_secs(1),
                super::registry::shutdown_signal(),
            )
            .await
            .context("the page server failed")
    })
}
