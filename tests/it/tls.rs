//! TLS as libpq's `sslmode` means it, against private clusters with `ssl = on` (a certificate for
//! `localhost` only, signed by the cluster's own CA) and with ssl off, and through the shared PgBouncer
//! (no TLS).

use std::path::Path;
use std::time::{Duration, Instant};

use pgconn_config::Settings;
use pgconn_pool::{Error, ErrorKind, Pool};
use pgconn_tests::testkit::TestCa;
use pgconn_tests::testkit::tls::{CERT_USER, self_signed_server_cert};
use pgconn_tests::{Cluster, ClusterOptions, private_cluster};

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
        &[
            "TLS: the server's certificate does not name the host connected to",
            "connected to \"127.0.0.1\", it names localhost",
            "verify-full",
        ],
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

    // A cancel request goes the same way, TLS and all.
    let verified = url(&cluster, "localhost", &format!("sslmode=verify-full&{ca}"));
    crate::client::cancels_from_another_thread(&mut pool(&verified).unwrap().get().unwrap());

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

#[test]
fn client_certificates_for_a_server_that_requires_them() {
    let cluster = private_cluster(&ClusterOptions::default().with_tls());
    let ca = ca_param(&cluster.ca_file().expect("a TLS cluster has a CA file"));
    let (cert, key) = cluster.client_cert_files().expect("a TLS cluster has a client certificate");
    // pg_hba.conf: hostssl all pgconn_cert 127.0.0.1/32 scram-sha-256 clientcert=verify-full
    let info = cluster.info();
    let mut admin = postgres::Client::connect(&info.admin_url(), postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {CERT_USER} LOGIN PASSWORD '{}'; GRANT ALL ON DATABASE \"{}\" TO {CERT_USER}",
            info.password.replace('\'', "''"),
            pgconn_tests::testkit::DATABASE
        ))
        .unwrap();
    let base = format!("{}&{ca}", url(&cluster, "localhost", "sslmode=verify-full")).replacen(
        &format!("//{}:", pgconn_tests::testkit::APP_USER),
        &format!("//{CERT_USER}:"),
        1,
    );
    assert!(base.contains(CERT_USER), "{base}");
    let with_cert = format!("{base}&sslcert={}&sslkey={}", cert.display(), key.display());

    let certified =
        pool(&with_cert).unwrap_or_else(|e| panic!("a client certificate signed by the server's CA: {e}"));
    let mut conn = certified.get().unwrap();
    let row =
        conn.query_one("SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(format!("/CN={CERT_USER}").as_str()));
    drop(conn);

    // Without the certificate: the server's own words.
    let message = check_refused(
        &cluster,
        &base,
        ErrorKind::AuthFailed,
        &["connection requires a valid client certificate", "sslcert/sslkey"],
    );
    assert!(!message.contains("Debug") && !message.contains("Other("), "{message}");

    // A certificate from a CA the server does not trust: the server ends the handshake.
    let stranger = TestCa::new("a CA the server does not know").unwrap();
    let (other_cert, other_key) = stranger.client_cert(CERT_USER).unwrap();
    let other_cert_path = cluster.dir().join("stranger.crt");
    let other_key_path = cluster.dir().join("stranger.key");
    std::fs::write(&other_cert_path, other_cert).unwrap();
    write_mode(&other_key_path, &other_key, 0o600);
    let refused = check_refused(
        &cluster,
        &format!("{base}&sslcert={}&sslkey={}", other_cert_path.display(), other_key_path.display()),
        ErrorKind::ConnectFailed,
        &["TLS: the server refused pgconn's client certificate (sslcert) with the alert"],
    );
    assert!(refused.contains("ssl_ca_file"), "{refused}");

    // A key others may read is refused before any connect, as libpq refuses it.
    let open_key = cluster.dir().join("open.key");
    write_mode(&open_key, &std::fs::read_to_string(&key).unwrap(), 0o644);
    let error = pool(&format!("{base}&sslcert={}&sslkey={}", cert.display(), open_key.display()))
        .err()
        .expect("a readable key is refused");
    assert!(error.to_string().contains("has mode 0644"), "{error}");
    assert!(error.to_string().contains("chmod 0600"), "{error}");
}

