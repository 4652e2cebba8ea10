//! What a connection's statements may have left behind: an open or failed transaction, changed session
//! state. The pool tracks both from the statements it sends, so that a returned connection that cannot
//! have changed anything goes back without a round trip, and one that may have is reset or closed.
//!
//! Why track rather than ask: PostgreSQL says after every statement whether a transaction is open (the
//! status byte of `ReadyForQuery`: idle, in transaction, failed), but `tokio-postgres` reads that byte and
//! throws it away, and neither it nor `postgres` lets the pool see the socket's bytes. Asking the server at
//! return (`SELECT` something) would cost every checkout a round trip. So the pool keeps the status
//! itself, from the statements that move it (`BEGIN`, `COMMIT`, `ROLLBACK`, ...) and from whether each
//! call succeeded; where it cannot tell (a failed multi-statement string, the `client()` escape hatch) it
//! says [`TxStatus::Unknown`], and an unknown connection is rolled back on return, which is harmless when
//! no transaction was open.
//!
//! Session state is judged the same way, erring towards "changed": a statement counts as clean only when
//! it starts with a keyword that cannot change session state and calls none of the functions that do
//! (`set_config`, the session advisory locks). What it cannot see: a user-defined function that itself
//! runs `SET` or creates a temporary table, and the sequence state `currval`/`lastval` that every
//! `nextval` leaves (HikariCP and pgx do not reset that either).

use crate::sql::{contains_call, statements};

/// A connection's transaction status, as the pool knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxStatus {
    /// No transaction open: what a new connection is in.
    Idle,
    /// A transaction is open (`BEGIN` ran).
    InTransaction,
    /// A transaction is open and failed: every statement fails until `ROLLBACK`.
    Failed,
    /// The pool cannot tell (a failed multi-statement string, or the `client()` escape hatch was used).
    Unknown,
}

/// What one statement does to the transaction status when it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Nothing.
    None,
    /// Opens a transaction: `BEGIN`, `START TRANSACTION`, `COMMIT AND CHAIN`, `ROLLBACK TO SAVEPOINT`.
    Opens,
    /// Ends it: `COMMIT`, `END`, `ROLLBACK`, `ABORT`, `PREPARE TRANSACTION`.
    Ends,
}

/// What a failed call leaves of the transaction status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFailure {
    /// One statement (or none) that is not transaction control: an autocommit statement leaves no
    /// transaction; inside one, the transaction is now failed.
    Fails,
    /// Which of several failed, or what a failed `COMMIT` left, is not known.
    Unknown,
}

/// What a statement string may do to a connection: a few flags, copied with each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Effect {
    /// The last of its statements' steps that is not [`Step::None`] (what a success leaves), else `None`.
    last: Step,
    /// What a failure of it leaves.
    on_failure: OnFailure,
    /// The transaction status cannot be followed through it (a `BEGIN ATOMIC` function body).
    opaque: bool,
    /// It may change session state that outlives a transaction.
    pub(crate) changes_session: bool,
    /// It deallocates prepared statements (`DEALLOCATE`, `DISCARD ALL`): the statement cache is stale.
    pub(crate) drops_prepared: bool,
}

impl Effect {
    /// The effect of `code`, a statement string already stripped of comments and quoted text and lower-cased
    /// ([`crate::sql::strip`]).
    pub(crate) fn of(code: &str) -> Effect {
        let (mut last, mut count, mut plain) = (Step::None, 0_usize, true);
        let mut opaque = false;
        let mut changes_session = SESSION_FUNCTIONS.iter().any(|f| contains_call(code, f));
        let mut drops_prepared = false;
        for statement in statements(code) {
            let words: Vec<&str> = statement.split_whitespace().collect();
            let step = step(&words);
            if step != Step::None {
                last = step;
                plain = false;
            }
            count += 1;
            opaque |= words.windows(2).any(|w| w == ["begin", "atomic"]);
            changes_session |= changes_session_state(&words);
            drops_prepared |= matches!(words.as_slice(), ["deallocate", ..] | ["discard", "all", ..]);
        }
        Effect {
            last,
            on_failure: if plain && count <= 1 { OnFailure::Fails } else { OnFailure::Unknown },
            opaque,
            changes_session,
            drops_prepared,
        }
    }

