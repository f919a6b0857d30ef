//! `mesh tray` end to end, unprivileged: a private D-Bus session bus, a stand-in
//! StatusNotifierWatcher (what a desktop panel runs), a fake node behind a real control
//! socket, and the real `mesh tray` process. The test reads the item and its menu over D-Bus
//! as a panel would, clicks the menu, and follows the node going down, up, away and back.
//! The D-Bus dump of every step is saved as `target/test-artifacts/tray-dbus.txt`.
//!
//! Needs `dbus-daemon` (scripts/test installs it); with `Xvfb` and `xclip` it also checks
//! "Copy my address" on a private X display.
#![cfg(all(target_os = "linux", feature = "tray"))]
#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets, tasks and clocks

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use re6mesh::control::server::ControlServer;
use re6mesh::control::*;
use zbus::zvariant::{OwnedValue, Value};

/// The node behind the control socket: its state, and how many times the tray asked it to
/// go down or up.
#[derive(Default)]
struct Fake {
    state: Mutex<Option<NodeStateName>>,
    downs: Mutex<u32>,
}

impl Fake {
    fn state(&self) -> NodeStateName {
        self.state.lock().unwrap().unwrap_or(NodeStateName::Up)
    }
}

/// The control handler: the shared fake (kept by the test to change and inspect it).
struct Node(Arc<Fake>);

impl ControlHandler for Node {
    fn status(&self) -> Status {
        Status {
            state: self.0.state(),
            prefix: "fd00:7:0:3::/64".into(),
            address: "fd00:7:0:3::1".into(),
            network: "fd00:7::/48".into(),
            params_version: 2,
            protocol: 1,
            tunnels: 2,
            routes: 5,
            uptime_secs: 9,
            error: None,
            warnings: Vec::new(),
            counters: Default::default(),
            traffic: Default::default(),
            drops: Default::default(),
            paths: Default::default(),
            certificate: None,
            registry: None,
            seal: None,
            port_mapping: None,
            exit: None,
            ipv4: None,
        }
    }
    fn peers(&self) -> Vec<Peer> {
        Vec::new()
    }
    fn routes(&self) -> Vec<Route> {
        Vec::new()
    }
    fn up(&self) -> Result<String, String> {
        *self.0.state.lock().unwrap() = Some(NodeStateName::Up);
        Ok("connected".into())
    }
    fn down(&self) -> Result<String, String> {
        *self.0.state.lock().unwrap() = Some(NodeStateName::Down);
        *self.0.downs.lock().unwrap() += 1;
        Ok("disconnected".into())
    }
    fn exit(&self) -> Result<String, String> {
        Err("not in this test".into())
    }
}

/// Ends a child we started, by its PID, on every exit path.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private session bus; returns the daemon and its address.
fn session_bus(dir: &Path) -> (Reaped, String) {
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .arg(format!("--address=unix:path={}", dir.join("bus").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("dbus-daemon starts");
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("dbus-daemon prints its address");
    (Reaped(child), line.trim().to_string())
}

/// What a panel's watcher does: records the items that register.
struct Watcher {
    items: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    async fn register_status_notifier_item(
        &self,
        service: &str,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) {
        // The item registers its bus name (or, without one, its object path: then the
        // sender is the address to call).
        let name = if service.starts_with('/') {
            hdr.sender().map(|s| s.to_string()).unwrap_or_default()
        } else {
            service.to_string()
        };
        self.items.lock().unwrap().push(name);
    }

    fn register_status_notifier_host(&self, _service: &str) {}

    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        self.items.lock().unwrap().clone()
    }

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }
}

/// One menu entry as the panel sees it.
#[derive(Debug, Clone)]
struct Entry {
    id: i32,
    label: String,
    enabled: bool,
}

/// An ARGB32 icon: width, height, pixels.
type Pixmap = (i32, i32, Vec<u8>);

struct Panel {
    conn: zbus::Connection,
    item: String,
    dump: Vec<String>,
}

impl Panel {
    async fn prop(&self, name: &str) -> OwnedValue {
        let reply = self
            .conn
            .call_method(
                Some(self.item.as_str()),
                "/StatusNotifierItem",
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.kde.StatusNotifierItem", name),
            )
            .await
            .unwrap_or_else(|e| panic!("Get {name}: {e}"));
        reply.body().deserialize::<OwnedValue>().expect("a variant")
    }

    async fn text(&self, name: &str) -> String {
        String::try_from(self.prop(name).await).expect("a string property")
    }

    async fn tooltip(&self) -> (String, Vec<Pixmap>, String, String) {
        <(String, Vec<Pixmap>, String, String)>::try_from(self.prop("ToolTip").await)
            .expect("a ToolTip (sa(iiay)ss)")
    }

    async fn pixmaps(&self) -> Vec<Pixmap> {
        Vec::<Pixmap>::try_from(self.prop("IconPixmap").await).expect("IconPixmap a(iiay)")
    }

