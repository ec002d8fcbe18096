//! Request and response bodies of the endpoints.

use concord_core::{
    AppendCondition, AppendOutcome, AppendRequest, Appended, EventType, ExpectedVersion,
    MultiAppendOutcome, MultiAppendRequest, NewEvent, Position, Query, QueryPage, RecordedEvent,
    StreamInfo, StreamName, Version,
};
use serde::{Deserialize, Serialize};

/// The body of `POST /streams/{stream}`.
///
/// Unknown members are refused: a misspelt `expected_version` must not silently become
/// `"any"`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct AppendBody {
    /// The writer's claim (default `"any"`); `If-Match` may say it instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<ExpectedVersion>,
    /// Server-side rebase: the event types that forbid it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebase_unless: Option<Vec<EventType>>,
    /// The events, 1 to the configured maximum.
    pub events: Vec<NewEvent>,
}

// Bodies are JSON objects, never arrays of their members.
concord_core::object_serde!(AppendBody);
concord_core::object_serde!(AppendPartBody);
concord_core::object_serde!(MultiAppendBody);
concord_core::object_serde!(QueryBody);

/// The answer to an append: 201 (written, maybe rebased) or 200 (duplicate).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AppendResult {
    /// The stream.
    pub stream: StreamName,
    /// The first event's version.
    pub first_version: Version,
    /// The last event's version (also the `ETag`).
    pub last_version: Version,
    /// The first event's position.
    pub first_position: Position,
    /// The last event's position.
    pub last_position: Position,
    /// Present when a server-side rebase happened.
    pub rebased: Option<Rebased>,
    /// Whether nothing was written because every id was already there (status 200).
    #[serde(default)]
    pub duplicate: bool,
}

/// What a server-side rebase moved the append over.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Rebased {
    /// The stale expected version the writer sent.
    pub expected_version: Version,
    /// The events after it (the first 100).
    pub concurrent_events: Vec<RecordedEvent>,
}

impl From<AppendOutcome> for AppendResult {
    fn from(outcome: AppendOutcome) -> Self {
        let (a, rebased, duplicate) = match outcome {
            AppendOutcome::Appended(a) => (a, None, false),
            AppendOutcome::Duplicate(a) => (a, None, true),
            AppendOutcome::Rebased {
                appended,
                expected_version,
                concurrent_events,
            } => (
                appended,
                Some(Rebased {
                    expected_version,
                    concurrent_events,
                }),
                false,
            ),
        };
        AppendResult {
            stream: a.stream,
            first_version: a.first_version,
            last_version: a.last_version,
            first_position: a.first_position,
            last_position: a.last_position,
            rebased,
            duplicate,
        }
    }
}

impl From<AppendResult> for AppendOutcome {
    fn from(r: AppendResult) -> Self {
        let appended = Appended {
            stream: r.stream,
            first_version: r.first_version,
            last_version: r.last_version,
            first_position: r.first_position,
            last_position: r.last_position,
        };
        match (r.duplicate, r.rebased) {
            (true, _) => AppendOutcome::Duplicate(appended),
            (
                false,
                Some(Rebased {
                    expected_version,
                    concurrent_events,
                }),
            ) => AppendOutcome::Rebased {
                appended,
                expected_version,
                concurrent_events,
            },
            (false, None) => AppendOutcome::Appended(appended),
        }
    }
}

/// One stale part of a multi-stream append, in a `version-conflict` problem's `parts`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ConflictPart {
    /// The stream.
    pub stream: StreamName,
    /// The expectation as sent.
    pub expected_version: ExpectedVersion,
    /// The stream's version.
    pub actual_version: Version,
    /// The events after the expected version (the first 100).
    pub concurrent_events: Vec<RecordedEvent>,
    /// Whether more concurrent events exist than are listed (an addition to API.md).
    #[serde(default)]
    pub truncated: bool,
}

/// One part of `POST /append`: the body of a single append plus its stream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct AppendPartBody {
    /// The stream to append to.
    pub stream: StreamName,
    /// The writer's claim (default `"any"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<ExpectedVersion>,
    /// Server-side rebase of this part: the event types that forbid it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebase_unless: Option<Vec<EventType>>,
    /// The events, 1 to the configured maximum.
    pub events: Vec<NewEvent>,
}

/// The body of `POST /append`: 1–100 parts, each stream at most once, and an optional
/// condition.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct MultiAppendBody {
    /// The parts, written atomically with consecutive positions, or none is.
    pub parts: Vec<AppendPartBody>,
    /// Fail when an event matching the query has a position greater than `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<AppendCondition>,
}

