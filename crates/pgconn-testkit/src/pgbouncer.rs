//! A real PgBouncer in front of a throwaway cluster.
//!
//! [`PgBouncer::start`] runs `pgbouncer INI` in the foreground for any `pgbouncer.ini` (its log, on
//! stderr, goes to `DIR/pgbouncer.log`) and waits until it serves its admin console. The ini pgconn's
//! tests use is the one `pgconn pgbouncer-ini` renders: [`PgBouncer::render_and_start`] and
//! [`PgBouncer::in_front_of`] run that command (from a binary the caller names: the testkit does not
//! build anything) and start PgBouncer with its output.
//!
//! Layout of a PgBouncer directory (mode 0755, owned by the server user): `pgbouncer.ini`,
//! `userlist.txt` (mode 0600: it holds the password), `pgbouncer.log`, and `pgbouncer.pid` (written by
//! the testkit, not by PgBouncer: the pid and the ini path, so that a PgBouncer whose owner died can be
//! found and stopped, see [`stop_pgbouncers_in`]).

use std::fmt::{self, Write as _};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cluster::{Cluster, ClusterOptions, ConnInfo};
use crate::host::ServerUser;
use crate::process::{self, Interrupted, StopStep};
use crate::psql::Psql;
use crate::server::{self, GuardedServer, Launch, Probe, Spawned, percent_encode};
use crate::signal;
use crate::vars;

/// How PgBouncer is stopped: SIGTERM (immediate shutdown: clients and server connections are closed at
/// once; SIGINT's "safe shutdown" waits for every client to leave), then SIGKILL.
pub const PGBOUNCER_STOP: &[StopStep] = &[StopStep { signal: libc::SIGTERM, wait: Duration::from_secs(5) }];

/// The variable `cargo xtask test` sets to the absolute path of the `pgconn` binary it built, for tests
/// that render a `pgbouncer.ini` of their own ([`PgBouncer::in_front_of`]).
pub const PGCONN_BIN_VAR: &str = vars::PGCONN_BIN;

/// The ini file in a PgBouncer directory.
pub const INI_FILE: &str = "pgbouncer.ini";
/// The userlist (mode 0600) in a PgBouncer directory.
pub const AUTH_FILE: &str = "userlist.txt";
/// PgBouncer's log (its stderr) in a PgBouncer directory.
pub const LOG_FILE: &str = "pgbouncer.log";
/// The testkit's record of a running PgBouncer: its pid, then its ini path, one per line.
pub const PID_FILE: &str = "pgbouncer.pid";

/// The name of the directories [`PgBouncer::in_front_of`] creates in a cluster directory: `pgbouncer`,
/// then `pgbouncer-2`, `pgbouncer-3`, ...
const DIR_NAME: &str = "pgbouncer";
/// How long a starting PgBouncer gets to serve its admin console.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a starting PgBouncer is tried while its port is closed.
const CONNECT_POLL: Duration = Duration::from_millis(5);
/// How often the admin console is tried again after `psql` failed.
const PSQL_POLL: Duration = Duration::from_millis(50);
/// `PGCONNECT_TIMEOUT` of the readiness `psql`, in seconds.
const PSQL_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts to start PgBouncer when the chosen port was taken between choosing and binding it.
/// Variables [`PgBouncer::render_and_start`] sets itself and refuses from the caller.
const RESERVED_ENV: &[&str] = &["DATABASE_URL", "PGBOUNCER_HOST", "PGBOUNCER_PORT", "PGBOUNCER_URL"];

/// Finds the `pgbouncer` executable: in `PATH`, then in `/usr/sbin`, `/usr/local/sbin`, `/usr/bin`,
/// `/usr/local/bin` (Debian installs it in `/usr/sbin`, which a normal user's `PATH` may lack).
pub fn find_pgbouncer() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let fixed = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(fixed)
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| {
            fs::metadata(candidate).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            anyhow!(
                "PgBouncer is not installed (no `pgbouncer` in PATH or /usr/sbin); install it with \
                 `apt-get install pgbouncer`"
            )
        })
}

/// How to start a [`PgBouncer`]: like [`ClusterOptions`] without the server settings, plus the
/// executable. `PgBouncerOptions::from(&cluster_options)` takes over a cluster's progress function,
/// interrupt check and process-group choice.
#[derive(Debug, Clone, Default)]
pub struct PgBouncerOptions {
    /// The `pgbouncer` executable; `None` (the default): [`find_pgbouncer`].
    pub program: Option<PathBuf>,
    /// Where progress lines go ("ready on ...", "stopped"), and the warning when dropping fails; see
    /// [`ClusterOptions::progress`].
    pub progress: Option<fn(&str)>,
    /// Asked while waiting for PgBouncer; when it returns `true`, starting stops what it started and
    /// fails with [`Interrupted`]. See [`ClusterOptions::interrupted`].
    pub interrupted: Option<fn() -> bool>,
    /// Start PgBouncer in a process group of its own; see [`ClusterOptions::own_process_group`]: `true`
    /// for xtask, which stops it in order, `false` (the default) for a test, so that the signal that
    /// ends the test binary ends PgBouncer too.
    pub own_process_group: bool,
}