    /// An effect the pool cannot follow: what the `client()` escape hatch may have done.
    pub(crate) fn anything() -> Effect {
        // A DEALLOCATE through it is found when a cached statement fails as gone (26000), and retried; in
        // PgBouncer's transaction and statement modes `PooledConn::client` empties the cache first.
        Effect {
            last: Step::None,
            on_failure: OnFailure::Unknown,
            opaque: true,
            changes_session: true,
            drops_prepared: false,
        }
    }
}

impl TxStatus {
    /// The status after a call with `effect` that succeeded (`ok`) or failed with the connection still
    /// open.
    pub(crate) fn after(self, effect: Effect, ok: bool) -> TxStatus {
        if effect.opaque {
            return TxStatus::Unknown;
        }
        if !ok {
            return match (effect.on_failure, self) {
                (OnFailure::Fails, TxStatus::InTransaction | TxStatus::Failed) => TxStatus::Failed,
                (OnFailure::Fails, status @ (TxStatus::Idle | TxStatus::Unknown)) => status,
                (OnFailure::Unknown, _) => TxStatus::Unknown,
            };
        }
        match effect.last {
            Step::None => self,
            Step::Opens => TxStatus::InTransaction,
            Step::Ends => TxStatus::Idle,
        }
    }
}

/// Functions whose effect outlives the transaction that called them.
const SESSION_FUNCTIONS: [&str; 6] = [
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "setseed",
];

/// Statements that start with these keywords change no session state by themselves (their functions and
/// temporary objects are looked at separately). Anything else counts as changing it.
const CLEAN_KEYWORDS: [&str; 39] = [
    "select",
    "insert",
    "update",
    "delete",
    "with",
    "values",
    "table",
    "merge",
    "begin",
    "start",
    "commit",
    "end",
    "abort",
    "rollback",
    "savepoint",
    "release",
    "show",
    "explain",
    "copy",
    "create",
    "alter",
    "drop",
    "truncate",
    "grant",
    "revoke",
    "comment",
    "analyze",
    "analyse",
    "vacuum",
    "refresh",
    "lock",
    "notify",
    "checkpoint",
    "reindex",
    "cluster",
    "fetch",
    "move",
    "close",
    "declare",
];

fn step(words: &[&str]) -> Step {
    let word = |i: usize| words.get(i).copied().unwrap_or("");
    let chained = words.windows(2).any(|w| w == ["and", "chain"]) && !words.contains(&"no");
    match word(0) {
        "begin" | "start" => Step::Opens,
        "commit" | "rollback" if word(1) == "prepared" => Step::None,
        "rollback" if word(1) == "to" => Step::Opens,
        "commit" | "end" | "abort" | "rollback" if chained => Step::Opens,
        "commit" | "end" | "abort" | "rollback" => Step::Ends,
        "prepare" if word(1) == "transaction" => Step::Ends,
        _ => Step::None,
    }
}

fn changes_session_state(words: &[&str]) -> bool {
    let word = |i: usize| words.get(i).copied().unwrap_or("");
    let first = match word(0).trim_start_matches('(') {
        "" => word(1),
        first => first,
    };
    let temporary = words.windows(2).any(|w| {
        matches!(w[1], "temp" | "temporary")
            && matches!(w[0], "create" | "into" | "replace" | "global" | "local")
    });
    match first {
        "set" => !matches!(word(1), "local" | "transaction" | "constraints"),
        "prepare" => word(1) != "transaction",
        "declare" => words.windows(2).any(|w| w == ["with", "hold"]),
        _ if temporary => true,
        keyword => !CLEAN_KEYWORDS.contains(&keyword),
    }
}

#[cfg(test)]
mod tests {
    use super::{Effect, TxStatus};
    use crate::sql::strip;

    fn effect(sql: &str) -> Effect {
        Effect::of(&strip(sql))
    }

