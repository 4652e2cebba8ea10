//! A throwaway PostgreSQL cluster: `initdb` into a fresh directory, a free port, fsync off, an
//! application role with a SCRAM password and a test database.
//!
//! PostgreSQL refuses to run as root, so when the caller runs as root everything that touches the data
//! directory runs as the `postgres` system user ([`ServerUser`]). The postmaster is a
//! guarded server process (`server.rs`, as PgBouncer's is): dropping a [`Cluster`] stops it and removes
//! the cluster directory, whatever made its owner end.
//!
//! Layout of a cluster directory (mode 0755): `data/` (0700), `socket/` (0755), `postgres.log`.

use std::fmt::{self, Write as _};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use crate::host::{ServerUser, find_bindir};
use crate::process::{Interrupted, StopStep};
use crate::psql::Psql;
use crate::server::{self, GuardedServer, Launch, Probe, Spawned, log_tail, percent_encode};
use crate::signal;
use crate::vars;

/// The role the tests and the application connect as, with a password (scram-sha-256).
pub const APP_USER: &str = "pgconn_app";
/// The superuser, trusted on the socket and on loopback TCP.
pub const ADMIN_USER: &str = "postgres";
/// The database the tests use, owned by [`APP_USER`].
pub const DATABASE: &str = "pgconn_test";

/// How a PostgreSQL postmaster is stopped normally: SIGINT (fast shutdown: roll back, disconnect,
/// checkpoint), then SIGQUIT (immediate shutdown), then SIGKILL.
pub const POSTGRES_STOP: &[StopStep] = &[
    StopStep { signal: libc::SIGINT, wait: Duration::from_secs(10) },
    StopStep { signal: libc::SIGQUIT, wait: Duration::from_secs(5) },
];

/// How a PostgreSQL postmaster is stopped at once: SIGQUIT (immediate shutdown: no checkpoint, the next
/// start runs crash recovery), then SIGKILL.
pub const POSTGRES_STOP_IMMEDIATE: &[StopStep] =
    &[StopStep { signal: libc::SIGQUIT, wait: Duration::from_secs(10) }];

/// The server log in a cluster directory; restarts append to it.
const LOG_FILE: &str = "postgres.log";
/// How long a starting server gets to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a starting server is asked whether it is ready.
const READY_POLL: Duration = Duration::from_millis(100);

/// A psql run as the superuser ([`Cluster::psql`]), at most.
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);
/// Settings the cluster decides itself: where it listens is what [`ConnInfo`] reports.
const RESERVED_SETTINGS: &[&str] = &["listen_addresses", "port", "unix_socket_directories"];

/// `pg_hba.conf`: the superuser is trusted locally, everyone else proves a SCRAM password. The superuser
/// may also stream the WAL from loopback (`replication` is not matched by `all`), for
/// [`Cluster::start_standby`]'s `pg_basebackup` and the standby's WAL receiver.
const PG_HBA: &str = "\
# written by pgconn-testkit
local all postgres trust
host  all postgres 127.0.0.1/32 trust
host  all postgres ::1/128 trust
host  replication postgres 127.0.0.1/32 trust
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
";

/// The settings appended to `postgresql.conf` before the caller's
/// [`extra_settings`](ClusterOptions::extra_settings), as `(name, value)` with the value already in
/// configuration-file syntax. This is the one place to add settings every cluster gets.
fn server_settings(port: u16, socket_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("listen_addresses", conf_string("127.0.0.1")),
        ("port", port.to_string()),
        ("unix_socket_directories", conf_string(&socket_dir.to_string_lossy())),
        // A throwaway cluster: durability buys nothing and costs seconds.
        ("fsync", "off".into()),
        ("synchronous_commit", "off".into()),
        ("full_page_writes", "off".into()),
        ("max_connections", "100".into()),
        ("password_encryption", conf_string("scram-sha-256")),
        ("log_min_messages", "warning".into()),
        ("shared_buffers", conf_string("32MB")),
    ]
}

