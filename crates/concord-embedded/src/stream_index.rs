//! The stream index, written behind the log.
//!
//! Reading a stream needs its events by version: the `stream_index` table maps
//! `(stream_id, version)` to a position. Kept up to date inside every batch (as the
//! `events_by_stream_version` index of format 2 was), it cost each event of a batch one
//! B-tree leaf of its own (its stream's tail), written to the write-ahead log, synced and
//! later checkpointed: with many writers on distinct streams that leaf was most of what a
//! batch wrote and the fsync waited for. So the writer now records each new event's
//! position here, in memory, and writes the index rows later, many at once
//! ([`Writer::flush_stream_index`](crate::writer::Writer)): a stream's leaf is then written
//! once for all its events since the last flush.
//!
//! What keeps reads exact:
//! - The log (`events`) is written and synced with each batch as before; only the index
//!   lags. `index_state.indexed_through` says which positions the table covers, and
//!   opening the store rebuilds the unflushed entries from the events after it, so a crash
//!   loses nothing (the memory held at most [`EmbeddedOptions::index_flush_events`] and a
//!   batch).
//! - A reader combines the table with a copy of the stream's unflushed entries. It takes
//!   the copy holding the gate for reading ([`StreamIndex::read`]) and keeps holding it through its
//!   SQL; the writer drops flushed entries only after its flush committed and only holding
//!   the gate for writing. So every entry a reader needs is in its copy or, flushed before
//!   it took the gate, visible to every statement it runs. An entry can be in both when a
//!   flush commits meanwhile: readers take the table's rows below the copy's first version.
//! - Entries of a stream are consecutive versions at growing positions, so the unflushed
//!   ones of a stream are its last versions, after every row of the table.
//!
//! [`EmbeddedOptions::index_flush_events`]: crate::EmbeddedOptions::index_flush_events

use foldhash::HashMap;
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

#[derive(Default)]
struct Unflushed {
    streams: HashMap<i64, Run>,
    events: usize,
}

struct Shared {
    /// Held for reading by a reader from before it copies a run until its last statement;
    /// for writing by the writer while it drops entries a committed flush wrote.
    gate: RwLock<()>,
    unflushed: Mutex<Unflushed>,
}

/// A read of the unflushed entries, holding the gate (see [`StreamIndex::read`]): the
/// only way to look at them, so no read can forget the gate.
pub(crate) struct IndexRead<'a> {
    index: &'a StreamIndex,
    _gate: RwLockReadGuard<'a, ()>,
}

impl IndexRead<'_> {
    /// Calls `f` with the unflushed entries of `stream_id` (`None` when it has none), for
    /// it to copy what it needs.
    pub(crate) fn with_run<R>(&self, stream_id: i64, f: impl FnOnce(Option<&Run>) -> R) -> R {
        f(self.index.lock().streams.get(&stream_id))
    }
}

/// The unflushed part of the stream index, shared by the writer and the readers.
#[derive(Clone)]
pub(crate) struct StreamIndex(Arc<Shared>);

impl Default for StreamIndex {
    fn default() -> Self {
        StreamIndex(Arc::new(Shared {
            gate: RwLock::new(()),
            unflushed: Mutex::new(Unflushed::default()),
        }))
    }
}

impl std::fmt::Debug for StreamIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamIndex")
            .field("unflushed", &self.unflushed())
            .finish()
    }
}

impl StreamIndex {
    fn lock(&self) -> MutexGuard<'_, Unflushed> {
        // The data stays consistent across a panic (each change is one push or a clear).
        self.0
            .unflushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `count` new events of `stream_id`: versions from `first_version` at
    /// consecutive positions from `first_position`.
    pub(crate) fn record(
        &self,
        stream_id: i64,
        first_version: u64,
        first_position: u64,
        count: u64,
    ) {
        let mut unflushed = self.lock();
        let run = unflushed.streams.entry(stream_id).or_insert_with(|| Run {
            first: first_version,
            positions: Vec::new(),
        });
        run.positions
            .extend((0..count).map(|i| first_position.saturating_add(i)));
        unflushed.events = unflushed
            .events
            .saturating_add(usize::try_from(count).unwrap_or(usize::MAX));
    }

    /// How many events are not in the table yet.
    pub(crate) fn unflushed(&self) -> usize {
        self.lock().events
    }

    /// Every unflushed entry as `(stream_id, version, position)`, in the table's order.
    pub(crate) fn entries(&self) -> Vec<(i64, u64, u64)> {
        let unflushed = self.lock();
        let mut entries = Vec::with_capacity(unflushed.events);
        for (&stream_id, run) in &unflushed.streams {
            entries.extend(run.entries().map(|(v, p)| (stream_id, v, p)));
        }
        entries.sort_unstable();
        entries
    }

    /// Forgets every entry, once a flush that wrote them all has committed. Waits for the
    /// readers that hold copies of runs to finish.
    pub(crate) fn forget_flushed(&self) {
        let _gate = self.0.gate.write().unwrap_or_else(PoisonError::into_inner);
        let mut unflushed = self.lock();
        unflushed.streams.clear();
        unflushed.events = 0;
    }

    /// Forgets the entries after position `head` (a batch that recorded them was rolled
    /// back); the ones up to it are committed and still needed by reads.
    pub(crate) fn forget_after(&self, head: u64) {
        let mut unflushed = self.lock();
        let mut events = 0;
        unflushed.streams.retain(|_, run| {
            run.positions.retain(|&p| p <= head);
            events += run.positions.len();
            !run.positions.is_empty()
        });
        unflushed.events = events;
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

    #[test]
    fn a_run_holds_consecutive_versions_at_their_positions() {
        let index = StreamIndex::default();
        index.record(7, 3, 10, 2);
        index.record(8, 1, 12, 1);
        index.record(7, 5, 13, 1);
        let run = index.read().with_run(7, |r| r.cloned()).unwrap();
        assert_eq!(
            run.entries().collect::<Vec<_>>(),
            [(3, 10), (4, 11), (5, 13)]
        );
        assert_eq!(run.position_of(4), Some(11));
        assert_eq!(run.position_of(2), None);
        assert_eq!(run.position_of(6), None);
        assert_eq!(index.unflushed(), 4);
        assert_eq!(
            index.entries(),
            [(7, 3, 10), (7, 4, 11), (7, 5, 13), (8, 1, 12)]
        );
        index.forget_after(11);
        assert_eq!(index.entries(), [(7, 3, 10), (7, 4, 11)]);
        index.forget_flushed();
        assert_eq!(index.unflushed(), 0);
        assert_eq!(index.read().with_run(7, |r| r.cloned()), None);
    }
}
