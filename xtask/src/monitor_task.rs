//! `cargo xtask monitor [ARGS]`: `pgconn monitor ARGS` against `DATABASE_URL`, or else against the
//! development database of `cargo xtask db start`.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{cargo, db, process, workspace_root};

/// Runs the monitor; returns its exit code.
pub(crate) fn run(args: &[String]) -> Result<u8> {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => match db::running_url()? {
            Some(url) => {
                eprintln!("xtask: monitoring the development database (cargo xtask db start)");
                url
            }
            None => bail!(
                "DATABASE_URL is not set and the development database is not running; set DATABASE_URL, or \
                 run `cargo xtask db start` first"
            ),
        },
    };
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace_root())
        .args(["run", "--quiet", "--release", "--package", "pgconn-cli", "--", "monitor"])
        .args(args)
        .env("DATABASE_URL", url);
    let status = process::run(&mut cmd, "cargo run -p pgconn-cli -- monitor")?;
    Ok(process::exit_code(status))
}
