//! A PgBouncer that handles prepared statements in transaction mode (1.21 and later), for the tests of the
//! statement cache through PgBouncer (`tests/it/pgbouncer_prepared.rs`) and the bench's section on it.
//!
//! Debian 12 ships PgBouncer 1.18, which does not. Debian 13's source of 1.24.1 is fetched from
//! deb.debian.org (checked against its SHA-256), built against this machine's libraries (`./configure &&
//! make`, about 10 s on 2 cores; it needs a C compiler and the headers of libevent and OpenSSL) and its
//! executable kept in `target/pgbouncer-1.24.1/bin/`, so later runs reuse it. `PGCONN_PGBOUNCER_PREPARED_BIN` names another
//! PgBouncer 1.21 or later instead (then nothing is fetched or built).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail, ensure};
use pgconn_testkit::{
    Cluster, ConnInfo, PgBouncer, PgBouncerInfo, PgBouncerOptions, ServerUser, is_pgbouncer_for,
    read_pid_file,
};

/// The version built.
const VERSION: &str = "1.24.1";
/// Where its source is fetched, in order: Debian 13's copy of the upstream tarball (the one tried here),
/// then the upstream one (the same file by its checksum, untried here: this machine reaches only package
/// registries). Debian's pool drops a version once a newer one replaces it.
const URLS: [&str; 2] = [
    "http://deb.debian.org/debian/pool/main/p/pgbouncer/pgbouncer_1.24.1.orig.tar.gz",
    "https://www.pgbouncer.org/downloads/files/1.24.1/pgbouncer-1.24.1.tar.gz",
];
/// The tarball's SHA-256, from Debian 13's `Sources` index (so plain HTTP is as safe as apt's).
const SHA256: &str = "da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0";
/// The sizes of the tests' PgBouncer with prepared statements (`cargo xtask test`, `cargo xtask db`): one
/// server connection, so that every client's statements meet on it and what PgBouncer keeps there (a
/// stale statement after a schema change) is certain, not up to which server connection a call gets.
pub(crate) const TEST_SIZES: [(&str, &str); 3] = [
    ("PGBOUNCER_DEFAULT_POOL_SIZE", "1"),
    ("PGBOUNCER_MIN_POOL_SIZE", "0"),
    ("PGBOUNCER_RESERVE_POOL_SIZE", "0"),
];
/// A PgBouncer 1.21 or later to use instead of building one.
pub(crate) const BIN_VAR: &str = "PGCONN_PGBOUNCER_PREPARED_BIN";

/// The `pgbouncer` executable to run: `$PGCONN_PGBOUNCER_PREPARED_BIN`, or the one built under the
/// target directory (built first when missing).
pub(crate) fn ensure_built() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(BIN_VAR).filter(|bin| !bin.is_empty()) {
        let bin = PathBuf::from(bin);
        ensure!(bin.is_file(), "{BIN_VAR}={} is not a file", bin.display());
        return Ok(bin);
    }
    let prefix = crate::target_dir().join(format!("pgbouncer-{VERSION}"));
    let bin = prefix.join("bin").join("pgbouncer");
    if version_of(&bin).is_some_and(|version| version.contains(&format!("PgBouncer {VERSION}"))) {
        return Ok(bin);
    }
    build(&prefix).with_context(|| {
        format!(
            "cannot build PgBouncer {VERSION} for the tests of prepared statements through PgBouncer; \
             they need curl, make, a C compiler and the headers of libevent and OpenSSL (`apt-get \
             install curl make gcc pkg-config libevent-dev libssl-dev`) and deb.debian.org, or set \
             {BIN_VAR} to a PgBouncer 1.21 or later"
        )
    })?;
    let version = version_of(&bin).context("the PgBouncer just built does not run")?;
    eprintln!("xtask: built {}", version.lines().next().unwrap_or_default());
    Ok(bin)
}

/// `program` (from [`ensure_built`]) in front of `cluster`, rendered by `pgconn pgbouncer-ini` with
/// `PGBOUNCER_PREPARED_STATEMENTS=true` (so with `max_prepared_statements`) and `env` on top. Its
/// executable is copied into the cluster's directory, which the server user can read (PgBouncer runs as
/// `postgres` when xtask runs as root).
pub(crate) fn start(
    cluster: &Cluster,
    pgconn: &Path,
    program: &Path,
    env: &[(&str, &str)],
) -> Result<PgBouncer> {
    start_in(cluster.dir(), cluster.info(), cluster.user(), pgconn, program, env)
}

