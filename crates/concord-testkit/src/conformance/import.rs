//! Specs for [`EventStore::import`] (what `concord copy` writes with): events recorded by
//! another store land exactly as they were, holes and all, appends go on after them, and a
//! batch that breaks a rule writes nothing.
//!
//! [`import_suite!`](crate::import_suite) expands them, one `#[tokio::test]` each, for a
//! backend that can import.

use std::sync::Arc;

use concord_core::{
    Direction, EventStore, ExpectedVersion, Filter, MemoryStore, NewEvent, Position, RecordedEvent,
    StoreError, StreamLifecycle, StreamMetadata, StreamPast, Version,
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

fn past(name: &str, last: u64, lifecycle: StreamLifecycle) -> StreamPast {
    StreamPast {
        stream: stream(name),
        last: Version(last),
        lifecycle,
    }
}

fn deleted_through(v: u64) -> StreamLifecycle {
    StreamLifecycle {
        deleted_through: Version(v),
        ..StreamLifecycle::default()
    }
}

/// Every past the store lists, in order.
async fn every_past(store: &Arc<dyn EventStore>) -> Vec<StreamPast> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_stream_pasts(after.as_ref(), 2).await.unwrap();
        let Some(last) = page.last() else {
            return all;
        };
        after = Some(last.stream.clone());
        all.extend(page);
    }
}

/// A stream whose events the source no longer shows goes on from its last version: deleted,
/// it reads as missing and its next append writes the version after its last; hidden by
/// retention, its version is its last. The store lists both as they were imported.
pub async fn a_stream_past_without_events_goes_on_from_its_last_version(
    store: Arc<dyn EventStore>,
) {
    let deleted = past("account-5", 7, deleted_through(7));
    let aged = past(
        "account-6",
        4,
        StreamLifecycle {
            metadata: StreamMetadata {
                max_age_seconds: Some(60),
                ..StreamMetadata::NONE
            },
            ..StreamLifecycle::default()
        },
    );
    for p in [&deleted, &aged] {
        store.import_stream_past(p).await.unwrap();
        assert_eq!(read_whole_stream(&store, &p.stream).await, Vec::new());
    }
    assert_eq!(
        store.stream_version(&deleted.stream).await.unwrap(),
        Version::NONE
    );
    assert_eq!(
        store.stream_version(&aged.stream).await.unwrap(),
        Version(4)
    );
    assert_eq!(
        every_past(&store).await,
        vec![deleted.clone(), aged.clone()]
    );
    let next = append(
        &store,
        &deleted.stream,
        ExpectedVersion::NoStream,
        deposits(1),
    )
    .await
    .unwrap();
    assert_eq!(next.appended().first_version, Version(8));
    let next = append(
        &store,
        &aged.stream,
        ExpectedVersion::Exact(Version(4)),
        deposits(1),
    )
    .await
    .unwrap();
    assert_eq!(next.appended().first_version, Version(5));
    assert_eq!(
        store.stream_lifecycle(&aged.stream).await.unwrap(),
        aged.lifecycle
    );
    // A past older than the stream is refused and changes nothing.
    let stale = store.import_stream_past(&deleted).await;
    assert!(matches!(stale, Err(StoreError::Invalid(_))), "{stale:?}");
    assert_eq!(
        store.stream_version(&deleted.stream).await.unwrap(),
        Version(8)
    );
}

/// A tombstoned past refuses its name from then on, whether the stream had events or not;
/// importing it again is harmless, a past that is not tombstoned is refused.
pub async fn a_tombstoned_past_refuses_the_name(store: Arc<dyn EventStore>) {
    let tombstone = |name: &str, last: u64| {
        past(
            name,
            last,
            StreamLifecycle {
                deleted_through: Version(last),
                tombstoned: true,
                ..StreamLifecycle::default()
            },
        )
    };
    for p in [tombstone("account-8", 3), tombstone("account-9", 0)] {
        store.import_stream_past(&p).await.unwrap();
        store.import_stream_past(&p).await.unwrap();
        let refused = append(&store, &p.stream, ExpectedVersion::Any, deposits(1)).await;
        assert!(
            matches!(refused, Err(StoreError::StreamDeleted(ref n)) if n == &p.stream),
            "{refused:?}"
        );
        assert!(matches!(
            store.stream_version(&p.stream).await,
            Err(StoreError::StreamDeleted(_))
        ));
        let revived = store
            .import_stream_past(&past(
                p.stream.as_str(),
                p.last.get(),
                StreamLifecycle::default(),
            ))
            .await;
        assert!(
            matches!(revived, Err(StoreError::StreamDeleted(_))),
            "{revived:?}"
        );
        assert!(store.stream_lifecycle(&p.stream).await.unwrap().tombstoned);
    }
}

