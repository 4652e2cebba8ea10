//! Per-thread stripes for the pool's bookkeeping: every request updates counters and latency histograms.
//! Each thread works in its own stripe (while there are no more threads than stripes), on its own cache
//! line, so a busy pool's request threads neither wait for each other nor pull one cache line between
//! cores on every request; readers (the metrics) visit every stripe.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Stripes per structure.
pub(crate) const STRIPES: usize = 8;

/// This thread's number, from 1, given at its first call and fixed for its life: its stripe, and the tag a
/// connection's watch compares to see whether the same thread checked it out again ([`crate::watch`]).
pub(crate) fn thread_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Initialised by hand, not lazily by `thread_local!`: a request reads it six times, and a constant
    // thread-local is one load (0: not given yet).
    thread_local!(static NUMBER: Cell<u64> = const { Cell::new(0) });
    let number = NUMBER.get();
    if number != 0 {
        return number;
    }
    let number = NEXT.fetch_add(1, Ordering::Relaxed);
    NUMBER.set(number);
    number
}

/// This thread's stripe, fixed for its life.
pub(crate) fn stripe() -> usize {
    // Modulo a power of two: a mask.
    usize::try_from(thread_number() % STRIPES as u64).unwrap_or(0)
}

/// `T` alone on its cache line (two lines: adjacent-line prefetching pairs them on x86).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// A counter or a gauge: adding touches this thread's stripe only; reading sums the stripes (a gauge's
/// stripe may wrap below zero when other threads take away what one added; the sum is right).
#[derive(Default)]
pub(crate) struct Counter([Padded<AtomicU64>; STRIPES]);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn incr(&self) {
        self.add(1);
    }

    /// Takes one away (from this thread's stripe, whoever added it).
    pub(crate) fn decr(&self) {
        self.0[stripe()].0.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        let sum = self.0.iter().fold(0_u64, |sum, stripe| sum.wrapping_add(stripe.0.load(Ordering::Relaxed)));
        // A gauge read while another thread moves one between stripes can sum below zero for a moment.
        if sum > u64::MAX / 2 { 0 } else { sum }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_moved_between_threads_sums_right_and_never_below_zero() {
        let gauge = std::sync::Arc::new(Counter::default());
        gauge.incr();
        gauge.incr();
        let other = std::sync::Arc::clone(&gauge);
        // Another thread (another stripe, while there are fewer threads than stripes) takes both away.
        std::thread::spawn(move || {
            other.decr();
            other.decr();
            other.decr();
        })
        .join()
        .expect("the other thread does not panic");
        assert_eq!(gauge.get(), 0, "a sum below zero reads as zero");
        gauge.add(5);
        assert_eq!(gauge.get(), 4);
    }
}
