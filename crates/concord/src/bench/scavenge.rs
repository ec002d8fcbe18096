//! `scavenge`: does space come back, and do appends go on while it does?
//!
//! Issue 19 asks that a store that held N events of 1 KiB, 90 % of them then deleted, be at
//! most a quarter of its size after a scavenge, and that appends during the scavenge keep
//! at least 0.7 of their rate. So the scenario writes N events of `--event-bytes` over
//! `--streams` streams (not timed), measures the store (the embedded store's files; Redis's
//! `used_memory`; other backends are left unmeasured), soft-deletes nine streams in ten,
//! measures W one-event appenders for `--rate-seconds` (the base rate), then the same
//! appenders while `scavenge()` runs, and measures the store again.
//!
//! The appenders write the small bench payload, not `--event-bytes`, but a busy store
//! takes millions of them during a long scavenge. So the size the ratio is taken on
//! leaves them out: after the measured scavenge, the bench deletes the appenders' streams
//! too and scavenges again (no appends now), and measures the store that is left: the
//! seeded events the deletes kept. The size right after the measured scavenge, appenders'
//! events included, is reported beside it (`bytes_after_appends`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use concord_core::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamName};
use futures::StreamExt as _;

use super::load::{bench_type, payload, stream};
use super::{LoadArgs, Report, Tally, report, run_id};
use crate::Context;
use crate::store_url::StoreUrl;

/// Bytes of data per seeded event, by default (the 1 KiB).
const DEFAULT_EVENT_BYTES: u64 = 1024;
/// Events written before the deletes, by default.
const DEFAULT_EVENTS: u64 = 1_000_000;
/// Events per seeding append (the default `events_per_append_max`).
const SEED_BATCH: u64 = 1000;
/// Concurrent seeding appends.
const SEEDERS: usize = 4;

/// The options of `concord bench scavenge`.
#[derive(Debug, Args, Clone)]
pub struct ScavengeArgs {
    /// W appenders, N events (default 1000000).
    #[command(flatten)]
    pub load: LoadArgs,
    /// Streams the N events are spread over (nine in ten are deleted).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub streams: u64,
    /// How long the base rate of appends is measured.
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = super::parse_seconds)]
    pub rate_seconds: Duration,
}

