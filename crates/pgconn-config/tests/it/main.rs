//! pgconn-config's tests: URL forms, variables, errors, and properties over arbitrary input.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod pgbouncer;
mod props;
mod url;
mod vars;

use pgconn_config::{Error, Settings};

/// Parses `vars`, expecting success.
#[track_caller]
fn settings(vars: &[(&str, &str)]) -> Settings {
    match Settings::from_vars(vars.iter().copied()) {
        Ok(settings) => settings,
        Err(e) => panic!("expected valid settings from {vars:?}, got: {e}"),
    }
}

/// Parses `vars`, expecting failure; returns the problems as `VARIABLE: message` lines.
#[track_caller]
fn problems(vars: &[(&str, &str)]) -> Vec<String> {
    match Settings::from_vars(vars.iter().copied()) {
        Ok(settings) => panic!("expected an error from {vars:?}, got {settings:?}"),
        Err(Error::Invalid { problems }) => {
            problems.iter().map(|p| format!("{}: {}", p.variable, p.message)).collect()
        }
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}
