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

// Random operation sequences, compared step by step with MemoryStore.
concord_testkit::model_check!(fresh);
