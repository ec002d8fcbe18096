//! A conflict carries the actual version and the events the writer missed in the exchange
//! that found it: the batch's first exchange reads each stream's events after its stalest
//! expectation in the statement that reads its version, so neither a conflict nor a rebase over a short span
//! sends a read after the decision (issue 18). These specs count the statements the server
//! ran (`pg_stat_statements`, on a server of their own that preloads it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::OnceLock;

use concord_core::{
    AppendOutcome, AppendRequest, EventStore, EventType, ExpectedVersion, Json, NewEvent,
    StoreError, StreamMetadata, StreamName, Version,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::PostgresServer;

/// The read of one stream's events between two versions (`lifecycle::forward_sql`): what a
/// conflict's or a rebase's events took after the decision before they came with the state.
const READ_AFTER_THE_DECISION: &str = "%version >= $2 AND version <= $3%";
/// The first exchange's read of each stream's state and events after its stalest
/// expectation.
const READ_WITH_THE_STATE: &str = "%LEFT JOIN LATERAL%version > k.after%";

fn server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = PostgresServer::start_with(&["shared_preload_libraries=pg_stat_statements"]);
        server.psql("CREATE EXTENSION pg_stat_statements");
        server
    })
}

/// Calls of statements whose text is `like`, since the last reset, by any schema.
fn calls(like: &str) -> u64 {
    server()
        .psql(&format!(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '{like}'"
        ))
        .trim()
        .parse()
        .expect("a count")
}

/// A store in a schema of its own, with `events` events in `stream`, and the statement
/// counts reset after them.
async fn store_with(stream: &StreamName, events: usize) -> PostgresStore {
    let store = PostgresStore::connect(&server().url_with_fresh_schema())
        .await
        .unwrap();
    let _ = store
        .append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::NoStream,
            (0..events).map(|_| deposit()).collect(),
        ))
        .await
        .unwrap();
    server().psql("SELECT pg_stat_statements_reset()");
    store
}

/// The conflict of an append to `stream` expecting `expected`, which must be stale.
async fn conflict_of(
    store: &PostgresStore,
    stream: &StreamName,
    expected: Version,
) -> Box<concord_core::Conflict> {
    let err = store
        .append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Exact(expected),
            vec![deposit()],
        ))
        .await
        .unwrap_err();
    let StoreError::Conflict(conflict) = err else {
        panic!("expected a conflict, got {err:?}");
    };
    conflict
}

fn deposit() -> NewEvent {
    NewEvent::new(EventType::new("Deposited").unwrap(), Json::empty_object())
}

fn versions(events: &[concord_core::RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.get()).collect()
}

// One test at a time counts: the counts are of the whole server.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_conflict_reports_the_events_it_missed_without_a_read_after_the_decision() {
    let _one = SERIAL.lock().await;
    let stream = StreamName::new("account-1").unwrap();
    let store = store_with(&stream, 3).await;

    let conflict = conflict_of(&store, &stream, Version(1)).await;
    assert_eq!(conflict.actual, Version(3));
    assert_eq!(versions(&conflict.concurrent_events), vec![2, 3]);
    assert!(!conflict.truncated);
    assert!(
        calls(READ_WITH_THE_STATE) >= 1,
        "the first exchange read the past"
    );
    assert_eq!(calls(READ_AFTER_THE_DECISION), 0);
}

#[tokio::test]
async fn a_rebase_over_a_short_span_lists_what_it_moved_past_without_a_read_after_the_decision() {
    let _one = SERIAL.lock().await;
    let stream = StreamName::new("auction-1").unwrap();
    let store = store_with(&stream, 3).await;

    let out = store
        .append(
            AppendRequest::new(
                stream.clone(),
                ExpectedVersion::Exact(Version(1)),
                vec![deposit()],
            )
            .rebase_unless(vec![EventType::new("AuctionClosed").unwrap()]),
        )
        .await
        .unwrap();
    let AppendOutcome::Rebased {
        appended,
        expected_version,
        concurrent_events,
    } = out
    else {
        panic!("expected a rebase, got {out:?}");
    };
    assert_eq!(appended.first_version, Version(4));
    assert_eq!(expected_version, Version(1));
    assert_eq!(versions(&concurrent_events), vec![2, 3]);
    assert!(
        calls(READ_WITH_THE_STATE) >= 1,
        "the first exchange read the past"
    );
    assert_eq!(calls(READ_AFTER_THE_DECISION), 0);
}

#[tokio::test]
async fn a_conflict_far_behind_reports_the_first_hundred_it_missed_from_the_first_exchange() {
    let _one = SERIAL.lock().await;
    let stream = StreamName::new("document-1").unwrap();
    let store = store_with(&stream, 250).await;

    let conflict = conflict_of(&store, &stream, Version(10)).await;
    assert_eq!(conflict.actual, Version(250));
    assert_eq!(
        versions(&conflict.concurrent_events),
        (11..=110).collect::<Vec<_>>()
    );
    assert!(conflict.truncated);
    assert_eq!(calls(READ_AFTER_THE_DECISION), 0);
}

#[tokio::test]
async fn missed_events_hidden_past_the_first_exchange_are_read_after_it_and_only_visible_ones_reported()
 {
    let _one = SERIAL.lock().await;
    let stream = StreamName::new("account-2").unwrap();
    let store = store_with(&stream, 300).await;
    // Only the last 50 are read: the 200 the first exchange reads after version 10 are
    // all hidden, so what the conflict missed is read after the decision.
    store
        .set_stream_metadata(
            &stream,
            StreamMetadata {
                max_count: Some(50),
                ..StreamMetadata::default()
            },
        )
        .await
        .unwrap();
    server().psql("SELECT pg_stat_statements_reset()");

    let conflict = conflict_of(&store, &stream, Version(10)).await;
    assert_eq!(conflict.actual, Version(300));
    assert_eq!(
        versions(&conflict.concurrent_events),
        (251..=300).collect::<Vec<_>>()
    );
    assert!(!conflict.truncated);
    assert_eq!(calls(READ_AFTER_THE_DECISION), 1);
}
