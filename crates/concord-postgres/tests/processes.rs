//! Several Concord processes on one database: positions stay gap-free and become visible in
//! commit order. Three stores with their own pools and writers (as three processes would
//! have) append concurrently, to their own streams and to one shared hot stream; a
//! subscriber on each store and a raw `read_all` poller must see every position exactly
//! once, in order, with no gap, and every acknowledged event at its acknowledged position.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use concord_core::{
    AppendRequest, Direction, EventId, EventStore, EventType, ExpectedVersion, Filter, Json,
    NewEvent, Position, StreamName, Version,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::shared;
use futures::StreamExt;

const STORES: usize = 3;
const WRITERS_PER_STORE: usize = 6;
/// Generous: only a hang would reach it.
const WAIT: Duration = Duration::from_secs(60);

fn event(kind: &str) -> NewEvent {
    NewEvent::new(EventType::new(kind).unwrap(), Json::empty_object())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_on_one_database_give_gap_free_positions_in_order() {
    three_stores_give_gap_free_positions_in_order(&shared().url_with_fresh_schema()).await;
}

/// A role (or database) whose default isolation is REPEATABLE READ changes nothing: each
/// statement of a write function must see the commits before the locks it waited for, which
/// a snapshot shared by the whole call, taken before them, would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_isolation_of_repeatable_read_changes_nothing() {
    let server = shared();
    let role = concord_testkit::postgres::unique_schema();
    server.psql(&format!(
        "CREATE ROLE {role} LOGIN SUPERUSER; \
         ALTER ROLE {role} SET default_transaction_isolation = 'repeatable read'"
    ));
    let url = |schema: &str| {
        format!(
            "postgres://{role}@127.0.0.1:{}/postgres?schema={schema}\
             &options=-c%20track_functions%3Dpl",
            server.port()
        )
    };
    // Batches of several processes, and lone appends of two, each taking the head lock in
    // turn.
    three_stores_give_gap_free_positions_in_order(&url(&role)).await;
    let lone = format!("{role}_lone");
    two_lone_writers_give_gap_free_positions(&url(&lone), &lone).await;
}

/// Two stores with one writer each: every append reaches its writer alone and is one call
/// of the one-event function, the two taking the head lock in turn. A call that read the
/// head before the other's commit would fail on the position taken, and its append would be
/// written again by the general path (right, but a failed statement and a batch each time).
async fn two_lone_writers_give_gap_free_positions(url: &str, schema: &str) {
    let appends = 40 * concord_testkit::scale();
    let a = Arc::new(PostgresStore::connect(url).await.unwrap());
    let b = Arc::new(PostgresStore::connect(url).await.unwrap());
    let writers: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(si, store)| {
            tokio::spawn(async move {
                let stream = StreamName::new(format!("lone-{si}")).unwrap();
                let mut positions = Vec::new();
                for i in 0..appends {
                    let outcome = store
                        .append(AppendRequest::new(
                            stream.clone(),
                            ExpectedVersion::Exact(Version(i as u64)),
                            vec![event("Deposited")],
                        ))
                        .await
                        .unwrap();
                    positions.push(outcome.appended().first_position.get());
                }
                (store, positions)
            })
        })
        .collect();
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut stores = Vec::new();
    for w in writers {
        let (store, positions) = w.await.unwrap();
        acknowledged.extend(positions);
        stores.push(store);
    }
    acknowledged.sort_unstable();
    let total = 2 * appends as u64;
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(
        acknowledged, expected,
        "a position granted twice or skipped"
    );
    let page = stores[0]
        .read_all(Position(1), &Filter::all(), 1000)
        .await
        .unwrap();
    let read: Vec<u64> = page.events.iter().map(|e| e.position.get()).collect();
    assert_eq!(read, expected);

    let calls = |kind: &str| common::write_function_calls(schema, kind);
    drop(stores);
    let deadline = std::time::Instant::now() + WAIT;
    while calls("one") + calls("batch") < total && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (calls("one"), calls("batch")),
        (total, 0),
        "every lone append written by one call of the one-event function"
    );
}

