//! Bodies and parameters of the read-side endpoints, `/projections/...`.
//!
//! They mirror `concord-projection`'s status and row types member for member (a test in
//! `concord-server` checks that the two serialise alike), so a client can read them
//! without linking the projection runtime and its SQLite.

use concord_core::Position;
use serde::{Deserialize, Serialize};

/// `GET /projections`: every hosted projection, by name.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ProjectionList {
    /// One status per projection, ordered by name.
    pub projections: Vec<ProjectionInfo>,
}

/// `GET /projections/{name}` (and each item of [`ProjectionList`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ProjectionInfo {
    /// The projection's name.
    pub name: String,
    /// `stopped`, `catching-up`, `running` or `failed`.
    pub status: String,
    /// The last position it durably processed.
    pub checkpoint: Position,
    /// The store's head when the status was taken.
    pub head: Position,
    /// `head - checkpoint`, in positions.
    pub lag: u64,
    /// Events applied since it was started by this server.
    pub events_applied: u64,
    /// Where and why it stopped, when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ProjectionFailure>,
    /// How many events its handler refused and it skipped (since the last rebuild).
    #[serde(default)]
    pub skipped: u64,
    /// The latest of them, newest first (at most 10), each with the handler's error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_events: Vec<ProjectionFailure>,
    /// The store or database error it is currently retrying after, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// An event a projection's handler refused: the one a failed projection stopped at (its
/// checkpoint is just before `position`), or one it skipped.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ProjectionFailure {
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

/// `GET /projections/{name}/{key}`: one read-model row.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ProjectionRow {
    /// The projection.
    pub projection: String,
    /// The key (a stream name).
    pub key: String,
    /// The row reflects every event up to this position.
    pub checkpoint: Position,
    /// The row, as the projection shapes it.
    pub row: serde_json::Value,
}

/// Query parameters of `GET /projections/{name}/{key}`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionRowParams {
    /// Read-your-writes: answer only once the projection has processed this position (an
    /// append's `last_position`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_position: Option<u64>,
    /// How long to wait for `min_position`, in milliseconds (default
    /// [`PROJECTION_WAIT_MS_DEFAULT`], at most [`PROJECTION_WAIT_MS_MAX`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// How long a row read waits for `min_position` when `wait_ms` is not given.
pub const PROJECTION_WAIT_MS_DEFAULT: u64 = 5000;

/// The longest `wait_ms` accepted; more is a 400.
pub const PROJECTION_WAIT_MS_MAX: u64 = 60_000;
