//! The client's consumer-group calls and `Consumer` against a real server: workers share a
//! group's events, each handled once, and a poison event is parked while the rest flow.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use concord_api::{GroupBody, GroupFrom, Ordering, Source};
use concord_client::{ConcordClient, Consumer};
use concord_core::{AppendRequest, EventStore, ExpectedVersion, Filter, MemoryStore, doc};
use concord_server::ServerConfig;

async fn server(store: Arc<dyn EventStore>) -> (ConcordClient, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(concord_server::serve(
        listener,
        store,
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    (
        ConcordClient::new(&format!("http://{addr}"), None).unwrap(),
        stop,
    )
}

fn body(max_deliveries: u32) -> GroupBody {
    GroupBody {
        source: Source::All(Filter::all()),
        from: GroupFrom::default(),
        ack_timeout_ms: 30_000,
        max_deliveries,
        ordering: Ordering::PerStream,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_share_the_events_each_handled_once_in_stream_order() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    for s in 0..10 {
        let events = (0..20)
            .map(|i| doc::event("Deposited", serde_json::json!({"i": i})))
            .collect();
        let _ = store
            .append(AppendRequest::new(
                doc::stream(&format!("order-{s}")),
                ExpectedVersion::Any,
                events,
            ))
            .await
            .unwrap();
    }
    let (client, _stop) = server(store).await;
    let created = client.put_group("orders", &body(5)).await.unwrap();
    assert_eq!(created.group, "orders");
    let seen: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut consumer = Consumer::new(client.clone(), "orders", &format!("w{w}"));
        consumer.wait_ms = 0;
        let seen = seen.clone();
        workers.push(tokio::spawn(async move {
            let mut acked = 0;
            for _ in 0..200 {
                acked += consumer
                    .run_once(|m| {
                        let seen = seen.clone();
                        async move {
                            let mut seen = seen.lock().unwrap();
                            seen.entry(m.event.stream.to_string())
                                .or_default()
                                .push(m.event.version.0);
                            Ok::<(), ()>(())
                        }
                    })
                    .await
                    .unwrap();
            }
            acked
        }));
    }
    let mut acked = 0;
    for w in workers {
        acked += w.await.unwrap();
    }
    assert_eq!(acked, 200);
    {
        let seen = seen.lock().unwrap();
        for versions in seen.values() {
            assert_eq!(versions, &(1..=20).collect::<Vec<u64>>());
        }
    }
    let info = client.group("orders").await.unwrap();
    assert_eq!((info.acked, info.in_flight, info.pending), (200, 0, 0));
    assert_eq!(client.groups().await.unwrap().groups.len(), 1);
    client.delete_group("orders").await.unwrap();
    assert!(client.group("orders").await.is_err());
}

#[tokio::test]
async fn a_refused_event_is_retried_then_parked_and_replay_brings_it_back() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let events = (0..5)
        .map(|i| doc::event("Deposited", serde_json::json!({"i": i})))
        .collect();
    let _ = store
        .append(AppendRequest::new(
            doc::stream("order-1"),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .unwrap();
    let (client, _stop) = server(store).await;
    let mut settings = body(2);
    settings.ordering = Ordering::None;
    client.put_group("orders", &settings).await.unwrap();
    let mut consumer = Consumer::new(client.clone(), "orders", "w");
    consumer.wait_ms = 0;
    let mut acked = 0;
    for _ in 0..5 {
        acked += consumer
            .run_once(|m| async move {
                if m.event.version.0 == 3 {
                    Err("poison")
                } else {
                    Ok(())
                }
            })
            .await
            .unwrap();
    }
    assert_eq!(acked, 4);
    let parked = client.parked("orders").await.unwrap();
    assert_eq!(parked.events.len(), 1);
    assert_eq!(parked.events[0].version.0, 3);
    assert_eq!(client.replay_parked("orders").await.unwrap(), 1);
    let again = client.poll_group("orders", "w", 10, 0).await.unwrap();
    assert_eq!((again[0].event.version.0, again[0].delivery), (3, 1));
}
