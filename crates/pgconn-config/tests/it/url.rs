//! `DATABASE_URL` and `PGBOUNCER_URL` under libpq's URL rules.

use std::path::PathBuf;
use std::time::Duration;

use pgconn_config::{ConnParams, Endpoint, Host, SslMode, TargetSessionAttrs};

use crate::{problems, settings};

#[track_caller]
fn database(url: &str) -> ConnParams {
    settings(&[("DATABASE_URL", url)]).database
}

#[track_caller]
fn check(url: &str, expected: &str) {
    let params = database(url);
    let password = params.password.as_ref().map_or("-", |p| p.expose());
    let actual =
        format!("{params} password={password} sslmode={} app={:?}", params.sslmode, params.application_name);
    assert_eq!(actual, expected, "for {url}");
}

fn tcp(host: &str, port: u16) -> Endpoint {
    Endpoint::new(Host::Tcp(host.to_owned()), port)
}

#[test]
fn schemes_and_defaults() {
    check("postgresql://app@db.internal/app", "app@db.internal:5432/app password=- sslmode=prefer app=None");
    check(
        "postgres://app@db.internal:6000/app",
        "app@db.internal:6000/app password=- sslmode=prefer app=None",
    );
    // libpq's scheme test is case-sensitive: POSTGRESQL:// is not a URL to it, nor to pgconn.
    assert!(!problems(&[("DATABASE_URL", "POSTGRESQL://app@h/d")]).is_empty());
    // libpq: the database defaults to the user name.
    check("postgresql://app@h", "app@h:5432/app password=- sslmode=prefer app=None");
    check("postgresql://app@h/", "app@h:5432/app password=- sslmode=prefer app=None");
    // No user: libpq's default, the process's own user (PGUSER when set).
    assert_eq!(database("postgresql://h/d").sources.get("user"), Some(&pgconn_config::Source::Default));
    check("postgresql://app@h:/d", "app@h:5432/d password=- sslmode=prefer app=None");
}

#[test]
fn percent_encoded_user_password_and_database() {
    check(
        "postgresql://us%40er:p%40ss%3Aw%2Frd%3F%23%25x@h/my%20db",
        "us@er@h:5432/my db password=p@ss:w/rd?#%x sslmode=prefer app=None",
    );
    check("postgresql://u:%C3%A9t%C3%A9@h/d", "u@h:5432/d password=été sslmode=prefer app=None");
    // An unencoded `@` in the password still parses: the user part ends at the last `@`.
    check("postgresql://u:p@ss@h/d", "u@h:5432/d password=p@ss sslmode=prefer app=None");
    // An empty password is no password.
    check("postgresql://u:@h/d", "u@h:5432/d password=- sslmode=prefer app=None");
}

#[test]
fn an_at_sign_in_the_query_is_never_the_user_part() {
    // Read as libpq 15 reads them (PQconninfoParse); these once lost sslmode=require silently.
    check(
        "postgresql://u@h:5433?application_name=a@b&sslmode=require",
        "u@h:5433/u password=- sslmode=require app=Some(\"a@b\")",
    );
    check(
        "postgresql://u:pw@h?application_name=worker@web1",
        "u@h:5432/u password=pw sslmode=prefer app=Some(\"worker@web1\")",
    );
    check(
        "postgresql://u@h?user=alice@corp",
        "alice@corp@h:5432/alice@corp password=- sslmode=prefer app=None",
    );
    // libpq's first `@`: a `?` inside the password is the password's.
    check("postgresql://u:pa?ss@h/d", "u@h:5432/d password=pa?ss sslmode=prefer app=None");
    check(
        "postgresql://u:p@ss@h:1/d?application_name=x@y",
        "u@h:1/d password=p@ss sslmode=prefer app=Some(\"x@y\")",
    );
}

#[test]
fn a_zero_byte_and_an_unencoded_ampersand_are_refused_without_echo() {
    for url in [
        "postgresql://u%00x@h/d",
        "postgresql://u:p%00w@h/d",
        "postgresql://u@h/d%00b",
        "postgresql://u@h/d?application_name=a%00b",
    ] {
        let message = problems(&[("DATABASE_URL", url)]).join("\n");
        assert!(message.contains("%00"), "{url}: {message}");
    }
    let message = problems(&[("DATABASE_URL", "postgresql://u@h/d?password=sec&retPw")]).join("\n");
    assert!(message.contains("without `=value`"), "{message}");
    assert!(!message.contains("retPw"), "{message}");
}

