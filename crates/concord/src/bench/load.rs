//! The scenarios that drive a store through the `EventStore` trait, so every backend (and a
//! server behind a client) is measured by the same code.
//!
//! Writers are tokio tasks sharing one [`Budget`]: each claims its next operation from it,
//! so a run stops at the same event count or deadline whatever the number of writers.
//! Nothing is timed but the operations themselves; seeding the stream a `read` or
//! `catchup` needs happens before the clock starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use concord_core::{
    AppendOutcome, AppendRequest, Direction, EventStore, EventType, ExpectedVersion, Filter, Json,
    NewEvent, Position, StoreError, StreamName, Version,
};
use futures::StreamExt as _;

use super::{Bound, LoadArgs, Policy, Progress, Report, Tally, report, run_id};
use crate::Context;

/// How long an unbounded-by-count write scenario runs.
pub(crate) const DEFAULT_DURATION: Duration = Duration::from_secs(5);
/// How many events `read` and `catchup` use by default.
pub(crate) const DEFAULT_EVENTS: u64 = 100_000;
/// Events per append when seeding (the default `events_per_append_max`).
pub(crate) const SEED_BATCH: u64 = 1000;
/// Events per page when reading a stream back (the default `read_limit_max`).
const READ_PAGE: usize = 1000;

/// What every writer shares: how much work is left.
#[derive(Debug)]
pub(crate) struct Budget {
    bound: Bound,
    claimed: AtomicU64,
    start: Instant,
}

