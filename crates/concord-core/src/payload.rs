//! An event's payload: JSON (the default) or bytes of any other content type.
//!
//! Most events are JSON, and for them nothing changes: the payload is the [`Json`] text the
//! writer sent, validated once and returned byte for byte, and its content type
//! (`application/json`) is implied rather than stored. Any other content type (Protobuf,
//! Avro, an image) carries opaque bytes in a cheap [`Bytes`] buffer that no layer copies or
//! looks into. The invariant that keeps both kinds comparable: a [`Payload`] whose content
//! type is `application/json` is always the JSON kind, so two backends that stored the same
//! event give equal payloads.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::InvalidInput;
use crate::event::Json;

/// The content type of JSON payloads, the default.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The longest content type, in bytes.
pub const CONTENT_TYPE_BYTES_MAX: usize = 256;

/// The media type of an event's bytes, e.g. `application/protobuf`: 1–256 bytes, no control
/// characters, of the shape `type/subtype` (parameters such as `; charset=…` may follow).
/// `application/json` (in any letter case) is the JSON kind of [`Payload`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ContentType(Arc<str>);

impl ContentType {
    /// Validates `text` as a content type.
    ///
    /// # Errors
    /// [`InvalidInput`] (field `content_type`) naming the broken rule.
    pub fn new(text: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let text = text.as_ref();
        check(text)?;
        Ok(ContentType(Arc::from(text)))
    }

    /// `application/json`.
    pub fn json() -> Self {
        ContentType(Arc::from(JSON_CONTENT_TYPE))
    }

    /// The content type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `application/json` (compared without regard to letter case), the
    /// content type whose bytes must be JSON.
    pub fn is_json(&self) -> bool {
        is_json(&self.0)
    }
}

fn is_json(text: &str) -> bool {
    text.eq_ignore_ascii_case(JSON_CONTENT_TYPE)
}

fn check(text: &str) -> Result<(), InvalidInput> {
    let invalid = |why: String| InvalidInput::new("content_type", why);
    if text.is_empty() {
        return Err(invalid("content_type must not be empty".into()));
    }
    if text.len() > CONTENT_TYPE_BYTES_MAX {
        return Err(invalid(format!(
            "content_type is {} bytes long, but at most {CONTENT_TYPE_BYTES_MAX} are allowed",
            text.len()
        )));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(invalid(format!(
            "content_type {text:?} contains the control character {c:?}"
        )));
    }
    let essence = text.split(';').next().unwrap_or(text).trim_end();
    let shaped = essence.split_once('/').is_some_and(|(kind, subtype)| {
        let token = |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '/');
        token(kind) && token(subtype)
    });
    if !shaped {
        return Err(invalid(format!(
            "content_type {text:?} is not of the form type/subtype (e.g. application/octet-stream)"
        )));
    }
    Ok(())
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ContentType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ContentType {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContentType::new(s)
    }
}

impl serde::Serialize for ContentType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ContentType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        ContentType::new(&*s).map_err(serde::de::Error::custom)
    }
}

/// An event's data with its content type: [`Json`] (content type `application/json`, the
/// default) or opaque bytes of any other [`ContentType`].
///
/// Build one with `Payload::from(json)` or [`Payload::new`], which validates bytes that
/// claim to be JSON and makes them the JSON kind. Its size ([`Payload::len`]) is the data's
/// bytes, what counts against the per-event limit.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Kind);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Kind {
    Json(Json),
    Bytes(ContentType, Bytes),
}

impl Payload {
    /// The payload `bytes` of `content_type`. Bytes of `application/json` must be one JSON
    /// value and become the JSON kind (their text kept as it is); any other content type's
    /// bytes are taken as they are, including none.
    ///
    /// # Errors
    /// [`InvalidInput`] (field `data`) when `content_type` is `application/json` and the
    /// bytes are not JSON.
    pub fn new(content_type: ContentType, bytes: impl Into<Bytes>) -> Result<Self, InvalidInput> {
        if content_type.is_json() {
            return Json::from_bytes("data", bytes).map(Payload::from);
        }
        Ok(Payload(Kind::Bytes(content_type, bytes.into())))
    }

    /// Wraps a payload a backend wrote itself after validating it (`None`: JSON), so a read
    /// does not parse event data twice.
    pub fn from_trusted(content_type: Option<ContentType>, bytes: impl Into<Bytes>) -> Self {
        match content_type {
            Some(content_type) if !content_type.is_json() => {
                Payload(Kind::Bytes(content_type, bytes.into()))
            }
            _ => Payload(Kind::Json(Json::from_trusted(bytes))),
        }
    }

    /// The content type as text: `application/json` for JSON.
    pub fn content_type(&self) -> &str {
        match &self.0 {
            Kind::Json(_) => JSON_CONTENT_TYPE,
            Kind::Bytes(content_type, _) => content_type.as_str(),
        }
    }

