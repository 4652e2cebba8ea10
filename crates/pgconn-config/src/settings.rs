//! The typed configuration: what every other pgconn crate reads.

use std::fmt;
use std::time::Duration;

use crate::conn::ConnParams;

/// The application name set on connections whose URL does not name one.
pub const DEFAULT_APPLICATION_NAME: &str = "pgconn";

/// The validated configuration of one process's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Whether the pool connects to PostgreSQL or to PgBouncer (`USE_PGBOUNCER`).
    pub strategy: Strategy,
    /// PostgreSQL itself (`DATABASE_URL`, or `DB_HOST`/`DB_PORT`/`DB_NAME`/`DB_USER`/`DB_PASSWORD`).
    pub database: ConnParams,
    /// Where the pool connects: `database` for the direct strategy, PgBouncer for the other.
    pub target: ConnParams,
    /// How long a connection is kept (`DB_CONN_MAX_AGE`).
    pub conn_max_age: ConnMaxAge,
    /// The bound on opening one connection, handshake and authentication included
    /// (`DB_CONNECT_TIMEOUT`, else the URL's `connect_timeout`).
    pub connect_timeout: Duration,
    /// The server-side statement timeout; `None` when off (`DB_STATEMENT_TIMEOUT=0`).
    pub statement_timeout: Option<Duration>,
    /// The client-side deadline of one call through the pool's query API, after which the connection is
    /// closed and the call fails; for a server that cannot answer at all (a stopped backend, a dead
    /// network path), where the server-side statement timeout cannot act. `None` when off
    /// (`DB_QUERY_TIMEOUT`, ms; by default the statement timeout plus 5 s, off when that is off).
    pub query_timeout: Option<Duration>,
    /// Pool sizing and the checkout wait.
    pub pool: PoolSettings,
    /// What `pgconn pgbouncer-ini` renders.
    pub pgbouncer: PgBouncerSettings,
}

impl Settings {
    /// The `application_name` the pool's connections carry: the target URL's, or `pgconn`.
    pub fn application_name(&self) -> &str {
        self.target.application_name.as_deref().unwrap_or(DEFAULT_APPLICATION_NAME)
    }

    /// The statement cache's size in effect: `DB_STATEMENT_CACHE`, except through PgBouncer in transaction
    /// or statement mode, where named statements break (PgBouncer 1.18), unless
    /// `PGBOUNCER_PREPARED_STATEMENTS` says PgBouncer handles them (1.21 and later): then 0. Also 0 when
    /// connections are not persistent (`DB_CONN_MAX_AGE=0`), where nothing would be reused.
    pub fn statement_cache(&self) -> u32 {
        let through_pgbouncer_without_them = self.strategy == Strategy::PgBouncer
            && self.pgbouncer.pool_mode != PoolMode::Session
            && !self.pgbouncer.prepared_statements;
        if through_pgbouncer_without_them || !self.persistent() { 0 } else { self.pool.statement_cache }
    }

    /// Whether connections outlive a request (`DB_CONN_MAX_AGE` is not `0`).
    pub fn persistent(&self) -> bool {
        self.conn_max_age != ConnMaxAge::PerRequest
    }

