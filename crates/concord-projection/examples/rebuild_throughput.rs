//! Measures projection throughput during a rebuild: fills an embedded store with N bank,
//! auction and editing events (default 100 000), then rebuilds each built-in projection and
//! prints events applied per second.
//!
//! `cargo run --release -p concord-projection --example rebuild_throughput -- [N] [STORE_DIR] [mix|bank]`
//! (with STORE_DIR the store is kept, for `concord --store STORE_DIR projection rebuild ...`;
//! `bank` makes every event an account event, so `balances` alone applies all N).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::Instant;

use concord_core::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamName};
use concord_projection::ProjectionHost;
use serde_json::json;

const PER_APPEND: usize = 100;
const STREAMS: usize = 1000;

fn batch(category: &str, n: usize, first: bool) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            let (ty, data) = match (category, first && i == 0) {
                ("account", true) => ("AccountOpened", json!({"owner": "ann", "balance": 1000})),
                ("account", false) => ("Deposited", json!({"amount": i + 1})),
                ("auction", true) => ("AuctionOpened", json!({"item": "lamp", "reserve": 10})),
                ("auction", false) => ("BidPlaced", json!({"bidder": "bob", "amount": i + 1})),
                (_, true) => ("DocumentCreated", json!({"text": "héllo"})),
                (_, false) => ("Inserted", json!({"pos": i % 7, "text": "ü"})),
            };
            NewEvent::json(ty, &data).unwrap()
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args.get(1).map_or(100_000, |n| n.parse().unwrap());
    let temp = tempfile::tempdir().unwrap();
    let dir = args
        .get(2)
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    let store: Arc<dyn EventStore> = Arc::new(concord_embedded::EmbeddedStore::open(&dir).unwrap());
    let bank_only = args.get(3).is_some_and(|m| m == "bank");
    let started = Instant::now();
    let mut written = 0;
    let mut round = 0;
    while written < total {
        let kinds = if bank_only { 1 } else { 3 };
        let category = ["account", "auction", "doc"][round % kinds];
        let stream = StreamName::new(format!("{category}-{}", (round / kinds) % STREAMS)).unwrap();
        let n = PER_APPEND.min(total - written);
        let first = round / kinds < STREAMS;
        let _ = store
            .append(AppendRequest::new(
                stream,
                ExpectedVersion::Any,
                batch(category, n, first),
            ))
            .await
            .unwrap();
        written += n;
        round += 1;
    }
    println!("appended {written} events in {:?}", started.elapsed());
    let host = ProjectionHost::open_builtin(store.clone(), dir.join("projections.sqlite"))
        .await
        .unwrap();
    let mut applied = 0;
    let all = Instant::now();
    for name in ["balances", "auctions", "documents"] {
        let report = host.rebuild(name, |_, _| {}).await.unwrap();
        println!(
            "rebuild {name}: {} events applied in {} ms = {:.0} events/s (checkpoint {})",
            report.events_applied, report.elapsed_ms, report.events_per_second, report.checkpoint
        );
        applied += report.events_applied;
    }
    let elapsed = all.elapsed();
    println!(
        "all three: {applied} events applied in {elapsed:?} = {:.0} events/s",
        applied as f64 / elapsed.as_secs_f64()
    );
    host.shutdown().await;
}
