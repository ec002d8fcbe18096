//! The handler: load state from a stream (from the latest snapshot when there is one),
//! decide, append at the version the state was read at, and apply the command's policy
//! when the stream moved.
//!
//! Invariant: every decision is appended with `ExpectedVersion::Exact(v)` where `v` is the
//! version of the state it was decided on, so no event is ever written on a state its
//! decision did not see — except through the two policies that say so explicitly
//! (`RebaseUnless`, decided by the store's rule, and `Merge`, by the resolver).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use concord_core::{
    AppendOutcome, AppendRequest, Appended, Conflict, Direction, EventId, EventStore, EventType,
    ExpectedVersion, Json, NewEvent, RecordedEvent, StoreError, StreamName, Version,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::{Aggregate, MERGE_ROUNDS_MAX, Policy};
use crate::codec::{decode, encode};
use crate::outcome::{CommandError, Committed, Resolution};

/// How many events one read of a stream asks for.
const READ_PAGE: usize = 1000;

/// The event type of snapshot events.
pub const SNAPSHOT_EVENT_TYPE: &str = "Snapshot";

/// The stream that holds the snapshots of `stream`: `snapshot-<stream>`.
///
/// Stream names starting with `$` are reserved for the store, so snapshots live in an
/// ordinary stream of the category `snapshot`; they stay out of the aggregate's own category
/// (`account`), so projections over it never see them. `None` when the name would be longer
/// than a stream name may be: that stream simply has no snapshots.
pub fn snapshot_stream(stream: &StreamName) -> Option<StreamName> {
    StreamName::new(format!("snapshot-{stream}")).ok()
}

/// State read from a stream: what a decision is based on.
#[derive(Clone, Debug)]
pub struct Loaded<A> {
    /// The stream.
    pub stream: StreamName,
    /// The folded state.
    pub state: A,
    /// The stream's version the state includes (0: no stream).
    pub version: Version,
    /// The version of the snapshot the load started from, if any.
    pub snapshot: Option<Version>,
}

/// Per-call options: who acts, and a policy that overrides [`Aggregate::policy`].
pub struct Options<A: Aggregate> {
    /// Written to each event's `metadata.actor`.
    pub actor: Option<String>,
    /// The conflict policy for this call (default: the aggregate's for the command).
    pub policy: Option<Policy<A>>,
}

impl<A: Aggregate> Options<A> {
    /// No actor, the aggregate's policy.
    pub fn new() -> Self {
        Options {
            actor: None,
            policy: None,
        }
    }

    /// Acting as `actor`.
    pub fn by(actor: impl Into<String>) -> Self {
        Options {
            actor: Some(actor.into()),
            policy: None,
        }
    }

    /// With `policy` instead of the aggregate's.
    #[must_use]
    pub fn policy(mut self, policy: Policy<A>) -> Self {
        self.policy = Some(policy);
        self
    }
}

impl<A: Aggregate> Default for Options<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Aggregate> Clone for Options<A> {
    fn clone(&self) -> Self {
        Options {
            actor: self.actor.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<A: Aggregate> fmt::Debug for Options<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("actor", &self.actor)
            .field("policy", &self.policy)
            .finish()
    }
}

type EncodeState<A> = fn(&A) -> Result<serde_json::Value, serde_json::Error>;
type DecodeState<A> = fn(serde_json::Value) -> Result<A, serde_json::Error>;

struct Snapshots<A> {
    every: u64,
    encode: EncodeState<A>,
    decode: DecodeState<A>,
}

impl<A> Clone for Snapshots<A> {
    fn clone(&self) -> Self {
        Snapshots {
            every: self.every,
            encode: self.encode,
            decode: self.decode,
        }
    }
}

fn encode_state<A: Serialize>(state: &A) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(state)
}

fn decode_state<A: DeserializeOwned>(value: serde_json::Value) -> Result<A, serde_json::Error> {
    serde_json::from_value(value)
}

/// Runs commands of aggregate `A` against a store.
pub struct Handler<A: Aggregate> {
    store: Arc<dyn EventStore>,
    snapshots: Option<Snapshots<A>>,
}

impl<A: Aggregate> Clone for Handler<A> {
    fn clone(&self) -> Self {
        Handler {
            store: Arc::clone(&self.store),
            snapshots: self.snapshots.clone(),
        }
    }
}