impl From<&ClusterOptions> for PgBouncerOptions {
    fn from(options: &ClusterOptions) -> Self {
        Self {
            program: None,
            progress: options.progress,
            interrupted: options.interrupted,
            own_process_group: options.own_process_group,
        }
    }
}

impl PgBouncerOptions {
    fn report(&self, line: &str) {
        if let Some(progress) = self.progress {
            progress(line);
        }
    }

    fn check_interrupted(&self) -> Result<()> {
        if self.interrupted.is_some_and(|interrupted| interrupted()) {
            Err(Interrupted.into())
        } else {
            Ok(())
        }
    }
}

/// What a `pgbouncer.ini` says about reaching the PgBouncer it configures, and the admin login from its
/// userlist: what the tests receive. Its `Debug` shows `***` for the password.
#[derive(Clone)]
pub struct PgBouncerInfo {
    /// The ini file (absolute).
    pub ini: PathBuf,
    /// Where to connect: the first `listen_addr` (`127.0.0.1` for `*`, `[::1]` for `::`).
    pub host: String,
    /// `listen_port`.
    pub port: u16,
    /// The first of `admin_users`: the user the URLs log in as.
    pub user: String,
    /// [`user`](Self::user)'s password from the userlist (`auth_file`); empty when it has none.
    pub password: String,
    /// The first database of `[databases]`: the database of [`database_url`](Self::database_url).
    pub database: String,
    /// `auth_file` (absolute).
    pub auth_file: PathBuf,
    /// File descriptors PgBouncer may need: `max_client_conn` plus the server connections, as PgBouncer
    /// 1.18 estimates them at start ("max expected fd use").
    pub fd_need: u64,
}

impl fmt::Debug for PgBouncerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBouncerInfo")
            .field("ini", &self.ini)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"***")
            .field("database", &self.database)
            .field("auth_file", &self.auth_file)
            .field("fd_need", &self.fd_need)
            .finish()
    }
}

