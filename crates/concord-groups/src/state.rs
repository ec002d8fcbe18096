//! A group's state as a fold over its state events, and the pure decisions that produce
//! those events.
//!
//! The state is what `docs/design/consumer-groups.md` calls the ledger: how far the source
//! has been read (`read_to`), and every event taken from it that is not done yet (waiting,
//! in flight, or parked), keyed by its offset in the source. An event below `read_to` that
//! is not in the ledger is done: acked or skipped. Nothing here does I/O; the engine reads
//! the source and the state stream, asks these functions what to write, and appends it with
//! the state stream's exact version, so that two processes deciding on the same state
//! cannot both write.

use std::collections::{BTreeMap, HashSet};

use concord_core::{RecordedEvent, StreamName, Version};
use serde::{Deserialize, Serialize};

use crate::config::{ConsumerName, GroupName, GroupSpec, NackAction, Ordering, StartFrom};
use crate::runs;

/// The most events a group holds taken but not done (waiting or in flight; parked ones do
/// not count): past it, the group reads no further until some are acked.
pub const OUTSTANDING_MAX: usize = 10_000;

/// Entries per snapshot event: a snapshot of a large ledger is several events of one
/// append, each well under the 1 MiB event limit even with 256-byte names.
pub(crate) const SNAPSHOT_ENTRIES_PER_EVENT: usize = 500;

/// Where an event taken from the source is.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Status {
    /// Ready to be delivered (never delivered, or given back).
    Waiting,
    /// Delivered and not yet acked; goes back to the group at `deadline`.
    InFlight {
        /// When the delivery expires (ms since the Unix epoch).
        deadline: u64,
        /// Who holds it.
        consumer: ConsumerName,
    },
    /// Set aside after too many deliveries or a nack with `park`, until replayed.
    Parked,
}

/// One event taken from the source and not done.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The event's stream.
    pub stream: StreamName,
    /// Its version there.
    pub version: Version,
    /// How often it has been delivered (since it was last replayed from parking).
    pub deliveries: u32,
    /// Where it is.
    #[serde(flatten)]
    pub status: Status,
}

/// An entry as a snapshot stores it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    offset: u64,
    #[serde(flatten)]
    entry: Entry,
}

/// An event taken from the source by a poll. Written only in runs (`runs::taken`); the
/// derived reader reads the one-object-per-event form written before runs.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
pub(crate) struct Taken {
    pub(crate) offset: u64,
    pub(crate) stream: StreamName,
    pub(crate) version: Version,
}

/// What happened to a group, as stored in its state stream (`$group-<name>`); the event's
/// type is the variant's name.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum GroupEvent {
    /// The group exists from here on, reading its source from `read_to`.
    GroupCreated {
        group: GroupName,
        spec: GroupSpec,
        read_to: u64,
    },
    /// Settings other than `source` and `from` changed.
    GroupUpdated {
        ack_timeout_ms: u64,
        max_deliveries: u32,
        ordering: Ordering,
    },
    /// The group is gone; its state before this event is never read again.
    GroupDeleted {},
    /// A poll: events taken from the source (up to `read_to`), entries delivered to
    /// `consumer` until `deadline`, expired ones parked, and entries whose event is no
    /// longer in the source dropped.
    Polled {
        consumer: ConsumerName,
        deadline: u64,
        read_to: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "runs::taken")]
        taken: Vec<Taken>,
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "runs::offsets")]
        delivered: Vec<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "runs::offsets")]
        parked: Vec<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "runs::offsets")]
        gone: Vec<u64>,
    },
    /// Entries acked: done.
    Acked {
        #[serde(with = "runs::offsets")]
        offsets: Vec<u64>,
    },
    /// Entries given back: to wait again, to parking, or skipped (done, not acked).
    Nacked {
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "runs::offsets")]
        retried: Vec<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "runs::offsets")]
        parked: Vec<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "runs::offsets")]
        skipped: Vec<u64>,
    },
    /// Parked entries returned to the group, their deliveries counted afresh.
    ParkedReplayed {
        #[serde(with = "runs::offsets")]
        offsets: Vec<u64>,
    },
    /// The whole state (its first `SNAPSHOT_ENTRIES_PER_EVENT` entries; the rest follow
    /// in `SnapshotPart`s of the same append).
    Snapshot {
        group: GroupName,
        spec: GroupSpec,
        created: u64,
        read_to: u64,
        acked: u64,
        skipped: u64,
        entries: Vec<StoredEntry>,
    },
    /// More entries of the snapshot just before.
    SnapshotPart { entries: Vec<StoredEntry> },
}

