//! Failover (fault 8), on a private primary and its streaming standby: the pool's `DATABASE_URL` names
//! both hosts with `target_session_attrs=read-write`; the primary stops (immediate shutdown), the standby
//! is promoted, and the pool writes to the new primary again within a measured bound.
//!
//! Each request thread writes in a loop (`INSERT ... RETURNING inet_server_port()`, so every success says
//! which server took it) and records when it started, how long it took and how it failed. The phases:
//! steady writes to the primary; the primary stops; no primary until every thread has failed a checkout
//! (about `DB_POOL_TIMEOUT`, standing in for the failure detection of a real failover, so that the pool
//! meets the standby while it is still read-only); the standby is promoted; the load runs until every
//! thread has written [`SETTLED_RUN`] times in a row to the new primary. The figures of each run are
//! printed (`cargo xtask test -p pgconn-tests --test it failover -- --nocapture`); see
//! docs/operations.md.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pgconn_config::Settings;
use pgconn_pool::{ErrorKind, Pool};
use pgconn_tests::{Cluster, ClusterOptions, ShutdownMode, multi_host_url, private_cluster, private_standby};

/// Request threads, and the pool's size.
const THREADS: i32 = 4;

/// How long after the promotion has completed the first write on the new primary may end, and the last
/// failed request: from then on every request succeeds.
///
/// Measured over 18 runs (2 cores, PostgreSQL 15, debug build): the first write on the new primary
/// ended 50 to 357 ms after the promotion (median 144 ms), and no request failed after it (the last
/// failure ended 24 to 57 ms before it). Where that comes from: while there is no primary, r2d2 retries
/// each failed connect after 400 ms, then every 500 ms (half of `DB_POOL_TIMEOUT`), so the first retry
/// after the promotion comes at most 500 ms after it; the connect itself (a refused TCP connect to the
/// old primary, then SCRAM and `SHOW transaction_read_only` on the new one) takes milliseconds; and a
/// request waiting for a connection waits up to `DB_POOL_TIMEOUT` (1 s), longer than that, so it is
/// served rather than failed. The bound is that 500 ms plus a margin of 1 s for a loaded machine.
const RECOVERY_BOUND: Duration = Duration::from_millis(1500);

/// Successes in a row, each started after the promotion, that every thread must see before the load stops.
const SETTLED_RUN: usize = 50;

/// How long the test waits for a state it polls for (steady load, recovery) before it fails.
const WAIT_LIMIT: Duration = Duration::from_secs(20);

const INSERT: &str = "INSERT INTO failover_writes (thread, seq) VALUES ($1, $2) RETURNING inet_server_port()";

/// Why a request failed.
#[derive(Debug, Clone)]
struct Failure {
    kind: ErrorKind,
    /// The SQLSTATE, when the server sent one.
    code: Option<String>,
    message: String,
}

/// One request.
#[derive(Debug, Clone)]
struct Request {
    thread: i32,
    seq: i32,
    started: Instant,
    took: Duration,
    /// The port of the server that took the write.
    outcome: Result<u16, Failure>,
}

impl Request {
    fn ended(&self) -> Instant {
        self.started + self.took
    }
}

