//! The statements that write a batch's rows, and the session they run on.
//!
//! A transaction's BEGIN and COMMIT ride in the same pipelined exchanges as its first and
//! last statements, so a batch costs the round trips its reads need and one more, and no
//! round trip of this process's falls between taking the head row and COMMIT (the head row
//! orders every process's commits; the time it is held bounds them all).

use std::collections::HashMap;

use concord_core::{Position, RecordedEvent};
use tokio_postgres::types::ToSql;

use super::{BatchError, fnv1a};
use crate::lifecycle::Stored;
use crate::rows::{TAG_SEPARATOR, bound};

/// A pooled session in a transaction begun by hand (`BEGIN` sent with the first statements
/// rather than awaited alone), or running the lone function's call in autocommit. Dropped
/// before [`Session::committed`] (an error, or any other early return), it is closed instead
/// of going back to the pool: it may still be inside the transaction, which the server rolls
/// back when the session closes.
pub(super) struct Session(pub(super) Option<deadpool_postgres::Object>);

impl Session {
    /// READ COMMITTED explicitly (whatever the database's default): every statement after a
    /// lock wait takes a fresh snapshot, which includes the commit of the lock's holder. The
    /// COMMIT does not wait for its WAL flush (nor for a synchronous standby): the head lock
    /// is released at once, and the batch's callers are answered after its mark, whose
    /// synchronous commit covers it (ADR 0004, `schema::mark_sql`).
    pub(super) const BEGIN: &'static str =
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit TO off";

    pub(super) fn client(&self) -> Option<&deadpool_postgres::Client> {
        self.0.as_ref()
    }

    /// The transaction ended (COMMIT answered): the session goes back to the pool.
    pub(super) fn committed(mut self) {
        drop(self.0.take());
    }

