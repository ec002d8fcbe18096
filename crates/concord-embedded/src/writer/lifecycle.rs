//! The writer's lifecycle operations: deletes, tombstones, retention settings, scavenges.
//!
//! They run on the writer thread between batches of appends, so they are ordered with
//! appends exactly as the writer's version map is. Each commits its own transaction and
//! syncs the log before it answers. A scavenge erases, per stream, the prefix of versions
//! that reads no longer show (core's [`StreamLifecycle::first_kept`], then the events too
//! old for `max_age`), in transactions of [`SCAVENGE_CHUNK_EVENTS`]; each moves the
//! stream's `erased_through` and `scavenge_state` with its deletes, so a crash between two
//! leaves a consistent store that the next scavenge completes. The stream index keeps the
//! erased events' entries (no event data; they keep versions consecutive from 1). With
//! `secure_delete` on, SQLite overwrites what it frees; the log is then checkpointed and
//! truncated, and a store created in format 5 gives freed pages back to the file system.
//!
//! A scavenge runs online: the writer does one chunk (or one piece of the vacuum), then the
//! batch of appends waiting, then the next chunk, and answers the caller only at the end.
//! Done in one go, erasing 900 000 events of 1 KiB held every append for the whole of it.
//! It erases only events written before it started, which are all in the stream index
//! table (recovery counts erased events there), and reads each stream's lifecycle again at
//! every chunk, so a delete or retention change between chunks is obeyed.

use concord_core::{
    Conflict, DeleteMode, DeletePlan, ExpectedVersion, MetadataChange, RecordedAt, ScavengeReport,
    StoreError, StreamLifecycle, StreamName, Version, plan_delete,
};
use rusqlite::OptionalExtension;

use super::scrub;
use super::{
    Acknowledge, LifecycleAnswer, LifecycleOp, LifecycleReply, SCAVENGE_CHUNK_EVENTS,
    Uncheckpointed, Writer, in_transaction,
};
use crate::error::{EmbeddedError, from_sql, to_sql};
use crate::schema::{LifecycleRow, TAG_SEPARATOR};

/// Free pages one piece of a scavenge's vacuum gives back (4 MiB of 4 KiB pages): the
/// appends waiting meanwhile wait for no more than that.
const VACUUM_PAGES: u64 = 1024;

/// Pages one piece of a scavenge's scrub reads (4 MiB of 4 KiB pages): most need no
/// write, so a piece costs about a read of them.
const SCRUB_PAGES: u64 = 1024;

/// How many times a piece's duration the writer gives to waiting appends before the next
/// piece: the scavenge takes at most 1 / (1 + this) of a busy writer's time (4: 20 %,
/// for the ≥ 0.7× append rate issue 19 asks during a scavenge).
const APPENDS_SHARE: f64 = 4.0;

/// The same for the pieces of the scrub, which reads the whole file and writes what it
/// zeroes through the log: 9, so a busy writer gives it at most 10 % of its time (with 4,
/// appends during a scavenge fell from 0.71–0.78× to 0.61–0.68× of their rate before it).
const APPENDS_SHARE_SCRUB: f64 = 9.0;

/// A scavenge under way. The writer does it one bounded piece at a time
/// ([`Writer::scavenge_step`]) between batches of appends, so appends go on during it.
pub(crate) struct Scavenging {
    /// Who asked for this scavenge.
    callers: Vec<LifecycleReply>,
    /// Who asked while it ran: they get the next one (what they hid may be past this one).
    queued: Vec<LifecycleReply>,
    /// The streams left, with their last versions when the scavenge started.
    streams: std::collections::VecDeque<(StreamName, Version)>,
    /// Events erased so far from the first of `streams`.
    erased_in_stream: u64,
    /// The time `max_age` is measured at.
    now: RecordedAt,
    pages_before: u64,
    report: ScavengeReport,
    phase: Phase,
    /// While appends come, the next piece starts no earlier than this.
    resume_at: std::time::Instant,
    /// Whether a batch of appends was done since the last piece.
    appends_since_piece: bool,
    /// B-tree pages whose free space the scrub found not zeroed.
    pages_scrubbed: u64,
}

