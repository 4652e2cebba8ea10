//! Clusters (and the `PgBouncer` processes in front of them) that a process left behind when it died without
//! dropping them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::cluster::{POSTGRES_STOP, TEMP_PREFIX, is_postgres_for};

/// Removes the clusters that [`Cluster::start_temp`](crate::Cluster::start_temp) left in `parent` because the process that started
/// them died without dropping them (killed by a signal, aborted): `pgconn-test-<pid>-*` directories whose
/// `<pid>` no longer runs. A PgBouncer still running in front of one (recorded in a `pgbouncer*/`
/// directory, see [`stop_pgbouncers_in`](crate::stop_pgbouncers_in)) and a postmaster still running on it
/// (its `data/postmaster.pid`, checked with [`is_postgres_for`](crate::is_postgres_for)) are stopped first. Directories of
/// running processes are left alone, so this is safe while other test runs go on. Returns the
/// directories removed; when some could not be removed, the others still are and the error lists the
/// failures.
///
/// `cargo xtask test` calls it for the temporary directory and `/tmp` before and after the tests, so that
/// an interrupted run leaves no cluster behind.
pub fn remove_abandoned_clusters(parent: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for entry in crate::host::dir_entries(parent)? {
        let name = entry.file_name();
        let Some(creator) = name
            .to_str()
            .and_then(|name| name.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        // A directory, not a symlink to one; and its creator gone (a zombie still counts as running).
        let is_dir = fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir());
        if !is_dir || creator == 0 || Path::new(&format!("/proc/{creator}")).exists() {
            continue;
        }
        match remove_abandoned(&dir) {
            Ok(()) => removed.push(dir),
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} abandoned cluster(s) in {} could not be removed ({} were): {}",
            failures.len(),
            parent.display(),
            removed.len(),
            failures.join("; ")
        );
    }
    Ok(removed)
}

/// Stops the PgBouncer processes and the postmaster still running on the abandoned cluster `dir`, if
/// any, and removes `dir`.
fn remove_abandoned(dir: &Path) -> Result<()> {
    crate::pgbouncer::stop_pgbouncers_in(dir)?;
    let data_dir = dir.join("data");
    let postmaster = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        .filter(|&pid| is_postgres_for(pid, &data_dir));
    if let Some(pid) = postmaster {
        crate::stop_pid(pid, POSTGRES_STOP, || is_postgres_for(pid, &data_dir))?;
    }
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}
