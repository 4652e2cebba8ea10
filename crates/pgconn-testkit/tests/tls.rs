//! A throwaway cluster with TLS on, checked with libpq (`psql`), the reference for `sslmode`.
//!
//! Needs the PostgreSQL server binaries (see `find_bindir`), not `cargo xtask test`'s environment.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::Duration;

use pgconn_testkit::{ADMIN_USER, Cluster, ClusterOptions, Psql, ServerUser, ShutdownMode, TestCa};

/// `psql` as the superuser with `conninfo` added: `Ok(whether the session uses TLS)`, or `Err(its message)`.
fn ssl_in_use(cluster: &Cluster, conninfo: &str) -> Result<String, String> {
    let info = cluster.info();
    let conninfo = format!("port={} user={ADMIN_USER} dbname=postgres {conninfo}", info.port);
    // No client certificate from ~/.postgresql.
    let env = [("PGSSLCERT", "/nonexistent"), ("PGSSLKEY", "/nonexistent")];
    let psql = Psql {
        bindir: &info.bindir,
        url: &conninfo,
        password: None,
        timeout: Duration::from_secs(30),
        env: &env,
    };
    psql.run("select ssl from pg_stat_ssl where pid = pg_backend_pid()").map_err(|e| format!("{e:#}"))
}

#[test]
fn a_tls_cluster_serves_a_localhost_certificate_signed_by_its_ca() {
    let mut cluster = Cluster::start_temp(&ClusterOptions::default().with_tls()).unwrap_or_else(|err| {
        panic!("cannot start a throwaway PostgreSQL (are the server binaries installed?): {err:#}")
    });
    let ca = cluster.ca_file().expect("a TLS cluster has a CA file");
    assert!(ca.starts_with(cluster.dir()));

    // The key belongs to the server user and nobody else can read it (PostgreSQL refuses it otherwise).
    let key = std::fs::metadata(cluster.data_dir().join("server.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    if let ServerUser::Other { uid, .. } = cluster.user() {
        assert_eq!(key.uid(), uid);
    }

    let ca = ca.display();
    let full = |host: &str| format!("host={host} sslmode=verify-full sslrootcert={ca}");
    assert_eq!(ssl_in_use(&cluster, &full("localhost")), Ok("t".to_owned()));
    let error = ssl_in_use(&cluster, &full("127.0.0.1")).expect_err("the certificate names localhost only");
    assert!(error.contains("127.0.0.1"), "{error}");
    assert_eq!(
        ssl_in_use(&cluster, &format!("host=127.0.0.1 sslmode=verify-ca sslrootcert={ca}")),
        Ok("t".to_owned())
    );
    assert_eq!(ssl_in_use(&cluster, "host=127.0.0.1 sslmode=disable"), Ok("f".to_owned()));

    // Another CA did not sign the server's certificate.
    let other = cluster.dir().join("other-ca.crt");
    TestCa::new("another CA").unwrap().write_cert(&other).unwrap();
    let error =
        ssl_in_use(&cluster, &format!("host=localhost sslmode=verify-ca sslrootcert={}", other.display()))
            .expect_err("a CA that did not sign the certificate is refused");
    assert!(error.contains("certificate verify failed"), "{error}");

    // The certificate lives in the data directory: a restart keeps TLS on.
    cluster.restart(ShutdownMode::Fast).unwrap();
    assert_eq!(ssl_in_use(&cluster, &full("localhost")), Ok("t".to_owned()));

    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!Path::new(&dir).exists());
}

#[test]
fn without_the_option_there_is_no_tls_and_no_ca_file() {
    let cluster = Cluster::start_temp(&ClusterOptions::default()).unwrap();
    assert_eq!(cluster.ca_file(), None);
    let error = ssl_in_use(&cluster, "host=127.0.0.1 sslmode=require").expect_err("ssl is off");
    assert!(error.contains("SSL"), "{error}");
    assert_eq!(ssl_in_use(&cluster, "host=127.0.0.1 sslmode=prefer"), Ok("f".to_owned()));
}