async fn three_stores_give_gap_free_positions_in_order(url: &str) {
    let appends_per_writer = 15 * concord_testkit::scale();
    let mut stores = Vec::new();
    for _ in 0..STORES {
        stores.push(Arc::new(PostgresStore::connect(url).await.unwrap()));
    }
    let expected_total = STORES * WRITERS_PER_STORE * appends_per_writer * 2;

    // Subscribers on every store, from the start, while the writers run.
    let subscribers: Vec<_> = stores
        .iter()
        .map(|s| {
            let sub = Arc::clone(s).subscribe_all(Position(1), Filter::all());
            tokio::spawn(async move {
                tokio::time::timeout(
                    WAIT,
                    sub.take(expected_total)
                        .map(|e| e.unwrap())
                        .collect::<Vec<_>>(),
                )
                .await
                .expect("a subscriber received every event")
            })
        })
        .collect();
    // A raw poller: every page of read_all starts exactly where the last one ended.
    let poller = {
        let store = Arc::clone(&stores[0]);
        tokio::spawn(async move {
            let mut next = 1u64;
            while next <= expected_total as u64 {
                let page = store
                    .read_all(Position(next), &Filter::all(), 1000)
                    .await
                    .unwrap();
                for e in &page.events {
                    assert_eq!(e.position, Position(next), "read_all skipped a position");
                    next += 1;
                }
                if page.events.is_empty() {
                    store.wait_for_head(Position(next - 1)).await.unwrap();
                }
            }
            next - 1
        })
    };

    // Writers: each appends to its own stream with exact expectations, and to one hot
    // stream shared by every store with a stale expectation and rebase_unless.
    let hot = StreamName::new("hot-1").unwrap();
    let mut writers = Vec::new();
    for (si, store) in stores.iter().enumerate() {
        for w in 0..WRITERS_PER_STORE {
            let store = Arc::clone(store);
            let hot = hot.clone();
            writers.push(tokio::spawn(async move {
                let own = StreamName::new(format!("account-{si}x{w}")).unwrap();
                let mut acknowledged: Vec<(EventId, Position)> = Vec::new();
                for i in 0..appends_per_writer {
                    let e = event("Deposited");
                    let id = e.id;
                    let outcome = store
                        .append(AppendRequest::new(
                            own.clone(),
                            ExpectedVersion::Exact(Version(i as u64)),
                            vec![e],
                        ))
                        .await
                        .unwrap();
                    acknowledged.push((id, outcome.appended().first_position));
                    let e = event("Touched");
                    let id = e.id;
                    let outcome = store
                        .append(
                            AppendRequest::new(
                                hot.clone(),
                                ExpectedVersion::Exact(Version(0)),
                                vec![e],
                            )
                            .rebase_unless(vec![]),
                        )
                        .await
                        .unwrap();
                    acknowledged.push((id, outcome.appended().first_position));
                }
                acknowledged
            }));
        }
    }
    let mut acknowledged: HashMap<EventId, Position> = HashMap::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert_eq!(acknowledged.len(), expected_total);

    for sub in subscribers {
        let events = sub.await.unwrap();
        let positions: Vec<u64> = events.iter().map(|e| e.position.get()).collect();
        let expected: Vec<u64> = (1..=expected_total as u64).collect();
        assert_eq!(
            positions, expected,
            "a subscriber saw a gap, a duplicate or disorder"
        );
        for e in &events {
            assert_eq!(
                acknowledged.get(&e.id),
                Some(&e.position),
                "event {} moved",
                e.id
            );
        }
    }
    assert_eq!(
        tokio::time::timeout(WAIT, poller).await.unwrap().unwrap(),
        expected_total as u64
    );
    for store in &stores {
        assert_eq!(store.head().await.unwrap(), Position(expected_total as u64));
    }
    // Every store granted each version of the hot stream once.
    let mut versions: Vec<u64> = Vec::new();
    loop {
        let page = stores[1]
            .read_stream(
                &hot,
                Version(versions.len() as u64 + 1),
                Direction::Forward,
                1000,
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        versions.extend(page.iter().map(|e| e.version.get()));
    }
    let n = STORES * WRITERS_PER_STORE * appends_per_writer;
    assert_eq!(versions, (1..=n as u64).collect::<Vec<_>>());
}

/// Notifications are only a hint: a subscriber whose LISTEN session dies (a restart of the
/// connection, an operator's `pg_terminate_backend`) misses the notification of the next
/// append, and still gets it within the bounded fallback (its wait reads the head after a
/// second; the listener reads it on reconnecting), not at the next notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_listening_session_dies_gets_the_next_event_within_the_fallback() {
    let server = concord_testkit::postgres::PostgresServer::start();
    let (writer, follower) = (
        PostgresStore::connect(&server.url()).await.unwrap(),
        PostgresStore::connect(&server.url()).await.unwrap(),
    );
    let stream = StreamName::new("auction-1").unwrap();
    let bid = |expected| {
        writer.append(AppendRequest::new(
            stream.clone(),
            expected,
            vec![event("BidPlaced")],
        ))
    };
    let _ = bid(ExpectedVersion::NoStream).await.unwrap();
    // The follower's first wait starts its LISTEN session.
    assert_eq!(
        follower.wait_for_head(Position::ZERO).await.unwrap(),
        Position(1)
    );
    let listeners = "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = 'concord-listener' AND state = 'idle'";
    let deadline = std::time::Instant::now() + WAIT;
    while server.psql(listeners).trim() != "1" {
        assert!(std::time::Instant::now() < deadline, "no listener session");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'concord-listener'",
    );

    let _ = bid(ExpectedVersion::Exact(Version(1))).await.unwrap();
    let waited = std::time::Instant::now();
    let head = tokio::time::timeout(WAIT, follower.wait_for_head(Position(1)))
        .await
        .expect("the follower hears of the append without another notification")
        .unwrap();
    assert_eq!(head, Position(2));
    assert!(
        waited.elapsed() < Duration::from_secs(5),
        "the fallback is bounded: {:?}",
        waited.elapsed()
    );
    let events = follower
        .read_stream(&stream, Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
}
