//! The web UI in a real headless browser (Debian's `chromium` and `chromium-driver`; the
//! tests fail, naming them, when they are missing).
//!
//! Each test starts a server on 127.0.0.1:0 over a `MemoryStore`, opens the UI, acts as a
//! user would, and waits for what the page shows (polling the DOM with a deadline, never
//! sleeping). Every page must finish without a JavaScript error, console error or CSP
//! violation. Screenshots go to `docs/ui/` when `CONCORD_UPDATE_SCREENSHOTS=1`, otherwise
//! to a temporary directory, so a CI run does not touch the tree.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod browser;
mod common;

use std::path::PathBuf;
use std::sync::Arc;

use browser::Browser;
use common::{TestServer, start, start_config, start_with};
use concord_core::{EventStore, MemoryStore};
use concord_projection::ProjectionHost;
use concord_server::{ServerConfig, Tokens, TokensSource};
use serde_json::{Value, json};

/// One chromium at a time: two cores do not run several browsers well.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn screenshots() -> PathBuf {
    if std::env::var("CONCORD_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/ui")
    } else {
        std::env::temp_dir().join("concord-ui-screenshots")
    }
}

impl TestServer {
    /// Appends one event with `metadata.actor`, as a writer outside the browser would.
    async fn append_as(
        &self,
        actor: &str,
        stream: &str,
        expected: Value,
        event_type: &str,
        data: Value,
    ) -> common::Answer {
        let answer = self
            .post(
                &format!("/streams/{stream}"),
                &json!({"expected_version": expected,
                        "events": [{"type": event_type, "data": data, "metadata": {"actor": actor}}]}),
            )
            .await;
        assert!(
            answer.status < 400 || answer.status == 409,
            "{}",
            answer.text
        );
        answer
    }
}

#[tokio::test]
async fn an_event_appended_through_the_form_appears_live_in_the_stream_page_and_the_tail() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let server = start().await;
    server
        .append_as(
            "ada",
            "account-1",
            json!("no_stream"),
            "AccountOpened",
            json!({"owner": "ada", "balance": 1000}),
        )
        .await;
    let b = Browser::launch(&server.base).await;

    // Tab 1: the stream, live.
    let stream_tab = b.tab().await;
    b.goto("/#/stream/account-1").await;
    b.wait_text("#stream-events", &["AccountOpened", "\"balance\": 1000"])
        .await;
    b.wait_text(".live-badge", &["live"]).await;
    b.exec("window.sameDocument = true;", vec![]).await;

    // Tab 2: the live tail of everything.
    let tail_tab = b.new_tab().await;
    b.goto("/#/all").await;
    b.wait_text("#tail-events", &["account-1", "AccountOpened"])
        .await;
    b.wait_text("#tail-status", &["live"]).await;
    b.exec("window.sameDocument = true;", vec![]).await;

    // Tab 3: the append form.
    b.new_tab().await;
    b.goto("/#/append?stream=account-1").await;
    b.fill("#append-type", "Deposited").await;
    b.fill("#append-data", "{\"amount\": 2000}").await;
    b.wait_text("#append-data-status", &["valid JSON"]).await;
    b.select("#append-expected-kind", "exact").await;
    b.fill("#append-expected-version", "1").await;
    b.click("#append-submit").await;
    b.wait_text("#append-success", &["Appended to account-1 at version 2"])
        .await;
    b.assert_no_script_errors("append").await;

    b.switch_to(&stream_tab).await;
    b.wait_text(
        "#stream-events tr[data-version=\"2\"]",
        &["Deposited", "\"amount\": 2000", "ui"],
    )
    .await;
    assert_eq!(
        b.exec("return window.sameDocument === true;", vec![]).await,
        json!(true),
        "the stream page reloaded"
    );
    b.assert_no_script_errors("stream").await;

    b.switch_to(&tail_tab).await;
    b.wait_text(
        "#tail-events tr[data-position=\"2\"]",
        &["account-1", "Deposited", "2000"],
    )
    .await;
    assert_eq!(
        b.exec("return window.sameDocument === true;", vec![]).await,
        json!(true),
        "the tail reloaded"
    );

    // Pause, let an event be written, resume: it arrives once, in order.
    b.click("#tail-pause").await;
    b.wait_text("#tail-pause", &["Resume"]).await;
    b.wait_text("#tail-note", &["paused after position 2"])
        .await;
    server
        .append_as(
            "bob",
            "account-1",
            json!(2),
            "Withdrawn",
            json!({"amount": 500}),
        )
        .await;
    b.click("#tail-pause").await;
    b.wait_text(
        "#tail-events tr[data-position=\"3\"]",
        &["Withdrawn", "500"],
    )
    .await;
    let positions: Vec<String> = b
        .rows("#tail-events")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        positions,
        ["3", "2", "1"],
        "newest first, no gap, no repeat"
    );

    // Filters: only the type asked for.
    server
        .append_as(
            "eve",
            "auction-9",
            json!("no_stream"),
            "AuctionOpened",
            json!({"item": "lamp", "reserve": 10}),
        )
        .await;
    b.fill("#tail-types", "Withdrawn").await;
    b.click("#tail-apply").await;
    b.wait_for(
        "the tail to show only Withdrawn events",
        "const rows = Array.from(document.querySelectorAll('#tail-events tbody tr'));
         return rows.length === 1 && rows[0].dataset.type === 'Withdrawn';",
        vec![],
    )
    .await;
    b.fill("#tail-types", "").await;
    b.fill("#tail-category", "auction").await;
    b.click("#tail-apply").await;
    b.wait_for(
        "the tail to show only the auction category",
        "const rows = Array.from(document.querySelectorAll('#tail-events tbody tr'));
         return rows.length === 1 && rows[0].dataset.type === 'AuctionOpened';",
        vec![],
    )
    .await;
    b.assert_no_script_errors("all events").await;
    b.quit().await;
}

