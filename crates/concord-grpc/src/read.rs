//! `Streams.Read`: reads of a stream or of `$all` in either direction, and catch-up
//! subscriptions. Each call runs as a task that sends into a bounded channel, so a slow
//! reader holds the task back instead of the server buffering; a reader that goes away
//! ends the task at its next send or wait.
//!
//! Positions: `$all` forwards from P includes P, backwards from P excludes it, a
//! subscription from P starts after it (as KurrentDB). Stream reads from revision n include
//! it both ways; a stream subscription from n starts after it.

use std::sync::Arc;
use std::time::SystemTime;

use concord_core::{Direction, EventStore, Filter, Position, RecordedEvent, StreamName, Version};
use tokio::sync::mpsc;
use tonic::Status;

use crate::convert::{self, stream_identifier};
use crate::error::GrpcError;
use crate::filter::EventFilter;
use crate::metastream;
use crate::proto::event_store::client::streams::{ReadResp, read_resp};

/// Events read from the store at a time.
const PAGE: usize = 500;

#[derive(Clone, Copy, Debug)]
pub(crate) enum StreamFrom {
    Start,
    End,
    Revision(u64),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum AllFrom {
    Start,
    End,
    Position(u64),
}

#[derive(Debug)]
pub(crate) enum Source {
    Stream(StreamName, StreamFrom),
    /// The metadata stream (`$$name`) of the stream; never a subscription.
    Metadata(StreamName, StreamFrom),
    All(AllFrom),
}

/// A validated read request.
#[derive(Debug)]
pub(crate) struct ReadPlan {
    pub(crate) source: Source,
    pub(crate) backwards: bool,
    /// `None`: a subscription.
    pub(crate) count: Option<u64>,
    pub(crate) filter: Option<EventFilter>,
    pub(crate) uuid_as_string: bool,
}

type Sender = mpsc::Sender<Result<ReadResp, Status>>;

/// The reader went away.
struct Gone;

struct Reader {
    store: Arc<dyn EventStore>,
    tx: Sender,
    uuid_as_string: bool,
}

impl Reader {
    async fn send(&self, content: read_resp::Content) -> Result<(), Gone> {
        self.tx
            .send(Ok(ReadResp {
                content: Some(content),
            }))
            .await
            .map_err(|_| Gone)
    }

    async fn event(&self, event: &RecordedEvent) -> Result<(), Gone> {
        self.send(read_resp::Content::Event(convert::read_event(
            event,
            self.uuid_as_string,
        )))
        .await
    }

    /// Waits for the head to move beyond `after`, or for the reader to go away.
    async fn wait(&self, after: Position) -> Result<Result<Position, GrpcError>, Gone> {
        tokio::select! {
            head = self.store.wait_for_head(after) => Ok(head.map_err(GrpcError::from)),
            () = self.tx.closed() => Err(Gone),
        }
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// Runs `plan`, sending its answers into `tx`; a failure ends the call with its status.
pub(crate) async fn run(store: Arc<dyn EventStore>, plan: ReadPlan, tx: Sender) {
    let reader = Reader {
        store,
        tx,
        uuid_as_string: plan.uuid_as_string,
    };
    let outcome = match (&plan.source, plan.count) {
        (Source::Stream(stream, from), Some(count)) => {
            read_stream(&reader, stream, *from, plan.backwards, count).await
        }
        (Source::All(from), Some(count)) => {
            read_all(&reader, *from, plan.backwards, count, plan.filter.as_ref()).await
        }
        (Source::Metadata(stream, from), Some(count)) => {
            read_metadata(&reader, stream, *from, plan.backwards, count).await
        }
        (Source::Stream(stream, from), None) => subscribe_stream(&reader, stream, *from).await,
        (Source::Metadata(..), None) => Ok(Err(GrpcError::Invalid(
            "a subscription to a metadata stream is not supported".to_owned(),
        ))),
        (Source::All(from), None) => subscribe_all(&reader, *from, plan.filter.as_ref()).await,
    };
    if let Ok(Err(e)) = outcome {
        let _ = reader.tx.send(Err(Status::from(e))).await;
    }
}

type Outcome = Result<Result<(), GrpcError>, Gone>;

macro_rules! store {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(GrpcError::from(e))),
        }
    };
}

