//! Support for pgconn's end-to-end tests: where the throwaway PostgreSQL started by `cargo xtask test` is.
//!
//! A test that needs the database and finds no URL fails, with a message saying how to run it; it never
//! passes silently.
//!
//! A test that must not disturb that shared cluster (it restarts the server, fills `max_connections`,
//! stops a backend with `SIGSTOP`) starts a private one with [`private_cluster`]: the same kind of cluster,
//! from `pgconn-testkit`, on a port of its own, stopped and removed when the [`Cluster`] is dropped.

use std::time::Duration;

use pgconn_config::Settings;
use pgconn_testkit::vars;
#[doc(no_inline)]
pub use pgconn_testkit::{self as testkit, Cluster, ClusterOptions, ConnInfo, ShutdownMode};
#[doc(no_inline)]
pub use pgconn_testkit::{PgBouncer, PgBouncerInfo, PgBouncerOptions};

/// The variable holding the URL of the test role (scram-sha-256 password full of URL-special characters).
pub const DATABASE_URL_VAR: &str = vars::DATABASE_URL;
/// The variable holding the URL of the superuser (trust authentication).
pub const ADMIN_URL_VAR: &str = vars::ADMIN_URL;
/// The variable holding the cluster's Unix-socket directory.
pub const SOCKET_DIR_VAR: &str = vars::SOCKET_DIR;
/// The variable holding the URL of the test role through the shared PgBouncer (transaction mode).
pub const PGBOUNCER_URL_VAR: &str = vars::PGBOUNCER_URL;
/// The variable holding the URL of the shared PgBouncer's admin console (database `pgbouncer`, as the
/// test role, which is its admin and stats user).
pub const PGBOUNCER_ADMIN_URL_VAR: &str = vars::PGBOUNCER_ADMIN_URL;
/// The variable holding the path of the shared PgBouncer's `pgbouncer.ini` (rendered by
/// `pgconn pgbouncer-ini`).
pub const PGBOUNCER_INI_VAR: &str = vars::PGBOUNCER_INI;
/// The variable holding the path of the shared PgBouncer's userlist (mode 0600).
pub const PGBOUNCER_AUTH_FILE_VAR: &str = vars::PGBOUNCER_AUTH_FILE;
/// The variable holding the absolute path of the `pgconn` binary `cargo xtask test` built.
pub const PGCONN_BIN_VAR: &str = testkit::PGCONN_BIN_VAR;

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

