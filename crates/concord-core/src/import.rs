//! Importing events recorded by another store, unchanged: what `concord copy` writes with.
//!
//! An import keeps what an append assigns (versions, positions, recorded times), so the
//! copy of a store is the same store: a reader, a checkpoint or a conflict check that
//! names a position or a version means the same event on both sides. The rules here are
//! the ones every backend checks under its write lock ([`plan_import`] for the batch,
//! [`plan_stream_import`] per stream), so that an import can only extend a store the way
//! its source grew:
//!
//! - positions grow and start above the head (a source's scavenge leaves holes; they stay);
//! - each stream's events in a batch are consecutive versions, continuing the stream's last
//!   version, or, for a stream without events, starting anywhere (a source that erased a
//!   prefix of it): the versions before the first are then recorded as erased, as a
//!   scavenge would have left them;
//! - a tombstoned stream takes nothing; an event id already in its stream is refused.

use std::collections::HashMap;

use crate::append::Limits;
use crate::error::{InvalidInput, StoreError};
use crate::event::RecordedEvent;
use crate::lifecycle::StreamLifecycle;
use crate::names::StreamName;
use crate::version::{Position, Version};

/// Events one import may carry.
pub const IMPORT_EVENTS_MAX: usize = 10_000;

/// What one batch writes to one stream.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamImport {
    /// The stream.
    pub stream: StreamName,
    /// The first version the batch writes to it.
    pub first: Version,
    /// The last version.
    pub last: Version,
    /// The position of its last event in the batch.
    pub last_position: Position,
}

fn invalid(message: String) -> StoreError {
    InvalidInput::new("events", message).into()
}

/// Checks a batch on its own and against the store's `head`, and says what it writes to
/// each stream (in the order the streams first appear).
///
/// # Errors
/// [`StoreError::Invalid`] for positions that do not grow or are not above the head, a
/// stream's versions that are not consecutive, an id twice in one stream, or too many
/// events; [`StoreError::TooLarge`] for an event over the store's limit.
pub fn plan_import(
    events: &[RecordedEvent],
    head: Position,
    limits: &Limits,
) -> Result<Vec<StreamImport>, StoreError> {
    if events.len() > IMPORT_EVENTS_MAX {
        return Err(StoreError::too_large(
            "import",
            events.len() as u64,
            IMPORT_EVENTS_MAX as u64,
            "events",
        ));
    }
    let mut after = head;
    let mut streams: Vec<StreamImport> = Vec::new();
    let mut index: HashMap<&StreamName, usize> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for e in events {
        if e.position <= after {
            return Err(invalid(format!(
                "event {} is at position {}, but an import must go on above position {after}",
                e.id, e.position
            )));
        }
        after = e.position;
        if e.version == Version::NONE {
            return Err(invalid(format!("event {} has version 0", e.id)));
        }
        let bytes = e.data.len() + e.metadata.len();
        if bytes > limits.event_bytes_max {
            return Err(StoreError::too_large(
                "event",
                bytes as u64,
                limits.event_bytes_max as u64,
                "bytes",
            ));
        }
        if !ids.insert((&e.stream, e.id)) {
            return Err(invalid(format!(
                "event id {} is twice in stream {}",
                e.id, e.stream
            )));
        }
        match index.get(&e.stream).and_then(|&i| streams.get_mut(i)) {
            Some(s) => {
                if e.version != s.last.next() {
                    return Err(invalid(format!(
                        "stream {} goes from version {} to {}: an import writes a stream's versions one after another",
                        e.stream, s.last, e.version
                    )));
                }
                s.last = e.version;
                s.last_position = e.position;
            }
            None => {
                index.insert(&e.stream, streams.len());
                streams.push(StreamImport {
                    stream: e.stream.clone(),
                    first: e.version,
                    last: e.version,
                    last_position: e.position,
                });
            }
        }
    }
    Ok(streams)
}

/// Checks what a batch writes to one stream against the stream as stored: its last version
/// ever written (`last`) and its lifecycle. Answers the version through which the stream
/// is to be recorded as erased, when the batch starts a stream above version 1.
///
/// # Errors
/// [`StoreError::StreamDeleted`] for a tombstoned stream; [`StoreError::Invalid`] when the
/// batch does not continue the stream's last version.
pub fn plan_stream_import(
    import: &StreamImport,
    last: Version,
    lifecycle: &StreamLifecycle,
) -> Result<Option<Version>, StoreError> {
    lifecycle.check_not_tombstoned(&import.stream)?;
    if last == Version::NONE {
        return Ok((import.first > Version(1)).then(|| Version(import.first.get() - 1)));
    }
    if import.first != last.next() {
        return Err(invalid(format!(
            "stream {} is at version {last} here, but the import starts it at version {}",
            import.stream, import.first
        )));
    }
    Ok(None)
}

