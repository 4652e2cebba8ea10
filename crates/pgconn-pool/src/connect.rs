//! Opening one connection within `DB_CONNECT_TIMEOUT`, handshake and authentication included.
//!
//! The `postgres` crate applies `connect_timeout` to the TCP connect only: a server that accepts and then
//! says nothing (a stopped postmaster, a half-dead proxy) would hold the caller forever. The only handle on
//! a blocking connect that is still in progress is its thread, so each connect runs on a short-lived thread
//! and the caller waits for it at most the timeout. A connect that is given up on finishes, or fails, on
//! its own thread; its connection, if it ever arrives, is closed. To keep a server that stays silent from
//! piling up such threads, at most [`MAX_ABANDONED`] may be outstanding per process; past that, connects
//! fail at once until some finish.
//!
//! TLS ([`crate::tls`]) is set up here too, once per connector: reading `sslrootcert` and building the
//! rustls configuration happen when the pool is built, and each connect only clones an `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pgconn_config::{ConnParams, Settings, SslMode, Strategy};

use crate::Error;
use crate::driver::{Client, ConnectError, TcpOptions};
use crate::tls::Tls;

/// Connect attempts given up on whose threads have not finished yet, per process, at most.
pub const MAX_ABANDONED: usize = 32;

/// TCP keepalive: the first probe after this much silence on a connection (libpq and the kernel: 2 hours).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// TCP keepalive: the time between unanswered probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// TCP keepalive: unanswered probes before the kernel gives the connection up.
pub const KEEPALIVE_RETRIES: u32 = 3;

/// `TCP_USER_TIMEOUT`: data sent (a query, a keepalive probe) that the peer's kernel has not acknowledged
/// for this long closes the connection (the kernel's default is about 15 minutes of retransmissions,
/// `tcp_retries2`). It fires only when the path or the peer's host is dead: a slow query is acknowledged
/// by the peer's kernel at once.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// What a connect needs, prepared once per pool.
#[derive(Clone)]
pub(crate) struct Connector {
    /// The startup parameters of pgconn's own connections ([`crate::driver`]).
    startup: tokio_postgres::Config,
    /// The hosts, and how to choose among them.
    params: Arc<ConnParams>,
    tcp: TcpOptions,
    /// The same for a `postgres::Client` ([`connect`]).
    config: postgres::Config,
    /// `None`: plain connections only (`sslmode=disable`, or Unix sockets), exactly as without TLS.
    tls: Option<Tls>,
    sslmode: SslMode,
    timeout: Duration,
    /// `user@host:port/dbname`, for messages.
    pub(crate) target: String,
}

impl Connector {
    /// The `postgres` configuration for the settings' target: its parameters, the application name, the
    /// TCP connect bound and, for the direct strategy, the statement timeout as a startup option (so it
    /// costs no round trip). Through PgBouncer nothing session-level is sent: PgBouncer 1.18 refuses the
    /// `options` startup parameter. The TLS configuration follows the target's own `sslmode` and
    /// `sslrootcert` (for PgBouncer, `PGBOUNCER_URL`'s).
    ///
    /// # Errors
    /// When `sslrootcert` is needed and cannot be used (missing, unreadable, no CA certificate in it).
    pub(crate) fn new(settings: &Settings) -> Result<Connector, Error> {
        let var = match settings.strategy {
            Strategy::Direct => "DATABASE_URL",
            Strategy::PgBouncer => "PGBOUNCER_URL",
        };
        let tls = Tls::new(&settings.target, var)?;
        let mut config = settings.target.to_postgres_config();
        if tls.is_none() {
            // Nothing to try: `disable`, or only Unix sockets, where PostgreSQL offers no TLS (and libpq
            // ignores sslmode).
            config.ssl_mode(postgres::config::SslMode::Disable);
        }
        config.application_name(settings.application_name());
        config.connect_timeout(settings.connect_timeout);
        // A dead peer is found on an idle connection within about KEEPALIVE_IDLE + TCP_USER_TIMEOUT
        // (the user timeout also bounds unanswered keepalive probes), on a busy one within
        // TCP_USER_TIMEOUT, whatever DB_QUERY_TIMEOUT says. Unix sockets ignore both.
        // The URL's keepalives, keepalives_idle, keepalives_interval, keepalives_count and
        // tcp_user_timeout replace these, one by one.
        let tcp = &settings.target.tcp;
        config
            .keepalives(tcp.keepalives.unwrap_or(true))
            .keepalives_idle(tcp.keepalives_idle.unwrap_or(KEEPALIVE_IDLE))
            .keepalives_interval(tcp.keepalives_interval.unwrap_or(KEEPALIVE_INTERVAL))
            .keepalives_retries(tcp.keepalives_count.unwrap_or(KEEPALIVE_RETRIES))
            .tcp_user_timeout(tcp.user_timeout.unwrap_or(TCP_USER_TIMEOUT));
        if settings.strategy == Strategy::Direct
            && let Some(timeout) = settings.statement_timeout
        {
            let ours = format!("-c statement_timeout={}", timeout.as_millis());
            let options = match &settings.target.options {
                Some(theirs) => format!("{theirs} {ours}"),
                None => ours,
            };
            config.options(&options);
        }
        let mut startup = settings.target.to_tokio_postgres_config();
        if tls.is_none() {
            startup.ssl_mode(postgres::config::SslMode::Disable);
        }
        startup.application_name(settings.application_name());
        if let Some(options) = config.get_options() {
            startup.options(options);
        }
        let tcp = TcpOptions {
            keepalives: tcp.keepalives.unwrap_or(true),
            idle: tcp.keepalives_idle.unwrap_or(KEEPALIVE_IDLE),
            interval: tcp.keepalives_interval.unwrap_or(KEEPALIVE_INTERVAL),
            count: tcp.keepalives_count.unwrap_or(KEEPALIVE_RETRIES),
            user_timeout: tcp.user_timeout.unwrap_or(TCP_USER_TIMEOUT),
        };
        Ok(Connector {
            startup,
            params: Arc::new(settings.target.clone()),
            tcp,
            config,
            tls,
            sslmode: settings.target.sslmode,
            timeout: settings.connect_timeout,
            target: settings.target.to_string(),
        })
    }

