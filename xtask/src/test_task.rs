//! `cargo xtask test [ARGS...]`: `cargo test` against a throwaway PostgreSQL cluster with a real PgBouncer
//! in front.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use pgconn_testkit::{Cluster, PGCONN_BIN_VAR, PgBouncer, find_pgbouncer, remove_abandoned_clusters, vars};

use crate::{newer_pgbouncer, process};

/// The variable holding the absolute path of the example server `thread_per_request` (debug build), for
/// `tests/it/example.rs`.
pub(crate) const EXAMPLE_BIN_VAR: &str = pgconn_testkit::vars::EXAMPLE_BIN;

/// Builds the `pgconn` binary, starts a cluster in a fresh temporary directory (`$TMPDIR/pgconn-test-*`,
/// or `/tmp` when the server user cannot reach `$TMPDIR`) and PgBouncer in front of it (configured by
/// `pgconn pgbouncer-ini`), runs `cargo test ARGS` (default `--workspace`) with the `PGCONN_TEST_*`
/// variables set, then stops PgBouncer, then the cluster, and removes its directory whatever happened.
/// Returns `cargo test`'s exit code.
///
/// The variables: the cluster's ([`ConnInfo::test_env`](pgconn_testkit::ConnInfo::test_env)),
/// PgBouncer's ([`PgBouncerInfo::test_env`](pgconn_testkit::PgBouncerInfo::test_env)),
/// `PGCONN_TEST_PGCONN_BIN`, the absolute path of the `pgconn` binary, and [`EXAMPLE_BIN_VAR`], that of
/// the example server (cargo builds examples for `cargo test` but tells no test where they are).
///
/// Before and after, removes the private clusters that test binaries which did not end normally left
/// behind (see [`remove_abandoned_clusters`]), including the ones of this run when it is interrupted.
pub(crate) fn run(args: &[String]) -> Result<u8> {
    remove_abandoned();
    // Before anything is started: a missing PgBouncer is the most likely setup problem.
    find_pgbouncer()?;
    // When it cannot be built (offline, no libevent headers), the rest still runs; the tests that need it
    // fail, saying so.
    let newer = newer_pgbouncer::ensure_built()
        .inspect_err(|err| {
            eprintln!(
                "xtask: warning: {err:#}\nxtask: the tests in tests/it/pgbouncer_prepared.rs will fail without it"
            );
        })
        .ok();
    let pgconn = crate::build_pgconn()?;
    let example = build_example()?;
    let cluster = Cluster::start_temp(&process::cluster_options())?;
    // Declared after the cluster, so that on an early return it is dropped (stopped) first.
    let mut bouncer = PgBouncer::in_front_of(&cluster, &pgconn, &[], &process::pgbouncer_options())?;
    let mut prepared = match &newer {
        Some(program) => {
            Some(newer_pgbouncer::start(&cluster, &pgconn, program, &newer_pgbouncer::TEST_SIZES)?)
        }
        None => None,
    };

    let args: Vec<&str> =
        if args.is_empty() { vec!["--workspace"] } else { args.iter().map(String::as_str).collect() };
    eprintln!("xtask: cargo test {}", args.join(" "));
    let mut cargo_test = Command::new(crate::cargo());
    cargo_test
        .arg("test")
        .args(&args)
        .current_dir(crate::workspace_root())
        .envs(cluster.info().test_env())
        .envs(bouncer.info().test_env())
        .env(PGCONN_BIN_VAR, &pgconn)
        .env(EXAMPLE_BIN_VAR, &example);
    if let Some(prepared) = &prepared {
        cargo_test
            .env(vars::PGBOUNCER_PREPARED_URL, prepared.info().database_url())
            .env(vars::PGBOUNCER_PREPARED_ADMIN_URL, prepared.info().admin_url());
    }
    let waited = process::run(&mut cargo_test, "cargo test");
    remove_abandoned();
    let prepared_stopped = prepared.as_mut().map_or(Ok(()), PgBouncer::stop);
    drop(prepared);
    let bouncer_stopped = bouncer.stop();
    drop(bouncer);
    let stopped = cluster.stop();
    let status = waited?;
    prepared_stopped?;
    bouncer_stopped?;
    stopped?;
    if !status.success() {
        eprintln!("xtask: cargo test failed ({status})");
    }
    Ok(process::exit_code(status))
}

/// Builds the example server (`cargo build -p pgconn-example --bin thread_per_request`, debug) and returns
/// the path cargo reports for it.
fn build_example() -> Result<PathBuf> {
    crate::build_bin("pgconn-example", "thread_per_request", false)
}

/// [`remove_abandoned_clusters`] in the temporary directory and in `/tmp`, where
/// [`Cluster::start_temp`] puts clusters; says what it removed, warns on failure.
fn remove_abandoned() {
    let mut parents: Vec<PathBuf> = vec![std::env::temp_dir()];
    if parents[0] != Path::new("/tmp") {
        parents.push("/tmp".into());
    }
    for parent in parents {
        match remove_abandoned_clusters(&parent) {
            Ok(removed) => {
                for dir in removed {
                    eprintln!("xtask: removed the abandoned test cluster {}", dir.display());
                }
            }
            Err(err) => eprintln!("xtask: warning: cannot remove abandoned test clusters: {err:#}"),
        }
    }
}