/// What a store keeps of a stream beside its events: the last version ever written to it
/// and its lifecycle (soft delete, tombstone, retention settings). For a stream whose every
/// event is hidden or erased, this is all a copy can carry, and it is what keeps the copy
/// going on as the source would: a deleted stream's next version, a tombstoned name refused.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamPast {
    /// The stream.
    pub stream: StreamName,
    /// The last version ever written to it (0: none, only a lifecycle).
    pub last: Version,
    /// Its delete, tombstone and retention settings.
    pub lifecycle: StreamLifecycle,
}

/// What importing a [`StreamPast`] changes in a store.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PastImport {
    /// The stream has no version in the store and gets this last version, every version
    /// up to it recorded as erased (as a scavenge leaves a stream it erased whole).
    pub erased_through: Option<Version>,
    /// The lifecycle to store.
    pub lifecycle: StreamLifecycle,
}

/// Checks a stream's past against the stream as stored (its last version ever written,
/// `last`, and its `lifecycle`) and says what importing it changes. A stream with events
/// keeps its last version (the past must say the same); a stream without any takes the
/// past's. A soft delete never goes back; the retention settings become the past's; a
/// tombstone is kept, and importing a tombstoned past again changes nothing.
///
/// # Errors
/// [`StoreError::StreamDeleted`] for a tombstoned stream whose past is not;
/// [`StoreError::Invalid`] for a past that contradicts itself (a delete beyond its last
/// version, a last version beyond 2^63 − 1, a retention setting that is not a positive integer) or the
/// store (a last version other than the stream's).
pub fn plan_past_import(
    past: &StreamPast,
    last: Version,
    lifecycle: &StreamLifecycle,
) -> Result<PastImport, StoreError> {
    let stream = &past.stream;
    past.lifecycle.metadata.validate()?;
    if past.last.get() > i64::MAX as u64 {
        return Err(invalid(format!(
            "the past of stream {stream} has last version {}, beyond the largest a store keeps ({})",
            past.last,
            i64::MAX
        )));
    }
    if past.lifecycle.deleted_through > past.last {
        return Err(invalid(format!(
            "the past of stream {stream} deletes through version {}, beyond its last version {}",
            past.lifecycle.deleted_through, past.last
        )));
    }
    if lifecycle.tombstoned {
        if past.lifecycle.tombstoned {
            return Ok(PastImport {
                erased_through: None,
                lifecycle: *lifecycle,
            });
        }
        lifecycle.check_not_tombstoned(stream)?;
    }
    let erased_through = if last == past.last {
        None
    } else if last == Version::NONE {
        Some(past.last)
    } else {
        return Err(invalid(format!(
            "stream {stream} is at version {last} here, but its past says its last version is {}",
            past.last
        )));
    };
    Ok(PastImport {
        erased_through,
        lifecycle: StreamLifecycle {
            deleted_through: lifecycle
                .deleted_through
                .max(past.lifecycle.deleted_through),
            tombstoned: past.lifecycle.tombstoned,
            metadata: past.lifecycle.metadata,
        },
    })
}

