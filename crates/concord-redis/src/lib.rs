//! Concord's Redis Streams backend.
//!
//! One Redis Stream per Concord stream, whose entry ids are the versions (`1-0`, `2-0`, …),
//! and one global Redis Stream whose entry ids are the positions. Because Redis refuses an
//! entry id not greater than the stream's last, a stale version can never be written, and
//! any Redis client can read Concord's data with `XRANGE`.
//!
//! Each append (single or multi-stream) is one `FCALL` of the `concord` Redis Function library, loaded (or upgraded)
//! on connect. The function decides the append exactly as
//! [`concord_core::plan_append`] does — duplicate check, then the expected version, then the
//! rebase rule (over *every* concurrent event, via a per-stream "last version of each type"
//! hash), then the conflict — and writes all entries, the head counter and the stream index
//! atomically. Limits are checked client-side first. A rebase or conflict names its
//! concurrent events by version range; the client lists them from the events it saw
//! written, or reads them (see `docs/design/redis-layout.md`).
//!
//! The key layout (all keys carry the hash tag `{<prefix>}`, default prefix `concord`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{concord}:stream:<stream>` | stream | the stream's events, entry id `<version>-0` |
//! | `{concord}:all` | stream | every event, entry id `<position>-0` |
//! | `{concord}:head` | string | the last position |
//! | `{concord}:ids:<stream>` | hash | event id → version (idempotency) |
//! | `{concord}:types:<stream>` | hash | event type → last version with it (rebase rule) |
//! | `{concord}:streams` | sorted set | every stream name, score 0 (listing by name) |
//! | `{concord}:stream-heads` | hash | stream → `"<version> <last position>"` |
//! | `{concord}:type:<type>` | stream | one entry per event of the type, id `<position>-0` |
//! | `{concord}:tag:<tag>` | stream | one entry per event with the tag, id `<position>-0` |
//!
//! Multi-stream appends and query conditions use the same function: all parts and the
//! condition are checked (the condition through the type and tag indexes, never a scan),
//! then everything is written, atomically. Every key carries the one hash tag, so in a
//! Redis Cluster a whole store — and any append over any of its streams — is one slot.
//!
//! ## Durability of an acknowledged append
//! An append is acknowledged when the function has run; Redis writes its effects to the
//! append-only file as one `MULTI`/`EXEC` block, and on restart discards a torn block, so
//! an append is never partly visible. What survives a crash depends on the server:
//! - `appendonly yes` + `appendfsync always`: Redis fsyncs before it replies, so every
//!   acknowledged append survives a crash of Redis or of the machine.
//! - `appendonly yes` + `appendfsync everysec` (Redis's default): survives a crash of the
//!   Redis process (the data is in the OS page cache); a power loss or kernel crash may
//!   lose the last second of acknowledged appends.
//! - no persistence (or RDB snapshots only): a restart loses everything since the last
//!   snapshot. Positions then restart from the snapshot's head.
//!
//! Replicas are asynchronous: a failover may lose acknowledged appends unless `WAIT` or
//! `min-replicas-to-write` is used (not done by this crate).
//!
//! It is not: a Redis Cluster client (the layout is ready for one: every key of an append is
//! in one slot), a cache, or a queue with consumer groups.
//!
//! ```no_run
//! # async fn example() -> Result<(), concord_core::StoreError> {
//! use concord_core::{doc, AppendRequest, EventStore, ExpectedVersion};
//! let store = concord_redis::RedisStore::connect("redis://127.0.0.1:6379/0").await?;
//! let opened = doc::event("AccountOpened", serde_json::json!({"owner": "ann", "balance": 1000}));
//! let outcome = store.append(AppendRequest::new(doc::stream("account-42"), ExpectedVersion::NoStream, vec![opened])).await?;
//! // `XRANGE {concord}:stream:account-42 - +` now shows the entry `1-0`.
//! # let _ = outcome; Ok(()) }
//! ```
//!
//! ## TLS
//! `rediss://` URLs use rustls with the `ring` crypto provider and the platform's root
//! certificates (or `SSL_CERT_FILE`); both build from crates.io with only a C compiler, no
//! system TLS library. For a private CA use [`RedisStore::connect_with_root_certificate`].

#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals;
mod decode;
mod direct;
mod error;
mod keys;
mod recent;
mod resp;
mod store;

pub use error::RedisError;
pub use keys::KeyLayout;
pub use store::{APPEND_FUNCTION, LIBRARY_SOURCE, LIBRARY_VERSION, RedisOptions, RedisStore};
