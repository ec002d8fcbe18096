//! Concord's PostgreSQL backend: an event store in one schema of a PostgreSQL database,
//! shared by any number of Concord processes.
//!
//! - **Positions gap-free and in commit order across processes.** Each process batches the
//!   appends of all its callers into one transaction (group commit); positions are assigned
//!   under one head lock held until the commit is visible, so a reader can never see a later
//!   position before an earlier one. The commit does not wait for its WAL flush under the
//!   lock; a mark committed synchronously after it moves the durable head, the only head
//!   readers follow, so nothing read can be taken back by a crash or a failover (ADR 0004).
//!   See `docs/design/postgres-layout.md`.
//! - **Every decision in one transaction:** `concord_core::plan_multi_append` decides under
//!   per-stream advisory locks; a conflict's actual version and missed events are read under
//!   the same locks and returned with the refusal.
//! - **Live subscriptions on every node:** each mark sends `pg_notify` with the new durable
//!   head; every store keeps a LISTEN connection and also polls the head every second.
//! - **Stream lifecycle:** soft deletes, tombstones and retention settings are columns of
//!   the stream's row, changed under the writer's stream lock; a scavenge deletes the rows
//!   they hide in bounded chunks beside appends (the operator's part, VACUUM, backups and
//!   replicas, is in the design doc).
//! - **Failover:** the URL may list several hosts with `target_session_attrs=read-write`;
//!   pooled connections to a lost primary are replaced by connections to the new one.
//!
//! It is not: a reader of standbys (every call goes to the primary), or a tool for
//! schema changes by hand (it creates and migrates its own schema, `concord_meta`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), concord_postgres::PostgresError> {
//! let store = concord_postgres::PostgresStore::connect(
//!     "postgres://concord:secret@db1:5432,db2:5432/app?target_session_attrs=read-write&schema=orders",
//! )
//! .await?;
//! # drop(store);
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod import;
mod lifecycle;
mod matching;
mod rows;
mod schema;
mod store;
mod writer;

pub use config::{DEFAULT_SCHEMA, connection_config};
pub use error::PostgresError;
pub use schema::FORMAT_VERSION;
pub use store::{PostgresOptions, PostgresStore};
