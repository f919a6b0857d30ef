//! Linux: the node as a systemd unit. The unit is `installers/systemd/re6mesh.service`, built
//! into the binary, with the path of the running `mesh` put in its `ExecStart`; it runs as user
//! re6mesh (created here, as the packages do) with only CAP_NET_ADMIN.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{
    InstallOptions, file_status_line, remove_definition, require_root, run_tool, status_line,
};
use crate::control::SERVICE_GROUP;

/// The unit as shipped (ExecStart names `/usr/local/bin/mesh`).
pub const UNIT: &str = include_str!("../../../installers/systemd/re6mesh.service");
/// The unit's name.
pub const UNIT_NAME: &str = "re6mesh.service";
const UNIT_DIR: &str = "/etc/systemd/system";
/// Where the shipped unit expects the binary.
pub const SHIPPED_BINARY: &str = "/usr/local/bin/mesh";

/// The unit with `binary` in its `ExecStart`. The binary must survive the unit's sandbox:
/// home directories are hidden (ProtectHome) and /tmp is private (PrivateTmp).
pub fn render_unit(binary: &Path) -> anyhow::Result<String> {
    let text = binary
        .to_str()
        .filter(|s| !s.contains(char::is_whitespace))
        .with_context(|| {
            format!(
                "{} cannot go into a unit file (spaces or not UTF-8): install mesh as {SHIPPED_BINARY}",
                binary.display()
            )
        })?;
    for hidden in ["/home/", "/root/", "/tmp/", "/run/user/"] {
        if text.starts_with(hidden) {
            bail!(
                "the service cannot run {text}: {hidden} is hidden from it; copy the binary first \
                 (`sudo install -m 755 {text} {SHIPPED_BINARY}`) and run `sudo {SHIPPED_BINARY} service install`"
            );
        }
    }
    Ok(UNIT.replace(SHIPPED_BINARY, text))
}

/// Writes the unit, creates group and user re6mesh, enables the service (and starts it once
/// this machine has joined).
pub fn install(o: InstallOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the path of this program")?;
    let unit = render_unit(&exe)?;
    if o.print {
        print!("{unit}");
        return Ok(());
    }
    require_root("install")?;
    if crate::control::service_group_id().is_none() {
        run_tool("groupadd", &["--system", SERVICE_GROUP])?;
        println!("created group {SERVICE_GROUP}");
    }
    // the unit's User= (the same account the packages create)
    if !service_user_exists() {
        run_tool(
            "useradd",
            &[
                "--system",
                "--gid",
                SERVICE_GROUP,
                "--home-dir",
                "/var/lib/re6mesh/registry",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "re6mesh node and registry",
                SERVICE_GROUP,
            ],
        )?;
        println!("created user {SERVICE_GROUP}");
    }
    let path = unit_path();
    crate::fsutil::write_atomic(&path, unit.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    run_tool("systemctl", &["daemon-reload"])?;
    run_tool("systemctl", &["enable", "--now", UNIT_NAME])?;
    let joined = crate::state::is_joined(&crate::paths::system_node_dir());
    println!(
        "enabled {UNIT_NAME}{}",
        if joined {
            " and started it"
        } else {
            "; it starts once this machine has joined (`sudo mesh join TOKEN`, then `sudo systemctl start re6mesh`)"
        }
    );
    println!(
        "members of group {SERVICE_GROUP} use the node without sudo: `sudo usermod -aG {SERVICE_GROUP} $USER`, then log in again"
    );
    Ok(())
}

/// Stops and disables the service and removes its unit (state directory, group and user stay).
pub fn uninstall() -> anyhow::Result<()> {
    require_root("uninstall")?;
    let path = unit_path();
    if !path.exists() {
        println!("{} is not installed", path.display());
        return Ok(());
    }
    run_tool("systemctl", &["disable", "--now", UNIT_NAME])?;
    remove_definition(&path, &format!(" and group {SERVICE_GROUP} are"))?;
    run_tool("systemctl", &["daemon-reload"])
}

/// Is the unit installed, enabled, running; do group and user exist.
pub fn status() -> anyhow::Result<()> {
    file_status_line("unit", &unit_path());
    // `systemctl is-enabled/is-active` print one word and exit non-zero for "no": both are answers.
    for what in ["is-enabled", "is-active"] {
        let word = Command::new("systemctl")
            .args([what, UNIT_NAME])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| "unknown (no systemctl)".to_owned());
        status_line(
            what.trim_start_matches("is-"),
            if word.is_empty() { "unknown" } else { &word },
        );
    }
    let exists = |yes: bool| if yes { "exists" } else { "missing" };
    status_line(
        "group",
        &format!(
            "{SERVICE_GROUP} ({})",
            exists(crate::control::service_group_id().is_some())
        ),
    );
    status_line(
        "user",
        &format!("{SERVICE_GROUP} ({})", exists(service_user_exists())),
    );
    Ok(())
}

