//! Stream lifecycle across processes: a delete or tombstone taken by one store serialises
//! with the appends of another on the same schema (both take the stream's lock), so an
//! append is either wholly before the tombstone (its versions at or below the tombstoned
//! version) or refused; never written after it. Each store has its own pool and writer, as
//! two Concord processes would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_core::{
    AppendRequest, Direction, EventStore, EventType, ExpectedVersion, Json, NewEvent, StoreError,
    StreamName, Version,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::{shared, unique_schema};

fn deposit() -> NewEvent {
    NewEvent::new(EventType::new("Deposited").unwrap(), Json::empty_object())
}

async fn two_processes() -> (PostgresStore, PostgresStore, String) {
    let schema = unique_schema();
    let url = format!("{}?schema={schema}", shared().url());
    let a = PostgresStore::connect(&url).await.unwrap();
    let b = PostgresStore::connect(&url).await.unwrap();
    (a, b, schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_from_one_process_stops_another_process_appends_with_nothing_written_after_it()
{
    let (a, b, schema) = two_processes().await;
    let s = StreamName::new("account-1").unwrap();
    let b = Arc::new(b);
    // Four writers on the other process append until the stream is tombstoned.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (b, s) = (Arc::clone(&b), s.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                loop {
                    match b
                        .append(AppendRequest::new(
                            s.clone(),
                            ExpectedVersion::Any,
                            vec![deposit(), deposit()],
                        ))
                        .await
                    {
                        Ok(out) => acknowledged.push(out.appended().last_version),
                        Err(StoreError::StreamDeleted(n)) if n == s => return acknowledged,
                        Err(e) => panic!("an append failed otherwise: {e}"),
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.stream_version(&s).await.unwrap() < Version(40) {
        assert!(Instant::now() < deadline, "the writers made no progress");
        tokio::task::yield_now().await;
    }
    a.tombstone_stream(&s, None).await.unwrap();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let tombstoned_at: u64 = shared()
        .psql(&format!(
            "SELECT deleted_through FROM {schema}.concord_streams WHERE stream = 'account-1'"
        ))
        .trim()
        .parse()
        .unwrap();
    let highest: u64 = shared()
        .psql(&format!(
            "SELECT max(version) FROM {schema}.concord_events WHERE stream = 'account-1'"
        ))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        highest, tombstoned_at,
        "no event was written after the tombstone"
    );
    assert!(acknowledged.iter().all(|v| v.get() <= tombstoned_at));
    assert_eq!(acknowledged.len() as u64 * 2, tombstoned_at);
    assert!(matches!(
        b.read_stream(&s, Version(1), Direction::Forward, 10).await,
        Err(StoreError::StreamDeleted(_))
    ));
}

#[tokio::test]
async fn a_soft_delete_in_one_process_is_what_another_process_appends_and_reads_against() {
    let (a, b, _) = two_processes().await;
    let s = StreamName::new("account-2").unwrap();
    let _ = b
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![deposit(), deposit(), deposit()],
        ))
        .await
        .unwrap();
    a.delete_stream(&s, Some(Version(3))).await.unwrap();
    // The other process decided on the old stream: its expectation is stale.
    let stale = b
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::Exact(Version(3)),
            vec![deposit()],
        ))
        .await;
    assert!(
        matches!(&stale, Err(StoreError::Conflict(c)) if c.actual == Version::NONE && c.concurrent_events.is_empty()),
        "{stale:?}"
    );
    let out = b
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![deposit()],
        ))
        .await
        .unwrap();
    assert_eq!(out.appended().first_version, Version(4));
    let read = a
        .read_stream(&s, Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![4]
    );
    assert_eq!(b.scavenge().await.unwrap().events_removed, 3);
    assert_eq!(a.scavenge().await.unwrap().events_removed, 0);
}
