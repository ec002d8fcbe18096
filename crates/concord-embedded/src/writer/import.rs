//! Importing events recorded by another store (`EventStore::import`, what `concord copy`
//! writes with), done by the writer between batches like a lifecycle operation: core's
//! rules against the committed state, one transaction with the rows as they are, a sync,
//! then the writer's state (head, stream versions, stream index, tails) moves as after a
//! batch of appends, and the head signal wakes readers.
//!
//! Holes in positions (the events a source's scavenge erased) are counted in
//! `scavenge_state.import_holes`, and a stream started above version 1 gets an
//! `import_floors` row (where its stream index starts) and a lifecycle row whose
//! `erased_through` is the version before its first (what readers go by), all in the
//! import's transaction: recovery checks every position and every stream index against
//! them (format 6).

use concord_core::{
    InvalidInput, Position, RecordedEvent, StoreError, StreamName, StreamPast, Version,
    plan_head_import, plan_import, plan_past_import, plan_stream_import,
};
use foldhash::{HashMap, HashMapExt};

use super::lifecycle::write_lifecycle_row;
use super::{LifecycleAnswer, Writer, id_version, in_transaction};
use crate::deferred_index::Entry;
use crate::error::{EmbeddedError, to_sql};
use crate::schema::{LifecycleRow, StreamState};

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
        let mut floors = Vec::new();
        for import in &streams {
            let state = self.streams.get(&import.stream).copied();
            let last = Version(state.map_or(0, |s| s.version));
            let row = self.lifecycle(&import.stream);
            match plan_stream_import(import, last, &row.lifecycle) {
                Ok(None) => {}
                Ok(Some(erased)) => floors.push((import.stream.clone(), erased, row)),
                Err(refused) => return Ok(Err(refused)),
            }
        }
        for e in events {
            if let Some(state) = self.streams.get(&e.stream)
                && id_version(&self.conn, &self.index, e.id.as_uuid().as_bytes(), state.id)?
                    .is_some()
            {
                return Ok(Err(InvalidInput::new(
                    "events",
                    format!("event id {} is already in stream {}", e.id, e.stream),
                )
                .into()));
            }
        }
        let holes = end - self.head - events.len() as u64;
        // Named before the commit, as a lifecycle change is: reads of these streams go by
        // their rows from then on.
        if !floors.is_empty() {
            let mut names = self
                .lifecycle_names
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (stream, _, _) in &floors {
                names.insert(stream.clone());
            }
        }
        // Each stream's row id, by name: looked up once per event below.
        let write = |w: &mut Writer| -> Result<HashMap<StreamName, i64>, EmbeddedError> {
            w.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(EmbeddedError::sqlite(context))?;
            let mut ids = HashMap::with_capacity(streams.len());
            for import in &streams {
                let id = match w.streams.get(&import.stream) {
                    Some(s) => s.id,
                    None => w.insert_stream(&import.stream)?,
                };
                ids.insert(import.stream.clone(), id);
            }
            let id_of = |stream: &StreamName| {
                ids.get(stream).copied().ok_or_else(|| {
                    EmbeddedError::Corrupted(format!("the import lost the row id of {stream}"))
                })
            };
            let (mut insert_event, mut insert_tag) = super::row_statements(&w.conn)?;
            let mut tags = String::new();
            for e in events {
                let id = id_of(&e.stream)?;
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
            if holes > 0 {
                w.conn
                    .execute(
                        "UPDATE scavenge_state SET import_holes = import_holes + ?1 WHERE id = 1",
                        [to_sql(holes)?],
                    )
                    .map_err(EmbeddedError::sqlite(context))?;
            }
            for (stream, erased, _) in &floors {
                let id = id_of(stream)?;
                w.conn
                    .execute(
                        "INSERT INTO import_floors (stream_id, floor) VALUES (?1, ?2)",
                        (id, to_sql(erased.get())?),
                    )
                    .map_err(EmbeddedError::sqlite(context))?;
                w.conn
                    .execute(
                        "INSERT INTO stream_lifecycle (name, deleted_through, tombstoned, max_count, max_age_seconds, truncate_before, erased_through)
                         VALUES (?1, 0, 0, NULL, NULL, NULL, ?2)
                         ON CONFLICT (name) DO UPDATE SET erased_through = max(erased_through, excluded.erased_through)",
                        (stream.as_str(), to_sql(erased.get())?),
                    )
                    .map_err(EmbeddedError::sqlite(context))?;
            }
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
        for import in &streams {
            if let Some(&id) = ids.get(&import.stream) {
                self.streams.insert(
                    import.stream.clone(),
                    StreamState {
                        id,
                        version: import.last.get(),
                    },
                );
            }
        }
        for e in events {
            if let Some(&id) = ids.get(&e.stream) {
                let category = e.stream.category();
                self.index.record([Entry {
                    stream_id: id,
                    version: e.version.get(),
                    position: e.position.get(),
                    event_id: *e.id.as_uuid().as_bytes(),
                    event_type: e.event_type.as_str(),
                    category: category.as_str(),
                }]);
                if self.tails.is_watched(id) {
                    self.tails.push(id, e.clone());
                }
            }
        }
        for (stream, erased, row) in floors {
            self.lifecycles.insert(
                stream,
                crate::schema::LifecycleRow {
                    erased_through: row.erased_through.max(erased.get()),
                    ..row
                },
            );
        }
        self.publish_synced_head(end);
        let bytes = events
            .iter()
            .map(|e| (e.data.len() + e.metadata.len()) as u64)
            .sum();
        self.uncheckpointed.add_commit(events.len() as u64, bytes);
        if self.index.unflushed() >= self.index_flush_events {
            self.flush_indexes();
        }
        Ok(Ok(LifecycleAnswer::Done))
    }
}

