//! Stream lifecycle on Redis: deletes, tombstones and retention settings live in one hash
//! (`{p}:lifecycle`, stream → six numbers, see `lifecycle_of` in `concord.lua`), written by
//! the library's functions so they are atomic with appends. Reads apply core's rules
//! ([`StreamLifecycle`]) to what they fetch. A scavenge erases, stream by stream and in
//! chunks, every copy of each hidden event (`concord_scavenge_v7`), then rewrites each
//! stream it deleted from (`concord_compact_v7`), because `XDEL` leaves an entry's bytes in
//! its node. The keys still to rewrite are kept in Redis (`{p}:scavenge-pending`), written
//! by the call that deletes from them, so a scavenge cut short leaves them to the next one.
//!
//! Each call holds the single-threaded server, so the scavenge is paced: after a call it
//! waits [`PACING`] times as long as the call took before the next one, so that it takes at
//! most a fifth of the server's time and appends keep most of theirs (a scavenge on a busy
//! server takes about five times as long as it would alone). A compaction must also catch
//! up with the appends to the key it copies (the global log takes every append), so it
//! halves its pause whenever a call gained less than half a chunk on the entries left to
//! copy, and lets it grow back while it gains more. On a server nobody else appends to
//! (fewer than [`BUSY_OPS`] other function calls a second, from `INFO commandstats`: an
//! append is one) it does not pause at all. See `docs/design/redis-layout.md`.

use std::collections::BTreeSet;

use concord_core::{
    Conflict, DeleteMode, ExpectedVersion, MetadataChange, RecordedAt, RecordedEvent,
    ScavengeReport, StoreError, StreamLifecycle, StreamMetadata, StreamName, Version,
};
use redis::Value;

use super::RedisStore;
use crate::decode;
use crate::error::RedisError;

/// Events one scavenge call erases, and entries one compaction call copies: bounded so
/// that no call holds the server for more than a few milliseconds.
const SCAVENGE_CHUNK: usize = 100;

/// How long the scavenge waits after each call, in multiples of the call's own time: 4
/// leaves the server at least four fifths of its time for appends.
const PACING: f64 = 4.0;

/// Other clients' function calls per second above which the server counts as busy, and
/// the scavenge paces itself.
const BUSY_OPS: f64 = 500.0;

/// How often the scavenge asks the server how busy it is.
const BUSY_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether the server is busy with other clients, asked every [`BUSY_CHECK`].
struct Busy {
    busy: bool,
    checked: std::time::Instant,
    /// The scavenge's own function calls since `checked`.
    own: u32,
    /// The server's function calls (`FCALL`, `FCALL_RO`) at `checked`.
    calls: u64,
}

/// A stored lifecycle: core's state and how far a scavenge erased the stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Stored {
    pub(crate) lifecycle: StreamLifecycle,
    pub(crate) erased_through: u64,
}

impl Stored {
    /// Parses `"<deleted> <tombstoned> <max_count> <max_age> <truncate_before> <erased>"`.
    pub(crate) fn parse(command: &'static str, text: &[u8]) -> Result<Self, RedisError> {
        let text =
            std::str::from_utf8(text).map_err(|e| RedisError::reply(command, e.to_string()))?;
        let n: Vec<u64> = text
            .split(' ')
            .map(|f| decode::parse_u64(command, f.as_bytes()))
            .collect::<Result<_, _>>()?;
        let [deleted, tombstoned, max_count, max_age, truncate, erased] = n[..] else {
            return Err(RedisError::reply(
                command,
                format!("lifecycle {text:?} lacks fields"),
            ));
        };
        let set = |v: u64| (v > 0).then_some(v);
        Ok(Stored {
            lifecycle: StreamLifecycle {
                deleted_through: Version(deleted),
                tombstoned: tombstoned == 1,
                metadata: StreamMetadata {
                    max_count: set(max_count),
                    max_age_seconds: set(max_age),
                    truncate_before: set(truncate).map(Version),
                },
            },
            erased_through: erased,
        })
    }

    /// The first version reads show and the store still holds.
    pub(crate) fn floor(&self, last: Version) -> Version {
        self.lifecycle
            .first_kept(last)
            .max(Version(self.erased_through.saturating_add(1)))
    }

