//! Criterion benchmarks of the two append paths every user feels (issue 22): the server's
//! append handler in process (the router called as a service, no socket, over the
//! in-memory store, so the figure is the HTTP layer's own work: routing, access, body
//! parsing and checks, the hand-off, metrics, the answer), and a lone caller's durable
//! append to the embedded store beside plain SQLite doing one transaction per event with
//! the same durability (WAL, `synchronous = FULL`), measured in the same run.
//!
//! `cargo bench -p concord-bench --bench append_paths` measures; `cargo test -p
//! concord-bench --benches` runs each once as a smoke test.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use concord_core::{
    AppendRequest, EventStore, EventType, ExpectedVersion, Json, MemoryStore, NewEvent, StreamName,
};
use concord_server::ServerConfig;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tower_service::Service;

/// One event of ~200 bytes as a client sends it (`expected_version: any`, no id).
fn body(events: usize) -> String {
    let event = r#"{"type":"Deposited","data":{"amount":125,"currency":"EUR","account":"account-42","note":"a deposit of about two hundred bytes, as the issue measures it","by":"teller-7"},"tags":["branch:paris"]}"#;
    let list = vec![event; events].join(",");
    format!(r#"{{"expected_version":"any","events":[{list}]}}"#)
}

fn server_handler(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let router = concord_server::router(store, ServerConfig::default());
    let mut group = c.benchmark_group("server_append");
    for events in [1usize, 10] {
        let text = body(events);
        group.throughput(Throughput::Elements(events as u64));
        let mut n = 0u64;
        group.bench_with_input(BenchmarkId::new("events", events), &text, |b, text| {
            b.iter(|| {
                n += 1;
                // A stream per 1 000 appends keeps the memory store's streams short.
                let request = http::Request::post(format!("/streams/bench-{}", n / 1000))
                    .header("content-type", "application/json")
                    .body(Body::from(text.clone()))
                    .unwrap();
                let mut service = router.clone();
                runtime.block_on(async {
                    let response = service.call(request).await.unwrap();
                    assert_eq!(response.status(), 201);
                    response.into_body().collect().await.unwrap()
                })
            });
        });
    }
    group.finish();
}

fn lone_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = concord_embedded::EmbeddedStore::open(dir.path().join("store")).unwrap();
    let stream = StreamName::new("lone-1").unwrap();
    let data = br#"{"amount":1}"#;
    let mut group = c.benchmark_group("lone_append");
    group.throughput(Throughput::Elements(1));
    group.bench_function("embedded", |b| {
        b.iter(|| {
            runtime.block_on(async {
                store
                    .append(AppendRequest {
                        stream: stream.clone(),
                        expected: ExpectedVersion::Any,
                        events: vec![NewEvent::new(
                            EventType::new("BenchTicked").unwrap(),
                            Json::from_bytes("data", data.to_vec()).unwrap(),
                        )],
                        rebase_unless: None,
                    })
                    .await
                    .unwrap()
            })
        });
    });
    // The baseline of the same run: what SQLite alone does per durable event.
    let conn = rusqlite::Connection::open(dir.path().join("plain.db")).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL,
                              version INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL);",
    )
    .unwrap();
    let mut version = 0i64;
    group.bench_function("plain_sqlite", |b| {
        b.iter(|| {
            version += 1;
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            conn.prepare_cached(
                "INSERT INTO events (stream, version, type, data) VALUES ('lone-1', ?1, 'BenchTicked', ?2)",
            )
            .unwrap()
            .execute((version, &data[..]))
            .unwrap();
            conn.execute_batch("COMMIT").unwrap();
        });
    });
    group.finish();
}

criterion_group!(benches, server_handler, lone_append);
criterion_main!(benches);
