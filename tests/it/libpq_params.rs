//! libpq's ways of saying where and how to connect, end to end against the shared server: the `PG*`
//! variables and the password file under `DATABASE_URL`, keyword/value strings, `hostaddr`,
//! `load_balance_hosts`, `target_session_attrs=read-only`, `channel_binding`, keepalives.

use std::os::unix::fs::PermissionsExt as _;

use pgconn_config::{Settings, Source};
use pgconn_pool::{ErrorKind, Pool};
use pgconn_tests::{SOCKET_DIR_VAR, database_url, require, settings};

fn password() -> String {
    settings(&[]).database.password.unwrap().expose().to_owned()
}

fn port() -> u16 {
    settings(&[]).database.primary().port
}

/// A small pool for `vars` (with an empty home), or why there is none.
fn pool(vars: &[(&str, &str)]) -> Result<Pool, pgconn_pool::Error> {
    let mut all =
        vec![("HOME", "/nonexistent/pgconn-tests"), ("DB_POOL_MIN_IDLE", "0"), ("DB_POOL_MAX_SIZE", "2")];
    all.extend_from_slice(vars);
    let settings = Settings::from_vars(all).unwrap_or_else(|e| panic!("invalid settings {vars:?}: {e}"));
    Pool::new(&settings)
}