fn write_mode(path: &Path, content: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_self_signed_server_certificate_given_as_sslrootcert() {
    // The PostgreSQL documentation's recipe: `openssl req -new -x509 -subj "/CN=localhost"`: a CA
    // certificate, the name in its common name only.
    let mut cluster = private_cluster(&ClusterOptions::default().with_tls());
    let (cert, key) = self_signed_server_cert("localhost").unwrap();
    cluster.replace_server_cert(&cert, &key).unwrap();
    cluster.restart(pgconn_tests::testkit::ShutdownMode::Fast).unwrap();
    let pinned = cluster.dir().join("server-self-signed.crt");
    std::fs::write(&pinned, &cert).unwrap();
    let pinned = ca_param(&pinned);

    check_ssl(&url(&cluster, "localhost", &format!("sslmode=verify-full&{pinned}")), true);
    check_ssl(&url(&cluster, "127.0.0.1", &format!("sslmode=verify-ca&{pinned}")), true);
    check_ssl(&url(&cluster, "127.0.0.1", &format!("sslmode=require&{pinned}")), true);
    check_refused(
        &cluster,
        &url(&cluster, "127.0.0.1", &format!("sslmode=verify-full&{pinned}")),
        ErrorKind::ConnectFailed,
        &["TLS: the server's certificate does not name the host connected to"],
    );
    // The cluster's own CA did not sign it.
    let ca = ca_param(&cluster.ca_file().unwrap());
    let message = check_refused(
        &cluster,
        &url(&cluster, "localhost", &format!("sslmode=verify-full&{ca}")),
        ErrorKind::ConnectFailed,
        &["TLS: "],
    );
    assert!(!message.contains("Other(") && !message.contains("OtherError"), "a Debug string: {message}");
}

/// Set in the child that runs [`the_operating_systems_cas`] with `SSL_CERT_FILE` naming the cluster's CA.
const SYSTEM_CAS_CHILD: &str = "PGCONN_TEST_SYSTEM_CAS";

#[test]
fn the_operating_systems_cas() {
    let Some(port) = std::env::var(SYSTEM_CAS_CHILD).ok() else {
        // The OS's store is read from SSL_CERT_FILE when set: run the checks in a child process whose
        // store is this cluster's CA alone (the environment of this one is shared by every test).
        let cluster = private_cluster(&ClusterOptions::default().with_tls());
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new(exe)
            .args(["tls::the_operating_systems_cas", "--exact", "--nocapture", "--test-threads", "1"])
            .env(SYSTEM_CAS_CHILD, format!("{}", cluster.info().port))
            .env("PGCONN_TEST_SYSTEM_CAS_URL", url(&cluster, "localhost", "sslrootcert=system"))
            .env("SSL_CERT_FILE", cluster.ca_file().unwrap())
            .env("SSL_CERT_DIR", "/nonexistent")
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && text.contains("1 passed"), "the child failed:\n{text}");
        return;
    };
    let system = std::env::var("PGCONN_TEST_SYSTEM_CAS_URL").unwrap();
    assert!(!port.is_empty());
    // sslrootcert=system means verify-full: localhost is named by the certificate, 127.0.0.1 is not.
    check_ssl(&system, true);
    let settings = Settings::from_vars([("DATABASE_URL", system.as_str())]).unwrap();
    assert_eq!(settings.database.sslmode, pgconn_config::SslMode::VerifyFull);
    let by_address = system.replacen("@localhost:", "@127.0.0.1:", 1);
    let error = pool(&by_address).err().expect("verify-full by address is refused");
    assert!(error.to_string().contains("does not name the host"), "{error}");
}
