//! The conformance suite: one async function per behaviour of the contract in API.md,
//! each taking a fresh, empty store. [`conformance_suite!`](crate::conformance_suite)
//! expands to one named `#[tokio::test]` per spec, so a failure names the behaviour.
//!
//! Use it in a backend's `tests/conformance.rs`:
//! ```text
//! async fn fresh() -> concord_testkit::TestStore { /* open an empty store */ }
//! concord_testkit::conformance_suite!(fresh);
//! ```
//!
//! Specs assume API.md's default limits. They use versions and counts well beyond 9 and
//! beyond 100 (a backend that parses numbers out of text, or stops at the first page of
//! concurrent events, fails here). Every wait is bounded by a timeout, so a broken backend
//! fails instead of hanging.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use concord_core::{
    AppendOutcome, AppendRequest, Category, Conflict, Direction, EventId, EventStore, EventType,
    ExpectedVersion, Filter, Json, MultiAppendRequest, NewEvent, Position, RecordedEvent,
    StoreError, StreamName, Subscription, Tag, Version,
};
use futures::StreamExt;
use serde_json::json;

use crate::scale;

mod cross_stream;
mod limits;
pub use cross_stream::*;
pub use limits::*;
mod payloads;
pub use payloads::*;
mod lifecycle;
pub use lifecycle::*;
mod import;
pub use import::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// How long any single wait on a store may take before the spec fails.
const WAIT: Duration = Duration::from_secs(30);

fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

fn ty(name: &str) -> EventType {
    EventType::new(name).unwrap()
}

fn tag(name: &str) -> Tag {
    Tag::new(name).unwrap()
}

fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::new(ty(event_type), Json::from_value(&data))
}

fn tagged(event_type: &str, tags: &[&str]) -> NewEvent {
    event(event_type, json!({})).with_tags(tags.iter().map(|t| tag(t)).collect())
}

fn deposits(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event("Deposited", json!({"amount": i + 1})))
        .collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.get()).collect()
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position.get()).collect()
}

fn ids(events: &[RecordedEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

async fn append(
    store: &Arc<dyn EventStore>,
    s: &StreamName,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AppendOutcome, StoreError> {
    store
        .append(AppendRequest::new(s.clone(), expected, events))
        .await
}

/// Appends `n` deposits to `s` with `Any`, in appends of at most 1000 events.
async fn seed(store: &Arc<dyn EventStore>, s: &StreamName, n: usize) {
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        write(store, s, ExpectedVersion::Any, deposits(k)).await;
        left -= k;
    }
}

/// Appends and expects success; returns where the events landed.
async fn write(
    store: &Arc<dyn EventStore>,
    s: &StreamName,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> concord_core::Appended {
    match append(store, s, expected, events).await {
        Ok(out) => out.appended().clone(),
        Err(e) => panic!("append to {s} under {expected} failed: {e}"),
    }
}

fn expect_conflict(result: Result<AppendOutcome, StoreError>) -> Conflict {
    match result {
        Err(StoreError::Conflict(c)) => *c,
        other => panic!("expected a version conflict, got {other:?}"),
    }
}

/// The whole stream, forward, in pages of the largest read.
async fn read_whole_stream(store: &Arc<dyn EventStore>, s: &StreamName) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut from = Version(1);
    loop {
        let page = store
            .read_stream(s, from, concord_core::Direction::Forward, 1000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        from = last.version.next();
        out.extend(page);
    }
    out
}

/// The whole global log through `filter`, following `next_from` with pages of `limit`,
/// checking the paging contract on the way.
async fn read_all_pages(
    store: &Arc<dyn EventStore>,
    filter: &Filter,
    limit: usize,
) -> Vec<RecordedEvent> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    let mut from = Position(1);
    for _ in 0..100_000 {
        let page = store.read_all(from, filter, limit).await.unwrap();
        assert!(
            page.events.len() <= limit,
            "a page of limit {limit} held {} events",
            page.events.len()
        );
        if let Some(last) = page.events.last() {
            assert!(
                page.next_from > last.position,
                "next_from {} is not after the page's last event",
                page.next_from
            );
        }
        assert!(
            page.events
                .windows(2)
                .all(|w| w[0].position < w[1].position),
            "a read_all page is not in strictly increasing position order (an event twice?): {:?}",
            positions(&page.events)
        );
        if let (Some(prev), Some(first)) = (out.last(), page.events.first()) {
            assert!(first.position > prev.position, "pages overlap or go back");
        }
        assert!(
            page.next_from >= from,
            "next_from went back from {from} to {}",
            page.next_from
        );
        out.extend(page.events.iter().cloned());
        if page.is_caught_up() {
            return out;
        }
        assert!(
            page.next_from > from || !page.events.is_empty(),
            "read_all made no progress from {from}"
        );
        from = page.next_from;
    }
    panic!("read_all never caught up");
}

async fn read_everything(store: &Arc<dyn EventStore>) -> Vec<RecordedEvent> {
    read_all_pages(store, &Filter::all(), 1000).await
}

/// Takes exactly `n` events from `sub`, failing after [`WAIT`].
async fn take(sub: &mut Subscription, n: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(n);
    let got = tokio::time::timeout(WAIT, async {
        while out.len() < n {
            match sub.next().await {
                Some(Ok(e)) => out.push(e),
                Some(Err(e)) => panic!("subscription failed after {} events: {e}", out.len()),
                None => panic!("subscription ended after {} of {n} events", out.len()),
            }
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "subscription delivered only {} of {n} events within {WAIT:?}",
        out.len()
    );
    out
}

/// What a store looks like from outside, to show that a rejected append wrote nothing.
async fn snapshot(
    store: &Arc<dyn EventStore>,
    streams: &[&StreamName],
) -> (Position, Vec<Version>, usize) {
    let head = store.head().await.unwrap();
    let mut vs = Vec::new();
    for s in streams {
        vs.push(store.stream_version(s).await.unwrap());
    }
    (head, vs, read_everything(store).await.len())
}

/// Sends `request` (to a stream that has events) and a copy of it to a new stream, and
/// checks that both are refused as `is_expected` says with nothing written.
async fn assert_rejected_with_nothing_written(
    store: &Arc<dyn EventStore>,
    events: Vec<NewEvent>,
    is_expected: fn(&StoreError) -> bool,
) {
    let existing = stream("account-1");
    let fresh = stream("account-2");
    write(store, &existing, ExpectedVersion::NoStream, deposits(3)).await;
    let before = snapshot(store, &[&existing, &fresh]).await;
    for (s, expected) in [
        (&existing, ExpectedVersion::Any),
        (&existing, ExpectedVersion::Exact(Version(3))),
        (&fresh, ExpectedVersion::NoStream),
    ] {
        let err = append(store, s, expected, events.clone())
            .await
            .expect_err("an invalid append was accepted");
        assert!(
            is_expected(&err),
            "unexpected error for an invalid append: {err:?}"
        );
    }
    assert_eq!(
        snapshot(store, &[&existing, &fresh]).await,
        before,
        "a rejected append changed the store"
    );
}

// ---------------------------------------------------------------------------------------
// Expected versions
// ---------------------------------------------------------------------------------------

/// An append with an exact expectation succeeds and the next one is at the next version.
pub async fn exact_expected_version_appends_in_order(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    let a = append(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![event(
            "AccountOpened",
            json!({"owner": "ann", "balance": 1000}),
        )],
    )
    .await
    .unwrap();
    assert_eq!(a.appended().first_version, Version(1));
    for v in 1..=12u64 {
        let b = append(&store, &s, ExpectedVersion::Exact(Version(v)), deposits(1))
            .await
            .unwrap();
        assert!(matches!(b, AppendOutcome::Appended(_)), "{b:?}");
        assert_eq!(b.appended().first_version, Version(v + 1));
        assert_eq!(b.appended().last_version, Version(v + 1));
    }
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(13));
}

/// `Exact(0)` means "the stream must not exist": it creates a stream.
pub async fn exact_zero_expected_version_creates_a_new_stream(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    let out = append(&store, &s, ExpectedVersion::Exact(Version(0)), deposits(2))
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Appended(_)), "{out:?}");
    assert_eq!(out.appended().first_version, Version(1));
    assert_eq!(out.appended().last_version, Version(2));
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(2));
}

/// `Exact(0)` on an existing stream conflicts and lists the stream's events.
pub async fn exact_zero_expected_version_conflicts_when_the_stream_exists(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    seed(&store, &s, 12).await;
    let c =
        expect_conflict(append(&store, &s, ExpectedVersion::Exact(Version(0)), deposits(1)).await);
    assert_eq!(c.stream, s);
    assert_eq!(c.expected, ExpectedVersion::Exact(Version(0)));
    assert_eq!(c.actual, Version(12));
    assert_eq!(versions(&c.concurrent_events), (1..=12).collect::<Vec<_>>());
    assert!(!c.truncated);
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(12));
}

/// A stale exact expectation conflicts and writes nothing.
pub async fn exact_expected_version_conflicts_when_stale(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 11).await;
    let head = store.head().await.unwrap();
    let c =
        expect_conflict(append(&store, &s, ExpectedVersion::Exact(Version(10)), deposits(3)).await);
    assert_eq!(c.expected, ExpectedVersion::Exact(Version(10)));
    assert_eq!(c.actual, Version(11));
    assert_eq!(versions(&c.concurrent_events), vec![11]);
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(11));
    assert_eq!(store.head().await.unwrap(), head);
}