impl Budget {
    pub(crate) fn new(bound: Bound) -> Arc<Budget> {
        Arc::new(Budget {
            bound,
            claimed: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// Claims `n` more events; false once the run is over.
    pub(crate) fn claim(&self, n: u64) -> bool {
        match self.bound {
            Bound::Events(total) => self.claimed.fetch_add(n, Ordering::Relaxed) < total,
            Bound::Duration(d) => self.start.elapsed() < d,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

pub(crate) fn bench_type() -> anyhow::Result<EventType> {
    Ok(EventType::new("BenchTicked")?)
}

/// An event's data: the small default deposit, or exactly `bytes` bytes of JSON
/// (`{"pad":"xx…"}`, `--event-bytes`).
pub(crate) fn payload(bytes: Option<u64>) -> anyhow::Result<Json> {
    Ok(Json::from_bytes("data", payload_bytes(bytes)?)?)
}

/// The bytes of [`payload`], for baselines that write them without Concord.
pub(crate) fn payload_bytes(bytes: Option<u64>) -> anyhow::Result<Vec<u8>> {
    let Some(bytes) = bytes else {
        return Ok(b"{\"amount\":1,\"note\":\"concord bench\"}".to_vec());
    };
    let pad = usize::try_from(bytes)?.saturating_sub(r#"{"pad":""}"#.len());
    Ok(format!(r#"{{"pad":"{}"}}"#, "x".repeat(pad)).into_bytes())
}

fn events(event_type: &EventType, data: &Json, n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|_| NewEvent::new(event_type.clone(), data.clone()))
        .collect()
}

pub(crate) fn stream(run: &str, suffix: &str) -> anyhow::Result<StreamName> {
    Ok(StreamName::new(format!("bench_{run}-{suffix}"))?)
}

/// Runs `writers` copies of `writer` to completion and adds up what they report.
/// Waits for every worker, stops the clock and the progress bar, and builds the report.
async fn conclude(
    scenario: &str,
    ctx: &Context,
    load: &LoadArgs,
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<Tally>>>,
    budget: &Budget,
    progress: Progress,
) -> anyhow::Result<Report> {
    let tally = join_all(handles).await;
    let elapsed = budget.elapsed();
    progress.finish();
    Ok(report(
        scenario,
        ctx.store_url.to_string(),
        load,
        &tally?,
        elapsed,
    ))
}

pub(crate) async fn join_all(
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<Tally>>>,
) -> anyhow::Result<Tally> {
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
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// `append`: W writers, each on its own stream, `batch` events per conditional append.
pub(crate) async fn append(ctx: &Context, load: &LoadArgs) -> anyhow::Result<Report> {
    let store = ctx.open_store().await?;
    let bound = load.bound(Bound::Duration(DEFAULT_DURATION));
    let run = run_id();
    let (event_type, data) = (bench_type()?, payload(load.event_bytes)?);
    let progress = Progress::start("append", bound);
    let budget = Budget::new(bound);
    let handles = (0..load.writers)
        .map(|w| {
            let (store, budget, done) =
                (Arc::clone(&store), Arc::clone(&budget), progress.counter());
            let stream = stream(&run, &w.to_string());
            let (event_type, data, batch) = (event_type.clone(), data.clone(), load.batch);
            tokio::spawn(async move {
                let stream = stream?;
                let mut tally = Tally::default();
                let mut version = Version::NONE;
                while budget.claim(batch) {
                    let request = AppendRequest::new(
                        stream.clone(),
                        ExpectedVersion::Exact(version),
                        events(&event_type, &data, batch),
                    );
                    let started = Instant::now();
                    let outcome = store.append(request).await?;
                    tally.latencies.record(started.elapsed());
                    version = outcome.appended().last_version;
                    tally.events += batch;
                    done.fetch_add(batch, Ordering::Relaxed);
                }
                Ok(tally)
            })
        })
        .collect();
    conclude("append", ctx, load, handles, &budget, progress).await
}

/// `hot`: W writers on one stream, each believing the version it last saw.
pub(crate) async fn hot(ctx: &Context, load: &LoadArgs) -> anyhow::Result<Report> {
    let store = ctx.open_store().await?;
    let bound = load.bound(Bound::Duration(DEFAULT_DURATION));
    let run = run_id();
    let stream = stream(&run, "hot")?;
    let (event_type, data) = (bench_type()?, payload(load.event_bytes)?);
    // A type no writer uses: the rebase rule never refuses, as for commuting deposits.
    let blocking = EventType::new("BenchClosed")?;
    let progress = Progress::start("hot", bound);
    let budget = Budget::new(bound);
    let handles = (0..load.writers)
        .map(|_| {
            let (store, budget, done) =
                (Arc::clone(&store), Arc::clone(&budget), progress.counter());
            let (stream, event_type, data, blocking) = (
                stream.clone(),
                event_type.clone(),
                data.clone(),
                blocking.clone(),
            );
            let (batch, policy) = (load.batch, load.policy);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut version = Version::NONE;
                while budget.claim(batch) {
                    let batch_events = events(&event_type, &data, batch);
                    loop {
                        let mut request = AppendRequest::new(
                            stream.clone(),
                            ExpectedVersion::Exact(version),
                            batch_events.clone(),
                        );
                        if policy == Policy::RebaseUnless {
                            request = request.rebase_unless(vec![blocking.clone()]);
                        }
                        let started = Instant::now();
                        let result = store.append(request).await;
                        tally.latencies.record(started.elapsed());
                        match result {
                            Ok(outcome) => {
                                if matches!(outcome, AppendOutcome::Rebased { .. }) {
                                    tally.rebased += 1;
                                }
                                version = outcome.appended().last_version;
                                tally.events += batch;
                                done.fetch_add(batch, Ordering::Relaxed);
                                break;
                            }
                            Err(StoreError::Conflict(conflict)) => {
                                tally.conflicts += 1;
                                version = conflict.actual;
                                if policy != Policy::Retry {
                                    break;
                                }
                                tally.retries += 1;
                            }
                            Err(e) => return Err(anyhow::Error::new(e)),
                        }
                    }
                }
                Ok(tally)
            })
        })
        .collect();
    conclude("hot", ctx, load, handles, &budget, progress).await
}

/// Appends events to `stream` until the store's head is at least `at_least` (or the stream
/// has `at_least` events when `stream_events` is set), in the largest batches allowed.
async fn seed(
    store: &Arc<dyn EventStore>,
    stream: &StreamName,
    events_wanted: u64,
    until_head: bool,
    event_bytes: Option<u64>,
) -> anyhow::Result<()> {
    let (event_type, data) = (bench_type()?, payload(event_bytes)?);
    let mut written = 0;
    loop {
        let missing = if until_head {
            events_wanted.saturating_sub(store.head().await?.get())
        } else {
            events_wanted - written
        };
        if missing == 0 {
            return Ok(());
        }
        let n = missing.min(SEED_BATCH);
        let request = AppendRequest::new(
            stream.clone(),
            ExpectedVersion::Any,
            events(&event_type, &data, n),
        );
        let _ = store
            .append(request)
            .await
            .context("cannot seed the benchmark stream")?;
        written += n;
    }
}

/// `read`: W readers, each rehydrating a stream of N events (repeatedly, with `--duration`).
pub(crate) async fn read(ctx: &Context, load: &LoadArgs) -> anyhow::Result<Report> {
    let store = ctx.open_store().await?;
    let n = load.events.unwrap_or(DEFAULT_EVENTS);
    let stream = stream(&run_id(), "read")?;
    seed(&store, &stream, n, false, load.event_bytes).await?;
    let bound = match load.duration {
        Some(d) => Bound::Duration(d),
        None => Bound::Events(n * load.writers),
    };
    let progress = Progress::start("read", bound);
    let budget = Budget::new(bound);
    let handles = (0..load.writers)
        .map(|_| {
            let (store, budget, done) =
                (Arc::clone(&store), Arc::clone(&budget), progress.counter());
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while budget.claim(n) {
                    let started = Instant::now();
                    let mut from = Version(1);
                    let mut read = 0u64;
                    loop {
                        let page = store
                            .read_stream(&stream, from, Direction::Forward, READ_PAGE)
                            .await?;
                        read += page.len() as u64;
                        done.fetch_add(page.len() as u64, Ordering::Relaxed);
                        match page.last() {
                            Some(last) if page.len() == READ_PAGE => from = last.version.next(),
                            _ => break,
                        }
                    }
                    tally.latencies.record(started.elapsed());
                    anyhow::ensure!(read == n, "read {read} events of a stream of {n}");
                    tally.events += read;
                }
                Ok(tally)
            })
        })
        .collect();
    conclude("read", ctx, load, handles, &budget, progress).await
}

/// `catchup`: W subscribers, each reading the first N events of the global log.
pub(crate) async fn catchup(ctx: &Context, load: &LoadArgs) -> anyhow::Result<Report> {
    let store = ctx.open_store().await?;
    let n = load.events.unwrap_or(DEFAULT_EVENTS);
    seed(
        &store,
        &stream(&run_id(), "catchup")?,
        n,
        true,
        load.event_bytes,
    )
    .await?;
    let bound = Bound::Events(n * load.writers);
    let progress = Progress::start("catchup", bound);
    let budget = Budget::new(bound);
    let handles = (0..load.writers)
        .map(|_| {
            let (store, done) = (Arc::clone(&store), progress.counter());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let started = Instant::now();
                let mut subscription = store.subscribe_all(Position(1), Filter::all()).take(
                    usize::try_from(n).context("--events does not fit this machine's memory")?,
                );
                let mut expected = 1;
                while let Some(event) = subscription.next().await {
                    let event = event?;
                    anyhow::ensure!(
                        event.position.get() == expected,
                        "the subscription delivered position {} where {expected} was due",
                        event.position
                    );
                    expected += 1;
                    if expected % 1024 == 0 {
                        done.fetch_add(1024, Ordering::Relaxed);
                    }
                }
                tally.latencies.record(started.elapsed());
                tally.events = expected - 1;
                Ok(tally)
            })
        })
        .collect();
    conclude("catchup", ctx, load, handles, &budget, progress).await
}
