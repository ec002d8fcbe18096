//! `ClientError`: what can go wrong on the client's side of the wire, and the mapping of
//! problem responses back into the [`StoreError`] the server's store returned.

use concord_api::{Problem, ProblemType};
use concord_core::{
    ConditionFailed, Conflict, ExpectedVersion, InvalidInput, PartialDuplicate, Query, StoreError,
    TooLarge, Version,
};
use concord_groups::{GroupError, GroupName};

use crate::BACKEND;

/// Why a request made by the client failed, before it becomes a [`StoreError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is unusable.
    #[error("server URL {0:?} is not usable: {1}")]
    BadUrl(String, String),
    /// The server answered with a problem this client maps to no [`StoreError`] variant
    /// (401, 403, 404 on a route, 405, 500).
    #[error("the server answered {status} {problem_type}: {detail}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The problem type URN.
        problem_type: String,
        /// The problem's detail.
        detail: String,
    },
    /// A `stream-not-found` or `event-not-found` answer (an empty read to the trait).
    #[error("not found")]
    NotFound,
    /// A problem that maps to a [`StoreError`].
    #[error(transparent)]
    Store(StoreError),
    /// A consumer group's own problem (`group-not-found`, `group-conflict`).
    #[error(transparent)]
    Group(GroupError),
}

impl From<ClientError> for GroupError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Group(g) => g,
            ClientError::Store(StoreError::Invalid(i)) => GroupError::Invalid(i),
            other => GroupError::Store(other.into()),
        }
    }
}

/// The status of an answer the client could map to no [`StoreError`] variant (401, 403,
/// …): the `source` of the [`StoreError::Backend`] it becomes, so a caller can tell an
/// unauthorized request from a server that cannot be reached. See [`refused_status`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("HTTP status {0}")]
pub struct RefusedStatus(pub u16);

/// The HTTP status a server refused a request with (401 without a known token, 403 outside
/// its grants, …), when that is what `error` is.
pub fn refused_status(error: &StoreError) -> Option<u16> {
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        if let Some(RefusedStatus(status)) = c.downcast_ref::<RefusedStatus>() {
            return Some(*status);
        }
        cause = c.source();
    }
    None
}

impl From<ClientError> for StoreError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Store(s) => s,
            ClientError::BadUrl(url, why) => StoreError::Invalid(InvalidInput::new(
                "url",
                format!("server URL {url:?} is not usable: {why}"),
            )),
            ClientError::Refused {
                status,
                problem_type,
                detail,
            } => StoreError::Backend {
                backend: BACKEND,
                message: format!("the server answered {status} {problem_type}: {detail}"),
                source: Some(Box::new(RefusedStatus(status))),
            },
            ClientError::Group(GroupError::Store(s)) => s,
            ClientError::Group(GroupError::Invalid(i)) => StoreError::Invalid(i),
            ClientError::Group(g) => StoreError::Backend {
                backend: BACKEND,
                message: g.to_string(),
                source: None,
            },
            other @ ClientError::NotFound => StoreError::Backend {
                backend: BACKEND,
                message: other.to_string(),
                source: None,
            },
        }
    }
}

/// A transport failure (connection refused or reset, timeout): the server may or may not
/// have acted, so it is `Unavailable`, which says re-sending with the same ids is safe.
pub(crate) fn transport_error(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable(BACKEND, "the request to the server failed", e)
}

/// The names of `InvalidInput::field` and `TooLarge::what` are `&'static str`; a field name
/// from the wire is matched against the ones the server uses.
fn static_name(name: Option<&str>) -> &'static str {
    const KNOWN: [&str; 36] = [
        "stream",
        "category",
        "type",
        "types",
        "tag",
        "tags",
        "id",
        "data",
        "metadata",
        "events",
        "event",
        "expected_version",
        "rebase_unless",
        "body",
        "query",
        "path",
        "limit",
        "after",
        "from",
        "version",
        "direction",
        "prefix",
        "If-Match",
        "Last-Event-ID",
        "request",
        "url",
        "group",
        "consumer",
        "max",
        "wait_ms",
        "ack_ids",
        "action",
        "source",
        "max_deliveries",
        "ack_timeout_ms",
        "ordering",
    ];
    name.and_then(|n| KNOWN.into_iter().find(|k| *k == n))
        .unwrap_or("request")
}

/// Reads a non-success answer as a problem and maps it back to what the store said.
pub(crate) fn problem_error(status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<Problem>(bytes) {
        Ok(problem) => from_problem(status, problem),
        Err(_) if status == 503 || status == 502 || status == 504 => {
            ClientError::Store(StoreError::Unavailable {
                backend: BACKEND,
                message: format!("the server answered {status}"),
                source: None,
            })
        }
        Err(_) => ClientError::Refused {
            status,
            problem_type: "(not a problem+json body)".to_owned(),
            detail: String::from_utf8_lossy(bytes).chars().take(200).collect(),
        },
    }
}

