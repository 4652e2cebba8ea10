//! The one way the testkit (and its callers) run `psql`: hermetic (`-X`, no `PGOPTIONS`/`PGSERVICE` from
//! the caller's environment), unaligned output without headers, stopping at the first error, the SQL on
//! stdin and the password in `PGPASSWORD` (neither shows in `ps`), and a deadline after which `psql` is
//! killed.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::signal;

/// What to run and where.
#[derive(Debug, Clone)]
pub struct Psql<'a> {
    /// The directory of the `psql` binary.
    pub bindir: &'a Path,
    /// A connection URL without its password (`postgresql://user@host:port/db`).
    pub url: &'a str,
    /// The password, if the login needs one.
    pub password: Option<&'a str>,
    /// The whole run, at most; also `psql`'s connect timeout.
    pub timeout: Duration,
    /// More environment for `psql` (`PGSSLCERT`, say).
    pub env: &'a [(&'a str, &'a str)],
}

impl Psql<'_> {
    /// Runs `sql` (one or more statements); returns what `psql` printed, trimmed, or an error with its
    /// message. `PGSSLMODE=disable` unless the URL says otherwise.
    ///
    /// # Errors
    /// When `psql` cannot run, a statement fails, or the deadline passes.
    pub fn run(&self, sql: &str) -> Result<String> {
        let mut cmd = Command::new(self.bindir.join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url])
            .env("PGCONNECT_TIMEOUT", self.timeout.as_secs().max(2).to_string())
            .env("PGSSLMODE", "disable")
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match self.password {
            Some(password) => cmd.env("PGPASSWORD", password),
            None => cmd.env_remove("PGPASSWORD"),
        };
        cmd.envs(self.env.iter().copied());
        let mut child = cmd.spawn().context("cannot run psql")?;
        let pid = child.id();
        // Written from a thread of its own, so that the deadline covers it too; a psql that exited early
        // (its error is in its stderr) only makes the write fail, which is then of no interest.
        let mut stdin = child.stdin.take().context("psql has no stdin")?;
        let sql = sql.to_owned();
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(sql.as_bytes());
        });
        let (tx, rx) = mpsc::sync_channel::<std::io::Result<Output>>(1);
        let waiter = thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let Ok(output) = rx.recv_timeout(self.timeout) else {
            // The waiter reaps psql only once it has exited, so until then the pid is psql's.
            let _ = signal::kill(pid, libc::SIGKILL);
            let _ = waiter.join();
            let _ = writer.join();
            bail!("psql to {} did not finish within {}s", self.url, self.timeout.as_secs());
        };
        let _ = waiter.join();
        let _ = writer.join();
        let output = output.context("cannot wait for psql")?;
        if !output.status.success() {
            bail!(
                "psql to {} failed ({}): {}",
                self.url,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}
