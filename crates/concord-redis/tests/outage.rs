//! While Redis is down every call fails fast with `Unavailable` (no panic, no hang past
//! the timeout), and the same `RedisStore` works again once Redis is back, without being
//! rebuilt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::{Duration, Instant};

use concord_core::{
    AppendRequest, Direction, EventStore, ExpectedVersion, Filter, Position, StoreError, Version,
    doc,
};
use concord_redis::{RedisOptions, RedisStore};
use concord_testkit::redis::{Persistence, RedisServer, RedisServerOptions, unique_prefix};

const TIMEOUT: Duration = Duration::from_secs(1);
/// What a failing call may take beyond the timeout (scheduling on a busy 2-core machine).
const SLACK: Duration = Duration::from_millis(1500);

fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    started: Instant,
    budget: Duration,
    r: Result<T, StoreError>,
) {
    let took = started.elapsed();
    assert!(
        matches!(r, Err(StoreError::Unavailable { .. })),
        "{what} while Redis is down gave {r:?}"
    );
    assert!(
        took <= budget + SLACK,
        "{what} took {took:?} to fail, more than {budget:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_fast_while_redis_is_down_and_the_store_recovers_when_it_is_back() {
    let mut server = RedisServer::start_with(RedisServerOptions {
        persistence: Persistence::AppendFsyncAlways,
        ..RedisServerOptions::default()
    });
    let url = server.url();
    let store = common::store_on(&url, TIMEOUT).await;
    let s = doc::stream("account-1");
    let first = doc::event(
        "AccountOpened",
        serde_json::json!({"owner": "ann", "balance": 1000}),
    );
    let _ = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![first],
        ))
        .await
        .unwrap();
    assert_eq!(
        store.wait_for_head(Position::ZERO).await.unwrap(),
        Position(1)
    );

    tokio::task::block_in_place(|| server.kill());

    let deposit = doc::event("Deposited", serde_json::json!({"amount": 5}));
    let retry = AppendRequest::new(s.clone(), ExpectedVersion::Exact(Version(1)), vec![deposit]);
    let t = Instant::now();
    assert_unavailable("append", t, TIMEOUT, store.append(retry.clone()).await);
    let t = Instant::now();
    assert_unavailable(
        "read_stream",
        t,
        TIMEOUT,
        store
            .read_stream(&s, Version(1), Direction::Forward, 10)
            .await,
    );
    let t = Instant::now();
    assert_unavailable(
        "read_all",
        t,
        TIMEOUT,
        store.read_all(Position::FIRST, &Filter::all(), 10).await,
    );
    let t = Instant::now();
    assert_unavailable("head", t, TIMEOUT, store.head().await);
    let t = Instant::now();
    assert_unavailable("stream_version", t, TIMEOUT, store.stream_version(&s).await);
    let t = Instant::now();
    assert_unavailable(
        "list_streams",
        t,
        TIMEOUT,
        store.list_streams("", None, 10).await,
    );
    // wait_for_head waits at most its bounded block time, then asks for the head.
    let t = Instant::now();
    assert_unavailable(
        "wait_for_head",
        t,
        Duration::from_secs(2) + TIMEOUT,
        store.wait_for_head(Position(1)).await,
    );
    let t = Instant::now();
    let options = RedisOptions {
        key_prefix: unique_prefix(),
        timeout: TIMEOUT,
        ..RedisOptions::default()
    };
    assert_unavailable(
        "connect",
        t,
        TIMEOUT,
        RedisStore::connect_with(&url, options).await,
    );

    tokio::task::block_in_place(|| server.restart());

    // The same store reconnects by itself; the retried append (same event id) lands once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let outcome = answered(deadline, "append", || store.append(retry.clone())).await;
    assert_eq!(outcome.appended().first_version, Version(2));
    let events = answered(deadline, "read_stream", || {
        store.read_stream(&s, Version(1), Direction::Forward, 10)
    })
    .await;
    assert_eq!(
        events.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        answered(deadline, "head", || store.head()).await,
        Position(2)
    );
    assert_eq!(
        answered(deadline, "wait_for_head", || store
            .wait_for_head(Position(1)))
        .await,
        Position(2)
    );
}

/// The answer of `call` once Redis is back. A call may still time out after that (the
/// store's 1 s command timeout, on a machine busy with other tests): the store has
/// recovered when calls succeed again before `deadline`; any other error, or none by then,
/// fails the test.
async fn answered<T, F, Fut>(deadline: Instant, what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    loop {
        match call().await {
            Ok(answer) => return answer,
            Err(StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("{what} did not recover after Redis came back: {e:?}"),
        }
    }
}

/// Reads of the global log go over connections of the store's own, kept idle between
/// reads. One that Redis closed by restarting must not fail the next read: the read is
/// sent again on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_the_global_log_after_redis_restarted_does_not_fail_on_a_stale_connection() {
    let mut server = RedisServer::start_with(RedisServerOptions {
        persistence: Persistence::AppendFsyncAlways,
        ..RedisServerOptions::default()
    });
    let store = common::store_on(&server.url(), Duration::from_secs(5)).await;
    let opened = doc::event(
        "AccountOpened",
        serde_json::json!({"owner": "ann", "balance": 1000}),
    );
    let _ = store
        .append(AppendRequest::new(
            doc::stream("account-1"),
            ExpectedVersion::NoStream,
            vec![opened],
        ))
        .await
        .unwrap();
    let before = store
        .read_all(Position::FIRST, &Filter::all(), 10)
        .await
        .unwrap();
    assert_eq!(before.events.len(), 1);

    tokio::task::block_in_place(|| server.restart());

    let after = store
        .read_all(Position::FIRST, &Filter::all(), 10)
        .await
        .expect("the first read after the restart");
    assert_eq!(after.events, before.events);
    assert_eq!(after.head, Position(1));
}
