//! The statement cache through a PgBouncer that handles prepared statements in transaction mode (1.21 and
//! later, `max_prepared_statements`, `PGBOUNCER_PREPARED_STATEMENTS=true`): `cargo xtask test` builds
//! PgBouncer 1.24.1 from Debian 13's source and starts it with one server connection, so the statements
//! of every client connection meet on it. The flag against the shared PgBouncer (1.18) is refused when the
//! pool is built.

use std::thread;

use pgconn_config::Settings;
use pgconn_pool::{PREPARE_THRESHOLD, Pool};
use pgconn_tests::{database_url, testkit::vars, xtask_var};

/// The second PgBouncer's `url_var`, or a panic saying how to get it.
#[track_caller]
fn prepared_pgbouncer(url_var: &str) -> String {
    xtask_var(url_var).unwrap_or_else(|_| {
        panic!(
            "{url_var} is not set: this test needs a PgBouncer 1.21 or later with max_prepared_statements, \
             which `cargo xtask test` builds (PgBouncer 1.24.1 from Debian's source) and starts; run the \
             tests with `cargo xtask test` (when it could not build it, it said why at the start)"
        )
    })
}

/// A pool through the second PgBouncer with prepared statements on, with `extra` variables on top.
fn through_pgbouncer(extra: &[(&str, &str)]) -> Pool {
    let mut vars = vec![
        ("DATABASE_URL".to_owned(), database_url()),
        ("USE_PGBOUNCER".to_owned(), "true".to_owned()),
        ("PGBOUNCER_URL".to_owned(), prepared_pgbouncer(vars::PGBOUNCER_PREPARED_URL)),
        ("PGBOUNCER_PREPARED_STATEMENTS".to_owned(), "true".to_owned()),
    ];
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let settings = Settings::from_vars(vars).unwrap();
    assert!(settings.statement_cache() > 0, "the cache is on through this PgBouncer");
    Pool::new(&settings).unwrap()
}

/// A pool straight to PostgreSQL, for the schema changes.
fn direct() -> Pool {
    Pool::new(&Settings::from_vars([("DATABASE_URL", database_url())]).unwrap()).unwrap()
}

/// The rows `command` returns on the PgBouncer admin console at `url`.
fn show(url: &str, command: &str) -> Vec<postgres::SimpleQueryRow> {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let messages = admin.simple_query(command).unwrap();
    messages
        .into_iter()
        .filter_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect()
}

