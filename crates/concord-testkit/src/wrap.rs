//! [`Wrap`]: a store for a test that changes one thing about another store (an append that
//! misbehaves, a wait that returns early) and passes everything else through. A test
//! implements [`Wrap`] for what it changes and uses [`Wrapped`] as the store, instead of
//! writing out every [`EventStore`] method that only forwards.

use async_trait::async_trait;
use concord_core::{
    AllPage, AppendOutcome, AppendRequest, Direction, EventStore, Filter, MultiAppendOutcome,
    MultiAppendRequest, Position, RecordedEvent, StoreError, StreamInfo, StreamName, Version,
};

/// What a wrapper changes; every method not overridden calls the same one on
/// [`Wrap::inner`].
#[async_trait]
pub trait Wrap: Send + Sync + std::fmt::Debug + 'static {
    /// The store everything else goes to.
    fn inner(&self) -> &dyn EventStore;

    /// As [`EventStore::append`].
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.inner().append(request).await
    }

    /// As [`EventStore::wait_for_head`].
    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
        self.inner().wait_for_head(after).await
    }

    /// As [`EventStore::read_all`].
    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError> {
        self.inner().read_all(from, filter, limit).await
    }

    /// As [`EventStore::stream_version`].
    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.inner().stream_version(stream).await
    }
}

/// The store a [`Wrap`] makes; it derefs to the wrapper, for the test's own controls.
#[derive(Debug)]
pub struct Wrapped<W>(pub W);

impl<W> std::ops::Deref for Wrapped<W> {
    type Target = W;
    fn deref(&self) -> &W {
        &self.0
    }
}

#[async_trait]
impl<W: Wrap> EventStore for Wrapped<W> {
    fn backend(&self) -> &'static str {
        "wrapped"
    }
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.0.append(request).await
    }
    async fn append_multi(
        &self,
        request: MultiAppendRequest,
    ) -> Result<MultiAppendOutcome, StoreError> {
        self.0.inner().append_multi(request).await
    }
    async fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0
            .inner()
            .read_stream(stream, from, direction, limit)
            .await
    }
    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError> {
        self.0.read_all(from, filter, limit).await
    }
    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.0.stream_version(stream).await
    }
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        self.0.inner().list_streams(prefix, after, limit).await
    }
    async fn head(&self) -> Result<Position, StoreError> {
        self.0.inner().head().await
    }
    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
        self.0.wait_for_head(after).await
    }
}
