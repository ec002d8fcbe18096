//! Appends: the request, its outcome, the limits it must respect, and the pure rules that
//! decide it (idempotency, the expected-version check, the server-side rebase rule).
//!
//! [`plan_append`] is the whole decision, written once. In-process backends call it under
//! their write lock; the Redis backend repeats it inside its atomic function, and the
//! conformance suite keeps the two in agreement.

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};

use crate::error::{InvalidInput, StoreError};
use crate::event::{EventId, NewEvent, RecordedEvent, TAGS_PER_EVENT_MAX};
use crate::names::{EventType, StreamName};
use crate::query::{TYPES_PER_FILTER_MAX, check_list_len};
use crate::version::{ExpectedVersion, Position, Version};

/// Configurable limits, with API.md's defaults.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Limits {
    /// An event's `data` plus `metadata`, in bytes (default 1 MiB).
    pub event_bytes_max: usize,
    /// A request body, in bytes (default 16 MiB); enforced by the server.
    pub request_bytes_max: usize,
    /// Events in one append (default 1000).
    pub events_per_append_max: usize,
    /// Events one read returns (default 1000).
    pub read_limit_max: usize,
    /// Concurrent events a conflict or rebase lists (default 100).
    pub concurrent_events_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            event_bytes_max: 1024 * 1024,
            request_bytes_max: 16 * 1024 * 1024,
            events_per_append_max: 1000,
            read_limit_max: 1000,
            concurrent_events_max: 100,
        }
    }
}

impl Limits {
    /// How many events one page of a query read holds when `limit` were asked for: at least
    /// one (a query page always makes progress), at most `read_limit_max`.
    pub fn query_page(&self, limit: usize) -> usize {
        limit.clamp(1, self.read_limit_max.max(1))
    }

    /// Checks an append against these limits and the rules no constructor can enforce:
    /// at least one event, metadata an object, at most 32 tags, no id twice, at most
    /// [`TYPES_PER_FILTER_MAX`] types in `rebase_unless`.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] or [`StoreError::Invalid`]; nothing has been written.
    pub fn check_append(&self, request: &AppendRequest) -> Result<(), StoreError> {
        if let Some(types) = &request.rebase_unless {
            check_list_len(
                "rebase_unless",
                "rebase_unless",
                "types",
                types.len(),
                TYPES_PER_FILTER_MAX,
            )?;
        }
        self.check_events(&request.events)
    }

    /// As [`Limits::check_append`], for a list of events.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] or [`StoreError::Invalid`].
    pub fn check_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Err(InvalidInput::new(
                "events",
                "an append needs at least one event, but `events` is empty",
            )
            .into());
        }
        if events.len() > self.events_per_append_max {
            return Err(StoreError::too_large(
                "events",
                events.len() as u64,
                self.events_per_append_max as u64,
                "events",
            ));
        }
        for (i, e) in events.iter().enumerate() {
            if e.payload_bytes() > self.event_bytes_max {
                return Err(StoreError::too_large(
                    "event",
                    e.payload_bytes() as u64,
                    self.event_bytes_max as u64,
                    "bytes",
                ));
            }
            if !e.metadata.is_object() {
                return Err(InvalidInput::new(
                    "metadata",
                    format!("metadata of event {i} must be a JSON object"),
                )
                .into());
            }
            if e.tags.len() > TAGS_PER_EVENT_MAX {
                return Err(InvalidInput::new(
                    "tags",
                    format!(
                        "event {i} has {} tags, but at most {TAGS_PER_EVENT_MAX} are allowed",
                        e.tags.len()
                    ),
                )
                .into());
            }
        }
        let mut ids: Vec<&EventId> = events.iter().map(|e| &e.id).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w.first() == w.get(1)) {
            let id = w.first().map(|id| id.to_string()).unwrap_or_default();
            return Err(InvalidInput::new(
                "id",
                format!("event id {id} appears twice in one append"),
            )
            .into());
        }
        Ok(())
    }
}

/// One append to one stream.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AppendRequest {
    /// The stream to append to.
    pub stream: StreamName,
    /// The writer's claim about the stream.
    pub expected: ExpectedVersion,
    /// The events, written atomically with consecutive versions.
    pub events: Vec<NewEvent>,
    /// Server-side rebase: with an exact, stale expected version, append anyway unless a
    /// concurrent event has one of these types. `None`: never rebase.
    pub rebase_unless: Option<Vec<EventType>>,
}

impl AppendRequest {
    /// An append of `events` to `stream` under `expected`, without rebase.
    pub fn new(stream: StreamName, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        AppendRequest {
            stream,
            expected,
            events,
            rebase_unless: None,
        }
    }

    /// Allows a server-side rebase unless a concurrent event has one of `types`.
    #[must_use]
    pub fn rebase_unless(mut self, types: Vec<EventType>) -> Self {
        self.rebase_unless = Some(types);
        self
    }
}

/// Where an append's events landed.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Appended {
    /// The stream.
    pub stream: StreamName,
    /// The first event's version.
    pub first_version: Version,
    /// The last event's version: the stream's version after the append.
    pub last_version: Version,
    /// The first event's position.
    pub first_position: Position,
    /// The last event's position.
    pub last_position: Position,
}