    #[track_caller]
    fn check(from: TxStatus, sql: &str, ok: bool, expected: TxStatus) {
        assert_eq!(from.after(effect(sql), ok), expected, "{from:?} + {sql:?} (ok: {ok})");
    }

    #[track_caller]
    fn session(sql: &str, expected: bool) {
        assert_eq!(effect(sql).changes_session, expected, "{sql:?}");
    }

    #[test]
    fn transaction_control_moves_the_status() {
        use TxStatus::{Failed, Idle, InTransaction, Unknown};
        check(Idle, "BEGIN", true, InTransaction);
        check(Idle, "start transaction isolation level serializable", true, InTransaction);
        check(InTransaction, "COMMIT", true, Idle);
        check(Failed, "ROLLBACK", true, Idle);
        check(Failed, "end", true, Idle);
        check(Unknown, "ROLLBACK", true, Idle);
        check(Failed, "ROLLBACK TO SAVEPOINT a", true, InTransaction);
        check(InTransaction, "COMMIT AND CHAIN", true, InTransaction);
        check(InTransaction, "COMMIT AND NO CHAIN", true, Idle);
        check(InTransaction, "PREPARE TRANSACTION 'x'", true, Idle);
        check(Idle, "COMMIT PREPARED 'x'", true, Idle);
        check(Idle, "BEGIN; INSERT INTO t VALUES (1)", true, InTransaction);
        check(Idle, "BEGIN; INSERT INTO t VALUES (1); COMMIT", true, Idle);
        check(Idle, "/* BEGIN */ SELECT 'BEGIN'", true, Idle);
        check(Idle, "DO $$ BEGIN PERFORM 1; END $$", true, Idle);
    }

    #[test]
    fn failures_fail_the_transaction_or_leave_it_unknown() {
        use TxStatus::{Failed, Idle, InTransaction, Unknown};
        check(Idle, "INSERT INTO missing VALUES (1)", false, Idle);
        check(InTransaction, "INSERT INTO missing VALUES (1)", false, Failed);
        check(Failed, "SELECT 1", false, Failed);
        check(InTransaction, "COMMIT", false, Unknown);
        check(Idle, "BEGIN; INSERT INTO missing VALUES (1)", false, Unknown);
        check(Idle, "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END", true, Unknown);
        assert_eq!(InTransaction.after(Effect::anything(), true), Unknown);
    }

    #[test]
    fn plain_statements_leave_the_session_alone() {
        session("SELECT abalance FROM pgbench_accounts WHERE aid = $1", false);
        session("insert into t values ($1) returning id", false);
        session("UPDATE settings SET value = 1", false);
        session("WITH x AS (SELECT 1) DELETE FROM t USING x", false);
        session("(SELECT 1) UNION (SELECT 2)", false);
        session("SELECT temp FROM readings", false);
        session("SET LOCAL statement_timeout = 0", false);
        session("BEGIN; SET TRANSACTION READ ONLY; COMMIT", false);
        session("SELECT pg_advisory_xact_lock(1)", false);
        session("SELECT 'set_config(1)'", false);
        session("DECLARE c CURSOR FOR SELECT 1", false);
        session("CREATE TABLE t (id int)", false);
    }

    #[test]
    fn session_changes_are_seen() {
        for sql in [
            "SET search_path TO app",
            "set application_name = 'x'",
            "SET ROLE admin",
            "SET SESSION AUTHORIZATION bob",
            "RESET ALL",
            "SELECT set_config('search_path', 'x', false)",
            "SELECT pg_advisory_lock(1)",
            "CREATE TEMP TABLE t (id int)",
            "CREATE GLOBAL TEMPORARY TABLE t (id int)",
            "SELECT 1 INTO TEMP t",
            "LISTEN jobs",
            "PREPARE q AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "DO $$ BEGIN PERFORM set_config('a.b', '1', false); END $$",
            "CALL p()",
            "DISCARD ALL",
            "LOAD 'auto_explain'",
            "BEGIN; SET work_mem = '1GB'; COMMIT",
        ] {
            session(sql, true);
        }
    }
}
