//! What can go wrong getting or using a connection, as kinds a caller can match on.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;

/// A failure of the pool or of a query through it. Every message says what happened and what to do; none
/// contains a password.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every connection was in use for the whole checkout wait.
    #[error(
        "pool exhausted: all {max_size} connections stayed in use for {}ms (DB_POOL_TIMEOUT); \
         raise DB_POOL_MAX_SIZE, shorten the work done while a connection is held, or look for leaks \
         in the log",
        waited.as_millis()
    )]
    PoolTimeout {
        /// The pool's size (`DB_POOL_MAX_SIZE`).
        max_size: u32,
        /// How long the request waited.
        waited: Duration,
    },
    /// Opening a connection took longer than `DB_CONNECT_TIMEOUT` (the server accepted but did not finish
    /// the handshake, or did not answer at all).
    #[error(
        "cannot connect to {target} within {}s (DB_CONNECT_TIMEOUT): the server did not complete the \
         connection; check that it is up and not overloaded",
        timeout.as_secs()
    )]
    ConnectTimeout {
        /// `user@host:port/dbname`.
        target: String,
        /// The bound that passed.
        timeout: Duration,
    },
    /// The server refused the connection because all of its `max_connections` slots are taken.
    #[error(
        "{target} refused the connection: too many clients already (max_connections is reached); \
         lower DB_POOL_MAX_SIZE across processes, or put PgBouncer in front (USE_PGBOUNCER=true)"
    )]
    TooManyClients {
        /// `user@host:port/dbname`.
        target: String,
        /// The server's error.
        #[source]
        source: Arc<postgres::Error>,
    },
    /// The server refused the user, password, client certificate, or host-based access rule.
    #[error(
        "authentication failed for {target}: {reason}; check the user and password in DATABASE_URL \
         (or DB_USER/DB_PASSWORD, PGUSER/PGPASSWORD, the password file), the client certificate \
         (sslcert/sslkey) if the server asks for one, and the server's pg_hba.conf"
    )]
    AuthFailed {
        /// `user@host:port/dbname`.
        target: String,
        /// The server's own words (`password authentication failed for user "app"`, `connection requires
        /// a valid client certificate`).
        reason: String,
        /// The server's error.
        #[source]
        source: Arc<postgres::Error>,
    },
    /// The server could not be reached or refused to open the session (refused, unknown host, unknown
    /// database, starting up or shutting down).
    #[error("cannot connect to {target}: {reason}")]
    ConnectFailed {
        /// `user@host:port/dbname`.
        target: String,
        /// What the server or the network said.
        reason: String,
        /// Why.
        #[source]
        source: Arc<postgres::Error>,
    },
    /// The server cancelled a statement that ran past `statement_timeout`.
    #[error("statement cancelled after the statement timeout (DB_STATEMENT_TIMEOUT)")]
    StatementTimeout {
        /// The server's error.
        #[source]
        source: Arc<postgres::Error>,
    },
    /// The server did not answer a call within `DB_QUERY_TIMEOUT` (it is stopped, or the network path is
    /// dead): the pool closed the connection under the call.
    #[error(
        "no answer from the server within {}ms (DB_QUERY_TIMEOUT): the connection was closed; the server \
         may be hung or unreachable",
        timeout.as_millis()
    )]
    QueryTimeout {
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The connection broke while in use (server restart, `pg_terminate_backend`, network); the pool
    /// closes it, and a retry gets another.
    #[error("connection lost while in use ({reason}); the pool discards it, a retry gets a new one")]
    ConnectionLost {
        /// What the server or the network said.
        reason: String,
        /// Why.
        #[source]
        source: Arc<postgres::Error>,
    },
    /// The statement needs session state, which PgBouncer's transaction (or statement) pooling cannot keep:
    /// refused before it was sent.
    #[error(
        "{what} does not work through PgBouncer in {pool_mode} mode: it would stay on whichever server \
         connection ran it and leak to other clients; {instead}"
    )]
    TransactionMode {
        /// The construct.
        what: &'static str,
        /// PgBouncer's pool mode (`PGBOUNCER_POOL_MODE`).
        pool_mode: &'static str,
        /// What to do instead.
        instead: &'static str,
    },
    /// A transaction was asked to commit after one of its statements had failed: PostgreSQL rolls such a
    /// transaction back (it answers `COMMIT` with `ROLLBACK`), and so did the pool.
    #[error(
        "the transaction was rolled back, not committed: a statement in it failed earlier; handle that \
         statement's error (or run it in a savepoint), then retry the transaction"
    )]
    RolledBack,
    /// The configuration asks for something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// Anything else the server or the driver reported (a SQL error, for instance).
    #[error("{reason}")]
    Other {
        /// What the server or the driver said.
        reason: String,
        /// The error.
        #[source]
        source: Arc<postgres::Error>,
    },
}

