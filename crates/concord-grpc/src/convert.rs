//! Between the protocol's messages and core types: names, event ids, expected revisions,
//! events. A stream's revision is its version − 1; an event's commit and prepare positions
//! are both its position.
//!
//! **Custom metadata.** KurrentDB's `custom_metadata` is any bytes; Concord's metadata is a
//! JSON object. Bytes that are a JSON object other than `{}` are stored as the metadata
//! itself, text kept as sent (so HTTP readers see the object). Empty bytes are stored as
//! `{}`, and `{}` read back over gRPC is empty bytes. Any other bytes (and the literal `{}`)
//! are stored as `{"$custom_metadata_base64": "<base64>"}` and read back decoded. Every
//! custom metadata written over gRPC therefore reads back byte for byte.

use std::collections::HashMap;

use ::uuid::Uuid;
use base64::Engine;
use concord_core::{
    ContentType, EventId, EventType, ExpectedVersion, Json, NewEvent, Payload, RecordedEvent,
    StreamName, Version,
};

use crate::error::GrpcError;
use crate::proto::event_store::client::{StreamIdentifier, Uuid as ProtoUuid, uuid};

/// The metadata member that carries custom metadata bytes that are not a JSON object.
pub(crate) const CUSTOM_METADATA_MEMBER: &str = "$custom_metadata_base64";

/// A stream name from the wire: UTF-8, a valid Concord name. `$all` and other `$` names are
/// refused (INVALID_ARGUMENT): Concord has no system streams.
pub(crate) fn stream_name(id: Option<&StreamIdentifier>) -> Result<StreamName, GrpcError> {
    let id = id.ok_or_else(|| GrpcError::Invalid("stream_identifier is required".to_owned()))?;
    let text = std::str::from_utf8(&id.stream_name)
        .map_err(|_| GrpcError::Invalid("the stream name is not UTF-8".to_owned()))?;
    StreamName::new(text).map_err(|e| GrpcError::Invalid(e.to_string()))
}

pub(crate) fn stream_identifier(stream: &StreamName) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: stream.as_str().as_bytes().to_vec(),
    }
}

/// An event id in either form the protocol allows.
pub(crate) fn event_id(id: Option<&ProtoUuid>) -> Result<EventId, GrpcError> {
    let value = id
        .and_then(|u| u.value.as_ref())
        .ok_or_else(|| GrpcError::Invalid("an event needs an id".to_owned()))?;
    let uuid = match value {
        uuid::Value::String(s) => Uuid::parse_str(s)
            .map_err(|e| GrpcError::Invalid(format!("malformed event id {s:?}: {e}")))?,
        uuid::Value::Structured(s) => Uuid::from_u64_pair(
            s.most_significant_bits.cast_unsigned(),
            s.least_significant_bits.cast_unsigned(),
        ),
    };
    Ok(EventId(uuid))
}

/// An event id in the form the reader asked for.
pub(crate) fn proto_uuid(id: &Uuid, as_string: bool) -> ProtoUuid {
    let value = if as_string {
        uuid::Value::String(id.hyphenated().to_string())
    } else {
        let (most, least) = id.as_u64_pair();
        uuid::Value::Structured(uuid::Structured {
            most_significant_bits: most.cast_signed(),
            least_significant_bits: least.cast_signed(),
        })
    };
    ProtoUuid { value: Some(value) }
}

/// The expected revision, as the protocol states it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Expected {
    Revision(u64),
    NoStream,
    Any,
    StreamExists,
}

impl Expected {
    pub(crate) fn to_core(self) -> Result<ExpectedVersion, GrpcError> {
        Ok(match self {
            Expected::Revision(r) => {
                ExpectedVersion::Exact(Version(r.checked_add(1).ok_or_else(|| {
                    GrpcError::Invalid(format!("expected revision {r} is out of range"))
                })?))
            }
            Expected::NoStream => ExpectedVersion::NoStream,
            Expected::Any => ExpectedVersion::Any,
            Expected::StreamExists => ExpectedVersion::Exists,
        })
    }
}

/// A stream's revision: `None` for a stream with no events (the protocol's `no_stream`).
pub(crate) fn revision(version: Version) -> Option<u64> {
    version.get().checked_sub(1)
}

/// One proposed message as a core event.
pub(crate) fn new_event(
    id: Option<&ProtoUuid>,
    metadata: &HashMap<String, String>,
    custom_metadata: Vec<u8>,
    data: Vec<u8>,
) -> Result<NewEvent, GrpcError> {
    let id = event_id(id)?;
    let required = |key: &str| {
        metadata.get(key).ok_or_else(|| {
            GrpcError::Invalid(format!("Required Metadata Property '{key}' is missing"))
        })
    };
    let event_type =
        EventType::new(required("type")?).map_err(|e| GrpcError::Invalid(e.to_string()))?;
    let content_type = ContentType::new(required("content-type")?)
        .map_err(|e| GrpcError::Invalid(e.to_string()))?;
    let data = Payload::new(content_type, data).map_err(|e| GrpcError::Invalid(e.to_string()))?;
    Ok(NewEvent::new(event_type, data)
        .with_id(id)
        .with_metadata(metadata_from_custom(custom_metadata)))
}

