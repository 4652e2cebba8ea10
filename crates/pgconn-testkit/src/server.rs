//! What the cluster, the standby and PgBouncer share as guarded server processes: [`GuardedServer`] (spawn
//! with the output in a log, readiness poll, start again with the same command line, stop with the
//! server's own steps, stop on `Drop`), a start that tries another port when the chosen one was taken
//! meanwhile ([`on_a_free_port`]), the tail of a log for errors, and the URL encoding of their logins.
//! Each server keeps only its own specifics (`cluster.rs`, `standby.rs`, `pgbouncer.rs`): its command,
//! its probe, its files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::host::ServerUser;
use crate::process::{GuardedChild, StopStep};

/// Ports tried when each chosen one was taken meanwhile by another process.
const START_ATTEMPTS: u32 = 4;

/// How many lines of a log an error quotes.
const LOG_TAIL_LINES: usize = 30;

/// How one start of a server went.
pub(crate) enum Launch<T> {
    /// It runs and answers.
    Running(T),
    /// It exited while starting: the log lines it wrote meanwhile, and the error to give when another
    /// port would not help.
    Exited { log: String, error: anyhow::Error },
}

/// Starts a server on a free port with `start`, again on another port when its log says the one chosen
/// was taken meanwhile (`report` is told), at most [`START_ATTEMPTS`] times.
pub(crate) fn on_a_free_port<T>(
    report: impl Fn(&str),
    mut start: impl FnMut(u16) -> Result<Launch<T>>,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        match start(port)? {
            Launch::Running(server) => return Ok(server),
            Launch::Exited { log, .. }
                if log.contains("Address already in use") && attempt < START_ATTEMPTS =>
            {
                report(&format!("port {port} was taken meanwhile, trying another"));
            }
            Launch::Exited { error, .. } => return Err(error),
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1 (bind port 0, read the port, let go).
pub(crate) fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).context("cannot bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr().context("cannot read the address of a bound socket")?.port())
}

/// The last lines of the log file `path` from byte `from` on, for error messages.
pub(crate) fn log_tail(path: &Path, from: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(err) => format!("(cannot read the log: {err})"),
    }
}