/// A string literal in `postgresql.conf` syntax.
fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// How to start a [`Cluster`]. `ClusterOptions::default()` is the cluster `cargo xtask test` starts, quiet.
///
/// ```
/// use pgconn_testkit::ClusterOptions;
///
/// let options = ClusterOptions::default().setting("max_connections", "20");
/// assert_eq!(options.extra_settings, [("max_connections".to_owned(), "20".to_owned())]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Server settings appended to `postgresql.conf` after the testkit's own, so they win: for example
    /// `("max_connections", "20")`. Values are plain text; the testkit quotes them, so paths with spaces
    /// are fine. `listen_addresses`, `port` and `unix_socket_directories` are the testkit's and refused.
    pub extra_settings: Vec<(String, String)>,
    /// Where progress lines go ("cluster in ...", "ready on ...", "stopped"), and the warning when
    /// dropping fails; `None` (the default): nowhere, except that warning, which goes to stderr. xtask
    /// passes a function that prints them with its prefix.
    pub progress: Option<fn(&str)>,
    /// Asked between the steps of starting and while waiting for the server; when it returns `true`,
    /// starting stops what it started and fails with [`Interrupted`]. xtask passes its Ctrl-C/SIGTERM
    /// flag. `None` (the default): never interrupted.
    pub interrupted: Option<fn() -> bool>,
    /// Start the postmaster in a process group of its own, so that a Ctrl-C in the terminal or a signal
    /// to the caller's group does not reach it. Right for a caller that catches those signals and stops
    /// the cluster itself (xtask). `false` (the default) is right for a test binary, which has no
    /// handler: when the terminal's Ctrl-C or `cargo xtask test`'s SIGTERM ends it, the server receives
    /// the signal too and shuts down instead of running on.
    pub own_process_group: bool,
    /// Turn on `ssl` with certificates made for this cluster ([`crate::tls`]): a new CA
    /// ([`Cluster::ca_file`]) and a server certificate it signs for `localhost` only (not 127.0.0.1).
    /// `false` (the default): no TLS.
    pub tls: bool,
}

impl ClusterOptions {
    /// Adds one of [`extra_settings`](Self::extra_settings).
    #[must_use]
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_settings.push((name.into(), value.into()));
        self
    }

    /// Sets [`tls`](Self::tls).
    #[must_use]
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Refuses settings that would break `postgresql.conf` or the cluster's own listening settings.
    pub(crate) fn check(&self) -> Result<()> {
        for (name, value) in &self.extra_settings {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
                bail!("the server setting name {name:?} is not a PostgreSQL parameter name");
            }
            if RESERVED_SETTINGS.iter().any(|reserved| name.eq_ignore_ascii_case(reserved)) {
                bail!("the server setting {name} is chosen by the testkit and cannot be overridden");
            }
            if value.contains(['\n', '\r', '\0']) {
                bail!("the value of the server setting {name} contains a line break or NUL");
            }
        }
        Ok(())
    }
}

/// How to stop the server in [`Cluster::stop_server_with`] and [`Cluster::restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// SIGINT: roll back open transactions, disconnect every client, checkpoint ([`POSTGRES_STOP`]).
    Fast,
    /// SIGQUIT: end every process at once, no checkpoint; the next start runs crash recovery
    /// ([`POSTGRES_STOP_IMMEDIATE`]).
    Immediate,
}

impl ShutdownMode {
    /// The stop steps of this mode (SIGKILL follows them).
    pub fn steps(self) -> &'static [StopStep] {
        match self {
            Self::Fast => POSTGRES_STOP,
            Self::Immediate => POSTGRES_STOP_IMMEDIATE,
        }
    }
}

impl fmt::Display for ShutdownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        })
    }
}

/// [`Cluster::start`] could not use the directory because the server user cannot reach it; the caller may
/// pick another place.
#[derive(Debug)]
pub struct Inaccessible {
    /// The directory.
    pub dir: PathBuf,
    /// Who cannot use it.
    pub user: ServerUser,
}

impl fmt::Display for Inaccessible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cannot enter or write {} (is a parent directory mode 0700?)",
            self.user,
            self.dir.display()
        )
    }
}

