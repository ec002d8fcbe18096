//! The read side over real HTTP: `/projections` (list, status, row, rebuild), its status
//! codes and problem types, read-your-writes under 32 concurrent clients, the bound that
//! answers 503 `projection-behind`, grants, the projection series in `/metrics`, and a
//! deleted stream's row going with `DELETE /streams/{stream}`.
//!
//! Each test runs a server on an ephemeral port over a `MemoryStore`, with the built-in
//! projections running on a SQLite file in a temporary directory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use common::{DEADLINE, TestServer, scale, start_with};
use concord_core::{EventStore, MemoryStore};
use concord_projection::ProjectionHost;
use concord_server::{ServerConfig, Tokens, TokensSource};
use serde_json::{Value, json};

/// A server with the built-in projections running, and what keeps them alive.
struct ReadSide {
    server: TestServer,
    host: Arc<ProjectionHost>,
    _dir: tempfile::TempDir,
}

async fn start_read_side(config: ServerConfig) -> ReadSide {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let host =
        ProjectionHost::open_builtin(Arc::clone(&store), dir.path().join("projections.sqlite"))
            .await
            .unwrap();
    let host = Arc::new(host);
    host.start_all().await;
    let config = ServerConfig {
        projections: Some(Arc::clone(&host)),
        ..config
    };
    ReadSide {
        server: start_with(store, config).await,
        host,
        _dir: dir,
    }
}

/// Appends events to `stream` over HTTP; returns the 201 body.
async fn append(server: &TestServer, stream: &str, events: Value) -> Value {
    let answer = server
        .post(&format!("/streams/{stream}"), &json!({"events": events}))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.json
}

async fn open_account(server: &TestServer, stream: &str, balance: u64) -> u64 {
    append(
        server,
        stream,
        json!([{"type": "AccountOpened", "data": {"owner": stream, "balance": balance}}]),
    )
    .await["last_position"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn the_list_shows_every_projection_with_checkpoint_head_and_lag() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = &side.server;
    let last = open_account(server, "account-1", 100).await;
    // Reading the row with min_position makes the listing below deterministic.
    let row = server
        .get(&format!(
            "/projections/balances/account-1?min_position={last}"
        ))
        .await;
    assert_eq!(row.status, 200, "{}", row.text);

    let list = server.get("/projections").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let names: Vec<&str> = list.json["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["auctions", "balances", "documents"]);
    for p in list.json["projections"].as_array().unwrap() {
        assert_eq!(p["head"], last, "{p}");
        let checkpoint = p["checkpoint"].as_u64().unwrap();
        assert_eq!(p["lag"].as_u64().unwrap(), last - checkpoint, "{p}");
        assert!(
            ["catching-up", "running"].contains(&p["status"].as_str().unwrap()),
            "{p}"
        );
    }

    let one = server.get("/projections/balances").await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(
        (&one.json["name"], &one.json["checkpoint"], &one.json["lag"]),
        (&json!("balances"), &json!(last), &json!(0))
    );
    server
        .get("/projections/nope")
        .await
        .assert_problem(404, "projection-not-found");
    side.host.shutdown().await;
}

#[tokio::test]
async fn a_row_is_the_read_model_as_json_and_unknown_keys_or_projections_are_404() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = &side.server;
    open_account(server, "account-42", 1000).await;
    let deposited = append(
        server,
        "account-42",
        json!([{"type": "Deposited", "data": {"amount": 2000}},
               {"type": "Withdrawn", "data": {"amount": 500}}]),
    )
    .await;
    let p = deposited["last_position"].as_u64().unwrap();

    let row = server
        .get(&format!(
            "/projections/balances/account-42?min_position={p}"
        ))
        .await;
    assert_eq!(row.status, 200, "{}", row.text);
    assert_eq!(row.json["projection"], "balances");
    assert_eq!(row.json["key"], "account-42");
    assert!(row.json["checkpoint"].as_u64().unwrap() >= p);
    assert_eq!(row.json["row"]["balance"], 2500);
    assert_eq!(row.json["row"]["version"], 3);
    assert_eq!(row.json["row"]["status"], "open");

    let missing = server
        .get(&format!("/projections/balances/account-7?min_position={p}"))
        .await;
    missing.assert_problem(404, "row-not-found");
    assert_eq!(
        (&missing.json["projection"], &missing.json["key"]),
        (&json!("balances"), &json!("account-7"))
    );
    let unknown = server.get("/projections/nope/account-42").await;
    unknown.assert_problem(404, "projection-not-found");
    assert_eq!(unknown.json["projection"], "nope");
    side.host.shutdown().await;
}

#[tokio::test]
async fn a_deleted_accounts_row_is_gone_once_delete_answers_and_a_recreated_one_starts_afresh() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = &side.server;
    open_account(server, "account-1", 1000).await;
    let p = open_account(server, "account-2", 50).await;
    // Both rows exist before the delete: account-2's position is the later one.
    let row = server
        .get(&format!("/projections/balances/account-1?min_position={p}"))
        .await;
    assert_eq!(row.status, 200, "{}", row.text);

    let deleted = server
        .send(server.http.delete(server.url("/streams/account-1")))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);

    server
        .get("/projections/balances/account-1")
        .await
        .assert_problem(404, "row-not-found");
    assert_eq!(
        server
            .get(&format!("/projections/balances/account-2?min_position={p}"))
            .await
            .json["row"]["balance"],
        50,
        "another account keeps its row"
    );
    let again = open_account(server, "account-1", 7).await;
    let row = server
        .get(&format!(
            "/projections/balances/account-1?min_position={again}"
        ))
        .await;
    assert_eq!(row.status, 200, "{}", row.text);
    assert_eq!(row.json["row"]["balance"], 7, "{}", row.text);
    assert_eq!(row.json["row"]["version"], 2, "{}", row.text);
    side.host.shutdown().await;
}

