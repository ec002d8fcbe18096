//! The semantics of consumer groups (shared/API.md, "Consumer groups"), one async function
//! per behaviour, each taking a fresh, empty store. `group_specs!(factory)` expands to one
//! named `#[tokio::test]` per spec, so `tests/conformance.rs` runs them all on
//! `MemoryStore`, the embedded store, Redis and PostgreSQL. Its helpers (`seed_one`,
//! `all_of`, `poll`, …) also serve `tests/pipelining.rs` and `tests/idle_poll.rs`.
//!
//! Time is a [`ManualClock`]: a delivery expires because the spec moves the clock past its
//! deadline, never because the spec slept. Every wait on a store is bounded, so a broken
//! group fails instead of hanging.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use concord_core::{
    AppendRequest, Category, Direction, EventStore, ExpectedVersion, Position, RecordedEvent,
    StreamName, Version, doc,
};
use concord_groups::{
    AllSource, ConsumerName, GroupError, GroupName, GroupSpec, Groups, ManualClock, Message,
    NackAction, Ordering, Source, StartFrom, Upserted,
};
use serde_json::json;

/// How long any single wait may take before the spec fails.
const WAIT: Duration = Duration::from_secs(30);

/// The manual clock's start, and the specs' ack timeout.
const T0: u64 = 1_000_000;
const TIMEOUT: u64 = 1_000;

pub struct Harness {
    pub store: Arc<dyn EventStore>,
    pub clock: ManualClock,
    pub groups: Groups,
}

impl Harness {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let clock = ManualClock::at(T0);
        let groups = Groups::with_clock(Arc::clone(&store), Arc::new(clock.clone()));
        Harness {
            store,
            clock,
            groups,
        }
    }

    /// A second `Groups` over the same store and clock: another process, or this one
    /// after a restart.
    pub fn restarted(&self) -> Groups {
        Groups::with_clock(Arc::clone(&self.store), Arc::new(self.clock.clone()))
    }
}

pub fn group(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

pub fn consumer(name: &str) -> ConsumerName {
    ConsumerName::new(name).unwrap()
}

pub fn all_of(category: &str) -> Source {
    Source::All(AllSource {
        category: Some(Category::new(category).unwrap()),
        ..AllSource::default()
    })
}

pub fn spec(source: Source, ordering: Ordering, max_deliveries: u32) -> GroupSpec {
    GroupSpec {
        ack_timeout_ms: TIMEOUT,
        max_deliveries,
        ordering,
        ..GroupSpec::new(source)
    }
}

/// Appends `n` events to each of `streams`, interleaved stream by stream, in appends of
/// one event, so the streams' events alternate in the global log.
pub async fn seed(store: &Arc<dyn EventStore>, streams: &[&str], n: usize) {
    for i in 0..n {
        for s in streams {
            let e = doc::event("Placed", json!({"n": i}));
            let _ = store
                .append(AppendRequest::new(
                    doc::stream(s),
                    ExpectedVersion::Any,
                    vec![e],
                ))
                .await
                .unwrap();
        }
    }
}

/// Appends `n` events to `stream` in one append (at most 1000).
pub async fn seed_one(store: &Arc<dyn EventStore>, stream: &str, n: usize) {
    let events = (0..n)
        .map(|i| doc::event("Placed", json!({"n": i})))
        .collect();
    let _ = store
        .append(AppendRequest::new(
            doc::stream(stream),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .unwrap();
}

pub async fn poll(groups: &Groups, g: &GroupName, c: &str, max: usize) -> Vec<Message> {
    tokio::time::timeout(WAIT, groups.poll(g, &consumer(c), max, Duration::ZERO))
        .await
        .expect("a poll without waiting answers at once")
        .unwrap()
}

pub fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.ack_id.clone()).collect()
}

pub fn key(e: &RecordedEvent) -> (StreamName, Version) {
    (e.stream.clone(), e.version)
}

/// Polls and acks everything until a poll comes back empty; returns the events acked.
pub async fn drain(groups: &Groups, g: &GroupName, c: &str) -> Vec<RecordedEvent> {
    let mut done = Vec::new();
    loop {
        let messages = poll(groups, g, c, 100).await;
        if messages.is_empty() {
            return done;
        }
        let acked = groups.ack(g, &ids(&messages)).await.unwrap();
        assert_eq!(acked, messages.len(), "every live ack id counts");
        done.extend(messages.into_iter().map(|m| m.event));
    }
}

// ---------------------------------------------------------------------------------------
// Specs
// ---------------------------------------------------------------------------------------

/// Three consumers take turns on a group over a category of the global log, acking what
/// they get: every event of the category is acked exactly once, events of other
/// categories are never delivered, and the group ends with nothing pending.
pub async fn every_source_event_reaches_some_consumer(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    seed(
        &h.store,
        &["order-1", "order-2", "invoice-1", "order-3"],
        40,
    )
    .await;
    let g = group("receipts");
    let created = h
        .groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 5))
        .await
        .unwrap();
    assert_eq!(created, Upserted::Created);
    seed(&h.store, &["order-4"], 30).await;
    let mut acked: BTreeMap<(StreamName, Version), usize> = BTreeMap::new();
    let consumers = ["c1", "c2", "c3"];
    for round in 0.. {
        let c = consumers[round % consumers.len()];
        let messages = poll(&h.groups, &g, c, 7).await;
        if messages.is_empty() {
            break;
        }
        assert!(messages.iter().all(|m| m.delivery == 1));
        assert_eq!(
            h.groups.ack(&g, &ids(&messages)).await.unwrap(),
            messages.len()
        );
        for m in messages {
            assert_eq!(m.event.stream.category().as_str(), "order");
            *acked.entry(key(&m.event)).or_default() += 1;
        }
    }
    assert_eq!(acked.len(), 3 * 40 + 30, "every order event");
    assert!(acked.values().all(|n| *n == 1), "each once");
    let info = h.groups.info(&g).await.unwrap();
    assert_eq!(
        (info.acked, info.in_flight, info.parked, info.pending),
        (150, 0, 0, 0)
    );
}

