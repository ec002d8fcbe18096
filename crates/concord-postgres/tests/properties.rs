//! The model check against a real PostgreSQL: random sequences of appends (every expected
//! version, rebases, duplicates, multi-stream appends with conditions) and reads compared
//! step by step with `MemoryStore`; a second run adds deletes, tombstones, retention
//! settings and scavenges.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

concord_testkit::model_check!(common::fresh);
concord_testkit::lifecycle_model_check!(common::fresh);
