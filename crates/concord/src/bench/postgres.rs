//! The PostgreSQL baselines, on the database of the `--store` URL, so that the Postgres
//! backend's figures are ratios to what the same server does without Concord:
//!
//! - `postgres`: plain `INSERT` of one jsonb row per transaction (autocommit), W
//!   connections, into a table with a `bigserial` key and a stream index, in a scratch
//!   schema dropped at the end. The server's durability is whatever it is configured with
//!   (`synchronous_commit`), the same the store gets.
//! - `messagedb`: Message DB's `write_message` with an expected version, W writers each on
//!   its own stream in its own category (Message DB locks a whole category per write, so
//!   that is its best case), one round trip per event, as its users call it. Message DB
//!   must be installed in the database (`bench/postgres.sh` does it from
//!   `../shared/peers/message-db`); its messages are deleted at the end.
//!
//! Both write 1 KiB of JSON per event unless `--event-bytes` says otherwise: the size the
//! issue's figures are stated in.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;
use tokio_postgres::{Client, NoTls};

use super::load::{Budget, join_all, payload_bytes};
use super::{Bound, LoadArgs, Progress, Report, Tally, report, run_id};
use crate::Context;
use crate::store_url::StoreUrl;

/// Bytes of data per event when `--event-bytes` is not given.
const DEFAULT_EVENT_BYTES: u64 = 1024;

/// The database of the `--store` URL and a name for what is shown in the report.
fn target(ctx: &Context, baseline: &str) -> anyhow::Result<(tokio_postgres::Config, String)> {
    let StoreUrl::Postgres(url) = &ctx.store_url else {
        anyhow::bail!(
            "baseline {baseline} needs a PostgreSQL store (--store postgres://...), not {}",
            ctx.store_url
        );
    };
    let (config, _) = concord_postgres::connection_config(url)
        .with_context(|| format!("invalid PostgreSQL URL {}", ctx.store_url))?;
    Ok((config, ctx.store_url.to_string()))
}

/// A connection whose driver task runs until the client is dropped.
async fn connect(config: &tokio_postgres::Config, shown: &str) -> anyhow::Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .with_context(|| format!("cannot connect to {shown}"))?;
    // A connection that fails shows up as the error of the client's next call.
    drop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    Ok(client)
}

/// The JSON text of one event.
fn data(load: &LoadArgs) -> anyhow::Result<Arc<String>> {
    let bytes = payload_bytes(Some(load.event_bytes.unwrap_or(DEFAULT_EVENT_BYTES)))?;
    Ok(Arc::new(String::from_utf8(bytes)?))
}

/// `baseline postgres`.
pub(crate) async fn insert(ctx: &Context, load: &LoadArgs, bound: Bound) -> anyhow::Result<Report> {
    let (config, shown) = target(ctx, "postgres")?;
    let schema = format!(
        "concord_bench_{}",
        run_id().to_lowercase().replace('-', "_")
    );
    let admin = connect(&config, &shown).await?;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.events (
                 position bigserial PRIMARY KEY,
                 stream   text   NOT NULL,
                 version  bigint NOT NULL,
                 type     text   NOT NULL,
                 data     jsonb  NOT NULL);
             CREATE INDEX ON {schema}.events (stream, version);"
        ))
        .await
        .with_context(|| format!("cannot create the scratch schema {schema}"))?;
    let data = data(load)?;
    let progress = Progress::start("baseline-postgres", bound);
    let budget = Budget::new(bound);
    let mut handles = Vec::new();
    for w in 0..load.writers {
        let client = connect(&config, &shown).await?;
        let (budget, done, data) = (Arc::clone(&budget), progress.counter(), Arc::clone(&data));
        let sql = format!(
            "INSERT INTO {schema}.events (stream, version, type, data) \
             VALUES ($1, $2, 'BenchTicked', ($3::text)::jsonb)"
        );
        handles.push(tokio::spawn(async move {
            let insert = client.prepare(&sql).await?;
            let stream = format!("bench-{w}");
            let mut tally = Tally::default();
            let mut version = 0i64;
            while budget.claim(1) {
                version += 1;
                let started = Instant::now();
                let _ = client
                    .execute(&insert, &[&stream, &version, &data.as_str()])
                    .await?;
                tally.latencies.record(started.elapsed());
                tally.events += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(tally)
        }));
    }
    let tally = join_all(handles).await;
    let elapsed = budget.elapsed();
    progress.finish();
    let dropped = admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    let tally = tally?;
    dropped.with_context(|| format!("cannot drop the scratch schema {schema}"))?;
    Ok(report("baseline-postgres", shown, load, &tally, elapsed))
}

/// `baseline messagedb`.
pub(crate) async fn message_db(
    ctx: &Context,
    load: &LoadArgs,
    bound: Bound,
) -> anyhow::Result<Report> {
    let (config, shown) = target(ctx, "messagedb")?;
    let admin = connect(&config, &shown).await?;
    let installed: Option<String> = admin
        .query_one(
            "SELECT to_regproc('message_store.write_message')::text",
            &[],
        )
        .await
        .context("cannot look for Message DB")?
        .get(0);
    if installed.is_none() {
        anyhow::bail!(
            "Message DB is not installed in the database of {shown}: bench/postgres.sh installs \
             it (from ../shared/peers/message-db) into a scratch database and runs this baseline"
        );
    }
    let run = run_id().to_lowercase().replace('-', "");
    let data = data(load)?;
    let progress = Progress::start("baseline-messagedb", bound);
    let budget = Budget::new(bound);
    let mut handles = Vec::new();
    for w in 0..load.writers {
        let client = connect(&config, &shown).await?;
        let (budget, done, data) = (Arc::clone(&budget), progress.counter(), Arc::clone(&data));
        // The category is the part before the first `-`: one per writer.
        let stream = format!("bench{run}w{w}-1");
        handles.push(tokio::spawn(async move {
            client
                .batch_execute("SET search_path = message_store, public")
                .await?;
            let write = client
                .prepare(
                    "SELECT message_store.write_message(gen_random_uuid()::varchar, $1::varchar, \
                     'BenchTicked'::varchar, ($2::text)::jsonb, NULL, $3::bigint)",
                )
                .await?;
            let mut tally = Tally::default();
            // Message DB's versions start at 0; -1 expects no stream.
            let mut expected = -1i64;
            while budget.claim(1) {
                let started = Instant::now();
                expected = client
                    .query_one(&write, &[&stream, &data.as_str(), &expected])
                    .await?
                    .try_get(0)?;
                tally.latencies.record(started.elapsed());
                tally.events += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(tally)
        }));
    }
    let tally = join_all(handles).await;
    let elapsed = budget.elapsed();
    progress.finish();
    let deleted = admin
        .execute(
            "DELETE FROM message_store.messages WHERE stream_name LIKE $1",
            &[&format!("bench{run}w%")],
        )
        .await;
    let tally = tally?;
    let _ = deleted.context("cannot delete the baseline's messages")?;
    Ok(report("baseline-messagedb", shown, load, &tally, elapsed))
}
