//! Consumer groups over HTTP (shared/API.md, "Consumer groups"): create, poll, ack, nack,
//! parked and replay, the long poll waking on an append, per-group metrics, and every bad
//! input answered with its problem.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{TestServer, start};
use serde_json::{Value, json};

async fn put(server: &TestServer, group: &str, body: &Value) -> common::Answer {
    server
        .send(
            server
                .http
                .put(server.url(&format!("/groups/{group}")))
                .body(body.to_string()),
        )
        .await
}

async fn deposit(server: &TestServer, stream: &str) {
    let a = server
        .append(stream, json!("any"), "Deposited", json!({"amount": 1}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
}

fn ack_ids(answer: &common::Answer) -> Vec<Value> {
    answer.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ack_id"].clone())
        .collect()
}

#[tokio::test]
async fn a_group_hands_out_events_and_remembers_acks() {
    let server = start().await;
    deposit(&server, "order-1").await;
    deposit(&server, "order-2").await;
    let created = put(
        &server,
        "orders",
        &json!({"source": {"all": {"category": "order"}}}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let updated = put(
        &server,
        "orders",
        &json!({"source": {"all": {"category": "order"}}, "max_deliveries": 3}),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.json["max_deliveries"], 3);
    let polled = server
        .post("/groups/orders/poll", &json!({"consumer": "w1", "max": 10}))
        .await;
    assert_eq!(polled.status, 200, "{}", polled.text);
    let messages = polled.json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["delivery"], 1);
    assert_eq!(messages[0]["event"]["stream"], "order-1");
    let mut ids = ack_ids(&polled);
    ids.push(json!("garbage"));
    let acked = server
        .post("/groups/orders/ack", &json!({"ack_ids": ids}))
        .await;
    assert_eq!(acked.json["acked"], 2, "{}", acked.text);
    let info = server.get("/groups/orders").await;
    assert_eq!(
        (
            &info.json["acked"],
            &info.json["in_flight"],
            &info.json["parked"],
            &info.json["pending"]
        ),
        (&json!(2), &json!(0), &json!(0), &json!(0)),
        "{}",
        info.text
    );
    let list = server.get("/groups").await;
    assert_eq!(list.json["groups"][0]["group"], "orders");
    let metrics = server.get("/metrics").await;
    assert!(
        metrics
            .text
            .contains("concord_group_acked_total{group=\"orders\"} 2"),
        "{}",
        metrics.text
    );
    let deleted = server
        .send(server.http.delete(server.url("/groups/orders")))
        .await;
    assert_eq!(deleted.status, 204);
    server
        .get("/groups/orders")
        .await
        .assert_problem(404, "group-not-found");
}

#[tokio::test]
async fn a_long_poll_wakes_when_an_event_is_appended() {
    let server = start().await;
    let created = put(
        &server,
        "orders",
        &json!({"source": {"stream": "order-9"}, "from": "end"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let body = json!({"consumer": "w1", "wait_ms": 60000});
    let poll = server.post("/groups/orders/poll", &body);
    let append = async {
        // The poll is parked on the head; this append is what ends it.
        tokio::task::yield_now().await;
        deposit(&server, "order-9").await;
    };
    let (polled, ()) = tokio::join!(poll, append);
    assert_eq!(polled.status, 200, "{}", polled.text);
    assert_eq!(polled.json["messages"][0]["event"]["stream"], "order-9");
}

#[tokio::test]
async fn nack_park_then_replay_delivers_again() {
    let server = start().await;
    deposit(&server, "order-1").await;
    put(&server, "orders", &json!({"source": {"stream": "order-1"}})).await;
    let polled = server
        .post("/groups/orders/poll", &json!({"consumer": "w1"}))
        .await;
    let nacked = server
        .post(
            "/groups/orders/nack",
            &json!({"ack_ids": ack_ids(&polled), "action": "park"}),
        )
        .await;
    assert_eq!(nacked.json["nacked"], 1, "{}", nacked.text);
    let parked = server.get("/groups/orders/parked").await;
    assert_eq!(parked.json["events"][0]["stream"], "order-1");
    let replayed = server
        .post("/groups/orders/replay-parked", &json!({}))
        .await;
    assert_eq!(replayed.json["replayed"], 1, "{}", replayed.text);
    let again = server
        .post("/groups/orders/poll", &json!({"consumer": "w2"}))
        .await;
    assert_eq!(again.json["messages"][0]["delivery"], 1, "{}", again.text);
}

#[tokio::test]
async fn bad_input_is_answered_with_its_problem() {
    let server = start().await;
    put(
        &server,
        "g",
        &json!({"source": {"all": {}}, "max_deliveries": 0}),
    )
    .await
    .assert_problem(400, "invalid-request");
    put(
        &server,
        "g",
        &json!({"source": {"all": {}}, "ack_timeout_ms": 99}),
    )
    .await
    .assert_problem(400, "invalid-request");
    put(
        &server,
        "g",
        &json!({"source": {"all": {}}, "ordering": "random"}),
    )
    .await
    .assert_problem(400, "invalid-request");
    put(&server, "g", &json!({"max_deliveries": 1}))
        .await
        .assert_problem(400, "invalid-request");
    server
        .get("/groups/g")
        .await
        .assert_problem(404, "group-not-found");
    server
        .post("/groups/g/poll", &json!({"consumer": "w"}))
        .await
        .assert_problem(404, "group-not-found");
    assert_eq!(
        put(&server, "g", &json!({"source": {"all": {}}}))
            .await
            .status,
        201
    );
    put(&server, "g", &json!({"source": {"stream": "s"}}))
        .await
        .assert_problem(409, "group-source-changed");
    put(&server, "g", &json!({"source": {"all": {}}, "from": "end"}))
        .await
        .assert_problem(409, "group-source-changed");
    for body in [
        json!({"consumer": "w", "max": 0}),
        json!({"consumer": "w", "max": 1001}),
        json!({"consumer": ""}),
        json!({"consumer": "c".repeat(257)}),
        json!({"consumer": "w", "wait_ms": 60001}),
    ] {
        server
            .post("/groups/g/poll", &body)
            .await
            .assert_problem(400, "invalid-request");
    }
    let acked = server
        .post("/groups/g/ack", &json!({"ack_ids": ["1.1", "nope"]}))
        .await;
    assert_eq!(acked.json["acked"], 0, "{}", acked.text);
}
