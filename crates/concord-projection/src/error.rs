//! `ProjectionError`: what stopped a projection operation, and `HandlerError`, what a
//! projection's handler reports about one event.
//!
//! Each variant says when it happens and how the server maps it to HTTP (the mapping itself
//! lives in `concord-server`).

use std::fmt;

use concord_core::{BoxError, Position, StoreError};
use serde::{Deserialize, Serialize};

/// Why a handler could not apply one event (malformed data, an event out of order, a
/// database error in the read model). It stops the projection at that event.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl HandlerError {
    /// A handler error that says what was wrong with the event.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            source: None,
        }
    }

    /// A handler error caused by `source`.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        HandlerError {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The message and every cause, as one line (what a `failed` status shows).
    pub fn chain(&self) -> String {
        let mut text = self.message.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

impl HandlerError {
    /// Whether the read-model database failed (a full disk, a busy file) rather than the
    /// handler refusing the event: then the batch is retried, and no event is skipped.
    pub fn is_database(&self) -> bool {
        self.source
            .as_ref()
            .is_some_and(|s| s.is::<rusqlite::Error>() || s.is::<postgres::Error>())
    }
}

impl From<postgres::Error> for HandlerError {
    fn from(e: postgres::Error) -> Self {
        HandlerError::with_source("the read-model database refused the change", e)
    }
}

impl From<rusqlite::Error> for HandlerError {
    fn from(e: rusqlite::Error) -> Self {
        HandlerError::with_source("the read-model database refused the change", e)
    }
}

/// The event a projection stopped at, and why. Its checkpoint is just before `position`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Failure {
    /// The failing event's position.
    pub position: Position,
    /// Its stream.
    pub stream: String,
    /// Its version in that stream.
    pub version: u64,
    /// Its type.
    pub event_type: String,
    /// What the handler said.
    pub error: String,
}

/// An event a projection's handler refused, and why: the projection went on past it, and
/// the read model is as if the event had changed nothing (the row's version still moved).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SkippedEvent {
    /// The event's position.
    pub position: Position,
    /// Its stream.
    pub stream: String,
    /// Its version in that stream.
    pub version: u64,
    /// Its type.
    pub event_type: String,
    /// What the handler said.
    pub error: String,
}

impl fmt::Display for SkippedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped the {} event at position {} (stream {}, version {}): {}",
            self.event_type, self.position, self.stream, self.version, self.error
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the handler failed on the {} event at position {} (stream {}, version {}): {}",
            self.event_type, self.position, self.stream, self.version, self.error
        )
    }
}

/// What stopped a projection operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// No projection of that name is hosted. HTTP 404.
    #[error("there is no projection named {name:?}; the projections are {known}")]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The hosted names, comma-separated.
        known: String,
    },
    /// The read model has no row for that key (at its checkpoint). HTTP 404.
    #[error("projection {projection} has no row {key:?} at checkpoint {checkpoint}")]
    RowNotFound {
        /// The projection.
        projection: String,
        /// The key asked for (a stream name).
        key: String,
        /// The checkpoint the answer was read at.
        checkpoint: Position,
    },
    /// Read-your-writes: the projection had not processed `wanted` when the wait ended.
    /// Retry later. HTTP 503, `urn:concord:projection-behind`.
    #[error(
        "projection {projection} is behind: its checkpoint is {checkpoint}, but position {wanted} was asked for; retry later or wait longer"
    )]
    ProjectionBehind {
        /// The projection.
        projection: String,
        /// Where it was when the wait ended.
        checkpoint: Position,
        /// The position the caller needs processed.
        wanted: Position,
    },
    /// The projection is stopped in the `failed` state; fix the handler and restart (or
    /// rebuild). HTTP 503 when waiting on it, otherwise shown in its status.
    #[error("projection {projection} has failed: {failure}")]
    Failed {
        /// The projection.
        projection: String,
        /// Where and why.
        failure: Box<Failure>,
    },
    /// The store failed (reading events or the head). Retryable when `Unavailable`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The read-model database failed. HTTP 500.
    #[error("the projection database {database} failed while {doing}")]
    Database {
        /// The database: the SQLite file, or PostgreSQL's hosts and schema.
        database: String,
        /// What was being done.
        doing: &'static str,
        /// SQLite's or PostgreSQL's error.
        #[source]
        source: BoxError,
    },
    /// A projection cannot live in the host's database (a projection without a PostgreSQL
    /// read model on a PostgreSQL host).
    #[error(
        "projection {projection} has no read model in {database}; host it with a SQLite projection database"
    )]
    Unsupported {
        /// The projection.
        projection: String,
        /// The database.
        database: String,
    },
    /// A background task ended abnormally (the runtime is shutting down). HTTP 500.
    #[error("a projection task stopped unexpectedly: {0}")]
    Task(String),
}
