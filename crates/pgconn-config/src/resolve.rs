//! From connection strings and variables to [`ConnParams`], in libpq's layers: what the string (or the
//! `DB_*` variables) says, then libpq's `PG*` variables for what it leaves out, then the password file,
//! then the defaults. Every value is checked here, and each remembers its source for `pgconn config`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::conn::{
    ChannelBinding, ConnParams, DEFAULT_PORT, DEFAULT_SOCKET_DIR, Endpoint, Host, Password, Source, Sources,
    SslMode, SslRootCert, TargetSessionAttrs, Tcp,
};
use crate::conninfo::{ConnInfo, KEYWORDS, Support};
use crate::env::{Check, quoted};
use crate::passfile;

/// The variables that say where to connect when `DATABASE_URL` and `DB_*` are unset.
const LOCATION_VARS: &[&str] = &["PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER"];

/// The `DB_*` variables and the keyword each gives.
const DB_VARS: &[(&str, &str)] = &[
    ("DB_HOST", "host"),
    ("DB_PORT", "port"),
    ("DB_NAME", "dbname"),
    ("DB_USER", "user"),
    ("DB_PASSWORD", "password"),
];

/// Keyword values with their sources; the first value set for a keyword stays (layers go top down).
#[derive(Debug, Default)]
struct Values(BTreeMap<&'static str, (String, Source)>);

impl Values {
    fn from_info(info: &ConnInfo, var: &'static str) -> Values {
        Values(info.iter().map(|(k, v)| (k, (v.to_owned(), Source::Var(var)))).collect())
    }

    /// Sets `keyword` unless a layer above set it; whether it was set.
    fn fill(&mut self, keyword: &'static str, value: String, source: Source) -> bool {
        if self.0.contains_key(keyword) {
            return false;
        }
        self.0.insert(keyword, (value, source));
        true
    }

    /// The value of `keyword`, when given and not empty (libpq treats an empty value as the default).
    fn get(&self, keyword: &str) -> Option<(&str, &Source)> {
        self.0.get(keyword).filter(|(v, _)| !v.is_empty()).map(|(v, s)| (v.as_str(), s))
    }
}

/// What the process knows beneath the variables: `HOME` (from the variables, as libpq 16 reads it),
/// else the system's user database, and the user's name.
pub(crate) struct Home {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) os_user: Option<String>,
}

impl Home {
    pub(crate) fn new(vars: &BTreeMap<String, String>) -> Home {
        let os = passfile::os_user();
        let dir = vars
            .get("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| os.as_ref().map(|(_, home)| home.clone()).filter(|h| !h.as_os_str().is_empty()));
        Home { dir, os_user: os.map(|(name, _)| name) }
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(name))
    }
}

/// PostgreSQL's own parameters: `DATABASE_URL`, else the `DB_*` variables, over the `PG*` variables.
pub(crate) fn database(
    check: &mut Check,
    vars: &BTreeMap<String, String>,
    home: &Home,
) -> Option<ConnParams> {
    let mut values = if let Some(text) = vars.get("DATABASE_URL") {
        let shadowed: Vec<&str> =
            DB_VARS.iter().map(|(var, _)| *var).filter(|var| vars.contains_key(*var)).collect();
        if !shadowed.is_empty() {
            log::warn!("DATABASE_URL is set, so {} ignored", shadowed.join(", "));
        }
        Values::from_info(&check.conninfo("DATABASE_URL", text)?, "DATABASE_URL")
    } else {
        let mut values = Values::default();
        for (var, keyword) in DB_VARS {
            if let Some(value) = vars.get(*var) {
                let value = if *keyword == "password" { value.clone() } else { value.trim().to_owned() };
                values.fill(keyword, value, Source::Var(var));
            }
        }
        values
    };
    let db_form =
        !vars.contains_key("DATABASE_URL") && DB_VARS.iter().any(|(var, _)| vars.contains_key(*var));
    for keyword in KEYWORDS {
        let Some(envvar) = keyword.envvar else { continue };
        let Some(value) = vars.get(envvar) else { continue };
        if let Support::Refused(why) = keyword.support {
            if values.get(keyword.name).is_none() {
                log::warn!("{envvar} is set and pgconn does not read it: {why}");
            }
            continue;
        }
        values.fill(keyword.name, value.clone(), Source::Var(envvar));
    }
    if !vars.contains_key("DATABASE_URL") && !db_form && !LOCATION_VARS.iter().any(|v| vars.contains_key(*v))
    {
        check.push(
            "DATABASE_URL",
            "DATABASE_URL or DB_NAME must be set: DATABASE_URL=postgresql://user:password@host:5432/dbname, \
             or DB_NAME and DB_USER (with DB_HOST, DB_PORT, DB_PASSWORD as needed), or libpq's PGHOST, \
             PGDATABASE, PGUSER, ... variables",
        );
        return None;
    }
    if db_form {
        // pgconn's default for the DB_* form, as before libpq's variables were read.
        values.fill("host", "localhost".to_owned(), Source::Default);
    }
    resolve(check, &values, home)
}

