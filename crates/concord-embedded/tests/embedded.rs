//! Behaviour specific to the embedded store: group commit within a batch, poisoning after
//! a failed write, reopening, recovery checks and clear errors on open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use concord_core::{
    AppendOutcome, AppendRequest, Direction, EventStore, EventType, ExpectedVersion, Filter,
    MultiAppendOutcome, MultiAppendRequest, NewEvent, Position, Query, RecordedEvent, StoreError,
    StreamName, Tag, Version,
};
use concord_embedded::{DATA_FILE, Durability, EmbeddedOptions, EmbeddedStore, Fault};
use futures::FutureExt;

fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

fn event(ty: &str, n: u64) -> NewEvent {
    NewEvent::json(ty, &serde_json::json!({ "n": n })).unwrap()
}

fn append(s: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest::new(stream(s), expected, events)
}

/// Sends `requests` while the writer is paused, so they reach it as one batch, and
/// returns their answers in order.
async fn in_one_batch(
    store: &EmbeddedStore,
    requests: Vec<AppendRequest>,
) -> Vec<Result<AppendOutcome, StoreError>> {
    let pause = store.pause_writer();
    let mut pending: Vec<_> = requests
        .into_iter()
        .map(|r| store.append(r).boxed())
        .collect();
    for p in &mut pending {
        // The first poll hands the request to the writer's channel and then waits.
        assert!(
            p.as_mut().now_or_never().is_none(),
            "an append answered while the writer was paused"
        );
    }
    drop(pause);
    futures::future::join_all(pending).await
}

#[tokio::test]
async fn two_conflicting_appends_in_one_batch_first_wins_and_second_sees_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let _ = store
        .append(append(
            "account-1",
            ExpectedVersion::NoStream,
            vec![event("Opened", 0)],
        ))
        .await
        .unwrap();

    let first = event("Deposited", 1);
    let answers = in_one_batch(
        &store,
        vec![
            append(
                "account-1",
                ExpectedVersion::Exact(Version(1)),
                vec![first.clone()],
            ),
            append(
                "account-1",
                ExpectedVersion::Exact(Version(1)),
                vec![event("Deposited", 2)],
            ),
        ],
    )
    .await;

    let won = answers[0].as_ref().unwrap().appended();
    assert_eq!(
        (won.first_version, won.first_position),
        (Version(2), Position(2))
    );
    let conflict = answers[1]
        .as_ref()
        .unwrap_err()
        .as_conflict()
        .expect("the second append conflicts");
    assert_eq!(conflict.actual, Version(2));
    assert_eq!(conflict.concurrent_events.len(), 1);
    assert_eq!(conflict.concurrent_events[0].id, first.id);
    assert_eq!(
        store.stream_version(&stream("account-1")).await.unwrap(),
        Version(2)
    );
}

#[tokio::test]
async fn a_batch_sees_its_own_earlier_appends_for_idempotency_and_new_streams() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let e = event("Registered", 1);
    let answers = in_one_batch(
        &store,
        vec![
            append("user-1", ExpectedVersion::NoStream, vec![e.clone()]),
            append("user-1", ExpectedVersion::NoStream, vec![e.clone()]),
            append(
                "user-1",
                ExpectedVersion::NoStream,
                vec![event("Registered", 2)],
            ),
            append(
                "user-2",
                ExpectedVersion::NoStream,
                vec![event("Registered", 3), event("Renamed", 4)],
            ),
        ],
    )
    .await;
    assert!(
        matches!(&answers[0], Ok(AppendOutcome::Appended(a)) if a.last_position == Position(1))
    );
    assert!(
        matches!(&answers[1], Ok(AppendOutcome::Duplicate(a)) if a.last_position == Position(1))
    );
    assert!(answers[2].as_ref().unwrap_err().as_conflict().is_some());
    let user2 = answers[3].as_ref().unwrap().appended();
    assert_eq!(
        (user2.first_position, user2.last_position),
        (Position(2), Position(3))
    );
    assert_eq!(store.head().await.unwrap(), Position(3));
}

#[tokio::test]
async fn a_failed_commit_poisons_the_store_and_reopening_recovers_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let kept = store
        .append(append(
            "order-1",
            ExpectedVersion::Any,
            vec![event("Placed", 1)],
        ))
        .await
        .unwrap();

    store.inject_fault(Fault::FailNextCommit);
    let lost = event("Paid", 2);
    let failed = store
        .append(append("order-1", ExpectedVersion::Any, vec![lost.clone()]))
        .await;
    assert!(matches!(failed, Err(StoreError::Poisoned(_))), "{failed:?}");
    assert!(store.poisoned().is_some());
    let refused = store
        .append(append(
            "order-2",
            ExpectedVersion::Any,
            vec![event("Placed", 3)],
        ))
        .await;
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("poisoned") && message.contains("restart"),
        "{message}"
    );
    // Reads go on: they do not depend on the writer.
    assert_eq!(
        store
            .read_stream(&stream("order-1"), Version(1), Direction::Forward, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    drop(store);

    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(store.poisoned().is_none());
    assert_eq!(
        store.stream_version(&stream("order-1")).await.unwrap(),
        Version(1)
    );
    let again = store
        .append(append(
            "order-1",
            ExpectedVersion::Exact(Version(1)),
            vec![lost],
        ))
        .await
        .unwrap();
    assert_eq!(
        again.appended().first_position,
        kept.appended().last_position.next()
    );
}

/// A statement that fails inside the batch's transaction (here SQLITE_FULL on an insert)
/// changes nothing durable: the batch is rolled back, its appends are refused as
/// unavailable (safe to re-send), and the store is not poisoned: appends that fit go on.
#[tokio::test]
async fn a_write_that_fails_in_sqlite_rolls_the_batch_back_without_poisoning_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let _ = store
        .append(append(
            "doc-1",
            ExpectedVersion::Any,
            vec![event("Created", 1)],
        ))
        .await
        .unwrap();
    store.inject_fault(Fault::DiskFull);
    let big = NewEvent::json(
        "Edited",
        &serde_json::json!({ "text": "x".repeat(512 * 1024) }),
    )
    .unwrap();
    let failed = store
        .append(append("doc-1", ExpectedVersion::Any, vec![big]))
        .await;
    assert!(
        matches!(&failed, Err(StoreError::Unavailable { message, .. }) if message.contains("rolled back")),
        "{failed:?}"
    );
    assert!(store.poisoned().is_none());
    assert!(store.health().await.is_ok());
    // A small append still fits in the pages the file has.
    let small = store
        .append(append(
            "doc-2",
            ExpectedVersion::NoStream,
            vec![event("Created", 2)],
        ))
        .await
        .unwrap();
    assert_eq!(small.appended().first_position, Position(2));
    assert_eq!(
        store.stream_version(&stream("doc-1")).await.unwrap(),
        Version(1)
    );
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.head().await.unwrap(), Position(2));
}

/// A lookup that fails while one append of a batch is being decided (before it wrote
/// anything) refuses that append alone; the appends before and after it in the same batch
/// are written, and the store is not poisoned.
#[tokio::test]
async fn a_failed_lookup_refuses_its_append_alone_and_the_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let pause = store.pause_writer();
    store.inject_fault(Fault::FailNextLookup);
    let first = store
        .append(append("user-1", ExpectedVersion::Any, vec![event("A", 1)]))
        .boxed();
    let conditional = store
        .append_multi(
            MultiAppendRequest::from(append("user-2", ExpectedVersion::Any, vec![event("B", 2)]))
                .condition(
                    Query::item(vec![EventType::new("A").unwrap()], vec![]),
                    Position(0),
                ),
        )
        .boxed();
    let last = store
        .append(append("user-3", ExpectedVersion::Any, vec![event("C", 3)]))
        .boxed();
    let mut pending = (first, conditional, last);
    assert!(pending.0.as_mut().now_or_never().is_none());
    assert!(pending.1.as_mut().now_or_never().is_none());
    assert!(pending.2.as_mut().now_or_never().is_none());
    drop(pause);
    let (first, conditional, last) = futures::join!(pending.0, pending.1, pending.2);
    assert_eq!(first.unwrap().appended().first_position, Position(1));
    assert!(
        matches!(&conditional, Err(StoreError::Backend { .. })),
        "{conditional:?}"
    );
    assert_eq!(last.unwrap().appended().first_position, Position(2));
    assert!(store.poisoned().is_none());
    assert!(store.health().await.is_ok());
    assert_eq!(store.head().await.unwrap(), Position(2));
}

