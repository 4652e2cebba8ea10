//! libpq's password file (`~/.pgpass`, `PGPASSFILE`, `passfile`) and the process's own user, libpq's
//! defaults for `user` and for the home directory.
//!
//! The rules are libpq 15's `passwordFromFile`: lines `hostname:port:database:username:password`; `#`
//! starts a comment line; `*` matches anything in the first four fields; `\` escapes `:` and `\`; the
//! first matching line wins. A host that is empty or libpq's default socket directory matches
//! `localhost`; an empty port matches 5432. The file is ignored, with a warning, unless it is a plain
//! file that neither group nor others may access (mode 0600 or less).

#![allow(unsafe_code)] // `getpwuid_r`, `geteuid`: see `os_user`.

use std::ffi::CStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::conn::DEFAULT_SOCKET_DIR;

/// A password found in a password file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) password: String,
    /// Its line, counted from 1.
    pub(crate) line: usize,
}

/// The first line of `path` matching `host`, `port`, `dbname` and `user`, or `None` (no file, no match,
/// or a file ignored with a warning).
pub(crate) fn lookup(path: &Path, host: &str, port: u16, dbname: &str, user: &str) -> Option<Found> {
    if dbname.is_empty() || user.is_empty() {
        return None;
    }
    let host = if host.is_empty() || host == DEFAULT_SOCKET_DIR { "localhost" } else { host };
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() {
        log::warn!("password file {} is not a plain file; ignored", path.display());
        return None;
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "password file {} has group or world access; permissions should be u=rw (0600) or less \
             (chmod 0600 {}); ignored",
            path.display(),
            path.display()
        );
        return None;
    }
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            log::warn!("password file {} cannot be read ({e}); ignored", path.display());
            return None;
        }
    };
    let port = port.to_string();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let rest = Some(line)
            .and_then(|t| matches(t, host))
            .and_then(|t| matches(t, &port))
            .and_then(|t| matches(t, dbname))
            .and_then(|t| matches(t, user));
        if let Some(rest) = rest {
            return Some(Found { password: unescape(rest), line: i + 1 });
        }
    }
    None
}

/// libpq's `pwdfMatchesString`: the rest of the line after a field matching `token`.
fn matches<'a>(field: &'a str, token: &str) -> Option<&'a str> {
    if let Some(rest) = field.strip_prefix("*:") {
        return Some(rest);
    }
    let mut chars = field.char_indices();
    let mut token = token.chars();
    while let Some((i, mut c)) = chars.next() {
        let mut escaped = false;
        if c == '\\' {
            match chars.next() {
                Some((_, next)) => {
                    c = next;
                    escaped = true;
                }
                None => return None,
            }
        }
        let expected = token.clone().next();
        if c == ':' && !escaped && expected.is_none() {
            return Some(&field[i + 1..]);
        }
        if expected != Some(c) {
            return None;
        }
        token.next();
    }
    None
}

/// The password field: up to an unescaped `:`, `\` removed before any character.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// The effective user's name and home directory from the system's user database (libpq's default user
/// and, without `HOME`, its home directory), or `None` when the user has no entry.
pub(crate) fn os_user() -> Option<(String, PathBuf)> {
    // SAFETY: geteuid cannot fail. getpwuid_r writes into `entry` and `buf`, both owned here and large
    // enough (it reports ERANGE otherwise, and we retry larger); `result` is either null or `&entry`,
    // whose strings point into `buf`, which outlives every read below.
    unsafe {
        let uid = libc::geteuid();
        let mut size = 1024usize;
        loop {
            let mut buf = vec![0 as libc::c_char; size];
            let mut entry: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwuid_r(uid, &raw mut entry, buf.as_mut_ptr(), buf.len(), &raw mut result);
            if rc == libc::ERANGE && size < 1 << 20 {
                size *= 4;
                continue;
            }
            if rc != 0 || result.is_null() || entry.pw_name.is_null() {
                return None;
            }
            let name = CStr::from_ptr(entry.pw_name).to_string_lossy().into_owned();
            let home = if entry.pw_dir.is_null() {
                PathBuf::new()
            } else {
                PathBuf::from(CStr::from_ptr(entry.pw_dir).to_string_lossy().into_owned())
            };
            return Some((name, home));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn file(name: &str, content: &str, mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgconn-config-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn libpq_matching_rules() {
        let path = file(
            "rules",
            "# comment\n\
             db.internal:5432:app:alice:first\n\
             db.internal:*:*:alice:second\n\
             localhost:5432:app:bob:sock\\:et\n\
             h\\:x:6000:*:*:esc\\\\aped:rest\n\
             *:*:*:*:fallback\r\n",
            0o600,
        );
        let found = |host, port, db, user| lookup(&path, host, port, db, user).map(|f| (f.password, f.line));
        assert_eq!(found("db.internal", 5432, "app", "alice"), Some(("first".into(), 2)));
        assert_eq!(found("db.internal", 6000, "other", "alice"), Some(("second".into(), 3)));
        // An empty host and the default socket directory match `localhost`.
        assert_eq!(found("", 5432, "app", "bob"), Some(("sock:et".into(), 4)));
        assert_eq!(found(DEFAULT_SOCKET_DIR, 5432, "app", "bob"), Some(("sock:et".into(), 4)));
        assert_eq!(found("/tmp", 5432, "app", "bob"), Some(("fallback".into(), 6)));
        assert_eq!(found("h:x", 6000, "d", "u"), Some(("esc\\aped".into(), 5)));
        assert_eq!(found("other", 1, "d", "u"), Some(("fallback".into(), 6)), "CR stripped");
        assert_eq!(found("other", 1, "", "u"), None, "no database name, no lookup");
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        let path = file("open", "*:*:*:*:pw\n", 0o640);
        assert_eq!(lookup(&path, "h", 5432, "d", "u"), None);
        let path = file("private", "*:*:*:*:pw\n", 0o400);
        assert_eq!(lookup(&path, "h", 5432, "d", "u").map(|f| f.password), Some("pw".into()));
        assert_eq!(lookup(Path::new("/nonexistent/pgpass"), "h", 5432, "d", "u"), None);
    }

    #[test]
    fn the_os_user_is_known() {
        let (name, _home) = os_user().expect("this process's user has a passwd entry");
        assert!(!name.is_empty());
    }
}
