//! Events per second of cross-stream appends against their single-stream baselines, in one
//! run, from N concurrent writers sharing one store:
//! - `single`: one event per append to the writer's own stream;
//! - `transfer`: a two-part append (`Withdrawn` + `Deposited`, two streams), two events;
//! - `unconditional`: a `UserRegistered` event tagged `username:<unique>` to a new stream;
//! - `conditional`: the same, under the condition "no `UserRegistered` tagged with that
//!   username" (an indexed lookup that finds nothing, as in a successful registration).
//!
//! The embedded store's counterpart of `concord-redis`'s example of the same name (same
//! scenarios, same events), with the default `Durability::Full`:
//!
//! `cargo run --release -p concord-embedded --example cross_stream_throughput -- [DIR] [writers] [appends] [rounds]`
//!
//! DIR (default: a fresh temporary directory) should be on the disk you care about.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::Instant;

use concord_core::{
    AppendRequest, EventStore, ExpectedVersion, MultiAppendRequest, Position, Query, Tag, doc,
};
use concord_embedded::EmbeddedStore;

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Single,
    Transfer,
    Unconditional,
    Conditional,
}

fn tag(s: String) -> Tag {
    Tag::new(s).unwrap()
}

async fn run(
    store: Arc<dyn EventStore>,
    scenario: Scenario,
    run: usize,
    writers: usize,
    appends: usize,
) -> f64 {
    let per_writer = appends / writers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut events = 0usize;
                for i in 0..per_writer {
                    let id = format!("{scenario:?}-{run}-{w}-{i}");
                    match scenario {
                        Scenario::Single => {
                            let e = doc::event("Deposited", serde_json::json!({"amount": 1}))
                                .with_tags(vec![tag(format!("account:a{run}-{w}"))]);
                            let _ = store
                                .append(AppendRequest::new(
                                    doc::stream(&format!("account-a{run}-{w}")),
                                    ExpectedVersion::Any,
                                    vec![e],
                                ))
                                .await
                                .unwrap();
                            events += 1;
                        }
                        Scenario::Transfer => {
                            let out = doc::event("Withdrawn", serde_json::json!({"amount": 1}))
                                .with_tags(vec![tag(format!("account:b{run}-{w}"))]);
                            let into = doc::event("Deposited", serde_json::json!({"amount": 1}))
                                .with_tags(vec![tag(format!("account:c{run}-{w}"))]);
                            let _ = store
                                .append_multi(MultiAppendRequest::new(vec![
                                    AppendRequest::new(
                                        doc::stream(&format!("account-b{run}-{w}")),
                                        ExpectedVersion::Any,
                                        vec![out],
                                    ),
                                    AppendRequest::new(
                                        doc::stream(&format!("account-c{run}-{w}")),
                                        ExpectedVersion::Any,
                                        vec![into],
                                    ),
                                ]))
                                .await
                                .unwrap();
                            events += 2;
                        }
                        Scenario::Unconditional | Scenario::Conditional => {
                            let name = tag(format!("username:{id}"));
                            let e =
                                doc::event("UserRegistered", serde_json::json!({"username": id}))
                                    .with_tags(vec![name.clone()]);
                            let part = AppendRequest::new(
                                doc::stream(&format!("user-{id}")),
                                ExpectedVersion::NoStream,
                                vec![e],
                            );
                            if matches!(scenario, Scenario::Conditional) {
                                let q = Query::item(
                                    vec![doc::event_type("UserRegistered")],
                                    vec![name],
                                );
                                let _ = store
                                    .append_multi(
                                        MultiAppendRequest::from(part).condition(q, Position(0)),
                                    )
                                    .await
                                    .unwrap();
                            } else {
                                let _ = store.append(part).await.unwrap();
                            }
                            events += 1;
                        }
                    }
                }
                events
            })
        })
        .collect();
    let mut events = 0;
    for t in tasks {
        events += t.await.unwrap();
    }
    events as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let temp = tempfile::tempdir().expect("temporary directory");
    let dir = args
        .get(1)
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    let writers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let appends: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let rounds: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(3);
    let store: Arc<dyn EventStore> = Arc::new(EmbeddedStore::open(&dir).expect("open"));
    let mut best = [0f64; 4];
    let scenarios = [
        Scenario::Single,
        Scenario::Transfer,
        Scenario::Unconditional,
        Scenario::Conditional,
    ];
    for round in 0..rounds {
        for (k, s) in scenarios.iter().enumerate() {
            let rate = run(Arc::clone(&store), *s, round, writers, appends).await;
            println!("round {round} {s:?}: {rate:.0} events/s");
            best[k] = best[k].max(rate);
        }
    }
    println!(
        "best of {rounds}, {writers} writers: single {:.0}, transfer {:.0} (ratio {:.2}); unconditional {:.0}, conditional {:.0} (ratio {:.2}) events/s",
        best[0],
        best[1],
        best[1] / best[0],
        best[2],
        best[3],
        best[3] / best[2]
    );
}
