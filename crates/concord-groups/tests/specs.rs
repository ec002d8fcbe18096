//! Consumer-group specs, each run against MemoryStore, the embedded store and Redis: the
//! group's state lives in the store, so every backend must keep the same promises.
//! Timeouts move a `ManualClock`, never the test's own time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use concord_core::{
    AppendRequest, EventStore, ExpectedVersion, Filter, MemoryStore, StreamName, doc,
};
use concord_groups::{
    GroupError, GroupSettings, Groups, ManualClock, NackAction, Ordering, PutOutcome, Source, Start,
};

/// A store and whatever must live as long as it (a temporary directory).
struct Fresh {
    store: Arc<dyn EventStore>,
    _guard: Option<Box<dyn std::any::Any + Send>>,
}

async fn append(store: &Arc<dyn EventStore>, stream: &str, n: usize) {
    let events = (0..n)
        .map(|i| doc::event("Deposited", serde_json::json!({"i": i})))
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

fn all() -> GroupSettings {
    GroupSettings::new(Source::All(Filter::all()))
}

fn groups(store: &Arc<dyn EventStore>, clock: &Arc<ManualClock>) -> Groups {
    Groups::with_clock(store.clone(), clock.clone())
}

fn ids(d: &[concord_groups::Delivery]) -> Vec<String> {
    d.iter().map(|d| d.ack_id.clone()).collect()
}

async fn every_event_reaches_a_consumer_and_an_acked_one_never_returns(f: Fresh) {
    let clock = Arc::new(ManualClock::at(1_000));
    append(&f.store, "order-1", 3).await;
    append(&f.store, "order-2", 2).await;
    let g = groups(&f.store, &clock);
    assert_eq!(g.put("orders", all()).await.unwrap(), PutOutcome::Created);
    let got = g.fetch("orders", "w1", 100).await.unwrap();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|d| d.delivery == 1));
    assert_eq!(g.ack("orders", &ids(&got)).await.unwrap(), 5);
    clock.advance(1_000_000);
    // A restart: a new instance knows only what the store holds.
    let restarted = groups(&f.store, &clock);
    assert!(
        restarted
            .fetch("orders", "w2", 100)
            .await
            .unwrap()
            .is_empty()
    );
    let info = restarted.get("orders").await.unwrap();
    assert_eq!(
        (info.acked, info.in_flight, info.parked, info.pending),
        (5, 0, 0, 0)
    );
    append(&f.store, "order-3", 1).await;
    let got = restarted.fetch("orders", "w2", 100).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.stream.as_str(), "order-3");
}

async fn an_unacked_event_is_redelivered_after_its_timeout_then_parked(f: Fresh) {
    let clock = Arc::new(ManualClock::at(1_000));
    append(&f.store, "order-1", 1).await;
    let g = groups(&f.store, &clock);
    let mut settings = all();
    settings.max_deliveries = 2;
    settings.ack_timeout_ms = 500;
    g.put("orders", settings).await.unwrap();
    let first = g.fetch("orders", "w1", 10).await.unwrap();
    assert_eq!(first[0].delivery, 1);
    clock.advance(499);
    assert!(g.fetch("orders", "w2", 10).await.unwrap().is_empty());
    clock.advance(1);
    let second = g.fetch("orders", "w2", 10).await.unwrap();
    assert_eq!(second[0].delivery, 2);
    // The first delivery's answer is stale now: ignored, not counted.
    assert_eq!(g.ack("orders", &ids(&first)).await.unwrap(), 0);
    clock.advance(500);
    assert!(g.fetch("orders", "w1", 10).await.unwrap().is_empty());
    assert_eq!(g.get("orders").await.unwrap().parked, 1);
    assert_eq!(g.parked("orders").await.unwrap().len(), 1);
    assert_eq!(g.replay_parked("orders").await.unwrap(), 1);
    let replayed = g.fetch("orders", "w1", 10).await.unwrap();
    assert_eq!(replayed[0].delivery, 1);
    assert_eq!(replayed[0].event.stream.as_str(), "order-1");
}

