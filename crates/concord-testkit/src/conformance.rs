//! The conformance suite: one async function per behaviour of the contract in API.md,
//! each taking a fresh, empty store. [`conformance_suite!`](crate::conformance_suite)
//! expands to one named `#[tokio::test]` per spec, so a failure names the behaviour.
//!
//! Use it in a backend's `tests/conformance.rs`:
//! ```text
//! async fn fresh() -> concord_testkit::TestStore { /* open an empty store */ }
//! concord_testkit::conformance_suite!(fresh);
//! ```

use std::sync::Arc;

use concord_core::{doc, AppendRequest, EventStore, ExpectedVersion, Version};

/// An append with an exact expectation succeeds and the next one is at the next version.
pub async fn exact_expected_version_appends_in_order(store: Arc<dyn EventStore>) {
    let s = doc::stream("account-1");
    let a = store
        .append(AppendRequest::new(s.clone(), ExpectedVersion::NoStream, vec![doc::event("AccountOpened", serde_json::json!({"owner": "ann", "balance": 1000}))]))
        .await
        .unwrap();
    assert_eq!(a.appended().first_version, Version(1));
    let b = store
        .append(AppendRequest::new(s.clone(), ExpectedVersion::Exact(Version(1)), vec![doc::event("Deposited", serde_json::json!({"amount": 2000}))]))
        .await
        .unwrap();
    assert_eq!(b.appended().first_version, Version(2));
    assert_eq!(store.stream_version(&s).await.unwrap(), Version(2));
}

/// Expands to one `#[tokio::test]` per conformance spec, each on a fresh store from
/// `$factory` (an `async fn() -> TestStore`).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@specs $factory;
            exact_expected_version_appends_in_order,
        );
    };
    (@specs $factory:path; $($spec:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $spec() {
                let test_store: $crate::TestStore = $factory().await;
                $crate::conformance::$spec(test_store.store.clone()).await;
                drop(test_store);
            }
        )*
    };
}
