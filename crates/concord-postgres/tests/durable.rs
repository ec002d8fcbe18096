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
    AppendRequest, Direction, EventStore, EventType, ExpectedVersion, Filter, Json,
    MultiAppendRequest, NewEvent, Position, Query, StoreError, StreamName, Version,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::{shared, unique_schema};

/// Generous, and short of the sessions' statement timeout (30 s).
const WAIT: Duration = Duration::from_secs(20);

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

/// Every mark of one schema held back by an advisory lock this session holds: a trigger
/// on the marks' table takes it, so statements are parsed and batches run as ever, and only
/// a mark's insert waits. The key is the test's own (tests of a binary share a server).
struct Held {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
    key: i64,
}

impl Held {
    async fn new(schema: &str, key: i64) -> Self {
        let (client, connection) = tokio_postgres::connect(&shared().url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .batch_execute(&format!(
                "CREATE FUNCTION {schema}.hold_mark() RETURNS trigger LANGUAGE plpgsql AS \
                   $$BEGIN PERFORM pg_advisory_xact_lock_shared({key}); RETURN NEW; END$$; \
                 CREATE TRIGGER hold_mark BEFORE INSERT ON {schema}.concord_durable \
                   FOR EACH ROW EXECUTE FUNCTION {schema}.hold_mark(); \
                 SELECT pg_advisory_lock({key});"
            ))
            .await
            .unwrap();
        Held {
            client,
            driver,
            key,
        }
    }

    /// Lets the marks go.
    async fn release(&self) {
        self.client
            .batch_execute(&format!("SELECT pg_advisory_unlock({})", self.key))
            .await
            .unwrap();
    }

    /// Waits until `n` marks wait for the lock (well before the sessions' statement
    /// timeout, 30 s, would end their wait).
    async fn waiting(&self, n: i64) {
        let started = Instant::now();
        loop {
            let waiting = self
                .client
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                     AND classid = 0 AND objid = $1::bigint::oid",
                    &[&self.key],
                )
                .await
                .unwrap()
                .get::<_, i64>(0);
            if waiting == n {
                return;
            }
            if started.elapsed() > WAIT {
                let activity: Vec<String> = self
                    .client
                    .query(
                        "SELECT concat_ws(' | ', state, wait_event_type, wait_event, \
                         left(query, 120)) FROM pg_stat_activity \
                         WHERE backend_type = 'client backend'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                panic!("{waiting} marks wait for the lock, not {n}: {activity:#?}");
            }
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.driver.abort();
    }
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

    let held = Held::new(&schema, 1).await;

    // A stream the writer does not know, with `any`: the general path, a batch.
    let append = tokio::spawn({
        let writer = writer.clone();
        async move { writer.append(opened("account-2")).await }
    });
    // Its batch commits (the head lock is not held through a flush) and its mark, sent
    // after the COMMIT, waits for the lock.
    held.waiting(1).await;
    let committed = held
        .client
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

    held.release().await;
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

/// A delete refused for a stale version reports the events its caller missed; one of a
/// batch not yet durable is reported only once a mark covers it, as an append's conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_refused_by_a_batch_not_yet_durable_answers_after_its_mark() {
    let server = shared();
    let schema = unique_schema();
    let url = format!("{}?schema={schema}", server.url());
    let store = PostgresStore::connect(&url).await.unwrap();
    let _ = store.append(opened("account-1")).await.unwrap();
    let held = Held::new(&schema, 2).await;
    // Two streams in one append: the general path, a batch.
    let both = MultiAppendRequest::new(vec![opened("account-1"), opened("account-3")]);
    let append = tokio::spawn({
        let store = store.clone();
        async move { store.append_multi(both).await }
    });
    held.waiting(1).await;
    let delete = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .delete_stream(&StreamName::new("account-1").unwrap(), Some(Version(1)))
                .await
        }
    });
    held.waiting(2).await;
    assert!(!delete.is_finished(), "refused before the mark");

    held.release().await;
    let refused = tokio::time::timeout(WAIT, delete)
        .await
        .expect("answered once the mark is written")
        .unwrap();
    let Err(StoreError::Conflict(conflict)) = refused else {
        panic!("not a conflict: {refused:?}");
    };
    assert_eq!(conflict.actual, Version(2));
    assert_eq!(
        conflict
            .concurrent_events
            .iter()
            .map(|e| e.version)
            .collect::<Vec<_>>(),
        [Version(2)]
    );
    let _ = tokio::time::timeout(WAIT, append)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