impl GroupEvent {
    /// The type the event is stored under.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            GroupEvent::GroupCreated { .. } => "GroupCreated",
            GroupEvent::GroupUpdated { .. } => "GroupUpdated",
            GroupEvent::GroupDeleted {} => "GroupDeleted",
            GroupEvent::Polled { .. } => "Polled",
            GroupEvent::Acked { .. } => "Acked",
            GroupEvent::Nacked { .. } => "Nacked",
            GroupEvent::ParkedReplayed { .. } => "ParkedReplayed",
            GroupEvent::Snapshot { .. } => "Snapshot",
            GroupEvent::SnapshotPart { .. } => "SnapshotPart",
        }
    }

    /// Whether the state after this event does not depend on any event before it: where
    /// loading a group may start.
    pub(crate) fn is_base(&self) -> bool {
        matches!(
            self,
            GroupEvent::GroupCreated { .. }
                | GroupEvent::GroupDeleted {}
                | GroupEvent::Snapshot { .. }
        )
    }
}

/// A group's state: its spec and its ledger.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct GroupState {
    /// The group.
    pub group: GroupName,
    /// Its definition.
    pub spec: GroupSpec,
    /// The state stream's version of its `GroupCreated`: tells this group from an earlier
    /// one of the same name, so an ack id of a deleted group never matches.
    pub created: u64,
    /// The next offset of the source to read; everything below it that is not an entry
    /// is done.
    pub read_to: u64,
    /// Events taken and not done, by offset.
    pub entries: BTreeMap<u64, Entry>,
    /// Events acked, ever.
    pub acked: u64,
    /// Events skipped by a nack, ever.
    pub skipped: u64,
}

/// A message handed to a consumer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Message {
    /// What acks or nacks it.
    pub ack_id: String,
    /// 1 for the first delivery, then one more for each.
    pub delivery: u32,
    /// The event.
    pub event: RecordedEvent,
}

/// The identity of one delivery: the group's incarnation, the offset, the delivery number.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct AckId {
    pub(crate) created: u64,
    pub(crate) offset: u64,
    pub(crate) delivery: u32,
}

impl AckId {
    pub(crate) fn format(self) -> String {
        format!("{}.{}.{}", self.created, self.offset, self.delivery)
    }

    /// Reads an ack id; anything that is not one is `None` (and ignored, like an expired
    /// one).
    pub(crate) fn parse(text: &str) -> Option<AckId> {
        let mut parts = text.split('.');
        let created = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        let delivery = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(AckId {
            created,
            offset,
            delivery,
        })
    }
}

/// Counts of a group's events, as `GET /groups/{group}` reports them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Counts {
    /// Acked, ever.
    pub acked: u64,
    /// Skipped by a nack, ever.
    pub skipped: u64,
    /// Delivered and within their ack timeout.
    pub in_flight: u64,
    /// Parked (including expired deliveries that reached `max_deliveries`).
    pub parked: u64,
    /// Taken and waiting to be delivered (including expired deliveries); the engine adds
    /// the source events not read yet.
    pub waiting: u64,
}

impl GroupState {
    /// The first offset a new group reads, given the source's last offset now.
    pub(crate) fn first_offset(from: StartFrom, last: u64) -> u64 {
        match from {
            StartFrom::Start => 1,
            StartFrom::End => last.saturating_add(1),
            StartFrom::At(n) => n.max(1),
        }
    }

    fn entry_expired(&self, entry: &Entry, now: u64) -> bool {
        matches!(&entry.status, Status::InFlight { deadline, .. } if *deadline <= now)
    }

    /// Whether an entry may be delivered now, ordering aside: waiting, or in flight past
    /// its deadline with deliveries to spare.
    fn ready(&self, entry: &Entry, now: u64) -> bool {
        match entry.status {
            Status::Waiting => true,
            Status::InFlight { .. } => {
                self.entry_expired(entry, now) && entry.deliveries < self.spec.max_deliveries
            }
            Status::Parked => false,
        }
    }

