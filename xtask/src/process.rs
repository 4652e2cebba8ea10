//! Child processes: a guard that stops a server when it goes out of scope, and waiting that honours
//! Ctrl-C and SIGTERM.
//!
//! xtask installs one signal handler at start ([`install_interrupt_handler`]) that only sets a flag.
//! It is a handler, not `SIG_IGN`, so the children xtask spawns keep the default signal behaviour. The
//! places that wait (for `cargo test`, for a server to become ready) poll the flag and unwind through
//! the normal error path, so every [`GuardedChild`] is dropped, and its process stopped, on the way out.

use std::fmt;
use std::io;
use std::iter;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::sys;

/// How often waiting loops look at a child and at the interrupt flag.
const POLL: Duration = Duration::from_millis(100);

/// How long to wait for a process to disappear after `SIGKILL`, the last step of every stop.
const KILL_WAIT: Duration = Duration::from_secs(5);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C / SIGTERM / SIGHUP handler that sets the flag read by [`interrupted`].
pub(crate) fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C/SIGTERM handler")
}

/// Whether Ctrl-C, SIGTERM or SIGHUP has been received.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Returns [`Interrupted`] as an error once a signal has been received, to stop between two steps.
pub(crate) fn check_interrupted() -> Result<()> {
    if interrupted() { Err(Interrupted.into()) } else { Ok(()) }
}

/// The error that unwinds a task after Ctrl-C or SIGTERM; `main` turns it into exit code 130.
#[derive(Debug)]
pub(crate) struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Runs `cmd` (named `what` in errors) to completion, in a process group of its own, polling every 100 ms.
///
/// When Ctrl-C or SIGTERM arrives meanwhile, sends SIGTERM to the child's process group, waits for the
/// child and returns [`Interrupted`]. The group is what makes this complete: `cargo test` does not pass
/// SIGTERM on to the test binary it runs, which would otherwise run on against a stopped server.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<ExitStatus> {
    let mut child = cmd.process_group(0).spawn().with_context(|| format!("cannot run `{what}`"))?;
    loop {
        if let Some(status) = child.try_wait().with_context(|| format!("cannot wait for {what}"))? {
            return Ok(status);
        }
        if interrupted() {
            // The child may have exited since `try_wait`; it is not reaped yet, so its group id is
            // still ours.
            let _ = sys::kill_group(child.id(), libc::SIGTERM);
            child.wait().with_context(|| format!("cannot wait for {what}"))?;
            return Err(Interrupted.into());
        }
        thread::sleep(POLL);
    }
}

/// The exit code to pass on for a child's `status`: its own code, or 128 + the signal that killed it.
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    let code = status.code().or_else(|| status.signal().map(|signal| 128 + signal)).unwrap_or(1);
    u8::try_from(code).unwrap_or(1)
}

/// One step of stopping a process: send `signal`, then give it `wait` to exit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StopStep {
    /// The signal to send.
    pub(crate) signal: libc::c_int,
    /// How long to wait for the process to exit before the next step.
    pub(crate) wait: Duration,
}

/// A child process that is stopped when the guard is dropped: a server xtask must never leave behind.
///
/// Stopping walks the `stop` steps (for PostgreSQL: SIGINT for a fast shutdown, then SIGQUIT) and ends
/// with SIGKILL. A child that has already exited is only reaped, never signalled.
pub(crate) struct GuardedChild {
    name: String,
    child: Option<Child>,
    stop: &'static [StopStep],
}

impl GuardedChild {
    /// Guards `child`, named `name` in messages, to be stopped with the `stop` steps and then SIGKILL.
    pub(crate) fn new(name: impl Into<String>, child: Child, stop: &'static [StopStep]) -> Self {
        Self { name: name.into(), child: Some(child), stop }
    }

    /// The child's process id, or `None` once it has been stopped or detached.
    pub(crate) fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The child's exit status if it has exited, without blocking.
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => child.try_wait().with_context(|| format!("cannot wait for {}", self.name)),
            None => Ok(None),
        }
    }

    /// Stops the child: each stop step in turn, then SIGKILL, until it has exited. Does nothing the
    /// second time.
    pub(crate) fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = child.id();
        escalate(self.stop, |signal| sys::kill(pid, signal), || Ok(child.try_wait()?.is_some()))
            .with_context(|| format!("cannot stop {} (pid {pid})", self.name))
    }

    /// Gives up the guard and leaves the process running; returns its pid.
    pub(crate) fn detach(mut self) -> Option<u32> {
        // Dropping a `std::process::Child` neither kills nor waits for the process.
        self.child.take().map(|child| child.id())
    }
}

impl Drop for GuardedChild {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("xtask: warning: {err:#}");
        }
    }
}

/// Stops a process that is not our child (a server started by an earlier xtask run) with the `stop` steps
/// and then SIGKILL.
///
/// `still_ours` is asked before every signal and while waiting: it must say whether `pid` is still the
/// process we mean (running, not a zombie, and the same program), so that a reused pid is never signalled.
pub(crate) fn stop_pid(pid: u32, stop: &[StopStep], still_ours: impl Fn() -> bool) -> Result<()> {
    escalate(stop, |signal| if still_ours() { sys::kill(pid, signal) } else { Ok(()) }, || Ok(!still_ours()))
        .with_context(|| format!("cannot stop pid {pid}"))
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
            thread::sleep(Duration::from_millis(50));
        }
    }
    if exited()? {
        return Ok(());
    }
    bail!("still running {}s after SIGKILL", KILL_WAIT.as_secs())
}
