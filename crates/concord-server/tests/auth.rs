//! Access control (401/403, `/health` always open) and the answers of a server whose
//! store is unreachable (503 without leaking the cause).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::{TestServer, start_config, start_with};
use concord_core::{
    AllPage, AppendOutcome, AppendRequest, Direction, EventStore, Filter, Position, RecordedEvent,
    StoreError, StreamInfo, StreamName, Version,
};
use concord_server::{ServerConfig, ServerError, Tokens, TokensSource};
use serde_json::json;

const TOKENS: &str = r#"
[[token]]
token = "admin-0123456789abcdef0123456789abcdef"
read = ["*"]
write = ["*"]

[[token]]
token = "bank-0123456789abcdef0123456789abcdefg"
name = "bank service"
read = ["account-"]
write = ["account-"]

[[token]]
token = "audit-0123456789abcdef0123456789abcdef"
read = ["*"]
"#;

const ADMIN: &str = "admin-0123456789abcdef0123456789abcdef";
const BANK: &str = "bank-0123456789abcdef0123456789abcdefg";
const AUDIT: &str = "audit-0123456789abcdef0123456789abcdef";

async fn guarded() -> TestServer {
    let tokens = Tokens::parse(TOKENS).unwrap();
    start_config(ServerConfig {
        tokens: Some(TokensSource::Parsed(tokens)),
        ..ServerConfig::default()
    })
    .await
}

impl TestServer {
    async fn as_token(&self, token: &str, method: reqwest::Method, path: &str) -> common::Answer {
        let body = json!({"events": [{"type": "Deposited", "data": {"amount": 1}}]}).to_string();
        let mut request = self
            .http
            .request(method.clone(), self.url(path))
            .bearer_auth(token);
        if method == reqwest::Method::POST {
            request = request.body(body);
        }
        self.send(request).await
    }
}

#[tokio::test]
async fn requests_without_a_known_token_are_401_except_health_and_the_ui_shell() {
    let server = guarded().await;
    let health = server.get("/health").await;
    assert_eq!(health.status, 200);
    // The web UI's shell holds no data; the page asks for a token when the API answers 401.
    for path in ["/", "/ui/app.js"] {
        assert_eq!(server.get(path).await.status, 200, "{path}");
    }
    for path in [
        "/all",
        "/streams",
        "/streams/account-1",
        "/metrics",
        "/openapi.json",
        "/nope",
        "/subscribe/all",
    ] {
        let answer = server.get(path).await;
        answer.assert_problem(401, "unauthorized");
        assert_eq!(
            answer.header("www-authenticate"),
            Some("Bearer realm=\"concord\"")
        );
        server
            .as_token("wrong", reqwest::Method::GET, path)
            .await
            .assert_problem(401, "unauthorized");
    }
    server
        .post(
            "/streams/account-1",
            &json!({"events": [{"type": "T", "data": {}}]}),
        )
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(server.head().await, 0);
}

#[tokio::test]
async fn grants_decide_what_a_token_may_read_and_write() {
    use reqwest::Method;
    let server = guarded().await;
    assert_eq!(
        server
            .as_token(BANK, Method::POST, "/streams/account-1")
            .await
            .status,
        201
    );
    server
        .as_token(BANK, Method::POST, "/streams/auction-1")
        .await
        .assert_problem(403, "forbidden");
    server
        .as_token(AUDIT, Method::POST, "/streams/account-1")
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        server
            .as_token(ADMIN, Method::POST, "/streams/auction-1")
            .await
            .status,
        201
    );

    assert_eq!(
        server
            .as_token(BANK, Method::GET, "/streams/account-1")
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .as_token(BANK, Method::GET, "/streams/account-1/1")
            .await
            .status,
        200
    );
    server
        .as_token(BANK, Method::GET, "/streams/auction-1")
        .await
        .assert_problem(403, "forbidden");
    server
        .as_token(BANK, Method::GET, "/all")
        .await
        .assert_problem(403, "forbidden");
    server
        .as_token(BANK, Method::GET, "/subscribe/all")
        .await
        .assert_problem(403, "forbidden");
    server
        .as_token(BANK, Method::GET, "/subscribe/streams/auction-1")
        .await
        .assert_problem(403, "forbidden");
    server
        .as_token(BANK, Method::GET, "/streams")
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        server
            .as_token(BANK, Method::GET, "/streams?prefix=account-")
            .await
            .status,
        200
    );
    assert_eq!(
        server.as_token(AUDIT, Method::GET, "/all").await.status,
        200
    );
    assert_eq!(
        server.as_token(AUDIT, Method::GET, "/streams").await.status,
        200
    );
    assert_eq!(
        server.as_token(AUDIT, Method::GET, "/metrics").await.status,
        200
    );
    let sub = server
        .http
        .get(server.url("/subscribe/all"))
        .bearer_auth(AUDIT)
        .send()
        .await
        .unwrap();
    assert_eq!(sub.status().as_u16(), 200);
    assert_eq!(server.head().await, 2);
}