impl Scavenging {
    /// How long the writer waits for jobs before the next piece: until it is due while
    /// appends come, not at all on a quiet store.
    pub(super) fn wait(&self) -> std::time::Duration {
        if self.appends_since_piece {
            self.resume_at
                .saturating_duration_since(std::time::Instant::now())
        } else {
            std::time::Duration::ZERO
        }
    }
}

/// Where a scavenge is.
#[derive(Clone, Copy)]
enum Phase {
    /// Erasing hidden events, a chunk at a time.
    Erase,
    /// Giving freed pages back to the file system, a piece at a time.
    Vacuum,
    /// Zeroing the free space of B-tree pages ([`super::scrub`]), from page `next` to
    /// `last`, a piece at a time.
    Scrub {
        next: u64,
        last: u64,
        geometry: scrub::Geometry,
    },
    /// Truncating the log and reporting.
    End,
}

/// How many times a scavenge tries to truncate the write-ahead log while readers hold it.
const TRUNCATE_ATTEMPTS: u32 = 200;

type Answer = Result<Result<LifecycleAnswer, StoreError>, EmbeddedError>;

impl Writer {
    /// Does `op` and answers on `reply`; a scavenge only starts here, and answers once the
    /// writer has done all of it between batches ([`Self::scavenge_step`]).
    pub(super) fn lifecycle_op(&mut self, op: LifecycleOp, reply: LifecycleReply) {
        let answer = match op {
            LifecycleOp::Delete {
                stream,
                mode,
                expected,
            } => self.delete(&stream, mode, expected),
            LifecycleOp::ChangeMetadata { stream, change } => self.change_metadata(&stream, change),
            LifecycleOp::Scavenge => return self.start_scavenge(reply),
            LifecycleOp::Import(events) => self.import(&events),
            LifecycleOp::ImportPast(past) => self.import_past(&past),
            LifecycleOp::ImportHead(head) => self.import_head(head),
        };
        let _ = reply.send(answer.map_err(StoreError::from).and_then(|a| a));
    }

    fn delete(
        &mut self,
        stream: &StreamName,
        mode: DeleteMode,
        expected: Option<Version>,
    ) -> Answer {
        let state = self.streams.get(stream).copied();
        let last = Version(state.map_or(0, |s| s.version));
        let row = self.lifecycle(stream);
        let plan = match plan_delete(stream, mode, expected, last, row.lifecycle) {
            Ok(plan) => plan,
            Err(refused) => return Ok(Err(refused)),
        };
        match plan {
            DeletePlan::Conflict {
                actual,
                first_concurrent,
            } => {
                let max = self.limits.concurrent_events_max;
                let (concurrent_events, truncated) = match (first_concurrent, state) {
                    (Some(first), Some(s)) => {
                        let first = first.max(row.floor(last));
                        let events = self.concurrent_events(stream, s.id, first, max)?;
                        let truncated = first.get() + events.len() as u64 <= actual.get();
                        (events, truncated)
                    }
                    _ => (Vec::new(), false),
                };
                Ok(Err(StoreError::conflict(Conflict {
                    stream: stream.clone(),
                    expected: ExpectedVersion::Exact(expected.unwrap_or_default()),
                    actual,
                    concurrent_events,
                    truncated,
                })))
            }
            DeletePlan::Delete(next) => {
                self.store_lifecycle(
                    stream,
                    LifecycleRow {
                        lifecycle: next,
                        ..row
                    },
                )?;
                Ok(Ok(LifecycleAnswer::Done))
            }
        }
    }

