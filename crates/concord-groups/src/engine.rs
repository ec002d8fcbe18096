//! `Groups`: consumer groups over any [`EventStore`], their state kept in the store.
//!
//! Every operation on a group is decided on the group's state as this process last read
//! it from the state stream `$group-<name>`, and written there with that stream's exact
//! version. A process whose state is stale (another node wrote since) gets a version
//! conflict, reads the events it missed and decides again, so two nodes can never both
//! deliver, ack or park the same event. Within one process, operations on a group decide
//! in turn (one async mutex per group), so they conflict only with other processes.
//!
//! Deciding and writing are pipelined: an operation folds its decision into the state at
//! the next version and hands it to the group's writer task, which appends what has been
//! decided meanwhile as one batch at the exact version the store has. The next operation
//! decides on the state with that batch folded in while it is being written, instead of
//! waiting a round trip (or an fsync) for it. An operation answers only once its batch is
//! written; a batch that conflicts or fails takes the decisions made on top of it along,
//! and each of their operations decides again on the state read afresh.
//!
//! So a decision that writes needs no read of the state stream first: the exact version
//! checks it. Only one that writes nothing (no message to hand out, an ack of ids the
//! cached state does not know, a group it does not know) is decided again on the state read
//! fresh, since another node may have delivered, nacked or created meanwhile. A poll
//! that finds messages is then one read of the source and one append, and an ack one
//! append, where each used to read the state stream's version first.
//!
//! Loading a group reads its state stream backwards to the last snapshot (written every
//! [`SNAPSHOT_EVERY`] state events) or creation, so a restart does not replay the whole
//! history.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use concord_core::{
    AppendRequest, Direction, EventStore, EventType, ExpectedVersion, Json, NewEvent, Position,
    RecordedEvent, StoreError, StreamMetadata, StreamName, Version,
};
use futures::FutureExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{MutexGuard, Notify, watch};

use crate::ahead::{self, Page, ReadAhead, Take, read_page};
use crate::config::{
    ACK_IDS_MAX, ConsumerName, GroupName, GroupSpec, NackAction, Ordering, POLL_MAX,
    STATE_STREAM_PREFIX, Source, StartFrom,
};
use crate::error::GroupError;
use crate::state::{self, Entry, GroupEvent, GroupState, Message};
use concord_core::InvalidInput;

/// State events between two snapshots.
pub const SNAPSHOT_EVERY: u64 = 1000;

/// How often one operation decides again after a version conflict before giving up.
const CONFLICT_RETRIES: usize = 50;

/// Pages of the source one poll reads at most (a source whose next events are all
/// filtered out or store-owned is read on by the next poll).
const PAGES_PER_POLL: usize = 10;

/// Source events `pending` counts one by one for an `all` source; past them it counts
/// the positions left up to the head.
const PENDING_SCAN_MAX: usize = 10_000;

/// State events read at once while loading or catching up.
const STATE_PAGE: usize = 500;

/// A source of the current time in milliseconds since the Unix epoch: deadlines are
/// stored as wall-clock times so that they mean the same after a restart and on every
/// node.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told: specs use it to expire deliveries without waiting.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<std::sync::atomic::AtomicU64>);

