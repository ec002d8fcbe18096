//! The read models of the three scenarios, straight from the event schema of MISSION.md:
//! `balances` (`account-<id>`), `auctions` (`auction-<id>`), `documents` (`doc-<id>`).
//!
//! Each is a [`Fold`]: a pure function from (state, event) to state, per stream. The same
//! fold runs in the projection ([`FoldProjection`], one row per stream in SQLite or PostgreSQL) and in
//! [`replay`] (in memory, from a list of events), so "the read model equals a full replay"
//! is checkable. Every event of the category passes through the fold and the row's version
//! must advance by exactly one, so a skipped or repeated event is a handler error, not a
//! silently wrong balance.
//!
//! # Deleted streams
//!
//! A delete is not an event, so the folds never see one;
//! [`crate::ProjectionHost::forget_deleted_streams`] asks the store how far each stream was
//! deleted and mends the rows a delete reached (every built-in projection reacts alike). A
//! row the delete reached entirely is dropped, and the last deleted version is kept in
//! `<name>_forgotten`, because a soft-deleted stream can be written again with its versions
//! going on: the next event after that version starts a fresh row from the default state (a
//! recreated account's balance is built from its new events only), and a late event of the
//! forgotten life (at or before it) is ignored rather than refused. A stream deleted and
//! written again before any reconcile saw it gone has a row that spans the delete: it is
//! folded again from the events after the delete ([`Projection::refold`]). A rebuild keeps
//! `<name>_forgotten`, so a replay of a log that still holds the old events (until a
//! scavenge) gives the same rows (ADR 0003).

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;

use concord_core::{Category, Filter, Position, RecordedEvent, Version};
use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::HandlerError;
use crate::projection::{BatchError, PgProjection, Projection, StreamRow};

/// A per-stream read model as a pure fold.
pub trait Fold: Send + Sync + 'static {
    /// The row's state (without stream, version and position, which every row has).
    type State: Serialize + DeserializeOwned + Default + Clone + PartialEq + Send + std::fmt::Debug;
    /// The projection's name.
    const NAME: &'static str;
    /// The category of the streams it folds.
    const CATEGORY: &'static str;
    /// Applies one event of the stream to its state. Unknown event types leave it as is.
    ///
    /// # Errors
    /// Malformed data (a missing field, a number that is not an integer).
    fn apply(
        state: &mut Self::State,
        event: &RecordedEvent,
        data: &Value,
    ) -> Result<(), HandlerError>;
}

/// One read-model row: the stream, the version and position of its last event, and the
/// fold's state (flattened into the same JSON object).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Row<S> {
    /// The stream (the row's key).
    pub stream: String,
    /// The version of the last event applied.
    pub version: Version,
    /// The position of the last event applied.
    pub position: Position,
    /// The state.
    #[serde(flatten)]
    pub state: S,
}

/// Folds `event` into `row` (a new row when `None`), checking that its version follows.
///
/// # Errors
/// An event out of order, or the fold's error.
pub fn step<F: Fold>(
    row: Option<Row<F::State>>,
    event: &RecordedEvent,
) -> Result<Row<F::State>, HandlerError> {
    let mut row = row.unwrap_or_else(|| Row {
        stream: event.stream.as_str().to_owned(),
        version: Version::NONE,
        position: Position::ZERO,
        state: F::State::default(),
    });
    if event.version != row.version.next() {
        return Err(HandlerError::new(format!(
            "{} has version {} in the read model, but the next event has version {}; an event was skipped or applied twice",
            row.stream, row.version, event.version
        )));
    }
    if !event.data.is_json() {
        return Err(HandlerError::new(format!(
            "the data of the {} event is {}, not JSON",
            event.event_type,
            event.data.content_type()
        )));
    }
    let data = event.data.to_value().map_err(|e| {
        HandlerError::with_source(
            format!(
                "the data of the {} event cannot be read as JSON",
                event.event_type
            ),
            e,
        )
    })?;
    F::apply(&mut row.state, event, &data)?;
    row.version = event.version;
    row.position = event.position;
    Ok(row)
}

/// What [`replay`] gives: the rows by stream, and the events the fold refused with why.
pub type Replayed<'a, F> = (
    BTreeMap<String, Row<<F as Fold>::State>>,
    Vec<(&'a RecordedEvent, HandlerError)>,
);

