//! The renderings: the text layout, the JSON keys, Prometheus that parses back.

use std::time::{Duration, SystemTime};

use pgconn_monitor::{Context, PoolSnapshot, Report, Thresholds, render};
use pgconn_pool::{PoolMetrics, PoolState};
use prometheus_parse::Value;

use crate::{backend, server};

fn context() -> Context {
    Context { database: "app".into(), conn_max_age_s: Some(600), thresholds: Thresholds::default() }
}

fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(1_771_424_979_099_345)
}

fn report() -> Report {
    let connections = (0..15)
        .map(|i| {
            backend(
                21180 + i,
                if i == 1 { "idle" } else { "active" },
                45.0 + f64::from(i),
                (i == 1).then_some(120.0),
            )
        })
        .collect();
    Report::new(&context(), Some(&server(15, 100, connections)), None, at())
}

#[test]
fn text_layout() {
    let expected = "\
======================================================================
CONNECTION POOL HEALTH REPORT
======================================================================

Status: HEALTHY
Timestamp: 2026-02-18T14:29:39.099345Z

Database: app
Connection Max Age: 600s
Active Connections: 15/97 usable (max_connections 100, 3 reserved)
Utilization: 15.5%
Backend PID: 4242
Connection Age: 45.2s

Query Statistics:
  Total Queries: 1523
  Errors: 0
  Avg Query Time: 12.3ms
  Source: pg_stat_database, per transaction

✓ No alerts

Active Connections:
  PID 21180: active (age: 45s, user: app, app: pgconn)
  PID 21181: idle (age: 46s, idle: 120s, user: app, app: pgconn)
  PID 21182: active (age: 47s, user: app, app: pgconn)
  PID 21183: active (age: 48s, user: app, app: pgconn)
  PID 21184: active (age: 49s, user: app, app: pgconn)
  PID 21185: active (age: 50s, user: app, app: pgconn)
  PID 21186: active (age: 51s, user: app, app: pgconn)
  PID 21187: active (age: 52s, user: app, app: pgconn)
  PID 21188: active (age: 53s, user: app, app: pgconn)
  PID 21189: active (age: 54s, user: app, app: pgconn)
  ... and 5 more

======================================================================
";
    assert_eq!(render::text(&report(), false), expected);
}

#[test]
fn alerts_replace_the_no_alerts_line_and_colour_is_optional() {
    let report = Report::new(&context(), Some(&server(97, 100, vec![])), None, at());
    let text = render::text(&report, false);
    assert!(text.contains("Status: CRITICAL\n"), "{text}");
    assert!(
        text.contains(
            "\n✗ CRITICAL: 97 of 97 usable connection slots in use (100.0%; max_connections 100, 3 reserved \
             for superusers)"
        ),
        "{text}"
    );
    assert!(!text.contains("No alerts") && !text.contains('\x1b'));
    assert!(render::text(&report, true).contains("\x1b[1;31mCRITICAL\x1b[0m"));
}

#[test]
fn json_keys() {
    let json: serde_json::Value = serde_json::from_str(&render::json(&report(), false)).unwrap();
    assert_eq!(json["status"], "HEALTHY");
    assert_eq!(json["timestamp"], "2026-02-18T14:29:39.099345Z");
    assert_eq!(json["database"], "app");
    assert_eq!(json["conn_max_age_s"], 600);
    assert_eq!(
        (json["server_connections"].as_u64(), json["database_connections"].as_u64()),
        (Some(15), Some(15))
    );
    assert_eq!(json["max_connections"], 100);
    assert_eq!(json["usable_connections"], 97);
    assert!((json["utilization_percent"].as_f64().unwrap() - 1500.0 / 97.0).abs() < 1e-9);
    assert_eq!(json["connections_hidden"], 0);
    assert_eq!(json["by_application"], serde_json::json!([]));
    assert_eq!(json["backend_pid"], 4242);
    assert!((json["connection_age_s"].as_f64().unwrap() - 45.2).abs() < 1e-9);
    assert_eq!(json["connections_by_state"], serde_json::json!({"active": 14, "idle": 1}));
    assert_eq!(json["idle_over_threshold"], 0);
    assert_eq!(
        json["query_stats"],
        serde_json::json!({"source": "pg_stat_database", "total_queries": 1523, "errors": 0, "avg_query_time_ms": 12.3})
    );
    assert_eq!(json["alerts"], serde_json::json!([]));
    let first = &json["connections"][0];
    for key in ["pid", "state", "age_s", "idle_s", "user", "application_name"] {
        assert!(first.get(key).is_some(), "connections[0].{key}");
    }
    assert_eq!(json["pool"], serde_json::Value::Null);
    assert_eq!(json["pgbouncer"], serde_json::Value::Null);
}

