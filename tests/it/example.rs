//! The example server (`crates/pgconn-example`, the binary `thread_per_request`), run as a user runs it: a
//! process configured by the environment, answering HTTP. `cargo xtask test` builds it and exports its
//! path as `PGCONN_TEST_EXAMPLE_BIN`.

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pgconn_monitor::{Report, Status};
use pgconn_tests::{database_url, pgbouncer_url, require, settings};

/// The variable `cargo xtask test` sets to the example server's path.
const EXAMPLE_BIN_VAR: &str = pgconn_testkit::vars::EXAMPLE_BIN;

/// The example server, killed when dropped (so a failed assertion leaves nothing running).
struct Server {
    child: Child,
    address: SocketAddr,
    /// Everything it printed on stderr after the listening line.
    log: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the example server with exactly `env` (plus `PGCONN_LISTEN` on a free port), waiting for it to
/// listen; `Err` with its exit status and stderr when it exits first.
fn start(env: &[(&str, &str)]) -> Result<Server, String> {
    let mut child = Command::new(require(EXAMPLE_BIN_VAR))
        .env_clear()
        .envs(env.iter().copied())
        .env("PGCONN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                if let Some((_, rest)) = line.split_once("listening on http://") {
                    let address = rest.split_whitespace().next().unwrap().parse().unwrap();
                    return Ok(Server { child, address, log: rx });
                }
                printed.push(line);
            }
            // The server closed stderr: it exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                return Err(format!("{status}\n{}", printed.join("\n")));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the example server did not listen within 30 s:\n{}", printed.join("\n"));
            }
        }
    }
}

/// What the server answered.
struct Answer {
    code: u16,
    content_type: String,
    body: String,
}

/// Sends `request` as it is on a new connection and reads one answer: its head, then `Content-Length`
/// bytes of body (the server keeps the connection open for a next request), or to the end when the answer
/// has no length (then the server closes).
fn send(server: &Server, request: &str) -> Answer {
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    send_on(&mut stream, request)
}

/// Sends `request` on `stream` and reads one answer (see [`send`]).
fn send_on(stream: &mut TcpStream, request: &str) -> Answer {
    stream.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            });
            if length.is_some_and(|length| bytes.len() >= end + 4 + length) {
                break;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            // A server that closes with part of the request unread resets the connection after its answer.
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !bytes.is_empty() => break,
            Err(e) => panic!("reading the answer to {request:?}: {e}"),
        }
    }
    let response = String::from_utf8(bytes).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head end: {response:?}"));
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    };
    let content_type = header("content-type").unwrap_or_default();
    let length: usize =
        header("content-length").unwrap_or_else(|| panic!("no Content-Length: {head}")).parse().unwrap();
    assert_eq!(length, body.len(), "Content-Length matches the body");
    Answer { code, content_type, body: body.to_owned() }
}

fn get(server: &Server, target: &str) -> Answer {
    send(server, &format!("GET {target} HTTP/1.1\r\nHost: test\r\nUser-Agent: it\r\n\r\n"))
}

/// Checks that `GET target` answers `code` with a JSON body, and returns the body.
#[track_caller]
fn check_json(server: &Server, target: &str, code: u16) -> serde_json::Value {
    let answer = get(server, target);
    assert_eq!(answer.code, code, "GET {target}: {}", answer.body);
    assert_eq!(answer.content_type, "application/json", "GET {target}");
    pgconn_tests::assert_no_duplicate_keys(&answer.body);
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("GET {target}: {e}: {}", answer.body))
}

/// Checks that `GET /health` answers `code` with the monitor's report, read as its type
/// ([`pgconn_tests::read_as`]).
#[track_caller]
fn check_health(server: &Server, code: u16) -> Report {
    pgconn_tests::read_as(&check_json(server, "/health", code).to_string())
}

