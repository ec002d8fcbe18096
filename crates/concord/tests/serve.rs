//! `concord serve` as an operator runs it: the real binary on an ephemeral port over an
//! embedded store. Guards the wiring the library tests cannot see: flags reach the server,
//! the built-in projections run, SIGTERM shuts down gracefully with exit 0, and what was
//! acknowledged is still there when the store is opened again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::Command;

use common::{BIN, http, start, start_with, terminate};
use serde_json::Value;

#[test]
fn serve_answers_the_founding_conflict_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = start(&data);

    let (status, body) = http(&addr, "GET", "/health", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["store"],
        "embedded"
    );

    let open = r#"{"expected_version":"no_stream","events":[{"type":"AccountOpened","data":{"owner":"ann","balance":1000}}]}"#;
    assert_eq!(http(&addr, "POST", "/streams/account-42", open).0, 201);
    let a = r#"{"expected_version":1,"events":[{"type":"Deposited","data":{"amount":2000}}]}"#;
    assert_eq!(http(&addr, "POST", "/streams/account-42", a).0, 201);
    let b = r#"{"expected_version":1,"events":[{"type":"Deposited","data":{"amount":3000}}]}"#;
    let (status, body) = http(&addr, "POST", "/streams/account-42", b);
    assert_eq!(status, 409, "{body}");
    let conflict: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(conflict["actual_version"], 2);
    assert_eq!(conflict["concurrent_events"][0]["data"]["amount"], 2000);
    let rebase = r#"{"expected_version":1,"rebase_unless":["AccountClosed"],"events":[{"type":"Deposited","data":{"amount":3000}}]}"#;
    let (status, body) = http(&addr, "POST", "/streams/account-42", rebase);
    assert_eq!(status, 201, "{body}");
    let rebased: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rebased["last_version"], 3);
    assert_eq!(rebased["rebased"]["expected_version"], 1);

    // The built-in balances projection answers once it has processed the rebased deposit.
    let last_position = rebased["last_position"].as_u64().unwrap();
    let row =
        format!("/projections/balances/account-42?min_position={last_position}&wait_ms=10000");
    let (status, body) = http(&addr, "GET", &row, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["row"]["balance"],
        6000
    );

    // The CLI speaks to the server through the HTTP client, like any other store.
    let out = Command::new(BIN)
        .args([
            "--store",
            &format!("http://{addr}"),
            "--json",
            "read",
            "account-42",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);
    let out = Command::new(BIN)
        .args([
            "--store",
            &format!("http://{addr}"),
            "append",
            "account-42",
            "--type",
            "Deposited",
        ])
        .args(["--data", r#"{"amount":1}"#, "--expect", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a conflict over HTTP exits 3: {out:?}"
    );

    assert_eq!(terminate(child), 0, "SIGTERM is a clean stop");

    // Everything acknowledged is there for the next process.
    let out = Command::new(BIN)
        .args([
            "--store",
            data.to_str().unwrap(),
            "--json",
            "read",
            "account-42",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let versions: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, [1, 2, 3]);
}

#[test]
fn serve_refuses_an_open_server_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "--store",
            dir.path().to_str().unwrap(),
            "serve",
            "--addr",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without tokens"), "{stderr}");
    assert!(stderr.contains("--insecure-open"), "{stderr}");
}

#[test]
fn serve_without_projections_is_only_the_event_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = start_with(&data, &["--no-projections"]);
    let (status, _) = http(
        &addr,
        "POST",
        "/streams/account-1",
        r#"{"expected_version": "no_stream", "events": [{"type": "Deposited", "data": {"amount": 5}}]}"#,
    );
    assert_eq!(status, 201);
    let (status, body) = http(&addr, "GET", "/projections", "");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["projections"], serde_json::json!([]), "{body}");
    let (status, _) = http(&addr, "GET", "/projections/balances/account-1", "");
    assert_eq!(status, 404);
    assert_eq!(terminate(child), 0);
    assert!(
        !data.join("projections.sqlite").exists(),
        "no projection database is created"
    );
}