#[tokio::test]
async fn a_conflict_shows_the_actual_version_and_the_missed_event_and_can_be_resent_with_rebase() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let server = start().await;
    server
        .append_as(
            "admin",
            "account-7",
            json!("no_stream"),
            "AccountOpened",
            json!({"owner": "ada", "balance": 1000}),
        )
        .await;
    let b = Browser::launch(&server.base).await;
    b.goto("/#/append?stream=account-7").await;

    // Invalid JSON is caught before anything is sent.
    b.fill("#append-data", "{amount: 3000}").await;
    b.wait_text("#append-data-status", &["not valid JSON"])
        .await;
    b.click("#append-submit").await;
    b.wait_text("#append-invalid", &["Not sent", "Data: not valid JSON"])
        .await;
    assert_eq!(server.head().await, 1, "nothing may be sent");

    // B prepares a deposit on version 1 …
    b.fill("#append-type", "Deposited").await;
    b.fill("#append-data", "{\"amount\": 3000}").await;
    b.fill("#append-metadata", "{\"actor\": \"B\"}").await;
    b.select("#append-expected-kind", "exact").await;
    b.fill("#append-expected-version", "1").await;
    // … while A deposits first.
    server
        .append_as(
            "A",
            "account-7",
            json!(1),
            "Deposited",
            json!({"amount": 2000}),
        )
        .await;
    b.click("#append-submit").await;
    b.wait_text(
        "#append-conflict",
        &["Version conflict", "You expected version 1"],
    )
    .await;
    assert_eq!(b.text("#append-actual-version").await, "2");
    let missed = b.rows("#append-missed").await;
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(missed[0][0], "2");
    assert!(
        missed[0][1].contains("Deposited")
            && missed[0][2].contains("2000")
            && missed[0][3].contains("\"A\""),
        "{missed:?}"
    );
    b.screenshot(&screenshots(), "append").await;

    b.click("#append-resend-rebase").await;
    b.wait_text(
        "#append-success",
        &["Appended to account-7 at version 3", "Rebased"],
    )
    .await;
    b.wait_text("#append-concurrent", &["Deposited", "2000"])
        .await;
    let stored = server.get("/streams/account-7").await;
    assert_eq!(stored.json["version"], 3);
    assert_eq!(stored.json["events"][2]["data"]["amount"], 3000);
    assert_eq!(stored.json["events"][2]["metadata"]["actor"], "B");

    // A server refusal (problem+json) reads as a sentence, not as JSON.
    b.fill("#append-stream", "$reserved").await;
    b.click("#append-submit").await;
    let problem = b.wait_text(".problem", &["(400)", "Field"]).await;
    assert!(
        !problem.contains("urn:concord") && !problem.contains('{'),
        "{problem}"
    );
    b.assert_no_script_errors("append").await;
    b.quit().await;
}

/// The rows of the lab's table, checked against MISSION.md's example.
fn assert_mission_table(rows: &[Vec<String>], loser_verdict: &str) {
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0], ["admin", "AccountOpened", "1000", "1"]);
    let amount = |actor: &str| if actor == "A" { "2000" } else { "3000" };
    let (winner, loser) = (&rows[1], &rows[2]);
    assert!(
        ["A", "B"].contains(&winner[0].as_str()) && winner[0] != loser[0],
        "{rows:?}"
    );
    assert_eq!(
        winner[1..],
        ["Deposited", amount(&winner[0]), "2"],
        "{rows:?}"
    );
    assert_eq!(loser[1..3], ["Deposited", amount(&loser[0])], "{rows:?}");
    assert!(
        loser[3].starts_with("2 ← conflict: version 2 is taken")
            && loser[3].contains(loser_verdict),
        "{rows:?}"
    );
}

