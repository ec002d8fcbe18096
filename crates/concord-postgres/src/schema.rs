//! The schema Concord creates in its own PostgreSQL schema, and its versioning.
//!
//! `concord_meta.format_version` says which layout a schema holds. Opening creates the
//! schema when it is missing, migrates an older one, and refuses a newer one by name, all
//! under a transaction-scoped advisory lock so that several processes opening at once do
//! not race. See `docs/design/postgres-layout.md`.

use concord_core::Position;

use crate::error::PostgresError;
use crate::writer::WriteFunction;

/// The layout this build writes: 2 added the stream lifecycle columns of
/// `concord_streams` (deletes, tombstones, retention settings, how far a scavenge erased);
/// 3 took `version` out of the predicate of the scavenge's partial index, so that an
/// append's update of its stream row is a HOT update (no new index entry per append); 4
/// stopped updating rows on append: positions are ordered by an advisory lock and the head
/// is the greater of `concord_head` and the log's last position, a stream's version the
/// greater of its row's and its last event's (the view `concord_stream_state`), so an
/// append writes new rows only and a long-held snapshot elsewhere leaves it no old row
/// versions to walk. A format-3 build would take the head row's lock and miss this one's
/// appends, so it must refuse the schema. 5 added the durable head (`concord_durable` and
/// the view `concord_stream_durable`): a batch commits without waiting for its WAL flush, and
/// readers see only what a mark says is durable (ADR 0004); a format-4 build would read past
/// the durable head. 6 made the tag index partial ([`TAGGED`]): an event without tags (most
/// events) adds no entry to it; a format-5 build's tag reads, which do not name the
/// predicate, could not use it. The write functions (`writer::WriteFunction`) are code,
/// not layout: each build adds its own.
pub const FORMAT_VERSION: i32 = 6;

/// The predicate of the tag index (format 6): only events with tags are in it. A read by tags
/// names it beside its `@>`, word for word, so that the planner can prove the index holds
/// every row it wants (it cannot see that `tags @> '{t}'` implies it). An event without
/// tags cost an entry in the pending list of a GIN index, an exclusive lock of its metapage
/// and a WAL record: +4 % for a lone writer without it (BENCHMARKS.md, issue 18).
pub(crate) const TAGGED: &str = "tags <> '{}'::text[]";

/// The view of each stream's state as readers and the writer see it: the row's lifecycle
/// columns, and as `version` / `last_position` those of its last event, or the row's when
/// they are greater (what a scavenge erased, or a stream without events). Appends do not
/// update the row; lifecycle changes and scavenges do.
pub(crate) const STREAM_STATE: &str = "concord_stream_state";

fn create_stream_state(s: &str) -> String {
    format!(
        "CREATE OR REPLACE VIEW {s}.{STREAM_STATE} AS \
         SELECT r.stream, GREATEST(r.version, COALESCE(l.version, 0)) AS version, \
           CASE WHEN l.version >= r.version THEN l.position ELSE r.last_position END AS last_position, \
           r.deleted_through, r.tombstoned, r.max_count, r.max_age_seconds, r.truncate_before, \
           r.erased_through \
         FROM {s}.concord_streams r LEFT JOIN LATERAL (SELECT e.version, e.position \
           FROM {s}.concord_events e WHERE e.stream = r.stream ORDER BY e.version DESC LIMIT 1) l \
         ON true;"
    )
}

/// Each stream's state as readers see it: [`STREAM_STATE`] as of the durable head (ADR
/// 0004), its last event the last one at or below it, and a row made by a batch not yet
/// durable (its `last_position` past the durable head) as no row's version. Lifecycle
/// columns are the row's: lifecycle changes commit synchronously.
pub(crate) const STREAM_DURABLE: &str = "concord_stream_durable";

fn create_stream_durable(s: &str) -> String {
    format!(
        "CREATE OR REPLACE VIEW {s}.{STREAM_DURABLE} AS \
         SELECT r.stream, \
           GREATEST(CASE WHEN r.last_position <= d.position THEN r.version ELSE 0 END, \
             COALESCE(l.version, 0)) AS version, \
           CASE WHEN r.last_position > d.position THEN COALESCE(l.position, 0) \
             WHEN l.version >= r.version THEN l.position ELSE r.last_position END AS last_position, \
           r.deleted_through, r.tombstoned, r.max_count, r.max_age_seconds, r.truncate_before, \
           r.erased_through \
         FROM (SELECT {durable} AS position FROM {s}.concord_head h WHERE h.id = 1) d \
         CROSS JOIN {s}.concord_streams r \
         LEFT JOIN LATERAL (SELECT e.version, e.position FROM {s}.concord_events e \
           WHERE e.stream = r.stream AND e.position <= d.position ORDER BY e.version DESC LIMIT 1) l \
         ON true;",
        durable = durable_head_of(s, "h")
    )
}

