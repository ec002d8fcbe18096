//! What a command did: committed (and how the race, if any, was resolved) or why not.
//!
//! Every path through a policy ends in exactly one of these values, so a caller (or the
//! demo) can say precisely what happened: "committed at version 3, rebased over A's
//! deposit at version 2".

use concord_core::{Appended, Conflict, RecordedEvent, StoreError, StreamName, Version};

use crate::codec::{DecodeError, EncodeError};

/// How a committed command got past the writers it raced, if any.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Resolution {
    /// Appended at the version the state was read at: nobody raced it.
    AsDecided,
    /// The store appended it after concurrent events (server-side rebase, no extra round
    /// trip).
    Rebased {
        /// The stale version the decision was based on.
        expected_version: Version,
        /// The events it was rebased over (at most 100 listed).
        over: Vec<RecordedEvent>,
    },
    /// It was decided again on fresh state.
    Retried {
        /// How many times it was re-decided.
        retries: u32,
        /// Every concurrent event it was re-decided over.
        over: Vec<RecordedEvent>,
    },
    /// Its events were transformed over the concurrent events by the policy's resolver.
    Merged {
        /// How many merges it took (more than one when yet another writer got in first).
        rounds: u32,
        /// Every concurrent event it was merged over.
        over: Vec<RecordedEvent>,
    },
    /// Its events were already in the stream (same ids): nothing was written again.
    Duplicate,
}

impl Resolution {
    /// The concurrent events the command went past (empty when it raced nobody).
    pub fn over(&self) -> &[RecordedEvent] {
        match self {
            Resolution::Rebased { over, .. }
            | Resolution::Retried { over, .. }
            | Resolution::Merged { over, .. } => over,
            Resolution::AsDecided | Resolution::Duplicate => &[],
        }
    }
}

/// A command that succeeded.
#[derive(Clone, Debug)]
pub struct Committed<E> {
    /// The aggregate's stream.
    pub stream: StreamName,
    /// The version the first decision was based on.
    pub based_on: Version,
    /// Where the events landed (versions a..b, positions); `None` when the decision
    /// produced no events and nothing was written.
    pub appended: Option<Appended>,
    /// The events written (after a merge, the transformed ones).
    pub events: Vec<E>,
    /// How it got past concurrent writers.
    pub resolution: Resolution,
    /// The version of the snapshot this command wrote, if it crossed a snapshot boundary.
    pub snapshot: Option<Version>,
}

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<R> {
    /// The domain refused the command.
    ///
    /// ### Handling
    /// Not retryable: tell the caller `reason` (HTTP 422 or a domain-specific answer).
    #[error("command rejected at version {version}: {reason}")]
    Rejected {
        /// The domain's reason.
        reason: R,
        /// The version of the state that was refused.
        version: Version,
        /// How many times it had been re-decided before (retry) or merged (merge).
        retries: u32,
        /// The concurrent events that led to the refusal (empty when the first decision
        /// refused).
        over: Vec<RecordedEvent>,
    },

    /// The stream moved and the policy did not (or could no longer) get past it: `Reject`,
    /// a refused `RebaseUnless`, or a `Retry`/`Merge` out of attempts.
    ///
    /// ### Handling
    /// Show the caller the concurrent events and let them decide again. HTTP 409.
    #[error("{conflict} (after {retries} retries)")]
    Conflict {
        /// The last conflict, with the events that were missed.
        conflict: Box<Conflict>,
        /// How many re-decisions or merges were made before giving up.
        retries: u32,
    },

    /// A stored event of the stream is not one of the aggregate's events.
    ///
    /// ### Handling
    /// A schema mismatch: fix the event enum or the data. Not retryable.
    #[error(transparent)]
    Decode(#[from] DecodeError),

    /// An event the aggregate decided could not be encoded.
    ///
    /// ### Handling
    /// A programming error in the event enum. Not retryable.
    #[error(transparent)]
    Encode(#[from] EncodeError),

    /// The store failed.
    ///
    /// ### Handling
    /// As [`StoreError`] says (retry `Unavailable`; the event ids are fresh per attempt).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<R> CommandError<R> {
    /// The domain's reason, when the domain refused.
    pub fn rejection(&self) -> Option<&R> {
        match self {
            CommandError::Rejected { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The conflict, when the policy gave up on one.
    pub fn conflict(&self) -> Option<&Conflict> {
        match self {
            CommandError::Conflict { conflict, .. } => Some(conflict),
            _ => None,
        }
    }
}
