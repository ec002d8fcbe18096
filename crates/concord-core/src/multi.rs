//! Appends that span streams: several parts written atomically, optionally under a query
//! condition (the DCB "fail if an event matching this query was appended after p").
//!
//! Invariants that cross streams (a transfer moves money between two accounts, a username
//! is unique among all users) cannot be protected by one stream's expected version. A
//! [`MultiAppendRequest`] checks every part's expectation and the condition together, and
//! writes all parts with consecutive positions or nothing.
//!
//! The decision is pure and written once, in [`plan_multi_append`]: every part is decided
//! by [`crate::plan_append`] (so idempotency and the rebase rule are exactly those of a
//! single append), then the parts are combined. In-process backends call it under their
//! write lock; the Redis function mirrors it, and the conformance suite keeps them in
//! agreement. The condition is evaluated by the backend (through its indexes) only when
//! the plan says to write, because a repeated append whose events are already stored
//! would otherwise fail its own condition.
//!
//! ## Rebase inside a multi-stream append
//! Each part is "as the body of a single append" (API.md), so a part may carry
//! `rebase_unless`, and it is decided per part: a transfer's deposit into the target
//! account commutes and may be rebased while the withdrawal from the source keeps its
//! exact expectation. A rebase is reported per part ([`crate::AppendOutcome::Rebased`]).
//! The condition is independent of rebases: it looks at the whole store after `after`.

use std::borrow::Borrow;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::append::{AppendOutcome, AppendPlan, AppendRequest, Limits, plan_append};
use crate::error::{ConditionFailed, InvalidInput, StoreError};
use crate::event::{EventId, RecordedEvent};
use crate::names::EventType;
use crate::query::Query;
use crate::version::{Position, Version};

/// The most parts one multi-stream append may have.
pub const PARTS_PER_APPEND_MAX: usize = 100;

/// The most matching events a failed condition lists.
pub const MATCHING_EVENTS_MAX: usize = 100;

/// "Fail if an event matching `fail_if_events_match` has a position greater than `after`."
/// On the wire an object; unknown members are refused (a misspelt `after` must not become 0).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct AppendCondition {
    /// The query whose matches, after `after`, make the append fail.
    pub fail_if_events_match: Query,
    /// The position the writer's decision was based on (the `head` of its query read).
    #[serde(default)]
    pub after: Position,
}

crate::object_serde!(AppendCondition);

impl AppendCondition {
    /// A condition on `query` after `after`.
    pub fn new(query: Query, after: Position) -> Self {
        AppendCondition {
            fail_if_events_match: query,
            after,
        }
    }

    /// Whether `event` violates the condition.
    pub fn is_violated_by(&self, event: &RecordedEvent) -> bool {
        event.position > self.after && self.fail_if_events_match.matches(event)
    }

    /// The error for a condition that found `matching_events` (the first ones, in order).
    pub fn failed(&self, mut matching_events: Vec<RecordedEvent>) -> StoreError {
        matching_events.truncate(MATCHING_EVENTS_MAX);
        StoreError::ConditionFailed(Box::new(ConditionFailed {
            query: self.fail_if_events_match.clone(),
            after: self.after,
            matching_events,
        }))
    }
}

/// One append across up to [`PARTS_PER_APPEND_MAX`] streams, each stream at most once,
/// optionally under a condition. A single part with a condition is a conditional
/// single-stream append.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MultiAppendRequest {
    /// The parts, each decided as a single append would be.
    pub parts: Vec<AppendRequest>,
    /// Fail (write nothing) when events match this after its position.
    pub condition: Option<AppendCondition>,
}

impl MultiAppendRequest {
    /// An append of `parts`, without condition.
    pub fn new(parts: Vec<AppendRequest>) -> Self {
        MultiAppendRequest {
            parts,
            condition: None,
        }
    }

    /// Adds the condition "fail if `query` matches an event after `after`".
    #[must_use]
    pub fn condition(mut self, query: Query, after: Position) -> Self {
        self.condition = Some(AppendCondition::new(query, after));
        self
    }
}