#[test]
fn ipv6_hosts() {
    check("postgresql://u@[::1]:5433/d", "u@[::1]:5433/d password=- sslmode=prefer app=None");
    check("postgresql://u@[2001:db8::7]/d", "u@[2001:db8::7]:5432/d password=- sslmode=prefer app=None");
    assert_eq!(database("postgresql://u@[::1]/d").endpoints, vec![tcp("::1", 5432)]);
}

#[test]
fn socket_directories() {
    let unix = |dir: &str, port| Endpoint::new(Host::Unix(PathBuf::from(dir)), port);
    assert_eq!(
        database("postgresql://app@%2Fvar%2Frun%2Fpostgresql/db").endpoints,
        vec![unix("/var/run/postgresql", 5432)]
    );
    assert_eq!(
        database("postgresql:///db?host=/var/run/postgresql&user=app").endpoints,
        vec![unix("/var/run/postgresql", 5432)]
    );
    assert_eq!(database("postgresql://app@%2Ftmp%2Fpg:6543/db").endpoints, vec![unix("/tmp/pg", 6543)]);
    // No host at all: libpq's default socket directory.
    assert_eq!(database("postgresql://app@/db").endpoints, vec![unix("/var/run/postgresql", 5432)]);
}

#[test]
fn query_parameters() {
    let params = database(
        "postgresql://h/d?user=app&password=s%26cret&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem\
         &application_name=web%201&connect_timeout=3&port=6000&options=-c%20search_path%3Dapp",
    );
    assert_eq!(params.user, "app");
    assert_eq!(params.password.as_ref().map(pgconn_config::Password::expose), Some("s&cret"));
    assert_eq!(params.sslmode, SslMode::VerifyFull);
    assert_eq!(params.sslrootcert, Some(pgconn_config::SslRootCert::File(PathBuf::from("/etc/ca.pem"))));
    assert_eq!(params.application_name.as_deref(), Some("web 1"));
    assert_eq!(params.connect_timeout, Some(Duration::from_secs(3)));
    assert_eq!(params.endpoints, vec![tcp("h", 6000)]);
    assert_eq!(params.options.as_deref(), Some("-c search_path=app"));
    // Query parameters override the authority.
    let params = database("postgresql://a@h:1/d?host=other&port=2&user=b&dbname=e");
    assert_eq!(format!("{params}"), "b@other:2/e");
    // fallback_application_name applies only when application_name is absent.
    check(
        "postgresql://u@h/d?fallback_application_name=fb",
        "u@h:5432/d password=- sslmode=prefer app=Some(\"fb\")",
    );
    check(
        "postgresql://u@h/d?fallback_application_name=fb&application_name=app",
        "u@h:5432/d password=- sslmode=prefer app=Some(\"app\")",
    );
    for mode in SslMode::ALL {
        let cert =
            if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) { "&sslrootcert=/ca" } else { "" };
        assert_eq!(database(&format!("postgresql://u@h/d?sslmode={mode}{cert}")).sslmode, mode);
    }
}

#[test]
fn several_hosts() {
    let params = database("postgresql://u@a:5433,b,[::1]:5435/d?target_session_attrs=read-write");
    assert_eq!(params.endpoints, vec![tcp("a", 5433), tcp("b", 5432), tcp("::1", 5435)]);
    assert_eq!(params.target_session_attrs, TargetSessionAttrs::ReadWrite);
    let params = database("postgresql://u@a,b/d?port=7000");
    assert_eq!(params.endpoints, vec![tcp("a", 7000), tcp("b", 7000)]);
    let params = database("postgresql:///d?user=u&host=a,b&port=1,2");
    assert_eq!(params.endpoints, vec![tcp("a", 1), tcp("b", 2)]);
}

