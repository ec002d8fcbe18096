//! Stream lifecycle: soft delete, tombstone, retention metadata, and what a scavenge erases.
//!
//! Every backend keeps, per stream, its last version ever written (never lowered, so a
//! version is never reused after a delete), the version a soft delete hid everything up to,
//! whether the stream is tombstoned, and its [`StreamMetadata`]. The pure rules over that
//! state live here, once: which versions a read shows ([`StreamLifecycle::keeps`]), what
//! version an append's expectation is checked against ([`StreamLifecycle::visible_version`]),
//! whether a delete may go ahead ([`plan_delete`]), and so what a scavenge may erase
//! (exactly what reads no longer show). See `docs/decisions/0003-stream-lifecycle.md`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{PartialDuplicate, StoreError};
use crate::event::{EventId, NewEvent, RecordedAt};
use crate::names::StreamName;
use crate::version::Version;

/// A stream's retention settings. From the moment they are stored, reads of the stream
/// show only events within every setting; versions never change.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMetadata {
    /// Keep only the last `max_count` events (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Keep only events recorded less than this many seconds ago (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    /// Keep only events with a version at least this (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<Version>,
}

impl StreamMetadata {
    /// No setting: every event is kept.
    pub const NONE: StreamMetadata = StreamMetadata {
        max_count: None,
        max_age_seconds: None,
        truncate_before: None,
    };

    /// Checks that every setting is a positive integer.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), StoreError> {
        let positive = |field: &'static str, v: Option<u64>| match v {
            Some(0) => Err(StoreError::invalid(
                field,
                format!("{field} must be a positive integer, got 0"),
            )),
            Some(n) if n > i64::MAX as u64 => Err(StoreError::invalid(
                field,
                format!("{field} must be at most {}, got {n}", i64::MAX),
            )),
            _ => Ok(()),
        };
        positive("max_count", self.max_count)?;
        positive("max_age_seconds", self.max_age_seconds)?;
        positive("truncate_before", self.truncate_before.map(Version::get))
    }

    /// The maximum age, when set.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age_seconds.map(Duration::from_secs)
    }

    /// Whether no setting is stored.
    pub fn is_empty(&self) -> bool {
        *self == StreamMetadata::NONE
    }
}

/// What a backend keeps per stream beside its events.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StreamLifecycle {
    /// A soft delete hid every version up to this one (0: never deleted).
    pub deleted_through: Version,
    /// Whether the stream is tombstoned: gone forever, every later use is refused.
    pub tombstoned: bool,
    /// The retention settings.
    pub metadata: StreamMetadata,
}

impl StreamLifecycle {
    /// The version an append's expectation and a delete's expected version are checked
    /// against, given the last version ever written: 0 (no stream) when a soft delete hid
    /// every event, otherwise `last`. An append that holds writes after `last` whatever
    /// this says, so versions go on from the last one before the delete.
    pub fn visible_version(&self, last: Version) -> Version {
        if last > self.deleted_through {
            last
        } else {
            Version::NONE
        }
    }

    /// The first version reads show, given the last version ever written, by the delete,
    /// `truncate_before` and `max_count` (`max_age` depends on each event's time: see
    /// [`Self::keeps`]). Past `last` when nothing is shown.
    pub fn first_kept(&self, last: Version) -> Version {
        let mut first = self.deleted_through.next();
        if let Some(tb) = self.metadata.truncate_before {
            first = first.max(tb);
        }
        if let Some(n) = self.metadata.max_count {
            first = first.max(Version(last.get().saturating_sub(n).saturating_add(1)));
        }
        first
    }

    /// Whether a read shows the event at `version`, recorded at `recorded_at`, at time
    /// `now`, given the last version ever written. A scavenge erases exactly the events
    /// this refuses.
    pub fn keeps(
        &self,
        version: Version,
        recorded_at: RecordedAt,
        last: Version,
        now: RecordedAt,
    ) -> bool {
        !self.tombstoned && version >= self.first_kept(last) && self.young_enough(recorded_at, now)
    }

