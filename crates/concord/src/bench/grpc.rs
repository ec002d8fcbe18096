//! `concord bench --store grpc://HOST:PORT`: the `append`, `read` and `catchup` scenarios
//! over KurrentDB's client gRPC protocol (the one `concord serve` speaks beside its HTTP
//! API), driven by KurrentDB's official Rust client (`kurrentdb` from crates.io), so the
//! figures are what an application written for KurrentDB gets from Concord.
//!
//! The workload is the one `load.rs` runs through the `EventStore` trait: the same streams,
//! event type, payload, budget and report. All writers (or readers) share one client, so
//! one HTTP/2 connection whose calls are multiplexed, as an application shares its client
//! (the HTTP client, on HTTP/1.1, opens up to W connections instead). Revisions on the wire
//! are 0-based: a writer's first append expects no stream, the next ones the revision the
//! previous append reported.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;
use kurrentdb::{
    AppendToStreamOptions, BatchAppendOptions, Client, ClientSettings, EventData, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscribeToAllOptions,
};

use super::load::{Budget, DEFAULT_DURATION, DEFAULT_EVENTS, SEED_BATCH, join_all, stream};
use super::{Bound, GrpcCall, LoadArgs, Progress, Report, Tally, report, run_id};

/// A client of the server at `authority` (`host:port`), plaintext, as KurrentDB's
/// connection string names it.
fn client(authority: &str) -> anyhow::Result<Client> {
    let settings: ClientSettings = format!("esdb://{authority}?tls=false")
        .parse()
        .with_context(|| format!("grpc://{authority} is not a usable server address"))?;
    // The client's error type (eyre) is no std error: keep its message.
    Client::new(settings)
        .map_err(|e| anyhow::anyhow!("cannot create a client of grpc://{authority}: {e}"))
}

/// One event of the benchmark: the type and payload `load.rs` writes, as JSON.
fn event(event_bytes: Option<u64>) -> anyhow::Result<EventData> {
    let data: serde_json::Value =
        serde_json::from_slice(&super::load::payload_bytes(event_bytes)?)?;
    Ok(EventData::json(super::load::bench_type()?.as_str(), &data)?)
}

/// `n` copies of `event`; the client gives each a fresh id when it sends them.
fn events(event: &EventData, n: u64) -> Vec<EventData> {
    (0..n).map(|_| event.clone()).collect()
}

fn store_name(authority: &str, load: &LoadArgs) -> String {
    match load.grpc_call {
        GrpcCall::Append => format!("grpc://{authority}"),
        GrpcCall::BatchAppend => format!("grpc://{authority} (one BatchAppend call)"),
    }
}

async fn conclude(
    scenario: &str,
    authority: &str,
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
        store_name(authority, load),
        load,
        &tally?,
        elapsed,
    ))
}

/// `append`: W writers, each on its own stream, `batch` events per append with an exact
/// expected revision; each append is its own `Append` call, or (`--grpc-call
/// batch-append`) a request on the one `BatchAppend` call all writers share.
pub(crate) async fn append(authority: &str, load: &LoadArgs) -> anyhow::Result<Report> {
    let bound = load.bound(Bound::Duration(DEFAULT_DURATION));
    let run = run_id();
    let event = event(load.event_bytes)?;
    let client = client(authority)?;
    connect(&client).await?;
    let batcher = match load.grpc_call {
        GrpcCall::Append => None,
        GrpcCall::BatchAppend => Some(Arc::new(
            client
                .batch_append(&BatchAppendOptions::default())
                .await
                .context("cannot open a BatchAppend call")?,
        )),
    };
    let progress = Progress::start("append", bound);
    let budget = Budget::new(bound);
    let handles = (0..load.writers)
        .map(|w| {
            let (client, budget, done) = (client.clone(), Arc::clone(&budget), progress.counter());
            let batcher = batcher.clone();
            let stream = stream(&run, &w.to_string());
            let (event, batch) = (event.clone(), load.batch);
            tokio::spawn(async move {
                let stream = stream?.to_string();
                let mut tally = Tally::default();
                let mut state = StreamState::NoStream;
                while budget.claim(batch) {
                    let started = Instant::now();
                    let revision = match &batcher {
                        None => {
                            let options = AppendToStreamOptions::default().stream_state(state);
                            client
                                .append_to_stream(stream.as_str(), &options, events(&event, batch))
                                .await
                                .with_context(|| format!("appending to {stream} over gRPC failed"))?
                                .next_expected_version
                        }
                        Some(batcher) => batcher
                            .append_to_stream(stream.as_str(), state, events(&event, batch))
                            .await
                            .with_context(|| {
                                format!("appending to {stream} over gRPC (BatchAppend) failed")
                            })?
                            .current_revision()
                            .with_context(|| {
                                format!("BatchAppend's answer for {stream} has no revision")
                            })?,
                    };
                    tally.latencies.record(started.elapsed());
                    state = StreamState::StreamRevision(revision);
                    tally.events += batch;
                    done.fetch_add(batch, Ordering::Relaxed);
                }
                Ok(tally)
            })
        })
        .collect();
    conclude("append", authority, load, handles, &budget, progress).await
}

