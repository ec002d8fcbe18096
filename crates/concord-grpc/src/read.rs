//! `Streams.Read`: reads of a stream or of `$all` in either direction, and catch-up
//! subscriptions. Each call runs as a task that sends into a bounded channel, so a slow
//! reader holds the task back instead of the server buffering; a reader that goes away
//! ends the task at its next send or wait.
//!
//! Answers cross the channel a batch at a time (what one page of the store gave, or less
//! when its payloads are large), not one by one: a catch-up sends hundreds of thousands of
//! events, and a hand-off per event cost two wake-ups each, which left both cores idle
//! between them. A batch is sent when its page is done, before any wait for new events,
//! so a live subscriber gets each event as soon as the store has it.
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

/// How many batches a read may have waiting for its reader. With the payload bound below,
/// what a slow reader makes the server hold is a few MiB per call.
pub(crate) const BATCHES_AHEAD: usize = 2;

/// A batch is sent once its payloads (data and custom metadata) reach this many bytes,
/// even before its page is done.
const BATCH_BYTES: usize = 1 << 20;

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

/// Answers in the order the reader gets them.
pub(crate) type Batch = Vec<Result<ReadResp, Status>>;

type Sender = mpsc::Sender<Batch>;

/// The reader went away.
struct Gone;

struct Reader {
    store: Arc<dyn EventStore>,
    tx: Sender,
    uuid_as_string: bool,
    /// Answers not sent yet, and the payload bytes among them.
    batch: Batch,
    batch_bytes: usize,
}

impl Reader {
    /// Adds `content` to the batch.
    fn push(&mut self, content: read_resp::Content) {
        self.batch.push(Ok(ReadResp {
            content: Some(content),
        }));
    }

    /// Sends `content` with whatever the batch holds.
    async fn send(&mut self, content: read_resp::Content) -> Result<(), Gone> {
        self.push(content);
        self.flush().await
    }

    /// Adds `event` to the batch, which is sent once its payloads are large.
    async fn event(&mut self, event: &RecordedEvent) -> Result<(), Gone> {
        let answer = convert::read_event(event, self.uuid_as_string);
        if let Some(e) = &answer.event {
            self.batch_bytes += e.data.len() + e.custom_metadata.len();
        }
        self.push(read_resp::Content::Event(answer));
        if self.batch_bytes >= BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the batch (at the end of each page of the store, and before any wait).
    async fn flush(&mut self) -> Result<(), Gone> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        // A fresh batch grows as it fills: a live subscriber's batches hold an event or two,
        // and a page's worth reserved for each (500 answers of 352 bytes) was 172 KiB each.
        let batch = std::mem::take(&mut self.batch);
        self.tx.send(batch).await.map_err(|_| Gone)
    }

