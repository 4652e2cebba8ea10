//! Client-side deadlines of calls through the pool's query API (`DB_QUERY_TIMEOUT`): one watchdog thread
//! per pool closes the socket of a call that has run past its deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::socket::Socket;

/// How often the watchdog looks; a call fails at most this much after its deadline.
pub const WATCHDOG_PERIOD: Duration = Duration::from_millis(50);

const STRIPES: usize = 8;

/// The calls in progress that have a deadline.
pub(crate) struct Deadlines {
    next: AtomicU64,
    calls: [Mutex<HashMap<u64, (Instant, Socket)>>; STRIPES],
}

/// A registered call; [`Deadlines::finish`] says whether its deadline passed.
pub(crate) struct Call(u64);

impl Deadlines {
    pub(crate) fn new() -> Deadlines {
        Deadlines { next: AtomicU64::new(0), calls: std::array::from_fn(|_| Mutex::new(HashMap::new())) }
    }

    fn stripe(&self, id: u64) -> &Mutex<HashMap<u64, (Instant, Socket)>> {
        &self.calls[usize::try_from(id).unwrap_or(0) % STRIPES]
    }

    /// Registers a call on `socket` that must be done by `deadline`.
    pub(crate) fn start(&self, socket: Socket, deadline: Instant) -> Call {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.stripe(id).lock().unwrap_or_else(PoisonError::into_inner).insert(id, (deadline, socket));
        Call(id)
    }

    /// Unregisters a call; `true` when the watchdog closed its socket (its deadline passed).
    #[allow(clippy::needless_pass_by_value)] // by value: a call is finished once
    pub(crate) fn finish(&self, call: Call) -> bool {
        self.stripe(call.0).lock().unwrap_or_else(PoisonError::into_inner).remove(&call.0).is_none()
    }

    /// Closes the sockets of the calls past their deadline, under the lock that `finish` takes, so a
    /// socket is never touched after its call returned.
    fn expire(&self, now: Instant) {
        for stripe in &self.calls {
            let mut calls = stripe.lock().unwrap_or_else(PoisonError::into_inner);
            calls.retain(|_, (deadline, socket)| {
                if now >= *deadline {
                    socket.shutdown();
                    false
                } else {
                    true
                }
            });
        }
    }
}

/// Starts the watchdog thread; it ends by itself once the pool is gone.
pub(crate) fn spawn_watchdog(deadlines: Weak<Deadlines>) {
    spawn_periodic(
        "pgconn-query-deadline",
        WATCHDOG_PERIOD,
        "the query deadline thread, DB_QUERY_TIMEOUT will not be enforced",
        move || {
            let Some(deadlines) = deadlines.upgrade() else { return false };
            deadlines.expire(Instant::now());
            true
        },
    );
}

/// Starts a thread named `name` that runs `tick` every `period` until it returns false (its pool is gone);
/// when the thread cannot start, logs that `what` cannot be started.
pub(crate) fn spawn_periodic(
    name: &str,
    period: Duration,
    what: &str,
    mut tick: impl FnMut() -> bool + Send + 'static,
) {
    let spawned = thread::Builder::new().name(name.into()).spawn(move || {
        loop {
            thread::sleep(period);
            if !tick() {
                return;
            }
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot start {what}: {e}");
    }
}
