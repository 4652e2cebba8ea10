//! Settings read from the environment reach the real server: every URL form, SCRAM, the socket directory.

use std::time::Duration;

use pgconn_config::Settings;
use pgconn_tests::{SOCKET_DIR_VAR, admin, database_url, require, settings, xtask_var};
use postgres::error::SqlState;

/// Connects with the settings' target, the way the pool will: its parameters plus the connect timeout.
fn connect(settings: &Settings) -> Result<postgres::Client, postgres::Error> {
    let mut config = settings.target.to_postgres_config();
    config.connect_timeout(settings.connect_timeout);
    config.connect(postgres::NoTls)
}

/// `(current_user, current_database, application_name, over a socket)` of a connection made from `vars`.
#[track_caller]
fn check(vars: &[(&str, &str)]) -> (String, String, String, bool) {
    let settings = Settings::from_vars(vars.iter().copied()).unwrap();
    let mut client = connect(&settings).unwrap_or_else(|e| panic!("connecting with {settings} failed: {e}"));
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text, current_setting('application_name'), \
             inet_server_addr() IS NULL",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

fn password() -> String {
    settings(&[]).database.password.unwrap().expose().to_owned()
}

fn port() -> String {
    settings(&[]).database.primary().port.to_string()
}

#[test]
fn scram_login_with_a_percent_encoded_password() {
    let url = database_url();
    assert!(
        url.contains("%40") && url.contains("%2F"),
        "the test password must need percent-encoding: {url}"
    );
    assert_eq!(
        check(&[("DATABASE_URL", &url)]),
        ("pgconn_app".to_owned(), "pgconn_test".to_owned(), String::new(), false)
    );
    let scram: bool = admin()
        .query_one(
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'pgconn_app'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(scram, "the test role must authenticate with scram-sha-256");
}

#[test]
fn a_wrong_password_is_refused_as_such() {
    let wrong = database_url().replacen("%40", "%41", 1);
    let settings = Settings::from_vars([("DATABASE_URL", wrong)]).unwrap();
    let error = connect(&settings).err().expect("a wrong password must not log in");
    assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD), "{error}");
}

#[test]
fn db_variables() {
    let (password, port) = (password(), port());
    let vars = [
        ("DB_HOST", "127.0.0.1"),
        ("DB_PORT", port.as_str()),
        ("DB_NAME", "pgconn_test"),
        ("DB_USER", "pgconn_app"),
        ("DB_PASSWORD", password.as_str()),
    ];
    assert_eq!(check(&vars).0, "pgconn_app");
}

#[test]
fn socket_directory_as_host() {
    let socket = require(SOCKET_DIR_VAR);
    let (url, port) = (database_url(), port());
    let encoded_password = url.split_once("pgconn_app:").unwrap().1.rsplit_once('@').unwrap().0;
    let encoded_socket: String = socket.replace('/', "%2F");
    let in_authority =
        format!("postgresql://pgconn_app:{encoded_password}@{encoded_socket}:{port}/pgconn_test");
    let in_query = format!(
        "postgresql:///pgconn_test?host={socket}&port={port}&user=pgconn_app&password={encoded_password}"
    );
    for url in [in_authority, in_query] {
        let (user, _, _, over_socket) = check(&[("DATABASE_URL", &url)]);
        assert_eq!(user, "pgconn_app");
        assert!(over_socket, "{url} must connect over the socket");
    }
}

#[test]
fn url_parameters_reach_the_server() {
    let url = format!("{}?application_name=web%201&options=-c%20statement_timeout%3D1234", database_url());
    let settings = Settings::from_vars([("DATABASE_URL", url)]).unwrap();
    let mut client = connect(&settings).unwrap();
    let row = client
        .query_one("SELECT current_setting('application_name'), current_setting('statement_timeout')", &[])
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("web 1".to_owned(), "1234ms".to_owned()));
}

#[test]
fn several_hosts_are_tried_in_order() {
    // Port 1 on loopback refuses at once; the second host is the real server.
    let url = database_url().replacen("@127.0.0.1:", "@127.0.0.1:1,127.0.0.1:", 1);
    let settings =
        Settings::from_vars([("DATABASE_URL", url.as_str()), ("DB_CONNECT_TIMEOUT", "5")]).unwrap();
    assert_eq!(settings.database.endpoints.len(), 2, "{url}");
    let started = std::time::Instant::now();
    let mut client = connect(&settings).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(client.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0), 1);
}

#[test]
fn a_missing_variable_says_how_to_run_the_tests() {
    let message = xtask_var("PGCONN_TEST_SURELY_UNSET").unwrap_err();
    assert!(
        message.contains("PGCONN_TEST_SURELY_UNSET is not set") && message.contains("cargo xtask test"),
        "{message}"
    );
}
