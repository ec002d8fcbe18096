//! The indexes written behind the log.
//!
//! An append writes its events into the log (`events`) and syncs it with every batch; four
//! lookups into the log are kept elsewhere and written later, many entries at once
//! ([`Writer::flush_indexes`](crate::writer::Writer)):
//! - the stream index (`stream_index`): a stream's events by version;
//! - the idempotency index (`event_ids`): which version of a stream holds an event id;
//! - the type and category indexes (`type_index`, `category_index`): positions by event
//!   type and by stream category, for filtered reads and DCB conditions.
//!
//! The flush reads the entries back from the log (they are exactly the events after
//! `indexed_through`); what is held here serves the lookups until then.
//!
//! Kept up to date inside every batch, each of them cost a commit one B-tree leaf per index
//! (the stream index and, with random ids such as KurrentDB clients send, the idempotency
//! index one leaf *per event*), written to the write-ahead log, synced and later
//! checkpointed: most of what a batch wrote and the fsync waited for, and for a lone writer
//! four pages per commit where a plain insert writes one. So the writer records each new
//! event's entries here, in memory, and the flush writes them all at once: a leaf is then
//! written once for all its entries since the last flush.
//!
//! What keeps reads exact:
//! - The log is written and synced with each batch as before; only the indexes lag.
//!   `index_state.indexed_through` says which positions the tables cover, and opening the
//!   store rebuilds the unflushed entries from the events after it, so a crash loses
//!   nothing (the memory held at most [`EmbeddedOptions::index_flush_events`] and a batch).
//! - A reader combines a table with a copy of the matching unflushed entries. It takes the
//!   copy holding the gate for reading ([`DeferredIndex::read`]) and keeps holding it
//!   through its SQL; the writer drops flushed entries only after its flush committed and
//!   only holding the gate for writing. So every entry a reader needs is in its copy or,
//!   flushed before it took the gate, visible to every statement it runs. An entry can be
//!   in both when a flush commits meanwhile: readers take the table's rows of a stream
//!   below the copy's first version, and merge positions without duplicates.
//! - Entries of a stream are consecutive versions at growing positions, so the unflushed
//!   ones of a stream are its last versions, after every row of the table; likewise the
//!   unflushed positions of a type or a category follow every row of its table.
//! - Only the writer looks up event ids, and only the writer changes the entries, so its
//!   idempotency check (memory, then table) needs no gate.
//!
//! [`EmbeddedOptions::index_flush_events`]: crate::EmbeddedOptions::index_flush_events

use foldhash::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

/// The unflushed entries of one stream: consecutive versions from `first`, at `positions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// The version of the first entry.
    pub(crate) first: u64,
    /// The positions of versions `first`, `first + 1`, …
    pub(crate) positions: Vec<u64>,
}

impl Run {
    /// `(version, position)` of every entry, in version order.
    pub(crate) fn entries(&self) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        let first = self.first;
        self.positions
            .iter()
            .enumerate()
            .map(move |(i, &p)| (first.saturating_add(i as u64), p))
    }

    /// The position of `version`, if this run holds it.
    pub(crate) fn position_of(&self, version: u64) -> Option<u64> {
        let at = usize::try_from(version.checked_sub(self.first)?).ok()?;
        self.positions.get(at).copied()
    }
}

/// One new event's entries, as [`DeferredIndex::record`] takes them.
pub(crate) struct Entry<'a> {
    pub(crate) stream_id: i64,
    pub(crate) version: u64,
    pub(crate) position: u64,
    pub(crate) event_id: [u8; 16],
    pub(crate) event_type: &'a str,
    pub(crate) category: &'a str,
}

/// Where an unflushed event id is: `(version, position)` in its stream.
type IdPlace = (u64, u64);

#[derive(Default)]
struct Unflushed {
    streams: HashMap<i64, Run>,
    /// Ascending positions of each event type.
    types: HashMap<Box<str>, Vec<u64>>,
    /// Ascending positions of each category.
    categories: HashMap<Box<str>, Vec<u64>>,
    /// `(event id, stream id)` → where the event is.
    ids: HashMap<([u8; 16], i64), IdPlace>,
    events: usize,
}

impl Unflushed {
    fn push(&mut self, e: &Entry<'_>) {
        self.streams
            .entry(e.stream_id)
            .or_insert_with(|| Run {
                first: e.version,
                positions: Vec::new(),
            })
            .positions
            .push(e.position);
        push_position(&mut self.types, e.event_type, e.position);
        push_position(&mut self.categories, e.category, e.position);
        self.ids
            .insert((e.event_id, e.stream_id), (e.version, e.position));
        self.events = self.events.saturating_add(1);
    }

    /// Keeps the entries up to position `head`.
    fn retain_through(&mut self, head: u64) {
        let mut events = 0;
        self.streams.retain(|_, run| {
            run.positions.retain(|&p| p <= head);
            events += run.positions.len();
            !run.positions.is_empty()
        });
        for map in [&mut self.types, &mut self.categories] {
            map.retain(|_, list| {
                list.retain(|&p| p <= head);
                !list.is_empty()
            });
        }
        self.ids.retain(|_, &mut (_, p)| p <= head);
        self.events = events;
    }

