//! The bad hour, on private clusters of the tests' own (so the shared server is never disturbed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pgconn_config::Settings;
use pgconn_pool::{ErrorKind, Pool};
use pgconn_tests::{ClusterOptions, ShutdownMode, private_cluster};

/// What one request saw: when it started, how long it took, and its error kind if it failed.
type Outcome = (Instant, Duration, Option<ErrorKind>);

/// Runs `threads` request loops on `pool` until `stop`, recording every outcome.
fn load(
    pool: &Pool,
    threads: usize,
    stop: &Arc<AtomicBool>,
) -> (Vec<thread::JoinHandle<()>>, Arc<Mutex<Vec<Outcome>>>) {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let handles = (0..threads)
        .map(|_| {
            let (pool, stop, outcomes) = (pool.clone(), Arc::clone(stop), Arc::clone(&outcomes));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = pool.get().and_then(|mut conn| conn.query("SELECT 1", &[]).map(drop));
                    outcomes.lock().unwrap().push((
                        started,
                        started.elapsed(),
                        result.err().map(|e| e.kind()),
                    ));
                    thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    (handles, outcomes)
}

fn restart_mid_load(mode: ShutdownMode) {
    let mut cluster = private_cluster(&ClusterOptions::default());
    let settings = Settings::from_vars([
        ("DATABASE_URL", cluster.info().database_url()),
        ("DB_CONNECT_TIMEOUT", "2".to_owned()),
        ("DB_POOL_TIMEOUT", "1000".to_owned()),
        ("DB_POOL_MAX_SIZE", "4".to_owned()),
    ])
    .unwrap();
    let pool = Pool::new(&settings).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (handles, outcomes) = load(&pool, 4, &stop);
    thread::sleep(Duration::from_millis(300));
    let down = Instant::now();
    cluster.restart(mode).unwrap();
    let back = Instant::now();
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap();
    let bound = settings.pool.checkout_timeout + settings.connect_timeout + Duration::from_millis(500);
    for &(started, took, error) in outcomes.iter() {
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
    assert!(outcomes.iter().any(|(_, _, error)| error.is_some()), "the restart was not seen at all");
}

#[test]
fn a_fast_restart_mid_load_recovers_within_a_second() {
    restart_mid_load(ShutdownMode::Fast);
}

#[test]
fn an_immediate_restart_mid_load_recovers_within_a_second() {
    restart_mid_load(ShutdownMode::Immediate);
}
