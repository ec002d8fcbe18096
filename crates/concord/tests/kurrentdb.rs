//! KurrentDB's official Rust client (`kurrentdb` from crates.io, unmodified, public API
//! only) against `concord serve`, on the embedded store and on Redis: an application
//! written for KurrentDB runs on Concord by changing its connection string.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::Duration;

use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision,
    DeletePersistentSubscriptionOptions, DeleteStreamOptions, Error, EventData,
    GetPersistentSubscriptionInfoOptions, ListPersistentSubscriptionsOptions, NakAction,
    PersistentSubscription, PersistentSubscriptionEvent, PersistentSubscriptionInfo,
    PersistentSubscriptionOptions, PersistentSubscriptionToAllOptions, ReadAllOptions,
    ReadStreamOptions, ReplayParkedMessagesOptions, ResolvedEvent, StreamMetadata,
    StreamMetadataResult, StreamPosition, StreamState, SubscribeToAllOptions,
    SubscribeToPersistentSubscriptionOptions, SubscribeToStreamOptions, SubscriptionFilter,
    TombstoneStreamOptions,
};

/// How long one client call may take before the test calls it hung.
const CALL: Duration = Duration::from_secs(20);

fn client(addr: &str) -> Client {
    let settings: ClientSettings = format!("esdb://{addr}?tls=false").parse().unwrap();
    Client::new(settings).unwrap()
}

async fn within<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CALL, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {CALL:?}"))
}

fn deposit(n: u64) -> EventData {
    EventData::json("Deposited", &serde_json::json!({ "amount": n })).unwrap()
}

async fn read_stream_all(
    client: &Client,
    stream: &str,
    options: &ReadStreamOptions,
) -> Vec<kurrentdb::ResolvedEvent> {
    let mut read = within("read_stream", client.read_stream(stream, options))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(event) = within("next", read.next()).await.unwrap() {
        events.push(event);
    }
    events
}

