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

/// Imported events are what a reopened store recovers, and appends go on after them.
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
        event("account-1", 1, 1),
        event("account-2", 1, 2),
        event("account-1", 2, 3),
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
    assert_eq!(page.head, Position(3));
    let next = store
        .append(AppendRequest::new(
            StreamName::new("account-1").unwrap(),
            ExpectedVersion::Exact(Version(2)),
            vec![NewEvent::json("Deposited", &serde_json::json!({"amount": 7})).unwrap()],
        ))
        .await
        .unwrap();
    assert_eq!(next.appended().first_position, Position(4));
    assert_eq!(next.appended().first_version, Version(3));
}
