//! Validated names: streams, categories, event types and tags.
//!
//! Every name that reaches a backend went through one of these constructors, so backends
//! never re-check them. The rules are API.md's; a name that breaks one is an
//! [`InvalidInput`] that says which rule and shows the value.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::InvalidInput;

/// The longest stream name, event type or tag, in bytes.
pub const NAME_BYTES_MAX: usize = 256;

/// How many names of each kind a thread keeps for [`EventType::recent`] and
/// [`StreamName::recent`] (past it, it forgets them all and starts again).
const RECENT_NAMES_MAX: usize = 256;

type RecentNames<T> = std::cell::RefCell<foldhash::HashMap<Box<str>, T>>;

thread_local! {
    static RECENT_TYPES: RecentNames<EventType> = RecentNames::default();
    static RECENT_STREAMS: RecentNames<StreamName> = RecentNames::default();
}

/// The name `text` from this thread's recent ones, else made (checked) and remembered.
fn recent<T: Clone + 'static>(
    cache: &'static std::thread::LocalKey<RecentNames<T>>,
    text: &str,
    make: impl FnOnce(&str) -> Result<T, InvalidInput>,
) -> Result<T, InvalidInput> {
    cache.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(name) = names.get(text) {
            return Ok(name.clone());
        }
        let name = make(text)?;
        if names.len() >= RECENT_NAMES_MAX {
            names.clear();
        }
        names.insert(text.into(), name.clone());
        Ok(name)
    })
}

fn check_text(what: &'static str, value: &str) -> Result<(), InvalidInput> {
    check_name(what, value, NAME_BYTES_MAX)
}

/// The rule every name of Concord follows, at its own length: 1 to `max` bytes of UTF-8
/// without control characters. Names defined outside core (consumer groups, consumers)
/// check themselves with it, so a refused name reads the same everywhere.
///
/// # Errors
/// [`InvalidInput`] for `what`, naming the broken rule.
pub fn check_name(what: &'static str, value: &str, max: usize) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::new(what, format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(InvalidInput::new(
            what,
            format!(
                "{what} is {} bytes long, but at most {max} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(InvalidInput::new(
            what,
            format!("{what} {value:?} contains the control character {c:?}"),
        ));
    }
    Ok(())
}

macro_rules! string_newtype_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                // Borrowed when the input allows it: the name is copied once, into its `Arc`.
                let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                $ty::new(&*s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::new(s)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = InvalidInput;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                $ty::new(s)
            }
        }
    };
}

/// A stream's name, e.g. `account-42`: 1–256 bytes of UTF-8, no control characters, not
/// starting with `$` (reserved for the store).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct StreamName(Arc<str>);

impl StreamName {
    /// Validates `name` as a stream name.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the broken rule.
    pub fn new(name: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let name = name.as_ref();
        check_text("stream", name)?;
        if name.starts_with('$') {
            return Err(InvalidInput::new(
                "stream",
                format!("stream {name:?} starts with `$`, which is reserved for the store"),
            ));
        }
        Ok(Self(Arc::from(name)))
    }

    /// A stream owned by the store itself, `$<name>` (e.g. `$group-orders`, where consumer
    /// groups keep their state): the `$` that [`StreamName::new`] refuses keeps user input
    /// from ever naming, and so writing to, such a stream.
    ///
    /// # Errors
    /// [`InvalidInput`] when `$<name>` breaks a rule of stream names other than the `$`.
    pub fn system(name: impl AsRef<str>) -> Result<Self, InvalidInput> {
        check_text("stream", name.as_ref())?;
        let name = format!("${}", name.as_ref());
        check_text("stream", &name)?;
        Ok(Self(Arc::from(name)))
    }

    /// A name a backend stored and now reads back: a user stream ([`StreamName::new`]) or
    /// a store-owned one ([`StreamName::system`]). Only backends decoding their own data
    /// use it; input from users goes through [`StreamName::new`].
    ///
    /// # Errors
    /// [`InvalidInput`] naming the broken rule.
    pub fn stored(name: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let name = name.as_ref();
        match name.strip_prefix('$') {
            Some(system) => Self::system(system),
            None => Self::new(name),
        }
    }

    /// As [`StreamName::stored`], but shares the name with the ones this thread made this
    /// way lately: for backends decoding stored events, where one page names few streams
    /// many times, so each is checked and allocated once instead of once per event.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the broken rule.
    pub fn recent(name: &str) -> Result<Self, InvalidInput> {
        recent(&RECENT_STREAMS, name, |n| Self::stored(n))
    }

    /// Whether the store owns this stream ([`StreamName::system`]): readers that show the
    /// log to users leave such streams out.
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `-` (the whole name when there is none):
    /// `account-42` → `account`.
    pub fn category(&self) -> Category {
        let cat = self.0.split('-').next().unwrap_or(&self.0);
        Category(Arc::from(cat))
    }
}

string_newtype_serde!(StreamName);

/// A stream's category: the part of its name before the first `-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Category(Arc<str>);

