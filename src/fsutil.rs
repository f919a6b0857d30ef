//! Small file helpers: every write that matters is atomic (temp file + fsync + rename).

use std::fs;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// fsynced, given `mode` (Unix permission bits), renamed over `path`, and the directory is
/// fsynced so the rename survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        // Elsewhere (Windows) the file would inherit its directory's ACL: before a byte is
        // written, a private file gets an ACL of its own.
        #[cfg(not(unix))]
        if crate::platform::fileperm::is_private_mode(mode) {
            crate::platform::fileperm::make_private(&tmp)?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        #[cfg(unix)]
        keep_directory_owner(&f, dir)?;
    }
    fs::rename(&tmp, path)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Root writing into a directory another user owns (`sudo mesh join`, `sudo mesh set` in the
/// state directory of the service, which runs as user re6mesh) gives the file that
/// directory's owner and group: the service must still read what root wrote, and root
/// reads everything anyway. Anyone else's files are theirs already.
#[cfg(unix)]
fn keep_directory_owner(f: &fs::File, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !crate::platform::privilege::is_root() {
        return Ok(());
    }
    let d = fs::metadata(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })?;
    if d.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::fchown(f, Some(d.uid()), Some(d.gid()))
}

/// Creates `dir` (and parents) with mode 0700 when it does not exist yet.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // no temp files left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn root_writing_into_a_service_users_directory_gives_the_file_to_that_user() {
        use std::os::unix::fs::MetadataExt;
        if !crate::netns::require_root(
            "root_writing_into_a_service_users_directory_gives_the_file_to_that_user",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("root.toml");
        write_atomic(&own, b"x", 0o600).unwrap();
        assert_eq!(
            fs::metadata(&own).unwrap().uid(),
            0,
            "root's directory: root's file"
        );
        let svc = dir.path().join("svc");
        fs::create_dir(&svc).unwrap();
        std::os::unix::fs::chown(&svc, Some(65534), Some(65533)).unwrap();
        let p = svc.join("node.toml");
        write_atomic(&p, b"listen = 1", 0o600).unwrap();
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65533, 0o600));
    }
}