impl ManualClock {
    /// A clock at `ms`.
    pub fn at(ms: u64) -> Self {
        ManualClock(Arc::new(std::sync::atomic::AtomicU64::new(ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A group as `GET /groups/{group}` shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group.
    pub group: GroupName,
    /// Where its events come from.
    pub source: Source,
    /// Where it started.
    pub from: StartFrom,
    /// Ack timeout (ms).
    pub ack_timeout_ms: u64,
    /// Deliveries before parking.
    pub max_deliveries: u32,
    /// Ordering.
    pub ordering: Ordering,
    /// Events acked, ever.
    pub acked: u64,
    /// Events skipped by a nack, ever.
    pub skipped: u64,
    /// Events delivered and within their ack timeout.
    pub in_flight: u64,
    /// Events parked.
    pub parked: u64,
    /// Source events not yet acked, skipped, in flight or parked.
    pub pending: u64,
}

/// A delivery in flight, for the UI and `concord group info`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct InFlight {
    /// The event's stream.
    pub stream: StreamName,
    /// Its version.
    pub version: Version,
    /// Its offset in the source (position, or version for a stream source).
    pub offset: u64,
    /// Which delivery this is.
    pub delivery: u32,
    /// Who holds it.
    pub consumer: ConsumerName,
    /// When it goes back to the group (ms since the Unix epoch).
    pub deadline: u64,
}

/// A parked event.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Parked {
    /// Deliveries it had before it was parked.
    pub deliveries: u32,
    /// The event (`None` when it is no longer in the source).
    pub event: Option<RecordedEvent>,
    /// Its stream and version, also when the event is gone.
    pub stream: StreamName,
    /// Its version.
    pub version: Version,
}

/// What `create_or_update` did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Upserted {
    /// The group was created.
    Created,
    /// Its settings changed.
    Updated,
    /// It already had exactly these settings.
    Unchanged,
}

/// Consumer groups over one store.
#[derive(Debug)]
pub struct Groups {
    log: StateLog,
    clock: Arc<dyn Clock>,
    slots: Mutex<HashMap<GroupName, Arc<Slot>>>,
}

/// Reading and appending groups' state streams: what a group's writer task needs of
/// [`Groups`], so it can be cloned into the task.
#[derive(Clone, Debug)]
struct StateLog {
    store: Arc<dyn EventStore>,
    snapshot_every: u64,
}

/// One group's place in this process.
#[derive(Debug)]
struct Slot {
    group: GroupName,
    loaded: tokio::sync::Mutex<Loaded>,
    /// Woken after every change this process makes to the group: a waiting poll looks
    /// again (an ack may have unblocked a stream, a nack returned an event).
    changed: Notify,
    /// Source events read ahead of the polls (see the `ahead` module).
    ahead: ReadAhead,
}

/// The group's state as this process last read it, with the decisions it made since.
#[derive(Debug)]
struct Loaded {
    /// Whether the state stream has been read at all (false again after a batch of
    /// decisions failed: the next operation reads it afresh).
    read: bool,
    /// The state stream's version folded into `state`, decisions not yet written
    /// included.
    version: Version,
    /// The state stream's version the store is known to have (read, or written by this
    /// process): where the writer appends the next batch.
    written: Version,
    /// Decisions folded into `state` that the writer has not taken yet, encoded.
    staged: Vec<NewEvent>,
    /// Tells the operations that staged decisions how their append ended.
    staged_outcome: watch::Sender<Outcome>,
    /// How the batch the writer is appending will end; `None` when it appends nothing.
    in_flight: Option<watch::Receiver<Outcome>>,
    /// Whether a writer task runs for the group.
    writer: bool,
    /// The group (`None`: it does not exist).
    state: Option<GroupState>,
    /// State events since the last snapshot or creation.
    since_base: u64,
    /// A source offset past `read_to` below which the source holds nothing for the group
    /// (filtered out or store-owned): where the next poll reads from. Kept in memory only,
    /// so that scanning past the group's own state events is not written down each time.
    skip_to: u64,
}

impl Default for Loaded {
    fn default() -> Self {
        Loaded {
            read: false,
            version: Version::NONE,
            written: Version::NONE,
            staged: Vec::new(),
            staged_outcome: watch::channel(Outcome::Pending).0,
            in_flight: None,
            writer: false,
            state: None,
            since_base: 0,
            skip_to: 0,
        }
    }
}

impl Loaded {
    /// The outcome that answers every decision folded so far (the staged ones', else the
    /// batch in flight's); `None` when everything folded is written.
    fn last_outcome(&self) -> Option<watch::Receiver<Outcome>> {
        if self.staged.is_empty() {
            self.in_flight.clone()
        } else {
            Some(self.staged_outcome.subscribe())
        }
    }

    /// Drops every staged decision (their operations learn `outcome` and decide again)
    /// and marks the state for reading afresh, since it has them folded in.
    fn void(&mut self, outcome: Outcome) {
        self.staged.clear();
        self.staged_outcome.send_replace(outcome);
        self.staged_outcome = watch::channel(Outcome::Pending).0;
        self.read = false;
    }
}

/// How the append of a batch of decisions ended, as the operations that made them learn it.
#[derive(Clone, Debug)]
enum Outcome {
    /// Not answered yet.
    Pending,
    /// Written at the versions the decisions were folded at.
    Written,
    /// Another process wrote first; the state has been read up to what it wrote (or is
    /// marked for reading afresh). Decide again.
    Conflicted,
    /// The append failed. The first operation to look takes the error and reports it;
    /// the others decide again (and meet the error themselves if it lasts).
    Failed(Arc<Mutex<Option<StoreError>>>),
}

/// Waits for `outcome` to be answered.
async fn answered(mut outcome: watch::Receiver<Outcome>) -> Outcome {
    match outcome.wait_for(|o| !matches!(o, Outcome::Pending)).await {
        Ok(o) => o.clone(),
        // The writer task is gone without answering (its runtime stopped).
        Err(_) => Outcome::Failed(Arc::new(Mutex::new(None))),
    }
}

impl Groups {
    /// Groups over `store`, with the system clock.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self::with_clock(store, Arc::new(SystemClock))
    }

    /// Groups over `store` with `clock`.
    pub fn with_clock(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        Groups {
            log: StateLog {
                store,
                snapshot_every: SNAPSHOT_EVERY,
            },
            clock,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Snapshots every `events` state events instead of every [`SNAPSHOT_EVERY`] (at
    /// least 1): for tests of loading from a snapshot.
    #[must_use]
    pub fn snapshot_every(mut self, events: u64) -> Self {
        self.log.snapshot_every = events.max(1);
        self
    }

    /// The store the groups live in.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.log.store
    }

    fn slot(&self, group: &GroupName) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(group.clone()).or_insert_with(|| {
            Arc::new(Slot {
                group: group.clone(),
                loaded: tokio::sync::Mutex::new(Loaded::default()),
                changed: Notify::new(),
                ahead: ReadAhead::default(),
            })
        }))
    }

    /// Forgets a group this process holds no state for, so names asked about but never
    /// created do not pile up.
    fn forget_if_absent(&self, slot: &Slot, loaded: &Loaded) {
        if loaded.state.is_none() {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.remove(&slot.group);
        }
    }

