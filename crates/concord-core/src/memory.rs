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
use crate::error::{Conflict, PartialDuplicate, StoreError};
use crate::event::{EventId, RecordedAt, RecordedEvent};
use crate::names::StreamName;
use crate::query::Filter;
use crate::signal::HeadSignal;
use crate::store::{AllPage, Direction, EventStore, StreamInfo};
use crate::version::{Position, Version};

#[derive(Debug, Default)]
struct State {
    /// The global log; the event at position p is at index p - 1.
    log: Vec<RecordedEvent>,
    /// Per stream, the log indexes of its events; version v is at index v - 1.
    streams: BTreeMap<StreamName, Vec<usize>>,
    ids: HashMap<StreamName, HashMap<EventId, Version>>,
}

impl State {
    fn version(&self, stream: &StreamName) -> Version {
        Version(self.streams.get(stream).map_or(0, |s| s.len() as u64))
    }

    /// Events of `stream` from version `from` on, at most `max`.
    fn stream_events(&self, stream: &StreamName, from: Version, max: usize) -> Vec<RecordedEvent> {
        let Some(indexes) = self.streams.get(stream) else {
            return Vec::new();
        };
        let skip = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
        indexes
            .iter()
            .skip(skip)
            .take(max)
            .filter_map(|&i| self.log.get(i).cloned())
            .collect()
    }

    fn appended(&self, stream: &StreamName, first: Version, last: Version) -> Appended {
        let position = |v: Version| {
            self.streams
                .get(stream)
                .and_then(|s| s.get(usize::try_from(v.get().saturating_sub(1)).ok()?))
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

#[async_trait]
impl EventStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.limits.check_append(&request)?;
        let mut state = self.lock();
        let stream = &request.stream;
        let actual = state.version(stream);
        let found: Vec<Option<Version>> = {
            let ids = state.ids.get(stream);
            request
                .events
                .iter()
                .map(|e| ids.and_then(|m| m.get(&e.id).copied()))
                .collect()
        };
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
                let (concurrent_events, truncated) = match first_concurrent {
                    Some(first) => {
                        let events = state.stream_events(stream, first, max);
                        let truncated = first.get() + events.len() as u64 <= actual.get();
                        (events, truncated)
                    }
                    None => (Vec::new(), false),
                };
                return Err(StoreError::conflict(Conflict {
                    stream: stream.clone(),
                    expected: request.expected,
                    actual,
                    concurrent_events,
                    truncated,
                }));
            }
            AppendPlan::Write {
                after,
                rebased_from,
            } => {
                let recorded_at = RecordedAt::now();
                let first_version = after.next();
                let count = request.events.len() as u64;
                for (i, event) in (0u64..).zip(request.events) {
                    let index = state.log.len();
                    let version = Version(after.get() + i + 1);
                    let position = Position(index as u64 + 1);
                    state
                        .ids
                        .entry(stream.clone())
                        .or_default()
                        .insert(event.id, version);
                    state.streams.entry(stream.clone()).or_default().push(index);
                    state.log.push(RecordedEvent::new(
                        stream.clone(),
                        version,
                        position,
                        event,
                        recorded_at,
                    ));
                }
                let appended = state.appended(stream, first_version, Version(after.get() + count));
                match rebased_from {
                    None => AppendOutcome::Appended(appended),
                    Some(e) => AppendOutcome::Rebased {
                        appended,
                        expected_version: e,
                        concurrent_events: state
                            .stream_events(stream, e.next(), (after.get() - e.get()) as usize)
                            .into_iter()
                            .take(max)
                            .collect(),
                    },
                }
            }
        };
        let head = Position(state.log.len() as u64);
        drop(state);
        self.signal.advance(head);
        Ok(outcome)
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
        Ok(match direction {
            Direction::Forward => state.stream_events(stream, from, limit),
            Direction::Backward => {
                let top = from.min(state.version(stream));
                let start = Version(top.get().saturating_sub(limit as u64).saturating_add(1));
                let mut events =
                    state.stream_events(stream, start, (top.get() + 1 - start.get()) as usize);
                events.retain(|e| e.version <= top);
                events.reverse();
                events
            }
        })
    }

    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError> {
        let limit = limit.min(self.limits.read_limit_max);
        let state = self.lock();
        let head = Position(state.log.len() as u64);
        let start = usize::try_from(from.get().saturating_sub(1)).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        let mut next_from = head.next().max(from);
        for e in state.log.iter().skip(start) {
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
        Ok(self.lock().version(stream))
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
                name.as_str().starts_with(prefix) && after.is_none_or(|a| *name > a)
            })
            .take(limit)
            .map(|(name, indexes)| StreamInfo {
                stream: name.clone(),
                version: Version(indexes.len() as u64),
                last_position: Position(indexes.last().map_or(0, |&i| i as u64 + 1)),
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
}