/// A group over one stream delivers its events in version order, from `start`, `end` or
/// a given version.
pub async fn a_stream_source_delivers_from_where_the_group_starts(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    seed_one(&h.store, "order-9", 150).await;
    seed_one(&h.store, "order-8", 3).await;
    let source = Source::Stream(doc::stream("order-9"));
    let starts = [
        (StartFrom::Start, 1, 150),
        (StartFrom::At(120), 120, 31),
        (StartFrom::End, 151, 0),
    ];
    for (i, (from, first, count)) in starts.into_iter().enumerate() {
        let g = group(&format!("g{i}"));
        let mut s = spec(source.clone(), Ordering::None, 5);
        s.from = from;
        h.groups.create_or_update(&g, s).await.unwrap();
        assert_eq!(h.groups.info(&g).await.unwrap().pending, count);
        let events = drain(&h.groups, &g, "c").await;
        let versions: Vec<u64> = events.iter().map(|e| e.version.get()).collect();
        let expected: Vec<u64> = (first..first + count).collect();
        assert_eq!(versions, expected, "from {from}");
    }
    // Events appended after `end` reach the group that started there.
    seed_one(&h.store, "order-9", 2).await;
    let events = drain(&h.groups, &group("g2"), "c").await;
    assert_eq!(
        events.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![151, 152]
    );
}

/// Acked events are never delivered again, also by a process that loads the group from
/// the store afresh (a restart); the ones in flight at the restart come back once their
/// timeout passes, with the next delivery number.
pub async fn acked_events_are_never_delivered_again_also_after_a_restart(
    store: Arc<dyn EventStore>,
) {
    let h = Harness::new(store);
    seed(&h.store, &["order-1", "order-2"], 60).await;
    let g = group("restart");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 5))
        .await
        .unwrap();
    let first = poll(&h.groups, &g, "c1", 100).await;
    assert_eq!(first.len(), 100);
    let (acked, unacked) = first.split_at(70);
    assert_eq!(h.groups.ack(&g, &ids(acked)).await.unwrap(), 70);

    let after = h.restarted();
    // Before the timeout nothing of the first 100 comes again.
    let rest = poll(&after, &g, "c2", 100).await;
    assert_eq!(rest.len(), 20, "only the 20 never delivered");
    assert!(rest.iter().all(|m| m.delivery == 1));
    let acked_keys: BTreeSet<_> = acked.iter().map(|m| key(&m.event)).collect();
    assert!(rest.iter().all(|m| !acked_keys.contains(&key(&m.event))));
    assert_eq!(after.ack(&g, &ids(&rest)).await.unwrap(), 20);

    h.clock.advance(TIMEOUT);
    let again = poll(&after, &g, "c2", 100).await;
    let again_keys: BTreeSet<_> = again.iter().map(|m| key(&m.event)).collect();
    let unacked_keys: BTreeSet<_> = unacked.iter().map(|m| key(&m.event)).collect();
    assert_eq!(again_keys, unacked_keys, "exactly the unacked ones");
    assert!(again.iter().all(|m| m.delivery == 2));
    assert_eq!(after.ack(&g, &ids(&again)).await.unwrap(), 30);
    let info = after.info(&g).await.unwrap();
    assert_eq!((info.acked, info.pending, info.in_flight), (120, 0, 0));
    // The first process learns of it all from the store too.
    assert_eq!(h.groups.info(&g).await.unwrap(), info);
}

