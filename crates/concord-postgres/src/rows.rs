//! Rows to and from `concord_events`: the column list every read selects, and the decoding
//! of a row into a `RecordedEvent` (a row that does not decode is `Corrupted`).

use bytes::Bytes;
use concord_core::{
    ContentType, EventId, EventType, Json, Payload, Position, RecordedAt, RecordedEvent,
    StoreError, StreamName, Tag, Version,
};
use tokio_postgres::Row;

/// The columns [`decode`] reads, in order.
pub(crate) const COLUMNS: &str = "position, stream, version, event_id, event_type, content_type, data, metadata, tags, recorded_at";

/// Tags travel to the server as one text per event joined by this separator (a tag has no
/// control characters), so that one `unnest` can insert a batch.
pub(crate) const TAG_SEPARATOR: char = '\u{1f}';

fn corrupted(what: &str, e: impl std::fmt::Display) -> StoreError {
    corrupted_in("concord_events", what, e)
}

fn count(what: &str, n: i64) -> Result<u64, StoreError> {
    count_in("concord_events", what, n)
}

/// A value of `table.what` that does not decode.
pub(crate) fn corrupted_in(table: &str, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupted(format!("{table}.{what}: {e}"))
}

/// A count (version, position, setting) stored in `table.what`: never negative.
pub(crate) fn count_in(table: &str, what: &str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|e| corrupted_in(table, what, e))
}

pub(crate) fn decode(row: &Row) -> Result<RecordedEvent, StoreError> {
    decode_at(row, 0)
}

/// As [`decode`], of [`COLUMNS`] starting at column `at`.
pub(crate) fn decode_at(row: &Row, at: usize) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get(at).map_err(|e| corrupted("position", e))?;
    let stream: &str = row.try_get(at + 1).map_err(|e| corrupted("stream", e))?;
    let version: i64 = row.try_get(at + 2).map_err(|e| corrupted("version", e))?;
    let id: uuid::Uuid = row.try_get(at + 3).map_err(|e| corrupted("event_id", e))?;
    let event_type: &str = row
        .try_get(at + 4)
        .map_err(|e| corrupted("event_type", e))?;
    let content_type: Option<&str> = row
        .try_get(at + 5)
        .map_err(|e| corrupted("content_type", e))?;
    let data: Vec<u8> = row.try_get(at + 6).map_err(|e| corrupted("data", e))?;
    let metadata: String = row.try_get(at + 7).map_err(|e| corrupted("metadata", e))?;
    let tags: Vec<&str> = row.try_get(at + 8).map_err(|e| corrupted("tags", e))?;
    let recorded_at: i64 = row
        .try_get(at + 9)
        .map_err(|e| corrupted("recorded_at", e))?;
    let content_type = content_type
        .map(ContentType::new)
        .transpose()
        .map_err(|e| corrupted("content_type", e))?;
    Ok(RecordedEvent {
        stream: StreamName::stored(stream).map_err(|e| corrupted("stream", e))?,
        version: Version(count("version", version)?),
        position: Position(count("position", position)?),
        id: EventId(id),
        event_type: EventType::new(event_type).map_err(|e| corrupted("event_type", e))?,
        data: Payload::from_trusted(content_type, Bytes::from(data)),
        metadata: Json::from_trusted(Bytes::from(metadata.into_bytes())),
        tags: tags
            .into_iter()
            .map(Tag::new)
            .collect::<Result<_, _>>()
            .map_err(|e| corrupted("tags", e))?,
        recorded_at: RecordedAt(count("recorded_at", recorded_at)?),
    })
}

/// A count or bound as a bigint: values from 2^63 read as past the end (`i64::MAX`).
pub(crate) fn bound(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