/// Checks a head an import raises the store's `head` to (positions in between stay
/// holes, as a source's scavenge left them) and answers it, or `None` when it is the
/// head already.
///
/// # Errors
/// [`StoreError::Invalid`] for a head below the store's or beyond 2^63 − 1.
pub fn plan_head_import(head: Position, to: Position) -> Result<Option<Position>, StoreError> {
    if to.get() > i64::MAX as u64 {
        return Err(InvalidInput::new(
            "head",
            format!(
                "position {to} is beyond the largest a store keeps ({})",
                i64::MAX
            ),
        )
        .into());
    }
    match to.cmp(&head) {
        std::cmp::Ordering::Less => Err(InvalidInput::new(
            "head",
            format!("the store's head is {head}; an import cannot lower it to {to}"),
        )
        .into()),
        std::cmp::Ordering::Equal => Ok(None),
        std::cmp::Ordering::Greater => Ok(Some(to)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NewEvent, RecordedAt};

    fn event(stream: &str, version: u64, position: u64) -> RecordedEvent {
        RecordedEvent::new(
            StreamName::new(stream).unwrap_or_else(|e| panic!("{e}")),
            Version(version),
            Position(position),
            NewEvent::json("Deposited", &serde_json::json!({"amount": 1}))
                .unwrap_or_else(|e| panic!("{e}")),
            RecordedAt(1),
        )
    }

    #[test]
    fn a_batch_says_what_it_writes_to_each_stream_holes_in_positions_kept() {
        let events = [
            event("account-1", 5, 11),
            event("account-2", 1, 12),
            event("account-1", 6, 20),
        ];
        let plan = plan_import(&events, Position(10), &Limits::default()).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(
            (plan[0].first, plan[0].last, plan[0].last_position),
            (Version(5), Version(6), Position(20))
        );
        assert_eq!((plan[1].first, plan[1].last), (Version(1), Version(1)));
    }

    #[test]
    fn positions_must_grow_above_the_head_and_versions_follow_each_other() {
        let limits = Limits::default();
        for (events, head) in [
            (vec![event("a-1", 1, 3)], 3),
            (vec![event("a-1", 1, 4), event("b-1", 1, 4)], 0),
            (vec![event("a-1", 1, 4), event("a-1", 3, 5)], 0),
            (vec![event("a-1", 0, 4)], 0),
        ] {
            assert!(
                matches!(
                    plan_import(&events, Position(head), &limits),
                    Err(StoreError::Invalid(_))
                ),
                "{events:?}"
            );
        }
    }

    #[test]
    fn a_stream_goes_on_from_its_last_version_or_starts_anywhere_with_the_prefix_erased() {
        let none = StreamLifecycle::default();
        let s = |first: u64| StreamImport {
            stream: StreamName::new("a-1").unwrap_or_else(|e| panic!("{e}")),
            first: Version(first),
            last: Version(first + 2),
            last_position: Position(9),
        };
        assert_eq!(
            plan_stream_import(&s(1), Version(0), &none).ok(),
            Some(None)
        );
        assert_eq!(
            plan_stream_import(&s(7), Version(0), &none).ok(),
            Some(Some(Version(6)))
        );
        assert_eq!(
            plan_stream_import(&s(4), Version(3), &none).ok(),
            Some(None)
        );
        assert!(matches!(
            plan_stream_import(&s(5), Version(3), &none),
            Err(StoreError::Invalid(_))
        ));
        let tombstoned = StreamLifecycle {
            tombstoned: true,
            ..none
        };
        assert!(matches!(
            plan_stream_import(&s(1), Version(0), &tombstoned),
            Err(StoreError::StreamDeleted(_))
        ));
    }

    fn past(last: u64, deleted: u64, tombstoned: bool) -> StreamPast {
        StreamPast {
            stream: StreamName::new("account-1").unwrap_or_else(|e| panic!("{e}")),
            last: Version(last),
            lifecycle: StreamLifecycle {
                deleted_through: Version(deleted),
                tombstoned,
                ..StreamLifecycle::default()
            },
        }
    }

    #[test]
    fn a_past_gives_a_stream_without_versions_its_last_one_and_keeps_a_stream_with_versions() {
        let none = StreamLifecycle::default();
        let plan = plan_past_import(&past(7, 7, false), Version::NONE, &none).unwrap();
        assert_eq!(plan.erased_through, Some(Version(7)));
        assert_eq!(plan.lifecycle.deleted_through, Version(7));
        let plan = plan_past_import(&past(7, 0, false), Version(7), &none).unwrap();
        assert_eq!(plan.erased_through, None);
        // A delete never goes back.
        let stored = StreamLifecycle {
            deleted_through: Version(5),
            ..none
        };
        let plan = plan_past_import(&past(7, 2, false), Version(7), &stored).unwrap();
        assert_eq!(plan.lifecycle.deleted_through, Version(5));
        for (p, last) in [
            (past(7, 0, false), Version(3)),
            (past(3, 0, false), Version(7)),
            (past(3, 4, false), Version::NONE),
            (past(u64::MAX, 0, false), Version::NONE),
        ] {
            assert!(
                matches!(
                    plan_past_import(&p, last, &none),
                    Err(StoreError::Invalid(_))
                ),
                "{p:?} over {last}"
            );
        }
    }

    #[test]
    fn a_tombstone_takes_only_a_tombstoned_past() {
        let tombstoned = StreamLifecycle {
            tombstoned: true,
            ..StreamLifecycle::default()
        };
        let plan = plan_past_import(&past(3, 3, true), Version(3), &tombstoned).unwrap();
        assert_eq!(plan.lifecycle, tombstoned);
        assert!(matches!(
            plan_past_import(&past(3, 3, false), Version(3), &tombstoned),
            Err(StoreError::StreamDeleted(_))
        ));
    }

    #[test]
    fn a_head_only_goes_up() {
        assert!(matches!(
            plan_head_import(Position(9), Position(u64::MAX)),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(
            plan_head_import(Position(3), Position(9)).unwrap(),
            Some(Position(9))
        );
        assert_eq!(plan_head_import(Position(9), Position(9)).unwrap(), None);
        assert!(matches!(
            plan_head_import(Position(9), Position(3)),
            Err(StoreError::Invalid(_))
        ));
    }
}
