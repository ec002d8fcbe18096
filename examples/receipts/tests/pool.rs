//! The README's worker pool, run as a user would: `receipts pool` against a server, three
//! worker processes, the second one dying in the middle of an event. Every deposit gets
//! exactly one receipt file (the one the crashed worker sent and never acked was sent
//! again, under the same name), nothing is left for the group, and no withdrawal got one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use concord_client::ConcordClient;
use concord_core::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamName};
use concord_groups::GroupName;
use concord_server::ServerConfig;
use serde_json::json;

const ACCOUNTS: usize = 10;
const DEPOSITS_PER_ACCOUNT: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deposit_gets_one_receipt_although_a_worker_crashes_mid_event() {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> =
        Arc::new(concord_embedded::EmbeddedStore::open(data.path()).unwrap());
    let mut deposits = BTreeSet::new();
    for a in 0..ACCOUNTS {
        let stream = StreamName::new(format!("account-{a}")).unwrap();
        let event = |t: &str, data: serde_json::Value| NewEvent::json(t, &data).unwrap();
        let mut events = vec![event("AccountOpened", json!({"owner": "o", "balance": 0}))];
        for d in 0..DEPOSITS_PER_ACCOUNT {
            events.push(event("Deposited", json!({"amount": 10 * (d + 1)})));
        }
        events.push(event("Withdrawn", json!({"amount": 5})));
        let ids: Vec<_> = events.iter().map(|e| e.id).collect();
        let _ = store
            .append(AppendRequest::new(
                stream,
                ExpectedVersion::NoStream,
                events,
            ))
            .await
            .unwrap();
        deposits.extend(
            ids[1..=DEPOSITS_PER_ACCOUNT]
                .iter()
                .map(ToString::to_string),
        );
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(concord_server::serve(
        listener,
        Arc::clone(&store),
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let outbox = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_receipts"))
        .args(["--server", &base, "--outbox"])
        .arg(outbox.path())
        .args([
            "pool",
            "--crash-worker",
            "2",
            "--crash-after",
            "2",
            "--ack-timeout-ms",
            "1000",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("worker-2: crashing before the ack of"),
        "{stdout}"
    );
    assert!(stdout.contains("worker-2 crashed"), "{stdout}");
    assert!(
        stdout.contains("worker-1 finished") && stdout.contains("worker-3 finished"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(delivery 2)"),
        "the event the crashed worker held went out again: {stdout}"
    );

    let mut receipts = BTreeSet::new();
    for entry in std::fs::read_dir(outbox.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(id) = name.strip_suffix(".txt") {
            receipts.insert(id.to_owned());
        }
    }
    assert_eq!(
        receipts, deposits,
        "one receipt per deposit, none for anything else"
    );
    let client = ConcordClient::new(&base, None).unwrap();
    let status = client
        .group(&GroupName::new("receipts").unwrap())
        .await
        .unwrap();
    assert_eq!(status.info.acked, (ACCOUNTS * DEPOSITS_PER_ACCOUNT) as u64);
    assert_eq!(
        (
            status.info.pending,
            status.info.in_flight,
            status.info.parked
        ),
        (0, 0, 0)
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
