//! Two `concord serve` processes on one PostgreSQL database, as two nodes behind a load
//! balancer: 32 HTTP writers split across them append to 4 streams with expected versions
//! (re-deciding on each 409 from the conflict's `actual_version`). Every version is granted
//! exactly once, positions are gap-free on both nodes, and an SSE subscriber on each node
//! receives every event once, in position order.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use common::{DEADLINE, json, start_with, terminate};
use serde_json::Value;

const WRITERS: usize = 32;
const STREAMS: usize = 4;
const APPENDS_PER_WRITER: usize = 5;

/// Reads an SSE subscription of `/subscribe/all?from=1` on `addr` until `count` events
/// arrived, and returns their positions in arrival order.
fn subscribe(addr: String, count: usize) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            stream,
            "GET /subscribe/all?from=1 HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        // Headers; the body is chunked.
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        let mut body: Vec<u8> = Vec::new();
        let mut positions = Vec::new();
        while positions.len() < count {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            chunk.truncate(size);
            body.extend(chunk);
            while let Some(end) = body.iter().position(|b| *b == b'\n') {
                let text: Vec<u8> = body.drain(..=end).collect();
                let text = String::from_utf8(text).unwrap();
                if let Some(data) = text.strip_prefix("data:") {
                    let event: Value = serde_json::from_str(data.trim()).unwrap();
                    positions.push(event["position"].as_u64().unwrap());
                }
            }
        }
        positions
    })
}

