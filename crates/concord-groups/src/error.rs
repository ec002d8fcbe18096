//! The one error type of consumer groups.

use concord_core::{InvalidInput, StoreError};

/// What a group operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A setting, name or argument breaks a rule; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// No group has this name (or it was deleted).
    #[error("consumer group {0:?} does not exist")]
    NotFound(String),
    /// An update would change the group's source or start, which would make what it has
    /// acknowledged meaningless; delete and create it instead.
    #[error("consumer group {group:?} reads {current}; an update cannot change it to {requested}")]
    SourceChanged {
        /// The group.
        group: String,
        /// Its source and start now.
        current: String,
        /// What the update asked for.
        requested: String,
    },
    /// The group's state stream holds something this version cannot read.
    #[error("consumer group {group:?}: its state is unreadable: {message}")]
    Corrupted {
        /// The group.
        group: String,
        /// What was wrong.
        message: String,
    },
    /// Other writers kept changing the group's state while this operation computed its
    /// change, more times than it retries; try again.
    #[error("consumer group {0:?}: its state changed under every attempt; try again")]
    Contended(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
