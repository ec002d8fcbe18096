//! What Concord writes into Redis, checked with raw commands: the layout any Redis client
//! can rely on (entry ids are versions and positions), and the function library's
//! loading and upgrade.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use concord_core::{
    AppendRequest, EventStore, ExpectedVersion, Filter, Position, StoreError, Version, doc,
};
use concord_redis::{LIBRARY_VERSION, RedisOptions, RedisStore};
use concord_testkit::redis::{RedisServer, shared, unique_prefix};
use redis::AsyncCommands;

fn deposit(amount: u64) -> concord_core::NewEvent {
    doc::event("Deposited", serde_json::json!({ "amount": amount }))
}

async fn entry_ids(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    entries.into_iter().map(|(id, _)| id).collect()
}

#[tokio::test]
async fn entry_ids_are_versions_in_the_stream_and_positions_in_the_global_stream() {
    let store = common::fresh_store().await;
    let a = doc::stream("account-1");
    let b = doc::stream("account-2");
    let _ = store
        .append(AppendRequest::new(
            a.clone(),
            ExpectedVersion::NoStream,
            vec![deposit(1), deposit(2)],
        ))
        .await
        .unwrap();
    let _ = store
        .append(AppendRequest::new(
            b.clone(),
            ExpectedVersion::NoStream,
            vec![deposit(3)],
        ))
        .await
        .unwrap();
    let _ = store
        .append(AppendRequest::new(
            a.clone(),
            ExpectedVersion::Exact(Version(2)),
            vec![deposit(4)],
        ))
        .await
        .unwrap();

    let mut conn = common::raw(&shared().url()).await;
    let keys = store.keys();
    assert_eq!(
        entry_ids(&mut conn, &keys.stream(&a)).await,
        ["1-0", "2-0", "3-0"]
    );
    assert_eq!(entry_ids(&mut conn, &keys.stream(&b)).await, ["1-0"]);
    assert_eq!(
        entry_ids(&mut conn, &keys.all()).await,
        ["1-0", "2-0", "3-0", "4-0"]
    );
    let head: u64 = conn.get(keys.head()).await.unwrap();
    assert_eq!(head, 4);
    let streams: Vec<String> = conn.zrange(keys.index(), 0, -1).await.unwrap();
    assert_eq!(streams, ["account-1", "account-2"]);
    assert!(
        keys.stream(&a)
            .starts_with(&format!("{{{}}}:", store.options().key_prefix))
    );

    // Redis itself refuses a stale version: version 3 cannot be written twice.
    let err = redis::cmd("XADD")
        .arg(keys.stream(&a))
        .arg("3-0")
        .arg("type")
        .arg("x")
        .query_async::<String>(&mut conn)
        .await;
    assert!(err.is_err());
}

async fn encoding(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn hashes_read_by_field_become_hash_tables_so_lookups_do_not_scan() {
    // A hash Redis keeps as a listpack is scanned field by field on every HMGET/HSET; the
    // function converts a stream's ids once the stream holds 64 events, and the heads at
    // the first stream (see concord.lua).
    let store = common::fresh_store().await;
    let s = doc::stream("account-1");
    let mut conn = common::raw(&shared().url()).await;
    let keys = store.keys();
    let _ = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            (0..63).map(deposit).collect(),
        ))
        .await
        .unwrap();
    assert_eq!(encoding(&mut conn, &keys.heads()).await, "hashtable");
    assert_eq!(encoding(&mut conn, &keys.ids(&s)).await, "listpack");
    let _ = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::Exact(Version(63)),
            vec![deposit(63)],
        ))
        .await
        .unwrap();
    assert_eq!(encoding(&mut conn, &keys.ids(&s)).await, "hashtable");

    // The extra field is invisible: the stream's version, the listing and the duplicate
    // check are as before.
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(64));
    let streams: Vec<String> = conn.zrange(keys.index(), 0, -1).await.unwrap();
    assert_eq!(streams, ["account-1"]);
    let repeat = AppendRequest::new(s.clone(), ExpectedVersion::Any, vec![deposit(99)]);
    let first = store.append(repeat.clone()).await.unwrap();
    let again = store.append(repeat).await.unwrap();
    assert!(again.is_duplicate(), "{again:?}");
    assert_eq!(
        again.appended().first_version,
        first.appended().first_version
    );
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(65));
}