fn page_of(remaining: u64) -> usize {
    usize::try_from(remaining).unwrap_or(usize::MAX).min(PAGE)
}

async fn read_stream(
    r: &Reader,
    stream: &StreamName,
    from: StreamFrom,
    backwards: bool,
    count: u64,
) -> Outcome {
    let version = store!(r.store.stream_version(stream).await);
    if version == Version::NONE {
        r.send(read_resp::Content::StreamNotFound(
            read_resp::StreamNotFound {
                stream_identifier: Some(stream_identifier(stream)),
            },
        ))
        .await?;
        return Ok(Ok(()));
    }
    let mut remaining = count;
    let direction = if backwards {
        Direction::Backward
    } else {
        Direction::Forward
    };
    let mut next = match from {
        StreamFrom::Start => Version(1),
        StreamFrom::Revision(n) => Version(n.saturating_add(1)),
        StreamFrom::End if backwards => Version::MAX,
        StreamFrom::End => return Ok(Ok(())),
    };
    while remaining > 0 {
        let events = store!(
            r.store
                .read_stream(stream, next, direction, page_of(remaining))
                .await
        );
        let Some(last) = events.last().map(|e| e.version) else {
            break;
        };
        for event in &events {
            r.event(event).await?;
        }
        remaining = remaining.saturating_sub(events.len() as u64);
        next = if backwards {
            match last.get().checked_sub(1) {
                Some(0) | None => break,
                Some(v) => Version(v),
            }
        } else {
            last.next()
        };
    }
    Ok(Ok(()))
}

/// A read of a metadata stream, which holds one event (revision 0) while any setting is
/// stored: forwards it is shown from the start or revision 0, backwards from anywhere.
async fn read_metadata(
    r: &Reader,
    stream: &StreamName,
    from: StreamFrom,
    backwards: bool,
    count: u64,
) -> Outcome {
    let Some(event) = store!(metastream::read(r.store.as_ref(), stream, r.uuid_as_string).await)
    else {
        r.send(read_resp::Content::StreamNotFound(
            read_resp::StreamNotFound {
                stream_identifier: Some(metastream::identifier(stream)),
            },
        ))
        .await?;
        return Ok(Ok(()));
    };
    let shown = backwards || matches!(from, StreamFrom::Start | StreamFrom::Revision(0));
    if shown && count > 0 {
        r.send(read_resp::Content::Event(event)).await?;
    }
    Ok(Ok(()))
}

/// The events at positions `lo..upper` (in order), read forwards.
async fn read_range(
    r: &Reader,
    lo: Position,
    upper: Position,
) -> Result<Vec<RecordedEvent>, concord_core::StoreError> {
    let mut out = Vec::new();
    let mut from = lo;
    while from < upper {
        let want = page_of(upper.get() - from.get());
        let page = r.store.read_all(from, &Filter::all(), want).await?;
        let (done, next_from) = (page.is_caught_up(), page.next_from);
        out.extend(page.events.into_iter().filter(|e| e.position < upper));
        if done || next_from <= from {
            break;
        }
        from = next_from;
    }
    Ok(out)
}