/// An exact expectation ahead of the stream conflicts with no concurrent events: the
/// writer missed nothing, it claims events that do not exist.
pub async fn exact_expected_version_ahead_of_the_stream_conflicts_without_concurrent_events(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    seed(&store, &s, 12).await;
    for ahead in [13u64, 20, 1000] {
        let c = expect_conflict(
            append(
                &store,
                &s,
                ExpectedVersion::Exact(Version(ahead)),
                deposits(1),
            )
            .await,
        );
        assert_eq!(c.actual, Version(12));
        assert!(c.concurrent_events.is_empty(), "{:?}", c.concurrent_events);
        assert!(!c.truncated);
    }
    let missing = stream("account-2");
    let c = expect_conflict(
        append(
            &store,
            &missing,
            ExpectedVersion::Exact(Version(3)),
            deposits(1),
        )
        .await,
    );
    assert_eq!(c.actual, Version(0));
    assert!(c.concurrent_events.is_empty());
    assert_eq!(store.stream_version(&missing).await.unwrap(), Version(0));
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(12));
}

/// `NoStream` creates a stream.
pub async fn no_stream_expectation_creates_a_new_stream(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    let out = append(&store, &s, ExpectedVersion::NoStream, deposits(3))
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Appended(_)), "{out:?}");
    assert_eq!(out.appended().first_version, Version(1));
    assert_eq!(out.appended().last_version, Version(3));
}

/// `NoStream` on an existing stream conflicts, listing the stream's first events (the
/// first 100, flagged as truncated when there are more).
pub async fn no_stream_expectation_conflicts_with_the_streams_first_events(
    store: Arc<dyn EventStore>,
) {
    let small = stream("account-1");
    seed(&store, &small, 3).await;
    let c = expect_conflict(append(&store, &small, ExpectedVersion::NoStream, deposits(1)).await);
    assert_eq!(c.expected, ExpectedVersion::NoStream);
    assert_eq!(c.actual, Version(3));
    assert_eq!(versions(&c.concurrent_events), vec![1, 2, 3]);
    assert!(!c.truncated);

    let big = stream("account-2");
    seed(&store, &big, 130).await;
    let c = expect_conflict(append(&store, &big, ExpectedVersion::NoStream, deposits(1)).await);
    assert_eq!(c.actual, Version(130));
    assert_eq!(
        versions(&c.concurrent_events),
        (1..=100).collect::<Vec<_>>()
    );
    assert!(c.truncated);
    assert_eq!(store.stream_version(&big).await.unwrap(), Version(130));
}

/// `Exists` appends to an existing stream.
pub async fn exists_expectation_appends_to_an_existing_stream(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 14).await;
    let out = append(&store, &s, ExpectedVersion::Exists, deposits(2))
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Appended(_)), "{out:?}");
    assert_eq!(out.appended().first_version, Version(15));
    assert_eq!(out.appended().last_version, Version(16));
}

/// `Exists` on a missing stream conflicts with actual version 0 and nothing missed.
pub async fn exists_expectation_conflicts_on_a_missing_stream(store: Arc<dyn EventStore>) {
    let other = stream("account-1");
    seed(&store, &other, 2).await;
    let s = stream("account-2");
    let c = expect_conflict(append(&store, &s, ExpectedVersion::Exists, deposits(1)).await);
    assert_eq!(c.expected, ExpectedVersion::Exists);
    assert_eq!(c.actual, Version(0));
    assert!(c.concurrent_events.is_empty());
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(0));
    assert_eq!(store.head().await.unwrap(), Position(2));
}

/// `Any` appends whether or not the stream exists, and never conflicts.
pub async fn any_expectation_appends_whatever_the_stream_holds(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    let first = append(&store, &s, ExpectedVersion::Any, deposits(1))
        .await
        .unwrap();
    assert_eq!(first.appended().first_version, Version(1));
    for i in 2..=12u64 {
        let out = append(&store, &s, ExpectedVersion::Any, deposits(1))
            .await
            .unwrap();
        assert!(matches!(out, AppendOutcome::Appended(_)), "{out:?}");
        assert_eq!(out.appended().first_version, Version(i));
    }
}

// ---------------------------------------------------------------------------------------
// Atomic multi-event appends
// ---------------------------------------------------------------------------------------

/// The events of one append get consecutive versions and consecutive positions, and read
/// back as written.
pub async fn multi_event_append_gets_consecutive_versions_and_positions(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    let other = stream("account-2");
    seed(&store, &s, 10).await;
    seed(&store, &other, 5).await;
    let events: Vec<NewEvent> = (0..25)
        .map(|i| {
            event("Deposited", json!({"amount": i}))
                .with_metadata(Json::from_value(&json!({"actor": "ann"})))
                .with_tags(vec![tag("account:1")])
        })
        .collect();
    let out = append(
        &store,
        &s,
        ExpectedVersion::Exact(Version(10)),
        events.clone(),
    )
    .await
    .unwrap();
    let a = out.appended();
    assert_eq!(
        (a.first_version, a.last_version),
        (Version(11), Version(35))
    );
    assert_eq!(
        (a.first_position, a.last_position),
        (Position(16), Position(40))
    );
    let stored = read_whole_stream(&store, &s).await;
    let tail: Vec<&RecordedEvent> = stored.iter().filter(|e| e.version >= Version(11)).collect();
    assert_eq!(tail.len(), 25);
    for (i, (e, written)) in tail.iter().zip(&events).enumerate() {
        let i = i as u64;
        assert_eq!(e.version, Version(11 + i));
        assert_eq!(e.position, Position(16 + i));
        assert_eq!(e.id, written.id);
        assert_eq!(e.event_type, written.event_type);
        assert_eq!(e.data.to_value().unwrap(), written.data.to_value().unwrap());
        assert_eq!(e.metadata.to_value().unwrap(), json!({"actor": "ann"}));
        assert_eq!(e.tags, vec![tag("account:1")]);
        assert_eq!(e.stream, s);
    }
}

/// A multi-event append whose expectation fails writes none of its events.
pub async fn failed_multi_event_append_writes_nothing(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 12).await;
    let before = snapshot(&store, &[&s]).await;
    let c = expect_conflict(
        append(
            &store,
            &s,
            ExpectedVersion::Exact(Version(11)),
            deposits(50),
        )
        .await,
    );
    assert_eq!(c.actual, Version(12));
    assert_eq!(snapshot(&store, &[&s]).await, before);
}

/// Recorded events keep the data, metadata, type, id and tags that were written.
pub async fn recorded_events_keep_what_was_written(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    let data =
        json!({"owner": "Zoë 🦀", "balance": 1000, "nested": {"list": [1, 2.5, null, true, "x"]}});
    let written = event("AccountOpened", data.clone())
        .with_metadata(Json::from_value(
            &json!({"actor": "admin", "transfer": "t-1"}),
        ))
        .with_tags(vec![tag("account:1"), tag("owner:zoë")]);
    let scalar = event("Deposited", json!(42));
    write(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![written.clone(), scalar.clone()],
    )
    .await;
    let stored = read_whole_stream(&store, &s).await;
    assert_eq!(stored.len(), 2);
    let (first, second) = (&stored[0], &stored[1]);
    assert_eq!(first.id, written.id);
    assert_eq!(first.event_type.as_str(), "AccountOpened");
    assert_eq!(first.data.to_value().unwrap(), data);
    assert_eq!(
        first.metadata.to_value().unwrap(),
        json!({"actor": "admin", "transfer": "t-1"})
    );
    assert_eq!(first.tags, vec![tag("account:1"), tag("owner:zoë")]);
    assert_eq!(second.data.to_value().unwrap(), json!(42));
    assert!(second.tags.is_empty());
    assert_eq!(second.metadata.to_value().unwrap(), json!({}));
}

// ---------------------------------------------------------------------------------------
// Conflict details
// ---------------------------------------------------------------------------------------

/// A conflict names the actual version and lists the events after the expected one.
pub async fn conflict_reports_the_events_that_were_missed(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 15).await;
    seed(&store, &stream("account-2"), 3).await;
    write(
        &store,
        &s,
        ExpectedVersion::Exact(Version(15)),
        vec![event("Withdrawn", json!({"amount": 5}))],
    )
    .await;
    let c =
        expect_conflict(append(&store, &s, ExpectedVersion::Exact(Version(11)), deposits(1)).await);
    assert_eq!(c.stream, s);
    assert_eq!(c.expected, ExpectedVersion::Exact(Version(11)));
    assert_eq!(c.actual, Version(16));
    assert_eq!(versions(&c.concurrent_events), vec![12, 13, 14, 15, 16]);
    assert_eq!(positions(&c.concurrent_events), vec![12, 13, 14, 15, 19]);
    assert_eq!(
        c.concurrent_events.last().unwrap().event_type.as_str(),
        "Withdrawn"
    );
    assert!(c.concurrent_events.iter().all(|e| e.stream == s));
    assert!(!c.truncated);
    let stored = read_whole_stream(&store, &s).await;
    assert_eq!(ids(&c.concurrent_events), ids(&stored[11..]));
}

/// A conflict lists at most 100 concurrent events, the first ones, and says more exist.
pub async fn conflict_lists_the_first_100_concurrent_events_and_says_more_exist(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    seed(&store, &s, 250).await;
    let c =
        expect_conflict(append(&store, &s, ExpectedVersion::Exact(Version(20)), deposits(1)).await);
    assert_eq!(c.actual, Version(250));
    assert_eq!(
        versions(&c.concurrent_events),
        (21..=120).collect::<Vec<_>>()
    );
    assert!(c.truncated);
}

/// Exactly 100 concurrent events are all listed and not flagged as truncated.
pub async fn conflict_with_exactly_100_concurrent_events_is_not_truncated(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    seed(&store, &s, 105).await;
    let c =
        expect_conflict(append(&store, &s, ExpectedVersion::Exact(Version(5)), deposits(1)).await);
    assert_eq!(c.actual, Version(105));
    assert_eq!(
        versions(&c.concurrent_events),
        (6..=105).collect::<Vec<_>>()
    );
    assert!(!c.truncated);
    let c =
        expect_conflict(append(&store, &s, ExpectedVersion::Exact(Version(4)), deposits(1)).await);
    assert_eq!(
        versions(&c.concurrent_events),
        (5..=104).collect::<Vec<_>>()
    );
    assert!(c.truncated);
}