#[tokio::test]
async fn a_rebase_sees_every_concurrent_event_not_only_the_first_hundred() {
    let store = common::fresh_store().await;
    let s = doc::stream("account-7");
    let _ = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![doc::event("AccountOpened", serde_json::json!({}))],
        ))
        .await
        .unwrap();
    let deposits: Vec<_> = (0..150).map(deposit).collect();
    let _ = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::Exact(Version(1)),
            deposits,
        ))
        .await
        .unwrap();
    let _ = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::Exact(Version(151)),
            vec![doc::event("AccountClosed", serde_json::json!({}))],
        ))
        .await
        .unwrap();

    // Based on version 1: 151 concurrent events, the closing one is the last.
    let late = AppendRequest::new(
        s.clone(),
        ExpectedVersion::Exact(Version(1)),
        vec![deposit(9)],
    )
    .rebase_unless(vec![doc::event_type("AccountClosed")]);
    let err = store.append(late).await.unwrap_err();
    let conflict = err.as_conflict().expect("a conflict");
    assert_eq!(conflict.actual, Version(152));
    assert_eq!(conflict.concurrent_events.len(), 100);
    assert!(conflict.truncated);
    assert_eq!(conflict.concurrent_events[0].version, Version(2));

    // Based on version 151 the only concurrent event is the closing one; on 152 nothing.
    let fresh = AppendRequest::new(
        s.clone(),
        ExpectedVersion::Exact(Version(150)),
        vec![deposit(9)],
    )
    .rebase_unless(vec![doc::event_type("Withdrawn")]);
    let outcome = store.append(fresh).await.unwrap();
    assert!(outcome.is_rebased());
    assert_eq!(outcome.appended().first_version, Version(153));
}

#[tokio::test]
async fn filtered_reads_page_through_the_global_stream() {
    let store = common::fresh_store().await;
    for i in 0..2500u64 {
        let s = doc::stream(if i % 500 == 0 {
            "auction-1"
        } else {
            "account-1"
        });
        let _ = store
            .append(AppendRequest::new(
                s,
                ExpectedVersion::Any,
                vec![deposit(i)],
            ))
            .await
            .unwrap();
    }
    let filter = Filter::all().category(concord_core::Category::new("auction").unwrap());
    let mut from = Position::FIRST;
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(from, &filter, 10).await.unwrap();
        seen.extend(page.events.iter().map(|e| e.position.get()));
        from = page.next_from;
        if page.is_caught_up() {
            break;
        }
    }
    assert_eq!(seen, [1, 501, 1001, 1501, 2001]);
}

#[tokio::test]
async fn the_function_library_is_loaded_upgraded_and_never_downgraded() {
    // Its own server: the library is server-wide, and this test replaces it.
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = common::raw(&url).await;
    let store = common::store_on(&url, std::time::Duration::from_secs(5)).await;
    assert_eq!(
        store.loaded_library_version().await.unwrap(),
        Some(LIBRARY_VERSION)
    );

    // An older library in place: connecting replaces it.
    let old = "#!lua name=concord\nredis.register_function{function_name='concord_version', callback=function() return 0 end, flags={'no-writes'}}\n";
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(old)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.loaded_library_version().await.unwrap(), Some(0));
    let upgraded = common::store_on(&url, std::time::Duration::from_secs(5)).await;
    assert_eq!(
        upgraded.loaded_library_version().await.unwrap(),
        Some(LIBRARY_VERSION)
    );

    // Lost library (FUNCTION FLUSH, or a restart without persistence): the next append
    // loads it again and succeeds.
    let _: String = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let outcome = store
        .append(AppendRequest::new(
            doc::stream("account-1"),
            ExpectedVersion::NoStream,
            vec![deposit(1)],
        ))
        .await
        .unwrap();
    assert_eq!(outcome.appended().first_version, Version(1));
    assert_eq!(
        store.loaded_library_version().await.unwrap(),
        Some(LIBRARY_VERSION)
    );

    // A newer library is left alone, and this build refuses to run against it.
    let newer = "#!lua name=concord\nredis.register_function{function_name='concord_version', callback=function() return 99 end, flags={'no-writes'}}\n";
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(newer)
        .query_async(&mut conn)
        .await
        .unwrap();
    let options = RedisOptions {
        key_prefix: unique_prefix(),
        ..RedisOptions::default()
    };
    let err = RedisStore::connect_with(&url, options).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn the_benchmark_wrapper_drives_the_library_with_its_current_arguments() {
    // bench/redis-append-bench.sh loads the library under another name with this wrapper
    // and drives it with redis-benchmark; a change of the function's arguments that the
    // wrapper does not follow would make that benchmark measure an error reply.
    let server = RedisServer::start();
    let mut conn = common::raw(&server.url()).await;
    let library = include_str!("../src/concord.lua").replacen(
        "#!lua name=concord\n",
        "#!lua name=concord_bench\n",
        1,
    );
    let source = format!(
        "{library}\n{}",
        include_str!("../../../bench/redis-conditional-append.lua")
    );
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(&source)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(name, "concord_bench");

    let call = |n: &'static str| {
        redis::cmd("FCALL")
            .arg("concord_bench_append")
            .arg(0)
            .arg(n)
            .clone()
    };
    let first: redis::Value = call("7").query_async(&mut conn).await.unwrap();
    let redis::Value::Array(first) = first else {
        panic!("not an array: {first:?}")
    };
    assert_eq!(first[0], redis::Value::BulkString(b"written".to_vec()));
    assert_eq!(entry_ids(&mut conn, "{b}:stream:s-7").await, ["1-0"]);
    assert_eq!(entry_ids(&mut conn, "{b}:all").await, ["1-0"]);

    // The same number is the same event id: a repeat, not a second event.
    let again: redis::Value = call("7").query_async(&mut conn).await.unwrap();
    let redis::Value::Array(again) = again else {
        panic!("not an array: {again:?}")
    };
    assert_eq!(again[0], redis::Value::BulkString(b"duplicate".to_vec()));
    let _: redis::Value = call("8").query_async(&mut conn).await.unwrap();
    assert_eq!(entry_ids(&mut conn, "{b}:all").await, ["1-0", "2-0"]);
}

