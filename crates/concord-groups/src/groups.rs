//! [`Groups`]: the operations on consumer groups over any [`EventStore`].
//!
//! Each operation brings its cached copy of the group's state up to date with the state
//! stream (`$group-<name>`), computes its changes from it, and appends them with the exact
//! version it read. Another node that advanced the stream in between makes that a
//! conflict: the operation catches up and computes again. So the stream is the group's
//! one truth, written atomically per operation, and every node sees the same order.
//! Every [`SNAPSHOT_EVERY`] versions the whole state is written instead of the changes, and
//! the stream's `truncate_before` moves to it, so loading reads a bounded tail and a
//! scavenge erases the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_core::{
    AppendRequest, Direction, EventStore, EventType, ExpectedVersion, Json, NewEvent, Position,
    RecordedEvent, StoreError, StreamMetadata, StreamName, Version,
};
use serde::{Deserialize, Serialize};

use crate::error::GroupError;
use crate::settings::{GroupSettings, Source, Start, check_consumer, check_group_name, check_max};
use crate::state::{Change, GroupState, ack_id, parse_ack_id};

/// After this many state events, the next one is a snapshot of the whole state.
pub const SNAPSHOT_EVERY: u64 = 64;
/// At most this many events wait in a group's state (read ahead of delivery).
const WAITING_MAX: usize = 10_000;
/// How many log events counting a group's unread events reads before it estimates.
const COUNT_SCAN_MAX: usize = 10_000;
/// How many times an operation recomputes after a concurrent write before giving up.
const ATTEMPTS_MAX: usize = 64;

const CHANGES: &str = "GroupChanged";
const SNAPSHOT: &str = "GroupSnapshot";

/// Where time comes from: the wall clock, or a test's hand.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told: specs of timeouts without waiting.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    /// A clock at `ms`.
    pub fn at(ms: u64) -> Self {
        ManualClock(std::sync::atomic::AtomicU64::new(ms))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Whether a put created the group or updated it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PutOutcome {
    /// It did not exist.
    Created,
    /// Its delivery settings changed (or stayed).
    Updated,
}

/// What a nack asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NackAction {
    /// Deliver it again (parked instead once it used up its deliveries).
    Retry,
    /// Park it now.
    Park,
    /// Drop it: done, not handled.
    Skip,
}

/// An event handed to a consumer.
#[derive(Clone, PartialEq, Debug)]
pub struct Delivery {
    /// What acks or nacks it.
    pub ack_id: String,
    /// Which delivery this is, from 1.
    pub delivery: u32,
    /// The event.
    pub event: RecordedEvent,
}

/// A group as `GET /groups/{group}` shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Its name.
    pub group: String,
    /// Its settings.
    pub settings: GroupSettings,
    /// Events acked so far.
    pub acked: u64,
    /// Events skipped by a nack so far.
    pub skipped: u64,
    /// Events delivered and not yet answered.
    pub in_flight: u64,
    /// Events parked.
    pub parked: u64,
    /// Source events not yet acked, in flight or parked (for source `all` with a filter,
    /// an upper bound: the log's events past the group's cursor are counted unfiltered).
    pub pending: u64,
}

#[derive(Debug, Default)]
struct Slot {
    /// The state stream's version this copy reflects.
    version: u64,
    /// Versions since the last snapshot.
    since_snapshot: u64,
    state: Option<GroupState>,
}

#[derive(Serialize, Deserialize)]
struct ChangesData {
    changes: Vec<Change>,
}

/// Consumer groups over one store.
#[derive(Debug, Clone)]
pub struct Groups {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    slots: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>>,
}