    /// Cleared, not replaced: the maps keep their capacity for the next
    /// `index_flush_events` entries instead of growing again through every size.
    fn clear(&mut self) {
        self.streams.clear();
        self.types.clear();
        self.categories.clear();
        self.ids.clear();
        self.events = 0;
    }
}

/// Appends `position` to `key`'s list, allocating the key only the first time.
fn push_position(map: &mut HashMap<Box<str>, Vec<u64>>, key: &str, position: u64) {
    match map.get_mut(key) {
        Some(list) => list.push(position),
        None => {
            map.insert(key.into(), vec![position]);
        }
    }
}

struct Shared {
    /// Held for reading by a reader from before it copies entries until its last
    /// statement; for writing by the writer while it drops entries a committed flush
    /// wrote.
    gate: RwLock<()>,
    unflushed: Mutex<Unflushed>,
}

/// A read of the unflushed entries, holding the gate (see [`DeferredIndex::read`]): the
/// only way to look at them, so no read can forget the gate.
pub(crate) struct IndexRead<'a> {
    index: &'a DeferredIndex,
    _gate: RwLockReadGuard<'a, ()>,
}

impl IndexRead<'_> {
    /// Calls `f` with the unflushed entries of `stream_id` (`None` when it has none), for
    /// it to copy what it needs.
    pub(crate) fn with_run<R>(&self, stream_id: i64, f: impl FnOnce(Option<&Run>) -> R) -> R {
        f(self.index.lock().streams.get(&stream_id))
    }

    /// The first `n` unflushed positions in `range` of events of any of `types`,
    /// ascending. A reader's range ends at its head: the writer records a batch's entries
    /// when it stages the batch, so positions past the head may not be committed yet, and
    /// the reader's snapshot would not hold their events.
    pub(crate) fn type_positions(
        &self,
        types: &[&str],
        range: RangeInclusive<u64>,
        n: usize,
    ) -> Vec<u64> {
        let unflushed = self.index.lock();
        let mut positions: Vec<u64> = Vec::new();
        for t in types {
            if let Some(list) = unflushed.types.get(*t) {
                positions.extend(first_in(list, &range, n));
            }
        }
        positions.sort_unstable();
        positions.dedup();
        positions.truncate(n);
        positions
    }

    /// The first `n` unflushed positions in `range` of events of streams of `category`,
    /// ascending (a reader's range ends at its head, as for
    /// [`type_positions`](Self::type_positions)).
    pub(crate) fn category_positions(
        &self,
        category: &str,
        range: RangeInclusive<u64>,
        n: usize,
    ) -> Vec<u64> {
        self.index
            .lock()
            .categories
            .get(category)
            .map(|list| first_in(list, &range, n).collect())
            .unwrap_or_default()
    }
}

/// The first `n` of the ascending `list` within `range`.
fn first_in<'a>(
    list: &'a [u64],
    range: &RangeInclusive<u64>,
    n: usize,
) -> impl Iterator<Item = u64> + 'a {
    let start = list.partition_point(|p| p < range.start());
    let end = *range.end();
    list.get(start..)
        .unwrap_or_default()
        .iter()
        .copied()
        .take_while(move |&p| p <= end)
        .take(n)
}

/// Merges two ascending lists of positions into the first `n` of their union.
pub(crate) fn merge_positions(mut table: Vec<i64>, unflushed: Vec<u64>, n: usize) -> Vec<i64> {
    if !unflushed.is_empty() {
        table.extend(unflushed.into_iter().filter_map(|p| i64::try_from(p).ok()));
        table.sort_unstable();
        table.dedup();
    }
    table.truncate(n);
    table
}

/// The unflushed part of the indexes, shared by the writer and the readers.
#[derive(Clone)]
pub(crate) struct DeferredIndex(Arc<Shared>);

impl Default for DeferredIndex {
    fn default() -> Self {
        DeferredIndex(Arc::new(Shared {
            gate: RwLock::new(()),
            unflushed: Mutex::new(Unflushed::default()),
        }))
    }
}

impl std::fmt::Debug for DeferredIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredIndex")
            .field("unflushed", &self.unflushed())
            .finish()
    }
}

