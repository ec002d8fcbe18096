//! The consumer-group specs (`tests/specs`) on every backend: `MemoryStore`, the embedded
//! store in a temporary directory, Redis (a fresh key prefix on the `redis-server` this
//! test binary starts) and PostgreSQL (a fresh schema on the throwaway server it starts).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod specs;

use std::sync::Arc;

use concord_testkit::TestStore;

mod memory {
    async fn fresh() -> concord_testkit::TestStore {
        concord_testkit::TestStore::new(std::sync::Arc::new(concord_core::MemoryStore::new()))
    }
    crate::group_specs!(fresh);
}

mod embedded {
    async fn fresh() -> concord_testkit::TestStore {
        super::embedded().await
    }
    crate::group_specs!(fresh);
}

mod redis {
    async fn fresh() -> concord_testkit::TestStore {
        super::redis().await
    }
    crate::group_specs!(fresh);
}

mod postgres {
    async fn fresh() -> concord_testkit::TestStore {
        super::postgres().await
    }
    crate::group_specs!(fresh);
}

async fn embedded() -> TestStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = concord_embedded::EmbeddedStore::open(dir.path()).expect("a fresh store opens");
    TestStore::with_guard(Arc::new(store), dir)
}

async fn redis() -> TestStore {
    let options = concord_redis::RedisOptions {
        key_prefix: concord_testkit::redis::unique_prefix(),
        ..concord_redis::RedisOptions::default()
    };
    let url = concord_testkit::redis::shared().url();
    let store = concord_redis::RedisStore::connect_with(&url, options)
        .await
        .expect("connect to the test redis-server");
    TestStore::new(Arc::new(store))
}

async fn postgres() -> TestStore {
    let url = concord_testkit::postgres::shared().url_with_fresh_schema();
    let store = concord_postgres::PostgresStore::connect(&url)
        .await
        .expect("connect to the test PostgreSQL");
    TestStore::new(Arc::new(store))
}
