//! Support for pgconn's end-to-end tests: where the throwaway PostgreSQL started by `cargo xtask test` is.
//!
//! A test that needs the database and finds no URL fails, with a message saying how to run it; it never
//! passes silently.

use std::time::Duration;

use pgconn_config::Settings;

/// The variable holding the URL of the test role (scram-sha-256 password full of URL-special characters).
pub const DATABASE_URL_VAR: &str = "PGCONN_TEST_DATABASE_URL";
/// The variable holding the URL of the superuser (trust authentication).
pub const ADMIN_URL_VAR: &str = "PGCONN_TEST_ADMIN_URL";
/// The variable holding the cluster's Unix-socket directory.
pub const SOCKET_DIR_VAR: &str = "PGCONN_TEST_SOCKET_DIR";

/// Reads a variable that `cargo xtask test` sets.
///
/// # Errors
/// A message naming the variable and `cargo xtask test` when it is unset.
pub fn xtask_var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!(
            "{name} is not set: this test needs the throwaway PostgreSQL that `cargo xtask test` starts; \
             run the tests with `cargo xtask test` (or `eval \"$(cargo xtask db env)\"` after \
             `cargo xtask db start`)"
        )
    })
}

/// Reads a variable that `cargo xtask test` sets.
///
/// # Panics
/// When it is unset, with a message saying to run `cargo xtask test`.
#[track_caller]
pub fn require(name: &str) -> String {
    xtask_var(name).unwrap_or_else(|message| panic!("{message}"))
}

/// The test role's URL.
#[track_caller]
pub fn database_url() -> String {
    require(DATABASE_URL_VAR)
}

/// The superuser's URL.
#[track_caller]
pub fn admin_url() -> String {
    require(ADMIN_URL_VAR)
}

/// Settings for the test database, with `extra` variables on top.
///
/// # Panics
/// When the variables are invalid or the database URL is not set.
#[track_caller]
pub fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![("DATABASE_URL".to_owned(), database_url())];
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Settings::from_vars(vars).unwrap_or_else(|e| panic!("test settings are invalid: {e}"))
}

/// A plain connection as the superuser, for inspecting the server.
///
/// # Panics
/// When the server cannot be reached.
#[track_caller]
pub fn admin() -> postgres::Client {
    let mut config: postgres::Config =
        admin_url().parse().unwrap_or_else(|e| panic!("{ADMIN_URL_VAR} does not parse: {e}"));
    config.connect_timeout(Duration::from_secs(10));
    config.connect(postgres::NoTls).unwrap_or_else(|e| panic!("cannot connect as the superuser: {e}"))
}