#[tokio::test]
async fn an_open_server_refuses_a_non_loopback_address() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let store = Arc::new(concord_core::MemoryStore::new());
    let refused = concord_server::serve(
        listener,
        store,
        ServerConfig::default(),
        std::future::pending(),
    )
    .await;
    assert!(
        matches!(refused, Err(ServerError::OpenOnNonLoopback(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_tokens_file_is_read_from_disk() {
    let dir = std::env::temp_dir().join(format!("concord-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens.toml");
    std::fs::write(&path, TOKENS).unwrap();
    let config = ServerConfig {
        tokens: Some(TokensSource::File(path.clone())),
        ..ServerConfig::default()
    };
    assert_eq!(config.validate().unwrap().unwrap().tokens.len(), 3);
    let server = start_config(config).await;
    assert_eq!(
        server
            .as_token(AUDIT, reqwest::Method::GET, "/all")
            .await
            .status,
        200
    );
    let missing = ServerConfig {
        tokens: Some(TokensSource::File(dir.join("absent.toml"))),
        ..ServerConfig::default()
    };
    assert!(matches!(missing.validate(), Err(ServerError::Tokens(m)) if m.contains("absent.toml")));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A store whose backend cannot be reached.
#[derive(Debug)]
struct Unreachable;

fn down() -> StoreError {
    StoreError::unavailable(
        "redis",
        "connection refused by 10.1.2.3:6379",
        std::io::Error::other("refused"),
    )
}

#[async_trait]
impl EventStore for Unreachable {
    fn backend(&self) -> &'static str {
        "redis"
    }
    async fn append_multi(
        &self,
        _: concord_core::MultiAppendRequest,
    ) -> Result<concord_core::MultiAppendOutcome, StoreError> {
        Err(down())
    }

    async fn append(&self, _: AppendRequest) -> Result<AppendOutcome, StoreError> {
        Err(down())
    }
    async fn read_stream(
        &self,
        _: &StreamName,
        _: Version,
        _: Direction,
        _: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Err(down())
    }
    async fn read_all(&self, _: Position, _: &Filter, _: usize) -> Result<AllPage, StoreError> {
        Err(down())
    }
    async fn stream_version(&self, _: &StreamName) -> Result<Version, StoreError> {
        Err(down())
    }
    async fn list_streams(
        &self,
        _: &str,
        _: Option<&StreamName>,
        _: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        Err(down())
    }
    async fn head(&self) -> Result<Position, StoreError> {
        Err(down())
    }
    async fn wait_for_head(&self, _: Position) -> Result<Position, StoreError> {
        Err(down())
    }
}

#[tokio::test]
async fn an_unreachable_store_answers_503_without_leaking_the_cause() {
    let server = start_with(Arc::new(Unreachable), ServerConfig::default()).await;
    let health = server.get("/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json["status"], "unavailable");
    assert_eq!(health.json["store"], "redis");
    assert_eq!(health.json["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        health.json["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{}",
        health.text
    );
    assert!(!health.text.contains("10.1.2.3"), "{}", health.text);
    for answer in [
        server
            .post(
                "/streams/account-1",
                &json!({"events": [{"type": "T", "data": {}}]}),
            )
            .await,
        server.get("/streams/account-1").await,
        server.get("/all").await,
    ] {
        answer.assert_problem(503, "unavailable");
        assert!(!answer.text.contains("10.1.2.3"), "{}", answer.text);
    }
    let sub = server
        .http
        .get(server.url("/subscribe/all"))
        .send()
        .await
        .unwrap();
    let mut sub = common::SseReader::new(sub);
    match sub.frame().await {
        Some(common::Frame::Event { event, data, .. }) => {
            assert_eq!(event.as_deref(), Some("error"));
            assert!(data.contains("urn:concord:unavailable"));
        }
        other => panic!("expected an error event, got {other:?}"),
    }
    assert_eq!(sub.frame().await, None, "a failed subscription ends");
}

/// A store that answers reads but refuses appends until it is reopened (the embedded
/// store after a failed fsync).
#[derive(Debug)]
struct Poisoned;

fn poisoned() -> StoreError {
    StoreError::Poisoned("a sync of /data/concord.db failed".to_owned())
}

#[async_trait]
impl EventStore for Poisoned {
    fn backend(&self) -> &'static str {
        "embedded"
    }
    async fn append_multi(
        &self,
        _: concord_core::MultiAppendRequest,
    ) -> Result<concord_core::MultiAppendOutcome, StoreError> {
        Err(poisoned())
    }
    async fn append(&self, _: AppendRequest) -> Result<AppendOutcome, StoreError> {
        Err(poisoned())
    }
    async fn read_stream(
        &self,
        _: &StreamName,
        _: Version,
        _: Direction,
        _: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(Vec::new())
    }
    async fn read_all(&self, from: Position, _: &Filter, _: usize) -> Result<AllPage, StoreError> {
        Ok(AllPage {
            events: Vec::new(),
            next_from: from,
            head: Position(0),
        })
    }
    async fn stream_version(&self, _: &StreamName) -> Result<Version, StoreError> {
        Ok(Version(0))
    }
    async fn list_streams(
        &self,
        _: &str,
        _: Option<&StreamName>,
        _: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        Ok(Vec::new())
    }
    async fn head(&self) -> Result<Position, StoreError> {
        Ok(Position(0))
    }
    async fn wait_for_head(&self, _: Position) -> Result<Position, StoreError> {
        Ok(Position(0))
    }
    async fn health(&self) -> Result<(), StoreError> {
        Err(poisoned())
    }
}

/// A poisoned store still reads (its head is fine), but /health must not say ok: it says
/// 503 and what to do, without the store's internals.
#[tokio::test]
async fn a_poisoned_store_makes_health_answer_503_with_what_to_do() {
    let server = start_with(Arc::new(Poisoned), ServerConfig::default()).await;
    let health = server.get("/health").await;
    assert_eq!(health.status, 503, "{}", health.text);
    assert_eq!(health.json["status"], "unavailable");
    let detail = health.json["detail"].as_str().unwrap();
    assert!(detail.contains("restart"), "{detail}");
    assert!(!health.text.contains("/data/concord.db"), "{}", health.text);
}