async fn nack_retries_parks_or_skips(f: Fresh) {
    let clock = Arc::new(ManualClock::at(1_000));
    append(&f.store, "order-1", 3).await;
    let g = groups(&f.store, &clock);
    g.put("orders", all()).await.unwrap();
    let got = g.fetch("orders", "w1", 10).await.unwrap();
    let [a, b, c] = [&got[0], &got[1], &got[2]];
    assert_eq!(
        g.nack("orders", std::slice::from_ref(&a.ack_id), NackAction::Retry)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        g.nack("orders", std::slice::from_ref(&b.ack_id), NackAction::Park)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        g.nack("orders", std::slice::from_ref(&c.ack_id), NackAction::Skip)
            .await
            .unwrap(),
        1
    );
    let again = g.fetch("orders", "w1", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].event.version, again[0].delivery),
        (a.event.version, 2)
    );
    let info = g.get("orders").await.unwrap();
    assert_eq!((info.in_flight, info.parked, info.skipped), (1, 1, 1));
}

async fn per_stream_order_holds_one_event_per_stream_in_flight(f: Fresh) {
    let clock = Arc::new(ManualClock::at(1_000));
    append(&f.store, "order-1", 3).await;
    append(&f.store, "order-2", 2).await;
    let g = groups(&f.store, &clock);
    let mut settings = all();
    settings.ordering = Ordering::PerStream;
    g.put("orders", settings).await.unwrap();
    let got = g.fetch("orders", "w1", 10).await.unwrap();
    let firsts: Vec<_> = got
        .iter()
        .map(|d| (d.event.stream.to_string(), d.event.version.0))
        .collect();
    assert_eq!(firsts, vec![("order-1".into(), 1), ("order-2".into(), 1)]);
    assert!(g.fetch("orders", "w2", 10).await.unwrap().is_empty());
    // A retried event blocks its stream's next ones.
    g.nack("orders", &[got[0].ack_id.clone()], NackAction::Retry)
        .await
        .unwrap();
    let next = g.fetch("orders", "w2", 10).await.unwrap();
    assert_eq!((next[0].event.version.0, next[0].delivery), (1, 2));
    assert_eq!(next.len(), 1);
    g.ack("orders", &[next[0].ack_id.clone(), got[1].ack_id.clone()])
        .await
        .unwrap();
    let next = g.fetch("orders", "w2", 10).await.unwrap();
    let versions: Vec<_> = next
        .iter()
        .map(|d| (d.event.stream.to_string(), d.event.version.0))
        .collect();
    assert_eq!(versions, vec![("order-1".into(), 2), ("order-2".into(), 2)]);
}

async fn a_stream_source_starting_at_end_sees_only_new_events(f: Fresh) {
    let clock = Arc::new(ManualClock::at(1_000));
    append(&f.store, "order-1", 3).await;
    append(&f.store, "other-1", 3).await;
    let g = groups(&f.store, &clock);
    let mut settings = GroupSettings::new(Source::Stream(doc::stream("order-1")));
    settings.start = Start::End;
    g.put("o1", settings).await.unwrap();
    assert!(g.fetch("o1", "w", 10).await.unwrap().is_empty());
    append(&f.store, "order-1", 1).await;
    let got = g.fetch("o1", "w", 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event.version.0, 4);
    assert_eq!(g.get("o1").await.unwrap().pending, 0);
}

async fn bad_input_is_refused_and_nothing_is_written(f: Fresh) {
    let clock = Arc::new(ManualClock::at(1_000));
    let g = groups(&f.store, &clock);
    let mut s = all();
    s.max_deliveries = 0;
    assert!(matches!(g.put("x", s).await, Err(GroupError::Invalid(_))));
    let mut s = all();
    s.ack_timeout_ms = 99;
    assert!(matches!(g.put("x", s).await, Err(GroupError::Invalid(_))));
    assert!(matches!(g.get("x").await, Err(GroupError::NotFound(_))));
    g.put("x", all()).await.unwrap();
    assert!(matches!(
        g.fetch("x", "w", 1001).await,
        Err(GroupError::Invalid(_))
    ));
    assert!(matches!(
        g.fetch("x", "w", 0).await,
        Err(GroupError::Invalid(_))
    ));
    assert!(matches!(
        g.fetch("x", &"c".repeat(257), 1).await,
        Err(GroupError::Invalid(_))
    ));
    assert!(matches!(
        g.fetch("x", "", 1).await,
        Err(GroupError::Invalid(_))
    ));
    assert_eq!(g.ack("x", &["nope".into(), "7.1".into()]).await.unwrap(), 0);
    let changed = GroupSettings::new(Source::Stream(doc::stream("order-1")));
    assert!(matches!(
        g.put("x", changed).await,
        Err(GroupError::SourceChanged { .. })
    ));
    let mut same = all();
    same.max_deliveries = 9;
    assert_eq!(g.put("x", same).await.unwrap(), PutOutcome::Updated);
    assert_eq!(g.get("x").await.unwrap().settings.max_deliveries, 9);
    assert!(matches!(
        g.fetch("nope", "w", 1).await,
        Err(GroupError::NotFound(_))
    ));
    // Users cannot name the state stream.
    assert!(StreamName::new("$group-x").is_err());
}