/// Maps a problem to the error the server's store returned.
pub(crate) fn from_problem(status: u16, p: Problem) -> ClientError {
    match (p.known_type(), p.group.as_deref().map(GroupName::new)) {
        (Some(ProblemType::GroupNotFound), Some(Ok(group))) => {
            return ClientError::Group(GroupError::NotFound(group));
        }
        (Some(ProblemType::GroupConflict), Some(Ok(group))) => {
            return ClientError::Group(GroupError::Fixed {
                group,
                field: static_name(p.field.as_deref()),
                message: p.detail,
            });
        }
        _ => {}
    }
    let store = |e: StoreError| ClientError::Store(e);
    match (p.known_type(), p.stream.clone()) {
        (Some(ProblemType::VersionConflict), _) if p.parts.is_some() => {
            store(StoreError::Conflicts(
                p.parts
                    .unwrap_or_default()
                    .into_iter()
                    .map(|part| Conflict {
                        stream: part.stream,
                        expected: part.expected_version,
                        actual: part.actual_version,
                        concurrent_events: part.concurrent_events,
                        truncated: part.truncated,
                    })
                    .collect(),
            ))
        }
        (Some(ProblemType::VersionConflict), Some(stream)) => {
            store(StoreError::conflict(Conflict {
                stream,
                expected: p.expected_version.unwrap_or(ExpectedVersion::Any),
                actual: p.actual_version.unwrap_or(Version::NONE),
                concurrent_events: p.concurrent_events.unwrap_or_default(),
                truncated: p.truncated.unwrap_or(false),
            }))
        }
        (Some(ProblemType::PartialDuplicate), Some(stream)) => {
            store(StoreError::PartialDuplicate(Box::new(PartialDuplicate {
                stream,
                existing_ids: p.existing_ids.unwrap_or_default(),
            })))
        }
        (Some(ProblemType::ConditionFailed), _) => {
            store(StoreError::ConditionFailed(Box::new(ConditionFailed {
                query: Query::everything(),
                after: p.after.unwrap_or_default(),
                matching_events: p.matching_events.unwrap_or_default(),
            })))
        }
        (Some(ProblemType::InvalidRequest), _) => store(StoreError::Invalid(InvalidInput::new(
            static_name(p.field.as_deref()),
            p.detail,
        ))),
        (Some(ProblemType::TooLarge), _) => store(StoreError::TooLarge(Box::new(TooLarge {
            what: static_name(p.field.as_deref()),
            size: p.size.unwrap_or(0),
            max: p.max.unwrap_or(0),
            unit: if p.unit.as_deref() == Some("events") {
                "events"
            } else {
                "bytes"
            },
        }))),
        (Some(ProblemType::StreamDeleted), Some(stream)) => {
            store(StoreError::StreamDeleted(stream))
        }
        (Some(ProblemType::Unsupported), _) => store(StoreError::Unsupported {
            backend: BACKEND,
            operation: "this operation",
        }),
        (Some(ProblemType::StreamNotFound | ProblemType::EventNotFound), _) => {
            ClientError::NotFound
        }
        (Some(ProblemType::Unavailable), _) => store(StoreError::Unavailable {
            backend: BACKEND,
            message: p.detail,
            source: None,
        }),
        _ if status == 503 => store(StoreError::Unavailable {
            backend: BACKEND,
            message: p.detail,
            source: None,
        }),
        _ => ClientError::Refused {
            status,
            problem_type: p.problem_type,
            detail: p.detail,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use concord_core::doc;

    #[test]
    fn a_conflict_problem_becomes_a_conflict_with_its_events() {
        let mut p = Problem::new(ProblemType::VersionConflict, 409, "version conflict");
        p.stream = Some(doc::stream("account-42"));
        p.expected_version = Some(ExpectedVersion::Exact(Version(1)));
        p.actual_version = Some(Version(2));
        p.concurrent_events = Some(vec![doc::recorded("account-42", 2, 2, "Deposited", &[])]);
        let err: StoreError = from_problem(409, p).into();
        let c = err.as_conflict().unwrap();
        assert_eq!((c.actual, c.concurrent_events.len()), (Version(2), 1));
    }

    #[test]
    fn invalid_and_too_large_keep_their_field_names() {
        let mut p = Problem::new(ProblemType::TooLarge, 413, "too large");
        p.field = Some("event".to_owned());
        p.unit = Some("bytes".to_owned());
        let err: StoreError = from_problem(413, p).into();
        assert!(matches!(err, StoreError::TooLarge(t) if t.what == "event"));
        let mut p = Problem::new(ProblemType::InvalidRequest, 400, "bad");
        p.field = Some("something-new".to_owned());
        let err: StoreError = from_problem(400, p).into();
        assert!(matches!(err, StoreError::Invalid(i) if i.field == "request"));
        let p = Problem::new(ProblemType::Forbidden, 403, "no");
        assert!(matches!(
            StoreError::from(from_problem(403, p)),
            StoreError::Backend { .. }
        ));
    }
}
