//! A thread-per-request HTTP server on a pgconn pool: the example to copy.
//!
//! It is configured like any program that uses pgconn, by the environment (`docs/configuration.md`),
//! plus `PGCONN_LISTEN`, the address to listen on (default `127.0.0.1:8080`):
//!
//! ```sh
//! export DATABASE_URL='postgresql://app:secret@localhost:5432/app'
//! cargo run --release -p pgconn-pool --example thread_per_request
//! curl -i localhost:8080/                 # one query through the pool, answered as JSON
//! curl -i 'localhost:8080/?sleep_ms=50'   # the same, holding the connection 50 ms like a slower request
//! curl -i localhost:8080/health           # the pool's health report; 503 when CRITICAL
//! curl -i localhost:8080/health/live      # 200 while the process serves at all (liveness)
//! curl -i localhost:8080/health/ready     # 200 while a connection can be checked out (readiness)
//! curl -s localhost:8080/metrics          # the same report for Prometheus
//! ```
//!
//! `cargo xtask demo` runs it connecting per request, pooled, and through PgBouncer, under load.
//!
//! What to copy: build one [`Pool`] at start-up and share it between request threads (clones are
//! cheap); in a request, check out a connection, use it, and let it drop; answer a database error with
//! 503 and the error's kind. Every wait has a bound: the client's socket has read and write timeouts,
//! and the pool bounds the database side (`DB_POOL_TIMEOUT` for a connection, `DB_CONNECT_TIMEOUT` for
//! opening one, `DB_STATEMENT_TIMEOUT` and `DB_QUERY_TIMEOUT` for a query).

// A program: telling the operator what it does is its job.
#![allow(clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use pgconn_config::{ConnMaxAge, Settings};
use pgconn_monitor::{Context, DEFAULT_WINDOW, PoolSnapshot, Report, Status, Window, render};
use pgconn_pool::Pool;
use serde_json::{Value, json};

/// Request threads running at once, at most. Past it, a request is answered 503 straight away, so a
/// flood of connections cannot start threads without limit. (Database connections are limited by the
/// pool, `DB_POOL_MAX_SIZE`, not by this.)
const MAX_REQUESTS: usize = 1024;

/// How long a client may take to send its request, and to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The request line and headers together, at most; a longer head is a bad request.
const MAX_HEAD: u64 = 8 * 1024;

/// The largest `?sleep_ms=` accepted.
const MAX_SLEEP_MS: u32 = 1000;

/// How long `/health/ready` waits for a connection (at most `DB_POOL_TIMEOUT`): a readiness probe must
/// answer well within its own timeout.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What every request thread shares: the pool, and the window `/health` judges rates over
/// (`PGCONN_HEALTH_WINDOW` seconds, default 60).
struct App {
    pool: Pool,
    window: Mutex<Window>,
}

fn main() -> ExitCode {
    // The pool logs through `log` (connect failures, leak warnings); show them on stderr.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    // 1. The configuration, from the environment: every problem at once, each naming its variable.
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            for problem in e.problems() {
                eprintln!("thread_per_request: {problem}");
            }
            return ExitCode::from(2);
        }
    };
    let listen = std::env::var("PGCONN_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let window = match std::env::var("PGCONN_HEALTH_WINDOW") {
        Err(_) => DEFAULT_WINDOW,
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(seconds) if (1..=86_400).contains(&seconds) => Duration::from_secs(seconds),
            _ => {
                eprintln!(
                    "thread_per_request: PGCONN_HEALTH_WINDOW must be whole seconds from 1 to 86400, got {text:?}"
                );
                return ExitCode::from(2);
            }
        },
    };

    // 2. One pool for the whole process, built before serving anything: a wrong password, an unknown
    //    database or an unreachable server fails here, with its cause, instead of at the first request.
    let pool = match Pool::new(&settings) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("thread_per_request: cannot build the pool ({}): {e}", e.kind());
            return ExitCode::FAILURE;
        }
    };

    let listener = match TcpListener::bind(&listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("thread_per_request: cannot listen on {listen} (PGCONN_LISTEN): {e}");
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().map_or(listen, |a| a.to_string());
    let connections = match settings.conn_max_age {
        ConnMaxAge::PerRequest => "a connection per request (DB_CONN_MAX_AGE=0)".to_owned(),
        _ => format!("a pool of up to {} connections", settings.pool.max_size),
    };
    eprintln!(
        "thread_per_request: listening on http://{address} ({connections}, strategy {})",
        settings.strategy
    );

    // 3. One thread per request, at most MAX_REQUESTS at once.
    let app = Arc::new(App { pool, window: Mutex::new(Window::new(window)) });
    let running = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, for instance: pause rather than spin, then go on.
                log::warn!("cannot accept a connection: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // Only this loop adds to `running`, so looking first cannot let it overshoot.
        if running.load(Ordering::SeqCst) >= MAX_REQUESTS {
            too_busy(stream);
            continue;
        }
        let slot = Slot::take(&running);
        let app = Arc::clone(&app);
        // If the thread cannot start, the closure is dropped: the slot is given back, the connection closed.
        let spawned = thread::Builder::new().name("request".to_owned()).spawn(move || {
            let _slot = slot;
            serve(stream, &app);
        });
        if let Err(e) = spawned {
            log::warn!("cannot start a request thread: {e}");
        }
    }
    ExitCode::SUCCESS
}

