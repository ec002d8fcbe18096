//! Stream lifecycle over HTTP (API.md "Deleting streams", "Retention: stream metadata",
//! "Scavenge"): status codes, problem types and what reads show afterwards, against a
//! real server on the reference store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{TestServer, start, start_config};
use concord_server::{ServerConfig, Tokens, TokensSource};
use serde_json::{Value, json};

impl TestServer {
    async fn delete(&self, path: &str) -> common::Answer {
        self.send(self.http.delete(self.url(path))).await
    }

    async fn put(&self, path: &str, body: &Value) -> common::Answer {
        self.put_raw(path, &body.to_string()).await
    }

    async fn put_raw(&self, path: &str, body: &str) -> common::Answer {
        let request = self
            .http
            .put(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.send(request).await
    }

    async fn deposits(&self, stream: &str, n: usize) -> Value {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"type": "Deposited", "data": {"amount": i}}))
            .collect();
        let answer = self
            .post(&format!("/streams/{stream}"), &json!({"events": events}))
            .await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.json
    }
}

fn versions(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_soft_delete_is_204_then_reads_are_404_and_an_append_goes_on_from_the_last_version() {
    let server = start().await;
    server.deposits("customer-1", 3).await;
    assert_eq!(server.delete("/streams/customer-1").await.status, 204);
    server
        .get("/streams/customer-1")
        .await
        .assert_problem(404, "stream-not-found");
    let list = server.get("/streams?prefix=customer-").await;
    assert_eq!(list.json["streams"], json!([]), "{}", list.text);
    let again = server
        .post(
            "/streams/customer-1",
            &json!({"expected_version": "no_stream", "events": [{"type": "Registered", "data": {}}]}),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.json["first_version"], 4);
    assert_eq!(
        versions(&server.get("/streams/customer-1").await.json),
        vec![4]
    );
}

#[tokio::test]
async fn deleting_a_missing_stream_is_404_and_a_stale_expected_version_is_409_with_the_missed_events()
 {
    let server = start().await;
    server
        .delete("/streams/customer-9")
        .await
        .assert_problem(404, "stream-not-found");
    server.deposits("customer-2", 5).await;
    let stale = server
        .delete("/streams/customer-2?expected_version=3")
        .await;
    stale.assert_problem(409, "version-conflict");
    assert_eq!(stale.json["actual_version"], 5);
    assert_eq!(
        stale.json["concurrent_events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(
        server
            .delete("/streams/customer-2?expected_version=5")
            .await
            .status,
        204
    );
    server
        .delete("/streams/customer-2?expected_version=x")
        .await
        .assert_problem(400, "invalid-request");
}

#[tokio::test]
async fn a_tombstoned_stream_answers_410_to_every_append_read_and_subscription() {
    let server = start().await;
    server.deposits("customer-3", 1).await;
    assert_eq!(
        server
            .delete("/streams/customer-3?tombstone=true")
            .await
            .status,
        204
    );
    server
        .get("/streams/customer-3")
        .await
        .assert_problem(410, "stream-deleted");
    server
        .get("/streams/customer-3/1")
        .await
        .assert_problem(410, "stream-deleted");
    server
        .post(
            "/streams/customer-3",
            &json!({"events": [{"type": "T", "data": {}}]}),
        )
        .await
        .assert_problem(410, "stream-deleted");
    let head = server.head().await;
    server
        .post(
            "/append",
            &json!({"parts": [
                {"stream": "customer-4", "events": [{"type": "T", "data": {}}]},
                {"stream": "customer-3", "events": [{"type": "T", "data": {}}]}
            ]}),
        )
        .await
        .assert_problem(410, "stream-deleted");
    assert_eq!(
        server.head().await,
        head,
        "nothing of the multi-append was written"
    );
    server
        .get("/streams/customer-3/metadata")
        .await
        .assert_problem(410, "stream-deleted");
    server
        .delete("/streams/customer-3")
        .await
        .assert_problem(410, "stream-deleted");
    server
        .get("/subscribe/streams/customer-3")
        .await
        .assert_problem(410, "stream-deleted");
}

#[tokio::test]
async fn metadata_is_a_merge_of_what_is_sent_and_takes_effect_for_reads_at_once() {
    let server = start().await;
    server.deposits("sensor-1", 10).await;
    let empty = server.get("/streams/sensor-1/metadata").await;
    assert_eq!((empty.status, empty.json.clone()), (200, json!({})));
    let set = server
        .put(
            "/streams/sensor-1/metadata",
            &json!({"max_count": 3, "max_age_seconds": 86400}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.json, json!({"max_count": 3, "max_age_seconds": 86400}));
    assert_eq!(
        versions(&server.get("/streams/sensor-1").await.json),
        vec![8, 9, 10]
    );
    let merged = server
        .put(
            "/streams/sensor-1/metadata",
            &json!({"max_age_seconds": null, "truncate_before": 9}),
        )
        .await;
    assert_eq!(merged.json, json!({"max_count": 3, "truncate_before": 9}));
    assert_eq!(
        versions(&server.get("/streams/sensor-1").await.json),
        vec![9, 10]
    );
    assert_eq!(
        server.get("/streams/sensor-1/metadata").await.json,
        merged.json
    );
    for bad in [
        r#"{"max_count": 0}"#,
        r#"{"max_count": -1}"#,
        r#"{"max_count": "3"}"#,
        r#"{"max_count": 1.5}"#,
        r#"{"maxcount": 3}"#,
        "[]",
    ] {
        server
            .put_raw("/streams/sensor-1/metadata", bad)
            .await
            .assert_problem(400, "invalid-request");
    }
    assert_eq!(
        server.get("/streams/sensor-1/metadata").await.json,
        merged.json
    );
}

#[tokio::test]
async fn a_scavenge_is_200_with_what_it_removed_and_the_global_log_keeps_the_other_positions() {
    let server = start().await;
    server.deposits("customer-5", 2).await;
    server.deposits("account-1", 1).await;
    assert_eq!(server.delete("/streams/customer-5").await.status, 204);
    let report = server.post("/admin/scavenge", &json!({})).await;
    assert_eq!(report.status, 200, "{}", report.text);
    assert_eq!(report.json["events_removed"], 2);
    let all = server.get("/all").await;
    let positions: Vec<u64> = all.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![3]);
    let metrics = server.get("/metrics").await.text;
    assert!(
        metrics.contains("concord_scavenge_runs_total{store=\"memory\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("concord_scavenge_events_removed_total{store=\"memory\"} 2\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("concord_scavenge_last_completed_seconds{store=\"memory\"} 0\n"));
}

/// `serve` scavenges on its own at the period the operator sets: a deleted stream's
/// events are erased without anyone asking, and the metrics count the runs.
#[tokio::test]
async fn serve_scavenges_on_its_schedule() {
    let server = start_config(ServerConfig {
        scavenge_every: Some(std::time::Duration::from_millis(50)),
        ..ServerConfig::default()
    })
    .await;
    server.deposits("customer-9", 3).await;
    server.deposits("account-1", 1).await;
    assert_eq!(server.delete("/streams/customer-9").await.status, 204);
    // Waits for the condition itself (the erased events gone from the global log), with a
    // deadline, not for a fixed time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let all = server.get("/all").await;
        if all.json["events"].as_array().map(Vec::len) == Some(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled scavenge erased the deleted stream: {}",
            all.text
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let metrics = server.get("/metrics").await.text;
    assert!(
        metrics.contains("concord_scavenge_events_removed_total{store=\"memory\"} 3\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_scavenge_needs_write_on_every_stream() {
    let tokens = Tokens::parse(
        r#"
[[token]]
token = "admin-0123456789abcdef0123456789abcdef"
read = ["*"]
write = ["*"]

[[token]]
token = "bank-0123456789abcdef0123456789abcdefg"
read = ["account-"]
write = ["account-"]
"#,
    )
    .unwrap();
    let server = start_config(ServerConfig {
        tokens: Some(TokensSource::Parsed(tokens)),
        ..ServerConfig::default()
    })
    .await;
    let bank = server
        .send(
            server
                .http
                .post(server.url("/admin/scavenge"))
                .bearer_auth("bank-0123456789abcdef0123456789abcdefg"),
        )
        .await;
    bank.assert_problem(403, "forbidden");
    let delete = server
        .send(
            server
                .http
                .delete(server.url("/streams/customer-1"))
                .bearer_auth("bank-0123456789abcdef0123456789abcdefg"),
        )
        .await;
    delete.assert_problem(403, "forbidden");
    let admin = server
        .send(
            server
                .http
                .post(server.url("/admin/scavenge"))
                .bearer_auth("admin-0123456789abcdef0123456789abcdef"),
        )
        .await;
    assert_eq!(admin.status, 200, "{}", admin.text);
}