pub(crate) fn pool_report() -> Report {
    let mut state = PoolState::default();
    state.max_size = 10;
    state.size = 3;
    state.in_use = 2;
    state.idle = 1;
    let mut metrics = PoolMetrics::default();
    metrics.checkouts = 42;
    metrics.checkout_wait_buckets =
        pgconn_pool::Buckets { cumulative: vec![(0.1, 40), (1.0, 41), (10.0, 42)], count: 42, sum_ms: 5.5 };
    let pool = PoolSnapshot { state, metrics, suspected_leaks: vec![] };
    Report::new(&context(), Some(&server(15, 100, vec![])), Some(&pool), at())
}

#[test]
fn prometheus_parses_back() {
    let text = render::prometheus(&pool_report());
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map_or_else(|| panic!("no {name} in\n{text}"), |s| s.value.clone())
    };
    assert_eq!(value("pgconn_health_status"), Value::Gauge(0.0));
    assert_eq!(value("pgconn_server_connections"), Value::Gauge(15.0));
    assert_eq!(value("pgconn_max_connections"), Value::Gauge(100.0));
    assert_eq!(value("pgconn_usable_connections"), Value::Gauge(97.0));
    assert_eq!(value("pgconn_utilization_ratio"), Value::Gauge(15.0 / 97.0));
    assert_eq!(value("pgconn_pool_connections"), Value::Gauge(3.0));
    assert_eq!(value("pgconn_pool_checkouts_total"), Value::Counter(42.0));
    let Value::Histogram(buckets) = value("pgconn_pool_checkout_wait_seconds") else {
        panic!("not a histogram:\n{text}")
    };
    assert_eq!(
        buckets.iter().map(|b| (b.less_than, b.count)).collect::<Vec<_>>(),
        [(0.0001, 40.0), (0.001, 41.0), (0.01, 42.0), (f64::INFINITY, 42.0)]
    );
    for family in ["pgconn_health_status", "pgconn_pool_checkouts_total", "pgconn_pool_checkout_wait_seconds"]
    {
        assert!(
            text.contains(&format!("# HELP {family} ")) && text.contains(&format!("# TYPE {family} ")),
            "{family}"
        );
    }
}

#[test]
fn an_unreachable_server_leaves_its_values_out() {
    let down = pgconn_monitor::ServerView::Unreachable { kind: "connect_failed", message: "refused".into() };
    let report = Report::new(&context(), Some(&down), None, at());
    let json: serde_json::Value = serde_json::from_str(&render::json(&report, false)).unwrap();
    assert_eq!(json["status"], "UNKNOWN");
    assert_eq!(json["server_connections"], serde_json::Value::Null);
    let text = render::prometheus(&report);
    assert!(
        text.contains("pgconn_health_status 3\n") && !text.contains("pgconn_server_connections"),
        "{text}"
    );
    assert!(render::text(&report, false).contains("Active Connections: unknown\n"));
}

