//! `concord bench`: throughput, latency and memory of a store, with the baselines that say
//! what the hardware underneath could do, measured by the same binary in the same run.
//!
//! A figure alone says little on a shared 2-core machine; a ratio to `fsync`, plain SQLite
//! or raw `XADD` measured minutes apart on the same disk or Redis does. So every scenario
//! and every baseline prints the same shape (one JSON object with `--json`), and
//! `bench/run.sh` turns a series of them into the table of ratios in BENCHMARKS.md.
//!
//! Runs are always bounded (`--events` or `--duration`), write only to streams named after
//! the run (`bench_<run id>-…`), and show a progress bar only when stderr is a terminal.

mod baseline;
mod group;
mod grpc;
mod load;
mod postgres;
mod scavenge;
mod stats;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::Context;
use crate::exit::Exit;

pub use scavenge::ScavengeArgs;
pub use stats::Latencies;

/// `concord bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
Scenarios (against --store, any backend; append, read and catchup also against
grpc://HOST:PORT, a server speaking KurrentDB's gRPC protocol, through its official client):
  append    W writers, each on its own stream, B events per conditional append (over
            grpc://, one Append call per append, or with --grpc-call batch-append every
            writer's appends on one shared BatchAppend call)
  hot       W writers on one stream under --policy: commits/s, conflicts, retries
  read      rehydrate a stream of N events (W readers, each reads all of it)
  catchup   read N events from position 1 through a subscription
  group     W consumers share a consumer group over N events (default 20000), polling
            B messages at a time and acking each batch (over HTTP with an http:// store)
  scavenge  write N events (default 1000000) of --event-bytes over --streams streams,
            delete 9 streams in 10, then scavenge while W writers append one event at a
            time: store size before/after (embedded: files; Redis: used_memory) and the
            append rate during the scavenge over the rate before it
Baselines (same JSON shape, same run):
  baseline fsync    4 KiB write + fdatasync loop in the store's directory (W threads)
  baseline sqlite   plain SQLite, one transaction per event, W threads, WAL + synchronous=FULL
  baseline xadd     raw XADD on the --store Redis, same client, W concurrent writers
  baseline xgroup   raw XREADGROUP + XACK on the --store Redis: W consumers, B per read
  baseline postgres plain INSERT of one jsonb row per transaction on the --store PostgreSQL,
                    W connections (1 KiB rows unless --event-bytes), in a scratch schema
  baseline messagedb  Message DB's write_message with an expected version on the --store
                    PostgreSQL database, which must hold Message DB (bench/postgres.sh
                    installs it): W writers, each on its own stream and category
Every scenario and baseline writes --event-bytes of JSON per event when given.

With --json, exactly one JSON object is printed on stdout.")]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub scenario: BenchScenario,
}

/// The scenarios of `concord bench`.
#[derive(Debug, Subcommand)]
pub enum BenchScenario {
    /// W writers on distinct streams, B events per conditional append.
    Append(LoadArgs),
    /// W writers on one stream under --policy.
    Hot(LoadArgs),
    /// Rehydrate a stream of N events.
    Read(LoadArgs),
    /// Read N events from position 1 through a subscription.
    Catchup(LoadArgs),
    /// W consumers share a consumer group over N events, B messages per poll.
    Group(LoadArgs),
    /// Space given back by a scavenge after deleting 90 %, and appends during it.
    Scavenge(ScavengeArgs),
    /// What the disk, SQLite or Redis does without Concord.
    Baseline {
        /// Which baseline.
        #[arg(value_enum)]
        kind: BaselineKind,
        /// The load.
        #[command(flatten)]
        load: LoadArgs,
    },
}

/// The baselines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BaselineKind {
    /// 4 KiB write + fdatasync in a loop, in the store's directory.
    Fsync,
    /// Plain SQLite inserts, one transaction per event, the embedded store's durability.
    Sqlite,
    /// Raw `XADD` on the same Redis.
    Xadd,
    /// Raw `XREADGROUP` + `XACK` on the same Redis.
    Xgroup,
    /// Plain `INSERT` of one jsonb row per transaction on the same PostgreSQL.
    Postgres,
    /// Message DB's `write_message` with an expected version, on the same PostgreSQL.
    Messagedb,
}

/// What a writer does when its exact expected version was stale (`hot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Count the conflict and move on to the next event with the version it reported.
    Reject,
    /// Re-send the same event at the version the conflict reported, until it commits.
    Retry,
    /// Ask the store to rebase over concurrent events (none of a listed type).
    RebaseUnless,
}

