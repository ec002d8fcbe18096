//! `MemoryStore`: the reference model.
//!
//! The simplest store that honours the whole contract: one mutex over a vector. The
//! conformance suite runs against it first, and property tests compare every backend with
//! it. It is also handy in unit tests of code generic over [`EventStore`]. It is not
//! durable and not fast under contention, and does not try to be.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::append::{AppendOutcome, AppendPlan, AppendRequest, Appended, Limits, plan_append};
use crate::error::{Conflict, InvalidInput, PartialDuplicate, StoreError};
use crate::event::{EventId, NewEvent, RecordedAt, RecordedEvent};
use crate::import::{
    StreamPast, plan_head_import, plan_import, plan_past_import, plan_stream_import,
};
use crate::lifecycle::{
    DeleteMode, DeletePlan, MetadataChange, ScavengeReport, StreamLifecycle, StreamMetadata,
    check_hidden_ids, plan_delete,
};
use crate::multi::{
    MATCHING_EVENTS_MAX, MultiAppendOutcome, MultiAppendPlan, MultiAppendRequest, PartState,
    QueryPage, plan_multi_append,
};
use crate::names::StreamName;
use crate::query::{Filter, Query};
use crate::signal::HeadSignal;
use crate::store::{AllPage, Direction, EventStore, StreamInfo};
use crate::version::{ExpectedVersion, Position, Version};

/// The log index of a version an import found erased: no slot of the log.
const ERASED: usize = usize::MAX;

/// The most positions, or versions of one stream, an import may make the in-memory store
/// hold as empty slots: each takes memory here, where other stores keep a number.
const MEMORY_SLOTS_MAX: u64 = 1 << 24;