/// The kind of an [`Error`], as the stable names `pgconn load` and the monitor report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// [`Error::PoolTimeout`].
    PoolTimeout,
    /// [`Error::ConnectTimeout`].
    ConnectTimeout,
    /// [`Error::TooManyClients`].
    TooManyClients,
    /// [`Error::AuthFailed`].
    AuthFailed,
    /// [`Error::ConnectFailed`].
    ConnectFailed,
    /// [`Error::StatementTimeout`].
    StatementTimeout,
    /// [`Error::ConnectionLost`].
    ConnectionLost,
    /// [`Error::QueryTimeout`].
    QueryTimeout,
    /// [`Error::Unsupported`] and [`Error::Other`].
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::PoolTimeout,
        ErrorKind::ConnectTimeout,
        ErrorKind::TooManyClients,
        ErrorKind::AuthFailed,
        ErrorKind::ConnectFailed,
        ErrorKind::StatementTimeout,
        ErrorKind::ConnectionLost,
        ErrorKind::QueryTimeout,
        ErrorKind::Other,
    ];

    /// The stable snake-case name: `pool_timeout`, `connect_timeout`, `too_many_clients`, `auth_failed`,
    /// `connect_failed`, `statement_timeout`, `connection_lost`, `query_timeout`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::PoolTimeout => "pool_timeout",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::TooManyClients => "too_many_clients",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::StatementTimeout => "statement_timeout",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::QueryTimeout => "query_timeout",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// This error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::PoolTimeout { .. } => ErrorKind::PoolTimeout,
            Error::ConnectTimeout { .. } => ErrorKind::ConnectTimeout,
            Error::TooManyClients { .. } => ErrorKind::TooManyClients,
            Error::AuthFailed { .. } => ErrorKind::AuthFailed,
            Error::ConnectFailed { .. } => ErrorKind::ConnectFailed,
            Error::StatementTimeout { .. } => ErrorKind::StatementTimeout,
            Error::ConnectionLost { .. } => ErrorKind::ConnectionLost,
            Error::QueryTimeout { .. } => ErrorKind::QueryTimeout,
            Error::TransactionMode { .. }
            | Error::RolledBack
            | Error::Unsupported(_)
            | Error::Other { .. } => ErrorKind::Other,
        }
    }

    /// The server's SQLSTATE, when the server reported the error.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Error::TooManyClients { source, .. }
            | Error::AuthFailed { source, .. }
            | Error::ConnectFailed { source, .. }
            | Error::StatementTimeout { source }
            | Error::ConnectionLost { source, .. }
            | Error::Other { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The message and, after `: `, its cause, on one line: for logs and reports.
    pub fn with_cause(&self) -> String {
        let text = self.to_string();
        let Some(cause) = std::error::Error::source(self) else { return text };
        // Not when the message says it already (a reason made of the driver's words and their cause).
        let said = |e: &dyn std::error::Error| text.contains(&e.to_string());
        if said(cause) || cause.source().is_some_and(said) {
            return text;
        }
        // The driver's own errors name only their kind ("error communicating with the server", "db
        // error"): what happened is their cause, or the server's message already in the text.
        let driver = cause
            .downcast_ref::<Arc<postgres::Error>>()
            .map(AsRef::as_ref)
            .or_else(|| cause.downcast_ref::<postgres::Error>());
        if let Some(driver) = driver {
            if driver.as_db_error().is_some_and(|db| text.contains(db.message())) {
                return text;
            }
            if let Some(inner) = std::error::Error::source(driver) {
                return if said(inner) { text } else { format!("{text}: {inner}") };
            }
        }
        format!("{text}: {cause}")
    }

    /// Classifies an error from opening a connection to `target`.
    pub(crate) fn from_connect(error: postgres::Error, target: &str) -> Error {
        let target = target.to_owned();
        let source = Arc::new(error);
        match source.code() {
            Some(code) if *code == SqlState::TOO_MANY_CONNECTIONS => Error::TooManyClients { target, source },
            Some(code)
                if *code == SqlState::INVALID_PASSWORD
                    || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                let reason =
                    source.as_db_error().map_or_else(|| source.to_string(), |db| db.message().to_owned());
                Error::AuthFailed { target, reason, source }
            }
            _ => Error::ConnectFailed { target, reason: describe(&source), source },
        }
    }

    /// Classifies an error from using a connection; `closed` says whether the connection is now unusable.
    pub(crate) fn from_query(error: postgres::Error, closed: bool) -> Error {
        let source = Arc::new(error);
        let db = source.as_db_error();
        if db.is_some_and(|db| {
            *db.code() == SqlState::QUERY_CANCELED && db.message().contains("statement timeout")
        }) {
            return Error::StatementTimeout { source };
        }
        let lost_codes = [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW];
        let reason = describe(&source);
        // A FATAL (or PANIC) ends the session whatever its code: PgBouncer's "server login has been
        // failing, try again later" (08P01) after its server went away, for one.
        let fatal = db.is_some_and(|db| match db.parsed_severity() {
            Some(severity) => {
                matches!(severity, postgres::error::Severity::Fatal | postgres::error::Severity::Panic)
            }
            // PgBouncer sends only the localized severity (no `V` field): it is never translated.
            None => matches!(db.severity(), "FATAL" | "PANIC"),
        });
        if closed || fatal || source.is_closed() || source.code().is_some_and(|c| lost_codes.contains(c)) {
            return Error::ConnectionLost { reason, source };
        }
        Error::Other { reason, source }
    }

    /// Whether the connection that produced this error must not be reused.
    pub(crate) fn breaks_connection(&self) -> bool {
        matches!(self, Error::ConnectionLost { .. })
    }
}

