//! Where the read models live: a SQLite file ([`ProjectionDb::Sqlite`], one server's own)
//! or the store's PostgreSQL database ([`ProjectionDb::Postgres`], shared by every server
//! on it), and one connection type over both, so that the runner and the host are written
//! once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use concord_core::{BoxError, Position, RecordedEvent, Version};
use rusqlite::Connection;

use crate::batch::Committed;
use crate::db;
use crate::error::{Failure, HandlerError, ProjectionError, SkippedEvent};
use crate::pg::{self, PgConn};
use crate::projection::{Projection, StreamRow};

/// The projection database.
#[derive(Clone, Debug)]
pub enum ProjectionDb {
    /// A SQLite file, created (with its directory) when missing. Every process that opens
    /// it shares it; each runs the projections it hosts.
    Sqlite(PathBuf),
    /// Tables in a PostgreSQL schema (the store's, for a PostgreSQL store): every server
    /// on that database shares the read models, and one at a time runs each projection.
    Postgres(PostgresDb),
}

impl From<PathBuf> for ProjectionDb {
    fn from(path: PathBuf) -> Self {
        ProjectionDb::Sqlite(path)
    }
}

impl From<&PathBuf> for ProjectionDb {
    fn from(path: &PathBuf) -> Self {
        ProjectionDb::Sqlite(path.clone())
    }
}

impl From<&Path> for ProjectionDb {
    fn from(path: &Path) -> Self {
        ProjectionDb::Sqlite(path.to_path_buf())
    }
}

/// A SQLite file's path (a PostgreSQL database is a [`PostgresDb`], never a string).
impl From<&str> for ProjectionDb {
    fn from(path: &str) -> Self {
        ProjectionDb::Sqlite(PathBuf::from(path))
    }
}

impl From<PostgresDb> for ProjectionDb {
    fn from(db: PostgresDb) -> Self {
        ProjectionDb::Postgres(db)
    }
}

impl std::fmt::Display for ProjectionDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProjectionDb::Sqlite(path) => write!(f, "{}", path.display()),
            ProjectionDb::Postgres(db) => write!(f, "{db}"),
        }
    }
}

/// A PostgreSQL projection database: the driver's settings (a store URL's, with its
/// timeouts) and the schema that holds the tables.
#[derive(Clone)]
pub struct PostgresDb {
    pub(crate) config: std::sync::Arc<postgres::Config>,
    pub(crate) schema: String,
}

impl PostgresDb {
    /// The read models in `schema` of the database `config` connects to.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] for a schema name that would need quoting: 1-63
    /// lower-case ASCII letters, digits or `_`, not starting with a digit (as the store's).
    pub fn new(config: impl Into<postgres::Config>, schema: &str) -> Result<Self, ProjectionError> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !schema.as_bytes().first().is_some_and(u8::is_ascii_digit);
        let db = PostgresDb {
            config: std::sync::Arc::new(config.into()),
            schema: schema.to_owned(),
        };
        if !valid {
            return Err(ProjectionError::Database {
                database: db.to_string(),
                doing: "checking the schema name",
                source: "a schema is 1-63 lower-case ASCII letters, digits or `_`, not starting with a digit".into(),
            });
        }
        Ok(db)
    }
}

impl std::fmt::Display for PostgresDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .zip(
                self.config
                    .get_ports()
                    .iter()
                    .chain(std::iter::repeat(&5432)),
            )
            .map(|(host, port)| match host {
                postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
            })
            .collect();
        write!(f, "postgres {} schema {}", hosts.join(","), self.schema)
    }
}

impl std::fmt::Debug for PostgresDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresDb({self})") // Never the password.
    }
}

/// A connection to the projection database.
#[derive(Debug)]
pub(crate) enum Conn {
    Sqlite(Connection),
    Postgres(Box<PgConn>),
}

