//! `pgconn monitor` and `pgconn check` against real servers: sessions, thresholds, a full server, watch.

use std::thread;
use std::time::{Duration, Instant};

use pgconn_monitor::{Report, Status};
use pgconn_tests::{ClusterOptions, private_cluster};

use crate::pgconn;

fn connect(url: &str, app: &str) -> postgres::Client {
    let mut config: postgres::Config = url.parse().unwrap();
    config.application_name(app).connect_timeout(Duration::from_secs(10));
    config.connect(postgres::NoTls).unwrap_or_else(|e| panic!("cannot connect as {app}: {e}"))
}

/// One line or document of `pgconn monitor --json` read as [`Report`] ([`pgconn_tests::read_as`]).
#[track_caller]
fn read_report(text: &str) -> Report {
    pgconn_tests::read_as(text)
}

#[track_caller]
fn monitor_report(url: &str) -> Report {
    let run = pgconn(&["monitor", "--json"], &[("DATABASE_URL", url)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    read_report(&run.stdout)
}

#[test]
fn sessions_are_listed_with_their_states_and_ages() {
    let url = pgconn_tests::database_url();
    let idle: Vec<_> = (0..3).map(|_| connect(&url, "pgconn_it_mon_idle")).collect();
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let mut client = connect(&url, "pgconn_it_mon_busy");
            thread::spawn(move || client.simple_query("SELECT pg_sleep(3)").map(drop))
        })
        .collect();
    thread::sleep(Duration::from_millis(1200));
    let report = monitor_report(&url);
    let mine =
        |app: &str| report.connections.iter().filter(|c| c.application_name == app).collect::<Vec<_>>();
    let (idle_rows, busy_rows) = (mine("pgconn_it_mon_idle"), mine("pgconn_it_mon_busy"));
    assert_eq!((idle_rows.len(), busy_rows.len()), (3, 2), "{report:#?}");
    for row in &idle_rows {
        assert_eq!(row.state, "idle");
        assert!(row.age_s >= 1.0, "{row:?}");
        assert!(row.idle_s.expect("an idle session has an idle time") >= 1.0, "{row:?}");
        assert_eq!(row.user, "pgconn_app");
    }
    for row in &busy_rows {
        assert_eq!(row.state, "active");
        assert_eq!(row.idle_s, None);
    }
    assert!(report.connections_by_state["idle"] >= 3);
    assert!(report.server_connections.expect("the server was asked") >= 6);
    let stats = report.query_stats.as_ref().expect("query statistics");
    assert_eq!(stats.source, pgconn_monitor::QuerySource::PgStatDatabase);
    let own = report.backend_pid.expect("the monitor's own backend");
    assert!(report.connections.iter().any(|c| c.pid == own && c.application_name == "pgconn-monitor"));
    for handle in busy {
        handle.join().unwrap().unwrap();
    }
    drop(idle);
}

#[test]
fn utilization_thresholds_flip_the_status_and_the_exit_code() {
    // 20 slots, 3 of them reserved for superusers; the monitor connects as the superuser.
    let cluster = private_cluster(&ClusterOptions::default().setting("max_connections", "20"));
    let admin_url = cluster.info().admin_url();
    // The holders sit idle in another database: they take server slots without tripping the idle alert
    // about the monitored database.
    let (app_url, admin_holder_url) = (
        cluster.info().database_url().replace("/pgconn_test", "/postgres"),
        admin_url.replace("/pgconn_test", "/postgres"),
    );
    let check = |expected: i32, held: usize| {
        let run = pgconn(&["check"], &[("DATABASE_URL", &admin_url)]);
        assert_eq!(run.code, expected, "with {held} sessions held: {}", run.stdout);
        run.stdout
    };
    // 17 usable slots (20 less 3 reserved): above 80% is 14, above 95% is 17.
    let mut held: Vec<_> = (0..12).map(|_| connect(&app_url, "holder")).collect();
    let line = check(0, held.len());
    assert!(
        line.starts_with(
            "HEALTHY: 13/17 usable connections (76.5%, max_connections 20) on pgconn_test; no alerts"
        ),
        "{line}"
    );
    held.push(connect(&app_url, "holder"));
    let line = check(1, held.len());
    assert!(line.starts_with("WARNING: 14/17 usable connections (82.4%, max_connections 20)"), "{line}");
    held.extend((0..3).map(|_| connect(&app_url, "holder")));
    let line = check(2, held.len());
    assert!(line.starts_with("CRITICAL: 17/17 usable connections (100.0%"), "{line}");
    // Past the usable slots: only superusers may take the reserved ones.
    held.extend((0..3).map(|_| connect(&admin_holder_url, "holder")));
    let line = check(2, held.len());
    assert!(line.starts_with("CRITICAL: 20/17 usable connections (117.6%"), "{line}");
    // The last slot taken: the monitor itself is refused, and says so.
    held.push(connect(&admin_holder_url, "holder"));
    let line = check(2, held.len());
    assert!(
        line.starts_with(
            "CRITICAL: connections unknown on pgconn_test; PostgreSQL refused the monitor's connection"
        ),
        "{line}"
    );
    let run = pgconn(&["monitor", "--json"], &[("DATABASE_URL", &admin_url)]);
    let report = read_report(&run.stdout);
    assert_eq!(report.status, Status::Critical);
    assert_eq!(report.alerts[0].metric, "server_connection");
    assert!(report.alerts[0].message.contains("too many clients"), "{report:#?}");
    drop(held);
}

#[test]
fn an_unreachable_server_is_unknown() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgresql://app@127.0.0.1:{port}/app");
    let run = pgconn(&["check"], &[("DATABASE_URL", &url)]);
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with("UNKNOWN: connections unknown on app; cannot query PostgreSQL (connect_failed)"),
        "{}",
        run.stdout
    );
    let run = pgconn(&["check"], &[("DB_NAME", "app"), ("DB_PORT", "none")]);
    assert_eq!(run.code, 3);
    assert_eq!(run.stdout, "UNKNOWN: invalid configuration\n");
}

#[test]
fn watch_prints_count_reports_at_the_interval() {
    let url = pgconn_tests::database_url();
    let started = Instant::now();
    let run = pgconn(
        &["monitor", "--watch", "--count", "3", "--interval", "1", "--json"],
        &[("DATABASE_URL", &url)],
    );
    let took = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let reports: Vec<Report> = run.stdout.lines().map(read_report).collect();
    assert_eq!(reports.len(), 3);
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "took {took:?}");
    // The monitor keeps its connection between reports: its age grows.
    let ages: Vec<f64> =
        reports.iter().map(|r| r.connection_age_s.expect("the monitor's connection age")).collect();
    assert!(ages[2] > ages[0] + 1.5, "{ages:?}");
}

#[test]
fn prometheus_output_parses_back() {
    let url = pgconn_tests::database_url();
    let run = pgconn(&["monitor", "--format", "prometheus"], &[("DATABASE_URL", &url)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let scrape = prometheus_parse::Scrape::parse(run.stdout.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let names: Vec<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "pgconn_health_status",
        "pgconn_server_connections",
        "pgconn_max_connections",
        "pgconn_utilization_ratio",
    ] {
        assert!(names.contains(&name), "{name} missing from\n{}", run.stdout);
    }
}
