//! Erasure that holds on disk: after a delete (or a tombstone, or retention) and a
//! scavenge, the bytes of the erased events are in none of the store's files (database,
//! write-ahead log, shared memory), while every other event reads as before and recovery
//! accepts the gaps a scavenge leaves. Each test writes events carrying a unique marker
//! and searches the raw files for it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use concord_core::{
    AppendRequest, Direction, EventStore, ExpectedVersion, Filter, NewEvent, Position,
    StreamMetadata, StreamName, Tag, Version,
};
use concord_embedded::{DATA_FILE, EmbeddedStore};

fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

/// An event whose data, metadata and tag all carry `marker`.
fn marked(marker: &str) -> NewEvent {
    NewEvent::json(
        "Registered",
        &serde_json::json!({ "email": format!("{marker}@example.com") }),
    )
    .unwrap()
    .with_tags(vec![Tag::new(format!("email:{marker}")).unwrap()])
}

async fn write(store: &EmbeddedStore, s: &str, events: Vec<NewEvent>) {
    let _ = store
        .append(AppendRequest::new(stream(s), ExpectedVersion::Any, events))
        .await
        .unwrap();
}

/// The files of the store's directory that hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(path.display().to_string());
        }
    }
    found
}

/// The bytes of the store's files (database, write-ahead log, shared memory).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn unique(what: &str) -> String {
    format!("{what}-{}", uuid_like())
}

fn uuid_like() -> String {
    concord_core::EventId::new().to_string().replace('-', "")
}

#[tokio::test]
async fn a_scavenge_erases_deleted_tombstoned_and_truncated_events_from_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let deleted = unique("deleted");
    let tombstoned = unique("tombstoned");
    let truncated = unique("truncated");
    let kept = unique("kept");
    write(
        &store,
        "customer-1",
        vec![marked(&deleted), marked(&deleted)],
    )
    .await;
    write(&store, "customer-2", vec![marked(&kept)]).await;
    write(&store, "customer-3", vec![marked(&tombstoned)]).await;
    write(
        &store,
        "sensor-1",
        vec![marked(&truncated), marked("recent")],
    )
    .await;
    // Enough other events that the markers' pages are checkpointed into the file too.
    for n in 0..50 {
        let filler: Vec<NewEvent> = (0..100)
            .map(|i| NewEvent::json("Filled", &serde_json::json!({ "n": n * 100 + i })).unwrap())
            .collect();
        write(&store, &format!("filler-{n}"), filler).await;
    }
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
        !files_holding(dir.path(), &deleted).is_empty(),
        "the search finds what is there"
    );

    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 4);
    assert_eq!(report.streams_scavenged, 3);
    for marker in [&deleted, &tombstoned, &truncated] {
        assert_eq!(
            files_holding(dir.path(), marker),
            Vec::<String>::new(),
            "{marker}"
        );
    }
    assert!(!files_holding(dir.path(), &kept).is_empty());

    // Reopened, recovery accepts the gaps; reads, queries and versions are as before.
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.head().await.unwrap(), Position(5006));
    // Pages may be short where a scavenge left gaps; following `next_from` finds the rest.
    let mut first = Vec::new();
    let mut from = Position(1);
    while first.len() < 3 {
        let page = store.read_all(from, &Filter::all(), 3).await.unwrap();
        first.extend(page.events.iter().map(|e| e.position.get()));
        from = page.next_from;
    }
    assert_eq!(first[..3], [3, 6, 7]);
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
    assert_eq!(out.appended().first_position, Position(5007));
    for marker in [&deleted, &tombstoned, &truncated] {
        assert_eq!(
            files_holding(dir.path(), marker),
            Vec::<String>::new(),
            "{marker}"
        );
    }
}

#[tokio::test]
async fn recovery_keeps_the_head_when_a_scavenge_erased_the_last_events() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        write(&store, "account-1", vec![marked("a")]).await;
        write(&store, "customer-9", vec![marked("b"), marked("c")]).await;
        store
            .delete_stream(&stream("customer-9"), None)
            .await
            .unwrap();
        assert_eq!(store.scavenge().await.unwrap().events_removed, 2);
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.head().await.unwrap(), Position(3));
    assert_eq!(
        store.stream_version(&stream("customer-9")).await.unwrap(),
        Version::NONE
    );
    let out = store
        .append(AppendRequest::new(
            stream("customer-9"),
            ExpectedVersion::NoStream,
            vec![marked("d")],
        ))
        .await
        .unwrap();
    assert_eq!(out.appended().first_version, Version(3));
    assert_eq!(out.appended().first_position, Position(4));
}

