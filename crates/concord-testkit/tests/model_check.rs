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
use concord_core::{
    AllPage, AppendOutcome, AppendRequest, Direction, EventStore, Filter, MemoryStore, Position,
    RecordedEvent, StoreError, StreamInfo, StreamName, Version,
};
use concord_testkit::TestStore;
use concord_testkit::properties::{DEFAULT_CASES, run_model_check_with_seed};

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
impl EventStore for Buggy {
    fn backend(&self) -> &'static str {
        "buggy"
    }

    async fn append_multi(
        &self,
        request: concord_core::MultiAppendRequest,
    ) -> Result<concord_core::MultiAppendOutcome, StoreError> {
        self.inner.append_multi(request).await
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

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, direction, limit).await
    }

    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError> {
        self.inner.read_all(from, filter, limit).await
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.inner.stream_version(stream).await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        self.inner.list_streams(prefix, after, limit).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }

    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
        self.inner.wait_for_head(after).await
    }
}

fn model_check_fails_for(bug: Bug) -> String {
    let factory = move || async move {
        TestStore::new(Arc::new(Buggy {
            inner: MemoryStore::new(),
            bug,
        }))
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
