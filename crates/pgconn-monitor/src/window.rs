//! Rates over a sliding window, for alerts that must clear once a burst has passed.
//!
//! Counters (checkouts, timeouts, queries, errors) only grow; judging them since the pool started (or the
//! server's statistics were reset) keeps an alert for a burst long gone, and a readiness probe on it
//! would never recover. A [`Window`] remembers the counters of the reports it saw and gives the
//! difference over the last [`Window::span`]: the alerts then judge what happened in that time. The
//! Prometheus counters stay cumulative (`rate()` is Prometheus's own window).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{PoolSnapshot, ServerView};

/// The default window: the last 60 s.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// What happened in a window, in the pool and on the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// The time the rates cover, in seconds: the window (a little more when reports are further apart).
    pub window_s: f64,
    /// The pool's, when the report has a pool.
    pub pool: Option<PoolRates>,
    /// The server's (query statistics), once two probes are known.
    pub server: Option<ServerRates>,
}

/// The pool's counters over a window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PoolRates {
    /// Successful checkouts.
    pub checkouts: u64,
    /// Failed checkouts.
    pub checkout_timeouts: u64,
    /// Queries through the pool's API.
    pub queries: u64,
    /// Failed ones.
    pub query_errors: u64,
    /// Their mean time, when any ran.
    pub avg_query_time_ms: Option<f64>,
}

/// The server's query statistics over a window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ServerRates {
    /// Statements or transactions (as `query_stats.source` says).
    pub queries: u64,
    /// Rolled-back transactions.
    pub errors: u64,
    /// Mean time, when any ran.
    pub avg_query_time_ms: Option<f64>,
}

/// Cumulative counts at one instant: `(events, failures, total time in ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Totals {
    checkouts: u64,
    checkout_timeouts: u64,
    queries: u64,
    query_errors: u64,
    query_ms: f64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    pool: Option<Totals>,
    server: Option<Totals>,
}

/// The counters of recent reports, to tell what happened in the last [`span`](Window::span).
#[derive(Debug, Clone)]
pub struct Window {
    span: Duration,
    samples: VecDeque<Sample>,
}

impl Window {
    /// A window of `span` (at least 1 s).
    pub fn new(span: Duration) -> Window {
        Window { span: span.max(Duration::from_secs(1)), samples: VecDeque::new() }
    }

    /// The window's length.
    pub fn span(&self) -> Duration {
        self.span
    }

    /// Records the counters of this report's snapshots at `now` and returns what happened in the window
    /// before it. What a pool counted before the first report is taken as having happened just now (its
    /// counters start at zero with the pool), so a burst before the first report is judged for a whole
    /// window too. The server's statistics need an earlier probe to compare with: until there is one, the
    /// report has no server rates and judges them since the statistics were reset.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn observe(
        &mut self,
        now: Instant,
        pool: Option<&PoolSnapshot>,
        server: Option<&ServerView>,
    ) -> Rates {
        let pool = pool.map(|p| {
            let m = &p.metrics;
            Totals {
                checkouts: m.checkouts,
                checkout_timeouts: m.checkout_timeouts,
                queries: m.queries,
                query_errors: m.query_errors,
                query_ms: m.query_ms.mean * m.query_ms.count as f64,
            }
        });
        let server = match server {
            Some(ServerView::Reached(s)) => s.query_stats.as_ref().map(|q| Totals {
                queries: q.total_queries,
                query_errors: q.errors,
                query_ms: q.avg_query_time_ms.unwrap_or(0.0) * q.total_queries as f64,
                ..Totals::default()
            }),
            _ => None,
        };
        if self.samples.is_empty() {
            // The pool's start, placed at the window's far end.
            let start = now.checked_sub(self.span).map_or(now, |t| t + Duration::from_millis(1));
            self.samples.push_back(Sample { at: start, pool: Some(Totals::default()), server: None });
        }
        self.samples.push_back(Sample { at: now, pool, server });
        // Keep the newest sample at least `span` old as the baseline, and everything after it.
        if let Some(cutoff) = now.checked_sub(self.span) {
            while self.samples.get(1).is_some_and(|second| second.at <= cutoff) {
                self.samples.pop_front();
            }
        }
        let Some(&first) = self.samples.front() else { unreachable!("a sample was just pushed") };
        let earlier = self.samples.len() - 1;
        let server_baseline = self.samples.iter().take(earlier).find_map(|sample| sample.server);
        Rates {
            window_s: now.saturating_duration_since(first.at).as_secs_f64(),
            pool: pool.map(|now| {
                let d = difference(now, first.pool.unwrap_or_default());
                PoolRates {
                    checkouts: d.checkouts,
                    checkout_timeouts: d.checkout_timeouts,
                    queries: d.queries,
                    query_errors: d.query_errors,
                    avg_query_time_ms: (d.queries > 0).then(|| d.query_ms / d.queries as f64),
                }
            }),
            server: match (server, server_baseline) {
                (Some(now), Some(then)) => {
                    let d = difference(now, then);
                    Some(ServerRates {
                        queries: d.queries,
                        errors: d.query_errors,
                        avg_query_time_ms: (d.queries > 0).then(|| d.query_ms / d.queries as f64),
                    })
                }
                _ => None,
            },
        }
    }
}

