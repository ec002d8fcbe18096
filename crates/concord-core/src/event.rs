//! Events as written (`NewEvent`) and as stored (`RecordedEvent`).
//!
//! Event `data` is a [`Payload`]: JSON travels as the text the writer sent ([`Json`], a
//! cheap reference-counted byte buffer), validated once at the edge, never re-encoded on
//! the way to disk or back; any other content type travels as opaque bytes. `metadata` is
//! always a JSON object.
//!
//! The wire form (shared/API.md, "Event payloads: JSON or bytes"): an event to append gives
//! `data` (JSON), or `data_base64` (standard base64) with a `content_type`; a recorded event
//! always has `content_type` and either `data` (JSON) or `data_base64` (bytes). An event to
//! append refuses unknown members, so a misspelt `tags` is an error instead of a loss.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::InvalidInput;
use crate::names::{EventType, StreamName, Tag};
use crate::payload::{ContentType, JSON_CONTENT_TYPE, Payload};
use crate::version::{Position, Version};

/// The most tags one event may carry.
pub const TAGS_PER_EVENT_MAX: usize = 32;

/// An event's id: a UUID, the idempotency key of an append.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// A fresh id: a UUIDv7, time-ordered (its first 48 bits are the Unix time in
    /// milliseconds, the rest random), so that an index of ids grows at its end instead of
    /// touching a random page for every new event.
    pub fn new() -> Self {
        EventId(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for EventId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(EventId)
            .map_err(|e| InvalidInput::new("id", format!("event id {s:?} is not a UUID: {e}")))
    }
}

/// A JSON value kept as the text it arrived as. The constructor checks that it is one
/// well-formed JSON value; afterwards it is only copied as bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Json(Bytes);

impl Json {
    /// Validates `text` as one JSON value.
    ///
    /// # Errors
    /// [`InvalidInput`] with serde_json's description of the first error.
    pub fn from_bytes(what: &'static str, text: impl Into<Bytes>) -> Result<Self, InvalidInput> {
        let text = text.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&text)
            .map_err(|e| InvalidInput::new(what, format!("{what} is not valid JSON: {e}")))?;
        Ok(Json(text))
    }

    /// Serialises `value` (always valid JSON).
    pub fn from_value(value: &serde_json::Value) -> Self {
        Json(Bytes::from(value.to_string()))
    }

    /// `{}`.
    pub fn empty_object() -> Self {
        Json(Bytes::from_static(b"{}"))
    }

    /// Wraps bytes that a backend wrote itself after validating them. Backends use it when
    /// reading back, so a read does not parse event data twice.
    pub fn from_trusted(text: impl Into<Bytes>) -> Self {
        Json(text.into())
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The JSON text as a cheap clone of the underlying buffer.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// The JSON text as `str` (it is always UTF-8 once validated).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("null")
    }

    /// Whether the value is a JSON object (metadata must be).
    pub fn is_object(&self) -> bool {
        self.0.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    }

    /// Parses the value.
    ///
    /// # Errors
    /// Only for text built with [`Json::from_trusted`] that was not JSON after all.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never, for validated JSON).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue =
            serde_json::from_str(self.as_str()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let s: Box<str> = raw.into();
        Ok(Json(Bytes::from(s.into_boxed_bytes())))
    }
}

/// When an event was recorded: milliseconds since the Unix epoch, shown as RFC 3339 UTC
/// with milliseconds (`2026-11-24T12:00:00.123Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct RecordedAt(pub u64);

impl RecordedAt {
    /// The current time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        RecordedAt(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RecordedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_millis(self.0);
        humantime::format_rfc3339_millis(t).fmt(f)
    }
}

impl std::str::FromStr for RecordedAt {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
            InvalidInput::new("recorded_at", format!("{s:?} is not an RFC 3339 time: {e}"))
        })?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Ok(RecordedAt(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

impl Serialize for RecordedAt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RecordedAt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An event to append. On the wire `id` is optional (the server makes one); here it is
/// always set, because it is the idempotency key the store checks.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(try_from = "NewEventWire")]
pub struct NewEvent {
    /// Idempotency key.
    pub id: EventId,
    /// What happened.
    pub event_type: EventType,
    /// JSON, or bytes of another content type.
    pub data: Payload,
    /// A JSON object (`{}` when absent).
    pub metadata: Json,
    /// Labels for cross-stream queries (at most 32).
    pub tags: Vec<Tag>,
}

/// [`NewEvent`] as it arrives: unknown members refused, `data` or `data_base64` checked
/// against `content_type` in [`NewEvent::try_from`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEventWire {
    #[serde(default)]
    id: EventId,
    #[serde(rename = "type")]
    event_type: EventType,
    #[serde(default)]
    content_type: Option<ContentType>,
    #[serde(default, deserialize_with = "present_json")]
    data: Option<Json>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default = "Json::empty_object")]
    metadata: Json,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// `data` when present, whatever its value: `"data": null` is the JSON value null, not an
