//! `cargo xtask demo [--clients N] [--seconds S]`: the example server
//! (`crates/pgconn-example`, the binary `thread_per_request`) under load, connecting per request, pooled, and
//! through PgBouncer, side by side.
//!
//! Without `DATABASE_URL`, it starts its own PostgreSQL with `max_connections = 40` (3 of them reserved
//! for superusers) and a PgBouncer in front of it (rendered by `pgconn pgbouncer-ini`, 20 server
//! connections per pool). With `DATABASE_URL`, it uses that server, and runs the PgBouncer strategy only
//! when `PGBOUNCER_URL` is set too. For each strategy it starts the release build of the example server,
//! drives N client threads (default 100: more than the server's connection slots) at `GET /?sleep_ms=50`
//! for S seconds (default 15), each a new HTTP connection per request, and once a second prints a line
//! with the server's connection count (from `pgconn monitor --json`) and the pool's state (from the
//! example's `GET /health`). Then a table: requests, throughput, latency, errors by the kind the 503
//! bodies name, and the most server connections seen. Logs go to `target/demo/`.
//!
//! Every child (the example server, the monitor, PostgreSQL, PgBouncer) is guarded: stopped on the way
//! out, on success, error or Ctrl-C.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, IsTerminal as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use pgconn_testkit::{Cluster, GuardedChild, Interrupted, PgBouncer, StopStep, libc, signal};

use crate::process;
use crate::reports::{self, Health, MonitorLine};

/// The throwaway server's `max_connections`: low, so that connecting per request runs out of slots.
const MAX_CONNECTIONS: u32 = 40;
/// PgBouncer's server connections per pool (`default_pool_size`).
const PGBOUNCER_POOL_SIZE: u32 = 20;
/// What each client asks for: a query that holds its connection 50 ms, like a request doing some work.
const REQUEST: &str = "/?sleep_ms=50";
/// A client gives up on one request after this long (the server's own bounds are shorter).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the example server may take to build its pool and listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The example server: SIGTERM, then (after the wait) SIGKILL.
const SERVER_STOP: &[StopStep] = &[StopStep { signal: libc::SIGTERM, wait: Duration::from_secs(5) }];

