//! The durable head (ADR 0004): a batch commits without waiting for its WAL flush, so that
//! the head lock is free at once, and no reader of any process sees its events, nor does
//! its caller get an answer, until a mark (`concord_durable`), committed synchronously
//! after it, says they are flushed. Here the mark is held back by a lock the test takes on
//! the marks' table, and everything a reader can ask is asked in the meantime.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::{Duration, Instant};

use concord_core::{
    AppendRequest, Direction, EventStore, EventType, ExpectedVersion, Filter, Json, NewEvent,
    Position, Query, StreamName, Version,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::{shared, unique_schema};

/// The advisory lock key the test holds to keep a mark waiting.
const HOLD: i64 = 424_242;

/// Generous: only a hang would reach it.
const WAIT: Duration = Duration::from_secs(30);

fn opened(stream: &str) -> AppendRequest {
    AppendRequest::new(
        StreamName::new(stream).unwrap(),
        ExpectedVersion::Any,
        vec![NewEvent::new(
            EventType::new("Opened").unwrap(),
            Json::empty_object(),
        )],
    )
}

/// What a reader of `store` sees of stream `account-2` and of the log.
async fn seen(store: &PostgresStore) -> (Position, usize, usize, Version, bool, usize) {
    let stream = StreamName::new("account-2").unwrap();
    let head = store.head().await.unwrap();
    let all = store
        .read_all(Position::ZERO, &Filter::default(), 100)
        .await
        .unwrap()
        .events
        .len();
    let events = store
        .read_stream(&stream, Version(1), Direction::Forward, 100)
        .await
        .unwrap()
        .len();
    let version = store.stream_version(&stream).await.unwrap();
    let listed = store
        .list_streams("account-", None, 10)
        .await
        .unwrap()
        .iter()
        .any(|s| s.stream == stream);
    let matching = store
        .query(
            &Query::item(vec![EventType::new("Opened").unwrap()], Vec::new()),
            Position::ZERO,
            100,
        )
        .await
        .unwrap()
        .events
        .len();
    (head, all, events, version, listed, matching)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_before_its_mark_is_seen_by_no_reader_and_answered_after_it() {
    let server = shared();
    let schema = unique_schema();
    let url = format!("{}?schema={schema}", server.url());
    // Two stores: two processes on one database.
    let writer = PostgresStore::connect(&url).await.unwrap();
    let other = PostgresStore::connect(&url).await.unwrap();
    let _ = writer.append(opened("account-1")).await.unwrap();
    let before = (Position(1), 1, 0, Version::NONE, false, 1);
    assert_eq!(seen(&other).await, before);

    // A mark waits for an advisory lock the test holds: a trigger on the marks' table
    // takes it (the statement is parsed and the batch runs as ever; only the mark's insert
    // waits).
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE FUNCTION {schema}.hold_mark() RETURNS trigger LANGUAGE plpgsql AS \
               $$BEGIN PERFORM pg_advisory_xact_lock_shared({HOLD}); RETURN NEW; END$$; \
             CREATE TRIGGER hold_mark BEFORE INSERT ON {schema}.concord_durable \
               FOR EACH ROW EXECUTE FUNCTION {schema}.hold_mark(); \
             SELECT pg_advisory_lock({HOLD});"
        ))
        .await
        .unwrap();

    // A stream the writer does not know, with `any`: the general path, a batch.
    let append = tokio::spawn({
        let writer = writer.clone();
        async move { writer.append(opened("account-2")).await }
    });
    // Its batch commits (the head lock is not held through a flush) and its mark, sent
    // after the COMMIT, waits for the lock.
    let started = Instant::now();
    loop {
        let waiting = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND classid = 0 AND objid = $1::bigint::oid",
                &[&HOLD],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if waiting == 1 {
            break;
        }
        if started.elapsed() > WAIT {
            let activity: Vec<String> = client
                .query(
                    "SELECT concat_ws(' | ', state, wait_event_type, wait_event, left(query, 120)) \
                     FROM pg_stat_activity WHERE backend_type = 'client backend'",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            panic!("no mark ever waited for the lock: {activity:#?}");
        }
        tokio::task::yield_now().await;
    }
    let committed = client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.concord_events WHERE stream = 'account-2'"),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(committed, 1, "the batch committed before its mark");
    // Until it is written, no reader of either process sees the batch, and its caller has
    // no answer.
    assert_eq!(seen(&other).await, before);
    assert_eq!(seen(&writer).await, before);
    assert!(!append.is_finished(), "answered before its mark");
    assert!(
        tokio::time::timeout(Duration::ZERO, other.wait_for_head(Position(1)))
            .await
            .is_err(),
        "a subscriber was woken before the mark"
    );

    client
        .batch_execute(&format!("SELECT pg_advisory_unlock({HOLD})"))
        .await
        .unwrap();
    let appended = tokio::time::timeout(WAIT, append)
        .await
        .expect("answered once the mark is written")
        .unwrap()
        .unwrap();
    assert_eq!(appended.appended().last_position, Position(2));
    assert_eq!(
        tokio::time::timeout(WAIT, other.wait_for_head(Position(1)))
            .await
            .unwrap()
            .unwrap(),
        Position(2)
    );
    assert_eq!(seen(&other).await, (Position(2), 2, 1, Version(1), true, 2));
    driver.abort();
}

#[tokio::test]
async fn a_lone_append_is_marked_in_its_own_statement() {
    let server = shared();
    let schema = unique_schema();
    let url = format!("{}?schema={schema}", server.url());
    let store = PostgresStore::connect(&url).await.unwrap();
    let stream = StreamName::new("account-1").unwrap();
    // Two lone appends (the second on the row the first left: the one-event function).
    let _ = store.append(opened("account-1")).await.unwrap();
    let second = store
        .append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Exact(Version(1)),
            vec![NewEvent::new(
                EventType::new("Deposited").unwrap(),
                Json::empty_object(),
            )],
        ))
        .await
        .unwrap();
    assert_eq!(second.appended().last_position, Position(2));
    assert_eq!(common::greatest_mark(&schema), 2);
    let other = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(other.head().await.unwrap(), Position(2));
}
