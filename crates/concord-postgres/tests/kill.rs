//! SIGKILL of PostgreSQL itself under 16 writers, five times: nothing acknowledged is lost,
//! nothing a reader saw is taken back, no append is partly visible, positions stay
//! gap-free, and the same store carries on once the database is back (no reopen). Each
//! writer re-sends an append that failed with the same event ids until it is acknowledged,
//! so every attempted append ends written once; a reader follows the log throughout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use concord_core::{
    AppendRequest, EventId, EventStore, EventType, ExpectedVersion, Filter, Json, NewEvent,
    Position, StoreError, StreamName,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::PostgresServer;

const WRITERS: usize = 16;
const CYCLES: usize = 5;
/// Acknowledged appends between two kills.
const ACKS_PER_CYCLE: usize = 30;
/// Generous: only a hang would reach it.
const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_postgres_loses_nothing_acknowledged_or_read_and_writes_no_part_of_an_append() {
    let mut server = PostgresServer::start();
    let store = Arc::new(PostgresStore::connect(&server.url()).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, mut acked) = tokio::sync::watch::channel(0usize);
    let acks = Arc::new(acks);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, stop, acks) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&acks));
            tokio::spawn(async move {
                let stream = StreamName::new(format!("account-{w}")).unwrap();
                let mut acknowledged: Vec<([EventId; 2], Position)> = Vec::new();
                let mut failures = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let events: Vec<NewEvent> = (0..2)
                        .map(|_| {
                            NewEvent::new(
                                EventType::new("Deposited").unwrap(),
                                Json::empty_object(),
                            )
                        })
                        .collect();
                    let ids = [events[0].id, events[1].id];
                    let request = AppendRequest::new(stream.clone(), ExpectedVersion::Any, events);
                    loop {
                        match store.append(request.clone()).await {
                            Ok(outcome) => {
                                acknowledged.push((ids, outcome.appended().first_position));
                                acks.send_modify(|n| *n += 1);
                                break;
                            }
                            Err(StoreError::Unavailable { .. }) => {
                                failures += 1;
                                // The database is down: wait for the head to answer again
                                // instead of spinning.
                                let _ = store.wait_for_head(Position(u64::MAX - 1)).await;
                            }
                            Err(other) => panic!("writer {w}: {other:?}"),
                        }
                    }
                }
                (acknowledged, failures)
            })
        })
        .collect();

    // A reader following the log through the kills: whatever it saw must still be there,
    // at the position it saw, once the database has recovered (an event read before it was
    // durable could be taken back by the crash and its position given to another).
    let reader = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut seen: Vec<(Position, EventId)> = Vec::new();
            let mut next = Position(1);
            while !stop.load(Ordering::Relaxed) {
                match store.read_all(next, &Filter::all(), 1000).await {
                    Ok(page) if !page.events.is_empty() => {
                        seen.extend(page.events.iter().map(|e| (e.position, e.id)));
                        next = page.next_from;
                    }
                    // Caught up, or the database is down: wait (at most ~1 s) either way.
                    Ok(_) | Err(StoreError::Unavailable { .. }) => {
                        let _ = store.wait_for_head(Position(next.get() - 1)).await;
                    }
                    Err(other) => panic!("reader: {other:?}"),
                }
            }
            seen
        })
    };

    for cycle in 1..=CYCLES {
        let target = cycle * ACKS_PER_CYCLE;
        tokio::time::timeout(WAIT, acked.wait_for(|n| *n >= target))
            .await
            .expect("writers make progress after a restart")
            .unwrap();
        tokio::task::block_in_place(|| {
            server.kill();
            server.restart();
        });
    }
    let target = (CYCLES + 1) * ACKS_PER_CYCLE;
    tokio::time::timeout(WAIT, acked.wait_for(|n| *n >= target))
        .await
        .expect("writers make progress after the last restart")
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged: Vec<([EventId; 2], Position)> = Vec::new();
    let mut failures = 0;
    for w in writers {
        let (a, f) = tokio::time::timeout(WAIT, w).await.unwrap().unwrap();
        acknowledged.extend(a);
        failures += f;
    }
    assert!(
        failures > 0,
        "no append ever met the dead database: the kills tested nothing"
    );
    let seen = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();

    // Every event of the log, read through the same store.
    let head = store.head().await.unwrap();
    let mut log = Vec::new();
    let mut from = Position(1);
    while from <= head {
        let page = store.read_all(from, &Filter::all(), 1000).await.unwrap();
        log.extend(page.events);
        from = page.next_from;
    }
    let positions: Vec<u64> = log.iter().map(|e| e.position.get()).collect();
    assert_eq!(
        positions,
        (1..=head.get()).collect::<Vec<_>>(),
        "positions have a gap"
    );
    let at: HashMap<EventId, Position> = log.iter().map(|e| (e.id, e.position)).collect();
    assert_eq!(at.len(), log.len(), "an event was written twice");
    for ([first, second], position) in &acknowledged {
        assert_eq!(
            at.get(first),
            Some(position),
            "an acknowledged event was lost"
        );
        assert_eq!(
            at.get(second),
            Some(&position.next()),
            "an acknowledged append is partly visible"
        );
    }
    assert!(
        seen.len() >= 2 * ACKS_PER_CYCLE,
        "the reader saw {} events: it followed nothing",
        seen.len()
    );
    for (position, id) in &seen {
        assert_eq!(
            at.get(id),
            Some(position),
            "an event a reader saw was taken back or moved by the crash"
        );
    }
    // Every append was re-sent until acknowledged, so the log holds exactly those.
    assert_eq!(log.len(), 2 * acknowledged.len());
}
