//! The statement cache of one connection: a statement text used [`PREPARE_THRESHOLD`] times is prepared
//! server-side and reused from then on, so PostgreSQL stops parsing and planning it on every call.
//!
//! Bounded and least-recently-used: `DB_STATEMENT_CACHE` entries at most, counting the texts still on
//! their way to the threshold; evicting a prepared statement closes it on the server. A cached statement
//! belongs to its connection and never leaves it: it is forgotten when the session is reset (`DISCARD
//! ALL`, `DEALLOCATE`) and when the server says its plan changed (`0A000`, "cached plan must not change
//! result type", after DDL) or that it is gone (`26000`). Off through PgBouncer in transaction mode
//! (`Settings::statement_cache`), where a named statement would land on another server connection.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use postgres::Statement;
use postgres::types::Type;

/// Uses of a statement text (with its parameter types) on one connection before it is prepared: the
/// first ones run unnamed, as they would without a cache, so a statement run once or twice costs no
/// extra round trip; the rest skip parsing and planning. psycopg's `prepare_threshold` and pgjdbc's
/// `prepareThreshold` are 5 as well.
pub const PREPARE_THRESHOLD: u32 = 5;

/// What to do with a statement.
pub(crate) enum Lookup {
    /// Run it unnamed, as without a cache.
    Unnamed,
    /// Prepare it now, keep it, and run the prepared statement.
    Prepare,
    /// Run this prepared statement.
    Prepared(Statement),
}

struct Entry {
    /// Its parameter types: the same text with other types is another statement.
    types: Vec<Type>,
    uses: u32,
    statement: Option<Statement>,
    /// When it was last used, in lookups since the cache was made: the least recent goes first.
    last_used: u64,
}

/// One connection's prepared statements, and the texts on their way there.
pub(crate) struct StatementCache {
    capacity: usize,
    /// By text (looked up without copying it, on every call of the query API), then by parameter types.
    entries: TextMap<Vec<Entry>>,
    len: usize,
    clock: u64,
}

/// A map by statement text, hashed with [`TextHasher`].
pub(crate) type TextMap<V> = HashMap<Box<str>, V, BuildHasherDefault<TextHasher>>;

/// The hash of the maps by statement text (this cache's, and each connection's remembered analyses):
/// rustc's `FxHash`, a rotate, xor and multiply per 8 bytes. Every call of the query API looks its text up
/// in both; with the standard library's `SipHash` that cost about 190 instructions per map and call for
/// `SELECT 1` (callgrind). `SipHash` defends a map against keys chosen to collide; these keys are the
/// application's statement texts, and each map is bounded, so a collision costs at most a scan of a
/// bounded number of entries.
#[derive(Default, Clone, Copy)]
pub(crate) struct TextHasher(u64);

impl TextHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for TextHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(u64::try_from(n).unwrap_or(u64::MAX));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What a lookup or an insertion did, for the pool's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted {
    /// Prepared statements closed to make room.
    pub(crate) prepared: u64,
}

impl StatementCache {
    /// A cache of `capacity` entries; 0 turns it off.
    pub(crate) fn new(capacity: u32) -> StatementCache {
        StatementCache { capacity: capacity as usize, entries: HashMap::default(), len: 0, clock: 0 }
    }

