//! The variable tables of `docs/configuration.md` are the ones `pgconn_config::variables` renders, the way
//! rust-analyzer checks its generated files: a difference fails, and `PGCONN_UPDATE_DOCS=1` rewrites them.

use std::path::Path;

use pgconn_config::variables::{Section, markdown};

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
    for variable in pgconn_config::variables::TABLE.iter().filter(|v| v.range.is_some()) {
        let Some((min, max)) = variable.range else { continue };
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
