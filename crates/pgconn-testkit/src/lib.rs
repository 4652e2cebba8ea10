//! Throwaway PostgreSQL clusters for tests and xtask.
//!
//! [`Cluster::start`] runs `initdb` into a fresh directory, starts the server on a free port on
//! 127.0.0.1 with its own Unix-socket directory and fsync off, and creates the role [`APP_USER`] (a
//! scram-sha-256 password full of URL-special characters) and the database [`DATABASE`]. [`ConnInfo`]
//! says how to connect. Dropping the [`Cluster`] stops the server and removes the directory, however its
//! owner ends (an error, a failed assertion's unwinding).
//!
//! `cargo xtask test` starts one shared cluster for the whole test suite with it; a test that must not
//! disturb that one (it restarts the server, fills `max_connections`, stops a backend) starts a private
//! cluster of its own with [`Cluster::start_temp`]:
//!
//! ```no_run
//! use pgconn_testkit::{Cluster, ClusterOptions, ShutdownMode};
//!
//! let mut cluster = Cluster::start_temp(&ClusterOptions::default().setting("max_connections", "20"))?;
//! let url = cluster.info().database_url();
//! // ... connect to `url` ...
//! cluster.restart(ShutdownMode::Immediate)?; // same port: `url` still points at it
//! drop(cluster); // stopped, directory removed
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! A streaming standby of a cluster, for failover tests, comes from [`Cluster::start_standby`]
//! (`pg_basebackup`, its own port, the same roles and password); [`Cluster::promote`] makes it a primary:
//!
//! ```no_run
//! use pgconn_testkit::{Cluster, ClusterOptions, ShutdownMode};
//!
//! let mut primary = Cluster::start_temp(&ClusterOptions::default())?;
//! let standby = primary.start_standby(&ClusterOptions::default())?; // read-only, streaming
//! primary.stop_server_with(ShutdownMode::Immediate)?;
//! standby.promote()?; // accepts writes from now on
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user
//! ([`ServerUser`]); as a normal user it runs as that user.
//!
//! A real PgBouncer goes in front of a cluster with [`PgBouncer::in_front_of`], configured by the
//! `pgbouncer.ini` that `pgconn pgbouncer-ini` renders (the caller names the `pgconn` binary; `cargo
//! xtask test` exports its path as [`PGCONN_BIN_VAR`]). PgBouncer runs as the same user as the server:
//!
//! ```no_run
//! use std::path::Path;
//! use pgconn_testkit::{Cluster, ClusterOptions, PgBouncer, PgBouncerOptions};
//!
//! let cluster = Cluster::start_temp(&ClusterOptions::default())?;
//! let pgconn = Path::new("target/debug/pgconn");
//! let env = [("PGBOUNCER_DEFAULT_POOL_SIZE", "5")];
//! let mut bouncer = PgBouncer::in_front_of(&cluster, pgconn, &env, &PgBouncerOptions::default())?;
//! let url = bouncer.info().database_url(); // pgconn_app through PgBouncer
//! bouncer.restart()?; // same port: `url` still points at it
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! A cluster started with [`ClusterOptions::with_tls`] serves TLS with a certificate made for it (rcgen):
//! a CA of its own, whose certificate is [`Cluster::ca_file`] (for `sslrootcert`), signed a server
//! certificate that names `localhost` only; [`TestCa`] makes other CAs ([`tls`]).
//!
//! This is test infrastructure, not part of pgconn: it returns [`anyhow::Error`]s (the caller only reports
//! them), uses `unsafe` for `kill(2)` in [`signal`], and prints nothing unless asked to
//! ([`ClusterOptions::progress`]); only a failure to clean up while dropping, which cannot be returned, is
//! reported on stderr without being asked. It depends on no other pgconn crate.

mod cluster;
mod host;
mod pgbouncer;
mod process;
mod psql;
mod server;
pub mod signal;
mod standby;
mod sweep;
pub use sweep::remove_abandoned_clusters;
pub mod tls;
pub mod vars;

pub use cluster::{
    ADMIN_USER, APP_USER, Cluster, ClusterOptions, ConnInfo, DATABASE, Inaccessible, POSTGRES_STOP,
    POSTGRES_STOP_IMMEDIATE, ShutdownMode, is_postgres_for,
};
pub use host::{ServerUser, find_bindir, system_tool_installed};
/// The signal numbers for [`signal::kill`] and the other libc items of this crate's interface.
#[doc(no_inline)]
pub use libc;
pub use pgbouncer::{
    AUTH_FILE, INI_FILE, LOG_FILE, PGBOUNCER_STOP, PGCONN_BIN_VAR, PID_FILE, PgBouncer, PgBouncerInfo,
    PgBouncerOptions, find_pgbouncer, is_pgbouncer_for, read_pid_file, stop_pgbouncers_in,
};
pub use process::{GuardedChild, Interrupted, StopStep, stop_pid};
pub use psql::Psql;
pub use tls::TestCa;