impl std::error::Error for Inaccessible {}

/// How to connect to a running cluster: what the tests and the application receive.
///
/// Its `Debug` shows `***` for the password.
#[derive(Clone)]
pub struct ConnInfo {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// [`APP_USER`]'s password.
    pub password: String,
    /// The directory of the server's unix socket.
    pub socket_dir: PathBuf,
    /// PostgreSQL's bin directory.
    pub bindir: PathBuf,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("port", &self.port)
            .field("password", &"***")
            .field("socket_dir", &self.socket_dir)
            .field("bindir", &self.bindir)
            .finish()
    }
}

impl ConnInfo {
    /// `postgresql://pgconn_app:<password>@127.0.0.1:<port>/pgconn_test`, password percent-encoded.
    pub fn database_url(&self) -> String {
        format!(
            "postgresql://{APP_USER}:{}@127.0.0.1:{}/{DATABASE}",
            percent_encode(&self.password),
            self.port
        )
    }

    /// [`Self::database_url`] with the password replaced by `***`, for messages.
    pub fn redacted_database_url(&self) -> String {
        format!("postgresql://{APP_USER}:***@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// `postgresql://postgres@127.0.0.1:<port>/pgconn_test`: the superuser, trusted.
    pub fn admin_url(&self) -> String {
        format!("postgresql://{ADMIN_USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The environment `cargo xtask test` gives the tests: `PGCONN_TEST_DATABASE_URL`,
    /// `PGCONN_TEST_ADMIN_URL`, `PGCONN_TEST_SOCKET_DIR`, `PGCONN_TEST_PG_BINDIR`.
    pub fn test_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (vars::DATABASE_URL, self.database_url()),
            (vars::ADMIN_URL, self.admin_url()),
            (vars::SOCKET_DIR, self.socket_dir.to_string_lossy().into_owned()),
            (vars::PG_BINDIR, self.bindir.to_string_lossy().into_owned()),
        ]
    }
}

/// A PostgreSQL cluster in its own directory, with [`APP_USER`] and [`DATABASE`] created. Dropping it
/// stops the server and removes the directory, unless it was [detached](Cluster::detach).
///
/// The server can be stopped and started again ([`Cluster::restart`]); it always comes back on the same
/// port, so URLs taken from [`Cluster::info`] stay valid.
pub struct Cluster {
    dir: PathBuf,
    user: ServerUser,
    info: ConnInfo,
    options: ClusterOptions,
    server: GuardedServer,
    /// Set once the directory is gone, or handed over by `detach`.
    done: bool,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir)
            .field("user", &self.user)
            .field("info", &self.info)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Creates `dir` (which must not exist), runs `initdb` from `bindir` as `user`, starts the server on a
    /// free port on 127.0.0.1 and creates [`APP_USER`] and [`DATABASE`].
    ///
    /// On any error, and when interrupted ([`Interrupted`]), what was started is stopped and `dir`
    /// removed. When `user` cannot use `dir`, the error is [`Inaccessible`].
    pub fn start(dir: &Path, bindir: &Path, user: ServerUser, options: &ClusterOptions) -> Result<Self> {
        let info = ConnInfo {
            port: 0,
            password: password()?,
            socket_dir: dir.join("socket"),
            bindir: bindir.to_path_buf(),
        };
        let mut cluster = Self::create_dir(dir, user, info, options)?;
        cluster.init()?;
        cluster.launch()?;
        cluster.create_role_and_database()?;
        Ok(cluster)
    }

    /// Checks `options`, creates `dir` (which must not exist, mode 0755) and returns a cluster with no
    /// server yet: from here on, dropping it removes `dir`. `info.port` is chosen by [`Cluster::launch`].
    pub(crate) fn create_dir(
        dir: &Path,
        user: ServerUser,
        info: ConnInfo,
        options: &ClusterOptions,
    ) -> Result<Self> {
        options.check()?;
        if dir.exists() {
            bail!("{} already exists; remove it or choose another directory", dir.display());
        }
        DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create the cluster directory {}", dir.display()))?;
        let server = GuardedServer::new("postgres", dir.join(LOG_FILE), POSTGRES_STOP, READY_TIMEOUT);
        Ok(Self { dir: dir.to_path_buf(), user, info, options: options.clone(), server, done: false })
    }

    /// [`Cluster::start`] in a fresh directory `pgconn-test-<pid>-<n>-<nanos>` under
    /// [`std::env::temp_dir`], with the binaries of [`find_bindir`] and the user of
    /// [`ServerUser::detect`]. When the server user cannot reach the temporary directory (running as root
    /// with `TMPDIR` under a mode-0700 home), `/tmp` is used instead.
    pub fn start_temp(options: &ClusterOptions) -> Result<Self> {
        let bindir = find_bindir()?;
        let user = ServerUser::detect()?;
        let temp = std::env::temp_dir();
        match Self::start(&temp_cluster_dir(&temp), &bindir, user, options) {
            Err(err) if err.is::<Inaccessible>() && temp != Path::new("/tmp") => {
                options.report(&format!("{err}; using /tmp instead"));
                Self::start(&temp_cluster_dir(Path::new("/tmp")), &bindir, user, options)
            }
            result => result,
        }
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory, `<dir>/data`: the postmaster's `-D` argument.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log, `<dir>/postgres.log`. Restarts append to it.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The CA certificate (PEM) that signed the server's certificate, `<dir>/ca.crt`, when the cluster was
    /// started with [`ClusterOptions::tls`]; for `sslrootcert`.
    pub fn ca_file(&self) -> Option<PathBuf> {
        let path = self.dir.join(crate::tls::CA_FILE);
        path.is_file().then_some(path)
    }

    /// The client certificate and key (PEM, the key mode 0600) of [`crate::tls::CERT_USER`], signed by the
    /// cluster's CA, when the cluster was started with [`ClusterOptions::tls`].
    pub fn client_cert_files(&self) -> Option<(PathBuf, PathBuf)> {
        let cert = self.dir.join(crate::tls::CLIENT_CERT_FILE);
        let key = self.dir.join(crate::tls::CLIENT_KEY_FILE);
        (cert.is_file() && key.is_file()).then_some((cert, key))
    }

    /// Replaces the server's certificate and key (`server.crt`, `server.key` in the data directory); they
    /// take effect at the next start (or [`restart`](Self::restart)).
    pub fn replace_server_cert(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        let data = self.data_dir();
        crate::tls::write_private(&data.join("server.crt"), cert_pem, 0o644, self.user)?;
        crate::tls::write_private(&data.join("server.key"), key_pem, 0o600, self.user)
    }

    /// How to connect.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The user the server runs as.
    pub fn user(&self) -> ServerUser {
        self.user
    }

    /// The postmaster's pid; `None` while the server is stopped ([`Cluster::stop_server`]).
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// Stops the server with a fast shutdown and keeps the data directory; [`Cluster::start_server`]
    /// starts it again. Does nothing when it is stopped.
    pub fn stop_server(&mut self) -> Result<()> {
        self.stop_server_with(ShutdownMode::Fast)
    }

    /// Stops the server in `mode` and keeps the data directory. Does nothing when it is stopped.
    ///
    /// Processes of the server stopped with `SIGSTOP` are sent `SIGCONT` first, so that they can take
    /// part in the shutdown.
    pub fn stop_server_with(&mut self, mode: ShutdownMode) -> Result<()> {
        let Some(pid) = self.server.pid() else { return Ok(()) };
        resume_children(pid);
        self.server.stop_with(mode.steps())?;
        self.report(&format!("PostgreSQL stopped ({mode} shutdown), data kept in {}", self.dir.display()));
        Ok(())
    }

    /// Starts the server again on the same port and waits until it accepts connections. Does nothing
    /// when it runs; a server that exited by itself is started again.
    ///
    /// Fails, with the end of the server log, when the port has been taken meanwhile or the server does
    /// not come up within 30 s.
    pub fn start_server(&mut self) -> Result<()> {
        if self.server.is_running()? {
            return Ok(());
        }
        let port = self.info.port;
        match self.spawn_and_wait()? {
            None => Ok(()),
            Some((status, log)) => bail!(
                "postgres exited while starting again on port {port} ({status}); the end of {}:\n{log}",
                self.log_file().display()
            ),
        }
    }

    /// Stops the server in `mode` and starts it again on the same port; returns once it accepts
    /// connections. The postmaster's pid changes; [`Cluster::info`] does not.
    pub fn restart(&mut self, mode: ShutdownMode) -> Result<()> {
        self.stop_server_with(mode)?;
        self.start_server()
    }

    /// Stops the server and removes the cluster directory.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Leaves the server running and the directory in place; returns the postmaster's pid. Stopping it is
    /// now the caller's business (for example with [`stop_pid`](crate::stop_pid), [`POSTGRES_STOP`] and
    /// [`is_postgres_for`]).
    pub fn detach(mut self) -> Option<u32> {
        self.done = true;
        self.server.detach()
    }

    /// Passes a progress line to [`ClusterOptions::progress`].
    pub(crate) fn report(&self, line: &str) {
        self.options.report(line);
    }

    /// Fails with [`Interrupted`] when [`ClusterOptions::interrupted`] says so.
    pub(crate) fn check_interrupted(&self) -> Result<()> {
        self.options.check_interrupted()
    }

    /// `data/`, `socket/`, `postgres.log`, owned by the server user ([`Cluster::prepare_dir`]); then
    /// `initdb`.
    fn init(&mut self) -> Result<()> {
        self.prepare_dir()?;
        self.report(&format!(
            "PostgreSQL cluster in {} (bin: {})",
            self.dir.display(),
            self.info.bindir.display()
        ));
        self.check_interrupted()?;
        let data = self.data_dir();
        let log = self.log_file();
        let (stdout, stderr) = self.log_handles()?;
        let status = self
            .user
            .command(&self.info.bindir.join("initdb"), &self.dir)
            .arg("-D")
            .arg(&data)
            .args(["-U", ADMIN_USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .context("cannot run initdb")?;
        self.check_interrupted()?;
        if !status.success() {
            bail!("initdb failed ({status}); the end of {}:\n{}", log.display(), self.log_tail(0));
        }
        let hba = data.join("pg_hba.conf");
        let hba_lines =
            if self.options.tls { format!("{}{PG_HBA}", crate::tls::HBA_LINES) } else { PG_HBA.to_owned() };
        fs::write(&hba, hba_lines).with_context(|| format!("cannot write {}", hba.display()))?;
        if self.options.tls {
            crate::tls::install(&self.dir, &data, self.user)?;
        }
        Ok(())
    }

    /// Gives the cluster directory to the server user and creates `data/` (0700, empty), `socket/` (0755)
    /// and `postgres.log` in it, owned by that user. [`Inaccessible`] when the user cannot use the
    /// directory.
    pub(crate) fn prepare_dir(&mut self) -> Result<()> {
        self.user.chown(&self.dir)?;
        if !self.user.can_use(&self.dir)? {
            return Err(Inaccessible { dir: self.dir.clone(), user: self.user }.into());
        }
        let data = self.data_dir();
        for (path, mode) in [(&data, 0o700), (&self.info.socket_dir, 0o755)] {
            DirBuilder::new()
                .mode(mode)
                .create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            // The umask may have taken bits away.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", path.display()))?;
            self.user.chown(path)?;
        }
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot set the mode of {}", self.dir.display()))?;
        let log = self.log_file();
        File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        self.user.chown(&log)?;
        Ok(())
    }

    /// Writes the settings with a free port, starts the postmaster and waits until it accepts
    /// connections; tries another port when the chosen one was taken meanwhile.
    pub(crate) fn launch(&mut self) -> Result<()> {
        let conf_path = self.data_dir().join("postgresql.conf");
        let initdb_conf =
            fs::read_to_string(&conf_path).with_context(|| format!("cannot read {}", conf_path.display()))?;
        let (progress, log_file) = (self.options.progress, self.log_file());
        let report = |line: &str| {
            if let Some(progress) = progress {
                progress(line);
            }
        };
        server::on_a_free_port(report, |port| {
            self.info.port = port;
            let mut conf = initdb_conf.clone();
            conf.push_str("\n# added by pgconn-testkit\n");
            for (name, value) in server_settings(port, &self.info.socket_dir) {
                let _ = writeln!(conf, "{name} = {value}");
            }
            if !self.options.extra_settings.is_empty() {
                conf.push_str("# the caller's extra_settings\n");
            }
            for (name, value) in &self.options.extra_settings {
                let _ = writeln!(conf, "{name} = {}", conf_string(value));
            }
            // Overwriting keeps the file's owner and mode (the server user's, 0600).
            fs::write(&conf_path, conf).with_context(|| format!("cannot write {}", conf_path.display()))?;
            Ok(match self.spawn_and_wait()? {
                None => Launch::Running(()),
                Some((status, log)) => {
                    let error = anyhow::anyhow!(
                        "postgres exited while starting ({status}); the end of {}:\n{log}",
                        log_file.display()
                    );
                    Launch::Exited { log, error }
                }
            })
        })
    }

    /// Starts the postmaster with the configuration as it is and waits until `pg_isready` says it accepts
    /// connections (polled every 100 ms, for at most 30 s). `None` once it does; `Some((status, new log
    /// lines))` when it exited first. On an error (timeout, interrupted) the postmaster is stopped again.
    fn spawn_and_wait(&mut self) -> Result<Option<(ExitStatus, String)>> {
        let mut cmd = self.user.command(&self.info.bindir.join("postgres"), &self.dir);
        cmd.arg("-D").arg(self.data_dir());
        if self.options.own_process_group {
            cmd.process_group(0);
        }
        let (options, info) = (&self.options, &self.info);
        let spawned = self.server.spawn(
            cmd,
            self.user,
            || options.check_interrupted(),
            |_| Ok(()),
            || pg_isready(info),
        )?;
        match spawned {
            Spawned::Ready { pid, .. } => {
                self.report(&format!("PostgreSQL ready on 127.0.0.1:{} (pid {pid})", self.info.port));
                Ok(None)
            }
            Spawned::Exited { status, log } => Ok(Some((status, log))),
        }
    }

    /// `CREATE ROLE pgconn_app ...` and `CREATE DATABASE pgconn_test ...` through psql as the superuser.
    fn create_role_and_database(&self) -> Result<()> {
        self.check_interrupted()?;
        let sql = format!(
            "CREATE ROLE {APP_USER} LOGIN PASSWORD '{}';\nCREATE DATABASE {DATABASE} OWNER {APP_USER};\n",
            self.info.password
        );
        self.psql_in("postgres", &sql)
            .map(drop)
            .with_context(|| format!("creating role {APP_USER} and database {DATABASE} failed"))
    }

    /// Runs `sql` through psql as the superuser in the test database (stopping at the first error, at most
    /// 60 s); returns what it printed, unaligned, without headers, trimmed.
    ///
    /// # Errors
    /// When psql cannot run or a statement fails: with psql's message.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.psql_in(DATABASE, sql)
    }

    fn psql_in(&self, database: &str, sql: &str) -> Result<String> {
        let url = format!("postgresql://{ADMIN_USER}@127.0.0.1:{}/{database}", self.info.port);
        let psql =
            Psql { bindir: &self.info.bindir, url: &url, password: None, timeout: PSQL_TIMEOUT, env: &[] };
        psql.run(sql)
    }

    /// Two append handles on `postgres.log`, for a child's stdout and stderr.
    pub(crate) fn log_handles(&self) -> Result<(File, File)> {
        server::append_to_log(&self.log_file(), self.user).map(|(stdout, stderr, _)| (stdout, stderr))
    }

    /// The last lines of `postgres.log` from byte `from` on, for error messages.
    pub(crate) fn log_tail(&self, from: u64) -> String {
        log_tail(&self.log_file(), from)
    }

    /// Stops the server (if any) and removes the directory; does nothing the second time.
    fn shutdown(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let had_server = self.server.pid().is_some();
        if let Some(pid) = self.server.pid() {
            resume_children(pid);
        }
        let stopped = self.server.stop_with(POSTGRES_STOP);
        let removed = match fs::remove_dir_all(&self.dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("cannot remove {}", self.dir.display()))
            }
            _ => Ok(()),
        };
        stopped?;
        removed?;
        if had_server {
            self.report(&format!("PostgreSQL stopped, {} removed", self.dir.display()));
        } else {
            self.report(&format!("{} removed", self.dir.display()));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    // A destructor cannot return the error, and a server or directory left behind must not go unnoticed:
    // without a progress function, the warning goes to stderr.
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            let warning = format!("warning: {err:#}");
            match self.options.progress {
                Some(progress) => progress(&warning),
                None => eprintln!("pgconn-testkit: {warning}"),
            }
        }
    }
}

impl ClusterOptions {
    fn report(&self, line: &str) {
        if let Some(progress) = self.progress {
            progress(line);
        }
    }

