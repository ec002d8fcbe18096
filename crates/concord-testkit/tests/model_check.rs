//! The model check itself: `MemoryStore` against `MemoryStore` must always agree (so a
//! failure against a backend is the backend's), and a store with a planted bug must be
//! caught (so the check is not one that cannot fail).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use concord_core::{AppendOutcome, AppendRequest, EventStore, MemoryStore, StoreError, Version};
use concord_testkit::TestStore;
use concord_testkit::properties::{DEFAULT_CASES, run_model_check_with_seed};
use concord_testkit::wrap::{Wrap, Wrapped};

async fn memory() -> TestStore {
    TestStore::new(Arc::new(MemoryStore::new()))
}

concord_testkit::model_check!(memory);

/// Planted bugs a model check must find.
#[derive(Debug, Clone, Copy)]
enum Bug {
    /// Reports a re-sent append as newly appended (drops the duplicate flag).
    ForgetsDuplicates,
    /// Turns conflicts on versions of 10 or more into a backend failure (the eventually
    /// regex bug).
    LosesConflictsPastNine,
}

#[derive(Debug)]
struct Buggy {
    inner: MemoryStore,
    bug: Bug,
}

#[async_trait]
impl Wrap for Buggy {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let result = self.inner.append(request).await;
        match (self.bug, result) {
            (Bug::ForgetsDuplicates, Ok(AppendOutcome::Duplicate(a))) => {
                Ok(AppendOutcome::Appended(a))
            }
            (Bug::LosesConflictsPastNine, Err(StoreError::Conflict(c)))
                if c.actual >= Version(10) =>
            {
                Err(StoreError::Backend {
                    backend: "buggy",
                    message: "unexpected error".into(),
                    source: None,
                })
            }
            (_, other) => other,
        }
    }
}

fn model_check_fails_for(bug: Bug) -> String {
    let factory = move || async move {
        TestStore::new(Arc::new(Wrapped(Buggy {
            inner: MemoryStore::new(),
            bug,
        })))
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run_model_check_with_seed(factory, DEFAULT_CASES * 4, 20261125, false)
    }));
    let payload = result.expect_err("the model check passed a store with a planted bug");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn model_check_catches_a_store_that_forgets_duplicates() {
    let message = model_check_fails_for(Bug::ForgetsDuplicates);
    assert!(message.contains("CONCORD_TEST_SEED=20261125"), "{message}");
    assert!(message.contains("Duplicate"), "{message}");
}

#[test]
fn model_check_catches_a_store_that_loses_conflicts_past_version_nine() {
    let message = model_check_fails_for(Bug::LosesConflictsPastNine);
    assert!(message.contains("unexpected error"), "{message}");
}
