//! `ApiError`, and the one place where errors become HTTP responses.
//!
//! **Architecture invariant:** only this file knows which status and problem type a
//! `StoreError` gets. Internal failures answer a generic `detail` and are logged here,
//! inside the request's span; their text never reaches the client.

use std::net::SocketAddr;

use axum::http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use concord_api::{ConflictPart, PROBLEM_CONTENT_TYPE, Problem, ProblemType, ProjectionFailure};
use concord_core::{Conflict, Position, StoreError, StreamName, Version};
use concord_groups::GroupError;
use concord_projection::ProjectionError;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// An open server (no tokens) was asked to listen on a non-loopback address.
    #[error(
        "refusing to serve {0} without tokens: give a tokens file, bind a loopback address, or pass --insecure-open"
    )]
    OpenOnNonLoopback(SocketAddr),
    /// The tokens file could not be read or parsed.
    #[error("{0}")]
    Tokens(String),
    /// A configuration value is out of range.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// Accepting or serving connections failed.
    #[error("serving HTTP failed")]
    Io(#[source] std::io::Error),
}

/// Why one request failed. Every variant becomes an `application/problem+json` response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// What the store said; mapped per variant below.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A conflict on an expectation given as `If-Match`: 412 instead of 409.
    #[error("{0}")]
    IfMatchConflict(Box<Conflict>),
    /// A `limit` above the read limit. 400, with the limit as `max` (a client pages within
    /// it).
    #[error("limit is {asked}, but at most {max} are allowed")]
    LimitAboveMax {
        /// What was asked.
        asked: usize,
        /// The server's read limit.
        max: usize,
    },
    /// Malformed input found by the server itself (body, path, query, headers). 400.
    #[error("{detail}")]
    Invalid {
        /// The field, parameter or header at fault.
        field: String,
        /// What was wrong.
        detail: String,
    },
    /// A request body over the limit. 413.
    #[error("the request body is larger than {max} bytes")]
    BodyTooLarge {
        /// The declared size, when the client sent `Content-Length`.
        size: Option<u64>,
        /// The limit.
        max: u64,
    },
    /// The stream has no events. 404.
    #[error("stream {0} has no events")]
    StreamNotFound(StreamName),
    /// The stream has no event at that version. 404.
    #[error("stream {stream} has no event at version {version}")]
    EventNotFound {
        /// The stream.
        stream: StreamName,
        /// The version asked for.
        version: Version,
    },
    /// No such route. 404.
    #[error("there is no route {0}; see /openapi.json")]
    NotFound(String),
    /// The route exists, but not with this method. 405.
    #[error("method {0} is not allowed on this route; see /openapi.json")]
    MethodNotAllowed(String),
    /// Missing or unknown token. 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Outside the token's grants. 403.
    #[error("{0}")]
    Forbidden(String),
    /// The request body did not arrive in time. 408; the connection is closed.
    #[error("the request body did not arrive within {0} ms; send it faster or in smaller requests")]
    BodyTimeout(u128),
    /// A bug or a failed task inside the server. 500, logged.
    #[error("{0}")]
    Internal(String),
    /// What the read side said; mapped per variant below (404 unknown projection or row,
    /// 503 projection behind).
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// What consumer groups said: 404 unknown group, 409 a changed `source` or `from`,
    /// 400 bad input, 503 contended, or the store's error as above.
    #[error(transparent)]
    Group(#[from] GroupError),
}

