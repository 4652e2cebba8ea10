//! `cargo xtask`: the project's automation, in Rust rather than shell scripts or CI YAML.
//!
//! `cargo xtask` lists the tasks. The central one is `cargo xtask test`: it starts a throwaway
//! PostgreSQL with a real PgBouncer in front, runs the workspace's tests against them and always stops
//! both again. The clusters and PgBouncer themselves come from `pgconn-testkit`, which the tests use for
//! private ones of their own; xtask keeps the task dispatch, the `db` and `test` tasks, CI, and the
//! Ctrl-C/SIGTERM handling. xtask links no pgconn crate: it builds and runs the `pgconn` binary (for
//! `pgconn pgbouncer-ini`, which renders PgBouncer's configuration).

// xtask is a command-line program: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod ci;
mod db;
mod demo;
mod monitor_task;
mod newer_pgbouncer;
mod process;
mod reports;
mod scale;
mod soak;
mod test_task;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use pgconn_testkit::Interrupted;

/// `cargo xtask`: every task and its flags, in one place.
#[derive(clap::Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "pgconn's automation: build, test, benchmark, demonstrate"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(clap::Subcommand)]
enum Task {
    /// The example server connecting per request, pooled and through PgBouncer, under load, side by side
    /// (a throwaway PostgreSQL unless `DATABASE_URL` is set).
    Demo {
        /// HTTP clients, each one request at a time.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        clients: u32,
        /// Seconds of load per strategy.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
        seconds: u32,
    },
    /// Run `cargo test ARGS` (default: --workspace) against a throwaway PostgreSQL with PgBouncer in front.
    #[command(disable_help_flag = true)]
    Test {
        /// Passed to `cargo test` as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A development PostgreSQL and PgBouncer under target/pgconn-db/.
    Db {
        #[command(subcommand)]
        action: db::Action,
    },
    /// fmt, clippy, test, doc: what CI runs.
    Ci,
    /// `pgconn monitor ARGS` against `DATABASE_URL`, or the development database.
    #[command(disable_help_flag = true)]
    Monitor {
        /// Passed to `pgconn monitor` as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every performance figure side by side; writes docs/benchmarks.md.
    Bench {
        /// Fewer and shorter rounds: under 2 minutes.
        #[arg(long)]
        quick: bool,
    },
    /// Connect-per-request vs PgBouncer at 150 / 1000 / 5000 clients on `max_connections = 100`.
    Scale {
        /// Shorter runs.
        #[arg(long)]
        quick: bool,
    },
    /// Both tiers under load with PostgreSQL and PgBouncer restarts, terminated backends and (as root)
    /// network blackholes at random; fails when a request outlives its bound, a tier does not recover, or
    /// file descriptors, threads or memory grow.
    Soak(soak::Args),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        // `cargo xtask` alone lists the tasks, successfully.
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return ExitCode::SUCCESS;
    }
    let cli = <Cli as clap::Parser>::parse();
    match run(cli.task) {
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

/// Runs `task`; returns the exit code.
fn run(task: Task) -> Result<u8> {
    // Before any child is started, so that Ctrl-C or SIGTERM always leads through the cleanup.
    process::install_interrupt_handler()?;
    match task {
        Task::Demo { clients, seconds } => demo::run(clients, seconds),
        Task::Test { args } => test_task::run(&args),
        Task::Db { action } => db::run(action),
        Task::Ci => ci::run(),
        Task::Monitor { args } => monitor_task::run(&args),
        Task::Scale { quick } => scale::run(quick),
        Task::Bench { quick } => bench::run(quick),
        Task::Soak(args) => soak::run(&args),
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

/// Where `cargo build -p pgconn-cli` puts the `pgconn` binary: `$CARGO_TARGET_DIR/debug/pgconn` (or
/// `$CARGO_BUILD_TARGET_DIR`; a relative one is taken from the workspace root, where xtask runs cargo),
/// else `target/debug/pgconn` in the workspace.
pub(crate) fn pgconn_bin() -> PathBuf {
    target_dir().join("debug").join("pgconn")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (or `$CARGO_BUILD_TARGET_DIR`; a relative one is taken
/// from the workspace root), else `target` in the workspace.
pub(crate) fn target_dir() -> PathBuf {
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .into_iter()
        .find_map(|var| std::env::var_os(var).filter(|dir| !dir.is_empty()))
        .map_or_else(|| workspace_root().join("target"), |dir| workspace_root().join(dir))
}

/// Builds the `pgconn` binary (`cargo build -p pgconn-cli`, debug) and returns its absolute path
/// ([`pgconn_bin`]).
pub(crate) fn build_pgconn() -> Result<PathBuf> {
    build_pgconn_profile(false)
}

/// Builds `pgconn` in the release profile, for measurements; returns its absolute path.
pub(crate) fn build_pgconn_release() -> Result<PathBuf> {
    build_pgconn_profile(true)
}

fn build_pgconn_profile(release: bool) -> Result<PathBuf> {
    build_bin("pgconn-cli", "pgconn", release).context(
        "`pgconn` is needed: its `pgconn pgbouncer-ini` renders PgBouncer's configuration, and the \
         benchmarks and the demo run it",
    )
}

/// Builds the binary `bin` of `package` (`--release` or debug) and returns the path of the executable, as
/// cargo reports it (`--message-format=json`): right whatever the target directory or profile settings.
pub(crate) fn build_bin(package: &str, bin: &str, release: bool) -> Result<PathBuf> {
    let profile = if release { " --release" } else { "" };
    let what = format!("cargo build -p {package} --bin {bin}{profile}");
    eprintln!("xtask: {what}");
    // Cargo's messages go to a file: through a pipe they could fill it while `process::run` polls.
    let messages = std::env::temp_dir().join(format!("xtask-build-{bin}-{}.json", std::process::id()));
    let file =
        std::fs::File::create(&messages).with_context(|| format!("cannot create {}", messages.display()))?;
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--package", package, "--bin", bin, "--message-format=json-render-diagnostics"])
        .current_dir(workspace_root())
        .stdout(file);
    if release {
        cmd.arg("--release");
    }
    let status = process::run(&mut cmd, &what);
    let text = std::fs::read_to_string(&messages);
    let _ = std::fs::remove_file(&messages);
    let status = status?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    let text = text.with_context(|| format!("cannot read cargo's messages from {}", messages.display()))?;
    executable_of(&text, bin).with_context(|| format!("{what} succeeded but named no executable `{bin}`"))
}

/// The executable of the binary target `bin` in cargo's JSON messages.
fn executable_of(messages: &str, bin: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .filter(|m| m["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "bin")))
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Task};

    fn parse(args: &[&str]) -> Task {
        let all = std::iter::once("cargo xtask").chain(args.iter().copied());
        Cli::try_parse_from(all).unwrap_or_else(|e| panic!("{args:?}: {e}")).task
    }

    #[test]
    fn test_and_monitor_pass_their_arguments_on_as_they_are() {
        let args = ["-p", "pgconn-tests", "--test", "it", "--", "pool::", "--nocapture"];
        let Task::Test { args: passed } = parse(&[&["test"][..], &args[..]].concat()) else {
            panic!("not test")
        };
        assert_eq!(passed, args);
        let Task::Test { args: passed } = parse(&["test"]) else { panic!("not test") };
        assert!(passed.is_empty());
        let Task::Monitor { args: passed } = parse(&["monitor", "--watch", "--help"]) else {
            panic!("not monitor")
        };
        assert_eq!(passed, ["--watch", "--help"]);
    }

    #[test]
    fn flags_are_checked() {
        assert!(matches!(parse(&["soak", "--minutes", "3"]), Task::Soak(_)));
        assert!(matches!(parse(&["bench", "--quick"]), Task::Bench { quick: true }));
        assert!(matches!(parse(&["demo"]), Task::Demo { clients: 100, seconds: 15 }));
        for bad in
            [&["soak", "--minutes", "0"][..], &["demo", "--clients", "none"], &["db", "bogus"], &["nope"]]
        {
            let all = std::iter::once("cargo xtask").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(all).is_err(), "{bad:?}");
        }
    }
}