/// One strategy: how the server is configured.
struct Strategy {
    name: &'static str,
    /// The server's connections to the database, for the table.
    pool: String,
    env: Vec<(&'static str, String)>,
}

/// What the load saw in one run.
#[derive(Default)]
struct Outcome {
    requests: u32,
    ok: u32,
    /// Errors by kind: the `error.kind` of a 503 body, `http NNN` for another status, `client: ...` when
    /// no answer came.
    errors: BTreeMap<String, u32>,
    /// Of every request, answered or not.
    latencies: Vec<Duration>,
    elapsed: Duration,
    peak_server_connections: Option<u32>,
}

pub(crate) fn run(clients: u32, seconds: u32) -> Result<u8> {
    let pgconn = crate::build_pgconn_release()?;
    let example = build_example()?;
    let logs = crate::workspace_root().join("target").join("demo");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

    // PgBouncer is declared after the cluster, so that on an early return it is dropped (stopped) first.
    let mut cluster: Option<Cluster> = None;
    let mut bouncer: Option<PgBouncer> = None;
    let (database_url, monitor_url, pgbouncer_url) = if let Some(url) = non_empty_var("DATABASE_URL") {
        eprintln!(
            "xtask: demo: using the server of DATABASE_URL; connecting per request will take up to \
                 {clients} of its connection slots"
        );
        let pgbouncer_url = non_empty_var("PGBOUNCER_URL");
        if pgbouncer_url.is_none() {
            eprintln!("xtask: demo: PGBOUNCER_URL is not set: the PgBouncer strategy is skipped");
        }
        (url.clone(), url, pgbouncer_url)
    } else {
        let started = Cluster::start_temp(
            &process::cluster_options().setting("max_connections", MAX_CONNECTIONS.to_string()),
        )?;
        let pool_size = PGBOUNCER_POOL_SIZE.to_string();
        bouncer = Some(PgBouncer::in_front_of(
            &started,
            &pgconn,
            &[("PGBOUNCER_DEFAULT_POOL_SIZE", pool_size.as_str())],
            &process::pgbouncer_options(),
        )?);
        let info = started.info();
        // The monitor logs in as the superuser, whose reserved slots stay free when the app's are gone.
        let urls = (info.database_url(), info.admin_url(), bouncer.as_ref().map(|b| b.info().database_url()));
        cluster = Some(started);
        urls
    };

    let mut strategies = vec![
        Strategy {
            name: "connect per request",
            pool: "none: a connection per request".to_owned(),
            env: vec![("DB_CONN_MAX_AGE", "0".to_owned())],
        },
        Strategy {
            name: "pooled",
            pool: format!("{PGBOUNCER_POOL_SIZE}, like PgBouncer's server pool"),
            env: vec![("DB_POOL_MAX_SIZE", PGBOUNCER_POOL_SIZE.to_string())],
        },
    ];
    if let Some(url) = &pgbouncer_url {
        strategies.push(Strategy {
            name: "PgBouncer",
            pool: format!("{clients}, to PgBouncer"),
            env: vec![
                ("USE_PGBOUNCER", "true".to_owned()),
                ("PGBOUNCER_URL", url.clone()),
                // As many connections to PgBouncer as clients: what several server processes with pools
                // of their own would open together, more than PostgreSQL has slots for.
                ("DB_POOL_MAX_SIZE", clients.to_string()),
            ],
        });
    }

    let mut rows = Vec::new();
    for strategy in &strategies {
        let mut env =
            vec![("DATABASE_URL", database_url.clone()), ("PGCONN_LISTEN", "127.0.0.1:0".to_owned())];
        env.extend(strategy.env.iter().cloned());
        let log = logs.join(format!("{}.log", strategy.name.replace(' ', "-").to_lowercase()));
        eprintln!(
            "\nxtask: demo: {} (pool: {}): {clients} clients for {seconds}s; server log {}",
            strategy.name,
            strategy.pool,
            log.display()
        );
        let outcome = run_strategy(&example, &pgconn, &env, &monitor_url, &log, clients, seconds)?;
        rows.push((strategy, outcome));
    }

    print_table(&rows, clients);
    println!("\nserver logs: {}", logs.display());
    if let Some(mut bouncer) = bouncer {
        bouncer.stop()?;
    }
    if let Some(cluster) = cluster {
        cluster.stop()?;
    }
    Ok(0)
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Builds the example server in the release profile; returns its path.
fn build_example() -> Result<PathBuf> {
    crate::build_bin("pgconn-example", "thread_per_request", true)
}

/// Starts the example server with `env`, loads it for `seconds` while printing a line a second, stops it.
fn run_strategy(
    example: &Path,
    pgconn: &Path,
    env: &[(&str, String)],
    monitor_url: &str,
    log: &Path,
    clients: u32,
    seconds: u32,
) -> Result<Outcome> {
    let (server, address) = start_server(example, env, log)?;
    let monitor = Monitor::start(pgconn, monitor_url, seconds + 10)?;

    let progress = Arc::new(Progress::default());
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let progress = Arc::clone(&progress);
            thread::spawn(move || load(address, deadline, &progress))
        })
        .collect();
    // On a terminal the line is redrawn in place; in a log, one line a second.
    let on_terminal = std::io::stderr().is_terminal();
    while Instant::now() < deadline && !process::interrupted() {
        thread::sleep(Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())));
        let line = live_line(started, &progress, &monitor, address);
        if on_terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
    if on_terminal {
        eprintln!();
    }
    let mut outcome = Outcome::default();
    for worker in workers {
        let part = worker.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        outcome.requests += part.requests;
        outcome.ok += part.ok;
        for (kind, n) in part.errors {
            *outcome.errors.entry(kind).or_default() += n;
        }
        outcome.latencies.extend(part.latencies);
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort_unstable();
    outcome.peak_server_connections = monitor.peak();
    drop(monitor);
    drop(server);
    if process::interrupted() {
        return Err(Interrupted.into());
    }
    Ok(outcome)
}

/// Starts the example server and waits for the address it listens on (it prints
/// `listening on http://ADDRESS` once its pool is built). Its stderr goes to `log`.
fn start_server(example: &Path, env: &[(&str, String)], log: &Path) -> Result<(GuardedChild, SocketAddr)> {
    let mut cmd = Command::new(example);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: Ctrl-C reaches xtask, which stops it in order.
        .process_group(0);
    signal::raise_nofile_limit(&mut cmd);
    let mut child = cmd.spawn().with_context(|| format!("cannot run {}", example.display()))?;
    let stderr = child.stderr.take().context("the server's stderr is piped")?;
    let mut server = GuardedChild::new("the example server", child, SERVER_STOP);
    let mut file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once("listening on http://") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
            let _ = writeln!(file, "{line}");
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if process::interrupted() {
            return Err(Interrupted.into());
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(address) => {
                let address = address
                    .parse()
                    .with_context(|| format!("the server printed an odd address: {address}"))?;
                return Ok((server, address));
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                if let Some(status) = server.try_wait()? {
                    // Let the reader thread write the last lines.
                    thread::sleep(Duration::from_millis(200));
                    bail!("the example server exited ({status}) before listening:\n{}", tail(log));
                }
            }
            Err(_) => bail!("the example server did not listen within {START_TIMEOUT:?}:\n{}", tail(log)),
        }
    }
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Requests done so far by all the load threads.
#[derive(Default)]
struct Progress {
    requests: AtomicU32,
    errors: AtomicU32,
}