#[tokio::test]
async fn the_conflict_lab_shows_the_mission_table_for_reject_and_for_rebase() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let server = start().await;
    let b = Browser::launch(&server.base).await;
    b.goto("/#/lab").await;

    b.click("#lab-policy-reject").await;
    b.click("#lab-open").await;
    b.wait_text("#lab-writer-a", &["version 1, balance 1000", "2000"])
        .await;
    b.wait_text("#lab-writer-b", &["version 1, balance 1000", "3000"])
        .await;
    b.click("#lab-submit").await;
    b.wait_text("#lab-outcome", &["was rejected (409)"]).await;
    let rows = b.rows("#lab-table").await;
    assert_mission_table(&rows, "→ rejected");
    let loser = &rows[2][0];
    let winner = &rows[1][0];
    let outcome = b.text("#lab-outcome").await;
    assert!(
        outcome.contains(&format!("{loser} learns the actual version, 2"))
            && outcome.contains(&format!("{winner}'s Deposited")),
        "{outcome}"
    );
    assert_eq!(b.rows("#lab-log").await.len(), 2);
    let balance = if winner == "A" { 3000 } else { 4000 };
    assert_eq!(b.text("#lab-balance").await, format!("Balance: {balance}"));
    b.screenshot(&screenshots(), "conflict-lab").await;

    b.click("#lab-policy-rebase").await;
    b.click("#lab-run").await;
    b.wait_text("#lab-outcome", &["was rebased"]).await;
    let rows = b.rows("#lab-table").await;
    assert_mission_table(&rows, "→ rebased to version 3");
    let log = b.rows("#lab-log").await;
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(b.text("#lab-balance").await, "Balance: 6000");
    b.screenshot(&screenshots(), "conflict-lab-rebase").await;
    b.assert_no_script_errors("conflict lab").await;

    // Two fresh accounts, each opened once: nothing else was written.
    assert_eq!(server.head().await, 2 + 3);
    b.quit().await;
}

const ADMIN: &str = "admin-0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn with_tokens_the_ui_asks_for_one_and_sends_it_as_a_bearer_token() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let tokens = Tokens::parse(&format!(
        "[[token]]\ntoken = \"{ADMIN}\"\nread = [\"*\"]\nwrite = [\"*\"]\n"
    ))
    .unwrap();
    let server = start_config(ServerConfig {
        tokens: Some(TokensSource::Parsed(tokens)),
        ..ServerConfig::default()
    })
    .await;
    let b = Browser::launch(&server.base).await;
    b.goto("/#/all").await;
    b.wait_for(
        "the token dialog",
        "return document.getElementById('token-dialog').open;",
        vec![],
    )
    .await;
    b.fill("#token-input", "wrong-0123456789abcdef0123456789abcdef")
        .await;
    b.click("#token-save").await;
    b.wait_text("#token-reason", &["refused", "not known"])
        .await;
    b.fill("#token-input", ADMIN).await;
    b.click("#token-save").await;
    b.wait_text("#tail-status", &["live"]).await;

    let appended = server
        .send(
            server
                .http
                .post(server.url("/streams/account-5"))
                .bearer_auth(ADMIN)
                .body(json!({"events": [{"type": "AccountOpened", "data": {"owner": "zoe", "balance": 5}}]}).to_string()),
        )
        .await;
    assert_eq!(appended.status, 201, "{}", appended.text);
    b.wait_text("#tail-events", &["account-5", "AccountOpened"])
        .await;
    b.goto("/#/").await;
    b.wait_for(
        "the overview to count the event",
        "return document.getElementById('ov-head')?.innerText === '1';",
        vec![],
    )
    .await;
    assert_eq!(
        b.exec("return sessionStorage.getItem('concord.token');", vec![])
            .await,
        json!(ADMIN)
    );
    // The admin call goes out with the same token (it needs `write` on every stream).
    b.click("#scavenge-run").await;
    b.wait_text("#scavenge-done", &["Scavenged: 0 events removed"])
        .await;
    b.assert_no_script_errors("overview").await;
    b.quit().await;
}