impl Category {
    /// Validates `name` as a category (the same rules as a stream name, and no `-`).
    ///
    /// # Errors
    /// [`InvalidInput`] naming the broken rule.
    pub fn new(name: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let name = name.as_ref();
        check_text("category", name)?;
        if name.contains('-') {
            return Err(InvalidInput::new(
                "category",
                format!(
                    "category {name:?} contains `-`; a category is the part of a stream name before the first `-`"
                ),
            ));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The category as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype_serde!(Category);

/// The name of what happened, in the past tense: `Deposited`. 1–256 bytes, no control
/// characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct EventType(Arc<str>);

impl EventType {
    /// Validates `name` as an event type.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the broken rule.
    pub fn new(name: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let name = name.as_ref();
        check_text("type", name)?;
        Ok(Self(Arc::from(name)))
    }

    /// As [`EventType::new`], but shares the type with the ones this thread made this way
    /// lately: for backends decoding stored events, where few types name many events.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the broken rule.
    pub fn recent(name: &str) -> Result<Self, InvalidInput> {
        recent(&RECENT_TYPES, name, |n| Self::new(n))
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype_serde!(EventType);

/// A label an event carries for cross-stream queries, e.g. `username:alice`: 1–256 bytes,
/// no control characters, no commas.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Tag(Arc<str>);

impl Tag {
    /// Validates `tag`.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the broken rule.
    pub fn new(tag: impl AsRef<str>) -> Result<Self, InvalidInput> {
        let tag = tag.as_ref();
        check_text("tag", tag)?;
        if tag.contains(',') {
            return Err(InvalidInput::new(
                "tag",
                format!("tag {tag:?} contains a comma, which separates tags in query strings"),
            ));
        }
        Ok(Self(Arc::from(tag)))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype_serde!(Tag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_names_are_shared_checked_and_bounded() {
        let first = EventType::recent("Deposited").unwrap();
        let again = EventType::recent("Deposited").unwrap();
        assert!(
            Arc::ptr_eq(&first.0, &again.0),
            "the second is the first one's text"
        );
        let stream = StreamName::recent("account-42").unwrap();
        assert!(Arc::ptr_eq(
            &stream.0,
            &StreamName::recent("account-42").unwrap().0
        ));
        // Checked like new ones, and a refused name is not remembered.
        for bad in ["", "bad\ntype"] {
            assert!(EventType::recent(bad).is_err(), "{bad:?}");
            assert!(EventType::recent(bad).is_err(), "{bad:?} again");
        }
        assert!(StreamName::recent("$").is_err());
        // Past the bound the remembered names are dropped, not grown.
        for n in 0..(RECENT_NAMES_MAX * 2) {
            assert!(EventType::recent(&format!("T{n}")).is_ok());
        }
        assert!(RECENT_TYPES.with(|t| t.borrow().len()) <= RECENT_NAMES_MAX);
    }

    #[test]
    fn stream_names_follow_the_api_rules() {
        assert!(StreamName::new("account-42").is_ok());
        assert!(StreamName::new("ünïcødé-流").is_ok());
        assert!(StreamName::new("a".repeat(256)).is_ok());
        assert!(StreamName::new("a".repeat(257)).is_err());
        assert!(StreamName::new("").is_err());
        assert!(StreamName::new("$all").is_err());
        assert!(StreamName::new("bad\nname").is_err());
        assert!(StreamName::new("tab\tname").is_err());
    }

    #[test]
    fn system_streams_are_made_by_the_store_and_read_back_but_never_from_user_input() {
        let group = StreamName::system("group-orders").unwrap();
        assert_eq!(group.as_str(), "$group-orders");
        assert!(group.is_system());
        assert!(!StreamName::new("group-orders").unwrap().is_system());
        assert!(
            StreamName::new("$group-orders").is_err(),
            "users cannot name it"
        );
        assert!(serde_json::from_str::<StreamName>("\"$group-orders\"").is_err());
        assert_eq!(StreamName::stored("$group-orders").unwrap(), group);
        assert_eq!(StreamName::recent("$group-orders").unwrap(), group);
        assert!(StreamName::system("a".repeat(255)).is_ok());
        assert!(
            StreamName::system("a".repeat(256)).is_err(),
            "257 bytes with the `$`"
        );
        assert!(StreamName::system("bad\nname").is_err());
        assert!(StreamName::stored("$").is_err());
    }

    #[test]
    fn category_is_the_part_before_the_first_dash() {
        let s = StreamName::new("account-42-x").unwrap();
        assert_eq!(s.category().as_str(), "account");
        let s = StreamName::new("plain").unwrap();
        assert_eq!(s.category().as_str(), "plain");
        let s = StreamName::new("-x").unwrap();
        assert_eq!(s.category().as_str(), "");
    }

    #[test]
    fn tags_refuse_commas_and_control_characters() {
        assert!(Tag::new("username:alice").is_ok());
        assert!(Tag::new("a,b").is_err());
        assert!(Tag::new("").is_err());
        assert!(Tag::new("x\u{7}").is_err());
    }

    #[test]
    fn deserializing_an_invalid_name_fails() {
        let err = serde_json::from_str::<StreamName>("\"$x\"").unwrap_err();
        assert!(err.to_string().contains("reserved"));
    }
}