/// absent member.
fn present_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(deserializer).map(Some)
}

/// Decodes standard base64 (with padding), naming the member in the error.
fn decode_base64(text: &str) -> Result<Bytes, InvalidInput> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|e| {
            InvalidInput::new(
                "data_base64",
                format!("data_base64 is not standard base64: {e}"),
            )
        })
}

/// Encodes bytes as standard base64 (with padding).
fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The payload of a wire event from its `content_type`, `data` and `data_base64`.
fn wire_payload(
    content_type: Option<ContentType>,
    data: Option<Json>,
    data_base64: Option<&str>,
) -> Result<Payload, InvalidInput> {
    match (data, data_base64) {
        (Some(_), Some(_)) => Err(InvalidInput::new(
            "data",
            "an event gives either `data` (JSON) or `data_base64` (bytes), not both",
        )),
        (None, None) => Err(InvalidInput::new(
            "data",
            "an event needs `data` (JSON) or `data_base64` (bytes of its `content_type`)",
        )),
        (Some(json), None) => match content_type {
            Some(ct) if !ct.is_json() => Err(InvalidInput::new(
                "data",
                format!(
                    "an event of content type {ct} gives its bytes as `data_base64`; `data` is for {JSON_CONTENT_TYPE}"
                ),
            )),
            _ => Ok(Payload::from(json)),
        },
        (None, Some(text)) => {
            let bytes = decode_base64(text)?;
            let content_type = content_type.unwrap_or_else(ContentType::json);
            Payload::new(content_type, bytes).map_err(|e| {
                InvalidInput::new(
                    "data_base64",
                    format!(
                        "data_base64 of content type {JSON_CONTENT_TYPE} (the default when no content_type is given) must be JSON: {}",
                        e.message
                    ),
                )
            })
        }
    }
}

impl TryFrom<NewEventWire> for NewEvent {
    type Error = InvalidInput;
    fn try_from(w: NewEventWire) -> Result<Self, Self::Error> {
        Ok(NewEvent {
            id: w.id,
            event_type: w.event_type,
            data: wire_payload(w.content_type, w.data, w.data_base64.as_deref())?,
            metadata: w.metadata,
            tags: w.tags,
        })
    }
}

/// Serialises the payload members of an event: `content_type` when `always` or the payload
/// is not JSON, then `data` or `data_base64`.
fn serialize_payload<S: serde::ser::SerializeStruct>(
    s: &mut S,
    data: &Payload,
    always: bool,
) -> Result<(), S::Error> {
    if always || !data.is_json() {
        s.serialize_field("content_type", data.content_type())?;
    } else {
        s.skip_field("content_type")?;
    }
    match data.as_json() {
        Some(json) => {
            s.serialize_field("data", json)?;
            s.skip_field("data_base64")
        }
        None => {
            s.skip_field("data")?;
            s.serialize_field("data_base64", &encode_base64(data.as_bytes()))
        }
    }
}

impl Serialize for NewEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut s = serializer.serialize_struct("NewEvent", 6)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("type", &self.event_type)?;
        serialize_payload(&mut s, &self.data, false)?;
        s.serialize_field("metadata", &self.metadata)?;
        s.serialize_field("tags", &self.tags)?;
        s.end()
    }
}

impl NewEvent {
    /// An event of type `event_type` with `data` (a [`Json`] or a [`Payload`]), a fresh id,
    /// empty metadata and no tags.
    pub fn new(event_type: EventType, data: impl Into<Payload>) -> Self {
        NewEvent {
            id: EventId::new(),
            event_type,
            data: data.into(),
            metadata: Json::empty_object(),
            tags: Vec::new(),
        }
    }

    /// Builds an event from a type name and a JSON value, validating the type.
    ///
    /// # Errors
    /// [`InvalidInput`] when `event_type` is not a valid type.
    pub fn json(event_type: &str, data: &serde_json::Value) -> Result<Self, InvalidInput> {
        Ok(Self::new(
            EventType::new(event_type)?,
            Json::from_value(data),
        ))
    }