impl PgBouncerInfo {
    /// Reads `ini` and the userlist it names (`auth_file`).
    ///
    /// Fails when PgBouncer would not listen on TCP (no `listen_addr`), when there is no `admin_users`,
    /// no database or no `auth_file`, or when the userlist has no plain-text password for the admin user
    /// (a SCRAM or MD5 secret cannot log in; `auth_type = trust` needs none).
    pub fn read(ini: &Path) -> Result<Self> {
        let ini = std::path::absolute(ini).with_context(|| format!("cannot resolve {}", ini.display()))?;
        let text = fs::read_to_string(&ini).with_context(|| format!("cannot read {}", ini.display()))?;
        let parsed = Ini::parse(&text);
        let context = || format!("in {}", ini.display());
        let setting = |name: &str| parsed.setting(name);
        let number = |name: &str, default: u64| -> Result<u64> {
            setting(name).map_or(Ok(default), |value| {
                value.parse().with_context(|| format!("{name} = {value:?} is not a number"))
            })
        };
        let host = setting("listen_addr")
            .and_then(|addrs| addrs.split(',').map(str::trim).find(|addr| !addr.is_empty()))
            .map(|addr| match addr {
                "*" | "0.0.0.0" => "127.0.0.1".to_owned(),
                "::" => "[::1]".to_owned(),
                addr if addr.contains(':') && !addr.starts_with('[') => format!("[{addr}]"),
                addr => addr.to_owned(),
            })
            .ok_or_else(|| anyhow!("no listen_addr: PgBouncer would not listen on TCP"))
            .with_context(context)?;
        let port = u16::try_from(number("listen_port", 6432)?)
            .context("listen_port is out of range")
            .with_context(context)?;
        let user = setting("admin_users")
            .and_then(|users| users.split(',').map(str::trim).find(|user| !user.is_empty()))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no admin_users: the admin console cannot be reached"))
            .with_context(context)?;
        let database = parsed
            .databases
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("no database in [databases]"))
            .with_context(context)?;
        let auth_file = setting("auth_file")
            .filter(|path| !path.is_empty())
            .map(|path| ini.parent().unwrap_or(Path::new("/")).join(path))
            .ok_or_else(|| anyhow!("no auth_file"))
            .with_context(context)?;
        let trust = setting("auth_type").is_some_and(|auth| auth.eq_ignore_ascii_case("trust"));
        let password = match parse_userlist(
            &fs::read_to_string(&auth_file)
                .with_context(|| format!("cannot read the auth_file {}", auth_file.display()))?,
        )
        .into_iter()
        .find(|(name, _)| *name == user)
        {
            Some((_, password)) if is_secret(&password) && !trust => bail!(
                "the password of {user} in {} is a SCRAM or MD5 secret; the testkit needs the plain \
                 password to log in to the admin console",
                auth_file.display()
            ),
            Some((_, password)) => password,
            None if trust => String::new(),
            None => bail!("{} has no line for the admin user {user}", auth_file.display()),
        };
        let pool = number("default_pool_size", 20)? + number("reserve_pool_size", 0)?;
        let databases = u64::try_from(parsed.databases.len()).unwrap_or(u64::MAX);
        // PgBouncer 1.18 counts its admin database among the pools: 1062 for 1000 clients, one database,
        // a pool of 25 and a reserve of 5.
        let fd_need = number("max_client_conn", 100)?
            .saturating_add(databases.saturating_add(1).saturating_mul(pool))
            .saturating_add(2);
        Ok(Self { ini, host, port, user, password, database, auth_file, fd_need })
    }

    /// `postgresql://<user>:<password>@<host>:<port>/<database>`, user and password percent-encoded.
    pub fn url(&self, database: &str) -> String {
        let login = if self.password.is_empty() {
            percent_encode(&self.user)
        } else {
            format!("{}:{}", percent_encode(&self.user), percent_encode(&self.password))
        };
        format!("postgresql://{login}@{}:{}/{}", self.host, self.port, percent_encode(database))
    }

    /// [`url`](Self::url) of [`database`](Self::database): what the application connects to.
    pub fn database_url(&self) -> String {
        self.url(&self.database)
    }

    /// [`url`](Self::url) of the admin console, the database `pgbouncer` (`SHOW POOLS`, `PAUSE`, ...).
    pub fn admin_url(&self) -> String {
        self.url("pgbouncer")
    }

    /// [`database_url`](Self::database_url) with the password replaced by `***`, for messages.
    pub fn redacted_database_url(&self) -> String {
        format!(
            "postgresql://{}:***@{}:{}/{}",
            percent_encode(&self.user),
            self.host,
            self.port,
            percent_encode(&self.database)
        )
    }

    /// The environment `cargo xtask test` gives the tests: `PGCONN_TEST_PGBOUNCER_URL`,
    /// `PGCONN_TEST_PGBOUNCER_ADMIN_URL`, `PGCONN_TEST_PGBOUNCER_INI`, `PGCONN_TEST_PGBOUNCER_AUTH_FILE`.
    pub fn test_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (vars::PGBOUNCER_URL, self.database_url()),
            (vars::PGBOUNCER_ADMIN_URL, self.admin_url()),
            (vars::PGBOUNCER_INI, self.ini.to_string_lossy().into_owned()),
            (vars::PGBOUNCER_AUTH_FILE, self.auth_file.to_string_lossy().into_owned()),
        ]
    }
}

/// A running PgBouncer (`pgbouncer INI`, in the foreground), stopped when dropped.
///
/// It can be stopped and started again on the same port ([`PgBouncer::restart`]), so URLs from
/// [`PgBouncer::info`] stay valid. In front of a [`Cluster`], declare it after the cluster so that it is
/// dropped first.
pub struct PgBouncer {
    dir: PathBuf,
    bindir: PathBuf,
    program: PathBuf,
    user: ServerUser,
    info: PgBouncerInfo,
    options: PgBouncerOptions,
    server: GuardedServer,
}

