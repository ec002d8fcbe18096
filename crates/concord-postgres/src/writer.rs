//! The writer: group commit of every append waiting in this process into one transaction,
//! with positions assigned under one head lock shared by every process on the database.
//!
//! One task per store drains the queue of appends into batches and runs each as one
//! transaction on a connection of its own, two at most in flight: while one holds the head
//! lock, the next is locked, read and planned, and a batch owns its streams until it lands
//! (`next_batch`). An append to a stream an earlier append of the batch writes is planned
//! after that write (its expectation, ids and `rebase_unless` judged against the batch's own
//! events too), so many writers of one hot stream share a commit; one that this would not
//! decide as a plain write (a conflict, a duplicate, a refusal, or a stream whose earlier
//! append carries a condition that may still fail) waits for the next batch, first in it,
//! and is judged against committed state there:
//!
//! 1. BEGIN and transaction-scoped advisory locks on the batch's streams, in key order
//!    (another process appending to the same stream waits; others do not);
//! 2. in the same pipelined exchange (the server runs them after the locks), reads of the
//!    streams' versions (`concord_stream_state`) and of where the batch's event ids already
//!    stand, with each stream's lifecycle (a tombstone refuses the append, a hidden
//!    event's id is still taken, a soft-deleted stream is at version 0 but its versions go
//!    on), and of each stream's events after the stalest expectation of its appends, so
//!    that `concord_core::plan_multi_append` decides each append with a conflict's missed
//!    events and a rebase's concurrent events (those reads show) in hand, read under the
//!    same locks (more of them than that read holds are read in the same transaction);
//! 3. the head lock (`schema::head_lock_sql`): from taking it to COMMIT, no other process
//!    can assign positions. A batch without conditions takes it in the call of the batch
//!    function (`WriteFunction::batch`: the lock, then the write statement, which reads the
//!    head and writes the events at positions relative to it), sent with COMMIT in one
//!    exchange. A batch with conditions (DCB) takes it and reads the head first,
//!    checks them against everything before the head and the batch's own earlier appends,
//!    then writes;
//! 4. events and the rows of new streams, then COMMIT, which does not wait for its WAL
//!    flush (`Session::BEGIN`), so the head lock is free at once. No row is updated;
//! 5. the mark (`schema::mark_sql`), in the same exchange: a statement in autocommit,
//!    committed synchronously, that moves the durable head readers follow and notifies;
//!    its flush covers this batch and every one before it, of any process. The callers are
//!    answered after it (ADR 0004).
//!
//! An append that arrives alone takes one statement instead (a call of the lone function in
//! autocommit), on the stream row the writer last saw, checked by the database (`lone`);
//! a lone caller's append is sent so from its own task while the writer is idle
//! (`Writer::write_alone`).
//!
//! Because the head lock is held until the commit is visible, a transaction that takes it
//! next sees every earlier position committed: positions become visible in order, without
//! gaps (see `docs/design/postgres-layout.md`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use concord_core::{
    AppendOutcome, AppendPlan, Appended, Appending, Conflict, EventType, Limits,
    MATCHING_EVENTS_MAX, MultiAppendOutcome, MultiAppendPlan, MultiAppendRequest, PartState,
    PartialDuplicate, Position, Query, RecordedAt, RecordedEvent, StoreError, StreamName, Version,
    check_hidden_ids, plan_multi_append,
};
use deadpool_postgres::Pool;
use futures::StreamExt;
use futures::future::try_join_all;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use crate::lifecycle::{self, LIFECYCLE_COLUMNS, Stored};
use crate::matching::MatchingError;
use crate::rows::{COLUMNS, bound, decode, decode_at};
pub(crate) use lone::Known;
use lone::Lone;
pub(crate) use statements::insert_rows;
use statements::{Call, Session, prepare_write, write_relative};
pub(crate) use statements::{WriteFunction, WriteSql};

mod lone;
mod statements;

/// Appends in one batch at most (they share one transaction).
const BATCH_APPENDS_MAX: usize = 256;

/// How many turns the writer gives other tasks at most, between two batches, for appends
/// under way to join the queue.
const GATHER_TURNS: usize = 16;

/// Batches in flight at most. While one holds the head lock (its write and COMMIT), the
/// next takes its streams' locks, reads them and is planned, and its write waits for the lock
/// in the database rather than in this process: the two halves of the machine's work on a
/// batch (the database's, and the round trips and planning around it) overlap.
pub(crate) const BATCHES_IN_FLIGHT: usize = 2;

/// Waiting appends from which the writer sends them as two batches of half as many rather
/// than one (below it, a second commit costs more than the overlap saves), and the appends
/// under way a process needs before a batch flies beside another (`fewest`).
const SPLIT_MIN: usize = 32;

/// Moves what is queued into `waiting`, up to a batch. While more appends are under way in
/// the process than are waiting or `carried` by the batches in flight, gives other tasks a
/// turn (a few times at most): the callers a batch has just answered are about to send
/// their next appends (any closed loop of writers), and without the wait the next batch was
/// the first of them alone, a whole commit for one append, with the rest in the batch after
/// it. At 64 writers nearly every other batch was such a one (1 399 lone-function calls
/// beside 1 650 batches in 5 s).
async fn gather(
    jobs: &mut mpsc::Receiver<Job>,
    waiting: &mut VecDeque<Job>,
    appending: &Appending,
    carried: usize,
) {
    let mut turns = 0;
    loop {
        while waiting.len() < BATCH_APPENDS_MAX {
            match jobs.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => break,
            }
        }
        if waiting.len() >= BATCH_APPENDS_MAX
            || turns == GATHER_TURNS
            || appending.under_way() <= waiting.len() + carried
        {
            return;
        }
        turns += 1;
        tokio::task::yield_now().await;
    }
}

/// Whether `job` names a stream of `streams`.
fn touches(job: &Job, streams: &HashSet<&StreamName>) -> bool {
    job.request
        .parts
        .iter()
        .any(|p| streams.contains(&p.stream))
}

/// The appends of the next batch, taken from `waiting` in order; the rest stay, in order.
/// An append to a stream of a batch in flight (`busy`) waits for it to land, and so does
/// every later one to a stream it names: one stream's appends are planned, locked and
/// committed one batch after another, in the order they came. With nothing in flight and
/// many waiting, the first half goes alone when the second half has as many appends again
/// that it does not touch (so the two can fly together); appends all to one hot stream stay
/// one batch, planned one after another in it.
fn next_batch(waiting: &mut VecDeque<Job>, busy: &HashSet<&StreamName>, fewest: usize) -> Vec<Job> {
    let mut limit = BATCH_APPENDS_MAX;
    if busy.is_empty() && waiting.len() >= SPLIT_MIN {
        let half = waiting.len().div_ceil(2).min(BATCH_APPENDS_MAX);
        let first: HashSet<&StreamName> = waiting
            .iter()
            .take(half)
            .flat_map(|j| j.request.parts.iter().map(|p| &p.stream))
            .collect();
        let apart = waiting
            .iter()
            .skip(half)
            .filter(|job| !touches(job, &first))
            .count();
        if apart * 2 >= half {
            limit = half;
        }
    }
    let mut blocked: HashSet<&StreamName> = HashSet::new();
    let mut chosen: HashSet<usize> = HashSet::new();
    for (i, job) in waiting.iter().enumerate() {
        let mut names = job.request.parts.iter().map(|p| &p.stream);
        if chosen.len() < limit && !names.any(|s| busy.contains(s) || blocked.contains(s)) {
            chosen.insert(i);
        } else {
            blocked.extend(job.request.parts.iter().map(|p| &p.stream));
        }
    }
    if chosen.len() < fewest {
        return Vec::new();
    }
    let mut batch = Vec::with_capacity(chosen.len());
    let mut kept = VecDeque::new();
    for (i, job) in std::mem::take(waiting).into_iter().enumerate() {
        if chosen.contains(&i) {
            batch.push(job);
        } else {
            kept.push_back(job);
        }
    }
    *waiting = kept;
    batch
}

