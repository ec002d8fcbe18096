//! Specs for [`EventStore::import`] (what `concord copy` writes with): events recorded by
//! another store land exactly as they were, holes and all, appends go on after them, and a
//! batch that breaks a rule writes nothing.
//!
//! [`import_suite!`](crate::import_suite) expands them, one `#[tokio::test]` each, for a
//! backend that can import.

use std::sync::Arc;

use concord_core::{
    Direction, EventStore, ExpectedVersion, Filter, MemoryStore, NewEvent, Position, RecordedEvent,
    StoreError, Version,
};
use serde_json::json;

use super::{
    append, deposits, event, read_everything, read_whole_stream, stream, tag, take, write,
};

/// Events of several streams, with tags, metadata and a bytes payload, as a source store
/// recorded them.
async fn recorded_elsewhere() -> Vec<RecordedEvent> {
    let source: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let bytes = NewEvent::new(
        super::ty("Scanned"),
        concord_core::Payload::new(
            concord_core::ContentType::new("image/png").unwrap(),
            vec![0x89, b'P', b'N', b'G', 0, 0xff],
        )
        .unwrap(),
    )
    .with_metadata(concord_core::Json::from_value(&json!({"by": "scanner-2"})));
    for i in 0..3 {
        let s = stream(&format!("account-{i}"));
        write(
            &source,
            &s,
            ExpectedVersion::Any,
            vec![
                event("Opened", json!({"owner": i})).with_tags(vec![tag(&format!("owner:{i}"))]),
                event("Deposited", json!({"amount": 10 * i})),
            ],
        )
        .await;
    }
    write(&source, &stream("doc-1"), ExpectedVersion::Any, vec![bytes]).await;
    read_everything(&source).await
}

/// An import keeps every field of every event: id, stream, version, position, type, tags,
/// data (JSON and bytes), metadata and recorded time; reads of streams, of the global log
/// and by tag show them as the source did, and appends go on after them.
pub async fn an_import_keeps_every_field_of_every_event(store: Arc<dyn EventStore>) {
    let events = recorded_elsewhere().await;
    store.import(events.clone()).await.unwrap();
    assert_eq!(read_everything(&store).await, events);
    assert_eq!(store.head().await.unwrap(), events.last().unwrap().position);
    let account = stream("account-1");
    let in_stream: Vec<RecordedEvent> = events
        .iter()
        .filter(|e| e.stream == account)
        .cloned()
        .collect();
    assert_eq!(read_whole_stream(&store, &account).await, in_stream);
    let by_tag = store
        .read_all(Position(1), &Filter::all().tags(vec![tag("owner:2")]), 10)
        .await
        .unwrap();
    assert_eq!(by_tag.events.len(), 1);
    assert_eq!(by_tag.events[0].id, events[4].id);
    let next = append(
        &store,
        &account,
        ExpectedVersion::Exact(Version(2)),
        deposits(1),
    )
    .await
    .unwrap();
    assert_eq!(next.appended().first_version, Version(3));
    assert_eq!(
        next.appended().first_position,
        events.last().unwrap().position.next()
    );
    // An imported id is taken, as an appended one is: re-sending it is a duplicate.
    let again = store
        .append(concord_core::AppendRequest::new(
            stream("doc-1"),
            ExpectedVersion::NoStream,
            vec![NewEvent {
                id: events[6].id,
                event_type: events[6].event_type.clone(),
                data: events[6].data.clone(),
                metadata: events[6].metadata.clone(),
                tags: events[6].tags.clone(),
            }],
        ))
        .await
        .unwrap();
    assert!(again.is_duplicate(), "{again:?}");
}

fn at(source: &RecordedEvent, version: u64, position: u64) -> RecordedEvent {
    RecordedEvent {
        version: Version(version),
        position: Position(position),
        id: concord_core::EventId::new(),
        ..source.clone()
    }
}

/// Holes in positions (a source's scavenge leaves them) stay holes; appends go on after the
/// last imported position.
pub async fn an_import_keeps_holes_in_positions(store: Arc<dyn EventStore>) {
    let model = recorded_elsewhere().await.remove(1);
    let a = stream("account-7");
    let batch = vec![
        RecordedEvent {
            stream: a.clone(),
            ..at(&model, 1, 3)
        },
        RecordedEvent {
            stream: a.clone(),
            ..at(&model, 2, 9)
        },
        RecordedEvent {
            stream: stream("account-8"),
            ..at(&model, 1, 10)
        },
    ];
    store.import(batch.clone()).await.unwrap();
    assert_eq!(read_everything(&store).await, batch);
    assert_eq!(read_whole_stream(&store, &a).await, batch[..2].to_vec());
    assert_eq!(store.head().await.unwrap(), Position(10));
    let next = append(&store, &a, ExpectedVersion::Exact(Version(2)), deposits(1))
        .await
        .unwrap();
    assert_eq!(next.appended().first_version, Version(3));
    assert_eq!(next.appended().first_position, Position(11));
    // A later batch continues a stream from its last version, after another hole.
    store
        .import(vec![RecordedEvent {
            stream: a.clone(),
            ..at(&model, 4, 20)
        }])
        .await
        .unwrap();
    assert_eq!(store.stream_version(&a).await.unwrap(), Version(4));
    assert_eq!(read_everything(&store).await.len(), 5);
}