    /// The content type of a bytes payload; `None` for JSON (what backends store).
    pub fn bytes_content_type(&self) -> Option<&ContentType> {
        match &self.0 {
            Kind::Json(_) => None,
            Kind::Bytes(content_type, _) => Some(content_type),
        }
    }

    /// The JSON, when this is a JSON payload.
    pub fn as_json(&self) -> Option<&Json> {
        match &self.0 {
            Kind::Json(json) => Some(json),
            Kind::Bytes(..) => None,
        }
    }

    /// Whether this is a JSON payload.
    pub fn is_json(&self) -> bool {
        matches!(self.0, Kind::Json(_))
    }

    /// The data's bytes (the JSON text for JSON).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Kind::Json(json) => json.as_bytes(),
            Kind::Bytes(_, bytes) => bytes,
        }
    }

    /// The data's bytes as a cheap clone of the underlying buffer.
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Kind::Json(json) => json.to_bytes(),
            Kind::Bytes(_, bytes) => bytes.clone(),
        }
    }

    /// The size of the data in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the data is empty (never for JSON; bytes may be).
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// Parses a JSON payload, for readers that expect JSON.
    ///
    /// # Errors
    /// For a payload of another content type (which the reader should treat as it treats
    /// unreadable JSON), and for JSON built with [`Payload::from_trusted`] that was not
    /// JSON after all.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        match &self.0 {
            Kind::Json(json) => json.to_value(),
            Kind::Bytes(content_type, bytes) => Err(serde::de::Error::custom(format_args!(
                "the event's data is {} bytes of content type {content_type}, not JSON",
                bytes.len()
            ))),
        }
    }
}

impl From<Json> for Payload {
    fn from(json: Json) -> Self {
        Payload(Kind::Json(json))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Json(json) => fmt::Debug::fmt(json, f),
            Kind::Bytes(content_type, bytes) => write!(f, "{content_type} {bytes:?}"),
        }
    }
}

/// JSON as its text; bytes as `<n bytes of content type>`.
impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Json(json) => fmt::Display::fmt(json, f),
            Kind::Bytes(content_type, bytes) => {
                write!(f, "<{} bytes of {content_type}>", bytes.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_api_rules() {
        for good in [
            "application/json",
            "application/octet-stream",
            "application/vnd.concord.v1+protobuf",
            "text/plain; charset=utf-8",
            "x/y",
        ] {
            assert!(ContentType::new(good).is_ok(), "{good:?}");
        }
        let long = format!("application/{}", "x".repeat(CONTENT_TYPE_BYTES_MAX));
        for bad in [
            "",
            "json",
            "/json",
            "application/",
            "application/json/x",
            "app lication/json",
            "application/js on",
            "text/plain\n",
            long.as_str(),
        ] {
            let err = ContentType::new(bad).unwrap_err();
            assert_eq!(err.field, "content_type", "{bad:?}");
        }
        let boundary = format!("a/{}", "x".repeat(CONTENT_TYPE_BYTES_MAX - 2));
        assert!(ContentType::new(boundary).is_ok());
    }

    #[test]
    fn json_bytes_become_the_json_kind_and_other_bytes_stay_opaque() {
        let json = Payload::new(
            ContentType::new("Application/JSON").unwrap(),
            &b"{ \"a\":1 }"[..],
        )
        .unwrap();
        assert!(json.is_json());
        assert_eq!(json.content_type(), JSON_CONTENT_TYPE);
        assert_eq!(json.as_bytes(), b"{ \"a\":1 }");
        assert_eq!(
            json,
            Payload::from(Json::from_bytes("data", &b"{ \"a\":1 }"[..]).unwrap())
        );
        let err = Payload::new(ContentType::json(), &b"\xff"[..]).unwrap_err();
        assert_eq!(err.field, "data");

        let all: Vec<u8> = (0..=255).collect();
        let bytes = Payload::new(ContentType::new("image/png").unwrap(), all.clone()).unwrap();
        assert!(!bytes.is_json());
        assert_eq!(bytes.content_type(), "image/png");
        assert_eq!(bytes.as_bytes(), &all[..]);
        assert_eq!(bytes.len(), 256);
        assert!(bytes.to_value().is_err(), "bytes are never read as JSON");
        assert_eq!(bytes.to_string(), "<256 bytes of image/png>");

        let empty = Payload::new(
            ContentType::new("application/octet-stream").unwrap(),
            Bytes::new(),
        )
        .unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn trusted_payloads_without_a_content_type_are_json() {
        let p = Payload::from_trusted(None, &b"[1]"[..]);
        assert!(p.is_json());
        let p = Payload::from_trusted(Some(ContentType::json()), &b"[1]"[..]);
        assert!(
            p.is_json(),
            "a stored application/json is still the JSON kind"
        );
        let p = Payload::from_trusted(Some(ContentType::new("a/b").unwrap()), &b"[1]"[..]);
        assert_eq!(p.bytes_content_type().map(ContentType::as_str), Some("a/b"));
    }
}
