//! What a group is: its name, its source, where it starts, and its delivery settings.
//!
//! These types are both the HTTP contract's (shared/API.md, "Consumer groups") and what the
//! group's state events store, so a setting reads the same everywhere. Request objects
//! refuse unknown members and arrays, like every other request body of the API.

use std::fmt;
use std::sync::Arc;

use concord_core::{Category, EventType, Filter, InvalidInput, RecordedEvent, StreamName, Tag};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::GroupError;

/// The longest group name, in bytes: the group's state stream is `$group-<name>`, and a
/// stream name holds at most 256 bytes.
pub const GROUP_NAME_BYTES_MAX: usize = 200;

/// The longest consumer name, in bytes.
pub const CONSUMER_NAME_BYTES_MAX: usize = 256;

/// The most messages one poll may ask for (`max`).
pub const POLL_MAX: usize = 1000;

/// The most ack ids one ack or nack may carry.
pub const ACK_IDS_MAX: usize = 1000;

/// The shortest `ack_timeout_ms` a group may have.
pub const ACK_TIMEOUT_MS_MIN: u64 = 100;

/// The longest `ack_timeout_ms` (one day): a deadline is a wall-clock time in
/// milliseconds, and a longer one would only hide a lost consumer.
pub const ACK_TIMEOUT_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// The most deliveries `max_deliveries` may allow.
pub const MAX_DELIVERIES_MAX: u32 = 1000;

macro_rules! name_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                $ty::new(&*s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::new(s)
            }
        }
    };
}

/// A group's name: 1–200 bytes of UTF-8 without control characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct GroupName(Arc<str>, StreamName);

impl GroupName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`InvalidInput`] about `group`, naming the broken rule.
    pub fn new(name: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let name = name.as_ref();
        concord_core::check_name("group", name, GROUP_NAME_BYTES_MAX)?;
        let state = StreamName::system(format!("group-{name}"))?;
        Ok(GroupName(Arc::from(name), state))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The store-owned stream that holds the group's state: `$group-<name>`.
    pub fn state_stream(&self) -> &StreamName {
        &self.1
    }

    /// The group whose state `stream` holds, if it is a group's state stream.
    pub fn of_state_stream(stream: &StreamName) -> Option<GroupName> {
        let name = stream.as_str().strip_prefix(STATE_STREAM_PREFIX)?;
        GroupName::new(name).ok()
    }
}

/// What every group's state stream name starts with.
pub const STATE_STREAM_PREFIX: &str = "$group-";

name_serde!(GroupName);

/// A consumer's name, as it polls: 1–256 bytes of UTF-8 without control characters. It is
/// only a label (shown with the messages it holds); any number of consumers may share one.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConsumerName(Arc<str>);