impl fmt::Debug for PgBouncer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBouncer")
            .field("dir", &self.dir)
            .field("user", &self.user)
            .field("info", &self.info)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl PgBouncer {
    /// Runs `pgbouncer INI` as `user` in the foreground, its output appended to `dir/pgbouncer.log`, its
    /// soft limit on open files raised to the hard limit, and waits (at most 15 s) until its admin
    /// console answers `SHOW VERSION` (through `psql` from `bindir`, as the ini's first admin user with
    /// the password from its `auth_file`, see [`PgBouncerInfo::read`]).
    ///
    /// `dir` must exist and be writable by the caller; `ini` and its `auth_file` must be readable by
    /// `user` (PgBouncer refuses to run as root: as root, `user` is the `postgres` system user). Fails
    /// before starting anything when the ini's `max_client_conn` may need more file descriptors than the
    /// hard limit allows, and, with the end of the log, when PgBouncer exits or does not answer in time.
    pub fn start(
        dir: &Path,
        ini: &Path,
        bindir: &Path,
        user: ServerUser,
        options: &PgBouncerOptions,
    ) -> Result<Self> {
        let mut bouncer = Self::prepare(dir, ini, bindir, user, options)?;
        match bouncer.spawn_and_wait()? {
            None => Ok(bouncer),
            Some((status, log)) => Err(bouncer.exited(status, &log)),
        }
    }

    /// Renders `dir/pgbouncer.ini` and `dir/userlist.txt` with `PGCONN pgbouncer-ini --auth-file` for the
    /// cluster `info` describes, and [starts](PgBouncer::start) PgBouncer with them.
    ///
    /// `pgconn` is the path of the `pgconn` binary (`cargo xtask test` exports it as
    /// [`PGCONN_BIN_VAR`]). It runs with an empty environment plus `DATABASE_URL` = the cluster's
    /// [`database_url`](ConnInfo::database_url), `PGBOUNCER_HOST` = `127.0.0.1`, `PGBOUNCER_PORT` = a free
    /// port, and `env` (for example `("PGBOUNCER_POOL_MODE", "session")` or
    /// `("DB_STATEMENT_TIMEOUT", "500")`); those four variables are the testkit's and refused in `env`.
    /// `dir` is created if missing and given to `user`; the userlist stays mode 0600. When the port was
    /// taken meanwhile, another one is tried.
    pub fn render_and_start(
        dir: &Path,
        info: &ConnInfo,
        user: ServerUser,
        pgconn: &Path,
        env: &[(&str, &str)],
        options: &PgBouncerOptions,
    ) -> Result<Self> {
        if let Some((name, _)) = env.iter().find(|(name, _)| RESERVED_ENV.contains(name)) {
            bail!("{name} is chosen by the testkit and cannot be passed to `pgconn pgbouncer-ini`");
        }
        options.check_interrupted()?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create the PgBouncer directory {}", dir.display()))?;
        user.chown(dir)?;
        let dir = std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
        server::on_a_free_port(
            |line| options.report(line),
            |port| {
                let ini = render(pgconn, &dir, &info.database_url(), port, env, user)?;
                let mut bouncer = Self::prepare(&dir, &ini, &info.bindir, user, options)?;
                Ok(match bouncer.spawn_and_wait()? {
                    None => Launch::Running(bouncer),
                    Some((status, log)) => {
                        let error = bouncer.exited(status, &log);
                        Launch::Exited { log, error }
                    }
                })
            },
        )
    }

    /// [`PgBouncer::render_and_start`] in a new directory of `cluster`'s (`pgbouncer`, or `pgbouncer-2`,
    /// ... when a PgBouncer already has one), for `cluster`, as its server user: the usual "PostgreSQL
    /// with PgBouncer in front". The directory goes when the cluster's does; drop the PgBouncer first.
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use pgconn_testkit::{Cluster, ClusterOptions, PgBouncer, PgBouncerOptions};
    ///
    /// let cluster = Cluster::start_temp(&ClusterOptions::default())?;
    /// let pgconn = Path::new("target/debug/pgconn");
    /// let mut bouncer = PgBouncer::in_front_of(&cluster, pgconn, &[], &PgBouncerOptions::default())?;
    /// let url = bouncer.info().database_url();
    /// bouncer.restart()?; // same port: `url` still points at it
    /// drop(bouncer); // stopped; then the cluster
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn in_front_of(
        cluster: &Cluster,
        pgconn: &Path,
        env: &[(&str, &str)],
        options: &PgBouncerOptions,
    ) -> Result<Self> {
        let dir = new_dir(cluster.dir())?;
        Self::render_and_start(&dir, cluster.info(), cluster.user(), pgconn, env, options)
    }

    /// The directory of its log and pid file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where and as whom to connect, from the ini.
    pub fn info(&self) -> &PgBouncerInfo {
        &self.info
    }

    /// The ini file.
    pub fn ini(&self) -> &Path {
        &self.info.ini
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.info.port
    }

    /// Its log, `<dir>/pgbouncer.log`. Restarts append to it.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The pgbouncer process's pid; `None` while it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// Stops PgBouncer (SIGTERM: every client is disconnected at once, then SIGKILL) and keeps its
    /// files; [`PgBouncer::start_again`] starts it again. Does nothing when it is stopped.
    pub fn stop(&mut self) -> Result<()> {
        let Some(pid) = self.server.stop_with(PGBOUNCER_STOP)? else { return Ok(()) };
        remove_pid_file(&self.dir);
        self.options.report(&format!("PgBouncer stopped (pid {pid})"));
        Ok(())
    }

    /// Starts PgBouncer again with the same ini, so on the same port, and waits until it answers. Does
    /// nothing while it runs; one that exited by itself is started again.
    pub fn start_again(&mut self) -> Result<()> {
        if self.server.is_running()? {
            return Ok(());
        }
        match self.spawn_and_wait()? {
            None => Ok(()),
            Some((status, log)) => Err(self.exited(status, &log)),
        }
    }

    /// Stops PgBouncer and starts it again on the same port; every client connection is cut. The pid
    /// changes; [`PgBouncer::info`] does not.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Leaves PgBouncer running; returns its pid. Its pid file stays, so [`stop_pgbouncers_in`] (or
    /// [`stop_pid`](crate::stop_pid) with [`PGBOUNCER_STOP`] and [`is_pgbouncer_for`]) can stop it
    /// later.
    pub fn detach(mut self) -> Option<u32> {
        self.server.detach()
    }

    /// Reads the ini and checks the file-descriptor limit; starts nothing.
    fn prepare(
        dir: &Path,
        ini: &Path,
        bindir: &Path,
        user: ServerUser,
        options: &PgBouncerOptions,
    ) -> Result<Self> {
        let info = PgBouncerInfo::read(ini)?;
        let program = match &options.program {
            Some(program) => program.clone(),
            None => find_pgbouncer()?,
        };
        let (_, hard) = signal::nofile_limits().context("cannot read the limit on open files")?;
        if info.fd_need > hard {
            bail!(
                "{}: PgBouncer may need {} file descriptors (max_client_conn plus its server connections) \
                 but the hard limit on open files is {hard}; raise it (`ulimit -Hn`, LimitNOFILE, \
                 /etc/security/limits.conf) or lower max_client_conn (PGBOUNCER_MAX_CLIENT_CONN)",
                info.ini.display(),
                info.fd_need
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            bindir: bindir.to_path_buf(),
            program,
            user,
            info,
            options: options.clone(),
            server: GuardedServer::new("pgbouncer", dir.join(LOG_FILE), PGBOUNCER_STOP, READY_TIMEOUT),
        })
    }

    /// Starts `pgbouncer INI`, records it in the pid file and waits (at most 15 s) until its port accepts
    /// TCP connections and then `SHOW VERSION` on its admin console succeeds. `None` once it answers;
    /// `Some((status, new log lines))` when it exited first. On an error (timeout, interrupted) it is
    /// stopped again.
    fn spawn_and_wait(&mut self) -> Result<Option<(ExitStatus, String)>> {
        let mut cmd = self.user.command(&self.program, &self.dir);
        cmd.arg(&self.info.ini);
        if self.options.own_process_group {
            cmd.process_group(0);
        }
        signal::raise_nofile_limit(&mut cmd);
        let (options, info, bindir, dir) = (&self.options, &self.info, &self.bindir, &self.dir);
        let addrs: Vec<SocketAddr> = (info.host.trim_matches(['[', ']']), info.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve PgBouncer's listen_addr {}", info.host))?
            .collect();
        let mut listening = false;
        let probe = || {
            listening = listening
                || addrs
                    .iter()
                    .any(|addr| TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok());
            if !listening {
                let why = format!("{}:{} did not accept connections", info.host, info.port);
                return Ok(Probe::NotYet { why, again_in: CONNECT_POLL });
            }
            Ok(match show_version(bindir, info) {
                Ok(()) => Probe::Ready,
                Err(err) => Probe::NotYet { why: format!("{err:#}"), again_in: PSQL_POLL },
            })
        };
        let spawned = self.server.spawn(
            cmd,
            self.user,
            || options.check_interrupted(),
            |pid| write_pid_file(dir, pid, &info.ini),
            probe,
        );
        // The record goes with the process: kept while the pgbouncer it names still runs (one that could not
        // be stopped, or one that was running already), so that `stop_pgbouncers_in` can find it.
        if !matches!(spawned, Ok(Spawned::Ready { .. }))
            && read_pid_file(&self.dir).is_none_or(|(pid, ini)| !is_pgbouncer_for(pid, &ini))
        {
            remove_pid_file(&self.dir);
        }
        match spawned? {
            Spawned::Ready { pid, took } => {
                self.options.report(&format!(
                    "PgBouncer ready on {}:{} (pid {pid}, {} ms)",
                    self.info.host,
                    self.info.port,
                    took.as_millis()
                ));
                Ok(None)
            }
            Spawned::Exited { status, log } => Ok(Some((status, log))),
        }
    }

    /// The error for a PgBouncer that exited while starting.
    fn exited(&self, status: ExitStatus, log: &str) -> anyhow::Error {
        anyhow!(
            "pgbouncer exited while starting on {}:{} ({status}); the end of {}:\n{log}",
            self.info.host,
            self.info.port,
            self.log_file().display()
        )
    }
}

/// `SHOW VERSION` on the admin console of the PgBouncer `info` describes, through `psql` from `bindir`, the
/// password in `PGPASSWORD`.
fn show_version(bindir: &Path, info: &PgBouncerInfo) -> Result<()> {
    // An IPv6 address keeps its brackets in a URL.
    let url = format!("postgresql://{}@{}:{}/pgbouncer", percent_encode(&info.user), info.host, info.port);
    let password = (!info.password.is_empty()).then_some(info.password.as_str());
    let psql = Psql { bindir, url: &url, password, timeout: PSQL_TIMEOUT, env: &[] };
    psql.run("SHOW VERSION").map(drop).context("psql SHOW VERSION")
}

impl Drop for PgBouncer {
    // A destructor cannot return the error, and a PgBouncer left running must not go unnoticed.
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            let warning = format!("warning: {err:#}");
            match self.options.progress {
                Some(progress) => progress(&warning),
                None => eprintln!("pgconn-testkit: {warning}"),
            }
        }
    }
}

