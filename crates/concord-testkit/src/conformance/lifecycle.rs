//! Specs for stream lifecycle (API.md "Deleting streams", "Retention: stream metadata",
//! "Scavenge"): soft delete, tombstone, retention settings, and a scavenge that erases
//! what they hide from every read (streams, the global log, queries, conditions,
//! subscriptions) while positions of the rest never change.
//!
//! [`lifecycle_suite!`](crate::lifecycle_suite) expands them, one `#[tokio::test]` each,
//! for a backend that implements the lifecycle methods.

use std::sync::Arc;

use concord_core::{
    AppendRequest, Direction, EventStore, ExpectedVersion, Filter, MetadataChange,
    MultiAppendRequest, Position, Query, QueryItem, RecordedEvent, StoreError, StreamMetadata,
    StreamName, Version,
};
use futures::StreamExt;
use serde_json::json;

use super::{
    WAIT, append, deposits, event, expect_conflict, ids, positions, read_everything,
    read_whole_stream, seed, stream, tagged, ty, versions, write,
};

async fn read(
    store: &Arc<dyn EventStore>,
    s: &StreamName,
) -> Result<Vec<RecordedEvent>, StoreError> {
    store
        .read_stream(s, Version(1), Direction::Forward, 1000)
        .await
}

async fn listed(store: &Arc<dyn EventStore>, prefix: &str) -> Vec<String> {
    store
        .list_streams(prefix, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.stream.as_str().to_owned())
        .collect()
}

fn is_deleted(result: &Result<impl std::fmt::Debug, StoreError>, s: &StreamName) -> bool {
    matches!(result, Err(StoreError::StreamDeleted(n)) if n == s)
}

async fn set(store: &Arc<dyn EventStore>, s: &StreamName, metadata: StreamMetadata) {
    let stored = store.set_stream_metadata(s, metadata).await.unwrap();
    assert_eq!(stored, metadata);
    assert_eq!(store.stream_metadata(s).await.unwrap(), metadata);
}

/// A soft-deleted stream reads as one that does not exist and is not listed; other
/// streams are untouched.
pub async fn soft_delete_hides_the_stream_from_reads_and_listings(store: Arc<dyn EventStore>) {
    let gone = stream("customer-17");
    let kept = stream("customer-18");
    seed(&store, &gone, 12).await;
    seed(&store, &kept, 3).await;
    store.delete_stream(&gone, None).await.unwrap();
    assert!(read(&store, &gone).await.unwrap().is_empty());
    let backward = store
        .read_stream(&gone, Version(u64::MAX), Direction::Backward, 10)
        .await
        .unwrap();
    assert!(backward.is_empty());
    assert_eq!(store.stream_version(&gone).await.unwrap(), Version::NONE);
    assert_eq!(listed(&store, "customer-").await, vec!["customer-18"]);
    assert_eq!(
        versions(&read_whole_stream(&store, &kept).await),
        vec![1, 2, 3]
    );
}

/// An append whose expectation holds for a missing stream recreates a soft-deleted one;
/// its versions go on after the last one before the delete, and reads show only them.
pub async fn an_append_recreates_a_soft_deleted_stream_and_versions_are_never_reused(
    store: Arc<dyn EventStore>,
) {
    let s = stream("customer-17");
    seed(&store, &s, 12).await;
    store.delete_stream(&s, Some(Version(12))).await.unwrap();
    // A writer that decided on the old stream is told it no longer exists.
    let stale =
        expect_conflict(append(&store, &s, ExpectedVersion::Exact(Version(12)), deposits(1)).await);
    assert_eq!(stale.actual, Version::NONE);
    assert!(matches!(
        append(&store, &s, ExpectedVersion::Exists, deposits(1)).await,
        Err(StoreError::Conflict(_))
    ));
    let out = write(&store, &s, ExpectedVersion::NoStream, deposits(2)).await;
    assert_eq!(out.first_version, Version(13));
    assert_eq!(out.last_version, Version(14));
    assert_eq!(versions(&read_whole_stream(&store, &s).await), vec![13, 14]);
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(14));
    assert_eq!(listed(&store, "customer-").await, vec!["customer-17"]);
    // The recreated stream conflicts like any other, listing only its own events.
    let c = expect_conflict(append(&store, &s, ExpectedVersion::NoStream, deposits(1)).await);
    assert_eq!(c.actual, Version(14));
    assert_eq!(versions(&c.concurrent_events), vec![13, 14]);
    // Deleted again and recreated, it still never reuses a version.
    store.delete_stream(&s, None).await.unwrap();
    let out = write(
        &store,
        &s,
        ExpectedVersion::Exact(Version::NONE),
        deposits(1),
    )
    .await;
    assert_eq!(out.first_version, Version(15));
}

