//! `cargo xtask test [ARGS...]`: `cargo test` against a throwaway PostgreSQL cluster.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};

use crate::cluster::{self, Cluster, Inaccessible, ServerUser};
use crate::process;

/// Starts a cluster in a fresh temporary directory, runs `cargo test ARGS` (default `--workspace`) with
/// the `PGCONN_TEST_*` variables set, then stops the cluster and removes its directory whatever happened.
/// Returns `cargo test`'s exit code.
pub(crate) fn run(args: &[String]) -> Result<u8> {
    let bindir = cluster::find_bindir()?;
    let user = ServerUser::detect()?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("pgconn-test-{}-{nanos}", std::process::id()));
    let cluster = Cluster::start(&dir, &bindir, user).map_err(|err| {
        if err.is::<Inaccessible>() {
            anyhow!("{err}; set TMPDIR to a directory the postgres user can reach, such as /tmp")
        } else {
            err
        }
    })?;

    let args: Vec<&str> =
        if args.is_empty() { vec!["--workspace"] } else { args.iter().map(String::as_str).collect() };
    eprintln!("xtask: cargo test {}", args.join(" "));
    let mut cargo_test = Command::new(crate::cargo());
    cargo_test.arg("test").args(&args).current_dir(crate::workspace_root()).envs(cluster.info().test_env());
    let waited = process::run(&mut cargo_test, "cargo test");
    let stopped = cluster.stop();
    let status = waited?;
    stopped?;
    if !status.success() {
        eprintln!("xtask: cargo test failed ({status})");
    }
    Ok(process::exit_code(status))
}