async fn deleting_a_group_frees_it_and_lists_show_the_living(f: Fresh) {
    let clock = Arc::new(ManualClock::at(1_000));
    append(&f.store, "order-1", 2).await;
    let g = groups(&f.store, &clock);
    g.put("a", all()).await.unwrap();
    g.put("b", all()).await.unwrap();
    g.fetch("a", "w", 10).await.unwrap();
    assert_eq!(
        g.list().await.unwrap(),
        vec!["a".to_string(), "b".to_string()]
    );
    g.delete("a").await.unwrap();
    assert_eq!(g.list().await.unwrap(), vec!["b".to_string()]);
    assert!(matches!(g.get("a").await, Err(GroupError::NotFound(_))));
    assert!(matches!(g.delete("a").await, Err(GroupError::NotFound(_))));
    // Created again, it starts afresh.
    assert_eq!(g.put("a", all()).await.unwrap(), PutOutcome::Created);
    assert_eq!(g.fetch("a", "w", 10).await.unwrap().len(), 2);
    // A group's own state events are never its events.
    let other = groups(&f.store, &clock);
    assert!(
        other
            .fetch("b", "w", 100)
            .await
            .unwrap()
            .iter()
            .all(|d| !d.event.stream.is_system())
    );
}

/// The run: 4 consumers on two nodes, 10 000 events over 50 streams, one consumer
/// gone halfway without acking; every event acked exactly once, each stream's events
/// handled in version order.
async fn four_consumers_share_ten_thousand_events_and_survive_one_dropping(f: Fresh) {
    const STREAMS: usize = 50;
    const PER_STREAM: usize = 200;
    let clock = Arc::new(ManualClock::at(1_000));
    for s in 0..STREAMS {
        append(&f.store, &format!("order-{s}"), PER_STREAM).await;
    }
    let nodes = [groups(&f.store, &clock), groups(&f.store, &clock)];
    let mut settings = all();
    settings.ordering = Ordering::PerStream;
    settings.ack_timeout_ms = 1_000;
    nodes[0].put("orders", settings).await.unwrap();
    let mut handled: HashMap<StreamName, Vec<u64>> = HashMap::new();
    let mut acked_total = 0usize;
    let mut dropped: Option<usize> = None;
    let mut redeliveries = 0usize;
    let mut lost_by_drop = BTreeSet::new();
    let mut idle_rounds = 0;
    while acked_total < STREAMS * PER_STREAM {
        let mut any = false;
        for consumer in 0..4 {
            if dropped == Some(consumer) {
                continue;
            }
            let node = &nodes[consumer % 2];
            let got = node
                .fetch("orders", &format!("w{consumer}"), 100)
                .await
                .unwrap();
            if got.is_empty() {
                continue;
            }
            any = true;
            for d in &got {
                if d.delivery > 1 {
                    redeliveries += 1;
                    assert!(lost_by_drop.contains(&(d.event.stream.clone(), d.event.version.0)));
                }
            }
            if dropped.is_none() && consumer == 3 && acked_total >= STREAMS * PER_STREAM / 2 {
                dropped = Some(consumer);
                for d in &got {
                    lost_by_drop.insert((d.event.stream.clone(), d.event.version.0));
                }
                continue;
            }
            for d in &got {
                handled
                    .entry(d.event.stream.clone())
                    .or_default()
                    .push(d.event.version.0);
            }
            acked_total += node.ack("orders", &ids(&got)).await.unwrap();
        }
        if !any {
            idle_rounds += 1;
            assert!(idle_rounds < 10, "no progress with {acked_total} acked");
            clock.advance(1_000);
        }
    }
    assert!(dropped.is_some());
    assert_eq!(
        redeliveries,
        lost_by_drop.len(),
        "each redelivery is one the drop caused"
    );
    let info = nodes[1].get("orders").await.unwrap();
    assert_eq!(info.acked, (STREAMS * PER_STREAM) as u64);
    assert_eq!((info.in_flight, info.parked, info.pending), (0, 0, 0));
    assert_eq!(handled.len(), STREAMS);
    for versions in handled.values() {
        let expected: Vec<u64> = (1..=PER_STREAM as u64).collect();
        assert_eq!(
            versions, &expected,
            "each stream handled once, in version order"
        );
    }
}

