//! The JSON that xtask reads from `pgconn load --json`, `pgconn monitor --json` and the example server's
//! `/health`, as typed records of the keys documented in `docs/cli.md` and `docs/monitoring.md`.
//!
//! Every key xtask uses is required: a renamed or missing key fails the task with the text it could not
//! read, instead of writing a zero into `docs/benchmarks.md`. xtask keeps linking no pgconn crate (its
//! build stays independent of the code it measures), so these records mirror the producers' serde types
//! (`pgconn-cli`'s load `Report` and `Sample`, `pgconn-monitor`'s `Report`); the bench, demo and soak runs
//! are what check that they still agree.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde::Deserialize;

/// What `pgconn load --json` printed: its report, or why it could not build the pool.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum LoadOutput {
    Report(Box<LoadReport>),
    Failed { error: ErrorBody },
}

/// The example server's error answer, `{"error": {"kind": ..., "message": ...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorAnswer {
    pub(crate) error: ErrorBody,
}

/// `{"kind": ..., "message": ...}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) kind: String,
    pub(crate) message: String,
}

/// The report of `pgconn load --json` (the keys xtask reads).
#[derive(Debug, Deserialize)]
pub(crate) struct LoadReport {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Every kind, with 0 for those not seen.
    pub(crate) error_kinds: BTreeMap<String, u64>,
    /// The first error of each kind seen.
    pub(crate) error_examples: BTreeMap<String, String>,
    pub(crate) throughput_rps: f64,
    pub(crate) latency_ms: Quantiles,
    pub(crate) pool: PoolState,
    /// `null` without `/proc`.
    pub(crate) process: Option<ProcessSample>,
}

impl LoadReport {
    /// The kinds seen, `kind n, kind n`.
    pub(crate) fn kinds_seen(&self) -> String {
        let kinds: Vec<String> =
            self.error_kinds.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
        kinds.join(", ")
    }
}

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct Quantiles {
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// The pool's state (`pool` in a load report or a sample, in `/health`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct PoolState {
    pub(crate) size: u32,
    pub(crate) in_use: u32,
    pub(crate) waiting: u64,
}

/// File descriptors, resident memory and threads of the load process.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct ProcessSample {
    pub(crate) fds: u64,
    pub(crate) rss_kb: u64,
    pub(crate) threads: u64,
}

/// One interval of `pgconn load --report-every --json`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Sample {
    pub(crate) t_s: f64,
    pub(crate) interval_s: f64,
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) error_kinds: BTreeMap<String, u64>,
    pub(crate) max_latency_ms: f64,
    pub(crate) pool: PoolState,
    pub(crate) process: Option<ProcessSample>,
}

/// A line of `pgconn load --report-every --json`: a sample, or (last) the report.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum LoadLine {
    Sample { sample: Sample },
    Report(Box<LoadReport>),
}

/// A line of `pgconn monitor --json` (the keys the demo reads); the counts are `null` while the server
/// cannot be reached.
#[derive(Debug, Deserialize)]
pub(crate) struct MonitorLine {
    pub(crate) server_connections: Option<u32>,
    pub(crate) max_connections: Option<u32>,
}

/// The example server's `/health` body (the keys the demo reads).
#[derive(Debug, Deserialize)]
pub(crate) struct Health {
    pub(crate) status: String,
    pub(crate) pool: PoolState,
}

/// Reads `text` as a `T`, or fails naming `what` and quoting the start of the text.
pub(crate) fn parse<'a, T: Deserialize<'a>>(text: &'a str, what: &str) -> Result<T> {
    serde_json::from_str(text).with_context(|| {
        let start: String = text.chars().take(300).collect();
        format!("cannot read the JSON of {what} (a key renamed or missing? docs/cli.md lists them): {start}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_an_error_not_a_zero() {
        let report = r#"{"requests": 3, "errors": 0, "error_kinds": {}, "error_examples": {},
            "latency_ms": {"mean": 1.0, "p50": 1.0, "p99": 2.0, "max": 3.0},
            "pool": {"size": 2, "in_use": 0, "waiting": 0}, "process": null}"#;
        let error = parse::<LoadOutput>(report, "pgconn load").expect_err("throughput_rps is missing");
        assert!(format!("{error:#}").contains("cannot read the JSON of pgconn load"), "{error:#}");
        let renamed = report.replace("\"requests\"", "\"throughput_rps\": 5.0, \"request_count\"");
        assert!(parse::<LoadOutput>(&renamed, "pgconn load").is_err());
        let complete = report.replace("\"requests\"", "\"throughput_rps\": 5.0, \"requests\"");
        let Ok(LoadOutput::Report(read)) = parse::<LoadOutput>(&complete, "pgconn load") else {
            panic!("a complete report is read")
        };
        assert_eq!((read.requests, read.pool.size), (3, 2));
        let failed = r#"{"error": {"kind": "auth_failed", "message": "password authentication failed"}}"#;
        assert!(matches!(parse::<LoadOutput>(failed, "pgconn load"), Ok(LoadOutput::Failed { .. })));
    }
}
