//! Stream lifecycle on PostgreSQL: soft deletes, tombstones, retention settings and the
//! scavenge that erases what they hide.
//!
//! The state is six columns of the stream's `concord_streams` row (format 2), beside the
//! last version ever written (`version`, never lowered, so a version is never reused). It
//! changes only in a transaction holding the stream's advisory lock, the same lock the
//! writer takes before it reads a stream's state, so a delete, a metadata change or a
//! scavenge chunk falls entirely before or entirely after any append to that stream, in
//! every process. The rules over the state are core's ([`StreamLifecycle`]); here they
//! become SQL bounds (the first version kept, the oldest time kept). See
//! `docs/design/postgres-layout.md` ("Stream lifecycle").

use concord_core::{
    Conflict, DeleteMode, DeletePlan, ExpectedVersion, MetadataChange, RecordedAt, RecordedEvent,
    ScavengeReport, StoreError, StreamLifecycle, StreamMetadata, StreamName, Version, plan_delete,
};
use tokio_postgres::Row;

use crate::rows::{COLUMNS, bound, corrupted_in as corrupted, count_in as count, decode};
use crate::store::PostgresStore;
use crate::writer::lock_key;

/// The `concord_stream_state` columns [`Stored::decode`] reads, in order.
pub(crate) const LIFECYCLE_COLUMNS: &str = "version, deleted_through, tombstoned, max_count, \
     max_age_seconds, truncate_before, erased_through";

/// Events one scavenge transaction erases at most: the stream's lock is held for one
/// chunk, so appends to it wait for one chunk, not for the whole stream.
const SCAVENGE_CHUNK: i64 = 1000;

/// Streams one scavenge lists per query while looking for work.
const SCAVENGE_STREAMS_PAGE: i64 = 1000;

/// A stream's row: the last version ever written, core's lifecycle state, and how far a
/// scavenge erased it (every version up to `erased_through` is gone).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Stored {
    pub(crate) last: Version,
    pub(crate) lifecycle: StreamLifecycle,
    pub(crate) erased_through: Version,
}

impl Stored {
    /// Decodes [`LIFECYCLE_COLUMNS`] starting at column `at`.
    pub(crate) fn decode(row: &Row, at: usize) -> Result<Self, StoreError> {
        let int = |i: usize, what: &str| -> Result<i64, StoreError> {
            row.try_get::<_, i64>(at + i)
                .map_err(|e| corrupted("concord_streams", what, e))
        };
        let setting = |i: usize, what: &str| -> Result<Option<u64>, StoreError> {
            row.try_get::<_, Option<i64>>(at + i)
                .map_err(|e| corrupted("concord_streams", what, e))?
                .map(|n| count("concord_streams", what, n))
                .transpose()
        };
        let tombstoned: bool = row
            .try_get(at + 2)
            .map_err(|e| corrupted("concord_streams", "tombstoned", e))?;
        Ok(Stored {
            last: Version(count("concord_streams", "version", int(0, "version")?)?),
            lifecycle: StreamLifecycle {
                deleted_through: Version(count(
                    "concord_streams",
                    "deleted_through",
                    int(1, "deleted_through")?,
                )?),
                tombstoned,
                metadata: StreamMetadata {
                    max_count: setting(3, "max_count")?,
                    max_age_seconds: setting(4, "max_age_seconds")?,
                    truncate_before: setting(5, "truncate_before")?.map(Version),
                },
            },
            erased_through: Version(count(
                "concord_streams",
                "erased_through",
                int(6, "erased_through")?,
            )?),
        })
    }

    /// The version expectations are checked against (0 while soft-deleted).
    pub(crate) fn visible_version(&self) -> Version {
        self.lifecycle.visible_version(self.last)
    }

    /// The first version reads show and the table still holds: events before it are hidden
    /// (by a delete or retention) or erased, and are neither read nor concurrent events.
    pub(crate) fn floor(&self) -> Version {
        self.lifecycle
            .first_kept(self.last)
            .max(self.erased_through.next())
    }

    /// The oldest `recorded_at` (ms) reads show at `now`: the bound of `max_age`.
    pub(crate) fn oldest_kept(&self, now: RecordedAt) -> i64 {
        self.lifecycle
            .oldest_kept(now)
            .map_or(i64::MIN, |t| bound(t.as_millis()))
    }

    /// Refuses with `StreamDeleted` when the stream is tombstoned.
    pub(crate) fn check_not_tombstoned(&self, stream: &StreamName) -> Result<(), StoreError> {
        self.lifecycle.check_not_tombstoned(stream)
    }
}