    /// Fails with [`Interrupted`] when [`ClusterOptions::interrupted`] says so.
    fn check_interrupted(&self) -> Result<()> {
        if self.interrupted.is_some_and(|interrupted| interrupted()) {
            Err(Interrupted.into())
        } else {
            Ok(())
        }
    }
}

/// One readiness probe of the postmaster: `pg_isready` over TCP as the superuser.
fn pg_isready(info: &ConnInfo) -> Result<Probe> {
    let port = info.port.to_string();
    let status = Command::new(info.bindir.join("pg_isready"))
        .args(["-h", "127.0.0.1", "-p", &port, "-U", ADMIN_USER, "-d", "postgres"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run pg_isready")?;
    // pg_isready: 0 accepting, 1 rejecting (starting up), 2 no response, 3 no attempt.
    let why = match status.code() {
        Some(0) => return Ok(Probe::Ready),
        Some(1) => "rejecting connections",
        Some(2) => "no response",
        _ => "pg_isready made no attempt",
    };
    Ok(Probe::NotYet { why: format!("127.0.0.1:{port}: {why}"), again_in: READY_POLL })
}

/// The prefix of the directories [`Cluster::start_temp`] creates: `pgconn-test-<pid>-<n>-<nanos>`.
pub(crate) const TEMP_PREFIX: &str = "pgconn-test-";

/// A fresh directory name under `parent` for [`Cluster::start_temp`]: unique within this process (a
/// counter) and across processes (the pid), with the time against pid reuse.
pub(crate) fn temp_cluster_dir(parent: &Path) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    parent.join(format!("{TEMP_PREFIX}{}-{n}-{nanos}", std::process::id()))
}

/// Sends `SIGCONT` to every child of `pid` (a postmaster's backends and auxiliary processes), so that one
/// a test stopped with `SIGSTOP` does not hold up the shutdown. Best effort: errors are ignored.
fn resume_children(pid: u32) {
    let Ok(entries) = fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        if parent_pid(&stat) == Some(pid) {
            let _ = signal::kill(child, libc::SIGCONT);
        }
    }
}

/// The parent pid in the text of `/proc/PID/stat`: `pid (comm) state ppid ...`, where `comm` may contain
/// anything, so the fields are counted from the last `)`.
fn parent_pid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A password full of URL-special characters, so that percent-encoding is exercised for real:
/// `p@ss:w/rd?#%` and 16 random hex digits. It never contains a single quote (it is put in SQL as is).
fn password() -> Result<String> {
    let mut random = [0_u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut random))
        .context("cannot read /dev/urandom")?;
    let mut password = String::from("p@ss:w/rd?#%");
    for byte in random {
        let _ = write!(password, "{byte:02x}");
    }
    Ok(password)
}