/// Refuses an import that would make more than [`MEMORY_SLOTS_MAX`] slots.
fn check_slots(what: &'static str, slots: u64, unit: &'static str) -> Result<(), StoreError> {
    if slots > MEMORY_SLOTS_MAX {
        return Err(StoreError::too_large(what, slots, MEMORY_SLOTS_MAX, unit));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct State {
    /// The global log; the event at position p is at index p - 1, `None` once scavenged.
    log: Vec<Option<RecordedEvent>>,
    /// Per stream, the log indexes of its events; version v is at index v - 1. Its length
    /// is the last version ever written, which a delete never lowers. An import that starts
    /// a stream above version 1 fills the versions before with [`ERASED`].
    streams: BTreeMap<StreamName, Vec<usize>>,
    ids: HashMap<StreamName, HashMap<EventId, Version>>,
    /// Deletes, tombstones and retention settings; absent means the default.
    lifecycles: HashMap<StreamName, StreamLifecycle>,
}

impl State {
    /// The last version ever written to `stream`.
    fn last(&self, stream: &StreamName) -> Version {
        Version(self.streams.get(stream).map_or(0, |s| s.len() as u64))
    }

    fn lifecycle(&self, stream: &StreamName) -> StreamLifecycle {
        self.lifecycles.get(stream).copied().unwrap_or_default()
    }

    /// The last version of the prefix of `stream` that scavenges erased (0: none).
    fn erased_through(&self, stream: &StreamName) -> Version {
        let erased = self.streams.get(stream).map_or(0, |indexes| {
            indexes
                .iter()
                .take_while(|&&i| self.log.get(i).is_none_or(Option::is_none))
                .count()
        });
        Version(erased as u64)
    }

    /// The version expectations are checked against (0 when deleted).
    fn version(&self, stream: &StreamName) -> Version {
        self.lifecycle(stream).visible_version(self.last(stream))
    }

    /// The events of `stream` that reads show now, in version order.
    fn visible(&self, stream: &StreamName) -> Vec<&RecordedEvent> {
        let Some(indexes) = self.streams.get(stream) else {
            return Vec::new();
        };
        let lifecycle = self.lifecycle(stream);
        let last = self.last(stream);
        let now = RecordedAt::now();
        indexes
            .iter()
            .filter_map(|&i| self.log.get(i).and_then(Option::as_ref))
            .filter(|e| lifecycle.keeps(e.version, e.recorded_at, last, now))
            .collect()
    }

    /// Events of `stream` that reads show, from version `from` on, at most `max`.
    fn stream_events(&self, stream: &StreamName, from: Version, max: usize) -> Vec<RecordedEvent> {
        self.visible(stream)
            .into_iter()
            .filter(|e| e.version >= from)
            .take(max)
            .cloned()
            .collect()
    }

    /// The conflict of an append to `stream` under `expected`, listing at most `max`
    /// events from `first_concurrent` on.
    fn conflict(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        actual: Version,
        first_concurrent: Option<Version>,
        max: usize,
    ) -> Conflict {
        // Events reads no longer show are not concurrent events, nor are those a scavenge
        // erased (which a later change of the retention settings cannot bring back).
        let first_kept = self
            .lifecycle(stream)
            .first_kept(self.last(stream))
            .max(self.erased_through(stream).next());
        let (concurrent_events, truncated) = match first_concurrent.map(|f| f.max(first_kept)) {
            Some(first) => {
                let events = self.stream_events(stream, first, max);
                let truncated = first.get() + events.len() as u64 <= actual.get();
                (events, truncated)
            }
            None => (Vec::new(), false),
        };
        Conflict {
            stream: stream.clone(),
            expected,
            actual,
            concurrent_events,
            truncated,
        }
    }

    /// Writes `events` to `stream` after version `after`, at the next positions.
    fn write(
        &mut self,
        stream: &StreamName,
        after: Version,
        rebased_from: Option<Version>,
        events: Vec<NewEvent>,
        recorded_at: RecordedAt,
        max: usize,
    ) -> AppendOutcome {
        // A soft-deleted stream reads as version 0 to the plan, but versions go on.
        let after = after.max(self.last(stream));
        // What the writer missed, as reads showed it when the append was decided.
        let concurrent_events = rebased_from.map(|e| {
            self.stream_events(stream, e.next(), usize::MAX)
                .into_iter()
                .filter(|ev| ev.version <= after)
                .take(max)
                .collect::<Vec<_>>()
        });
        let first_version = after.next();
        let count = events.len() as u64;
        for (i, event) in (0u64..).zip(events) {
            let index = self.log.len();
            let version = Version(after.get() + i + 1);
            let position = Position(index as u64 + 1);
            // The slot a version's index names is its position, so written in order.
            self.ids
                .entry(stream.clone())
                .or_default()
                .insert(event.id, version);
            self.streams.entry(stream.clone()).or_default().push(index);
            self.log.push(Some(RecordedEvent::new(
                stream.clone(),
                version,
                position,
                event,
                recorded_at,
            )));
        }
        let appended = self.appended(stream, first_version, Version(after.get() + count));
        match (rebased_from, concurrent_events) {
            (Some(e), Some(concurrent_events)) => AppendOutcome::Rebased {
                appended,
                expected_version: e,
                concurrent_events,
            },
            _ => AppendOutcome::Appended(appended),
        }
    }

    /// Where each event id stands in the stream.
    ///
    /// # Errors
    /// [`StoreError::PartialDuplicate`] naming the ids of events that reads no longer show
    /// but a scavenge has not erased yet: an id stays taken until then.
    fn found(
        &self,
        stream: &StreamName,
        events: &[NewEvent],
    ) -> Result<Vec<Option<Version>>, StoreError> {
        let ids = self.ids.get(stream);
        let first = self.lifecycle(stream).first_kept(self.last(stream));
        let found: Vec<Option<Version>> = events
            .iter()
            .map(|e| ids.and_then(|m| m.get(&e.id).copied()))
            .collect();
        check_hidden_ids(stream, events, &found, first)?;
        Ok(found)
    }

    fn check_not_tombstoned(&self, stream: &StreamName) -> Result<(), StoreError> {
        self.lifecycle(stream).check_not_tombstoned(stream)
    }

    fn delete(
        &mut self,
        stream: &StreamName,
        mode: DeleteMode,
        expected: Option<Version>,
        max: usize,
    ) -> Result<(), StoreError> {
        let last = self.last(stream);
        match plan_delete(stream, mode, expected, last, self.lifecycle(stream))? {
            DeletePlan::Delete(next) => {
                self.lifecycles.insert(stream.clone(), next);
                Ok(())
            }
            DeletePlan::Conflict {
                actual,
                first_concurrent,
            } => Err(StoreError::conflict(self.conflict(
                stream,
                ExpectedVersion::Exact(expected.unwrap_or_default()),
                actual,
                first_concurrent,
                max,
            ))),
        }
    }

    /// Erases every event that reads no longer show.
    fn scavenge(&mut self) -> ScavengeReport {
        let now = RecordedAt::now();
        let mut report = ScavengeReport::default();
        for (stream, indexes) in &self.streams {
            let lifecycle = self.lifecycles.get(stream).copied().unwrap_or_default();
            let last = Version(indexes.len() as u64);
            let mut removed = 0;
            for &i in indexes {
                let Some(slot) = self.log.get_mut(i) else {
                    continue;
                };
                if let Some(e) = slot
                    && !lifecycle.keeps(e.version, e.recorded_at, last, now)
                {
                    if let Some(ids) = self.ids.get_mut(stream) {
                        ids.remove(&e.id);
                    }
                    *slot = None;
                    removed += 1;
                }
            }
            if removed > 0 {
                report.events_removed += removed;
                report.streams_scavenged += 1;
            }
        }
        report
    }

    /// Writes events recorded elsewhere as they are (see [`EventStore::import`]): holes in
    /// positions are empty slots of the log, a stream's missing prefix is [`ERASED`].
    fn import(&mut self, events: Vec<RecordedEvent>, limits: &Limits) -> Result<(), StoreError> {
        let head = Position(self.log.len() as u64);
        for import in plan_import(&events, head, limits)? {
            plan_stream_import(
                &import,
                self.last(&import.stream),
                &self.lifecycle(&import.stream),
            )?;
        }
        if let Some(e) = events.iter().find(|e| {
            self.ids
                .get(&e.stream)
                .is_some_and(|ids| ids.contains_key(&e.id))
        }) {
            return Err(InvalidInput::new(
                "events",
                format!("event id {} is already in stream {}", e.id, e.stream),
            )
            .into());
        }
        for e in events {
            let index = usize::try_from(e.position.get() - 1).unwrap_or(ERASED);
            while self.log.len() < index {
                self.log.push(None);
            }
            let indexes = self.streams.entry(e.stream.clone()).or_default();
            while (indexes.len() as u64) < e.version.get() - 1 {
                indexes.push(ERASED);
            }
            indexes.push(index);
            self.ids
                .entry(e.stream.clone())
                .or_default()
                .insert(e.id, e.version);
            self.log.push(Some(e));
        }
        Ok(())
    }

    /// Writes a stream's past (see [`EventStore::import_stream_past`]): a stream without
    /// versions takes the past's last one, every version [`ERASED`].
    fn import_past(&mut self, past: &StreamPast) -> Result<(), StoreError> {
        let plan = plan_past_import(past, self.last(&past.stream), &self.lifecycle(&past.stream))?;
        if let Some(through) = plan.erased_through {
            check_slots("last", through.get(), "versions in the in-memory store")?;
            let indexes = self.streams.entry(past.stream.clone()).or_default();
            while (indexes.len() as u64) < through.get() {
                indexes.push(ERASED);
            }
        }
        self.lifecycles.insert(past.stream.clone(), plan.lifecycle);
        Ok(())
    }

    /// Every stream with versions or a lifecycle, by name, after `after`.
    fn pasts(&self, after: Option<&StreamName>, limit: usize) -> Vec<StreamPast> {
        let mut names: Vec<&StreamName> = self
            .streams
            .keys()
            .chain(
                self.lifecycles
                    .keys()
                    .filter(|n| !self.streams.contains_key(*n)),
            )
            .filter(|n| after.is_none_or(|a| *n > a))
            .collect();
        names.sort();
        names
            .into_iter()
            .take(limit)
            .map(|n| StreamPast {
                stream: n.clone(),
                last: self.last(n),
                lifecycle: self.lifecycle(n),
            })
            .collect()
    }

    fn appended(&self, stream: &StreamName, first: Version, last: Version) -> Appended {
        let position = |v: Version| {
            self.streams
                .get(stream)
                .and_then(|s| s.get(usize::try_from(v.get().saturating_sub(1)).ok()?))
                .filter(|&&i| i != ERASED)
                .map_or(Position::ZERO, |&i| Position(i as u64 + 1))
        };
        Appended {
            stream: stream.clone(),
            first_version: first,
            last_version: last,
            first_position: position(first),
            last_position: position(last),
        }
    }
}

/// The in-memory reference store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    signal: HeadSignal,
    limits: Limits,
}

impl MemoryStore {
    /// An empty store with API.md's default limits.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// An empty store with `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        MemoryStore {
            limits,
            ..MemoryStore::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is consistent after every statement that can panic, so a poisoned lock
        // holds usable data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryStore {
    /// A soft delete or a tombstone, then a touch of the head signal: subscriptions waiting
    /// on the stream read again (and end with `StreamDeleted` after a tombstone).
    fn delete(
        &self,
        stream: &StreamName,
        mode: DeleteMode,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        let max = self.limits.concurrent_events_max;
        let deleted = self.lock().delete(stream, mode, expected, max);
        self.signal.touch();
        deleted
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.limits.check_append(&request)?;
        let mut state = self.lock();
        let stream = &request.stream;
        state.check_not_tombstoned(stream)?;
        let actual = state.version(stream);
        let found = state.found(stream, &request.events)?;
        let plan = plan_append(&request, actual, &found, |e| {
            state
                .stream_events(stream, e.next(), usize::MAX)
                .into_iter()
                .map(|ev| ev.event_type)
                .collect::<Vec<_>>()
        });
        let max = self.limits.concurrent_events_max;
        let outcome = match plan {
            AppendPlan::Duplicate { first, last } => {
                AppendOutcome::Duplicate(state.appended(stream, first, last))
            }
            AppendPlan::PartialDuplicate(existing_ids) => {
                return Err(StoreError::PartialDuplicate(Box::new(PartialDuplicate {
                    stream: stream.clone(),
                    existing_ids,
                })));
            }
            AppendPlan::Conflict {
                actual,
                first_concurrent,
            } => {
                return Err(StoreError::conflict(state.conflict(
                    stream,
                    request.expected,
                    actual,
                    first_concurrent,
                    max,
                )));
            }
            AppendPlan::Write {
                after,
                rebased_from,
            } => state.write(
                stream,
                after,
                rebased_from,
                request.events,
                RecordedAt::now(),
                max,
            ),
        };
        let head = Position(state.log.len() as u64);
        drop(state);
        self.signal.advance(head);
        Ok(outcome)
    }

    async fn append_multi(
        &self,
        request: MultiAppendRequest,
    ) -> Result<MultiAppendOutcome, StoreError> {
        self.limits.check_multi_append(&request)?;
        let max = self.limits.concurrent_events_max;
        let mut state = self.lock();
        for part in &request.parts {
            state.check_not_tombstoned(&part.stream)?;
        }
        let states: Vec<PartState> = request
            .parts
            .iter()
            .map(|p| {
                Ok(PartState {
                    actual: state.version(&p.stream),
                    found: state.found(&p.stream, &p.events)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let plan = plan_multi_append(&request, &states, |i, e| {
            request.parts.get(i).map_or_else(Vec::new, |p| {
                state
                    .stream_events(&p.stream, e.next(), usize::MAX)
                    .into_iter()
                    .map(|ev| ev.event_type)
                    .collect::<Vec<_>>()
            })
        });
        let plans = match plan {
            MultiAppendPlan::Duplicate(ranges) => {
                let parts = request
                    .parts
                    .iter()
                    .zip(ranges)
                    .map(|(p, (first, last))| {
                        AppendOutcome::Duplicate(state.appended(&p.stream, first, last))
                    })
                    .collect();
                return Ok(MultiAppendOutcome::from_parts(parts));
            }
            MultiAppendPlan::PartialDuplicate { part, existing_ids } => {
                let stream = request
                    .parts
                    .get(part)
                    .map(|p| p.stream.clone())
                    .ok_or_else(|| StoreError::Corrupted("plan names a missing part".into()))?;
                return Err(StoreError::PartialDuplicate(Box::new(PartialDuplicate {
                    stream,
                    existing_ids,
                })));
            }
            MultiAppendPlan::Conflicts(conflicts) => {
                let conflicts = conflicts
                    .into_iter()
                    .filter_map(|c| {
                        let p = request.parts.get(c.part)?;
                        Some(state.conflict(
                            &p.stream,
                            p.expected,
                            c.actual,
                            c.first_concurrent,
                            max,
                        ))
                    })
                    .collect();
                return Err(StoreError::Conflicts(conflicts));
            }
            MultiAppendPlan::Write(plans) => plans,
        };
        if let Some(condition) = &request.condition {
            let start = usize::try_from(condition.after.get()).unwrap_or(usize::MAX);
            let matching: Vec<RecordedEvent> = state
                .log
                .iter()
                .skip(start)
                .flatten()
                .filter(|e| condition.fail_if_events_match.matches(e))
                .take(MATCHING_EVENTS_MAX)
                .cloned()
                .collect();
            if !matching.is_empty() {
                return Err(condition.failed(matching));
            }
        }
        let recorded_at = RecordedAt::now();
        let mut parts = Vec::with_capacity(request.parts.len());
        for (part, plan) in request.parts.into_iter().zip(plans) {
            if let AppendPlan::Write {
                after,
                rebased_from,
            } = plan
            {
                parts.push(state.write(
                    &part.stream,
                    after,
                    rebased_from,
                    part.events,
                    recorded_at,
                    max,
                ));
            }
        }
        let head = Position(state.log.len() as u64);
        drop(state);
        self.signal.advance(head);
        Ok(MultiAppendOutcome::from_parts(parts))
    }

    async fn query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<QueryPage, StoreError> {
        query.validate()?;
        let limit = self.limits.query_page(limit);
        let state = self.lock();
        let head = Position(state.log.len() as u64);
        let start = usize::try_from(after.get()).unwrap_or(usize::MAX);
        let mut matching = state
            .log
            .iter()
            .skip(start)
            .flatten()
            .filter(|e| query.matches(e));
        let events: Vec<RecordedEvent> = matching.by_ref().take(limit).cloned().collect();
        let next = match matching.next() {
            Some(_) => events.last().map(|e| e.position),
            None => None,
        };
        Ok(QueryPage { events, head, next })
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = limit.min(self.limits.read_limit_max);
        let state = self.lock();
        state.check_not_tombstoned(stream)?;
        Ok(match direction {
            Direction::Forward => state.stream_events(stream, from, limit),
            Direction::Backward => state
                .visible(stream)
                .into_iter()
                .rev()
                .filter(|e| e.version <= from)
                .take(limit)
                .cloned()
                .collect(),
        })
    }

    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError> {
        filter.validate()?;
        let limit = limit.min(self.limits.read_limit_max);
        let state = self.lock();
        let head = Position(state.log.len() as u64);
        let start = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        let mut next_from = head.next().max(from);
        for e in state.log.iter().skip(start).flatten() {
            if events.len() == limit {
                next_from = e.position;
                break;
            }
            if filter.matches(e) {
                events.push(e.clone());
            }
        }
        Ok(AllPage {
            events,
            next_from,
            head,
        })
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        let state = self.lock();
        state.check_not_tombstoned(stream)?;
        Ok(state.version(stream))
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let limit = limit.min(self.limits.read_limit_max);
        let state = self.lock();
        let streams = state
            .streams
            .iter()
            .filter(|(name, _)| {
                name.as_str().starts_with(prefix)
                    && after.is_none_or(|a| *name > a)
                    && !state.lifecycle(name).tombstoned
                    && state.version(name) > Version::NONE
            })
            .take(limit)
            .map(|(name, indexes)| StreamInfo {
                stream: name.clone(),
                version: Version(indexes.len() as u64),
                last_position: Position(
                    indexes
                        .last()
                        .filter(|&&i| i != ERASED)
                        .map_or(0, |&i| i as u64 + 1),
                ),
            })
            .collect();
        Ok(streams)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(Position(self.lock().log.len() as u64))
    }

    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
        Ok(self.signal.wait_beyond(after).await)
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, DeleteMode::Soft, expected)
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, DeleteMode::Tombstone, expected)
    }

    async fn tombstone_stream_name(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, DeleteMode::TombstoneName, expected)
    }

    async fn import(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        let head = {
            let mut state = self.lock();
            state.import(events, &self.limits)?;
            Position(state.log.len() as u64)
        };
        self.signal.advance(head);
        Ok(())
    }

    async fn list_stream_pasts(
        &self,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamPast>, StoreError> {
        Ok(self
            .lock()
            .pasts(after, limit.min(self.limits.read_limit_max)))
    }

    async fn import_stream_past(&self, past: &StreamPast) -> Result<(), StoreError> {
        self.lock().import_past(past)?;
        self.signal.touch();
        Ok(())
    }

    async fn import_head(&self, head: Position) -> Result<(), StoreError> {
        let raised = {
            let mut state = self.lock();
            let raised = plan_head_import(Position(state.log.len() as u64), head)?;
            if let Some(to) = raised {
                check_slots("head", to.get(), "positions in the in-memory store")?;
                state
                    .log
                    .resize(usize::try_from(to.get()).unwrap_or(0), None);
            }
            raised
        };
        if let Some(to) = raised {
            self.signal.advance(to);
        }
        Ok(())
    }

    async fn stream_lifecycle(&self, stream: &StreamName) -> Result<StreamLifecycle, StoreError> {
        Ok(self.lock().lifecycle(stream))
    }

    async fn stream_metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError> {
        let state = self.lock();
        state.check_not_tombstoned(stream)?;
        Ok(state.lifecycle(stream).metadata)
    }

    async fn change_stream_metadata(
        &self,
        stream: &StreamName,
        change: MetadataChange,
    ) -> Result<StreamMetadata, StoreError> {
        change.validate()?;
        let mut state = self.lock();
        state.check_not_tombstoned(stream)?;
        let stored = &mut state.lifecycles.entry(stream.clone()).or_default().metadata;
        *stored = change.apply(*stored);
        Ok(*stored)
    }

    async fn scavenge(&self) -> Result<ScavengeReport, StoreError> {
        Ok(self.lock().scavenge())
    }
}
