//! A real streaming standby: base backup, streaming, read-only until promoted, dropped or swept.
//!
//! Needs the PostgreSQL server binaries (see `find_bindir`), not `cargo xtask test`'s environment.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use std::thread;
use std::time::{Duration, Instant};

use pgconn_testkit::{
    Cluster, ClusterOptions, ConnInfo, Inaccessible, Psql, ServerUser, ShutdownMode, find_bindir,
    is_postgres_for, remove_abandoned_clusters,
};

/// Runs `sql` through `psql` at `url`; `Ok(output)` (unaligned, no headers, trimmed) or `Err(its message)`.
fn psql(info: &ConnInfo, url: &str, sql: &str) -> Result<String, String> {
    let psql = Psql { bindir: &info.bindir, url, password: None, timeout: Duration::from_secs(30), env: &[] };
    psql.run(sql).map_err(|e| format!("{e:#}"))
}

#[track_caller]
fn start_temp() -> Cluster {
    Cluster::start_temp(&ClusterOptions::default()).unwrap_or_else(|err| {
        panic!("cannot start a throwaway PostgreSQL (are the server binaries installed?): {err:#}")
    })
}

#[test]
fn a_standby_streams_is_read_only_and_takes_writes_once_promoted() {
    let mut primary = start_temp();
    let app = |cluster: &Cluster, sql: &str| psql(cluster.info(), &cluster.info().database_url(), sql);
    app(&primary, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)").unwrap();

    let standby = primary.start_standby(&ClusterOptions::default().setting("work_mem", "5MB")).unwrap();
    let dir = standby.dir().to_path_buf();
    assert_ne!(standby.info().port, primary.info().port);
    assert_ne!(standby.info().socket_dir, primary.info().socket_dir);
    assert_eq!(standby.info().password, primary.info().password);
    assert!(dir.file_name().unwrap().to_string_lossy().starts_with("pgconn-test-"), "{}", dir.display());
    assert!(dir.join("data").join("standby.signal").is_file());
    assert!(standby.is_in_recovery().unwrap());
    assert!(!primary.is_in_recovery().unwrap());
    // The extra setting reached the standby, after the settings copied from the primary.
    assert_eq!(app(&standby, "SHOW work_mem").unwrap(), "5MB");

    // The app role logs in with the same password; the base backup's row is there; writes are refused.
    assert_eq!(app(&standby, "SELECT count(*) FROM t").unwrap(), "1");
    let refused = app(&standby, "INSERT INTO t VALUES (2)").unwrap_err();
    assert!(refused.contains("read-only transaction"), "{refused}");

    // It streams: a row written on the primary now shows up.
    app(&primary, "INSERT INTO t VALUES (3)").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app(&standby, "SELECT count(*) FROM t").unwrap() != "2" {
        assert!(Instant::now() < deadline, "the row written on the primary never reached the standby");
        thread::sleep(Duration::from_millis(20));
    }

    primary.stop_server_with(ShutdownMode::Immediate).unwrap();
    standby.promote().unwrap();
    assert!(!standby.is_in_recovery().unwrap());
    app(&standby, "INSERT INTO t VALUES (4)").unwrap();
    assert!(standby.promote().is_err(), "a primary cannot be promoted");

    let pid = standby.pid().unwrap();
    drop(standby);
    assert!(!dir.exists(), "dropping the standby removes {}", dir.display());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "dropping the standby stops its postmaster");
}

#[test]
fn a_standby_of_a_cluster_with_tls_serves_the_same_certificate() {
    let primary = Cluster::start_temp(&ClusterOptions::default().with_tls()).unwrap();
    let standby = primary.start_standby(&ClusterOptions::default()).unwrap();
    let ca = standby.ca_file().expect("the standby has the primary's CA file");
    assert_eq!(fs::read(&ca).unwrap(), fs::read(primary.ca_file().unwrap()).unwrap());
    let info = standby.info();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        info.admin_url().replace("127.0.0.1", "localhost"),
        ca.display()
    );
    assert_eq!(psql(info, &url, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").unwrap(), "t");
}

#[test]
fn a_standby_of_a_stopped_cluster_is_refused() {
    let mut primary = start_temp();
    primary.stop_server().unwrap();
    let parent = primary.dir().parent().unwrap().to_path_buf();
    let dir = parent.join(format!("pgconn-test-{}-standby-refused", std::process::id()));
    let error = primary.start_standby_in(&dir, &ClusterOptions::default()).unwrap_err();
    assert!(format!("{error:#}").contains("is stopped"), "{error:#}");
    assert!(!dir.exists());
}

/// Starts a cluster in `<parent>/<name>`, with `parent` (mode 0755) under the temporary directory, or
/// under `/tmp` when the server user cannot reach the temporary directory.
fn start_in_parent(parent_name: &str, name: &str, options: &ClusterOptions) -> (PathBuf, Cluster) {
    let (bindir, user) = (find_bindir().unwrap(), ServerUser::detect().unwrap());
    let mut bases = vec![std::env::temp_dir()];
    bases.push(PathBuf::from("/tmp"));
    for base in bases {
        let parent = base.join(parent_name);
        fs::create_dir_all(&parent).unwrap();
        // The umask may have taken bits away.
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).unwrap();
        match Cluster::start(&parent.join(name), &bindir, user, options) {
            Ok(cluster) => return (parent, cluster),
            Err(err) if err.is::<Inaccessible>() => fs::remove_dir_all(&parent).unwrap(),
            Err(err) => panic!("cannot start a throwaway PostgreSQL: {err:#}"),
        }
    }
    panic!("the server user cannot reach the temporary directory nor /tmp");
}

#[test]
fn an_abandoned_primary_and_standby_are_swept() {
    // Directories named as if by a process that died: no process has pid 0x7fff_ffff (beyond pid_max).
    let options = ClusterOptions::default();
    let parent_name = format!("pgconn-testkit-standby-sweep-{}", std::process::id());
    let (parent, primary) = start_in_parent(&parent_name, "pgconn-test-2147483647-0-1", &options);
    let standby = primary.start_standby_in(&parent.join("pgconn-test-2147483647-1-1"), &options).unwrap();
    let dirs = [primary.dir().to_path_buf(), standby.dir().to_path_buf()];
    let data_dirs = [primary.data_dir(), standby.data_dir()];
    let pids = [primary.detach().unwrap(), standby.detach().unwrap()];
    assert!(is_postgres_for(pids[1], &data_dirs[1]), "the standby looks like a cluster to the sweep");

    let mut removed = remove_abandoned_clusters(&parent).unwrap();
    removed.sort();
    assert_eq!(removed, dirs);
    for (pid, data_dir) in pids.into_iter().zip(&data_dirs) {
        assert!(!is_postgres_for(pid, data_dir), "the sweep stopped pid {pid}");
    }
    fs::remove_dir_all(&parent).unwrap();
}
