//! Client-side deadlines of calls through the pool's query API (`DB_QUERY_TIMEOUT`): one watchdog thread
//! per pool closes the socket of a call that has run past its deadline.

use std::sync::Weak;
use std::thread;
use std::time::{Duration, Instant};

use crate::socket::Socket;
use crate::stripes::{Registry, Ticket};

/// How often the watchdog looks; a call fails at most this much after its deadline.
pub const WATCHDOG_PERIOD: Duration = Duration::from_millis(50);

/// The calls in progress that have a deadline.
pub(crate) struct Deadlines(Registry<(Instant, Socket)>);

/// A registered call; [`Deadlines::finish`] says whether its deadline passed.
pub(crate) struct Call(Ticket);

impl Deadlines {
    pub(crate) fn new() -> Deadlines {
        Deadlines(Registry::new())
    }

    /// Registers a call on `socket` that must be done by `deadline`.
    pub(crate) fn start(&self, socket: Socket, deadline: Instant) -> Call {
        Call(self.0.insert((deadline, socket)))
    }

    /// Unregisters a call; `true` when the watchdog closed its socket (its deadline passed).
    #[allow(clippy::needless_pass_by_value)] // by value: a call is finished once
    pub(crate) fn finish(&self, call: Call) -> bool {
        self.0.remove(call.0).is_none()
    }

    /// Closes the sockets of the calls past their deadline, under the lock that `finish` takes, so a
    /// socket is never touched after its call returned.
    fn expire(&self, now: Instant) {
        self.0.retain(|(deadline, socket)| {
            if now >= *deadline {
                socket.shutdown();
                false
            } else {
                true
            }
        });
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
