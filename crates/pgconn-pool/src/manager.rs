//! The r2d2 connection manager: bounded connects, validation with a deadline and a bypass window, and a
//! jittered lifetime per connection.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Error;
use crate::connect::Connector;
use crate::metrics::{CloseReason, Metrics};
use crate::socket::Socket;

/// A connection returned this recently is handed out again without a validation round trip (HikariCP's
/// choice too): in steady state a checkout then costs no network round trip.
///
/// The price: a connection the server closed within this window after its last use (a
/// `pg_terminate_backend`, a restart) is handed out once, its first statement fails as
/// [`crate::ErrorKind::ConnectionLost`], and it is closed; the request's retry gets a good connection. There
/// is no cheaper way to see the close: the `postgres` crate reads the socket only while a call is in
/// progress (a zero-length wait on its notification stream costs a 1 ms timer tick, more than a round trip).
pub const VALIDATION_BYPASS: Duration = Duration::from_millis(500);

/// The longest a validation round trip may take; a connection that does not answer within it (or within
/// `DB_CONNECT_TIMEOUT`, if shorter) is discarded.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Each connection's lifetime is shortened by a random amount up to this fraction of `DB_CONN_MAX_AGE`
/// (HikariCP: 2.5%), so connections opened together are not all replaced together.
pub const MAX_AGE_JITTER: f64 = 0.025;

/// One pooled connection and what the pool knows about it.
pub(crate) struct Conn {
    /// Present until the connection is dropped.
    client: Option<postgres::Client>,
    pub(crate) opened: Instant,
    /// Not handed out at or after this instant; `None` when `DB_CONN_MAX_AGE=none`.
    pub(crate) deadline: Option<Instant>,
    /// When it was last returned to the pool.
    returned: Option<Instant>,
    /// Set when it failed in use: closed on return.
    pub(crate) broken: bool,
    close_reason: Option<CloseReason>,
    /// The server process id, once asked.
    pub(crate) backend_pid: Option<i32>,
    /// Its TCP socket in this process, when calls have a client-side deadline.
    pub(crate) socket: Option<Socket>,
    metrics: Arc<Metrics>,
}

impl Conn {
    /// The client.
    pub(crate) fn client(&mut self) -> &mut postgres::Client {
        self.client.as_mut().expect("a connection holds its client until dropped")
    }

    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// Marks how this connection will be counted when it is closed.
    pub(crate) fn close_as(&mut self, reason: CloseReason) {
        self.close_reason = Some(reason);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let reason = self.close_reason.unwrap_or(if self.expired(Instant::now()) {
            CloseReason::MaxAge
        } else {
            CloseReason::Idle
        });
        self.metrics.closed(reason);
        let Some(client) = self.client.take() else { return };
        if reason != CloseReason::Broken {
            // A healthy close: the server answers the terminate message and closes its end.
            return drop(client);
        }
        // A broken connection's server may never answer (stopped, unreachable), and the `postgres` crate
        // waits for the server to close its end: never let that hold the caller.
        match self.socket {
            Some(socket) => {
                socket.shutdown();
                drop(client);
            }
            None => close_in_background(client),
        }
    }
}

/// Closes `client` on a thread of its own, so that a server that does not answer holds only that thread.
fn close_in_background(client: postgres::Client) {
    static CLOSING: AtomicUsize = AtomicUsize::new(0);
    let closing = CLOSING.fetch_add(1, Ordering::Relaxed) + 1;
    if closing > 32 && closing.is_power_of_two() {
        log::warn!("{closing} broken connections are still waiting for their server to close them");
    }
    let spawned = std::thread::Builder::new().name("pgconn-close".into()).spawn(move || {
        drop(client);
        CLOSING.fetch_sub(1, Ordering::Relaxed);
    });
    if let Err(e) = spawned {
        CLOSING.fetch_sub(1, Ordering::Relaxed);
        log::warn!("cannot start a thread to close a broken connection, leaving it open: {e}");
    }
}

/// Why r2d2 should discard a connection; handed to the error handler.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManagerError {
    /// Opening a connection failed.
    #[error(transparent)]
    Connect(Error),
    /// The connection is past its deadline (not a failure).
    #[error("connection reached DB_CONN_MAX_AGE")]
    Expired,
    /// The connection failed validation.
    #[error("connection failed validation: {0}")]
    Invalid(Error),
}

/// The last connection failure, for telling a caller the real cause instead of "timed out".
#[derive(Default)]
pub(crate) struct LastConnectError(Mutex<Option<(Instant, Error)>>);

impl LastConnectError {
    pub(crate) fn set(&self, error: Option<Error>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = error.map(|e| (Instant::now(), e));
    }

