//! Reading a group's source ahead of its polls.
//!
//! A poll decides under its group's lock, and reading the source is most of what it does
//! there: a round trip to the store and the decoding of a page of events. With several
//! consumers their polls queue on that lock, so a group with a backlog handed out one page
//! per round trip while the processor sat partly idle (on Redis, through `concord serve`:
//! 1.3 of 2 cores busy). So a group whose last read of the source did not reach its end
//! reads the next page in a task of its own, outside the lock, while its polls decide on
//! the page before; a poll then takes its events from memory.
//!
//! What is read ahead is a copy of the source as it was when read, so it is used only for
//! [`FRESH_FOR`] after the read: an event of a stream deleted after that is not handed out
//! from memory. (An event read just before a delete can be handed out either way: a poll
//! that read the source itself a moment before the delete would hand it out too.) A page
//! is kept for one incarnation of one group and source; any other read, a gap, or an
//! expired page sends the poll to the store as before, and what it reads there is where
//! reading ahead starts again.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use concord_core::{Direction, EventStore, Position, RecordedEvent, StoreError, Version};

use crate::config::Source;
use crate::error::GroupError;

/// Events one read ahead asks the store for.
pub(crate) const PAGE: usize = 1000;

/// How long events read ahead may be handed out after their read began.
pub(crate) const FRESH_FOR: Duration = Duration::from_millis(100);

/// Below this many events in memory, the next page is read ahead.
const LOW: usize = PAGE / 2;

/// A page of the source: its events, where the next read starts, and whether it reached
/// the source's end.
#[derive(Debug, Default)]
pub(crate) struct Page {
    pub(crate) events: Vec<RecordedEvent>,
    pub(crate) next: u64,
    pub(crate) caught_up: bool,
}

/// Source events at `from` onwards, up to `limit` of them.
pub(crate) async fn read_page(
    store: &dyn EventStore,
    source: &Source,
    from: u64,
    limit: usize,
) -> Result<Page, GroupError> {
    match source {
        Source::Stream(stream) => {
            let events = match store
                .read_stream(stream, Version(from), Direction::Forward, limit)
                .await
            {
                // A tombstoned source has nothing more to hand out, ever.
                Err(StoreError::StreamDeleted(_)) => {
                    return Ok(Page {
                        events: Vec::new(),
                        next: from,
                        caught_up: true,
                    });
                }
                read => read?,
            };
            let next = events
                .last()
                .map_or(from, |e| e.version.get().saturating_add(1));
            let caught_up = events.len() < limit;
            Ok(Page {
                events,
                next,
                caught_up,
            })
        }
        Source::All(all) => {
            let page = store.read_all(Position(from), &all.filter(), limit).await?;
            let caught_up = page.is_caught_up() || page.events.is_empty();
            Ok(Page {
                events: page.events,
                next: page.next_from.get(),
                caught_up,
            })
        }
    }
}

/// Which group a page was read for: its incarnation (the `created` of its state) and its
/// source.
pub(crate) type Key<'a> = (u64, &'a Source);

/// One group's events read ahead.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    inner: Mutex<Ahead>,
    /// Woken when a read ahead lands.
    pub(crate) landed: Notify,
}

#[derive(Debug, Default)]
struct Ahead {
    /// The incarnation and source the events were read for; `None`: nothing kept.
    key: Option<(u64, Source)>,
    /// Every source event at an offset in `start..next` is in `events`, in order.
    start: u64,
    next: u64,
    events: VecDeque<RecordedEvent>,
    /// When the read of the oldest event kept began.
    read_at: Option<Instant>,
    /// Whether the last read ended short of the source's end.
    more: bool,
    /// Whether a read ahead is under way (from `next`).
    reading: bool,
    /// Bumped when what is kept is dropped, so a read ahead begun before is not kept.
    generation: u64,
}

/// What [`ReadAhead::take`] found.
#[derive(Debug)]
pub(crate) enum Take {
    /// The events, from memory.
    Events(Page),
    /// Not enough kept yet, and the read ahead under way brings the rest: wait for
    /// [`ReadAhead::landed`], then take again.
    Wait,
    /// Read the store.
    Store,
}

/// A read ahead to make: from where, for which keeping.
#[derive(Debug)]
pub(crate) struct Refill {
    pub(crate) source: Source,
    pub(crate) from: u64,
    generation: u64,
    began: Instant,
}