    /// Counts as of `now`.
    pub(crate) fn counts(&self, now: u64) -> Counts {
        let mut c = Counts {
            acked: self.acked,
            skipped: self.skipped,
            ..Counts::default()
        };
        for entry in self.entries.values() {
            match &entry.status {
                Status::Waiting => c.waiting += 1,
                Status::Parked => c.parked += 1,
                Status::InFlight { deadline, .. } if *deadline > now => c.in_flight += 1,
                Status::InFlight { .. } if entry.deliveries >= self.spec.max_deliveries => {
                    c.parked += 1;
                }
                Status::InFlight { .. } => c.waiting += 1,
            }
        }
        c
    }

    /// The earliest deadline of a delivery still in flight at `now`: when a waiting poll
    /// should look again.
    pub(crate) fn next_deadline(&self, now: u64) -> Option<u64> {
        self.entries
            .values()
            .filter_map(|e| match &e.status {
                Status::InFlight { deadline, .. } if *deadline > now => Some(*deadline),
                _ => None,
            })
            .min()
    }

    /// Entries not parked (waiting or in flight).
    fn outstanding(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.status != Status::Parked)
            .count()
    }

    /// Parked entries, by offset.
    pub(crate) fn parked(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.status == Status::Parked)
            .map(|(o, e)| (*o, e))
    }

    /// Entries in flight, by offset.
    pub(crate) fn in_flight(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.status, Status::InFlight { .. }))
            .map(|(o, e)| (*o, e))
    }

    /// The ack id of the entry at `offset` as it is now delivered.
    pub(crate) fn ack_id(&self, offset: u64, delivery: u32) -> String {
        AckId {
            created: self.created,
            offset,
            delivery,
        }
        .format()
    }

    /// The offsets of `ack_ids` that name a delivery in flight now (this incarnation, the
    /// current delivery, before its deadline), each once. Anything else is ignored.
    fn live_deliveries<'a>(
        &self,
        ack_ids: impl IntoIterator<Item = &'a str>,
        now: u64,
    ) -> Vec<u64> {
        let mut seen = HashSet::new();
        let mut offsets = Vec::new();
        for id in ack_ids {
            let Some(id) = AckId::parse(id) else { continue };
            if id.created != self.created {
                continue;
            }
            let Some(entry) = self.entries.get(&id.offset) else {
                continue;
            };
            let live = matches!(&entry.status, Status::InFlight { deadline, .. } if *deadline > now)
                && entry.deliveries == id.delivery;
            if live && seen.insert(id.offset) {
                offsets.push(id.offset);
            }
        }
        offsets
    }

    /// The event that acks `ack_ids`, or `None` when none is live.
    pub(crate) fn decide_ack<'a>(
        &self,
        ack_ids: impl IntoIterator<Item = &'a str>,
        now: u64,
    ) -> Option<GroupEvent> {
        let offsets = self.live_deliveries(ack_ids, now);
        (!offsets.is_empty()).then_some(GroupEvent::Acked { offsets })
    }

    /// The event that nacks `ack_ids` with `action`, or `None` when none is live. A retry
    /// of an entry that had `max_deliveries` deliveries parks it.
    pub(crate) fn decide_nack<'a>(
        &self,
        ack_ids: impl IntoIterator<Item = &'a str>,
        action: NackAction,
        now: u64,
    ) -> Option<GroupEvent> {
        let offsets = self.live_deliveries(ack_ids, now);
        if offsets.is_empty() {
            return None;
        }
        let (mut retried, mut parked, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for offset in offsets {
            match action {
                NackAction::Skip => skipped.push(offset),
                NackAction::Park => parked.push(offset),
                NackAction::Retry => {
                    let exhausted = self
                        .entries
                        .get(&offset)
                        .is_some_and(|e| e.deliveries >= self.spec.max_deliveries);
                    if exhausted {
                        parked.push(offset);
                    } else {
                        retried.push(offset);
                    }
                }
            }
        }
        Some(GroupEvent::Nacked {
            retried,
            parked,
            skipped,
        })
    }

    /// The event that returns every parked entry to the group, or `None` when none is.
    pub(crate) fn decide_replay(&self) -> Option<GroupEvent> {
        let offsets: Vec<u64> = self.parked().map(|(o, _)| o).collect();
        (!offsets.is_empty()).then_some(GroupEvent::ParkedReplayed { offsets })
    }

    /// The events of a snapshot of this state: one `Snapshot` and as many `SnapshotPart`s
    /// as the entries need.
    pub(crate) fn snapshot(&self) -> Vec<GroupEvent> {
        let stored: Vec<StoredEntry> = self
            .entries
            .iter()
            .map(|(offset, entry)| StoredEntry {
                offset: *offset,
                entry: entry.clone(),
            })
            .collect();
        let mut chunks = stored.chunks(SNAPSHOT_ENTRIES_PER_EVENT);
        let first = chunks
            .next()
            .map(<[StoredEntry]>::to_vec)
            .unwrap_or_default();
        let mut events = vec![GroupEvent::Snapshot {
            group: self.group.clone(),
            spec: self.spec.clone(),
            created: self.created,
            read_to: self.read_to,
            acked: self.acked,
            skipped: self.skipped,
            entries: first,
        }];
        events.extend(chunks.map(|c| GroupEvent::SnapshotPart {
            entries: c.to_vec(),
        }));
        events
    }

    /// Starts planning a poll by `consumer` for at most `max` messages at `now`.
    pub(crate) fn plan_poll(&self, consumer: ConsumerName, max: usize, now: u64) -> PollPlan<'_> {
        PollPlan::new(self, consumer, max, now)
    }
}

