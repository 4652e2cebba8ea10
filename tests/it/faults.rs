//! The bad hour, on private clusters of the tests' own (so the shared server is never disturbed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pgconn_config::Settings;
use pgconn_pool::{ErrorKind, Pool};
use pgconn_tests::{ClusterOptions, ShutdownMode, private_cluster, private_pgbouncer};

/// What one request saw: when it started, how long it took, and its error kind if it failed.
pub(crate) type Outcome = (Instant, Duration, Option<ErrorKind>);

/// Request loops running on a pool, recording every outcome, until [`Load::finish`].
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<()>>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
}

impl Load {
    /// Starts `threads` request loops on `pool`, each running `SELECT 1` every 2 ms.
    fn start(pool: &Pool, threads: usize) -> Load {
        Load::start_with(pool, threads, "SELECT 1", Duration::from_millis(2))
    }

    /// Starts `threads` request loops on `pool`, each checking out, running `sql`, returning, and
    /// pausing for `pause`.
    pub(crate) fn start_with(pool: &Pool, threads: usize, sql: &'static str, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|_| {
                let (pool, stop, outcomes) = (pool.clone(), Arc::clone(&stop), Arc::clone(&outcomes));
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let result = pool.get().and_then(|mut conn| conn.query(sql, &[]).map(drop));
                        outcomes.lock().unwrap().push((
                            started,
                            started.elapsed(),
                            result.err().map(|e| e.kind()),
                        ));
                        thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load { stop, handles, outcomes }
    }

    /// Stops the loops and returns what every request saw.
    pub(crate) fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            handle.join().unwrap();
        }
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }
}

/// Settings for `url` with `extra` variables.
#[track_caller]
fn settings_for(url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![("DATABASE_URL".to_owned(), url.to_owned())];
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Settings::from_vars(vars).unwrap()
}

/// Short bounds, so that faults show within a test's time: connects 2 s, checkouts 1 s, 4 connections.
const FAULT_BOUNDS: [(&str, &str); 3] =
    [("DB_CONNECT_TIMEOUT", "2"), ("DB_POOL_TIMEOUT", "1000"), ("DB_POOL_MAX_SIZE", "4")];

fn restart_mid_load(mode: ShutdownMode) {
    let mut cluster = private_cluster(&ClusterOptions::default());
    let settings = settings_for(&cluster.info().database_url(), &FAULT_BOUNDS);
    let pool = Pool::new(&settings).unwrap();
    let load = Load::start(&pool, 4);
    thread::sleep(Duration::from_millis(300));
    let down = Instant::now();
    cluster.restart(mode).unwrap();
    let back = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let outcomes = load.finish();
    let bound = settings.pool.checkout_timeout + settings.connect_timeout + Duration::from_millis(500);
    for &(started, took, error) in &outcomes {
        assert!(
            took < bound,
            "a request took {took:?} (started {:?} after the restart began)",
            started - down
        );
        if let Some(kind) = error {
            assert!(
                started < back + Duration::from_secs(1),
                "{kind} {:?} after the server was back",
                started.saturating_duration_since(back)
            );
            assert!(
                [
                    ErrorKind::ConnectionLost,
                    ErrorKind::ConnectFailed,
                    ErrorKind::ConnectTimeout,
                    ErrorKind::PoolTimeout
                ]
                .contains(&kind),
                "unexpected {kind}"
            );
        }
    }
    let after = outcomes.iter().filter(|(started, _, _)| *started > back + Duration::from_secs(1)).count();
    assert!(after > 100, "only {after} requests ran after the restart");
    // Connections the restart closed are found at checkout (and replaced before any request sees them)
    // or fail the request that was using them.
    let closed = pool.metrics().connections_closed;
    assert!(closed.closed_by_server + closed.broken >= 4, "the restart was not seen at all: {closed:?}");
}

#[test]
fn a_fast_restart_mid_load_recovers_within_a_second() {
    restart_mid_load(ShutdownMode::Fast);
}

#[test]
fn an_immediate_restart_mid_load_recovers_within_a_second() {
    restart_mid_load(ShutdownMode::Immediate);
}

