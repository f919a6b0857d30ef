//! `mesh update` (issue 16) against a release server on 127.0.0.1 (an ephemeral port, this
//! process's own thread): a signed newer release replaces the binary; a tampered archive, one
//! signed by another key, an unsigned one, an older and the same version are refused; a binary
//! listed in dpkg's file list of re6mesh is refused before any request. The key pair is made
//! here at run time and handed to the debug-built `mesh` through `RE6MESH_UPDATE_TEST_KEY`;
//! the dpkg admin directory through `RE6MESH_DPKG_ADMIN_DIR` (both honoured only by builds with
//! debug assertions). Each test runs its own copy (hard link) of `target/debug/mesh`.

#![allow(clippy::disallowed_methods)] // integration test: real processes, sockets and threads

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use re6mesh::update::{DPKG_DIR_ENV, TEST_KEY_ENV, asset_name};
use semver::Version;
use sha2::{Digest, Sha256};
use zipsign_api::SigningKey;

/// A static file server on 127.0.0.1: path → body, 404 otherwise; counts requests.
struct Server {
    url: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    // read by the dpkg test only, which is Linux-only
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (f, r) = (files.clone(), requests.clone());
        // Lives until the test process ends (the listener goes with it).
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                r.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(&mut stream);
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => {}
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                let body = f.lock().unwrap().get(&path).cloned();
                let (status, body) = match body {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Server {
            url,
            files,
            requests,
        }
    }

    fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), body);
    }

    /// Publishes `manifest.json` listing `releases` as (version, asset name).
    fn manifest(&self, releases: &[(&Version, &str)]) {
        let releases: Vec<_> = releases
            .iter()
            .map(|(v, name)| {
                serde_json::json!({
                    "version": v.to_string(),
                    "assets": [{"name": name, "url": name}],
                })
            })
            .collect();
        let m = serde_json::json!({"schema": 1, "releases": releases});
        self.put("/manifest.json", m.to_string().into_bytes());
    }

    fn manifest_url(&self) -> String {
        format!("{}/manifest.json", self.url)
    }
}

fn current() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).unwrap()
}

fn newer() -> Version {
    let c = current();
    Version::new(c.major + 1, 0, 0)
}

fn target() -> &'static str {
    self_update::get_target()
}

/// The "new release": a shell script named `mesh` that prints its version.
fn script(version: &Version) -> Vec<u8> {
    format!("#!/bin/sh\necho \"mesh {version} (test release)\"\n").into_bytes()
}

/// A `.tar.gz` holding `mesh` (mode 0755) with `content`.
fn targz(content: &[u8]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    let name = format!("mesh{}", std::env::consts::EXE_SUFFIX); // mesh.exe on Windows
    tar.append_data(&mut header, name, content).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

/// zipsign's signature over `archive` with the file name as context (as `zipsign sign tar`).
fn sign(archive: &[u8], key: &SigningKey, name: &str) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    zipsign_api::sign::copy_and_sign_tar(
        &mut Cursor::new(archive),
        &mut out,
        std::slice::from_ref(key),
        Some(name.as_bytes()),
    )
    .unwrap();
    out.into_inner()
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// A temp dir with `bin/mesh` (a hard link to, or copy of, the test-built binary) and an
/// empty dpkg admin directory.
struct Fixture {
    dir: tempfile::TempDir,
    trusted: SigningKey,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::create_dir_all(dir.path().join("dpkg/info")).unwrap();
        let bin = dir.path().join("bin/mesh");
        if std::fs::hard_link(env!("CARGO_BIN_EXE_mesh"), &bin).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_mesh"), &bin).unwrap();
        }
        Fixture {
            dir,
            trusted: key(),
        }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin/mesh")
    }

    fn digest(&self) -> Vec<u8> {
        Sha256::digest(std::fs::read(self.bin()).unwrap()).to_vec()
    }

    fn mesh(&self, args: &[&str]) -> Output {
        Command::new(self.bin())
            .args(args)
            .env(
                TEST_KEY_ENV,
                hex::encode(self.trusted.verifying_key().as_bytes()),
            )
            .env(DPKG_DIR_ENV, self.dir.path().join("dpkg"))
            .env_remove("MESH_STATE_DIR")
            .output()
            .expect("run the copy of mesh")
    }

    fn update(&self, server: &Server, extra: &[&str]) -> Output {
        let url = server.manifest_url();
        let mut args = vec!["update", "--source", url.as_str()];
        args.extend_from_slice(extra);
        self.mesh(&args)
    }

    /// Publishes `version` as a release whose archive is `body` (under its proper name).
    fn publish(&self, server: &Server, version: &Version, body: Vec<u8>) -> String {
        let name = asset_name(version, target());
        server.put(&format!("/{name}"), body);
        name
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout_json(o: &Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.trim().lines().count(), 1, "{}", text(o));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

#[test]
fn signed_newer_release_is_installed() {
    let fx = Fixture::new();
    let server = Server::start();
    let new = newer();
    let name = asset_name(&new, target());
    let signed = sign(&targz(&script(&new)), &fx.trusted, &name);
    fx.publish(&server, &new, signed);
    let old = Version::new(0, 0, 1);
    server.manifest(&[(&old, "mesh-0.0.1-whatever.tar.gz"), (&new, &name)]);
    let before = fx.digest();

    // --check: says what would happen, installs nothing
    let o = fx.update(&server, &["--check", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = stdout_json(&o);
    assert_eq!(v["current"], current().to_string());
    assert_eq!(v["latest"], new.to_string());
    assert_eq!(v["update_available"], true);
    assert_eq!(v["packaged"], false);
    let o = fx.update(&server, &["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{new} is available")),
        "{}",
        text(&o)
    );
    assert_eq!(fx.digest(), before, "--check changed the binary");

    let o = fx.update(&server, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains(&format!("updated from {} to {new}", current())),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(fx.bin()).unwrap(),
        script(&new),
        "the binary is the signed archive's mesh"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fx.bin()).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "still executable: {mode:o}");
    }
    // the stand-in release is a shell script: Windows cannot run it
    #[cfg(unix)]
    {
        let o = Command::new(fx.bin()).arg("--version").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("mesh {new} (test release)")
        );
    }
    // the test build itself is untouched (the copy was a hard link: replaced, not written)
    let o = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&format!("mesh {} (", current())));
}

