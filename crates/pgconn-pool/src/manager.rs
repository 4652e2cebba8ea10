//! The r2d2 connection manager: bounded connects, a look at the socket and, when needed, validation with
//! a deadline at checkout ([`crate::lifecycle`]), and a jittered lifetime per connection.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Error;

use crate::cache::Texts;
use crate::clock::Tick;
use crate::connect::Connector;
use crate::driver::Client;
use crate::lifecycle::{Checkout, Idle, Peek, at_checkout};
use crate::metrics::{CloseReason, Metrics};
use crate::session::TxStatus;
use crate::socket::Socket;
use crate::watch::{Watch, Watches};

/// A connection returned this recently, whose socket shows nothing from the server, is handed out again
/// without a validation round trip (HikariCP's window too): in steady state a checkout then costs no
/// network round trip.
///
/// A connection the server closed meanwhile (a `pg_terminate_backend`, a restart, `idle_session_timeout`)
/// is not handed out: its socket shows the server's last message or the end of the stream, which a
/// non-blocking `recv(MSG_PEEK)` at checkout sees. Only a connection whose socket the pool could not
/// identify ([`crate::PooledConn::has_deadline`] is false for it), and one returned less than
/// [`PEEK_BYPASS`] ago, rely on the window alone.
pub const VALIDATION_BYPASS: Duration = Duration::from_millis(500);

/// A connection returned less than this ago is handed out without even the look at its socket (one
/// `recv(MSG_PEEK)` system call; on a busy pool, a second system call per request beside the query's own):
/// a server's close that arrived within this window is met by the next statement instead, which fails
/// with `connection_lost` as it would had the close come a millisecond later, during that statement. A
/// connection idle longer is looked at, so one the server closed while it sat idle (a terminated backend,
/// a restart, `idle_session_timeout`) is still never handed out. pgx's pool skips every check for a
/// connection idle less than a second, HikariCP for half a second; this window is a thousandth of that.
pub const PEEK_BYPASS: Duration = Duration::from_millis(1);

/// The longest a validation round trip may take; a connection that does not answer within it (or within
/// `DB_CONNECT_TIMEOUT`, if shorter) is discarded.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Each connection's lifetime is shortened by a random amount up to this fraction of `DB_CONN_MAX_AGE`
/// (HikariCP: 2.5%), so connections opened together are not all replaced together.
pub const MAX_AGE_JITTER: f64 = 0.025;