/// Deleting a stream with no event is "not found", also when a delete already emptied it.
pub async fn deleting_a_stream_without_events_is_not_found(store: Arc<dyn EventStore>) {
    let s = stream("customer-1");
    assert!(matches!(
        store.delete_stream(&s, None).await,
        Err(StoreError::StreamNotFound(n)) if n == s
    ));
    assert!(matches!(
        store.tombstone_stream(&s, None).await,
        Err(StoreError::StreamNotFound(_))
    ));
    seed(&store, &s, 1).await;
    store.delete_stream(&s, None).await.unwrap();
    assert!(matches!(
        store.delete_stream(&s, None).await,
        Err(StoreError::StreamNotFound(_))
    ));
}

/// KurrentDB's tombstone (`tombstone_stream_name`) takes a stream that never had an event,
/// with the expectation "any" or "no stream" (another number is a conflict); every later
/// append, read, delete or metadata change of that name is refused, and it is not listed.
pub async fn a_name_tombstone_takes_a_stream_that_never_had_an_event(store: Arc<dyn EventStore>) {
    let never = stream("customer-7");
    if store.backend() == "http" {
        // The HTTP API keeps its 404 for a stream without events: only the gRPC side offers
        // KurrentDB's tombstone.
        assert!(matches!(
            store.tombstone_stream_name(&never, None).await,
            Err(StoreError::Unsupported { .. })
        ));
        return;
    }
    assert!(matches!(
        store.tombstone_stream_name(&never, Some(Version(2))).await,
        Err(StoreError::Conflict(c)) if c.actual == Version::NONE
    ));
    store.tombstone_stream_name(&never, None).await.unwrap();
    let none = stream("customer-8");
    store
        .tombstone_stream_name(&none, Some(Version::NONE))
        .await
        .unwrap();
    for s in [&never, &none] {
        assert!(matches!(
            store.append(AppendRequest::new(s.clone(), ExpectedVersion::Any, deposits(1))).await,
            Err(StoreError::StreamDeleted(n)) if &n == s
        ));
        assert!(matches!(
            store
                .read_stream(s, Version(1), Direction::Forward, 10)
                .await,
            Err(StoreError::StreamDeleted(_))
        ));
        assert!(matches!(
            store.stream_version(s).await,
            Err(StoreError::StreamDeleted(_))
        ));
        assert!(matches!(
            store.tombstone_stream_name(s, None).await,
            Err(StoreError::StreamDeleted(_))
        ));
        assert!(matches!(
            store.tombstone_stream(s, None).await,
            Err(StoreError::StreamDeleted(_))
        ));
    }
    let listed = store.list_streams("customer-", None, 100).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    // A stream with events is tombstoned by it as by `tombstone_stream`.
    let lived = stream("customer-9");
    seed(&store, &lived, 2).await;
    store
        .tombstone_stream_name(&lived, Some(Version(2)))
        .await
        .unwrap();
    assert!(matches!(
        store.stream_version(&lived).await,
        Err(StoreError::StreamDeleted(_))
    ));
}