#[tokio::test]
async fn bytes_events_show_their_content_type_and_hex_beside_pretty_json() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let server = start().await;
    let answer = server
        .post(
            "/streams/blob-1",
            // 0x00 0x01 0xfe 0xff, and 300 bytes of 0xab (more than the cell shows).
            &json!({"events": [
                {"type": "Uploaded", "content_type": "application/octet-stream", "data_base64": "AAH+/w=="},
                {"type": "Photographed", "content_type": "image/png",
                 "data_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0xab_u8; 300])},
                {"type": "Noted", "data": {"note": "json"}}]}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let b = Browser::launch(&server.base).await;
    b.goto("/#/stream/blob-1").await;
    b.wait_text(
        "#stream-events tr[data-version=\"1\"]",
        &["application/octet-stream · 4 bytes", "00 01 fe ff"],
    )
    .await;
    b.wait_text(
        "#stream-events tr[data-version=\"2\"]",
        &["image/png · 300 bytes", "ab ab ab", "… 44 more bytes"],
    )
    .await;
    b.wait_text(
        "#stream-events tr[data-version=\"3\"]",
        &["\"note\": \"json\""],
    )
    .await;
    b.assert_no_script_errors("stream of bytes").await;
    b.quit().await;
}

#[tokio::test]
async fn every_page_shows_live_data_without_script_errors() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let server = start().await;
    for (i, owner) in ["ada", "bob", "cy"].iter().enumerate() {
        let stream = format!("account-{}", i + 1);
        server
            .append_as(
                "admin",
                &stream,
                json!("no_stream"),
                "AccountOpened",
                json!({"owner": owner, "balance": 1000}),
            )
            .await;
        server
            .append_as(
                owner,
                &stream,
                json!(1),
                "Deposited",
                json!({"amount": 250 * (i + 1)}),
            )
            .await;
    }
    server
        .append_as(
            "eve",
            "auction-1",
            json!("no_stream"),
            "AuctionOpened",
            json!({"item": "lamp", "reserve": 40}),
        )
        .await;
    server
        .append_as(
            "bob",
            "auction-1",
            json!(1),
            "BidPlaced",
            json!({"bidder": "bob", "amount": 55}),
        )
        .await;
    server
        .append_as(
            "ada",
            "doc-1",
            json!("no_stream"),
            "DocumentCreated",
            json!({"text": "hello"}),
        )
        .await;
    for i in 0..24 {
        server
            .append_as(
                "seed",
                &format!("user-{i:02}"),
                json!("no_stream"),
                "UserRegistered",
                json!({"username": format!("user{i}")}),
            )
            .await;
    }
    let b = Browser::launch(&server.base).await;
    let shots = screenshots();

    // Overview: counters follow the server live.
    b.goto("/").await;
    b.wait_for(
        "the overview's head",
        "return document.getElementById('ov-head')?.innerText === '33';",
        vec![],
    )
    .await;
    assert_eq!(b.text("#ov-streams").await, "29");
    server
        .append_as(
            "mallory",
            "account-1",
            json!(1),
            "Withdrawn",
            json!({"amount": 1}),
        )
        .await;
    server
        .append_as(
            "bob",
            "account-2",
            json!(2),
            "Withdrawn",
            json!({"amount": 100}),
        )
        .await;
    server
        .post(
            "/streams/account-3",
            &json!({"expected_version": 1, "rebase_unless": [],
                    "events": [{"type": "Deposited", "data": {"amount": 70}, "metadata": {"actor": "cy"}}]}),
        )
        .await;
    b.wait_for(
        "the overview's counters to move",
        "const t = (id) => document.getElementById(id)?.innerText;
         return t('ov-head') === '35' && t('ov-conflicts') === '1' && t('ov-rebases') === '1';",
        vec![],
    )
    .await;
    b.wait_text("#ov-latest", &["account-3", "Deposited"]).await;
    b.screenshot(&shots, "overview").await;
    b.assert_no_script_errors("overview").await;

    // Streams: prefix search and paging.
    b.goto("/#/streams").await;
    b.wait_text("#streams-table", &["account-1"]).await;
    assert_eq!(b.rows("#streams-table").await.len(), 25);
    b.click("#streams-next").await;
    b.wait_for(
        "the second page of streams",
        "return document.querySelectorAll('#streams-table tbody tr').length === 4;",
        vec![],
    )
    .await;
    b.fill("#streams-prefix", "account-").await;
    b.wait_for(
        "only account streams",
        "const rows = Array.from(document.querySelectorAll('#streams-table tbody tr'));
         return rows.length === 3 && rows.every((r) => r.dataset.stream.startsWith('account-'));",
        vec![],
    )
    .await;
    assert_eq!(b.rows("#streams-table").await[1], ["account-2", "3", "34"]);
    b.screenshot(&shots, "streams").await;
    b.assert_no_script_errors("streams").await;

    // Stream: pretty-printed data and metadata, reached from the list.
    b.click("#streams-table tr[data-stream=\"account-2\"] a")
        .await;
    b.wait_text(
        "#stream-events",
        &[
            "Withdrawn",
            "Deposited",
            "\"amount\": 500",
            "\"actor\": \"bob\"",
        ],
    )
    .await;
    assert_eq!(b.text("#stream-version").await, "3");
    b.wait_text(".live-badge", &["live"]).await;
    b.screenshot(&shots, "stream").await;
    b.assert_no_script_errors("stream").await;

    // All events.
    b.goto("/#/all").await;
    b.wait_text("#tail-events", &["account-3", "user-23"]).await;
    b.wait_text("#tail-status", &["live"]).await;
    b.screenshot(&shots, "all-events").await;
    b.assert_no_script_errors("all events").await;

    // Projections: this server runs none.
    b.goto("/#/projections").await;
    b.wait_text("#projections-empty", &["runs no projections"])
        .await;
    b.assert_no_script_errors("projections").await;
    b.quit().await;
}

#[tokio::test]
async fn the_projections_page_lists_status_checkpoint_and_lag_and_starts_a_rebuild() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(
        ProjectionHost::open_builtin(Arc::clone(&store), dir.path().join("projections.db"))
            .await
            .unwrap(),
    );
    host.start_all().await;
    let server = start_with(
        store,
        ServerConfig {
            projections: Some(Arc::clone(&host)),
            ..ServerConfig::default()
        },
    )
    .await;
    server
        .append_as(
            "admin",
            "account-1",
            json!("no_stream"),
            "AccountOpened",
            json!({"owner": "ada", "balance": 1000}),
        )
        .await;
    server
        .append_as(
            "ada",
            "account-1",
            json!(1),
            "Deposited",
            json!({"amount": 5}),
        )
        .await;

    let b = Browser::launch(&server.base).await;
    b.goto("/#/projections").await;
    b.wait_for(
        "the balances projection to catch up",
        "const r = document.querySelector('#projections-table tr[data-projection=\"balances\"]');
         return r && r.cells[1].innerText === 'running' && r.cells[2].innerText === '2' && r.cells[4].innerText === '0';",
        vec![],
    )
    .await;
    let rows = b.rows("#projections-table").await;
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["auctions", "balances", "documents"]);
    assert_eq!(rows[1][..5], ["balances", "running", "2", "2", "0"]);
    b.screenshot(&screenshots(), "projections").await;
    b.click("button.rebuild[data-name=\"balances\"]").await;
    b.wait_text("#projections-notice", &["Rebuilding balances"])
        .await;
    b.wait_for(
        "the rebuilt projection to catch up again",
        "const r = document.querySelector('#projections-table tr[data-projection=\"balances\"]');
         return r && r.cells[1].innerText === 'running' && r.cells[2].innerText === '2';",
        vec![],
    )
    .await;
    b.assert_no_script_errors("projections").await;
    b.quit().await;
    host.shutdown().await;
}

