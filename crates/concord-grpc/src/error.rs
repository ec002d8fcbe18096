//! One place for the protocol's error shapes: a gRPC status for calls that fail, the
//! `google.rpc.Status` with a packed detail that BatchAppend answers per request, and the
//! v2 AppendSession's statuses with their details in `grpc-status-details-bin`. The
//! clients key on these codes, messages, trailers and detail type names.

use concord_core::{ExpectedVersion, StoreError};
use concord_groups::GroupError;
use prost::Message;
use tonic::{Code, Status};

use crate::auth::Refusal;
use crate::proto::event_store::client as shared;
use crate::proto::google::rpc;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The request breaks a rule of the protocol or of Concord (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// An append above the per-event limit (INVALID_ARGUMENT, the protocol's message).
    #[error("Maximum Append Size of {max} Exceeded.")]
    TooLarge {
        /// The limit in bytes.
        max: u64,
    },
    /// The caller may not (UNAUTHENTICATED or PERMISSION_DENIED).
    #[error("access denied")]
    Refused(Refusal),
    /// A call Concord does not answer yet (UNIMPLEMENTED).
    #[error("{0}")]
    Unsupported(&'static str),
    /// No persistent subscription of that stream and group (NOT_FOUND, the
    /// `persistent-subscription-does-not-exist` exception).
    #[error("Subscription group '{group}' on stream '{stream}' does not exist.")]
    SubscriptionNotFound {
        /// The stream, or `$all`.
        stream: String,
        /// The subscription's group name.
        group: String,
    },
    /// Create of a persistent subscription that exists (ALREADY_EXISTS, the
    /// `persistent-subscription-exists` exception).
    #[error("Subscription group '{group}' on stream '{stream}' exists.")]
    SubscriptionExists {
        /// The stream, or `$all`.
        stream: String,
        /// The subscription's group name.
        group: String,
    },
    /// A persistent subscription's reader was ended by the server: a `Stop` nack, or the
    /// group deleted (CANCELLED with the `persistent-subscription-dropped` exception,
    /// which the clients report as a dropped subscription).
    #[error("{0}")]
    Dropped(String),
    /// The server is shutting down; a subscription ends (UNAVAILABLE).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A consumer group failed for a reason of its own (its state kept changing:
    /// UNAVAILABLE; its state unreadable: INTERNAL).
    #[error(transparent)]
    Group(GroupError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<GroupError> for GrpcError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::Invalid(i) => GrpcError::Invalid(i.to_string()),
            GroupError::Fixed { message, .. } => GrpcError::Invalid(message),
            GroupError::Store(s) => GrpcError::from(s),
            other => GrpcError::Group(other),
        }
    }
}

impl From<StoreError> for GrpcError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(i) => GrpcError::Invalid(i.to_string()),
            StoreError::TooLarge(t) if t.unit == "bytes" => GrpcError::TooLarge { max: t.max },
            StoreError::TooLarge(t) => GrpcError::Invalid(StoreError::TooLarge(t).to_string()),
            other => GrpcError::Store(other),
        }
    }
}

