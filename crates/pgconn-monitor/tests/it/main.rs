//! pgconn-monitor's pure parts: the health model and the renderings, from hand-made snapshots.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod health;
mod promtool;
mod render;

use std::time::Duration;

use pgconn_monitor::{Backend, QuerySource, QueryStats, ServerSnapshot, ServerView};

/// A backend in `state`, `age` seconds old, idle for `idle` seconds.
pub(crate) fn backend(pid: i32, state: &str, age: f64, idle: Option<f64>) -> Backend {
    Backend {
        pid,
        state: state.into(),
        age_s: age,
        idle_s: idle,
        user: "app".into(),
        application_name: "pgconn".into(),
    }
}

/// A server with `used` of `max` slots taken, and these backends on the database.
pub(crate) fn server(used: u32, max: u32, connections: Vec<Backend>) -> ServerView {
    ServerView::Reached(ServerSnapshot {
        database: "app".into(),
        max_connections: max,
        reserved_connections: 3,
        server_connections: used,
        connections_hidden: 0,
        by_application: Vec::new(),
        connections,
        backend_pid: 4242,
        connection_age: Duration::from_millis(45_200),
        query_stats: Some(QueryStats {
            source: QuerySource::PgStatDatabase,
            total_queries: 1523,
            errors: 0,
            avg_query_time_ms: Some(12.3),
        }),
    })
}
