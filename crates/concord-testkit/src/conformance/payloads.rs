//! Specs for event payloads (API.md, "Event payloads: JSON or bytes"): bytes of any content
//! type come back byte for byte from every read, JSON events say `application/json` and
//! keep their text, and everything else an event takes part in (sizes, ids, types, tags,
//! conflicts, conditions, subscriptions) works for bytes as it does for JSON.

use std::sync::Arc;

use concord_core::{
    AppendOutcome, AppendRequest, Direction, EventStore, ExpectedVersion, Filter,
    JSON_CONTENT_TYPE, Json, MultiAppendRequest, NewEvent, Position, Query, RecordedEvent,
    StoreError, Version,
};
use serde_json::json;

use super::{
    append, expect_conflict, is_too_large, read_everything, read_whole_stream, stream, tag, take,
    ty, write,
};

/// Every byte value once, in order.
fn all_byte_values() -> Vec<u8> {
    (0..=255).collect()
}

/// An event of `event_type` carrying `bytes` of `content_type`.
fn bytes_event(event_type: &str, content_type: &str, bytes: Vec<u8>) -> NewEvent {
    NewEvent::bytes(event_type, content_type, bytes).unwrap()
}

/// The payloads of the bytes specs: all 256 byte values, none at all, text with a
/// parameter in its content type, bytes that happen to be JSON text (still bytes), and a
/// large buffer.
fn sample_bytes_events() -> Vec<NewEvent> {
    vec![
        bytes_event("Uploaded", "application/octet-stream", all_byte_values()),
        bytes_event("Emptied", "application/octet-stream", Vec::new()),
        bytes_event("Noted", "text/plain; charset=utf-8", "héllo\n".into()),
        bytes_event(
            "Encoded",
            "application/x-protobuf",
            b"{\"not\": \"json\"}".to_vec(),
        ),
        bytes_event(
            "Photographed",
            "image/png",
            (0..300_000u32).map(|i| (i % 251) as u8).collect(),
        ),
    ]
}

/// Asserts that `read` is `written`, payload byte for byte and content type as written.
fn assert_same_payloads(read: &[RecordedEvent], written: &[NewEvent]) {
    assert_eq!(read.len(), written.len());
    for (r, w) in read.iter().zip(written) {
        assert_eq!(r.id, w.id);
        assert_eq!(
            r.data.content_type(),
            w.data.content_type(),
            "event {}",
            r.event_type
        );
        assert!(
            r.data.as_bytes() == w.data.as_bytes(),
            "event {} came back with other bytes ({} instead of {})",
            r.event_type,
            r.data.len(),
            w.data.len()
        );
        assert_eq!(r.data, w.data);
        assert_eq!(r.metadata, w.metadata);
        assert_eq!(r.tags, w.tags);
    }
}

/// Bytes of any content type, including empty bytes and every byte value, come back byte
/// for byte with their content type from stream reads (both ways), the global log, one
/// query read and a subscription.
pub async fn bytes_round_trip_byte_for_byte_through_every_read(store: Arc<dyn EventStore>) {
    let s = stream("blob-1");
    let written: Vec<NewEvent> = sample_bytes_events()
        .into_iter()
        .map(|e| e.with_tags(vec![tag("blob:1")]))
        .collect();
    write(&store, &s, ExpectedVersion::NoStream, written.clone()).await;

    assert_same_payloads(&read_whole_stream(&store, &s).await, &written);
    let mut backward = store
        .read_stream(&s, Version(5), Direction::Backward, 10)
        .await
        .unwrap();
    backward.reverse();
    assert_same_payloads(&backward, &written);
    assert_same_payloads(&read_everything(&store).await, &written);
    let tagged = store
        .read_all(Position(1), &Filter::all().tags(vec![tag("blob:1")]), 100)
        .await
        .unwrap();
    assert_same_payloads(&tagged.events, &written);
    let queried = store
        .query(&Query::item(vec![], vec![tag("blob:1")]), Position(0), 100)
        .await
        .unwrap();
    assert_same_payloads(&queried.events, &written);
    let mut sub = Arc::clone(&store).subscribe_all(Position(1), Filter::all());
    assert_same_payloads(&take(&mut sub, written.len()).await, &written);
}

/// JSON events report `application/json` and keep the text they were written as, whitespace
/// and key order included; bytes never read as JSON.
pub async fn json_events_report_application_json_and_keep_their_text(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    let text = "{ \"z\" : 1,\n  \"a\" : [true, null] }";
    let json = NewEvent::new(
        ty("Deposited"),
        Json::from_bytes("data", text.as_bytes().to_vec()).unwrap(),
    );
    let bytes = bytes_event("Scanned", "image/png", vec![0x89, b'P', b'N', b'G']);
    write(&store, &s, ExpectedVersion::NoStream, vec![json, bytes]).await;
    let read = read_whole_stream(&store, &s).await;
    assert_eq!(read[0].data.content_type(), JSON_CONTENT_TYPE);
    assert!(read[0].data.is_json());
    assert_eq!(read[0].data.as_bytes(), text.as_bytes());
    assert_eq!(
        read[0].data.to_value().unwrap(),
        json!({"z": 1, "a": [true, null]})
    );
    assert_eq!(read[1].data.content_type(), "image/png");
    assert!(read[1].data.as_json().is_none());
    assert!(
        read[1].data.to_value().is_err(),
        "bytes are not JSON to a reader that expects JSON"
    );
}

