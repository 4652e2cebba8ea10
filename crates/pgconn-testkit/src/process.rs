//! Child processes that must not outlive their owner: a guard that stops a server when it goes out of
//! scope, and stopping a server that is not our child.
//!
//! Stopping is a list of [`StopStep`]s (a signal, then a wait for the process to exit) that always ends
//! with `SIGKILL`. A process that has already exited is only reaped, never signalled.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io;
use std::iter;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::signal;

/// How long to wait for a process to disappear after `SIGKILL`, the last step of every stop.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How often stopping looks at whether the process has exited.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The error that ends starting or restarting a cluster when the caller's interrupt check
/// ([`ClusterOptions::interrupted`](crate::ClusterOptions::interrupted)) says so: Ctrl-C or SIGTERM
/// reached xtask. Whatever was started is stopped before it is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// One step of stopping a process: send `signal`, then give it `wait` to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopStep {
    /// The signal to send.
    pub signal: libc::c_int,
    /// How long to wait for the process to exit before the next step.
    pub wait: Duration,
}

/// A child process that is stopped when the guard is dropped: a server a test or xtask must never leave
/// behind.
///
/// Stopping walks the `stop` steps (for PostgreSQL [`POSTGRES_STOP`](crate::POSTGRES_STOP): SIGINT for a
/// fast shutdown, then SIGQUIT) and ends with SIGKILL. A child that has already exited is only reaped,
/// never signalled.
pub struct GuardedChild {
    name: String,
    child: Option<Child>,
    stop: &'static [StopStep],
}

impl fmt::Debug for GuardedChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedChild")
            .field("name", &self.name)
            .field("pid", &self.id())
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl GuardedChild {
    /// Guards `child`, named `name` in messages, to be stopped with the `stop` steps and then SIGKILL.
    pub fn new(name: impl Into<String>, child: Child, stop: &'static [StopStep]) -> Self {
        Self { name: name.into(), child: Some(child), stop }
    }

    /// The name given to [`GuardedChild::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id, or `None` once it has been stopped or detached.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The child's exit status if it has exited, without blocking; `None` while it runs, and once it has
    /// been stopped or detached.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => child.try_wait().with_context(|| format!("cannot wait for {}", self.name)),
            None => Ok(None),
        }
    }

    /// Stops the child with the steps given to [`GuardedChild::new`], then SIGKILL, until it has exited.
    /// Does nothing the second time.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_with(self.stop)
    }

    /// Stops the child with `steps` instead of the usual ones (for PostgreSQL, an immediate shutdown),
    /// then SIGKILL, until it has exited. Does nothing once the child has been stopped or detached.
    pub fn stop_with(&mut self, steps: &[StopStep]) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = child.id();
        escalate(steps, |sig| signal::kill(pid, sig), || Ok(child.try_wait()?.is_some()))
            .with_context(|| format!("cannot stop {} (pid {pid})", self.name))
    }

    /// Gives up the guard and leaves the process running; returns its pid.
    pub fn detach(mut self) -> Option<u32> {
        // Dropping a `std::process::Child` neither kills nor waits for the process.
        self.child.take().map(|child| child.id())
    }
}

impl Drop for GuardedChild {
    // A destructor cannot return the error, and a server left running must not go unnoticed.
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("pgconn-testkit: warning: {err:#}");
        }
    }
}

/// Stops a process that is not our child (a server started by an earlier xtask run) with the `stop` steps
/// and then SIGKILL.
///
/// `still_ours` is asked before every signal and while waiting: it must say whether `pid` is still the
/// process we mean (running, not a zombie, and the same program, see
/// [`is_postgres_for`](crate::is_postgres_for)), so that a reused pid is never signalled.
pub fn stop_pid(pid: u32, stop: &[StopStep], still_ours: impl Fn() -> bool) -> Result<()> {
    escalate(stop, |sig| if still_ours() { signal::kill(pid, sig) } else { Ok(()) }, || Ok(!still_ours()))
        .with_context(|| format!("cannot stop pid {pid}"))
}

/// Whether `pid` is a live (not zombie) process of one of the `programs` (by file name) whose command
/// line has `arg` as one of its arguments: the only check that makes signalling a pid read from a file
/// safe.
pub(crate) fn runs_with_arg(pid: u32, programs: &[&str], arg: &Path) -> bool {
    if pid == 0 {
        return false;
    }
    let proc = Path::new("/proc").join(pid.to_string());
    let Ok(stat) = fs::read_to_string(proc.join("stat")) else { return false };
    // `pid (comm) S ...`: the state follows the last `)`.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z" | "X")) {
        return false;
    }
    let Ok(cmdline) = fs::read(proc.join("cmdline")) else { return false };
    let mut args = cmdline.split(|&b| b == 0).map(OsStr::from_bytes);
    let is_program = args
        .next()
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|name| programs.iter().any(|program| name == *program));
    is_program && args.any(|candidate| Path::new(candidate) == arg)
}

/// Sends each step's signal and waits for `exited`; ends with SIGKILL.
fn escalate(
    steps: &[StopStep],
    mut signal: impl FnMut(libc::c_int) -> io::Result<()>,
    mut exited: impl FnMut() -> io::Result<bool>,
) -> Result<()> {
    let kill = StopStep { signal: libc::SIGKILL, wait: KILL_WAIT };
    for step in steps.iter().chain(iter::once(&kill)) {
        if exited()? {
            return Ok(());
        }
        match signal(step.signal) {
            Ok(()) => {}
            // Gone between the check and the signal.
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
            Err(err) => return Err(err).context(format!("cannot send signal {}", step.signal)),
        }
        let deadline = Instant::now() + step.wait;
        while Instant::now() < deadline {
            if exited()? {
                return Ok(());
            }
            thread::sleep(STOP_POLL);
        }
    }
    if exited()? {
        return Ok(());
    }
    bail!("still running {}s after SIGKILL", KILL_WAIT.as_secs())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    const TERM_QUICKLY: &[StopStep] = &[StopStep { signal: libc::SIGTERM, wait: Duration::from_secs(5) }];

    fn sleeper() -> Child {
        Command::new("sleep").arg("600").stdin(Stdio::null()).spawn().expect("`sleep` runs")
    }

    #[test]
    fn dropping_the_guard_stops_the_child() {
        let guard = GuardedChild::new("sleep", sleeper(), TERM_QUICKLY);
        let pid = guard.id().expect("a running child has a pid");
        let proc = format!("/proc/{pid}");
        assert!(std::path::Path::new(&proc).exists());
        drop(guard);
        // Reaped, so the pid is gone (barring reuse within microseconds).
        assert!(!std::path::Path::new(&proc).exists());
    }

    #[test]
    fn stop_escalates_to_sigkill_and_is_idempotent() {
        // A first step with a signal `sleep` ignores when blocked is hard to arrange portably; SIGCONT is
        // harmless to a running process, so only SIGKILL ends it.
        let steps = [StopStep { signal: libc::SIGCONT, wait: Duration::from_millis(200) }];
        let mut guard = GuardedChild::new("sleep", sleeper(), TERM_QUICKLY);
        guard.stop_with(&steps).expect("SIGKILL ends it");
        assert_eq!(guard.id(), None);
        guard.stop().expect("the second stop does nothing");
    }
}