/// `health` says what `GET /health` reports: fine until a failed commit poisons the store.
#[tokio::test]
async fn health_reports_a_poisoned_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(store.health().await.is_ok());
    store.inject_fault(Fault::FailNextCommit);
    let failed = store
        .append(append(
            "order-1",
            ExpectedVersion::Any,
            vec![event("Placed", 1)],
        ))
        .await;
    assert!(matches!(failed, Err(StoreError::Poisoned(_))), "{failed:?}");
    assert!(matches!(store.health().await, Err(StoreError::Poisoned(_))));
}

#[tokio::test]
async fn reopening_keeps_versions_positions_tags_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let tag = Tag::new("customer:7").unwrap();
    let tagged = event("Placed", 1).with_tags(vec![tag.clone()]);
    let second = vec![event("Paid", 2), event("Shipped", 3)];
    let before = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let _ = store
            .append(append(
                "order-1",
                ExpectedVersion::NoStream,
                vec![tagged.clone()],
            ))
            .await
            .unwrap();
        let _ = store
            .append(append(
                "order-2",
                ExpectedVersion::NoStream,
                vec![event("Placed", 4)],
            ))
            .await
            .unwrap();
        let _ = store
            .append(append(
                "order-1",
                ExpectedVersion::Exact(Version(1)),
                second.clone(),
            ))
            .await
            .unwrap();
        store
            .read_all(Position(1), &Filter::all(), 100)
            .await
            .unwrap()
            .events
    };
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.head().await.unwrap(), Position(4));
    assert_eq!(
        store
            .read_all(Position(1), &Filter::all(), 100)
            .await
            .unwrap()
            .events,
        before
    );
    assert_eq!(
        store.stream_version(&stream("order-1")).await.unwrap(),
        Version(3)
    );
    let by_tag = store
        .read_all(Position(1), &Filter::all().tags(vec![tag]), 100)
        .await
        .unwrap();
    assert_eq!(
        by_tag.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![tagged.id]
    );

    let resent = store
        .append(append("order-1", ExpectedVersion::Any, second))
        .await
        .unwrap();
    assert!(resent.is_duplicate());
    assert_eq!(
        (
            resent.appended().first_position,
            resent.appended().last_position
        ),
        (Position(3), Position(4))
    );
    let next = store
        .append(append(
            "order-2",
            ExpectedVersion::Exact(Version(1)),
            vec![event("Paid", 5)],
        ))
        .await
        .unwrap();
    assert_eq!(
        (next.appended().last_version, next.appended().last_position),
        (Version(2), Position(5))
    );
}

/// Opens a store, appends four events to two streams, closes it, and returns the raw
/// SQLite file for tampering.
async fn store_with_four_events(dir: &std::path::Path) -> rusqlite::Connection {
    {
        let store = EmbeddedStore::open(dir).unwrap();
        for n in 0..4 {
            let s = if n % 2 == 0 { "a-1" } else { "b-1" };
            let _ = store
                .append(append(s, ExpectedVersion::Any, vec![event("E", n)]))
                .await
                .unwrap();
        }
    }
    rusqlite::Connection::open(dir.join(DATA_FILE)).unwrap()
}

fn assert_corrupted(result: Result<EmbeddedStore, StoreError>, needle: &str) {
    match result {
        Err(StoreError::Corrupted(message)) => assert!(message.contains(needle), "{message}"),
        other => panic!("expected a corrupted-data error mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn recovery_refuses_a_gap_in_positions() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    raw.execute("DELETE FROM events WHERE position = 2", [])
        .unwrap();
    drop(raw);
    assert_corrupted(
        EmbeddedStore::open(dir.path()),
        "positions are not gap-free",
    );
}

#[tokio::test]
async fn recovery_refuses_a_gap_in_a_streams_versions() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    raw.execute("UPDATE stream_index SET version = 7 WHERE position = 3", [])
        .unwrap();
    drop(raw);
    assert_corrupted(
        EmbeddedStore::open(dir.path()),
        "is not consecutive from its first version",
    );
}

#[tokio::test]
async fn recovery_refuses_a_gap_in_the_versions_of_events_not_yet_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    // As a crash leaves it: the index covers the first two positions only.
    raw.execute_batch(
        "DELETE FROM stream_index WHERE position > 2;
         UPDATE index_state SET indexed_through = 2;
         UPDATE events SET version = 7 WHERE position = 3",
    )
    .unwrap();
    drop(raw);
    assert_corrupted(
        EmbeddedStore::open(dir.path()),
        "has version 7 in stream id 1, whose previous version is 1",
    );
}

#[tokio::test]
async fn a_log_that_disagrees_with_the_stream_index_is_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    raw.execute("UPDATE events SET version = 7 WHERE position = 3", [])
        .unwrap();
    drop(raw);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    for direction in [Direction::Forward, Direction::Backward] {
        let from = if direction == Direction::Forward {
            1
        } else {
            9
        };
        let read = store
            .read_stream(&stream("a-1"), Version(from), direction, 10)
            .await;
        assert!(
            matches!(&read, Err(StoreError::Corrupted(m)) if m.contains("the log holds version 7")),
            "{read:?}"
        );
    }
}

#[tokio::test]
async fn a_version_missing_from_the_stream_index_is_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let events = (0..3).map(|n| event("E", n)).collect();
        let _ = store
            .append(append("a-1", ExpectedVersion::NoStream, events))
            .await
            .unwrap();
    }
    // Opening checks the index (`recovery_refuses_a_gap_in_a_streams_versions`): this
    // damage comes after, from another connection while the store is open.
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let raw = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
    let removed = raw
        .execute("DELETE FROM stream_index WHERE version = 2", [])
        .unwrap();
    assert_eq!(removed, 1, "the closed store had flushed its stream index");
    drop(raw);
    for (direction, from, missing, found) in [
        (Direction::Forward, 1, 2, 3),
        (Direction::Backward, 9, 2, 1),
    ] {
        let read = store
            .read_stream(&stream("a-1"), Version(from), direction, 10)
            .await;
        let expected = format!("version {missing} of stream a-1 is at position");
        let holds = format!("the log holds version {found} ");
        assert!(
            matches!(&read, Err(StoreError::Corrupted(m)) if m.contains(&expected) && m.contains(&holds)),
            "{direction:?}: {read:?}"
        );
    }
}

#[tokio::test]
async fn opening_after_a_crash_rebuilds_the_stream_index_entries_not_yet_written() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    // What a crash between two flushes of the stream index leaves.
    raw.execute_batch(
        "DELETE FROM stream_index WHERE position > 1;
         UPDATE index_state SET indexed_through = 1;",
    )
    .unwrap();
    drop(raw);
    let options = EmbeddedOptions {
        index_flush_events: 1_000,
        ..EmbeddedOptions::default()
    };
    {
        let store = EmbeddedStore::open_with(dir.path(), options.clone()).unwrap();
        let a = store
            .read_stream(&stream("a-1"), Version(1), Direction::Forward, 10)
            .await
            .unwrap();
        let b = store
            .read_stream(&stream("b-1"), Version(9), Direction::Backward, 10)
            .await
            .unwrap();
        let versions = |events: &[RecordedEvent]| {
            events
                .iter()
                .map(|e| (e.version.get(), e.position.get()))
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(&a), [(1, 1), (2, 3)]);
        assert_eq!(versions(&b), [(2, 4), (1, 2)]);
        let next = store
            .append(append(
                "b-1",
                ExpectedVersion::Exact(Version(2)),
                vec![event("E", 9)],
            ))
            .await
            .unwrap();
        assert_eq!(next.appended().last_position, Position(5));
    }
    // Closing wrote the entries into the table, and the next open finds them there.
    let raw = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
    let (rows, through): (i64, i64) = raw
        .query_row(
            "SELECT (SELECT COUNT(*) FROM stream_index), (SELECT indexed_through FROM index_state)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, through), (5, 5));
    drop(raw);
    let store = EmbeddedStore::open_with(dir.path(), options).unwrap();
    assert_eq!(
        store.stream_version(&stream("b-1")).await.unwrap(),
        Version(3)
    );
}

#[tokio::test]
async fn recovery_refuses_events_of_an_unknown_stream() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    raw.execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM streams WHERE name = 'b-1'")
        .unwrap();
    drop(raw);
    assert_corrupted(EmbeddedStore::open(dir.path()), "belong to no stream");
}

