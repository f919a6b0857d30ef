//! What the netns tests share (Linux, root): `mesh` run inside a namespace, a registry
//! served from one, nodes joined to it and started with `mesh up`, and their logs printed
//! when a test fails. The namespaces and processes belong to the test's [`Rig`], which
//! removes them on every exit path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ipnet::Ipv6Net;
use re6mesh::netns::Rig;

use super::wait_until;

/// The binary under test.
pub const MESH: &str = env!("CARGO_BIN_EXE_mesh");

/// `mesh ARGS` inside namespace `ns`, waited for (any exit status).
pub fn ns_mesh(rig: &Rig, ns: &str, args: &[&str]) -> Output {
    let mut argv = vec![MESH];
    argv.extend_from_slice(args);
    rig.exec_status(ns, &argv)
        .expect("run mesh in the namespace")
}

/// Prints every `*.log` of a directory when the test panics after this point (or always,
/// with `MESH_TEST_LOGS` set). Declare it before the [`Rig`] in a struct so that it drops
/// first, while the files are still there.
pub struct LogsOnPanic(pub PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("MESH_TEST_LOGS").is_some() {
            print_logs(&self.0, None);
        }
    }
}

/// Prints every `*.log` of `dir` (sorted by name) to standard error: whole, or its last
/// `tail` lines.
pub fn print_logs(dir: &Path, tail: Option<usize>) {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    for f in logs {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match tail {
            Some(n) => {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(n);
                eprintln!("--- {name} (last lines)\n{}", lines[from..].join("\n"));
            }
            None => eprintln!("--- {name}\n{text}"),
        }
    }
}

/// Runs `cmd` (split at white space) in namespace `ns`; panics naming it when it fails.
pub fn sh(rig: &Rig, ns: &str, cmd: &str) {
    let argv: Vec<&str> = cmd.split_whitespace().collect();
    rig.exec(ns, &argv)
        .unwrap_or_else(|e| panic!("{ns}: {cmd}: {e}"));
}

/// A file of `base` to log a process into.
pub fn log_file(base: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(base.join(name)).expect("create a log file"))
}

/// A registry whose state is in `<base>/registry`, served from a namespace.
pub struct NsRegistry {
    /// Its state directory.
    pub dir: PathBuf,
    /// The URL nodes join at.
    pub url: String,
    listen: String,
    base: PathBuf,
}

impl NsRegistry {
    /// [`NsRegistry::init`] then [`NsRegistry::start`]: a registry serving from namespace
    /// `ns`. Does not wait: [`NsRegistry::join`] retries while it starts.
    pub fn serve(
        rig: &mut Rig,
        base: &Path,
        ns: &str,
        addr: &str,
        port: u16,
        init: &[&str],
    ) -> NsRegistry {
        let reg = NsRegistry::init(base, addr, port, init);
        reg.start(rig, ns);
        reg
    }

    /// `mesh registry init` in `<base>/registry` (URL `https://ADDR:port`, then `init`,
    /// e.g. `--network P`); not served yet (set parameters first with [`NsRegistry::cli`]).
    pub fn init(base: &Path, addr: &str, port: u16, init: &[&str]) -> NsRegistry {
        let (url, listen) = if addr.contains(':') {
            (format!("https://[{addr}]:{port}"), format!("[::]:{port}"))
        } else {
            (format!("https://{addr}:{port}"), format!("0.0.0.0:{port}"))
        };
        let reg = NsRegistry {
            dir: base.join("registry"),
            url,
            listen,
            base: base.to_path_buf(),
        };
        let mut args = vec!["init", "--url", &reg.url];
        args.extend_from_slice(init);
        reg.cli(&args);
        reg
    }

    /// `mesh registry serve` on the port of its URL, on every address of namespace `ns` (of
    /// the URL's address family), logging to `<base>/registry.log`.
    pub fn start(&self, rig: &mut Rig, ns: &str) {
        let state = self.dir.to_str().expect("a UTF-8 path").to_owned();
        rig.spawn(
            ns,
            MESH,
            &[
                "registry",
                "serve",
                "--state-dir",
                &state,
                "--listen",
                &self.listen,
            ],
            Stdio::null(),
            log_file(&self.base, "registry.log"),
        )
        .expect("start the registry");
    }

