//! Bodies and parameters of the lifecycle endpoints: `DELETE /streams/{stream}`,
//! `GET|PUT /streams/{stream}/metadata` and `POST /admin/scavenge`.

use concord_core::{MetadataChange, StreamMetadata, Version};
use serde::{Deserialize, Deserializer, Serialize};

/// `DELETE /streams/{stream}`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteStreamParams {
    /// The stream's current version, when the caller wants the delete to be conditional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// `true`: a hard delete (tombstone), forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<bool>,
}

/// The body of `PUT /streams/{stream}/metadata`: a change of the stream's retention
/// settings. A member left out keeps its setting, `null` removes it, a positive integer
/// sets it.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct MetadataBody {
    /// Keep only the last n events.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_count: Option<Option<u64>>,
    /// Keep only events recorded less than this many seconds ago.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age_seconds: Option<Option<u64>>,
    /// Keep only events with a version at least this.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub truncate_before: Option<Option<u64>>,
}

concord_core::object_serde!(MetadataBody);

/// A member that is there: `null` (`Some(None)`) or a value; absent is `None` by default.
/// The value is a whole number however JSON writes it (`3`, `3.0`), as [`Version`] reads it.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<Version>::deserialize(d).map(|n| Some(n.map(Version::get)))
}

impl MetadataBody {
    /// The change this body asks for, applied by the store in one atomic step.
    pub fn change(&self) -> MetadataChange {
        MetadataChange {
            max_count: self.max_count,
            max_age_seconds: self.max_age_seconds,
            truncate_before: self.truncate_before.map(|t| t.map(Version)),
        }
    }

    /// `current` with this change applied.
    pub fn apply(&self, current: StreamMetadata) -> StreamMetadata {
        self.change().apply(current)
    }

    /// The body that asks for `change`.
    pub fn from_change(change: MetadataChange) -> Self {
        MetadataBody {
            max_count: change.max_count,
            max_age_seconds: change.max_age_seconds,
            truncate_before: change.truncate_before.map(|t| t.map(Version::get)),
        }
    }

    /// The change that sets exactly `metadata` (every member, `null` where unset).
    pub fn replacing(metadata: StreamMetadata) -> Self {
        Self::from_change(MetadataChange::replacing(metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keeps_null_removes_a_number_sets() {
        let body: MetadataBody =
            serde_json::from_str(r#"{"max_count": 5, "max_age_seconds": null}"#).unwrap();
        let current = StreamMetadata {
            max_count: Some(1),
            max_age_seconds: Some(60),
            truncate_before: Some(Version(3)),
        };
        assert_eq!(
            body.apply(current),
            StreamMetadata {
                max_count: Some(5),
                max_age_seconds: None,
                truncate_before: Some(Version(3)),
            }
        );
        for bad in [
            r#"{"max_count": -1}"#,
            r#"{"max_count": "5"}"#,
            r#"{"max_count": 2.5}"#,
            r#"{"other": 1}"#,
            "[]",
        ] {
            assert!(serde_json::from_str::<MetadataBody>(bad).is_err(), "{bad}");
        }
        // JSON has one kind of number: 258.0 is the whole number 258.
        let written_as_float: MetadataBody =
            serde_json::from_str(r#"{"truncate_before": 258.0, "max_age_seconds": 1e3}"#).unwrap();
        assert_eq!(written_as_float.truncate_before, Some(Some(258)));
        assert_eq!(written_as_float.max_age_seconds, Some(Some(1000)));
        let replacing = MetadataBody::replacing(StreamMetadata::NONE);
        assert_eq!(
            serde_json::to_string(&replacing).unwrap(),
            r#"{"max_count":null,"max_age_seconds":null,"truncate_before":null}"#
        );
    }
}
