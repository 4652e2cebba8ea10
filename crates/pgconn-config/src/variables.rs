//! Every variable pgconn reads, declared once: its name, where the reference lists it, what it means, its
//! default, and (for numbers) the range validation accepts. `VARIABLES` (the names read from the
//! environment, and the only ones validation may ask for), the validation's ranges and the tables of
//! `docs/configuration.md` come from here; a test checks that the tables are the ones
//! [`markdown`] renders (`PGCONN_UPDATE_DOCS=1 cargo xtask test -p pgconn-config` rewrites them).

use std::fmt::Write as _;

/// The table of the reference a variable is listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// "The database".
    Database,
    /// "Connections and timeouts".
    Timeouts,
    /// "The pool (per process)".
    Pool,
    /// "PgBouncer".
    PgBouncer,
}

impl Section {
    /// Every section, in the reference's order.
    pub const ALL: [Section; 4] = [Section::Database, Section::Timeouts, Section::Pool, Section::PgBouncer];

    /// The name of the section's marker in `docs/configuration.md`.
    pub fn marker(self) -> &'static str {
        match self {
            Section::Database => "database",
            Section::Timeouts => "timeouts",
            Section::Pool => "pool",
            Section::PgBouncer => "pgbouncer",
        }
    }
}

/// One variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The environment variable.
    pub name: &'static str,
    /// Where the reference lists it.
    pub section: Section,
    /// What it means, for the reference (Markdown); `{range}` is where its range goes (else at the end).
    pub meaning: &'static str,
    /// Its default, for the reference (Markdown).
    pub default: &'static str,
    /// For a number: the smallest and largest value accepted.
    pub range: Option<(u64, u64)>,
}

const fn var(name: &'static str, section: Section, meaning: &'static str, default: &'static str) -> Variable {
    Variable { name, section, meaning, default, range: None }
}

const fn num(
    name: &'static str,
    section: Section,
    meaning: &'static str,
    default: &'static str,
    range: (u64, u64),
) -> Variable {
    Variable { name, section, meaning, default, range: Some(range) }
}

/// `i32::MAX`, the largest of PostgreSQL's millisecond settings.
const PG_MAX_MS: u64 = 2_147_483_647;

use Section::{Database, PgBouncer, Pool, Timeouts};

