//! Erasure that holds in Redis: after a delete (or a tombstone, or retention) and a
//! scavenge, no key of the store holds the erased events' bytes, not in a value nor in a
//! key name: the streams, the global log, the idempotency hashes, the type and tag indexes.
//! Each key is searched in its `DUMP` serialisation (uncompressed), which also holds what
//! `XDEL` only flags as deleted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use concord_core::{
    AppendRequest, Direction, EventId, EventStore, ExpectedVersion, Filter, NewEvent, Position,
    StreamMetadata, StreamName, Tag, Version,
};
use concord_testkit::redis::shared;

fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

fn marked(marker: &str) -> NewEvent {
    NewEvent::json(
        "Registered",
        &serde_json::json!({ "email": format!("{marker}@example.com") }),
    )
    .unwrap()
    .with_tags(vec![Tag::new(format!("email:{marker}")).unwrap()])
}

fn unique(what: &str) -> String {
    format!("{what}{}", EventId::new().to_string().replace('-', ""))
}

/// The keys of the store (`{prefix}…`) whose name or serialisation holds `needle`.
async fn keys_holding(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    needle: &str,
) -> Vec<String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{prefix}}}*"))
        .query_async(conn)
        .await
        .unwrap();
    let mut found = Vec::new();
    for key in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        let in_value =
            dump.is_some_and(|d| d.windows(needle.len()).any(|w| w == needle.as_bytes()));
        if in_value || key.contains(needle) {
            found.push(key);
        }
    }
    found
}

#[tokio::test]
async fn a_scavenge_erases_every_copy_of_deleted_tombstoned_and_truncated_events() {
    let server = shared();
    let mut conn = common::raw(&server.url()).await;
    // DUMP compresses long strings by default; the search needs them as they are.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdbcompression")
        .arg("no")
        .query_async(&mut conn)
        .await
        .unwrap();
    let store = common::fresh_store().await;
    let prefix = store.options().key_prefix.clone();
    let deleted = unique("deleted");
    let tombstoned = unique("tombstoned");
    let truncated = unique("truncated");
    let kept = unique("kept");
    let write = |s: &'static str, events: Vec<NewEvent>| {
        let store = &store;
        async move {
            let _ = store
                .append(AppendRequest::new(stream(s), ExpectedVersion::Any, events))
                .await
                .unwrap();
        }
    };
    // Interleaved with kept events, so deleted entries share stream nodes with kept ones.
    write("customer-1", vec![marked(&deleted)]).await;
    write("customer-2", vec![marked(&kept)]).await;
    write("customer-3", vec![marked(&tombstoned)]).await;
    write("customer-1", vec![marked(&deleted)]).await;
    write("sensor-1", vec![marked(&truncated), marked("recent")]).await;
    write("customer-2", vec![marked(&kept)]).await;
    store
        .delete_stream(&stream("customer-1"), None)
        .await
        .unwrap();
    store
        .tombstone_stream(&stream("customer-3"), None)
        .await
        .unwrap();
    let _ = store
        .set_stream_metadata(
            &stream("sensor-1"),
            StreamMetadata {
                max_count: Some(1),
                ..StreamMetadata::NONE
            },
        )
        .await
        .unwrap();
    assert!(
        !keys_holding(&mut conn, &prefix, &deleted).await.is_empty(),
        "the search finds what is there"
    );

    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 4);
    assert_eq!(report.streams_scavenged, 3);

    for marker in [&deleted, &tombstoned, &truncated] {
        assert_eq!(
            keys_holding(&mut conn, &prefix, marker).await,
            Vec::<String>::new(),
            "{marker}"
        );
    }
    assert!(!keys_holding(&mut conn, &prefix, &kept).await.is_empty());
    let again = store.scavenge().await.unwrap();
    assert_eq!(
        (again.events_removed, again.bytes_reclaimed),
        (0, 0),
        "nothing left to erase, nothing given back"
    );

    // What is left reads as before, at its positions; versions go on.
    let all = store
        .read_all(Position(1), &Filter::all(), 100)
        .await
        .unwrap();
    assert_eq!(
        all.events
            .iter()
            .map(|e| e.position.get())
            .collect::<Vec<_>>(),
        vec![2, 6, 7]
    );
    let sensor = store
        .read_stream(&stream("sensor-1"), Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        sensor.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![2]
    );
    let out = store
        .append(AppendRequest::new(
            stream("customer-1"),
            ExpectedVersion::NoStream,
            vec![marked("again")],
        ))
        .await
        .unwrap();
    assert_eq!(out.appended().first_version, Version(3));
    assert_eq!(out.appended().first_position, Position(8));
}

#[tokio::test]
async fn a_scavenge_reports_the_memory_its_rewrites_gave_back() {
    let store = common::fresh_store().await;
    let pad = "x".repeat(1024);
    for i in 0..200 {
        for s in ["sensor-1", "sensor-2"] {
            let event = NewEvent::json("Read", &serde_json::json!({ "n": i, "pad": pad })).unwrap();
            let _ = store
                .append(AppendRequest::new(
                    stream(s),
                    ExpectedVersion::Any,
                    vec![event],
                ))
                .await
                .unwrap();
        }
    }
    store
        .delete_stream(&stream("sensor-1"), None)
        .await
        .unwrap();
    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 200);
    // The global log and the type index kept sensor-2's events: rewritten, each gives back
    // about the 200 KiB of sensor-1's data its nodes held.
    assert!(
        report.bytes_reclaimed >= 200 * 1024,
        "at least the deleted data of one rewritten key: {report:?}"
    );
    let again = store.scavenge().await.unwrap();
    assert_eq!((again.events_removed, again.bytes_reclaimed), (0, 0));
}
