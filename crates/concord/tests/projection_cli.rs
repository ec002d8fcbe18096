//! Black-box tests of `concord projection` and `concord query`: after `concord demo bank`,
//! the `balances` row of every account equals what replaying its stream gives (computed
//! here from `concord read --json`), before and after a rebuild; errors are one line with
//! exit code 1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_concord");

fn concord(store: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The balance, version and status a replay of the stream's events gives.
fn replay(events: &[Value]) -> (u64, u64, &'static str) {
    let (mut balance, mut status) = (0u64, "open");
    for e in events {
        let amount = |f: &str| e["data"][f].as_u64().unwrap();
        match e["type"].as_str().unwrap() {
            "AccountOpened" => balance = amount("balance"),
            "Deposited" => balance = balance.saturating_add(amount("amount")),
            "Withdrawn" => balance = balance.saturating_sub(amount("amount")),
            "AccountClosed" => status = "closed",
            _ => {}
        }
    }
    (balance, events.len() as u64, status)
}

fn check_every_account(store: &Path) -> usize {
    let (code, out, err) = concord(store, &["--json", "streams", "--prefix", "account-"]);
    assert_eq!(code, 0, "{err}");
    let streams = json_lines(&out);
    assert!(!streams.is_empty());
    for s in &streams {
        let name = s["stream"].as_str().unwrap();
        let (code, out, err) = concord(store, &["--json", "read", name]);
        assert_eq!(code, 0, "{err}");
        let (balance, version, status) = replay(&json_lines(&out));
        let (code, out, err) = concord(store, &["--json", "query", "balances", name]);
        assert_eq!(code, 0, "{err}");
        let answer = &json_lines(&out)[0];
        assert_eq!(answer["row"]["balance"], balance, "{name}: {answer}");
        assert_eq!(answer["row"]["version"], version, "{name}: {answer}");
        assert_eq!(answer["row"]["status"], status, "{name}: {answer}");
        assert!(answer["checkpoint"].as_u64().unwrap() >= s["last_position"].as_u64().unwrap());
    }
    streams.len()
}

#[test]
fn query_gives_the_balance_a_replay_of_the_stream_gives_before_and_after_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    let (code, _, err) = concord(&store, &["demo", "bank"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = concord(&store, &["--json", "projection", "list"]);
    assert_eq!(code, 0);
    let listed = json_lines(&out);
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .all(|s| s["status"] == "stopped" && s["checkpoint"] == 0),
        "{listed:?}"
    );

    assert!(check_every_account(&store) >= 1);
    assert!(store.join("projections.sqlite").exists());

    let (code, out, err) = concord(&store, &["--json", "projection", "rebuild", "balances"]);
    assert_eq!(code, 0, "{err}");
    let report = &json_lines(&out)[0];
    let (_, head, _) = concord(&store, &["--json", "all"]);
    let head = json_lines(&head).len() as u64;
    assert_eq!(report["checkpoint"], head, "{report}");
    assert!(report["events_applied"].as_u64().unwrap() > 0);
    check_every_account(&store);

    let (code, out, _) = concord(&store, &["--json", "projection", "status", "balances"]);
    assert_eq!(code, 0);
    let status = &json_lines(&out)[0];
    assert_eq!(
        (status["lag"].as_u64(), status["head"].as_u64()),
        (Some(0), Some(head))
    );
}

#[test]
fn unknown_names_and_a_projection_behind_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    // A store to read (a read of no store is refused before any projection is looked at).
    let (code, _, err) = concord(
        &store,
        &["append", "other-1", "--type", "Noted", "--data", "{}"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = concord(&store, &["query", "nope", "account-1"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: there is no projection named \"nope\""),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    let (code, _, err) = concord(&store, &["query", "balances", "account-1"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no row \"account-1\""), "{err}");
    let (code, _, err) = concord(
        &store,
        &[
            "query",
            "balances",
            "account-1",
            "--min-position",
            "5",
            "--wait-ms",
            "10",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("is behind: its checkpoint is 1, but position 5 was asked for"),
        "{err}"
    );
}