#[tokio::test]
async fn row_parameters_are_checked() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = &side.server;
    for bad in [
        "min_position=abc",
        "wait_ms=-1",
        "wait_ms=60001",
        "min_positon=1",
    ] {
        server
            .get(&format!("/projections/balances/account-1?{bad}"))
            .await
            .assert_problem(400, "invalid-request");
    }
    let method = server.post("/projections/balances", &json!({})).await;
    method.assert_problem(405, "method-not-allowed");
    side.host.shutdown().await;
}

/// The CQRS promise over HTTP: each client appends, then reads with `min_position` set to
/// its append's `last_position`, and must see its own write: on its own account the exact
/// balance it produced, on an account all clients share a version at least its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_each_read_their_own_write() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = Arc::new(side.server);
    open_account(&server, "account-shared", 0).await;
    let clients = 32;
    let rounds = 3 * scale();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let own = format!("account-c{c}");
                let mut balance = 10;
                let opened = open_account(&server, &own, balance).await;
                let row = server
                    .get(&format!(
                        "/projections/balances/{own}?min_position={opened}"
                    ))
                    .await;
                assert_eq!(row.status, 200, "{}", row.text);
                assert_eq!(row.json["row"]["balance"], balance, "{}", row.text);
                for round in 1..=rounds {
                    let amount = (c * 100 + round) as u64;
                    let written = append(
                        &server,
                        &own,
                        json!([{"type": "Deposited", "data": {"amount": amount}}]),
                    )
                    .await;
                    balance += amount;
                    let p = written["last_position"].as_u64().unwrap();
                    let row = server
                        .get(&format!("/projections/balances/{own}?min_position={p}"))
                        .await;
                    assert_eq!(row.status, 200, "{}", row.text);
                    assert!(
                        row.json["checkpoint"].as_u64().unwrap() >= p,
                        "{}",
                        row.text
                    );
                    assert_eq!(
                        row.json["row"]["balance"], balance,
                        "client {c} round {round} read a balance without its own deposit: {}",
                        row.text
                    );

                    let shared = append(
                        &server,
                        "account-shared",
                        json!([{"type": "Deposited", "data": {"amount": 1}}]),
                    )
                    .await;
                    let (p, v) = (
                        shared["last_position"].as_u64().unwrap(),
                        shared["last_version"].as_u64().unwrap(),
                    );
                    let row = server
                        .get(&format!(
                            "/projections/balances/account-shared?min_position={p}"
                        ))
                        .await;
                    assert_eq!(row.status, 200, "{}", row.text);
                    let seen = row.json["row"]["version"].as_u64().unwrap();
                    assert!(
                        seen >= v,
                        "client {c} wrote version {v} of account-shared but read version {seen}"
                    );
                    // The balance of the shared account is its deposit count: version - 1.
                    assert_eq!(row.json["row"]["balance"], seen - 1);
                }
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(DEADLINE * 3, task)
            .await
            .expect("a client did not finish in time")
            .unwrap();
    }
    let list = server.get("/projections/balances").await;
    assert_eq!(list.status, 200);
    side.host.shutdown().await;
}

