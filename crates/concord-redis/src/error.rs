//! `RedisError`: everything that can go wrong between Concord and Redis, converted into
//! [`StoreError`] at the trait boundary.
//!
//! The conversion is the one place that decides what a caller may retry: anything that
//! means "Redis could not be reached or did not answer in time" becomes
//! [`StoreError::Unavailable`]; replies Concord cannot decode become
//! [`StoreError::Corrupted`]; configuration mistakes become [`StoreError::Invalid`].

use std::time::Duration;

use concord_core::StoreError;

/// The backend name used in errors, health and metrics.
pub(crate) const BACKEND: &str = "redis";

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not a `redis://` or `rediss://` URL the client understands.
    #[error("invalid Redis URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL with any password removed.
        url: String,
        /// The client's reason.
        #[source]
        source: redis::RedisError,
    },

    /// The key prefix cannot be used in a key name.
    #[error(
        "invalid key prefix {0:?}: it must be 1-64 bytes without '{{', '}}', whitespace or control characters"
    )]
    InvalidPrefix(String),

    /// Redis did not answer within the configured timeout.
    #[error("Redis did not answer {command} within {timeout:?}")]
    Timeout {
        /// The command that was waiting.
        command: &'static str,
        /// The configured timeout.
        timeout: Duration,
    },

    /// The driver reported an error for a command (connection, I/O, or a server error).
    #[error("Redis command {command} failed: {source}")]
    Command {
        /// The command.
        command: &'static str,
        /// The driver's error.
        #[source]
        source: redis::RedisError,
    },

    /// A connection of Concord's own (the reads of pages of events) could not reach Redis,
    /// or lost it midway.
    #[error("Redis command {command} failed: {source}")]
    Io {
        /// The command.
        command: &'static str,
        /// The socket's error.
        #[source]
        source: std::io::Error,
    },

    /// Redis refused a command sent on a connection of Concord's own (`-ERR …`).
    #[error("Redis refused {command}: {message}")]
    Server {
        /// The command.
        command: &'static str,
        /// Redis's error reply.
        message: String,
    },

    /// Redis answered something Concord did not write or cannot decode.
    #[error("unexpected reply to {command}: {detail}")]
    Reply {
        /// The command.
        command: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// The Concord function library in Redis is newer than this build: replacing it would
    /// downgrade every other process using it.
    #[error(
        "Redis holds Concord function library version {found}, newer than this build's version {ours}; upgrade this process"
    )]
    NewerLibrary {
        /// The version loaded in Redis.
        found: i64,
        /// This build's version.
        ours: i64,
    },
}

impl RedisError {
    pub(crate) fn command(command: &'static str, source: redis::RedisError) -> Self {
        RedisError::Command { command, source }
    }

    pub(crate) fn reply(command: &'static str, detail: impl Into<String>) -> Self {
        RedisError::Reply {
            command,
            detail: detail.into(),
        }
    }

    /// Whether the failure means Redis could not be reached or did not answer in time, so
    /// that retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            RedisError::Timeout { .. } | RedisError::Io { .. } => true,
            RedisError::Server { message, .. } => {
                ["LOADING", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"]
                    .iter()
                    .any(|kind| message.starts_with(kind))
            }
            RedisError::Command { source, .. } => {
                source.is_io_error()
                    || source.is_timeout()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || matches!(
                        source.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::MasterDown
                                | redis::ServerErrorKind::ClusterDown
                        )
                    )
            }
            _ => false,
        }
    }
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        if e.is_unavailable() {
            let message = e.to_string();
            return StoreError::unavailable(BACKEND, message, e);
        }
        match e {
            RedisError::InvalidUrl { .. } | RedisError::InvalidPrefix(_) => {
                StoreError::invalid("store", e.to_string())
            }
            RedisError::Reply { .. } => StoreError::Corrupted(e.to_string()),
            other => {
                let message = other.to_string();
                StoreError::backend(BACKEND, message, other)
            }
        }
    }
}
