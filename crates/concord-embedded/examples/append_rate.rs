//! Quick append-rate measurement of the embedded store, with two baselines measured in the
//! same directory: raw 4 KiB write + fdatasync, and SQLite with one transaction per event.
//!
//! ```text
//! cargo run --release -p concord-embedded --example append_rate -- [DIR] [SECONDS]
//! ```
//! DIR (default `target/append-rate`) should be on the disk you care about; SECONDS
//! (default 3) is the length of each run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use concord_core::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamName, Version};
use concord_embedded::EmbeddedStore;

fn raw_fdatasync_rate(dir: &std::path::Path, run: Duration) -> f64 {
    let path = dir.join("raw.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    file.set_len(1 << 20).unwrap();
    file.sync_all().unwrap();
    let block = [7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        file.seek(SeekFrom::Start((n % 256) * 4096)).unwrap();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn naive_sqlite_rate(dir: &std::path::Path, run: Duration) -> f64 {
    let conn = rusqlite::Connection::open(dir.join("naive.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT, version INTEGER, data BLOB);",
    )
    .unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        conn.execute_batch("BEGIN").unwrap();
        conn.execute(
            "INSERT INTO events (stream, version, data) VALUES ('s-1', ?1, '{\"n\":1}')",
            [n as i64],
        )
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn store_rate(dir: &std::path::Path, writers: usize, run: Duration) -> f64 {
    let store = Arc::new(EmbeddedStore::open(dir).unwrap());
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, count) = (Arc::clone(&store), Arc::clone(&count));
            tokio::spawn(async move {
                let stream = StreamName::new(format!("bench{writers}-{w}")).unwrap();
                let mut version = Version(0);
                while start.elapsed() < run {
                    let event =
                        NewEvent::json("Ticked", &serde_json::json!({"n": version.get()})).unwrap();
                    let request = AppendRequest::new(
                        stream.clone(),
                        ExpectedVersion::Exact(version),
                        vec![event],
                    );
                    version = store.append(request).await.unwrap().appended().last_version;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "target/append-rate".into());
    let secs: f64 = args
        .next()
        .map_or(3.0, |s| s.parse().expect("SECONDS is a number"));
    let run = Duration::from_secs_f64(secs);
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    println!("directory: {}", dir.path().display());
    println!(
        "raw 4 KiB write + fdatasync:           {:>9.0} /s",
        raw_fdatasync_rate(dir.path(), run)
    );
    println!(
        "sqlite, one transaction per event:     {:>9.0} events/s",
        naive_sqlite_rate(dir.path(), run)
    );
    for writers in [1, 64] {
        let rate = store_rate(&dir.path().join("store"), writers, run).await;
        println!(
            "embedded store, {writers:>2} concurrent writers: {rate:>9.0} appends/s (1 event each, durable)"
        );
    }
}
