//! The report: one type for the CLI and for a server's `/health`, built from snapshots.

use std::collections::BTreeMap;
use std::time::SystemTime;

use pgconn_config::Settings;
use serde::{Deserialize, Serialize};

use crate::health::{Alert, Status, assess_pgbouncer, assess_with, combine, utilization};
use crate::model::{
    ApplicationCount, Backend, PgBouncerRow, PgBouncerView, PoolSnapshot, QueryStats, ServerView, Thresholds,
    by_state,
};
use crate::window::Rates;

/// What the report is about, beyond the snapshots.
#[derive(Debug, Clone)]
pub struct Context {
    /// The database's name.
    pub database: String,
    /// `DB_CONN_MAX_AGE`: `None` when unlimited, `Some(0)` when not persistent.
    pub conn_max_age_s: Option<u64>,
    /// The health model's thresholds.
    pub thresholds: Thresholds,
}

impl Context {
    /// The context for `settings` with the default thresholds.
    pub fn new(settings: &Settings) -> Context {
        Context {
            database: settings.database.dbname.clone(),
            conn_max_age_s: settings.conn_max_age.limit().map(|age| age.as_secs()),
            thresholds: Thresholds::default(),
        }
    }
}

/// One health report. Its JSON keys are an interface (docs/monitoring.md); `None` fields are `null`, for
/// instance when the server could not be asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// The worst alert's level (`HEALTHY` when none; `UNKNOWN` when the server could not be asked).
    pub status: Status,
    /// When the report was made, RFC 3339 in UTC.
    pub timestamp: String,
    /// The database's name.
    pub database: String,
    /// `DB_CONN_MAX_AGE` in seconds; `null` when unlimited, `0` when not persistent.
    pub conn_max_age_s: Option<u64>,
    /// Client backends on the whole server.
    pub server_connections: Option<u32>,
    /// Client backends on this database.
    pub database_connections: Option<u32>,
    /// The server's `max_connections`.
    pub max_connections: Option<u32>,
    /// Slots ordinary roles may use: `max_connections` less `superuser_reserved_connections` (and
    /// `reserved_connections` on PostgreSQL 16 and later).
    pub usable_connections: Option<u32>,
    /// `server_connections / usable_connections × 100` (above 100 when superusers hold reserved slots).
    pub utilization_percent: Option<f64>,
    /// Connections the monitor's role cannot see in detail; grant it `pg_monitor` to see them. 0 when it
    /// sees everything.
    pub connections_hidden: Option<u32>,
    /// Who holds the server's connections: `{application_name, user, count, states}`, largest first.
    pub by_application: Vec<ApplicationCount>,
    /// The monitor's own backend.
    pub backend_pid: Option<i32>,
    /// How long the monitor's own connection has been open.
    pub connection_age_s: Option<f64>,
    /// This database's client backends by state.
    pub connections_by_state: BTreeMap<String, u32>,
    /// This database's connections idle longer than the idle threshold.
    pub idle_over_threshold: u32,
    /// The idle threshold, in seconds.
    pub idle_threshold_s: u64,
    /// Query statistics, saying where they came from.
    pub query_stats: Option<QueryStats>,
    /// Alerts, worst first.
    pub alerts: Vec<Alert>,
    /// This database's client backends.
    pub connections: Vec<Backend>,
    /// The in-process pool, when the report was made from one.
    pub pool: Option<PoolSnapshot>,
    /// What happened in the window the alerts judged (`window_s`, `pool`, `server`); `null` for a report
    /// judged since the start.
    pub rates: Option<Rates>,
    /// PgBouncer's pools, statistics and databases, with the pgbouncer strategy; `null` otherwise.
    pub pgbouncer: Option<PgBouncerSection>,
}

