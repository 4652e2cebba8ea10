//! `PooledConn::client()`: the connection's own `pgconn_pool::Client` (`tokio-postgres` driven on the
//! calling thread), with `postgres::Client`'s methods, `COPY` included.

use std::io::{Read as _, Write as _};

use pgconn_pool::Pool;
use pgconn_tests::settings;
use postgres::error::SqlState;

fn pool() -> Pool {
    Pool::new(&settings(&[("DB_POOL_MAX_SIZE", "1"), ("DB_APPLICATION_NAME", "client_copy")])).unwrap()
}

#[test]
fn copy_in_and_out_go_through_and_a_failed_or_abandoned_copy_leaves_the_connection_usable() {
    let pool = pool();
    let mut conn = pool.get().unwrap();
    let client = conn.client();
    client.batch_execute("CREATE TEMP TABLE copied (id int, name text)").unwrap();
    // More than one chunk (4 KiB) of rows.
    let mut writer = client.copy_in("COPY copied FROM STDIN").unwrap();
    for i in 0..10_000 {
        writeln!(writer, "{i}\tname {i}").unwrap();
    }
    assert_eq!(writer.finish().unwrap(), 10_000);

    let mut out = String::new();
    client
        .copy_out("COPY (SELECT * FROM copied ORDER BY id) TO STDOUT")
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out.lines().count(), 10_000);
    assert!(out.starts_with("0\tname 0\n1\tname 1\n"), "{}", &out[..40]);
    assert!(out.ends_with("9999\tname 9999\n"));

    // A malformed row: the server's error at finish, and nothing copied.
    let mut writer = client.copy_in("COPY copied FROM STDIN").unwrap();
    writer.write_all(b"not a number\tx\n").unwrap();
    let error = writer.finish().unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION), "{error}");
    // A writer dropped without finish aborts its copy.
    let mut writer = client.copy_in("COPY copied FROM STDIN").unwrap();
    writer.write_all(b"10000\tdropped\n").unwrap();
    drop(writer);
    let count: i64 = client.query_one("SELECT count(*) FROM copied", &[]).unwrap().get(0);
    assert_eq!(count, 10_000);
    // The statement methods, with postgres::Client's signatures.
    let statement = client.prepare("SELECT name FROM copied WHERE id = $1").unwrap();
    let name: String = client.query_one(&statement, &[&42_i32]).unwrap().get(0);
    assert_eq!(name, "name 42");
    assert_eq!(client.execute("DELETE FROM copied WHERE id < $1", &[&10_i32]).unwrap(), 10);
    assert!(client.query_opt(&statement, &[&1_i32]).unwrap().is_none());
    drop(conn);
    // What was done through the client is reset on return: the temporary table is gone.
    let mut conn = pool.get().unwrap();
    let gone = conn.query_one("SELECT to_regclass('pg_temp.copied') IS NULL", &[]).unwrap();
    assert!(gone.get::<_, bool>(0));
}

#[test]
fn a_connection_holds_one_file_descriptor_its_socket() {
    let pool = Pool::new(&settings(&[("DB_POOL_MAX_SIZE", "4"), ("DB_POOL_MIN_IDLE", "0")])).unwrap();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Other tests open and close connections in this process meanwhile: the smallest growth over a few
    // tries is this pool's own.
    let grew = (0..5)
        .map(|_| {
            let before = fds();
            let held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
            let after = fds();
            drop(held);
            after.saturating_sub(before)
        })
        .min()
        .unwrap();
    // The pool's first connection was open before; three held means two or three new ones, one descriptor
    // each (a `postgres::Client` takes four: its runtime's two eventpolls and an eventfd besides).
    assert!(grew <= 3, "{grew} descriptors for at most 3 connections");
}

/// Runs `pg_sleep(30)` on `conn` and cancels it from another thread with the client's cancel token: the
/// statement fails as cancelled within seconds, and the connection still works.
pub(crate) fn cancels_from_another_thread(conn: &mut pgconn_pool::PooledConn) {
    let token = conn.client().cancel_token();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        token.cancel_query()
    });
    let started = std::time::Instant::now();
    let error = conn.client().batch_execute("SELECT pg_sleep(30)").unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    canceller.join().unwrap().unwrap();
    let one: i32 = conn.client().query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
}

#[test]
fn a_cancel_token_cancels_the_running_statement_from_another_thread() {
    cancels_from_another_thread(&mut pool().get().unwrap());
    // Over a Unix socket too.
    let url = pgconn_tests::unix_socket_url("");
    let settings = pgconn_config::Settings::from_vars([("DATABASE_URL", url.as_str())]).unwrap();
    cancels_from_another_thread(&mut Pool::new(&settings).unwrap().get().unwrap());
}

#[test]
fn a_transaction_on_the_client_commits_or_rolls_back_when_dropped() {
    let pool = pool();
    let mut conn = pool.get().unwrap();
    let client = conn.client();
    client.batch_execute("CREATE TEMP TABLE kept (n int)").unwrap();
    let count = |client: &mut pgconn_pool::Client| -> i64 {
        client.query_one("SELECT count(*) FROM kept", &[]).unwrap().get(0)
    };
    let mut tx = client.transaction().unwrap();
    tx.execute("INSERT INTO kept VALUES (1)", &[]).unwrap();
    // COPY in a transaction, through the client it derefs to.
    let mut writer = tx.copy_in("COPY kept FROM STDIN").unwrap();
    writer.write_all(b"2\n3\n").unwrap();
    assert_eq!(writer.finish().unwrap(), 2);
    tx.commit().unwrap();
    assert_eq!(count(client), 3);
    // Dropped without a commit (an early return, a `?`): rolled back.
    {
        let mut tx = client.transaction().unwrap();
        tx.execute("INSERT INTO kept VALUES (4)", &[]).unwrap();
    }
    assert_eq!(count(client), 3);
    let mut tx = client.transaction().unwrap();
    tx.execute("INSERT INTO kept VALUES (5)", &[]).unwrap();
    tx.rollback().unwrap();
    assert_eq!(count(client), 3);
    // A transaction inside one is a savepoint: its rollback keeps the outer work, its drop too, and the
    // outer rollback takes what the inner commit released.
    let mut outer = client.transaction().unwrap();
    outer.execute("INSERT INTO kept VALUES (6)", &[]).unwrap();
    let mut inner = outer.transaction().unwrap();
    inner.execute("INSERT INTO kept VALUES (7)", &[]).unwrap();
    inner.rollback().unwrap();
    {
        let mut inner = outer.transaction().unwrap();
        inner.execute("INSERT INTO kept VALUES (8)", &[]).unwrap();
    }
    let mut inner = outer.transaction().unwrap();
    inner.execute("INSERT INTO kept VALUES (9)", &[]).unwrap();
    inner.commit().unwrap();
    assert_eq!(count(&mut outer), 5, "6 and 9 inside, 7 and 8 rolled back");
    outer.rollback().unwrap();
    assert_eq!(count(client), 3);
    // Out of any transaction: a savepoint has nothing to be in.
    let outside = client.batch_execute("SAVEPOINT s").unwrap_err();
    assert_eq!(outside.code(), Some(&SqlState::NO_ACTIVE_SQL_TRANSACTION), "{outside}");
}
