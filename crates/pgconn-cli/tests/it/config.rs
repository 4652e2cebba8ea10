//! `pgconn config`: the summary, the JSON interface, and exit code 2 with one line per problem.

use serde_json::{Value, json};

use crate::pgconn;

/// `pgconn config --json` for `env`, expecting exit 0.
#[track_caller]
fn config_json(env: &[(&str, &str)]) -> Value {
    let run = pgconn(&["config", "--json"], env);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

/// Checks the documented keys of the `database` object for `url`.
#[track_caller]
fn check_database(url: &str, expected: &Value) {
    let json = config_json(&[("DATABASE_URL", url)]);
    let database = &json["database"];
    let keys = ["host", "port", "dbname", "user", "password_set", "sslmode", "application_name"];
    let actual: serde_json::Map<String, Value> =
        keys.iter().map(|k| ((*k).to_owned(), database[*k].clone())).collect();
    assert_eq!(&Value::Object(actual), expected, "for {url}");
    assert_eq!(json["target"], json["database"], "direct strategy: the target is the database");
}

#[test]
fn every_url_form() {
    let db =
        |host: &str, port: u16, dbname: &str, user: &str, password_set: bool, sslmode: &str, app: Value| {
            json!({"host": host, "port": port, "dbname": dbname, "user": user, "password_set": password_set,
               "sslmode": sslmode, "application_name": app})
        };
    check_database(
        "postgresql://app:pw@db.internal/app",
        &db("db.internal", 5432, "app", "app", true, "prefer", Value::Null),
    );
    check_database(
        "postgres://app@db.internal:6000/app",
        &db("db.internal", 6000, "app", "app", false, "prefer", Value::Null),
    );
    check_database(
        "postgresql://app:p%40ss%3Aw%2Frd%3F%23@db/app",
        &db("db", 5432, "app", "app", true, "prefer", Value::Null),
    );
    check_database(
        "postgresql://app@[::1]:5433/app",
        &db("::1", 5433, "app", "app", false, "prefer", Value::Null),
    );
    check_database(
        "postgresql://app@%2Fvar%2Frun%2Fpostgresql/db",
        &db("/var/run/postgresql", 5432, "db", "app", false, "prefer", Value::Null),
    );
    check_database(
        "postgresql:///db?host=/var/run/postgresql&user=app",
        &db("/var/run/postgresql", 5432, "db", "app", false, "prefer", Value::Null),
    );
    // `pgconn config` reads the CA file as a pool would: it must be a real one.
    let ca = std::env::temp_dir().join(format!("pgconn-cli-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, TEST_CA).unwrap();
    check_database(
        &format!(
            "postgresql://app@db/app?sslmode=verify-full&sslrootcert={}&application_name=web",
            ca.display()
        ),
        &db("db", 5432, "app", "app", false, "verify-full", json!("web")),
    );
    check_database(
        "postgresql://db/x?user=app&port=7000&dbname=app&connect_timeout=3",
        &db("db", 7000, "app", "app", false, "prefer", Value::Null),
    );
}

#[test]
fn the_documented_keys() {
    let json = config_json(&[
        ("DATABASE_URL", "postgresql://app:pw@db.internal/app"),
        ("DB_CONN_MAX_AGE", "0"),
        ("DB_STATEMENT_TIMEOUT", "0"),
        ("DB_POOL_MAX_SIZE", "20"),
        ("DB_POOL_MIN_IDLE", "5"),
        ("USE_PGBOUNCER", "true"),
    ]);
    assert_eq!(json["strategy"], "pgbouncer");
    assert_eq!(json["persistent"], false);
    assert_eq!(json["conn_max_age_s"], 0);
    assert_eq!(json["connect_timeout_s"], 10);
    assert_eq!(json["statement_timeout_ms"], 0);
    assert_eq!(
        json["pool"],
        json!({"max_size": 20, "min_idle": 5, "checkout_timeout_ms": 5000, "leak_threshold_ms": 30000,
               "statement_cache": 100, "statement_cache_effective": 0})
    );
    assert_eq!(json["target"]["host"], "localhost");
    assert_eq!(json["target"]["port"], 6432);
    assert_eq!(json["target"]["dbname"], "app");
    assert_eq!(json["target"]["password_set"], true);
    assert_eq!(json["pgbouncer"]["pool_mode"], "transaction");

    let json = config_json(&[("DB_NAME", "app"), ("DB_USER", "app"), ("DB_CONN_MAX_AGE", "none")]);
    assert_eq!(json["strategy"], "direct");
    assert_eq!(json["persistent"], true);
    assert_eq!(json["conn_max_age_s"], Value::Null);
    assert_eq!(json["database"]["host"], "localhost");
    assert_eq!(json["database"]["password_set"], false);
}

#[test]
fn invalid_configuration_exits_2_with_a_line_per_problem() {
    let run = pgconn(
        &["config", "--json"],
        &[
            ("DATABASE_URL", "postgresql://app:Sup3rS3cret@db:0/app"),
            ("DB_CONNECT_TIMEOUT", "ten"),
            ("USE_PGBOUNCER", "maybe"),
        ],
    );
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "DATABASE_URL host 1 of the URL has a port that is not a number from 1 to 65535",
            "DB_CONNECT_TIMEOUT must be a whole number of seconds from 1 to 3600, got \"ten\"",
            "USE_PGBOUNCER must be true or false (also 1/0, yes/no, on/off), got \"maybe\"",
        ]
    );

    let run = pgconn(&["config"], &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.starts_with("DATABASE_URL or DB_NAME must be set"), "{}", run.stderr);
}

#[test]
fn the_password_is_never_printed() {
    let env = [
        ("DATABASE_URL", "postgresql://app:Sup3rS3cret@db/app"),
        ("USE_PGBOUNCER", "true"),
        ("RUST_LOG", "trace"),
    ];
    for args in [&["config"][..], &["config", "--json"]] {
        let run = pgconn(args, &env);
        assert_eq!(run.code, 0);
        assert!(!run.stdout.contains("Sup3rS3cret") && !run.stderr.contains("Sup3rS3cret"));
    }
    let run = pgconn(&["config"], &[("DB_NAME", "app"), ("DB_USER", "app"), ("DB_PASSWORD", "Sup3rS3cret")]);
    assert!(run.stdout.contains("password set"), "{}", run.stdout);
    assert!(!run.stdout.contains("Sup3rS3cret"));
}

#[test]
fn ignored_pgbouncer_variables_are_warned_about() {
    let run = pgconn(&["config"], &[("DATABASE_URL", "postgresql://app@db/app"), ("PGBOUNCER_HOST", "pgb")]);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stderr,
        "pgconn: warn: PGBOUNCER_HOST set but USE_PGBOUNCER is not true: the pool connects to PostgreSQL directly\n"
    );
    assert!(run.stdout.starts_with("strategy            direct\n"), "{}", run.stdout);
}

