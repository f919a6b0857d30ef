//! `mesh update` decisions, sans-IO (docs/RELEASING.md): which release source is acceptable,
//! which release to install, which archive name a release must carry, which key signs it, and
//! whether a dpkg file list owns the running binary. The IO shell is `cli::update`: it reads
//! the manifest, the file list and the environment, and hands the results here.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use semver::Version;

/// The release public key (ed25519, zipsign): the only key whose signature `mesh update`
/// accepts in a release build. Its private half is not in the repository (docs/RELEASING.md).
pub const RELEASE_KEY: [u8; 32] = [
    0x8e, 0xc0, 0x2b, 0xe3, 0x19, 0x85, 0x3d, 0x3d, 0x43, 0x80, 0x43, 0x44, 0x00, 0x5e, 0x3a, 0xde,
    0x89, 0x75, 0x62, 0xe6, 0xf5, 0x0a, 0xfc, 0xd9, 0x03, 0x89, 0x21, 0xaf, 0x5f, 0xde, 0x4d, 0xe2,
];

/// Where releases come from unless `--source` says otherwise: a placeholder in the project's
/// domain, to be set at release time (docs/RELEASING.md).
pub const DEFAULT_SOURCE: &str = "https://example.invalid/re6mesh/releases/manifest.json";

/// The environment variable that replaces [`RELEASE_KEY`] — honoured only by builds with
/// `debug_assertions` (the test builds); a release build never reads it.
pub const TEST_KEY_ENV: &str = "RE6MESH_UPDATE_TEST_KEY";

/// The environment variable that replaces the dpkg admin directory `/var/lib/dpkg` — honoured
/// only by builds with `debug_assertions`, like [`TEST_KEY_ENV`].
pub const DPKG_DIR_ENV: &str = "RE6MESH_DPKG_ADMIN_DIR";

/// The Debian package whose file list is checked.
pub const PACKAGE: &str = "re6mesh";

/// A release source that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(
        "release source {0:?} is not https: only https:// is accepted (plain http:// only on loopback, 127.0.0.1 or [::1], for tests)"
    )]
    NotHttps(String),
    #[error("release source {0:?} is not a URL with a host")]
    Malformed(String),
}

/// Checks a `--source` value and returns the manifest URL: `https://…` anywhere, `http://…`
/// only to a loopback address (tests). A URL ending in `/` names a directory and gets
/// `manifest.json` appended.
pub fn manifest_url(source: &str) -> Result<String, SourceError> {
    let (scheme, rest) = source
        .split_once("://")
        .ok_or_else(|| SourceError::Malformed(source.to_string()))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || source.chars().any(char::is_whitespace) {
        return Err(SourceError::Malformed(source.to_string()));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => {}
        "http" if is_loopback_authority(authority) => {}
        _ => return Err(SourceError::NotHttps(source.to_string())),
    }
    if source.ends_with('/') {
        Ok(format!("{source}manifest.json"))
    } else {
        Ok(source.to_string())
    }
}

/// `127.x.y.z[:port]` or `[::1][:port]`. Names (`localhost`) are not taken: they resolve
/// through whatever the resolver says.
fn is_loopback_authority(authority: &str) -> bool {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return false;
        };
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok && host.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    let (host, port_ok) = match authority.split_once(':') {
        Some((h, p)) => (h, is_port(p)),
        None => (authority, true),
    };
    port_ok && host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

fn is_port(p: &str) -> bool {
    p.parse::<u16>().is_ok()
}

/// The archive a release must carry for `target`: `mesh-<version>-<target>.tar.gz`. zipsign
/// signs with the file name as context, so a signature binds the version and target too: an
/// old signed archive cannot be passed off under a newer version number.
pub fn asset_name(version: &Version, target: &str) -> String {
    format!("mesh-{version}-{target}.tar.gz")
}

/// One release as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub version: Version,
    pub assets: Vec<String>,
}

