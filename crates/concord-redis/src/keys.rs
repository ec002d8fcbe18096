//! Key names: where each part of a Concord store lives in Redis.
//!
//! Every key starts with the hash tag `{<prefix>}`, so all keys of one store, and thus all
//! keys one append touches, hash to one Redis Cluster slot. Stream names may contain any
//! character but control characters, including `{` and `}`; that is harmless because the
//! hash tag is the *first* `{…}` of a key, which is always the prefix's.

use concord_core::{EventType, StreamName, Tag};

use crate::error::RedisError;

/// The key names of one Concord store in Redis (see `docs/design/redis-layout.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    tag: String,
}

impl KeyLayout {
    /// The layout under `prefix` (default `concord`).
    ///
    /// # Errors
    /// [`RedisError::InvalidPrefix`] when the prefix is empty, longer than 64 bytes, or
    /// contains braces, whitespace or control characters.
    pub fn new(prefix: &str) -> Result<Self, RedisError> {
        let bad = |c: char| c == '{' || c == '}' || c.is_whitespace() || c.is_control();
        if prefix.is_empty() || prefix.len() > 64 || prefix.chars().any(bad) {
            return Err(RedisError::InvalidPrefix(prefix.to_owned()));
        }
        Ok(KeyLayout {
            tag: format!("{{{prefix}}}"),
        })
    }

    /// The Redis Stream holding `stream`'s events, entry id `<version>-0`.
    pub fn stream(&self, stream: &StreamName) -> String {
        format!("{}:stream:{stream}", self.tag)
    }

    /// Hash: event id → version, for the idempotency check of `stream`.
    pub fn ids(&self, stream: &StreamName) -> String {
        format!("{}:ids:{stream}", self.tag)
    }

    /// Hash: event type → last version of `stream` with that type, for the rebase rule.
    pub fn types(&self, stream: &StreamName) -> String {
        format!("{}:types:{stream}", self.tag)
    }

    /// The global Redis Stream, entry id `<position>-0`.
    pub fn all(&self) -> String {
        format!("{}:all", self.tag)
    }

    /// String: the head (last position), 0 or absent when the store is empty.
    pub fn head(&self) -> String {
        format!("{}:head", self.tag)
    }

    /// Sorted set of every stream name (all scores 0, so it orders by name).
    pub fn index(&self) -> String {
        format!("{}:streams", self.tag)
    }

    /// Hash: stream name → its lifecycle, six numbers (library version 6): deleted through,
    /// tombstoned, max count, max age in seconds, truncate before (0: unset), erased through.
    pub fn lifecycle(&self) -> String {
        format!("{}:lifecycle", self.tag)
    }

    /// Stream: where a scavenge rewrites a stream it deleted entries from.
    pub fn scratch(&self) -> String {
        format!("{}:scavenge-scratch", self.tag)
    }

    /// Set: the keys a scavenge deleted entries from and has not rewritten yet (library
    /// version 7), so that the next scavenge rewrites them when one is cut short.
    pub fn scavenge_pending(&self) -> String {
        format!("{}:scavenge-pending", self.tag)
    }

    /// Hash: stream name → `"<version> <last position>"`.
    pub fn heads(&self) -> String {
        format!("{}:stream-heads", self.tag)
    }

    /// The start of every type index key; the type follows.
    pub fn type_index_prefix(&self) -> String {
        format!("{}:type:", self.tag)
    }

    /// Stream: one entry per event of `event_type`, entry id `<position>-0`, for query
    /// conditions and query reads.
    pub fn type_index(&self, event_type: &EventType) -> String {
        format!("{}:type:{event_type}", self.tag)
    }

    /// The start of every tag index key; the tag follows.
    pub fn tag_index_prefix(&self) -> String {
        format!("{}:tag:", self.tag)
    }

    /// Stream: one entry per event carrying `tag`, entry id `<position>-0`, field `type`.
    pub fn tag_index(&self, tag: &Tag) -> String {
        format!("{}:tag:{tag}", self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_prefix_as_its_hash_tag() {
        let keys = KeyLayout::new("concord").unwrap();
        let s = StreamName::new("account-{42}").unwrap();
        for key in [
            keys.stream(&s),
            keys.ids(&s),
            keys.types(&s),
            keys.all(),
            keys.head(),
            keys.scavenge_pending(),
            keys.index(),
            keys.heads(),
            keys.type_index(&EventType::new("T").unwrap()),
            keys.tag_index(&Tag::new("username:{x}").unwrap()),
        ] {
            assert!(key.starts_with("{concord}:"), "{key}");
        }
        assert_eq!(keys.stream(&s), "{concord}:stream:account-{42}");
    }

    #[test]
    fn prefixes_that_would_break_the_hash_tag_are_refused() {
        for bad in ["", "a{b", "a}b", "a b", "a\nb", &"x".repeat(65)] {
            assert!(KeyLayout::new(bad).is_err(), "{bad:?}");
        }
        assert!(KeyLayout::new("tenant-1.concord").is_ok());
    }
}
