//! The health model: thresholds, alerts, status.

use std::time::Duration;

use pgconn_monitor::{
    Level, PgBouncerRow, PgBouncerSnapshot, PgBouncerView, PoolSnapshot, QuerySource, QueryStats, ServerView,
    Status, Thresholds, assess, assess_pgbouncer,
};
use pgconn_pool::{PoolMetrics, PoolState};

use crate::{backend, server};

/// `(status, [(level, metric)])` for the snapshots.
#[track_caller]
fn check(server: Option<&ServerView>, pool: Option<&PoolSnapshot>, status: Status, alerts: &[(Level, &str)]) {
    let (actual_status, actual) = assess(server, pool, &Thresholds::default());
    let actual: Vec<(Level, &str)> = actual.iter().map(|a| (a.level, a.metric.as_ref())).collect();
    assert_eq!((actual_status, actual.as_slice()), (status, alerts));
}

fn with_stats(used: u32, avg_ms: f64, total: u64, errors: u64) -> ServerView {
    let ServerView::Reached(mut s) = server(used, 100, vec![]) else { unreachable!() };
    s.query_stats = Some(QueryStats {
        source: QuerySource::PgStatStatements,
        total_queries: total,
        errors,
        avg_query_time_ms: Some(avg_ms),
    });
    ServerView::Reached(s)
}

#[test]
fn utilization_thresholds() {
    // Against the usable slots: max_connections 100 less 3 reserved for superusers, 97.
    check(Some(&server(15, 100, vec![])), None, Status::Healthy, &[]);
    check(Some(&server(77, 100, vec![])), None, Status::Healthy, &[]);
    check(Some(&server(78, 100, vec![])), None, Status::Warning, &[(Level::Warning, "utilization")]);
    check(Some(&server(92, 100, vec![])), None, Status::Warning, &[(Level::Warning, "utilization")]);
    check(Some(&server(93, 100, vec![])), None, Status::Critical, &[(Level::Critical, "utilization")]);
    // A small server: 20 less 3 reserved is 17 usable; 14 is 82%, 17 is full for ordinary roles.
    check(Some(&server(14, 20, vec![])), None, Status::Warning, &[(Level::Warning, "utilization")]);
    check(Some(&server(17, 20, vec![])), None, Status::Critical, &[(Level::Critical, "utilization")]);
}

#[test]
fn query_time_and_error_rate() {
    check(Some(&with_stats(1, 100.0, 1000, 10)), None, Status::Healthy, &[]);
    check(Some(&with_stats(1, 100.1, 1000, 0)), None, Status::Warning, &[(Level::Warning, "avg_query_time")]);
    check(
        Some(&with_stats(1, 500.1, 1000, 0)),
        None,
        Status::Critical,
        &[(Level::Critical, "avg_query_time")],
    );
    check(Some(&with_stats(1, 1.0, 1000, 11)), None, Status::Warning, &[(Level::Warning, "error_rate")]);
    check(Some(&with_stats(1, 1.0, 1000, 51)), None, Status::Critical, &[(Level::Critical, "error_rate")]);
    check(
        Some(&with_stats(90, 200.0, 1000, 60)),
        None,
        Status::Critical,
        &[
            (Level::Critical, "error_rate"),
            (Level::Warning, "utilization"),
            (Level::Warning, "avg_query_time"),
        ],
    );
}

#[test]
fn idle_connections() {
    let idle = |pid, idle_s| backend(pid, "idle", 1000.0, Some(idle_s));
    // Idle longer than 5 minutes.
    check(
        Some(&server(2, 100, vec![idle(1, 301.0), idle(2, 10.0)])),
        None,
        Status::Warning,
        &[(Level::Warning, "idle_over_threshold")],
    );
    // More than half of the database's connections idle (from 4 connections up).
    let mostly_idle = vec![idle(1, 1.0), idle(2, 1.0), idle(3, 1.0), backend(4, "active", 1.0, None)];
    check(Some(&server(4, 100, mostly_idle)), None, Status::Warning, &[(Level::Warning, "idle_connections")]);
    let half =
        vec![idle(1, 1.0), idle(2, 1.0), backend(3, "active", 1.0, None), backend(4, "active", 1.0, None)];
    check(Some(&server(4, 100, half)), None, Status::Healthy, &[]);
}

#[test]
fn the_server_refusing_the_monitor() {
    let full = ServerView::Full { message: "FATAL: sorry, too many clients already".into() };
    check(Some(&full), None, Status::Critical, &[(Level::Critical, "server_connection")]);
    let (_, alerts) = assess(Some(&full), None, &Thresholds::default());
    assert!(alerts[0].message.contains("refused the monitor's connection"), "{}", alerts[0].message);
    let down = ServerView::Unreachable { kind: "connect_failed", message: "Connection refused".into() };
    check(Some(&down), None, Status::Unknown, &[(Level::Warning, "server_connection")]);
}