    /// The writer is the only one to change lifecycles, so reading the stored settings and
    /// writing the changed ones cannot interleave with another change.
    fn change_metadata(&mut self, stream: &StreamName, change: MetadataChange) -> Answer {
        if let Err(invalid) = change.validate() {
            return Ok(Err(invalid));
        }
        let row = self.lifecycle(stream);
        if let Err(deleted) = row.lifecycle.check_not_tombstoned(stream) {
            return Ok(Err(deleted));
        }
        let metadata = change.apply(row.lifecycle.metadata);
        self.store_lifecycle(
            stream,
            LifecycleRow {
                lifecycle: StreamLifecycle {
                    metadata,
                    ..row.lifecycle
                },
                ..row
            },
        )?;
        Ok(Ok(LifecycleAnswer::Metadata(metadata)))
    }

    /// Writes `row` as the stream's lifecycle, commits, syncs, then takes it as committed.
    fn store_lifecycle(
        &mut self,
        stream: &StreamName,
        row: LifecycleRow,
    ) -> Result<(), EmbeddedError> {
        self.name_lifecycle(stream);
        let context = "cannot store a stream's lifecycle";
        in_transaction(&self.conn, context, |conn| {
            write_lifecycle_row(conn, stream, &row, context)
        })?;
        self.sync_now()?;
        self.lifecycles.insert(stream.clone(), row);
        Ok(())
    }

    /// Names `stream` as one with a lifecycle row, before the commit that writes it: from
    /// then on reads of the stream are not split.
    pub(super) fn name_lifecycle(&self, stream: &StreamName) {
        self.lifecycle_names
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(stream.clone());
    }

    /// Syncs the log now (when the store promises durability), poisoning it on failure
    /// as a failed batch sync does.
    pub(super) fn sync_now(&mut self) -> Result<(), EmbeddedError> {
        if let Acknowledge::Syncer(syncer) = &mut self.acknowledge
            && let Err(e) = crate::syncer::sync_log(&syncer.wal, &mut syncer.fail_next)
        {
            let reason = crate::syncer::poison_after_failed_sync(&self.poison, &e);
            return Err(EmbeddedError::Poisoned(reason));
        }
        Ok(())
    }

    /// Moves the head to `head`, written and synced outside a batch (an import): the
    /// syncer counts it as synced, and readers see it.
    pub(super) fn publish_synced_head(&mut self, head: u64) {
        self.head = head;
        if let Acknowledge::Syncer(syncer) = &self.acknowledge {
            syncer
                .synced
                .fetch_max(head, std::sync::atomic::Ordering::AcqRel);
        }
        self.signal.advance(concord_core::Position(head));
    }

    /// Starts a scavenge for `reply`, or queues `reply` for the next one when a scavenge is
    /// under way (it answers only once everything hidden before it asked is erased).
    fn start_scavenge(&mut self, reply: LifecycleReply) {
        if let Some(running) = &mut self.scavenging {
            running.queued.push(reply);
            return;
        }
        match self.begin_scavenge() {
            Ok(mut scavenging) => {
                scavenging.callers.push(reply);
                self.scavenging = Some(scavenging);
            }
            Err(e) => {
                let _ = reply.send(Err(StoreError::from(e)));
            }
        }
    }

    /// Writes the stream index and notes what the scavenge will go through: the streams with
    /// a lifecycle and their last versions now. Only events up to those versions are erased:
    /// every one of them is in the stream index table (recovery counts on it), while events
    /// appended between chunks may not be yet.
    fn begin_scavenge(&mut self) -> Result<Scavenging, EmbeddedError> {
        self.flush_indexes();
        if self.index.unflushed() > 0 {
            return Err(EmbeddedError::Busy(
                "cannot scavenge: the indexes could not be written; try again".into(),
            ));
        }
        let mut streams: Vec<(StreamName, Version)> = self
            .lifecycles
            .keys()
            .filter_map(|name| {
                let state = self.streams.get(name)?;
                Some((name.clone(), Version(state.version)))
            })
            .collect();
        streams.sort();
        Ok(Scavenging {
            callers: Vec::new(),
            queued: Vec::new(),
            streams: streams.into(),
            erased_in_stream: 0,
            now: RecordedAt::now(),
            pages_before: self.pragma("page_count")?,
            report: ScavengeReport::default(),
            phase: Phase::Erase,
            resume_at: std::time::Instant::now(),
            appends_since_piece: false,
            pages_scrubbed: 0,
        })
    }

