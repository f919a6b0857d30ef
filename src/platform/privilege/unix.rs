//! Linux and macOS: the effective user id, and users by name from `/etc/passwd`.

/// True when the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The system node's state directory (root's, and the services'): `/var/lib/re6mesh`.
pub fn system_state_dir() -> std::path::PathBuf {
    std::path::PathBuf::from("/var/lib/re6mesh")
}

/// The effective user id.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The effective group id (a service's `Group=`).
pub fn effective_gid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// What to do when the TUN device is refused for lack of privilege.
#[cfg(target_os = "linux")]
pub const TUN_HINT: &str = "run as root or grant CAP_NET_ADMIN";
/// What to do when the TUN device is refused for lack of privilege.
#[cfg(not(target_os = "linux"))]
pub const TUN_HINT: &str = "run it as root (sudo)";

/// What to do when the TUN device `name` is refused for lack of privilege. On Linux, for a
/// user other than root, the two ways to run without root: a TUN device of their own
/// (`mesh setup-tun`), or the capability on the binary.
pub fn tun_hint(name: &str) -> String {
    #[cfg(target_os = "linux")]
    if !is_root() {
        let uid = effective_uid();
        let user = find_user(&uid.to_string()).map_or(uid.to_string(), |u| u.name);
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "mesh".to_owned());
        // Opening the clone device creates nothing (that takes TUNSETIFF); refused, no TUN
        // at all can be opened by this user, whatever root sets up or grants.
        let refused = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(CLONE_DEVICE)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
        if refused {
            return clone_device_hint();
        }
        return linux_user_hint(name, &user, &exe);
    }
    let _ = name;
    TUN_HINT.to_owned()
}

/// Linux's TUN clone device, which every TUN user opens first.
#[cfg(target_os = "linux")]
const CLONE_DEVICE: &str = "/dev/net/tun";

/// [`tun_hint`] when this user may not even open [`CLONE_DEVICE`] (some systems make it 0600).
#[cfg(target_os = "linux")]
fn clone_device_hint() -> String {
    format!(
        "{CLONE_DEVICE} is not readable and writable by you: have root give it its usual mode \
         (`sudo chmod 0666 {CLONE_DEVICE}`; the kernel still checks who may use each device), \
         then run `mesh up` again for the next step"
    )
}

/// [`tun_hint`] for user `user` running `exe` on Linux.
pub fn linux_user_hint(name: &str, user: &str, exe: &str) -> String {
    let dev = if name == crate::platform::tun::DEFAULT_NAME {
        String::new()
    } else {
        format!(" --name {name}")
    };
    format!(
        "have root set one up for you once (`sudo {exe} setup-tun --user {user}{dev}`), \
         or give {exe} the network capability (`sudo setcap cap_net_admin+ep {exe}`)"
    )
}

/// A user of this system, as `/etc/passwd` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: std::path::PathBuf,
}

/// The user `who` names (a login name, or a numeric uid), from `/etc/passwd`. Users known only
/// to a directory service (LDAP, NSS modules) are not found by name.
pub fn find_user(who: &str) -> Option<User> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    user_in(&text, who)
}

/// The user `who` (login name, or numeric uid) in the text of a passwd file.
pub fn user_in(passwd: &str, who: &str) -> Option<User> {
    let by_uid: Option<u32> = who.parse().ok();
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let uid: u32 = f[2].parse().ok()?;
        let gid: u32 = f[3].parse().ok()?;
        if f[0] == who || by_uid == Some(uid) {
            Some(User {
                name: f[0].to_owned(),
                uid,
                gid,
                home: f[5].into(),
            })
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn users_are_found_by_name_or_uid() {
        let text = "root:x:0:0:root:/root:/bin/bash\nbad line\nalice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
                    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nodd:x:zz:1:::\n";
        let alice = super::user_in(text, "alice").unwrap();
        assert_eq!((alice.uid, alice.gid), (1000, 1000));
        assert_eq!(alice.home, std::path::PathBuf::from("/home/alice"));
        assert_eq!(super::user_in(text, "65534").unwrap().name, "nobody");
        assert_eq!(super::user_in(text, "0").unwrap().name, "root");
        assert_eq!(
            super::user_in(text, "odd"),
            None,
            "a non-numeric uid is no user"
        );
        assert_eq!(super::user_in(text, "bob"), None);
        assert_eq!(super::user_in(text, "4242"), None);
    }
}