/// Runs one writing loop per thread until `stop`, recording every request.
fn load(pool: &Pool, stop: &Arc<AtomicBool>) -> (Vec<thread::JoinHandle<()>>, Arc<Mutex<Vec<Request>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let handles = (0..THREADS)
        .map(|thread| {
            let (pool, stop, requests) = (pool.clone(), Arc::clone(stop), Arc::clone(&requests));
            thread::spawn(move || {
                let mut seq = 0_i32;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let started = Instant::now();
                    let result = pool.get().and_then(|mut conn| conn.query_one(INSERT, &[&thread, &seq]));
                    let took = started.elapsed();
                    let outcome = match result {
                        Ok(row) => Ok(u16::try_from(row.get::<_, i32>(0)).unwrap()),
                        Err(e) => Err(Failure {
                            kind: e.kind(),
                            code: e.code().map(|code| code.code().to_owned()),
                            message: e.to_string(),
                        }),
                    };
                    requests.lock().unwrap().push(Request { thread, seq, started, took, outcome });
                    thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    (handles, requests)
}

/// Polls `done` on the recorded requests every 10 ms until it holds; panics after [`WAIT_LIMIT`].
fn wait_for(requests: &Mutex<Vec<Request>>, what: &str, done: impl Fn(&[Request]) -> bool) {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        if done(&requests.lock().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT_LIMIT:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether every thread's last [`SETTLED_RUN`] requests succeeded and started after `since`.
fn settled(requests: &[Request], since: Instant) -> bool {
    (0..THREADS).all(|thread| {
        let ok = requests
            .iter()
            .rev()
            .filter(|r| r.thread == thread)
            .take_while(|r| r.outcome.is_ok() && r.started >= since)
            .count();
        ok >= SETTLED_RUN
    })
}

/// How many sessions of the application role `cluster` has authorized so far (it runs with
/// `log_connections = on`).
fn app_logins(cluster: &Cluster) -> usize {
    let log = std::fs::read_to_string(cluster.log_file()).unwrap();
    log.lines().filter(|line| line.contains("connection authorized: user=pgconn_app")).count()
}

/// Milliseconds from `from` to `to`, negative when `to` is earlier.
#[allow(clippy::cast_possible_truncation)]
fn signed_ms(from: Instant, to: Instant) -> i64 {
    if to >= from { (to - from).as_millis() as i64 } else { -((from - to).as_millis() as i64) }
}

#[test]
fn the_pool_writes_to_the_promoted_standby_within_the_measured_bound() {
    // As in production: a commit is acknowledged once its WAL is flushed, and the WAL sender ships only
    // flushed WAL. (The testkit's default, off, loses every write of the last WAL writer round, up to
    // 200 ms of them, on top of the replication lag.)
    let mut primary = private_cluster(&ClusterOptions::default().setting("synchronous_commit", "on"));
    let mut config: postgres::Config = primary.info().database_url().parse().unwrap();
    config.connect_timeout(Duration::from_secs(10));
    let mut app = config.connect(postgres::NoTls).unwrap();
    app.batch_execute("CREATE TABLE failover_writes (thread int, seq int, PRIMARY KEY (thread, seq))")
        .unwrap();
    drop(app);
    // Every session the application role opens on the standby is logged.
    let standby = private_standby(&primary, &ClusterOptions::default().setting("log_connections", "on"));
    let (old_port, new_port) = (primary.info().port, standby.info().port);

    let settings = Settings::from_vars([
        ("DATABASE_URL", multi_host_url(&[&primary, &standby], "target_session_attrs=read-write")),
        ("DB_CONNECT_TIMEOUT", "2".to_owned()),
        ("DB_POOL_TIMEOUT", "1000".to_owned()),
        ("DB_POOL_MAX_SIZE", THREADS.to_string()),
    ])
    .unwrap();
    let pool = Pool::new(&settings).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (handles, requests) = load(&pool, &stop);
    wait_for(&requests, "200 writes before the failover", |requests| {
        requests.iter().filter(|r| r.outcome.is_ok()).count() >= 200
    });
    // target_session_attrs=read-write: while the primary takes writes, the pool never even logs in to
    // the standby.
    let logins_before = app_logins(&standby);

    let stop_began = Instant::now();
    primary.stop_server_with(ShutdownMode::Immediate).unwrap();
    let stopped = Instant::now();
    // No primary: every thread's checkout fails (after DB_POOL_TIMEOUT) at least once, while the pool's
    // connects find the old primary refusing and the standby read-only.
    wait_for(&requests, "every thread failing to check out while there is no primary", |requests| {
        (0..THREADS).all(|thread| {
            requests.iter().any(|r| {
                r.thread == thread
                    && r.started >= stop_began
                    && r.outcome.as_ref().is_err_and(|f| f.kind != ErrorKind::ConnectionLost)
            })
        })
    });
    let logins_in_recovery = app_logins(&standby);
    let promote_began = Instant::now();
    standby.promote().unwrap();
    let promoted = Instant::now();
    wait_for(&requests, "every thread writing again after the promotion", |requests| {
        settled(requests, promoted)
    });
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().unwrap();
    }
    let requests = requests.lock().unwrap().clone();

    // What the new primary has: every write it acknowledged, and those of the old primary that reached
    // it before the stop (streaming is asynchronous).
    let mut config: postgres::Config = standby.info().database_url().parse().unwrap();
    config.connect_timeout(Duration::from_secs(10));
    let kept: HashSet<(i32, i32)> = config
        .connect(postgres::NoTls)
        .unwrap()
        .query("SELECT thread, seq FROM failover_writes", &[])
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();

    // The figures of this run.
    let failures: Vec<&Request> = requests.iter().filter(|r| r.outcome.is_err()).collect();
    let mut by_kind = BTreeMap::new();
    for request in &failures {
        let failure = request.outcome.as_ref().unwrap_err();
        by_kind.entry(failure.kind).or_insert((0, failure.message.clone())).0 += 1;
    }
    let first_new = requests
        .iter()
        .filter(|r| r.outcome.as_ref().is_ok_and(|port| *port == new_port))
        .min_by_key(|r| r.ended());
    let last_failure_end = failures.iter().map(|r| r.ended()).max();
    let lost: Vec<&Request> = requests
        .iter()
        .filter(|r| {
            r.outcome.as_ref().is_ok_and(|port| *port == old_port) && !kept.contains(&(r.thread, r.seq))
        })
        .collect();
    let mut report = format!(
        "failover: {} requests; stop (immediate) {} ms; no primary for {} ms; promote {} ms; first write on \
         the new primary {:+} ms after the promotion; every request ok from {:+} ms after it; slowest \
         request {} ms; failures {}:",
        requests.len(),
        (stopped - stop_began).as_millis(),
        (promoted - stopped).as_millis(),
        (promoted - promote_began).as_millis(),
        first_new.map_or(0, |r| signed_ms(promoted, r.ended())),
        last_failure_end.map_or(0, |end| signed_ms(promoted, end)),
        requests.iter().map(|r| r.took).max().unwrap_or_default().as_millis(),
        failures.len(),
    );
    for (kind, (count, example)) in &by_kind {
        let _ = write!(report, " {kind} {count} ({example});");
    }
    let _ = write!(
        report,
        " acknowledged writes lost: {}{}",
        lost.len(),
        lost.iter().map(|r| r.ended()).min().map_or(String::new(), |first| format!(
            " (acknowledged in the last {} ms before the stop)",
            signed_ms(first, stop_began)
        ))
    );
    print_report(&report);

    // Before the failover: every write went to the primary, and the standby never saw the pool.
    assert_eq!(logins_before, 0, "the pool logged in to the standby while the primary took writes");
    for request in requests.iter().filter(|r| r.ended() < stop_began) {
        assert_eq!(request.outcome.as_ref().ok(), Some(&old_port), "before the stop: {request:?}");
    }
    // Never served by a server in recovery: no write was refused as read-only, and the standby took
    // none before its promotion began.
    for request in &requests {
        match &request.outcome {
            Ok(port) if *port == new_port => assert!(
                request.ended() >= promote_began,
                "the standby took a write {:?} before its promotion began",
                promote_began - request.ended()
            ),
            Ok(port) => assert_eq!(*port, old_port),
            Err(failure) => {
                assert!(
                    failure.code.as_deref() != Some("25006") && !failure.message.contains("read-only"),
                    "a write reached a server in recovery: {failure:?}"
                );
                assert!(
                    [
                        ErrorKind::ConnectionLost,
                        ErrorKind::ConnectFailed,
                        ErrorKind::ConnectTimeout,
                        ErrorKind::PoolTimeout
                    ]
                    .contains(&failure.kind),
                    "unexpected failure: {failure:?}"
                );
                assert!(request.ended() >= stop_began, "a failure before the stop: {failure:?}");
            }
        }
    }
    assert!(!failures.is_empty(), "the failover was not seen at all");
    // Without a primary the pool did log in to the standby, and was turned away (no write succeeded there
    // before the promotion began, see above); this also shows that counting logins can see the pool.
    assert!(logins_in_recovery > 0, "the pool never tried the standby while there was no primary");

    // Every request is bounded: the checkout waits at most DB_POOL_TIMEOUT; a connection taken from the
    // pool then costs at most one validation round trip (bounded by DB_CONNECT_TIMEOUT); the INSERT
    // answers or fails at once, since an immediate shutdown closes the server's sockets.
    let bound = settings.pool.checkout_timeout + settings.connect_timeout + Duration::from_millis(500);
    for request in &requests {
        assert!(request.took < bound, "a request took {:?} (bound {bound:?}): {request:?}", request.took);
    }

    // Recovery within the measured bound, and nothing the new primary acknowledged is missing.
    let first_new = first_new.expect("the new primary took writes").ended();
    assert!(
        first_new < promoted + RECOVERY_BOUND,
        "the first write on the new primary ended {:?} after the promotion (bound {RECOVERY_BOUND:?})",
        first_new - promoted
    );
    let last_failure_end = last_failure_end.unwrap();
    assert!(
        last_failure_end < promoted + RECOVERY_BOUND,
        "a request still failed {:?} after the promotion (bound {RECOVERY_BOUND:?})",
        last_failure_end.saturating_duration_since(promoted)
    );
    for request in &requests {
        if request.outcome.as_ref().is_ok_and(|port| *port == new_port) {
            assert!(kept.contains(&(request.thread, request.seq)), "the new primary lost {request:?}");
        }
    }
}

/// The figures go to stderr, shown with `--nocapture` (and on failure).
#[allow(clippy::print_stderr)]
fn print_report(report: &str) {
    eprintln!("{report}");
}