    /// The environment that parses back to these settings, passwords included.
    ///
    /// For tests and for handing the configuration to a child process; never log it.
    pub fn to_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("DATABASE_URL", crate::conninfo::render(&self.database)),
            ("DB_CONN_MAX_AGE", self.conn_max_age.to_string()),
            ("DB_CONNECT_TIMEOUT", self.connect_timeout.as_secs().to_string()),
            ("DB_STATEMENT_TIMEOUT", self.statement_timeout.map_or(0, |t| t.as_millis()).to_string()),
            ("DB_QUERY_TIMEOUT", self.query_timeout.map_or(0, |t| t.as_millis()).to_string()),
            ("DB_POOL_MAX_SIZE", self.pool.max_size.to_string()),
            ("DB_POOL_MIN_IDLE", self.pool.min_idle.to_string()),
            ("DB_POOL_TIMEOUT", self.pool.checkout_timeout.as_millis().to_string()),
            ("DB_POOL_LEAK_THRESHOLD", self.pool.leak_threshold.map_or(0, |t| t.as_millis()).to_string()),
            ("DB_STATEMENT_CACHE", self.pool.statement_cache.to_string()),
            ("PGBOUNCER_PREPARED_STATEMENTS", self.pgbouncer.prepared_statements.to_string()),
            ("USE_PGBOUNCER", (self.strategy == Strategy::PgBouncer).to_string()),
            ("PGBOUNCER_HOST", self.pgbouncer.listen_host.clone()),
            ("PGBOUNCER_PORT", self.pgbouncer.listen_port.to_string()),
            ("PGBOUNCER_POOL_MODE", self.pgbouncer.pool_mode.as_str().to_owned()),
            ("PGBOUNCER_MAX_CLIENT_CONN", self.pgbouncer.max_client_conn.to_string()),
            ("PGBOUNCER_DEFAULT_POOL_SIZE", self.pgbouncer.default_pool_size.to_string()),
            ("PGBOUNCER_MIN_POOL_SIZE", self.pgbouncer.min_pool_size.to_string()),
            ("PGBOUNCER_RESERVE_POOL_SIZE", self.pgbouncer.reserve_pool_size.to_string()),
        ];
        if self.strategy == Strategy::PgBouncer {
            env.push(("PGBOUNCER_URL", crate::conninfo::render(&self.target)));
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

/// Where the pool's connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Straight to PostgreSQL; per-session settings (statement timeout) are set on each connection.
    Direct,
    /// Through PgBouncer in transaction mode; nothing session-level is sent.
    PgBouncer,
}

impl Strategy {
    /// `direct` or `pgbouncer`, as in `pgconn config --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Direct => "direct",
            Strategy::PgBouncer => "pgbouncer",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `DB_CONN_MAX_AGE`: how long a connection is kept, Django's `CONN_MAX_AGE`.
///
/// Defaults to 600 seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnMaxAge {
    /// `0`: no persistent connections; each checkout opens one and its return closes it.
    PerRequest,
    /// A connection is replaced once it is this old.
    Limited(Duration),
    /// `none`: connections are kept until they fail.
    Unlimited,
}

impl ConnMaxAge {
    /// The age limit, `None` when unlimited; `Some(0)` for [`ConnMaxAge::PerRequest`].
    pub fn limit(self) -> Option<Duration> {
        match self {
            ConnMaxAge::PerRequest => Some(Duration::ZERO),
            ConnMaxAge::Limited(age) => Some(age),
            ConnMaxAge::Unlimited => None,
        }
    }
}

impl fmt::Display for ConnMaxAge {
    /// The variable's own spelling: `0`, whole seconds, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnMaxAge::PerRequest => f.write_str("0"),
            ConnMaxAge::Limited(age) => write!(f, "{}", age.as_secs()),
            ConnMaxAge::Unlimited => f.write_str("none"),
        }
    }
}

/// Pool sizing for one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections open at once (`DB_POOL_MAX_SIZE`). Defaults to 10.
    pub max_size: u32,
    /// Idle connections kept ready (`DB_POOL_MIN_IDLE`). Defaults to 2 (or `max_size` when smaller).
    pub min_idle: u32,
    /// How long a request waits for a free connection (`DB_POOL_TIMEOUT`, ms). Defaults to 5 s.
    pub checkout_timeout: Duration,
    /// A connection held longer than this is logged once as a possible leak, with where it was checked
    /// out; `None` when off (`DB_POOL_LEAK_THRESHOLD`, ms, `0` = off). Defaults to 30 s.
    pub leak_threshold: Option<Duration>,
    /// Statements prepared server-side and kept per connection, at most (`DB_STATEMENT_CACHE`, `0` = off).
    /// Defaults to 100. See [`Settings::statement_cache`] for the size in effect.
    pub statement_cache: u32,
}

