//! `concord copy`, the binary as a user runs it: an embedded store of 10 000 events (tags,
//! metadata, JSON and bytes payloads of several content types, an empty one) goes into
//! PostgreSQL, from there into Redis (the harness's throwaway servers) and back into a new
//! embedded store; every event of the last store equals the first's, field for field. A copy resumes after more
//! events were appended and after being killed, and refuses a target that holds other
//! events.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use concord_core::{
    AppendRequest, ContentType, EventStore, ExpectedVersion, Filter, Json, NewEvent, Payload,
    Position, RecordedEvent, StreamName, Tag,
};
use concord_embedded::EmbeddedStore;

const BIN: &str = env!("CARGO_BIN_EXE_concord");

fn copy(from: &str, to: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["copy", "--from", from, "--to", to])
        .args(extra)
        .output()
        .expect("concord runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_copied(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(out).contains("the same in both stores"),
        "{}",
        stdout(out)
    );
}

/// A copy that ended with equal digests, says `carried` on stdout and nothing on stderr.
fn assert_carried_quietly(out: &Output, carried: &str) {
    assert_copied(out);
    assert!(stdout(out).contains(carried), "{}", stdout(out));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Event `i` of the source: every fourth one carries bytes of another content type.
fn event(i: usize) -> NewEvent {
    let tags = vec![Tag::new(format!("owner:{}", i % 7)).unwrap()];
    let metadata = Json::from_value(&serde_json::json!({"by": "copy-test", "n": i}));
    match i % 4 {
        0 => NewEvent::new(
            concord_core::EventType::new("Scanned").unwrap(),
            Payload::new(
                ContentType::new("image/png").unwrap(),
                (0..=255u8)
                    .cycle()
                    .skip(i % 256)
                    .take(64)
                    .collect::<Vec<u8>>(),
            )
            .unwrap(),
        ),
        1 if i % 20 == 1 => NewEvent::new(
            concord_core::EventType::new("Emptied").unwrap(),
            Payload::new(
                ContentType::new("application/octet-stream").unwrap(),
                Vec::new(),
            )
            .unwrap(),
        ),
        _ => NewEvent::json(
            "Deposited",
            &serde_json::json!({"amount": i, "note": "é ✓"}),
        )
        .unwrap(),
    }
    .with_tags(tags)
    .with_metadata(metadata)
}

/// Appends `count` events from number `first` on, over 100 streams, 10 per append.
async fn write(dir: &Path, first: usize, count: usize) {
    let store = EmbeddedStore::open(dir).unwrap();
    for chunk in (first..first + count).collect::<Vec<_>>().chunks(10) {
        let stream = StreamName::new(format!("account-{}", chunk[0] / 10 % 100)).unwrap();
        let outcome = store
            .append(AppendRequest::new(
                stream,
                ExpectedVersion::Any,
                chunk.iter().map(|&i| event(i)).collect(),
            ))
            .await
            .unwrap();
        assert!(!outcome.is_duplicate());
    }
}

async fn everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut from = Position(1);
    loop {
        let page = store.read_all(from, &Filter::all(), 1000).await.unwrap();
        let caught_up = page.is_caught_up();
        events.extend(page.events);
        if caught_up {
            return events;
        }
        from = page.next_from;
    }
}

async fn embedded(dir: &Path) -> Vec<RecordedEvent> {
    everything(&EmbeddedStore::open(dir).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_goes_to_postgres_and_back_unchanged_and_a_copy_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, last) = (tmp.path().join("first"), tmp.path().join("last"));
    write(&first, 0, 10_000).await;
    let retained = StreamName::new("account-3").unwrap();
    let retention = concord_core::StreamMetadata {
        max_count: Some(5_000),
        ..concord_core::StreamMetadata::NONE
    };
    EmbeddedStore::open(&first)
        .unwrap()
        .set_stream_metadata(&retained, retention)
        .await
        .unwrap();
    let postgres = concord_testkit::postgres::shared().url_with_fresh_schema();
    let first_url = first.to_str().unwrap();
    let last_url = last.to_str().unwrap();

    let redis = format!(
        "{}?prefix=copy{}",
        concord_testkit::redis::shared().url(),
        std::process::id()
    );
    assert_copied(&copy(first_url, &postgres, &[]));
    assert_copied(&copy(&postgres, &redis, &["--batch", "333"]));
    assert_copied(&copy(&redis, last_url, &[]));
    let original = embedded(&first).await;
    assert_eq!(original.len(), 10_000);
    assert_eq!(embedded(&last).await, original);
    let copied = EmbeddedStore::open(&last)
        .unwrap()
        .stream_metadata(&retained)
        .await
        .unwrap();
    assert_eq!(copied, retention);

    // More events in the source: the next run copies those only, into both targets.
    write(&first, 10_000, 500).await;
    let out = copy(first_url, &postgres, &[]);
    assert_copied(&out);
    assert!(
        stdout(&out).contains("resumed and copied 500 events"),
        "{}",
        stdout(&out)
    );
    assert_copied(&copy(&postgres, last_url, &[]));
    assert_eq!(embedded(&last).await, embedded(&first).await);
}

