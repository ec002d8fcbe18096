//! The store's own schema: created on first connect, shared by every store on the same
//! `?schema=`, refused by name when a newer Concord wrote it; and the URL's multi-host form.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use concord_core::{AppendRequest, EventStore, EventType, ExpectedVersion, Json, NewEvent};
use concord_postgres::{FORMAT_VERSION, PostgresError, PostgresStore};
use concord_testkit::postgres::{shared, unique_schema};

fn append(stream: &str) -> AppendRequest {
    AppendRequest::new(
        concord_core::StreamName::new(stream).unwrap(),
        ExpectedVersion::Any,
        vec![NewEvent::new(
            EventType::new("Opened").unwrap(),
            Json::empty_object(),
        )],
    )
}

/// A schema no other test uses, and the store URL naming it.
fn fresh_schema() -> (String, String) {
    let schema = unique_schema();
    let url = format!("{}?schema={schema}", shared().url());
    (schema, url)
}

#[tokio::test]
async fn a_schema_written_by_a_newer_concord_is_refused_naming_both_versions() {
    let server = shared();
    let (schema, url) = fresh_schema();
    drop(PostgresStore::connect(&url).await.unwrap());
    server.psql(&format!(
        "UPDATE {schema}.concord_meta SET format_version = {}",
        FORMAT_VERSION + 1
    ));
    let error = PostgresStore::connect(&url).await.unwrap_err();
    assert!(
        matches!(error, PostgresError::NewerSchema { found, known, .. }
            if found == FORMAT_VERSION + 1 && known == FORMAT_VERSION),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&schema), "{message}");
    assert!(
        message.contains(&(FORMAT_VERSION + 1).to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn stores_in_different_schemas_of_one_database_are_apart() {
    let server = shared();
    let a = PostgresStore::connect(&server.url_with_fresh_schema())
        .await
        .unwrap();
    let b = PostgresStore::connect(&server.url_with_fresh_schema())
        .await
        .unwrap();
    let _ = a.append(append("account-1")).await.unwrap();
    assert_eq!(a.head().await.unwrap().get(), 1);
    assert_eq!(b.head().await.unwrap().get(), 0);
}

#[tokio::test]
async fn a_multi_host_url_finds_the_writable_server_past_a_dead_one() {
    let server = shared();
    // A port nothing listens on, then the real server: libpq's multi-host form.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let url = format!(
        "postgres://postgres@127.0.0.1:{dead_port},127.0.0.1:{}/postgres?target_session_attrs=read-write&schema={}",
        server.port(),
        unique_schema()
    );
    let store = PostgresStore::connect(&url).await.unwrap();
    let outcome = store.append(append("account-1")).await.unwrap();
    assert_eq!(outcome.appended().first_position.get(), 1);
}

#[tokio::test]
async fn no_reachable_server_is_a_connect_error_naming_the_hosts() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let error = PostgresStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .await
        .unwrap_err();
    assert!(matches!(error, PostgresError::Connect { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
}

/// The names of the lone functions in `schema`.
fn lone_functions(schema: &str) -> Vec<String> {
    let server = shared();
    server
        .psql(&format!(
            "SELECT proname FROM pg_proc WHERE pronamespace = '{schema}'::regnamespace \
             AND proname LIKE 'concord\\_append\\_lone\\_%' ORDER BY proname"
        ))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_build_adds_its_lone_function_once_and_again_when_it_is_missing() {
    let server = shared();
    let (schema, url) = fresh_schema();
    let store = PostgresStore::connect(&url).await.unwrap();
    let first = lone_functions(&schema);
    assert_eq!(first.len(), 1, "{first:?}");
    drop(PostgresStore::connect(&url).await.unwrap());
    assert_eq!(lone_functions(&schema), first);

    // Dropped (a schema restored without it, say): the next connect adds it back, and lone
    // appends of a store connected since work.
    server.psql(&format!("DROP FUNCTION {schema}.{}", first[0]));
    assert!(lone_functions(&schema).is_empty());
    let again = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(lone_functions(&schema), first);
    for _ in 0..3 {
        let _ = again.append(append("account-9")).await.unwrap();
    }
    assert_eq!(again.head().await.unwrap().get(), 3);
    drop(store);
}

/// Whether an update of `stream`'s row that changes `version` and `last_position` (what
/// appends did until format 4, and a scavenge that erases the stream's last events still
/// does) is a HOT update (in place, no new index entries); rolled back.
fn version_updates_in_place(schema: &str, stream: &str) -> bool {
    let out = shared().psql(&format!(
        "BEGIN; UPDATE {schema}.concord_streams SET version = version + 1, \
         last_position = last_position + 1 WHERE stream = '{stream}'; \
         SELECT 'hot=' || pg_stat_get_xact_tuples_hot_updated('{schema}.concord_streams'::regclass); \
         ROLLBACK;"
    ));
    let hot = out
        .lines()
        .find_map(|l| l.strip_prefix("hot="))
        .unwrap_or_else(|| panic!("no count in {out:?}"));
    hot == "1"
}

#[tokio::test]
async fn a_format_2_schema_is_migrated_so_that_a_stream_rows_version_is_updated_in_place() {
    let server = shared();
    let (schema, url) = fresh_schema();
    let store = PostgresStore::connect(&url).await.unwrap();
    let _ = store.append(append("account-1")).await.unwrap();
    drop(store);
    assert!(version_updates_in_place(&schema, "account-1"));
    // Back to format 2 as the previous Concord left it: `version` in the index predicate
    // (and no durable head).
    server.psql(&format!(
        "DROP VIEW {schema}.concord_stream_durable; DROP TABLE {schema}.concord_durable; \
         DROP INDEX {schema}.concord_streams_lifecycle; \
         CREATE INDEX concord_streams_lifecycle ON {schema}.concord_streams (stream) \
         WHERE deleted_through > erased_through OR (tombstoned AND erased_through < version) \
         OR max_count IS NOT NULL OR max_age_seconds IS NOT NULL OR truncate_before IS NOT NULL; \
         UPDATE {schema}.concord_meta SET format_version = 2"
    ));
    assert!(!version_updates_in_place(&schema, "account-1"));

    let store = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(common::format_version(&schema), FORMAT_VERSION);
    assert!(version_updates_in_place(&schema, "account-1"));
    let _ = store.append(append("account-1")).await.unwrap();
    assert_eq!(store.head().await.unwrap().get(), 2);
}

/// Every row an append could update, each with its physical place and the transaction that
/// wrote it (`ctid`, `xmin`): an update of the row changes both.
fn row_versions(schema: &str) -> String {
    shared().psql(&format!(
        "SELECT 'head ' || ctid::text || ' ' || xmin::text FROM {schema}.concord_head \
         UNION ALL SELECT stream || ' ' || ctid::text || ' ' || xmin::text \
         FROM {schema}.concord_streams ORDER BY 1"
    ))
}

/// A snapshot held open elsewhere in the database (a backup, a long report) keeps every
/// old version of an updated row; had appends updated the head row or their streams' rows,
/// each would walk more of them (at 64 writers beside one such snapshot: a quarter of the
/// rate). They write new rows only.
#[tokio::test]
async fn appends_update_no_row_so_a_snapshot_held_open_elsewhere_leaves_them_nothing_to_walk() {
    let (schema, url) = fresh_schema();
    let store = std::sync::Arc::new(PostgresStore::connect(&url).await.unwrap());
    let streams = ["account-1", "account-2", "account-3"];
    for s in streams {
        let _ = store.append(append(s)).await.unwrap();
    }
    let before = row_versions(&schema);
    assert_eq!(before.lines().count(), 4, "{before}");

    // Lone appends, then batches of many callers at once.
    for _ in 0..20 {
        let _ = store.append(append("account-1")).await.unwrap();
    }
    let callers = (0..60).map(|i| {
        let store = store.clone();
        async move { store.append(append(streams[i % 3])).await }
    });
    for outcome in futures::future::join_all(callers).await {
        let _ = outcome.unwrap();
    }

    assert_eq!(row_versions(&schema), before, "an append updated a row");
    assert_eq!(store.head().await.unwrap().get(), 83);
    let account_1 = concord_core::StreamName::new("account-1").unwrap();
    assert_eq!(store.stream_version(&account_1).await.unwrap().get(), 41);
}

#[tokio::test]
async fn the_write_functions_always_run_on_generic_plans() {
    let (schema, url) = fresh_schema();
    let _store = PostgresStore::connect(&url).await.unwrap();
    let listed = shared().psql(&format!(
        "SELECT string_agg(split_part(p.proname, '_', 3) || '=' || \
           coalesce(array_to_string(p.proconfig, ','), ''), ' ' ORDER BY p.proname) \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = '{schema}' AND p.proname LIKE 'concord\\_append\\_%'"
    ));
    assert_eq!(
        listed.trim(),
        "batch=plan_cache_mode=force_generic_plan lone=plan_cache_mode=force_generic_plan \
         one=plan_cache_mode=force_generic_plan"
    );
}

/// Format 4 had no durable head: every commit waited for its flush. The migration marks the
/// head it finds, so readers of the migrated schema see every event at once.
#[tokio::test]
async fn a_format_4_schema_is_migrated_with_its_head_marked_durable() {
    let server = shared();
    let (schema, url) = fresh_schema();
    let store = PostgresStore::connect(&url).await.unwrap();
    let _ = store.append(append("account-1")).await.unwrap();
    let _ = store.append(append("account-2")).await.unwrap();
    drop(store);
    server.psql(&format!(
        "DROP VIEW {schema}.concord_stream_durable; DROP TABLE {schema}.concord_durable; \
         UPDATE {schema}.concord_meta SET format_version = 4"
    ));

    let store = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(common::format_version(&schema), FORMAT_VERSION);
    assert_eq!(common::greatest_mark(&schema), 2);
    assert_eq!(store.head().await.unwrap().get(), 2);
    let stream = concord_core::StreamName::new("account-2").unwrap();
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        concord_core::Version(1)
    );
    let appended = store.append(append("account-2")).await.unwrap();
    assert_eq!(appended.appended().last_position.get(), 3);
}

/// Schema `schema` as a format-5 Concord left it: the tag index holds every event.
fn back_to_format_5(schema: &str) {
    shared().psql(&format!(
        "DROP INDEX {schema}.concord_events_tags; \
         CREATE INDEX concord_events_tags ON {schema}.concord_events USING gin (tags); \
         UPDATE {schema}.concord_meta SET format_version = 5"
    ));
}

/// The tag index's definition in schema `schema`, as `pg_indexes` prints it.
fn tag_index(schema: &str) -> String {
    shared().psql(&format!(
        "SELECT indexdef FROM pg_indexes \
         WHERE schemaname = '{schema}' AND indexname = 'concord_events_tags'"
    ))
}

/// Format 5's tag index held every event, tags or not; format 6's only those with tags, so
/// an untagged event costs it nothing. The migration rebuilds it, and reads by tags find
/// what they found before.
#[tokio::test]
async fn a_format_5_schema_is_migrated_to_a_tag_index_of_the_events_with_tags() {
    let (schema, url) = fresh_schema();
    let store = PostgresStore::connect(&url).await.unwrap();
    assert!(tag_index(&schema).contains("WHERE (tags <> '{}'::text[])"));
    let tag = concord_core::Tag::new("seat:1").unwrap();
    let mut tagged = append("seat-1");
    tagged.events = tagged
        .events
        .into_iter()
        .map(|e| e.with_tags(vec![tag.clone()]))
        .collect();
    let _ = store.append(append("account-1")).await.unwrap();
    let _ = store.append(tagged).await.unwrap();
    drop(store);
    back_to_format_5(&schema);
    assert!(!tag_index(&schema).contains("WHERE"));

    let store = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(common::format_version(&schema), FORMAT_VERSION);
    assert!(tag_index(&schema).contains("WHERE (tags <> '{}'::text[])"));
    let by_tag = concord_core::Query::item(Vec::new(), vec![tag]);
    let found = store
        .query(&by_tag, concord_core::Position(0), 10)
        .await
        .unwrap();
    let streams: Vec<&str> = found.events.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(streams, ["seat-1"]);
}

/// The tag index's object id in schema `schema`: a rebuilt index gets a new one.
fn tag_index_oid(schema: &str) -> String {
    shared().psql(&format!(
        "SELECT to_regclass('{schema}.concord_events_tags')::oid"
    ))
}

/// An operator may build format 6's tag index beforehand, concurrently, while the format-5
/// build runs (`docs/design/postgres-layout.md`); the migration then keeps it rather than
/// reading the whole log again with reads and appends waiting.
#[tokio::test]
async fn a_tag_index_built_beforehand_is_kept_by_the_migration() {
    let server = shared();
    let (schema, url) = fresh_schema();
    drop(PostgresStore::connect(&url).await.unwrap());
    back_to_format_5(&schema);
    let full = tag_index_oid(&schema);
    server.psql(&format!(
        "CREATE INDEX concord_events_tags_6 ON {schema}.concord_events USING gin (tags) \
         WHERE tags <> '{{}}'; DROP INDEX {schema}.concord_events_tags; \
         ALTER INDEX {schema}.concord_events_tags_6 RENAME TO concord_events_tags"
    ));
    let built = tag_index_oid(&schema);
    assert_ne!(built, full);

    let _store = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(common::format_version(&schema), FORMAT_VERSION);
    assert_eq!(
        tag_index_oid(&schema),
        built,
        "the migration rebuilt the index"
    );
}
