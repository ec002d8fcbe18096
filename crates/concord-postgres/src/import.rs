//! Importing events recorded by another store (`EventStore::import`, what `concord copy`
//! writes with): one transaction that takes the same locks as the writer, in the same
//! order (the streams' advisory locks in key order, then the head lock), checks the batch
//! with core's rules against what is stored, and writes the rows as they are with the
//! writer's own statement. So an import and the appends of any process on the database
//! serialise as two batches would, and positions stay visible in order.
//!
//! A stream's past (`EventStore::import_stream_past`) is its `concord_streams` row, written
//! under the stream's lock: a stream without a row takes the past's last version with
//! `erased_through` at it, as a scavenge leaves a stream it erased whole. A raised head
//! (`EventStore::import_head`) is `concord_head` moved under the head lock, with the notification
//! an append sends, so every node's readers and followers see the holes as passed.

use concord_core::{
    Position, RecordedEvent, StoreError, StreamImport, StreamName, StreamPast, Version,
    plan_head_import, plan_import, plan_past_import, plan_stream_import,
};

use crate::PostgresStore;
use crate::lifecycle::{LIFECYCLE_COLUMNS, Stored, stored};
use crate::rows::bound;
use crate::writer::{LOCK_STREAMS_SQL, insert_rows, lock_keys};

impl PostgresStore {
    pub(crate) async fn import_events(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        // Checked alone first (no round trip for a batch that breaks a rule on its own).
        let streams = plan_import(&events, Position(0), self.limits())?;
        let s = self.schema();
        let mut client = self.client().await?;
        let tx = self.read_committed(&mut client).await?;
        let keys = lock_keys(s, streams.iter().map(|i| i.stream.as_str()));
        tx.execute(LOCK_STREAMS_SQL, &[&keys])
            .await
            .map_err(|e| self.db(e))?;
        let head = self.take_head(&tx).await?;
        plan_import(&events, head, self.limits())?;
        let mut erased: Vec<(&StreamImport, Version)> = Vec::new();
        for import in &streams {
            let row = stored(&*tx, s, &import.stream)
                .await
                .map_err(|e| self.db(e))??
                .unwrap_or_default();
            if let Some(through) = plan_stream_import(import, row.last, &row.lifecycle)? {
                erased.push((import, through));
            }
        }
        self.check_new_ids(&tx, &events).await?;
        insert_rows(&tx, s, &events).await.map_err(|e| self.db(e))?;
        // A stream the source had erased a prefix of starts above version 1: its row says
        // so, as a scavenge's would.
        for (import, through) in erased {
            tx.execute(
                &format!(
                    "UPDATE {s}.concord_streams SET erased_through = GREATEST(erased_through, $2) \
                     WHERE stream = $1"
                ),
                &[&import.stream.as_str(), &bound(through.get())],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        // Its mark, in its own transaction: committed synchronously, the import is durable
        // when readers see it.
        let durable = crate::schema::mark(&*tx, s).await.map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        // The mark covers the import's own events.
        self.signal().advance(durable);
        Ok(())
    }

    pub(crate) async fn import_past(&self, past: &StreamPast) -> Result<(), StoreError> {
        let s = self.schema();
        let stream = &past.stream;
        let mut client = self.client().await?;
        let tx = self.read_committed(&mut client).await?;
        tx.execute(
            LOCK_STREAMS_SQL,
            &[&lock_keys(s, [stream.as_str()].into_iter())],
        )
        .await
        .map_err(|e| self.db(e))?;
        let row = stored(&*tx, s, stream)
            .await
            .map_err(|e| self.db(e))??
            .unwrap_or_default();
        let plan = plan_past_import(past, row.last, &row.lifecycle)?;
        let l = plan.lifecycle;
        let setting = |v: Option<u64>| v.map(bound);
        tx.execute(
            &format!(
                "INSERT INTO {s}.concord_streams (stream, version, last_position, deleted_through, \
                 tombstoned, max_count, max_age_seconds, truncate_before, erased_through) \
                 VALUES ($1, $2, 0, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (stream) DO UPDATE SET version = GREATEST({s}.concord_streams.version, excluded.version), \
                 deleted_through = excluded.deleted_through, tombstoned = excluded.tombstoned, \
                 max_count = excluded.max_count, max_age_seconds = excluded.max_age_seconds, \
                 truncate_before = excluded.truncate_before, \
                 erased_through = GREATEST({s}.concord_streams.erased_through, excluded.erased_through)"
            ),
            &[
                &stream.as_str(),
                &bound(plan.erased_through.unwrap_or(row.last).get()),
                &bound(l.deleted_through.get()),
                &l.tombstoned,
                &setting(l.metadata.max_count),
                &setting(l.metadata.max_age_seconds),
                &setting(l.metadata.truncate_before.map(Version::get)),
                &bound(plan.erased_through.unwrap_or_default().get()),
            ],
        )
        .await
        .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        self.signal().touch();
        Ok(())
    }

    pub(crate) async fn raise_head(&self, to: Position) -> Result<(), StoreError> {
        let s = self.schema();
        let mut client = self.client().await?;
        let tx = self.read_committed(&mut client).await?;
        let head = self.take_head(&tx).await?;
        let Some(to) = plan_head_import(head, to)? else {
            return Ok(());
        };
        tx.execute(
            &format!("UPDATE {s}.concord_head SET position = $1 WHERE id = 1"),
            &[&bound(to.get())],
        )
        .await
        .map_err(|e| self.db(e))?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&crate::schema::channel(s), &to.get().to_string()],
        )
        .await
        .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        self.signal().advance(to);
        Ok(())
    }

