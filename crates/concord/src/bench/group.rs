//! `concord bench group`: how fast a consumer group hands out and takes back events. W
//! consumers share one group over N events already written (ten streams of the run's
//! category), each polling up to `--batch` messages and acking them in one call; the
//! latency is one poll plus its ack. `baseline xgroup` does the same with raw
//! `XREADGROUP` + `XACK` on the same Redis, so the figure has something to be read against.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use concord_core::{AppendRequest, Category, EventType, ExpectedVersion, NewEvent, StreamName};
use concord_groups::{AllSource, ConsumerName, GroupName, GroupSpec, Source};

use super::load::{Budget, join_all};
use super::{Bound, LoadArgs, Progress, Report, Tally, report, run_id};
use crate::Context;
use crate::group::Target;

/// Events a run hands out when `--events` is not given.
const DEFAULT_EVENTS: u64 = 20_000;
/// The streams the events are spread over.
const STREAMS: u64 = 10;
/// Events per append while seeding.
const SEED_BATCH: u64 = 1000;

/// `concord bench group`.
pub(crate) async fn group(ctx: &Context, load: &LoadArgs) -> anyhow::Result<Report> {
    let n = load.events.unwrap_or(DEFAULT_EVENTS);
    let max = usize::try_from(load.batch).context("--batch does not fit")?;
    let run = run_id();
    let store = ctx.open_store().await?;
    let (event_type, data) = (
        EventType::new("BenchTicked")?,
        super::load::payload(load.event_bytes)?,
    );
    let mut written = 0;
    while written < n {
        let stream = StreamName::new(format!("bench_{run}-g{}", (written / SEED_BATCH) % STREAMS))?;
        let count = (n - written).min(SEED_BATCH);
        let events = (0..count)
            .map(|_| NewEvent::new(event_type.clone(), data.clone()))
            .collect();
        let _ = store
            .append(AppendRequest::new(stream, ExpectedVersion::Any, events))
            .await
            .context("cannot seed the benchmark streams")?;
        written += count;
    }
    // The store is open already: an embedded store cannot be opened twice.
    let target = Arc::new(match &ctx.store_url {
        crate::store_url::StoreUrl::Http(_) => Target::open(ctx).await?,
        _ => Target::Local(concord_groups::Groups::new(Arc::clone(&store))),
    });
    let group = GroupName::new(format!("bench_{run}"))?;
    let spec = GroupSpec::new(Source::All(AllSource {
        category: Some(Category::new(format!("bench_{run}"))?),
        types: Vec::new(),
        tags: Vec::new(),
    }));
    let _ = target
        .put(&group, spec)
        .await
        .context("cannot create the benchmark group")?;

    let bound = Bound::Events(n);
    let progress = Progress::start("group", bound);
    let budget = Budget::new(bound);
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handles: Vec<_> = (0..load.writers)
        .map(|w| {
            let (target, group, done, acked) = (
                Arc::clone(&target),
                group.clone(),
                progress.counter(),
                Arc::clone(&acked),
            );
            tokio::spawn(async move {
                let consumer = ConsumerName::new(format!("bench-{w}"))?;
                let mut tally = Tally::default();
                while acked.load(Ordering::Relaxed) < n {
                    let started = Instant::now();
                    let messages = target
                        .poll(&group, &consumer, max, Duration::from_millis(100))
                        .await?;
                    if messages.is_empty() {
                        continue;
                    }
                    let ids: Vec<String> = messages.into_iter().map(|m| m.ack_id).collect();
                    let count = target.ack(&group, &ids).await? as u64;
                    tally.latencies.record(started.elapsed());
                    tally.events += count;
                    acked.fetch_add(count, Ordering::Relaxed);
                    done.fetch_add(count, Ordering::Relaxed);
                }
                anyhow::Ok(tally)
            })
        })
        .collect();
    let total = join_all(handles).await;
    let elapsed = budget.elapsed();
    progress.finish();
    if let Err(e) = target.delete(&group).await {
        eprintln!("concord bench: cannot delete the benchmark group {group}: {e}");
    }
    Ok(report(
        "group",
        ctx.store_url.to_string(),
        load,
        &total?,
        elapsed,
    ))
}