impl Conn {
    pub(crate) fn open(db: &ProjectionDb) -> Result<Conn, ProjectionError> {
        let fail = |source| ProjectionError::Database {
            database: db.to_string(),
            doing: "opening it",
            source,
        };
        match db {
            ProjectionDb::Sqlite(path) => db::open(path).map(Conn::Sqlite),
            ProjectionDb::Postgres(pg) => pg::open(pg)
                .map(|c| Conn::Postgres(Box::new(c)))
                .map_err(fail),
        }
    }

    /// Whether the connection is gone and must be opened again.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Conn::Sqlite(_) => false,
            Conn::Postgres(c) => c.is_closed(),
        }
    }

    pub(crate) fn create(&mut self, projection: &dyn Projection) -> Result<(), BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(projection.create(c)?),
            Conn::Postgres(c) => c.create(projection),
        }
    }

    pub(crate) fn checkpoint(
        &mut self,
        name: &str,
    ) -> Result<(Position, Option<Failure>), BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(db::checkpoint(c, name)?),
            Conn::Postgres(c) => c.checkpoint(name),
        }
    }

    pub(crate) fn skipped(&mut self, name: &str) -> Result<(u64, Vec<SkippedEvent>), BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(db::skipped(c, name)?),
            Conn::Postgres(c) => c.skipped(name),
        }
    }

    /// Takes the lead of a projection: its checkpoint when this connection may run it,
    /// `None` while another server's runner leads it. A SQLite file has no leader: each
    /// process runs what it hosts, and the checkpoint's compare-and-set keeps them apart.
    pub(crate) fn lead(&mut self, name: &str) -> Result<Option<Position>, BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(Some(db::checkpoint(c, name)?.0)),
            Conn::Postgres(c) => c.lead(name),
        }
    }

    /// The checkpoint of a projection another server leads, after waiting up to `wait`
    /// for it to move.
    pub(crate) fn follow(&mut self, name: &str, wait: Duration) -> Result<Position, BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(db::checkpoint(c, name)?.0),
            Conn::Postgres(c) => c.follow(name, wait),
        }
    }

    pub(crate) fn commit_batch(
        &mut self,
        projection: &dyn Projection,
        from: Position,
        events: &[RecordedEvent],
        to: Position,
    ) -> Result<Committed, BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(db::commit_batch(c, projection, from, events, to)?),
            Conn::Postgres(c) => c.commit_batch(projection, from, events, to),
        }
    }

    pub(crate) fn reset(&mut self, projection: &dyn Projection) -> Result<(), BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(db::reset(c, projection)?),
            Conn::Postgres(c) => c.reset(projection),
        }
    }

    pub(crate) fn forget(
        &mut self,
        projection: &dyn Projection,
        stream: &str,
        version: Version,
        through: Version,
    ) -> Result<bool, BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(db::forget(c, projection, stream, version, through)?),
            Conn::Postgres(c) => c.forget(projection, stream, version, through),
        }
    }

    pub(crate) fn refold(
        &mut self,
        projection: &dyn Projection,
        stream: &str,
        version: Version,
        through: Version,
        events: &[RecordedEvent],
    ) -> Result<bool, HandlerError> {
        match self {
            Conn::Sqlite(c) => db::refold(c, projection, stream, version, through, events),
            Conn::Postgres(c) => c.refold(projection, stream, version, through, events),
        }
    }

    pub(crate) fn row(
        &mut self,
        projection: &dyn Projection,
        key: &str,
    ) -> Result<(Position, Option<serde_json::Value>), BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(db::row(c, projection, key)?),
            Conn::Postgres(c) => c.row(projection, key),
        }
    }

    pub(crate) fn stream_rows(
        &mut self,
        projection: &dyn Projection,
    ) -> Result<Vec<StreamRow>, BoxError> {
        match self {
            Conn::Sqlite(c) => Ok(projection.stream_rows(c)?),
            Conn::Postgres(c) => c.stream_rows(projection),
        }
    }
}