/// PgBouncer's parameters: `PGBOUNCER_URL`, or `PGBOUNCER_HOST`/`PGBOUNCER_PORT`, with the database's user,
/// password, database name and application name where they say nothing. TLS, keepalives and the rest
/// come from `PGBOUNCER_URL` only: they describe the path to PgBouncer, not to PostgreSQL.
pub(crate) fn pgbouncer(
    check: &mut Check,
    vars: &BTreeMap<String, String>,
    home: &Home,
    database: &ConnParams,
) -> Option<ConnParams> {
    let mut values = if let Some(text) = vars.get("PGBOUNCER_URL") {
        let info = check.conninfo("PGBOUNCER_URL", text)?;
        if info.get("options").is_some_and(|o| !o.is_empty()) {
            check.push(
                "PGBOUNCER_URL",
                "PGBOUNCER_URL has an options parameter, which PgBouncer refuses (unsupported startup \
                 parameter); set server settings in pgbouncer.ini (connect_query) instead",
            );
            return None;
        }
        Values::from_info(&info, "PGBOUNCER_URL")
    } else {
        let mut values = Values::default();
        let host = vars.get("PGBOUNCER_HOST").map(|h| (h.trim().to_owned(), Source::Var("PGBOUNCER_HOST")));
        let (host, source) = host.unwrap_or_else(|| ("localhost".to_owned(), Source::Default));
        values.fill("host", host, source);
        let port = vars.get("PGBOUNCER_PORT").map(|p| (p.clone(), Source::Var("PGBOUNCER_PORT")));
        let (port, source) =
            port.unwrap_or_else(|| (crate::env::DEFAULT_PGBOUNCER_PORT.to_string(), Source::Default));
        values.fill("port", port, source);
        values
    };
    let inherited = |keyword: &str| database.sources.get(keyword).cloned().unwrap_or(Source::Default);
    values.fill("user", database.user.clone(), inherited("user"));
    values.fill("dbname", database.dbname.clone(), inherited("dbname"));
    if let Some(name) = &database.application_name {
        values.fill("application_name", name.clone(), inherited("application_name"));
    }
    if let Some(password) = &database.password {
        values.fill("password", password.expose().to_owned(), inherited("password"));
    }
    resolve(check, &values, home)
}

/// The variable a problem with a value from `source` is filed under.
fn var_of(source: &Source) -> &'static str {
    match source {
        Source::Var(var) => var,
        _ => "DATABASE_URL",
    }
}

/// How a message names a value: `DATABASE_URL parameter sslmode`, `PGSSLMODE`, `DB_PORT`.
fn subject(keyword: &str, source: &Source) -> String {
    match source {
        Source::Var(var) if var.ends_with("_URL") => format!("{var} parameter {keyword}"),
        Source::Var(var) => (*var).to_owned(),
        _ => keyword.to_owned(),
    }
}

/// `, got "value"`, except for a URL's authority (a forgotten `@` puts a password in it) and passwords.
fn got(keyword: &str, value: &str, source: &Source) -> String {
    let authority = ["host", "hostaddr", "port", "user", "password", "dbname"].contains(&keyword);
    let from_url = matches!(source, Source::Var(var) if var.ends_with("_URL"));
    if keyword == "password" || (authority && from_url) {
        String::new()
    } else {
        format!(", got {}", quoted(value))
    }
}