/// Whether `pid` is a live (not zombie) `pgbouncer` process whose command line names `ini`: the check
/// that makes signalling a pid read from a file safe.
pub fn is_pgbouncer_for(pid: u32, ini: &Path) -> bool {
    process::runs_with_arg(pid, &["pgbouncer"], ini)
}

/// Stops every PgBouncer recorded in a `pgbouncer*/pgbouncer.pid` of `dir` (a cluster directory) that
/// still runs with the recorded ini (checked with [`is_pgbouncer_for`]); returns their pids. For
/// PgBouncer processes whose owner died without stopping them (a detached one, a test binary killed by
/// SIGKILL): [`remove_abandoned_clusters`](crate::remove_abandoned_clusters) calls it before removing a
/// cluster.
pub fn stop_pgbouncers_in(dir: &Path) -> Result<Vec<u32>> {
    let mut stopped = Vec::new();
    for entry in crate::host::dir_entries(dir)? {
        if !entry.file_name().to_string_lossy().starts_with(DIR_NAME) {
            continue;
        }
        let Some((pid, ini)) = read_pid_file(&entry.path()) else { continue };
        if is_pgbouncer_for(pid, &ini) {
            crate::stop_pid(pid, PGBOUNCER_STOP, || is_pgbouncer_for(pid, &ini))?;
            stopped.push(pid);
        }
        remove_pid_file(&entry.path());
    }
    Ok(stopped)
}

