//! Catch-up-then-live subscriptions, written once for every backend.
//!
//! A subscription is a cursor over the global log (or one stream). It reads pages from
//! the cursor until it reaches the head, then waits for the head to move past what it has
//! read and reads again. Positions are gap-free and assigned in commit order, so reading
//! by cursor can neither skip nor repeat an event, and the "switch" from catch-up to live
//! is not a special case at all: live is catch-up with a wait in between. The wait is on a
//! level (`head > p`), so a commit between the read and the wait is never missed.

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

/// How many events a subscription reads per round trip while catching up.
pub const SUBSCRIPTION_BATCH: usize = 500;

struct Cursor<S: ?Sized, K> {
    store: Arc<S>,
    key: K,
    buffer: VecDeque<RecordedEvent>,
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
                let page = c
                    .store
                    .read_all(c.key.next_from, &c.key.filter, SUBSCRIPTION_BATCH)
                    .await?;
                let caught_up = page.is_caught_up();
                c.key.next_from = c.key.next_from.max(page.next_from);
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
                // the stream read that follows already saw it.
                let head = c.store.head().await?;
                let events = c
                    .store
                    .read_stream(
                        &c.key.stream,
                        c.key.next_from,
                        Direction::Forward,
                        SUBSCRIPTION_BATCH,
                    )
                    .await?;
                if let Some(last) = events.last() {
                    c.key.next_from = last.version.next();
                }
                c.buffer.extend(events);
                if c.buffer.is_empty() {
                    c.store.wait_for_head(head).await?;
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