#[tokio::test]
async fn a_position_not_processed_within_wait_ms_answers_503_projection_behind() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = &side.server;
    let last = open_account(server, "account-1", 5).await;

    // Beyond the head: no append returned it, so it is a mistake, not a wait (400).
    let beyond = last + 100;
    let refused = server
        .get(&format!(
            "/projections/balances/account-1?min_position={beyond}&wait_ms=0"
        ))
        .await;
    refused.assert_problem(400, "invalid-request");
    assert_eq!(refused.json["field"], "min_position");

    // A stopped projection does not move: the wait ends at its bound.
    side.host.stop("balances").await.unwrap();
    let p = append(
        server,
        "account-1",
        json!([{"type": "Deposited", "data": {"amount": 1}}]),
    )
    .await["last_position"]
        .as_u64()
        .unwrap();
    let started = std::time::Instant::now();
    let stopped = server
        .get(&format!(
            "/projections/balances/account-1?min_position={p}&wait_ms=200"
        ))
        .await;
    stopped.assert_problem(503, "projection-behind");
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(stopped.json["projection"], "balances");
    assert_eq!(stopped.json["min_position"], p);
    assert!(stopped.json["checkpoint"].as_u64().unwrap() < p);
    assert_eq!(stopped.header("retry-after"), Some("1"));
    assert_eq!(
        server.get("/projections/balances").await.json["status"],
        "stopped"
    );
    // Without min_position the row is answered as of the checkpoint.
    let stale = server.get("/projections/balances/account-1").await;
    assert_eq!(stale.status, 200, "{}", stale.text);
    assert_eq!(stale.json["row"]["balance"], 5);

    // Started again, it catches up and the same request succeeds.
    side.host.start("balances").await.unwrap();
    let caught_up = server
        .get(&format!("/projections/balances/account-1?min_position={p}"))
        .await;
    assert_eq!(caught_up.status, 200, "{}", caught_up.text);
    assert_eq!(caught_up.json["row"]["balance"], 6);
    side.host.shutdown().await;
}

/// An event the handler refuses (valid JSON the fold cannot use) is skipped: the status
/// lists it with the handler's error, waits past it are answered, and the metrics count it.
#[tokio::test]
async fn a_refused_event_is_skipped_and_shown_in_the_status_and_metrics() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = &side.server;
    open_account(server, "account-1", 5).await;
    let bad = append(
        server,
        "account-1",
        json!([{"type": "Deposited", "data": {"amount": "ten"}}]),
    )
    .await["last_position"]
        .as_u64()
        .unwrap();
    let after = append(
        server,
        "account-1",
        json!([{"type": "Deposited", "data": {"amount": 3}}]),
    )
    .await["last_position"]
        .as_u64()
        .unwrap();

    let waited = server
        .get(&format!(
            "/projections/balances/account-1?min_position={after}"
        ))
        .await;
    assert_eq!(waited.status, 200, "{}", waited.text);
    assert_eq!(waited.json["row"]["balance"], 8);
    assert_eq!(waited.json["row"]["version"], 3);

    let status = server.get("/projections/balances").await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.json["status"], "running");
    assert_eq!(status.json["skipped"], 1);
    let skipped = &status.json["skipped_events"][0];
    assert_eq!(skipped["position"], bad);
    assert_eq!(skipped["stream"], "account-1");
    assert_eq!(skipped["version"], 2);
    assert_eq!(skipped["event_type"], "Deposited");
    assert!(
        skipped["error"].as_str().unwrap().contains("amount"),
        "{skipped}"
    );
    assert_eq!(server.get("/projections/auctions").await.json["skipped"], 0);

    let metrics = server.get("/metrics").await;
    for line in [
        "concord_projection_skipped{projection=\"balances\"} 1",
        "concord_projection_skipped{projection=\"auctions\"} 0",
        "concord_projection_failed{projection=\"balances\"} 0",
    ] {
        assert!(metrics.text.contains(line), "{line}\n{}", metrics.text);
    }
    side.host.shutdown().await;
}

#[tokio::test]
async fn rebuild_replays_from_the_start_and_reaches_the_same_rows() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = &side.server;
    for i in 0..5 {
        open_account(server, &format!("account-{i}"), i * 10).await;
    }
    let last = append(
        server,
        "account-3",
        json!([{"type": "Deposited", "data": {"amount": 7}}]),
    )
    .await["last_position"]
        .as_u64()
        .unwrap();
    let before = server
        .get(&format!(
            "/projections/balances/account-3?min_position={last}"
        ))
        .await;
    assert_eq!(before.status, 200, "{}", before.text);

    let started = server
        .post("/projections/balances/rebuild", &json!({}))
        .await;
    assert_eq!(started.status, 202, "{}", started.text);
    assert_eq!(started.json["name"], "balances");
    assert!(started.json["checkpoint"].as_u64().unwrap() <= last);

    let after = server
        .get(&format!(
            "/projections/balances/account-3?min_position={last}"
        ))
        .await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(after.json["row"], before.json["row"]);
    assert_eq!(after.json["row"]["balance"], 37);
    let status = server.get("/projections/balances").await;
    assert_eq!(status.json["events_applied"], last);
    server
        .post("/projections/nope/rebuild", &json!({}))
        .await
        .assert_problem(404, "projection-not-found");
    side.host.shutdown().await;
}

