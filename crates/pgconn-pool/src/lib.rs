//! The connection pool that thread-per-request servers link into: r2d2 over the `postgres` crate, built
//! from [`pgconn_config::Settings`].
//!
//! Not built yet: this crate is a placeholder in the workspace so that the dependency direction
//! (`cli -> monitor -> pool -> config`) is fixed from the start. It exports nothing.