/// Connects before the clock starts: the client connects on its first call, and its
/// first call (discovery, server features, the HTTP/2 handshake) takes far longer than
/// the others.
async fn connect(client: &Client) -> anyhow::Result<()> {
    let _ = head(client).await?;
    Ok(())
}

/// Appends to `stream` until it holds `n` events (or, with `until_head`, until the last
/// commit position of `$all` is at least `n`: positions are gap-free on Concord).
async fn seed(
    client: &Client,
    stream: &str,
    n: u64,
    until_head: bool,
    event_bytes: Option<u64>,
) -> anyhow::Result<()> {
    let event = event(event_bytes)?;
    let mut written = 0;
    loop {
        let missing = if until_head {
            n.saturating_sub(head(client).await?)
        } else {
            n - written
        };
        if missing == 0 {
            return Ok(());
        }
        let count = missing.min(SEED_BATCH);
        let _ = client
            .append_to_stream(
                stream,
                &AppendToStreamOptions::default(),
                events(&event, count),
            )
            .await
            .context("cannot seed the benchmark stream over gRPC")?;
        written += count;
    }
}

/// The commit position of the last event in `$all` (0 when there is none).
async fn head(client: &Client) -> anyhow::Result<u64> {
    let options = ReadAllOptions::default()
        .backwards()
        .position(StreamPosition::End)
        .max_count(1);
    let mut read = client
        .read_all(&options)
        .await
        .context("cannot read the end of $all over gRPC")?;
    Ok(read
        .next()
        .await
        .context("cannot read the end of $all over gRPC")?
        .map_or(0, |e| e.get_original_event().position.commit))
}

/// `read`: W readers, each reading a stream of N events in one call (repeatedly, with
/// `--duration`).
pub(crate) async fn read(authority: &str, load: &LoadArgs) -> anyhow::Result<Report> {
    let n = load.events.unwrap_or(DEFAULT_EVENTS);
    let count = usize::try_from(n).context("--events does not fit this machine's memory")?;
    let stream = stream(&run_id(), "read")?.to_string();
    let client = client(authority)?;
    seed(&client, &stream, n, false, load.event_bytes).await?;
    let bound = match load.duration {
        Some(d) => Bound::Duration(d),
        None => Bound::Events(n * load.writers),
    };
    let progress = Progress::start("read", bound);
    let budget = Budget::new(bound);
    let handles = (0..load.writers)
        .map(|_| {
            let (client, budget, done, stream) = (
                client.clone(),
                Arc::clone(&budget),
                progress.counter(),
                stream.clone(),
            );
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let options = ReadStreamOptions::default()
                    .forwards()
                    .position(StreamPosition::Start)
                    .max_count(count);
                while budget.claim(n) {
                    let started = Instant::now();
                    let mut events = client
                        .read_stream(stream.as_str(), &options)
                        .await
                        .with_context(|| format!("reading {stream} over gRPC failed"))?;
                    let mut read = 0u64;
                    while events
                        .next()
                        .await
                        .with_context(|| format!("reading {stream} over gRPC failed"))?
                        .is_some()
                    {
                        read += 1;
                        if read.is_multiple_of(1024) {
                            done.fetch_add(1024, Ordering::Relaxed);
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
    conclude("read", authority, load, handles, &budget, progress).await
}

/// `catchup`: W catch-up subscriptions to `$all` from its start, each reading the first N
/// events of the global log.
pub(crate) async fn catchup(authority: &str, load: &LoadArgs) -> anyhow::Result<Report> {
    let n = load.events.unwrap_or(DEFAULT_EVENTS);
    let client = client(authority)?;
    seed(
        &client,
        stream(&run_id(), "catchup")?.as_str(),
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
            let (client, done) = (client.clone(), progress.counter());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let started = Instant::now();
                let options = SubscribeToAllOptions::default().position(StreamPosition::Start);
                let mut subscription = client.subscribe_to_all(&options).await;
                let mut expected = 1;
                while expected <= n {
                    let event = subscription
                        .next()
                        .await
                        .context("the catch-up subscription over gRPC failed")?;
                    let position = event.get_original_event().position.commit;
                    anyhow::ensure!(
                        position == expected,
                        "the subscription delivered position {position} where {expected} was due"
                    );
                    expected += 1;
                    if expected.is_multiple_of(1024) {
                        done.fetch_add(1024, Ordering::Relaxed);
                    }
                }
                tally.latencies.record(started.elapsed());
                tally.events = n;
                Ok(tally)
            })
        })
        .collect();
    conclude("catchup", authority, load, handles, &budget, progress).await
}
