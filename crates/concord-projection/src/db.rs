//! The projection database: one SQLite file holding every read model and the
//! `checkpoints` table, so a batch and its checkpoint commit in one transaction.
//!
//! WAL with `synchronous = NORMAL`: a committed transaction survives the process being
//! killed; a power loss may lose the last transactions, but read model and checkpoint roll
//! back together, so the projection simply re-applies from the older checkpoint.
//!
//! The checkpoint moves by compare-and-set: a batch commits only if the stored checkpoint
//! is still the one the runner started the batch from. Two processes running the same
//! projection on one file (a `concord query` beside `concord serve`) therefore never apply
//! an event twice; the loser rolls back and continues from the winner's checkpoint.

use std::path::Path;
use std::time::Duration;

use concord_core::{Position, RecordedEvent, Version};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::batch::{self, Committed};
use crate::error::{Failure, HandlerError, ProjectionError, SkippedEvent};
use crate::projection::Projection;

/// How long a writer waits for another connection's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens (creating) the database at `path` and the checkpoint table.
pub(crate) fn open(path: &Path) -> Result<Connection, ProjectionError> {
    let fail = |doing| {
        move |source: rusqlite::Error| ProjectionError::Database {
            database: path.display().to_string(),
            doing,
            source: source.into(),
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ProjectionError::Database {
            database: path.display().to_string(),
            doing: "creating its directory",
            source: e.into(),
        })?;
    }
    let db = Connection::open(path).map_err(fail("opening it"))?;
    db.busy_timeout(BUSY_TIMEOUT)
        .map_err(fail("setting the busy timeout"))?;
    db.pragma_update(None, "journal_mode", "WAL")
        .map_err(fail("switching to WAL"))?;
    db.pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail("setting synchronous"))?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS checkpoints (
            name TEXT PRIMARY KEY NOT NULL,
            position INTEGER NOT NULL,
            failure TEXT
        )",
    )
    .map_err(fail("creating the checkpoint table"))?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS skipped (
            name TEXT NOT NULL,
            position INTEGER NOT NULL,
            stream TEXT NOT NULL,
            version INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            error TEXT NOT NULL,
            PRIMARY KEY (name, position)
        ) WITHOUT ROWID",
    )
    .map_err(fail("creating the table of skipped events"))?;
    Ok(db)
}