/// Type and tag filters, query reads, conflicts and conditions treat bytes events as they
/// treat JSON ones.
pub async fn types_tags_conflicts_and_conditions_work_for_bytes_events(store: Arc<dyn EventStore>) {
    let s = stream("blob-1");
    let uploaded =
        bytes_event("Uploaded", "image/png", all_byte_values()).with_tags(vec![tag("owner:ann")]);
    write(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![uploaded.clone()],
    )
    .await;
    write(
        &store,
        &stream("account-1"),
        ExpectedVersion::NoStream,
        vec![super::event("Deposited", json!({"amount": 1})).with_tags(vec![tag("owner:ann")])],
    )
    .await;

    let by_type = store
        .read_all(Position(1), &Filter::all().types(vec![ty("Uploaded")]), 10)
        .await
        .unwrap();
    assert_same_payloads(&by_type.events, std::slice::from_ref(&uploaded));
    let by_tag = store
        .read_all(Position(1), &Filter::all().tags(vec![tag("owner:ann")]), 10)
        .await
        .unwrap();
    assert_eq!(by_tag.events.len(), 2);
    let category = store
        .read_all(
            Position(1),
            &Filter::all().category(concord_core::Category::new("blob").unwrap()),
            10,
        )
        .await
        .unwrap();
    assert_same_payloads(&category.events, std::slice::from_ref(&uploaded));

    // A stale writer is told about the bytes event it missed, bytes and all.
    let conflict = expect_conflict(
        append(
            &store,
            &s,
            ExpectedVersion::NoStream,
            vec![bytes_event("Uploaded", "image/png", vec![1])],
        )
        .await,
    );
    assert_same_payloads(&conflict.concurrent_events, std::slice::from_ref(&uploaded));

    // A rebase over a bytes event, and a condition that a bytes event fails.
    let rebased = store
        .append(
            AppendRequest::new(
                s.clone(),
                ExpectedVersion::Exact(Version(0)),
                vec![bytes_event("Resized", "image/png", vec![2])],
            )
            .rebase_unless(vec![ty("Deleted")]),
        )
        .await;
    match rebased {
        Ok(AppendOutcome::Rebased {
            concurrent_events, ..
        }) => assert_same_payloads(&concurrent_events, std::slice::from_ref(&uploaded)),
        other => panic!("expected a rebase over the bytes event, got {other:?}"),
    }
    let condition = store
        .append_multi(
            MultiAppendRequest::new(vec![AppendRequest::new(
                stream("blob-2"),
                ExpectedVersion::NoStream,
                vec![bytes_event("Uploaded", "image/png", vec![3])],
            )])
            .condition(
                Query::item(vec![ty("Uploaded")], vec![tag("owner:ann")]),
                Position(0),
            ),
        )
        .await;
    match condition {
        Err(StoreError::ConditionFailed(failed)) => {
            assert_same_payloads(&failed.matching_events, std::slice::from_ref(&uploaded));
        }
        other => panic!("expected the condition to fail on the bytes event, got {other:?}"),
    }
}

/// Re-appending the same bytes events (same ids) is a duplicate with the original versions
/// and positions, alone and as part of a multi-stream append, and writes nothing.
pub async fn reappending_bytes_events_is_a_duplicate(store: Arc<dyn EventStore>) {
    let s = stream("blob-1");
    let events = sample_bytes_events();
    let first = write(&store, &s, ExpectedVersion::NoStream, events.clone()).await;
    let again = append(&store, &s, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    assert!(again.is_duplicate(), "{again:?}");
    assert_eq!(again.appended(), &first);
    let multi = store
        .append_multi(MultiAppendRequest::new(vec![AppendRequest::new(
            s.clone(),
            ExpectedVersion::Any,
            events.clone(),
        )]))
        .await
        .unwrap();
    assert!(multi.duplicate);
    assert_eq!(store.head().await.unwrap(), first.last_position);
    assert_same_payloads(&read_whole_stream(&store, &s).await, &events);
}

/// The size limit counts an event's bytes plus its metadata, as for JSON: 1 MiB is
/// accepted, one byte more is too large and writes nothing.
pub async fn bytes_events_are_held_to_the_event_size_limit(store: Arc<dyn EventStore>) {
    let s = stream("blob-1");
    // Metadata `{}` is two bytes.
    let at_limit = bytes_event(
        "Uploaded",
        "application/octet-stream",
        vec![0xab; 1024 * 1024 - 2],
    );
    assert_eq!(at_limit.payload_bytes(), 1024 * 1024);
    write(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![at_limit.clone()],
    )
    .await;
    assert_same_payloads(&read_whole_stream(&store, &s).await, &[at_limit]);
    let over = bytes_event(
        "Uploaded",
        "application/octet-stream",
        vec![0xab; 1024 * 1024 - 1],
    );
    let err = append(&store, &s, ExpectedVersion::Any, vec![over])
        .await
        .unwrap_err();
    assert!(is_too_large(&err), "{err:?}");
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(1));
}
