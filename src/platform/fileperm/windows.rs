//! Windows: a protected DACL (nothing inherited from the directory) granting full control to
//! the file's owner, SYSTEM and the Administrators group, and nothing to anyone else.
//!
//! The one place in the crate with `unsafe`: three advapi32 calls through windows-sys (no
//! maintained crate wraps them; spawning `icacls` would depend on a tool and its output), and
//! two more in the tests, which read the DACL back. Each block says what it relies on.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Foundation::{BOOL, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1, SE_FILE_OBJECT,
    SetNamedSecurityInfoW,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, PROTECTED_DACL_SECURITY_INFORMATION,
    PSECURITY_DESCRIPTOR,
};

/// `P`: protected (no inherited entries); `FA`: file all access; `OW`: owner rights,
/// `SY`: LocalSystem (the service), `BA`: built-in Administrators.
const PRIVATE_SDDL: &str = "D:P(A;;FA;;;OW)(A;;FA;;;SY)(A;;FA;;;BA)";

fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

/// Frees a descriptor `ConvertStringSecurityDescriptorToSecurityDescriptorW` allocated.
struct LocalDescriptor(PSECURITY_DESCRIPTOR);

impl Drop for LocalDescriptor {
    fn drop(&mut self) {
        // SAFETY: the pointer came from LocalAlloc inside the conversion call and is freed once.
        unsafe { LocalFree(self.0) };
    }
}

/// Replaces `path`'s DACL with [`PRIVATE_SDDL`]'s.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    let sddl = wide(OsStr::new(PRIVATE_SDDL));
    let name = wide(path.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = null_mut();
    // SAFETY: `sddl` is NUL-terminated and lives across the call; `sd` is an out pointer.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            null_mut(),
        )
    };
    if ok == 0 || sd.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let sd = LocalDescriptor(sd);
    let (mut present, mut defaulted): (BOOL, BOOL) = (0, 0);
    let mut dacl: *mut ACL = null_mut();
    // SAFETY: `sd.0` is the valid descriptor made above; the out pointers are locals.
    let ok = unsafe { GetSecurityDescriptorDacl(sd.0, &mut present, &mut dacl, &mut defaulted) };
    if ok == 0 || present == 0 || dacl.is_null() {
        return Err(std::io::Error::other(
            "the private file descriptor has no DACL",
        ));
    }
    // SAFETY: `name` is NUL-terminated; `dacl` points into `sd`, alive until the end of
    // this function; owner, group and SACL are not changed (null).
    let err = unsafe {
        SetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            null_mut(),
            null_mut(),
            dacl,
            null(),
        )
    };
    drop(sd);
    if err != 0 {
        return Err(std::io::Error::other(format!(
            "cannot make {} private (SetNamedSecurityInfoW: {})",
            path.display(),
            std::io::Error::from_raw_os_error(err as i32)
        )));
    }
    Ok(())
}

/// `path`'s DACL as SDDL text (`D:P(A;;FA;;;…)…`), as Windows stores it: for the tests.
#[cfg(test)]
pub(super) fn dacl_sddl(path: &Path) -> std::io::Result<String> {
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, GetNamedSecurityInfoW,
    };
    let name = wide(path.as_os_str());
    let mut dacl: *mut ACL = null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = null_mut();
    // SAFETY: `name` is NUL-terminated; the out pointers are locals; only the DACL is asked
    // for, so the owner, group and SACL pointers may be null.
    let err = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            null_mut(),
            null_mut(),
            &mut dacl,
            null_mut(),
            &mut sd,
        )
    };
    if err != 0 || sd.is_null() {
        return Err(std::io::Error::from_raw_os_error(err as i32));
    }
    let sd = LocalDescriptor(sd);
    let mut text: *mut u16 = null_mut();
    let mut len: u32 = 0;
    // SAFETY: `sd.0` is the descriptor GetNamedSecurityInfoW allocated; `text` receives a
    // LocalAlloc'd NUL-terminated string of `len` characters, freed below.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd.0,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut text,
            &mut len,
        )
    };
    if ok == 0 || text.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let text = LocalDescriptor(text.cast());
    // SAFETY: `text.0` points at `len` UTF-16 units (the terminating NUL excluded by
    // trimming below), alive until `text` drops.
    let units = unsafe { std::slice::from_raw_parts(text.0.cast::<u16>(), len as usize) };
    Ok(String::from_utf16_lossy(units)
        .trim_end_matches('\0')
        .to_owned())
}
