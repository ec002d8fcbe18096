//! The events a store saw written recently, so that a rebased append can list its
//! concurrent events without reading them back from Redis.
//!
//! On a hot stream nearly every append is rebased over the appends of the other writers,
//! and with 64 writers that is ~63 events per append: reading them back (converted through
//! Lua, or even by a plain `XRANGE`) cost Redis more than the append itself, and parsing
//! them cost the client more still. Most of them were written through this very store, so
//! it keeps the last few thousand events it wrote (or read for a rebase) and lists from
//! them when it has every one asked for.
//!
//! The function's replies carry an *epoch* (see `concord.lua`) that changes whenever
//! events of the store may have been lost or written past this Lua VM: events remembered
//! under another epoch are never used, so a restart, failover or `FLUSHALL` cannot make the
//! store list events Redis no longer holds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use concord_core::{RecordedEvent, StreamName};

/// Events remembered at most.
const EVENTS_MAX: usize = 4096;

/// Bytes of `data` + `metadata` remembered at most; a larger event is not remembered.
const BYTES_MAX: usize = 8 * 1024 * 1024;

/// Recently written events by stream and version, all of one epoch.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    epoch: String,
    /// Shared, so that a lookup holds the lock only to count references; the copies the
    /// caller gets are made after it is released.
    streams: HashMap<StreamName, BTreeMap<u64, Arc<RecordedEvent>>>,
    /// Oldest first: which entry to forget next, and its size.
    order: VecDeque<(StreamName, u64, usize)>,
    bytes: usize,
}

fn size(e: &RecordedEvent) -> usize {
    e.data.as_bytes().len() + e.metadata.as_bytes().len()
}

impl State {
    /// Adopts `epoch`, forgetting everything of another one.
    fn enter(&mut self, epoch: &str) {
        if self.epoch != epoch {
            self.streams.clear();
            self.order.clear();
            self.bytes = 0;
            epoch.clone_into(&mut self.epoch);
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((stream, version, bytes)) = self.order.pop_front() {
            self.bytes -= bytes;
            if let Some(events) = self.streams.get_mut(&stream) {
                events.remove(&version);
                if events.is_empty() {
                    self.streams.remove(&stream);
                }
            }
        }
    }
}

impl Recent {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers `events`, read or written in `epoch`.
    pub(crate) fn record(&self, epoch: &str, events: impl IntoIterator<Item = RecordedEvent>) {
        // Built before the lock is taken: writers on other threads wait only for the inserts.
        let events: Vec<(usize, Arc<RecordedEvent>)> = events
            .into_iter()
            .map(|e| (size(&e), Arc::new(e)))
            .filter(|(bytes, _)| *bytes <= BYTES_MAX / 16)
            .collect();
        let mut state = self.state();
        state.enter(epoch);
        for (bytes, event) in events {
            let (stream, version) = (event.stream.clone(), event.version.get());
            let map = state.streams.entry(stream.clone()).or_default();
            // An event known already (read back after being written) is the same event:
            // within one epoch a version never changes.
            if map.contains_key(&version) {
                continue;
            }
            map.insert(version, event);
            state.bytes += bytes;
            state.order.push_back((stream, version, bytes));
            while state.order.len() > EVENTS_MAX || state.bytes > BYTES_MAX {
                state.forget_oldest();
            }
        }
    }

    /// Versions `from..=to` of `stream` written in `epoch`, when every one is remembered.
    pub(crate) fn range(
        &self,
        epoch: &str,
        stream: &StreamName,
        from: u64,
        to: u64,
    ) -> Option<Vec<RecordedEvent>> {
        let wanted = usize::try_from(to.checked_sub(from)?.checked_add(1)?).ok()?;
        let found: Vec<Arc<RecordedEvent>> = {
            let state = self.state();
            if state.epoch != epoch {
                return None;
            }
            let events = state.streams.get(stream)?;
            events
                .range(from..=to)
                .map(|(_, e)| Arc::clone(e))
                .collect()
        };
        (found.len() == wanted).then(|| found.iter().map(|e| RecordedEvent::clone(e)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_core::{Position, RecordedAt, Version, doc};

    fn event(stream: &str, version: u64) -> RecordedEvent {
        let e = doc::event("Deposited", serde_json::json!({ "amount": version }));
        RecordedEvent {
            stream: doc::stream(stream),
            version: Version(version),
            position: Position(version),
            id: e.id,
            event_type: e.event_type,
            data: e.data,
            metadata: e.metadata,
            tags: e.tags,
            recorded_at: RecordedAt(1),
        }
    }

    #[test]
    fn lists_a_range_only_when_every_version_of_it_is_known() {
        let recent = Recent::default();
        let s = doc::stream("account-1");
        recent.record("e1", (1..=5).map(|v| event("account-1", v)));
        recent.record("e1", [event("account-1", 7)]);
        let got = recent.range("e1", &s, 2, 4).unwrap();
        assert_eq!(
            got.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert!(recent.range("e1", &s, 5, 7).is_none(), "6 is missing");
        assert!(recent.range("e1", &doc::stream("other"), 1, 1).is_none());
    }

    #[test]
    fn another_epoch_forgets_everything() {
        let recent = Recent::default();
        let s = doc::stream("account-1");
        recent.record("e1", (1..=3).map(|v| event("account-1", v)));
        assert!(recent.range("e2", &s, 1, 3).is_none());
        recent.record("e2", [event("account-1", 4)]);
        assert!(recent.range("e2", &s, 1, 3).is_none());
        assert!(recent.range("e1", &s, 1, 3).is_none());
        assert_eq!(recent.range("e2", &s, 4, 4).unwrap().len(), 1);
    }

    #[test]
    fn the_oldest_events_are_forgotten_first() {
        let recent = Recent::default();
        let s = doc::stream("account-1");
        let n = u64::try_from(EVENTS_MAX).unwrap() + 10;
        recent.record("e", (1..=n).map(|v| event("account-1", v)));
        assert!(recent.range("e", &s, 1, 10).is_none());
        assert!(recent.range("e", &s, 11, n).is_some());
        // Recording an event again does not count it twice.
        recent.record("e", [event("account-1", n)]);
        assert!(recent.range("e", &s, 11, n).is_some());
    }
}