impl ApiError {
    /// A 400 about `field`.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

fn conflict_problem(status: u16, c: Conflict) -> Problem {
    let mut p = Problem::new(ProblemType::VersionConflict, status, c.to_string());
    p.stream = Some(c.stream);
    p.expected_version = Some(c.expected);
    p.actual_version = Some(c.actual);
    p.concurrent_events = Some(c.concurrent_events);
    p.truncated = Some(c.truncated);
    p
}

fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::Conflict(c) => conflict_problem(409, *c),
        StoreError::Conflicts(parts) => {
            let mut p = Problem::new(
                ProblemType::VersionConflict,
                409,
                format!("version conflict on {} stream(s)", parts.len()),
            );
            p.parts = Some(
                parts
                    .into_iter()
                    .map(|c| ConflictPart {
                        stream: c.stream,
                        expected_version: c.expected,
                        actual_version: c.actual,
                        concurrent_events: c.concurrent_events,
                        truncated: c.truncated,
                    })
                    .collect(),
            );
            p
        }
        StoreError::ConditionFailed(c) => {
            let detail = StoreError::ConditionFailed(c.clone()).to_string();
            let mut p = Problem::new(ProblemType::ConditionFailed, 409, detail);
            p.after = Some(c.after);
            p.matching_events = Some(c.matching_events);
            p
        }
        StoreError::PartialDuplicate(d) => {
            let detail = StoreError::PartialDuplicate(d.clone()).to_string();
            let mut p = Problem::new(ProblemType::PartialDuplicate, 409, detail);
            p.stream = Some(d.stream);
            p.existing_ids = Some(d.existing_ids);
            p
        }
        StoreError::Invalid(i) => {
            let mut p = Problem::new(ProblemType::InvalidRequest, 400, i.message);
            p.field = Some(i.field.to_owned());
            p
        }
        StoreError::TooLarge(t) => {
            let detail = StoreError::TooLarge(t.clone()).to_string();
            let mut p = Problem::new(ProblemType::TooLarge, 413, detail);
            p.field = Some(t.what.to_owned());
            p.size = Some(t.size);
            p.max = Some(t.max);
            p.unit = Some(t.unit.to_owned());
            p
        }
        StoreError::StreamNotFound(stream) => {
            let mut p = Problem::new(
                ProblemType::StreamNotFound,
                404,
                format!("stream {stream} has no events"),
            );
            p.stream = Some(stream);
            p
        }
        StoreError::StreamDeleted(stream) => {
            let detail = StoreError::StreamDeleted(stream.clone()).to_string();
            let mut p = Problem::new(ProblemType::StreamDeleted, 410, detail);
            p.stream = Some(stream);
            p
        }
        e @ StoreError::Unsupported { .. } => {
            Problem::new(ProblemType::Unsupported, 501, e.to_string())
        }
        e @ StoreError::Unavailable { .. } => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store unavailable");
            Problem::new(
                ProblemType::Unavailable,
                503,
                "the store is unavailable; retry later (re-sending an append with the same event ids is safe)",
            )
        }
        e => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store failure");
            Problem::new(
                ProblemType::Internal,
                500,
                "internal error; the server log has the details",
            )
        }
    }
}

fn projection_problem(e: ProjectionError) -> Problem {
    let detail = e.to_string();
    match e {
        ProjectionError::UnknownProjection { name, .. } => {
            let mut p = Problem::new(ProblemType::ProjectionNotFound, 404, detail);
            p.projection = Some(name);
            p
        }
        ProjectionError::RowNotFound {
            projection,
            key,
            checkpoint,
        } => {
            let mut p = Problem::new(ProblemType::RowNotFound, 404, detail);
            p.projection = Some(projection);
            p.key = Some(key);
            p.checkpoint = Some(checkpoint);
            p
        }
        ProjectionError::ProjectionBehind {
            projection,
            checkpoint,
            wanted,
        } => {
            let mut p = Problem::new(ProblemType::ProjectionBehind, 503, detail);
            p.projection = Some(projection);
            p.checkpoint = Some(checkpoint);
            p.min_position = Some(wanted);
            p
        }
        ProjectionError::Failed {
            projection,
            failure,
        } => {
            let mut p = Problem::new(ProblemType::ProjectionBehind, 503, detail);
            p.projection = Some(projection);
            p.checkpoint = Some(Position(failure.position.get().saturating_sub(1)));
            p.failure = Some(ProjectionFailure {
                position: failure.position,
                stream: failure.stream,
                version: failure.version,
                event_type: failure.event_type,
                error: failure.error,
            });
            p
        }
        ProjectionError::Store(e) => store_problem(e),
        e => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "projection failure");
            Problem::new(
                ProblemType::Internal,
                500,
                "internal error; the server log has the details",
            )
        }
    }
}

fn group_problem(e: GroupError) -> Problem {
    let detail = e.to_string();
    match e {
        GroupError::NotFound(group) => {
            let mut p = Problem::new(ProblemType::GroupNotFound, 404, detail);
            p.group = Some(group.to_string());
            p
        }
        GroupError::Fixed { group, field, .. } => {
            let mut p = Problem::new(ProblemType::GroupConflict, 409, detail);
            p.group = Some(group.to_string());
            p.field = Some(field.to_owned());
            p
        }
        GroupError::Invalid(i) => {
            let mut p = Problem::new(ProblemType::InvalidRequest, 400, i.message);
            p.field = Some(i.field.to_owned());
            p
        }
        GroupError::Contended(group) => {
            tracing::warn!(group = %group, "consumer group contended");
            let mut p = Problem::new(ProblemType::Unavailable, 503, detail);
            p.group = Some(group.to_string());
            p
        }
        GroupError::Store(e) => store_problem(e),
        e => {
            tracing::error!(error = %e, "consumer group failure");
            Problem::new(
                ProblemType::Internal,
                500,
                "internal error; the server log has the details",
            )
        }
    }
}

