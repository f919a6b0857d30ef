//! `mesh update [--check] [--source URL] [--json]`: replace this binary with the newest signed
//! release (docs/RELEASING.md). The IO shell around `crate::update`: it reads the dpkg file
//! list, fetches the manifest, and lets `self_update` download, verify the zipsign signature
//! against the built-in release key, extract and atomically replace the running executable.
//! Blocking HTTP (ureq): dispatched before any tokio runtime exists, like every other command.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use self_update::{Release, ReleaseSource};
use semver::Version;

use crate::update::{self as core, Decision, Listed};

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Only say what would happen (current and newest version); install nothing.
    #[arg(long)]
    check: bool,
    /// JSON output: {"current", "latest", "update_available", "packaged"}, and "updated".
    #[arg(long)]
    json: bool,
    /// The release manifest: an https URL (a URL ending in `/` gets `manifest.json`); plain
    /// http only to 127.0.0.1 or [::1], for tests. The default is a placeholder until the
    /// first published release.
    #[arg(long, value_name = "URL", default_value = core::DEFAULT_SOURCE, value_parser = parse_source)]
    source: String,
}

fn parse_source(s: &str) -> std::result::Result<String, String> {
    core::manifest_url(s).map_err(|e| e.to_string())
}

/// A refusal that is the user's situation, not a failure (packaged binary, downgrade):
/// exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// One HTTP request (manifest or archive) may take this long.
const TIMEOUT: Duration = Duration::from_secs(120);

const PACKAGED: &str = "this mesh was installed by the re6mesh package; update it with your package manager (apt upgrade re6mesh)";

pub fn run(a: UpdateArgs) -> Result<()> {
    let target = self_update::get_target();
    let current = Version::parse(env!("CARGO_PKG_VERSION")).context("this binary's version")?;
    let key = core::verifying_key(test_key().as_deref())?;
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let packaged = packaged(&exe)?;
    if packaged && !a.check {
        return Err(Refused(format!("mesh update refused: {PACKAGED}")).into());
    }

    let releases = fetch(&a.source)?;
    let listed: Vec<Listed> = releases
        .iter()
        .filter_map(|r| {
            Some(Listed {
                version: Version::parse(r.version()).ok()?,
                assets: r.assets().iter().map(|x| x.name().to_string()).collect(),
            })
        })
        .collect();
    let decision = core::decide(&current, &listed, target);
    if matches!(decision, Decision::Empty) {
        anyhow::bail!("the release manifest {} lists no release", a.source);
    }
    if a.check {
        report_check(&a, &current, &decision, packaged, target);
        return Ok(());
    }
    match decision {
        Decision::Empty => anyhow::bail!("the release manifest {} lists no release", a.source),
        Decision::UpToDate { latest } => {
            if a.json {
                println!("{}", json(&current, Some(&latest), false, packaged, false));
            } else {
                println!(
                    "mesh {current} is up to date (the newest release at {}).",
                    a.source
                );
            }
            Ok(())
        }
        Decision::Downgrade { latest } => Err(Refused(format!(
            "the newest release at {} is {latest}, older than this mesh ({current}): refusing to downgrade",
            a.source
        ))
        .into()),
        Decision::NoAsset { latest, asset } => anyhow::bail!(
            "release {latest} at {} has no archive for this platform ({asset})",
            a.source
        ),
        Decision::Install { latest, asset } => {
            let release = releases
                .into_iter()
                .find(|r| {
                    Version::parse(r.version()).is_ok_and(|v| v == latest)
                        && r.assets().iter().any(|x| x.name() == asset)
                })
                .context("the chosen release vanished from the manifest")?;
            install(release, &asset, &current, key, target)?;
            if a.json {
                println!("{}", json(&current, Some(&latest), true, packaged, true));
            } else {
                println!("mesh updated from {current} to {latest} ({}).", exe.display());
            }
            Ok(())
        }
    }
}