/// A request thread's place under [`MAX_REQUESTS`]; dropping it (when the thread ends, even by a panic)
/// gives the place back.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(running: &Arc<AtomicUsize>) -> Slot {
        running.fetch_add(1, Ordering::SeqCst);
        Slot(Arc::clone(running))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers 503 from the accept loop, without starting a thread or reading the request. (Closing a socket
/// whose request was not read makes the kernel reset the connection, so the client may see a reset
/// instead of this answer: either way it is told no at once.)
fn too_busy(mut stream: TcpStream) {
    // A short bound: the accept loop must not wait on one client.
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = Response::error(503, "busy", "too many requests in progress; retry later").write_to(&mut stream);
}

/// Reads one request from `stream`, answers it, and closes the connection.
fn serve(mut stream: TcpStream, app: &App) {
    // No wait without a bound: a client that sends nothing, or takes nothing, is given up on.
    if stream.set_read_timeout(Some(CLIENT_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(CLIENT_TIMEOUT)).is_err()
    {
        return;
    }
    let response = match read_request(&stream) {
        Some((method, target)) => route(&method, &target, app),
        None => Response::error(400, "bad_request", "expected an HTTP/1.x request line and headers"),
    };
    // The client may be gone already; there is no one to tell.
    let _ = response.write_to(&mut stream);
}

/// The method and target (`GET`, `/health`) of the request on `stream`, after reading its headers;
/// `None` when it is malformed, longer than [`MAX_HEAD`], cut short, or not sent in time.
fn read_request(stream: &TcpStream) -> Option<(String, String)> {
    let mut head = BufReader::new(stream.take(MAX_HEAD));
    let mut line = String::new();
    head.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    // The headers end with an empty line. This server needs none of them.
    loop {
        let mut header = String::new();
        if head.read_line(&mut header).ok()? == 0 {
            return None;
        }
        if header.trim_end().is_empty() {
            return Some((method.to_owned(), target.to_owned()));
        }
    }
}

fn route(method: &str, target: &str, app: &App) -> Response {
    let pool = &app.pool;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (method, path) {
        ("GET", "/") => {
            let Some(sleep_ms) = sleep_ms(query) else {
                let message =
                    format!("sleep_ms must be a whole number of milliseconds from 0 to {MAX_SLEEP_MS}");
                return Response::error(400, "bad_request", &message);
            };
            match index(pool, sleep_ms) {
                Ok(body) => Response::json(200, &body),
                Err(e) => database_error(&e),
            }
        }
        ("GET", "/health") => {
            let report = report(app);
            let code = match report.status {
                Status::Healthy | Status::Warning => 200,
                Status::Critical | Status::Unknown => 503,
            };
            Response { code, content_type: "application/json", body: render::json(&report, false) }
        }
        // Liveness: the process answers. Never the database: an outage must not restart every pod.
        ("GET", "/health/live") => Response::json(200, &json!({ "status": "live" })),
        ("GET", "/health/ready") => ready(pool),
        ("GET", "/metrics") => Response {
            code: 200,
            content_type: "text/plain; version=0.0.4",
            body: render::prometheus(&report(app)),
        },
        (_, "/" | "/health" | "/health/live" | "/health/ready" | "/metrics") => {
            Response::error(405, "method_not_allowed", "only GET is served")
        }
        _ => Response::error(
            404,
            "not_found",
            "no such page; try /, /health, /health/live, /health/ready or /metrics",
        ),
    }
}

/// Readiness: a connection can be checked out within [`READY_TIMEOUT`] and answers a query, now. 503 with
/// the error's kind while not (the server is down or unreachable, or every connection is busy), 200 again
/// at the first probe after recovery: nothing here remembers the past.
fn ready(pool: &Pool) -> Response {
    let started = Instant::now();
    let result = pool.get_timeout(READY_TIMEOUT).and_then(|mut conn| conn.simple_query("SELECT 1").map(drop));
    match result {
        Ok(()) => Response::json(
            200,
            &json!({ "status": "ready", "checkout_and_query_ms": started.elapsed().as_secs_f64() * 1000.0 }),
        ),
        Err(e) => database_error(&e),
    }
}

/// `GET /`: what a request handler does with the pool.
fn index(pool: &Pool, sleep_ms: u32) -> Result<Value, pgconn_pool::Error> {
    // Check out a connection: at most DB_POOL_TIMEOUT of waiting, then a typed error. It goes back to
    // the pool when `conn` is dropped at the end of this function, whatever happens in between.
    let mut conn = pool.get()?;
    // The pool's query API: one round trip with an unnamed statement, so it also works behind PgBouncer
    // in transaction mode; each parameter's PostgreSQL type comes from its Rust type (f64: float8).
    let seconds = f64::from(sleep_ms) / 1000.0;
    let row = conn.query_one("SELECT now()::text, pg_backend_pid() FROM pg_sleep($1)", &[&seconds])?;
    Ok(json!({ "now": row.get::<_, String>(0), "backend_pid": row.get::<_, i32>(1), "sleep_ms": sleep_ms }))
}

/// `sleep_ms=N` from a query string: 0 when absent, `None` when not a number up to [`MAX_SLEEP_MS`].
fn sleep_ms(query: &str) -> Option<u32> {
    match query.split('&').find_map(|pair| pair.strip_prefix("sleep_ms=")) {
        None => Some(0),
        Some(value) => value.parse().ok().filter(|ms| *ms <= MAX_SLEEP_MS),
    }
}

/// The health report of the pool, as `/health` and `/metrics` serve it: the pool's own view (size,
/// waits, timeouts, errors, leaks), read from memory without a database round trip. Timeouts, error
/// rates and query times are judged over the window, so a burst clears from `/health` once it is over.
fn report(app: &App) -> Report {
    let snapshot = PoolSnapshot::of(&app.pool);
    let rates = app.window.lock().unwrap_or_else(PoisonError::into_inner).observe(
        Instant::now(),
        Some(&snapshot),
        None,
    );
    Report::windowed(
        &Context::new(app.pool.settings()),
        None,
        Some(&snapshot),
        Some(&rates),
        SystemTime::now(),
    )
}

/// A database error: 503, with its kind (`pool_timeout`, `too_many_clients`, ..., see `docs/pool.md`)
/// for the client and the message, which says what to do and never contains a password, for people.
fn database_error(e: &pgconn_pool::Error) -> Response {
    log::warn!("request failed ({}): {e}", e.kind());
    Response::error(503, e.kind().as_str(), &e.to_string())
}

/// An HTTP response. Each one closes its connection: one request per connection keeps the server simple.
struct Response {
    code: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn json(code: u16, body: &Value) -> Response {
        Response { code, content_type: "application/json", body: body.to_string() }
    }

    /// `{"error": {"kind": ..., "message": ...}}`.
    fn error(code: u16, kind: &str, message: &str) -> Response {
        Response::json(code, &json!({ "error": { "kind": kind, "message": message } }))
    }

    fn write_to(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        let reason = match self.code {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            503 => "Service Unavailable",
            _ => "",
        };
        // One write: several small ones would meet Nagle's algorithm and the client's delayed ACK, and
        // a response could take 40 ms longer.
        let response = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.code,
            self.content_type,
            self.body.len(),
            self.body
        );
        stream.write_all(response.as_bytes())
    }
}
