//! A real PgBouncer in front of a throwaway cluster: `select 1` through it, the userlist private, the
//! file-descriptor limit raised, a restart on the same port, nothing left after the drop.
//!
//! Needs PgBouncer, the PostgreSQL server binaries and the `pgconn` binary, whose path `cargo xtask test`
//! exports as `PGCONN_TEST_PGCONN_BIN`.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgconn_testkit::{
    APP_USER, Cluster, ClusterOptions, ConnInfo, PGCONN_BIN_VAR, PgBouncer, PgBouncerOptions, Psql, signal,
};

fn pgconn_bin() -> PathBuf {
    let path = std::env::var_os(PGCONN_BIN_VAR).unwrap_or_else(|| {
        panic!(
            "{PGCONN_BIN_VAR} is not set: this test renders pgbouncer.ini with the `pgconn` binary that \
             `cargo xtask test` builds and names; run it with `cargo xtask test`"
        )
    });
    PathBuf::from(path)
}

/// `select 1` and `current_user` through PgBouncer with psql as `pgconn_app`, the password in `PGPASSWORD`.
fn select_one(info: &ConnInfo, port: u16) -> String {
    let url = format!("postgresql://{APP_USER}@127.0.0.1:{port}/pgconn_test");
    let password = Some(info.password.as_str());
    let psql = Psql { bindir: &info.bindir, url: &url, password, timeout: Duration::from_secs(30), env: &[] };
    psql.run("select 1, current_user").unwrap_or_else(|e| panic!("psql through PgBouncer: {e:#}"))
}

/// Pids of running pgbouncer processes whose command line names `ini`.
fn pgbouncers_for(ini: &Path) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pgconn_testkit::is_pgbouncer_for(pid, ini))
        .collect()
}

/// The soft "Max open files" limit of `pid`, from `/proc/PID/limits`.
fn open_files_limit(pid: u32) -> String {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().to_owned()
}

#[test]
fn pgbouncer_in_front_of_a_cluster_serves_restarts_and_goes_away() {
    let pgconn = pgconn_bin();
    let cluster = Cluster::start_temp(&ClusterOptions::default()).unwrap_or_else(|err| {
        panic!("cannot start a throwaway PostgreSQL (are the server binaries installed?): {err:#}")
    });
    let info = cluster.info().clone();
    let mut bouncer = PgBouncer::in_front_of(&cluster, &pgconn, &[], &PgBouncerOptions::default())
        .unwrap_or_else(|err| panic!("cannot start PgBouncer in front of the cluster: {err:#}"));
    let port = bouncer.port();
    assert_ne!(port, info.port);
    assert_eq!(select_one(&info, port), "1|pgconn_app");

    // The ini is pgconn's and names the userlist, which is private and holds the cluster's password.
    let ini = bouncer.ini().to_path_buf();
    assert!(ini.starts_with(cluster.dir()), "{} is in the cluster directory", ini.display());
    let text = fs::read_to_string(&ini).unwrap();
    assert!(text.contains("rendered by `pgconn pgbouncer-ini`"), "{text}");
    assert!(!text.contains(&info.password), "the ini holds no password");
    let auth_file = &bouncer.info().auth_file;
    assert!(text.contains(&format!("auth_file = {}", auth_file.display())), "{text}");
    assert_eq!(fs::metadata(auth_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(bouncer.info().password, info.password);
    assert!(bouncer.info().database_url().ends_with(&format!("@127.0.0.1:{port}/pgconn_test")));
    assert!(!format!("{bouncer:?}").contains(&info.password), "Debug hides the password");

    // The soft limit on open files is the hard one, so thousands of clients are not capped at 1024.
    let pid = bouncer.pid().unwrap();
    let (_, hard) = signal::nofile_limits().unwrap();
    if hard != pgconn_testkit::libc::RLIM_INFINITY {
        assert_eq!(open_files_limit(pid), hard.to_string());
    }
    assert_eq!(pgbouncers_for(&ini), [pid]);

    bouncer.restart().unwrap();
    let second = bouncer.pid().unwrap();
    assert_ne!(pid, second, "a restart starts a new pgbouncer");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the old pgbouncer is gone");
    assert_eq!(bouncer.port(), port);
    assert_eq!(select_one(&info, port), "1|pgconn_app");

    bouncer.stop().unwrap();
    assert_eq!(bouncer.pid(), None);
    assert!(pgbouncers_for(&ini).is_empty());
    bouncer.start_again().unwrap();
    assert_eq!(select_one(&info, port), "1|pgconn_app");
    let third = bouncer.pid().unwrap();

    drop(bouncer);
    assert!(!Path::new(&format!("/proc/{third}")).exists(), "dropping PgBouncer stops it");
    assert!(pgbouncers_for(&ini).is_empty(), "no pgbouncer of ours remains");
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!dir.exists());
}

#[test]
fn the_callers_variables_reach_the_ini() {
    let pgconn = pgconn_bin();
    let cluster = Cluster::start_temp(&ClusterOptions::default()).unwrap();
    let env = [("PGBOUNCER_POOL_MODE", "session"), ("DB_STATEMENT_TIMEOUT", "1234")];
    let first = PgBouncer::in_front_of(&cluster, &pgconn, &env, &PgBouncerOptions::default()).unwrap();
    let text = fs::read_to_string(first.ini()).unwrap();
    assert!(text.contains("pool_mode = session"), "{text}");
    assert!(text.contains("SET statement_timeout = 1234"), "{text}");
    // The server-side statement timeout set by connect_query is what a client sees.
    let url = first.info().database_url();
    let psql = Psql {
        bindir: &cluster.info().bindir,
        url: &url,
        password: None,
        timeout: Duration::from_secs(30),
        env: &[],
    };
    assert_eq!(psql.run("show statement_timeout").unwrap_or_else(|e| panic!("{e:#}")), "1234ms");

    // A second PgBouncer in front of the same cluster gets a directory and a port of its own.
    let second = PgBouncer::in_front_of(&cluster, &pgconn, &[], &PgBouncerOptions::default()).unwrap();
    assert_ne!(first.dir(), second.dir());
    assert_ne!(first.port(), second.port());

    // An invalid configuration is `pgconn pgbouncer-ini`'s exit 2, reported with its message.
    let err = PgBouncer::in_front_of(
        &cluster,
        &pgconn,
        &[("PGBOUNCER_POOL_MODE", "bogus")],
        &PgBouncerOptions::default(),
    )
    .expect_err("an unknown pool mode is refused");
    let message = format!("{err:#}");
    assert!(message.contains("exit 2") && message.contains("PGBOUNCER_POOL_MODE"), "{message}");
}