/// The durable head (ADR 0004): the greatest mark in `concord_durable`, or `concord_head`
/// where a synchronous commit moved it (a scavenge, an import). Every position at or below
/// it is committed, visible and flushed (and on a synchronous standby): what every reader,
/// `head` and subscription follows.
pub(crate) fn durable_head_sql(s: &str) -> String {
    format!(
        "SELECT {} FROM {s}.concord_head h WHERE h.id = 1",
        durable_head_of(s, "h")
    )
}

fn durable_head_of(s: &str, row: &str) -> String {
    format!(
        "GREATEST({row}.position, COALESCE((SELECT max(position) FROM {s}.concord_durable), 0))"
    )
}

/// The mark (ADR 0004), a statement of its own in autocommit, committed synchronously:
/// records the last position its snapshot sees and notifies channel `$1` with it, returning
/// it. Its commit record follows that of every batch its snapshot saw, so it is visible
/// (and answers) only once they are all flushed: it makes them durable to readers. An
/// insert, not an update or `ON CONFLICT DO NOTHING`: a transaction that writes no WAL
/// record commits without flushing.
pub(crate) fn mark_sql(s: &str) -> String {
    format!(
        "WITH m AS (INSERT INTO {s}.concord_durable (position) \
           SELECT {} FROM {s}.concord_head h WHERE h.id = 1 RETURNING position) \
         SELECT m.position FROM m, pg_notify($1::text, m.position::text) AS notified",
        head_of(s, "h")
    )
}

/// Runs the mark of schema `s` ([`mark_sql`]) on `client` and returns the durable head it
/// wrote: what a write outside the writer's batches (a store connecting, an import, a
/// refused delete) runs before it answers. (The writer runs its own prepared copy.)
pub(crate) async fn mark<C: tokio_postgres::GenericClient + Sync>(
    client: &C,
    s: &str,
) -> Result<Position, tokio_postgres::Error> {
    let row = client.query_one(&mark_sql(s), &[&channel(s)]).await?;
    let head: i64 = row.try_get(0)?;
    Ok(Position(u64::try_from(head).unwrap_or(0)))
}

/// The channel a mark notifies with the durable head it wrote (`pg_notify`), which every
/// store's listener follows.
pub(crate) fn channel(s: &str) -> String {
    format!("concord_{s}")
}

/// Removes the marks below the greatest one visible: readers read only the greatest.
pub(crate) fn prune_marks_sql(s: &str) -> String {
    format!(
        "DELETE FROM {s}.concord_durable \
         WHERE position < (SELECT max(position) FROM {s}.concord_durable)"
    )
}

/// The head: the last position assigned, durable or not (the writer's, and a scavenge's or
/// an import's under the head lock). Appends do not move `concord_head` (it holds
/// what the log no longer shows: a scavenge that erased the last events, an import's
/// holes), so the head is the greater of it and the log's last position.
pub(crate) fn head_sql(s: &str) -> String {
    format!(
        "SELECT {} FROM {s}.concord_head h WHERE h.id = 1",
        head_of(s, "h")
    )
}

/// The head as an expression over the `concord_head` row named `row` (the write statement
/// reads it so, relative positions added).
pub(crate) fn head_of(s: &str, row: &str) -> String {
    format!("GREATEST({row}.position, COALESCE((SELECT max(position) FROM {s}.concord_events), 0))")
}

/// The lock that orders position assignment across processes, held to the end of the
/// transaction (so the next holder starts after this one's commit is visible). Two 32-bit
/// keys: a space apart from the streams' 64-bit ones.
pub(crate) fn head_lock_sql(s: &str) -> String {
    format!("SELECT {}", head_lock(s))
}