/// The events reads show of one stream, `from ≤ version ≤ to`, forward, at most `limit`:
/// the SQL every visible-events read uses (reads, conflicts, rebases).
pub(crate) fn forward_sql(schema: &str) -> String {
    format!(
        "SELECT {COLUMNS} FROM {schema}.concord_events WHERE stream = $1 AND version >= $2 \
         AND version <= $3 AND recorded_at >= $4 ORDER BY version LIMIT $5"
    )
}

/// As [`forward_sql`], backward (`$2` the upper bound, `$3` the lower).
pub(crate) fn backward_sql(schema: &str) -> String {
    format!(
        "SELECT {COLUMNS} FROM {schema}.concord_events WHERE stream = $1 AND version <= $2 \
         AND version >= $3 AND recorded_at >= $4 ORDER BY version DESC LIMIT $5"
    )
}

/// The SQL of one stream's row (`$1` the stream), as the writer and lifecycle changes see
/// it under the stream's lock (every committed event).
pub(crate) fn stored_sql(schema: &str) -> String {
    state_sql(schema, crate::schema::STREAM_STATE)
}

/// As [`stored_sql`], as readers see it: as of the durable head (ADR 0004).
pub(crate) fn durable_stored_sql(schema: &str) -> String {
    state_sql(schema, crate::schema::STREAM_DURABLE)
}

fn state_sql(schema: &str, view: &str) -> String {
    format!("SELECT {LIFECYCLE_COLUMNS} FROM {schema}.{view} WHERE stream = $1")
}

/// The stream's row, read in `client`'s current snapshot.
pub(crate) async fn stored<C: tokio_postgres::GenericClient + Sync>(
    client: &C,
    schema: &str,
    stream: &StreamName,
) -> Result<Result<Option<Stored>, StoreError>, tokio_postgres::Error> {
    let row = client
        .query_opt(&stored_sql(schema), &[&stream.as_str()])
        .await?;
    Ok(row.map(|r| Stored::decode(&r, 0)).transpose())
}

/// Takes the stream's advisory lock (the writer's) for the rest of `tx`.
async fn lock_stream(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    stream: &StreamName,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(schema, stream.as_str())],
    )
    .await
    .map(drop)
}

impl PostgresStore {
    /// A soft delete or a tombstone, decided by core's `plan_delete` under the stream's lock.
    pub(crate) async fn delete(
        &self,
        stream: &StreamName,
        mode: DeleteMode,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        let s = self.schema();
        let mut client = self.client().await?;
        let tx = self.read_committed(&mut client).await?;
        lock_stream(&tx, s, stream).await.map_err(|e| self.db(e))?;
        let stored = stored(&*tx, s, stream)
            .await
            .map_err(|e| self.db(e))??
            .unwrap_or_default();
        match plan_delete(stream, mode, expected, stored.last, stored.lifecycle)? {
            DeletePlan::Delete(next) => {
                // A stream that never had an event may be tombstoned (KurrentDB allows it):
                // its row is made then, as retention settings make one.
                let updated = tx
                    .execute(
                        &format!(
                            "INSERT INTO {s}.concord_streams (stream, version, last_position, \
                             deleted_through, tombstoned) VALUES ($1, 0, 0, $2, $3) \
                             ON CONFLICT (stream) DO UPDATE SET \
                             deleted_through = excluded.deleted_through, \
                             tombstoned = excluded.tombstoned"
                        ),
                        &[
                            &stream.as_str(),
                            &bound(next.deleted_through.get()),
                            &next.tombstoned,
                        ],
                    )
                    .await
                    .map_err(|e| self.db(e))?;
                if updated != 1 {
                    return Err(StoreError::Corrupted(format!(
                        "concord_streams could not take the deletion of {stream}"
                    )));
                }
                tx.commit().await.map_err(|e| self.db(e))?;
                // This process's stream subscriptions read again at once (other nodes'
                // within the bounded wait of `wait_for_head`).
                self.signal().touch();
                Ok(())
            }
            DeletePlan::Conflict {
                actual,
                first_concurrent,
            } => {
                // Read under the stream's lock: exactly what the caller missed. Nothing is
                // written.
                let concurrent_events = match first_concurrent.map(|f| f.max(stored.floor())) {
                    None => Vec::new(),
                    Some(first) => {
                        let rows = tx
                            .query(
                                &forward_sql(s),
                                &[
                                    &stream.as_str(),
                                    &bound(first.get()),
                                    &bound(stored.last.get()),
                                    &stored.oldest_kept(RecordedAt::now()),
                                    &bound(self.limits().concurrent_events_max as u64),
                                ],
                            )
                            .await
                            .map_err(|e| self.db(e))?;
                        decode_all(&rows)?
                    }
                };
                let truncated =
                    first_concurrent
                        .map(|f| f.max(stored.floor()))
                        .is_some_and(|first| {
                            first.get() + concurrent_events.len() as u64 <= actual.get()
                        });
                // They may be a batch's not yet durable (ADR 0004): answered after a mark, as
                // the writer answers its conflicts. The transaction wrote nothing.
                tx.commit().await.map_err(|e| self.db(e))?;
                crate::schema::mark(&**client, s)
                    .await
                    .map_err(|e| self.db(e))?;
                Err(StoreError::conflict(Conflict {
                    stream: stream.clone(),
                    expected: ExpectedVersion::Exact(expected.unwrap_or_default()),
                    actual,
                    concurrent_events,
                    truncated,
                }))
            }
        }
    }

