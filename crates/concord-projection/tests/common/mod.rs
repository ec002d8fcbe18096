//! Helpers shared by the projection tests: stores, scenario events, and the check that a
//! read model equals a full replay of the log up to its checkpoint.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use concord_core::{
    AppendRequest, EventStore, ExpectedVersion, Filter, NewEvent, Position, RecordedEvent,
    StreamName,
};
use concord_projection::models::{self, Auctions, Balances, Documents, Fold};
use concord_redis::{RedisOptions, RedisStore};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// A fresh embedded store in `dir`.
pub fn embedded(dir: &Path) -> Arc<dyn EventStore> {
    Arc::new(concord_embedded::EmbeddedStore::open(dir).unwrap())
}

/// A store on the Redis at `url`, keys under `prefix`.
pub async fn redis_at(url: &str, prefix: &str) -> Arc<dyn EventStore> {
    let options = RedisOptions {
        key_prefix: prefix.to_owned(),
        ..RedisOptions::default()
    };
    Arc::new(RedisStore::connect_with(url, options).await.unwrap())
}

/// A fresh store on this test binary's shared Redis.
pub async fn redis() -> Arc<dyn EventStore> {
    let server = concord_testkit::redis::shared();
    redis_at(&server.url(), &concord_testkit::redis::unique_prefix()).await
}

pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

pub fn event(ty: &str, data: Value) -> NewEvent {
    NewEvent::json(ty, &data).unwrap()
}