/// PgBouncer's pooling mode (`PGBOUNCER_POOL_MODE`).
///
/// Defaults to `transaction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// A server connection per client connection, for its whole life.
    Session,
    /// A server connection per transaction: what lets thousands of clients share a few dozen.
    #[default]
    Transaction,
    /// A server connection per statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    /// PgBouncer's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The PgBouncer settings `pgconn pgbouncer-ini` renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBouncerSettings {
    /// `listen_addr` (`PGBOUNCER_HOST`). Defaults to `localhost`.
    pub listen_host: String,
    /// `listen_port` (`PGBOUNCER_PORT`). Defaults to 6432.
    pub listen_port: u16,
    /// `pool_mode`. Defaults to `transaction`.
    pub pool_mode: PoolMode,
    /// `max_client_conn`. Defaults to 1000.
    pub max_client_conn: u32,
    /// `default_pool_size`: server connections per user and database. Defaults to 25.
    pub default_pool_size: u32,
    /// `min_pool_size`. Defaults to 10.
    pub min_pool_size: u32,
    /// `reserve_pool_size`: extra server connections when clients wait. Defaults to 5.
    pub reserve_pool_size: u32,
    /// `PGBOUNCER_PREPARED_STATEMENTS`: PgBouncer is 1.21 or later with `max_prepared_statements` set, so
    /// named prepared statements work through it in transaction mode. Defaults to false (PgBouncer 1.18).
    pub prepared_statements: bool,
}

impl fmt::Display for Settings {
    /// A readable summary for `pgconn config`; never a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let describe = |params: &ConnParams| {
            let password = if params.password.is_some() { "password set" } else { "no password" };
            format!("{params} ({password}, sslmode {})", params.sslmode)
        };
        let max_age = match self.conn_max_age {
            ConnMaxAge::PerRequest => "0 (no persistent connections: one per request)".to_owned(),
            ConnMaxAge::Limited(age) => format!("{}s", age.as_secs()),
            ConnMaxAge::Unlimited => "none (unlimited)".to_owned(),
        };
        let statement_timeout =
            self.statement_timeout.map_or_else(|| "off".to_owned(), |t| format!("{}ms", t.as_millis()));
        let sources = |params: &ConnParams| {
            let mut by_source: Vec<(String, Vec<&str>)> = Vec::new();
            for (keyword, source) in params.sources.iter() {
                let source = source.to_string();
                match by_source.iter_mut().find(|(s, _)| *s == source) {
                    Some((_, keywords)) => keywords.push(keyword),
                    None => by_source.push((source, vec![keyword])),
                }
            }
            by_source
                .iter()
                .map(|(source, keywords)| format!("{} from {source}", keywords.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        writeln!(f, "strategy            {}", self.strategy)?;
        writeln!(f, "database            {}", describe(&self.database))?;
        writeln!(f, "  sources           {}", sources(&self.database))?;
        if self.strategy == Strategy::Direct {
            writeln!(f, "pool connects to    the database")?;
        } else {
            writeln!(f, "pool connects to    {} (PgBouncer)", describe(&self.target))?;
            writeln!(f, "  sources           {}", sources(&self.target))?;
        }
        writeln!(f, "application_name    {}", self.application_name())?;
        writeln!(f, "conn max age        {max_age}")?;
        writeln!(f, "connect timeout     {}s", self.connect_timeout.as_secs())?;
        writeln!(f, "statement timeout   {statement_timeout}")?;
        writeln!(
            f,
            "query timeout       {}",
            self.query_timeout
                .map_or_else(|| "off".to_owned(), |t| format!("{}ms (client side)", t.as_millis()))
        )?;
        writeln!(
            f,
            "pool                max {}, min idle {}, checkout timeout {}ms, leak threshold {}",
            self.pool.max_size,
            self.pool.min_idle,
            self.pool.checkout_timeout.as_millis(),
            self.pool.leak_threshold.map_or_else(|| "off".to_owned(), |t| format!("{}ms", t.as_millis()))
        )?;
        let cache = self.statement_cache();
        writeln!(
            f,
            "statement cache     {}",
            if cache > 0 {
                format!("{cache} statements per connection")
            } else if self.pool.statement_cache == 0 {
                "off (DB_STATEMENT_CACHE=0)".to_owned()
            } else if !self.persistent() {
                "off (DB_CONN_MAX_AGE=0: nothing is reused)".to_owned()
            } else {
                "off through PgBouncer in transaction mode (PGBOUNCER_PREPARED_STATEMENTS=true for 1.21+)"
                    .to_owned()
            }
        )?;
        write!(
            f,
            "pgbouncer.ini       pool_mode {}, max_client_conn {}, default_pool_size {}, \
             min_pool_size {}, reserve_pool_size {}",
            self.pgbouncer.pool_mode,
            self.pgbouncer.max_client_conn,
            self.pgbouncer.default_pool_size,
            self.pgbouncer.min_pool_size,
            self.pgbouncer.reserve_pool_size
        )
    }
}
