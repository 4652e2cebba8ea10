//! Snapshots: plain data read from the server and from a pool, the inputs of the health model.

use std::collections::BTreeMap;
use std::time::Duration;

use pgconn_pool::{Leak, Pool, PoolMetrics, PoolState};
use serde::{Deserialize, Serialize};

/// One client backend of the server, as `pg_stat_activity` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// Server process id.
    pub pid: i32,
    /// `active`, `idle`, `idle in transaction`, ...; `unknown` when the monitor's role may not see it
    /// (grant it `pg_monitor`).
    pub state: String,
    /// Seconds since the session started.
    pub age_s: f64,
    /// Seconds in its idle state, for idle states.
    pub idle_s: Option<f64>,
    /// Its role.
    pub user: String,
    /// Its `application_name` (pgconn's pools: `pgconn` unless configured).
    pub application_name: String,
}

/// Where query statistics came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuerySource {
    /// `pg_stat_statements`: calls and execution time per statement (errors from `pg_stat_database`).
    PgStatStatements,
    /// `pg_stat_database`: transactions, rollbacks and active time of this database.
    PgStatDatabase,
}

/// Query statistics of the database, cumulative since the server's statistics were reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryStats {
    /// Where they came from.
    pub source: QuerySource,
    /// Statements (`pg_stat_statements`) or transactions (`pg_stat_database`).
    pub total_queries: u64,
    /// Rolled-back transactions (PostgreSQL counts no failed statements).
    pub errors: u64,
    /// Mean execution time per statement, or active time per transaction; `None` when nothing ran.
    pub avg_query_time_ms: Option<f64>,
}

/// Who holds some of the server's connections: one application name and role, how many, in which states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationCount {
    /// `application_name` (empty when the client set none).
    pub application_name: String,
    /// The role.
    pub user: String,
    /// Client backends.
    pub count: u32,
    /// By state; `unknown` for connections whose detail the monitor's role may not see.
    pub states: BTreeMap<String, u32>,
}

/// Groups client backends by application name and role, largest first (then by name).
pub(crate) fn by_application(backends: &[Backend]) -> Vec<ApplicationCount> {
    let mut groups: BTreeMap<(String, String), ApplicationCount> = BTreeMap::new();
    for backend in backends {
        let key = (backend.application_name.clone(), backend.user.clone());
        let group = groups.entry(key).or_insert_with(|| ApplicationCount {
            application_name: backend.application_name.clone(),
            user: backend.user.clone(),
            count: 0,
            states: BTreeMap::new(),
        });
        group.count += 1;
        *group.states.entry(backend.state.clone()).or_insert(0) += 1;
    }
    let mut list: Vec<ApplicationCount> = groups.into_values().collect();
    list.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.application_name, &a.user).cmp(&(&b.application_name, &b.user)))
    });
    list
}

/// What the server said about itself, from one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSnapshot {
    /// The database probed.
    pub database: String,
    /// `max_connections`.
    pub max_connections: u32,
    /// Slots only superusers (and, on PostgreSQL 16 and later, roles with `pg_use_reserved_connections`)
    /// may take: `superuser_reserved_connections` plus `reserved_connections`.
    pub reserved_connections: u32,
    /// Client backends on the whole server: counted in `pg_stat_activity` when the monitor's role may read
    /// all of it (`pg_read_all_stats`, part of `pg_monitor`), else `pg_stat_database.numbackends` summed,
    /// which every role may read (and which counts autovacuum and parallel workers too).
    pub server_connections: u32,
    /// Connections the monitor's role cannot see in detail (state, database): 0 with `pg_monitor`.
    pub connections_hidden: u32,
    /// Who holds the server's client backends, largest first (those hidden in detail as state `unknown`).
    pub by_application: Vec<ApplicationCount>,
    /// This database's client backends, the monitor's own included.
    pub connections: Vec<Backend>,
    /// The monitor's own backend.
    pub backend_pid: i32,
    /// How long the monitor's own connection has been open.
    pub connection_age: Duration,
    /// Query statistics, if they could be read.
    pub query_stats: Option<QueryStats>,
}

impl ServerSnapshot {
    /// The slots ordinary roles may use: `max_connections` less the reserved ones.
    pub fn usable_connections(&self) -> u32 {
        self.max_connections.saturating_sub(self.reserved_connections)
    }
}

