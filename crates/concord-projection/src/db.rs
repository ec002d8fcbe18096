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

use concord_core::{Position, RecordedEvent};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::{Failure, ProjectionError};
use crate::projection::Projection;

/// How long a writer waits for another connection's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens (creating) the database at `path` and the checkpoint table.
pub(crate) fn open(path: &Path) -> Result<Connection, ProjectionError> {
    let fail = |doing| {
        move |source| ProjectionError::Database {
            path: path.to_path_buf(),
            doing,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ProjectionError::Database {
            path: path.to_path_buf(),
            doing: "creating its directory",
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
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

/// What a batch commit did.
#[derive(Debug)]
pub(crate) enum Committed {
    /// The events applied and the checkpoint is now the given one.
    Applied(Position),
    /// Another runner moved the checkpoint; nothing was applied; continue from it.
    Moved(Position),
    /// The handler failed; the events before the failing one applied and the checkpoint is
    /// just before it.
    Failed(Position, Failure),
}

/// Applies `events` and moves the checkpoint from `from` to `to`, in one transaction.
pub(crate) fn commit_batch(
    db: &mut Connection,
    projection: &dyn Projection,
    from: Position,
    events: &[RecordedEvent],
    to: Position,
) -> rusqlite::Result<Committed> {
    let name = projection.name();
    let mut events = events;
    let mut failure: Option<Failure> = None;
    loop {
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (stored, _) = checkpoint(&tx, name)?;
        if stored != from {
            return Ok(Committed::Moved(stored));
        }
        match projection.apply_batch(&tx, events) {
            Ok(()) => {
                let (at, failure) = match failure {
                    None => (to, None),
                    Some(f) => (Position(f.position.get().saturating_sub(1)), Some(f)),
                };
                set_checkpoint(&tx, name, at, failure.as_ref())?;
                tx.commit()?;
                return Ok(match failure {
                    None => Committed::Applied(at),
                    Some(f) => Committed::Failed(at, f),
                });
            }
            Err(e) => {
                drop(tx); // Rolls the partial batch back.
                let (ok, rest) = events.split_at(e.index.min(events.len()));
                if let Some(event) = rest.first() {
                    failure = Some(Failure {
                        position: event.position,
                        stream: event.stream.as_str().to_owned(),
                        version: event.version.get(),
                        event_type: event.event_type.as_str().to_owned(),
                        error: e.error.chain(),
                    });
                }
                // Apply what came before the failing event; the index strictly shrinks,
                // so a handler that fails earlier on the retry still ends the loop.
                events = ok;
            }
        }
    }
}

/// Empties the projection's read model and its checkpoint (rebuild).
pub(crate) fn reset(db: &mut Connection, projection: &dyn Projection) -> rusqlite::Result<()> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    projection.reset(&tx)?;
    set_checkpoint(&tx, projection.name(), Position::ZERO, None)?;
    tx.commit()
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