/// Runs `pgconn pgbouncer-ini --auth-file DIR/userlist.txt` and writes its output to `DIR/pgbouncer.ini`;
/// both files are given to `user`. Returns the ini's path.
fn render(
    pgconn: &Path,
    dir: &Path,
    database_url: &str,
    port: u16,
    env: &[(&str, &str)],
    user: ServerUser,
) -> Result<PathBuf> {
    let auth_file = dir.join(AUTH_FILE);
    let ini = dir.join(INI_FILE);
    let out = Command::new(pgconn)
        .arg("pgbouncer-ini")
        .arg("--auth-file")
        .arg(&auth_file)
        // Only what is given here: a DB_* or PGBOUNCER_* variable of the caller's shell must not leak in.
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("PGBOUNCER_HOST", "127.0.0.1")
        .env("PGBOUNCER_PORT", port.to_string())
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{} pgbouncer-ini`", pgconn.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(2) => bail!("`pgconn pgbouncer-ini` refused the configuration (exit 2):\n{}", stderr.trim_end()),
        _ => bail!("`{} pgbouncer-ini` failed ({}):\n{}", pgconn.display(), out.status, stderr.trim_end()),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&ini)
        .with_context(|| format!("cannot write {}", ini.display()))?;
    file.write_all(&out.stdout).with_context(|| format!("cannot write {}", ini.display()))?;
    user.chown(&ini)?;
    user.chown(&auth_file)?;
    let mode = fs::metadata(&auth_file)
        .with_context(|| format!("`pgconn pgbouncer-ini` did not write {}", auth_file.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "`pgconn pgbouncer-ini` left {} readable by others (mode {:o})",
            auth_file.display(),
            mode & 0o777
        );
    }
    Ok(ini)
}

/// A fresh `pgbouncer`, `pgbouncer-2`, ... directory name in `parent`.
fn new_dir(parent: &Path) -> Result<PathBuf> {
    for n in 1..100 {
        let dir = if n == 1 { parent.join(DIR_NAME) } else { parent.join(format!("{DIR_NAME}-{n}")) };
        match DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("{} has no free pgbouncer-N directory name left", parent.display())
}

fn write_pid_file(dir: &Path, pid: u32, ini: &Path) -> Result<()> {
    let path = dir.join(PID_FILE);
    let mut text = String::new();
    let _ = writeln!(text, "{pid}\n{}", ini.display());
    File::create(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The pid and the ini recorded in `dir/pgbouncer.pid` (the pid, then the ini, a line each), if readable.
/// Check the pid with [`is_pgbouncer_for`] before using it.
pub fn read_pid_file(dir: &Path) -> Option<(u32, PathBuf)> {
    let text = fs::read_to_string(dir.join(PID_FILE)).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let ini = PathBuf::from(lines.next()?);
    Some((pid, ini))
}

/// Best effort: a stale pid file is harmless, since the pid is checked against `/proc` before use.
fn remove_pid_file(dir: &Path) {
    let _ = fs::remove_file(dir.join(PID_FILE));
}

/// The parts of a `pgbouncer.ini` the testkit reads.
#[derive(Debug, Default)]
struct Ini {
    /// `[pgbouncer]` settings, names lower-cased, in file order.
    settings: Vec<(String, String)>,
    /// `[databases]` names, in file order.
    databases: Vec<String>,
}

impl Ini {
    /// PgBouncer's ini syntax: `[section]`, `name = value`, comments starting with `;` or `#`.
    fn parse(text: &str) -> Self {
        let mut ini = Self::default();
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with([';', '#']) {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
                section = name.trim().to_ascii_lowercase();
                continue;
            }
            let Some((name, value)) = line.split_once('=') else { continue };
            let (name, value) = (name.trim(), value.trim());
            match section.as_str() {
                "pgbouncer" => ini.settings.push((name.to_ascii_lowercase(), value.to_owned())),
                "databases" if name != "*" => ini.databases.push(match name.strip_prefix('"') {
                    Some(quoted) => quoted.strip_suffix('"').unwrap_or(quoted).replace("\"\"", "\""),
                    None => name.to_owned(),
                }),
                _ => {}
            }
        }
        ini
    }

    /// The last value of `[pgbouncer]` setting `name` (the last one wins, as in PgBouncer).
    fn setting(&self, name: &str) -> Option<&str> {
        self.settings.iter().rev().find(|(n, _)| n == name).map(|(_, value)| value.as_str())
    }
}