#[tokio::test]
async fn metrics_carry_each_projections_checkpoint_lag_and_state() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = &side.server;
    let last = open_account(server, "account-1", 1).await;
    let row = server
        .get(&format!(
            "/projections/balances/account-1?min_position={last}"
        ))
        .await;
    assert_eq!(row.status, 200);
    let text = server.get("/metrics").await.text;
    for line in [
        format!("concord_projection_checkpoint{{projection=\"balances\"}} {last}"),
        format!("concord_projection_head{{projection=\"balances\"}} {last}"),
        "concord_projection_lag{projection=\"balances\"} 0".to_owned(),
        "concord_projection_failed{projection=\"balances\"} 0".to_owned(),
        "concord_projection_running{projection=\"balances\"} 1".to_owned(),
        "# TYPE concord_projection_lag gauge".to_owned(),
        "# TYPE concord_projection_events_applied_total counter".to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    for name in ["auctions", "documents"] {
        assert!(text.contains(&format!("concord_projection_lag{{projection=\"{name}\"}}")));
    }
    side.host.shutdown().await;
}

#[tokio::test]
async fn without_a_read_side_the_list_is_empty_and_every_projection_is_unknown() {
    let server = common::start().await;
    let list = server.get("/projections").await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.json, json!({"projections": []}));
    server
        .get("/projections/balances")
        .await
        .assert_problem(404, "projection-not-found");
    server
        .get("/projections/balances/account-1")
        .await
        .assert_problem(404, "projection-not-found");
    server
        .post("/projections/balances/rebuild", &json!({}))
        .await
        .assert_problem(404, "projection-not-found");
    assert!(
        !server
            .get("/metrics")
            .await
            .text
            .contains("concord_projection_")
    );
}

#[tokio::test]
async fn rows_need_read_on_the_key_and_rebuild_needs_write_on_every_stream() {
    let tokens = Tokens::parse(
        r#"
[[token]]
token = "admin"
read = ["*"]
write = ["*"]

[[token]]
token = "bank"
read = ["account-"]
write = ["account-"]

[[token]]
token = "auctions"
read = ["auction-"]
"#,
    )
    .unwrap();
    let side = start_read_side(ServerConfig {
        tokens: Some(TokensSource::Parsed(tokens)),
        ..ServerConfig::default()
    })
    .await;
    let server = &side.server;
    let as_ = |token: &str, r: reqwest::RequestBuilder| r.bearer_auth(token.to_owned());
    let opened = server
        .send(as_(
            "bank",
            server
                .http
                .post(server.url("/streams/account-1"))
                .body(json!({"events": [{"type": "AccountOpened", "data": {"owner": "a", "balance": 3}}]}).to_string()),
        ))
        .await;
    assert_eq!(opened.status, 201, "{}", opened.text);
    let p = opened.json["last_position"].as_u64().unwrap();
    let row_url = server.url(&format!("/projections/balances/account-1?min_position={p}"));

    server
        .send(server.http.get(server.url("/projections")))
        .await
        .assert_problem(401, "unauthorized");
    let bank_row = server.send(as_("bank", server.http.get(&row_url))).await;
    assert_eq!(bank_row.status, 200, "{}", bank_row.text);
    server
        .send(as_("auctions", server.http.get(&row_url)))
        .await
        .assert_problem(403, "forbidden");
    let listed = server
        .send(as_("auctions", server.http.get(server.url("/projections"))))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);

    let rebuild = server.url("/projections/balances/rebuild");
    for token in ["bank", "auctions"] {
        server
            .send(as_(token, server.http.post(&rebuild)))
            .await
            .assert_problem(403, "forbidden");
    }
    let rebuilt = server.send(as_("admin", server.http.post(&rebuild))).await;
    assert_eq!(rebuilt.status, 202, "{}", rebuilt.text);
    side.host.shutdown().await;
}

/// The `/projections` routes of `ROUTES` are in the OpenAPI document and answered (the
/// general route test in `api.rs` runs without a read side).
#[tokio::test]
async fn every_projection_route_is_documented_and_answered() {
    let side = start_read_side(ServerConfig::default()).await;
    let server = &side.server;
    let last = open_account(server, "account-42", 1).await;
    let doc = server.get("/openapi.json").await;
    let routes: Vec<_> = concord_server::ROUTES
        .iter()
        .filter(|(_, path)| path.starts_with("/projections"))
        .collect();
    assert_eq!(routes.len(), 4);
    for (method, path) in routes {
        assert!(
            doc.json["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
        let concrete = path
            .replace("{name}", "balances")
            .replace("{key}", &format!("account-42?min_position={last}"));
        let answer = match *method {
            "get" => server.get(&concrete).await,
            "post" => server.post(&concrete, &json!({})).await,
            other => panic!("unexpected method {other}"),
        };
        assert!(
            answer.status < 400,
            "{method} {path} answered {}: {}",
            answer.status,
            answer.text
        );
    }
    side.host.shutdown().await;
}
