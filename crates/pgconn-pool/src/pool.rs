//! The pool and its connection handle.

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgconn_config::{ConnMaxAge, PoolMode, Settings, Strategy};
use postgres::types::{ToSql, Type};
use postgres::{Row, SimpleQueryMessage, Statement};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::cache::{Evicted, Lookup};
use crate::clock::Tick;
use crate::connect::Connector;
use crate::deadline::spawn_watchdog;
use crate::driver::Client;
use crate::lifecycle::{Return, Returned, at_return};
use crate::manager::{
    Conn, ErrorLog, LastConnectError, Manager, VALIDATION_TIMEOUT, check_out, with_checkout_deadline,
};
use crate::metrics::{CloseReason, Leak, Metrics, PoolMetrics, spawn_leak_detector};
use crate::parking::{Parking, Pooled, spawn_sweeper};
use crate::session::{Effect, TxStatus};
use crate::stripes::{STRIPES, stripe};
use crate::watch::Watches;

/// Pooled connections idle this long beyond `DB_POOL_MIN_IDLE` are closed (checked every 30 s by r2d2),
/// so a quiet process gives its server slots back; kept under the monitor's 5-minute idle alert.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(240);

/// A PostgreSQL connection pool configured by [`Settings`]. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    /// What a checked-out handle holds, one per stripe ([`Handle`]).
    handles: Arc<[Arc<Handle>; STRIPES]>,
}

/// A checkout that may wait for its connection, counted in the `waiting` gauge from [`Waiting::new`]
/// until dropped (whichever way the wait ends, a panic included).
struct Waiting<'a>(&'a crate::stripes::Counter);

impl<'a> Waiting<'a> {
    fn new(waiting: &'a crate::stripes::Counter) -> Waiting<'a> {
        waiting.incr();
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.decr();
    }
}

/// The pool's shared state as a checked-out connection holds it. A checkout takes a reference and the
/// return drops it, twice a request: on one reference count that every request thread wrote, a 2-core
/// machine moved that cache line between its cores on nearly every checkout. One handle per stripe
/// ([`crate::stripes`]), each its own allocation on its own cache line, so that a thread writes the count
/// of its stripe's handle only.
#[repr(align(128))]
struct Handle(Arc<Shared>);

impl std::ops::Deref for Handle {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

struct Shared {
    mode: Mode,
    settings: Settings,
    metrics: Arc<Metrics>,
    last_error: Arc<LastConnectError>,
    /// The open connections' deadlines (queries when `DB_QUERY_TIMEOUT` is on, and the resets of returned
    /// connections always) and checkouts (when `DB_POOL_LEAK_THRESHOLD` is on).
    watches: Arc<Watches>,
    /// The deadline of a reset on return (`ROLLBACK`, `DISCARD ALL`).
    reset_timeout: Duration,
    /// Whether changed session state is reset on return (direct, or PgBouncer in session mode); through
    /// PgBouncer in transaction or statement mode it is refused before it is sent.
    resets_session: bool,
    /// Returned connections kept for the thread that returned them ([`crate::parking`]); pooled mode only.
    parking: Option<Arc<Parking>>,
    /// The bound of a validation round trip at checkout.
    validation_timeout: Duration,
}

enum Mode {
    /// Connections kept and reused (`DB_CONN_MAX_AGE` > 0 or `none`).
    Pooled(r2d2::Pool<Manager>),
    /// `DB_CONN_MAX_AGE=0`: a connection per checkout.
    PerRequest { manager: Box<Manager>, open: AtomicU64 },
}

/// The pool's size now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolState {
    /// `DB_POOL_MAX_SIZE` (for `DB_CONN_MAX_AGE=0`: no limit is applied, this is the configured value).
    pub max_size: u32,
    /// Connections open.
    pub size: u32,
    /// Of those, idle in the pool.
    pub idle: u32,
    /// Of those, checked out.
    pub in_use: u32,
    /// Threads waiting for a connection.
    pub waiting: u64,
}

impl Pool {
    /// Builds a pool for `settings`: the direct strategy or PgBouncer, persistent or per request.
    ///
    /// Opens one connection first, so that a wrong password, an unknown database or an unreachable server
    /// fails here with its cause; the pool then fills up to `DB_POOL_MIN_IDLE` in the background. With
    /// `PGBOUNCER_PREPARED_STATEMENTS=true` through PgBouncer in transaction mode, that connection also
    /// checks that PgBouncer handles named prepared statements (1.21 or later, `max_prepared_statements`).
    ///
    /// # Errors
    /// The typed cause of the first connection's failure, or [`Error::Unsupported`] for a setting this
    /// build cannot honour (TLS).
    pub fn new(settings: &Settings) -> Result<Pool, Error> {
        let connector = Connector::new(settings)?;
        let metrics = Arc::new(Metrics::new());
        let max_age = settings.conn_max_age.limit();
        let mut manager = Manager::new(connector, max_age, settings.connect_timeout, Arc::clone(&metrics));
        manager.statement_cache = settings.statement_cache();
        manager.transaction_mode =
            settings.strategy == Strategy::PgBouncer && settings.pgbouncer.pool_mode != PoolMode::Session;
        let watches = Arc::clone(&manager.watches);
        spawn_watchdog(Arc::downgrade(&watches));
        let mut probe = manager.open()?;
        // Transaction mode only: statement mode allows no transaction to hold a server connection for the
        // look, so there the flag is taken on trust.
        if settings.strategy == Strategy::PgBouncer
            && settings.pgbouncer.pool_mode == PoolMode::Transaction
            && manager.statement_cache > 0
        {
            let target = settings.target.to_string();
            // Bounded like a connection attempt: a paused or saturated PgBouncer holds the BEGIN.
            let deadline = Some(Tick::now().plus(settings.connect_timeout));
            let (checked, expired) = bounded(&mut probe, deadline, |conn| {
                Ok(crate::txmode::check_prepared_statements(conn.client(), &target))
            });
            let checked = match (checked, expired) {
                (_, true) => Err(Error::Unsupported(format!(
                    "PGBOUNCER_PREPARED_STATEMENTS=true: the PgBouncer at {target} did not answer the check \
                     that it handles named prepared statements within {}s (DB_CONNECT_TIMEOUT); is it paused, \
                     or are its server connections all busy?",
                    settings.connect_timeout.as_secs()
                ))),
                (Ok(checked), false) => checked,
                (Err(e), false) => Err(Error::from_query(e, true)),
            };
            if let Err(e) = checked {
                probe.close_as(CloseReason::Idle);
                return Err(e);
            }
        }
        let last_error = Arc::clone(&manager.last_error);
        let mode = if settings.conn_max_age == ConnMaxAge::PerRequest {
            probe.close_as(CloseReason::PerRequest);
            drop(probe);
            Mode::PerRequest { manager: Box::new(manager), open: AtomicU64::new(0) }
        } else {
            // r2d2 cannot adopt a connection; this one only proved the settings work.
            probe.close_as(CloseReason::Idle);
            drop(probe);
            let pool = r2d2::Pool::builder()
                .max_size(settings.pool.max_size)
                .min_idle(Some(settings.pool.min_idle))
                .test_on_check_out(true)
                .max_lifetime(max_age)
                .idle_timeout(Some(IDLE_TIMEOUT))
                .connection_timeout(settings.pool.checkout_timeout)
                .error_handler(Box::new(ErrorLog::default()))
                .build_unchecked(manager);
            Mode::Pooled(pool)
        };
        let parking = match &mode {
            Mode::Pooled(_) => {
                let parking = Arc::new(Parking::new(settings.pool.max_size));
                spawn_sweeper(Arc::downgrade(&parking));
                Some(parking)
            }
            Mode::PerRequest { .. } => None,
        };
        if let Some(threshold) = settings.pool.leak_threshold {
            spawn_leak_detector(Arc::downgrade(&watches), Arc::downgrade(&metrics), threshold);
        }
        let shared = Arc::new(Shared {
            mode,
            settings: settings.clone(),
            metrics,
            last_error,
            watches,
            reset_timeout: VALIDATION_TIMEOUT.min(settings.connect_timeout),
            resets_session: settings.strategy == Strategy::Direct
                || settings.pgbouncer.pool_mode == PoolMode::Session,
            parking,
            validation_timeout: VALIDATION_TIMEOUT.min(settings.connect_timeout),
        });
        let handles = Arc::new(std::array::from_fn(|_| Arc::new(Handle(Arc::clone(&shared)))));
        Ok(Pool { shared, handles })
    }