/// Whether `pid` is a live (not zombie) `postgres` process whose command line names `data_dir`: the only
/// check that makes signalling a pid read from a file safe.
pub fn is_postgres_for(pid: u32, data_dir: &Path) -> bool {
    crate::process::runs_with_arg(pid, &["postgres", "postmaster"], data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::remove_abandoned_clusters;

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(percent_encode("p@ss:w/rd?#%0aF-._~"), "p%40ss%3Aw%2Frd%3F%23%250aF-._~");
        assert_eq!(percent_encode("a b'é"), "a%20b%27%C3%A9");
    }

    #[test]
    fn password_needs_encoding_and_has_no_quote() {
        let password = password().expect("/dev/urandom is readable");
        assert!(password.starts_with("p@ss:w/rd?#%"));
        assert_eq!(password.len(), 12 + 16);
        assert!(!password.contains('\''));
        assert_ne!(percent_encode(&password), password);
    }

    #[test]
    fn urls_encode_the_password_and_debug_hides_it() {
        let info = ConnInfo {
            port: 5999,
            password: "p@ss:w/rd?#%00".into(),
            socket_dir: "/tmp/s".into(),
            bindir: "/usr/bin".into(),
        };
        assert_eq!(
            info.database_url(),
            "postgresql://pgconn_app:p%40ss%3Aw%2Frd%3F%23%2500@127.0.0.1:5999/pgconn_test"
        );
        assert_eq!(info.admin_url(), "postgresql://postgres@127.0.0.1:5999/pgconn_test");
        assert!(!format!("{info:?} {}", info.redacted_database_url()).contains("p@ss"));
        let names: Vec<_> = info.test_env().into_iter().map(|(name, _)| name).collect();
        assert_eq!(
            names,
            [
                "PGCONN_TEST_DATABASE_URL",
                "PGCONN_TEST_ADMIN_URL",
                "PGCONN_TEST_SOCKET_DIR",
                "PGCONN_TEST_PG_BINDIR"
            ]
        );
    }

    #[test]
    fn extra_settings_are_checked() {
        let ok =
            ClusterOptions::default().setting("max_connections", "20").setting("ssl_cert_file", "a b/c'd");
        ok.check().expect("plain settings are fine");
        for (name, value) in
            [("port", "5"), ("Listen_Addresses", "*"), ("bad name", "1"), ("", "1"), ("work_mem", "1\n2")]
        {
            let options = ClusterOptions::default().setting(name, value);
            assert!(options.check().is_err(), "{name:?} = {value:?} must be refused");
        }
    }

    #[test]
    fn conf_strings_double_single_quotes() {
        assert_eq!(conf_string("a b/c'd"), "'a b/c''d'");
    }

    #[test]
    fn parent_pid_counts_from_the_last_parenthesis() {
        assert_eq!(parent_pid("42 (post) gres: x) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn temp_dirs_are_unique() {
        let parent = Path::new("/tmp");
        assert_ne!(temp_cluster_dir(parent), temp_cluster_dir(parent));
        assert!(
            temp_cluster_dir(parent)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pgconn-test-"))
        );
    }

    #[test]
    fn abandoned_clusters_are_removed_and_live_ones_kept() {
        let parent = std::env::temp_dir().join(format!("pgconn-testkit-sweep-{}", std::process::id()));
        fs::create_dir_all(&parent).expect("the temporary directory is writable");
        // No process has pid 0x7fff_ffff (beyond pid_max); this process is running.
        let abandoned = parent.join(format!("{TEMP_PREFIX}2147483647-0-1"));
        let live = temp_cluster_dir(&parent);
        let unrelated = parent.join("pgconn-test-x");
        for dir in [&abandoned, &live, &unrelated] {
            fs::create_dir_all(dir.join("data")).expect("the temporary directory is writable");
        }
        let removed = remove_abandoned_clusters(&parent).expect("the sweep succeeds");
        assert_eq!(removed, std::slice::from_ref(&abandoned));
        assert!(!abandoned.exists() && live.exists() && unrelated.exists());
        fs::remove_dir_all(&parent).expect("the temporary directory is writable");
        assert_eq!(
            remove_abandoned_clusters(&parent).expect("a missing parent is fine"),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn our_own_process_is_not_a_postgres() {
        assert!(!is_postgres_for(std::process::id(), Path::new("/")));
        assert!(!is_postgres_for(0, Path::new("/")));
    }
}