/// Every expected revision, the wrong-expected-version error with the actual revision,
/// reads of a stream and of `$all` both ways, a binary payload, and a catch-up
/// subscription that crosses into live events without a gap or a duplicate.
async fn the_official_client_runs_unchanged(addr: &str) {
    let client = client(addr);
    let stream = "account-1";
    let written = within(
        "append no_stream",
        client.append_to_stream(
            stream,
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            vec![deposit(1), deposit(2)],
        ),
    )
    .await
    .unwrap();
    // Revisions are 0-based: Concord's version 2 is revision 1.
    assert_eq!(written.next_expected_version, 1);
    let written = within(
        "append exact",
        client.append_to_stream(
            stream,
            &AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(1)),
            deposit(3),
        ),
    )
    .await
    .unwrap();
    assert_eq!(written.next_expected_version, 2);
    within(
        "append exists",
        client.append_to_stream(
            stream,
            &AppendToStreamOptions::default().stream_state(StreamState::StreamExists),
            deposit(4),
        ),
    )
    .await
    .unwrap();
    let any = within(
        "append any",
        client.append_to_stream(stream, &AppendToStreamOptions::default(), deposit(5)),
    )
    .await
    .unwrap();
    assert_eq!(any.next_expected_version, 4);

    // A writer that lost the race learns the actual revision.
    let stale = within(
        "stale append",
        client.append_to_stream(
            stream,
            &AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(1)),
            deposit(99),
        ),
    )
    .await;
    match stale {
        Err(Error::WrongExpectedVersion { current, .. }) => {
            assert_eq!(current, CurrentRevision::Current(4));
        }
        other => panic!("expected a wrong-expected-version error, got {other:?}"),
    }
    let missing = within(
        "exists on a new stream",
        client.append_to_stream(
            "account-none",
            &AppendToStreamOptions::default().stream_state(StreamState::StreamExists),
            deposit(1),
        ),
    )
    .await;
    assert!(
        matches!(
            missing,
            Err(Error::WrongExpectedVersion {
                current: CurrentRevision::NoStream,
                ..
            })
        ),
        "{missing:?}"
    );

    let forwards = read_stream_all(&client, stream, &ReadStreamOptions::default()).await;
    let forwards: Vec<_> = forwards.iter().map(|e| e.get_original_event()).collect();
    let revisions: Vec<u64> = forwards.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, [0, 1, 2, 3, 4]);
    let amounts: Vec<u64> = forwards
        .iter()
        .map(|e| {
            e.as_json::<serde_json::Value>().unwrap()["amount"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(amounts, [1, 2, 3, 4, 5]);
    let backwards = read_stream_all(
        &client,
        stream,
        &ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(2),
    )
    .await;
    let backwards: Vec<_> = backwards.iter().map(|e| e.get_original_event()).collect();
    let revisions: Vec<u64> = backwards.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, [4, 3]);
    let absent = match within(
        "read a missing stream",
        client.read_stream("account-absent", &ReadStreamOptions::default()),
    )
    .await
    {
        Ok(mut read) => within("next", read.next()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(matches!(absent, Err(Error::ResourceNotFound)), "{absent:?}");

    // Bytes with their content type survive byte for byte.
    let png: Vec<u8> = vec![0x89, b'P', b'N', b'G', 0, 1, 2, 255];
    within(
        "append binary",
        client.append_to_stream(
            "image-1",
            &AppendToStreamOptions::default(),
            EventData::binary("Uploaded", png.clone().into()),
        ),
    )
    .await
    .unwrap();
    let images = read_stream_all(&client, "image-1", &ReadStreamOptions::default()).await;
    let images: Vec<_> = images.iter().map(|e| e.get_original_event()).collect();
    assert_eq!(images.len(), 1);
    assert_eq!(&images[0].data[..], &png[..]);
    assert!(!images[0].is_json);

    // $all forwards holds every event in position order; backwards the reverse.
    let mut all = within("read_all", client.read_all(&ReadAllOptions::default()))
        .await
        .unwrap();
    let mut positions = Vec::new();
    let mut streams = Vec::new();
    while let Some(event) = within("next", all.next()).await.unwrap() {
        let event = event.get_original_event();
        positions.push(event.position.commit);
        streams.push(event.stream_id().to_owned());
    }
    assert_eq!(streams.len(), 6, "{streams:?}");
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let mut all = within(
        "read_all backwards",
        client.read_all(
            &ReadAllOptions::default()
                .backwards()
                .position(StreamPosition::End)
                .max_count(1),
        ),
    )
    .await
    .unwrap();
    let last = within("next", all.next()).await.unwrap().unwrap();
    assert_eq!(last.get_original_event().stream_id(), "image-1");

    // A catch-up subscription from the start, then live events: each once, in order.
    let mut subscription = within(
        "subscribe",
        client.subscribe_to_stream(
            stream,
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        ),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event = within("catch-up event", subscription.next()).await.unwrap();
        seen.push(event.get_original_event().revision);
    }
    within(
        "live append",
        client.append_to_stream(
            stream,
            &AppendToStreamOptions::default(),
            vec![deposit(6), deposit(7)],
        ),
    )
    .await
    .unwrap();
    while seen.len() < 7 {
        let event = within("live event", subscription.next()).await.unwrap();
        seen.push(event.get_original_event().revision);
    }
    assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6]);

    // A filtered $all subscription sees only the matching event types.
    let mut uploads = within(
        "subscribe_to_all",
        client.subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(StreamPosition::Start)
                .filter(SubscriptionFilter::on_event_type().add_prefix("Upload")),
        ),
    )
    .await;
    within(
        "append a second upload",
        client.append_to_stream(
            "image-2",
            &AppendToStreamOptions::default(),
            EventData::binary("Uploaded", vec![1u8].into()),
        ),
    )
    .await
    .unwrap();
    let mut uploaded = Vec::new();
    while uploaded.len() < 2 {
        let event = within("filtered event", uploads.next()).await.unwrap();
        let event = event.get_original_event();
        assert_eq!(event.event_type, "Uploaded");
        uploaded.push(event.stream_id().to_owned());
    }
    assert_eq!(uploaded, ["image-1", "image-2"]);

    // A soft delete hides the stream; an append recreates it, revisions continuing.
    within(
        "delete",
        client.delete_stream(stream, &DeleteStreamOptions::default()),
    )
    .await
    .unwrap();
    let deleted = match within(
        "read deleted",
        client.read_stream(stream, &ReadStreamOptions::default()),
    )
    .await
    {
        Ok(mut read) => within("next", read.next()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(deleted, Err(Error::ResourceNotFound)),
        "{deleted:?}"
    );
    let recreated = within(
        "append after delete",
        client.append_to_stream(stream, &AppendToStreamOptions::default(), deposit(8)),
    )
    .await
    .unwrap();
    assert_eq!(recreated.next_expected_version, 7);
    let after = read_stream_all(&client, stream, &ReadStreamOptions::default()).await;
    let after: Vec<u64> = after
        .iter()
        .map(|e| e.get_original_event().revision)
        .collect();
    assert_eq!(after, [7]);

    // A tombstone refuses every later read and append with the stream-deleted error.
    within(
        "tombstone",
        client.tombstone_stream("image-2", &TombstoneStreamOptions::default()),
    )
    .await
    .unwrap();
    let read_tombstoned = match within(
        "read tombstoned",
        client.read_stream("image-2", &ReadStreamOptions::default()),
    )
    .await
    {
        Ok(mut read) => within("next", read.next()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(read_tombstoned, Err(Error::ResourceDeleted)),
        "{read_tombstoned:?}"
    );
    let append_tombstoned = within(
        "append tombstoned",
        client.append_to_stream("image-2", &AppendToStreamOptions::default(), deposit(1)),
    )
    .await;
    assert!(
        matches!(append_tombstoned, Err(Error::ResourceDeleted)),
        "{append_tombstoned:?}"
    );
    let missing = within(
        "delete a missing stream",
        client.delete_stream("account-never", &DeleteStreamOptions::default()),
    )
    .await;
    assert!(
        matches!(missing, Err(Error::ResourceNotFound)),
        "{missing:?}"
    );

    // As in KurrentDB, a stream that never existed may be tombstoned, expecting any or no
    // stream, and is then deleted for good; expecting it to exist, it is not found.
    for (never, state) in [
        ("account-never-any", StreamState::Any),
        ("account-never-none", StreamState::NoStream),
    ] {
        within(
            "tombstone a stream that never existed",
            client.tombstone_stream(
                never,
                &TombstoneStreamOptions::default().stream_state(state),
            ),
        )
        .await
        .unwrap();
        let append = within(
            "append to it",
            client.append_to_stream(never, &AppendToStreamOptions::default(), deposit(1)),
        )
        .await;
        assert!(matches!(append, Err(Error::ResourceDeleted)), "{append:?}");
    }
    let exists = within(
        "tombstone a missing stream expected to exist",
        client.tombstone_stream(
            "account-never-exists",
            &TombstoneStreamOptions::default().stream_state(StreamState::StreamExists),
        ),
    )
    .await;
    assert!(matches!(exists, Err(Error::ResourceNotFound)), "{exists:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_runs_unchanged_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = common::start(&dir.path().join("data"));
    the_official_client_runs_unchanged(&addr).await;
    assert_eq!(common::terminate(child), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_runs_unchanged_on_redis() {
    let redis = concord_testkit::redis::RedisServer::start();
    let url = redis.url();
    let (child, addr) = common::start(std::path::Path::new(&url));
    the_official_client_runs_unchanged(&addr).await;
    assert_eq!(common::terminate(child), 0);
}

/// The amounts of `deposit` events, in the order read.
fn amounts(events: &[ResolvedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            let data: serde_json::Value =
                serde_json::from_slice(&e.get_original_event().data).unwrap();
            data["amount"].as_u64().unwrap()
        })
        .collect()
}

/// One `BatchAppend` call shared by many tasks, as the client's `batch_append` is meant to
/// be used: appends to different streams all land with their own revisions, appends sent
/// to one stream without waiting are written in the order they were sent, and a stale
/// revision is the wrong-expected-version status and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_batch_append_call_writes_many_streams_and_keeps_one_streams_order() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = common::start(&dir.path().join("data"));
    let client = client(&addr);
    let batcher = std::sync::Arc::new(
        within(
            "batch_append",
            client.batch_append(&kurrentdb::BatchAppendOptions::default()),
        )
        .await
        .unwrap(),
    );

    let writers: Vec<_> = (0..16u64)
        .map(|w| {
            let batcher = std::sync::Arc::clone(&batcher);
            tokio::spawn(async move {
                let stream = format!("account-{w}");
                let mut state = StreamState::NoStream;
                for n in 0..5 {
                    let written = within(
                        "batch append_to_stream",
                        batcher.append_to_stream(&stream, state, vec![deposit(w * 100 + n)]),
                    )
                    .await
                    .unwrap();
                    assert_eq!(written.current_revision(), Some(n), "{stream}");
                    state = StreamState::StreamRevision(n);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    for w in 0..16u64 {
        let events = read_stream_all(
            &client,
            &format!("account-{w}"),
            &ReadStreamOptions::default(),
        )
        .await;
        assert_eq!(
            amounts(&events),
            (0..5).map(|n| w * 100 + n).collect::<Vec<_>>()
        );
    }

    // Sent one after another before any answer: the client sends each request when its
    // future is first polled, and join_all polls them in order.
    let sent =
        (0..10u64).map(|n| batcher.append_to_stream("ledger", StreamState::Any, vec![deposit(n)]));
    for written in within("ten appends to one stream", futures::future::join_all(sent)).await {
        written.unwrap();
    }
    let ledger = read_stream_all(&client, "ledger", &ReadStreamOptions::default()).await;
    assert_eq!(amounts(&ledger), (0..10).collect::<Vec<_>>());

    let stale = within(
        "stale batch append",
        batcher.append_to_stream(
            "account-0",
            StreamState::StreamRevision(1),
            vec![deposit(999)],
        ),
    )
    .await;
    assert!(
        matches!(&stale, Err(Error::Grpc { code, message })
            if format!("{code:?}") == "AlreadyExists" && message == "WrongExpectedVersion"),
        "{stale:?}"
    );
    let account = read_stream_all(&client, "account-0", &ReadStreamOptions::default()).await;
    assert_eq!(account.len(), 5);
    assert_eq!(common::terminate(child), 0);
}

/// Events written over gRPC read back over HTTP byte for byte, and the other way round;
/// `/metrics` counts the appends of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_between_grpc_and_http_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = common::start(&dir.path().join("data"));
    let client = client(&addr);
    let bytes = vec![0u8, 159, 146, 150, 255];
    within(
        "append binary",
        client.append_to_stream(
            "blob-1",
            &AppendToStreamOptions::default(),
            EventData::binary("Stored", bytes.clone().into()),
        ),
    )
    .await
    .unwrap();
    let (status, page) = common::json(&addr, "GET", "/streams/blob-1", "");
    assert_eq!(status, 200, "{page}");
    use base64::Engine as _;
    let over_http = base64::engine::general_purpose::STANDARD
        .decode(page["events"][0]["data_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(over_http, bytes);

    let body = r#"{"events": [{"type": "Noted", "data": {"text": "ünïcode", "n": 1.5}}]}"#;
    assert_eq!(common::json(&addr, "POST", "/streams/note-1", body).0, 201);
    let notes = read_stream_all(&client, "note-1", &ReadStreamOptions::default()).await;
    let notes: Vec<_> = notes.iter().map(|e| e.get_original_event()).collect();
    assert!(notes[0].is_json);
    let over_grpc: serde_json::Value = serde_json::from_slice(&notes[0].data).unwrap();
    assert_eq!(over_grpc, serde_json::json!({"text": "ünïcode", "n": 1.5}));

    // `/metrics` counts the append made over gRPC beside the one made over HTTP.
    let metrics = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    };
    for line in [
        "concord_appends_total{store=\"embedded\"} 2",
        "concord_events_appended_total{store=\"embedded\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    assert_eq!(common::terminate(child), 0);
}

async fn stream_metadata(client: &Client, stream: &str) -> StreamMetadataResult {
    within(
        "get_stream_metadata",
        client.get_stream_metadata(stream, &ReadStreamOptions::default().backwards()),
    )
    .await
    .unwrap()
}

/// The clients' stream metadata (`set_stream_metadata` appends a `$metadata` event to
/// `$$name`, `get_stream_metadata` reads it back) is Concord's retention settings: set over
/// gRPC, got back with the metadata stream's revision 0 (custom keys dropped), seen over
/// HTTP, and in force on reads of the stream; the metadata stream's expected revision is
/// checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_metadata_set_over_grpc_is_got_back_and_limits_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = common::start(&dir.path().join("data"));
    let client = client(&addr);
    let stream = "order-1";
    assert!(stream_metadata(&client, stream).await.is_not_found());
    within(
        "append five",
        client.append_to_stream(
            stream,
            &AppendToStreamOptions::default(),
            (1..=5).map(deposit).collect::<Vec<_>>(),
        ),
    )
    .await
    .unwrap();

    let settings = StreamMetadata::builder()
        .max_count(2)
        .truncate_before(1)
        .insert_custom_property("owner", "billing")
        .build();
    let written = within(
        "set_stream_metadata",
        client.set_stream_metadata(
            stream,
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            &settings,
        ),
    )
    .await
    .unwrap();
    assert_eq!(written.next_expected_version, 0);

    let StreamMetadataResult::Success(got) = stream_metadata(&client, stream).await else {
        panic!("the metadata set is not found");
    };
    assert_eq!(got.stream_name(), "$$order-1");
    assert_eq!(got.version(), 0);
    assert_eq!(got.metadata().max_count, Some(2));
    assert_eq!(got.metadata().truncate_before, Some(1));
    assert!(got.metadata().custom_properties.is_empty());
    // Revision 1 is version 2 in Concord's own terms.
    let (status, over_http) = common::json(&addr, "GET", "/streams/order-1/metadata", "");
    assert_eq!(status, 200, "{over_http}");
    assert_eq!(
        over_http,
        serde_json::json!({"max_count": 2, "truncate_before": 2})
    );

    // max count 2 of 5 events: revisions 3 and 4 are left, both ways.
    let forwards = read_stream_all(&client, stream, &ReadStreamOptions::default()).await;
    let revisions: Vec<u64> = forwards
        .iter()
        .map(|e| e.get_original_event().revision)
        .collect();
    assert_eq!(revisions, vec![3, 4]);
    let backwards = read_stream_all(
        &client,
        stream,
        &ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End),
    )
    .await;
    assert_eq!(backwards.len(), 2);

    // The metadata stream holds one event: a writer expecting none loses, one expecting
    // revision 0 wins.
    let stale = within(
        "set_stream_metadata expecting no stream",
        client.set_stream_metadata(
            stream,
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            &StreamMetadata::builder().max_count(1).build(),
        ),
    )
    .await;
    assert!(
        matches!(
            stale,
            Err(Error::WrongExpectedVersion {
                current: CurrentRevision::Current(0),
                ..
            })
        ),
        "{stale:?}"
    );
    within(
        "set_stream_metadata expecting revision 0",
        client.set_stream_metadata(
            stream,
            &AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(0)),
            &StreamMetadata::builder().max_count(1).build(),
        ),
    )
    .await
    .unwrap();
    let last = read_stream_all(&client, stream, &ReadStreamOptions::default()).await;
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].get_original_event().revision, 4);

    // A tombstoned stream's metadata is deleted too.
    within(
        "tombstone",
        client.tombstone_stream(stream, &TombstoneStreamOptions::default()),
    )
    .await
    .unwrap();
    assert!(stream_metadata(&client, stream).await.is_deleted());
    let refused = within(
        "set_stream_metadata of a tombstoned stream",
        client.set_stream_metadata(
            stream,
            &AppendToStreamOptions::default(),
            &StreamMetadata::builder().max_count(3).build(),
        ),
    )
    .await;
    assert!(
        matches!(refused, Err(Error::ResourceDeleted)),
        "{refused:?}"
    );
    assert_eq!(common::terminate(child), 0);
}

/// Bad input over gRPC gets the protocol's error status, never a crash or a hang, and the
/// server goes on answering: an event over the size limit, a stream name Concord refuses,
/// a filter whose regex does not compile. (A malformed UUID cannot be sent through the
/// client; `concord-grpc`'s `a_malformed_uuid_is_invalid` covers it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_grpc_is_an_error_status_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) =
        common::start_with(&dir.path().join("data"), &["--event-bytes-max", "1024"]);
    let client = client(&addr);

    let big = EventData::binary("Uploaded", vec![7u8; 4096].into());
    let too_large = within(
        "oversized append",
        client.append_to_stream("image-1", &AppendToStreamOptions::default(), big),
    )
    .await;
    match too_large {
        Err(Error::Grpc { code, message }) => {
            assert_eq!(format!("{code:?}"), "InvalidArgument", "{message}");
            assert!(
                message.contains("Maximum Append Size of 1024 Exceeded"),
                "{message}"
            );
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }

    let bad_name = within(
        "append to a refused name",
        client.append_to_stream(
            "bad\u{1}name",
            &AppendToStreamOptions::default(),
            deposit(1),
        ),
    )
    .await;
    assert!(
        matches!(&bad_name, Err(Error::Grpc { code, .. }) if format!("{code:?}") == "InvalidArgument"),
        "{bad_name:?}"
    );

    let bad_regex = match within(
        "read_all with a broken regex",
        client.read_all(
            &ReadAllOptions::default()
                .filter(SubscriptionFilter::on_event_type().regex("(unclosed")),
        ),
    )
    .await
    {
        Ok(mut read) => within("next", read.next()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(&bad_regex, Err(Error::Grpc { code, .. }) if format!("{code:?}") == "InvalidArgument"),
        "{bad_regex:?}"
    );

    // Nothing was written, and the server still appends.
    let (status, _) = common::json(&addr, "GET", "/streams/image-1", "");
    assert_eq!(status, 404);
    let ok = within(
        "append after bad input",
        client.append_to_stream("account-1", &AppendToStreamOptions::default(), deposit(1)),
    )
    .await
    .unwrap();
    assert_eq!(ok.next_expected_version, 0);
    common::assert_healthy(&addr);
    assert_eq!(common::terminate(child), 0);
}

/// The next event a persistent subscription hands out (its confirmation skipped), with its
/// retry count.
async fn next_delivery(sub: &mut PersistentSubscription) -> (u64, usize, ResolvedEvent) {
    loop {
        match within("next persistent event", sub.next_subscription_event())
            .await
            .unwrap()
        {
            PersistentSubscriptionEvent::EventAppeared { retry_count, event } => {
                return (event.get_original_event().revision, retry_count, event);
            }
            PersistentSubscriptionEvent::Confirmed(_) => {}
        }
    }
}

/// Asks for a subscription's info until `done` holds for it (acks travel on the reader's
/// stream, so the group sees them a moment after they are sent), with a deadline.
async fn info_until(
    client: &Client,
    stream: &str,
    group: &str,
    done: impl Fn(&PersistentSubscriptionInfo<u64>) -> bool,
) -> PersistentSubscriptionInfo<u64> {
    let deadline = tokio::time::Instant::now() + CALL;
    loop {
        let info = within(
            "get info",
            client.get_persistent_subscription_info(
                stream,
                group,
                &GetPersistentSubscriptionInfoOptions::default(),
            ),
        )
        .await
        .unwrap();
        if done(&info) {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription's info never got there: {info:?}"
        );
        tokio::task::yield_now().await;
    }
}

/// A persistent subscription, written for KurrentDB, runs on Concord's consumer groups: the
/// events arrive, acks are remembered, a parked event waits for a replay and comes back, a
/// retried one comes back with its retry count, a second subscriber takes what the first
/// has no room for, the group is visible over HTTP as `order-1::workers`, and a deleted
/// subscription is gone.
async fn a_persistent_subscription_shares_acks_parks_and_replays_events(addr: &str) {
    let client = client(addr);
    let (stream, group) = ("order-1", "workers");
    within(
        "append",
        client.append_to_stream(
            stream,
            &AppendToStreamOptions::default(),
            (1..=5).map(deposit).collect::<Vec<_>>(),
        ),
    )
    .await
    .unwrap();
    let settings = PersistentSubscriptionOptions::default()
        .start_from(StreamPosition::Start)
        .max_retry_count(2)
        .message_timeout(Duration::from_secs(30));
    within(
        "create",
        client.create_persistent_subscription(stream, group, &settings),
    )
    .await
    .unwrap();
    let again = within(
        "create again",
        client.create_persistent_subscription(stream, group, &settings),
    )
    .await;
    assert!(
        matches!(again, Err(Error::ResourceAlreadyExists)),
        "{again:?}"
    );

    let reading = SubscribeToPersistentSubscriptionOptions::default().buffer_size(10);
    let mut first = within(
        "subscribe",
        client.subscribe_to_persistent_subscription(stream, group, &reading),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (revision, retries, event) = next_delivery(&mut first).await;
        assert_eq!(retries, 0);
        seen.push(revision);
        match revision {
            3 => first.nack(&event, NakAction::Park, "poison").await.unwrap(),
            4 => first.nack(&event, NakAction::Retry, "later").await.unwrap(),
            _ => first.ack(&event).await.unwrap(),
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3, 4]);
    let (revision, retries, event) = next_delivery(&mut first).await;
    assert_eq!((revision, retries), (4, 1), "a retried event comes back");
    first.ack(&event).await.unwrap();

    let info = info_until(&client, stream, group, |i| {
        i.stats.parked_message_count == 1 && i.stats.total_items == 4
    })
    .await;
    assert_eq!(
        (info.event_source.as_str(), info.group_name.as_str()),
        (stream, group)
    );
    let setts = info.settings.as_ref().unwrap();
    assert_eq!(setts.max_retry_count, 2);
    assert_eq!(setts.message_timeout, Duration::from_secs(30));
    assert_eq!(setts.start_from, StreamPosition::Start);
    assert_eq!(info.connections.len(), 1);
    let (status, over_http) = common::json(addr, "GET", "/groups/order-1::workers", "");
    assert_eq!(status, 200, "{over_http}");
    assert_eq!(over_http["parked"], 1, "{over_http}");

    let all = within(
        "list all",
        client.list_all_persistent_subscriptions(&ListPersistentSubscriptionsOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].group_name, group);
    let for_stream = within(
        "list for the stream",
        client.list_persistent_subscriptions_for_stream(
            stream,
            &ListPersistentSubscriptionsOptions::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(for_stream.len(), 1);
    let for_other = within(
        "list for another stream",
        client.list_persistent_subscriptions_for_stream(
            "order-2",
            &ListPersistentSubscriptionsOptions::default(),
        ),
    )
    .await
    .unwrap();
    assert!(for_other.is_empty(), "{for_other:?}");

    within(
        "replay parked",
        client.replay_parked_messages(stream, group, &ReplayParkedMessagesOptions::default()),
    )
    .await
    .unwrap();
    let (revision, retries, event) = next_delivery(&mut first).await;
    assert_eq!(
        (revision, retries),
        (3, 0),
        "the parked event comes back afresh"
    );
    first.ack(&event).await.unwrap();
    info_until(&client, stream, group, |i| {
        i.stats.parked_message_count == 0 && i.stats.total_items == 5
    })
    .await;
    drop(first);

    // A reader with room for two holds two; the next reader gets the rest.
    within(
        "append more",
        client.append_to_stream(
            stream,
            &AppendToStreamOptions::default(),
            (6..=11).map(deposit).collect::<Vec<_>>(),
        ),
    )
    .await
    .unwrap();
    let mut small = within(
        "subscribe with room for two",
        client.subscribe_to_persistent_subscription(
            stream,
            group,
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(2),
        ),
    )
    .await
    .unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(next_delivery(&mut small).await);
    }
    let mut second = within(
        "subscribe a second reader",
        client.subscribe_to_persistent_subscription(stream, group, &reading),
    )
    .await
    .unwrap();
    let mut rest = Vec::new();
    for _ in 0..4 {
        rest.push(next_delivery(&mut second).await);
    }
    let mut shared: Vec<u64> = held.iter().chain(&rest).map(|(r, _, _)| *r).collect();
    shared.sort_unstable();
    assert_eq!(shared, [5, 6, 7, 8, 9, 10], "each event went to one reader");
    let info = info_until(&client, stream, group, |i| i.connections.len() == 2).await;
    assert_eq!(info.stats.total_in_flight_messages, 6);
    for (_, _, event) in &held {
        small.ack(event).await.unwrap();
    }
    for (_, _, event) in &rest {
        second.ack(event).await.unwrap();
    }
    info_until(&client, stream, group, |i| {
        i.stats.total_items == 11 && i.stats.total_in_flight_messages == 0
    })
    .await;

    within(
        "delete",
        client.delete_persistent_subscription(
            stream,
            group,
            &DeletePersistentSubscriptionOptions::default(),
        ),
    )
    .await
    .unwrap();
    let gone = within(
        "info after delete",
        client.get_persistent_subscription_info(
            stream,
            group,
            &GetPersistentSubscriptionInfoOptions::default(),
        ),
    )
    .await;
    assert!(matches!(gone, Err(Error::ResourceNotFound)), "{gone:?}");
    // A reader of a deleted subscription is told it was dropped.
    let dropped = within("next after delete", second.next_subscription_event()).await;
    assert!(
        matches!(dropped, Err(Error::IllegalStateError(_))),
        "{dropped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_subscription_shares_acks_parks_and_replays_events_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = common::start(&dir.path().join("data"));
    a_persistent_subscription_shares_acks_parks_and_replays_events(&addr).await;
    assert_eq!(common::terminate(child), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_subscription_shares_acks_parks_and_replays_events_on_redis() {
    let redis = concord_testkit::redis::RedisServer::start();
    let url = redis.url();
    let (child, addr) = common::start(std::path::Path::new(&url));
    a_persistent_subscription_shares_acks_parks_and_replays_events(&addr).await;
    assert_eq!(common::terminate(child), 0);
}

/// A persistent subscription to `$all` with a stream-prefix filter is a group over the
/// global log in that category; a server with a reader open still stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_subscription_to_all_reads_the_filtered_log() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = common::start(&dir.path().join("data"));
    let client = client(&addr);
    for stream in ["invoice-1", "order-1", "invoice-2"] {
        within(
            "append",
            client.append_to_stream(stream, &AppendToStreamOptions::default(), deposit(1)),
        )
        .await
        .unwrap();
    }
    let settings = PersistentSubscriptionToAllOptions::default()
        .start_from(StreamPosition::Start)
        .filter(SubscriptionFilter::on_stream_name().add_prefix("invoice-"));
    within(
        "create to $all",
        client.create_persistent_subscription_to_all("billing", &settings),
    )
    .await
    .unwrap();
    let mut sub = within(
        "subscribe to $all",
        client.subscribe_to_persistent_subscription_to_all(
            "billing",
            &SubscribeToPersistentSubscriptionOptions::default(),
        ),
    )
    .await
    .unwrap();
    let mut streams = Vec::new();
    for _ in 0..2 {
        let (_, _, event) = next_delivery(&mut sub).await;
        streams.push(event.get_original_event().stream_id().to_owned());
        sub.ack(&event).await.unwrap();
    }
    streams.sort();
    assert_eq!(streams, ["invoice-1", "invoice-2"]);
    let listed = within(
        "list for $all",
        client.list_persistent_subscriptions_to_all(&ListPersistentSubscriptionsOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].event_source, "$all");
    // The server stops on SIGTERM with the reader still open, and the reader is told.
    assert_eq!(common::terminate(child), 0);
    let ended = within("next after shutdown", sub.next_subscription_event()).await;
    assert!(ended.is_err(), "{ended:?}");
}

/// Asking about a persistent subscription that does not exist is KurrentDB's NOT_FOUND
/// (the client's ResourceNotFound) for every call; a filter a group cannot answer and a
/// stream name that could be confused with another subscription's are INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_persistent_subscription_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = common::start(&dir.path().join("data"));
    let client = client(&addr);
    let (stream, group) = ("order-1", "nobody");
    let info = within(
        "info",
        client.get_persistent_subscription_info(
            stream,
            group,
            &GetPersistentSubscriptionInfoOptions::default(),
        ),
    )
    .await;
    assert!(matches!(info, Err(Error::ResourceNotFound)), "{info:?}");
    let read = within(
        "subscribe",
        client.subscribe_to_persistent_subscription(
            stream,
            group,
            &SubscribeToPersistentSubscriptionOptions::default(),
        ),
    )
    .await;
    let read = match read {
        Ok(mut sub) => within("next", sub.next_subscription_event())
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(matches!(read, Err(Error::ResourceNotFound)), "{read:?}");
    let update = within(
        "update",
        client.update_persistent_subscription(
            stream,
            group,
            &PersistentSubscriptionOptions::default(),
        ),
    )
    .await;
    assert!(matches!(update, Err(Error::ResourceNotFound)), "{update:?}");
    let replay = within(
        "replay",
        client.replay_parked_messages(stream, group, &ReplayParkedMessagesOptions::default()),
    )
    .await;
    assert!(matches!(replay, Err(Error::ResourceNotFound)), "{replay:?}");
    let delete = within(
        "delete",
        client.delete_persistent_subscription(
            stream,
            group,
            &DeletePersistentSubscriptionOptions::default(),
        ),
    )
    .await;
    assert!(matches!(delete, Err(Error::ResourceNotFound)), "{delete:?}");

    let regex = within(
        "create to $all with a regex",
        client.create_persistent_subscription_to_all(
            "by-regex",
            &PersistentSubscriptionToAllOptions::default()
                .filter(SubscriptionFilter::on_stream_name().regex("^inv.*")),
        ),
    )
    .await;
    assert!(
        matches!(&regex, Err(Error::Grpc { code, .. }) if format!("{code:?}") == "InvalidArgument"),
        "{regex:?}"
    );
    let separator = within(
        "create on a stream named with ::",
        client.create_persistent_subscription(
            "a::b",
            "c",
            &PersistentSubscriptionOptions::default(),
        ),
    )
    .await;
    assert!(
        matches!(&separator, Err(Error::Grpc { code, .. }) if format!("{code:?}") == "InvalidArgument"),
        "{separator:?}"
    );
    common::assert_healthy(&addr);
    assert_eq!(common::terminate(child), 0);
}

/// What a reader held and had not acked goes to the next reader at once, well before the
/// ack timeout, when the reader leaves or nacks with `Stop` (which also ends its
/// subscription); `Skip` gives an event up for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_leaves_or_stops_gives_its_events_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = common::start(&dir.path().join("data"));
    let client = client(&addr);
    let (stream, group) = ("order-7", "workers");
    within(
        "append",
        client.append_to_stream(
            stream,
            &AppendToStreamOptions::default(),
            (1..=3).map(deposit).collect::<Vec<_>>(),
        ),
    )
    .await
    .unwrap();
    // An ack timeout far beyond the test's own deadline: only a give-back can pass it.
    let settings = PersistentSubscriptionOptions::default()
        .start_from(StreamPosition::Start)
        .message_timeout(Duration::from_secs(3600));
    within(
        "create",
        client.create_persistent_subscription(stream, group, &settings),
    )
    .await
    .unwrap();
    let one = SubscribeToPersistentSubscriptionOptions::default().buffer_size(1);
    let subscribe = || client.subscribe_to_persistent_subscription(stream, group, &one);

    let mut leaving = within("subscribe", subscribe()).await.unwrap();
    let (first, _, _) = next_delivery(&mut leaving).await;
    assert_eq!(first, 0);
    drop(leaving);
    let mut stopping = within("subscribe again", subscribe()).await.unwrap();
    let (again, retries, event) = next_delivery(&mut stopping).await;
    assert_eq!(
        (again, retries),
        (0, 1),
        "the left event comes back as a retry"
    );
    stopping
        .nack(&event, NakAction::Stop, "shutting this worker down")
        .await
        .unwrap();
    let stopped = within("next after stop", stopping.next_subscription_event()).await;
    assert!(
        matches!(stopped, Err(Error::IllegalStateError(_))),
        "{stopped:?}"
    );

    let mut last = within("subscribe a third time", subscribe()).await.unwrap();
    let (again, retries, event) = next_delivery(&mut last).await;
    assert_eq!((again, retries), (0, 2));
    last.nack(&event, NakAction::Skip, "not ours")
        .await
        .unwrap();
    let mut rest = Vec::new();
    for _ in 0..2 {
        let (revision, _, event) = next_delivery(&mut last).await;
        last.ack(&event).await.unwrap();
        rest.push(revision);
    }
    assert_eq!(rest, [1, 2], "the skipped event is not delivered again");
    let (status, over_http) = common::json(&addr, "GET", "/groups/order-7::workers", "");
    assert_eq!(status, 200, "{over_http}");
    assert_eq!(over_http["skipped"], 1, "{over_http}");
    drop(last);
    assert_eq!(common::terminate(child), 0);
}

/// Persistent subscriptions follow the tokens' grants on the group's source: a token for
/// `order-` streams manages and lists subscriptions to them only, `$all` needs a token
/// that reads every stream, and no credentials is access denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_subscriptions_follow_the_tokens_grants() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\ntoken = \"admin-secret\"\nread = [\"*\"]\nwrite = [\"*\"]\n\n\
         [[token]]\ntoken = \"orders-secret\"\nread = [\"order-\"]\nwrite = [\"order-\"]\n",
    )
    .unwrap();
    let (child, addr) = common::start_with(
        &dir.path().join("data"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    let as_user = |token: &str| {
        let settings: ClientSettings = format!("esdb://worker:{token}@{addr}?tls=false")
            .parse()
            .unwrap();
        Client::new(settings).unwrap()
    };
    let admin = as_user("admin-secret");
    let orders = as_user("orders-secret");
    let options = PersistentSubscriptionOptions::default();
    within(
        "admin creates on invoices",
        admin.create_persistent_subscription("invoice-1", "billing", &options),
    )
    .await
    .unwrap();
    within(
        "orders creates on orders",
        orders.create_persistent_subscription("order-1", "workers", &options),
    )
    .await
    .unwrap();
    let denied = within(
        "orders creates on invoices",
        orders.create_persistent_subscription("invoice-2", "billing", &options),
    )
    .await;
    assert!(matches!(denied, Err(Error::AccessDenied)), "{denied:?}");
    let all = within(
        "orders creates on $all",
        orders.create_persistent_subscription_to_all(
            "everything",
            &PersistentSubscriptionToAllOptions::default(),
        ),
    )
    .await;
    assert!(matches!(all, Err(Error::AccessDenied)), "{all:?}");
    let info = within(
        "orders asks about invoices",
        orders.get_persistent_subscription_info(
            "invoice-1",
            "billing",
            &GetPersistentSubscriptionInfoOptions::default(),
        ),
    )
    .await;
    assert!(matches!(info, Err(Error::AccessDenied)), "{info:?}");
    let listed = within(
        "orders lists",
        orders.list_all_persistent_subscriptions(&ListPersistentSubscriptionsOptions::default()),
    )
    .await
    .unwrap();
    let names: Vec<_> = listed.iter().map(|i| i.event_source.as_str()).collect();
    assert_eq!(names, ["order-1"]);
    let everything = within(
        "admin lists",
        admin.list_all_persistent_subscriptions(&ListPersistentSubscriptionsOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(everything.len(), 2, "{everything:?}");
    let anonymous = within(
        "no credentials",
        client(&addr).get_persistent_subscription_info(
            "order-1",
            "workers",
            &GetPersistentSubscriptionInfoOptions::default(),
        ),
    )
    .await;
    assert!(
        matches!(anonymous, Err(Error::AccessDenied)),
        "{anonymous:?}"
    );
    assert_eq!(common::terminate(child), 0);
}