    /// Whether an event recorded at `recorded_at` is within `max_age` at `now`.
    pub fn young_enough(&self, recorded_at: RecordedAt, now: RecordedAt) -> bool {
        match self.metadata.max_age_seconds {
            None => true,
            Some(s) => {
                now.as_millis().saturating_sub(recorded_at.as_millis()) < s.saturating_mul(1000)
            }
        }
    }

    /// The oldest time an event may have been recorded at and still be shown at `now`
    /// (`None` when there is no `max_age`): backends compare it with stored times.
    pub fn oldest_kept(&self, now: RecordedAt) -> Option<RecordedAt> {
        self.metadata.max_age_seconds.map(|s| {
            RecordedAt(
                now.as_millis()
                    .saturating_sub(s.saturating_mul(1000))
                    .saturating_add(1),
            )
        })
    }

    /// Whether a backend needs to keep this state at all (anything but the default).
    pub fn is_default(&self) -> bool {
        *self == StreamLifecycle::default()
    }

    /// Refuses with [`StoreError::StreamDeleted`] when the stream is tombstoned.
    ///
    /// # Errors
    /// [`StoreError::StreamDeleted`].
    pub fn check_not_tombstoned(&self, stream: &StreamName) -> Result<(), StoreError> {
        if self.tombstoned {
            Err(StoreError::StreamDeleted(stream.clone()))
        } else {
            Ok(())
        }
    }
}

/// A change of a stream's retention settings: each member is `None` to keep the stored
/// setting, `Some(None)` to remove it, `Some(Some(n))` to set it. Backends apply it to the
/// stored settings in one atomic step, so two callers changing different settings at the
/// same moment both take effect (a read, a merge and a write would lose one of them).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MetadataChange {
    /// The change of `max_count`.
    pub max_count: Option<Option<u64>>,
    /// The change of `max_age_seconds`.
    pub max_age_seconds: Option<Option<u64>>,
    /// The change of `truncate_before`.
    pub truncate_before: Option<Option<Version>>,
}

impl MetadataChange {
    /// The change that stores exactly `metadata`, whatever was stored before.
    pub fn replacing(metadata: StreamMetadata) -> Self {
        MetadataChange {
            max_count: Some(metadata.max_count),
            max_age_seconds: Some(metadata.max_age_seconds),
            truncate_before: Some(metadata.truncate_before),
        }
    }

    /// `current` with this change applied.
    pub fn apply(&self, current: StreamMetadata) -> StreamMetadata {
        StreamMetadata {
            max_count: self.max_count.unwrap_or(current.max_count),
            max_age_seconds: self.max_age_seconds.unwrap_or(current.max_age_seconds),
            truncate_before: self.truncate_before.unwrap_or(current.truncate_before),
        }
    }

    /// Checks that every setting it sets is a positive integer, before any store is asked.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), StoreError> {
        StreamMetadata {
            max_count: self.max_count.flatten(),
            max_age_seconds: self.max_age_seconds.flatten(),
            truncate_before: self.truncate_before.flatten(),
        }
        .validate()
    }
}

/// A soft delete or a tombstone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DeleteMode {
    /// Hide every event so far; a later append recreates the stream, versions going on.
    Soft,
    /// Refuse every later append, read and subscription of the stream, forever.
    Tombstone,
    /// As [`DeleteMode::Tombstone`], but a stream that never had an event is tombstoned
    /// too instead of not found: KurrentDB's tombstone, which reserves a name for good.
    /// The gRPC side offers it; the HTTP API keeps its 404.
    TombstoneName,
}

impl DeleteMode {
    /// Whether the stream is refused forever afterwards.
    pub fn tombstones(self) -> bool {
        self != DeleteMode::Soft
    }
}

/// What a backend does with a delete request, decided by [`plan_delete`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DeletePlan {
    /// Store the new lifecycle state.
    Delete(StreamLifecycle),
    /// The expected version is stale: report a conflict as an append would, listing the
    /// events from `first_concurrent` on (none when `None`).
    Conflict {
        /// The stream's visible version.
        actual: Version,
        /// The first version the writer missed.
        first_concurrent: Option<Version>,
    },
}

