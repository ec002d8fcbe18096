//! Consumer groups over HTTP (shared/API.md, "Consumer groups"): the lifecycle of a group,
//! every refusal with its problem type, the long poll that wakes on a new event, access
//! control on the source, the per-group metrics, and the store's own streams (the groups'
//! state) staying out of what users read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{DEADLINE, SseReader, TestServer, start, start_config};
use concord_server::{ServerConfig, Tokens, TokensSource};
use serde_json::{Value, json};

impl TestServer {
    async fn put(&self, path: &str, body: &Value) -> common::Answer {
        self.send(self.http.put(self.url(path)).body(body.to_string()))
            .await
    }

    async fn delete(&self, path: &str) -> common::Answer {
        self.send(self.http.delete(self.url(path))).await
    }

    async fn seed(&self, stream: &str, n: usize) {
        for i in 0..n {
            let a = self
                .append(stream, Value::Null, "Placed", json!({"n": i}))
                .await;
            assert_eq!(a.status, 201, "{}", a.text);
        }
    }
}

fn ack_ids(poll: &common::Answer) -> Vec<Value> {
    poll.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ack_id"].clone())
        .collect()
}

#[tokio::test]
async fn a_group_is_created_polled_acked_nacked_replayed_and_deleted() {
    let server = start().await;
    server.seed("order-1", 3).await;
    server.seed("invoice-1", 1).await;
    let spec = json!({"source": {"all": {"category": "order"}}, "ack_timeout_ms": 60000, "max_deliveries": 2});
    let created = server.put("/groups/receipts", &spec).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["group"], "receipts");
    assert_eq!(created.json["pending"], 3);
    assert_eq!(created.json["from"], "start");
    assert_eq!(created.json["ordering"], "none");
    assert_eq!(server.put("/groups/receipts", &spec).await.status, 200);

    let poll = server
        .post(
            "/groups/receipts/poll",
            &json!({"consumer": "worker-1", "max": 2}),
        )
        .await;
    assert_eq!(poll.status, 200, "{}", poll.text);
    let messages = poll.json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["delivery"], 1);
    assert_eq!(messages[0]["event"]["stream"], "order-1");
    assert_eq!(messages[0]["event"]["version"], 1);

    let status = server.get("/groups/receipts").await;
    assert_eq!(status.status, 200);
    assert_eq!(
        (&status.json["in_flight"], &status.json["pending"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(status.json["in_flight_messages"][0]["consumer"], "worker-1");

    let ids = ack_ids(&poll);
    let acked = server
        .post(
            "/groups/receipts/ack",
            &json!({"ack_ids": [ids[0], "no-such-id", "1.999.1"]}),
        )
        .await;
    assert_eq!(
        acked.json,
        json!({"acked": 1}),
        "unknown ids are not counted"
    );
    let nacked = server
        .post(
            "/groups/receipts/nack",
            &json!({"ack_ids": [ids[1]], "action": "park"}),
        )
        .await;
    assert_eq!(nacked.json, json!({"nacked": 1}));
    let parked = server.get("/groups/receipts/parked").await;
    assert_eq!(parked.json["parked"][0]["event"]["version"], 2);
    assert_eq!(parked.json["parked"][0]["deliveries"], 1);
    let replayed = server
        .post("/groups/receipts/replay-parked", &json!({}))
        .await;
    assert_eq!(replayed.json, json!({"replayed": 1}));
    let again = server
        .post("/groups/receipts/poll", &json!({"consumer": "worker-2"}))
        .await;
    let versions: Vec<&Value> = again.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["event"]["version"])
        .collect();
    assert_eq!(versions, vec![&json!(2), &json!(3)]);

    let list = server.get("/groups").await;
    assert_eq!(list.json["groups"][0]["group"], "receipts");
    assert_eq!(list.json["groups"].as_array().unwrap().len(), 1);

    assert_eq!(server.delete("/groups/receipts").await.status, 204);
    server
        .get("/groups/receipts")
        .await
        .assert_problem(404, "group-not-found");
    server
        .post("/groups/receipts/poll", &json!({"consumer": "w"}))
        .await
        .assert_problem(404, "group-not-found");
    server
        .delete("/groups/receipts")
        .await
        .assert_problem(404, "group-not-found");
    assert_eq!(server.get("/groups").await.json, json!({"groups": []}));
}

#[tokio::test]
async fn bad_input_is_refused_with_the_documented_problems() {
    let server = start().await;
    let base = json!({"source": {"stream": "order-1"}});
    for (body, field) in [
        (
            json!({"source": {"stream": "order-1"}, "max_deliveries": 0}),
            "max_deliveries",
        ),
        (
            json!({"source": {"stream": "order-1"}, "ack_timeout_ms": 99}),
            "ack_timeout_ms",
        ),
    ] {
        let answer = server.put("/groups/g", &body).await;
        answer.assert_problem(400, "invalid-request");
        assert_eq!(answer.json["field"], field, "{}", answer.text);
    }
    for body in [
        json!({}),
        json!({"source": {"stream": "order-1"}, "ordering": "random"}),
        json!({"source": {"stream": "$group-g"}}),
        json!({"source": {"stream": "order-1"}, "extra": 1}),
    ] {
        server
            .put("/groups/g", &body)
            .await
            .assert_problem(400, "invalid-request");
    }
    server
        .get(&format!("/groups/{}", "g".repeat(201)))
        .await
        .assert_problem(400, "invalid-request");
    assert_eq!(server.put("/groups/g", &base).await.status, 201);
    let moved = server
        .put("/groups/g", &json!({"source": {"stream": "order-2"}}))
        .await;
    moved.assert_problem(409, "group-conflict");
    assert_eq!(moved.json["field"], "source");
    server
        .put(
            "/groups/g",
            &json!({"source": {"stream": "order-1"}, "from": "end"}),
        )
        .await
        .assert_problem(409, "group-conflict");
    for body in [
        json!({"consumer": "w", "max": 0}),
        json!({"consumer": "w", "max": 1001}),
        json!({"consumer": ""}),
        json!({"consumer": "w".repeat(257)}),
        json!({"consumer": "w", "wait_ms": 60001}),
        json!({"max": 1}),
    ] {
        server
            .post("/groups/g/poll", &body)
            .await
            .assert_problem(400, "invalid-request");
    }
    assert_eq!(
        server
            .post("/groups/g/poll", &json!({"consumer": "w".repeat(256)}))
            .await
            .status,
        200
    );
    let too_many: Vec<String> = (0..1001).map(|i| format!("1.{i}.1")).collect();
    server
        .post("/groups/g/ack", &json!({"ack_ids": too_many}))
        .await
        .assert_problem(400, "invalid-request");
    server
        .post("/groups/g/nack", &json!({"ack_ids": [], "action": "drop"}))
        .await
        .assert_problem(400, "invalid-request");
    server
        .get("/groups/nope")
        .await
        .assert_problem(404, "group-not-found");
}

/// A poll with `wait_ms` returns as soon as an event for the group is appended, long
/// before its wait is over.
#[tokio::test]
async fn a_long_poll_wakes_when_an_event_is_appended() {
    let server = start().await;
    assert_eq!(
        server
            .put(
                "/groups/g",
                &json!({"source": {"all": {"category": "order"}}})
            )
            .await
            .status,
        201
    );
    let url = server.url("/groups/g/poll");
    let http = server.http.clone();
    let waiting = tokio::spawn(async move {
        http.post(url)
            .body(json!({"consumer": "w", "wait_ms": 60000}).to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    server.seed("invoice-1", 1).await;
    server.seed("order-1", 1).await;
    let answer = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("the poll answered once the event was there")
        .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["messages"][0]["event"]["stream"], "order-1");
}

/// The groups' state streams (`$group-…`) are the store's, not the users': `/all`,
/// `/streams`, `/query` and `/subscribe/all` leave them out.
#[tokio::test]
async fn the_stores_own_streams_stay_out_of_what_users_read() {
    let server = start().await;
    let answer = server
        .put("/groups/g", &json!({"source": {"stream": "order-1"}}))
        .await;
    assert_eq!(answer.status, 201);
    let sse = server
        .http
        .get(server.url("/subscribe/all"))
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(sse);
    server.seed("order-1", 2).await;
    let poll = server
        .post("/groups/g/poll", &json!({"consumer": "w"}))
        .await;
    server
        .post("/groups/g/ack", &json!({"ack_ids": ack_ids(&poll)}))
        .await;
    server.seed("order-2", 1).await;
    assert!(server.head().await >= 6, "3 events and 3 state events");

    let all = server.get("/all").await;
    let streams: Vec<&str> = all.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams, vec!["order-1", "order-1", "order-2"]);
    let listed = server.get("/streams").await;
    assert_eq!(listed.json["streams"].as_array().unwrap().len(), 2);
    let query = server
        .post("/query", &json!({"query": {"items": []}}))
        .await;
    assert_eq!(query.json["events"].as_array().unwrap().len(), 3);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (_, event) = sse.event().await;
        seen.push(event["stream"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, vec!["order-1", "order-1", "order-2"]);
    server
        .get("/streams/%24group-g")
        .await
        .assert_problem(400, "invalid-request");
}

#[tokio::test]
async fn metrics_show_each_groups_pending_in_flight_parked_and_acked() {
    let server = start().await;
    server.seed("order-1", 3).await;
    server
        .put("/groups/g", &json!({"source": {"stream": "order-1"}}))
        .await;
    let poll = server
        .post("/groups/g/poll", &json!({"consumer": "w", "max": 2}))
        .await;
    let ids = ack_ids(&poll);
    server
        .post("/groups/g/ack", &json!({"ack_ids": [ids[0]]}))
        .await;
    server
        .post(
            "/groups/g/nack",
            &json!({"ack_ids": [ids[1]], "action": "park"}),
        )
        .await;
    let text = server.get("/metrics").await.text;
    for line in [
        "concord_group_pending{group=\"g\"} 1",
        "concord_group_in_flight{group=\"g\"} 0",
        "concord_group_parked{group=\"g\"} 1",
        "concord_group_acked_total{group=\"g\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn a_token_needs_read_on_the_groups_source() {
    let tokens = Tokens::parse(
        r#"
[[token]]
token = "orders-0123456789abcdef0123456789abcdef"
read = ["order-"]
write = ["order-"]

[[token]]
token = "admin-0123456789abcdef0123456789abcdef"
read = ["*"]
write = ["*"]
"#,
    )
    .unwrap();
    let server = start_config(ServerConfig {
        tokens: Some(TokensSource::Parsed(tokens)),
        ..ServerConfig::default()
    })
    .await;
    let orders = "orders-0123456789abcdef0123456789abcdef";
    let admin = "admin-0123456789abcdef0123456789abcdef";
    let put = |token: &'static str, group: &'static str, body: Value| {
        server
            .http
            .put(server.url(&format!("/groups/{group}")))
            .bearer_auth(token)
            .body(body.to_string())
    };
    let mine = put(orders, "mine", json!({"source": {"stream": "order-1"}}));
    assert_eq!(server.send(mine).await.status, 201);
    let everything = put(orders, "all", json!({"source": {"all": {}}}));
    server
        .send(everything)
        .await
        .assert_problem(403, "forbidden");
    let theirs = put(admin, "theirs", json!({"source": {"stream": "invoice-1"}}));
    assert_eq!(server.send(theirs).await.status, 201);
    let poll = server
        .http
        .post(server.url("/groups/theirs/poll"))
        .bearer_auth(orders)
        .body(json!({"consumer": "w"}).to_string());
    server.send(poll).await.assert_problem(403, "forbidden");
    let list = server
        .send(server.http.get(server.url("/groups")).bearer_auth(orders))
        .await;
    let names: Vec<&Value> = list.json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["group"])
        .collect();
    assert_eq!(names, vec![&json!("mine")]);
    let anonymous = server.get("/groups").await;
    anonymous.assert_problem(401, "unauthorized");
}