/// The `(user, password)` lines of a PgBouncer userlist: `"user" "password"`, `""` for a `"` inside.
fn parse_userlist(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (user, rest) = quoted(line.trim_start())?;
            let (password, _) = quoted(rest.trim_start())?;
            Some((user, password))
        })
        .collect()
}

/// A `"..."` token at the start of `text` (`""` is a `"`), and the text after it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut rest = text.strip_prefix('"')?;
    let mut value = String::new();
    loop {
        let end = rest.find('"')?;
        value.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                value.push('"');
                rest = after;
            }
            None => return Some((value, rest)),
        }
    }
}

/// Whether a userlist password is a stored secret rather than the password itself.
fn is_secret(password: &str) -> bool {
    password.starts_with("SCRAM-SHA-256$")
        || (password.len() == 35
            && password.starts_with("md5")
            && password[3..].bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = "\
;; a comment
[databases]
pgconn_test = host=127.0.0.1 port=5999 dbname=pgconn_test connect_query='SET statement_timeout = 30000'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 46999
unix_socket_dir =
auth_type = scram-sha-256
auth_file = userlist.txt
admin_users = pgconn_app, other
max_client_conn = 1000
default_pool_size = 25
reserve_pool_size = 5
";

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pgconn-testkit-pgbouncer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("the temporary directory is writable");
        dir
    }

    #[test]
    fn the_ini_and_userlist_say_where_and_as_whom_to_connect() {
        let dir = temp_dir("ini");
        fs::write(dir.join(INI_FILE), INI).expect("writable");
        fs::write(dir.join(AUTH_FILE), "\"pgconn_app\" \"p@ss:w/rd?#%\"\"x\"\n\"other\" \"y\"\n")
            .expect("writable");
        let info = PgBouncerInfo::read(&dir.join(INI_FILE)).expect("the ini is complete");
        assert_eq!((info.host.as_str(), info.port), ("127.0.0.1", 46999));
        assert_eq!((info.user.as_str(), info.database.as_str()), ("pgconn_app", "pgconn_test"));
        assert_eq!(info.password, "p@ss:w/rd?#%\"x");
        assert_eq!(info.auth_file, dir.join(AUTH_FILE), "relative to the ini's directory");
        // What PgBouncer 1.18 logs as "max expected fd use" for these settings.
        assert_eq!(info.fd_need, 1062);
        assert_eq!(
            info.database_url(),
            "postgresql://pgconn_app:p%40ss%3Aw%2Frd%3F%23%25%22x@127.0.0.1:46999/pgconn_test"
        );
        assert_eq!(
            info.admin_url(),
            "postgresql://pgconn_app:p%40ss%3Aw%2Frd%3F%23%25%22x@127.0.0.1:46999/pgbouncer"
        );
        assert!(!format!("{info:?} {}", info.redacted_database_url()).contains("p@ss"));
        let names: Vec<_> = info.test_env().into_iter().map(|(name, _)| name).collect();
        assert_eq!(
            names,
            [
                "PGCONN_TEST_PGBOUNCER_URL",
                "PGCONN_TEST_PGBOUNCER_ADMIN_URL",
                "PGCONN_TEST_PGBOUNCER_INI",
                "PGCONN_TEST_PGBOUNCER_AUTH_FILE"
            ]
        );

        fs::write(dir.join(INI_FILE), INI.replace("listen_addr = 127.0.0.1", "")).expect("writable");
        let err = PgBouncerInfo::read(&dir.join(INI_FILE)).expect_err("no TCP");
        assert!(format!("{err:#}").contains("listen_addr"), "{err:#}");
        fs::write(dir.join(AUTH_FILE), "\"pgconn_app\" \"SCRAM-SHA-256$4096:abc\"\n").expect("writable");
        fs::write(dir.join(INI_FILE), INI).expect("writable");
        let err = PgBouncerInfo::read(&dir.join(INI_FILE)).expect_err("a secret cannot log in");
        assert!(format!("{err:#}").contains("SCRAM"), "{err:#}");
        fs::remove_dir_all(&dir).expect("writable");
    }

    #[test]
    fn userlist_quoting() {
        assert_eq!(
            parse_userlist("\"a\"\"b\" \"c d\"\n; comment\n\"only\"\n"),
            [("a\"b".to_owned(), "c d".to_owned())]
        );
        assert!(is_secret("md5d41d8cd98f00b204e9800998ecf8427e"));
        assert!(!is_secret("md5-not-a-hash"));
    }

    #[test]
    fn reserved_variables_are_refused() {
        let info = ConnInfo {
            port: 1,
            password: "x".into(),
            socket_dir: "/nonexistent".into(),
            bindir: "/nonexistent".into(),
        };
        let err = PgBouncer::render_and_start(
            Path::new("/nonexistent/pgbouncer"),
            &info,
            ServerUser::Current,
            Path::new("/nonexistent/pgconn"),
            &[("PGBOUNCER_PORT", "6432")],
            &PgBouncerOptions::default(),
        )
        .expect_err("the port is the testkit's");
        assert!(err.to_string().contains("PGBOUNCER_PORT"), "{err}");
    }

    #[test]
    fn too_many_clients_for_the_hard_limit_are_refused_before_starting() {
        let (_, hard) = signal::nofile_limits().expect("getrlimit works");
        if hard == libc::RLIM_INFINITY {
            return;
        }
        let dir = temp_dir("fds");
        let ini = INI.replace("max_client_conn = 1000", &format!("max_client_conn = {hard}"));
        fs::write(dir.join(INI_FILE), ini).expect("writable");
        fs::write(dir.join(AUTH_FILE), "\"pgconn_app\" \"x\"\n").expect("writable");
        let options =
            PgBouncerOptions { program: Some("/nonexistent/pgbouncer".into()), ..Default::default() };
        let err = PgBouncer::start(
            &dir,
            &dir.join(INI_FILE),
            Path::new("/nonexistent"),
            ServerUser::Current,
            &options,
        )
        .expect_err("more than the hard limit");
        assert!(format!("{err:#}").contains("hard limit on open files"), "{err:#}");
        fs::remove_dir_all(&dir).expect("writable");
    }

    #[test]
    fn pid_files_round_trip_and_a_dead_pid_is_not_stopped() {
        let parent = temp_dir("sweep");
        let dir = parent.join("pgbouncer-2");
        fs::create_dir_all(&dir).expect("writable");
        let ini = dir.join(INI_FILE);
        // No process has pid 0x7fff_ffff (beyond pid_max); this process is not a pgbouncer.
        write_pid_file(&dir, 2_147_483_647, &ini).expect("writable");
        assert_eq!(read_pid_file(&dir), Some((2_147_483_647, ini.clone())));
        assert!(!is_pgbouncer_for(2_147_483_647, &ini));
        assert!(!is_pgbouncer_for(std::process::id(), &ini));
        assert_eq!(stop_pgbouncers_in(&parent).expect("nothing to stop"), Vec::<u32>::new());
        assert!(!dir.join(PID_FILE).exists(), "the stale record is removed");
        fs::remove_dir_all(&parent).expect("writable");
        assert_eq!(stop_pgbouncers_in(&parent).expect("a missing directory is fine"), Vec::<u32>::new());
    }
}
