//! `concord copy --from URL --to URL`: a whole store into another one, from any backend
//! into any backend that can import (PostgreSQL, Redis, embedded), every event kept as it is (id, stream, version, position,
//! type, tags, data, metadata, recorded time) through [`EventStore::import`].
//!
//! Why it reads what readers see rather than the raw log: events a delete, a tombstone or
//! retention hides are not copied, so a copy never brings back what was erased or is due
//! to be. Their positions stay holes in the target.
//!
//! Resumable: the target's head says how far an earlier run got. The event at that
//! position must be the source's event there (the same id), or the copy refuses a target
//! that holds anything else. It ends by comparing a digest (SHA-256 of every copied
//! event's fields, in position order) of both stores.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use concord_core::{
    Direction, EventStore, Filter, Position, RecordedEvent, StoreError, StreamMetadata, StreamName,
    Version,
};
use sha2::{Digest, Sha256};

use crate::exit::Exit;
use crate::store_url::StoreUrl;

/// `concord copy`.
#[derive(Args, Debug)]
#[command(after_help = "\
Copies every event readers of FROM see into TO, keeping ids, streams, versions, positions,
types, tags, data, metadata and recorded times, then the streams' retention settings, and
compares a digest of both stores. Run it again after an interruption: it goes on from the
target's head. Events appended to FROM while it runs are copied by the next run.

  concord copy --from ./concord-data --to 'postgres://me@db.internal/events'

What a delete, a tombstone or retention hides is not copied; where it leaves holes in
positions, the target keeps them. A stream tombstoned in the source is tombstoned in the target when its events
are still in the source's log (not yet scavenged); other deleted names are not carried over.
The copy warns when the target cannot go on as the source would: a stream with no event
readers see (its versions would start again at 1 there), or hidden events at the end of
the log (the target's head stays below the source's).")]
pub struct CopyArgs {
    /// The store to copy: any store URL (`./dir`, `redis://…`, `postgres://…`, `http://…`).
    #[arg(long, value_name = "URL")]
    from: String,
    /// The store to copy into: empty, or holding an earlier run's copy of FROM.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Events per import (one transaction each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
}

/// What the source shows of a stream: from which version its events are visible (`None`:
/// none are, it is deleted or tombstoned).
type Visible = HashMap<StreamName, Option<Version>>;

/// The streams a copy found tombstoned in the source (their events still in the log,
/// not yet scavenged): the target tombstones their names too.
type Tombstoned = HashSet<StreamName>;

async fn first_visible(
    source: &dyn EventStore,
    visible: &mut Visible,
    tombstoned: &mut Tombstoned,
    stream: &StreamName,
) -> Result<Option<Version>, StoreError> {
    if let Some(v) = visible.get(stream) {
        return Ok(*v);
    }
    let first = match source
        .read_stream(stream, Version(1), Direction::Forward, 1)
        .await
    {
        Ok(events) => events.first().map(|e| e.version),
        Err(StoreError::StreamDeleted(_)) => {
            tombstoned.insert(stream.clone());
            None
        }
        Err(e) => return Err(e),
    };
    visible.insert(stream.clone(), first);
    Ok(first)
}

/// The events of `page` that readers of the source see.
async fn visible_events(
    source: &dyn EventStore,
    visible: &mut Visible,
    tombstoned: &mut Tombstoned,
    page: Vec<RecordedEvent>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut kept = Vec::with_capacity(page.len());
    for e in page {
        if first_visible(source, visible, tombstoned, &e.stream)
            .await?
            .is_some_and(|first| e.version >= first)
        {
            kept.push(e);
        }
    }
    Ok(kept)
}

/// What the target cannot hold of the source, said so that nobody learns it from a
/// reused version or position after moving their writers: the store API has no way to
/// import a stream's past without its events, nor a head above the last event.
fn what_did_not_carry(
    visible: &Visible,
    tombstoned: &Tombstoned,
    end: Position,
    target_head: Position,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut hidden: Vec<&StreamName> = visible
        .iter()
        .filter(|(stream, first)| first.is_none() && !tombstoned.contains(*stream))
        .map(|(stream, _)| stream)
        .collect();
    if !hidden.is_empty() {
        hidden.sort();
        let shown: Vec<&str> = hidden.iter().take(5).map(|s| s.as_str()).collect();
        let more = hidden.len().saturating_sub(shown.len());
        warnings.push(format!(
            "{} stream(s) of the source have no event readers see (deleted, or hidden by retention): {}{}; the target does not know their past, so an append there starts them at version 1 where the source goes on from their last version",
            hidden.len(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() },
        ));
    }
    if target_head < end {
        warnings.push(format!(
            "the source's last positions, {} to {end}, hold no event readers see, so the target's head is {target_head}: its next append takes position {}, which readers of the source have already passed; a reader that kept a position above {target_head} must start again from {target_head} in the target",
            target_head.get() + 1,
            target_head.get() + 1,
        ));
    }
    warnings
}

fn digest_event(hash: &mut Sha256, e: &RecordedEvent) {
    let field = |hash: &mut Sha256, bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    hash.update(e.position.get().to_le_bytes());
    field(hash, e.stream.as_str().as_bytes());
    hash.update(e.version.get().to_le_bytes());
    hash.update(e.id.as_uuid().as_bytes());
    field(hash, e.event_type.as_str().as_bytes());
    field(hash, e.data.content_type().as_bytes());
    field(hash, e.data.as_bytes());
    field(hash, e.metadata.as_bytes());
    hash.update((e.tags.len() as u64).to_le_bytes());
    for t in &e.tags {
        field(hash, t.as_str().as_bytes());
    }
    hash.update(e.recorded_at.as_millis().to_le_bytes());
}