#[test]
fn malformed_urls() {
    let check = |url: &str, expected: &str| {
        assert_eq!(
            problems(&[("DATABASE_URL", url)]),
            vec![format!("DATABASE_URL: {expected}")],
            "for {url}"
        );
    };
    check(
        "mysql://u@h/d",
        "DATABASE_URL must be a libpq URL starting with postgresql:// or postgres:// (such as \
         postgresql://user:password@host:5432/dbname) or keyword=value pairs (such as host=db dbname=app \
         user=app)",
    );
    check(
        "postgresql://u@h:99999/d",
        "DATABASE_URL host 1 of the URL has a port that is not a number from 1 to 65535",
    );
    check(
        "postgresql://u@h:x/d",
        "DATABASE_URL host 1 of the URL has a port that is not a number from 1 to 65535",
    );
    check(
        "postgresql://u@[::1/d",
        "DATABASE_URL has a `[` without its `]` (write IPv6 addresses as [::1]:5432)",
    );
    check(
        "postgresql://u@h/d%zz",
        "DATABASE_URL the database name has a `%` that is not followed by two hex digits (write % as %25)",
    );
    check(
        "postgresql://u@h/d?sslmode=maybe",
        "DATABASE_URL parameter sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full, got \"maybe\"",
    );
    check(
        "postgresql://u@h/d?connect_timeout=0",
        "DATABASE_URL parameter connect_timeout=0 would wait forever; give whole seconds from 1 to 3600, or leave it out and set DB_CONNECT_TIMEOUT",
    );
    check(
        "postgresql://u@h/d?sslmode=verify-full",
        "DATABASE_URL has sslmode=verify-full but no sslrootcert=PATH naming the CA certificate, and \
         /nonexistent/pgconn-config-tests/.postgresql/root.crt (libpq's default) does not exist; give \
         sslrootcert=PATH, or sslrootcert=system for the operating system's CAs",
    );
    check(
        "postgresql://u@a,b,c/d?port=1,2",
        "DATABASE_URL names 3 hosts but 2 ports; give one port for all hosts or one per host",
    );
    check(
        "postgresql://u@h/d?target_session_attrs=standby",
        "DATABASE_URL parameter target_session_attrs=standby is not implemented by the postgres crate; use read-only (a standby's sessions are read-only)",
    );
    let unknown = problems(&[("DATABASE_URL", "postgresql://u@h/d?gssencmod=disable")]);
    assert!(
        unknown[0].starts_with(
            "DATABASE_URL: DATABASE_URL query parameter names \"gssencmod\", a keyword libpq does not know; known: user,"
        ),
        "{unknown:?}"
    );
}

#[test]
fn every_problem_of_a_url_at_once() {
    let found = problems(&[("DATABASE_URL", "postgresql://u@h:0/d%?sslmode=x&connect_timeout=y")]);
    assert_eq!(found.len(), 4, "{found:#?}");
}

#[test]
fn malformed_authority_never_echoed() {
    // A forgotten `@` puts the password where the port goes: the message must not repeat it.
    for url in [
        "postgresql://user:hunter2hunter2/db",
        "postgresql://user:hunter2hunter2",
        "postgresql://[hunter2hunter2",
    ] {
        let found = problems(&[("DATABASE_URL", url)]);
        assert!(!found.is_empty());
        for line in found {
            assert!(!line.contains("hunter2"), "{line}");
        }
    }
}

#[test]
fn pgbouncer_target() {
    let s = settings(&[
        ("DATABASE_URL", "postgresql://app:pw@db:5432/app?application_name=web&options=-c%20x%3D1"),
        ("USE_PGBOUNCER", "YES"),
    ]);
    assert_eq!(s.strategy, pgconn_config::Strategy::PgBouncer);
    assert_eq!(format!("{}", s.target), "app@localhost:6432/app");
    assert_eq!(s.target.password.as_ref().map(pgconn_config::Password::expose), Some("pw"));
    assert_eq!(s.target.application_name.as_deref(), Some("web"));
    assert_eq!(s.target.options, None, "options are never sent through PgBouncer");

    let s = settings(&[
        ("DATABASE_URL", "postgresql://app:pw@db/app"),
        ("USE_PGBOUNCER", "1"),
        ("PGBOUNCER_HOST", "bouncer"),
        ("PGBOUNCER_PORT", "7432"),
    ]);
    assert_eq!(format!("{}", s.target), "app@bouncer:7432/app");

    // PGBOUNCER_URL wins over PGBOUNCER_HOST/PORT and fills what it leaves out from the database.
    let s = settings(&[
        ("DATABASE_URL", "postgresql://app:pw@db/app"),
        ("USE_PGBOUNCER", "true"),
        ("PGBOUNCER_URL", "postgresql://pgb:6432"),
        ("PGBOUNCER_HOST", "ignored"),
    ]);
    assert_eq!(format!("{}", s.target), "app@pgb:6432/app");
    assert_eq!(s.target.password.as_ref().map(pgconn_config::Password::expose), Some("pw"));

    assert_eq!(
        problems(&[
            ("DATABASE_URL", "postgresql://app@db/app"),
            ("USE_PGBOUNCER", "true"),
            ("PGBOUNCER_URL", "postgresql://app@pgb/app?options=-c%20a%3Db"),
        ]),
        vec![
            "PGBOUNCER_URL: PGBOUNCER_URL has an options parameter, which PgBouncer refuses (unsupported \
             startup parameter); set server settings in pgbouncer.ini (connect_query) instead"
        ]
    );

    // Without USE_PGBOUNCER, PGBOUNCER_* is ignored, even when invalid.
    let s = settings(&[("DATABASE_URL", "postgresql://app@db/app"), ("PGBOUNCER_PORT", "nope")]);
    assert_eq!(s.target, s.database);
}
