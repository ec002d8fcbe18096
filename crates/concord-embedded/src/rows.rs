//! Turning rows back into events, shared by the readers and by the writer (which reads the
//! concurrent events of a conflict inside its open transaction).
//!
//! Stored text went through core's validating constructors before it was written, so a
//! value that fails them here was damaged on disk: that is `Corrupted`, never a panic.

use bytes::Bytes;
use concord_core::{
    ContentType, Direction, EventId, EventType, Json, Payload, Position, RecordedAt, RecordedEvent,
    StreamName, Tag, Version,
};
use rusqlite::{Connection, OptionalExtension, Row};

use crate::deferred_index::IndexRead;
use crate::error::{EmbeddedError, from_sql, sql_bound, to_sql};
use crate::schema::TAG_SEPARATOR;

/// The event columns every event query selects, in the order [`decode`] reads them.
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.version, e.event_id, e.type, e.data, e.metadata, e.tags, e.recorded_at, e.content_type";

fn corrupted(what: &str, e: impl std::fmt::Display) -> EmbeddedError {
    EmbeddedError::Corrupted(format!("stored {what} is invalid: {e}"))
}

/// The metadata of an event written without any.
const EMPTY_OBJECT: &[u8] = b"{}";

/// The event type named `text`, from this thread's recent types or checked anew.
fn event_type(text: &str) -> Result<EventType, EmbeddedError> {
    EventType::recent(text).map_err(|e| corrupted("event type", e))
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
    let event_type = event_type(text(3, "event type")?)?;
    let data: Vec<u8> = row.get(at + 4).map_err(EmbeddedError::sqlite(context))?;
    let metadata = row
        .get_ref(at + 5)
        .map_err(EmbeddedError::sqlite(context))?
        .as_blob()
        .map_err(|e| corrupted("metadata", e))?;
    // Most events carry no metadata: share one buffer instead of allocating `{}` each time.
    let metadata = if metadata == EMPTY_OBJECT {
        Bytes::from_static(EMPTY_OBJECT)
    } else {
        Bytes::copy_from_slice(metadata)
    };
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
    // NULL for JSON, the common case: nothing to build.
    let content_type = row
        .get_ref(at + 8)
        .map_err(EmbeddedError::sqlite(context))?
        .as_str_or_null()
        .map_err(|e| corrupted("content type", e))?
        .map(|text| ContentType::new(text).map_err(|e| corrupted("content type", e)))
        .transpose()?;
    Ok(RecordedEvent {
        stream,
        version,
        position,
        id: EventId(id),
        event_type,
        data: Payload::from_trusted(content_type, Bytes::from(data)),
        metadata: Json::from_trusted(metadata),
        tags,
        recorded_at,
    })
}

/// Stream names by row id, looked up once each: a page of the global log names few streams
/// many times, and a join would build the same name for every row.
#[derive(Default)]
pub(crate) struct StreamNames(foldhash::HashMap<i64, StreamName>);

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
                let text = r.get_ref(0)?.as_str().map(StreamName::stored);
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
    let stream = StreamName::stored(name).map_err(|e| corrupted("stream name", e))?;
    decode(stream, row, 1)
}

/// The indexed part of a stream's events from a version upwards and below a version (the
/// first unflushed one), in version order along the `stream_index` table, each event a
/// point lookup in the log. Columns: the stream id in the log, then [`EVENT_COLUMNS`], as
/// in every statement that [`decode_indexed`] reads. The index's own version is not
/// selected: the versions from the first one up are consecutive, and the log's must be
/// those (a column fewer per event is about a twentieth of the read).
///
/// Like every paged read here it has no `LIMIT ?`: a statement with a bound limit is
/// re-prepared at every reuse from the statement cache (SQLite plans with the limit's
/// value), so the caller stops reading after n rows instead, which the index order makes
/// as cheap as a limit.
pub(crate) fn stream_forward_sql() -> String {
    format!(
        "SELECT e.stream_id, {EVENT_COLUMNS} FROM stream_index i CROSS JOIN events e ON e.position = i.position
         WHERE i.stream_id = ?1 AND i.version >= ?2 AND i.version < ?3 ORDER BY i.version"
    )
}

/// The indexed part of a stream's events from a version downwards, the index read in
/// reverse (no `LIMIT ?`, as for [`stream_forward_sql`]). The first row's version is not
/// known beforehand (the read may start above the stream's last version), so the index's
/// version is the last column, after the event columns.
pub(crate) fn stream_backward_sql() -> String {
    format!(
        "SELECT e.stream_id, {EVENT_COLUMNS}, i.version FROM stream_index i CROSS JOIN events e ON e.position = i.position
         WHERE i.stream_id = ?1 AND i.version <= ?2 ORDER BY i.version DESC"
    )
}

