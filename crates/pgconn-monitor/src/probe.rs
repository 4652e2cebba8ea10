//! The server probe: what PostgreSQL says about its connections, bounded in time.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pgconn_config::{Settings, Strategy};
use pgconn_pool::{Error, ErrorKind, describe_postgres_error as describe};

use crate::model::{
    Backend, PgBouncerRow, PgBouncerSnapshot, PgBouncerView, QuerySource, QueryStats, ServerSnapshot,
    ServerView, by_application,
};

/// The application name of the monitor's own connection, so it can be told apart.
pub const MONITOR_APPLICATION_NAME: &str = "pgconn-monitor";

/// How long the probe's statements may run on the server.
pub const PROBE_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks PostgreSQL itself (never PgBouncer) about its connections. Keeps its connection between probes
/// (`--watch`), and opens a new one when it broke.
pub struct ServerProbe {
    settings: Settings,
    client: Option<postgres::Client>,
    deadline: Duration,
}

impl ServerProbe {
    /// A probe of the database in `settings`, connecting as its user with `application_name`
    /// `pgconn-monitor` and a 5 s statement timeout.
    pub fn new(settings: &Settings) -> ServerProbe {
        let mut settings = settings.clone();
        settings.strategy = Strategy::Direct;
        settings.target = settings.database.clone();
        settings.target.application_name = Some(MONITOR_APPLICATION_NAME.to_owned());
        settings.statement_timeout = Some(PROBE_STATEMENT_TIMEOUT);
        let deadline = settings.connect_timeout + PROBE_STATEMENT_TIMEOUT;
        ServerProbe { settings, client: None, deadline }
    }

    /// Probes the server: connect if needed, then read `pg_stat_activity`, the settings and the query
    /// statistics. Never waits longer than `DB_CONNECT_TIMEOUT` plus 5 s, even against a server that has
    /// stopped answering; never fails: a refusal or an error is part of the view.
    pub fn probe(&mut self) -> ServerView {
        let client = self.client.take();
        let settings = self.settings.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        let spawned = thread::Builder::new().name("pgconn-monitor-probe".into()).spawn(move || {
            let result = run(client, &settings);
            let _ = tx.send(result);
        });
        if let Err(e) = spawned {
            return ServerView::Unreachable {
                kind: "other",
                message: format!("cannot start the probe thread: {e}"),
            };
        }
        match rx.recv_timeout(self.deadline) {
            Ok((client, view)) => {
                self.client = client;
                view
            }
            Err(_) => ServerView::Unreachable {
                kind: ErrorKind::ConnectTimeout.as_str(),
                message: format!("the server did not answer within {}s", self.deadline.as_secs()),
            },
        }
    }
}

fn run(client: Option<postgres::Client>, settings: &Settings) -> (Option<postgres::Client>, ServerView) {
    let mut client = match client.filter(|c| !c.is_closed()) {
        Some(client) => client,
        None => match pgconn_pool::connect(settings) {
            Ok(client) => client,
            Err(e) => return (None, refused(&e)),
        },
    };
    match snapshot(&mut client) {
        Ok(snapshot) => (Some(client), ServerView::Reached(snapshot)),
        Err(e) => {
            let message = describe(&e);
            let keep = !client.is_closed();
            (keep.then_some(client), ServerView::Unreachable { kind: ErrorKind::Other.as_str(), message })
        }
    }
}

fn refused(error: &Error) -> ServerView {
    match error.kind() {
        ErrorKind::TooManyClients => ServerView::Full {
            message: error
                .code()
                .map_or_else(|| error.to_string(), |_| "FATAL: sorry, too many clients already".to_owned()),
        },
        kind => ServerView::Unreachable { kind: kind.as_str(), message: error.with_cause() },
    }
}