#[tokio::test]
async fn on_a_server_without_projection_routes_the_page_says_so() {
    use axum::response::IntoResponse;

    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    // A server from before the read side: `/projections` is an unknown route.
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let app =
        concord_server::router(store, ServerConfig::default()).layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                if request.uri().path().starts_with("/projections") {
                    let problem = json!({"type": "urn:concord:not-found", "title": "Not found",
                                         "status": 404, "detail": "no route"});
                    return (
                        axum::http::StatusCode::NOT_FOUND,
                        [("content-type", "application/problem+json")],
                        problem.to_string(),
                    )
                        .into_response();
                }
                next.run(request).await
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(async move { axum::serve(listener, app).await });

    let b = Browser::launch(&base).await;
    b.goto("/#/projections").await;
    b.wait_text(
        "#projections-missing",
        &["No projections endpoint on this server"],
    )
    .await;
    b.assert_no_script_errors("projections").await;
    b.quit().await;
    served.abort();
}

/// The status `GET path` answers, as any HTTP client outside the browser sees it.
async fn status_of(server: &TestServer, path: &str) -> u16 {
    server.get(path).await.status
}

#[tokio::test]
async fn a_stream_is_deleted_only_once_its_name_is_typed_at_the_version_shown_and_a_tombstone_reads_as_deleted()
 {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let server = start().await;
    for (stream, expected, event_type, data) in [
        (
            "customer-42",
            json!("no_stream"),
            "CustomerRegistered",
            json!({"name": "Ann"}),
        ),
        (
            "customer-42",
            json!(1),
            "AddressChanged",
            json!({"city": "Lyon"}),
        ),
        (
            "customer-7",
            json!("no_stream"),
            "CustomerRegistered",
            json!({"name": "Bo"}),
        ),
    ] {
        server
            .append_as("admin", stream, expected, event_type, data)
            .await;
    }
    let b = Browser::launch(&server.base).await;
    b.goto("/#/stream/customer-42").await;
    b.wait_text("#stream-version", &["2"]).await;
    b.wait_text(".live-badge", &["live"]).await;

    // A name that is not the stream's deletes nothing, even when the form is forced.
    b.click("#stream-delete-open").await;
    b.wait_for(
        "the delete dialog",
        "return document.getElementById('delete-dialog').open;",
        vec![],
    )
    .await;
    b.wait_text("#delete-only-if-text", &["still at version 2"])
        .await;
    b.fill("#delete-confirm", "customer-4").await;
    assert_eq!(
        b.exec(
            "return document.getElementById('delete-submit').disabled;",
            vec![]
        )
        .await,
        json!(true),
        "the button stays disabled until the name matches"
    );
    b.exec(
        "document.getElementById('delete-form').requestSubmit();",
        vec![],
    )
    .await;
    b.wait_text("#delete-refused", &["Not deleted", "“customer-4”"])
        .await;
    assert_eq!(status_of(&server, "/streams/customer-42").await, 200);

    // The tombstone choice says it is permanent.
    b.click("#delete-mode-tombstone").await;
    b.wait_text(
        "#delete-tombstone-warning",
        &["Permanent", "cannot be undone"],
    )
    .await;
    b.click("#delete-mode-soft").await;

    // An event written after the page showed version 2: the delete is refused with it.
    server
        .append_as(
            "clerk",
            "customer-42",
            json!(2),
            "PhoneChanged",
            json!({"phone": "555"}),
        )
        .await;
    b.fill("#delete-confirm", "customer-42").await;
    b.click("#delete-submit").await;
    b.wait_text(
        "#delete-conflict",
        &["Not deleted", "PhoneChanged", "{\"phone\":\"555\"}"],
    )
    .await;
    assert_eq!(b.text("#delete-actual-version").await, "3");
    assert_eq!(status_of(&server, "/streams/customer-42").await, 200);
    b.screenshot(&screenshots(), "stream-delete").await;

    // Having seen the missed event, confirming again deletes at version 3.
    b.click("#delete-submit").await;
    b.wait_text(
        "#stream-deleted-notice",
        &["Deleted customer-42 (soft delete) at version 3"],
    )
    .await;
    b.wait_for(
        "the page to show the stream empty",
        "return !document.getElementById('stream-empty').hidden
             && document.getElementById('stream-version').innerText === '0';",
        vec![],
    )
    .await;
    server
        .get("/streams/customer-42")
        .await
        .assert_problem(404, "stream-not-found");
    // The page stays live: an append recreates the stream after its last version.
    server
        .append_as(
            "clerk",
            "customer-42",
            json!("no_stream"),
            "CustomerRegistered",
            json!({"name": "Ann again"}),
        )
        .await;
    b.wait_text(
        "#stream-events tr[data-version=\"4\"]",
        &["CustomerRegistered", "Ann again"],
    )
    .await;
    assert_eq!(b.text("#stream-version").await, "4");
    assert_eq!(
        b.exec(
            "return document.querySelectorAll('.problem:not([hidden])').length;",
            vec![]
        )
        .await,
        json!(0),
        "{}",
        b.text("#page").await
    );
    b.assert_no_script_errors("stream after a soft delete")
        .await;

    // A tombstone: the page, and a fresh visit to it, say the stream is deleted.
    b.goto("/#/stream/customer-7").await;
    b.wait_text("#stream-version", &["1"]).await;
    b.click("#stream-delete-open").await;
    b.click("#delete-mode-tombstone").await;
    b.fill("#delete-confirm", "customer-7").await;
    b.wait_text("#delete-submit", &["Tombstone this stream forever"])
        .await;
    b.click("#delete-submit").await;
    b.wait_text("#stream-tombstoned", &["customer-7 is deleted for good"])
        .await;
    server
        .get("/streams/customer-7")
        .await
        .assert_problem(410, "stream-deleted");
    b.goto("/#/streams").await;
    b.goto("/#/stream/customer-7").await;
    let shown = b
        .wait_text("#stream-tombstoned", &["deleted for good", "never be read"])
        .await;
    assert!(!shown.contains("urn:concord"), "{shown}");
    assert_eq!(
        b.exec(
            "return document.querySelectorAll('.problem, #stream-lifecycle').length;",
            vec![]
        )
        .await,
        json!(0),
        "no generic error and no controls that would only be refused"
    );
    b.assert_no_script_errors("tombstoned stream").await;
    b.quit().await;
}