/// Runs the scenario.
pub(crate) async fn scavenge(ctx: &Context, args: &ScavengeArgs) -> anyhow::Result<Report> {
    let store = ctx.open_store().await?;
    let n = args.load.events.unwrap_or(DEFAULT_EVENTS);
    let run = run_id();
    let names = (0..args.streams)
        .map(|s| stream(&run, &format!("s{s}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let event_bytes = args.load.event_bytes.unwrap_or(DEFAULT_EVENT_BYTES);
    seed(&store, &names, n, event_bytes).await?;
    let size = Size::new(&ctx.store_url).await?;
    let bytes_before = size.measure().await?;
    for (i, name) in names.iter().enumerate() {
        if i % 10 != 0 {
            store
                .delete_stream(name, None)
                .await
                .with_context(|| format!("cannot delete {name}"))?;
        }
    }
    let (base, base_elapsed) = appenders(&store, &run, args.load.writers, async {
        tokio::time::sleep(args.rate_seconds).await;
        Ok(())
    })
    .await?;
    let scavenged = std::sync::Mutex::new(None);
    let (during, during_elapsed) = appenders(&store, &run, args.load.writers, async {
        let report = store.scavenge().await.context("the scavenge failed")?;
        *scavenged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report);
        Ok(())
    })
    .await?;
    let bytes_after_appends = size.measure().await?;
    for w in 0..args.load.writers {
        let name = stream(&run, &format!("w{w}"))?;
        match store.delete_stream(&name, None).await {
            Ok(()) | Err(concord_core::StoreError::StreamNotFound(_)) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete {name}")),
        }
    }
    let _ = store
        .scavenge()
        .await
        .context("the scavenge of the appenders' streams failed")?;
    let bytes_after = size.measure().await?;
    let base_rate = base.events as f64 / base_elapsed.as_secs_f64().max(1e-9);
    let mut report = report(
        "scavenge",
        ctx.store_url.to_string(),
        &args.load,
        &during,
        during_elapsed,
    );
    report.batch = 1;
    report.bytes_before = bytes_before;
    report.bytes_after = bytes_after;
    report.bytes_after_appends = bytes_after_appends;
    report.size_ratio = bytes_before
        .zip(bytes_after)
        .map(|(before, after)| after as f64 / (before as f64).max(1.0));
    report.base_events_per_sec = Some(base_rate);
    report.appends_during_ratio = Some(report.events_per_sec / base_rate.max(1e-9));
    report.events_removed = scavenged
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .map(|r| r.events_removed);
    Ok(report)
}

/// Writes `n` events of `event_bytes` bytes, spread evenly over `names`, in batches.
async fn seed(
    store: &Arc<dyn EventStore>,
    names: &[StreamName],
    n: u64,
    event_bytes: u64,
) -> anyhow::Result<()> {
    let (event_type, data) = (bench_type()?, payload(Some(event_bytes))?);
    let streams = names.len() as u64;
    let mut appends = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // The first `n % streams` streams take one event more.
        let mut left = n / streams + u64::from((i as u64) < n % streams);
        while left > 0 {
            let batch = left.min(SEED_BATCH);
            appends.push((name.clone(), batch));
            left -= batch;
        }
    }
    let mut pending = futures::stream::iter(appends.into_iter().map(|(name, batch)| {
        let events = (0..batch)
            .map(|_| NewEvent::new(event_type.clone(), data.clone()))
            .collect();
        let store = Arc::clone(store);
        async move {
            store
                .append(AppendRequest::new(name, ExpectedVersion::Any, events))
                .await
                .context("cannot write the events to delete")
        }
    }))
    .buffer_unordered(SEEDERS);
    while let Some(done) = pending.next().await {
        let _ = done?;
    }
    Ok(())
}

/// Runs `writers` one-event appenders, each on a stream of its own, until `phase` ends;
/// returns what they did and how long it took.
async fn appenders(
    store: &Arc<dyn EventStore>,
    run: &str,
    writers: u64,
    phase: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(Tally, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let (event_type, data) = (bench_type()?, payload(None)?);
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (store, stop) = (Arc::clone(store), Arc::clone(&stop));
            let (event_type, data) = (event_type.clone(), data.clone());
            let name = stream(run, &format!("w{w}"));
            tokio::spawn(async move {
                let name = name?;
                let mut tally = Tally::default();
                while !stop.load(Ordering::Relaxed) {
                    let request = AppendRequest::new(
                        name.clone(),
                        ExpectedVersion::Any,
                        vec![NewEvent::new(event_type.clone(), data.clone())],
                    );
                    let began = Instant::now();
                    let _ = store.append(request).await?;
                    tally.latencies.record(began.elapsed());
                    tally.events += 1;
                }
                anyhow::Ok(tally)
            })
        })
        .collect();
    let ended = phase.await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut total = Tally::default();
    for handle in handles {
        total.merge(&handle.await.context("a benchmark writer stopped")??);
    }
    ended?;
    Ok((total, elapsed))
}

/// How the store's size is measured.
enum Size {
    /// The sum of the files in the store's directory.
    Files(std::path::PathBuf),
    /// Redis's `used_memory`.
    Redis(redis::aio::ConnectionManager),
    /// Not measured.
    Unmeasured,
}

impl Size {
    async fn new(url: &StoreUrl) -> anyhow::Result<Size> {
        Ok(match url {
            StoreUrl::Embedded(path) => Size::Files(path.clone()),
            StoreUrl::Redis { url: redis_url, .. } => {
                let client = redis::Client::open(redis_url.as_str())
                    .with_context(|| format!("invalid redis URL {url}"))?;
                Size::Redis(
                    redis::aio::ConnectionManager::new(client)
                        .await
                        .with_context(|| format!("cannot connect to redis at {url}"))?,
                )
            }
            _ => Size::Unmeasured,
        })
    }

    async fn measure(&self) -> anyhow::Result<Option<u64>> {
        match self {
            Size::Files(dir) => Ok(Some(directory_bytes(dir)?)),
            Size::Redis(conn) => {
                let mut conn = conn.clone();
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query_async(&mut conn)
                    .await
                    .context("INFO memory failed")?;
                let used = info
                    .lines()
                    .find_map(|line| line.strip_prefix("used_memory:"))
                    .context("INFO memory has no used_memory")?;
                Ok(Some(used.trim().parse().with_context(|| {
                    format!("used_memory is not a number: {used}")
                })?))
            }
            Size::Unmeasured => Ok(None),
        }
    }
}

/// The bytes of every file under `dir`.
fn directory_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            directory_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
