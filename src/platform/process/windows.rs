//! Windows has no signal a console child can be sent without a Win32 call: no request.

/// Nothing to send on Windows; the caller kills the process after its grace period. False.
pub fn request_stop(pid: u32) -> bool {
    let _ = pid;
    false
}
