//! Concord's domain model: everything every other crate agrees on.
//!
//! - Names ([`StreamName`], [`EventType`], [`Tag`], [`Category`]) validated at construction.
//! - [`Version`] (per stream, 1-based) and [`Position`] (global, gap-free), never mixed.
//! - Events as written ([`NewEvent`]) and stored ([`RecordedEvent`]), whose data is a
//!   [`Payload`]: JSON kept as the bytes that arrived ([`Json`]), or opaque bytes of another
//!   [`ContentType`].
//! - The [`EventStore`] trait and its one error type, [`StoreError`], whose
//!   [`Conflict`] carries the events the writer missed.
//! - The pure rules every backend applies: [`plan_append`] (idempotency, expected version,
//!   server-side rebase) and the query match rule ([`Filter`], [`Query`]).
//! - Subscriptions (catch-up then live) written once over the trait.
//! - Appends across streams and under query conditions ([`MultiAppendRequest`],
//!   [`plan_multi_append`]), and query reads ([`QueryPage`]).
//! - Stream lifecycle: soft delete, tombstone, retention ([`StreamMetadata`]) and the
//!   rules a scavenge follows ([`StreamLifecycle`], [`plan_delete`]).
//! - [`MemoryStore`], the reference model.
//!
//! It is not: a backend (no I/O happens here), an HTTP contract (that is `concord-api`),
//! or a command layer (`concord-command`).
//!
//! ```
//! use concord_core::{doc, AppendRequest, EventStore, ExpectedVersion, MemoryStore, StoreError, Version};
//! # futures::executor::block_on(async {
//! let store = MemoryStore::new();
//! let account = doc::stream("account-42");
//! let opened = doc::event("AccountOpened", serde_json::json!({"owner": "ann", "balance": 1000}));
//! let _ = store.append(AppendRequest::new(account.clone(), ExpectedVersion::NoStream, vec![opened])).await?;
//!
//! // A and B both saw version 1.
//! let a = doc::event("Deposited", serde_json::json!({"amount": 2000}));
//! let b = doc::event("Deposited", serde_json::json!({"amount": 3000}));
//! let _ = store.append(AppendRequest::new(account.clone(), ExpectedVersion::Exact(Version(1)), vec![a])).await?;
//! let err = store.append(AppendRequest::new(account, ExpectedVersion::Exact(Version(1)), vec![b])).await.unwrap_err();
//! let conflict = err.as_conflict().unwrap();
//! assert_eq!(conflict.actual, Version(2));
//! assert_eq!(conflict.concurrent_events[0].event_type.as_str(), "Deposited");
//! # Ok::<(), StoreError>(())
//! # }).unwrap();
//! ```

mod alone;
mod append;
#[doc(hidden)]
pub mod doc;
mod error;
mod event;
mod import;
mod lifecycle;
mod memory;
mod multi;
mod names;
mod object;
mod payload;
mod query;
mod signal;
mod store;
pub mod subscription;
mod version;

#[doc(hidden)]
pub use serde as __serde;

pub use alone::{ALONE_IN_A_ROW, Appending, AppendingGuard};
pub use append::{
    AppendOutcome, AppendPlan, AppendRequest, Appended, IdCheck, Limits, check_ids, may_rebase,
    plan_append,
};
pub use error::{
    BoxError, ConditionFailed, Conflict, InvalidInput, PartialDuplicate, StoreError, TooLarge,
};
pub use event::{
    EventId, JSON_DEPTH_MAX, Json, NewEvent, RecordedAt, RecordedEvent, TAGS_PER_EVENT_MAX,
};
pub use import::{
    IMPORT_EVENTS_MAX, PastImport, StreamImport, StreamPast, plan_head_import, plan_import,
    plan_past_import, plan_stream_import,
};
pub use lifecycle::{
    DeleteMode, DeletePlan, MetadataChange, ScavengeReport, StreamLifecycle, StreamMetadata,
    check_hidden_ids, plan_delete,
};
pub use memory::MemoryStore;
pub use multi::{
    AppendCondition, MATCHING_EVENTS_MAX, MultiAppendOutcome, MultiAppendPlan, MultiAppendRequest,
    PARTS_PER_APPEND_MAX, PartConflict, PartState, QueryPage, plan_multi_append,
};
pub use names::{Category, EventType, NAME_BYTES_MAX, StreamName, Tag, check_name};
pub use payload::{CONTENT_TYPE_BYTES_MAX, ContentType, JSON_CONTENT_TYPE, Payload};
pub use query::{
    Filter, QUERY_ITEMS_MAX, Query, QueryItem, TAGS_PER_FILTER_MAX, TYPES_PER_FILTER_MAX,
};
pub use signal::{HeadSignal, WaitBeyond};
pub use store::{AllPage, Direction, EventStore, StreamInfo};
pub use subscription::Subscription;
pub use version::{ExpectedVersion, Position, Version, deserialize_optional_count};
