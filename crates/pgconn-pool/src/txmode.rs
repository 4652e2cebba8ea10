//! What PgBouncer's transaction mode cannot do, caught before it is sent where pgconn can see it.
//!
//! In transaction mode each transaction may run on a different server connection, and a server connection
//! serves other clients in between. Session state set by one client (a `SET`, a `LISTEN`, a session
//! advisory lock, an SQL `PREPARE`, a `WITH HOLD` cursor) stays on whichever server connection ran it:
//! lost for that client, leaked to the next. The check looks at the statement's leading keywords and for
//! the session advisory-lock functions, outside quotes and comments; it is a guard against the common
//! mistakes, not a parser.

use crate::sql::{contains_call, statements};

/// The mistake in `code` (a statement string already stripped by [`crate::sql::strip`]), if it is one
/// transaction pooling cannot honour: `(what, what to do instead)`.
pub(crate) fn mistake(code: &str) -> Option<(&'static str, &'static str)> {
    for statement in statements(code) {
        let words: Vec<&str> = statement.split_whitespace().take(3).collect();
        match (words.first().copied(), words.get(1).copied()) {
            (Some("set"), Some("local" | "transaction" | "constraints")) => {}
            (Some("set"), _) => {
                return Some((
                    "a session-level SET",
                    "use SET LOCAL inside a transaction, or set it for every server connection in \
                     pgbouncer.ini (connect_query)",
                ));
            }
            (Some("listen"), _) => {
                return Some((
                    "LISTEN",
                    "notifications need a session of their own: open a dedicated connection to PostgreSQL \
                     (pgconn_pool::connect with the direct settings)",
                ));
            }
            (Some("prepare"), _) => {
                return Some((
                    "an SQL PREPARE",
                    "let the pool's query API send unnamed statements, or prepare inside a transaction and \
                     DEALLOCATE before it ends",
                ));
            }
            (Some("declare"), _) if statement.contains("with hold") => {
                return Some(("a WITH HOLD cursor", "use a cursor without HOLD inside a transaction"));
            }
            _ => {}
        }
    }
    let session_locks = [
        "pg_advisory_lock",
        "pg_try_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock_shared",
    ];
    if session_locks.iter().any(|f| contains_call(code, f)) {
        return Some((
            "a session-level advisory lock",
            "use pg_advisory_xact_lock (released at the end of the transaction) inside a transaction",
        ));
    }
    None
}

/// With `PGBOUNCER_PREPARED_STATEMENTS=true` through PgBouncer in transaction mode: whether PgBouncer
/// handles named prepared statements itself, as 1.21 and later do with `max_prepared_statements` set: it
/// prepares them on the server under names of its own (`PGBOUNCER_1`, ...). A PgBouncer that passes the
/// client's name through (older than 1.21, or `max_prepared_statements = 0`) would run a statement on a
/// server connection that lacks it, or that holds another client's statement of the same name. Looked at
/// inside one transaction, which PgBouncer keeps on one server connection; the statement is closed and
/// the transaction rolled back before it ends. `target` names the PgBouncer in the error.
pub(crate) fn check_prepared_statements(
    client: &mut crate::Client,
    target: &str,
) -> Result<(), crate::Error> {
    const PROBE: &str = "SELECT 1 AS pgconn_prepared_statements_check";
    fn look(client: &mut crate::Client) -> Result<Vec<String>, postgres::Error> {
        let statement = client.prepare(PROBE)?;
        let sql = "SELECT name FROM pg_prepared_statements WHERE statement = $1";
        let rows = client.query_typed(sql, &[(&PROBE, postgres::types::Type::TEXT)])?;
        // Dropping it sends its Close ahead of the rollback, in this transaction.
        drop(statement);
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
    let names = client
        .batch_execute("BEGIN")
        .and_then(|()| {
            let names = look(client);
            // Rolled back whatever the look found, failed or not.
            let rolled_back = client.batch_execute("ROLLBACK");
            let names = names?;
            rolled_back.map(|()| names)
        })
        .map_err(|e| crate::Error::from_query(e, client.is_closed()))?;
    if names.is_empty() {
        // Not seen on the server inside the transaction: a pooler that prepares later. Taken on trust.
        log::info!("could not confirm that the PgBouncer at {target} handles named prepared statements");
    }
    // The driver names its statements s0, s1, ...; PgBouncer renames them.
    let drivers_own = |name: &String| {
        name.strip_prefix('s').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if names.iter().any(drivers_own) {
        return Err(crate::Error::Unsupported(format!(
            "PGBOUNCER_PREPARED_STATEMENTS=true, but the PgBouncer at {target} passes named prepared \
             statements through to PostgreSQL unchanged: it is older than 1.21, or its \
             max_prepared_statements is 0. A named statement would then run on a server connection that \
             lacks it, or that holds another client's statement of the same name. Set \
             max_prepared_statements in its pgbouncer.ini (PgBouncer 1.21 or later; `pgconn pgbouncer-ini` \
             writes it), or unset PGBOUNCER_PREPARED_STATEMENTS"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mistake;
    use crate::sql::strip;

    #[track_caller]
    fn check(sql: &str, expected: Option<&str>) {
        assert_eq!(mistake(&strip(sql)).map(|(what, _)| what), expected, "{sql}");
    }

    #[test]
    fn session_state_is_caught() {
        check("SET statement_timeout = 0", Some("a session-level SET"));
        check("  set search_path to app", Some("a session-level SET"));
        check("SET SESSION work_mem = '1GB'", Some("a session-level SET"));
        check("BEGIN; SET work_mem = '1GB'; COMMIT", Some("a session-level SET"));
        check("LISTEN jobs", Some("LISTEN"));
        check("PREPARE q AS SELECT 1", Some("an SQL PREPARE"));
        check("DECLARE c CURSOR WITH HOLD FOR SELECT 1", Some("a WITH HOLD cursor"));
        check("SELECT pg_advisory_lock(42)", Some("a session-level advisory lock"));
        check("select pg_try_advisory_lock (1, 2)", Some("a session-level advisory lock"));
    }

    #[test]
    fn transaction_scoped_and_quoted_text_is_not() {
        check("SET LOCAL statement_timeout = 0", None);
        check("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None);
        check("SELECT pg_advisory_xact_lock(42)", None);
        check("SELECT 'SET x = 1; LISTEN y; pg_advisory_lock(1)'", None);
        check("SELECT $$ SET a = 1 $$, $t$ pg_advisory_lock(1) $t$", None);
        check("-- SET x = 1\nSELECT 1", None);
        check("/* LISTEN x */ SELECT \"pg_advisory_lock\"", None);
        check("SELECT my_pg_advisory_lock(1)", None);
        check("DECLARE c CURSOR FOR SELECT 1", None);
        check("UPDATE settings SET value = 1", None);
        check("SELECT 1", None);
    }
}
