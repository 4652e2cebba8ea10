//! Counters and latency distributions cheap enough to leave on, and the leak detector.

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stripes::{Counter, Padded, STRIPES, stripe};
use crate::watch::Watches;
use serde::{Deserialize, Serialize};

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// It reached its `DB_CONN_MAX_AGE` deadline.
    MaxAge,
    /// It failed in use or failed validation.
    Broken,
    /// It sat idle beyond the pool's idle timeout (or the pool was dropped).
    Idle,
    /// `DB_CONN_MAX_AGE=0`: closed when its request returned it.
    PerRequest,
    /// Found closed by the server (or the network) at checkout, before it was handed out.
    ClosedByServer,
    /// Returned by a thread that was panicking: never reused as it is.
    Panicked,
    /// Returned with a transaction or session state that could not be reset within its deadline.
    Unclean,
}

impl CloseReason {
    const COUNT: usize = 7;
}

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// How many values.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Connections closed, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedCounts {
    /// Reached `DB_CONN_MAX_AGE`.
    pub max_age: u64,
    /// Failed in use or in validation.
    pub broken: u64,
    /// Idle past the pool's idle timeout.
    pub idle: u64,
    /// Closed on return because `DB_CONN_MAX_AGE=0`.
    pub per_request: u64,
    /// Found closed by the server or the network at checkout, before it was handed out.
    pub closed_by_server: u64,
    /// Returned while its borrower's thread was panicking.
    pub panicked: u64,
    /// Returned in a state that could not be reset in time (or without a deadline).
    pub unclean: u64,
}

impl ClosedCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.max_age
            + self.broken
            + self.idle
            + self.per_request
            + self.closed_by_server
            + self.panicked
            + self.unclean
    }
}

/// The statement caches of the pool's connections, together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementCacheCounts {
    /// Calls of the query API that ran a statement prepared earlier on their connection.
    pub hits: u64,
    /// Calls that ran unnamed (the statement not, or not yet, prepared on that connection), or prepared it.
    pub misses: u64,
    /// Statements prepared.
    pub prepared: u64,
    /// Prepared statements closed to make room (`DB_STATEMENT_CACHE` reached).
    pub evictions: u64,
    /// Prepared statements forgotten because the server said their plan changed or they were gone, each
    /// retried unprepared when no transaction was open.
    pub invalidations: u64,
}

/// Returned connections reset before going back into the pool, by what was reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetCounts {
    /// A transaction was open, failed or unknown: `ROLLBACK`.
    pub transaction: u64,
    /// Session state may have changed: `DISCARD ALL`.
    pub session: u64,
}

/// A latency histogram in Prometheus' shape: cumulative counts at fixed upper bounds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    /// `(upper bound in ms, values at or below it)`, ascending; the implicit `+Inf` bucket is `count`.
    pub cumulative: Vec<(f64, u64)>,
    /// How many values.
    pub count: u64,
    /// Their sum, in ms.
    pub sum_ms: f64,
}

/// The upper bounds of [`PoolMetrics::checkout_wait_buckets`], in ms.
pub const WAIT_BUCKETS_MS: [f64; 12] =
    [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0];