impl DeferredIndex {
    fn lock(&self) -> MutexGuard<'_, Unflushed> {
        // The data stays consistent across a panic (each change is a push, a retain or a
        // clear).
        self.0
            .unflushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the entries of new events, each at a position after every recorded one
    /// (versions of a stream consecutive).
    pub(crate) fn record<'a>(&self, entries: impl IntoIterator<Item = Entry<'a>>) {
        let mut unflushed = self.lock();
        for e in entries {
            unflushed.push(&e);
        }
    }

    /// The version of `stream_id` that holds `event_id`, when that entry is unflushed
    /// (the writer's idempotency check; it alone changes the entries).
    pub(crate) fn unflushed_id(&self, event_id: &[u8; 16], stream_id: i64) -> Option<u64> {
        self.lock()
            .ids
            .get(&(*event_id, stream_id))
            .map(|&(version, _)| version)
    }

    /// How many events are not in the tables yet.
    pub(crate) fn unflushed(&self) -> usize {
        self.lock().events
    }

    /// Forgets every entry, once a flush that wrote them all has committed. Waits for the
    /// readers that hold copies of entries to finish.
    pub(crate) fn forget_flushed(&self) {
        let _gate = self.0.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.lock().clear();
    }

    /// Forgets the entries after position `head` (a batch that recorded them was rolled
    /// back); the ones up to it are committed and still needed by reads.
    pub(crate) fn forget_after(&self, head: u64) {
        self.lock().retain_through(head);
    }

    /// Starts a read: holds off [`forget_flushed`](Self::forget_flushed) while the
    /// returned value lives. Start it before the first statement of the read (SQLite keeps
    /// a connection's snapshot while any of its statements is unfinished) and keep it
    /// through the SQL that completes the read. Never start two at once in one thread: a
    /// second read lock waits behind a waiting writer, which waits for the first.
    pub(crate) fn read(&self) -> IndexRead<'_> {
        IndexRead {
            index: self,
            _gate: self.0.gate.read().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn entry(stream_id: i64, version: u64, position: u64, ty: &str) -> Entry<'_> {
        Entry {
            stream_id,
            version,
            position,
            event_id: [position as u8; 16],
            event_type: ty,
            category: if stream_id == 7 { "a" } else { "b" },
        }
    }

    #[test]
    fn entries_are_kept_per_stream_type_category_and_id_until_flushed_or_rolled_back() {
        // (Ranges below ending before u64::MAX are a reader's, bounded by its head.)
        let index = DeferredIndex::default();
        index.record([entry(7, 3, 10, "X"), entry(7, 4, 11, "Y")]);
        index.record([entry(8, 1, 12, "X")]);
        index.record([entry(7, 5, 13, "X")]);
        let run = index.read().with_run(7, |r| r.cloned()).unwrap();
        assert_eq!(
            run.entries().collect::<Vec<_>>(),
            [(3, 10), (4, 11), (5, 13)]
        );
        assert_eq!(run.position_of(4), Some(11));
        assert_eq!(run.position_of(2), None);
        assert_eq!(run.position_of(6), None);
        assert_eq!(index.unflushed(), 4);
        {
            let read = index.read();
            assert_eq!(read.type_positions(&["X"], 0..=u64::MAX, 10), [10, 12, 13]);
            assert_eq!(
                read.type_positions(&["Y", "X", "X"], 11..=u64::MAX, 10),
                [11, 12, 13]
            );
            assert_eq!(read.type_positions(&["X", "Y"], 0..=u64::MAX, 2), [10, 11]);
            assert_eq!(
                read.type_positions(&["Z"], 0..=u64::MAX, 10),
                Vec::<u64>::new()
            );
            assert_eq!(read.category_positions("a", 11..=u64::MAX, 10), [11, 13]);
            assert_eq!(read.category_positions("b", 0..=u64::MAX, 10), [12]);
        }
        assert_eq!(index.unflushed_id(&[11; 16], 7), Some(4));
        assert_eq!(index.unflushed_id(&[11; 16], 8), None);
        index.forget_after(11);
        let run = index.read().with_run(7, |r| r.cloned()).unwrap();
        assert_eq!(run.entries().collect::<Vec<_>>(), [(3, 10), (4, 11)]);
        assert_eq!(index.read().with_run(8, |r| r.cloned()), None);
        assert_eq!(index.unflushed(), 2);
        assert_eq!(index.read().type_positions(&["X"], 0..=u64::MAX, 10), [10]);
        assert_eq!(
            index.read().category_positions("b", 0..=u64::MAX, 10),
            Vec::<u64>::new()
        );
        assert_eq!(index.unflushed_id(&[13; 16], 7), None);
        index.forget_flushed();
        assert_eq!(index.unflushed(), 0);
        assert_eq!(index.read().with_run(7, |r| r.cloned()), None);
        assert_eq!(
            index.read().type_positions(&["X", "Y"], 0..=u64::MAX, 10),
            Vec::<u64>::new()
        );
        assert_eq!(index.unflushed_id(&[10; 16], 7), None);
    }

    #[test]
    fn merged_positions_are_the_first_n_of_the_union_without_duplicates() {
        assert_eq!(
            merge_positions(vec![1, 4, 9], vec![9, 10, 12], 4),
            [1, 4, 9, 10]
        );
        assert_eq!(merge_positions(vec![1, 4], vec![], 1), [1]);
        assert_eq!(merge_positions(vec![], vec![3, 5], 10), [3, 5]);
    }
}
