//! What one connection knows of each statement text it ran, in one map by text, looked up once a call:
//! what the text does ([`Analysis`], read from the text at its first use), and the statement cache's
//! entries for it.
//!
//! The statement cache: a statement text used [`PREPARE_THRESHOLD`] times is prepared server-side and
//! reused from then on, so PostgreSQL stops parsing and planning it on every call. Bounded and
//! least-recently-used: `DB_STATEMENT_CACHE` entries at most, counting the texts still on their way to the
//! threshold; evicting a prepared statement closes it on the server. A cached statement belongs to its
//! connection and never leaves it: it is forgotten when the session is reset (`DISCARD ALL`,
//! `DEALLOCATE`) and when the server says its plan changed (`0A000`, "cached plan must not change result
//! type", after DDL) or that it is gone (`26000`). Off through PgBouncer in transaction mode
//! (`Settings::statement_cache`), where a named statement would land on another server connection.
//!
//! Through PgBouncer (1.21 and later, `PGBOUNCER_PREPARED_STATEMENTS=true`), a statement the server rejected
//! as stale is not prepared again on that connection: PgBouncer keeps one server-side statement per text
//! on each server connection and hands the old one out again for the same text (its own documentation's
//! remedy is `RECONNECT` on its admin console after a migration), so it runs unnamed from then on.
//!
//! The analyses are bounded too: past [`TEXTS`] texts, those without a cache entry are forgotten (and read
//! again if they come back).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use postgres::Statement;
use postgres::types::Type;

use crate::session::Effect;
use crate::sql::strip;

/// Uses of a statement text (with its parameter types) on one connection before it is prepared: the
/// first ones run unnamed, as they would without a cache, so a statement run once or twice costs no
/// extra round trip; the rest skip parsing and planning. psycopg's `prepare_threshold` and pgjdbc's
/// `prepareThreshold` are 5 as well.
pub const PREPARE_THRESHOLD: u32 = 5;

/// Statement texts a connection remembers without a cache entry, at most.
const TEXTS: usize = 256;

/// What one statement text does, read from its text once ([`crate::session`], [`crate::txmode`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Analysis {
    /// Its effect on the transaction status and the session.
    pub(crate) effect: Effect,
    /// Through PgBouncer in transaction mode: what it does that breaks there, and what to do instead.
    pub(crate) mistake: Option<(&'static str, &'static str)>,
}

impl Analysis {
    /// Reads `sql`; `transaction_mode`: through PgBouncer in transaction mode, where some statements break.
    fn of(sql: &str, transaction_mode: bool) -> Analysis {
        let code = strip(sql);
        Analysis {
            effect: Effect::of(&code),
            mistake: if transaction_mode { crate::txmode::mistake(&code) } else { None },
        }
    }
}

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
    types: Box<[Type]>,
    uses: u32,
    statement: Option<Statement>,
    /// When it was last used, in lookups since the cache was made: the least recent goes first.
    last_used: u64,
}

/// One text: what it does, and its cache entries (one per parameter types).
struct Text {
    analysis: Analysis,
    entries: Vec<Entry>,
    /// Never prepared again on this connection: it went stale through PgBouncer ([`Texts::forget`]). Kept
    /// past evictions and resets, and with the text past the [`TEXTS`] bound while it can be.
    unnamed_only: bool,
}

/// One connection's statement texts: their analyses, prepared statements, and the texts on their way there.
pub(crate) struct Texts {
    /// Cache entries at most; 0: the cache is off.
    capacity: usize,
    /// Looked up without copying the text, on every call of the query API.
    map: TextMap<Text>,
    /// Cache entries, over all texts.
    len: usize,
    clock: u64,
    /// Through PgBouncer in transaction mode ([`Analysis::mistake`]).
    transaction_mode: bool,
}

/// A map by statement text, hashed with [`TextHasher`].
pub(crate) type TextMap<V> = HashMap<Box<str>, V, BuildHasherDefault<TextHasher>>;

