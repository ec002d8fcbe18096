//! `RedisStore`: the [`EventStore`] over Redis Streams.
//!
//! Appends are one `FCALL` of the `concord` function library (see `concord.lua`), so the
//! whole decision and every write happen atomically on the server in one round trip. Reads
//! are plain `XRANGE`/`XREVRANGE` over the streams the function wrote. Every call has a
//! timeout, and a Redis that cannot be reached is [`StoreError::Unavailable`]; the
//! connection manager reconnects in the background, so the store works again once Redis
//! is back.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use concord_core::{
    AllPage, AppendOutcome, AppendRequest, Appended, Conflict, Direction, EventId, EventStore,
    ExpectedVersion, Filter, HeadSignal, Limits, MultiAppendOutcome, MultiAppendRequest,
    PartialDuplicate, Position, Query, QueryItem, QueryPage, RecordedAt, RecordedEvent, StoreError,
    StreamInfo, StreamName, Version,
};
use concord_core::{
    DeleteMode, MetadataChange, ScavengeReport, StreamLifecycle, StreamMetadata, StreamPast,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::task::JoinHandle;

use crate::decode;
use crate::direct::Direct;
use crate::error::{BACKEND, RedisError};
use crate::keys::KeyLayout;
use crate::recent::Recent;
use crate::resp;

mod import;
mod lifecycle;

/// The source of the `concord` Redis function library.
pub const LIBRARY_SOURCE: &str = include_str!("concord.lua");

/// The version of the library this build loads (the `LIBRARY_VERSION` in its source).
pub const LIBRARY_VERSION: i64 = 11;

/// The name of the append function in this library version (single and multi-stream
/// appends, with or without a condition).
pub const APPEND_FUNCTION: &str = "concord_append_v7";

/// Index entries a query read examines per round trip.
/// The largest condition `after` handed to the append function: Lua numbers are doubles,
/// exact up to 2^53, and the function adds one. No store gets near it, so a larger `after`
/// (up to 2^64 - 1 from a client) means the same: nothing can match after it.
const LUA_POSITION_MAX: u64 = (1 << 53) - 2;

const QUERY_BATCH: usize = 500;

/// How long one `XREAD BLOCK` of the head watcher waits before it looks again.
const WATCH_BLOCK: Duration = Duration::from_secs(1);

/// The longest [`EventStore::wait_for_head`] waits before it returns the current head.
const WAIT_FOR_HEAD_MAX: Duration = Duration::from_secs(2);

/// How often a rebase lets other appends' tasks run before it reads concurrent
/// events this store has not seen written yet.
const CONCURRENT_YIELDS: usize = 4;

/// Entries `read_all` examines per round trip when a filter drops some of them.
const SCAN_BATCH: usize = 1000;

/// Round trips one filtered `read_all` makes at most before it returns a partial page.
const SCAN_ROUND_TRIPS_MAX: usize = 10;

/// How a [`RedisStore`] connects and what it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// The hash tag every key starts with (`{concord}:…`); one Redis may hold several
    /// stores under different prefixes.
    pub key_prefix: String,
    /// The longest any one call to Redis may take, connecting included. Past it the call
    /// fails with [`StoreError::Unavailable`].
    pub timeout: Duration,
    /// Validation limits, checked client-side before anything is sent.
    pub limits: Limits,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "concord".to_owned(),
            timeout: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }
}

/// An [`EventStore`] on Redis ≥ 7. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    conn: ConnectionManager,
    /// Connections of Concord's own for reads of the global log (`None` over TLS).
    direct: Option<Direct>,
    keys: KeyLayout,
    options: RedisOptions,
    /// The highest head this process has seen: from its own appends and from the watcher.
    signal: HeadSignal,
    /// Events this store wrote or read lately (its appends, the events of its conflicts), to
    /// list a rebase's concurrent events without reading them back.
    recent: Recent,
    /// Appends under way in this store (sent, or decoding their reply).
    appending: AtomicUsize,
    /// The head watcher: an `XREAD BLOCK` loop on its own connection, started by the first
    /// `wait_for_head`, so a blocking read never holds up the multiplexed connection.
    watcher: Mutex<Option<JoinHandle<()>>>,
    /// Held by the scavenge under way in this process.
    scavenging: tokio::sync::Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(handle) = self
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            handle.abort();
        }
        self.signal.close();
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "addr",
                &self.inner.client.get_connection_info().addr().to_string(),
            )
            .field("keys", &self.inner.keys)
            .field("timeout", &self.inner.options.timeout)
            .finish_non_exhaustive()
    }
}

/// `url` with any password replaced, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!(
            "{}://***@{}",
            url.get(..scheme).unwrap_or(""),
            url.get(at + 1..).unwrap_or("")
        ),
        _ => url.to_owned(),
    }
}

/// The TLS client needs a process-wide crypto provider; `ring` builds from crates.io with
/// only a C compiler. An error means a provider is installed already, which is fine.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn timed<T>(
    timeout: Duration,
    command: &'static str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(RedisError::Timeout { command, timeout }),
        Ok(r) => r.map_err(|e| RedisError::command(command, e)),
    }
}

/// Appends under way (this one included) up to which an append's function call goes over
/// a connection of the store's own (see `fcall_once`).
const DIRECT_APPENDS_MAX: usize = 4;

/// Commands that only read: sent once more when the first try found the shared
/// connection broken.
const READS: &[&str] = &[
    "GET",
    "INFO",
    "XLEN",
    "XRANGE",
    "XREVRANGE",
    "HGET",
    "HMGET",
    "HSCAN",
    "SSCAN",
    "ZRANGEBYLEX",
    "MEMORY USAGE",
    "FCALL_RO",
];