    /// Does one bounded piece of the scavenge under way (a chunk of erasures, a piece of
    /// the vacuum, or its end), so the writer serves the appends waiting before the next.
    /// Answers the callers once it is done or failed, then starts the queued scavenge.
    ///
    /// With `appends_waiting`, it does nothing until [`APPENDS_SHARE`] times the last
    /// piece's duration has passed since it ended: appends under load keep most of the
    /// writer's time; a quiet store scavenges at full speed.
    pub(super) fn scavenge_step(&mut self, appends_waiting: bool) {
        // A piece is a transaction of its own: not while a batch of appends is open.
        if self.open.is_some() {
            return;
        }
        let Some(mut scavenging) = self.scavenging.take() else {
            return;
        };
        if appends_waiting {
            scavenging.appends_since_piece = true;
            if std::time::Instant::now() < scavenging.resume_at {
                self.scavenging = Some(scavenging);
                return;
            }
        }
        scavenging.appends_since_piece = false;
        let started = std::time::Instant::now();
        let result = match self.poison.get() {
            Some(reason) => Err(StoreError::Poisoned(reason.clone())),
            None => self
                .scavenge_piece(&mut scavenging)
                .map_err(StoreError::from),
        };
        let report = match result {
            Ok(None) => {
                let ended = std::time::Instant::now();
                let share = match scavenging.phase {
                    Phase::Scrub { .. } => APPENDS_SHARE_SCRUB,
                    Phase::Erase | Phase::Vacuum | Phase::End => APPENDS_SHARE,
                };
                scavenging.resume_at = ended + (ended - started).mul_f64(share);
                self.scavenging = Some(scavenging);
                return;
            }
            Ok(Some(report)) => Ok(report),
            Err(e) => Err(e),
        };
        let mut callers = scavenging.callers.into_iter();
        match report {
            Ok(report) => {
                for caller in callers {
                    let _ = caller.send(Ok(LifecycleAnswer::Scavenged(report)));
                }
            }
            Err(e) => {
                // The error is not `Clone`: the first caller gets it, the others its words.
                let message = e.to_string();
                if let Some(first) = callers.next() {
                    let _ = first.send(Err(e));
                }
                for caller in callers {
                    let _ = caller.send(Err(StoreError::Unavailable {
                        backend: "embedded",
                        message: message.clone(),
                        source: None,
                    }));
                }
            }
        }
        // Callers that asked while it ran share the next one.
        for reply in scavenging.queued {
            self.start_scavenge(reply);
        }
    }

