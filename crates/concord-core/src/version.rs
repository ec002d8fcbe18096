//! Versions, positions and the writer's claim about a stream.
//!
//! `Version` and `Position` are distinct newtypes so that a version can never be passed
//! where a position is meant: they are both `u64`s and both start at 1, which is exactly
//! how they get mixed up.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON number that is a whole number from 0 to 2^64 - 1, however it is written: JSON
/// has one kind of number, so `3`, `3.0` and `3e0` are the same (what a JSON Schema
/// `integer` allows). Versions, positions and counts in requests are read through it.
pub(crate) struct WholeNumber;

impl serde::de::Visitor<'_> for WholeNumber {
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

/// Reads an optional count (`limit`) as a [`WholeNumber`].
///
/// # Errors
/// A number that is negative, fractional or too large.
pub fn deserialize_optional_count<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    struct Optional;
    impl<'de> serde::de::Visitor<'de> for Optional {
        type Value = Option<usize>;
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
            let n = d.deserialize_any(WholeNumber)?;
            Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
        }
    }
    deserializer.deserialize_option(Optional)
}

/// 1-based number of an event within its stream; a stream's version is its last event's.
/// `Version(0)` means "no stream".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Version(pub u64);

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WholeNumber).map(Version)
    }
}

impl Version {
    /// The version of a stream that does not exist.
    pub const NONE: Version = Version(0);
    /// The highest version; reading backward from it starts at the stream's end.
    pub const MAX: Version = Version(u64::MAX);

    /// The version after this one.
    #[must_use]
    pub fn next(self) -> Version {
        Version(self.0.saturating_add(1))
    }

    /// This version plus `n`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, n: u64) -> Option<Version> {
        self.0.checked_add(n).map(Version)
    }

    /// The number as a `u64`.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// 1-based, global, gap-free, strictly increasing in commit order. `Position(0)` is "before
/// the first event".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Position(pub u64);

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WholeNumber).map(Position)
    }
}

impl Position {
    /// Before the first event: the head of an empty store.
    pub const ZERO: Position = Position(0);
    /// The first position.
    pub const FIRST: Position = Position(1);

    /// The position after this one.
    #[must_use]
    pub fn next(self) -> Position {
        Position(self.0.saturating_add(1))
    }

    /// This position plus `n`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, n: u64) -> Option<Position> {
        self.0.checked_add(n).map(Position)
    }

    /// The number as a `u64`.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The writer's claim about a stream, checked atomically with the append.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum ExpectedVersion {
    /// The stream's current version is exactly this (0: the stream must not exist). Only
    /// this form allows a server-side rebase.
    Exact(Version),
    /// The stream must not exist (`"no_stream"`).
    NoStream,
    /// The stream must exist (`"exists"`).
    Exists,
    /// No check (`"any"`, the default).
    #[default]
    Any,
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    pub fn holds_for(self, actual: Version) -> bool {
        match self {
            ExpectedVersion::Exact(v) => v == actual,
            ExpectedVersion::NoStream => actual == Version::NONE,
            ExpectedVersion::Exists => actual != Version::NONE,
            ExpectedVersion::Any => true,
        }
    }

    /// The first version a conflict reports as concurrent: the events the writer did not
    /// see. `None` when nothing after the expectation exists (e.g. `Exists` on no stream, or
    /// an exact version ahead of the stream).
    pub fn first_concurrent(self, actual: Version) -> Option<Version> {
        let first = match self {
            ExpectedVersion::Exact(v) => v.next(),
            ExpectedVersion::NoStream => Version(1),
            ExpectedVersion::Exists | ExpectedVersion::Any => return None,
        };
        (first <= actual).then_some(first)
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Exact(v) => v.fmt(f),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::Exists => f.write_str("exists"),
            ExpectedVersion::Any => f.write_str("any"),
        }
    }
}

impl std::str::FromStr for ExpectedVersion {
    type Err = crate::error::InvalidInput;

    /// Accepts the wire forms (`3`, `no_stream`, `exists`, `any`) and the CLI's
    /// `no-stream`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no_stream" | "no-stream" => Ok(ExpectedVersion::NoStream),
            "exists" => Ok(ExpectedVersion::Exists),
            "any" => Ok(ExpectedVersion::Any),
            n => n.parse::<u64>().map(|n| ExpectedVersion::Exact(Version(n))).map_err(|_| {
                crate::error::InvalidInput::new(
                    "expected_version",
                    format!("expected version {s:?} is neither a number nor one of no_stream, exists, any"),
                )
            }),
        }
    }
}

impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpectedVersion::Exact(v) => serializer.serialize_u64(v.0),
            ExpectedVersion::NoStream => serializer.serialize_str("no_stream"),
            ExpectedVersion::Exists => serializer.serialize_str("exists"),
            ExpectedVersion::Any => serializer.serialize_str("any"),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ExpectedVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a version number or one of "no_stream", "exists", "any""#)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ExpectedVersion::Exact(Version(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| ExpectedVersion::Exact(Version(v)))
                    .map_err(|_| E::custom(format!("expected version {v} is negative")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                serde::de::Visitor::visit_f64::<E>(WholeNumber, v)
                    .map(|v| ExpectedVersion::Exact(Version(v)))
                    .map_err(|e| E::custom(format!("expected version: {e}")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "no_stream" => Ok(ExpectedVersion::NoStream),
                    "exists" => Ok(ExpectedVersion::Exists),
                    "any" => Ok(ExpectedVersion::Any),
                    _ => Err(E::custom(format!(
                        r#"expected version {v:?} is not one of "no_stream", "exists", "any""#
                    ))),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_expectation_holds_exactly_when_it_should() {
        let none = Version::NONE;
        let two = Version(2);
        assert!(ExpectedVersion::Exact(two).holds_for(two));
        assert!(!ExpectedVersion::Exact(two).holds_for(Version(3)));
        assert!(ExpectedVersion::Exact(none).holds_for(none));
        assert!(ExpectedVersion::NoStream.holds_for(none));
        assert!(!ExpectedVersion::NoStream.holds_for(two));
        assert!(ExpectedVersion::Exists.holds_for(two));
        assert!(!ExpectedVersion::Exists.holds_for(none));
        assert!(ExpectedVersion::Any.holds_for(none));
        assert!(ExpectedVersion::Any.holds_for(two));
    }

    #[test]
    fn concurrent_events_start_after_the_expectation() {
        assert_eq!(
            ExpectedVersion::Exact(Version(10)).first_concurrent(Version(12)),
            Some(Version(11))
        );
        assert_eq!(
            ExpectedVersion::Exact(Version(12)).first_concurrent(Version(10)),
            None
        );
        assert_eq!(
            ExpectedVersion::NoStream.first_concurrent(Version(3)),
            Some(Version(1))
        );
        assert_eq!(ExpectedVersion::Exists.first_concurrent(Version(0)), None);
    }

    #[test]
    fn expected_version_round_trips_through_json() {
        for (json, ev) in [
            ("17", ExpectedVersion::Exact(Version(17))),
            ("\"no_stream\"", ExpectedVersion::NoStream),
            ("\"exists\"", ExpectedVersion::Exists),
            ("\"any\"", ExpectedVersion::Any),
        ] {
            assert_eq!(serde_json::from_str::<ExpectedVersion>(json).unwrap(), ev);
            assert_eq!(serde_json::to_string(&ev).unwrap(), json);
        }
        assert!(serde_json::from_str::<ExpectedVersion>("-1").is_err());
        assert!(serde_json::from_str::<ExpectedVersion>("\"latest\"").is_err());
        assert!(serde_json::from_str::<ExpectedVersion>("1.5").is_err());
    }

    /// JSON has one kind of number: a whole number written `3.0` or `3e0` is 3, as a JSON
    /// Schema `integer` says; a fraction, a negative number or one past 2^64 - 1 is not.
    #[test]
    fn whole_numbers_are_read_however_they_are_written() {
        for (json, n) in [
            ("3", 3),
            ("3.0", 3),
            ("3e0", 3),
            ("1.8e19", 18_000_000_000_000_000_000),
        ] {
            assert_eq!(serde_json::from_str::<Version>(json).unwrap(), Version(n));
            assert_eq!(serde_json::from_str::<Position>(json).unwrap(), Position(n));
            assert_eq!(
                serde_json::from_str::<ExpectedVersion>(json).unwrap(),
                ExpectedVersion::Exact(Version(n))
            );
        }
        for bad in ["3.5", "-1", "-1.0", "1.9e19", "\"3\""] {
            assert!(serde_json::from_str::<Version>(bad).is_err(), "{bad}");
            assert!(serde_json::from_str::<Position>(bad).is_err(), "{bad}");
        }
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "deserialize_optional_count")]
            limit: Option<usize>,
        }
        let read = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.limit);
        assert_eq!(read(r#"{"limit": 122.0}"#).unwrap(), Some(122));
        assert_eq!(read(r#"{"limit": null}"#).unwrap(), None);
        assert_eq!(read("{}").unwrap(), None);
        assert!(read(r#"{"limit": 1.5}"#).is_err());
    }
}
