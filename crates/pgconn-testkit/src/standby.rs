//! A streaming standby of a [`Cluster`], for failover tests.
//!
//! [`Cluster::start_standby`] takes a base backup of a running cluster with `pg_basebackup -R -X stream`
//! (as the server user, over loopback TCP as the superuser, whom the testkit's `pg_hba.conf` lets stream
//! the WAL), starts it on a free port with its own socket directory, waits until it accepts (read-only)
//! connections and streams from its primary, and returns it as a [`Cluster`] of its own: the same
//! [`ConnInfo`] (the roles, database and password are in the copy), stopped and removed when dropped,
//! in a directory the abandoned-cluster sweep recognises. [`Cluster::promote`] ends its recovery;
//! [`Cluster::is_in_recovery`] says whether it is still a standby.
//!
//! Streaming is asynchronous (PostgreSQL's default): a commit the primary has acknowledged may not have
//! reached the standby when the primary stops, and is then missing after a promotion. The testkit's
//! clusters also run with `synchronous_commit = off`, which widens that window to the WAL writer's delay.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cluster::{ADMIN_USER, Cluster, ClusterOptions, ConnInfo, Inaccessible, temp_cluster_dir};
use crate::process::{GuardedChild, StopStep};
use crate::psql::Psql;

/// How long `pg_basebackup` may take; a test cluster is copied in well under a second.
const BASEBACKUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How `pg_basebackup` is stopped when it takes too long or starting is interrupted (then SIGKILL).
const BASEBACKUP_STOP: &[StopStep] = &[StopStep { signal: libc::SIGTERM, wait: Duration::from_secs(5) }];
/// How long a standby that accepts connections gets to start streaming from its primary.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a promotion may take before [`Cluster::promote`] fails.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a child process or the server is asked whether it is done.
const POLL: Duration = Duration::from_millis(20);
/// How long one `psql` call may take, beyond what its statement itself waits for.
const PSQL_TIMEOUT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Starts a streaming standby of this cluster in a fresh directory `pgconn-test-<pid>-<n>-<nanos>`
    /// under [`std::env::temp_dir`] (or `/tmp`, when the server user cannot reach it), as
    /// [`Cluster::start_temp`] does; see [`Cluster::start_standby_in`].
    ///
    /// ```no_run
    /// use pgconn_testkit::{Cluster, ClusterOptions, ShutdownMode};
    ///
    /// let mut primary = Cluster::start_temp(&ClusterOptions::default())?;
    /// let standby = primary.start_standby(&ClusterOptions::default())?;
    /// assert!(standby.is_in_recovery()?);
    /// primary.stop_server_with(ShutdownMode::Immediate)?;
    /// standby.promote()?; // returns once it accepts writes
    /// assert!(!standby.is_in_recovery()?);
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn start_standby(&self, options: &ClusterOptions) -> Result<Cluster> {
        let temp = std::env::temp_dir();
        match self.start_standby_in(&temp_cluster_dir(&temp), options) {
            Err(err) if err.is::<Inaccessible>() && temp != Path::new("/tmp") => {
                if let Some(progress) = options.progress {
                    progress(&format!("{err}; using /tmp instead"));
                }
                self.start_standby_in(&temp_cluster_dir(Path::new("/tmp")), options)
            }
            result => result,
        }
    }

    /// Starts a streaming standby of this (running) cluster in `dir`, which must not exist: runs
    /// `pg_basebackup -D <dir>/data -R -X stream -c fast` against this cluster as the server user, writes
    /// the testkit's settings (a free port, `<dir>/socket`, then `options`' `extra_settings`) after the
    /// ones copied from the primary, starts the server, and returns once it accepts connections and its
    /// WAL receiver streams from this cluster.
    ///
    /// The standby has the same layout as a cluster (`data/`, `socket/`, `postgres.log`, which also gets
    /// `pg_basebackup`'s output) and the same [`ConnInfo`] but for the port and socket directory: the same
    /// roles, database and password. A standby of a cluster with TLS serves the same certificate, and its
    /// [`Cluster::ca_file`] is a copy of the primary's; [`ClusterOptions::tls`] is not looked at here.
    /// Settings that size shared memory (`max_connections`, `max_worker_processes`, `max_wal_senders`,
    /// `max_prepared_transactions`, `max_locks_per_transaction`) must not be lower than the primary's, or
    /// the standby refuses to start. It is read-only until [`Cluster::promote`]d. Everything else is as
    /// for [`Cluster::start`]: `options` chooses progress, interruption and the process group; dropping it
    /// stops the server and removes `dir`; [`Cluster::restart`] keeps its port. Dropping the primary first
    /// is fine (the standby keeps trying to reconnect to it).
    ///
    /// On any error, and when interrupted, what was started is stopped and `dir` removed. When the server
    /// user cannot use `dir`, the error is [`Inaccessible`].
    pub fn start_standby_in(&self, dir: &Path, options: &ClusterOptions) -> Result<Cluster> {
        if self.pid().is_none() {
            bail!(
                "the cluster in {} is stopped; start it before taking a standby of it",
                self.dir().display()
            );
        }
        let primary_port = self.info().port;
        let info = ConnInfo { port: 0, socket_dir: dir.join("socket"), ..self.info().clone() };
        // From here on, dropping `standby` stops what was started and removes `dir`.
        let mut standby = Cluster::create_dir(dir, self.user(), info, options)?;
        standby.prepare_dir()?;
        standby.report(&format!("PostgreSQL standby of 127.0.0.1:{primary_port} in {}", dir.display()));
        standby.base_backup(primary_port, options.own_process_group)?;
        // TLS comes with the copy (the settings, `server.crt` and `server.key`): the standby serves the
        // primary's certificate, so it gets the primary's CA file too.
        if let Some(ca) = self.ca_file() {
            let copy = dir.join(ca.file_name().context("a CA file has a name")?);
            fs::copy(&ca, &copy)
                .with_context(|| format!("cannot copy {} to {}", ca.display(), copy.display()))?;
            self.user().chown(&copy)?;
        }
        standby.launch()?;
        standby.wait_streaming()?;
        standby.report(&format!(
            "standby on 127.0.0.1:{} streams from 127.0.0.1:{primary_port}",
            standby.info().port
        ));
        Ok(standby)
    }

    /// Promotes this standby to a primary and returns once it has left recovery, that is, once new
    /// sessions may write: `SELECT pg_promote(wait => false)` through [`ConnInfo::admin_url`], then
    /// `pg_is_in_recovery()` polled every 5 ms inside the server, for at most 60 s. (`pg_promote`'s own
    /// wait and `pg_ctl promote -w` look only every 100 ms; `pg_ctl` also returns as soon as the control
    /// file says "in production", a moment before sessions may write.)
    ///
    /// Fails when the server is not a standby ("recovery is not in progress"), is stopped, or does not
    /// finish the promotion in time.
    pub fn promote(&self) -> Result<()> {
        let wait = format!(
            "DO $$ DECLARE deadline timestamptz := clock_timestamp() + interval '{} seconds'; BEGIN \
             WHILE pg_is_in_recovery() LOOP \
             IF clock_timestamp() > deadline THEN \
             RAISE EXCEPTION 'still in recovery {0} s after pg_promote()'; END IF; \
             PERFORM pg_sleep(0.005); END LOOP; END $$",
            PROMOTE_TIMEOUT.as_secs()
        );
        psql(self.info(), &["SELECT pg_promote(wait => false)", &wait], PROMOTE_TIMEOUT + PSQL_TIMEOUT)
            .with_context(|| format!("cannot promote the standby on port {}", self.info().port))?;
        self.report(&format!("standby on 127.0.0.1:{} promoted", self.info().port));
        Ok(())
    }

    /// Whether the server is in recovery (`SELECT pg_is_in_recovery()`): `true` for a standby, `false`
    /// for a primary or a promoted standby. Fails when the server cannot be asked within 15 s.
    pub fn is_in_recovery(&self) -> Result<bool> {
        let answer = psql(self.info(), &["SELECT pg_is_in_recovery()"], PSQL_TIMEOUT)?;
        match answer.as_str() {
            "t" => Ok(true),
            "f" => Ok(false),
            other => bail!("pg_is_in_recovery() answered {other:?}"),
        }
    }

    /// `pg_basebackup` of the primary on `primary_port` into the (empty) data directory, output to the
    /// log, as the server user, for at most [`BASEBACKUP_TIMEOUT`].
    fn base_backup(&self, primary_port: u16, own_process_group: bool) -> Result<()> {
        use std::os::unix::process::CommandExt as _;

        self.check_interrupted()?;
        let log = self.log_file();
        let (stdout, stderr) = self.log_handles()?;
        let mut cmd = self.user().command(&self.info().bindir.join("pg_basebackup"), self.dir());
        cmd.arg("-D")
            .arg(self.data_dir())
            // -R: standby.signal and primary_conninfo; -X stream: the WAL written meanwhile comes along;
            // -c fast: an immediate checkpoint instead of a spread one; -w: never ask for a password.
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-w", "-h", "127.0.0.1", "-p"])
            .arg(primary_port.to_string())
            .args(["-U", ADMIN_USER])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if own_process_group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().context("cannot run pg_basebackup")?;
        // Dropping the guard on an early return stops it.
        let mut child = GuardedChild::new("pg_basebackup", child, BASEBACKUP_STOP);
        let deadline = Instant::now() + BASEBACKUP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            self.check_interrupted()?;
            if Instant::now() >= deadline {
                bail!(
                    "pg_basebackup from 127.0.0.1:{primary_port} did not finish within {}s; the end of {}:\n{}",
                    BASEBACKUP_TIMEOUT.as_secs(),
                    log.display(),
                    self.log_tail(0)
                );
            }
            thread::sleep(POLL);
        };
        if !status.success() {
            bail!(
                "pg_basebackup from 127.0.0.1:{primary_port} failed ({status}); the end of {}:\n{}",
                log.display(),
                self.log_tail(0)
            );
        }
        Ok(())
    }

    /// Waits until the WAL receiver streams (`pg_stat_wal_receiver.status`), for at most
    /// [`STREAMING_TIMEOUT`].
    fn wait_streaming(&self) -> Result<()> {
        let deadline = Instant::now() + STREAMING_TIMEOUT;
        loop {
            self.check_interrupted()?;
            let status = psql(self.info(), &["SELECT status FROM pg_stat_wal_receiver"], PSQL_TIMEOUT)?;
            if status == "streaming" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the standby on port {} accepts connections but did not stream from its primary within \
                     {}s (WAL receiver: {:?}); the end of {}:\n{}",
                    self.info().port,
                    STREAMING_TIMEOUT.as_secs(),
                    if status.is_empty() { "not running" } else { status.as_str() },
                    self.log_file().display(),
                    self.log_tail(0)
                );
            }
            thread::sleep(POLL);
        }
    }
}

/// Runs each of `commands` (in order, stopping at the first error) through `psql` as the superuser over TCP
/// ([`ConnInfo::admin_url`]) within `timeout`; returns the output, unaligned, without headers, trimmed.
fn psql(info: &ConnInfo, commands: &[&str], timeout: Duration) -> Result<String> {
    let url = info.admin_url();
    let sql = format!("{};\n", commands.join(";\n"));
    Psql { bindir: &info.bindir, url: &url, password: None, timeout, env: &[] }.run(&sql)
}
