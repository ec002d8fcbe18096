//! The whole conformance suite against a real `redis-server`: every spec gets a fresh key
//! prefix on the server this test binary starts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

concord_testkit::conformance_suite!(common::fresh);
concord_testkit::lifecycle_suite!(common::fresh);
concord_testkit::import_suite!(common::fresh);
