//! Bodies of the consumer-group endpoints, `/groups/...` (shared/API.md, "Consumer
//! groups"). A group's definition and its status are `concord-groups`' own types, which
//! already serialise as the wire shows; the poll, ack and nack bodies are here.

use concord_core::{RecordedEvent, StreamName, Version};
use concord_groups::{ConsumerName, GroupInfo, InFlight, NackAction};
use serde::{Deserialize, Serialize};

/// Messages a poll asks for when the body gives no `max`.
pub const POLL_MAX_DEFAULT: usize = 100;

/// How long a poll waits when the body gives no `wait_ms`: not at all.
pub const POLL_WAIT_MS_DEFAULT: u64 = 0;

/// The longest `wait_ms` a poll may ask for.
pub const POLL_WAIT_MS_MAX: u64 = 60_000;

/// Parked events `GET /groups/{group}/parked` lists when no `limit` is given.
pub const PARKED_LIMIT_DEFAULT: usize = 100;

/// `GET /groups`: every group, by name.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupList {
    /// One status per group.
    pub groups: Vec<GroupInfo>,
}

/// `GET /groups/{group}`: the group's settings and counts, and its deliveries in flight.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Settings and counts.
    #[serde(flatten)]
    pub info: GroupInfo,
    /// The deliveries in flight, by offset (at most 1000).
    #[serde(default)]
    pub in_flight_messages: Vec<InFlight>,
}

/// `POST /groups/{group}/poll`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PollBody {
    /// Who polls (1–256 bytes).
    pub consumer: ConsumerName,
    /// At most this many messages (1–1000, default 100).
    #[serde(default, deserialize_with = "concord_core::deserialize_optional_count")]
    pub max: Option<usize>,
    /// Wait up to this long for at least one message (ms, at most 60 000, default 0).
    #[serde(
        default,
        deserialize_with = "concord_groups::deserialize_optional_whole"
    )]
    pub wait_ms: Option<u64>,
}
concord_core::object_serde!(PollBody);

/// A message of a poll's answer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MessageBody {
    /// What acks or nacks this delivery.
    pub ack_id: String,
    /// 1 for the first delivery of the event, then one more for each.
    pub delivery: u32,
    /// The event.
    pub event: RecordedEvent,
}

/// The answer to a poll.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PollResult {
    /// The messages, possibly none.
    pub messages: Vec<MessageBody>,
}

/// `POST /groups/{group}/ack`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct AckBody {
    /// The deliveries done with (at most 1000).
    pub ack_ids: Vec<String>,
}
concord_core::object_serde!(AckBody);

/// The answer to an ack.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AckResult {
    /// How many of the ack ids were live; the others were ignored.
    pub acked: usize,
}

/// `POST /groups/{group}/nack`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct NackBody {
    /// The deliveries given back (at most 1000).
    pub ack_ids: Vec<String>,
    /// What to do with them (default `retry`).
    #[serde(default = "retry")]
    pub action: NackAction,
}
concord_core::object_serde!(NackBody);

fn retry() -> NackAction {
    NackAction::Retry
}

/// The answer to a nack.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NackResult {
    /// How many of the ack ids were live; the others were ignored.
    pub nacked: usize,
}

/// Query parameters of `GET /groups/{group}/parked`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParkedParams {
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A parked event.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// Its stream.
    pub stream: StreamName,
    /// Its version.
    pub version: Version,
    /// Deliveries it had before it was parked.
    pub deliveries: u32,
    /// The event (`null` when it is no longer in the store).
    pub event: Option<RecordedEvent>,
}

/// `GET /groups/{group}/parked`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ParkedList {
    /// The parked events, in source order.
    pub parked: Vec<ParkedEvent>,
}

/// The answer to `POST /groups/{group}/replay-parked`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ReplayResult {
    /// How many parked events went back to the group.
    pub replayed: usize,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn poll_bodies_read_the_api_shape_and_refuse_the_rest() {
        let body: PollBody =
            serde_json::from_str(r#"{"consumer": "worker-1", "max": 100, "wait_ms": 5000.0}"#)
                .unwrap();
        assert_eq!(body.consumer.as_str(), "worker-1");
        assert_eq!((body.max, body.wait_ms), (Some(100), Some(5000)));
        let long = format!(r#"{{"consumer": "{}"}}"#, "w".repeat(257));
        for bad in [
            r#"{}"#,
            r#"{"consumer": ""}"#,
            long.as_str(),
            r#"{"consumer": "w", "maximum": 3}"#,
            r#"["w"]"#,
        ] {
            assert!(serde_json::from_str::<PollBody>(bad).is_err(), "{bad}");
        }
        let nack: NackBody = serde_json::from_str(r#"{"ack_ids": ["1.2.1"]}"#).unwrap();
        assert_eq!(nack.action, NackAction::Retry);
        assert!(serde_json::from_str::<NackBody>(r#"{"ack_ids": [], "action": "drop"}"#).is_err());
    }
}