    /// `mesh registry ARGS --state-dir DIR` on the host; panics with its error output when
    /// it fails; returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let o = Command::new(MESH)
            .arg("registry")
            .args(args)
            .arg("--state-dir")
            .arg(&self.dir)
            .output()
            .expect("run mesh registry");
        assert!(
            o.status.success(),
            "mesh registry {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A join token, then `mesh join` in namespace `ns` into `<base>/<ns>` (named `name`,
    /// else the host's name), retried for 15 s while the registry starts. Returns the node's
    /// prefix.
    pub fn join(&self, rig: &Rig, ns: &str, name: Option<&str>) -> Ipv6Net {
        let token = self.cli(&["token", "create"]).trim().to_owned();
        let dir = self.base.join(ns);
        let dir_s = dir.to_str().expect("a UTF-8 path");
        let mut args = vec!["join", token.as_str(), "--state-dir", dir_s];
        if let Some(n) = name {
            args.extend(["--name", n]);
        }
        let mut last = String::new();
        wait_until(&format!("{ns} to join"), Duration::from_secs(15), || {
            let o = ns_mesh(rig, ns, &args);
            last = String::from_utf8_lossy(&o.stderr).into_owned();
            o.status.success()
        });
        re6mesh::state::load(&dir)
            .unwrap_or_else(|e| panic!("{ns}'s state after joining: {e} ({last})"))
            .facts
            .prefix
    }
}

/// `mesh up --foreground` in namespace `ns` on `<base>/<ns>`, listening on `[::]:6464`,
/// hello every 0.5 s, polling the registry every second, with `extra` flags; logs to
/// `<base>/<ns>.log`. Returns the process id.
pub fn spawn_up(rig: &mut Rig, base: &Path, ns: &str, extra: &[&str]) -> u32 {
    let dir = base.join(ns);
    let mut args = vec![
        "up",
        "--foreground",
        "--state-dir",
        dir.to_str().expect("a UTF-8 path"),
        "--listen",
        "[::]:6464",
        "--hello-interval",
        "0.5",
        "--registry-poll",
        "1",
    ];
    args.extend_from_slice(extra);
    rig.spawn(
        ns,
        MESH,
        &args,
        Stdio::null(),
        log_file(base, &format!("{ns}.log")),
    )
    .expect("start mesh up")
}

/// `mesh routes --json` of the node in namespace `ns` (state directory `dir`): one JSON
/// object per route (none when it does not answer).
pub fn routes_json(rig: &Rig, ns: &str, dir: &Path) -> Vec<serde_json::Value> {
    let o = ns_mesh(
        rig,
        ns,
        &[
            "routes",
            "--json",
            "--state-dir",
            dir.to_str().expect("a UTF-8 path"),
        ],
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `mesh status --json` of the node in namespace `ns` (null when it does not answer).
pub fn status_json(rig: &Rig, ns: &str, dir: &Path) -> serde_json::Value {
    let o = ns_mesh(
        rig,
        ns,
        &[
            "status",
            "--json",
            "--state-dir",
            dir.to_str().expect("a UTF-8 path"),
        ],
    );
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

/// The usable routes the node in `ns` holds for exactly `prefix`: (router-id, selected).
pub fn routes_for(rig: &Rig, ns: &str, dir: &Path, prefix: &str) -> Vec<(String, bool)> {
    routes_json(rig, ns, dir)
        .into_iter()
        .filter(|r| r["prefix"].as_str() == Some(prefix) && r["metric"] != 65535)
        .map(|r| {
            (
                r["router_id"].as_str().unwrap_or_default().to_owned(),
                r["selected"] == true,
            )
        })
        .collect()
}

/// One of the node's counters (`mesh status --json`), 0 when absent.
pub fn counter(rig: &Rig, ns: &str, dir: &Path, name: &str) -> u64 {
    status_json(rig, ns, dir)["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

/// `ip -6 addr add ADDR dev DEV nodad` in each `(namespace, device, address)`.
pub fn add_addrs<D: AsRef<str>>(rig: &Rig, addrs: &[(&str, D, &str)]) {
    for (ns, dev, addr) in addrs {
        let dev = dev.as_ref();
        rig.exec(ns, &["ip", "-6", "addr", "add", addr, "dev", dev, "nodad"])
            .unwrap_or_else(|e| panic!("{ns}: address {addr} on {dev}: {e}"));
    }
}
