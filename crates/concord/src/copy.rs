//! `concord copy --from URL --to URL`: a whole store into another one, from any backend
//! into any backend that can import (PostgreSQL, Redis, embedded), every event kept as it is (id, stream, version, position,
//! type, tags, data, metadata, recorded time) through [`EventStore::import`].
//!
//! Why it reads what readers see rather than the raw log: events a delete, a tombstone or
//! retention hides are not copied, so a copy never brings back what was erased or is due
//! to be. Their positions stay holes in the target. What the source keeps of each stream
//! beside its events (its last version, delete, tombstone and retention: a
//! [`StreamPast`]) goes along after the events, and the target's head is raised to the
//! source's, so that the target goes on exactly as the source would: a deleted stream's
//! next version, a tombstoned name refused, the next position.
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
    Direction, EventStore, Filter, Position, RecordedEvent, StoreError, StreamLifecycle,
    StreamMetadata, StreamName, StreamPast, Version,
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
positions, the target keeps them, and its head ends at the source's. Every stream's past
goes along: its last version (a deleted stream goes on from it), its delete, its tombstone
and its retention settings, read back from the target and compared. From or into a store
that cannot list or import pasts (a server over HTTP), only the retention settings of the
streams copied and the tombstones found in the log go along, and the copy warns about what
did not: a stream with no event readers see, or hidden events at the end of the log.")]
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

/// What the target cannot hold of the source when either store cannot list or import
/// pasts, said so that nobody learns it from a reused version or position after moving
/// their writers.
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
    let at_head = |page: concord_core::AllPage| {
        page.events
            .into_iter()
            .next()
            .filter(|e| e.position == head)
    };
    match (at_head(ours), at_head(theirs)) {
        (Some(o), Some(t)) if o.id == t.id => Ok(head.next()),
        // An earlier run raised the head over the source's hidden last positions.
        (None, None) if source.head().await? >= head => Ok(head.next()),
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
    // Each stream's last version this run copied: a stream whose past is only that needs
    // no call to carry it.
    let mut copied_last: HashMap<StreamName, Version> = HashMap::new();
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
            for e in &events {
                copied_last.insert(e.stream.clone(), e.version);
            }
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
    let carried = match carry_pasts(source.as_ref(), target.as_ref(), end, &copied_last).await {
        Ok(carried) => Some(carried),
        Err(StoreError::Unsupported { .. }) => {
            carry_lifecycles(
                source.as_ref(),
                target.as_ref(),
                &streams,
                &tombstoned,
                &to_url,
            )
            .await?;
            None
        }
        Err(e) => {
            return Err(anyhow::Error::from(e)
                .context(format!("cannot copy the streams' pasts into {to_url}")));
        }
    };
    let (source_digest, source_events) = digest(source.as_ref(), end).await?;
    let (target_digest, target_events) = digest(target.as_ref(), end).await?;
    let verb = if resumed {
        "resumed and copied"
    } else {
        "copied"
    };
    match &carried {
        Some(c) => println!(
            "{verb} {copied} events (through position {end}) of {} streams from {from_url} to {to_url} in {:.1} s, and the past of {} streams ({} deleted, {} tombstoned, {} with retention settings)",
            streams.len(),
            started.elapsed().as_secs_f64(),
            c.pasts,
            c.deleted,
            c.tombstoned,
            c.with_metadata,
        ),
        None => println!(
            "{verb} {copied} events (through position {end}) of {} streams from {from_url} to {to_url} in {:.1} s",
            streams.len(),
            started.elapsed().as_secs_f64(),
        ),
    }
    if source_digest != target_digest || source_events != target_events {
        anyhow::bail!(
            "the copy differs from the source: {source_events} events with SHA-256 {source_digest} in {from_url}, {target_events} events with SHA-256 {target_digest} in {to_url}"
        );
    }
    println!("digest: {source_events} events, SHA-256 {source_digest}, the same in both stores");
    let warnings = match carried {
        Some(c) => c.warnings,
        None => what_did_not_carry(&visible, &tombstoned, end, target.head().await?),
    };
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    Ok(Exit::Success)
}

/// What [`carry_pasts`] carried.
#[derive(Debug, Default)]
struct Carried {
    pasts: u64,
    deleted: u64,
    tombstoned: u64,
    with_metadata: u64,
    warnings: Vec<String>,
}

/// Pasts the target is checked against at once.
const PASTS_PAGE: usize = 1000;