    /// Creates the group, or updates its settings.
    ///
    /// # Errors
    /// [`GroupError::Invalid`] for a spec that breaks a rule; [`GroupError::Fixed`] when
    /// the group exists with another `source` or `from`; store failures.
    pub async fn create_or_update(
        &self,
        group: &GroupName,
        spec: GroupSpec,
    ) -> Result<Upserted, GroupError> {
        spec.validate()?;
        let slot = self.slot(group);
        for _ in 0..CONFLICT_RETRIES {
            let mut loaded = self.current(&slot).await?;
            let event = match &loaded.state {
                None => {
                    let last = match &spec.source {
                        Source::Stream(s) => self.log.store.stream_version(s).await?.get(),
                        Source::All(_) => self.log.store.head().await?.get(),
                    };
                    GroupEvent::GroupCreated {
                        group: group.clone(),
                        spec: spec.clone(),
                        read_to: GroupState::first_offset(spec.from, last),
                    }
                }
                Some(existing) => {
                    check_fixed(group, "source", &existing.spec.source, &spec.source)?;
                    check_fixed(group, "from", &existing.spec.from, &spec.from)?;
                    if existing.spec == spec {
                        return Ok(Upserted::Unchanged);
                    }
                    GroupEvent::GroupUpdated {
                        ack_timeout_ms: spec.ack_timeout_ms,
                        max_deliveries: spec.max_deliveries,
                        ordering: spec.ordering,
                    }
                }
            };
            let created = matches!(event, GroupEvent::GroupCreated { .. });
            let (outcome, _) = self.stage(&slot, &mut loaded, event)?;
            drop(loaded);
            if written(outcome).await? {
                slot.changed.notify_waiters();
                return Ok(if created {
                    Upserted::Created
                } else {
                    Upserted::Updated
                });
            }
        }
        Err(GroupError::Contended(group.clone()))
    }

    /// Deletes the group: it stops existing at once, and its state is never read again
    /// (a group created later under the same name starts afresh).
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn delete(&self, group: &GroupName) -> Result<(), GroupError> {
        let slot = self.slot(group);
        for _ in 0..CONFLICT_RETRIES {
            let mut loaded = self.current(&slot).await?;
            if loaded.state.is_none() {
                self.forget_if_absent(&slot, &loaded);
                return Err(GroupError::NotFound(group.clone()));
            }
            let (outcome, deleted) = self.stage(&slot, &mut loaded, GroupEvent::GroupDeleted {})?;
            drop(loaded);
            if written(outcome).await? {
                self.log.truncate_state(&slot, deleted).await;
                slot.changed.notify_waiters();
                self.forget_if_absent(&slot, &*slot.loaded.lock().await);
                return Ok(());
            }
        }
        Err(GroupError::Contended(group.clone()))
    }