impl ConsumerName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`InvalidInput`] about `consumer`, naming the broken rule.
    pub fn new(name: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let name = name.as_ref();
        concord_core::check_name("consumer", name, CONSUMER_NAME_BYTES_MAX)?;
        Ok(ConsumerName(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

name_serde!(ConsumerName);

/// The `all` source: the global log through a filter (every present part must match).
/// Store-owned (`$`) streams are never part of it.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct AllSource {
    /// Only events of streams in this category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Only events of any of these types (empty: any type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<EventType>,
    /// Only events carrying all of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}
concord_core::object_serde!(AllSource);

impl AllSource {
    /// The read filter of this source.
    pub fn filter(&self) -> Filter {
        Filter {
            category: self.category.clone(),
            types: self.types.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// Where a group's events come from: one stream (offsets are its versions) or the global
/// log through a filter (offsets are positions).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// The events of one stream, in version order.
    Stream(StreamName),
    /// The events of the global log that pass the filter, in position order.
    All(AllSource),
}

impl Source {
    /// Whether `event` (read from this source's log) belongs to the group: never an event
    /// of a store-owned stream, such as a group's own state.
    pub fn admits(&self, event: &RecordedEvent) -> bool {
        !event.stream.is_system()
    }

    /// The offset of `event` in this source: its version for a stream, else its position.
    pub fn offset_of(&self, event: &RecordedEvent) -> u64 {
        match self {
            Source::Stream(_) => event.version.get(),
            Source::All(_) => event.position.get(),
        }
    }

    /// Checks the filter's sizes.
    ///
    /// # Errors
    /// [`InvalidInput`] about `types` or `tags`.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        match self {
            Source::Stream(_) => Ok(()),
            Source::All(all) => all.filter().validate(),
        }
    }
}

/// Where a new group starts reading its source.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum StartFrom {
    /// The first event (`"start"`, the default).
    #[default]
    Start,
    /// After the last event when the group is created (`"end"`).
    End,
    /// At this position (an `all` source) or version (a stream source), inclusive.
    At(u64),
}

impl Serialize for StartFrom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StartFrom::Start => serializer.serialize_str("start"),
            StartFrom::End => serializer.serialize_str("end"),
            StartFrom::At(n) => serializer.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for StartFrom {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StartFrom;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""start", "end" or a whole number (a position or version)"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StartFrom, E> {
                match v {
                    "start" => Ok(StartFrom::Start),
                    "end" => Ok(StartFrom::End),
                    other => Err(E::custom(format!(
                        r#"from {other:?} is neither "start", "end" nor a number"#
                    ))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StartFrom, E> {
                Ok(StartFrom::At(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StartFrom, E> {
                u64::try_from(v)
                    .map(StartFrom::At)
                    .map_err(|_| E::custom(format!("from {v} is negative")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<StartFrom, E> {
                Whole.visit_f64(v).map(StartFrom::At)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl fmt::Display for StartFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartFrom::Start => f.write_str("start"),
            StartFrom::End => f.write_str("end"),
            StartFrom::At(n) => n.fmt(f),
        }
    }
}

/// Whether a group keeps each stream's events in order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Any event to any consumer as soon as it is free (the default).
    #[default]
    None,
    /// No two events of one stream in flight at once, each stream's in version order.
    PerStream,
}

impl fmt::Display for Ordering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ordering::None => "none",
            Ordering::PerStream => "per_stream",
        })
    }
}

/// A JSON number that is a whole number, however written (`3`, `3.0`, `3e0`): JSON has
/// one kind of number, and the API reads counts and durations this way everywhere.
struct Whole;

impl serde::de::Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number from 0")
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
        // 2^64 is the first f64 past u64::MAX.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return Ok(v as u64);
        }
        Err(E::custom(format!(
            "{v} is not a whole number from 0 to 2^64 - 1"
        )))
    }
}

/// Reads a whole number (see [`Whole`]).
///
/// # Errors
/// A number that is negative, fractional or too large; anything but a number.
pub fn deserialize_whole<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(Whole)
}

/// Reads a whole number that must fit a `u32` (larger ones read as `u32::MAX`, which every
/// bound refuses).
fn deserialize_whole_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    deserialize_whole(deserializer).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Reads an optional whole number (`null` or absent: `None`).
///
/// # Errors
/// As [`deserialize_whole`].
pub fn deserialize_optional_whole<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    struct Optional;
    impl<'de> serde::de::Visitor<'de> for Optional {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number from 0, or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            deserialize_whole(d).map(Some)
        }
    }
    deserializer.deserialize_option(Optional)
}

fn default_ack_timeout_ms() -> u64 {
    30_000
}

fn default_max_deliveries() -> u32 {
    5
}

/// A group's definition: `PUT /groups/{group}`'s body. `source` and `from` are fixed when
/// the group is created; the rest may change.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct GroupSpec {
    /// Where the events come from.
    pub source: Source,
    /// Where a new group starts.
    #[serde(default)]
    pub from: StartFrom,
    /// How long a consumer has to ack a message before it is delivered again (ms).
    #[serde(
        default = "default_ack_timeout_ms",
        deserialize_with = "deserialize_whole"
    )]
    pub ack_timeout_ms: u64,
    /// Deliveries of one event before it is parked.
    #[serde(
        default = "default_max_deliveries",
        deserialize_with = "deserialize_whole_u32"
    )]
    pub max_deliveries: u32,
    /// Whether each stream's events stay in order.
    #[serde(default)]
    pub ordering: Ordering,
}
concord_core::object_serde!(GroupSpec);

impl GroupSpec {
    /// A group over `source` from the start, with the defaults of API.md.
    pub fn new(source: Source) -> Self {
        GroupSpec {
            source,
            from: StartFrom::Start,
            ack_timeout_ms: default_ack_timeout_ms(),
            max_deliveries: default_max_deliveries(),
            ordering: Ordering::None,
        }
    }

    /// Checks the rules no type enforces: `max_deliveries` from 1, `ack_timeout_ms` from
    /// 100 (both bounded above), the filter's sizes.
    ///
    /// # Errors
    /// [`GroupError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), GroupError> {
        if self.max_deliveries < 1 || self.max_deliveries > MAX_DELIVERIES_MAX {
            return Err(InvalidInput::new(
                "max_deliveries",
                format!(
                    "max_deliveries is {}, but it must be from 1 to {MAX_DELIVERIES_MAX}",
                    self.max_deliveries
                ),
            )
            .into());
        }
        if !(ACK_TIMEOUT_MS_MIN..=ACK_TIMEOUT_MS_MAX).contains(&self.ack_timeout_ms) {
            return Err(InvalidInput::new(
                "ack_timeout_ms",
                format!(
                    "ack_timeout_ms is {}, but it must be from {ACK_TIMEOUT_MS_MIN} to {ACK_TIMEOUT_MS_MAX}",
                    self.ack_timeout_ms
                ),
            )
            .into());
        }
        self.source.validate()?;
        Ok(())
    }
}

