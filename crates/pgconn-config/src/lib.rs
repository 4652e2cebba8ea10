//! Environment variables to a validated, typed pgconn configuration.
//!
//! A server should learn everything about its database connections from its environment, the twelve-factor
//! way, and learn about a mistake at start-up with a message that names the variable, not at the first
//! request. This crate reads the variables of the configuration reference (`docs/configuration.md`), checks
//! every one of them, and reports all problems at once. It does no network I/O, never panics on any input,
//! and never shows a password: not in an error, a log line, `Debug` or `Display`.
//!
//! ```
//! use pgconn_config::{Settings, Strategy};
//!
//! let settings = Settings::from_vars([
//!     ("DATABASE_URL", "postgresql://app:s%40cret@db.internal/app?sslmode=require"),
//!     ("DB_CONN_MAX_AGE", "300"),
//! ])?;
//! assert_eq!(settings.strategy, Strategy::Direct);
//! assert_eq!(settings.database.primary().port, 5432);
//! assert_eq!(settings.database.password.as_ref().map(|p| p.expose()), Some("s@cret"));
//! assert!(!format!("{settings:?} {settings}").contains("s@cret"));
//!
//! let err = Settings::from_vars([("DB_NAME", "app"), ("DB_USER", "app"), ("DB_CONNECT_TIMEOUT", "ten")])
//!     .unwrap_err();
//! assert_eq!(
//!     err.problems()[0].message,
//!     r#"DB_CONNECT_TIMEOUT must be a whole number of seconds from 1 to 3600, got "ten""#
//! );
//! # Ok::<(), pgconn_config::Error>(())
//! ```

mod conn;
pub mod conninfo;
mod env;
mod error;
mod passfile;
mod pgbouncer;
mod resolve;
mod settings;
pub mod variables;

pub use conn::{
    ChannelBinding, ConnParams, DEFAULT_PORT, DEFAULT_SOCKET_DIR, Endpoint, Host, Password, Source, Sources,
    SslMode, SslRootCert, TargetSessionAttrs, Tcp,
};
pub use conninfo::render as render_url;
pub use env::{
    DEFAULT_CONN_MAX_AGE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PGBOUNCER_PORT, DEFAULT_POOL_LEAK_THRESHOLD,
    DEFAULT_POOL_MAX_SIZE, DEFAULT_POOL_MIN_IDLE, DEFAULT_POOL_TIMEOUT, DEFAULT_STATEMENT_CACHE,
    DEFAULT_STATEMENT_TIMEOUT, QUERY_TIMEOUT_GRACE, libpq_variables,
};
pub use error::{Error, Problem};
pub use pgbouncer::{
    DEFAULT_AUTH_FILE, pgbouncer_fd_need, render_ini as render_pgbouncer_ini,
    render_userlist as render_pgbouncer_userlist,
};
pub use settings::{
    ConnMaxAge, DEFAULT_APPLICATION_NAME, PgBouncerSettings, PoolMode, PoolSettings, Settings, Strategy,
};
pub use variables::VARIABLES;
