//! The whole conformance suite against a real PostgreSQL: every spec gets a fresh schema on
//! the throwaway server this test binary starts. The lifecycle specs (deletes, tombstones,
//! retention, scavenge) and the import specs (`concord copy`) run here too.
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