/// [`start`] for the cluster in `cluster_dir` that `info` reaches, run by `user` (a running development
/// database, which xtask holds no [`Cluster`] of), in `cluster_dir/`[`DIR`].
pub(crate) fn start_in(
    cluster_dir: &Path,
    info: &ConnInfo,
    user: ServerUser,
    pgconn: &Path,
    program: &Path,
    env: &[(&str, &str)],
) -> Result<PgBouncer> {
    let bin = cluster_dir.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let copy = bin.join("pgbouncer");
    fs::copy(program, &copy)
        .with_context(|| format!("cannot copy {} to {}", program.display(), copy.display()))?;
    let mut all = vec![("PGBOUNCER_PREPARED_STATEMENTS", "true")];
    all.extend_from_slice(env);
    let options = PgBouncerOptions { program: Some(copy), ..crate::process::pgbouncer_options() };
    PgBouncer::render_and_start(&cluster_dir.join(DIR), info, user, pgconn, &all, &options)
}

/// The directory of a cluster's directory where [`start_in`] runs it.
pub(crate) const DIR: &str = "pgbouncer-prepared";

/// The PgBouncer [`start_in`] left running in `cluster_dir` (a detached one, `cargo xtask db`), if its
/// recorded pid still runs it.
pub(crate) fn running_in(cluster_dir: &Path) -> Option<PgBouncerInfo> {
    let (pid, ini) = read_pid_file(&cluster_dir.join(DIR))?;
    is_pgbouncer_for(pid, &ini).then(|| PgBouncerInfo::read(&ini).ok()).flatten()
}

/// `bin --version`'s first line, when it runs.
pub(crate) fn version_line(bin: &Path) -> Option<String> {
    version_of(bin).and_then(|text| text.lines().next().map(str::to_owned))
}

/// What `bin --version` prints, when it runs.
fn version_of(bin: &Path) -> Option<String> {
    let output = Command::new(bin).arg("--version").stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fetches, checks, configures and builds PgBouncer in a directory of this process's own, then puts the
/// executable at `prefix/bin/pgbouncer` with a rename (so two first runs at once do not meet half-built).
fn build(prefix: &Path) -> Result<()> {
    let work = prefix.with_file_name(format!("pgbouncer-{VERSION}-build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let built = build_in(&work, prefix);
    let _ = fs::remove_dir_all(&work);
    built
}

fn build_in(work: &Path, prefix: &Path) -> Result<()> {
    let tarball = work.join("source.tar.gz");
    let mut fetched = Err(anyhow::anyhow!("no source URL"));
    for url in URLS {
        eprintln!("xtask: fetching PgBouncer {VERSION}'s source from {url}");
        fetched = fetch(url, &tarball);
        match &fetched {
            Ok(()) => break,
            Err(err) => eprintln!("xtask: {err:#}"),
        }
    }
    fetched?;
    run(Command::new("tar").arg("xzf").arg(&tarball).current_dir(work), "tar")?;
    let source = work.join(format!("pgbouncer-{VERSION}"));
    eprintln!("xtask: building PgBouncer {VERSION} in {}", source.display());
    run(
        Command::new("./configure")
            .arg(format!("--prefix={}", prefix.display()))
            .args(["--without-cares", "--without-systemd"])
            .current_dir(&source),
        "./configure",
    )?;
    run(Command::new("make").arg("-j2").current_dir(&source), "make")?;
    let bin = prefix.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let partial = bin.join(format!("pgbouncer.{}", std::process::id()));
    fs::copy(source.join("pgbouncer"), &partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    fs::rename(&partial, bin.join("pgbouncer"))
        .with_context(|| format!("cannot rename {}", partial.display()))
}

/// Downloads `url` to `to` and checks its SHA-256.
fn fetch(url: &str, to: &Path) -> Result<()> {
    run(Command::new("curl").args(["-fsSL", "--max-time", "120", "-o"]).arg(to).arg(url), "curl")?;
    let sum = Command::new("sha256sum").arg(to).output().context("cannot run sha256sum")?;
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap_or_default();
    ensure!(sum == SHA256, "{url} has SHA-256 {sum}, expected {SHA256}");
    Ok(())
}

/// Runs `cmd` quietly; on failure, the end of its output.
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let output = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        let text = [output.stdout, output.stderr].concat();
        let text = String::from_utf8_lossy(&text);
        let tail: Vec<&str> = text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{what} failed ({}):\n{}", output.status, tail.join("\n"));
    }
    Ok(())
}