#[tokio::test]
async fn a_corrupted_stored_value_is_reported_on_read_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    raw.execute("UPDATE events SET event_id = x'00' WHERE position = 1", [])
        .unwrap();
    drop(raw);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let read = store.read_all(Position(1), &Filter::all(), 10).await;
    assert!(matches!(read, Err(StoreError::Corrupted(_))), "{read:?}");
}

fn open_error(dir: &std::path::Path) -> String {
    let err = EmbeddedStore::open(dir).expect_err("the open fails");
    err.to_string()
}

#[test]
fn opening_a_file_that_is_not_sqlite_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DATA_FILE), vec![b'x'; 8192]).unwrap();
    let message = open_error(dir.path());
    assert!(
        message.contains("is not a Concord database") && message.contains(DATA_FILE),
        "{message}"
    );
}

#[test]
fn opening_another_applications_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
    other.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    drop(other);
    let message = open_error(dir.path());
    assert!(message.contains("not a Concord store"), "{message}");
}

#[tokio::test]
async fn opening_a_store_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    raw.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(raw);
    let message = open_error(dir.path());
    assert!(
        message.contains("format version 99") && message.contains("reads format version 8"),
        "{message}"
    );
}

#[tokio::test]
async fn a_format_1_store_is_migrated_on_open_and_keeps_its_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<_>;
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let events = vec![event("Opened", 1), event("Deposited", 2)];
        ids = events.iter().map(|e| e.id).collect();
        let _ = store
            .append(append("account-7", ExpectedVersion::NoStream, events))
            .await
            .unwrap();
    }
    // Turn it back into format 1, as an older Concord wrote it.
    {
        let raw = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
        raw.execute_batch(
            "ALTER TABLE events DROP COLUMN content_type;
             DROP TABLE stream_lifecycle;
             DROP TABLE scavenge_state;
             DROP TABLE stream_index;
             DROP TABLE index_state;
             DROP TABLE event_ids;
             DROP TABLE type_index;
             DROP TABLE category_index;
             CREATE UNIQUE INDEX events_by_stream_version ON events (stream_id, version);
             CREATE UNIQUE INDEX events_by_stream_event_id ON events (stream_id, event_id);
             CREATE INDEX events_by_type ON events (type);
             CREATE INDEX events_by_category ON events (category);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let again: Vec<NewEvent> = ids
        .iter()
        .zip(["Opened", "Deposited"])
        .enumerate()
        .map(|(n, (id, ty))| {
            let mut e = event(ty, n as u64 + 1);
            e.id = *id;
            e
        })
        .collect();
    let outcome = store
        .append(append("account-7", ExpectedVersion::Any, again))
        .await
        .unwrap();
    assert!(
        matches!(outcome, AppendOutcome::Duplicate(_)),
        "{outcome:?}"
    );
    // The stream index moved into its table (format 3): the stream reads as before.
    let read = store
        .read_stream(&stream("account-7"), Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|e| (e.version, e.id)).collect::<Vec<_>>(),
        vec![(Version(1), ids[0]), (Version(2), ids[1])]
    );
    drop(store);
    let raw = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
    let (version, indexes, indexed, ids, types, categories): (i64, i64, i64, i64, i64, i64) = raw
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND name LIKE 'events_by_%'),
                    (SELECT COUNT(*) FROM stream_index),
                    (SELECT COUNT(*) FROM event_ids),
                    (SELECT COUNT(*) FROM type_index),
                    (SELECT COUNT(*) FROM category_index)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .unwrap();
    // Format 8: no index on the log; its lookups are tables written behind it.
    assert_eq!(
        (version, indexes, indexed, ids, types, categories),
        (8, 0, 2, 2, 2, 2)
    );
}

/// The schema of format 3, as Concord wrote it before events had a content type: a store
/// of an older release, built from scratch rather than from today's schema.
const FORMAT_3_SCHEMA: &str = r#"
CREATE TABLE streams (
    stream_id INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    category  TEXT NOT NULL
) STRICT;
CREATE TABLE events (
    position    INTEGER PRIMARY KEY,
    stream_id   INTEGER NOT NULL REFERENCES streams (stream_id),
    version     INTEGER NOT NULL,
    event_id    BLOB NOT NULL,
    type        TEXT NOT NULL,
    category    TEXT NOT NULL,
    data        BLOB NOT NULL,
    metadata    BLOB NOT NULL,
    tags        TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX events_by_event_id ON events (event_id, stream_id);
CREATE INDEX events_by_type ON events (type);
CREATE INDEX events_by_category ON events (category);
CREATE TABLE event_tags (
    tag      TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (tag, position)
) STRICT, WITHOUT ROWID;
CREATE TABLE stream_index (
    stream_id INTEGER NOT NULL,
    version   INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (stream_id, version)
) STRICT, WITHOUT ROWID;
CREATE TABLE index_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_through INTEGER NOT NULL
) STRICT;
PRAGMA application_id = 1129202500;
PRAGMA user_version = 3;
"#;

#[tokio::test]
async fn a_format_3_store_is_migrated_on_open_its_events_read_as_json_and_bytes_can_follow() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
    {
        let raw = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
        raw.execute_batch(FORMAT_3_SCHEMA).unwrap();
        raw.execute("INSERT INTO streams VALUES (1, 'account-7', 'account')", [])
            .unwrap();
        for (n, (id, data)) in ids
            .iter()
            .zip([r#"{ "owner" : "ann" }"#, "[1,2]"])
            .enumerate()
        {
            let position = n as i64 + 1;
            raw.execute(
                "INSERT INTO events VALUES (?1, 1, ?1, ?2, 'Opened', 'account', ?3, CAST('{}' AS BLOB), 'account:7', 1700000000000)",
                (position, id.as_bytes().as_slice(), data.as_bytes()),
            )
            .unwrap();
            raw.execute(
                "INSERT INTO event_tags VALUES ('account:7', ?1)",
                [position],
            )
            .unwrap();
        }
        raw.execute_batch(
            "INSERT INTO stream_index VALUES (1, 1, 1), (1, 2, 2);
             INSERT INTO index_state VALUES (1, 2);",
        )
        .unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let read = store
        .read_stream(&stream("account-7"), Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 2);
    for (e, text) in read.iter().zip([r#"{ "owner" : "ann" }"#, "[1,2]"]) {
        assert_eq!(e.data.content_type(), "application/json");
        assert_eq!(
            e.data.as_bytes(),
            text.as_bytes(),
            "the text as format 3 held it"
        );
    }
    assert_eq!(
        read.iter().map(|e| *e.id.as_uuid()).collect::<Vec<_>>(),
        ids.to_vec()
    );
    // Idempotency survives the migration, and bytes can be appended after it.
    let again = NewEvent::json("Opened", &serde_json::json!({}))
        .unwrap()
        .with_id(concord_core::EventId(ids[1]));
    let duplicate = store
        .append(append("account-7", ExpectedVersion::Any, vec![again]))
        .await
        .unwrap();
    assert!(
        matches!(&duplicate, AppendOutcome::Duplicate(a) if a.first_version == Version(2)),
        "{duplicate:?}"
    );
    let all: Vec<u8> = (0..=255).collect();
    let _ = store
        .append(append(
            "account-7",
            ExpectedVersion::Exact(Version(2)),
            vec![NewEvent::bytes("Scanned", "image/png", all.clone()).unwrap()],
        ))
        .await
        .unwrap();
    drop(store);

    let store = EmbeddedStore::open(dir.path()).unwrap();
    let read = store
        .read_stream(&stream("account-7"), Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read[2].data.content_type(), "image/png");
    assert_eq!(read[2].data.as_bytes(), &all[..]);
    assert!(read[0].data.is_json());
    drop(store);
    let raw = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
    let (version, json_rows, typed): (i64, i64, String) = raw
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT COUNT(*) FROM events WHERE content_type IS NULL),
                    (SELECT content_type FROM events WHERE position = 3)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((version, json_rows, typed.as_str()), (8, 2, "image/png"));
}

#[test]
fn opening_where_a_regular_file_stands_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"hello").unwrap();
    let message = open_error(&file);
    assert!(
        message.contains("cannot create the data directory") && message.contains("not-a-dir"),
        "{message}"
    );
}

#[test]
fn a_store_cannot_be_opened_twice_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let second = EmbeddedStore::open(dir.path());
    assert!(
        matches!(&second, Err(StoreError::Unavailable { .. })),
        "{second:?}"
    );
    assert!(second.unwrap_err().to_string().contains("already open"));
    drop(store);
    assert!(EmbeddedStore::open(dir.path()).is_ok());
}

