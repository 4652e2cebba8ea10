//! Rendering a report: text for people, JSON for scripts, Prometheus text exposition for scrapers.

use std::fmt::Write as _;

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use crate::health::{Level, Status};
use crate::model::{PgBouncerRow, PgBouncerSnapshot, QuerySource};
use crate::report::Report;

/// One sample: its labels and value.
type Sample<'a> = (Vec<(&'a str, String)>, f64);

const RULE: &str = "======================================================================";
/// Connections listed in the text report; the rest are counted.
const LISTED: usize = 10;
/// Application/user groups the text report lists.
const TOP_APPLICATIONS: usize = 5;
/// Application/user groups with series of their own in `pgconn_server_connections`; the rest are `other`.
const TOP_SERIES: usize = 10;

/// The report as text, in the documented layout; with `color`, the status and alerts are coloured (ANSI).
pub fn text(report: &Report, color: bool) -> String {
    let paint =
        |code: &str, text: &str| if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() };
    let status_code = match report.status {
        Status::Healthy => "1;32",
        Status::Warning => "1;33",
        Status::Critical => "1;31",
        Status::Unknown => "1;35",
    };
    let unknown = || "unknown".to_owned();
    let mut out = String::new();
    let _ = writeln!(out, "{RULE}\nCONNECTION POOL HEALTH REPORT\n{RULE}\n");
    let _ = writeln!(out, "Status: {}", paint(status_code, report.status.as_str()));
    let _ = writeln!(out, "Timestamp: {}\n", report.timestamp);
    let _ = writeln!(out, "Database: {}", report.database);
    let _ = writeln!(
        out,
        "Connection Max Age: {}",
        report.conn_max_age_s.map_or_else(|| "unlimited".to_owned(), |s| format!("{s}s"))
    );
    let _ = writeln!(
        out,
        "Active Connections: {}",
        match (report.server_connections, report.usable_connections, report.max_connections) {
            (Some(used), Some(usable), Some(max)) => {
                format!("{used}/{usable} usable (max_connections {max}, {} reserved)", max - usable)
            }
            _ => unknown(),
        }
    );
    if let Some(hidden) = report.connections_hidden.filter(|&n| n > 0) {
        let _ = writeln!(
            out,
            "Hidden Connections: {hidden} (counted, but the monitor's role cannot see their state or \
             database: GRANT pg_monitor TO <its role>)"
        );
    }
    let _ = writeln!(
        out,
        "Utilization: {}",
        report.utilization_percent.map_or_else(unknown, |u| format!("{u:.1}%"))
    );
    let _ = writeln!(out, "Backend PID: {}", report.backend_pid.map_or_else(unknown, |p| p.to_string()));
    let _ = writeln!(
        out,
        "Connection Age: {}\n",
        report.connection_age_s.map_or_else(unknown, |a| format!("{a:.1}s"))
    );

    let _ = writeln!(out, "Query Statistics:");
    match &report.query_stats {
        Some(q) => {
            let source = match q.source {
                QuerySource::PgStatStatements => "pg_stat_statements",
                QuerySource::PgStatDatabase => "pg_stat_database, per transaction",
            };
            let _ = writeln!(out, "  Total Queries: {}", q.total_queries);
            let _ = writeln!(out, "  Errors: {}", q.errors);
            let _ = writeln!(
                out,
                "  Avg Query Time: {}",
                q.avg_query_time_ms.map_or_else(|| "n/a".to_owned(), ms)
            );
            let _ = writeln!(out, "  Source: {source}\n");
        }
        None => {
            let _ = writeln!(out, "  unavailable\n");
        }
    }

    if report.alerts.is_empty() {
        let _ = writeln!(out, "{}\n", paint("32", "✓ No alerts"));
    } else {
        for alert in &report.alerts {
            let (mark, code) = match alert.level {
                Level::Critical => ("✗", "31"),
                Level::Warning => ("⚠", "33"),
            };
            let _ = writeln!(out, "{} {}", paint(code, &format!("{mark} {}:", alert.level)), alert.message);
        }
        out.push('\n');
    }

    if !report.by_application.is_empty() {
        let _ = writeln!(out, "Who Holds the Connections (whole server):");
        for group in report.by_application.iter().take(TOP_APPLICATIONS) {
            let states: Vec<String> = group.states.iter().map(|(state, n)| format!("{n} {state}")).collect();
            let name = if group.application_name.is_empty() { "(no name)" } else { &group.application_name };
            let _ = writeln!(out, "  {:>4}  {name} as {} ({})", group.count, group.user, states.join(", "));
        }
        if report.by_application.len() > TOP_APPLICATIONS {
            let rest: u32 = report.by_application.iter().skip(TOP_APPLICATIONS).map(|g| g.count).sum();
            let _ = writeln!(out, "  {rest:>4}  others");
        }
        out.push('\n');
    }

    if !report.connections.is_empty() {
        let _ = writeln!(out, "Active Connections:");
        for b in report.connections.iter().take(LISTED) {
            let idle = b.idle_s.map(|i| format!(", idle: {i:.0}s")).unwrap_or_default();
            let app = if b.application_name.is_empty() {
                String::new()
            } else {
                format!(", app: {}", b.application_name)
            };
            let _ = writeln!(
                out,
                "  PID {}: {} (age: {:.0}s{idle}, user: {}{app})",
                b.pid, b.state, b.age_s, b.user
            );
        }
        if report.connections.len() > LISTED {
            let _ = writeln!(out, "  ... and {} more", report.connections.len() - LISTED);
        }
        out.push('\n');
    }

    if let Some(p) = &report.pool {
        let m = &p.metrics;
        let c = &m.connections_closed;
        let _ = writeln!(out, "Pool:");
        let _ = writeln!(
            out,
            "  Size: {}/{} ({} idle, {} in use, {} waiting)",
            p.state.size, p.state.max_size, p.state.idle, p.state.in_use, p.state.waiting
        );
        let _ = writeln!(
            out,
            "  Checkouts: {} (wait p50 {:.3}ms, p99 {:.3}ms), timeouts: {}",
            m.checkouts, m.checkout_wait_ms.p50, m.checkout_wait_ms.p99, m.checkout_timeouts
        );
        let _ = writeln!(
            out,
            "  Connections: {} opened, closed {} (max age {}, broken {}, idle {}, per request {}, \
             closed by server {}, panicked {}, unclean {}), reset {} (transaction {}, session {})",
            m.connections_opened,
            c.total(),
            c.max_age,
            c.broken,
            c.idle,
            c.per_request,
            c.closed_by_server,
            c.panicked,
            c.unclean,
            m.connections_reset.transaction + m.connections_reset.session,
            m.connections_reset.transaction,
            m.connections_reset.session
        );
        let _ = writeln!(
            out,
            "  Queries: {} ({} errors, avg {:.3}ms), leak warnings: {}",
            m.queries, m.query_errors, m.query_ms.mean, m.leak_warnings
        );
        let sc = &m.statement_cache;
        let _ = writeln!(
            out,
            "  Statement cache: {} hits, {} misses, {} prepared, {} evicted, {} invalidated\n",
            sc.hits, sc.misses, sc.prepared, sc.evictions, sc.invalidations
        );
    }
    if let Some(b) = &report.pgbouncer {
        let _ = writeln!(out, "PgBouncer:");
        if let Some(error) = &b.error {
            let _ = writeln!(out, "  unavailable: {error}");
        }
        let n = |row: &PgBouncerRow, column: &str| PgBouncerSnapshot::number(row, column);
        for pool in &b.pools {
            let _ = writeln!(
                out,
                "  Pool {}/{} ({}): clients {} active, {} waiting; servers {} active, {} idle, {} used; maxwait {:.1}s",
                PgBouncerSnapshot::text(pool, "database"),
                PgBouncerSnapshot::text(pool, "user"),
                PgBouncerSnapshot::text(pool, "pool_mode"),
                n(pool, "cl_active"),
                n(pool, "cl_waiting"),
                n(pool, "sv_active"),
                n(pool, "sv_idle"),
                n(pool, "sv_used"),
                n(pool, "maxwait") + n(pool, "maxwait_us") / 1e6,
            );
        }
        for stats in &b.stats {
            let _ = writeln!(
                out,
                "  Stats {}: {} transactions, {} queries, avg transaction {}, avg query {}, avg wait {}",
                PgBouncerSnapshot::text(stats, "database"),
                n(stats, "total_xact_count"),
                n(stats, "total_query_count"),
                ms(n(stats, "avg_xact_time") / 1000.0),
                ms(n(stats, "avg_query_time") / 1000.0),
                ms(n(stats, "avg_wait_time") / 1000.0),
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{RULE}");
    out
}

/// The report as one JSON object; `pretty` for people, compact (one line) for `--watch` streams.
///
/// # Panics
/// Never: every field serializes.
pub fn json(report: &Report, pretty: bool) -> String {
    let result = if pretty { serde_json::to_string_pretty(report) } else { serde_json::to_string(report) };
    result.expect("a report always serializes")
}

/// The report in the Prometheus text exposition format, `pgconn_`-prefixed. Values the report does not
/// have (the server could not be asked) are left out; `pgconn_health_status` is always there.
///
/// # Panics
/// Never: the metric names are fixed and valid.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
#[allow(clippy::many_single_char_names)]
pub fn prometheus(report: &Report) -> String {
    let mut families = Vec::new();
    let mut gauge = |name: &str, help: &str, samples: Vec<(Vec<(&str, String)>, f64)>| {
        if samples.is_empty() {
            return;
        }
        families.push(family(name, help, MetricType::GAUGE, samples, |v| {
            let mut g = Gauge::default();
            g.set_value(v);
            let mut m = Metric::default();
            m.set_gauge(g);
            m
        }));
    };
    gauge(
        "pgconn_health_status",
        "Health: 0 healthy, 1 warning, 2 critical, 3 unknown (server not reachable).",
        vec![(vec![], f64::from(report.status.exit_code()))],
    );
    let alerts_by_level = |level| report.alerts.iter().filter(|a| a.level == level).count() as f64;
    gauge(
        "pgconn_alerts",
        "Alerts in the report, by level.",
        vec![
            (vec![("level", "warning".into())], alerts_by_level(Level::Warning)),
            (vec![("level", "critical".into())], alerts_by_level(Level::Critical)),
        ],
    );
    if let (Some(used), Some(max), Some(db)) =
        (report.server_connections, report.max_connections, report.database_connections)
    {
        gauge(
            "pgconn_server_connections",
            "Client backends on the whole server, by application_name, user and state (the largest \
             groups; the rest as application_name=\"other\"); sum() is the total.",
            server_connection_samples(report, used),
        );
        gauge(
            "pgconn_server_connections_hidden",
            "Connections the monitor's role cannot see in detail (grant it pg_monitor).",
            vec![(vec![], f64::from(report.connections_hidden.unwrap_or(0)))],
        );
        gauge("pgconn_max_connections", "The server's max_connections.", vec![(vec![], f64::from(max))]);
        gauge(
            "pgconn_usable_connections",
            "max_connections less the slots reserved for superusers: what ordinary roles may use.",
            vec![(vec![], f64::from(report.usable_connections.unwrap_or(max)))],
        );
        gauge(
            "pgconn_utilization_ratio",
            "Client backends over usable connections (1 = full for ordinary roles).",
            vec![(vec![], report.utilization_percent.unwrap_or(0.0) / 100.0)],
        );
        gauge(
            "pgconn_database_connections",
            "Client backends on this database.",
            vec![(vec![], f64::from(db))],
        );
        gauge(
            "pgconn_database_connections_by_state",
            "Client backends on this database, by state.",
            report
                .connections_by_state
                .iter()
                .map(|(s, n)| (vec![("state", s.clone())], f64::from(*n)))
                .collect(),
        );
        gauge(
            "pgconn_idle_over_threshold",
            "This database's connections idle longer than the idle threshold.",
            vec![(vec![], f64::from(report.idle_over_threshold))],
        );
    }
    let mut counters = Vec::new();
    let mut histograms = Vec::new();
    let mut counter_family = |name: &str, help: &str, samples: Vec<(Vec<(&str, String)>, f64)>| {
        counters.push(family(name, help, MetricType::COUNTER, samples, |v| {
            let mut c = Counter::default();
            c.set_value(v);
            let mut m = Metric::default();
            m.set_counter(c);
            m
        }));
    };
    if let Some(q) = &report.query_stats {
        counter_family(
            "pgconn_server_queries_total",
            "Statements (pg_stat_statements) or transactions (pg_stat_database) since the statistics reset.",
            vec![(vec![], q.total_queries as f64)],
        );
        counter_family(
            "pgconn_server_query_errors_total",
            "Rolled-back transactions since the statistics reset.",
            vec![(vec![], q.errors as f64)],
        );
        gauge(
            "pgconn_queries",
            "Deprecated: pgconn_server_queries_total, as a gauge.",
            vec![(vec![], q.total_queries as f64)],
        );
        gauge(
            "pgconn_query_errors",
            "Deprecated: pgconn_server_query_errors_total, as a gauge.",
            vec![(vec![], q.errors as f64)],
        );
        if let Some(avg) = q.avg_query_time_ms {
            gauge(
                "pgconn_avg_query_time_seconds",
                "Mean query (or transaction) time.",
                vec![(vec![], avg / 1000.0)],
            );
        }
    }
    if let Some(p) = &report.pool {
        let state = &p.state;
        gauge(
            "pgconn_pool_max_size",
            "The pool's DB_POOL_MAX_SIZE.",
            vec![(vec![], f64::from(state.max_size))],
        );
        gauge(
            "pgconn_pool_connections",
            "Connections open in the pool.",
            vec![(vec![], f64::from(state.size))],
        );
        gauge("pgconn_pool_idle", "Idle connections in the pool.", vec![(vec![], f64::from(state.idle))]);
        gauge("pgconn_pool_in_use", "Connections checked out.", vec![(vec![], f64::from(state.in_use))]);
        gauge(
            "pgconn_pool_waiting",
            "Threads waiting for a connection.",
            vec![(vec![], state.waiting as f64)],
        );
        let m = &p.metrics;
        let c = &m.connections_closed;
        let counter = &mut counter_family;
        counter("pgconn_pool_checkouts_total", "Successful checkouts.", vec![(vec![], m.checkouts as f64)]);
        counter(
            "pgconn_pool_checkout_timeouts_total",
            "Failed checkouts.",
            vec![(vec![], m.checkout_timeouts as f64)],
        );
        counter(
            "pgconn_pool_connections_opened_total",
            "Connections opened.",
            vec![(vec![], m.connections_opened as f64)],
        );
        counter(
            "pgconn_pool_connect_errors_total",
            "Failed connection attempts.",
            vec![(vec![], m.connect_errors as f64)],
        );
        counter(
            "pgconn_pool_connections_closed_total",
            "Connections closed, by reason.",
            vec![
                (vec![("reason", "max_age".into())], c.max_age as f64),
                (vec![("reason", "broken".into())], c.broken as f64),
                (vec![("reason", "idle".into())], c.idle as f64),
                (vec![("reason", "per_request".into())], c.per_request as f64),
                (vec![("reason", "closed_by_server".into())], c.closed_by_server as f64),
                (vec![("reason", "panicked".into())], c.panicked as f64),
                (vec![("reason", "unclean".into())], c.unclean as f64),
            ],
        );
        counter(
            "pgconn_pool_connections_reset_total",
            "Returned connections reset before reuse: an open, failed or unknown transaction rolled back \
             (what=\"transaction\"), changed session state discarded (what=\"session\").",
            vec![
                (vec![("what", "transaction".into())], m.connections_reset.transaction as f64),
                (vec![("what", "session".into())], m.connections_reset.session as f64),
            ],
        );
        counter(
            "pgconn_pool_queries_total",
            "Queries through the pool's API.",
            vec![(vec![], m.queries as f64)],
        );
        counter(
            "pgconn_pool_query_errors_total",
            "Failed queries through the pool's API.",
            vec![(vec![], m.query_errors as f64)],
        );
        counter(
            "pgconn_pool_leak_warnings_total",
            "Connections reported as possible leaks.",
            vec![(vec![], m.leak_warnings as f64)],
        );
        let sc = &m.statement_cache;
        counter(
            "pgconn_pool_statement_cache_lookups_total",
            "Calls of the query API by whether their statement was prepared on the connection already \
             (result=\"hit\") or ran unnamed or was prepared now (result=\"miss\").",
            vec![
                (vec![("result", "hit".into())], sc.hits as f64),
                (vec![("result", "miss".into())], sc.misses as f64),
            ],
        );
        counter(
            "pgconn_pool_statements_prepared_total",
            "Statements the statement cache prepared.",
            vec![(vec![], sc.prepared as f64)],
        );
        counter(
            "pgconn_pool_statement_cache_evictions_total",
            "Prepared statements closed to make room in a full statement cache.",
            vec![(vec![], sc.evictions as f64)],
        );
        counter(
            "pgconn_pool_statement_cache_invalidations_total",
            "Cached statements the server rejected as stale (their plan changed, or gone), run again unnamed.",
            vec![(vec![], sc.invalidations as f64)],
        );
        let b = &m.checkout_wait_buckets;
        let mut h = Histogram::default();
        h.set_sample_count(b.count);
        h.set_sample_sum(b.sum_ms / 1000.0);
        h.set_bucket(
            b.cumulative
                .iter()
                .map(|&(le_ms, n)| {
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(le_ms / 1000.0);
                    bucket.set_cumulative_count(n);
                    bucket
                })
                .collect(),
        );
        let mut metric = Metric::default();
        metric.set_histogram(h);
        let mut f = MetricFamily::default();
        f.set_name("pgconn_pool_checkout_wait_seconds".into());
        f.set_help("Time from asking the pool for a connection to holding one.".into());
        f.set_field_type(MetricType::HISTOGRAM);
        f.set_metric(vec![metric]);
        histograms.push(f);
    }
    if let Some(b) = &report.pgbouncer {
        let numeric = |row: &PgBouncerRow| -> Vec<(String, f64)> {
            row.iter()
                .filter_map(|(column, value)| value.as_f64().and_then(|v| prometheus_column(column, v, row)))
                .collect()
        };
        let mut by_name: std::collections::BTreeMap<String, Vec<Sample<'_>>> =
            std::collections::BTreeMap::new();
        for pool in &b.pools {
            let labels = vec![
                ("database", PgBouncerSnapshot::text(pool, "database").to_owned()),
                ("user", PgBouncerSnapshot::text(pool, "user").to_owned()),
            ];
            for (column, v) in numeric(pool) {
                by_name
                    .entry(format!("pgconn_pgbouncer_pools_{column}"))
                    .or_default()
                    .push((labels.clone(), v));
            }
        }
        for stats in &b.stats {
            let labels = vec![("database", PgBouncerSnapshot::text(stats, "database").to_owned())];
            for (column, v) in numeric(stats) {
                by_name
                    .entry(format!("pgconn_pgbouncer_stats_{column}"))
                    .or_default()
                    .push((labels.clone(), v));
            }
        }
        for (name, samples) in by_name {
            let source = if name.contains("_pools_") { "SHOW POOLS" } else { "SHOW STATS" };
            let help = format!("From PgBouncer's {source} (times in seconds, sizes in bytes).");
            gauge(&name, &help, samples);
        }
        gauge(
            "pgconn_pgbouncer_up",
            "Whether PgBouncer's admin console could be read.",
            vec![(vec![], if b.error.is_none() { 1.0 } else { 0.0 })],
        );
    }
    families.extend(counters);
    families.extend(histograms);
    prometheus::TextEncoder::new().encode_to_string(&families).expect("valid metric families")
}

fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Vec<(&str, String)>, f64)>,
    make: impl Fn(f64) -> Metric,
) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(
        samples
            .into_iter()
            .map(|(labels, value)| {
                let mut metric = make(value);
                metric.set_label(
                    labels
                        .into_iter()
                        .map(|(k, v)| {
                            let mut pair = LabelPair::default();
                            pair.set_name(k.into());
                            pair.set_value(v);
                            pair
                        })
                        .collect(),
                );
                metric
            })
            .collect(),
    );
    f
}

