//! Importing events recorded by another store (`EventStore::import`, what `concord copy`
//! writes with): the batch is checked alone here (core's `plan_import`), then written by
//! one call of `concord_import_v10`, which checks it against what is stored (the head, each
//! stream's last version and lifecycle, its ids) before its first write, and writes every
//! copy an append writes: the stream entry `<version>-0`, the global entry
//! `<position>-0`, the type and tag index entries, ids, types, the stream head and index,
//! and the head counter. See docs/design/redis-layout.md.
//!
//! A stream's past (`concord_import_past_v11`) is its lifecycle field, and for a stream
//! without versions its stream head `"<last> 0"` and index entry with `erased` at the
//! last version, as a scavenge leaves a stream it erased whole; a raised head
//! (`concord_import_head_v11`) is the head counter alone.

use std::collections::{BTreeSet, HashMap};

use concord_core::{
    InvalidInput, Position, RecordedEvent, StoreError, StreamLifecycle, StreamName, StreamPast,
    Version, plan_head_import, plan_import, plan_past_import,
};

use super::lifecycle::Stored;
use super::{LUA_POSITION_MAX, RedisStore, parse_heads};
use crate::decode;
use crate::error::RedisError;

/// Refuses a `what` (position or version) of `field` above what Redis's Lua numbers
/// (doubles) count exactly.
fn counted_exactly(field: &'static str, what: &str, n: u64) -> Result<(), StoreError> {
    if n > LUA_POSITION_MAX {
        return Err(InvalidInput::new(
            field,
            format!("{what} {n} is beyond what the Redis store counts exactly"),
        )
        .into());
    }
    Ok(())
}

impl RedisStore {
    pub(crate) async fn import_events(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        counted_exactly("events", "position", last.position.get())?;
        let streams = plan_import(&events, Position(0), &self.inner.options.limits)?;
        let keys = &self.inner.keys;
        let mut key_list: Vec<String> = vec![
            keys.all(),
            keys.head(),
            keys.index(),
            keys.heads(),
            keys.lifecycle(),
        ];
        let mut number: HashMap<&StreamName, usize> = HashMap::new();
        for (i, s) in streams.iter().enumerate() {
            key_list.push(keys.stream(&s.stream));
            key_list.push(keys.ids(&s.stream));
            key_list.push(keys.types(&s.stream));
            number.insert(&s.stream, i + 1);
        }
        let mut index_keys = BTreeSet::new();
        for e in &events {
            index_keys.insert(keys.type_index(&e.event_type));
            for t in &e.tags {
                index_keys.insert(keys.tag_index(t));
            }
        }
        key_list.extend(index_keys);
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("concord_import_v10")
            .arg(key_list.len())
            .arg(key_list)
            .arg(keys.type_index_prefix())
            .arg(keys.tag_index_prefix())
            .arg(streams.len());
        for s in &streams {
            cmd.arg(s.stream.as_str()).arg(s.first.get());
        }
        for e in &events {
            let tags = e
                .tags
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(",");
            cmd.arg(number.get(&e.stream).copied().unwrap_or(0))
                .arg(e.position.get())
                .arg(e.version.get())
                .arg(e.id.to_string())
                .arg(e.event_type.as_str())
                .arg(e.data.as_bytes())
                .arg(e.metadata.as_bytes())
                .arg(tags)
                .arg(e.data.bytes_content_type().map_or("", |t| t.as_str()))
                .arg(e.recorded_at.as_millis());
        }
        const C: &str = "FCALL concord_import_v10";
        let reply = self.fcall(&cmd).await?;
        let (kind, items) = decode::outcome(C, &reply)?;
        let invalid =
            |message: String| -> StoreError { InvalidInput::new("events", message).into() };
        let stream_of = |i: usize| -> Result<StreamName, StoreError> {
            let name = items
                .get(i)
                .ok_or_else(|| RedisError::reply(C, "import refusal lacks its stream"))?;
            StreamName::stored(decode::text(C, name)?)
                .map_err(|e| RedisError::reply(C, e.to_string()).into())
        };
        match kind {
            "ok" => {
                self.inner.signal.advance(last.position);
                Ok(())
            }
            "head" => {
                let head = items.get(1).map_or(Ok(0), |h| decode::int(C, h))?;
                Err(invalid(format!(
                    "the import starts at position {}, but this store's head is already {head}",
                    events.first().map_or(Position(0), |e| e.position)
                )))
            }
            "tombstoned" => Err(StoreError::StreamDeleted(stream_of(1)?)),
            "version" => {
                let stream = stream_of(1)?;
                let stored = items.get(2).map_or(Ok(0), |v| decode::int(C, v))?;
                let first = streams
                    .iter()
                    .find(|s| s.stream == stream)
                    .map_or(Version(0), |s| s.first);
                Err(invalid(format!(
                    "stream {stream} is at version {stored} here, but the import starts it at version {first}"
                )))
            }
            "id" => {
                let stream = stream_of(1)?;
                let id = items.get(2).map_or(Ok(""), |v| decode::text(C, v))?;
                Err(invalid(format!(
                    "event id {id} is already in stream {stream}"
                )))
            }
            other => Err(RedisError::reply(C, format!("unknown import outcome {other:?}")).into()),
        }
    }