    /// Checks out a connection, waiting at most `DB_POOL_TIMEOUT` for one.
    ///
    /// The connection is never past its `DB_CONN_MAX_AGE` deadline, and was either returned moments ago
    /// or has just answered a validation round trip. Dropping the handle returns it.
    ///
    /// # Errors
    /// [`Error::PoolTimeout`] when every connection stayed in use; when the pool could not open a
    /// connection meanwhile, that failure's cause instead ([`Error::TooManyClients`],
    /// [`Error::AuthFailed`], [`Error::ConnectTimeout`], [`Error::ConnectFailed`]).
    #[track_caller]
    pub fn get(&self) -> Result<PooledConn, Error> {
        self.checkout(Location::caller(), self.shared.settings.pool.checkout_timeout)
    }

    /// As [`Pool::get`], waiting at most `timeout` (and never longer than `DB_POOL_TIMEOUT`): for a
    /// readiness probe, which should answer within a second or two whatever the pool's own bound.
    ///
    /// # Errors
    /// As [`Pool::get`].
    #[track_caller]
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledConn, Error> {
        let timeout = timeout.min(self.shared.settings.pool.checkout_timeout).max(Duration::from_millis(1));
        self.checkout(Location::caller(), timeout)
    }

    fn checkout(&self, location: &'static Location<'static>, timeout: Duration) -> Result<PooledConn, Error> {
        let started = Tick::now();
        // A busy pool's common case, kept short: this thread's own connection, parked at its last return,
        // handed over at once (no wait, no round trip), judged and stamped with the checkout's start.
        // Otherwise the next is judged at `now`: the checkout's start, or the clock again after time passed.
        let now = match self.own_parked(started, timeout) {
            Own::Handed(conn) => return Ok(self.hand_over(Slot::Pooled(conn), started, started, location)),
            Own::Validated(mut conn) => {
                // A round trip took time: judged by the clock again.
                let now = Tick::now();
                if !conn.expired(now) {
                    return Ok(self.hand_over(Slot::Pooled(conn), started, now, location));
                }
                conn.close_as(CloseReason::MaxAge);
                now
            }
            // Turned down, perhaps after a failed round trip.
            Own::TurnedDown => Tick::now(),
            Own::Absent => started,
        };
        match self.checkout_waiting(started, now, timeout) {
            Ok((slot, now)) => Ok(self.hand_over(slot, started, now, location)),
            Err(e) => {
                self.shared.metrics.checkout_timeouts.incr();
                Err(e)
            }
        }
    }

    /// This thread's own parked connection ([`crate::parking`]), checked as any other at checkout
    /// ([`check_out`]) at `now`.
    fn own_parked(&self, now: Tick, timeout: Duration) -> Own {
        let shared = &self.shared;
        let Some(mut conn) = shared.parking.as_ref().and_then(|parking| parking.take_own()) else {
            return Own::Absent;
        };
        let checked = with_checkout_deadline(now.plus(timeout), || {
            check_out(&mut conn, &shared.metrics, shared.validation_timeout, now)
        });
        match checked {
            Ok(false) => Own::Handed(conn),
            Ok(true) => Own::Validated(conn),
            // Marked to be closed: dropping it makes r2d2 discard it.
            Err(_) => Own::TurnedDown,
        }
    }

