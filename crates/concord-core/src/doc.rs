//! Ready-made values for doc examples and tests, so they stay three lines long.

use crate::event::{EventId, Json, NewEvent, RecordedAt, RecordedEvent};
use crate::names::{EventType, StreamName, Tag};
use crate::version::{Position, Version};

/// A valid stream name; panics on an invalid one (tests and docs only).
#[allow(clippy::expect_used)]
pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("a valid stream name in a test")
}

/// A valid event type; panics on an invalid one (tests and docs only).
#[allow(clippy::expect_used)]
pub fn event_type(name: &str) -> EventType {
    EventType::new(name).expect("a valid event type in a test")
}

/// An event of `event_type` with `data`.
pub fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::new(self::event_type(event_type), Json::from_value(&data))
}

/// An event of `event_type` carrying `bytes` of `content_type`; panics on an invalid one
/// (tests and docs only).
#[allow(clippy::expect_used)]
pub fn bytes_event(event_type: &str, content_type: &str, bytes: &[u8]) -> NewEvent {
    NewEvent::bytes(event_type, content_type, bytes.to_vec())
        .expect("a valid bytes event in a test")
}

/// A recorded event with tags, for tests of the match rules.
#[allow(clippy::expect_used)]
pub fn recorded(
    stream: &str,
    version: u64,
    position: u64,
    event_type: &str,
    tags: &[&str],
) -> RecordedEvent {
    RecordedEvent {
        stream: self::stream(stream),
        version: Version(version),
        position: Position(position),
        id: EventId::new(),
        event_type: self::event_type(event_type),
        data: Json::empty_object().into(),
        metadata: Json::empty_object(),
        tags: tags
            .iter()
            .map(|t| Tag::new(*t).expect("a valid tag in a test"))
            .collect(),
        recorded_at: RecordedAt(0),
    }
}
