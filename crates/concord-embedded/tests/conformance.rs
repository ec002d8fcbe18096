//! The conformance suite against `EmbeddedStore`: every spec, each on a fresh store in its
//! own temporary directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use concord_embedded::EmbeddedStore;
use concord_testkit::TestStore;

async fn fresh() -> TestStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("a fresh embedded store opens");
    TestStore::with_guard(Arc::new(store), dir)
}

concord_testkit::conformance_suite!(fresh);
concord_testkit::lifecycle_suite!(fresh);

// Random operation sequences, compared step by step with MemoryStore.
concord_testkit::model_check!(fresh);
concord_testkit::lifecycle_model_check!(fresh);

/// The same specs with a stream index written after every batch: every read then combines
/// the index table with entries written a moment later, and flushes interleave with the
/// specs' appends and reads.
mod index_flushed_every_batch {
    use super::*;

    async fn fresh() -> TestStore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = concord_embedded::EmbeddedOptions {
            index_flush_events: 1,
            ..concord_embedded::EmbeddedOptions::default()
        };
        let store =
            EmbeddedStore::open_with(dir.path(), options).expect("a fresh embedded store opens");
        TestStore::with_guard(Arc::new(store), dir)
    }

    concord_testkit::conformance_suite!(fresh);
    concord_testkit::lifecycle_suite!(fresh);
    concord_testkit::model_check!(fresh);
    concord_testkit::lifecycle_model_check!(fresh);
}