impl<A: Aggregate> fmt::Debug for Handler<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("store", &self.store.backend())
            .field("snapshot_every", &self.snapshots.as_ref().map(|s| s.every))
            .finish()
    }
}

type Outcome<A> =
    Result<Committed<<A as Aggregate>::Event>, CommandError<<A as Aggregate>::Rejection>>;

impl<A: Aggregate> Handler<A> {
    /// A handler over `store`, without snapshots.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Handler {
            store,
            snapshots: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Takes a snapshot of the state every `every` events (when a commit crosses a multiple
    /// of `every`), in the stream [`snapshot_stream`], as an event of type
    /// [`SNAPSHOT_EVENT_TYPE`] with data `{"version": v, "state": …}`. Loads then start from
    /// the latest snapshot. A snapshot that no longer decodes (the state's shape changed) is
    /// skipped and the stream replayed in full; a failed snapshot write does not fail the
    /// command (the next boundary tries again). `every` of 0 turns snapshots off.
    #[must_use]
    pub fn with_snapshots(mut self, every: u64) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        self.snapshots = (every > 0).then_some(Snapshots {
            every,
            encode: encode_state::<A>,
            decode: decode_state::<A>,
        });
        self
    }

    /// Folds `stream` into state: the latest snapshot (if any), then every event after it.
    ///
    /// # Errors
    /// [`CommandError::Decode`] for an event that is not one of `A`'s; store failures.
    pub async fn load(&self, stream: &StreamName) -> Result<Loaded<A>, CommandError<A::Rejection>> {
        let (mut state, mut version, snapshot) = match self.read_snapshot(stream).await? {
            Some((state, version)) => (state, version, Some(version)),
            None => (A::default(), Version::NONE, None),
        };
        self.catch_up(stream, &mut state, &mut version).await?;
        Ok(Loaded {
            stream: stream.clone(),
            state,
            version,
            snapshot,
        })
    }

    /// Folds every event of `stream` from version 1, ignoring snapshots.
    ///
    /// # Errors
    /// As [`Handler::load`].
    pub async fn replay(
        &self,
        stream: &StreamName,
    ) -> Result<Loaded<A>, CommandError<A::Rejection>> {
        let (mut state, mut version) = (A::default(), Version::NONE);
        self.catch_up(stream, &mut state, &mut version).await?;
        Ok(Loaded {
            stream: stream.clone(),
            state,
            version,
            snapshot: None,
        })
    }

    /// Loads `stream` and runs `command` on it (see [`Handler::execute_on`]).
    ///
    /// # Errors
    /// As [`Handler::execute_on`].
    pub async fn execute(
        &self,
        stream: &StreamName,
        command: A::Command,
        options: &Options<A>,
    ) -> Outcome<A> {
        let loaded = self.load(stream).await?;
        self.execute_on(loaded, command, options).await
    }

