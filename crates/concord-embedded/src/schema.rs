//! The on-disk format: connection settings, the schema, the format check and the recovery
//! checks run on open.
//!
//! Every connection is set up here, so the writer and the readers cannot disagree about
//! the journal mode or the sync level. See `docs/design/embedded-store.md` for why each
//! table and index exists.

use foldhash::{HashMap, HashMapExt};
use std::path::Path;

use concord_core::{StreamLifecycle, StreamMetadata, StreamName, Version};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::deferred_index::{DeferredIndex, Entry};
use crate::error::{EmbeddedError, from_sql};

/// The format this build writes and reads (`PRAGMA user_version`).
///
/// - 1: the first format.
/// - 2: the idempotency index is `events_by_event_id (event_id, stream_id)` instead of
///   `events_by_stream_event_id (stream_id, event_id)`: with time-ordered ids (UUIDv7, what
///   core generates) every new entry lands on the index's last page instead of a random
///   page of its stream's range, one page fewer written per event. Format 1 is migrated on
///   open (see [`migrate_1_to_2`]).
/// - 3: a stream's events by version are found through the `stream_index` table, written
///   behind the log (see `stream_index`), instead of the index `events_by_stream_version`
///   that every event's insert updated; `index_state` says which positions the table
///   covers. Formats 1 and 2 are migrated on open (see [`migrate_2_to_3`]).
/// - 4: events carry a content type: the column `events.content_type`, `NULL` for JSON
///   (every event of an older format), else the content type of the opaque bytes in
///   `data`. Formats 1 to 3 are migrated on open (see [`migrate_3_to_4`]).
/// - 5: stream lifecycle: the `stream_lifecycle` table (soft deletes, tombstones, retention
///   settings, and how far a scavenge has erased each stream) and `scavenge_state` (events
///   erased so far and the head when they were, so that recovery accepts the gaps a
///   scavenge leaves in positions). Formats 1 to 4 are migrated on open (see
///   [`migrate_4_to_5`]).
/// - 6: imports (`EventStore::import`, what `concord copy` writes with): the column
///   `scavenge_state.import_holes` counts the positions an import left without an event
///   (a source's scavenge erased them), and `import_floors` holds, for a stream an import
///   started above version 1, the version before its first (its stream index starts
///   after it; its lifecycle row's `erased_through` says the same to readers), so that
///   recovery accepts both. Formats 1 to 5 are migrated on open (see
///   [`migrate_5_to_6`]).
/// - 7: a stream's past without events (`EventStore::import_stream_past`): a `streams`
///   row with an `import_floors` row and no stream index entry, whose last version is the
///   floor; and a head an import raised over holes (`EventStore::import_head`), kept in
///   `scavenge_state.head`. No table changes, so format 6 is migrated by setting the
///   number; the number keeps an older Concord, which would take such a stream for
///   corruption, from opening the file.
/// - 8: the idempotency, type and category indexes are the tables `event_ids`,
///   `type_index` and `category_index`, written behind the log as the stream index is
///   (see `deferred_index`), instead of SQLite's indexes `events_by_event_id`,
///   `events_by_type` and `events_by_category` that every commit updated: a one-event
///   commit writes one B-tree leaf of the log instead of four, and random event ids no
///   longer cost a leaf each. Formats 1 to 7 are migrated on open (see
///   [`migrate_7_to_8`]).
pub(crate) const FORMAT_VERSION: i64 = 8;

/// `PRAGMA application_id`: "CNCD", marks the file as Concord's.
pub(crate) const APPLICATION_ID: i64 = 0x434E_4344;

const SCHEMA: &str = r##"
CREATE TABLE streams (
    stream_id INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    category  TEXT NOT NULL
) STRICT;

CREATE TABLE events (
    position    INTEGER PRIMARY KEY,
    stream_id   INTEGER NOT NULL REFERENCES streams (stream_id),
    version     INTEGER NOT NULL,
    event_id    BLOB NOT NULL,
    type        TEXT NOT NULL,
    category    TEXT NOT NULL,
    data        BLOB NOT NULL,
    metadata    BLOB NOT NULL,
    tags        TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    content_type TEXT
) STRICT;

