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
    /// What served the requests: `pgconn`, `dedicated`, `dedicated-prepared`, `dedicated-no-runtime`,
    /// `dedicated-prepared-no-runtime` (`--no-runtime`), `r2d2` (bare r2d2 + `r2d2_postgres`) or
    /// `pgconn-checkout` (`--checkout-only`).
    pub baseline: String,
    /// Request threads.
    pub clients: u32,
    /// `--thread-per-request`: each request ran on a thread started for it.
    #[serde(default)]
    pub thread_per_request: bool,
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
    /// This process at the end, the pool's connections (and `--dedicated` threads' own) still open: for
    /// the cost of a connection.
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
    /// How many request threads last ran on each CPU at the end of the interval
    /// ([`request_threads_by_cpu`]); absent where `/proc` cannot be read.
    #[serde(default)]
    pub request_threads_by_cpu: Option<Vec<u64>>,
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

/// How many of this process's request threads (named `request-N`) last ran on each CPU, by CPU number:
/// the field `processor` of `/proc/self/task/*/stat`. On a machine with fewer CPUs than request threads,
/// a spread the scheduler left uneven (6 and 2 on two CPUs, say) costs a round a fifth or more of its
/// throughput whatever the pool does (`docs/pool.md`, "Rounds that settle low"); this shows it.
pub fn request_threads_by_cpu() -> Option<Vec<u64>> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut counts = vec![0_u64; cpus];
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else { continue };
        if !name.starts_with("request-") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        // After the command in parentheses (which may hold spaces), `processor` is the 37th field.
        let Some(cpu) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(36))
            .and_then(|field| field.parse::<usize>().ok())
        else {
            continue;
        };
        if cpu >= counts.len() {
            counts.resize(cpu + 1, 0);
        }
        counts[cpu] += 1;
    }
    Some(counts)
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::request_threads_by_cpu;

    #[test]
    fn request_threads_are_counted_by_the_cpu_they_ran_on_and_others_are_not() {
        let before = request_threads_by_cpu().expect("/proc is readable here").iter().sum::<u64>();
        let (started, stop) = (Arc::new(Barrier::new(4)), Arc::new(Barrier::new(4)));
        let threads: Vec<_> = ["request-90", "request-91", "other-92"]
            .into_iter()
            .map(|name| {
                let (started, stop) = (Arc::clone(&started), Arc::clone(&stop));
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || {
                        started.wait();
                        stop.wait();
                    })
                    .expect("a thread")
            })
            .collect();
        started.wait();
        let counts = request_threads_by_cpu().expect("/proc is readable here");
        stop.wait();
        for thread in threads {
            thread.join().expect("no panic");
        }
        assert_eq!(counts.iter().sum::<u64>(), before + 2, "{counts:?}");
        assert!(counts.len() >= std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    }
}
