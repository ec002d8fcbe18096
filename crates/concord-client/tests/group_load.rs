//! Four competing consumers over HTTP on one `per_stream` group: 10 000 events over 50
//! streams, and one consumer killed halfway (it drops its connection holding messages it
//! never acks). Afterwards every event is acked exactly once in the group's final state,
//! every delivery beyond the first is one of the killed consumer's messages (delivered
//! again once its ack timeout passed), and no stream's events were ever handled out of
//! version order or two at a time.
//!
//! The server is `concord-server` in this process, on an embedded store, reached through
//! `ConcordClient` (one connection pool per consumer). `CONCORD_TEST_SCALE` multiplies the
//! events per stream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_client::ConcordClient;
use concord_core::{
    AppendRequest, EventStore, ExpectedVersion, MultiAppendRequest, StreamName, Version, doc,
};
use concord_groups::{AllSource, ConsumerName, GroupName, GroupSpec, Message, Ordering, Source};
use concord_server::ServerConfig;
use serde_json::json;

const STREAMS: usize = 50;
const ACK_TIMEOUT_MS: u64 = 3000;
const DEADLINE: Duration = Duration::from_secs(300);
const KILLED: &str = "consumer-4";

fn per_stream() -> usize {
    200 * concord_testkit::scale()
}

/// What the consumers saw, checked as they go.
#[derive(Default)]
struct Tracker {
    /// Per stream: the last version handled, and who holds the one in flight.
    last_handled: HashMap<StreamName, u64>,
    holder: HashMap<StreamName, (String, u64)>,
    handled: BTreeMap<StreamName, Vec<u64>>,
    /// Every delivery: (stream, version, delivery number).
    deliveries: Vec<(StreamName, Version, u32)>,
    /// Messages the killed consumer held when it died.
    abandoned: BTreeSet<(StreamName, Version)>,
    acked: usize,
}

impl Tracker {
    fn delivered(&mut self, consumer: &str, m: &Message) {
        let stream = m.event.stream.clone();
        let version = m.event.version.get();
        let last = self.last_handled.get(&stream).copied().unwrap_or(0);
        assert_eq!(
            version,
            last + 1,
            "{stream}: version {version} delivered to {consumer} after version {last} was handled"
        );
        if let Some((holder, held)) = self.holder.get(&stream) {
            assert!(
                holder == KILLED && self.abandoned.contains(&(stream.clone(), Version(*held))),
                "{stream}: version {version} delivered to {consumer} while {holder} holds version {held}"
            );
        }
        self.holder
            .insert(stream.clone(), (consumer.to_owned(), version));
        self.deliveries.push((stream, m.event.version, m.delivery));
    }

    fn handled(&mut self, consumer: &str, m: &Message) {
        let stream = m.event.stream.clone();
        let version = m.event.version.get();
        assert_eq!(
            self.holder.remove(&stream),
            Some((consumer.to_owned(), version)),
            "{stream}: {consumer} handled version {version} without holding it"
        );
        self.last_handled.insert(stream.clone(), version);
        self.handled.entry(stream).or_default().push(version);
    }
}

async fn consume(
    client: ConcordClient,
    group: GroupName,
    name: &'static str,
    total: usize,
    tracker: Arc<Mutex<Tracker>>,
) {
    let consumer = ConsumerName::new(name).unwrap();
    loop {
        if tracker.lock().unwrap().acked >= total {
            return;
        }
        let messages = client
            .poll(&group, &consumer, 20, Duration::from_millis(200))
            .await
            .unwrap();
        if messages.is_empty() {
            continue;
        }
        let die = {
            let mut t = tracker.lock().unwrap();
            for m in &messages {
                t.delivered(name, m);
            }
            let die = name == KILLED && t.acked >= total / 2;
            if die {
                t.abandoned = messages
                    .iter()
                    .map(|m| (m.event.stream.clone(), m.event.version))
                    .collect();
            }
            die
        };
        if die {
            // Killed: the connection pool goes with the client, nothing is acked.
            return;
        }
        {
            let mut t = tracker.lock().unwrap();
            for m in &messages {
                t.handled(name, m);
            }
        }
        let ids: Vec<String> = messages.iter().map(|m| m.ack_id.clone()).collect();
        let acked = client.ack(&group, &ids).await.unwrap();
        assert_eq!(
            acked,
            ids.len(),
            "{name}'s acks came within the ack timeout"
        );
        tracker.lock().unwrap().acked += acked;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_consumers_one_killed_halfway_ack_every_event_once_in_stream_order() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(concord_embedded::EmbeddedStore::open(dir.path()).unwrap());
    let streams: Vec<StreamName> = (0..STREAMS)
        .map(|i| doc::stream(&format!("order-{i}")))
        .collect();
    // One event per stream per append: the streams' events interleave in the log.
    for round in 0..per_stream() {
        let parts = streams
            .iter()
            .map(|s| {
                AppendRequest::new(
                    s.clone(),
                    ExpectedVersion::Any,
                    vec![doc::event("Placed", json!({"round": round}))],
                )
            })
            .collect();
        let _ = store
            .append_multi(MultiAppendRequest::new(parts))
            .await
            .unwrap();
    }
    let total = STREAMS * per_stream();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(concord_server::serve(
        listener,
        Arc::clone(&store),
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = || ConcordClient::new(&base, None).unwrap();
    let group = GroupName::new("receipts").unwrap();
    let spec = GroupSpec {
        ack_timeout_ms: ACK_TIMEOUT_MS,
        max_deliveries: 5,
        ordering: Ordering::PerStream,
        ..GroupSpec::new(Source::All(AllSource::default()))
    };
    client().put_group(&group, &spec).await.unwrap();

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let workers: Vec<_> = ["consumer-1", "consumer-2", "consumer-3", KILLED]
        .into_iter()
        .map(|name| {
            tokio::spawn(consume(
                client(),
                group.clone(),
                name,
                total,
                Arc::clone(&tracker),
            ))
        })
        .collect();
    tokio::time::timeout(DEADLINE, async {
        for w in workers {
            w.await.unwrap();
        }
    })
    .await
    .expect("the consumers worked the group off");

    check(&tracker.lock().unwrap(), total);

    let info = client().group(&group).await.unwrap().info;
    assert_eq!(
        (
            info.acked,
            info.pending,
            info.in_flight,
            info.parked,
            info.skipped
        ),
        (total as u64, 0, 0, 0, 0),
        "the group's final state"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// What the consumers saw, as a whole.
fn check(t: &Tracker, total: usize) {
    assert!(!t.abandoned.is_empty(), "the killed consumer held messages");
    assert_eq!(t.acked, total);
    for (stream, versions) in &t.handled {
        let expected: Vec<u64> = (1..=per_stream() as u64).collect();
        assert_eq!(versions, &expected, "{stream}: handled once each, in order");
    }
    assert_eq!(t.handled.len(), STREAMS);
    // Every delivery beyond the first is one of the killed consumer's, delivered again
    // once, as its second delivery.
    let again: Vec<(StreamName, Version, u32)> = t
        .deliveries
        .iter()
        .filter(|(_, _, delivery)| *delivery > 1)
        .cloned()
        .collect();
    let again_keys: BTreeSet<(StreamName, Version)> =
        again.iter().map(|(s, v, _)| (s.clone(), *v)).collect();
    assert_eq!(again_keys, t.abandoned);
    assert_eq!(again.len(), t.abandoned.len(), "each delivered again once");
    assert!(again.iter().all(|(_, _, delivery)| *delivery == 2));
    assert_eq!(t.deliveries.len(), total + t.abandoned.len());
}
