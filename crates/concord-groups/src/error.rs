//! `GroupError`: why a group operation failed.

use concord_core::{InvalidInput, StoreError};

use crate::config::GroupName;

/// Why a group operation failed. Each variant says how to handle it and how
/// `concord-server` answers it (the mapping itself lives only there).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// No group of that name exists (never created, or deleted).
    ///
    /// ### Handling
    /// Create it first. HTTP 404, `urn:concord:group-not-found`.
    #[error("group {0} does not exist; create it with PUT /groups/{0}")]
    NotFound(GroupName),

    /// An update would change the group's `source` or `from`, which are fixed when it is
    /// created.
    ///
    /// ### Handling
    /// Delete the group and create it again, or create another group. HTTP 409,
    /// `urn:concord:group-conflict`.
    #[error("{message}")]
    Fixed {
        /// The group.
        group: GroupName,
        /// `source` or `from`.
        field: &'static str,
        /// What the group has and what was asked for.
        message: String,
    },

    /// Input that breaks a rule; nothing changed.
    ///
    /// ### Handling
    /// Fix the input. HTTP 400, `urn:concord:invalid-request`.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),

    /// The group's state changed under this process so many times in a row that it gave
    /// up (other nodes are writing the same group as fast as it can read).
    ///
    /// ### Handling
    /// Retry later. HTTP 503.
    #[error("group {0}'s state kept changing while this operation was decided; retry")]
    Contended(GroupName),

    /// The group's state stream holds an event this version cannot read.
    ///
    /// ### Handling
    /// Do not retry; the stream was written by something else or a newer version. HTTP 500.
    #[error("group {group}'s state event at version {version} cannot be read: {message}")]
    Corrupted {
        /// The group.
        group: GroupName,
        /// The state stream's version of the event.
        version: u64,
        /// What was wrong.
        message: String,
    },

    /// The store failed.
    ///
    /// ### Handling
    /// As the [`StoreError`] says.
    #[error(transparent)]
    Store(#[from] StoreError),
}