impl Default for Window {
    fn default() -> Window {
        Window::new(DEFAULT_WINDOW)
    }
}

/// `now - then`; where a counter went down (statistics reset, a new pool), `now` itself.
fn difference(now: Totals, then: Totals) -> Totals {
    let reset = now.checkouts < then.checkouts
        || now.checkout_timeouts < then.checkout_timeouts
        || now.queries < then.queries
        || now.query_errors < then.query_errors;
    if reset {
        return now;
    }
    Totals {
        checkouts: now.checkouts - then.checkouts,
        checkout_timeouts: now.checkout_timeouts - then.checkout_timeouts,
        queries: now.queries - then.queries,
        query_errors: now.query_errors - then.query_errors,
        query_ms: (now.query_ms - then.query_ms).max(0.0),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pool(checkouts: u64, timeouts: u64) -> PoolSnapshot {
        let mut snapshot = PoolSnapshot {
            state: pgconn_pool::PoolState::default(),
            metrics: pgconn_pool::PoolMetrics::default(),
            suspected_leaks: Vec::new(),
        };
        snapshot.metrics.checkouts = checkouts;
        snapshot.metrics.checkout_timeouts = timeouts;
        snapshot
    }

    #[test]
    fn a_burst_is_judged_for_one_window_then_forgotten() {
        let mut window = Window::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // 3 timeouts before the first report: judged as recent.
        let r = window.observe(at(0), Some(&pool(10, 3)), None).pool.unwrap();
        assert_eq!((r.checkouts, r.checkout_timeouts), (10, 3));
        let r = window.observe(at(30), Some(&pool(20, 3)), None).pool.unwrap();
        assert_eq!((r.checkouts, r.checkout_timeouts), (20, 3), "still within the window");
        let r = window.observe(at(61), Some(&pool(30, 3)), None).pool.unwrap();
        assert_eq!((r.checkouts, r.checkout_timeouts), (20, 0), "compared with the report at 0 s");
        let r = window.observe(at(100), Some(&pool(40, 4)), None).pool.unwrap();
        assert_eq!((r.checkouts, r.checkout_timeouts), (20, 1), "compared with the report at 30 s");
        let r = window.observe(at(200), Some(&pool(40, 4)), None);
        assert_eq!(r.pool.unwrap().checkout_timeouts, 0);
        assert!((r.window_s - 100.0).abs() < 1e-9, "{}", r.window_s);
    }

    #[test]
    fn a_new_pool_or_a_statistics_reset_counts_from_zero() {
        let mut window = Window::new(Duration::from_secs(10));
        let t0 = Instant::now();
        window.observe(t0, Some(&pool(100, 5)), None);
        let r = window.observe(t0 + Duration::from_secs(20), Some(&pool(7, 1)), None).pool.unwrap();
        assert_eq!((r.checkouts, r.checkout_timeouts), (7, 1));
    }
}