#[tokio::test]
async fn buffered_durability_appends_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        durability: Durability::Buffered,
        ..EmbeddedOptions::default()
    };
    {
        let store = EmbeddedStore::open_with(dir.path(), options.clone()).unwrap();
        let _ = store
            .append(append(
                "t-1",
                ExpectedVersion::NoStream,
                vec![event("E", 1)],
            ))
            .await
            .unwrap();
    }
    let store = Arc::new(EmbeddedStore::open_with(dir.path(), options).unwrap());
    assert_eq!(
        store.stream_version(&stream("t-1")).await.unwrap(),
        Version(1)
    );
}

#[tokio::test]
async fn filtered_reads_page_through_a_sparse_match_without_losing_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let tag = Tag::new("rare").unwrap();
    let mut expected = Vec::new();
    for n in 0..300u64 {
        let mut e = event(if n % 3 == 0 { "A" } else { "B" }, n);
        if n % 25 == 6 {
            e = e.with_tags(vec![tag.clone()]);
        }
        let s = if n % 2 == 0 { "even-1" } else { "odd-1" };
        if n % 25 == 6 && n % 3 == 0 && n % 2 == 0 {
            expected.push(e.id);
        }
        let _ = store
            .append(append(s, ExpectedVersion::Any, vec![e]))
            .await
            .unwrap();
    }
    let filter = Filter::all()
        .category(concord_core::Category::new("even").unwrap())
        .types(vec![concord_core::EventType::new("A").unwrap()])
        .tags(vec![tag]);
    let mut from = Position(1);
    let mut got = Vec::new();
    loop {
        let page = store.read_all(from, &filter, 1).await.unwrap();
        got.extend(page.events.iter().map(|e| e.id));
        from = page.next_from;
        if page.is_caught_up() {
            break;
        }
    }
    assert_eq!(got, expected);
    assert!(!expected.is_empty());
}

/// The concurrent events of conflicts and rebases on a contended stream come from the
/// writer's in-memory tail after the first one; they must be exactly what the stream holds,
/// also when an expectation is further back than the tail reaches.
#[tokio::test]
async fn concurrent_events_of_a_contended_stream_are_exactly_the_stored_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let s = "hot-1";
    let check = |stored: Vec<concord_core::RecordedEvent>,
                 reported: &[concord_core::RecordedEvent]| {
        assert_eq!(
            reported,
            &stored[..],
            "reported concurrent events differ from the stream's"
        );
    };
    for round in 0..40u64 {
        let expected = store.stream_version(&stream(s)).await.unwrap();
        // Eight appends at the same version in one batch: the first is written, the
        // others are rebased over it and each other.
        let requests = (0..8)
            .map(|i| {
                append(
                    s,
                    ExpectedVersion::Exact(expected),
                    vec![event("Deposited", round * 8 + i)],
                )
                .rebase_unless(vec![])
            })
            .collect();
        for outcome in in_one_batch(&store, requests).await {
            if let AppendOutcome::Rebased {
                appended,
                expected_version,
                concurrent_events,
            } = outcome.unwrap()
            {
                let n = (appended.first_version.get() - expected_version.get() - 1) as usize;
                let stored = store
                    .read_stream(
                        &stream(s),
                        expected_version.next(),
                        Direction::Forward,
                        n.min(100),
                    )
                    .await
                    .unwrap();
                check(stored, &concurrent_events);
            }
        }
        // A stale expectation, near (from the tail) and far back (past it: from SQL).
        for stale in [expected.get(), round] {
            let result = store
                .append(append(
                    s,
                    ExpectedVersion::Exact(Version(stale)),
                    vec![event("Deposited", 0)],
                ))
                .await;
            let Err(StoreError::Conflict(conflict)) = result else {
                panic!("expected a conflict at version {stale}, got {result:?}");
            };
            let stored = store
                .read_stream(&stream(s), Version(stale + 1), Direction::Forward, 100)
                .await
                .unwrap();
            assert_eq!(conflict.truncated, conflict.actual.get() - stale > 100);
            check(stored, &conflict.concurrent_events);
        }
    }
    assert_eq!(
        store.stream_version(&stream(s)).await.unwrap(),
        Version(320)
    );
}

/// The rebase rule on a contended stream reads the concurrent types from the writer's
/// tail, which remembers each type's last version while a stream has had at most 64 types
/// and compares every held event's type past that. Both must decide as the rule says: a
/// listed type among the concurrent events refuses the rebase, one that only came before
/// the expected version does not.
#[tokio::test]
async fn the_rebase_rule_of_a_contended_stream_sees_the_type_of_every_concurrent_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let s = "hot-2";
    let _ = store
        .append(append(s, ExpectedVersion::NoStream, vec![event("T0", 0)]))
        .await
        .unwrap();
    let ty = |name: &str| EventType::new(name).unwrap();
    let stale = |at: Version, unless: Vec<EventType>| {
        append(s, ExpectedVersion::Exact(at), vec![event("Noted", 0)]).rebase_unless(unless)
    };
    // 100 types in all: the tail stops remembering types at 64, half way through.
    for round in 1..100u64 {
        let at = store.stream_version(&stream(s)).await.unwrap();
        let (this, before) = (format!("T{round}"), format!("T{}", round - 1));
        let written = store
            .append(append(
                s,
                ExpectedVersion::Exact(at),
                vec![event(&this, round)],
            ))
            .await
            .unwrap();
        assert!(!written.is_rebased());
        let rebased = store.append(stale(at, vec![ty(&before)])).await.unwrap();
        assert!(
            rebased.is_rebased(),
            "round {round}: {before} is not concurrent"
        );
        for unless in [vec![ty(&this)], vec![ty("Never"), ty("Noted")]] {
            let refused = store.append(stale(at, unless.clone())).await;
            assert!(
                matches!(&refused, Err(StoreError::Conflict(c)) if c.concurrent_events.len() == 2),
                "round {round}: {unless:?} is among the concurrent types: {refused:?}"
            );
        }
        let rebased = store
            .append(stale(at.next(), vec![ty(&this), ty(&before)]))
            .await
            .unwrap();
        assert!(
            rebased.is_rebased(),
            "round {round}: after {this}, only Noted"
        );
    }
    assert_eq!(
        store.stream_version(&stream(s)).await.unwrap(),
        Version(298)
    );
}

/// Sends `requests` as multi-stream appends while the writer is paused, so they form one
/// batch, and returns their answers in order.
async fn multi_in_one_batch(
    store: &EmbeddedStore,
    requests: Vec<MultiAppendRequest>,
) -> Vec<Result<MultiAppendOutcome, StoreError>> {
    let pause = store.pause_writer();
    let mut pending: Vec<_> = requests
        .into_iter()
        .map(|r| store.append_multi(r).boxed())
        .collect();
    for p in &mut pending {
        assert!(
            p.as_mut().now_or_never().is_none(),
            "an append answered while the writer was paused"
        );
    }
    drop(pause);
    futures::future::join_all(pending).await
}

fn transfer_part(s: &str, ty: &str, tag: &str) -> AppendRequest {
    append(
        s,
        ExpectedVersion::Any,
        vec![event(ty, 1).with_tags(vec![Tag::new(tag).unwrap()])],
    )
}

