//! Erasure on PostgreSQL: after a delete (or a tombstone, or retention) and a scavenge, no
//! row of the store's tables holds the erased events' bytes, every other event keeps its
//! position, and after the operator's `VACUUM FULL` (docs/design/postgres-layout.md) the
//! bytes are in none of the tables' files either. Each test writes events carrying a unique
//! marker and searches for it with SQL and in the raw relation files. Also: retention by age,
//! a format-1 schema migrated on connect, and appends answered while a scavenge runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::time::Duration;

use concord_core::{
    AppendRequest, Direction, EventStore, ExpectedVersion, Filter, NewEvent, Position,
    StreamMetadata, StreamName, Tag, Version,
};
use concord_postgres::{FORMAT_VERSION, PostgresStore};
use concord_testkit::postgres::{PostgresServer, shared, unique_schema};

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
    .with_metadata(concord_core::Json::from_value(
        &serde_json::json!({ "by": marker }),
    ))
    .with_tags(vec![Tag::new(format!("email:{marker}")).unwrap()])
}

fn unique(what: &str) -> String {
    format!(
        "{what}-{}",
        concord_core::EventId::new().to_string().replace('-', "")
    )
}

async fn write(store: &PostgresStore, s: &str, events: Vec<NewEvent>) {
    let _ = store
        .append(AppendRequest::new(stream(s), ExpectedVersion::Any, events))
        .await
        .unwrap();
}

async fn connect(server: &PostgresServer, schema: &str) -> PostgresStore {
    PostgresStore::connect(&format!("{}?schema={schema}", server.url()))
        .await
        .unwrap()
}

/// How many rows of the schema's event and stream tables hold `marker` in any column.
fn rows_holding(server: &PostgresServer, schema: &str, marker: &str) -> u64 {
    let events = server.psql(&format!(
        "SELECT count(*) FROM {schema}.concord_events WHERE \
         convert_from(data, 'UTF8') LIKE '%{marker}%' OR metadata LIKE '%{marker}%' \
         OR array_to_string(tags, ' ') LIKE '%{marker}%'"
    ));
    let streams = server.psql(&format!(
        "SELECT count(*) FROM {schema}.concord_streams WHERE stream LIKE '%{marker}%'"
    ));
    events.trim().parse::<u64>().unwrap() + streams.trim().parse::<u64>().unwrap()
}

/// The files of the schema's relations (tables, TOAST, indexes) that hold `needle`.
fn files_holding(server: &PostgresServer, schema: &str, needle: &str) -> Vec<String> {
    server.psql("CHECKPOINT");
    let data_dir = server.psql("SHOW data_directory");
    let paths = server.psql(&format!(
        "SELECT pg_relation_filepath(c.oid) FROM pg_class c \
         WHERE c.relfilenode <> 0 AND (c.relnamespace = '{schema}'::regnamespace \
         OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE relnamespace = '{schema}'::regnamespace) \
         OR c.oid IN (SELECT i.indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
                      WHERE t.relnamespace = '{schema}'::regnamespace AND t.relkind = 't'))"
    ));
    let mut found = Vec::new();
    let mut searched = 0;
    for relative in paths.lines().filter(|l| !l.is_empty()) {
        let path = Path::new(data_dir.trim()).join(relative);
        // A relation's main file; further 1 GB segments do not exist at these sizes.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        searched += 1;
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(path.display().to_string());
        }
    }
    assert!(searched >= 3, "the search reads the tables' files: {paths}");
    found
}

