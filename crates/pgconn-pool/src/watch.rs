//! What the pool's watcher threads look at, one [`Watch`] per open connection: the deadline of the call
//! in progress on it (`DB_QUERY_TIMEOUT`, and the reset of a returned connection), read by the watchdog,
//! which shuts the socket of a call past its deadline; and, while it is checked out, where and when, read
//! by the leak detector (`DB_POOL_LEAK_THRESHOLD`).
//!
//! A request writes only its own connection's watch, with plain atomic stores and one compare-and-swap:
//! no lock, no list to search, no allocation. (These were striped registries under a lock, with a search
//! on removal: about 400 instructions a request of the ~3,000 the pool adds to a dedicated client's,
//! docs/benchmarks.md, "Client work per request, counted".) A connection's watch is listed when it opens;
//! the watchers visit the list every period and drop the watches of closed connections.

use std::panic::Location;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::{self, Thread};
use std::time::Duration;

use crate::clock::Tick;

use crate::metrics::Leak;
use crate::socket::Socket;

/// `Watch::call` when no call with a deadline is in progress.
const NO_CALL: u64 = 0;
/// `Watch::call` while the watchdog shuts the socket of a call past its deadline.
const SHUTTING: u64 = u64::MAX - 1;
/// `Watch::call` once the watchdog has shut it: the call failed by its deadline.
const EXPIRED: u64 = u64::MAX;

/// The watches of a pool's open connections.
pub(crate) struct Watches {
    list: Mutex<Vec<Weak<Watch>>>,
}

/// One connection's deadline and checkout, as its owner last wrote them.
pub(crate) struct Watch {
    /// [`NO_CALL`], the deadline of the call in progress ([`Tick::nanos`]), [`SHUTTING`] or
    /// [`EXPIRED`].
    call: AtomicU64,
    /// The socket of the call in progress (its descriptor), written before `call`.
    socket: AtomicI32,
    /// When it was checked out ([`Tick::nanos`], at least 1); 0 while it is in the pool.
    out_since: AtomicU64,
    /// The thread and the call site of the checkout, written before `out_since`, and only when they
    /// differ from the last checkout's (a thread usually takes back its own connection,
    /// [`crate::parking`], from the same handler): compared by `who_tag` and `who_location` (which are
    /// never read through), so that a request takes the lock only then.
    who: Mutex<Who>,
    who_tag: AtomicU64,
    who_location: AtomicPtr<Location<'static>>,
    /// The `out_since` the leak detector last warned about, so that each checkout is warned about once.
    warned: AtomicU64,
}

/// Who checked a connection out.
struct Who {
    thread: Option<Thread>,
    location: Option<&'static Location<'static>>,
}

/// A call registered with [`Watch::start`]; [`Watch::finish`] says whether its deadline passed.
#[must_use]
pub(crate) struct Call(u64);

impl Watches {
    pub(crate) fn new() -> Watches {
        Watches { list: Mutex::new(Vec::new()) }
    }