/// What to do with messages a consumer gives back (`nack`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NackAction {
    /// Deliver it again (to any consumer), or park it when it has had `max_deliveries`.
    Retry,
    /// Park it now.
    Park,
    /// Give it up: never delivered again, not counted as acked.
    Skip,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_the_api_shape_with_its_defaults() {
        let spec: GroupSpec = serde_json::from_str(r#"{"source": {"stream": "order-1"}}"#).unwrap();
        assert_eq!(
            spec.source,
            Source::Stream(StreamName::new("order-1").unwrap())
        );
        assert_eq!(spec.from, StartFrom::Start);
        assert_eq!(spec.ack_timeout_ms, 30_000);
        assert_eq!(spec.max_deliveries, 5);
        assert_eq!(spec.ordering, Ordering::None);
        let all: GroupSpec = serde_json::from_str(
            r#"{"source": {"all": {"category": "order", "types": ["Placed"]}}, "from": "end", "ordering": "per_stream"}"#,
        )
        .unwrap();
        assert!(
            matches!(&all.source, Source::All(a) if a.category.as_ref().map(Category::as_str) == Some("order"))
        );
        assert_eq!(all.from, StartFrom::End);
        assert_eq!(all.ordering, Ordering::PerStream);
        let whole: GroupSpec = serde_json::from_str(
            r#"{"source": {"all": {}}, "ack_timeout_ms": 1310.0, "max_deliveries": 2e0, "from": 3.0}"#,
        )
        .unwrap();
        assert_eq!(
            (whole.ack_timeout_ms, whole.max_deliveries, whole.from),
            (1310, 2, StartFrom::At(3))
        );
        let at: GroupSpec = serde_json::from_str(r#"{"source": {"all": {}}, "from": 42}"#).unwrap();
        assert_eq!(at.from, StartFrom::At(42));
        assert_eq!(
            serde_json::to_value(at.from).unwrap(),
            serde_json::json!(42)
        );
    }

    #[test]
    fn a_spec_refuses_what_the_api_refuses() {
        for bad in [
            r#"{}"#,
            r#"[]"#,
            r#"{"source": {"stream": "s"}, "ordering": "random"}"#,
            r#"{"source": {"stream": "$group-x"}}"#,
            r#"{"source": {"stream": "s", "all": {}}}"#,
            r#"{"source": {"all": {"categry": "x"}}}"#,
            r#"{"source": {"stream": "s"}, "form": "start"}"#,
            r#"{"source": {"stream": "s"}, "from": "middle"}"#,
            r#"{"source": {"stream": "s"}, "from": -1}"#,
            r#"{"source": {"stream": "s"}, "ack_timeout_ms": 100.5}"#,
            r#"{"source": {"stream": "s"}, "max_deliveries": "5"}"#,
        ] {
            assert!(serde_json::from_str::<GroupSpec>(bad).is_err(), "{bad}");
        }
        let mut spec = GroupSpec::new(Source::All(AllSource::default()));
        assert!(spec.validate().is_ok());
        spec.max_deliveries = 0;
        assert!(
            matches!(spec.validate(), Err(GroupError::Invalid(e)) if e.field == "max_deliveries")
        );
        spec.max_deliveries = 1;
        spec.ack_timeout_ms = 99;
        assert!(
            matches!(spec.validate(), Err(GroupError::Invalid(e)) if e.field == "ack_timeout_ms")
        );
        spec.ack_timeout_ms = 100;
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn names_follow_their_rules() {
        assert!(GroupName::new("receipts").is_ok());
        assert!(GroupName::new("").is_err());
        assert!(GroupName::new("a".repeat(200)).is_ok());
        assert!(GroupName::new("a".repeat(201)).is_err());
        assert!(GroupName::new("a\nb").is_err());
        assert!(ConsumerName::new("w".repeat(256)).is_ok());
        assert!(ConsumerName::new("w".repeat(257)).is_err());
        assert!(ConsumerName::new("").is_err());
        let g = GroupName::new("a".repeat(200)).unwrap();
        let state = g.state_stream();
        assert!(state.is_system());
        assert_eq!(state.as_str(), format!("$group-{}", "a".repeat(200)));
        assert_eq!(GroupName::of_state_stream(state), Some(g.clone()));
    }
}