/// One client: a request at a time until `deadline`, each on a new connection.
fn load(address: SocketAddr, deadline: Instant, progress: &Progress) -> Outcome {
    let mut outcome = Outcome::default();
    while Instant::now() < deadline && !process::interrupted() {
        let started = Instant::now();
        let result = get(address, REQUEST, REQUEST_TIMEOUT);
        outcome.latencies.push(started.elapsed());
        outcome.requests += 1;
        progress.requests.fetch_add(1, Ordering::Relaxed);
        let error = match result {
            Ok((200, _)) => None,
            // A 503 names its kind; any other answer (not JSON) is counted by its status.
            Ok((code, body)) => Some(
                serde_json::from_str::<reports::ErrorAnswer>(&body)
                    .map_or_else(|_| format!("http {code}"), |answer| answer.error.kind),
            ),
            Err(e) => Some(format!("client: {}", e.kind())),
        };
        match error {
            None => outcome.ok += 1,
            Some(kind) => {
                progress.errors.fetch_add(1, Ordering::Relaxed);
                *outcome.errors.entry(kind).or_default() += 1;
            }
        }
    }
    outcome
}

/// One `GET target` on a new connection (`Connection: close`): the status code and the body.
fn get(address: SocketAddr, target: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(invalid)?;
    let code = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(invalid)?;
    Ok((code, body.to_owned()))
}

/// The once-a-second line: requests so far, the server's connections, the pool's state.
fn live_line(started: Instant, progress: &Progress, monitor: &Monitor, address: SocketAddr) -> String {
    let requests = progress.requests.load(Ordering::Relaxed);
    let errors = progress.errors.load(Ordering::Relaxed);
    let server = match monitor.latest() {
        Some((used, max)) => format!("server {used}/{max} connections"),
        None => "server ?".to_owned(),
    };
    let pool = match get(address, "/health", Duration::from_secs(2)) {
        Ok((code, body)) => match reports::parse::<Health>(&body, "/health") {
            Ok(health) => format!(
                "pool {} open, {} in use, {} waiting | /health {code} {}",
                health.pool.size, health.pool.in_use, health.pool.waiting, health.status
            ),
            Err(e) => format!("/health {code}: {e:#}"),
        },
        Err(e) => format!("/health: {e}"),
    };
    format!(
        "  {:>3}s {requests:>7} requests {errors:>6} errors | {server} | {pool}",
        started.elapsed().as_secs()
    )
}

/// `pgconn monitor --json --interval 1`, read on a thread: the latest and the highest count of the
/// server's client connections.
struct Monitor {
    _child: GuardedChild,
    state: Arc<Mutex<MonitorState>>,
}

#[derive(Default)]
struct MonitorState {
    latest: Option<(u32, u32)>,
    peak: Option<u32>,
}

impl Monitor {
    fn start(pgconn: &Path, url: &str, count: u32) -> Result<Monitor> {
        let mut cmd = Command::new(pgconn);
        cmd.args(["monitor", "--json", "--interval", "1", "--count", &count.to_string()])
            .env_clear()
            .env("DATABASE_URL", url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child: Child = cmd.spawn().context("cannot run pgconn monitor")?;
        let stdout = child.stdout.take().context("the monitor's stdout is piped")?;
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let report = match reports::parse::<MonitorLine>(&line, "a line of `pgconn monitor --json`") {
                    Ok(report) => report,
                    Err(e) => {
                        eprintln!("xtask: demo: {e:#}");
                        continue;
                    }
                };
                if let (Some(used), Some(max)) = (report.server_connections, report.max_connections) {
                    let mut state = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    state.latest = Some((used, max));
                    state.peak = Some(state.peak.map_or(used, |peak| peak.max(used)));
                }
            }
        });
        Ok(Monitor { _child: GuardedChild::new("pgconn monitor", child, SERVER_STOP), state })
    }

    fn latest(&self) -> Option<(u32, u32)> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).latest
    }

    fn peak(&self) -> Option<u32> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).peak
    }
}

fn print_table(rows: &[(&Strategy, Outcome)], clients: u32) {
    println!(
        "\n| strategy | server's pool | clients | requests | ok | errors by kind | ok/s | p50 ms | p99 ms | most server connections seen |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (strategy, o) in rows {
        let errors = if o.errors.is_empty() {
            "-".to_owned()
        } else {
            o.errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect::<Vec<_>>().join(", ")
        };
        let ms = |per_mille: usize| {
            o.latencies
                .get(o.latencies.len().saturating_sub(1) * per_mille / 1000)
                .map_or_else(|| "-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0))
        };
        println!(
            "| {} | {} | {clients} | {} | {} | {errors} | {:.0} | {} | {} | {} |",
            strategy.name,
            strategy.pool,
            o.requests,
            o.ok,
            f64::from(o.ok) / o.elapsed.as_secs_f64(),
            ms(500),
            ms(990),
            o.peak_server_connections.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        );
    }
    println!(
        "\nEach client sends `GET {REQUEST}` (a query holding its connection 50 ms) on a new connection, \
         one request at a time; latency is of every request, answered or failed."
    );
}