/// The log's events from one position to another, for the unflushed events of one stream
/// (dense there when it was written alone).
fn range_sql() -> String {
    format!(
        "SELECT e.stream_id, {EVENT_COLUMNS} FROM events e WHERE e.position BETWEEN ?1 AND ?2 ORDER BY e.position"
    )
}

/// One event by position.
fn at_position_sql() -> String {
    format!("SELECT e.stream_id, {EVENT_COLUMNS} FROM events e WHERE e.position = ?1")
}

/// Decodes a row of the statements above as the event of `stream` that the stream index
/// says is at `version`: the log must agree (stream and version), else the data is
/// corrupted.
fn decode_indexed(
    stream: &StreamName,
    stream_id: i64,
    version: u64,
    row: &Row<'_>,
) -> Result<RecordedEvent, EmbeddedError> {
    let held: i64 = row
        .get(0)
        .map_err(EmbeddedError::sqlite("cannot read an event"))?;
    let event = decode(stream.clone(), row, 1)?;
    if held != stream_id || event.version.get() != version {
        return Err(EmbeddedError::Corrupted(format!(
            "along the stream index, version {version} of stream {stream} is at position {}, but the log holds version {} of stream id {held} there",
            event.position, event.version
        )));
    }
    Ok(event)
}

/// The index's version in a row of [`stream_backward_sql`] (its last column).
fn backward_index_version(row: &Row<'_>) -> Result<u64, EmbeddedError> {
    let last = row.as_ref().column_count().saturating_sub(1);
    let v: i64 = row
        .get(last)
        .map_err(EmbeddedError::sqlite("cannot read a stream"))?;
    from_sql("version", v)
}

/// The events of `stream` at `entries` (`(version, position)`, consecutive versions):
/// one range read when they are dense in the log, else one lookup each.
fn events_at(
    conn: &Connection,
    stream: &StreamName,
    stream_id: i64,
    entries: &[(u64, u64)],
    out: &mut Vec<RecordedEvent>,
) -> Result<(), EmbeddedError> {
    let context = "cannot read a stream's latest events";
    let (Some(&(_, low)), Some(&(_, high))) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let missing = |position: u64| {
        EmbeddedError::Corrupted(format!(
            "the stream index puts an event of stream {stream} at position {position}, which holds none of it"
        ))
    };
    let span = high.saturating_sub(low).saturating_add(1);
    if span <= 4 * entries.len() as u64 {
        let mut stmt = conn
            .prepare_cached(&range_sql())
            .map_err(EmbeddedError::sqlite(context))?;
        let mut rows = stmt
            .query((to_sql(low)?, to_sql(high)?))
            .map_err(EmbeddedError::sqlite(context))?;
        let mut wanted = entries.iter().peekable();
        while let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))? {
            let position: i64 = row.get(1).map_err(EmbeddedError::sqlite(context))?;
            let Some(&&(version, at)) = wanted.peek() else {
                break;
            };
            if i64::try_from(at).ok() == Some(position) {
                out.push(decode_indexed(stream, stream_id, version, row)?);
                wanted.next();
            }
        }
        if let Some(&(_, at)) = wanted.next() {
            return Err(missing(at));
        }
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(&at_position_sql())
        .map_err(EmbeddedError::sqlite(context))?;
    for &(version, position) in entries {
        let mut rows = stmt
            .query([to_sql(position)?])
            .map_err(EmbeddedError::sqlite(context))?;
        match rows.next().map_err(EmbeddedError::sqlite(context))? {
            Some(row) => out.push(decode_indexed(stream, stream_id, version, row)?),
            None => return Err(missing(position)),
        }
    }
    Ok(())
}

