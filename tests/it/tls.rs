//! TLS as libpq's `sslmode` means it, against private clusters with `ssl = on` (a certificate for
//! `localhost` only, signed by the cluster's own CA) and with ssl off, and through the shared PgBouncer
//! (no TLS).

use std::path::Path;
use std::time::{Duration, Instant};

use pgconn_config::Settings;
use pgconn_pool::{Error, ErrorKind, Pool};
use pgconn_tests::{Cluster, ClusterOptions, private_cluster, testkit::TestCa};

/// The app role's URL to `cluster` at `host`, with the query `params` (`sslmode=...&...`).
fn url(cluster: &Cluster, host: &str, params: &str) -> String {
    let url = cluster.info().database_url().replacen("@127.0.0.1:", &format!("@{host}:"), 1);
    format!("{url}?{params}")
}

/// A small pool for `url`, or why there is none.
fn pool(url: &str) -> Result<Pool, Error> {
    let settings = Settings::from_vars([
        ("DATABASE_URL", url),
        ("DB_POOL_MAX_SIZE", "2"),
        ("DB_POOL_MIN_IDLE", "1"),
        ("DB_CONNECT_TIMEOUT", "10"),
    ])
    .unwrap_or_else(|e| panic!("invalid test settings: {e}"));
    Pool::new(&settings)
}

/// Whether a pooled connection to `url` uses TLS (`pg_stat_ssl`), asked on two checkouts.
#[track_caller]
fn check_ssl(url: &str, expected: bool) {
    let pool = pool(url).unwrap_or_else(|e| panic!("no pool for {}: {e}", redact(url)));
    for _ in 0..2 {
        let mut conn = pool.get().unwrap();
        let row = conn.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap();
        assert_eq!(row.get::<_, bool>(0), expected, "pg_stat_ssl.ssl with {}", redact(url));
    }
}

