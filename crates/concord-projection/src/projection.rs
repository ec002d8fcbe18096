//! The `Projection` trait: which events a read model wants and how one event changes it.
//!
//! A projection's read model lives in the projection database (SQLite, or PostgreSQL
//! through [`PgProjection`]), beside the checkpoint table. The runner calls [`Projection::apply_batch`] inside the same
//! transaction that moves the checkpoint, so a batch of events and the checkpoint after it
//! become durable together or not at all: each event takes effect **exactly once** across
//! crashes, and a handler needs no idempotency of its own.
//!
//! # Other sinks: at-least-once
//!
//! A read model that lives elsewhere (a search index, a cache, another service) cannot
//! share the checkpoint's transaction. Follow the store with
//! `store.subscribe_all(checkpoint.next(), filter)`, apply each event to the sink, and record
//! the checkpoint *after* the sink has acknowledged it. A crash between the two replays the
//! events after the recorded checkpoint, so every event is applied **at least once** and
//! the handler must make a repeat harmless: keep, per key, the last applied `version`
//! (per stream) or `position` (global) in the sink, in the same sink write as the change,
//! and skip an event whose version is not greater; or make the write itself idempotent
//! (a put of absolute state keyed by stream, never an increment).

use concord_core::{Filter, RecordedEvent, Version};
use rusqlite::Connection;

use crate::error::HandlerError;

/// A handler failure at one event of a batch.
#[derive(Debug)]
pub struct BatchError {
    /// The index in the batch of the event that failed; the events before it applied.
    pub index: usize,
    /// Why.
    pub error: HandlerError,
}

/// A read model built from events, kept in the projection database.
///
/// Implementations must be deterministic: applying the same events to the same read model
/// gives the same result (a rebuild relies on it).
pub trait Projection: Send + Sync + std::fmt::Debug + 'static {
    /// The projection's name, as in `GET /projections/{name}` (`balances`).
    fn name(&self) -> &str;

    /// The events it wants; the runner reads only these.
    fn filter(&self) -> Filter;

    /// Creates the read model's tables when they do not exist (called on every open).
    ///
    /// # Errors
    /// The database's.
    fn create(&self, db: &Connection) -> rusqlite::Result<()>;

    /// Deletes every row of the read model (rebuild), inside the caller's transaction.
    ///
    /// # Errors
    /// The database's.
    fn reset(&self, db: &Connection) -> rusqlite::Result<()>;

    /// Applies one event, inside the caller's transaction.
    ///
    /// # Errors
    /// A [`HandlerError`] makes the runner skip this event: what the handler did for it is
    /// rolled back, [`Projection::skip`] is called instead, and the event is recorded with
    /// the error (shown in the projection's status). A projection survives every event the
    /// store accepted. An error caused by the database itself
    /// ([`HandlerError::is_database`]) skips nothing: the batch is retried.
    fn apply(&self, db: &Connection, event: &RecordedEvent) -> Result<(), HandlerError>;

    /// Applies a batch of events in order, inside the caller's transaction. Override to
    /// keep state in memory across the batch; the default calls [`Projection::apply`].
    ///
    /// # Errors
    /// The first event that failed and why; the caller rolls the whole batch back.
    fn apply_batch(&self, db: &Connection, events: &[RecordedEvent]) -> Result<(), BatchError> {
        for (index, event) in events.iter().enumerate() {
            self.apply(db, event)
                .map_err(|error| BatchError { index, error })?;
        }
        Ok(())
    }

    /// Records, inside the caller's transaction, that `event` was skipped: a projection that
    /// checks the order of events (a row's version) moves past it here. The default does
    /// nothing.
    ///
    /// # Errors
    /// The database's (the batch is then retried).
    fn skip(&self, db: &Connection, event: &RecordedEvent) -> rusqlite::Result<()> {
        let _ = (db, event);
        Ok(())
    }

    /// The read model's row for `key` (a stream name) as JSON, if there is one.
    ///
    /// # Errors
    /// The database's.
    fn row(&self, db: &Connection, key: &str) -> rusqlite::Result<Option<serde_json::Value>>;

    /// The streams the read model holds rows for, each with the versions the row spans,
    /// for [`crate::ProjectionHost::forget_deleted_streams`] to ask the store which of them
    /// were deleted since the row began. The default holds none: the projection keeps its
    /// rows when a stream is deleted.
    ///
    /// # Errors
    /// The database's.
    fn stream_rows(&self, db: &Connection) -> rusqlite::Result<Vec<StreamRow>> {
        let _ = db;
        Ok(Vec::new())
    }

    /// Drops, inside the caller's transaction, the row of `stream` (deleted or tombstoned
    /// in the store) if it is still at `version`, the version seen before the store was
    /// asked: a row that moved since belongs to a stream written again, and stays. Events
    /// of the stream at or before `through` (the last deleted version, at least `version`)
    /// are ignored from then on, so a late one of the deleted life cannot start a row.
    /// Returns whether it dropped the row. The default drops nothing.
    ///
    /// # Errors
    /// The database's.
    fn forget(
        &self,
        db: &Connection,
        stream: &str,
        version: Version,
        through: Version,
    ) -> rusqlite::Result<bool> {
        let _ = (db, stream, version, through);
        Ok(false)
    }

    /// Replaces, inside the caller's transaction, the row of `stream` if it is still at
    /// `version` with the row `events` give on their own: the stream was deleted through
    /// `through` and written again before the row was reconciled, so the row folded the
    /// new life onto the old one. `events` are the stream's events `through + 1 ..=
    /// version`, read from the store. Events at or before `through` are ignored from then
    /// on, as after [`Projection::forget`]. Returns whether it replaced the row. The default
    /// replaces nothing.
    ///
    /// # Errors
    /// The database's, or `events` not being exactly the versions after `through` up to
    /// `version`.
    fn refold(
        &self,
        db: &Connection,
        stream: &str,
        version: Version,
        through: Version,
        events: &[RecordedEvent],
    ) -> Result<bool, HandlerError> {
        let _ = (db, stream, version, through, events);
        Ok(false)
    }

    /// The same read model in PostgreSQL, for a host whose database is PostgreSQL
    /// ([`crate::ProjectionDb::Postgres`]). The default has none, and such a host refuses the
    /// projection when it opens; the built-in projections have one.
    fn postgres(&self) -> Option<&dyn PgProjection> {
        None
    }
}