/// The `pgbouncer` section of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PgBouncerSection {
    /// `SHOW POOLS`, one object per row with PgBouncer's column names.
    pub pools: Vec<PgBouncerRow>,
    /// `SHOW STATS`.
    pub stats: Vec<PgBouncerRow>,
    /// `SHOW DATABASES`.
    pub databases: Vec<PgBouncerRow>,
    /// Why the admin console could not be read, if it could not.
    pub error: Option<String>,
}

impl Report {
    /// Builds the report for these snapshots at `now`: a pure function. Counters are judged since the pool
    /// started (or the server's statistics were reset); [`Report::windowed`] judges them over a window.
    pub fn new(
        context: &Context,
        server: Option<&ServerView>,
        pool: Option<&PoolSnapshot>,
        now: SystemTime,
    ) -> Report {
        Report::windowed(context, server, pool, None, now)
    }

    /// As [`Report::new`], with error rates, checkout timeouts and query times judged over `rates`
    /// (from a [`crate::Window`]), which the report shows as `rates`.
    pub fn windowed(
        context: &Context,
        server: Option<&ServerView>,
        pool: Option<&PoolSnapshot>,
        rates: Option<&Rates>,
        now: SystemTime,
    ) -> Report {
        let (status, alerts) = assess_with(server, pool, rates, &context.thresholds);
        let mut report = Report {
            status,
            timestamp: humantime::format_rfc3339_micros(now).to_string(),
            database: context.database.clone(),
            conn_max_age_s: context.conn_max_age_s,
            server_connections: None,
            database_connections: None,
            max_connections: None,
            usable_connections: None,
            utilization_percent: None,
            connections_hidden: None,
            by_application: Vec::new(),
            backend_pid: None,
            connection_age_s: None,
            connections_by_state: BTreeMap::new(),
            idle_over_threshold: 0,
            idle_threshold_s: context.thresholds.idle_threshold.as_secs(),
            query_stats: None,
            alerts,
            connections: Vec::new(),
            pool: pool.cloned(),
            rates: rates.cloned(),
            pgbouncer: None,
        };
        if let Some(ServerView::Reached(s)) = server {
            let idle_limit = context.thresholds.idle_threshold.as_secs_f64();
            report.database.clone_from(&s.database);
            report.server_connections = Some(s.server_connections);
            report.database_connections = Some(u32::try_from(s.connections.len()).unwrap_or(u32::MAX));
            report.max_connections = Some(s.max_connections);
            report.usable_connections = Some(s.usable_connections());
            report.utilization_percent =
                Some(utilization(s.server_connections, s.usable_connections()) * 100.0);
            report.connections_hidden = Some(s.connections_hidden);
            report.by_application.clone_from(&s.by_application);
            report.backend_pid = Some(s.backend_pid);
            report.connection_age_s = Some(s.connection_age.as_secs_f64());
            report.connections_by_state = by_state(&s.connections);
            report.idle_over_threshold = u32::try_from(
                s.connections.iter().filter(|b| b.idle_s.is_some_and(|idle| idle > idle_limit)).count(),
            )
            .unwrap_or(u32::MAX);
            report.query_stats.clone_from(&s.query_stats);
            report.connections.clone_from(&s.connections);
        }
        report
    }

    /// Adds PgBouncer's view: its section and its alerts (the status follows).
    #[must_use]
    pub fn with_pgbouncer(mut self, view: &PgBouncerView, thresholds: &Thresholds) -> Report {
        let alerts = assess_pgbouncer(view, thresholds);
        self.status = combine(self.status, &alerts);
        self.alerts.extend(alerts);
        self.alerts.sort_by_key(|alert| std::cmp::Reverse(alert.level));
        self.pgbouncer = Some(match view {
            PgBouncerView::Reached(s) => PgBouncerSection {
                pools: s.pools.clone(),
                stats: s.stats.clone(),
                databases: s.databases.clone(),
                error: None,
            },
            PgBouncerView::Unreachable { message } => PgBouncerSection {
                pools: Vec::new(),
                stats: Vec::new(),
                databases: Vec::new(),
                error: Some(message.clone()),
            },
        });
        self
    }
}
