//! RFC 9457 problem details: every error body Concord sends.
//!
//! The `type` is a `urn:concord:<name>` URN; the table of types, with their statuses and
//! members, is in `docs/http-api.md`. Members beyond the RFC's four are optional here
//! because each problem type uses a different few.

use concord_core::{EventId, ExpectedVersion, Position, RecordedEvent, StreamName, Version};
use serde::{Deserialize, Serialize};

use crate::bodies::ConflictPart;
use crate::projections::ProjectionFailure;

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The problem types Concord answers with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ProblemType {
    /// 409 (412 from `If-Match`): a stale expected version.
    VersionConflict,
    /// 409: some of the append's event ids are already in the stream.
    PartialDuplicate,
    /// 409: an append condition matched events.
    ConditionFailed,
    /// 400: input that breaks a rule of the API.
    InvalidRequest,
    /// 413: over a size or count limit.
    TooLarge,
    /// 404: the stream has no events.
    StreamNotFound,
    /// 404: the stream has no event at that version.
    EventNotFound,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, but not with this method.
    MethodNotAllowed,
    /// 401: missing or unknown token.
    Unauthorized,
    /// 403: outside the token's grants.
    Forbidden,
    /// 503: the backend cannot be reached.
    Unavailable,
    /// 500: anything else; details are in the server log only.
    Internal,
    /// 404: no projection of that name is hosted.
    ProjectionNotFound,
    /// 404: the read model has no row for that key.
    RowNotFound,
    /// 503: read-your-writes: the projection had not processed `min_position` when the
    /// wait ended (or it has failed before it).
    ProjectionBehind,
    /// 408: the request's body did not arrive within the server's body timeout.
    RequestTimeout,
    /// 410: the stream is tombstoned; every append, read and subscription of it is refused.
    StreamDeleted,
    /// 501: the store behind the server does not offer the operation.
    Unsupported,
    /// 404: no consumer group of that name exists.
    GroupNotFound,
    /// 409: a group's `source` or `from` cannot change.
    GroupConflict,
}

impl ProblemType {
    /// Every problem type, for docs and tests.
    pub const ALL: [ProblemType; 21] = [
        ProblemType::VersionConflict,
        ProblemType::PartialDuplicate,
        ProblemType::ConditionFailed,
        ProblemType::InvalidRequest,
        ProblemType::TooLarge,
        ProblemType::StreamNotFound,
        ProblemType::EventNotFound,
        ProblemType::NotFound,
        ProblemType::MethodNotAllowed,
        ProblemType::Unauthorized,
        ProblemType::Forbidden,
        ProblemType::Unavailable,
        ProblemType::Internal,
        ProblemType::ProjectionNotFound,
        ProblemType::RowNotFound,
        ProblemType::ProjectionBehind,
        ProblemType::RequestTimeout,
        ProblemType::StreamDeleted,
        ProblemType::Unsupported,
        ProblemType::GroupNotFound,
        ProblemType::GroupConflict,
    ];

    /// The `type` URN.
    pub fn urn(self) -> &'static str {
        match self {
            ProblemType::VersionConflict => "urn:concord:version-conflict",
            ProblemType::PartialDuplicate => "urn:concord:partial-duplicate",
            ProblemType::ConditionFailed => "urn:concord:condition-failed",
            ProblemType::InvalidRequest => "urn:concord:invalid-request",
            ProblemType::TooLarge => "urn:concord:too-large",
            ProblemType::StreamNotFound => "urn:concord:stream-not-found",
            ProblemType::EventNotFound => "urn:concord:event-not-found",
            ProblemType::NotFound => "urn:concord:not-found",
            ProblemType::MethodNotAllowed => "urn:concord:method-not-allowed",
            ProblemType::Unauthorized => "urn:concord:unauthorized",
            ProblemType::Forbidden => "urn:concord:forbidden",
            ProblemType::Unavailable => "urn:concord:unavailable",
            ProblemType::Internal => "urn:concord:internal",
            ProblemType::ProjectionNotFound => "urn:concord:projection-not-found",
            ProblemType::RowNotFound => "urn:concord:row-not-found",
            ProblemType::ProjectionBehind => "urn:concord:projection-behind",
            ProblemType::RequestTimeout => "urn:concord:request-timeout",
            ProblemType::StreamDeleted => "urn:concord:stream-deleted",
            ProblemType::Unsupported => "urn:concord:unsupported",
            ProblemType::GroupNotFound => "urn:concord:group-not-found",
            ProblemType::GroupConflict => "urn:concord:group-conflict",
        }
    }

    /// The fixed, human-readable `title`.
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::VersionConflict => "Version conflict",
            ProblemType::PartialDuplicate => "Partial duplicate",
            ProblemType::ConditionFailed => "Append condition failed",
            ProblemType::InvalidRequest => "Invalid request",
            ProblemType::TooLarge => "Too large",
            ProblemType::StreamNotFound => "Stream not found",
            ProblemType::EventNotFound => "Event not found",
            ProblemType::NotFound => "Not found",
            ProblemType::MethodNotAllowed => "Method not allowed",
            ProblemType::Unauthorized => "Unauthorized",
            ProblemType::Forbidden => "Forbidden",
            ProblemType::Unavailable => "Store unavailable",
            ProblemType::Internal => "Internal error",
            ProblemType::ProjectionNotFound => "Projection not found",
            ProblemType::RowNotFound => "Row not found",
            ProblemType::ProjectionBehind => "Projection behind",
            ProblemType::RequestTimeout => "Request timeout",
            ProblemType::StreamDeleted => "Stream deleted",
            ProblemType::Unsupported => "Not supported",
            ProblemType::GroupNotFound => "Group not found",
            ProblemType::GroupConflict => "Group conflict",
        }
    }

    /// The type named by `urn`, if Concord knows it.
    pub fn from_urn(urn: &str) -> Option<ProblemType> {
        ProblemType::ALL.into_iter().find(|t| t.urn() == urn)
    }
}

