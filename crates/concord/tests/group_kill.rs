//! Consumer groups across `kill -9` of the server: four consumers work a `per_stream`
//! group of 10 000 events over 50 streams through `concord serve`, which is killed with
//! SIGKILL five times during the run and restarted on the same port (on the embedded
//! store, and on Redis). An event whose ack the server confirmed is never delivered again,
//! no stream's events are handed out ahead of an unhandled earlier one, and in the end the
//! group has acked every event: none is lost.
//!
//! The consumers retry while the server is down (the client reports it unavailable). Each
//! kill comes when the consumers have handled another sixth of the events.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BIN, DEADLINE};
use concord_client::ConcordClient;
use concord_core::{
    AppendRequest, EventStore, ExpectedVersion, MultiAppendRequest, StoreError, StreamName,
    Version, doc,
};
use concord_groups::{AllSource, ConsumerName, GroupError, GroupName, GroupSpec, Ordering, Source};
use serde_json::json;

const STREAMS: usize = 50;
const PER_STREAM: usize = 200;
const TOTAL: usize = STREAMS * PER_STREAM;
const KILLS: usize = 5;
const RUN_DEADLINE: Duration = Duration::from_secs(600);

/// `concord serve` on a fixed port, restarted there after each kill.
struct Server {
    store: String,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(store: String) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Server {
            store,
            port,
            child: None,
        };
        server.launch();
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it announces that it serves.
    fn launch(&mut self) {
        let mut child = Command::new(BIN)
            .args([
                "--store",
                &self.store,
                "serve",
                "--no-projections",
                "--addr",
            ])
            .arg(format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start concord serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut announced = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !announced && line.contains("on http://") {
                    announced = true;
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(DEADLINE)
            .expect("concord serve announced its address");
        self.child = Some(child);
    }

    /// SIGKILL, then wait for the process to be gone.
    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the consumers saw, checked as they go.
#[derive(Default)]
struct Seen {
    /// Events whose ack the server confirmed (the ack counted every id of its batch).
    confirmed: BTreeSet<(StreamName, Version)>,
    /// Per stream, the highest version handled.
    handled_up_to: HashMap<StreamName, u64>,
    /// Distinct events handled.
    handled: BTreeSet<(StreamName, Version)>,
    deliveries: usize,
    done: bool,
}

fn unavailable(e: &GroupError) -> bool {
    matches!(e, GroupError::Store(StoreError::Unavailable { .. }))
}

async fn consume(
    base: String,
    group: GroupName,
    name: &'static str,
    seen: Arc<Mutex<Seen>>,
    progress: Arc<tokio::sync::Notify>,
) {
    let client = ConcordClient::new(&base, None).unwrap();
    let consumer = ConsumerName::new(name).unwrap();
    let pause = || tokio::time::sleep(Duration::from_millis(20));
    loop {
        if seen.lock().unwrap().done {
            return;
        }
        let messages = match client
            .poll(&group, &consumer, 20, Duration::from_millis(300))
            .await
        {
            Ok(m) => m,
            // The server is down (killed): try again shortly.
            Err(e) if unavailable(&e) => {
                pause().await;
                continue;
            }
            Err(e) => panic!("{name}: poll failed: {e}"),
        };
        if messages.is_empty() {
            match client.group(&group).await {
                Ok(status) if status.info.acked == TOTAL as u64 => {
                    seen.lock().unwrap().done = true;
                    return;
                }
                Ok(_) => {}
                Err(e) if unavailable(&e) => pause().await,
                Err(e) => panic!("{name}: status failed: {e}"),
            }
            continue;
        }
        {
            let mut s = seen.lock().unwrap();
            for m in &messages {
                let key = (m.event.stream.clone(), m.event.version);
                assert!(
                    !s.confirmed.contains(&key),
                    "{}@{} was delivered again (delivery {}) after its ack was confirmed",
                    key.0,
                    key.1,
                    m.delivery
                );
                let up_to = s.handled_up_to.get(&key.0).copied().unwrap_or(0);
                assert!(
                    key.1.get() <= up_to + 1,
                    "{}: version {} handed out while version {} was never handled",
                    key.0,
                    key.1,
                    up_to + 1
                );
                s.handled_up_to
                    .insert(key.0.clone(), up_to.max(key.1.get()));
                s.handled.insert(key);
                s.deliveries += 1;
            }
        }
        let ids: Vec<String> = messages.iter().map(|m| m.ack_id.clone()).collect();
        match client.ack(&group, &ids).await {
            Ok(n) if n == ids.len() => {
                let mut s = seen.lock().unwrap();
                s.confirmed.extend(
                    messages
                        .iter()
                        .map(|m| (m.event.stream.clone(), m.event.version)),
                );
            }
            // Some expired while the server was down: those are delivered again.
            Ok(_) => {}
            Err(e) if unavailable(&e) => {}
            Err(e) => panic!("{name}: ack failed: {e}"),
        }
        progress.notify_waiters();
    }
}

async fn run_with_kills(store: String) {
    let mut server = Server::start(store);
    let base = server.url();
    let client = ConcordClient::new(&base, None).unwrap();
    for round in 0..PER_STREAM {
        let parts = (0..STREAMS)
            .map(|i| {
                AppendRequest::new(
                    doc::stream(&format!("order-{i}")),
                    ExpectedVersion::Any,
                    vec![doc::event("Placed", json!({"round": round}))],
                )
            })
            .collect();
        let _ = client
            .append_multi(MultiAppendRequest::new(parts))
            .await
            .unwrap();
    }
    let group = GroupName::new("receipts").unwrap();
    let spec = GroupSpec {
        ack_timeout_ms: 1000,
        // Never parked here: a few kills cost an event a few deliveries at most.
        max_deliveries: 50,
        ordering: Ordering::PerStream,
        ..GroupSpec::new(Source::All(AllSource::default()))
    };
    client.put_group(&group, &spec).await.unwrap();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let progress = Arc::new(tokio::sync::Notify::new());
    let workers: Vec<_> = ["c1", "c2", "c3", "c4"]
        .into_iter()
        .map(|name| {
            tokio::spawn(consume(
                base.clone(),
                group.clone(),
                name,
                Arc::clone(&seen),
                Arc::clone(&progress),
            ))
        })
        .collect();
    tokio::time::timeout(RUN_DEADLINE, async {
        for kill in 1..=KILLS {
            loop {
                let notified = progress.notified();
                if seen.lock().unwrap().handled.len() >= kill * TOTAL / (KILLS + 1) {
                    break;
                }
                notified.await;
            }
            server.kill();
            server.launch();
        }
        for w in workers {
            w.await.unwrap();
        }
    })
    .await
    .expect("the consumers worked the group off across the kills");

    let status = client.group(&group).await.unwrap();
    let info = status.info;
    assert_eq!(
        (
            info.acked,
            info.pending,
            info.in_flight,
            info.parked,
            info.skipped
        ),
        (TOTAL as u64, 0, 0, 0, 0),
        "every event acked, none lost"
    );
    let s = seen.lock().unwrap();
    assert_eq!(s.handled.len(), TOTAL, "every event was handled");
    assert!(
        s.deliveries >= TOTAL,
        "{} deliveries for {TOTAL} events",
        s.deliveries
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acked_event_comes_back_and_none_is_lost_across_five_kills_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    run_with_kills(dir.path().join("store").to_str().unwrap().to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acked_event_comes_back_and_none_is_lost_across_five_kills_on_redis() {
    let redis = concord_testkit::redis::shared();
    let store = format!(
        "{}?prefix={}",
        redis.url(),
        concord_testkit::redis::unique_prefix()
    );
    run_with_kills(store).await;
}