/// A delivery not acked within `ack_timeout_ms` goes back to the group and is delivered
/// again (to any consumer) with `delivery` + 1; its old ack id no longer counts.
pub async fn in_flight_past_its_ack_timeout_is_delivered_again_with_the_next_delivery(
    store: Arc<dyn EventStore>,
) {
    let h = Harness::new(store);
    seed(&h.store, &["order-1"], 3).await;
    let g = group("timeouts");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 5))
        .await
        .unwrap();
    let first = poll(&h.groups, &g, "slow", 10).await;
    assert_eq!(first.len(), 3);
    h.clock.advance(TIMEOUT - 1);
    assert!(poll(&h.groups, &g, "fast", 10).await.is_empty(), "not yet");
    assert_eq!(h.groups.info(&g).await.unwrap().in_flight, 3);
    h.clock.advance(1);
    let info = h.groups.info(&g).await.unwrap();
    assert_eq!(
        (info.in_flight, info.pending),
        (0, 3),
        "expired ones are pending"
    );
    let second = poll(&h.groups, &g, "fast", 10).await;
    assert_eq!(second.len(), 3);
    assert!(second.iter().all(|m| m.delivery == 2));
    assert_eq!(
        h.groups.ack(&g, &ids(&first)).await.unwrap(),
        0,
        "the expired deliveries' ack ids are ignored"
    );
    assert_eq!(h.groups.ack(&g, &ids(&second)).await.unwrap(), 3);
    assert_eq!(h.groups.info(&g).await.unwrap().acked, 3);
}

/// After `max_deliveries` deliveries that all expire, the event is parked instead of
/// delivered again, and the events behind it flow on.
pub async fn an_event_is_parked_after_max_deliveries(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    seed(&h.store, &["order-1"], 1).await;
    let g = group("poison");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 3))
        .await
        .unwrap();
    for delivery in 1..=3 {
        let m = poll(&h.groups, &g, "c", 10).await;
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].delivery, delivery);
        h.clock.advance(TIMEOUT);
    }
    seed(&h.store, &["order-2"], 2).await;
    let rest = poll(&h.groups, &g, "c", 10).await;
    assert_eq!(
        rest.iter()
            .map(|m| m.event.stream.as_str())
            .collect::<Vec<_>>(),
        vec!["order-2", "order-2"],
        "the parked event stays out, the rest flow past it"
    );
    let info = h.groups.info(&g).await.unwrap();
    assert_eq!((info.parked, info.in_flight), (1, 2));
    let parked = h.groups.parked(&g, 100).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].deliveries, 3);
    assert_eq!(parked[0].event.as_ref().unwrap().stream.as_str(), "order-1");
}

/// `nack` with `retry` returns an event to the group (delivered again with the next
/// delivery number, and parked once it has had `max_deliveries`), with `park` parks it,
/// with `skip` gives it up (not acked, never delivered again).
pub async fn nack_retries_parks_or_skips(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    seed_one(&h.store, "order-1", 3).await;
    let g = group("nacks");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 2))
        .await
        .unwrap();
    let m = poll(&h.groups, &g, "c", 10).await;
    let [retry, park, skip] = [&m[0], &m[1], &m[2]].map(|m| vec![m.ack_id.clone()]);
    assert_eq!(
        h.groups.nack(&g, &retry, NackAction::Retry).await.unwrap(),
        1
    );
    assert_eq!(h.groups.nack(&g, &park, NackAction::Park).await.unwrap(), 1);
    assert_eq!(h.groups.nack(&g, &skip, NackAction::Skip).await.unwrap(), 1);
    assert_eq!(
        h.groups.nack(&g, &skip, NackAction::Skip).await.unwrap(),
        0,
        "a nacked delivery's id is spent"
    );
    let again = poll(&h.groups, &g, "c", 10).await;
    assert_eq!(again.len(), 1, "only the retried one");
    assert_eq!(again[0].event.version, Version(1));
    assert_eq!(again[0].delivery, 2);
    // Its second delivery was its last: a retry now parks it.
    assert_eq!(
        h.groups
            .nack(&g, &ids(&again), NackAction::Retry)
            .await
            .unwrap(),
        1
    );
    assert!(poll(&h.groups, &g, "c", 10).await.is_empty());
    let info = h.groups.info(&g).await.unwrap();
    assert_eq!(
        (
            info.acked,
            info.skipped,
            info.parked,
            info.pending,
            info.in_flight
        ),
        (0, 1, 2, 0, 0)
    );
}

