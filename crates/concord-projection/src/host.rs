//! `ProjectionHost`: runs a set of projections on one store and one projection database,
//! and answers what the HTTP API and the CLI ask of them.
//!
//! Its methods map one-to-one onto the HTTP routes, and return serde types:
//! - `GET /projections` → [`ProjectionHost::list`] → `Vec<ProjectionStatus>`
//! - `GET /projections/{name}` → [`ProjectionHost::status`] → [`ProjectionStatus`]
//! - `GET /projections/{name}/{key}?min_position=p&wait_ms=w` → [`ProjectionHost::get_row`]
//!   → [`ProjectionRow`] (or `RowNotFound`/`UnknownProjection` → 404, `ProjectionBehind` → 503)
//! - `POST /projections/{name}/rebuild` → [`ProjectionHost::start_rebuild`] →
//!   [`ProjectionStatus`] (the CLI uses [`ProjectionHost::rebuild`], which also waits)
//! - `DELETE /streams/{stream}` and every scavenge → [`ProjectionHost::forget_deleted_streams`]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use concord_core::{BoxError, Direction, EventStore, Position, StoreError, StreamName, Version};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::database::{Conn, ProjectionDb};
use crate::error::{Failure, ProjectionError, SkippedEvent};
use crate::projection::{Projection, StreamRow};
use crate::runner::{Progress, Runner, State};

/// A projection's status, as `GET /projections` lists it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// `stopped`, `catching-up`, `running` or `failed`.
    pub status: State,
    /// The last position it durably processed.
    pub checkpoint: Position,
    /// The store's head when the status was taken.
    pub head: Position,
    /// `head - checkpoint`.
    pub lag: u64,
    /// Events applied since it was started in this process.
    pub events_applied: u64,
    /// Where and why it failed, when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// How many events its handler refused and it skipped since the last rebuild.
    #[serde(default)]
    pub skipped: u64,
    /// The latest of them (at most 10, newest first), each with the handler's error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_events: Vec<SkippedEvent>,
    /// The store or database error it is currently retrying after, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One read-model row, as `GET /projections/{name}/{key}` returns it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ProjectionRow {
    /// The projection.
    pub projection: String,
    /// The key (a stream name).
    pub key: String,
    /// The checkpoint the row was read at: it reflects every event up to this position.
    pub checkpoint: Position,
    /// The row.
    pub row: serde_json::Value,
}

/// What a completed rebuild did.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct RebuildReport {
    /// The projection.
    pub name: String,
    /// Events applied during the rebuild.
    pub events_applied: u64,
    /// The checkpoint reached (at least the head when the rebuild started).
    pub checkpoint: Position,
    /// Wall time.
    pub elapsed_ms: u64,
    /// `events_applied` per second of wall time.
    pub events_per_second: f64,
}

#[derive(Debug)]
struct Entry {
    projection: Arc<dyn Projection>,
    progress: watch::Sender<Progress>,
    runner: tokio::sync::Mutex<Option<Runner>>,
}

/// Runs projections on a store, with their read models in one database ([`ProjectionDb`]).
///
/// Dropping the host stops its runners after their batch in progress.
#[derive(Debug)]
pub struct ProjectionHost {
    store: Arc<dyn EventStore>,
    db: ProjectionDb,
    entries: BTreeMap<String, Entry>,
    /// Idle read connections, reused by `get_row` and `status`.
    readers: Arc<Mutex<Vec<Conn>>>,
}