impl From<GrpcError> for Status {
    fn from(e: GrpcError) -> Self {
        match e {
            GrpcError::Invalid(message) => Status::invalid_argument(message),
            GrpcError::TooLarge { max } => {
                let mut status =
                    Status::invalid_argument(format!("Maximum Append Size of {max} Exceeded."));
                status.metadata_mut().insert(
                    "exception",
                    tonic::metadata::MetadataValue::from_static("maximum-append-size-exceeded"),
                );
                status
            }
            GrpcError::Refused(Refusal::Unauthenticated) => {
                Status::unauthenticated("Unauthenticated: send a Concord token as the password")
            }
            GrpcError::Refused(Refusal::Denied(why)) => {
                let mut status = Status::permission_denied(format!("Access Denied: {why}"));
                status.metadata_mut().insert(
                    "exception",
                    tonic::metadata::MetadataValue::from_static("access-denied"),
                );
                status
            }
            GrpcError::Unsupported(what) => Status::unimplemented(what),
            GrpcError::SubscriptionNotFound { .. } => with_exception(
                Status::not_found(e.to_string()),
                "persistent-subscription-does-not-exist",
            ),
            GrpcError::SubscriptionExists { .. } => with_exception(
                Status::already_exists(e.to_string()),
                "persistent-subscription-exists",
            ),
            GrpcError::Dropped(why) => {
                with_exception(Status::cancelled(why), "persistent-subscription-dropped")
            }
            GrpcError::ShuttingDown => Status::unavailable(e.to_string()),
            GrpcError::Group(GroupError::Contended(_)) => Status::unavailable(e.to_string()),
            GrpcError::Group(GroupError::NotFound(group)) => with_exception(
                Status::not_found(format!("Subscription group '{group}' does not exist.")),
                "persistent-subscription-does-not-exist",
            ),
            GrpcError::Group(other) => Status::internal(other.to_string()),
            GrpcError::Store(e) => match e {
                StoreError::Unavailable { .. } | StoreError::Poisoned(_) => {
                    Status::unavailable(e.to_string())
                }
                // KurrentDB's shapes, which the clients turn into their own errors:
                // ResourceDeleted, ResourceNotFound and a wrong expected version.
                StoreError::StreamDeleted(stream) => {
                    let mut status =
                        Status::failed_precondition(format!("Event stream '{stream}' is deleted."));
                    status.metadata_mut().insert(
                        "exception",
                        tonic::metadata::MetadataValue::from_static("stream-deleted"),
                    );
                    if let Ok(name) = stream.as_str().parse() {
                        status.metadata_mut().insert("stream-name", name);
                    }
                    status
                }
                StoreError::StreamNotFound(stream) => {
                    Status::not_found(format!("Event stream '{stream}' is not found."))
                }
                // Only deletes and tombstones reach here (an append's conflict is an
                // answer, not an error). KurrentDB's text, with its numbers: the clients
                // parse it (Python: `Expected version: (-?\d+), Actual version: (-?\d+)$`,
                // actual -1 meaning the stream does not exist).
                StoreError::Conflict(conflict) => {
                    let actual = conflict
                        .actual
                        .get()
                        .checked_sub(1)
                        .map_or(-1_i128, i128::from);
                    let expected = match conflict.expected {
                        ExpectedVersion::Exact(v) => v.get().checked_sub(1).map_or(-1, i128::from),
                        ExpectedVersion::NoStream => -1,
                        ExpectedVersion::Any => -2,
                        ExpectedVersion::Exists => -4,
                    };
                    let mut status = Status::failed_precondition(format!(
                        "Delete failed due to WrongExpectedVersion. Stream: {}, Expected version: {expected}, Actual version: {actual}",
                        conflict.stream,
                    ));
                    let m = status.metadata_mut();
                    m.insert(
                        "exception",
                        tonic::metadata::MetadataValue::from_static("wrong-expected-version"),
                    );
                    for (key, number) in
                        [("expected-version", expected), ("actual-version", actual)]
                    {
                        if let Ok(value) = number.to_string().parse() {
                            m.insert(key, value);
                        }
                    }
                    if let Ok(name) = conflict.stream.as_str().parse() {
                        m.insert("stream-name", name);
                    }
                    status
                }
                other => Status::internal(other.to_string()),
            },
        }
    }
}

fn with_exception(mut status: Status, exception: &'static str) -> Status {
    status.metadata_mut().insert(
        "exception",
        tonic::metadata::MetadataValue::from_static(exception),
    );
    status
}