/// Typed, checked parameters from layered values; each problem is pushed to `check`.
fn resolve(check: &mut Check, values: &Values, home: &Home) -> Option<ConnParams> {
    let before = check.problems.len();
    let mut sources = BTreeMap::new();
    let bad = |check: &mut Check, keyword: &str, value: &str, source: &Source, expected: &str| {
        check.push(
            var_of(source),
            format!("{} must be {expected}{}", subject(keyword, source), got(keyword, value, source)),
        );
    };

    // Keywords pgconn refuses, and those it accepts without effect but checks.
    for keyword in KEYWORDS {
        let Some((value, source)) = values.get(keyword.name) else { continue };
        match keyword.support {
            Support::Refused(why) => {
                check.push(
                    var_of(source),
                    format!("{} is not supported: {why}", subject(keyword.name, source)),
                );
            }
            Support::NoEffect => {
                if let Err(expected) = no_effect(keyword.name, value) {
                    bad(check, keyword.name, value, source, expected);
                }
            }
            Support::Read => {}
        }
    }

    let user = if let Some((user, source)) = values.get("user") {
        sources.insert("user", source.clone());
        Some(user.to_owned())
    } else {
        sources.insert("user", Source::Default);
        if home.os_user.is_none() {
            check.push(
                    "DATABASE_URL",
                    "no user: the URL names none, PGUSER and DB_USER are unset, and this process's user has \
                     no name in the system's user database; put the user in the URL (postgresql://USER@host/db)",
                );
        }
        home.os_user.clone()
    };
    let dbname = if let Some((dbname, source)) = values.get("dbname") {
        sources.insert("dbname", source.clone());
        Some(dbname.to_owned())
    } else {
        sources.insert("dbname", Source::Default);
        user.clone()
    };

    // Hosts, their addresses and ports, libpq's way: as many hosts as hostaddr (or host) names; one
    // port for all, or one per host; an empty entry is the default.
    let hosts: Vec<&str> = values.get("host").map(|(h, _)| h.split(',').collect()).unwrap_or_default();
    let addrs: Vec<&str> = values.get("hostaddr").map(|(a, _)| a.split(',').collect()).unwrap_or_default();
    let count = if addrs.is_empty() { hosts.len().max(1) } else { addrs.len() };
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        let (_, source) = values.get("hostaddr").expect("hostaddr is set");
        check.push(
            var_of(source),
            format!(
                "{} names {} addresses for {} hosts; give one per host",
                subject("hostaddr", source),
                addrs.len(),
                hosts.len()
            ),
        );
    }
    if let Some((_, source)) = values.get("host") {
        sources.insert("host", source.clone());
    } else {
        sources.insert("host", Source::Default);
    }
    let mut endpoints = Vec::with_capacity(count);
    for i in 0..count {
        let host = hosts.get(i).copied().unwrap_or("");
        let addr = addrs.get(i).copied().unwrap_or("").trim();
        let hostaddr = if addr.is_empty() {
            None
        } else if let Ok(ip) = addr.parse::<IpAddr>() {
            Some(ip)
        } else {
            let (value, source) = values.get("hostaddr").expect("hostaddr is set");
            bad(check, "hostaddr", value, source, "numeric IP addresses (a host name goes in host)");
            None
        };
        let host = if !host.is_empty() {
            Host::parse(host)
        } else if !addr.is_empty() {
            Host::Tcp(addr.to_owned())
        } else {
            Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR))
        };
        endpoints.push(Endpoint { host, port: DEFAULT_PORT, hostaddr });
    }
    if let Some((_, source)) = values.get("hostaddr") {
        sources.insert("hostaddr", source.clone());
        if endpoints.iter().any(|e| e.hostaddr.is_none()) {
            check.push(
                var_of(source),
                format!(
                    "{} must give an address for every host or for none (the postgres crate pairs them)",
                    subject("hostaddr", source)
                ),
            );
        }
    }
    match values.get("port") {
        Some((ports, source)) => {
            sources.insert("port", source.clone());
            let list: Vec<&str> = ports.split(',').collect();
            if list.len() != 1 && list.len() != endpoints.len() {
                check.push(
                    var_of(source),
                    format!(
                        "{} names {} hosts but {} ports; give one port for all hosts or one per host",
                        source_name(source),
                        endpoints.len(),
                        list.len()
                    ),
                );
            } else {
                for (i, endpoint) in endpoints.iter_mut().enumerate() {
                    let text = list[if list.len() == 1 { 0 } else { i }].trim();
                    endpoint.port = match text {
                        "" => DEFAULT_PORT,
                        text => match text.parse::<u16>() {
                            Ok(port) if port > 0 => port,
                            _ => {
                                let what = if matches!(source, Source::Var(v) if v.ends_with("_URL")) {
                                    format!(
                                        "{} host {} of the URL has a port that is not a number from 1 to 65535",
                                        source_name(source),
                                        if list.len() == 1 { 1 } else { i + 1 }
                                    )
                                } else {
                                    format!(
                                        "{} must be a whole number from 1 to 65535{}",
                                        subject("port", source),
                                        got("port", ports, source)
                                    )
                                };
                                check.push(var_of(source), what);
                                DEFAULT_PORT
                            }
                        },
                    };
                }
            }
        }
        None => {
            sources.insert("port", Source::Default);
        }
    }

    // The password: given, else from the password file, for the first host that has a line.
    let password = if let Some((password, source)) = values.get("password") {
        sources.insert("password", source.clone());
        Some(Password::new(password))
    } else {
        let file = match values.get("passfile") {
            Some((path, source)) => {
                sources.insert("passfile", source.clone());
                Some(PathBuf::from(path))
            }
            None => home.file(".pgpass"),
        };
        match (&file, &user, &dbname) {
            (Some(file), Some(user), Some(dbname)) => {
                let found = from_passfile(file, &endpoints, dbname, user);
                found.map(|(password, line)| {
                    sources.insert("password", Source::Passfile { path: file.clone(), line });
                    Password::new(password)
                })
            }
            _ => None,
        }
    };

    let explicit_sslmode = values.get("sslmode");
    let mut sslmode = if let Some((text, source)) = explicit_sslmode {
        sources.insert("sslmode", source.clone());
        text.parse().unwrap_or_else(|()| {
            bad(
                check,
                "sslmode",
                text,
                source,
                "one of disable, allow, prefer, require, verify-ca, verify-full",
            );
            SslMode::default()
        })
    } else {
        sources.insert("sslmode", Source::Default);
        SslMode::default()
    };
    let sslrootcert = match values.get("sslrootcert") {
        Some(("system", source)) => {
            sources.insert("sslrootcert", source.clone());
            match explicit_sslmode {
                None => sslmode = SslMode::VerifyFull,
                Some(_) if sslmode == SslMode::VerifyFull => {}
                Some((_, mode_source)) => check.push(
                    var_of(mode_source),
                    format!(
                        "{} is {sslmode}, which may not be used with sslrootcert=system (the operating \
                         system's CAs sign certificates for anyone's names): use sslmode=verify-full, as \
                         libpq 16 requires",
                        subject("sslmode", mode_source)
                    ),
                ),
            }
            Some(SslRootCert::System)
        }
        Some((path, source)) => {
            sources.insert("sslrootcert", source.clone());
            Some(SslRootCert::File(PathBuf::from(path)))
        }
        None if matches!(sslmode, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) => {
            // libpq: ~/.postgresql/root.crt when it exists; required for verify-*.
            let default = home.file(".postgresql/root.crt");
            match default.filter(|path| path.exists()) {
                Some(path) => {
                    sources.insert("sslrootcert", Source::DefaultFile);
                    Some(SslRootCert::File(path))
                }
                None if sslmode == SslMode::Require => None,
                None => {
                    let (_, source) = explicit_sslmode.expect("verify-* was given");
                    let place = home
                        .file(".postgresql/root.crt")
                        .map_or_else(|| "~/.postgresql/root.crt".to_owned(), |p| p.display().to_string());
                    check.push(
                        var_of(source),
                        format!(
                            "{} has sslmode={sslmode} but no sslrootcert=PATH naming the CA certificate, and \
                             {place} (libpq's default) does not exist; give sslrootcert=PATH, or \
                             sslrootcert=system for the operating system's CAs",
                            source_name(source)
                        ),
                    );
                    None
                }
            }
        }
        None => None,
    };
    let sslcert = match values.get("sslcert") {
        Some((path, source)) => {
            sources.insert("sslcert", source.clone());
            Some(PathBuf::from(path))
        }
        None => home.file(".postgresql/postgresql.crt").filter(|p| p.exists()).inspect(|_| {
            sources.insert("sslcert", Source::DefaultFile);
        }),
    };
    let sslkey = match values.get("sslkey") {
        Some((path, source)) => {
            sources.insert("sslkey", source.clone());
            Some(PathBuf::from(path))
        }
        None if sslcert.is_some() => home.file(".postgresql/postgresql.key").inspect(|_| {
            sources.insert("sslkey", Source::DefaultFile);
        }),
        None => None,
    };
    if sslkey.is_some() && sslcert.is_none() {
        let (_, source) = values.get("sslkey").expect("sslkey without sslcert was given");
        check.push(
            var_of(source),
            format!(
                "{} is set without sslcert, the certificate that goes with it",
                subject("sslkey", source)
            ),
        );
    }

    let application_name = values
        .get("application_name")
        .map(|(name, source)| (name, source, "application_name"))
        .or_else(|| values.get("fallback_application_name").map(|(n, s)| (n, s, "fallback_application_name")))
        .map(|(name, source, keyword)| {
            sources.insert("application_name", source.clone());
            if keyword == "fallback_application_name" {
                sources.insert("fallback_application_name", source.clone());
            }
            name.to_owned()
        });

    let connect_timeout = values.get("connect_timeout").and_then(|(text, source)| {
        sources.insert("connect_timeout", source.clone());
        match text.trim().parse::<i64>() {
            Ok(s) if s <= 0 => {
                check.push(
                    var_of(source),
                    format!(
                        "{}={text} would wait forever; give whole seconds from 1 to 3600, or leave it out \
                         and set DB_CONNECT_TIMEOUT",
                        subject("connect_timeout", source)
                    ),
                );
                None
            }
            // libpq's minimum: 1 means 2 seconds.
            Ok(s) if s <= 3600 => Some(Duration::from_secs(s.unsigned_abs().max(2))),
            _ => {
                bad(check, "connect_timeout", text, source, "whole seconds from 1 to 3600");
                None
            }
        }
    });

    let options = values.get("options").map(|(options, source)| {
        sources.insert("options", source.clone());
        options.to_owned()
    });

    let target_session_attrs = match values.get("target_session_attrs") {
        None => TargetSessionAttrs::Any,
        Some((text, source)) => {
            sources.insert("target_session_attrs", source.clone());
            match text {
                "any" => TargetSessionAttrs::Any,
                "read-write" => TargetSessionAttrs::ReadWrite,
                "read-only" => TargetSessionAttrs::ReadOnly,
                "primary" | "standby" | "prefer-standby" => {
                    let instead = match text {
                        "primary" => "use read-write (a primary is the server that accepts writes)",
                        "standby" => "use read-only (a standby's sessions are read-only)",
                        _ => "list the standbys first with read-only, or use any",
                    };
                    check.push(
                        var_of(source),
                        format!(
                            "{}={text} is not implemented by the postgres crate; {instead}",
                            subject("target_session_attrs", source)
                        ),
                    );
                    TargetSessionAttrs::Any
                }
                _ => {
                    bad(check, "target_session_attrs", text, source, "any, read-write or read-only");
                    TargetSessionAttrs::Any
                }
            }
        }
    };

    let channel_binding = match values.get("channel_binding") {
        None => ChannelBinding::default(),
        Some((text, source)) => {
            sources.insert("channel_binding", source.clone());
            match text {
                "disable" => ChannelBinding::Disable,
                "prefer" => ChannelBinding::Prefer,
                "require" => ChannelBinding::Require,
                _ => {
                    bad(check, "channel_binding", text, source, "disable, prefer or require");
                    ChannelBinding::default()
                }
            }
        }
    };
    let load_balance_hosts = match values.get("load_balance_hosts") {
        None => false,
        Some((text, source)) => {
            sources.insert("load_balance_hosts", source.clone());
            match text {
                "disable" => false,
                "random" => true,
                _ => {
                    bad(check, "load_balance_hosts", text, source, "disable or random");
                    false
                }
            }
        }
    };

    let mut number = |check: &mut Check, keyword: &'static str, range: (i64, i64), unit: &str| {
        let (text, source) = values.get(keyword)?;
        sources.insert(keyword, source.clone());
        match text.trim().parse::<i64>() {
            Ok(n) if (range.0..=range.1).contains(&n) => Some(n.unsigned_abs()),
            _ => {
                let expected = format!("a whole number{unit} from {} to {}", range.0, range.1);
                check.push(
                    var_of(source),
                    format!("{} must be {expected}{}", subject(keyword, source), got(keyword, text, source)),
                );
                None
            }
        }
    };
    let tcp = Tcp {
        keepalives: number(check, "keepalives", (0, i64::from(i32::MAX)), " (0 turns keepalives off)")
            .map(|n| n != 0),
        keepalives_idle: number(check, "keepalives_idle", (1, 32_767), " of seconds")
            .map(Duration::from_secs),
        keepalives_interval: number(check, "keepalives_interval", (1, 32_767), " of seconds")
            .map(Duration::from_secs),
        keepalives_count: number(check, "keepalives_count", (1, 127), "").and_then(|n| u32::try_from(n).ok()),
        user_timeout: number(
            check,
            "tcp_user_timeout",
            (0, i64::from(i32::MAX)),
            " of milliseconds (0: the kernel's default)",
        )
        .map(Duration::from_millis),
    };

    if check.problems.len() > before {
        return None;
    }
    Some(ConnParams {
        endpoints,
        dbname: dbname?,
        user: user?,
        password,
        sslmode,
        sslrootcert,
        sslcert,
        sslkey,
        channel_binding,
        application_name,
        connect_timeout,
        options,
        target_session_attrs,
        load_balance_hosts,
        tcp,
        sources: Sources(sources),
    })
}