#[tokio::test]
async fn a_scavenge_erases_deleted_tombstoned_and_truncated_events_from_every_row() {
    let server = shared();
    let schema = unique_schema();
    let store = connect(server, &schema).await;
    let deleted = unique("deleted");
    let tombstoned = unique("tombstoned");
    let truncated = unique("truncated");
    let kept = unique("kept");
    write(
        &store,
        "customer-1",
        vec![marked(&deleted), marked(&deleted)],
    )
    .await; // 1, 2
    write(&store, "customer-2", vec![marked(&kept)]).await; // 3
    write(&store, "customer-3", vec![marked(&tombstoned)]).await; // 4
    write(
        &store,
        "sensor-1",
        vec![marked(&truncated), marked("recent")],
    )
    .await; // 5, 6
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
    assert_eq!(
        rows_holding(server, &schema, &deleted),
        2,
        "the search finds what is there"
    );

    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 4);
    assert_eq!(report.streams_scavenged, 3);
    for marker in [&deleted, &tombstoned, &truncated] {
        assert_eq!(rows_holding(server, &schema, marker), 0, "{marker}");
    }
    assert_eq!(rows_holding(server, &schema, &kept), 1);

    // Another store on the schema (another process) reads what is left, where it was.
    let other = connect(server, &schema).await;
    let page = other
        .read_all(Position(1), &Filter::all(), 10)
        .await
        .unwrap();
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.position.get())
            .collect::<Vec<_>>(),
        vec![3, 6]
    );
    assert_eq!(page.head, Position(6));
    let sensor = other
        .read_stream(&stream("sensor-1"), Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        sensor.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![2]
    );
    // The erased ids are free again; versions go on; positions follow the head.
    let out = other
        .append(AppendRequest::new(
            stream("customer-1"),
            ExpectedVersion::NoStream,
            vec![marked("again")],
        ))
        .await
        .unwrap();
    assert_eq!(out.appended().first_version, Version(3));
    assert_eq!(out.appended().first_position, Position(7));
}

#[tokio::test]
async fn after_a_scavenge_and_the_operators_vacuum_full_no_table_file_holds_the_erased_bytes() {
    // A server of its own: VACUUM FULL keeps a deleted row that an older snapshot may still
    // see, and the other tests' transactions on a shared server hold such snapshots.
    let own = PostgresServer::start();
    let server = &own;
    let schema = unique_schema();
    let store = connect(server, &schema).await;
    let deleted = unique("deleted");
    let kept = unique("kept");
    write(&store, "customer-1", vec![marked(&deleted)]).await;
    write(&store, "customer-2", vec![marked(&kept)]).await;
    store
        .delete_stream(&stream("customer-1"), None)
        .await
        .unwrap();
    assert!(
        !files_holding(server, &schema, &deleted).is_empty(),
        "the search finds what is on disk"
    );
    assert_eq!(store.scavenge().await.unwrap().events_removed, 1);
    // A deleted row is a dead tuple until VACUUM; VACUUM FULL rewrites the table and its
    // indexes into new files, without the dead tuples' bytes.
    server.psql(&format!("VACUUM FULL {schema}.concord_events"));
    server.psql(&format!("VACUUM FULL {schema}.concord_streams"));
    assert_eq!(
        files_holding(server, &schema, &deleted),
        Vec::<String>::new()
    );
    assert!(!files_holding(server, &schema, &kept).is_empty());
}

#[tokio::test]
async fn a_format_1_schema_is_migrated_on_connect_and_its_streams_can_be_deleted_and_scavenged() {
    let server = shared();
    let schema = unique_schema();
    let store = connect(server, &schema).await;
    let old = unique("old");
    write(&store, "customer-1", vec![marked(&old), marked(&old)]).await;
    write(&store, "customer-2", vec![marked("other")]).await;
    drop(store);
    // Back to format 1 as an older Concord left it: no lifecycle columns (and no views, no
    // durable head).
    server.psql(&format!(
        "DROP VIEW {schema}.concord_stream_durable; DROP TABLE {schema}.concord_durable; \
         DROP VIEW {schema}.concord_stream_state; DROP INDEX {schema}.concord_streams_lifecycle; \
         ALTER TABLE {schema}.concord_streams DROP COLUMN deleted_through, \
         DROP COLUMN tombstoned, DROP COLUMN max_count, DROP COLUMN max_age_seconds, \
         DROP COLUMN truncate_before, DROP COLUMN erased_through; \
         UPDATE {schema}.concord_meta SET format_version = 1"
    ));

    let store = connect(server, &schema).await;
    assert_eq!(common::format_version(&schema), FORMAT_VERSION);
    assert_eq!(
        store.stream_version(&stream("customer-1")).await.unwrap(),
        Version(2)
    );
    store
        .delete_stream(&stream("customer-1"), Some(Version(2)))
        .await
        .unwrap();
    assert_eq!(store.scavenge().await.unwrap().events_removed, 2);
    assert_eq!(rows_holding(server, &schema, &old), 0);
    let listed = store.list_streams("customer-", None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].stream, stream("customer-2"));
}

