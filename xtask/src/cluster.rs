//! A throwaway PostgreSQL cluster: `initdb` into a fresh directory, a free port, fsync off, an
//! application role with a SCRAM password and a test database.
//!
//! PostgreSQL refuses to run as root, so when xtask runs as root everything that touches the data
//! directory runs as the `postgres` system user ([`ServerUser`]). The server itself is a
//! [`GuardedChild`]: dropping a [`Cluster`] stops it and removes the cluster directory, whatever made the
//! task end.
//!
//! Layout of a cluster directory (mode 0755): `data/` (0700), `socket/` (0755), `postgres.log`.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::process::{self, GuardedChild, StopStep};
use crate::sys;

/// The role the tests and the application connect as, with a password (scram-sha-256).
pub(crate) const APP_USER: &str = "pgconn_app";
/// The superuser, trusted on the socket and on loopback TCP.
pub(crate) const ADMIN_USER: &str = "postgres";
/// The database the tests use, owned by [`APP_USER`].
pub(crate) const DATABASE: &str = "pgconn_test";

/// How a PostgreSQL postmaster is stopped: SIGINT (fast shutdown: roll back, disconnect, checkpoint),
/// then SIGQUIT (immediate shutdown), then SIGKILL.
pub(crate) const POSTGRES_STOP: &[StopStep] = &[
    StopStep { signal: libc::SIGINT, wait: Duration::from_secs(10) },
    StopStep { signal: libc::SIGQUIT, wait: Duration::from_secs(5) },
];

/// How long a starting server gets to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to start the server when the chosen port was taken between choosing and binding it.
const START_ATTEMPTS: u32 = 4;
/// Lines of `postgres.log` shown when something fails.
const LOG_TAIL_LINES: usize = 30;

/// `pg_hba.conf`: the superuser is trusted locally, everyone else proves a SCRAM password.
const PG_HBA: &str = "\
# written by cargo xtask
local all postgres trust
host  all postgres 127.0.0.1/32 trust
host  all postgres ::1/128 trust
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
";

/// The settings appended to `postgresql.conf`, as `(name, value)` with the value already in
/// configuration-file syntax. This is the one place to add server settings (for example `ssl`).
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

/// Finds the directory holding the PostgreSQL server binaries (`initdb`, `postgres`, `pg_ctl`, ...).
///
/// In order: `$PG_BINDIR`; `pg_config --bindir` if it contains `initdb`; the highest-numbered
/// `/usr/lib/postgresql/*/bin` that contains `initdb` (Debian's layout).
pub(crate) fn find_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!(
                "PG_BINDIR is {} but there is no initdb in it; point it at PostgreSQL's bin directory",
                dir.display()
            );
        }
        return Ok(dir);
    }
    let pg_config = Command::new("pg_config").arg("--bindir").stderr(Stdio::null()).output();
    if let Some(out) = pg_config.ok().filter(|out| out.status.success()) {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(parse_version) else { continue };
            let bin = entry.path().join("bin");
            if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "PostgreSQL server binaries were not found (no initdb from `pg_config --bindir` or in \
             /usr/lib/postgresql/*/bin); install them (`apt-get install postgresql`) or set PG_BINDIR"
        )
    })
}

/// `"15"` -> `[15]`, `"9.6"` -> `[9, 6]`; `None` for anything else.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// The user the server processes run as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServerUser {
    /// The user running xtask (not root).
    Current,
    /// Another user, by ids: the `postgres` system user when xtask runs as root.
    Other {
        /// User id.
        uid: u32,
        /// Primary group id.
        gid: u32,
    },
}

