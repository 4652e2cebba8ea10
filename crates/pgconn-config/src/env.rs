//! Environment to `Settings`: every variable of the table read as text, then one validation pass reports
//! every problem at once.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Display;
use std::time::Duration;

use crate::conninfo::{self, ConnInfo, KEYWORDS};
use crate::error::{Error, Problem};
use crate::resolve::{self, Home};
use crate::settings::{ConnMaxAge, PgBouncerSettings, PoolMode, PoolSettings, Settings, Strategy};
use crate::variables::{self, Kind, VARIABLES, default_of, default_u16, default_u32};

// The defaults of numbers are written once, in the table of variables (`variables.rs`); these constants
// read them from there when compiling.

/// `DB_CONN_MAX_AGE` when unset: ten minutes, Django's usual production value. (`DB_CONN_MAX_AGE` also
/// takes `none`, so it is read by its own code; the reference's default is checked against this.)
pub const DEFAULT_CONN_MAX_AGE: Duration = Duration::from_secs(600);
/// `DB_CONNECT_TIMEOUT` when unset.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(default_of("DB_CONNECT_TIMEOUT"));
/// `DB_STATEMENT_TIMEOUT` when unset.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_millis(default_of("DB_STATEMENT_TIMEOUT"));
/// How much longer than the statement timeout the client waits for an answer, when `DB_QUERY_TIMEOUT` is
/// unset: the server cancels first; the client gives up only on a server that cannot answer.
pub const QUERY_TIMEOUT_GRACE: Duration = Duration::from_secs(5);
/// `DB_POOL_MAX_SIZE` when unset.
pub const DEFAULT_POOL_MAX_SIZE: u32 = default_u32("DB_POOL_MAX_SIZE");
/// `DB_POOL_MIN_IDLE` when unset (never above the pool's size).
pub const DEFAULT_POOL_MIN_IDLE: u32 = default_u32("DB_POOL_MIN_IDLE");
/// `DB_POOL_TIMEOUT` when unset.
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_millis(default_of("DB_POOL_TIMEOUT"));
/// `DB_POOL_LEAK_THRESHOLD` when unset: as long as the default statement timeout, so a connection held
/// that long is held while no statement runs.
pub const DEFAULT_POOL_LEAK_THRESHOLD: Duration = Duration::from_millis(default_of("DB_POOL_LEAK_THRESHOLD"));
/// `DB_STATEMENT_CACHE` when unset: statements prepared and kept per connection, at most (psycopg's
/// `prepared_max`).
pub const DEFAULT_STATEMENT_CACHE: u32 = default_u32("DB_STATEMENT_CACHE");
/// `PGBOUNCER_PORT` when unset.
pub const DEFAULT_PGBOUNCER_PORT: u16 = default_u16("PGBOUNCER_PORT");

impl Settings {
    /// Reads the settings from this process's environment.
    ///
    /// # Errors
    /// [`Error::Invalid`] with one problem per invalid variable (a value that is not UTF-8 included).
    pub fn from_env() -> Result<Settings, Error> {
        let mut problems = Vec::new();
        let mut vars = Vec::new();
        for name in VARIABLES.iter().copied().chain(libpq_variables()).chain(["HOME"]) {
            match std::env::var_os(name).map(OsString::into_string) {
                Some(Ok(value)) => vars.push(((*name).to_owned(), value)),
                Some(Err(_)) if name == "HOME" => {}
                Some(Err(_)) => {
                    problems.push(Problem { variable: name, message: format!("{name} is not valid UTF-8") });
                }
                None => {}
            }
        }
        let result = Settings::from_vars(vars);
        if problems.is_empty() {
            return result;
        }
        problems.extend(result.err().iter().flat_map(|e| e.problems().iter().cloned()));
        Err(Error::Invalid { problems })
    }

    /// Reads the settings from name/value pairs, as if they were the environment: the variables of
    /// [`VARIABLES`], libpq's `PG*` variables, and `HOME` (for `~/.pgpass` and `~/.postgresql/`; without
    /// it, the home directory of the process's user). Other names are ignored.
    ///
    /// Never panics, whatever the input.
    ///
    /// # Errors
    /// [`Error::Invalid`] with one problem per invalid variable.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Settings, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        // Like an environment, one value per name: the last one given wins.
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into().to_ascii_uppercase(), v.into()))
            .filter(|(k, v)| {
                !v.is_empty()
                    && (VARIABLES.contains(&k.as_str()) || libpq_variables().any(|n| n == k) || k == "HOME")
            })
            .collect();
        validate(&vars)
    }
}