/// The name of a source for "… names 3 hosts" messages: the variable.
fn source_name(source: &Source) -> String {
    match source {
        Source::Var(var) => (*var).to_owned(),
        other => other.to_string(),
    }
}

/// The password file's password for the first host with a line; a warning when hosts differ.
fn from_passfile(file: &Path, endpoints: &[Endpoint], dbname: &str, user: &str) -> Option<(String, usize)> {
    let mut found: Option<passfile::Found> = None;
    for endpoint in endpoints {
        let host = match &endpoint.host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        };
        if let Some(this) = passfile::lookup(file, &host, endpoint.port, dbname, user) {
            match &found {
                None => found = Some(this),
                Some(first) if first.password != this.password => {
                    log::warn!(
                        "the password file {} gives different passwords for the hosts (lines {} and {}); \
                         pgconn uses one password for every host: line {}'s",
                        file.display(),
                        first.line,
                        this.line,
                        first.line
                    );
                }
                Some(_) => {}
            }
        }
    }
    found.map(|f| (f.password, f.line))
}

/// Checks a keyword pgconn accepts without effect; `Err` says what it accepts.
fn no_effect(keyword: &str, value: &str) -> Result<(), &'static str> {
    let ok = match keyword {
        "client_encoding" => {
            ["utf8", "utf-8", "unicode", "auto"].contains(&value.to_ascii_lowercase().as_str())
        }
        "sslcompression" => ["0", "1"].contains(&value),
        "sslsni" => value == "1",
        "ssl_min_protocol_version" => ["TLSv1", "TLSv1.1", "TLSv1.2"].contains(&value),
        "ssl_max_protocol_version" => ["TLSv1.2", "TLSv1.3"].contains(&value),
        "gssencmode" => ["disable", "prefer"].contains(&value),
        _ => true,
    };
    if ok {
        return Ok(());
    }
    Err(match keyword {
        "client_encoding" => "UTF8 (the postgres crate always uses UTF8) or left out",
        "sslcompression" => "0 or 1 (TLS compression is never used)",
        "sslsni" => "1 (pgconn always sends the host name in TLS's SNI)",
        "ssl_min_protocol_version" => "TLSv1, TLSv1.1 or TLSv1.2 (pgconn negotiates TLS 1.2 or 1.3)",
        "ssl_max_protocol_version" => "TLSv1.2 or TLSv1.3 (pgconn negotiates TLS 1.2 or 1.3)",
        "gssencmode" => "disable or prefer (GSSAPI encryption is not supported; use TLS with sslmode)",
        _ => "a valid value",
    })
}
