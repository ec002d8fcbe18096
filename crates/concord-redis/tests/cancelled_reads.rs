//! Reads of the global log go over a pool of connections of the store's own. A read whose
//! future is dropped midway (a timeout, a client that went away) must never leave a
//! connection whose reply is still coming in the pool: the next read on it would take
//! that stale reply for its own and return the wrong events.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::Duration;

use concord_core::{AppendRequest, EventStore, ExpectedVersion, Filter, Position, doc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_cancelled_at_any_point_leave_no_connection_out_of_step() {
    let store = common::fresh_store().await;
    // Pages large enough to arrive in several socket reads.
    for stream in 0..4 {
        let events = (0..500)
            .map(|n| {
                doc::event(
                    "Deposited",
                    serde_json::json!({ "amount": n, "note": "x".repeat(200) }),
                )
            })
            .collect();
        let _ = store
            .append(AppendRequest::new(
                doc::stream(&format!("account-{stream}")),
                ExpectedVersion::NoStream,
                events,
            ))
            .await
            .unwrap();
    }
    let mut cancelled = 0;
    for round in 0..60_u64 {
        // Polled once, a read has sent its request and waits for the reply; half the
        // rounds let part of the reply arrive and poll once more. Then it is dropped.
        let from = Position(1 + round * 29 % 1500);
        let all = Filter::all();
        let mut read = Box::pin(store.read_all(from, &all, 400));
        let mut done = futures::poll!(read.as_mut()).is_ready();
        if !done && round % 2 == 1 {
            tokio::time::sleep(Duration::from_micros(100 + round * 20)).await;
            done = futures::poll!(read.as_mut()).is_ready();
        }
        drop(read);
        if !done {
            cancelled += 1;
        }
        // Concurrent reads from other starting points, each checked.
        let checks = (0..3_u64).map(|k| {
            let store = store.clone();
            async move {
                let from = Position(1 + (round * 7 + k * 401) % 1900);
                let page = store.read_all(from, &Filter::all(), 100).await.unwrap();
                assert_eq!(
                    page.events.first().map(|e| e.position),
                    Some(from),
                    "a read from {from} got another read's reply"
                );
                assert!(
                    page.events
                        .windows(2)
                        .all(|w| w[1].position == w[0].position.next())
                );
            }
        });
        futures::future::join_all(checks).await;
    }
    assert!(
        cancelled > 0,
        "no read was cut short; the test proves nothing"
    );
}