    /// Decides `command` on `loaded` (which may be stale: that is how a client that read
    /// earlier expresses what it saw) and appends at `loaded.version`. On a conflict the
    /// policy decides what happens; the result says exactly what did.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when the domain refuses (at first or on fresh state);
    /// [`CommandError::Conflict`] when the policy does not get past the concurrent events;
    /// decode, encode and store failures.
    pub async fn execute_on(
        &self,
        loaded: Loaded<A>,
        command: A::Command,
        options: &Options<A>,
    ) -> Outcome<A> {
        let policy = options
            .policy
            .clone()
            .unwrap_or_else(|| A::policy(&command));
        let Loaded {
            stream,
            state: base,
            version: based_on,
            ..
        } = loaded;
        let mut state = base.clone();
        let mut version = based_on;
        let mut retries: u32 = 0;
        let mut over: Vec<RecordedEvent> = Vec::new();
        let mut concurrent: Vec<A::Event> = Vec::new();
        let mut jitter = Jitter::new();
        let first = base
            .decide(&command)
            .map_err(|reason| CommandError::Rejected {
                reason,
                version,
                retries,
                over: Vec::new(),
            })?;
        let mut ours = first.clone();
        loop {
            if ours.is_empty() {
                let resolution = resolved(&policy, retries, over);
                return Ok(Committed {
                    stream,
                    based_on,
                    appended: None,
                    events: ours,
                    resolution,
                    snapshot: None,
                });
            }
            let mut request = AppendRequest::new(
                stream.clone(),
                ExpectedVersion::Exact(version),
                encode_events::<A>(&stream, &ours, options.actor.as_deref())?,
            );
            if let Policy::RebaseUnless(types) = &policy {
                request = request.rebase_unless(types.clone());
            }
            let conflict = match self.store.append(request).await {
                Ok(outcome) => {
                    let appended = outcome.appended().clone();
                    let (resolution, known) = match outcome {
                        AppendOutcome::Appended(_) => {
                            (resolved(&policy, retries, over), Vec::new())
                        }
                        AppendOutcome::Rebased {
                            expected_version,
                            concurrent_events,
                            ..
                        } => {
                            let known = concurrent_events.clone();
                            (
                                Resolution::Rebased {
                                    expected_version,
                                    over: concurrent_events,
                                },
                                known,
                            )
                        }
                        AppendOutcome::Duplicate(_) => (Resolution::Duplicate, Vec::new()),
                    };
                    let snapshot = match resolution {
                        Resolution::Duplicate => None,
                        _ => {
                            self.snapshot_after(state, version, &known, &ours, &appended)
                                .await
                        }
                    };
                    return Ok(Committed {
                        stream,
                        based_on,
                        appended: Some(appended),
                        events: ours,
                        resolution,
                        snapshot,
                    });
                }
                Err(StoreError::Conflict(conflict)) => conflict,
                Err(e) => return Err(e.into()),
            };
            let rounds_max = match &policy {
                Policy::Reject | Policy::RebaseUnless(_) => 0,
                Policy::Retry(retry) => retry.attempts,
                Policy::Merge(_) => MERGE_ROUNDS_MAX,
            };
            if retries >= rounds_max {
                return Err(CommandError::Conflict { conflict, retries });
            }
            retries = retries.saturating_add(1);
            if let Policy::Retry(retry) = &policy {
                let wait = jitter.below(retry.backoff.cap(retries));
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let missed = self.events_after(&stream, version, &conflict).await?;
            if missed.is_empty() {
                // The stream is not ahead of the decision (an expectation ahead of the
                // stream): there is nothing to re-decide over.
                return Err(CommandError::Conflict { conflict, retries });
            }
            for event in &missed {
                let typed: A::Event = decode(event)?;
                state.apply(&typed);
                concurrent.push(typed);
                version = event.version;
            }
            over.extend(missed);
            let decided = match &policy {
                Policy::Merge(resolver) => resolver.resolve(&base, &concurrent, &first),
                _ => state.decide(&command),
            };
            ours = decided.map_err(|reason| CommandError::Rejected {
                reason,
                version,
                retries,
                over: over.clone(),
            })?;
        }
    }

    /// Every event of `stream` after `version`: the conflict's list when it is complete,
    /// otherwise read from the store (which also picks up anything newer).
    async fn events_after(
        &self,
        stream: &StreamName,
        version: Version,
        conflict: &Conflict,
    ) -> Result<Vec<RecordedEvent>, CommandError<A::Rejection>> {
        let listed = &conflict.concurrent_events;
        let complete = !conflict.truncated
            && listed.len() as u64 == conflict.actual.get().saturating_sub(version.get())
            && listed
                .iter()
                .zip(1_u64..)
                .all(|(e, i)| version.checked_add(i) == Some(e.version));
        if complete {
            return Ok(listed.clone());
        }
        let mut events = Vec::new();
        let mut from = version.next();
        loop {
            let page = self
                .store
                .read_stream(stream, from, Direction::Forward, READ_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            from = last.version.next();
            events.extend(page);
        }
        Ok(events)
    }

    async fn catch_up(
        &self,
        stream: &StreamName,
        state: &mut A,
        version: &mut Version,
    ) -> Result<(), CommandError<A::Rejection>> {
        loop {
            let page = self
                .store
                .read_stream(stream, version.next(), Direction::Forward, READ_PAGE)
                .await?;
            if page.is_empty() {
                return Ok(());
            }
            for event in &page {
                state.apply(&decode(event)?);
                *version = event.version;
            }
        }
    }

    async fn read_snapshot(
        &self,
        stream: &StreamName,
    ) -> Result<Option<(A, Version)>, CommandError<A::Rejection>> {
        let (Some(snapshots), Some(name)) = (&self.snapshots, snapshot_stream(stream)) else {
            return Ok(None);
        };
        let latest = self
            .store
            .read_stream(&name, Version::MAX, Direction::Backward, 1)
            .await?;
        let Some(event) = latest.first() else {
            return Ok(None);
        };
        let Ok(mut value) = event.data.to_value() else {
            return Ok(None);
        };
        let Some(version) = value.get("version").and_then(serde_json::Value::as_u64) else {
            return Ok(None);
        };
        let Some(state) = value.get_mut("state").map(serde_json::Value::take) else {
            return Ok(None);
        };
        Ok((snapshots.decode)(state)
            .ok()
            .map(|state| (state, Version(version))))
    }

    /// Writes a snapshot when the commit crossed a multiple of `every` and the state after
    /// it is known exactly: `state` at `version`, then `known` (events the store reported
    /// between), then ours.
    async fn snapshot_after(
        &self,
        mut state: A,
        mut version: Version,
        known: &[RecordedEvent],
        ours: &[A::Event],
        appended: &Appended,
    ) -> Option<Version> {
        let snapshots = self.snapshots.as_ref()?;
        let last = appended.last_version.get();
        let before = appended.first_version.get().saturating_sub(1);
        if last / snapshots.every == before / snapshots.every {
            return None;
        }
        for event in known {
            if event.version != version.next() {
                return None;
            }
            state.apply(&decode(event).ok()?);
            version = event.version;
        }
        if version.next() != appended.first_version {
            return None;
        }
        for event in ours {
            state.apply(event);
        }
        let data =
            serde_json::json!({ "version": last, "state": (snapshots.encode)(&state).ok()? });
        let event = NewEvent::new(
            EventType::new(SNAPSHOT_EVENT_TYPE).ok()?,
            Json::from_value(&data),
        );
        let name = snapshot_stream(&appended.stream)?;
        let request = AppendRequest::new(name, ExpectedVersion::Any, vec![event]);
        self.store
            .append(request)
            .await
            .ok()
            .map(|_| appended.last_version)
    }
}

/// The resolution of an append that went through as asked, after `retries` rounds.
fn resolved<A: Aggregate>(
    policy: &Policy<A>,
    retries: u32,
    over: Vec<RecordedEvent>,
) -> Resolution {
    match (retries, policy) {
        (0, _) => Resolution::AsDecided,
        (rounds, Policy::Merge(_)) => Resolution::Merged { rounds, over },
        (retries, _) => Resolution::Retried { retries, over },
    }
}

/// The events to append for `ours`: type and data from the codec, `metadata.actor`, tags.
fn encode_events<A: Aggregate>(
    stream: &StreamName,
    ours: &[A::Event],
    actor: Option<&str>,
) -> Result<Vec<NewEvent>, CommandError<A::Rejection>> {
    let metadata = match actor {
        Some(actor) => Json::from_value(&serde_json::json!({ "actor": actor })),
        None => Json::empty_object(),
    };
    ours.iter()
        .map(|event| {
            let (event_type, data) = encode(event)?;
            Ok(NewEvent::new(event_type, data)
                .with_metadata(metadata.clone())
                .with_tags(A::tags(stream, event)))
        })
        .collect()
}

/// A small random source for backoff jitter (splitmix64), seeded from a random event id so
/// the crate needs no random-number dependency.
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new() -> Self {
        let seed = EventId::new().as_uuid().as_u64_pair();
        Jitter(seed.0 ^ seed.1)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniformly random duration in `[0, cap]`.
    pub(crate) fn below(&mut self, cap: Duration) -> Duration {
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next() % nanos.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_below_its_cap() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            assert!(j.below(Duration::from_millis(3)) <= Duration::from_millis(3));
        }
        assert_eq!(j.below(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn snapshot_streams_are_in_their_own_category() {
        let s = snapshot_stream(&StreamName::new("account-42").unwrap()).unwrap();
        assert_eq!(s.as_str(), "snapshot-account-42");
        assert_eq!(s.category().as_str(), "snapshot");
        assert!(snapshot_stream(&StreamName::new("a".repeat(256)).unwrap()).is_none());
    }
}