    /// The group's settings and counts.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn info(&self, group: &GroupName) -> Result<GroupInfo, GroupError> {
        let now = self.clock.now_ms();
        let (mut info, source, from, waiting) = self
            .with_state(group, |state, skip_to| {
                let counts = state.counts(now);
                let info = GroupInfo {
                    group: state.group.clone(),
                    source: state.spec.source.clone(),
                    from: state.spec.from,
                    ack_timeout_ms: state.spec.ack_timeout_ms,
                    max_deliveries: state.spec.max_deliveries,
                    ordering: state.spec.ordering,
                    acked: counts.acked,
                    skipped: counts.skipped,
                    in_flight: counts.in_flight,
                    parked: counts.parked,
                    pending: 0,
                };
                let from = state.read_to.max(skip_to);
                (info, state.spec.source.clone(), from, counts.waiting)
            })
            .await?;
        let unread = self.unread(&source, from).await?;
        info.pending = waiting.saturating_add(unread);
        Ok(info)
    }

    /// The deliveries in flight now, by offset.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn in_flight(&self, group: &GroupName) -> Result<Vec<InFlight>, GroupError> {
        let now = self.clock.now_ms();
        self.with_state(group, |state, _| {
            state
                .in_flight()
                .filter_map(|(offset, e)| match &e.status {
                    state::Status::InFlight { deadline, consumer } if *deadline > now => {
                        Some(InFlight {
                            stream: e.stream.clone(),
                            version: e.version,
                            offset,
                            delivery: e.deliveries,
                            consumer: consumer.clone(),
                            deadline: *deadline,
                        })
                    }
                    _ => None,
                })
                .collect()
        })
        .await
    }

    /// Every group, by name.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list(&self) -> Result<Vec<GroupInfo>, GroupError> {
        let mut groups = Vec::new();
        let mut after: Option<StreamName> = None;
        loop {
            let page = self
                .log
                .store
                .list_streams(STATE_STREAM_PREFIX, after.as_ref(), 1000)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.stream.clone());
            for info in &page {
                let Some(group) = GroupName::of_state_stream(&info.stream) else {
                    continue;
                };
                match self.info(&group).await {
                    Ok(info) => groups.push(info),
                    Err(GroupError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(groups)
    }

    /// Hands at most `max` messages to `consumer`, waiting up to `wait` for at least one.
    ///
    /// The wait ends early when the store's head moves (new source events), when this
    /// process changes the group (an ack may unblock a stream, a nack return an event), or
    /// when a delivery in flight expires; nothing is polled on a timer.
    ///
    /// # Errors
    /// [`GroupError::Invalid`] for `max` outside 1–1000; [`GroupError::NotFound`]; store
    /// failures.
    pub async fn poll(
        &self,
        group: &GroupName,
        consumer: &ConsumerName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, GroupError> {
        if !(1..=POLL_MAX).contains(&max) {
            return Err(InvalidInput::new(
                "max",
                format!("max is {max}, but it must be from 1 to {POLL_MAX}"),
            )
            .into());
        }
        let slot = self.slot(group);
        let until = tokio::time::Instant::now() + wait;
        loop {
            let changed = slot.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let (messages, _) = self.poll_once(&slot, consumer, max).await?;
            if !messages.is_empty() || wait.is_zero() {
                return Ok(messages);
            }
            // Nothing now. The head is read before the source is read again: an event
            // committed after this read moves the head past it, so the wait below cannot
            // miss it. (Not before every look: a poll that finds messages needs no head.)
            let head = self.log.store.head().await?;
            let (messages, next_deadline) = self.poll_once(&slot, consumer, max).await?;
            let now = tokio::time::Instant::now();
            if !messages.is_empty() || now >= until {
                return Ok(messages);
            }
            let mut wake = until;
            if let Some(deadline) = next_deadline {
                let in_ms = deadline.saturating_sub(self.clock.now_ms());
                wake = wake.min(now + Duration::from_millis(in_ms));
            }
            tokio::select! {
                () = changed => {}
                _ = self.log.store.wait_for_head(head) => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// One look at the group: the messages it can hand out now, and the next deadline of
    /// a delivery in flight.
    async fn poll_once(
        &self,
        slot: &Arc<Slot>,
        consumer: &ConsumerName,
        max: usize,
    ) -> Result<(Vec<Message>, Option<u64>), GroupError> {
        // Optimistic: a decision that writes is checked by the state stream's exact
        // version (a stale state conflicts, catches up and decides again), so only one that
        // writes nothing needs the current state first.
        let mut need_current = false;
        // A look that found nothing, on the state at this version, with this next deadline.
        let mut found_nothing: Option<(Version, Option<u64>)> = None;
        for _ in 0..CONFLICT_RETRIES {
            let (mut loaded, current) = self.locked(slot, need_current).await?;
            if let Some((version, next_deadline)) = found_nothing
                && current
                && loaded.version == version
            {
                // The current state is the one just looked at: the look would find nothing
                // again (the caller's wait reads the source once more before sleeping).
                return Ok((Vec::new(), next_deadline));
            }
            let Some(state) = loaded.state.as_ref() else {
                if !current {
                    need_current = true;
                    continue;
                }
                self.forget_if_absent(slot, &loaded);
                return Err(GroupError::NotFound(slot.group.clone()));
            };
            let now = self.clock.now_ms();
            let mut plan = state.plan_poll(consumer.clone(), max, now);
            plan.skip_to(loaded.skip_to);
            let mut pages = 0;
            while plan.wants_more() && pages < PAGES_PER_POLL {
                pages += 1;
                let room = max.saturating_sub(plan.redelivered().len()).max(1);
                let limit = match state.spec.ordering {
                    Ordering::None => room,
                    Ordering::PerStream => room.saturating_mul(2).clamp(100, 1000),
                };
                let page = self.source_page(slot, state, plan.read_to(), limit).await?;
                plan.offer(page.events, page.next);
                if page.caught_up {
                    break;
                }
            }
            let mut bodies = Vec::with_capacity(plan.redelivered().len());
            for offset in plan.redelivered() {
                let body = match state.entries.get(offset) {
                    Some(entry) => self.read_entry(entry).await?,
                    None => None,
                };
                bodies.push(body);
            }
            let read_to = plan.read_to();
            let (event, messages) = plan.finish(bodies);
            let next_deadline = state.next_deadline(now);
            let Some(event) = event else {
                loaded.skip_to = loaded.skip_to.max(read_to);
                if !current {
                    // Nothing to hand out by a state that may be stale: look again on the
                    // current one (another node may have nacked or expired deliveries).
                    need_current = true;
                    found_nothing = Some((loaded.version, next_deadline));
                    continue;
                }
                return Ok((messages, next_deadline));
            };
            let (outcome, _) = self.stage(slot, &mut loaded, event)?;
            let next_deadline = loaded.state.as_ref().and_then(|s| s.next_deadline(now));
            drop(loaded);
            if written(outcome).await? {
                return Ok((messages, next_deadline));
            }
            need_current = true;
        }
        Err(GroupError::Contended(slot.group.clone()))
    }

    /// Acks deliveries; returns how many of `ack_ids` were live (the rest are ignored).
    ///
    /// # Errors
    /// [`GroupError::Invalid`] for more than 1000 ids; [`GroupError::NotFound`]; store
    /// failures.
    pub async fn ack(&self, group: &GroupName, ack_ids: &[String]) -> Result<usize, GroupError> {
        check_ack_ids(ack_ids)?;
        self.change(group, |state, now| {
            state.decide_ack(ack_ids.iter().map(String::as_str), now)
        })
        .await
    }

    /// Gives deliveries back with `action`; returns how many of `ack_ids` were live.
    ///
    /// # Errors
    /// As [`Groups::ack`].
    pub async fn nack(
        &self,
        group: &GroupName,
        ack_ids: &[String],
        action: NackAction,
    ) -> Result<usize, GroupError> {
        check_ack_ids(ack_ids)?;
        self.change(group, |state, now| {
            state.decide_nack(ack_ids.iter().map(String::as_str), action, now)
        })
        .await
    }

    /// Returns every parked event to the group (its deliveries counted afresh); returns
    /// how many.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn replay_parked(&self, group: &GroupName) -> Result<usize, GroupError> {
        self.change(group, |state, _| state.decide_replay()).await
    }

    /// The parked events, by offset, at most `limit`.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn parked(&self, group: &GroupName, limit: usize) -> Result<Vec<Parked>, GroupError> {
        let entries: Vec<Entry> = self
            .with_state(group, |state, _| {
                state.parked().take(limit).map(|(_, e)| e.clone()).collect()
            })
            .await?;
        let mut parked = Vec::with_capacity(entries.len());
        for entry in entries {
            parked.push(Parked {
                deliveries: entry.deliveries,
                event: self.read_entry(&entry).await?,
                stream: entry.stream,
                version: entry.version,
            });
        }
        Ok(parked)
    }

    /// Decides one change on the current state and writes it; returns how many entries it
    /// touched.
    async fn change(
        &self,
        group: &GroupName,
        decide: impl Fn(&GroupState, u64) -> Option<GroupEvent>,
    ) -> Result<usize, GroupError> {
        let slot = self.slot(group);
        // Optimistic, as in `poll_once`: only a decision that writes nothing (an ack of ids
        // the cached state does not know, a group it does not know) needs the current
        // state, which an ack through another node's delivery does.
        let mut need_current = false;
        for _ in 0..CONFLICT_RETRIES {
            let (mut loaded, current) = self.locked(&slot, need_current).await?;
            let Some(state) = loaded.state.as_ref() else {
                if !current {
                    need_current = true;
                    continue;
                }
                self.forget_if_absent(&slot, &loaded);
                return Err(GroupError::NotFound(group.clone()));
            };
            let Some(event) = decide(state, self.clock.now_ms()) else {
                if !current {
                    need_current = true;
                    continue;
                }
                return Ok(0);
            };
            let touched = match &event {
                GroupEvent::Acked { offsets } | GroupEvent::ParkedReplayed { offsets } => {
                    offsets.len()
                }
                GroupEvent::Nacked {
                    retried,
                    parked,
                    skipped,
                } => retried.len() + parked.len() + skipped.len(),
                _ => 0,
            };
            let (outcome, _) = self.stage(&slot, &mut loaded, event)?;
            drop(loaded);
            if written(outcome).await? {
                slot.changed.notify_waiters();
                return Ok(touched);
            }
            need_current = true;
        }
        Err(GroupError::Contended(group.clone()))
    }

    /// `look` at the group's current state (and the in-memory `skip_to`), under its lock.
    async fn with_state<R>(
        &self,
        group: &GroupName,
        look: impl FnOnce(&GroupState, u64) -> R,
    ) -> Result<R, GroupError> {
        let slot = self.slot(group);
        let loaded = self.current(&slot).await?;
        match &loaded.state {
            Some(state) => Ok(look(state, loaded.skip_to)),
            None => {
                self.forget_if_absent(&slot, &loaded);
                Err(GroupError::NotFound(group.clone()))
            }
        }
    }

    /// The group's definition.
    ///
    /// # Errors
    /// [`GroupError::NotFound`]; store failures.
    pub async fn spec(&self, group: &GroupName) -> Result<GroupSpec, GroupError> {
        self.with_state(group, |state, _| state.spec.clone()).await
    }

    /// Source events at `from` onwards, up to `limit` of them: from what was read ahead
    /// when it holds them, else from the store; then the next page is read ahead if due.
    async fn source_page(
        &self,
        slot: &Arc<Slot>,
        state: &GroupState,
        from: u64,
        limit: usize,
    ) -> Result<Page, GroupError> {
        let key = (state.created, &state.spec.source);
        let mut page = None;
        for _ in 0..2 {
            let landed = slot.ahead.landed.notified();
            let mut landed = std::pin::pin!(landed);
            landed.as_mut().enable();
            match slot.ahead.take(key, from, limit) {
                Take::Events(events) => page = Some(events),
                // The read ahead under way is a round trip at most; past a second, the
                // store is read instead.
                Take::Wait => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), landed).await;
                    continue;
                }
                Take::Store => {}
            }
            break;
        }
        let page = match page {
            Some(page) => page,
            None => {
                let page = read_page(&*self.log.store, &state.spec.source, from, limit).await?;
                slot.ahead.restart(key, &page);
                page
            }
        };
        if let Some(refill) = slot.ahead.due() {
            let (slot, store) = (Arc::clone(slot), Arc::clone(&self.log.store));
            drop(tokio::spawn(async move {
                let read = read_page(&*store, &refill.source, refill.from, ahead::PAGE).await;
                slot.ahead.filled(refill, read.ok());
            }));
        }
        Ok(page)
    }

    /// The event an entry stands for, if the source still holds it.
    async fn read_entry(&self, entry: &Entry) -> Result<Option<RecordedEvent>, GroupError> {
        let events = match self
            .log
            .store
            .read_stream(&entry.stream, entry.version, Direction::Forward, 1)
            .await
        {
            Err(StoreError::StreamDeleted(_)) => return Ok(None),
            read => read?,
        };
        Ok(events.into_iter().find(|e| e.version == entry.version))
    }

    /// Source events at `from` onwards, not taken yet.
    async fn unread(&self, source: &Source, from: u64) -> Result<u64, GroupError> {
        match source {
            Source::Stream(stream) => {
                let version = match self.log.store.stream_version(stream).await {
                    Err(StoreError::StreamDeleted(_)) => return Ok(0),
                    version => version?.get(),
                };
                Ok(version.saturating_add(1).saturating_sub(from))
            }
            Source::All(all) => {
                let filter = all.filter();
                let mut counted = 0u64;
                let mut scanned = 0usize;
                let mut from = Position(from);
                loop {
                    let page = self.log.store.read_all(from, &filter, 1000).await?;
                    scanned += page.events.len();
                    counted += page.events.iter().filter(|e| !e.stream.is_system()).count() as u64;
                    if page.is_caught_up() || page.events.is_empty() {
                        return Ok(counted);
                    }
                    from = page.next_from;
                    if scanned >= PENDING_SCAN_MAX {
                        let rest = page.head.get().saturating_add(1).saturating_sub(from.get());
                        return Ok(counted.saturating_add(rest));
                    }
                }
            }
        }
    }

    /// The group's state under its lock, read first if this process has not read it (or
    /// a failed batch voided it), or made current when `current` is asked for; also
    /// whether it is known to be current.
    async fn locked<'a>(
        &self,
        slot: &'a Slot,
        current: bool,
    ) -> Result<(MutexGuard<'a, Loaded>, bool), GroupError> {
        if current {
            return Ok((self.current(slot).await?, true));
        }
        let mut loaded = slot.loaded.lock().await;
        if loaded.read {
            return Ok((loaded, false));
        }
        self.log.refresh(slot, &mut loaded).await?;
        Ok((loaded, true))
    }

    /// The group's state under its lock, as current as this process can know it: read
    /// from the store when none of its decisions is waiting to be written, or else once
    /// they are written (a batch appended at its exact version was current when it was).
    async fn current<'a>(&self, slot: &'a Slot) -> Result<MutexGuard<'a, Loaded>, GroupError> {
        for _ in 0..CONFLICT_RETRIES {
            let mut loaded = slot.loaded.lock().await;
            let Some(pending) = loaded.last_outcome() else {
                self.log.refresh(slot, &mut loaded).await?;
                return Ok(loaded);
            };
            drop(loaded);
            if let Outcome::Written = answered(pending).await {
                let loaded = slot.loaded.lock().await;
                if loaded.read {
                    return Ok(loaded);
                }
            }
        }
        Err(GroupError::Contended(slot.group.clone()))
    }

    /// Folds `event` into the state at the next version and stages it for the group's
    /// writer (started when none runs). Returns where its outcome will be told, and its
    /// version.
    fn stage(
        &self,
        slot: &Arc<Slot>,
        loaded: &mut Loaded,
        event: GroupEvent,
    ) -> Result<(watch::Receiver<Outcome>, Version), GroupError> {
        let version = loaded.version.next();
        loaded.staged.push(encode(&slot.group, &event, version)?);
        fold(loaded, event, version);
        if !loaded.writer {
            loaded.writer = true;
            tokio::spawn(self.log.clone().write_out_or_recover(Arc::clone(slot)));
        }
        Ok((loaded.staged_outcome.subscribe(), version))
    }
}

