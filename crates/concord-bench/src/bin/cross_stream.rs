//! Events per second of cross-stream appends against their single-stream baselines, in one
//! run, from N concurrent writers sharing one store:
//! - `single`: one event per append to the writer's own stream;
//! - `transfer`: a two-part append (`Withdrawn` + `Deposited`, two streams), two events;
//! - `unconditional`: a `UserRegistered` event tagged `username:<unique>` to a new stream;
//! - `conditional`: the same, under the condition "no `UserRegistered` tagged with that
//!   username" (an indexed lookup that finds nothing, as in a successful registration).
//!
//! `cargo run --release -p concord-bench --bin cross_stream -- <STORE> [writers] [appends] [rounds]`
//!
//! STORE is a directory for the embedded store (fresh, on the disk you care about) or a
//! `redis://` URL (keys under a prefix of their own). The same scenarios and events run on
//! either, so the ratios of the two backends compare.
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
use concord_redis::{RedisOptions, RedisStore};

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Single,
    Transfer,
    Unconditional,
    Conditional,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn tag(s: String) -> Result<Tag> {
    Ok(Tag::new(s)?)
}

async fn run(
    store: Arc<dyn EventStore>,
    scenario: Scenario,
    run: usize,
    writers: usize,
    appends: usize,
) -> Result<f64> {
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
                                .with_tags(vec![tag(format!("account:a{run}-{w}"))?]);
                            let _ = store
                                .append(AppendRequest::new(
                                    doc::stream(&format!("account-a{run}-{w}")),
                                    ExpectedVersion::Any,
                                    vec![e],
                                ))
                                .await?;
                            events += 1;
                        }
                        Scenario::Transfer => {
                            let out = doc::event("Withdrawn", serde_json::json!({"amount": 1}))
                                .with_tags(vec![tag(format!("account:b{run}-{w}"))?]);
                            let into = doc::event("Deposited", serde_json::json!({"amount": 1}))
                                .with_tags(vec![tag(format!("account:c{run}-{w}"))?]);
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
                                .await?;
                            events += 2;
                        }
                        Scenario::Unconditional | Scenario::Conditional => {
                            let name = tag(format!("username:{id}"))?;
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
                                    .await?;
                            } else {
                                let _ = store.append(part).await?;
                            }
                            events += 1;
                        }
                    }
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(events)
            })
        })
        .collect();
    let mut events = 0;
    for t in tasks {
        events += t.await??;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let temp = tempfile::tempdir()?;
    let target = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| temp.path().display().to_string());
    let writers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let appends: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let rounds: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(3);
    let store: Arc<dyn EventStore> = if target.starts_with("redis://") {
        let options = RedisOptions {
            key_prefix: format!("xbench-{}", std::process::id()),
            ..RedisOptions::default()
        };
        Arc::new(RedisStore::connect_with(&target, options).await?)
    } else {
        Arc::new(EmbeddedStore::open(&target)?)
    };
    let mut best = [0f64; 4];
    let scenarios = [
        Scenario::Single,
        Scenario::Transfer,
        Scenario::Unconditional,
        Scenario::Conditional,
    ];
    for round in 0..rounds {
        for (k, s) in scenarios.iter().enumerate() {
            let rate = run(Arc::clone(&store), *s, round, writers, appends).await?;
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
    Ok(())
}
