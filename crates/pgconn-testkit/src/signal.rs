//! The few libc calls the testkit needs, each behind a safe function.
//!
//! Public so that tests can signal the processes of their own clusters (for example `SIGSTOP` and
//! `SIGCONT` to a backend whose pid `pg_backend_pid()` returned); the signal numbers are in
//! [`libc`](https://docs.rs/libc), re-exported as `pgconn_testkit::libc`.

// `unsafe` is confined to this module: libc's functions are foreign functions and so unsafe to call by
// definition. The ones here take and return plain integers; no memory of ours is involved.
#![allow(unsafe_code)]

use std::io;

/// Sends `signal` to the single process `pid`.
///
/// Refuses pid 0 and pids beyond `pid_t`, which `kill(2)` would read as "a whole process group" or
/// "every process": the testkit only ever signals one process at a time.
pub fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).ok().filter(|&pid| pid > 0).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("refusing to signal pid {pid}"))
    })?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sends `signal` to every process in the process group `pgid` (a child spawned with
/// `process_group(0)` leads a group whose id is its pid).
///
/// Refuses groups 0 and 1 and ids beyond `pid_t`.
pub fn kill_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid).ok().filter(|&pgid| pgid > 1).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("refusing to signal group {pgid}"))
    })?;
    // SAFETY: killpg(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::killpg(pgid, signal) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Whether this process runs with effective user id 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments and always succeeds.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_signal_more_than_one_process() {
        for pid in [0, u32::MAX] {
            let err = kill(pid, 0).expect_err("pid 0 and -1 mean more than one process");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        for pgid in [0, 1, u32::MAX] {
            let err = kill_group(pgid, 0).expect_err("group 0, 1 and -1 are not ours");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn signal_zero_probes_our_own_process() {
        kill(std::process::id(), 0).expect("this process exists");
    }
}