    async fn menu(&self) -> Vec<Entry> {
        let reply = self
            .conn
            .call_method(
                Some(self.item.as_str()),
                "/MenuBar",
                Some("com.canonical.dbusmenu"),
                "GetLayout",
                &(0i32, -1i32, Vec::<String>::new()),
            )
            .await
            .expect("GetLayout");
        type Node = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);
        let (_rev, (_id, _props, children)): (u32, Node) =
            reply.body().deserialize().expect("a dbusmenu layout");
        children
            .into_iter()
            .filter_map(|c| {
                let (id, props, _): Node = Node::try_from(c).ok()?;
                let label = props
                    .get("label")
                    .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
                    .unwrap_or_default();
                // dbusmenu: "enabled" is true unless said otherwise
                let enabled = props
                    .get("enabled")
                    .and_then(|v| bool::try_from(v.try_clone().ok()?).ok())
                    .unwrap_or(true);
                Some(Entry { id, label, enabled })
            })
            .collect()
    }

    async fn click(&self, label: &str) {
        self.send_click(label).await.expect("menu Event");
    }

    async fn send_click(&self, label: &str) -> zbus::Result<zbus::Message> {
        let menu = self.menu().await;
        let e = menu
            .iter()
            .find(|e| e.label == label)
            .unwrap_or_else(|| panic!("no {label:?} in {menu:?}"));
        assert!(e.enabled, "{label:?} is not enabled: {menu:?}");
        self.conn
            .call_method(
                Some(self.item.as_str()),
                "/MenuBar",
                Some("com.canonical.dbusmenu"),
                "Event",
                &(e.id, "clicked", Value::from(""), 0u32),
            )
            .await
    }

    /// Waits until the item's title is `want` (the tray polls the node every 200 ms).
    async fn wait_title(&mut self, want: &str, step: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let title = self.text("Title").await;
            if title == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{step}: the title stayed {title:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.record(step).await;
    }

    async fn record(&mut self, step: &str) {
        let status = self.text("Status").await;
        let icon = self.text("IconName").await;
        let (_, _, tip_title, tip_text) = self.tooltip().await;
        let tip = format!("{tip_title} | {}", tip_text.replace('\n', " | "));
        let menu = self.menu().await;
        let sizes: Vec<String> = self
            .pixmaps()
            .await
            .iter()
            .map(|(w, h, _)| format!("{w}x{h}"))
            .collect();
        let mut s = format!(
            "== {step}\nStatus={status} IconName={icon} IconPixmap={}\nToolTip={tip}\n",
            sizes.join(",")
        );
        for e in menu {
            s.push_str(&format!(
                "  menu {:>2} {:<7} {:?}\n",
                e.id,
                if e.enabled { "enabled" } else { "-" },
                e.label
            ));
        }
        self.dump.push(s);
    }
}

