//! `cargo xtask test [ARGS...]`: `cargo test` against a throwaway PostgreSQL cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use pgconn_testkit::{Cluster, remove_abandoned_clusters};

use crate::process;

/// Starts a cluster in a fresh temporary directory (`$TMPDIR/pgconn-test-*`, or `/tmp` when the server user
/// cannot reach `$TMPDIR`), runs `cargo test ARGS` (default `--workspace`) with the `PGCONN_TEST_*`
/// variables set, then stops the cluster and removes its directory whatever happened. Returns
/// `cargo test`'s exit code.
///
/// Before and after, removes the private clusters that test binaries which did not end normally left
/// behind (see [`remove_abandoned_clusters`]), including the ones of this run when it is interrupted.
pub(crate) fn run(args: &[String]) -> Result<u8> {
    remove_abandoned();
    let cluster = Cluster::start_temp(&process::cluster_options())?;

    let args: Vec<&str> =
        if args.is_empty() { vec!["--workspace"] } else { args.iter().map(String::as_str).collect() };
    eprintln!("xtask: cargo test {}", args.join(" "));
    let mut cargo_test = Command::new(crate::cargo());
    cargo_test.arg("test").args(&args).current_dir(crate::workspace_root()).envs(cluster.info().test_env());
    let waited = process::run(&mut cargo_test, "cargo test");
    remove_abandoned();
    let stopped = cluster.stop();
    let status = waited?;
    stopped?;
    if !status.success() {
        eprintln!("xtask: cargo test failed ({status})");
    }
    Ok(process::exit_code(status))
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