/// Decides a delete of a stream whose last version ever written is `last`.
///
/// A soft delete needs a visible event; a tombstone needs any event ever written (so a
/// soft-deleted stream can be tombstoned); a [`DeleteMode::TombstoneName`] needs none.
/// `expected`, when given, must equal the visible version.
///
/// # Errors
/// [`StoreError::StreamDeleted`] for a tombstoned stream; [`StoreError::StreamNotFound`]
/// when there is nothing to delete.
pub fn plan_delete(
    stream: &StreamName,
    mode: DeleteMode,
    expected: Option<Version>,
    last: Version,
    lifecycle: StreamLifecycle,
) -> Result<DeletePlan, StoreError> {
    lifecycle.check_not_tombstoned(stream)?;
    let visible = lifecycle.visible_version(last);
    let exists = match mode {
        DeleteMode::Soft => visible > Version::NONE,
        DeleteMode::Tombstone => last > Version::NONE,
        DeleteMode::TombstoneName => true,
    };
    if !exists {
        return Err(StoreError::StreamNotFound(stream.clone()));
    }
    if let Some(e) = expected
        && e != visible
    {
        let first_concurrent =
            (e < visible).then(|| e.next().max(lifecycle.first_kept(last)).min(visible));
        return Ok(DeletePlan::Conflict {
            actual: visible,
            first_concurrent,
        });
    }
    let mut next = lifecycle;
    next.deleted_through = last;
    next.tombstoned = mode.tombstones();
    Ok(DeletePlan::Delete(next))
}

/// Refuses an append whose event ids include ids of events below `first_kept` (hidden by a
/// delete or retention, not yet erased): an id is the idempotency key of its event and
/// stays taken until a scavenge erases the event. `found` is where each id stands in the
/// stream, hidden versions included.
///
/// # Errors
/// [`StoreError::PartialDuplicate`] naming the hidden ids.
pub fn check_hidden_ids(
    stream: &StreamName,
    events: &[NewEvent],
    found: &[Option<Version>],
    first_kept: Version,
) -> Result<(), StoreError> {
    let hidden: Vec<EventId> = events
        .iter()
        .zip(found)
        .filter(|(_, v)| v.is_some_and(|v| v < first_kept))
        .map(|(e, _)| e.id)
        .collect();
    if hidden.is_empty() {
        Ok(())
    } else {
        Err(StoreError::PartialDuplicate(Box::new(PartialDuplicate {
            stream: stream.clone(),
            existing_ids: hidden,
        })))
    }
}