/// `row` (a new row when `None`) past an event the fold refused: its version and position
/// move, its state does not. This is what the projection keeps for a skipped event.
pub fn skip_step<F: Fold>(row: Option<Row<F::State>>, event: &RecordedEvent) -> Row<F::State> {
    let mut row = row.unwrap_or_else(|| Row {
        stream: event.stream.as_str().to_owned(),
        version: Version::NONE,
        position: Position::ZERO,
        state: F::State::default(),
    });
    if event.version > row.version {
        row.version = event.version;
        row.position = event.position;
    }
    row
}

/// The rows a full replay of `events` gives (events of other categories are ignored), and
/// the events the fold refused: they are skipped as the projection skips them.
pub fn replay<'a, F: Fold>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> Replayed<'a, F> {
    let mut rows: BTreeMap<String, Row<F::State>> = BTreeMap::new();
    let mut refused = Vec::new();
    for event in events {
        if event.stream.category().as_str() != F::CATEGORY {
            continue;
        }
        let key = event.stream.as_str().to_owned();
        let before = rows.remove(&key);
        let row = match step::<F>(before.clone(), event) {
            Ok(row) => row,
            Err(e) => {
                refused.push((event, e));
                skip_step::<F>(before, event)
            }
        };
        rows.insert(key, row);
    }
    (rows, refused)
}

/// A [`Fold`] as a [`Projection`]: table `<name>(stream, version, position, state)` in
/// SQLite (`projection_<name>` in PostgreSQL), the state as JSON. A batch keeps touched
/// rows in memory and writes each once at its end.
pub struct FoldProjection<F>(PhantomData<fn() -> F>);

impl<F> std::fmt::Debug for FoldProjection<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FoldProjection")
            .field(&std::any::type_name::<F>())
            .finish()
    }
}

impl<F: Fold> FoldProjection<F> {
    /// The projection.
    pub fn new() -> Self {
        FoldProjection(PhantomData)
    }
}

/// A stored row as its columns: version, position, state (JSON).
type Stored = (i64, i64, String);

/// Where a fold's rows live: the two tables of the read model, in SQLite or PostgreSQL.
/// The fold's logic is written once over it.
trait Table {
    /// The row of `key`.
    fn load(&mut self, key: &str) -> Result<Option<Stored>, HandlerError>;
    /// Writes the row of `key`.
    fn store(&mut self, key: &str, row: Stored) -> Result<(), HandlerError>;
    /// The version an earlier life of `key` was forgotten through.
    fn forgotten(&mut self, key: &str) -> Result<Option<i64>, HandlerError>;
    /// Records that `key`'s events at or before `through` belong to a forgotten life
    /// (never lowering an earlier record).
    fn forget_through(&mut self, key: &str, through: i64) -> Result<(), HandlerError>;
    /// Drops the row of `key` if it is at `version`; whether it did.
    fn delete_at(&mut self, key: &str, version: i64) -> Result<bool, HandlerError>;
    /// Every row's stream, version, and the version it began at.
    fn stream_rows(&mut self) -> Result<Vec<(String, i64, i64)>, HandlerError>;
}

/// The fold's tables in the SQLite read model.
struct Sqlite<'c> {
    db: &'c Connection,
    name: &'static str,
}