/// Appends `events` to `stream` (any version) and returns the last position.
pub async fn append(store: &Arc<dyn EventStore>, name: &str, events: Vec<NewEvent>) -> Position {
    let outcome = store
        .append(AppendRequest::new(
            stream(name),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .unwrap();
    outcome.appended().last_position
}

/// The first event of a stream of `category` (`account`, `auction`, `doc`, or anything
/// else for events no projection wants).
pub fn opening(category: &str) -> NewEvent {
    match category {
        "account" => event("AccountOpened", json!({"owner": "ann", "balance": 100})),
        "auction" => event("AuctionOpened", json!({"item": "lamp", "reserve": 10})),
        "doc" => event("DocumentCreated", json!({"text": "héllo"})),
        _ => event("Noted", json!({"n": 1})),
    }
}

/// A random later event of a stream of `category`.
pub fn later(category: &str, rng: &mut impl Rng) -> NewEvent {
    match category {
        "account" if rng.random_bool(0.5) => {
            event("Deposited", json!({"amount": rng.random_range(1..1000u64)}))
        }
        "account" => event("Withdrawn", json!({"amount": rng.random_range(1..100u64)})),
        "auction" => event(
            "BidPlaced",
            json!({"bidder": format!("b{}", rng.random_range(0..5)), "amount": rng.random_range(1..10_000u64)}),
        ),
        "doc" if rng.random_bool(0.6) => {
            let text = ["a", "ü", "🙂", "xy"][rng.random_range(0..4)];
            event(
                "Inserted",
                json!({"pos": rng.random_range(0..20u64), "text": text}),
            )
        }
        "doc" => event(
            "Deleted",
            json!({"pos": rng.random_range(0..20u64), "len": rng.random_range(0..3u64)}),
        ),
        _ => event("Noted", json!({"n": 2})),
    }
}

pub const CATEGORIES: [&str; 4] = ["account", "auction", "doc", "other"];

/// The events of a random append to `name`, a stream of `category`: its opening event the
/// first time (`opened` remembers), one to three later events after that.
pub fn random_events(
    rng: &mut impl Rng,
    opened: &mut std::collections::BTreeSet<String>,
    name: &str,
    category: &str,
) -> Vec<NewEvent> {
    if opened.insert(name.to_owned()) {
        vec![opening(category)]
    } else {
        (0..rng.random_range(1..4))
            .map(|_| later(category, rng))
            .collect()
    }
}

/// `appends` random appends over six streams of each category (every stream opened by its
/// first); the position of the last.
pub async fn append_random(store: &Arc<dyn EventStore>, seed: u64, appends: usize) -> Position {
    append_random_to(store, seed, appends, "").await
}

/// As [`append_random`], to streams `<category>-<prefix><n>`: a prefix no earlier call used
/// gives streams of their own, opened afresh.
pub async fn append_random_to(
    store: &Arc<dyn EventStore>,
    seed: u64,
    appends: usize,
    prefix: &str,
) -> Position {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut head = Position::ZERO;
    let mut opened = std::collections::BTreeSet::new();
    for _ in 0..appends {
        let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
        let name = format!("{category}-{prefix}{}", rng.random_range(0..6));
        let events = random_events(&mut rng, &mut opened, &name, category);
        head = append(store, &name, events).await;
    }
    head
}

/// Every event of the store, in position order.
pub async fn all_events(store: &Arc<dyn EventStore>) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut from = Position::FIRST;
    loop {
        let page = store.read_all(from, &Filter::all(), 1000).await.unwrap();
        let caught_up = page.is_caught_up();
        events.extend(page.events);
        if caught_up {
            return events;
        }
        from = page.next_from;
    }
}

fn replay_json<F: Fold>(events: &[RecordedEvent]) -> BTreeMap<String, Value> {
    let (rows, refused) = models::replay::<F>(events);
    assert!(
        refused.is_empty(),
        "the generated events are all valid: {:?}",
        refused
            .first()
            .map(|(e, why)| (e.position, why.to_string()))
    );
    rows.into_iter()
        .map(|(k, row)| (k, serde_json::to_value(row).unwrap()))
        .collect()
}

/// What a full replay of `events` gives, per projection name.
pub fn replay_all(events: &[RecordedEvent]) -> BTreeMap<String, BTreeMap<String, Value>> {
    BTreeMap::from([
        ("auctions".to_owned(), replay_json::<Auctions>(events)),
        ("balances".to_owned(), replay_json::<Balances>(events)),
        ("documents".to_owned(), replay_json::<Documents>(events)),
    ])
}

/// The projection database as it is on disk: per projection, its checkpoint and rows.
pub fn read_db(path: &Path) -> BTreeMap<String, (Position, BTreeMap<String, Value>)> {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut out = BTreeMap::new();
    for name in ["auctions", "balances", "documents"] {
        let checkpoint: i64 = db
            .query_row(
                "SELECT position FROM checkpoints WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap_or(0);
        let mut stmt = db
            .prepare(&format!(
                "SELECT stream, version, position, state FROM {name}"
            ))
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .unwrap()
            .map(|r| {
                let (stream, version, position, state) = r.unwrap();
                let mut v: Value = serde_json::from_str(&state).unwrap();
                v["stream"] = json!(stream);
                v["version"] = json!(version);
                v["position"] = json!(position);
                (stream, v)
            })
            .collect();
        out.insert(name.to_owned(), (Position(checkpoint as u64), rows));
    }
    out
}

/// Asserts that every read model in the database at `path` equals a full replay of the
/// log up to its checkpoint (so nothing was applied twice or skipped); returns the
/// checkpoints.
pub fn assert_db_equals_replay(path: &Path, log: &[RecordedEvent]) -> BTreeMap<String, Position> {
    let db = read_db(path);
    let mut checkpoints = BTreeMap::new();
    for (name, (checkpoint, rows)) in db {
        let upto: Vec<RecordedEvent> = log
            .iter()
            .filter(|e| e.position <= checkpoint)
            .cloned()
            .collect();
        let expected = replay_all(&upto).remove(&name).unwrap();
        assert_eq!(
            rows.len(),
            expected.len(),
            "{name} at checkpoint {checkpoint}: {} rows, a replay gives {}",
            rows.len(),
            expected.len()
        );
        for (key, row) in &expected {
            assert_eq!(
                rows.get(key),
                Some(row),
                "{name} row {key} at checkpoint {checkpoint}"
            );
        }
        checkpoints.insert(name, checkpoint);
    }
    checkpoints
}
