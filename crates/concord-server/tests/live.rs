//! Behaviour under concurrency and over time: 32 HTTP writers racing on one stream,
//! subscriptions (catch-up, live, resumption, keep-alive, a stalled reader), and graceful
//! shutdown with an append in flight.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{DEADLINE, Frame, SseReader, scale, start, start_config, start_with};
use concord_core::{Direction, EventStore, MemoryStore, Position, StoreError, StreamName, Version};
use concord_server::ServerConfig;
use concord_testkit::gated::{Gate, Held, Release};
use concord_testkit::wrap::{Wrap, Wrapped};
use serde_json::{Value, json};
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_writers_racing_on_one_stream_get_every_version_exactly_once() {
    let server = Arc::new(start().await);
    let per_writer = 5 * scale();
    let writers = 32;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = server.url("/streams/auction-1");
            let mut granted = Vec::new();
            let mut known = 0u64;
            let mut conflicts = 0;
            while granted.len() < per_writer {
                let id = uuid::Uuid::new_v4();
                let body = json!({"expected_version": known, "events": [{"id": id, "type": "BidPlaced", "data": {"bidder": w}}]});
                let r = http.post(&url).body(body.to_string()).send().await.unwrap();
                let status = r.status().as_u16();
                let answer: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                match status {
                    201 => {
                        let v = answer["first_version"].as_u64().unwrap();
                        assert_eq!(v, known + 1, "a granted version must be the one expected");
                        granted.push((v, id.to_string()));
                        known = v;
                    }
                    409 => {
                        conflicts += 1;
                        let actual = answer["actual_version"].as_u64().unwrap();
                        assert!(actual > known, "a conflict reports a newer version");
                        assert_eq!(answer["concurrent_events"].as_array().unwrap().len() as u64, (actual - known).min(100));
                        known = actual;
                    }
                    other => panic!("unexpected {other}: {answer}"),
                }
            }
            (granted, conflicts)
        }));
    }
    let mut by_version = BTreeMap::new();
    let mut conflicts = 0;
    for t in tasks {
        let (granted, c) = tokio::time::timeout(DEADLINE * 3, t)
            .await
            .unwrap()
            .unwrap();
        conflicts += c;
        for (v, id) in granted {
            assert!(
                by_version.insert(v, id).is_none(),
                "version {v} was granted twice"
            );
        }
    }
    let total = (writers * per_writer) as u64;
    assert_eq!(
        by_version.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let stored = server
        .store
        .read_stream(
            &StreamName::new("auction-1").unwrap(),
            Version(1),
            Direction::Forward,
            10_000,
        )
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, total);
    for e in stored {
        assert_eq!(
            by_version[&e.version.get()],
            e.id.to_string(),
            "the event at each version is the writer's that was told so"
        );
    }
    println!("{total} appends by {writers} writers with {conflicts} conflicts");
}