/// The condition of a request is checked inside the batch's transaction, so it sees what
/// the requests before it in the same batch wrote, though none of them is committed yet.
#[tokio::test]
async fn a_condition_sees_the_multi_stream_append_before_it_in_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let _ = store
        .append(append(
            "other-1",
            ExpectedVersion::Any,
            vec![event("Opened", 0)],
        ))
        .await
        .unwrap();
    let after = store.head().await.unwrap();
    let guarded = Query::item(
        vec![EventType::new("Withdrawn").unwrap()],
        vec![Tag::new("account:1").unwrap()],
    );
    let first = MultiAppendRequest::new(vec![
        transfer_part("account-1", "Withdrawn", "account:1"),
        transfer_part("account-2", "Deposited", "account:2"),
    ])
    .condition(guarded.clone(), after);
    let second = MultiAppendRequest::new(vec![
        transfer_part("account-1", "Withdrawn", "account:1"),
        transfer_part("account-3", "Deposited", "account:3"),
    ])
    .condition(guarded.clone(), after);
    // Its condition is about another account: it holds, and the append is written right
    // after the first (the refused second takes no position).
    let third = MultiAppendRequest::new(vec![transfer_part("account-4", "Deposited", "account:4")])
        .condition(
            Query::item(
                vec![EventType::new("Withdrawn").unwrap()],
                vec![Tag::new("account:4").unwrap()],
            ),
            Position(0),
        );
    let answers = multi_in_one_batch(&store, vec![first, second, third]).await;

    let [first, second, third] = <[_; 3]>::try_from(answers).unwrap();
    let first = first.unwrap();
    assert_eq!(
        (first.first_position, first.last_position),
        (Position(2), Position(3))
    );
    let Err(StoreError::ConditionFailed(failed)) = second else {
        panic!("the second append's condition should have failed, got {second:?}");
    };
    assert_eq!(failed.after, after);
    let matching: Vec<_> = failed
        .matching_events
        .iter()
        .map(|e| (e.stream.as_str().to_owned(), e.position))
        .collect();
    assert_eq!(matching, vec![("account-1".to_owned(), Position(2))]);
    let third = third.unwrap();
    assert_eq!(
        (third.first_position, third.last_position),
        (Position(4), Position(4))
    );

    // Nothing of the refused append was written.
    assert_eq!(store.head().await.unwrap(), Position(4));
    for (s, version) in [
        ("account-1", 1),
        ("account-2", 1),
        ("account-3", 0),
        ("account-4", 1),
    ] {
        assert_eq!(
            store.stream_version(&stream(s)).await.unwrap(),
            Version(version),
            "{s}"
        );
    }
}

/// The indexed lookup behind query reads and conditions agrees with core's match rule:
/// random events (a few types, overlapping tags) and random queries, each answer compared
/// with `Query::matches` applied to the whole log.
#[tokio::test]
async fn query_reads_and_conditions_agree_with_the_core_match_rule() {
    use concord_core::QueryItem;
    use rand::{Rng, SeedableRng};

    let seed: u64 = std::env::var("CONCORD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (replay with CONCORD_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let types = ["Opened", "Deposited", "Withdrawn"];
    let tags = ["a", "b", "c", "d"];
    let pick_tags = |rng: &mut rand::rngs::StdRng, max: usize| -> Vec<Tag> {
        (0..rng.random_range(0..=max))
            .map(|_| Tag::new(tags[rng.random_range(0..tags.len())]).unwrap())
            .collect()
    };
    for i in 0..60u64 {
        let parts = (0..rng.random_range(1..=3usize))
            .map(|p| {
                let events = (0..rng.random_range(1..=3))
                    .map(|_| {
                        event(types[rng.random_range(0..types.len())], i)
                            .with_tags(pick_tags(&mut rng, 3))
                    })
                    .collect();
                append(&format!("s{p}-{}", i % 5), ExpectedVersion::Any, events)
            })
            .collect();
        let _ = store
            .append_multi(MultiAppendRequest::new(parts))
            .await
            .unwrap();
    }
    for _ in 0..200 {
        // Re-read: a probe whose condition held was written.
        let log = store
            .read_all(Position(1), &Filter::all(), 1000)
            .await
            .unwrap()
            .events;
        let head = store.head().await.unwrap();
        let items = (0..rng.random_range(0..=3))
            .map(|_| {
                let mut item = QueryItem {
                    types: (0..rng.random_range(0..=2))
                        .map(|_| EventType::new(types[rng.random_range(0..types.len())]).unwrap())
                        .collect(),
                    tags: pick_tags(&mut rng, 2),
                };
                if item.types.is_empty() && item.tags.is_empty() {
                    item.tags.push(Tag::new("a").unwrap());
                }
                item
            })
            .collect();
        let query = Query { items };
        let after = Position(rng.random_range(0..=head.get()));
        let expected: Vec<_> = log
            .iter()
            .filter(|e| e.position > after && query.matches(e))
            .collect();
        let limit = rng.random_range(1..=30);
        let page = store.query(&query, after, limit).await.unwrap();
        assert_eq!(page.head, head);
        let got: Vec<_> = page.events.iter().collect();
        let want: Vec<_> = expected.iter().take(limit).copied().collect();
        assert_eq!(got, want, "{query:?} after {after} limit {limit}");
        assert_eq!(
            page.next,
            (expected.len() > limit).then(|| want.last().unwrap().position),
            "{query:?} after {after} limit {limit}"
        );
        // The same query as a condition fails exactly when it matches, naming the first 100.
        let result = store
            .append_multi(
                MultiAppendRequest::from(append(
                    "probe-1",
                    ExpectedVersion::Any,
                    vec![event("Probe", 0)],
                ))
                .condition(query.clone(), after),
            )
            .await;
        match result {
            Err(StoreError::ConditionFailed(failed)) => {
                let want: Vec<_> = expected.iter().take(100).copied().collect();
                assert_eq!(failed.matching_events.iter().collect::<Vec<_>>(), want);
            }
            Ok(_) => assert!(
                expected.is_empty(),
                "{query:?} after {after} matched nothing"
            ),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

/// Multi-stream appends keep the writer's tails of contended streams exact: parts rebased
/// in one batch, and the single appends after them, report exactly the stored events.
#[tokio::test]
async fn multi_stream_parts_keep_the_tails_of_contended_streams_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let hot = "hot-2";
    let stored_from = |from: Version, n: usize| {
        let store = &store;
        async move {
            store
                .read_stream(&stream(hot), from, Direction::Forward, n)
                .await
                .unwrap()
        }
    };
    for round in 0..10u64 {
        let expected = store.stream_version(&stream(hot)).await.unwrap();
        let requests = (0..6)
            .map(|i| {
                MultiAppendRequest::new(vec![
                    append(
                        &format!("cold-{round}x{i}"),
                        ExpectedVersion::NoStream,
                        vec![event("Withdrawn", i)],
                    ),
                    append(
                        hot,
                        ExpectedVersion::Exact(expected),
                        vec![event("Deposited", i), event("Deposited", i)],
                    )
                    .rebase_unless(vec![]),
                ])
            })
            .collect();
        for outcome in multi_in_one_batch(&store, requests).await {
            let outcome = outcome.unwrap();
            assert_eq!(
                outcome.last_position.get() - outcome.first_position.get(),
                2,
                "three consecutive positions"
            );
            if let AppendOutcome::Rebased {
                appended,
                expected_version,
                concurrent_events,
            } = &outcome.parts[1]
            {
                let n = (appended.first_version.get() - expected_version.get() - 1) as usize;
                assert_eq!(
                    concurrent_events,
                    &stored_from(expected_version.next(), n).await
                );
            }
        }
        let stale = store
            .append(append(
                hot,
                ExpectedVersion::Exact(expected),
                vec![event("Deposited", 0)],
            ))
            .await;
        let Err(StoreError::Conflict(conflict)) = stale else {
            panic!("expected a conflict, got {stale:?}");
        };
        assert_eq!(
            conflict.concurrent_events,
            stored_from(expected.next(), 100).await
        );
    }
    assert_eq!(
        store.stream_version(&stream(hot)).await.unwrap(),
        Version(120)
    );
}

/// Waits until the data file itself (read through a connection of our own, as SQLite
/// shows it to any reader) holds `head` events: the writer has committed them.
async fn committed_in_sqlite(dir: &std::path::Path, head: i64) {
    let conn = rusqlite::Connection::open(dir.join(DATA_FILE)).unwrap();
    for _ in 0..5000 {
        let max: i64 = conn
            .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
                r.get(0)
            })
            .unwrap();
        if max >= head {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the writer never committed position {head}");
}

#[tokio::test]
async fn a_committed_batch_stays_invisible_to_readers_until_it_is_synced_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let first = event("Deposited", 1);
    let _ = store
        .append(append("acct-1", ExpectedVersion::NoStream, vec![first]))
        .await
        .unwrap();

    let pause = store.pause_syncer();
    let mut pending = vec![
        store
            .append(append(
                "acct-1",
                ExpectedVersion::Exact(Version(1)),
                vec![event("Deposited", 2)],
            ))
            .boxed(),
        store
            .append(append(
                "acct-2",
                ExpectedVersion::NoStream,
                vec![event("Deposited", 3)],
            ))
            .boxed(),
    ];
    for p in &mut pending {
        assert!(p.as_mut().now_or_never().is_none());
    }
    committed_in_sqlite(dir.path(), 3).await;

    // Committed, not synced: no reader may see it, and nobody has been answered.
    assert_eq!(store.head().await.unwrap(), Position(1));
    let one = store
        .read_stream(&stream("acct-1"), Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let backward = store
        .read_stream(
            &stream("acct-1"),
            Version(u64::MAX >> 1),
            Direction::Backward,
            10,
        )
        .await
        .unwrap();
    assert_eq!(backward.len(), 1);
    assert_eq!(
        store.stream_version(&stream("acct-1")).await.unwrap(),
        Version(1)
    );
    assert_eq!(
        store.stream_version(&stream("acct-2")).await.unwrap(),
        Version(0)
    );
    let all = store
        .read_all(Position(1), &Filter::default(), 10)
        .await
        .unwrap();
    assert_eq!((all.events.len(), all.head), (1, Position(1)));
    let by_type = Filter {
        types: vec![EventType::new("Deposited").unwrap()],
        ..Filter::default()
    };
    let typed = store.read_all(Position(1), &by_type, 10).await.unwrap();
    assert_eq!(typed.events.len(), 1);
    let listed = store.list_streams("acct", None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, Version(1));
    let query = Query::item(vec![EventType::new("Deposited").unwrap()], Vec::new());
    let page = store.query(&query, Position(0), 10).await.unwrap();
    assert_eq!((page.events.len(), page.head), (1, Position(1)));
    for p in &mut pending {
        assert!(
            p.as_mut().now_or_never().is_none(),
            "an append was acknowledged before its sync"
        );
    }

    drop(pause);
    let answers: Vec<_> = futures::future::join_all(pending)
        .await
        .into_iter()
        .map(|a| {
            let a = a.unwrap();
            (a.appended().last_version, a.appended().last_position)
        })
        .collect();
    assert_eq!(
        answers,
        vec![(Version(2), Position(2)), (Version(1), Position(3))]
    );
    assert_eq!(store.head().await.unwrap(), Position(3));
    assert_eq!(
        store.stream_version(&stream("acct-2")).await.unwrap(),
        Version(1)
    );
    let all = store
        .read_all(Position(1), &Filter::default(), 10)
        .await
        .unwrap();
    assert_eq!(all.events.len(), 3);
    assert_eq!(store.list_streams("acct", None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_sync_poisons_the_store_and_nothing_after_it_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let _ = store
        .append(append(
            "order-9",
            ExpectedVersion::NoStream,
            vec![event("Placed", 1)],
        ))
        .await
        .unwrap();
    store.inject_fault(Fault::FailNextSync);
    let failed = store
        .append(append(
            "order-9",
            ExpectedVersion::Exact(Version(1)),
            vec![event("Paid", 2)],
        ))
        .await;
    let message = failed.unwrap_err().to_string();
    assert!(message.contains("sync"), "{message}");
    let refused = store
        .append(append(
            "order-10",
            ExpectedVersion::Any,
            vec![event("Placed", 3)],
        ))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Poisoned(_))),
        "{refused:?}"
    );
    // The unsynced batch was never published.
    assert_eq!(store.head().await.unwrap(), Position(1));
    assert_eq!(
        store.stream_version(&stream("order-9")).await.unwrap(),
        Version(1)
    );
    drop(store);

    // Reopening syncs whatever the process had committed; the acknowledged event is there.
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(store.poisoned().is_none());
    let events = store
        .read_stream(&stream("order-9"), Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(events[0].event_type.as_str(), "Placed");
}

/// Readers combine the stream index table with the entries the writer has not written
/// into it yet, while flushes move entries from one to the other: every read (and every
/// listing) must still see each published version exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_every_version_once_while_the_indexes_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        index_flush_events: 3,
        ..EmbeddedOptions::default()
    };
    let store = Arc::new(EmbeddedStore::open_with(dir.path(), options).unwrap());
    const EVENTS: u64 = 300;
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for n in 0..EVENTS {
                // Two streams interleaved, so a stream's unflushed events are not dense.
                for s in ["hot-1", "other-1"] {
                    let _ = store
                        .append(append(s, ExpectedVersion::Any, vec![event("E", n)]))
                        .await
                        .unwrap();
                }
            }
        })
    };
    let hot = stream("hot-1");
    let mut seen = 0;
    let mut reads = 0;
    loop {
        let finished = writer.is_finished();
        let forward = store
            .read_stream(&hot, Version(1), Direction::Forward, 1_000)
            .await
            .unwrap();
        let versions: Vec<u64> = forward.iter().map(|e| e.version.get()).collect();
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
        assert!(versions.len() as u64 >= seen, "a read lost versions");
        seen = versions.len() as u64;
        let backward = store
            .read_stream(&hot, Version(u64::MAX), Direction::Backward, 4)
            .await
            .unwrap();
        let top = backward.first().map_or(0, |e| e.version.get());
        assert!(
            top >= seen,
            "backward read ends at {top}, forward saw {seen}"
        );
        let expected: Vec<u64> = (1..=top).rev().take(4).collect();
        assert_eq!(
            backward.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
            expected
        );
        let version = store.stream_version(&hot).await.unwrap().get();
        assert!(version >= top);
        // Reads by type and by category combine their tables with the unflushed entries
        // the same way: every event once, in order.
        let every = Filter::all().types(vec![EventType::new("E").unwrap()]);
        let page = store.read_all(Position(1), &every, 1_000).await.unwrap();
        assert_eq!(
            page.events
                .iter()
                .map(|e| e.position.get())
                .collect::<Vec<_>>(),
            (1..=page.head.get()).collect::<Vec<_>>()
        );
        let hot_category = Filter::all().category(concord_core::Category::new("hot").unwrap());
        let page = store
            .read_all(Position(1), &hot_category, 1_000)
            .await
            .unwrap();
        let versions: Vec<u64> = page.events.iter().map(|e| e.version.get()).collect();
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
        assert!(versions.len() as u64 >= top);
        // A listing looks up each stream's head while it steps through the streams.
        let listed = store.list_streams("", None, 10).await.unwrap();
        if version > 0 {
            let entry = listed.iter().find(|s| s.stream == hot);
            assert!(
                entry.is_some_and(|s| s.version.get() >= version),
                "listing {listed:?} after version {version}"
            );
        }
        reads += 1;
        if finished {
            break;
        }
    }
    writer.await.unwrap();
    assert_eq!(seen, EVENTS);
    assert!(reads > 1, "the reads ran beside the appends");
}

