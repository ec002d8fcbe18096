//! The writer thread: one connection, group commit.
//!
//! All appends go through one thread. It takes every request waiting in its channel, opens
//! one transaction, decides each request with [`plan_append`] (a multi-stream or
//! conditional append with [`plan_multi_append`], then its condition) against its map of
//! stream versions (and indexed lookups through its own connection, so a request sees the
//! ones before it in the same batch), writes the accepted ones, and commits once: one
//! fsync for the whole batch, which the [syncer](crate::syncer) thread makes while this one
//! goes on with the next batch; the syncer publishes the new head and answers the callers
//! once the batch is on the device. The one exception is a lone caller: with nothing else
//! under way it decides, commits and syncs its own append on its own thread, under the
//! same lock of the writer's state ([`Writer::append_here`]), which saves it two thread
//! wake-ups.
//!
//! Failures come in two kinds. A statement that fails inside the open transaction (a
//! lookup SQLite refuses, an insert or a COMMIT into a full disk) changes nothing durable:
//! when it is a lookup of a request that has not written yet, only that request is refused
//! and the batch goes on; otherwise the transaction is rolled back, every request of the
//! batch is refused as unavailable (nothing of it was written; re-sending is safe), and the
//! next batch starts afresh. Only a failed sync (of the log, or of the database file by a
//! checkpoint) poisons the store: nobody in the batch is told "done", and every later
//! append is refused until the process reopens the store, because after a failed fsync
//! nobody knows what the disk holds (the lesson of PostgreSQL's fsyncgate). No input can
//! poison it.
//!
//! Invariants: `head` and `streams` describe exactly what is committed (durable or about
//! to be: readers see only up to the published head); positions are assigned here, at
//! write time, in commit order, so they are gap-free.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use foldhash::{HashMap, HashMapExt};

use concord_core::{
    AppendOutcome, AppendPlan, AppendRequest, Appended, Conflict, Direction, EventType, HeadSignal,
    Limits, MATCHING_EVENTS_MAX, MultiAppendOutcome, MultiAppendPlan, MultiAppendRequest,
    PartState, PartialDuplicate, Position, RecordedAt, RecordedEvent, StoreError, StreamName,
    Version, plan_append, plan_multi_append,
};
use concord_core::{
    DeleteMode, MetadataChange, ScavengeReport, StreamMetadata, StreamPast, check_hidden_ids,
};
use futures::channel::oneshot;
use rusqlite::{Connection, OptionalExtension};

use crate::deferred_index::{DeferredIndex, Entry};
use crate::error::{EmbeddedError, from_sql, to_sql};
use crate::matching::matching_events;
use crate::rows::stream_events;
use crate::schema::{LifecycleRow, StreamState, TAG_SEPARATOR};
use crate::syncer::{Committed, SyncJob};

mod import;
mod lifecycle;
mod scrub;

/// The most events one batch takes before it commits (a batch always takes at least one
/// request, whatever its size).
const BATCH_EVENTS_MAX: usize = 16_384;

/// How many commits the writer lets accumulate in the write-ahead log before it copies
/// them into the database file (a passive checkpoint). SQLite's own automatic checkpoint
/// would run inside the commit, so the batch's acknowledgements would wait for it; the
/// writer runs it after handing the batch to the syncer instead, while the next batch
/// gathers. (Not on a thread of its own: a checkpoint beside a busy writer never finds the
/// log fully copied, so the log could never restart and grew by 180 MB/s.) A checkpoint
/// syncs the log and the database file, beside the syncer's fsync: since a batch writes few
/// pages (the stream index is written behind the log), 64 commits came ~30 times a second,
/// so the bounds are now larger (A/B with 64 writers: +10 %, +17 %, -6 % on a noisy disk).
const CHECKPOINT_COMMITS: u32 = 512;

/// Nor more events than this (large batches fill the log faster than small ones).
const CHECKPOINT_EVENTS: u64 = 16_384;

/// Nor more bytes of event data and metadata than this, so that large events cannot make
/// the log grow to `CHECKPOINT_EVENTS` times their size.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// What was committed since the last checkpoint.
#[derive(Default)]
pub(crate) struct Uncheckpointed {
    commits: u32,
    events: u64,
    bytes: u64,
}

impl Uncheckpointed {
    /// Counts one more commit of `events` events and `bytes` bytes.
    pub(crate) fn add_commit(&mut self, events: u64, bytes: u64) {
        self.commits += 1;
        self.events += events;
        self.bytes += bytes;
    }

    pub(crate) fn due(&self) -> bool {
        self.commits >= CHECKPOINT_COMMITS
            || self.events >= CHECKPOINT_EVENTS
            || self.bytes >= CHECKPOINT_BYTES
    }
}

/// What a flush runs, `?1` being the head: the index entries of the events after
/// `indexed_through`, read back from the log (every one of them is committed, and they are
/// exactly the entries held in memory), then the new `indexed_through`. One statement per
/// table keeps the per-row work inside SQLite: inserting the entries from memory one
/// statement per row made the writer at 64 writers 10-17 % slower than the indexes it
/// replaced. `OR IGNORE` for ids, types and categories: the writer never lets an id into a
/// stream twice, and a type or category entry is all key; should an entry be there already
/// (a file edited by hand), the flush must not fail forever over it.
const FLUSH_SQL: [&str; 5] = [
    "INSERT INTO stream_index (stream_id, version, position)
     SELECT stream_id, version, position FROM events
     WHERE position > (SELECT indexed_through FROM index_state WHERE id = 1) AND position <= ?1",
    "INSERT OR IGNORE INTO event_ids (event_id, stream_id, version)
     SELECT event_id, stream_id, version FROM events
     WHERE position > (SELECT indexed_through FROM index_state WHERE id = 1) AND position <= ?1",
    "INSERT OR IGNORE INTO type_index (type, position)
     SELECT type, position FROM events
     WHERE position > (SELECT indexed_through FROM index_state WHERE id = 1) AND position <= ?1",
    "INSERT OR IGNORE INTO category_index (category, position)
     SELECT category, position FROM events
     WHERE position > (SELECT indexed_through FROM index_state WHERE id = 1) AND position <= ?1",
    "UPDATE index_state SET indexed_through = ?1 WHERE id = 1",
];

/// How long the writer waits for work before it writes the stream index entries it holds
/// (a quiet store catches its index up; a busy one writes it every
/// `index_flush_events`).
const INDEX_IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(50);

/// Events one contended stream keeps in [`Tails`] (more than the default 100 concurrent
/// events a conflict lists).
const TAIL_EVENTS: usize = 128;

/// Bytes all tails may hold together before they are dropped and start again.
const TAIL_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Streams watched at once (a watched stream may hold no event yet).
const TAIL_STREAMS_MAX: usize = 16_384;

/// What a held event costs besides its data and metadata (the struct, its stream name, type
/// and tags), so that many tiny events are bounded too.
const TAIL_EVENT_OVERHEAD: usize = 256;

/// Event types a tail remembers the last version of (past it, the rebase rule compares
/// each held event's type instead).
const TAIL_TYPES_MAX: usize = 64;

/// What one remembered type costs in [`TAIL_BYTES_MAX`]'s account (the shared name and the
/// map entry).
const TAIL_TYPE_OVERHEAD: usize = 64;

fn held_bytes(event: &RecordedEvent) -> usize {
    event.data.len() + event.metadata.len() + TAIL_EVENT_OVERHEAD
}

