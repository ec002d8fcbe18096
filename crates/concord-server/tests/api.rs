//! The HTTP contract of API.md, black-box over a real socket: every status code, problem
//! types and their members, ETag and If-Match, paging, filters, idempotency, rebase, and
//! that bad input writes nothing and leaves the server serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{Answer, TestServer, start, start_config};
use concord_core::Limits;
use concord_server::ServerConfig;
use serde_json::{Value, json};

async fn opened_account(server: &TestServer) {
    let a = server
        .append(
            "account-42",
            json!("no_stream"),
            "AccountOpened",
            json!({"owner": "ann", "balance": 1000}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
}

/// After a refused request: nothing was written and the server still answers.
async fn assert_nothing_written_and_serving(server: &TestServer, head_before: u64) {
    assert_eq!(
        server.head().await,
        head_before,
        "a refused request wrote something"
    );
    assert_eq!(server.get("/health").await.status, 200);
}

#[tokio::test]
async fn append_answers_201_with_etag_and_the_event_reads_back() {
    let server = start().await;
    let a = server
        .post(
            "/streams/account-42",
            &json!({"expected_version": 0, "events": [{"type": "AccountOpened", "data": {"owner": "ann", "balance": 1000},
                    "metadata": {"actor": "admin"}, "tags": ["account:42"]}]}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.header("etag"), Some("\"1\""));
    assert_eq!(
        (
            &a.json["stream"],
            &a.json["first_version"],
            &a.json["last_version"],
            &a.json["first_position"],
            &a.json["last_position"]
        ),
        (
            &json!("account-42"),
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(1)
        )
    );
    assert_eq!(a.json["rebased"], Value::Null);
    assert!(a.json.as_object().unwrap().contains_key("rebased"));

    let r = server.get("/streams/account-42").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.json["version"], 1);
    assert_eq!(r.json["next"], Value::Null);
    let e = &r.json["events"][0];
    assert_eq!(
        (
            &e["type"],
            &e["data"]["balance"],
            &e["metadata"]["actor"],
            &e["tags"][0]
        ),
        (
            &json!("AccountOpened"),
            &json!(1000),
            &json!("admin"),
            &json!("account:42")
        )
    );
    assert!(
        e["id"].as_str().unwrap().len() == 36,
        "the server generated a UUID: {e}"
    );
    assert!(e["recorded_at"].as_str().unwrap().ends_with('Z'));

    let one = server.get("/streams/account-42/1").await;
    assert_eq!((one.status, &one.json["version"]), (200, &json!(1)));
    server
        .get("/streams/account-42/2")
        .await
        .assert_problem(404, "event-not-found");
    server
        .get("/streams/account-7")
        .await
        .assert_problem(404, "stream-not-found");
    server
        .get("/streams/account-7/1")
        .await
        .assert_problem(404, "stream-not-found");
}

#[tokio::test]
async fn conflict_reports_the_events_that_were_missed() {
    let server = start().await;
    opened_account(&server).await;
    let a = server
        .append("account-42", json!(1), "Deposited", json!({"amount": 2000}))
        .await;
    assert_eq!(a.status, 201);
    let b = server
        .append("account-42", json!(1), "Deposited", json!({"amount": 3000}))
        .await;
    b.assert_problem(409, "version-conflict");
    assert_eq!(
        (
            &b.json["stream"],
            &b.json["expected_version"],
            &b.json["actual_version"]
        ),
        (&json!("account-42"), &json!(1), &json!(2))
    );
    let missed = b.json["concurrent_events"].as_array().unwrap();
    assert_eq!(missed.len(), 1);
    assert_eq!(
        (&missed[0]["version"], &missed[0]["data"]["amount"]),
        (&json!(2), &json!(2000))
    );

    let no_stream = server
        .append("account-42", json!("no_stream"), "AccountOpened", json!({}))
        .await;
    no_stream.assert_problem(409, "version-conflict");
    assert_eq!(
        no_stream.json["concurrent_events"][0]["version"], 1,
        "no_stream lists the stream's first events"
    );
    let exists = server
        .append("account-9", json!("exists"), "Deposited", json!({}))
        .await;
    exists.assert_problem(409, "version-conflict");
    assert_eq!(exists.json["actual_version"], 0);
    assert_eq!(server.head().await, 2);
}

#[tokio::test]
async fn if_match_conflicts_answer_412_and_disagreeing_with_the_body_is_400() {
    let server = start().await;
    opened_account(&server).await;
    let body = json!({"events": [{"type": "Deposited", "data": {"amount": 5}}]});
    let ok = server
        .send(
            server
                .http
                .post(server.url("/streams/account-42"))
                .header("if-match", "\"1\"")
                .body(body.to_string()),
        )
        .await;
    assert_eq!((ok.status, ok.header("etag")), (201, Some("\"2\"")));
    let stale = server
        .send(
            server
                .http
                .post(server.url("/streams/account-42"))
                .header("if-match", "\"1\"")
                .body(body.to_string()),
        )
        .await;
    stale.assert_problem(412, "version-conflict");
    assert_eq!(stale.json["actual_version"], 2);
    let both = json!({"expected_version": 1, "events": [{"type": "Deposited", "data": {}}]});
    let differ = server
        .send(
            server
                .http
                .post(server.url("/streams/account-42"))
                .header("if-match", "\"2\"")
                .body(both.to_string()),
        )
        .await;
    differ.assert_problem(400, "invalid-request");
    let bad = server
        .send(
            server
                .http
                .post(server.url("/streams/account-42"))
                .header("if-match", "W/\"2\"")
                .body(body.to_string()),
        )
        .await;
    bad.assert_problem(400, "invalid-request");
    assert_nothing_written_and_serving(&server, 2).await;
}

#[tokio::test]
async fn a_stale_deposit_is_rebased_server_side_and_a_closed_account_refuses_it() {
    let server = start().await;
    opened_account(&server).await;
    assert_eq!(
        server
            .append("account-42", json!(1), "Deposited", json!({"amount": 2000}))
            .await
            .status,
        201
    );
    let body = json!({"expected_version": 1, "rebase_unless": ["AccountClosed"],
                      "events": [{"type": "Deposited", "data": {"amount": 3000}}]});
    let b = server.post("/streams/account-42", &body).await;
    assert_eq!(b.status, 201, "{}", b.text);
    assert_eq!(
        (
            &b.json["first_version"],
            &b.json["rebased"]["expected_version"]
        ),
        (&json!(3), &json!(1))
    );
    assert_eq!(
        b.json["rebased"]["concurrent_events"][0]["data"]["amount"],
        2000
    );

    assert_eq!(
        server
            .append("account-42", json!(3), "AccountClosed", json!({}))
            .await
            .status,
        201
    );
    let refused = server.post("/streams/account-42", &body).await;
    refused.assert_problem(409, "version-conflict");
    assert_eq!(
        refused.json["concurrent_events"].as_array().unwrap().len(),
        3
    );
}

#[tokio::test]
async fn a_repeated_append_is_a_200_duplicate_and_a_partial_one_is_refused() {
    let server = start().await;
    let (a, b, c) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let body = json!({"expected_version": "no_stream", "events": [{"id": a, "type": "T", "data": 1}, {"id": b, "type": "T", "data": 2}]});
    let first = server.post("/streams/doc-1", &body).await;
    assert_eq!(first.status, 201);
    let again = server.post("/streams/doc-1", &body).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(
        (
            &again.json["duplicate"],
            &again.json["first_version"],
            &again.json["last_position"]
        ),
        (&json!(true), &json!(1), &json!(2))
    );
    let partial = server
        .post("/streams/doc-1", &json!({"events": [{"id": b, "type": "T", "data": 2}, {"id": c, "type": "T", "data": 3}]}))
        .await;
    partial.assert_problem(409, "partial-duplicate");
    assert_eq!(partial.json["existing_ids"][0], json!(b));
    assert_nothing_written_and_serving(&server, 2).await;
}

#[tokio::test]
async fn malformed_and_invalid_requests_are_400_and_write_nothing() {
    let server = start().await;
    let ev = json!([{"type": "T", "data": {}}]);
    let long_name = format!("/streams/{}", "x".repeat(257));
    let cases: Vec<(&str, String)> = vec![
        ("/streams/a-1", "{not json".to_owned()),
        ("/streams/a-1", "".to_owned()),
        ("/streams/a-1", json!({"events": "nope"}).to_string()),
        (
            "/streams/a-1",
            json!({"expected_version": "latest", "events": ev}).to_string(),
        ),
        (
            "/streams/a-1",
            json!({"expected_version": -1, "events": ev}).to_string(),
        ),
        (
            "/streams/a-1",
            json!({"expected_vesion": 1, "events": ev}).to_string(),
        ),
        ("/streams/a-1", json!({"events": []}).to_string()),
        (
            "/streams/a-1",
            json!({"events": [{"type": "", "data": {}}]}).to_string(),
        ),
        (
            "/streams/a-1",
            json!({"events": [{"type": "T\u{7}", "data": {}}]}).to_string(),
        ),
        (
            "/streams/a-1",
            json!({"events": [{"type": "T", "data": {}, "metadata": [1]}]}).to_string(),
        ),
        (
            "/streams/a-1",
            json!({"events": [{"type": "T", "data": {}, "tags": ["a,b"]}]}).to_string(),
        ),
        (
            "/streams/a-1",
            json!({"events": [{"type": "T", "data": {}, "id": "not-a-uuid"}]}).to_string(),
        ),
        (
            "/streams/a-1",
            json!({"events": [{"type": "T"}]}).to_string(),
        ),
        ("/streams/%24all", json!({"events": ev}).to_string()),
        ("/streams/bad%0Aname", json!({"events": ev}).to_string()),
        (long_name.as_str(), json!({"events": ev}).to_string()),
    ];
    for (path, body) in cases {
        let answer = server.post_raw(path, body).await;
        answer.assert_problem(400, "invalid-request");
        assert_nothing_written_and_serving(&server, 0).await;
    }
    let too_many_tags: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    server
        .post(
            "/streams/a-1",
            &json!({"events": [{"type": "T", "data": {}, "tags": too_many_tags}]}),
        )
        .await
        .assert_problem(400, "invalid-request");
    assert_nothing_written_and_serving(&server, 0).await;
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let server = start().await;
    opened_account(&server).await;
    for path in [
        "/streams/account-42?limit=abc",
        "/streams/account-42?limit=0",
        "/streams/account-42?limit=1001",
        "/streams/account-42?direction=sideways",
        "/streams/account-42?colour=red",
        "/streams/account-42/zero",
        "/streams/account-42/0",
        "/all?from=-1",
        "/all?type=Deposited",
        "/all?category=a-b",
        "/streams?after=%24x",
        "/head?after=x",
    ] {
        server
            .get(path)
            .await
            .assert_problem(400, "invalid-request");
    }
    let bad_resume = server
        .send(
            server
                .http
                .get(server.url("/subscribe/all"))
                .header("last-event-id", "x"),
        )
        .await;
    bad_resume.assert_problem(400, "invalid-request");
    assert_nothing_written_and_serving(&server, 1).await;
}

#[tokio::test]
async fn oversized_events_batches_and_bodies_are_413_and_write_nothing() {
    let limits = Limits {
        event_bytes_max: 1000,
        events_per_append_max: 3,
        request_bytes_max: 20_000,
        ..Limits::default()
    };
    let server = start_config(ServerConfig {
        limits,
        ..ServerConfig::default()
    })
    .await;
    let big = "x".repeat(1000);
    let one_big = server
        .post(
            "/streams/a-1",
            &json!({"events": [{"type": "T", "data": big}]}),
        )
        .await;
    one_big.assert_problem(413, "too-large");
    assert_eq!(
        (
            &one_big.json["field"],
            &one_big.json["max"],
            &one_big.json["unit"]
        ),
        (&json!("event"), &json!(1000), &json!("bytes"))
    );
    let four: Vec<Value> = (0..4).map(|_| json!({"type": "T", "data": {}})).collect();
    let batch = server.post("/streams/a-1", &json!({"events": four})).await;
    batch.assert_problem(413, "too-large");
    assert_eq!(
        (&batch.json["field"], &batch.json["unit"]),
        (&json!("events"), &json!("events"))
    );
    let body = server
        .post_raw(
            "/streams/a-1",
            format!(
                "{{\"events\": [{{\"type\": \"T\", \"data\": \"{}\"}}]}}",
                "y".repeat(30_000)
            ),
        )
        .await;
    body.assert_problem(413, "too-large");
    assert_eq!(body.json["field"], "request");
    assert_nothing_written_and_serving(&server, 0).await;
    let fits: Vec<Value> = (0..3)
        .map(|_| json!({"type": "T", "data": "z".repeat(900)}))
        .collect();
    assert_eq!(
        server
            .post("/streams/a-1", &json!({"events": fits}))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let server = start().await;
    server.get("/nope").await.assert_problem(404, "not-found");
    server
        .get("/streams/a/1/extra")
        .await
        .assert_problem(404, "not-found");
    server
        .send(server.http.put(server.url("/streams/a-1")))
        .await
        .assert_problem(405, "method-not-allowed");
    server
        .post("/all", &json!({}))
        .await
        .assert_problem(405, "method-not-allowed");
    assert_eq!(server.get("/health").await.status, 200);
}

#[tokio::test]
async fn stream_reads_page_forward_and_backward() {
    let server = start().await;
    let events: Vec<Value> = (1..=5).map(|i| json!({"type": "T", "data": i})).collect();
    assert_eq!(
        server
            .post("/streams/doc-1", &json!({"events": events}))
            .await
            .status,
        201
    );
    let versions = |a: &Answer| {
        a.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let p1 = server.get("/streams/doc-1?limit=2").await;
    assert_eq!((versions(&p1), &p1.json["next"]), (vec![1, 2], &json!(3)));
    let p3 = server.get("/streams/doc-1?limit=2&from=5").await;
    assert_eq!((versions(&p3), &p3.json["next"]), (vec![5], &Value::Null));
    let b1 = server
        .get("/streams/doc-1?limit=2&direction=backward")
        .await;
    assert_eq!((versions(&b1), &b1.json["next"]), (vec![5, 4], &json!(3)));
    let b3 = server
        .get("/streams/doc-1?limit=2&direction=backward&from=1")
        .await;
    assert_eq!((versions(&b3), &b3.json["next"]), (vec![1], &Value::Null));
    assert_eq!(b3.header("etag"), Some("\"5\""));
}

#[tokio::test]
async fn the_global_log_pages_and_filters() {
    let server = start().await;
    opened_account(&server).await;
    let tagged =
        json!({"events": [{"type": "Deposited", "data": {"amount": 1}, "tags": ["account:42"]}]});
    assert_eq!(
        server.post("/streams/account-42", &tagged).await.status,
        201
    );
    assert_eq!(
        server
            .append("auction-1", Value::Null, "AuctionOpened", json!({}))
            .await
            .status,
        201
    );
    assert_eq!(
        server
            .append("auction-1", Value::Null, "BidPlaced", json!({}))
            .await
            .status,
        201
    );
    let positions = |a: &Answer| {
        a.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let all = server.get("/all").await;
    assert_eq!(
        (positions(&all), &all.json["next"], &all.json["head"]),
        (vec![1, 2, 3, 4], &Value::Null, &json!(4))
    );
    let page = server.get("/all?limit=3").await;
    assert_eq!(
        (positions(&page), &page.json["next"]),
        (vec![1, 2, 3], &json!(4))
    );
    let rest = server.get("/all?from=4").await;
    assert_eq!(positions(&rest), vec![4]);
    assert_eq!(
        positions(&server.get("/all?category=auction").await),
        vec![3, 4]
    );
    assert_eq!(
        positions(&server.get("/all?types=BidPlaced,Deposited").await),
        vec![2, 4]
    );
    assert_eq!(
        positions(&server.get("/all?tags=account:42").await),
        vec![2]
    );
    assert_eq!(
        positions(&server.get("/all?category=account&types=BidPlaced").await),
        Vec::<u64>::new()
    );
}

#[tokio::test]
async fn streams_are_listed_by_name_in_pages() {
    let server = start().await;
    for s in ["account-2", "account-1", "auction-1", "account-3"] {
        assert_eq!(
            server.append(s, Value::Null, "T", json!({})).await.status,
            201
        );
    }
    let names = |a: &Answer| {
        a.json["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stream"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let p1 = server.get("/streams?prefix=account-&limit=2").await;
    assert_eq!(
        (names(&p1), &p1.json["next"]),
        (
            vec!["account-1".to_owned(), "account-2".to_owned()],
            &json!("account-2")
        )
    );
    let p2 = server
        .get("/streams?prefix=account-&limit=2&after=account-2")
        .await;
    assert_eq!(
        (names(&p2), &p2.json["next"]),
        (vec!["account-3".to_owned()], &Value::Null)
    );
    let all = server.get("/streams").await;
    assert_eq!(
        all.json["streams"][3],
        json!({"stream": "auction-1", "version": 1, "last_position": 3})
    );
}

#[tokio::test]
async fn stream_names_are_percent_decoded_from_the_path() {
    let server = start().await;
    let a = server
        .append("caf%C3%A9-a%2Fb%20c", Value::Null, "T", json!({}))
        .await;
    assert_eq!((a.status, &a.json["stream"]), (201, &json!("café-a/b c")));
    let r = server.get("/streams/caf%C3%A9-a%2Fb%20c").await;
    assert_eq!(r.json["events"][0]["stream"], "café-a/b c");
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let server = start().await;
    opened_account(&server).await;
    let _ = server
        .append("account-42", json!(0), "AccountOpened", json!({}))
        .await;
    let health = server.get("/health").await;
    assert_eq!(
        (health.status, &health.json),
        (
            200,
            &json!({"status": "ok", "store": "memory", "version": env!("CARGO_PKG_VERSION")})
        )
    );
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    for line in [
        "concord_appends_total{store=\"memory\"} 2",
        "concord_events_appended_total{store=\"memory\"} 1",
        "concord_conflicts_total{store=\"memory\"} 1",
        "concord_append_duration_seconds_count{store=\"memory\"} 2",
        "concord_subscriptions_active{store=\"memory\"} 0",
    ] {
        assert!(
            metrics.text.contains(line),
            "missing {line:?} in\n{}",
            metrics.text
        );
    }
    let root = server.get("/").await;
    assert_eq!(root.status, 200);
    assert!(root.text.contains("/ui/app.js"), "{}", root.text);
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_the_server_answers() {
    let server = start().await;
    opened_account(&server).await;
    let doc = server.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3.1"));
    for (method, path) in concord_server::ROUTES {
        assert!(
            doc.json["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
        if path.starts_with("/projections") {
            // Answered by a server with a read side: tests/projections.rs.
            continue;
        }
        if path.starts_with("/groups/{group}") {
            // Answered once the group exists, with bodies of their own: tests/groups.rs.
            continue;
        }
        let concrete = path
            .replace("{stream}", "account-42")
            .replace("{version}", "1");
        let answer = match *method {
            "get" if path.starts_with("/subscribe") => {
                let response = server.http.get(server.url(&concrete)).send().await.unwrap();
                assert_eq!(response.status().as_u16(), 200, "{path}");
                continue;
            }
            "get" => server.get(&concrete).await,
            "post" => {
                let body = match *path {
                    "/append" => {
                        json!({"parts": [{"stream": "account-7", "events": [{"type": "T", "data": {}}]}]})
                    }
                    "/query" => json!({"query": {"items": []}}),
                    _ => json!({"events": [{"type": "T", "data": {}}]}),
                };
                server.post(&concrete, &body).await
            }
            "delete" => server.send(server.http.delete(server.url(&concrete))).await,
            "put" => {
                let request = server
                    .http
                    .put(server.url(&concrete))
                    .header("content-type", "application/json")
                    .body(json!({"max_count": 5}).to_string());
                server.send(request).await
            }
            other => panic!("unexpected method {other}"),
        };
        assert!(
            answer.status < 400,
            "{method} {path} answered {}: {}",
            answer.status,
            answer.text
        );
    }
}