impl ProjectionHost {
    /// Opens the projection database `db` (a SQLite file's path, or a [`ProjectionDb`]),
    /// creating it and the read models' tables, for `projections` on `store`. Nothing runs
    /// until [`ProjectionHost::start_all`] or [`ProjectionHost::start`].
    ///
    /// # Errors
    /// [`ProjectionError::Database`] naming the database; [`ProjectionError::Unsupported`]
    /// for a projection without a read model in that kind of database.
    pub async fn open(
        store: Arc<dyn EventStore>,
        db: impl Into<ProjectionDb>,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Self, ProjectionError> {
        let db: ProjectionDb = db.into();
        if matches!(db, ProjectionDb::Postgres(_))
            && let Some(p) = projections.iter().find(|p| p.postgres().is_none())
        {
            return Err(ProjectionError::Unsupported {
                projection: p.name().to_owned(),
                database: db.to_string(),
            });
        }
        let (conn, stored) = {
            let db = db.clone();
            let projections = projections.clone();
            blocking(move || {
                let mut conn = Conn::open(&db)?;
                let mut stored = Vec::new();
                for p in &projections {
                    let err = |doing| {
                        let database = db.to_string();
                        move |source| ProjectionError::Database {
                            database,
                            doing,
                            source,
                        }
                    };
                    conn.create(&**p)
                        .map_err(err("creating a read model's tables"))?;
                    let (checkpoint, failure) = conn
                        .checkpoint(p.name())
                        .map_err(err("reading a checkpoint"))?;
                    let skipped = conn
                        .skipped(p.name())
                        .map_err(err("reading skipped events"))?;
                    stored.push((checkpoint, failure, skipped));
                }
                Ok((conn, stored))
            })
            .await?
        };
        let entries = projections
            .into_iter()
            .zip(stored)
            .map(
                |(projection, (checkpoint, failure, (skipped, skipped_events)))| {
                    let mut stopped = Progress::stopped(checkpoint, failure);
                    stopped.skipped = skipped;
                    stopped.skipped_events = skipped_events;
                    let (progress, _) = watch::channel(stopped);
                    let entry = Entry {
                        projection: Arc::clone(&projection),
                        progress,
                        runner: tokio::sync::Mutex::new(None),
                    };
                    (projection.name().to_owned(), entry)
                },
            )
            .collect();
        Ok(ProjectionHost {
            store,
            db,
            entries,
            readers: Arc::new(Mutex::new(vec![conn])),
        })
    }

    /// [`ProjectionHost::open`] with the built-in projections (`balances`, `auctions`,
    /// `documents`).
    ///
    /// # Errors
    /// As [`ProjectionHost::open`].
    pub async fn open_builtin(
        store: Arc<dyn EventStore>,
        db: impl Into<ProjectionDb>,
    ) -> Result<Self, ProjectionError> {
        Self::open(store, db, crate::models::builtin()).await
    }

    /// The projection database.
    pub fn database(&self) -> &ProjectionDb {
        &self.db
    }

    /// The hosted projections' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    fn entry(&self, name: &str) -> Result<&Entry, ProjectionError> {
        self.entries
            .get(name)
            .ok_or_else(|| ProjectionError::UnknownProjection {
                name: name.to_owned(),
                known: self.names().join(", "),
            })
    }

    /// Starts every projection (catch-up, then live) in the background, after forgetting
    /// the rows of streams deleted while no host was watching (see
    /// [`ProjectionHost::forget_deleted_streams`]; a failure there is logged, and the next
    /// reconcile takes it up).
    pub async fn start_all(&self) {
        if let Err(e) = self.forget_deleted_streams().await {
            tracing::warn!(error = %e, "forgetting deleted streams at start failed");
        }
        for name in self.entries.keys() {
            let _ = self.start(name).await;
        }
    }

