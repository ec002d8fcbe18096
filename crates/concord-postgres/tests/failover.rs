//! Failover: a primary with a synchronous standby (`synchronous_commit = on`), 16 writers on
//! one store whose URL lists both hosts with `target_session_attrs=read-write`. The primary
//! is SIGKILLed and the standby promoted; while there is no primary, appends fail cleanly
//! with `Unavailable` (bounded, no hang); then the same store carries on against the new
//! primary, and every acknowledged event is there. And a duplicate's answer, like an
//! append's, waits for the synchronous standby.
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
const ACKS_BEFORE: usize = 50;
const ACKS_AFTER: usize = 50;
/// Generous: only a hang would reach it.
const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_standby_is_promoted_appends_resume_and_nothing_acknowledged_is_lost() {
    let (mut primary, standby, url) = PostgresServer::start_with_synchronous_standby();
    let store = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, mut acked) = tokio::sync::watch::channel(0usize);
    let acks = Arc::new(acks);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, stop, acks) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&acks));
            tokio::spawn(async move {
                let stream = StreamName::new(format!("account-{w}")).unwrap();
                let mut acknowledged: Vec<(EventId, Position)> = Vec::new();
                let mut unavailable = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let event =
                        NewEvent::new(EventType::new("Deposited").unwrap(), Json::empty_object());
                    let id = event.id;
                    let request =
                        AppendRequest::new(stream.clone(), ExpectedVersion::Any, vec![event]);
                    loop {
                        match store.append(request.clone()).await {
                            Ok(outcome) => {
                                acknowledged.push((id, outcome.appended().first_position));
                                acks.send_modify(|n| *n += 1);
                                break;
                            }
                            Err(StoreError::Unavailable { .. }) => {
                                unavailable += 1;
                                let _ = store.wait_for_head(Position(u64::MAX - 1)).await;
                            }
                            Err(other) => panic!("writer {w}: {other:?}"),
                        }
                    }
                }
                (acknowledged, unavailable)
            })
        })
        .collect();

    tokio::time::timeout(WAIT, acked.wait_for(|n| *n >= ACKS_BEFORE))
        .await
        .unwrap()
        .unwrap();
    tokio::task::block_in_place(|| {
        primary.kill();
        standby.promote();
    });
    let before = *acked.borrow();
    tokio::time::timeout(WAIT, acked.wait_for(|n| *n >= before + ACKS_AFTER))
        .await
        .expect("appends resume against the promoted standby")
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    let mut unavailable = 0;
    for w in writers {
        let (a, u) = tokio::time::timeout(WAIT, w).await.unwrap().unwrap();
        acknowledged.extend(a);
        unavailable += u;
    }
    assert!(
        unavailable > 0,
        "no append met the failover: it tested nothing"
    );

    let head = store.head().await.unwrap();
    let mut log = Vec::new();
    let mut from = Position(1);
    while from <= head {
        let page = store.read_all(from, &Filter::all(), 1000).await.unwrap();
        log.extend(page.events);
        from = page.next_from;
    }
    let positions: Vec<u64> = log.iter().map(|e| e.position.get()).collect();
    assert_eq!(positions, (1..=head.get()).collect::<Vec<_>>());
    let at: HashMap<EventId, Position> = log.iter().map(|e| (e.id, e.position)).collect();
    for (id, position) in &acknowledged {
        assert_eq!(
            at.get(id),
            Some(position),
            "acknowledged event {id} was lost"
        );
    }
    assert_eq!(log.len(), acknowledged.len());
}

/// A re-send after an unknown outcome is answered `Duplicate` from the original, which may
/// be visible on the primary without being on the standby (a commit whose wait for the
/// standby was cancelled): the answer must wait for the standby as an append's would. With
/// the standby down, the re-send's COMMIT is seen waiting for it (`SyncRep`), and answers
/// once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_answered_only_once_the_synchronous_standby_has_the_original() {
    let (primary, mut standby, url) = PostgresServer::start_with_synchronous_standby();
    let store = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let stream = StreamName::new("account-1").unwrap();
    let request = AppendRequest::new(
        stream,
        ExpectedVersion::NoStream,
        vec![NewEvent::new(
            EventType::new("Deposited").unwrap(),
            Json::empty_object(),
        )],
    );
    let original = store.append(request.clone()).await.unwrap();

    tokio::task::block_in_place(|| standby.kill());
    let resend = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.append(request).await })
    };
    let waiting_for_the_standby = || {
        primary
            .psql(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event = 'SyncRep' AND application_name = 'concord'",
            )
            .trim()
            == "1"
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !waiting_for_the_standby() {
        assert!(
            !resend.is_finished(),
            "the duplicate was answered while the standby was down"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the re-send never waited for the standby"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    tokio::task::block_in_place(|| standby.restart());
    let answer = tokio::time::timeout(WAIT, resend)
        .await
        .expect("the duplicate is answered once the standby is back")
        .unwrap()
        .unwrap();
    assert!(answer.is_duplicate(), "{answer:?}");
    assert_eq!(answer.appended(), original.appended());
}