    /// Sends the batch, then waits for the head to move beyond `after`, or for the
    /// reader to go away.
    async fn wait(&mut self, after: Position) -> Result<Result<Position, GrpcError>, Gone> {
        self.flush().await?;
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
    let mut reader = Reader {
        store,
        tx,
        uuid_as_string: plan.uuid_as_string,
        batch: Vec::new(),
        batch_bytes: 0,
    };
    let r = &mut reader;
    let outcome = match (&plan.source, plan.count) {
        (Source::Stream(stream, from), Some(count)) => {
            read_stream(r, stream, *from, plan.backwards, count).await
        }
        (Source::All(from), Some(count)) => {
            read_all(r, *from, plan.backwards, count, plan.filter.as_ref()).await
        }
        (Source::Metadata(stream, from), Some(count)) => {
            read_metadata(r, stream, *from, plan.backwards, count).await
        }
        (Source::Stream(stream, from), None) => subscribe_stream(r, stream, *from).await,
        (Source::Metadata(..), None) => Ok(Err(GrpcError::Invalid(
            "a subscription to a metadata stream is not supported".to_owned(),
        ))),
        (Source::All(from), None) => subscribe_all(r, *from, plan.filter.as_ref()).await,
    };
    // The events read before a failure go first, then its status ends the call.
    if let Ok(Err(e)) = outcome {
        reader.batch.push(Err(Status::from(e)));
    }
    let _ = reader.flush().await;
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
    r: &mut Reader,
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
        r.flush().await?;
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
    r: &mut Reader,
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
    r: &mut Reader,
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
            r.flush().await?;
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
        r.flush().await?;
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

async fn subscribe_stream(r: &mut Reader, stream: &StreamName, from: StreamFrom) -> Outcome {
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
            r.flush().await?;
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

async fn subscribe_all(r: &mut Reader, from: AllFrom, filter: Option<&EventFilter>) -> Outcome {
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
                        r.push(read_resp::Content::Checkpoint(read_resp::Checkpoint {
                            commit_position: p,
                            prepare_position: p,
                            timestamp: Some(now()),
                        }));
                    }
                }
            }
        }
        r.flush().await?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use concord_core::{AppendRequest, ExpectedVersion, MemoryStore, NewEvent};

    /// A store holding `n` events of `payload_bytes` bytes each, on one stream.
    async fn store_of(n: usize, payload_bytes: usize) -> Arc<dyn EventStore> {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let stream = StreamName::new("account-1").unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let events = chunk
                .iter()
                .map(|_| {
                    NewEvent::bytes(
                        "Deposited",
                        "application/octet-stream",
                        vec![7; payload_bytes],
                    )
                    .unwrap()
                })
                .collect();
            let request = AppendRequest::new(stream.clone(), ExpectedVersion::Any, events);
            assert!(!store.append(request).await.unwrap().is_duplicate());
        }
        store
    }

    /// `$all` from its start: a read of `count` events, or (`None`) a subscription.
    fn all_from_start(count: Option<u64>) -> ReadPlan {
        ReadPlan {
            source: Source::All(AllFrom::Start),
            backwards: false,
            count,
            filter: None,
            uuid_as_string: true,
        }
    }

    /// Runs a read of `count` events of `$all` from its start; the batches it sent.
    async fn batches(store: Arc<dyn EventStore>, count: u64) -> Vec<Batch> {
        let (tx, mut rx) = mpsc::channel(BATCHES_AHEAD);
        let reading = tokio::spawn(run(store, all_from_start(Some(count)), tx));
        let mut out = Vec::new();
        while let Some(batch) = rx.recv().await {
            out.push(batch);
        }
        reading.await.unwrap();
        out
    }

    fn event(answer: &Result<ReadResp, Status>) -> &read_resp::read_event::RecordedEvent {
        match &answer.as_ref().unwrap().content {
            Some(read_resp::Content::Event(e)) => e.event.as_ref().unwrap(),
            other => panic!("not an event: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_read_of_all_sends_each_page_of_the_store_as_one_batch_in_position_order() {
        let store = store_of(1_200, 16).await;
        let sent = batches(store, 1_200).await;
        let sizes: Vec<usize> = sent.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![PAGE, PAGE, 200]);
        let positions: Vec<u64> = sent
            .iter()
            .flatten()
            .map(|a| event(a).commit_position)
            .collect();
        assert_eq!(positions, (1..=1_200).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn large_payloads_are_sent_in_batches_of_about_a_mebibyte() {
        let payload = 300 * 1024;
        let store = store_of(10, payload).await;
        let sent = batches(store, 10).await;
        let sizes: Vec<usize> = sent.iter().map(Vec::len).collect();
        // 4 × 300 KiB is the first batch to reach 1 MiB.
        assert_eq!(sizes, vec![4, 4, 2]);
        assert!(
            sent.iter()
                .flatten()
                .all(|a| event(a).data.len() == payload)
        );
    }

    #[tokio::test]
    async fn a_live_event_is_sent_without_waiting_for_a_full_batch() {
        let store = store_of(3, 16).await;
        let (tx, mut rx) = mpsc::channel(BATCHES_AHEAD);
        let subscription = tokio::spawn(run(Arc::clone(&store), all_from_start(None), tx));
        let mut seen = Vec::new();
        while !seen.iter().any(|a: &Result<ReadResp, Status>| {
            matches!(
                a.as_ref().unwrap().content,
                Some(read_resp::Content::CaughtUp(_))
            )
        }) {
            seen.extend(rx.recv().await.unwrap());
        }
        let live = NewEvent::json("Deposited", &serde_json::json!({"amount": 5})).unwrap();
        let request = AppendRequest::new(
            StreamName::new("account-2").unwrap(),
            ExpectedVersion::NoStream,
            vec![live],
        );
        assert!(!store.append(request).await.unwrap().is_duplicate());
        let next = rx.recv().await.unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(event(&next[0]).commit_position, 4);
        subscription.abort();
    }
}