    /// A watch for a new connection, listed.
    pub(crate) fn add(&self) -> Arc<Watch> {
        let watch = Arc::new(Watch {
            call: AtomicU64::new(NO_CALL),
            socket: AtomicI32::new(-1),
            out_since: AtomicU64::new(0),
            who: Mutex::new(Who { thread: None, location: None }),
            who_tag: AtomicU64::new(0),
            who_location: AtomicPtr::new(std::ptr::null_mut()),
            warned: AtomicU64::new(0),
        });
        self.lock().push(Arc::downgrade(&watch));
        watch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Watch>>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Visits the watches of the connections still open, and forgets the others.
    fn each(&self, mut visit: impl FnMut(&Watch)) {
        self.lock().retain(|weak| match weak.upgrade() {
            Some(watch) => {
                visit(&watch);
                true
            }
            None => false,
        });
    }

    /// Shuts the sockets of the calls past their deadline at `now`.
    pub(crate) fn expire(&self, now: Tick) {
        let now = now.nanos();
        self.each(|watch| watch.expire(now));
    }

    /// The connections checked out longer than `threshold` now, longest first.
    pub(crate) fn older_than(&self, threshold: Duration) -> Vec<Leak> {
        let now = Tick::now();
        let mut leaks = Vec::new();
        self.each(|watch| {
            if let Some((leak, _)) = watch.held_past(threshold, now) {
                leaks.push(leak);
            }
        });
        leaks.sort_by_key(|leak| std::cmp::Reverse(leak.held_for));
        leaks
    }

    /// Logs, once each, the connections checked out longer than `threshold`; returns how many it logged.
    pub(crate) fn warn_older_than(&self, threshold: Duration) -> u64 {
        let now = Tick::now();
        let mut new = Vec::new();
        self.each(|watch| {
            let Some((leak, since)) = watch.held_past(threshold, now) else { return };
            if watch.warned.swap(since, Ordering::Relaxed) != since {
                new.push(leak);
            }
        });
        // Logged after the list's lock is released: a slow logger must not hold up the watchdog or opens.
        for leak in &new {
            log::warn!(
                "possible connection leak: a connection checked out at {} (thread {}) has been held for {}ms, \
                 longer than DB_POOL_LEAK_THRESHOLD ({}ms); return it by dropping the handle",
                leak.location,
                leak.thread.as_deref().unwrap_or("unnamed"),
                leak.held_for.as_millis(),
                threshold.as_millis()
            );
        }
        new.len() as u64
    }
}

impl Watch {
    /// Registers a call on `socket` that must be done by `deadline`.
    pub(crate) fn start(&self, socket: Socket, deadline: Tick) -> Call {
        let deadline = deadline.nanos().clamp(1, SHUTTING - 1);
        // A call that never finished (its thread panicked, and the handle was kept) left its deadline:
        // settled first, so that the watchdog's work on it is never taken for this call's.
        if self.call.load(Ordering::Acquire) != NO_CALL {
            self.disarm();
        }
        // The watchdog changes only a deadline, never NO_CALL: a plain store suffices.
        self.socket.store(socket.raw(), Ordering::Relaxed);
        self.call.store(deadline, Ordering::Release);
        Call(deadline)
    }

    /// Leaves no call registered, waiting for a shutdown in progress: before the connection's socket is
    /// closed (its number may then be reused), and before a call starts after one that never finished.
    pub(crate) fn disarm(&self) {
        let mut current = self.call.load(Ordering::Acquire);
        loop {
            if current == NO_CALL {
                return;
            }
            if current == SHUTTING {
                thread::yield_now();
                current = self.call.load(Ordering::Acquire);
                continue;
            }
            match self.call.compare_exchange(current, NO_CALL, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => current = now,
            }
        }
    }

    /// Ends a call; `true` when the watchdog shut its socket (its deadline passed). Waits for a shutdown
    /// in progress, so that the socket is never touched once its call returned.
    #[allow(clippy::needless_pass_by_value)] // by value: a call is finished once
    pub(crate) fn finish(&self, call: Call) -> bool {
        if self.call.compare_exchange(call.0, NO_CALL, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return false;
        }
        // Claimed by the watchdog: shut (EXPIRED) or being shut (SHUTTING).
        self.disarm();
        true
    }

    fn expire(&self, now: u64) {
        let deadline = self.call.load(Ordering::Acquire);
        if deadline == NO_CALL || deadline >= SHUTTING || deadline > now {
            return;
        }
        // Claimed from the owner's `finish`: if the call ended first, this fails and nothing is touched.
        if self.call.compare_exchange(deadline, SHUTTING, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            Socket::from_raw(self.socket.load(Ordering::Relaxed)).shutdown();
            self.call.store(EXPIRED, Ordering::Release);
        }
    }