impl From<AppendRequest> for MultiAppendRequest {
    fn from(part: AppendRequest) -> Self {
        MultiAppendRequest::new(vec![part])
    }
}

/// A successful multi-stream append: one outcome per part, in request order.
#[must_use]
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MultiAppendOutcome {
    /// Per part: appended, rebased, or (all parts, when `duplicate`) duplicate.
    pub parts: Vec<AppendOutcome>,
    /// The first position written (for a duplicate, the lowest original position).
    pub first_position: Position,
    /// The last position written (for a duplicate, the highest original position).
    pub last_position: Position,
    /// Every event id of every part was already stored as this append: nothing was
    /// written, and the parts show the original versions and positions.
    pub duplicate: bool,
}

impl MultiAppendOutcome {
    /// Combines part outcomes; `duplicate` when every part is one.
    pub fn from_parts(parts: Vec<AppendOutcome>) -> Self {
        let first_position = parts
            .iter()
            .map(|p| p.appended().first_position)
            .min()
            .unwrap_or_default();
        let last_position = parts
            .iter()
            .map(|p| p.appended().last_position)
            .max()
            .unwrap_or_default();
        let duplicate = !parts.is_empty() && parts.iter().all(AppendOutcome::is_duplicate);
        MultiAppendOutcome {
            parts,
            first_position,
            last_position,
            duplicate,
        }
    }
}

impl Limits {
    /// Checks a multi-stream append: 1–100 parts, each stream at most once, every part as
    /// [`Limits::check_append`], and a valid condition query.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] or [`StoreError::TooLarge`]; nothing has been written.
    pub fn check_multi_append(&self, request: &MultiAppendRequest) -> Result<(), StoreError> {
        if request.parts.is_empty() {
            return Err(InvalidInput::new(
                "parts",
                "a multi-stream append needs at least one part, but `parts` is empty",
            )
            .into());
        }
        if request.parts.len() > PARTS_PER_APPEND_MAX {
            return Err(StoreError::too_large(
                "parts",
                request.parts.len() as u64,
                PARTS_PER_APPEND_MAX as u64,
                "parts",
            ));
        }
        let mut seen = HashSet::new();
        for part in &request.parts {
            if !seen.insert(&part.stream) {
                return Err(InvalidInput::new(
                    "parts",
                    format!(
                        "stream {} appears in two parts; give each stream at most one part",
                        part.stream
                    ),
                )
                .into());
            }
            self.check_append(part)?;
        }
        if let Some(c) = &request.condition {
            c.fail_if_events_match.validate()?;
        }
        Ok(())
    }
}

/// What a backend knows about one part's stream, read under its write lock.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PartState {
    /// The stream's current version.
    pub actual: Version,
    /// Where each event id of the part already stands in the stream.
    pub found: Vec<Option<Version>>,
}

/// One part's stale expectation, in a multi-stream plan.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PartConflict {
    /// The index of the part in the request.
    pub part: usize,
    /// The stream's current version.
    pub actual: Version,
    /// The first version the conflict lists, if any.
    pub first_concurrent: Option<Version>,
}

/// What a backend must do with a multi-stream append.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MultiAppendPlan {
    /// Every part is new and its expectation holds (or it may be rebased): check the
    /// condition, then write the parts in request order with consecutive positions. One
    /// [`AppendPlan::Write`] per part.
    Write(Vec<AppendPlan>),
    /// Every part was appended before: one `(first, last)` version range per part.
    Duplicate(Vec<(Version, Version)>),
    /// Some parts' expectations fail; every failing part is listed, nothing is written.
    Conflicts(Vec<PartConflict>),
    /// Some event ids are stored but not as this whole append: the part and the ids found.
    PartialDuplicate {
        /// The index of the part.
        part: usize,
        /// The ids the stream already holds.
        existing_ids: Vec<EventId>,
    },
}