    /// Builds an event of bytes from a type name, a content type and the bytes, validating
    /// all three (bytes of `application/json` must be JSON).
    ///
    /// # Errors
    /// [`InvalidInput`] naming what is wrong.
    pub fn bytes(
        event_type: &str,
        content_type: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<Self, InvalidInput> {
        Ok(Self::new(
            EventType::new(event_type)?,
            Payload::new(ContentType::new(content_type)?, bytes)?,
        ))
    }

    /// Sets the id.
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Sets the metadata (must be a JSON object).
    #[must_use]
    pub fn with_metadata(mut self, metadata: Json) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the tags.
    #[must_use]
    pub fn with_tags(mut self, tags: Vec<Tag>) -> Self {
        self.tags = tags;
        self
    }

    /// Bytes that count against the per-event limit: `data` plus `metadata`.
    pub fn payload_bytes(&self) -> usize {
        self.data.len() + self.metadata.len()
    }
}

/// An event as stored: the written event plus where and when it landed.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(try_from = "RecordedEventWire")]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: StreamName,
    /// Its 1-based number within the stream.
    pub version: Version,
    /// Its 1-based global position.
    pub position: Position,
    /// Its id.
    pub id: EventId,
    /// What happened.
    pub event_type: EventType,
    /// JSON, or bytes of another content type.
    pub data: Payload,
    /// A JSON object.
    pub metadata: Json,
    /// Labels for cross-stream queries.
    pub tags: Vec<Tag>,
    /// When the store recorded it.
    pub recorded_at: RecordedAt,
}

/// [`RecordedEvent`] as a server returns it. Unknown members are ignored (a newer server
/// may add some), and an event without `content_type` (an older server) is JSON.
#[derive(Deserialize)]
struct RecordedEventWire {
    stream: StreamName,
    version: Version,
    position: Position,
    id: EventId,
    #[serde(rename = "type")]
    event_type: EventType,
    #[serde(default)]
    content_type: Option<ContentType>,
    #[serde(default, deserialize_with = "present_json")]
    data: Option<Json>,
    #[serde(default)]
    data_base64: Option<String>,
    metadata: Json,
    #[serde(default)]
    tags: Vec<Tag>,
    recorded_at: RecordedAt,
}

impl TryFrom<RecordedEventWire> for RecordedEvent {
    type Error = InvalidInput;
    fn try_from(w: RecordedEventWire) -> Result<Self, Self::Error> {
        Ok(RecordedEvent {
            stream: w.stream,
            version: w.version,
            position: w.position,
            id: w.id,
            event_type: w.event_type,
            data: wire_payload(w.content_type, w.data, w.data_base64.as_deref())?,
            metadata: w.metadata,
            tags: w.tags,
            recorded_at: w.recorded_at,
        })
    }
}

impl Serialize for RecordedEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut s = serializer.serialize_struct("RecordedEvent", 10)?;
        s.serialize_field("stream", &self.stream)?;
        s.serialize_field("version", &self.version)?;
        s.serialize_field("position", &self.position)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("type", &self.event_type)?;
        serialize_payload(&mut s, &self.data, true)?;
        s.serialize_field("metadata", &self.metadata)?;
        s.serialize_field("tags", &self.tags)?;
        s.serialize_field("recorded_at", &self.recorded_at)?;
        s.end()
    }
}