fn pool(state: PoolState, metrics: PoolMetrics) -> PoolSnapshot {
    PoolSnapshot { state, metrics, suspected_leaks: vec![] }
}

#[test]
fn pool_alerts() {
    let mut state = PoolState::default();
    state.max_size = 10;
    state.size = 4;
    state.in_use = 3;
    state.idle = 1;
    let mut metrics = PoolMetrics::default();
    metrics.checkouts = 1000;
    metrics.queries = 1000;
    check(None, Some(&pool(state, metrics.clone())), Status::Healthy, &[]);

    let mut waiting = state;
    waiting.waiting = 3;
    check(None, Some(&pool(waiting, metrics.clone())), Status::Warning, &[(Level::Warning, "pool_waiting")]);

    let mut timeouts = metrics.clone();
    timeouts.checkout_timeouts = 10;
    check(None, Some(&pool(state, timeouts.clone())), Status::Warning, &[(Level::Warning, "pool_timeouts")]);
    timeouts.checkout_timeouts = 100;
    check(None, Some(&pool(state, timeouts)), Status::Critical, &[(Level::Critical, "pool_timeouts")]);

    let mut idle = state;
    idle.idle = 6;
    check(None, Some(&pool(idle, metrics.clone())), Status::Warning, &[(Level::Warning, "idle_connections")]);

    let mut errors = metrics.clone();
    errors.query_errors = 20;
    check(None, Some(&pool(state, errors)), Status::Warning, &[(Level::Warning, "pool_error_rate")]);

    let mut slow = metrics;
    slow.query_ms.mean = 600.0;
    check(None, Some(&pool(state, slow)), Status::Critical, &[(Level::Critical, "pool_avg_query_time")]);

    let leak = pgconn_pool::Leak {
        held_for: Duration::from_secs(40),
        location: "src/handler.rs:10:5".into(),
        thread: None,
    };
    let mut leaking = pool(state, PoolMetrics::default());
    leaking.suspected_leaks = vec![leak];
    let (status, alerts) = assess(None, Some(&leaking), &Thresholds::default());
    assert_eq!(status, Status::Warning);
    assert!(alerts[0].message.contains("src/handler.rs:10:5"), "{}", alerts[0].message);
}

/// A PgBouncer view with one pool row (numbers from `pool`) and its database's limits.
pub(crate) fn pgbouncer(pool: &[(&str, f64)], pool_size: f64, reserve: f64) -> PgBouncerView {
    let mut row: PgBouncerRow = pool.iter().map(|(k, v)| ((*k).to_owned(), serde_json::json!(v))).collect();
    row.insert("database".into(), "app".into());
    row.insert("user".into(), "app".into());
    row.insert("pool_mode".into(), "transaction".into());
    let database: PgBouncerRow = [
        ("name".to_owned(), serde_json::json!("app")),
        ("pool_size".to_owned(), serde_json::json!(pool_size)),
        ("reserve_pool".to_owned(), serde_json::json!(reserve)),
    ]
    .into_iter()
    .collect();
    PgBouncerView::Reached(PgBouncerSnapshot { pools: vec![row], stats: vec![], databases: vec![database] })
}

#[track_caller]
fn check_pgbouncer(view: &PgBouncerView, alerts: &[(Level, &str)]) {
    let assessed = assess_pgbouncer(view, &Thresholds::default());
    let actual: Vec<(Level, &str)> = assessed.iter().map(|a| (a.level, a.metric.as_ref())).collect();
    assert_eq!(actual, alerts);
}

#[test]
fn pgbouncer_alerts() {
    check_pgbouncer(&pgbouncer(&[("cl_active", 10.0), ("sv_active", 5.0), ("sv_idle", 5.0)], 25.0, 5.0), &[]);
    check_pgbouncer(&pgbouncer(&[("cl_waiting", 3.0)], 25.0, 5.0), &[(Level::Warning, "pgbouncer_waiting")]);
    check_pgbouncer(
        &pgbouncer(&[("maxwait", 1.0), ("maxwait_us", 500_000.0)], 25.0, 5.0),
        &[(Level::Warning, "pgbouncer_maxwait")],
    );
    check_pgbouncer(&pgbouncer(&[("maxwait", 6.0)], 25.0, 5.0), &[(Level::Critical, "pgbouncer_maxwait")]);
    check_pgbouncer(
        &pgbouncer(&[("sv_active", 25.0), ("sv_used", 3.0), ("sv_login", 2.0)], 25.0, 5.0),
        &[(Level::Warning, "pgbouncer_pool_full")],
    );
    check_pgbouncer(
        &PgBouncerView::Unreachable { message: "connection refused".into() },
        &[(Level::Warning, "pgbouncer")],
    );
}
