//! Decoding Redis replies into Concord's types.
//!
//! Everything read back was written by Concord's function after client-side validation, so
//! a reply that does not decode means the keys were changed by something else: that is
//! [`StoreError::Corrupted`](concord_core::StoreError::Corrupted), never a panic.

use concord_core::{
    ContentType, EventId, EventType, Json, Payload, Position, RecordedAt, RecordedEvent,
    StreamName, Tag, Version,
};
use redis::Value;

use crate::error::RedisError;
use crate::resp::Reply;

/// The metadata of an event written without any (shared, not copied per event).
const EMPTY_OBJECT: &[u8] = b"{}";

/// The fields of one entry, by name; unknown fields are ignored so that later versions
/// may add some.
#[derive(Default)]
struct Fields<'a> {
    stream: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    position: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
    event_type: Option<&'a [u8]>,
    data: Option<&'a [u8]>,
    metadata: Option<&'a [u8]>,
    tags: Option<&'a [u8]>,
    recorded_at: Option<&'a [u8]>,
    /// Absent for JSON (and in every entry written before library version 5).
    content_type: Option<&'a [u8]>,
}

pub(crate) fn bytes<'a>(command: &'static str, v: &'a Value) -> Result<&'a [u8], RedisError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        other => Err(RedisError::reply(
            command,
            format!("expected a string, got {other:?}"),
        )),
    }
}

pub(crate) fn text<'a>(command: &'static str, v: &'a Value) -> Result<&'a str, RedisError> {
    std::str::from_utf8(bytes(command, v)?)
        .map_err(|e| RedisError::reply(command, format!("not UTF-8: {e}")))
}

pub(crate) fn int(command: &'static str, v: &Value) -> Result<u64, RedisError> {
    match v {
        Value::Int(i) => u64::try_from(*i)
            .map_err(|_| RedisError::reply(command, format!("negative number {i}"))),
        other => parse_u64(command, bytes(command, other)?),
    }
}

/// A library function's reply: its outcome word (`ok`, or what refused the call) and the
/// whole array, the word first.
pub(crate) fn outcome<'a>(
    command: &'static str,
    v: &'a Value,
) -> Result<(&'a str, &'a [Value]), RedisError> {
    let items = array(command, v)?;
    let kind = items
        .first()
        .ok_or_else(|| RedisError::reply(command, "empty reply"))?;
    Ok((text(command, kind)?, items))
}

pub(crate) fn array<'a>(command: &'static str, v: &'a Value) -> Result<&'a [Value], RedisError> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        other => Err(RedisError::reply(
            command,
            format!("expected an array, got {other:?}"),
        )),
    }
}

pub(crate) fn parse_u64(command: &'static str, b: &[u8]) -> Result<u64, RedisError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            RedisError::reply(
                command,
                format!("{:?} is not a number", String::from_utf8_lossy(b)),
            )
        })
}

/// The `<n>` of an entry id `<n>-0`.
fn entry_number(command: &'static str, id: &[u8]) -> Result<u64, RedisError> {
    let s = std::str::from_utf8(id)
        .map_err(|e| RedisError::reply(command, format!("entry id not UTF-8: {e}")))?;
    match s.split_once('-') {
        Some((n, "0")) => parse_u64(command, n.as_bytes()),
        _ => Err(RedisError::reply(
            command,
            format!("entry id {s:?} is not of the form <n>-0"),
        )),
    }
}

fn split_entry<'a>(
    command: &'static str,
    entry: &'a Value,
) -> Result<(&'a [u8], Fields<'a>), RedisError> {
    let parts = array(command, entry)?;
    let (Some(id), Some(fields)) = (parts.first(), parts.get(1)) else {
        return Err(RedisError::reply(
            command,
            "stream entry without id and fields",
        ));
    };
    let id = bytes(command, id)?;
    let mut out = Fields::default();
    match fields {
        Value::Map(pairs) => {
            for (k, v) in pairs {
                out.take(bytes(command, k)?, bytes(command, v)?);
            }
        }
        other => {
            for pair in array(command, other)?.chunks(2) {
                if let [k, v] = pair {
                    out.take(bytes(command, k)?, bytes(command, v)?);
                }
            }
        }
    }
    Ok((id, out))
}

impl<'a> Fields<'a> {
    /// Takes the field `name`; an unknown one is passed over.
    fn take(&mut self, name: &[u8], value: &'a [u8]) {
        let slot = match name {
            b"stream" => &mut self.stream,
            b"version" => &mut self.version,
            b"position" => &mut self.position,
            b"id" => &mut self.id,
            b"type" => &mut self.event_type,
            b"data" => &mut self.data,
            b"metadata" => &mut self.metadata,
            b"tags" => &mut self.tags,
            b"recorded_at" => &mut self.recorded_at,
            b"content_type" => &mut self.content_type,
            _ => return,
        };
        *slot = Some(value);
    }
}

fn need<'a>(
    command: &'static str,
    field: &'static str,
    v: Option<&'a [u8]>,
) -> Result<&'a [u8], RedisError> {
    v.ok_or_else(|| RedisError::reply(command, format!("stream entry without the field {field:?}")))
}

fn utf8<'a>(command: &'static str, b: &'a [u8]) -> Result<&'a str, RedisError> {
    std::str::from_utf8(b).map_err(|e| RedisError::reply(command, format!("field not UTF-8: {e}")))
}

