//! Every checkout gets a connection in the state of a new one, directly and through PgBouncer: abandoned
//! and failed transactions, panicking handlers, changed session state, backends the server closed while
//! idle. Each test uses a pool of one connection, so every request inherits the previous one's
//! connection.

use std::thread;
use std::time::{Duration, Instant};

use pgconn_config::Settings;
use pgconn_pool::{Error, ErrorKind, Pool};
use pgconn_tests::{admin, database_url, pgbouncer_url, unix_socket_url};

#[derive(Debug, Clone, Copy)]
enum Tier {
    Direct,
    PgBouncer,
}

const TIERS: [Tier; 2] = [Tier::Direct, Tier::PgBouncer];

/// A pool of one connection in `tier`, named `app` in `pg_stat_activity`.
#[track_caller]
fn pool(tier: Tier, app: &str, extra: &[(&str, &str)]) -> Pool {
    let mut vars = vec![
        ("DATABASE_URL".to_owned(), format!("{}?application_name={app}", database_url())),
        ("DB_POOL_MAX_SIZE".to_owned(), "1".to_owned()),
        ("DB_POOL_MIN_IDLE".to_owned(), "1".to_owned()),
    ];
    if let Tier::PgBouncer = tier {
        vars.push(("USE_PGBOUNCER".to_owned(), "true".to_owned()));
        vars.push(("PGBOUNCER_URL".to_owned(), format!("{}?application_name={app}", pgbouncer_url())));
    }
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let settings = Settings::from_vars(vars).unwrap();
    Pool::new(&settings).unwrap_or_else(|e| panic!("cannot build the {tier:?} pool: {e}"))
}

/// A fresh table `name (n int)`, owned by the application role.
fn table(pool: &Pool, name: &str) {
    pool.get()
        .unwrap()
        .batch_execute(&format!("DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (n int)"))
        .unwrap();
}