/// The last events of *contended* streams, in memory, so that the concurrent events of a
/// conflict or a rebase, and the types the rebase rule checks, come from here instead of
/// an SQL read and a decode per answer. With W writers on one stream nearly every append
/// is rebased over (or conflicts with) the W-1 before it, so without this the writer read
/// and decoded O(W) events per append.
///
/// A stream gets a tail at its first conflict or rebase; from then on every event written
/// to it is pushed, so a tail always holds consecutive versions ending at the stream's
/// version (staged included: the writer's view). Uncontended streams cost nothing. Memory is
/// bounded by [`TAIL_EVENTS`] per stream and [`TAIL_BYTES_MAX`] overall, counting a fixed
/// overhead per event so that the number of watched streams is bounded too (past it every tail
/// is dropped; the next read falls back to SQL). A request the tail does not cover is read
/// from SQL, so the tail only ever saves work, never changes an answer.
#[derive(Default)]
pub(crate) struct Tails {
    streams: HashMap<i64, Tail>,
    bytes: usize,
}

/// One contended stream's tail.
struct Tail {
    events: VecDeque<RecordedEvent>,
    /// The last version of each event type pushed since the stream was watched, while there
    /// are at most [`TAIL_TYPES_MAX`] (then `None`). The rebase rule asks whether any event
    /// after the expected version has a listed type: with W writers on a stream that was
    /// W-1 type comparisons per append (5 700 instructions at 64 writers, callgrind), and is
    /// one comparison per type the stream has had instead. Every event after a version the
    /// tail holds was pushed since the watch, so the map knows their types.
    last_of_type: Option<HashMap<EventType, Version>>,
}

impl Tail {
    /// The held events from version `from` on, when the tail holds `from` (then it holds
    /// everything after it too).
    fn from(&self, from: Version) -> Option<impl Iterator<Item = &RecordedEvent>> {
        let first = self.events.front()?.version;
        if from < first {
            return None;
        }
        let skip = usize::try_from(from.get() - first.get()).ok()?;
        Some(self.events.iter().skip(skip))
    }
}

impl Tails {
    /// Starts keeping the tail of `stream_id` (from its next event on).
    fn watch(&mut self, stream_id: i64) {
        if self.streams.len() >= TAIL_STREAMS_MAX {
            self.clear();
        }
        self.streams.entry(stream_id).or_insert_with(|| Tail {
            events: VecDeque::new(),
            last_of_type: Some(HashMap::new()),
        });
    }

    fn is_watched(&self, stream_id: i64) -> bool {
        self.streams.contains_key(&stream_id)
    }

    fn push(&mut self, stream_id: i64, event: RecordedEvent) {
        let Some(tail) = self.streams.get_mut(&stream_id) else {
            return;
        };
        if let Some(types) = &mut tail.last_of_type {
            if let Some(last) = types.get_mut(&event.event_type) {
                *last = event.version;
            } else if types.len() < TAIL_TYPES_MAX {
                types.insert(event.event_type.clone(), event.version);
                self.bytes += TAIL_TYPE_OVERHEAD;
            } else {
                self.bytes = self.bytes.saturating_sub(types.len() * TAIL_TYPE_OVERHEAD);
                tail.last_of_type = None;
            }
        }
        self.bytes += held_bytes(&event);
        tail.events.push_back(event);
        if tail.events.len() > TAIL_EVENTS
            && let Some(old) = tail.events.pop_front()
        {
            self.bytes = self.bytes.saturating_sub(held_bytes(&old));
        }
        if self.bytes > TAIL_BYTES_MAX {
            self.clear();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.streams.clear();
        self.bytes = 0;
    }

    /// The held events from version `from` on, when the tail holds `from` (then it holds
    /// everything after it too).
    fn from(&self, stream_id: i64, from: Version) -> Option<impl Iterator<Item = &RecordedEvent>> {
        self.streams.get(&stream_id)?.from(from)
    }

    /// The types of the events after version `after` (borrowed), when the tail holds them
    /// all: each type once when the tail remembers last versions, else one per event.
    fn types_after(&self, stream_id: i64, after: Version) -> Option<Vec<Cow<'_, EventType>>> {
        let tail = self.streams.get(&stream_id)?;
        let held = tail.from(after.next())?;
        Some(match &tail.last_of_type {
            Some(types) => types
                .iter()
                .filter(|&(_, last)| *last > after)
                .map(|(t, _)| Cow::Borrowed(t))
                .collect(),
            None => held.map(|event| Cow::Borrowed(&event.event_type)).collect(),
        })
    }
}

/// The answer to one append.
pub(crate) type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

/// The answer to one multi-stream or conditional append.
pub(crate) type MultiReply = oneshot::Sender<Result<MultiAppendOutcome, StoreError>>;

/// Failures a test can inject into the writer.
#[doc(hidden)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// The next commit fails as a failed fsync would, after the batch was written.
    FailNextCommit,
    /// The file may not grow any more (`PRAGMA max_page_count`): the next write that needs
    /// a new page fails with SQLITE_FULL, a real I/O error from SQLite.
    DiskFull,
    /// The next sync of the write-ahead log by the syncer fails, after the batch was
    /// committed (with [`Durability::Full`](crate::Durability::Full) only).
    FailNextSync,
    /// The next lookup of an append condition fails, as a statement SQLite refuses would,
    /// before its request wrote anything.
    FailNextLookup,
}

/// A message to the writer thread.
pub(crate) enum Job {
    /// Append, and answer on `reply`.
    Append {
        request: AppendRequest,
        reply: Reply,
    },
    /// Append several parts (or one part under a condition), and answer on `reply`.
    AppendMulti {
        request: MultiAppendRequest,
        reply: MultiReply,
    },
    /// Arm a fault.
    Fault(Fault),
    /// Stop taking jobs until the sender of this channel is dropped (tests use it to put
    /// several appends into one batch).
    Pause(std::sync::mpsc::Receiver<()>),
    /// Pass this pause on to the syncer (tests hold committed batches unacknowledged).
    PauseSyncer(std::sync::mpsc::Receiver<()>),
    /// Delete, tombstone, set retention or scavenge, and answer on `reply`.
    Lifecycle {
        op: LifecycleOp,
        reply: LifecycleReply,
    },
    /// From the syncer: a sync ended, so a batch held open for it can commit now.
    Synced,
    /// The store is being dropped: commit what is open and stop (the syncer holds a sender
    /// too, so the channel never closes on its own).
    Stop,
}

/// The senders' end of the writer's channel. It counts the jobs sent and not yet taken by
/// the writer, so that a caller can tell that nothing waits for the writer before it
/// commits an append on its own thread (see [`Writer::append_here`]).
#[derive(Clone)]
pub(crate) struct Jobs {
    tx: Sender<Job>,
    queued: Arc<AtomicUsize>,
}

impl Jobs {
    /// A new channel: this end and the writer's.
    pub(crate) fn channel() -> (Jobs, Inbox) {
        let (tx, rx) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let inbox = Inbox {
            rx,
            queued: Arc::clone(&queued),
        };
        (Jobs { tx, queued }, inbox)
    }

    /// Sends `job`; gives it back when the writer is gone.
    pub(crate) fn send(&self, job: Job) -> Result<(), Job> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx
            .send(job)
            .map_err(|std::sync::mpsc::SendError(job)| {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                job
            })
    }

    /// Whether a job was sent that the writer has not taken yet.
    pub(crate) fn any_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }
}

/// The writer's end of its channel. A job counts as queued until the writer takes it
/// *under the lock of its state*, so a caller that finds the count at zero and the lock
/// free knows that no job is waiting to be done before its own.
pub(crate) struct Inbox {
    rx: Receiver<Job>,
    queued: Arc<AtomicUsize>,
}

impl Inbox {
    /// Marks a job received outside the lock as taken (now that the lock is held).
    fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// The next job if one is waiting, taken.
    fn try_recv(&self) -> Result<Job, TryRecvError> {
        let job = self.rx.try_recv()?;
        self.taken();
        Ok(job)
    }
}

/// Where the answer to a [`LifecycleOp`] goes.
pub(crate) type LifecycleReply = oneshot::Sender<Result<LifecycleAnswer, StoreError>>;

