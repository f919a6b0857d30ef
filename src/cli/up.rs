//! `mesh up`: connect the running node, or run the node in the foreground; `mesh set`: write
//! the node's configuration file.

use clap::Args;

use super::StateDir;
use crate::control::client::{ControlClient, ControlClientError};
use crate::control::locate::{Candidates, LocateError, locate};
use crate::mesh::node::run;
use crate::node_config::NodeOptions;

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    state: StateDir,
    /// Run the node in this process even if the control socket could be asked.
    #[arg(long)]
    foreground: bool,
    /// Also write the options given here into the node's configuration file
    /// (`<state-dir>/node.toml`), so later starts (the service, the tray) use them.
    #[arg(long)]
    save: bool,
    /// JSON output. Asking a running node: {"action": "up", "message", "state_dir", "saved"}.
    /// Starting one here: {"action": "start", "state_dir", "saved"} once, before the node runs
    /// (it then logs to stderr as usual).
    #[arg(long)]
    json: bool,
    /// Options; unset ones come from `<state-dir>/node.toml`, then the defaults.
    #[command(flatten)]
    options: NodeOptions,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    state: StateDir,
    /// `KEY=VALUE`: a `mesh up` option without its dashes (`peer`, `lan`, `country`,
    /// `listen`, …); lists are comma-separated; an empty value removes the key.
    #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_pair)]
    pairs: Vec<(String, String)>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err("not KEY=VALUE (e.g. country=FR, lan=eth0,wlan0)".to_owned()),
    }
}

pub fn up(a: UpArgs) -> anyhow::Result<()> {
    let cands = Candidates::for_this_process(a.state.state_dir.clone());
    let rt = super::runtime()?;
    // The node to ask, found as `mesh status` finds it; none: start one here.
    let running = match rt.block_on(locate(&cands)) {
        Ok(choice) => Some(choice),
        Err(LocateError::NotRunning(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let dir = running
        .as_ref()
        .map(|c| c.dir().to_path_buf())
        .unwrap_or_else(|| cands.default_dir());
    // Read before anything else: a broken file stops here, whatever runs.
    let file = NodeOptions::load(&dir)?;
    let options = a.options.over(file);
    let saved = if a.save {
        let path = options.save(&dir)?;
        if !a.json {
            println!("saved {}", path.display());
        }
        Some(path.display().to_string())
    } else {
        None
    };
    if !a.foreground
        && let Some(choice) = &running
    {
        match rt.block_on(ControlClient::new(choice.dir()).action("up")) {
            Ok(r) => {
                if !r.ok {
                    anyhow::bail!("{}", r.message);
                }
                if a.json {
                    let v = serde_json::json!({
                        "action": "up",
                        "message": r.message,
                        "state_dir": choice.dir().display().to_string(),
                        "saved": saved,
                    });
                    println!("{v}");
                    return Ok(());
                }
                println!("{}", r.message);
                if a.save {
                    println!(
                        "(the saved options apply when {} next starts)",
                        choice.describe()
                    );
                }
                return Ok(());
            }
            Err(ControlClientError::NotRunning(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !options.lan.is_empty() && !cfg!(target_os = "linux") {
        anyhow::bail!("--lan is only available on Linux; start the node without it");
    }
    // Root's node: let group re6mesh reach the control socket the node shares with it.
    #[cfg(unix)]
    if crate::paths::is_root()
        && let Some(gid) = crate::control::service_group_id()
        && dir.is_dir()
    {
        match crate::control::locate::share_dir_with_group(&dir, gid) {
            Ok(true) => tracing::info!(
                dir = %dir.display(),
                "state directory opened to group re6mesh (mode 0710) for its control socket"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot open the state directory to group re6mesh; only root can use the node")
            }
        }
    }
    if a.json {
        let v = serde_json::json!({
            "action": "start",
            "state_dir": dir.display().to_string(),
            "saved": saved,
        });
        println!("{v}");
    }
    let cfg = options.node_config(dir);
    rt.block_on(run(cfg, super::registry::shutdown_signal()))
}

pub fn set(a: SetArgs) -> anyhow::Result<()> {
    let dir = a
        .state
        .state_dir
        .clone()
        .unwrap_or_else(crate::paths::default_node_dir);
    let mut options = NodeOptions::load(&dir)?;
    for (k, v) in &a.pairs {
        options.set(k, v)?;
    }
    let path = options.save(&dir)?;
    println!(
        "saved {} (applies when the node next starts: `mesh down --exit`, then `mesh up`)",
        path.display()
    );
    Ok(())
}
