//! The macOS and Windows artefacts of `scripts/package` (issue 17). Their layouts are checked
//! on every run with stand-in files (`--binary`, `--wintun`: nothing is built or fetched);
//! real cross-built artefacts only when `RE6MESH_CROSS_ARTEFACTS` names the directory
//! `scripts/package --all` wrote them to (target/dist), so the default suite never builds a
//! cross target.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ROOT, run};

const MACOS: [&str; 2] = ["x86_64-apple-darwin", "aarch64-apple-darwin"];
const WINDOWS: &str = "x86_64-pc-windows-gnu";

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The file names (directories left out) an archive lists, sorted.
fn listing(archive: &Path) -> Vec<String> {
    let name = archive.to_string_lossy();
    let o = if name.ends_with(".zip") {
        run(Command::new("unzip").args(["-Z1"]).arg(archive))
    } else {
        run(Command::new("tar").arg("tzf").arg(archive))
    };
    let mut files: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(str::to_owned)
        .collect();
    files.sort();
    files
}

/// `scripts/package --target T` with stand-ins, into `out`; the artefact it printed last.
fn package_with_stand_ins(target: &str, out: &Path) -> PathBuf {
    let program = out.join("stand-in-program");
    std::fs::write(&program, b"not a program").unwrap();
    let dll = out.join("stand-in-wintun.dll");
    std::fs::write(&dll, b"not a dll").unwrap();
    let o = run(Command::new(format!("{ROOT}/scripts/package"))
        .args(["--target", target, "--binary"])
        .arg(&program)
        .arg("--wintun")
        .arg(&dll)
        .arg("--out")
        .arg(out));
    let stdout = String::from_utf8_lossy(&o.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or_default())
}

#[test]
fn macos_tarball_has_the_pkg_layout() {
    let tmp = tempfile::tempdir().unwrap();
    for t in MACOS {
        let tarball = package_with_stand_ins(t, tmp.path());
        let top = format!("re6mesh-{}-{t}", version());
        assert_eq!(tarball, tmp.path().join(format!("{top}.tar.gz")));
        let want: Vec<String> = [
            "README-re6mesh.md",
            "README.md",
            "root/Library/LaunchDaemons/net.re6mesh.node.plist",
            "root/usr/local/bin/mesh",
            "scripts/postinstall",
        ]
        .iter()
        .map(|f| format!("{top}/{f}"))
        .collect();
        assert_eq!(listing(&tarball), want);
        // the plist is the one `mesh service install` renders for /usr/local/bin/mesh
        let plist = run(Command::new("tar").arg("xzOf").arg(&tarball).arg(format!(
            "{top}/root/Library/LaunchDaemons/net.re6mesh.node.plist"
        )));
        assert_eq!(
            String::from_utf8_lossy(&plist.stdout),
            re6mesh::platform::service::launchd::PLIST
        );
        // modes pkgbuild keeps: program and script executable, root-owned
        let long = run(Command::new("tar").args(["tzvf"]).arg(&tarball));
        let long = String::from_utf8_lossy(&long.stdout);
        for (mode, file) in [
            ("-rwxr-xr-x 0/0", "root/usr/local/bin/mesh"),
            ("-rwxr-xr-x 0/0", "scripts/postinstall"),
            (
                "-rw-r--r-- 0/0",
                "root/Library/LaunchDaemons/net.re6mesh.node.plist",
            ),
        ] {
            assert!(
                long.lines()
                    .any(|l| l.starts_with(mode) && l.ends_with(&format!("{top}/{file}"))),
                "{file} not {mode}: {long}"
            );
        }
    }
}

#[test]
fn windows_zip_has_the_program_the_dll_and_the_installer() {
    let tmp = tempfile::tempdir().unwrap();
    let zip = package_with_stand_ins(WINDOWS, tmp.path());
    let top = format!("re6mesh-{}-{WINDOWS}", version());
    assert_eq!(zip, tmp.path().join(format!("{top}.zip")));
    let want: Vec<String> = [
        "README.txt",
        "install.ps1",
        "mesh.exe",
        "uninstall.ps1",
        "wintun.dll",
    ]
    .iter()
    .map(|f| format!("{top}/{f}"))
    .collect();
    assert_eq!(listing(&zip), want);
    let script = run(Command::new("unzip")
        .arg("-p")
        .arg(&zip)
        .arg(format!("{top}/install.ps1")));
    let script = String::from_utf8_lossy(&script.stdout);
    // Windows line ends; the service is registered by mesh itself, on the state directory
    // made private first
    assert_eq!(
        script.matches("\r\n").count(),
        script.matches('\n').count(),
        "not CRLF throughout: {script}"
    );
    for want in [
        "& $mesh service install",
        "/inheritance:r",
        "--state-dir $state",
    ] {
        assert!(script.contains(want), "install.ps1 lacks {want:?}");
    }
}

/// Real artefacts (`scripts/package --all`, then `RE6MESH_CROSS_ARTEFACTS=target/dist`): each
/// holds a program for its OS and architecture, and the Windows zip the real wintun.dll.
#[test]
fn cross_artefacts_hold_programs_for_their_os() {
    let Some(dir) = std::env::var_os("RE6MESH_CROSS_ARTEFACTS") else {
        println!(
            "SKIPPED cross_artefacts_hold_programs_for_their_os: set RE6MESH_CROSS_ARTEFACTS to the directory of `scripts/package --all`'s artefacts (target/dist)"
        );
        return;
    };
    let dir = PathBuf::from(dir);
    // the artefacts found there are checked (at least one); one not built is named
    let mut checked = 0;
    for (t, cpu) in MACOS.iter().zip([0x0100_0007u32, 0x0100_000c]) {
        let top = format!("re6mesh-{}-{t}", version());
        let tarball = dir.join(format!("{top}.tar.gz"));
        if !tarball.exists() {
            println!("not built: {}", tarball.display());
            continue;
        }
        let o = run(Command::new("tar")
            .arg("xzOf")
            .arg(&tarball)
            .arg(format!("{top}/root/usr/local/bin/mesh")));
        let b = &o.stdout;
        assert!(b.len() > 1 << 20, "{t}: mesh is {} bytes", b.len());
        // Mach-O 64-bit, little-endian, then the CPU type
        assert_eq!(b[..4], [0xcf, 0xfa, 0xed, 0xfe], "{t}: not Mach-O 64");
        assert_eq!(
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            cpu,
            "{t}: CPU"
        );
        checked += 1;
    }
    let top = format!("re6mesh-{}-{WINDOWS}", version());
    let zip = dir.join(format!("{top}.zip"));
    if zip.exists() {
        for file in ["mesh.exe", "wintun.dll"] {
            let o = run(Command::new("unzip")
                .arg("-p")
                .arg(&zip)
                .arg(format!("{top}/{file}")));
            let b = &o.stdout;
            assert_eq!(&b[..2], b"MZ", "{file}: not a PE file");
            // the PE header's offset at 0x3c, then "PE\0\0" and the machine (AMD64)
            let pe = u32::from_le_bytes([b[0x3c], b[0x3d], b[0x3e], b[0x3f]]) as usize;
            assert_eq!(&b[pe..pe + 4], b"PE\0\0", "{file}");
            assert_eq!(u16::from_le_bytes([b[pe + 4], b[pe + 5]]), 0x8664, "{file}");
        }
        assert!(listing(&zip).contains(&format!("{top}/wintun-LICENSE.txt")));
        checked += 1;
    } else {
        println!("not built: {}", zip.display());
    }
    assert!(checked > 0, "no artefact in {}", dir.display());
}