/// The load of a run.
#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    /// Concurrent writers (readers for `read`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub writers: u64,
    /// Stop after this many events (default for `read` and `catchup`: 100000).
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub events: Option<u64>,
    /// Stop after this many seconds (default for the others: 5).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Events per append.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,
    /// What `hot` writers do on a conflict.
    #[arg(long, value_enum, default_value = "reject")]
    pub policy: Policy,
    /// Bytes of JSON data per event (default: a 35-byte deposit; `scavenge` and the
    /// Postgres baselines: 1024).
    #[arg(long, value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub event_bytes: Option<u64>,
    /// The gRPC call each `append` is, against a grpc:// store only.
    #[arg(long, value_enum, default_value = "append")]
    pub grpc_call: GrpcCall,
}

/// How `append` writes over KurrentDB's protocol (`--grpc-call`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GrpcCall {
    /// One `Streams.Append` call per append (the client's `append_to_stream`).
    Append,
    /// Every writer's appends on one `Streams.BatchAppend` call, answered by correlation
    /// id (the client's `batch_append`; KurrentDB's Python client appends this way).
    BatchAppend,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s} seconds is not between 0 and 86400"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// When a run stops.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bound {
    /// After this many events.
    Events(u64),
    /// After this long.
    Duration(Duration),
}

impl LoadArgs {
    fn bound(&self, default: Bound) -> Bound {
        match (self.events, self.duration) {
            (Some(n), _) => Bound::Events(n),
            (None, Some(d)) => Bound::Duration(d),
            (None, None) => default,
        }
    }
}

/// One result: the JSON object `--json` prints, and the table row otherwise.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `append`, `hot`, `read`, `catchup`, `group`, `scavenge`, `baseline-fsync`,
    /// `baseline-sqlite`, `baseline-xadd`, `baseline-xgroup`.
    pub scenario: String,
    /// The store URL (password hidden) or the directory / server a baseline used.
    pub store: String,
    /// Concurrent writers (or readers).
    pub writers: u64,
    /// Events per operation.
    pub batch: u64,
    /// The `hot` policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Events written (or read) in the measured part of the run.
    pub events: u64,
    /// Operations (appends, reads, fsyncs, transactions) in the measured part.
    pub operations: u64,
    /// The measured part's length.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_sec: f64,
    /// Median operation latency.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The slowest operation.
    pub max_ms: f64,
    /// Appends refused because the expected version was stale.
    pub conflicts: u64,
    /// Appends re-sent after a conflict (`--policy retry`).
    pub retries: u64,
    /// Appends the store rebased (`--policy rebase-unless`).
    pub rebased: u64,
    /// Peak resident memory of this process (`VmHWM`).
    pub max_rss_mib: f64,
    /// The one-minute load average when the run ended.
    pub load_average: f64,
    /// Logical CPUs.
    pub cores: usize,
    /// `scavenge`: the store's size before the deletes (embedded: its files; Redis:
    /// `used_memory`), when the backend's size can be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_before: Option<u64>,
    /// `scavenge`: the store's size after the scavenge, without the events the bench's own
    /// appenders wrote meanwhile (their streams deleted and scavenged too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_after: Option<u64>,
    /// `scavenge`: the store's size right after the measured scavenge, the appenders'
    /// events included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_after_appends: Option<u64>,
    /// `scavenge`: `bytes_after / bytes_before`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_ratio: Option<f64>,
    /// `scavenge`: appends per second before the scavenge (the measured part, `events`
    /// to `max_ms`, is the appends during it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_events_per_sec: Option<f64>,
    /// `scavenge`: `events_per_sec / base_events_per_sec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appends_during_ratio: Option<f64>,
    /// `scavenge`: the events the scavenge reported erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_removed: Option<u64>,
}

