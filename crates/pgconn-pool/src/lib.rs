//! The PostgreSQL connection pool that thread-per-request servers link into: r2d2 over blocking connections
//! ([`Client`]: `tokio-postgres` driven on the calling thread, without an async runtime), configured
//! entirely by [`pgconn_config::Settings`] (that is, by the environment).
//!
//! A server that opens a connection per request pays a handshake every time and, at a few hundred
//! concurrent requests, meets `sorry, too many clients already`. A [`Pool`] keeps connections for
//! `DB_CONN_MAX_AGE` and adds what bare r2d2 + `r2d2_postgres` lack:
//!
//! - every connect, handshake and authentication included, is bounded by `DB_CONNECT_TIMEOUT`;
//! - each connection has its own deadline, `DB_CONN_MAX_AGE` minus up to 2.5% of random jitter, and is
//!   never handed out past it;
//! - a connection goes back to the pool only in the state of a new one: an open or failed transaction is
//!   rolled back, changed session state is reset (`DISCARD ALL`, direct tier), a connection whose borrower
//!   panicked or that failed in use is closed; a request that changed nothing pays nothing for this;
//! - a connection the server closed while idle is found at checkout with a non-blocking look at its
//!   socket and replaced before any statement is sent; validation has a deadline, and is skipped for a
//!   connection returned in the last 500 ms, so the steady-state checkout makes no network round trip;
//! - [`PooledConn::transaction`] commits explicitly and rolls back on drop;
//! - building the pool, or a checkout that cannot get a connection, reports the real cause (wrong
//!   password, server full, unreachable) as a typed [`Error`] with an [`ErrorKind`];
//! - the query API never names a prepared statement, so it works behind PgBouncer in transaction mode;
//! - metrics ([`PoolMetrics`]) and leak warnings that are cheap enough to leave on.
//!
//! `DB_CONN_MAX_AGE=0` gives the baseline through the same API: a connection per checkout, closed on return.
//!
//! ```no_run
//! use pgconn_pool::Pool;
//!
//! let settings = pgconn_config::Settings::from_env()?;
//! let pool = Pool::new(&settings)?;
//! // In each request handler thread:
//! let mut conn = pool.get()?;
//! let row = conn.query_one("SELECT $1::int + 1", &[&41_i32])?;
//! assert_eq!(row.get::<_, i32>(0), 42);
//! let mut tx = conn.transaction()?;
//! tx.execute("INSERT INTO visits (at) VALUES (now())", &[])?;
//! tx.commit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod clock;
mod connect;
mod deadline;
mod driver;
mod error;
mod lifecycle;
mod manager;
mod metrics;
mod parking;
mod pool;
mod session;
mod socket;
mod sql;
mod stripes;
mod tls;
mod txmode;
mod watch;

pub use cache::PREPARE_THRESHOLD;
pub use connect::{
    KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_RETRIES, MAX_ABANDONED, TCP_USER_TIMEOUT,
    abandoned_connects, check_tls, connect,
};
pub use deadline::WATCHDOG_PERIOD;
pub use driver::{CancelToken, Client, ClientTransaction, CopyInWriter, CopyOutReader};
pub use error::{Error, ErrorKind, describe as describe_postgres_error};
pub use manager::{MAX_AGE_JITTER, PEEK_BYPASS, VALIDATION_BYPASS, VALIDATION_TIMEOUT};
pub use metrics::{
    Buckets, ClosedCounts, Leak, PoolMetrics, Quantiles, ResetCounts, StatementCacheCounts, WAIT_BUCKETS_MS,
    quantiles,
};
pub use parking::PARK_LIMIT;
pub use pool::{IDLE_TIMEOUT, Pool, PoolState, PooledConn, SqlArrayElement, SqlParam, SqlType, Transaction};
pub use postgres::types::Type;
pub use postgres::{Row, SimpleQueryMessage};