/// Every variable, in the reference's order.
pub const TABLE: [Variable; 25] = [
    var(
        "DATABASE_URL",
        Database,
        "a libpq connection string: a URL, `postgresql://user:password@host:5432/database?param=value` (also `postgres://`), or keyword/value pairs, `host=db port=5432 dbname=app user=app`; read as libpq reads it (below)",
        "—",
    ),
    var(
        "DB_HOST",
        Database,
        "host name, IP address, or a socket directory (a path starting with `/`); several, comma-separated, as libpq's `host`; used only when `DATABASE_URL` is unset",
        "`PGHOST`, else `localhost`",
    ),
    num("DB_PORT", Database, "port", "`PGPORT`, else `5432`", (1, 65_535)),
    var("DB_NAME", Database, "database name", "`PGDATABASE`, else the user's name"),
    var("DB_USER", Database, "role to log in as", "`PGUSER`, else the process's own user"),
    var(
        "DB_PASSWORD",
        Database,
        "password (any characters; no encoding needed here)",
        "`PGPASSWORD`, else the password file",
    ),
    var(
        "DB_CONN_MAX_AGE",
        Timeouts,
        "seconds a connection is kept, Django's `CONN_MAX_AGE`; `0` = no persistent connections (open per request, close on return); `none` = unlimited",
        "`600`",
    ),
    num(
        "DB_CONNECT_TIMEOUT",
        Timeouts,
        "seconds for opening one connection, TCP, TLS, startup and authentication included",
        "the URL's `connect_timeout`, else `10`",
        (1, 3600),
    ),
    num(
        "DB_STATEMENT_TIMEOUT",
        Timeouts,
        "milliseconds before the server cancels a statement; `0` = off",
        "`30000`",
        (0, PG_MAX_MS),
    ),
    num(
        "DB_QUERY_TIMEOUT",
        Timeouts,
        "milliseconds the client waits for the server's answer to one call of the pool's query API before closing the connection under it (`query_timeout`): for a server that cannot answer at all, or a network path that went silent, where the statement timeout cannot act; `0` = off; {range}. Enforced by the client in every tier and transport (direct or through PgBouncer, TCP or Unix socket); through PgBouncer it is also rendered as PgBouncer's `query_timeout`, for the PgBouncer-to-PostgreSQL leg",
        "`DB_STATEMENT_TIMEOUT` + 5000, off when that is off",
        (0, PG_MAX_MS),
    ),
    num("DB_POOL_MAX_SIZE", Pool, "most connections one process opens", "`10`", (1, 10_000)),
    num(
        "DB_POOL_MIN_IDLE",
        Pool,
        "idle connections kept ready; at most `DB_POOL_MAX_SIZE`",
        "`2` (or the max size when smaller)",
        (0, 10_000),
    ),
    num(
        "DB_POOL_TIMEOUT",
        Pool,
        "milliseconds a request waits for a free connection before failing with \"pool exhausted\"",
        "`5000`",
        (1, 3_600_000),
    ),
    num(
        "DB_POOL_LEAK_THRESHOLD",
        Pool,
        "milliseconds after which a connection still checked out is logged once as a possible leak, with the file and line that checked it out; `0` = off",
        "`30000`",
        (0, 86_400_000),
    ),
    num(
        "DB_STATEMENT_CACHE",
        Pool,
        "statements prepared and kept per connection, at most: a statement text used 5 times on a connection is prepared there and reused (`pool.md`, \"The statement cache\"); `0` = off; {range}. Off through PgBouncer in transaction or statement mode unless `PGBOUNCER_PREPARED_STATEMENTS=true`, and with `DB_CONN_MAX_AGE=0`",
        "`100`",
        (0, 10_000),
    ),
    var(
        "USE_PGBOUNCER",
        PgBouncer,
        "`true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case): send the pool through PgBouncer",
        "`false`",
    ),
    var(
        "PGBOUNCER_URL",
        PgBouncer,
        "full URL of the PgBouncer; the user, password and database it leaves out come from the database settings; `options` is refused (PgBouncer 1.18 rejects it)",
        "—",
    ),
    var(
        "PGBOUNCER_HOST",
        PgBouncer,
        "used when `PGBOUNCER_URL` is unset, with `PGBOUNCER_PORT` and the database's user, password and database name; also `listen_addr` of `pgconn pgbouncer-ini`",
        "`localhost`",
    ),
    num(
        "PGBOUNCER_PORT",
        PgBouncer,
        "used when `PGBOUNCER_URL` is unset, with `PGBOUNCER_HOST`; also `listen_port` of `pgconn pgbouncer-ini`",
        "`6432`",
        (1, 65_535),
    ),
    var(
        "PGBOUNCER_POOL_MODE",
        PgBouncer,
        "`session`, `transaction` or `statement`, for the rendered `pgbouncer.ini`",
        "`transaction`",
    ),
    num("PGBOUNCER_MAX_CLIENT_CONN", PgBouncer, "`max_client_conn`", "`1000`", (1, 1_000_000)),
    num("PGBOUNCER_DEFAULT_POOL_SIZE", PgBouncer, "`default_pool_size`", "`25`", (1, 10_000)),
    num(
        "PGBOUNCER_MIN_POOL_SIZE",
        PgBouncer,
        "`min_pool_size`; at most the default pool size",
        "`10`",
        (0, 10_000),
    ),
    num("PGBOUNCER_RESERVE_POOL_SIZE", PgBouncer, "`reserve_pool_size`", "`5`", (0, 10_000)),
    var(
        "PGBOUNCER_PREPARED_STATEMENTS",
        PgBouncer,
        "`true` when the PgBouncer is 1.21 or later with `max_prepared_statements` set, so named prepared statements work through it in transaction mode: the statement cache is then used through it",
        "`false` (PgBouncer 1.18)",
    ),
];

const fn names<const N: usize>(table: &[Variable; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = table[i].name;
        i += 1;
    }
    out
}

/// Every variable pgconn reads, in the order of the configuration reference.
pub const VARIABLES: &[&str] = &names(&TABLE);

/// The range validation accepts for the number `name` (a name of [`TABLE`] with a range).
pub(crate) fn range(name: &str) -> (u64, u64) {
    TABLE.iter().find(|v| v.name == name).and_then(|v| v.range).unwrap_or((0, u64::MAX))
}

/// The reference's table of `section`, as `docs/configuration.md` has it.
pub fn markdown(section: Section) -> String {
    let mut out = String::from("| variable | meaning | default |\n|---|---|---|\n");
    for v in TABLE.iter().filter(|v| v.section == section) {
        // The range where the meaning says, else at its end.
        let meaning = match v.range {
            Some((min, max)) if v.meaning.contains("{range}") => {
                v.meaning.replace("{range}", &format!("{min} to {max}"))
            }
            Some((min, max)) => format!("{}; {min} to {max}", v.meaning),
            None => v.meaning.to_owned(),
        };
        let _ = writeln!(out, "| `{}` | {meaning} | {} |", v.name, v.default);
    }
    out
}
