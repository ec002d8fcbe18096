//! A real server on an ephemeral port, and a small HTTP and SSE toolkit for the tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations
)]

use std::sync::Arc;
use std::time::Duration;

use concord_core::{EventStore, MemoryStore};
use concord_server::{ServerConfig, ServerError};
use futures::stream::{BoxStream, StreamExt};
use serde_json::Value;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A server running in the test's runtime.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn EventStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

pub async fn start() -> TestServer {
    start_with(Arc::new(MemoryStore::new()), ServerConfig::default()).await
}

pub async fn start_config(config: ServerConfig) -> TestServer {
    start_with(Arc::new(MemoryStore::new()), config).await
}

pub async fn start_with(store: Arc<dyn EventStore>, config: ServerConfig) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(concord_server::serve(
        listener,
        Arc::clone(&store),
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    TestServer {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        store,
        stop: Some(stop),
        handle: Some(handle),
    }
}

/// A response, with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json answer of `status` and `urn:concord:<name>`.
    pub fn assert_problem(&self, status: u16, name: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        assert_eq!(
            self.json["type"],
            format!("urn:concord:{name}"),
            "{}",
            self.text
        );
        assert_eq!(self.json["status"], status);
        assert!(
            self.json["title"].is_string() && self.json["detail"].is_string(),
            "{}",
            self.text
        );
    }
}

impl TestServer {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.send(
            self.http
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Appends one event of `event_type` to `stream` with `expected_version`.
    pub async fn append(
        &self,
        stream: &str,
        expected: Value,
        event_type: &str,
        data: Value,
    ) -> Answer {
        let mut body = serde_json::json!({"events": [{"type": event_type, "data": data}]});
        if !expected.is_null() {
            body["expected_version"] = expected;
        }
        self.post(&format!("/streams/{stream}"), &body).await
    }

    /// The store's head, read directly (not through HTTP).
    pub async fn head(&self) -> u64 {
        self.store.head().await.unwrap().get()
    }

    /// Triggers the shutdown and returns what `serve` returned.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.trigger_shutdown();
        self.join().await
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn join(&mut self) -> Result<(), ServerError> {
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("the server did not stop in time")
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// One frame of an SSE response.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Comment(String),
    Event {
        id: Option<String>,
        event: Option<String>,
        data: String,
    },
}

/// Reads SSE frames from a response body.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status().as_u16(), 200);
        let ct = response
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        SseReader {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buffer.find('\n') {
                let line: String = self.buffer.drain(..=i).collect();
                return Some(line.trim_end_matches(['\n', '\r']).to_owned());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// The next frame, or `None` when the server closed the stream.
    pub async fn frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(DEADLINE, self.frame_inner())
            .await
            .expect("no SSE frame in time")
    }

    async fn frame_inner(&mut self) -> Option<Frame> {
        let (mut id, mut event, mut data): (Option<String>, Option<String>, Vec<String>) =
            (None, None, vec![]);
        loop {
            let line = self.line().await?;
            if let Some(comment) = line.strip_prefix(':') {
                if id.is_none() && data.is_empty() {
                    return Some(Frame::Comment(comment.trim().to_owned()));
                }
                continue;
            }
            if line.is_empty() {
                if !data.is_empty() {
                    return Some(Frame::Event {
                        id,
                        event,
                        data: data.join("\n"),
                    });
                }
                continue;
            }
            let (field, value) = line
                .split_once(':')
                .map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)))
                .unwrap_or((&line, ""));
            match field {
                "id" => id = Some(value.to_owned()),
                "event" => event = Some(value.to_owned()),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
    }

    /// The next event (skipping comments): its id and parsed data.
    pub async fn event(&mut self) -> (u64, Value) {
        loop {
            match self.frame().await {
                Some(Frame::Comment(_)) => continue,
                Some(Frame::Event { id, data, .. }) => {
                    return (
                        id.unwrap().parse().unwrap(),
                        serde_json::from_str(&data).unwrap(),
                    );
                }
                None => panic!("the subscription ended"),
            }
        }
    }
}

/// Iteration counts scale with `CONCORD_TEST_SCALE` (default 1).
pub fn scale() -> usize {
    std::env::var("CONCORD_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}
