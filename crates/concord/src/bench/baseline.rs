//! The baselines: what the disk, SQLite and Redis do without Concord, measured by the same
//! binary on the same machine, so Concord's figures can be given as ratios.
//!
//! - `fsync`: a 4 KiB write and `fdatasync` in a loop, in the store's directory: the most
//!   durable writes per second the disk allows one writer (W threads, one file each).
//! - `sqlite`: plain SQLite, one transaction per event, W threads with a connection each,
//!   with the embedded store's durability (WAL, `synchronous = FULL`): what a naive
//!   SQLite-backed event store gets.
//! - `xadd`: raw `XADD` of one entry on the `--store` Redis through the same client crate,
//!   W concurrent writers on one multiplexed connection, as the Redis backend uses.
//! - `postgres` and `messagedb`, on the `--store` PostgreSQL: see `postgres.rs`.
//!
//! Each writes `--event-bytes` of data per event (the `append` scenario's payload by
//! default).
//!
//! Each cleans up after itself (files deleted, keys removed).

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::load::Budget;
use super::{BaselineKind, Bound, LoadArgs, Progress, Report, Tally, report, run_id};
use crate::Context;
use crate::store_url::StoreUrl;

const DEFAULT_DURATION: Duration = Duration::from_secs(5);
const BLOCK: usize = 4096;

/// Runs one baseline.
pub(crate) async fn run(
    ctx: &Context,
    kind: BaselineKind,
    load: &LoadArgs,
) -> anyhow::Result<Report> {
    let bound = load.bound(Bound::Duration(DEFAULT_DURATION));
    match kind {
        BaselineKind::Fsync | BaselineKind::Sqlite => {
            let dir = directory(&ctx.store_url)?;
            let name = if kind == BaselineKind::Fsync {
                "baseline-fsync"
            } else {
                "baseline-sqlite"
            };
            let progress = Progress::start(name, bound);
            let budget = Budget::new(bound);
            let (writers, done) = (load.writers, progress.counter());
            let (work_dir, work_budget) = (dir.clone(), Arc::clone(&budget));
            let data = super::load::payload_bytes(load.event_bytes)?;
            let tally = tokio::task::spawn_blocking(move || {
                if kind == BaselineKind::Fsync {
                    fsync(&work_dir, writers, &work_budget, &done)
                } else {
                    sqlite(&work_dir, writers, &data, &work_budget, &done)
                }
            })
            .await
            .context("the baseline was interrupted")?;
            let elapsed = budget.elapsed();
            progress.finish();
            Ok(report(
                name,
                dir.display().to_string(),
                load,
                &tally?,
                elapsed,
            ))
        }
        BaselineKind::Xadd => xadd(ctx, load, bound).await,
        BaselineKind::Xgroup => super::group::xgroup(ctx, load).await,
        BaselineKind::Postgres => super::postgres::insert(ctx, load, bound).await,
        BaselineKind::Messagedb => super::postgres::message_db(ctx, load, bound).await,
    }
}

/// The store's directory for the embedded store; the current directory otherwise.
fn directory(url: &StoreUrl) -> anyhow::Result<PathBuf> {
    let dir = match url {
        StoreUrl::Embedded(path) => path.clone(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    Ok(dir)
}

/// Runs `writer(i)` on `writers` threads and adds up their tallies.
fn threads(
    writers: u64,
    writer: impl Fn(u64) -> anyhow::Result<Tally> + Sync,
) -> anyhow::Result<Tally> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let writer = &writer;
                scope.spawn(move || writer(i))
            })
            .collect();
        let mut total = Tally::default();
        for handle in handles {
            let tally = handle
                .join()
                .map_err(|_| anyhow::anyhow!("a baseline thread panicked"))??;
            total.merge(&tally);
        }
        Ok(total)
    })
}

