//! Properties over generated input: no panic, round trips, named errors, no password anywhere.

use std::path::PathBuf;
use std::time::Duration;

use pgconn_config::{
    ConnParams, Endpoint, Host, Password, Settings, SslMode, SslRootCert, TargetSessionAttrs, VARIABLES,
};
use proptest::prelude::*;
use proptest::sample::select;

fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,12}",
        "(none|true|false|yes|no|session|transaction|statement|-1|0)",
        "(postgres|postgresql)://[a-zA-Z0-9:@%/?#\\[\\],=&._-]{0,40}",
    ]
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        "[a-z][a-z0-9.-]{0,15}".prop_map(Host::Tcp),
        select(vec!["::1", "2001:db8::7", "fe80::1"]).prop_map(|h| Host::Tcp(h.to_owned())),
        // No comma: libpq cannot write one in a host (it separates hosts).
        "/[a-zA-Z0-9_ .%@:/-]{0,20}".prop_map(|p| Host::Unix(PathBuf::from(p))),
    ]
}

fn conn_params() -> impl Strategy<Value = ConnParams> {
    (
        prop::collection::vec((host(), 1..=u16::MAX), 1..=3),
        "\\PC{1,12}",
        "\\PC{1,12}",
        prop::option::of("\\PC{1,16}"),
        select(SslMode::ALL.to_vec()),
        prop::option::of("\\PC{1,12}"),
        prop::option::of(1..=3600_u64),
        prop::option::of("\\PC{1,12}"),
        any::<bool>(),
    )
        .prop_map(
            |(endpoints, dbname, user, password, sslmode, application_name, timeout, options, rw)| {
                ConnParams {
                    password: password.map(Password::new),
                    sslmode,
                    sslrootcert: matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
                        .then(|| SslRootCert::File(PathBuf::from("/etc/ssl/root ca.pem"))),
                    application_name,
                    // libpq's minimum is 2 s.
                    connect_timeout: timeout.map(|s| Duration::from_secs(s.max(2))),
                    options,
                    target_session_attrs: if rw {
                        TargetSessionAttrs::ReadWrite
                    } else {
                        TargetSessionAttrs::Any
                    },
                    ..ConnParams::new(
                        endpoints.into_iter().map(|(host, port)| Endpoint::new(host, port)).collect(),
                        dbname,
                        user,
                    )
                }
            },
        )
}

/// A valid environment: the database as a rendered URL, and every other variable either unset or valid.
fn valid_env() -> impl Strategy<Value = (ConnParams, Vec<(String, String)>)> {
    let optional = |name: &'static str, values: BoxedStrategy<String>| {
        prop::option::of(values).prop_map(move |v| v.map(|v| (name.to_owned(), v)))
    };
    (
        conn_params(),
        prop::collection::vec(
            prop_oneof![
                optional(
                    "DB_CONN_MAX_AGE",
                    prop_oneof![
                        Just("0".to_owned()),
                        Just("none".to_owned()),
                        (1..=u32::MAX).prop_map(|n| n.to_string())
                    ]
                    .boxed()
                ),
                optional("DB_CONNECT_TIMEOUT", (1..=3600_u32).prop_map(|n| n.to_string()).boxed()),
                optional("DB_STATEMENT_TIMEOUT", (0..=i32::MAX).prop_map(|n| n.to_string()).boxed()),
                optional("DB_QUERY_TIMEOUT", (0..=i32::MAX).prop_map(|n| n.to_string()).boxed()),
                optional("DB_POOL_MAX_SIZE", (10..=10_000_u32).prop_map(|n| n.to_string()).boxed()),
                optional("DB_POOL_MIN_IDLE", (0..=10_u32).prop_map(|n| n.to_string()).boxed()),
                optional("DB_POOL_TIMEOUT", (1..=3_600_000_u32).prop_map(|n| n.to_string()).boxed()),
                optional(
                    "USE_PGBOUNCER",
                    select(vec!["true", "false", "1", "0", "YES", "no"]).prop_map(str::to_owned).boxed()
                ),
                optional("PGBOUNCER_HOST", "[a-z]{1,10}".boxed()),
                optional("PGBOUNCER_PORT", (1..=u16::MAX).prop_map(|n| n.to_string()).boxed()),
                optional(
                    "PGBOUNCER_POOL_MODE",
                    select(vec!["session", "transaction", "statement"]).prop_map(str::to_owned).boxed()
                ),
                optional(
                    "PGBOUNCER_MAX_CLIENT_CONN",
                    (1..=1_000_000_u32).prop_map(|n| n.to_string()).boxed()
                ),
                optional(
                    "PGBOUNCER_DEFAULT_POOL_SIZE",
                    (10..=10_000_u32).prop_map(|n| n.to_string()).boxed()
                ),
                optional("PGBOUNCER_MIN_POOL_SIZE", (0..=10_u32).prop_map(|n| n.to_string()).boxed()),
                optional("PGBOUNCER_RESERVE_POOL_SIZE", (0..=10_000_u32).prop_map(|n| n.to_string()).boxed()),
            ],
            0..8,
        ),
    )
        .prop_map(|(params, vars)| {
            let mut env = vec![("DATABASE_URL".to_owned(), pgconn_config::render_url(&params))];
            env.extend(vars.into_iter().flatten());
            (params, env)
        })
}

