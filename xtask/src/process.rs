//! Ctrl-C and SIGTERM, and running a child to completion while honouring them.
//!
//! xtask installs one signal handler at start ([`install_interrupt_handler`]) that only sets a flag.
//! It is a handler, not `SIG_IGN`, so the children xtask spawns keep the default signal behaviour. The
//! places that wait (for `cargo test` here, for a server or PgBouncer to become ready in
//! `pgconn-testkit`, which is given [`interrupted`] through [`ClusterOptions::interrupted`]) poll the flag
//! and unwind through the normal error path, so every cluster, PgBouncer and guarded child is dropped,
//! and its process stopped, on the way out.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use pgconn_testkit::{ClusterOptions, Interrupted, PgBouncerOptions, signal};

/// How often waiting loops look at a child and at the interrupt flag.
const POLL: Duration = Duration::from_millis(100);

/// How long an interrupted child's process group gets to disappear after SIGTERM.
const GROUP_WAIT: Duration = Duration::from_secs(10);

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

/// The options of every cluster xtask starts: progress on stderr with xtask's prefix, stopped by Ctrl-C
/// and SIGTERM, and in a process group of its own so that only xtask's orderly stop reaches it.
pub(crate) fn cluster_options() -> ClusterOptions {
    ClusterOptions {
        progress: Some(|line| eprintln!("xtask: {line}")),
        interrupted: Some(interrupted),
        own_process_group: true,
        ..ClusterOptions::default()
    }
}

/// The options of every PgBouncer xtask starts: those of [`cluster_options`] (progress, Ctrl-C, a
/// process group of its own).
pub(crate) fn pgbouncer_options() -> PgBouncerOptions {
    PgBouncerOptions::from(&cluster_options())
}

/// Runs `cmd` (named `what` in errors) to completion, in a process group of its own, polling every 100 ms.
///
/// When Ctrl-C or SIGTERM arrives meanwhile, sends SIGTERM to the child's process group, waits for the
/// child, then up to 10 s for the rest of the group, and returns [`Interrupted`]. The group is what makes
/// this complete: `cargo test` does not pass SIGTERM on to the test binary it runs, which would otherwise
/// run on against a stopped server. The test binaries' private clusters are in that group too, and shut
/// down on the SIGTERM.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<ExitStatus> {
    let mut child = cmd.process_group(0).spawn().with_context(|| format!("cannot run `{what}`"))?;
    let group = child.id();
    loop {
        if let Some(status) = child.try_wait().with_context(|| format!("cannot wait for {what}"))? {
            return Ok(status);
        }
        if interrupted() {
            // The child may have exited since `try_wait`; it is not reaped yet, so its group id is
            // still ours.
            let _ = signal::kill_group(group, libc::SIGTERM);
            child.wait().with_context(|| format!("cannot wait for {what}"))?;
            // The group id stays in use while any member lives, so signal 0 cannot reach a stranger.
            let deadline = Instant::now() + GROUP_WAIT;
            while signal::kill_group(group, 0).is_ok() && Instant::now() < deadline {
                thread::sleep(POLL);
            }
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