fn fsync(
    dir: &Path,
    writers: u64,
    budget: &Budget,
    done: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<Tally> {
    let run = run_id();
    threads(writers, |w| {
        let path = dir.join(format!("bench-fsync-{run}-{w}.bin"));
        let result = (|| {
            let mut file = std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.set_len(256 * BLOCK as u64)?;
            file.sync_all()?;
            let block = [7u8; BLOCK];
            let mut tally = Tally::default();
            let mut n = 0u64;
            while budget.claim(1) {
                let started = Instant::now();
                file.seek(SeekFrom::Start((n % 256) * BLOCK as u64))?;
                file.write_all(&block)?;
                file.sync_data()?;
                tally.latencies.record(started.elapsed());
                n += 1;
                tally.events += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(tally)
        })();
        let _ = std::fs::remove_file(&path);
        result
    })
}

fn sqlite(
    dir: &Path,
    writers: u64,
    data: &[u8],
    budget: &Budget,
    done: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<Tally> {
    let path = dir.join(format!("bench-sqlite-{}.db", run_id()));
    let open = || -> anyhow::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // The embedded store's settings (crates/concord-embedded/src/schema.rs).
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;")?;
        Ok(conn)
    };
    let result = (|| {
        open()?.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (
                position INTEGER PRIMARY KEY,
                stream   TEXT NOT NULL,
                version  INTEGER NOT NULL,
                type     TEXT NOT NULL,
                data     BLOB NOT NULL
            )",
        )?;
        threads(writers, |w| {
            let mut conn = open()?;
            let stream = format!("bench-{w}");
            let mut tally = Tally::default();
            let mut version = 0i64;
            while budget.claim(1) {
                let started = Instant::now();
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                version += 1;
                tx.prepare_cached(
                    "INSERT INTO events (stream, version, type, data) VALUES (?1, ?2, 'BenchTicked', ?3)",
                )?
                .execute((stream.as_str(), version, data))?;
                tx.commit()?;
                tally.latencies.record(started.elapsed());
                tally.events += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(tally)
        })
    })();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    result
}

async fn xadd(ctx: &Context, load: &LoadArgs, bound: Bound) -> anyhow::Result<Report> {
    let StoreUrl::Redis { url, prefix } = &ctx.store_url else {
        anyhow::bail!(
            "baseline xadd needs a Redis store (--store redis://...), not {}",
            ctx.store_url
        );
    };
    let client = redis::Client::open(url.as_str())
        .with_context(|| format!("invalid redis URL {}", ctx.store_url))?;
    let conn = redis::aio::ConnectionManager::new(client)
        .await
        .with_context(|| format!("cannot connect to redis at {}", ctx.store_url))?;
    let prefix = prefix.as_deref().unwrap_or("concord");
    let run = run_id();
    let data = Arc::new(super::load::payload_bytes(load.event_bytes)?);
    let key = |w: u64| format!("{{{prefix}}}:bench-xadd:{run}:{w}");
    let progress = Progress::start("baseline-xadd", bound);
    let budget = Budget::new(bound);
    let handles: Vec<_> = (0..load.writers)
        .map(|w| {
            let (mut conn, budget, done, key, data) = (
                conn.clone(),
                Arc::clone(&budget),
                progress.counter(),
                key(w),
                Arc::clone(&data),
            );
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while budget.claim(1) {
                    let started = Instant::now();
                    let _: String = redis::cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("type")
                        .arg("BenchTicked")
                        .arg("data")
                        .arg(data.as_slice())
                        .query_async(&mut conn)
                        .await?;
                    tally.latencies.record(started.elapsed());
                    tally.events += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(tally)
            })
        })
        .collect();
    let mut total = Tally::default();
    let mut first_error = None;
    for handle in handles {
        match handle.await.context("a benchmark writer stopped")? {
            Ok(tally) => total.merge(&tally),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = budget.elapsed();
    progress.finish();
    let mut cleanup = conn.clone();
    let keys: Vec<String> = (0..load.writers).map(key).collect();
    let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut cleanup).await;
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(report(
        "baseline-xadd",
        ctx.store_url.to_string(),
        load,
        &total,
        elapsed,
    ))
}
