//! Per-thread stripes for the pool's bookkeeping: every request updates counters, latency histograms and
//! the registries of calls with a deadline and of checked-out connections. Each thread works in its own
//! stripe (while there are no more threads than stripes), on its own cache line, so a busy pool's request
//! threads neither wait for each other nor pull one cache line between cores on every request; readers
//! (metrics, the watchdog, the leak detector) visit every stripe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Stripes per structure.
pub(crate) const STRIPES: usize = 8;

/// This thread's stripe, fixed for its life.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local!(static STRIPE: usize = usize::try_from(NEXT.fetch_add(1, Ordering::Relaxed)).unwrap_or(0) % STRIPES);
    STRIPE.with(|stripe| *stripe)
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

/// Entries registered by the thread that makes them and removed by their [`Ticket`] (from any thread); a
/// stripe holds about one entry per thread that shares it, so a linear search is the cheapest lookup.
pub(crate) struct Registry<T>([Padded<Mutex<Stripe<T>>>; STRIPES]);

struct Stripe<T> {
    next: u64,
    entries: Vec<(u64, T)>,
}

/// Where an entry of a [`Registry`] is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    stripe: usize,
    id: u64,
}

impl<T> Registry<T> {
    pub(crate) fn new() -> Registry<T> {
        Registry(std::array::from_fn(|_| Padded(Mutex::new(Stripe { next: 0, entries: Vec::new() }))))
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Stripe<T>> {
        self.0[index].0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, entry: T) -> Ticket {
        let index = stripe();
        let mut stripe = self.lock(index);
        let id = stripe.next;
        stripe.next += 1;
        stripe.entries.push((id, entry));
        Ticket { stripe: index, id }
    }

    /// The entry, unless [`Registry::retain`] dropped it meanwhile.
    pub(crate) fn remove(&self, ticket: Ticket) -> Option<T> {
        let entries = &mut self.lock(ticket.stripe).entries;
        let index = entries.iter().position(|(id, _)| *id == ticket.id)?;
        Some(entries.swap_remove(index).1)
    }

    /// Keeps the entries `keep` says to keep, one stripe at a time under its lock.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&mut T) -> bool) {
        for index in 0..STRIPES {
            self.lock(index).entries.retain_mut(|(_, entry)| keep(entry));
        }
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

    #[test]
    fn a_registry_removes_by_ticket_from_any_thread_and_retains_what_it_is_told() {
        let registry = std::sync::Arc::new(Registry::new());
        let tickets: Vec<Ticket> = (0..5).map(|i| registry.insert(i)).collect();
        let (other, second) = (std::sync::Arc::clone(&registry), tickets[1]);
        let removed =
            std::thread::spawn(move || other.remove(second)).join().expect("the other thread does not panic");
        assert_eq!(removed, Some(1));
        assert_eq!(registry.remove(tickets[1]), None, "removed once");
        registry.retain(|entry| *entry != 3);
        assert_eq!(registry.remove(tickets[3]), None, "dropped by retain");
        let mut left = Vec::new();
        registry.retain(|entry| {
            left.push(*entry);
            true
        });
        left.sort_unstable();
        assert_eq!(left, [0, 2, 4]);
    }
}
