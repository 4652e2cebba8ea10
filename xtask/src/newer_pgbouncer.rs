//! A PgBouncer that handles prepared statements in transaction mode (1.21 and later), for the tests of the
//! statement cache through PgBouncer (`tests/it/pgbouncer_prepared.rs`).
//!
//! Debian 12 ships PgBouncer 1.18, which does not. Debian 13's source of 1.24.1 is fetched from
//! deb.debian.org (checked against its SHA-256), built against this machine's libraries (`./configure &&
//! make`, about 10 s on 2 cores; it needs a C compiler and libevent's headers) and kept in
//! `target/pgbouncer-1.24.1/`, so later runs reuse it. `PGCONN_PGBOUNCER_PREPARED_BIN` names another
//! PgBouncer 1.21 or later instead (then nothing is fetched or built).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail, ensure};

/// The version built.
const VERSION: &str = "1.24.1";
/// Debian 13's upstream source of it.
const URL: &str = "http://deb.debian.org/debian/pool/main/p/pgbouncer/pgbouncer_1.24.1.orig.tar.gz";
/// The tarball's SHA-256, from Debian 13's `Sources` index (so plain HTTP is as safe as apt's).
const SHA256: &str = "da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0";
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
             they need a C compiler, make, libevent's headers (`apt-get install libevent-dev`) and \
             deb.debian.org, or set {BIN_VAR} to a PgBouncer 1.21 or later"
        )
    })?;
    let version = version_of(&bin).context("the PgBouncer just built does not run")?;
    eprintln!("xtask: built {}", version.lines().next().unwrap_or_default());
    Ok(bin)
}

/// What `bin --version` prints, when it runs.
fn version_of(bin: &Path) -> Option<String> {
    let output = Command::new(bin).arg("--version").stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fetches, checks, configures, builds and installs PgBouncer into `prefix`.
fn build(prefix: &Path) -> Result<()> {
    let work = prefix.with_file_name(format!("pgbouncer-{VERSION}-build"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let tarball = work.join("source.tar.gz");
    eprintln!("xtask: fetching PgBouncer {VERSION}'s source from {URL}");
    run(Command::new("curl").args(["-fsS", "--max-time", "120", "-o"]).arg(&tarball).arg(URL), "curl")?;
    let sum = Command::new("sha256sum").arg(&tarball).output().context("cannot run sha256sum")?;
    let sum = String::from_utf8_lossy(&sum.stdout);
    ensure!(sum.split_whitespace().next() == Some(SHA256), "{URL} has SHA-256 {sum}, expected {SHA256}");
    run(Command::new("tar").arg("xzf").arg(&tarball).current_dir(&work), "tar")?;
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
    run(Command::new("make").arg("install").current_dir(&source), "make install")?;
    let _ = fs::remove_dir_all(&work);
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