#[tokio::test]
async fn bad_urls_and_prefixes_are_invalid_input_not_panics() {
    let err = RedisStore::connect("http://127.0.0.1:1").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let options = RedisOptions {
        key_prefix: "a{b}".into(),
        ..RedisOptions::default()
    };
    let err = RedisStore::connect_with(&shared().url(), options)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    // TLS against a plain-text server: a clear failure within the timeout, not a panic.
    let options = RedisOptions {
        timeout: std::time::Duration::from_secs(2),
        ..RedisOptions::default()
    };
    let tls = shared()
        .url()
        .replacen("redis://", "rediss://", 1)
        .replace("127.0.0.1", "localhost");
    let err = RedisStore::connect_with(&tls, options).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unavailable { .. } | StoreError::Backend { .. }
        ),
        "{err:?}"
    );
}

/// A second store on the same keys, as another process would have.
async fn same_keys(store: &RedisStore, url: &str) -> RedisStore {
    RedisStore::connect_with(url, store.options().clone())
        .await
        .unwrap()
}

fn ids(events: &[concord_core::RecordedEvent]) -> Vec<concord_core::EventId> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn concurrent_events_another_process_wrote_are_read_back_whole() {
    let url = shared().url();
    let writer = common::fresh_store().await;
    let reader = same_keys(&writer, &url).await;
    let s = doc::stream("account-8");
    let _ = writer
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![deposit(1), deposit(2)],
        ))
        .await
        .unwrap();
    let _ = writer
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::Exact(Version(2)),
            vec![deposit(3)],
        ))
        .await
        .unwrap();
    let written = writer
        .read_stream(&s, Version(1), concord_core::Direction::Forward, 10)
        .await
        .unwrap();

    // The other store never saw these written: it reads them.
    let rebased = reader
        .append(
            AppendRequest::new(
                s.clone(),
                ExpectedVersion::Exact(Version(1)),
                vec![deposit(4)],
            )
            .rebase_unless(vec![doc::event_type("AccountClosed")]),
        )
        .await
        .unwrap();
    let concord_core::AppendOutcome::Rebased {
        concurrent_events, ..
    } = &rebased
    else {
        panic!("not rebased: {rebased:?}");
    };
    assert_eq!(concurrent_events[..], written[1..]);

    let err = writer
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::Exact(Version(2)),
            vec![deposit(5)],
        ))
        .await
        .unwrap_err();
    let conflict = err.as_conflict().expect("a conflict");
    assert_eq!(conflict.actual, Version(4));
    assert!(!conflict.truncated);
    assert_eq!(conflict.concurrent_events.len(), 2);
    assert_eq!(conflict.concurrent_events[0], written[2]);
    assert_eq!(conflict.concurrent_events[1].version, Version(4));
    assert_eq!(
        conflict.concurrent_events[1].position,
        rebased.appended().first_position
    );
}