// ---------------------------------------------------------------------------------------
// Server-side rebase
// ---------------------------------------------------------------------------------------

/// With `rebase_unless` and a stale exact expectation, the events go after the current
/// version and the outcome reports what they were rebased over.
pub async fn rebase_appends_after_the_current_version_when_no_concurrent_event_is_listed(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    write(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![event(
            "AccountOpened",
            json!({"owner": "ann", "balance": 1000}),
        )],
    )
    .await;
    seed(&store, &s, 11).await;
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(Version(1)), deposits(2))
        .rebase_unless(vec![ty("AccountClosed")]);
    let out = store.append(request).await.unwrap();
    let AppendOutcome::Rebased {
        appended,
        expected_version,
        concurrent_events,
    } = out
    else {
        panic!("expected a rebase, got {out:?}");
    };
    assert_eq!(expected_version, Version(1));
    assert_eq!(versions(&concurrent_events), (2..=12).collect::<Vec<_>>());
    assert_eq!(
        (appended.first_version, appended.last_version),
        (Version(13), Version(14))
    );
    assert_eq!(
        (appended.first_position, appended.last_position),
        (Position(13), Position(14))
    );
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(14));
}

/// A concurrent event of a listed type turns the rebase into a conflict; nothing is written.
pub async fn rebase_refused_when_a_concurrent_event_has_a_listed_type(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 10).await;
    write(
        &store,
        &s,
        ExpectedVersion::Exact(Version(10)),
        vec![event("AccountClosed", json!({}))],
    )
    .await;
    seed(&store, &s, 2).await;
    let before = snapshot(&store, &[&s]).await;
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(Version(9)), deposits(1))
        .rebase_unless(vec![ty("Withdrawn"), ty("AccountClosed")]);
    let c = expect_conflict(store.append(request).await);
    assert_eq!(c.actual, Version(13));
    assert_eq!(versions(&c.concurrent_events), vec![10, 11, 12, 13]);
    assert_eq!(snapshot(&store, &[&s]).await, before);
}

/// The rebase rule looks at every concurrent event, not only the 100 a conflict lists.
pub async fn rebase_checks_every_concurrent_event_not_only_the_first_100(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    seed(&store, &s, 151).await;
    write(
        &store,
        &s,
        ExpectedVersion::Exact(Version(151)),
        vec![event("AccountClosed", json!({}))],
    )
    .await;
    let before = snapshot(&store, &[&s]).await;
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(Version(1)), deposits(1))
        .rebase_unless(vec![ty("AccountClosed")]);
    let c = expect_conflict(store.append(request).await);
    assert_eq!(c.actual, Version(152));
    assert_eq!(
        versions(&c.concurrent_events),
        (2..=101).collect::<Vec<_>>()
    );
    assert!(c.truncated);
    assert_eq!(snapshot(&store, &[&s]).await, before);
}

/// A rebase reports at most the first 100 events it moved past.
pub async fn rebase_reports_at_most_the_first_100_concurrent_events(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 130).await;
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(Version(3)), deposits(1))
        .rebase_unless(vec![ty("AccountClosed")]);
    let out = store.append(request).await.unwrap();
    let AppendOutcome::Rebased {
        appended,
        expected_version,
        concurrent_events,
    } = out
    else {
        panic!("expected a rebase, got {out:?}");
    };
    assert_eq!(expected_version, Version(3));
    assert_eq!(versions(&concurrent_events), (4..=103).collect::<Vec<_>>());
    assert_eq!(appended.first_version, Version(131));
}

/// An empty `rebase_unless` list rebases over any concurrent events.
pub async fn rebase_with_an_empty_list_rebases_over_anything(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 10).await;
    write(
        &store,
        &s,
        ExpectedVersion::Any,
        vec![event("AccountClosed", json!({}))],
    )
    .await;
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(Version(10)), deposits(1))
        .rebase_unless(vec![]);
    let out = store.append(request).await.unwrap();
    assert!(out.is_rebased(), "{out:?}");
    assert_eq!(out.appended().first_version, Version(12));
}

/// `rebase_unless` changes nothing when the expectation holds: a plain append.
pub async fn rebase_is_not_reported_when_the_expectation_holds(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 12).await;
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(Version(12)), deposits(1))
        .rebase_unless(vec![]);
    let out = store.append(request).await.unwrap();
    assert!(matches!(out, AppendOutcome::Appended(_)), "{out:?}");
    assert_eq!(out.appended().first_version, Version(13));
}

/// `Exact(0)` is a numeric expectation: when stale it rebases over every event of the
/// stream, and reports all of them (the first 100) as concurrent.
pub async fn rebase_from_expected_version_zero_moves_past_the_whole_stream(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    seed(&store, &s, 12).await;
    let request = AppendRequest::new(s.clone(), ExpectedVersion::Exact(Version(0)), deposits(1))
        .rebase_unless(vec![ty("AccountClosed")]);
    let out = store.append(request).await.unwrap();
    let AppendOutcome::Rebased {
        appended,
        expected_version,
        concurrent_events,
    } = out
    else {
        panic!("expected a rebase, got {out:?}");
    };
    assert_eq!(expected_version, Version(0));
    assert_eq!(versions(&concurrent_events), (1..=12).collect::<Vec<_>>());
    assert_eq!(appended.first_version, Version(13));
}

/// Only a stale numeric expectation rebases: `no_stream`, `exists` and an exact version
/// ahead of the stream conflict even with an empty `rebase_unless`.
pub async fn rebase_never_applies_to_non_numeric_or_ahead_expectations(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 12).await;
    let missing = stream("account-2");
    let before = snapshot(&store, &[&s, &missing]).await;
    let cases = [
        (s.clone(), ExpectedVersion::NoStream, Version(12), 12usize),
        (
            s.clone(),
            ExpectedVersion::Exact(Version(40)),
            Version(12),
            0,
        ),
        (missing.clone(), ExpectedVersion::Exists, Version(0), 0),
        (
            missing.clone(),
            ExpectedVersion::Exact(Version(2)),
            Version(0),
            0,
        ),
    ];
    for (target, expected, actual, listed) in cases {
        let request = AppendRequest::new(target, expected, deposits(1)).rebase_unless(vec![]);
        let c = expect_conflict(store.append(request).await);
        assert_eq!(c.expected, expected);
        assert_eq!(c.actual, actual, "for {expected}");
        assert_eq!(c.concurrent_events.len(), listed, "for {expected}");
    }
    assert_eq!(snapshot(&store, &[&s, &missing]).await, before);
}

// ---------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------

/// Re-sending an append's ids returns the original versions and positions and writes
/// nothing, whatever the expected version says.
pub async fn reappending_the_same_ids_is_a_duplicate_with_the_original_versions_and_positions(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    let other = stream("account-2");
    seed(&store, &s, 11).await;
    seed(&store, &other, 4).await;
    let events = deposits(3);
    let original = append(
        &store,
        &s,
        ExpectedVersion::Exact(Version(11)),
        events.clone(),
    )
    .await
    .unwrap();
    let first = original.appended().clone();
    assert_eq!(
        (first.first_version, first.last_version),
        (Version(12), Version(14))
    );
    assert_eq!(
        (first.first_position, first.last_position),
        (Position(16), Position(18))
    );
    seed(&store, &s, 5).await;
    seed(&store, &other, 2).await;
    let before = snapshot(&store, &[&s, &other]).await;
    for expected in [
        ExpectedVersion::Exact(Version(11)),
        ExpectedVersion::Exact(Version(19)),
        ExpectedVersion::Exact(Version(500)),
        ExpectedVersion::Exact(Version(0)),
        ExpectedVersion::NoStream,
        ExpectedVersion::Exists,
        ExpectedVersion::Any,
    ] {
        let again = append(&store, &s, expected, events.clone()).await.unwrap();
        assert!(
            again.is_duplicate(),
            "re-append under {expected}: {again:?}"
        );
        assert_eq!(again.appended(), &first, "re-append under {expected}");
    }
    let with_rebase = AppendRequest::new(
        s.clone(),
        ExpectedVersion::Exact(Version(1)),
        events.clone(),
    )
    .rebase_unless(vec![]);
    let again = store.append(with_rebase).await.unwrap();
    assert!(again.is_duplicate(), "{again:?}");
    assert_eq!(again.appended(), &first);
    assert_eq!(
        snapshot(&store, &[&s, &other]).await,
        before,
        "a duplicate wrote something"
    );
}

/// Re-sending a consecutive run of an earlier append's ids, in order, is a duplicate of
/// those events.
pub async fn resending_a_consecutive_run_of_earlier_ids_is_a_duplicate(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 9).await;
    let events = deposits(4);
    write(&store, &s, ExpectedVersion::Any, events.clone()).await;
    let before = snapshot(&store, &[&s]).await;
    let again = append(&store, &s, ExpectedVersion::Any, events[1..3].to_vec())
        .await
        .unwrap();
    assert!(again.is_duplicate(), "{again:?}");
    assert_eq!(
        (
            again.appended().first_version,
            again.appended().last_version
        ),
        (Version(11), Version(12))
    );
    assert_eq!(
        (
            again.appended().first_position,
            again.appended().last_position
        ),
        (Position(11), Position(12))
    );
    assert_eq!(snapshot(&store, &[&s]).await, before);
}