impl ReadAhead {
    /// Up to `limit` events at `from` from memory, when read for `key`, fresh, and that
    /// many are kept (or all there is, at the source's end); else whether to wait for the
    /// read ahead under way or to read the store.
    pub(crate) fn take(&self, key: Key<'_>, from: u64, limit: usize) -> Take {
        let mut a = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let same = a
            .key
            .as_ref()
            .is_some_and(|(c, s)| *c == key.0 && s == key.1);
        if a.read_at.is_none_or(|t| t.elapsed() > FRESH_FOR) {
            a.events.clear();
            a.read_at = None;
            a.start = a.next;
        }
        if !same || from < a.start || from > a.next {
            return Take::Store;
        }
        while a.events.front().is_some_and(|e| key.1.offset_of(e) < from) {
            let _ = a.events.pop_front();
        }
        a.start = from;
        let enough = a.events.len() >= limit || !(a.more || a.reading);
        if !enough || a.events.is_empty() {
            return if a.reading { Take::Wait } else { Take::Store };
        }
        let n = limit.min(a.events.len());
        let events: Vec<RecordedEvent> = a.events.drain(..n).collect();
        let next = match events.last() {
            Some(last) if n == limit => key.1.offset_of(last).saturating_add(1),
            _ => a.next,
        };
        a.start = next;
        if a.events.is_empty() {
            a.read_at = None;
        }
        Take::Events(Page {
            events,
            // Not known to be the end: the source may have grown since the read.
            caught_up: false,
            next,
        })
    }

    /// Notes a page a poll read itself at `from`: what was kept is dropped, and reading
    /// ahead starts again at the page's end.
    pub(crate) fn restart(&self, key: Key<'_>, page: &Page) {
        let mut a = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        a.generation = a.generation.wrapping_add(1);
        a.key = Some((key.0, key.1.clone()));
        a.events.clear();
        a.read_at = None;
        a.start = page.next;
        a.next = page.next;
        a.more = !page.caught_up;
        a.reading = false;
    }

    /// The read ahead to make now, if one is due: the last read did not reach the source's
    /// end, fewer than half a page is kept, and none is under way.
    pub(crate) fn due(&self) -> Option<Refill> {
        let mut a = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if a.reading || !a.more || a.events.len() >= LOW {
            return None;
        }
        let source = a.key.as_ref()?.1.clone();
        a.reading = true;
        Some(Refill {
            source,
            from: a.next,
            generation: a.generation,
            began: Instant::now(),
        })
    }

    /// Keeps what a read ahead brought, unless what it was made for was dropped meanwhile.
    /// A failed read keeps nothing and stops reading ahead until a poll reads the store
    /// (which reports the failure).
    pub(crate) fn filled(&self, refill: Refill, read: Option<Page>) {
        self.keep(refill, read);
        self.landed.notify_waiters();
    }