    /// Whether the cache is on.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    fn entry(&mut self, sql: &str, types: &[Type]) -> Option<&mut Entry> {
        self.entries.get_mut(sql)?.iter_mut().find(|entry| entry.types == types)
    }

    /// Counts a use of `sql` with `types` and says how to run it; may evict the least recently used entry.
    pub(crate) fn lookup(&mut self, sql: &str, types: &[Type]) -> (Lookup, Evicted) {
        if !self.enabled() {
            return (Lookup::Unnamed, Evicted::default());
        }
        self.clock += 1;
        let clock = self.clock;
        if let Some(entry) = self.entry(sql, types) {
            entry.last_used = clock;
            entry.uses = entry.uses.saturating_add(1);
            return match &entry.statement {
                Some(statement) => (Lookup::Prepared(statement.clone()), Evicted::default()),
                None if entry.uses >= PREPARE_THRESHOLD => (Lookup::Prepare, Evicted::default()),
                None => (Lookup::Unnamed, Evicted::default()),
            };
        }
        let evicted = self.make_room();
        let entry = Entry { types: types.to_vec(), uses: 1, statement: None, last_used: clock };
        self.entries.entry(sql.into()).or_default().push(entry);
        self.len += 1;
        let lookup = if PREPARE_THRESHOLD <= 1 { Lookup::Prepare } else { Lookup::Unnamed };
        (lookup, evicted)
    }

    /// Keeps `statement`, prepared for `sql` with `types`.
    pub(crate) fn store(&mut self, sql: &str, types: &[Type], statement: Statement) {
        if let Some(entry) = self.entry(sql, types) {
            entry.statement = Some(statement);
        }
    }

    /// Forgets `sql` with `types` (its plan changed, or the server lost it): it starts counting again.
    pub(crate) fn forget(&mut self, sql: &str, types: &[Type]) {
        if let Some(list) = self.entries.get_mut(sql) {
            let before = list.len();
            list.retain(|entry| entry.types != types);
            self.len -= before - list.len();
            if list.is_empty() {
                self.entries.remove(sql);
            }
        }
    }

    /// Forgets everything: the session was reset, and its prepared statements with it. Dropping them
    /// sends a `Close` the server answers harmlessly for a statement it no longer has.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.len = 0;
    }

    /// Evicts the least recently used entry when the cache is full.
    fn make_room(&mut self) -> Evicted {
        if self.len < self.capacity {
            return Evicted::default();
        }
        let oldest = self
            .entries
            .iter()
            .flat_map(|(sql, list)| list.iter().enumerate().map(move |(i, entry)| (entry.last_used, sql, i)))
            .min_by_key(|(last_used, ..)| *last_used)
            .map(|(_, sql, i)| (sql.clone(), i));
        let Some((sql, i)) = oldest else { return Evicted::default() };
        let Some(list) = self.entries.get_mut(&sql) else { return Evicted::default() };
        let entry = list.swap_remove(i);
        if list.is_empty() {
            self.entries.remove(&sql);
        }
        self.len -= 1;
        Evicted { prepared: u64::from(entry.statement.is_some()) }
    }
}

/// Whether `error` says a cached statement cannot be used any more: its result type changed (DDL since it
/// was prepared) or the server no longer has it (`DEALLOCATE`, `DISCARD ALL` behind the pool's back).
pub(crate) fn is_stale(error: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    error.as_db_error().is_some_and(|db| {
        (*db.code() == SqlState::FEATURE_NOT_SUPPORTED
            && db.message().contains("cached plan must not change"))
            || *db.code() == SqlState::INVALID_SQL_STATEMENT_NAME
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_that_differ_anywhere_hash_apart_and_equal_ones_alike() {
        use std::hash::BuildHasher as _;
        let hash = |text: &str| BuildHasherDefault::<TextHasher>::default().hash_one(text);
        assert_eq!(hash("SELECT 1"), hash(&String::from("SELECT 1")));
        // A difference in the first word, in the last partial word, and in the length alone.
        let texts = [
            "SELECT 1",
            "SELECT 2",
            "SELECT 12",
            "SELECT 13",
            "SELECT 1 ",
            "",
            "select 1",
            "SELECT 123456789",
        ];
        for (i, a) in texts.iter().enumerate() {
            for b in &texts[i + 1..] {
                assert_ne!(hash(a), hash(b), "{a:?} and {b:?}");
            }
        }
    }

    fn kind(lookup: &Lookup) -> &'static str {
        match lookup {
            Lookup::Unnamed => "unnamed",
            Lookup::Prepare => "prepare",
            Lookup::Prepared(_) => "prepared",
        }
    }

    #[test]
    fn a_text_is_prepared_at_the_threshold_and_counted_per_parameter_types() {
        let mut cache = StatementCache::new(10);
        for _ in 1..PREPARE_THRESHOLD {
            assert_eq!(kind(&cache.lookup("SELECT $1", &[Type::INT4]).0), "unnamed");
        }
        assert_eq!(kind(&cache.lookup("SELECT $1", &[Type::INT4]).0), "prepare");
        // Not stored (no server here): it asks again.
        assert_eq!(kind(&cache.lookup("SELECT $1", &[Type::INT4]).0), "prepare");
        // The same text with other types is another statement.
        assert_eq!(kind(&cache.lookup("SELECT $1", &[Type::TEXT]).0), "unnamed");
    }

    #[test]
    fn the_least_recently_used_entry_makes_room() {
        let mut cache = StatementCache::new(2);
        cache.lookup("a", &[]);
        cache.lookup("b", &[]);
        cache.lookup("a", &[]);
        let (_, evicted) = cache.lookup("c", &[]);
        assert_eq!(evicted, Evicted::default(), "b was not prepared");
        assert_eq!(cache.len, 2);
        assert!(cache.entries.contains_key("a"), "a was used last");
        assert!(!cache.entries.contains_key("b"), "b was the least recently used");
    }

    #[test]
    fn off_at_zero() {
        let mut cache = StatementCache::new(0);
        for _ in 0..10 {
            assert_eq!(kind(&cache.lookup("SELECT 1", &[]).0), "unnamed");
        }
        assert!(cache.entries.is_empty());
    }
}