impl RecordedEvent {
    /// Records `event` at `version` and `position`.
    pub fn new(
        stream: StreamName,
        version: Version,
        position: Position,
        event: NewEvent,
        recorded_at: RecordedAt,
    ) -> Self {
        RecordedEvent {
            stream,
            version,
            position,
            id: event.id,
            event_type: event.event_type,
            data: event.data,
            metadata: event.metadata,
            tags: event.tags,
            recorded_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_the_text_it_was_given() {
        let j = Json::from_bytes("data", &b"{ \"amount\" :2000 }"[..]).unwrap();
        assert_eq!(j.as_str(), "{ \"amount\" :2000 }");
        assert!(j.is_object());
        assert!(Json::from_bytes("data", &b"{ nope"[..]).is_err());
        assert!(Json::from_bytes("data", &b"1 2"[..]).is_err());
        assert!(!Json::from_bytes("data", &b"[1]"[..]).unwrap().is_object());
    }

    #[test]
    fn recorded_event_serialises_as_the_api_shows() {
        let e = RecordedEvent::new(
            StreamName::new("account-42").unwrap(),
            Version(2),
            Position(17),
            NewEvent::json("Deposited", &serde_json::json!({"amount": 2000})).unwrap(),
            RecordedAt(1_795_521_600_123),
        );
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["stream"], "account-42");
        assert_eq!(v["version"], 2);
        assert_eq!(v["position"], 17);
        assert_eq!(v["type"], "Deposited");
        assert_eq!(v["data"]["amount"], 2000);
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert_eq!(v["tags"], serde_json::json!([]));
        assert_eq!(v["recorded_at"], "2026-11-24T12:00:00.123Z");
        let back: RecordedEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    fn new_event(wire: serde_json::Value) -> Result<NewEvent, String> {
        serde_json::from_value::<NewEvent>(wire).map_err(|e| e.to_string())
    }

    #[test]
    fn an_event_to_append_gives_json_data_or_base64_bytes() {
        let json = new_event(serde_json::json!({"type": "T", "data": {"a": 1}})).unwrap();
        assert!(json.data.is_json());
        let explicit = new_event(
            serde_json::json!({"type": "T", "content_type": "application/json", "data": null}),
        )
        .unwrap();
        assert_eq!(
            explicit.data.as_bytes(),
            b"null",
            "null is a JSON value, not an absence"
        );
        let bytes = new_event(serde_json::json!({
            "type": "T", "content_type": "application/octet-stream", "data_base64": "AP8Q"
        }))
        .unwrap();
        assert_eq!(bytes.data.as_bytes(), &[0x00, 0xff, 0x10]);
        assert_eq!(bytes.data.content_type(), "application/octet-stream");
        let empty =
            new_event(serde_json::json!({"type": "T", "content_type": "a/b", "data_base64": ""}))
                .unwrap();
        assert!(empty.data.is_empty());
        // JSON given as base64 is JSON, kept byte for byte.
        let json_bytes = new_event(serde_json::json!({
            "type": "T", "content_type": "application/json", "data_base64": "eyAiYSI6MSB9"
        }))
        .unwrap();
        assert!(json_bytes.data.is_json());
        assert_eq!(json_bytes.data.as_bytes(), b"{ \"a\":1 }");
    }

    #[test]
    fn an_event_to_append_refuses_ambiguous_or_malformed_payloads() {
        for (wire, says) in [
            (
                serde_json::json!({"type": "T", "data": 1, "data_base64": "AA=="}),
                "not both",
            ),
            (serde_json::json!({"type": "T"}), "needs `data`"),
            (
                serde_json::json!({"type": "T", "content_type": "a/b", "data_base64": "not base64!"}),
                "not standard base64",
            ),
            (
                serde_json::json!({"type": "T", "content_type": "a/b", "data_base64": "AA"}),
                "not standard base64",
            ),
            (
                serde_json::json!({"type": "T", "content_type": "application/json", "data_base64": "/w=="}),
                "must be JSON",
            ),
            (
                serde_json::json!({"type": "T", "data_base64": "/w=="}),
                "must be JSON",
            ),
            (
                serde_json::json!({"type": "T", "content_type": "a/b", "data": {}}),
                "data_base64",
            ),
            (
                serde_json::json!({"type": "T", "content_type": "nope", "data_base64": ""}),
                "type/subtype",
            ),
            (
                serde_json::json!({"type": "T", "data": 1, "tag": ["x"]}),
                "unknown field `tag`",
            ),
        ] {
            let err = new_event(wire.clone()).unwrap_err();
            assert!(err.contains(says), "{wire}: {err}");
        }
    }

    #[test]
    fn recorded_events_show_their_content_type_and_bytes_as_base64() {
        let all: Vec<u8> = (0..=255).collect();
        let e = RecordedEvent::new(
            StreamName::new("blob-1").unwrap(),
            Version(1),
            Position(1),
            NewEvent::bytes("Uploaded", "image/png", all.clone()).unwrap(),
            RecordedAt(0),
        );
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["content_type"], "image/png");
        assert!(v.get("data").is_none(), "{v}");
        let b64 = v["data_base64"].as_str().unwrap();
        assert!(
            b64.ends_with("+/w=="),
            "standard alphabet with padding: {b64}"
        );
        let back: RecordedEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.data.as_bytes(), &all[..]);

        // JSON events say so, and an older server's event without a content type is JSON.
        let json = RecordedEvent::new(
            StreamName::new("a-1").unwrap(),
            Version(1),
            Position(1),
            NewEvent::json("T", &serde_json::json!([1])).unwrap(),
            RecordedAt(0),
        );
        let mut v = serde_json::to_value(&json).unwrap();
        assert_eq!(v["content_type"], "application/json");
        assert!(v.get("data_base64").is_none());
        v.as_object_mut().unwrap().remove("content_type");
        assert_eq!(serde_json::from_value::<RecordedEvent>(v).unwrap(), json);
    }

    #[test]
    fn a_new_event_round_trips_through_its_wire_form() {
        for e in [
            NewEvent::json("T", &serde_json::json!({"a": [1, 2]})).unwrap(),
            NewEvent::bytes("T", "application/x-protobuf", vec![0u8, 1, 2]).unwrap(),
            NewEvent::bytes("T", "application/x-protobuf", Vec::new()).unwrap(),
        ] {
            let wire = serde_json::to_string(&e).unwrap();
            assert_eq!(
                serde_json::from_str::<NewEvent>(&wire).unwrap(),
                e,
                "{wire}"
            );
        }
    }
}
