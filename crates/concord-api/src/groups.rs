//! Bodies of the consumer-group endpoints, `/groups/...` (shared/API.md, "Consumer
//! groups"). The settings' parts (`Source`, `Ordering`, `NackAction`) are
//! `concord-groups`' own types, which already serialise as the wire shows.

use concord_core::RecordedEvent;
use concord_groups::{GroupInfo, GroupSettings, Start};
pub use concord_groups::{NackAction, Ordering, Source};
use serde::{Deserialize, Serialize};

/// The longest a poll may wait, in milliseconds.
pub const GROUP_WAIT_MS_MAX: u64 = 60_000;
/// How many messages a poll asks for when it does not say.
pub const GROUP_POLL_MAX_DEFAULT: usize = 100;

/// Where a new group starts: `"start"`, `"end"`, or a position (source `all`) or version
/// (source `stream`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupFrom {
    /// At this position or version.
    At(u64),
    /// `start` or `end`.
    Named(GroupFromName),
}

/// `"start"` or `"end"`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupFromName {
    /// The first event.
    Start,
    /// After the last event when the group is created.
    End,
}

impl Default for GroupFrom {
    fn default() -> Self {
        GroupFrom::Named(GroupFromName::Start)
    }
}

impl From<GroupFrom> for Start {
    fn from(f: GroupFrom) -> Start {
        match f {
            GroupFrom::At(n) => Start::At(n),
            GroupFrom::Named(GroupFromName::Start) => Start::Start,
            GroupFrom::Named(GroupFromName::End) => Start::End,
        }
    }
}

impl From<Start> for GroupFrom {
    fn from(s: Start) -> GroupFrom {
        match s {
            Start::At(n) => GroupFrom::At(n),
            Start::Start => GroupFrom::Named(GroupFromName::Start),
            Start::End => GroupFrom::Named(GroupFromName::End),
        }
    }
}

fn ack_timeout_default() -> u64 {
    30_000
}
fn max_deliveries_default() -> u32 {
    5
}
fn poll_max_default() -> usize {
    GROUP_POLL_MAX_DEFAULT
}

/// `PUT /groups/{group}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    /// `{"stream": "s"}` or `{"all": {"category"?, "types"?, "tags"?}}`.
    pub source: Source,
    /// Where a new group starts.
    #[serde(default)]
    pub from: GroupFrom,
    /// How long a delivery waits for its ack (at least 100).
    #[serde(default = "ack_timeout_default")]
    pub ack_timeout_ms: u64,
    /// Deliveries before an event is parked (at least 1).
    #[serde(default = "max_deliveries_default")]
    pub max_deliveries: u32,
    /// `none` or `per_stream`.
    #[serde(default)]
    pub ordering: Ordering,
}

impl From<GroupBody> for GroupSettings {
    fn from(b: GroupBody) -> GroupSettings {
        GroupSettings {
            source: b.source,
            start: b.from.into(),
            ack_timeout_ms: b.ack_timeout_ms,
            max_deliveries: b.max_deliveries,
            ordering: b.ordering,
        }
    }
}

/// `GET /groups/{group}` (and each item of [`GroupList`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupView {
    /// The group's name.
    pub group: String,
    /// Its source.
    pub source: Source,
    /// Where it started.
    pub from: GroupFrom,
    /// Its ack timeout.
    pub ack_timeout_ms: u64,
    /// Its deliveries before parking.
    pub max_deliveries: u32,
    /// Its ordering.
    pub ordering: Ordering,
    /// Events acked.
    pub acked: u64,
    /// Events skipped by a nack.
    pub skipped: u64,
    /// Events delivered and not answered.
    pub in_flight: u64,
    /// Events parked.
    pub parked: u64,
    /// Source events not yet acked, in flight or parked.
    pub pending: u64,
}

impl From<GroupInfo> for GroupView {
    fn from(i: GroupInfo) -> GroupView {
        GroupView {
            group: i.group,
            source: i.settings.source,
            from: i.settings.start.into(),
            ack_timeout_ms: i.settings.ack_timeout_ms,
            max_deliveries: i.settings.max_deliveries,
            ordering: i.settings.ordering,
            acked: i.acked,
            skipped: i.skipped,
            in_flight: i.in_flight,
            parked: i.parked,
            pending: i.pending,
        }
    }
}

/// `GET /groups`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GroupList {
    /// Every group, by name.
    pub groups: Vec<GroupView>,
}

/// `POST /groups/{group}/poll`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollBody {
    /// Who asks (1–256 bytes).
    pub consumer: String,
    /// At most this many messages (1–1000).
    #[serde(default = "poll_max_default")]
    pub max: usize,
    /// Wait up to this long for a first message (0–60000).
    #[serde(default)]
    pub wait_ms: u64,
}

/// One delivered event.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct GroupMessage {
    /// What acks or nacks it.
    pub ack_id: String,
    /// Which delivery this is, from 1.
    pub delivery: u32,
    /// The event.
    pub event: RecordedEvent,
}

/// The answer to a poll.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct PollResult {
    /// The messages, possibly none.
    pub messages: Vec<GroupMessage>,
}

/// `POST /groups/{group}/ack`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The deliveries answered.
    pub ack_ids: Vec<String>,
}

/// The answer to an ack.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AckResult {
    /// How many ids were current deliveries, now acked.
    pub acked: usize,
}

/// `POST /groups/{group}/nack`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NackBody {
    /// The deliveries answered.
    pub ack_ids: Vec<String>,
    /// `retry`, `park` or `skip`.
    pub action: NackAction,
}

/// The answer to a nack.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NackResult {
    /// How many ids were current deliveries, now answered.
    pub nacked: usize,
}

/// `GET /groups/{group}/parked`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ParkedList {
    /// The parked events, in source order.
    pub events: Vec<RecordedEvent>,
}

/// The answer to `POST /groups/{group}/replay-parked`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ReplayResult {
    /// How many parked events went back to the group.
    pub replayed: usize,
}