/// The state a fold over a group's events arrives at: the group, or no group (never
/// created, or deleted).
pub(crate) fn apply(state: &mut Option<GroupState>, event: GroupEvent, version: u64) {
    match event {
        GroupEvent::GroupCreated {
            group,
            spec,
            read_to,
        } => {
            *state = Some(GroupState {
                group,
                spec,
                created: version,
                read_to,
                entries: BTreeMap::new(),
                acked: 0,
                skipped: 0,
            });
        }
        GroupEvent::GroupDeleted {} => *state = None,
        GroupEvent::Snapshot {
            group,
            spec,
            created,
            read_to,
            acked,
            skipped,
            entries,
        } => {
            *state = Some(GroupState {
                group,
                spec,
                created,
                read_to,
                entries: entries.into_iter().map(|s| (s.offset, s.entry)).collect(),
                acked,
                skipped,
            });
        }
        other => {
            if let Some(state) = state.as_mut() {
                state.apply(other);
            }
        }
    }
}

impl GroupState {
    fn apply(&mut self, event: GroupEvent) {
        match event {
            GroupEvent::GroupUpdated {
                ack_timeout_ms,
                max_deliveries,
                ordering,
            } => {
                self.spec.ack_timeout_ms = ack_timeout_ms;
                self.spec.max_deliveries = max_deliveries;
                self.spec.ordering = ordering;
            }
            GroupEvent::Polled {
                consumer,
                deadline,
                read_to,
                taken,
                delivered,
                parked,
                gone,
            } => {
                for t in taken {
                    self.entries.insert(
                        t.offset,
                        Entry {
                            stream: t.stream,
                            version: t.version,
                            deliveries: 0,
                            status: Status::Waiting,
                        },
                    );
                }
                self.read_to = self.read_to.max(read_to);
                for offset in delivered {
                    if let Some(e) = self.entries.get_mut(&offset) {
                        e.deliveries = e.deliveries.saturating_add(1);
                        e.status = Status::InFlight {
                            deadline,
                            consumer: consumer.clone(),
                        };
                    }
                }
                self.park(parked);
                for offset in gone {
                    if self.entries.remove(&offset).is_some() {
                        self.skipped += 1;
                    }
                }
            }
            GroupEvent::Acked { offsets } => {
                for offset in offsets {
                    if self.entries.remove(&offset).is_some() {
                        self.acked += 1;
                    }
                }
            }
            GroupEvent::Nacked {
                retried,
                parked,
                skipped,
            } => {
                for offset in retried {
                    if let Some(e) = self.entries.get_mut(&offset) {
                        e.status = Status::Waiting;
                    }
                }
                self.park(parked);
                for offset in skipped {
                    if self.entries.remove(&offset).is_some() {
                        self.skipped += 1;
                    }
                }
            }
            GroupEvent::ParkedReplayed { offsets } => {
                for offset in offsets {
                    if let Some(e) = self.entries.get_mut(&offset)
                        && e.status == Status::Parked
                    {
                        e.status = Status::Waiting;
                        e.deliveries = 0;
                    }
                }
            }
            GroupEvent::SnapshotPart { entries } => {
                self.entries
                    .extend(entries.into_iter().map(|s| (s.offset, s.entry)));
            }
            // Handled by `apply` above: they replace the state.
            GroupEvent::GroupCreated { .. }
            | GroupEvent::GroupDeleted {}
            | GroupEvent::Snapshot { .. } => {}
        }
    }

