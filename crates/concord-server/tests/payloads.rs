//! Event payloads over HTTP (API.md, "Event payloads: JSON or bytes"): bytes go in as
//! `data_base64` with a `content_type` and come back the same way from every read (stream,
//! one event, `/all`, `/query`, conflicts, SSE), byte for byte; JSON events say
//! `application/json`; every malformed payload, and any unknown member of an event, is a
//! 400 that names the member and writes nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{SseReader, start};
use serde_json::{Value, json};

/// Every byte value once, and the same in standard base64.
fn all_bytes() -> (Vec<u8>, String) {
    let bytes: Vec<u8> = (0..=255).collect();
    let text = STANDARD.encode(&bytes);
    (bytes, text)
}

fn assert_bytes_event(e: &Value, content_type: &str, bytes: &[u8]) {
    assert_eq!(e["content_type"], content_type, "{e}");
    assert!(e.get("data").is_none(), "a bytes event has no `data`: {e}");
    let decoded = STANDARD.decode(e["data_base64"].as_str().unwrap()).unwrap();
    assert_eq!(decoded, bytes);
}

#[tokio::test]
async fn bytes_are_appended_as_base64_and_every_read_returns_them_byte_for_byte() {
    let server = start().await;
    let (bytes, text) = all_bytes();
    let a = server
        .post(
            "/streams/blob-1",
            &json!({"events": [
                {"type": "Uploaded", "content_type": "application/octet-stream", "data_base64": text,
                 "tags": ["blob:1"]},
                {"type": "Emptied", "content_type": "application/octet-stream", "data_base64": ""},
                {"type": "Noted", "data": {"note": "json"}}
            ]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);

    let page = server.get("/streams/blob-1").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let events = &page.json["events"];
    assert_bytes_event(&events[0], "application/octet-stream", &bytes);
    assert_bytes_event(&events[1], "application/octet-stream", &[]);
    assert_eq!(events[2]["content_type"], "application/json");
    assert_eq!(events[2]["data"], json!({"note": "json"}));
    assert!(events[2].get("data_base64").is_none());

    let one = server.get("/streams/blob-1/1").await;
    assert_bytes_event(&one.json, "application/octet-stream", &bytes);
    let all = server.get("/all?tags=blob:1").await;
    assert_eq!(all.json["events"].as_array().unwrap().len(), 1);
    assert_bytes_event(&all.json["events"][0], "application/octet-stream", &bytes);
    let query = server
        .post(
            "/query",
            &json!({"query": {"items": [{"types": ["Uploaded"]}]}}),
        )
        .await;
    assert_bytes_event(&query.json["events"][0], "application/octet-stream", &bytes);
}

#[tokio::test]
async fn json_given_as_base64_is_stored_as_the_json_text_it_was() {
    let server = start().await;
    let text = "{ \"amount\" : 5 }";
    let a = server
        .post(
            "/streams/account-1",
            &json!({"events": [{"type": "Deposited", "content_type": "application/json",
                                "data_base64": STANDARD.encode(text)}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let one = server.get("/streams/account-1/1").await;
    assert_eq!(one.json["content_type"], "application/json");
    assert_eq!(one.json["data"], json!({"amount": 5}));
    assert!(
        one.text.contains(text),
        "returned as the text that arrived: {}",
        one.text
    );
}

#[tokio::test]
async fn malformed_payloads_and_unknown_members_are_400_naming_them_and_write_nothing() {
    let server = start().await;
    for (event, names) in [
        (
            json!({"type": "T", "data": 1, "data_base64": "AA=="}),
            "not both",
        ),
        (
            json!({"type": "T", "content_type": "a/b", "data_base64": "%%%"}),
            "base64",
        ),
        (
            json!({"type": "T", "content_type": "application/json", "data_base64": "/w=="}),
            "JSON",
        ),
        (
            json!({"type": "T", "data_base64": STANDARD.encode("not json")}),
            "JSON",
        ),
        (
            json!({"type": "T", "content_type": "image/png", "data": {}}),
            "data_base64",
        ),
        (
            json!({"type": "T", "content_type": "png", "data_base64": ""}),
            "type/subtype",
        ),
        (
            json!({"type": "T", "content_type": "", "data_base64": ""}),
            "content_type",
        ),
        (
            json!({"type": "T", "content_type": format!("a/{}", "b".repeat(255)), "data_base64": ""}),
            "256",
        ),
        (json!({"type": "T"}), "data"),
        (
            json!({"type": "T", "data": {}, "tag": ["account:1"]}),
            "`tag`",
        ),
        (json!({"type": "T", "data": {}, "datta": 1}), "`datta`"),
    ] {
        let answer = server
            .post("/streams/blob-1", &json!({"events": [event]}))
            .await;
        answer.assert_problem(400, "invalid-request");
        let detail = answer.json["detail"].as_str().unwrap();
        assert!(detail.contains(names), "{event}: {detail}");
        let multi = server
            .post(
                "/append",
                &json!({"parts": [{"stream": "blob-1", "events": [event]}]}),
            )
            .await;
        multi.assert_problem(400, "invalid-request");
    }
    assert_eq!(server.head().await, 0, "a refused request wrote something");
    assert_eq!(server.get("/health").await.status, 200);
}

#[tokio::test]
async fn bytes_count_against_the_event_size_limit_as_decoded_bytes() {
    let config = concord_server::ServerConfig {
        limits: concord_core::Limits {
            event_bytes_max: 100,
            ..concord_core::Limits::default()
        },
        ..concord_server::ServerConfig::default()
    };
    let server = common::start_config(config).await;
    // 98 bytes of data (136 characters of base64) and `{}`: exactly at the limit.
    let fits = STANDARD.encode([7u8; 98]);
    let a = server
        .post(
            "/streams/blob-1",
            &json!({"events": [{"type": "T", "content_type": "a/b", "data_base64": fits}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let over = STANDARD.encode([7u8; 99]);
    server
        .post(
            "/streams/blob-1",
            &json!({"events": [{"type": "T", "content_type": "a/b", "data_base64": over}]}),
        )
        .await
        .assert_problem(413, "too-large");
}

#[tokio::test]
async fn a_conflict_lists_concurrent_bytes_events_as_base64() {
    let server = start().await;
    let (bytes, text) = all_bytes();
    let body = json!({"expected_version": "no_stream", "events": [
        {"type": "Uploaded", "content_type": "image/png", "data_base64": text}]});
    assert_eq!(server.post("/streams/blob-1", &body).await.status, 201);
    let conflict = server
        .post(
            "/streams/blob-1",
            &json!({"expected_version": 0, "events": [{"type": "T", "data": 1}]}),
        )
        .await;
    conflict.assert_problem(409, "version-conflict");
    assert_bytes_event(&conflict.json["concurrent_events"][0], "image/png", &bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_deliver_bytes_events_as_base64() {
    let server = start().await;
    let (bytes, text) = all_bytes();
    let body = json!({"events": [
        {"type": "Uploaded", "content_type": "application/x-protobuf", "data_base64": text},
        {"type": "Noted", "data": [1]}]});
    assert_eq!(server.post("/streams/blob-1", &body).await.status, 201);
    let response = server
        .http
        .get(server.url("/subscribe/streams/blob-1"))
        .send()
        .await
        .unwrap();
    let mut sub = SseReader::new(response);
    let (_, first) = sub.event().await;
    assert_bytes_event(&first, "application/x-protobuf", &bytes);
    let (_, second) = sub.event().await;
    assert_eq!(
        (&second["content_type"], &second["data"]),
        (&json!("application/json"), &json!([1]))
    );
}
