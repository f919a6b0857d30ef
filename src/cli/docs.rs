//! `mesh completions SHELL`, `mesh man [--out DIR]` and `mesh version [--json]`: no state
//! directory, no root.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};

/// The git commit the binary was built from (build.rs), or "unknown".
pub const COMMIT: &str = env!("MESH_GIT_COMMIT");

/// `0.1.0 (protocol 1, commit 0123456789ab)`: what `mesh --version` prints after `mesh `.
pub fn version_line() -> &'static str {
    static LINE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{} (protocol {}, commit {COMMIT})",
            env!("CARGO_PKG_VERSION"),
            crate::params::PROTOCOL_VERSION
        )
    });
    LINE.as_str()
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command (`mesh.1`, `mesh-up.1`, …) into DIR instead of printing
    /// the page of `mesh`.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// JSON output: {"version", "protocol", "commit"}.
    #[arg(long)]
    json: bool,
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn to_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

pub fn completions(a: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "mesh", &mut buf);
    to_stdout(&buf)
}

pub fn man(a: ManArgs) -> anyhow::Result<()> {
    let cmd = super::Cli::command();
    match a.out {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            println!("man pages written to {}", dir.display());
            Ok(())
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            to_stdout(&buf)
        }
    }
}

pub fn version(a: VersionArgs) -> anyhow::Result<()> {
    if a.json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": crate::params::PROTOCOL_VERSION,
            "commit": COMMIT,
        });
        println!("{v}");
    } else {
        println!("mesh {}", version_line());
    }
    Ok(())
}
