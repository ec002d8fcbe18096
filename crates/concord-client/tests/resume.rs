//! A client subscription survives a server restart: it reconnects with `Last-Event-ID`
//! and continues after the last event it yielded, with no gap and no duplicate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::Duration;

use concord_client::ConcordClient;
use concord_core::{
    AppendRequest, EventStore, ExpectedVersion, Filter, MemoryStore, Position, Version, doc,
};
use concord_server::ServerConfig;
use futures::StreamExt;

const DEADLINE: Duration = Duration::from_secs(20);

async fn append(store: &MemoryStore, n: usize) {
    let events = (0..n)
        .map(|i| doc::event("Deposited", serde_json::json!({"amount": i})))
        .collect();
    let _ = store
        .append(AppendRequest::new(
            doc::stream("account-1"),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .unwrap();
}

fn start(
    listener: tokio::net::TcpListener,
    store: Arc<MemoryStore>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), concord_server::ServerError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(concord_server::serve(
        listener,
        store,
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_after_the_server_restarts() {
    let store = Arc::new(MemoryStore::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, handle) = start(listener, Arc::clone(&store));
    let client = Arc::new(ConcordClient::new(&format!("http://{addr}"), None).unwrap());
    let mut all = Arc::clone(&client).subscribe_all(Position(1), Filter::all());
    let mut one = Arc::clone(&client).subscribe_stream(doc::stream("account-1"), Version(1));
    append(&store, 2).await;
    for expected in 1..=2 {
        let e = tokio::time::timeout(DEADLINE, all.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.position, Position(expected));
        let e = tokio::time::timeout(DEADLINE, one.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.version, Version(expected));
    }

    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    append(&store, 2).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (_stop, _handle) = start(listener, Arc::clone(&store));

    for expected in 3..=5 {
        if expected == 5 {
            append(&store, 1).await;
        }
        let e = tokio::time::timeout(DEADLINE, all.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            e.position,
            Position(expected),
            "no gap and no duplicate across the restart"
        );
        let e = tokio::time::timeout(DEADLINE, one.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.version, Version(expected));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_maps_back_to_the_store_error() {
    let store = Arc::new(MemoryStore::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, _handle) = start(listener, store);
    let client = ConcordClient::new(&format!("http://{addr}"), None).unwrap();
    let too_many = (0..1001)
        .map(|_| doc::event("T", serde_json::json!({})))
        .collect();
    let err = client
        .append(AppendRequest::new(
            doc::stream("a-1"),
            ExpectedVersion::Any,
            too_many,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, concord_core::StoreError::TooLarge(ref t) if t.what == "events" && t.max == 1000),
        "{err}"
    );
    let down = ConcordClient::new("http://127.0.0.1:9", None).unwrap();
    assert!(matches!(
        down.head().await,
        Err(concord_core::StoreError::Unavailable { .. })
    ));
}
