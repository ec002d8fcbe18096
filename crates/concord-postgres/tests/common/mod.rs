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

/// How many calls of schema `schema`'s write functions of `kind` (`one`, `lone`, `batch`)
/// completed, as far as the sessions have reported them (a backend reports its counts a
/// while after it went idle, 10 s on PostgreSQL 15, or when it ends). Counted only with
/// `track_functions` on for the store's sessions (the URL's `options`).
pub(crate) fn write_function_calls(schema: &str, kind: &str) -> u64 {
    shared()
        .psql(&format!(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions \
             WHERE schemaname = '{schema}' AND funcname LIKE 'concord\\_append\\_{kind}\\_%'"
        ))
        .trim()
        .parse::<u64>()
        .expect("a count")
}

/// Waits, up to a minute, until `reported` holds: the cumulative statistics views
/// (`pg_stat_user_functions`, `pg_stat_user_indexes`) count a session's work only once it
/// reports, a while after it went idle. The caller asserts afterwards.
pub(crate) async fn wait_for_statistics(mut reported: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !reported() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The layout version schema `schema` holds (`concord_meta.format_version`).
pub(crate) fn format_version(schema: &str) -> i32 {
    shared()
        .psql(&format!("SELECT format_version FROM {schema}.concord_meta"))
        .trim()
        .parse::<i32>()
        .expect("a format version")
}

/// The greatest durable mark of schema `schema` (`concord_durable`, ADR 0004).
pub(crate) fn greatest_mark(schema: &str) -> u64 {
    shared()
        .psql(&format!(
            "SELECT max(position) FROM {schema}.concord_durable"
        ))
        .trim()
        .parse::<u64>()
        .expect("a mark")
}
