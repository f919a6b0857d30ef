//! macOS: the node as a launchd daemon. The plist is `installers/macos/net.re6mesh.node.plist`,
//! built into the binary, with the path of the running `mesh` as its program; it goes to
//! `/Library/LaunchDaemons/` and runs the node as root (utun devices need it) while the node
//! certificate exists (launchd's `KeepAlive`/`PathState`: the join starts it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{
    InstallOptions, file_status_line, remove_definition, require_root, run_tool, status_line,
};

/// The plist as shipped (the program is `/usr/local/bin/mesh`).
pub const PLIST: &str = include_str!("../../../installers/macos/net.re6mesh.node.plist");
/// The daemon's label (launchctl's name for it, and the plist's file name).
pub const LABEL: &str = "net.re6mesh.node";
/// Where launchd reads system daemons from.
pub const DAEMON_DIR: &str = "/Library/LaunchDaemons";
/// Where the shipped plist expects the binary (the macOS package puts it there).
pub const SHIPPED_BINARY: &str = "/usr/local/bin/mesh";

/// The plist with `binary` as the program (XML-escaped).
pub fn render_plist(binary: &Path) -> anyhow::Result<String> {
    let text = binary.to_str().with_context(|| {
        format!(
            "{} cannot go into a plist (not UTF-8): install mesh as {SHIPPED_BINARY}",
            binary.display()
        )
    })?;
    // a macOS path, whatever OS renders it (the unit tests run everywhere)
    if !text.starts_with('/') {
        bail!("launchd needs an absolute program path, not {text}");
    }
    Ok(PLIST.replace(
        &format!("<string>{SHIPPED_BINARY}</string>"),
        &format!("<string>{}</string>", xml_escape(text)),
    ))
}

/// `text` as XML character data.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `/Library/LaunchDaemons/net.re6mesh.node.plist`.
pub fn plist_path() -> PathBuf {
    Path::new(DAEMON_DIR).join(format!("{LABEL}.plist"))
}

/// launchctl's name of the daemon in the system domain.
fn target() -> String {
    format!("system/{LABEL}")
}