    /// Records that it was checked out at `at` by this thread, from `location`.
    pub(crate) fn checked_out(&self, at: Tick, location: &'static Location<'static>) {
        let tag = crate::stripes::thread_number();
        let pointer = std::ptr::from_ref(location).cast_mut();
        if self.who_tag.load(Ordering::Relaxed) != tag || self.who_location.load(Ordering::Relaxed) != pointer
        {
            let mut who = self.who.lock().unwrap_or_else(PoisonError::into_inner);
            if self.who_tag.load(Ordering::Relaxed) != tag {
                who.thread = Some(thread::current());
                self.who_tag.store(tag, Ordering::Relaxed);
            }
            who.location = Some(location);
            self.who_location.store(pointer, Ordering::Relaxed);
        }
        self.out_since.store(at.nanos().max(1), Ordering::Release);
    }

    /// Records that it was returned.
    pub(crate) fn returned(&self) {
        self.out_since.store(0, Ordering::Release);
    }

    /// The checkout in progress, if it began `threshold` or more before `now`, and its `out_since`.
    fn held_past(&self, threshold: Duration, now: Tick) -> Option<(Leak, u64)> {
        let since = self.out_since.load(Ordering::Acquire);
        if since == 0 {
            return None;
        }
        let held_for = now.since(Tick::from_nanos(since));
        if held_for < threshold {
            return None;
        }
        let (location, thread) = {
            let who = self.who.lock().unwrap_or_else(PoisonError::into_inner);
            (who.location, who.thread.as_ref().and_then(|t| t.name().map(str::to_owned)))
        };
        // Returned (and perhaps checked out again) while this was read: perhaps not this checkout's.
        let location = location.filter(|_| self.out_since.load(Ordering::Acquire) == since)?;
        Some((Leak { held_for, location: location.to_string(), thread }, since))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// A connected pair; the first end is the "connection's socket".
    fn pair() -> (UnixStream, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        (ours, theirs)
    }

    /// Whether `ours` was shut down: a read returns end of file at once instead of "would block".
    fn shut(ours: &mut UnixStream) -> bool {
        let mut byte = [0_u8; 1];
        match ours.read(&mut byte) {
            Ok(0) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            other => panic!("unexpected read: {other:?}"),
        }
    }

    #[test]
    fn a_call_ended_before_its_deadline_passes_is_not_touched() {
        let watches = Watches::new();
        let watch = watches.add();
        let (mut ours, _theirs) = pair();
        let socket = Socket::from_raw(ours.as_raw_fd());
        let call = watch.start(socket, Tick::now().plus(Duration::from_secs(3600)));
        watches.expire(Tick::now());
        assert!(!watch.finish(call));
        assert!(!shut(&mut ours));
        // Past its deadline, but ended before the watchdog looked: the deadline is not enforced after it.
        let call = watch.start(socket, Tick::now());
        assert!(!watch.finish(call));
        watches.expire(Tick::now().plus(Duration::from_secs(1)));
        assert!(!shut(&mut ours));
    }

    #[test]
    fn a_call_past_its_deadline_has_its_socket_shut_and_ends_expired() {
        let watches = Watches::new();
        let watch = watches.add();
        let (mut ours, _theirs) = pair();
        let socket = Socket::from_raw(ours.as_raw_fd());
        let call = watch.start(socket, Tick::now());
        watches.expire(Tick::now().plus(Duration::from_millis(1)));
        assert!(shut(&mut ours));
        assert!(watch.finish(call));
        // The next call starts afresh.
        let (mut other, _theirs) = pair();
        let call =
            watch.start(Socket::from_raw(other.as_raw_fd()), Tick::now().plus(Duration::from_secs(60)));
        watches.expire(Tick::now());
        assert!(!watch.finish(call));
        assert!(!shut(&mut other));
    }

    #[test]
    fn a_call_ending_while_the_watchdog_looks_is_expired_exactly_when_its_socket_was_shut() {
        let watches = Arc::new(Watches::new());
        let watch = watches.add();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = {
            let (watches, stop) = (Arc::clone(&watches), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    watches.expire(Tick::now());
                }
            })
        };
        let (mut expired, mut in_time) = (0, 0);
        // Calls of 0 to 40 µs past their deadline, until both endings were seen often (or enough tries).
        for i in 0..20_000_u64 {
            if expired >= 50 && in_time >= 50 {
                break;
            }
            let (mut ours, _theirs) = pair();
            let call = watch.start(Socket::from_raw(ours.as_raw_fd()), Tick::now());
            let until = Tick::now().plus(Duration::from_micros(i % 41));
            while Tick::now() < until {
                std::hint::spin_loop();
            }
            let was_expired = watch.finish(call);
            assert_eq!(was_expired, shut(&mut ours), "finish said {was_expired}");
            if was_expired {
                expired += 1;
            } else {
                in_time += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        watchdog.join().expect("the watchdog does not panic");
        assert!(expired > 0 && in_time > 0, "the race was not met ({expired} expired, {in_time} in time)");
    }

    #[test]
    fn a_checkout_held_too_long_is_reported_with_its_place_and_thread_and_warned_about_once() {
        let watches = Watches::new();
        let watch = watches.add();
        // Dated two seconds back.
        let at = Tick::now().minus(Duration::from_secs(2));
        let location = Location::caller();
        thread::scope(|s| {
            thread::Builder::new()
                .name("handler-7".into())
                .spawn_scoped(s, || watch.checked_out(at, location))
                .expect("a thread");
        });
        let leaks = watches.older_than(Duration::from_secs(1));
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].location, location.to_string());
        assert_eq!(leaks[0].thread.as_deref(), Some("handler-7"));
        assert!(leaks[0].held_for >= Duration::from_secs(2));
        assert!(watches.older_than(Duration::from_secs(60)).is_empty(), "held 2 s, not a minute");
        assert_eq!(watches.warn_older_than(Duration::from_secs(1)), 1);
        assert_eq!(watches.warn_older_than(Duration::from_secs(1)), 0, "once per checkout");
        watch.returned();
        assert!(watches.older_than(Duration::from_secs(1)).is_empty());
        // Checked out again (by this thread, unnamed here in the test harness or not): a new checkout.
        watch.checked_out(at.minus(Duration::from_secs(1)), location);
        let leaks = watches.older_than(Duration::from_secs(1));
        assert_eq!(leaks[0].thread.as_deref(), thread::current().name());
        assert_eq!(watches.warn_older_than(Duration::from_secs(1)), 1);
    }