/// A successful append. All three cases are successes the caller must look at.
#[must_use]
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AppendOutcome {
    /// Written as asked.
    Appended(Appended),
    /// Written after the current version because the expected one was stale and no
    /// concurrent event had a type in `rebase_unless`.
    Rebased {
        /// Where the events landed.
        appended: Appended,
        /// The stale expected version the writer sent.
        expected_version: Version,
        /// The events after it, which the append was rebased over (the first 100).
        concurrent_events: Vec<RecordedEvent>,
    },
    /// Every event id was already in the stream as this append: nothing was written, and
    /// these are the original versions and positions.
    Duplicate(Appended),
}

impl AppendOutcome {
    /// Where the events are, whichever the case.
    pub fn appended(&self) -> &Appended {
        match self {
            AppendOutcome::Appended(a)
            | AppendOutcome::Duplicate(a)
            | AppendOutcome::Rebased { appended: a, .. } => a,
        }
    }

    /// Whether nothing was written because the append had been made before.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, AppendOutcome::Duplicate(_))
    }

    /// Whether the append was rebased.
    pub fn is_rebased(&self) -> bool {
        matches!(self, AppendOutcome::Rebased { .. })
    }
}

/// The pure server-side rebase rule: an append may move past concurrent events when none
/// of them has a type listed in `rebase_unless`.
pub fn may_rebase<T: Borrow<EventType>>(
    rebase_unless: &[EventType],
    mut concurrent_types: impl Iterator<Item = T>,
) -> bool {
    !concurrent_types.any(|t| rebase_unless.contains(t.borrow()))
}

/// What the idempotency check found for an append's ids.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum IdCheck {
    /// None of the ids is in the stream.
    New,
    /// All of them are, in order and consecutive, from `first` to `last`.
    Duplicate {
        /// The version of the first id.
        first: Version,
        /// The version of the last id.
        last: Version,
    },
    /// Some are, or all are but not as this append; the ids found are listed.
    Partial(Vec<EventId>),
}

/// Classifies an append by where its ids already stand in the stream (`found[i]` is the
/// version of event i's id, if the stream holds it).
pub fn check_ids(ids: &[EventId], found: &[Option<Version>]) -> IdCheck {
    let existing: Vec<EventId> = ids
        .iter()
        .zip(found)
        .filter_map(|(id, v)| v.map(|_| *id))
        .collect();
    if existing.is_empty() {
        return IdCheck::New;
    }
    if existing.len() == ids.len() {
        let versions: Vec<Version> = found.iter().flatten().copied().collect();
        let consecutive = versions
            .windows(2)
            .all(|w| matches!(w, [a, b] if a.next() == *b));
        if let (true, Some(first), Some(last)) = (consecutive, versions.first(), versions.last()) {
            return IdCheck::Duplicate {
                first: *first,
                last: *last,
            };
        }
    }
    IdCheck::Partial(existing)
}

/// What a backend must do with an append, decided from the stream's state.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AppendPlan {
    /// Write the events after `after` (the stream's current version).
    Write {
        /// The stream's current version; the first event gets `after + 1`.
        after: Version,
        /// `Some(e)` when this is a rebase from the stale expected version `e`.
        rebased_from: Option<Version>,
    },
    /// Nothing to write: the append was made before, at these versions.
    Duplicate {
        /// The first original version.
        first: Version,
        /// The last original version.
        last: Version,
    },
    /// The expectation failed: report the events from `first_concurrent` on (if any).
    Conflict {
        /// The stream's current version.
        actual: Version,
        /// The first version the conflict lists.
        first_concurrent: Option<Version>,
    },
    /// Some ids are already in the stream.
    PartialDuplicate(Vec<EventId>),
}

