//! `PostgresError`: what can go wrong opening a Postgres store, and how a driver error
//! becomes a `StoreError` at the trait boundary.

use concord_core::StoreError;

/// Errors of the Postgres backend before it is open (URL, connection, schema).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The store URL cannot be used.
    #[error("invalid postgres store URL: {0}")]
    Url(String),
    /// No host in the URL answered as a writable primary.
    #[error("cannot connect to PostgreSQL at {hosts}: {source}")]
    Connect {
        /// The hosts of the URL.
        hosts: String,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The schema was written by a newer Concord.
    #[error(
        "schema {schema} has format version {found}, but this Concord knows format versions up to \
         {known}: upgrade Concord (a newer one wrote this schema)"
    )]
    NewerSchema {
        /// The schema name.
        schema: String,
        /// The version stored in the schema.
        found: i32,
        /// The newest version this build knows.
        known: i32,
    },
    /// A statement failed while creating or migrating the schema.
    #[error("creating or migrating schema {schema}: {source}")]
    Migrate {
        /// The schema name.
        schema: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl From<PostgresError> for StoreError {
    fn from(e: PostgresError) -> Self {
        match e {
            PostgresError::Url(m) => StoreError::invalid("store", m),
            PostgresError::Connect { .. } => {
                let message = e.to_string();
                StoreError::unavailable("postgres", message, e)
            }
            other => {
                let message = other.to_string();
                StoreError::backend("postgres", message, other)
            }
        }
    }
}

/// A driver error during a call: a lost or refused connection (or a standby) is
/// `Unavailable`, and so is a statement PostgreSQL cancelled (its `statement_timeout`, or
/// an operator's `pg_cancel_backend`: one SQLSTATE for both, told apart only by the
/// server's text, which is never matched), retryable once what held it up has passed;
/// anything else is a `Backend` failure. `hosts` names where we were talking to.
pub(crate) fn driver(hosts: &str, e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
        // Said in the message, not left to the source: the writer passes on only the
        // message, and the driver's own text is "db error".
        return StoreError::unavailable(
            "postgres",
            format!(
                "PostgreSQL at {hosts} cancelled the statement: it ran longer than the \
                 session's statement_timeout (30 s unless the store URL's `options` set \
                 another), or an operator cancelled it; retry once the lock or load holding \
                 it up has passed"
            ),
            e,
        );
    }
    let read_only = e
        .code()
        .is_some_and(|c| *c == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION);
    let connection_class = e
        .code()
        .is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P"));
    let said = said(&e);
    if e.is_closed() || e.code().is_none() || read_only || connection_class {
        StoreError::unavailable("postgres", format!("PostgreSQL at {hosts}: {said}"), e)
    } else {
        StoreError::backend("postgres", format!("PostgreSQL at {hosts}: {said}"), e)
    }
}

/// What went wrong, in words: the server's own message when it sent one (the driver's
/// `Display` says only "db error"), else the driver's with its cause. Put in the message,
/// not left to the source alone, because a failed batch answers each of its appends with
/// the message only.
fn said(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) if !e.to_string().contains(&cause.to_string()) => format!("{e}: {cause}"),
        _ => e.to_string(),
    }
}

/// A pool error (no connection could be made or taken in time): `Unavailable`.
pub(crate) fn pool(hosts: &str, e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::unavailable("postgres", format!("PostgreSQL at {hosts}: {e}"), e)
}
