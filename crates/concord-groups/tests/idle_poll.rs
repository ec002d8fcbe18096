//! What a poll that finds nothing costs the store: one read of the source and one check of
//! the state stream's version, not a second read of an unchanged source. Counted through
//! a wrapper around `MemoryStore`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use async_trait::async_trait;
use concord_core::{
    AllPage, EventStore, Filter, MemoryStore, Position, StoreError, StreamName, Version,
};
use concord_groups::{GroupSpec, Groups};
use concord_testkit::wrap::{Wrap, Wrapped};
use specs::{all_of, group, poll};

mod specs;

/// Counts source reads and state-version checks.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStore,
    source_reads: AtomicUsize,
    version_checks: AtomicUsize,
}

#[async_trait]
impl Wrap for Counting {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }
    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError> {
        self.source_reads.fetch_add(1, AtomicOrdering::SeqCst);
        self.inner.read_all(from, filter, limit).await
    }
    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.version_checks.fetch_add(1, AtomicOrdering::SeqCst);
        self.inner.stream_version(stream).await
    }
}

#[tokio::test]
async fn a_poll_that_finds_nothing_reads_the_source_once_and_checks_the_state_once() {
    let store = Arc::new(Wrapped(Counting::default()));
    let groups = Groups::new(Arc::clone(&store) as Arc<dyn EventStore>);
    let group = group("quiet");
    groups
        .create_or_update(&group, GroupSpec::new(all_of("order")))
        .await
        .unwrap();
    // The first poll of this process reads the group's state; count from the next one.
    assert!(poll(&groups, &group, "c", 10).await.is_empty());
    let (reads, checks) = (
        store.source_reads.load(AtomicOrdering::SeqCst),
        store.version_checks.load(AtomicOrdering::SeqCst),
    );

    let messages = poll(&groups, &group, "c", 10).await;

    assert!(messages.is_empty());
    assert_eq!(
        store.source_reads.load(AtomicOrdering::SeqCst) - reads,
        1,
        "the source is read once"
    );
    assert_eq!(
        store.version_checks.load(AtomicOrdering::SeqCst) - checks,
        1,
        "the state's version is checked once, since nothing was found on a state that may be stale"
    );
}