fn report_check(a: &UpdateArgs, current: &Version, d: &Decision, packaged: bool, target: &str) {
    if a.json {
        println!("{}", json(current, d.latest(), d.newer(), packaged, false));
        return;
    }
    match d {
        Decision::Install { latest, .. } => {
            println!("mesh {current}: {latest} is available from {}.", a.source);
        }
        Decision::UpToDate { .. } => {
            println!(
                "mesh {current} is up to date (the newest release at {}).",
                a.source
            );
        }
        Decision::Downgrade { latest } => println!(
            "mesh {current} is newer than the newest release at {} ({latest}); mesh update would refuse to downgrade.",
            a.source
        ),
        Decision::NoAsset { latest, asset } => println!(
            "mesh {current}: {latest} is available from {}, but without an archive for {target} ({asset}).",
            a.source
        ),
        Decision::Empty => {}
    }
    if packaged {
        println!("{PACKAGED}.");
    } else if matches!(d, Decision::Install { .. }) {
        println!("Run `mesh update` to install it.");
    }
}

fn json(
    current: &Version,
    latest: Option<&Version>,
    update_available: bool,
    packaged: bool,
    updated: bool,
) -> serde_json::Value {
    serde_json::json!({
        "current": current.to_string(),
        "latest": latest.map(Version::to_string),
        "update_available": update_available,
        "packaged": packaged,
        "updated": updated,
    })
}

/// The test key override: read only by builds with `debug_assertions` (tests); a release build
/// does not look at the environment at all (and `core::verifying_key` ignores it as well).
fn test_key() -> Option<String> {
    #[cfg(debug_assertions)]
    {
        std::env::var(core::TEST_KEY_ENV).ok()
    }
    #[cfg(not(debug_assertions))]
    {
        None
    }
}

/// Whether dpkg's file list of package re6mesh names the running executable (Linux only).
#[cfg(target_os = "linux")]
fn packaged(exe: &Path) -> Result<bool> {
    #[cfg(debug_assertions)]
    let admin = std::env::var_os(core::DPKG_DIR_ENV)
        .map_or_else(|| "/var/lib/dpkg".into(), std::path::PathBuf::from);
    #[cfg(not(debug_assertions))]
    let admin = std::path::PathBuf::from("/var/lib/dpkg");
    let list = admin.join("info").join(format!("{}.list", core::PACKAGE));
    match std::fs::read_to_string(&list) {
        Ok(text) => {
            let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
            Ok(core::listed_in_dpkg(&text, &exe, |p| {
                std::fs::canonicalize(p).ok()
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", list.display())),
    }
}

#[cfg(not(target_os = "linux"))]
fn packaged(_exe: &Path) -> Result<bool> {
    Ok(false)
}

fn fetch(url: &str) -> Result<Vec<Release>> {
    let placeholder = if url == core::DEFAULT_SOURCE {
        " (the default source is a placeholder until the first published release: pass --source URL)"
    } else {
        ""
    };
    let mut source = self_update::backends::manifest::ManifestSource::new(url);
    source.timeout(TIMEOUT);
    source
        .get_releases()
        .with_context(|| format!("cannot read the release manifest {url}{placeholder}"))
}

/// The release already chosen by `core::decide`: the updater installs exactly it.
struct Chosen(Release);

impl ReleaseSource for Chosen {
    fn get_releases(&self) -> self_update::Result<Vec<Release>> {
        Ok(vec![self.0.clone()])
    }
}

/// Download (progress bar on a terminal), verify the signature (mandatory: the key list is
/// never empty), extract `mesh` and replace the running executable atomically.
fn install(
    release: Release,
    asset: &str,
    current: &Version,
    key: [u8; 32],
    target: &str,
) -> Result<()> {
    let wanted = asset.to_string();
    let status = self_update::backends::custom::Update::configure()
        .source(Chosen(release))
        .bin_name("mesh")
        .target(target)
        .current_version(current.to_string())
        .asset_matcher(move |assets| assets.iter().find(|x| x.name() == wanted).cloned())
        .verifying_keys(vec![key])
        .show_download_progress(std::io::stderr().is_terminal())
        .show_output(false)
        .no_confirm(true)
        .timeout(TIMEOUT)
        .build()
        .context("cannot set up the update")?
        .update_extended()
        .map_err(|e| match e {
            self_update::Error::Signature(_)
            | self_update::Error::NoSignatures(_)
            | self_update::Error::SignatureNonUTF8 => anyhow::anyhow!(
                "{asset} is not signed by the re6mesh release key ({e}); nothing was installed"
            ),
            e => anyhow::Error::new(e).context(format!("cannot install {asset}")),
        })?;
    if status.is_updated() {
        Ok(())
    } else {
        anyhow::bail!("the update of {asset} did not happen (nothing newer was selected)")
    }
}
