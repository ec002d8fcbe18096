//! `StoreError`: the one error type every `EventStore` method returns, whatever the backend.
//!
//! Expected outcomes (appended, rebased, duplicate) are values, not errors; what is here is
//! what stopped an operation. Each variant says when it happens, whether to retry, and how
//! `concord-server` maps it to HTTP (the mapping itself lives only there).

use std::fmt;

use crate::event::{EventId, RecordedEvent};
use crate::names::StreamName;
use crate::query::Query;
use crate::version::{ExpectedVersion, Position, Version};

/// A boxed error from a driver, kept as the `source` of a backend failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Input that breaks a rule of the API: a name, a limit other than size, malformed JSON.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{message}")]
pub struct InvalidInput {
    /// The field or parameter at fault (`stream`, `type`, `events`, …).
    pub field: &'static str,
    /// What was wrong, with the value.
    pub message: String,
}

impl InvalidInput {
    /// An invalid-input error about `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidInput {
            field,
            message: message.into(),
        }
    }
}

/// A stale expected version, with what the writer did not see.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Conflict {
    /// The stream whose expectation failed.
    pub stream: StreamName,
    /// The expectation as sent.
    pub expected: ExpectedVersion,
    /// The stream's version when the append was checked (0: no stream).
    pub actual: Version,
    /// The events after the expected version (for `no_stream`, the stream's first events),
    /// at most [`crate::Limits::concurrent_events_max`].
    pub concurrent_events: Vec<RecordedEvent>,
    /// Whether more concurrent events exist than are listed.
    pub truncated: bool,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version conflict on stream {}: expected version {}, but the stream is at version {}",
            self.stream, self.expected, self.actual
        )?;
        if !self.concurrent_events.is_empty() {
            write!(f, " ({} concurrent event", self.concurrent_events.len())?;
            if self.concurrent_events.len() != 1 {
                f.write_str("s")?;
            }
            if self.truncated {
                f.write_str(" listed, more not shown")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// An append whose event ids are partly, but not wholly, already in the stream (or are
/// there in another order): neither a duplicate nor a fresh append.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PartialDuplicate {
    /// The stream appended to.
    pub stream: StreamName,
    /// The ids of the request that the stream already holds.
    pub existing_ids: Vec<EventId>,
}

/// An append condition ("fail if events match this query after position p") that failed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConditionFailed {
    /// The query of the condition.
    pub query: Query,
    /// The position the writer read up to.
    pub after: Position,
    /// The matching events after `after`, at most 100.
    pub matching_events: Vec<RecordedEvent>,
}

