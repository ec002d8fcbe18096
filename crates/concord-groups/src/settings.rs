//! What a group is: its source, where it starts, and its delivery rules, validated once.

use concord_core::{Filter, InvalidInput, NAME_BYTES_MAX, StreamName};
use serde::{Deserialize, Serialize};

/// The shortest acknowledgement timeout, in milliseconds: below it, a consumer could not
/// answer before its events are handed to another.
pub const ACK_TIMEOUT_MS_MIN: u64 = 100;
/// The most messages one fetch hands out.
pub const FETCH_MAX: usize = 1000;
/// The longest consumer name, in bytes.
pub const CONSUMER_BYTES_MAX: usize = 256;
/// The longest group name, in bytes (its state stream is `$group-<name>`).
pub const GROUP_NAME_BYTES_MAX: usize = NAME_BYTES_MAX - "$group-".len();

/// Where a group's events come from.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// One stream, in version order.
    Stream(StreamName),
    /// The global log through a filter, in position order (the store's own `$` streams
    /// never).
    All(Filter),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Stream(s) => write!(f, "stream {s}"),
            Source::All(filter) => write!(
                f,
                "all {}",
                serde_json::to_string(filter).unwrap_or_default()
            ),
        }
    }
}

/// Where a new group starts reading its source.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// At the first event.
    #[default]
    Start,
    /// After the last event when the group is created: only new events.
    End,
    /// At this position (source `all`) or version (source `stream`), inclusive.
    At(u64),
}

/// Whether events of one stream may be handled in parallel.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Any event to any consumer at any time.
    #[default]
    None,
    /// At most one event of a stream in flight, and a stream's events in version order.
    PerStream,
}

/// A group's settings.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupSettings {
    /// Where events come from; fixed for the group's life.
    pub source: Source,
    /// Where a new group starts; fixed for the group's life.
    pub start: Start,
    /// How long a delivered event waits for its ack before it is delivered again.
    pub ack_timeout_ms: u64,
    /// After this many deliveries without an ack, an event is parked.
    pub max_deliveries: u32,
    /// Parallelism within a stream.
    pub ordering: Ordering,
}

impl GroupSettings {
    /// A group over `source` with the API's defaults: from the start, 30 s ack timeout,
    /// 5 deliveries, no ordering.
    pub fn new(source: Source) -> Self {
        GroupSettings {
            source,
            start: Start::Start,
            ack_timeout_ms: 30_000,
            max_deliveries: 5,
            ordering: Ordering::None,
        }
    }

    /// Checks the numeric rules.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the broken rule.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        if self.ack_timeout_ms < ACK_TIMEOUT_MS_MIN {
            return Err(InvalidInput::new(
                "ack_timeout_ms",
                format!(
                    "ack_timeout_ms is {}, but at least {ACK_TIMEOUT_MS_MIN} is required",
                    self.ack_timeout_ms
                ),
            ));
        }
        if self.max_deliveries < 1 {
            return Err(InvalidInput::new(
                "max_deliveries",
                "max_deliveries must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Checks a group name: 1–[`GROUP_NAME_BYTES_MAX`] bytes, no control characters.
///
/// # Errors
/// [`InvalidInput`] naming the broken rule.
pub fn check_group_name(name: &str) -> Result<StreamName, InvalidInput> {
    if name.is_empty() || name.len() > GROUP_NAME_BYTES_MAX {
        return Err(InvalidInput::new(
            "group",
            format!("a group name is 1 to {GROUP_NAME_BYTES_MAX} bytes long"),
        ));
    }
    StreamName::system(&format!("group-{name}")).map_err(|e| InvalidInput::new("group", e.message))
}

/// Checks a consumer name: 1–[`CONSUMER_BYTES_MAX`] bytes.
///
/// # Errors
/// [`InvalidInput`] naming the broken rule.
pub fn check_consumer(consumer: &str) -> Result<(), InvalidInput> {
    if consumer.is_empty() || consumer.len() > CONSUMER_BYTES_MAX {
        return Err(InvalidInput::new(
            "consumer",
            format!(
                "a consumer name is 1 to {CONSUMER_BYTES_MAX} bytes long, not {}",
                consumer.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a fetch's `max`: 1–[`FETCH_MAX`].
///
/// # Errors
/// [`InvalidInput`] naming the broken rule.
pub fn check_max(max: usize) -> Result<(), InvalidInput> {
    if max == 0 || max > FETCH_MAX {
        return Err(InvalidInput::new(
            "max",
            format!("max is {max}, but must be 1 to {FETCH_MAX}"),
        ));
    }
    Ok(())
}
