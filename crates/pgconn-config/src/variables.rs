//! Every variable pgconn reads, declared once: its name, where the reference lists it, what it means, its
//! default, and its kind (text read by its own parser, a flag, a choice of words, or a number with its
//! range, unit and default). From here come `VARIABLES` (the names read from the environment, and the only
//! ones validation may ask for), how validation reads each flag, choice and number (range, unit in the
//! message, default when unset), the `DEFAULT_*` constants (read from this table when compiling), and the
//! tables of `docs/configuration.md`; tests check that the tables are the ones [`markdown`] renders
//! (`PGCONN_UPDATE_DOCS=1 cargo xtask test -p pgconn-config` rewrites them), that each default of the
//! table is the setting's value when unset and is the one the reference shows, and that every flag,
//! choice and number is refused and accepted as its kind says.

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
    /// What it means, for the reference (Markdown); `{range}` is where a number's range goes (else at the
    /// end).
    pub meaning: &'static str,
    /// Its default, for the reference (Markdown); a number's or a choice's own default must appear in it
    /// as `` `value` `` (checked by a test).
    pub default: &'static str,
    /// What kind of value it takes, and how validation reads it.
    pub kind: Kind,
}

impl Variable {
    /// For a number: the smallest and largest value accepted.
    pub fn range(&self) -> Option<(u64, u64)> {
        match self.kind {
            Kind::Number(n) => Some((n.min, n.max)),
            _ => None,
        }
    }
}

/// The kind of value a variable takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read by its own parser: a connection string, a host, a password, `DB_CONN_MAX_AGE`'s number or
    /// `none`.
    Text,
    /// `true`/`false`, also `1`/`0`, `yes`/`no`, `on`/`off`, any case; `false` when unset.
    Flag,
    /// One of `words`, any case; `default` when unset.
    Choice {
        /// The words accepted, in the order messages list them.
        words: &'static [&'static str],
        /// The word when unset.
        default: &'static str,
    },
    /// A whole number.
    Number(Number),
}

/// A whole-number variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number {
    /// The smallest value accepted.
    pub min: u64,
    /// The largest value accepted.
    pub max: u64,
    /// What it counts, for messages.
    pub unit: Unit,
    /// The value when unset; `None` when it is derived from other settings (the reference's default
    /// column says how).
    pub default: Option<u64>,
}

/// What a number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Milliseconds,
    /// Connections, statements, or a port: no unit in messages.
    Plain,
}

impl Number {
    /// How messages name the unit: ` of milliseconds (0 turns it off)`, ` of seconds`, or nothing.
    pub fn unit_words(&self) -> String {
        let unit = match self.unit {
            Unit::Seconds => "seconds",
            Unit::Milliseconds => "milliseconds",
            Unit::Plain => return String::new(),
        };
        if self.min == 0 { format!(" of {unit} (0 turns it off)") } else { format!(" of {unit}") }
    }
}

const fn var(name: &'static str, section: Section, meaning: &'static str, default: &'static str) -> Variable {
    Variable { name, section, meaning, default, kind: Kind::Text }
}

const fn flag(
    name: &'static str,
    section: Section,
    meaning: &'static str,
    default: &'static str,
) -> Variable {
    Variable { name, section, meaning, default, kind: Kind::Flag }
}

const fn choice(
    name: &'static str,
    section: Section,
    meaning: &'static str,
    default: &'static str,
    words: &'static [&'static str],
    word: &'static str,
) -> Variable {
    Variable { name, section, meaning, default, kind: Kind::Choice { words, default: word } }
}

/// A number with a default of its own.
const fn num(
    name: &'static str,
    section: Section,
    meaning: &'static str,
    default: &'static str,
    (min, max): (u64, u64),
    unit: Unit,
    value: u64,
) -> Variable {
    Variable {
        name,
        section,
        meaning,
        default,
        kind: Kind::Number(Number { min, max, unit, default: Some(value) }),
    }
}

/// A number whose default comes from other settings (described by `default`).
const fn derived(
    name: &'static str,
    section: Section,
    meaning: &'static str,
    default: &'static str,
    (min, max): (u64, u64),
    unit: Unit,
) -> Variable {
    Variable { name, section, meaning, default, kind: Kind::Number(Number { min, max, unit, default: None }) }
}

/// `i32::MAX`, the largest of PostgreSQL's millisecond settings.
const PG_MAX_MS: u64 = 2_147_483_647;

