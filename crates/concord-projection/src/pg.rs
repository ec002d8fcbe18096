//! The projection database in PostgreSQL: the read models and their checkpoints in the
//! store's own database and schema, so that every Concord server on that database answers
//! from the same rows, and one batch moves read model and checkpoint together.
//!
//! - Tables: `projection_checkpoints`, `projection_skipped`, and each projection's own
//!   (`projection_<name>...`, see [`crate::PgProjection`]), beside the store's `concord_...`.
//! - **One runner per projection across servers.** A runner leads its projection while its
//!   session holds the advisory lock `concord-projection:<schema>:<name>`; the lock goes
//!   with the session, so when that server dies (or loses its connection) another server's
//!   runner takes it at its next try, and a lost session cannot commit anything more,
//!   because the batches go over the session that held the lock. The others **follow**: they
//!   `LISTEN` on `concord_projections`, which every commit notifies, and re-read the
//!   checkpoint, so read-your-writes waits on every server are woken by the leader's commits.
//! - Every transaction that writes locks the projection's checkpoint row first (`FOR
//!   UPDATE`), as SQLite's immediate transactions serialise writers: a batch, a rebuild's
//!   reset and a reconcile's forget never interleave, and the checkpoint still moves by
//!   compare-and-set, so even two leaders (which the lock rules out) could not apply an
//!   event twice.
//! - Calls are blocking (the `postgres` crate), made from the runner's and host's blocking
//!   threads as SQLite's are. The connection settings come from the store URL, with its
//!   statement timeout.

use std::collections::HashSet;
use std::time::Duration;

use concord_core::{BoxError, Position, RecordedEvent, Version};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, IsolationLevel, NoTls, Transaction};

use crate::batch::{self, Committed};
use crate::database::PostgresDb;
use crate::error::{Failure, HandlerError, SkippedEvent};
use crate::projection::{PgProjection, Projection, StreamRow};

/// The channel every commit notifies and every follower listens on.
const CHANNEL: &str = "concord_projections";

/// A session on the projection database.
pub(crate) struct PgConn {
    /// Always `Some` but in `drop`.
    client: Option<Client>,
    schema: String,
    /// The projections this session leads (holds the advisory lock of).
    leading: HashSet<String>,
    listening: bool,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing a client blocks on its own runtime, which panics on a thread that runs
        // async tasks; a session is dropped there when a runner or host ends.
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("concord-projection-close".into())
                    .spawn(move || drop(client));
            } else {
                drop(client);
            }
        }
    }
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("schema", &self.schema)
            .field("leading", &self.leading)
            .finish_non_exhaustive()
    }
}

fn postgres_of(projection: &dyn Projection) -> Result<&dyn PgProjection, BoxError> {
    projection.postgres().ok_or_else(|| {
        format!(
            "projection {} has no PostgreSQL read model",
            projection.name()
        )
        .into()
    })
}

/// Opens a session and creates the checkpoint tables (under a lock, so that servers
/// starting together do not race to create them).
pub(crate) fn open(db: &PostgresDb) -> Result<PgConn, BoxError> {
    let mut client = db.config.connect(NoTls)?;
    let schema = db.schema.clone();
    // A leader whose machine vanished (no FIN) keeps its lock until the server gives up on
    // its session: keepalives on the server's side make that ~25 s, not the default hours.
    client.batch_execute(&format!(
        "SET search_path TO {schema}; SET tcp_keepalives_idle = 10; \
         SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
    ))?;
    let mut tx = client.transaction()?;
    lock_ddl(&mut tx, &schema)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS projection_checkpoints (
            name text PRIMARY KEY,
            position bigint NOT NULL,
            failure text
         );
         CREATE TABLE IF NOT EXISTS projection_skipped (
            name text NOT NULL,
            position bigint NOT NULL,
            stream text NOT NULL,
            version bigint NOT NULL,
            event_type text NOT NULL,
            error text NOT NULL,
            PRIMARY KEY (name, position)
         )"
    ))?;
    tx.commit()?;
    Ok(PgConn {
        client: Some(client),
        schema,
        leading: HashSet::new(),
        listening: false,
    })
}

fn lock_ddl(tx: &mut Transaction<'_>, schema: &str) -> Result<(), postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('concord-projections-ddl:' || $1::text, 0))",
        &[&schema],
    )?;
    Ok(())
}

/// The session's client (`None` only while it is dropped).
fn client(client: &mut Option<Client>) -> Result<&mut Client, BoxError> {
    client
        .as_mut()
        .ok_or_else(|| "the projection database session is closed".into())
}