/// `replay-parked` returns every parked event to the group: delivered again, its
/// deliveries counted afresh, and acked like any other.
pub async fn replaying_parked_events_delivers_them_again(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    seed_one(&h.store, "order-1", 2).await;
    let g = group("replay");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 1))
        .await
        .unwrap();
    assert_eq!(
        h.groups.replay_parked(&g).await.unwrap(),
        0,
        "nothing parked yet"
    );
    let m = poll(&h.groups, &g, "c", 10).await;
    assert_eq!(
        h.groups.nack(&g, &ids(&m), NackAction::Park).await.unwrap(),
        2
    );
    assert!(poll(&h.groups, &g, "c", 10).await.is_empty());
    assert_eq!(h.groups.replay_parked(&g).await.unwrap(), 2);
    assert_eq!(h.groups.info(&g).await.unwrap().parked, 0);
    let again = poll(&h.groups, &g, "c", 10).await;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|m| m.delivery == 1));
    assert_eq!(h.groups.ack(&g, &ids(&again)).await.unwrap(), 2);
    let info = h.groups.info(&g).await.unwrap();
    assert_eq!((info.acked, info.parked), (2, 0));
}

/// With `per_stream` ordering, consumers that ack, retry and let deliveries expire in a
/// scrambled order never hold two events of one stream at once, and each stream's events
/// are handled (acked) in version order; different streams go in parallel.
pub async fn per_stream_ordering_keeps_each_streams_events_in_order_and_one_at_a_time(
    store: Arc<dyn EventStore>,
) {
    let h = Harness::new(store);
    let streams = ["order-a", "order-b", "order-c", "order-d", "order-e"];
    seed(&h.store, &streams, 24).await;
    let g = group("ordered");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::PerStream, 1000))
        .await
        .unwrap();
    let mut held: HashMap<StreamName, Message> = HashMap::new();
    let mut handled: BTreeMap<StreamName, Vec<u64>> = BTreeMap::new();
    let mut step = 0u64;
    let mut parallel_seen = false;
    while handled.values().map(Vec::len).sum::<usize>() < 5 * 24 {
        step += 1;
        assert!(step < 10_000, "the group stopped making progress");
        let c = ["c1", "c2", "c3"][(step % 3) as usize];
        for m in poll(&h.groups, &g, c, 3).await {
            let previous = held.insert(m.event.stream.clone(), m.clone());
            assert!(
                previous.is_none(),
                "two events of {} in flight at once",
                m.event.stream
            );
        }
        parallel_seen |= held.len() > 1;
        // Settle one held message, chosen by a fixed scramble: ack, retry or expire.
        let mut streams: Vec<StreamName> = held.keys().cloned().collect();
        streams.sort();
        if streams.is_empty() {
            continue;
        }
        let s = streams[(step * 7 % streams.len() as u64) as usize].clone();
        let m = held.remove(&s).unwrap();
        match step % 5 {
            0 => {
                let n = h
                    .groups
                    .nack(&g, std::slice::from_ref(&m.ack_id), NackAction::Retry)
                    .await
                    .unwrap();
                assert_eq!(n, 1);
            }
            1 => {
                // Let every held delivery expire: all of them come back.
                h.clock.advance(TIMEOUT);
                held.clear();
            }
            _ => {
                assert_eq!(
                    h.groups
                        .ack(&g, std::slice::from_ref(&m.ack_id))
                        .await
                        .unwrap(),
                    1
                );
                handled.entry(s).or_default().push(m.event.version.get());
            }
        }
    }
    for (stream, versions) in &handled {
        let expected: Vec<u64> = (1..=24).collect();
        assert_eq!(versions, &expected, "{stream} handled in version order");
    }
    assert!(parallel_seen, "different streams were in flight together");
}