impl StateLog {
    /// [`StateLog::write_out`], and if it panics (a bug, in a backend or here), the group
    /// is left as after a failed batch rather than with a writer marked as running that
    /// is gone: its decisions not known to be written are decided again on the state read
    /// afresh (the batch under way may or may not have been written), and the next
    /// decision starts a writer.
    async fn write_out_or_recover(self, slot: Arc<Slot>) {
        let written = AssertUnwindSafe(self.write_out(Arc::clone(&slot)))
            .catch_unwind()
            .await;
        if written.is_err() {
            tracing::error!(group = %slot.group, "the group's writer panicked; the decisions it had not written are decided again");
            let mut loaded = slot.loaded.lock().await;
            loaded.writer = false;
            loaded.in_flight = None;
            loaded.void(Outcome::Failed(Arc::new(Mutex::new(None))));
        }
    }

    /// A group's writer: appends the staged decisions as one batch at the exact version
    /// the store has, and again with what was staged while that batch was in flight,
    /// until nothing is staged. A batch that does not get written voids the decisions
    /// staged on top of it too: they were decided on a state that included it.
    async fn write_out(self, slot: Arc<Slot>) {
        loop {
            let (at, events, outcome, snapshot) = {
                let mut loaded = slot.loaded.lock().await;
                if loaded.staged.is_empty() {
                    loaded.writer = false;
                    return;
                }
                let snapshot = self.stage_snapshot(&slot, &mut loaded);
                let outcome = std::mem::replace(
                    &mut loaded.staged_outcome,
                    watch::channel(Outcome::Pending).0,
                );
                loaded.in_flight = Some(outcome.subscribe());
                (
                    loaded.written,
                    std::mem::take(&mut loaded.staged),
                    outcome,
                    snapshot,
                )
            };
            let count = events.len() as u64;
            let appended = self.append(&slot.group, at, events).await;
            let mut loaded = slot.loaded.lock().await;
            loaded.in_flight = None;
            let answer = match appended {
                Ok(None) => {
                    loaded.written = Version(at.get() + count);
                    if let Some(first) = snapshot {
                        self.truncate_state(&slot, first).await;
                    }
                    Outcome::Written
                }
                Ok(Some(actual)) => {
                    loaded.void(Outcome::Conflicted);
                    if let Err(e) = self.catch_up_to(&slot, &mut loaded, actual).await {
                        tracing::warn!(group = %slot.group, error = %e, "cannot read the group's state after a conflict; the next operation reads it again");
                    }
                    Outcome::Conflicted
                }
                Err(e) => {
                    loaded.void(Outcome::Failed(Arc::new(Mutex::new(None))));
                    Outcome::Failed(Arc::new(Mutex::new(Some(e))))
                }
            };
            outcome.send_replace(answer);
        }
    }