impl From<MultiAppendBody> for MultiAppendRequest {
    fn from(body: MultiAppendBody) -> Self {
        MultiAppendRequest {
            parts: body
                .parts
                .into_iter()
                .map(|p| AppendRequest {
                    stream: p.stream,
                    expected: p.expected_version.unwrap_or_default(),
                    events: p.events,
                    rebase_unless: p.rebase_unless,
                })
                .collect(),
            condition: body.condition,
        }
    }
}

impl From<MultiAppendRequest> for MultiAppendBody {
    fn from(request: MultiAppendRequest) -> Self {
        MultiAppendBody {
            parts: request
                .parts
                .into_iter()
                .map(|p| AppendPartBody {
                    stream: p.stream,
                    expected_version: Some(p.expected),
                    rebase_unless: p.rebase_unless,
                    events: p.events,
                })
                .collect(),
            condition: request.condition,
        }
    }
}

/// Where one part of `POST /append` landed.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PartResult {
    /// The stream.
    pub stream: StreamName,
    /// The part's first event's version.
    pub first_version: Version,
    /// The part's last event's version.
    pub last_version: Version,
    /// The part's first event's position.
    pub first_position: Position,
    /// The part's last event's position.
    pub last_position: Position,
    /// Present when this part was rebased server-side (an addition to API.md).
    #[serde(default)]
    pub rebased: Option<Rebased>,
}

/// The answer to `POST /append`: 201 (written) or 200 (duplicate).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MultiAppendResult {
    /// One entry per part, in request order.
    pub parts: Vec<PartResult>,
    /// The first position written (for a duplicate, the lowest original one).
    pub first_position: Position,
    /// The last position written (for a duplicate, the highest original one).
    pub last_position: Position,
    /// Whether nothing was written because every id of every part was already there
    /// (status 200).
    #[serde(default)]
    pub duplicate: bool,
}

impl From<MultiAppendOutcome> for MultiAppendResult {
    fn from(outcome: MultiAppendOutcome) -> Self {
        MultiAppendResult {
            parts: outcome
                .parts
                .into_iter()
                .map(|p| {
                    let r = AppendResult::from(p);
                    PartResult {
                        stream: r.stream,
                        first_version: r.first_version,
                        last_version: r.last_version,
                        first_position: r.first_position,
                        last_position: r.last_position,
                        rebased: r.rebased,
                    }
                })
                .collect(),
            first_position: outcome.first_position,
            last_position: outcome.last_position,
            duplicate: outcome.duplicate,
        }
    }
}

impl From<MultiAppendResult> for MultiAppendOutcome {
    fn from(r: MultiAppendResult) -> Self {
        MultiAppendOutcome {
            parts: r
                .parts
                .into_iter()
                .map(|p| {
                    AppendOutcome::from(AppendResult {
                        stream: p.stream,
                        first_version: p.first_version,
                        last_version: p.last_version,
                        first_position: p.first_position,
                        last_position: p.last_position,
                        rebased: p.rebased,
                        duplicate: r.duplicate,
                    })
                })
                .collect(),
            first_position: r.first_position,
            last_position: r.last_position,
            duplicate: r.duplicate,
        }
    }
}

/// The body of `POST /query`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct QueryBody {
    /// The query: items combined with OR; `{"items": []}` matches every event.
    pub query: Query,
    /// Only events with positions greater than this (default 0).
    #[serde(default)]
    pub after: Position,
    /// At most this many events (default 100, at most the read limit).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "concord_core::deserialize_optional_count"
    )]
    pub limit: Option<usize>,
}

/// The answer to `POST /query`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct QueryResult {
    /// The matching events after `after` (and at most `head`), in position order.
    pub events: Vec<RecordedEvent>,
    /// The store's last position when read: the `after` for a condition on this read.
    pub head: Position,
    /// The `after` of the next page, or `null` when this page reached `head`.
    pub next: Option<Position>,
}

impl From<QueryPage> for QueryResult {
    fn from(p: QueryPage) -> Self {
        QueryResult {
            events: p.events,
            head: p.head,
            next: p.next,
        }
    }
}

impl From<QueryResult> for QueryPage {
    fn from(r: QueryResult) -> Self {
        QueryPage {
            events: r.events,
            head: r.head,
            next: r.next,
        }
    }
}

/// `GET /streams/{stream}`: one page of a stream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StreamPage {
    /// The stream.
    pub stream: StreamName,
    /// Its current version (also the `ETag`).
    pub version: Version,
    /// The events, in the direction asked.
    pub events: Vec<RecordedEvent>,
    /// The `from` of the following page, or `null` when this page reached the end.
    pub next: Option<Version>,
}

