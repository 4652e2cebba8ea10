//! The variables other than the URLs: defaults, ranges, precedence, and every problem at once.

use std::time::Duration;

use pgconn_config::{ConnMaxAge, Host, PoolMode, Strategy};

use crate::{problems, settings};

const URL: (&str, &str) = ("DATABASE_URL", "postgresql://app@db/app");

#[test]
fn defaults() {
    let s = settings(&[URL]);
    assert_eq!(s.strategy, Strategy::Direct);
    assert_eq!(s.conn_max_age, ConnMaxAge::Limited(Duration::from_secs(600)));
    assert!(s.persistent());
    assert_eq!(s.connect_timeout, Duration::from_secs(10));
    assert_eq!(s.statement_timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.query_timeout, Some(Duration::from_secs(35)), "the statement timeout plus 5 s");
    assert_eq!((s.pool.max_size, s.pool.min_idle), (10, 2));
    assert_eq!(s.pool.checkout_timeout, Duration::from_secs(5));
    assert_eq!(s.pool.leak_threshold, Some(Duration::from_secs(30)));
    assert_eq!(settings(&[URL, ("DB_POOL_LEAK_THRESHOLD", "0")]).pool.leak_threshold, None);
    assert_eq!(s.pgbouncer.pool_mode, PoolMode::Transaction);
    assert_eq!(
        (
            s.pgbouncer.max_client_conn,
            s.pgbouncer.default_pool_size,
            s.pgbouncer.min_pool_size,
            s.pgbouncer.reserve_pool_size
        ),
        (1000, 25, 10, 5)
    );
    assert_eq!(s.application_name(), "pgconn");
    assert_eq!(s.target, s.database);
}

#[test]
fn db_variables_when_no_url() {
    let s = settings(&[("DB_NAME", "app"), ("DB_USER", "u"), ("DB_PASSWORD", "p:@/?#")]);
    assert_eq!(format!("{}", s.database), "u@localhost:5432/app");
    assert_eq!(s.database.password.as_ref().map(pgconn_config::Password::expose), Some("p:@/?#"));
    let s = settings(&[("DB_NAME", "app"), ("DB_USER", "u"), ("DB_HOST", "/run/pg"), ("DB_PORT", "6000")]);
    assert_eq!(s.database.primary().host, Host::Unix("/run/pg".into()));
    assert_eq!(s.database.primary().port, 6000);
    // DATABASE_URL wins when both are set.
    let s = settings(&[URL, ("DB_NAME", "other"), ("DB_HOST", "elsewhere"), ("DB_PORT", "bad")]);
    assert_eq!(format!("{}", s.database), "app@db:5432/app");
}

#[test]
fn neither_url_nor_name() {
    assert_eq!(
        problems(&[]),
        vec![
            "DATABASE_URL: DATABASE_URL or DB_NAME must be set: \
             DATABASE_URL=postgresql://user:password@host:5432/dbname, or DB_NAME and DB_USER \
             (with DB_HOST, DB_PORT, DB_PASSWORD as needed), or libpq's PGHOST, PGDATABASE, PGUSER, ... \
             variables"
        ]
    );
    // Without DB_USER, PGUSER, else the process's own user, as libpq.
    let s = settings(&[("DB_NAME", "app"), ("PGUSER", "alice")]);
    assert_eq!(format!("{}", s.database), "alice@localhost:5432/app");
    assert_eq!(s.database.sources.get("user"), Some(&pgconn_config::Source::Var("PGUSER")));
    let s = settings(&[("DB_NAME", "app")]);
    assert_eq!(s.database.sources.get("user"), Some(&pgconn_config::Source::Default));
    assert!(!s.database.user.is_empty());
    // An empty value counts as unset.
    assert_eq!(problems(&[("DATABASE_URL", ""), ("DB_NAME", "")]).len(), 1);
}

#[test]
fn conn_max_age() {
    let age = |v: &str| settings(&[URL, ("DB_CONN_MAX_AGE", v)]).conn_max_age;
    assert_eq!(age("0"), ConnMaxAge::PerRequest);
    assert!(!settings(&[URL, ("DB_CONN_MAX_AGE", "0")]).persistent());
    assert_eq!(age("60"), ConnMaxAge::Limited(Duration::from_secs(60)));
    assert_eq!(age("none"), ConnMaxAge::Unlimited);
    assert_eq!(age("None"), ConnMaxAge::Unlimited);
    assert_eq!(
        problems(&[URL, ("DB_CONN_MAX_AGE", "-1")]),
        vec![
            "DB_CONN_MAX_AGE: DB_CONN_MAX_AGE must be a whole number of seconds (0 for no persistent \
             connections) or \"none\" for unlimited, got \"-1\""
        ]
    );
}

