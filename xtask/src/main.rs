//! `cargo xtask`: the project's automation, in Rust rather than shell scripts or CI YAML.
//!
//! `cargo xtask` lists the tasks. The central one is `cargo xtask test`: it starts a throwaway
//! PostgreSQL, runs the workspace's tests against it and always stops it again. The clusters themselves
//! come from `pgconn-testkit`, which the tests use for private clusters of their own; xtask keeps the
//! task dispatch, the `db` and `test` tasks, CI, and the Ctrl-C/SIGTERM handling.

// xtask is a command-line program: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod ci;
mod db;
mod monitor_task;
mod process;
mod test_task;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use pgconn_testkit::Interrupted;

const TASKS: &str = "\
usage: cargo xtask <task> [args]

tasks:
  test [ARGS...]              run `cargo test ARGS` (default: --workspace) against a throwaway PostgreSQL
  db start|stop|status|env    a development PostgreSQL under target/pgconn-db/
  ci                          fmt, clippy, test, doc: what CI runs
  monitor [ARGS...]           `pgconn monitor ARGS` against DATABASE_URL, or the development database
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(err) if err.is::<Interrupted>() || process::interrupted() => {
            eprintln!("xtask: interrupted");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the task named by `args[0]`; returns the exit code.
fn run(args: &[String]) -> Result<u8> {
    let Some((task, rest)) = args.split_first() else {
        print!("{TASKS}");
        return Ok(0);
    };
    // Before any child is started, so that Ctrl-C or SIGTERM always leads through the cleanup.
    process::install_interrupt_handler()?;
    match task.as_str() {
        "help" | "-h" | "--help" => {
            print!("{TASKS}");
            Ok(0)
        }
        "test" => test_task::run(rest),
        "db" => db::run(rest),
        "ci" if rest.is_empty() => ci::run(),
        "monitor" => monitor_task::run(rest),
        _ => {
            eprintln!("xtask: unknown task `{}`\n", args.join(" "));
            eprint!("{TASKS}");
            Ok(2)
        }
    }
}

/// The workspace root: the parent of xtask's own directory.
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in a directory of the workspace")
}

/// The cargo that runs xtask (`$CARGO`), or `cargo` from `PATH`.
pub(crate) fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}
