//! The JSON the `pgconn` command prints, as types: what scripts, the tests and anyone reading
//! `pgconn load --json` can deserialize instead of looking keys up by name. The keys are an interface
//! (docs/cli.md); `pgconn monitor --json` is [`pgconn_monitor::Report`].
//!
//! The `pgconn` binary is this package's `src/main.rs`; it serializes these types.

pub mod load;
