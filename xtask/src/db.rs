//! `cargo xtask db start|stop|status|env`: a development PostgreSQL with PgBouncer in front, both
//! outliving xtask.
//!
//! The cluster and PgBouncer are the same as the ones `cargo xtask test` uses, kept under
//! `target/pgconn-db/cluster` (PgBouncer's ini, userlist and log in its `pgbouncer/`). When xtask runs as
//! root and the `postgres` user cannot reach that directory (a workspace under a mode-0700 `/root`), the
//! cluster goes to `$TMPDIR/pgconn-db-<hash of the workspace path>` instead. Either way
//! `target/pgconn-db/state` (mode 0600, `KEY=value` lines) records where it is, its port, postmaster pid
//! and password, and PgBouncer's pid, port and ini.
//!
//! A pid read from the state file is signalled only while `/proc/PID/cmdline` shows a `postgres` for
//! the recorded data directory, or a `pgbouncer` for the recorded ini. A state file written before
//! PgBouncer was part of `db` (no `pgbouncer_*` lines) still works: `db start` then starts PgBouncer in
//! front of the running cluster. `db start` also starts the tests' PgBouncer with prepared statements
//! (`newer_pgbouncer.rs`) in the cluster's directory; `db stop` stops every PgBouncer there, and `db env`
//! finds it by its ini and pid file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use pgconn_testkit::{
    Cluster, ConnInfo, Inaccessible, Interrupted, PGBOUNCER_STOP, PGCONN_BIN_VAR, POSTGRES_STOP, PgBouncer,
    PgBouncerInfo, ServerUser, find_bindir, find_pgbouncer, is_pgbouncer_for, is_postgres_for,
    stop_pgbouncers_in, stop_pid, vars,
};

use crate::{newer_pgbouncer, process};

/// Runs `cargo xtask db <args>`; returns the exit code.
/// `cargo xtask db ACTION`.
#[derive(clap::Subcommand, Clone, Copy)]
pub(crate) enum Action {
    /// Start the development PostgreSQL and PgBouncer (kept under target/pgconn-db/), leave them running.
    Start,
    /// Stop them and remove their directory.
    Stop,
    /// Say whether it runs (exit 0) or not (exit 1).
    Status,
    /// Print `export ...` lines: eval "$(cargo xtask db env)".
    Env,
}

