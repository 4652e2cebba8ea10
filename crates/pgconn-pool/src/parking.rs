//! A thread-affine hand-out on top of r2d2: a returned connection is parked for the thread that returned it,
//! and that thread's next checkout takes it back first, as HikariCP's `ConcurrentBag` does with its
//! thread-local lists.
//!
//! Why: r2d2 hands connections out from one last-in first-out stack, so under load a thread rarely gets the
//! connection (the server process, the socket, the runtime's buffers) it used last; the scheduler then moves
//! threads between cores, and each request pays for cold caches (`docs/pool.md`, "Known behaviour").
//!
//! Rules, so that parking never makes a request wait or keeps a connection from one that needs it:
//! - Each thread gets a slot of its own at its first checkout, in turn; once the slots (the pool's size,
//!   at least 16) are all given, later threads share them.
//! - A checkout that finds nothing in its slot takes a connection parked in another slot before it asks
//!   r2d2 (so that a server starting a thread per request reuses what the last request's thread parked,
//!   and r2d2 does not open more connections beside them), and again, looking at every slot, before it
//!   blocks; while any thread is about to block, returned connections go to r2d2, not to a slot. A
//!   connection is never parked unseen by a waiter: the waiter counts itself blocked before it looks in
//!   the slots, the parker looks at that count after it filled its slot, and both are sequentially
//!   consistent atomic operations, so whichever comes second sees the other's write.
//! - A slot is one atomic pointer owning a boxed connection: taking and parking are one swap each, no
//!   lock. Each slot has its cache line, so that a request (take its own, park it again) writes no memory
//!   that other threads' requests write. Parked connections are counted by looking at the slots.
//! - A connection parked for longer than [`PARK_LIMIT`] goes back to r2d2, whose idle timeout, maximum
//!   age and `DB_POOL_MIN_IDLE` then apply as before; a parked connection is checked at checkout exactly
//!   as one from r2d2 ([`crate::manager::check_out`]).

use std::cell::{Cell, RefCell};
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock::Tick;

use crate::manager::Manager;
use crate::stripes::Padded;

/// A connection parked longer than this goes back to r2d2's idle list.
pub const PARK_LIMIT: Duration = Duration::from_secs(1);

/// How often parked connections are looked at for [`PARK_LIMIT`].
const SWEEP_PERIOD: Duration = Duration::from_millis(200);

/// A connection out of r2d2, in a box of its own: a request hands it from its slot to the checkout and
/// back, which moves a pointer instead of r2d2's handle (about a hundred bytes). Boxed when it leaves
/// r2d2, freed when it goes back.
pub(crate) type Pooled = Box<r2d2::PooledConnection<Manager>>;

/// The slots.
pub(crate) struct Parking {
    /// This pool's number.
    id: usize,
    /// The next slot to give a thread that has none in this pool.
    next_slot: AtomicUsize,
    slots: Box<[Padded<Slot>]>,
    /// Threads that found no connection in their slot nor idle in r2d2, and will block unless they steal.
    blocked: AtomicUsize,
}

/// A thread announced as about to block ([`Parking::block_or_steal`]); dropping it ends the announcement.
pub(crate) struct Blocked<'a>(&'a Parking);

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.blocked.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Numbers the pools, for the threads' slot assignments.
static NEXT_POOL: AtomicUsize = AtomicUsize::new(0);

/// How many pools a thread remembers its slot in; past that the oldest assignment is forgotten (the
/// thread then gets a new slot in that pool).
const REMEMBERED: usize = 16;

thread_local! {
    /// This thread's slot in each pool it used: `(pool, slot)`.
    static SLOTS: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
    /// The last of those it looked up (a thread mostly uses one pool): read first, twice a request.
    static LAST: Cell<(usize, usize)> = const { Cell::new((usize::MAX, 0)) };
}

impl Parking {
    /// `slots` slots (the pool's size, at least 16): the first threads to use the pool each get one of
    /// their own, later ones share.
    pub(crate) fn new(slots: u32) -> Parking {
        let slots = usize::try_from(slots.max(16)).unwrap_or(16);
        Parking {
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            next_slot: AtomicUsize::new(0),
            slots: (0..slots).map(|_| Padded(Slot::default())).collect(),
            blocked: AtomicUsize::new(0),
        }
    }