/// The fewest appends a batch may fly with, `under_way` appends being under way in the
/// process: beside a batch in flight, only one worth a commit of its own, in a process with
/// callers enough for two batches; fewer wait for the one in flight to land and go with the
/// callers it answers. (A process of 21 writers whose callers came back one by one flew a
/// few of them in one batch and the rest beside it, two commits where one did, and three
/// such processes on one database lost ~10 % of their rate.)
fn fewest(busy: &HashSet<&StreamName>, under_way: usize) -> usize {
    if busy.is_empty() {
        1
    } else if under_way < SPLIT_MIN {
        usize::MAX
    } else {
        SPLIT_MIN / 2
    }
}

/// Counts a batch out of flight when its task ends, however it ends.
struct Landed<'a>(&'a AtomicUsize);

impl Drop for Landed<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One append waiting for the writer.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) request: MultiAppendRequest,
    pub(crate) reply: oneshot::Sender<Result<MultiAppendOutcome, StoreError>>,
}

/// What the writer needs, shared with the store.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) pool: Pool,
    pub(crate) schema: String,
    pub(crate) hosts: String,
    pub(crate) channel: String,
    pub(crate) limits: Limits,
    pub(crate) signal: concord_core::HeadSignal,
    /// The write statement's text, made once.
    pub(crate) write_sql: WriteSql,
    /// Each stream's row as the last write on it left it (`lone`).
    pub(crate) known: std::sync::Mutex<Known>,
    /// Batches in flight: while there is one, a lone caller queues its append instead of
    /// writing it alone (`write_alone`).
    pub(crate) flights: AtomicUsize,
    /// The appends under way in this process: a lone caller's is told by it (`submit`), and
    /// the writer waits a little for those about to be queued (`gather`).
    pub(crate) appending: Appending,
    /// Marks this writer made (`mark`), for their pruning.
    pub(crate) marks: std::sync::atomic::AtomicU64,
}

/// A failure of the whole batch: every append in it gets the same answer.
#[derive(Debug)]
struct BatchError {
    unavailable: bool,
    message: String,
}

impl BatchError {
    fn to_store_error(&self) -> StoreError {
        if self.unavailable {
            StoreError::Unavailable {
                backend: "postgres",
                message: self.message.clone(),
                source: None,
            }
        } else {
            StoreError::Backend {
                backend: "postgres",
                message: self.message.clone(),
                source: None,
            }
        }
    }
}

impl Writer {
    fn db(&self, e: tokio_postgres::Error) -> BatchError {
        let e = crate::error::driver(&self.hosts, e);
        BatchError {
            unavailable: matches!(e, StoreError::Unavailable { .. }),
            message: e.to_string(),
        }
    }

    /// Runs until every sender of `jobs` is gone and every batch has landed.
    pub(crate) async fn run(self: Arc<Self>, mut jobs: mpsc::Receiver<Job>) {
        let mut waiting: VecDeque<Job> = VecDeque::new();
        // The batches in flight, polled by this task: a landing is seen without waking
        // another (each wake-up costs on a VM whose idle cores halt).
        let mut flights = FuturesUnordered::new();
        // Each batch in flight: its streams and how many appends it carries.
        let mut flying: HashMap<u64, (HashSet<StreamName>, usize)> = HashMap::new();
        let mut launched: u64 = 0;
        let mut open = true;
        loop {
            if flights.len() < BATCHES_IN_FLIGHT && !waiting.is_empty() {
                let busy: HashSet<&StreamName> = flying.values().flat_map(|(s, _)| s).collect();
                let free = waiting.iter().filter(|job| !touches(job, &busy)).count();
                let fewest = fewest(&busy, self.appending.under_way());
                let batch = if free >= fewest {
                    let carried = flying.values().map(|(_, n)| n).sum();
                    gather(&mut jobs, &mut waiting, &self.appending, carried).await;
                    next_batch(&mut waiting, &busy, fewest)
                } else {
                    Vec::new()
                };
                // Empty when too few waiting appends are free of the batch in flight.
                if !batch.is_empty() {
                    let streams: HashSet<StreamName> = batch
                        .iter()
                        .flat_map(|j| j.request.parts.iter().map(|p| p.stream.clone()))
                        .collect();
                    launched += 1;
                    flying.insert(launched, (streams, batch.len()));
                    self.flights.fetch_add(1, Ordering::AcqRel);
                    let (id, writer) = (launched, &*self);
                    flights.push(async move {
                        let _landed = Landed(&writer.flights);
                        (id, writer.fly(batch).await)
                    });
                    continue;
                }
            }
            if !open && waiting.is_empty() && flights.is_empty() {
                return;
            }
            tokio::select! {
                Some((id, deferred)) = flights.next(), if !flights.is_empty() => {
                    flying.remove(&id);
                    // First in the next batch: nothing of that batch is planned before them.
                    for job in deferred.into_iter().rev() {
                        waiting.push_front(job);
                    }
                }
                job = jobs.recv(), if open => match job {
                    Some(job) => waiting.push_back(job),
                    None => open = false,
                },
            }
        }
    }

    /// Writes `batch` and answers its appends; returns those deferred to the next batch.
    async fn fly(&self, batch: Vec<Job>) -> Vec<Job> {
        let requests: Vec<&MultiAppendRequest> = batch.iter().map(|j| &j.request).collect();
        match self.write(&requests).await {
            Ok((answers, head)) => {
                self.signal.advance(head);
                let mut deferred = Vec::new();
                for (job, answer) in batch.into_iter().zip(answers) {
                    match answer {
                        // A caller that gave up dropped its receiver; the append stands.
                        Some(answer) => {
                            let _ = job.reply.send(answer);
                        }
                        None => deferred.push(job),
                    }
                }
                deferred
            }
            Err(e) => {
                tracing::warn!(error = %e.message, appends = batch.len(), "postgres batch failed");
                // Its outcome may be unknown: the rows it touched are read again.
                self.known().forget(batch_streams(&requests));
                for job in batch {
                    let _ = job.reply.send(Err(e.to_store_error()));
                }
                Vec::new()
            }
        }
    }

    /// Writes `request` on its caller's task when the writer is idle (no batch in flight)
    /// and knows the stream well enough for one statement (`lone`); `None` when it did not
    /// (the writer is busy, the stream unknown, or the guess did not hold: nothing was
    /// written), and the caller queues the append as any other. A lone caller's append then
    /// goes from its task to the database and back, instead of waking the writer task and
    /// being woken by it: on a machine whose idle cores sleep, each of those wake-ups cost
    /// as much as the statement's own work (BENCHMARKS.md, issue 18).
    pub(crate) async fn write_alone(
        &self,
        request: &MultiAppendRequest,
    ) -> Option<Result<MultiAppendOutcome, StoreError>> {
        if self.flights.load(Ordering::Acquire) > 0 {
            return None;
        }
        let guess = lone::guess(request, &self.known())?;
        match self.write_lone(request, guess).await {
            Ok(Lone::Written(outcome, head)) => {
                self.signal.advance(head);
                Some(Ok(outcome))
            }
            Ok(Lone::Missed) => None,
            Err(e) => {
                // Its outcome may be unknown: the row is read again next time.
                self.known().forget(request.parts.iter().map(|p| &p.stream));
                Some(Err(e.to_store_error()))
            }
        }
    }

