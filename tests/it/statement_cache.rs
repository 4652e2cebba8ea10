//! The statement cache against the real server: prepared after `PREPARE_THRESHOLD` uses, reused, bounded,
//! forgotten when the plan changes or the session is reset, and never used through PgBouncer in
//! transaction mode.

use pgconn_config::Settings;
use pgconn_pool::{PREPARE_THRESHOLD, Pool};
use pgconn_tests::{database_url, pgbouncer_url};

fn pool(extra: &[(&str, &str)]) -> Pool {
    let url = database_url();
    let mut vars = vec![("DATABASE_URL", url.as_str()), ("DB_POOL_MAX_SIZE", "1"), ("DB_POOL_MIN_IDLE", "1")];
    vars.extend_from_slice(extra);
    Pool::new(&Settings::from_vars(vars).unwrap()).unwrap()
}

/// Statements prepared at protocol level on this connection (the cache's, not SQL PREPARE), asked with
/// the simple protocol, which prepares nothing itself.
fn prepared(conn: &mut pgconn_pool::PooledConn) -> i64 {
    let messages =
        conn.client().simple_query("SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql").unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|n| n.parse().unwrap()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_statement_is_prepared_at_the_threshold_and_reused() {
    let pool = pool(&[]);
    let mut conn = pool.get().unwrap();
    let sql = "SELECT $1::int4 + 1";
    for i in 0..PREPARE_THRESHOLD + 5 {
        let n: i32 = conn.query_one(sql, &[&i32::try_from(i).unwrap()]).unwrap().get(0);
        assert_eq!(n, i32::try_from(i).unwrap() + 1);
    }
    let m = pool.metrics().statement_cache;
    assert_eq!(m.prepared, 1, "{m:?}");
    assert_eq!(m.misses, u64::from(PREPARE_THRESHOLD), "{m:?}");
    assert_eq!(m.hits, 5, "{m:?}");
    // (Not asked here: `client()`, the escape hatch, would have the session reset on return.)
    // The same text with another parameter type is another statement.
    for _ in 0..PREPARE_THRESHOLD {
        conn.query_one(sql, &[&1_i64]).unwrap();
    }
    assert_eq!(pool.metrics().statement_cache.prepared, 2);
    drop(conn);
    // The connection keeps its statements across checkouts.
    let mut conn = pool.get().unwrap();
    conn.query_one(sql, &[&1_i32]).unwrap();
    assert_eq!(pool.metrics().statement_cache.hits, 6);
    assert_eq!(prepared(&mut conn), 2);
}

#[test]
fn a_changed_result_type_is_retried_unprepared_outside_a_transaction() {
    let pool = pool(&[]);
    let mut conn = pool.get().unwrap();
    conn.batch_execute("CREATE TEMP TABLE shape (a int); INSERT INTO shape VALUES (1)").unwrap();
    // A temporary table is session state: keep the connection while the test runs.
    for _ in 0..=PREPARE_THRESHOLD {
        assert_eq!(conn.query("SELECT * FROM shape", &[]).unwrap()[0].len(), 1);
    }
    conn.batch_execute("ALTER TABLE shape ADD COLUMN b int").unwrap();
    // "cached plan must not change result type": forgotten, and run again unnamed.
    assert_eq!(conn.query("SELECT * FROM shape", &[]).unwrap()[0].len(), 2);
    assert_eq!(pool.metrics().statement_cache.invalidations, 1);
    // Inside a transaction the error has aborted it: no retry, the error is the caller's.
    for _ in 0..=PREPARE_THRESHOLD {
        conn.query("SELECT * FROM shape", &[]).unwrap();
    }
    conn.batch_execute("ALTER TABLE shape ADD COLUMN c int").unwrap();
    let mut tx = conn.transaction().unwrap();
    let error = tx.query("SELECT * FROM shape", &[]).unwrap_err();
    assert!(error.to_string().contains("cached plan must not change result type"), "{error}");
    drop(tx);
    assert_eq!(conn.query("SELECT * FROM shape", &[]).unwrap()[0].len(), 3);
    assert_eq!(pool.metrics().statement_cache.invalidations, 2);
}

#[test]
fn a_deallocated_statement_is_found_and_prepared_again() {
    let pool = pool(&[]);
    let mut conn = pool.get().unwrap();
    for _ in 0..=PREPARE_THRESHOLD {
        conn.query_one("SELECT 42", &[]).unwrap();
    }
    // Behind the cache's back, through the escape hatch.
    conn.client().batch_execute("DEALLOCATE ALL").unwrap();
    let n: i32 = conn.query_one("SELECT 42", &[]).unwrap().get(0);
    assert_eq!(n, 42);
    assert_eq!(pool.metrics().statement_cache.invalidations, 1);
    // Through the query API, the cache sees it and forgets everything at once.
    for _ in 0..=PREPARE_THRESHOLD {
        conn.query_one("SELECT 43", &[]).unwrap();
    }
    conn.batch_execute("DEALLOCATE ALL").unwrap();
    conn.query_one("SELECT 43", &[]).unwrap();
    assert_eq!(pool.metrics().statement_cache.invalidations, 1, "no stale statement was used");
}

#[test]
fn a_session_reset_forgets_the_statements() {
    let pool = pool(&[]);
    let mut conn = pool.get().unwrap();
    for _ in 0..=PREPARE_THRESHOLD {
        conn.query_one("SELECT 7", &[]).unwrap();
    }
    assert_eq!(prepared(&mut conn), 1);
    conn.batch_execute("SET search_path = pg_catalog").unwrap();
    drop(conn); // DISCARD ALL on return
    let mut conn = pool.get().unwrap();
    assert_eq!(prepared(&mut conn), 0);
    for _ in 0..=PREPARE_THRESHOLD {
        conn.query_one("SELECT 7", &[]).unwrap();
    }
    assert_eq!(pool.metrics().statement_cache.prepared, 2, "prepared again after the reset");
    assert_eq!(pool.metrics().statement_cache.invalidations, 0);
}

#[test]
fn the_cache_is_bounded() {
    let pool = pool(&[("DB_STATEMENT_CACHE", "2")]);
    let mut conn = pool.get().unwrap();
    for sql in ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 1"] {
        for _ in 0..=PREPARE_THRESHOLD {
            conn.query_one(sql, &[]).unwrap();
        }
    }
    assert!(prepared(&mut conn) <= 2, "{} prepared", prepared(&mut conn));
    assert!(pool.metrics().statement_cache.evictions >= 1, "{:?}", pool.metrics().statement_cache);
}

#[test]
fn off_when_asked_and_through_pgbouncer_in_transaction_mode() {
    let pool = pool(&[("DB_STATEMENT_CACHE", "0")]);
    let mut conn = pool.get().unwrap();
    for _ in 0..20 {
        conn.query_one("SELECT 1", &[]).unwrap();
    }
    assert_eq!(prepared(&mut conn), 0);
    assert_eq!(pool.metrics().statement_cache.prepared, 0);

    let settings = Settings::from_vars([
        ("DATABASE_URL", database_url()),
        ("USE_PGBOUNCER", "true".to_owned()),
        ("PGBOUNCER_URL", pgbouncer_url()),
        ("DB_POOL_MAX_SIZE", "2".to_owned()),
    ])
    .unwrap();
    assert_eq!(settings.statement_cache(), 0);
    let pool = Pool::new(&settings).unwrap();
    for _ in 0..20 {
        pool.get().unwrap().query_one("SELECT $1::int4", &[&1_i32]).unwrap();
    }
    assert_eq!(pool.metrics().statement_cache.prepared, 0);
    assert_eq!(pool.metrics().statement_cache.hits, 0);
}