impl Table for Sqlite<'_> {
    fn load(&mut self, key: &str) -> Result<Option<Stored>, HandlerError> {
        let sql = format!(
            "SELECT version, position, state FROM {} WHERE stream = ?1",
            self.name
        );
        Ok(self
            .db
            .prepare_cached(&sql)?
            .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?)
    }

    fn store(&mut self, key: &str, (version, position, state): Stored) -> Result<(), HandlerError> {
        let sql = format!(
            "INSERT INTO {} (stream, version, position, state) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(stream) DO UPDATE SET version = excluded.version, position = excluded.position, state = excluded.state",
            self.name
        );
        self.db
            .prepare_cached(&sql)?
            .execute(params![key, version, position, state])?;
        Ok(())
    }

    fn forgotten(&mut self, key: &str) -> Result<Option<i64>, HandlerError> {
        let sql = format!(
            "SELECT version FROM {}_forgotten WHERE stream = ?1",
            self.name
        );
        Ok(self
            .db
            .prepare_cached(&sql)?
            .query_row(params![key], |r| r.get(0))
            .optional()?)
    }

    fn forget_through(&mut self, key: &str, through: i64) -> Result<(), HandlerError> {
        let sql = format!(
            "INSERT INTO {name}_forgotten (stream, version) VALUES (?1, ?2)
             ON CONFLICT(stream) DO UPDATE SET version = max(version, excluded.version)",
            name = self.name
        );
        self.db
            .prepare_cached(&sql)?
            .execute(params![key, through])?;
        Ok(())
    }

    fn delete_at(&mut self, key: &str, version: i64) -> Result<bool, HandlerError> {
        let sql = format!(
            "DELETE FROM {} WHERE stream = ?1 AND version = ?2",
            self.name
        );
        Ok(self
            .db
            .prepare_cached(&sql)?
            .execute(params![key, version])?
            > 0)
    }

    fn stream_rows(&mut self) -> Result<Vec<(String, i64, i64)>, HandlerError> {
        // A row begins at version 1, or right after the life it replaced was forgotten.
        let sql = format!(
            "SELECT r.stream, r.version, coalesce(f.version, 0) + 1 FROM {name} AS r
             LEFT JOIN {name}_forgotten AS f ON f.stream = r.stream",
            name = self.name
        );
        Ok(self
            .db
            .prepare_cached(&sql)?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?)
    }
}

/// The fold's tables in the PostgreSQL read model: `projection_<name>` and
/// `projection_<name>_forgotten`.
struct Postgres<'t, 'a> {
    db: &'t mut postgres::Transaction<'a>,
    name: &'static str,
}

impl Table for Postgres<'_, '_> {
    fn load(&mut self, key: &str) -> Result<Option<Stored>, HandlerError> {
        let sql = format!(
            "SELECT version, position, state FROM projection_{} WHERE stream = $1",
            self.name
        );
        let row = self.db.query_opt(sql.as_str(), &[&key])?;
        Ok(match row {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
            None => None,
        })
    }

    fn store(&mut self, key: &str, (version, position, state): Stored) -> Result<(), HandlerError> {
        let sql = format!(
            "INSERT INTO projection_{} (stream, version, position, state) VALUES ($1, $2, $3, $4)
             ON CONFLICT (stream) DO UPDATE SET version = excluded.version, position = excluded.position, state = excluded.state",
            self.name
        );
        self.db
            .execute(sql.as_str(), &[&key, &version, &position, &state])?;
        Ok(())
    }