/// A delete with a stale expected version is a conflict with the missed events, as for an
/// append, and deletes nothing.
pub async fn a_stale_expected_version_on_delete_conflicts_with_the_missed_events(
    store: Arc<dyn EventStore>,
) {
    let s = stream("customer-5");
    seed(&store, &s, 130).await;
    let c = match store.delete_stream(&s, Some(Version(20))).await {
        Err(StoreError::Conflict(c)) => *c,
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert_eq!(c.expected, ExpectedVersion::Exact(Version(20)));
    assert_eq!(c.actual, Version(130));
    assert_eq!(
        versions(&c.concurrent_events),
        (21..=120).collect::<Vec<_>>()
    );
    assert!(c.truncated);
    assert!(matches!(
        store.tombstone_stream(&s, Some(Version(131))).await,
        Err(StoreError::Conflict(c)) if c.concurrent_events.is_empty() && c.actual == Version(130)
    ));
    assert_eq!(read_whole_stream(&store, &s).await.len(), 130);
    store.delete_stream(&s, Some(Version(130))).await.unwrap();
    assert!(read_whole_stream(&store, &s).await.is_empty());
}

/// A tombstoned stream refuses every later append (re-appends of its old events and
/// multi-stream parts too, writing nothing), read, version lookup, metadata and
/// subscription, forever; a later delete or scavenge changes nothing of that.
pub async fn a_tombstoned_stream_refuses_every_later_use(store: Arc<dyn EventStore>) {
    let s = stream("customer-9");
    let other = stream("customer-10");
    let old = deposits(3);
    write(&store, &s, ExpectedVersion::NoStream, old.clone()).await;
    store.tombstone_stream(&s, Some(Version(3))).await.unwrap();
    let head = store.head().await.unwrap();
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(Version(3)),
    ] {
        assert!(is_deleted(
            &append(&store, &s, expected, deposits(1)).await,
            &s
        ));
    }
    assert!(is_deleted(
        &append(&store, &s, ExpectedVersion::Any, old).await,
        &s
    ));
    let both = MultiAppendRequest::new(vec![
        AppendRequest::new(other.clone(), ExpectedVersion::Any, deposits(1)),
        AppendRequest::new(s.clone(), ExpectedVersion::Any, deposits(1)),
    ]);
    assert!(is_deleted(&store.append_multi(both).await, &s));
    assert_eq!(store.head().await.unwrap(), head, "nothing was written");
    assert!(read(&store, &other).await.unwrap().is_empty());
    assert!(is_deleted(&read(&store, &s).await, &s));
    assert!(is_deleted(&store.stream_version(&s).await, &s));
    assert!(is_deleted(&store.stream_metadata(&s).await, &s));
    assert!(is_deleted(
        &store.set_stream_metadata(&s, StreamMetadata::NONE).await,
        &s
    ));
    assert!(is_deleted(&store.delete_stream(&s, None).await, &s));
    assert!(is_deleted(&store.tombstone_stream(&s, None).await, &s));
    assert!(listed(&store, "customer-").await.is_empty());
    let mut sub = Arc::clone(&store).subscribe_stream(s.clone(), Version(1));
    let first = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
    assert!(
        matches!(&first, Some(Err(StoreError::StreamDeleted(_)))),
        "a subscription of a tombstoned stream fails, got {first:?}"
    );
    store.scavenge().await.unwrap();
    assert!(is_deleted(
        &append(&store, &s, ExpectedVersion::NoStream, deposits(1)).await,
        &s
    ));
}

/// A live subscription of a stream, caught up and waiting for new events, ends with
/// `StreamDeleted` when the stream is tombstoned: the tombstone wakes it, no later append
/// is needed.
pub async fn a_live_stream_subscription_ends_when_its_stream_is_tombstoned(
    store: Arc<dyn EventStore>,
) {
    let s = stream("customer-31");
    seed(&store, &s, 2).await;
    let mut sub = Arc::clone(&store).subscribe_stream(s.clone(), Version(1));
    for v in [1, 2] {
        let e = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
        assert!(
            matches!(&e, Some(Ok(e)) if e.version == Version(v)),
            "{e:?}"
        );
    }
    let waiting = tokio::spawn(async move { sub.next().await });
    tokio::task::yield_now().await;
    store.tombstone_stream(&s, None).await.unwrap();
    let ended = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the tombstone woke the waiting subscription")
        .unwrap();
    assert!(
        matches!(&ended, Some(Err(StoreError::StreamDeleted(n))) if *n == s),
        "got {ended:?}"
    );
}

