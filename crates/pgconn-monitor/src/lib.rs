//! The health monitor of a pgconn pool and of the PostgreSQL server behind it.
//!
//! Operators must see a pool's health at a glance, and hear about it before PostgreSQL answers "sorry, too
//! many clients already". This crate builds one [`Report`] from two sources: the server, asked by any
//! process over its own connection ([`ServerProbe`]: `max_connections`, client backends by state with
//! their ages and idle times, query statistics), and a live pool in the process that owns it
//! ([`PoolSnapshot`]: size, waits, timeouts, closes, leaks). The health model ([`assess`]) and the
//! renderings ([`render`]: text, JSON, Prometheus) are pure functions of those snapshots; only the probe
//! does I/O, and it never changes the pool it watches.
//!
//! ```no_run
//! use std::time::SystemTime;
//! use pgconn_monitor::{Context, PoolSnapshot, Report, ServerProbe, render};
//!
//! let settings = pgconn_config::Settings::from_env()?;
//! let pool = pgconn_pool::Pool::new(&settings)?;
//! // A server's /health: the pool's view, cheap enough for every request of a load balancer.
//! let report = Report::new(&Context::new(&settings), None, Some(&PoolSnapshot::of(&pool)), SystemTime::now());
//! println!("{}", render::json(&report, true));
//! // The operator's view: the server too.
//! let server = ServerProbe::new(&settings).probe();
//! let report = Report::new(&Context::new(&settings), Some(&server), None, SystemTime::now());
//! println!("{}", render::text(&report, false));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod health;
mod model;
mod probe;
pub mod render;
mod report;
mod window;

pub use health::{Alert, Level, Status, assess, assess_pgbouncer, assess_with, utilization};
pub use model::{
    ApplicationCount, Backend, PgBouncerRow, PgBouncerSnapshot, PgBouncerView, PoolSnapshot, QuerySource,
    QueryStats, ServerSnapshot, ServerView, Thresholds,
};
pub use probe::{MONITOR_APPLICATION_NAME, PROBE_STATEMENT_TIMEOUT, PgBouncerProbe, ServerProbe};
pub use report::{Context, PgBouncerSection, Report};
pub use window::{DEFAULT_WINDOW, PoolRates, Rates, ServerRates, Window};
