//! The health monitor of a pgconn pool and of the PostgreSQL server behind it.
//!
//! Not built yet: this crate is a placeholder in the workspace so that the dependency direction
//! (`cli -> monitor -> pool -> config`) is fixed from the start. It exports nothing.