/// Where the killed copy is held up: the position its import waits at.
const GATE: u64 = 1_501;

/// The copy is killed in the middle, always: another session holds an uncommitted row at
/// position `GATE` of the target (the log's primary key), so the import of the batch that
/// holds it waits for that session, and the copy can bring in the positions before it and
/// no more, however fast it runs. It is killed there, the row rolled back, and a second
/// run must resume after the first's last batch and end with the source's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_copy_goes_on_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    write(&source, 0, 3_000).await;
    let server = concord_testkit::postgres::shared();
    let schema = concord_testkit::postgres::unique_schema();
    let postgres = format!("{}?schema={schema}", server.url());
    // Opened first, so the target's tables exist for the gate's row.
    let target = concord_postgres::PostgresStore::connect(&postgres)
        .await
        .unwrap();
    let (gate, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    gate.batch_execute(&format!(
        r"BEGIN; INSERT INTO {schema}.concord_events
              (position, stream, category, version, event_id, event_type, data, metadata,
               tags, recorded_at)
          VALUES ({GATE}, 'gate-1', 'gate', 1, '00000000-0000-0000-0000-000000000001',
                  'Gate', '\x', '', '{{}}', 0)"
    ))
    .await
    .unwrap();
    // Batches of 5 from position 1: the one that waits starts at the gate.
    let mut child = Command::new(BIN)
        .args([
            "copy",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &postgres,
        ])
        .args(["--batch", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let before_gate = Position(GATE - 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while target.head().await.unwrap() < before_gate {
        assert!(
            Instant::now() < deadline,
            "the copy did not reach position {before_gate} in 60 s"
        );
        // Polled: the target's head is all the copy, another process, shows of its progress.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        target.head().await.unwrap(),
        before_gate,
        "the copy was to be held up at position {GATE} of 3000"
    );
    gate.batch_execute("ROLLBACK").await.unwrap();
    drop(gate);
    connection.await.unwrap().unwrap();
    // The killed copy's waiting import never sent its COMMIT: it ends with its session.
    assert_eq!(target.head().await.unwrap(), before_gate);

    let out = copy(source.to_str().unwrap(), &postgres, &[]);
    assert_copied(&out);
    assert!(
        stdout(&out).contains(&format!("resumed and copied {} events", 3_000 - (GATE - 1))),
        "{}",
        stdout(&out)
    );
    assert_eq!(everything(&target).await, embedded(&source).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_refuses_a_target_that_holds_other_events_and_a_missing_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, other) = (tmp.path().join("source"), tmp.path().join("other"));
    write(&source, 0, 20).await;
    write(&other, 100, 20).await;
    let before = embedded(&other).await;
    let out = copy(source.to_str().unwrap(), other.to_str().unwrap(), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a copy of the source"), "{stderr}");
    assert_eq!(embedded(&other).await, before);

    // A source that is not there is named, and no target is created.
    let missing = tmp.path().join("missing");
    let target = tmp.path().join("never-made");
    let out = copy(missing.to_str().unwrap(), target.to_str().unwrap(), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--from names no store to copy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());
}

/// Deletes and tombstones go along as pasts: the deleted stream's next version in the
/// target is the one after its last in the source, the tombstoned name is refused, and the
/// hidden events' positions stay holes, through PostgreSQL and back into an embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_readers_do_not_see_is_not_copied_and_deletes_and_tombstones_go_along() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    write(&source, 0, 30).await;
    let (buried, deleted) = (
        StreamName::new("account-0").unwrap(),
        StreamName::new("account-1").unwrap(),
    );
    {
        let store = EmbeddedStore::open(&source).unwrap();
        store.tombstone_stream(&buried, None).await.unwrap();
        store.delete_stream(&deleted, None).await.unwrap();
    }
    let postgres = concord_testkit::postgres::shared().url_with_fresh_schema();
    let out = copy(source.to_str().unwrap(), &postgres, &[]);
    assert_carried_quietly(
        &out,
        "the past of 3 streams (1 deleted, 1 tombstoned, 0 with retention settings)",
    );
    let target = concord_postgres::PostgresStore::connect(&postgres)
        .await
        .unwrap();
    let copied = everything(&target).await;
    assert_eq!(copied.len(), 10);
    assert!(copied.iter().all(|e| e.stream.as_str() == "account-2"));
    // The positions are the source's: the hidden events' ones are holes.
    assert_eq!(copied[0].position, Position(21));
    goes_on_as_the_source(&target, &buried, &deleted, 11, 31).await;
    // From PostgreSQL into an embedded store, the same.
    let into_embedded = tmp.path().join("embedded");
    let out = copy(&postgres, into_embedded.to_str().unwrap(), &[]);
    assert_copied(&out);
    let store = EmbeddedStore::open(&into_embedded).unwrap();
    assert_eq!(everything(&store).await.len(), 11);
    goes_on_as_the_source(&store, &buried, &deleted, 12, 32).await;
}

/// An append to `deleted` writes `version` at `position`, one to `buried` is refused.
async fn goes_on_as_the_source(
    store: &dyn EventStore,
    buried: &StreamName,
    deleted: &StreamName,
    version: u64,
    position: u64,
) {
    let refused = store
        .append(AppendRequest::new(
            buried.clone(),
            ExpectedVersion::Any,
            vec![event(1)],
        ))
        .await;
    assert!(
        matches!(refused, Err(concord_core::StoreError::StreamDeleted(_))),
        "{refused:?}"
    );
    let expected = if version == 11 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(concord_core::Version(version - 1))
    };
    let next = store
        .append(AppendRequest::new(
            deleted.clone(),
            expected,
            vec![event(2)],
        ))
        .await
        .unwrap();
    assert_eq!(
        (
            next.appended().first_version.get(),
            next.appended().first_position
        ),
        (version, Position(position))
    );
}

/// After a scavenge erased a deleted stream and a tombstoned one, and with hidden events at
/// the end of the log, the target still goes on as the source would: the copy carries each
/// stream's last version, the tombstone and retention settings of a stream without events,
/// and raises the target's head to the source's. A second run finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_scavenge_the_target_still_goes_on_as_the_source_would() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, target) = (tmp.path().join("source"), tmp.path().join("target"));
    write(&source, 0, 30).await;
    let (kept, buried, deleted, planned) = (
        StreamName::new("account-0").unwrap(),
        StreamName::new("account-1").unwrap(),
        StreamName::new("account-2").unwrap(),
        StreamName::new("account-9").unwrap(),
    );
    {
        let store = EmbeddedStore::open(&source).unwrap();
        store.tombstone_stream(&buried, None).await.unwrap();
        store.delete_stream(&deleted, None).await.unwrap();
        store
            .set_stream_metadata(
                &planned,
                concord_core::StreamMetadata {
                    max_count: Some(3),
                    ..concord_core::StreamMetadata::NONE
                },
            )
            .await
            .unwrap();
        assert_eq!(store.scavenge().await.unwrap().events_removed, 20);
    }
    let out = copy(source.to_str().unwrap(), target.to_str().unwrap(), &[]);
    assert_carried_quietly(
        &out,
        "the past of 4 streams (1 deleted, 1 tombstoned, 1 with retention settings)",
    );
    {
        let store = EmbeddedStore::open(&target).unwrap();
        let copied = everything(&store).await;
        assert_eq!(copied.len(), 10);
        assert!(copied.iter().all(|e| e.stream == kept));
        assert_eq!(store.head().await.unwrap(), Position(30));
        assert_eq!(
            store.stream_metadata(&planned).await.unwrap().max_count,
            Some(3)
        );
    }
    // Nothing new: a second run resumes at the raised head and copies nothing.
    let again = copy(source.to_str().unwrap(), target.to_str().unwrap(), &[]);
    assert_copied(&again);
    assert!(
        stdout(&again).contains("resumed and copied 0 events"),
        "{}",
        stdout(&again)
    );
    let store = EmbeddedStore::open(&target).unwrap();
    goes_on_as_the_source(&store, &buried, &deleted, 11, 31).await;
    // A copy with nothing hidden says nothing on stderr.
    let (clean, into) = (tmp.path().join("clean"), tmp.path().join("into"));
    write(&clean, 0, 20).await;
    let out = copy(clean.to_str().unwrap(), into.to_str().unwrap(), &[]);
    assert_copied(&out);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// From a server over HTTP, which cannot list the streams' pasts, the copy carries the
/// events and what it finds in the log, and says on stderr what it could not carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_server_over_http_the_copy_says_what_it_could_not_carry() {
    let tmp = tempfile::tempdir().unwrap();
    let (served, target) = (tmp.path().join("served"), tmp.path().join("target"));
    let (server, addr) = common::start_with(&served, &["--no-projections"]);
    for (stream, owner) in [("account-1", "ann"), ("account-2", "bob")] {
        let (status, body) = common::json(
            &addr,
            "POST",
            &format!("/streams/{stream}"),
            &format!(
                r#"{{"expected_version":"no_stream","events":[{{"type":"AccountOpened","data":{{"owner":"{owner}"}}}}]}}"#
            ),
        );
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = common::json(&addr, "DELETE", "/streams/account-2", "");
    assert!(status == 204 || status == 200, "{status} {body}");
    let out = copy(&format!("http://{addr}"), target.to_str().unwrap(), &[]);
    assert_eq!(common::terminate(server), 0);
    assert_copied(&out);
    assert!(!stdout(&out).contains("the past of"), "{}", stdout(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 stream(s) of the source have no event readers see")
            && stderr.contains("account-2;")
            && stderr.contains("the target's head is 1"),
        "{stderr}"
    );
    let copied = embedded(&target).await;
    assert_eq!(copied.len(), 1);
    assert_eq!(copied[0].stream.as_str(), "account-1");
}
