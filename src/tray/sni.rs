//! The tray on Linux: a StatusNotifierItem (the KDE/freedesktop tray protocol, shown by KDE,
//! XFCE, LXQt, Cinnamon, and GNOME with the AppIndicator extension) over D-Bus with `ksni`
//! — no GTK, no C library. This is the IO shell of [`super`]: it polls the node, hands the
//! [`View`] to the item and carries out the menu's [`Command`]s.
#![allow(clippy::disallowed_methods)] // IO shell: spawns the live page, reads nothing else

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ksni::TrayMethods;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Command, Seen, View};
use crate::control::client::{ControlClient, ControlClientError};
use crate::control::locate::{Candidates, LocateError, locate};
use crate::ui::NodeSource;
use crate::ui::server::UiServer;

/// How `mesh tray` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--state-dir`: that node only; otherwise found as `mesh status` finds it.
    pub state_dir: Option<PathBuf>,
    /// How often the node is asked for its status.
    pub poll: Duration,
    /// Where the live page is served when the menu asks for it (loopback).
    pub page_listen: SocketAddr,
}

/// Icon sizes drawn for hosts without the icon theme.
const PIXMAP_SIZES: [usize; 3] = [16, 22, 32];

/// The item as the D-Bus service sees it.
struct MeshTray {
    view: View,
    /// A one-line result of the last menu action (a failed copy, a refused connect).
    note: Option<String>,
    clicks: mpsc::Sender<Command>,
}

impl MeshTray {
    fn click(&self, c: Command) {
        // Clicks are a person's: a full queue means the shell is stuck, and dropping the
        // click is what a frozen UI does anyway.
        if self.clicks.try_send(c).is_err() {
            warn!(?c, "tray click dropped: the tray is busy");
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut l = self.view.details.clone();
        l.extend(self.note.clone());
        l
    }
}

/// A label as D-Bus menus want it: `_` marks an access key, `__` is an underscore.
fn label(s: &str) -> String {
    s.replace('_', "__")
}

impl ksni::Tray for MeshTray {
    const MENU_ON_ACTIVATE: bool = true;

    fn id(&self) -> String {
        "re6mesh".into()
    }

    fn title(&self) -> String {
        self.view.title.clone()
    }

    fn status(&self) -> ksni::Status {
        match self.view.mood {
            super::Mood::Revoked | super::Mood::Problem => ksni::Status::NeedsAttention,
            _ => ksni::Status::Active,
        }
    }

    fn icon_name(&self) -> String {
        self.view.mood.icon_name().into()
    }

    fn attention_icon_name(&self) -> String {
        self.view.mood.icon_name().into()
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        PIXMAP_SIZES
            .iter()
            .map(|&s| ksni::Icon {
                width: s as i32,
                height: s as i32,
                data: self.view.pixmap(s),
            })
            .collect()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            icon_name: self.view.mood.icon_name().into(),
            icon_pixmap: Vec::new(),
            title: self.view.title.clone(),
            description: self.lines().join("\n"),
        }
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        use ksni::menu::StandardItem;
        let info = |text: &str| -> ksni::MenuItem<Self> {
            StandardItem {
                label: label(text),
                enabled: false,
                ..Default::default()
            }
            .into()
        };
        let action = |text: &str, enabled: bool, c: Command| -> ksni::MenuItem<Self> {
            StandardItem {
                label: text.into(),
                enabled,
                activate: Box::new(move |t: &mut Self| t.click(c)),
                ..Default::default()
            }
            .into()
        };
        let mut m = vec![info(&self.view.title)];
        m.extend(self.lines().iter().map(|l| info(l)));
        m.push(ksni::MenuItem::Separator);
        m.push(action("Connect", self.view.can_connect, Command::Connect));
        m.push(action(
            "Disconnect",
            self.view.can_disconnect,
            Command::Disconnect,
        ));
        m.push(action(
            "Copy my address",
            self.view.address.is_some(),
            Command::CopyAddress,
        ));
        m.push(action("Open the live page", true, Command::OpenPage));
        m.push(ksni::MenuItem::Separator);
        m.push(action("Quit", true, Command::Quit));
        m
    }

    fn watcher_offline(&self, reason: ksni::OfflineReason) -> bool {
        // The panel restarted or is not up yet (autostart races the desktop): keep the
        // item; it is registered again when the watcher comes back.
        warn!(?reason, "no system tray host at the moment; waiting for it");
        true
    }
}

/// Asks the node once.
pub async fn poll(cands: &Candidates) -> (Seen, Option<PathBuf>) {
    let dir = match locate(cands).await {
        Ok(choice) => choice.dir().to_path_buf(),
        Err(LocateError::NotRunning(_)) => return (Seen::NotRunning, None),
        Err(e @ LocateError::SystemDenied { .. }) => return (Seen::Denied(e.to_string()), None),
    };
    let seen = match ControlClient::new(&dir).status().await {
        Ok(s) => Seen::Status(Box::new(s)),
        Err(ControlClientError::NotRunning(_)) => Seen::NotRunning,
        Err(e @ ControlClientError::Permission(_)) => Seen::Denied(e.to_string()),
        Err(e @ ControlClientError::BadAnswer(_)) => Seen::Broken(e.to_string()),
    };
    (seen, Some(dir))
}