    /// Keeps the events of `events` that reads show now.
    pub(crate) fn filter(&self, events: &mut Vec<RecordedEvent>, last: Version) {
        let floor = self.floor(last);
        let now = RecordedAt::now();
        events.retain(|e| e.version >= floor && self.lifecycle.young_enough(e.recorded_at, now));
    }
}

impl RedisStore {
    /// One call of the scavenge, then, when other clients keep the server busy, a pause
    /// of `pacing` times the call's time.
    async fn scavenge_call(
        &self,
        cmd: &redis::Cmd,
        pacing: f64,
        busy: &mut Busy,
    ) -> Result<Value, RedisError> {
        let started = std::time::Instant::now();
        let reply = self.fcall(cmd).await?;
        let took = started.elapsed();
        busy.own += 1;
        if busy.checked.elapsed() >= BUSY_CHECK {
            // Function calls, not commands: the commands our own calls run inside Redis
            // count in its command rate. Concord's appends are one function call each.
            let info: String = self
                .query("INFO", redis::cmd("INFO").arg("commandstats"))
                .await?;
            let calls: u64 = info
                .lines()
                .filter_map(|l| l.strip_prefix("cmdstat_fcall"))
                .filter_map(|l| l.split_once("calls=").map(|(_, rest)| rest))
                .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
                .sum();
            let seconds = busy.checked.elapsed().as_secs_f64().max(1e-3);
            let others = calls
                .saturating_sub(busy.calls)
                .saturating_sub(u64::from(busy.own));
            // The first reading has nothing to compare with: busy until the next.
            busy.busy = busy.calls == 0 || others as f64 / seconds > BUSY_OPS;
            busy.calls = calls;
            busy.checked = std::time::Instant::now();
            busy.own = 0;
        }
        if busy.busy {
            tokio::time::sleep(took.mul_f64(pacing)).await;
        }
        Ok(reply)
    }

    /// The bytes Redis holds for `key` (`MEMORY USAGE … SAMPLES 0`: every node counted), 0
    /// when it is gone.
    async fn memory_usage(&self, key: &str) -> Result<u64, RedisError> {
        let bytes: Option<u64> = self
            .query(
                "MEMORY USAGE",
                redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .arg("SAMPLES")
                    .arg(0),
            )
            .await?;
        Ok(bytes.unwrap_or(0))
    }

    /// Calls a function of the library, loading it first if Redis lost it (through the
    /// version check: if a newer build replaced the library, this one stops instead of
    /// putting its older library back).
    pub(super) async fn fcall(&self, cmd: &redis::Cmd) -> Result<Value, RedisError> {
        match self.fcall_once(cmd).await {
            Err(e) if super::function_missing(&e) => {
                self.ensure_library().await?;
                self.fcall_once(cmd).await
            }
            other => other,
        }
    }

    /// The stream's stored lifecycle, `None` when it has none.
    pub(crate) async fn stored_lifecycle(
        &self,
        stream: &StreamName,
    ) -> Result<Option<Stored>, RedisError> {
        let text: Option<Vec<u8>> = self
            .query(
                "HGET",
                redis::cmd("HGET")
                    .arg(self.inner.keys.lifecycle())
                    .arg(stream.as_str()),
            )
            .await?;
        text.map(|t| Stored::parse("HGET", &t)).transpose()
    }