/// The fake node's control socket, served until the returned sender is dropped or fired.
async fn serve(dir: &Path, fake: Arc<Fake>) -> tokio::sync::oneshot::Sender<()> {
    let server = ControlServer::bind(dir, 0o600)
        .await
        .expect("control socket");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server
            .run(Arc::new(Node(fake)), async move {
                let _ = rx.await;
            })
            .await;
    });
    tx
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private X display for the clipboard check, when Xvfb and xclip are there.
fn x_display() -> Option<(Reaped, String)> {
    if !(have("Xvfb") && have("xclip")) {
        println!("tray: no Xvfb/xclip, \"Copy my address\" not checked");
        return None;
    }
    // a display number of our own: free lock file, derived from our PID
    let n = (100..400)
        .map(|i| 100 + (std::process::id() as usize + i) % 800)
        .find(|n| !Path::new(&format!("/tmp/.X{n}-lock")).exists())?;
    let child = Command::new("Xvfb")
        .arg(format!(":{n}"))
        .args(["-nolisten", "tcp", "-screen", "0", "320x200x24"])
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let display = format!(":{n}");
    let sock = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    wait_for("Xvfb", || sock.exists());
    Some((Reaped(child), display))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tray_shows_the_node_follows_it_and_its_menu_acts_on_it() {
    if !have("dbus-daemon") {
        assert!(
            std::env::var_os("CI").is_none(),
            "dbus-daemon is missing (scripts/test installs it)"
        );
        println!("SKIPPED the tray test: no dbus-daemon (apt-get install dbus-daemon)");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let (_bus, address) = session_bus(tmp.path());

    // the panel's watcher
    let items = Arc::new(Mutex::new(Vec::new()));
    let conn = zbus::connection::Builder::address(address.as_str())
        .expect("bus address")
        .name("org.kde.StatusNotifierWatcher")
        .expect("watcher name")
        .serve_at(
            "/StatusNotifierWatcher",
            Watcher {
                items: items.clone(),
            },
        )
        .expect("watcher object")
        .build()
        .await
        .expect("connect to the private bus");

    // the node
    let fake = Arc::new(Fake::default());
    let stop = serve(&state, fake.clone()).await;

    // a browser that writes down what it was asked to open
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    let opened = tmp.path().join("opened");
    let script = bin.join("xdg-open");
    let mut f = std::fs::File::create(&script).expect("fake xdg-open");
    writeln!(f, "#!/bin/sh\necho \"$1\" > {}", opened.display()).expect("write");
    drop(f);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let x = x_display();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.args(["tray", "--poll", "200ms", "--state-dir"])
        .arg(&state)
        .env("DBUS_SESSION_BUS_ADDRESS", &address)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null());
    if let Some((_, d)) = &x {
        cmd.env("DISPLAY", d);
    }
    let mut tray = Reaped(cmd.spawn().expect("mesh tray starts"));

    wait_for("the item to register with the watcher", || {
        !items.lock().unwrap().is_empty()
    });
    let item = items.lock().unwrap()[0].clone();
    let mut panel = Panel {
        conn,
        item,
        dump: Vec::new(),
    };

    // up: title, icon, tooltip, menu
    panel
        .wait_title("re6mesh: connected, 2 tunnels", "node up")
        .await;
    assert_eq!(panel.text("IconName").await, "network-vpn");
    assert_eq!(panel.text("Status").await, "Active");
    let pixmaps = panel.pixmaps().await;
    assert!(
        pixmaps
            .iter()
            .any(|(w, h, px)| *w == 22 && *h == 22 && px.len() == 22 * 22 * 4),
        "a drawn 22x22 icon for panels without the icon theme"
    );
    let (_, _, tip_title, tip_text) = panel.tooltip().await;
    assert_eq!(tip_title, "re6mesh: connected, 2 tunnels");
    assert!(tip_text.contains("address fd00:7:0:3::1"), "{tip_text}");
    let menu = panel.menu().await;
    let labels: Vec<&str> = menu.iter().map(|e| e.label.as_str()).collect();
    for want in [
        "Connect",
        "Disconnect",
        "Copy my address",
        "Open the live page",
        "Quit",
    ] {
        assert!(labels.contains(&want), "{want:?} missing from {labels:?}");
    }
    assert!(
        labels.contains(&"address fd00:7:0:3::1"),
        "the address is shown: {labels:?}"
    );
    let enabled = |m: &[Entry], l: &str| m.iter().any(|e| e.label == l && e.enabled);
    assert!(enabled(&menu, "Disconnect") && !enabled(&menu, "Connect"));

    // Disconnect from the menu reaches the node, and the icon follows
    panel.click("Disconnect").await;
    panel.wait_title("re6mesh: down", "after Disconnect").await;
    assert_eq!(*fake.downs.lock().unwrap(), 1);
    let menu = panel.menu().await;
    assert!(enabled(&menu, "Connect") && !enabled(&menu, "Disconnect"));

    // Connect brings it back
    panel.click("Connect").await;
    panel
        .wait_title("re6mesh: connected, 2 tunnels", "after Connect")
        .await;

    // the node goes away (a restart): "not running", and back
    let _ = stop.send(());
    panel
        .wait_title("re6mesh: not running", "node stopped")
        .await;
    assert_eq!(panel.text("IconName").await, "network-vpn-disconnected");
    let _stop = serve(&state, fake.clone()).await;
    panel
        .wait_title("re6mesh: connected, 2 tunnels", "node restarted")
        .await;

    // revoked: attention
    *fake.state.lock().unwrap() = Some(NodeStateName::Revoked);
    panel.wait_title("re6mesh: revoked", "node revoked").await;
    assert_eq!(panel.text("Status").await, "NeedsAttention");
    *fake.state.lock().unwrap() = Some(NodeStateName::Up);
    panel
        .wait_title("re6mesh: connected, 2 tunnels", "node up again")
        .await;

    // the live page: served on loopback by the tray and handed to the browser
    panel.click("Open the live page").await;
    wait_for("the browser to be asked", || {
        std::fs::read_to_string(&opened).is_ok_and(|s| s.ends_with('\n'))
    });
    let url = std::fs::read_to_string(&opened)
        .expect("url")
        .trim()
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let page = fetch(&url);
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    assert!(page.contains("re6mesh"), "the page: {page:.300}");

    // the clipboard
    if let Some((_, display)) = &x {
        panel.click("Copy my address").await;
        wait_for("the address on the clipboard", || {
            Command::new("xclip")
                .args(["-o", "-selection", "clipboard"])
                .env("DISPLAY", display)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout) == "fd00:7:0:3::1")
        });
        println!("tray: the address reached the X clipboard");
    }

    // the dump, as a panel saw each step
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    std::fs::write(artifacts.join("tray-dbus.txt"), panel.dump.join("\n")).expect("dump");

    // Quit ends the process cleanly (it may go before its answer to the click reaches us)
    let _ = panel.send_click("Quit").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = tray.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "mesh tray did not quit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "mesh tray exited with {status}");
}

/// `GET url` over loopback, the whole answer as text.
fn fetch(url: &str) -> String {
    use std::io::Read;
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).expect("connect to the page");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn an_unknown_poll_interval_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["tray", "--poll", "5ms"])
        .output()
        .expect("mesh runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("between 100ms and 10min"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