/// `GET /all`: one page of the global log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AllEvents {
    /// The matching events, in position order.
    pub events: Vec<RecordedEvent>,
    /// The `from` of the following page, or `null` when the read reached the head.
    pub next: Option<Position>,
    /// The store's last position when the page was read.
    pub head: Position,
}

/// `GET /streams`: streams ordered by name.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StreamList {
    /// The streams.
    pub streams: Vec<StreamInfo>,
    /// The `after` of the following page, or `null` when the listing is complete.
    pub next: Option<StreamName>,
}

/// `GET /head`: the store's last position (an addition to API.md, used for long polls).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HeadBody {
    /// The last position in the store (0 when empty).
    pub head: Position,
}

/// `GET /health`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `unavailable` (with status 503).
    pub status: String,
    /// The backend's name (`memory`, `embedded`, `redis`).
    pub store: String,
    /// The server's version (`concord --version`).
    #[serde(default)]
    pub version: String,
    /// With `unavailable`: why, and what to do (`the store is poisoned …; restart the
    /// server`, `the store cannot be reached`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use concord_core::doc;

    #[test]
    fn append_body_refuses_unknown_members() {
        let err = serde_json::from_str::<AppendBody>(r#"{"expected_vesion": 1, "events": []}"#)
            .unwrap_err();
        assert!(err.to_string().contains("expected_vesion"), "{err}");
    }

    #[test]
    fn bodies_are_objects_never_arrays() {
        for bad in [
            r#"[null, null, [{"type": "T", "data": 1}]]"#,
            r#"{"events": [], "expected_version": 1, "rebase_unless": [], "x": 1}"#,
        ] {
            assert!(serde_json::from_str::<AppendBody>(bad).is_err(), "{bad}");
        }
        let e = serde_json::from_str::<MultiAppendBody>(
            r#"{"parts": [["x-1", null, null, [{"type": "T", "data": 1}]]]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected a JSON object"), "{e}");
        assert!(serde_json::from_str::<QueryBody>(r#"[{"items": []}, 0, 10]"#).is_err());
        assert!(
            serde_json::from_str::<MultiAppendBody>(
                r#"{"parts": [], "condition": [{"items": []}, 0]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn multi_append_body_reads_the_api_example() {
        let body: MultiAppendBody = serde_json::from_value(serde_json::json!({
            "parts": [{"stream": "account-1", "expected_version": 3, "events": [{"type": "Withdrawn", "data": {"amount": 5}}]},
                      {"stream": "account-2", "expected_version": 7, "events": [{"type": "Deposited", "data": {"amount": 5}}]}],
            "condition": {"fail_if_events_match": {"items": [{"types": ["UserRegistered"], "tags": ["username:alice"]}]},
                          "after": 41}}))
        .unwrap();
        let request = MultiAppendRequest::from(body.clone());
        assert_eq!(request.parts.len(), 2);
        assert_eq!(
            request.parts[1].expected,
            ExpectedVersion::Exact(Version(7))
        );
        assert_eq!(request.condition.as_ref().unwrap().after, Position(41));
        assert_eq!(MultiAppendBody::from(request), body);
        assert!(
            serde_json::from_value::<MultiAppendBody>(
                serde_json::json!({"parts": [], "conditon": {}})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<QueryBody>(
                serde_json::json!({"query": {"items": [{"tags": [""]}]}})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<QueryBody>(
                serde_json::json!({"query": {"items": [{"tags": ["a,b"]}]}})
            )
            .is_err()
        );
    }

    #[test]
    fn append_result_round_trips_every_outcome() {
        let a = Appended {
            stream: doc::stream("account-1"),
            first_version: Version(2),
            last_version: Version(2),
            first_position: Position(7),
            last_position: Position(7),
        };
        for outcome in [
            AppendOutcome::Appended(a.clone()),
            AppendOutcome::Duplicate(a.clone()),
            AppendOutcome::Rebased {
                appended: a,
                expected_version: Version(1),
                concurrent_events: vec![],
            },
        ] {
            let wire = serde_json::to_value(AppendResult::from(outcome.clone())).unwrap();
            assert!(
                wire.get("rebased").is_some(),
                "rebased is always present: {wire}"
            );
            let back: AppendResult = serde_json::from_value(wire).unwrap();
            assert_eq!(AppendOutcome::from(back), outcome);
        }
    }
}
