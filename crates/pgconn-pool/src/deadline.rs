//! Client-side deadlines of calls through the pool's query API (`DB_QUERY_TIMEOUT`) and of the resets of
//! returned connections: one watchdog thread per pool shuts the socket of a call that has run past its
//! deadline (the deadlines themselves are kept per connection, [`crate::watch`]).

use std::sync::Weak;
use std::thread;
use std::time::Duration;

use crate::clock::Tick;

use crate::watch::Watches;

/// How often the watchdog looks; a call fails at most this much after its deadline.
pub const WATCHDOG_PERIOD: Duration = Duration::from_millis(50);

/// Starts the watchdog thread; it ends by itself once the pool is gone.
pub(crate) fn spawn_watchdog(watches: Weak<Watches>) {
    spawn_periodic(
        "pgconn-query-deadline",
        WATCHDOG_PERIOD,
        "the query deadline thread, DB_QUERY_TIMEOUT will not be enforced",
        move || {
            let Some(watches) = watches.upgrade() else { return false };
            watches.expire(Tick::now());
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