fn to_sql(p: Position) -> i64 {
    i64::try_from(p.get()).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Locks the projection's checkpoint row (creating it at 0) and returns its position.
fn lock_checkpoint(tx: &mut Transaction<'_>, name: &str) -> Result<Position, postgres::Error> {
    // One statement: a no-op update of an existing row locks it and returns it.
    let row = tx.query_one(
        "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0)
         ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING position",
        &[&name],
    )?;
    Ok(Position(from_sql(row.try_get(0)?)))
}

fn notify(tx: &mut Transaction<'_>, schema: &str, name: &str) -> Result<(), postgres::Error> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &format!("{schema}.{name}")],
    )?;
    Ok(())
}

impl PgConn {
    /// Whether the session is gone (the server closed it or the network failed): drop it and
    /// open another, which must win the lead again.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }

    /// Creates a projection's tables.
    pub(crate) fn create(&mut self, projection: &dyn Projection) -> Result<(), BoxError> {
        let pg = postgres_of(projection)?;
        let mut tx = client(&mut self.client)?.transaction()?;
        lock_ddl(&mut tx, &self.schema)?;
        pg.create(&mut tx)?;
        tx.commit()?;
        Ok(())
    }

    /// A projection's stored checkpoint (0 when it never ran) and its failure.
    pub(crate) fn checkpoint(
        &mut self,
        name: &str,
    ) -> Result<(Position, Option<Failure>), BoxError> {
        let row = client(&mut self.client)?.query_opt(
            "SELECT position, failure FROM projection_checkpoints WHERE name = $1",
            &[&name],
        )?;
        Ok(match row {
            None => (Position::ZERO, None),
            Some(r) => {
                let failure: Option<String> = r.try_get(1)?;
                (
                    Position(from_sql(r.try_get(0)?)),
                    failure.and_then(|f| serde_json::from_str(&f).ok()),
                )
            }
        })
    }