/// The hash of the map by statement text: rustc's `FxHash`, a rotate, xor and multiply per 8 bytes.
/// Every call of the query API looks its text up; with the standard library's `SipHash` that cost about
/// 190 instructions a call for `SELECT 1` (callgrind). `SipHash` defends a map against keys chosen to collide; these keys are the
/// application's statement texts, and the map is bounded, so a collision costs at most a scan of a
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

impl Texts {
    /// `capacity` cache entries (0 turns the cache off); `transaction_mode`: through PgBouncer in
    /// transaction mode.
    pub(crate) fn new(capacity: u32, transaction_mode: bool) -> Texts {
        Texts { capacity: capacity as usize, map: HashMap::default(), len: 0, clock: 0, transaction_mode }
    }

    /// Whether the statement cache is on.
    pub(crate) fn caching(&self) -> bool {
        self.capacity > 0
    }

    /// What `sql` does, and how to run it: with parameter `types` and the cache on, counts a use of the
    /// statement (which may evict the least recently used entry); without (`None`: the simple query
    /// protocol, or the cache off), [`Lookup::Unnamed`]. One probe of the map when the text is known, and
    /// nothing allocated when the statement is.
    pub(crate) fn lookup<I>(&mut self, sql: &str, types: Option<I>) -> (Analysis, Lookup, Evicted)
    where
        I: ExactSizeIterator<Item = Type> + Clone,
    {
        let types = types.filter(|_| self.caching());
        self.clock += 1;
        let clock = self.clock;
        let analysis = if let Some(text) = self.map.get_mut(sql) {
            // A statement refused before it is sent (transaction mode) is not counted, nor cached.
            let Some(types) =
                types.as_ref().filter(|_| text.analysis.mistake.is_none() && !text.unnamed_only)
            else {
                return (text.analysis, Lookup::Unnamed, Evicted::default());
            };
            let same = |entry: &&mut Entry| {
                entry.types.len() == types.len() && entry.types.iter().cloned().eq(types.clone())
            };
            if let Some(entry) = text.entries.iter_mut().find(same) {
                entry.last_used = clock;
                entry.uses = entry.uses.saturating_add(1);
                let lookup = match &entry.statement {
                    Some(statement) => Lookup::Prepared(statement.clone()),
                    None if entry.uses >= PREPARE_THRESHOLD => Lookup::Prepare,
                    None => Lookup::Unnamed,
                };
                return (text.analysis, lookup, Evicted::default());
            }
            text.analysis
        } else {
            if self.map.len() >= TEXTS {
                self.map.retain(|_, text| !text.entries.is_empty() || text.unnamed_only);
                if self.map.len() >= TEXTS {
                    self.map.retain(|_, text| !text.entries.is_empty());
                }
            }
            let analysis = Analysis::of(sql, self.transaction_mode);
            self.map.insert(sql.into(), Text { analysis, entries: Vec::new(), unnamed_only: false });
            analysis
        };
        let Some(types) = types.filter(|_| analysis.mistake.is_none()) else {
            return (analysis, Lookup::Unnamed, Evicted::default());
        };
        // A first use of this text with these types.
        let evicted = self.make_room();
        let entry = Entry { types: types.collect(), uses: 1, statement: None, last_used: clock };
        match self.map.get_mut(sql) {
            Some(text) => text.entries.push(entry),
            // Not reached: eviction takes entries, not texts.
            None => drop(
                self.map.insert(sql.into(), Text { analysis, entries: vec![entry], unnamed_only: false }),
            ),
        }
        self.len += 1;
        let lookup = if PREPARE_THRESHOLD <= 1 { Lookup::Prepare } else { Lookup::Unnamed };
        (analysis, lookup, evicted)
    }