#[test]
fn timeouts() {
    let s = settings(&[URL, ("DB_CONNECT_TIMEOUT", "3"), ("DB_STATEMENT_TIMEOUT", "0")]);
    assert_eq!(s.connect_timeout, Duration::from_secs(3));
    assert_eq!(s.statement_timeout, None);
    assert_eq!(s.query_timeout, None, "no statement timeout, no client-side deadline unless asked");
    let s = settings(&[URL, ("DB_STATEMENT_TIMEOUT", "1000"), ("DB_QUERY_TIMEOUT", "1500")]);
    assert_eq!(s.query_timeout, Some(Duration::from_millis(1500)));
    assert_eq!(settings(&[URL, ("DB_QUERY_TIMEOUT", "0")]).query_timeout, None);
    // The URL's connect_timeout applies unless DB_CONNECT_TIMEOUT is set.
    let url = ("DATABASE_URL", "postgresql://app@db/app?connect_timeout=4");
    assert_eq!(settings(&[url]).connect_timeout, Duration::from_secs(4));
    assert_eq!(settings(&[url, ("DB_CONNECT_TIMEOUT", "7")]).connect_timeout, Duration::from_secs(7));
    assert_eq!(
        problems(&[URL, ("DB_CONNECT_TIMEOUT", "0")]),
        vec![
            "DB_CONNECT_TIMEOUT: DB_CONNECT_TIMEOUT=0 would wait forever for a connection; give whole \
             seconds from 1 to 3600"
        ]
    );
    assert_eq!(
        problems(&[URL, ("DB_CONNECT_TIMEOUT", "ten")]),
        vec![
            "DB_CONNECT_TIMEOUT: DB_CONNECT_TIMEOUT must be a whole number of seconds from 1 to 3600, got \"ten\""
        ]
    );
    assert_eq!(
        problems(&[URL, ("DB_STATEMENT_TIMEOUT", "1.5")]),
        vec![
            "DB_STATEMENT_TIMEOUT: DB_STATEMENT_TIMEOUT must be a whole number of milliseconds (0 turns it \
             off) from 0 to 2147483647, got \"1.5\""
        ]
    );
}

#[test]
fn pool_sizing() {
    let s = settings(&[URL, ("DB_POOL_MAX_SIZE", "1")]);
    assert_eq!((s.pool.max_size, s.pool.min_idle), (1, 1), "the default min_idle never exceeds max_size");
    let s =
        settings(&[URL, ("DB_POOL_MAX_SIZE", "50"), ("DB_POOL_MIN_IDLE", "0"), ("DB_POOL_TIMEOUT", "250")]);
    assert_eq!((s.pool.max_size, s.pool.min_idle), (50, 0));
    assert_eq!(s.pool.checkout_timeout, Duration::from_millis(250));
    assert_eq!(
        problems(&[URL, ("DB_POOL_MAX_SIZE", "4"), ("DB_POOL_MIN_IDLE", "5")]),
        vec!["DB_POOL_MIN_IDLE: DB_POOL_MIN_IDLE (5) must not exceed DB_POOL_MAX_SIZE (4)"]
    );
    assert_eq!(
        problems(&[URL, ("DB_POOL_MAX_SIZE", "0"), ("DB_POOL_TIMEOUT", "0")]),
        vec![
            "DB_POOL_MAX_SIZE: DB_POOL_MAX_SIZE must be a whole number from 1 to 10000, got \"0\"",
            "DB_POOL_TIMEOUT: DB_POOL_TIMEOUT must be a whole number of milliseconds from 1 to 3600000, got \"0\"",
        ]
    );
}

#[test]
fn use_pgbouncer_spellings() {
    for (value, expected) in [
        ("true", true),
        ("TRUE", true),
        ("1", true),
        ("yes", true),
        ("Yes", true),
        ("false", false),
        ("0", false),
        ("no", false),
        ("NO", false),
    ] {
        let s = settings(&[URL, ("USE_PGBOUNCER", value)]);
        assert_eq!(s.strategy == Strategy::PgBouncer, expected, "USE_PGBOUNCER={value}");
    }
    assert_eq!(
        problems(&[URL, ("USE_PGBOUNCER", "maybe")]),
        vec!["USE_PGBOUNCER: USE_PGBOUNCER must be true or false (also 1/0, yes/no, on/off), got \"maybe\""]
    );
}