impl ServerUser {
    /// The current user, or the `postgres` system user when running as root (PostgreSQL refuses root).
    pub(crate) fn detect() -> Result<Self> {
        if !sys::is_root() {
            return Ok(Self::Current);
        }
        let id = |flag: &str| -> Result<u32> {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .context("cannot run `id` to look up the postgres user")?;
            if !out.status.success() {
                bail!(
                    "PostgreSQL refuses to run as root and there is no `postgres` system user to run it as; \
                     install the postgresql package (it creates the user), `useradd --system postgres`, \
                     or run xtask as a normal user"
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim()
                .parse()
                .with_context(|| format!("`id {flag} postgres` printed {text:?}, not a number"))
        };
        Ok(Self::Other { uid: id("-u")?, gid: id("-g")? })
    }

    /// A command for `program` that runs as this user, with `HOME` and the working directory set to
    /// `home`.
    pub(crate) fn command(self, program: &Path, home: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("HOME", home).current_dir(home);
        if let Self::Other { uid, gid } = self {
            // std drops the supplementary groups too when it switches user as root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Gives `path` to this user (does nothing for the current user).
    pub(crate) fn chown(self, path: &Path) -> Result<()> {
        if let Self::Other { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {} to uid {uid}", path.display()))?;
        }
        Ok(())
    }

    /// Whether this user can enter and write to `dir`: `test -x DIR -a -w DIR` run as the user. A
    /// directory under a mode-0700 home of root, for instance, is out of the `postgres` user's reach.
    pub(crate) fn can_use(self, dir: &Path) -> Result<bool> {
        if let Self::Current = self {
            return Ok(true);
        }
        let status = self
            .command(Path::new("test"), Path::new("/"))
            .arg("-x")
            .arg(dir)
            .args(["-a", "-w"])
            .arg(dir)
            .status()
            .context("cannot run `test` to check directory access")?;
        Ok(status.success())
    }
}

impl fmt::Display for ServerUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("the current user"),
            Self::Other { uid, .. } => write!(f, "the postgres user (uid {uid})"),
        }
    }
}

/// [`Cluster::start`] could not use the directory because the server user cannot reach it; the caller may
/// pick another place.
#[derive(Debug)]
pub(crate) struct Inaccessible {
    /// The directory.
    pub(crate) dir: PathBuf,
    /// Who cannot use it.
    pub(crate) user: ServerUser,
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
/// Deliberately not `Debug`: it holds the password.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    /// TCP port on 127.0.0.1.
    pub(crate) port: u16,
    /// [`APP_USER`]'s password.
    pub(crate) password: String,
    /// The directory of the server's unix socket.
    pub(crate) socket_dir: PathBuf,
    /// PostgreSQL's bin directory.
    pub(crate) bindir: PathBuf,
}

impl ConnInfo {
    /// `postgresql://pgconn_app:<password>@127.0.0.1:<port>/pgconn_test`, password percent-encoded.
    pub(crate) fn database_url(&self) -> String {
        format!(
            "postgresql://{APP_USER}:{}@127.0.0.1:{}/{DATABASE}",
            percent_encode(&self.password),
            self.port
        )
    }

