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
/// well-formed JSON value that every reader can parse back (see [`Json::from_bytes`]);
/// afterwards it is only copied as bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Json(Bytes);

/// The deepest nesting of arrays and objects a [`Json`] may have: serde_json's reader (the
/// projections', the Rust client's) stops at 128 levels.
pub const JSON_DEPTH_MAX: usize = 127;

/// One JSON value read the way `serde_json::Value` reads it, keeping nothing: numbers are
/// parsed (one beyond an `f64`, such as `1e999`, is refused), strings are unescaped (a lone
/// surrogate such as `"\ud800"` is refused), and nesting is bounded by serde_json's
/// recursion limit ([`JSON_DEPTH_MAX`] levels). What passes here, every reader the store has
/// can parse back; `serde::de::IgnoredAny` skips over all three.
struct Readable;

impl<'de> Deserialize<'de> for Readable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Readable)
    }
}

impl<'de> serde::de::Visitor<'de> for Readable {
    type Value = Readable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_str<E>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_unit<E>(self) -> Result<Readable, E> {
        Ok(Readable)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Readable, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Readable, A::Error> {
        while map.next_entry::<Readable, Readable>()?.is_some() {}
        Ok(Readable)
    }
}

/// Checks `text` as one JSON value every reader can parse back, saying which rule it breaks.
fn check_json(what: &str, text: &[u8]) -> Result<(), String> {
    let Err(e) = serde_json::from_slice::<Readable>(text) else {
        return Ok(());
    };
    // Only on failure: tell malformed text from valid JSON that readers cannot take.
    Err(
        match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
            Err(_) => format!("{what} is not valid JSON: {e}"),
            Ok(_) => format!(
                "{what} is valid JSON that readers cannot parse back ({e}): the store takes at most {JSON_DEPTH_MAX} levels of nesting, numbers within the range of a 64-bit float, and strings without lone surrogates"
            ),
        },
    )
}

impl Json {
    /// Validates `text` as one JSON value that every reader can parse back: well-formed,
    /// nested at most [`JSON_DEPTH_MAX`] levels, every number within an `f64`'s range,
    /// every string valid Unicode (no lone surrogate escapes). Readers (projections,
    /// clients) would otherwise fail on an event the store accepted.
    ///
    /// # Errors
    /// [`InvalidInput`] about `what`, naming the first error and the rule.
    pub fn from_bytes(what: &'static str, text: impl Into<Bytes>) -> Result<Self, InvalidInput> {
        let text = text.into();
        check_json(what, &text).map_err(|message| InvalidInput::new(what, message))?;
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
    /// Takes the value's text as it is, checked as [`Json::from_bytes`] checks it.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        check_json("the value", raw.get().as_bytes()).map_err(serde::de::Error::custom)?;
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

    /// What no reader can parse back is refused at the door: nesting of 128 levels, a
    /// number beyond an f64, a lone surrogate (as a value or as a key); one level less, the
    /// largest finite numbers and surrogate pairs are fine.
    #[test]
    fn json_that_readers_cannot_parse_back_is_refused() {
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
        for good in [
            nested(JSON_DEPTH_MAX),
            objects(JSON_DEPTH_MAX),
            "1.7976931348623157e308".to_owned(),
            "-1e-400".to_owned(),
            "18446744073709551616".to_owned(),
            r#""\ud83d\ude00""#.to_owned(),
        ] {
            assert!(Json::from_bytes("data", good.clone()).is_ok(), "{good}");
            assert!(serde_json::from_str::<Json>(&good).is_ok(), "{good}");
            assert!(
                Json::from_trusted(good.clone()).to_value().is_ok(),
                "{good}"
            );
        }
        for bad in [
            nested(JSON_DEPTH_MAX + 1),
            objects(JSON_DEPTH_MAX + 1),
            "1e999".to_owned(),
            "-1e400".to_owned(),
            "9".repeat(400),
            r#""\ud800""#.to_owned(),
            r#""\udc00""#.to_owned(),
            r#"{"\ud800": 1}"#.to_owned(),
        ] {
            let e = Json::from_bytes("data", bad.clone()).unwrap_err();
            assert_eq!(e.field, "data");
            assert!(
                e.message.contains("readers cannot parse back"),
                "{bad}: {e}"
            );
            assert!(serde_json::from_str::<Json>(&bad).is_err(), "{bad}");
            assert!(Json::from_trusted(bad.clone()).to_value().is_err(), "{bad}");
        }
        let e = Json::from_bytes("metadata", &b"{\"a\": }"[..]).unwrap_err();
        assert!(e.message.starts_with("metadata is not valid JSON"), "{e}");
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
