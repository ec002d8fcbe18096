//! Importing events recorded by another store (`EventStore::import`, what `concord copy`
//! writes with): one transaction that takes the same locks as the writer, in the same
//! order (the streams' advisory locks in key order, then the head row), checks the batch
//! with core's rules against what is stored, and writes the rows as they are with the
//! writer's own statement. So an import and the appends of any process on the database
//! serialise as two batches would, and positions stay visible in order.

use concord_core::{
    Position, RecordedEvent, StoreError, StreamImport, Version, plan_import, plan_stream_import,
};

use crate::PostgresStore;
use crate::lifecycle::stored;
use crate::rows::bound;
use crate::writer::{LOCK_STREAMS_SQL, insert_rows, lock_keys};

impl PostgresStore {
    pub(crate) async fn import_events(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let end = last.position;
        // Checked alone first (no round trip for a batch that breaks a rule on its own).
        let streams = plan_import(&events, Position(0), self.limits())?;
        let s = self.schema();
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(|e| self.db(e))?;
        let keys = lock_keys(s, streams.iter().map(|i| i.stream.as_str()));
        tx.execute(LOCK_STREAMS_SQL, &[&keys])
            .await
            .map_err(|e| self.db(e))?;
        let head: i64 = tx
            .query_one(
                &format!("SELECT position FROM {s}.concord_head WHERE id = 1 FOR UPDATE"),
                &[],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.db(e))?;
        plan_import(
            &events,
            Position(u64::try_from(head).unwrap_or(0)),
            self.limits(),
        )?;
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
        insert_rows(&tx, s, &format!("concord_{s}"), &events, end)
            .await
            .map_err(|e| self.db(e))?;
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
        tx.commit().await.map_err(|e| self.db(e))?;
        self.signal().advance(end);
        Ok(())
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