    /// How many events the projection skipped, and the latest, newest first.
    pub(crate) fn skipped(&mut self, name: &str) -> Result<(u64, Vec<SkippedEvent>), BoxError> {
        let count: i64 = client(&mut self.client)?
            .query_one(
                "SELECT count(*) FROM projection_skipped WHERE name = $1",
                &[&name],
            )?
            .try_get(0)?;
        let latest = client(&mut self.client)?
            .query(
                "SELECT position, stream, version, event_type, error FROM projection_skipped
                 WHERE name = $1 ORDER BY position DESC LIMIT $2",
                &[&name, &(batch::SKIPPED_LISTED as i64)],
            )?
            .iter()
            .map(|r| {
                Ok(SkippedEvent {
                    position: Position(from_sql(r.try_get(0)?)),
                    stream: r.try_get(1)?,
                    version: from_sql(r.try_get(2)?),
                    event_type: r.try_get(3)?,
                    error: r.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()?;
        Ok((from_sql(count), latest))
    }

    /// Takes the lead of `name` if no other session holds it; its checkpoint when it does.
    pub(crate) fn lead(&mut self, name: &str) -> Result<Option<Position>, BoxError> {
        if !self.leading.contains(name) {
            let won: bool = client(&mut self.client)?
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended('concord-projection:' || $1::text || ':' || $2::text, 0))",
                    &[&self.schema, &name],
                )?
                .try_get(0)?;
            if !won {
                return Ok(None);
            }
            self.leading.insert(name.to_owned());
            if self.listening {
                client(&mut self.client)?.batch_execute(&format!("UNLISTEN {CHANNEL}"))?;
                self.listening = false;
            }
        }
        Ok(Some(self.checkpoint(name)?.0))
    }

    /// Follows a projection another session leads: waits up to `wait` for a commit's
    /// notification, then reads the checkpoint.
    pub(crate) fn follow(&mut self, name: &str, wait: Duration) -> Result<Position, BoxError> {
        if !self.listening {
            client(&mut self.client)?.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            self.listening = true;
        } else {
            let mut notifications = client(&mut self.client)?.notifications();
            if notifications.timeout_iter(wait).next()?.is_some() {
                // Take what else came with it, so that one read answers them all.
                while notifications.iter().next()?.is_some() {}
            }
        }
        Ok(self.checkpoint(name)?.0)
    }

    /// As [`crate::db::commit_batch`], in PostgreSQL.
    pub(crate) fn commit_batch(
        &mut self,
        projection: &dyn Projection,
        from: Position,
        events: &[RecordedEvent],
        to: Position,
    ) -> Result<Committed, BoxError> {
        let pg = postgres_of(projection)?;
        let name = projection.name();
        let mut skips: Vec<(usize, String)> = Vec::new();
        loop {
            let mut tx = client(&mut self.client)?.transaction()?;
            let stored = lock_checkpoint(&mut tx, name)?;
            if stored != from {
                return Ok(Committed::Moved(stored));
            }
            let refused = batch::apply_around(
                &mut tx,
                events,
                &skips,
                |tx, segment| pg.apply_batch(tx, segment),
                |tx, event| pg.skip(tx, event),
            )?;
            if let Some(skip) = refused {
                tx.rollback()?;
                batch::add_skip(&mut skips, skip);
                continue;
            }
            let skipped = batch::skipped_events(events, skips);
            for s in &skipped {
                tx.execute(
                    "INSERT INTO projection_skipped (name, position, stream, version, event_type, error)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (name, position) DO UPDATE SET error = excluded.error",
                    &[
                        &name,
                        &to_sql(s.position),
                        &s.stream,
                        &i64::try_from(s.version).unwrap_or(i64::MAX),
                        &s.event_type,
                        &s.error,
                    ],
                )?;
            }
            tx.execute(
                "UPDATE projection_checkpoints SET position = $2, failure = NULL WHERE name = $1",
                &[&name, &to_sql(to)],
            )?;
            notify(&mut tx, &self.schema, name)?;
            tx.commit()?;
            return Ok(Committed::Applied(to, skipped));
        }
    }

    /// Runs `f` in a writing transaction that holds the projection's checkpoint row.
    fn write<T>(
        &mut self,
        projection: &dyn Projection,
        f: impl FnOnce(&dyn PgProjection, &mut Transaction<'_>) -> Result<T, HandlerError>,
    ) -> Result<T, BoxError> {
        let pg = postgres_of(projection)?;
        let mut tx = client(&mut self.client)?.transaction()?;
        lock_checkpoint(&mut tx, projection.name())?;
        let out = f(pg, &mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Empties the read model, its skipped events and its checkpoint (rebuild).
    pub(crate) fn reset(&mut self, projection: &dyn Projection) -> Result<(), BoxError> {
        let schema = self.schema.clone();
        self.write(projection, |pg, tx| {
            let name = projection.name();
            pg.reset(tx)?;
            tx.execute("DELETE FROM projection_skipped WHERE name = $1", &[&name])?;
            tx.execute(
                "UPDATE projection_checkpoints SET position = 0, failure = NULL WHERE name = $1",
                &[&name],
            )?;
            notify(tx, &schema, name)?;
            Ok(())
        })
    }

    /// As [`crate::db::forget`].
    pub(crate) fn forget(
        &mut self,
        projection: &dyn Projection,
        stream: &str,
        version: Version,
        through: Version,
    ) -> Result<bool, BoxError> {
        self.write(projection, |pg, tx| pg.forget(tx, stream, version, through))
    }

    /// As [`crate::db::refold`]; the outer error is the database's, the inner the fold's.
    pub(crate) fn refold(
        &mut self,
        projection: &dyn Projection,
        stream: &str,
        version: Version,
        through: Version,
        events: &[RecordedEvent],
    ) -> Result<bool, HandlerError> {
        let unusable = |e: BoxError| HandlerError::new(e.to_string());
        let pg = postgres_of(projection).map_err(unusable)?;
        let mut tx = client(&mut self.client).map_err(unusable)?.transaction()?;
        lock_checkpoint(&mut tx, projection.name())?;
        let refolded = pg.refold(&mut tx, stream, version, through, events)?;
        tx.commit()?;
        Ok(refolded)
    }

    /// `key`'s row and the checkpoint it reflects, from one snapshot.
    pub(crate) fn row(
        &mut self,
        projection: &dyn Projection,
        key: &str,
    ) -> Result<(Position, Option<serde_json::Value>), BoxError> {
        let pg = postgres_of(projection)?;
        let mut tx = client(&mut self.client)?
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let at = tx
            .query_opt(
                "SELECT position FROM projection_checkpoints WHERE name = $1",
                &[&projection.name()],
            )?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .map_or(Position::ZERO, |p| Position(from_sql(p)));
        let row = pg.row(&mut tx, key)?;
        tx.commit()?;
        Ok((at, row))
    }

    /// The streams the read model holds rows for.
    pub(crate) fn stream_rows(
        &mut self,
        projection: &dyn Projection,
    ) -> Result<Vec<StreamRow>, BoxError> {
        let pg = postgres_of(projection)?;
        let mut tx = client(&mut self.client)?.transaction()?;
        let rows = pg.stream_rows(&mut tx)?;
        tx.commit()?;
        Ok(rows)
    }
}