/// Decides a multi-stream append from its parts' states, as [`plan_append`] decides each
/// part: idempotency over all parts first (a duplicate only when every part is one), then
/// every part's expectation (all failing parts reported), then the write. The caller then
/// evaluates the condition before writing.
///
/// `concurrent_types(i, e)` gives the types of every event of part `i`'s stream after
/// version `e` (for the rebase rule; called only when a rebase is possible).
pub fn plan_multi_append<I>(
    request: &MultiAppendRequest,
    states: &[PartState],
    mut concurrent_types: impl FnMut(usize, Version) -> I,
) -> MultiAppendPlan
where
    I: IntoIterator,
    I::Item: Borrow<EventType>,
{
    let plans: Vec<AppendPlan> = request
        .parts
        .iter()
        .zip(states)
        .enumerate()
        .map(|(i, (part, state))| {
            plan_append(part, state.actual, &state.found, |e| concurrent_types(i, e))
        })
        .collect();
    if let Some((part, existing_ids)) = plans.iter().enumerate().find_map(|(i, p)| match p {
        AppendPlan::PartialDuplicate(ids) => Some((i, ids.clone())),
        _ => None,
    }) {
        return MultiAppendPlan::PartialDuplicate { part, existing_ids };
    }
    let duplicates: Vec<(Version, Version)> = plans
        .iter()
        .filter_map(|p| match p {
            AppendPlan::Duplicate { first, last } => Some((*first, *last)),
            _ => None,
        })
        .collect();
    if duplicates.len() == plans.len() {
        return MultiAppendPlan::Duplicate(duplicates);
    }
    if !duplicates.is_empty() {
        // Some parts are stored and others are not: the ids were reused for a different
        // append, as with a partial duplicate of a single stream.
        if let Some(part) = plans
            .iter()
            .position(|p| matches!(p, AppendPlan::Duplicate { .. }))
            && let Some(p) = request.parts.get(part)
        {
            return MultiAppendPlan::PartialDuplicate {
                part,
                existing_ids: p.events.iter().map(|e| e.id).collect(),
            };
        }
    }
    let conflicts: Vec<PartConflict> = plans
        .iter()
        .enumerate()
        .filter_map(|(part, p)| match p {
            AppendPlan::Conflict {
                actual,
                first_concurrent,
            } => Some(PartConflict {
                part,
                actual: *actual,
                first_concurrent: *first_concurrent,
            }),
            _ => None,
        })
        .collect();
    if !conflicts.is_empty() {
        return MultiAppendPlan::Conflicts(conflicts);
    }
    MultiAppendPlan::Write(plans)
}

