//! Consumer groups through `ConcordClient` and `Consumer`, against a real server on an
//! embedded store: a poison event (its handler always fails) is parked after
//! `max_deliveries` while the rest of the events flow past it, and replay-parked delivers
//! it again; the group's own problems come back as `GroupError`s.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use concord_client::{ConcordClient, Consumer};
use concord_core::{AppendRequest, EventStore, ExpectedVersion, doc};
use concord_groups::{
    AllSource, ConsumerName, GroupError, GroupName, GroupSpec, Message, Ordering, Source, Upserted,
};
use concord_server::ServerConfig;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

struct Server {
    client: ConcordClient,
    store: Arc<dyn EventStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(concord_embedded::EmbeddedStore::open(dir.path()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(concord_server::serve(
        listener,
        Arc::clone(&store),
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        client: ConcordClient::new(&format!("http://{addr}"), None).unwrap(),
        store,
        stop: Some(stop),
        _dir: dir,
    }
}

fn is_poison(m: &Message) -> bool {
    m.event
        .data
        .to_value()
        .is_ok_and(|v| v["poison"] == json!(true))
}

/// Polls with `consumer` until a poll comes back empty.
async fn work_off(
    consumer: &Consumer,
    handle: &mut (impl FnMut(Message) -> std::future::Ready<Result<(), String>> + Send),
) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let stats = consumer.poll_once(handle).await.unwrap();
            if stats.handled == 0 {
                return;
            }
        }
    })
    .await
    .expect("the group was worked off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_parked_the_rest_flow_past_and_replay_delivers_it_again() {
    let server = serve().await;
    for i in 0..30 {
        let stream = doc::stream(&format!("order-{}", i % 3));
        let data = if i == 4 {
            json!({"poison": true})
        } else {
            json!({"n": i})
        };
        let _ = server
            .store
            .append(AppendRequest::new(
                stream,
                ExpectedVersion::Any,
                vec![doc::event("Placed", data)],
            ))
            .await
            .unwrap();
    }
    let group = GroupName::new("receipts").unwrap();
    let spec = GroupSpec {
        max_deliveries: 3,
        ordering: Ordering::PerStream,
        ..GroupSpec::new(Source::All(AllSource::default()))
    };
    let (created, info) = server.client.put_group(&group, &spec).await.unwrap();
    assert_eq!((created, info.pending), (Upserted::Created, 30));

    let consumer = Consumer::new(
        server.client.clone(),
        group.clone(),
        ConsumerName::new("worker-1").unwrap(),
    )
    .max(10)
    .wait(Duration::ZERO);
    let mut handled: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut poison_deliveries = Vec::new();
    let mut buggy = |m: Message| {
        if is_poison(&m) {
            poison_deliveries.push(m.delivery);
            return std::future::ready(Err("cannot send a receipt for this order".to_owned()));
        }
        handled
            .entry(m.event.stream.to_string())
            .or_default()
            .push(m.event.version.get());
        std::future::ready(Ok(()))
    };
    work_off(&consumer, &mut buggy).await;
    assert_eq!(
        poison_deliveries,
        vec![1, 2, 3],
        "nacked, retried, then parked"
    );
    // The poison event is order-1's version 2: its stream's later events still came, in
    // order, once it was parked.
    assert_eq!(handled.values().map(Vec::len).sum::<usize>(), 29);
    assert_eq!(handled["order-1"], vec![1, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(handled["order-0"], (1..=10).collect::<Vec<_>>());
    let status = server.client.group(&group).await.unwrap();
    assert_eq!(
        (
            status.info.acked,
            status.info.parked,
            status.info.pending,
            status.info.in_flight
        ),
        (29, 1, 0, 0)
    );
    let parked = server.client.parked(&group, 10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].stream.as_str(), parked[0].version.get()),
        ("order-1", 2)
    );
    assert_eq!(parked[0].deliveries, 3);

    // The handler is fixed; the parked event is replayed and handled.
    assert_eq!(server.client.replay_parked(&group).await.unwrap(), 1);
    let mut replayed = Vec::new();
    let mut fixed = |m: Message| {
        replayed.push((
            m.event.stream.to_string(),
            m.event.version.get(),
            m.delivery,
        ));
        std::future::ready(Ok::<(), String>(()))
    };
    work_off(&consumer, &mut fixed).await;
    assert_eq!(replayed, vec![("order-1".to_owned(), 2, 1)]);
    let info = server.client.group(&group).await.unwrap().info;
    assert_eq!((info.acked, info.parked, info.pending), (30, 0, 0));
}

#[tokio::test]
async fn group_problems_come_back_as_group_errors() {
    let server = serve().await;
    let group = GroupName::new("g").unwrap();
    assert!(matches!(
        server.client.group(&group).await,
        Err(GroupError::NotFound(g)) if g == group
    ));
    let spec = GroupSpec::new(Source::Stream(doc::stream("order-1")));
    server.client.put_group(&group, &spec).await.unwrap();
    let (again, _) = server.client.put_group(&group, &spec).await.unwrap();
    assert_eq!(again, Upserted::Updated, "200: updated or unchanged");
    let moved = GroupSpec::new(Source::Stream(doc::stream("order-2")));
    assert!(matches!(
        server.client.put_group(&group, &moved).await,
        Err(GroupError::Fixed {
            field: "source",
            ..
        })
    ));
    let bad = GroupSpec {
        max_deliveries: 0,
        ..spec
    };
    assert!(matches!(
        server.client.put_group(&group, &bad).await,
        Err(GroupError::Invalid(i)) if i.field == "max_deliveries"
    ));
    let consumer = ConsumerName::new("w").unwrap();
    assert!(matches!(
        server.client.poll(&group, &consumer, 0, Duration::ZERO).await,
        Err(GroupError::Invalid(i)) if i.field == "max"
    ));
    assert_eq!(server.client.groups().await.unwrap().len(), 1);
    server.client.delete_group(&group).await.unwrap();
    assert!(matches!(
        server.client.delete_group(&group).await,
        Err(GroupError::NotFound(_))
    ));
}
