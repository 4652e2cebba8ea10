//! The pool against the real server: sizing under load, max age, timeouts, exhaustion, dead connections.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pgconn_config::Settings;
use pgconn_pool::{Error, ErrorKind, Pool};
use pgconn_tests::{admin, database_url};

/// A pool on the test database with `extra` settings and an application name of its own, so its
/// connections can be found in `pg_stat_activity`.
#[track_caller]
fn pool(app: &str, extra: &[(&str, &str)]) -> Pool {
    let mut vars = vec![("DATABASE_URL".to_owned(), format!("{}?application_name={app}", database_url()))];
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let settings = Settings::from_vars(vars).unwrap();
    Pool::new(&settings).unwrap_or_else(|e| panic!("cannot build the pool: {e}"))
}

/// Backend pids of the server's connections with this application name.
fn backends(app: &str) -> Vec<i32> {
    admin()
        .query("SELECT pid FROM pg_stat_activity WHERE application_name = $1", &[&app])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fifty_threads_share_a_pool_of_ten() {
    let app = "pgconn_it_fifty";
    let pool = pool(app, &[("DB_POOL_MAX_SIZE", "10"), ("DB_POOL_MIN_IDLE", "2")]);
    let held = Arc::new(AtomicUsize::new(0));
    let most_held = Arc::new(AtomicUsize::new(0));
    let pids = Arc::new(Mutex::new(HashSet::new()));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (pool, held, most_held, pids) =
                (pool.clone(), Arc::clone(&held), Arc::clone(&most_held), Arc::clone(&pids));
            thread::spawn(move || {
                for _ in 0..100 {
                    let mut conn = pool.get().unwrap();
                    let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                    most_held.fetch_max(now, Ordering::SeqCst);
                    let pid: i32 = conn.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
                    pids.lock().unwrap().insert(pid);
                    assert!(pool.state().size <= 10, "{:?}", pool.state());
                    held.fetch_sub(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(most_held.load(Ordering::SeqCst) <= 10);
    assert!(pids.lock().unwrap().len() <= 10, "{:?}", pids.lock().unwrap());
    assert!(backends(app).len() <= 10);
    let metrics = pool.metrics();
    assert_eq!(metrics.checkouts, 5000);
    assert_eq!((metrics.queries, metrics.query_errors), (5000, 0));
}

#[test]
fn connections_are_replaced_at_their_max_age() {
    let pool = pool("pgconn_it_max_age", &[("DB_CONN_MAX_AGE", "2"), ("DB_POOL_MAX_SIZE", "2")]);
    let max_age = Duration::from_secs(2);
    let mut pids = HashSet::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        let mut conn = pool.get().unwrap();
        let (opened, deadline) = (conn.opened_at(), conn.deadline().unwrap());
        assert!(conn.checked_out_at() < deadline, "handed out past its deadline");
        let jitter = opened + max_age - deadline;
        assert!(jitter <= max_age.mul_f64(pgconn_pool::MAX_AGE_JITTER), "jitter {jitter:?}");
        pids.insert(conn.backend_pid().unwrap());
        drop(conn);
        thread::sleep(Duration::from_millis(20));
    }
    assert!(pids.len() >= 3, "connections were not replaced: {pids:?}");
    assert!(pool.metrics().connections_closed.max_age >= 1, "{:?}", pool.metrics());
}

#[test]
fn a_fatal_from_the_server_is_connection_lost_and_the_next_checkout_gets_a_new_connection() {
    let pool = pool("pgconn_it_fatal", &[("DB_POOL_MAX_SIZE", "1")]);
    let mut conn = pool.get().unwrap();
    let pid = conn.backend_pid().unwrap();
    // The server ends the session with FATAL 57P05 once it is idle 100 ms; the next call meets it.
    conn.batch_execute("SET idle_session_timeout = '100ms'").unwrap();
    thread::sleep(Duration::from_millis(400));
    let error = conn.query("SELECT 1", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionLost, "{error}");
    drop(conn);
    let mut conn = pool.get().unwrap();
    assert_ne!(conn.backend_pid().unwrap(), pid);
    assert_eq!(conn.query_one("SELECT 1::int4", &[]).unwrap().get::<_, i32>(0), 1);
}

#[test]
fn the_statement_timeout_cancels_and_the_connection_serves_on() {
    let pool = pool("pgconn_it_stmt", &[("DB_STATEMENT_TIMEOUT", "200"), ("DB_POOL_MAX_SIZE", "1")]);
    let mut conn = pool.get().unwrap();
    let pid = conn.backend_pid().unwrap();
    let started = Instant::now();
    let error = conn.query("SELECT pg_sleep(3)", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StatementTimeout, "{error}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    drop(conn);
    let mut conn = pool.get().unwrap();
    assert_eq!(conn.backend_pid().unwrap(), pid, "a cancelled statement must not cost the connection");
    assert_eq!(conn.query_one("SELECT 1::int4", &[]).unwrap().get::<_, i32>(0), 1);
}

#[test]
fn a_silent_server_fails_within_the_connect_timeout() {
    // A listener that accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let url = format!("postgresql://app:secret@127.0.0.1:{port}/app");
    let settings =
        Settings::from_vars([("DATABASE_URL", url.as_str()), ("DB_CONNECT_TIMEOUT", "1")]).unwrap();
    let started = Instant::now();
    let error = Pool::new(&settings).err().expect("a silent server must not give a connection");
    let took = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::ConnectTimeout, "{error}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(1900), "took {took:?}");
    assert!(error.to_string().contains("within 1s (DB_CONNECT_TIMEOUT)"), "{error}");
    assert!(!error.to_string().contains("secret"));
}

#[test]
fn an_exhausted_pool_fails_after_the_checkout_timeout() {
    let pool = pool("pgconn_it_exhausted", &[("DB_POOL_MAX_SIZE", "2"), ("DB_POOL_TIMEOUT", "300")]);
    let (a, b) = (pool.get().unwrap(), pool.get().unwrap());
    let started = Instant::now();
    let error = pool.get().err().expect("a third checkout from a pool of two must wait and fail");
    let waited = started.elapsed();
    assert!(matches!(error, Error::PoolTimeout { max_size: 2, .. }), "{error:?}");
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(1), "waited {waited:?}");
    assert!(
        error.to_string().starts_with("pool exhausted: all 2 connections stayed in use for 3"),
        "{error}"
    );
    assert_eq!(pool.metrics().checkout_timeouts, 1);
    drop((a, b));
    assert!(pool.get().is_ok());
}

#[test]
fn terminated_connections_are_never_handed_out() {
    let app = "pgconn_it_terminate";
    let pool = pool(app, &[("DB_POOL_MAX_SIZE", "4"), ("DB_POOL_MIN_IDLE", "0")]);
    for round in 0..2 {
        // Four connections open and idle in the pool, past the validation bypass window.
        let held: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
        drop(held);
        thread::sleep(pgconn_pool::VALIDATION_BYPASS + Duration::from_millis(100));
        let killed: i64 = admin()
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .unwrap()
            .get(0);
        assert_eq!(killed, 4, "round {round}");
        assert!(eventually(Duration::from_secs(5), || backends(app).is_empty()));
        for _ in 0..20 {
            let mut conn = pool.get().unwrap();
            conn.query_one("SELECT 1::int4", &[]).unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
    // Found closed at checkout, before any statement was sent (tests/it/clean.rs does the same inside the
    // validation bypass window).
    assert!(pool.metrics().connections_closed.closed_by_server >= 8, "{:?}", pool.metrics());
}

#[test]
fn a_connection_that_failed_in_use_is_closed_on_return() {
    let app = "pgconn_it_broken";
    let pool = pool(app, &[("DB_POOL_MAX_SIZE", "1"), ("DB_POOL_MIN_IDLE", "0")]);
    let mut conn = pool.get().unwrap();
    let pid = conn.backend_pid().unwrap();
    let error = conn.query("SELECT pg_terminate_backend(pg_backend_pid())", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionLost, "{error}");
    drop(conn);
    let mut conn = pool.get().unwrap();
    assert_ne!(conn.backend_pid().unwrap(), pid);
    assert_eq!(pool.metrics().connections_closed.broken, 1);
}

#[test]
fn a_wrong_password_fails_fast_with_its_cause() {
    let url = database_url().replacen("%40", "%41", 1);
    let settings = Settings::from_vars([("DATABASE_URL", url)]).unwrap();
    let started = Instant::now();
    let error = Pool::new(&settings).err().expect("a wrong password must not build a pool");
    assert_eq!(error.kind(), ErrorKind::AuthFailed, "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(error.to_string().starts_with("authentication failed for pgconn_app@127.0.0.1:"), "{error}");
}

#[test]
fn an_unknown_database_or_a_closed_port_fails_fast_with_its_cause() {
    let url = database_url().replace("/pgconn_test", "/no_such_db");
    let error = Pool::new(&Settings::from_vars([("DATABASE_URL", url)]).unwrap()).err().unwrap();
    assert_eq!(error.kind(), ErrorKind::ConnectFailed, "{error}");
    assert!(
        error.to_string().ends_with("/no_such_db: FATAL: database \"no_such_db\" does not exist"),
        "{error}"
    );

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgresql://app@127.0.0.1:{port}/app");
    let started = Instant::now();
    let error = Pool::new(&Settings::from_vars([("DATABASE_URL", url)]).unwrap()).err().unwrap();
    assert_eq!(error.kind(), ErrorKind::ConnectFailed, "{error}");
    assert!(error.to_string().contains("Connection refused"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn per_request_connections_open_and_close_through_the_same_api() {
    let app = "pgconn_it_per_request";
    let pool = pool(app, &[("DB_CONN_MAX_AGE", "0")]);
    let mut pids = HashSet::new();
    for _ in 0..5 {
        let mut conn = pool.get().unwrap();
        assert_eq!(backends(app).len(), 1);
        pids.insert(conn.backend_pid().unwrap());
    }
    assert_eq!(pids.len(), 5, "each checkout is a new connection");
    assert!(
        eventually(Duration::from_secs(5), || backends(app).is_empty()),
        "returned connections are closed"
    );
    assert_eq!(pool.metrics().connections_closed.per_request, 6, "5 checkouts and the build's probe");
}

#[test]
fn settings_reach_every_connection() {
    let app = "pgconn_it_session";
    let pool = pool(app, &[("DB_STATEMENT_TIMEOUT", "4321")]);
    let mut conn = pool.get().unwrap();
    let row = conn
        .query_one("SELECT current_setting('statement_timeout'), current_setting('application_name')", &[])
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("4321ms".to_owned(), app.to_owned()));

    // Without a name in the URL, connections are called pgconn.
    let settings = Settings::from_vars([("DATABASE_URL", database_url())]).unwrap();
    let mut conn = Pool::new(&settings).unwrap().get().unwrap();
    let name: String = conn.query_one("SELECT current_setting('application_name')", &[]).unwrap().get(0);
    assert_eq!(name, "pgconn");
}

#[test]
fn typed_parameters_need_no_prepared_statement() {
    let pool = pool("pgconn_it_params", &[]);
    let mut conn = pool.get().unwrap();
    let row = conn
        .query_one(
            "SELECT $1::int4 + 1, $2::text || '!', $3::int8 * 2, $4::float8, $5::bool, $6::text IS NULL",
            &[&41_i32, &"hi", &21_i64, &0.5_f64, &true, &None::<String>],
        )
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");
    assert_eq!(row.get::<_, i64>(2), 42);
    assert!((row.get::<_, f64>(3) - 0.5).abs() < f64::EPSILON);
    assert!(row.get::<_, bool>(4) && row.get::<_, bool>(5));
    let prepared: i64 = conn.query_one("SELECT count(*) FROM pg_prepared_statements", &[]).unwrap().get(0);
    assert_eq!(prepared, 0, "the query API must not leave named statements on the server");
    conn.batch_execute("CREATE TEMP TABLE t (n int4); INSERT INTO t VALUES (1), (2)").unwrap();
    assert_eq!(conn.execute("UPDATE t SET n = n + $1", &[&1_i32]).unwrap(), 2);
}

#[test]
fn a_leak_is_reported_with_where_it_was_taken() {
    let pool = pool("pgconn_it_leak", &[("DB_POOL_LEAK_THRESHOLD", "100"), ("DB_POOL_MAX_SIZE", "2")]);
    let (leaked, line) = (pool.get().unwrap(), line!());
    let _returned = pool.get().unwrap();
    assert!(eventually(Duration::from_secs(3), || pool.metrics().leak_warnings >= 1));
    thread::sleep(Duration::from_millis(300));
    let leaks = pool.suspected_leaks();
    assert_eq!(pool.metrics().leak_warnings, 2, "each held connection is reported once: {leaks:?}");
    assert!(leaks[0].location.starts_with(&format!("tests/it/pool.rs:{line}:")), "{leaks:?}");
    drop(leaked);
    assert_eq!(pool.suspected_leaks().len(), 1);
}

/// A pool of at most two connections, opened on demand, that waits up to 2 s for one.
fn two_connection_pool() -> Pool {
    let settings = pgconn_tests::settings(&[
        ("DB_POOL_MAX_SIZE", "2"),
        ("DB_POOL_MIN_IDLE", "0"),
        ("DB_POOL_TIMEOUT", "2000"),
    ]);
    Pool::new(&settings).unwrap()
}

#[test]
fn a_thread_whose_own_connection_is_parked_never_takes_another_threads() {
    let pool = two_connection_pool();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    // B holds a connection while this thread holds the other, parks it, and waits while this thread
    // checks out twenty times; then its own must still be parked for it.
    let other = {
        let (pool, barrier) = (pool.clone(), Arc::clone(&barrier));
        std::thread::spawn(move || {
            let mut conn = pool.get().unwrap();
            let before = conn.backend_pid().unwrap();
            barrier.wait();
            drop(conn);
            barrier.wait();
            barrier.wait();
            let after = pool.get().unwrap().backend_pid().unwrap();
            (before, after)
        })
    };
    let mut conn = pool.get().unwrap();
    let own = conn.backend_pid().unwrap();
    barrier.wait();
    drop(conn);
    barrier.wait();
    for _ in 0..20 {
        assert_eq!(pool.get().unwrap().backend_pid().unwrap(), own, "this thread kept its own");
    }
    barrier.wait();
    let (before, after) = other.join().unwrap();
    assert_eq!(after, before, "the other thread's parked connection was left to it");
}

#[test]
fn a_thread_gets_back_the_connection_it_returned_and_parked_ones_are_never_withheld() {
    let pool = two_connection_pool();
    // Affinity: two threads hold a connection each at the same time (so that both exist), then check out
    // 50 times each: each keeps its own server process.
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (pool, barrier) = (pool.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let first = pool.get().unwrap();
                barrier.wait();
                drop(first);
                barrier.wait();
                let mut pids = std::collections::BTreeSet::new();
                for _ in 0..50 {
                    let mut conn = pool.get().unwrap();
                    pids.insert(conn.backend_pid().unwrap());
                }
                pids.len()
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), 1, "a thread kept the connection it returned");
    }
    // A thread parks its connection and goes quiet; another needs both connections at once, at once.
    let parker = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            drop(pool.get().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(1500));
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let started = std::time::Instant::now();
    let first = pool.get().unwrap();
    let second = pool.get().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_millis(500), "waited {:?}", started.elapsed());
    assert_eq!(pool.state().in_use, 2);
    drop((first, second));
    parker.join().unwrap();
    // Parked or not, returned connections count as idle.
    let state = pool.state();
    assert_eq!(state.in_use, 0, "{state:?}");
}