    fn forgotten(&mut self, key: &str) -> Result<Option<i64>, HandlerError> {
        let sql = format!(
            "SELECT version FROM projection_{}_forgotten WHERE stream = $1",
            self.name
        );
        let row = self.db.query_opt(sql.as_str(), &[&key])?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    fn forget_through(&mut self, key: &str, through: i64) -> Result<(), HandlerError> {
        let sql = format!(
            "INSERT INTO projection_{name}_forgotten AS f (stream, version) VALUES ($1, $2)
             ON CONFLICT (stream) DO UPDATE SET version = greatest(f.version, excluded.version)",
            name = self.name
        );
        self.db.execute(sql.as_str(), &[&key, &through])?;
        Ok(())
    }

    fn delete_at(&mut self, key: &str, version: i64) -> Result<bool, HandlerError> {
        let sql = format!(
            "DELETE FROM projection_{} WHERE stream = $1 AND version = $2",
            self.name
        );
        Ok(self.db.execute(sql.as_str(), &[&key, &version])? > 0)
    }

    fn stream_rows(&mut self) -> Result<Vec<(String, i64, i64)>, HandlerError> {
        let sql = format!(
            "SELECT r.stream, r.version, coalesce(f.version, 0) + 1 FROM projection_{name} AS r
             LEFT JOIN projection_{name}_forgotten AS f ON f.stream = r.stream",
            name = self.name
        );
        self.db
            .query(sql.as_str(), &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }
}

fn to_sql(n: u64) -> Result<i64, HandlerError> {
    i64::try_from(n)
        .map_err(|_| HandlerError::new(format!("{n} does not fit the read model's integers")))
}

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A handler error where SQLite's trait methods return SQLite's error.
fn sqlite_error(e: HandlerError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// The fold's logic, once for both databases.
impl<F: Fold> FoldProjection<F> {
    fn load(t: &mut impl Table, key: &str) -> Result<Option<Row<F::State>>, HandlerError> {
        let Some((version, position, state)) = t.load(key)? else {
            return Ok(None);
        };
        let state = serde_json::from_str(&state).map_err(|e| {
            HandlerError::with_source(
                format!("the stored state of {key} in {} is unreadable", F::NAME),
                e,
            )
        })?;
        Ok(Some(Row {
            stream: key.to_owned(),
            version: Version(from_sql(version)),
            position: Position(from_sql(position)),
            state,
        }))
    }

    fn store(t: &mut impl Table, row: &Row<F::State>) -> Result<(), HandlerError> {
        let state = serde_json::to_string(&row.state)
            .map_err(|e| HandlerError::with_source("the state could not be encoded", e))?;
        t.store(
            &row.stream,
            (
                to_sql(row.version.get())?,
                to_sql(row.position.get())?,
                state,
            ),
        )
    }

    /// The row `event` folds into: the stored one; else, when an earlier life of the
    /// stream was forgotten through version `v`, nothing for an event at or before `v`
    /// (a late event of that life) and a fresh row after `v` (the recreated stream starts
    /// from its own events, its versions going on from `v`); else a new row.
    fn start(
        t: &mut impl Table,
        key: &str,
        event: &RecordedEvent,
    ) -> Result<Start<F::State>, HandlerError> {
        if let Some(row) = Self::load(t, key)? {
            return Ok(Start::From(Some(row)));
        }
        let Some(through) = t.forgotten(key)?.map(|v| Version(from_sql(v))) else {
            return Ok(Start::From(None));
        };
        if event.version <= through {
            return Ok(Start::Ignore);
        }
        Ok(Start::From(Some(Row {
            stream: key.to_owned(),
            version: through,
            position: Position::ZERO,
            state: F::State::default(),
        })))
    }

    fn apply_batch_in(t: &mut impl Table, events: &[RecordedEvent]) -> Result<(), BatchError> {
        let mut touched: HashMap<&str, Row<F::State>> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            let key = event.stream.as_str();
            let result = match touched.remove(key) {
                Some(row) => step::<F>(Some(row), event),
                None => match Self::start(t, key, event) {
                    Ok(Start::Ignore) => continue,
                    Ok(Start::From(row)) => step::<F>(row, event),
                    Err(e) => Err(e),
                },
            };
            let row = result.map_err(|error| BatchError { index, error })?;
            touched.insert(key, row);
        }
        for row in touched.values() {
            // A write failure is the batch's, not one event's: blame the last event.
            Self::store(t, row).map_err(|error| BatchError {
                index: events.len().saturating_sub(1),
                error,
            })?;
        }
        Ok(())
    }

    fn skip_in(t: &mut impl Table, event: &RecordedEvent) -> Result<(), HandlerError> {
        // A row whose stored state cannot be read starts again from the default state.
        let row = match Self::start(t, event.stream.as_str(), event) {
            Ok(Start::Ignore) => return Ok(()),
            Ok(Start::From(row)) => row,
            Err(e) if e.is_database() => return Err(e),
            Err(_) => None,
        };
        Self::store(t, &skip_step::<F>(row, event))
    }

    fn row_in(t: &mut impl Table, key: &str) -> Result<Option<Value>, HandlerError> {
        Ok(Self::load(t, key)?.and_then(|r| serde_json::to_value(r).ok()))
    }

    fn stream_rows_in(t: &mut impl Table) -> Result<Vec<StreamRow>, HandlerError> {
        Ok(t.stream_rows()?
            .into_iter()
            .map(|(stream, version, since)| StreamRow {
                stream,
                version: Version(from_sql(version)),
                since: Version(from_sql(since)),
            })
            .collect())
    }

    fn forget_in(
        t: &mut impl Table,
        stream: &str,
        version: Version,
        through: Version,
    ) -> Result<bool, HandlerError> {
        if !t.delete_at(stream, to_sql(version.get())?)? {
            return Ok(false);
        }
        t.forget_through(stream, to_sql(through.max(version).get())?)?;
        Ok(true)
    }

    fn refold_in(
        t: &mut impl Table,
        stream: &str,
        version: Version,
        through: Version,
        events: &[RecordedEvent],
    ) -> Result<bool, HandlerError> {
        match Self::load(t, stream)? {
            Some(row) if row.version == version => {}
            _ => return Ok(false),
        }
        let mut row = Row {
            stream: stream.to_owned(),
            version: through,
            position: Position::ZERO,
            state: F::State::default(),
        };
        for event in events {
            if event.version != row.version.next() || event.stream.as_str() != stream {
                return Err(HandlerError::new(format!(
                    "refolding {stream} after version {through} met {} version {} where version {} was due",
                    event.stream,
                    event.version,
                    row.version.next()
                )));
            }
            // An event the fold refuses is passed over, as the runner's skip does.
            row = step::<F>(Some(row.clone()), event)
                .unwrap_or_else(|_| skip_step::<F>(Some(row), event));
        }
        if row.version != version {
            return Err(HandlerError::new(format!(
                "refolding {stream} after version {through} reached version {}, not {version}",
                row.version
            )));
        }
        Self::store(t, &row)?;
        t.forget_through(stream, to_sql(through.get())?)?;
        Ok(true)
    }

    fn sqlite(db: &Connection) -> Sqlite<'_> {
        Sqlite { db, name: F::NAME }
    }

    fn pg<'t, 'a>(db: &'t mut postgres::Transaction<'a>) -> Postgres<'t, 'a> {
        Postgres { db, name: F::NAME }
    }
}

impl<F: Fold> Default for FoldProjection<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Fold> Projection for FoldProjection<F> {
    fn name(&self) -> &str {
        F::NAME
    }