/// One line for a driver error: the server's `SEVERITY: message` when it sent one, else the driver's
/// message with its cause (`error connecting to server: Connection refused (os error 111)`).
pub fn describe(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::driver::io_error;

    fn connect_failed(reason: &str, cause: io::Error) -> Error {
        Error::ConnectFailed {
            target: "app@db:5432/app".to_owned(),
            reason: reason.to_owned(),
            source: Arc::new(io_error(cause)),
        }
    }

    #[test]
    fn with_cause_adds_what_the_message_does_not_say_and_nothing_twice() {
        // The driver's wrapper says only its kind ("error communicating with the server"): its cause is
        // what is added.
        let attrs = connect_failed(
            "target_session_attrs=read-only, and no host's sessions are read-only",
            io::Error::new(io::ErrorKind::PermissionDenied, "database is not read only"),
        );
        assert_eq!(
            attrs.with_cause(),
            "cannot connect to app@db:5432/app: target_session_attrs=read-only, and no host's sessions are \
             read-only: database is not read only"
        );
        let refused = connect_failed(
            "error connecting to server at db:5432: Connection refused",
            io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused"),
        );
        assert_eq!(
            refused.with_cause(),
            "cannot connect to app@db:5432/app: error connecting to server at db:5432: Connection refused"
        );
        assert_eq!(Error::Unsupported("no".to_owned()).with_cause(), "no");
    }
}
