//! What the cluster, the standby and PgBouncer share as guarded server processes: a free port, a start
//! that tries another port when the chosen one was taken meanwhile, the tail of a log for errors, and the
//! URL encoding of their logins. Each server keeps only its own specifics (`cluster.rs`, `standby.rs`,
//! `pgbouncer.rs`); each is stopped on `Drop` through [`crate::GuardedChild`] or [`crate::stop_pid`].

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::TcpListener;
use std::path::Path;

use anyhow::{Context as _, Result};

/// Ports tried when each chosen one was taken meanwhile by another process.
const START_ATTEMPTS: u32 = 4;

/// How many lines of a log an error quotes.
const LOG_TAIL_LINES: usize = 30;

/// How one start of a server went.
pub(crate) enum Launch<T> {
    /// It runs and answers.
    Running(T),
    /// It exited while starting: the log lines it wrote meanwhile, and the error to give when another
    /// port would not help.
    Exited { log: String, error: anyhow::Error },
}

/// Starts a server on a free port with `start`, again on another port when its log says the one chosen
/// was taken meanwhile (`report` is told), at most [`START_ATTEMPTS`] times.
pub(crate) fn on_a_free_port<T>(
    report: impl Fn(&str),
    mut start: impl FnMut(u16) -> Result<Launch<T>>,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        match start(port)? {
            Launch::Running(server) => return Ok(server),
            Launch::Exited { log, .. }
                if log.contains("Address already in use") && attempt < START_ATTEMPTS =>
            {
                report(&format!("port {port} was taken meanwhile, trying another"));
            }
            Launch::Exited { error, .. } => return Err(error),
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1 (bind port 0, read the port, let go).
pub(crate) fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).context("cannot bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr().context("cannot read the address of a bound socket")?.port())
}

/// The last lines of the log file `path` from byte `from` on, for error messages.
pub(crate) fn log_tail(path: &Path, from: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(err) => format!("(cannot read the log: {err})"),
    }
}

/// Percent-encodes every byte except the URL-unreserved `A-Z a-z 0-9 - . _ ~`.
pub(crate) fn percent_encode(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}
