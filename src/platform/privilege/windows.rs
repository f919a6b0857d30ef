//! Windows: elevation is not checked ahead (that needs a Win32 call, and the crate keeps
//! `unsafe` to the key files' ACL); the TUN device's own refusal is what tells the user.

/// Always false: a node on Windows keeps its state in the user's data directory unless given
/// `--state-dir` (the service passes one).
pub fn is_root() -> bool {
    false
}

/// The system node's state directory (the service's): `%ProgramData%\re6mesh`
/// (`C:\ProgramData\re6mesh`).
pub fn system_state_dir() -> std::path::PathBuf {
    std::env::var_os("ProgramData")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(r"C:\ProgramData"))
        .join("re6mesh")
}

/// What to do when the TUN device is refused for lack of privilege.
pub const TUN_HINT: &str = "run it from an Administrator prompt, with wintun.dll next to mesh.exe";

/// What to do when the TUN device `name` is refused for lack of privilege.
pub fn tun_hint(name: &str) -> String {
    let _ = name;
    TUN_HINT.to_owned()
}