impl ApiError {
    pub(crate) fn into_problem(self) -> Problem {
        match self {
            ApiError::Store(e) => store_problem(e),
            ApiError::IfMatchConflict(c) => conflict_problem(412, *c),
            ApiError::Invalid { field, detail } => {
                let mut p = Problem::new(ProblemType::InvalidRequest, 400, detail);
                p.field = Some(field);
                p
            }
            e @ ApiError::LimitAboveMax { .. } => {
                let detail = e.to_string();
                let mut p = Problem::new(ProblemType::InvalidRequest, 400, detail);
                p.field = Some("limit".to_owned());
                if let ApiError::LimitAboveMax { max, .. } = e {
                    p.max = Some(max as u64);
                }
                p
            }
            e @ ApiError::BodyTooLarge { .. } => {
                let detail = e.to_string();
                let ApiError::BodyTooLarge { size, max } = e else {
                    return Problem::new(ProblemType::Internal, 500, "");
                };
                let mut p = Problem::new(ProblemType::TooLarge, 413, detail);
                p.field = Some("request".to_owned());
                p.size = size;
                p.max = Some(max);
                p.unit = Some("bytes".to_owned());
                p
            }
            ApiError::StreamNotFound(stream) => {
                let mut p = Problem::new(
                    ProblemType::StreamNotFound,
                    404,
                    format!("stream {stream} has no events"),
                );
                p.stream = Some(stream);
                p
            }
            e @ ApiError::EventNotFound { .. } => {
                let detail = e.to_string();
                let mut p = Problem::new(ProblemType::EventNotFound, 404, detail);
                if let ApiError::EventNotFound { stream, version } = e {
                    p.stream = Some(stream);
                    p.version = Some(version);
                }
                p
            }
            e @ ApiError::NotFound(_) => Problem::new(ProblemType::NotFound, 404, e.to_string()),
            e @ ApiError::MethodNotAllowed(_) => {
                Problem::new(ProblemType::MethodNotAllowed, 405, e.to_string())
            }
            e @ ApiError::BodyTimeout(_) => {
                Problem::new(ProblemType::RequestTimeout, 408, e.to_string())
            }
            ApiError::Unauthorized(detail) => Problem::new(ProblemType::Unauthorized, 401, detail),
            ApiError::Forbidden(detail) => Problem::new(ProblemType::Forbidden, 403, detail),
            ApiError::Projection(e) => projection_problem(e),
            ApiError::Group(e) => group_problem(e),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Problem::new(
                    ProblemType::Internal,
                    500,
                    "internal error; the server log has the details",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.into_problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_client_error() {
            tracing::debug!(status = problem.status, r#type = %problem.problem_type, detail = %problem.detail, "request refused");
        }
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if problem.problem_type == ProblemType::ProjectionBehind.urn() {
            // The projection is expected to catch up: retrying soon is the point.
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still come: this connection is not reused.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"concord\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use concord_core::{ExpectedVersion, doc};

    fn problem_of(e: ApiError) -> Problem {
        e.into_problem()
    }

    #[test]
    fn conflicts_from_if_match_answer_412_and_otherwise_409() {
        let c = Conflict {
            stream: doc::stream("account-42"),
            expected: ExpectedVersion::Exact(Version(1)),
            actual: Version(2),
            concurrent_events: vec![doc::recorded("account-42", 2, 2, "Deposited", &[])],
            truncated: false,
        };
        let p = problem_of(ApiError::Store(StoreError::conflict(c.clone())));
        assert_eq!(
            (p.status, p.problem_type.as_str()),
            (409, "urn:concord:version-conflict")
        );
        assert_eq!(p.actual_version, Some(Version(2)));
        assert_eq!(p.concurrent_events.map(|e| e.len()), Some(1));
        assert_eq!(
            problem_of(ApiError::IfMatchConflict(Box::new(c))).status,
            412
        );
    }

    #[test]
    fn internal_failures_do_not_leak_their_text() {
        let e = StoreError::Corrupted("row 17 of table events is garbage".to_owned());
        let p = problem_of(ApiError::Store(e));
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("row 17"));
        let u = StoreError::unavailable(
            "redis",
            "connection refused at 10.0.0.1",
            std::io::Error::other("x"),
        );
        let p = problem_of(ApiError::Store(u));
        assert_eq!(
            (p.status, p.problem_type.as_str()),
            (503, "urn:concord:unavailable")
        );
        assert!(!p.detail.contains("10.0.0.1"));
    }

    #[test]
    fn too_large_names_what_and_the_limit() {
        let p = problem_of(ApiError::Store(StoreError::too_large(
            "event", 2_000_000, 1_048_576, "bytes",
        )));
        assert_eq!(
            (p.status, p.field.as_deref(), p.max),
            (413, Some("event"), Some(1_048_576))
        );
    }
}
