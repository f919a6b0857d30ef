//! Build script: the git commit the binary is built from, as `MESH_GIT_COMMIT` (12 hex digits,
//! or "unknown" outside a git checkout, e.g. a release tarball). `MESH_BUILD_COMMIT` overrides
//! it (packagers building from a tarball). It never fails the build and uses no crates.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    Some(s.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MESH_BUILD_COMMIT");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let commit = match std::env::var("MESH_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => from_git(Path::new(&manifest_dir)).unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=MESH_GIT_COMMIT={commit}");
}

/// The short commit of HEAD, when this crate is the top of a git work tree; also tells cargo
/// to rerun when HEAD or the branch it points to moves (only files that exist: a missing one
/// would make cargo rerun on every build).
fn from_git(dir: &Path) -> Option<String> {
    let d = dir.to_str()?;
    // toplevel, HEAD's file, packed-refs' file, the branch HEAD points to (or "HEAD")
    let info = git(&[
        "-C",
        d,
        "rev-parse",
        "--show-toplevel",
        "--git-path",
        "HEAD",
        "--git-path",
        "packed-refs",
        "--symbolic-full-name",
        "HEAD",
    ])?;
    let lines: Vec<&str> = info.lines().collect();
    let [top, head, packed, branch] = lines.as_slice() else {
        return None;
    };
    // a tarball unpacked inside some other repository is not built from that repository
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(top), dir) {
        return None;
    }
    let rel = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let mut watch = vec![rel(head), rel(packed)];
    if branch.starts_with("refs/")
        && let Some(loose) = git(&["-C", d, "rev-parse", "--git-path", branch])
    {
        let loose = rel(&loose);
        if loose.exists() {
            watch.push(loose);
        } else if let Some(parent) = loose.parent() {
            // a packed branch: its loose file appears in this directory on the next commit
            watch.push(parent.to_path_buf());
        }
    }
    for p in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let commit = git(&["-C", d, "rev-parse", "--short=12", "HEAD"])?;
    (!commit.is_empty() && commit.bytes().all(|b| b.is_ascii_hexdigit())).then_some(commit)
}