    /// One piece of work; `Some(report)` once the scavenge is done.
    fn scavenge_piece(
        &mut self,
        s: &mut Scavenging,
    ) -> Result<Option<ScavengeReport>, EmbeddedError> {
        match s.phase {
            Phase::Erase => {
                while let Some((stream, last_at_start)) = s.streams.front().cloned() {
                    if let Some(state) = self.streams.get(&stream).copied() {
                        // Read again at every chunk: deletes and retention changes between
                        // chunks count, but never past the versions indexed at the start.
                        let row = self.lifecycle(&stream);
                        let last = Version(state.version);
                        let target = self
                            .erase_below(state.id, row, last, s.now)?
                            .min(last_at_start.next());
                        if row.erased_through.saturating_add(1) < target.get() {
                            let (n, through, bytes) =
                                self.erase_chunk(&stream, state.id, row.erased_through, target)?;
                            s.erased_in_stream += n;
                            self.lifecycles.insert(
                                stream,
                                LifecycleRow {
                                    erased_through: through,
                                    ..row
                                },
                            );
                            // The tails may hold erased events.
                            self.tails.clear();
                            // Counted as written: secure_delete rewrites the pages they held,
                            // and the log would otherwise grow by all of them before the end.
                            self.count_written(n, bytes);
                            return Ok(None);
                        }
                    }
                    if s.erased_in_stream > 0 {
                        s.report.events_removed += s.erased_in_stream;
                        s.report.streams_scavenged += 1;
                    }
                    s.erased_in_stream = 0;
                    s.streams.pop_front();
                }
                self.tails.clear();
                self.sync_now()?;
                self.truncate_log()?;
                s.phase = Phase::Vacuum;
                Ok(None)
            }
            Phase::Vacuum => {
                if self.pragma("auto_vacuum")? == 0 && self.pragma("freelist_count")? > 0 {
                    self.vacuum_whole_file()?;
                    return Ok(None);
                }
                if self.pragma("freelist_count")? > 0 {
                    self.vacuum_pages(VACUUM_PAGES)?;
                    let page_size = self.pragma("page_size")?;
                    self.count_written(0, VACUUM_PAGES * page_size);
                    return Ok(None);
                }
                s.phase = self.start_scrub()?;
                Ok(None)
            }
            Phase::Scrub {
                next,
                last,
                geometry,
            } => {
                let (next, zeroed) = self.scrub_pages(next, last, &geometry)?;
                s.pages_scrubbed += zeroed;
                s.phase = if next <= last {
                    Phase::Scrub {
                        next,
                        last,
                        geometry,
                    }
                } else {
                    Phase::End
                };
                Ok(None)
            }
            Phase::End => {
                self.truncate_log()?;
                let pages_after = self.pragma("page_count")?;
                let page_size = self.pragma("page_size")?;
                let mut report = s.report;
                report.bytes_reclaimed = s.pages_before.saturating_sub(pages_after) * page_size;
                tracing::info!(
                    events_removed = report.events_removed,
                    streams = report.streams_scavenged,
                    bytes_reclaimed = report.bytes_reclaimed,
                    pages_scrubbed = s.pages_scrubbed,
                    "scavenge done"
                );
                Ok(Some(report))
            }
        }
    }

    /// The first version of the stream a scavenge keeps: everything below it is erased.
    fn erase_below(
        &self,
        stream_id: i64,
        row: LifecycleRow,
        last: Version,
        now: RecordedAt,
    ) -> Result<Version, EmbeddedError> {
        let l = row.lifecycle;
        if l.tombstoned {
            return Ok(last.next());
        }
        let first = l.first_kept(last);
        let Some(oldest) = l.oldest_kept(now) else {
            return Ok(first);
        };
        // Events too old form a prefix (times grow with versions): erase up to the first
        // one young enough.
        let young: Option<i64> = self
            .conn
            .query_row(
                "SELECT MIN(i.version) FROM stream_index i JOIN events e ON e.position = i.position
                 WHERE i.stream_id = ?1 AND i.version >= ?2 AND e.recorded_at >= ?3",
                (stream_id, to_sql(first.get())?, to_sql(oldest.as_millis())?),
                |r| r.get(0),
            )
            .optional()
            .map_err(EmbeddedError::sqlite(
                "cannot find a stream's oldest kept event",
            ))?
            .flatten();
        match young {
            Some(v) => Ok(Version(from_sql("version", v)?)),
            None => Ok(last.next()),
        }
    }