#[test]
fn two_servers_on_one_database_grant_each_version_once_and_stream_every_event_to_both() {
    let url = concord_testkit::postgres::shared().url_with_fresh_schema();
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<_> = (0..2)
        .map(|i| {
            let db = dir.path().join(format!("projections-{i}.sqlite"));
            start_with(
                std::path::Path::new(&url),
                &["--projections-db", db.to_str().unwrap()],
            )
        })
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
    let total = WRITERS * APPENDS_PER_WRITER;
    let subscribers: Vec<_> = addrs.iter().map(|a| subscribe(a.clone(), total)).collect();

    let granted: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let addr = addrs[w % 2].clone();
            let granted = Arc::clone(&granted);
            std::thread::spawn(move || {
                let stream = format!("account-{}", w % STREAMS);
                let mut expected = 0u64;
                let mut appended = 0;
                while appended < APPENDS_PER_WRITER {
                    let body = format!(
                        r#"{{"expected_version":{expected},"events":[{{"type":"Deposited","data":{{"writer":{w}}}}}]}}"#
                    );
                    let (status, reply) = json(&addr, "POST", &format!("/streams/{stream}"), &body);
                    match status {
                        201 => {
                            let version = reply["first_version"].as_u64().unwrap();
                            granted.lock().unwrap().push((stream.clone(), version));
                            expected = version;
                            appended += 1;
                        }
                        409 => expected = reply["actual_version"].as_u64().unwrap(),
                        other => panic!("append answered {other}: {reply}"),
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }

    // Every version of every stream granted exactly once.
    let granted = granted.lock().unwrap().clone();
    assert_eq!(granted.len(), total);
    let unique: HashSet<&(String, u64)> = granted.iter().collect();
    assert_eq!(unique.len(), total, "a version was granted twice");
    for s in 0..STREAMS {
        let stream = format!("account-{s}");
        let mut versions: Vec<u64> = granted
            .iter()
            .filter(|(st, _)| *st == stream)
            .map(|(_, v)| *v)
            .collect();
        versions.sort_unstable();
        let n = versions.len() as u64;
        assert_eq!(versions, (1..=n).collect::<Vec<_>>(), "{stream}");
    }
    // Positions gap-free, read from either node.
    for addr in &addrs {
        let mut positions = Vec::new();
        while positions.len() < total {
            let from = positions.len() + 1;
            let (status, page) = json(addr, "GET", &format!("/all?from={from}&limit=1000"), "");
            assert_eq!(status, 200, "{page}");
            let events = page["events"].as_array().unwrap();
            assert!(!events.is_empty(), "{page}");
            positions.extend(events.iter().map(|e| e["position"].as_u64().unwrap()));
        }
        assert_eq!(positions, (1..=total as u64).collect::<Vec<_>>());
    }
    // Each node's SSE subscriber saw every event once, in position order.
    for sub in subscribers {
        assert_eq!(sub.join().unwrap(), (1..=total as u64).collect::<Vec<_>>());
    }
    for (child, _) in nodes {
        assert_eq!(terminate(child), 0);
    }
}

/// The status of `projection` on the server at `addr` (`running`, `standby`, ...).
fn projection_status(addr: &str, projection: &str) -> String {
    let (status, body) = json(addr, "GET", &format!("/projections/{projection}"), "");
    assert_eq!(status, 200, "{body}");
    body["status"].as_str().unwrap().to_owned()
}

/// Waits until `projection` on `addr` is in one of `states`; returns the one it is in.
fn wait_for_status(addr: &str, projection: &str, states: &[&str]) -> String {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let now = projection_status(addr, projection);
        if states.contains(&now.as_str()) {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{projection} on {addr} stayed {now}, never one of {states:?}"
        );
        // The status is a poll of another process; nothing here can wake on it.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Opens `account` (or deposits into it) through `addr`; the position it got.
fn deposit(addr: &str, account: &str, first: bool) -> u64 {
    let event = if first {
        r#"{"type":"AccountOpened","data":{"owner":"ann","balance":100}}"#
    } else {
        r#"{"type":"Deposited","data":{"amount":5}}"#
    };
    let body = format!(r#"{{"expected_version":"any","events":[{event}]}}"#);
    let (status, reply) = json(addr, "POST", &format!("/streams/{account}"), &body);
    assert_eq!(status, 201, "{reply}");
    reply["last_position"].as_u64().unwrap()
}

/// `account`'s balance as `addr` answers it once it has processed `position`.
fn balance_at(addr: &str, account: &str, position: u64) -> u64 {
    let (status, row) = json(
        addr,
        "GET",
        &format!("/projections/balances/{account}?min_position={position}&wait_ms=10000"),
        "",
    );
    assert_eq!(status, 200, "{row}");
    assert!(row["checkpoint"].as_u64().unwrap() >= position, "{row}");
    row["row"]["balance"].as_u64().unwrap()
}

#[test]
fn servers_on_one_database_share_the_read_models_run_each_projection_once_and_take_over() {
    let url = concord_testkit::postgres::shared().url_with_fresh_schema();
    let mut nodes: Vec<_> = (0..2)
        .map(|_| start_with(std::path::Path::new(&url), &[]))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
    // One server runs each projection; the other follows it.
    let mut leader = None;
    for name in ["balances", "auctions", "documents"] {
        let states: Vec<String> = addrs
            .iter()
            .map(|a| wait_for_status(a, name, &["running", "standby"]))
            .collect();
        let running: Vec<usize> = (0..2).filter(|i| states[*i] == "running").collect();
        assert_eq!(running.len(), 1, "{name}: {states:?}");
        leader.get_or_insert(running[0]);
    }
    let leader = leader.unwrap();
    let follower = 1 - leader;

    // Written through either server, read on the other: read-your-writes on both.
    let p = deposit(&addrs[leader], "account-1", true);
    assert_eq!(balance_at(&addrs[follower], "account-1", p), 100);
    let p = deposit(&addrs[follower], "account-1", false);
    assert_eq!(balance_at(&addrs[leader], "account-1", p), 105);
    assert_eq!(balance_at(&addrs[follower], "account-1", p), 105);

    // The leader dies (SIGKILL: no goodbye): the follower takes the projections over.
    let (mut dead, _) = nodes.remove(leader);
    dead.kill().unwrap();
    dead.wait().unwrap();
    let survivor = &addrs[follower];
    let p = deposit(survivor, "account-1", false);
    assert_eq!(balance_at(survivor, "account-1", p), 110);
    for name in ["balances", "auctions", "documents"] {
        assert_eq!(wait_for_status(survivor, name, &["running"]), "running");
    }
    for (child, _) in nodes {
        assert_eq!(terminate(child), 0);
    }
}