    /// The rows the writer remembers; held for a lookup or an update, never across an await.
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `batch`: an append alone in one statement when the writer knows its stream
    /// well enough (`lone`), otherwise (or when that guess does not hold) the general path.
    async fn write(
        &self,
        batch: &[&MultiAppendRequest],
    ) -> Result<(Vec<Answer>, Position), BatchError> {
        if let [request] = batch {
            let guess = lone::guess(request, &self.known());
            if let Some(guess) = guess
                && let Lone::Written(outcome, head) = self.write_lone(request, guess).await?
            {
                return Ok((vec![Some(Ok(outcome))], head));
            }
        }
        self.write_batch(batch).await
    }

    #[allow(clippy::too_many_lines)]
    async fn write_batch(
        &self,
        batch: &[&MultiAppendRequest],
    ) -> Result<(Vec<Answer>, Position), BatchError> {
        let s = &self.schema;
        let session = self.session().await?;
        let Some(tx) = session.client() else {
            return Err(Session::gone());
        };

        // 1. Stream locks, in key order.
        let mut streams: Vec<&str> = batch
            .iter()
            .flat_map(|r| r.parts.iter().map(|p| p.stream.as_str()))
            .collect();
        streams.sort_unstable();
        streams.dedup();
        let keys = lock_keys(s, streams.iter().copied());
        // 2. The streams' versions and where the ids stand, in one exchange with the locks:
        // the server runs the statements in order, and under READ COMMITTED each read takes
        // its snapshot when it starts, after the locks are held.
        let (id_streams, ids): (Vec<&str>, Vec<uuid::Uuid>) = batch
            .iter()
            .flat_map(|r| {
                r.parts.iter().flat_map(|p| {
                    p.events
                        .iter()
                        .map(move |e| (p.stream.as_str(), *e.id.as_uuid()))
                })
            })
            .unzip();
        // With each stream's state, what a stale expectation missed: its events after the
        // stalest expectation of the batch's appends to it, so that a conflict's missed
        // events and a rebase's concurrent events are at hand when the batch is decided,
        // with no exchange after it. The range is read only where the stream's last version
        // is past that expectation (a filter on the outer row: no index probe otherwise).
        let stalest = stalest_expectations(batch);
        let afters: Vec<Option<i64>> = streams.iter().map(|s| stalest.get(s).copied()).collect();
        let max = self.limits.concurrent_events_max;
        let limit = bound(max as u64);
        let past_limit = limit.saturating_mul(PAST_SPANS);
        let found_sql = format!(
            "SELECT e.stream, e.event_id, e.version, e.position FROM {s}.concord_events e \
             JOIN unnest($1::text[], $2::uuid[]) AS k(stream, event_id) \
             ON e.stream = k.stream AND e.event_id = k.event_id"
        );
        // The mark's statement too, before BEGIN: parsing an insert locks its table, which
        // must not happen with the streams' locks held.
        let (lock_stmt, state_stmt, found_stmt, mark) = tokio::try_join!(
            tx.prepare_cached(LOCK_STREAMS_SQL),
            tx.prepare_cached(&self.write_sql.state),
            tx.prepare_cached(&found_sql),
            tx.prepare_cached(&self.write_sql.mark)
        )
        .map_err(|e| self.db(e))?;
        let lock_params: [&(dyn ToSql + Sync); 1] = [&keys];
        let state_params: [&(dyn ToSql + Sync); 3] = [&streams, &afters, &past_limit];
        let found_params: [&(dyn ToSql + Sync); 2] = [&id_streams, &ids];
        let (_, _, state_rows, found_rows) = tokio::try_join!(
            tx.batch_execute(Session::BEGIN),
            tx.query_one(&lock_stmt, &lock_params),
            tx.query(&state_stmt, &state_params),
            tx.query(&found_stmt, &found_params)
        )
        .map_err(|e| self.db(e))?;
        let mut versions: HashMap<String, Stored> = HashMap::new();
        let mut past: HashMap<&str, Past> = stalest
            .iter()
            .map(|(stream, after)| (*stream, Past::after(*after)))
            .collect();
        for row in &state_rows {
            let stream: String = row.try_get(0).map_err(|e| self.db(e))?;
            let stored = Stored::decode(row, 1).map_err(|e| BatchError {
                unavailable: false,
                message: e.to_string(),
            })?;
            let missed: Option<i64> = row.try_get(PAST_AT).map_err(|e| self.db(e))?;
            if missed.is_some() {
                let event = decode_at(row, PAST_AT).map_err(|e| BatchError {
                    unavailable: false,
                    message: e.to_string(),
                })?;
                if let Some(p) = past.get_mut(stream.as_str()) {
                    p.events.push(event);
                }
            }
            versions.insert(stream, stored);
        }
        let mut found: HashMap<(String, uuid::Uuid), (Version, Position)> = HashMap::new();
        for row in &found_rows {
            let stream: String = row.try_get(0).map_err(|e| self.db(e))?;
            let id: uuid::Uuid = row.try_get(1).map_err(|e| self.db(e))?;
            let version: i64 = row.try_get(2).map_err(|e| self.db(e))?;
            let position: i64 = row.try_get(3).map_err(|e| self.db(e))?;
            found.insert(
                (stream, id),
                (
                    Version(u64::try_from(version).unwrap_or(0)),
                    Position(u64::try_from(position).unwrap_or(0)),
                ),
            );
        }
        let stored = |stream: &StreamName| stored_of(&versions, stream.as_str());
        // Expectations are checked against the version reads show (0 while soft-deleted).
        let actual = |stream: &StreamName| stored(stream).visible_version();
        // Retention by age is judged by this batch's clock.
        let now = RecordedAt::now();
        for (stream, p) in &mut past {
            p.keep_visible(&stored_of(&versions, stream), now, past_limit);
        }

        // The events after a stale expectation, for every part that may rebase: each
        // stream's span (from the stalest such expectation to its last version) is the
        // first exchange's read when that read reached the stream's last version (the
        // writers of a hot stream are stale over overlapping ranges), and read once now
        // when it did not but the span is short: its types decide the rebases, its events
        // are what they moved past. A long span is asked for its distinct types per part
        // instead. (Only events reads show: those hidden or erased were not missed.)
        let stream_sql = lifecycle::forward_sql(s);
        let types_sql = format!(
            "SELECT DISTINCT event_type FROM {s}.concord_events WHERE stream = $1 AND version >= $2 \
             AND recorded_at >= $3"
        );
        let (stream_stmt, types_stmt) = tokio::try_join!(
            tx.prepare_cached(&stream_sql),
            tx.prepare_cached(&types_sql)
        )
        .map_err(|e| self.db(e))?;
        let mut rebasable: Vec<(usize, usize, &str, i64, i64)> = Vec::new();
        for (j, r) in batch.iter().enumerate() {
            for (i, p) in r.parts.iter().enumerate() {
                if let (Some(_), concord_core::ExpectedVersion::Exact(e)) =
                    (&p.rebase_unless, p.expected)
                    && e < actual(&p.stream)
                {
                    let st = stored(&p.stream);
                    let from = bound(e.next().max(st.floor()).get());
                    rebasable.push((j, i, p.stream.as_str(), from, st.oldest_kept(now)));
                }
            }
        }
        let mut shared: HashMap<&str, Vec<RecordedEvent>> = HashMap::new();
        for (_, _, stream, _, _) in &rebasable {
            if let Some(p) = past.get(stream).filter(|p| p.complete) {
                shared.entry(stream).or_insert_with(|| p.events.clone());
            }
        }
        let mut spans: HashMap<&str, (i64, i64, i64)> = HashMap::new();
        for (_, _, stream, from, oldest) in &rebasable {
            let to = bound(versions.get(*stream).map_or(0, |st| st.last.get()));
            let span = spans.entry(stream).or_insert((*from, to, *oldest));
            span.0 = span.0.min(*from);
        }
        spans.retain(|stream, (from, to, _)| {
            !shared.contains_key(stream) && to.saturating_sub(*from) < past_limit
        });
        let span_streams: Vec<&str> = spans.keys().copied().collect();
        let span_rows = try_join_all(span_streams.iter().map(|stream| {
            let (from, to, oldest) = spans.get(stream).copied().unwrap_or_default();
            let count = to.saturating_sub(from).saturating_add(1).max(0);
            let (stmt, tx) = (&stream_stmt, &tx);
            async move { tx.query(stmt, &[stream, &from, &to, &oldest, &count]).await }
        }))
        .await
        .map_err(|e| self.db(e))?;
        for (stream, rows) in span_streams.iter().zip(span_rows) {
            shared.insert(stream, decode_all(&rows)?);
        }
        let asked: Vec<&(usize, usize, &str, i64, i64)> = rebasable
            .iter()
            .filter(|(_, _, stream, _, _)| !shared.contains_key(stream))
            .collect();
        let type_rows = try_join_all(asked.iter().map(|(_, _, stream, from, oldest)| {
            let (stmt, tx) = (&types_stmt, &tx);
            async move { tx.query(stmt, &[stream, from, oldest]).await }
        }))
        .await
        .map_err(|e| self.db(e))?;
        let mut concurrent_types: HashMap<(usize, usize), Vec<EventType>> = HashMap::new();
        for ((j, i, _, _, _), rows) in asked.iter().zip(type_rows) {
            let types = rows
                .iter()
                .filter_map(|r| {
                    r.try_get::<_, &str>(0)
                        .ok()
                        .and_then(|t| EventType::new(t).ok())
                })
                .collect();
            concurrent_types.insert((*j, *i), types);
        }
        for (j, i, stream, from, _) in &rebasable {
            if let Some(span) = shared.get(stream) {
                let mut types: Vec<EventType> = Vec::new();
                for ev in span.iter().filter(|ev| bound(ev.version.get()) >= *from) {
                    if !types.contains(&ev.event_type) {
                        types.push(ev.event_type.clone());
                    }
                }
                concurrent_types.insert((*j, *i), types);
            }
        }

        // Decide every append.
        let mut answers: Vec<Option<Result<MultiAppendOutcome, StoreError>>> =
            batch.iter().map(|_| None).collect();
        let mut writes: Vec<(usize, Vec<AppendPlan>)> = Vec::new();
        let mut conflicts: Vec<(usize, Vec<ConflictRead>)> = Vec::new();
        // Streams this batch writes, as its earlier appends leave them; streams no later
        // append of the batch may touch; the appends left for the next batch.
        let mut overlay: HashMap<StreamName, Overlay> = HashMap::new();
        let mut blocked: HashSet<StreamName> = HashSet::new();
        let mut deferred: HashSet<usize> = HashSet::new();
        for (j, r) in batch.iter().enumerate() {
            if r.parts.iter().any(|p| blocked.contains(&p.stream)) {
                deferred.insert(j);
                blocked.extend(r.parts.iter().map(|p| p.stream.clone()));
                continue;
            }
            let on_overlay = r.parts.iter().any(|p| overlay.contains_key(&p.stream));
            if let Err(refused) = check_lifecycle(r, stored, &found) {
                if on_overlay {
                    deferred.insert(j);
                    blocked.extend(r.parts.iter().map(|p| p.stream.clone()));
                } else if let Some(slot) = answers.get_mut(j) {
                    *slot = Some(Err(refused));
                }
                continue;
            }
            let states: Vec<PartState> = r
                .parts
                .iter()
                .map(|p| {
                    let written = overlay.get(&p.stream);
                    PartState {
                        actual: written.map_or_else(|| actual(&p.stream), |o| o.last),
                        found: p
                            .events
                            .iter()
                            .map(|e| {
                                let id = *e.id.as_uuid();
                                found
                                    .get(&(p.stream.as_str().to_owned(), id))
                                    .map(|(v, _)| *v)
                                    .or_else(|| written.and_then(|o| o.ids.get(&id).copied()))
                            })
                            .collect(),
                    }
                })
                .collect();
            let plan = plan_multi_append(r, &states, |i, e| {
                let mut types = concurrent_types.get(&(j, i)).cloned().unwrap_or_default();
                if let Some(o) = r.parts.get(i).and_then(|p| overlay.get(&p.stream)) {
                    types.extend(o.types_after(e).cloned());
                }
                types
            });
            // On a stream the batch writes, only a plain write is decided here: a conflict,
            // a duplicate or a refusal is answered from committed state in the next batch.
            let writes_only = matches!(&plan, MultiAppendPlan::Write(plans)
                if plans.iter().all(|p| matches!(p, AppendPlan::Write { .. })));
            if on_overlay && !writes_only {
                deferred.insert(j);
                blocked.extend(r.parts.iter().map(|p| p.stream.clone()));
                continue;
            }
            let answer = match plan {
                MultiAppendPlan::Duplicate(ranges) => {
                    let parts = r
                        .parts
                        .iter()
                        .zip(ranges)
                        .map(|(p, (first, last))| {
                            let position = |e: Option<&concord_core::NewEvent>| {
                                e.and_then(|e| {
                                    found.get(&(p.stream.as_str().to_owned(), *e.id.as_uuid()))
                                })
                                .map_or(Position::ZERO, |(_, pos)| *pos)
                            };
                            AppendOutcome::Duplicate(Appended {
                                stream: p.stream.clone(),
                                first_version: first,
                                last_version: last,
                                first_position: position(p.events.first()),
                                last_position: position(p.events.last()),
                            })
                        })
                        .collect();
                    Some(Ok(MultiAppendOutcome::from_parts(parts)))
                }
                MultiAppendPlan::PartialDuplicate { part, existing_ids } => {
                    r.parts.get(part).map(|p| {
                        Err(StoreError::PartialDuplicate(Box::new(PartialDuplicate {
                            stream: p.stream.clone(),
                            existing_ids,
                        })))
                    })
                }
                MultiAppendPlan::Conflicts(list) => {
                    let reads = list
                        .into_iter()
                        .filter_map(|c| {
                            let p = r.parts.get(c.part)?;
                            Some(ConflictRead {
                                stream: p.stream.clone(),
                                stored: stored(&p.stream),
                                expected: p.expected,
                                actual: c.actual,
                                first_concurrent: c.first_concurrent,
                            })
                        })
                        .collect();
                    conflicts.push((j, reads));
                    None
                }
                MultiAppendPlan::Write(plans) => {
                    if r.condition.is_some() {
                        // Its condition is judged later and may refuse it: nothing of this
                        // batch may be planned after it.
                        blocked.extend(r.parts.iter().map(|p| p.stream.clone()));
                    } else {
                        for (p, plan) in r.parts.iter().zip(&plans) {
                            if let AppendPlan::Write { after, .. } = plan {
                                let after = (*after).max(stored(&p.stream).last);
                                overlay
                                    .entry(p.stream.clone())
                                    .or_default()
                                    .write(after, &p.events);
                            }
                        }
                    }
                    writes.push((j, plans));
                    None
                }
            };
            if let Some(slot) = answers.get_mut(j) {
                *slot = answer;
            }
        }

        // Concurrent events of conflicts: those the first exchange read, or (more than it
        // reads past a stale expectation, among them events reads hide) read now, under the
        // same locks (the events reads show, `$2 ≤ version ≤ $3`: concurrent events are
        // only those).
        let mut conflict_errors: HashMap<usize, Vec<Conflict>> = HashMap::new();
        let mut conflict_reads: Vec<(usize, &ConflictRead)> = Vec::new();
        for (j, c) in conflicts
            .iter()
            .flat_map(|(j, reads)| reads.iter().map(move |c| (*j, c)))
        {
            let missed = match c.first() {
                Some(first) => past
                    .get(c.stream.as_str())
                    .and_then(|p| p.missed(first, max)),
                None => Some(Vec::new()),
            };
            match missed {
                Some(events) => conflict_errors
                    .entry(j)
                    .or_default()
                    .push(c.conflict(events)),
                None => conflict_reads.push((j, c)),
            }
        }
        let conflict_rows = try_join_all(conflict_reads.iter().map(|(_, c)| {
            let from = bound(c.first().map_or(u64::MAX, Version::get));
            let to = bound(c.stored.last.get());
            let oldest = c.stored.oldest_kept(now);
            let stream = c.stream.as_str();
            let stmt = &stream_stmt;
            let tx = &tx;
            async move {
                tx.query(stmt, &[&stream, &from, &to, &oldest, &limit])
                    .await
            }
        }))
        .await
        .map_err(|e| self.db(e))?;
        for ((j, c), rows) in conflict_reads.iter().zip(conflict_rows) {
            let concurrent_events = decode_all(&rows)?;
            conflict_errors
                .entry(*j)
                .or_default()
                .push(c.conflict(concurrent_events));
        }
        for (j, list) in conflict_errors {
            if let Some(slot) = answers.get_mut(j) {
                *slot = Some(Err(StoreError::Conflicts(list)));
            }
        }

        if writes.is_empty() {
            // What it answers (a duplicate's original, a conflict's missed events) may have
            // been committed by batches not yet durable: its callers are answered after its
            // mark, as a write's.
            let (committed, durable) =
                tokio::join!(tx.batch_execute("COMMIT"), self.mark(tx, &mark));
            committed.map_err(|e| self.db(e))?;
            let durable = durable.map_err(|e| self.db(e))?;
            session.committed();
            lone::remember(&mut self.known(), &versions, batch_streams(batch), &[]);
            return Ok((finish(answers, &deferred), durable));
        }

        // 3. The head lock: positions are assigned from here to COMMIT. A batch whose appends
        // carry no condition has nothing to check under it, so the batch function takes the
        // lock and then writes, its positions relative to the head the write reads, in one
        // call sent with COMMIT: no round trip of this process's falls between taking the
        // lock and COMMIT. One with conditions takes the lock and reads the head (a statement
        // after the lock, so its snapshot sees the last holder's commit) before checking them.
        let conditioned = writes
            .iter()
            .any(|(j, _)| batch.get(*j).is_some_and(|r| r.condition.is_some()));
        let start = if conditioned {
            let (head_lock, head_read) = tokio::try_join!(
                tx.prepare_cached(&self.write_sql.head_lock),
                tx.prepare_cached(&self.write_sql.head)
            )
            .map_err(|e| self.db(e))?;
            let (_, head_row) =
                tokio::try_join!(tx.query_one(&head_lock, &[]), tx.query_one(&head_read, &[]))
                    .map_err(|e| self.db(e))?;
            let start: i64 = head_row.try_get(0).map_err(|e| self.db(e))?;
            Position(u64::try_from(start).unwrap_or(0))
        } else {
            Position::ZERO
        };
        let mut next = start.next();
        let recorded_at = RecordedAt::now();
        let mut written: Vec<RecordedEvent> = Vec::new();
        let mut rebases: Vec<(usize, usize, StreamName, Version, Version, Stored)> = Vec::new();
        let mut outcomes: HashMap<usize, Vec<(usize, Appended)>> = HashMap::new();
        for (j, plans) in &writes {
            let Some(r) = batch.get(*j) else { continue };
            if let Some(c) = &r.condition {
                let mut matching = self
                    .condition_events(tx, &c.fail_if_events_match, c.after, start)
                    .await?;
                matching.extend(written.iter().filter(|e| c.is_violated_by(e)).cloned());
                if !matching.is_empty() {
                    matching.truncate(MATCHING_EVENTS_MAX);
                    if let Some(slot) = answers.get_mut(*j) {
                        *slot = Some(Err(c.failed(matching)));
                    }
                    continue;
                }
            }
            let mut appended = Vec::new();
            for (i, (p, plan)) in r.parts.iter().zip(plans).enumerate() {
                let AppendPlan::Write {
                    after,
                    rebased_from,
                } = plan
                else {
                    continue;
                };
                // A soft-deleted stream is at version 0 to the plan, but versions go on
                // after the last one ever written: a version is never reused.
                let after = &(*after).max(stored(&p.stream).last);
                let first_position = next;
                for (k, e) in (1u64..).zip(&p.events) {
                    written.push(RecordedEvent::new(
                        p.stream.clone(),
                        Version(after.get() + k),
                        next,
                        e.clone(),
                        recorded_at,
                    ));
                    next = next.next();
                }
                let last_version = Version(after.get() + p.events.len() as u64);
                if let Some(e) = rebased_from {
                    rebases.push((*j, i, p.stream.clone(), *e, *after, stored(&p.stream)));
                }
                appended.push((
                    i,
                    Appended {
                        stream: p.stream.clone(),
                        first_version: after.next(),
                        last_version,
                        first_position,
                        last_position: Position(next.get() - 1),
                    },
                ));
            }
            outcomes.insert(*j, appended);
        }

        // Rebased appends list the events they moved past: from their stream's span read
        // above, or (a long span) read each on its own.
        let ranges: Vec<(i64, i64)> = rebases
            .iter()
            .map(|(_, _, _, e, after, st)| {
                (
                    bound(e.next().max(st.floor()).get()),
                    bound((*after).min(st.last).get()),
                )
            })
            .collect();
        let own_reads: Vec<(usize, &StreamName, (i64, i64), i64)> = rebases
            .iter()
            .zip(&ranges)
            .enumerate()
            .filter(|(_, ((_, _, stream, _, _, _), _))| !shared.contains_key(stream.as_str()))
            .map(|(k, ((_, _, stream, _, _, st), range))| (k, stream, *range, st.oldest_kept(now)))
            .collect();
        let own_rows = try_join_all(own_reads.iter().map(|(_, stream, (from, to), oldest)| {
            let stream = stream.as_str();
            let (stmt, tx) = (&stream_stmt, &tx);
            async move {
                tx.query(stmt, &[&stream, &from, &to, &oldest, &limit])
                    .await
            }
        }))
        .await
        .map_err(|e| self.db(e))?;
        let mut own_events: HashMap<usize, Vec<RecordedEvent>> = HashMap::new();
        for ((k, _, _, _), rows) in own_reads.into_iter().zip(own_rows) {
            own_events.insert(k, decode_all(&rows)?);
        }
        // 4. Insert and stream index; then COMMIT, and the mark behind it in the same
        // exchange (ADR 0004): the COMMIT releases the head lock without waiting for its
        // flush, the mark's synchronous commit waits for it, and the callers are answered
        // after the mark.
        let durable = if conditioned {
            if !written.is_empty() {
                insert_rows(tx, s, &written).await.map_err(|e| self.db(e))?;
            }
            let (committed, durable) =
                tokio::join!(tx.batch_execute("COMMIT"), self.mark(tx, &mark));
            committed.map_err(|e| self.db(e))?;
            durable.map_err(|e| self.db(e))?
        } else {
            let write = prepare_write(tx, &self.write_sql, Call::Batch)
                .await
                .map_err(|e| self.db(e))?;
            let (head, committed, durable) = tokio::join!(
                write_relative(tx, &write, &written, None),
                tx.batch_execute("COMMIT"),
                self.mark(tx, &mark)
            );
            let head = head.map_err(|e| self.db(e))?;
            committed.map_err(|e| self.db(e))?;
            let durable = durable.map_err(|e| self.db(e))?;
            let Some(head) = head else {
                return Err(BatchError {
                    unavailable: false,
                    message: format!("{s}.concord_head has no row"),
                });
            };
            // The positions were relative to the head the statement found.
            let base = head.get().saturating_sub(written.len() as u64);
            for e in &mut written {
                e.position = Position(base + e.position.get());
            }
            for (_, appended) in outcomes.values_mut().flat_map(|a| a.iter_mut()) {
                appended.first_position = Position(base + appended.first_position.get());
                appended.last_position = Position(base + appended.last_position.get());
            }
            durable
        };
        session.committed();
        lone::remember(&mut self.known(), &versions, batch_streams(batch), &written);

        let mut rebased: HashMap<(usize, usize), (Version, Vec<RecordedEvent>)> = HashMap::new();
        for (k, ((j, i, stream, e, after, st), (from, to))) in
            rebases.iter().zip(&ranges).enumerate()
        {
            let mut events = match shared.get(stream.as_str()) {
                Some(span) => span
                    .iter()
                    .filter(|ev| (*from..=*to).contains(&bound(ev.version.get())))
                    .take(max)
                    .cloned()
                    .collect(),
                None => own_events.remove(&k).unwrap_or_default(),
            };
            // And those of this batch's earlier appends to the stream, not committed yet.
            let room = max.saturating_sub(events.len());
            events.extend(
                written
                    .iter()
                    .filter(|w| {
                        w.stream == *stream && w.version > (*e).max(st.last) && w.version <= *after
                    })
                    .take(room)
                    .cloned(),
            );
            rebased.insert((*j, *i), (*e, events));
        }

        for (j, appended) in outcomes {
            let parts = appended
                .into_iter()
                .map(|(i, a)| match rebased.remove(&(j, i)) {
                    Some((expected_version, concurrent_events)) => AppendOutcome::Rebased {
                        appended: a,
                        expected_version,
                        concurrent_events,
                    },
                    None => AppendOutcome::Appended(a),
                })
                .collect();
            if let Some(slot) = answers.get_mut(j) {
                *slot = Some(Ok(MultiAppendOutcome::from_parts(parts)));
            }
        }
        Ok((finish(answers, &deferred), durable))
    }