    /// A connection from r2d2 (which may open one), stealing a parked one before blocking; or one opened
    /// for this checkout (`DB_CONN_MAX_AGE=0`). With the instant it was handed over.
    fn checkout_waiting(&self, started: Tick, now: Tick, timeout: Duration) -> Result<(Slot, Tick), Error> {
        let shared = &self.shared;
        match &shared.mode {
            Mode::Pooled(pool) => {
                with_checkout_deadline(started.plus(timeout), || self.fresh_get(pool, started, now, timeout))
                    .map(|(conn, at)| (Slot::Pooled(conn), at))
                    .map_err(|_| {
                        let waited = Tick::now().since(started);
                        let max_size = shared.settings.pool.max_size;
                        // While the pool could still grow, a failure to open a connection is the real cause.
                        let could_grow = pool.state().connections < max_size;
                        let lookback = timeout + shared.settings.connect_timeout;
                        let since = started.minus(lookback).instant();
                        could_grow
                            .then(|| shared.last_error.since(since))
                            .flatten()
                            .unwrap_or(Error::PoolTimeout { max_size, waited })
                    })
            }
            Mode::PerRequest { manager, open } => {
                let opened = {
                    let _waiting = Waiting::new(&shared.metrics.waiting);
                    manager.open()
                };
                opened.map(|mut conn| {
                    conn.close_as(CloseReason::PerRequest);
                    open.fetch_add(1, Ordering::Relaxed);
                    (Slot::Owned(Box::new(conn)), Tick::now())
                })
            }
        }
    }

    /// The checked-out connection, timed (asked at `started`, handed over at `now`: the record counts it)
    /// and watched.
    fn hand_over(
        &self,
        mut slot: Slot,
        started: Tick,
        now: Tick,
        location: &'static Location<'static>,
    ) -> PooledConn {
        let shared = &self.shared;
        // A connection handed over at once is stamped with the checkout's start: it waited 0.
        shared.metrics.checkout_wait.record(if now == started { Duration::ZERO } else { now.since(started) });
        let watched = shared.settings.pool.leak_threshold.is_some();
        if watched {
            slot.conn().watch.checked_out(now, location);
        }
        let shared = Arc::clone(&self.handles[stripe()]);
        PooledConn { slot: Some(slot), shared, watched, checked_out: now }
    }

    /// [`Pool::affine_get`], judged once more when it is handed over: a connection whose `DB_CONN_MAX_AGE`
    /// deadline passed between its checks and now (a preempted thread, a slow validation) is closed and
    /// another taken, so that [`PooledConn::checked_out_at`] is always before [`PooledConn::deadline`].
    fn fresh_get(
        &self,
        pool: &r2d2::Pool<Manager>,
        started: Tick,
        mut now: Tick,
        timeout: Duration,
    ) -> Result<(Pooled, Tick), r2d2::Error> {
        // What is left of the timeout at `now`: all of it when nothing came before (`now` is `started`,
        // a clock read fewer), less the time a turned-down or expired own connection took.
        let mut left = if now == started { timeout } else { started.plus(timeout).since(now) };
        loop {
            let mut conn = self.affine_get(pool, now, left.max(Duration::from_millis(1)))?;
            now = Tick::now();
            if !conn.expired(now) {
                return Ok((conn, now));
            }
            // Dropped marked: r2d2 discards it and the close is counted as max_age.
            conn.close_as(CloseReason::MaxAge);
            left = started.plus(timeout).since(now);
        }
    }

    /// A connection for a thread whose own was not parked (or was turned down): another thread's parked
    /// connection if one passes the checkout checks (judged at `now`), else r2d2's, stealing a parked one
    /// again before blocking ([`crate::parking`]).
    fn affine_get(
        &self,
        pool: &r2d2::Pool<Manager>,
        now: Tick,
        timeout: Duration,
    ) -> Result<Pooled, r2d2::Error> {
        let shared = &self.shared;
        let metrics = &shared.metrics;
        let usable = |mut conn: Pooled, now: Tick| {
            // Marked to be closed when turned down: dropping it makes r2d2 discard it.
            check_out(&mut conn, metrics, shared.validation_timeout, now).ok().map(|_| conn)
        };
        let Some(parking) = &shared.parking else {
            return pool.get_timeout(timeout).map(Box::new);
        };
        if let Some(conn) = parking.steal().and_then(|conn| usable(conn, now)) {
            return Ok(conn);
        }
        // r2d2 checks its own with the clock of its own.
        if let Some(conn) = pool.try_get() {
            return Ok(Box::new(conn));
        }
        // Waiting from here: counted as such, and announced to the parking, until this returns.
        let _waiting = Waiting::new(&metrics.waiting);
        let (_blocked, mut stolen) = parking.block_or_steal();
        // A parked connection turned down (expired, closed by the server) is not the last look: another
        // parked before this thread announced itself would otherwise wait for the sweeper (about 1 s).
        // Within the timeout: turning one down may have cost a validation round trip.
        while let Some(conn) = stolen {
            if let Some(conn) = usable(conn, Tick::now()) {
                return Ok(conn);
            }
            if Tick::now().since(now) >= timeout {
                break;
            }
            stolen = parking.steal();
        }
        let left = timeout.saturating_sub(Tick::now().since(now));
        pool.get_timeout(left.max(Duration::from_millis(1))).map(Box::new)
    }

