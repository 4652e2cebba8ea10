//! The `pgconn` binary, run as operators run it: environment in, text or JSON and an exit code out.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod config;
mod deploy;
mod load;
mod monitor;
mod pgbouncer;
mod secrets;

use std::process::Command;

/// What one run of `pgconn` printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `pgconn ARGS` with exactly `env` as its environment.
fn pgconn(args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_pgconn"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}