    /// The first events matching `query` after `after`, up to the head `head`.
    async fn condition_events(
        &self,
        client: &tokio_postgres::Client,
        query: &Query,
        after: Position,
        head: Position,
    ) -> Result<Vec<RecordedEvent>, BatchError> {
        crate::matching::matching_events(
            client,
            &self.schema,
            query,
            after,
            head,
            MATCHING_EVENTS_MAX,
        )
        .await
        .map_err(|e| match e {
            MatchingError::Driver(e) => self.db(e),
            MatchingError::Decode(e) => BatchError {
                unavailable: false,
                message: e.to_string(),
            },
        })
    }

    /// Runs the mark (`WriteSql::mark`, prepared as `statement`) on `client` in autocommit,
    /// committed synchronously: returns the durable head it wrote, which covers every batch
    /// committed before it. Sent in the exchange of a batch's COMMIT, after it. Every
    /// [`PRUNE_EVERY`]-th mark of this writer also removes the marks below the greatest.
    async fn mark(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        statement: &tokio_postgres::Statement,
    ) -> Result<Position, tokio_postgres::Error> {
        let row = client.query_one(statement, &[&self.channel]).await?;
        let head: i64 = row.try_get(0)?;
        self.prune_now(client).await;
        Ok(Position(u64::try_from(head).unwrap_or(0)))
    }