/// Writes the plist and (re)loads it into launchd.
pub fn install(o: InstallOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the path of this program")?;
    let plist = render_plist(&exe)?;
    if o.print {
        print!("{plist}");
        return Ok(());
    }
    require_root("install")?;
    let path = plist_path();
    // launchd refuses a plist that is not root-owned or is writable by others.
    crate::fsutil::write_atomic(&path, plist.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    if loaded().is_some() {
        // loaded from an earlier install: replace it with the new plist
        run_tool("launchctl", &["bootout", &target()])?;
    }
    run_tool(
        "launchctl",
        &["bootstrap", "system", &path.to_string_lossy()],
    )?;
    let joined = crate::state::is_joined(&crate::paths::system_node_dir());
    println!(
        "loaded {LABEL}{}; logs in /var/log/re6mesh.log",
        if joined {
            ": the node runs now and at every boot"
        } else {
            ": the node starts by itself once this machine has joined (`sudo mesh join TOKEN`)"
        }
    );
    Ok(())
}

/// Unloads the daemon and removes its plist (the state directory stays).
pub fn uninstall() -> anyhow::Result<()> {
    require_root("uninstall")?;
    let path = plist_path();
    if loaded().is_some() {
        run_tool("launchctl", &["bootout", &target()])?;
        println!("stopped and unloaded {LABEL}");
    }
    if !path.exists() {
        println!("{} is not installed", path.display());
        return Ok(());
    }
    remove_definition(&path, " is")
}

/// Is the plist installed, the daemon loaded, the node running.
pub fn status() -> anyhow::Result<()> {
    file_status_line("plist", &plist_path());
    match loaded() {
        None => status_line("loaded", "no"),
        Some(text) => {
            status_line("loaded", "yes");
            let job = parse_print(&text);
            status_line("state", job.state.as_deref().unwrap_or("unknown"));
            if let Some(pid) = job.pid {
                status_line("pid", &pid.to_string());
            }
        }
    }
    Ok(())
}

/// `launchctl print system/<label>`'s text when the daemon is loaded.
fn loaded() -> Option<String> {
    let o = Command::new("launchctl")
        .args(["print", &target()])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// What `launchctl print` says of a job.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct JobState {
    /// `running`, `not running`, `spawn scheduled`, …
    pub state: Option<String>,
    /// The process, while it runs.
    pub pid: Option<u32>,
}

/// The job's own `state = …` and `pid = …` lines of `launchctl print` (the first, least
/// indented ones; nested sections repeat keys).
pub fn parse_print(text: &str) -> JobState {
    let mut job = JobState::default();
    for line in text.lines() {
        // the job's own keys are indented by one tab; nested dictionaries by more
        let Some(rest) = line.strip_prefix('\t') else {
            continue;
        };
        if rest.starts_with('\t') {
            continue;
        }
        let Some((key, value)) = rest.split_once(" = ") else {
            continue;
        };
        match key.trim() {
            "state" if job.state.is_none() => job.state = Some(value.trim().to_owned()),
            "pid" if job.pid.is_none() => job.pid = value.trim().parse().ok(),
            _ => {}
        }
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_plist_renders_unchanged_for_usr_local_bin() {
        assert_eq!(render_plist(Path::new(SHIPPED_BINARY)).unwrap(), PLIST);
        let p = render_plist(Path::new("/opt/re6mesh/bin/mesh")).unwrap();
        assert!(p.contains("<string>/opt/re6mesh/bin/mesh</string>\n\t\t<string>up</string>"));
        assert!(!p.contains(&format!("<string>{SHIPPED_BINARY}</string>")));
        assert!(p.contains(&format!("<string>{LABEL}</string>")));
        assert_eq!(
            plist_path(),
            Path::new("/Library/LaunchDaemons/net.re6mesh.node.plist")
        );
    }

    #[test]
    fn program_paths_are_escaped_and_must_be_absolute() {
        let p = render_plist(Path::new("/Applications/R&D <tools>/mesh")).unwrap();
        assert!(p.contains("<string>/Applications/R&amp;D &lt;tools&gt;/mesh</string>"));
        let e = render_plist(Path::new("mesh")).unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
    }

    /// The node runs the state directory's node in the foreground, while its certificate
    /// exists, with private files by default.
    #[test]
    fn plist_runs_the_system_node_once_joined() {
        // the system state directory of Linux and macOS (crate::paths::system_node_dir)
        let dir = "/var/lib/re6mesh";
        let cert = format!("{dir}/{}", crate::state::files::CERT);
        for want in [
            "<string>--foreground</string>".to_owned(),
            format!("<string>{dir}</string>"),
            format!("<key>PathState</key>\n\t\t<dict>\n\t\t\t<key>{cert}</key>\n\t\t\t<true/>"),
            "<key>Umask</key>\n\t<integer>63</integer>".to_owned(),
        ] {
            assert!(PLIST.contains(&want), "missing {want:?}");
        }
    }

    /// The plist parses as a property list (Python's plistlib, when python3 is there) with the
    /// label and program arguments launchd will use.
    #[test]
    fn plist_is_a_valid_property_list() {
        let script = "import plistlib,sys,json; d=plistlib.loads(sys.stdin.buffer.read()); \
                      print(json.dumps([d['Label'], d['ProgramArguments'], sorted(d)]))";
        let rendered = render_plist(Path::new("/opt/a&b/mesh")).unwrap();
        let child = Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            println!("SKIPPED plist_is_a_valid_property_list: python3 not installed");
            return;
        };
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(rendered.as_bytes())
                .unwrap();
        }
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                LABEL,
                [
                    "/opt/a&b/mesh",
                    "up",
                    "--foreground",
                    "--state-dir",
                    "/var/lib/re6mesh"
                ],
                [
                    "KeepAlive",
                    "Label",
                    "ProcessType",
                    "ProgramArguments",
                    "StandardErrorPath",
                    "StandardOutPath",
                    "ThrottleInterval",
                    "Umask"
                ]
            ])
        );
    }

    #[test]
    fn launchctl_print_gives_the_jobs_state_and_pid() {
        let text = "system/net.re6mesh.node = {\n\tactive count = 1\n\tpath = /Library/LaunchDaemons/net.re6mesh.node.plist\n\tstate = running\n\n\tprogram = /usr/local/bin/mesh\n\tendpoints = {\n\t\tstate = waiting\n\t}\n\tpid = 412\n}\n";
        assert_eq!(
            parse_print(text),
            JobState {
                state: Some("running".into()),
                pid: Some(412)
            }
        );
        assert_eq!(parse_print("garbage"), JobState::default());
        assert_eq!(
            parse_print("x = {\n\tstate = not running\n\tpid = abc\n}"),
            JobState {
                state: Some("not running".into()),
                pid: None
            }
        );
    }
}