    /// Stages a snapshot of the state (after everything staged) when one is due, so that
    /// it goes out in the same append; returns its first version.
    fn stage_snapshot(&self, slot: &Slot, loaded: &mut Loaded) -> Option<Version> {
        if loaded.since_base < self.snapshot_every {
            return None;
        }
        let snapshot = loaded.state.as_ref()?.snapshot();
        let first = loaded.version.next();
        let mut encoded = Vec::with_capacity(snapshot.len());
        for (i, event) in snapshot.iter().enumerate() {
            match encode(&slot.group, event, Version(first.get() + i as u64)) {
                Ok(e) => encoded.push(e),
                Err(e) => {
                    tracing::warn!(group = %slot.group, error = %e, "cannot write a snapshot of the group's state; loading it reads more events until one is written");
                    return None;
                }
            }
        }
        loaded.staged.extend(encoded);
        for (i, event) in snapshot.into_iter().enumerate() {
            fold(loaded, event, Version(first.get() + i as u64));
        }
        Some(first)
    }

    /// Brings `loaded` up to the state stream's current version. Only with no decision
    /// pending: the store is behind a state that has them folded in.
    async fn refresh(&self, slot: &Slot, loaded: &mut Loaded) -> Result<(), GroupError> {
        debug_assert!(loaded.staged.is_empty() && loaded.in_flight.is_none());
        let stream = slot.group.state_stream();
        let current = self.store.stream_version(stream).await?;
        if loaded.read && current == loaded.version {
            return Ok(());
        }
        let behind = current.get().saturating_sub(loaded.version.get());
        if !loaded.read || current < loaded.version || behind > self.snapshot_every {
            return self.load(slot, loaded, current).await;
        }
        let mut from = loaded.version.next();
        while from <= current {
            let events = self
                .store
                .read_stream(stream, from, Direction::Forward, STATE_PAGE)
                .await?;
            let Some(last) = events.last().map(|e| e.version) else {
                break;
            };
            for e in events {
                let event = decode(&slot.group, &e)?;
                fold(loaded, event, e.version);
            }
            from = last.next();
        }
        loaded.written = loaded.version;
        Ok(())
    }