    /// Erases up to [`SCAVENGE_CHUNK_EVENTS`] events of the stream with versions after
    /// `erased_through` and below `target`, in one transaction; returns how many, the new
    /// `erased_through` and the bytes of data and metadata they held.
    fn erase_chunk(
        &mut self,
        stream: &StreamName,
        stream_id: i64,
        erased_through: u64,
        target: Version,
    ) -> Result<(u64, u64, u64), EmbeddedError> {
        let context = "cannot erase events";
        let head = self.head;
        let erase = |conn: &rusqlite::Connection| -> Result<(u64, u64, u64), EmbeddedError> {
            type Row = (
                i64,
                i64,
                Option<String>,
                i64,
                Option<Vec<u8>>,
                Option<String>,
            );
            let rows: Vec<Row> = {
                let mut select = conn
                    .prepare_cached(
                        "SELECT i.version, i.position, e.tags,
                                COALESCE(length(e.data) + length(e.metadata), 0),
                                e.event_id, e.type
                         FROM stream_index i
                         LEFT JOIN events e ON e.position = i.position
                         WHERE i.stream_id = ?1 AND i.version > ?2 AND i.version < ?3
                         ORDER BY i.version LIMIT ?4",
                    )
                    .map_err(EmbeddedError::sqlite(context))?;
                let limit = i64::try_from(SCAVENGE_CHUNK_EVENTS).unwrap_or(i64::MAX);
                let rows = select
                    .query_map(
                        (
                            stream_id,
                            to_sql(erased_through)?,
                            to_sql(target.get())?,
                            limit,
                        ),
                        |r| {
                            Ok((
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                            ))
                        },
                    )
                    .map_err(EmbeddedError::sqlite(context))?;
                rows.collect::<Result<_, _>>()
                    .map_err(EmbeddedError::sqlite(context))?
            };
            let mut delete_tag = conn
                .prepare_cached("DELETE FROM event_tags WHERE tag = ?1 AND position = ?2")
                .map_err(EmbeddedError::sqlite(context))?;
            let mut delete_event = conn
                .prepare_cached("DELETE FROM events WHERE position = ?1")
                .map_err(EmbeddedError::sqlite(context))?;
            // The scavenge erases only flushed events (`begin_scavenge`), so their entries
            // are in these tables, not in memory.
            let mut delete_id = conn
                .prepare_cached("DELETE FROM event_ids WHERE event_id = ?1 AND stream_id = ?2")
                .map_err(EmbeddedError::sqlite(context))?;
            let mut delete_type = conn
                .prepare_cached("DELETE FROM type_index WHERE type = ?1 AND position = ?2")
                .map_err(EmbeddedError::sqlite(context))?;
            let mut delete_category = conn
                .prepare_cached("DELETE FROM category_index WHERE category = ?1 AND position = ?2")
                .map_err(EmbeddedError::sqlite(context))?;
            let category = stream.category();
            let mut erased = 0u64;
            let bytes = rows
                .iter()
                .map(|r| u64::try_from(r.3).unwrap_or(0))
                .sum::<u64>();
            for (_, position, tags, _, event_id, event_type) in &rows {
                let Some(tags) = tags else { continue };
                if let Some(event_id) = event_id {
                    delete_id
                        .execute((event_id, stream_id))
                        .map_err(EmbeddedError::sqlite(context))?;
                }
                if let Some(event_type) = event_type {
                    delete_type
                        .execute((event_type, position))
                        .map_err(EmbeddedError::sqlite(context))?;
                }
                delete_category
                    .execute((category.as_str(), position))
                    .map_err(EmbeddedError::sqlite(context))?;
                for tag in tags.split(TAG_SEPARATOR).filter(|t| !t.is_empty()) {
                    delete_tag
                        .execute((tag, position))
                        .map_err(EmbeddedError::sqlite(context))?;
                }
                erased += delete_event
                    .execute([position])
                    .map_err(EmbeddedError::sqlite(context))? as u64;
            }
            let through = if rows.len() < SCAVENGE_CHUNK_EVENTS {
                target.get().saturating_sub(1)
            } else {
                rows.last()
                    .map(|r| from_sql("version", r.0))
                    .transpose()?
                    .unwrap_or(erased_through)
            };
            conn.execute(
                "UPDATE stream_lifecycle SET erased_through = ?1 WHERE name = ?2",
                (to_sql(through)?, stream.as_str()),
            )
            .map_err(EmbeddedError::sqlite(context))?;
            conn.execute(
                "UPDATE scavenge_state SET erased_events = erased_events + ?1, head = ?2 WHERE id = 1",
                (to_sql(erased)?, to_sql(head)?),
            )
            .map_err(EmbeddedError::sqlite(context))?;
            Ok((erased, through, bytes))
        };
        in_transaction(&self.conn, context, erase)
    }

