//! The health model: alerts and a status from snapshots, a pure function.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{PgBouncerSnapshot, PgBouncerView, PoolSnapshot, ServerView, Thresholds};
use crate::window::{PoolRates, Rates};

/// Overall health. Ordered: `Healthy < Warning < Critical`; `Unknown` when the server could not be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// No alert.
    Healthy,
    /// At least one WARNING alert.
    Warning,
    /// At least one CRITICAL alert.
    Critical,
    /// The server could not be reached (down, wrong password), and nothing else says worse.
    Unknown,
}

impl Status {
    /// `HEALTHY`, `WARNING`, `CRITICAL` or `UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "HEALTHY",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// The Nagios exit code: 0, 1, 2, 3.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Healthy => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad one alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        })
    }
}

/// One alert: its level, the metric it is about, and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// How bad.
    pub level: Level,
    /// The metric: `utilization`, `server_connection`, `avg_query_time`, `error_rate`, `idle_connections`,
    /// `idle_over_threshold`, `pool_waiting`, `pool_timeouts`, `pool_avg_query_time`, `pool_error_rate`,
    /// `pool_leaks`.
    pub metric: Cow<'static, str>,
    /// What it means and what to do.
    pub message: String,
}

/// Utilization of the server's connection slots: client backends over the usable slots
/// (`max_connections` less the reserved ones, [`ServerSnapshot::usable_connections`]); above 1 when
/// superusers hold reserved slots.
///
/// [`ServerSnapshot::usable_connections`]: crate::ServerSnapshot::usable_connections
#[allow(clippy::cast_precision_loss)]
pub fn utilization(server_connections: u32, usable_connections: u32) -> f64 {
    if usable_connections == 0 { 0.0 } else { f64::from(server_connections) / f64::from(usable_connections) }
}

/// The alerts for these snapshots, worst first, and the resulting status; counters judged since the pool
/// started (or the server's statistics were reset). See [`assess_with`] for a window.
pub fn assess(
    server: Option<&ServerView>,
    pool: Option<&PoolSnapshot>,
    t: &Thresholds,
) -> (Status, Vec<Alert>) {
    assess_with(server, pool, None, t)
}

