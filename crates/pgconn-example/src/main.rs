//! A thread-per-request HTTP server on a pgconn pool: the example to copy.
//!
//! It is configured like any program that uses pgconn, by the environment (`docs/configuration.md`),
//! plus `PGCONN_LISTEN`, the address to listen on (default `127.0.0.1:8080`):
//!
//! ```sh
//! export DATABASE_URL='postgresql://app:secret@localhost:5432/app'
//! cargo run --release -p pgconn-example --bin thread_per_request
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
//! 503 and the error's kind. The pool bounds every wait on the database side (`DB_POOL_TIMEOUT` for a
//! connection, `DB_CONNECT_TIMEOUT` for opening one, `DB_STATEMENT_TIMEOUT` and `DB_QUERY_TIMEOUT` for a
//! query).
//!
//! HTTP is [`tiny_http`]'s: HTTP/1.1 with keep-alive and pipelining, blocking I/O, no async runtime, a
//! handful of small dependencies; it reads each request on a thread of its own and hands it over whole,
//! and this server answers each on a new thread, as a thread-per-request server does. What `tiny_http` 0.12
//! does not do, and what to know about it (`docs/operations.md`, "The example server"):
//! - It sets no read or write timeout on client connections: a client that connects and sends nothing
//!   holds one of `tiny_http`'s connection threads, and one that never reads its answers holds the
//!   request threads answering it (never a database connection) until it goes.
//!   Put the server behind a proxy or load balancer that bounds slow clients, as deployments do.
//! - Its accept thread stops at the first failed `accept` (out of file descriptors, say). This server
//!   raises its open-file limit to the hard limit at start, and when accepting stops it exits with status
//!   1 and a message, so that its supervisor restarts it, rather than run on without accepting.

// A program: telling the operator what it does is its job.
#![allow(clippy::print_stderr)]

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
/// flood of requests cannot start threads without limit. (Database connections are limited by the
/// pool, `DB_POOL_MAX_SIZE`, not by this.)
const MAX_REQUESTS: usize = 1024;

/// The request line and headers together, at most; a longer head is a bad request.
const MAX_HEAD: usize = 8 * 1024;

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

    raise_open_file_limit();
    let server = match std::net::TcpListener::bind(&listen)
        .map_err(|e| e.to_string())
        .and_then(|listener| tiny_http::Server::from_listener(listener, None).map_err(|e| e.to_string()))
    {
        Ok(server) => server,
        Err(e) => {
            eprintln!("thread_per_request: cannot listen on {listen} (PGCONN_LISTEN): {e}");
            return ExitCode::FAILURE;
        }
    };
    let address = server.server_addr().to_ip().map_or(listen, |a| a.to_string());
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
    // Refusals are written by a thread of their own: `tiny_http` writes a connection's answers in order and
    // without a timeout, so a refusal can wait behind that client's earlier answers, and this loop must not.
    let (refuse, refusals) = std::sync::mpsc::sync_channel::<tiny_http::Request>(MAX_REQUESTS);
    let refuser = thread::Builder::new().name("refuser".to_owned()).spawn(move || {
        for request in refusals {
            let _ = request.respond(error(503, "busy", "too many requests in progress; retry later"));
        }
    });
    if let Err(e) = refuser {
        eprintln!("thread_per_request: cannot start a thread: {e}");
        return ExitCode::FAILURE;
    }
    loop {
        let request = match server.recv() {
            Ok(request) => request,
            Err(e) => {
                // `tiny_http`'s accept thread has stopped: nothing new will come. Exit, so that the
                // supervisor (Kubernetes, systemd) starts a new process, rather than run on deaf.
                eprintln!("thread_per_request: no longer accepting connections ({e}); exiting");
                return ExitCode::FAILURE;
            }
        };
        // Only this loop adds to `running`, so looking first cannot let it overshoot.
        if running.load(Ordering::SeqCst) >= MAX_REQUESTS {
            // When even the refusals queue up (MAX_REQUESTS of them), the request is dropped on a
            // short-lived thread: `tiny_http` answers a dropped request 500, which may wait like any answer.
            if let Err(std::sync::mpsc::TrySendError::Full(request)) = refuse.try_send(request) {
                thread::spawn(move || drop(request));
            }
            continue;
        }
        let slot = Slot::take(&running);
        let app = Arc::clone(&app);
        // If the thread cannot start, the closure is dropped: the slot is given back, the request
        // dropped (`tiny_http` answers it 500).
        let spawned = thread::Builder::new().name("request".to_owned()).spawn(move || {
            let _slot = slot;
            serve(request, &app);
        });
        if let Err(e) = spawned {
            log::warn!("cannot start a request thread: {e}");
        }
    }
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