    pub(crate) async fn import_past(&self, past: &StreamPast) -> Result<(), StoreError> {
        // Checked alone first: only the stored state is checked in Redis.
        plan_past_import(past, past.last, &StreamLifecycle::default())?;
        counted_exactly("last", "version", past.last.get())?;
        let keys = &self.inner.keys;
        let l = past.lifecycle;
        let m = l.metadata;
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("concord_import_past_v11")
            .arg(4)
            .arg(keys.lifecycle())
            .arg(keys.stream(&past.stream))
            .arg(keys.heads())
            .arg(keys.index())
            .arg(past.stream.as_str())
            .arg(past.last.get())
            .arg(l.deleted_through.get())
            .arg(u8::from(l.tombstoned))
            .arg(m.max_count.unwrap_or(0))
            .arg(m.max_age_seconds.unwrap_or(0))
            .arg(m.truncate_before.map_or(0, Version::get));
        const C: &str = "FCALL concord_import_past_v11";
        let reply = self.fcall(&cmd).await?;
        let (kind, items) = decode::outcome(C, &reply)?;
        match kind {
            "ok" => {
                self.inner.signal.touch();
                Ok(())
            }
            "tombstoned" => Err(StoreError::StreamDeleted(past.stream.clone())),
            "version" => {
                let last = items.get(1).map_or(Ok(0), |v| decode::int(C, v))?;
                Err(InvalidInput::new(
                    "last",
                    format!(
                        "stream {} is at version {last} here, but its past says its last version is {}",
                        past.stream, past.last
                    ),
                )
                .into())
            }
            other => Err(RedisError::reply(C, format!("unknown outcome {other:?}")).into()),
        }
    }

    pub(crate) async fn raise_head(&self, to: Position) -> Result<(), StoreError> {
        counted_exactly("head", "position", to.get())?;
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("concord_import_head_v11")
            .arg(1)
            .arg(self.inner.keys.head())
            .arg(to.get());
        const C: &str = "FCALL concord_import_head_v11";
        let reply = self.fcall(&cmd).await?;
        let (kind, items) = decode::outcome(C, &reply)?;
        match kind {
            "ok" => {
                self.inner.signal.advance(to);
                Ok(())
            }
            "head" => {
                let head = items.get(1).map_or(Ok(0), |h| decode::int(C, h))?;
                plan_head_import(Position(head), to).map(drop)
            }
            other => Err(RedisError::reply(C, format!("unknown outcome {other:?}")).into()),
        }
    }

    /// The names come from the stream index (streams with versions) and the lifecycle
    /// hash (streams with only a lifecycle), which has no order: its names are read whole
    /// for each page.
    pub(crate) async fn stream_pasts(
        &self,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamPast>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let indexed: Vec<String> = self
            .query(
                "ZRANGE",
                redis::cmd("ZRANGE")
                    .arg(keys.index())
                    .arg(start)
                    .arg("+")
                    .arg("BYLEX")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        let with_lifecycle: Vec<String> = self
            .query("HKEYS", redis::cmd("HKEYS").arg(keys.lifecycle()))
            .await?;
        let mut names: BTreeSet<String> = indexed.into_iter().collect();
        names.extend(
            with_lifecycle
                .into_iter()
                .filter(|n| after.is_none_or(|a| n.as_str() > a.as_str())),
        );
        let names: Vec<String> = names.into_iter().take(limit).collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let (heads, lifecycles) = self
            .heads_and_lifecycles(names.iter().map(String::as_str))
            .await?;
        names
            .iter()
            .zip(heads.iter().zip(&lifecycles))
            .map(|(name, (head, lifecycle))| {
                let stream = StreamName::stored(name.as_str())
                    .map_err(|e| RedisError::reply("HMGET", e.to_string()))?;
                let last = head
                    .as_deref()
                    .map(|h| parse_heads("HMGET", h))
                    .transpose()?
                    .map_or(Version::NONE, |(v, _)| v);
                let lifecycle = lifecycle
                    .as_deref()
                    .map(|t| Stored::parse("HMGET", t))
                    .transpose()?
                    .map(|s| s.lifecycle)
                    .unwrap_or_default();
                Ok(StreamPast {
                    stream,
                    last,
                    lifecycle,
                })
            })
            .collect()
    }
}