/// A problem+json body.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:concord:<name>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The type's fixed title.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this occurrence, with the values.
    pub detail: String,
    /// The stream concerned (`version-conflict`, `partial-duplicate`, `stream-not-found`,
    /// `event-not-found`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamName>,
    /// The expectation as sent (`version-conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<ExpectedVersion>,
    /// The stream's version when the append was checked (`version-conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<Version>,
    /// The events after the expected version, the first 100 (`version-conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_events: Option<Vec<RecordedEvent>>,
    /// Whether more concurrent or matching events exist than are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// The stale parts of a multi-stream append (`version-conflict` from `POST /append`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<ConflictPart>>,
    /// The request's ids already in the stream (`partial-duplicate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_ids: Option<Vec<EventId>>,
    /// The condition's position (`condition-failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Position>,
    /// The events that matched the condition, the first 100 (`condition-failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching_events: Option<Vec<RecordedEvent>>,
    /// The version asked for (`event-not-found`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// The field or parameter at fault (`invalid-request`), or what is too large
    /// (`too-large`: `event`, `events`, `request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The size found (`too-large`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The limit (`too-large`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// `bytes` or `events` (`too-large`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The projection concerned (`projection-not-found`, `row-not-found`,
    /// `projection-behind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<String>,
    /// The row's key asked for (`row-not-found`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The projection's checkpoint when the answer was given (`row-not-found`,
    /// `projection-behind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Position>,
    /// The position the caller asked to be processed (`projection-behind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_position: Option<Position>,
    /// Where and why the projection stopped, when it failed before `min_position`
    /// (`projection-behind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ProjectionFailure>,
    /// The consumer group concerned (`group-not-found`, `group-conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Problem {
    /// A problem of `problem_type` with `status` and `detail`, and no other members.
    pub fn new(problem_type: ProblemType, status: u16, detail: impl Into<String>) -> Self {
        Problem {
            problem_type: problem_type.urn().to_owned(),
            title: problem_type.title().to_owned(),
            status,
            detail: detail.into(),
            stream: None,
            expected_version: None,
            actual_version: None,
            concurrent_events: None,
            truncated: None,
            parts: None,
            existing_ids: None,
            after: None,
            matching_events: None,
            version: None,
            field: None,
            size: None,
            max: None,
            unit: None,
            projection: None,
            key: None,
            checkpoint: None,
            min_position: None,
            failure: None,
            group: None,
        }
    }

    /// The known type of this problem, if any.
    pub fn known_type(&self) -> Option<ProblemType> {
        ProblemType::from_urn(&self.problem_type)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_problem_type_round_trips_through_its_urn() {
        for t in ProblemType::ALL {
            assert!(t.urn().starts_with("urn:concord:"));
            assert_eq!(ProblemType::from_urn(t.urn()), Some(t));
        }
    }

    #[test]
    fn a_problem_serialises_only_the_members_it_has() {
        let p = Problem::new(ProblemType::InvalidRequest, 400, "stream must not be empty");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "urn:concord:invalid-request", "title": "Invalid request",
                               "status": 400, "detail": "stream must not be empty"})
        );
    }
}