    fn keep(&self, refill: Refill, read: Option<Page>) {
        let mut a = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if a.generation != refill.generation || a.next != refill.from {
            return;
        }
        a.reading = false;
        let Some(page) = read else {
            a.more = false;
            return;
        };
        if a.events.is_empty() {
            a.read_at = Some(refill.began);
        }
        a.events.extend(page.events);
        a.next = page.next.max(a.next);
        a.more = !page.caught_up;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use concord_core::{EventType, Json, NewEvent, RecordedAt, StreamName};

    impl Take {
        fn page(self) -> Page {
            match self {
                Take::Events(page) => page,
                other => panic!("expected events, got {other:?}"),
            }
        }

        fn is_store(&self) -> bool {
            matches!(self, Take::Store)
        }
    }

    fn source() -> Source {
        Source::Stream(StreamName::new("order-1").unwrap())
    }

    fn events(versions: std::ops::Range<u64>) -> Vec<RecordedEvent> {
        versions
            .map(|v| {
                RecordedEvent::new(
                    StreamName::new("order-1").unwrap(),
                    Version(v),
                    Position(v),
                    NewEvent::new(EventType::new("Placed").unwrap(), Json::empty_object()),
                    RecordedAt(0),
                )
            })
            .collect()
    }

    /// A page of nothing that ends at `next`, short of the source's end.
    fn nothing_at(next: u64) -> Page {
        Page {
            events: Vec::new(),
            next,
            caught_up: false,
        }
    }

    /// A page of the events at `range`, reaching the source's end or not.
    fn page_of(range: std::ops::Range<u64>, caught_up: bool) -> Page {
        let next = range.end;
        Page {
            events: events(range),
            next,
            caught_up,
        }
    }

    fn versions(page: &Page) -> Vec<u64> {
        page.events.iter().map(|e| e.version.get()).collect()
    }

    /// A read ahead of `range` (more to come) kept after a poll read up to its start.
    fn kept(range: std::ops::Range<u64>, more: bool) -> ReadAhead {
        let ahead = ReadAhead::default();
        let s = source();
        ahead.restart((7, &s), &nothing_at(range.start));
        let refill = ahead.due().unwrap();
        assert_eq!(refill.from, range.start);
        ahead.filled(refill, Some(page_of(range, !more)));
        ahead
    }

    #[test]
    fn a_poll_takes_the_events_read_ahead_in_order_and_the_next_one_goes_on_from_there() {
        let ahead = kept(1..301, true);
        let s = source();
        let first = ahead.take((7, &s), 1, 100).page();
        assert_eq!(versions(&first), (1..101).collect::<Vec<_>>());
        assert_eq!((first.next, first.caught_up), (101, false));
        let second = ahead.take((7, &s), 101, 100).page();
        assert_eq!(versions(&second), (101..201).collect::<Vec<_>>());
        // Fewer kept than asked for while the source has more: the poll reads the store.
        assert!(ahead.take((7, &s), 201, 200).is_store());
        // Below half a page kept: the next page is due, from where the last read ended.
        assert_eq!(ahead.due().unwrap().from, 301);
        assert!(ahead.due().is_none(), "one read ahead at a time");
        // Now the read under way brings the rest: the poll waits for it.
        assert!(matches!(ahead.take((7, &s), 201, 200), Take::Wait));
    }

    #[test]
    fn at_the_sources_end_a_poll_takes_what_is_kept_and_no_read_ahead_is_due() {
        let ahead = kept(1..51, false);
        let s = source();
        let page = ahead.take((7, &s), 1, 100).page();
        assert_eq!(versions(&page), (1..51).collect::<Vec<_>>());
        assert_eq!(page.next, 51);
        assert!(!page.caught_up, "the source may have grown since the read");
        assert!(ahead.due().is_none());
        assert!(
            ahead.take((7, &s), 51, 100).is_store(),
            "nothing kept past the read"
        );
    }

    #[test]
    fn another_incarnation_a_gap_or_an_earlier_offset_reads_the_store() {
        let ahead = kept(10..400, true);
        let s = source();
        let other = Source::Stream(StreamName::new("order-2").unwrap());
        assert!(
            ahead.take((8, &s), 10, 10).is_store(),
            "a group deleted and created again"
        );
        assert!(ahead.take((7, &other), 10, 10).is_store());
        assert!(
            ahead.take((7, &s), 9, 10).is_store(),
            "before what was read ahead"
        );
        // A poll further on (the state moved past events taken elsewhere) skips to it.
        let skipped = ahead.take((7, &s), 50, 10).page();
        assert_eq!(versions(&skipped), (50..60).collect::<Vec<_>>());
        assert!(
            ahead.take((7, &s), 400, 10).is_store(),
            "past what was read ahead"
        );
    }

    #[test]
    fn a_read_ahead_begun_before_a_poll_read_the_store_is_not_kept() {
        let ahead = ReadAhead::default();
        let s = source();
        ahead.restart((7, &s), &nothing_at(1));
        let stale = ahead.due().unwrap();
        ahead.restart((7, &s), &nothing_at(1));
        ahead.filled(stale, Some(page_of(1..11, false)));
        assert!(ahead.take((7, &s), 1, 5).is_store());
        // The read after the restart is kept.
        let fresh = ahead.due().unwrap();
        ahead.filled(fresh, Some(page_of(1..11, false)));
        assert_eq!(versions(&ahead.take((7, &s), 1, 5).page()), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn events_read_ahead_are_not_handed_out_once_stale() {
        let ahead = kept(1..11, true);
        let s = source();
        ahead.inner.lock().unwrap().read_at = Instant::now().checked_sub(FRESH_FOR * 2);
        assert!(ahead.take((7, &s), 1, 5).is_store());
    }

    #[test]
    fn a_failed_read_ahead_keeps_nothing_and_stops_reading_ahead() {
        let ahead = ReadAhead::default();
        let s = source();
        ahead.restart((7, &s), &nothing_at(1));
        let refill = ahead.due().unwrap();
        ahead.filled(refill, None);
        assert!(ahead.due().is_none());
        assert!(ahead.take((7, &s), 1, 1).is_store());
    }
}