/// What a scavenge removed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct ScavengeReport {
    /// Events whose bytes were erased.
    pub events_removed: u64,
    /// Streams that had events erased.
    pub streams_scavenged: u64,
    /// Bytes of storage given back, where the backend can tell (0 otherwise).
    pub bytes_reclaimed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> StreamName {
        StreamName::new("account-1").unwrap()
    }

    #[test]
    fn a_soft_deleted_stream_reads_as_no_stream_until_it_is_recreated() {
        let l = StreamLifecycle {
            deleted_through: Version(5),
            ..StreamLifecycle::default()
        };
        assert_eq!(l.visible_version(Version(5)), Version::NONE);
        assert_eq!(l.visible_version(Version(6)), Version(6));
        assert_eq!(l.first_kept(Version(6)), Version(6));
    }

    #[test]
    fn retention_keeps_what_is_within_every_setting() {
        let l = StreamLifecycle {
            metadata: StreamMetadata {
                max_count: Some(3),
                max_age_seconds: Some(10),
                truncate_before: Some(Version(2)),
            },
            ..StreamLifecycle::default()
        };
        let now = RecordedAt(100_000);
        let fresh = RecordedAt(95_000);
        assert_eq!(l.first_kept(Version(10)), Version(8));
        assert_eq!(l.first_kept(Version(2)), Version(2));
        assert!(l.keeps(Version(8), fresh, Version(10), now));
        assert!(!l.keeps(Version(7), fresh, Version(10), now));
        assert!(!l.keeps(Version(9), RecordedAt(90_000), Version(10), now));
        assert!(l.keeps(Version(9), RecordedAt(90_001), Version(10), now));
        assert_eq!(l.oldest_kept(now), Some(RecordedAt(90_001)));
    }

    #[test]
    fn zero_settings_are_refused() {
        for m in [
            StreamMetadata {
                max_count: Some(0),
                ..StreamMetadata::NONE
            },
            StreamMetadata {
                max_age_seconds: Some(0),
                ..StreamMetadata::NONE
            },
            StreamMetadata {
                truncate_before: Some(Version(0)),
                ..StreamMetadata::NONE
            },
        ] {
            assert!(matches!(m.validate(), Err(StoreError::Invalid(_))));
        }
        assert!(StreamMetadata::NONE.validate().is_ok());
    }

    #[test]
    fn a_metadata_change_keeps_what_it_leaves_out_and_removes_what_it_nulls() {
        let current = StreamMetadata {
            max_count: Some(5),
            max_age_seconds: Some(60),
            truncate_before: None,
        };
        let change = MetadataChange {
            max_count: Some(None),
            truncate_before: Some(Some(Version(3))),
            ..MetadataChange::default()
        };
        assert_eq!(
            change.apply(current),
            StreamMetadata {
                max_count: None,
                max_age_seconds: Some(60),
                truncate_before: Some(Version(3)),
            }
        );
        assert_eq!(MetadataChange::default().apply(current), current);
        assert_eq!(
            MetadataChange::replacing(StreamMetadata::NONE).apply(current),
            StreamMetadata::NONE
        );
        let zero = MetadataChange {
            max_age_seconds: Some(Some(0)),
            ..MetadataChange::default()
        };
        assert!(matches!(zero.validate(), Err(StoreError::Invalid(_))));
        assert!(change.validate().is_ok());
    }

    #[test]
    fn only_a_name_tombstone_takes_a_stream_that_never_had_an_event() {
        let none = StreamLifecycle::default();
        assert!(matches!(
            plan_delete(&s(), DeleteMode::Tombstone, None, Version(0), none),
            Err(StoreError::StreamNotFound(_))
        ));
        for expected in [None, Some(Version::NONE)] {
            assert_eq!(
                plan_delete(&s(), DeleteMode::TombstoneName, expected, Version(0), none).ok(),
                Some(DeletePlan::Delete(StreamLifecycle {
                    tombstoned: true,
                    ..none
                }))
            );
        }
        assert_eq!(
            plan_delete(
                &s(),
                DeleteMode::TombstoneName,
                Some(Version(2)),
                Version(0),
                none
            )
            .ok(),
            Some(DeletePlan::Conflict {
                actual: Version(0),
                first_concurrent: None
            })
        );
    }

    #[test]
    fn deletes_need_something_to_delete_and_a_current_expectation() {
        let none = StreamLifecycle::default();
        assert!(matches!(
            plan_delete(&s(), DeleteMode::Soft, None, Version(0), none),
            Err(StoreError::StreamNotFound(_))
        ));
        let deleted = StreamLifecycle {
            deleted_through: Version(3),
            ..none
        };
        assert!(matches!(
            plan_delete(&s(), DeleteMode::Soft, None, Version(3), deleted),
            Err(StoreError::StreamNotFound(_))
        ));
        assert!(matches!(
            plan_delete(&s(), DeleteMode::Tombstone, None, Version(3), deleted),
            Ok(DeletePlan::Delete(StreamLifecycle {
                tombstoned: true,
                ..
            }))
        ));
        assert_eq!(
            plan_delete(&s(), DeleteMode::Soft, Some(Version(1)), Version(3), none).unwrap(),
            DeletePlan::Conflict {
                actual: Version(3),
                first_concurrent: Some(Version(2))
            }
        );
        assert_eq!(
            plan_delete(&s(), DeleteMode::Soft, Some(Version(3)), Version(3), none).unwrap(),
            DeletePlan::Delete(StreamLifecycle {
                deleted_through: Version(3),
                ..none
            })
        );
        let tombstoned = StreamLifecycle {
            tombstoned: true,
            ..none
        };
        assert!(matches!(
            plan_delete(&s(), DeleteMode::Soft, None, Version(3), tombstoned),
            Err(StoreError::StreamDeleted(_))
        ));
    }
}