    /// The stream's stored lifecycle (the default when it has no row).
    pub(crate) async fn lifecycle(
        &self,
        stream: &StreamName,
    ) -> Result<StreamLifecycle, StoreError> {
        let client = self.client().await?;
        let stored = stored(&**client, self.schema(), stream)
            .await
            .map_err(|e| self.db(e))??;
        Ok(stored.map(|st| st.lifecycle).unwrap_or_default())
    }

    pub(crate) async fn metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError> {
        let client = self.client().await?;
        match stored(&**client, self.schema(), stream)
            .await
            .map_err(|e| self.db(e))??
        {
            None => Ok(StreamMetadata::NONE),
            Some(st) => {
                st.check_not_tombstoned(stream)?;
                Ok(st.lifecycle.metadata)
            }
        }
    }

    /// Stores retention settings under the stream's lock; a stream without events gets a
    /// row at version 0 (listings and expectations see no stream).
    /// Reads the stored settings and writes the changed ones under the stream's lock, so
    /// concurrent changes (from any node) apply one after the other.
    pub(crate) async fn change_metadata(
        &self,
        stream: &StreamName,
        change: MetadataChange,
    ) -> Result<StreamMetadata, StoreError> {
        change.validate()?;
        let s = self.schema();
        let mut client = self.client().await?;
        let tx = self.read_committed(&mut client).await?;
        lock_stream(&tx, s, stream).await.map_err(|e| self.db(e))?;
        let mut current = StreamMetadata::NONE;
        if let Some(st) = stored(&*tx, s, stream).await.map_err(|e| self.db(e))?? {
            st.check_not_tombstoned(stream)?;
            current = st.lifecycle.metadata;
        }
        let metadata = change.apply(current);
        let setting = |v: Option<u64>| v.map(bound);
        tx.execute(
            &format!(
                "INSERT INTO {s}.concord_streams (stream, version, last_position, max_count, \
                 max_age_seconds, truncate_before) VALUES ($1, 0, 0, $2, $3, $4) \
                 ON CONFLICT (stream) DO UPDATE SET max_count = excluded.max_count, \
                 max_age_seconds = excluded.max_age_seconds, \
                 truncate_before = excluded.truncate_before"
            ),
            &[
                &stream.as_str(),
                &setting(metadata.max_count),
                &setting(metadata.max_age_seconds),
                &setting(metadata.truncate_before.map(Version::get)),
            ],
        )
        .await
        .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(metadata)
    }