    fn park(&mut self, offsets: Vec<u64>) {
        for offset in offsets {
            if let Some(e) = self.entries.get_mut(&offset) {
                e.status = Status::Parked;
            }
        }
    }
}

/// A poll being decided: the entries it delivers again, then the source events it takes.
///
/// With `per_stream` ordering, a stream is *blocked* while it has an entry that is not
/// parked: only that stream's lowest such entry may be delivered, and only when it is not in
/// flight; a new event of a blocked stream is taken as waiting. Since a stream's events
/// enter the ledger in version order, "lowest offset" is "lowest version".
#[derive(Debug)]
pub(crate) struct PollPlan<'a> {
    state: &'a GroupState,
    consumer: ConsumerName,
    max: usize,
    now: u64,
    /// Entries delivered again, by offset (their bodies are read by the engine).
    redelivered: Vec<u64>,
    /// Expired entries with no deliveries left.
    parked: Vec<u64>,
    /// Source events taken, and the ones of them delivered now.
    taken: Vec<Taken>,
    fresh: Vec<RecordedEvent>,
    /// Streams with an entry not parked (only tracked with `per_stream`).
    blocked: HashSet<StreamName>,
    outstanding: usize,
    read_to: u64,
}

impl<'a> PollPlan<'a> {
    fn new(state: &'a GroupState, consumer: ConsumerName, max: usize, now: u64) -> Self {
        let per_stream = state.spec.ordering == Ordering::PerStream;
        let mut plan = PollPlan {
            state,
            consumer,
            max,
            now,
            redelivered: Vec::new(),
            parked: Vec::new(),
            taken: Vec::new(),
            fresh: Vec::new(),
            blocked: HashSet::new(),
            outstanding: state.outstanding(),
            read_to: state.read_to,
        };
        for (offset, entry) in &state.entries {
            if state.entry_expired(entry, now) && entry.deliveries >= state.spec.max_deliveries {
                plan.parked.push(*offset);
                plan.outstanding = plan.outstanding.saturating_sub(1);
                continue;
            }
            if entry.status == Status::Parked {
                continue;
            }
            // The first entry of its stream that is not parked (per_stream), or any.
            let first_of_stream = !per_stream || plan.blocked.insert(entry.stream.clone());
            if first_of_stream && state.ready(entry, now) && plan.redelivered.len() < max {
                plan.redelivered.push(*offset);
            }
        }
        plan
    }

    /// Whether the poll has room for more source events.
    pub(crate) fn wants_more(&self) -> bool {
        self.delivered() < self.max && self.outstanding < OUTSTANDING_MAX
    }

    fn delivered(&self) -> usize {
        self.redelivered.len() + self.fresh.len()
    }

    /// The next offset of the source to read.
    pub(crate) fn read_to(&self) -> u64 {
        self.read_to
    }

    /// Moves `read_to` past source events known to hold nothing for the group.
    pub(crate) fn skip_to(&mut self, offset: u64) {
        self.read_to = self.read_to.max(offset);
    }

    /// Takes source events from a page read at `read_to()`, in order, while there is
    /// room; then, if the whole page was taken, moves on to `next` (the page's end).
    pub(crate) fn offer(&mut self, events: Vec<RecordedEvent>, next: u64) {
        let source = &self.state.spec.source;
        let per_stream = self.state.spec.ordering == Ordering::PerStream;
        for event in events {
            let offset = source.offset_of(&event);
            if offset < self.read_to {
                continue;
            }
            if !self.wants_more() {
                return;
            }
            self.read_to = offset.saturating_add(1);
            if !source.admits(&event) {
                continue;
            }
            self.taken.push(Taken {
                offset,
                stream: event.stream.clone(),
                version: event.version,
            });
            self.outstanding += 1;
            if !per_stream || self.blocked.insert(event.stream.clone()) {
                self.fresh.push(event);
            }
        }
        self.read_to = self.read_to.max(next);
    }

    /// The entries to deliver again, whose events the engine must read.
    pub(crate) fn redelivered(&self) -> &[u64] {
        &self.redelivered
    }

