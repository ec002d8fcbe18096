//! What committing a batch means, whichever database holds the read model: the events
//! around the skipped ones applied, the skipped ones recorded, the checkpoint moved by
//! compare-and-set, all in one transaction. `db` (SQLite) and `pg` (PostgreSQL) each run
//! this in their own transactions.

use concord_core::{Position, RecordedEvent};

use crate::error::{HandlerError, SkippedEvent};
use crate::projection::BatchError;

/// How many skipped events a status lists (the latest).
pub(crate) const SKIPPED_LISTED: usize = 10;

/// What a batch commit did.
#[derive(Debug)]
pub(crate) enum Committed {
    /// The events applied (but the skipped ones) and the checkpoint is now the given one.
    Applied(Position, Vec<SkippedEvent>),
    /// Another runner moved the checkpoint; nothing was applied; continue from it.
    Moved(Position),
}

/// Applies `events` inside the caller's transaction `tx`, calling `skip` instead of `apply`
/// for the events in `skips` (indexes, ascending). Returns the next event the handler
/// refused, with its error (the caller rolls back, adds it with [`add_skip`] and tries
/// again: each try skips one more event, so the loop ends), or `None` when every other
/// event applied.
///
/// # Errors
/// The database's (no event is at fault, nothing is skipped).
pub(crate) fn apply_around<T>(
    tx: &mut T,
    events: &[RecordedEvent],
    skips: &[(usize, String)],
    mut apply: impl FnMut(&mut T, &[RecordedEvent]) -> Result<(), BatchError>,
    mut skip: impl FnMut(&mut T, &RecordedEvent) -> Result<(), HandlerError>,
) -> Result<Option<(usize, String)>, HandlerError> {
    let mut start = 0;
    for end in skips.iter().map(|(i, _)| *i).chain([events.len()]) {
        let segment = events.get(start..end).unwrap_or_default();
        if let Err(e) = apply(tx, segment) {
            if e.error.is_database() {
                return Err(e.error);
            }
            let index = start + e.index.min(segment.len().saturating_sub(1));
            return Ok(Some((index, e.error.chain())));
        }
        if let Some(event) = events.get(end) {
            skip(tx, event)?;
        }
        start = end + 1;
    }
    Ok(None)
}

/// Adds a refused event to `skips`, keeping them in index order.
pub(crate) fn add_skip(skips: &mut Vec<(usize, String)>, skip: (usize, String)) {
    skips.push(skip);
    skips.sort_by_key(|(i, _)| *i);
}

/// The skipped events of a batch, to record beside the checkpoint.
pub(crate) fn skipped_events(
    events: &[RecordedEvent],
    skips: Vec<(usize, String)>,
) -> Vec<SkippedEvent> {
    skips
        .into_iter()
        .filter_map(|(i, error)| {
            let event = events.get(i)?;
            Some(SkippedEvent {
                position: event.position,
                stream: event.stream.as_str().to_owned(),
                version: event.version.get(),
                event_type: event.event_type.as_str().to_owned(),
                error,
            })
        })
        .collect()
}