    /// Copies the log into the database file and truncates it to nothing, so the erased
    /// events' old pages are not left in it. Readers holding the log make it wait; after
    /// [`TRUNCATE_ATTEMPTS`] the scavenge reports that it could not.
    fn truncate_log(&mut self) -> Result<(), EmbeddedError> {
        self.uncheckpointed = Uncheckpointed::default();
        for _ in 0..TRUNCATE_ATTEMPTS {
            let busy: i64 = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .map_err(EmbeddedError::sqlite(
                    "cannot checkpoint the write-ahead log",
                ))?;
            if busy == 0 {
                return Ok(());
            }
            // Readers finish their statements in milliseconds; this is a back-off, not a
            // synchronisation.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(EmbeddedError::Busy(
            "the scavenge erased the events but readers kept the write-ahead log from being truncated; run it again".into(),
        ))
    }

    /// Gives up to `pages` free pages back. The pragma frees one page per row it returns,
    /// so it is stepped to the end (`execute_batch` steps once: one page).
    fn vacuum_pages(&self, pages: u64) -> Result<(), EmbeddedError> {
        let context = "cannot give freed pages back";
        let mut stmt = self
            .conn
            .prepare(&format!("PRAGMA incremental_vacuum({pages})"))
            .map_err(EmbeddedError::sqlite(context))?;
        let mut rows = stmt.query([]).map_err(EmbeddedError::sqlite(context))?;
        while rows
            .next()
            .map_err(EmbeddedError::sqlite(context))?
            .is_some()
        {}
        Ok(())
    }

    /// Rewrites the whole file once, with `auto_vacuum = INCREMENTAL`, for a store created
    /// before new stores got that setting (it only takes effect through a `VACUUM`): the
    /// pages its scavenges free go back to the file system now, and from then on a piece at
    /// a time like any store's. Appends wait while it runs: a one-off, logged, that lasts
    /// about as long as copying the file, and needs as much free disk again.
    fn vacuum_whole_file(&mut self) -> Result<(), EmbeddedError> {
        let pages = self.pragma("page_count")?;
        let page_size = self.pragma("page_size")?;
        tracing::warn!(
            bytes = pages * page_size,
            "this store was created without incremental vacuum: rewriting its file once \
             (VACUUM) so that scavenges give space back; appends wait until it is done"
        );
        self.conn
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM")
            .map_err(EmbeddedError::sqlite(
                "cannot rewrite the file with incremental vacuum",
            ))?;
        self.truncate_log()?;
        tracing::info!(
            bytes = self.pragma("page_count")? * page_size,
            "the store's file is rewritten with incremental vacuum"
        );
        Ok(())
    }

    /// The scrub's first piece: every page the file has now (pages added later hold no
    /// erased event). Without `sqlite_dbpage` (SQLite built without it) or in a file too
    /// large to tell its pages apart ([`scrub::fits`]), the file is rewritten instead: a
    /// `VACUUM` leaves no free space with old bytes, and appends wait for it.
    fn start_scrub(&mut self) -> Result<Phase, EmbeddedError> {
        let last = self.pragma("page_count")?;
        let page_size = self.pragma("page_size")?;
        // The file header's byte 20: the bytes reserved at the end of each page.
        let header = self
            .conn
            .query_row("SELECT data FROM sqlite_dbpage WHERE pgno = 1", [], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .ok();
        if let Some(header) = header.filter(|_| scrub::fits(last)) {
            let page_size = usize::try_from(page_size)
                .map_err(|_| EmbeddedError::Corrupted("the page size is out of range".into()))?;
            let reserved = header.get(20).copied().map_or(0, usize::from);
            let geometry = scrub::Geometry {
                page_size,
                usable: page_size.saturating_sub(reserved),
                pointer_maps: self.pragma("auto_vacuum")? != 0,
            };
            return Ok(Phase::Scrub {
                next: 1,
                last,
                geometry,
            });
        }
        tracing::warn!(
            bytes = last * page_size,
            "this build of SQLite cannot read pages one by one (sqlite_dbpage), or the file \
             is too large for it: the scavenge rewrites the file (VACUUM) to leave none of \
             the erased events' bytes; appends wait until it is done"
        );
        self.conn
            .execute_batch("VACUUM")
            .map_err(EmbeddedError::sqlite("cannot rewrite the file"))?;
        Ok(Phase::End)
    }

    /// Scrubs pages `next` to `last` ([`SCRUB_PAGES`] at most) in one transaction; returns
    /// the next page to scrub and how many pages held old bytes.
    fn scrub_pages(
        &mut self,
        next: u64,
        last: u64,
        geometry: &scrub::Geometry,
    ) -> Result<(u64, u64), EmbeddedError> {
        let context = "cannot zero the free space of the store's pages";
        let end = last.min(next.saturating_add(SCRUB_PAGES - 1));
        let scrub_range = |conn: &rusqlite::Connection| -> Result<u64, EmbeddedError> {
            let mut read = conn
                .prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")
                .map_err(EmbeddedError::sqlite(context))?;
            let mut write = conn
                .prepare_cached("UPDATE sqlite_dbpage SET data = ?2 WHERE pgno = ?1")
                .map_err(EmbeddedError::sqlite(context))?;
            let mut zeroed = 0;
            for pgno in next..=end {
                let Some(mut page) = read
                    .query_row([to_sql(pgno)?], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
                    .map_err(EmbeddedError::sqlite(context))?
                else {
                    break;
                };
                match scrub::scrub(&mut page, pgno, geometry) {
                    scrub::Scrubbed::Zeroed(_) => {
                        write
                            .execute((to_sql(pgno)?, &page))
                            .map_err(EmbeddedError::sqlite(context))?;
                        zeroed += 1;
                    }
                    scrub::Scrubbed::Inconsistent => {
                        tracing::warn!(
                            page = pgno,
                            "a page's structure does not add up; the scavenge leaves it as it is"
                        );
                    }
                    scrub::Scrubbed::Clean | scrub::Scrubbed::Other => {}
                }
            }
            Ok(zeroed)
        };
        let zeroed = in_transaction(&self.conn, context, scrub_range)?;
        // Counted as written, so that passive checkpoints keep the log short.
        self.count_written(0, zeroed * geometry.page_size as u64);
        Ok((end + 1, zeroed))
    }

    fn pragma(&self, name: &str) -> Result<u64, EmbeddedError> {
        let n: i64 = self
            .conn
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(EmbeddedError::sqlite("cannot read the file's size"))?;
        from_sql(name, n)
    }
}

/// Upserts the stream's lifecycle row: the rules' state as `row` says, `erased_through`
/// never lowered (only a scavenge or an import raises it).
pub(super) fn write_lifecycle_row(
    conn: &rusqlite::Connection,
    stream: &StreamName,
    row: &LifecycleRow,
    context: &'static str,
) -> Result<(), EmbeddedError> {
    let l = row.lifecycle;
    let m = l.metadata;
    let opt = |v: Option<u64>| v.map(to_sql).transpose();
    conn.execute(
        "INSERT INTO stream_lifecycle (name, deleted_through, tombstoned, max_count, max_age_seconds, truncate_before, erased_through)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (name) DO UPDATE SET deleted_through = excluded.deleted_through,
             tombstoned = excluded.tombstoned, max_count = excluded.max_count,
             max_age_seconds = excluded.max_age_seconds, truncate_before = excluded.truncate_before,
             erased_through = max(erased_through, excluded.erased_through)",
        (
            stream.as_str(),
            to_sql(l.deleted_through.get())?,
            i64::from(l.tombstoned),
            opt(m.max_count)?,
            opt(m.max_age_seconds)?,
            opt(m.truncate_before.map(Version::get))?,
            to_sql(row.erased_through)?,
        ),
    )
    .map_err(EmbeddedError::sqlite(context))?;
    Ok(())
}