/// Decides an append, in API.md's order: idempotency first (whatever the expectation
/// says), then the expected version, then the rebase rule.
///
/// `found` is where each event id already stands in the stream; `concurrent_types(e)`
/// gives the types of *all* events after version `e` (the rebase rule must see every one,
/// not only the first 100; a type may be given once for all its events). It is called
/// only when a rebase is possible.
pub fn plan_append<I>(
    request: &AppendRequest,
    actual: Version,
    found: &[Option<Version>],
    concurrent_types: impl FnOnce(Version) -> I,
) -> AppendPlan
where
    I: IntoIterator,
    I::Item: Borrow<EventType>,
{
    let ids: Vec<EventId> = request.events.iter().map(|e| e.id).collect();
    match check_ids(&ids, found) {
        IdCheck::Duplicate { first, last } => return AppendPlan::Duplicate { first, last },
        IdCheck::Partial(existing) => return AppendPlan::PartialDuplicate(existing),
        IdCheck::New => {}
    }
    if request.expected.holds_for(actual) {
        return AppendPlan::Write {
            after: actual,
            rebased_from: None,
        };
    }
    if let (Some(unless), ExpectedVersion::Exact(e)) = (&request.rebase_unless, request.expected)
        && e < actual
        && may_rebase(unless, concurrent_types(e).into_iter())
    {
        return AppendPlan::Write {
            after: actual,
            rebased_from: Some(e),
        };
    }
    AppendPlan::Conflict {
        actual,
        first_concurrent: request.expected.first_concurrent(actual),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Json;

    fn ty(s: &str) -> EventType {
        EventType::new(s).unwrap()
    }

    fn request(expected: ExpectedVersion, n: usize) -> AppendRequest {
        let events = (0..n)
            .map(|_| NewEvent::new(ty("Deposited"), Json::empty_object()))
            .collect();
        AppendRequest::new(StreamName::new("account-1").unwrap(), expected, events)
    }

    #[test]
    fn rebase_refused_when_a_concurrent_event_has_a_listed_type() {
        let closed = ty("AccountClosed");
        let dep = ty("Deposited");
        assert!(may_rebase(
            std::slice::from_ref(&closed),
            [&dep, &dep].into_iter()
        ));
        assert!(!may_rebase(
            std::slice::from_ref(&closed),
            [&dep, &closed].into_iter()
        ));
        assert!(may_rebase(&[], [&closed].into_iter()));
    }

    #[test]
    fn duplicates_must_be_whole_ordered_and_consecutive() {
        let ids = [EventId::new(), EventId::new()];
        assert_eq!(check_ids(&ids, &[None, None]), IdCheck::New);
        assert_eq!(
            check_ids(&ids, &[Some(Version(4)), Some(Version(5))]),
            IdCheck::Duplicate {
                first: Version(4),
                last: Version(5)
            }
        );
        assert!(
            matches!(check_ids(&ids, &[Some(Version(4)), None]), IdCheck::Partial(v) if v == [ids[0]])
        );
        assert!(matches!(
            check_ids(&ids, &[Some(Version(5)), Some(Version(4))]),
            IdCheck::Partial(_)
        ));
        assert!(matches!(
            check_ids(&ids, &[Some(Version(4)), Some(Version(6))]),
            IdCheck::Partial(_)
        ));
    }

    #[test]
    fn plan_checks_ids_before_the_expected_version() {
        let r = request(ExpectedVersion::Exact(Version(9)), 1);
        let plan = plan_append(&r, Version(3), &[Some(Version(2))], |_| {
            Vec::<&EventType>::new()
        });
        assert_eq!(
            plan,
            AppendPlan::Duplicate {
                first: Version(2),
                last: Version(2)
            }
        );
    }

    #[test]
    fn plan_rebases_only_an_exact_stale_expectation() {
        let none = || Vec::<&EventType>::new();
        let r =
            request(ExpectedVersion::Exact(Version(1)), 1).rebase_unless(vec![ty("AccountClosed")]);
        assert_eq!(
            plan_append(&r, Version(2), &[None], |_| none()),
            AppendPlan::Write {
                after: Version(2),
                rebased_from: Some(Version(1))
            }
        );
        let closed = ty("AccountClosed");
        assert_eq!(
            plan_append(&r, Version(2), &[None], |_| vec![&closed]),
            AppendPlan::Conflict {
                actual: Version(2),
                first_concurrent: Some(Version(2))
            }
        );
        // An expectation ahead of the stream is not stale: nothing to rebase over.
        let ahead = request(ExpectedVersion::Exact(Version(5)), 1).rebase_unless(vec![]);
        assert_eq!(
            plan_append(&ahead, Version(2), &[None], |_| none()),
            AppendPlan::Conflict {
                actual: Version(2),
                first_concurrent: None
            }
        );
        let exists = request(ExpectedVersion::NoStream, 1).rebase_unless(vec![]);
        assert_eq!(
            plan_append(&exists, Version(2), &[None], |_| none()),
            AppendPlan::Conflict {
                actual: Version(2),
                first_concurrent: Some(Version(1))
            }
        );
    }

    #[test]
    fn limits_refuse_empty_oversized_and_repeated_ids() {
        let limits = Limits {
            event_bytes_max: 10,
            events_per_append_max: 2,
            ..Limits::default()
        };
        assert!(matches!(
            limits.check_append(&request(ExpectedVersion::Any, 0)),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            limits.check_append(&request(ExpectedVersion::Any, 3)),
            Err(StoreError::TooLarge(_))
        ));
        let mut big = request(ExpectedVersion::Any, 1);
        big.events[0].data = Json::from_value(&serde_json::json!("0123456789")).into();
        assert!(matches!(
            limits.check_append(&big),
            Err(StoreError::TooLarge(_))
        ));
        let mut twice = request(ExpectedVersion::Any, 2);
        twice.events[1].id = twice.events[0].id;
        assert!(matches!(
            limits.check_append(&twice),
            Err(StoreError::Invalid(_))
        ));
        let mut meta = request(ExpectedVersion::Any, 1);
        meta.events[0].metadata = Json::from_value(&serde_json::json!([1]));
        assert!(matches!(
            limits.check_append(&meta),
            Err(StoreError::Invalid(_))
        ));
        assert!(
            limits
                .check_append(&request(ExpectedVersion::Any, 2))
                .is_ok()
        );
    }
}