/// `pgconn_server_connections`'s samples: the [`TOP_SERIES`] largest application/user groups by state,
/// the rest as `other`, so that the series stay few whatever connects; they sum to `total`.
fn server_connection_samples(report: &Report, total: u32) -> Vec<Sample<'static>> {
    let mut samples: Vec<Sample<'static>> = Vec::new();
    let mut other: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
    let mut counted = 0;
    for (i, group) in report.by_application.iter().enumerate() {
        for (state, n) in &group.states {
            counted += n;
            if i < TOP_SERIES {
                samples.push((
                    vec![
                        ("application_name", group.application_name.clone()),
                        ("user", group.user.clone()),
                        ("state", state.clone()),
                    ],
                    f64::from(*n),
                ));
            } else {
                *other.entry(state.clone()).or_insert(0) += n;
            }
        }
    }
    // Counted by numbackends but not listed in pg_stat_activity at all.
    if total > counted {
        *other.entry("unknown".to_owned()).or_insert(0) += total - counted;
    }
    for (state, n) in other {
        samples.push((
            vec![("application_name", "other".to_owned()), ("user", "other".to_owned()), ("state", state)],
            f64::from(n),
        ));
    }
    samples
}

/// Milliseconds with the precision that matters: `0.042ms`, `12.3ms`.
fn ms(value: f64) -> String {
    if value < 10.0 { format!("{value:.3}ms") } else { format!("{value:.1}ms") }
}

/// A PgBouncer column as a Prometheus metric name and value, in base units and without the suffixes
/// Prometheus reserves: times (µs) in seconds, byte counts named `_bytes`, `*_count` as plurals, `maxwait`
/// and `maxwait_us` as one `maxwait_seconds`.
fn prometheus_column(column: &str, value: f64, row: &PgBouncerRow) -> Option<(String, f64)> {
    let named = |name: &str, value: f64| Some((name.to_owned(), value));
    match column {
        "maxwait_us" => None,
        "maxwait" => named("maxwait_seconds", value + PgBouncerSnapshot::number(row, "maxwait_us") / 1e6),
        "total_received" | "total_sent" | "avg_recv" | "avg_sent" => named(&format!("{column}_bytes"), value),
        _ if column.ends_with("_time") => named(&format!("{column}_seconds"), value / 1e6),
        _ => match column.strip_suffix("_count") {
            Some(stem) => named(
                &match stem.rsplit_once('_') {
                    Some((prefix, "query")) => format!("{prefix}_queries"),
                    Some((prefix, "xact")) => format!("{prefix}_transactions"),
                    _ => format!("{stem}s"),
                },
                value,
            ),
            None => named(column, value),
        },
    }
}