fn metadata_from_custom(custom: Vec<u8>) -> Json {
    if custom.is_empty() {
        return Json::empty_object();
    }
    if custom.as_slice() != b"{}"
        && let Ok(json) = Json::from_bytes("metadata", custom.clone())
        && json.is_object()
        && !is_wrapped(&json)
    {
        return json;
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&custom);
    Json::from_value(&serde_json::json!({ CUSTOM_METADATA_MEMBER: encoded }))
}

fn is_wrapped(json: &Json) -> bool {
    unwrap_custom(json).is_some()
}

/// The bytes a wrapped custom metadata object carries.
fn unwrap_custom(json: &Json) -> Option<Vec<u8>> {
    let value = json.to_value().ok()?;
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    let encoded = object.get(CUSTOM_METADATA_MEMBER)?.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
}

/// The custom metadata bytes of a recorded event.
pub(crate) fn custom_from_metadata(metadata: &Json) -> Vec<u8> {
    let bytes = metadata.as_bytes();
    if bytes.trim_ascii() == b"{}" {
        return Vec::new();
    }
    if bytes
        .windows(CUSTOM_METADATA_MEMBER.len())
        .any(|w| w == CUSTOM_METADATA_MEMBER.as_bytes())
        && let Some(custom) = unwrap_custom(metadata)
    {
        return custom;
    }
    bytes.to_vec()
}

/// 100 ns ticks since the Unix epoch, as the protocol's `created`.
pub(crate) fn ticks(millis: u64) -> u64 {
    millis.saturating_mul(10_000)
}

/// A recorded event as the protocol's `ReadEvent`.
pub(crate) fn read_event(
    event: &RecordedEvent,
    uuid_as_string: bool,
) -> crate::proto::event_store::client::streams::read_resp::ReadEvent {
    use crate::proto::event_store::client::streams::read_resp::{ReadEvent, read_event};
    let position = event.position.get();
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_owned(), event.event_type.as_str().to_owned());
    metadata.insert(
        "content-type".to_owned(),
        event.data.content_type().to_owned(),
    );
    metadata.insert(
        "created".to_owned(),
        ticks(event.recorded_at.as_millis()).to_string(),
    );
    ReadEvent {
        event: Some(read_event::RecordedEvent {
            id: Some(proto_uuid(event.id.as_uuid(), uuid_as_string)),
            stream_identifier: Some(stream_identifier(&event.stream)),
            stream_revision: revision(event.version).unwrap_or(0),
            prepare_position: position,
            commit_position: position,
            metadata,
            custom_metadata: custom_from_metadata(&event.metadata),
            data: event.data.as_bytes().to_vec(),
        }),
        link: None,
        position: Some(read_event::Position::CommitPosition(position)),
    }
}

/// The shared `WrongExpectedVersion` detail (BatchAppend's error).
pub(crate) fn shared_wrong_expected_version(
    expected: Expected,
    actual: Version,
) -> crate::proto::event_store::client::WrongExpectedVersion {
    use crate::proto::event_store::client::wrong_expected_version::{
        CurrentStreamRevisionOption as C, ExpectedStreamPositionOption as E,
    };
    crate::proto::event_store::client::WrongExpectedVersion {
        current_stream_revision_option: Some(match revision(actual) {
            Some(r) => C::CurrentStreamRevision(r),
            None => C::CurrentNoStream(()),
        }),
        expected_stream_position_option: Some(match expected {
            Expected::Revision(r) => E::ExpectedStreamPosition(r),
            Expected::Any => E::ExpectedAny(()),
            Expected::StreamExists => E::ExpectedStreamExists(()),
            Expected::NoStream => E::ExpectedNoStream(()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(custom: &[u8]) -> Vec<u8> {
        custom_from_metadata(&metadata_from_custom(custom.to_vec()))
    }

    #[test]
    fn custom_metadata_of_any_bytes_reads_back_byte_for_byte() {
        for custom in [
            &b""[..],
            b"{}",
            b"{ \"a\" : 1 }",
            b"[1,2]",
            b"\x00\xff binary",
            b"{\"$custom_metadata_base64\":\"AA==\"}",
        ] {
            assert_eq!(round_trip(custom), custom, "{custom:?}");
        }
    }

    #[test]
    fn a_json_object_is_stored_as_the_metadata_itself() {
        let json = metadata_from_custom(b"{\"trace\":\"x\"}".to_vec());
        assert_eq!(json.as_bytes(), b"{\"trace\":\"x\"}");
    }

    #[test]
    fn a_structured_uuid_is_the_big_endian_halves() {
        let id = Uuid::parse_str("0f8fad5b-d9cb-469f-a165-70867728950e").expect("valid");
        let wire = proto_uuid(&id, false);
        assert_eq!(event_id(Some(&wire)).expect("decodes").0, id);
        let text = proto_uuid(&id, true);
        assert_eq!(event_id(Some(&text)).expect("decodes").0, id);
    }

    #[test]
    fn a_malformed_uuid_is_invalid() {
        let wire = ProtoUuid {
            value: Some(uuid::Value::String("not-a-uuid".to_owned())),
        };
        assert!(matches!(event_id(Some(&wire)), Err(GrpcError::Invalid(_))));
    }
}