    /// This thread's slot in this pool, given in turn at its first checkout.
    fn thread_slot(&self) -> usize {
        let (pool, slot) = LAST.get();
        if pool == self.id {
            return slot;
        }
        let slot = SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            if let Some(&(_, slot)) = slots.iter().find(|(pool, _)| *pool == self.id) {
                return slot;
            }
            let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
            if slots.len() >= REMEMBERED {
                slots.remove(0);
            }
            slots.push((self.id, slot));
            slot
        });
        LAST.set((self.id, slot));
        slot
    }

    fn slot(&self, index: usize) -> &Slot {
        &self.slots[index % self.slots.len()].0
    }

    /// Connections parked now.
    pub(crate) fn parked(&self) -> u32 {
        let parked = self.slots.iter().filter(|slot| slot.0.is_full()).count();
        u32::try_from(parked).unwrap_or(u32::MAX)
    }

    /// The connection parked in this thread's slot, if any.
    pub(crate) fn take_own(&self) -> Option<Pooled> {
        self.take(self.thread_slot())
    }

    fn take(&self, index: usize) -> Option<Pooled> {
        self.slot(index).take()
    }

    /// Announces a thread about to block in r2d2, until the returned guard is dropped (whichever way the
    /// wait ends, a panic included); and a parked connection to steal, if there is one.
    pub(crate) fn block_or_steal(&self) -> (Blocked<'_>, Option<Pooled>) {
        self.blocked.fetch_add(1, Ordering::SeqCst);
        let blocked = Blocked(self);
        (blocked, self.steal())
    }

    /// A parked connection of another slot, if any: a thread with nothing in its own slot (a new thread,
    /// as in a server that starts one per request) takes one before asking r2d2, so connections parked by
    /// threads that are gone are reused at once, and r2d2 is not made to open more to keep
    /// `DB_POOL_MIN_IDLE` idle beside them. It looks at every slot until one is full (a load each; no count
    /// of the parked connections is kept, which every request would write twice): at most the pool's size
    /// (16 or more) loads when none is parked, on a checkout that is going to r2d2 anyway.
    /// Every slot is looked at, this thread's first.
    pub(crate) fn steal(&self) -> Option<Pooled> {
        let start = self.thread_slot();
        (0..self.slots.len()).find_map(|i| self.take(start + i))
    }

    /// Parks `conn` for this thread, unless a thread is about to block (then it goes to r2d2, which wakes
    /// that thread). A connection parked earlier in the same slot goes to r2d2.
    pub(crate) fn park(&self, conn: Pooled, now: Tick) {
        if self.blocked.load(Ordering::SeqCst) > 0 {
            drop(conn);
            return;
        }
        let index = self.thread_slot();
        // One connection parked earlier in the same slot (a slot shared by threads past the slots' count)
        // goes to r2d2.
        drop(self.slot(index).put(conn, now));
        // A thread may have started to block after the first look: it may have missed this one.
        if self.blocked.load(Ordering::SeqCst) > 0 {
            drop(self.take(index));
        }
    }

    /// Returns to r2d2 the connections parked longer than [`PARK_LIMIT`].
    fn sweep(&self, now: Tick) {
        for slot in &self.slots {
            if !slot.0.parked_before(now.minus(PARK_LIMIT)) {
                continue;
            }
            // Dropped: back to r2d2. Even one taken back and parked again since the look (its hint was
            // old, the connection is not): putting it back would park it unseen by a thread that began
            // to block meanwhile; its owner finds it in r2d2 instead.
            drop(slot.0.take());
        }
    }
}

/// Starts the thread that returns long-parked connections to r2d2; it ends once the pool is gone.
pub(crate) fn spawn_sweeper(parking: Weak<Parking>) {
    crate::deadline::spawn_periodic(
        "pgconn-parking",
        SWEEP_PERIOD,
        "the parking sweeper; connections stay parked until their thread's next checkout",
        move || {
            let Some(parking) = parking.upgrade() else { return false };
            parking.sweep(Tick::now());
            true
        },
    );
}

/// One parking slot: a connection, or none, behind one atomic pointer. Taking and parking are one
/// atomic swap each (a lock was two, and a count of the parked connections two more, every request).
#[derive(Default)]
struct Slot {
    conn: owned::AtomicBox<r2d2::PooledConnection<Manager>>,
    /// When its connection was parked ([`Tick::nanos`]), written before it is put in: the sweeper takes
    /// only a connection that looks old enough (a hint: one parked again meanwhile goes too).
    since: AtomicU64,
}

impl Slot {
    fn take(&self) -> Option<Pooled> {
        self.conn.take()
    }

