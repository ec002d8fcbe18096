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
}
