//! A real throwaway cluster: start, fast and immediate restart on the same port, drop.
//!
//! Needs the PostgreSQL server binaries (see `find_bindir`), not `cargo xtask test`'s environment.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use pgconn_testkit::{Cluster, ClusterOptions, ConnInfo, Psql, ShutdownMode};

/// `select 1` and the server's port through `psql` as the superuser, over TCP to `admin_url()`.
fn answers(info: &ConnInfo) -> (String, String) {
    let text = psql(info, "select 1; select inet_server_port();");
    let mut lines = text.lines().map(str::to_owned);
    (lines.next().unwrap_or_default(), lines.next().unwrap_or_default())
}

/// `sql` through [`Psql`] as the superuser; its output.
fn psql(info: &ConnInfo, sql: &str) -> String {
    let url = info.admin_url();
    let psql =
        Psql { bindir: &info.bindir, url: &url, password: None, timeout: Duration::from_secs(30), env: &[] };
    psql.run(sql).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn restarts_fast_and_immediate_on_the_same_port_then_cleans_up() {
    let options = ClusterOptions::default().setting("max_connections", "20");
    let mut cluster = Cluster::start_temp(&options).unwrap_or_else(|err| {
        panic!("cannot start a throwaway PostgreSQL (are the server binaries installed?): {err:#}")
    });
    let info = cluster.info().clone();
    let dir = cluster.dir().to_path_buf();
    assert!(dir.join("data").join("PG_VERSION").is_file());
    let port = info.port.to_string();
    assert_eq!(answers(&info), ("1".to_owned(), port.clone()));

    let first = cluster.pid().expect("the server runs");
    cluster.restart(ShutdownMode::Fast).unwrap();
    let second = cluster.pid().expect("the server runs again");
    assert_ne!(first, second, "a restart starts a new postmaster");
    assert_eq!(cluster.info().port, info.port);
    assert_eq!(answers(&info), ("1".to_owned(), port.clone()));

    cluster.restart(ShutdownMode::Immediate).unwrap();
    let third = cluster.pid().expect("the server runs again");
    assert_ne!(second, third);
    assert_eq!(answers(&info), ("1".to_owned(), port.clone()));

    cluster.stop_server().unwrap();
    assert_eq!(cluster.pid(), None);
    assert!(dir.join("data").is_dir(), "stopping the server keeps the data");
    cluster.start_server().unwrap();
    assert_eq!(answers(&info), ("1".to_owned(), port));

    // The extra setting reached the server.
    assert_eq!(psql(&info, "show max_connections"), "20");

    let pid = cluster.pid().unwrap();
    drop(cluster);
    assert!(!dir.exists(), "dropping the cluster removes {}", dir.display());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "dropping the cluster stops the postmaster");
}