impl Groups {
    /// Groups over `store`, timed by the system clock.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self::with_clock(store, Arc::new(SystemClock))
    }

    /// Groups over `store`, timed by `clock`.
    pub fn with_clock(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        Groups {
            store,
            clock,
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The store the groups read and write.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    fn slot(&self, group: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(group.to_owned()).or_default().clone()
    }

    /// Creates the group, or updates its delivery settings.
    ///
    /// # Errors
    /// [`GroupError::Invalid`] for bad settings or name; [`GroupError::SourceChanged`] when
    /// an existing group's source or start differs; store failures.
    pub async fn put(
        &self,
        group: &str,
        settings: GroupSettings,
    ) -> Result<PutOutcome, GroupError> {
        settings.validate()?;
        let stream = check_group_name(group)?;
        let slot = self.slot(group);
        let mut slot = slot.lock().await;
        for _ in 0..ATTEMPTS_MAX {
            self.catch_up(group, &stream, &mut slot).await?;
            let (state, outcome) = match slot.state.as_ref().filter(|s| !s.deleted) {
                Some(current) => {
                    let same = current.settings.source == settings.source
                        && current.settings.start == settings.start;
                    if !same {
                        return Err(GroupError::SourceChanged {
                            group: group.to_owned(),
                            current: describe(&current.settings),
                            requested: describe(&settings),
                        });
                    }
                    let mut state = current.clone();
                    state.settings = settings.clone();
                    (state, PutOutcome::Updated)
                }
                None => {
                    let cursor = self.start_cursor(&settings).await?;
                    (
                        GroupState::new(settings.clone(), cursor),
                        PutOutcome::Created,
                    )
                }
            };
            match self.write_snapshot(&stream, &mut slot, state).await {
                Ok(()) => return Ok(outcome),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(contended(group))
    }

    /// The group's settings and counts.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn get(&self, group: &str) -> Result<GroupInfo, GroupError> {
        let stream = check_group_name(group)?;
        let slot = self.slot(group);
        let mut slot = slot.lock().await;
        self.catch_up(group, &stream, &mut slot).await?;
        let state = live(group, &slot)?;
        let unread = match &state.settings.source {
            Source::Stream(s) => match self.store.stream_version(s).await {
                Ok(v) => (v.0 + 1).saturating_sub(state.cursor),
                Err(StoreError::StreamDeleted(_)) => 0,
                Err(e) => return Err(e.into()),
            },
            Source::All(filter) => self.count_unread(state.cursor, filter).await?,
        };
        Ok(GroupInfo {
            group: group.to_owned(),
            settings: state.settings.clone(),
            acked: state.acked,
            skipped: state.skipped,
            in_flight: state.in_flight.len() as u64,
            parked: state.parked.len() as u64,
            pending: state.waiting.len() as u64 + unread,
        })
    }

    /// The names of every group, in name order.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list(&self) -> Result<Vec<String>, GroupError> {
        let mut names = Vec::new();
        let mut after: Option<StreamName> = None;
        loop {
            let page = self
                .store
                .list_streams("$group-", after.as_ref(), 256)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.stream.clone());
            for info in page {
                let Some(name) = info.stream.as_str().strip_prefix("$group-") else {
                    continue;
                };
                match self.get(name).await {
                    Ok(_) => names.push(name.to_owned()),
                    Err(GroupError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(names)
    }

    /// Deletes the group: its state is gone at once and erased by the next scavenge.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn delete(&self, group: &str) -> Result<(), GroupError> {
        let stream = check_group_name(group)?;
        let slot = self.slot(group);
        let mut slot = slot.lock().await;
        for _ in 0..ATTEMPTS_MAX {
            self.catch_up(group, &stream, &mut slot).await?;
            let mut state = live(group, &slot)?.clone();
            state.deleted = true;
            state.waiting.clear();
            state.in_flight.clear();
            state.parked.clear();
            match self.write_snapshot(&stream, &mut slot, state).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(contended(group))
    }

    /// Hands `consumer` up to `max` events: expired ones go back first (or are parked),
    /// new source events are read as needed. Returns at once, possibly with nothing.
    ///
    /// # Errors
    /// [`GroupError::Invalid`] for a bad consumer or `max`; [`GroupError::NotFound`];
    /// store failures.
    pub async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Delivery>, GroupError> {
        check_consumer(consumer)?;
        check_max(max)?;
        let stream = check_group_name(group)?;
        let slot = self.slot(group);
        let mut slot = slot.lock().await;
        for _ in 0..ATTEMPTS_MAX {
            self.catch_up(group, &stream, &mut slot).await?;
            let state = live(group, &slot)?;
            let now = self.clock.now_ms();
            let mut next = state.clone();
            let mut changes = next.expire(now);
            for c in &changes {
                next.apply(c);
            }
            let mut events: HashMap<u64, RecordedEvent> = HashMap::new();
            let mut chosen = next.deliverable(max);
            if chosen.len() < max && next.waiting.len() < WAITING_MAX {
                let want = (WAITING_MAX - next.waiting.len()).min(max.max(256));
                let (read, cursor) = self.read_source(&next, want).await?;
                if !read.is_empty() {
                    let entries = read
                        .iter()
                        .map(|(o, e)| (*o, e.stream.clone(), e.version.0))
                        .collect();
                    let change = Change::Read { entries, cursor };
                    next.apply(&change);
                    changes.push(change);
                    events.extend(read);
                    chosen = next.deliverable(max);
                }
            }
            if !chosen.is_empty() {
                let change = Change::Delivered {
                    consumer: consumer.to_owned(),
                    deadline_ms: now.saturating_add(next.settings.ack_timeout_ms),
                    offsets: chosen.clone(),
                };
                next.apply(&change);
                changes.push(change);
            }
            if changes.is_empty() {
                return Ok(Vec::new());
            }
            match self.write_changes(&stream, &mut slot, changes, next).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            let state = live(group, &slot)?;
            let mut deliveries = Vec::with_capacity(chosen.len());
            for offset in chosen {
                let Some(flight) = state.in_flight.get(&offset) else {
                    continue;
                };
                let event = match events.remove(&offset) {
                    Some(e) => Some(e),
                    None => {
                        self.read_one(&state.settings.source, offset, flight)
                            .await?
                    }
                };
                // An event that is gone from the source (deleted, scavenged) stays in
                // flight and parks after its deliveries; nothing to hand out now.
                if let Some(event) = event {
                    deliveries.push(Delivery {
                        ack_id: ack_id(offset, flight.entry.deliveries),
                        delivery: flight.entry.deliveries,
                        event,
                    });
                }
            }
            return Ok(deliveries);
        }
        Err(contended(group))
    }

    /// As [`Groups::fetch`], but waits up to `wait` for at least one event: it wakes when
    /// the store's head moves or the earliest in-flight deadline passes, never polls.
    ///
    /// # Errors
    /// As [`Groups::fetch`].
    pub async fn poll(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, GroupError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let head = self.store.head().await?;
            let got = self.fetch(group, consumer, max).await?;
            if !got.is_empty() || tokio::time::Instant::now() >= until {
                return Ok(got);
            }
            let deadline = self.next_deadline(group).await;
            let wake = match deadline {
                Some(ms) => {
                    let now = self.clock.now_ms();
                    (tokio::time::Instant::now() + Duration::from_millis(ms.saturating_sub(now)))
                        .min(until)
                }
                None => until,
            };
            let _ = tokio::time::timeout_at(wake, self.wait_beyond(head)).await;
        }
    }

    async fn wait_beyond(&self, head: Position) -> Result<Position, StoreError> {
        loop {
            let now = self.store.wait_for_head(head).await?;
            if now > head {
                return Ok(now);
            }
        }
    }

    async fn next_deadline(&self, group: &str) -> Option<u64> {
        let slot = self.slot(group);
        let slot = slot.lock().await;
        slot.state
            .as_ref()
            .and_then(|s| s.in_flight.values().map(|f| f.deadline_ms).min())
    }

    /// Acknowledges deliveries; ids of no current delivery are ignored. Returns how many
    /// were acked.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn ack(&self, group: &str, ack_ids: &[String]) -> Result<usize, GroupError> {
        self.answer(group, ack_ids, |_, _| AnswerAs::Ack).await
    }

    /// Answers deliveries with `action`; ids of no current delivery are ignored. Returns
    /// how many were answered.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn nack(
        &self,
        group: &str,
        ack_ids: &[String],
        action: NackAction,
    ) -> Result<usize, GroupError> {
        self.answer(group, ack_ids, |deliveries, max| match action {
            NackAction::Retry if deliveries >= max => AnswerAs::Park,
            NackAction::Retry => AnswerAs::Return,
            NackAction::Park => AnswerAs::Park,
            NackAction::Skip => AnswerAs::Skip,
        })
        .await
    }

    async fn answer(
        &self,
        group: &str,
        ack_ids: &[String],
        how: impl Fn(u32, u32) -> AnswerAs,
    ) -> Result<usize, GroupError> {
        let stream = check_group_name(group)?;
        let slot = self.slot(group);
        let mut slot = slot.lock().await;
        for _ in 0..ATTEMPTS_MAX {
            self.catch_up(group, &stream, &mut slot).await?;
            let state = live(group, &slot)?;
            let (mut ack, mut ret, mut park, mut skip) = (vec![], vec![], vec![], vec![]);
            let mut seen = std::collections::BTreeSet::new();
            for id in ack_ids {
                let Some((offset, delivery)) = parse_ack_id(id) else {
                    continue;
                };
                let Some(flight) = state.in_flight.get(&offset) else {
                    continue;
                };
                if flight.entry.deliveries != delivery || !seen.insert(offset) {
                    continue;
                }
                match how(delivery, state.settings.max_deliveries) {
                    AnswerAs::Ack => ack.push(offset),
                    AnswerAs::Return => ret.push(offset),
                    AnswerAs::Park => park.push(offset),
                    AnswerAs::Skip => skip.push(offset),
                }
            }
            let count = seen.len();
            let mut changes = Vec::new();
            if !ack.is_empty() {
                changes.push(Change::Acked { offsets: ack });
            }
            if !ret.is_empty() {
                changes.push(Change::Returned { offsets: ret });
            }
            if !park.is_empty() {
                changes.push(Change::Parked { offsets: park });
            }
            if !skip.is_empty() {
                changes.push(Change::Skipped { offsets: skip });
            }
            if changes.is_empty() {
                return Ok(0);
            }
            let mut next = state.clone();
            for c in &changes {
                next.apply(c);
            }
            match self.write_changes(&stream, &mut slot, changes, next).await {
                Ok(()) => return Ok(count),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(contended(group))
    }

    /// The parked events, in source order.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn parked(&self, group: &str) -> Result<Vec<RecordedEvent>, GroupError> {
        let stream = check_group_name(group)?;
        let slot = self.slot(group);
        let mut slot = slot.lock().await;
        self.catch_up(group, &stream, &mut slot).await?;
        let state = live(group, &slot)?.clone();
        drop(slot);
        let mut events = Vec::new();
        for (offset, entry) in &state.parked {
            let flight = crate::state::InFlight {
                entry: entry.clone(),
                consumer: String::new(),
                deadline_ms: 0,
            };
            if let Some(e) = self
                .read_one(&state.settings.source, *offset, &flight)
                .await?
            {
                events.push(e);
            }
        }
        Ok(events)
    }

    /// Returns every parked event to the group, with its deliveries counted from 0 again.
    /// Returns how many.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn replay_parked(&self, group: &str) -> Result<usize, GroupError> {
        let stream = check_group_name(group)?;
        let slot = self.slot(group);
        let mut slot = slot.lock().await;
        for _ in 0..ATTEMPTS_MAX {
            self.catch_up(group, &stream, &mut slot).await?;
            let state = live(group, &slot)?;
            let count = state.parked.len();
            if count == 0 {
                return Ok(0);
            }
            let mut next = state.clone();
            next.apply(&Change::Replayed);
            match self
                .write_changes(&stream, &mut slot, vec![Change::Replayed], next)
                .await
            {
                Ok(()) => return Ok(count),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(contended(group))
    }

    /// Source events of the global log at `cursor` onwards, the store's own not counted:
    /// exact up to [`COUNT_SCAN_MAX`] events read, past that the head's distance.
    async fn count_unread(
        &self,
        cursor: u64,
        filter: &concord_core::Filter,
    ) -> Result<u64, StoreError> {
        let mut from = Position(cursor);
        let mut counted = 0u64;
        let mut scanned = 0usize;
        loop {
            let page = self.store.read_all(from, filter, 1000).await?;
            scanned += page.events.len();
            counted += page.events.iter().filter(|e| !e.stream.is_system()).count() as u64;
            if page.is_caught_up() || page.next_from <= from {
                return Ok(counted);
            }
            if scanned >= COUNT_SCAN_MAX {
                return Ok(counted + (page.head.0 + 1).saturating_sub(page.next_from.0));
            }
            from = page.next_from;
        }
    }

    async fn start_cursor(&self, settings: &GroupSettings) -> Result<u64, StoreError> {
        Ok(match (&settings.start, &settings.source) {
            (Start::Start, _) => 1,
            (Start::At(n), _) => (*n).max(1),
            (Start::End, Source::All(_)) => self.store.head().await?.0 + 1,
            (Start::End, Source::Stream(s)) => match self.store.stream_version(s).await {
                Ok(v) => v.0 + 1,
                Err(StoreError::StreamDeleted(_)) => 1,
                Err(e) => return Err(e),
            },
        })
    }

    /// Up to `want` source events from the cursor, with their offsets, and the next cursor.
    async fn read_source(
        &self,
        state: &GroupState,
        want: usize,
    ) -> Result<(Vec<(u64, RecordedEvent)>, u64), StoreError> {
        match &state.settings.source {
            Source::Stream(s) => {
                let events = match self
                    .store
                    .read_stream(s, Version(state.cursor), Direction::Forward, want)
                    .await
                {
                    Ok(events) => events,
                    Err(StoreError::StreamDeleted(_)) => Vec::new(),
                    Err(e) => return Err(e),
                };
                let cursor = events.last().map_or(state.cursor, |e| e.version.0 + 1);
                Ok((
                    events.into_iter().map(|e| (e.version.0, e)).collect(),
                    cursor,
                ))
            }
            Source::All(filter) => {
                let mut from = Position(state.cursor);
                let mut out = Vec::new();
                // Pages of only the store's own events (this group's state among them)
                // are read through, so the cursor moves only with an event to deliver.
                loop {
                    let page = self.store.read_all(from, filter, want).await?;
                    let caught_up = page.is_caught_up() || page.next_from <= from;
                    out.extend(
                        page.events
                            .into_iter()
                            .filter(|e| !e.stream.is_system())
                            .map(|e| (e.position.0, e)),
                    );
                    from = page.next_from;
                    if !out.is_empty() || caught_up {
                        break;
                    }
                }
                let cursor = out.last().map_or(state.cursor, |(o, _)| o + 1);
                Ok((out, cursor))
            }
        }
    }

    async fn read_one(
        &self,
        source: &Source,
        offset: u64,
        flight: &crate::state::InFlight,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let events = match self
            .store
            .read_stream(
                &flight.entry.stream,
                Version(flight.entry.version),
                Direction::Forward,
                1,
            )
            .await
        {
            Ok(events) => events,
            Err(StoreError::StreamDeleted(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let _ = (source, offset);
        Ok(events
            .into_iter()
            .find(|e| e.version.0 == flight.entry.version))
    }

    /// Brings `slot` up to the state stream's last event: from the last snapshot when the
    /// slot is empty, else the events after its version.
    async fn catch_up(
        &self,
        group: &str,
        stream: &StreamName,
        slot: &mut Slot,
    ) -> Result<(), GroupError> {
        if slot.version == 0 {
            // Find the last snapshot: back from the end, one page at a time.
            let mut from = Version(u64::MAX);
            let mut tail: Vec<RecordedEvent> = Vec::new();
            loop {
                let page = self
                    .store
                    .read_stream(
                        stream,
                        from,
                        Direction::Backward,
                        SNAPSHOT_EVERY as usize + 1,
                    )
                    .await?;
                let Some(oldest) = page.last().map(|e| e.version.0) else {
                    break;
                };
                let found = page.iter().position(|e| e.event_type.as_str() == SNAPSHOT);
                match found {
                    Some(i) => {
                        tail.extend(page.into_iter().take(i + 1));
                        break;
                    }
                    None => {
                        tail.extend(page);
                        if oldest <= 1 {
                            break;
                        }
                        from = Version(oldest - 1);
                    }
                }
            }
            tail.reverse();
            for event in &tail {
                apply_event(group, slot, event)?;
            }
        }
        loop {
            let page = self
                .store
                .read_stream(stream, Version(slot.version + 1), Direction::Forward, 256)
                .await?;
            if page.is_empty() {
                return Ok(());
            }
            for event in &page {
                apply_event(group, slot, event)?;
            }
        }
    }

    async fn write_snapshot(
        &self,
        stream: &StreamName,
        slot: &mut Slot,
        state: GroupState,
    ) -> Result<(), StoreError> {
        let data =
            serde_json::to_value(&state).map_err(|e| StoreError::Corrupted(e.to_string()))?;
        let version = self.append(stream, slot.version, SNAPSHOT, &data).await?;
        slot.version = version;
        slot.since_snapshot = 0;
        slot.state = Some(state);
        // Compaction: reads start at the snapshot; a scavenge erases what is before it.
        self.store
            .set_stream_metadata(
                stream,
                StreamMetadata {
                    truncate_before: Some(Version(version)),
                    ..StreamMetadata::NONE
                },
            )
            .await?;
        Ok(())
    }

    async fn write_changes(
        &self,
        stream: &StreamName,
        slot: &mut Slot,
        changes: Vec<Change>,
        next: GroupState,
    ) -> Result<(), StoreError> {
        if slot.since_snapshot + 1 >= SNAPSHOT_EVERY {
            return self.write_snapshot(stream, slot, next).await;
        }
        let data = serde_json::to_value(ChangesData { changes })
            .map_err(|e| StoreError::Corrupted(e.to_string()))?;
        let version = self.append(stream, slot.version, CHANGES, &data).await?;
        slot.version = version;
        slot.since_snapshot += 1;
        slot.state = Some(next);
        Ok(())
    }

    async fn append(
        &self,
        stream: &StreamName,
        expected: u64,
        event_type: &str,
        data: &serde_json::Value,
    ) -> Result<u64, StoreError> {
        let event_type = EventType::new(event_type).map_err(StoreError::Invalid)?;
        let event = NewEvent::new(event_type, Json::from_value(data));
        let request = AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Exact(Version(expected)),
            vec![event],
        );
        let outcome = self.store.append(request).await?;
        Ok(outcome.appended().last_version.0)
    }
}

enum AnswerAs {
    Ack,
    Return,
    Park,
    Skip,
}

fn apply_event(group: &str, slot: &mut Slot, event: &RecordedEvent) -> Result<(), GroupError> {
    let corrupted = |message: String| GroupError::Corrupted {
        group: group.to_owned(),
        message,
    };
    let json = event
        .data
        .as_json()
        .ok_or_else(|| corrupted(format!("version {} is not JSON", event.version.0)))?;
    match event.event_type.as_str() {
        SNAPSHOT => {
            let state: GroupState = serde_json::from_slice(json.as_bytes())
                .map_err(|e| corrupted(format!("version {}: {e}", event.version.0)))?;
            slot.state = Some(state);
            slot.since_snapshot = 0;
        }
        CHANGES => {
            let data: ChangesData = serde_json::from_slice(json.as_bytes())
                .map_err(|e| corrupted(format!("version {}: {e}", event.version.0)))?;
            let state = slot.state.as_mut().ok_or_else(|| {
                corrupted(format!(
                    "version {} has no snapshot before it",
                    event.version.0
                ))
            })?;
            for change in &data.changes {
                state.apply(change);
            }
            slot.since_snapshot += 1;
        }
        other => return Err(corrupted(format!("unknown event type {other}"))),
    }
    slot.version = event.version.0;
    Ok(())
}

fn live<'a>(group: &str, slot: &'a Slot) -> Result<&'a GroupState, GroupError> {
    slot.state
        .as_ref()
        .filter(|s| !s.deleted)
        .ok_or_else(|| GroupError::NotFound(group.to_owned()))
}

fn describe(settings: &GroupSettings) -> String {
    format!("{} from {:?}", settings.source, settings.start)
}

fn contended(group: &str) -> GroupError {
    GroupError::Contended(group.to_owned())
}
