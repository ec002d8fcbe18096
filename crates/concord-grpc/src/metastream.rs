//! KurrentDB's metadata streams (`$$name`) over Concord's retention settings.
//!
//! The official clients set a stream's metadata by appending one `$metadata` event of JSON
//! (`{"$maxCount": n, "$maxAge": seconds, "$tb": revision, ...}`) to `$$name`, and get it by
//! reading `$$name` backwards, one event. Concord keeps the settings beside the stream
//! ([`StreamMetadata`]), not as events, so an append here is a `set_stream_metadata` and a
//! read answers one event made from the stored settings.
//!
//! Why the metadata stream's revision is 0 or "no stream": Concord stores the settings, not
//! a history of them, so there is no count of changes to report. The metadata stream is
//! said to hold one event (revision 0) while any setting is stored and none otherwise; an
//! expectation is checked against that, so the clients' read-modify-write
//! (`get_stream_metadata`, then `set_stream_metadata` with the revision read) works, but
//! two writers that both read revision 0 both succeed (the last one wins).
//!
//! Keys other than `$maxCount`, `$maxAge` and `$tb` (`$acl`, `$cacheControl`, custom keys)
//! are accepted and dropped: Concord has no place for them.

use std::collections::HashMap;

use concord_core::{EventStore, StreamMetadata, StreamName, Version};
use serde_json::{Map, Value};

use crate::GrpcConfig;
use crate::auth::{Action, Caller};
use crate::convert::{self, Expected};
use crate::error::GrpcError;
use crate::proto::event_store::client::StreamIdentifier;
use crate::proto::event_store::client::streams::read_resp::{ReadEvent, read_event};
use crate::streams::Appended;

/// What a metadata stream's name starts with.
const PREFIX: &str = "$$";
/// The type of the one event a metadata stream holds.
pub(crate) const EVENT_TYPE: &str = "$metadata";

const MAX_COUNT: &str = "$maxCount";
const MAX_AGE: &str = "$maxAge";
const TRUNCATE_BEFORE: &str = "$tb";

/// The largest setting the store keeps.
const SETTING_MAX: u64 = i64::MAX as u64;

/// A stream name from the wire, or the stream whose metadata stream (`$$name`) it names.
pub(crate) enum Target {
    Stream(StreamName),
    Metadata(StreamName),
}

impl Target {
    pub(crate) fn of(id: Option<&StreamIdentifier>) -> Result<Target, GrpcError> {
        if let Some(stripped) = id.and_then(|id| id.stream_name.strip_prefix(PREFIX.as_bytes())) {
            let stream = convert::stream_name(Some(&StreamIdentifier {
                stream_name: stripped.to_vec(),
            }))?;
            return Ok(Target::Metadata(stream));
        }
        convert::stream_name(id).map(Target::Stream)
    }
}

/// The metadata stream's revision while `settings` are stored.
fn revision(settings: &StreamMetadata) -> Option<u64> {
    (!settings.is_empty()).then_some(0)
}

/// The metadata stream's version (for the expectation and its error) while `settings` are
/// stored.
fn version(settings: &StreamMetadata) -> Version {
    if settings.is_empty() {
        Version::NONE
    } else {
        Version(1)
    }
}

/// The settings one proposed `$metadata` event carries.
pub(crate) fn settings(
    metadata: &HashMap<String, String>,
    data: &[u8],
) -> Result<StreamMetadata, GrpcError> {
    let event_type = metadata.get("type").map(String::as_str);
    if event_type != Some(EVENT_TYPE) {
        return Err(GrpcError::Invalid(format!(
            "a metadata stream takes one {EVENT_TYPE} event, not {event_type:?}"
        )));
    }
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| GrpcError::Invalid(format!("the {EVENT_TYPE} event is not JSON: {e}")))?;
    let object = value.as_object().ok_or_else(|| {
        GrpcError::Invalid(format!("the {EVENT_TYPE} event must be a JSON object"))
    })?;
    let setting = |key: &str, least: u64| -> Result<Option<u64>, GrpcError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (least..=SETTING_MAX).contains(&n) => Ok(Some(n)),
                _ => Err(GrpcError::Invalid(format!(
                    "{key} must be an integer from {least} to {SETTING_MAX}, got {v}"
                ))),
            },
        }
    };
    Ok(StreamMetadata {
        max_count: setting(MAX_COUNT, 1)?,
        max_age_seconds: setting(MAX_AGE, 1)?,
        // Truncating before revision r keeps versions r + 1 on; KurrentDB's own largest
        // `$tb` (2^63 − 1, its soft-delete mark) has no version above it and keeps none.
        truncate_before: setting(TRUNCATE_BEFORE, 0)?
            .map(|r| Version(r.saturating_add(1).min(SETTING_MAX))),
    })
}

/// The JSON of the one event a metadata stream shows for `settings`.
fn json(settings: &StreamMetadata) -> Vec<u8> {
    let mut object = Map::new();
    if let Some(n) = settings.max_count {
        object.insert(MAX_COUNT.to_owned(), n.into());
    }
    if let Some(s) = settings.max_age_seconds {
        object.insert(MAX_AGE.to_owned(), s.into());
    }
    if let Some(v) = settings.truncate_before {
        object.insert(TRUNCATE_BEFORE.to_owned(), v.get().saturating_sub(1).into());
    }
    Value::Object(object).to_string().into_bytes()
}