/// Checks that `GET target` answers `code` with `{"error": {"kind": kind, ...}}`, and returns the message.
#[track_caller]
fn check_error(server: &Server, target: &str, code: u16, kind: &str) -> String {
    let body = check_json(server, target, code);
    assert_eq!(body["error"]["kind"], kind, "GET {target}: {body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[track_caller]
fn check_serves_queries_health_and_metrics(env: &[(&str, &str)]) {
    let server = start(env).unwrap_or_else(|e| panic!("the example server did not start: {e}"));

    let body = check_json(&server, "/", 200);
    assert!(body["now"].as_str().is_some_and(|now| now.len() > 10), "{body}");
    assert!(body["backend_pid"].as_i64().is_some_and(|pid| pid > 0), "{body}");
    let body = check_json(&server, "/?sleep_ms=20", 200);
    assert_eq!(body["sleep_ms"], 20);

    let health = check_health(&server, 200);
    assert!([Status::Healthy, Status::Warning].contains(&health.status), "{health:#?}");
    let pool = health.pool.as_ref().expect("/health reports the pool");
    assert!(pool.state.max_size > 0, "{health:#?}");
    assert!(pool.metrics.checkouts >= 2, "{health:#?}");

    let metrics = get(&server, "/metrics");
    assert_eq!(metrics.code, 200);
    assert_eq!(metrics.content_type, "text/plain; version=0.0.4");
    // The text exposition: `# HELP`/`# TYPE` comments, and `name{labels} value` samples.
    for line in metrics.body.lines().filter(|line| !line.is_empty() && !line.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        assert!(value.parse::<f64>().is_ok(), "not a number in {line}");
        assert!(name.starts_with("pgconn_"), "{line}");
    }
    let checkouts = metrics.body.lines().find_map(|line| line.strip_prefix("pgconn_pool_checkouts_total "));
    assert!(checkouts.is_some_and(|n| n.parse::<f64>().unwrap() >= 2.0), "{}", metrics.body);

    check_error(&server, "/nowhere", 404, "not_found");
    check_error(&server, "/?sleep_ms=soon", 400, "bad_request");
    check_error(&server, "/?sleep_ms=1001", 400, "bad_request");
    let answer = send(&server, "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(answer.code, 405, "{}", answer.body);
    for bad in ["nonsense\r\n\r\n", "GET / SMTP/1.0\r\n\r\n", "GET /\r\n\r\n"] {
        let answer = send(&server, bad);
        assert_eq!(answer.code, 400, "{bad:?}: {}", answer.body);
    }
    // A head longer than 8 KiB is refused rather than read without end.
    let long = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "x".repeat(9000));
    assert_eq!(send(&server, &long).code, 400);
}

#[test]
fn the_example_server_keeps_a_connection_open_for_the_next_request() {
    let server = start(&[("DATABASE_URL", &database_url())]).unwrap();
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = "GET /?sleep_ms=1 HTTP/1.1\r\nHost: test\r\n\r\n";
    let pids: Vec<serde_json::Value> = (0..3)
        .map(|_| {
            let answer = send_on(&mut stream, request);
            assert_eq!(answer.code, 200, "{}", answer.body);
            serde_json::from_str::<serde_json::Value>(&answer.body).unwrap()["backend_pid"].clone()
        })
        .collect();
    assert!(pids.iter().all(|pid| pid.as_i64().is_some_and(|pid| pid > 0)), "{pids:?}");
    // HTTP/1.1 keep-alive: three answers on one connection, and it is still open.
    let answer = send_on(&mut stream, "GET /health/live HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    assert_eq!(answer.code, 200);
}

#[test]
fn the_example_server_answers_through_the_pool() {
    check_serves_queries_health_and_metrics(&[("DATABASE_URL", &database_url())]);
}

#[test]
fn the_example_server_answers_through_pgbouncer() {
    let url = pgbouncer_url();
    check_serves_queries_health_and_metrics(&[
        ("DATABASE_URL", &database_url()),
        ("USE_PGBOUNCER", "true"),
        ("PGBOUNCER_URL", &url),
    ]);
}

#[test]
fn the_example_server_connecting_per_request() {
    check_serves_queries_health_and_metrics(&[("DATABASE_URL", &database_url()), ("DB_CONN_MAX_AGE", "0")]);
}

#[test]
fn a_database_error_is_a_503_with_its_kind() {
    let server = start(&[("DATABASE_URL", &database_url()), ("DB_STATEMENT_TIMEOUT", "100")]).unwrap();
    let message = check_error(&server, "/?sleep_ms=1000", 503, "statement_timeout");
    assert!(message.contains("DB_STATEMENT_TIMEOUT"), "{message}");
    // The connection stays good: the next request is served.
    check_json(&server, "/", 200);
    // The failure is counted, and logged with its kind.
    let health = check_health(&server, 503);
    assert_eq!(health.status, Status::Critical, "1 of 2 queries failed: {health:#?}");
    assert_eq!(health.pool.as_ref().map(|p| p.metrics.query_errors), Some(1), "{health:#?}");
    let mut logged = Vec::new();
    while let Ok(line) = server.log.recv_timeout(Duration::from_secs(5)) {
        if line.contains("request failed (statement_timeout)") {
            return;
        }
        logged.push(line);
    }
    panic!("no log line about the failed request: {logged:?}");
}

#[test]
fn a_wrong_password_stops_the_server_at_start_with_its_cause() {
    let settings = settings(&[]);
    let db = &settings.database;
    let (host, port) = (db.primary().host.to_string(), db.primary().port.to_string());
    let env = [
        ("DB_HOST", host.as_str()),
        ("DB_PORT", port.as_str()),
        ("DB_NAME", db.dbname.as_str()),
        ("DB_USER", db.user.as_str()),
        ("DB_PASSWORD", "not-the-password"),
    ];
    let Err(failure) = start(&env) else { panic!("the server started with a wrong password") };
    assert!(failure.starts_with("exit status: 1"), "{failure}");
    assert!(failure.contains("cannot build the pool (auth_failed): authentication failed"), "{failure}");
    assert!(!failure.contains("not-the-password"), "{failure}");
}

#[test]
fn an_invalid_configuration_is_refused_naming_the_variable() {
    let env = [("DATABASE_URL", "postgresql://app@localhost/app"), ("DB_POOL_MAX_SIZE", "lots")];
    let Err(failure) = start(&env) else { panic!("the server started with DB_POOL_MAX_SIZE=lots") };
    assert!(failure.starts_with("exit status: 2"), "{failure}");
    assert!(failure.contains("DB_POOL_MAX_SIZE"), "{failure}");
}

#[test]
fn a_burst_clears_from_health_once_the_window_has_passed() {
    let window = 3;
    let server = start(&[
        ("DATABASE_URL", &database_url()),
        ("DB_STATEMENT_TIMEOUT", "100"),
        ("PGCONN_HEALTH_WINDOW", &window.to_string()),
    ])
    .unwrap();
    check_error(&server, "/?sleep_ms=500", 503, "statement_timeout");
    check_json(&server, "/", 200);
    let health = check_health(&server, 503);
    assert!(health.alerts.iter().any(|a| a.metric == "pool_error_rate"), "{health:#?}");
    let pool_rates = |health: &Report| health.rates.as_ref().and_then(|r| r.pool).map(|p| p.query_errors);
    assert_eq!(pool_rates(&health), Some(1), "{health:#?}");
    // Still within the window: still reported.
    thread::sleep(Duration::from_millis(500));
    check_json(&server, "/", 200);
    assert_eq!(check_health(&server, 503).status, Status::Critical);
    // Past it: the burst is gone from /health, though the counters keep it.
    thread::sleep(Duration::from_secs(window + 1));
    check_json(&server, "/", 200);
    let health = check_health(&server, 200);
    assert_eq!(health.status, Status::Healthy, "{health:#?}");
    assert_eq!(pool_rates(&health), Some(0), "{health:#?}");
    assert_eq!(
        health.pool.as_ref().map(|p| p.metrics.query_errors),
        Some(1),
        "the counter stays cumulative: {health:#?}"
    );
    let metrics = get(&server, "/metrics").body;
    assert!(metrics.contains("pgconn_pool_query_errors_total 1\n"), "{metrics}");
}

#[test]
fn live_and_ready_across_a_database_stop_and_start() {
    let mut cluster = pgconn_tests::private_cluster(&pgconn_tests::ClusterOptions::default());
    let url = cluster.info().database_url();
    let server = start(&[
        ("DATABASE_URL", &url),
        ("DB_CONNECT_TIMEOUT", "2"),
        ("DB_POOL_TIMEOUT", "3000"),
        ("DB_POOL_MIN_IDLE", "1"),
    ])
    .unwrap();
    assert_eq!(check_json(&server, "/health/live", 200)["status"], "live");
    assert_eq!(check_json(&server, "/health/ready", 200)["status"], "ready");

    cluster.stop_server().unwrap();
    let started = std::time::Instant::now();
    let answer = get(&server, "/health/ready");
    assert_eq!(answer.code, 503, "{}", answer.body);
    assert!(started.elapsed() < Duration::from_secs(4), "ready took {:?}", started.elapsed());
    assert_eq!(
        check_json(&server, "/health/live", 200)["status"],
        "live",
        "liveness never asks the database"
    );

    cluster.start_server().unwrap();
    let started = std::time::Instant::now();
    loop {
        let answer = get(&server, "/health/ready");
        if answer.code == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not ready 15 s after the restart: {}",
            answer.body
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(started.elapsed() < Duration::from_secs(5), "ready again only after {:?}", started.elapsed());
}
