//! The PgBouncer tier end to end: the rendered ini running, many threads and processes through transaction
//! pooling, the statement timeout, refused session state, and the monitor's view of it.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use pgconn_config::Settings;
use pgconn_monitor::{Context, PgBouncerProbe, PgBouncerSnapshot, PgBouncerView, Report};
use pgconn_pool::{Error, ErrorKind, Pool};
use pgconn_tests::{
    ClusterOptions, PGBOUNCER_AUTH_FILE_VAR, PGBOUNCER_INI_VAR, database_url, pgbouncer_admin_url,
    pgbouncer_url, pgconn_bin, private_cluster, private_pgbouncer, require,
};

/// The environment of a pool that goes through PgBouncer at `pgbouncer_url` to the database at `database_url`.
fn env(database_url: &str, pgbouncer_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("USE_PGBOUNCER".to_owned(), "true".to_owned()),
        ("PGBOUNCER_URL".to_owned(), pgbouncer_url.to_owned()),
    ];
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    vars
}

#[track_caller]
fn pool(vars: Vec<(String, String)>) -> Pool {
    let settings = Settings::from_vars(vars).unwrap();
    Pool::new(&settings).unwrap_or_else(|e| panic!("cannot build a pool through PgBouncer: {e}"))
}

#[test]
fn sixteen_threads_and_a_second_process_without_an_error() {
    let vars = env(&database_url(), &pgbouncer_url(), &[("DB_POOL_MAX_SIZE", "16")]);
    let second = Command::new(pgconn_bin())
        .args(["load", "--clients", "8", "--duration", "3", "--json"])
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pool = pool(vars.clone());
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (pool, errors, first_error) = (pool.clone(), Arc::clone(&errors), Arc::clone(&first_error));
            thread::spawn(move || {
                for i in 0..2000_i32 {
                    let result = pool.get().and_then(|mut conn| {
                        let row =
                            conn.query_one("SELECT $1::int4 + $2::int4, $3::text", &[&i, &t, &"through"])?;
                        assert_eq!(
                            (row.get::<_, i32>(0), row.get::<_, String>(1)),
                            (i + t, "through".to_owned())
                        );
                        Ok(())
                    });
                    if let Err(e) = result {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("thread {t} request {i}: {e}"));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "first: {:?}", first_error.lock().unwrap());
    assert_eq!(pool.metrics().queries, 32_000);
    let second = second.wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", String::from_utf8_lossy(&second.stderr));
    let report: pgconn_cli::load::LoadReport =
        pgconn_tests::read_as(&String::from_utf8_lossy(&second.stdout));
    assert_eq!(report.strategy, "pgbouncer");
    assert_eq!(report.errors, 0, "{report:#?}");
    assert!(report.ok > 1000, "{report:#?}");
}

#[test]
fn nothing_session_level_is_sent_and_the_timeout_comes_from_pgbouncer() {
    let pool = pool(env(&database_url(), &pgbouncer_url(), &[("DB_STATEMENT_TIMEOUT", "1234")]));
    let mut conn = pool.get().unwrap();
    // The shared PgBouncer's ini was rendered with the default 30000 ms: DB_STATEMENT_TIMEOUT of this
    // process is not sent (no options, no SET), PgBouncer's connect_query sets it.
    let timeout: String = conn.query_one("SELECT current_setting('statement_timeout')", &[]).unwrap().get(0);
    assert_eq!(timeout, "30s");
}

#[test]
fn the_statement_timeout_holds_through_pgbouncer() {
    let cluster = private_cluster(&ClusterOptions::default());
    let bouncer = private_pgbouncer(&cluster, &[("DB_STATEMENT_TIMEOUT", "200")]);
    let pool = pool(env(
        &cluster.info().database_url(),
        &bouncer.info().database_url(),
        &[("DB_POOL_MAX_SIZE", "1")],
    ));
    let mut conn = pool.get().unwrap();
    let started = Instant::now();
    let error = conn.query("SELECT pg_sleep(3)", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StatementTimeout, "{error}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    drop(conn);
    assert_eq!(pool.get().unwrap().query_one("SELECT 7::int4", &[]).unwrap().get::<_, i32>(0), 7);
}

#[test]
fn the_rendered_ini_is_the_one_running() {
    let ini_path = require(PGBOUNCER_INI_VAR);
    let auth_file = require(PGBOUNCER_AUTH_FILE_VAR);
    let ini = std::fs::read_to_string(&ini_path).unwrap();
    let port = Settings::from_vars([("DATABASE_URL", pgbouncer_url())]).unwrap().database.primary().port;
    // Rendering again from the same environment gives the same file, byte for byte.
    let scratch = std::env::temp_dir().join(format!("pgconn-it-userlist-{}", std::process::id()));
    let rendered = Command::new(pgconn_bin())
        .args(["pgbouncer-ini", "--auth-file", scratch.to_str().unwrap()])
        .env_clear()
        .envs([
            ("DATABASE_URL", database_url()),
            ("PGBOUNCER_HOST", "127.0.0.1".into()),
            ("PGBOUNCER_PORT", port.to_string()),
        ])
        .output()
        .unwrap();
    assert!(rendered.status.success());
    let rendered = String::from_utf8(rendered.stdout).unwrap().replace(scratch.to_str().unwrap(), &auth_file);
    assert_eq!(ini, rendered);
    assert_eq!(std::fs::read(&scratch).unwrap(), std::fs::read(&auth_file).unwrap());
    std::fs::remove_file(&scratch).unwrap();
    assert_eq!(std::fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777, 0o600);
    // And PgBouncer runs with it.
    let mut admin: postgres::Config = pgbouncer_admin_url().parse().unwrap();
    admin.connect_timeout(Duration::from_secs(10));
    let mut admin = admin.connect(postgres::NoTls).unwrap();
    let config = admin.simple_query("SHOW CONFIG").unwrap();
    let setting = |key: &str| {
        config.iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some(key) => {
                row.get(1).map(str::to_owned)
            }
            _ => None,
        })
    };
    assert_eq!(setting("listen_port"), Some(port.to_string()));
    assert_eq!(setting("pool_mode").as_deref(), Some("transaction"));
    assert_eq!(setting("auth_file").as_deref(), Some(auth_file.as_str()));
}

#[test]
fn session_state_is_refused_with_what_to_do_instead() {
    let pool = pool(env(&database_url(), &pgbouncer_url(), &[]));
    let mut conn = pool.get().unwrap();
    let refused = |conn: &mut pgconn_pool::PooledConn, sql: &str| match conn.batch_execute(sql) {
        Err(Error::TransactionMode { what, .. }) => what,
        other => panic!("{sql} was not refused: {other:?}"),
    };
    assert_eq!(refused(&mut conn, "SET search_path = app"), "a session-level SET");
    assert_eq!(refused(&mut conn, "LISTEN jobs"), "LISTEN");
    assert_eq!(refused(&mut conn, "SELECT pg_advisory_lock(7)"), "a session-level advisory lock");
    let message = conn.batch_execute("SET work_mem = '64MB'").unwrap_err().to_string();
    assert!(message.contains("transaction mode") && message.contains("SET LOCAL"), "{message}");
    // What transaction mode can do goes through: SET LOCAL inside a transaction takes effect there.
    let error = conn
        .batch_execute("BEGIN; SET LOCAL statement_timeout = 100; SELECT pg_sleep(1); COMMIT")
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::StatementTimeout, "{error}");
    conn.batch_execute("ROLLBACK").unwrap();
    conn.query("SELECT pg_advisory_xact_lock(7)", &[]).unwrap();
}

