//! SIGTERM.

/// Sends SIGTERM to process `pid`. True when sent.
pub fn request_stop(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|p| rustix::process::kill_process(p, rustix::process::Signal::TERM).is_ok())
}
