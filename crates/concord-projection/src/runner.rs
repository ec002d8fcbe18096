//! The runner: follows the store from a projection's checkpoint, catch-up then live, and
//! commits each page of events with the checkpoint after it.
//!
//! It reads with `read_all` and waits with `wait_for_head`, the two primitives core's
//! subscriptions are built on, rather than through `subscribe_all`: a page also says how
//! far the read got (`next_from`) when the filter skipped events, and the checkpoint must
//! move past skipped events too. Otherwise a filtered projection whose last events are
//! of other categories would never reach the head, and a read-your-writes wait for such a
//! position would never end. Progress is published on a `watch` channel after every
//! commit; waiters are woken by it, never by polling.

use std::sync::Arc;
use std::time::Duration;

use concord_core::{EventStore, Position};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::batch::{self, Committed};
use crate::database::{Conn, ProjectionDb};
use crate::error::{Failure, SkippedEvent};
use crate::projection::Projection;

/// How many events the runner reads (and commits) at most per batch.
pub const BATCH_EVENTS_MAX: usize = 1000;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where a projection is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Not running in this process (its checkpoint is what it last committed).
    Stopped,
    /// Running, and not yet past the head the store had when it started.
    CatchingUp,
    /// Running and live: it has reached the head it started towards and follows new events.
    Running,
    /// Running on another server that shares this PostgreSQL projection database; this one
    /// follows its checkpoint (so read-your-writes works here too) and takes over when that
    /// server goes away.
    Standby,
    /// Stopped at an event its handler refused, by a Concord before 0.1 skipped such
    /// events (see the failure); it runs again when started.
    Failed,
}

/// A projection's progress, as the runner publishes it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Progress {
    /// Its state.
    pub state: State,
    /// The last position durably processed.
    pub checkpoint: Position,
    /// The head the store had when the runner started: catching up means getting there.
    pub target: Position,
    /// Events applied since the runner started.
    pub events_applied: u64,
    /// The event it stopped at, when failed.
    pub failure: Option<Failure>,
    /// How many events its handler refused and it skipped, in all (since the last rebuild).
    pub skipped: u64,
    /// The latest of them, newest first (at most 10).
    pub skipped_events: Vec<SkippedEvent>,
    /// The last store or database error it is retrying after, if the latest attempt failed.
    pub last_error: Option<String>,
}

impl Progress {
    pub(crate) fn stopped(checkpoint: Position, failure: Option<Failure>) -> Self {
        Progress {
            state: if failure.is_some() {
                State::Failed
            } else {
                State::Stopped
            },
            checkpoint,
            target: checkpoint,
            events_applied: 0,
            failure,
            skipped: 0,
            skipped_events: Vec::new(),
            last_error: None,
        }
    }

    /// Adds events skipped by the latest batch (in position order).
    pub(crate) fn add_skipped(&mut self, skipped: Vec<SkippedEvent>) {
        self.skipped += skipped.len() as u64;
        for s in skipped {
            self.skipped_events.insert(0, s);
        }
        self.skipped_events.truncate(batch::SKIPPED_LISTED);
    }
}