/// Two callers changing different retention settings of one stream at the same moment
/// both take effect: a change is merged into the stored settings atomically, and a
/// setting a change leaves out keeps its value.
pub async fn concurrent_metadata_changes_of_different_settings_both_take_effect(
    store: Arc<dyn EventStore>,
) {
    let s = stream("customer-32");
    seed(&store, &s, 1).await;
    let only = |max_count: Option<u64>, max_age: Option<u64>| MetadataChange {
        max_count: max_count.map(Some),
        max_age_seconds: max_age.map(Some),
        truncate_before: None,
    };
    set(
        &store,
        &s,
        StreamMetadata {
            truncate_before: Some(Version(1)),
            ..StreamMetadata::NONE
        },
    )
    .await;
    for n in 1..=25u64 {
        let (a, b) = (Arc::clone(&store), Arc::clone(&store));
        let (s1, s2) = (s.clone(), s.clone());
        let count =
            tokio::spawn(async move { a.change_stream_metadata(&s1, only(Some(n), None)).await });
        let age = tokio::spawn(async move {
            b.change_stream_metadata(&s2, only(None, Some(1000 + n)))
                .await
        });
        let (count, age) = (count.await.unwrap().unwrap(), age.await.unwrap().unwrap());
        assert_eq!(count.max_count, Some(n), "a change answers what is stored");
        assert_eq!(age.max_age_seconds, Some(1000 + n));
        assert_eq!(
            store.stream_metadata(&s).await.unwrap(),
            StreamMetadata {
                max_count: Some(n),
                max_age_seconds: Some(1000 + n),
                truncate_before: Some(Version(1)),
            },
            "round {n}: neither change was lost, and the setting neither named was kept"
        );
    }
    let removed = store
        .change_stream_metadata(
            &s,
            MetadataChange {
                max_count: Some(None),
                ..MetadataChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(removed.max_count, None, "null removes a setting");
    assert_eq!(removed.max_age_seconds, Some(1025));
    let zero = MetadataChange {
        max_age_seconds: Some(Some(0)),
        ..MetadataChange::default()
    };
    assert!(matches!(
        store.change_stream_metadata(&s, zero).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.stream_metadata(&s).await.unwrap(), removed);
}

/// A soft-deleted stream can still be tombstoned (it had events).
pub async fn a_soft_deleted_stream_can_be_tombstoned(store: Arc<dyn EventStore>) {
    let s = stream("customer-3");
    seed(&store, &s, 2).await;
    store.delete_stream(&s, None).await.unwrap();
    store
        .tombstone_stream(&s, Some(Version::NONE))
        .await
        .unwrap();
    assert!(is_deleted(
        &append(&store, &s, ExpectedVersion::NoStream, deposits(1)).await,
        &s
    ));
}

/// `max_count` keeps the last n events for reads from the moment it is stored; versions
/// do not change, the stream's version stays, and removing the setting shows all again
/// (before a scavenge).
pub async fn max_count_keeps_only_the_last_events_from_the_moment_it_is_stored(
    store: Arc<dyn EventStore>,
) {
    let s = stream("sensor-1");
    seed(&store, &s, 150).await;
    let metadata = StreamMetadata {
        max_count: Some(10),
        ..StreamMetadata::NONE
    };
    set(&store, &s, metadata).await;
    assert_eq!(
        versions(&read_whole_stream(&store, &s).await),
        (141..=150).collect::<Vec<_>>()
    );
    let backward = store
        .read_stream(&s, Version(145), Direction::Backward, 100)
        .await
        .unwrap();
    assert_eq!(versions(&backward), vec![145, 144, 143, 142, 141]);
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(150));
    write(
        &store,
        &s,
        ExpectedVersion::Exact(Version(150)),
        deposits(2),
    )
    .await;
    assert_eq!(
        versions(&read_whole_stream(&store, &s).await),
        (143..=152).collect::<Vec<_>>()
    );
    set(&store, &s, StreamMetadata::NONE).await;
    assert_eq!(read_whole_stream(&store, &s).await.len(), 152);
}

/// `truncate_before` hides earlier versions; a `max_age` longer than the events' age hides
/// nothing; every setting together keeps what is within all of them.
pub async fn truncate_before_and_max_age_keep_what_is_within_every_setting(
    store: Arc<dyn EventStore>,
) {
    let s = stream("sensor-2");
    seed(&store, &s, 20).await;
    set(
        &store,
        &s,
        StreamMetadata {
            truncate_before: Some(Version(15)),
            ..StreamMetadata::NONE
        },
    )
    .await;
    assert_eq!(
        versions(&read_whole_stream(&store, &s).await),
        (15..=20).collect::<Vec<_>>()
    );
    let all = StreamMetadata {
        max_count: Some(3),
        max_age_seconds: Some(86_400),
        truncate_before: Some(Version(15)),
    };
    set(&store, &s, all).await;
    assert_eq!(
        versions(&read_whole_stream(&store, &s).await),
        vec![18, 19, 20]
    );
    // Settings are per stream.
    let other = stream("sensor-3");
    assert_eq!(
        store.stream_metadata(&other).await.unwrap(),
        StreamMetadata::NONE
    );
}

/// A setting that is not a positive integer is refused and nothing changes.
pub async fn zero_retention_settings_are_refused(store: Arc<dyn EventStore>) {
    let s = stream("sensor-4");
    seed(&store, &s, 3).await;
    for bad in [
        StreamMetadata {
            max_count: Some(0),
            ..StreamMetadata::NONE
        },
        StreamMetadata {
            max_age_seconds: Some(0),
            ..StreamMetadata::NONE
        },
        StreamMetadata {
            truncate_before: Some(Version(0)),
            ..StreamMetadata::NONE
        },
    ] {
        assert!(matches!(
            store.set_stream_metadata(&s, bad).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert_eq!(
        store.stream_metadata(&s).await.unwrap(),
        StreamMetadata::NONE
    );
    assert_eq!(read_whole_stream(&store, &s).await.len(), 3);
}

/// A scavenge erases what deletes and retention hide from the global log, queries,
/// conditions and subscriptions; the other events keep their positions, and a second
/// scavenge finds nothing more.
pub async fn scavenge_erases_hidden_events_everywhere_and_keeps_other_positions(
    store: Arc<dyn EventStore>,
) {
    let deleted = stream("customer-1");
    let tombstoned = stream("customer-2");
    let truncated = stream("customer-3");
    let kept = stream("customer-4");
    write(
        &store,
        &deleted,
        ExpectedVersion::Any,
        vec![tagged("Registered", &["email:ann"])],
    )
    .await; // 1
    write(&store, &kept, ExpectedVersion::Any, deposits(2)).await; // 2, 3
    write(
        &store,
        &tombstoned,
        ExpectedVersion::Any,
        vec![tagged("Registered", &["email:bob"])],
    )
    .await; // 4
    write(&store, &truncated, ExpectedVersion::Any, deposits(3)).await; // 5, 6, 7
    write(&store, &deleted, ExpectedVersion::Any, deposits(1)).await; // 8
    let before = read_everything(&store).await;
    assert_eq!(before.len(), 8);
    store.delete_stream(&deleted, None).await.unwrap();
    store.tombstone_stream(&tombstoned, None).await.unwrap();
    set(
        &store,
        &truncated,
        StreamMetadata {
            max_count: Some(1),
            ..StreamMetadata::NONE
        },
    )
    .await;
    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 5);
    assert_eq!(report.streams_scavenged, 3);
    let after = read_everything(&store).await;
    assert_eq!(positions(&after), vec![2, 3, 7]);
    let survivors: Vec<_> = before
        .iter()
        .filter(|e| [2, 3, 7].contains(&e.position.get()))
        .cloned()
        .collect();
    assert_eq!(ids(&after), ids(&survivors));
    assert_eq!(store.head().await.unwrap(), Position(8));
    // Filtered reads and queries no longer see erased events.
    let registered = store
        .read_all(
            Position(1),
            &Filter::all().types(vec![ty("Registered")]),
            100,
        )
        .await
        .unwrap();
    assert!(registered.events.is_empty());
    let query = Query {
        items: vec![QueryItem {
            types: vec![ty("Registered")],
            tags: vec![],
        }],
    };
    let page = store.query(&query, Position::ZERO, 100).await.unwrap();
    assert!(page.events.is_empty());
    // A condition does not fail on an erased event.
    let condition = MultiAppendRequest::from(AppendRequest::new(
        stream("customer-5"),
        ExpectedVersion::NoStream,
        vec![tagged("Registered", &["email:ann"])],
    ))
    .condition(query, Position::ZERO);
    let out = store.append_multi(condition).await.unwrap();
    assert_eq!(out.first_position, Position(9));
    // A subscription from the start delivers the survivors, then what is new.
    let mut sub = Arc::clone(&store).subscribe_all(Position(1), Filter::all());
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        while got.len() < 4 {
            match sub.next().await {
                Some(Ok(e)) => got.push(e.position.get()),
                other => panic!("subscription ended or failed: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, vec![2, 3, 7, 9]);
    // The streams read as before the scavenge.
    assert!(read(&store, &deleted).await.unwrap().is_empty());
    assert_eq!(
        versions(&read_whole_stream(&store, &truncated).await),
        vec![3]
    );
    assert_eq!(read_whole_stream(&store, &kept).await.len(), 2);
    let again = store.scavenge().await.unwrap();
    assert_eq!(again.events_removed, 0);
}

/// After a scavenge, a soft-deleted stream still never reuses a version, and the ids of
/// its erased events make no duplicate; erasing the log's last events reuses no position.
pub async fn after_a_scavenge_a_recreated_stream_still_goes_on_from_its_last_version(
    store: Arc<dyn EventStore>,
) {
    let s = stream("customer-8");
    let old = vec![event("Registered", json!({"email": "ann@example.com"}))];
    write(&store, &s, ExpectedVersion::NoStream, old.clone()).await;
    seed(&store, &s, 40).await;
    let head = store.head().await.unwrap();
    store.delete_stream(&s, None).await.unwrap();
    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 41);
    assert_eq!(store.stream_version(&s).await.unwrap(), Version::NONE);
    assert_eq!(
        store.head().await.unwrap(),
        head,
        "a scavenge does not move the head"
    );
    let out = write(&store, &s, ExpectedVersion::NoStream, old).await;
    assert_eq!(out.first_version, Version(42));
    assert!(
        out.first_position > head,
        "position {:?} was granted before the scavenge (head {head:?})",
        out.first_position
    );
    assert_eq!(versions(&read_whole_stream(&store, &s).await), vec![42]);
}

/// The id of a deleted event stays taken until a scavenge erases the event: re-appending
/// it before is refused as a partial duplicate, with nothing written; after, it is new.
pub async fn a_deleted_events_id_stays_taken_until_a_scavenge(store: Arc<dyn EventStore>) {
    let s = stream("customer-6");
    let old = deposits(2);
    write(&store, &s, ExpectedVersion::NoStream, old.clone()).await;
    store.delete_stream(&s, None).await.unwrap();
    let head = store.head().await.unwrap();
    assert!(matches!(
        append(&store, &s, ExpectedVersion::NoStream, old.clone()).await,
        Err(StoreError::PartialDuplicate(p)) if p.existing_ids.len() == 2
    ));
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(store.scavenge().await.unwrap().events_removed, 2);
    let out = write(&store, &s, ExpectedVersion::NoStream, old).await;
    assert_eq!(out.first_version, Version(3));
}

/// The stream's lifecycle tells how far a delete reached, also after the stream was
/// written again (what lets a read model tell a recreated stream from one that never went
/// away), and answers a tombstone rather than refusing it.
pub async fn the_lifecycle_remembers_a_delete_after_the_stream_is_written_again(
    store: Arc<dyn EventStore>,
) {
    let s = stream("account-31");
    if store.backend() == "http" {
        // The HTTP API does not expose the lifecycle: the client says so.
        assert!(matches!(
            store.stream_lifecycle(&s).await,
            Err(StoreError::Unsupported { .. })
        ));
        return;
    }
    let fresh = store.stream_lifecycle(&s).await.unwrap();
    assert_eq!(fresh, concord_core::StreamLifecycle::default());
    seed(&store, &s, 3).await;
    store
        .change_stream_metadata(
            &s,
            MetadataChange {
                max_count: Some(Some(10)),
                ..MetadataChange::default()
            },
        )
        .await
        .unwrap();
    store.delete_stream(&s, None).await.unwrap();
    let deleted = store.stream_lifecycle(&s).await.unwrap();
    assert_eq!(deleted.deleted_through, Version(3));
    assert!(!deleted.tombstoned);
    assert_eq!(deleted.metadata.max_count, Some(10));
    write(&store, &s, ExpectedVersion::NoStream, deposits(2)).await;
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(5));
    assert_eq!(
        store.stream_lifecycle(&s).await.unwrap().deleted_through,
        Version(3)
    );
    store.tombstone_stream(&s, None).await.unwrap();
    assert!(store.stream_lifecycle(&s).await.unwrap().tombstoned);
}

/// Expands the lifecycle specs against `$factory`, one `#[tokio::test]` each.
#[macro_export]
macro_rules! lifecycle_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@specs $factory;
            soft_delete_hides_the_stream_from_reads_and_listings,
            an_append_recreates_a_soft_deleted_stream_and_versions_are_never_reused,
            deleting_a_stream_without_events_is_not_found,
            a_name_tombstone_takes_a_stream_that_never_had_an_event,
            a_stale_expected_version_on_delete_conflicts_with_the_missed_events,
            a_tombstoned_stream_refuses_every_later_use,
            a_soft_deleted_stream_can_be_tombstoned,
            max_count_keeps_only_the_last_events_from_the_moment_it_is_stored,
            truncate_before_and_max_age_keep_what_is_within_every_setting,
            zero_retention_settings_are_refused,
            scavenge_erases_hidden_events_everywhere_and_keeps_other_positions,
            after_a_scavenge_a_recreated_stream_still_goes_on_from_its_last_version,
            a_deleted_events_id_stays_taken_until_a_scavenge,
            a_live_stream_subscription_ends_when_its_stream_is_tombstoned,
            concurrent_metadata_changes_of_different_settings_both_take_effect,
            the_lifecycle_remembers_a_delete_after_the_stream_is_written_again,
        );
    };
}