/// Builds a pool for `url` with `extra` settings.
#[track_caller]
fn pool_for(url: &str, extra: &[(&str, &str)]) -> Pool {
    Pool::new(&settings_for(url, extra)).unwrap()
}

#[test]
fn terminating_every_pooled_connection_mid_load_costs_at_most_one_request_each() {
    let app = "pgconn_it_fault_terminate";
    let url = format!("{}?application_name={app}", pgconn_tests::database_url());
    let pool = pool_for(&url, &[("DB_POOL_MAX_SIZE", "4")]);
    let load = Load::start(&pool, 4);
    let mut terminated = 0_i64;
    for _ in 0..2 {
        thread::sleep(Duration::from_millis(400));
        terminated += pgconn_tests::admin()
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .unwrap()
            .get::<_, i64>(0);
    }
    thread::sleep(Duration::from_millis(600));
    let outcomes = load.finish();
    let failed: Vec<ErrorKind> = outcomes.iter().filter_map(|(_, _, e)| *e).collect();
    assert!(terminated >= 2, "nothing was terminated");
    assert!(
        i64::try_from(failed.len()).unwrap() <= terminated,
        "{} failures for {terminated} terminated connections",
        failed.len()
    );
    assert!(failed.iter().all(|k| *k == ErrorKind::ConnectionLost), "{failed:?}");
    let last = outcomes.iter().rev().take(50).filter(|(_, _, e)| e.is_some()).count();
    assert_eq!(last, 0, "the pool serves normally afterwards");
}

#[test]
fn an_unresolvable_host_fails_at_once() {
    let settings = Settings::from_vars([
        ("DATABASE_URL", "postgresql://app@no-such-host.invalid/app"),
        ("DB_CONNECT_TIMEOUT", "5"),
    ])
    .unwrap();
    let started = Instant::now();
    let error = Pool::new(&settings).err().expect("no pool for a host that does not resolve");
    assert_eq!(error.kind(), ErrorKind::ConnectFailed, "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(
        error.to_string().starts_with("cannot connect to app@no-such-host.invalid:5432/app: "),
        "{error}"
    );
}

