//! Helpers shared by the Redis integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use concord_redis::{RedisOptions, RedisStore};
use concord_testkit::TestStore;
use concord_testkit::redis::{shared, unique_prefix};

/// A fresh, empty store: a new key prefix on this test binary's shared server.
pub(crate) async fn fresh_store() -> RedisStore {
    let server = shared();
    let options = RedisOptions {
        key_prefix: unique_prefix(),
        ..RedisOptions::default()
    };
    RedisStore::connect_with(&server.url(), options)
        .await
        .expect("connect to the test redis-server")
}

/// As [`fresh_store`], for the conformance suite.
pub(crate) async fn fresh() -> TestStore {
    TestStore::new(Arc::new(fresh_store().await))
}

/// A store on `url` with a short timeout and its own prefix.
pub(crate) async fn store_on(url: &str, timeout: Duration) -> RedisStore {
    let options = RedisOptions {
        key_prefix: unique_prefix(),
        timeout,
        ..RedisOptions::default()
    };
    RedisStore::connect_with(url, options)
        .await
        .expect("connect to the test redis-server")
}

/// A raw connection for looking at what Concord wrote.
pub(crate) async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
