//! The variable tables of `docs/configuration.md` are the ones `pgconn_config::variables` renders, the way
//! rust-analyzer checks its generated files: a difference fails, and `PGCONN_UPDATE_DOCS=1` rewrites them.

use std::path::Path;

use pgconn_config::variables::{Kind, Section, Unit, markdown};

/// `text` with the block after each section's marker replaced by what [`markdown`] renders for it.
fn regenerate(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    let mut found = Vec::new();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        let Some(section) =
            Section::ALL.into_iter().find(|s| line.starts_with(&format!("<!-- variables: {} ", s.marker())))
        else {
            continue;
        };
        found.push(section);
        // Skip the old block up to its end marker, then write the new one.
        for old in lines.by_ref() {
            if old == "<!-- /variables -->" {
                break;
            }
        }
        out.push_str(&markdown(section));
        out.push_str("<!-- /variables -->\n");
    }
    assert_eq!(found, Section::ALL, "each section's marker once, in order");
    out
}

#[test]
fn the_reference_tables_are_generated_from_the_variable_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let expected = regenerate(&text);
    if text == expected {
        return;
    }
    if std::env::var("PGCONN_UPDATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&path, expected).unwrap();
        return;
    }
    panic!(
        "the variable tables of docs/configuration.md differ from crates/pgconn-config/src/variables.rs; \
         PGCONN_UPDATE_DOCS=1 cargo test -p pgconn-config --test it docs rewrites them"
    );
}

#[test]
fn every_number_in_the_table_is_checked_against_its_range() {
    for variable in pgconn_config::variables::TABLE.iter().filter(|v| v.range().is_some()) {
        let Some((min, max)) = variable.range() else { continue };
        let too_big = (max + 1).to_string();
        let mut vars =
            vec![("DATABASE_URL", "postgresql://app@db/app"), ("HOME", "/nonexistent/pgconn-test")];
        vars.push((variable.name, too_big.as_str()));
        if variable.name.starts_with("PGBOUNCER_") {
            vars.push(("USE_PGBOUNCER", "true"));
        }
        if variable.name == "DB_PORT" {
            // DB_* connection variables count only without DATABASE_URL.
            vars[0] = ("DB_HOST", "db");
        }
        let error = pgconn_config::Settings::from_vars(vars.clone()).expect_err(variable.name);
        assert!(
            error.problems().iter().any(|p| p.variable == variable.name),
            "{} = {too_big} (its range is {min} to {max}): {error}",
            variable.name
        );
        let last = vars.len() - usize::from(variable.name.starts_with("PGBOUNCER_")) - 1;
        let below = min.checked_sub(1).map(|n| n.to_string());
        if let Some(below) = &below {
            vars[last].1 = below.as_str();
            let error = pgconn_config::Settings::from_vars(vars.clone()).expect_err(variable.name);
            assert!(
                error.problems().iter().any(|p| p.variable == variable.name),
                "{} = {below} (its range is {min} to {max}): {error}",
                variable.name
            );
        }
        // At either end it is in its range (other rules, such as a minimum not above a maximum, may apply).
        let (at_min, at_max) = (min.to_string(), max.to_string());
        for inside in [&at_min, &at_max] {
            vars[last].1 = inside.as_str();
            if let Err(error) = pgconn_config::Settings::from_vars(vars.clone()) {
                assert!(
                    error
                        .problems()
                        .iter()
                        .all(|p| p.variable != variable.name || !p.message.contains(" from ")),
                    "{} = {inside} is in its range: {error}",
                    variable.name
                );
            }
        }
    }
}

/// The least environment that is valid: a database, and no home directory to find files in.
fn minimal() -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", "postgresql://app@db/app".to_owned()),
        ("HOME", "/nonexistent/pgconn-test".to_owned()),
    ]
}

/// `var=value` on top of [`minimal`] (with `USE_PGBOUNCER=true` for a PgBouncer variable and `DB_HOST`
/// instead of `DATABASE_URL` for `DB_PORT`, so that it counts).
fn with(var: &'static str, value: &str) -> Result<pgconn_config::Settings, pgconn_config::Error> {
    let mut vars = minimal();
    if var == "DB_PORT" {
        // DB_* connection variables count only without DATABASE_URL.
        vars[0] = ("DB_HOST", "db".to_owned());
    }
    if var.starts_with("PGBOUNCER_") && var != "PGBOUNCER_URL" {
        vars.push(("USE_PGBOUNCER", "true".to_owned()));
    }
    vars.push((var, value.to_owned()));
    pgconn_config::Settings::from_vars(vars)
}