/// The outcome of probing the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerView {
    /// The probe ran.
    Reached(ServerSnapshot),
    /// The server refused the monitor's connection because every slot is taken.
    Full {
        /// The server's words.
        message: String,
    },
    /// The server could not be reached or refused for another reason (down, wrong password).
    Unreachable {
        /// The error's kind (`connect_failed`, `auth_failed`, ...).
        kind: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// A live pool's state, metrics and suspected leaks at one instant.
///
/// Read back from JSON, the metrics' `waiting` (not written: it is the state's) is the state's again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PoolSnapshotJson")]
pub struct PoolSnapshot {
    /// Size, idle, in use, waiting.
    #[serde(flatten)]
    pub state: PoolState,
    /// Counters and latency distributions since the pool was built.
    #[serde(flatten)]
    pub metrics: PoolMetrics,
    /// Connections held past the leak threshold now.
    pub suspected_leaks: Vec<Leak>,
}

/// [`PoolSnapshot`] as its JSON has it.
#[derive(Deserialize)]
struct PoolSnapshotJson {
    #[serde(flatten)]
    state: PoolState,
    #[serde(flatten)]
    metrics: PoolMetrics,
    suspected_leaks: Vec<Leak>,
}

impl From<PoolSnapshotJson> for PoolSnapshot {
    fn from(json: PoolSnapshotJson) -> Self {
        let PoolSnapshotJson { state, mut metrics, suspected_leaks } = json;
        metrics.waiting = state.waiting;
        PoolSnapshot { state, metrics, suspected_leaks }
    }
}

impl PoolSnapshot {
    /// Reads `pool` (without changing it).
    pub fn of(pool: &Pool) -> PoolSnapshot {
        PoolSnapshot { state: pool.state(), metrics: pool.metrics(), suspected_leaks: pool.suspected_leaks() }
    }
}

/// The thresholds of the health model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Utilization above this is WARNING (0.80).
    pub utilization_warning: f64,
    /// Utilization above this is CRITICAL (0.95).
    pub utilization_critical: f64,
    /// Average query time above this is WARNING (100 ms).
    pub query_time_warning_ms: f64,
    /// Average query time above this is CRITICAL (500 ms).
    pub query_time_critical_ms: f64,
    /// Error rate above this is WARNING (1%).
    pub error_rate_warning: f64,
    /// Error rate above this is CRITICAL (5%).
    pub error_rate_critical: f64,
    /// Idle connections above this share of the pool (or of the database's connections) is WARNING (50%).
    pub idle_share_warning: f64,
    /// A connection idle longer than this is counted and alerted on (5 minutes).
    pub idle_threshold: Duration,
    /// A PgBouncer client waiting longer than this for a server connection is WARNING (1 s).
    pub pgbouncer_maxwait_warning: Duration,
    /// ... and CRITICAL above this (5 s).
    pub pgbouncer_maxwait_critical: Duration,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            utilization_warning: 0.80,
            utilization_critical: 0.95,
            query_time_warning_ms: 100.0,
            query_time_critical_ms: 500.0,
            error_rate_warning: 0.01,
            error_rate_critical: 0.05,
            idle_share_warning: 0.50,
            idle_threshold: Duration::from_secs(300),
            pgbouncer_maxwait_warning: Duration::from_secs(1),
            pgbouncer_maxwait_critical: Duration::from_secs(5),
        }
    }
}

/// Counts backends by state, in name order.
pub(crate) fn by_state(backends: &[Backend]) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for backend in backends {
        *counts.entry(backend.state.clone()).or_insert(0) += 1;
    }
    counts
}

/// One row of a PgBouncer `SHOW` command: PgBouncer's column names, numbers as numbers.
pub type PgBouncerRow = BTreeMap<String, serde_json::Value>;

/// What PgBouncer's admin console says, from one probe (its own admin pseudo-database left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PgBouncerSnapshot {
    /// `SHOW POOLS`: clients and server connections per database and user.
    pub pools: Vec<PgBouncerRow>,
    /// `SHOW STATS`: totals and averages per database.
    pub stats: Vec<PgBouncerRow>,
    /// `SHOW DATABASES`: each database's `pool_size` and `reserve_pool`, among others.
    pub databases: Vec<PgBouncerRow>,
}

impl PgBouncerSnapshot {
    /// A numeric column of a row, 0 when absent or not a number.
    pub fn number(row: &PgBouncerRow, column: &str) -> f64 {
        row.get(column).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
    }

    /// A text column of a row, empty when absent.
    pub fn text<'a>(row: &'a PgBouncerRow, column: &str) -> &'a str {
        row.get(column).and_then(serde_json::Value::as_str).unwrap_or("")
    }
}

/// The outcome of probing PgBouncer's admin console.
#[derive(Debug, Clone, PartialEq)]
pub enum PgBouncerView {
    /// The probe ran.
    Reached(PgBouncerSnapshot),
    /// The admin console could not be read.
    Unreachable {
        /// What went wrong.
        message: String,
    },
}