/// The test role's URL, to the same server over its Unix socket (`PGCONN_TEST_SOCKET_DIR`), with `query`
/// (`?...`, or empty) after it.
///
/// # Panics
/// Without the test cluster's variables (see [`require`]), or if its URL has no user or port.
#[track_caller]
pub fn unix_socket_url(query: &str) -> String {
    let socket = require(SOCKET_DIR_VAR);
    let url = database_url();
    let (authority, rest) = url.rsplit_once('@').expect("a URL with a user");
    let (_, port_and_db) = rest.split_once(':').expect("a URL with a port");
    format!("{authority}@{}:{port_and_db}{query}", socket.replace('/', "%2F"))
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

/// Starts a private PostgreSQL cluster for one test, with `options` (for example
/// `ClusterOptions::default().setting("max_connections", "20")`): a fresh directory under the temporary
/// directory, a free port, the same roles, database and authentication as the shared cluster. It does not
/// need `cargo xtask test`'s variables, only the PostgreSQL server binaries; as root the server runs as
/// the `postgres` system user.
///
/// Dropping the [`Cluster`] stops the server and removes its directory. [`Cluster::restart`] brings it
/// back on the same port, so URLs from [`Cluster::info`] stay valid.
///
/// # Panics
/// When the cluster cannot be started, with the reason (no PostgreSQL binaries, no `postgres` user, the
/// end of the server log, ...).
#[track_caller]
pub fn private_cluster(options: &ClusterOptions) -> Cluster {
    Cluster::start_temp(options).unwrap_or_else(|err| {
        panic!(
            "cannot start a private PostgreSQL cluster for this test: {err:#}\n\
             (it needs the PostgreSQL server binaries: `apt-get install postgresql` or PG_BINDIR)"
        )
    })
}

/// Starts a streaming standby of `primary` (a [`private_cluster`]) for one test, with `options` for the
/// standby (for example `ClusterOptions::default().setting("log_connections", "on")`): a base backup on a
/// port of its own, read-only until [`Cluster::promote`]d, with the same roles, database and password as
/// the primary. Returns once it accepts connections and streams from the primary. Dropping it stops it
/// and removes its directory; declare it after the primary, so that it is dropped first.
///
/// Settings that size shared memory (`max_connections`, `max_worker_processes`, `max_wal_senders`,
/// `max_prepared_transactions`, `max_locks_per_transaction`) must not be lower on the standby than on
/// the primary, or the standby refuses to start.
///
/// # Panics
/// When the standby cannot be started, with the reason (the end of its log).
#[track_caller]
pub fn private_standby(primary: &Cluster, options: &ClusterOptions) -> Cluster {
    primary
        .start_standby(options)
        .unwrap_or_else(|err| panic!("cannot start a standby of the private cluster for this test: {err:#}"))
}

/// The test role's URL naming several clusters as hosts, in order, with the query string `query` (empty
/// for none): `postgresql://pgconn_app:<password>@127.0.0.1:<port 1>,127.0.0.1:<port 2>/pgconn_test?<query>`,
/// the password percent-encoded. For a primary and its [`private_standby`], which share the password.
///
/// # Panics
/// When `clusters` is empty or their passwords differ.
#[track_caller]
pub fn multi_host_url(clusters: &[&Cluster], query: &str) -> String {
    let first = clusters.first().expect("at least one cluster").info();
    assert!(
        clusters.iter().all(|cluster| cluster.info().password == first.password),
        "the clusters do not share the test role's password: start the others with private_standby"
    );
    let hosts: Vec<String> =
        clusters.iter().map(|cluster| format!("127.0.0.1:{}", cluster.info().port)).collect();
    // The percent-encoded password contains no `@`, so this is the authority's host part.
    let single = format!("@127.0.0.1:{}/", first.port);
    let url = first.database_url().replacen(&single, &format!("@{}/", hosts.join(",")), 1);
    if query.is_empty() { url } else { format!("{url}?{query}") }
}

/// The test role's URL through the shared PgBouncer.
#[track_caller]
pub fn pgbouncer_url() -> String {
    require(PGBOUNCER_URL_VAR)
}

/// The shared PgBouncer's admin console URL.
#[track_caller]
pub fn pgbouncer_admin_url() -> String {
    require(PGBOUNCER_ADMIN_URL_VAR)
}

/// The `pgconn` binary that `cargo xtask test` built (`PGCONN_TEST_PGCONN_BIN`).
///
/// # Panics
/// When the variable is unset, with a message saying to run `cargo xtask test`.
#[track_caller]
pub fn pgconn_bin() -> std::path::PathBuf {
    require(PGCONN_BIN_VAR).into()
}

/// Starts a private PgBouncer for one test in front of `cluster` (a [`private_cluster`]), configured by
/// `pgconn pgbouncer-ini` (the binary of [`pgconn_bin`]) with `extra_env` on top of the cluster's URL and
/// a free port: for example `&[("PGBOUNCER_DEFAULT_POOL_SIZE", "2")]` or
/// `&[("PGBOUNCER_POOL_MODE", "session")]`. For tests that restart PgBouncer, `PAUSE` it, or fill its
/// pools, without disturbing the shared one.
///
/// It runs in the test's process group, as the server user, with the soft limit on open files raised to
/// the hard limit. [`PgBouncer::info`] gives its URLs ([`PgBouncerInfo::database_url`],
/// [`PgBouncerInfo::admin_url`]); [`PgBouncer::restart`] brings it back on the same port. Declare it
/// after the cluster, so that it is dropped (stopped) first.
///
/// # Panics
/// When `PGCONN_TEST_PGCONN_BIN` is unset (run the tests with `cargo xtask test`), or PgBouncer cannot be
/// started, with the reason (not installed, an invalid configuration, the end of its log, ...).
#[track_caller]
pub fn private_pgbouncer(cluster: &Cluster, extra_env: &[(&str, &str)]) -> PgBouncer {
    let pgconn = pgconn_bin();
    PgBouncer::in_front_of(cluster, &pgconn, extra_env, &PgBouncerOptions::default())
        .unwrap_or_else(|err| panic!("cannot start a private PgBouncer for this test: {err:#}"))
}

/// Panics when `json` has an object with the same key twice (`serde_json::Value` would keep the last one
/// silently; strict readers, and serde's derived types, refuse the document).
///
/// # Panics
/// On a repeated key, or when `json` is not JSON.
#[track_caller]
pub fn assert_no_duplicate_keys(json: &str) {
    if let Err(e) = serde_json::from_str::<NoDuplicates>(json) {
        panic!("{e}: {json}");
    }
}

/// `json` read as `T`, the type its writer serializes: no key repeated, every key of `T` there, and
/// written back it is the same JSON (a key renamed, added or skipped on one side fails).
///
/// # Panics
/// When any of that does not hold, with the text.
#[track_caller]
pub fn read_as<T: serde::de::DeserializeOwned + serde::Serialize>(json: &str) -> T {
    assert_no_duplicate_keys(json);
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {json}"));
    let written = serde_json::to_value(&typed).unwrap_or_else(|e| panic!("cannot write it back: {e}"));
    assert_eq!(written, value, "the type and the JSON differ: {json}");
    typed
}

/// Any JSON value, read only to check that no object in it repeats a key.
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("the key {key:?} appears twice in one object")));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }

    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_cluster_serves_the_app_role_and_goes_away() {
        let cluster = private_cluster(&ClusterOptions::default().setting("max_connections", "15"));
        let dir = cluster.dir().to_path_buf();
        let mut config: postgres::Config =
            cluster.info().database_url().parse().expect("the testkit's URL parses");
        config.connect_timeout(Duration::from_secs(10));
        let mut client = config.connect(postgres::NoTls).expect("the app role connects with its password");
        let row = client.query_one("select current_user::text, current_setting('max_connections')", &[]);
        let row = row.expect("the query runs");
        assert_eq!(row.get::<_, String>(0), "pgconn_app");
        assert_eq!(row.get::<_, String>(1), "15");
        drop(client);
        drop(cluster);
        assert!(!dir.exists(), "dropping the cluster removes {}", dir.display());
    }

    #[test]
    fn a_backend_stopped_with_sigstop_does_not_hold_up_the_drop() {
        let cluster = private_cluster(&ClusterOptions::default());
        let mut config: postgres::Config = cluster.info().admin_url().parse().expect("the URL parses");
        config.connect_timeout(Duration::from_secs(10));
        let mut client = config.connect(postgres::NoTls).expect("the superuser connects");
        let backend: i32 = client.query_one("select pg_backend_pid()", &[]).expect("it answers").get(0);
        let backend = u32::try_from(backend).expect("a pid is positive");
        testkit::signal::kill(backend, testkit::libc::SIGSTOP).expect("the backend can be stopped");
        let started = std::time::Instant::now();
        drop(cluster);
        let took = started.elapsed();
        // Without SIGCONT the fast shutdown would wait 10 s for the stopped backend.
        assert!(took < Duration::from_secs(8), "dropping took {took:?}");
        assert!(!std::path::Path::new(&format!("/proc/{backend}")).exists(), "the backend is gone");
        drop(client);
    }

    #[test]
    fn a_private_pgbouncer_serves_the_app_role_in_session_mode() {
        let cluster = private_cluster(&ClusterOptions::default());
        let bouncer = private_pgbouncer(&cluster, &[("PGBOUNCER_POOL_MODE", "session")]);
        let mut config: postgres::Config = bouncer.info().database_url().parse().expect("the URL parses");
        config.connect_timeout(Duration::from_secs(10));
        let mut client = config.connect(postgres::NoTls).expect("the app role connects through PgBouncer");
        let row = client.simple_query("select current_user, current_setting('statement_timeout')");
        let row = row
            .expect("the query runs")
            .into_iter()
            .find_map(|message| match message {
                postgres::SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .expect("the query returns a row");
        assert_eq!(row.get(0), Some("pgconn_app"));
        assert_eq!(row.get(1), Some("30s"), "connect_query sets the default statement timeout");
        let pid = bouncer.pid().expect("it runs");
        drop(client);
        drop(bouncer);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "dropping it stops PgBouncer");
    }
}