/// Up to `limit` events of the stream with row id `stream_id` from version `from`, forward
/// or backward, at positions up to `head`: the `stream_index` table's rows, then the
/// stream's entries not flushed into it yet (see `DeferredIndex`), through `index`, started
/// before the read's first statement. Read through `conn` (a reader's, or the writer's
/// inside its transaction, with `head` = `u64::MAX`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn stream_events(
    conn: &Connection,
    index: &IndexRead<'_>,
    stream: &StreamName,
    stream_id: i64,
    from: Version,
    direction: Direction,
    limit: usize,
    head: u64,
) -> Result<Vec<RecordedEvent>, EmbeddedError> {
    let context = "cannot read a stream";
    let mut events = Vec::new();
    if limit == 0 {
        return Ok(events);
    }
    // The versions the table holds for this read end below the first unflushed one.
    let (below, mut latest) = index.with_run(stream_id, |run| match run {
        None => (u64::MAX, Vec::new()),
        Some(run) => {
            let wanted = run.entries().filter(|&(v, p)| {
                p <= head
                    && match direction {
                        Direction::Forward => v >= from.get(),
                        Direction::Backward => v <= from.get(),
                    }
            });
            let entries: Vec<(u64, u64)> = match direction {
                Direction::Forward => wanted.take(limit).collect(),
                Direction::Backward => {
                    let mut e: Vec<(u64, u64)> = wanted.rev().take(limit).collect();
                    e.reverse();
                    e
                }
            };
            (run.first, entries)
        }
    });
    let below_sql = sql_bound(below);
    match direction {
        Direction::Forward => {
            if from.get() < below {
                let mut stmt = conn
                    .prepare_cached(&stream_forward_sql())
                    .map_err(EmbeddedError::sqlite(context))?;
                let mut rows = stmt
                    .query((stream_id, sql_bound(from.get()), below_sql))
                    .map_err(EmbeddedError::sqlite(context))?;
                // The index holds every version below `below`: from the first one read
                // (version 0 is no event), each row is the next version.
                let mut version = from.get().max(1);
                while events.len() < limit
                    && let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))?
                {
                    let event = decode_indexed(stream, stream_id, version, row)?;
                    version = version.saturating_add(1);
                    // Positions grow with versions: the rest are unpublished too.
                    if event.position.get() > head {
                        return Ok(events);
                    }
                    events.push(event);
                }
            }
            latest.truncate(limit.saturating_sub(events.len()));
            events_at(conn, stream, stream_id, &latest, &mut events)?;
        }
        Direction::Backward => {
            events_at(conn, stream, stream_id, &latest, &mut events)?;
            events.reverse();
            let top = from.get().min(below.saturating_sub(1));
            if events.len() < limit && top > 0 {
                let mut stmt = conn
                    .prepare_cached(&stream_backward_sql())
                    .map_err(EmbeddedError::sqlite(context))?;
                let mut rows = stmt
                    .query((stream_id, sql_bound(top)))
                    .map_err(EmbeddedError::sqlite(context))?;
                // Then each row is the version before (a version missing from the index
                // shows as the log's version not being that one).
                let mut previous: Option<u64> = None;
                while events.len() < limit
                    && let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))?
                {
                    let version = match previous {
                        None => backward_index_version(row)?,
                        Some(v) => v.saturating_sub(1),
                    };
                    previous = Some(version);
                    let event = decode_indexed(stream, stream_id, version, row)?;
                    if event.position.get() <= head {
                        events.push(event);
                    }
                }
            }
        }
    }
    Ok(events)
}

/// The version and position of the stream's last event at or before `head`, if any. A
/// stream an import gave a past without events (format 7) has no stream index entry: its
/// last version is its import floor, at position 0.
///
/// `index` was started before any statement whose snapshot this read relies on was started
/// on `conn`: an SQLite connection keeps the snapshot of its oldest unfinished statement,
/// so a listing that looks up each stream's head while it steps through the streams sees
/// what was committed when the listing began.
pub(crate) fn stream_head(
    conn: &Connection,
    index: &IndexRead<'_>,
    stream_id: i64,
    head: u64,
) -> Result<Option<(u64, u64)>, EmbeddedError> {
    let context = "cannot read a stream's version";
    let (below, last) = index.with_run(stream_id, |run| match run {
        None => (u64::MAX, None),
        Some(run) => (run.first, run.entries().rev().find(|&(_, p)| p <= head)),
    });
    if last.is_some() {
        return Ok(last);
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, position FROM stream_index WHERE stream_id = ?1 AND version < ?2 ORDER BY version DESC",
        )
        .map_err(EmbeddedError::sqlite(context))?;
    let mut rows = stmt
        .query((stream_id, sql_bound(below)))
        .map_err(EmbeddedError::sqlite(context))?;
    while let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))? {
        let position: i64 = row.get(1).map_err(EmbeddedError::sqlite(context))?;
        let position = from_sql("position", position)?;
        if position <= head {
            let version: i64 = row.get(0).map_err(EmbeddedError::sqlite(context))?;
            return Ok(Some((from_sql("version", version)?, position)));
        }
    }
    let floor: Option<i64> = conn
        .prepare_cached("SELECT floor FROM import_floors WHERE stream_id = ?1")
        .and_then(|mut stmt| stmt.query_row([stream_id], |r| r.get(0)).optional())
        .map_err(EmbeddedError::sqlite(context))?;
    floor.map(|f| Ok((from_sql("version", f)?, 0))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_stored_event_type_is_corruption() {
        assert!(matches!(event_type("Deposited"), Ok(t) if t.as_str() == "Deposited"));
        for damaged in ["", "bad\ntype"] {
            assert!(
                matches!(event_type(damaged), Err(EmbeddedError::Corrupted(_))),
                "{damaged:?}"
            );
        }
    }
}
