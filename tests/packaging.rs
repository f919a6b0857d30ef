#![cfg(target_os = "linux")]
//! Packages and daily use without root (issue 16): the .deb installed into a throw-away root
//! with dpkg (maintainer scripts run for real on that root's /etc), both units verified by
//! systemd-analyze, install.sh staged into a --destdir, and an unprivileged uid (65534) running
//! `mesh up`/`down` in a network namespace against a TUN device `mesh setup-tun` gave it — and
//! getting the exact sentence when it was not given one.

#![allow(clippy::disallowed_methods)] // integration test: real processes, files and namespaces

mod common;
use common::wait_until;

/// The macOS and Windows artefacts (issue 17).
#[path = "packaging/cross.rs"]
mod cross;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use re6mesh::netns::{Rig, require_root};

const MESH: &str = env!("CARGO_BIN_EXE_mesh");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> Output {
    let o = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Distributions make `/dev/net/tun` 0666 (udev's default): opening it gives nothing, the
/// right to attach to a device is checked on the device. Some machines (a minimal VM) have it
/// 0600, and then no user but root can open any TUN, whatever mesh does. For the tests of
/// unprivileged nodes, give it the usual mode and put the old one back afterwards.
struct TunDeviceForAll(Option<u32>);

impl TunDeviceForAll {
    fn ensure() -> TunDeviceForAll {
        use std::os::unix::fs::PermissionsExt;
        let path = "/dev/net/tun";
        let Ok(meta) = std::fs::metadata(path) else {
            return TunDeviceForAll(None);
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o666 == 0o666 {
            return TunDeviceForAll(None);
        }
        println!(
            "{path} is {mode:o} here, not the usual 666: made 666 for this test, restored after"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        TunDeviceForAll(Some(mode))
    }
}

impl Drop for TunDeviceForAll {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(mode) = self.0 {
            let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(mode));
        }
    }
}

/// `systemd-analyze verify` on the units in `units`, with `ExecStart`'s `/usr/bin/mesh` (or
/// the install.sh prefix's) pointed at the installed binary, and man pages looked up in
/// `man_dir` (the units' Documentation=man:mesh(1) is checked too).
fn verify_units(units: &[PathBuf], installed_as: &str, binary: &Path, man_dir: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for u in units {
        let text = std::fs::read_to_string(u).unwrap();
        assert!(
            text.contains(&format!("ExecStart={installed_as} ")),
            "{}: ExecStart is not {installed_as}",
            u.display()
        );
        let copy = tmp.path().join(u.file_name().unwrap());
        std::fs::write(&copy, text.replace(installed_as, binary.to_str().unwrap())).unwrap();
        copies.push(copy);
    }
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .env("MANPATH", man_dir)
        .output()
        .expect("systemd-analyze (package systemd) is needed");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
}

/// The .deb `scripts/package --profile dev` built (scripts/test builds it before the root
/// tests, as the user: `RE6MESH_DEB`), else built here.
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("RE6MESH_DEB") {
        return p.into();
    }
    let o = run(Command::new(format!("{ROOT}/scripts/package")).args(["--profile", "dev"]));
    let path = String::from_utf8_lossy(&o.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    PathBuf::from(path)
}

#[test]
fn root_deb_installs_into_a_throwaway_root_and_purges_clean() {
    if !require_root("root_deb_installs_into_a_throwaway_root_and_purges_clean") {
        return;
    }
    let deb = deb();
    assert!(deb.is_file(), "no package at {}", deb.display());
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    // the least of a system: the account files postinst edits, dpkg's database
    for d in ["etc", "var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nusers:x:100:\n").unwrap();
    std::fs::write(r.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(r.join("etc/gshadow"), "root:*::\n").unwrap();
    let dpkg = |args: &[&str]| {
        // chrootless: the maintainer scripts run here with DPKG_ROOT set (the root has no
        // shell to chroot into); libc6 is not in the throw-away database
        run(Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args))
    };
    dpkg(&["-i", deb.to_str().unwrap()]);

    let bin = r.join("usr/bin/mesh");
    assert_eq!(mode(&bin), 0o755);
    let v = run(Command::new(&bin).arg("--version"));
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("mesh "));
    let units: Vec<PathBuf> = ["re6mesh.service", "re6mesh-registry.service"]
        .iter()
        .map(|u| r.join("usr/lib/systemd/system").join(u))
        .collect();
    for (path, want) in [
        (units[0].clone(), 0o644),
        (units[1].clone(), 0o644),
        (r.join("usr/share/bash-completion/completions/mesh"), 0o644),
        (r.join("usr/share/zsh/vendor-completions/_mesh"), 0o644),
        (
            r.join("usr/share/fish/vendor_completions.d/mesh.fish"),
            0o644,
        ),
        (r.join("usr/share/man/man1/mesh.1.gz"), 0o644),
        (r.join("usr/share/man/man1/mesh-setup-tun.1.gz"), 0o644),
        (r.join("usr/share/doc/re6mesh/copyright"), 0o644),
        (r.join("etc/xdg/autostart/re6mesh-tray.desktop"), 0o644),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
        assert_eq!(
            std::fs::metadata(&path).unwrap().uid(),
            0,
            "{}",
            path.display()
        );
    }
    let bash =
        std::fs::read_to_string(r.join("usr/share/bash-completion/completions/mesh")).unwrap();
    assert!(
        bash.contains("setup-tun"),
        "the completions come from this binary"
    );
    verify_units(&units, "/usr/bin/mesh", &bin, &r.join("usr/share/man"));
    autostart_runs(
        &r.join("etc/xdg/autostart/re6mesh-tray.desktop"),
        "/usr/bin/mesh",
    );

    // postinst: a system group and user, nothing enabled (no symlink under etc/systemd)
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    let line = group
        .lines()
        .find(|l| l.starts_with("re6mesh:"))
        .expect("group re6mesh");
    let gid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();
    assert!(gid < 1000, "a system group: {line}");
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("re6mesh:"))
        .expect("user re6mesh");
    assert!(
        user.ends_with(":/var/lib/re6mesh/registry:/usr/sbin/nologin"),
        "{user}"
    );
    assert!(
        !r.join("etc/systemd").exists(),
        "postinst enabled something"
    );

    // remove keeps the accounts, purge takes them (they were the package's)
    dpkg(&["--remove", "re6mesh"]);
    assert!(!bin.exists());
    assert!(
        std::fs::read_to_string(r.join("etc/group"))
            .unwrap()
            .contains("re6mesh:")
    );
    dpkg(&["--purge", "re6mesh"]);
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert!(
        !group.contains("re6mesh") && !passwd.contains("re6mesh"),
        "{group}{passwd}"
    );
    assert!(group.contains("users:x:100:"), "other groups stay");
    assert!(!r.join("var/lib/re6mesh-package").exists());

    // a group that was there before the package is not the package's to remove
    std::fs::write(r.join("etc/group"), "root:x:0:\nre6mesh:x:990:alice\n").unwrap();
    dpkg(&["-i", deb.to_str().unwrap()]);
    dpkg(&["--purge", "re6mesh"]);
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    assert!(group.contains("re6mesh:x:990:alice"), "{group}");
    assert!(
        !std::fs::read_to_string(r.join("etc/passwd"))
            .unwrap()
            .contains("re6mesh")
    );
}