/// Whether the account the unit runs as (`User=re6mesh`) exists.
fn service_user_exists() -> bool {
    #[cfg(unix)]
    {
        crate::platform::privilege::find_user(SERVICE_GROUP).is_some()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

fn unit_path() -> PathBuf {
    Path::new(UNIT_DIR).join(UNIT_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_unit_renders_unchanged_for_usr_local_bin() {
        assert_eq!(render_unit(Path::new(SHIPPED_BINARY)).unwrap(), UNIT);
        let u = render_unit(Path::new("/usr/bin/mesh")).unwrap();
        assert!(
            u.contains("ExecStart=/usr/bin/mesh up --foreground --state-dir /var/lib/re6mesh\n")
        );
        assert!(!u.contains(SHIPPED_BINARY));
    }

    #[test]
    fn refuses_binaries_the_sandbox_hides() {
        for p in [
            "/home/alice/re6mesh/target/release/mesh",
            "/tmp/mesh",
            "/opt/my mesh",
        ] {
            let e = render_unit(Path::new(p)).unwrap_err().to_string();
            assert!(e.contains("/usr/local/bin/mesh"), "{e}");
        }
    }

    /// Every directive line of the unit is preceded by a comment (STYLE 15), and the
    /// hardening the issue asks for is there.
    #[test]
    fn unit_is_commented_and_hardened() {
        let mut commented = false;
        for line in UNIT.lines() {
            if line.starts_with('#') {
                commented = true;
            } else if line.is_empty() || line.starts_with('[') {
                commented = false;
            } else {
                assert!(commented, "no comment above {line:?}");
            }
        }
        for want in [
            "CapabilityBoundingSet=CAP_NET_ADMIN\n",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\n",
            "UMask=0077\n",
            "Group=re6mesh\n",
            "User=re6mesh\n",
            "AmbientCapabilities=CAP_NET_ADMIN\n",
            "StateDirectory=re6mesh\n",
            "NoNewPrivileges=yes\n",
            "DeviceAllow=/dev/net/tun rw\n",
            "ProtectSystem=strict\n",
        ] {
            assert!(UNIT.contains(want), "missing {want:?}");
        }
    }

    /// `systemd-analyze verify` on the unit rendered for this test binary's `mesh` (it checks
    /// that ExecStart exists) and on the registry's unit. Skips loudly without systemd-analyze.
    #[test]
    fn units_pass_systemd_analyze_verify() {
        let have = Command::new("systemd-analyze").arg("--version").output();
        if !have.is_ok_and(|o| o.status.success()) {
            println!(
                "SKIPPED units_pass_systemd_analyze_verify: systemd-analyze not installed (apt-get install systemd)"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // A real file outside the hidden trees stands in for the binary.
        let registry = include_str!("../../../installers/systemd/re6mesh-registry.service");
        let bin = Path::new("/bin/true");
        let node = UNIT.replace(SHIPPED_BINARY, bin.to_str().unwrap());
        let registry = registry.replace(SHIPPED_BINARY, bin.to_str().unwrap());
        for (name, text) in [
            ("re6mesh.service", node),
            ("re6mesh-registry.service", registry),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            // --man=no: the man page ships with the package, not with the test tree.
            let o = Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                o.status.success() && o.stderr.is_empty(),
                "{name}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}