use Section::{Database, PgBouncer, Pool, Timeouts};
use Unit::{Milliseconds, Plain, Seconds};

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
    num("DB_PORT", Database, "port", "`PGPORT`, else `5432`", (1, 65_535), Plain, 5432),
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
        Seconds,
        10,
    ),
    num(
        "DB_STATEMENT_TIMEOUT",
        Timeouts,
        "milliseconds before the server cancels a statement; `0` = off",
        "`30000`",
        (0, PG_MAX_MS),
        Milliseconds,
        30_000,
    ),
    derived(
        "DB_QUERY_TIMEOUT",
        Timeouts,
        "milliseconds the client waits for the server's answer to one call of the pool's query API before closing the connection under it (`query_timeout`): for a server that cannot answer at all, or a network path that went silent, where the statement timeout cannot act; `0` = off; {range}. Enforced by the client in every tier and transport (direct or through PgBouncer, TCP or Unix socket); through PgBouncer it is also rendered as PgBouncer's `query_timeout`, for the PgBouncer-to-PostgreSQL leg",
        "`DB_STATEMENT_TIMEOUT` + 5000, off when that is off",
        (0, PG_MAX_MS),
        Milliseconds,
    ),
    num("DB_POOL_MAX_SIZE", Pool, "most connections one process opens", "`10`", (1, 10_000), Plain, 10),
    num(
        "DB_POOL_MIN_IDLE",
        Pool,
        "idle connections kept ready; at most `DB_POOL_MAX_SIZE`",
        "`2` (or the max size when smaller)",
        (0, 10_000),
        Plain,
        2,
    ),
    num(
        "DB_POOL_TIMEOUT",
        Pool,
        "milliseconds a request waits for a free connection before failing with \"pool exhausted\"",
        "`5000`",
        (1, 3_600_000),
        Milliseconds,
        5000,
    ),
    num(
        "DB_POOL_LEAK_THRESHOLD",
        Pool,
        "milliseconds after which a connection still checked out is logged once as a possible leak, with the file and line that checked it out; `0` = off",
        "`30000`",
        (0, 86_400_000),
        Milliseconds,
        30_000,
    ),
    num(
        "DB_STATEMENT_CACHE",
        Pool,
        "statements prepared and kept per connection, at most: a statement text used 5 times on a connection is prepared there and reused (`pool.md`, \"The statement cache\"); `0` = off; {range}. Off through PgBouncer in transaction or statement mode unless `PGBOUNCER_PREPARED_STATEMENTS=true`, and with `DB_CONN_MAX_AGE=0`",
        "`100`",
        (0, 10_000),
        Plain,
        100,
    ),
    flag(
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
        Plain,
        6432,
    ),
    choice(
        "PGBOUNCER_POOL_MODE",
        PgBouncer,
        "`session`, `transaction` or `statement`, for the rendered `pgbouncer.ini`",
        "`transaction`",
        &["session", "transaction", "statement"],
        "transaction",
    ),
    num("PGBOUNCER_MAX_CLIENT_CONN", PgBouncer, "`max_client_conn`", "`1000`", (1, 1_000_000), Plain, 1000),
    num("PGBOUNCER_DEFAULT_POOL_SIZE", PgBouncer, "`default_pool_size`", "`25`", (1, 10_000), Plain, 25),
    num(
        "PGBOUNCER_MIN_POOL_SIZE",
        PgBouncer,
        "`min_pool_size`; at most the default pool size",
        "`10`",
        (0, 10_000),
        Plain,
        10,
    ),
    num("PGBOUNCER_RESERVE_POOL_SIZE", PgBouncer, "`reserve_pool_size`", "`5`", (0, 10_000), Plain, 5),
    flag(
        "PGBOUNCER_PREPARED_STATEMENTS",
        PgBouncer,
        "`true` when the PgBouncer is 1.21 or later with `max_prepared_statements` set, so named prepared statements work through it in transaction mode: the statement cache is then used through it, and `pgconn pgbouncer-ini` writes `max_prepared_statements` (at least 200, at least `DB_STATEMENT_CACHE`; PgBouncer 1.18 refuses to start with it)",
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

/// The variable `name` of [`TABLE`]; `None` for a name not in it.
pub fn variable(name: &str) -> Option<&'static Variable> {
    TABLE.iter().find(|v| v.name == name)
}

/// The number `name` of [`TABLE`], for validation. A name that is not a number of the table is a bug:
/// it fails to compile where used in a constant, and panics where called at run time.
pub(crate) const fn number(name: &str) -> Number {
    let mut i = 0;
    while i < TABLE.len() {
        if same(TABLE[i].name, name) {
            match TABLE[i].kind {
                Kind::Number(n) => return n,
                _ => panic!("not a number of the table of variables"),
            }
        }
        i += 1;
    }
    panic!("not in the table of variables")
}

/// The default of the number `name` of [`TABLE`], in its unit: for the `DEFAULT_*` constants, so that
/// each default is written once, in the table. Fails to compile for a number without one.
pub(crate) const fn default_of(name: &str) -> u64 {
    match number(name).default {
        Some(value) => value,
        None => panic!("this number's default is derived"),
    }
}

/// [`default_of`] for a default that fits `u16` (ports); fails to compile otherwise.
pub(crate) const fn default_u16(name: &str) -> u16 {
    let value = default_of(name);
    assert!(value <= u16::MAX as u64, "the default does not fit u16");
    #[allow(clippy::cast_possible_truncation)] // checked above
    let narrow = value as u16;
    narrow
}

/// [`default_of`] for a default that fits `u32` (counts); fails to compile otherwise.
pub(crate) const fn default_u32(name: &str) -> u32 {
    let value = default_of(name);
    assert!(value <= u32::MAX as u64, "the default does not fit u32");
    #[allow(clippy::cast_possible_truncation)] // checked above
    let narrow = value as u32;
    narrow
}

/// `str` equality in a constant context.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The reference's table of `section`, as `docs/configuration.md` has it.
pub fn markdown(section: Section) -> String {
    let mut out = String::from("| variable | meaning | default |\n|---|---|---|\n");
    for v in TABLE.iter().filter(|v| v.section == section) {
        // The range where the meaning says, else at its end.
        let meaning = match v.range() {
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
