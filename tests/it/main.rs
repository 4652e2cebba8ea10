//! End-to-end tests against the real PostgreSQL that `cargo xtask test` starts.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod clean;
mod client;
mod connect;
mod example;
mod failover;
mod faults;
mod libpq_params;
mod monitor;
mod network;
mod pgbouncer;
mod pgbouncer_prepared;
mod pool;
mod sql_types;
mod statement_cache;
mod tls;