/// `google.rpc.Code` values used in BatchAppend errors.
const INVALID_ARGUMENT: i32 = Code::InvalidArgument as i32;
const ALREADY_EXISTS: i32 = Code::AlreadyExists as i32;
const NOT_FOUND: i32 = Code::NotFound as i32;
const PERMISSION_DENIED: i32 = Code::PermissionDenied as i32;
const UNAUTHENTICATED: i32 = Code::Unauthenticated as i32;
const UNAVAILABLE: i32 = Code::Unavailable as i32;
const UNKNOWN: i32 = Code::Unknown as i32;

fn packed(code: i32, message: &str, type_name: &str, detail: &impl Message) -> rpc::Status {
    rpc::Status {
        code,
        message: message.to_owned(),
        details: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: detail.encode_to_vec(),
        }),
    }
}

/// BatchAppend's answer to a wrong expected version: ALREADY_EXISTS with the detail
/// `event_store.client.WrongExpectedVersion` (clients find it by that full name).
pub(crate) fn batch_wrong_expected_version(detail: &shared::WrongExpectedVersion) -> rpc::Status {
    packed(
        ALREADY_EXISTS,
        "WrongExpectedVersion",
        "event_store.client.WrongExpectedVersion",
        detail,
    )
}

/// BatchAppend's answer to any other failure of one request.
pub(crate) fn batch_error(e: &GrpcError) -> rpc::Status {
    match e {
        GrpcError::Invalid(message) => packed(
            INVALID_ARGUMENT,
            message,
            "event_store.client.BadRequest",
            &shared::BadRequest {
                message: message.clone(),
            },
        ),
        GrpcError::TooLarge { max } => packed(
            INVALID_ARGUMENT,
            &e.to_string(),
            "event_store.client.MaximumAppendSizeExceeded",
            &shared::MaximumAppendSizeExceeded {
                max_append_size: u32::try_from(*max).unwrap_or(u32::MAX),
            },
        ),
        GrpcError::Refused(Refusal::Unauthenticated) => packed(
            UNAUTHENTICATED,
            "Unauthenticated",
            "event_store.client.AccessDenied",
            &shared::AccessDenied {},
        ),
        GrpcError::Refused(Refusal::Denied(why)) => packed(
            PERMISSION_DENIED,
            why,
            "event_store.client.AccessDenied",
            &shared::AccessDenied {},
        ),
        GrpcError::Store(StoreError::Unavailable { .. } | StoreError::Poisoned(_)) => packed(
            UNAVAILABLE,
            &e.to_string(),
            "event_store.client.Unknown",
            &shared::Unknown {},
        ),
        // KurrentDB's shape, which the clients turn into their stream-deleted error.
        GrpcError::Store(StoreError::StreamDeleted(stream)) => packed(
            NOT_FOUND,
            "StreamDeleted",
            "event_store.client.StreamDeleted",
            &shared::StreamDeleted {
                stream_identifier: Some(crate::convert::stream_identifier(stream)),
            },
        ),
        GrpcError::Unsupported(_)
        | GrpcError::Store(_)
        | GrpcError::SubscriptionNotFound { .. }
        | GrpcError::SubscriptionExists { .. }
        | GrpcError::Dropped(_)
        | GrpcError::ShuttingDown
        | GrpcError::Group(_) => packed(
            UNKNOWN,
            &e.to_string(),
            "event_store.client.Unknown",
            &shared::Unknown {},
        ),
    }
}

/// Why a v2 AppendSession failed, in the shapes its clients unpack into their own errors
/// (kurrentdbclient: `WrongCurrentVersionError`, `StreamTombstonedError`,
/// `RecordMaxSizeExceededError`, `TransactionMaxSizeExceededError`,
/// `MultiAppendToSameStreamError`).
#[derive(Debug)]
pub(crate) enum SessionError {
    /// A part's expected revision did not hold (FAILED_PRECONDITION).
    Revision {
        stream: String,
        expected: i64,
        actual: i64,
    },
    /// A part names a tombstoned stream (FAILED_PRECONDITION).
    Tombstoned(String),
    /// One record is over the per-event limit (INVALID_ARGUMENT).
    RecordTooLarge {
        stream: String,
        record_id: String,
        size: usize,
        max: usize,
    },
    /// The session is over the per-request limit (ABORTED).
    TransactionTooLarge { size: usize, max: usize },
    /// The session names a stream twice (ABORTED).
    StreamTwice(String),
    /// The client ended the call without a part (FAILED_PRECONDITION).
    NoRequests,
    /// Anything else, as for the v1 calls.
    Other(GrpcError),
}