/// Versions, ids and positions of a forward read of `account-1`.
async fn read_forward(
    store: &impl EventStore,
    from: u64,
    limit: usize,
) -> Vec<(Version, concord_core::EventId, Position)> {
    store
        .read_stream(
            &stream("account-1"),
            Version(from),
            Direction::Forward,
            limit,
        )
        .await
        .unwrap()
        .iter()
        .map(|e| (e.version, e.id, e.position))
        .collect()
}

/// Every edge of a read cut in two (from, limit): a first half the data ends in, a start
/// at 0 or past the end, a range the limit cuts, exactly the threshold.
const SPLIT_EDGES: [(u64, usize); 11] = [
    (0, 1000),
    (0, 300),
    (1, 700),
    (1, 256),
    (200, 300),
    (450, 256),
    (500, 300),
    (650, 400),
    (700, 512),
    (701, 300),
    (5_000, 1000),
];

/// An embedded store and the reference store holding the same 700 events, appended 100 at
/// a time to `streams` in turn.
async fn seeded_with_700(
    streams: &[&str],
) -> (tempfile::TempDir, EmbeddedStore, concord_core::MemoryStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let reference = concord_core::MemoryStore::new();
    for (chunk, name) in (0..7u64).zip(streams.iter().cycle()) {
        let events: Vec<NewEvent> = (0..100)
            .map(|n| event("Deposited", chunk * 100 + n))
            .collect();
        let request = append(name, ExpectedVersion::Any, events);
        let _ = store.append(request.clone()).await.unwrap();
        let _ = reference.append(request).await.unwrap();
    }
    (dir, store, reference)
}

#[tokio::test]
async fn a_long_read_read_in_two_halves_returns_what_the_reference_store_does() {
    // Forward reads of 256 events or more run as two halves on two reader threads; each
    // must read exactly what one read would.
    let (_dir, store, reference) = seeded_with_700(&["account-1"]).await;
    for (from, limit) in SPLIT_EDGES {
        assert_eq!(
            read_forward(&store, from, limit).await,
            read_forward(&reference, from, limit).await,
            "from {from}, limit {limit}"
        );
    }
    let all = store
        .read_stream(&stream("account-1"), Version(1), Direction::Forward, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), 700);
    assert!(
        all.windows(2)
            .all(|w| w[1].version.get() == w[0].version.get() + 1)
    );
}

