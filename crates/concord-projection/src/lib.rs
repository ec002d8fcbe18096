//! Concord's read side (CQRS): projections with checkpoints, the read models of the three
//! scenarios, and read-your-writes.
//!
//! - [`Projection`]: which events a read model wants ([`concord_core::Filter`]) and how
//!   one event changes it. Read models live in one database beside a `checkpoints`
//!   table ([`ProjectionDb`]: a SQLite file, or the PostgreSQL database of a PostgreSQL
//!   store, shared by every server on it, where one server at a time runs each projection
//!   and the others follow its checkpoint); each batch of events commits in **one transaction with the checkpoint**, so
//!   every event takes effect exactly once across crashes. (Sinks outside that database
//!   get at-least-once; see [`projection`] for what their handlers must do.)
//! - A runner per projection follows the store from its checkpoint, catch-up then live. A
//!   handler error stops it in the `failed` state naming the event; its checkpoint stays
//!   just before that event, and a restart (with a fixed handler) resumes there.
//! - [`models`]: `balances`, `auctions`, `documents`, each a pure [`models::Fold`] that
//!   [`models::replay`] can also run in memory.
//! - [`ProjectionHost`]: runs projections on a store; list, status, get a row (optionally
//!   waiting for a position: read-your-writes), rebuild with progress, and forget the rows
//!   of deleted or tombstoned streams (a delete is not an event in the log, so this asks
//!   the store: [`ProjectionHost::forget_deleted_streams`]).
//!
//! It is not: a store backend (it is generic over [`concord_core::EventStore`] and names
//! none), an HTTP layer (`concord-server` maps [`ProjectionHost`] onto routes), or a
//! snapshot cache for the write side.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use concord_core::{doc, AppendRequest, EventStore, ExpectedVersion, MemoryStore};
//! use concord_projection::ProjectionHost;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::new());
//! let dir = std::env::temp_dir().join(format!("concord-doc-{}", std::process::id()));
//! let host = ProjectionHost::open_builtin(store.clone(), dir.join("projections.sqlite")).await?;
//! host.start_all().await;
//!
//! let opened = doc::event("AccountOpened", serde_json::json!({"owner": "ann", "balance": 1000}));
//! let outcome = store
//!     .append(AppendRequest::new(doc::stream("account-42"), ExpectedVersion::NoStream, vec![opened]))
//!     .await
//!     .unwrap();
//! let position = outcome.appended().last_position;
//!
//! // Read your own write: answers once `balances` has processed `position`.
//! let row = host.get_row("balances", "account-42", Some(position), Duration::from_secs(5)).await?;
//! assert_eq!(row.row["balance"], 1000);
//! host.shutdown().await;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), concord_projection::ProjectionError>(())
//! # }).unwrap();
//! ```

mod batch;
mod database;
mod db;
mod error;
mod host;
pub mod models;
mod pg;
pub mod projection;
mod runner;

pub use database::{PostgresDb, ProjectionDb};
pub use error::{Failure, HandlerError, ProjectionError, SkippedEvent};
pub use host::{ProjectionHost, ProjectionRow, ProjectionStatus, RebuildReport};
pub use projection::{BatchError, PgProjection, Projection, StreamRow};
pub use runner::{BATCH_EVENTS_MAX, Progress, State};