/// libpq's environment variables (`PGHOST`, `PGPORT`, ...), the layer under `DATABASE_URL` and `DB_*`.
pub fn libpq_variables() -> impl Iterator<Item = &'static str> {
    KEYWORDS.iter().filter_map(|k| k.envvar)
}

/// Collects problems while reading values.
#[derive(Default)]
pub(crate) struct Check {
    pub(crate) problems: Vec<Problem>,
}

impl Check {
    pub(crate) fn push(&mut self, variable: &'static str, message: impl Display) {
        self.problems.push(Problem { variable, message: format!("{message}") });
    }

    /// The number `var` of the table of variables: in its range, its own default when unset.
    fn number(&mut self, var: &'static str, value: Option<&str>) -> Option<u64> {
        let default = variables::number(var).default;
        debug_assert!(default.is_some(), "{var}'s default is derived: use number_or");
        self.number_or(var, value, default.unwrap_or(0))
    }

    /// The number `var` of the table of variables: in its range, `default` when unset (for a default
    /// derived from other settings).
    fn number_or(&mut self, var: &'static str, value: Option<&str>, default: u64) -> Option<u64> {
        let number = variables::number(var);
        let (min, max) = (number.min, number.max);
        let Some(text) = value else { return Some(default) };
        match text.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.push(
                    var,
                    format!(
                        "{var} must be a whole number{} from {min} to {max}, got {}",
                        number.unit_words(),
                        quoted(text)
                    ),
                );
                None
            }
        }
    }

    /// [`Check::number`] for a count (every count's range fits `u32`).
    fn count(&mut self, var: &'static str, value: Option<&str>) -> Option<u32> {
        self.number(var, value).and_then(|n| u32::try_from(n).ok())
    }

    /// [`Check::number_or`] for a count.
    fn count_or(&mut self, var: &'static str, value: Option<&str>, default: u32) -> Option<u32> {
        self.number_or(var, value, u64::from(default)).and_then(|n| u32::try_from(n).ok())
    }

    /// [`Check::number`] for a port.
    fn port(&mut self, var: &'static str, value: Option<&str>) -> Option<u16> {
        self.number(var, value).and_then(|n| u16::try_from(n).ok())
    }

    /// The flag `var` of the table of variables, false when unset.
    fn flag(&mut self, var: &'static str, value: Option<&str>) -> Option<bool> {
        debug_assert!(
            variables::variable(var).is_some_and(|v| v.kind == Kind::Flag),
            "{var} is not a flag of the table"
        );
        let Some(text) = value else { return Some(false) };
        let flag = parse_bool(text);
        if flag.is_none() {
            self.push(
                var,
                format!("{var} must be true or false (also 1/0, yes/no, on/off), got {}", quoted(text)),
            );
        }
        flag
    }

    /// The choice `var` of the table of variables, any case: the word as the table spells it, its
    /// default when unset.
    fn choice(&mut self, var: &'static str, value: Option<&str>) -> Option<&'static str> {
        let Some(Kind::Choice { words, default }) = variables::variable(var).map(|v| v.kind) else {
            debug_assert!(false, "{var} is not a choice of the table");
            return None;
        };
        let Some(text) = value else { return Some(default) };
        let word = words.iter().copied().find(|word| text.trim().eq_ignore_ascii_case(word));
        if word.is_none() {
            let list = match words.split_last() {
                Some((last, [])) => (*last).to_owned(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            self.push(var, format!("{var} must be {list}, got {}", quoted(text)));
        }
        word
    }

    /// Parses a connection string variable, reporting each of its problems under its name; what could
    /// be read of it even so, for the rest to be checked too (the settings stay invalid).
    pub(crate) fn conninfo(&mut self, var: &'static str, value: &str) -> Option<ConnInfo> {
        let (info, messages) = conninfo::parse_partial(value);
        for message in messages {
            self.push(var, format!("{var} {message}"));
        }
        info
    }
}

/// A value for a message: quoted, escaped, and cut short when long.
pub(crate) fn quoted(text: &str) -> String {
    let mut shown: String = text.chars().take(40).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// One pass over the variables of [`crate::variables::TABLE`] (the connection's own through `resolve`),
/// collecting every problem.
fn validate(vars: &BTreeMap<String, String>) -> Result<Settings, Error> {
    let get = |name: &'static str| -> Option<&str> {
        debug_assert!(VARIABLES.contains(&name), "{name} is not in the table of variables");
        vars.get(name).map(String::as_str)
    };
    let mut check = Check::default();
    let home = Home::new(vars);
    let database = resolve::database(&mut check, vars, &home);

    let conn_max_age = match get("DB_CONN_MAX_AGE") {
        Some(text) if text.trim().eq_ignore_ascii_case("none") => Some(ConnMaxAge::Unlimited),
        Some(text) => match text.trim().parse::<u32>() {
            Ok(0) => Some(ConnMaxAge::PerRequest),
            Ok(s) => Some(ConnMaxAge::Limited(Duration::from_secs(u64::from(s)))),
            Err(_) => {
                check.push(
                    "DB_CONN_MAX_AGE",
                    format!(
                        "DB_CONN_MAX_AGE must be a whole number of seconds (0 for no persistent connections) \
                         or \"none\" for unlimited, got {}",
                        quoted(text)
                    ),
                );
                None
            }
        },
        None => Some(ConnMaxAge::Limited(DEFAULT_CONN_MAX_AGE)),
    };

    let url_connect_timeout = database.as_ref().and_then(|d| d.connect_timeout);
    let connect_timeout = match get("DB_CONNECT_TIMEOUT") {
        Some("0") => {
            check.push(
                "DB_CONNECT_TIMEOUT",
                "DB_CONNECT_TIMEOUT=0 would wait forever for a connection; give whole seconds from 1 to 3600",
            );
            None
        }
        text => check
            .number_or(
                "DB_CONNECT_TIMEOUT",
                text,
                url_connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT).as_secs(),
            )
            .map(Duration::from_secs),
    };

    let statement_timeout = check
        .number("DB_STATEMENT_TIMEOUT", get("DB_STATEMENT_TIMEOUT"))
        .map(|ms| (ms > 0).then(|| Duration::from_millis(ms)));

    let query_timeout = match get("DB_QUERY_TIMEOUT") {
        None => statement_timeout.map(|statement| statement.map(|t| t + QUERY_TIMEOUT_GRACE)),
        text => {
            check.number_or("DB_QUERY_TIMEOUT", text, 0).map(|ms| (ms > 0).then(|| Duration::from_millis(ms)))
        }
    };

    let max_size = check.count("DB_POOL_MAX_SIZE", get("DB_POOL_MAX_SIZE"));
    let min_idle = check.count_or(
        "DB_POOL_MIN_IDLE",
        get("DB_POOL_MIN_IDLE"),
        DEFAULT_POOL_MIN_IDLE.min(max_size.unwrap_or(DEFAULT_POOL_MAX_SIZE)),
    );
    if let (Some(max), Some(min)) = (max_size, min_idle)
        && min > max
    {
        check.push(
            "DB_POOL_MIN_IDLE",
            format!("DB_POOL_MIN_IDLE ({min}) must not exceed DB_POOL_MAX_SIZE ({max})"),
        );
    }
    let checkout_timeout = check.number("DB_POOL_TIMEOUT", get("DB_POOL_TIMEOUT")).map(Duration::from_millis);
    let leak_threshold = check
        .number("DB_POOL_LEAK_THRESHOLD", get("DB_POOL_LEAK_THRESHOLD"))
        .map(|ms| (ms > 0).then(|| Duration::from_millis(ms)));

    let statement_cache = check.count("DB_STATEMENT_CACHE", get("DB_STATEMENT_CACHE"));
    let prepared_through_pgbouncer =
        check.flag("PGBOUNCER_PREPARED_STATEMENTS", get("PGBOUNCER_PREPARED_STATEMENTS"));

    let use_pgbouncer = check.flag("USE_PGBOUNCER", get("USE_PGBOUNCER"));
    let target = match (use_pgbouncer, &database) {
        (Some(true), Some(database)) => {
            if database.options.is_some() {
                log::warn!(
                    "DATABASE_URL has an options parameter; it is not sent through PgBouncer (1.18 refuses \
                     the options startup parameter): set server settings in pgbouncer.ini"
                );
            }
            resolve::pgbouncer(&mut check, vars, &home, database)
        }
        (Some(true), None) => None,
        (_, database) => {
            let ignored: Vec<&str> = [
                ("PGBOUNCER_URL", &get("PGBOUNCER_URL")),
                ("PGBOUNCER_HOST", &get("PGBOUNCER_HOST")),
                ("PGBOUNCER_PORT", &get("PGBOUNCER_PORT")),
            ]
            .into_iter()
            .filter_map(|(name, value)| value.as_ref().map(|_| name))
            .collect();
            if use_pgbouncer == Some(false) && !ignored.is_empty() {
                log::warn!(
                    "{} set but USE_PGBOUNCER is not true: the pool connects to PostgreSQL directly",
                    ignored.join(", ")
                );
            }
            database.clone()
        }
    };

    // Where a rendered pgbouncer.ini listens. Without USE_PGBOUNCER a bad PGBOUNCER_PORT is only
    // warned about: it routes nothing then.
    let listen_host = get("PGBOUNCER_HOST").map_or("localhost", str::trim).to_owned();
    let listen_port = if use_pgbouncer == Some(true) {
        check.port("PGBOUNCER_PORT", get("PGBOUNCER_PORT"))
    } else {
        let mut lenient = Check::default();
        let port = lenient.port("PGBOUNCER_PORT", get("PGBOUNCER_PORT"));
        for problem in lenient.problems {
            log::warn!("{problem}; using {DEFAULT_PGBOUNCER_PORT}");
        }
        Some(port.unwrap_or(DEFAULT_PGBOUNCER_PORT))
    };

    // The table's word, read back by PgBouncer's own spelling of each mode (no word maps to a mode by default).
    let pool_mode = check.choice("PGBOUNCER_POOL_MODE", get("PGBOUNCER_POOL_MODE")).and_then(|word| {
        [PoolMode::Session, PoolMode::Transaction, PoolMode::Statement]
            .into_iter()
            .find(|mode| mode.as_str() == word)
    });
    let max_client_conn = check.count("PGBOUNCER_MAX_CLIENT_CONN", get("PGBOUNCER_MAX_CLIENT_CONN"));
    let default_pool_size = check.count("PGBOUNCER_DEFAULT_POOL_SIZE", get("PGBOUNCER_DEFAULT_POOL_SIZE"));
    let min_pool_size = check.count("PGBOUNCER_MIN_POOL_SIZE", get("PGBOUNCER_MIN_POOL_SIZE"));
    let reserve_pool_size = check.count("PGBOUNCER_RESERVE_POOL_SIZE", get("PGBOUNCER_RESERVE_POOL_SIZE"));
    if let (Some(default), Some(min)) = (default_pool_size, min_pool_size)
        && min > default
    {
        check.push(
            "PGBOUNCER_MIN_POOL_SIZE",
            format!(
                "PGBOUNCER_MIN_POOL_SIZE ({min}) must not exceed PGBOUNCER_DEFAULT_POOL_SIZE ({default})"
            ),
        );
    }

    let (
        Some(database),
        Some(target),
        Some(use_pgbouncer),
        Some(conn_max_age),
        Some(connect_timeout),
        Some(statement_timeout),
        Some(query_timeout),
        Some(max_size),
        Some(min_idle),
        Some(checkout_timeout),
        Some(leak_threshold),
        Some(statement_cache),
        Some(prepared_through_pgbouncer),
        Some(listen_port),
        Some(pool_mode),
        Some(max_client_conn),
        Some(default_pool_size),
        Some(min_pool_size),
        Some(reserve_pool_size),
    ) = (
        database,
        target,
        use_pgbouncer,
        conn_max_age,
        connect_timeout,
        statement_timeout,
        query_timeout,
        max_size,
        min_idle,
        checkout_timeout,
        leak_threshold,
        statement_cache,
        prepared_through_pgbouncer,
        listen_port,
        pool_mode,
        max_client_conn,
        default_pool_size,
        min_pool_size,
        reserve_pool_size,
    )
    else {
        let mut problems = check.problems;
        let mut seen = std::collections::BTreeSet::new();
        problems.retain(|p| seen.insert(p.message.clone()));
        return Err(Error::Invalid { problems });
    };
    if !check.problems.is_empty() {
        return Err(Error::Invalid { problems: check.problems });
    }
    Ok(Settings {
        strategy: if use_pgbouncer { Strategy::PgBouncer } else { Strategy::Direct },
        database,
        target,
        conn_max_age,
        connect_timeout,
        statement_timeout,
        query_timeout,
        pool: PoolSettings { max_size, min_idle, checkout_timeout, leak_threshold, statement_cache },
        pgbouncer: PgBouncerSettings {
            listen_host,
            listen_port,
            pool_mode,
            max_client_conn,
            default_pool_size,
            min_pool_size,
            reserve_pool_size,
            prepared_statements: prepared_through_pgbouncer,
        },
    })
}