    /// The error for a session that is not there (never: it is only taken by `committed`).
    pub(super) fn gone() -> BatchError {
        BatchError {
            unavailable: true,
            message: "the postgres session was already given back".into(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

/// The columns of events to insert, as the arrays the statements unnest, and each stream's
/// last event among them (its row in `concord_streams`).
struct Columns<'a> {
    positions: Vec<i64>,
    streams: Vec<&'a str>,
    categories: Vec<String>,
    versions: Vec<i64>,
    ids: Vec<uuid::Uuid>,
    types: Vec<&'a str>,
    content_types: Vec<Option<&'a str>>,
    data: Vec<&'a [u8]>,
    metadata: Vec<&'a str>,
    tags: Vec<String>,
    recorded: Vec<i64>,
    index_streams: Vec<&'a str>,
    index_versions: Vec<i64>,
    index_positions: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn new(events: &'a [RecordedEvent]) -> Self {
        let mut last: HashMap<&str, (i64, i64)> = HashMap::new();
        for e in events {
            last.insert(
                e.stream.as_str(),
                (bound(e.version.get()), bound(e.position.get())),
            );
        }
        let (index_streams, (index_versions, index_positions)) = last.into_iter().unzip();
        Columns {
            positions: events.iter().map(|e| bound(e.position.get())).collect(),
            streams: events.iter().map(|e| e.stream.as_str()).collect(),
            categories: events
                .iter()
                .map(|e| e.stream.category().as_str().to_owned())
                .collect(),
            versions: events.iter().map(|e| bound(e.version.get())).collect(),
            ids: events.iter().map(|e| *e.id.as_uuid()).collect(),
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            content_types: events
                .iter()
                .map(|e| e.data.bytes_content_type().map(|c| c.as_str()))
                .collect(),
            data: events.iter().map(|e| e.data.as_bytes()).collect(),
            metadata: events.iter().map(|e| e.metadata.as_str()).collect(),
            tags: events.iter().map(joined_tags).collect(),
            recorded: events
                .iter()
                .map(|e| bound(e.recorded_at.as_millis()))
                .collect(),
            index_streams,
            index_versions,
            index_positions,
        }
    }

    /// The event columns, then the stream rows: 14 parameters.
    fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.positions,
            &self.streams,
            &self.categories,
            &self.versions,
            &self.ids,
            &self.types,
            &self.content_types,
            &self.data,
            &self.metadata,
            &self.tags,
            &self.recorded,
            &self.index_streams,
            &self.index_versions,
            &self.index_positions,
        ]
    }
}

/// An event's tags as one text, which the statements split back with [`split_tags`].
fn joined_tags(event: &RecordedEvent) -> String {
    event
        .tags
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(&TAG_SEPARATOR.to_string())
}

/// The SQL that splits `joined`, a text from [`joined_tags`], into the `tags` column's array.
fn split_tags(joined: &str) -> String {
    format!(
        "string_to_array({joined}, E'\\x{:02x}')",
        u32::from(TAG_SEPARATOR)
    )
}

/// `unnest` of the event columns at parameters `$n` … `$n+10`, as `x(p, st, c, v, id, t, ct,
/// d, m, tg, ra)`.
fn unnest_events(n: usize) -> String {
    let types = [
        "bigint", "text", "text", "bigint", "uuid", "text", "text", "bytea", "text", "text",
        "bigint",
    ];
    let args: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", n + i))
        .collect();
    format!(
        "unnest({}) AS x(p, st, c, v, id, t, ct, d, m, tg, ra)",
        args.join(", ")
    )
}

const EVENT_COLUMNS: &str = "(position, stream, category, version, event_id, event_type, \
     content_type, data, metadata, tags, recorded_at)";

/// Writes `events` as they are (their positions, versions and recorded times) and makes
/// the rows of streams that had none: the rows of a batch that holds the head lock and read
/// the head beforehand (its appends carry conditions), and of an import. The head is the
/// log's last position, so it moves with the events; readers see them once a mark covers
/// them (`schema::mark_sql`).
pub(crate) async fn insert_rows<C: deadpool_postgres::GenericClient>(
    tx: &C,
    s: &str,
    events: &[RecordedEvent],
) -> Result<(), tokio_postgres::Error> {
    let columns = Columns::new(events);
    let insert_sql = format!(
        "INSERT INTO {s}.concord_events {EVENT_COLUMNS} \
         SELECT p, st, c, v, id, t, ct, d, m, {}, ra FROM {}",
        split_tags("tg"),
        unnest_events(1)
    );
    let index_sql = format!(
        "INSERT INTO {s}.concord_streams (stream, version, last_position) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
         ON CONFLICT (stream) DO NOTHING"
    );
    let (insert, index) = tokio::try_join!(
        tx.prepare_cached(&insert_sql),
        tx.prepare_cached(&index_sql),
    )?;
    let params = columns.params();
    let (event_params, index_params) = params.split_at(11);
    tokio::try_join!(
        tx.execute(&insert, event_params),
        tx.execute(&index, index_params),
    )?;
    Ok(())
}

/// What a lone append assumes of its stream: the row the writer last saw (`None`: no row).
/// The write happens only if it still holds and none of the events' ids is in the stream.
#[derive(Debug, Clone, Copy)]
pub(super) struct Guard<'a> {
    pub(super) stream: &'a str,
    /// The channel the lone call notifies with its new head (`schema::channel`).
    pub(super) channel: &'a str,
    pub(super) row: Option<Stored>,
    /// The stream's advisory lock, which the lone function takes before it reads the row.
    pub(super) lock_key: i64,
}

/// The write statement, sent once the head lock is held (`schema::head_lock_sql`, a
/// statement before it, so that this one's snapshot sees the last holder's commit): reads
/// the head, inserts the events at positions relative to it and makes the rows of new
/// streams. Guarded (a lone append, committed synchronously in its own statement), all of
/// it only if the guard holds, and it inserts its mark (`concord_durable`, ADR 0004) and
/// notifies; unguarded (a batch, committed without waiting for its flush), neither: its
/// mark follows its COMMIT. Returns the new head, or no row when the guard did not hold.
/// It updates no row: a snapshot held open
/// elsewhere (a backup, a long report) would otherwise leave every append more old
/// versions of the same row to walk past. The guard looks ids up as a join on both key
/// columns, as the general path's read does: `stream = $1 AND event_id = ANY($2)` was
/// planned (generic plan) as a scan of the stream's whole index range with the ids as a
/// filter, an append slower the longer its stream (1.2 ms at 3 500 events).
fn write_sql(s: &str, guarded: bool) -> String {
    let (guard, when, mark, notify) = if guarded {
        (
            format!(
                "guard AS (SELECT 1 WHERE {row} \
                 AND NOT EXISTS (SELECT 1 FROM {s}.concord_events e \
                   JOIN unnest($2::text[], $5::uuid[]) AS k(stream, event_id) \
                   ON e.stream = k.stream AND e.event_id = k.event_id)), ",
                row = row_guard(s, 17, 18)
            ),
            " AND EXISTS (SELECT 1 FROM guard)",
            format!(
                ", marked AS (INSERT INTO {s}.concord_durable (position) SELECT position FROM head)"
            ),
            ", pg_notify($16::text, head.position::text) AS notified",
        )
    } else {
        (String::new(), "", String::new(), "")
    };
    format!(
        "WITH {guard}\
         head AS (SELECT {head} + $15::bigint AS position \
           FROM {s}.concord_head h WHERE h.id = 1{when}), \
         events AS (INSERT INTO {s}.concord_events {EVENT_COLUMNS} \
           SELECT head.position - $15::bigint + x.p, x.st, x.c, x.v, x.id, x.t, x.ct, x.d, x.m, \
             {tags}, x.ra FROM head, {events}), \
         streams AS (INSERT INTO {s}.concord_streams (stream, version, last_position) \
           SELECT i.st, i.v, head.position - $15::bigint + i.p FROM head, \
             unnest($12::text[], $13::bigint[], $14::bigint[]) AS i(st, v, p) \
           ON CONFLICT (stream) DO NOTHING){mark} \
         SELECT head.position FROM head{notify}",
        events = unnest_events(1),
        tags = split_tags("x.tg"),
        head = crate::schema::head_of(s, "h")
    )
}

