//! `pgconn config`: the effective settings, as a summary or as JSON.

use std::process::ExitCode;

use std::collections::BTreeMap;

use pgconn_config::{ConnParams, Host, Settings};
use serde::Serialize;

use crate::EXIT_INVALID;

/// Prints the settings; on invalid configuration prints one line per problem on stderr and exits 2.
pub(crate) fn run(json: bool) -> anyhow::Result<ExitCode> {
    let Some(settings) = crate::settings_from_env() else { return Ok(ExitCode::from(EXIT_INVALID)) };
    // The files a pool would read when built (sslrootcert, sslcert, sslkey, sslrootcert=system's store).
    if let Err(e) = pgconn_pool::check_tls(&settings) {
        eprintln!("{e}");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    if json {
        crate::out(serde_json::to_string_pretty(&ConfigJson::new(&settings))?)?;
    } else {
        crate::out(&settings)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON interface of `pgconn config --json` (keys are documented in docs/cli.md; add, never rename).
#[derive(Serialize)]
struct ConfigJson {
    strategy: &'static str,
    persistent: bool,
    /// `null` when unlimited; `0` when not persistent.
    conn_max_age_s: Option<u64>,
    connect_timeout_s: u64,
    /// `0` when off.
    statement_timeout_ms: u128,
    /// `0` when off.
    query_timeout_ms: u128,
    application_name: String,
    database: EndpointJson,
    target: EndpointJson,
    pool: PoolJson,
    pgbouncer: PgBouncerJson,
}

#[derive(Serialize)]
struct EndpointJson {
    /// The first host; a socket directory's path.
    host: String,
    port: u16,
    dbname: String,
    user: String,
    password_set: bool,
    sslmode: &'static str,
    application_name: Option<String>,
    /// Every host, in the order they are tried.
    hosts: Vec<HostJson>,
    sslrootcert: Option<String>,
    target_session_attrs: &'static str,
    /// `connect_timeout` from the URL, if it gave one.
    connect_timeout_s: Option<u64>,
    /// The client certificate and its key, when one is sent.
    sslcert: Option<String>,
    sslkey: Option<String>,
    channel_binding: &'static str,
    /// `random` or `disable`.
    load_balance_hosts: &'static str,
    /// The connection string's keepalive settings; `null` where pgconn's default applies.
    keepalives: Option<bool>,
    keepalives_idle_s: Option<u64>,
    keepalives_interval_s: Option<u64>,
    keepalives_count: Option<u32>,
    tcp_user_timeout_ms: Option<u128>,
    /// Where each value came from, by libpq keyword: `DATABASE_URL`, `DB_HOST`, `PGUSER`,
    /// `password file PATH line N`, `default file`, `default`.
    sources: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct HostJson {
    host: String,
    port: u16,
    /// `tcp` or `unix`.
    kind: &'static str,
    /// `hostaddr`, when given: the address connected to.
    hostaddr: Option<String>,
}

#[derive(Serialize)]
struct PoolJson {
    max_size: u32,
    min_idle: u32,
    checkout_timeout_ms: u128,
    /// `0` when off.
    leak_threshold_ms: u128,
    /// `DB_STATEMENT_CACHE`, as set.
    statement_cache: u32,
    /// The statement cache's size in effect: `0` when off (asked, not persistent, or through PgBouncer in
    /// transaction mode without `PGBOUNCER_PREPARED_STATEMENTS`).
    statement_cache_effective: u32,
}

#[derive(Serialize)]
struct PgBouncerJson {
    pool_mode: &'static str,
    max_client_conn: u32,
    default_pool_size: u32,
    min_pool_size: u32,
    reserve_pool_size: u32,
    /// `PGBOUNCER_PREPARED_STATEMENTS`.
    prepared_statements: bool,
}

impl ConfigJson {
    fn new(s: &Settings) -> ConfigJson {
        ConfigJson {
            strategy: s.strategy.as_str(),
            persistent: s.persistent(),
            conn_max_age_s: s.conn_max_age.limit().map(|age| age.as_secs()),
            connect_timeout_s: s.connect_timeout.as_secs(),
            statement_timeout_ms: s.statement_timeout.map_or(0, |t| t.as_millis()),
            query_timeout_ms: s.query_timeout.map_or(0, |t| t.as_millis()),
            application_name: s.application_name().to_owned(),
            database: EndpointJson::new(&s.database),
            target: EndpointJson::new(&s.target),
            pool: PoolJson {
                max_size: s.pool.max_size,
                min_idle: s.pool.min_idle,
                checkout_timeout_ms: s.pool.checkout_timeout.as_millis(),
                leak_threshold_ms: s.pool.leak_threshold.map_or(0, |t| t.as_millis()),
                statement_cache: s.pool.statement_cache,
                statement_cache_effective: s.statement_cache(),
            },
            pgbouncer: PgBouncerJson {
                pool_mode: s.pgbouncer.pool_mode.as_str(),
                max_client_conn: s.pgbouncer.max_client_conn,
                default_pool_size: s.pgbouncer.default_pool_size,
                min_pool_size: s.pgbouncer.min_pool_size,
                reserve_pool_size: s.pgbouncer.reserve_pool_size,
                prepared_statements: s.pgbouncer.prepared_statements,
            },
        }
    }
}

impl EndpointJson {
    fn new(p: &ConnParams) -> EndpointJson {
        let hosts: Vec<HostJson> = p
            .endpoints
            .iter()
            .map(|e| HostJson {
                host: e.host.to_string(),
                port: e.port,
                kind: match e.host {
                    Host::Tcp(_) => "tcp",
                    Host::Unix(_) => "unix",
                },
                hostaddr: e.hostaddr.map(|a| a.to_string()),
            })
            .collect();
        EndpointJson {
            host: hosts[0].host.clone(),
            port: hosts[0].port,
            dbname: p.dbname.clone(),
            user: p.user.clone(),
            password_set: p.password.is_some(),
            sslmode: p.sslmode.as_str(),
            application_name: p.application_name.clone(),
            hosts,
            sslrootcert: p.sslrootcert.as_ref().map(ToString::to_string),
            target_session_attrs: p.target_session_attrs.as_str(),
            connect_timeout_s: p.connect_timeout.map(|t| t.as_secs()),
            sslcert: p.sslcert.as_ref().map(|path| path.display().to_string()),
            sslkey: p.sslkey.as_ref().map(|path| path.display().to_string()),
            channel_binding: p.channel_binding.as_str(),
            load_balance_hosts: if p.load_balance_hosts { "random" } else { "disable" },
            keepalives: p.tcp.keepalives,
            keepalives_idle_s: p.tcp.keepalives_idle.map(|t| t.as_secs()),
            keepalives_interval_s: p.tcp.keepalives_interval.map(|t| t.as_secs()),
            keepalives_count: p.tcp.keepalives_count,
            tcp_user_timeout_ms: p.tcp.user_timeout.map(|t| t.as_millis()),
            sources: p.sources.iter().map(|(k, s)| (k, s.to_string())).collect(),
        }
    }
}