/// Deleting a group removes it at once (404 for every operation) and frees its state: a
/// group created again under the same name starts from nothing, and old ack ids never
/// match it.
pub async fn deleting_a_group_frees_its_state(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    seed(&h.store, &["order-1"], 5).await;
    let g = group("short-lived");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 1))
        .await
        .unwrap();
    let m = poll(&h.groups, &g, "c", 2).await;
    h.groups.ack(&g, &ids(&m[..1])).await.unwrap();
    h.groups
        .nack(&g, &ids(&m[1..]), NackAction::Park)
        .await
        .unwrap();
    h.groups.delete(&g).await.unwrap();
    assert!(matches!(
        h.groups.info(&g).await,
        Err(GroupError::NotFound(_))
    ));
    assert!(matches!(
        h.groups.poll(&g, &consumer("c"), 1, Duration::ZERO).await,
        Err(GroupError::NotFound(_))
    ));
    assert!(matches!(
        h.groups.ack(&g, &ids(&m)).await,
        Err(GroupError::NotFound(_))
    ));
    assert!(matches!(
        h.groups.delete(&g).await,
        Err(GroupError::NotFound(_))
    ));
    assert!(h.groups.list().await.unwrap().is_empty());
    assert!(matches!(
        h.restarted().info(&g).await,
        Err(GroupError::NotFound(_))
    ));
    // Its state is hidden but the deletion, and a scavenge erases it.
    let state = g.state_stream();
    let _ = h.store.scavenge().await.unwrap();
    let left = h
        .store
        .read_stream(state, Version(1), Direction::Forward, 100)
        .await
        .unwrap();
    let left: Vec<&str> = left.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(left, ["GroupDeleted"]);
    assert!(matches!(
        h.restarted().info(&g).await,
        Err(GroupError::NotFound(_))
    ));

    let again = h
        .groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 1))
        .await
        .unwrap();
    assert_eq!(again, Upserted::Created);
    let info = h.groups.info(&g).await.unwrap();
    assert_eq!(
        (info.acked, info.parked, info.in_flight, info.pending),
        (0, 0, 0, 5)
    );
    let fresh = poll(&h.groups, &g, "c", 10).await;
    assert_eq!(fresh.len(), 5, "everything again, from the start");
    assert_eq!(
        h.groups.ack(&g, &ids(&m)).await.unwrap(),
        0,
        "the deleted group's ack ids never match the new one"
    );
    assert_eq!(h.restarted().info(&g).await.unwrap().in_flight, 5);
}

/// Bad input is refused and changes nothing: `max_deliveries` < 1, `ack_timeout_ms` <
/// 100, `max` outside 1–1000, too many ack ids; acks of unknown ids are ignored and not
/// counted; an update may change the settings but not `source` or `from`.
pub async fn bad_input_is_refused_and_source_and_from_are_fixed(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    seed(&h.store, &["order-1"], 2).await;
    let g = group("strict");
    let base = spec(all_of("order"), Ordering::None, 5);
    let invalid = |e: Result<Upserted, GroupError>, field: &str| {
        assert!(
            matches!(&e, Err(GroupError::Invalid(i)) if i.field == field),
            "{field}: {e:?}"
        );
    };
    invalid(
        h.groups
            .create_or_update(
                &g,
                GroupSpec {
                    max_deliveries: 0,
                    ..base.clone()
                },
            )
            .await,
        "max_deliveries",
    );
    invalid(
        h.groups
            .create_or_update(
                &g,
                GroupSpec {
                    ack_timeout_ms: 99,
                    ..base.clone()
                },
            )
            .await,
        "ack_timeout_ms",
    );
    assert!(matches!(
        h.groups.info(&g).await,
        Err(GroupError::NotFound(_))
    ));
    assert_eq!(
        h.groups.create_or_update(&g, base.clone()).await.unwrap(),
        Upserted::Created
    );
    assert_eq!(
        h.groups.create_or_update(&g, base.clone()).await.unwrap(),
        Upserted::Unchanged
    );
    for max in [0, 1001] {
        let e = h.groups.poll(&g, &consumer("c"), max, Duration::ZERO).await;
        assert!(
            matches!(&e, Err(GroupError::Invalid(i)) if i.field == "max"),
            "{max}"
        );
    }
    let too_many: Vec<String> = (0..1001).map(|i| format!("1.{i}.1")).collect();
    assert!(matches!(
        h.groups.ack(&g, &too_many).await,
        Err(GroupError::Invalid(i)) if i.field == "ack_ids"
    ));
    let unknown = vec!["1.1.1".to_owned(), "junk".to_owned(), String::new()];
    assert_eq!(h.groups.ack(&g, &unknown).await.unwrap(), 0);
    assert_eq!(
        h.groups.nack(&g, &unknown, NackAction::Park).await.unwrap(),
        0
    );
    assert!(ConsumerName::new("w".repeat(257)).is_err());
    assert!(ConsumerName::new("").is_err());

    let moved = GroupSpec {
        source: all_of("invoice"),
        ..base.clone()
    };
    assert!(matches!(
        h.groups.create_or_update(&g, moved).await,
        Err(GroupError::Fixed {
            field: "source",
            ..
        })
    ));
    let later = GroupSpec {
        from: StartFrom::End,
        ..base.clone()
    };
    assert!(matches!(
        h.groups.create_or_update(&g, later).await,
        Err(GroupError::Fixed { field: "from", .. })
    ));
    let tuned = GroupSpec {
        ack_timeout_ms: 5000,
        max_deliveries: 9,
        ordering: Ordering::PerStream,
        ..base
    };
    assert_eq!(
        h.groups.create_or_update(&g, tuned).await.unwrap(),
        Upserted::Updated
    );
    let info = h.restarted().info(&g).await.unwrap();
    assert_eq!(
        (
            info.ack_timeout_ms,
            info.max_deliveries,
            info.ordering,
            info.acked
        ),
        (5000, 9, Ordering::PerStream, 0)
    );
}