    /// The last failure, if it happened after `since`.
    pub(crate) fn since(&self, since: Instant) -> Option<Error> {
        match &*self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((at, error)) if *at >= since => Some(error.clone()),
            _ => None,
        }
    }
}

pub(crate) struct Manager {
    pub(crate) connector: Connector,
    pub(crate) max_age: Option<Duration>,
    pub(crate) validation_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) last_error: Arc<LastConnectError>,
    /// Whether each new connection's socket is looked up, for `DB_QUERY_TIMEOUT`.
    pub(crate) find_socket: bool,
    random: RandomState,
}

impl Manager {
    pub(crate) fn new(
        connector: Connector,
        max_age: Option<Duration>,
        connect_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Manager {
        Manager {
            connector,
            max_age,
            validation_timeout: VALIDATION_TIMEOUT.min(connect_timeout),
            metrics,
            last_error: Arc::default(),
            find_socket: false,
            random: RandomState::new(),
        }
    }

    /// Opens a connection with its own jittered deadline, counting it.
    pub(crate) fn open(&self) -> Result<Conn, Error> {
        let started = Instant::now();
        match self.connector.connect() {
            Ok(mut client) => {
                let socket = if self.find_socket { Socket::of(&mut client) } else { None };
                if self.find_socket && socket.is_none() {
                    log::debug!(
                        "no socket found for a new connection: DB_QUERY_TIMEOUT is not enforced on it"
                    );
                }
                let opened = Instant::now();
                self.metrics.opened.fetch_add(1, Ordering::Relaxed);
                self.metrics.connect_time.record(opened - started);
                self.last_error.set(None);
                Ok(Conn {
                    client: Some(client),
                    opened,
                    deadline: self
                        .max_age
                        .and_then(|age| opened.checked_add(age.saturating_sub(self.jitter(age)))),
                    returned: None,
                    broken: false,
                    close_reason: None,
                    backend_pid: None,
                    socket,
                    metrics: Arc::clone(&self.metrics),
                })
            }
            Err(e) => {
                self.metrics.connect_errors.fetch_add(1, Ordering::Relaxed);
                self.last_error.set(Some(e.clone()));
                Err(e)
            }
        }
    }

    /// A random duration from zero to [`MAX_AGE_JITTER`] of `age`.
    #[allow(clippy::cast_precision_loss)] // 53 bits of randomness are plenty
    fn jitter(&self, age: Duration) -> Duration {
        let random = self.random.hash_one(Instant::now()) >> 11; // 53 random bits
        let fraction = random as f64 / (1_u64 << 53) as f64;
        age.mul_f64(MAX_AGE_JITTER * fraction)
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = ManagerError;

    fn connect(&self) -> Result<Conn, ManagerError> {
        self.open().map_err(ManagerError::Connect)
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), ManagerError> {
        let now = Instant::now();
        if conn.expired(now) {
            conn.close_as(CloseReason::MaxAge);
            return Err(ManagerError::Expired);
        }
        if conn.client().is_closed() {
            conn.close_as(CloseReason::Broken);
            return Err(ManagerError::Invalid(Error::Unsupported("connection closed while idle".into())));
        }
        if conn.returned.is_some_and(|returned| now.saturating_duration_since(returned) < VALIDATION_BYPASS) {
            self.metrics.validations_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.metrics.validations.fetch_add(1, Ordering::Relaxed);
        conn.client().is_valid(self.validation_timeout).map_err(|e| {
            conn.close_as(CloseReason::Broken);
            ManagerError::Invalid(Error::from_query(e, true))
        })
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        let now = Instant::now();
        conn.returned = Some(now);
        if conn.broken || conn.client().is_closed() {
            conn.close_as(CloseReason::Broken);
            true
        } else if conn.expired(now) {
            conn.close_as(CloseReason::MaxAge);
            true
        } else {
            false
        }
    }
}

/// Logs what r2d2 reports: connection failures as warnings (at most one a second of the same kind),
/// discarded connections at debug level.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog(Mutex<Option<(Instant, crate::ErrorKind)>>);

impl r2d2::HandleError<ManagerError> for ErrorLog {
    fn handle_error(&self, error: ManagerError) {
        match error {
            ManagerError::Connect(e) => {
                let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                let repeat =
                    last.is_some_and(|(at, kind)| kind == e.kind() && now - at < Duration::from_secs(1));
                if !repeat {
                    *last = Some((now, e.kind()));
                    log::warn!("{}", e.with_cause());
                }
            }
            ManagerError::Expired => log::debug!("closing a connection that reached DB_CONN_MAX_AGE"),
            ManagerError::Invalid(e) => log::info!("discarding a pooled connection: {}", e.with_cause()),
        }
    }
}