/// What `mesh update` does, given the current version and the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Install this release (newer than the current one), from the archive named `asset`.
    Install { latest: Version, asset: String },
    /// The newest release is this binary's version.
    UpToDate { latest: Version },
    /// The newest release is older than this binary: refused.
    Downgrade { latest: Version },
    /// The newest release has no archive for this target.
    NoAsset { latest: Version, asset: String },
    /// The manifest lists no release.
    Empty,
}

impl Decision {
    /// The newest listed version, if any.
    pub fn latest(&self) -> Option<&Version> {
        match self {
            Decision::Install { latest, .. }
            | Decision::UpToDate { latest }
            | Decision::Downgrade { latest }
            | Decision::NoAsset { latest, .. } => Some(latest),
            Decision::Empty => None,
        }
    }

    /// A newer release exists (whether or not it has an archive for this target).
    pub fn newer(&self) -> bool {
        matches!(self, Decision::Install { .. } | Decision::NoAsset { .. })
    }
}

/// Picks the newest listed release (semver order, pre-releases included) and compares it with
/// `current`: never an older or the same version.
pub fn decide(current: &Version, releases: &[Listed], target: &str) -> Decision {
    let Some(newest) = releases.iter().max_by(|a, b| a.version.cmp(&b.version)) else {
        return Decision::Empty;
    };
    let latest = newest.version.clone();
    match latest.cmp(current) {
        std::cmp::Ordering::Less => Decision::Downgrade { latest },
        std::cmp::Ordering::Equal => Decision::UpToDate { latest },
        std::cmp::Ordering::Greater => {
            let asset = asset_name(&latest, target);
            // The newest entry with this version that carries the archive (a manifest may list
            // a version twice; any entry with the exact name will do, the signature decides).
            let has = releases
                .iter()
                .filter(|r| r.version == latest)
                .any(|r| r.assets.iter().any(|a| a == &asset));
            if has {
                Decision::Install { latest, asset }
            } else {
                Decision::NoAsset { latest, asset }
            }
        }
    }
}

/// A test key override that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{TEST_KEY_ENV} is not 64 hex digits (an ed25519 public key)")]
pub struct BadTestKey;

/// The key to verify against: [`RELEASE_KEY`], or — only when `debug_assertions` is on and
/// the override is set — the test key in `override_hex`. The shell passes the variable's
/// value; in a release build this function ignores it.
pub fn verifying_key(override_hex: Option<&str>) -> Result<[u8; 32], BadTestKey> {
    match override_hex {
        Some(hex_key) if cfg!(debug_assertions) => {
            let bytes = hex::decode(hex_key.trim()).map_err(|_| BadTestKey)?;
            bytes.try_into().map_err(|_| BadTestKey)
        }
        _ => Ok(RELEASE_KEY),
    }
}