/// Raises this process's soft limit of open files to its hard limit (what Go's runtime does at start):
/// each client connection and each database connection holds descriptors, and running out of them
/// would stop `tiny_http` from accepting.
#[allow(unsafe_code)] // getrlimit and setrlimit, on a local struct
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit that lives across both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) != 0 {
                log::warn!("cannot raise the open file limit: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// Answers one request. `tiny_http` has read it whole; the answer keeps the connection open for the
/// client's next request unless the client asked otherwise.
fn serve(request: tiny_http::Request, app: &App) {
    let head = request.url().len()
        + request
            .headers()
            .iter()
            .map(|h| h.field.as_str().as_str().len() + h.value.as_str().len() + 4)
            .sum::<usize>();
    let response = if head > MAX_HEAD {
        error(400, "bad_request", "the request line and headers are longer than 8 KiB")
    } else {
        route(request.method(), request.url(), app)
    };
    // The client may be gone already; there is no one to tell.
    let _ = request.respond(response);
}

type Response = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

fn route(method: &tiny_http::Method, target: &str, app: &App) -> Response {
    let pool = &app.pool;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let get = *method == tiny_http::Method::Get;
    match (get, path) {
        (true, "/") => {
            let Some(sleep_ms) = sleep_ms(query) else {
                let message =
                    format!("sleep_ms must be a whole number of milliseconds from 0 to {MAX_SLEEP_MS}");
                return error(400, "bad_request", &message);
            };
            match index(pool, sleep_ms) {
                Ok(body) => json_response(200, &body),
                Err(e) => database_error(&e),
            }
        }
        (true, "/health") => {
            let report = report(app);
            let code = match report.status {
                Status::Healthy | Status::Warning => 200,
                Status::Critical | Status::Unknown => 503,
            };
            response(code, "application/json", render::json(&report, false))
        }
        // Liveness: the process answers. Never the database: an outage must not restart every pod.
        (true, "/health/live") => json_response(200, &json!({ "status": "live" })),
        (true, "/health/ready") => ready(pool),
        (true, "/metrics") => response(200, "text/plain; version=0.0.4", render::prometheus(&report(app))),
        (false, "/" | "/health" | "/health/live" | "/health/ready" | "/metrics") => {
            error(405, "method_not_allowed", "only GET is served")
        }
        _ => error(404, "not_found", "no such page; try /, /health, /health/live, /health/ready or /metrics"),
    }
}

/// Readiness: a connection can be checked out within [`READY_TIMEOUT`] and answers a query, now. 503 with
/// the error's kind while not (the server is down or unreachable, or every connection is busy), 200 again
/// at the first probe after recovery: nothing here remembers the past.
fn ready(pool: &Pool) -> Response {
    let started = Instant::now();
    let result = pool.get_timeout(READY_TIMEOUT).and_then(|mut conn| conn.simple_query("SELECT 1").map(drop));
    match result {
        Ok(()) => json_response(
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
    // The pool's query API: one round trip; a text run often on a connection is prepared there once
    // (DB_STATEMENT_CACHE), and stays unnamed behind PgBouncer in transaction mode. Each parameter's
    // PostgreSQL type comes from its Rust type (f64: float8).
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
    error(503, e.kind().as_str(), &e.to_string())
}

fn response(code: u16, content_type: &str, body: String) -> Response {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type)
        .expect("a content type is a valid header value");
    tiny_http::Response::from_string(body).with_status_code(code).with_header(header)
}

fn json_response(code: u16, body: &Value) -> Response {
    response(code, "application/json", body.to_string())
}

/// `{"error": {"kind": ..., "message": ...}}`.
fn error(code: u16, kind: &str, message: &str) -> Response {
    json_response(code, &json!({ "error": { "kind": kind, "message": message } }))
}
