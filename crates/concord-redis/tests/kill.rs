//! Durability under `kill -9`: Redis runs with `appendonly yes` and `appendfsync always`,
//! concurrent writers append three-event batches, and Redis is killed at random moments
//! (seeded; the seed is printed, set `CONCORD_TEST_SEED` to replay) and restarted on the
//! same directory. Afterwards every acknowledged append must be there with the versions
//! and positions it was acknowledged with, the global stream must be gap-free and agree
//! with the streams, and no append may be partly visible. Writers re-send a failed append
//! with the same event ids until it is acknowledged, so an append that landed just before
//! a kill comes back as a duplicate, never twice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_core::{
    AppendRequest, Appended, Direction, EventId, EventStore, ExpectedVersion, Filter, Position,
    StoreError, StreamName, Version, doc,
};
use concord_testkit::redis::{Persistence, RedisServer, RedisServerOptions};
use rand::{Rng, SeedableRng};

const WRITERS: usize = 4;
const EVENTS_PER_APPEND: usize = 3;

#[derive(Debug, Clone)]
struct Attempt {
    stream: StreamName,
    ids: Vec<EventId>,
    acknowledged: Option<Appended>,
}

fn scale() -> usize {
    std::env::var("CONCORD_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

#[derive(Default)]
struct Counters {
    acked: AtomicUsize,
    /// Calls that failed with `Unavailable` (Redis was down or went down mid-call).
    unavailable: AtomicUsize,
    /// Re-sent appends that Redis had taken before the kill: answered as duplicates.
    duplicates: AtomicUsize,
}

async fn writer(
    store: concord_redis::RedisStore,
    w: usize,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Attempt>>>,
    counters: Arc<Counters>,
) {
    let streams: Vec<StreamName> = (0..3)
        .map(|i| doc::stream(&format!("account-{w}.{i}")))
        .collect();
    let mut versions = [Version::NONE; 3];
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let i = turn % streams.len();
        turn += 1;
        let events: Vec<_> = (0..EVENTS_PER_APPEND)
            .map(|k| doc::event("Deposited", serde_json::json!({"amount": k})))
            .collect();
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let request = AppendRequest::new(
            streams[i].clone(),
            ExpectedVersion::Exact(versions[i]),
            events,
        );
        let slot = {
            let mut log = log.lock().unwrap();
            log.push(Attempt {
                stream: streams[i].clone(),
                ids,
                acknowledged: None,
            });
            log.len() - 1
        };
        // Re-send the same ids until acknowledged; a stopped writer may leave one unacknowledged.
        loop {
            match store.append(request.clone()).await {
                Ok(outcome) => {
                    let appended = outcome.appended().clone();
                    versions[i] = appended.last_version;
                    log.lock().unwrap()[slot].acknowledged = Some(appended);
                    if outcome.is_duplicate() {
                        counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(StoreError::Unavailable { .. }) => {
                    counters.unavailable.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // Pacing while Redis is down, so a refused connection does not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("writer {w}: unexpected error {e:?}"),
            }
        }
    }
}

async fn wait_for_progress(acked: &AtomicUsize, beyond: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) <= beyond {
        assert!(
            Instant::now() < deadline,
            "no append was acknowledged within 30 s after restarting Redis"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_appends_survive_kill_9_whole_and_in_place() {
    let seed: u64 = std::env::var("CONCORD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("kill test seed: {seed} (replay with CONCORD_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cycles = 5 * scale();

    let mut server = RedisServer::start_with(RedisServerOptions {
        persistence: Persistence::AppendFsyncAlways,
        ..RedisServerOptions::default()
    });
    let store = common::store_on(&server.url(), Duration::from_secs(2)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let counters = Arc::new(Counters::default());
    let acked = &counters.acked;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(writer(
                store.clone(),
                w,
                stop.clone(),
                log.clone(),
                counters.clone(),
            ))
        })
        .collect();

    for cycle in 0..cycles {
        wait_for_progress(acked, acked.load(Ordering::Relaxed)).await;
        // Let the writers run for a random while, then kill Redis mid-stream.
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..300))).await;
        tokio::task::block_in_place(|| server.kill());
        println!(
            "cycle {cycle}: killed Redis after {} acknowledged appends",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
        tokio::task::block_in_place(|| server.restart());
    }
    wait_for_progress(acked, acked.load(Ordering::Relaxed)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    let attempts = log.lock().unwrap().clone();
    let acknowledged = attempts.iter().filter(|a| a.acknowledged.is_some()).count();
    assert!(
        acknowledged > cycles,
        "too few appends to test anything: {acknowledged}"
    );

    // Everything the store holds, by stream and by position.
    let head = store.head().await.unwrap();
    let mut global = Vec::new();
    let mut from = Position::FIRST;
    loop {
        let page = store.read_all(from, &Filter::all(), 1000).await.unwrap();
        let caught_up = page.is_caught_up();
        global.extend(page.events);
        from = page.next_from;
        if caught_up {
            break;
        }
    }
    assert_eq!(
        global.len() as u64,
        head.get(),
        "the global stream must hold exactly head events"
    );
    let mut where_is: HashMap<EventId, (StreamName, Version, Position)> = HashMap::new();
    for (i, e) in global.iter().enumerate() {
        assert_eq!(
            e.position,
            Position(i as u64 + 1),
            "positions must be gap-free"
        );
        assert!(
            where_is
                .insert(e.id, (e.stream.clone(), e.version, e.position))
                .is_none(),
            "event {} stored twice",
            e.id
        );
    }
    let mut streams: Vec<StreamName> = attempts.iter().map(|a| a.stream.clone()).collect();
    streams.sort();
    streams.dedup();
    for s in &streams {
        let events = store
            .read_stream(s, Version(1), Direction::Forward, 100_000)
            .await
            .unwrap();
        let mut next = Version(1);
        let mut all_events = events;
        while let Some(last) = all_events.last().map(|e| e.version) {
            if last.get() as usize != all_events.len() {
                break;
            }
            let more = store
                .read_stream(s, last.next(), Direction::Forward, 1000)
                .await
                .unwrap();
            if more.is_empty() {
                break;
            }
            all_events.extend(more);
        }
        for e in &all_events {
            assert_eq!(
                e.version, next,
                "versions of {s} must be consecutive from 1"
            );
            next = next.next();
            assert_eq!(
                where_is.get(&e.id),
                Some(&(s.clone(), e.version, e.position)),
                "stream and global stream disagree"
            );
        }
    }

    for a in &attempts {
        let found: Vec<_> = a.ids.iter().map(|id| where_is.get(id)).collect();
        let present = found.iter().filter(|f| f.is_some()).count();
        assert!(
            present == 0 || present == a.ids.len(),
            "append to {} is partly visible: {present} of {}",
            a.stream,
            a.ids.len()
        );
        if let Some(ack) = &a.acknowledged {
            assert_eq!(
                present,
                a.ids.len(),
                "an acknowledged append to {} was lost",
                a.stream
            );
            for (k, f) in found.iter().enumerate() {
                let (stream, version, position) = f.unwrap();
                assert_eq!(stream, &a.stream);
                assert_eq!(
                    *version,
                    Version(ack.first_version.get() + k as u64),
                    "acknowledged version changed"
                );
                assert_eq!(
                    *position,
                    Position(ack.first_position.get() + k as u64),
                    "acknowledged position changed"
                );
            }
        }
    }
    let unavailable = counters.unavailable.load(Ordering::Relaxed);
    println!(
        "{acknowledged} acknowledged appends of {} attempts checked after {cycles} kills; {unavailable} calls failed while Redis was down, {} re-sent appends had landed before a kill",
        attempts.len(),
        counters.duplicates.load(Ordering::Relaxed)
    );
    assert!(
        unavailable > 0,
        "no append ever failed: the kills did not hit the writers"
    );
}