/// The call that takes the head lock (`head_lock_sql`), as a PL/pgSQL function performs it.
pub(crate) fn head_lock(s: &str) -> String {
    let k = crate::writer::fnv1a(format!("concord-head\0{s}").bytes());
    let [a, b, c, d, e, f, g, h] = k.to_be_bytes();
    let (high, low) = (
        i32::from_be_bytes([a, b, c, d]),
        i32::from_be_bytes([e, f, g, h]),
    );
    format!("pg_advisory_xact_lock({high}, {low})")
}

/// The statements that create format 1 in schema `s`.
fn create_v1(s: &str) -> String {
    format!(
        r#"
CREATE TABLE {s}.concord_head (
    id       int PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL
);
INSERT INTO {s}.concord_head VALUES (1, 0);
CREATE TABLE {s}.concord_events (
    position     bigint PRIMARY KEY,
    stream       text COLLATE "C" NOT NULL,
    category     text COLLATE "C" NOT NULL,
    version      bigint NOT NULL,
    event_id     uuid NOT NULL,
    event_type   text COLLATE "C" NOT NULL,
    content_type text,
    data         bytea NOT NULL,
    metadata     text NOT NULL,
    tags         text[] NOT NULL,
    recorded_at  bigint NOT NULL,
    UNIQUE (stream, version),
    UNIQUE (stream, event_id)
);
CREATE INDEX concord_events_type ON {s}.concord_events (event_type, position);
CREATE INDEX concord_events_category ON {s}.concord_events (category, position);
CREATE INDEX concord_events_tags ON {s}.concord_events USING gin (tags);
CREATE TABLE {s}.concord_streams (
    stream        text COLLATE "C" PRIMARY KEY,
    version       bigint NOT NULL,
    last_position bigint NOT NULL
);
"#
    )
}

/// The statements that turn format 1 into format 2 in schema `s`. The partial index holds
/// the streams a scavenge may find work in; its predicate was the scavenge's search of
/// format 2 (format 3 replaces it with `lifecycle::scavenge_candidates`, word for word, so
/// the planner can use it). Every existing stream gets the default lifecycle (never
/// deleted, no retention, nothing erased); a row may now exist for a stream without events
/// (retention settings stored before its first append).
fn migrate_v1_to_v2(s: &str) -> String {
    format!(
        r#"
ALTER TABLE {s}.concord_streams
    ADD COLUMN deleted_through bigint NOT NULL DEFAULT 0,
    ADD COLUMN tombstoned      boolean NOT NULL DEFAULT false,
    ADD COLUMN max_count       bigint,
    ADD COLUMN max_age_seconds bigint,
    ADD COLUMN truncate_before bigint,
    ADD COLUMN erased_through  bigint NOT NULL DEFAULT 0;
CREATE INDEX concord_streams_lifecycle ON {s}.concord_streams (stream)
    WHERE deleted_through > erased_through OR (tombstoned AND erased_through < version)
       OR max_count IS NOT NULL OR max_age_seconds IS NOT NULL OR truncate_before IS NOT NULL;
"#
    )
}

/// The statements that turn format 2 into format 3 in schema `s`: the partial index again,
/// with every tombstoned stream in it rather than those not yet erased through their last
/// version. PostgreSQL updates a row in place (HOT, no new index entries) only when no
/// indexed column changes, and the columns of an index's predicate count; with `version`
/// in it, every append's update of its stream row added an entry to both indexes. The
/// scavenge now also visits tombstoned streams it has already erased (a lock, a read and
/// an empty `DELETE` each).
fn migrate_v2_to_v3(s: &str) -> String {
    format!(
        "DROP INDEX {s}.concord_streams_lifecycle;
CREATE INDEX concord_streams_lifecycle ON {s}.concord_streams (stream) WHERE {};",
        crate::lifecycle::scavenge_candidates()
    )
}

/// The statements that turn format 4 into format 5 in schema `s`: the marks, one at the
/// current head (everything a format-4 build wrote was committed synchronously), and the
/// readers' view.
fn migrate_v4_to_v5(s: &str) -> String {
    format!(
        "CREATE TABLE {s}.concord_durable (position bigint NOT NULL);
CREATE INDEX concord_durable_position ON {s}.concord_durable (position);
INSERT INTO {s}.concord_durable {};
{}",
        head_sql(s),
        create_stream_durable(s)
    )
}