/// The guard's test of the stream's row (the stream's name at `$stream`): with `$known`
/// true, the row's lifecycle is exactly the one at `$known + 2` … `$known + 7` and no event
/// of the stream is past version `$known + 1`; otherwise there is no row. That is the row
/// remembered (`Stored`), version included, read more cheaply than through the stream state
/// view: a stream's version only grows, except where a scavenge or an import erases events,
/// and both move `erased_through`, which the test compares; versions are never granted
/// twice, so any other process's append leaves an event past the one remembered. (The
/// view's join and its `LATERAL` read of the last event made the one-event function's guard
/// its most expensive statement after the event's insert: 25 µs of 168, pg_stat_statements,
/// 12-08.) The probe is a scalar subquery in version order, which only the `(stream,
/// version)` key serves without a sort: as `NOT EXISTS (… AND version > $v)` (an `EXISTS`
/// drops its `ORDER BY`), a generic plan made while the log was empty, which costs every
/// key alike, took the `(stream, event_id)` key and filtered the stream's every event
/// (`auto_explain`, 12-08: 560 µs per call once the stream held a few thousand events).
fn row_guard(s: &str, stream: usize, known: usize) -> String {
    let p = |k: usize| format!("${}", known + k);
    format!(
        "CASE WHEN {known}::boolean \
           THEN EXISTS (SELECT 1 FROM {s}.concord_streams WHERE stream = {stream}::text \
             AND deleted_through = {deleted}::bigint \
             AND tombstoned = {tombstoned}::boolean \
             AND max_count IS NOT DISTINCT FROM {count}::bigint \
             AND max_age_seconds IS NOT DISTINCT FROM {age}::bigint \
             AND truncate_before IS NOT DISTINCT FROM {before}::bigint \
             AND erased_through = {erased}::bigint) \
             AND (SELECT e.version FROM {s}.concord_events e WHERE e.stream = {stream}::text \
               AND e.version > {version}::bigint ORDER BY e.version LIMIT 1) IS NULL \
           ELSE NOT EXISTS (SELECT 1 FROM {s}.concord_streams WHERE stream = {stream}::text) END",
        stream = format!("${stream}"),
        known = p(0),
        version = p(1),
        deleted = p(2),
        tombstoned = p(3),
        count = p(4),
        age = p(5),
        before = p(6),
        erased = p(7),
    )
}