/// The pool's metrics since it was built.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// Successful checkouts.
    pub checkouts: u64,
    /// Checkouts that failed (pool exhausted, or no connection could be opened in time).
    pub checkout_timeouts: u64,
    /// Threads waiting for a connection right now. Not serialized: every JSON that carries the metrics
    /// carries the pool's state beside them, whose `waiting` is the same count (one key, not two).
    #[serde(skip)]
    pub waiting: u64,
    /// Time from asking for a connection to holding it.
    pub checkout_wait_ms: Quantiles,
    /// The same, as histogram buckets ([`WAIT_BUCKETS_MS`]).
    pub checkout_wait_buckets: Buckets,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connection attempts that failed.
    pub connect_errors: u64,
    /// Time to open a connection (TCP, startup, authentication).
    pub connect_ms: Quantiles,
    /// Connections closed, by reason.
    pub connections_closed: ClosedCounts,
    /// Returned connections reset before reuse, by what was reset.
    pub connections_reset: ResetCounts,
    /// Checkouts that validated the connection with a round trip.
    pub validations: u64,
    /// Checkouts that skipped the round trip because the connection was returned moments ago.
    pub validations_skipped: u64,
    /// Time a connection was held by a request, checkout to return.
    pub held_ms: Quantiles,
    /// Queries run through the pool's query API.
    pub queries: u64,
    /// Those that failed.
    pub query_errors: u64,
    /// Their duration.
    pub query_ms: Quantiles,
    /// Connections reported as possible leaks (held past `DB_POOL_LEAK_THRESHOLD`).
    pub leak_warnings: u64,
    /// The connections' statement caches.
    pub statement_cache: StatementCacheCounts,
}

/// One latency distribution in microseconds, from 1 µs to an hour, 2 significant digits (1% precision),
/// striped by thread.
///
/// Recording is one relaxed increment of a counter in this thread's stripe: the counters are laid out as
/// `hdrhistogram`'s are for these bounds (so each holds what one of its buckets would), and readers build
/// the `Histogram` from them. `hdrhistogram`'s own recording behind a lock cost about 130 instructions and
/// its code's place in the instruction cache on every record, three records a request
/// (docs/benchmarks.md, "Client work per request, counted").
pub(crate) struct Latency([Padded<Box<[AtomicU64]>>; STRIPES]);

/// The highest value kept apart (an hour in microseconds); longer ones count as this.
const HIGHEST: u64 = 3_600_000_000;
/// Values below this are counted one by one (`hdrhistogram`'s sub-bucket count for 2 significant digits).
const SUB_BUCKETS: u64 = 256;
/// Counters per stripe: the index of [`HIGHEST`], and one.
const COUNTS: usize = counter_index(HIGHEST) + 1;

/// The counter of `value` (at most [`HIGHEST`]): `hdrhistogram`'s index for a histogram with a lowest
/// discernible value of 1 and 2 significant digits, where each power-of-two range above [`SUB_BUCKETS`]
/// is split in 128 equal steps.
#[allow(clippy::cast_possible_truncation)] // below COUNTS, a few thousand
const fn counter_index(value: u64) -> usize {
    // The power-of-two range of `value`, 0 for everything below SUB_BUCKETS.
    let bucket = (u64::BITS - SUB_BUCKETS.trailing_zeros()) - (value | (SUB_BUCKETS - 1)).leading_zeros();
    let sub_bucket = value >> bucket;
    // Ranges above the first share their lower half with the one below, so each adds 128 counters.
    let index = (((bucket as u64) + 1) << 7) + sub_bucket - SUB_BUCKETS / 2;
    index as usize
}

/// The lowest value counted by the counter at `index`.
fn counter_value(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let bucket = (index >> 7) - 1;
    let sub_bucket = (index & (SUB_BUCKETS / 2 - 1)) + SUB_BUCKETS / 2;
    sub_bucket << bucket
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST, 2).expect("valid histogram bounds")
}

impl Latency {
    fn new() -> Latency {
        Latency(std::array::from_fn(|_| Padded((0..COUNTS).map(|_| AtomicU64::new(0)).collect())))
    }

    pub(crate) fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).min(HIGHEST);
        self.0[stripe()].0[counter_index(micros)].fetch_add(1, Ordering::Relaxed);
    }

    fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for index in 0..COUNTS {
            let count = self.0.iter().map(|stripe| stripe.0[index].load(Ordering::Relaxed)).sum::<u64>();
            if count > 0 {
                all.saturating_record_n(counter_value(index), count);
            }
        }
        all
    }

    pub(crate) fn quantiles(&self) -> Quantiles {
        quantiles(&self.merged())
    }

    /// Cumulative counts at `bounds_ms`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    pub(crate) fn buckets(&self, bounds_ms: &[f64]) -> Buckets {
        let all = self.merged();
        let cumulative = bounds_ms
            .iter()
            .map(|&bound| {
                let micros = (bound * 1000.0) as u64;
                (bound, if all.is_empty() { 0 } else { all.count_between(0, micros) })
            })
            .collect();
        Buckets { cumulative, count: all.len(), sum_ms: all.mean() * all.len() as f64 / 1000.0 }
    }
}