#[tokio::test]
async fn retention_edited_on_the_stream_page_is_what_the_server_stores_and_scavenge_shows_what_it_erased()
 {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let server = start().await;
    let answer = server
        .post(
            "/streams/sensor-1",
            &json!({"events": (1..=5).map(|i| json!({"type": "Measured", "data": {"celsius": i}})).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let b = Browser::launch(&server.base).await;
    b.goto("/#/stream/sensor-1").await;
    b.wait_text("#retention-current", &["none"]).await;
    b.click("#retention-edit").await;

    // Not a number: caught in the page. Zero: refused by the server, and said so.
    b.fill("#retention-max-count", "ten").await;
    b.click("#retention-save").await;
    b.wait_text("#retention-invalid", &["Not saved", "“ten”"])
        .await;
    b.fill("#retention-max-count", "0").await;
    b.click("#retention-save").await;
    b.wait_text("#retention-refused", &["Not saved", "(400)"])
        .await;
    assert_eq!(
        server.get("/streams/sensor-1/metadata").await.json,
        json!({})
    );

    b.fill("#retention-max-count", "2").await;
    b.fill("#retention-max-age-seconds", "86400").await;
    b.click("#retention-save").await;
    b.wait_text("#retention-saved", &["at most 2 events", "1 day"])
        .await;
    assert_eq!(
        server.get("/streams/sensor-1/metadata").await.json,
        json!({"max_count": 2, "max_age_seconds": 86400})
    );
    // Reads hide the older events at once, and the page shows what reads return.
    b.wait_for(
        "the page to show only the two newest events",
        "const rows = Array.from(document.querySelectorAll('#stream-events tbody tr'));
         return rows.map((r) => r.dataset.version).join(',') === '5,4';",
        vec![],
    )
    .await;
    // An emptied box removes that setting and keeps the others.
    b.fill("#retention-max-age-seconds", "").await;
    b.click("#retention-save").await;
    b.wait_text("#retention-current", &["at most 2 events"])
        .await;
    b.wait_for(
        "the max age to be removed",
        "return !document.getElementById('retention-current').innerText.includes('younger');",
        vec![],
    )
    .await;
    assert_eq!(
        server.get("/streams/sensor-1/metadata").await.json,
        json!({"max_count": 2})
    );
    b.assert_no_script_errors("stream retention").await;

    // Scavenge erases the three hidden events, and the overview says so.
    b.goto("/").await;
    b.wait_text("#scavenge-last", &["No scavenge has completed"])
        .await;
    b.click("#scavenge-run").await;
    b.wait_text(
        "#scavenge-done",
        &["3 events removed from 1 stream,", "0 bytes given back"],
    )
    .await;
    b.wait_text(
        "#scavenge-last",
        &["Last scavenge completed", "1 run since", "3 events removed"],
    )
    .await;
    assert_eq!(
        server.get("/all?from=1").await.json["events"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "only the two kept events remain in the log"
    );
    b.assert_no_script_errors("overview after a scavenge").await;
    b.quit().await;
}

#[tokio::test]
async fn on_a_store_without_the_stream_lifecycle_the_stream_page_says_so_and_scavenge_explains_the_501()
 {
    use axum::response::IntoResponse;

    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    // As a store that does not implement the lifecycle answers (the PostgreSQL store today).
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let app =
        concord_server::router(store, ServerConfig::default()).layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                let path = request.uri().path();
                if path.ends_with("/metadata") || path == "/admin/scavenge" {
                    let problem = json!({"type": "urn:concord:unsupported", "title": "Not supported",
                                         "status": 501, "detail": "this store does not support stream lifecycle"});
                    return (
                        axum::http::StatusCode::NOT_IMPLEMENTED,
                        [("content-type", "application/problem+json")],
                        problem.to_string(),
                    )
                        .into_response();
                }
                next.run(request).await
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(async move { axum::serve(listener, app).await });
    let appended = reqwest::Client::new()
        .post(format!("{base}/streams/account-1"))
        .header("content-type", "application/json")
        .body(json!({"events": [{"type": "AccountOpened", "data": {"balance": 1}}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status().as_u16(), 201);

    let b = Browser::launch(&base).await;
    b.goto("/#/stream/account-1").await;
    b.wait_text(
        "#retention-current",
        &["not offered by this server's store"],
    )
    .await;
    b.wait_text("#stream-events", &["AccountOpened"]).await;
    assert_eq!(
        b.exec(
            "return document.querySelectorAll('.problem, #retention-edit, #stream-delete-open').length;",
            vec![]
        )
        .await,
        json!(0),
        "no error box and no controls that could only fail"
    );
    b.goto("/#/").await;
    b.click("#scavenge-run").await;
    b.wait_text(
        "#scavenge-result",
        &["(501)", "does not offer this operation"],
    )
    .await;
    b.assert_no_script_errors("stream and overview").await;
    b.quit().await;
    served.abort();
}

#[tokio::test]
async fn a_group_page_shows_counts_lag_in_flight_and_parked_events_and_replays_the_parked() {
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let server = start().await;
    for (stream, expected) in [
        ("account-1", json!("no_stream")),
        ("account-2", json!("no_stream")),
    ] {
        server
            .append_as("bank", stream, expected, "Deposited", json!({"amount": 10}))
            .await;
    }
    server
        .append_as(
            "bank",
            "account-1",
            json!(1),
            "Deposited",
            json!({"amount": 20}),
        )
        .await;
    let spec = json!({"source": {"all": {"category": "account", "types": ["Deposited"]}},
                      "ack_timeout_ms": 600_000, "ordering": "none"});
    let created = server
        .send(
            server
                .http
                .put(server.url("/groups/receipts"))
                .header("content-type", "application/json")
                .body(spec.to_string()),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    // One event parked by a nack, one in flight with worker-b, one waiting.
    let polled = server
        .post(
            "/groups/receipts/poll",
            &json!({"consumer": "worker-a", "max": 1}),
        )
        .await;
    let parked_id = polled.json["messages"][0]["ack_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let nacked = server
        .post(
            "/groups/receipts/nack",
            &json!({"ack_ids": [parked_id], "action": "park"}),
        )
        .await;
    assert_eq!(nacked.status, 200, "{}", nacked.text);
    let held = server
        .post(
            "/groups/receipts/poll",
            &json!({"consumer": "worker-b", "max": 1}),
        )
        .await;
    let held_id = held.json["messages"][0]["ack_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let b = Browser::launch(&server.base).await;
    b.goto("/#/groups").await;
    b.wait_for(
        "the group in the list",
        "const r = document.querySelector('#groups-table tr[data-group=\"receipts\"]');
         return r && r.cells[5].innerText === '1';",
        vec![],
    )
    .await;
    let rows = b.rows("#groups-table").await;
    assert_eq!(
        rows[0],
        [
            "receipts",
            "all: category account; types Deposited",
            "none",
            "0",
            "1",
            "1",
            "1"
        ],
        "group, source, ordering, acked, in flight, parked, pending"
    );
    b.click("#groups-table a").await;
    b.wait_text("#group-name", &["receipts"]).await;
    b.wait_for(
        "the counts, the in-flight and the parked event",
        "return document.getElementById('group-in-flight-count').innerText === '1'
             && document.querySelectorAll('#group-in-flight-table tbody tr').length === 1
             && document.querySelectorAll('#group-parked-table tbody tr').length === 1;",
        vec![],
    )
    .await;
    let in_flight = b.rows("#group-in-flight-table").await;
    assert_eq!(in_flight[0][1..3], ["1", "worker-b"], "{in_flight:?}");
    let parked = b.rows("#group-parked-table").await;
    assert_eq!(parked[0][1..3], ["Deposited", "1"], "{parked:?}");
    b.wait_for(
        "the lag chart to have a sample",
        "const c = document.getElementById('group-lag-chart');
         return c && Number(c.getAttribute('data-points')) >= 1;",
        vec![],
    )
    .await;
    b.screenshot(&screenshots(), "group").await;

    b.click("#group-replay").await;
    b.wait_text("#group-replayed", &["1 parked event returned to the group"])
        .await;
    b.wait_for(
        "nothing parked any more",
        "return !!document.getElementById('group-parked-empty')
             && document.getElementById('group-parked-count').innerText === '0';",
        vec![],
    )
    .await;
    let status = server.get("/groups/receipts").await;
    assert_eq!(status.json["parked"], 0, "{}", status.text);
    assert_eq!(
        status.json["pending"], 2,
        "the replayed event waits again: {}",
        status.text
    );

    let acked = server
        .post("/groups/receipts/ack", &json!({"ack_ids": [held_id]}))
        .await;
    assert_eq!(acked.json["acked"], 1, "{}", acked.text);
    b.wait_text("#group-acked", &["1"]).await;

    assert_eq!(
        server
            .send(server.http.delete(server.url("/groups/receipts")))
            .await
            .status,
        204
    );
    b.wait_for(
        "the page to say the group is gone",
        "return !!document.getElementById('group-missing');",
        vec![],
    )
    .await;
    b.assert_no_script_errors("group").await;
    b.quit().await;
}
