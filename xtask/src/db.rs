//! `cargo xtask db start|stop|status|env`: a development PostgreSQL that outlives xtask.
//!
//! The cluster is the same as the one `cargo xtask test` uses, kept under `target/pgconn-db/cluster`.
//! When xtask runs as root and the `postgres` user cannot reach that directory (a workspace under a
//! mode-0700 `/root`), the cluster goes to `$TMPDIR/pgconn-db-<hash of the workspace path>` instead.
//! Either way `target/pgconn-db/state` (mode 0600, `KEY=value` lines) records where it is, its port,
//! postmaster pid and password.
//!
//! A pid read from the state file is signalled only while `/proc/PID/cmdline` shows a `postgres` for
//! the recorded data directory.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use pgconn_testkit::{
    Cluster, ConnInfo, Inaccessible, POSTGRES_STOP, ServerUser, find_bindir, is_postgres_for, stop_pid,
};

use crate::process;

/// The `db` subcommands, for help and errors.
pub(crate) const USAGE: &str = "\
usage: cargo xtask db <start|stop|status|env>
  start    start the development PostgreSQL (kept under target/pgconn-db/), leave it running
  stop     stop it and remove its directory
  status   say whether it runs (exit 0) or not (exit 1)
  env      print `export ...` lines: eval \"$(cargo xtask db env)\"
";

/// Runs `cargo xtask db <args>`; returns the exit code.
pub(crate) fn run(args: &[String]) -> Result<u8> {
    let paths = Paths::new();
    match args {
        [cmd] if cmd == "start" => start(&paths),
        [cmd] if cmd == "stop" => stop(&paths),
        [cmd] if cmd == "status" => status(&paths),
        [cmd] if cmd == "env" => env(&paths),
        _ => {
            eprint!("{USAGE}");
            Ok(2)
        }
    }
}

/// Where the development cluster and its state live.
struct Paths {
    /// `target/pgconn-db`: the state file, and the cluster when the server user can reach it.
    state_dir: PathBuf,
    /// `target/pgconn-db/state`.
    state_file: PathBuf,
    /// `target/pgconn-db/cluster`.
    preferred: PathBuf,
    /// `$TMPDIR/pgconn-db-<hash>`, for when the server user cannot reach `preferred`.
    fallback: PathBuf,
}

impl Paths {
    fn new() -> Self {
        let root = crate::workspace_root();
        let state_dir = root.join("target").join("pgconn-db");
        Self {
            state_file: state_dir.join("state"),
            preferred: state_dir.join("cluster"),
            fallback: std::env::temp_dir()
                .join(format!("pgconn-db-{:016x}", fnv1a(root.as_os_str().as_encoded_bytes()))),
            state_dir,
        }
    }

    /// Whether `dir` is a cluster directory this module creates, and so may be removed.
    fn is_ours(&self, dir: &Path) -> bool {
        dir == self.preferred
            || dir == self.fallback
            || dir
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("pgconn-db-"))
    }
}

/// What `target/pgconn-db/state` records.
struct State {
    pid: u32,
    cluster_dir: PathBuf,
    data_dir: PathBuf,
    info: ConnInfo,
}

impl State {
    /// Whether the recorded postmaster still runs.
    fn running(&self) -> bool {
        is_postgres_for(self.pid, &self.data_dir)
    }

    fn render(&self) -> String {
        let info = &self.info;
        format!(
            "# written by cargo xtask db start\nport={}\npid={}\npassword={}\ncluster_dir={}\ndata_dir={}\n\
             socket_dir={}\nbindir={}\n",
            info.port,
            self.pid,
            info.password,
            self.cluster_dir.display(),
            self.data_dir.display(),
            info.socket_dir.display(),
            info.bindir.display(),
        )
    }

    fn parse(text: &str) -> Result<Self, String> {
        let values: HashMap<&str, &str> = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| line.split_once('='))
            .collect();
        let get = |key: &str| values.get(key).copied().ok_or_else(|| format!("no `{key}` line"));
        let number = |key: &str| -> Result<u32, String> {
            get(key)?.parse().map_err(|_| format!("`{key}` is not a number"))
        };
        Ok(Self {
            pid: number("pid")?,
            cluster_dir: get("cluster_dir")?.into(),
            data_dir: get("data_dir")?.into(),
            info: ConnInfo {
                port: u16::try_from(number("port")?).map_err(|_| "`port` is out of range".to_owned())?,
                password: get("password")?.to_owned(),
                socket_dir: get("socket_dir")?.into(),
                bindir: get("bindir")?.into(),
            },
        })
    }
}

fn read_state(paths: &Paths) -> Result<Option<State>> {
    let text = match fs::read_to_string(&paths.state_file) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", paths.state_file.display())),
    };
    State::parse(&text).map(Some).map_err(|why| {
        anyhow::anyhow!(
            "{} is damaged ({why}); stop any server it started by hand, then remove {}",
            paths.state_file.display(),
            paths.state_dir.display()
        )
    })
}

fn write_state(paths: &Paths, state: &State) -> Result<()> {
    let path = &paths.state_file;
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("cannot replace {}", path.display()));
        }
        _ => {}
    }
    // 0600: it holds the password.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(state.render().as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `db start`: start the cluster unless it runs, record it, leave it running.