impl Writer {
    pub(super) fn import_past(&mut self, past: &StreamPast) -> Answer {
        let stream = &past.stream;
        let state = self.streams.get(stream).copied();
        let last = Version(state.map_or(0, |s| s.version));
        let row = self.lifecycle(stream);
        let plan = match plan_past_import(past, last, &row.lifecycle) {
            Ok(plan) => plan,
            Err(refused) => return Ok(Err(refused)),
        };
        let next = LifecycleRow {
            lifecycle: plan.lifecycle,
            erased_through: plan
                .erased_through
                .map_or(row.erased_through, |v| row.erased_through.max(v.get())),
        };
        if plan.erased_through.is_none() && next == row {
            return Ok(Ok(LifecycleAnswer::Done));
        }
        self.name_lifecycle(stream);
        let context = "cannot import a stream's past";
        let created = in_transaction(&self.conn, context, |conn| {
            let created = match plan.erased_through {
                Some(floor) => {
                    let id = self.insert_stream(stream)?;
                    conn.execute(
                        "INSERT INTO import_floors (stream_id, floor) VALUES (?1, ?2)",
                        (id, to_sql(floor.get())?),
                    )
                    .map_err(EmbeddedError::sqlite(context))?;
                    Some((id, floor.get()))
                }
                None => None,
            };
            write_lifecycle_row(conn, stream, &next, context)?;
            Ok(created)
        })?;
        self.sync_now()?;
        if let Some((id, version)) = created {
            self.streams
                .insert(stream.clone(), StreamState { id, version });
        }
        self.lifecycles.insert(stream.clone(), next);
        Ok(Ok(LifecycleAnswer::Done))
    }

    pub(super) fn import_head(&mut self, to: Position) -> Answer {
        let to = match plan_head_import(Position(self.head), to) {
            Ok(Some(to)) => to.get(),
            Ok(None) => return Ok(Ok(LifecycleAnswer::Done)),
            Err(refused) => return Ok(Err(refused)),
        };
        let context = "cannot raise the head";
        let holes = to - self.head;
        in_transaction(&self.conn, context, |conn| {
            conn.execute(
                "UPDATE scavenge_state SET import_holes = import_holes + ?1, head = max(head, ?2) WHERE id = 1",
                (to_sql(holes)?, to_sql(to)?),
            )
            .map_err(EmbeddedError::sqlite(context))?;
            Ok(())
        })?;
        self.sync_now()?;
        self.publish_synced_head(to);
        Ok(Ok(LifecycleAnswer::Done))
    }
}
