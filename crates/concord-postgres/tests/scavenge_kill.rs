//! SIGKILL of PostgreSQL in the middle of a scavenge: the chunks committed before the kill
//! stay erased, the stream reads as deleted throughout, and the next scavenge on the same
//! store (not reopened) erases the rest, while every other event keeps its position. Uses
//! its own server, because it kills it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use concord_core::{
    AppendRequest, Direction, EventStore, EventType, ExpectedVersion, Filter, Json, NewEvent,
    Position, StreamName, Version,
};
use concord_postgres::PostgresStore;
use concord_testkit::postgres::PostgresServer;

/// Events of the deleted stream: 30 chunks, so the scavenge is seen half-way.
const DELETED: u64 = 30_000;
/// Generous: only a hang would reach it.
const WAIT: Duration = Duration::from_secs(120);

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| NewEvent::new(EventType::new("Read").unwrap(), Json::empty_object()))
        .collect()
}

/// `erased_through` of `stream` in the default schema.
fn erased_through(server: &PostgresServer, stream: &str) -> u64 {
    server
        .psql(&format!(
            "SELECT erased_through FROM concord.concord_streams WHERE stream = '{stream}'"
        ))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scavenge_killed_half_way_keeps_its_chunks_and_the_next_one_erases_the_rest() {
    let mut server = PostgresServer::start();
    let store = PostgresStore::connect(&server.url()).await.unwrap();
    let kept = StreamName::new("account-1").unwrap();
    let deleted = StreamName::new("sensor-1").unwrap();
    let _ = store
        .append(AppendRequest::new(
            kept.clone(),
            ExpectedVersion::Any,
            events(5),
        ))
        .await
        .unwrap(); // 1..=5
    for _ in 0..DELETED / 500 {
        let _ = store
            .append(AppendRequest::new(
                deleted.clone(),
                ExpectedVersion::Any,
                events(500),
            ))
            .await
            .unwrap();
    }
    let _ = store
        .append(AppendRequest::new(
            kept.clone(),
            ExpectedVersion::Any,
            events(5),
        ))
        .await
        .unwrap(); // 30006..=30010
    store
        .delete_stream(&deleted, Some(Version(DELETED)))
        .await
        .unwrap();

    let scavenging = {
        let store = store.clone();
        tokio::spawn(async move { store.scavenge().await })
    };
    let deadline = Instant::now() + WAIT;
    let mut seen = erased_through(&server, "sensor-1");
    while seen == 0 {
        assert!(Instant::now() < deadline, "the scavenge erased nothing");
        seen = erased_through(&server, "sensor-1");
    }
    server.kill();
    assert!(
        seen < DELETED,
        "the scavenge finished before it could be killed (raise DELETED)"
    );
    // Killed mid-way: an error, or done if it won the race with the kill.
    let _ = tokio::time::timeout(WAIT, scavenging)
        .await
        .expect("a scavenge on a dead database answers instead of hanging")
        .unwrap();

    server.restart();
    let halfway = erased_through(&server, "sensor-1");
    assert!(halfway >= seen, "committed chunks stay erased");
    eprintln!("killed with {seen} erased as seen, {halfway} erased after the restart");
    let left: u64 = server
        .psql("SELECT count(*) FROM concord.concord_events WHERE stream = 'sensor-1'")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(left, DELETED - halfway, "only whole chunks were erased");
    // The same store, not reopened: the next scavenge erases the rest (retried while the
    // pool replaces its dead connections).
    let deadline = Instant::now() + WAIT;
    let report = loop {
        match store.scavenge().await {
            Ok(report) => break report,
            Err(e) => assert!(Instant::now() < deadline, "no scavenge succeeded: {e}"),
        }
    };
    assert!(report.events_removed <= left);
    assert_eq!(erased_through(&server, "sensor-1"), DELETED);
    assert_eq!(
        server.psql("SELECT count(*) FROM concord.concord_events WHERE stream = 'sensor-1'"),
        "0\n"
    );
    assert_eq!(store.scavenge().await.unwrap().events_removed, 0);

    let page = store
        .read_all(Position(1), &Filter::all(), 100)
        .await
        .unwrap();
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.position.get())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 30_006, 30_007, 30_008, 30_009, 30_010]
    );
    assert!(
        store
            .read_stream(&deleted, Version(1), Direction::Forward, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let out = store
        .append(AppendRequest::new(
            deleted.clone(),
            ExpectedVersion::NoStream,
            events(1),
        ))
        .await
        .unwrap();
    assert_eq!(out.appended().first_version, Version(DELETED + 1));
    assert_eq!(out.appended().first_position, Position(30_011));
}