#[test]
fn install_sh_stages_into_a_destdir_and_uninstalls() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let script = format!("{ROOT}/installers/install.sh");
    let o = run(Command::new("sh").args([
        &script,
        "--binary",
        MESH,
        "--prefix",
        "/opt/re6",
        "--destdir",
        d.to_str().unwrap(),
    ]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing was enabled"));
    let bin = d.join("opt/re6/bin/mesh");
    assert_eq!(mode(&bin), 0o755);
    let units: Vec<PathBuf> = ["re6mesh.service", "re6mesh-registry.service"]
        .iter()
        .map(|u| d.join("etc/systemd/system").join(u))
        .collect();
    for p in units.iter().cloned().chain([
        d.join("opt/re6/share/bash-completion/completions/mesh"),
        d.join("opt/re6/share/zsh/site-functions/_mesh"),
        d.join("opt/re6/share/fish/vendor_completions.d/mesh.fish"),
        d.join("opt/re6/share/man/man1/mesh.1"),
        d.join("opt/re6/share/man/man1/mesh-setup-tun.1"),
        d.join("etc/xdg/autostart/re6mesh-tray.desktop"),
    ]) {
        assert_eq!(mode(&p), 0o644, "{}", p.display());
    }
    autostart_runs(
        &d.join("etc/xdg/autostart/re6mesh-tray.desktop"),
        "/opt/re6/bin/mesh",
    );
    verify_units(
        &units,
        "/opt/re6/bin/mesh",
        &bin,
        &d.join("opt/re6/share/man"),
    );
    run(Command::new("sh").args([
        &script,
        "--uninstall",
        "--prefix",
        "/opt/re6",
        "--destdir",
        d.to_str().unwrap(),
    ]));
    let left: Vec<_> = walk(d);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The tray's XDG autostart entry starts `mesh tray` from where the binary was installed.
fn autostart_runs(entry: &Path, binary: &str) {
    let text = std::fs::read_to_string(entry).unwrap();
    assert!(text.starts_with("[Desktop Entry]\n"), "{text}");
    assert!(
        text.lines().any(|l| l == format!("Exec={binary} tray")),
        "Exec names {binary}: {text}"
    );
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Runs `mesh args…` inside the namespace as uid/gid 65534, no supplementary groups.
fn as_nobody(rig: &Rig, mesh: &Path, args: &[&str]) -> Output {
    let mut argv = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        mesh.to_str().unwrap(),
    ];
    argv.extend_from_slice(args);
    rig.exec_status("u", &argv).unwrap()
}

fn has_address(rig: &Rig, addr: &str) -> bool {
    let o = rig
        .exec_status("u", &["ip", "-6", "addr", "show", "dev", "mesh0"])
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains(addr)
}

struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for f in ["node.log", "root-node.log", "registry.log"] {
                eprintln!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(self.0.join(f)).unwrap_or_default()
                );
            }
        }
    }
}

