//! `pgbouncer.ini` and its userlist, rendered from the same settings the pool reads.

use std::fmt::Write as _;
use std::path::Path;

use crate::conn::Host;
use crate::settings::Settings;

/// Where the rendered ini expects the userlist when no `--auth-file` is given.
pub const DEFAULT_AUTH_FILE: &str = "/etc/pgbouncer/userlist.txt";

/// `max_prepared_statements` at least (PgBouncer's default since 1.22) when `PGBOUNCER_PREPARED_STATEMENTS`
/// is on: a server connection serves the statements of every client that lands on it, so its share is
/// not smaller than one client's `DB_STATEMENT_CACHE`.
const PREPARED_STATEMENTS_FLOOR: u32 = 200;

/// File descriptors a process gets by default on most Linux systems (`ulimit -n`).
const USUAL_FD_LIMIT: u64 = 1024;

/// File descriptors PgBouncer may need with these settings: PgBouncer 1.18's own "max expected fd use"
/// for one database (`max_client_conn` + 2 × (`default_pool_size` + `reserve_pool_size`) + 2: 1062 for
/// the defaults, as it logs at start).
pub fn pgbouncer_fd_need(settings: &Settings) -> u64 {
    let p = &settings.pgbouncer;
    u64::from(p.max_client_conn) + 2 * (u64::from(p.default_pool_size) + u64::from(p.reserve_pool_size)) + 2
}

/// A `pgbouncer.ini` that runs as it is (`pgbouncer FILE`): one database, the one of `DATABASE_URL`,
/// listening on `PGBOUNCER_HOST`:`PGBOUNCER_PORT`, with the `PGBOUNCER_*` pool settings, the statement
/// timeout applied to every server connection by `connect_query`, and the database's user as admin and
/// stats user (so `pgconn monitor` can read `SHOW POOLS` and `SHOW STATS`). Never contains a password:
/// that goes in the userlist ([`render_userlist`]) at `auth_file` (default [`DEFAULT_AUTH_FILE`]).
pub fn render_ini(settings: &Settings, auth_file: Option<&Path>) -> String {
    let db = &settings.database;
    let p = &settings.pgbouncer;
    let server = db.primary();
    let mut out = String::new();
    let _ = writeln!(out, ";; pgbouncer.ini rendered by `pgconn pgbouncer-ini` from the environment.");
    let _ = writeln!(out, ";; Run it as it is: pgbouncer THIS_FILE (not as root).");
    let fd_need = pgbouncer_fd_need(settings);
    if fd_need > USUAL_FD_LIMIT {
        let _ = writeln!(
            out,
            ";; File descriptors: with max_client_conn = {} this may need up to {fd_need}; the usual default \
             limit is {USUAL_FD_LIMIT}.\n;; Raise it before starting PgBouncer: `ulimit -n {fd_need}`, or \
             LimitNOFILE={fd_need} in its systemd unit.",
            p.max_client_conn
        );
    }
    if db.endpoints.len() > 1 {
        let _ = writeln!(
            out,
            ";; DATABASE_URL names {} hosts; PgBouncer is pointed at the first. For failover, point it at a \
             name or address that follows the primary.",
            db.endpoints.len()
        );
    }
    let _ = writeln!(out, "\n[databases]");
    let host = match &server.host {
        Host::Tcp(name) => name.clone(),
        Host::Unix(dir) => dir.display().to_string(),
    };
    let mut entry =
        format!("host={} port={} dbname={}", conninfo_value(&host), server.port, conninfo_value(&db.dbname));
    if let Some(timeout) = settings.statement_timeout {
        let _ = write!(entry, " connect_query='SET statement_timeout = {}'", timeout.as_millis());
    }
    let _ = writeln!(out, "{} = {entry}", ini_key(&db.dbname));

    let _ = writeln!(out, "\n[pgbouncer]");
    let _ = writeln!(out, "listen_addr = {}", p.listen_host);
    let _ = writeln!(out, "listen_port = {}", p.listen_port);
    let _ = writeln!(out, ";; TCP only: no Unix socket of PgBouncer's own.");
    let _ = writeln!(out, "unix_socket_dir =");
    if db.password.is_some() {
        let _ = writeln!(out, "auth_type = scram-sha-256");
    } else {
        let _ = writeln!(
            out,
            ";; DATABASE_URL has no password, so neither do PgBouncer's clients: listen on loopback only."
        );
        let _ = writeln!(out, "auth_type = trust");
    }
    let auth_file = auth_file.map_or_else(|| DEFAULT_AUTH_FILE.to_owned(), |path| path.display().to_string());
    let _ = writeln!(out, "auth_file = {auth_file}");
    let _ = writeln!(out, "admin_users = {}", db.user);
    let _ = writeln!(out, "stats_users = {}", db.user);
    let _ = writeln!(out, "pool_mode = {}", p.pool_mode);
    let _ = writeln!(out, "max_client_conn = {}", p.max_client_conn);
    let _ = writeln!(out, "default_pool_size = {}", p.default_pool_size);
    let _ = writeln!(out, "min_pool_size = {}", p.min_pool_size);
    let _ = writeln!(out, "reserve_pool_size = {}", p.reserve_pool_size);
    let _ = writeln!(
        out,
        ";; Drivers that send these at startup are not refused (PgBouncer 1.18 refuses unknown ones)."
    );
    let _ = writeln!(out, "ignore_startup_parameters = extra_float_digits");
    if p.prepared_statements {
        let _ = writeln!(
            out,
            ";; PGBOUNCER_PREPARED_STATEMENTS=true: named prepared statements in transaction mode (PgBouncer 1.21 \
             or later; 1.18 refuses this line). Kept per server connection, shared by its clients: at least \
             DB_STATEMENT_CACHE, and PgBouncer's own default of {PREPARED_STATEMENTS_FLOOR}."
        );
        let kept = settings.pool.statement_cache.max(PREPARED_STATEMENTS_FLOOR);
        let _ = writeln!(out, "max_prepared_statements = {kept}");
    }
    let _ = writeln!(out, "server_connect_timeout = {}", settings.connect_timeout.as_secs().max(1));
    if let Some(timeout) = settings.query_timeout {
        let _ = writeln!(
            out,
            ";; DB_QUERY_TIMEOUT: a query with no answer this long (a hung server) is cancelled and its server \
             connection closed."
        );
        let _ = writeln!(out, "query_timeout = {}", timeout.as_millis().div_ceil(1000));
    }
    out
}

/// The userlist for [`render_ini`]'s `auth_file`: the database's user and password, PgBouncer's quoting
/// (`"` doubled). Contains the password: write it with mode 0600 and never print it.
pub fn render_userlist(settings: &Settings) -> String {
    let db = &settings.database;
    let password = db.password.as_ref().map_or("", |p| p.expose());
    format!("\"{}\" \"{}\"\n", db.user.replace('"', "\"\""), password.replace('"', "\"\""))
}

/// A libpq conninfo value, quoted when it needs to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c)) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A database name as an ini key, quoted when it needs to be.
fn ini_key(name: &str) -> String {
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}