#[test]
fn the_monitor_sees_what_show_pools_says_under_load() {
    let cluster = private_cluster(&ClusterOptions::default());
    let bouncer = private_pgbouncer(&cluster, &[]);
    // Five clients inside long statements: a steady state for both readings to agree on.
    let busy: Vec<_> = (0..5)
        .map(|_| {
            let mut config: postgres::Config = bouncer.info().database_url().parse().unwrap();
            config.connect_timeout(Duration::from_secs(10));
            let mut client = config.connect(postgres::NoTls).unwrap();
            thread::spawn(move || client.simple_query("SELECT pg_sleep(3)").map(drop))
        })
        .collect();
    thread::sleep(Duration::from_millis(700));
    let settings =
        Settings::from_vars(env(&cluster.info().database_url(), &bouncer.info().database_url(), &[]))
            .unwrap();
    let view = PgBouncerProbe::new(&settings).unwrap().probe();
    let PgBouncerView::Reached(snapshot) = &view else { panic!("{view:?}") };
    let mut admin: postgres::Config = bouncer.info().admin_url().parse().unwrap();
    admin.connect_timeout(Duration::from_secs(10));
    let pools = admin.connect(postgres::NoTls).unwrap().simple_query("SHOW POOLS").unwrap();
    let direct = pools
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) if row.get("database") == Some("pgconn_test") => {
                Some((row.get("cl_active").map(str::to_owned), row.get("sv_active").map(str::to_owned)))
            }
            _ => None,
        })
        .unwrap();
    let ours = &snapshot.pools[0];
    let number = |column| PgBouncerSnapshot::number(ours, column);
    assert_eq!(direct, (Some(format!("{}", number("cl_active"))), Some(format!("{}", number("sv_active")))));
    assert!((number("sv_active") - 5.0).abs() < f64::EPSILON, "{ours:?}");
    assert!(!snapshot.stats.is_empty() && !snapshot.databases.is_empty());
    let report = Report::new(&Context::new(&settings), None, None, SystemTime::now())
        .with_pgbouncer(&view, &Context::new(&settings).thresholds);
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["pgbouncer"]["pools"][0]["sv_active"], 5);
    for handle in busy {
        handle.join().unwrap().unwrap();
    }
}