/// A group over the whole log never hands out events of store-owned streams, such as its
/// own state events or another group's.
pub async fn a_group_over_everything_never_delivers_the_stores_own_events(
    store: Arc<dyn EventStore>,
) {
    let h = Harness::new(store);
    let everything = group("everything");
    h.groups
        .create_or_update(
            &everything,
            spec(Source::All(AllSource::default()), Ordering::None, 5),
        )
        .await
        .unwrap();
    let other = group("other");
    h.groups
        .create_or_update(&other, spec(all_of("order"), Ordering::None, 5))
        .await
        .unwrap();
    seed(&h.store, &["order-1", "invoice-1"], 10).await;
    let _ = drain(&h.groups, &other, "c").await;
    let events = drain(&h.groups, &everything, "c").await;
    assert_eq!(events.len(), 20);
    assert!(events.iter().all(|e| !e.stream.is_system()));
    assert_eq!(h.groups.info(&everything).await.unwrap().pending, 0);
}

/// Two processes over one store (two `Groups`) compete for one group's events: each
/// event is acked exactly once, because every change is written with the state stream's
/// exact version and a stale process decides again.
pub async fn two_processes_share_a_group_without_handing_out_an_event_twice(
    store: Arc<dyn EventStore>,
) {
    let h = Harness::new(store);
    seed(&h.store, &["order-1", "order-2", "order-3"], 50).await;
    let g = group("shared");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 5))
        .await
        .unwrap();
    let other = Arc::new(h.restarted());
    let mine = Arc::new(h.restarted());
    let work = |groups: Arc<Groups>, name: &'static str| {
        let g = g.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let m = groups
                    .poll(&g, &consumer(name), 5, Duration::ZERO)
                    .await
                    .unwrap();
                if m.is_empty() {
                    return got;
                }
                assert_eq!(groups.ack(&g, &ids(&m)).await.unwrap(), m.len());
                got.extend(m.into_iter().map(|m| key(&m.event)));
                tokio::task::yield_now().await;
            }
        })
    };
    let (a, b) = tokio::time::timeout(WAIT, async {
        let a = work(Arc::clone(&mine), "a");
        let b = work(Arc::clone(&other), "b");
        (a.await.unwrap(), b.await.unwrap())
    })
    .await
    .expect("both finish");
    let mut all: Vec<_> = a.iter().chain(&b).cloned().collect();
    all.sort();
    let total = all.len();
    all.dedup();
    assert_eq!(total, 150, "nothing acked twice");
    assert_eq!(all.len(), 150, "everything acked");
    assert_eq!(h.groups.info(&g).await.unwrap().acked, 150);
}