/// A histogram's distribution in milliseconds.
#[allow(clippy::cast_precision_loss)] // microsecond counts far below 2^52
pub fn quantiles(h: &Histogram<u64>) -> Quantiles {
    if h.is_empty() {
        return Quantiles::default();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Quantiles {
        count: h.len(),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

/// A connection held past `DB_POOL_LEAK_THRESHOLD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leak {
    /// How long it has been held; in JSON, `held_for` in whole milliseconds.
    #[serde(rename = "held_for", serialize_with = "millis", deserialize_with = "from_millis")]
    pub held_for: Duration,
    /// `file:line:column` of the `Pool::get` call that checked it out.
    pub location: String,
    /// The name of the thread that checked it out, if it has one.
    pub thread: Option<String>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

fn from_millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// Everything the pool counts.
///
/// The successful checkouts and the queries are not counted apart: they are the counts of `checkout_wait`
/// and `query_time`, which record every one (two atomic writes a request fewer).
pub(crate) struct Metrics {
    pub(crate) checkout_timeouts: Counter,
    pub(crate) waiting: Counter,
    pub(crate) checkout_wait: Latency,
    pub(crate) opened: Counter,
    pub(crate) connect_errors: Counter,
    pub(crate) connect_time: Latency,
    closed: [Counter; CloseReason::COUNT],
    pub(crate) reset_transaction: Counter,
    pub(crate) reset_session: Counter,
    pub(crate) validations: Counter,
    pub(crate) validations_skipped: Counter,
    pub(crate) held: Latency,
    pub(crate) query_errors: Counter,
    pub(crate) query_time: Latency,
    pub(crate) leak_warnings: Counter,
    pub(crate) statement_hits: Counter,
    pub(crate) statement_misses: Counter,
    pub(crate) statements_prepared: Counter,
    pub(crate) statement_evictions: Counter,
    pub(crate) statement_invalidations: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            checkout_timeouts: Counter::default(),
            waiting: Counter::default(),
            checkout_wait: Latency::new(),
            opened: Counter::default(),
            connect_errors: Counter::default(),
            connect_time: Latency::new(),
            closed: Default::default(),
            reset_transaction: Counter::default(),
            reset_session: Counter::default(),
            validations: Counter::default(),
            validations_skipped: Counter::default(),
            held: Latency::new(),
            query_errors: Counter::default(),
            query_time: Latency::new(),
            leak_warnings: Counter::default(),
            statement_hits: Counter::default(),
            statement_misses: Counter::default(),
            statements_prepared: Counter::default(),
            statement_evictions: Counter::default(),
            statement_invalidations: Counter::default(),
        }
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].incr();
    }

    pub(crate) fn snapshot(&self) -> PoolMetrics {
        let get = Counter::get;
        let closed = |reason: CloseReason| get(&self.closed[reason as usize]);
        let (checkout_wait_ms, query_ms) = (self.checkout_wait.quantiles(), self.query_time.quantiles());
        PoolMetrics {
            checkouts: checkout_wait_ms.count,
            checkout_timeouts: get(&self.checkout_timeouts),
            waiting: get(&self.waiting),
            checkout_wait_ms,
            checkout_wait_buckets: self.checkout_wait.buckets(&WAIT_BUCKETS_MS),
            connections_opened: get(&self.opened),
            connect_errors: get(&self.connect_errors),
            connect_ms: self.connect_time.quantiles(),
            connections_closed: ClosedCounts {
                max_age: closed(CloseReason::MaxAge),
                broken: closed(CloseReason::Broken),
                idle: closed(CloseReason::Idle),
                per_request: closed(CloseReason::PerRequest),
                closed_by_server: closed(CloseReason::ClosedByServer),
                panicked: closed(CloseReason::Panicked),
                unclean: closed(CloseReason::Unclean),
            },
            connections_reset: ResetCounts {
                transaction: get(&self.reset_transaction),
                session: get(&self.reset_session),
            },
            validations: get(&self.validations),
            validations_skipped: get(&self.validations_skipped),
            held_ms: self.held.quantiles(),
            queries: query_ms.count,
            query_errors: get(&self.query_errors),
            query_ms,
            leak_warnings: get(&self.leak_warnings),
            statement_cache: StatementCacheCounts {
                hits: get(&self.statement_hits),
                misses: get(&self.statement_misses),
                prepared: get(&self.statements_prepared),
                evictions: get(&self.statement_evictions),
                invalidations: get(&self.statement_invalidations),
            },
        }
    }
}

