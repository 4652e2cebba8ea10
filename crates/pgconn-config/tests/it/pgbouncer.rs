//! The rendered pgbouncer.ini and userlist.

use std::path::Path;

use crate::settings;

#[test]
fn the_ini_for_the_defaults() {
    let s = settings(&[
        ("DATABASE_URL", "postgresql://app:s3cret@db.internal:5433/shop"),
        ("PGBOUNCER_HOST", "0.0.0.0"),
    ]);
    let ini = pgconn_config::render_pgbouncer_ini(&s, Some(Path::new("/etc/pgbouncer/users.txt")));
    assert_eq!(
        ini,
        "\
;; pgbouncer.ini rendered by `pgconn pgbouncer-ini` from the environment.
;; Run it as it is: pgbouncer THIS_FILE (not as root).
;; File descriptors: with max_client_conn = 1000 this may need up to 1062; the usual default limit is 1024.
;; Raise it before starting PgBouncer: `ulimit -n 1062`, or LimitNOFILE=1062 in its systemd unit.

[databases]
shop = host=db.internal port=5433 dbname=shop connect_query='SET statement_timeout = 30000'

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
;; TCP only: no Unix socket of PgBouncer's own.
unix_socket_dir =
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/users.txt
admin_users = app
stats_users = app
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 25
min_pool_size = 10
reserve_pool_size = 5
;; Drivers that send these at startup are not refused (PgBouncer 1.18 refuses unknown ones).
ignore_startup_parameters = extra_float_digits
server_connect_timeout = 10
;; DB_QUERY_TIMEOUT: a query with no answer this long (a hung server) is cancelled and its server connection closed.
query_timeout = 35
"
    );
    assert!(!ini.contains("s3cret"));
}

#[test]
fn settings_reach_the_ini() {
    let s = settings(&[
        ("DATABASE_URL", "postgresql://app:pw@%2Frun%2Fpostgresql/my%20db"),
        ("USE_PGBOUNCER", "true"),
        ("PGBOUNCER_PORT", "7000"),
        ("PGBOUNCER_POOL_MODE", "session"),
        ("PGBOUNCER_MAX_CLIENT_CONN", "5000"),
        ("PGBOUNCER_DEFAULT_POOL_SIZE", "40"),
        ("PGBOUNCER_MIN_POOL_SIZE", "0"),
        ("PGBOUNCER_RESERVE_POOL_SIZE", "2"),
        ("DB_STATEMENT_TIMEOUT", "0"),
    ]);
    let ini = pgconn_config::render_pgbouncer_ini(&s, None);
    for line in [
        "\"my db\" = host=/run/postgresql port=5432 dbname='my db'\n",
        "listen_addr = localhost\n",
        "listen_port = 7000\n",
        "auth_file = /etc/pgbouncer/userlist.txt\n",
        "pool_mode = session\n",
        "max_client_conn = 5000\n",
        "default_pool_size = 40\n",
        "min_pool_size = 0\n",
        "reserve_pool_size = 2\n",
        ";; File descriptors: with max_client_conn = 5000 this may need up to 5086;",
    ] {
        assert!(ini.contains(line), "missing {line:?} in\n{ini}");
    }
    assert!(!ini.contains("connect_query"), "DB_STATEMENT_TIMEOUT=0 sets nothing");
    assert!(!ini.contains("max_prepared_statements"), "PgBouncer 1.18 refuses the line:\n{ini}");
}

#[test]
fn prepared_statements_through_pgbouncer_are_enabled_in_the_ini() {
    let with = |cache: &str| {
        let s = settings(&[
            ("DATABASE_URL", "postgresql://app:pw@db/app"),
            ("USE_PGBOUNCER", "true"),
            ("PGBOUNCER_PREPARED_STATEMENTS", "true"),
            ("DB_STATEMENT_CACHE", cache),
        ]);
        pgconn_config::render_pgbouncer_ini(&s, None)
    };
    assert!(with("100").contains("\nmax_prepared_statements = 200\n"), "{}", with("100"));
    assert!(with("500").contains("\nmax_prepared_statements = 500\n"), "{}", with("500"));
}

#[test]
fn no_password_means_trust() {
    let s = settings(&[("DB_NAME", "app"), ("DB_USER", "app")]);
    let ini = pgconn_config::render_pgbouncer_ini(&s, None);
    assert!(ini.contains("\nauth_type = trust\n"), "{ini}");
}

#[test]
fn the_userlist_quotes_like_pgbouncer() {
    let s = settings(&[("DB_NAME", "app"), ("DB_USER", "we\"ird"), ("DB_PASSWORD", "p\"w @:/")]);
    assert_eq!(pgconn_config::render_pgbouncer_userlist(&s), "\"we\"\"ird\" \"p\"\"w @:/\"\n");
}