#[tokio::test]
async fn appends_go_on_while_a_scavenge_erases_a_large_stream_in_chunks() {
    let server = shared();
    let schema = unique_schema();
    let store = connect(server, &schema).await;
    for _ in 0..10 {
        let events = (0..500)
            .map(|i| NewEvent::json("Read", &serde_json::json!({ "i": i })).unwrap())
            .collect();
        write(&store, "sensor-9", events).await;
    }
    store
        .delete_stream(&stream("sensor-9"), Some(Version(5000)))
        .await
        .unwrap();
    let scavenging = {
        let store = store.clone();
        tokio::spawn(async move { store.scavenge().await })
    };
    // Appends to the scavenged stream and to others are answered meanwhile (the stream's
    // lock is held for one chunk of 1000 at a time, five chunks here).
    let mut appended: usize = 0;
    let mut during = 0;
    while !scavenging.is_finished() || appended < 20 {
        let target = if appended.is_multiple_of(2) {
            "sensor-9"
        } else {
            "sensor-10"
        };
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            store.append(AppendRequest::new(
                stream(target),
                ExpectedVersion::Any,
                vec![NewEvent::json("Read", &serde_json::json!({ "late": appended })).unwrap()],
            )),
        )
        .await
        .expect("an append waits for one chunk at most, not the whole scavenge")
        .unwrap();
        assert!(out.appended().first_position.get() > 5000);
        appended += 1;
        if !scavenging.is_finished() {
            during += 1;
        }
    }
    assert!(during > 0, "no append was answered while the scavenge ran");
    let report = scavenging.await.unwrap().unwrap();
    assert_eq!(report.events_removed, 5000);
    assert_eq!(report.streams_scavenged, 1);
    let sensor = store
        .read_stream(&stream("sensor-9"), Version(1), Direction::Forward, 1000)
        .await
        .unwrap();
    assert_eq!(sensor.len(), appended.div_ceil(2));
    assert!(sensor.iter().all(|e| e.version.get() > 5000));
}

#[tokio::test]
async fn max_age_hides_events_recorded_too_long_ago_and_a_scavenge_erases_exactly_those() {
    let server = shared();
    let schema = unique_schema();
    let store = connect(server, &schema).await;
    let old = unique("old");
    write(&store, "sensor-1", vec![marked(&old), marked(&old)]).await;
    // Recorded two hours ago, as far as the table says (no waiting on the clock).
    server.psql(&format!(
        "UPDATE {schema}.concord_events SET recorded_at = recorded_at - 7200000"
    ));
    write(&store, "sensor-1", vec![marked("fresh")]).await;
    let s = stream("sensor-1");
    let _ = store
        .set_stream_metadata(
            &s,
            StreamMetadata {
                max_age_seconds: Some(3600),
                ..StreamMetadata::NONE
            },
        )
        .await
        .unwrap();
    let read = store
        .read_stream(&s, Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(3));
    let report = store.scavenge().await.unwrap();
    assert_eq!(report.events_removed, 2);
    assert_eq!(rows_holding(server, &schema, &old), 0);
    assert_eq!(
        server
            .psql(&format!(
                "SELECT erased_through FROM {schema}.concord_streams WHERE stream = 'sensor-1'"
            ))
            .trim(),
        "2"
    );
    // Without the setting, only the erased events stay gone.
    let _ = store
        .set_stream_metadata(&s, StreamMetadata::NONE)
        .await
        .unwrap();
    let read = store
        .read_stream(&s, Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(store.scavenge().await.unwrap().events_removed, 0);
}