    pub(crate) async fn delete(
        &self,
        stream: &StreamName,
        mode: DeleteMode,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        let keys = &self.inner.keys;
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("concord_delete_v7")
            .arg(3)
            .arg(keys.lifecycle())
            .arg(keys.stream(stream))
            .arg(keys.heads())
            .arg(stream.as_str())
            .arg(match mode {
                DeleteMode::Soft => "soft",
                DeleteMode::Tombstone => "tombstone",
                DeleteMode::TombstoneName => "tombstone_name",
            })
            .arg(expected.map_or(-1, |v| i64::try_from(v.get()).unwrap_or(i64::MAX)))
            .arg(self.inner.options.limits.concurrent_events_max);
        const C: &str = "FCALL";
        let reply = self.fcall(&cmd).await?;
        let (kind, items) = decode::outcome(C, &reply)?;
        match kind {
            "ok" => {
                // This process's stream subscriptions read again at once (others' within
                // the bounded wait of `wait_for_head`).
                self.inner.signal.touch();
                Ok(())
            }
            "not_found" => Err(StoreError::StreamNotFound(stream.clone())),
            "tombstoned" => Err(StoreError::StreamDeleted(stream.clone())),
            "conflict" => {
                let [_, actual, truncated, entries] = items else {
                    return Err(RedisError::reply(C, "delete conflict lacks its fields").into());
                };
                let concurrent_events =
                    decode::entries(C, entries, |e| decode::stream_entry(C, stream, e))?;
                Err(StoreError::conflict(Conflict {
                    stream: stream.clone(),
                    expected: ExpectedVersion::Exact(expected.unwrap_or_default()),
                    actual: Version(decode::int(C, actual)?),
                    concurrent_events,
                    truncated: decode::int(C, truncated)? == 1,
                }))
            }
            other => Err(RedisError::reply(C, format!("unknown delete outcome {other:?}")).into()),
        }
    }

    /// The stream's stored lifecycle (the default when it has none).
    pub(crate) async fn lifecycle(
        &self,
        stream: &StreamName,
    ) -> Result<StreamLifecycle, StoreError> {
        Ok(self
            .stored_lifecycle(stream)
            .await?
            .map(|s| s.lifecycle)
            .unwrap_or_default())
    }

    pub(crate) async fn metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError> {
        match self.stored_lifecycle(stream).await? {
            None => Ok(StreamMetadata::NONE),
            Some(s) if s.lifecycle.tombstoned => Err(StoreError::StreamDeleted(stream.clone())),
            Some(s) => Ok(s.lifecycle.metadata),
        }
    }

    pub(crate) async fn change_metadata(
        &self,
        stream: &StreamName,
        change: MetadataChange,
    ) -> Result<StreamMetadata, StoreError> {
        change.validate()?;
        // 'keep' leaves the stored setting to the function, which merges atomically.
        fn arg(setting: Option<Option<u64>>) -> String {
            setting.map_or_else(|| "keep".to_owned(), |v| v.unwrap_or(0).to_string())
        }
        let mut cmd = redis::cmd("FCALL");
        cmd.arg("concord_metadata_v7")
            .arg(1)
            .arg(self.inner.keys.lifecycle())
            .arg(stream.as_str())
            .arg(arg(change.max_count))
            .arg(arg(change.max_age_seconds))
            .arg(arg(change.truncate_before.map(|t| t.map(Version::get))));
        const C: &str = "FCALL";
        let reply = self.fcall(&cmd).await?;
        let items = decode::array(C, &reply)?;
        match items {
            [ok, max_count, max_age, truncate] if decode::text(C, ok)? == "ok" => {
                let set = |v: &Value| decode::int(C, v).map(|n| (n > 0).then_some(n));
                Ok(StreamMetadata {
                    max_count: set(max_count)?,
                    max_age_seconds: set(max_age)?,
                    truncate_before: set(truncate)?.map(Version),
                })
            }
            [tombstoned] if decode::text(C, tombstoned)? == "tombstoned" => {
                Err(StoreError::StreamDeleted(stream.clone()))
            }
            _ => Err(RedisError::reply(C, "unknown metadata outcome").into()),
        }
    }