/// A change of stream lifecycle, done by the writer between batches of appends.
pub(crate) enum LifecycleOp {
    Delete {
        stream: StreamName,
        mode: DeleteMode,
        expected: Option<Version>,
    },
    ChangeMetadata {
        stream: StreamName,
        change: MetadataChange,
    },
    Scavenge,
    /// Write events recorded by another store as they are (`EventStore::import`).
    Import(Vec<RecordedEvent>),
    /// Write a stream's past as another store keeps it (`EventStore::import_stream_past`).
    ImportPast(StreamPast),
    /// Raise the head over holes (`EventStore::import_head`).
    ImportHead(Position),
}

/// What a [`LifecycleOp`] answers.
pub(crate) enum LifecycleAnswer {
    Done,
    Metadata(StreamMetadata),
    Scavenged(ScavengeReport),
}

/// Who acknowledges a committed batch.
pub(crate) enum Acknowledge {
    /// The writer itself, right after the commit ([`Durability::Buffered`](crate::Durability::Buffered):
    /// nothing to wait for).
    Inline,
    /// The syncer thread, after its fsync ([`Durability::Full`](crate::Durability::Full)),
    /// or the writer itself when there is nothing to overlap (see [`Writer::acknowledge`]).
    Syncer(SyncerHandle),
}

/// The writer's end of the syncer.
pub(crate) struct SyncerHandle {
    pub(crate) jobs: Sender<SyncJob>,
    /// The write-ahead log, for the writer's own syncs.
    pub(crate) wal: std::fs::File,
    /// The head the last successful sync covered (the syncer's or the writer's).
    pub(crate) synced: Arc<std::sync::atomic::AtomicU64>,
    /// Every batch goes through the syncer (set once a test pauses it).
    pub(crate) always: bool,
    /// The next sync fails (tests of poisoning).
    pub(crate) fail_next: bool,
}

/// Why the store refuses appends, once it does. Set once, by the writer.
pub(crate) type Poison = Arc<OnceLock<String>>;

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    /// Committed stream versions: grows with the number of streams, not events.
    pub(crate) streams: HashMap<StreamName, StreamState>,
    /// The committed head.
    pub(crate) head: u64,
    pub(crate) signal: HeadSignal,
    pub(crate) poison: Poison,
    pub(crate) limits: Limits,
    pub(crate) fail_next_commit: bool,
    /// The next condition lookup fails (tests of statement failures).
    pub(crate) fail_next_lookup: bool,
    /// What was committed since the last checkpoint.
    pub(crate) uncheckpointed: Uncheckpointed,
    /// The last events of contended streams.
    pub(crate) tails: Tails,
    /// The stream index entries not written into its table yet (shared with the readers).
    pub(crate) index: DeferredIndex,
    /// Write them into the table once this many are held.
    pub(crate) index_flush_events: usize,
    pub(crate) acknowledge: Acknowledge,
    /// A job taken from the channel to see whether one was waiting, processed next.
    pub(crate) stashed: Option<Job>,
    /// Committed stream lifecycles (deleted, tombstoned, with retention settings).
    pub(crate) lifecycles: HashMap<StreamName, LifecycleRow>,
    /// The names in `lifecycles`, shared with the store: a read of one of them is not
    /// split in two (its first version is not known before the read).
    pub(crate) lifecycle_names: LifecycleNames,
    /// The scavenge under way, done a piece at a time between batches.
    pub(crate) scavenging: Option<lifecycle::Scavenging>,
    /// Appends written into a transaction that waits for the syncer to be free before it
    /// commits (see [`Writer::settle`]).
    pub(crate) open: Option<OpenBatch>,
    /// The writer thread waits for a job with no timeout, so it will not flush the stream
    /// index when the store goes quiet unless a job wakes it.
    pub(crate) untimed_wait: bool,
    /// When the last batch was committed.
    pub(crate) committed_at: std::time::Instant,
}

/// Appends written but not committed yet: the transaction is open, and more requests
/// join it until the syncer is free.
pub(crate) struct OpenBatch {
    appends: Vec<Request>,
    answers: Vec<Answer>,
    staged: Staged,
}

/// The streams that have a stored lifecycle; only the writer adds to it.
pub(crate) type LifecycleNames = Arc<std::sync::RwLock<foldhash::HashSet<StreamName>>>;

/// Events a scavenge erases per transaction, so appends interleave with it.
const SCAVENGE_CHUNK_EVENTS: usize = 1_000;

/// An append waiting in a batch, with where its answer goes.
pub(crate) enum Request {
    One(AppendRequest, Reply),
    Multi(MultiAppendRequest, MultiReply),
}

/// The decision on a [`Request`] of the same kind.
pub(crate) enum Answer {
    One(Result<AppendOutcome, StoreError>),
    Multi(Result<MultiAppendOutcome, StoreError>),
}

/// Why a batch could not be committed.
enum BatchFailure {
    /// A statement failed inside the transaction: roll it back; nothing is durable, the
    /// store stays usable.
    Statement(EmbeddedError),
    /// The batch's data could not be made durable (a failed sync; the injected
    /// [`Fault::FailNextCommit`]): what the disk holds is unknown, so the store is poisoned.
    Sync(EmbeddedError),
}

impl Request {
    /// The job that hands this request to the writer thread.
    pub(crate) fn into_job(self) -> Job {
        match self {
            Request::One(request, reply) => Job::Append { request, reply },
            Request::Multi(request, reply) => Job::AppendMulti { request, reply },
        }
    }

    /// The refusal of this request with `error`, as an answer of its kind.
    fn refusal(&self, error: StoreError) -> Answer {
        match self {
            Request::One(..) => Answer::One(Err(error)),
            Request::Multi(..) => Answer::Multi(Err(error)),
        }
    }

    pub(crate) fn answer(self, answer: Answer) {
        match (self, answer) {
            (Request::One(_, reply), Answer::One(a)) => {
                let _ = reply.send(a);
            }
            (Request::Multi(_, reply), Answer::Multi(a)) => {
                let _ = reply.send(a);
            }
            // `write_batch` answers each request with its own kind; a mismatch would be a
            // bug here, and the caller must not be told anything it could take for success.
            (request, _) => request.refuse(StoreError::Corrupted(
                "the writer mixed up the answers of a batch".into(),
            )),
        }
    }