/// Percent-encodes every byte except the URL-unreserved `A-Z a-z 0-9 - . _ ~`.
pub(crate) fn percent_encode(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

/// What a readiness probe saw.
pub(crate) enum Probe {
    /// The server serves.
    Ready,
    /// Not yet: why (quoted if the wait times out), and when to ask again.
    NotYet { why: String, again_in: Duration },
}

/// How one spawn of a server ended.
pub(crate) enum Spawned {
    /// It runs and its probe said ready: its pid and how long that took.
    Ready { pid: u32, took: Duration },
    /// It exited before its probe said ready: its status and the log lines it wrote meanwhile.
    Exited { status: ExitStatus, log: String },
}

/// One server process of the testkit (a postmaster, a PgBouncer): spawned with its output appended to its
/// log, polled until its probe says it serves, started again on request with the same command line (so
/// on the same port), stopped with its own [`StopStep`]s, and stopped when dropped (through
/// [`GuardedChild`]). What differs between servers — the command, the readiness probe, files kept beside
/// the process — stays with each server; the port is chosen by [`on_a_free_port`].
pub(crate) struct GuardedServer {
    /// The program's name in messages: `postgres`, `pgbouncer`.
    name: &'static str,
    log: PathBuf,
    stop: &'static [StopStep],
    ready_timeout: Duration,
    child: Option<GuardedChild>,
}

impl GuardedServer {
    /// A server named `name` that is not running yet, logging to `log`, stopped with `stop` (then SIGKILL),
    /// given `ready_timeout` to serve after each spawn.
    pub(crate) fn new(
        name: &'static str,
        log: PathBuf,
        stop: &'static [StopStep],
        ready_timeout: Duration,
    ) -> Self {
        Self { name, log, stop, ready_timeout, child: None }
    }

    /// The process id while it runs (or has exited without being reaped yet).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(GuardedChild::id)
    }

    /// Whether the process runs; one that exited by itself is reaped, so the next [`spawn`](Self::spawn)
    /// starts it again.
    pub(crate) fn is_running(&mut self) -> Result<bool> {
        let Some(child) = &mut self.child else { return Ok(false) };
        if child.try_wait()?.is_none() {
            return Ok(true);
        }
        self.child = None;
        Ok(false)
    }

    /// Spawns `cmd` (stdout and stderr appended to the log, which is created mode 0644 for `user` when
    /// missing), calls `spawned` with its pid, then asks `probe` until it says [`Probe::Ready`], the
    /// process exits, or the ready timeout passes; `interrupted` is asked before every probe.
    ///
    /// On an error (the timeout, an interruption, an error of `spawned` or `probe`) the process is stopped
    /// again and the error returned, the timeout's with the probe's last answer and the end of the log.
    pub(crate) fn spawn(
        &mut self,
        mut cmd: Command,
        user: ServerUser,
        interrupted: impl Fn() -> Result<()>,
        spawned: impl FnOnce(u32) -> Result<()>,
        mut probe: impl FnMut() -> Result<Probe>,
    ) -> Result<Spawned> {
        interrupted()?;
        if self.is_running()? {
            bail!("{} is running already (pid {})", self.name, self.pid().unwrap_or(0));
        }
        let (stdout, stderr, log_start) = append_to_log(&self.log, user)?;
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("cannot start {}", self.name))?;
        let pid = child.id();
        self.child = Some(GuardedChild::new(self.name, child, self.stop));
        let waited = spawned(pid).and_then(|()| self.wait_ready(&interrupted, &mut probe, log_start));
        match waited {
            Ok(None) => Ok(Spawned::Ready { pid, took: started.elapsed() }),
            Ok(Some(status)) => {
                // Exited: dropping the guard only reaps it.
                self.child = None;
                Ok(Spawned::Exited { status, log: log_tail(&self.log, log_start) })
            }
            Err(err) => match self.stop_with(self.stop) {
                Ok(_) => Err(err),
                Err(stop_err) => Err(err.context(format!("and stopping it failed: {stop_err:#}"))),
            },
        }
    }

    /// Stops the process with `steps` (then SIGKILL) until it has exited; returns its pid, or `None` when
    /// it was not running.
    pub(crate) fn stop_with(&mut self, steps: &[StopStep]) -> Result<Option<u32>> {
        let Some(mut child) = self.child.take() else { return Ok(None) };
        let pid = child.id();
        child.stop_with(steps)?;
        Ok(pid)
    }

    /// Leaves the process running and gives up the guard; returns its pid.
    pub(crate) fn detach(&mut self) -> Option<u32> {
        self.child.take().and_then(GuardedChild::detach)
    }

    /// `None` once the probe says ready; `Some(status)` when the process exited first.
    fn wait_ready(
        &mut self,
        interrupted: &impl Fn() -> Result<()>,
        probe: &mut impl FnMut() -> Result<Probe>,
        log_start: u64,
    ) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            let child = self.child.as_mut().context("no process to wait for")?;
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            interrupted()?;
            let (why, again_in) = match probe()? {
                Probe::Ready => return Ok(None),
                Probe::NotYet { why, again_in } => (why, again_in),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} did not serve within {:?} ({why}); the end of {}:\n{}",
                    self.name,
                    self.ready_timeout,
                    self.log.display(),
                    log_tail(&self.log, log_start)
                );
            }
            thread::sleep(again_in);
        }
    }
}