/// The one-event function's body after its locks: a lone append of one event, its columns
/// as scalars (`$1` … `$10`, in [`EVENT_COLUMNS`] order but the position), the channel
/// (`$11`), the assumed row (`$12` … `$19`, with the stream at `$1`); returns the event's
/// position, or NULL when the guard did not hold (nothing written). Its position is read
/// off the head by the insert of its mark (ADR 0004; committed synchronously, the append is
/// durable when readers see it): the mark costs no statement of its own.
///
/// The guard, the mark and the event are one statement over scalars (the guard filters the
/// mark's row, the event is inserted from the mark's): the server sets up, checks and
/// tears down each statement of a PL/pgSQL function on every call, and that, not the reads
/// and inserts themselves, was half the function's time (pg_stat_statements, 12-08: 168 µs
/// per call of which its statements ran 90). The statement of CTEs over arrays and their
/// `unnest` that the lone function runs cost more than its parts (~12 % of the database's
/// CPU per append in `ExecutorStart` against ~5 % for Message DB's `write_message`,
/// `perf`, 12-07); this one has no array. It takes its snapshot after the locks: nothing it
/// reads moves without them.
fn one_body(s: &str) -> String {
    format!(
        "WITH marked AS (INSERT INTO {s}.concord_durable (position) SELECT {head} + 1 \
           FROM {s}.concord_head h WHERE h.id = 1 AND {row} \
           AND NOT EXISTS (SELECT 1 FROM {s}.concord_events e \
             WHERE e.stream = $1::text AND e.event_id = $4::uuid) \
           RETURNING position) \
         INSERT INTO {s}.concord_events {EVENT_COLUMNS} SELECT position, $1, $2, $3, $4, $5, \
           $6, $7, $8, {tags}, $10 FROM marked RETURNING position INTO p;\n\
         IF p IS NULL THEN\n\
         RETURN NULL;\n\
         END IF;\n\
         IF NOT $12 THEN\n\
         INSERT INTO {s}.concord_streams (stream, version, last_position) VALUES ($1, $3, p) \
           ON CONFLICT (stream) DO NOTHING;\n\
         END IF;\n\
         PERFORM pg_notify($11, p::text);\n\
         RETURN p;",
        row = row_guard(s, 1, 12),
        tags = split_tags("$9"),
        head = crate::schema::head_of(s, "h")
    )
}

/// Every write function's statements run on generic plans always (the option each
/// function is created with). The plan cache otherwise weighs a statement's generic plan
/// against the custom plans of its first calls and may plan it anew on every call, its
/// choice turning on the statistics of the moment (seen: the lone function's statement
/// planned on each of 3 604 calls, 0.4 ms each, a lone append's p50 1.28 ms against 0.61 ms
/// in the next run; BENCHMARKS.md, "PostgreSQL: the one-event function"). Set on the
/// functions, not the writer's sessions: a batch's condition reads want the plan for their
/// parameters (a range from position 0 by a tag's index, not the log in order).
const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan ";

/// The parameters of the one-event function: the event's ten columns, the channel, the
/// assumed row's eight, then the stream's lock key.
const ONE_PARAMETERS: [&str; 20] = [
    "text", "text", "bigint", "uuid", "text", "text", "bytea", "text", "text", "bigint", "text",
    "boolean", "bigint", "bigint", "boolean", "bigint", "bigint", "bigint", "bigint", "bigint",
];

/// The parameters of the lone function: the guarded write statement's 25, then the
/// stream's lock key.
const LONE_PARAMETERS: [&str; 26] = [
    "bigint[]", "text[]", "text[]", "bigint[]", "uuid[]", "text[]", "text[]", "bytea[]", "text[]",
    "text[]", "bigint[]", "text[]", "bigint[]", "bigint[]", "bigint", "text", "text", "boolean",
    "bigint", "bigint", "boolean", "bigint", "bigint", "bigint", "bigint", "bigint",
];

/// The parameters of the batch function: the unguarded write statement's 15 (no channel:
/// its mark notifies).
const BATCH_PARAMETERS: usize = 15;

/// A write function of schema `s`: the head lock, then the write statement, in one call
/// whose statements each take a snapshot once the locks before them are held (a volatile
/// PL/pgSQL function takes one per statement under READ COMMITTED), exactly as the locks
/// and the statement sent one by one would; but the server parses, answers and flushes one
/// statement, and the client wakes once. The lone function (`lone`) takes the stream's
/// advisory lock first and runs the guarded statement, a lone append in autocommit; the
/// one-event function (`one`) does the same for a lone append of one event, the most
/// common, with its columns as scalars; the batch function (`batch`) runs a batch's write,
/// its streams locked earlier in the transaction.
///
/// It is code, not layout: its name carries a digest of its text, and each build creates
/// its own when it connects (`schema::migrate`), so that builds of one schema format share a
/// database whatever their write statement, and a build never runs another's.
pub(crate) struct WriteFunction {
    /// `schema.concord_append_<kind>_<digest>`.
    pub(crate) name: String,
    /// `CREATE OR REPLACE FUNCTION …`.
    pub(crate) create: String,
    parameters: &'static [&'static str],
    returns: Returns,
}