/// Sets `stream`'s settings from a `$metadata` append if `expected` holds (`None`: an
/// append of no event, which only checks it).
pub(crate) async fn append(
    store: &dyn EventStore,
    config: &GrpcConfig,
    caller: &Caller,
    stream: StreamName,
    expected: Expected,
    settings: Option<StreamMetadata>,
) -> Result<Appended, GrpcError> {
    caller.check(config.gate.as_ref(), Action::Write(stream.as_str()))?;
    let current = store.stream_metadata(&stream).await?;
    if !expected.to_core()?.holds_for(version(&current)) {
        return Ok(Appended::WrongExpectedVersion {
            actual: version(&current),
        });
    }
    let now = match settings {
        Some(s) => store.set_stream_metadata(&stream, s).await?,
        None => current,
    };
    Ok(Appended::Done {
        revision: revision(&now),
        position: None,
    })
}

/// The event a read of `stream`'s metadata stream shows: `None` when no setting is stored.
pub(crate) async fn read(
    store: &dyn EventStore,
    stream: &StreamName,
    uuid_as_string: bool,
) -> Result<Option<ReadEvent>, GrpcError> {
    let settings = store.stream_metadata(stream).await?;
    if settings.is_empty() {
        return Ok(None);
    }
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_owned(), EVENT_TYPE.to_owned());
    metadata.insert("content-type".to_owned(), "application/json".to_owned());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    metadata.insert("created".to_owned(), convert::ticks(now).to_string());
    Ok(Some(ReadEvent {
        event: Some(read_event::RecordedEvent {
            id: Some(convert::proto_uuid(&uuid::Uuid::new_v4(), uuid_as_string)),
            stream_identifier: Some(identifier(stream)),
            stream_revision: 0,
            // Not in the global log: no position of its own.
            prepare_position: 0,
            commit_position: 0,
            metadata,
            custom_metadata: Vec::new(),
            data: json(&settings),
        }),
        link: None,
        position: Some(read_event::Position::CommitPosition(0)),
    }))
}

/// `$$stream`, as the wire names it.
pub(crate) fn identifier(stream: &StreamName) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: format!("{PREFIX}{}", stream.as_str()).into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Result<StreamMetadata, GrpcError> {
        let metadata = HashMap::from([
            ("type".to_owned(), EVENT_TYPE.to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ]);
        settings(&metadata, data.as_bytes())
    }

    #[test]
    fn truncate_before_revision_r_keeps_versions_from_r_plus_one() {
        let s =
            event(r#"{"$maxCount": 10, "$maxAge": 3600, "$tb": 5, "custom": "x"}"#).expect("valid");
        assert_eq!(
            s,
            StreamMetadata {
                max_count: Some(10),
                max_age_seconds: Some(3600),
                truncate_before: Some(Version(6)),
            }
        );
        let back: Value = serde_json::from_slice(&json(&s)).expect("JSON");
        assert_eq!(
            back,
            serde_json::json!({"$maxCount": 10, "$maxAge": 3600, "$tb": 5})
        );
    }

    #[test]
    fn null_or_absent_settings_are_unset() {
        assert_eq!(
            event(r#"{"$maxCount": null, "$acl": {"$r": "admin"}}"#).expect("valid"),
            StreamMetadata::NONE
        );
    }

    #[test]
    fn a_setting_that_is_no_positive_integer_is_invalid() {
        for data in [
            r#"{"$maxCount": 0}"#,
            r#"{"$maxAge": -1}"#,
            r#"{"$tb": 1.5}"#,
            r#"{"$maxCount": "10"}"#,
            "[1]",
            "not json",
        ] {
            assert!(matches!(event(data), Err(GrpcError::Invalid(_))), "{data}");
        }
    }

    #[test]
    fn kurrentdbs_largest_truncate_before_is_kept_as_the_largest_version() {
        let s = event(&format!("{{\"$tb\": {}}}", i64::MAX)).expect("valid");
        assert_eq!(s.truncate_before, Some(Version(SETTING_MAX)));
    }

    #[test]
    fn another_event_type_is_invalid() {
        let metadata = HashMap::from([("type".to_owned(), "Other".to_owned())]);
        assert!(matches!(
            settings(&metadata, b"{}"),
            Err(GrpcError::Invalid(_))
        ));
    }

    #[test]
    fn a_double_dollar_name_is_the_metadata_stream_of_the_rest() {
        let id = StreamIdentifier {
            stream_name: b"$$order-1".to_vec(),
        };
        assert!(
            matches!(Target::of(Some(&id)), Ok(Target::Metadata(s)) if s.as_str() == "order-1")
        );
        let id = StreamIdentifier {
            stream_name: b"$$$x".to_vec(),
        };
        assert!(matches!(Target::of(Some(&id)), Err(GrpcError::Invalid(_))));
    }
}