    fn entry(&mut self, sql: &str, types: &[Type]) -> Option<&mut Entry> {
        self.map.get_mut(sql)?.entries.iter_mut().find(|entry| *entry.types == *types)
    }

    /// Keeps `statement`, prepared for `sql` with `types`.
    pub(crate) fn store(&mut self, sql: &str, types: &[Type], statement: Statement) {
        if let Some(entry) = self.entry(sql, types) {
            entry.statement = Some(statement);
        }
    }

    /// Forgets `sql` with `types` (its plan changed, or the server lost it): it starts counting again.
    /// Through PgBouncer in transaction mode, the text runs unnamed from then on instead, with any
    /// parameter types: PgBouncer keeps one server-side statement per text, so preparing it again would
    /// get the stale one again.
    pub(crate) fn forget(&mut self, sql: &str, types: &[Type]) {
        if let Some(text) = self.map.get_mut(sql) {
            let before = text.entries.len();
            text.entries.retain(|entry| *entry.types != *types);
            self.len -= before - text.entries.len();
            text.unnamed_only |= self.transaction_mode;
        }
    }

    /// Forgets every prepared statement: the session was reset, and its prepared statements with it.
    /// Dropping them sends a `Close` the server answers harmlessly for a statement it no longer has. The
    /// analyses stay (a text does what it did), and so do the texts PgBouncer has stale.
    pub(crate) fn clear(&mut self) {
        for text in self.map.values_mut() {
            text.entries.clear();
        }
        self.len = 0;
    }

    /// Evicts the least recently used entry when the cache is full.
    fn make_room(&mut self) -> Evicted {
        if self.len < self.capacity {
            return Evicted::default();
        }
        let oldest = self
            .map
            .iter()
            .flat_map(|(sql, text)| {
                text.entries.iter().enumerate().map(move |(i, entry)| (entry.last_used, sql, i))
            })
            .min_by_key(|(last_used, ..)| *last_used)
            .map(|(_, sql, i)| (sql.clone(), i));
        let Some((sql, i)) = oldest else { return Evicted::default() };
        let Some(text) = self.map.get_mut(&sql) else { return Evicted::default() };
        let entry = text.entries.swap_remove(i);
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
    use crate::session::TxStatus;

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

    #[allow(clippy::unnecessary_wraps)] // what the lookup takes
    fn types(types: &[Type]) -> Option<std::iter::Cloned<std::slice::Iter<'_, Type>>> {
        Some(types.iter().cloned())
    }

    /// The cache's entries for `sql`.
    fn cached(texts: &Texts, sql: &str) -> usize {
        texts.map.get(sql).map_or(0, |text| text.entries.len())
    }

    #[test]
    fn a_text_is_prepared_at_the_threshold_and_counted_per_parameter_types() {
        let mut texts = Texts::new(10, false);
        for _ in 1..PREPARE_THRESHOLD {
            assert_eq!(kind(&texts.lookup("SELECT $1", types(&[Type::INT4])).1), "unnamed");
        }
        assert_eq!(kind(&texts.lookup("SELECT $1", types(&[Type::INT4])).1), "prepare");
        // Not stored (no server here): it asks again.
        assert_eq!(kind(&texts.lookup("SELECT $1", types(&[Type::INT4])).1), "prepare");
        // The same text with other types is another statement.
        assert_eq!(kind(&texts.lookup("SELECT $1", types(&[Type::TEXT])).1), "unnamed");
        assert_eq!(cached(&texts, "SELECT $1"), 2);
        // Without types (the simple query protocol), it is not counted.
        assert_eq!(kind(&texts.lookup("SELECT $1", types(&[]).filter(|_| false)).1), "unnamed");
        assert_eq!(texts.len, 2);
    }