    /// The event recording this poll (`None` when it changes nothing) and the messages
    /// to hand out, given the events of the redelivered entries (`None` for one no longer
    /// in the source, which is dropped).
    pub(crate) fn finish(
        self,
        redelivered_events: Vec<Option<RecordedEvent>>,
    ) -> (Option<GroupEvent>, Vec<Message>) {
        let state = self.state;
        let deadline = self.now.saturating_add(state.spec.ack_timeout_ms);
        let mut delivered = Vec::new();
        let mut gone = Vec::new();
        let mut messages = Vec::new();
        for (offset, event) in self.redelivered.iter().zip(redelivered_events) {
            let Some(entry) = state.entries.get(offset) else {
                continue;
            };
            match event {
                Some(event) => {
                    let delivery = entry.deliveries.saturating_add(1);
                    delivered.push(*offset);
                    messages.push(Message {
                        ack_id: state.ack_id(*offset, delivery),
                        delivery,
                        event,
                    });
                }
                None => gone.push(*offset),
            }
        }
        let source = &state.spec.source;
        for event in self.fresh {
            let offset = source.offset_of(&event);
            delivered.push(offset);
            messages.push(Message {
                ack_id: state.ack_id(offset, 1),
                delivery: 1,
                event,
            });
        }
        let changed = !delivered.is_empty()
            || !self.parked.is_empty()
            || !gone.is_empty()
            || !self.taken.is_empty();
        let event = changed.then_some(GroupEvent::Polled {
            consumer: self.consumer,
            deadline,
            read_to: self.read_to,
            taken: self.taken,
            delivered,
            parked: self.parked,
            gone,
        });
        (event, messages)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::config::Source;
    use concord_core::{EventType, Json, NewEvent, Position, RecordedAt};

    fn stream(n: &str) -> StreamName {
        StreamName::new(n).unwrap()
    }

    fn recorded(s: &str, version: u64, position: u64) -> RecordedEvent {
        RecordedEvent::new(
            stream(s),
            Version(version),
            Position(position),
            NewEvent::new(EventType::new("Placed").unwrap(), Json::empty_object()),
            RecordedAt(0),
        )
    }

    fn group(ordering: Ordering, max_deliveries: u32) -> Option<GroupState> {
        let mut spec = GroupSpec::new(Source::All(Default::default()));
        spec.ordering = ordering;
        spec.max_deliveries = max_deliveries;
        spec.ack_timeout_ms = 1000;
        let mut state = None;
        apply(
            &mut state,
            GroupEvent::GroupCreated {
                group: GroupName::new("g").unwrap(),
                spec,
                read_to: 1,
            },
            1,
        );
        state
    }

    /// Polls at `now` over `page` and applies the outcome, returning the messages.
    fn poll(
        state: &mut Option<GroupState>,
        page: Vec<RecordedEvent>,
        max: usize,
        now: u64,
    ) -> Vec<Message> {
        let s = state.as_ref().unwrap();
        let next = page.last().map_or(s.read_to, |e| e.position.get() + 1);
        let mut plan = s.plan_poll(ConsumerName::new("c").unwrap(), max, now);
        let bodies: Vec<Option<RecordedEvent>> = plan
            .redelivered()
            .iter()
            .map(|o| {
                let e = &s.entries[o];
                Some(recorded(e.stream.as_str(), e.version.get(), *o))
            })
            .collect();
        plan.offer(page, next);
        let (event, messages) = plan.finish(bodies);
        if let Some(event) = event {
            apply(state, event, 2);
        }
        messages
    }

    fn offsets(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.event.position.get()).collect()
    }

    #[test]
    fn per_stream_ordering_holds_back_a_streams_later_events_until_the_first_is_done() {
        let mut state = group(Ordering::PerStream, 5);
        let page = vec![
            recorded("a-1", 1, 1),
            recorded("a-1", 2, 2),
            recorded("b-1", 1, 3),
            recorded("a-1", 3, 4),
        ];
        let first = poll(&mut state, page, 10, 0);
        assert_eq!(offsets(&first), vec![1, 3], "one event per stream");
        assert_eq!(state.as_ref().unwrap().read_to, 5, "all four taken");
        assert!(
            poll(&mut state, vec![], 10, 1).is_empty(),
            "a-1 and b-1 are busy"
        );
        let s = state.as_ref().unwrap();
        let ack = s.decide_ack([first[0].ack_id.as_str()], 1).unwrap();
        apply(&mut state, ack, 3);
        let next = poll(&mut state, vec![], 10, 2);
        assert_eq!(
            offsets(&next),
            vec![2],
            "a-1's version 2 after version 1 is acked"
        );
    }

