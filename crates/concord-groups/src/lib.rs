//! Consumer groups: competing consumers over a stream or the global log.
//!
//! A group hands the events of its [`Source`] to any number of consumers, each event to one
//! consumer at a time, and remembers what they acknowledged. A delivery not acked within
//! the group's `ack_timeout_ms` is delivered again (with `delivery` + 1); after
//! `max_deliveries` it is parked, until replayed. With [`Ordering::PerStream`] no two
//! events of one stream are in flight at once and each stream's go in version order.
//!
//! The state of a group lives in the store itself, as events of the store-owned stream
//! `$group-<name>`, each written with that stream's exact version: it survives restarts,
//! works the same over every backend, and two processes sharing a store can never both
//! hand out or ack the same event. `docs/design/consumer-groups.md` gives the state model
//! and what each crash leaves behind.
//!
//! It is not: an HTTP surface (`concord-server` serves [`Groups`] at `/groups`), nor a
//! client (`concord-client`'s `Consumer` polls a server), nor a subscription (which gives
//! every event to every subscriber).
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use concord_core::{doc, AppendRequest, EventStore, ExpectedVersion, MemoryStore};
//! use concord_groups::{ConsumerName, GroupName, GroupSpec, Groups, Source};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::new());
//! let orders = doc::stream("order-1");
//! let placed = doc::event("Placed", serde_json::json!({"total": 30}));
//! let _ = store.append(AppendRequest::new(orders.clone(), ExpectedVersion::Any, vec![placed])).await?;
//!
//! let groups = Groups::new(store);
//! let receipts = GroupName::new("receipts")?;
//! groups.create_or_update(&receipts, GroupSpec::new(Source::Stream(orders))).await?;
//! let worker = ConsumerName::new("worker-1")?;
//! let messages = groups.poll(&receipts, &worker, 10, Duration::ZERO).await?;
//! assert_eq!(messages.len(), 1);
//! let acked = groups.ack(&receipts, &[messages[0].ack_id.clone()]).await?;
//! assert_eq!(acked, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod ahead;
mod config;
mod engine;
mod error;
mod runs;
mod state;

pub use config::{
    ACK_IDS_MAX, ACK_TIMEOUT_MS_MAX, ACK_TIMEOUT_MS_MIN, AllSource, CONSUMER_NAME_BYTES_MAX,
    ConsumerName, GROUP_NAME_BYTES_MAX, GroupName, GroupSpec, MAX_DELIVERIES_MAX, NackAction,
    Ordering, POLL_MAX, STATE_STREAM_PREFIX, Source, StartFrom, deserialize_optional_whole,
    deserialize_whole,
};
pub use engine::{
    Clock, GroupInfo, Groups, InFlight, ManualClock, Parked, SNAPSHOT_EVERY, SystemClock, Upserted,
};
pub use error::GroupError;
pub use state::{Message, OUTSTANDING_MAX};
