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

use concord_core::{
    Conflict, DeleteMode, DeletePlan, ExpectedVersion, RecordedAt, ScavengeReport, StoreError,
    StreamLifecycle, StreamMetadata, StreamName, Version, plan_delete,
};
use rusqlite::OptionalExtension;

use super::{
    Acknowledge, LifecycleAnswer, LifecycleOp, SCAVENGE_CHUNK_EVENTS, Uncheckpointed, Writer,
};
use crate::error::{EmbeddedError, from_sql, to_sql};
use crate::schema::{LifecycleRow, TAG_SEPARATOR};

/// How many times a scavenge tries to truncate the write-ahead log while readers hold it.
const TRUNCATE_ATTEMPTS: u32 = 200;

type Answer = Result<Result<LifecycleAnswer, StoreError>, EmbeddedError>;

impl Writer {
    /// Does `op`: an `Err` is a failure of the store, an `Ok(Err)` a refusal.
    pub(super) fn lifecycle_op(&mut self, op: LifecycleOp) -> Answer {
        match op {
            LifecycleOp::Delete {
                stream,
                mode,
                expected,
            } => self.delete(&stream, mode, expected),
            LifecycleOp::SetMetadata { stream, metadata } => self.set_metadata(&stream, metadata),
            LifecycleOp::Scavenge => self.scavenge().map(|r| Ok(LifecycleAnswer::Scavenged(r))),
        }
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

    fn set_metadata(&mut self, stream: &StreamName, metadata: StreamMetadata) -> Answer {
        if let Err(invalid) = metadata.validate() {
            return Ok(Err(invalid));
        }
        let row = self.lifecycle(stream);
        if let Err(deleted) = row.lifecycle.check_not_tombstoned(stream) {
            return Ok(Err(deleted));
        }
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
        // Named before the commit: from then on reads of the stream are not split.
        self.lifecycle_names
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(stream.clone());
        let context = "cannot store a stream's lifecycle";
        let l = row.lifecycle;
        let m = l.metadata;
        let opt = |v: Option<u64>| v.map(to_sql).transpose();
        let write = |conn: &rusqlite::Connection| -> Result<(), EmbeddedError> {
            conn.execute_batch("BEGIN IMMEDIATE")
                .map_err(EmbeddedError::sqlite(context))?;
            conn.execute(
                "INSERT INTO stream_lifecycle (name, deleted_through, tombstoned, max_count, max_age_seconds, truncate_before, erased_through)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET deleted_through = excluded.deleted_through,
                     tombstoned = excluded.tombstoned, max_count = excluded.max_count,
                     max_age_seconds = excluded.max_age_seconds, truncate_before = excluded.truncate_before",
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
            conn.execute_batch("COMMIT")
                .map_err(EmbeddedError::sqlite(context))
        };
        if let Err(e) = write(&self.conn) {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        self.sync_now()?;
        self.lifecycles.insert(stream.clone(), row);
        Ok(())
    }

    /// Syncs the log now (when the store promises durability), poisoning it on failure
    /// as a failed batch sync does.
    fn sync_now(&mut self) -> Result<(), EmbeddedError> {
        if let Acknowledge::Syncer(syncer) = &mut self.acknowledge
            && let Err(e) = crate::syncer::sync_log(&syncer.wal, &mut syncer.fail_next)
        {
            let reason = crate::syncer::poison_after_failed_sync(&self.poison, &e);
            return Err(EmbeddedError::Poisoned(reason));
        }
        Ok(())
    }

    fn scavenge(&mut self) -> Result<ScavengeReport, EmbeddedError> {
        // Every erased event must be in the stream index table (recovery counts on it).
        self.flush_stream_index();
        if self.index.unflushed() > 0 {
            return Err(EmbeddedError::Busy(
                "cannot scavenge: the stream index could not be written; try again".into(),
            ));
        }
        let pages_before = self.pragma("page_count")?;
        let now = RecordedAt::now();
        let mut report = ScavengeReport::default();
        let mut names: Vec<StreamName> = self.lifecycles.keys().cloned().collect();
        names.sort();
        for stream in names {
            let Some(state) = self.streams.get(&stream).copied() else {
                continue;
            };
            let row = self.lifecycle(&stream);
            let last = Version(state.version);
            // Versions not written yet are not erased.
            let target = self.erase_below(state.id, row, last, now)?.min(last.next());
            let mut erased = 0;
            let mut row = row;
            while row.erased_through.saturating_add(1) < target.get() {
                let (n, through) =
                    self.erase_chunk(&stream, state.id, row.erased_through, target)?;
                erased += n;
                row.erased_through = through;
                self.lifecycles.insert(stream.clone(), row);
            }
            if erased > 0 {
                report.events_removed += erased;
                report.streams_scavenged += 1;
            }
        }
        // The tails may hold erased events.
        self.tails.clear();
        self.sync_now()?;
        self.truncate_log()?;
        self.conn
            .execute_batch("PRAGMA incremental_vacuum")
            .map_err(EmbeddedError::sqlite("cannot give freed pages back"))?;
        self.truncate_log()?;
        let pages_after = self.pragma("page_count")?;
        let page_size = self.pragma("page_size")?;
        report.bytes_reclaimed = pages_before.saturating_sub(pages_after) * page_size;
        tracing::info!(
            events_removed = report.events_removed,
            streams = report.streams_scavenged,
            bytes_reclaimed = report.bytes_reclaimed,
            "scavenge done"
        );
        Ok(report)
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
    /// `erased_through` and below `target`, in one transaction; returns how many and the
    /// new `erased_through`.
    fn erase_chunk(
        &mut self,
        stream: &StreamName,
        stream_id: i64,
        erased_through: u64,
        target: Version,
    ) -> Result<(u64, u64), EmbeddedError> {
        let context = "cannot erase events";
        let head = self.head;
        let erase = |conn: &rusqlite::Connection| -> Result<(u64, u64), EmbeddedError> {
            conn.execute_batch("BEGIN IMMEDIATE")
                .map_err(EmbeddedError::sqlite(context))?;
            let rows: Vec<(i64, i64, Option<String>)> = {
                let mut select = conn
                    .prepare_cached(
                        "SELECT i.version, i.position, e.tags FROM stream_index i
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
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
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
            let mut erased = 0u64;
            for (_, position, tags) in &rows {
                let Some(tags) = tags else { continue };
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
            conn.execute_batch("COMMIT")
                .map_err(EmbeddedError::sqlite(context))?;
            Ok((erased, through))
        };
        match erase(&self.conn) {
            Ok(done) => Ok(done),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
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

    fn pragma(&self, name: &str) -> Result<u64, EmbeddedError> {
        let n: i64 = self
            .conn
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(EmbeddedError::sqlite("cannot read the file's size"))?;
        from_sql(name, n)
    }
}
