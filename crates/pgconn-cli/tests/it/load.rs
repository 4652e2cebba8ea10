//! `pgconn load` against the test database: its JSON interface, exit codes and typed failures.

use pgconn_cli::load::LoadReport;
use serde_json::Value;

use crate::pgconn;

fn url() -> String {
    pgconn_tests::database_url()
}

/// What `pgconn load --json ARGS` printed, once it exited with `expected_code`.
#[track_caller]
fn load_stdout(args: &[&str], env: &[(&str, &str)], expected_code: i32) -> String {
    let mut all = vec!["load", "--json"];
    all.extend_from_slice(args);
    let run = pgconn(&all, env);
    assert_eq!(run.code, expected_code, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    run.stdout
}

/// The run's JSON by key, no key repeated.
#[track_caller]
fn load_json(args: &[&str], env: &[(&str, &str)], expected_code: i32) -> Value {
    let stdout = load_stdout(args, env, expected_code);
    pgconn_tests::assert_no_duplicate_keys(&stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The run's report read as the type the command writes ([`pgconn_tests::read_as`]).
#[track_caller]
fn load_report(args: &[&str], env: &[(&str, &str)], expected_code: i32) -> LoadReport {
    pgconn_tests::read_as(&load_stdout(args, env, expected_code))
}

#[test]
fn the_report_has_its_documented_keys() {
    let url = url();
    let json = load_json(&["--clients", "4", "--requests", "400"], &[("DATABASE_URL", &url)], 0);
    assert_eq!(json["strategy"], "direct");
    assert_eq!(json["persistent"], true);
    assert_eq!(json["clients"], 4);
    assert_eq!(
        (json["requests"].as_u64(), json["ok"].as_u64(), json["errors"].as_u64()),
        (Some(400), Some(400), Some(0))
    );
    let kinds = json["error_kinds"].as_object().unwrap();
    for kind in [
        "pool_timeout",
        "connect_timeout",
        "too_many_clients",
        "auth_failed",
        "statement_timeout",
        "connection_lost",
        "other",
    ] {
        assert_eq!(kinds[kind], 0, "{kind}");
    }
    assert!(json["throughput_rps"].as_f64().unwrap() > 0.0);
    for key in ["p50", "p95", "p99", "max"] {
        assert!(json["latency_ms"][key].as_f64().unwrap() > 0.0, "latency_ms.{key}");
    }
    for key in ["p50", "p99"] {
        assert!(json["checkout_wait_ms"][key].as_f64().is_some(), "checkout_wait_ms.{key}");
    }
    let timeline = json["timeline"].as_array().unwrap();
    assert_eq!(timeline[0]["second"], 0);
    let total: u64 = timeline.iter().map(|s| s["ok"].as_u64().unwrap() + s["errors"].as_u64().unwrap()).sum();
    assert_eq!(total, 400);
    assert_eq!(json["pool"]["checkouts"], 400);
    assert!(json["pool"]["size"].as_u64().unwrap() <= 10);
    let report: LoadReport = pgconn_tests::read_as(&json.to_string());
    assert_eq!((report.requests, report.pool.metrics.checkouts), (400, 400));
}

#[test]
fn a_duration_runs_for_that_long() {
    let url = url();
    let report = load_report(&["--clients", "2", "--duration", "1.5"], &[("DATABASE_URL", &url)], 0);
    let elapsed = report.elapsed_s;
    assert!((1.5..3.0).contains(&elapsed), "elapsed {elapsed}");
    assert_eq!(report.timeline.len(), 2);
}

#[test]
fn connect_per_request_is_the_same_command() {
    let url = url();
    let report = load_report(
        &["--clients", "2", "--requests", "20"],
        &[("DATABASE_URL", &url), ("DB_CONN_MAX_AGE", "0")],
        0,
    );
    assert!(!report.persistent);
    assert!(report.pool.metrics.connections_opened >= 20);
    assert!(report.pool.metrics.connections_closed.per_request >= 20);
}

#[test]
fn failed_requests_exit_1_with_their_kind() {
    let url = url();
    let report = load_report(&["--requests", "10", "--query", "SELECT 1/0"], &[("DATABASE_URL", &url)], 1);
    assert_eq!((report.ok, report.errors), (0, 10));
    assert_eq!(report.error_kinds["other"], 10);
    assert!(report.error_examples["other"].contains("division by zero"), "{:?}", report.error_examples);
    let report = load_report(
        &["--requests", "2", "--query", "SELECT pg_sleep(1)"],
        &[("DATABASE_URL", &url), ("DB_STATEMENT_TIMEOUT", "50")],
        1,
    );
    assert_eq!(report.error_kinds["statement_timeout"], 2);
}

#[test]
fn a_pool_that_cannot_be_built_says_why() {
    let wrong = url().replacen("%40", "%41", 1);
    let json = load_json(&["--requests", "10"], &[("DATABASE_URL", &wrong)], 1);
    assert_eq!(json["error"]["kind"], "auth_failed");
    let run = pgconn(&["load"], &[("DATABASE_URL", &wrong)]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with("pgconn load: cannot build the pool (auth_failed): authentication failed"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("p@ss") && !run.stdout.contains("p@ss"));
}

#[test]
fn invalid_configuration_exits_2() {
    let run = pgconn(&["load"], &[("DB_NAME", "x"), ("DB_PORT", "none")]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stderr.trim(), "DB_PORT must be a whole number from 1 to 65535, got \"none\"");
}

#[test]
fn report_every_prints_json_lines_of_samples_then_the_report() {
    let url = url();
    let run = pgconn(
        &["load", "--json", "--clients", "2", "--duration", "1.2", "--report-every", "0.5"],
        &[("DATABASE_URL", &url)],
    );
    assert_eq!(run.code, 0, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let (last, samples) = lines.split_last().expect("at least the report");
    let report: LoadReport = pgconn_tests::read_as(last);
    // 0.5 s, 1.0 s, and the last 0.2 s.
    assert_eq!(samples.len(), 3, "{}", run.stdout);
    let mut counted = 0;
    for line in samples {
        pgconn_tests::assert_no_duplicate_keys(line);
        let json: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let sample: pgconn_cli::load::SampleLine =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(
            serde_json::to_value(&sample).expect("serializable"),
            json,
            "the type and the JSON differ"
        );
        let sample = sample.sample;
        assert_eq!(sample.requests, sample.ok + sample.errors);
        assert!(sample.interval_s > 0.0 && sample.interval_s < 0.9, "{line}");
        counted += sample.requests;
    }
    assert_eq!(counted, report.requests, "the samples add up to the report");
    assert!(report.requests > 0);
}

#[test]
fn a_thread_per_request_runs_each_request_on_a_new_thread() {
    let url = url();
    let args = ["--clients", "1", "--requests", "300", "--thread-per-request"];
    let env = [("DATABASE_URL", url.as_str()), ("DB_POOL_MAX_SIZE", "20"), ("DB_POOL_MIN_IDLE", "0")];
    let report = load_report(&args, &env, 0);
    assert!(report.thread_per_request);
    assert_eq!((report.ok, report.errors), (300, 0));
    // Every checkout came from a thread that never had a connection, and each returned one stays parked
    // in the slot of a thread that ended: the next thread takes it from there. Were it stranded until the
    // sweeper, r2d2 would open more, up to its 20; one request at a time needs one (and `Pool::new`'s
    // first one, closed).
    assert_eq!(report.pool.metrics.checkouts, 300);
    assert!(report.pool.metrics.connections_opened <= 3, "{:?}", report.pool.metrics.connections_opened);
    // A dedicated connection per request thread is connect per request (`DB_CONN_MAX_AGE=0`), not this.
    let refused = pgconn(&["load", "--thread-per-request", "--dedicated"], &[("DATABASE_URL", &url)]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
}

#[test]
fn the_driver_without_a_runtime_runs_the_query_on_one_descriptor_per_connection() {
    let url = url();
    let env = [("DATABASE_URL", url.as_str()), ("DB_POOL_MIN_IDLE", "0")];
    let fds = |clients: &str, extra: &[&str]| {
        let mut args = vec!["--clients", clients, "--requests", "400", "--dedicated"];
        args.extend_from_slice(extra);
        let report = load_report(&args, &env, 0);
        assert_eq!((report.ok, report.errors), (400, 0), "{args:?}");
        (report.baseline, report.process.expect("a process sample on Linux").fds)
    };
    for (extra, baseline) in [
        (&["--no-runtime"][..], "dedicated-no-runtime"),
        (&["--prepared", "--no-runtime"][..], "dedicated-prepared-no-runtime"),
    ] {
        let (name, one) = fds("1", extra);
        assert_eq!(name, baseline);
        let (_, nine) = fds("9", extra);
        // The threads hold their connections until the process is sampled: 8 more connections, 8 more
        // descriptors (their sockets) and nothing else.
        assert_eq!(nine - one, 8, "{extra:?}");
    }
    // `postgres::Client` beside it: a socket and its runtime's three descriptors per connection.
    let (_, one) = fds("1", &["--prepared"]);
    let (_, nine) = fds("9", &["--prepared"]);
    assert_eq!(nine - one, 32);
}

#[test]
fn a_reader_that_stops_reading_ends_the_run_quietly() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    let url = url();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgconn"))
        .args(["load", "--json", "--report-every", "0.1", "--duration", "30", "--clients", "1"])
        .env_clear()
        .env("DATABASE_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: one sample read, then the pipe closed.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"sample\":"), "{first}");
    let started = std::time::Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "ran on for {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // A shell's status for a program ended by SIGPIPE: not a success the run did not earn.
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