    pub(crate) async fn run_scavenge(&self) -> Result<ScavengeReport, StoreError> {
        // One scavenge at a time in this process: compaction copies a key while no other
        // scavenge deletes from it.
        let _one = self.inner.scavenging.lock().await;
        let keys = &self.inner.keys;
        // Stream names with a lifecycle, a page at a time (field, value, field, value, …).
        let mut streams = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = self
                .query(
                    "HSCAN",
                    redis::cmd("HSCAN")
                        .arg(keys.lifecycle())
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            streams.extend(page.into_iter().step_by(2));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        streams.sort();
        streams.dedup();
        let mut report = ScavengeReport::default();
        let started = std::time::Instant::now();
        // Asked at the first call.
        let mut busy = Busy {
            busy: true,
            checked: started.checked_sub(BUSY_CHECK).unwrap_or(started),
            own: 0,
            calls: 0,
        };
        let mut touched = BTreeSet::new();
        let now = RecordedAt::now().as_millis();
        for name in streams {
            let stream = StreamName::stored(name.as_str())
                .map_err(|e| RedisError::reply("HKEYS", e.to_string()))?;
            let mut erased_here = 0;
            loop {
                let mut cmd = redis::cmd("FCALL");
                cmd.arg("concord_scavenge_v7")
                    .arg(5)
                    .arg(keys.lifecycle())
                    .arg(keys.stream(&stream))
                    .arg(keys.ids(&stream))
                    .arg(keys.all())
                    .arg(keys.scavenge_pending())
                    .arg(stream.as_str())
                    .arg(now)
                    .arg(SCAVENGE_CHUNK)
                    .arg(keys.type_index_prefix())
                    .arg(keys.tag_index_prefix());
                let reply = self.scavenge_call(&cmd, PACING, &mut busy).await?;
                let items = decode::array("FCALL", &reply)?;
                let [erased, done, rest @ ..] = items else {
                    return Err(
                        RedisError::reply("FCALL", "scavenge reply lacks its fields").into(),
                    );
                };
                erased_here += decode::int("FCALL", erased)?;
                for key in rest {
                    touched.insert(decode::text("FCALL", key)?.to_owned());
                }
                if decode::int("FCALL", done)? == 1 {
                    break;
                }
            }
            if erased_here > 0 {
                report.events_removed += erased_here;
                report.streams_scavenged += 1;
            }
        }
        // The keys this scavenge deleted from, and those a scavenge cut short left.
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = self
                .query(
                    "SSCAN",
                    redis::cmd("SSCAN")
                        .arg(keys.scavenge_pending())
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            touched.extend(page);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for key in touched {
            // What the rewrite gives back: the deleted entries' bytes left in the key's
            // nodes (appends to it meanwhile count against it, so this is a floor).
            let before = self.memory_usage(&key).await?;
            self.compact(&key, &mut busy).await?;
            let after = self.memory_usage(&key).await?;
            report.bytes_reclaimed += before.saturating_sub(after);
        }
        tracing::info!(
            events_removed = report.events_removed,
            streams = report.streams_scavenged,
            bytes_reclaimed = report.bytes_reclaimed,
            "scavenge done"
        );
        Ok(report)
    }

    /// Rewrites `key` so the bytes of its deleted entries leave it.
    async fn compact(&self, key: &str, busy: &mut Busy) -> Result<(), StoreError> {
        let mut cursor = "-".to_owned();
        let (mut pacing, mut copied, mut left_before) = (PACING, 0u64, u64::MAX);
        loop {
            let mut cmd = redis::cmd("FCALL");
            cmd.arg("concord_compact_v7")
                .arg(3)
                .arg(key)
                .arg(self.inner.keys.scratch())
                .arg(self.inner.keys.scavenge_pending())
                .arg(&cursor)
                .arg(SCAVENGE_CHUNK);
            let reply = self.scavenge_call(&cmd, pacing, busy).await?;
            let items = decode::array("FCALL", &reply)?;
            match items {
                [done] if decode::text("FCALL", done)? == "done" => return Ok(()),
                [more, next] if decode::text("FCALL", more)? == "more" => {
                    decode::text("FCALL", next)?.clone_into(&mut cursor);
                    copied += SCAVENGE_CHUNK as u64;
                    let length: u64 = self.query("XLEN", redis::cmd("XLEN").arg(key)).await?;
                    let left = length.saturating_sub(copied);
                    // Gaining less than half a chunk a call would take the copy hours
                    // on a busy server: give it more of the server until it gains that.
                    let gained = left_before.saturating_sub(left);
                    pacing = if gained < SCAVENGE_CHUNK as u64 / 2 {
                        pacing / 2.0
                    } else {
                        (pacing * 1.25).min(PACING)
                    };
                    left_before = left;
                }
                _ => return Err(RedisError::reply("FCALL", "unknown compact outcome").into()),
            }
        }
    }
}