#[tokio::test]
async fn events_remembered_before_redis_lost_them_are_not_listed() {
    // Its own server: the test flushes it.
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = common::raw(&url).await;
    let first = common::store_on(&url, std::time::Duration::from_secs(5)).await;
    let s = doc::stream("account-9");
    let _ = first
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![deposit(1), deposit(2)],
        ))
        .await
        .unwrap();

    // Redis loses everything; another process writes other events at the same versions.
    let _: String = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let second = same_keys(&first, &url).await;
    let _ = second
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![deposit(10), deposit(20)],
        ))
        .await
        .unwrap();
    let now = second
        .read_stream(&s, Version(1), concord_core::Direction::Forward, 10)
        .await
        .unwrap();

    let err = first
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![deposit(3)],
        ))
        .await
        .unwrap_err();
    let conflict = err.as_conflict().expect("a conflict");
    assert_eq!(ids(&conflict.concurrent_events), ids(&now));
    let rebased = first
        .append(
            AppendRequest::new(
                s.clone(),
                ExpectedVersion::Exact(Version(1)),
                vec![deposit(4)],
            )
            .rebase_unless(vec![]),
        )
        .await
        .unwrap();
    let concord_core::AppendOutcome::Rebased {
        concurrent_events, ..
    } = rebased
    else {
        panic!("not rebased: {rebased:?}");
    };
    assert_eq!(ids(&concurrent_events), ids(&now[1..]));
}

#[tokio::test]
async fn an_append_of_more_events_than_one_unpack_holds_is_written_whole() {
    let server = shared();
    let mut options = RedisOptions {
        key_prefix: unique_prefix(),
        ..RedisOptions::default()
    };
    options.limits.events_per_append_max = 5000;
    let store = RedisStore::connect_with(&server.url(), options)
        .await
        .unwrap();
    let s = doc::stream("account-10");
    let events: Vec<_> = (0..5000).map(deposit).collect();
    let request = AppendRequest::new(s.clone(), ExpectedVersion::NoStream, events);
    let outcome = store.append(request.clone()).await.unwrap();
    assert_eq!(outcome.appended().last_version, Version(5000));
    // Every id was recorded (the ids hash is written in slices): the same append again is
    // a duplicate.
    assert!(store.append(request).await.unwrap().is_duplicate());
}

#[tokio::test]
async fn a_conflict_over_another_stores_events_lists_them_in_its_one_reply() {
    // Its own server: the test reads the slow log, which is server-wide.
    let server = RedisServer::start();
    let url = server.url();
    let options = RedisOptions {
        key_prefix: unique_prefix(),
        ..RedisOptions::default()
    };
    let writer = RedisStore::connect_with(&url, options.clone())
        .await
        .unwrap();
    // A second store on the same keys: its own connection, nothing seen written.
    let other = RedisStore::connect_with(&url, options).await.unwrap();
    let stream = doc::stream("account-9");
    let _ = writer
        .append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::NoStream,
            (1..=5).map(deposit).collect(),
        ))
        .await
        .unwrap();

    let mut conn = common::raw(&url).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();
    let refused = other
        .append(AppendRequest::new(
            stream,
            ExpectedVersion::NoStream,
            vec![deposit(6)],
        ))
        .await;
    let Err(StoreError::Conflict(conflict)) = refused else {
        panic!("expected a conflict, got {refused:?}");
    };
    assert_eq!(conflict.actual, Version(5));
    let amounts: Vec<u64> = conflict
        .concurrent_events
        .iter()
        .map(|e| e.data.to_value().unwrap()["amount"].as_u64().unwrap())
        .collect();
    assert_eq!(amounts, [1, 2, 3, 4, 5]);

    // Every command a client sent since the reset: the conflicting append's one FCALL
    // (commands the function runs itself are logged without a client address).
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let sent: Vec<String> = log
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let (Some(redis::Value::Array(args)), Some(client)) = (fields.get(3), fields.get(4))
            else {
                return None;
            };
            let client: String = redis::from_redis_value(client.clone()).unwrap_or_default();
            let command: String = redis::from_redis_value(args.first()?.clone()).ok()?;
            (!client.starts_with('?')).then(|| command.to_uppercase())
        })
        .filter(|c| c != "SLOWLOG")
        .collect();
    assert_eq!(sent, ["FCALL"], "{log:?}");
}