/// Four consumers on each of two processes: within a process their decisions are
/// pipelined (written in shared batches), across processes they conflict, and a batch
/// that conflicts takes the decisions staged on top of it along. Each event is still
/// acked exactly once.
pub async fn many_consumers_on_two_processes_ack_each_event_exactly_once(
    store: Arc<dyn EventStore>,
) {
    let h = Harness::new(store);
    seed(&h.store, &["order-1", "order-2", "order-3", "order-4"], 50).await;
    let g = group("busy");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 5))
        .await
        .unwrap();
    let processes = [Arc::new(h.restarted()), Arc::new(h.restarted())];
    let mut workers = Vec::new();
    for (p, groups) in processes.iter().enumerate() {
        for c in 0..4 {
            let (groups, g) = (Arc::clone(groups), g.clone());
            workers.push(tokio::spawn(async move {
                let name = consumer(&format!("p{p}-c{c}"));
                let mut got = Vec::new();
                loop {
                    let m = groups.poll(&g, &name, 3, Duration::ZERO).await.unwrap();
                    if m.is_empty() {
                        return got;
                    }
                    assert_eq!(groups.ack(&g, &ids(&m)).await.unwrap(), m.len());
                    got.extend(m.into_iter().map(|m| key(&m.event)));
                }
            }));
        }
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(
            tokio::time::timeout(WAIT, worker)
                .await
                .expect("every worker finishes")
                .unwrap(),
        );
    }
    all.sort();
    let total = all.len();
    all.dedup();
    assert_eq!(total, 200, "nothing acked twice");
    assert_eq!(all.len(), 200, "everything acked");
    let info = h.restarted().info(&g).await.unwrap();
    assert_eq!((info.acked, info.in_flight, info.pending), (200, 0, 0));
}

/// A process whose view of the group is older than another's still acts on the current
/// state: it acks deliveries the other process made (an HTTP client behind a load balancer
/// acks on any node) and hands out what the other process nacked.
pub async fn a_process_with_an_older_view_acks_and_polls_by_the_current_state(
    store: Arc<dyn EventStore>,
) {
    let h = Harness::new(store);
    seed(&h.store, &["order-1"], 6).await;
    let g = group("two-views");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 5))
        .await
        .unwrap();
    let a = h.restarted();
    let b = h.restarted();
    assert_eq!(
        b.info(&g).await.unwrap().pending,
        6,
        "b has read the group once"
    );
    let first = a.poll(&g, &consumer("a"), 3, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 3);

    assert_eq!(
        b.ack(&g, &ids(&first)).await.unwrap(),
        3,
        "b acks a's deliveries"
    );

    let rest = a.poll(&g, &consumer("a"), 3, Duration::ZERO).await.unwrap();
    assert_eq!(rest.len(), 3);
    a.nack(&g, &ids(&rest[..1]), NackAction::Retry)
        .await
        .unwrap();
    let again = b
        .poll(&g, &consumer("b"), 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|m| key(&m.event)).collect::<Vec<_>>(),
        vec![key(&rest[0].event)],
        "b hands out what a gave back, and nothing a still holds"
    );
    assert_eq!(h.groups.info(&g).await.unwrap().acked, 3);
}

/// A waiting poll wakes when an event it can take is appended, and when another consumer
/// gives back (nacks) an event, without polling on a timer.
pub async fn a_waiting_poll_wakes_on_new_events_and_on_returned_ones(store: Arc<dyn EventStore>) {
    let h = Arc::new(Harness::new(store));
    let g = group("waiting");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 5))
        .await
        .unwrap();
    let waiter = {
        let (h, g) = (Arc::clone(&h), g.clone());
        tokio::spawn(async move {
            h.groups
                .poll(&g, &consumer("w"), 10, Duration::from_secs(600))
                .await
                .unwrap()
        })
    };
    seed(&h.store, &["invoice-1"], 1).await; // not the group's: the poll goes on waiting
    seed(&h.store, &["order-1"], 1).await;
    let got = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.stream.as_str(), "order-1");

    let waiter = {
        let (h, g) = (Arc::clone(&h), g.clone());
        tokio::spawn(async move {
            h.groups
                .poll(&g, &consumer("w2"), 10, Duration::from_secs(600))
                .await
                .unwrap()
        })
    };
    h.groups
        .nack(&g, &ids(&got), NackAction::Retry)
        .await
        .unwrap();
    let again = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery, 2);
}