/// Starts the thread that reports leaks; it ends by itself once the pool is gone.
pub(crate) fn spawn_leak_detector(watches: Weak<Watches>, metrics: Weak<Metrics>, threshold: Duration) {
    let period = (threshold / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    crate::deadline::spawn_periodic(
        "pgconn-leak-detector",
        period,
        "the leak detector thread, leaks will not be reported",
        move || {
            let (Some(watches), Some(metrics)) = (watches.upgrade(), metrics.upgrade()) else {
                return false;
            };
            let warned = watches.warn_older_than(threshold);
            metrics.leak_warnings.add(warned);
            true
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value from 0 to an hour, in steps that visit each power-of-two range many times.
    fn values() -> impl Iterator<Item = u64> {
        (0..=5000)
            .chain((0..64).flat_map(|shift| {
                let base = 1_u64 << shift;
                [base - 1, base, base + 1, base + base / 3, base + base / 2 + 7].into_iter()
            }))
            .chain([HIGHEST - 1, HIGHEST])
            .filter(|&v| v <= HIGHEST)
    }

    #[test]
    fn a_counter_holds_what_one_bucket_of_hdrhistogram_holds() {
        let reference = new_histogram();
        let mut seen = 0;
        for value in values() {
            let index = counter_index(value);
            assert!(index < COUNTS, "{value} has counter {index}, past {COUNTS}");
            assert_eq!(
                counter_value(index),
                reference.lowest_equivalent(value),
                "the lowest value of {value}'s counter"
            );
            assert_eq!(counter_index(counter_value(index)), index, "{value}");
            seen += 1;
        }
        assert!(seen > 5000);
        assert_eq!(counter_index(HIGHEST), COUNTS - 1);
    }

    #[test]
    fn recorded_latencies_read_back_as_hdrhistogram_would_have_them() {
        let latency = Latency::new();
        let mut reference = new_histogram();
        let mut micros = 1_u64;
        for i in 0..2000_u64 {
            // Spread over microseconds to minutes, some beyond the hour (counted as the hour).
            micros = (micros * 7 + i) % 5_000_000_000;
            latency.record(Duration::from_micros(micros));
            reference.saturating_record(micros.min(HIGHEST));
        }
        // From another thread (another stripe): merged with the rest.
        std::thread::scope(|s| {
            s.spawn(|| latency.record(Duration::from_nanos(999)));
        });
        reference.saturating_record(0);
        assert_eq!(latency.quantiles(), quantiles(&reference));
        assert_eq!(latency.merged().len(), 2001);
        let bounds = [0.5, 5.0, 1000.0, 60_000.0];
        let buckets = latency.buckets(&bounds);
        for (bound, count) in &buckets.cumulative {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let expected = reference.count_between(0, (bound * 1000.0) as u64);
            assert_eq!(*count, expected, "at {bound} ms");
        }
    }
}