#[tokio::test]
async fn a_long_catch_up_read_in_two_halves_returns_what_the_reference_store_does() {
    // Unfiltered reads of the global log of 256 events or more run as two halves too; the
    // page (events, where the next read continues, the head) must be one read's.
    let (_dir, store, reference) = seeded_with_700(&["account-0", "account-1", "account-2"]).await;
    let page = |p: concord_core::AllPage| {
        let seen: Vec<_> = p.events.iter().map(|e| (e.position, e.id)).collect();
        (seen, p.next_from, p.head)
    };
    for (from, limit) in SPLIT_EDGES {
        let ours = store
            .read_all(Position(from), &Filter::all(), limit)
            .await
            .unwrap();
        let theirs = reference
            .read_all(Position(from), &Filter::all(), limit)
            .await
            .unwrap();
        assert_eq!(page(ours), page(theirs), "from {from}, limit {limit}");
    }
}

/// Polls `future` once, with a waker that does nothing.
fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    let waker = futures::task::noop_waker();
    std::pin::Pin::new(future).poll(&mut std::task::Context::from_waker(&waker))
}

#[tokio::test]
async fn a_lone_append_is_committed_and_answered_on_the_callers_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    // The first poll lets other ready tasks enter their appends; by the second a lone
    // append is decided, committed, synced and answered without a hand-off to the writer
    // thread (which would take at least an fsync). The writer thread may hold its state
    // for a moment (it starts, or it is woken to flush the index later), and then an
    // append joins its next batch, so some of these may be handed over; each is answered
    // either way.
    let mut answered_at_once = 0;
    for n in 1..=50u64 {
        let mut pending = store
            .append(append("solo-1", ExpectedVersion::Any, vec![event("E", n)]))
            .boxed();
        assert!(poll_once(&mut pending).is_pending());
        let outcome = match poll_once(&mut pending) {
            std::task::Poll::Ready(outcome) => {
                answered_at_once += 1;
                outcome
            }
            std::task::Poll::Pending => pending.await,
        };
        let AppendOutcome::Appended(appended) = outcome.unwrap() else {
            panic!("append {n} was not written");
        };
        assert_eq!(appended.last_version, Version(n));
        assert_eq!(appended.last_position, Position(n));
        // Acknowledged means visible.
        assert_eq!(store.head().await.unwrap(), Position(n));
    }
    assert!(
        answered_at_once > 0,
        "no lone append was answered on its caller's thread"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn appends_of_many_tasks_on_one_thread_are_not_committed_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    // A lone caller first, so that the store takes the next append for a lone one's.
    for n in 1..=20u64 {
        let _ = store
            .append(append("solo-1", ExpectedVersion::Any, vec![event("E", n)]))
            .await
            .unwrap();
    }
    // Then 16 at once on this one thread: the first must not commit alone while the others
    // wait behind it (one fsync each); each enters before any is answered.
    let mut pending: Vec<_> = (0..16u64)
        .map(|n| {
            store
                .append(append(
                    &format!("task-{n}"),
                    ExpectedVersion::NoStream,
                    vec![event("E", n)],
                ))
                .boxed()
        })
        .collect();
    for (n, p) in pending.iter_mut().enumerate() {
        // The others are handed to the writer in this poll: none could be on the device yet.
        assert!(poll_once(p).is_pending(), "append {n} answered at once");
    }
    // The first one, polled again once the others entered, joins them rather than
    // committing alone (which would answer it within this poll).
    assert!(
        poll_once(&mut pending[0]).is_pending(),
        "the first append was committed alone while the others waited"
    );
    let mut positions: Vec<u64> = futures::future::join_all(pending)
        .await
        .into_iter()
        .map(|outcome| match outcome.unwrap() {
            AppendOutcome::Appended(appended) => appended.last_position.get(),
            other => panic!("not written: {other:?}"),
        })
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (21..=36).collect::<Vec<_>>());
}

/// Waits until the stream index table holds `events` entries, all of them written.
async fn wait_until_indexed(dir: &std::path::Path, events: i64) {
    let raw = rusqlite::Connection::open(dir.join(DATA_FILE)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (entries, indexed_through): (i64, i64) = raw
            .query_row(
                "SELECT (SELECT COUNT(*) FROM stream_index), (SELECT indexed_through FROM index_state)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if (entries, indexed_through) == (events, events) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream index holds {entries} entries, indexed through {indexed_through}, not {events}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_quiet_store_writes_the_stream_index_of_lone_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut appended = 0;
    for burst in [20, 3] {
        for _ in 0..burst {
            appended += 1;
            let _ = store
                .append(append(
                    "solo-1",
                    ExpectedVersion::Any,
                    vec![event("E", appended)],
                ))
                .await
                .unwrap();
        }
        // After the first burst the writer thread flushed and went to sleep with nothing
        // to flush; the second burst, committed on the caller's thread, wakes it.
        wait_until_indexed(dir.path(), appended as i64).await;
    }
}

/// Phases of one lone caller (committing on its own thread once it is taken for one)
/// alternate with bursts of many (the writer's batches), on a runtime with several
/// workers, so the two paths hand the writer's state back and forth: every version and
/// every position is granted exactly once, and a conflict is still a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_and_concurrent_appends_alternate_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let mut expected_events = 0u64;
    for phase in 0..4u64 {
        for n in 0..30u64 {
            let outcome = store
                .append(append(
                    "lone-1",
                    ExpectedVersion::Exact(Version(phase * 30 + n)),
                    vec![event("E", n)],
                ))
                .await
                .unwrap();
            assert!(matches!(outcome, AppendOutcome::Appended(_)), "{outcome:?}");
            expected_events += 1;
        }
        // A stale expectation from the lone caller is refused, on whichever path.
        let stale = store
            .append(append(
                "lone-1",
                ExpectedVersion::Exact(Version(phase * 30)),
                vec![event("E", 0)],
            ))
            .await;
        assert!(
            matches!(&stale, Err(StoreError::Conflict(c)) if c.actual == Version((phase + 1) * 30)),
            "{stale:?}"
        );
        let transfer = MultiAppendRequest::new(vec![
            transfer_part("account-1", "Withdrawn", "account:1"),
            transfer_part("account-2", "Deposited", "account:2"),
        ]);
        let transferred = store.append_multi(transfer).await.unwrap();
        assert!(!transferred.duplicate);
        assert_eq!(
            transferred.last_position.get() - transferred.first_position.get(),
            1
        );
        expected_events += 2;
        let burst: Vec<_> = (0..8u64)
            .map(|task| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for n in 0..10u64 {
                        let _ = store
                            .append(append(
                                &format!("burst-{task}"),
                                ExpectedVersion::Any,
                                vec![event("E", n)],
                            ))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in burst {
            task.await.unwrap();
        }
        expected_events += 80;
    }
    let page = store
        .read_all(Position(1), &Filter::all(), 10_000)
        .await
        .unwrap();
    let positions: Vec<u64> = page.events.iter().map(|e| e.position.get()).collect();
    assert_eq!(positions, (1..=expected_events).collect::<Vec<_>>());
    let mut by_stream: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for e in &page.events {
        by_stream
            .entry(e.stream.as_str().to_owned())
            .or_default()
            .push(e.version.get());
    }
    for (stream, versions) in &by_stream {
        assert_eq!(
            versions,
            &(1..=versions.len() as u64).collect::<Vec<_>>(),
            "{stream}"
        );
    }
    assert_eq!(by_stream["lone-1"].len(), 120);
    assert_eq!(by_stream["burst-0"].len(), 40);
    assert_eq!(by_stream["account-1"].len(), 4);
}

/// The id, type and category indexes of the events since the last flush, as the store's
/// file holds them: `(event_ids, type_index, category_index)` rows.
fn index_rows(dir: &std::path::Path) -> (i64, i64, i64) {
    let raw = rusqlite::Connection::open(dir.join(DATA_FILE)).unwrap();
    raw.query_row(
        "SELECT (SELECT COUNT(*) FROM event_ids), (SELECT COUNT(*) FROM type_index),
                (SELECT COUNT(*) FROM category_index)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

/// An append's commit writes the log and nothing else of it: the idempotency, type and
/// category entries wait in memory for the flush. Every lookup sees them meanwhile:
/// duplicates, filtered reads, DCB queries and conditions.
#[tokio::test]
async fn an_appends_commit_leaves_its_id_type_and_category_entries_to_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let first = event("Opened", 1);
    let _ = store
        .append(append(
            "account-1",
            ExpectedVersion::NoStream,
            vec![first.clone()],
        ))
        .await
        .unwrap();
    let _ = store
        .append(append(
            "order-1",
            ExpectedVersion::NoStream,
            vec![event("Placed", 2)],
        ))
        .await
        .unwrap();
    assert_eq!(index_rows(dir.path()), (0, 0, 0), "nothing flushed yet");

    let again = store
        .append(append(
            "account-1",
            ExpectedVersion::Any,
            vec![first.clone()],
        ))
        .await
        .unwrap();
    assert!(matches!(again, AppendOutcome::Duplicate(_)), "{again:?}");
    let opened = Filter::all().types(vec![EventType::new("Opened").unwrap()]);
    let page = store.read_all(Position(1), &opened, 10).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [Position(1)]
    );
    let orders = Filter::all().category(concord_core::Category::new("order").unwrap());
    let page = store.read_all(Position(1), &orders, 10).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [Position(2)]
    );
    let placed = Query::item(vec![EventType::new("Placed").unwrap()], vec![]);
    let page = store.query(&placed, Position(0), 10).await.unwrap();
    assert_eq!(page.events.len(), 1);
    let guarded = MultiAppendRequest::new(vec![append(
        "order-2",
        ExpectedVersion::NoStream,
        vec![event("Placed", 3)],
    )])
    .condition(placed.clone(), Position(1));
    let refused = store.append_multi(guarded).await;
    assert!(
        matches!(&refused, Err(StoreError::ConditionFailed(f)) if f.matching_events.len() == 1),
        "{refused:?}"
    );
    assert_eq!(store.head().await.unwrap(), Position(2));
    drop(store);

    // Closing flushes them; the tables then answer the same lookups.
    assert_eq!(index_rows(dir.path()), (2, 2, 2));
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let again = store
        .append(append("account-1", ExpectedVersion::Any, vec![first]))
        .await
        .unwrap();
    assert!(matches!(again, AppendOutcome::Duplicate(_)), "{again:?}");
    let page = store.read_all(Position(1), &opened, 10).await.unwrap();
    assert_eq!(page.events.len(), 1);
    let page = store.query(&placed, Position(0), 10).await.unwrap();
    assert_eq!(page.events.len(), 1);
}

#[tokio::test]
async fn opening_after_a_crash_rebuilds_the_id_type_and_category_entries_not_yet_written() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    // What a crash between two flushes leaves: the entries of positions 2 to 4 only in the
    // log.
    raw.execute_batch(
        "DELETE FROM stream_index WHERE position > 1;
         DELETE FROM event_ids WHERE (event_id, stream_id) IN
             (SELECT event_id, stream_id FROM events WHERE position > 1);
         DELETE FROM type_index WHERE position > 1;
         DELETE FROM category_index WHERE position > 1;
         UPDATE index_state SET indexed_through = 1;",
    )
    .unwrap();
    let id: Vec<u8> = raw
        .query_row("SELECT event_id FROM events WHERE position = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    drop(raw);
    let options = EmbeddedOptions {
        index_flush_events: 1_000,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path(), options).unwrap();
    let mut resent = event("E", 2);
    resent.id = concord_core::EventId(uuid::Uuid::from_slice(&id).unwrap());
    let again = store
        .append(append("a-1", ExpectedVersion::Any, vec![resent]))
        .await
        .unwrap();
    assert!(
        matches!(&again, AppendOutcome::Duplicate(a) if a.first_position == Position(3)),
        "{again:?}"
    );
    let by_type = Filter::all().types(vec![EventType::new("E").unwrap()]);
    let page = store.read_all(Position(1), &by_type, 10).await.unwrap();
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.position.get())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let b = Filter::all().category(concord_core::Category::new("b").unwrap());
    let page = store.read_all(Position(1), &b, 10).await.unwrap();
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.position.get())
            .collect::<Vec<_>>(),
        [2, 4]
    );
    let query = Query::item(vec![EventType::new("E").unwrap()], vec![]);
    let page = store.query(&query, Position(2), 10).await.unwrap();
    assert_eq!(page.events.len(), 2);
}