/// The statements that turn format 5 into format 6 in schema `s`: the tag index again, with
/// only the events that have tags in it. Rebuilding it reads the whole log inside the
/// migration's transaction, which holds the log's table: reads and appends wait for it. An
/// operator can build it beforehand without stopping anything (`CREATE INDEX CONCURRENTLY`
/// under another name, then swap the names, `docs/design/postgres-layout.md`): a tag index
/// that already has the predicate is kept.
async fn migrate_v5_to_v6(
    tx: &tokio_postgres::Transaction<'_>,
    s: &str,
    from: Option<i32>,
) -> Result<(), tokio_postgres::Error> {
    let predicate: Option<String> = tx
        .query_opt(
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index \
             WHERE indexrelid = to_regclass($1)",
            &[&format!("{s}.concord_events_tags")],
        )
        .await?
        .and_then(|row| row.get(0));
    if predicate.as_deref() == Some(&format!("({TAGGED})")) {
        return Ok(());
    }
    // A schema being created has no log to read.
    if let Some(from) = from {
        tracing::info!(
            schema = s,
            "migrating the postgres schema from format {from} to 6: rebuilding the tag index \
             reads the whole log (reads and appends wait for it)"
        );
    }
    tx.batch_execute(&format!(
        "DROP INDEX IF EXISTS {s}.concord_events_tags;
CREATE INDEX concord_events_tags ON {s}.concord_events USING gin (tags) WHERE {TAGGED};"
    ))
    .await
}

/// Creates or migrates schema `s` to [`FORMAT_VERSION`], and adds each of `functions` that
/// is missing.
pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    s: &str,
    functions: &[WriteFunction],
) -> Result<(), PostgresError> {
    let err = |source| PostgresError::Migrate {
        schema: s.to_owned(),
        source,
    };
    let tx = client.transaction().await.map_err(err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('concord-migrate:' || $1::text, 0))",
        &[&s],
    )
    .await
    .map_err(err)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.concord_meta (
             id int PRIMARY KEY CHECK (id = 1),
             format_version int NOT NULL
         );"
    ))
    .await
    .map_err(err)?;
    let found: Option<i32> = tx
        .query_opt(
            &format!("SELECT format_version FROM {s}.concord_meta WHERE id = 1"),
            &[],
        )
        .await
        .map_err(err)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(err)?;
    match found {
        Some(v) if v > FORMAT_VERSION => {
            return Err(PostgresError::NewerSchema {
                schema: s.to_owned(),
                found: v,
                known: FORMAT_VERSION,
            });
        }
        Some(v) if v == FORMAT_VERSION => {}
        Some(v) => {
            // Each step in order, all in this transaction: a failure leaves format `v`.
            if v < 2 {
                tx.batch_execute(&migrate_v1_to_v2(s)).await.map_err(err)?;
            }
            if v < 3 {
                tx.batch_execute(&migrate_v2_to_v3(s)).await.map_err(err)?;
            }
            if v < 4 {
                tx.batch_execute(&create_stream_state(s))
                    .await
                    .map_err(err)?;
            }
            if v < 5 {
                tx.batch_execute(&migrate_v4_to_v5(s)).await.map_err(err)?;
            }
            if v < 6 {
                migrate_v5_to_v6(&tx, s, Some(v)).await.map_err(err)?;
            }
            tx.execute(
                &format!("UPDATE {s}.concord_meta SET format_version = $1 WHERE id = 1"),
                &[&FORMAT_VERSION],
            )
            .await
            .map_err(err)?;
        }
        None => {
            tx.batch_execute(&create_v1(s)).await.map_err(err)?;
            tx.batch_execute(&migrate_v1_to_v2(s)).await.map_err(err)?;
            tx.batch_execute(&migrate_v2_to_v3(s)).await.map_err(err)?;
            tx.batch_execute(&create_stream_state(s))
                .await
                .map_err(err)?;
            tx.batch_execute(&migrate_v4_to_v5(s)).await.map_err(err)?;
            migrate_v5_to_v6(&tx, s, None).await.map_err(err)?;
            tx.execute(
                &format!("INSERT INTO {s}.concord_meta VALUES (1, $1)"),
                &[&FORMAT_VERSION],
            )
            .await
            .map_err(err)?;
        }
    }
    // This build's write functions, under the same lock: a build that finds them skips the
    // catalog write.
    for function in functions {
        let present: bool = tx
            .query_one(
                "SELECT to_regprocedure($1) IS NOT NULL",
                &[&function.signature()],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(err)?;
        if !present {
            tx.batch_execute(&function.create).await.map_err(err)?;
        }
    }
    tx.commit().await.map_err(err)
}