    fn filter(&self) -> Filter {
        match Category::new(F::CATEGORY) {
            Ok(c) => Filter::all().category(c),
            Err(_) => Filter::all(),
        }
    }

    fn create(&self, db: &Connection) -> rusqlite::Result<()> {
        db.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {name} (
                stream TEXT PRIMARY KEY NOT NULL,
                version INTEGER NOT NULL,
                position INTEGER NOT NULL,
                state TEXT NOT NULL
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {name}_forgotten (
                stream TEXT PRIMARY KEY NOT NULL,
                version INTEGER NOT NULL
            ) WITHOUT ROWID",
            name = F::NAME
        ))
    }

    fn reset(&self, db: &Connection) -> rusqlite::Result<()> {
        db.execute(&format!("DELETE FROM {}", F::NAME), [])
            .map(|_| ())
    }

    fn apply(&self, db: &Connection, event: &RecordedEvent) -> Result<(), HandlerError> {
        Projection::apply_batch(self, db, std::slice::from_ref(event)).map_err(|e| e.error)
    }

    fn apply_batch(&self, db: &Connection, events: &[RecordedEvent]) -> Result<(), BatchError> {
        Self::apply_batch_in(&mut Self::sqlite(db), events)
    }

    fn skip(&self, db: &Connection, event: &RecordedEvent) -> rusqlite::Result<()> {
        Self::skip_in(&mut Self::sqlite(db), event).map_err(sqlite_error)
    }

    fn row(&self, db: &Connection, key: &str) -> rusqlite::Result<Option<Value>> {
        Self::row_in(&mut Self::sqlite(db), key).map_err(sqlite_error)
    }

    fn stream_rows(&self, db: &Connection) -> rusqlite::Result<Vec<StreamRow>> {
        Self::stream_rows_in(&mut Self::sqlite(db)).map_err(sqlite_error)
    }

    fn forget(
        &self,
        db: &Connection,
        stream: &str,
        version: Version,
        through: Version,
    ) -> rusqlite::Result<bool> {
        Self::forget_in(&mut Self::sqlite(db), stream, version, through).map_err(sqlite_error)
    }

    fn refold(
        &self,
        db: &Connection,
        stream: &str,
        version: Version,
        through: Version,
        events: &[RecordedEvent],
    ) -> Result<bool, HandlerError> {
        Self::refold_in(&mut Self::sqlite(db), stream, version, through, events)
    }

    fn postgres(&self) -> Option<&dyn PgProjection> {
        Some(self)
    }
}