#[test]
fn a_full_server_is_reported_as_such_and_the_pool_grows_back_when_slots_free() {
    // 20 slots, 3 reserved for superusers: 17 for the application role.
    let cluster = private_cluster(&ClusterOptions::default().setting("max_connections", "20"));
    let pool = pool_for(
        &cluster.info().database_url(),
        &[("DB_POOL_MAX_SIZE", "5"), ("DB_POOL_MIN_IDLE", "0"), ("DB_POOL_TIMEOUT", "1000")],
    );
    let held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    drop(held);
    // Other clients take every remaining slot.
    let others_url = cluster.info().database_url().replace("/pgconn_test", "/postgres");
    let mut others: Vec<postgres::Client> = (0..14)
        .map(|_| {
            let mut config: postgres::Config = others_url.parse().unwrap();
            config.connect_timeout(Duration::from_secs(10));
            config.connect(postgres::NoTls).unwrap()
        })
        .collect();
    let mut ours: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    let started = Instant::now();
    let error = pool.get().err().expect("the server is full");
    assert_eq!(error.kind(), ErrorKind::TooManyClients, "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // The pool's own connections keep serving.
    for conn in &mut ours {
        conn.query("SELECT 1", &[]).unwrap();
    }
    // Slots free up: the pool grows again.
    others.truncate(9);
    let grown: Vec<_> = (0..2).map(|_| pool.get().unwrap()).collect();
    assert_eq!(pool.state().size, 5);
    drop((ours, grown, others));
}

#[test]
fn pgbouncer_restart_and_pause_mid_load() {
    let cluster = private_cluster(&ClusterOptions::default());
    let mut bouncer = private_pgbouncer(&cluster, &[]);
    let bouncer_url = bouncer.info().database_url();
    let mut extra = vec![("USE_PGBOUNCER", "true"), ("PGBOUNCER_URL", bouncer_url.as_str())];
    extra.extend(FAULT_BOUNDS);
    let settings = settings_for(&cluster.info().database_url(), &extra);
    let pool = Pool::new(&settings).unwrap();
    let load = Load::start(&pool, 4);

    // PAUSE holds new transactions until RESUME: requests wait, none fails.
    thread::sleep(Duration::from_millis(300));
    let mut admin: postgres::Config = bouncer.info().admin_url().parse().unwrap();
    admin.connect_timeout(Duration::from_secs(10));
    let mut admin = admin.connect(postgres::NoTls).unwrap();
    let paused = Instant::now();
    admin.simple_query("PAUSE").unwrap();
    thread::sleep(Duration::from_millis(800));
    admin.simple_query("RESUME").unwrap();
    let resumed = Instant::now();
    drop(admin);
    thread::sleep(Duration::from_millis(500));

    // A restart: bounded failures, then every request succeeds again.
    let down = Instant::now();
    bouncer.restart().unwrap();
    let back = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let outcomes = load.finish();
    let bound = settings.pool.checkout_timeout + settings.connect_timeout + Duration::from_millis(500);
    for &(started, took, error) in &outcomes {
        assert!(took < bound, "a request took {took:?}");
        if let Some(kind) = error {
            assert!(
                started >= resumed && started >= down.checked_sub(bound).unwrap(),
                "{kind} outside the restart"
            );
            assert!(
                started < back + Duration::from_secs(1),
                "{kind} {:?} after PgBouncer was back",
                started - back
            );
        }
    }
    let during_pause = outcomes.iter().filter(|(s, _, _)| *s >= paused && *s < resumed).count();
    assert!(during_pause > 0, "no request ran during the pause");
    assert!(outcomes.iter().filter(|(s, _, _)| *s > back + Duration::from_secs(1)).count() > 100);
}

#[test]
fn leaked_connections_time_out_checkouts_and_are_named() {
    let pool = pool_for(
        &pgconn_tests::database_url(),
        &[("DB_POOL_MAX_SIZE", "2"), ("DB_POOL_TIMEOUT", "300"), ("DB_POOL_LEAK_THRESHOLD", "200")],
    );
    let (first, first_line) = (pool.get().unwrap(), line!());
    let (second, second_line) = (pool.get().unwrap(), line!());
    let error = pool.get().err().expect("both connections leaked");
    assert_eq!(error.kind(), ErrorKind::PoolTimeout, "{error}");
    thread::sleep(Duration::from_millis(300));
    let mut locations: Vec<String> = pool.suspected_leaks().into_iter().map(|leak| leak.location).collect();
    locations.sort();
    assert_eq!(locations.len(), 2);
    assert!(locations[0].starts_with(&format!("tests/it/faults.rs:{first_line}:")), "{locations:?}");
    assert!(locations[1].starts_with(&format!("tests/it/faults.rs:{second_line}:")), "{locations:?}");
    drop((first, second));
}

/// The server process behind a connection, stopped with SIGSTOP until dropped (then SIGCONT).
struct Stopped(u32);

impl Stopped {
    fn backend_of(conn: &mut pgconn_pool::PooledConn) -> Stopped {
        let pid = u32::try_from(conn.backend_pid().unwrap()).unwrap();
        pgconn_tests::testkit::signal::kill(pid, pgconn_tests::testkit::libc::SIGSTOP).unwrap();
        // Should the pool ever block on this server, the test must fail, not hang: resume it in any case.
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(20));
            let _ = pgconn_tests::testkit::signal::kill(pid, pgconn_tests::testkit::libc::SIGCONT);
        });
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = pgconn_tests::testkit::signal::kill(self.0, pgconn_tests::testkit::libc::SIGCONT);
    }
}

