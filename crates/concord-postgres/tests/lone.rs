//! An append that reaches a store's writer alone is written in one round trip on the stream
//! row the writer last saw; these specs check that the database, not that memory, decides:
//! whatever another process did to the stream in between (appended, re-used an id, created
//! it, deleted or tombstoned it, changed its metadata), the answer is the one the general
//! path gives. Each store has its own pool and writer, as two Concord processes would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use concord_core::{
    AppendOutcome, AppendRequest, Direction, EventId, EventStore, EventType, ExpectedVersion,
    Filter, Json, NewEvent, Position, StoreError, StreamMetadata, StreamName, Version,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::shared;

fn deposit() -> NewEvent {
    NewEvent::new(EventType::new("Deposited").unwrap(), Json::empty_object())
}

async fn two_processes() -> (PostgresStore, PostgresStore) {
    let url = shared().url_with_fresh_schema();
    let a = PostgresStore::connect(&url).await.unwrap();
    let b = PostgresStore::connect(&url).await.unwrap();
    (a, b)
}

async fn append(
    store: &PostgresStore,
    stream: &StreamName,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AppendOutcome, StoreError> {
    store
        .append(AppendRequest::new(stream.clone(), expected, events))
        .await
}

/// Appends `count` deposits to the new stream `stream`, one per append, each expecting the
/// version the one before left.
async fn deposits_one_by_one(store: &PostgresStore, stream: &StreamName, count: u64) {
    for version in 0..count {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(Version(version))
        };
        let out = append(store, stream, expected, vec![deposit()])
            .await
            .unwrap();
        assert_eq!(out.appended().last_version, Version(version + 1));
    }
}

#[tokio::test]
async fn a_stale_expectation_is_a_conflict_with_the_missed_events_though_this_process_saw_it_current()
 {
    let (a, b) = two_processes().await;
    let s = StreamName::new("account-1").unwrap();
    let _ = append(&a, &s, ExpectedVersion::NoStream, vec![deposit()])
        .await
        .unwrap();
    let theirs = deposit();
    let their_id = theirs.id;
    let _ = append(&b, &s, ExpectedVersion::Exact(Version(1)), vec![theirs])
        .await
        .unwrap();

    let stale = append(&a, &s, ExpectedVersion::Exact(Version(1)), vec![deposit()]).await;
    let conflict = stale
        .as_ref()
        .err()
        .and_then(StoreError::as_conflict)
        .unwrap_or_else(|| panic!("a conflict, got {stale:?}"));
    assert_eq!(conflict.actual, Version(2));
    assert_eq!(conflict.concurrent_events.len(), 1);
    assert_eq!(conflict.concurrent_events[0].id, their_id);
    assert_eq!(a.stream_version(&s).await.unwrap(), Version(2));
}

