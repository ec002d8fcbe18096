//! A group's state as a pure state machine: the changes that operations record in the
//! group's state stream, and how each one moves events between waiting, in flight, parked
//! and done. Replaying the stream's changes onto its last snapshot rebuilds the state, so
//! the store holds all of it and any node can continue it.
//!
//! An event the group has read is in exactly one of `waiting`, `in_flight` or `parked`
//! until it is acked or skipped; then it is in none, and since the read cursor is past it,
//! it is never delivered again. No set of done events is kept, so the state is as large as
//! the group's backlog of unfinished events, not its history.

use std::collections::{BTreeMap, BTreeSet};

use concord_core::StreamName;
use serde::{Deserialize, Serialize};

use crate::settings::{GroupSettings, Ordering};

/// An event the group has read from its source.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// Its stream.
    pub stream: StreamName,
    /// Its version in that stream.
    pub version: u64,
    /// How often it was delivered so far.
    pub deliveries: u32,
}

/// An event handed to a consumer and not yet acked.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct InFlight {
    /// The event.
    pub entry: Entry,
    /// Who has it.
    pub consumer: String,
    /// When (Unix ms) it goes back to the group unless acked.
    pub deadline_ms: u64,
}

/// Everything a group knows. Offsets are source positions (source `all`) or versions
/// (source `stream`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupState {
    /// The group's settings.
    pub settings: GroupSettings,
    /// The next source offset to read.
    pub cursor: u64,
    /// Read and ready to be delivered (new, or back from a consumer).
    pub waiting: BTreeMap<u64, Entry>,
    /// Delivered, not acked.
    pub in_flight: BTreeMap<u64, InFlight>,
    /// Set aside after too many deliveries or by a nack; delivered again only on replay.
    pub parked: BTreeMap<u64, Entry>,
    /// How many events were acked.
    pub acked: u64,
    /// How many events were skipped by a nack.
    pub skipped: u64,
    /// Whether the group was deleted (its stream stays, its state is gone).
    pub deleted: bool,
}

/// One step recorded in the state stream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum Change {
    /// Events read from the source, now waiting; the cursor moves to `cursor`.
    Read {
        /// (offset, stream, version) of each event read.
        entries: Vec<(u64, StreamName, u64)>,
        /// The next offset to read.
        cursor: u64,
    },
    /// Waiting events handed to `consumer`, each with one more delivery.
    Delivered {
        /// Who has them.
        consumer: String,
        /// When they go back unless acked.
        deadline_ms: u64,
        /// Which.
        offsets: Vec<u64>,
    },
    /// In-flight events back to waiting (their timeout passed, or a nack said retry).
    Returned {
        /// Which.
        offsets: Vec<u64>,
    },
    /// Waiting or in-flight events parked.
    Parked {
        /// Which.
        offsets: Vec<u64>,
    },
    /// In-flight events done.
    Acked {
        /// Which.
        offsets: Vec<u64>,
    },
    /// In-flight events done without being handled.
    Skipped {
        /// Which.
        offsets: Vec<u64>,
    },
    /// Every parked event back to waiting, with its delivery count reset.
    Replayed,
}

impl GroupState {
    /// A new group whose first read is at `cursor`.
    pub fn new(settings: GroupSettings, cursor: u64) -> Self {
        GroupState {
            settings,
            cursor,
            waiting: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            parked: BTreeMap::new(),
            acked: 0,
            skipped: 0,
            deleted: false,
        }
    }