/// SHA-256 over the events readers of `store` see up to `through`, and how many there are.
async fn digest(store: &dyn EventStore, through: Position) -> anyhow::Result<(String, u64)> {
    let mut hash = Sha256::new();
    let mut visible = Visible::new();
    let mut tombstoned = Tombstoned::new();
    let mut from = Position(1);
    let mut count = 0u64;
    while from <= through {
        let page = store.read_all(from, &Filter::all(), 1000).await?;
        let events: Vec<RecordedEvent> = page
            .events
            .into_iter()
            .filter(|e| e.position <= through)
            .collect();
        for e in visible_events(store, &mut visible, &mut tombstoned, events).await? {
            digest_event(&mut hash, &e);
            count += 1;
        }
        if page.next_from <= from {
            break;
        }
        from = page.next_from;
        if page.next_from > page.head {
            break;
        }
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, count))
}

/// Where a copy into `target` goes on: after its head, if the event there is the source's.
async fn resume_from(
    source: &dyn EventStore,
    target: &dyn EventStore,
    to: &StoreUrl,
) -> anyhow::Result<Position> {
    let head = target.head().await?;
    if head == Position(0) {
        return Ok(Position(1));
    }
    let ours = target.read_all(head, &Filter::all(), 1).await?;
    let theirs = source.read_all(head, &Filter::all(), 1).await?;
    match (ours.events.first(), theirs.events.first()) {
        (Some(o), Some(t)) if o.position == head && t.position == head && o.id == t.id => {
            Ok(head.next())
        }
        _ => anyhow::bail!(
            "{to} already holds events up to position {head} that are not a copy of the source's; copy into an empty store"
        ),
    }
}

pub(crate) async fn run(args: CopyArgs) -> anyhow::Result<Exit> {
    let from_url: StoreUrl = args.from.parse().context("--from")?;
    let to_url: StoreUrl = args.to.parse().context("--to")?;
    if from_url.to_string() == to_url.to_string() {
        anyhow::bail!("--from and --to name the same store ({from_url})");
    }
    from_url
        .ensure_exists()
        .context("--from names no store to copy")?;
    let source = from_url.open().await?;
    let target = to_url.open().await?;
    let started = Instant::now();
    let end = source.head().await?;
    let mut from = resume_from(source.as_ref(), target.as_ref(), &to_url).await?;
    let resumed = from > Position(1);
    let start = from;
    let bar = indicatif::ProgressBar::new((end.get() + 1).saturating_sub(start.get()));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "copying {bar:40} {pos}/{len} positions ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut visible = Visible::new();
    let mut tombstoned = Tombstoned::new();
    let mut streams: HashSet<StreamName> = HashSet::new();
    let mut copied = 0u64;
    let limit = usize::try_from(args.batch).unwrap_or(1000);
    while from <= end {
        let page = source.read_all(from, &Filter::all(), limit).await?;
        let next = page.next_from;
        let events: Vec<RecordedEvent> = page
            .events
            .into_iter()
            .filter(|e| e.position <= end)
            .collect();
        let events = visible_events(source.as_ref(), &mut visible, &mut tombstoned, events).await?;
        if !events.is_empty() {
            copied += events.len() as u64;
            streams.extend(events.iter().map(|e| e.stream.clone()));
            let first = events.first().map_or(0, |e| e.position.get());
            target.import(events).await.with_context(|| {
                format!("cannot import the events from position {first} into {to_url}")
            })?;
        }
        bar.set_position(next.get().min(end.get() + 1).saturating_sub(start.get()));
        if next <= from {
            break;
        }
        from = next;
    }
    bar.finish_and_clear();
    // Retention goes with the streams it applies to.
    let mut with_metadata = 0u64;
    let mut names: Vec<&StreamName> = streams.iter().collect();
    names.sort();
    for stream in names {
        let metadata = match source.stream_metadata(stream).await {
            Ok(m) => m,
            Err(StoreError::Unsupported { .. } | StoreError::StreamDeleted(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if metadata != StreamMetadata::NONE {
            target
                .set_stream_metadata(stream, metadata)
                .await
                .with_context(|| format!("cannot set the retention of {stream} in {to_url}"))?;
            with_metadata += 1;
        }
    }
    // Names tombstoned in the source stay refused in the target.
    for stream in &tombstoned {
        match target.tombstone_stream_name(stream, None).await {
            Ok(()) | Err(StoreError::StreamDeleted(_)) => {}
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("cannot tombstone {stream} in {to_url}")));
            }
        }
    }
    let (source_digest, source_events) = digest(source.as_ref(), end).await?;
    let (target_digest, target_events) = digest(target.as_ref(), end).await?;
    let verb = if resumed {
        "resumed and copied"
    } else {
        "copied"
    };
    println!(
        "{verb} {copied} events (through position {end}) of {} streams from {from_url} to {to_url} in {:.1} s, with the retention settings of {with_metadata} and {} tombstones",
        streams.len(),
        started.elapsed().as_secs_f64(),
        tombstoned.len()
    );
    if source_digest != target_digest || source_events != target_events {
        anyhow::bail!(
            "the copy differs from the source: {source_events} events with SHA-256 {source_digest} in {from_url}, {target_events} events with SHA-256 {target_digest} in {to_url}"
        );
    }
    println!("digest: {source_events} events, SHA-256 {source_digest}, the same in both stores");
    for warning in what_did_not_carry(&visible, &tombstoned, end, target.head().await?) {
        eprintln!("warning: {warning}");
    }
    Ok(Exit::Success)
}