/// As [`assess`], with the error rates, checkout timeouts and query times judged over `rates`' window
/// where it has them ([`crate::Window`]), so that an alert clears once its burst is out of the window.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
pub fn assess_with(
    server: Option<&ServerView>,
    pool: Option<&PoolSnapshot>,
    rates: Option<&Rates>,
    t: &Thresholds,
) -> (Status, Vec<Alert>) {
    // What the windowed alerts say of their time: only a report with rates has a window.
    let span = |r: &Rates| format!("in the last {:.0}s", r.window_s);
    let mut alerts = Vec::new();
    let mut push =
        |level, metric, message: String| alerts.push(Alert { level, metric: Cow::Borrowed(metric), message });
    let mut unknown = false;
    match server {
        Some(ServerView::Reached(s)) => {
            let usable = s.usable_connections();
            let u = utilization(s.server_connections, usable);
            let used = format!(
                "{} of {usable} usable connection slots in use ({:.1}%; max_connections {}, {} reserved for \
                 superusers)",
                s.server_connections,
                u * 100.0,
                s.max_connections,
                s.reserved_connections
            );
            if u > t.utilization_critical {
                push(
                    Level::Critical,
                    "utilization",
                    format!(
                        "{used}: new connections will soon be refused with \"too many clients\"; put PgBouncer in front (USE_PGBOUNCER=true) or lower DB_POOL_MAX_SIZE"
                    ),
                );
            } else if u > t.utilization_warning {
                push(
                    Level::Warning,
                    "utilization",
                    format!(
                        "{used}: above {:.0}%; plan for PgBouncer or fewer connections per process",
                        t.utilization_warning * 100.0
                    ),
                );
            }
            if let Some(q) = &s.query_stats {
                let (avg_ms, total, errors, when) = match rates.and_then(|r| r.server.map(|w| (w, span(r)))) {
                    Some((w, when)) => (w.avg_query_time_ms, w.queries, w.errors, when),
                    None => (
                        q.avg_query_time_ms,
                        q.total_queries,
                        q.errors,
                        "since the statistics reset".to_owned(),
                    ),
                };
                if let Some(avg) = avg_ms
                    && let Some((level, limit)) =
                        grade(avg, t.query_time_warning_ms, t.query_time_critical_ms)
                {
                    push(
                        level,
                        "avg_query_time",
                        format!("average query time {avg:.1}ms {when} is above {limit:.0}ms"),
                    );
                }
                if total > 0 {
                    let rate = errors as f64 / total as f64;
                    if let Some((level, _)) = grade(rate, t.error_rate_warning, t.error_rate_critical) {
                        let text = format!(
                            "{errors} of {total} transactions rolled back {when} ({:.2}%)",
                            rate * 100.0
                        );
                        push(level, "error_rate", text);
                    }
                }
            }
            let idle_over = s
                .connections
                .iter()
                .filter(|b| b.idle_s.is_some_and(|i| i > t.idle_threshold.as_secs_f64()))
                .count();
            if idle_over > 0 {
                push(
                    Level::Warning,
                    "idle_over_threshold",
                    format!(
                        "{idle_over} connection(s) of {} idle for more than {}s: a pool holding connections it does not use, or a leak",
                        s.database,
                        t.idle_threshold.as_secs()
                    ),
                );
            }
            if pool.is_none() {
                let total = s.connections.len();
                let idle = s.connections.iter().filter(|b| b.state == "idle").count();
                if total >= 4 && idle as f64 > t.idle_share_warning * total as f64 {
                    push(
                        Level::Warning,
                        "idle_connections",
                        format!(
                            "{idle} of {total} connections to {} are idle: pools may be larger than needed (DB_POOL_MIN_IDLE, DB_POOL_MAX_SIZE)",
                            s.database
                        ),
                    );
                }
            }
        }
        Some(ServerView::Full { message }) => push(
            Level::Critical,
            "server_connection",
            format!(
                "PostgreSQL refused the monitor's connection: every connection slot is taken ({message}); put PgBouncer in front (USE_PGBOUNCER=true) or lower DB_POOL_MAX_SIZE"
            ),
        ),
        Some(ServerView::Unreachable { kind, message }) => {
            unknown = true;
            push(Level::Warning, "server_connection", format!("cannot query PostgreSQL ({kind}): {message}"));
        }
        None => {}
    }
    if let Some(p) = pool {
        let m = &p.metrics;
        // The counters the alerts judge: over the window when there is one, else since the pool started.
        let cumulative = PoolRates {
            checkouts: m.checkouts,
            checkout_timeouts: m.checkout_timeouts,
            queries: m.queries,
            query_errors: m.query_errors,
            avg_query_time_ms: (m.queries > 0).then_some(m.query_ms.mean),
        };
        let (w, when) = rates
            .and_then(|r| r.pool.map(|windowed| (windowed, span(r))))
            .unwrap_or_else(|| (cumulative, "since the pool started".to_owned()));
        if p.state.waiting > 0 {
            push(
                Level::Warning,
                "pool_waiting",
                format!(
                    "{} request(s) waiting for a connection; all {} are in use",
                    p.state.waiting, p.state.max_size
                ),
            );
        }
        if w.checkout_timeouts > 0 {
            let level = if w.checkout_timeouts as f64
                > t.error_rate_critical * (w.checkouts + w.checkout_timeouts) as f64
            {
                Level::Critical
            } else {
                Level::Warning
            };
            push(
                level,
                "pool_timeouts",
                format!(
                    "{} checkout(s) failed {when} ({} succeeded); raise DB_POOL_MAX_SIZE or look for slow requests and leaks",
                    w.checkout_timeouts, w.checkouts
                ),
            );
        }
        if p.state.max_size > 0
            && f64::from(p.state.idle) > t.idle_share_warning * f64::from(p.state.max_size)
        {
            push(
                Level::Warning,
                "idle_connections",
                format!(
                    "{} of the pool's {} connections are idle: DB_POOL_MIN_IDLE or DB_POOL_MAX_SIZE may be larger than needed",
                    p.state.idle, p.state.max_size
                ),
            );
        }
        if w.queries > 0 {
            if let Some(mean) = w.avg_query_time_ms
                && let Some((level, limit)) = grade(mean, t.query_time_warning_ms, t.query_time_critical_ms)
            {
                let text = format!("queries through the pool average {mean:.1}ms {when}, above {limit:.0}ms");
                push(level, "pool_avg_query_time", text);
            }
            let rate = w.query_errors as f64 / w.queries as f64;
            if let Some((level, _)) = grade(rate, t.error_rate_warning, t.error_rate_critical) {
                let text = format!(
                    "{} of {} queries through the pool failed {when} ({:.2}%)",
                    w.query_errors,
                    w.queries,
                    rate * 100.0
                );
                push(level, "pool_error_rate", text);
            }
        }
        if let Some(leak) = p.suspected_leaks.first() {
            push(
                Level::Warning,
                "pool_leaks",
                format!(
                    "{} connection(s) held past DB_POOL_LEAK_THRESHOLD; the longest, {}ms, was checked out at {}",
                    p.suspected_leaks.len(),
                    leak.held_for.as_millis(),
                    leak.location
                ),
            );
        }
    }
    alerts.sort_by_key(|alert| std::cmp::Reverse(alert.level));
    let worst = alerts.first().map(|a| a.level);
    let status = match worst {
        Some(Level::Critical) => Status::Critical,
        _ if unknown => Status::Unknown,
        Some(Level::Warning) => Status::Warning,
        None => Status::Healthy,
    };
    (status, alerts)
}