    /// Reads the state stream backwards from `current` to its last base event (creation,
    /// deletion or snapshot) and folds forward from there.
    async fn load(
        &self,
        slot: &Slot,
        loaded: &mut Loaded,
        current: Version,
    ) -> Result<(), GroupError> {
        let stream = slot.group.state_stream();
        let mut tail: Vec<(Version, GroupEvent)> = Vec::new();
        let mut from = current;
        'scan: while from.get() >= 1 {
            let events = self
                .store
                .read_stream(stream, from, Direction::Backward, STATE_PAGE)
                .await?;
            let Some(lowest) = events.last().map(|e| e.version) else {
                break;
            };
            for e in events {
                let event = decode(&slot.group, &e)?;
                let base = event.is_base();
                tail.push((e.version, event));
                if base {
                    break 'scan;
                }
            }
            if lowest.get() <= 1 {
                break;
            }
            from = Version(lowest.get() - 1);
        }
        loaded.read = true;
        loaded.version = Version::NONE;
        loaded.state = None;
        loaded.since_base = 0;
        loaded.skip_to = 0;
        for (version, event) in tail.into_iter().rev() {
            fold(loaded, event, version);
        }
        loaded.version = current;
        loaded.written = current;
        Ok(())
    }

    /// Hides the state events before `first` (a snapshot's first event, or the deletion),
    /// which no load reads any more, so that a scavenge erases them: a group's state then
    /// takes the room of its last snapshot and what followed, not of its whole history.
    /// Best effort: on a store without retention they stay, and only take room.
    async fn truncate_state(&self, slot: &Slot, first: Version) {
        let metadata = StreamMetadata {
            truncate_before: Some(first),
            ..StreamMetadata::NONE
        };
        match self
            .store
            .set_stream_metadata(slot.group.state_stream(), metadata)
            .await
        {
            Ok(_) | Err(StoreError::Unsupported { .. }) => {}
            Err(e) => {
                tracing::warn!(group = %slot.group, error = %e, "cannot truncate the group's state stream before its last snapshot; a later snapshot tries again");
            }
        }
    }

    /// Reads the state stream until this process has seen version `actual`, which a
    /// conflict reported. A backend may answer reads only up to what it has made durable
    /// (the embedded store), so right after a conflict the winner's events may not be
    /// readable yet: this waits for the head to move instead of deciding again, and
    /// conflicting again, on the same stale state.
    async fn catch_up_to(
        &self,
        slot: &Slot,
        loaded: &mut Loaded,
        actual: Version,
    ) -> Result<(), GroupError> {
        for _ in 0..CONFLICT_RETRIES {
            let head = self.store.head().await?;
            self.refresh(slot, loaded).await?;
            if loaded.version >= actual {
                return Ok(());
            }
            tokio::select! {
                _ = self.store.wait_for_head(head) => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        Ok(())
    }

    /// Appends `events` at exactly `at`: `None` when written, else the version the state
    /// stream actually has.
    async fn append(
        &self,
        group: &GroupName,
        at: Version,
        events: Vec<NewEvent>,
    ) -> Result<Option<Version>, StoreError> {
        let request = AppendRequest::new(
            group.state_stream().clone(),
            ExpectedVersion::Exact(at),
            events,
        );
        match self.store.append(request).await {
            Ok(_) => Ok(None),
            Err(StoreError::Conflict(c)) => Ok(Some(c.actual)),
            Err(e) => Err(e),
        }
    }
}

/// Waits for the outcome of an operation's staged decision: `true` when it is written,
/// `false` when the operation must decide again (after a short random pause when it lost
/// a race), the store's error when the append failed.
async fn written(outcome: watch::Receiver<Outcome>) -> Result<bool, GroupError> {
    match answered(outcome).await {
        Outcome::Written => Ok(true),
        Outcome::Conflicted => {
            // A process that keeps writing wins every race against one that must first
            // read what it missed (on PostgreSQL, two processes sharing a group starved
            // one of them); a random pause of up to 2 ms lets the loser through.
            tokio::time::sleep(Duration::from_micros(jitter_micros(2_000))).await;
            Ok(false)
        }
        Outcome::Failed(error) => {
            match error.lock().unwrap_or_else(PoisonError::into_inner).take() {
                Some(e) => Err(e.into()),
                None => Ok(false),
            }
        }
        Outcome::Pending => Ok(false),
    }
}

/// A state event as the store takes it; `version` is where it goes, for the error.
fn encode(group: &GroupName, event: &GroupEvent, version: Version) -> Result<NewEvent, GroupError> {
    let data = serde_json::to_vec(event).map_err(|e| GroupError::Corrupted {
        group: group.clone(),
        version: version.get(),
        message: format!("cannot encode a state event: {e}"),
    })?;
    let event_type = EventType::new(event.type_name())?;
    Ok(NewEvent::new(event_type, Json::from_trusted(data)))
}

/// Folds one state event, read at `version`, into `loaded`.
fn fold(loaded: &mut Loaded, event: GroupEvent, version: Version) {
    if event.is_base() {
        loaded.since_base = 0;
        if !matches!(event, GroupEvent::Snapshot { .. }) {
            // Another group from here on: what was known about the source is not.
            loaded.skip_to = 0;
        }
    } else {
        loaded.since_base += 1;
    }
    state::apply(&mut loaded.state, event, version.get());
    loaded.version = version;
    loaded.read = true;
}

fn decode(group: &GroupName, event: &RecordedEvent) -> Result<GroupEvent, GroupError> {
    let corrupted = |message: String| GroupError::Corrupted {
        group: group.clone(),
        version: event.version.get(),
        message,
    };
    let json = event
        .data
        .as_json()
        .ok_or_else(|| corrupted("its data is not JSON".to_owned()))?;
    serde_json::from_slice(json.as_bytes()).map_err(|e| corrupted(e.to_string()))
}

fn check_fixed<T: PartialEq + Serialize>(
    group: &GroupName,
    field: &'static str,
    existing: &T,
    asked: &T,
) -> Result<(), GroupError> {
    if existing == asked {
        return Ok(());
    }
    let show = |v: &T| serde_json::to_string(v).unwrap_or_default();
    Err(GroupError::Fixed {
        group: group.clone(),
        field,
        message: format!(
            "group {group} already exists with {field} {}, which cannot change (asked for {}); delete the group first or use another name",
            show(existing),
            show(asked)
        ),
    })
}

fn check_ack_ids(ack_ids: &[String]) -> Result<(), GroupError> {
    if ack_ids.len() > ACK_IDS_MAX {
        return Err(InvalidInput::new(
            "ack_ids",
            format!(
                "{} ack ids were given, but at most {ACK_IDS_MAX} are allowed at once",
                ack_ids.len()
            ),
        )
        .into());
    }
    Ok(())
}

/// A random number of microseconds below `max`, for backing off after a lost race.
fn jitter_micros(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState is seeded afresh: enough randomness to break a tie, no extra crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(max);
    hasher.finish() % max.max(1)
}
