//! `pgconn`: the command-line face of pgconn.
//!
//! Exit codes: 0 success; 1 an operation failed; 2 the configuration or the command line is invalid.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program prints

mod config_cmd;
mod load_cmd;
mod monitor_cmd;
mod pgbouncer_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code when the configuration (or the command line) is invalid.
const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(name = "pgconn", version, about = "PostgreSQL connection pooling for thread-per-request servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective settings read from the environment; exit 2 if they are invalid.
    Config {
        /// Print one JSON object instead of the readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Drive the pool with N request threads, as a thread-per-request server would, and report latency,
    /// throughput and errors by kind; exit 1 if any request failed.
    Load(load_cmd::LoadArgs),
    /// Report the health of the server's connections: utilization, ages, idle connections, query
    /// statistics and alerts; once, or every interval with --watch.
    Monitor(monitor_cmd::MonitorArgs),
    /// Print a pgbouncer.ini for this environment (and with --auth-file write its userlist, mode 0600).
    #[command(name = "pgbouncer-ini")]
    PgbouncerIni(pgbouncer_cmd::IniArgs),
    /// One probe, one line; exit 0 HEALTHY, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (for Nagios and Kubernetes).
    Check,
}

/// The settings from the environment; when they are invalid, prints one line per problem on stderr (each
/// naming its variable) and returns `None`.
fn settings_from_env() -> Option<pgconn_config::Settings> {
    pgconn_config::Settings::from_env()
        .map_err(|e| {
            for problem in e.problems() {
                eprintln!("{problem}");
            }
        })
        .ok()
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            use std::io::Write;
            writeln!(buf, "pgconn: {}: {}", record.level().as_str().to_ascii_lowercase(), record.args())
        })
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config { json } => config_cmd::run(json),
        Command::Load(args) => load_cmd::run(&args),
        Command::Monitor(args) => monitor_cmd::monitor(&args),
        Command::Check => return monitor_cmd::check(),
        Command::PgbouncerIni(args) => pgbouncer_cmd::run(&args),
    };
    match result {
        Ok(code) => code,
        // The reader of stdout went away (`pgconn ... | head`): nothing more to say and no one to say it to;
        // the status a shell gives a program ended by SIGPIPE, never a success the run did not earn.
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => ExitCode::from(EXIT_STDOUT_CLOSED),
        Err(e) => {
            eprintln!("pgconn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit status when the reader of stdout went away: a shell's for a program ended by SIGPIPE.
pub(crate) const EXIT_STDOUT_CLOSED: u8 = 141;

/// Standard output's reader went away (`pgconn load --json --report-every 1 | head -3`).
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// A failed write to standard output: [`StdoutClosed`] when its reader has gone, else the error.
pub(crate) fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe { StdoutClosed.into() } else { e.into() }
}

/// Writes `text` and a newline to standard output (`println!` would panic on a closed pipe).
pub(crate) fn out(text: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush()).map_err(stdout_error)
}
