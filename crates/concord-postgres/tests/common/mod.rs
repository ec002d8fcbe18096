//! Helpers shared by the Postgres integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use concord_postgres::PostgresStore;
use concord_testkit::TestStore;
use concord_testkit::postgres::shared;

/// A fresh, empty store: a new schema in this test binary's throwaway PostgreSQL.
pub(crate) async fn fresh_store() -> PostgresStore {
    PostgresStore::connect(&shared().url_with_fresh_schema())
        .await
        .expect("connect to the test PostgreSQL")
}

/// As [`fresh_store`], for the conformance suite and the model check.
pub(crate) async fn fresh() -> TestStore {
    TestStore::new(Arc::new(fresh_store().await))
}