impl<F: Fold> PgProjection for FoldProjection<F> {
    fn create(&self, db: &mut postgres::Transaction<'_>) -> Result<(), HandlerError> {
        db.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS projection_{name} (
                stream text PRIMARY KEY,
                version bigint NOT NULL,
                position bigint NOT NULL,
                state text NOT NULL
            );
            CREATE TABLE IF NOT EXISTS projection_{name}_forgotten (
                stream text PRIMARY KEY,
                version bigint NOT NULL
            )",
            name = F::NAME
        ))?;
        Ok(())
    }

    fn reset(&self, db: &mut postgres::Transaction<'_>) -> Result<(), HandlerError> {
        db.batch_execute(&format!("DELETE FROM projection_{}", F::NAME))?;
        Ok(())
    }

    fn apply_batch(
        &self,
        db: &mut postgres::Transaction<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), BatchError> {
        Self::apply_batch_in(&mut Self::pg(db), events)
    }

    fn skip(
        &self,
        db: &mut postgres::Transaction<'_>,
        event: &RecordedEvent,
    ) -> Result<(), HandlerError> {
        Self::skip_in(&mut Self::pg(db), event)
    }

    fn row(
        &self,
        db: &mut postgres::Transaction<'_>,
        key: &str,
    ) -> Result<Option<Value>, HandlerError> {
        Self::row_in(&mut Self::pg(db), key)
    }

    fn stream_rows(
        &self,
        db: &mut postgres::Transaction<'_>,
    ) -> Result<Vec<StreamRow>, HandlerError> {
        Self::stream_rows_in(&mut Self::pg(db))
    }

    fn forget(
        &self,
        db: &mut postgres::Transaction<'_>,
        stream: &str,
        version: Version,
        through: Version,
    ) -> Result<bool, HandlerError> {
        Self::forget_in(&mut Self::pg(db), stream, version, through)
    }

    fn refold(
        &self,
        db: &mut postgres::Transaction<'_>,
        stream: &str,
        version: Version,
        through: Version,
        events: &[RecordedEvent],
    ) -> Result<bool, HandlerError> {
        Self::refold_in(&mut Self::pg(db), stream, version, through, events)
    }
}

/// Where folding a stream's next event starts when it has no row in the batch yet.
enum Start<S> {
    /// From this row (a new stream when `None`).
    From(Option<Row<S>>),
    /// Nowhere: the event belongs to a life of the stream that was forgotten.
    Ignore,
}

/// The built-in projections: `balances`, `auctions`, `documents`.
pub fn builtin() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(FoldProjection::<Balances>::new()),
        Arc::new(FoldProjection::<Auctions>::new()),
        Arc::new(FoldProjection::<Documents>::new()),
    ]
}

/// Whether an account or auction still accepts events.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenClosed {
    /// Open (also before the opening event, which a valid stream starts with).
    #[default]
    Open,
    /// Closed.
    Closed,
}

fn field<'a>(
    event: &RecordedEvent,
    data: &'a Value,
    name: &str,
) -> Result<&'a Value, HandlerError> {
    data.get(name).ok_or_else(|| {
        HandlerError::new(format!(
            "{} has no field {name:?} in its data {data}",
            event.event_type
        ))
    })
}

fn amount(event: &RecordedEvent, data: &Value, name: &str) -> Result<u64, HandlerError> {
    field(event, data, name)?.as_u64().ok_or_else(|| {
        HandlerError::new(format!(
            "{}.{name} must be a non-negative integer, but the data is {data}",
            event.event_type
        ))
    })
}

fn text(event: &RecordedEvent, data: &Value, name: &str) -> Result<String, HandlerError> {
    field(event, data, name)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            HandlerError::new(format!(
                "{}.{name} must be a string, but the data is {data}",
                event.event_type
            ))
        })
}

/// `balances`: per `account-<id>`, the owner, the balance (minor units) and open/closed.
#[derive(Debug)]
pub enum Balances {}

/// A `balances` row's state.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Balance {
    /// Who opened the account.
    pub owner: Option<String>,
    /// The balance: opening balance plus deposits minus withdrawals (never below 0).
    pub balance: u64,
    /// Open or closed.
    pub status: OpenClosed,
}

impl Fold for Balances {
    type State = Balance;
    const NAME: &'static str = "balances";
    const CATEGORY: &'static str = "account";

    fn apply(state: &mut Balance, event: &RecordedEvent, data: &Value) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            "AccountOpened" => {
                state.owner = Some(text(event, data, "owner")?);
                state.balance = amount(event, data, "balance")?;
            }
            "Deposited" => {
                state.balance = state.balance.saturating_add(amount(event, data, "amount")?)
            }
            "Withdrawn" => {
                state.balance = state.balance.saturating_sub(amount(event, data, "amount")?)
            }
            "AccountClosed" => state.status = OpenClosed::Closed,
            _ => {}
        }
        Ok(())
    }
}