/// A store of format 7 (the id, type and category lookups were SQLite indexes on the log)
/// opens as format 8 with every lookup intact, whether or not its stream index had caught
/// up when it was closed.
#[tokio::test]
async fn a_format_7_store_is_migrated_on_open_and_keeps_its_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let raw = store_with_four_events(dir.path()).await;
    let ids: Vec<Vec<u8>> = {
        let mut stmt = raw
            .prepare("SELECT event_id FROM events ORDER BY position")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    // Back to format 7, as the last release wrote it, with the stream index two events
    // behind the log.
    raw.execute_batch(
        "DROP TABLE event_ids;
         DROP TABLE type_index;
         DROP TABLE category_index;
         CREATE UNIQUE INDEX events_by_event_id ON events (event_id, stream_id);
         CREATE INDEX events_by_type ON events (type);
         CREATE INDEX events_by_category ON events (category);
         DELETE FROM stream_index WHERE position > 2;
         UPDATE index_state SET indexed_through = 2;
         PRAGMA user_version = 7;",
    )
    .unwrap();
    drop(raw);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    for (n, id) in ids.iter().enumerate() {
        let s = if n % 2 == 0 { "a-1" } else { "b-1" };
        let mut resent = event("E", n as u64);
        resent.id = concord_core::EventId(uuid::Uuid::from_slice(id).unwrap());
        let again = store
            .append(append(s, ExpectedVersion::Any, vec![resent]))
            .await
            .unwrap();
        assert!(
            matches!(&again, AppendOutcome::Duplicate(a) if a.first_position == Position(n as u64 + 1)),
            "{again:?}"
        );
    }
    let by_type = Filter::all().types(vec![EventType::new("E").unwrap()]);
    let page = store.read_all(Position(1), &by_type, 10).await.unwrap();
    assert_eq!(page.events.len(), 4);
    let a = Filter::all().category(concord_core::Category::new("a").unwrap());
    let page = store.read_all(Position(1), &a, 10).await.unwrap();
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.position.get())
            .collect::<Vec<_>>(),
        [1, 3]
    );
    drop(store);
    let raw = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
    let (version, indexes): (i64, i64) = raw
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND name LIKE 'events_by_%')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, indexes), (8, 0));
    assert_eq!(index_rows(dir.path()), (4, 4, 4));
}

/// The writer records a batch's index entries when it stages the batch, before the commit
/// (its own lookups need them), and holds a batch open while the syncer syncs the one
/// before. Readers must not trip over those entries: a query, a read by type and a read by
/// category answer from published events only, and never fail on an event their snapshot
/// does not hold. Many writers keep the syncer busy, so batches are held open all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ignore_the_index_entries_of_a_batch_held_open() {
    const WRITERS: u64 = 32;
    const APPENDS: u64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for n in 0..APPENDS {
                    let _ = store
                        .append(append(
                            &format!("acct-{w}"),
                            ExpectedVersion::Any,
                            vec![event("Deposited", n)],
                        ))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let deposited = Query::item(vec![EventType::new("Deposited").unwrap()], vec![]);
    let by_type = Filter::all().types(vec![EventType::new("Deposited").unwrap()]);
    let by_category = Filter::all().category(concord_core::Category::new("acct").unwrap());
    let mut reads = 0;
    loop {
        let finished = writers.iter().all(|w| w.is_finished());
        // Every published event matches; a page holds at most 1 000.
        let page = store.query(&deposited, Position(0), 1_000).await.unwrap();
        let positions: Vec<u64> = page.events.iter().map(|e| e.position.get()).collect();
        assert_eq!(
            positions,
            (1..=page.head.get().min(1_000)).collect::<Vec<_>>()
        );
        for filter in [&by_type, &by_category] {
            let page = store.read_all(Position(1), filter, 1_000).await.unwrap();
            let positions: Vec<u64> = page.events.iter().map(|e| e.position.get()).collect();
            assert_eq!(
                positions,
                (1..=page.head.get().min(1_000)).collect::<Vec<_>>()
            );
        }
        reads += 1;
        if finished {
            break;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(reads > 1, "the reads ran beside the appends");
    let last = WRITERS * APPENDS;
    let page = store
        .query(&deposited, Position(last - 10), 100)
        .await
        .unwrap();
    assert_eq!((page.events.len(), page.head), (10, Position(last)));
}