    pub(crate) async fn stream_pasts(
        &self,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamPast>, StoreError> {
        let limit = bound(limit.clamp(1, self.limits().read_limit_max.max(1)) as u64);
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT stream, {LIFECYCLE_COLUMNS} FROM {}.{} \
                     WHERE ($1::text IS NULL OR stream > $1) ORDER BY stream LIMIT $2",
                    self.schema(),
                    crate::schema::STREAM_DURABLE
                ),
                &[&after.map(StreamName::as_str), &limit],
            )
            .await
            .map_err(|e| self.db(e))?;
        rows.iter()
            .map(|r| {
                let name: &str = r.try_get(0).map_err(|e| self.db(e))?;
                let stream = StreamName::stored(name)
                    .map_err(|e| StoreError::Corrupted(format!("concord_streams: {e}")))?;
                let row = Stored::decode(r, 1)?;
                Ok(StreamPast {
                    stream,
                    last: row.last,
                    lifecycle: row.lifecycle,
                })
            })
            .collect()
    }

    /// The head lock, held until `tx` ends (no process assigns positions meanwhile), and
    /// the head read once it is held.
    async fn take_head(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<Position, StoreError> {
        let s = self.schema();
        tx.batch_execute(&crate::schema::head_lock_sql(s))
            .await
            .map_err(|e| self.db(e))?;
        let head: i64 = tx
            .query_one(&crate::schema::head_sql(s), &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.db(e))?;
        Ok(Position(u64::try_from(head).unwrap_or(0)))
    }

    /// Refuses a batch with an event id its stream already holds.
    async fn check_new_ids(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        let s = self.schema();
        let streams: Vec<&str> = events.iter().map(|e| e.stream.as_str()).collect();
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| *e.id.as_uuid()).collect();
        let taken = tx
            .query_opt(
                &format!(
                    "SELECT e.stream, e.event_id FROM {s}.concord_events e \
                     JOIN unnest($1::text[], $2::uuid[]) AS x(st, id) \
                     ON e.stream = x.st AND e.event_id = x.id LIMIT 1"
                ),
                &[&streams, &ids],
            )
            .await
            .map_err(|e| self.db(e))?;
        match taken {
            None => Ok(()),
            Some(row) => {
                let stream: String = row.try_get(0).map_err(|e| self.db(e))?;
                let id: uuid::Uuid = row.try_get(1).map_err(|e| self.db(e))?;
                Err(concord_core::InvalidInput::new(
                    "events",
                    format!("event id {id} is already in stream {stream}"),
                )
                .into())
            }
        }
    }
}
