//! Catch-up-then-live subscriptions, written once for every backend.
//!
//! A subscription is a cursor over the global log (or one stream). It reads pages from
//! the cursor until it reaches the head, then waits for the head to move past what it has
//! read and reads again. Positions are gap-free and assigned in commit order, so reading
//! by cursor can neither skip nor repeat an event, and the "switch" from catch-up to live
//! is not a special case at all: live is catch-up with a wait in between. The wait is on a
//! level (`head > p`), so a commit between the read and the wait is never missed.
//!
//! A subscription holds at most [`SUBSCRIPTION_BUFFER_BYTES`] of events read ahead of its
//! consumer: it sizes each read by the largest event of the previous one, and leaves what
//! does not fit for the next read.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt};

use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::names::StreamName;
use crate::query::Filter;
use crate::store::{Direction, EventStore};
use crate::version::{Position, Version};

/// Events in order, stored then live; ends after the first error.
pub type Subscription = BoxStream<'static, Result<RecordedEvent, StoreError>>;

/// How many events a subscription reads per round trip while catching up, at most.
pub const SUBSCRIPTION_BATCH: usize = 500;

/// How many bytes of events a subscription holds read ahead of its consumer, at most (plus
/// one event, when a single event is larger). A consumer that stops reading (a stalled SSE
/// client) costs this much, whatever the size of the events: 500 events of 1 MiB each would
/// otherwise be held per stalled subscriber.
pub const SUBSCRIPTION_BUFFER_BYTES: usize = 1024 * 1024;

/// What a held event costs besides its data and metadata (its stream name, type, tags and
/// the struct), so that many small events are bounded too.
const EVENT_OVERHEAD_BYTES: usize = 256;

/// The events a subscription asks for in its first read, before it knows their size.
const FIRST_READ: usize = 64;

fn held_bytes(event: &RecordedEvent) -> usize {
    event.data.len() + event.metadata.len() + EVENT_OVERHEAD_BYTES
}

/// Keeps the leading events of `page` that fit in [`SUBSCRIPTION_BUFFER_BYTES`] (at least
/// one) and drops the rest, which the next read fetches again. Returns the first dropped
/// event, if any.
fn keep_within_budget(page: &mut Vec<RecordedEvent>) -> Option<RecordedEvent> {
    let mut bytes = 0usize;
    let keep = page
        .iter()
        .position(|e| {
            bytes = bytes.saturating_add(held_bytes(e));
            bytes > SUBSCRIPTION_BUFFER_BYTES
        })
        .map_or(page.len(), |i| i.max(1));
    let mut dropped = page.split_off(keep.min(page.len()));
    if dropped.is_empty() {
        None
    } else {
        Some(dropped.swap_remove(0))
    }
}

/// How many events to ask for next: as many as fit in the budget at the size of the largest
/// event of the last page, between 1 and [`SUBSCRIPTION_BATCH`].
fn next_read(page: &[RecordedEvent], current: usize) -> usize {
    match page.iter().map(held_bytes).max() {
        Some(largest) => (SUBSCRIPTION_BUFFER_BYTES / largest).clamp(1, SUBSCRIPTION_BATCH),
        None => current,
    }
}

struct Cursor<S: ?Sized, K> {
    store: Arc<S>,
    key: K,
    buffer: VecDeque<RecordedEvent>,
    /// How many events the next read asks for (see [`next_read`]).
    read: usize,
    failed: bool,
}

struct AllKey {
    next_from: Position,
    filter: Filter,
}

struct StreamKey {
    stream: StreamName,
    next_from: Version,
}