/// What the settings hold for the number `var` of the table, in its unit; `None` for a number that is
/// not a setting of its own (`DB_PORT` is part of the connection).
fn effective(settings: &pgconn_config::Settings, var: &str) -> Option<u64> {
    let ms = |d: Option<std::time::Duration>| d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap());
    Some(match var {
        "DB_PORT" => return None,
        "DB_CONNECT_TIMEOUT" => settings.connect_timeout.as_secs(),
        "DB_STATEMENT_TIMEOUT" => ms(settings.statement_timeout),
        "DB_QUERY_TIMEOUT" => ms(settings.query_timeout),
        "DB_POOL_MAX_SIZE" => u64::from(settings.pool.max_size),
        "DB_POOL_MIN_IDLE" => u64::from(settings.pool.min_idle),
        "DB_POOL_TIMEOUT" => ms(Some(settings.pool.checkout_timeout)),
        "DB_POOL_LEAK_THRESHOLD" => ms(settings.pool.leak_threshold),
        "DB_STATEMENT_CACHE" => u64::from(settings.pool.statement_cache),
        "PGBOUNCER_PORT" => u64::from(settings.pgbouncer.listen_port),
        "PGBOUNCER_MAX_CLIENT_CONN" => u64::from(settings.pgbouncer.max_client_conn),
        "PGBOUNCER_DEFAULT_POOL_SIZE" => u64::from(settings.pgbouncer.default_pool_size),
        "PGBOUNCER_MIN_POOL_SIZE" => u64::from(settings.pgbouncer.min_pool_size),
        "PGBOUNCER_RESERVE_POOL_SIZE" => u64::from(settings.pgbouncer.reserve_pool_size),
        other => panic!("a number of the table without a setting in this test: {other}; add it here"),
    })
}

/// Each number's default is written once, in the table: unset, the setting has it; the reference's
/// default column shows it; a value set is the value read.
#[test]
fn every_number_with_a_default_of_its_own_has_it_when_unset_and_in_the_reference() {
    let unset = pgconn_config::Settings::from_vars(minimal()).expect("the minimal environment is valid");
    for variable in &pgconn_config::variables::TABLE {
        let Kind::Number(number) = variable.kind else { continue };
        let Some(default) = number.default else {
            continue;
        };
        assert!(
            variable.default.contains(&format!("`{default}`")),
            "{}: the reference's default {:?} does not show {default}",
            variable.name,
            variable.default
        );
        if let Some(value) = effective(&unset, variable.name) {
            assert_eq!(value, default, "{} unset", variable.name);
        }
        // A value set inside the range (not the default) is the value read.
        let other = if default == number.max { number.max - 1 } else { default + 1 }.max(number.min);
        if number.max > number.min {
            let settings = with(variable.name, &other.to_string())
                .unwrap_or_else(|e| panic!("{}={other}: {e}", variable.name));
            if let Some(value) = effective(&settings, variable.name) {
                assert_eq!(value, other, "{}={other}", variable.name);
            }
        }
    }
}

/// Numbers, flags and choices name their variable, their unit and what they accept when refused.
#[test]
fn every_flag_and_choice_in_the_table_is_read_as_the_table_says() {
    let mut seen = (0, 0);
    for variable in &pgconn_config::variables::TABLE {
        match variable.kind {
            Kind::Flag => {
                seen.0 += 1;
                for accepted in ["true", "FALSE", "1", "0", "Yes", "no", "on", "OFF"] {
                    with(variable.name, accepted)
                        .unwrap_or_else(|e| panic!("{}={accepted}: {e}", variable.name));
                }
                let error = with(variable.name, "maybe").expect_err(variable.name);
                let message = format!(
                    "{} must be true or false (also 1/0, yes/no, on/off), got \"maybe\"",
                    variable.name
                );
                assert!(
                    error.problems().iter().any(|p| p.variable == variable.name && p.message == message),
                    "{error}"
                );
            }
            Kind::Choice { words, default } => {
                seen.1 += 1;
                assert!(words.contains(&default), "{}: the default is one of the words", variable.name);
                assert!(variable.default.contains(&format!("`{default}`")), "{}", variable.name);
                for word in words {
                    with(variable.name, &word.to_uppercase())
                        .unwrap_or_else(|e| panic!("{}={word}: {e}", variable.name));
                }
                let error = with(variable.name, "nonsense").expect_err(variable.name);
                let problem = error.problems().iter().find(|p| p.variable == variable.name).expect("named");
                for word in words {
                    assert!(problem.message.contains(word), "{}", problem.message);
                }
                assert!(problem.message.ends_with("got \"nonsense\""), "{}", problem.message);
            }
            Kind::Number(number) => {
                let error = with(variable.name, "lots").expect_err(variable.name);
                let problem = error.problems().iter().find(|p| p.variable == variable.name).expect("named");
                let unit = match number.unit {
                    Unit::Seconds => " of seconds",
                    Unit::Milliseconds => " of milliseconds",
                    Unit::Plain => " from",
                };
                assert!(problem.message.contains(&format!("whole number{unit}")), "{}", problem.message);
            }
            Kind::Text => {}
        }
    }
    assert_eq!(seen, (2, 1), "USE_PGBOUNCER and PGBOUNCER_PREPARED_STATEMENTS; PGBOUNCER_POOL_MODE");
}