    #[test]
    fn a_call_left_armed_by_a_panic_is_settled_before_the_next_and_by_a_disarm() {
        let watches = Watches::new();
        let watch = watches.add();
        let (mut ours, _theirs) = pair();
        let socket = Socket::from_raw(ours.as_raw_fd());
        // Never finished (its thread unwound): its deadline stays registered.
        let _lost = watch.start(socket, Tick::now().plus(Duration::from_secs(3600)));
        let call = watch.start(socket, Tick::now().plus(Duration::from_secs(60)));
        watches.expire(Tick::now());
        assert!(!watch.finish(call), "the new call is its own");
        // Already shut by the watchdog when the next call starts: that call is not reported as expired.
        let _lost = watch.start(socket, Tick::now());
        watches.expire(Tick::now().plus(Duration::from_millis(1)));
        assert!(shut(&mut ours));
        let (mut other, _theirs) = pair();
        let call =
            watch.start(Socket::from_raw(other.as_raw_fd()), Tick::now().plus(Duration::from_secs(60)));
        assert!(!watch.finish(call));
        // A connection closed with a call left armed: disarmed, the watchdog never touches its socket.
        let _lost = watch.start(Socket::from_raw(other.as_raw_fd()), Tick::now());
        watch.disarm();
        watches.expire(Tick::now().plus(Duration::from_secs(1)));
        assert!(!shut(&mut other));
    }

    #[test]
    fn a_closed_connections_watch_leaves_the_list() {
        let watches = Watches::new();
        let kept = watches.add();
        drop(watches.add());
        let mut seen = 0;
        watches.each(|_| seen += 1);
        assert_eq!(seen, 1);
        assert_eq!(watches.lock().len(), 1);
        drop(kept);
    }
}