/// What a scenario's writers report back.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) events: u64,
    pub(crate) conflicts: u64,
    pub(crate) retries: u64,
    pub(crate) rebased: u64,
    pub(crate) latencies: Latencies,
}

impl Tally {
    pub(crate) fn merge(&mut self, other: &Tally) {
        self.events += other.events;
        self.conflicts += other.conflicts;
        self.retries += other.retries;
        self.rebased += other.rebased;
        self.latencies.merge(&other.latencies);
    }
}

/// A progress bar on stderr while a run goes, only on a terminal. Writers bump `done`; a
/// ticker copies it into the bar ten times a second.
pub(crate) struct Progress {
    done: Arc<AtomicU64>,
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(label: &str, bound: Bound) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        if !std::io::stderr().is_terminal() {
            return Progress {
                done,
                bar: None,
                ticker: None,
            };
        }
        let (len, template) = match bound {
            Bound::Events(n) => (n, "{msg} {wide_bar} {pos}/{len} events {per_sec}"),
            Bound::Duration(d) => (
                d.as_millis().try_into().unwrap_or(u64::MAX),
                "{msg} {wide_bar} {elapsed}",
            ),
        };
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(label.to_owned());
        let start = std::time::Instant::now();
        let (ticking, count) = (bar.clone(), Arc::clone(&done));
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match bound {
                    Bound::Events(_) => ticking.set_position(count.load(Ordering::Relaxed)),
                    Bound::Duration(_) => ticking
                        .set_position(start.elapsed().as_millis().try_into().unwrap_or(u64::MAX)),
                }
            }
        });
        Progress {
            done,
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    /// The counter writers add their events to.
    pub(crate) fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.done)
    }

    pub(crate) fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs `concord bench`.
///
/// # Errors
/// The store's or the baseline's failure, with context.
pub async fn run(ctx: &mut Context, args: BenchArgs) -> anyhow::Result<Exit> {
    let grpc_call = match &args.scenario {
        BenchScenario::Append(load)
        | BenchScenario::Hot(load)
        | BenchScenario::Read(load)
        | BenchScenario::Catchup(load)
        | BenchScenario::Group(load)
        | BenchScenario::Baseline { load, .. } => load.grpc_call,
        BenchScenario::Scavenge(_) => GrpcCall::Append,
    };
    let over_grpc = matches!(ctx.store_url, crate::store_url::StoreUrl::Grpc(_));
    if grpc_call != GrpcCall::Append
        && !(over_grpc && matches!(args.scenario, BenchScenario::Append(_)))
    {
        return Err(concord_core::InvalidInput::new(
            "grpc-call",
            "--grpc-call chooses how `append` writes to a grpc:// store; it means nothing here",
        )
        .into());
    }
    if !matches!(args.scenario, BenchScenario::Baseline { .. }) {
        eprintln!(
            "concord bench: writing benchmark events to the store {} (streams bench_<run>-…); use a store made for it",
            ctx.store_url
        );
    }
    if let crate::store_url::StoreUrl::Grpc(authority) = &ctx.store_url {
        let report = match args.scenario {
            BenchScenario::Append(load) => grpc::append(authority, &load).await?,
            BenchScenario::Read(load) => grpc::read(authority, &load).await?,
            BenchScenario::Catchup(load) => grpc::catchup(authority, &load).await?,
            _ => {
                return Err(concord_core::InvalidInput::new(
                    "store",
                    "a grpc:// store is measured by the append, read and catchup scenarios only",
                )
                .into());
            }
        };
        print(&report, ctx.out.is_json())?;
        return Ok(Exit::Success);
    }
    let report = match args.scenario {
        BenchScenario::Append(load) => load::append(ctx, &load).await?,
        BenchScenario::Hot(load) => load::hot(ctx, &load).await?,
        BenchScenario::Read(load) => load::read(ctx, &load).await?,
        BenchScenario::Catchup(load) => load::catchup(ctx, &load).await?,
        BenchScenario::Group(load) => group::group(ctx, &load).await?,
        BenchScenario::Scavenge(args) => scavenge::scavenge(ctx, &args).await?,
        BenchScenario::Baseline { kind, load } => baseline::run(ctx, kind, &load).await?,
    };
    print(&report, ctx.out.is_json())?;
    Ok(Exit::Success)
}