    /// Counts a mark; every [`PRUNE_EVERY`]-th, removes those below the greatest visible one
    /// (in a transaction that does not wait for its flush: a prune lost in a crash is only
    /// done again). A failure is logged, not answered: the appends it follows stand.
    async fn prune_now(&self, client: &deadpool_postgres::ClientWrapper) {
        if self.marks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY != PRUNE_EVERY - 1 {
            return;
        }
        let pruned = client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL synchronous_commit TO off; {}; COMMIT",
                self.write_sql.prune
            ))
            .await;
        if let Err(e) = pruned {
            tracing::warn!(error = %e, "postgres: pruning the durable marks failed");
        }
    }

    /// A pooled session for a transaction begun by hand.
    async fn session(&self) -> Result<Session, BatchError> {
        let client = self.pool.get().await.map_err(|e| BatchError {
            unavailable: true,
            message: crate::error::pool(&self.hosts, e).to_string(),
        })?;
        Ok(Session(Some(client)))
    }
}

/// A conflict whose concurrent events are still to be read.
#[derive(Debug)]
struct ConflictRead {
    stream: StreamName,
    stored: Stored,
    expected: concord_core::ExpectedVersion,
    actual: Version,
    first_concurrent: Option<Version>,
}

impl ConflictRead {
    /// The first concurrent version reads can still show (hidden and erased events were
    /// not missed).
    fn first(&self) -> Option<Version> {
        self.first_concurrent.map(|f| f.max(self.stored.floor()))
    }

