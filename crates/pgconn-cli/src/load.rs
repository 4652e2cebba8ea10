//! `pgconn load --json`: the report at the end, and the samples `--report-every` prints before it (one
//! JSON object per line, `{"sample": {...}}`, the report last).

use std::collections::BTreeMap;

use pgconn_pool::{PoolMetrics, PoolState, Quantiles};
use serde::{Deserialize, Serialize};

/// The report of one `pgconn load` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The strategy the settings chose: `persistent`, `pgbouncer`, ...
    pub strategy: String,
    /// Whether connections are kept between requests (`DB_CONN_MAX_AGE` ≠ 0).
    pub persistent: bool,
    /// `--dedicated`: one connection per thread, no pool.
    pub dedicated: bool,
    /// What served the requests: `pgconn`, `dedicated`, `dedicated-prepared`, `r2d2` (bare r2d2 +
    /// `r2d2_postgres`) or `pgconn-checkout` (`--checkout-only`).
    pub baseline: String,
    /// Request threads.
    pub clients: u32,
    /// The statement each request ran.
    pub query: String,
    /// Requests measured: `ok + errors`.
    pub requests: u64,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Failed requests by error kind (`pgconn_pool::ErrorKind::as_str`); every kind present, 0 when not
    /// seen.
    pub error_kinds: BTreeMap<String, u64>,
    /// The first error of each kind seen, in words (kinds not seen are absent).
    pub error_examples: BTreeMap<String, String>,
    /// How long the measurement took, in seconds.
    pub elapsed_s: f64,
    /// `requests / elapsed_s`.
    pub throughput_rps: f64,
    /// Request latency (checkout, query, return).
    pub latency_ms: Quantiles,
    /// Time waited for a connection.
    pub checkout_wait_ms: Quantiles,
    /// Successes and errors per second of the run.
    pub timeline: Vec<TimelineEntry>,
    /// The pool at the end: its state and metrics, flattened into one object.
    pub pool: PoolReport,
    /// This process at the end, the pool's connections still open: for the cost of a connection.
    pub process: Option<ProcessSample>,
}

/// One second of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Seconds since the measurement started.
    pub second: usize,
    /// Requests that succeeded in that second.
    pub ok: u64,
    /// Requests that failed in that second.
    pub errors: u64,
}

/// The pool's state and metrics, flattened into one JSON object. Read back, the metrics' `waiting` (not
/// written: it is the state's) is the state's again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PoolReportJson")]
pub struct PoolReport {
    /// Connections open, in use, idle, waited for.
    #[serde(flatten)]
    pub state: PoolState,
    /// Counters and histograms since the pool was built.
    #[serde(flatten)]
    pub metrics: PoolMetrics,
}

/// [`PoolReport`] as its JSON has it.
#[derive(Deserialize)]
struct PoolReportJson {
    #[serde(flatten)]
    state: PoolState,
    #[serde(flatten)]
    metrics: PoolMetrics,
}

impl From<PoolReportJson> for PoolReport {
    fn from(json: PoolReportJson) -> Self {
        let PoolReportJson { state, mut metrics } = json;
        metrics.waiting = state.waiting;
        PoolReport { state, metrics }
    }
}

/// One interval of `--report-every`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSample {
    /// Seconds since the measurement started, at the end of the interval.
    pub t_s: f64,
    /// The interval's length in seconds (the last one may be shorter).
    pub interval_s: f64,
    /// Requests that ended in the interval.
    pub requests: u64,
    /// Of which succeeded.
    pub ok: u64,
    /// Of which failed.
    pub errors: u64,
    /// The kinds seen in the interval, with their counts.
    pub error_kinds: BTreeMap<String, u64>,
    /// The slowest request that ended in the interval.
    pub max_latency_ms: f64,
    /// The pool at the end of the interval.
    pub pool: PoolState,
    /// This process at the end of the interval.
    pub process: Option<ProcessSample>,
}

/// A line of `pgconn load --json --report-every`: `{"sample": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleLine {
    /// The interval.
    pub sample: LoadSample,
}

/// File descriptors, resident memory and threads of a process, from `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSample {
    /// Open file descriptors.
    pub fds: u64,
    /// Resident memory, in KiB (`VmRSS`).
    pub rss_kb: u64,
    /// Threads.
    pub threads: u64,
}

impl ProcessSample {
    /// This process now; `None` where `/proc` cannot be read.
    pub fn now() -> Option<ProcessSample> {
        let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<u64> {
            status.lines().find_map(|line| line.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
        };
        Some(ProcessSample { fds, rss_kb: field("VmRSS:")?, threads: field("Threads:")? })
    }
}