/// The error of building a pool for `url`, checked to be `kind` and to contain each of `needles`, and
/// never the password.
#[track_caller]
fn check_refused(cluster: &Cluster, url: &str, kind: ErrorKind, needles: &[&str]) -> String {
    let error = pool(url).err().unwrap_or_else(|| panic!("a pool for {} must be refused", redact(url)));
    let message = format!("{error}");
    assert_eq!(error.kind(), kind, "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} missing from: {message}");
    }
    assert!(!message.contains(&cluster.info().password), "the password leaked: {message}");
    message
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) => format!("{}***{}", &url[..start + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

fn ca_param(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

#[test]
fn every_sslmode_against_a_server_with_tls() {
    let cluster = private_cluster(&ClusterOptions::default().with_tls());
    let ca = cluster.ca_file().expect("a TLS cluster has a CA file");
    let ca = ca_param(&ca);
    let other_ca = cluster.dir().join("other-ca.crt");
    TestCa::new("a CA the server does not know").unwrap().write_cert(&other_ca).unwrap();
    let other_ca = ca_param(&other_ca);

    check_ssl(&url(&cluster, "127.0.0.1", "sslmode=disable"), false);
    check_ssl(&url(&cluster, "127.0.0.1", "sslmode=allow"), true);
    check_ssl(&url(&cluster, "127.0.0.1", "sslmode=prefer"), true);
    check_ssl(&url(&cluster, "127.0.0.1", ""), true); // prefer is the default
    check_ssl(&url(&cluster, "127.0.0.1", "sslmode=require"), true);
    check_ssl(&url(&cluster, "127.0.0.1", &format!("sslmode=verify-ca&{ca}")), true);
    check_ssl(&url(&cluster, "localhost", &format!("sslmode=verify-ca&{ca}")), true);
    check_ssl(&url(&cluster, "localhost", &format!("sslmode=verify-full&{ca}")), true);
    // Under prefer and require the certificate is not checked: a CA that did not sign it changes nothing
    // for prefer. With sslrootcert, require checks the chain as verify-ca does (libpq does the same).
    check_ssl(&url(&cluster, "127.0.0.1", &format!("sslmode=prefer&{other_ca}")), true);
    check_ssl(&url(&cluster, "127.0.0.1", &format!("sslmode=require&{ca}")), true);

    // verify-full: the certificate names localhost, not 127.0.0.1.
    let message = check_refused(
        &cluster,
        &url(&cluster, "127.0.0.1", &format!("sslmode=verify-full&{ca}")),
        ErrorKind::ConnectFailed,
        &["TLS: ", "certificate not valid for name \"127.0.0.1\"", "localhost", "verify-full"],
    );
    assert!(message.starts_with("cannot connect to pgconn_app@127.0.0.1:"), "{message}");

    // A CA that did not sign the server's certificate.
    for (host, mode) in [("127.0.0.1", "verify-ca"), ("localhost", "verify-full"), ("127.0.0.1", "require")] {
        check_refused(
            &cluster,
            &url(&cluster, host, &format!("sslmode={mode}&{other_ca}")),
            ErrorKind::ConnectFailed,
            &["TLS: the server's certificate is not signed by the CA certificate in sslrootcert", mode],
        );
    }

    // SCRAM over TLS: the right password logs in (above), a wrong one is refused at once.
    let wrong = url(&cluster, "localhost", &format!("sslmode=verify-full&{ca}")).replacen("%40", "%41", 1);
    let started = Instant::now();
    check_refused(&cluster, &wrong, ErrorKind::AuthFailed, &["authentication failed"]);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // A dedicated connection takes the same TLS configuration.
    let settings = Settings::from_vars([(
        "DATABASE_URL",
        url(&cluster, "localhost", &format!("sslmode=verify-full&{ca}")),
    )])
    .unwrap();
    let mut client = pgconn_pool::connect(&settings).unwrap();
    let ssl: bool =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap().get(0);
    assert!(ssl);
}

#[test]
fn a_server_without_tls() {
    let cluster = private_cluster(&ClusterOptions::default());
    check_ssl(&url(&cluster, "127.0.0.1", "sslmode=prefer"), false);
    check_ssl(&url(&cluster, "127.0.0.1", "sslmode=allow"), false);
    for params in
        ["sslmode=require".to_owned(), format!("sslmode=verify-full&{}", ca_file_of_another_ca(&cluster))]
    {
        check_refused(
            &cluster,
            &url(&cluster, "localhost", &params),
            ErrorKind::ConnectFailed,
            &["TLS: the server does not accept TLS connections", "requires TLS"],
        );
    }
}

/// `sslrootcert=` a CA file in the cluster's directory (the server has no certificate at all).
fn ca_file_of_another_ca(cluster: &Cluster) -> String {
    let path = cluster.dir().join("some-ca.crt");
    TestCa::new("some CA").unwrap().write_cert(&path).unwrap();
    ca_param(&path)
}

#[test]
fn a_missing_ca_file_is_refused_when_the_pool_is_built() {
    let missing = "/nonexistent/pgconn/root.crt";
    let started = Instant::now();
    let error =
        pool(&format!("postgresql://app:secret@localhost:1/app?sslmode=verify-full&sslrootcert={missing}"))
            .err()
            .expect("no pool without its CA file");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("DATABASE_URL's sslrootcert {missing}: cannot be read")),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    // Refused before any connect: port 1 would be refused at TCP level instead.
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn through_pgbouncer_its_own_sslmode_applies() {
    let bouncer = pgconn_tests::pgbouncer_url();
    let separator = if bouncer.contains('?') { '&' } else { '?' };
    let settings = |url: String| {
        Settings::from_vars([
            ("DATABASE_URL".to_owned(), pgconn_tests::database_url()),
            ("USE_PGBOUNCER".to_owned(), "true".to_owned()),
            ("PGBOUNCER_URL".to_owned(), url),
            ("DB_POOL_MIN_IDLE".to_owned(), "1".to_owned()),
        ])
        .unwrap()
    };
    // PgBouncer 1.18 without TLS answers no to the TLS request: prefer (the default) goes on in plain.
    let pool = Pool::new(&settings(bouncer.clone())).unwrap();
    let rows = pool.get().unwrap().simple_query("SELECT 1").unwrap();
    assert!(!rows.is_empty());
    let error = Pool::new(&settings(format!("{bouncer}{separator}sslmode=require")))
        .err()
        .expect("PgBouncer has no TLS");
    assert_eq!(error.kind(), ErrorKind::ConnectFailed, "{error}");
    assert!(error.to_string().contains("TLS: the server does not accept TLS connections"), "{error}");
}