    /// Starts one projection in the background, unless it is already running. A projection
    /// that failed is started again from its checkpoint (the failing event is retried).
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjection`].
    pub async fn start(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        let mut runner = entry.runner.lock().await;
        if runner.as_ref().is_some_and(|r| !r.is_finished()) {
            return Ok(());
        }
        if let Some(old) = runner.take() {
            old.stop().await;
        }
        *runner = Some(Runner::spawn(
            Arc::clone(&self.store),
            Arc::clone(&entry.projection),
            self.db.clone(),
            entry.progress.clone(),
        ));
        Ok(())
    }

    /// Stops one projection after its batch in progress.
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjection`].
    pub async fn stop(&self, name: &str) -> Result<(), ProjectionError> {
        let entry = self.entry(name)?;
        if let Some(runner) = entry.runner.lock().await.take() {
            runner.stop().await;
        }
        Ok(())
    }

    /// Stops every projection and waits for them.
    pub async fn shutdown(&self) {
        for name in self.entries.keys() {
            let _ = self.stop(name).await;
        }
    }

    /// A receiver of one projection's progress (for metrics and progress bars).
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjection`].
    pub fn progress(&self, name: &str) -> Result<watch::Receiver<Progress>, ProjectionError> {
        Ok(self.entry(name)?.progress.subscribe())
    }

    /// Every projection's status (`GET /projections`).
    ///
    /// # Errors
    /// The store's (reading the head) or the database's.
    pub async fn list(&self) -> Result<Vec<ProjectionStatus>, ProjectionError> {
        let head = self.store.head().await?;
        let mut all = Vec::with_capacity(self.entries.len());
        for name in self.entries.keys() {
            all.push(self.status_at(name, head).await?);
        }
        Ok(all)
    }

    /// One projection's status (`GET /projections/{name}`).
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjection`]; the store's or the database's.
    pub async fn status(&self, name: &str) -> Result<ProjectionStatus, ProjectionError> {
        self.entry(name)?;
        let head = self.store.head().await?;
        self.status_at(name, head).await
    }

    async fn status_at(
        &self,
        name: &str,
        head: Position,
    ) -> Result<ProjectionStatus, ProjectionError> {
        let entry = self.entry(name)?;
        let mut progress = entry.progress.borrow().clone();
        if matches!(progress.state, State::Stopped | State::Failed) {
            // Not running here: another process may have moved it since.
            let key = name.to_owned();
            let ((checkpoint, failure), (skipped, skipped_events)) = self
                .read(
                    move |db| Ok((db.checkpoint(&key)?, db.skipped(&key)?)),
                    "reading a checkpoint",
                )
                .await?;
            progress.checkpoint = checkpoint;
            progress.skipped = skipped;
            progress.skipped_events = skipped_events;
            if progress.state == State::Stopped || failure.is_some() {
                progress.state = if failure.is_some() {
                    State::Failed
                } else {
                    State::Stopped
                };
                progress.failure = failure;
            }
        }
        Ok(ProjectionStatus {
            name: name.to_owned(),
            status: progress.state,
            checkpoint: progress.checkpoint,
            head,
            lag: head.get().saturating_sub(progress.checkpoint.get()),
            events_applied: progress.events_applied,
            failure: progress.failure,
            skipped: progress.skipped,
            skipped_events: progress.skipped_events,
            last_error: progress.last_error,
        })
    }

    /// Read-your-writes: resolves once the projection's checkpoint is at least `position`,
    /// or fails at `timeout`. Woken by the runner's commits, never by polling.
    ///
    /// # Errors
    /// [`ProjectionError::ProjectionBehind`] at the bound; [`ProjectionError::Failed`] when
    /// the projection stopped on an event before `position`.
    pub async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<Position, ProjectionError> {
        let entry = self.entry(name)?;
        let mut rx = entry.progress.subscribe();
        let reached = tokio::time::timeout(
            timeout,
            rx.wait_for(|p| p.checkpoint >= position || p.state == State::Failed),
        )
        .await
        .map(|r| r.map(|p| p.clone()));
        let progress = match reached {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                return Err(ProjectionError::Task(
                    "the projection's progress channel closed".into(),
                ));
            }
            Err(_) => {
                return Err(ProjectionError::ProjectionBehind {
                    projection: name.to_owned(),
                    checkpoint: rx.borrow().checkpoint,
                    wanted: position,
                });
            }
        };
        if progress.checkpoint >= position {
            return Ok(progress.checkpoint);
        }
        Err(match progress.failure {
            Some(failure) => ProjectionError::Failed {
                projection: name.to_owned(),
                failure: Box::new(failure),
            },
            None => ProjectionError::ProjectionBehind {
                projection: name.to_owned(),
                checkpoint: progress.checkpoint,
                wanted: position,
            },
        })
    }

    /// The row for `key` (`GET /projections/{name}/{key}`). With `min_position`, answers
    /// only once the projection has processed that position, waiting at most `wait`.
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjection`], [`ProjectionError::RowNotFound`],
    /// [`ProjectionError::ProjectionBehind`], [`ProjectionError::Failed`]; the database's.
    pub async fn get_row(
        &self,
        name: &str,
        key: &str,
        min_position: Option<Position>,
        wait: Duration,
    ) -> Result<ProjectionRow, ProjectionError> {
        let entry = self.entry(name)?;
        let wanted = min_position.unwrap_or(Position::ZERO);
        let mut answer = self.read_row(entry, key).await?;
        if answer.0 < wanted {
            self.wait_for(name, wanted, wait).await?;
            answer = self.read_row(entry, key).await?;
        }
        let (checkpoint, row) = answer;
        match row {
            Some(row) => Ok(ProjectionRow {
                projection: name.to_owned(),
                key: key.to_owned(),
                checkpoint,
                row,
            }),
            None => Err(ProjectionError::RowNotFound {
                projection: name.to_owned(),
                key: key.to_owned(),
                checkpoint,
            }),
        }
    }

    async fn read_row(
        &self,
        entry: &Entry,
        key: &str,
    ) -> Result<(Position, Option<serde_json::Value>), ProjectionError> {
        let projection = Arc::clone(&entry.projection);
        let key = key.to_owned();
        self.read(move |db| db.row(&*projection, &key), "reading a row")
            .await
    }

    /// Starts a rebuild (`POST /projections/{name}/rebuild`): stops the projection, empties
    /// its read model and checkpoint, and starts it again from position 1. Returns at once;
    /// the status shows `catching-up` until it has replayed up to the head.
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjection`]; the database's.
    pub async fn start_rebuild(&self, name: &str) -> Result<ProjectionStatus, ProjectionError> {
        let entry = self.entry(name)?;
        let mut runner = entry.runner.lock().await;
        if let Some(old) = runner.take() {
            old.stop().await;
        }
        let projection = Arc::clone(&entry.projection);
        self.read(move |db| db.reset(&*projection), "resetting a read model")
            .await?;
        entry
            .progress
            .send_replace(Progress::stopped(Position::ZERO, None));
        *runner = Some(Runner::spawn(
            Arc::clone(&self.store),
            Arc::clone(&entry.projection),
            self.db.clone(),
            entry.progress.clone(),
        ));
        drop(runner);
        self.status(name).await
    }

    /// Rebuilds the projection and waits until it has replayed up to the head the store had
    /// when the rebuild started, calling `on_progress` as it goes. The projection keeps
    /// running (live) afterwards.
    ///
    /// # Errors
    /// As [`ProjectionHost::start_rebuild`]; [`ProjectionError::Failed`] when a handler
    /// refuses an event on the way.
    pub async fn rebuild(
        &self,
        name: &str,
        on_progress: impl FnMut(&Progress, Position),
    ) -> Result<RebuildReport, ProjectionError> {
        let started = Instant::now();
        self.start_rebuild(name).await?;
        let progress = self.follow_to_head(name, on_progress).await?;
        let elapsed = started.elapsed();
        let events = progress.events_applied;
        Ok(RebuildReport {
            name: name.to_owned(),
            events_applied: events,
            checkpoint: progress.checkpoint,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            #[allow(clippy::cast_precision_loss)]
            events_per_second: events as f64 / elapsed.as_secs_f64().max(1e-9),
        })
    }

    /// Starts the projection if needed and waits until it has processed the store's
    /// current head (what `concord query` does before answering).
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjection`]; the store's; [`ProjectionError::Failed`].
    pub async fn catch_up(
        &self,
        name: &str,
        on_progress: impl FnMut(&Progress, Position),
    ) -> Result<ProjectionStatus, ProjectionError> {
        self.start(name).await?;
        self.follow_to_head(name, on_progress).await?;
        self.status(name).await
    }

    async fn follow_to_head(
        &self,
        name: &str,
        mut on_progress: impl FnMut(&Progress, Position),
    ) -> Result<Progress, ProjectionError> {
        let entry = self.entry(name)?;
        let target = self.store.head().await?;
        let mut rx = entry.progress.subscribe();
        loop {
            let progress = rx.borrow_and_update().clone();
            on_progress(&progress, target);
            if progress.checkpoint >= target {
                return Ok(progress);
            }
            if let Some(failure) = progress.failure.filter(|_| progress.state == State::Failed) {
                return Err(ProjectionError::Failed {
                    projection: name.to_owned(),
                    failure: Box::new(failure),
                });
            }
            if progress.state == State::Stopped
                && entry
                    .runner
                    .lock()
                    .await
                    .as_ref()
                    .is_none_or(Runner::is_finished)
            {
                return Err(ProjectionError::Task(format!(
                    "projection {name} stopped before reaching position {target}"
                )));
            }
            if rx.changed().await.is_err() {
                return Err(ProjectionError::Task(
                    "the projection's progress channel closed".into(),
                ));
            }
        }
    }

    /// Drops the read-model rows of streams that were soft-deleted or tombstoned, rebuilds
    /// those of streams deleted and written again since their row began, and returns the
    /// streams whose row lost a deleted life, per projection (those that lost none are left
    /// out).
    ///
    /// A delete is not an event in the global log, so a projection folding the log never
    /// learns of it: this asks the store instead. For each projection it lists the streams
    /// it holds rows for ([`Projection::stream_rows`]: the versions each row spans) and asks
    /// [`EventStore::stream_lifecycle`] about each. A row the delete reached entirely (the
    /// stream deleted through its version or later, or tombstoned) is dropped
    /// ([`Projection::forget`]). A row that began before the delete and goes on after it
    /// folded the stream's new life onto the deleted one (the stream was written again before
    /// any reconcile ran): it is folded again from the events after the delete, read from the
    /// store ([`Projection::refold`]). Either happens in an immediate transaction of its own
    /// and only if the row is still at the version seen before asking, so it cannot race a
    /// runner folding a newer event: the row moved, and the next pass (up to three here)
    /// takes it up again.
    ///
    /// A store that does not expose the lifecycle (the HTTP client) is asked the stream's
    /// version instead: 0 (soft-deleted) or tombstoned means gone, and a stream written
    /// again keeps its row.
    ///
    /// Safe to call from any number of processes at once; the server calls it after each
    /// `DELETE /streams/{stream}`, after each scavenge, and [`ProjectionHost::start_all`]
    /// calls it first.
    ///
    /// # Errors
    /// The store's (other than a tombstone) or the database's; the rows forgotten before
    /// the error stay forgotten.
    pub async fn forget_deleted_streams(
        &self,
    ) -> Result<BTreeMap<String, Vec<String>>, ProjectionError> {
        let mut forgotten: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, entry) in &self.entries {
            for _pass in 0..3 {
                let (gone, raced) = self.reconcile(name, entry).await?;
                if !gone.is_empty() {
                    forgotten.entry(name.clone()).or_default().extend(gone);
                }
                if !raced {
                    break;
                }
            }
        }
        Ok(forgotten)
    }

    /// One pass of [`Self::forget_deleted_streams`] over one projection: the streams whose
    /// row lost a deleted life, and whether a row moved while it was being reconciled.
    async fn reconcile(
        &self,
        name: &str,
        entry: &Entry,
    ) -> Result<(Vec<String>, bool), ProjectionError> {
        let projection = Arc::clone(&entry.projection);
        let rows = self
            .read(
                move |db| db.stream_rows(&*projection),
                "listing a read model's streams",
            )
            .await?;
        let mut gone = Vec::new();
        let mut raced = false;
        for row in rows {
            // A key that is not a valid stream name has no stream to be deleted.
            let Ok(stream) = StreamName::new(row.stream.as_str()) else {
                continue;
            };
            let done = match self.fate(&stream, &row).await? {
                Fate::Keep => continue,
                Fate::Forget { through } => {
                    let projection = Arc::clone(&entry.projection);
                    let key = row.stream.clone();
                    self.read(
                        move |db| db.forget(&*projection, &key, row.version, through),
                        "forgetting a deleted stream's row",
                    )
                    .await?
                }
                Fate::Refold { through } => {
                    match self.refold(entry, &stream, &row, through).await? {
                        Some(refolded) => refolded,
                        None => continue,
                    }
                }
            };
            if done {
                tracing::info!(projection = %name, stream = %row.stream, "forgot a deleted life of a stream in its row");
                gone.push(row.stream);
            } else {
                raced = true;
            }
        }
        Ok((gone, raced))
    }

    /// What a delete means for `row`, by what the store says of its stream.
    async fn fate(&self, stream: &StreamName, row: &StreamRow) -> Result<Fate, ProjectionError> {
        let life = match self.store.stream_lifecycle(stream).await {
            Ok(life) => life,
            Err(StoreError::Unsupported { .. }) => {
                return match self.store.stream_version(stream).await {
                    Ok(v) if v == Version::NONE => Ok(Fate::Forget {
                        through: row.version,
                    }),
                    Err(StoreError::StreamDeleted(_)) => Ok(Fate::Forget {
                        through: row.version,
                    }),
                    Ok(_) => Ok(Fate::Keep),
                    Err(e) => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        };
        let through = life.deleted_through;
        Ok(if life.tombstoned || through >= row.version {
            Fate::Forget {
                through: through.max(row.version),
            }
        } else if through >= row.since {
            Fate::Refold { through }
        } else {
            Fate::Keep
        })
    }

    /// Folds `row` again from its stream's events after `through`. `None` when it cannot:
    /// the stream went away meanwhile (the next reconcile sees it) or its events are no
    /// longer all readable (logged; a rebuild mends the row).
    async fn refold(
        &self,
        entry: &Entry,
        stream: &StreamName,
        row: &StreamRow,
        through: Version,
    ) -> Result<Option<bool>, ProjectionError> {
        let count = usize::try_from(row.version.get() - through.get()).unwrap_or(usize::MAX);
        let events = match self
            .store
            .read_stream(stream, through.next(), Direction::Forward, count)
            .await
        {
            Ok(events) => events,
            Err(StoreError::StreamNotFound(_) | StoreError::StreamDeleted(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let projection = Arc::clone(&entry.projection);
        let key = row.stream.clone();
        let version = row.version;
        let refolded = self
            .read(
                move |db| Ok(db.refold(&*projection, &key, version, through, &events)),
                "refolding a recreated stream's row",
            )
            .await?;
        match refolded {
            Ok(done) => Ok(Some(done)),
            Err(e) => {
                tracing::warn!(stream = %stream, error = %e, "the row of a stream deleted and written again could not be folded again from its new events; a rebuild of the projection mends it");
                Ok(None)
            }
        }
    }

    /// Runs `f` on a pooled read connection, off the async threads. A pooled PostgreSQL
    /// session the database closed meanwhile (a restart, a failover) fails `f` once and is
    /// then known closed: `f` runs again on a new session.
    async fn read<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Conn) -> Result<T, BoxError> + Send + 'static,
        doing: &'static str,
    ) -> Result<T, ProjectionError> {
        let readers = Arc::clone(&self.readers);
        let db = self.db.clone();
        blocking(move || {
            let pooled = readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => Conn::open(&db)?,
            };
            let mut result = f(&mut conn);
            if result.is_err() && conn.is_closed() {
                conn = Conn::open(&db)?;
                result = f(&mut conn);
            }
            let result = result.map_err(|source| ProjectionError::Database {
                database: db.to_string(),
                doing,
                source,
            });
            if !conn.is_closed() {
                readers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            }
            result
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProjectionError> + Send + 'static,
) -> Result<T, ProjectionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProjectionError::Task(e.to_string()))?
}

/// What [`ProjectionHost::forget_deleted_streams`] does with a row.
enum Fate {
    /// Nothing: no delete reached it.
    Keep,
    /// Drop it: a delete (through `through`) or a tombstone reached all of it.
    Forget { through: Version },
    /// Fold it again from the events after `through`: it spans a delete.
    Refold { through: Version },
}
