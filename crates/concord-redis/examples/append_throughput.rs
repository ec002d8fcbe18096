//! Conditional appends per second through `RedisStore`, end to end: one event per append,
//! each to a new stream with `ExpectedVersion::NoStream`, from N concurrent writers sharing
//! one store (one multiplexed connection).
//!
//! `cargo run --release -p concord-redis --example append_throughput -- <url> <writers> <appends>`
//! (`bench/redis-append-bench.sh` runs it next to `redis-benchmark`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Instant;

use concord_core::{AppendRequest, EventStore, ExpectedVersion, doc};
use concord_redis::{RedisOptions, RedisStore};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let writers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let appends: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let prefix = format!("bench-{}-{writers}", std::process::id());
    let options = RedisOptions {
        key_prefix: prefix,
        ..RedisOptions::default()
    };
    let store = RedisStore::connect_with(&url, options)
        .await
        .expect("connect");
    let per_writer = appends / writers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let stream = doc::stream(&format!("account-{w}.{i}"));
                    let event = doc::event("Deposited", serde_json::json!({"amount": 1}));
                    let outcome = store
                        .append(AppendRequest::new(
                            stream,
                            ExpectedVersion::NoStream,
                            vec![event],
                        ))
                        .await
                        .unwrap();
                    assert!(!outcome.is_duplicate());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = per_writer * writers;
    println!(
        "concord append (FCALL via RedisStore): {writers} writers, {total} appends in {:.2} s = {:.0} appends/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}