/// A caller that stops waiting (drops the append's future after its first poll: a timeout,
/// an interrupted command) leaves the whole append or none of it; re-sending
/// the same events then finds them written once, at the versions they were meant for.
pub async fn an_abandoned_append_is_written_whole_or_not_at_all(store: Arc<dyn EventStore>) {
    use futures::FutureExt as _;
    let s = stream("account-1");
    seed(&store, &s, 3).await;
    let events = deposits(5);
    let request = || {
        AppendRequest::new(
            s.clone(),
            ExpectedVersion::Exact(Version(3)),
            events.clone(),
        )
    };
    let multi = MultiAppendRequest::new(vec![AppendRequest::new(
        stream("account-2"),
        ExpectedVersion::NoStream,
        deposits(4),
    )]);
    let mut abandoned = store.append(request());
    // Polled once, so a store that hands appends on (to a writer, Redis, a server) may
    // have done so; then dropped.
    let _ = (&mut abandoned).now_or_never();
    drop(abandoned);
    let mut abandoned = store.append_multi(multi.clone());
    let _ = (&mut abandoned).now_or_never();
    drop(abandoned);

    let again = tokio::time::timeout(WAIT, store.append(request()))
        .await
        .expect("the re-sent append was not answered")
        .expect("the abandoned append was written in part, or the re-sent one failed");
    assert_eq!(
        (
            again.appended().first_version,
            again.appended().last_version
        ),
        (Version(4), Version(8)),
        "{again:?}"
    );
    let whole = read_whole_stream(&store, &s).await;
    assert_eq!(versions(&whole), (1..=8).collect::<Vec<_>>());
    assert_eq!(
        ids(&whole[3..]),
        events.iter().map(|e| e.id).collect::<Vec<_>>()
    );

    let again = tokio::time::timeout(WAIT, store.append_multi(multi.clone()))
        .await
        .expect("the re-sent multi-stream append was not answered")
        .expect("the abandoned multi-stream append was written in part, or the re-sent one failed");
    assert_eq!(again.parts.len(), 1);
    let part = read_whole_stream(&store, &stream("account-2")).await;
    assert_eq!(
        ids(&part),
        multi.parts[0]
            .events
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    );
}

/// An append of some known and some new ids is a partial duplicate: nothing is written.
pub async fn partial_duplicate_is_rejected_and_writes_nothing(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 10).await;
    let events = deposits(2);
    write(&store, &s, ExpectedVersion::Any, events.clone()).await;
    let before = snapshot(&store, &[&s]).await;
    let mut mixed = events.clone();
    mixed.push(event("Deposited", json!({"amount": 7})));
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::Exact(Version(12)),
        ExpectedVersion::Exact(Version(10)),
    ] {
        let err = append(&store, &s, expected, mixed.clone())
            .await
            .expect_err("a partial duplicate was accepted");
        let StoreError::PartialDuplicate(p) = err else {
            panic!("expected a partial duplicate, got {err:?}")
        };
        assert_eq!(p.stream, s);
        let found: BTreeSet<EventId> = p.existing_ids.iter().copied().collect();
        assert_eq!(found, events.iter().map(|e| e.id).collect::<BTreeSet<_>>());
    }
    let mut new_first = vec![event("Deposited", json!({"amount": 8}))];
    new_first.push(events[0].clone());
    let err = append(&store, &s, ExpectedVersion::Any, new_first)
        .await
        .expect_err("a partial duplicate was accepted");
    assert!(matches!(err, StoreError::PartialDuplicate(_)), "{err:?}");
    assert_eq!(snapshot(&store, &[&s]).await, before);
}

/// The same ids in another order, or with a gap, are not the same append: a partial
/// duplicate, and nothing is written.
pub async fn same_ids_in_a_different_order_are_a_partial_duplicate(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 10).await;
    let events = deposits(3);
    write(&store, &s, ExpectedVersion::Any, events.clone()).await;
    let before = snapshot(&store, &[&s]).await;
    let reversed: Vec<NewEvent> = events.iter().rev().cloned().collect();
    let err = append(&store, &s, ExpectedVersion::Any, reversed)
        .await
        .expect_err("reordered ids were accepted");
    assert!(matches!(err, StoreError::PartialDuplicate(_)), "{err:?}");
    let gapped = vec![events[0].clone(), events[2].clone()];
    let err = append(&store, &s, ExpectedVersion::Any, gapped)
        .await
        .expect_err("ids with a gap were accepted");
    assert!(matches!(err, StoreError::PartialDuplicate(_)), "{err:?}");
    assert_eq!(snapshot(&store, &[&s]).await, before);
}

// ---------------------------------------------------------------------------------------
// Reading streams
// ---------------------------------------------------------------------------------------

