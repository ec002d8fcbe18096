//! The conformance suite against `MemoryStore`, the reference model: if a spec fails
//! here, the spec (or the model) is wrong, not a backend.

use std::sync::Arc;

use concord_core::MemoryStore;
use concord_testkit::TestStore;

async fn fresh() -> TestStore {
    TestStore::new(Arc::new(MemoryStore::new()))
}

concord_testkit::conformance_suite!(fresh);
concord_testkit::lifecycle_suite!(fresh);
concord_testkit::import_suite!(fresh);