#[test]
fn a_pool_section_in_text_and_json() {
    let report = pool_report();
    let text = render::text(&report, false);
    assert!(text.contains("Pool:\n  Size: 3/10 (1 idle, 2 in use, 0 waiting)\n  Checkouts: 42"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&render::json(&report, false)).unwrap();
    assert_eq!(json["pool"]["max_size"], 10);
    assert_eq!(json["pool"]["checkouts"], 42);
}

#[test]
fn a_pgbouncer_section_in_every_format() {
    let mut view = crate::health::pgbouncer(
        &[
            ("cl_active", 7.0),
            ("cl_waiting", 2.0),
            ("sv_active", 5.0),
            ("maxwait", 0.0),
            ("maxwait_us", 250_000.0),
        ],
        25.0,
        5.0,
    );
    if let pgconn_monitor::PgBouncerView::Reached(s) = &mut view {
        s.stats = vec![
            [
                ("database", serde_json::json!("app")),
                ("total_xact_count", serde_json::json!(1000)),
                ("avg_query_time", serde_json::json!(250)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ];
    }
    let report = Report::new(&context(), Some(&server(15, 100, vec![])), None, at())
        .with_pgbouncer(&view, &Thresholds::default());
    assert_eq!(report.status, pgconn_monitor::Status::Warning);
    let json: serde_json::Value = serde_json::from_str(&render::json(&report, false)).unwrap();
    assert_eq!(json["pgbouncer"]["pools"][0]["cl_waiting"], 2.0);
    assert_eq!(json["pgbouncer"]["stats"][0]["total_xact_count"], 1000);
    assert_eq!(json["alerts"][0]["metric"], "pgbouncer_waiting");
    let text = render::text(&report, false);
    assert!(text.contains("PgBouncer:\n  Pool app/app (transaction): clients 7 active, 2 waiting; servers 5 active, 0 idle, 0 used; maxwait 0.2s\n  Stats app: 1000 transactions, 0 queries, avg transaction 0.000ms, avg query 0.250ms"), "{text}");
    let metrics = render::prometheus(&report);
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str| scrape.samples.iter().find(|s| s.metric == name).map(|s| s.value.clone());
    assert_eq!(value("pgconn_pgbouncer_pools_cl_waiting"), Some(Value::Gauge(2.0)));
    assert_eq!(value("pgconn_pgbouncer_pools_maxwait_seconds"), Some(Value::Gauge(0.25)));
    assert_eq!(value("pgconn_pgbouncer_stats_total_transactions"), Some(Value::Gauge(1000.0)));
    assert_eq!(value("pgconn_pgbouncer_stats_avg_query_time_seconds"), Some(Value::Gauge(0.00025)));
    assert_eq!(value("pgconn_pgbouncer_up"), Some(Value::Gauge(1.0)));
}

/// The JSON is a contract both ways: a report read back into [`Report`] is the same report, and writes
/// the same JSON (a key renamed on one side only, or skipped when writing, fails here).
#[test]
fn json_reads_back_into_the_same_report() {
    let mut with_pool = pool_report();
    if let Some(pool) = &mut with_pool.pool {
        // JSON carries whole milliseconds.
        pool.suspected_leaks = vec![pgconn_pool::Leak {
            held_for: Duration::from_millis(61_500),
            location: "src/handler.rs:42:17".into(),
            thread: Some("request-7".into()),
        }];
        // Written once (the state's key), read back into both.
        pool.state.waiting = 3;
        pool.metrics.waiting = 3;
    }
    let busy = Report::new(&context(), Some(&server(97, 100, vec![])), None, at());
    assert!(!busy.alerts.is_empty(), "the busy report has alerts to read back");
    let unreachable =
        pgconn_monitor::ServerView::Unreachable { kind: "connect_failed", message: "refused".into() };
    let down = Report::new(&context(), Some(&unreachable), None, at());
    for (name, report) in [("plain", report()), ("pool", with_pool), ("busy", busy), ("down", down)] {
        for pretty in [false, true] {
            let json = render::json(&report, pretty);
            let read: Report =
                serde_json::from_str(&json).unwrap_or_else(|err| panic!("{name}: {err}\n{json}"));
            assert_eq!(read, report, "{name}");
            assert_eq!(render::json(&read, pretty), json, "{name}");
        }
    }
}