/// Forward reads page through a stream from a version with a limit, and only its events.
pub async fn reading_a_stream_forward_pages_from_a_version(store: Arc<dyn EventStore>) {
    use concord_core::Direction::Forward;
    let s = stream("account-1");
    let other = stream("account-2");
    for _ in 0..25 {
        seed(&store, &s, 1).await;
        seed(&store, &other, 1).await;
    }
    let page = store
        .read_stream(&s, Version(1), Forward, 10)
        .await
        .unwrap();
    assert_eq!(versions(&page), (1..=10).collect::<Vec<_>>());
    assert!(page.iter().all(|e| e.stream == s));
    assert_eq!(
        positions(&page),
        (0..10).map(|i| 2 * i + 1).collect::<Vec<_>>()
    );
    let page = store
        .read_stream(&s, Version(11), Forward, 10)
        .await
        .unwrap();
    assert_eq!(versions(&page), (11..=20).collect::<Vec<_>>());
    let page = store
        .read_stream(&s, Version(21), Forward, 10)
        .await
        .unwrap();
    assert_eq!(versions(&page), (21..=25).collect::<Vec<_>>());
    assert!(
        store
            .read_stream(&s, Version(26), Forward, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&s, Version(1000), Forward, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let page = store
        .read_stream(&s, Version(25), Forward, 10)
        .await
        .unwrap();
    assert_eq!(versions(&page), vec![25]);
}

/// Backward reads page down from a version; from past the end (or `Version::MAX`) they
/// start at the last event.
pub async fn reading_a_stream_backward_pages_from_a_version(store: Arc<dyn EventStore>) {
    use concord_core::Direction::Backward;
    let s = stream("account-1");
    seed(&store, &stream("account-2"), 3).await;
    seed(&store, &s, 25).await;
    let page = store
        .read_stream(&s, Version::MAX, Backward, 10)
        .await
        .unwrap();
    assert_eq!(versions(&page), (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(positions(&page), (19..=28).rev().collect::<Vec<_>>());
    let page = store
        .read_stream(&s, Version(15), Backward, 10)
        .await
        .unwrap();
    assert_eq!(versions(&page), (6..=15).rev().collect::<Vec<_>>());
    let page = store
        .read_stream(&s, Version(5), Backward, 10)
        .await
        .unwrap();
    assert_eq!(versions(&page), (1..=5).rev().collect::<Vec<_>>());
    let page = store
        .read_stream(&s, Version(30), Backward, 3)
        .await
        .unwrap();
    assert_eq!(versions(&page), vec![25, 24, 23]);
    let page = store
        .read_stream(&s, Version(1), Backward, 10)
        .await
        .unwrap();
    assert_eq!(versions(&page), vec![1]);
}

/// A stream with no events reads as empty in both directions, with version 0.
pub async fn reading_a_missing_stream_returns_nothing(store: Arc<dyn EventStore>) {
    use concord_core::Direction::{Backward, Forward};
    seed(&store, &stream("account-1"), 3).await;
    let missing = stream("account-10");
    assert!(
        store
            .read_stream(&missing, Version(1), Forward, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&missing, Version::MAX, Backward, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.stream_version(&missing).await.unwrap(), Version(0));
}

// ---------------------------------------------------------------------------------------
// Reading everything
// ---------------------------------------------------------------------------------------

/// Streams and events used by the filter specs: three categories, several types, tags.
async fn seed_filter_fixture(store: &Arc<dyn EventStore>) -> Vec<RecordedEvent> {
    for round in 0..4 {
        let a1 = stream("account-1");
        let a2 = stream("account-2");
        let auction = stream("auction-1");
        write(
            store,
            &a1,
            ExpectedVersion::Any,
            vec![
                tagged("Deposited", &["account:1"]),
                tagged("Withdrawn", &["account:1", "vip"]),
            ],
        )
        .await;
        write(
            store,
            &auction,
            ExpectedVersion::Any,
            vec![tagged("BidPlaced", &["vip"])],
        )
        .await;
        write(
            store,
            &a2,
            ExpectedVersion::Any,
            vec![tagged("Deposited", &["account:2", "vip"])],
        )
        .await;
        if round % 2 == 0 {
            write(
                store,
                &auction,
                ExpectedVersion::Any,
                vec![tagged("AuctionClosed", &[])],
            )
            .await;
        }
        write(
            store,
            &stream("doc-1"),
            ExpectedVersion::Any,
            vec![tagged("Inserted", &["account:1"])],
        )
        .await;
    }
    read_everything(store).await
}

/// `read_all` returns every event in position order, gap-free, and pages through
/// `next_from` until it reaches `head`.
pub async fn read_all_pages_through_every_event_in_position_order(store: Arc<dyn EventStore>) {
    let all = seed_filter_fixture(&store).await;
    let head = store.head().await.unwrap();
    assert_eq!(positions(&all), (1..=head.get()).collect::<Vec<_>>());
    assert_eq!(head, Position(22));
    let paged = read_all_pages(&store, &Filter::all(), 3).await;
    assert_eq!(paged, all);
    let page = store
        .read_all(Position(1), &Filter::all(), 5)
        .await
        .unwrap();
    assert_eq!(positions(&page.events), vec![1, 2, 3, 4, 5]);
    assert_eq!(page.next_from, Position(6));
    assert_eq!(page.head, head);
    assert!(!page.is_caught_up());
    let page = store
        .read_all(Position(20), &Filter::all(), 5)
        .await
        .unwrap();
    assert_eq!(positions(&page.events), vec![20, 21, 22]);
    assert!(page.is_caught_up());
}

/// `read_all` from beyond the head is empty and caught up; an empty store has head 0.
pub async fn read_all_from_past_the_head_is_empty_and_caught_up(store: Arc<dyn EventStore>) {
    let page = store
        .read_all(Position(1), &Filter::all(), 10)
        .await
        .unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.head, Position(0));
    assert!(page.is_caught_up());
    seed(&store, &stream("account-1"), 12).await;
    for from in [13u64, 14, 500] {
        let page = store
            .read_all(Position(from), &Filter::all(), 10)
            .await
            .unwrap();
        assert!(page.events.is_empty());
        assert_eq!(page.head, Position(12));
        assert!(page.is_caught_up());
    }
}

/// `read_all` from position 0 ("before the first event") reads like position 1: caught up
/// on an empty store, the whole log otherwise.
pub async fn read_all_from_position_zero_starts_at_the_first_event(store: Arc<dyn EventStore>) {
    let page = store
        .read_all(Position(0), &Filter::all(), 10)
        .await
        .unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.head, Position(0));
    assert!(
        page.is_caught_up(),
        "an empty store's read from 0 is not caught up: {page:?}"
    );
    let s = stream("account-1");
    seed(&store, &s, 12).await;
    let page = store
        .read_all(Position(0), &Filter::all(), 5)
        .await
        .unwrap();
    assert_eq!(positions(&page.events), vec![1, 2, 3, 4, 5]);
    let filtered = Filter::all().types(vec![ty("Deposited")]);
    let page = store.read_all(Position(0), &filtered, 100).await.unwrap();
    assert_eq!(positions(&page.events), (1..=12).collect::<Vec<_>>());
    assert!(page.is_caught_up());
}

/// A category filter keeps only the events of streams in that category.
pub async fn read_all_filters_by_category(store: Arc<dyn EventStore>) {
    let all = seed_filter_fixture(&store).await;
    let filter = Filter::all().category(Category::new("account").unwrap());
    let expected: Vec<RecordedEvent> = all
        .iter()
        .filter(|e| e.stream.as_str().starts_with("account-"))
        .cloned()
        .collect();
    assert_eq!(expected.len(), 12);
    assert_eq!(read_all_pages(&store, &filter, 2).await, expected);
    assert_eq!(read_all_pages(&store, &filter, 1000).await, expected);
}

/// The category is the part before the first `-`, matched exactly: not a prefix, not a
/// pattern, not case-insensitive, and the whole name when there is no `-`.
pub async fn category_filter_matches_the_category_exactly(store: Arc<dyn EventStore>) {
    for name in [
        "account-1",
        "accounting-9",
        "acc_unt-1",
        "account",
        "acc%-2",
        "Account-4",
        "account-x-y",
    ] {
        write(&store, &stream(name), ExpectedVersion::Any, deposits(1)).await;
    }
    let names = |events: Vec<RecordedEvent>| {
        events
            .iter()
            .map(|e| e.stream.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let account = Filter::all().category(Category::new("account").unwrap());
    assert_eq!(
        names(read_all_pages(&store, &account, 10).await),
        ["account-1", "account", "account-x-y"]
    );
    let underscore = Filter::all().category(Category::new("acc_unt").unwrap());
    assert_eq!(
        names(read_all_pages(&store, &underscore, 10).await),
        ["acc_unt-1"]
    );
    let percent = Filter::all().category(Category::new("acc%").unwrap());
    assert_eq!(
        names(read_all_pages(&store, &percent, 10).await),
        ["acc%-2"]
    );
}

/// A types filter keeps events of any of the listed types, each once.
pub async fn read_all_filters_by_any_of_several_types(store: Arc<dyn EventStore>) {
    let all = seed_filter_fixture(&store).await;
    let filter = Filter::all().types(vec![ty("Withdrawn"), ty("BidPlaced")]);
    let expected: Vec<RecordedEvent> = all
        .iter()
        .filter(|e| ["Withdrawn", "BidPlaced"].contains(&e.event_type.as_str()))
        .cloned()
        .collect();
    assert_eq!(expected.len(), 8);
    assert_eq!(read_all_pages(&store, &filter, 3).await, expected);
    // A type named twice still lets each event through once.
    let repeated = Filter::all().types(vec![ty("Withdrawn"), ty("BidPlaced"), ty("Withdrawn")]);
    assert_eq!(read_all_pages(&store, &repeated, 3).await, expected);
    let none = Filter::all().types(vec![ty("NeverHappened")]);
    assert!(read_all_pages(&store, &none, 3).await.is_empty());
}

/// A tags filter keeps events carrying all of the listed tags, each once; parts of a
/// filter combine.
pub async fn read_all_filters_by_all_of_several_tags(store: Arc<dyn EventStore>) {
    let all = seed_filter_fixture(&store).await;
    let has = |e: &RecordedEvent, t: &str| e.tags.iter().any(|x| x.as_str() == t);
    let one = Filter::all().tags(vec![tag("account:1")]);
    let expected: Vec<RecordedEvent> = all
        .iter()
        .filter(|e| has(e, "account:1"))
        .cloned()
        .collect();
    assert_eq!(expected.len(), 12);
    assert_eq!(read_all_pages(&store, &one, 5).await, expected);
    let repeated = Filter::all().tags(vec![tag("account:1"), tag("account:1")]);
    assert_eq!(read_all_pages(&store, &repeated, 5).await, expected);
    let both = Filter::all().tags(vec![tag("account:1"), tag("vip")]);
    let expected: Vec<RecordedEvent> = all
        .iter()
        .filter(|e| has(e, "account:1") && has(e, "vip"))
        .cloned()
        .collect();
    assert_eq!(expected.len(), 4);
    assert!(
        expected
            .iter()
            .all(|e| e.event_type.as_str() == "Withdrawn")
    );
    assert_eq!(read_all_pages(&store, &both, 1).await, expected);
    let combined = Filter::all()
        .category(Category::new("account").unwrap())
        .types(vec![ty("Deposited")])
        .tags(vec![tag("vip")]);
    let expected: Vec<RecordedEvent> = all
        .iter()
        .filter(|e| {
            e.stream.as_str().starts_with("account-")
                && e.event_type.as_str() == "Deposited"
                && has(e, "vip")
        })
        .cloned()
        .collect();
    assert_eq!(expected.len(), 4);
    assert!(expected.iter().all(|e| e.stream.as_str() == "account-2"));
    assert_eq!(read_all_pages(&store, &combined, 2).await, expected);
}

// ---------------------------------------------------------------------------------------
// Listing streams, versions, head
// ---------------------------------------------------------------------------------------

/// `list_streams` lists streams ordered by name with their version and last position.
pub async fn list_streams_orders_by_name_with_version_and_last_position(
    store: Arc<dyn EventStore>,
) {
    let plan: [(&str, usize); 6] = [
        ("doc-1", 2),
        ("account-2", 11),
        ("account-10", 1),
        ("auction-1", 3),
        ("account-1", 12),
        ("account-2", 1),
    ];
    let mut last = BTreeMap::new();
    let mut position = 0u64;
    let mut version: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, n) in plan {
        seed(&store, &stream(name), n).await;
        position += n as u64;
        last.insert(name, position);
        *version.entry(name).or_default() += n as u64;
    }
    let listed = store.list_streams("", None, 100).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|i| i.stream.as_str()).collect();
    assert_eq!(
        names,
        ["account-1", "account-10", "account-2", "auction-1", "doc-1"]
    );
    for info in &listed {
        let name = info.stream.as_str();
        assert_eq!(info.version, Version(version[name]), "version of {name}");
        assert_eq!(
            info.last_position,
            Position(last[name]),
            "last position of {name}"
        );
    }
}

/// `list_streams` keeps names with the prefix (bytes, case-sensitive), continues after a
/// name, and stops at the limit.
pub async fn list_streams_filters_by_prefix_and_pages_with_after_and_limit(
    store: Arc<dyn EventStore>,
) {
    for name in [
        "account-3",
        "account-1",
        "accounting-1",
        "auction-1",
        "account-2",
        "doc-1",
        "Account-4",
        "account-11",
    ] {
        seed(&store, &stream(name), 1).await;
    }
    let names = |v: Vec<concord_core::StreamInfo>| {
        v.into_iter()
            .map(|i| i.stream.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list_streams("account-", None, 100).await.unwrap()),
        ["account-1", "account-11", "account-2", "account-3"]
    );
    assert_eq!(
        names(store.list_streams("account", None, 100).await.unwrap()),
        [
            "account-1",
            "account-11",
            "account-2",
            "account-3",
            "accounting-1"
        ]
    );
    assert_eq!(
        names(store.list_streams("account-", None, 2).await.unwrap()),
        ["account-1", "account-11"]
    );
    let after = stream("account-11");
    assert_eq!(
        names(
            store
                .list_streams("account-", Some(&after), 2)
                .await
                .unwrap()
        ),
        ["account-2", "account-3"]
    );
    let after = stream("account-3");
    assert!(
        store
            .list_streams("account-", Some(&after), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_streams("zzz", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_streams("acc_", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_streams("acc%", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after = stream("b");
    assert_eq!(
        names(store.list_streams("", Some(&after), 10).await.unwrap()),
        ["doc-1"]
    );
    // Paging through the listing one at a time visits every stream once.
    let mut seen = Vec::new();
    let mut cursor: Option<StreamName> = None;
    loop {
        let page = store.list_streams("", cursor.as_ref(), 1).await.unwrap();
        let Some(info) = page.into_iter().next() else {
            break;
        };
        cursor = Some(info.stream.clone());
        seen.push(info.stream.as_str().to_owned());
        assert!(seen.len() <= 8, "listing does not end: {seen:?}");
    }
    assert_eq!(seen.len(), 8);
}

/// `stream_version` and `head` follow appends; both are 0 before anything exists.
pub async fn stream_version_and_head_follow_appends(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    let other = stream("auction-1");
    assert_eq!(store.head().await.unwrap(), Position(0));
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(0));
    let mut head = 0u64;
    for i in 1..=12u64 {
        let out = append(&store, &s, ExpectedVersion::Any, deposits(1))
            .await
            .unwrap();
        head += 1;
        assert_eq!(store.stream_version(&s).await.unwrap(), Version(i));
        assert_eq!(store.head().await.unwrap(), Position(head));
        assert_eq!(out.appended().last_position, Position(head));
        let out = append(&store, &other, ExpectedVersion::Any, deposits(2))
            .await
            .unwrap();
        head += 2;
        assert_eq!(store.head().await.unwrap(), out.appended().last_position);
        assert_eq!(store.stream_version(&other).await.unwrap(), Version(2 * i));
    }
    assert_eq!(store.head().await.unwrap(), Position(36));
}

// ---------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------

/// Appends `n` single-event appends alternating between `streams`, from another task.
fn append_concurrently(
    store: &Arc<dyn EventStore>,
    streams: Vec<StreamName>,
    n: usize,
) -> tokio::task::JoinHandle<()> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        for i in 0..n {
            let s = &streams[i % streams.len()];
            write(
                &store,
                s,
                ExpectedVersion::Any,
                vec![tagged("Deposited", &["live"])],
            )
            .await;
            if i % 3 == 0 {
                tokio::task::yield_now().await;
            }
        }
    })
}

/// After `events` were received, a fresh append must be the very next event: nothing
/// was delivered twice and nothing is still pending.
async fn assert_next_is_only_the_sentinel(
    store: &Arc<dyn EventStore>,
    sub: &mut Subscription,
    s: &StreamName,
) {
    let sentinel = event("Deposited", json!({"sentinel": true}));
    let id = sentinel.id;
    write(store, s, ExpectedVersion::Any, vec![sentinel]).await;
    let next = take(sub, 1).await;
    assert_eq!(
        next[0].id, id,
        "after the expected events the subscription delivered {:?}",
        next[0]
    );
}

/// `subscribe_all` delivers the stored events, then live ones appended concurrently,
/// each exactly once and in position order.
pub async fn subscribe_all_delivers_stored_then_live_events_exactly_once_in_order(
    store: Arc<dyn EventStore>,
) {
    let a = stream("account-1");
    let b = stream("auction-1");
    seed(&store, &a, 7).await;
    seed(&store, &b, 5).await;
    let mut sub = Arc::clone(&store).subscribe_all(Position(1), Filter::all());
    let stored = take(&mut sub, 12).await;
    assert_eq!(positions(&stored), (1..=12).collect::<Vec<_>>());
    let writer = append_concurrently(&store, vec![a.clone(), b.clone()], 40);
    let live = take(&mut sub, 40).await;
    tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    assert_eq!(positions(&live), (13..=52).collect::<Vec<_>>());
    let mut everything = stored;
    everything.extend(live);
    assert_eq!(ids(&everything), ids(&read_everything(&store).await));
    assert_next_is_only_the_sentinel(&store, &mut sub, &a).await;
}

/// A subscription started while appends race with its catch-up still delivers every
/// event once, in order.
pub async fn subscribe_all_while_appends_race_with_catch_up_misses_nothing(
    store: Arc<dyn EventStore>,
) {
    let a = stream("account-1");
    let b = stream("account-2");
    seed(&store, &a, 600).await;
    let writer = append_concurrently(&store, vec![a.clone(), b.clone()], 60);
    let mut sub = Arc::clone(&store).subscribe_all(Position(1), Filter::all());
    let got = take(&mut sub, 660).await;
    tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    assert_eq!(positions(&got), (1..=660).collect::<Vec<_>>());
    assert_next_is_only_the_sentinel(&store, &mut sub, &b).await;
}

/// `subscribe_all` from a position with a filter delivers exactly the matching events at
/// or after it, stored then live.
pub async fn subscribe_all_with_a_filter_delivers_only_matching_events_across_the_switch(
    store: Arc<dyn EventStore>,
) {
    let a = stream("account-1");
    let other = stream("auction-1");
    for _ in 0..10 {
        seed(&store, &a, 1).await;
        seed(&store, &other, 1).await;
    }
    let filter = Filter::all().category(Category::new("account").unwrap());
    let mut sub = Arc::clone(&store).subscribe_all(Position(5), filter.clone());
    let stored = take(&mut sub, 8).await;
    assert_eq!(positions(&stored), vec![5, 7, 9, 11, 13, 15, 17, 19]);
    let writer = append_concurrently(&store, vec![other.clone(), a.clone()], 30);
    let live = take(&mut sub, 15).await;
    tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    assert!(live.iter().all(|e| e.stream == a));
    let expected: Vec<RecordedEvent> = read_all_pages(&store, &filter, 1000)
        .await
        .into_iter()
        .filter(|e| e.position > Position(19))
        .collect();
    assert_eq!(ids(&live), ids(&expected));
    assert_next_is_only_the_sentinel(&store, &mut sub, &a).await;
}

/// `subscribe_stream` delivers one stream's events from a version: stored, then live,
/// exactly once and in version order, and nothing of other streams.
pub async fn subscribe_stream_delivers_stored_then_live_events_exactly_once_in_order(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-1");
    let other = stream("account-2");
    for _ in 0..12 {
        seed(&store, &s, 1).await;
        seed(&store, &other, 1).await;
    }
    let mut sub = Arc::clone(&store).subscribe_stream(s.clone(), Version(3));
    let stored = take(&mut sub, 10).await;
    assert_eq!(versions(&stored), (3..=12).collect::<Vec<_>>());
    let writer = append_concurrently(&store, vec![other.clone(), s.clone()], 40);
    let live = take(&mut sub, 20).await;
    tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    assert!(live.iter().all(|e| e.stream == s));
    assert_eq!(versions(&live), (13..=32).collect::<Vec<_>>());
    let whole = read_whole_stream(&store, &s).await;
    assert_eq!(ids(&live), ids(&whole[12..]));
    assert_next_is_only_the_sentinel(&store, &mut sub, &s).await;
}

/// `subscribe_stream` on a stream that does not exist yet waits for its first event.
pub async fn subscribe_stream_to_a_new_stream_waits_for_its_first_event(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-9");
    seed(&store, &stream("account-1"), 3).await;
    let mut sub = Arc::clone(&store).subscribe_stream(s.clone(), Version(1));
    let writer = append_concurrently(&store, vec![stream("account-1"), s.clone()], 24);
    let got = take(&mut sub, 12).await;
    tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    assert_eq!(versions(&got), (1..=12).collect::<Vec<_>>());
    assert_next_is_only_the_sentinel(&store, &mut sub, &s).await;
}

// ---------------------------------------------------------------------------------------
// Invalid input
// ---------------------------------------------------------------------------------------

fn is_invalid(e: &StoreError) -> bool {
    matches!(e, StoreError::Invalid(_))
}

fn is_too_large(e: &StoreError) -> bool {
    matches!(e, StoreError::TooLarge(_))
}

/// An append without events is invalid; nothing is written.
pub async fn empty_append_is_rejected_and_writes_nothing(store: Arc<dyn EventStore>) {
    assert_rejected_with_nothing_written(&store, vec![], is_invalid).await;
}

/// More than 1000 events in one append is too large; nothing is written.
pub async fn append_of_too_many_events_is_rejected_and_writes_nothing(store: Arc<dyn EventStore>) {
    assert_rejected_with_nothing_written(&store, deposits(1001), is_too_large).await;
}

/// Exactly 1000 events in one append are accepted, with consecutive versions.
pub async fn append_of_exactly_1000_events_is_accepted(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    seed(&store, &s, 1).await;
    let out = append(
        &store,
        &s,
        ExpectedVersion::Exact(Version(1)),
        deposits(1000),
    )
    .await
    .unwrap();
    assert_eq!(
        (out.appended().first_version, out.appended().last_version),
        (Version(2), Version(1001))
    );
    assert_eq!(
        (out.appended().first_position, out.appended().last_position),
        (Position(2), Position(1001))
    );
}

/// An event whose data plus metadata exceed 1 MiB is too large; nothing is written, even
/// when the other events of the append are small.
pub async fn oversized_event_is_rejected_and_writes_nothing(store: Arc<dyn EventStore>) {
    let mut events = deposits(2);
    events.push(event("Deposited", json!("x".repeat(1024 * 1024))));
    assert_rejected_with_nothing_written(&store, events, is_too_large).await;
}

/// An event of exactly 1 MiB (data plus metadata) is accepted and reads back whole.
pub async fn event_exactly_at_the_size_limit_is_accepted(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    // A JSON string's text is its characters plus two quotes; metadata `{}` is two bytes.
    let text = "x".repeat(1024 * 1024 - 4);
    let e = event("Deposited", json!(text));
    assert_eq!(e.payload_bytes(), 1024 * 1024);
    write(&store, &s, ExpectedVersion::NoStream, vec![e]).await;
    let stored = read_whole_stream(&store, &s).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data.to_value().unwrap(), json!(text));
}

/// Metadata must be a JSON object; anything else is invalid and nothing is written.
pub async fn metadata_that_is_not_an_object_is_rejected_and_writes_nothing(
    store: Arc<dyn EventStore>,
) {
    for metadata in [json!([1, 2]), json!("actor"), json!(7), json!(null)] {
        let mut events = deposits(2);
        events[1] = events[1].clone().with_metadata(Json::from_value(&metadata));
        let before = snapshot(&store, &[]).await;
        let err = append(&store, &stream("account-5"), ExpectedVersion::Any, events)
            .await
            .expect_err("metadata accepted");
        assert!(is_invalid(&err), "metadata {metadata}: {err:?}");
        assert_eq!(snapshot(&store, &[]).await, before);
    }
    let mut events = deposits(1);
    events[0] = events[0]
        .clone()
        .with_metadata(Json::from_value(&json!(["not", "an", "object"])));
    assert_rejected_with_nothing_written(&store, events, is_invalid).await;
}

/// One id twice in one append is invalid; nothing is written.
pub async fn id_repeated_within_one_append_is_rejected_and_writes_nothing(
    store: Arc<dyn EventStore>,
) {
    let mut events = deposits(3);
    events[2].id = events[0].id;
    assert_rejected_with_nothing_written(&store, events, is_invalid).await;
}

/// More than 32 tags on one event is invalid; nothing is written. Exactly 32 is fine.
pub async fn more_than_32_tags_are_rejected_and_exactly_32_accepted(store: Arc<dyn EventStore>) {
    let tags = |n: usize| (0..n).map(|i| tag(&format!("tag:{i}"))).collect::<Vec<_>>();
    let events = vec![event("Deposited", json!({})).with_tags(tags(33))];
    assert_rejected_with_nothing_written(&store, events, is_invalid).await;
    let s = stream("account-7");
    write(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![event("Deposited", json!({})).with_tags(tags(32))],
    )
    .await;
    let stored = read_whole_stream(&store, &s).await;
    assert_eq!(stored[0].tags, tags(32));
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/// Unicode stream names, event types and tags work everywhere a name appears.
pub async fn unicode_stream_names_round_trip(store: Arc<dyn EventStore>) {
    let names = ["ünïcødé-流", "账户-42", "emoji-🦀🦀", "ÄÖÜ"];
    for (i, name) in names.iter().enumerate() {
        let s = stream(name);
        let e = event("Überwiesen✓", json!({"note": "grüße 🦀"})).with_tags(vec![tag("kunde:zoë")]);
        write(&store, &s, ExpectedVersion::NoStream, vec![e]).await;
        write(&store, &s, ExpectedVersion::Exact(Version(1)), deposits(10)).await;
        let c = expect_conflict(
            append(&store, &s, ExpectedVersion::Exact(Version(1)), deposits(1)).await,
        );
        assert_eq!(c.stream, s);
        assert_eq!(c.concurrent_events.len(), 10);
        let stored = read_whole_stream(&store, &s).await;
        assert_eq!(stored.len(), 11, "stream {name}");
        assert!(stored.iter().all(|e| e.stream == s));
        assert_eq!(stored[0].event_type.as_str(), "Überwiesen✓");
        assert_eq!(stored[0].tags, vec![tag("kunde:zoë")]);
        assert_eq!(store.stream_version(&s).await.unwrap(), Version(11));
        let listed = store.list_streams(name, None, 10).await.unwrap();
        assert_eq!(listed.len(), 1, "listing prefix {name}");
        assert_eq!(listed[0].stream, s);
        assert_eq!(listed[0].last_position, Position(11 * (i as u64 + 1)));
    }
    let category = Filter::all().category(Category::new("账户").unwrap());
    let got = read_all_pages(&store, &category, 4).await;
    assert_eq!(got.len(), 11);
    assert!(got.iter().all(|e| e.stream.as_str() == "账户-42"));
    let by_tag = Filter::all()
        .tags(vec![tag("kunde:zoë")])
        .types(vec![ty("Überwiesen✓")]);
    assert_eq!(read_all_pages(&store, &by_tag, 4).await.len(), names.len());
    let mut sub = Arc::clone(&store).subscribe_stream(stream("emoji-🦀🦀"), Version(11));
    assert_eq!(versions(&take(&mut sub, 1).await), vec![11]);
}

/// Stream names of exactly 256 bytes (ASCII, and multibyte characters) work.
pub async fn stream_names_of_256_bytes_work(store: Arc<dyn EventStore>) {
    let ascii = "a".repeat(256);
    let multibyte = format!("doc-{}", "é".repeat(126));
    let four_byte = "🦀".repeat(64);
    for name in [&ascii, &multibyte, &four_byte] {
        assert_eq!(name.len(), 256);
        let s = stream(name);
        seed(&store, &s, 12).await;
        let c = expect_conflict(
            append(&store, &s, ExpectedVersion::Exact(Version(10)), deposits(1)).await,
        );
        assert_eq!(c.stream, s);
        assert_eq!(versions(&c.concurrent_events), vec![11, 12]);
        let stored = read_whole_stream(&store, &s).await;
        assert_eq!(stored.len(), 12);
        assert!(stored.iter().all(|e| e.stream == s));
        assert_eq!(store.stream_version(&s).await.unwrap(), Version(12));
        let listed = store.list_streams(name, None, 10).await.unwrap();
        assert_eq!(
            listed.iter().map(|i| &i.stream).collect::<Vec<_>>(),
            vec![&s]
        );
    }
    let category = Filter::all().category(Category::new("doc").unwrap());
    assert_eq!(read_all_pages(&store, &category, 5).await.len(), 12);
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

/// What a writer was told about one of its appends.
#[derive(Debug)]
struct Ack {
    stream: StreamName,
    version: Version,
    position: Position,
    id: EventId,
}

/// 32 writers append to one stream at once, each with a stale expectation (version 1) and
/// `rebase_unless` listing a type none of them writes: every append lands (a backend may
/// put them in one commit), every version is granted once, and each rebased append lists
/// exactly the events between its expectation and its own, in order.
pub async fn rebasing_writers_on_one_stream_all_land_and_list_what_they_moved_past(
    store: Arc<dyn EventStore>,
) {
    const WRITERS: usize = 32;
    let s = stream("account-1");
    write(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![event(
            "AccountOpened",
            json!({"owner": "ann", "balance": 0}),
        )],
    )
    .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, s, barrier) = (Arc::clone(&store), s.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                let e = event("Deposited", json!({"writer": w}));
                let id = e.id;
                barrier.wait().await;
                let request = AppendRequest::new(s, ExpectedVersion::Exact(Version(1)), vec![e])
                    .rebase_unless(vec![ty("AccountClosed")]);
                (id, store.append(request).await.unwrap())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let log = store
        .read_stream(&s, Version(1), Direction::Forward, 1000)
        .await
        .unwrap();
    assert_eq!(versions(&log), (1..=WRITERS as u64 + 1).collect::<Vec<_>>());
    for (id, outcome) in &outcomes {
        let a = outcome.appended();
        let stored = &log[usize::try_from(a.first_version.get() - 1).unwrap()];
        assert_eq!((stored.id, stored.position), (*id, a.first_position));
        match outcome {
            AppendOutcome::Appended(a) => assert_eq!(a.first_version, Version(2), "{outcome:?}"),
            AppendOutcome::Rebased {
                appended,
                expected_version,
                concurrent_events,
            } => {
                assert_eq!(*expected_version, Version(1));
                assert_eq!(
                    ids(concurrent_events),
                    ids(&log[1..usize::try_from(appended.first_version.get() - 1).unwrap()]),
                    "the events a rebase moved past"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Writers race on one stream, and every event id is sent by two of them at once: each
/// event is stored once, and the two answers for it agree on where (one appended, the
/// other a duplicate with the same version and position).
pub async fn repeated_ids_racing_on_one_stream_are_stored_once(store: Arc<dyn EventStore>) {
    const PAIRS: usize = 8;
    let s = stream("account-1");
    let events: Vec<NewEvent> = (0..PAIRS)
        .map(|i| event("Deposited", json!({"n": i})))
        .collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(PAIRS * 2));
    let tasks: Vec<_> = (0..PAIRS * 2)
        .map(|t| {
            let (store, s, barrier) = (Arc::clone(&store), s.clone(), Arc::clone(&barrier));
            let e = events[t % PAIRS].clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let id = e.id;
                (
                    id,
                    append(&store, &s, ExpectedVersion::Any, vec![e])
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut by_id: HashMap<EventId, Vec<AppendOutcome>> = HashMap::new();
    for t in tasks {
        let (id, outcome) = t.await.unwrap();
        by_id.entry(id).or_default().push(outcome);
    }
    let log = store
        .read_stream(&s, Version(1), Direction::Forward, 1000)
        .await
        .unwrap();
    assert_eq!(log.len(), PAIRS, "each id once: {:?}", ids(&log));
    for stored in &log {
        let answers = &by_id[&stored.id];
        assert_eq!(answers.len(), 2);
        let duplicates = answers.iter().filter(|o| o.is_duplicate()).count();
        assert_eq!(duplicates, 1, "one appended, one duplicate: {answers:?}");
        for o in answers {
            let a = o.appended();
            assert_eq!(
                (a.first_version, a.first_position),
                (stored.version, stored.position)
            );
        }
    }
}

/// 16 tasks × 200 appends (× `CONCORD_TEST_SCALE`) race on 4 hot streams with exact
/// expected versions, retrying on conflict with the reported actual version. Every
/// version is granted exactly once, versions and positions have no gaps, positions
/// increase with versions, and every acknowledged event reads back where it was acked.
pub async fn concurrent_writers_on_hot_streams_get_every_version_exactly_once(
    store: Arc<dyn EventStore>,
) {
    const TASKS: usize = 16;
    const STREAMS: usize = 4;
    let per_task = 200 * scale();
    let streams: Vec<StreamName> = (0..STREAMS)
        .map(|i| stream(&format!("account-{}", i + 1)))
        .collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        let streams = streams.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut acks = Vec::with_capacity(per_task);
            let mut conflicts = 0usize;
            let mut known: Vec<Version> = vec![Version(0); streams.len()];
            for i in 0..per_task {
                let k = (t + i) % streams.len();
                let s = &streams[k];
                let e = event("Deposited", json!({"task": t, "n": i}));
                let id = e.id;
                let mut attempts = 0usize;
                loop {
                    attempts += 1;
                    assert!(
                        attempts < 100_000,
                        "task {t} could not append after {attempts} attempts"
                    );
                    match append(&store, s, ExpectedVersion::Exact(known[k]), vec![e.clone()]).await
                    {
                        Ok(out) => {
                            assert!(
                                matches!(out, AppendOutcome::Appended(_)),
                                "task {t}: {out:?}"
                            );
                            let a = out.appended();
                            assert_eq!(
                                a.first_version,
                                known[k].next(),
                                "granted a version other than expected + 1"
                            );
                            assert_eq!(a.first_version, a.last_version);
                            assert_eq!(a.first_position, a.last_position);
                            known[k] = a.last_version;
                            acks.push(Ack {
                                stream: s.clone(),
                                version: a.first_version,
                                position: a.first_position,
                                id,
                            });
                            break;
                        }
                        Err(StoreError::Conflict(c)) => {
                            assert!(
                                c.actual > known[k],
                                "conflict with actual {} not past expected {}",
                                c.actual,
                                known[k]
                            );
                            assert_eq!(
                                c.concurrent_events.first().map(|e| e.version),
                                Some(known[k].next()),
                                "concurrent events do not start after the expected version"
                            );
                            known[k] = c.actual;
                            conflicts += 1;
                        }
                        Err(other) => panic!("task {t}: unexpected error {other}"),
                    }
                }
            }
            (acks, conflicts)
        }));
    }
    let mut acks: Vec<Ack> = Vec::new();
    let mut conflicts = 0usize;
    let joined = tokio::time::timeout(WAIT * 4 * scale() as u32, futures::future::join_all(tasks))
        .await
        .expect("the concurrent writers did not finish in time");
    for r in joined {
        let (a, c) = r.unwrap();
        acks.extend(a);
        conflicts += c;
    }
    let total = TASKS * per_task;
    assert_eq!(acks.len(), total);

    // Every version of every stream granted exactly once, with no gap.
    let mut by_stream: BTreeMap<StreamName, Vec<&Ack>> = BTreeMap::new();
    for a in &acks {
        by_stream.entry(a.stream.clone()).or_default().push(a);
    }
    for (s, list) in &mut by_stream {
        list.sort_by_key(|a| a.version);
        let vs: Vec<u64> = list.iter().map(|a| a.version.get()).collect();
        assert_eq!(
            vs,
            (1..=list.len() as u64).collect::<Vec<_>>(),
            "versions of {s} have gaps or repeats"
        );
        assert!(
            list.windows(2).all(|w| w[0].position < w[1].position),
            "positions of {s} do not grow with versions"
        );
    }
    // Positions gap-free across the whole store.
    let mut ps: Vec<u64> = acks.iter().map(|a| a.position.get()).collect();
    ps.sort_unstable();
    assert_eq!(
        ps,
        (1..=total as u64).collect::<Vec<_>>(),
        "positions have gaps or repeats"
    );
    assert_eq!(store.head().await.unwrap(), Position(total as u64));

    // Every acknowledged event is readable where it was acknowledged.
    let all = read_everything(&store).await;
    assert_eq!(all.len(), total);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let unique: HashSet<EventId> = all.iter().map(|e| e.id).collect();
    assert_eq!(unique.len(), total, "an event id appears twice in the log");
    for a in &acks {
        let e = &all[(a.position.get() - 1) as usize];
        assert_eq!(
            (&e.stream, e.version, e.position, e.id),
            (&a.stream, a.version, a.position, a.id)
        );
    }
    for s in &streams {
        let whole = read_whole_stream(&store, s).await;
        assert_eq!(
            versions(&whole),
            (1..=whole.len() as u64).collect::<Vec<_>>()
        );
        assert_eq!(
            store.stream_version(s).await.unwrap(),
            Version(whole.len() as u64)
        );
    }
    eprintln!(
        "{total} appends by {TASKS} tasks on {STREAMS} streams, {conflicts} conflicts retried"
    );
}

/// Expands to one `#[tokio::test]` per conformance spec, each on a fresh store from
/// `$factory` (an `async fn() -> TestStore`).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@specs $factory;
            exact_expected_version_appends_in_order,
            exact_zero_expected_version_creates_a_new_stream,
            exact_zero_expected_version_conflicts_when_the_stream_exists,
            exact_expected_version_conflicts_when_stale,
            exact_expected_version_ahead_of_the_stream_conflicts_without_concurrent_events,
            no_stream_expectation_creates_a_new_stream,
            no_stream_expectation_conflicts_with_the_streams_first_events,
            exists_expectation_appends_to_an_existing_stream,
            exists_expectation_conflicts_on_a_missing_stream,
            any_expectation_appends_whatever_the_stream_holds,
            multi_event_append_gets_consecutive_versions_and_positions,
            failed_multi_event_append_writes_nothing,
            recorded_events_keep_what_was_written,
            conflict_reports_the_events_that_were_missed,
            conflict_lists_the_first_100_concurrent_events_and_says_more_exist,
            conflict_with_exactly_100_concurrent_events_is_not_truncated,
            rebase_appends_after_the_current_version_when_no_concurrent_event_is_listed,
            rebase_refused_when_a_concurrent_event_has_a_listed_type,
            rebase_checks_every_concurrent_event_not_only_the_first_100,
            rebase_reports_at_most_the_first_100_concurrent_events,
            rebase_with_an_empty_list_rebases_over_anything,
            rebase_is_not_reported_when_the_expectation_holds,
            rebase_from_expected_version_zero_moves_past_the_whole_stream,
            rebase_never_applies_to_non_numeric_or_ahead_expectations,
            reappending_the_same_ids_is_a_duplicate_with_the_original_versions_and_positions,
            resending_a_consecutive_run_of_earlier_ids_is_a_duplicate,
            an_abandoned_append_is_written_whole_or_not_at_all,
            partial_duplicate_is_rejected_and_writes_nothing,
            same_ids_in_a_different_order_are_a_partial_duplicate,
            reading_a_stream_forward_pages_from_a_version,
            reading_a_stream_backward_pages_from_a_version,
            reading_a_missing_stream_returns_nothing,
            read_all_pages_through_every_event_in_position_order,
            read_all_from_past_the_head_is_empty_and_caught_up,
            read_all_from_position_zero_starts_at_the_first_event,
            read_all_filters_by_category,
            category_filter_matches_the_category_exactly,
            read_all_filters_by_any_of_several_types,
            read_all_filters_by_all_of_several_tags,
            list_streams_orders_by_name_with_version_and_last_position,
            list_streams_filters_by_prefix_and_pages_with_after_and_limit,
            stream_version_and_head_follow_appends,
            subscribe_all_delivers_stored_then_live_events_exactly_once_in_order,
            subscribe_all_while_appends_race_with_catch_up_misses_nothing,
            subscribe_all_with_a_filter_delivers_only_matching_events_across_the_switch,
            subscribe_stream_delivers_stored_then_live_events_exactly_once_in_order,
            subscribe_stream_to_a_new_stream_waits_for_its_first_event,
            empty_append_is_rejected_and_writes_nothing,
            append_of_too_many_events_is_rejected_and_writes_nothing,
            append_of_exactly_1000_events_is_accepted,
            oversized_event_is_rejected_and_writes_nothing,
            event_exactly_at_the_size_limit_is_accepted,
            metadata_that_is_not_an_object_is_rejected_and_writes_nothing,
            id_repeated_within_one_append_is_rejected_and_writes_nothing,
            more_than_32_tags_are_rejected_and_exactly_32_accepted,
            unicode_stream_names_round_trip,
            stream_names_of_256_bytes_work,
            concurrent_writers_on_hot_streams_get_every_version_exactly_once,
            rebasing_writers_on_one_stream_all_land_and_list_what_they_moved_past,
            repeated_ids_racing_on_one_stream_are_stored_once,
            multi_stream_append_writes_every_part_with_consecutive_positions,
            multi_stream_append_writes_nothing_when_one_part_is_stale,
            multi_stream_conflict_names_every_stale_part_with_its_missed_events,
            multi_stream_append_repeated_is_a_duplicate_with_the_original_positions,
            multi_stream_part_is_rebased_as_a_single_append_would_be,
            condition_that_is_not_violated_lets_the_append_through,
            condition_fails_with_the_first_100_matching_events,
            query_read_returns_matching_events_and_the_head,
            bad_queries_and_parts_are_rejected_and_write_nothing,
            concurrent_registrations_of_one_username_let_exactly_one_win,
            concurrent_transfers_conserve_the_total_at_every_position,
            bytes_round_trip_byte_for_byte_through_every_read,
            json_events_report_application_json_and_keep_their_text,
            types_tags_conflicts_and_conditions_work_for_bytes_events,
            reappending_bytes_events_is_a_duplicate,
            bytes_events_are_held_to_the_event_size_limit,
            versions_and_positions_past_2_pow_63_read_as_past_the_end,
            filters_and_queries_up_to_their_limits_work_and_beyond_are_refused,
        );
    };
    (@specs $factory:path; $($spec:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $spec() {
                let test_store: $crate::TestStore = $factory().await;
                $crate::conformance::$spec(test_store.store.clone()).await;
                drop(test_store);
            }
        )*
    };
}