/// Subscribes to the global log from `from` (inclusive) through `filter`.
pub fn all<S: EventStore + ?Sized>(store: Arc<S>, from: Position, filter: Filter) -> Subscription {
    let cursor = Cursor {
        store,
        key: AllKey {
            next_from: from.max(Position::FIRST),
            filter,
        },
        buffer: VecDeque::new(),
        read: FIRST_READ,
        failed: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.buffer.pop_front() {
                return Some((Ok(e), c));
            }
            if c.failed {
                return None;
            }
            let step = async {
                let mut page = c
                    .store
                    .read_all(c.key.next_from, &c.key.filter, c.read)
                    .await?;
                c.read = next_read(&page.events, c.read);
                let mut caught_up = page.is_caught_up();
                match keep_within_budget(&mut page.events) {
                    Some(first_dropped) => {
                        caught_up = false;
                        c.key.next_from = first_dropped.position;
                    }
                    None => c.key.next_from = c.key.next_from.max(page.next_from),
                }
                c.buffer.extend(page.events);
                if c.buffer.is_empty() && caught_up {
                    c.store
                        .wait_for_head(Position(c.key.next_from.get().saturating_sub(1)))
                        .await?;
                }
                Ok::<(), StoreError>(())
            };
            if let Err(e) = step.await {
                c.failed = true;
                return Some((Err(e), c));
            }
        }
    })
    .boxed()
}

