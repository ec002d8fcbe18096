//! Typed events to stored events and back, by event type name.
//!
//! A domain's events are one serde enum tagged adjacently — `#[serde(tag = "type", content =
//! "data")]` — so the variant name is the event type and its fields are the event's `data`,
//! exactly as MISSION.md's schema table writes them (`Deposited {"amount": 2000}`). No
//! registry, no macro: the enum is the mapping. Variants without fields are written as
//! `AccountClosed {}` so that their `data` is `{}`.

use concord_core::{EventType, Json, Payload, RecordedEvent, StreamName, Version};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A typed event that could not be turned into an event type and `data`.
#[derive(Debug, thiserror::Error)]
#[error(
    "event {event:?} does not encode as {{\"type\": …, \"data\": …}}: {reason}; tag the event enum with #[serde(tag = \"type\", content = \"data\")]"
)]
pub struct EncodeError {
    /// The event, as `Debug` shows it.
    pub event: String,
    /// What was wrong.
    pub reason: String,
}

/// A stored event that is not one of the aggregate's typed events.
#[derive(Debug, thiserror::Error)]
#[error(
    "event {version} of stream {stream} (type {event_type}) does not decode as this aggregate's event: {reason}"
)]
pub struct DecodeError {
    /// The stream.
    pub stream: StreamName,
    /// The event's version.
    pub version: Version,
    /// Its type.
    pub event_type: EventType,
    /// serde's description.
    pub reason: String,
}

/// Splits a typed event into its event type and `data`.
///
/// # Errors
/// [`EncodeError`] when the event does not serialise to an object with a string `type`.
pub fn encode<E: Serialize + std::fmt::Debug>(event: &E) -> Result<(EventType, Json), EncodeError> {
    let fail = |reason: String| EncodeError {
        event: format!("{event:?}"),
        reason,
    };
    // Through text, not `serde_json::Value`, so the data keeps the field order of the
    // struct (`{"owner": …, "balance": …}`, as the schema table writes it).
    let text = serde_json::to_string(event).map_err(|e| fail(e.to_string()))?;
    let tagged: Tagged = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let event_type = EventType::new(tagged.event_type).map_err(|e| fail(e.to_string()))?;
    let data = match tagged.data {
        Some(raw) => Json::from_trusted(String::from(Box::<str>::from(raw)).into_bytes()),
        None => Json::empty_object(),
    };
    Ok((event_type, data))
}

/// The shape an adjacently tagged enum serialises to.
#[derive(serde::Deserialize)]
struct Tagged {
    #[serde(rename = "type")]
    event_type: String,
    data: Option<Box<serde_json::value::RawValue>>,
}

/// Reads a stored event back as the typed event its type names.
///
/// # Errors
/// [`DecodeError`] when the type is not a variant of `E` or the data does not fit it.
pub fn decode<E: DeserializeOwned>(event: &RecordedEvent) -> Result<E, DecodeError> {
    decode_parts(&event.stream, event.version, &event.event_type, &event.data)
}

/// As [`decode`], from the parts of an event.
///
/// # Errors
/// [`DecodeError`] when the type is not a variant of `E` or the data does not fit it (data
/// of a content type other than JSON never does).
pub fn decode_parts<E: DeserializeOwned>(
    stream: &StreamName,
    version: Version,
    event_type: &EventType,
    data: &Payload,
) -> Result<E, DecodeError> {
    let fail = |reason: String| DecodeError {
        stream: stream.clone(),
        version,
        event_type: event_type.clone(),
        reason,
    };
    let data: serde_json::Value = data.to_value().map_err(|e| fail(e.to_string()))?;
    let mut map = serde_json::Map::new();
    map.insert(
        "type".into(),
        serde_json::Value::String(event_type.as_str().to_owned()),
    );
    map.insert("data".into(), data);
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_core::{NewEvent, Position, RecordedAt};
    use serde::Deserialize;

    #[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum Bank {
        Deposited { amount: u64 },
        AccountClosed {},
    }

    fn recorded(event_type: EventType, data: Json) -> RecordedEvent {
        RecordedEvent::new(
            StreamName::new("account-1").unwrap(),
            Version(1),
            Position(1),
            NewEvent::new(event_type, data),
            RecordedAt(0),
        )
    }

    #[test]
    fn variant_name_is_the_event_type_and_fields_are_the_data() {
        let (t, data) = encode(&Bank::Deposited { amount: 2000 }).unwrap();
        assert_eq!(t.as_str(), "Deposited");
        assert_eq!(data.as_str(), r#"{"amount":2000}"#);
        let (t, data) = encode(&Bank::AccountClosed {}).unwrap();
        assert_eq!((t.as_str(), data.as_str()), ("AccountClosed", "{}"));
        let back: Bank = decode(&recorded(
            EventType::new("Deposited").unwrap(),
            data_of(2000),
        ))
        .unwrap();
        assert_eq!(back, Bank::Deposited { amount: 2000 });
    }

    fn data_of(amount: u64) -> Json {
        Json::from_value(&serde_json::json!({ "amount": amount }))
    }

    #[test]
    fn an_unknown_event_type_names_the_stream_version_and_type() {
        let err = decode::<Bank>(&recorded(EventType::new("Withdrawn").unwrap(), data_of(1)))
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("event 1 of stream account-1 (type Withdrawn)"),
            "{message}"
        );
    }

    #[test]
    fn a_bytes_event_does_not_decode_as_a_json_event() {
        let mut event = recorded(EventType::new("Deposited").unwrap(), data_of(1));
        event.data = concord_core::Payload::new(
            concord_core::ContentType::new("application/x-protobuf").unwrap(),
            vec![8, 1],
        )
        .unwrap();
        let err = decode::<Bank>(&event).unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
    }

    #[test]
    fn an_untagged_value_is_refused_with_advice() {
        let err = encode(&5_u32).unwrap_err();
        assert!(
            err.to_string().contains("tag = \\\"type\\\"")
                || err.to_string().contains("tag = \"type\"")
        );
    }
}