/// A process loads a group from its latest snapshot: after many changes the state stream
/// holds snapshots, and a restarted process arrives at the same state reading only what
/// follows the last one.
pub async fn a_restart_loads_the_group_from_its_latest_snapshot(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    let groups = h.restarted().snapshot_every(10);
    seed(&h.store, &["order-1", "order-2"], 30).await;
    let g = group("snapshots");
    groups
        .create_or_update(&g, spec(all_of("order"), Ordering::PerStream, 5))
        .await
        .unwrap();
    let mut parked = 0;
    for round in 0..40 {
        let m = poll(&groups, &g, "c", 1).await;
        if m.is_empty() {
            break;
        }
        if round % 7 == 3 {
            groups.nack(&g, &ids(&m), NackAction::Park).await.unwrap();
            parked += 1;
        } else {
            groups.ack(&g, &ids(&m)).await.unwrap();
        }
    }
    let before = groups.info(&g).await.unwrap();
    assert_eq!(before.parked, parked);
    let state = g.state_stream();
    let version = h.store.stream_version(state).await.unwrap();
    assert!(
        version.get() >= 30,
        "at least three snapshots' worth of state events"
    );
    // Each snapshot hides what came before it, which a scavenge then erases: what is
    // left starts at the last snapshot.
    let kept_from = h
        .store
        .stream_metadata(state)
        .await
        .unwrap()
        .truncate_before
        .expect("the state stream is truncated before its last snapshot");
    let visible = h
        .store
        .read_stream(state, Version(1), Direction::Forward, 1000)
        .await
        .unwrap();
    assert_eq!(visible[0].version, kept_from);
    assert_eq!(visible[0].event_type.as_str(), "Snapshot");
    assert!(
        visible.iter().skip(1).all(|e| e.event_type.as_str() != "Snapshot"
            && e.event_type.as_str() != "GroupCreated"),
        "only the last snapshot is left"
    );
    let report = h.store.scavenge().await.unwrap();
    assert!(
        report.events_removed >= kept_from.get() - 1,
        "the state events before the last snapshot are erased: {report:?}"
    );
    let after = h.restarted().info(&g).await.unwrap();
    assert_eq!(after, before);
    let rest = drain(&h.restarted(), &g, "c").await;
    assert_eq!(rest.len() as u64, before.pending);
}

/// Groups are listed by name with their counts.
pub async fn groups_are_listed_by_name(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    seed(&h.store, &["order-1"], 3).await;
    for name in ["zeta", "alpha", "mid"] {
        h.groups
            .create_or_update(&group(name), spec(all_of("order"), Ordering::None, 5))
            .await
            .unwrap();
    }
    let list = h.restarted().list().await.unwrap();
    let names: Vec<&str> = list.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, vec!["alpha", "mid", "zeta"]);
    assert!(list.iter().all(|g| g.pending == 3));
}

/// A group's state is events of a store-owned stream that users cannot name, stored and
/// read back by the backend like any other stream.
pub async fn a_groups_state_lives_in_a_store_owned_stream(store: Arc<dyn EventStore>) {
    let h = Harness::new(store);
    let g = group("owned");
    h.groups
        .create_or_update(&g, spec(all_of("order"), Ordering::None, 5))
        .await
        .unwrap();
    let state = g.state_stream();
    assert_eq!(state.as_str(), "$group-owned");
    assert!(
        StreamName::new(state.as_str()).is_err(),
        "users cannot name it"
    );
    let events = h
        .store
        .read_stream(state, Version(1), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type.as_str(), "GroupCreated");
    assert_eq!(events[0].stream, *state);
    let all = h
        .store
        .read_all(Position(1), &concord_core::Filter::all(), 10)
        .await
        .unwrap();
    assert_eq!(
        all.events.len(),
        1,
        "it is part of the log, read back intact"
    );
    let listed = h.store.list_streams("$group-", None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
}

/// Expands to one `#[tokio::test]` per spec, each on a store from `$fresh()`.
#[macro_export]
macro_rules! group_specs {
    ($fresh:path) => {
        $crate::group_specs!(@specs $fresh;
            every_source_event_reaches_some_consumer,
            a_stream_source_delivers_from_where_the_group_starts,
            acked_events_are_never_delivered_again_also_after_a_restart,
            in_flight_past_its_ack_timeout_is_delivered_again_with_the_next_delivery,
            an_event_is_parked_after_max_deliveries,
            nack_retries_parks_or_skips,
            replaying_parked_events_delivers_them_again,
            per_stream_ordering_keeps_each_streams_events_in_order_and_one_at_a_time,
            deleting_a_group_frees_its_state,
            bad_input_is_refused_and_source_and_from_are_fixed,
            a_group_over_everything_never_delivers_the_stores_own_events,
            two_processes_share_a_group_without_handing_out_an_event_twice,
            many_consumers_on_two_processes_ack_each_event_exactly_once,
            a_process_with_an_older_view_acks_and_polls_by_the_current_state,
            a_waiting_poll_wakes_on_new_events_and_on_returned_ones,
            a_restart_loads_the_group_from_its_latest_snapshot,
            groups_are_listed_by_name,
            a_groups_state_lives_in_a_store_owned_stream,
        );
    };
    (@specs $fresh:path; $($spec:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $spec() {
                let test_store = $fresh().await;
                $crate::specs::$spec(::std::sync::Arc::clone(&test_store.store)).await;
                drop(test_store);
            }
        )*
    };
}