thread_local! {
    /// The deadline of the checkout this thread is making, if it is making one: r2d2 validates idle
    /// connections one after another without looking at the clock, so on a silent network a checkout
    /// would take a validation timeout per idle connection. Each validation gets what is left instead.
    static CHECKOUT_DEADLINE: std::cell::Cell<Option<Tick>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (a checkout) with `deadline` as the bound of the validations it makes.
pub(crate) fn with_checkout_deadline<T>(deadline: Tick, f: impl FnOnce() -> T) -> T {
    CHECKOUT_DEADLINE.with(|cell| cell.set(Some(deadline)));
    let result = f();
    CHECKOUT_DEADLINE.with(|cell| cell.set(None));
    result
}

/// The shortest validation: what a checkout past its own deadline still gives one connection.
const MIN_VALIDATION_TIMEOUT: Duration = Duration::from_millis(10);

/// One pooled connection and what the pool knows about it.
pub(crate) struct Conn {
    /// Present until the connection is dropped.
    client: Option<Client>,
    pub(crate) opened: Tick,
    /// Not handed out at or after this instant; `None` when `DB_CONN_MAX_AGE=none`.
    pub(crate) deadline: Option<Tick>,
    /// When it was last returned to the pool.
    returned: Option<Tick>,
    /// Set when it must be closed on return (it failed in use, say), with why.
    close_reason: Option<CloseReason>,
    /// The server process id, once asked.
    pub(crate) backend_pid: Option<i32>,
    /// Its transaction status, tracked from the statements sent ([`crate::session`]).
    pub(crate) tx: TxStatus,
    /// Whether its session state may have changed since it was opened.
    pub(crate) dirty: bool,
    /// What the statement texts it ran do, and its prepared statements ([`crate::cache`]).
    pub(crate) texts: Texts,
    metrics: Arc<Metrics>,
    /// Its deadline and checkout, for the pool's watchdog and leak detector.
    pub(crate) watch: Arc<Watch>,
}

impl Conn {
    /// The client.
    pub(crate) fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("a connection holds its client until dropped")
    }

    /// Its socket, for looking at it and for deadlines: read from the client each time, never kept, so that
    /// it is always the descriptor of the client it holds now (`client()` hands the client out, and a
    /// caller could swap it for another).
    pub(crate) fn socket(&self) -> Option<Socket> {
        self.client.as_ref().map(|client| Socket::from_raw(client.fd()))
    }

    pub(crate) fn expired(&self, now: Tick) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// Records that it was returned now (r2d2's `has_broken` does it for connections returned to r2d2).
    pub(crate) fn mark_returned(&mut self, now: Tick) {
        self.returned = Some(now);
    }

    /// Whether it must be closed rather than reused.
    pub(crate) fn closing_or_expired(&self, now: Tick) -> bool {
        self.close_reason.is_some() || self.expired(now)
    }

    /// Marks this connection to be closed, and how it will be counted then.
    pub(crate) fn close_as(&mut self, reason: CloseReason) {
        self.close_reason = Some(reason);
    }

    /// Why it will be closed on return, if it will.
    pub(crate) fn closing(&self) -> Option<CloseReason> {
        self.close_reason
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let reason = self.close_reason.unwrap_or(if self.expired(Tick::now()) {
            CloseReason::MaxAge
        } else {
            CloseReason::Idle
        });
        self.metrics.closed(reason);
        // No deadline left for the watchdog to enforce on a descriptor about to be closed (a call whose
        // thread panicked never finished).
        self.watch.disarm();
        // Closing never waits for the server ([`Client`]'s drop): a healthy connection says goodbye first,
        // any other's socket is shut down at once (its server may never answer).
        if !matches!(reason, CloseReason::MaxAge | CloseReason::Idle | CloseReason::PerRequest)
            && let Some(socket) = self.socket()
        {
            socket.shutdown();
        }
        drop(self.client.take());
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
    /// Each connection's statement cache size (`Settings::statement_cache`); 0: off.
    pub(crate) statement_cache: u32,
    /// Through PgBouncer in transaction mode, where some statements break ([`crate::txmode`]).
    pub(crate) transaction_mode: bool,
    /// Where each new connection's [`Watch`] is listed.
    pub(crate) watches: Arc<Watches>,
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
            statement_cache: 0,
            transaction_mode: false,
            watches: Arc::new(Watches::new()),
            random: RandomState::new(),
        }
    }

    /// Opens a connection with its own jittered deadline, counting it.
    pub(crate) fn open(&self) -> Result<Conn, Error> {
        let started = Tick::now();
        match self.connector.connect() {
            Ok(client) => {
                let opened = Tick::now();
                self.metrics.opened.incr();
                self.metrics.connect_time.record(opened.since(started));
                self.last_error.set(None);
                Ok(Conn {
                    client: Some(client),
                    opened,
                    deadline: self.max_age.map(|age| opened.plus(age.saturating_sub(self.jitter(age)))),
                    returned: None,
                    close_reason: None,
                    backend_pid: None,
                    tx: TxStatus::Idle,
                    dirty: false,
                    texts: Texts::new(self.statement_cache, self.transaction_mode),
                    metrics: Arc::clone(&self.metrics),
                    watch: self.watches.add(),
                })
            }
            Err(e) => {
                self.metrics.connect_errors.incr();
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
    /// Boxed: a connection moves between r2d2, the parking slots and the handle on every request, and a
    /// pointer moves cheaper than the few hundred bytes of a [`Conn`].
    type Connection = Box<Conn>;
    type Error = ManagerError;

    fn connect(&self) -> Result<Box<Conn>, ManagerError> {
        self.open().map(Box::new).map_err(ManagerError::Connect)
    }

    fn is_valid(&self, conn: &mut Box<Conn>) -> Result<(), ManagerError> {
        check_out(conn, &self.metrics, self.validation_timeout, Tick::now()).map(|_| ())
    }

    fn has_broken(&self, conn: &mut Box<Conn>) -> bool {
        let now = Tick::now();
        conn.returned = Some(now);
        if conn.close_reason.is_some() {
            true
        } else if conn.client().is_closed() {
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

/// The checks of a connection about to be handed out, from r2d2's idle list or a parking slot
/// ([`crate::parking`]): [`at_checkout`]: hand it over, close it, or validate it with a round trip within
/// the checkout's deadline.
///
/// `now` is the checkout's own reading of the clock (a busy pool's checkout reads it once). Says whether it
/// made a round trip to the server (so that time has passed since `now`).
pub(crate) fn check_out(
    conn: &mut Conn,
    metrics: &Metrics,
    validation_timeout: Duration,
    now: Tick,
) -> Result<bool, ManagerError> {
    let quiet_for = now.since(conn.returned.unwrap_or(conn.opened));
    let peek = if quiet_for < PEEK_BYPASS {
        Peek::Skipped
    } else {
        conn.socket().map_or(Peek::Unknown, Socket::peek)
    };
    let idle = Idle { expired: conn.expired(now), closed: conn.client().is_closed(), peek, quiet_for };
    match at_checkout(idle) {
        Checkout::Hand => {
            metrics.validations_skipped.incr();
            Ok(false)
        }
        Checkout::Close(reason) => {
            conn.close_as(reason);
            Err(if reason == CloseReason::MaxAge {
                ManagerError::Expired
            } else {
                ManagerError::Invalid(Error::Unsupported("the server closed it while it was idle".into()))
            })
        }
        Checkout::Validate => {
            metrics.validations.incr();
            conn.client().is_valid(round_trip_timeout(validation_timeout, now)).map(|()| true).map_err(|e| {
                // Bytes waiting and then a failure: the server said goodbye (a FATAL) before closing.
                let reason =
                    if peek == Peek::Readable { CloseReason::ClosedByServer } else { CloseReason::Broken };
                conn.close_as(reason);
                ManagerError::Invalid(Error::from_query(e, true))
            })
        }
    }
}

/// The bound of a round trip at checkout: `validation_timeout`, within what is left of the checkout's wait
/// ([`with_checkout_deadline`]), and never below [`MIN_VALIDATION_TIMEOUT`].
fn round_trip_timeout(validation_timeout: Duration, now: Tick) -> Duration {
    let left = CHECKOUT_DEADLINE
        .with(std::cell::Cell::get)
        .map_or(validation_timeout, |deadline| deadline.since(now));
    validation_timeout.min(left).max(MIN_VALIDATION_TIMEOUT)
}