    /// Applies one change. Offsets a change names that are not where it expects them are
    /// left alone (a change is computed from this very state, so that happens only for
    /// state written by a newer version).
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Read { entries, cursor } => {
                for (offset, stream, version) in entries {
                    self.waiting.insert(
                        *offset,
                        Entry {
                            stream: stream.clone(),
                            version: *version,
                            deliveries: 0,
                        },
                    );
                }
                self.cursor = self.cursor.max(*cursor);
            }
            Change::Delivered {
                consumer,
                deadline_ms,
                offsets,
            } => {
                for offset in offsets {
                    if let Some(mut entry) = self.waiting.remove(offset) {
                        entry.deliveries = entry.deliveries.saturating_add(1);
                        self.in_flight.insert(
                            *offset,
                            InFlight {
                                entry,
                                consumer: consumer.clone(),
                                deadline_ms: *deadline_ms,
                            },
                        );
                    }
                }
            }
            Change::Returned { offsets } => {
                for offset in offsets {
                    if let Some(flight) = self.in_flight.remove(offset) {
                        self.waiting.insert(*offset, flight.entry);
                    }
                }
            }
            Change::Parked { offsets } => {
                for offset in offsets {
                    let entry = self
                        .in_flight
                        .remove(offset)
                        .map(|f| f.entry)
                        .or_else(|| self.waiting.remove(offset));
                    if let Some(entry) = entry {
                        self.parked.insert(*offset, entry);
                    }
                }
            }
            Change::Acked { offsets } => {
                for offset in offsets {
                    if self.in_flight.remove(offset).is_some() {
                        self.acked += 1;
                    }
                }
            }
            Change::Skipped { offsets } => {
                for offset in offsets {
                    if self.in_flight.remove(offset).is_some() {
                        self.skipped += 1;
                    }
                }
            }
            Change::Replayed => {
                for (offset, mut entry) in std::mem::take(&mut self.parked) {
                    entry.deliveries = 0;
                    self.waiting.insert(offset, entry);
                }
            }
        }
    }

    /// In-flight events whose deadline has passed at `now_ms`: those that used up their
    /// deliveries are parked, the rest return to waiting.
    pub fn expire(&self, now_ms: u64) -> Vec<Change> {
        let mut returned = Vec::new();
        let mut parked = Vec::new();
        for (offset, flight) in &self.in_flight {
            if flight.deadline_ms <= now_ms {
                if flight.entry.deliveries >= self.settings.max_deliveries {
                    parked.push(*offset);
                } else {
                    returned.push(*offset);
                }
            }
        }
        let mut changes = Vec::new();
        if !returned.is_empty() {
            changes.push(Change::Returned { offsets: returned });
        }
        if !parked.is_empty() {
            changes.push(Change::Parked { offsets: parked });
        }
        changes
    }

    /// Up to `max` waiting events that may be delivered now, in offset order: with
    /// per-stream ordering, only the first waiting event of a stream that has nothing in
    /// flight.
    pub fn deliverable(&self, max: usize) -> Vec<u64> {
        match self.settings.ordering {
            Ordering::None => self.waiting.keys().take(max).copied().collect(),
            Ordering::PerStream => {
                let mut busy: BTreeSet<&StreamName> =
                    self.in_flight.values().map(|f| &f.entry.stream).collect();
                let mut chosen = Vec::new();
                for (offset, entry) in &self.waiting {
                    if chosen.len() >= max {
                        break;
                    }
                    if busy.insert(&entry.stream) {
                        chosen.push(*offset);
                    }
                }
                chosen
            }
        }
    }
}

/// An ack id: the offset and the delivery it answers, so an answer to an earlier
/// delivery of a redelivered event is recognised as stale.
pub fn ack_id(offset: u64, delivery: u32) -> String {
    format!("{offset}.{delivery}")
}

/// The offset and delivery of an ack id, or `None` for text no delivery produced.
pub fn parse_ack_id(id: &str) -> Option<(u64, u32)> {
    let (offset, delivery) = id.split_once('.')?;
    Some((offset.parse().ok()?, delivery.parse().ok()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::settings::{GroupSettings, Source};

    fn stream(name: &str) -> StreamName {
        StreamName::new(name).unwrap()
    }

    fn state(ordering: Ordering) -> GroupState {
        let mut settings = GroupSettings::new(Source::All(concord_core::Filter::all()));
        settings.ordering = ordering;
        settings.max_deliveries = 2;
        let mut state = GroupState::new(settings, 1);
        state.apply(&Change::Read {
            entries: vec![
                (1, stream("a-1"), 1),
                (2, stream("a-1"), 2),
                (3, stream("b-1"), 1),
            ],
            cursor: 4,
        });
        state
    }

    #[test]
    fn per_stream_ordering_delivers_one_event_per_stream_in_version_order() {
        let mut s = state(Ordering::PerStream);
        assert_eq!(s.deliverable(10), vec![1, 3]);
        s.apply(&Change::Delivered {
            consumer: "c".into(),
            deadline_ms: 10,
            offsets: vec![1, 3],
        });
        assert!(s.deliverable(10).is_empty());
        s.apply(&Change::Acked { offsets: vec![1] });
        assert_eq!(s.deliverable(10), vec![2]);
    }

    #[test]
    fn an_expired_event_returns_then_parks_after_max_deliveries() {
        let mut s = state(Ordering::None);
        for round in 1..=2 {
            s.apply(&Change::Delivered {
                consumer: "c".into(),
                deadline_ms: 10,
                offsets: vec![1],
            });
            assert_eq!(s.in_flight[&1].entry.deliveries, round);
            for change in s.expire(10) {
                s.apply(&change);
            }
        }
        assert!(s.parked.contains_key(&1));
        s.apply(&Change::Replayed);
        assert_eq!(s.waiting[&1].deliveries, 0);
    }

    #[test]
    fn an_ack_of_an_event_not_in_flight_counts_nothing() {
        let mut s = state(Ordering::None);
        s.apply(&Change::Acked {
            offsets: vec![1, 99],
        });
        assert_eq!(s.acked, 0);
    }

    #[test]
    fn ack_ids_round_trip_and_garbage_is_none() {
        assert_eq!(parse_ack_id(&ack_id(42, 3)), Some((42, 3)));
        assert_eq!(parse_ack_id("x"), None);
        assert_eq!(parse_ack_id("1.x"), None);
    }
}
