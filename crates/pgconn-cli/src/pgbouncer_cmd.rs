//! `pgconn pgbouncer-ini [--auth-file PATH]`: the `pgbouncer.ini` for these settings, and its userlist.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::EXIT_INVALID;

/// `pgconn pgbouncer-ini` options.
#[derive(clap::Args)]
pub(crate) struct IniArgs {
    /// Write the userlist (user and password, mode 0600) to this file, and point `auth_file` at it.
    #[arg(long)]
    auth_file: Option<PathBuf>,
}

pub(crate) fn run(args: &IniArgs) -> anyhow::Result<ExitCode> {
    let Some(settings) = crate::settings_from_env() else { return Ok(ExitCode::from(EXIT_INVALID)) };
    let auth_file = match &args.auth_file {
        Some(path) => {
            let path = absolute(path)?;
            write_private(&path, &pgconn_config::render_pgbouncer_userlist(&settings))?;
            Some(path)
        }
        None => None,
    };
    crate::out(pgconn_config::render_pgbouncer_ini(&settings, auth_file.as_deref()).trim_end())?;
    Ok(ExitCode::SUCCESS)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Writes `text` to `path` readable by its owner only (mode 0600), whatever the file was before.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write the auth file {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private (mode 0600)", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write the auth file {}", path.display()))
}
