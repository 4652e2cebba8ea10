//! What the machine provides: PostgreSQL's binaries, and the user to run the server as.

use std::fmt;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::signal;

/// Finds the directory holding the PostgreSQL server binaries (`initdb`, `postgres`, `pg_isready`,
/// `psql`, ...).
///
/// In order: `$PG_BINDIR`; `$PGCONN_TEST_PG_BINDIR` (set by `cargo xtask test`, so that a test's private
/// cluster runs the same binaries as the shared one); `pg_config --bindir` if it contains `initdb`; the
/// highest-numbered `/usr/lib/postgresql/*/bin` that contains `initdb` (Debian's layout).
pub fn find_bindir() -> Result<PathBuf> {
    for var in ["PG_BINDIR", crate::vars::PG_BINDIR] {
        if let Some(dir) = std::env::var_os(var) {
            let dir = PathBuf::from(dir);
            if !dir.join("initdb").is_file() {
                bail!(
                    "{var} is {} but there is no initdb in it; point it at PostgreSQL's bin directory",
                    dir.display()
                );
            }
            return Ok(dir);
        }
    }
    let pg_config = Command::new("pg_config").arg("--bindir").stderr(Stdio::null()).output();
    if let Some(out) = pg_config.ok().filter(|out| out.status.success()) {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(parse_version) else { continue };
            let bin = entry.path().join("bin");
            if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "PostgreSQL server binaries were not found (no initdb from `pg_config --bindir` or in \
             /usr/lib/postgresql/*/bin); install them (`apt-get install postgresql`) or set PG_BINDIR"
        )
    })
}

/// `"15"` -> `[15]`, `"9.6"` -> `[9, 6]`; `None` for anything else.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// The user the server processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerUser {
    /// The user running this process (not root).
    Current,
    /// Another user, by ids: the `postgres` system user when this process runs as root.
    Other {
        /// User id.
        uid: u32,
        /// Primary group id.
        gid: u32,
    },
}

impl ServerUser {
    /// The current user, or the `postgres` system user when running as root (PostgreSQL refuses root).
    pub fn detect() -> Result<Self> {
        if !signal::is_root() {
            return Ok(Self::Current);
        }
        let id = |flag: &str| -> Result<u32> {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .context("cannot run `id` to look up the postgres user")?;
            if !out.status.success() {
                bail!(
                    "PostgreSQL refuses to run as root and there is no `postgres` system user to run it as; \
                     install the postgresql package (it creates the user), `useradd --system postgres`, \
                     or run as a normal user"
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim()
                .parse()
                .with_context(|| format!("`id {flag} postgres` printed {text:?}, not a number"))
        };
        Ok(Self::Other { uid: id("-u")?, gid: id("-g")? })
    }

    /// A command for `program` that runs as this user, with `HOME` and the working directory set to
    /// `home`.
    pub fn command(self, program: &Path, home: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("HOME", home).current_dir(home);
        if let Self::Other { uid, gid } = self {
            // std drops the supplementary groups too when it switches user as root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Gives `path` to this user (does nothing for the current user).
    pub fn chown(self, path: &Path) -> Result<()> {
        if let Self::Other { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {} to uid {uid}", path.display()))?;
        }
        Ok(())
    }

    /// Whether this user can enter and write to `dir`: `test -x DIR -a -w DIR` run as the user. A
    /// directory under a mode-0700 home of root, for instance, is out of the `postgres` user's reach.
    pub fn can_use(self, dir: &Path) -> Result<bool> {
        if let Self::Current = self {
            return Ok(true);
        }
        let status = self
            .command(Path::new("test"), Path::new("/"))
            .arg("-x")
            .arg(dir)
            .args(["-a", "-w"])
            .arg(dir)
            .status()
            .context("cannot run `test` to check directory access")?;
        Ok(status.success())
    }
}

impl fmt::Display for ServerUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("the current user"),
            Self::Other { uid, .. } => write!(f, "the postgres user (uid {uid})"),
        }
    }
}

/// The entries of `dir` that can be read; none when `dir` does not exist.
pub(crate) fn dir_entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries.flatten().collect()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("cannot list {}", dir.display())),
    }
}

/// Whether the system tool `tool` (`nft`, `unshare`, `ip`, ...) is installed in one of the usual system
/// directories (root's `PATH` may differ from the caller's, so `PATH` is not used).
pub fn system_tool_installed(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|dir| Path::new(dir).join(tool).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("15") > parse_version("9.6"));
        assert_eq!(parse_version("main"), None);
    }

    #[test]
    fn the_current_user_can_use_any_directory_it_is_given() {
        assert!(ServerUser::Current.can_use(Path::new("/nonexistent")).expect("no command is run"));
    }
}
