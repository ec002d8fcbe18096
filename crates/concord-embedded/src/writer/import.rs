//! Importing events recorded by another store (`EventStore::import`, what `concord copy`
//! writes with), done by the writer between batches like a lifecycle operation: core's
//! rules against the committed state, one transaction with the rows as they are, a sync,
//! then the writer's state (head, stream versions, stream index, tails) moves as after a
//! batch of appends, and the head signal wakes readers.
//!
//! What the embedded store cannot take yet, it refuses with the reason: holes in positions
//! (the events a source's scavenge erased) and a stream whose first versions the source
//! erased. Recovery counts on every position being an event or an erased event whose
//! stream index entry is kept, and on each stream's index starting at version 1; an import
//! of either needs a format that records them (noted in `docs/design/embedded-store.md`).

use concord_core::{
    InvalidInput, Position, RecordedEvent, StoreError, Version, plan_import, plan_stream_import,
};
use rusqlite::OptionalExtension;

use super::{LifecycleAnswer, Writer};
use crate::error::{EmbeddedError, to_sql};
use crate::schema::StreamState;

type Answer = Result<Result<LifecycleAnswer, StoreError>, EmbeddedError>;

impl Writer {
    pub(super) fn import(&mut self, events: &[RecordedEvent]) -> Answer {
        let streams = match plan_import(events, Position(self.head), &self.limits) {
            Ok(s) => s,
            Err(refused) => return Ok(Err(refused)),
        };
        let Some(end) = events.last().map(|e| e.position.get()) else {
            return Ok(Ok(LifecycleAnswer::Done));
        };
        let context = "cannot import events";
        for import in &streams {
            let state = self.streams.get(&import.stream).copied();
            let last = Version(state.map_or(0, |s| s.version));
            let row = self.lifecycle(&import.stream);
            match plan_stream_import(import, last, &row.lifecycle) {
                Ok(None) => {}
                Ok(Some(erased)) => {
                    return Ok(Err(InvalidInput::new(
                        "events",
                        format!(
                            "stream {} starts at version {} in the import: the embedded store cannot take a stream whose first {erased} versions were erased elsewhere (import into PostgreSQL, or scavenge nothing of it in the source)",
                            import.stream, import.first
                        ),
                    )
                    .into()));
                }
                Err(refused) => return Ok(Err(refused)),
            }
        }
        {
            let mut taken = self
                .conn
                .prepare_cached("SELECT 1 FROM events WHERE stream_id = ?1 AND event_id = ?2")
                .map_err(EmbeddedError::sqlite(context))?;
            for e in events {
                if let Some(state) = self.streams.get(&e.stream)
                    && taken
                        .query_row((state.id, e.id.as_uuid().as_bytes()), |_| Ok(()))
                        .optional()
                        .map_err(EmbeddedError::sqlite(context))?
                        .is_some()
                {
                    return Ok(Err(InvalidInput::new(
                        "events",
                        format!("event id {} is already in stream {}", e.id, e.stream),
                    )
                    .into()));
                }
            }
        }
        let holes = end - self.head - events.len() as u64;
        if holes > 0 {
            return Ok(Err(InvalidInput::new(
                "events",
                format!(
                    "the import leaves {holes} positions between {} and {end} without an event: the embedded store takes only a copy without holes (a source whose scavenge erased events can be copied into PostgreSQL)",
                    self.head
                ),
            )
            .into()));
        }
        let write = |w: &mut Writer| -> Result<Vec<(i64, StreamState)>, EmbeddedError> {
            w.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(EmbeddedError::sqlite(context))?;
            let mut ids = Vec::with_capacity(streams.len());
            for import in &streams {
                let id = match w.streams.get(&import.stream) {
                    Some(s) => s.id,
                    None => w.insert_stream(&import.stream)?,
                };
                ids.push((
                    id,
                    StreamState {
                        id,
                        version: import.last.get(),
                    },
                ));
            }
            let (mut insert_event, mut insert_tag) = super::row_statements(&w.conn)?;
            let mut tags = String::new();
            for e in events {
                let id = streams
                    .iter()
                    .zip(&ids)
                    .find(|(i, _)| i.stream == e.stream)
                    .map_or(0, |(_, (id, _))| *id);
                super::insert_row(
                    &mut insert_event,
                    &mut insert_tag,
                    &super::EventRow {
                        position: e.position.get(),
                        stream_id: id,
                        version: e.version.get(),
                        id: &e.id,
                        event_type: &e.event_type,
                        category: e.stream.category().as_str(),
                        data: &e.data,
                        metadata: &e.metadata,
                        tags: &e.tags,
                        recorded_at: to_sql(e.recorded_at.as_millis())?,
                    },
                    &mut tags,
                )?;
            }
            drop((insert_event, insert_tag));
            w.conn
                .execute_batch("COMMIT")
                .map_err(EmbeddedError::sqlite(context))?;
            Ok(ids)
        };
        let ids = match write(self) {
            Ok(ids) => ids,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        self.sync_now()?;
        for (import, (id, state)) in streams.iter().zip(ids) {
            self.streams.insert(import.stream.clone(), state);
            let mine = events.iter().filter(|e| e.stream == import.stream);
            for e in mine {
                self.index.record(id, e.version.get(), e.position.get(), 1);
                if self.tails.is_watched(id) {
                    self.tails.push(id, e.clone());
                }
            }
        }
        self.head = end;
        if let super::Acknowledge::Syncer(syncer) = &self.acknowledge {
            syncer
                .synced
                .fetch_max(end, std::sync::atomic::Ordering::AcqRel);
        }
        self.signal.advance(Position(end));
        let bytes = events
            .iter()
            .map(|e| (e.data.len() + e.metadata.len()) as u64)
            .sum();
        self.uncheckpointed.add_commit(events.len() as u64, bytes);
        if self.index.unflushed() >= self.index_flush_events {
            self.flush_stream_index();
        }
        Ok(Ok(LifecycleAnswer::Done))
    }
}