#[test]
fn tampered_foreign_and_unsigned_archives_are_refused() {
    let fx = Fixture::new();
    let server = Server::start();
    let new = newer();
    let name = asset_name(&new, target());
    let archive = targz(&script(&new));
    let mut tampered = sign(&archive, &fx.trusted, &name);
    // one byte of the compressed payload (after the 10-byte gzip header)
    tampered[12] ^= 0x55;
    let foreign = sign(&archive, &key(), &name);
    // signed by the right key, but for another file name (another version's archive)
    let renamed = sign(&archive, &fx.trusted, &asset_name(&current(), target()));
    let before = fx.digest();
    server.manifest(&[(&new, &name)]);
    for (what, body) in [
        ("tampered", tampered),
        ("signed by another key", foreign),
        ("signed for another name", renamed),
        ("unsigned", archive.clone()),
    ] {
        fx.publish(&server, &new, body);
        let o = fx.update(&server, &[]);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("is not signed by the re6mesh release key")
                && err.contains("nothing was installed"),
            "{what}: {}",
            text(&o)
        );
        assert_eq!(fx.digest(), before, "{what}: the binary changed");
    }
}

#[test]
fn older_and_same_versions_are_not_installed() {
    let fx = Fixture::new();
    let server = Server::start();
    let before = fx.digest();
    let cur = current();
    let older = if cur.patch > 0 {
        Version::new(cur.major, cur.minor, cur.patch - 1)
    } else {
        Version::parse(&format!("{}-rc.1", cur)).unwrap()
    };
    // an older release, properly signed: refused as a downgrade (exit 2)
    let name = asset_name(&older, target());
    let signed = sign(&targz(&script(&older)), &fx.trusted, &name);
    fx.publish(&server, &older, signed);
    server.manifest(&[(&older, &name)]);
    let o = fx.update(&server, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refusing to downgrade"),
        "{}",
        text(&o)
    );
    let o = fx.update(&server, &["--check", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = stdout_json(&o);
    assert_eq!(v["latest"], older.to_string());
    assert_eq!(v["update_available"], false);
    assert_eq!(fx.digest(), before);

    // the same version: up to date, exit 0, nothing replaced
    let name = asset_name(&cur, target());
    let signed = sign(&targz(&script(&cur)), &fx.trusted, &name);
    fx.publish(&server, &cur, signed);
    server.manifest(&[(&older, "x.tar.gz"), (&cur, &name)]);
    let o = fx.update(&server, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("is up to date"),
        "{}",
        text(&o)
    );
    let v = stdout_json(&fx.update(&server, &["--json"]));
    assert_eq!(v["update_available"], false);
    assert_eq!(v["updated"], false);
    assert_eq!(fx.digest(), before);
}

/// dpkg's file list is consulted on Linux only.
#[cfg(target_os = "linux")]
#[test]
fn a_packaged_binary_is_refused_before_any_request() {
    let fx = Fixture::new();
    let server = Server::start();
    let new = newer();
    let name = asset_name(&new, target());
    let signed = sign(&targz(&script(&new)), &fx.trusted, &name);
    fx.publish(&server, &new, signed);
    server.manifest(&[(&new, &name)]);
    let list = format!("/.\n/usr\n/usr/share/doc/re6mesh\n{}\n", fx.bin().display());
    std::fs::write(fx.dir.path().join("dpkg/info/re6mesh.list"), list).unwrap();
    let before = fx.digest();
    let o = fx.update(&server, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("installed by the re6mesh package") && err.contains("apt upgrade re6mesh"),
        "{}",
        text(&o)
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 0, "no request made");
    assert_eq!(fx.digest(), before);
    // --check still tells what is there, and that mesh update would refuse
    let o = fx.update(&server, &["--check", "--json"]);
    let v = stdout_json(&o);
    assert_eq!(v["packaged"], true);
    assert_eq!(v["update_available"], true);
    assert_eq!(fx.digest(), before);
}

#[test]
fn plain_http_is_refused_except_on_loopback() {
    let fx = Fixture::new();
    for url in ["http://example.invalid/manifest.json", "http://10.0.0.1/"] {
        let o = fx.mesh(&["update", "--check", "--source", url]);
        assert_eq!(o.status.code(), Some(2), "{url}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("only https://"),
            "{url}: {}",
            text(&o)
        );
    }
    // a loopback server that is not there: a runtime failure (exit 1), one sentence
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let o = fx.mesh(&["update", "--check", "--source", &url]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot read the release manifest"),
        "{}",
        text(&o)
    );
}