/// Subscribes to one stream from version `from` (inclusive).
pub fn stream<S: EventStore + ?Sized>(
    store: Arc<S>,
    stream: StreamName,
    from: Version,
) -> Subscription {
    let cursor = Cursor {
        store,
        key: StreamKey {
            stream,
            next_from: from.max(Version(1)),
        },
        buffer: VecDeque::new(),
        read: FIRST_READ,
        failed: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.buffer.pop_front() {
                return Some((Ok(e), c));
            }
            if c.failed {
                return None;
            }
            let step = async {
                // Head first: any commit after this read wakes the wait below, whether or not
                // the stream read that follows already saw it. The wait is begun (polled
                // once) before the read too, so a tombstone between the read and the wait
                // still wakes it (see `HeadSignal::touch`).
                let head = c.store.head().await?;
                let mut wait = c.store.wait_for_head(head);
                let woken = futures::poll!(&mut wait);
                let mut events = c
                    .store
                    .read_stream(&c.key.stream, c.key.next_from, Direction::Forward, c.read)
                    .await?;
                c.read = next_read(&events, c.read);
                keep_within_budget(&mut events);
                if let Some(last) = events.last() {
                    c.key.next_from = last.version.next();
                }
                c.buffer.extend(events);
                if c.buffer.is_empty() {
                    match woken {
                        std::task::Poll::Ready(woken) => {
                            woken?;
                        }
                        std::task::Poll::Pending => {
                            wait.await?;
                        }
                    }
                }
                Ok::<(), StoreError>(())
            };
            if let Err(e) = step.await {
                c.failed = true;
                return Some((Err(e), c));
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::doc;
    use crate::event::{Json, NewEvent};
    use crate::{AppendRequest, ExpectedVersion, MemoryStore};

    fn sized(n: usize, bytes: usize) -> Vec<RecordedEvent> {
        (1..=n as u64)
            .map(|p| {
                let mut e = doc::recorded("doc-1", p, p, "Edited", &[]);
                e.data = Json::from_value(&serde_json::Value::String("x".repeat(bytes))).into();
                e
            })
            .collect()
    }

    #[test]
    fn a_page_is_cut_to_the_byte_budget_but_keeps_at_least_one_event() {
        let mut page = sized(10, 300 * 1024);
        let first_dropped = keep_within_budget(&mut page).unwrap();
        assert_eq!(page.len(), 3);
        assert_eq!(first_dropped.position.get(), 4);
        let mut huge = sized(2, 3 * 1024 * 1024);
        assert_eq!(keep_within_budget(&mut huge).unwrap().position.get(), 2);
        assert_eq!(huge.len(), 1);
        let mut small = sized(500, 100);
        assert!(keep_within_budget(&mut small).is_none());
        assert_eq!(small.len(), 500);
    }

    #[test]
    fn reads_are_sized_by_the_largest_event_seen() {
        assert_eq!(next_read(&sized(3, 300 * 1024), FIRST_READ), 3);
        assert_eq!(next_read(&sized(3, 100), FIRST_READ), SUBSCRIPTION_BATCH);
        assert_eq!(next_read(&sized(1, 4 * 1024 * 1024), FIRST_READ), 1);
        assert_eq!(next_read(&[], 7), 7);
    }

    /// Records the `limit` of every read, to see how far ahead a subscription reads.
    #[derive(Debug)]
    struct Recording {
        inner: MemoryStore,
        limits: std::sync::Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl EventStore for Recording {
        fn backend(&self) -> &'static str {
            "recording"
        }
        async fn append(&self, request: AppendRequest) -> Result<crate::AppendOutcome, StoreError> {
            self.inner.append(request).await
        }
        async fn append_multi(
            &self,
            request: crate::MultiAppendRequest,
        ) -> Result<crate::MultiAppendOutcome, StoreError> {
            self.inner.append_multi(request).await
        }
        async fn read_stream(
            &self,
            s: &StreamName,
            from: Version,
            direction: Direction,
            limit: usize,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.limits.lock().unwrap().push(limit);
            self.inner.read_stream(s, from, direction, limit).await
        }
        async fn read_all(
            &self,
            from: Position,
            filter: &crate::Filter,
            limit: usize,
        ) -> Result<crate::AllPage, StoreError> {
            self.limits.lock().unwrap().push(limit);
            self.inner.read_all(from, filter, limit).await
        }
        async fn stream_version(&self, s: &StreamName) -> Result<Version, StoreError> {
            self.inner.stream_version(s).await
        }
        async fn list_streams(
            &self,
            prefix: &str,
            after: Option<&StreamName>,
            limit: usize,
        ) -> Result<Vec<crate::StreamInfo>, StoreError> {
            self.inner.list_streams(prefix, after, limit).await
        }
        async fn head(&self) -> Result<Position, StoreError> {
            self.inner.head().await
        }
        async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
            self.inner.wait_for_head(after).await
        }
    }

    /// A subscriber that reads slowly is never more than the byte budget ahead: after the
    /// first read (sized before any event was seen), every read asks for no more events of
    /// 200 KiB than fit in 1 MiB, and every event still arrives once, in order.
    #[test]
    fn a_subscription_of_large_events_reads_at_most_its_byte_budget_ahead() {
        futures::executor::block_on(async {
            let store = Arc::new(Recording {
                inner: MemoryStore::new(),
                limits: std::sync::Mutex::new(Vec::new()),
            });
            let big = "y".repeat(200 * 1024);
            for _ in 0..4 {
                let events = (0..10)
                    .map(|_| NewEvent::json("Edited", &serde_json::json!({ "text": big })).unwrap())
                    .collect();
                let _ = store
                    .append(AppendRequest::new(
                        doc::stream("doc-1"),
                        ExpectedVersion::Any,
                        events,
                    ))
                    .await
                    .unwrap();
            }
            let subscriptions: [Subscription; 2] = [
                all(Arc::clone(&store), Position(1), crate::Filter::all()),
                stream(Arc::clone(&store), doc::stream("doc-1"), Version(1)),
            ];
            for mut sub in subscriptions {
                store.limits.lock().unwrap().clear();
                let mut seen = Vec::new();
                while seen.len() < 40 {
                    let e = sub.next().await.unwrap().unwrap();
                    seen.push(e.position.get());
                }
                assert_eq!(seen, (1..=40).collect::<Vec<_>>());
                let limits = store.limits.lock().unwrap().clone();
                assert_eq!(limits.first(), Some(&FIRST_READ));
                assert!(limits.len() > 2, "{limits:?}");
                assert!(limits[1..].iter().all(|&n| n <= 5), "{limits:?}");
            }
        });
    }
}