    /// The conflict, with the concurrent events read from [`Self::first`] on.
    fn conflict(&self, concurrent_events: Vec<RecordedEvent>) -> Conflict {
        let truncated = self
            .first()
            .is_some_and(|first| first.get() + concurrent_events.len() as u64 <= self.actual.get());
        Conflict {
            stream: self.stream.clone(),
            expected: self.expected,
            actual: self.actual,
            concurrent_events,
            truncated,
        }
    }
}

/// The first exchange reads this many times the concurrent events a conflict reports
/// past each stream's stalest expectation: the writers of a hot stream in one batch are
/// stale over overlapping ranges, up to a batch behind one another.
const PAST_SPANS: i64 = 2;

/// Where [`state_and_past_sql`]'s event columns start: after the stream and its
/// lifecycle columns.
const PAST_AT: usize = 8;

/// Each stream's state (`$1`, the streams; the stream, then [`LIFECYCLE_COLUMNS`]) and,
/// from column [`PAST_AT`], its events after `after` (`$2`, a version or NULL for each
/// stream), up to `$3` of them, in version order: a row per event, the state repeated on
/// each, or one row with no event. The range is read only where the stream's last version
/// is past `after`.
fn state_and_past_sql(schema: &str) -> String {
    let state: Vec<String> = std::iter::once("stream")
        .chain(LIFECYCLE_COLUMNS.split(',').map(str::trim))
        .map(|c| format!("s.{c}"))
        .collect();
    format!(
        "SELECT {state}, e.* FROM unnest($1::text[], $2::bigint[]) AS k(stream, after) \
         JOIN {schema}.{view} s ON s.stream = k.stream \
         LEFT JOIN LATERAL (SELECT {COLUMNS} FROM {schema}.concord_events \
           WHERE stream = s.stream AND version > k.after AND s.version > k.after \
           ORDER BY version LIMIT $3) AS e ON true",
        state = state.join(", "),
        view = crate::schema::STREAM_STATE
    )
}