async fn append(server: &common::TestServer, stream: &str, n: u64) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "Deposited", "data": {"amount": i}}))
        .collect();
    assert_eq!(
        server
            .post(&format!("/streams/{stream}"), &json!({"events": events}))
            .await
            .status,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_all_catches_up_goes_live_and_resumes_after_last_event_id() {
    let server = start().await;
    append(&server, "account-1", 2).await;
    append(&server, "auction-1", 1).await;
    let response = server
        .http
        .get(server.url("/subscribe/all"))
        .send()
        .await
        .unwrap();
    let mut sub = SseReader::new(response);
    for expected in 1..=3 {
        let (id, event) = sub.event().await;
        assert_eq!(
            (id, event["position"].as_u64().unwrap()),
            (expected, expected)
        );
    }
    append(&server, "account-1", 2).await;
    assert_eq!(sub.event().await.0, 4);
    assert_eq!(sub.event().await.0, 5);
    drop(sub);

    let resumed = server
        .http
        .get(server.url("/subscribe/all?from=1"))
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    let mut sub = SseReader::new(resumed);
    assert_eq!(
        sub.event().await.0,
        4,
        "Last-Event-ID wins over from and resumes after it"
    );
    assert_eq!(sub.event().await.0, 5);

    let filtered = server
        .http
        .get(server.url("/subscribe/all?category=auction"))
        .send()
        .await
        .unwrap();
    let mut sub = SseReader::new(filtered);
    let (id, event) = sub.event().await;
    assert_eq!((id, event["stream"].as_str().unwrap()), (3, "auction-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_stream_uses_versions_as_ids_and_resumes() {
    let server = start().await;
    append(&server, "account-1", 3).await;
    append(&server, "account-2", 1).await;
    let response = server
        .http
        .get(server.url("/subscribe/streams/account-1?from=2"))
        .send()
        .await
        .unwrap();
    let mut sub = SseReader::new(response);
    assert_eq!(sub.event().await.0, 2);
    assert_eq!(sub.event().await.0, 3);
    append(&server, "account-2", 1).await;
    append(&server, "account-1", 1).await;
    let (id, event) = sub.event().await;
    assert_eq!(
        (
            id,
            event["stream"].as_str().unwrap(),
            event["position"].as_u64().unwrap()
        ),
        (4, "account-1", 6)
    );
    let resumed = server
        .http
        .get(server.url("/subscribe/streams/account-1"))
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(SseReader::new(resumed).event().await.0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subscription_gets_keep_alive_comments() {
    let config = ServerConfig {
        keep_alive: Duration::from_millis(50),
        ..ServerConfig::default()
    };
    let server = start_config(config).await;
    let response = server
        .http
        .get(server.url("/subscribe/all"))
        .send()
        .await
        .unwrap();
    let mut sub = SseReader::new(response);
    assert_eq!(
        sub.frame().await,
        Some(Frame::Comment("keep-alive".to_owned()))
    );
    assert_eq!(
        sub.frame().await,
        Some(Frame::Comment("keep-alive".to_owned()))
    );
    let metrics = server.get("/metrics").await;
    assert!(
        metrics
            .text
            .contains("concord_subscriptions_active{store=\"memory\"} 1"),
        "{}",
        metrics.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_slows_neither_writers_nor_other_subscribers() {
    let server = start().await;
    // A subscriber that never reads: its socket buffers fill and the server stops pulling.
    let stalled = server
        .http
        .get(server.url("/subscribe/all"))
        .send()
        .await
        .unwrap();
    let reader = server
        .http
        .get(server.url("/subscribe/all"))
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(reader);
    // Enough data to overflow the stalled connection's socket buffers several times.
    let payload = "x".repeat(8 * 1024);
    let batches = 40 * scale() as u64;
    let per_batch = 20u64;
    let writer = async {
        for _ in 0..batches {
            let events: Vec<Value> = (0..per_batch)
                .map(|_| json!({"type": "T", "data": payload}))
                .collect();
            assert_eq!(
                server
                    .post("/streams/doc-1", &json!({"events": events}))
                    .await
                    .status,
                201
            );
        }
    };
    tokio::time::timeout(DEADLINE, writer)
        .await
        .expect("writers were slowed down by a stalled subscriber");
    for expected in 1..=batches * per_batch {
        assert_eq!(reader.event().await.0, expected);
    }
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_append_in_flight_and_closes_subscriptions() {
    let memory = Arc::new(MemoryStore::new());
    let store = Arc::new(Gate::new(Arc::clone(&memory) as Arc<dyn EventStore>));
    store.hold_next(Held::Any);
    let mut server = start_with(
        Arc::clone(&store) as Arc<dyn EventStore>,
        ServerConfig::default(),
    )
    .await;
    let subscription = server
        .http
        .get(server.url("/subscribe/all"))
        .send()
        .await
        .unwrap();
    let mut subscription = SseReader::new(subscription);
    let http = server.http.clone();
    let url = server.url("/streams/account-1");
    let in_flight = tokio::spawn(async move {
        let r = http
            .post(url)
            .body(json!({"events": [{"type": "Deposited", "data": {"amount": 1}}]}).to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::timeout(DEADLINE, store.entered())
        .await
        .expect("the append never reached the store");
    server.trigger_shutdown();
    // The subscription ends without the append being released: shutdown closes it.
    assert_eq!(
        subscription.frame().await,
        None,
        "shutdown must close subscriptions"
    );
    store.release(Release::Pass);
    let (status, body) = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 201, "{body}");
    server
        .join()
        .await
        .expect("serve returns Ok after a graceful shutdown");
    assert_eq!(
        memory.head().await.unwrap(),
        Position(1),
        "the acknowledged append is in the store"
    );
    assert!(
        reqwest::get(server.url("/health")).await.is_err(),
        "no new connections after shutdown"
    );
}

/// A store whose `wait_for_head` gives up early a few times before it really waits (as the
/// Redis backend does every 2 s), and says when it is waiting for real.
#[derive(Debug)]
struct EarlyWaker {
    inner: MemoryStore,
    early: std::sync::atomic::AtomicUsize,
    waiting: Notify,
}

#[async_trait]
impl Wrap for EarlyWaker {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }
    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
        let left = self.early.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.early
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return self.inner.head().await;
        }
        self.waiting.notify_one();
        self.inner.wait_for_head(after).await
    }
}

/// `GET /head?after=p` waits until the head passes p (or the configured long poll ends),
/// even when the backend's own wait gives up earlier: on Redis it answered after 2 s
/// instead of the documented 10.
#[tokio::test]
async fn head_long_poll_waits_through_a_backend_that_returns_early() {
    let store = Arc::new(Wrapped(EarlyWaker {
        inner: MemoryStore::new(),
        early: std::sync::atomic::AtomicUsize::new(3),
        waiting: Notify::new(),
    }));
    let server = start_with(store.clone(), ServerConfig::default()).await;
    let polled = tokio::spawn({
        let http = server.http.clone();
        let url = server.url("/head?after=0");
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::timeout(DEADLINE, store.waiting.notified())
        .await
        .expect("the long poll asked the store again after it returned early");
    let appended = server
        .post(
            "/streams/account-1",
            &json!({"events": [{"type": "Opened", "data": {}}]}),
        )
        .await;
    assert_eq!(appended.status, 201);
    let answer = tokio::time::timeout(DEADLINE, polled)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({"head": 1})
    );
}

/// A raw connection to the server, for clients that misbehave on purpose.
async fn raw(server: &common::TestServer) -> tokio::net::TcpStream {
    let addr = server.base.trim_start_matches("http://");
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(mut conn: tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, conn.read_to_end(&mut answer))
        .await
        .expect("the server kept a slow or idle connection open")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn short_timeouts() -> ServerConfig {
    ServerConfig {
        header_timeout: Duration::from_millis(200),
        body_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    }
}

/// Slowloris: connections that send nothing, send their headers a few bytes at a time,
/// or stop in the middle of a body, used to stay open for as long as the client liked.
/// The server closes them after its header timeout (408 for a body that stopped coming).
#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_after_the_timeouts() {
    use tokio::io::AsyncWriteExt;
    let server = start_config(short_timeouts()).await;

    // Connected, silent.
    let idle = raw(&server).await;
    assert_eq!(until_closed(idle).await, "");

    // Headers started, never finished.
    let mut slow = raw(&server).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let answer = until_closed(slow).await;
    assert!(!answer.contains("200 OK"), "{answer}");

    // Headers complete, body cut short.
    let mut half = raw(&server).await;
    half.write_all(
        b"POST /streams/account-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"events\": [",
    )
    .await
    .unwrap();
    let answer = until_closed(half).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("urn:concord:request-timeout"), "{answer}");
    assert_eq!(server.get("/streams/account-1").await.status, 404);

    // A kept-alive connection that went quiet after its first request.
    let mut kept = raw(&server).await;
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(kept).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The header timeout is about requests, not answers: a subscription (or a long poll)
/// lasts as long as it has something to say.
#[tokio::test]
async fn a_subscription_outlives_the_header_timeout() {
    let server = start_config(ServerConfig {
        keep_alive: Duration::from_millis(300),
        ..short_timeouts()
    })
    .await;
    let response = server
        .http
        .get(server.url("/subscribe/all"))
        .send()
        .await
        .unwrap();
    let mut sub = SseReader::new(response);
    for _ in 0..3 {
        assert_eq!(sub.frame().await, Some(Frame::Comment("keep-alive".into())));
    }
    let appended = server
        .post(
            "/streams/account-1",
            &json!({"events": [{"type": "Opened", "data": {}}]}),
        )
        .await;
    assert_eq!(appended.status, 201);
    assert!(matches!(sub.frame().await, Some(Frame::Event { .. })));
}