/// `concord bench baseline xgroup`: the same work with Redis's own consumer groups on the
/// `--store` Redis: N entries in one stream, W consumers reading `--batch` at a time with
/// `XREADGROUP` and acking each batch with one `XACK`.
pub(crate) async fn xgroup(ctx: &Context, load: &LoadArgs) -> anyhow::Result<Report> {
    let crate::store_url::StoreUrl::Redis { url, prefix } = &ctx.store_url else {
        anyhow::bail!(
            "baseline xgroup needs a Redis store (--store redis://...), not {}",
            ctx.store_url
        );
    };
    let n = load.events.unwrap_or(DEFAULT_EVENTS);
    let client = redis::Client::open(url.as_str())
        .with_context(|| format!("invalid redis URL {}", ctx.store_url))?;
    let mut seeding = redis::aio::ConnectionManager::new(client.clone())
        .await
        .with_context(|| format!("cannot connect to redis at {}", ctx.store_url))?;
    let prefix = prefix.as_deref().unwrap_or("concord");
    let key = format!("{{{prefix}}}:bench-xgroup:{}", run_id());
    let mut written = 0;
    while written < n {
        let count = (n - written).min(SEED_BATCH);
        let mut pipe = redis::pipe();
        for _ in 0..count {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("type")
                .arg("BenchTicked")
                .arg("data")
                .arg("{\"amount\":1,\"note\":\"concord bench\"}")
                .ignore();
        }
        let () = pipe.query_async(&mut seeding).await?;
        written += count;
    }
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("bench")
        .arg("0")
        .query_async(&mut seeding)
        .await?;

    let bound = Bound::Events(n);
    let progress = Progress::start("baseline-xgroup", bound);
    let budget = Budget::new(bound);
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // One connection per consumer, as separate worker processes would have: a blocked
    // XREADGROUP holds its connection, and sharing one would queue the others behind it.
    let mut connections = Vec::new();
    for _ in 0..load.writers {
        connections.push(
            redis::aio::ConnectionManager::new(client.clone())
                .await
                .with_context(|| format!("cannot connect to redis at {}", ctx.store_url))?,
        );
    }
    let handles: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(w, conn)| {
            let (mut conn, key, done, acked, batch) = (
                conn,
                key.clone(),
                progress.counter(),
                Arc::clone(&acked),
                load.batch,
            );
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while acked.load(Ordering::Relaxed) < n {
                    let started = Instant::now();
                    let reply: redis::Value = redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg("bench")
                        .arg(format!("c{w}"))
                        .arg("COUNT")
                        .arg(batch)
                        .arg("BLOCK")
                        .arg(100)
                        .arg("STREAMS")
                        .arg(&key)
                        .arg(">")
                        .query_async(&mut conn)
                        .await?;
                    let ids = entry_ids(&reply);
                    if ids.is_empty() {
                        continue;
                    }
                    let count: u64 = redis::cmd("XACK")
                        .arg(&key)
                        .arg("bench")
                        .arg(&ids)
                        .query_async(&mut conn)
                        .await?;
                    tally.latencies.record(started.elapsed());
                    tally.events += count;
                    acked.fetch_add(count, Ordering::Relaxed);
                    done.fetch_add(count, Ordering::Relaxed);
                }
                anyhow::Ok(tally)
            })
        })
        .collect();
    let total = join_all(handles).await;
    let elapsed = budget.elapsed();
    progress.finish();
    let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query_async(&mut seeding).await;
    Ok(report(
        "baseline-xgroup",
        ctx.store_url.to_string(),
        load,
        &total?,
        elapsed,
    ))
}

/// The entry ids of an `XREADGROUP` reply: `[[key, [[id, fields], …]], …]`, or nil when
/// the wait ended empty.
fn entry_ids(reply: &redis::Value) -> Vec<String> {
    use redis::Value;
    let mut ids = Vec::new();
    let Value::Array(streams) = reply else {
        return ids;
    };
    for stream in streams {
        let Value::Array(pair) = stream else { continue };
        let Some(Value::Array(entries)) = pair.get(1) else {
            continue;
        };
        for entry in entries {
            if let Value::Array(parts) = entry
                && let Some(Value::BulkString(id)) = parts.first()
            {
                ids.push(String::from_utf8_lossy(id).into_owned());
            }
        }
    }
    ids
}