#[test]
fn root_unprivileged_user_runs_mesh_up_on_a_tun_set_up_for_it() {
    if !require_root("root_unprivileged_user_runs_mesh_up_on_a_tun_set_up_for_it") {
        return;
    }
    let _tun = TunDeviceForAll::ensure();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _logs = LogOnPanic(t.to_path_buf());
    // the binary where uid 65534 may run it (as an installed one would be)
    let mesh = t.join("mesh");
    std::fs::copy(MESH, &mesh).unwrap();
    std::fs::set_permissions(&mesh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user_dir = t.join("user");
    std::fs::create_dir(&user_dir).unwrap();
    std::os::unix::fs::chown(&user_dir, Some(65534), Some(65534)).unwrap();
    let user = user_dir.to_str().unwrap();

    let mut rig = Rig::new("pkgtun").unwrap();
    rig.add_ns("u").unwrap();
    let port = "18443";
    let reg = t.join("registry");
    run(Command::new(&mesh).args([
        "registry",
        "init",
        "--state-dir",
        reg.to_str().unwrap(),
        "--url",
        &format!("https://[::1]:{port}"),
    ]));
    let log = Stdio::from(std::fs::File::create(t.join("registry.log")).unwrap());
    rig.spawn(
        "u",
        mesh.to_str().unwrap(),
        &[
            "registry",
            "serve",
            "--state-dir",
            reg.to_str().unwrap(),
            "--listen",
            &format!("[::1]:{port}"),
        ],
        Stdio::null(),
        log,
    )
    .unwrap();
    let token = run(Command::new(&mesh).args([
        "registry",
        "token",
        "create",
        "--state-dir",
        reg.to_str().unwrap(),
    ]));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    // the user joins (retried until the registry listens)
    wait_until("uid 65534 to join", Duration::from_secs(20), || {
        as_nobody(&rig, &mesh, &["join", &token, "--state-dir", user])
            .status
            .success()
    });
    let st = re6mesh::state::load(&user_dir).unwrap();
    let address = re6mesh::identity::node_address(&st.facts.prefix);
    let cidr = format!("{address}/{}", st.params.network.prefix_len());

    // a clone device no user may open (0600, as on some minimal VMs): exit 2 and the
    // sentence saying so, before the two fixes that would not help yet
    {
        use std::os::unix::fs::PermissionsExt;
        let before = std::fs::metadata("/dev/net/tun")
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o600)).unwrap();
        let o = as_nobody(&rig, &mesh, &["up", "--foreground", "--state-dir", user]);
        std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(before)).unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(
            err.trim().lines().last().unwrap_or_default(),
            "error: no permission to open the TUN device mesh0: /dev/net/tun is not readable and \
             writable by you: have root give it its usual mode (`sudo chmod 0666 /dev/net/tun`; \
             the kernel still checks who may use each device), then run `mesh up` again for the \
             next step",
            "{err}"
        );
    }

    // no TUN given, no capability: exit 2 and the sentence naming both fixes
    let o = as_nobody(&rig, &mesh, &["up", "--foreground", "--state-dir", user]);
    let err = String::from_utf8_lossy(&o.stderr);
    let exe = mesh.display();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim().lines().last().unwrap_or_default(),
        format!(
            "error: no permission to open the TUN device mesh0: have root set one up for you once \
             (`sudo {exe} setup-tun --user nobody`), or give {exe} the network capability \
             (`sudo setcap cap_net_admin+ep {exe}`)"
        ),
        "{err}"
    );

    // a device given before the user joined (no address): exit 2, set it up again
    let empty = t.join("empty");
    std::fs::create_dir(&empty).unwrap();
    rig.exec(
        "u",
        &[
            mesh.to_str().unwrap(),
            "setup-tun",
            "--user",
            "nobody",
            "--state-dir",
            empty.to_str().unwrap(),
        ],
    )
    .unwrap();
    let o = as_nobody(&rig, &mesh, &["up", "--foreground", "--state-dir", user]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "the TUN device mesh0 set up for you lacks this node's address {cidr}"
        )),
        "{err}"
    );

    // root, once (again: the device is replaced, now with the address)
    let o = rig
        .exec(
            "u",
            &[
                mesh.to_str().unwrap(),
                "setup-tun",
                "--user",
                "nobody",
                "--state-dir",
                user,
            ],
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&cidr),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let owner = rig
        .exec("u", &["cat", "/sys/class/net/mesh0/owner"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "65534");
    assert!(has_address(&rig, &cidr));

    // the user's node, without any capability
    let log = Stdio::from(std::fs::File::create(t.join("node.log")).unwrap());
    let pid = rig
        .spawn(
            "u",
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                mesh.to_str().unwrap(),
                "up",
                "--foreground",
                "--state-dir",
                user,
            ],
            Stdio::null(),
            log,
        )
        .unwrap();
    let state = |rig: &Rig| {
        let o = as_nobody(rig, &mesh, &["status", "--json", "--state-dir", user]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_owned))
    };
    wait_until("the user's node to answer", Duration::from_secs(20), || {
        matches!(state(&rig).as_deref(), Some("connecting" | "up"))
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    let cap_eff = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap()
        .to_owned();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    assert_eq!(
        cap_eff.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{cap_eff}"
    );
    assert!(
        std::fs::read_to_string(t.join("node.log"))
            .unwrap()
            .contains("persistent TUN device")
    );

    // down and up as the user: the node follows; the address is root's and stays (documented)
    let o = as_nobody(&rig, &mesh, &["down", "--state-dir", user]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_until("the node to be down", Duration::from_secs(10), || {
        state(&rig).as_deref() == Some("down")
    });
    assert!(has_address(&rig, &cidr));
    let o = as_nobody(&rig, &mesh, &["up", "--state-dir", user]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_until("the node to be back", Duration::from_secs(10), || {
        matches!(state(&rig).as_deref(), Some("connecting" | "up"))
    });
    let o = as_nobody(&rig, &mesh, &["down", "--exit", "--state-dir", user]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut exited = None;
    wait_until("the node to exit", Duration::from_secs(10), || {
        exited = rig.child(pid).and_then(|c| c.try_wait().ok().flatten());
        exited.is_some()
    });
    assert_eq!(exited.and_then(|s| s.code()), Some(0));
    assert!(
        has_address(&rig, &cidr),
        "the persistent device outlives the node"
    );

    // root (or a binary with the capability) on that device: it has the address already, and
    // is used as it is
    let log = Stdio::from(std::fs::File::create(t.join("root-node.log")).unwrap());
    let pid = rig
        .spawn(
            "u",
            mesh.to_str().unwrap(),
            &["up", "--foreground", "--state-dir", user],
            Stdio::null(),
            log,
        )
        .unwrap();
    // (its control socket is root's: asked as root)
    let root_state = |rig: &Rig| {
        let o = rig
            .exec_status(
                "u",
                &[
                    mesh.to_str().unwrap(),
                    "status",
                    "--json",
                    "--state-dir",
                    user,
                ],
            )
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_owned))
    };
    wait_until(
        "root's node on the user's device to answer",
        Duration::from_secs(20),
        || matches!(root_state(&rig).as_deref(), Some("connecting" | "up")),
    );
    assert!(
        std::fs::read_to_string(t.join("root-node.log"))
            .unwrap()
            .contains("persistent TUN device")
    );
    let o = rig
        .exec_status(
            "u",
            &[
                mesh.to_str().unwrap(),
                "down",
                "--exit",
                "--state-dir",
                user,
            ],
        )
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut exited = None;
    wait_until("root's node to exit", Duration::from_secs(10), || {
        exited = rig.child(pid).and_then(|c| c.try_wait().ok().flatten());
        exited.is_some()
    });
    assert_eq!(exited.and_then(|s| s.code()), Some(0));

    let o = rig
        .exec("u", &[mesh.to_str().unwrap(), "setup-tun", "--remove"])
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("removed"));
    let o = rig
        .exec_status("u", &["ip", "link", "show", "mesh0"])
        .unwrap();
    assert!(!o.status.success(), "mesh0 is still there");
}

/// The service's account as the unit sets it up (`User=re6mesh`, `Group=re6mesh`,
/// `AmbientCapabilities=CAP_NET_ADMIN`, a state directory of that user, 0710): the node runs
/// with no uid 0 and no capability but CAP_NET_ADMIN, reads what root's `mesh join` wrote into
/// its directory, shares its control socket with the group, and members of the group drive it
/// without sudo while others are refused. The group is a stand-in `re6mesh` line in a copy of
/// /etc/group bind-mounted in the node's private mount namespace (the machine's is untouched).
#[test]
fn root_service_node_runs_as_its_own_user_with_only_cap_net_admin() {
    if !require_root("root_service_node_runs_as_its_own_user_with_only_cap_net_admin") {
        return;
    }
    let _tun = TunDeviceForAll::ensure();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _logs = LogOnPanic(t.to_path_buf());
    let mesh = t.join("mesh");
    std::fs::copy(MESH, &mesh).unwrap();
    std::fs::set_permissions(&mesh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mesh_s = mesh.to_str().unwrap();

    // the group: the machine's re6mesh if it has one, else a stand-in gid nobody else uses
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    let existing = groups.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"re6mesh")).then(|| f.get(2)?.parse::<u32>().ok())?
    });
    let gid = existing.unwrap_or(61_234);
    let fake_group = t.join("group");
    let mut text = groups.clone();
    if existing.is_none() {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("re6mesh:x:{gid}:\n"));
    }
    std::fs::write(&fake_group, text).unwrap();
    std::fs::set_permissions(&fake_group, std::fs::Permissions::from_mode(0o644)).unwrap();

    // the state directory as systemd's StateDirectory= makes it for User=/Group=
    let dir = t.join("state");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710)).unwrap();
    let dir_s = dir.to_str().unwrap();

    let mut rig = Rig::new("pkgsvc").unwrap();
    rig.add_ns("s").unwrap();
    let port = "18444";
    let reg = t.join("registry");
    run(Command::new(&mesh).args([
        "registry",
        "init",
        "--state-dir",
        reg.to_str().unwrap(),
        "--url",
        &format!("https://[::1]:{port}"),
    ]));
    let log = Stdio::from(std::fs::File::create(t.join("registry.log")).unwrap());
    rig.spawn(
        "s",
        mesh_s,
        &[
            "registry",
            "serve",
            "--state-dir",
            reg.to_str().unwrap(),
            "--listen",
            &format!("[::1]:{port}"),
        ],
        Stdio::null(),
        log,
    )
    .unwrap();
    let token = run(Command::new(&mesh).args([
        "registry",
        "token",
        "create",
        "--state-dir",
        reg.to_str().unwrap(),
    ]));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    // `sudo mesh join TOKEN` into the service's directory (retried until the registry listens)
    wait_until("root to join", Duration::from_secs(20), || {
        rig.exec_status("s", &[mesh_s, "join", &token, "--state-dir", dir_s])
            .is_ok_and(|o| o.status.success())
    });
    for f in std::fs::read_dir(&dir).unwrap() {
        let m = f.unwrap().metadata().unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (65534, gid),
            "root's files go to the service user"
        );
    }

    // the unit's account: uid 65534, group re6mesh, CAP_NET_ADMIN ambient
    let gid_arg = format!("--regid={gid}");
    let log = Stdio::from(std::fs::File::create(t.join("node.log")).unwrap());
    let pid = rig
        .spawn(
            "s",
            "unshare",
            &[
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount --bind \"$0\" /etc/group && exec \"$@\"",
                fake_group.to_str().unwrap(),
                "setpriv",
                "--reuid=65534",
                &gid_arg,
                "--clear-groups",
                "--inh-caps=+net_admin",
                "--ambient-caps=+net_admin",
                mesh_s,
                "up",
                "--foreground",
                "--state-dir",
                dir_s,
            ],
            Stdio::null(),
            log,
        )
        .unwrap();
    let as_user = |rig: &Rig, groups: &str, args: &[&str]| {
        let mut argv = vec!["setpriv", "--reuid=65533", "--regid=65533", groups, mesh_s];
        argv.extend_from_slice(args);
        rig.exec_status("s", &argv).unwrap()
    };
    let member = format!("--groups={gid}");
    let state = |rig: &Rig| {
        let o = as_user(rig, &member, &["status", "--json", "--state-dir", dir_s]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_owned))
    };
    wait_until(
        "the service node to answer a member of its group",
        Duration::from_secs(20),
        || matches!(state(&rig).as_deref(), Some("connecting" | "up")),
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().skip(1).map(str::to_owned).collect())
            .unwrap_or_else(Vec::new)
    };
    assert!(field("Uid:").iter().all(|u| u == "65534"), "{status}");
    assert!(
        field("Gid:").iter().all(|g| *g == gid.to_string()),
        "{status}"
    );
    // CAP_NET_ADMIN is bit 12: effective, and nothing else
    assert_eq!(field("CapEff:"), ["0000000000001000"], "{status}");
    let sock = std::fs::metadata(dir.join("control.sock")).unwrap();
    assert_eq!((sock.mode() & 0o777, sock.gid()), (0o660, gid));
    assert!(
        rig.exec_status("s", &["ip", "link", "show", "mesh0"])
            .unwrap()
            .status
            .success(),
        "the node made its TUN device with the capability"
    );

    // someone outside the group is refused
    let o = as_user(&rig, "--clear-groups", &["status", "--state-dir", dir_s]);
    assert!(!o.status.success(), "an outsider reached the node");

    // a member disconnects, reconnects and stops it, without sudo
    for (args, want) in [(&["down"][..], "down"), (&["up"][..], "connecting|up")] {
        let mut a = args.to_vec();
        a.extend(["--state-dir", dir_s]);
        let o = as_user(&rig, &member, &a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        wait_until(
            &format!("the node to be {want}"),
            Duration::from_secs(10),
            || state(&rig).is_some_and(|s| want.split('|').any(|w| w == s)),
        );
    }
    let o = as_user(&rig, &member, &["down", "--exit", "--state-dir", dir_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut exited = None;
    wait_until("the node to exit", Duration::from_secs(10), || {
        exited = rig.child(pid).and_then(|c| c.try_wait().ok().flatten());
        exited.is_some()
    });
    assert_eq!(exited.and_then(|s| s.code()), Some(0));
}