#[tokio::test]
async fn a_condition_naming_more_types_than_one_unpack_holds_is_decided() {
    let store = common::fresh_store().await;
    let s = doc::stream("user-ann");
    let registered = concord_core::EventType::new("Registered").unwrap();
    let ann = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![doc::event("Registered", serde_json::json!({}))],
        ))
        .await
        .unwrap();
    assert_eq!(ann.appended().last_position, Position(1));
    // The largest query a caller may send (100 items of 100 types: 10 000 types, the one
    // written last): the function reads them in a loop, not through Lua's bounded unpack
    // (about 8 000 values), so the condition is checked (and fails) instead of erroring.
    let mut items: Vec<_> = (0..concord_core::QUERY_ITEMS_MAX)
        .map(|item| concord_core::QueryItem {
            types: (0..concord_core::TYPES_PER_FILTER_MAX)
                .map(|n| concord_core::EventType::new(format!("Other{item}x{n}")).unwrap())
                .collect(),
            tags: vec![],
        })
        .collect();
    if let Some(last) = items.last_mut().and_then(|item| item.types.last_mut()) {
        *last = registered;
    }
    let query = concord_core::Query { items };
    assert_eq!(query.validate(), Ok(()));
    let request = concord_core::MultiAppendRequest::new(vec![AppendRequest::new(
        doc::stream("user-bob"),
        ExpectedVersion::NoStream,
        vec![doc::event("Registered", serde_json::json!({}))],
    )]);
    let failed = store
        .append_multi(request.clone().condition(query.clone(), Position(0)))
        .await;
    assert!(
        matches!(&failed, Err(StoreError::ConditionFailed(c)) if c.matching_events.len() == 1),
        "{failed:?}"
    );
    // After the matching event, the same condition holds and the append is written.
    let written = store
        .append_multi(request.condition(query, Position(1)))
        .await
        .unwrap();
    assert_eq!(written.parts.len(), 1);
}

/// An entry's fields, in order.
type Fields = Vec<(String, Vec<u8>)>;

/// The fields of each entry of `key`, in order.
async fn entry_fields(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<Fields> {
    let entries: Vec<(String, Fields)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    entries.into_iter().map(|(_, fields)| fields).collect()
}

#[tokio::test]
async fn bytes_entries_carry_their_content_type_and_json_entries_are_as_before_library_5() {
    let store = common::fresh_store().await;
    let s = doc::stream("blob-1");
    let all: Vec<u8> = (0..=255).collect();
    let _ = store
        .append(AppendRequest::new(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![deposit(1), doc::bytes_event("Uploaded", "image/png", &all)],
        ))
        .await
        .unwrap();
    let mut conn = common::raw(&shared().url()).await;
    let keys = store.keys();
    for key in [keys.stream(&s), keys.all()] {
        let entries = entry_fields(&mut conn, &key).await;
        let field = |entry: &Fields, name: &str| {
            entry
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        // A JSON entry has exactly the fields library versions before 5 wrote, so entries
        // written by them need no migration: no `content_type` means JSON.
        assert_eq!(field(&entries[0], "content_type"), None, "{key}");
        assert_eq!(
            field(&entries[0], "data").unwrap(),
            br#"{"amount":1}"#.to_vec()
        );
        assert_eq!(
            field(&entries[1], "content_type").unwrap(),
            b"image/png".to_vec()
        );
        assert_eq!(field(&entries[1], "data").unwrap(), all, "raw bytes");
    }

    // An entry as library version 4 wrote it (no content type) reads back as JSON.
    let _: String = redis::cmd("XADD")
        .arg(keys.stream(&doc::stream("old-1")))
        .arg("1-0")
        .arg("position")
        .arg("99")
        .arg("id")
        .arg(concord_core::EventId::new().to_string())
        .arg("type")
        .arg("Deposited")
        .arg("data")
        .arg(r#"{"amount":7}"#)
        .arg("metadata")
        .arg("{}")
        .arg("tags")
        .arg("")
        .arg("recorded_at")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let old = store
        .read_stream(
            &doc::stream("old-1"),
            Version(1),
            concord_core::Direction::Forward,
            1,
        )
        .await
        .unwrap();
    assert_eq!(old[0].data.content_type(), "application/json");
    assert_eq!(old[0].data.to_value().unwrap()["amount"], 7);
}
