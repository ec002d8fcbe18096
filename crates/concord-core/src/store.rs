//! The `EventStore` trait: what every backend offers, in one language of errors.
//!
//! It is object-safe (`Arc<dyn EventStore>`), because the server and the CLI choose the
//! backend from a URL at run time (ADR 0001). Subscriptions are provided methods written
//! once over `read_all`/`read_stream` plus the head-moved wait that each backend supplies.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::append::{AppendOutcome, AppendRequest};
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::import::StreamPast;
use crate::lifecycle::{MetadataChange, ScavengeReport, StreamLifecycle, StreamMetadata};
use crate::multi::{MultiAppendOutcome, MultiAppendRequest, QueryPage};
use crate::names::StreamName;
use crate::query::{Filter, Query};
use crate::subscription::{self, Subscription};
use crate::version::{Position, Version};

/// Which way a stream read goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From low versions to high (the default).
    #[default]
    Forward,
    /// From high versions to low.
    Backward,
}

/// One page of the global log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AllPage {
    /// The matching events, in position order.
    pub events: Vec<RecordedEvent>,
    /// Where the next read continues (inclusive): every matching event before it has been
    /// returned by this or an earlier page.
    pub next_from: Position,
    /// The store's last position when the page was read.
    pub head: Position,
}

impl AllPage {
    /// Whether the read reached the head: nothing more to read now.
    pub fn is_caught_up(&self) -> bool {
        self.next_from > self.head
    }
}

/// A stream in a listing.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream.
    pub stream: StreamName,
    /// Its current version.
    pub version: Version,
    /// The position of its last event.
    pub last_position: Position,
}