pub(crate) fn run(action: Action) -> Result<u8> {
    let paths = Paths::new();
    match action {
        Action::Start => start(&paths),
        Action::Stop => stop(&paths),
        Action::Status => status(&paths),
        Action::Env => env(&paths),
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
    /// `None` in a state file written before `db start` started PgBouncer.
    bouncer: Option<BouncerState>,
}

/// The PgBouncer in front of the development cluster.
struct BouncerState {
    pid: u32,
    port: u16,
    ini: PathBuf,
}

impl BouncerState {
    fn of(bouncer: &PgBouncer) -> Result<Self> {
        Ok(Self {
            pid: bouncer.pid().context("PgBouncer is not running")?,
            port: bouncer.port(),
            ini: bouncer.ini().to_path_buf(),
        })
    }

    /// Whether the recorded pgbouncer still runs with the recorded ini.
    fn running(&self) -> bool {
        is_pgbouncer_for(self.pid, &self.ini)
    }
}

impl State {
    /// Whether the recorded postmaster still runs.
    fn running(&self) -> bool {
        is_postgres_for(self.pid, &self.data_dir)
    }

    /// The recorded PgBouncer, if it still runs.
    fn bouncer_running(&self) -> Option<&BouncerState> {
        self.bouncer.as_ref().filter(|bouncer| bouncer.running())
    }

    fn render(&self) -> String {
        let info = &self.info;
        let mut text = format!(
            "# written by cargo xtask db start\nport={}\npid={}\npassword={}\ncluster_dir={}\ndata_dir={}\n\
             socket_dir={}\nbindir={}\n",
            info.port,
            self.pid,
            info.password,
            self.cluster_dir.display(),
            self.data_dir.display(),
            info.socket_dir.display(),
            info.bindir.display(),
        );
        if let Some(bouncer) = &self.bouncer {
            let _ = write!(
                text,
                "pgbouncer_pid={}\npgbouncer_port={}\npgbouncer_ini={}\n",
                bouncer.pid,
                bouncer.port,
                bouncer.ini.display()
            );
        }
        text
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
        let port = |key: &str| -> Result<u16, String> {
            u16::try_from(number(key)?).map_err(|_| format!("`{key}` is out of range"))
        };
        let bouncer = if values.contains_key("pgbouncer_pid") {
            Some(BouncerState {
                pid: number("pgbouncer_pid")?,
                port: port("pgbouncer_port")?,
                ini: get("pgbouncer_ini")?.into(),
            })
        } else {
            None
        };
        Ok(Self {
            pid: number("pid")?,
            cluster_dir: get("cluster_dir")?.into(),
            data_dir: get("data_dir")?.into(),
            info: ConnInfo {
                port: port("port")?,
                password: get("password")?.to_owned(),
                socket_dir: get("socket_dir")?.into(),
                bindir: get("bindir")?.into(),
            },
            bouncer,
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

/// `db start`: start the cluster and PgBouncer unless they run, record them, leave them running.
fn start(paths: &Paths) -> Result<u8> {
    if let Some(mut state) = read_state(paths)? {
        if state.running() {
            start_prepared_bouncer(&state, None)?;
            if state.bouncer_running().is_some() {
                println!("xtask: the development database is already running");
            } else {
                eprintln!("xtask: the development database runs without PgBouncer; starting PgBouncer");
                let bouncer = restart_bouncer(&state)?;
                state.bouncer = Some(BouncerState::of(&bouncer)?);
                // If this fails, `bouncer` is dropped and stopped.
                write_state(paths, &state)?;
                bouncer.detach();
                println!("xtask: the development database is running");
            }
            print_status(&state);
            return Ok(0);
        }
        eprintln!(
            "xtask: the server recorded in {} (pid {}) is gone; cleaning up",
            paths.state_file.display(),
            state.pid
        );
        stop_bouncer(&state)?;
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
        if paths.is_ours(dir) {
            for pid in stop_pgbouncers_in(dir)? {
                eprintln!("xtask: stopped a PgBouncer (pid {pid}) left in {}", dir.display());
            }
        }
        remove_cluster(paths, dir)?;
    }
    // Before the cluster: these fail for setup reasons, and need no server.
    find_pgbouncer()?;
    let pgconn = crate::build_pgconn()?;
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
    // Declared after the cluster, so that on an error it is dropped (stopped) first.
    let bouncer = PgBouncer::in_front_of(&cluster, &pgconn, &[], &process::pgbouncer_options())?;
    let state = State {
        pid: cluster.pid().context("the server is not running")?,
        cluster_dir: cluster.dir().to_path_buf(),
        data_dir: cluster.data_dir(),
        info: cluster.info().clone(),
        bouncer: Some(BouncerState::of(&bouncer)?),
    };
    // If this fails, both are dropped and stopped: better than servers nobody can find.
    write_state(paths, &state)?;
    bouncer.detach();
    cluster.detach();
    start_prepared_bouncer(&state, Some(&pgconn))?;
    println!("xtask: the development database is running; stop it with `cargo xtask db stop`");
    print_status(&state);
    Ok(0)
}

/// Starts the tests' second PgBouncer, with prepared statements (`newer_pgbouncer`), in front of the
/// running development cluster, unless one runs there (a database started before `db` started it, or one
/// whose PgBouncer ended); left running, stopped by `db stop` with the first and found by `db env`.
/// `pgconn`: the binary when already built. Without it the rest works, and the tests that need it say
/// why: warns (fails only when interrupted).
fn start_prepared_bouncer(state: &State, pgconn: Option<&Path>) -> Result<()> {
    if newer_pgbouncer::running_in(&state.cluster_dir).is_some() {
        return Ok(());
    }
    // A stopped one's files: rendered again.
    let _ = fs::remove_dir_all(state.cluster_dir.join(newer_pgbouncer::DIR));
    let started = ServerUser::detect().and_then(|user| {
        let program = newer_pgbouncer::ensure_built()?;
        let pgconn = match pgconn {
            Some(pgconn) => pgconn.to_path_buf(),
            None => crate::build_pgconn()?,
        };
        let sizes = &newer_pgbouncer::TEST_SIZES;
        newer_pgbouncer::start_in(&state.cluster_dir, &state.info, user, &pgconn, &program, sizes)
    });
    match started {
        Ok(bouncer) => {
            eprintln!(
                "xtask: started the PgBouncer with prepared statements on 127.0.0.1:{}",
                bouncer.port()
            );
            bouncer.detach();
        }
        Err(err) if err.is::<Interrupted>() => return Err(err),
        Err(err) => eprintln!("xtask: warning: no PgBouncer with prepared statements: {err:#}"),
    }
    Ok(())
}

/// Starts PgBouncer in front of the running development cluster: with the recorded ini, so on the same
/// port, when there is one; else (or when that fails) with a fresh one from `pgconn pgbouncer-ini`.
fn restart_bouncer(state: &State) -> Result<PgBouncer> {
    let options = process::pgbouncer_options();
    let user = ServerUser::detect()?;
    if let Some(ini) = state.bouncer.as_ref().map(|bouncer| &bouncer.ini).filter(|ini| ini.is_file()) {
        let dir = ini.parent().unwrap_or(&state.cluster_dir);
        match PgBouncer::start(dir, ini, &state.info.bindir, user, &options) {
            Ok(bouncer) => return Ok(bouncer),
            Err(err) if err.is::<Interrupted>() => return Err(err),
            Err(err) => eprintln!(
                "xtask: cannot start PgBouncer with {}: {err:#}; rendering a new one",
                ini.display()
            ),
        }
    }
    find_pgbouncer()?;
    let pgconn = crate::build_pgconn()?;
    PgBouncer::render_and_start(
        &state.cluster_dir.join("pgbouncer"),
        &state.info,
        user,
        &pgconn,
        &[],
        &options,
    )
}

/// Stops the recorded PgBouncer, and any other the testkit recorded in the cluster directory, if they
/// run (checked against `/proc`).
fn stop_bouncer(state: &State) -> Result<()> {
    if let Some(bouncer) = state.bouncer_running() {
        let (pid, ini) = (bouncer.pid, &bouncer.ini);
        eprintln!("xtask: stopping PgBouncer (pid {pid})");
        stop_pid(pid, PGBOUNCER_STOP, || is_pgbouncer_for(pid, ini))?;
    }
    for pid in stop_pgbouncers_in(&state.cluster_dir)? {
        eprintln!("xtask: stopped PgBouncer (pid {pid})");
    }
    Ok(())
}

/// `db stop`: stop the recorded PgBouncer and server and remove their directories.
fn stop(paths: &Paths) -> Result<u8> {
    let Some(state) = read_state(paths)? else {
        println!("xtask: the development database is not running");
        return Ok(0);
    };
    stop_bouncer(&state)?;
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
            if state.bouncer_running().is_none() {
                println!("PgBouncer is not running; `cargo xtask db start` starts it");
            }
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
    let mut vars = state.info.test_env();
    match state.bouncer_running() {
        Some(bouncer) => vars.extend(PgBouncerInfo::read(&bouncer.ini)?.test_env()),
        None => eprintln!(
            "xtask: warning: PgBouncer is not running, so PGCONN_TEST_PGBOUNCER_* are not set; \
             `cargo xtask db start` starts it"
        ),
    }
    match newer_pgbouncer::running_in(&state.cluster_dir) {
        Some(prepared) => vars.extend([
            (vars::PGBOUNCER_PREPARED_URL, prepared.database_url()),
            (vars::PGBOUNCER_PREPARED_ADMIN_URL, prepared.admin_url()),
        ]),
        None => eprintln!(
            "xtask: warning: no PgBouncer with prepared statements runs, so PGCONN_TEST_PGBOUNCER_PREPARED_* \
             are not set; `cargo xtask db start` starts one"
        ),
    }
    let pgconn = crate::pgconn_bin();
    if pgconn.is_file() {
        vars.push((PGCONN_BIN_VAR, pgconn.to_string_lossy().into_owned()));
    }
    for (name, value) in vars {
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
    if let Some(bouncer) = state.bouncer_running() {
        println!(
            "  PgBouncer:    127.0.0.1:{} (pid {}, {})",
            bouncer.port,
            bouncer.pid,
            bouncer.ini.display()
        );
    }
    if let Some(prepared) = newer_pgbouncer::running_in(&state.cluster_dir) {
        println!(
            "  PgBouncer with prepared statements: 127.0.0.1:{} ({})",
            prepared.port,
            prepared.ini.display()
        );
    }
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
            bouncer: Some(BouncerState {
                pid: 4243,
                port: 54322,
                ini: "/w/target/pgconn-db/cluster/pgbouncer/pgbouncer.ini".into(),
            }),
        };
        let parsed = State::parse(&state.render()).expect("what render writes parses");
        assert_eq!(parsed.render(), state.render());
        assert_eq!(parsed.info.password, "p@ss:w/rd?#%=00");
        assert_eq!(parsed.bouncer.as_ref().map(|b| (b.pid, b.port)), Some((4243, 54322)));
        assert!(State::parse("port=1\n").is_err());

        // A state file from before PgBouncer was part of `db start` still parses.
        let text = state.render();
        let old: Vec<&str> = text.lines().filter(|line| !line.starts_with("pgbouncer_")).collect();
        let parsed = State::parse(&old.join("\n")).expect("an old state file parses");
        assert!(parsed.bouncer.is_none());
        assert_eq!(parsed.pid, 4242);
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
