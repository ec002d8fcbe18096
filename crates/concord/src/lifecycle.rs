//! `concord delete`, `concord metadata` and `concord scavenge`: stream lifecycle from the
//! command line, over any store URL (ADR 0003). Deleting and scavenging write; `metadata`
//! without settings only reads.

use anyhow::Context as _;
use clap::Args;
use concord_core::{MetadataChange, StoreError, StreamName, Version};

use crate::Context;
use crate::exit::Exit;

/// `concord delete`.
#[derive(Debug, Args)]
#[command(after_help = "\
A soft delete hides the stream: reads answer \"not found\" and an append recreates it, its
versions going on. --tombstone deletes it for good: every later append or read fails.
Either way the events leave the global log, and the store's files, at the next
`concord scavenge`.")]
pub struct DeleteArgs {
    /// The stream, e.g. `customer-42`.
    #[arg(value_parser = parse_stream)]
    pub stream: StreamName,
    /// Delete for good: the name can never be used again.
    #[arg(long)]
    pub tombstone: bool,
    /// Only if the stream is at this version (else: a conflict, exit code 3).
    #[arg(long, value_name = "N")]
    pub expect: Option<u64>,
}

/// `concord metadata`.
#[derive(Debug, Args)]
#[command(after_help = "\
Without settings, prints the stream's retention settings. Each setting takes a value or
`none` (removes it); settings not given are kept. Reads honour them at once; the events
they leave out are erased by the next `concord scavenge`.")]
pub struct MetadataArgs {
    /// The stream.
    #[arg(value_parser = parse_stream)]
    pub stream: StreamName,
    /// Keep only the last N events (or `none`).
    #[arg(long, value_name = "N|none", value_parser = parse_count)]
    pub max_count: Option<Setting>,
    /// Keep only events younger than this, e.g. `30d`, `12h` (or `none`).
    #[arg(long, value_name = "AGE|none", value_parser = parse_age)]
    pub max_age: Option<Setting>,
    /// Keep only events with a version at least V (or `none`).
    #[arg(long, value_name = "V|none", value_parser = parse_count)]
    pub truncate_before: Option<Setting>,
}

/// A retention setting given on the command line: a value, or `None` for `none`.
#[derive(Clone, Copy, Debug)]
pub struct Setting(pub Option<u64>);

/// `concord scavenge`.
#[derive(Debug, Args)]
#[command(after_help = "\
Erases what deletes and retention hide, from every copy the store keeps (for the embedded
store: the database file and its log). Backups and replicas made before are not changed:
see docs/design/embedded-store.md and docs/design/redis-layout.md.")]
pub struct ScavengeArgs {}

fn parse_stream(s: &str) -> Result<StreamName, String> {
    StreamName::new(s).map_err(|e| e.to_string())
}

fn parse_count(s: &str) -> Result<Setting, String> {
    if s == "none" {
        return Ok(Setting(None));
    }
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Setting(Some(n))),
        _ => Err(format!("{s:?} is not a positive integer or `none`")),
    }
}

fn parse_age(s: &str) -> Result<Setting, String> {
    if s == "none" {
        return Ok(Setting(None));
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not an age like 30d or 12h: {e}"))?;
    match d.as_secs() {
        0 => Err(format!("{s:?} is shorter than a second")),
        n => Ok(Setting(Some(n))),
    }
}

pub(crate) async fn delete(ctx: &mut Context, args: DeleteArgs) -> anyhow::Result<Exit> {
    let store = ctx.open_store_to_read().await?;
    let expected = args.expect.map(Version);
    let result = if args.tombstone {
        store.tombstone_stream(&args.stream, expected).await
    } else {
        store.delete_stream(&args.stream, expected).await
    };
    match result {
        Ok(()) => {
            let what = if args.tombstone {
                "tombstoned (deleted for good)"
            } else {
                "deleted"
            };
            println!(
                "{} {what}; `concord scavenge` erases its events",
                args.stream
            );
            Ok(Exit::Success)
        }
        Err(StoreError::Conflict(conflict)) => {
            eprintln!("error: {conflict}");
            ctx.out.conflict(&conflict)?;
            ctx.out.flush()?;
            eprintln!(
                "hint: look at the events above, then delete with --expect {}",
                conflict.actual
            );
            Ok(Exit::Conflict)
        }
        Err(e) => Err(e).with_context(|| format!("cannot delete stream {}", args.stream)),
    }
}

pub(crate) async fn metadata(ctx: &mut Context, args: MetadataArgs) -> anyhow::Result<Exit> {
    let changing =
        args.max_count.is_some() || args.max_age.is_some() || args.truncate_before.is_some();
    let store = if changing {
        ctx.open_store().await?
    } else {
        ctx.open_store_to_read().await?
    };
    let metadata = if changing {
        let change = MetadataChange {
            max_count: args.max_count.map(|s| s.0),
            max_age_seconds: args.max_age.map(|s| s.0),
            truncate_before: args.truncate_before.map(|s| s.0.map(Version)),
        };
        store
            .change_stream_metadata(&args.stream, change)
            .await
            .with_context(|| format!("cannot set the metadata of stream {}", args.stream))?
    } else {
        store
            .stream_metadata(&args.stream)
            .await
            .with_context(|| format!("cannot read the metadata of stream {}", args.stream))?
    };
    if ctx.out.is_json() {
        println!("{}", serde_json::to_string(&metadata)?);
    } else {
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
        let header = ["STREAM", "MAX_COUNT", "MAX_AGE", "TRUNCATE_BEFORE"].map(str::to_owned);
        let row = vec![
            args.stream.to_string(),
            show(metadata.max_count),
            metadata.max_age_seconds.map_or_else(
                || "-".to_owned(),
                |s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
            ),
            show(metadata.truncate_before.map(Version::get)),
        ];
        ctx.out.table(&[header.to_vec(), row])?;
        ctx.out.flush()?;
    }
    Ok(Exit::Success)
}

pub(crate) async fn scavenge(ctx: &mut Context, _args: ScavengeArgs) -> anyhow::Result<Exit> {
    let store = ctx.open_store_to_read().await?;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message("scavenging: erasing deleted and expired events");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let report = store.scavenge().await;
    spinner.finish_and_clear();
    let report = report.context("the scavenge failed; run it again to complete it")?;
    if ctx.out.is_json() {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let plural = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
        println!(
            "scavenged: {} removed from {}, {} given back",
            plural(report.events_removed, "event"),
            plural(report.streams_scavenged, "stream"),
            plural(report.bytes_reclaimed, "byte")
        );
    }
    Ok(Exit::Success)
}
