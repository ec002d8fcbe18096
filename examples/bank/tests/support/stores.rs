//! The three stores every scenario test runs against, and a macro that turns one generic
//! behaviour (`async fn(Arc<dyn EventStore>)`) into one named test per store. The auction
//! and editor examples include this file by path, so the list of backends lives once.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use concord_core::MemoryStore;
use concord_embedded::EmbeddedStore;
use concord_redis::{RedisOptions, RedisStore};
use concord_testkit::TestStore;
use concord_testkit::redis::{shared, unique_prefix};

/// The reference model.
pub(crate) async fn memory() -> TestStore {
    TestStore::new(Arc::new(MemoryStore::new()))
}

/// The embedded store in a fresh temporary directory.
pub(crate) async fn embedded() -> TestStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("open the embedded store");
    TestStore::with_guard(Arc::new(store), dir)
}

/// Redis: a fresh key prefix on this test binary's redis-server.
pub(crate) async fn redis() -> TestStore {
    let options = RedisOptions {
        key_prefix: unique_prefix(),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect_with(&shared().url(), options)
        .await
        .expect("connect to the test redis-server");
    TestStore::new(Arc::new(store))
}

/// `on_every_store!(behaviour, …)`: for each behaviour, a module of that name with the tests
/// `memory`, `embedded` and `redis`, each running the behaviour on a fresh store.
#[macro_export]
macro_rules! on_every_store {
    ($($behaviour:ident),* $(,)?) => {
        $(
            mod $behaviour {
                $crate::on_every_store!(@one $behaviour, memory);
                $crate::on_every_store!(@one $behaviour, embedded);
                $crate::on_every_store!(@one $behaviour, redis);
            }
        )*
    };
    (@one $behaviour:ident, $store:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $store() {
            let test_store = super::stores::$store().await;
            super::$behaviour(test_store.store.clone()).await;
            drop(test_store);
        }
    };
}