#[test]
fn eight_client_connections_share_one_server_connection_prepared() {
    let pool = through_pgbouncer(&[("DB_POOL_MAX_SIZE", "8")]);
    let rounds: i32 = 300;
    let threads: Vec<_> = (0..8_i32)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                let mut errors = Vec::new();
                for i in 0..rounds {
                    let result = pool.get().and_then(|mut conn| {
                        let sum: i32 = conn.query_one("SELECT $1::int4 + $2::int4", &[&i, &t])?.get(0);
                        assert_eq!(sum, i + t);
                        let text: String =
                            conn.query_one("SELECT $1::text || '!'", &[&format!("{t}")])?.get(0);
                        assert_eq!(text, format!("{t}!"));
                        // And inside a transaction, which PgBouncer pins to one server connection.
                        let mut tx = conn.transaction()?;
                        let twice: i64 = tx.query_one("SELECT $1::int8 * 2", &[&i64::from(i)])?.get(0);
                        assert_eq!(twice, 2 * i64::from(i));
                        tx.commit()
                    });
                    if let Err(e) = result {
                        errors.push(format!("thread {t}, round {i}: {e}"));
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = threads.into_iter().flat_map(|thread| thread.join().unwrap()).collect();
    assert!(errors.is_empty(), "{} errors, the first: {:?}", errors.len(), errors.first());
    let cache = pool.metrics().statement_cache;
    let statements = 8 * 3 * u64::try_from(rounds).unwrap();
    // Each client connection counts each text to the threshold before preparing it.
    let counting = 8 * 3 * u64::from(PREPARE_THRESHOLD);
    assert!(cache.hits >= statements - counting, "{cache:?}");
    assert!((3..=24).contains(&cache.prepared), "{cache:?}");
    assert_eq!(cache.invalidations, 0, "{cache:?}");
    // On PostgreSQL, PgBouncer's one server connection holds each text once, under PgBouncer's names.
    let mut conn = pool.get().unwrap();
    let mut tx = conn.transaction().unwrap();
    let sql = "SELECT name, statement FROM pg_prepared_statements";
    let held: Vec<(String, String)> =
        tx.query(sql, &[]).unwrap().iter().map(|row| (row.get(0), row.get(1))).collect();
    for text in ["SELECT $1::int4 + $2::int4", "SELECT $1::text || '!'", "SELECT $1::int8 * 2"] {
        let names: Vec<&str> =
            held.iter().filter(|(_, s)| s == text).map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.len(), 1, "{text}: {held:?}");
        assert!(names[0].starts_with("PGBOUNCER_"), "{text}: {held:?}");
    }
}

#[test]
fn a_changed_result_type_is_retried_and_the_text_runs_unnamed_from_then_on() {
    // PgBouncer keeps one server-side statement per text on each server connection and hands it out again
    // for the same text; after the schema changes it stays stale until PgBouncer reconnects.
    direct()
        .get()
        .unwrap()
        .batch_execute(
            "DROP TABLE IF EXISTS prepared_shape; CREATE TABLE prepared_shape (a int); \
             INSERT INTO prepared_shape VALUES (1)",
        )
        .unwrap();
    let sql = "SELECT * FROM prepared_shape";
    let pool = through_pgbouncer(&[("DB_POOL_MAX_SIZE", "1")]);
    let mut conn = pool.get().unwrap();
    for _ in 0..=PREPARE_THRESHOLD {
        assert_eq!(conn.query(sql, &[]).unwrap()[0].len(), 1);
    }
    assert_eq!(pool.metrics().statement_cache.prepared, 1);
    direct().get().unwrap().batch_execute("ALTER TABLE prepared_shape ADD COLUMN b int").unwrap();
    // The first use after the change meets the stale statement and is retried unnamed; the text is not
    // prepared again, which would only find PgBouncer's stale statement again.
    for _ in 0..3 * PREPARE_THRESHOLD {
        assert_eq!(conn.query(sql, &[]).unwrap()[0].len(), 2);
    }
    for _ in 0..PREPARE_THRESHOLD {
        let mut tx = conn.transaction().unwrap();
        assert_eq!(tx.query(sql, &[]).unwrap()[0].len(), 2, "in a transaction too");
        tx.commit().unwrap();
    }
    let cache = pool.metrics().statement_cache;
    assert_eq!((cache.invalidations, cache.prepared), (1, 1), "{cache:?}");
    // Other texts are still prepared.
    for _ in 0..=PREPARE_THRESHOLD {
        conn.query_one("SELECT 1", &[]).unwrap();
    }
    assert_eq!(pool.metrics().statement_cache.prepared, 2);
    drop(conn);

    // A new client connection prepares the text at the threshold and meets PgBouncer's stale statement
    // there (PgBouncer answers the Parse itself; the server fails the Describe): retried unnamed, outside a
    // transaction, and not prepared again.
    let fresh = through_pgbouncer(&[("DB_POOL_MAX_SIZE", "1")]);
    let mut conn = fresh.get().unwrap();
    for _ in 0..3 * PREPARE_THRESHOLD {
        assert_eq!(conn.query(sql, &[]).unwrap()[0].len(), 2);
    }
    let cache = fresh.metrics().statement_cache;
    assert_eq!((cache.invalidations, cache.prepared), (1, 0), "{cache:?}");
    drop(conn);
    direct().get().unwrap().batch_execute("DROP TABLE prepared_shape").unwrap();
}

#[test]
fn evicted_statements_are_closed_through_pgbouncer_and_prepared_again() {
    // Named, so that its client connection can be found in SHOW CLIENTS.
    let url =
        format!("{}?application_name=pgconn_evictions", prepared_pgbouncer(vars::PGBOUNCER_PREPARED_URL));
    let pool = through_pgbouncer(&[
        ("PGBOUNCER_URL", url.as_str()),
        ("DB_POOL_MAX_SIZE", "1"),
        ("DB_POOL_MIN_IDLE", "1"),
        ("DB_STATEMENT_CACHE", "2"),
    ]);
    let mut conn = pool.get().unwrap();
    for round in 0..3 {
        for n in 1..=4_i32 {
            let sql = format!("SELECT {n} + $1::int4");
            for _ in 0..=PREPARE_THRESHOLD {
                let value: i32 = conn.query_one(sql.as_str(), &[&round]).unwrap().get(0);
                assert_eq!(value, n + round);
            }
        }
    }
    let cache = pool.metrics().statement_cache;
    assert!(cache.evictions >= 8, "{cache:?}");
    assert_eq!(cache.invalidations, 0, "{cache:?}");
    // Twelve statements prepared, at most two kept: PgBouncer got a Close for each evicted one.
    let admin = prepared_pgbouncer(vars::PGBOUNCER_PREPARED_ADMIN_URL);
    let clients: Vec<_> = show(&admin, "SHOW CLIENTS")
        .into_iter()
        .filter(|row| row.get("application_name") == Some("pgconn_evictions"))
        .collect();
    assert_eq!(clients.len(), 1, "one client connection named pgconn_evictions");
    let kept: u32 = clients[0].get("prepared_statements").unwrap().parse().unwrap();
    assert!(kept <= 2, "PgBouncer still holds {kept} of this client's statements");
    drop(conn);
}

#[test]
fn the_flag_is_refused_at_start_by_a_pgbouncer_that_passes_names_through() {
    // The shared PgBouncer is Debian 12's 1.18: it sends the driver's statement names (s0, s1, ...) to
    // PostgreSQL as they are, so a statement could run on a server connection holding another client's `s0`.
    let settings = Settings::from_vars([
        ("DATABASE_URL", database_url()),
        ("USE_PGBOUNCER", "true".to_owned()),
        ("PGBOUNCER_URL", pgconn_tests::pgbouncer_url()),
        ("PGBOUNCER_PREPARED_STATEMENTS", "true".to_owned()),
    ])
    .unwrap();
    // PgBouncer 1.22 and later keep prepared statements by default (max_prepared_statements = 200), so
    // there the flag is honoured without the line in the shared ini.
    let versions = show(&pgconn_tests::pgbouncer_admin_url(), "SHOW VERSION");
    let version = versions[0].get(0).unwrap();
    let number = |part: Option<&str>| part.and_then(|n| n.parse::<u32>().ok()).unwrap();
    let mut parts = version.trim_start_matches("PgBouncer ").split('.');
    let (major, minor) = (number(parts.next()), number(parts.next()));
    match Pool::new(&settings) {
        Err(error) if (major, minor) < (1, 22) => {
            let message = error.to_string();
            for part in ["PGBOUNCER_PREPARED_STATEMENTS=true", "older than 1.21", "max_prepared_statements"] {
                assert!(message.contains(part), "{part:?} in {message}");
            }
        }
        Ok(_) if (major, minor) >= (1, 22) => {}
        other => panic!("{version}: {:?}", other.map(drop)),
    }
    // Without the flag the same PgBouncer is fine, with the cache off.
    let settings = Settings::from_vars([
        ("DATABASE_URL", database_url()),
        ("USE_PGBOUNCER", "true".to_owned()),
        ("PGBOUNCER_URL", pgconn_tests::pgbouncer_url()),
    ])
    .unwrap();
    Pool::new(&settings).unwrap().get().unwrap().query_one("SELECT 1", &[]).unwrap();
}

#[test]
fn statements_deallocated_behind_the_cache_through_client_are_prepared_again() {
    let pool = through_pgbouncer(&[("DB_POOL_MAX_SIZE", "1")]);
    let mut conn = pool.get().unwrap();
    for _ in 0..=PREPARE_THRESHOLD {
        conn.query_one("SELECT 41", &[]).unwrap();
    }
    // PgBouncer forgets this client's statement names; the next use of one would end the connection
    // ("prepared statement did not exist"), in this checkout or a later one.
    conn.client().batch_execute("DEALLOCATE ALL").unwrap();
    let opened = pool.metrics().connections_opened;
    for _ in 0..=PREPARE_THRESHOLD {
        let n: i32 = conn.query_one("SELECT 41", &[]).unwrap().get(0);
        assert_eq!(n, 41);
    }
    conn.client().batch_execute("DEALLOCATE ALL").unwrap();
    drop(conn);
    let mut conn = pool.get().unwrap();
    for _ in 0..=PREPARE_THRESHOLD {
        let n: i32 = conn.query_one("SELECT 41", &[]).unwrap().get(0);
        assert_eq!(n, 41);
    }
    let cache = pool.metrics().statement_cache;
    assert_eq!((cache.prepared, cache.invalidations), (3, 0), "{cache:?}");
    assert_eq!(pool.metrics().connections_opened, opened, "the same connection throughout");
}

#[test]
fn statements_that_only_look_like_session_changes_keep_the_cache_through_pgbouncer() {
    // `DO` is not known to leave the session as it was, so the connection counts as changed; through
    // PgBouncer that is not reset, and must not cost the statement cache on every return.
    let pool = through_pgbouncer(&[("DB_POOL_MAX_SIZE", "1")]);
    for _ in 0..=PREPARE_THRESHOLD {
        let mut conn = pool.get().unwrap();
        conn.batch_execute("DO $$ BEGIN PERFORM 1; END $$").unwrap();
        conn.query_one("SELECT 42", &[]).unwrap();
    }
    let cache = pool.metrics().statement_cache;
    assert_eq!((cache.prepared, cache.hits), (1, 1), "{cache:?}");
}