    /// [`Self::database_url`] with the password replaced by `***`, for messages.
    pub(crate) fn redacted_database_url(&self) -> String {
        format!("postgresql://{APP_USER}:***@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// `postgresql://postgres@127.0.0.1:<port>/pgconn_test`: the superuser, trusted.
    pub(crate) fn admin_url(&self) -> String {
        format!("postgresql://{ADMIN_USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The environment the tests read.
    pub(crate) fn test_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGCONN_TEST_DATABASE_URL", self.database_url()),
            ("PGCONN_TEST_ADMIN_URL", self.admin_url()),
            ("PGCONN_TEST_SOCKET_DIR", self.socket_dir.to_string_lossy().into_owned()),
            ("PGCONN_TEST_PG_BINDIR", self.bindir.to_string_lossy().into_owned()),
        ]
    }
}

/// A running PostgreSQL cluster in its own directory. Dropping it stops the server and removes the
/// directory, unless it was [detached](Cluster::detach).
pub(crate) struct Cluster {
    dir: PathBuf,
    user: ServerUser,
    info: ConnInfo,
    server: Option<GuardedChild>,
    /// Set once the directory is gone, or handed over by `detach`.
    done: bool,
}

impl Cluster {
    /// Creates `dir` (which must not exist), runs `initdb`, starts the server on a free port and creates
    /// [`APP_USER`] and [`DATABASE`].
    ///
    /// On any error, and on Ctrl-C/SIGTERM ([`process::Interrupted`]), what was started is stopped and
    /// `dir` removed. When `user` cannot use `dir`, the error is [`Inaccessible`].
    pub(crate) fn start(dir: &Path, bindir: &Path, user: ServerUser) -> Result<Self> {
        if dir.exists() {
            bail!("{} already exists; remove it or choose another directory", dir.display());
        }
        DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create the cluster directory {}", dir.display()))?;
        // From here on, dropping `cluster` removes `dir`.
        let mut cluster = Self {
            dir: dir.to_path_buf(),
            user,
            info: ConnInfo {
                port: 0,
                password: password()?,
                socket_dir: dir.join("socket"),
                bindir: bindir.to_path_buf(),
            },
            server: None,
            done: false,
        };
        cluster.init()?;
        cluster.launch()?;
        cluster.create_role_and_database()?;
        Ok(cluster)
    }

    /// The cluster directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory, `<dir>/data`: the postmaster's `-D` argument.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log, `<dir>/postgres.log`.
    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// How to connect.
    pub(crate) fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The postmaster's pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(GuardedChild::id)
    }

    /// Stops the server and removes the cluster directory.
    pub(crate) fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Leaves the server running and the directory in place; returns the postmaster's pid. Stopping it is
    /// now the caller's business.
    pub(crate) fn detach(mut self) -> Option<u32> {
        self.done = true;
        self.server.take().and_then(GuardedChild::detach)
    }

    /// `data/`, `socket/`, `postgres.log`, owned by the server user; then `initdb`.
    fn init(&mut self) -> Result<()> {
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

        eprintln!(
            "xtask: PostgreSQL cluster in {} (bin: {})",
            self.dir.display(),
            self.info.bindir.display()
        );
        process::check_interrupted()?;
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
        process::check_interrupted()?;
        if !status.success() {
            bail!("initdb failed ({status}); the end of {}:\n{}", log.display(), self.log_tail(0));
        }
        let hba = data.join("pg_hba.conf");
        fs::write(&hba, PG_HBA).with_context(|| format!("cannot write {}", hba.display()))?;
        Ok(())
    }

    /// Starts the postmaster on a free port and waits until it accepts connections; tries another port
    /// when the chosen one was taken meanwhile.
    fn launch(&mut self) -> Result<()> {
        let conf_path = self.data_dir().join("postgresql.conf");
        let initdb_conf =
            fs::read_to_string(&conf_path).with_context(|| format!("cannot read {}", conf_path.display()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            self.info.port = port;
            let mut conf = initdb_conf.clone();
            conf.push_str("\n# added by cargo xtask\n");
            for (name, value) in server_settings(port, &self.info.socket_dir) {
                let _ = writeln!(conf, "{name} = {value}");
            }
            // Overwriting keeps the file's owner and mode (the server user's, 0600).
            fs::write(&conf_path, conf).with_context(|| format!("cannot write {}", conf_path.display()))?;

            let log_start = fs::metadata(self.log_file()).map_or(0, |m| m.len());
            let (stdout, stderr) = self.log_handles()?;
            let child = self
                .user
                .command(&self.info.bindir.join("postgres"), &self.dir)
                .arg("-D")
                .arg(self.data_dir())
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                // Its own process group: a Ctrl-C in the terminal reaches xtask, which stops the server
                // in order, instead of killing the server under the running tests.
                .process_group(0)
                .spawn()
                .context("cannot start postgres")?;
            let pid = child.id();
            self.server = Some(GuardedChild::new("postgres", child, POSTGRES_STOP));
            match self.wait_ready()? {
                None => {
                    eprintln!("xtask: PostgreSQL ready on 127.0.0.1:{port} (pid {pid})");
                    return Ok(());
                }
                Some(status) => {
                    self.server = None;
                    let new_log = self.log_tail(log_start);
                    if new_log.contains("Address already in use") && attempt < START_ATTEMPTS {
                        eprintln!("xtask: port {port} was taken meanwhile, trying another");
                        continue;
                    }
                    bail!(
                        "postgres exited while starting ({status}); the end of {}:\n{new_log}",
                        self.log_file().display()
                    );
                }
            }
        }
    }

    /// Polls `pg_isready` every 100 ms for up to 30 s. `None` once the server accepts connections;
    /// `Some(status)` if it exited first.
    fn wait_ready(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let port = self.info.port.to_string();
        loop {
            let server = self.server.as_mut().context("no server to wait for")?;
            if let Some(status) = server.try_wait()? {
                return Ok(Some(status));
            }
            process::check_interrupted()?;
            let ready = Command::new(self.info.bindir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", ADMIN_USER, "-d", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("cannot run pg_isready")?;
            if ready.success() {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                bail!(
                    "PostgreSQL did not accept connections on port {port} within {}s; the end of {}:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_file().display(),
                    self.log_tail(0)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `CREATE ROLE pgconn_app ...` and `CREATE DATABASE pgconn_test ...` through psql as the superuser.
    fn create_role_and_database(&self) -> Result<()> {
        process::check_interrupted()?;
        // On stdin rather than `-c`, so the password does not show in `ps`.
        let sql = format!(
            "CREATE ROLE {APP_USER} LOGIN PASSWORD '{}';\nCREATE DATABASE {DATABASE} OWNER {APP_USER};\n",
            self.info.password
        );
        let mut child = Command::new(self.info.bindir.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.info.port.to_string())
            .args(["-U", ADMIN_USER, "-d", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run psql")?;
        child
            .stdin
            .take()
            .context("psql has no stdin")?
            .write_all(sql.as_bytes())
            .context("cannot write to psql")?;
        let out = child.wait_with_output().context("cannot wait for psql")?;
        if !out.status.success() {
            bail!(
                "creating role {APP_USER} and database {DATABASE} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        Ok(())
    }

    /// Two append handles on `postgres.log`, for a child's stdout and stderr.
    fn log_handles(&self) -> Result<(File, File)> {
        let path = self.log_file();
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let copy = file.try_clone().with_context(|| format!("cannot open {}", path.display()))?;
        Ok((file, copy))
    }

    /// The last lines of `postgres.log` from byte `from` on, for error messages.
    fn log_tail(&self, from: u64) -> String {
        let read = || -> io::Result<String> {
            let mut file = File::open(self.log_file())?;
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

    /// Stops the server (if any) and removes the directory; does nothing the second time.
    fn shutdown(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let had_server = self.server.is_some();
        let stopped = self.server.take().map_or(Ok(()), |mut server| server.stop());
        let removed = match fs::remove_dir_all(&self.dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("cannot remove {}", self.dir.display()))
            }
            _ => Ok(()),
        };
        stopped?;
        removed?;
        if had_server {
            eprintln!("xtask: PostgreSQL stopped, {} removed", self.dir.display());
        } else {
            eprintln!("xtask: {} removed", self.dir.display());
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            eprintln!("xtask: warning: {err:#}");
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1 (bind port 0, read the port, let go).
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).context("cannot bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr().context("cannot read the address of a bound socket")?.port())
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

/// Percent-encodes every byte except the URL-unreserved `A-Z a-z 0-9 - . _ ~`.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Whether `pid` is a live (not zombie) `postgres` process whose command line names `data_dir`: the only
/// check that makes signalling a pid read from a file safe.
pub(crate) fn is_postgres_for(pid: u32, data_dir: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc.join("stat")) else { return false };
    // `pid (comm) S ...`: the state follows the last `)`.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z" | "X")) {
        return false;
    }
    let Ok(cmdline) = fs::read(proc.join("cmdline")) else { return false };
    let mut args = cmdline.split(|&b| b == 0).map(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes);
    let is_postgres = args
        .next()
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|name| name == "postgres" || name == "postmaster");
    is_postgres && args.any(|arg| Path::new(arg) == data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn versions_compare_numerically() {
        assert!(parse_version("15") > parse_version("9.6"));
        assert_eq!(parse_version("main"), None);
    }
}