    /// Parks `conn`, parked at `now`; the connection it replaced, if any.
    fn put(&self, conn: Pooled, now: Tick) -> Option<Pooled> {
        self.since.store(now.nanos(), Ordering::Relaxed);
        self.conn.swap(conn)
    }

    fn is_full(&self) -> bool {
        self.conn.is_full()
    }

    /// Whether it holds a connection that looks parked before `instant`.
    fn parked_before(&self, instant: Tick) -> bool {
        self.is_full() && self.since.load(Ordering::Relaxed) < instant.nanos()
    }
}

/// An owning atomic pointer: what `Mutex<Option<Box<T>>>` does, with one atomic swap per take or put.
mod owned {
    // `Box::into_raw` and `Box::from_raw` on the pointer the slot owns; see each SAFETY comment.
    #![allow(unsafe_code)]

    use std::marker::PhantomData;
    use std::ptr;
    use std::sync::atomic::{AtomicPtr, Ordering};

    /// Owns the box its pointer points to, or nothing (null). Every operation is sequentially consistent,
    /// so that a parker's put and a waiter's look at the slots are ordered against their counts of
    /// blocked threads ([`super::Parking`]).
    pub(super) struct AtomicBox<T> {
        ptr: AtomicPtr<T>,
        /// Sent and shared as a `Mutex<Option<Box<T>>>` would be: `Send` and `Sync` when `T` is `Send`.
        owns: PhantomData<std::sync::Mutex<Option<Box<T>>>>,
    }

    impl<T> Default for AtomicBox<T> {
        fn default() -> Self {
            AtomicBox { ptr: AtomicPtr::new(ptr::null_mut()), owns: PhantomData }
        }
    }

    impl<T> AtomicBox<T> {
        /// What it held, leaving it empty.
        pub(super) fn take(&self) -> Option<Box<T>> {
            // A load first: an empty slot is not written (a steal looks at every slot).
            if self.ptr.load(Ordering::SeqCst).is_null() {
                return None;
            }
            let taken = self.ptr.swap(ptr::null_mut(), Ordering::SeqCst);
            // SAFETY: a non-null pointer here came from `Box::into_raw` in `swap`, and this swap took it
            // out: this call is its only owner now.
            (!taken.is_null()).then(|| unsafe { Box::from_raw(taken) })
        }

        /// Puts `value` in; what it held before.
        pub(super) fn swap(&self, value: Box<T>) -> Option<Box<T>> {
            let previous = self.ptr.swap(Box::into_raw(value), Ordering::SeqCst);
            // SAFETY: as in `take`: the swap took the previous pointer out, so this call owns it.
            (!previous.is_null()).then(|| unsafe { Box::from_raw(previous) })
        }

        pub(super) fn is_full(&self) -> bool {
            !self.ptr.load(Ordering::SeqCst).is_null()
        }
    }

    impl<T> Drop for AtomicBox<T> {
        fn drop(&mut self) {
            drop(self.take());
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::Arc;

        use super::AtomicBox;

        #[test]
        fn each_box_has_one_owner_and_is_dropped_once() {
            // Counted drops: an Arc's count is back to one when every box was dropped exactly once.
            let counted = Arc::new(());
            let slot = AtomicBox::default();
            assert!(slot.take().is_none() && !slot.is_full());
            assert!(slot.swap(Box::new(Arc::clone(&counted))).is_none());
            assert!(slot.is_full());
            let previous = slot.swap(Box::new(Arc::clone(&counted))).expect("the first");
            drop(previous);
            assert_eq!(Arc::strong_count(&counted), 2, "one in the slot");
            drop(slot.take().expect("the second"));
            assert!(slot.take().is_none());
            assert!(slot.swap(Box::new(Arc::clone(&counted))).is_none());
            drop(slot);
            assert_eq!(Arc::strong_count(&counted), 1, "the slot's own dropped with it");
        }

        #[test]
        fn threads_swapping_lose_and_duplicate_nothing() {
            let counted = Arc::new(());
            let slot = Arc::new(AtomicBox::default());
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let (slot, counted) = (Arc::clone(&slot), Arc::clone(&counted));
                    s.spawn(move || {
                        for i in 0..20_000 {
                            if i % 2 == 0 {
                                drop(slot.swap(Box::new(Arc::clone(&counted))));
                            } else {
                                drop(slot.take());
                            }
                        }
                    });
                }
            });
            let held = usize::from(slot.is_full());
            assert_eq!(Arc::strong_count(&counted), 1 + held, "one per box still held");
        }
    }
}