    /// Erases, stream by stream and at most [`SCAVENGE_CHUNK`] events per transaction,
    /// every event that reads no longer show. Rows are deleted; their bytes leave the
    /// table's pages when (auto)vacuum reclaims them (see the design doc), so the report
    /// says 0 bytes reclaimed.
    pub(crate) async fn run_scavenge(&self) -> Result<ScavengeReport, StoreError> {
        let s = self.schema();
        // One clock for the whole scavenge: `max_age` erases what was old at its start.
        let now = RecordedAt::now();
        let mut report = ScavengeReport::default();
        let mut after: Option<String> = None;
        loop {
            let streams: Vec<String> = {
                let client = self.client().await?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT stream FROM {s}.concord_streams WHERE ({}) \
                             AND ($1::text IS NULL OR stream > $1) ORDER BY stream LIMIT $2",
                            scavenge_candidates()
                        ),
                        &[&after, &SCAVENGE_STREAMS_PAGE],
                    )
                    .await
                    .map_err(|e| self.db(e))?;
                rows.iter()
                    .map(|r| r.try_get(0).map_err(|e| self.db(e)))
                    .collect::<Result<_, _>>()?
            };
            let Some(last) = streams.last().cloned() else {
                return Ok(report);
            };
            for name in &streams {
                let stream = StreamName::stored(name.as_str())
                    .map_err(|e| corrupted("concord_streams", "stream", e))?;
                let removed = self.scavenge_stream(&stream, now).await?;
                if removed > 0 {
                    report.events_removed += removed;
                    report.streams_scavenged += 1;
                }
            }
            after = Some(last);
        }
    }

    /// Erases what reads of `stream` no longer show, a chunk per transaction, under the
    /// stream's lock; returns how many events it erased.
    async fn scavenge_stream(
        &self,
        stream: &StreamName,
        now: RecordedAt,
    ) -> Result<u64, StoreError> {
        let s = self.schema();
        let mut removed = 0u64;
        loop {
            let mut client = self.client().await?;
            let tx = self.read_committed(&mut client).await?;
            lock_stream(&tx, s, stream).await.map_err(|e| self.db(e))?;
            let Some(st) = stored(&*tx, s, stream).await.map_err(|e| self.db(e))?? else {
                return Ok(removed);
            };
            // Everything before `below`, and everything older than `oldest`, is hidden
            // (`StreamLifecycle::keeps`); a tombstone hides every version.
            let below = if st.lifecycle.tombstoned {
                st.last.next()
            } else {
                st.lifecycle.first_kept(st.last)
            };
            let oldest = st.oldest_kept(now);
            // Appends do not move the stream's row or the head row: the last version and
            // position are read off the log. Erasing the stream's last events (or the log's)
            // moves them into the rows first, in the same statement, so that neither a
            // version nor a position is ever granted again.
            let erased = tx
                .query_one(
                    &format!(
                        "WITH gone AS (DELETE FROM {s}.concord_events WHERE position IN (\
                           SELECT position FROM {s}.concord_events WHERE stream = $1 \
                           AND (version < $2 OR recorded_at < $3) ORDER BY version LIMIT $4) \
                           RETURNING version, position), \
                         top AS (SELECT version, position FROM gone ORDER BY version DESC LIMIT 1), \
                         stream AS (UPDATE {s}.concord_streams r SET version = top.version, \
                           last_position = top.position FROM top \
                           WHERE r.stream = $1 AND r.version < top.version), \
                         head AS (UPDATE {s}.concord_head h SET position = top.position FROM top \
                           WHERE h.id = 1 AND h.position < top.position) \
                         SELECT count(*) FROM gone"
                    ),
                    &[
                        &stream.as_str(),
                        &bound(below.get()),
                        &oldest,
                        &SCAVENGE_CHUNK,
                    ],
                )
                .await
                .and_then(|row| row.try_get::<_, i64>(0))
                .map_err(|e| self.db(e))?;
            let erased = u64::try_from(erased).unwrap_or(0);
            if erased > 0 {
                // How far the stream is erased: versions 1..=last were all written, so the
                // first one left says it (none left: all of them).
                tx.execute(
                    &format!(
                        "UPDATE {s}.concord_streams SET erased_through = COALESCE(\
                         (SELECT min(version) - 1 FROM {s}.concord_events WHERE stream = $1), \
                         version) WHERE stream = $1"
                    ),
                    &[&stream.as_str()],
                )
                .await
                .map_err(|e| self.db(e))?;
            }
            tx.commit().await.map_err(|e| self.db(e))?;
            removed += erased;
            if erased < SCAVENGE_CHUNK as u64 {
                return Ok(removed);
            }
        }
    }
}

/// The streams a scavenge may find work in (the predicate of the partial index
/// `concord_streams_lifecycle` since format 3, so the search reads that index only). It
/// names no column an append changes (`version`, `last_position`), so that an append's
/// update of the stream row stays a HOT update.
pub(crate) fn scavenge_candidates() -> &'static str {
    "deleted_through > erased_through OR tombstoned \
     OR max_count IS NOT NULL OR max_age_seconds IS NOT NULL OR truncate_before IS NOT NULL"
}

/// The `RecordedEvent`s of `rows`, or the first row that does not decode.
pub(crate) fn decode_all(rows: &[Row]) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.iter().map(decode).collect()
}
