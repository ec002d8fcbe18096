//! The reply decoding of this crate, reachable from outside only for the criterion
//! benchmarks in `concord-bench` (feature `bench-internals`; not part of the API).
//!
//! Every append and every read decodes a reply: an `XRANGE` page of stream or global
//! entries into events, the append function's answer into an outcome. These are the
//! per-event costs the Redis backend adds on the client's side, so they are benchmarked.

use concord_core::{MultiAppendRequest, RecordedEvent, StreamName};
use redis::Value;

use crate::RedisError;
use crate::decode;
use crate::store::RedisStore;

/// Decodes an `XRANGE` reply of a stream's Redis Stream (entry ids `<version>-0`).
pub fn stream_entries(
    stream: &StreamName,
    reply: &Value,
) -> Result<Vec<RecordedEvent>, RedisError> {
    decode::entries("XRANGE", reply, |e| {
        decode::stream_entry("XRANGE", stream, e)
    })
}

/// Decodes an `XRANGE` reply of the global Redis Stream (entry ids `<position>-0`).
pub fn global_entries(reply: &Value) -> Result<Vec<RecordedEvent>, RedisError> {
    decode::entries("XRANGE", reply, |e| decode::global_entry("XRANGE", e))
}

/// Reads the RESP bytes of an `XRANGE` reply of the global Redis Stream as the store's
/// own connections do (`direct`): finds where the reply ends, cuts it into values that
/// borrow its strings, decodes the events.
pub fn global_entries_from_resp(bytes: &bytes::Bytes) -> Result<Vec<RecordedEvent>, RedisError> {
    let whole = crate::resp::Scanner::default()
        .scan(bytes)
        .map_err(|e| RedisError::reply("XRANGE", e.to_string()))?;
    if whole != Some(bytes.len()) {
        return Err(RedisError::reply("XRANGE", "not one whole reply"));
    }
    let reply = crate::resp::parse_reply("XRANGE", bytes)?;
    decode::reply_array("XRANGE", &reply)?
        .iter()
        .map(|e| decode::global_entry_read("XRANGE", e))
        .collect()
}

/// Decodes the append function's reply to `request` (what is done with it afterwards,
/// listing concurrent events, is not included).
pub fn append_reply(request: &MultiAppendRequest, reply: &Value) -> Result<(), RedisError> {
    RedisStore::decode_append(request, reply)
        .map(std::hint::black_box)
        .map(drop)
}