    /// Opens one of pgconn's own connections ([`crate::driver`]), or fails within the connect timeout with
    /// the reason.
    pub(crate) fn connect(&self) -> Result<Client, Error> {
        let (startup, params, tls, tcp) = (
            self.startup.clone(),
            Arc::clone(&self.params),
            self.tls.as_ref().map(|tls| tls.connect.clone()),
            self.tcp,
        );
        let timeout = self.timeout;
        let result =
            self.on_connect_thread(move || Client::open(&params, &startup, tls.as_ref(), tcp, timeout))?;
        result.map_err(|e| match e {
            ConnectError::TimedOut => self.timed_out(),
            ConnectError::Socket { address, error } => Error::ConnectFailed {
                target: self.target.clone(),
                reason: format!("error connecting to server at {address}: {error}"),
                source: Arc::new(crate::driver::io_error(error)),
            },
            ConnectError::Attrs(what) => self.failure(
                crate::driver::io_error(std::io::Error::new(std::io::ErrorKind::PermissionDenied, what)),
                what,
            ),
            // A kernel timeout during TLS or authentication (TCP_USER_TIMEOUT, keepalives) is the same
            // timeout as ours and gets the same kind, as with the `postgres` crate's connect.
            ConnectError::Driver(e) if timed_out_in_driver(&e) => self.timed_out(),
            ConnectError::Driver(e) => {
                let text = chain(&e);
                self.failure(e, &text)
            }
        })
    }

    /// Opens a `postgres::Client` ([`connect`]), or fails within the connect timeout with the reason.
    fn connect_postgres(&self) -> Result<postgres::Client, Error> {
        let config = self.config.clone();
        let tls = self.tls.as_ref().map(|tls| tls.connect.clone());
        let result = self.on_connect_thread(move || match tls {
            Some(tls) => config.connect(tls),
            None => config.connect(postgres::NoTls),
        })?;
        result.map_err(|e| {
            // The driver's own TCP connect bound is the same DB_CONNECT_TIMEOUT; when it fires before
            // ours, it is the same timeout and gets the same kind.
            if timed_out_in_driver(&e) {
                return self.timed_out();
            }
            let text = chain(&e);
            self.failure(e, &text)
        })
    }

    fn timed_out(&self) -> Error {
        Error::ConnectTimeout { target: self.target.clone(), timeout: self.timeout }
    }