async fn a_poison_event_is_parked_and_the_rest_flow_past_it(f: Fresh) {
    let clock = Arc::new(ManualClock::at(1_000));
    append(&f.store, "order-1", 10).await;
    let g = groups(&f.store, &clock);
    let mut settings = all();
    settings.max_deliveries = 3;
    g.put("orders", settings).await.unwrap();
    let mut done = 0;
    for _ in 0..20 {
        let got = g.fetch("orders", "w", 5).await.unwrap();
        for d in got {
            if d.event.version.0 == 4 {
                g.nack("orders", &[d.ack_id], NackAction::Retry)
                    .await
                    .unwrap();
            } else {
                done += g.ack("orders", &[d.ack_id]).await.unwrap();
            }
        }
    }
    assert_eq!(done, 9);
    let parked = g.parked("orders").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].version.0, 4);
    g.replay_parked("orders").await.unwrap();
    let again = g.fetch("orders", "w", 5).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.version.0, 4);
}

async fn state_is_compacted_so_a_restart_reads_a_short_tail(f: Fresh) {
    let clock = Arc::new(ManualClock::at(1_000));
    append(&f.store, "order-1", 300).await;
    let g = groups(&f.store, &clock);
    g.put("orders", all()).await.unwrap();
    for _ in 0..300 {
        let got = g.fetch("orders", "w", 1).await.unwrap();
        g.ack("orders", &ids(&got)).await.unwrap();
    }
    let state = concord_groups::check_group_name("orders").unwrap();
    let visible = f
        .store
        .read_stream(
            &state,
            concord_core::Version(1),
            concord_core::Direction::Forward,
            10_000,
        )
        .await
        .unwrap();
    assert!(visible.len() as u64 <= concord_groups::SNAPSHOT_EVERY);
    let restarted = groups(&f.store, &clock);
    assert_eq!(restarted.get("orders").await.unwrap().acked, 300);
}

macro_rules! specs {
    ($fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($fresh().await).await;
            }
        )*
    };
}

macro_rules! all_specs {
    ($fresh:path) => {
        specs!($fresh;
            every_event_reaches_a_consumer_and_an_acked_one_never_returns,
            an_unacked_event_is_redelivered_after_its_timeout_then_parked,
            nack_retries_parks_or_skips,
            per_stream_order_holds_one_event_per_stream_in_flight,
            a_stream_source_starting_at_end_sees_only_new_events,
            bad_input_is_refused_and_nothing_is_written,
            deleting_a_group_frees_it_and_lists_show_the_living,
            four_consumers_share_ten_thousand_events_and_survive_one_dropping,
            a_poison_event_is_parked_and_the_rest_flow_past_it,
            state_is_compacted_so_a_restart_reads_a_short_tail,
        );
    };
}

mod memory {
    use super::*;
    async fn fresh() -> Fresh {
        Fresh {
            store: Arc::new(MemoryStore::new()),
            _guard: None,
        }
    }
    all_specs!(fresh);
}

mod embedded {
    use super::*;
    async fn fresh() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let store = concord_embedded::EmbeddedStore::open(dir.path()).unwrap();
        Fresh {
            store: Arc::new(store),
            _guard: Some(Box::new(dir)),
        }
    }
    all_specs!(fresh);
}

mod redis {
    use super::*;
    async fn fresh() -> Fresh {
        let options = concord_redis::RedisOptions {
            key_prefix: concord_testkit::redis::unique_prefix(),
            ..concord_redis::RedisOptions::default()
        };
        let store = concord_redis::RedisStore::connect_with(
            &concord_testkit::redis::shared().url(),
            options,
        )
        .await
        .unwrap();
        Fresh {
            store: Arc::new(store),
            _guard: None,
        }
    }
    all_specs!(fresh);
}
