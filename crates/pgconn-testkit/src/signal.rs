//! The few libc calls the testkit needs, each behind a safe function: signals, the effective user, and
//! the limit on open files.
//!
//! Public so that tests can signal the processes of their own clusters (for example `SIGSTOP` and
//! `SIGCONT` to a backend whose pid `pg_backend_pid()` returned); the signal numbers are in
//! [`libc`](https://docs.rs/libc), re-exported as `pgconn_testkit::libc`.

// `unsafe` is confined to this module: libc's functions are foreign functions and so unsafe to call by
// definition. The ones here take and return plain integers or fill a struct we own; `pre_exec` is unsafe
// because its closure runs between fork and exec.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

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

/// This process's limits on open file descriptors (`RLIMIT_NOFILE`): `(soft, hard)`. A child inherits
/// both; [`raise_nofile_limit`] lifts a child's soft limit to the hard one.
pub fn nofile_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) writes one `rlimit` into the struct we own, which outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
    if rc == 0 { Ok((limit.rlim_cur, limit.rlim_max)) } else { Err(io::Error::last_os_error()) }
}

/// Makes the program that `cmd` runs start with its soft limit on open file descriptors raised to its
/// hard limit (`ulimit -n $(ulimit -Hn)`), as PgBouncer needs for more than about 1000 clients. Set in
/// the child after it switched user, which may always raise its soft limit up to the hard one. Best
/// effort: when the kernel refuses (a hard limit of "unlimited" above `fs.nr_open`), the child starts
/// with the limit it inherited.
pub fn raise_nofile_limit(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec. It allocates nothing, takes no lock and
    // calls only getrlimit(2) and setrlimit(2), which are async-signal-safe, on a struct on its stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
            }
            Ok(())
        });
    }
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

    #[test]
    fn a_child_gets_the_hard_limit_on_open_files() {
        let (_, hard) = nofile_limits().expect("getrlimit works");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -n"]);
        raise_nofile_limit(&mut cmd);
        let out = cmd.output().expect("sh runs");
        let soft = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let expected = if hard == libc::RLIM_INFINITY { "unlimited".to_owned() } else { hard.to_string() };
        // A hard limit of "unlimited" cannot always be the soft one; then the inherited one stays.
        if hard != libc::RLIM_INFINITY {
            assert_eq!(soft, expected);
        }
    }
}