/// Every stream's past (last version, delete, tombstone, retention) into `target`, then
/// the head raised to `end`, then each past read back from the target and compared.
/// A stream whose last event readers of the source see is above `end` was written
/// while the copy ran: its past goes with its events, at the next run. A stream with no
/// lifecycle whose last event was copied is already what its past says: no call is made
/// for it (most streams of a store).
///
/// # Errors
/// [`StoreError::Unsupported`] (before anything is written) when either store cannot list
/// or import pasts; any other failure.
async fn carry_pasts(
    source: &dyn EventStore,
    target: &dyn EventStore,
    end: Position,
    copied_last: &HashMap<StreamName, Version>,
) -> Result<Carried, StoreError> {
    // Both ends are asked before the first write, so an unsupported one changes nothing.
    target.list_stream_pasts(None, 1).await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} carrying the streams' pasts: {pos} streams ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut carried = Carried::default();
    let mut imported: Vec<StreamPast> = Vec::new();
    let mut later: Vec<StreamName> = Vec::new();
    let mut after: Option<StreamName> = None;
    loop {
        let page = source.list_stream_pasts(after.as_ref(), PASTS_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.stream.clone());
        for past in page {
            bar.inc(1);
            let plain = past.lifecycle == StreamLifecycle::default();
            if plain && copied_last.get(&past.stream) == Some(&past.last) {
                carried.pasts += 1;
                imported.push(past);
                continue;
            }
            let newest = match source
                .read_stream(&past.stream, past.last, Direction::Backward, 1)
                .await
            {
                Ok(events) => events.first().map(|e| e.position),
                Err(StoreError::StreamDeleted(_)) => None,
                Err(e) => return Err(e),
            };
            if newest.is_some_and(|p| p > end) {
                later.push(past.stream);
                continue;
            }
            // Its last event was copied (by an earlier run), so the target holds its last
            // version; with no lifecycle, that is its whole past.
            if plain && newest.is_some() {
                carried.pasts += 1;
                imported.push(past);
                continue;
            }
            match target.import_stream_past(&past).await {
                Ok(()) => {}
                Err(StoreError::Invalid(refused)) => {
                    carried.warnings.push(format!(
                        "stream {} changed in the source after its events were copied and cannot go on as there: {refused}",
                        past.stream
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            }
            carried.pasts += 1;
            let l = &past.lifecycle;
            carried.deleted += u64::from(l.deleted_through > Version::NONE && !l.tombstoned);
            carried.tombstoned += u64::from(l.tombstoned);
            carried.with_metadata += u64::from(l.metadata != StreamMetadata::NONE);
            imported.push(past);
        }
    }
    bar.finish_and_clear();
    target.import_head(end).await?;
    // Read back: every past carried (imported, or already there) is the target's now.
    let mut stored = HashMap::with_capacity(imported.len());
    let mut after: Option<StreamName> = None;
    loop {
        let page = target.list_stream_pasts(after.as_ref(), PASTS_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.stream.clone());
        stored.extend(page.into_iter().map(|p| (p.stream.clone(), p)));
    }
    let differ: Vec<&StreamPast> = imported
        .iter()
        .filter(|p| stored.get(&p.stream) != Some(*p))
        .collect();
    if let Some(first) = differ.first() {
        return Err(StoreError::Corrupted(format!(
            "{} stream(s) read back from the target with another past than the source's, the first {}: {first:?} in the source, {:?} in the target",
            differ.len(),
            first.stream,
            stored.get(&first.stream)
        )));
    }
    if !later.is_empty() {
        carried.warnings.push(format!(
            "{} stream(s) were written in the source while the copy ran ({}{}): run the copy again to carry them",
            later.len(),
            later.iter().take(5).map(StreamName::as_str).collect::<Vec<_>>().join(", "),
            if later.len() > 5 { ", …" } else { "" }
        ));
    }
    Ok(carried)
}

/// Without pasts (a store that cannot list or import them, such as a server reached over
/// HTTP): the retention settings of the streams copied, and the tombstones seen in the
/// log.
async fn carry_lifecycles(
    source: &dyn EventStore,
    target: &dyn EventStore,
    streams: &HashSet<StreamName>,
    tombstoned: &Tombstoned,
    to_url: &StoreUrl,
) -> anyhow::Result<()> {
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
        }
    }
    for stream in tombstoned {
        match target.tombstone_stream_name(stream, None).await {
            Ok(()) | Err(StoreError::StreamDeleted(_)) => {}
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("cannot tombstone {stream} in {to_url}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use concord_core::{AppendRequest, ExpectedVersion, MemoryStore, NewEvent};

    use super::*;

    fn deposit() -> Vec<NewEvent> {
        vec![NewEvent::json("Deposited", &serde_json::json!({"amount": 1})).unwrap()]
    }

    async fn append(store: &MemoryStore, stream: &str) {
        let outcome = store
            .append(AppendRequest::new(
                StreamName::new(stream).unwrap(),
                ExpectedVersion::Any,
                deposit(),
            ))
            .await
            .unwrap();
        assert!(!outcome.is_duplicate());
    }

    /// A stream written after the copy read the source's head goes along at the next run,
    /// with its events: carrying its past now would give the target its version without
    /// its events, and the next run's import of them would be refused.
    #[tokio::test]
    async fn a_stream_written_while_the_copy_ran_is_left_to_the_next_run() {
        let (source, target) = (MemoryStore::new(), MemoryStore::new());
        append(&source, "account-1").await;
        append(&source, "account-2").await;
        source
            .delete_stream(&StreamName::new("account-2").unwrap(), None)
            .await
            .unwrap();
        let end = source.head().await.unwrap();
        let page = source
            .read_all(Position(1), &Filter::all(), 10)
            .await
            .unwrap();
        let copied: Vec<RecordedEvent> = page
            .events
            .into_iter()
            .filter(|e| e.stream.as_str() == "account-1")
            .collect();
        target.import(copied.clone()).await.unwrap();
        // Written after `end`: a new stream, and one more event of a copied one.
        append(&source, "account-3").await;
        append(&source, "account-1").await;
        let copied_last: HashMap<StreamName, Version> = copied
            .iter()
            .map(|e| (e.stream.clone(), e.version))
            .collect();
        let carried = carry_pasts(&source, &target, end, &copied_last)
            .await
            .unwrap();
        assert_eq!((carried.pasts, carried.deleted), (1, 1));
        assert_eq!(carried.warnings.len(), 1, "{:?}", carried.warnings);
        assert!(
            carried.warnings[0].contains(
                "2 stream(s) were written in the source while the copy ran (account-1, account-3)"
            ),
            "{:?}",
            carried.warnings
        );
        let names: Vec<String> = target
            .list_stream_pasts(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.stream.as_str().to_owned())
            .collect();
        assert_eq!(names, ["account-1", "account-2"]);
        assert_eq!(target.head().await.unwrap(), end);
    }
}
