//! `concord group …` and `concord consume GROUP --exec CMD` on an embedded store and through
//! a server: a worker in one line of shell acks what its command handled, a poison event
//! (the command always fails) is parked after `--max-deliveries`, replay-parked hands it
//! out again; refusals have their documented exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, start_with, terminate};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn concord(store: &str, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .args(["--store", store])
        .args(args)
        .env_remove("CONCORD_STORE")
        .env_remove("CONCORD_TOKEN")
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(store: &str, args: &[&str]) -> String {
    let run = concord(store, args);
    assert_eq!(run.code, 0, "concord {args:?}: {}", run.stderr);
    run.stdout
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Seeds order-1 (3 events), order-2 (2) and invoice-1 (1).
fn seed(store: &str) {
    for stream in [
        "order-1",
        "order-1",
        "order-1",
        "order-2",
        "order-2",
        "invoice-1",
    ] {
        ok(
            store,
            &["append", stream, "--type", "Placed", "--data", "{}"],
        );
    }
}

/// A worker that records each event it gets in `log` and fails on order-1's version 2.
fn poisoned_worker(log: &Path) -> String {
    format!(
        r#"read -r event; echo "$event" >> '{}'; [ "$CONCORD_STREAM@$CONCORD_VERSION" != "order-1@2" ]"#,
        log.display()
    )
}

#[test]
fn a_shell_worker_acks_handled_events_and_a_poison_event_is_parked_then_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    seed(store);
    let created = ok(
        store,
        &[
            "group",
            "create",
            "receipts",
            "--category",
            "order",
            "--max-deliveries",
            "2",
            "--ordering",
            "per-stream",
        ],
    );
    assert!(created.contains("group receipts created"), "{created}");
    assert!(created.contains("5 pending"), "{created}");

    let log = dir.path().join("handled.ndjson");
    let run = concord(
        store,
        &[
            "consume",
            "receipts",
            "--exec",
            &poisoned_worker(&log),
            "--max",
            "10",
            "--wait-ms",
            "0",
            "--exit-when-idle",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("4 acked, 2 nacked"), "{}", run.stderr);
    let handled = json_lines(&std::fs::read_to_string(&log).unwrap());
    let seen: Vec<String> = handled
        .iter()
        .map(|e| format!("{}@{}", e["stream"].as_str().unwrap(), e["version"]))
        .collect();
    assert_eq!(
        seen.len(),
        6,
        "4 events once, the poison one twice: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|s| *s == "order-1@2").count(),
        2,
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.starts_with("invoice")), "{seen:?}");
    assert!(handled.iter().all(|e| e["type"] == "Placed"));

    let info = json_lines(&ok(store, &["--json", "group", "info", "receipts"]));
    assert_eq!(
        (&info[0]["acked"], &info[0]["parked"], &info[0]["pending"]),
        (&Value::from(4), &Value::from(1), &Value::from(0))
    );
    let parked = ok(store, &["group", "parked", "receipts"]);
    assert!(
        parked.contains("order-1@2 Placed after 2 deliveries"),
        "{parked}"
    );
    let replayed = ok(store, &["group", "replay-parked", "receipts"]);
    assert!(replayed.starts_with("1 parked event"), "{replayed}");
    let run = concord(
        store,
        &[
            "consume",
            "receipts",
            "--exec",
            "cat > /dev/null",
            "--wait-ms",
            "0",
            "--exit-when-idle",
        ],
    );
    assert!(run.stderr.contains("1 acked, 0 nacked"), "{}", run.stderr);
    let list = json_lines(&ok(store, &["--json", "group", "list"]));
    assert_eq!(list.len(), 1);
    assert_eq!(
        (&list[0]["group"], &list[0]["acked"]),
        (&Value::from("receipts"), &Value::from(5))
    );

    // The store's own streams stay out of what the CLI reads.
    let streams = ok(store, &["--json", "streams"]);
    assert!(!streams.contains("$group"), "{streams}");
    let all = ok(store, &["--json", "all"]);
    assert_eq!(all.lines().count(), 6, "{all}");

    ok(store, &["group", "delete", "receipts"]);
    let gone = concord(store, &["group", "info", "receipts"]);
    assert_eq!(gone.code, 1, "{}", gone.stderr);
    assert!(gone.stderr.contains("does not exist"), "{}", gone.stderr);
}

#[test]
fn refusals_have_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    seed(store);
    ok(store, &["group", "create", "g", "--stream", "order-1"]);
    let moved = concord(store, &["group", "create", "g", "--stream", "order-2"]);
    assert_eq!(moved.code, 3, "a changed source: {}", moved.stderr);
    let updated = ok(
        store,
        &[
            "group",
            "create",
            "g",
            "--stream",
            "order-1",
            "--max-deliveries",
            "9",
        ],
    );
    assert!(updated.contains("group g updated"), "{updated}");
    for args in [
        &["group", "create", "h", "--max-deliveries", "0"][..],
        &["group", "create", "h", "--ack-timeout-ms", "99"][..],
        &["group", "create", "h", "--from", "middle"][..],
        &["consume", "g", "--exec", "true", "--max", "0"][..],
    ] {
        let run = concord(store, args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
    }
    let missing = concord(
        store,
        &["consume", "nope", "--exec", "true", "--wait-ms", "0"],
    );
    assert_eq!(missing.code, 1, "{}", missing.stderr);
}

#[test]
fn groups_work_the_same_through_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start_with(dir.path(), &["--no-projections"]);
    let store = format!("http://{addr}");
    seed(&store);
    ok(
        &store,
        &["group", "create", "receipts", "--category", "order"],
    );
    let log = dir.path().join("handled.ndjson");
    let run = concord(
        &store,
        &[
            "consume",
            "receipts",
            "--exec",
            &poisoned_worker(&log),
            "--max",
            "10",
            "--wait-ms",
            "0",
            "--on-failure",
            "skip",
            "--exit-when-idle",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let info = json_lines(&ok(&store, &["--json", "group", "info", "receipts"]));
    assert_eq!(
        (&info[0]["acked"], &info[0]["skipped"], &info[0]["parked"]),
        (&Value::from(4), &Value::from(1), &Value::from(0))
    );
    let missing = concord(&store, &["group", "info", "nope"]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert_eq!(terminate(server), 0);
}