    #[test]
    fn an_expired_delivery_comes_back_with_the_next_delivery_number_then_parks() {
        let mut state = group(Ordering::None, 2);
        let first = poll(&mut state, vec![recorded("a-1", 1, 1)], 10, 0);
        assert_eq!(first[0].delivery, 1);
        assert!(
            poll(&mut state, vec![], 10, 999).is_empty(),
            "not expired yet"
        );
        let second = poll(&mut state, vec![], 10, 1000);
        assert_eq!(second[0].delivery, 2);
        let late = state
            .as_ref()
            .unwrap()
            .decide_ack([first[0].ack_id.as_str()], 1000);
        assert!(late.is_none(), "the first delivery's ack id is expired");
        assert!(
            poll(&mut state, vec![], 10, 2000).is_empty(),
            "parked, not delivered"
        );
        let s = state.as_ref().unwrap();
        assert_eq!(s.parked().count(), 1);
        let replay = s.decide_replay().unwrap();
        apply(&mut state, replay, 4);
        let again = poll(&mut state, vec![], 10, 2001);
        assert_eq!(
            again[0].delivery, 1,
            "deliveries are counted afresh after a replay"
        );
    }

    #[test]
    fn acks_of_unknown_malformed_repeated_or_foreign_ids_are_ignored() {
        let mut state = group(Ordering::None, 5);
        let m = poll(&mut state, vec![recorded("a-1", 1, 1)], 10, 0);
        let s = state.as_ref().unwrap();
        let id = m[0].ack_id.as_str();
        let other_group = format!("99.{}.1", m[0].event.position.get());
        let ids = [id, id, "nonsense", "1.2", "1.77.1", other_group.as_str()];
        let Some(GroupEvent::Acked { offsets }) = s.decide_ack(ids, 1) else {
            panic!("one live id")
        };
        assert_eq!(offsets, vec![1]);
    }

    #[test]
    fn a_poll_of_a_backlog_is_written_in_runs_and_folds_back_to_the_same_state() {
        let state = group(Ordering::None, 5);
        let s = state.as_ref().unwrap();
        let page: Vec<RecordedEvent> = (1..=100).map(|p| recorded("order-1", p + 40, p)).collect();
        let mut plan = s.plan_poll(ConsumerName::new("c").unwrap(), 100, 0);
        plan.offer(page, 101);
        let (Some(event), messages) = plan.finish(Vec::new()) else {
            panic!("a poll that hands out writes")
        };
        assert_eq!(messages.len(), 100);
        let json = serde_json::to_string(&event).unwrap();
        assert!(
            json.contains(r#""taken":[[1,"order-1",41,100]]"#)
                && json.contains(r#""delivered":[[1,100]]"#),
            "{json}"
        );
        assert!(json.len() < 200, "{} bytes: {json}", json.len());
        let (mut direct, mut folded) = (state.clone(), state);
        apply(&mut direct, event, 2);
        apply(&mut folded, serde_json::from_str(&json).unwrap(), 2);
        assert_eq!(folded, direct);
        assert_eq!(folded.unwrap().entries.len(), 100);
    }

    #[test]
    fn a_snapshot_folds_back_to_the_same_state() {
        let mut state = group(Ordering::PerStream, 5);
        let page: Vec<RecordedEvent> = (1..=1200)
            .map(|p| recorded(&format!("s-{}", p % 7), p / 7 + 1, p))
            .collect();
        let _ = poll(&mut state, page, 1000, 0);
        let s = state.clone().unwrap();
        let events = s.snapshot();
        assert_eq!(
            events.len(),
            1200_usize.div_ceil(SNAPSHOT_ENTRIES_PER_EVENT)
        );
        let mut folded = None;
        for (i, e) in events.into_iter().enumerate() {
            let json = serde_json::to_string(&e).unwrap();
            let back: GroupEvent = serde_json::from_str(&json).unwrap();
            apply(&mut folded, back, 100 + i as u64);
        }
        assert_eq!(folded, Some(s));
    }
}