fn start(paths: &Paths) -> Result<u8> {
    if let Some(state) = read_state(paths)? {
        if state.running() {
            println!("xtask: the development database is already running");
            print_status(&state);
            return Ok(0);
        }
        eprintln!(
            "xtask: the server recorded in {} (pid {}) is gone; cleaning up",
            paths.state_file.display(),
            state.pid
        );
        remove_cluster(paths, &state.cluster_dir)?;
    }
    for dir in [&paths.preferred, &paths.fallback] {
        let data_dir = dir.join("data");
        if let Some(pid) = live_postmaster(&data_dir) {
            bail!(
                "a PostgreSQL server (pid {pid}) runs on {} but {} does not record it; stop it with \
                 `kill -INT {pid}`, then run `cargo xtask db start` again",
                data_dir.display(),
                paths.state_file.display()
            );
        }
        remove_cluster(paths, dir)?;
    }
    fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("cannot create {}", paths.state_dir.display()))?;

    let bindir = find_bindir()?;
    let user = ServerUser::detect()?;
    let options = process::cluster_options();
    let cluster = match Cluster::start(&paths.preferred, &bindir, user, &options) {
        Err(err) if err.downcast_ref::<Inaccessible>().is_some() => {
            eprintln!("xtask: {err}; using {} instead", paths.fallback.display());
            Cluster::start(&paths.fallback, &bindir, user, &options)?
        }
        result => result?,
    };
    let state = State {
        pid: cluster.pid().context("the server is not running")?,
        cluster_dir: cluster.dir().to_path_buf(),
        data_dir: cluster.data_dir(),
        info: cluster.info().clone(),
    };
    // If this fails, `cluster` is dropped and the server stopped: better than one nobody can find.
    write_state(paths, &state)?;
    cluster.detach();
    println!("xtask: the development database is running; stop it with `cargo xtask db stop`");
    print_status(&state);
    Ok(0)
}

/// `db stop`: stop the recorded server and remove its directories.
fn stop(paths: &Paths) -> Result<u8> {
    let Some(state) = read_state(paths)? else {
        println!("xtask: the development database is not running");
        return Ok(0);
    };
    let pid = state.pid;
    if state.running() {
        eprintln!("xtask: stopping PostgreSQL (pid {pid})");
        stop_pid(pid, POSTGRES_STOP, || is_postgres_for(pid, &state.data_dir))?;
    } else {
        eprintln!("xtask: PostgreSQL (pid {pid}) was not running");
    }
    remove_cluster(paths, &state.cluster_dir)?;
    fs::remove_dir_all(&paths.state_dir)
        .with_context(|| format!("cannot remove {}", paths.state_dir.display()))?;
    println!("xtask: PostgreSQL stopped, {} removed", state.cluster_dir.display());
    Ok(0)
}

/// `db status`: exit 0 if running, 1 if not.
fn status(paths: &Paths) -> Result<u8> {
    match read_state(paths)? {
        Some(state) if state.running() => {
            println!("running");
            print_status(&state);
            Ok(0)
        }
        _ => {
            println!("not running; start it with `cargo xtask db start`");
            Ok(1)
        }
    }
}

/// `db env`: `export` lines for `eval "$(cargo xtask db env)"`.
/// The application role's URL of the running development database, if one runs.
pub(crate) fn running_url() -> Result<Option<String>> {
    Ok(read_state(&Paths::new())?.filter(State::running).map(|state| state.info.database_url()))
}

fn env(paths: &Paths) -> Result<u8> {
    let Some(state) = read_state(paths)?.filter(State::running) else {
        bail!("the development database is not running; start it with `cargo xtask db start`");
    };
    println!("export DATABASE_URL={}", shell_quote(&state.info.database_url()));
    for (name, value) in state.info.test_env() {
        println!("export {name}={}", shell_quote(&value));
    }
    Ok(0)
}

fn print_status(state: &State) {
    let info = &state.info;
    println!("  pid:          {}", state.pid);
    println!("  DATABASE_URL: {}  (with the password: cargo xtask db env)", info.redacted_database_url());
    println!("  admin URL:    {}", info.admin_url());
    println!("  socket dir:   {}", info.socket_dir.display());
    println!("  directory:    {}", state.cluster_dir.display());
}

/// The pid in `data_dir/postmaster.pid`, if that process is a live postgres for `data_dir`.
fn live_postmaster(data_dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid = text.lines().next()?.trim().parse().ok()?;
    is_postgres_for(pid, data_dir).then_some(pid)
}

/// Removes a cluster directory, if it is one this module creates and it exists.
fn remove_cluster(paths: &Paths, dir: &Path) -> Result<()> {
    if !paths.is_ours(dir) {
        eprintln!("xtask: warning: not removing {}: not a directory `cargo xtask db` creates", dir.display());
        return Ok(());
    }
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// `value` in single quotes for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// FNV-1a: a stable hash for naming the fallback directory after the workspace path.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_its_file_format() {
        let state = State {
            pid: 4242,
            cluster_dir: "/w/target/pgconn-db/cluster".into(),
            data_dir: "/w/target/pgconn-db/cluster/data".into(),
            info: ConnInfo {
                port: 54321,
                password: "p@ss:w/rd?#%=00".into(),
                socket_dir: "/w/target/pgconn-db/cluster/socket".into(),
                bindir: "/usr/lib/postgresql/15/bin".into(),
            },
        };
        let parsed = State::parse(&state.render()).expect("what render writes parses");
        assert_eq!(parsed.render(), state.render());
        assert_eq!(parsed.info.password, "p@ss:w/rd?#%=00");
        assert!(State::parse("port=1\n").is_err());
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("a'b c"), r"'a'\''b c'");
    }

    #[test]
    fn fallback_dirs_are_ours_and_others_are_not() {
        let paths = Paths::new();
        assert!(paths.is_ours(&paths.preferred) && paths.is_ours(&paths.fallback));
        assert!(!paths.is_ours(Path::new("/tmp")));
    }
}
