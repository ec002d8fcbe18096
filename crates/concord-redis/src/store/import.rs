//! Importing events recorded by another store (`EventStore::import`, what `concord copy`
//! writes with): the batch is checked alone here (core's `plan_import`), then written by
//! one call of `concord_import_v10`, which checks it against what is stored (the head, each
//! stream's last version and lifecycle, its ids) before its first write, and writes every
//! copy an append writes: the stream entry `<version>-0`, the global entry
//! `<position>-0`, the type and tag index entries, ids, types, the stream head and index,
//! and the head counter. See docs/design/redis-layout.md.

use std::collections::{BTreeSet, HashMap};

use concord_core::{
    InvalidInput, Position, RecordedEvent, StoreError, StreamName, Version, plan_import,
};

use super::{LUA_POSITION_MAX, RedisStore};
use crate::decode;
use crate::error::RedisError;

impl RedisStore {
    pub(crate) async fn import_events(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        if last.position.get() > LUA_POSITION_MAX {
            return Err(InvalidInput::new(
                "events",
                format!(
                    "position {} is beyond what the Redis store counts exactly",
                    last.position
                ),
            )
            .into());
        }
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
        let items = decode::array(C, &reply)?;
        let kind = items
            .first()
            .ok_or_else(|| RedisError::reply(C, "empty import reply"))?;
        let invalid =
            |message: String| -> StoreError { InvalidInput::new("events", message).into() };
        let stream_of = |i: usize| -> Result<StreamName, StoreError> {
            let name = items
                .get(i)
                .ok_or_else(|| RedisError::reply(C, "import refusal lacks its stream"))?;
            StreamName::stored(decode::text(C, name)?)
                .map_err(|e| RedisError::reply(C, e.to_string()).into())
        };
        match decode::text(C, kind)? {
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
}