#[test]
fn libpq_variables_alone_and_where_each_value_came_from() {
    let env = [
        ("HOME", "/nonexistent/pgconn-cli-tests"),
        ("PGHOST", "db.internal"),
        ("PGPORT", "6000"),
        ("PGUSER", "alice"),
        ("PGPASSWORD", "Sup3rS3cret"),
        ("PGAPPNAME", "worker"),
    ];
    let json = config_json(&env);
    let database = &json["database"];
    assert_eq!((database["host"].as_str(), database["port"].as_u64()), (Some("db.internal"), Some(6000)));
    assert_eq!((database["user"].as_str(), database["dbname"].as_str()), (Some("alice"), Some("alice")));
    assert_eq!(database["password_set"], true);
    assert_eq!(
        database["sources"],
        json!({"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
               "application_name": "PGAPPNAME", "dbname": "default", "sslmode": "default"})
    );
    let run = pgconn(&["config"], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("sources"), "{}", run.stdout);
    assert!(run.stdout.contains("host from PGHOST"), "{}", run.stdout);
    assert!(!run.stdout.contains("Sup3rS3cret") && !run.stderr.contains("Sup3rS3cret"));

    // DATABASE_URL on top: what it says wins, the rest still comes from beneath.
    let json = config_json(&[env[0], env[2], env[5], ("DATABASE_URL", "postgresql://bob@db/app")]);
    assert_eq!(json["database"]["port"], 6000);
    assert_eq!(json["database"]["user"], "bob");
    assert_eq!(json["database"]["sources"]["user"], "DATABASE_URL");
    assert_eq!(json["database"]["sources"]["port"], "PGPORT");
}

#[test]
fn certificate_files_are_checked_by_config() {
    // sslrootcert=system with an operating system store that holds nothing.
    let run = pgconn(
        &["config"],
        &[
            ("HOME", "/nonexistent/pgconn-cli-tests"),
            ("DATABASE_URL", "postgresql://app@db/app?sslrootcert=system"),
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
            ("SSL_CERT_DIR", "/nonexistent/certs"),
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stderr.contains("DATABASE_URL's sslrootcert=system"), "{}", run.stderr);
    // A weaker sslmode with it is refused, as libpq 16 refuses it.
    let run = pgconn(
        &["config"],
        &[("DATABASE_URL", "postgresql://app@db/app?sslrootcert=system&sslmode=require")],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("use sslmode=verify-full"), "{}", run.stderr);
    // A client certificate that does not exist.
    let run = pgconn(
        &["config"],
        &[(
            "DATABASE_URL",
            "postgresql://app@db/app?sslmode=require&sslcert=/nonexistent/c.crt&sslkey=/nonexistent/c.key",
        )],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("sslcert /nonexistent/c.crt cannot be read"), "{}", run.stderr);
}

/// A self-signed CA certificate (ECDSA P-256, valid until 2126), made once with `openssl req -x509`.
const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----
MIIBrTCCAVOgAwIBAgIUPSNsHSBSda8UnoVPy51FxiAfG8AwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYcGdjb25uLXBvb2wgdW5pdCB0ZXN0IENBMCAXDTI2MTEyNzA3
MzIzN1oYDzIxMjYxMTAzMDczMjM3WjAjMSEwHwYDVQQDDBhwZ2Nvbm4tcG9vbCB1
bml0IHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQnSizSNC+5SJIH
q43D9oEghm4ClbDJ2uMWzoq44gST23h+HHe8honvjRroTXw8dzSBMMAI3OdD0DDU
7cHfJ3kno2MwYTAdBgNVHQ4EFgQUMsXaNNLXkJq3SyIWe4RzLnjKO14wHwYDVR0j
BBgwFoAUMsXaNNLXkJq3SyIWe4RzLnjKO14wDwYDVR0TAQH/BAUwAwEB/zAOBgNV
HQ8BAf8EBAMCAgQwCgYIKoZIzj0EAwIDSAAwRQIhAJvcAlshuezmT09bsdH3qHjm
/7HE8oSCqcRQj3DQlbLWAiAZXAuUPXd8maYbJsVY4HnQvYVXvKyIHywYg7jLWxU+
Bw==
-----END CERTIFICATE-----
";