/// Stream lifecycle over HTTP on a PostgreSQL store: a soft delete (404 after, versions
/// going on when recreated), a tombstone (410), retention metadata, and a scavenge that
/// removes what they hide while the other events keep their positions.
#[test]
fn serve_deletes_tombstones_retains_and_scavenges_on_a_postgres_store() {
    let url = concord_testkit::postgres::shared().url_with_fresh_schema();
    let (child, addr) = start(std::path::Path::new(&url));
    let two = r#"{"events":[{"type":"T","data":{"n":1}},{"type":"T","data":{"n":2}}]}"#;
    for stream in ["customer-1", "customer-2", "sensor-1"] {
        assert_eq!(
            http(&addr, "POST", &format!("/streams/{stream}"), two).0,
            201
        );
    }
    assert_eq!(http(&addr, "DELETE", "/streams/customer-1", "").0, 204);
    assert_eq!(http(&addr, "GET", "/streams/customer-1", "").0, 404);
    assert_eq!(
        http(&addr, "DELETE", "/streams/customer-2?tombstone=true", "").0,
        204
    );
    assert_eq!(http(&addr, "POST", "/streams/customer-2", two).0, 410);
    let (status, body) = http(
        &addr,
        "PUT",
        "/streams/sensor-1/metadata",
        r#"{"max_count":1}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(&addr, "POST", "/admin/scavenge", "{}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["events_removed"],
        5
    );
    let (status, body) = http(&addr, "GET", "/all", "");
    assert_eq!(status, 200, "{body}");
    let positions: Vec<u64> = serde_json::from_str::<Value>(&body).unwrap()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![6]);
    let again = r#"{"expected_version":"no_stream","events":[{"type":"T","data":{"n":3}}]}"#;
    let (status, body) = http(&addr, "POST", "/streams/customer-1", again);
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["first_version"],
        3
    );
    assert_eq!(terminate(child), 0);
}

/// `concord serve --store postgres://...` on the testkit's throwaway PostgreSQL: the
/// founding conflict and a rebase over HTTP, health naming the backend, a projection
/// answering with read-your-writes, and what was acknowledged still there for a second
/// server on the same database and schema.
#[test]
fn serve_runs_on_a_postgres_store() {
    let url = concord_testkit::postgres::shared().url_with_fresh_schema();
    let dir = tempfile::tempdir().unwrap();
    let projections = dir.path().join("projections.sqlite");
    let flags = ["--projections-db", projections.to_str().unwrap()];
    let (child, addr) = start_with(std::path::Path::new(&url), &flags);

    let (status, body) = http(&addr, "GET", "/health", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["store"],
        "postgres"
    );
    let open = r#"{"expected_version":"no_stream","events":[{"type":"AccountOpened","data":{"owner":"ann","balance":1000}}]}"#;
    assert_eq!(http(&addr, "POST", "/streams/account-42", open).0, 201);
    let a = r#"{"expected_version":1,"events":[{"type":"Deposited","data":{"amount":2000}}]}"#;
    assert_eq!(http(&addr, "POST", "/streams/account-42", a).0, 201);
    let b = r#"{"expected_version":1,"events":[{"type":"Deposited","data":{"amount":3000}}]}"#;
    let (status, body) = http(&addr, "POST", "/streams/account-42", b);
    assert_eq!(status, 409, "{body}");
    let conflict: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(conflict["actual_version"], 2);
    assert_eq!(conflict["concurrent_events"][0]["data"]["amount"], 2000);
    let rebase = r#"{"expected_version":1,"rebase_unless":["AccountClosed"],"events":[{"type":"Deposited","data":{"amount":3000}}]}"#;
    let (status, body) = http(&addr, "POST", "/streams/account-42", rebase);
    assert_eq!(status, 201, "{body}");
    let rebased: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rebased["last_version"], 3);
    let last_position = rebased["last_position"].as_u64().unwrap();
    let row =
        format!("/projections/balances/account-42?min_position={last_position}&wait_ms=10000");
    let (status, body) = http(&addr, "GET", &row, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["row"]["balance"],
        6000
    );
    assert_eq!(terminate(child), 0);

    // Another server on the same database and schema sees every acknowledged event.
    let (child, addr) = start_with(std::path::Path::new(&url), &flags);
    let (status, body) = http(&addr, "GET", "/streams/account-42", "");
    assert_eq!(status, 200, "{body}");
    let events: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(events["events"].as_array().unwrap().len(), 3, "{events}");
    assert_eq!(terminate(child), 0);
}

/// A service manager (or a test) may stop the server the moment it says where it listens:
/// SIGTERM's handler is in place by then, so it stops cleanly instead of being killed by
/// the signal (before the handler was installed after the announcement, and a SIGTERM sent
/// at once killed 3 of 5 servers).
#[test]
fn serve_stopped_as_soon_as_it_announces_its_address_stops_cleanly() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let (child, _addr) = start_with(dir.path(), &["--no-projections"]);
        assert_eq!(terminate(child), 0);
    }
}