fn finish(
    command: &'static str,
    stream: StreamName,
    version: Version,
    position: Position,
    f: &Fields<'_>,
) -> Result<RecordedEvent, RedisError> {
    let bad = |e: concord_core::InvalidInput| RedisError::reply(command, e.to_string());
    let id: EventId = utf8(command, need(command, "id", f.id)?)?
        .parse()
        .map_err(bad)?;
    let event_type =
        EventType::recent(utf8(command, need(command, "type", f.event_type)?)?).map_err(bad)?;
    let tags_text = utf8(command, f.tags.unwrap_or_default())?;
    let tags = if tags_text.is_empty() {
        Vec::new()
    } else {
        tags_text
            .split(',')
            .map(Tag::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?
    };
    let recorded_at = RecordedAt(parse_u64(
        command,
        need(command, "recorded_at", f.recorded_at)?,
    )?);
    let content_type = f
        .content_type
        .map(|t| ContentType::new(utf8(command, t)?).map_err(bad))
        .transpose()?;
    Ok(RecordedEvent {
        stream,
        version,
        position,
        id,
        event_type,
        data: Payload::from_trusted(
            content_type,
            bytes::Bytes::copy_from_slice(need(command, "data", f.data)?),
        ),
        metadata: match need(command, "metadata", f.metadata)? {
            EMPTY_OBJECT => Json::from_trusted(bytes::Bytes::from_static(EMPTY_OBJECT)),
            other => Json::from_trusted(bytes::Bytes::copy_from_slice(other)),
        },
        tags,
        recorded_at,
    })
}

/// An entry of a per-stream Redis Stream (id `<version>-0`).
pub(crate) fn stream_entry(
    command: &'static str,
    stream: &StreamName,
    entry: &Value,
) -> Result<RecordedEvent, RedisError> {
    let (id, f) = split_entry(command, entry)?;
    let version = Version(entry_number(command, id)?);
    let position = Position(parse_u64(command, need(command, "position", f.position)?)?);
    finish(command, stream.clone(), version, position, &f)
}

/// An entry of the global Redis Stream (id `<position>-0`).
pub(crate) fn global_entry(
    command: &'static str,
    entry: &Value,
) -> Result<RecordedEvent, RedisError> {
    let (id, f) = split_entry(command, entry)?;
    global_event(command, id, &f)
}

/// The event of the global log's entry `id` with fields `f`.
fn global_event(
    command: &'static str,
    id: &[u8],
    f: &Fields<'_>,
) -> Result<RecordedEvent, RedisError> {
    let position = Position(entry_number(command, id)?);
    let stream = StreamName::recent(utf8(command, need(command, "stream", f.stream)?)?)
        .map_err(|e| RedisError::reply(command, e.to_string()))?;
    let version = Version(parse_u64(command, need(command, "version", f.version)?)?);
    finish(command, stream, version, position, f)
}

/// An entry of the global Redis Stream, read by a connection of Concord's own
/// ([`crate::resp`]); the same fields as [`global_entry`].
pub(crate) fn global_entry_read(
    command: &'static str,
    entry: &Reply<'_>,
) -> Result<RecordedEvent, RedisError> {
    let shape = || RedisError::reply(command, "stream entry without id and fields");
    let Reply::Array(parts) = entry else {
        return Err(shape());
    };
    let (Some(Reply::Bytes(id)), Some(Reply::Array(pairs))) = (parts.first(), parts.get(1)) else {
        return Err(shape());
    };
    let mut f = Fields::default();
    for pair in pairs.chunks(2) {
        if let [Reply::Bytes(k), Reply::Bytes(v)] = pair {
            f.take(k, v);
        }
    }
    global_event(command, id, &f)
}

/// The elements of an array reply read by a connection of Concord's own (none for nil);
/// an error reply is the command's failure.
pub(crate) fn reply_array<'r, 'a>(
    command: &'static str,
    reply: &'r Reply<'a>,
) -> Result<&'r [Reply<'a>], RedisError> {
    match reply {
        Reply::Array(items) => Ok(items),
        Reply::Nil => Ok(&[]),
        Reply::Error(message) => Err(RedisError::Server {
            command,
            message: message.clone(),
        }),
        other => Err(RedisError::reply(
            command,
            format!("expected an array, got {other:?}"),
        )),
    }
}

/// `reply` as redis-rs would have given it, for the decoders that take its values; an
/// error reply, also nested, is the command's error.
pub(crate) fn reply_value(command: &'static str, reply: &Reply) -> Result<Value, RedisError> {
    Ok(match reply {
        Reply::Bytes(b) => Value::BulkString(b.to_vec()),
        Reply::Int(i) => Value::Int(*i),
        Reply::Nil => Value::Nil,
        Reply::Array(items) => Value::Array(
            items
                .iter()
                .map(|r| reply_value(command, r))
                .collect::<Result<_, _>>()?,
        ),
        Reply::Error(message) => {
            return Err(RedisError::Server {
                command,
                message: message.clone(),
            });
        }
    })
}

/// A number sent as a bulk string (`GET` of a counter), `None` for nil.
pub(crate) fn reply_number(
    command: &'static str,
    reply: &Reply,
) -> Result<Option<u64>, RedisError> {
    match reply {
        Reply::Nil => Ok(None),
        Reply::Bytes(b) => parse_u64(command, b).map(Some),
        Reply::Int(i) => u64::try_from(*i)
            .map(Some)
            .map_err(|_| RedisError::reply(command, format!("negative number {i}"))),
        Reply::Error(message) => Err(RedisError::Server {
            command,
            message: message.clone(),
        }),
        Reply::Array(_) => Err(RedisError::reply(
            command,
            "expected a number, got an array",
        )),
    }
}

/// Every entry of an `XRANGE`-shaped reply, decoded with `decode`.
pub(crate) fn entries<T>(
    command: &'static str,
    reply: &Value,
    mut decode: impl FnMut(&Value) -> Result<T, RedisError>,
) -> Result<Vec<T>, RedisError> {
    array(command, reply)?.iter().map(&mut decode).collect()
}
