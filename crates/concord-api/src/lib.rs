//! Concord's HTTP contract (`docs/http-api.md`) as plain serde types.
//!
//! **API boundary:** the server and the Rust client share these definitions, so a body
//! can only change in one place. Event, name and version types come from `concord-core`
//! and already serialise as the wire shows.
//!
//! It is not: an HTTP stack (no axum, no reqwest), and it does not map errors to status
//! codes. That mapping lives once, in `concord-server`'s `ApiError`.

mod bodies;
mod groups;
mod lifecycle;
mod params;
mod problem;
mod projections;

pub use bodies::{
    AllEvents, AppendBody, AppendPartBody, AppendResult, ConflictPart, HeadBody, Health,
    MultiAppendBody, MultiAppendResult, PartResult, QueryBody, QueryResult, Rebased, StreamList,
    StreamPage,
};
pub use groups::{
    AckBody, AckResult, GroupList, GroupStatus, MessageBody, NackBody, NackResult,
    PARKED_LIMIT_DEFAULT, POLL_MAX_DEFAULT, POLL_WAIT_MS_DEFAULT, POLL_WAIT_MS_MAX, ParkedEvent,
    ParkedList, ParkedParams, PollBody, PollResult, ReplayResult,
};
pub use lifecycle::{DeleteStreamParams, MetadataBody};
pub use params::{
    HeadParams, ListStreamsParams, ReadAllParams, ReadStreamParams, SubscribeAllParams,
    SubscribeStreamParams, split_list,
};
pub use problem::{PROBLEM_CONTENT_TYPE, Problem, ProblemType};
pub use projections::{
    PROJECTION_WAIT_MS_DEFAULT, PROJECTION_WAIT_MS_MAX, ProjectionFailure, ProjectionInfo,
    ProjectionList, ProjectionRow, ProjectionRowParams,
};

/// Events a read returns when the request gives no `limit`.
pub const READ_LIMIT_DEFAULT: usize = 100;