/// Something over a configured size limit.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TooLarge {
    /// What is too large (`event`, `events`, `request`).
    pub what: &'static str,
    /// Its size (bytes or count, as `unit` says).
    pub size: u64,
    /// The limit.
    pub max: u64,
    /// `bytes` or `events`.
    pub unit: &'static str,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The expected version did not hold.
    ///
    /// ### Handling
    /// Not retryable as is: decide again on fresh state (the concurrent events are here),
    /// rebase, or give up. HTTP 409 (412 when the expectation came from `If-Match`),
    /// `urn:concord:version-conflict`.
    #[error("{0}")]
    Conflict(Box<Conflict>),

    /// Several parts of a multi-stream append were stale; each is listed.
    ///
    /// ### Handling
    /// As [`StoreError::Conflict`]. HTTP 409, `urn:concord:version-conflict` with `parts`.
    #[error("version conflict on {} stream(s) of a multi-stream append", .0.len())]
    Conflicts(Vec<Conflict>),

    /// An append condition found matching events after its position.
    ///
    /// ### Handling
    /// Re-read with the query, decide again. HTTP 409, `urn:concord:condition-failed`.
    #[error("append condition failed: {} event(s) match the query after position {}", .0.matching_events.len(), .0.after)]
    ConditionFailed(Box<ConditionFailed>),

    /// Some but not all event ids of the append are already in the stream.
    ///
    /// ### Handling
    /// A client bug (ids reused for different appends). HTTP 409,
    /// `urn:concord:partial-duplicate`.
    #[error("partial duplicate on stream {}: {} of the append's event ids are already in the stream, but not as this exact append", .0.stream, .0.existing_ids.len())]
    PartialDuplicate(Box<PartialDuplicate>),

    /// The stream has no event to act on: a delete of a stream that does not exist (or
    /// that a soft delete already emptied).
    ///
    /// ### Handling
    /// Nothing to do. HTTP 404, `urn:concord:stream-not-found`.
    #[error("stream {0} not found")]
    StreamNotFound(StreamName),

    /// The stream is tombstoned: every append, read and subscription of it is refused,
    /// forever; nothing was written.
    ///
    /// ### Handling
    /// Not retryable; use another stream name. HTTP 410, `urn:concord:stream-deleted`.
    #[error("stream {0} is deleted for good (tombstoned); it cannot be appended to or read")]
    StreamDeleted(StreamName),

    /// The store does not offer this operation.
    ///
    /// ### Handling
    /// Not retryable. HTTP 501.
    #[error("{backend} does not support {operation}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The operation (`delete_stream`, `scavenge`, …).
        operation: &'static str,
    },

    /// Input that breaks a rule; nothing was written.
    ///
    /// ### Handling
    /// Fix the input. HTTP 400, `urn:concord:invalid-request`.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),

    /// Input over a size limit; nothing was written.
    ///
    /// ### Handling
    /// Split the append or shrink the event. HTTP 413, `urn:concord:too-large`.
    #[error("{} is {} {}, but at most {} are allowed", .0.what, .0.size, .0.unit, .0.max)]
    TooLarge(Box<TooLarge>),

    /// The backend cannot be reached (network, timeout, server down). The operation may or
    /// may not have taken effect if it was an append; re-sending the same event ids is safe.
    ///
    /// ### Handling
    /// Retry with the same event ids. HTTP 503.
    #[error("{backend} is unavailable: {message}")]
    Unavailable {
        /// The backend (`redis`, `embedded`, `http`).
        backend: &'static str,
        /// What failed, in a few words.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },

    /// Stored data failed a check on read or recovery.
    ///
    /// ### Handling
    /// Do not retry; restore from a backup or inspect the data. HTTP 500.
    #[error("stored data is corrupted: {0}")]
    Corrupted(String),

    /// A write or sync failed earlier; the store refuses appends until it is reopened.
    ///
    /// ### Handling
    /// Restart the process; recovery replays what was durable. HTTP 500.
    #[error(
        "store is poisoned: {0}; restart the process, recovery will keep every acknowledged append"
    )]
    Poisoned(String),

    /// Any other backend failure.
    ///
    /// ### Handling
    /// Not known to be retryable. HTTP 500.
    #[error("{backend} failed: {message}")]
    Backend {
        /// The backend.
        backend: &'static str,
        /// What failed.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// A conflict error.
    pub fn conflict(conflict: Conflict) -> Self {
        StoreError::Conflict(Box::new(conflict))
    }

    /// An over-limit error.
    pub fn too_large(what: &'static str, size: u64, max: u64, unit: &'static str) -> Self {
        StoreError::TooLarge(Box::new(TooLarge {
            what,
            size,
            max,
            unit,
        }))
    }

    /// An invalid-input error about `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        StoreError::Invalid(InvalidInput::new(field, message))
    }

    /// A backend failure.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        StoreError::Backend {
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A backend that cannot be reached.
    pub fn unavailable(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        StoreError::Unavailable {
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The conflict, when this is one.
    pub fn as_conflict(&self) -> Option<&Conflict> {
        match self {
            StoreError::Conflict(c) => Some(c),
            _ => None,
        }
    }

    /// Whether this error is a conflict of any kind (version or condition): an answer
    /// about concurrency that a policy can act on, rather than a failure.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict(_) | StoreError::Conflicts(_) | StoreError::ConditionFailed(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_lower_case_and_carry_values() {
        let e = StoreError::too_large("event", 2_000_000, 1_048_576, "bytes");
        assert_eq!(
            e.to_string(),
            "event is 2000000 bytes, but at most 1048576 are allowed"
        );
        let c = StoreError::conflict(Conflict {
            stream: StreamName::new("account-42").unwrap(),
            expected: ExpectedVersion::Exact(Version(1)),
            actual: Version(2),
            concurrent_events: vec![],
            truncated: false,
        });
        assert_eq!(
            c.to_string(),
            "version conflict on stream account-42: expected version 1, but the stream is at version 2"
        );
        assert!(c.is_conflict());
    }
}
