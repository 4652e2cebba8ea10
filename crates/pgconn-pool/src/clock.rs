//! The pool's clock for what every request does: `CLOCK_MONOTONIC` in nanoseconds, the clock that std's
//! `Instant` reads on Linux, kept as a plain integer.
//!
//! Why not `Instant`: a request (checkout, one query, return) takes five differences and two sums of
//! instants (how long it waited, how long the query took, how long the connection was held, how quiet the
//! connection was, the deadline of the query). `Instant`'s differences normalise seconds and nanoseconds
//! with checks: about 40 instructions each (callgrind), a tenth of what the pool adds to a request. On
//! a [`Tick`] each is one subtraction. The values the API returns are `Instant`s, converted at the
//! boundary ([`Tick::instant`]). (Linux: std reads `CLOCK_MONOTONIC` there, and the pool's socket
//! handling is Linux's too.)

// `clock_gettime` writes the `timespec` it is given, which lives on the stack for the call.
#![allow(unsafe_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// An instant of `CLOCK_MONOTONIC`, in nanoseconds since the clock's origin (the boot, on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Tick(u64);

impl Tick {
    /// Now.
    pub(crate) fn now() -> Tick {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `now` is a valid `timespec` for the call to write; CLOCK_MONOTONIC always exists on
        // Linux, so the call cannot fail (it would leave `now` at zero: the origin).
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
        let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
        Tick(seconds.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    /// The instant as nanoseconds since the clock's origin: never 0 in practice (the machine has been up
    /// for more than a nanosecond), which [`crate::watch`] uses as "none".
    pub(crate) fn nanos(self) -> u64 {
        self.0
    }

    /// The instant `nanos` nanoseconds after the clock's origin (what [`Tick::nanos`] gave).
    pub(crate) fn from_nanos(nanos: u64) -> Tick {
        Tick(nanos)
    }

    /// The time from `earlier` to this instant; zero when `earlier` is later.
    pub(crate) fn since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The instant `duration` after this one (the end of time when past `u64::MAX` nanoseconds: 584 years
    /// after the boot).
    pub(crate) fn plus(self, duration: Duration) -> Tick {
        Tick(self.0.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)))
    }

    /// The instant `duration` before this one, or the clock's origin.
    pub(crate) fn minus(self, duration: Duration) -> Tick {
        Tick(self.0.saturating_sub(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)))
    }

    /// The same instant as an `Instant`, for the API. The conversion takes the same origin every time,
    /// a `Tick` and an `Instant` read one after the other once per process (the closest pair of a few
    /// tries, usually a few tens of nanoseconds apart), so converted instants keep their order and
    /// differences exactly, and one is never earlier than it was, only later by that gap (an `Instant`
    /// taken just before a checkout is never after that checkout's [`crate::PooledConn::checked_out_at`]).
    pub(crate) fn instant(self) -> Instant {
        static ORIGIN: OnceLock<(Tick, Instant)> = OnceLock::new();
        let &(tick, instant) = ORIGIN.get_or_init(|| {
            // The `Instant` between two ticks, paired with the first: conversions err late, never early,
            // by at most the pair's gap; the narrowest of a few tries (a preemption can widen one).
            (0..8)
                .map(|_| {
                    let (before, instant, after) = (Tick::now(), Instant::now(), Tick::now());
                    (after.since(before), before, instant)
                })
                .min_by_key(|&(gap, ..)| gap)
                .map_or_else(|| (Tick::now(), Instant::now()), |(_, before, instant)| (before, instant))
        });
        if self >= tick {
            instant + self.since(tick)
        } else {
            instant.checked_sub(tick.since(self)).unwrap_or(instant)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_instants_clock() {
        let (before, start) = (Instant::now(), Tick::now());
        std::thread::sleep(Duration::from_millis(20));
        let (end, after) = (Tick::now(), Instant::now());
        let ticked = end.since(start);
        assert!(ticked >= Duration::from_millis(20), "{ticked:?}");
        assert!(ticked <= after - before, "{ticked:?} within {:?}", after - before);
        // Converted, in order and never early.
        assert!(start.instant() >= before && start.instant() <= end.instant());
        assert_eq!(end.instant() - start.instant(), ticked);
    }

    #[test]
    fn arithmetic_saturates() {
        let tick = Tick::from_nanos(5);
        assert_eq!(tick.plus(Duration::MAX), Tick::from_nanos(u64::MAX));
        assert_eq!(tick.minus(Duration::from_secs(1)), Tick::from_nanos(0));
        assert_eq!(tick.since(Tick::from_nanos(9)), Duration::ZERO);
        assert_eq!(Tick::from_nanos(9).since(tick), Duration::from_nanos(4));
        assert_eq!(tick.plus(Duration::from_nanos(3)).nanos(), 8);
    }
}