/// Builds the report of a measured run.
pub(crate) fn report(
    scenario: &str,
    store: String,
    load: &LoadArgs,
    tally: &Tally,
    elapsed: Duration,
) -> Report {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Report {
        scenario: scenario.to_owned(),
        store,
        writers: load.writers,
        batch: load.batch,
        policy: (scenario == "hot").then_some(load.policy),
        events: tally.events,
        operations: tally.latencies.count(),
        seconds,
        events_per_sec: tally.events as f64 / seconds,
        p50_ms: tally.latencies.quantile_ms(0.5),
        p99_ms: tally.latencies.quantile_ms(0.99),
        p999_ms: tally.latencies.quantile_ms(0.999),
        max_ms: tally.latencies.max_ms(),
        conflicts: tally.conflicts,
        retries: tally.retries,
        rebased: tally.rebased,
        max_rss_mib: stats::max_rss_mib(),
        load_average: stats::load_average(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        bytes_before: None,
        bytes_after: None,
        bytes_after_appends: None,
        size_ratio: None,
        base_events_per_sec: None,
        appends_during_ratio: None,
        events_removed: None,
    }
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
    } else {
        let policy = report
            .policy
            .map(|p| format!(" ({p:?})").to_lowercase())
            .unwrap_or_default();
        writeln!(
            out,
            "{}{policy} on {}: {} writers, batch {}\n  {} events in {:.2} s = {:.0} events/s ({} operations)\n  latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms\n  conflicts {}, retries {}, rebased {}; peak RSS {:.1} MiB; load average {:.2} on {} cores",
            report.scenario,
            report.store,
            report.writers,
            report.batch,
            report.events,
            report.seconds,
            report.events_per_sec,
            report.operations,
            report.p50_ms,
            report.p99_ms,
            report.p999_ms,
            report.max_ms,
            report.conflicts,
            report.retries,
            report.rebased,
            report.max_rss_mib,
            report.load_average,
            report.cores,
        )?;
        if let (Some(base), Some(ratio)) = (report.base_events_per_sec, report.appends_during_ratio)
        {
            let mib = |b: Option<u64>| {
                b.map_or("unmeasured".to_owned(), |b| {
                    format!("{:.1} MiB", b as f64 / 1_048_576.0)
                })
            };
            writeln!(
                out,
                "  size {} before the deletes, {} after the scavenge (ratio {}; {} with the events appended during it); {} events erased\n  appends {:.0}/s before the scavenge, {:.0}/s during it (ratio {:.2})",
                mib(report.bytes_before),
                mib(report.bytes_after),
                report
                    .size_ratio
                    .map_or("-".to_owned(), |r| format!("{r:.3}")),
                mib(report.bytes_after_appends),
                report.events_removed.unwrap_or(0),
                base,
                report.events_per_sec,
                ratio,
            )?;
        }
    }
    Ok(())
}

/// A short random id naming this run's streams and keys: the last 8 hex digits of a fresh
/// event id, which are random (its first ones are a timestamp since ids are UUIDv7, so two
/// runs within a minute would share them and collide on their streams).
pub(crate) fn run_id() -> String {
    let id = concord_core::EventId::new().to_string();
    id.get(id.len().saturating_sub(8)..)
        .unwrap_or("run")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::run_id;

    #[test]
    fn run_ids_made_in_the_same_millisecond_differ() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| run_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 8));
    }
}