#[tokio::test]
async fn an_append_without_expectation_lands_after_what_another_process_wrote() {
    let (a, b) = two_processes().await;
    let s = StreamName::new("account-2").unwrap();
    let _ = append(&a, &s, ExpectedVersion::Any, vec![deposit()])
        .await
        .unwrap();
    let _ = append(&b, &s, ExpectedVersion::Any, vec![deposit(), deposit()])
        .await
        .unwrap();

    let out = append(&a, &s, ExpectedVersion::Any, vec![deposit(), deposit()])
        .await
        .unwrap();
    assert_eq!(out.appended().first_version, Version(4));
    assert_eq!(out.appended().last_version, Version(5));
    assert_eq!(out.appended().first_position, Position(4));
    assert_eq!(out.appended().last_position, Position(5));
    let events = b
        .read_stream(&s, Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    let placed: Vec<(u64, u64)> = events
        .iter()
        .map(|e| (e.version.get(), e.position.get()))
        .collect();
    assert_eq!(placed, vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);
}

#[tokio::test]
async fn an_id_another_process_wrote_meanwhile_is_a_duplicate_not_a_second_event() {
    let (a, b) = two_processes().await;
    let s = StreamName::new("account-3").unwrap();
    let _ = append(&a, &s, ExpectedVersion::Any, vec![deposit()])
        .await
        .unwrap();
    let id = EventId::new();
    let _ = append(&b, &s, ExpectedVersion::Any, vec![deposit().with_id(id)])
        .await
        .unwrap();

    let again = append(&a, &s, ExpectedVersion::Any, vec![deposit().with_id(id)])
        .await
        .unwrap();
    assert!(again.is_duplicate(), "{again:?}");
    assert_eq!(again.appended().first_version, Version(2));
    assert_eq!(a.stream_version(&s).await.unwrap(), Version(2));
}

#[tokio::test]
async fn a_stream_another_process_created_first_is_not_created_twice() {
    let (a, b) = two_processes().await;
    let s = StreamName::new("account-4").unwrap();
    let _ = append(&b, &s, ExpectedVersion::NoStream, vec![deposit()])
        .await
        .unwrap();

    let second = append(&a, &s, ExpectedVersion::NoStream, vec![deposit()]).await;
    let conflict = second
        .as_ref()
        .err()
        .and_then(StoreError::as_conflict)
        .unwrap_or_else(|| panic!("a conflict, got {second:?}"));
    assert_eq!(conflict.actual, Version(1));
    assert_eq!(a.stream_version(&s).await.unwrap(), Version(1));
}

#[tokio::test]
async fn a_tombstone_from_another_process_refuses_the_next_append_of_a_stream_seen_alive() {
    let (a, b) = two_processes().await;
    let s = StreamName::new("account-5").unwrap();
    let _ = append(&a, &s, ExpectedVersion::NoStream, vec![deposit()])
        .await
        .unwrap();
    b.tombstone_stream(&s, None).await.unwrap();

    let refused = append(&a, &s, ExpectedVersion::Exact(Version(1)), vec![deposit()]).await;
    assert!(
        matches!(&refused, Err(StoreError::StreamDeleted(n)) if *n == s),
        "{refused:?}"
    );
    let count: u64 = shared()
        .psql(&format!(
            "SELECT count(*) FROM {}.concord_events WHERE stream = 'account-5'",
            a.schema()
        ))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count, 1, "nothing was written after the tombstone");
}

#[tokio::test]
async fn retention_set_by_another_process_applies_to_the_next_append_of_a_stream_seen_before() {
    let (a, b) = two_processes().await;
    let s = StreamName::new("account-6").unwrap();
    let _ = append(
        &a,
        &s,
        ExpectedVersion::NoStream,
        vec![deposit(), deposit()],
    )
    .await
    .unwrap();
    b.set_stream_metadata(
        &s,
        StreamMetadata {
            max_count: Some(1),
            ..StreamMetadata::default()
        },
    )
    .await
    .unwrap();

    let out = append(&a, &s, ExpectedVersion::Exact(Version(2)), vec![deposit()])
        .await
        .unwrap();
    assert_eq!(out.appended().first_version, Version(3));
    // Only the last event is kept: the row the append saw carried the setting.
    let kept = a
        .read_stream(&s, Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        kept.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![Version(3)]
    );
}