    pub(crate) fn refuse(self, error: StoreError) {
        match self {
            Request::One(_, reply) => {
                let _ = reply.send(Err(error));
            }
            Request::Multi(_, reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// The state a batch has built so far on top of the committed state.
#[derive(Default)]
struct Staged {
    streams: HashMap<StreamName, StreamState>,
    head: u64,
    /// Bytes of data and metadata written.
    bytes: u64,
    /// Whether the request being decided has started writing rows (a failure from then
    /// on needs the whole transaction rolled back).
    writing: bool,
}

/// Locks the writer's state; `None` when a panic left it half-changed (the writer thread
/// then stops, its channel closes, and every append is refused as stopped).
fn lock(shared: &Mutex<Writer>) -> Option<MutexGuard<'_, Writer>> {
    shared.lock().ok()
}

impl Writer {
    /// Runs the writer thread until the store is dropped. The state is locked while the
    /// thread does a job and free while it waits for one, so that a lone caller can
    /// commit its append on its own thread meanwhile ([`Writer::append_here`]).
    pub(crate) fn run(shared: &Mutex<Writer>, inbox: &Inbox) {
        loop {
            let Some(mut writer) = lock(shared) else {
                return;
            };
            // While a batch is held open, the syncer's wake-up comes first (a scavenge
            // piece waits for the commit).
            let scavenge_wait = match writer.open {
                Some(_) => None,
                None => writer.scavenging.as_ref().map(lifecycle::Scavenging::wait),
            };
            let stashed = writer.stashed.take();
            drop(writer);
            let (first, received) = match (stashed, scavenge_wait) {
                // Taken from the channel under the lock already.
                (Some(job), _) => (Some(job), false),
                // A scavenge under way goes on when no job comes before its next piece is
                // due (callers waiting for their fsync send nothing meanwhile, so an empty
                // channel does not mean a quiet store).
                (None, Some(wait)) => match inbox.rx.recv_timeout(wait) {
                    Ok(job) => (Some(job), true),
                    Err(RecvTimeoutError::Timeout) => {
                        let Some(mut writer) = lock(shared) else {
                            return;
                        };
                        writer.scavenge_step(false);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        // The store was dropped: the scavenge stops between two chunks,
                        // which leaves a store the next one completes.
                        if let Some(mut writer) = lock(shared) {
                            writer.flush_indexes();
                        }
                        return;
                    }
                },
                (None, None) => {
                    let job = Self::next_job(shared, inbox);
                    let received = job.is_some();
                    (job, received)
                }
            };
            let Some(mut writer) = lock(shared) else {
                return;
            };
            if received {
                inbox.taken();
            }
            writer.untimed_wait = false;
            let first = first.unwrap_or(Job::Stop);
            if let Job::Stop = first {
                writer.settle(true, Some(inbox));
                // Closed cleanly: the next open need not rebuild anything.
                writer.flush_indexes();
                return;
            }
            if let Job::Pause(until) = first {
                // Returns when the test drops its guard; the state stays locked, so no
                // caller commits on its own thread meanwhile either.
                let _ = until.recv();
                continue;
            }
            let mut batch = vec![first];
            let mut events = 0;
            while events < BATCH_EVENTS_MAX {
                match inbox.try_recv() {
                    Ok(job) => {
                        match &job {
                            Job::Append { request, .. } => events += request.events.len(),
                            Job::AppendMulti { request, .. } => {
                                events +=
                                    request.parts.iter().map(|p| p.events.len()).sum::<usize>();
                            }
                            Job::Fault(_)
                            | Job::Pause(_)
                            | Job::PauseSyncer(_)
                            | Job::Lifecycle { .. }
                            | Job::Synced => {}
                            Job::Stop => {
                                // Taken up again as the first job of the next round.
                                writer.stashed = Some(job);
                                break;
                            }
                        }
                        batch.push(job);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            writer.process(batch, Some(inbox));
            // At most one piece of a scavenge after each batch: appends wait for one chunk
            // at most, and get most of the writer's time while they keep coming.
            writer.scavenge_step(true);
        }
    }

    /// Waits for the next job (received, not yet [taken](Inbox::taken)); when the store
    /// has been quiet for [`INDEX_IDLE_FLUSH`] since its last commit (here or on a
    /// caller's thread), writes the stream index entries it holds first. `None` once every
    /// sender is gone (or the state is lost to a panic).
    fn next_job(shared: &Mutex<Writer>, inbox: &Inbox) -> Option<Job> {
        let mut flushed = false;
        loop {
            let wait = {
                let mut writer = lock(shared)?;
                let wait = (!flushed && writer.index.unflushed() > 0)
                    .then(|| INDEX_IDLE_FLUSH.saturating_sub(writer.committed_at.elapsed()));
                // An append committed on a caller's thread while this one waits without
                // a timeout wakes it, so that its index entries are flushed when quiet.
                writer.untimed_wait = wait.is_none();
                if wait.is_some_and(|w| w.is_zero()) {
                    writer.flush_indexes();
                    flushed = true;
                    continue;
                }
                wait
            };
            let Some(wait) = wait else {
                return inbox.rx.recv().ok();
            };
            match inbox.rx.recv_timeout(wait) {
                Ok(job) => return Some(job),
                // Quiet since? Asked again above.
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Writes the index entries of the events after `indexed_through` into their tables
    /// (`stream_index`, `event_ids`, `type_index`, `category_index`; see [`FLUSH_SQL`])
    /// and moves `indexed_through` to the head, in one transaction of its own (committed
    /// like a batch, synced with the next one: a crash before that only means the entries
    /// are rebuilt from the log on open). Then forgets the held copies. A failure rolls
    /// back and keeps them for the next flush.
    pub(crate) fn flush_indexes(&mut self) {
        // Not inside a batch's open transaction: the next flush takes the entries.
        if self.poison.get().is_some() || self.open.is_some() {
            return;
        }
        if self.index.unflushed() == 0 {
            return;
        }
        let context = "cannot write the indexes";
        let head = self.head;
        let write = |conn: &Connection| -> Result<(), EmbeddedError> {
            let head = to_sql(head)?;
            for sql in FLUSH_SQL {
                conn.prepare_cached(sql)
                    .map_err(EmbeddedError::sqlite(context))?
                    .execute([head])
                    .map_err(EmbeddedError::sqlite(context))?;
            }
            Ok(())
        };
        match in_transaction(&self.conn, context, write) {
            Ok(()) => self.index.forget_flushed(),
            Err(e) => {
                // Nothing is lost: the entries stay in memory (readers use them) and the
                // next flush tries again; the table is only a copy of what the log says.
                tracing::warn!(error = %e, "cannot write the indexes yet; keeping their entries in memory");
            }
        }
    }

    /// Whether an append may be committed on its caller's thread now: nothing is held open,
    /// stashed or being synced, so the writer thread would take it as a batch of one and
    /// sync it itself. Asked under the lock, with no job queued.
    pub(crate) fn idle(&self) -> bool {
        self.open.is_none()
            && self.stashed.is_none()
            && self.poison.get().is_none()
            && match &self.acknowledge {
                Acknowledge::Inline => true,
                Acknowledge::Syncer(syncer) => {
                    !syncer.always && syncer.synced.load(Ordering::Acquire) >= self.head
                }
            }
    }

    /// Decides, writes, commits and syncs one append on the calling thread, as the writer
    /// thread would a batch of one, and answers it. For a lone caller this saves two thread hand-offs (to the writer and back), each a
    /// wake-up of a sleeping thread that costs tens of µs on a virtual machine; the caller
    /// would wait for the same fsync anyway. Call only when [`Writer::idle`] and nothing is
    /// queued. Returns whether the writer thread must be woken (it holds index entries
    /// that it would otherwise not flush when the store goes quiet).
    pub(crate) fn append_here(&mut self, request: Request) -> bool {
        self.write_appends(vec![request]);
        self.settle(true, None);
        let wake = self.untimed_wait && self.index.unflushed() > 0;
        if wake {
            self.untimed_wait = false;
        }
        wake
    }

    fn process(&mut self, batch: Vec<Job>, jobs: Option<&Inbox>) {
        let mut appends = Vec::with_capacity(batch.len());
        let mut lifecycle_ops = Vec::new();
        for job in batch {
            match job {
                Job::Lifecycle { op, reply } => lifecycle_ops.push((op, reply)),
                Job::Append { request, reply } => appends.push(Request::One(request, reply)),
                Job::AppendMulti { request, reply } => {
                    appends.push(Request::Multi(request, reply));
                }
                Job::Synced | Job::Stop => {}
                Job::Fault(fault) => {
                    self.settle(true, jobs);
                    self.arm(fault);
                }
                Job::Pause(until) => {
                    let _ = until.recv();
                }
                Job::PauseSyncer(until) => {
                    self.settle(true, jobs);
                    if let Acknowledge::Syncer(syncer) = &mut self.acknowledge {
                        syncer.always = true;
                        let _ = syncer.jobs.send(SyncJob::Pause(until));
                    }
                }
            }
        }
        self.write_appends(appends);
        // A lifecycle op (as a fault or a pause above) acts on committed state, after the
        // appends that came before it.
        self.settle(!lifecycle_ops.is_empty(), jobs);
        // After the appends taken with them: a caller sees its own earlier appends.
        for (op, reply) in lifecycle_ops {
            match self.poison.get() {
                Some(reason) => {
                    let _ = reply.send(Err(StoreError::Poisoned(reason.clone())));
                }
                None => self.lifecycle_op(op, reply),
            }
        }
    }

    /// Writes `appends` into the open transaction (beginning one when none is open). A
    /// statement failure rolls back everything open and refuses it.
    fn write_appends(&mut self, appends: Vec<Request>) {
        if appends.is_empty() {
            return;
        }
        if let Some(reason) = self.poison.get() {
            for request in appends {
                request.refuse(StoreError::Poisoned(reason.clone()));
            }
            return;
        }
        let mut open = self.open.take().unwrap_or_else(|| OpenBatch {
            appends: Vec::new(),
            answers: Vec::new(),
            staged: Staged {
                streams: HashMap::new(),
                head: self.head,
                bytes: 0,
                writing: false,
            },
        });
        open.answers.reserve(appends.len());
        let written = self.write_batch(&appends, &mut open.staged, &mut open.answers);
        open.appends.extend(appends);
        match written {
            Ok(()) => self.open = Some(open),
            Err(failure) => self.fail(open.appends, failure),
        }
    }

    /// Commits the open transaction, unless it may wait: the syncer is still syncing an
    /// earlier commit (its next sync cannot start before that one ends anyway), the batch
    /// is below [`BATCH_EVENTS_MAX`], and `force` is not set. Waiting lets the requests
    /// that arrive meanwhile join this commit, so a sync covers one commit rather than
    /// many small ones, each rewriting the same pages into the log. The syncer wakes the
    /// writer ([`Job::Synced`]) when it is free.
    fn settle(&mut self, force: bool, jobs: Option<&Inbox>) {
        let Some(open) = self.open.take() else {
            return;
        };
        if let Some(reason) = self.poison.get().cloned() {
            self.roll_back();
            for request in open.appends {
                request.refuse(StoreError::Poisoned(reason.clone()));
            }
            return;
        }
        let syncer_busy = match &self.acknowledge {
            Acknowledge::Inline => false,
            Acknowledge::Syncer(syncer) => {
                !syncer.always && syncer.synced.load(Ordering::Acquire) < self.head
            }
        };
        let events = open.staged.head - self.head;
        if !force && syncer_busy && events < BATCH_EVENTS_MAX as u64 {
            self.open = Some(open);
            return;
        }
        match self.commit() {
            Ok(()) => {
                self.committed_at = std::time::Instant::now();
                let written = open.staged.head - self.head;
                let before = self.head;
                self.head = open.staged.head;
                self.streams.extend(open.staged.streams);
                self.acknowledge(open.appends, open.answers, before, jobs);
                if self.index.unflushed() >= self.index_flush_events {
                    self.flush_indexes();
                }
                self.count_written(written, open.staged.bytes);
            }
            Err(failure) => self.fail(open.appends, failure),
        }
    }

    /// Rolls back the open transaction and forgets what it wrote into the tails and the
    /// stream index; returns whether nothing of it is left in SQLite.
    fn roll_back(&mut self) -> bool {
        // Whatever failed, SQLite may have rolled back already (then a ROLLBACK error says
        // nothing new).
        let rolled_back = self.conn.execute_batch("ROLLBACK").is_ok() || self.conn.is_autocommit();
        // The tails and the stream index may hold events of the rolled-back batch.
        self.tails.clear();
        self.index.forget_after(self.head);
        rolled_back
    }

    /// Rolls back the open transaction after `failure` and refuses `appends`, the requests
    /// it held.
    fn fail(&mut self, appends: Vec<Request>, failure: BatchFailure) {
        let rolled_back = self.roll_back();
        match failure {
            BatchFailure::Statement(e) if rolled_back => {
                tracing::error!(error = %e, "a batch of appends failed and was rolled back; nothing of it was written");
                let message = format!(
                    "the batch of appends this one was in failed and was rolled back, so nothing of it was written ({e}); re-sending it is safe"
                );
                for request in appends {
                    request.refuse(StoreError::Unavailable {
                        backend: "embedded",
                        message: message.clone(),
                        source: None,
                    });
                }
            }
            BatchFailure::Statement(e) | BatchFailure::Sync(e) => {
                let reason = self.poison_with(&e);
                for request in appends {
                    request.refuse(StoreError::Poisoned(reason.clone()));
                }
            }
        }
    }

    /// Answers a committed batch: at once when there is nothing to sync; through the syncer
    /// when there is something to overlap its fsync with (a request is already waiting);
    /// else after a sync of its own. With one caller at a time, a hand-off to the syncer
    /// would only add a thread wake-up to every append, so the writer syncs a batch of one
    /// itself when the syncer has nothing pending (so answers stay in batch order) and no
    /// request waits.
    fn acknowledge(
        &mut self,
        appends: Vec<Request>,
        answers: Vec<Answer>,
        before: u64,
        jobs: Option<&Inbox>,
    ) {
        let answer_all = |appends: Vec<Request>, answers: Vec<Answer>| {
            for (request, answer) in appends.into_iter().zip(answers) {
                request.answer(answer);
            }
        };
        let syncer = match &mut self.acknowledge {
            Acknowledge::Inline => {
                // Head first, then answers: a caller that got its acknowledgement and asks
                // for the head sees its own events.
                self.signal.advance(Position(self.head));
                answer_all(appends, answers);
                return;
            }
            Acknowledge::Syncer(syncer) => syncer,
        };
        let syncer_idle = syncer.synced.load(Ordering::Acquire) >= before;
        let waiting = match jobs.map(Inbox::try_recv) {
            Some(Ok(job)) => {
                self.stashed = Some(job);
                true
            }
            Some(Err(_)) | None => false,
        };
        // A batch of one is the sign of a lone caller; a bigger batch means others are
        // about to send again, and their next batch should overlap this fsync.
        if syncer.always || waiting || !syncer_idle || appends.len() > 1 {
            if std::mem::take(&mut syncer.fail_next) {
                let _ = syncer.jobs.send(SyncJob::FailNextSync);
            }
            let batch = Committed {
                head: self.head,
                answers: appends.into_iter().zip(answers).collect(),
            };
            if let Err(std::sync::mpsc::SendError(SyncJob::Batch(batch))) =
                syncer.jobs.send(SyncJob::Batch(batch))
            {
                // The syncer is gone (it only stops with the writer): nobody can be told
                // their batch is durable.
                for (request, _) in batch.answers {
                    request.refuse(StoreError::from(EmbeddedError::Stopped("syncer")));
                }
            }
            return;
        }
        match crate::syncer::sync_log(&syncer.wal, &mut syncer.fail_next) {
            Ok(()) => {
                syncer.synced.fetch_max(self.head, Ordering::AcqRel);
                self.signal.advance(Position(self.head));
                answer_all(appends, answers);
            }
            Err(e) => {
                let reason = crate::syncer::poison_after_failed_sync(&self.poison, &e);
                for request in appends {
                    request.refuse(StoreError::Poisoned(reason.clone()));
                }
            }
        }
    }

    /// Poisons the store (once) because of `e` and returns the reason every append is
    /// refused with.
    fn poison_with(&self, e: &EmbeddedError) -> String {
        let reason = format!("a sync of the store's files failed ({e})");
        tracing::error!(error = %e, "embedded store poisoned; appends are refused until the store is reopened");
        self.poison.get_or_init(|| reason).clone()
    }

    /// Counts a commit of `events` events and `bytes` bytes towards the next passive
    /// checkpoint, and runs it when it is due.
    fn count_written(&mut self, events: u64, bytes: u64) {
        self.uncheckpointed.add_commit(events, bytes);
        if self.uncheckpointed.due() {
            self.checkpoint();
        }
    }

    /// Copies committed pages from the write-ahead log into the database file (passive:
    /// it never waits for readers, and copies what no reader still needs). The commits are
    /// already in the log, so a failure loses nothing; but a failed sync of the database
    /// file leaves its state unknown, so it poisons the store like a failed commit.
    fn checkpoint(&mut self) {
        self.uncheckpointed = Uncheckpointed::default();
        let done = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(EmbeddedError::sqlite(
                "cannot checkpoint the write-ahead log",
            ));
        if let Err(e) = done {
            self.poison_with(&e);
        }
    }

    fn arm(&mut self, fault: Fault) {
        match fault {
            Fault::FailNextCommit => self.fail_next_commit = true,
            Fault::FailNextLookup => self.fail_next_lookup = true,
            Fault::FailNextSync => {
                if let Acknowledge::Syncer(syncer) = &mut self.acknowledge {
                    syncer.fail_next = true;
                }
            }
            Fault::DiskFull => {
                let limited = self
                    .conn
                    .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
                    .and_then(|pages| {
                        self.conn
                            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                    });
                if let Err(e) = limited {
                    tracing::warn!(error = %e, "could not inject the disk-full fault");
                }
            }
        }
    }

    /// Decides and writes every append in the open transaction (begun here when none is).
    /// Decisions such as conflicts go into `answers`, and so does a lookup that failed
    /// before its request wrote anything (that request alone is refused). An `Err` means
    /// everything in the transaction is lost.
    fn write_batch(
        &mut self,
        appends: &[Request],
        staged: &mut Staged,
        answers: &mut Vec<Answer>,
    ) -> Result<(), BatchFailure> {
        if self.conn.is_autocommit() {
            // Cached, as every statement of a batch: parsing it again was ~1 % of a lone
            // append's CPU.
            self.conn
                .prepare_cached("BEGIN IMMEDIATE")
                .and_then(|mut begin| begin.execute([]))
                .map_err(EmbeddedError::sqlite("cannot begin a write transaction"))
                .map_err(BatchFailure::Statement)?;
        }
        let recorded_at = RecordedAt::now();
        for request in appends {
            staged.writing = false;
            let answer = match request {
                Request::One(one, _) => self.append(one, staged, recorded_at).map(Answer::One),
                Request::Multi(multi, _) => self
                    .append_multi(multi, staged, recorded_at)
                    .map(Answer::Multi),
            };
            match answer {
                Ok(answer) => answers.push(answer),
                // Only reads ran for this request, and the transaction is still open: the
                // requests before it keep their writes.
                Err(e) if !staged.writing && !self.conn.is_autocommit() => {
                    tracing::error!(error = %e, "an append's lookup failed; refusing that append only");
                    answers.push(request.refusal(StoreError::from(e)));
                }
                Err(e) => return Err(BatchFailure::Statement(e)),
            }
        }
        Ok(())
    }

    /// Commits the open transaction.
    fn commit(&mut self) -> Result<(), BatchFailure> {
        if std::mem::take(&mut self.fail_next_commit) {
            return Err(BatchFailure::Sync(EmbeddedError::Injected("commit failed")));
        }
        // With `synchronous = NORMAL` a COMMIT only writes the batch's frames to the log (the
        // syncer syncs them): when it fails, SQLite rolls the transaction back, and frames
        // without a commit record are never read. Nothing durable changed.
        self.conn
            .prepare_cached("COMMIT")
            .and_then(|mut commit| commit.execute([]))
            .map(|_| ())
            .map_err(EmbeddedError::sqlite("cannot commit a batch of appends"))
            .map_err(BatchFailure::Statement)
    }

    /// The stream's state as the batch sees it: staged, else committed, else `None` (it
    /// does not exist).
    fn state_of(&self, staged: &Staged, stream: &StreamName) -> Option<StreamState> {
        staged
            .streams
            .get(stream)
            .or_else(|| self.streams.get(stream))
            .copied()
    }

    /// Where each of the request's ids already is in its stream; `Err` inside when one is
    /// the id of an event below `floor` that a scavenge has not erased (core's
    /// [`check_hidden_ids`]: it stays taken until then).
    fn found(
        &self,
        state: Option<StreamState>,
        request: &AppendRequest,
        floor: Version,
    ) -> Result<Result<Vec<Option<Version>>, StoreError>, EmbeddedError> {
        match state {
            Some(s) => {
                let found = self.find_ids(s.id, request)?;
                Ok(
                    check_hidden_ids(&request.stream, &request.events, &found, floor)
                        .map(|()| found),
                )
            }
            None => Ok(Ok(vec![None; request.events.len()])),
        }
    }

    /// The stream's committed lifecycle (the default when it has none).
    fn lifecycle(&self, stream: &StreamName) -> LifecycleRow {
        self.lifecycles.get(stream).copied().unwrap_or_default()
    }

    /// The types of every event of the stream after version `after` (each at least once),
    /// for the rebase rule: from its tail when held (borrowed: a hot stream's append would
    /// otherwise clone, and drop, shared names), else read inside the transaction.
    fn concurrent_types(
        &self,
        stream: &StreamName,
        state: Option<StreamState>,
        after: Version,
    ) -> Result<Vec<Cow<'_, EventType>>, EmbeddedError> {
        match state {
            Some(s) => match self.tails.types_after(s.id, after) {
                Some(types) => Ok(types),
                None => Ok(self
                    .types_after(stream, s.id, after)?
                    .into_iter()
                    .map(Cow::Owned)
                    .collect()),
            },
            None => Ok(Vec::new()),
        }
    }

    /// Decides one append in the batch's view of the store and writes it if accepted.
    fn append(
        &mut self,
        request: &AppendRequest,
        staged: &mut Staged,
        recorded_at: RecordedAt,
    ) -> Result<Result<AppendOutcome, StoreError>, EmbeddedError> {
        let stream = &request.stream;
        let state = self.state_of(staged, stream);
        let row = self.lifecycle(stream);
        if row.lifecycle.tombstoned {
            return Ok(Err(StoreError::StreamDeleted(stream.clone())));
        }
        let last = Version(state.map_or(0, |s| s.version));
        let actual = row.lifecycle.visible_version(last);
        let floor = row.floor(last);
        let found = match self.found(state, request, floor)? {
            Ok(found) => found,
            Err(refused) => return Ok(Err(refused)),
        };
        let mut lookup_failed = None;
        let plan = plan_append(request, actual, &found, |e| {
            self.concurrent_types(stream, state, e.max(Version(floor.get() - 1)))
                .unwrap_or_else(|err| {
                    lookup_failed = Some(err);
                    Vec::new()
                })
        });
        if let Some(err) = lookup_failed {
            return Err(err);
        }
        match plan {
            AppendPlan::Duplicate { first, last } => Ok(Ok(AppendOutcome::Duplicate(
                self.duplicate(stream, state, first, last)?,
            ))),
            AppendPlan::PartialDuplicate(existing_ids) => Ok(Err(StoreError::PartialDuplicate(
                Box::new(PartialDuplicate {
                    stream: stream.clone(),
                    existing_ids,
                }),
            ))),
            AppendPlan::Conflict {
                actual,
                first_concurrent,
            } => Ok(Err(StoreError::conflict(self.conflict(
                request,
                state,
                actual,
                first_concurrent.map(|f| f.max(floor)),
            )?))),
            AppendPlan::Write {
                after,
                rebased_from,
            } => Ok(Ok(self.write_part(
                request,
                state,
                after.max(last),
                rebased_from.map(|e| (e, floor)),
                staged,
                recorded_at,
            )?)),
        }
    }

    /// Decides a multi-stream (or conditional) append in the batch's view of the store, as
    /// [`plan_multi_append`] says, and writes every part if accepted. Every decision (each
    /// part's plan, then the condition, looked up through the indexes inside the open
    /// transaction, so staged writes of earlier requests count) is made before the first
    /// row is written, so a refused request writes nothing and needs no savepoint.
    fn append_multi(
        &mut self,
        request: &MultiAppendRequest,
        staged: &mut Staged,
        recorded_at: RecordedAt,
    ) -> Result<Result<MultiAppendOutcome, StoreError>, EmbeddedError> {
        let mut states = Vec::with_capacity(request.parts.len());
        let mut part_states = Vec::with_capacity(request.parts.len());
        let mut bounds = Vec::with_capacity(request.parts.len());
        for part in &request.parts {
            if self.lifecycle(&part.stream).lifecycle.tombstoned {
                return Ok(Err(StoreError::StreamDeleted(part.stream.clone())));
            }
        }
        for part in &request.parts {
            let state = self.state_of(staged, &part.stream);
            let row = self.lifecycle(&part.stream);
            let last = Version(state.map_or(0, |s| s.version));
            let floor = row.floor(last);
            let found = match self.found(state, part, floor)? {
                Ok(found) => found,
                Err(refused) => return Ok(Err(refused)),
            };
            part_states.push(PartState {
                actual: row.lifecycle.visible_version(last),
                found,
            });
            states.push(state);
            bounds.push((last, floor));
        }
        let below_floor = |i: usize| {
            bounds
                .get(i)
                .map_or(Version::NONE, |b| Version(b.1.get() - 1))
        };
        let mut lookup_failed = None;
        let plan = plan_multi_append(request, &part_states, |i, e| {
            let stream = request.parts.get(i).map(|p| &p.stream);
            let state = states.get(i).copied().flatten();
            match stream {
                Some(stream) => self.concurrent_types(stream, state, e.max(below_floor(i))),
                None => Ok(Vec::new()),
            }
            .unwrap_or_else(|err| {
                lookup_failed = Some(err);
                Vec::new()
            })
        });
        if let Some(err) = lookup_failed {
            return Err(err);
        }
        let missing =
            || EmbeddedError::Corrupted("a multi-stream plan names a missing part".into());
        let plans = match plan {
            MultiAppendPlan::Duplicate(ranges) => {
                let mut parts = Vec::with_capacity(ranges.len());
                for ((part, state), (first, last)) in request.parts.iter().zip(&states).zip(ranges)
                {
                    parts.push(AppendOutcome::Duplicate(self.duplicate(
                        &part.stream,
                        *state,
                        first,
                        last,
                    )?));
                }
                return Ok(Ok(MultiAppendOutcome::from_parts(parts)));
            }
            MultiAppendPlan::PartialDuplicate { part, existing_ids } => {
                let stream = request.parts.get(part).ok_or_else(missing)?.stream.clone();
                return Ok(Err(StoreError::PartialDuplicate(Box::new(
                    PartialDuplicate {
                        stream,
                        existing_ids,
                    },
                ))));
            }
            MultiAppendPlan::Conflicts(stale) => {
                let mut conflicts = Vec::with_capacity(stale.len());
                for c in stale {
                    let part = request.parts.get(c.part).ok_or_else(missing)?;
                    let state = states.get(c.part).copied().ok_or_else(missing)?;
                    let floor = below_floor(c.part).next();
                    conflicts.push(self.conflict(
                        part,
                        state,
                        c.actual,
                        c.first_concurrent.map(|f| f.max(floor)),
                    )?);
                }
                return Ok(Err(StoreError::Conflicts(conflicts)));
            }
            MultiAppendPlan::Write(plans) => plans,
        };
        if let Some(condition) = &request.condition {
            if std::mem::take(&mut self.fail_next_lookup) {
                return Err(EmbeddedError::Injected("condition lookup failed"));
            }
            let matching = matching_events(
                &self.conn,
                &self.index.read(),
                &condition.fail_if_events_match,
                condition.after.get(),
                u64::MAX,
                MATCHING_EVENTS_MAX,
            )?;
            if !matching.is_empty() {
                return Ok(Err(condition.failed(matching)));
            }
        }
        let mut parts = Vec::with_capacity(plans.len());
        for (i, ((part, state), plan)) in request.parts.iter().zip(states).zip(plans).enumerate() {
            if let AppendPlan::Write {
                after,
                rebased_from,
            } = plan
            {
                let last = bounds.get(i).map_or(Version::NONE, |b| b.0);
                parts.push(self.write_part(
                    part,
                    state,
                    after.max(last),
                    rebased_from.map(|e| (e, below_floor(i).next())),
                    staged,
                    recorded_at,
                )?);
            }
        }
        Ok(Ok(MultiAppendOutcome::from_parts(parts)))
    }

    /// The original versions and positions of a repeated append.
    fn duplicate(
        &self,
        stream: &StreamName,
        state: Option<StreamState>,
        first: Version,
        last: Version,
    ) -> Result<Appended, EmbeddedError> {
        let id = state.map_or(0, |s| s.id);
        Ok(Appended {
            stream: stream.clone(),
            first_version: first,
            last_version: last,
            first_position: self.position_of(id, first)?,
            last_position: self.position_of(id, last)?,
        })
    }

    /// The conflict of a stale append, with the events it missed (the first
    /// `concurrent_events_max`).
    fn conflict(
        &mut self,
        request: &AppendRequest,
        state: Option<StreamState>,
        actual: Version,
        first_concurrent: Option<Version>,
    ) -> Result<Conflict, EmbeddedError> {
        let max = self.limits.concurrent_events_max;
        let (concurrent_events, truncated) = match (first_concurrent, state) {
            (Some(first), Some(s)) => {
                let events = self.concurrent_events(&request.stream, s.id, first, max)?;
                let truncated = first.get() + events.len() as u64 <= actual.get();
                (events, truncated)
            }
            _ => (Vec::new(), false),
        };
        Ok(Conflict {
            stream: request.stream.clone(),
            expected: request.expected,
            actual,
            concurrent_events,
            truncated,
        })
    }

    /// Writes an accepted append (or part) after version `after`, creating its stream if
    /// need be, and records the new version in the batch's overlay.
    fn write_part(
        &mut self,
        request: &AppendRequest,
        state: Option<StreamState>,
        after: Version,
        // The stale expected version of a rebase, and the first version reads show.
        rebase: Option<(Version, Version)>,
        staged: &mut Staged,
        recorded_at: RecordedAt,
    ) -> Result<AppendOutcome, EmbeddedError> {
        staged.writing = true;
        let stream = &request.stream;
        let stream_id = match state {
            Some(s) => s.id,
            None => self.insert_stream(stream)?,
        };
        let appended = self.write_events(request, stream_id, after, staged, recorded_at)?;
        staged.streams.insert(
            stream.clone(),
            StreamState {
                id: stream_id,
                version: appended.last_version.get(),
            },
        );
        match rebase {
            None => Ok(AppendOutcome::Appended(appended)),
            Some((e, floor)) => {
                let max = self.limits.concurrent_events_max;
                // Events reads no longer show are not concurrent events.
                let from = e.next().max(floor);
                let concurrent = usize::try_from(after.get().saturating_sub(from.get() - 1))
                    .unwrap_or(usize::MAX);
                let concurrent_events =
                    self.concurrent_events(stream, stream_id, from, concurrent.min(max))?;
                Ok(AppendOutcome::Rebased {
                    appended,
                    expected_version: e,
                    concurrent_events,
                })
            }
        }
    }

    /// Up to `limit` events of the stream from version `from`: from its tail when held,
    /// else read inside the transaction. Either way the stream is contended, so its tail
    /// is kept from now on.
    fn concurrent_events(
        &mut self,
        stream: &StreamName,
        stream_id: i64,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EmbeddedError> {
        if let Some(held) = self.tails.from(stream_id, from) {
            return Ok(held.take(limit).cloned().collect());
        }
        self.tails.watch(stream_id);
        stream_events(
            &self.conn,
            &self.index.read(),
            stream,
            stream_id,
            from,
            Direction::Forward,
            limit,
            u64::MAX,
        )
    }

    /// Where each of the request's ids already is in the stream (the unflushed entries,
    /// then one lookup of the idempotency index each).
    fn find_ids(
        &self,
        stream_id: i64,
        request: &AppendRequest,
    ) -> Result<Vec<Option<Version>>, EmbeddedError> {
        request
            .events
            .iter()
            .map(|e| {
                id_version(
                    &self.conn,
                    &self.index,
                    e.id.as_uuid().as_bytes(),
                    stream_id,
                )
            })
            .collect()
    }

    /// The types of every event of the stream after version `after` (the rebase rule must
    /// see all of them, not only the first 100).
    fn types_after(
        &self,
        stream: &StreamName,
        stream_id: i64,
        after: Version,
    ) -> Result<Vec<EventType>, EmbeddedError> {
        let events = stream_events(
            &self.conn,
            &self.index.read(),
            stream,
            stream_id,
            after.next(),
            Direction::Forward,
            usize::MAX,
            u64::MAX,
        )?;
        Ok(events.into_iter().map(|e| e.event_type).collect())
    }

    fn position_of(&self, stream_id: i64, version: Version) -> Result<Position, EmbeddedError> {
        if let Some(position) = self.index.read().with_run(stream_id, |run| {
            run.and_then(|r| r.position_of(version.get()))
        }) {
            return Ok(Position(position));
        }
        let context = "cannot read the position of a duplicate";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT position FROM stream_index WHERE stream_id = ?1 AND version = ?2",
            )
            .map_err(EmbeddedError::sqlite(context))?;
        let position: i64 = stmt
            .query_row((stream_id, to_sql(version.get())?), |r| r.get(0))
            .map_err(EmbeddedError::sqlite(context))?;
        Ok(Position(from_sql("position", position)?))
    }

    fn insert_stream(&self, stream: &StreamName) -> Result<i64, EmbeddedError> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO streams (name, category) VALUES (?1, ?2)")
            .map_err(EmbeddedError::sqlite("cannot create a stream"))?;
        stmt.execute((stream.as_str(), stream.category().as_str()))
            .map_err(EmbeddedError::sqlite("cannot create a stream"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Writes the events after version `after` at the next positions.
    fn write_events(
        &mut self,
        request: &AppendRequest,
        stream_id: i64,
        after: Version,
        staged: &mut Staged,
        recorded_at: RecordedAt,
    ) -> Result<Appended, EmbeddedError> {
        let (mut insert_event, mut insert_tag) = row_statements(&self.conn)?;
        let category = request.stream.category();
        let recorded_at_value = recorded_at;
        let recorded_at = to_sql(recorded_at.as_millis())?;
        let watched = self.tails.is_watched(stream_id);
        let mut tail = Vec::new();
        let first_position = staged.head + 1;
        let mut tags = String::new();
        for (i, event) in (0u64..).zip(&request.events) {
            insert_row(
                &mut insert_event,
                &mut insert_tag,
                &EventRow {
                    position: first_position + i,
                    stream_id,
                    version: after.get() + 1 + i,
                    id: &event.id,
                    event_type: &event.event_type,
                    category: category.as_str(),
                    data: &event.data,
                    metadata: &event.metadata,
                    tags: &event.tags,
                    recorded_at,
                },
                &mut tags,
            )?;
            if watched {
                tail.push(RecordedEvent::new(
                    request.stream.clone(),
                    Version(after.get() + 1 + i),
                    Position(first_position + i),
                    event.clone(),
                    recorded_at_value,
                ));
            }
        }
        for event in tail {
            self.tails.push(stream_id, event);
        }
        let count = request.events.len() as u64;
        staged.bytes += request
            .events
            .iter()
            .map(|e| (e.data.len() + e.metadata.len()) as u64)
            .sum::<u64>();
        self.index
            .record((0u64..).zip(&request.events).map(|(i, event)| Entry {
                stream_id,
                version: after.get() + 1 + i,
                position: first_position + i,
                event_id: *event.id.as_uuid().as_bytes(),
                event_type: event.event_type.as_str(),
                category: category.as_str(),
            }));
        staged.head += count;
        Ok(Appended {
            stream: request.stream.clone(),
            first_version: after.next(),
            last_version: Version(after.get() + count),
            first_position: Position(first_position),
            last_position: Position(staged.head),
        })
    }
}

/// The version of `stream_id` that holds `event_id`, if any: the unflushed entries first,
/// then the idempotency index's table. Only the writer calls it (appends and imports).
pub(crate) fn id_version(
    conn: &Connection,
    index: &DeferredIndex,
    event_id: &[u8; 16],
    stream_id: i64,
) -> Result<Option<Version>, EmbeddedError> {
    if let Some(version) = index.unflushed_id(event_id, stream_id) {
        return Ok(Some(Version(version)));
    }
    let context = "cannot look up event ids";
    let mut stmt = conn
        .prepare_cached("SELECT version FROM event_ids WHERE event_id = ?1 AND stream_id = ?2")
        .map_err(EmbeddedError::sqlite(context))?;
    let version: Option<i64> = stmt
        .query_row((event_id.as_slice(), stream_id), |r| r.get(0))
        .optional()
        .map_err(EmbeddedError::sqlite(context))?;
    version
        .map(|v| from_sql("version", v).map(Version))
        .transpose()
}

/// One row of `events`: what appends and imports write alike.
pub(crate) struct EventRow<'a> {
    pub(crate) position: u64,
    pub(crate) stream_id: i64,
    pub(crate) version: u64,
    pub(crate) id: &'a concord_core::EventId,
    pub(crate) event_type: &'a EventType,
    pub(crate) category: &'a str,
    pub(crate) data: &'a concord_core::Payload,
    pub(crate) metadata: &'a concord_core::Json,
    pub(crate) tags: &'a [concord_core::Tag],
    /// Milliseconds, as stored.
    pub(crate) recorded_at: i64,
}

/// The statements [`insert_row`] takes: the event row, and a tag's index row.
pub(crate) fn row_statements(
    conn: &Connection,
) -> Result<(rusqlite::CachedStatement<'_>, rusqlite::CachedStatement<'_>), EmbeddedError> {
    let context = "cannot write an event";
    let insert_event = conn
        .prepare_cached(
            "INSERT INTO events (position, stream_id, version, event_id, type, category, data, metadata, tags, recorded_at, content_type)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(EmbeddedError::sqlite(context))?;
    let insert_tag = conn
        .prepare_cached("INSERT OR IGNORE INTO event_tags (tag, position) VALUES (?1, ?2)")
        .map_err(EmbeddedError::sqlite(context))?;
    Ok((insert_event, insert_tag))
}

/// Writes `row` and its tags' index rows; `tags` is a buffer for the joined tags.
pub(crate) fn insert_row(
    insert_event: &mut rusqlite::CachedStatement<'_>,
    insert_tag: &mut rusqlite::CachedStatement<'_>,
    row: &EventRow<'_>,
    tags: &mut String,
) -> Result<(), EmbeddedError> {
    let context = "cannot write an event";
    let position = to_sql(row.position)?;
    tags.clear();
    for (n, tag) in row.tags.iter().enumerate() {
        if n > 0 {
            tags.push(TAG_SEPARATOR);
        }
        tags.push_str(tag.as_str());
    }
    insert_event
        .execute((
            position,
            row.stream_id,
            to_sql(row.version)?,
            row.id.as_uuid().as_bytes(),
            row.event_type.as_str(),
            row.category,
            row.data.as_bytes(),
            row.metadata.as_bytes(),
            tags.as_str(),
            row.recorded_at,
            row.data.bytes_content_type().map(|t| t.as_str()),
        ))
        .map_err(EmbeddedError::sqlite(context))?;
    // OR IGNORE: an event may carry the same tag twice; its index row is one.
    for tag in row.tags {
        insert_tag
            .execute((tag.as_str(), position))
            .map_err(EmbeddedError::sqlite(context))?;
    }
    Ok(())
}

/// Runs `work` in a transaction of its own (`BEGIN IMMEDIATE` … `COMMIT`), rolled back when
/// it fails at any step.
fn in_transaction<T>(
    conn: &Connection,
    context: &'static str,
    work: impl FnOnce(&Connection) -> Result<T, EmbeddedError>,
) -> Result<T, EmbeddedError> {
    let done = conn
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(EmbeddedError::sqlite(context))
        .and_then(|()| work(conn))
        .and_then(|value| {
            conn.execute_batch("COMMIT")
                .map_err(EmbeddedError::sqlite(context))
                .map(|()| value)
        });
    if done.is_err() {
        // Whatever failed, SQLite may have rolled back already.
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}
