//! Black-box tests of the `concord` binary: they run it as a user would, against a fresh
//! embedded store in a temp directory (and, for the Redis walk-through, a `redis-server`
//! the test starts), and check exit codes, stdout and stderr.
//!
//! Each test guards a promise of the CLI: MISSION.md's conflict walk-through works, appends
//! are atomic and idempotent, invalid input exits 2 with nothing written, a bad store is a
//! one-line error, and `tail` follows live events and stops cleanly on Ctrl-C.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_concord");

/// How long a test waits for a live event or for a process to exit.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}"))
            })
            .collect()
    }

    fn json(&self) -> Value {
        let lines = self.json_lines();
        assert_eq!(lines.len(), 1, "expected one JSON line, got {self:#?}");
        lines.into_iter().next().unwrap()
    }

    #[track_caller]
    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }
}

fn finish(output: Output) -> Run {
    Run {
        code: output.status.code().expect("concord exited by a signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Runs `concord --store <store> <args>` with stdin closed.
fn concord(store: &str, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("CONCORD_STORE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    finish(output)
}

/// Runs `concord --store <store> <args>` with `input` on stdin.
fn concord_with_stdin(store: &str, args: &[&str], input: &str) -> Run {
    let mut child = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("CONCORD_STORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    finish(child.wait_with_output().unwrap())
}

fn temp_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("concord-cli-")
        .tempdir()
        .unwrap();
    let store = dir.path().join("store").to_str().unwrap().to_owned();
    (dir, store)
}

fn versions(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect()
}

/// MISSION.md's table: A's deposit lands at version 2, B's concurrent deposit conflicts and
/// names A's, then B rebases to version 3. Run against any store URL.
fn conflict_walk_through(store: &str) {
    let opened = concord(
        store,
        &[
            "--json",
            "append",
            "account-42",
            "--type",
            "AccountOpened",
            "--data",
            r#"{"owner":"ann","balance":1000}"#,
            "--expect",
            "no-stream",
        ],
    );
    let opened = opened.assert_code(0).json();
    assert_eq!(
        (
            opened["first_version"].as_u64(),
            opened["duplicate"].as_bool()
        ),
        (Some(1), Some(false))
    );

    let a = concord(
        store,
        &[
            "--json",
            "append",
            "account-42",
            "--type",
            "Deposited",
            "--data",
            r#"{"amount":2000}"#,
            "--expect",
            "1",
        ],
    );
    let a = a.assert_code(0).json();
    assert_eq!(a["last_version"], 2);
    assert_eq!(a["rebased"], Value::Null);

    // B saw version 1 too: the table shows the deposit B missed.
    let b = concord(
        store,
        &[
            "append",
            "account-42",
            "--type",
            "Deposited",
            "--data",
            r#"{"amount":3000}"#,
            "--expect",
            "1",
        ],
    );
    b.assert_code(3);
    let missed = b
        .stdout
        .lines()
        .find(|l| l.contains("Deposited"))
        .unwrap_or_else(|| panic!("no missed event: {b:#?}"));
    assert!(
        missed.starts_with('2') && missed.contains(r#"{"amount":2000}"#),
        "{missed}"
    );
    assert!(
        b.stderr
            .starts_with("error: version conflict on stream account-42: expected version 1"),
        "{}",
        b.stderr
    );

    let b_json = concord(
        store,
        &[
            "--json",
            "append",
            "account-42",
            "--type",
            "Deposited",
            "--data",
            r#"{"amount":3000}"#,
            "--expect",
            "1",
        ],
    );
    let conflict = b_json.assert_code(3).json();
    assert_eq!(conflict["type"], "urn:concord:version-conflict");
    assert_eq!(
        (
            conflict["expected_version"].as_u64(),
            conflict["actual_version"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(conflict["concurrent_events"][0]["data"]["amount"], 2000);
    assert_eq!(conflict["concurrent_events"].as_array().unwrap().len(), 1);

    // Deposits commute: B rebases over A's deposit.
    let rebased = concord(
        store,
        &[
            "--json",
            "append",
            "account-42",
            "--type",
            "Deposited",
            "--data",
            r#"{"amount":3000}"#,
            "--expect",
            "1",
            "--rebase-unless",
            "AccountClosed",
        ],
    );
    let rebased = rebased.assert_code(0).json();
    assert_eq!(rebased["first_version"], 3);
    assert_eq!(rebased["rebased"]["expected_version"], 1);
    assert_eq!(
        rebased["rebased"]["concurrent_events"][0]["data"]["amount"],
        2000
    );

    let read = concord(store, &["--json", "read", "account-42"]);
    let events = read.assert_code(0).json_lines();
    assert_eq!(versions(&events), [1, 2, 3]);
    let amounts: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
    assert_eq!(amounts[1]["amount"], 2000);
    assert_eq!(amounts[2]["amount"], 3000);
    assert_eq!(events[0]["type"], "AccountOpened");
    assert!(
        events
            .iter()
            .all(|e| e["stream"] == "account-42" && e["recorded_at"].is_string())
    );
}

#[test]
fn conflict_walk_through_names_the_missed_deposit_and_rebase_lands_at_version_3() {
    let (_dir, store) = temp_store();
    conflict_walk_through(&store);
    let table = concord(&store, &["read", "account-42"]);
    let lines: Vec<&str> = table.assert_code(0).stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{table:#?}");
    assert!(
        lines[0].starts_with("VERSION") && lines[0].contains("TIME"),
        "{}",
        lines[0]
    );
    assert!(
        lines[3].starts_with('3') && lines[3].contains(r#"{"amount":3000}"#),
        "{}",
        lines[3]
    );
}

#[test]
fn ndjson_on_stdin_is_one_atomic_append() {
    let (_dir, store) = temp_store();
    let three = r#"{"type":"AccountOpened","data":{"owner":"ann","balance":0}}
{"type":"Deposited","data":{"amount":5},"tags":["account:7"]}

{"type":"Deposited","data":{"amount":6},"metadata":{"actor":"ann"}}
"#;
    let out = concord_with_stdin(
        &store,
        &["--json", "append", "account-7", "--expect", "no-stream"],
        three,
    );
    let out = out.assert_code(0).json();
    assert_eq!(
        (out["first_version"].as_u64(), out["last_version"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        (
            out["first_position"].as_u64(),
            out["last_position"].as_u64()
        ),
        (Some(1), Some(3))
    );

    // A stale expectation refuses both events, not just the first.
    let two = "{\"type\":\"Deposited\",\"data\":{\"amount\":1}}\n{\"type\":\"Withdrawn\",\"data\":{\"amount\":1}}\n";
    concord_with_stdin(&store, &["append", "account-7", "--expect", "1"], two).assert_code(3);
    // A bad line refuses the whole input.
    let bad = "{\"type\":\"Deposited\",\"data\":{\"amount\":1}}\n{\"type\":\"Withdrawn\"}\n";
    let refused = concord_with_stdin(&store, &["append", "account-7"], bad);
    assert!(
        refused.assert_code(2).stderr.contains("line 2"),
        "{refused:#?}"
    );

    let events = concord(&store, &["--json", "read", "account-7"])
        .assert_code(0)
        .json_lines();
    assert_eq!(versions(&events), [1, 2, 3]);
    assert_eq!(events[1]["tags"], serde_json::json!(["account:7"]));
    assert_eq!(events[2]["metadata"]["actor"], "ann");
}

#[test]
fn resending_an_event_id_is_a_duplicate_and_a_partial_resend_exits_4() {
    let (_dir, store) = temp_store();
    let id = "0b6a3a52-7d4c-4c1e-9a51-6f0e4b8f2c11";
    let args = [
        "--json",
        "append",
        "account-1",
        "--type",
        "Deposited",
        "--data",
        r#"{"amount":1}"#,
        "--id",
        id,
        "--expect",
        "0",
    ];
    let first = concord(&store, &args).assert_code(0).json();
    assert_eq!(first["duplicate"], false);
    // The expectation no longer holds, but a re-sent append is recognised by its id first.
    let again = concord(&store, &args).assert_code(0).json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        (
            again["first_version"].as_u64(),
            again["first_position"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let human = concord(&store, &args[1..]);
    assert!(
        human.assert_code(0).stdout.starts_with("duplicate:"),
        "{human:#?}"
    );

    let partial = format!(
        "{{\"type\":\"Deposited\",\"data\":1,\"id\":\"{id}\"}}\n{{\"type\":\"Deposited\",\"data\":2}}\n"
    );
    let out = concord_with_stdin(&store, &["append", "account-1"], &partial);
    assert!(
        out.assert_code(4)
            .stderr
            .starts_with("error: partial duplicate"),
        "{out:#?}"
    );
    assert!(out.stderr.contains(id), "{out:#?}");
    let out = concord_with_stdin(&store, &["--json", "append", "account-1"], &partial)
        .assert_code(4)
        .json();
    assert_eq!(out["existing_ids"], serde_json::json!([id]));
    assert_eq!(
        concord(&store, &["--json", "read", "account-1"])
            .json_lines()
            .len(),
        1
    );
}

#[test]
fn invalid_input_exits_2_and_writes_nothing() {
    let (_dir, store) = temp_store();
    let cases: &[&[&str]] = &[
        &["append", "$x", "--type", "Deposited", "--data", "{}"],
        &[
            "append",
            "account-1",
            "--type",
            "Deposited",
            "--data",
            "{\"amount\":",
        ],
        &[
            "append",
            "account-1",
            "--type",
            "Deposited",
            "--data",
            "{}",
            "--metadata",
            "[]",
        ],
        &[
            "append",
            "account-1",
            "--type",
            "Deposited",
            "--data",
            "{}",
            "--expect",
            "latest",
        ],
        &[
            "append",
            "account-1",
            "--type",
            "Deposited",
            "--data",
            "{}",
            "--id",
            "not-a-uuid",
        ],
        &["append", "account-1", "--type", "Deposited"],
        &["append", "account-1"],
        &["read", "$all"],
        &["tail", "account-1", "--types", "Deposited"],
        &["no-such-command"],
    ];
    for args in cases {
        let run = concord(&store, args);
        run.assert_code(2);
        assert!(run.stderr.starts_with("error:"), "{args:?}: {run:#?}");
        assert!(!run.stderr.contains("panicked"), "{args:?}: {run:#?}");
    }
    let bad_json = concord_with_stdin(
        &store,
        &["append", "account-1"],
        "{\"type\":\"A\",\"data\":nope}\n",
    );
    bad_json.assert_code(2);
    // Nothing was written: the store was never even created.
    assert!(
        !Path::new(&store).exists(),
        "invalid input created the store"
    );
    concord(
        &store,
        &["append", "account-1", "--type", "Opened", "--data", "{}"],
    )
    .assert_code(0);
    let streams = concord(&store, &["--json", "streams"])
        .assert_code(0)
        .json_lines();
    assert_eq!(streams.len(), 1);
}

#[test]
fn data_files_append_bytes_of_a_content_type_shown_in_hex_and_as_base64() {
    let (dir, store) = temp_store();
    let file = dir.path().join("blob.bin");
    let all: Vec<u8> = (0..=255).collect();
    std::fs::write(&file, &all).unwrap();
    let file = file.to_str().unwrap();
    concord(
        &store,
        &[
            "append",
            "blob-1",
            "--type",
            "Uploaded",
            "--data-file",
            file,
            "--content-type",
            "application/octet-stream",
        ],
    )
    .assert_code(0);
    // --content-type with --data: the text's bytes.
    concord(
        &store,
        &[
            "append",
            "blob-1",
            "--type",
            "Noted",
            "--data",
            "hi",
            "--content-type",
            "text/plain",
        ],
    )
    .assert_code(0);
    let json_file = dir.path().join("event.json");
    std::fs::write(&json_file, "{ \"amount\" : 5 }").unwrap();
    concord(
        &store,
        &[
            "append",
            "blob-1",
            "--type",
            "Deposited",
            "--data-file",
            json_file.to_str().unwrap(),
        ],
    )
    .assert_code(0);

    let events = concord(&store, &["--json", "read", "blob-1"])
        .assert_code(0)
        .json_lines();
    assert_eq!(events[0]["content_type"], "application/octet-stream");
    let decoded = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        events[0]["data_base64"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(decoded, all);
    assert_eq!(
        (&events[1]["content_type"], &events[1]["data_base64"]),
        (&json!("text/plain"), &json!("aGk="))
    );
    assert_eq!(events[2]["content_type"], "application/json");
    assert_eq!(events[2]["data"], json!({"amount": 5}));

    let table = concord(&store, &["read", "blob-1"])
        .assert_code(0)
        .stdout
        .clone();
    assert!(
        table.contains("application/octet-stream, 256 bytes: 000102"),
        "{table}"
    );
    assert!(table.contains("text/plain, 2 bytes: 6869"), "{table}");
    assert!(table.contains("{\"amount\":5}"), "{table}");

    // Refused before anything is written: a bad content type, a file of non-JSON without a
    // content type, both --data and --data-file, a missing file.
    for args in [
        &[
            "append",
            "blob-1",
            "--type",
            "T",
            "--data-file",
            file,
            "--content-type",
            "png",
        ][..],
        &["append", "blob-1", "--type", "T", "--data-file", file],
        &[
            "append",
            "blob-1",
            "--type",
            "T",
            "--data",
            "{}",
            "--data-file",
            file,
        ],
        &[
            "append",
            "blob-1",
            "--type",
            "T",
            "--data",
            "x",
            "--content-type",
            "application/json",
        ],
    ] {
        let run = concord(&store, args);
        run.assert_code(2);
        assert!(run.stderr.starts_with("error:"), "{args:?}: {run:#?}");
    }
    let missing = concord(
        &store,
        &[
            "append",
            "blob-1",
            "--type",
            "T",
            "--data-file",
            "/nonexistent/blob",
        ],
    );
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("/nonexistent/blob"), "{missing:#?}");
    assert_eq!(
        concord(&store, &["--json", "read", "blob-1"])
            .assert_code(0)
            .json_lines()
            .len(),
        3,
        "a refused append wrote something"
    );
}

#[test]
fn a_bad_store_url_is_a_one_line_error() {
    for url in [
        "ftp://example.com/x",
        "postgres://",
        "memory:nope",
        "redis://",
    ] {
        let run = concord(url, &["streams"]);
        run.assert_code(2);
        assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
        assert!(
            run.stderr.starts_with("error: invalid store URL"),
            "{run:#?}"
        );
        assert!(
            run.stderr.contains(url) && run.stderr.contains("redis://host:port/db"),
            "{run:#?}"
        );
    }
    // The environment variable is read the same way.
    let run = finish(
        Command::new(BIN)
            .arg("streams")
            .env("CONCORD_STORE", "ftp://x")
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert!(run.assert_code(2).stderr.contains("ftp://x"), "{run:#?}");
}

#[test]
fn an_unusable_data_directory_is_a_one_line_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"plain file").unwrap();
    let store = file.join("store");
    // An append opens (creates) the store; a read of it says there is none (cli_server.rs).
    let run = concord(
        store.to_str().unwrap(),
        &["append", "x-1", "--type", "T", "--data", "{}"],
    );
    run.assert_code(1);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(
        run.stderr
            .starts_with("error: cannot open the embedded store in"),
        "{run:#?}"
    );
    assert!(run.stderr.contains(store.to_str().unwrap()), "{run:#?}");
    assert!(!run.stderr.contains("panicked"), "{run:#?}");
}

#[test]
fn reads_page_filter_and_list() {
    let (_dir, store) = temp_store();
    let events = (1..=5)
        .map(|i| format!("{{\"type\":\"Deposited\",\"data\":{{\"amount\":{i}}}}}\n"))
        .collect::<String>();
    concord_with_stdin(&store, &["append", "account-1"], &events).assert_code(0);
    concord(
        &store,
        &[
            "append",
            "auction-1",
            "--type",
            "BidPlaced",
            "--data",
            r#"{"bidder":"bo","amount":9}"#,
            "--tags",
            "auction:1,bidder:bo",
        ],
    )
    .assert_code(0);
    concord(
        &store,
        &[
            "append",
            "account-2",
            "--type",
            "AccountClosed",
            "--data",
            "{}",
        ],
    )
    .assert_code(0);

    let backward = concord(
        &store,
        &["--json", "read", "account-1", "--backward", "--limit", "2"],
    )
    .json_lines();
    assert_eq!(versions(&backward), [5, 4]);
    let from = concord(&store, &["--json", "read", "account-1", "--from", "4"]).json_lines();
    assert_eq!(versions(&from), [4, 5]);

    let all = concord(&store, &["--json", "all", "--from", "5", "--limit", "2"]).json_lines();
    assert_eq!(
        all.iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [5, 6]
    );
    let accounts = concord(&store, &["--json", "all", "--category", "account"]).json_lines();
    assert_eq!(accounts.len(), 6);
    let closed = concord(
        &store,
        &["--json", "all", "--types", "AccountClosed,BidPlaced"],
    )
    .json_lines();
    assert_eq!(
        closed
            .iter()
            .map(|e| e["stream"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["auction-1", "account-2"]
    );
    let tagged = concord(&store, &["--json", "all", "--tags", "bidder:bo"]).json_lines();
    assert_eq!(tagged.len(), 1);
    let table = concord(&store, &["all", "--types", "BidPlaced"]);
    assert!(
        table.stdout.lines().next().unwrap().starts_with("STREAM"),
        "{table:#?}"
    );

    let streams = concord(&store, &["--json", "streams", "--prefix", "account-"]).json_lines();
    assert_eq!(
        streams,
        [
            serde_json::json!({"stream": "account-1", "version": 5, "last_position": 5}),
            serde_json::json!({"stream": "account-2", "version": 1, "last_position": 7}),
        ]
    );
    let after = concord(
        &store,
        &["--json", "streams", "--after", "account-1", "--limit", "1"],
    )
    .json_lines();
    assert_eq!(after[0]["stream"], "account-2");

    let missing = concord(&store, &["read", "account-9"]);
    assert!(
        missing.assert_code(1).stderr.contains("account-9"),
        "{missing:#?}"
    );
}

/// A running `concord tail`, its stdout lines arriving on a channel.
struct Tail {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(store: &str, args: &[&str]) -> Tail {
        let mut child = Command::new(BIN)
            .arg("--store")
            .arg(store)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Tail { child, lines }
    }

    fn next_event(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(DEADLINE)
            .expect("tail printed no event before the deadline");
        serde_json::from_str(&line).unwrap()
    }

    /// Sends SIGINT (what Ctrl-C sends) and returns the exit code.
    fn interrupt(mut self) -> i32 {
        let status = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status
                    .code()
                    .expect("tail died by a signal instead of exiting");
            }
            assert!(Instant::now() < deadline, "tail did not exit after SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store URL with a key prefix of its own in the Redis server this test binary shares.
/// `tail` needs a store that several processes can use at once: the embedded store is
/// opened by one process at a time, so a `tail` on it sees only what is stored.
fn shared_redis_store() -> String {
    let server = concord_testkit::redis::shared();
    format!(
        "{}?prefix={}",
        server.url(),
        concord_testkit::redis::unique_prefix()
    )
}

#[test]
fn tail_all_receives_an_event_appended_after_it_started_and_exits_0_on_ctrl_c() {
    let store = shared_redis_store();
    concord(
        &store,
        &[
            "append",
            "account-1",
            "--type",
            "AccountOpened",
            "--data",
            "{}",
        ],
    )
    .assert_code(0);
    let tail = Tail::start(&store, &["--json", "tail", "--all"]);
    // The stored event arrives first: the subscription has caught up.
    assert_eq!(tail.next_event()["position"], 1);
    concord(
        &store,
        &[
            "append",
            "auction-1",
            "--type",
            "AuctionOpened",
            "--data",
            r#"{"item":"vase","reserve":5}"#,
        ],
    )
    .assert_code(0);
    let live = tail.next_event();
    assert_eq!(
        (live["stream"].as_str(), live["position"].as_u64()),
        (Some("auction-1"), Some(2))
    );
    assert_eq!(live["data"]["item"], "vase");
    assert_eq!(tail.interrupt(), 0);
}

#[test]
fn tail_of_one_stream_follows_only_that_stream() {
    let store = shared_redis_store();
    concord(
        &store,
        &[
            "append",
            "account-1",
            "--type",
            "AccountOpened",
            "--data",
            "{}",
        ],
    )
    .assert_code(0);
    let tail = Tail::start(&store, &["--json", "tail", "account-1"]);
    assert_eq!(tail.next_event()["version"], 1);
    concord(
        &store,
        &[
            "append",
            "account-2",
            "--type",
            "AccountOpened",
            "--data",
            "{}",
        ],
    )
    .assert_code(0);
    concord(
        &store,
        &[
            "append",
            "account-1",
            "--type",
            "Deposited",
            "--data",
            r#"{"amount":1}"#,
        ],
    )
    .assert_code(0);
    let live = tail.next_event();
    assert_eq!(
        (live["stream"].as_str(), live["version"].as_u64()),
        (Some("account-1"), Some(2))
    );
    assert_eq!(tail.interrupt(), 0);
}

#[test]
fn tail_of_an_embedded_store_prints_what_is_stored_then_waits_until_interrupted() {
    let (_dir, store) = temp_store();
    let events = "{\"type\":\"A\",\"data\":1}\n{\"type\":\"B\",\"data\":2}\n";
    concord_with_stdin(&store, &["append", "doc-1"], events).assert_code(0);
    let tail = Tail::start(&store, &["--json", "tail", "--all", "--from", "2"]);
    assert_eq!(tail.next_event()["type"], "B");
    assert_eq!(tail.interrupt(), 0);
}

#[test]
fn help_documents_the_exit_codes_and_store_urls() {
    let help = finish(Command::new(BIN).arg("--help").output().unwrap());
    help.assert_code(0);
    for text in [
        "Exit codes:",
        "3  version conflict",
        "2  invalid input",
        "4  partial duplicate",
        "redis://",
        "CONCORD_STORE",
    ] {
        assert!(
            help.stdout.contains(text),
            "--help lacks {text:?}:\n{}",
            help.stdout
        );
    }
}

/// The walk-through against a real Redis: the same outcomes, and Redis's own `XRANGE`
/// shows the stream's entry ids are its versions.
#[test]
fn redis_walk_through_writes_entry_ids_that_are_versions() {
    let server = concord_testkit::redis::RedisServer::start();
    let store = server.url();
    conflict_walk_through(&store);
    for command in [
        &["--json", "all"][..],
        &["--json", "streams"],
        &["--json", "read", "account-42", "--backward"],
    ] {
        assert!(
            !concord(&store, command).assert_code(0).stdout.is_empty(),
            "{command:?}"
        );
    }

    let key = concord_redis::KeyLayout::new("concord")
        .unwrap()
        .stream(&"account-42".parse().unwrap());
    let mut redis = redis::Client::open(store.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let entries: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query(&mut redis)
        .unwrap();
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0"]);

    // A key prefix in the URL keeps a second store apart in the same Redis.
    let other = format!("{store}?prefix=other");
    concord(
        &other,
        &[
            "append",
            "account-42",
            "--type",
            "AccountOpened",
            "--data",
            "{}",
            "--expect",
            "no-stream",
        ],
    )
    .assert_code(0);
    assert_eq!(
        concord(&other, &["--json", "read", "account-42"])
            .json_lines()
            .len(),
        1
    );
}

#[test]
fn an_unreachable_redis_is_a_one_line_error() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let run = concord(&url, &["streams"]);
    run.assert_code(1);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot connect to redis at {url}")),
        "{run:#?}"
    );
}

#[test]
fn delete_metadata_and_scavenge_erase_a_customers_stream_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    concord(
        store,
        &[
            "append",
            "customer-42",
            "--type",
            "Registered",
            "--data",
            r#"{"email":"ann@example.com"}"#,
        ],
    )
    .assert_code(0);
    concord(store, &["append", "sensor-1", "--type", "T", "--data", "1"]).assert_code(0);
    concord(store, &["append", "sensor-1", "--type", "T", "--data", "2"]).assert_code(0);
    // A stale --expect is a conflict (exit 3) that deletes nothing.
    let stale = concord(store, &["delete", "customer-42", "--expect", "0"]);
    assert!(
        stale.assert_code(3).stderr.contains("--expect 1"),
        "{stale:#?}"
    );
    let deleted = concord(store, &["delete", "customer-42", "--expect", "1"]);
    assert!(
        deleted.assert_code(0).stdout.contains("deleted"),
        "{deleted:#?}"
    );
    let set = concord(
        store,
        &[
            "--json",
            "metadata",
            "sensor-1",
            "--max-count",
            "1",
            "--max-age",
            "30d",
        ],
    );
    assert_eq!(
        set.assert_code(0).json(),
        json!({"max_count": 1, "max_age_seconds": 2_592_000})
    );
    let shown = concord(
        store,
        &["--json", "metadata", "sensor-1", "--max-age", "none"],
    );
    assert_eq!(shown.assert_code(0).json(), json!({"max_count": 1}));
    let scavenged = concord(store, &["--json", "scavenge"]);
    assert_eq!(scavenged.assert_code(0).json()["events_removed"], 2);
    let read = concord(store, &["--json", "read", "sensor-1"]);
    let versions: Vec<u64> = read
        .assert_code(0)
        .json_lines()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![2]);
    let files: Vec<u8> = std::fs::read_dir(store)
        .unwrap()
        .flat_map(|f| std::fs::read(f.unwrap().path()).unwrap())
        .collect();
    assert!(
        !files.windows(15).any(|w| w == b"ann@example.com"),
        "the deleted customer's data is still in the store's files"
    );
    let bad = concord(store, &["metadata", "sensor-1", "--max-count", "0"]);
    bad.assert_code(2);
}
