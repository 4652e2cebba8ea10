//! The few libc calls xtask needs, each behind a safe function.

// `unsafe` is confined to this module: libc's functions are foreign functions and so unsafe to call by
// definition. The ones here take and return plain integers; no memory of ours is involved.
#![allow(unsafe_code)]

use std::io;

/// Sends `signal` to the single process `pid`.
///
/// Refuses pid 0 and pids beyond `pid_t`, which `kill(2)` would read as "a whole process group" or
/// "every process": xtask only ever signals one process it started.
pub(crate) fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).ok().filter(|&pid| pid > 0).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("refusing to signal pid {pid}"))
    })?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sends `signal` to every process in the process group `pgid` (a child spawned with
/// `process_group(0)` leads a group whose id is its pid).
pub(crate) fn kill_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid).ok().filter(|&pgid| pgid > 1).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("refusing to signal group {pgid}"))
    })?;
    // SAFETY: killpg(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::killpg(pgid, signal) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Whether this process runs with effective user id 0.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments and always succeeds.
    unsafe { libc::geteuid() == 0 }
}