/// The committed rows of `name`, as another session sees them.
fn committed(name: &str) -> Vec<i32> {
    admin()
        .query(&format!("SELECT n FROM {name} ORDER BY n"), &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn an_abandoned_or_panicking_transaction_is_rolled_back_not_inherited() {
    for tier in TIERS {
        let name = format!("clean_abandoned_{tier:?}").to_lowercase();
        let pool = pool(tier, &name, &[]);
        table(&pool, &name);
        let opened = pool.metrics().connections_opened;

        // A: BEGIN, insert 1, return early without COMMIT or ROLLBACK.
        let early_return = || -> Result<(), Error> {
            let mut conn = pool.get()?;
            conn.batch_execute("BEGIN")?;
            conn.execute(&format!("INSERT INTO {name} VALUES (1)"), &[])?;
            Err(Error::Unsupported("the handler gave up".into()))
        };
        assert!(early_return().is_err());
        // B: an autocommit insert on the same connection is committed.
        assert_eq!(pool.get().unwrap().execute(&format!("INSERT INTO {name} VALUES (2)"), &[]).unwrap(), 1);
        assert_eq!(committed(&name), [2], "{tier:?}");
        let metrics = pool.metrics();
        assert_eq!(metrics.connections_reset.transaction, 1, "{tier:?}: {metrics:?}");
        assert_eq!(metrics.connections_opened, opened, "{tier:?}: rolled back and kept, not reopened");

        // E: BEGIN, insert 3, panic.
        let panicking = pool.clone();
        let sql = format!("INSERT INTO {name} VALUES (3)");
        let handler = thread::spawn(move || {
            let mut conn = panicking.get().unwrap();
            conn.batch_execute("BEGIN").unwrap();
            conn.execute(&sql, &[]).unwrap();
            panic!("a handler bug while its transaction is open");
        });
        assert!(handler.join().is_err());
        // F: the next request's insert is committed.
        assert_eq!(pool.get().unwrap().execute(&format!("INSERT INTO {name} VALUES (4)"), &[]).unwrap(), 1);
        assert_eq!(committed(&name), [2, 4], "{tier:?}");
        assert_eq!(pool.metrics().connections_closed.panicked, 1, "{tier:?}");
    }
}

#[test]
fn a_failed_transaction_does_not_fail_the_next_request() {
    for tier in TIERS {
        let pool = pool(tier, &format!("clean_failed_{tier:?}").to_lowercase(), &[]);
        // C: BEGIN, a failing statement, return.
        {
            let mut conn = pool.get().unwrap();
            conn.batch_execute("BEGIN").unwrap();
            let error = conn.query("SELECT 1 / 0", &[]).unwrap_err();
            assert_eq!(error.code(), Some(&postgres::error::SqlState::DIVISION_BY_ZERO), "{error}");
        }
        // D: SELECT 1 succeeds, five times (not one request in ten).
        for _ in 0..5 {
            let one: i32 = pool.get().unwrap().query_one("SELECT 1", &[]).unwrap().get(0);
            assert_eq!(one, 1, "{tier:?}");
        }
        let metrics = pool.metrics();
        assert_eq!(metrics.connections_reset.transaction, 1, "{tier:?}: {metrics:?}");
    }
}

#[test]
fn a_plain_request_costs_no_reset() {
    for tier in TIERS {
        let name = format!("clean_plain_{tier:?}").to_lowercase();
        let pool = pool(tier, &name, &[]);
        table(&pool, &name);
        for n in 0..20 {
            let mut conn = pool.get().unwrap();
            conn.execute(&format!("INSERT INTO {name} VALUES ($1)"), &[&n]).unwrap();
            conn.query("SELECT count(*) FROM pg_class WHERE relname = $1", &[&name.as_str()]).unwrap();
            conn.execute(&format!("UPDATE {name} SET n = n WHERE n = $1"), &[&n]).unwrap();
            conn.execute(&format!("DELETE FROM {name} WHERE n < 0"), &[]).unwrap();
        }
        let metrics = pool.metrics();
        assert_eq!(metrics.connections_reset.transaction + metrics.connections_reset.session, 0, "{tier:?}");
        assert_eq!(committed(&name).len(), 20);
    }
}

#[test]
fn changed_session_state_is_reset_and_the_startup_settings_kept() {
    let app = "clean_session";
    let mut admin = admin();
    admin
        .batch_execute(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgconn_clean_other') THEN
                     CREATE ROLE pgconn_clean_other;
                 END IF;
             END $$;
             GRANT pgconn_clean_other TO pgconn_app",
        )
        .unwrap();
    let pool = pool(Tier::Direct, app, &[("DB_STATEMENT_TIMEOUT", "12345")]);
    let defaults = |pool: &Pool| -> (String, String, String, String, bool) {
        let row = pool
            .get()
            .unwrap()
            .query_one(
                "SELECT current_setting('search_path'), current_setting('application_name'), \
                 current_setting('statement_timeout'), current_user::text, \
                 to_regclass('pg_temp.scratch') IS NULL",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
    };
    let fresh = defaults(&pool);
    assert_eq!(fresh, ("\"$user\", public".into(), app.into(), "12345ms".into(), "pgconn_app".into(), true));
    let pid = pool.get().unwrap().backend_pid().unwrap();
    {
        let mut conn = pool.get().unwrap();
        conn.batch_execute(
            "SET search_path = nowhere; SET application_name = 'changed'; SET statement_timeout = 0; \
             CREATE TEMP TABLE scratch (n int); SET ROLE pgconn_clean_other",
        )
        .unwrap();
    }
    assert_eq!(defaults(&pool), fresh);
    // The same way through the escape hatch, which the pool cannot follow.
    pool.get()
        .unwrap()
        .client()
        .batch_execute("SET search_path = elsewhere; SELECT set_config('application_name', 'x', false)")
        .unwrap();
    assert_eq!(defaults(&pool), fresh);
    // A function that changes a setting, called by a SELECT.
    pool.get().unwrap().query("SELECT set_config('search_path', 'fn', false)", &[]).unwrap();
    assert_eq!(defaults(&pool), fresh);
    let metrics = pool.metrics();
    assert_eq!(metrics.connections_reset.session, 3, "{metrics:?}");
    assert_eq!(pool.get().unwrap().backend_pid().unwrap(), pid, "reset, not reopened");
}

#[test]
fn the_transaction_api_commits_rolls_back_and_nests() {
    for tier in TIERS {
        let name = format!("clean_tx_{tier:?}").to_lowercase();
        let pool = pool(tier, &name, &[]);
        table(&pool, &name);
        let insert = format!("INSERT INTO {name} VALUES ($1)");
        let mut conn = pool.get().unwrap();

        let mut tx = conn.transaction().unwrap();
        tx.execute(&insert, &[&1]).unwrap();
        tx.commit().unwrap();

        // Dropped without commit: rolled back at once, and the connection is clean again.
        {
            let mut tx = conn.transaction().unwrap();
            tx.execute(&insert, &[&2]).unwrap();
        }
        conn.execute(&insert, &[&3]).unwrap();

        // A failed statement makes the commit an error, and nothing of it is committed.
        let mut tx = conn.transaction().unwrap();
        tx.execute(&insert, &[&4]).unwrap();
        assert!(tx.query("SELECT 1 / 0", &[]).is_err());
        let error = tx.commit().unwrap_err();
        assert!(matches!(error, Error::RolledBack), "{error}");
        assert_eq!(error.kind(), ErrorKind::Other);

        // A savepoint undoes only its own part.
        let mut tx = conn.transaction().unwrap();
        tx.execute(&insert, &[&5]).unwrap();
        {
            let mut savepoint = tx.savepoint().unwrap();
            savepoint.execute(&insert, &[&6]).unwrap();
            assert!(savepoint.query("SELECT 1 / 0", &[]).is_err());
            savepoint.rollback().unwrap();
        }
        let mut savepoint = tx.savepoint().unwrap();
        savepoint.execute(&insert, &[&7]).unwrap();
        savepoint.commit().unwrap();
        tx.commit().unwrap();
        drop(conn);

        assert_eq!(committed(&name), [1, 3, 5, 7], "{tier:?}");
        assert_eq!(pool.metrics().connections_reset.transaction, 0, "{tier:?}: nothing left to reset");
    }
}

/// `pg_terminate_backend` that waits until the backend has exited.
fn terminate(pid: i32) {
    let done: bool = admin().query_one("SELECT pg_terminate_backend($1, 5000)", &[&pid]).unwrap().get(0);
    assert!(done, "backend {pid} did not exit");
}

#[track_caller]
fn terminated_while_idle_is_never_handed_out(pool: &Pool) {
    let before = pool.metrics().connections_closed.closed_by_server;
    for round in 0..5 {
        let pid = pool.get().unwrap().backend_pid().unwrap();
        thread::sleep(Duration::from_millis(100));
        let returned = Instant::now();
        terminate(pid);
        let mut conn = pool.get().unwrap();
        assert!(returned.elapsed() < pgconn_pool::VALIDATION_BYPASS, "round {round} left the bypass window");
        let one: i32 =
            conn.query_one("SELECT 1", &[]).unwrap_or_else(|e| panic!("round {round}: {e}")).get(0);
        assert_eq!(one, 1);
        assert_ne!(conn.backend_pid().unwrap(), pid);
    }
    assert_eq!(pool.metrics().connections_closed.closed_by_server - before, 5);
}

#[test]
fn a_backend_terminated_inside_the_bypass_window_is_never_handed_out() {
    terminated_while_idle_is_never_handed_out(&pool(Tier::Direct, "clean_terminated_tcp", &[]));
}

#[test]
fn a_backend_terminated_inside_the_bypass_window_is_never_handed_out_over_a_unix_socket() {
    let url = unix_socket_url("?application_name=clean_terminated_unix");
    let settings = Settings::from_vars([("DATABASE_URL", url.as_str()), ("DB_POOL_MAX_SIZE", "1")]).unwrap();
    let pool = Pool::new(&settings).unwrap();
    assert!(pool.get().unwrap().has_deadline(), "the socket of a Unix-socket connection is found");
    terminated_while_idle_is_never_handed_out(&pool);
}

#[test]
fn terminating_idle_connections_fails_no_request() {
    let app = "clean_terminate_idle";
    let pool = pool(Tier::Direct, app, &[("DB_POOL_MAX_SIZE", "4"), ("DB_POOL_MIN_IDLE", "4")]);
    let held: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
    drop(held);
    let killed: i64 = admin()
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&app],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 4);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            thread::spawn(move || {
                (0..50)
                    .filter(|_| pool.get().and_then(|mut conn| conn.query("SELECT 1", &[])).is_err())
                    .count()
            })
        })
        .collect();
    let failed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(failed, 0, "requests failed after idle connections were terminated");
    assert_eq!(pool.metrics().connections_closed.closed_by_server, 4);
}
