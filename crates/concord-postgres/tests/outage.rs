//! A database that goes away: calls fail with `Unavailable` naming the host instead of
//! hanging, nothing is half-written, and the same store works again once PostgreSQL is back,
//! without being reopened. Uses its own server, because it kills it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use concord_core::{
    AppendRequest, EventStore, EventType, ExpectedVersion, Filter, Json, NewEvent, Position,
    StoreError, StreamName, Version,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::PostgresServer;

/// Generous: only a hang would reach it.
const WAIT: Duration = Duration::from_secs(60);

fn deposit() -> NewEvent {
    NewEvent::new(EventType::new("Deposited").unwrap(), Json::empty_object())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_database_is_unavailable_and_the_store_recovers_when_it_is_back() {
    let mut server = PostgresServer::start();
    let store = PostgresStore::connect(&server.url()).await.unwrap();
    let stream = StreamName::new("account-1").unwrap();
    let _ = store
        .append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::NoStream,
            vec![deposit()],
        ))
        .await
        .unwrap();

    server.kill();
    let lost = deposit();
    let error = tokio::time::timeout(
        WAIT,
        store.append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Exact(Version(1)),
            vec![lost.clone()],
        )),
    )
    .await
    .expect("an append to a dead database answers instead of hanging")
    .unwrap_err();
    assert!(
        matches!(&error, StoreError::Unavailable { message, .. }
            if message.contains(&format!("127.0.0.1:{}", server.port()))),
        "{error:?}"
    );
    let error = tokio::time::timeout(WAIT, store.read_all(Position(1), &Filter::all(), 10))
        .await
        .expect("a read of a dead database answers instead of hanging")
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");

    server.restart();
    // The same store, not reopened: re-sending the failed append settles it.
    let outcome = tokio::time::timeout(
        WAIT,
        store.append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Exact(Version(1)),
            vec![lost],
        )),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome.appended().last_version, Version(2));
    assert_eq!(store.head().await.unwrap(), Position(2));
}