    /// Open, idle and busy connections, and threads waiting, now.
    pub fn state(&self) -> PoolState {
        let max_size = self.shared.settings.pool.max_size;
        let waiting = self.shared.metrics.waiting.get();
        match &self.shared.mode {
            Mode::Pooled(pool) => {
                let state = pool.state();
                // Parked connections are idle, though r2d2 counts them out.
                let parked = self.shared.parking.as_ref().map_or(0, |p| p.parked());
                let idle = (state.idle_connections + parked).min(state.connections);
                PoolState {
                    max_size,
                    size: state.connections,
                    idle,
                    in_use: state.connections - idle,
                    waiting,
                }
            }
            Mode::PerRequest { open, .. } => {
                let open = u32::try_from(open.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
                PoolState { max_size, size: open, idle: 0, in_use: open, waiting }
            }
        }
    }

    /// The pool's metrics since it was built.
    pub fn metrics(&self) -> PoolMetrics {
        self.shared.metrics.snapshot()
    }

    /// The connections held longer than `DB_POOL_LEAK_THRESHOLD` now, longest first, each with where it was
    /// checked out; empty when the threshold is off.
    pub fn suspected_leaks(&self) -> Vec<Leak> {
        self.shared
            .settings
            .pool
            .leak_threshold
            .map(|t| self.shared.watches.older_than(t))
            .unwrap_or_default()
    }

    /// The settings the pool was built from.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }
}

/// What [`Pool::own_parked`] found.
enum Own {
    /// Nothing parked for this thread.
    Absent,
    /// Its connection, checked without a round trip.
    Handed(Pooled),
    /// Its connection, checked with a round trip (a validation, or a look for its socket).
    Validated(Pooled),
    /// Its connection failed the checks, and was dropped to be closed.
    TurnedDown,
}

enum Slot {
    Pooled(Pooled),
    Owned(Box<Conn>),
}

impl Slot {
    fn conn(&mut self) -> &mut Conn {
        match self {
            Slot::Pooled(conn) => conn,
            Slot::Owned(conn) => conn,
        }
    }
}

/// Parameters a query call keeps on the stack (more are allocated).
const INLINE_PARAMS: usize = 8;

/// A checked-out connection. Dropping it returns the connection to the pool (or, when
/// `DB_CONN_MAX_AGE=0`, closes it).
///
/// Its query methods are safe behind PgBouncer's transaction mode: they never name a prepared statement
/// (`query*` and `execute` send parse, bind and execute in one round trip with unnamed statements, which is
/// also one round trip cheaper than `postgres::Client::query`). Parameters carry their PostgreSQL type via
/// [`SqlParam`]. For anything else, [`PooledConn::client`] gives the connection's [`Client`] itself.
pub struct PooledConn {
    slot: Option<Slot>,
    shared: Arc<Handle>,
    /// Whether its checkout is watched for leaks (`DB_POOL_LEAK_THRESHOLD`).
    watched: bool,
    checked_out: Tick,
}

impl PooledConn {
    fn conn(&mut self) -> &mut Conn {
        self.parts().0
    }

    /// The connection and the pool's shared state, borrowed together (no reference count taken per call).
    fn parts(&mut self) -> (&mut Conn, &Shared) {
        let conn = self.slot.as_mut().expect("a PooledConn holds its connection until dropped").conn();
        (conn, &self.shared)
    }

    fn conn_ref(&self) -> &Conn {
        match self.slot.as_ref().expect("a PooledConn holds its connection until dropped") {
            Slot::Pooled(conn) => conn,
            Slot::Owned(conn) => conn,
        }
    }

