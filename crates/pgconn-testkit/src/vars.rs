//! The `PGCONN_TEST_*` contract: the variables `cargo xtask test` (and `cargo xtask db env`) give the
//! tests, declared once. The testkit writes them ([`crate::ConnInfo::test_env`],
//! [`crate::PgBouncerInfo::test_env`]); `pgconn-tests` and xtask read and set them by these names.

/// The application role's URL on the shared test database (a scram-sha-256 password full of URL-special
/// characters).
pub const DATABASE_URL: &str = "PGCONN_TEST_DATABASE_URL";
/// The superuser's URL on the shared test database (trusted on loopback).
pub const ADMIN_URL: &str = "PGCONN_TEST_ADMIN_URL";
/// The shared cluster's Unix-socket directory.
pub const SOCKET_DIR: &str = "PGCONN_TEST_SOCKET_DIR";
/// The directory of the PostgreSQL binaries the shared cluster runs (tests' private clusters use it too).
pub const PG_BINDIR: &str = "PGCONN_TEST_PG_BINDIR";
/// The application role's URL through the shared PgBouncer.
pub const PGBOUNCER_URL: &str = "PGCONN_TEST_PGBOUNCER_URL";
/// The shared PgBouncer's admin console.
pub const PGBOUNCER_ADMIN_URL: &str = "PGCONN_TEST_PGBOUNCER_ADMIN_URL";
/// The shared PgBouncer's `pgbouncer.ini`.
pub const PGBOUNCER_INI: &str = "PGCONN_TEST_PGBOUNCER_INI";
/// The shared PgBouncer's `auth_file`.
pub const PGBOUNCER_AUTH_FILE: &str = "PGCONN_TEST_PGBOUNCER_AUTH_FILE";
/// The application role's URL through the second PgBouncer, 1.21 or later in transaction mode with
/// `max_prepared_statements` set (`pgconn pgbouncer-ini` with `PGBOUNCER_PREPARED_STATEMENTS=true`), one
/// server connection for every client (`default_pool_size = 1`).
pub const PGBOUNCER_PREPARED_URL: &str = "PGCONN_TEST_PGBOUNCER_PREPARED_URL";
/// The second PgBouncer's admin console.
pub const PGBOUNCER_PREPARED_ADMIN_URL: &str = "PGCONN_TEST_PGBOUNCER_PREPARED_ADMIN_URL";
/// The absolute path of the `pgconn` binary `cargo xtask test` built (debug).
pub const PGCONN_BIN: &str = "PGCONN_TEST_PGCONN_BIN";
/// The absolute path of the example server `thread_per_request` `cargo xtask test` built (debug).
pub const EXAMPLE_BIN: &str = "PGCONN_TEST_EXAMPLE_BIN";
