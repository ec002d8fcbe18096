//! The store as the gRPC side sees it: every call goes to the server's store, and appends
//! are counted in the server's [`Metrics`] as the HTTP handlers count theirs, so `/metrics`
//! shows the appends of KurrentDB clients too. (Reads are not: `concord_reads_total` counts
//! HTTP read requests, and a gRPC read is many store reads, one per page.)
//!
//! A wrapper rather than counting inside `concord-grpc`: that crate knows nothing of the
//! server's metrics. What an append's outcome counts as is decided in one place for both
//! sides ([`AppendResultKind::of_append`], [`AppendResultKind::of_multi`]).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use concord_core::{
    AllPage, AppendOutcome, AppendRequest, Direction, EventStore, Filter, MetadataChange,
    MultiAppendOutcome, MultiAppendRequest, Position, Query, QueryPage, RecordedEvent,
    ScavengeReport, StoreError, StreamInfo, StreamLifecycle, StreamMetadata, StreamName,
    StreamPast, Subscription, Version,
};

use crate::metrics::{AppendResultKind, Metrics};

/// `inner`, with appends counted in `metrics`.
#[derive(Debug)]
pub(crate) struct Metered {
    pub(crate) inner: Arc<dyn EventStore>,
    pub(crate) metrics: Arc<Metrics>,
}

#[async_trait]
impl EventStore for Metered {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let events = request.events.len() as u64;
        let started = Instant::now();
        let result = self.inner.append(request).await;
        let kind = AppendResultKind::of_append(&result, events);
        self.metrics.append(kind, started.elapsed());
        result
    }

    async fn append_multi(
        &self,
        request: MultiAppendRequest,
    ) -> Result<MultiAppendOutcome, StoreError> {
        let events: u64 = request.parts.iter().map(|p| p.events.len() as u64).sum();
        let started = Instant::now();
        let result = self.inner.append_multi(request).await;
        let kind = AppendResultKind::of_multi(&result, events);
        self.metrics.append(kind, started.elapsed());
        result
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

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }

    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
        self.inner.wait_for_head(after).await
    }

    async fn query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<QueryPage, StoreError> {
        self.inner.query(query, after, limit).await
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.inner.delete_stream(stream, expected).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.inner.tombstone_stream(stream, expected).await
    }

    async fn tombstone_stream_name(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.inner.tombstone_stream_name(stream, expected).await
    }

    async fn stream_lifecycle(&self, stream: &StreamName) -> Result<StreamLifecycle, StoreError> {
        self.inner.stream_lifecycle(stream).await
    }

    async fn stream_metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError> {
        self.inner.stream_metadata(stream).await
    }

    async fn change_stream_metadata(
        &self,
        stream: &StreamName,
        change: MetadataChange,
    ) -> Result<StreamMetadata, StoreError> {
        self.inner.change_stream_metadata(stream, change).await
    }

    async fn set_stream_metadata(
        &self,
        stream: &StreamName,
        metadata: StreamMetadata,
    ) -> Result<StreamMetadata, StoreError> {
        self.inner.set_stream_metadata(stream, metadata).await
    }

    async fn import(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        self.inner.import(events).await
    }

    async fn list_stream_pasts(
        &self,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamPast>, StoreError> {
        self.inner.list_stream_pasts(after, limit).await
    }

    async fn import_stream_past(&self, past: &StreamPast) -> Result<(), StoreError> {
        self.inner.import_stream_past(past).await
    }

    async fn import_head(&self, head: Position) -> Result<(), StoreError> {
        self.inner.import_head(head).await
    }

    async fn scavenge(&self) -> Result<ScavengeReport, StoreError> {
        self.inner.scavenge().await
    }

    // Subscriptions run over the inner store's reads and head signal directly: their
    // catch-up pages are not counted as reads, as the HTTP side's SSE pages are not.
    fn subscribe_all(self: Arc<Self>, from: Position, filter: Filter) -> Subscription {
        Arc::clone(&self.inner).subscribe_all(from, filter)
    }

    fn subscribe_stream(self: Arc<Self>, stream: StreamName, from: Version) -> Subscription {
        Arc::clone(&self.inner).subscribe_stream(stream, from)
    }
}