/// `auctions`: per `auction-<id>`, the item, reserve, highest bid and bidder, number of
/// bids, open/closed.
#[derive(Debug)]
pub enum Auctions {}

/// An `auctions` row's state.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct AuctionState {
    /// What is sold.
    pub item: Option<String>,
    /// The reserve price.
    pub reserve: u64,
    /// The highest bid so far.
    pub highest_bid: Option<u64>,
    /// Who placed it.
    pub highest_bidder: Option<String>,
    /// How many bids were placed.
    pub bids: u64,
    /// Open or closed.
    pub status: OpenClosed,
}

impl Fold for Auctions {
    type State = AuctionState;
    const NAME: &'static str = "auctions";
    const CATEGORY: &'static str = "auction";

    fn apply(
        state: &mut AuctionState,
        event: &RecordedEvent,
        data: &Value,
    ) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            "AuctionOpened" => {
                state.item = Some(text(event, data, "item")?);
                state.reserve = amount(event, data, "reserve")?;
            }
            "BidPlaced" => {
                let bidder = text(event, data, "bidder")?;
                let bid = amount(event, data, "amount")?;
                state.bids = state.bids.saturating_add(1);
                if state.highest_bid.is_none_or(|h| bid > h) {
                    state.highest_bid = Some(bid);
                    state.highest_bidder = Some(bidder);
                }
            }
            "AuctionClosed" => state.status = OpenClosed::Closed,
            _ => {}
        }
        Ok(())
    }
}

/// `documents`: per `doc-<id>`, the current text. Positions and lengths count Unicode
/// scalar values; an edit past the end applies at the end (as every replica does).
#[derive(Debug)]
pub enum Documents {}

/// A `documents` row's state.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct DocumentState {
    /// The text.
    pub text: String,
}

/// The byte offset of character `pos` of `text` (its end when `pos` is past it).
fn byte_at(text: &str, pos: u64) -> usize {
    usize::try_from(pos)
        .ok()
        .and_then(|p| text.char_indices().nth(p).map(|(i, _)| i))
        .unwrap_or(text.len())
}

impl Fold for Documents {
    type State = DocumentState;
    const NAME: &'static str = "documents";
    const CATEGORY: &'static str = "doc";