/// The alerts for PgBouncer's view: clients waiting, waiting too long, pools at their limit, or the admin
/// console unreadable.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small counts
pub fn assess_pgbouncer(view: &PgBouncerView, t: &Thresholds) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let snapshot = match view {
        PgBouncerView::Reached(snapshot) => snapshot,
        PgBouncerView::Unreachable { message } => {
            alerts.push(Alert {
                level: Level::Warning,
                metric: Cow::Borrowed("pgbouncer"),
                message: format!("cannot read PgBouncer's admin console: {message}"),
            });
            return alerts;
        }
    };
    let number = PgBouncerSnapshot::number;
    for pool in &snapshot.pools {
        let name = format!(
            "{}/{}",
            PgBouncerSnapshot::text(pool, "database"),
            PgBouncerSnapshot::text(pool, "user")
        );
        let waiting = number(pool, "cl_waiting");
        let maxwait = number(pool, "maxwait") + number(pool, "maxwait_us") / 1e6;
        let (warning, critical) = (t.pgbouncer_maxwait_warning, t.pgbouncer_maxwait_critical);
        if let Some((level, limit)) = grade(maxwait, warning.as_secs_f64(), critical.as_secs_f64()) {
            let advice = if level == Level::Critical {
                "; raise PGBOUNCER_DEFAULT_POOL_SIZE if PostgreSQL has room, or find the slow transactions"
            } else {
                ""
            };
            let message = format!(
                "a client of PgBouncer pool {name} has waited {maxwait:.1}s for a server connection (above {limit}s){advice}"
            );
            alerts.push(Alert { level, metric: Cow::Borrowed("pgbouncer_maxwait"), message });
        }
        if waiting > 0.0 {
            alerts.push(Alert {
                level: Level::Warning,
                metric: Cow::Borrowed("pgbouncer_waiting"),
                message: format!(
                    "{waiting:.0} client(s) waiting for a server connection in PgBouncer pool {name}"
                ),
            });
        }
        let servers: f64 = ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
            .iter()
            .map(|c| number(pool, c))
            .sum();
        let database = PgBouncerSnapshot::text(pool, "database");
        if let Some(db) = snapshot.databases.iter().find(|db| PgBouncerSnapshot::text(db, "name") == database)
        {
            let limit = number(db, "pool_size") + number(db, "reserve_pool");
            if limit > 0.0 && servers >= limit {
                alerts.push(Alert { level: Level::Warning, metric: Cow::Borrowed("pgbouncer_pool_full"), message: format!("PgBouncer pool {name} has {servers:.0} server connections, its pool_size + reserve_pool ({limit:.0}): further clients wait") });
            }
        }
    }
    alerts
}

/// The level of `value` against its WARNING and CRITICAL limits (alerting above each), with the limit it
/// passed.
fn grade(value: f64, warning: f64, critical: f64) -> Option<(Level, f64)> {
    if value > critical {
        Some((Level::Critical, critical))
    } else if value > warning {
        Some((Level::Warning, warning))
    } else {
        None
    }
}

/// The status for `alerts` on top of an earlier `status`.
pub(crate) fn combine(status: Status, alerts: &[Alert]) -> Status {
    let worst = alerts.iter().map(|a| a.level).max();
    match (status, worst) {
        (_, Some(Level::Critical)) | (Status::Critical, _) => Status::Critical,
        (Status::Unknown, _) => Status::Unknown,
        (_, Some(Level::Warning)) | (Status::Warning, _) => Status::Warning,
        (Status::Healthy, None) => Status::Healthy,
    }
}
