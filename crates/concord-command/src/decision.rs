//! Decisions over a query instead of one stream (Dynamic Consistency Boundaries).
//!
//! An invariant that spans streams — a transfer needs the source's balance, a username
//! must be unused among all users — is decided on the events a [`Query`] selects, and the
//! events are appended (to one or several streams) with that query as the append's
//! condition: "fail if an event matching it was appended after the position I read up
//! to". The store checks this atomically with the write, so nothing is ever written on a
//! state the decision did not see; a failed condition is a conflict with the events that
//! were missed, and the same policies apply as for stream decisions: reject, or retry on
//! fresh state.

use std::sync::Arc;

use concord_core::{
    AppendRequest, ConditionFailed, Conflict, EventStore, MultiAppendOutcome, MultiAppendRequest,
    Position, Query, RecordedEvent, StoreError,
};

use crate::aggregate::Retry;
use crate::handler::Jitter;

/// How many events one page of the query read asks for.
const QUERY_PAGE: usize = 1000;

/// A decision over the events a query selects.
pub trait Decision: Default + Send + Sync + 'static {
    /// What is asked.
    type Command: Send + Sync;
    /// Why the domain refuses.
    type Rejection: Send;

    /// The events the decision depends on (also the append's condition).
    fn query(command: &Self::Command) -> Query;

    /// Folds one matching event into the state.
    fn apply(&mut self, event: &RecordedEvent);

    /// The appends (one per stream) the command leads to, or why not. Parts usually say
    /// `ExpectedVersion::Any` or `NoStream`: the condition is what guards the decision.
    ///
    /// # Errors
    /// The domain's refusal.
    fn decide(&self, command: &Self::Command) -> Result<Vec<AppendRequest>, Self::Rejection>;

    /// What to do when the condition fails: reject (the default) or decide again.
    fn policy(_command: &Self::Command) -> DecisionPolicy {
        DecisionPolicy::Reject
    }
}

/// What a [`Decider`] does when events matching the query arrived after the read.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum DecisionPolicy {
    /// Return the failed condition with the events that were missed.
    #[default]
    Reject,
    /// Read the query again and re-decide on the fresh state.
    Retry(Retry),
}

/// A decision that was appended.
#[derive(Clone, Debug)]
pub struct Decided {
    /// Where every part landed.
    pub outcome: MultiAppendOutcome,
    /// The position the final decision read up to (the condition's `after`).
    pub based_on: Position,
    /// How many times it was decided again.
    pub retries: u32,
    /// The events that arrived after earlier reads and were re-decided over.
    pub over: Vec<RecordedEvent>,
}

/// Why a decision was not appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError<R> {
    /// The domain refused.
    ///
    /// ### Handling
    /// Not retryable; tell the caller `reason`.
    #[error("decision rejected at position {after}")]
    Rejected {
        /// The domain's reason.
        reason: R,
        /// The position of the state that was refused.
        after: Position,
        /// How many re-decisions came before.
        retries: u32,
    },
    /// Events matching the query arrived after the read, and the policy gave up.
    ///
    /// ### Handling
    /// Show the matching events; decide again.
    #[error("append condition failed after {retries} retries: {} matching event(s) after position {}", .failed.matching_events.len(), .failed.after)]
    ConditionFailed {
        /// The failed condition, with the first matching events.
        failed: Box<ConditionFailed>,
        /// How many re-decisions came before.
        retries: u32,
    },
    /// A part's expected version did not hold, and the policy gave up.
    ///
    /// ### Handling
    /// As a failed condition.
    #[error("version conflict on {} stream(s) after {retries} retries", .conflicts.len())]
    Conflicts {
        /// Every stale part.
        conflicts: Vec<Conflict>,
        /// How many re-decisions came before.
        retries: u32,
    },
    /// The store failed.
    ///
    /// ### Handling
    /// As [`StoreError`] says.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs [`Decision`]s against a store.
#[derive(Debug)]
pub struct Decider<D> {
    store: Arc<dyn EventStore>,
    _decision: std::marker::PhantomData<fn() -> D>,
}

impl<D> Clone for Decider<D> {
    fn clone(&self) -> Self {
        Decider {
            store: Arc::clone(&self.store),
            _decision: std::marker::PhantomData,
        }
    }
}

impl<D: Decision> Decider<D> {
    /// A decider over `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Decider {
            store,
            _decision: std::marker::PhantomData,
        }
    }

    /// The state folded from every event matching `query`, and the position it includes.
    ///
    /// # Errors
    /// Store failures.
    pub async fn load(&self, query: &Query) -> Result<(D, Position), StoreError> {
        let mut state = D::default();
        let mut after = Position::ZERO;
        loop {
            let page = self.store.query(query, after, QUERY_PAGE).await?;
            for e in &page.events {
                state.apply(e);
            }
            match page.next {
                Some(n) => after = n,
                None => return Ok((state, page.head)),
            }
        }
    }

    /// Reads the query, decides, and appends under the condition "nothing matching the
    /// query after what was read"; on a failed condition, applies the command's policy.
    ///
    /// # Errors
    /// [`DecisionError`].
    pub async fn execute(
        &self,
        command: &D::Command,
    ) -> Result<Decided, DecisionError<D::Rejection>> {
        let query = D::query(command);
        let policy = D::policy(command);
        let mut retries = 0u32;
        let mut over = Vec::new();
        let mut jitter = Jitter::new();
        let mut previous_head: Option<Position> = None;
        loop {
            let (state, head) = self.load(&query).await?;
            if let Some(before) = previous_head {
                // What arrived since the last read, for the caller's report.
                let mut after = before;
                loop {
                    let page = self.store.query(&query, after, QUERY_PAGE).await?;
                    over.extend(page.events.into_iter().filter(|e| e.position <= head));
                    match page.next {
                        Some(n) if n < head => after = n,
                        _ => break,
                    }
                }
            }
            let parts = state
                .decide(command)
                .map_err(|reason| DecisionError::Rejected {
                    reason,
                    after: head,
                    retries,
                })?;
            let request = MultiAppendRequest::new(parts).condition(query.clone(), head);
            let error = match self.store.append_multi(request).await {
                Ok(outcome) => {
                    return Ok(Decided {
                        outcome,
                        based_on: head,
                        retries,
                        over,
                    });
                }
                Err(e) => e,
            };
            let give_up = match &policy {
                DecisionPolicy::Reject => true,
                DecisionPolicy::Retry(r) => retries >= r.attempts,
            };
            match error {
                StoreError::ConditionFailed(failed) if give_up => {
                    return Err(DecisionError::ConditionFailed { failed, retries });
                }
                StoreError::Conflicts(conflicts) if give_up => {
                    return Err(DecisionError::Conflicts { conflicts, retries });
                }
                StoreError::ConditionFailed(_) | StoreError::Conflicts(_) => {}
                other => return Err(other.into()),
            }
            retries = retries.saturating_add(1);
            if let DecisionPolicy::Retry(r) = &policy {
                let wait = jitter.below(r.backoff.cap(retries));
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            previous_head = Some(head);
        }
    }
}