impl WriteFunction {
    /// The lone function of schema `s`.
    pub(crate) fn lone(s: &str) -> Self {
        let body = format!(
            "BEGIN\n\
             PERFORM pg_advisory_xact_lock($26);\n\
             PERFORM {};\n\
             RETURN QUERY {};\n\
             END",
            crate::schema::head_lock(s),
            write_sql(s, true)
        );
        Self::new(s, "lone", &LONE_PARAMETERS, Returns::Heads, &body)
    }

    /// The one-event function of schema `s`: the lone function for an append of one event.
    pub(crate) fn one(s: &str) -> Self {
        let body = format!(
            "DECLARE p bigint;\n\
             BEGIN\n\
             PERFORM pg_advisory_xact_lock($20);\n\
             PERFORM {};\n\
             {}\n\
             END",
            crate::schema::head_lock(s),
            one_body(s)
        );
        Self::new(s, "one", &ONE_PARAMETERS, Returns::Position, &body)
    }

    /// The batch function of schema `s`.
    pub(crate) fn batch(s: &str) -> Self {
        let parameters = LONE_PARAMETERS
            .get(..BATCH_PARAMETERS)
            .unwrap_or(&LONE_PARAMETERS);
        let body = format!(
            "BEGIN\n\
             PERFORM {};\n\
             RETURN QUERY {};\n\
             END",
            crate::schema::head_lock(s),
            write_sql(s, false)
        );
        Self::new(s, "batch", parameters, Returns::Heads, &body)
    }

    fn new(
        s: &str,
        kind: &str,
        parameters: &'static [&'static str],
        returns: Returns,
        block: &str,
    ) -> Self {
        let body = format!(
            "({}) RETURNS {} {GENERIC_PLANS}LANGUAGE plpgsql AS $concord$\n{block}\n$concord$",
            parameters.join(", "),
            returns.sql(),
        );
        let name = format!("{s}.concord_append_{kind}_{:016x}", fnv1a(body.bytes()));
        let create = format!("CREATE OR REPLACE FUNCTION {name}{body}");
        WriteFunction {
            name,
            create,
            parameters,
            returns,
        }
    }

    /// Its signature, as `to_regprocedure` takes it.
    pub(crate) fn signature(&self) -> String {
        format!("{}({})", self.name, self.parameters.join(", "))
    }

    /// Its call, the arguments as parameters: a function of one value is called as an
    /// expression (the server sets up no function scan and no tuplestore for it).
    fn call(&self) -> String {
        let args: Vec<String> = (1..=self.parameters.len())
            .map(|i| format!("${i}"))
            .collect();
        let from = match self.returns {
            Returns::Heads => "* FROM ",
            Returns::Position => "",
        };
        format!("SELECT {from}{}({})", self.name, args.join(", "))
    }
}

/// What a write function returns.
#[derive(Debug, Clone, Copy)]
enum Returns {
    /// The new head, or no row when its guard did not hold (called as a function scan).
    Heads,
    /// The event's position, or NULL when its guard did not hold.
    Position,
}

impl Returns {
    fn sql(self) -> &'static str {
        match self {
            Returns::Heads => "SETOF bigint",
            Returns::Position => "bigint",
        }
    }
}

/// Which write function a call is of.
#[derive(Debug, Clone, Copy)]
pub(super) enum Call {
    Batch,
    Lone,
    One,
}

/// The write statement, prepared (and cached on the session): prepare it before the
/// exchange that runs it, so that nothing is awaited between the statements of that exchange
/// and they reach the server in order.
pub(super) async fn prepare_write(
    client: &deadpool_postgres::ClientWrapper,
    sql: &WriteSql,
    call: Call,
) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    let text = match call {
        Call::Batch => &sql.batch,
        Call::Lone => &sql.lone,
        Call::One => &sql.one,
    };
    client.prepare_cached(text).await
}

/// The calls of a schema's write functions, made once per store rather than on every
/// append.
#[derive(Debug)]
pub(crate) struct WriteSql {
    batch: String,
    lone: String,
    one: String,
    /// `schema::head_lock_sql` and `schema::head_sql`, for a batch with conditions.
    pub(super) head_lock: String,
    pub(super) head: String,
    /// `schema::mark_sql` and `schema::prune_marks_sql`.
    pub(super) mark: String,
    pub(super) prune: String,
    /// A batch's read of its streams' states and of what their stale expectations missed
    /// (`super::state_and_past_sql`).
    pub(super) state: String,
}