/// Whether a dpkg file list (`/var/lib/dpkg/info/<package>.list`, one path a line) names the
/// executable. `canonical` maps a listed path to the file it reaches (symlinks such as
/// `/bin` → `/usr/bin` on merged-/usr systems), or None when it does not exist.
pub fn listed_in_dpkg(
    list: &str,
    exe: &Path,
    canonical: impl Fn(&Path) -> Option<std::path::PathBuf>,
) -> bool {
    list.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .any(|l| {
            let p = Path::new(l);
            p == exe || canonical(p).is_some_and(|c| c == exe)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    const T: &str = "x86_64-unknown-linux-gnu";

    fn listed(version: &str) -> Listed {
        Listed {
            version: v(version),
            assets: vec![asset_name(&v(version), T)],
        }
    }

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        assert_eq!(
            manifest_url("https://example.invalid/r/manifest.json").unwrap(),
            "https://example.invalid/r/manifest.json"
        );
        assert_eq!(
            manifest_url("https://example.invalid/r/").unwrap(),
            "https://example.invalid/r/manifest.json"
        );
        for ok in [
            "http://127.0.0.1:8080/m.json",
            "http://127.0.0.1/m.json",
            "http://127.1.2.3:1/",
            "http://[::1]:9/m.json",
            "HTTP://[::1]/m.json",
        ] {
            assert!(manifest_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.invalid/m.json",
            "http://localhost:8080/m.json",
            "http://10.0.0.1/m.json",
            "http://[::2]/m.json",
            "http://127.0.0.1.example.invalid/m.json",
            "http://[::1]x/m.json",
            "ftp://127.0.0.1/m.json",
            "file:///tmp/m.json",
        ] {
            assert!(
                matches!(
                    manifest_url(bad),
                    Err(SourceError::NotHttps(_) | SourceError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let e = manifest_url("http://example.invalid/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("https"), "{e}");
        for malformed in ["example.invalid", "https://", "https:///x", "https://u@h/x"] {
            assert!(
                matches!(manifest_url(malformed), Err(SourceError::Malformed(_))),
                "{malformed}"
            );
        }
        assert!(manifest_url(DEFAULT_SOURCE).is_ok());
    }

    #[test]
    fn newest_release_wins_never_older_or_same() {
        let cur = v("0.1.0");
        assert_eq!(decide(&cur, &[], T), Decision::Empty);
        let d = decide(
            &cur,
            &[listed("0.0.9"), listed("0.2.0"), listed("0.1.5")],
            T,
        );
        assert_eq!(
            d,
            Decision::Install {
                latest: v("0.2.0"),
                asset: format!("mesh-0.2.0-{T}.tar.gz")
            }
        );
        assert!(d.newer());
        assert_eq!(
            decide(&cur, &[listed("0.1.0"), listed("0.0.1")], T),
            Decision::UpToDate { latest: v("0.1.0") }
        );
        assert_eq!(
            decide(&cur, &[listed("0.0.1")], T),
            Decision::Downgrade { latest: v("0.0.1") }
        );
        // a pre-release of the current version is older
        assert_eq!(
            decide(&cur, &[listed("0.1.0-rc.1")], T),
            Decision::Downgrade {
                latest: v("0.1.0-rc.1")
            }
        );
        assert!(!decide(&cur, &[listed("0.0.1")], T).newer());
    }

    #[test]
    fn the_archive_must_carry_the_version_and_target_in_its_name() {
        let cur = v("0.1.0");
        // an archive named for another version (an old signed one) is not taken
        let old_name = Listed {
            version: v("9.0.0"),
            assets: vec![
                asset_name(&v("0.0.1"), T),
                format!("mesh-9.0.0-other-{T}.tar.gz"),
            ],
        };
        let d = decide(&cur, &[old_name], T);
        assert_eq!(
            d,
            Decision::NoAsset {
                latest: v("9.0.0"),
                asset: format!("mesh-9.0.0-{T}.tar.gz")
            }
        );
        assert!(d.newer());
        assert_eq!(d.latest(), Some(&v("9.0.0")));
    }

    #[test]
    fn the_test_key_is_honoured_only_in_debug_builds() {
        assert_eq!(verifying_key(None), Ok(RELEASE_KEY));
        let k = "11".repeat(32);
        if cfg!(debug_assertions) {
            assert_eq!(verifying_key(Some(&k)), Ok([0x11; 32]));
            assert_eq!(verifying_key(Some("zz")), Err(BadTestKey));
            assert_eq!(verifying_key(Some(&"11".repeat(31))), Err(BadTestKey));
        } else {
            assert_eq!(verifying_key(Some(&k)), Ok(RELEASE_KEY));
            assert_eq!(verifying_key(Some("zz")), Ok(RELEASE_KEY));
        }
    }

    #[test]
    fn dpkg_list_names_the_binary_directly_or_through_a_symlink() {
        let list = "/.\n/usr\n/usr/bin\n/usr/bin/mesh\n/usr/share/doc/re6mesh\n";
        let none = |_: &Path| None;
        assert!(listed_in_dpkg(list, Path::new("/usr/bin/mesh"), none));
        assert!(!listed_in_dpkg(
            list,
            Path::new("/home/u/.local/bin/mesh"),
            none
        ));
        let merged = "/bin/mesh\n";
        let canon = |p: &Path| (p == Path::new("/bin/mesh")).then(|| "/usr/bin/mesh".into());
        assert!(listed_in_dpkg(merged, Path::new("/usr/bin/mesh"), canon));
        assert!(!listed_in_dpkg("", Path::new("/usr/bin/mesh"), none));
    }
}