/// A variable and a value it must refuse.
fn invalid_assignment() -> impl Strategy<Value = (&'static str, String)> {
    let letters = "[g-z]{1,6}"; // never a number, a boolean word, a pool mode or "none"
    prop_oneof![
        (
            select(vec![
                "DB_CONN_MAX_AGE",
                "DB_CONNECT_TIMEOUT",
                "DB_STATEMENT_TIMEOUT",
                "DB_POOL_MAX_SIZE",
                "DB_POOL_MIN_IDLE",
                "DB_POOL_TIMEOUT",
                "USE_PGBOUNCER",
                "PGBOUNCER_POOL_MODE",
                "PGBOUNCER_MAX_CLIENT_CONN",
                "PGBOUNCER_DEFAULT_POOL_SIZE",
                "PGBOUNCER_MIN_POOL_SIZE",
                "PGBOUNCER_RESERVE_POOL_SIZE",
            ]),
            letters
        )
            .prop_filter("not a valid word", |(_, v)| !["no", "on", "none"].contains(&v.as_str())),
        (select(vec!["DB_CONNECT_TIMEOUT", "DB_POOL_TIMEOUT", "DB_POOL_MAX_SIZE"]), Just("0".to_owned())),
        (
            select(vec!["DB_CONNECT_TIMEOUT", "DB_STATEMENT_TIMEOUT", "DB_POOL_TIMEOUT", "DB_CONN_MAX_AGE"]),
            (-1000..0_i64).prop_map(|n| n.to_string())
        ),
        (Just("DB_CONNECT_TIMEOUT"), (3601..u64::MAX).prop_map(|n| n.to_string())),
        (Just("DATABASE_URL"), "(mysql|http|postgresql:/)://[a-z]{0,10}"),
        (Just("DATABASE_URL"), "postgresql://u@h:(0|[7-9][0-9]{5}|[a-z]{2})/d"),
        (Just("DATABASE_URL"), "postgresql://u@h/d\\?sslmode=[g-z]{3}"),
    ]
}

fn password() -> impl Strategy<Value = String> {
    // A distinctive prefix, so that finding it in a message means the password leaked.
    "[@:/?#%]{0,3}[A-Z]{12}[@:/?#% ]{0,3}".prop_map(|p| format!("Zq{p}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_input_never_panics(vars in prop::collection::vec((select(VARIABLES.to_vec()), any_value()), 0..12)) {
        let _ = Settings::from_vars(vars);
    }

    #[test]
    fn valid_environments_round_trip((params, env) in valid_env()) {
        let settings = Settings::from_vars(env.clone())
            .map_err(|e| TestCaseError::fail(format!("{e} for {env:?}")))?;
        prop_assert_eq!(&settings.database, &params);
        let again = Settings::from_vars(settings.to_env())
            .map_err(|e| TestCaseError::fail(format!("{e} for {:?}", settings.to_env())))?;
        prop_assert_eq!(again, settings);
    }

    #[test]
    fn invalid_values_are_named((params, mut env) in valid_env(), (variable, value) in invalid_assignment()) {
        let _ = params;
        env.retain(|(name, _)| name != variable);
        env.push((variable.to_owned(), value.clone()));
        match Settings::from_vars(env) {
            Ok(settings) => prop_assert!(false, "{variable}={value:?} was accepted: {settings:?}"),
            Err(e) => prop_assert!(
                e.problems().iter().any(|p| p.variable == variable && p.message.contains(variable)),
                "{variable}={value:?}: {e}"
            ),
        }
    }

    #[test]
    fn passwords_never_shown(
        (mut params, env) in valid_env(),
        secret in password(),
        broken in prop::option::of(invalid_assignment()),
        db_vars in any::<bool>(),
    ) {
        params.password = Some(Password::new(secret.clone()));
        let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k != "DATABASE_URL").collect();
        if db_vars {
            env.extend([("DB_NAME", "app"), ("DB_USER", "app")].map(|(k, v)| (k.to_owned(), v.to_owned())));
            env.push(("DB_PASSWORD".to_owned(), secret.clone()));
        } else {
            env.push(("DATABASE_URL".to_owned(), pgconn_config::render_url(&params)));
        }
        env.push(("PGBOUNCER_URL".to_owned(), format!("postgresql://app:{}@pgb/app", pgconn_config::render_url(&params).len())));
        if let Some((variable, value)) = broken {
            env.retain(|(name, _)| name != variable);
            env.push((variable.to_owned(), value));
        }
        let texts = match Settings::from_vars(env) {
            Ok(settings) => vec![format!("{settings}"), format!("{settings:?}"), format!("{settings:#?}")],
            Err(e) => vec![format!("{e}"), format!("{e:?}"), e.problems().iter().map(ToString::to_string).collect()],
        };
        for text in texts {
            prop_assert!(!text.contains(&secret[2..]), "password shown in: {text}");
        }
    }
}

#[test]
fn rendered_urls_percent_encode_every_special_character() {
    let params = ConnParams {
        password: Some(Password::new("p@ss:w/rd?#%")),
        sslmode: SslMode::Require,
        application_name: Some("web app".to_owned()),
        ..ConnParams::new(
            vec![Endpoint::new(Host::Unix(PathBuf::from("/run/pg sock;1")), 5433)],
            "d/b?",
            "u@s:r",
        )
    };
    let url = pgconn_config::render_url(&params);
    assert_eq!(
        url,
        "postgresql://u%40s%3Ar:p%40ss%3Aw%2Frd%3F%23%25@%2Frun%2Fpg%20sock%3B1:5433/d%2Fb%3F?sslmode=require&application_name=web%20app"
    );
    let settings = Settings::from_vars([("DATABASE_URL", url)]).unwrap();
    assert_eq!(settings.database, params);
}