impl WriteSql {
    /// The calls of `functions` (the lone function, the one-event function, then the batch
    /// function) of schema `s`.
    pub(crate) fn new(s: &str, functions: &[WriteFunction; 3]) -> Self {
        let [lone, one, batch] = functions;
        WriteSql {
            batch: batch.call(),
            lone: lone.call(),
            one: one.call(),
            head_lock: crate::schema::head_lock_sql(s),
            head: crate::schema::head_sql(s),
            mark: crate::schema::mark_sql(s),
            prune: crate::schema::prune_marks_sql(s),
            state: super::state_and_past_sql(s),
        }
    }
}

/// Runs the one-event function's call (from [`prepare_write`]) for `event` on the row
/// `guard` assumes. Returns its position, or `None` when the guard did not hold (nothing
/// written: the function returned NULL).
pub(super) async fn write_one(
    client: &deadpool_postgres::ClientWrapper,
    statement: &tokio_postgres::Statement,
    event: &RecordedEvent,
    guard: Guard<'_>,
) -> Result<Option<Position>, tokio_postgres::Error> {
    let category = event.stream.category();
    let category = category.as_str();
    let event_type = event.event_type.as_str();
    let data = event.data.as_bytes();
    let metadata = event.metadata.as_str();
    let version = bound(event.version.get());
    let id = *event.id.as_uuid();
    let content_type = event.data.bytes_content_type().map(|c| c.as_str());
    let tags = joined_tags(event);
    let recorded = bound(event.recorded_at.as_millis());
    let known = guard.row.is_some();
    let row = Assumed::of(guard.row);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &guard.stream,
        &category,
        &version,
        &id,
        &event_type,
        &content_type,
        &data,
        &metadata,
        &tags,
        &recorded,
        &guard.channel,
        &known,
    ];
    params.extend(row.params());
    params.push(&guard.lock_key);
    let row = client.query_one(statement, &params).await?;
    let position: Option<i64> = row.try_get(0)?;
    Ok(position.map(|p| Position(u64::try_from(p).unwrap_or(0))))
}

/// Runs the write statement (from [`prepare_write`]; with a `guard`, the lone function's
/// call) for `events`, whose positions are 1, 2, … in batch order (relative to the head the
/// statement finds). Returns the new head, or `None` when `guard` did not hold (nothing
/// written). The statement goes out on the first poll: COMMIT can follow it in the same
/// exchange.
pub(super) async fn write_relative(
    client: &deadpool_postgres::ClientWrapper,
    statement: &tokio_postgres::Statement,
    events: &[RecordedEvent],
    guard: Option<Guard<'_>>,
) -> Result<Option<Position>, tokio_postgres::Error> {
    let columns = Columns::new(events);
    let count = bound(events.len() as u64);
    let mut params: Vec<&(dyn ToSql + Sync)> = columns.params().to_vec();
    params.push(&count);
    let assumed = guard.map(|g| {
        (
            g.channel,
            g.stream,
            g.row.is_some(),
            Assumed::of(g.row),
            g.lock_key,
        )
    });
    if let Some((channel, stream, known, row, lock_key)) = &assumed {
        params.push(channel);
        params.push(stream);
        params.push(known);
        params.extend(row.params());
        params.push(lock_key);
    }
    let row = client.query_opt(statement, &params).await?;
    row.map(|row| {
        row.try_get::<_, i64>(0)
            .map(|head| Position(u64::try_from(head).unwrap_or(0)))
    })
    .transpose()
}

/// A stream row's columns as the guard compares them.
struct Assumed {
    version: i64,
    deleted_through: i64,
    tombstoned: bool,
    max_count: Option<i64>,
    max_age_seconds: Option<i64>,
    truncate_before: Option<i64>,
    erased_through: i64,
}

impl Assumed {
    fn of(row: Option<Stored>) -> Self {
        let row = row.unwrap_or_default();
        let settings = row.lifecycle.metadata;
        Assumed {
            version: bound(row.last.get()),
            deleted_through: bound(row.lifecycle.deleted_through.get()),
            tombstoned: row.lifecycle.tombstoned,
            max_count: settings.max_count.map(bound),
            max_age_seconds: settings.max_age_seconds.map(bound),
            truncate_before: settings.truncate_before.map(|v| bound(v.get())),
            erased_through: bound(row.erased_through.get()),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.version,
            &self.deleted_through,
            &self.tombstoned,
            &self.max_count,
            &self.max_age_seconds,
            &self.truncate_before,
            &self.erased_through,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statements_split_tags_on_the_separator_they_are_joined_with() {
        assert_eq!(split_tags("tg"), "string_to_array(tg, E'\\x1f')");
    }
}