/// Each stream of `batch` with an expectation that can be stale (an exact version, or
/// `no_stream`: version 0), and the stalest of them.
fn stalest_expectations<'a>(batch: &[&'a MultiAppendRequest]) -> HashMap<&'a str, i64> {
    let mut stalest: HashMap<&'a str, i64> = HashMap::new();
    for p in batch.iter().flat_map(|r| r.parts.iter()) {
        let after = match p.expected {
            concord_core::ExpectedVersion::Exact(e) => bound(e.get()),
            concord_core::ExpectedVersion::NoStream => 0,
            concord_core::ExpectedVersion::Exists | concord_core::ExpectedVersion::Any => continue,
        };
        stalest
            .entry(p.stream.as_str())
            .and_modify(|a| *a = (*a).min(after))
            .or_insert(after);
    }
    stalest
}

/// One stream's events after the stalest expectation of the batch's appends to it, as the
/// first exchange read them.
#[derive(Debug, Default)]
struct Past {
    /// The version the read started after.
    after: i64,
    /// The events reads show, in version order.
    events: Vec<RecordedEvent>,
    /// Whether they are every such event up to the stream's last version.
    complete: bool,
}

impl Past {
    fn after(after: i64) -> Past {
        Past {
            after,
            ..Past::default()
        }
    }

    /// Keeps the events reads show of a stream stored as `stored` (not hidden by a delete
    /// or retention, nor erased), and notes whether the read reached its last version
    /// (fewer rows than the read's `limit`, or its last row the stream's last).
    fn keep_visible(&mut self, stored: &Stored, now: RecordedAt, limit: i64) {
        let last = stored.last;
        self.complete = bound(self.events.len() as u64) < limit
            || self.events.last().is_some_and(|e| e.version >= last);
        let (floor, oldest) = (stored.floor(), stored.oldest_kept(now));
        self.events.sort_by_key(|e| e.version);
        self.events.retain(|e| {
            e.version >= floor && e.version <= last && bound(e.recorded_at.as_millis()) >= oldest
        });
    }

    /// The first `max` events reads show from `first` on, if this read holds them.
    fn missed(&self, first: Version, max: usize) -> Option<Vec<RecordedEvent>> {
        if bound(first.get()) <= self.after {
            return None;
        }
        let events: Vec<RecordedEvent> = self
            .events
            .iter()
            .filter(|e| e.version >= first)
            .take(max)
            .cloned()
            .collect();
        (self.complete || events.len() >= max).then_some(events)
    }
}

/// The row of `stream` as the batch read it (none: the default).
fn stored_of(versions: &HashMap<String, Stored>, stream: &str) -> Stored {
    versions.get(stream).copied().unwrap_or_default()
}

/// Refuses an append naming a tombstoned stream (every part checked first, so nothing of
/// it is written), then one re-sending the id of an event that reads hide but a scavenge
/// has not erased yet (`check_hidden_ids`), as `MemoryStore` does.
fn check_lifecycle(
    request: &MultiAppendRequest,
    stored: impl Fn(&StreamName) -> Stored,
    found: &HashMap<(String, uuid::Uuid), (Version, Position)>,
) -> Result<(), StoreError> {
    for p in &request.parts {
        stored(&p.stream).check_not_tombstoned(&p.stream)?;
    }
    for p in &request.parts {
        let st = stored(&p.stream);
        let versions: Vec<Option<Version>> = p
            .events
            .iter()
            .map(|e| {
                found
                    .get(&(p.stream.as_str().to_owned(), *e.id.as_uuid()))
                    .map(|(v, _)| *v)
            })
            .collect();
        check_hidden_ids(
            &p.stream,
            &p.events,
            &versions,
            st.lifecycle.first_kept(st.last),
        )?;
    }
    Ok(())
}

/// Events read back inside the batch; a row that does not decode fails the batch.
fn decode_all(rows: &[tokio_postgres::Row]) -> Result<Vec<RecordedEvent>, BatchError> {
    rows.iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BatchError {
            unavailable: false,
            message: e.to_string(),
        })
}

/// Every stream `batch` names.
fn batch_streams<'a>(batch: &'a [&MultiAppendRequest]) -> impl Iterator<Item = &'a StreamName> {
    batch.iter().flat_map(|r| r.parts.iter().map(|p| &p.stream))
}

/// An append's answer; `None` for one deferred to the next batch.
type Answer = Option<Result<MultiAppendOutcome, StoreError>>;

fn finish(answers: Vec<Answer>, deferred: &HashSet<usize>) -> Vec<Answer> {
    answers
        .into_iter()
        .enumerate()
        .map(|(j, a)| {
            if deferred.contains(&j) {
                return None;
            }
            Some(a.unwrap_or_else(|| {
                Err(StoreError::Corrupted(
                    "the postgres writer left an append unanswered".into(),
                ))
            }))
        })
        .collect()
}

/// A stream the batch writes, as its earlier appends leave it: a later append to it is
/// planned after them (its expectation, idempotency and `rebase_unless` against them).
#[derive(Debug, Default)]
struct Overlay {
    /// Its version after the batch's writes so far.
    last: Version,
    /// The ids those writes carry, with their versions.
    ids: HashMap<uuid::Uuid, Version>,
    /// Their types, with their versions.
    types: Vec<(Version, EventType)>,
}

impl Overlay {
    fn write(&mut self, after: Version, events: &[concord_core::NewEvent]) {
        for (k, e) in (1u64..).zip(events) {
            let version = Version(after.get() + k);
            self.ids.insert(*e.id.as_uuid(), version);
            self.types.push((version, e.event_type.clone()));
        }
        self.last = Version(after.get() + events.len() as u64);
    }

    fn types_after(&self, expected: Version) -> impl Iterator<Item = &EventType> {
        self.types
            .iter()
            .filter(move |(v, _)| *v > expected)
            .map(|(_, t)| t)
    }
}

/// Marks after which a writer removes the marks below the last one (`schema::prune_marks_sql`):
/// readers read only the greatest, and the table stays a few pages.
const PRUNE_EVERY: u64 = 1000;

/// Takes the advisory locks of `$1` (keys from [`lock_keys`]) for the rest of the
/// transaction.
pub(crate) const LOCK_STREAMS_SQL: &str =
    "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k";

