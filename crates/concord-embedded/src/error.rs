//! `EmbeddedError`: what can go wrong inside the embedded store, converted into
//! [`StoreError`] at the `EventStore` boundary.

use std::path::PathBuf;

use concord_core::StoreError;

const BACKEND: &str = "embedded";

/// Why an operation of the embedded store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The data directory could not be created or is not a directory.
    #[error("cannot create the data directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The lock file in the data directory could not be opened or locked (for example, the
    /// directory is not writable).
    #[error("cannot open the lock file {}; is the data directory writable?", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Another process (or another `EmbeddedStore` in this one) has the store open.
    #[error("the store in {} is already open in another process (or twice in this one); close it first, or, when that process is `concord serve`, go through the server: --store http://HOST:PORT", path.display())]
    AlreadyOpen {
        /// The data directory.
        path: PathBuf,
    },

    /// The data file is not an SQLite database at all.
    #[error("{} is not a Concord database (it is not an SQLite file); point the store at another directory", path.display())]
    NotADatabase {
        /// The data file.
        path: PathBuf,
    },

    /// The data file is an SQLite database, but not one written by Concord.
    #[error("{} is an SQLite database but not a Concord store; point the store at another directory", path.display())]
    NotConcord {
        /// The data file.
        path: PathBuf,
    },

    /// The data file was written in a format this version does not read.
    #[error("{} has format version {found}, but this Concord reads format version {supported}", path.display())]
    UnsupportedFormat {
        /// The data file.
        path: PathBuf,
        /// The file's `PRAGMA user_version`.
        found: i64,
        /// The version this build writes and reads.
        supported: i64,
    },

    /// The data file could not be opened or configured.
    #[error("cannot open the data file {}", path.display())]
    Open {
        /// The data file.
        path: PathBuf,
        /// The driver's error.
        #[source]
        source: rusqlite::Error,
    },

    /// A file of the store could not be opened or synced to the device.
    #[error("cannot sync {} to the device", path.display())]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// An SQLite call failed.
    #[error("{context}")]
    Sqlite {
        /// What was being done, in a few words.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: rusqlite::Error,
    },

    /// Stored data failed a check on read or recovery.
    #[error("{0}")]
    Corrupted(String),

    /// A write or sync failed earlier; appends are refused until the store is reopened.
    #[error("{0}")]
    Poisoned(String),

    /// The writer or reader threads have stopped (the store is closing).
    #[error("the store's {0} thread has stopped")]
    Stopped(&'static str),

    /// A failure injected by a test.
    #[error("injected failure: {0}")]
    Injected(&'static str),

    /// The stream is tombstoned.
    #[error("stream {0} is deleted for good (tombstoned)")]
    StreamDeleted(concord_core::StreamName),

    /// The store cannot do this now; trying again later may work.
    #[error("{0}")]
    Busy(String),
}

impl EmbeddedError {
    /// Wraps an SQLite error with what was being done.
    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> EmbeddedError {
        move |source| EmbeddedError::Sqlite { context, source }
    }
}

impl From<EmbeddedError> for StoreError {
    /// The message is this error's text; the source is the underlying I/O or SQLite error,
    /// so a report prints each only once.
    fn from(e: EmbeddedError) -> Self {
        let message = e.to_string();
        match e {
            EmbeddedError::Corrupted(m) => StoreError::Corrupted(m),
            EmbeddedError::StreamDeleted(stream) => StoreError::StreamDeleted(stream),
            EmbeddedError::Busy(message) => StoreError::Unavailable {
                backend: BACKEND,
                message,
                source: None,
            },
            EmbeddedError::Poisoned(m) => StoreError::Poisoned(m),
            EmbeddedError::AlreadyOpen { .. } | EmbeddedError::Stopped(_) => {
                StoreError::Unavailable {
                    backend: BACKEND,
                    message,
                    source: None,
                }
            }
            EmbeddedError::CreateDir { source, .. }
            | EmbeddedError::Lock { source, .. }
            | EmbeddedError::Sync { source, .. } => StoreError::backend(BACKEND, message, source),
            EmbeddedError::Sqlite { source, .. } | EmbeddedError::Open { source, .. } => {
                StoreError::backend(BACKEND, message, source)
            }
            EmbeddedError::NotADatabase { .. }
            | EmbeddedError::NotConcord { .. }
            | EmbeddedError::UnsupportedFormat { .. }
            | EmbeddedError::Injected(_) => StoreError::Backend {
                backend: BACKEND,
                message,
                source: None,
            },
        }
    }
}

/// `u64` (version, position, count) to SQLite's `i64`.
pub(crate) fn to_sql(n: u64) -> Result<i64, EmbeddedError> {
    i64::try_from(n).map_err(|_| {
        EmbeddedError::Corrupted(format!(
            "number {n} does not fit the store's 63-bit integers"
        ))
    })
}

/// A bound for a query (a position or version to compare with): past `i64::MAX` it is
/// clamped rather than refused, since no stored number can exceed that. Every number that
/// comes from a caller goes through this, never [`to_sql`]: a version or position from 2^63
/// up is past the end, not corrupted data.
pub(crate) fn sql_bound(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// SQLite's `i64` back to `u64`; a negative number can only come from damaged data.
pub(crate) fn from_sql(what: &str, n: i64) -> Result<u64, EmbeddedError> {
    u64::try_from(n)
        .map_err(|_| EmbeddedError::Corrupted(format!("stored {what} is negative ({n})")))
}