#[tokio::test]
async fn a_format_4_store_is_migrated_on_open_and_can_delete_and_scavenge() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        write(&store, "customer-1", vec![marked("old"), marked("old")]).await;
    }
    // Turn it back into format 4, as an older Concord wrote it.
    {
        let raw = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
        raw.execute_batch(
            "DROP TABLE stream_lifecycle;
             DROP TABLE scavenge_state;
             DROP TABLE event_ids;
             DROP TABLE type_index;
             DROP TABLE category_index;
             CREATE UNIQUE INDEX events_by_event_id ON events (event_id, stream_id);
             CREATE INDEX events_by_type ON events (type);
             CREATE INDEX events_by_category ON events (category);
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let marker = unique("migrated");
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        write(&store, "customer-1", vec![marked(&marker)]).await;
        store
            .delete_stream(&stream("customer-1"), Some(Version(3)))
            .await
            .unwrap();
        assert_eq!(store.scavenge().await.unwrap().events_removed, 3);
    }
    assert_eq!(files_holding(dir.path(), &marker), Vec::<String>::new());
    let raw = rusqlite::Connection::open(dir.path().join(DATA_FILE)).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 8);
}

#[tokio::test]
async fn a_store_created_without_incremental_vacuum_gets_it_at_its_first_scavenge() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DATA_FILE);
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        write(&store, "account-1", vec![marked("kept")]).await;
    }
    // As stores created before incremental vacuum have it.
    {
        let raw = rusqlite::Connection::open(&file).unwrap();
        raw.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM")
            .unwrap();
        let mode: i64 = raw
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 0, "the old store is as old stores are");
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let pad = "x".repeat(1000);
    for n in 0..20 {
        let events: Vec<NewEvent> = (0..100)
            .map(|i| {
                NewEvent::json("Read", &serde_json::json!({ "n": n * 100 + i, "pad": pad }))
                    .unwrap()
            })
            .collect();
        write(&store, &format!("sensor-{n}"), events).await;
    }
    for n in 0..20 {
        store
            .delete_stream(&stream(&format!("sensor-{n}")), None)
            .await
            .unwrap();
    }
    let before = dir_bytes(dir.path());
    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 2000);
    let after = dir_bytes(dir.path());
    assert!(
        after * 4 < before,
        "the file shrank from {before} to {after} bytes"
    );
    assert!(report.bytes_reclaimed > 0);
    assert_eq!(
        store
            .read_stream(&stream("account-1"), Version(1), Direction::Forward, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    drop(store);
    let raw = rusqlite::Connection::open(&file).unwrap();
    let mode: i64 = raw
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 2, "incremental from now on");
}

/// Where SQLite leaves old bytes a delete never reaches: when it rebuilds a B-tree page
/// while rebalancing, the cells that stay are copied to new offsets and their old copies
/// stay in the page's unallocated space. This puts an erased event's bytes there (as such
/// a rebuild would have, while the event was still kept) and checks the scavenge zeroes
/// them, touching nothing SQLite reads.
#[tokio::test]
async fn a_scavenge_zeroes_old_copies_of_erased_events_in_the_free_space_of_pages() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DATA_FILE);
    let gone = unique("gone");
    let pad = "k".repeat(300);
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        for n in 0..40 {
            let kept: Vec<NewEvent> = (0..10)
                .map(|i| {
                    NewEvent::json("Kept", &serde_json::json!({ "i": i, "pad": pad })).unwrap()
                })
                .collect();
            write(&store, &format!("kept-{n}"), kept).await;
        }
        write(&store, "closed-1", vec![marked(&gone)]).await;
    }
    // The old copy: the marker in the unallocated space of leaf pages.
    let planted = {
        let raw = rusqlite::Connection::open(&file).unwrap();
        let pages: i64 = raw
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let mut planted = 0;
        for pgno in 3..=pages {
            let mut page: Vec<u8> = raw
                .query_row(
                    "SELECT data FROM sqlite_dbpage WHERE pgno = ?1",
                    [pgno],
                    |r| r.get(0),
                )
                .unwrap();
            if page[0] != 13 {
                continue;
            }
            let cells = usize::from(u16::from_be_bytes([page[3], page[4]]));
            let gap = 8 + 2 * cells;
            let content = usize::from(u16::from_be_bytes([page[5], page[6]]));
            if content < gap + gone.len() + 16 {
                continue;
            }
            page[gap + 8..gap + 8 + gone.len()].copy_from_slice(gone.as_bytes());
            raw.execute(
                "UPDATE sqlite_dbpage SET data = ?2 WHERE pgno = ?1",
                (pgno, &page),
            )
            .unwrap();
            planted += 1;
        }
        raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        planted
    };
    assert!(planted > 0, "some leaf page had free space to plant in");
    assert_eq!(files_holding(dir.path(), &gone).len(), 1);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store
        .tombstone_stream(&stream("closed-1"), None)
        .await
        .unwrap();
    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 1);
    assert_eq!(
        files_holding(dir.path(), &gone),
        Vec::<String>::new(),
        "the erased event's bytes are in no file"
    );
    for n in 0..40 {
        let events = store
            .read_stream(
                &stream(&format!("kept-{n}")),
                Version(1),
                Direction::Forward,
                20,
            )
            .await
            .unwrap();
        assert_eq!(events.len(), 10, "kept-{n} reads as before");
    }
    drop(store);
    let raw = rusqlite::Connection::open(&file).unwrap();
    let check: String = raw
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