    /// Runs `connect` on a thread of its own and waits for it at most the connect timeout: a connect that
    /// is given up on finishes, or fails, on its own thread, and its connection, if any, is closed there.
    fn on_connect_thread<C: Send + 'static>(
        &self,
        connect: impl FnOnce() -> C + Send + 'static,
    ) -> Result<C, Error> {
        if ABANDONED.load(Ordering::Relaxed) >= MAX_ABANDONED {
            log::warn!(
                "{MAX_ABANDONED} earlier connects to {} are still hanging; not starting another",
                self.target
            );
            return Err(self.timed_out());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let state = Arc::new(AtomicU8::new(WAITING));
        let thread_state = Arc::clone(&state);
        let spawned = thread::Builder::new().name("pgconn-connect".into()).spawn(move || {
            let result = connect();
            if thread_state.compare_exchange(WAITING, DONE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                let _ = tx.send(result);
            } else {
                // The caller gave up: the connection, if any, is dropped here, which closes it.
                drop(result);
                ABANDONED.fetch_sub(1, Ordering::AcqRel);
            }
        });
        if let Err(e) = spawned {
            return Err(Error::Unsupported(format!("cannot start a thread to connect: {e}")));
        }
        if let Ok(result) = rx.recv_timeout(self.timeout) {
            return Ok(result);
        }
        ABANDONED.fetch_add(1, Ordering::AcqRel);
        if state.compare_exchange(WAITING, GIVEN_UP, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return Err(self.timed_out());
        }
        // It finished just as the time ran out: its result is on its way.
        ABANDONED.fetch_sub(1, Ordering::AcqRel);
        rx.recv().map_err(|_| self.timed_out())
    }

    /// The pool's error for the driver's `e`, whose message and causes read `text`.
    fn failure(&self, e: postgres::Error, text: &str) -> Error {
        if let Some(reason) = self.tls.as_ref().and_then(|tls| tls.failure(&e, self.sslmode)) {
            return Error::ConnectFailed { target: self.target.clone(), reason, source: Arc::new(e) };
        }
        // tokio-postgres says these in its own words, which name no setting.
        let known = if text.contains("password missing") {
            return Error::AuthFailed {
                target: self.target.clone(),
                reason: "the server asks for a password and none was given (not in the URL, DB_PASSWORD, \
                         PGPASSWORD, nor a password file that matches and is private)"
                    .to_owned(),
                source: Arc::new(e),
            };
        } else if text.contains("channel binding") {
            Some(
                "channel_binding=require, and the server did not bind its SCRAM authentication to TLS \
                 (that needs TLS, sslmode=require or stronger, and SCRAM-SHA-256-PLUS, which PgBouncer \
                 1.18 never offers); use channel_binding=prefer to allow it unbound",
            )
        } else if text.contains("database is not read only") {
            Some(
                "target_session_attrs=read-only, and no host's sessions are read-only (no standby among them)",
            )
        } else if text.contains("database does not allow writes") {
            Some("target_session_attrs=read-write, and no host accepts writes (no primary among them)")
        } else {
            None
        };
        match known {
            Some(reason) => Error::ConnectFailed {
                target: self.target.clone(),
                reason: reason.to_owned(),
                source: Arc::new(e),
            },
            None => Error::from_connect(e, &self.target),
        }
    }
}

/// Whether the driver's error is an I/O timeout.
fn timed_out_in_driver(e: &postgres::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
}

/// An error's message with its causes, `: `-separated.
fn chain(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Opens one dedicated connection with the pool's settings (target, application name, statement timeout,
/// connect deadline), outside any pool: for `LISTEN`, long sessions, or as a baseline to compare with.
///
/// # Errors
/// As [`crate::Pool::new`].
pub fn connect(settings: &Settings) -> Result<postgres::Client, Error> {
    Connector::new(settings)?.connect_postgres()
}

/// Reads every certificate and key file the settings name (the target's, and the database's for the
/// monitor) and checks them as a pool would when built, without connecting: for `pgconn config`.
///
/// # Errors
/// [`Error::Unsupported`] naming the variable, the file and what is wrong with it.
pub fn check_tls(settings: &Settings) -> Result<(), Error> {
    let target_var = match settings.strategy {
        Strategy::Direct => "DATABASE_URL",
        Strategy::PgBouncer => "PGBOUNCER_URL",
    };
    Tls::new(&settings.target, target_var)?;
    if settings.strategy == Strategy::PgBouncer {
        Tls::new(&settings.database, "DATABASE_URL")?;
    }
    Ok(())
}

/// Connect attempts given up on whose threads are still running, in this process.
pub fn abandoned_connects() -> usize {
    ABANDONED.load(Ordering::Relaxed)
}

const WAITING: u8 = 0;
const DONE: u8 = 1;
const GIVEN_UP: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(url: &str) -> Connector {
        let settings =
            Settings::from_vars([("DATABASE_URL", url), ("HOME", "/nonexistent/pgconn-pool-tests")])
                .expect("valid settings");
        Connector::new(&settings).expect("a connector")
    }

    #[test]
    fn keepalives_default_and_the_urls_replace_them_one_by_one() {
        let config = connector("postgresql://u@h/d").config;
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));

        let config =
            connector("postgresql://u@h/d?keepalives_idle=7&keepalives_count=4&tcp_user_timeout=12000")
                .config;
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(7));
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(4));
        assert_eq!(config.get_tcp_user_timeout(), Some(&Duration::from_secs(12)));
        assert!(!connector("postgresql://u@h/d?keepalives=0").config.get_keepalives());
    }
}