CREATE TABLE event_tags (
    tag      TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (tag, position)
) STRICT, WITHOUT ROWID;
"##;

/// The stream index and how far it goes (format 3), created with the schema or by the
/// migration from format 2.
const STREAM_INDEX: &str = "
CREATE TABLE stream_index (
    stream_id INTEGER NOT NULL,
    version   INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (stream_id, version)
) STRICT, WITHOUT ROWID;

CREATE TABLE index_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_through INTEGER NOT NULL
) STRICT;
";

/// The idempotency, type and category indexes (format 8), written behind the log like the
/// stream index (see `deferred_index`), created with the schema or by the migration from
/// format 7. (Before, they were SQLite indexes on `events`, updated inside every commit.)
const LOG_INDEXES: &str = "
CREATE TABLE event_ids (
    event_id  BLOB NOT NULL,
    stream_id INTEGER NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (event_id, stream_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE type_index (
    type     TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (type, position)
) STRICT, WITHOUT ROWID;

CREATE TABLE category_index (
    category TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (category, position)
) STRICT, WITHOUT ROWID;
";

/// Stream lifecycle (format 5), created with the schema or by the migration from format 4.
/// Keyed by name, so a stream may have retention settings before its first event (and so
/// before it has a `streams` row).
const LIFECYCLE: &str = "
CREATE TABLE stream_lifecycle (
    name            TEXT PRIMARY KEY,
    deleted_through INTEGER NOT NULL,
    tombstoned      INTEGER NOT NULL,
    max_count       INTEGER,
    max_age_seconds INTEGER,
    truncate_before INTEGER,
    erased_through  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE scavenge_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    erased_events INTEGER NOT NULL,
    head          INTEGER NOT NULL
) STRICT;

INSERT INTO scavenge_state VALUES (1, 0, 0);
";

/// Imports (format 6), added to the schema or by the migration from format 5.
const IMPORTS: &str = "
ALTER TABLE scavenge_state ADD COLUMN import_holes INTEGER NOT NULL DEFAULT 0;

CREATE TABLE import_floors (
    stream_id INTEGER PRIMARY KEY,
    floor     INTEGER NOT NULL
) STRICT;
";

/// The separator of the `tags` column. Tags cannot contain control characters, so it
/// cannot occur inside one.
pub(crate) const TAG_SEPARATOR: char = '\n';

/// Syncs the data file, its write-ahead log and the directory holding them, and returns
/// the log, opened for the syncer, and the data file. SQLite creates the log when a
/// connection first reads in WAL mode, so it exists once the store has been prepared.
///
/// The caller must keep the data file open until its last connection is closed: closing
/// any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
/// shared lock on the data file included. Without that lock another process's connection
/// (`sqlite3`, a backup tool, a monitoring query) takes itself for the last one when it
/// closes, checkpoints and deletes the write-ahead log under the store: a corrupt file.
pub(crate) fn sync_files(
    dir: &Path,
    file: &Path,
) -> Result<(std::fs::File, std::fs::File), EmbeddedError> {
    let mut wal_name = file.as_os_str().to_owned();
    wal_name.push("-wal");
    let wal_path = std::path::PathBuf::from(wal_name);
    let sync = |path: &Path, write: bool| {
        let failed = |source| EmbeddedError::Sync {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::options()
            .read(true)
            .write(write)
            .open(path)
            .map_err(failed)?;
        f.sync_all().map_err(failed)?;
        Ok::<_, EmbeddedError>(f)
    };
    let wal = sync(&wal_path, true)?;
    let data = sync(file, true)?;
    sync(dir, false)?;
    Ok((wal, data))
}

/// Opens a connection to `file` with the store's settings.
pub(crate) fn connect(file: &Path, writer: bool) -> Result<Connection, EmbeddedError> {
    let not_a_database = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => EmbeddedError::NotADatabase {
            path: file.to_path_buf(),
        },
        _ => EmbeddedError::Open {
            path: file.to_path_buf(),
            source: e,
        },
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(file, flags).map_err(not_a_database)?;
    // The first statement reads the header: this is where a foreign file shows up.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(not_a_database)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(EmbeddedError::Corrupted(format!(
            "{} refused write-ahead logging (journal mode {mode})",
            file.display()
        )));
    }
    // NORMAL, whatever the durability: SQLite does not sync the log at COMMIT (the syncer
    // thread does, off the writer's path, when the store promises `Durability::Full`), but
    // it still syncs the log's header when it restarts the log and both files around a
    // checkpoint, which is what keeps the file from corruption on a power loss.
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = OFF;
         PRAGMA busy_timeout = 10000;
         PRAGMA cache_size = -16384;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(not_a_database)?;
    if writer {
        // The writer checkpoints itself, after it has answered a batch (see `Writer`), so
        // no acknowledgement waits for a checkpoint.
        // A scavenge's deletes overwrite what they free (content in B-tree pages and freed
        // pages) instead of leaving it in the file.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA secure_delete = ON;")
            .map_err(EmbeddedError::sqlite("cannot configure the writer"))?;
    } else {
        conn.execute_batch("PRAGMA query_only = ON")
            .map_err(EmbeddedError::sqlite("cannot configure a reader"))?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Creates the schema in an empty file, or checks that an existing file is a Concord store
/// of this format.
pub(crate) fn prepare(conn: &mut Connection, file: &Path) -> Result<(), EmbeddedError> {
    let read = |pragma: &str| -> Result<i64, EmbeddedError> {
        conn.query_row(pragma, [], |r| r.get(0))
            .map_err(EmbeddedError::sqlite("cannot read the file header"))
    };
    let application_id = read("PRAGMA application_id")?;
    let user_version = read("PRAGMA user_version")?;
    let objects = read("SELECT COUNT(*) FROM sqlite_schema")?;
    if application_id == 0 && user_version == 0 && objects == 0 {
        // Before the first table: a new store gives pages a scavenge frees back to the file
        // system (`PRAGMA incremental_vacuum`); a migrated one reuses them.
        // The VACUUM applies it: opening in WAL mode already wrote the header, after which
        // the pragma alone is ignored (stores created before this never had it).
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM")
            .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        let tx = conn
            .transaction()
            .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        tx.execute_batch(SCHEMA)
            .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        tx.execute_batch(STREAM_INDEX)
            .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        tx.execute_batch(LOG_INDEXES)
            .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        tx.execute_batch("INSERT INTO index_state VALUES (1, 0)")
            .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        tx.execute_batch(LIFECYCLE)
            .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        tx.execute_batch(IMPORTS)
            .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {FORMAT_VERSION};"
        ))
        .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        tx.commit()
            .map_err(EmbeddedError::sqlite("cannot create the schema"))?;
        return Ok(());
    }
    if application_id != APPLICATION_ID {
        return Err(EmbeddedError::NotConcord {
            path: file.to_path_buf(),
        });
    }
    if user_version == 1 {
        migrate_1_to_2(conn, file)?;
    }
    if (1..=2).contains(&user_version) {
        migrate_2_to_3(conn, file)?;
    }
    if (1..=3).contains(&user_version) {
        migrate_3_to_4(conn, file)?;
    }
    if (1..=4).contains(&user_version) {
        migrate_4_to_5(conn, file)?;
    }
    if (1..=5).contains(&user_version) {
        migrate_5_to_6(conn, file)?;
    }
    if (1..=6).contains(&user_version) {
        conn.execute_batch("PRAGMA user_version = 7;")
            .map_err(EmbeddedError::sqlite(
                "cannot migrate the store from format 6 to format 7",
            ))?;
    }
    if (1..=7).contains(&user_version) {
        migrate_7_to_8(conn, file)?;
        return Ok(());
    }
    if user_version != FORMAT_VERSION {
        return Err(EmbeddedError::UnsupportedFormat {
            path: file.to_path_buf(),
            found: user_version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Rebuilds the idempotency index in its format-2 order, in one transaction (a crash
/// leaves format 1, and the next open migrates again). Takes about as long as reading every
/// event id once.
fn migrate_1_to_2(conn: &mut Connection, file: &Path) -> Result<(), EmbeddedError> {
    let context = "cannot migrate the store from format 1 to format 2";
    tracing::info!(file = %file.display(), "migrating the store from format 1 to format 2 (rebuilding the event id index)");
    let tx = conn.transaction().map_err(EmbeddedError::sqlite(context))?;
    tx.execute_batch(
        "CREATE UNIQUE INDEX events_by_event_id ON events (event_id, stream_id);
         DROP INDEX events_by_stream_event_id;
         PRAGMA user_version = 2;",
    )
    .map_err(EmbeddedError::sqlite(context))?;
    tx.commit().map_err(EmbeddedError::sqlite(context))
}

/// Moves the stream index from `events_by_stream_version` into the `stream_index` table,
/// complete (`indexed_through` = the head), in one transaction (a crash leaves format 2).
/// Takes about as long as reading the old index once.
fn migrate_2_to_3(conn: &mut Connection, file: &Path) -> Result<(), EmbeddedError> {
    let context = "cannot migrate the store from format 2 to format 3";
    tracing::info!(file = %file.display(), "migrating the store from format 2 to format 3 (moving the stream index into its table)");
    let tx = conn.transaction().map_err(EmbeddedError::sqlite(context))?;
    tx.execute_batch(STREAM_INDEX)
        .map_err(EmbeddedError::sqlite(context))?;
    tx.execute_batch(
        "INSERT INTO stream_index (stream_id, version, position)
             SELECT stream_id, version, position FROM events ORDER BY stream_id, version;
         INSERT INTO index_state VALUES (1, (SELECT COALESCE(MAX(position), 0) FROM events));
         DROP INDEX events_by_stream_version;
         PRAGMA user_version = 3;",
    )
    .map_err(EmbeddedError::sqlite(context))?;
    tx.commit().map_err(EmbeddedError::sqlite(context))
}

/// Adds the `content_type` column, `NULL` (JSON) for every event so far: every event of an
/// older format is JSON. SQLite adds a nullable column without rewriting a row, so this
/// takes no time whatever the store's size; one transaction (a crash leaves format 3).
fn migrate_3_to_4(conn: &mut Connection, file: &Path) -> Result<(), EmbeddedError> {
    let context = "cannot migrate the store from format 3 to format 4";
    tracing::info!(file = %file.display(), "migrating the store from format 3 to format 4 (events get a content type)");
    let tx = conn.transaction().map_err(EmbeddedError::sqlite(context))?;
    tx.execute_batch(
        "ALTER TABLE events ADD COLUMN content_type TEXT;
         PRAGMA user_version = 4;",
    )
    .map_err(EmbeddedError::sqlite(context))?;
    tx.commit().map_err(EmbeddedError::sqlite(context))
}

/// Adds the lifecycle tables, empty: no stream of an older format was deleted or has
/// retention settings. Creates two tables whatever the store's size; one transaction (a
/// crash leaves format 4).
fn migrate_4_to_5(conn: &mut Connection, file: &Path) -> Result<(), EmbeddedError> {
    let context = "cannot migrate the store from format 4 to format 5";
    tracing::info!(file = %file.display(), "migrating the store from format 4 to format 5 (stream lifecycle)");
    let tx = conn.transaction().map_err(EmbeddedError::sqlite(context))?;
    tx.execute_batch(LIFECYCLE)
        .map_err(EmbeddedError::sqlite(context))?;
    tx.execute_batch("PRAGMA user_version = 5;")
        .map_err(EmbeddedError::sqlite(context))?;
    tx.commit().map_err(EmbeddedError::sqlite(context))
}

/// Adds `scavenge_state.import_holes` and `import_floors` (0 and empty: no older store was
/// imported into). One
/// transaction (a crash leaves format 5).
fn migrate_5_to_6(conn: &mut Connection, file: &Path) -> Result<(), EmbeddedError> {
    let context = "cannot migrate the store from format 5 to format 6";
    tracing::info!(file = %file.display(), "migrating the store from format 5 to format 6 (imports)");
    let tx = conn.transaction().map_err(EmbeddedError::sqlite(context))?;
    // A file a test made older by hand may have the pieces already.
    let has_holes: bool = tx
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('scavenge_state') WHERE name = 'import_holes'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(EmbeddedError::sqlite(context))?
        > 0;
    if !has_holes {
        tx.execute_batch(
            "ALTER TABLE scavenge_state ADD COLUMN import_holes INTEGER NOT NULL DEFAULT 0;",
        )
        .map_err(EmbeddedError::sqlite(context))?;
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS import_floors (
            stream_id INTEGER PRIMARY KEY,
            floor     INTEGER NOT NULL
        ) STRICT;",
    )
    .map_err(EmbeddedError::sqlite(context))?;
    tx.execute_batch("PRAGMA user_version = 6;")
        .map_err(EmbeddedError::sqlite(context))?;
    tx.commit().map_err(EmbeddedError::sqlite(context))
}

/// Positions the format 7 -> 8 migration copies per step; it logs its progress after each
/// step of a store larger than one.
const MIGRATION_STEP: i64 = 1_000_000;

/// What each step of the format 7 -> 8 migration runs for the positions in `(?1, ?2]`. Ids
/// are sorted first: random ones would otherwise land on random leaves.
const MIGRATION_STEP_SQL: [&str; 3] = [
    "INSERT INTO event_ids (event_id, stream_id, version)
     SELECT event_id, stream_id, version FROM events WHERE position > ?1 AND position <= ?2
     ORDER BY event_id, stream_id",
    // In position order: each type's (each category's) entries go to the end of its range.
    "INSERT INTO type_index (type, position)
     SELECT type, position FROM events WHERE position > ?1 AND position <= ?2",
    "INSERT INTO category_index (category, position)
     SELECT category, position FROM events WHERE position > ?1 AND position <= ?2",
];

/// Moves the idempotency, type and category indexes out of SQLite's indexes on `events`
/// into their tables, complete up to `indexed_through` (recovery rebuilds the entries
/// after it, as it does the stream index's), in one transaction (a crash leaves format 7,
/// and the next open migrates again), a million positions at a time with a line of
/// progress after each (a million events took 2 s here).
fn migrate_7_to_8(conn: &mut Connection, file: &Path) -> Result<(), EmbeddedError> {
    migrate_7_to_8_in_steps(conn, file, MIGRATION_STEP)
}

fn migrate_7_to_8_in_steps(
    conn: &mut Connection,
    file: &Path,
    step: i64,
) -> Result<(), EmbeddedError> {
    let context = "cannot migrate the store from format 7 to format 8";
    let tx = conn.transaction().map_err(EmbeddedError::sqlite(context))?;
    let through: i64 = tx
        .query_row(
            "SELECT indexed_through FROM index_state WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .map_err(EmbeddedError::sqlite(context))?;
    tracing::info!(file = %file.display(), positions = through, "migrating the store from format 7 to format 8 (the id, type and category indexes move behind the log)");
    tx.execute_batch(LOG_INDEXES)
        .map_err(EmbeddedError::sqlite(context))?;
    let mut done = 0;
    while done < through {
        let to = done.saturating_add(step.max(1)).min(through);
        for sql in MIGRATION_STEP_SQL {
            tx.execute(sql, (done, to))
                .map_err(EmbeddedError::sqlite(context))?;
        }
        done = to;
        if through > step {
            tracing::info!(
                done,
                of = through,
                "migrating to format 8: index entries of {done} of {through} positions copied"
            );
        }
    }
    tx.execute_batch(
        "DROP INDEX IF EXISTS events_by_event_id;
         DROP INDEX IF EXISTS events_by_type;
         DROP INDEX IF EXISTS events_by_category;
         PRAGMA user_version = 8;",
    )
    .map_err(EmbeddedError::sqlite(context))?;
    tx.commit().map_err(EmbeddedError::sqlite(context))
}

/// A stream's lifecycle as stored: the rules' state and how far a scavenge erased it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct LifecycleRow {
    pub(crate) lifecycle: StreamLifecycle,
    /// Every version up to this one is erased (a scavenge erases a prefix of a stream).
    pub(crate) erased_through: u64,
}

impl LifecycleRow {
    /// The first version a read of a stream whose last version is `last` may show and
    /// whose event is still stored.
    pub(crate) fn floor(&self, last: Version) -> Version {
        self.lifecycle
            .first_kept(last)
            .max(Version(self.erased_through.saturating_add(1)))
    }
}

/// The stored lifecycle of `stream` (the default when it has none).
pub(crate) fn lifecycle_row(
    conn: &Connection,
    stream: &str,
) -> Result<LifecycleRow, EmbeddedError> {
    let context = "cannot read a stream's lifecycle";
    let mut stmt = conn
        .prepare_cached(
            "SELECT deleted_through, tombstoned, max_count, max_age_seconds, truncate_before, erased_through
             FROM stream_lifecycle WHERE name = ?1",
        )
        .map_err(EmbeddedError::sqlite(context))?;
    let row = stmt
        .query_row([stream], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .optional()
        .map_err(EmbeddedError::sqlite(context))?;
    let Some((deleted, tombstoned, max_count, max_age, truncate, erased)) = row else {
        return Ok(LifecycleRow::default());
    };
    let opt = |what: &str, v: Option<i64>| v.map(|n| from_sql(what, n)).transpose();
    Ok(LifecycleRow {
        lifecycle: StreamLifecycle {
            deleted_through: Version(from_sql("version", deleted)?),
            tombstoned: tombstoned != 0,
            metadata: StreamMetadata {
                max_count: opt("max_count", max_count)?,
                max_age_seconds: opt("max_age_seconds", max_age)?,
                truncate_before: opt("version", truncate)?.map(Version),
            },
        },
        erased_through: from_sql("version", erased)?,
    })
}

/// Every stored lifecycle, by stream name (for the writer, on open).
pub(crate) fn lifecycle_rows(
    conn: &Connection,
) -> Result<HashMap<StreamName, LifecycleRow>, EmbeddedError> {
    let context = "cannot read the streams' lifecycles";
    let names: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM stream_lifecycle")
            .map_err(EmbeddedError::sqlite(context))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .map_err(EmbeddedError::sqlite(context))?;
        rows.collect::<Result<_, _>>()
            .map_err(EmbeddedError::sqlite(context))?
    };
    let mut out = HashMap::new();
    for name in names {
        let stream = StreamName::stored(name.as_str()).map_err(|e| {
            EmbeddedError::Corrupted(format!("stored stream name {name:?} is invalid: {e}"))
        })?;
        out.insert(stream, lifecycle_row(conn, &name)?);
    }
    Ok(out)
}

/// A stream as the writer tracks it: its row id and current version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct StreamState {
    /// `streams.stream_id`.
    pub(crate) id: i64,
    /// The stream's current version.
    pub(crate) version: u64,
}

/// What recovery found: the head, every stream's state and the stream index entries not
/// in its table.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) head: u64,
    pub(crate) streams: HashMap<StreamName, StreamState>,
    pub(crate) index: DeferredIndex,
    pub(crate) lifecycles: HashMap<StreamName, LifecycleRow>,
}

/// Checks what SQLite's own recovery cannot: positions run 1..=head without a gap, every
/// stream's versions run 1..=version without a gap (the indexed ones in the stream index,
/// then the events after `indexed_through`), every event belongs to a stream. Then rebuilds
/// the writer's version map and the unflushed stream index entries. Costs one pass over the
/// stream index and a read of the events it does not cover yet.
pub(crate) fn recover(conn: &Connection) -> Result<Recovered, EmbeddedError> {
    let context = "cannot read the store during recovery";
    let (erased, scavenged_head, holes): (i64, i64, i64) = conn
        .query_row(
            "SELECT erased_events, head, import_holes FROM scavenge_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(EmbeddedError::sqlite(context))?;
    // Streams an import started above version 1: their stream index starts after this.
    let floors: HashMap<i64, i64> = {
        let mut stmt = conn
            .prepare("SELECT stream_id, floor FROM import_floors")
            .map_err(EmbeddedError::sqlite(context))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(EmbeddedError::sqlite(context))?;
        rows.collect::<Result<_, _>>()
            .map_err(EmbeddedError::sqlite(context))?
    };
    let (count, first, last): (i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COALESCE(MIN(position), 1), COALESCE(MAX(position), 0) FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(EmbeddedError::sqlite(context))?;
    // A scavenge leaves gaps (the erased events) and may have erased the last events.
    let last = last.max(scavenged_head);
    if count + erased + holes != last || (erased == 0 && holes == 0 && first != 1) {
        return Err(EmbeddedError::Corrupted(format!(
            "positions are not gap-free: {count} events, {erased} erased by scavenges and {holes} left by imports, but positions run from {first} to {last}"
        )));
    }
    let indexed_through: i64 = conn
        .query_row(
            "SELECT indexed_through FROM index_state WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .map_err(EmbeddedError::sqlite(context))?;
    if !(0..=last).contains(&indexed_through) {
        return Err(EmbeddedError::Corrupted(format!(
            "the stream index claims to cover positions up to {indexed_through}, but the log ends at {last}"
        )));
    }
    // stream id → (events, version)
    let mut versions: HashMap<i64, (i64, i64)> = HashMap::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT stream_id, COUNT(*), MIN(version), MAX(version), MAX(position)
                 FROM stream_index GROUP BY stream_id",
            )
            .map_err(EmbeddedError::sqlite(context))?;
        let mut rows = stmt.query([]).map_err(EmbeddedError::sqlite(context))?;
        while let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))? {
            let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, i64, i64, i64, i64)> {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            };
            let (id, n, min, max, max_position) =
                read(row).map_err(EmbeddedError::sqlite(context))?;
            // From version 1, or from where an import started the stream.
            let starts = min == 1 || floors.get(&id).is_some_and(|f| min == f + 1);
            if !starts || max - min + 1 != n || max_position > indexed_through {
                return Err(EmbeddedError::Corrupted(format!(
                    "the stream index of stream id {id} is not consecutive from its first version within the indexed positions: {n} entries, versions {min} to {max}, last position {max_position}"
                )));
            }
            versions.insert(id, (n, max));
        }
    }
    let index = DeferredIndex::default();
    {
        let mut stmt = conn
            .prepare("SELECT position, stream_id, version, event_id, type, category FROM events WHERE position > ?1 ORDER BY position")
            .map_err(EmbeddedError::sqlite(context))?;
        let mut rows = stmt
            .query([indexed_through])
            .map_err(EmbeddedError::sqlite(context))?;
        while let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))? {
            let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, i64, i64)> {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            };
            let (position, id, version) = read(row).map_err(EmbeddedError::sqlite(context))?;
            let event_id = row
                .get_ref(3)
                .map_err(EmbeddedError::sqlite(context))?
                .as_blob()
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(|| {
                    EmbeddedError::Corrupted(format!(
                        "the event at position {position} has no valid event id"
                    ))
                })?;
            let text = |i: usize, what: &str| -> Result<&str, EmbeddedError> {
                row.get_ref(i)
                    .map_err(EmbeddedError::sqlite(context))?
                    .as_str()
                    .map_err(|_| {
                        EmbeddedError::Corrupted(format!(
                            "the event at position {position} has no valid {what}"
                        ))
                    })
            };
            let (event_type, category) = (text(4, "type")?, text(5, "category")?);
            let state = versions.entry(id).or_insert((0, 0));
            // A stream's first event is version 1, or the first an import wrote.
            let expected = if state.0 == 0 {
                floors.get(&id).map_or(1, |f| f + 1)
            } else {
                state.1 + 1
            };
            if version != expected {
                return Err(EmbeddedError::Corrupted(format!(
                    "the event at position {position} has version {version} in stream id {id}, whose previous version is {}",
                    state.1
                )));
            }
            *state = (state.0 + 1, version);
            index.record([Entry {
                stream_id: id,
                version: from_sql("version", version)?,
                position: from_sql("position", position)?,
                event_id,
                event_type,
                category,
            }]);
        }
    }
    let mut streams = HashMap::new();
    let mut events_in_streams: i64 = 0;
    let mut stmt = conn
        .prepare("SELECT stream_id, name FROM streams")
        .map_err(EmbeddedError::sqlite(context))?;
    let mut rows = stmt.query([]).map_err(EmbeddedError::sqlite(context))?;
    while let Some(row) = rows.next().map_err(EmbeddedError::sqlite(context))? {
        let id: i64 = row.get(0).map_err(EmbeddedError::sqlite(context))?;
        let name: String = row.get(1).map_err(EmbeddedError::sqlite(context))?;
        let stream = StreamName::stored(name.as_str()).map_err(|e| {
            EmbeddedError::Corrupted(format!("stored stream name {name:?} is invalid: {e}"))
        })?;
        // A stream without any stream index entry is a past an import wrote (format 7):
        // its last version is its floor.
        let floor_only = floors.get(&id).map(|&f| (0, f));
        let Some((n, version)) = versions.get(&id).copied().or(floor_only) else {
            return Err(EmbeddedError::Corrupted(format!(
                "stream {stream} has no events"
            )));
        };
        events_in_streams += n;
        streams.insert(
            stream,
            StreamState {
                id,
                version: from_sql("version", version)?,
            },
        );
    }
    // The stream index keeps the entries of erased events: they hold no event data, and
    // keep every stream's versions consecutive from 1 (so its last version, which a
    // delete never lowers).
    if events_in_streams != count + erased {
        return Err(EmbeddedError::Corrupted(format!(
            "{} of {count} events belong to no stream",
            count + erased - events_in_streams
        )));
    }
    Ok(Recovered {
        head: from_sql("position", last)?,
        streams,
        index,
        lifecycles: lifecycle_rows(conn)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A format-7 file with `n` events of two streams and two types, its stream index
    /// complete through `indexed_through`.
    fn format_7_store(file: &Path, n: i64, indexed_through: i64) -> Connection {
        let mut conn = connect(file, true).unwrap();
        prepare(&mut conn, file).unwrap();
        conn.execute_batch(
            "DROP TABLE event_ids;
             DROP TABLE type_index;
             DROP TABLE category_index;
             CREATE UNIQUE INDEX events_by_event_id ON events (event_id, stream_id);
             CREATE INDEX events_by_type ON events (type);
             CREATE INDEX events_by_category ON events (category);
             INSERT INTO streams VALUES (1, 'a-1', 'a'), (2, 'b-1', 'b');",
        )
        .unwrap();
        for p in 1..=n {
            let (stream, version) = (p % 2 + 1, (p + 1) / 2);
            conn.execute(
                "INSERT INTO events VALUES (?1, ?2, ?3, randomblob(16), ?4, ?5, x'7b7d', x'7b7d', '', 0, NULL)",
                (
                    p,
                    stream,
                    version,
                    if p % 3 == 0 { "X" } else { "Y" },
                    if stream == 1 { "a" } else { "b" },
                ),
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO stream_index SELECT stream_id, version, position FROM events WHERE position <= ?1",
            [indexed_through],
        )
        .unwrap();
        conn.execute(
            "UPDATE index_state SET indexed_through = ?1 WHERE id = 1",
            [indexed_through],
        )
        .unwrap();
        conn.execute_batch("PRAGMA user_version = 7").unwrap();
        conn
    }

    #[test]
    fn the_format_7_migration_copies_every_entry_through_indexed_through_step_by_step() {
        for (step, indexed_through) in [(2, 7), (3, 6), (1_000_000, 7), (4, 0)] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("migrate.db");
            let mut conn = format_7_store(&file, 9, indexed_through);
            migrate_7_to_8_in_steps(&mut conn, &file, step).unwrap();
            let counts: (i64, i64, i64, i64, i64, i64) = conn
                .query_row(
                    "SELECT (SELECT user_version FROM pragma_user_version),
                            (SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE 'events_by_%'),
                            (SELECT COUNT(*) FROM event_ids e JOIN events l
                                 ON l.event_id = e.event_id AND l.stream_id = e.stream_id AND l.version = e.version),
                            (SELECT COUNT(*) FROM type_index t JOIN events l
                                 ON l.position = t.position AND l.type = t.type),
                            (SELECT COUNT(*) FROM category_index c JOIN events l
                                 ON l.position = c.position AND l.category = c.category),
                            (SELECT COALESCE(MAX(position), 0) FROM type_index)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .unwrap();
            let n = indexed_through;
            assert_eq!(
                counts,
                (8, 0, n, n, n, n),
                "step {step}, indexed through {n}"
            );
            // The events after `indexed_through` are recovery's to rebuild, as before.
            let recovered = recover(&conn).unwrap();
            assert_eq!(recovered.index.unflushed() as i64, 9 - n);
        }
    }
}
