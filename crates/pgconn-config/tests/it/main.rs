//! pgconn-config's tests: URL forms, variables, errors, and properties over arbitrary input.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod docs;
mod libpq;
mod pgbouncer;
mod props;
mod url;
mod vars;

use pgconn_config::{Error, Settings};

/// A home directory with nothing in it (no `.pgpass`, no `.postgresql/`), unless the test gives `HOME`.
const NO_HOME: (&str, &str) = ("HOME", "/nonexistent/pgconn-config-tests");

fn with_home<'a>(vars: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![NO_HOME];
    all.extend_from_slice(vars);
    all
}

/// Parses `vars`, expecting success.
#[track_caller]
fn settings(vars: &[(&str, &str)]) -> Settings {
    match Settings::from_vars(with_home(vars)) {
        Ok(settings) => settings,
        Err(e) => panic!("expected valid settings from {vars:?}, got: {e}"),
    }
}

/// Parses `vars`, expecting failure; returns the problems as `VARIABLE: message` lines.
#[track_caller]
fn problems(vars: &[(&str, &str)]) -> Vec<String> {
    match Settings::from_vars(with_home(vars)) {
        Ok(settings) => panic!("expected an error from {vars:?}, got {settings:?}"),
        Err(Error::Invalid { problems }) => {
            problems.iter().map(|p| format!("{}: {}", p.variable, p.message)).collect()
        }
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}