/// A [`Projection`]'s read model in PostgreSQL: the same methods over a transaction of the
/// host's PostgreSQL connection, which has the store's schema first on its `search_path`.
/// Name tables `projection_<name>...`, so that they never meet the store's own
/// (`concord_...`). Every method runs inside the caller's transaction, which also moves
/// the checkpoint; an error whose [`HandlerError::is_database`] is true is the database's
/// (the batch is retried), any other is the handler's (the event is skipped).
pub trait PgProjection: Send + Sync {
    /// Creates the read model's tables when they do not exist (called on every open).
    ///
    /// # Errors
    /// The database's.
    fn create(&self, db: &mut postgres::Transaction<'_>) -> Result<(), HandlerError>;

    /// Deletes every row of the read model (rebuild).
    ///
    /// # Errors
    /// The database's.
    fn reset(&self, db: &mut postgres::Transaction<'_>) -> Result<(), HandlerError>;

    /// As [`Projection::apply_batch`].
    ///
    /// # Errors
    /// The first event that failed and why.
    fn apply_batch(
        &self,
        db: &mut postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), BatchError>;

    /// As [`Projection::skip`].
    ///
    /// # Errors
    /// The database's.
    fn skip(
        &self,
        db: &mut postgres::Transaction<'_>,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError>;

    /// As [`Projection::row`].
    ///
    /// # Errors
    /// The database's.
    fn row(
        &self,
        db: &mut postgres::Transaction<'_>,
        key: &str,
    ) -> Result<Option<serde_json::Value>, HandlerError>;

    /// As [`Projection::stream_rows`].
    ///
    /// # Errors
    /// The database's.
    fn stream_rows(
        &self,
        db: &mut postgres::Transaction<'_>,
    ) -> Result<Vec<StreamRow>, HandlerError>;

    /// As [`Projection::forget`].
    ///
    /// # Errors
    /// The database's.
    fn forget(
        &self,
        db: &mut postgres::Transaction<'_>,
        stream: &str,
        version: Version,
        through: Version,
    ) -> Result<bool, HandlerError>;

    /// As [`Projection::refold`].
    ///
    /// # Errors
    /// As [`Projection::refold`].
    fn refold(
        &self,
        db: &mut postgres::Transaction<'_>,
        stream: &str,
        version: Version,
        through: Version,
        events: &[RecordedEvent],
    ) -> Result<bool, HandlerError>;
}

/// One read-model row of a stream, as [`Projection::stream_rows`] lists it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamRow {
    /// The stream.
    pub stream: String,
    /// The version of the last event folded into the row.
    pub version: Version,
    /// The version of the first event folded into it: 1, or the version after the one an
    /// earlier life of the stream was forgotten through. A delete through a version at or
    /// after it touched the row.
    pub since: Version,
}