/// A past that contradicts itself or the stream as stored is refused and changes nothing;
/// one that agrees deletes the stream's events.
pub async fn a_past_that_contradicts_the_store_changes_nothing(store: Arc<dyn EventStore>) {
    let s = stream("account-3");
    write(&store, &s, ExpectedVersion::NoStream, deposits(2)).await;
    let before = every_past(&store).await;
    for refused in [
        past("account-3", 5, StreamLifecycle::default()),
        past("account-3", 1, StreamLifecycle::default()),
        past("account-4", 2, deleted_through(3)),
        past(
            "account-4",
            2,
            StreamLifecycle {
                metadata: StreamMetadata {
                    max_count: Some(0),
                    ..StreamMetadata::NONE
                },
                ..StreamLifecycle::default()
            },
        ),
    ] {
        let result = store.import_stream_past(&refused).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{refused:?}: {result:?}"
        );
        assert_eq!(every_past(&store).await, before);
    }
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(2));
    store
        .import_stream_past(&past("account-3", 2, deleted_through(2)))
        .await
        .unwrap();
    assert_eq!(store.stream_version(&s).await.unwrap(), Version::NONE);
    assert_eq!(read_whole_stream(&store, &s).await, Vec::new());
}

/// An import raises the head over positions without events: reads pass them, the next
/// append takes the position after it; the head never goes down.
pub async fn an_import_raises_the_head_over_holes(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    write(&store, &s, ExpectedVersion::NoStream, deposits(3)).await;
    store.import_head(Position(10)).await.unwrap();
    store.import_head(Position(10)).await.unwrap();
    assert_eq!(store.head().await.unwrap(), Position(10));
    let page = store
        .read_all(Position(4), &Filter::all(), 10)
        .await
        .unwrap();
    assert!(page.events.is_empty(), "{page:?}");
    assert_eq!(page.head, Position(10));
    let lowered = store.import_head(Position(5)).await;
    assert!(
        matches!(lowered, Err(StoreError::Invalid(_))),
        "{lowered:?}"
    );
    let next = append(&store, &s, ExpectedVersion::Exact(Version(3)), deposits(1))
        .await
        .unwrap();
    assert_eq!(next.appended().first_position, Position(11));
    assert_eq!(read_everything(&store).await.len(), 4);
}

/// Every stream the store keeps anything of is listed by name with its last version and
/// lifecycle, page by page, before and after a scavenge erased what was hidden.
pub async fn every_stream_past_is_listed_by_name(store: Arc<dyn EventStore>) {
    for name in ["account-a", "account-b", "account-c"] {
        write(
            &store,
            &stream(name),
            ExpectedVersion::NoStream,
            deposits(2),
        )
        .await;
    }
    store
        .delete_stream(&stream("account-b"), None)
        .await
        .unwrap();
    store
        .tombstone_stream(&stream("account-c"), None)
        .await
        .unwrap();
    let retention = StreamMetadata {
        max_count: Some(5),
        ..StreamMetadata::NONE
    };
    store
        .set_stream_metadata(&stream("account-d"), retention)
        .await
        .unwrap();
    store
        .tombstone_stream_name(&stream("account-e"), None)
        .await
        .unwrap();
    let expected = vec![
        past("account-a", 2, StreamLifecycle::default()),
        past("account-b", 2, deleted_through(2)),
        past(
            "account-c",
            2,
            StreamLifecycle {
                deleted_through: Version(2),
                tombstoned: true,
                ..StreamLifecycle::default()
            },
        ),
        past(
            "account-d",
            0,
            StreamLifecycle {
                metadata: retention,
                ..StreamLifecycle::default()
            },
        ),
        past(
            "account-e",
            0,
            StreamLifecycle {
                tombstoned: true,
                ..StreamLifecycle::default()
            },
        ),
    ];
    assert_eq!(every_past(&store).await, expected);
    let page = store
        .list_stream_pasts(Some(&stream("account-a")), 2)
        .await
        .unwrap();
    assert_eq!(page, expected[1..3].to_vec());
    store.scavenge().await.unwrap();
    assert_eq!(every_past(&store).await, expected);
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
            a_stream_past_without_events_goes_on_from_its_last_version,
            a_tombstoned_past_refuses_the_name,
            a_past_that_contradicts_the_store_changes_nothing,
            an_import_raises_the_head_over_holes,
            every_stream_past_is_listed_by_name,
        );
    };
}