/// A stream whose first versions the source had erased starts where it started there:
/// reads show its events from that version, its version is its last, and appends go on
/// after it.
pub async fn an_import_starts_a_stream_whose_prefix_was_erased(store: Arc<dyn EventStore>) {
    let model = recorded_elsewhere().await.remove(1);
    let a = stream("account-7");
    let batch = vec![
        RecordedEvent {
            stream: a.clone(),
            ..at(&model, 5, 3)
        },
        RecordedEvent {
            stream: a.clone(),
            ..at(&model, 6, 4)
        },
    ];
    store.import(batch.clone()).await.unwrap();
    assert_eq!(read_whole_stream(&store, &a).await, batch);
    let backward = store
        .read_stream(&a, Version(u64::MAX), Direction::Backward, 10)
        .await
        .unwrap();
    assert_eq!(backward.len(), 2);
    assert_eq!(store.stream_version(&a).await.unwrap(), Version(6));
    let next = append(&store, &a, ExpectedVersion::Exact(Version(6)), deposits(1))
        .await
        .unwrap();
    assert_eq!(next.appended().first_version, Version(7));
    assert_eq!(next.appended().first_position, Position(5));
}

/// A batch that breaks a rule is refused whole: positions at or below the head, a stream
/// that does not go on from its last version, an id its stream holds, a tombstoned stream.
pub async fn an_import_that_breaks_a_rule_writes_nothing(store: Arc<dyn EventStore>) {
    let events = recorded_elsewhere().await;
    store.import(events[..4].to_vec()).await.unwrap();
    let before = read_everything(&store).await;
    let model = events[4].clone();
    let s = model.stream.clone();
    let fresh = |version: u64, position: u64| RecordedEvent {
        stream: s.clone(),
        ..at(&model, version, position)
    };
    let refused: Vec<Vec<RecordedEvent>> = vec![
        // At the head, and below it.
        vec![fresh(1, 4)],
        vec![fresh(1, 2)],
        // A good event, then one whose stream skips a version.
        vec![fresh(1, 5), fresh(3, 6)],
        // A stream that exists goes on from its last version (account-1 is at 2).
        vec![RecordedEvent {
            stream: events[2].stream.clone(),
            ..at(&model, 5, 5)
        }],
        // An id that account-0 already holds.
        vec![RecordedEvent {
            stream: events[0].stream.clone(),
            id: events[0].id,
            ..at(&model, 3, 5)
        }],
    ];
    for batch in refused {
        let result = store.import(batch.clone()).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{batch:?}: {result:?}"
        );
        assert_eq!(read_everything(&store).await, before);
    }
    let gone = stream("account-9");
    write(&store, &gone, ExpectedVersion::Any, deposits(1)).await;
    store.tombstone_stream(&gone, None).await.unwrap();
    let head = store.head().await.unwrap();
    let result = store
        .import(vec![RecordedEvent {
            stream: gone.clone(),
            ..at(&model, 2, head.get() + 1)
        }])
        .await;
    assert!(
        matches!(result, Err(StoreError::StreamDeleted(ref n)) if n == &gone),
        "{result:?}"
    );
    assert_eq!(store.head().await.unwrap(), head);
}

/// A live subscription sees imported events as it sees appends.
pub async fn imported_events_reach_a_live_subscription(store: Arc<dyn EventStore>) {
    let events = recorded_elsewhere().await;
    let mut sub = Arc::clone(&store).subscribe_all(Position(1), Filter::all());
    store.import(events.clone()).await.unwrap();
    assert_eq!(take(&mut sub, events.len()).await, events);
}

/// The import specs, one `#[tokio::test]` each, for `$factory`.
#[macro_export]
macro_rules! import_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@specs $factory;
            an_import_keeps_every_field_of_every_event,
            an_import_keeps_holes_in_positions,
            an_import_starts_a_stream_whose_prefix_was_erased,
            an_import_that_breaks_a_rule_writes_nothing,
            imported_events_reach_a_live_subscription,
        );
    };
}