/// One page of a query read.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct QueryPage {
    /// The matching events with positions greater than `after` and at most `head`, in
    /// order.
    pub events: Vec<RecordedEvent>,
    /// The store's last position when the read was made: the `after` of a condition
    /// based on this read (once every page up to it has been read).
    pub head: Position,
    /// The `after` of the next page, or `None` when this page reached `head`.
    pub next: Option<Position>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Json, NewEvent};
    use crate::names::StreamName;
    use crate::version::ExpectedVersion;

    fn part(stream: &str, expected: ExpectedVersion) -> AppendRequest {
        AppendRequest::new(
            StreamName::new(stream).unwrap(),
            expected,
            vec![NewEvent::new(
                EventType::new("Deposited").unwrap(),
                Json::empty_object(),
            )],
        )
    }

    fn fresh(actual: u64) -> PartState {
        PartState {
            actual: Version(actual),
            found: vec![None],
        }
    }

    fn no_types(_: usize, _: Version) -> Vec<EventType> {
        Vec::new()
    }

    #[test]
    fn every_stale_part_is_reported() {
        let r = MultiAppendRequest::new(vec![
            part("account-1", ExpectedVersion::Exact(Version(1))),
            part("account-2", ExpectedVersion::Exact(Version(2))),
            part("account-3", ExpectedVersion::Exact(Version(3))),
        ]);
        let plan = plan_multi_append(&r, &[fresh(2), fresh(2), fresh(5)], no_types);
        assert_eq!(
            plan,
            MultiAppendPlan::Conflicts(vec![
                PartConflict {
                    part: 0,
                    actual: Version(2),
                    first_concurrent: Some(Version(2))
                },
                PartConflict {
                    part: 2,
                    actual: Version(5),
                    first_concurrent: Some(Version(4))
                },
            ])
        );
    }

    #[test]
    fn a_duplicate_needs_every_part_stored() {
        let r = MultiAppendRequest::new(vec![
            part("account-1", ExpectedVersion::Any),
            part("account-2", ExpectedVersion::Any),
        ]);
        let stored = |v: u64| PartState {
            actual: Version(v),
            found: vec![Some(Version(v))],
        };
        assert_eq!(
            plan_multi_append(&r, &[stored(3), stored(4)], no_types),
            MultiAppendPlan::Duplicate(vec![(Version(3), Version(3)), (Version(4), Version(4))])
        );
        assert!(matches!(
            plan_multi_append(&r, &[stored(3), fresh(4)], no_types),
            MultiAppendPlan::PartialDuplicate { part: 0, .. }
        ));
        // Idempotency wins over a stale expectation, as for a single append.
        let stale =
            MultiAppendRequest::new(vec![part("account-1", ExpectedVersion::Exact(Version(0)))]);
        assert!(matches!(
            plan_multi_append(&stale, &[stored(3)], no_types),
            MultiAppendPlan::Duplicate(_)
        ));
    }

    #[test]
    fn parts_may_rebase_independently() {
        let r = MultiAppendRequest::new(vec![
            part("account-1", ExpectedVersion::Exact(Version(2))),
            part("account-2", ExpectedVersion::Exact(Version(1))).rebase_unless(vec![]),
        ]);
        assert_eq!(
            plan_multi_append(&r, &[fresh(2), fresh(3)], no_types),
            MultiAppendPlan::Write(vec![
                AppendPlan::Write {
                    after: Version(2),
                    rebased_from: None
                },
                AppendPlan::Write {
                    after: Version(3),
                    rebased_from: Some(Version(1))
                },
            ])
        );
    }

    #[test]
    fn limits_refuse_no_parts_a_stream_twice_and_a_bad_query() {
        let limits = Limits::default();
        assert!(matches!(
            limits.check_multi_append(&MultiAppendRequest::new(vec![])),
            Err(StoreError::Invalid(_))
        ));
        let twice = MultiAppendRequest::new(vec![
            part("account-1", ExpectedVersion::Any),
            part("account-1", ExpectedVersion::Any),
        ]);
        assert!(matches!(
            limits.check_multi_append(&twice),
            Err(StoreError::Invalid(_))
        ));
        let many = MultiAppendRequest::new(
            (0..=PARTS_PER_APPEND_MAX)
                .map(|i| part(&format!("account-{i}"), ExpectedVersion::Any))
                .collect(),
        );
        assert!(matches!(
            limits.check_multi_append(&many),
            Err(StoreError::TooLarge(_))
        ));
        let bad_query = MultiAppendRequest::from(part("account-1", ExpectedVersion::Any))
            .condition(
                Query {
                    items: vec![crate::query::QueryItem::default()],
                },
                Position(0),
            );
        assert!(matches!(
            limits.check_multi_append(&bad_query),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn condition_is_violated_only_after_its_position() {
        let c = AppendCondition::new(
            Query::item(vec![EventType::new("UserRegistered").unwrap()], vec![]),
            Position(5),
        );
        let at = |p: u64| crate::doc::recorded("user-1", 1, p, "UserRegistered", &[]);
        assert!(!c.is_violated_by(&at(5)));
        assert!(c.is_violated_by(&at(6)));
        let json = serde_json::json!({"fail_if_events_match": {"items": [{"types": ["UserRegistered"]}]}, "after": 5});
        assert_eq!(serde_json::from_value::<AppendCondition>(json).unwrap(), c);
    }
}