#[tokio::test]
async fn a_lone_append_is_one_call_of_a_lone_function_the_one_event_function_when_it_has_one() {
    // Function call counts are kept only with `track_functions` (superuser; the test server
    // runs as postgres), here for the store's own sessions through the URL's options.
    let server = shared();
    let schema = concord_testkit::postgres::unique_schema();
    let url = format!(
        "{}?schema={schema}&options=-c%20track_functions%3Dpl",
        server.url()
    );
    let store = PostgresStore::connect(&url).await.unwrap();
    let s = StreamName::new("account-20").unwrap();
    deposits_one_by_one(&store, &s, 5).await;
    for version in [5, 7] {
        let out = append(
            &store,
            &s,
            ExpectedVersion::Exact(Version(version)),
            vec![deposit(), deposit()],
        )
        .await
        .unwrap();
        assert_eq!(out.appended().last_version, Version(version + 2));
    }

    let calls = |kind: &str| common::write_function_calls(&schema, kind);
    common::wait_for_statistics(|| calls("one") >= 5 && calls("lone") >= 2).await;
    assert_eq!(calls("one"), 5);
    assert_eq!(calls("lone"), 2);
    assert_eq!(calls("batch"), 0);
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(9));
    let read = store
        .read_stream(&s, Version(1), Direction::Forward, 100)
        .await
        .unwrap();
    let versions: Vec<u64> = read.iter().map(|e| e.version.get()).collect();
    assert_eq!(versions, (1..=9).collect::<Vec<_>>());
    let positions: Vec<u64> = read.iter().map(|e| e.position.get()).collect();
    assert_eq!(positions, (1..=9).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_written_on_their_callers_task_and_by_the_writer_interleave_without_losing_a_version()
 {
    // One caller appends to its stream with exact expectations: alone at first (from the
    // 8th append on, `concord_core::ALONE_IN_A_ROW`, written on its own task), then while
    // other tasks append (through the writer's batches), then alone again. Both paths keep
    // the stream's row, and each other's view of it, right.
    let url = shared().url_with_fresh_schema();
    let store = PostgresStore::connect(&url).await.unwrap();
    let s = StreamName::new("account-30").unwrap();
    let mut version = 0;
    let mut next = |store: PostgresStore, s: StreamName| {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(Version(version))
        };
        version += 2;
        let last = version;
        async move {
            let out = append(&store, &s, expected, vec![deposit(), deposit()])
                .await
                .unwrap();
            assert_eq!(out.appended().last_version, Version(last));
        }
    };
    for _ in 0..12 {
        next(store.clone(), s.clone()).await;
    }
    for round in 0..8 {
        let other = {
            let store = store.clone();
            tokio::spawn(async move {
                let t = StreamName::new(format!("account-31-{round}")).unwrap();
                for _ in 0..5 {
                    let _ = append(&store, &t, ExpectedVersion::Any, vec![deposit()])
                        .await
                        .unwrap();
                }
            })
        };
        next(store.clone(), s.clone()).await;
        other.await.unwrap();
    }
    for _ in 0..12 {
        next(store.clone(), s.clone()).await;
    }

    let stale = append(
        &store,
        &s,
        ExpectedVersion::Exact(Version(3)),
        vec![deposit()],
    )
    .await;
    assert_eq!(
        stale
            .as_ref()
            .err()
            .and_then(StoreError::as_conflict)
            .map(|c| c.actual),
        Some(Version(64)),
        "a stale expectation is still a conflict: {stale:?}"
    );
    let events = store
        .read_stream(&s, Version(1), Direction::Forward, 1000)
        .await
        .unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.version.get()).collect();
    assert_eq!(versions, (1..=64).collect::<Vec<_>>());
    let all = store
        .read_all(Position(1), &Filter::all(), 1000)
        .await
        .unwrap();
    let positions: Vec<u64> = all.events.iter().map(|e| e.position.get()).collect();
    assert_eq!(
        positions,
        (1..=104).collect::<Vec<_>>(),
        "positions gap-free"
    );
}

#[tokio::test]
async fn the_guard_reads_the_streams_last_version_by_its_key_though_planned_on_an_empty_log() {
    // The writer's sessions plan the one-event function's statement once, generic, when the
    // first append arrives: on a new store, with an empty log that costs every key of
    // `concord_events` alike. The guard's read of the stream's last version once took the
    // `(stream, event_id)` key there and filtered the stream's every event, each lone
    // append slower than the one before.
    let server = shared();
    let schema = concord_testkit::postgres::unique_schema();
    let store = PostgresStore::connect(&format!("{}?schema={schema}", server.url()))
        .await
        .unwrap();
    let s = StreamName::new("account-30").unwrap();
    let appends: u64 = 200;
    deposits_one_by_one(&store, &s, appends).await;

    let index = |name: &str, column: &str| -> u64 {
        server
            .psql(&format!(
                "SELECT {column} FROM pg_stat_user_indexes \
                 WHERE schemaname = '{schema}' AND indexrelname = '{name}'"
            ))
            .trim()
            .parse()
            .unwrap_or(0)
    };
    // Every lone append after the first (which found no row) reads the last version once,
    // by the `(stream, version)` key; the sessions report their counts once idle.
    let by_version = || index("concord_events_stream_version_key", "idx_scan");
    common::wait_for_statistics(|| by_version() >= appends - 1).await;
    assert!(by_version() >= appends - 1, "{}", by_version());
    // The id probes find nothing there; a scan of the stream by that key would read
    // 1 + 2 + … + 199 entries.
    let by_id = index("concord_events_stream_event_id_key", "idx_tup_read");
    assert!(
        by_id < appends,
        "{by_id} entries of (stream, event_id) read"
    );
}