/// The shell's own state besides the item.
struct Shell {
    cands: Candidates,
    opts: Options,
    /// The node's directory at the last poll that found one.
    dir: Option<PathBuf>,
    /// The live page, once opened: its URL.
    page: Option<String>,
    /// Kept for the life of the tray: on X11 the clipboard is served by its owner.
    clipboard: Option<arboard::Clipboard>,
}

impl Shell {
    /// Carries out one click; the sentence is shown in the menu.
    async fn carry_out(&mut self, c: Command, view: &View) -> Option<String> {
        match c {
            Command::Connect | Command::Disconnect => {
                let what = if c == Command::Connect { "up" } else { "down" };
                let dir = self.dir.clone()?;
                match ControlClient::new(&dir).action(what).await {
                    Ok(r) if r.ok => {
                        info!(action = what, "{}", r.message);
                        None
                    }
                    Ok(r) => Some(r.message),
                    Err(e) => Some(e.to_string()),
                }
            }
            Command::CopyAddress => {
                let addr = view.address.clone()?;
                let r = match &mut self.clipboard {
                    Some(c) => c.set_text(addr.clone()),
                    None => arboard::Clipboard::new().and_then(|mut c| {
                        let r = c.set_text(addr.clone());
                        self.clipboard = Some(c);
                        r
                    }),
                };
                match r {
                    Ok(()) => {
                        info!(%addr, "address copied to the clipboard");
                        None
                    }
                    Err(e) => Some(format!("could not copy the address: {e}")),
                }
            }
            Command::OpenPage => match self.page().await {
                Ok(url) => match open::that_detached(&url) {
                    Ok(()) => {
                        info!(%url, "live page opened");
                        None
                    }
                    Err(e) => Some(format!("the live page is at {url} (no browser: {e})")),
                },
                Err(e) => Some(format!("cannot serve the live page: {e:#}")),
            },
            Command::Quit => None,
        }
    }

    /// The live page's URL, serving it on first use (for the node found now, or the one
    /// `mesh up` would start).
    async fn page(&mut self) -> anyhow::Result<String> {
        if let Some(u) = &self.page {
            return Ok(u.clone());
        }
        let server = UiServer::bind(self.opts.page_listen)
            .await
            .with_context(|| format!("cannot listen on {}", self.opts.page_listen))?;
        let url = server.url();
        let dir = self.dir.clone().unwrap_or_else(|| self.cands.default_dir());
        let source = Arc::new(NodeSource::new(dir));
        tokio::spawn(async move {
            let never = std::future::pending::<()>();
            if let Err(e) = server
                .run(
                    source,
                    "re6mesh — this node",
                    None,
                    Duration::from_secs(1),
                    never,
                )
                .await
            {
                warn!(error = %e, "the live page server failed");
            }
        });
        self.page = Some(url.clone());
        Ok(url)
    }
}

/// Runs the tray until Quit or `shutdown`.
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let cands = Candidates::for_this_process(opts.state_dir.clone());
    let (clicks, mut clicked) = mpsc::channel(16);
    let (seen, dir) = poll(&cands).await;
    let mut view = View::of(&seen);
    let tray = MeshTray {
        view: view.clone(),
        note: None,
        clicks,
    };
    let handle = tray
        // autostart may run before the panel: wait for it rather than fail
        .assume_sni_available(true)
        .spawn()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot show the tray icon: {e} (is this a desktop session with D-Bus? \
                 GNOME needs the AppIndicator extension)"
            )
        })?;
    info!(state = view.mood.word(), "tray icon up");
    let mut shell = Shell {
        cands,
        opts,
        dir,
        page: None,
        clipboard: None,
    };
    let mut tick = tokio::time::interval(shell.opts.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            c = clicked.recv() => {
                let Some(c) = c else { break };
                if c == Command::Quit {
                    break;
                }
                let note = shell.carry_out(c, &view).await;
                if let Some(n) = &note {
                    warn!(action = ?c, "{n}");
                }
                handle.update(|t| t.note = note).await;
                // show the action's effect now rather than at the next tick
                tick.reset_immediately();
                continue;
            }
            _ = &mut shutdown => break,
        }
        let (seen, dir) = poll(&shell.cands).await;
        if dir.is_some() {
            shell.dir = dir;
        }
        let next = View::of(&seen);
        if next != view {
            if next.mood != view.mood {
                info!(from = view.mood.word(), to = next.mood.word(), "node state");
            }
            view = next;
            let v = view.clone();
            if handle.update(move |t| t.view = v).await.is_none() {
                anyhow::bail!("the tray service ended");
            }
        }
    }
    handle.shutdown().await;
    Ok(())
}