/// A projection's stored checkpoint (0 when it never ran) and its failure, if it stopped
/// on one.
pub(crate) fn checkpoint(
    db: &Connection,
    name: &str,
) -> rusqlite::Result<(Position, Option<Failure>)> {
    let found = db
        .prepare_cached("SELECT position, failure FROM checkpoints WHERE name = ?1")?
        .query_row(params![name], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .optional()?;
    Ok(match found {
        None => (Position::ZERO, None),
        Some((p, failure)) => (
            Position(u64::try_from(p).unwrap_or(0)),
            failure.and_then(|f| serde_json::from_str(&f).ok()),
        ),
    })
}

fn set_checkpoint(
    db: &Connection,
    name: &str,
    position: Position,
    failure: Option<&Failure>,
) -> rusqlite::Result<()> {
    let failure = failure.and_then(|f| serde_json::to_string(f).ok());
    db.prepare_cached(
        "INSERT INTO checkpoints (name, position, failure) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET position = excluded.position, failure = excluded.failure",
    )?
    .execute(params![
        name,
        i64::try_from(position.get()).unwrap_or(i64::MAX),
        failure
    ])?;
    Ok(())
}

/// How many events the projection skipped in all, and the latest [`batch::SKIPPED_LISTED`], newest
/// first.
pub(crate) fn skipped(db: &Connection, name: &str) -> rusqlite::Result<(u64, Vec<SkippedEvent>)> {
    let count: i64 = db
        .prepare_cached("SELECT COUNT(*) FROM skipped WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))?;
    let latest = db
        .prepare_cached(
            "SELECT position, stream, version, event_type, error FROM skipped WHERE name = ?1 ORDER BY position DESC LIMIT ?2",
        )?
        .query_map(params![name, batch::SKIPPED_LISTED as i64], |r| {
            Ok(SkippedEvent {
                position: Position(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
                stream: r.get(1)?,
                version: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                event_type: r.get(3)?,
                error: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((u64::try_from(count).unwrap_or(0), latest))
}

fn record_skipped(db: &Connection, name: &str, skipped: &SkippedEvent) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT OR REPLACE INTO skipped (name, position, stream, version, event_type, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        name,
        i64::try_from(skipped.position.get()).unwrap_or(i64::MAX),
        skipped.stream,
        i64::try_from(skipped.version).unwrap_or(i64::MAX),
        skipped.event_type,
        skipped.error
    ])?;
    Ok(())
}

/// Applies `events` and moves the checkpoint from `from` to `to`, in one transaction.
///
/// An event the handler refuses is skipped: the transaction is started again, the events
/// around it applied, [`Projection::skip`] called for it and the event recorded with the
/// handler's error, so the projection goes on past any event the store accepted. Each retry
/// skips one more event, so the loop ends. A database error (not the event's fault) is
/// returned, and the runner retries the whole batch later.
pub(crate) fn commit_batch(
    db: &mut Connection,
    projection: &dyn Projection,
    from: Position,
    events: &[RecordedEvent],
    to: Position,
) -> rusqlite::Result<Committed> {
    let name = projection.name();
    let mut skips: Vec<(usize, String)> = Vec::new();
    loop {
        let mut tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (stored, _) = checkpoint(&tx, name)?;
        if stored != from {
            return Ok(Committed::Moved(stored));
        }
        let refused = batch::apply_around(
            &mut tx,
            events,
            &skips,
            |tx, segment| projection.apply_batch(tx, segment),
            |tx, event| Ok(projection.skip(tx, event)?),
        )
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        if let Some(skip) = refused {
            drop(tx); // Rolls the partial batch back.
            batch::add_skip(&mut skips, skip);
            continue;
        }
        let skipped = batch::skipped_events(events, skips);
        for s in &skipped {
            record_skipped(&tx, name, s)?;
        }
        set_checkpoint(&tx, name, to, None)?;
        tx.commit()?;
        return Ok(Committed::Applied(to, skipped));
    }
}

/// Empties the projection's read model and its checkpoint (rebuild).
pub(crate) fn reset(db: &mut Connection, projection: &dyn Projection) -> rusqlite::Result<()> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    projection.reset(&tx)?;
    tx.execute(
        "DELETE FROM skipped WHERE name = ?1",
        params![projection.name()],
    )?;
    set_checkpoint(&tx, projection.name(), Position::ZERO, None)?;
    tx.commit()
}

/// Drops the row of a deleted stream if it is still at `version` (see
/// [`Projection::forget`]). Its own immediate transaction, as a batch has: it waits for a
/// batch in progress and a batch waits for it, so a row is never forgotten halfway through
/// a batch folding an event into it.
pub(crate) fn forget(
    db: &mut Connection,
    projection: &dyn Projection,
    stream: &str,
    version: Version,
    through: Version,
) -> rusqlite::Result<bool> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let forgot = projection.forget(&tx, stream, version, through)?;
    tx.commit()?;
    Ok(forgot)
}

/// Replaces the row of a stream deleted and written again if it is still at `version`
/// (see [`Projection::refold`]), in its own immediate transaction as [`forget`] does.
pub(crate) fn refold(
    db: &mut Connection,
    projection: &dyn Projection,
    stream: &str,
    version: Version,
    through: Version,
    events: &[RecordedEvent],
) -> Result<bool, HandlerError> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let refolded = projection.refold(&tx, stream, version, through, events)?;
    tx.commit()?;
    Ok(refolded)
}

/// Reads `key`'s row and the checkpoint it reflects, in one read transaction.
pub(crate) fn row(
    db: &mut Connection,
    projection: &dyn Projection,
    key: &str,
) -> rusqlite::Result<(Position, Option<serde_json::Value>)> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let (at, _) = checkpoint(&tx, projection.name())?;
    let row = projection.row(&tx, key)?;
    tx.commit()?;
    Ok((at, row))
}