#[test]
fn a_hung_backend_fails_its_holder_within_the_query_timeout_and_nobody_else() {
    let cluster = private_cluster(&ClusterOptions::default());
    let pool = pool_for(
        &cluster.info().database_url(),
        &[
            ("DB_STATEMENT_TIMEOUT", "500"),
            ("DB_QUERY_TIMEOUT", "1500"),
            ("DB_CONNECT_TIMEOUT", "2"),
            ("DB_POOL_MAX_SIZE", "4"),
            ("DB_POOL_MIN_IDLE", "0"),
        ],
    );
    // The holder of a connection whose server process hangs.
    let mut hung = pool.get().unwrap();
    assert!(hung.has_deadline(), "DB_QUERY_TIMEOUT must be enforced on a TCP connection");
    let stopped = Stopped::backend_of(&mut hung);
    let others = {
        let pool = pool.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let mut served = 0;
            while started.elapsed() < Duration::from_millis(1500) {
                pool.get().unwrap().query("SELECT 1", &[]).unwrap();
                served += 1;
            }
            served
        })
    };
    let started = Instant::now();
    let error = hung.query("SELECT 1", &[]).unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::QueryTimeout, "{error}");
    let bound = Duration::from_millis(1500) + pgconn_pool::WATCHDOG_PERIOD + Duration::from_millis(300);
    assert!(took >= Duration::from_millis(1500) && took < bound, "took {took:?}");
    drop(hung);
    assert!(others.join().unwrap() > 100, "the rest of the pool kept serving");
    assert!(pool.metrics().connections_closed.broken >= 1);
    drop(stopped);

    // An idle connection whose server process hangs fails its validation within the deadline, and the
    // checkout gets another connection.
    let mut idle = pool.get().unwrap();
    let idle_pid = idle.backend_pid().unwrap();
    drop(idle);
    thread::sleep(pgconn_pool::VALIDATION_BYPASS + Duration::from_millis(100));
    let mut held: Vec<_> = Vec::new();
    let stopped = {
        // Take the idle connection out once more to find it, then stop its server and put it back.
        let mut conn = pool.get().unwrap();
        while conn.backend_pid().unwrap() != idle_pid {
            held.push(conn);
            conn = pool.get().unwrap();
        }
        let stopped = Stopped::backend_of(&mut conn);
        drop(conn);
        drop(held);
        stopped
    };
    thread::sleep(pgconn_pool::VALIDATION_BYPASS + Duration::from_millis(100));
    let started = Instant::now();
    let mut checked_out: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "validation of the hung connection took {took:?}");
    assert!(checked_out.iter_mut().all(|c| c.backend_pid().unwrap() != idle_pid));
    drop(stopped);
}

#[test]
fn a_fatal_from_pgbouncer_mid_query_is_connection_lost() {
    let cluster = private_cluster(&ClusterOptions::default());
    let bouncer = private_pgbouncer(&cluster, &[]);
    let bouncer_url = bouncer.info().database_url();
    let mut extra = vec![("USE_PGBOUNCER", "true"), ("PGBOUNCER_URL", bouncer_url.as_str())];
    extra.extend(FAULT_BOUNDS);
    let pool = Pool::new(&settings_for(&cluster.info().database_url(), &extra)).unwrap();
    let mut conn = pool.get().unwrap();
    // PgBouncer's KILL ends its clients with a FATAL that carries no `V` (unlocalized severity) field.
    let admin_url = bouncer.info().admin_url();
    let killer = thread::spawn(move || {
        let mut admin: postgres::Config = admin_url.parse().unwrap();
        admin.connect_timeout(Duration::from_secs(10));
        let mut admin = admin.connect(postgres::NoTls).unwrap();
        thread::sleep(Duration::from_millis(300));
        admin.simple_query("KILL pgconn_test").unwrap();
        admin.simple_query("RESUME pgconn_test").unwrap();
    });
    let error = conn.query("SELECT pg_sleep(2)", &[]).unwrap_err();
    killer.join().unwrap();
    assert_eq!(error.kind(), ErrorKind::ConnectionLost, "{error}");
    drop(conn);
    // The pool serves on with a new connection.
    let mut conn = pool.get().unwrap();
    assert_eq!(conn.query_one("SELECT 1::int4", &[]).unwrap().get::<_, i32>(0), 1);
}
