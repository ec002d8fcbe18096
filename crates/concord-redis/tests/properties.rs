//! The model check: random operation sequences (stale and ahead expectations, rebases,
//! reused ids, bulk appends, filtered reads, listings, subscriptions) on a `RedisStore` and
//! on `MemoryStore`, with identical outcomes required at every step. The seed is printed;
//! `CONCORD_TEST_SEED` replays a run, `CONCORD_TEST_SCALE` runs more cases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

concord_testkit::model_check!(common::fresh);
concord_testkit::lifecycle_model_check!(common::fresh);