/// The advisory lock keys of `streams`, in the order every transaction takes them (so two
/// never wait for each other's).
pub(crate) fn lock_keys<'a>(schema: &str, streams: impl Iterator<Item = &'a str>) -> Vec<i64> {
    let mut keys: Vec<i64> = streams.map(|st| lock_key(schema, st)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The advisory lock key of a stream: FNV-1a of `schema NUL stream`, so stores in different
/// schemas never wait for each other. A collision only makes two streams share a lock.
pub(crate) fn lock_key(schema: &str, stream: &str) -> i64 {
    let hash = fnv1a(schema.bytes().chain([0]).chain(stream.bytes()));
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike `std`'s hasher.
pub(crate) fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use concord_core::{AppendRequest, ExpectedVersion, NewEvent};
    use tokio::task::yield_now;

    fn job(n: usize) -> Job {
        let event = NewEvent::json("Deposited", &serde_json::json!({ "amount": n })).unwrap();
        let stream = StreamName::new(format!("account-{n}")).unwrap();
        let (reply, _) = oneshot::channel();
        Job {
            request: AppendRequest::new(stream, ExpectedVersion::Any, vec![event]).into(),
            reply,
        }
    }

    #[tokio::test]
    async fn the_next_batch_waits_for_the_callers_just_answered_to_send_their_next_appends() {
        let appending = Appending::default();
        let (tx, mut rx) = mpsc::channel(16);
        // Three writers in a loop, all just answered: the first has sent its next append,
        // the other two will on their next turn.
        let (first, _) = appending.enter();
        let (second, _) = appending.enter();
        let (third, _) = appending.enter();
        drop(first);
        let (_first_next, _) = appending.enter();
        tx.send(job(1)).await.unwrap();
        let next = |answered, n| {
            let (appending, tx) = (&appending, tx.clone());
            async move {
                yield_now().await;
                drop(answered);
                let (guard, _) = appending.enter();
                tx.send(job(n)).await.unwrap();
                guard
            }
        };
        let mut waiting = VecDeque::new();
        let ((), _second_next, _third_next) = tokio::join!(
            gather(&mut rx, &mut waiting, &appending, 0),
            next(second, 2),
            next(third, 3)
        );
        assert_eq!(waiting.len(), 3, "one batch of the three appends");
    }

    #[tokio::test]
    async fn callers_that_do_not_append_again_are_not_waited_for() {
        let appending = Appending::default();
        let (tx, mut rx) = mpsc::channel(16);
        let (_queued, _) = appending.enter();
        tx.send(job(1)).await.unwrap();
        let (answered, _) = appending.enter();
        let leaves = async move {
            yield_now().await;
            drop(answered);
        };
        let mut waiting = VecDeque::new();
        tokio::join!(gather(&mut rx, &mut waiting, &appending, 0), leaves);
        assert_eq!(waiting.len(), 1);
        // An append under way that never arrives costs a bounded wait, not a hang.
        let (_stuck, _) = appending.enter();
        let mut waiting = VecDeque::new();
        tx.send(job(2)).await.unwrap();
        gather(&mut rx, &mut waiting, &appending, 0).await;
        assert_eq!(waiting.len(), 1);
    }

    #[tokio::test]
    async fn appends_carried_by_a_batch_in_flight_are_not_waited_for() {
        use futures::FutureExt;
        let appending = Appending::default();
        let (tx, mut rx) = mpsc::channel(16);
        // Two callers: one's append is in a batch in flight, the other's is queued.
        let (_flying, _) = appending.enter();
        let (_queued, _) = appending.enter();
        tx.send(job(1)).await.unwrap();
        let mut waiting = VecDeque::new();
        // Not counting the one in flight, the writer would wait a turn for it.
        assert!(
            gather(&mut rx, &mut waiting, &appending, 0)
                .now_or_never()
                .is_none()
        );
        assert!(
            gather(&mut rx, &mut waiting, &appending, 1)
                .now_or_never()
                .is_some(),
            "returns at once"
        );
        assert_eq!(waiting.len(), 1);
    }

    fn on(streams: &[&str]) -> Job {
        let event = NewEvent::json("Deposited", &serde_json::json!({ "amount": 1 })).unwrap();
        let parts = streams
            .iter()
            .map(|s| {
                AppendRequest::new(
                    StreamName::new(*s).unwrap(),
                    ExpectedVersion::Any,
                    vec![event.clone()],
                )
            })
            .collect();
        let (reply, _) = oneshot::channel();
        Job {
            request: MultiAppendRequest::new(parts),
            reply,
        }
    }

    fn streams_of(jobs: &[Job]) -> Vec<String> {
        jobs.iter()
            .map(|j| {
                j.request
                    .parts
                    .iter()
                    .map(|p| p.stream.as_str())
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect()
    }

    #[test]
    fn many_appends_to_distinct_streams_are_sent_as_two_batches_of_half_as_many() {
        let mut waiting: VecDeque<Job> = (0..64).map(job).collect();
        let first = next_batch(&mut waiting, &HashSet::new(), 1);
        assert_eq!(first.len(), 32);
        assert_eq!(streams_of(&first)[0], "account-0");
        let busy: HashSet<StreamName> = first
            .iter()
            .flat_map(|j| j.request.parts.iter().map(|p| p.stream.clone()))
            .collect();
        let second = next_batch(&mut waiting, &busy.iter().collect(), SPLIT_MIN / 2);
        assert_eq!(second.len(), 32);
        assert_eq!(streams_of(&second)[0], "account-32");
        assert!(waiting.is_empty());
    }

    #[test]
    fn the_missed_events_are_read_after_the_stream_and_its_lifecycle_columns() {
        assert_eq!(PAST_AT, 1 + LIFECYCLE_COLUMNS.split(',').count());
        assert!(state_and_past_sql("concord").starts_with(
            "SELECT s.stream, s.version, s.deleted_through, s.tombstoned, s.max_count, \
             s.max_age_seconds, s.truncate_before, s.erased_through, e.* "
        ));
    }

    #[test]
    fn few_appends_are_sent_as_one_batch() {
        let mut waiting: VecDeque<Job> = (0..SPLIT_MIN - 1).map(job).collect();
        assert_eq!(
            next_batch(&mut waiting, &HashSet::new(), 1).len(),
            SPLIT_MIN - 1
        );
        assert!(waiting.is_empty());
    }

    #[test]
    fn appends_to_one_hot_stream_stay_one_batch() {
        let mut waiting: VecDeque<Job> = (0..64).map(|_| on(&["auction-1"])).collect();
        assert_eq!(next_batch(&mut waiting, &HashSet::new(), 1).len(), 64);
        assert!(waiting.is_empty());
    }

    #[test]
    fn an_append_to_a_stream_in_flight_waits_and_so_do_later_ones_to_its_streams() {
        let mut waiting: VecDeque<Job> = VecDeque::from([
            on(&["account-1"]),
            on(&["account-2", "account-1"]),
            on(&["account-2"]),
        ]);
        waiting.extend((100..100 + SPLIT_MIN / 2).map(job));
        let flying = StreamName::new("account-1").unwrap();
        let batch = next_batch(&mut waiting, &HashSet::from([&flying]), SPLIT_MIN / 2);
        assert_eq!(batch.len(), SPLIT_MIN / 2);
        assert_eq!(streams_of(&batch)[0], "account-100");
        let left: Vec<Job> = waiting.into_iter().collect();
        assert_eq!(
            streams_of(&left),
            ["account-1", "account-2+account-1", "account-2"],
            "the rest stay in the order they came"
        );
    }

    #[test]
    fn beside_a_batch_in_flight_too_few_appends_wait_for_it_to_land() {
        let mut waiting: VecDeque<Job> = (0..SPLIT_MIN / 2 - 1).map(job).collect();
        let flying = StreamName::new("account-999").unwrap();
        let busy = HashSet::from([&flying]);
        assert!(next_batch(&mut waiting, &busy, fewest(&busy, 64)).is_empty());
        let left: Vec<Job> = waiting.into_iter().collect();
        assert_eq!(left.len(), SPLIT_MIN / 2 - 1, "nothing taken");
        assert_eq!(streams_of(&left)[0], "account-0");
        // Once it has landed, they fly.
        let mut waiting: VecDeque<Job> = left.into_iter().collect();
        assert_eq!(
            next_batch(&mut waiting, &HashSet::new(), 1).len(),
            SPLIT_MIN / 2 - 1
        );
    }

    #[test]
    fn a_process_with_too_few_callers_for_two_batches_flies_one_at_a_time() {
        let flying = StreamName::new("account-999").unwrap();
        let busy = HashSet::from([&flying]);
        // 21 writers, 5 of them in flight: the 16 others wait for it, whatever their number.
        assert_eq!(fewest(&busy, 21), usize::MAX);
        let mut waiting: VecDeque<Job> = (0..16).map(job).collect();
        assert!(next_batch(&mut waiting, &busy, fewest(&busy, 21)).is_empty());
        assert_eq!(waiting.len(), 16);
        // 64 writers: 16 may fly beside it; with nothing in flight, any number.
        assert_eq!(next_batch(&mut waiting, &busy, fewest(&busy, 64)).len(), 16);
        assert_eq!(fewest(&HashSet::new(), 21), 1);
    }
}