    fn apply(
        state: &mut DocumentState,
        event: &RecordedEvent,
        data: &Value,
    ) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            "DocumentCreated" => state.text = text(event, data, "text")?,
            "Inserted" => {
                let at = byte_at(&state.text, amount(event, data, "pos")?);
                state.text.insert_str(at, &text(event, data, "text")?);
            }
            "Deleted" => {
                let pos = amount(event, data, "pos")?;
                let len = amount(event, data, "len")?;
                let (from, to) = (
                    byte_at(&state.text, pos),
                    byte_at(&state.text, pos.saturating_add(len)),
                );
                state.text.replace_range(from..to, "");
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_core::{EventId, Json, RecordedAt, StreamName};

    fn ev(stream: &str, version: u64, position: u64, ty: &str, data: Value) -> RecordedEvent {
        RecordedEvent {
            stream: StreamName::new(stream).unwrap(),
            version: Version(version),
            position: Position(position),
            id: EventId::new(),
            event_type: concord_core::EventType::new(ty).unwrap(),
            data: Json::from_value(&data).into(),
            metadata: Json::empty_object(),
            tags: vec![],
            recorded_at: RecordedAt(0),
        }
    }

    #[test]
    fn balances_follow_the_mission_example() {
        let events = [
            ev(
                "account-1",
                1,
                1,
                "AccountOpened",
                serde_json::json!({"owner": "admin", "balance": 1000}),
            ),
            ev(
                "account-1",
                2,
                2,
                "Deposited",
                serde_json::json!({"amount": 2000}),
            ),
            ev(
                "auction-1",
                1,
                3,
                "AuctionOpened",
                serde_json::json!({"item": "x", "reserve": 1}),
            ),
            ev(
                "account-1",
                3,
                4,
                "Deposited",
                serde_json::json!({"amount": 3000}),
            ),
            ev(
                "account-1",
                4,
                5,
                "Withdrawn",
                serde_json::json!({"amount": 500}),
            ),
            ev("account-1", 5, 6, "AccountClosed", serde_json::json!({})),
        ];
        let (rows, refused) = replay::<Balances>(&events);
        assert!(refused.is_empty());
        let row = &rows["account-1"];
        assert_eq!(row.state.balance, 5500);
        assert_eq!(row.state.status, OpenClosed::Closed);
        assert_eq!((row.version, row.position), (Version(5), Position(6)));
        let json = serde_json::to_value(row).unwrap();
        assert_eq!(json["status"], "closed");
        assert_eq!(json["owner"], "admin");
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn an_event_applied_twice_or_skipped_is_a_handler_error() {
        let opened = ev(
            "account-1",
            1,
            1,
            "AccountOpened",
            serde_json::json!({"owner": "a", "balance": 1}),
        );
        let (rows, refused) = replay::<Balances>([&opened, &opened]);
        assert_eq!(refused.len(), 1);
        assert_eq!(
            rows["account-1"].version,
            Version(1),
            "skipped, not applied twice"
        );
        let third = ev(
            "account-1",
            3,
            2,
            "Deposited",
            serde_json::json!({"amount": 1}),
        );
        let (rows, refused) = replay::<Balances>([&opened, &third]);
        let err = &refused[0].1;
        assert!(
            err.to_string().contains("skipped or applied twice"),
            "{err}"
        );
        assert_eq!(rows["account-1"].state.balance, 1);
    }

    #[test]
    fn malformed_amounts_are_handler_errors_naming_the_field() {
        let bad = ev(
            "account-1",
            1,
            1,
            "AccountOpened",
            serde_json::json!({"owner": "a", "balance": "ten"}),
        );
        let (rows, refused) = replay::<Balances>([&bad]);
        let err = &refused[0].1;
        assert!(err.to_string().contains("AccountOpened.balance"), "{err}");
        // Skipped: the row exists at the event's version, with the default state.
        assert_eq!(rows["account-1"].version, Version(1));
        assert_eq!(rows["account-1"].state.balance, 0);
    }

    #[test]
    fn a_bytes_event_where_json_is_expected_is_a_handler_error_not_a_panic() {
        let mut bytes = ev("account-1", 1, 1, "AccountOpened", serde_json::json!({}));
        bytes.data = concord_core::Payload::new(
            concord_core::ContentType::new("image/png").unwrap(),
            vec![0x89],
        )
        .unwrap();
        let (_, refused) = replay::<Balances>([&bytes]);
        let err = &refused[0].1;
        assert!(err.to_string().contains("is image/png, not JSON"), "{err}");
    }

    #[test]
    fn auctions_keep_the_highest_bid_and_count_every_bid() {
        let events = [
            ev(
                "auction-7",
                1,
                1,
                "AuctionOpened",
                serde_json::json!({"item": "lamp", "reserve": 10}),
            ),
            ev(
                "auction-7",
                2,
                2,
                "BidPlaced",
                serde_json::json!({"bidder": "ann", "amount": 20}),
            ),
            ev(
                "auction-7",
                3,
                3,
                "BidPlaced",
                serde_json::json!({"bidder": "bob", "amount": 15}),
            ),
            ev("auction-7", 4, 4, "AuctionClosed", serde_json::json!({})),
        ];
        let row = &replay::<Auctions>(&events).0["auction-7"];
        assert_eq!(row.state.highest_bid, Some(20));
        assert_eq!(row.state.highest_bidder.as_deref(), Some("ann"));
        assert_eq!(row.state.bids, 2);
        assert_eq!(row.state.status, OpenClosed::Closed);
    }

    #[test]
    fn document_positions_count_unicode_scalar_values() {
        let events = [
            ev(
                "doc-1",
                1,
                1,
                "DocumentCreated",
                serde_json::json!({"text": "héllo wörld"}),
            ),
            ev(
                "doc-1",
                2,
                2,
                "Inserted",
                serde_json::json!({"pos": 5, "text": ",🙂"}),
            ),
            ev(
                "doc-1",
                3,
                3,
                "Deleted",
                serde_json::json!({"pos": 0, "len": 1}),
            ),
            ev(
                "doc-1",
                4,
                4,
                "Inserted",
                serde_json::json!({"pos": 99, "text": "!"}),
            ),
            ev(
                "doc-1",
                5,
                5,
                "Deleted",
                serde_json::json!({"pos": 12, "len": 99}),
            ),
        ];
        let row = &replay::<Documents>(&events).0["doc-1"];
        assert_eq!(row.state.text, "éllo,🙂 wörld");
    }
}