impl From<GrpcError> for SessionError {
    fn from(e: GrpcError) -> Self {
        SessionError::Other(e)
    }
}

impl SessionError {
    /// The first stale part of a multi-stream append.
    pub(crate) fn conflict(c: &concord_core::Conflict) -> Self {
        SessionError::Revision {
            stream: c.stream.to_string(),
            expected: crate::session::expected_revision(c.expected),
            actual: crate::session::revision(c.actual),
        }
    }
}

/// A status whose `grpc-status-details-bin` holds a `google.rpc.Status` with the same code
/// and message (grpcio's `rpc_status.from_call` refuses any other) and one packed detail.
fn rich(code: Code, message: String, type_name: &str, detail: &impl Message) -> Status {
    let details = packed(code as i32, &message, type_name, detail).encode_to_vec();
    Status::with_details(code, message, details.into())
}

impl From<SessionError> for Status {
    fn from(e: SessionError) -> Self {
        use crate::proto::kurrentdb::protocol::v2::streams::errors as v2;
        const DETAILS: &str = "kurrentdb.protocol.v2.streams.errors";
        match e {
            SessionError::Revision {
                stream,
                expected,
                actual,
            } => rich(
                Code::FailedPrecondition,
                format!(
                    "Append failed due to a revision conflict on stream '{stream}'. Expected revision: {expected}. Actual revision: {actual}."
                ),
                &format!("{DETAILS}.StreamRevisionConflictErrorDetails"),
                &v2::StreamRevisionConflictErrorDetails {
                    stream,
                    expected_revision: expected,
                    actual_revision: actual,
                },
            ),
            SessionError::Tombstoned(stream) => rich(
                Code::FailedPrecondition,
                format!("Stream '{stream}' is tombstoned."),
                &format!("{DETAILS}.StreamTombstonedErrorDetails"),
                &v2::StreamTombstonedErrorDetails { stream },
            ),
            SessionError::RecordTooLarge {
                stream,
                record_id,
                size,
                max,
            } => rich(
                Code::InvalidArgument,
                format!(
                    "Record {record_id} of stream '{stream}' is {size} bytes, over the maximum of {max}."
                ),
                &format!("{DETAILS}.AppendRecordSizeExceededErrorDetails"),
                &v2::AppendRecordSizeExceededErrorDetails {
                    stream,
                    record_id,
                    size: i32::try_from(size).unwrap_or(i32::MAX),
                    max_size: i32::try_from(max).unwrap_or(i32::MAX),
                },
            ),
            SessionError::TransactionTooLarge { size, max } => rich(
                Code::Aborted,
                format!("The append session is over {max} bytes (at least {size})."),
                &format!("{DETAILS}.AppendTransactionSizeExceededErrorDetails"),
                &v2::AppendTransactionSizeExceededErrorDetails {
                    size: i32::try_from(size).unwrap_or(i32::MAX),
                    max_size: i32::try_from(max).unwrap_or(i32::MAX),
                },
            ),
            SessionError::StreamTwice(stream) => rich(
                Code::Aborted,
                format!("Stream '{stream}' is already in this append session."),
                &format!("{DETAILS}.StreamAlreadyInAppendSessionErrorDetails"),
                &v2::StreamAlreadyInAppendSessionErrorDetails { stream },
            ),
            SessionError::NoRequests => {
                Status::failed_precondition("An append session needs at least one append request.")
            }
            SessionError::Other(e) => e.into(),
        }
    }
}