/// Whether a read that failed on the shared connection is sent once more. That connection
/// (redis-rs's, reconnecting after a failure) can sit broken for as long as nothing uses
/// it: appends and pages of the global log go over connections of the store's own, so
/// after Redis restarted, the first read through it would fail on a connection that was
/// already gone. A read is safe to send again; a write is not sent twice here.
fn resend_after(command: &str, e: &RedisError) -> bool {
    READS.contains(&command)
        && matches!(e, RedisError::Command { source, .. }
            if source.is_connection_dropped() || source.is_io_error())
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:pass@]host:port/db`, `rediss://…` for TLS) with
    /// the default options, and loads or upgrades the function library.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a bad URL; [`StoreError::Unavailable`] when Redis cannot
    /// be reached within the timeout; [`StoreError::Backend`] when Redis holds a newer
    /// function library.
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// As [`RedisStore::connect`], with `options`.
    ///
    /// # Errors
    /// As [`RedisStore::connect`], and [`StoreError::Invalid`] for a bad key prefix.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<RedisStore, StoreError> {
        let keys = KeyLayout::new(&options.key_prefix)?;
        if url.starts_with("rediss://") {
            install_crypto_provider();
        }
        let client = Client::open(url).map_err(|source| RedisError::InvalidUrl {
            url: redact(url),
            source,
        })?;
        Self::open(client, keys, options).await
    }

    /// As [`RedisStore::connect_with`] for a `rediss://` URL whose server certificate is
    /// signed by the CA in `root_certificate_pem` (PEM) instead of one of the system's
    /// roots. (The system roots can also be replaced with the `SSL_CERT_FILE` environment
    /// variable.)
    ///
    /// # Errors
    /// As [`RedisStore::connect_with`]; [`StoreError::Invalid`] when the URL is not
    /// `rediss://`.
    pub async fn connect_with_root_certificate(
        url: &str,
        options: RedisOptions,
        root_certificate_pem: &[u8],
    ) -> Result<RedisStore, StoreError> {
        let keys = KeyLayout::new(&options.key_prefix)?;
        if !url.starts_with("rediss://") {
            return Err(StoreError::invalid(
                "store",
                format!("{:?} is not a rediss:// URL", redact(url)),
            ));
        }
        install_crypto_provider();
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_certificate_pem.to_vec()),
        };
        let client =
            Client::build_with_tls(url, certificates).map_err(|source| RedisError::InvalidUrl {
                url: redact(url),
                source,
            })?;
        Self::open(client, keys, options).await
    }

    async fn open(
        client: Client,
        keys: KeyLayout,
        options: RedisOptions,
    ) -> Result<RedisStore, StoreError> {
        let timeout = options.timeout;
        // One plain attempt first: the manager retries failed connects with backoff until
        // the timeout, which would hide the real reason (refused, bad certificate, wrong
        // password) behind a timeout.
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        drop(
            timed(
                timeout,
                "CONNECT",
                client.get_multiplexed_async_connection_with_config(&probe),
            )
            .await?,
        );
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(6)
            .set_max_delay(Duration::from_secs(1));
        let conn = timed(
            timeout,
            "CONNECT",
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await?;
        let store = RedisStore {
            inner: Arc::new(Inner {
                direct: Direct::for_client(client.get_connection_info()),
                client,
                conn,
                keys,
                options,
                signal: HeadSignal::default(),
                recent: Recent::default(),
                appending: AtomicUsize::new(0),
                watcher: Mutex::new(None),
                scavenging: tokio::sync::Mutex::new(()),
            }),
        };
        store.ensure_library().await?;
        Ok(store)
    }

    /// The key names this store uses.
    pub fn keys(&self) -> &KeyLayout {
        &self.inner.keys
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        self.on_shared(command, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.on_shared(command, |mut conn| async move {
            pipe.query_async(&mut conn).await
        })
        .await
    }

    /// `send` over the shared (redis-rs) connection within the timeout; a read that finds
    /// the connection dropped is sent once more (see [`resend_after`]).
    async fn on_shared<T, F>(
        &self,
        command: &'static str,
        send: impl Fn(ConnectionManager) -> F,
    ) -> Result<T, RedisError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let timeout = self.inner.options.timeout;
        match timed(timeout, command, send(self.inner.conn.clone())).await {
            Err(e) if resend_after(command, &e) => {
                timed(timeout, command, send(self.inner.conn.clone())).await
            }
            other => other,
        }
    }

    /// One `FCALL` of the library, over a connection of Concord's own when there is one:
    /// its caller (an append) sends and reads on that connection itself, where redis-rs's
    /// multiplexed connection hands the request to its driver task and the reply back,
    /// two task switches on the path of every append (a consumer group's decisions wait
    /// on one such append each; see docs/design/redis-layout.md).
    async fn fcall_once(&self, cmd: &redis::Cmd) -> Result<Value, RedisError> {
        let direct = match &self.inner.direct {
            Some(direct) if self.inner.appending.load(Ordering::Relaxed) <= DIRECT_APPENDS_MAX => {
                direct
            }
            // Many appends at once share the multiplexed connection instead: it pipelines
            // them, one write and one read of Redis's for many callers, which is what
            // Redis (the bound at 64 writers) spends least on.
            _ => return self.query("FCALL", cmd).await,
        };
        let frame = direct
            .write("FCALL", cmd, self.inner.options.timeout)
            .await?;
        decode::reply_value("FCALL", &resp::parse_reply("FCALL", &frame)?)
    }

    /// One round trip of `read_all`: `GET` of the head, `XRANGE` of the global log, `GET`
    /// of the head, over a connection of Concord's own when there is one (its replies are
    /// the largest the store reads; see `direct`).
    async fn global_range(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<(Option<u64>, Vec<RecordedEvent>, Option<u64>), RedisError> {
        let Some(direct) = &self.inner.direct else {
            let (before, reply, last): (Option<u64>, Value, Option<u64>) =
                self.query_pipe("XRANGE", pipe).await?;
            let entries = decode::entries("XRANGE", &reply, |e| decode::global_entry("XRANGE", e))?;
            return Ok((before, entries, last));
        };
        let frames = direct
            .query("XRANGE", pipe, self.inner.options.timeout)
            .await?;
        let replies = frames
            .iter()
            .map(|f| resp::parse_reply("XRANGE", f))
            .collect::<Result<Vec<_>, _>>()?;
        let [before, reply, last] = replies.as_slice() else {
            return Err(RedisError::reply("XRANGE", "expected three replies"));
        };
        let entries = decode::reply_array("XRANGE", reply)?
            .iter()
            .map(|e| decode::global_entry_read("XRANGE", e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            decode::reply_number("GET", before)?,
            entries,
            decode::reply_number("GET", last)?,
        ))
    }

    /// The library version loaded in Redis, `None` when there is none.
    ///
    /// # Errors
    /// When Redis cannot be asked.
    pub async fn loaded_library_version(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.library_version().await?)
    }

    async fn library_version(&self) -> Result<Option<i64>, RedisError> {
        match self
            .query::<Value>(
                "FCALL_RO",
                redis::cmd("FCALL_RO").arg("concord_version").arg(0),
            )
            .await
        {
            Ok(Value::Int(v)) => Ok(Some(v)),
            Ok(other) => Err(RedisError::reply(
                "FCALL_RO",
                format!("concord_version returned {other:?}"),
            )),
            Err(e) if e.is_unavailable() => Err(e),
            // "Function not found" (no library, or one without concord_version).
            Err(_) => Ok(None),
        }
    }

    /// Loads this build's library unless Redis already holds it (or a newer one).
    async fn ensure_library(&self) -> Result<(), RedisError> {
        match self.library_version().await? {
            Some(v) if v == LIBRARY_VERSION => Ok(()),
            Some(v) if v > LIBRARY_VERSION => Err(RedisError::NewerLibrary {
                found: v,
                ours: LIBRARY_VERSION,
            }),
            _ => self.load_library().await,
        }
    }

    async fn load_library(&self) -> Result<(), RedisError> {
        tracing::info!(
            version = LIBRARY_VERSION,
            "loading the concord function library into Redis"
        );
        let _: Value = self
            .query(
                "FUNCTION LOAD",
                redis::cmd("FUNCTION")
                    .arg("LOAD")
                    .arg("REPLACE")
                    .arg(LIBRARY_SOURCE),
            )
            .await?;
        Ok(())
    }

    fn append_command(&self, request: &MultiAppendRequest) -> redis::Cmd {
        let keys = &self.inner.keys;
        let mut key_list: Vec<String> = vec![
            keys.all(),
            keys.head(),
            keys.index(),
            keys.heads(),
            keys.lifecycle(),
        ];
        for part in &request.parts {
            key_list.push(keys.stream(&part.stream));
            key_list.push(keys.ids(&part.stream));
            key_list.push(keys.types(&part.stream));
        }
        // Every index key the function reads or writes is declared (Redis Cluster).
        let mut index_keys = BTreeSet::new();
        for part in &request.parts {
            for e in &part.events {
                index_keys.insert(keys.type_index(&e.event_type));
                for t in &e.tags {
                    index_keys.insert(keys.tag_index(t));
                }
            }
        }
        if let Some(c) = &request.condition {
            for item in &c.fail_if_events_match.items {
                for t in &item.types {
                    index_keys.insert(keys.type_index(t));
                }
                for t in &item.tags {
                    index_keys.insert(keys.tag_index(t));
                }
            }
        }
        key_list.extend(index_keys);
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(APPEND_FUNCTION).arg(key_list.len()).arg(key_list);
        cmd.arg(self.inner.options.limits.concurrent_events_max)
            .arg(keys.type_index_prefix())
            .arg(keys.tag_index_prefix());
        match &request.condition {
            Some(c) => {
                let items = &c.fail_if_events_match.items;
                cmd.arg(1)
                    .arg(c.after.get().min(LUA_POSITION_MAX))
                    .arg(items.len());
                for item in items {
                    cmd.arg(item.types.len());
                    for t in &item.types {
                        cmd.arg(t.as_str());
                    }
                    cmd.arg(item.tags.len());
                    for t in &item.tags {
                        cmd.arg(t.as_str());
                    }
                }
            }
            None => {
                cmd.arg(0).arg(0).arg(0);
            }
        }
        cmd.arg(request.parts.len());
        for part in &request.parts {
            let (kind, n) = match part.expected {
                ExpectedVersion::Exact(v) => ("exact", v.get()),
                ExpectedVersion::NoStream => ("no_stream", 0),
                ExpectedVersion::Exists => ("exists", 0),
                ExpectedVersion::Any => ("any", 0),
            };
            cmd.arg(part.stream.as_str()).arg(kind).arg(n);
            match &part.rebase_unless {
                Some(types) => {
                    cmd.arg(1).arg(types.len());
                    for t in types {
                        cmd.arg(t.as_str());
                    }
                }
                None => {
                    cmd.arg(0).arg(0);
                }
            }
            cmd.arg(part.events.len());
            for e in &part.events {
                let tags = e
                    .tags
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                cmd.arg(e.id.to_string())
                    .arg(e.event_type.as_str())
                    .arg(e.data.as_bytes())
                    .arg(e.metadata.as_bytes())
                    .arg(tags)
                    .arg(e.data.bytes_content_type().map_or("", |t| t.as_str()));
            }
        }
        cmd
    }

    pub(crate) fn decode_append(
        request: &MultiAppendRequest,
        reply: &Value,
    ) -> Result<Reply, RedisError> {
        const C: &str = "FCALL";
        let items = decode::array(C, reply)?;
        let item = |i: usize| {
            items
                .get(i)
                .ok_or_else(|| RedisError::reply(C, format!("append reply has no item {i}")))
        };
        let part_of = |n: u64| {
            usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .filter(|i| *i < request.parts.len())
                .ok_or_else(|| RedisError::reply(C, format!("append reply names part {n}")))
        };
        let numbers = |v: &Value, n: usize| -> Result<Vec<u64>, RedisError> {
            let f = decode::array(C, v)?;
            if f.len() < n {
                return Err(RedisError::reply(C, format!("{} items, not {n}", f.len())));
            }
            f.iter().take(n).map(|v| decode::int(C, v)).collect()
        };
        Ok(match decode::text(C, item(0)?)? {
            "written" => {
                let list = decode::array(C, item(5)?)?;
                if list.len() != request.parts.len() {
                    return Err(RedisError::reply(C, "append reply lacks parts"));
                }
                Reply::Written {
                    epoch: decode::text(C, item(3)?)?.to_owned(),
                    recorded_at: RecordedAt(decode::int(C, item(4)?)?),
                    parts: list
                        .iter()
                        .map(|v| numbers(v, 6))
                        .collect::<Result<_, _>>()?,
                }
            }
            "duplicate" => {
                let list = decode::array(C, item(1)?)?;
                if list.len() != request.parts.len() {
                    return Err(RedisError::reply(C, "append reply lacks parts"));
                }
                let mut parts = Vec::with_capacity(list.len());
                for (part, v) in request.parts.iter().zip(list) {
                    let n = numbers(v, 4)?;
                    let [first_version, last_version, first_position, last_position] = n[..] else {
                        return Err(RedisError::reply(C, "duplicate part lacks numbers"));
                    };
                    parts.push(AppendOutcome::Duplicate(Appended {
                        stream: part.stream.clone(),
                        first_version: Version(first_version),
                        last_version: Version(last_version),
                        first_position: Position(first_position),
                        last_position: Position(last_position),
                    }));
                }
                Reply::Done(Ok(MultiAppendOutcome::from_parts(parts)))
            }
            "partial" => {
                let part = part_of(decode::int(C, item(1)?)?)?;
                let existing_ids = items
                    .iter()
                    .skip(2)
                    .map(|v| {
                        decode::text(C, v)?
                            .parse::<EventId>()
                            .map_err(|e| RedisError::reply(C, e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let stream = request
                    .parts
                    .get(part)
                    .map(|p| p.stream.clone())
                    .ok_or_else(|| RedisError::reply(C, "partial names no part"))?;
                Reply::Done(Err(StoreError::PartialDuplicate(Box::new(
                    PartialDuplicate {
                        stream,
                        existing_ids,
                    },
                ))))
            }
            "conflicts" => {
                let mut conflicts = Vec::new();
                for c in decode::array(C, item(2)?)? {
                    let [part, actual, truncated, entries] = decode::array(C, c)? else {
                        return Err(RedisError::reply(C, "conflict lacks its fields"));
                    };
                    let part = part_of(decode::int(C, part)?)?;
                    let stream = request
                        .parts
                        .get(part)
                        .map(|p| &p.stream)
                        .ok_or_else(|| RedisError::reply(C, "conflict names no part"))?;
                    let events =
                        decode::entries(C, entries, |e| decode::stream_entry(C, stream, e))?;
                    conflicts.push((
                        part,
                        decode::int(C, actual)?,
                        decode::int(C, truncated)? == 1,
                        events,
                    ));
                }
                Reply::Conflicts {
                    epoch: decode::text(C, item(1)?)?.to_owned(),
                    conflicts,
                }
            }
            "deleted" => {
                let part = part_of(decode::int(C, item(1)?)?)?;
                let stream = request
                    .parts
                    .get(part)
                    .map(|p| p.stream.clone())
                    .ok_or_else(|| RedisError::reply(C, "deleted names no part"))?;
                Reply::Done(Err(StoreError::StreamDeleted(stream)))
            }
            "condition" => {
                let matching = decode::entries(C, item(1)?, |e| decode::global_entry(C, e))?;
                match &request.condition {
                    Some(c) => Reply::Done(Err(c.failed(matching))),
                    None => {
                        return Err(RedisError::reply(C, "condition failed without a condition"));
                    }
                }
            }
            other => {
                return Err(RedisError::reply(
                    C,
                    format!("unknown append outcome {other:?}"),
                ));
            }
        })
    }

    /// The concurrent events of each `(stream, first, last)` range (versions, at most
    /// `concurrent_events_max` of them each): from the events this store remembers in
    /// `epoch`, else read from the streams in one pipelined round trip. Versions up to a
    /// stream's current one never change, so reading them after the append is reading what
    /// the function saw.
    async fn concurrent(
        &self,
        epoch: &str,
        ranges: &[(&StreamName, u64, u64)],
    ) -> Result<Vec<Vec<RecordedEvent>>, RedisError> {
        let recent = &self.inner.recent;
        let lookup = || -> Vec<Option<Vec<RecordedEvent>>> {
            ranges
                .iter()
                .map(|(stream, first, last)| recent.range(epoch, stream, *first, *last))
                .collect()
        };
        let mut out = lookup();
        // The appends just before this one on the same connection have had their replies,
        // but their tasks may not have run yet to remember their events: let them.
        for _ in 0..CONCURRENT_YIELDS {
            if out.iter().all(Option::is_some) || self.inner.appending.load(Ordering::Relaxed) <= 1
            {
                break;
            }
            tokio::task::yield_now().await;
            out = lookup();
        }
        let missing: Vec<usize> = (0..ranges.len())
            .filter(|i| out.get(*i).is_some_and(Option::is_none))
            .collect();
        if !missing.is_empty() {
            let mut pipe = redis::pipe();
            for (stream, first, last) in missing.iter().filter_map(|i| ranges.get(*i)) {
                pipe.cmd("XRANGE")
                    .arg(self.inner.keys.stream(stream))
                    .arg(format!("{first}-0"))
                    .arg(format!("{last}-0"));
            }
            let replies: Vec<Value> = self.query_pipe("XRANGE", &pipe).await?;
            for (i, reply) in missing.iter().zip(&replies) {
                let Some((stream, _, _)) = ranges.get(*i) else {
                    continue;
                };
                let events = decode::entries("XRANGE", reply, |e| {
                    decode::stream_entry("XRANGE", stream, e)
                })?;
                recent.record(epoch, events.iter().cloned());
                if let Some(slot) = out.get_mut(*i) {
                    *slot = Some(events);
                }
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn call_append(
        &self,
        request: &MultiAppendRequest,
    ) -> Result<MultiAppendOutcome, StoreError> {
        let cmd = self.append_command(request);
        let _appending = Appending::new(&self.inner.appending);
        let reply = self.fcall(&cmd).await?;
        let max = u64::try_from(self.inner.options.limits.concurrent_events_max).unwrap_or(0);
        match Self::decode_append(request, &reply)? {
            Reply::Done(outcome) => outcome,
            Reply::Written {
                epoch,
                recorded_at,
                parts,
            } => {
                let mut appended = Vec::with_capacity(parts.len());
                let mut ranges = Vec::new();
                for (part, n) in request.parts.iter().zip(&parts) {
                    let [
                        first_version,
                        last_version,
                        first_position,
                        last_position,
                        rebased,
                        from,
                    ] = n[..]
                    else {
                        return Err(RedisError::reply("FCALL", "part lacks numbers").into());
                    };
                    let a = Appended {
                        stream: part.stream.clone(),
                        first_version: Version(first_version),
                        last_version: Version(last_version),
                        first_position: Position(first_position),
                        last_position: Position(last_position),
                    };
                    self.inner.recent.record(
                        &epoch,
                        part.events.iter().zip(0..).map(|(e, k)| RecordedEvent {
                            stream: part.stream.clone(),
                            version: Version(first_version + k),
                            position: Position(first_position + k),
                            id: e.id,
                            event_type: e.event_type.clone(),
                            data: e.data.clone(),
                            metadata: e.metadata.clone(),
                            tags: e.tags.clone(),
                            recorded_at,
                        }),
                    );
                    if rebased == 1 {
                        let last = (first_version - 1).min(from.saturating_add(max));
                        ranges.push((&part.stream, from + 1, last));
                    }
                    // The writer's own expectation; the function lists from the first
                    // version reads show, which may be later.
                    let expected = match part.expected {
                        ExpectedVersion::Exact(e) => e,
                        _ => Version(from),
                    };
                    appended.push((a, (rebased == 1).then_some(expected)));
                }
                if let Some((last, _)) = appended.last() {
                    self.inner.signal.advance(last.last_position);
                }
                // Written already: should this read fail, the caller sees an error as for a
                // timeout, and re-sending the append is answered as a duplicate.
                let mut lists = if ranges.is_empty() {
                    Vec::new()
                } else {
                    self.concurrent(&epoch, &ranges).await?
                }
                .into_iter();
                let parts = appended
                    .into_iter()
                    .map(|(appended, rebased_from)| match rebased_from {
                        None => AppendOutcome::Appended(appended),
                        Some(expected_version) => AppendOutcome::Rebased {
                            appended,
                            expected_version,
                            concurrent_events: lists.next().unwrap_or_default(),
                        },
                    })
                    .collect();
                Ok(MultiAppendOutcome::from_parts(parts))
            }
            Reply::Conflicts { epoch, conflicts } => {
                let mut out = Vec::with_capacity(conflicts.len());
                for (part, actual, truncated, events) in conflicts {
                    let Some(p) = request.parts.get(part) else {
                        continue;
                    };
                    // What a conflict read is what a later rebase may list.
                    self.inner.recent.record(&epoch, events.iter().cloned());
                    out.push(Conflict {
                        stream: p.stream.clone(),
                        expected: p.expected,
                        actual: Version(actual),
                        truncated,
                        concurrent_events: events,
                    });
                }
                Err(StoreError::Conflicts(out))
            }
        }
    }

    /// Positions (ascending, at most `want`) after `after` matching one query item, read
    /// from the type and tag indexes.
    async fn item_positions(
        &self,
        item: &QueryItem,
        after: Position,
        head: Position,
        want: usize,
    ) -> Result<Vec<u64>, RedisError> {
        let keys = &self.inner.keys;
        let from = format!("{}-0", after.next());
        let to = format!("{}-0", head.get());
        let mut out = Vec::new();
        if item.tags.is_empty() {
            let mut pipe = redis::pipe();
            for t in &item.types {
                pipe.cmd("XRANGE")
                    .arg(keys.type_index(t))
                    .arg(&from)
                    .arg(&to)
                    .arg("COUNT")
                    .arg(want);
            }
            let replies: Vec<Value> = self.query_pipe("XRANGE", &pipe).await?;
            for r in &replies {
                for e in decode::array("XRANGE", r)? {
                    out.push(index_position(e)?);
                }
            }
            return Ok(out);
        }
        // All of the tags: candidates from the first tag's index, checked against the
        // others (and the types) in batches.
        let mut cursor = from;
        loop {
            let reply: Value = self
                .query(
                    "XRANGE",
                    redis::cmd("XRANGE")
                        .arg(keys.tag_index(item.tags.first().ok_or_else(|| {
                            RedisError::reply("XRANGE", "query item without tags")
                        })?))
                        .arg(&cursor)
                        .arg(&to)
                        .arg("COUNT")
                        .arg(QUERY_BATCH),
                )
                .await?;
            let entries = decode::array("XRANGE", &reply)?;
            let mut candidates = Vec::new();
            for e in entries {
                let position = index_position(e)?;
                let type_ok = item.types.is_empty() || {
                    let fields = decode::array(
                        "XRANGE",
                        decode::array("XRANGE", e)?.get(1).unwrap_or(&Value::Nil),
                    )?;
                    let t = fields
                        .get(1)
                        .map(|v| decode::text("XRANGE", v))
                        .transpose()?;
                    t.is_some_and(|t| item.types.iter().any(|x| x.as_str() == t))
                };
                if type_ok {
                    candidates.push(position);
                }
            }
            let others = item.tags.get(1..).unwrap_or_default();
            if !candidates.is_empty() && !others.is_empty() {
                let mut pipe = redis::pipe();
                for p in &candidates {
                    for t in others {
                        pipe.cmd("XRANGE")
                            .arg(keys.tag_index(t))
                            .arg(format!("{p}-0"))
                            .arg(format!("{p}-0"));
                    }
                }
                let replies: Vec<Value> = self.query_pipe("XRANGE", &pipe).await?;
                let mut keep = Vec::new();
                for (p, chunk) in candidates.iter().zip(replies.chunks(others.len())) {
                    let mut all = true;
                    for r in chunk {
                        all &= !decode::array("XRANGE", r)?.is_empty();
                    }
                    if all {
                        keep.push(*p);
                    }
                }
                candidates = keep;
            }
            out.extend(candidates);
            if out.len() >= want || entries.len() < QUERY_BATCH {
                out.truncate(want);
                return Ok(out);
            }
            let last = entries.last().map(index_position).transpose()?.unwrap_or(0);
            cursor = format!("{}-0", last + 1);
        }
    }

    /// Starts the head watcher unless it runs already.
    fn ensure_watcher(&self) {
        let mut slot = self
            .inner
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let client = self.inner.client.clone();
        let all = self.inner.keys.all();
        let head = self.inner.keys.head();
        let signal = self.inner.signal.clone();
        let timeout = self.inner.options.timeout;
        *slot = Some(tokio::spawn(watch_head(client, all, head, signal, timeout)));
    }
}

/// Follows the global stream with `XREAD BLOCK` on a connection of its own and publishes
/// every head it sees. After an error it reconnects; while Redis is down it keeps trying.
async fn watch_head(
    client: Client,
    all_key: String,
    head_key: String,
    signal: HeadSignal,
    timeout: Duration,
) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(WATCH_BLOCK + timeout));
    loop {
        let connected = timed(
            timeout,
            "CONNECT",
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        if let Ok(mut conn) = connected {
            loop {
                let head: Result<Option<u64>, _> = timed(
                    timeout,
                    "GET",
                    redis::cmd("GET").arg(&head_key).query_async(&mut conn),
                )
                .await;
                let Ok(head) = head else { break };
                let head = head.unwrap_or(0);
                signal.advance(Position(head));
                let block = u64::try_from(WATCH_BLOCK.as_millis()).unwrap_or(1000);
                let read: Result<Value, _> = timed(
                    WATCH_BLOCK + timeout,
                    "XREAD",
                    redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(1)
                        .arg("BLOCK")
                        .arg(block)
                        .arg("STREAMS")
                        .arg(&all_key)
                        .arg(format!("{head}-0"))
                        .query_async(&mut conn),
                )
                .await;
                if read.is_err() {
                    break;
                }
            }
        }
        // Backoff before reconnecting, so a Redis that is down is not hammered.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counts one append under way for as long as it lives.
struct Appending<'a>(&'a AtomicUsize);

impl<'a> Appending<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Appending(counter)
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The append function's reply, before the concurrent events it names are listed.
pub(crate) enum Reply {
    /// Decided without listing anything.
    Done(Result<MultiAppendOutcome, StoreError>),
    /// Written; per part first and last version and position, rebased (0/1), the stale
    /// expected version.
    Written {
        epoch: String,
        recorded_at: RecordedAt,
        parts: Vec<Vec<u64>>,
    },
    /// Stale parts: (part index, actual version, truncated, first concurrent version or 0).
    Conflicts {
        epoch: String,
        conflicts: Vec<(usize, u64, bool, Vec<RecordedEvent>)>,
    },
}

fn function_missing(e: &RedisError) -> bool {
    // Redis answers an FCALL of an unknown function with "ERR Function not found"; it
    // happens after a restart without persistence or a FUNCTION FLUSH.
    match e {
        RedisError::Command { source, .. } => source
            .detail()
            .is_some_and(|d| d.contains("Function not found")),
        RedisError::Server { message, .. } => message.contains("Function not found"),
        _ => false,
    }
}

/// The position of an index entry (entry id `<position>-0`).
fn index_position(entry: &Value) -> Result<u64, RedisError> {
    let parts = decode::array("XRANGE", entry)?;
    let id = decode::text(
        "XRANGE",
        parts
            .first()
            .ok_or_else(|| RedisError::reply("XRANGE", "index entry without id"))?,
    )?;
    match id.split_once('-') {
        Some((n, _)) => decode::parse_u64("XRANGE", n.as_bytes()),
        None => Err(RedisError::reply(
            "XRANGE",
            format!("index entry id {id:?}"),
        )),
    }
}

fn parse_heads(command: &'static str, v: &[u8]) -> Result<(Version, Position), RedisError> {
    let s = std::str::from_utf8(v).map_err(|e| RedisError::reply(command, e.to_string()))?;
    let (version, position) = s.split_once(' ').ok_or_else(|| {
        RedisError::reply(
            command,
            format!("stream head {s:?} is not \"<version> <position>\""),
        )
    })?;
    Ok((
        Version(decode::parse_u64(command, version.as_bytes())?),
        Position(decode::parse_u64(command, position.as_bytes())?),
    ))
}

/// The values of an `HMGET`, `None` where a field is absent.
type HashValues = Vec<Option<Vec<u8>>>;

impl RedisStore {
    /// The stream heads and the lifecycles of `names`, in one pipelined exchange.
    async fn heads_and_lifecycles<'n>(
        &self,
        names: impl Iterator<Item = &'n str> + Clone,
    ) -> Result<(HashValues, HashValues), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.inner.keys.heads())
            .arg(names.clone().collect::<Vec<_>>());
        pipe.cmd("HMGET")
            .arg(self.inner.keys.lifecycle())
            .arg(names.collect::<Vec<_>>());
        self.query_pipe("HMGET", &pipe).await
    }

    /// One page of the stream index from after `after`: the streams listed (deleted ones
    /// left out), the last name read, and whether more names may follow.
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<(Vec<StreamInfo>, Option<StreamName>, bool), StoreError> {
        let min = match after {
            Some(a) if a.as_str() >= prefix => format!("({a}"),
            _ => format!("[{prefix}"),
        };
        let names: Vec<String> = self
            .query(
                "ZRANGEBYLEX",
                redis::cmd("ZRANGEBYLEX")
                    .arg(self.inner.keys.index())
                    .arg(min)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        // Names are sorted, so the first one outside the prefix ends the listing.
        let names: Vec<StreamName> = names
            .into_iter()
            .take_while(|n| n.starts_with(prefix))
            .map(|n| {
                StreamName::stored(n).map_err(|e| RedisError::reply("ZRANGEBYLEX", e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        if names.is_empty() {
            return Ok((Vec::new(), None, false));
        }
        let more = names.len() == limit;
        let last = names.last().cloned();
        let (states, lifecycles) = self
            .heads_and_lifecycles(names.iter().map(StreamName::as_str))
            .await?;
        let mut out = Vec::with_capacity(names.len());
        for ((stream, state), lifecycle) in names.into_iter().zip(states).zip(lifecycles) {
            let state = state.ok_or_else(|| {
                RedisError::reply(
                    "HMGET",
                    format!("stream {stream} is indexed but has no head"),
                )
            })?;
            let (version, last_position) = parse_heads("HMGET", &state)?;
            if let Some(text) = lifecycle {
                let l = lifecycle::Stored::parse("HMGET", &text)?.lifecycle;
                if l.tombstoned || l.visible_version(version) == Version::NONE {
                    continue;
                }
            }
            out.push(StreamInfo {
                stream,
                version,
                last_position,
            });
        }
        Ok((out, last, more))
    }
}

#[async_trait]
impl EventStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.inner.options.limits.check_append(&request)?;
        // A single append is a one-part call of the same function.
        let request = MultiAppendRequest::from(request);
        match self.call_append(&request).await {
            Ok(outcome) => outcome
                .parts
                .into_iter()
                .next()
                .ok_or_else(|| RedisError::reply("FCALL", "append reply has no part").into()),
            Err(StoreError::Conflicts(c)) if c.len() == 1 => {
                Err(StoreError::conflict(c.into_iter().next().ok_or_else(
                    || StoreError::from(RedisError::reply("FCALL", "no conflict")),
                )?))
            }
            Err(e) => Err(e),
        }
    }

    async fn append_multi(
        &self,
        request: MultiAppendRequest,
    ) -> Result<MultiAppendOutcome, StoreError> {
        self.inner.options.limits.check_multi_append(&request)?;
        self.call_append(&request).await
    }

    async fn query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<QueryPage, StoreError> {
        query.validate()?;
        let limit = self.inner.options.limits.query_page(limit);
        let head = self.head().await?;
        if after >= head {
            return Ok(QueryPage {
                events: Vec::new(),
                head,
                next: None,
            });
        }
        if query.items.is_empty() {
            let page = self.read_all(after.next(), &Filter::all(), limit).await?;
            let events: Vec<RecordedEvent> = page
                .events
                .into_iter()
                .filter(|e| e.position <= head)
                .collect();
            let next = match events.last() {
                Some(l) if events.len() == limit && l.position < head => Some(l.position),
                _ => None,
            };
            return Ok(QueryPage { events, head, next });
        }
        // One more than asked, to know whether a next page exists.
        let want = limit + 1;
        let mut positions = BTreeSet::new();
        for item in &query.items {
            positions.extend(self.item_positions(item, after, head, want).await?);
        }
        let positions: Vec<u64> = positions.into_iter().take(want).collect();
        let more = positions.len() > limit;
        let mut pipe = redis::pipe();
        for p in positions.iter().take(limit) {
            pipe.cmd("XRANGE")
                .arg(self.inner.keys.all())
                .arg(format!("{p}-0"))
                .arg(format!("{p}-0"));
        }
        let replies: Vec<Value> = if positions.is_empty() {
            Vec::new()
        } else {
            self.query_pipe("XRANGE", &pipe).await?
        };
        let mut events = Vec::with_capacity(replies.len());
        for r in &replies {
            events.extend(decode::entries("XRANGE", r, |e| {
                decode::global_entry("XRANGE", e)
            })?);
        }
        let next = if more {
            events.last().map(|e| e.position)
        } else {
            None
        };
        Ok(QueryPage { events, head, next })
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = limit.min(self.inner.options.limits.read_limit_max);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.inner.keys.stream(stream);
        let range = |from: Version| {
            let mut c = match direction {
                Direction::Forward => redis::cmd("XRANGE"),
                Direction::Backward => redis::cmd("XREVRANGE"),
            };
            c.arg(&key).arg(format!("{from}-0"));
            c.arg(if direction == Direction::Forward {
                "+"
            } else {
                "-"
            });
            c.arg("COUNT").arg(limit);
            c
        };
        let command = match direction {
            Direction::Forward => "XRANGE",
            Direction::Backward => "XREVRANGE",
        };
        // The range, the stream's lifecycle and its last version in one round trip; a
        // second only when a forward read starts below what the lifecycle shows.
        let mut pipe = redis::pipe();
        pipe.add_command(range(from));
        pipe.cmd("HGET")
            .arg(self.inner.keys.lifecycle())
            .arg(stream.as_str());
        pipe.cmd("HGET")
            .arg(self.inner.keys.heads())
            .arg(stream.as_str());
        let (mut reply, lifecycle, heads): (Value, Option<Vec<u8>>, Option<Vec<u8>>) =
            self.query_pipe(command, &pipe).await?;
        let Some(lifecycle) = lifecycle else {
            return Ok(decode::entries(command, &reply, |e| {
                decode::stream_entry(command, stream, e)
            })?);
        };
        let stored = lifecycle::Stored::parse("HGET", &lifecycle)?;
        if stored.lifecycle.tombstoned {
            return Err(StoreError::StreamDeleted(stream.clone()));
        }
        let last = match heads {
            Some(h) => parse_heads("HGET", &h)?.0,
            None => Version::NONE,
        };
        let floor = stored.floor(last);
        if direction == Direction::Forward && from < floor {
            reply = self.query(command, &range(floor)).await?;
        }
        let mut events = decode::entries(command, &reply, |e| {
            decode::stream_entry(command, stream, e)
        })?;
        stored.filter(&mut events, last);
        Ok(events)
    }

    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError> {
        filter.validate()?;
        let limit = limit.min(self.inner.options.limits.read_limit_max);
        let all = self.inner.keys.all();
        // A filtered read starts with the page it was asked for and widens the range four
        // times per round trip up to SCAN_BATCH: when most entries match (a group over a
        // category), it parses about what it returns instead of SCAN_BATCH entries a page.
        let mut batch = if filter.is_all() {
            limit.max(1)
        } else {
            limit.clamp(1, SCAN_BATCH)
        };
        let mut events = Vec::new();
        // Position 0 is "before the first event": reading from it is reading from 1.
        let mut cursor = from.max(Position::FIRST);
        let mut head = Position::ZERO;
        for _ in 0..SCAN_ROUND_TRIPS_MAX {
            // The head is read after the range, so it is at least every position seen.
            // The head before the range bounds what an exhausted range has covered: a
            // scavenge may have erased the last positions, so the entries alone cannot say.
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(self.inner.keys.head());
            pipe.cmd("XRANGE")
                .arg(&all)
                .arg(format!("{cursor}-0"))
                .arg("+")
                .arg("COUNT")
                .arg(batch);
            pipe.cmd("GET").arg(self.inner.keys.head());
            let (before, entries, last) = self.global_range(&pipe).await?;
            head = Position(last.unwrap_or(0));
            let exhausted = entries.len() < batch;
            let covered = Position(before.unwrap_or(0)).next();
            for e in entries {
                if events.len() == limit {
                    return Ok(AllPage {
                        events,
                        next_from: e.position,
                        head,
                    });
                }
                cursor = e.position.next();
                if filter.matches(&e) {
                    events.push(e);
                }
            }
            if exhausted {
                cursor = cursor.max(covered);
                break;
            }
            if events.len() == limit {
                break;
            }
            if !filter.is_all() {
                batch = batch.saturating_mul(4).min(SCAN_BATCH);
            }
        }
        Ok(AllPage {
            events,
            next_from: cursor,
            head,
        })
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(self.inner.keys.heads())
            .arg(stream.as_str());
        pipe.cmd("HGET")
            .arg(self.inner.keys.lifecycle())
            .arg(stream.as_str());
        let (state, lifecycle): (Option<Vec<u8>>, Option<Vec<u8>>) =
            self.query_pipe("HGET", &pipe).await?;
        let last = match state {
            None => Version::NONE,
            Some(v) => parse_heads("HGET", &v)?.0,
        };
        match lifecycle {
            None => Ok(last),
            Some(text) => {
                let stored = lifecycle::Stored::parse("HGET", &text)?;
                stored.lifecycle.check_not_tombstoned(stream)?;
                Ok(stored.lifecycle.visible_version(last))
            }
        }
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let limit = limit.min(self.inner.options.limits.read_limit_max);
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Deleted streams stay in the index but are not listed: page until `limit` are
        // listed or the names run out.
        let mut out = Vec::with_capacity(limit);
        let mut after = after.cloned();
        loop {
            let (page, last, more) = self.list_page(prefix, after.as_ref(), limit).await?;
            out.extend(page);
            if out.len() >= limit || !more {
                out.truncate(limit);
                return Ok(out);
            }
            after = last;
        }
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let head: Option<u64> = self
            .query("GET", redis::cmd("GET").arg(self.inner.keys.head()))
            .await?;
        let head = Position(head.unwrap_or(0));
        self.inner.signal.advance(head);
        Ok(head)
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, DeleteMode::Soft, expected).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, DeleteMode::Tombstone, expected).await
    }

    async fn tombstone_stream_name(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, DeleteMode::TombstoneName, expected)
            .await
    }

    async fn import(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        self.import_events(events).await
    }

    async fn list_stream_pasts(
        &self,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamPast>, StoreError> {
        self.stream_pasts(after, limit.min(self.inner.options.limits.read_limit_max))
            .await
    }

    async fn import_stream_past(&self, past: &StreamPast) -> Result<(), StoreError> {
        self.import_past(past).await
    }

    async fn import_head(&self, head: Position) -> Result<(), StoreError> {
        self.raise_head(head).await
    }

    async fn stream_lifecycle(&self, stream: &StreamName) -> Result<StreamLifecycle, StoreError> {
        self.lifecycle(stream).await
    }

    async fn stream_metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError> {
        self.metadata(stream).await
    }

    async fn change_stream_metadata(
        &self,
        stream: &StreamName,
        change: MetadataChange,
    ) -> Result<StreamMetadata, StoreError> {
        self.change_metadata(stream, change).await
    }

    async fn scavenge(&self) -> Result<ScavengeReport, StoreError> {
        self.run_scavenge().await
    }

    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
        let known = self.inner.signal.head();
        if known > after {
            return Ok(known);
        }
        self.ensure_watcher();
        match tokio::time::timeout(WAIT_FOR_HEAD_MAX, self.inner.signal.wait_beyond(after)).await {
            Ok(head) => Ok(head),
            Err(_) => self.head().await,
        }
    }
}