/// One value from a pooled connection made with `vars`.
#[track_caller]
fn query(vars: &[(&str, &str)], sql: &str) -> String {
    let pool = pool(vars).unwrap_or_else(|e| panic!("no pool for {vars:?}: {e}"));
    let mut conn = pool.get().unwrap_or_else(|e| panic!("no connection for {vars:?}: {e}"));
    conn.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn only_libpq_variables_and_a_password_file() {
    let dir = std::env::temp_dir().join(format!("pgconn-pgpass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passfile = dir.join("pgpass");
    let escaped = password().replace('\\', "\\\\").replace(':', "\\:");
    std::fs::write(
        &passfile,
        format!("# a comment\nother:*:*:*:wrong\n127.0.0.1:{}:pgconn_test:pgconn_app:{escaped}\n", port()),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = port().to_string();
    let passfile_text = passfile.display().to_string();
    let vars = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "pgconn_app"),
        ("PGDATABASE", "pgconn_test"),
        ("PGPASSFILE", passfile_text.as_str()),
        ("PGAPPNAME", "from-pgappname"),
        ("PGSSLMODE", "disable"),
    ];
    let settings = Settings::from_vars(vars).unwrap();
    let sources = &settings.database.sources;
    assert_eq!(sources.get("host"), Some(&Source::Var("PGHOST")));
    assert_eq!(sources.get("password"), Some(&Source::Passfile { path: passfile.clone(), line: 3 }));
    assert_eq!(query(&vars, "SELECT current_setting('application_name')"), "from-pgappname");
    assert_eq!(
        query(&vars, "SELECT (ssl IS NOT TRUE)::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
        "true"
    );

    // DATABASE_URL wins over the variables beneath it, key by key: PGAPPNAME still fills what it leaves out.
    let url = database_url();
    let layered = [("DATABASE_URL", url.as_str()), ("PGAPPNAME", "beneath"), ("PGUSER", "nobody")];
    assert_eq!(
        query(&layered, "SELECT current_user || ' ' || current_setting('application_name')"),
        "pgconn_app beneath"
    );

    // A password file others may read is ignored, as libpq ignores it: no password, refused.
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = pool(&vars).and_then(|pool| pool.get().map(drop)).expect_err("no password");
    assert_eq!(error.kind(), ErrorKind::AuthFailed, "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keyword_value_strings() {
    let kv = format!(
        "host=127.0.0.1 port={} dbname=pgconn_test user=pgconn_app password='{}' application_name='kv app'",
        port(),
        password().replace('\\', "\\\\").replace('\'', "\\'")
    );
    assert_eq!(query(&[("DATABASE_URL", &kv)], "SELECT current_setting('application_name')"), "kv app");
}

#[test]
fn hostaddr_connects_without_a_name_lookup() {
    // `db.invalid` cannot resolve (RFC 6761); hostaddr is what is connected to.
    let url = database_url().replacen("@127.0.0.1:", "@db.invalid:", 1);
    let with_addr =
        format!("{url}?hostaddr=127.0.0.1&keepalives_idle=7&keepalives_count=4&tcp_user_timeout=12000");
    assert_eq!(query(&[("DATABASE_URL", &with_addr)], "SELECT current_user::text"), "pgconn_app");
    let error = pool(&[("DATABASE_URL", &url), ("DB_CONNECT_TIMEOUT", "3")])
        .and_then(|pool| pool.get().map(drop))
        .expect_err("without hostaddr the name must be looked up, and fail");
    assert_eq!(error.kind(), ErrorKind::ConnectFailed, "{error}");
}

#[test]
fn load_balance_hosts_spreads_new_connections() {
    // The same server over TCP and over its socket: `inet_server_port()` tells which one a connection took.
    let socket = require(SOCKET_DIR_VAR);
    let port = port();
    let url = database_url().replacen(
        &format!("@127.0.0.1:{port}/"),
        &format!("@127.0.0.1:{port},{}:{port}/", socket.replace('/', "%2F")),
        1,
    );
    assert!(url.contains(",%2F"), "{url}");
    let mut over_socket = [0usize; 2];
    for (i, query_string) in ["", "?load_balance_hosts=random"].iter().enumerate() {
        let settings = Settings::from_vars([("DATABASE_URL", format!("{url}{query_string}"))]).unwrap();
        for _ in 0..24 {
            let mut client = pgconn_pool::connect(&settings).unwrap();
            let socket: bool = client.query_one("SELECT inet_server_port() IS NULL", &[]).unwrap().get(0);
            over_socket[i] += usize::from(socket);
        }
    }
    assert_eq!(over_socket[0], 0, "in order, the first host takes every connection");
    assert!(
        (1..24).contains(&over_socket[1]),
        "random: both hosts take some, got {} of 24 over the socket",
        over_socket[1]
    );
}

#[test]
fn read_only_and_read_write_sessions() {
    let url = database_url();
    let read_only =
        format!("{url}?options=-c%20default_transaction_read_only%3Don&target_session_attrs=read-only");
    assert_eq!(query(&[("DATABASE_URL", &read_only)], "SHOW transaction_read_only"), "on");
    let writable_only =
        format!("{url}?options=-c%20default_transaction_read_only%3Don&target_session_attrs=read-write");
    let error = pool(&[("DATABASE_URL", &writable_only)])
        .and_then(|pool| pool.get().map(drop))
        .expect_err("no read-write host");
    assert_eq!(error.kind(), ErrorKind::ConnectFailed, "{error}");
    let plain = format!("{url}?target_session_attrs=read-only");
    let error = pool(&[("DATABASE_URL", &plain)])
        .and_then(|pool| pool.get().map(drop))
        .expect_err("no read-only host");
    assert!(error.to_string().contains("read-only"), "{error}");
}

#[test]
fn channel_binding_require_fails_clearly_without_tls() {
    let url = format!("{}?channel_binding=require&sslmode=disable", database_url());
    let error = pool(&[("DATABASE_URL", &url)])
        .and_then(|pool| pool.get().map(drop))
        .expect_err("no binding without TLS");
    let message = error.to_string();
    assert!(message.contains("channel_binding=require"), "{message}");
    assert!(!message.contains(&password()), "{message}");
    // prefer (the default) and disable log in.
    let disable = format!("{}?channel_binding=disable", database_url());
    assert_eq!(query(&[("DATABASE_URL", &disable)], "SELECT current_user::text"), "pgconn_app");
}
