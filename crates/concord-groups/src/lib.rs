//! Consumer groups: competing consumers sharing a source's events, each event handled by
//! one consumer at a time, with acks, redelivery after a timeout, parking after too many
//! deliveries, and optional per-stream order.
//!
//! A group's state lives in the store itself, in the store-owned stream `$group-<name>`
//! ([`concord_core::StreamName::system`]), appended with the exact version each operation
//! read, so it survives restarts, is shared by every node of a shared backend, and is the
//! same code on every backend. See `docs/design/consumer-groups.md`.
//!
//! It is not: the HTTP surface (`concord-server`), nor a subscription (every event to
//! every subscriber: `concord_core::subscription`).

mod error;
mod groups;
mod settings;
mod state;

pub use error::GroupError;
pub use groups::{
    Clock, Delivery, GroupInfo, Groups, ManualClock, NackAction, PutOutcome, SNAPSHOT_EVERY,
    SystemClock,
};
pub use settings::{
    ACK_TIMEOUT_MS_MIN, CONSUMER_BYTES_MAX, FETCH_MAX, GROUP_NAME_BYTES_MAX, GroupSettings,
    Ordering, Source, Start, check_consumer, check_group_name, check_max,
};
pub use state::{Change, Entry, GroupState, InFlight, ack_id, parse_ack_id};