#[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)] // counts from PostgreSQL are >= 0
fn snapshot(client: &mut postgres::Client) -> Result<ServerSnapshot, postgres::Error> {
    // reserved_connections is PostgreSQL 16's; current_setting(.., true) is NULL before.
    let row = client.query_typed_one(
        "SELECT current_setting('max_connections')::int4, \
                current_setting('superuser_reserved_connections')::int4 \
                  + coalesce(current_setting('reserved_connections', true)::int4, 0), \
                pg_backend_pid(), current_database()::text, \
                (SELECT coalesce(sum(numbackends), 0)::int8 FROM pg_stat_database), \
                pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')",
        &[],
    )?;
    let (max_connections, reserved, backend_pid, database, numbackends, sees_all): (
        i32,
        i32,
        i32,
        String,
        i64,
        bool,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
    // Client backends, and the sessions of other roles whose backend_type a role without
    // pg_read_all_stats is not shown (those with a database: client backends, or workers).
    let rows = client.query_typed(
        "SELECT pid, datname::text, coalesce(usename::text, ''), coalesce(application_name, ''), \
                coalesce(state, 'unknown'), \
                coalesce(extract(epoch FROM now() - backend_start)::float8, 0), \
                CASE WHEN state LIKE 'idle%' THEN extract(epoch FROM now() - state_change)::float8 END, \
                backend_type IS NULL \
         FROM pg_stat_activity \
         WHERE backend_type = 'client backend' OR (backend_type IS NULL AND datid IS NOT NULL) \
         ORDER BY backend_start",
        &[],
    )?;
    let mut visible = 0_u32;
    let mut all = Vec::new();
    let mut connections = Vec::new();
    let mut own_age = 0.0;
    for row in &rows {
        let pid: i32 = row.get(0);
        let datname: Option<String> = row.get(1);
        let hidden: bool = row.get(7);
        let backend = Backend {
            pid,
            state: if hidden { "unknown".to_owned() } else { row.get(4) },
            age_s: row.get(5),
            idle_s: row.get(6),
            user: row.get(2),
            application_name: row.get(3),
        };
        if !hidden {
            visible += 1;
        }
        if pid == backend_pid {
            own_age = backend.age_s;
        }
        if datname.as_deref() == Some(database.as_str()) {
            connections.push(backend.clone());
        }
        all.push(backend);
    }
    let server_connections =
        if sees_all { visible } else { visible.max(u32::try_from(numbackends.max(0)).unwrap_or(u32::MAX)) };
    let query_stats = query_stats(client).unwrap_or_else(|e| {
        log::info!("query statistics unavailable: {}", describe(&e));
        None
    });
    Ok(ServerSnapshot {
        database,
        max_connections: max_connections.max(0) as u32,
        reserved_connections: reserved.max(0) as u32,
        server_connections,
        connections_hidden: server_connections - visible,
        by_application: by_application(&all),
        connections,
        backend_pid,
        connection_age: Duration::from_secs_f64(own_age.max(0.0)),
        query_stats,
    })
}

/// `pg_stat_statements` when it is installed and loaded, else `pg_stat_database`.
#[allow(clippy::cast_sign_loss, clippy::cast_precision_loss)]
fn query_stats(client: &mut postgres::Client) -> Result<Option<QueryStats>, postgres::Error> {
    // to_jsonb reads columns that older servers lack (active_time) as null instead of failing.
    let db = client.query_typed_one(
        "SELECT (xact_commit + xact_rollback)::int8, xact_rollback::int8, \
                (to_jsonb(d) ->> 'active_time')::float8 \
         FROM pg_stat_database d WHERE datname = current_database()",
        &[],
    )?;
    let (transactions, rollbacks, active_ms): (i64, i64, Option<f64>) = (db.get(0), db.get(1), db.get(2));
    let installed: bool = client
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
            &[],
        )?
        .get(0);
    if installed {
        let statements = client.query_typed_one(
            "SELECT coalesce(sum(calls), 0)::int8, \
                    coalesce(sum(coalesce((to_jsonb(s) ->> 'total_exec_time'), (to_jsonb(s) ->> 'total_time'))::float8), 0) \
             FROM pg_stat_statements s WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        );
        match statements {
            Ok(row) => {
                let (calls, total_ms): (i64, f64) = (row.get(0), row.get(1));
                return Ok(Some(QueryStats {
                    source: QuerySource::PgStatStatements,
                    total_queries: calls.max(0) as u64,
                    errors: rollbacks.max(0) as u64,
                    avg_query_time_ms: (calls > 0).then(|| total_ms / calls as f64),
                }));
            }
            Err(e) => log::info!(
                "pg_stat_statements is installed but cannot be read ({}); using pg_stat_database",
                describe(&e)
            ),
        }
    }
    Ok(Some(QueryStats {
        source: QuerySource::PgStatDatabase,
        total_queries: transactions.max(0) as u64,
        errors: rollbacks.max(0) as u64,
        avg_query_time_ms: active_ms.filter(|_| transactions > 0).map(|ms| ms / transactions as f64),
    }))
}

/// Reads PgBouncer's admin console (`SHOW POOLS`, `SHOW STATS`, `SHOW DATABASES`, simple query protocol
/// only) as the target's user, who must be in its `admin_users` or `stats_users` (the ini that
/// `pgconn pgbouncer-ini` renders puts the database user in both). Bounded like [`ServerProbe`].
pub struct PgBouncerProbe {
    settings: Settings,
    client: Option<postgres::Client>,
    deadline: Duration,
}

impl PgBouncerProbe {
    /// A probe of the PgBouncer the settings route through; `None` for the direct strategy.
    pub fn new(settings: &Settings) -> Option<PgBouncerProbe> {
        if settings.strategy != Strategy::PgBouncer {
            return None;
        }
        let mut settings = settings.clone();
        "pgbouncer".clone_into(&mut settings.target.dbname);
        settings.target.application_name = Some(MONITOR_APPLICATION_NAME.to_owned());
        let deadline = settings.connect_timeout + PROBE_STATEMENT_TIMEOUT;
        Some(PgBouncerProbe { settings, client: None, deadline })
    }

    /// Probes the admin console; never fails: an error is part of the view.
    pub fn probe(&mut self) -> PgBouncerView {
        let client = self.client.take();
        let settings = self.settings.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        let spawned = thread::Builder::new().name("pgconn-pgbouncer-probe".into()).spawn(move || {
            let _ = tx.send(read_pgbouncer(client, &settings));
        });
        if let Err(e) = spawned {
            return PgBouncerView::Unreachable { message: format!("cannot start the probe thread: {e}") };
        }
        match rx.recv_timeout(self.deadline) {
            Ok((client, view)) => {
                self.client = client;
                view
            }
            Err(_) => PgBouncerView::Unreachable {
                message: format!("PgBouncer did not answer within {}s", self.deadline.as_secs()),
            },
        }
    }
}

fn read_pgbouncer(
    client: Option<postgres::Client>,
    settings: &Settings,
) -> (Option<postgres::Client>, PgBouncerView) {
    let mut client = match client.filter(|c| !c.is_closed()) {
        Some(client) => client,
        None => match pgconn_pool::connect(settings) {
            Ok(client) => client,
            Err(e) => return (None, PgBouncerView::Unreachable { message: e.with_cause() }),
        },
    };
    let mut show = |what: &str| -> Result<Vec<PgBouncerRow>, postgres::Error> {
        let messages = client.simple_query(&format!("SHOW {what}"))?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            })
            .map(|row| {
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, column)| (column.name().to_owned(), value(row.get(i))))
                    .collect::<PgBouncerRow>()
            })
            .filter(|row| {
                PgBouncerSnapshot::text(row, "database") != "pgbouncer"
                    && PgBouncerSnapshot::text(row, "name") != "pgbouncer"
            })
            .collect())
    };
    let snapshot = (|| {
        Ok::<_, postgres::Error>(PgBouncerSnapshot {
            pools: show("POOLS")?,
            stats: show("STATS")?,
            databases: show("DATABASES")?,
        })
    })();
    match snapshot {
        Ok(snapshot) => (Some(client), PgBouncerView::Reached(snapshot)),
        Err(e) => {
            let keep = !client.is_closed();
            (keep.then_some(client), PgBouncerView::Unreachable { message: describe(&e) })
        }
    }
}

/// A `SHOW` value: a number when it is one, else text; `null` for NULL.
fn value(text: Option<&str>) -> serde_json::Value {
    match text {
        None => serde_json::Value::Null,
        Some(text) => text
            .parse::<i64>()
            .map(serde_json::Value::from)
            .or_else(|_| text.parse::<f64>().map(serde_json::Value::from))
            .unwrap_or_else(|_| serde_json::Value::from(text)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::value;

    proptest! {
        /// Whatever PgBouncer's admin console sends, reading a value never panics, numbers come back as
        /// numbers and anything else as the same text.
        #[test]
        fn any_admin_console_value_is_read(text in any::<Option<String>>(), n in any::<i64>(), x in -1e12_f64..1e12) {
            let read = value(text.as_deref());
            match &text {
                None => prop_assert!(read.is_null()),
                Some(t) if t.parse::<f64>().is_err() => prop_assert_eq!(read.as_str(), Some(t.as_str())),
                Some(_) => prop_assert!(read.is_number() || read.is_null()),
            }
            prop_assert_eq!(value(Some(&n.to_string())).as_i64(), Some(n));
            prop_assert_eq!(value(Some(&x.to_string())).as_f64(), Some(x));
        }
    }
}