    /// Runs `sql` through `f` on the client, counting and timing it, under `DB_QUERY_TIMEOUT`; follows
    /// what it does to the transaction status and the session ([`crate::session`]); a failure that broke
    /// the connection marks it to be closed on return.
    fn run<T>(
        &mut self,
        sql: &str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, Error> {
        self.run_on(sql, None::<std::iter::Empty<Type>>, |conn, _, _| f(conn.client()))
    }

    /// A statement with typed parameters, through the connection's statement cache ([`crate::cache`]):
    /// unnamed (`unnamed`, one round trip) until its text has been used [`PREPARE_THRESHOLD`] times on
    /// this connection, then prepared once and run by name (`named`), which spares the server parsing and
    /// planning it. A cached statement the server rejects as stale (its result type changed, or it is
    /// gone) is forgotten and, outside a transaction, run again unnamed.
    ///
    /// [`PREPARE_THRESHOLD`]: crate::PREPARE_THRESHOLD
    fn run_typed<T>(
        &mut self,
        sql: &str,
        params: &[&dyn SqlParam],
        unnamed: impl Fn(&mut Client, &[(&(dyn ToSql + Sync), Type)]) -> Result<T, postgres::Error>,
        named: impl Fn(&mut Client, &Statement, &[&(dyn ToSql + Sync)]) -> Result<T, postgres::Error>,
    ) -> Result<T, Error> {
        // The parameters' types, for the cache's key: compared where they are, collected only to be kept.
        let types = self.conn_ref().texts.caching().then(|| params.iter().map(|param| param.typed().1));
        let all_types = || types.clone().map(Iterator::collect::<Vec<Type>>).unwrap_or_default();
        let run_unnamed =
            |client: &mut Client| on_stack(params, SqlParam::typed, |typed| unnamed(client, typed));
        self.run_on(sql, types.clone(), |conn, metrics, (lookup, evicted)| {
            if evicted.prepared > 0 {
                metrics.statement_evictions.add(evicted.prepared);
            }
            // The server says the cached statement cannot be used (its result type changed, or it is gone):
            // forgotten, and run again unnamed when that is safe.
            let stale = |conn: &mut Conn, e: postgres::Error| {
                conn.texts.forget(sql, &all_types());
                metrics.statement_invalidations.incr();
                // In a transaction the error aborted it: a retry would only meet 25P02. (After the
                // client() escape hatch the status is unknown: retried, as it most likely is none.)
                if matches!(conn.tx, TxStatus::Idle | TxStatus::Unknown) {
                    run_unnamed(conn.client())
                } else {
                    Err(e)
                }
            };
            let statement = match lookup {
                Lookup::Unnamed => {
                    if types.is_some() {
                        metrics.statement_misses.incr();
                    }
                    return run_unnamed(conn.client());
                }
                Lookup::Prepare => {
                    metrics.statement_misses.incr();
                    let types = all_types();
                    // Through PgBouncer, preparing can meet a stale statement too: PgBouncer answers
                    // the Parse from its own cache and the server's old statement fails the Describe.
                    // (The driver makes no Statement of a failed Describe, so the name it parsed is never
                    // closed: PgBouncer keeps it for the connection, once per stale text.)
                    let statement = match conn.client().prepare_typed(sql, &types) {
                        Ok(statement) => statement,
                        Err(e) if crate::cache::is_stale(&e) => return stale(conn, e),
                        Err(e) => return Err(e),
                    };
                    metrics.statements_prepared.incr();
                    conn.texts.store(sql, &types, statement.clone());
                    statement
                }
                Lookup::Prepared(statement) => {
                    metrics.statement_hits.incr();
                    statement
                }
            };
            let values = |values: &[_]| named(conn.client(), &statement, values);
            match on_stack(params, |param| param.typed().0, values) {
                Err(e) if crate::cache::is_stale(&e) => stale(conn, e),
                result => result,
            }
        })
    }

    /// Runs `sql` through `f`, counting and timing it, under `DB_QUERY_TIMEOUT`, after one look at what
    /// the connection knows of the text ([`crate::cache::Texts::lookup`], with parameter `types` when
    /// the statement cache may run it by name; `f` gets the answer); follows what it does to the
    /// transaction status and the session ([`crate::session`]); a failure that broke the connection
    /// marks it to be closed on return.
    fn run_on<T>(
        &mut self,
        sql: &str,
        types: Option<impl ExactSizeIterator<Item = Type> + Clone>,
        f: impl FnOnce(&mut Conn, &Metrics, (Lookup, Evicted)) -> Result<T, postgres::Error>,
    ) -> Result<T, Error> {
        let (conn, shared) = self.parts();
        // What the statement does to the session, and whether transaction mode forbids it: read once per
        // text and connection (a scan of the text), then remembered.
        let (analysis, lookup, evicted) = conn.texts.lookup(sql, types);
        if let Some((what, instead)) = analysis.mistake {
            shared.metrics.query_errors.incr();
            let pool_mode = shared.settings.pgbouncer.pool_mode.as_str();
            return Err(Error::TransactionMode { what, pool_mode, instead });
        }
        let effect = analysis.effect;
        let timeout = shared.settings.query_timeout;
        let started = Tick::now();
        let (result, expired) = bounded(conn, timeout.map(|t| started.plus(t)), |conn| {
            f(conn, &shared.metrics, (lookup, evicted))
        });
        shared.metrics.query_time.record(Tick::now().since(started));
        conn.dirty |= effect.changes_session;
        if effect.drops_prepared {
            conn.texts.clear();
        }
        if expired {
            shared.metrics.query_errors.incr();
            conn.close_as(CloseReason::Broken);
            return Err(Error::QueryTimeout { timeout: timeout.unwrap_or_default() });
        }
        conn.tx = conn.tx.after(effect, result.is_ok());
        result.map_err(|e| {
            shared.metrics.query_errors.incr();
            let error = Error::from_query(e, conn.client().is_closed());
            if error.breaks_connection() {
                conn.close_as(CloseReason::Broken);
            }
            error
        })
    }

    /// Runs a statement and returns its rows, in one round trip with an unnamed statement.
    ///
    /// # Errors
    /// The server's error, classified ([`Error::StatementTimeout`], [`Error::ConnectionLost`], ...).
    pub fn query(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<Vec<Row>, Error> {
        self.run_typed(sql, params, |c, typed| c.query_typed(sql, typed), |c, s, values| c.query(s, values))
    }

    /// Runs a statement that returns exactly one row.
    ///
    /// # Errors
    /// As [`PooledConn::query`], and an error when the statement returns no row or several.
    pub fn query_one(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<Row, Error> {
        self.run_typed(
            sql,
            params,
            |c, typed| c.query_typed_one(sql, typed),
            |c, s, values| c.query_one(s, values),
        )
    }

    /// Runs a statement that returns at most one row.
    ///
    /// # Errors
    /// As [`PooledConn::query`], and an error when the statement returns several rows.
    pub fn query_opt(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<Option<Row>, Error> {
        self.run_typed(
            sql,
            params,
            |c, typed| c.query_typed_opt(sql, typed),
            |c, s, values| c.query_opt(s, values),
        )
    }

    /// Runs a statement and returns how many rows it changed.
    ///
    /// # Errors
    /// As [`PooledConn::query`].
    pub fn execute(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<u64, Error> {
        self.run_typed(
            sql,
            params,
            |c, typed| c.execute_typed(sql, typed),
            |c, s, values| c.execute(s, values),
        )
    }

    /// Runs one or more statements with the simple query protocol; values come back as text.
    ///
    /// # Errors
    /// As [`PooledConn::query`].
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.run(sql, |client| client.simple_query(sql))
    }

    /// Runs one or more statements, without parameters or results.
    ///
    /// # Errors
    /// As [`PooledConn::query`].
    pub fn batch_execute(&mut self, sql: &str) -> Result<(), Error> {
        self.run(sql, |client| client.batch_execute(sql))
    }

    /// Starts a transaction: `BEGIN` now; [`Transaction::commit`] commits it, and dropping it without a
    /// commit (an early return, a `?`, a panic) rolls it back. Its statements go through the same query
    /// API, deadlines and PgBouncer guard as the connection's.
    ///
    /// # Errors
    /// As [`PooledConn::query`].
    pub fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        self.batch_execute("BEGIN")?;
        Ok(Transaction { conn: self, depth: 0, done: false })
    }

    /// The connection's [`Client`] itself, for `COPY`, statements prepared by hand, and the rest of its API
    /// (`postgres::Client`'s methods, same arguments and results).
    ///
    /// The pool cannot follow what is done through it, so a connection it was taken from is treated as
    /// changed: on return it is rolled back and (direct tier, PgBouncer's session mode) its session reset
    /// with `DISCARD ALL`, one or two round trips. In PgBouncer's transaction and statement modes, where
    /// the session is not reset, the connection's statement cache starts over at this call instead. Behind PgBouncer in transaction mode, two rules apply to what you do with it:
    /// prepare statements only inside a transaction and use them only there (`Client::query(&str, ..)`
    /// prepares a named statement outside of one, which fails once connections are shared), and change
    /// no session state (`SET`, `LISTEN`, session advisory locks, `WITH HOLD` cursors). Queries made here
    /// are not counted in the pool's query metrics and have no client-side deadline; a connection this
    /// breaks is still closed on return.
    pub fn client(&mut self) -> &mut Client {
        let (conn, shared) = self.parts();
        conn.tx = conn.tx.after(Effect::anything(), true);
        conn.dirty = true;
        // Where the session is not reset (PgBouncer's transaction and statement modes), what is done
        // through the client may deallocate statements behind the cache's back, and PgBouncer 1.21+ then
        // ends the connection at the next use of one of their names. So the cache (and the driver's
        // statements for looking types up) starts over first; a Close for a name PgBouncer already forgot
        // is harmless. (Where it is reset, a gone statement is found (26000) and retried, and the return's
        // DISCARD ALL empties the cache.)
        if !shared.resets_session {
            conn.client().clear_type_cache();
            conn.texts.clear();
        }
        conn.client()
    }

    /// The server process id of this connection (asked once, then remembered).
    ///
    /// # Errors
    /// As [`PooledConn::query`].
    pub fn backend_pid(&mut self) -> Result<i32, Error> {
        if let Some(pid) = self.conn_ref().backend_pid {
            return Ok(pid);
        }
        let pid: i32 = self.run("", |client| client.query_typed_one("SELECT pg_backend_pid()", &[]))?.get(0);
        self.conn().backend_pid = Some(pid);
        Ok(pid)
    }

    /// Whether `DB_QUERY_TIMEOUT` is enforced on this connection's calls by the client (when it is set:
    /// the pool knows every connection's socket, its driver's own).
    pub fn has_deadline(&self) -> bool {
        self.shared.settings.query_timeout.is_some() && self.conn_ref().socket().is_some()
    }

    /// When this connection was opened.
    pub fn opened_at(&self) -> Instant {
        self.conn_ref().opened.instant()
    }

    /// The instant after which this connection is no longer handed out (`DB_CONN_MAX_AGE` minus its
    /// jitter); `None` when unlimited.
    pub fn deadline(&self) -> Option<Instant> {
        self.conn_ref().deadline.map(Tick::instant)
    }

    /// When this handle was checked out.
    pub fn checked_out_at(&self) -> Instant {
        self.checked_out.instant()
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        // One clock read for the held time and the parking, taken before the reset (which a reset's
        // round trip would only make later: the held time is the borrower's).
        let now = Tick::now();
        self.shared.metrics.held.record(now.since(self.checked_out));
        if self.watched {
            self.conn_ref().watch.returned();
        }
        if let (Some(Slot::Owned(_)), Mode::PerRequest { open, .. }) = (&self.slot, &self.shared.mode) {
            open.fetch_sub(1, Ordering::Relaxed);
        }
        let reset = self.slot.is_some() && self.clean();
        // A pooled connection in good order is parked for this thread ([`crate::parking`]); dropping the
        // slot returns any other to r2d2 or closes an owned one.
        if let (Some(Slot::Pooled(_)), Some(parking)) = (&self.slot, &self.shared.parking) {
            // After a reset's round trip, read the clock again: parking and max-age judge the return.
            let now = if reset { Tick::now() } else { now };
            let keep = !std::thread::panicking() && !self.conn_ref().closing_or_expired(now);
            if keep && let Some(Slot::Pooled(mut conn)) = self.slot.take() {
                conn.mark_returned(now);
                parking.park(conn, now);
                return;
            }
        }
        self.slot = None;
    }
}

impl PooledConn {
    /// Brings a returned connection back to the state of a new one, or marks it to be closed
    /// ([`crate::lifecycle::at_return`]). Whether it ran a reset (round trips: time has passed).
    fn clean(&mut self) -> bool {
        let (conn, shared) = self.parts();
        let returned = Returned {
            panicking: std::thread::panicking(),
            closing: conn.closing(),
            tx: conn.tx,
            dirty: conn.dirty,
            resets_session: shared.resets_session,
            bounded: conn.socket().is_some(),
        };
        match at_return(returned) {
            Return::Keep => false,
            Return::Close(reason) => {
                conn.close_as(reason);
                false
            }
            Return::Reset { rollback, discard } => {
                let deadline = Some(Tick::now().plus(shared.reset_timeout));
                let mut reset = |sql: &str| {
                    let (result, expired) = bounded(conn, deadline, |conn| conn.client().batch_execute(sql));
                    result.is_ok() && !expired
                };
                if (rollback && !reset("ROLLBACK")) || (discard && !reset("DISCARD ALL")) {
                    log::info!("closing a returned connection that could not be reset in time");
                    conn.close_as(CloseReason::Unclean);
                    return true;
                }
                if rollback {
                    shared.metrics.reset_transaction.incr();
                }
                if discard {
                    // DISCARD ALL deallocated the statements the driver prepared to look types up, and
                    // the cached ones.
                    conn.client().clear_type_cache();
                    conn.texts.clear();
                    shared.metrics.reset_session.incr();
                }
                conn.tx = TxStatus::Idle;
                conn.dirty = false;
                true
            }
        }
    }
}

/// Runs `f` on `conn`'s client; with a `deadline` and a known socket, the watchdog shuts the socket down
/// if the deadline passes first. Returns the result and whether the deadline passed.
fn bounded<T>(
    conn: &mut Conn,
    deadline: Option<Tick>,
    f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
) -> (Result<T, postgres::Error>, bool) {
    let call = match (conn.socket(), deadline) {
        (Some(socket), Some(deadline)) => Some(conn.watch.start(socket, deadline)),
        _ => None,
    };
    let result = f(conn);
    let expired = call.is_some_and(|call| conn.watch.finish(call));
    (result, expired)
}

/// A transaction on a pooled connection, from [`PooledConn::transaction`] (or a savepoint inside one,
/// from [`Transaction::savepoint`]). Dropped without [`Transaction::commit`], it is rolled back.
pub struct Transaction<'a> {
    conn: &'a mut PooledConn,
    /// 0 for the transaction itself, n for the n-th nested savepoint.
    depth: u32,
    /// Committed or rolled back already.
    done: bool,
}

impl Transaction<'_> {
    /// As [`PooledConn::query`], inside the transaction.
    ///
    /// # Errors
    /// As [`PooledConn::query`].
    pub fn query(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<Vec<Row>, Error> {
        self.conn.query(sql, params)
    }

    /// As [`PooledConn::query_one`], inside the transaction.
    ///
    /// # Errors
    /// As [`PooledConn::query_one`].
    pub fn query_one(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<Row, Error> {
        self.conn.query_one(sql, params)
    }

    /// As [`PooledConn::query_opt`], inside the transaction.
    ///
    /// # Errors
    /// As [`PooledConn::query_opt`].
    pub fn query_opt(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<Option<Row>, Error> {
        self.conn.query_opt(sql, params)
    }

    /// As [`PooledConn::execute`], inside the transaction.
    ///
    /// # Errors
    /// As [`PooledConn::execute`].
    pub fn execute(&mut self, sql: &str, params: &[&dyn SqlParam]) -> Result<u64, Error> {
        self.conn.execute(sql, params)
    }

    /// As [`PooledConn::simple_query`], inside the transaction.
    ///
    /// # Errors
    /// As [`PooledConn::simple_query`].
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.conn.simple_query(sql)
    }

    /// As [`PooledConn::batch_execute`], inside the transaction.
    ///
    /// # Errors
    /// As [`PooledConn::batch_execute`].
    pub fn batch_execute(&mut self, sql: &str) -> Result<(), Error> {
        self.conn.batch_execute(sql)
    }

    /// Starts a savepoint inside this transaction: a nested [`Transaction`] whose commit releases it and
    /// whose rollback (or drop without commit) undoes only what was done since, so the outer transaction
    /// can go on after a failed statement.
    ///
    /// # Errors
    /// As [`PooledConn::query`].
    pub fn savepoint(&mut self) -> Result<Transaction<'_>, Error> {
        let depth = self.depth + 1;
        self.conn.batch_execute(&format!("SAVEPOINT pgconn_{depth}"))?;
        Ok(Transaction { conn: &mut *self.conn, depth, done: false })
    }

    /// Commits the transaction (for a savepoint: releases it).
    ///
    /// # Errors
    /// [`Error::RolledBack`] when a statement in the transaction failed earlier: PostgreSQL then rolls the
    /// whole transaction back (it answers `COMMIT` with `ROLLBACK`), and so does this. Otherwise as
    /// [`PooledConn::query`]; after a failed commit the transaction is over either way.
    pub fn commit(mut self) -> Result<(), Error> {
        self.done = true;
        if self.depth == 0 && self.conn.conn_ref().tx == TxStatus::Failed {
            self.conn.batch_execute("ROLLBACK")?;
            return Err(Error::RolledBack);
        }
        match self.depth {
            0 => self.conn.batch_execute("COMMIT"),
            depth => self.conn.batch_execute(&format!("RELEASE SAVEPOINT pgconn_{depth}")),
        }
    }

    /// Rolls the transaction back (for a savepoint: back to where it started, and releases it).
    ///
    /// # Errors
    /// As [`PooledConn::query`].
    pub fn rollback(mut self) -> Result<(), Error> {
        self.done = true;
        self.roll_back()
    }

    fn roll_back(&mut self) -> Result<(), Error> {
        match self.depth {
            0 => self.conn.batch_execute("ROLLBACK"),
            depth => self.conn.batch_execute(&format!(
                "ROLLBACK TO SAVEPOINT pgconn_{depth}; RELEASE SAVEPOINT pgconn_{depth}"
            )),
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if std::thread::panicking() {
            // No I/O while unwinding: the connection is closed on return instead.
            return;
        }
        if let Err(e) = self.roll_back() {
            log::debug!("rolling back a dropped transaction failed: {}", e.with_cause());
        }
    }
}

/// A query parameter whose PostgreSQL type is known from its Rust type, so statements need no
/// server-side preparation: `&1_i32`, `&"text"`, `&Some(2.5_f64)`, `&vec![0_u8]`...
pub trait SqlParam: Sync {
    /// The value and its type, as `query_typed` takes them.
    fn typed(&self) -> (&(dyn ToSql + Sync), Type);
}

/// A Rust type with one PostgreSQL type, for [`SqlParam`].
///
/// Built in: `bool`, `i8` (`"char"`), `i16`, `i32`, `i64`, `u32` (oid), `f32`, `f64`, `&str` and
/// `String` (text), `&[u8]` and `Vec<u8>` (bytea), `SystemTime` (timestamptz), `Option<T>` of any of them
/// (`None` is NULL), and arrays: `Vec<T>` and `&[T]` of any [`SqlArrayElement`]. Behind Cargo features,
/// each turning on the `postgres` crate's support for the same library: `uuid` (`uuid::Uuid`), `chrono`
/// (`NaiveDate`, `NaiveTime`, `NaiveDateTime`, `DateTime<Utc>`), `time` (`Date`, `Time`,
/// `PrimitiveDateTime`, `OffsetDateTime`) and `serde_json` (`serde_json::Value` as jsonb).
///
/// A type of your own that implements [`ToSql`] (`postgres::types::ToSql`, derivable for enums and
/// composites with `#[derive(ToSql)]` from the `postgres-types` crate's `derive` feature) becomes a
/// parameter with one line naming the PostgreSQL type it is sent as:
///
/// ```
/// use pgconn_pool::SqlType;
/// use postgres::types::{ToSql, Type, IsNull, to_sql_checked};
///
/// /// Cents, stored in an int8 column.
/// #[derive(Debug)]
/// struct Cents(i64);
///
/// impl ToSql for Cents {
///     fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
///         self.0.to_sql(ty, out)
///     }
///     fn accepts(ty: &Type) -> bool {
///         <i64 as ToSql>::accepts(ty)
///     }
///     to_sql_checked!();
/// }
///
/// impl SqlType for Cents {
///     const PG_TYPE: Type = Type::INT8;
/// }
/// ```
///
/// For a type whose PostgreSQL type is only known at run time (a custom enum's oid, say), use
/// [`PooledConn::client`] and the `postgres` crate's own API.
pub trait SqlType: ToSql + Sync {
    /// The PostgreSQL type its values are sent as.
    const PG_TYPE: Type;
}

/// A type whose arrays are parameters too: `Vec<T>` and `&[T]` are sent as `ARRAY_TYPE`. (Not `u8`:
/// `Vec<u8>` and `&[u8]` are bytea.)
pub trait SqlArrayElement: ToSql + Sync {
    /// The PostgreSQL array type of its arrays (`int4[]` for `i32`).
    const ARRAY_TYPE: Type;
}

impl<T: SqlType> SqlParam for T {
    fn typed(&self) -> (&(dyn ToSql + Sync), Type) {
        (self, T::PG_TYPE)
    }
}

macro_rules! sql_types {
    ($($rust:ty => $pg:ident $(, $array:ident)?);* $(;)?) => {
        $(
            impl SqlType for $rust { const PG_TYPE: Type = Type::$pg; }
            $(impl SqlArrayElement for $rust { const ARRAY_TYPE: Type = Type::$array; })?
        )*
    };
}

sql_types! {
    bool => BOOL, BOOL_ARRAY;
    i8 => CHAR, CHAR_ARRAY;
    i16 => INT2, INT2_ARRAY;
    i32 => INT4, INT4_ARRAY;
    i64 => INT8, INT8_ARRAY;
    u32 => OID, OID_ARRAY;
    f32 => FLOAT4, FLOAT4_ARRAY;
    f64 => FLOAT8, FLOAT8_ARRAY;
    String => TEXT, TEXT_ARRAY;
    &str => TEXT, TEXT_ARRAY;
    Vec<u8> => BYTEA, BYTEA_ARRAY;
    &[u8] => BYTEA, BYTEA_ARRAY;
    std::time::SystemTime => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
}

#[cfg(feature = "uuid")]
sql_types! {
    uuid::Uuid => UUID, UUID_ARRAY;
}

#[cfg(feature = "chrono")]
sql_types! {
    chrono::NaiveDate => DATE, DATE_ARRAY;
    chrono::NaiveTime => TIME, TIME_ARRAY;
    chrono::NaiveDateTime => TIMESTAMP, TIMESTAMP_ARRAY;
    chrono::DateTime<chrono::Utc> => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
}

#[cfg(feature = "time")]
sql_types! {
    time::Date => DATE, DATE_ARRAY;
    time::Time => TIME, TIME_ARRAY;
    time::PrimitiveDateTime => TIMESTAMP, TIMESTAMP_ARRAY;
    time::OffsetDateTime => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
}

#[cfg(feature = "serde_json")]
sql_types! {
    serde_json::Value => JSONB, JSONB_ARRAY;
}

impl<T: SqlType> SqlType for Option<T> {
    const PG_TYPE: Type = T::PG_TYPE;
}

impl<T: SqlArrayElement> SqlType for Vec<T> {
    const PG_TYPE: Type = T::ARRAY_TYPE;
}

impl<T: SqlArrayElement> SqlType for &[T] {
    const PG_TYPE: Type = T::ARRAY_TYPE;
}

/// `params`, each mapped by `map`, as a slice for `f`: on the stack for up to [`INLINE_PARAMS`] (a query
/// call allocates nothing for its parameters), in a `Vec` beyond.
fn on_stack<'a, T: Clone, R>(
    params: &[&'a dyn SqlParam],
    map: impl Fn(&'a dyn SqlParam) -> T,
    f: impl FnOnce(&[T]) -> R,
) -> R {
    match params {
        [] => f(&[]),
        [first, ..] if params.len() <= INLINE_PARAMS => {
            let first = map(*first);
            let mut inline: [T; INLINE_PARAMS] = std::array::from_fn(|_| first.clone());
            for (slot, param) in inline.iter_mut().zip(params).skip(1) {
                *slot = map(*param);
            }
            f(&inline[..params.len()])
        }
        _ => f(&params.iter().map(|param| map(*param)).collect::<Vec<T>>()),
    }
}
