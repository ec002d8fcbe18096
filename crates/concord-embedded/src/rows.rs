//! Turning rows back into events, shared by the readers and by the writer (which reads the
//! concurrent events of a conflict inside its open transaction).
//!
//! Stored text went through core's validating constructors before it was written, so a
//! value that fails them here was damaged on disk: that is `Corrupted`, never a panic.

use bytes::Bytes;
use concord_core::{
    EventId, EventType, Json, Position, RecordedAt, RecordedEvent, StreamName, Tag, Version,
};
use rusqlite::{Connection, Row};

use crate::error::{EmbeddedError, from_sql, to_sql};
use crate::schema::TAG_SEPARATOR;

/// The event columns every event query selects, in the order [`decode`] reads them.
pub(crate) const EVENT_COLUMNS: &str =
    "e.position, e.version, e.event_id, e.type, e.data, e.metadata, e.tags, e.recorded_at";

fn corrupted(what: &str, e: impl std::fmt::Display) -> EmbeddedError {
    EmbeddedError::Corrupted(format!("stored {what} is invalid: {e}"))
}

/// Decodes the [`EVENT_COLUMNS`] of `row` starting at column `at`, as an event of `stream`.
pub(crate) fn decode(
    stream: StreamName,
    row: &Row<'_>,
    at: usize,
) -> Result<RecordedEvent, EmbeddedError> {
    let context = "cannot read an event";
    let get_i64 = |i: usize| {
        row.get::<_, i64>(at + i)
            .map_err(EmbeddedError::sqlite(context))
    };
    let position = Position(from_sql("position", get_i64(0)?)?);
    let version = Version(from_sql("version", get_i64(1)?)?);
    let id = row
        .get_ref(at + 2)
        .map_err(EmbeddedError::sqlite(context))?
        .as_blob()
        .map_err(|e| corrupted("event id", e))?;
    let id = uuid::Uuid::from_slice(id).map_err(|e| corrupted("event id", e))?;
    // Names are read in place from SQLite's row buffer: each is copied once, into its name.
    let text = |i: usize, what: &str| {
        row.get_ref(at + i)
            .map_err(EmbeddedError::sqlite(context))?
            .as_str()
            .map_err(|e| corrupted(what, e))
    };
    let event_type =
        EventType::new(text(3, "event type")?).map_err(|e| corrupted("event type", e))?;
    let data: Vec<u8> = row.get(at + 4).map_err(EmbeddedError::sqlite(context))?;
    let metadata: Vec<u8> = row.get(at + 5).map_err(EmbeddedError::sqlite(context))?;
    let tags = text(6, "tags")?;
    let tags = if tags.is_empty() {
        Vec::new()
    } else {
        tags.split(TAG_SEPARATOR)
            .map(Tag::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupted("tag", e))?
    };
    let recorded_at = RecordedAt(from_sql("recorded_at", get_i64(7)?)?);
    Ok(RecordedEvent {
        stream,
        version,
        position,
        id: EventId(id),
        event_type,
        data: Json::from_trusted(Bytes::from(data)),
        metadata: Json::from_trusted(Bytes::from(metadata)),
        tags,
        recorded_at,
    })
}

/// A `LIMIT` for SQLite: `usize::MAX` (no limit) becomes `i64::MAX`.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Stream names by row id, looked up once each: a page of the global log names few streams
/// many times, and a join would build the same name for every row.
#[derive(Default)]
pub(crate) struct StreamNames(std::collections::HashMap<i64, StreamName>);

impl StreamNames {
    /// The name of the stream with row id `id`.
    pub(crate) fn get(&mut self, conn: &Connection, id: i64) -> Result<StreamName, EmbeddedError> {
        if let Some(name) = self.0.get(&id) {
            return Ok(name.clone());
        }
        let context = "cannot read a stream's name";
        let mut stmt = conn
            .prepare_cached("SELECT name FROM streams WHERE stream_id = ?1")
            .map_err(EmbeddedError::sqlite(context))?;
        let name = stmt
            .query_row([id], |r| {
                let text = r.get_ref(0)?.as_str().map(StreamName::new);
                Ok(text)
            })
            .map_err(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => EmbeddedError::Corrupted(format!(
                    "an event names stream id {id}, which does not exist"
                )),
                e => EmbeddedError::Sqlite { context, source: e },
            })?
            .map_err(|e| corrupted("stream name", e))?
            .map_err(|e| corrupted("stream name", e))?;
        self.0.insert(id, name.clone());
        Ok(name)
    }
}

/// Decodes a row whose column 0 is the stream name, followed by [`EVENT_COLUMNS`].
pub(crate) fn decode_named(row: &Row<'_>) -> Result<RecordedEvent, EmbeddedError> {
    let name: String = row
        .get(0)
        .map_err(EmbeddedError::sqlite("cannot read an event"))?;
    let stream = StreamName::new(name).map_err(|e| corrupted("stream name", e))?;
    decode(stream, row, 1)
}

/// A stream's events from a version upwards, in version order along
/// `events_by_stream_version`.
///
/// Like every paged read here it has no `LIMIT ?`: a statement with a bound limit is
/// re-prepared at every reuse from the statement cache (SQLite plans with the limit's
/// value), so the caller stops reading after n rows instead, which the index order makes
/// as cheap as a limit.
pub(crate) fn stream_forward_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.stream_id = ?1 AND e.version >= ?2 ORDER BY e.version"
    )
}

/// A stream's events from a version downwards, the index read in reverse (no `LIMIT ?`,
/// as for [`stream_forward_sql`]).
pub(crate) fn stream_backward_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.stream_id = ?1 AND e.version <= ?2 ORDER BY e.version DESC"
    )
}

/// Up to `limit` events of the stream with row id `stream_id`, from version `from` upwards,
/// read through `conn` (the writer's, inside its transaction, or a reader's).
pub(crate) fn stream_events(
    conn: &Connection,
    stream: &StreamName,
    stream_id: i64,
    from: Version,
    limit: usize,
) -> Result<Vec<RecordedEvent>, EmbeddedError> {
    let context = "cannot read a stream";
    let mut stmt = conn
        .prepare_cached(&stream_forward_sql())
        .map_err(EmbeddedError::sqlite(context))?;
    let mut rows = stmt
        .query((stream_id, to_sql(from.get())?))
        .map_err(EmbeddedError::sqlite(context))?;
    let mut events = Vec::new();
    while events.len() < limit
        && let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))?
    {
        events.push(decode(stream.clone(), row, 0)?);
    }
    Ok(events)
}