async fn read_all(
    r: &Reader,
    from: AllFrom,
    backwards: bool,
    count: u64,
    filter: Option<&EventFilter>,
) -> Outcome {
    let passes = |e: &RecordedEvent| filter.is_none_or(|f| f.matches(e));
    let mut remaining = count;
    if backwards {
        let head = store!(r.store.head().await);
        let mut upper = match from {
            AllFrom::Start => return Ok(Ok(())),
            AllFrom::End => head.next(),
            AllFrom::Position(p) => Position(p).min(head.next()),
        };
        while remaining > 0 && upper > Position::FIRST {
            let lo = Position(upper.get().saturating_sub(PAGE as u64).max(1));
            let events = store!(read_range(r, lo, upper).await);
            for event in events.iter().rev().filter(|e| passes(e)) {
                if remaining == 0 {
                    break;
                }
                r.event(event).await?;
                remaining -= 1;
            }
            upper = lo;
        }
        return Ok(Ok(()));
    }
    let mut next = match from {
        AllFrom::Start => Position::FIRST,
        AllFrom::Position(p) => Position(p).max(Position::FIRST),
        AllFrom::End => return Ok(Ok(())),
    };
    while remaining > 0 {
        let page = store!(r.store.read_all(next, &Filter::all(), PAGE).await);
        for event in page.events.iter().filter(|e| passes(e)) {
            if remaining == 0 {
                break;
            }
            r.event(event).await?;
            remaining -= 1;
        }
        if page.is_caught_up() || page.next_from <= next {
            break;
        }
        next = page.next_from;
    }
    Ok(Ok(()))
}

fn confirmation() -> read_resp::Content {
    read_resp::Content::Confirmation(read_resp::SubscriptionConfirmation {
        subscription_id: uuid::Uuid::new_v4().to_string(),
    })
}

async fn subscribe_stream(r: &Reader, stream: &StreamName, from: StreamFrom) -> Outcome {
    r.send(confirmation()).await?;
    let mut next = match from {
        StreamFrom::Start => Version(1),
        StreamFrom::Revision(n) => Version(n.saturating_add(2)),
        StreamFrom::End => store!(r.store.stream_version(stream).await).next(),
    };
    let mut caught_up = false;
    let mut head = store!(r.store.head().await);
    loop {
        // Every event at or before `head` is readable now: read them all, then wait.
        loop {
            let events = store!(
                r.store
                    .read_stream(stream, next, Direction::Forward, PAGE)
                    .await
            );
            let Some(last) = events.last().map(|e| e.version) else {
                break;
            };
            for event in &events {
                r.event(event).await?;
            }
            next = last.next();
        }
        if !caught_up {
            caught_up = true;
            r.send(read_resp::Content::CaughtUp(read_resp::CaughtUp {
                timestamp: Some(now()),
                stream_revision: next
                    .get()
                    .checked_sub(2)
                    .and_then(|v| i64::try_from(v).ok()),
                position: None,
            }))
            .await?;
        }
        head = match r.wait(head).await? {
            Ok(h) => h.max(head),
            Err(e) => return Ok(Err(e)),
        };
    }
}

async fn subscribe_all(r: &Reader, from: AllFrom, filter: Option<&EventFilter>) -> Outcome {
    r.send(confirmation()).await?;
    let mut next = match from {
        AllFrom::Start => Position::FIRST,
        AllFrom::Position(p) => Position(p.saturating_add(1)),
        AllFrom::End => store!(r.store.head().await).next(),
    };
    let mut caught_up = false;
    let mut considered: u64 = 0;
    loop {
        let page = store!(r.store.read_all(next, &Filter::all(), PAGE).await);
        for event in &page.events {
            match filter {
                None => r.event(event).await?,
                Some(f) => {
                    if f.matches(event) {
                        r.event(event).await?;
                    }
                    considered += 1;
                    if considered >= f.checkpoint_every {
                        considered = 0;
                        let p = event.position.get();
                        r.send(read_resp::Content::Checkpoint(read_resp::Checkpoint {
                            commit_position: p,
                            prepare_position: p,
                            timestamp: Some(now()),
                        }))
                        .await?;
                    }
                }
            }
        }
        let head = page.head;
        next = page.next_from.max(next);
        if !page.is_caught_up() {
            continue;
        }
        if !caught_up {
            caught_up = true;
            let at = next.get().saturating_sub(1);
            r.send(read_resp::Content::CaughtUp(read_resp::CaughtUp {
                timestamp: Some(now()),
                stream_revision: None,
                position: Some(read_resp::Position {
                    commit_position: at,
                    prepare_position: at,
                }),
            }))
            .await?;
        }
        if let Err(e) = r.wait(head).await? {
            return Ok(Err(e));
        }
    }
}