#[test]
fn pgbouncer_ini_settings() {
    let s = settings(&[
        URL,
        ("PGBOUNCER_POOL_MODE", "Session"),
        ("PGBOUNCER_MAX_CLIENT_CONN", "5000"),
        ("PGBOUNCER_DEFAULT_POOL_SIZE", "40"),
        ("PGBOUNCER_MIN_POOL_SIZE", "0"),
        ("PGBOUNCER_RESERVE_POOL_SIZE", "0"),
    ]);
    assert_eq!(s.pgbouncer.pool_mode, PoolMode::Session);
    assert_eq!((s.pgbouncer.max_client_conn, s.pgbouncer.default_pool_size), (5000, 40));
    assert_eq!(
        problems(&[URL, ("PGBOUNCER_POOL_MODE", "txn"), ("PGBOUNCER_DEFAULT_POOL_SIZE", "5")]),
        vec![
            "PGBOUNCER_POOL_MODE: PGBOUNCER_POOL_MODE must be session, transaction or statement, got \"txn\"",
            "PGBOUNCER_MIN_POOL_SIZE: PGBOUNCER_MIN_POOL_SIZE (10) must not exceed PGBOUNCER_DEFAULT_POOL_SIZE (5)",
        ]
    );
}

#[test]
fn all_problems_at_once() {
    let found = problems(&[
        ("DATABASE_URL", "postgresql://u:secret@h:0/d"),
        ("DB_CONN_MAX_AGE", "forever"),
        ("DB_CONNECT_TIMEOUT", "x"),
        ("DB_STATEMENT_TIMEOUT", "x"),
        ("DB_QUERY_TIMEOUT", "x"),
        ("DB_POOL_MAX_SIZE", "x"),
        ("DB_POOL_MIN_IDLE", "x"),
        ("DB_POOL_TIMEOUT", "x"),
        ("DB_POOL_LEAK_THRESHOLD", "x"),
        ("USE_PGBOUNCER", "x"),
        ("PGBOUNCER_POOL_MODE", "x"),
        ("PGBOUNCER_MAX_CLIENT_CONN", "x"),
        ("PGBOUNCER_DEFAULT_POOL_SIZE", "x"),
        ("PGBOUNCER_MIN_POOL_SIZE", "x"),
        ("PGBOUNCER_RESERVE_POOL_SIZE", "x"),
    ]);
    let variables: Vec<&str> = found.iter().map(|line| line.split(':').next().unwrap()).collect();
    assert_eq!(
        variables,
        [
            "DATABASE_URL",
            "DB_CONN_MAX_AGE",
            "DB_CONNECT_TIMEOUT",
            "DB_STATEMENT_TIMEOUT",
            "DB_QUERY_TIMEOUT",
            "DB_POOL_MAX_SIZE",
            "DB_POOL_MIN_IDLE",
            "DB_POOL_TIMEOUT",
            "DB_POOL_LEAK_THRESHOLD",
            "USE_PGBOUNCER",
            "PGBOUNCER_POOL_MODE",
            "PGBOUNCER_MAX_CLIENT_CONN",
            "PGBOUNCER_DEFAULT_POOL_SIZE",
            "PGBOUNCER_MIN_POOL_SIZE",
            "PGBOUNCER_RESERVE_POOL_SIZE",
        ]
    );
    assert!(found.iter().all(|line| !line.contains("secret")));
}

#[test]
fn long_values_are_cut_in_messages() {
    let long = "9".repeat(500);
    let found = problems(&[URL, ("DB_POOL_MAX_SIZE", &long)]);
    assert!(found[0].len() < 200, "{}", found[0]);
}

#[test]
fn summary_never_shows_the_password() {
    let s = settings(&[("DATABASE_URL", "postgresql://app:Sup3rS3cret@db/app"), ("USE_PGBOUNCER", "true")]);
    for text in [format!("{s}"), format!("{s:?}"), format!("{s:#?}")] {
        assert!(!text.contains("Sup3rS3cret"), "{text}");
    }
    assert!(format!("{s}").contains("password set"));
}