    #[test]
    fn the_least_recently_used_entry_makes_room() {
        let mut texts = Texts::new(2, false);
        texts.lookup("a", types(&[]));
        texts.lookup("b", types(&[]));
        texts.lookup("a", types(&[]));
        let (_, _, evicted) = texts.lookup("c", types(&[]));
        assert_eq!(evicted, Evicted::default(), "b was not prepared");
        assert_eq!(texts.len, 2);
        assert_eq!(cached(&texts, "a"), 1, "a was used last");
        assert_eq!(cached(&texts, "b"), 0, "b was the least recently used");
        assert_eq!(cached(&texts, "c"), 1);
    }

    #[test]
    fn off_at_zero_where_each_text_is_still_read_once() {
        let mut texts = Texts::new(0, false);
        for _ in 0..10 {
            let (analysis, lookup, _) = texts.lookup("BEGIN", types(&[]));
            assert_eq!(kind(&lookup), "unnamed");
            assert_eq!(TxStatus::Idle.after(analysis.effect, true), TxStatus::InTransaction);
        }
        assert_eq!(texts.map.len(), 1);
        assert_eq!(texts.len, 0);
    }

    #[test]
    fn the_analysis_comes_with_the_lookup_and_outlives_a_reset() {
        let mut texts = Texts::new(10, true);
        for _ in 0..PREPARE_THRESHOLD {
            let (analysis, lookup, _) = texts.lookup("LISTEN x", types(&[]));
            assert!(analysis.mistake.is_some(), "LISTEN breaks in transaction mode");
            assert_eq!(kind(&lookup), "unnamed", "a refused statement is not prepared");
        }
        assert_eq!(cached(&texts, "LISTEN x"), 0, "nor counted: it takes no room in the cache");
        for _ in 0..PREPARE_THRESHOLD {
            texts.lookup("SELECT 1", types(&[]));
        }
        texts.clear();
        assert_eq!((texts.len, cached(&texts, "SELECT 1")), (0, 0));
        assert_eq!(texts.map.len(), 2, "the texts are still known");
        assert!(texts.lookup("LISTEN x", types(&[]).filter(|_| false)).0.mistake.is_some());
    }

    #[test]
    fn a_stale_statement_counts_again_directly_and_stays_unnamed_through_pgbouncer() {
        for (transaction_mode, after) in [(false, "prepare"), (true, "unnamed")] {
            let mut texts = Texts::new(10, transaction_mode);
            for _ in 0..PREPARE_THRESHOLD {
                texts.lookup("SELECT * FROM t", types(&[]));
            }
            texts.forget("SELECT * FROM t", &[]);
            for _ in 0..PREPARE_THRESHOLD * 2 {
                texts.lookup("SELECT * FROM t", types(&[]));
            }
            let (_, lookup, _) = texts.lookup("SELECT * FROM t", types(&[]));
            assert_eq!(kind(&lookup), after, "transaction mode: {transaction_mode}");
            if transaction_mode {
                // Whatever the parameter types, after a reset, and without taking room in the cache.
                texts.clear();
                for _ in 0..PREPARE_THRESHOLD * 2 {
                    assert_eq!(kind(&texts.lookup("SELECT * FROM t", types(&[Type::INT4])).1), "unnamed");
                }
                assert_eq!(cached(&texts, "SELECT * FROM t"), 0);
            }
            // Other texts are prepared as before.
            for _ in 1..PREPARE_THRESHOLD {
                texts.lookup("SELECT 1", types(&[]));
            }
            assert_eq!(kind(&texts.lookup("SELECT 1", types(&[])).1), "prepare");
        }
    }

    #[test]
    fn texts_past_the_bound_are_forgotten_unless_cached() {
        let mut texts = Texts::new(4, false);
        texts.lookup("kept", types(&[]));
        for i in 0..TEXTS + 10 {
            texts.lookup(&format!("SELECT {i}"), types(&[]).filter(|_| false));
        }
        assert!(texts.map.len() <= TEXTS, "{} texts", texts.map.len());
        assert_eq!(cached(&texts, "kept"), 1, "a cached text is kept");
    }
}
