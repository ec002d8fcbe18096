//! What a service author writes: an aggregate that folds its events into state and decides
//! commands on that state, and the policy that says what to do when the decision raced
//! another writer.
//!
//! The decision is pure (`decide` sees only the state), so the handler can run it again on
//! fresh state, or hand its events to a resolver, without the author writing any
//! concurrency code.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use concord_core::{EventType, InvalidInput, StreamName, Tag};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A consistency boundary: the state of one stream, the events that change it, and the
/// commands it decides.
pub trait Aggregate: Default + Clone + Send + Sync + fmt::Debug + 'static {
    /// The stream's events, one serde enum tagged `#[serde(tag = "type", content = "data")]`
    /// (see [`crate::codec`]).
    type Event: Serialize + DeserializeOwned + Clone + Send + Sync + fmt::Debug + 'static;
    /// What callers ask for.
    type Command: Send + Sync + fmt::Debug;
    /// Why the domain refuses a command (insufficient funds, outbid, closed, …).
    type Rejection: fmt::Display + fmt::Debug + Send + Sync + 'static;

    /// Folds one event into the state. Must accept every event `decide` can produce,
    /// and must not fail: the event already happened.
    fn apply(&mut self, event: &Self::Event);

    /// Turns a command into the events it causes, or a rejection. No events means there is
    /// nothing to do, and nothing is written.
    ///
    /// # Errors
    /// The domain's reason for refusing the command on this state.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Rejection>;

    /// The conflict policy of a command when the caller does not choose one.
    fn policy(command: &Self::Command) -> Policy<Self> {
        let _ = command;
        Policy::Reject
    }

    /// The tags an event carries in `stream` (for cross-stream queries), e.g. `account:42`.
    fn tags(stream: &StreamName, event: &Self::Event) -> Vec<Tag> {
        let _ = (stream, event);
        Vec::new()
    }
}

/// A three-way merge: given the state our decision was based on, the events that were
/// committed concurrently (in stream order, all of them), and our events as decided,
/// returns our events transformed to apply after the concurrent ones, or a rejection.
pub trait Resolver<A: Aggregate>: Send + Sync {
    /// Merges `ours` over `concurrent`.
    ///
    /// # Errors
    /// The domain's reason when the two cannot be merged.
    fn resolve(
        &self,
        base: &A,
        concurrent: &[A::Event],
        ours: &[A::Event],
    ) -> Result<Vec<A::Event>, A::Rejection>;
}

impl<A, F> Resolver<A> for F
where
    A: Aggregate,
    F: Fn(&A, &[A::Event], &[A::Event]) -> Result<Vec<A::Event>, A::Rejection> + Send + Sync,
{
    fn resolve(
        &self,
        base: &A,
        concurrent: &[A::Event],
        ours: &[A::Event],
    ) -> Result<Vec<A::Event>, A::Rejection> {
        self(base, concurrent, ours)
    }
}

/// Exponential backoff with full jitter: before re-decision `n` (from 1) the handler waits a
/// uniformly random time in `[0, min(max, initial · 2ⁿ⁻¹)]`, so racing writers spread out
/// instead of colliding again in lockstep.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Backoff {
    /// The cap of the first wait.
    pub initial: Duration,
    /// The cap of every wait.
    pub max: Duration,
}

impl Backoff {
    /// No waiting: re-decide at once (the conflict already carried the fresh events).
    pub const NONE: Backoff = Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// The cap of the wait before re-decision `n` (1-based).
    pub fn cap(&self, n: u32) -> Duration {
        let factor = 1_u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(50),
        }
    }
}

/// Client-side rebase: on a conflict, fold the concurrent events into the state and run
/// `decide` again, at most `attempts` times.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Retry {
    /// How many re-decisions after the first decision.
    pub attempts: u32,
    /// How long to wait before each.
    pub backoff: Backoff,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 10,
            backoff: Backoff::default(),
        }
    }
}

/// What the handler does when the stream moved past the version the decision was based on.
pub enum Policy<A: Aggregate> {
    /// Return the conflict (the actual version and the events that were missed).
    Reject,
    /// Server-side rebase: the store appends after the concurrent events unless one of them
    /// has a listed type — no extra round trip. For commands whose validity does not depend
    /// on concurrent events of other types (deposits commute; a closed account does not).
    RebaseUnless(Vec<EventType>),
    /// Client-side rebase: re-decide on the fresh state. For commands that must re-check
    /// an invariant (withdrawals, bids).
    Retry(Retry),
    /// Transform our events over the concurrent ones (operational transform, three-way
    /// merge) and append them after them.
    Merge(Arc<dyn Resolver<A>>),
}

/// How many times a merge is tried again when yet another writer got in first.
pub const MERGE_ROUNDS_MAX: u32 = 100;

impl<A: Aggregate> Policy<A> {
    /// `RebaseUnless` with event types given by name.
    ///
    /// # Errors
    /// [`InvalidInput`] when a name is not a valid event type.
    pub fn rebase_unless(types: &[&str]) -> Result<Self, InvalidInput> {
        let types = types
            .iter()
            .map(|t| EventType::new(*t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy::RebaseUnless(types))
    }

    /// `Retry` with [`Retry::default`].
    pub fn retry() -> Self {
        Policy::Retry(Retry::default())
    }

    /// `Merge` with a resolver function.
    pub fn merge<F>(resolver: F) -> Self
    where
        F: Fn(&A, &[A::Event], &[A::Event]) -> Result<Vec<A::Event>, A::Rejection>
            + Send
            + Sync
            + 'static,
    {
        Policy::Merge(Arc::new(resolver))
    }

    /// The policy's name, as reports show it: `reject`, `rebase`, `retry`, `merge`.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Reject => "reject",
            Policy::RebaseUnless(_) => "rebase",
            Policy::Retry(_) => "retry",
            Policy::Merge(_) => "merge",
        }
    }
}

impl<A: Aggregate> Clone for Policy<A> {
    fn clone(&self) -> Self {
        match self {
            Policy::Reject => Policy::Reject,
            Policy::RebaseUnless(t) => Policy::RebaseUnless(t.clone()),
            Policy::Retry(r) => Policy::Retry(*r),
            Policy::Merge(m) => Policy::Merge(Arc::clone(m)),
        }
    }
}

impl<A: Aggregate> fmt::Debug for Policy<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Reject => f.write_str("Reject"),
            Policy::RebaseUnless(t) => f.debug_tuple("RebaseUnless").field(t).finish(),
            Policy::Retry(r) => f.debug_tuple("Retry").field(r).finish(),
            Policy::Merge(_) => f.write_str("Merge(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            initial: Duration::from_millis(2),
            max: Duration::from_millis(10),
        };
        assert_eq!(b.cap(1), Duration::from_millis(2));
        assert_eq!(b.cap(2), Duration::from_millis(4));
        assert_eq!(b.cap(3), Duration::from_millis(8));
        assert_eq!(b.cap(4), Duration::from_millis(10));
        assert_eq!(b.cap(200), Duration::from_millis(10));
        assert_eq!(Backoff::NONE.cap(7), Duration::ZERO);
    }
}
