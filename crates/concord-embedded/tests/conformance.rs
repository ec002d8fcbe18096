//! The conformance suite against `EmbeddedStore`: every spec, each on a fresh store in its
//! own temporary directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use concord_embedded::EmbeddedStore;
use concord_testkit::TestStore;

async fn fresh() -> TestStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("a fresh embedded store opens");
    TestStore::with_guard(Arc::new(store), dir)
}

concord_testkit::conformance_suite!(fresh);
concord_testkit::lifecycle_suite!(fresh);
concord_testkit::import_suite!(fresh);

// Random operation sequences, compared step by step with MemoryStore.
concord_testkit::model_check!(fresh);
concord_testkit::lifecycle_model_check!(fresh);

/// The same specs with a stream index written after every batch: every read then combines
/// the index table with entries written a moment later, and flushes interleave with the
/// specs' appends and reads.
mod index_flushed_every_batch {
    use super::*;

    async fn fresh() -> TestStore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = concord_embedded::EmbeddedOptions {
            index_flush_events: 1,
            ..concord_embedded::EmbeddedOptions::default()
        };
        let store =
            EmbeddedStore::open_with(dir.path(), options).expect("a fresh embedded store opens");
        TestStore::with_guard(Arc::new(store), dir)
    }

    concord_testkit::conformance_suite!(fresh);
    concord_testkit::lifecycle_suite!(fresh);
    concord_testkit::import_suite!(fresh);
    concord_testkit::model_check!(fresh);
    concord_testkit::lifecycle_model_check!(fresh);
}

/// Imported events are what a reopened store recovers, holes in positions and a stream
/// started above version 1 included (then deleted and scavenged, so that its erased prefix
/// grows past where the import started it), and appends go on after them.
#[tokio::test]
async fn imported_events_are_recovered_on_reopen() {
    use concord_core::{
        AppendRequest, EventStore, ExpectedVersion, Filter, NewEvent, Position, RecordedAt,
        RecordedEvent, StreamName, Version,
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let event = |stream: &str, version: u64, position: u64| {
        RecordedEvent::new(
            StreamName::new(stream).unwrap(),
            Version(version),
            Position(position),
            NewEvent::json("Deposited", &serde_json::json!({"amount": position})).unwrap(),
            RecordedAt(1_700_000_000_000 + position),
        )
    };
    let imported = vec![
        event("account-1", 1, 2),
        event("account-2", 1, 5),
        event("account-1", 2, 6),
        event("account-3", 7, 7),
        event("account-3", 8, 8),
    ];
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.import(imported.clone()).await.unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).expect("the store reopens after an import");
    let page = store
        .read_all(Position(1), &Filter::all(), 100)
        .await
        .unwrap();
    assert_eq!(page.events, imported);
    assert_eq!(page.head, Position(8));
    let third = StreamName::new("account-3").unwrap();
    assert_eq!(store.stream_version(&third).await.unwrap(), Version(8));
    // account-3 grows, loses its first imported event to retention, and is scavenged.
    let grown = store
        .append(AppendRequest::new(
            third.clone(),
            ExpectedVersion::Exact(Version(8)),
            vec![NewEvent::json("Deposited", &serde_json::json!({"amount": 9})).unwrap()],
        ))
        .await
        .unwrap();
    assert_eq!(grown.appended().first_position, Position(9));
    store
        .set_stream_metadata(
            &third,
            concord_core::StreamMetadata {
                max_count: Some(2),
                ..concord_core::StreamMetadata::NONE
            },
        )
        .await
        .unwrap();
    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 1);
    drop(store);
    let store = EmbeddedStore::open(dir.path()).expect("the store reopens after a scavenge");
    let third_events = store
        .read_stream(&third, Version(1), concord_core::Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        third_events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![Version(8), Version(9)]
    );
    let next = store
        .append(AppendRequest::new(
            StreamName::new("account-1").unwrap(),
            ExpectedVersion::Exact(Version(2)),
            vec![NewEvent::json("Deposited", &serde_json::json!({"amount": 7})).unwrap()],
        ))
        .await
        .unwrap();
    assert_eq!(next.appended().first_position, Position(10));
    assert_eq!(next.appended().first_version, Version(3));
}

/// Imported pasts without events and a head raised over holes are what a reopened store
/// recovers (format 7): the streams' last versions, deletes and tombstones, and the next
/// position; appends go on after them, and a scavenge finds nothing wrong.
#[tokio::test]
async fn imported_pasts_and_head_are_recovered_on_reopen() {
    use concord_core::{
        AppendRequest, EventStore, ExpectedVersion, NewEvent, Position, StoreError,
        StreamLifecycle, StreamName, StreamPast, Version,
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (deleted, buried) = (
        StreamName::new("account-1").unwrap(),
        StreamName::new("account-2").unwrap(),
    );
    let pasts = vec![
        StreamPast {
            stream: deleted.clone(),
            last: Version(6),
            lifecycle: StreamLifecycle {
                deleted_through: Version(6),
                ..StreamLifecycle::default()
            },
        },
        StreamPast {
            stream: buried.clone(),
            last: Version(3),
            lifecycle: StreamLifecycle {
                deleted_through: Version(3),
                tombstoned: true,
                ..StreamLifecycle::default()
            },
        },
    ];
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for p in &pasts {
            store.import_stream_past(p).await.unwrap();
        }
        store.import_head(Position(40)).await.unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).expect("the store reopens after the pasts");
    assert_eq!(store.head().await.unwrap(), Position(40));
    assert_eq!(store.list_stream_pasts(None, 10).await.unwrap(), pasts);
    let deposit = || vec![NewEvent::json("Deposited", &serde_json::json!({"amount": 1})).unwrap()];
    let next = store
        .append(AppendRequest::new(
            deleted.clone(),
            ExpectedVersion::NoStream,
            deposit(),
        ))
        .await
        .unwrap();
    assert_eq!(
        (
            next.appended().first_version,
            next.appended().first_position
        ),
        (Version(7), Position(41))
    );
    let refused = store
        .append(AppendRequest::new(
            buried.clone(),
            ExpectedVersion::Any,
            deposit(),
        ))
        .await;
    assert!(
        matches!(refused, Err(StoreError::StreamDeleted(_))),
        "{refused:?}"
    );
    assert_eq!(store.scavenge().await.unwrap().events_removed, 0);
    drop(store);
    let store = EmbeddedStore::open(dir.path()).expect("the store reopens after appends");
    assert_eq!(store.stream_version(&deleted).await.unwrap(), Version(7));
    assert_eq!(store.head().await.unwrap(), Position(41));
}