/// A running projection: how to stop it, and its task.
#[derive(Debug)]
pub(crate) struct Runner {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Runner {
    pub(crate) fn spawn(
        store: Arc<dyn EventStore>,
        projection: Arc<dyn Projection>,
        db: ProjectionDb,
        progress: watch::Sender<Progress>,
    ) -> Runner {
        // Running from now on: a failure shown from an earlier run no longer holds, and a
        // waiter must not take it for this run's.
        progress.send_modify(|p| {
            p.state = State::CatchingUp;
            p.failure = None;
            p.events_applied = 0;
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(store, projection, db, progress, stopped));
        Runner { stop, task }
    }

    /// Whether its task has ended (stopped or failed).
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops it after the batch in progress and waits until it has.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Waits out a backoff, unless told to stop; returns whether to stop.
async fn pause(backoff: &mut Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    tokio::select! {
        () = tokio::time::sleep(wait) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// How long a follower waits for the leader's next commit before it tries to take the
/// lead itself: the longest a projection stands still after its leader's server dies.
const FOLLOW_WAIT: Duration = Duration::from_millis(500);

async fn run(
    store: Arc<dyn EventStore>,
    projection: Arc<dyn Projection>,
    database: ProjectionDb,
    progress: watch::Sender<Progress>,
    mut stop: watch::Receiver<bool>,
) {
    let name = projection.name().to_owned();
    let note = |error: String| {
        tracing::warn!(projection = %name, %error, "projection retrying");
        progress.send_modify(|p| p.last_error = Some(error));
    };
    let mut backoff = BACKOFF_MIN;
    let mut db: Option<Conn> = None;
    let mut leading = false;
    let mut at = Position::ZERO;
    let mut target = None;
    let filter = projection.filter();
    while !*stop.borrow() {
        // (Re)open the database and take the lead (or follow the one who has it).
        if db.as_ref().is_none_or(Conn::is_closed) || !leading {
            let database = database.clone();
            let key = projection.name().to_owned();
            let conn = db.take().filter(|c| !c.is_closed());
            if conn.is_none() {
                leading = false;
            }
            let opened = tokio::task::spawn_blocking(move || {
                let mut conn = match conn {
                    Some(c) => c,
                    None => Conn::open(&database)?,
                };
                let fail = |source| crate::ProjectionError::Database {
                    database: database.to_string(),
                    doing: "reading the checkpoint",
                    source,
                };
                let led = match conn.lead(&key).map_err(fail)? {
                    Some(checkpoint) => Ok((checkpoint, conn.skipped(&key).map_err(fail)?)),
                    None => Err(conn.follow(&key, FOLLOW_WAIT).map_err(fail)?),
                };
                Ok::<_, crate::ProjectionError>((conn, led))
            })
            .await;
            match opened {
                Ok(Ok((conn, Ok((checkpoint, (skipped, skipped_events)))))) => {
                    if !leading {
                        tracing::info!(projection = %name, checkpoint = %checkpoint, "running the projection from its checkpoint");
                    }
                    at = checkpoint;
                    leading = true;
                    target = None;
                    db = Some(conn);
                    progress.send_modify(|p| {
                        p.checkpoint = at;
                        p.skipped = skipped;
                        p.skipped_events = skipped_events;
                    });
                }
                Ok(Ok((conn, Err(followed)))) => {
                    db = Some(conn);
                    backoff = BACKOFF_MIN;
                    progress.send_modify(|p| {
                        p.state = State::Standby;
                        p.checkpoint = followed;
                        p.last_error = None;
                    });
                    continue;
                }
                Ok(Err(e)) => note(e.to_string()),
                Err(e) => note(format!(
                    "opening the projection database was interrupted: {e}"
                )),
            }
            if db.is_none() {
                if pause(&mut backoff, &mut stop).await {
                    break;
                }
                continue;
            }
        }
        let Some(head_target) = target else {
            match store.head().await {
                Ok(head) => {
                    target = Some(head);
                    progress.send_modify(|p| {
                        p.checkpoint = at;
                        p.target = head;
                        p.state = if at >= head {
                            State::Running
                        } else {
                            State::CatchingUp
                        };
                        p.failure = None;
                        p.last_error = None;
                    });
                }
                Err(e) => {
                    note(e.to_string());
                    if pause(&mut backoff, &mut stop).await {
                        break;
                    }
                }
            }
            continue;
        };
        let read = tokio::select! {
            r = store.read_all(at.next(), &filter, BATCH_EVENTS_MAX) => r,
            _ = stop.changed() => break,
        };
        let page = match read {
            Ok(page) => page,
            Err(e) => {
                note(e.to_string());
                if pause(&mut backoff, &mut stop).await {
                    break;
                }
                continue;
            }
        };
        let to = Position(page.next_from.get().saturating_sub(1)).max(at);
        let progressed = to > at;
        let caught_up = page.is_caught_up();
        if progressed {
            let Some(mut conn) = db.take() else { continue };
            let events = page.events;
            let count = events.len() as u64;
            let p = Arc::clone(&projection);
            let from = at;
            let done = tokio::task::spawn_blocking(move || {
                let r = conn.commit_batch(&*p, from, &events, to);
                (conn, r)
            })
            .await;
            let (conn, committed) = match done {
                Ok(done) => done,
                Err(e) => {
                    note(format!("a batch commit was interrupted: {e}"));
                    continue; // The database is reopened; the transaction rolled back.
                }
            };
            db = Some(conn);
            match committed {
                Ok(Committed::Applied(p, skipped)) => {
                    at = p;
                    backoff = BACKOFF_MIN;
                    for s in &skipped {
                        tracing::warn!(projection = %name, skipped = %s, "projection skipped an event its handler refused");
                    }
                    let applied = count - skipped.len() as u64;
                    progress.send_modify(|s| {
                        s.checkpoint = at;
                        s.events_applied += applied;
                        s.add_skipped(skipped);
                        s.last_error = None;
                        if s.state == State::CatchingUp && at >= head_target {
                            s.state = State::Running;
                        }
                    });
                }
                Ok(Committed::Moved(p)) => {
                    tracing::info!(projection = %name, checkpoint = %p, "another runner moved the checkpoint; continuing from it");
                    at = p;
                    progress.send_modify(|s| s.checkpoint = at);
                    continue;
                }
                Err(e) => {
                    note(format!("committing a batch failed: {e}"));
                    if pause(&mut backoff, &mut stop).await {
                        break;
                    }
                    continue;
                }
            }
        } else {
            progress.send_modify(|s| {
                if s.state == State::CatchingUp && at >= head_target {
                    s.state = State::Running;
                }
            });
        }
        if caught_up || !progressed {
            let waited = tokio::select! {
                r = store.wait_for_head(at) => r,
                _ = stop.changed() => break,
            };
            if let Err(e) = waited {
                note(e.to_string());
                if pause(&mut backoff, &mut stop).await {
                    break;
                }
            }
        }
    }
    progress.send_modify(|s| {
        if s.state != State::Failed {
            s.state = State::Stopped;
        }
    });
}
