//! Events as written (`NewEvent`) and as stored (`RecordedEvent`).
//!
//! Event `data` and `metadata` travel as the JSON text the writer sent ([`Json`], a cheap
//! reference-counted byte buffer): validated once at the edge, never re-encoded on the way
//! to disk or back.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::InvalidInput;
use crate::names::{EventType, StreamName, Tag};
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
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NewEvent {
    /// Idempotency key.
    #[serde(default)]
    pub id: EventId,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Any JSON value.
    pub data: Json,
    /// A JSON object (`{}` when absent).
    #[serde(default = "Json::empty_object")]
    pub metadata: Json,
    /// Labels for cross-stream queries (at most 32).
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl NewEvent {
    /// An event of type `event_type` with `data`, a fresh id, empty metadata and no tags.
    pub fn new(event_type: EventType, data: Json) -> Self {
        NewEvent {
            id: EventId::new(),
            event_type,
            data,
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
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
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
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Any JSON value.
    pub data: Json,
    /// A JSON object.
    pub metadata: Json,
    /// Labels for cross-stream queries.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// When the store recorded it.
    pub recorded_at: RecordedAt,
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
}