/// An event store: conditional appends to versioned streams, reads, and subscriptions.
///
/// Every method returns [`StoreError`], whatever the backend. Limits passed as `limit`
/// are clamped by the backend to its read limit.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// The backend's name (`memory`, `embedded`, `redis`, `http`), for health and metrics.
    fn backend(&self) -> &'static str;

    /// Appends `request.events` atomically if `request.expected` holds (or a server-side
    /// rebase applies), or recognises a repeated append by its event ids.
    ///
    /// **Cancellation:** a caller may drop the future before it resolves (it timed out, or
    /// was interrupted). The store then holds the whole append or none of it, never a
    /// part, and the caller does not know which: re-sending the same event ids settles it
    /// (the append is written, or answered as a duplicate of the abandoned one).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with the concurrent events; [`StoreError::PartialDuplicate`];
    /// [`StoreError::Invalid`] or [`StoreError::TooLarge`] with nothing written; backend
    /// failures.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// Up to `limit` events of `stream` starting at version `from` (inclusive), going
    /// `direction`. Backward from a version past the end starts at the last event. A stream
    /// that does not exist (or is soft-deleted) reads as empty; events that retention
    /// ([`StreamMetadata`]) leaves out are skipped.
    ///
    /// # Errors
    /// [`StoreError::StreamDeleted`] for a tombstoned stream; backend failures.
    async fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events of the global log at positions `from` (inclusive) onwards that
    /// pass `filter`.
    ///
    /// # Errors
    /// Backend failures.
    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError>;

    /// The stream's current version (0 when it does not exist or is soft-deleted): what an
    /// append's expectation is checked against.
    ///
    /// # Errors
    /// [`StoreError::StreamDeleted`] for a tombstoned stream; backend failures.
    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError>;

    /// Up to `limit` streams whose names start with `prefix`, ordered by name, after the
    /// stream `after` (exclusive) when given.
    ///
    /// # Errors
    /// Backend failures.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError>;

    /// The last position in the store (0 when empty).
    ///
    /// # Errors
    /// Backend failures.
    async fn head(&self) -> Result<Position, StoreError>;

    /// Whether the store can take appends and answer reads now: what `GET /health` reports.
    /// The provided implementation reads the head.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the backend cannot be reached;
    /// [`StoreError::Poisoned`] when it refuses appends until it is reopened.
    async fn health(&self) -> Result<(), StoreError> {
        self.head().await.map(|_| ())
    }

    /// Waits until the head is beyond `after` and returns it. May return earlier (with a
    /// head not beyond `after`) after a backend-chosen timeout; callers re-check.
    ///
    /// # Errors
    /// Backend failures.
    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError>;

    /// Appends every part of `request` atomically, with consecutive positions in part
    /// order, if every part's expectation holds (or its rebase applies) and no event
    /// matching the condition's query has a position after the condition's `after`; or
    /// recognises a repeated append by its event ids (over all parts).
    ///
    /// A backend implements it only if it can make the whole request atomic; there is no
    /// fallback that appends part by part. Dropping the future is as for [`Self::append`]:
    /// every part or none.
    ///
    /// # Errors
    /// [`StoreError::Conflicts`] naming every stale part (also for a single part);
    /// [`StoreError::ConditionFailed`] with the first matching events;
    /// [`StoreError::PartialDuplicate`]; [`StoreError::Invalid`] or
    /// [`StoreError::TooLarge`] with nothing written; backend failures.
    async fn append_multi(
        &self,
        request: MultiAppendRequest,
    ) -> Result<MultiAppendOutcome, StoreError>;

    /// Up to `limit` events matching `query` with positions greater than `after` and at
    /// most the head, with the head to use as a condition's `after`.
    ///
    /// The provided implementation pages through [`EventStore::read_all`] and applies
    /// [`Query::matches`]; backends with type and tag indexes override it.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a query that breaks a rule; backend failures.
    async fn query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<QueryPage, StoreError> {
        query.validate()?;
        let limit = limit.max(1);
        let mut from = after.next();
        let first = self.read_all(from, &Filter::all(), limit).await?;
        let head = first.head;
        let mut events = Vec::new();
        let mut page = Some(first);
        while let Some(p) = page.take() {
            for e in p.events {
                if e.position > head {
                    return Ok(QueryPage {
                        events,
                        head,
                        next: None,
                    });
                }
                if query.matches(&e) {
                    if events.len() == limit {
                        let next = events.last().map(|l: &RecordedEvent| l.position);
                        return Ok(QueryPage { events, head, next });
                    }
                    events.push(e);
                }
            }
            from = p.next_from;
            if from <= head {
                page = Some(self.read_all(from, &Filter::all(), 1000).await?);
            }
        }
        Ok(QueryPage {
            events,
            head,
            next: None,
        })
    }

    /// Deletes `stream`: a *soft* delete. Reads answer as for a stream that does not exist
    /// and listings omit it; a later append whose expectation holds for a missing stream
    /// recreates it, its versions going on after the last one before the delete (a version
    /// is never reused). The events leave the global log, queries and conditions no later
    /// than the next [`Self::scavenge`], which erases them. `expected`, when given, must be
    /// the stream's current version.
    ///
    /// The provided implementation refuses: a backend without lifecycle support.
    ///
    /// # Errors
    /// [`StoreError::StreamNotFound`] when the stream has no event;
    /// [`StoreError::Conflict`] (with the missed events) for a stale `expected`;
    /// [`StoreError::StreamDeleted`] when it is tombstoned; backend failures.
    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        let _ = (stream, expected);
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "delete_stream",
        })
    }

    /// Tombstones `stream`: a *hard* delete. Every later append (idempotent re-appends of
    /// its old events and multi-stream appends naming it included), read, version lookup
    /// or subscription of it fails with [`StoreError::StreamDeleted`], forever; its events
    /// are erased by the next [`Self::scavenge`]. A soft-deleted stream may be tombstoned.
    ///
    /// # Errors
    /// As [`Self::delete_stream`]; a stream that never had an event is not found.
    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        let _ = (stream, expected);
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "tombstone_stream",
        })
    }

    /// KurrentDB's tombstone: as [`Self::tombstone_stream`], but a stream that never had an
    /// event is tombstoned too (its name refused forever from now on) instead of not found.
    /// The gRPC side offers it, because KurrentDB's clients rely on it; the HTTP API keeps
    /// [`Self::tombstone_stream`]'s 404.
    ///
    /// # Errors
    /// As [`Self::tombstone_stream`], except [`StoreError::StreamNotFound`].
    async fn tombstone_stream_name(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        let _ = (stream, expected);
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "tombstone_stream_name",
        })
    }

    /// The stream's retention settings ([`StreamMetadata::NONE`] when none is stored; a
    /// stream need not exist to have some).
    ///
    /// # Errors
    /// [`StoreError::StreamDeleted`] when it is tombstoned; backend failures.
    async fn stream_metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError> {
        let _ = stream;
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "stream_metadata",
        })
    }

    /// What the backend keeps for the stream beside its events: how far a soft delete hid
    /// it, whether it is tombstoned, and its retention settings
    /// ([`StreamLifecycle::default`] for a stream that never had any). Unlike the other
    /// calls, a tombstone is an answer here (`tombstoned`), not an error. Read models use it
    /// to tell a deleted stream that was written again from one that never went away.
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] from a backend that does not expose it (the HTTP
    /// client); backend failures.
    async fn stream_lifecycle(&self, stream: &StreamName) -> Result<StreamLifecycle, StoreError> {
        let _ = stream;
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "stream_lifecycle",
        })
    }

    /// Applies `change` to the stream's retention settings in one atomic step and returns
    /// the settings now stored: a concurrent change of another setting is never lost.
    /// Reads honour them from the moment this returns; the events they leave out are erased
    /// by the next [`Self::scavenge`].
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a setting that is not a positive integer;
    /// [`StoreError::StreamDeleted`] when it is tombstoned; backend failures.
    async fn change_stream_metadata(
        &self,
        stream: &StreamName,
        change: MetadataChange,
    ) -> Result<StreamMetadata, StoreError> {
        let _ = (stream, change);
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "change_stream_metadata",
        })
    }

    /// Replaces the stream's retention settings and returns them: a
    /// [`Self::change_stream_metadata`] of every setting.
    ///
    /// # Errors
    /// As [`Self::change_stream_metadata`].
    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<StreamMetadata, StoreError> {
        self.change_stream_metadata(stream, MetadataChange::replacing(metadata))
            .await
    }

    /// Writes `events`, recorded by another store, exactly as they are: ids, streams,
    /// versions, positions, types, tags, data, metadata and recorded times (what `concord
    /// copy` writes with). All of them or none. The rules ([`crate::plan_import`],
    /// [`crate::plan_stream_import`]): positions grow and start above the head (holes a
    /// source's scavenge left stay holes); a stream's events are consecutive versions that
    /// continue its last version, or start a stream without events anywhere (the versions
    /// before are then erased, as a scavenge leaves them). Subscribers see the events as
    /// they see appends.
    ///
    /// The provided implementation refuses: a backend that cannot import.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a batch that breaks a rule or an event id already in its
    /// stream; [`StoreError::StreamDeleted`] for a tombstoned stream;
    /// [`StoreError::TooLarge`]; backend failures.
    async fn import(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        let _ = events;
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "import",
        })
    }

    /// Up to `limit` streams the store keeps anything of (events, erased versions, a
    /// delete, a tombstone, retention settings), by name, after `after` (exclusive) when
    /// given, each with its last version ever written and its lifecycle: what `concord
    /// copy` carries besides the events, so that deleted and tombstoned streams go on in
    /// the target as in the source.
    ///
    /// The provided implementation refuses: a backend that cannot list them.
    ///
    /// # Errors
    /// Backend failures.
    async fn list_stream_pasts(
        &self,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamPast>, StoreError> {
        let _ = (after, limit);
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "list_stream_pasts",
        })
    }

    /// Writes what another store keeps of a stream beside its events
    /// ([`crate::plan_past_import`]): a stream without a version here takes the past's last
    /// version, every version up to it erased (its next append writes the one after); the
    /// delete, tombstone and retention settings become the past's. What `concord copy`
    /// writes after a stream's events.
    ///
    /// The provided implementation refuses: a backend that cannot import.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a past that contradicts itself or the stream's last
    /// version here; [`StoreError::StreamDeleted`] for a tombstoned stream whose past is
    /// not; backend failures.
    async fn import_stream_past(&self, past: &StreamPast) -> Result<(), StoreError> {
        let _ = past;
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "import_stream_past",
        })
    }

    /// Raises the head to `head`, the positions above the old head left without an event
    /// (holes, as a source's scavenge of its last events leaves them): what `concord copy`
    /// ends with, so that the target's next append takes the position after the source's
    /// head. Raising it to the head it is already at changes nothing.
    ///
    /// The provided implementation refuses: a backend that cannot import.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a head below the store's; backend failures.
    async fn import_head(&self, head: Position) -> Result<(), StoreError> {
        let _ = head;
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "import_head",
        })
    }

    /// Erases every event that deletes, tombstones and retention hide: from streams, the
    /// global log, queries, conditions, indexes and subscriptions, so that their bytes are
    /// not in the store's storage afterwards. Positions of the other events never change;
    /// appends go on meanwhile.
    ///
    /// # Errors
    /// Backend failures; a scavenge cut short leaves a store that the next one completes.
    async fn scavenge(&self) -> Result<ScavengeReport, StoreError> {
        Err(StoreError::Unsupported {
            backend: self.backend(),
            operation: "scavenge",
        })
    }

    /// Every event from position `from` (inclusive) that passes `filter`: what is stored,
    /// then live, in order, with no gap and no duplicate at the switch.
    fn subscribe_all(self: Arc<Self>, from: Position, filter: Filter) -> Subscription {
        subscription::all(self, from, filter)
    }

    /// Every event of `stream` from version `from` (inclusive): stored, then live.
    fn subscribe_stream(self: Arc<Self>, stream: StreamName, from: Version) -> Subscription {
        subscription::stream(self, stream, from)
    }
}