/// Two append handles on the log `path` (created mode 0644 and given to `user` when missing), for a child's
/// stdout and stderr, and its length before they write.
pub(crate) fn append_to_log(path: &Path, user: ServerUser) -> Result<(File, File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    user.chown(path)?;
    let start = file.metadata().map_or(0, |meta| meta.len());
    let copy = file.try_clone().with_context(|| format!("cannot open {}", path.display()))?;
    Ok((file, copy, start))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const TERM: &[StopStep] = &[StopStep { signal: libc::SIGTERM, wait: Duration::from_secs(5) }];

    fn temp_log(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgconn-testkit-server-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        dir.join("server.log")
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn ready_after_the_probe_says_so_then_stopped_and_started_again() {
        let mut server = GuardedServer::new("sleeper", temp_log("ready"), TERM, Duration::from_secs(10));
        let mut asked = 0;
        let mut recorded = None;
        let probe = || {
            asked += 1;
            Ok(if asked < 3 {
                Probe::NotYet { why: "not yet".into(), again_in: Duration::from_millis(1) }
            } else {
                Probe::Ready
            })
        };
        let spawned = server
            .spawn(
                sh("exec sleep 600"),
                ServerUser::Current,
                || Ok(()),
                |pid| {
                    recorded = Some(pid);
                    Ok(())
                },
                probe,
            )
            .expect("it starts");
        let Spawned::Ready { pid, .. } = spawned else { panic!("it should be ready") };
        assert_eq!(asked, 3);
        assert_eq!(recorded, Some(pid));
        assert_eq!(server.pid(), Some(pid));
        assert!(server.is_running().expect("try_wait"));
        assert_eq!(server.stop_with(TERM).expect("it stops"), Some(pid));
        assert!(!alive(pid));
        assert_eq!(server.stop_with(TERM).expect("nothing to stop"), None);
        let again = server
            .spawn(sh("exec sleep 600"), ServerUser::Current, || Ok(()), |_| Ok(()), || Ok(Probe::Ready))
            .expect("it starts again");
        let Spawned::Ready { pid: second, .. } = again else { panic!("it should be ready") };
        assert_ne!(second, pid);
        drop(server);
        assert!(!alive(second), "dropping the server stops it");
    }

    #[test]
    fn an_exit_while_starting_returns_the_new_log_lines() {
        let log = temp_log("exit");
        std::fs::write(&log, "an earlier start\n").expect("write the log");
        let mut server = GuardedServer::new("failing", log, TERM, Duration::from_secs(10));
        let never = || Ok(Probe::NotYet { why: "starting".into(), again_in: Duration::from_millis(5) });
        let spawned = server
            .spawn(sh("echo 'FATAL: no good' >&2; exit 3"), ServerUser::Current, || Ok(()), |_| Ok(()), never)
            .expect("spawning works");
        let Spawned::Exited { status, log } = spawned else { panic!("it should have exited") };
        assert_eq!(status.code(), Some(3));
        assert_eq!(log, "FATAL: no good", "only this start's lines");
        assert_eq!(server.pid(), None);
        assert!(!server.is_running().expect("nothing runs"));
    }

    #[test]
    fn a_server_that_never_serves_is_stopped_and_the_error_says_why() {
        let mut server = GuardedServer::new("silent", temp_log("timeout"), TERM, Duration::from_millis(300));
        let mut pid = 0;
        let never = || Ok(Probe::NotYet { why: "port 1 closed".into(), again_in: Duration::from_millis(20) });
        let err = server
            .spawn(
                sh("echo started; exec sleep 600"),
                ServerUser::Current,
                || Ok(()),
                |p| {
                    pid = p;
                    Ok(())
                },
                never,
            )
            .err()
            .expect("it times out");
        let message = format!("{err:#}");
        assert!(message.contains("silent did not serve within 300ms (port 1 closed)"), "{message}");
        assert!(message.contains("started"), "the log's end is quoted: {message}");
        assert!(pid != 0 && !alive(pid), "the process is stopped");
        assert_eq!(server.pid(), None);
    }

    #[test]
    fn an_interruption_stops_the_starting_server() {
        let mut server =
            GuardedServer::new("interrupted", temp_log("interrupt"), TERM, Duration::from_secs(10));
        let mut pid = 0;
        let asked = std::cell::Cell::new(0);
        let interrupted = || {
            asked.set(asked.get() + 1);
            if asked.get() > 2 { Err(crate::Interrupted.into()) } else { Ok(()) }
        };
        let never = || Ok(Probe::NotYet { why: "starting".into(), again_in: Duration::from_millis(5) });
        let err = server
            .spawn(
                sh("exec sleep 600"),
                ServerUser::Current,
                interrupted,
                |p| {
                    pid = p;
                    Ok(())
                },
                never,
            )
            .err()
            .expect("interrupted");
        assert!(err.is::<crate::Interrupted>(), "{err:#}");
        assert!(pid != 0 && !alive(pid));
    }
}
