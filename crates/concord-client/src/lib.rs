//! `concord-client`: [`ConcordClient`], an [`EventStore`] that talks to `concord serve`.
//!
//! Code written against the trait (the command layer, projections, the conformance suite)
//! runs unchanged against a remote server. Problem responses come back as the
//! [`StoreError`] the server's store returned: a conflict with its concurrent events, a
//! partial duplicate, invalid input, too large; transport failures and 503 are
//! [`StoreError::Unavailable`] (re-sending an append with the same event ids is safe).
//! Subscriptions are Server-Sent Events, resumed after a dropped connection with
//! `Last-Event-ID`.
//!
//! It is not: a TLS client (plain `http://` only for now; put a TLS-terminating proxy in
//! front), nor a connection-pool tuner.
//!
//! Requests go through hyper's pooled HTTP/1.1 client directly, one kept-alive connection
//! per concurrent request: a general-purpose client (reqwest) added redirect and retry
//! layers and parsed every request's URL twice more, which cost a sixth of the client's CPU
//! in the 64-writer append benchmark, where client and server share the machine.
//!
//! ```no_run
//! # async fn run() -> Result<(), concord_core::StoreError> {
//! use concord_core::EventStore;
//! let client = concord_client::ConcordClient::new("http://127.0.0.1:2113", None)?;
//! println!("head is {}", client.head().await?);
//! # Ok(()) }
//! ```

mod error;
mod groups;
mod sse;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use concord_api::{
    AllEvents, AppendBody, AppendResult, HeadBody, MetadataBody, MultiAppendBody,
    MultiAppendResult, QueryBody, QueryResult, StreamList, StreamPage,
};
use concord_core::{
    AllPage, AppendOutcome, AppendRequest, Direction, EventStore, Filter, InvalidInput, Limits,
    MetadataChange, MultiAppendOutcome, MultiAppendRequest, Position, Query, QueryPage,
    RecordedEvent, ScavengeReport, StoreError, StreamInfo, StreamMetadata, StreamName,
    Subscription, Version,
};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use url::Url;

pub use error::{ClientError, RefusedStatus, refused_status};
pub use groups::{Consumer, ConsumerStats};
pub use sse::RECONNECTS_MAX;

use crate::error::{problem_error, transport_error};

/// The backend name this client reports.
pub const BACKEND: &str = "http";

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// An [`EventStore`] over Concord's HTTP API.
#[derive(Clone)]
pub struct ConcordClient {
    http: Pool<HttpConnector, Full<Bytes>>,
    base: Url,
    /// `Bearer <token>`, marked sensitive.
    authorization: Option<HeaderValue>,
    /// The most events one read asks for: the default read limit, until the server says it
    /// allows fewer (`--read-limit-max`), then that (shared by the clones of this client).
    read_limit_max: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for ConcordClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcordClient")
            .field("base", &self.base.as_str())
            .field("token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A whole answer: its status, whether it is a problem document, and its body.
struct Reply {
    status: StatusCode,
    problem: bool,
    body: Bytes,
}

impl Reply {
    fn json<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        const UNREADABLE: &str = "the server sent a body this client cannot read";
        // The body is checked as UTF-8 once, so that serde_json does not check each string
        // of it again (a page of events has ten per event).
        let text = std::str::from_utf8(&self.body)
            .map_err(|e| StoreError::backend(BACKEND, UNREADABLE, e))?;
        serde_json::from_str(text).map_err(|e| StoreError::backend(BACKEND, UNREADABLE, e))
    }

    /// The store error a non-success answer stands for.
    fn error(&self) -> ClientError {
        problem_error(self.status.as_u16(), &self.body)
    }
}

impl ConcordClient {
    /// A client for the server at `base_url` (`http://host:port`), sending `token` as a
    /// bearer token when given.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when `base_url` is not an `http://` URL, or `token` cannot
    /// be sent in a header.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, StoreError> {
        let base = Url::parse(base_url)
            .map_err(|e| ClientError::BadUrl(base_url.to_owned(), e.to_string()))?;
        if base.scheme() != "http" {
            return Err(ClientError::BadUrl(
                base_url.to_owned(),
                "only http:// is supported".to_owned(),
            )
            .into());
        }
        let authorization = token
            .map(|t| {
                let mut value = HeaderValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    StoreError::Invalid(InvalidInput::new(
                        "token",
                        "the token holds characters a header cannot carry",
                    ))
                })?;
                value.set_sensitive(true);
                Ok::<_, StoreError>(value)
            })
            .transpose()?;
        let mut connector = HttpConnector::new();
        // Small requests and answers: Nagle's algorithm would only delay them.
        connector.set_nodelay(true);
        // `concord serve` closes a connection idle for 10 s: the pool drops its own idle
        // connections well before, so a request never goes out on one being closed.
        let http = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build(connector);
        Ok(ConcordClient {
            http,
            base,
            authorization,
            read_limit_max: Arc::new(std::sync::atomic::AtomicUsize::new(
                Limits::default().read_limit_max,
            )),
        })
    }

    /// The URL of the path made of `segments` (each percent-encoded).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends one request; the answer's body is left to read.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, StoreError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(body))
            .map_err(|e| StoreError::backend(BACKEND, "cannot build the request", e))?;
        *request.headers_mut() = headers;
        if let Some(a) = &self.authorization {
            request.headers_mut().insert(AUTHORIZATION, a.clone());
        }
        self.http.request(request).await.map_err(transport_error)
    }

    /// Sends one request and reads its whole answer.
    async fn exchange(
        &self,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Reply, StoreError> {
        let (parts, body) = self.send(method, url, headers, body).await?.into_parts();
        let body = body.collect().await.map_err(transport_error)?.to_bytes();
        Ok(Reply {
            status: parts.status,
            problem: is_problem(&parts.headers),
            body,
        })
    }

    /// POSTs `body` as JSON.
    async fn post(&self, url: &Url, body: Vec<u8>) -> Result<Reply, StoreError> {
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(CONTENT_TYPE, JSON);
        self.exchange(Method::POST, url, headers, Bytes::from(body))
            .await
    }

    async fn get<T: DeserializeOwned>(&self, mut url: Url) -> Result<Option<T>, StoreError> {
        let mut reply = self
            .exchange(Method::GET, &url, HeaderMap::new(), Bytes::new())
            .await?;
        // A server with a smaller read limit than asked: ask again within it (a page may
        // then be shorter than asked, which every read's paging allows).
        if let Some(max) = self.learn_read_limit(&reply) {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "limit" {
                        max.to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
            reply = self
                .exchange(Method::GET, &url, HeaderMap::new(), Bytes::new())
                .await?;
        }
        match reply.status {
            s if s.is_success() => Ok(Some(reply.json()?)),
            StatusCode::NOT_FOUND if reply.problem => match reply.error() {
                ClientError::NotFound => Ok(None),
                other => Err(other.into()),
            },
            _ => Err(reply.error().into()),
        }
    }

    fn clamp(&self, limit: usize) -> usize {
        limit.min(
            self.read_limit_max
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// When `reply` refuses a `limit` above the server's read limit (400 with `max`),
    /// remembers that limit and returns it: the read is then asked again within it.
    fn learn_read_limit(&self, reply: &Reply) -> Option<usize> {
        if reply.status != StatusCode::BAD_REQUEST || !reply.problem {
            return None;
        }
        let problem: concord_api::Problem = serde_json::from_slice(&reply.body).ok()?;
        let max = usize::try_from(problem.max?).ok()?.max(1);
        if problem.field.as_deref() != Some("limit") || max >= self.clamp(usize::MAX) {
            return None;
        }
        self.read_limit_max
            .store(max, std::sync::atomic::Ordering::Relaxed);
        Some(max)
    }

    fn subscribe_url(&self, segments: &[&str]) -> Url {
        self.url(segments)
    }
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(concord_api::PROBLEM_CONTENT_TYPE))
}

fn set_filter(url: &mut Url, filter: &Filter) {
    let mut q = url.query_pairs_mut();
    if let Some(c) = &filter.category {
        q.append_pair("category", c.as_str());
    }
    if !filter.types.is_empty() {
        q.append_pair(
            "types",
            &filter
                .types
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if !filter.tags.is_empty() {
        q.append_pair(
            "tags",
            &filter
                .tags
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
}

impl ConcordClient {
    /// `DELETE /streams/{stream}`, soft or as a tombstone.
    async fn delete(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
        tombstone: bool,
    ) -> Result<(), StoreError> {
        let mut url = self.url(&["streams", stream.as_str()]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(v) = expected {
                q.append_pair("expected_version", &v.to_string());
            }
            if tombstone {
                q.append_pair("tombstone", "true");
            }
        }
        let reply = self
            .exchange(Method::DELETE, &url, HeaderMap::new(), Bytes::new())
            .await?;
        match reply.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND if reply.problem => {
                Err(StoreError::StreamNotFound(stream.clone()))
            }
            _ => Err(reply.error().into()),
        }
    }
}

#[async_trait]
impl EventStore for ConcordClient {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, expected, false).await
    }

    async fn tombstone_stream(
        &self,
        stream: &StreamName,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.delete(stream, expected, true).await
    }

    async fn stream_metadata(&self, stream: &StreamName) -> Result<StreamMetadata, StoreError> {
        let url = self.url(&["streams", stream.as_str(), "metadata"]);
        Ok(self
            .get::<StreamMetadata>(url)
            .await?
            .unwrap_or(StreamMetadata::NONE))
    }

    async fn change_stream_metadata(
        &self,
        stream: &StreamName,
        change: MetadataChange,
    ) -> Result<StreamMetadata, StoreError> {
        change.validate()?;
        let url = self.url(&["streams", stream.as_str(), "metadata"]);
        // The server merges a partial body atomically: the change crosses the wire as is.
        let body = serde_json::to_vec(&MetadataBody::from_change(change))
            .map_err(|e| StoreError::backend(BACKEND, "cannot encode the metadata", e))?;
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(CONTENT_TYPE, JSON);
        let reply = self
            .exchange(Method::PUT, &url, headers, Bytes::from(body))
            .await?;
        if reply.status.is_success() {
            Ok(reply.json::<StreamMetadata>()?)
        } else {
            Err(reply.error().into())
        }
    }

    async fn scavenge(&self) -> Result<ScavengeReport, StoreError> {
        let reply = self
            .post(&self.url(&["admin", "scavenge"]), b"{}".to_vec())
            .await?;
        if reply.status.is_success() {
            Ok(reply.json::<ScavengeReport>()?)
        } else {
            Err(reply.error().into())
        }
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let url = self.url(&["streams", request.stream.as_str()]);
        let body = AppendBody {
            expected_version: Some(request.expected),
            rebase_unless: request.rebase_unless,
            events: request.events,
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| StoreError::backend(BACKEND, "cannot encode the append", e))?;
        let reply = self.post(&url, body).await?;
        if reply.status.is_success() {
            Ok(reply.json::<AppendResult>()?.into())
        } else {
            Err(reply.error().into())
        }
    }

    async fn append_multi(
        &self,
        request: MultiAppendRequest,
    ) -> Result<MultiAppendOutcome, StoreError> {
        let query = request
            .condition
            .as_ref()
            .map(|c| c.fail_if_events_match.clone());
        let body = serde_json::to_vec(&MultiAppendBody::from(request))
            .map_err(|e| StoreError::backend(BACKEND, "cannot encode the append", e))?;
        let reply = self.post(&self.url(&["append"]), body).await?;
        if reply.status.is_success() {
            return Ok(reply.json::<MultiAppendResult>()?.into());
        }
        match StoreError::from(reply.error()) {
            // The problem does not repeat the query; this client knows it.
            StoreError::ConditionFailed(mut c) => {
                if let Some(q) = query {
                    c.query = q;
                }
                Err(StoreError::ConditionFailed(c))
            }
            other => Err(other),
        }
    }

    async fn query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<QueryPage, StoreError> {
        let body = QueryBody {
            query: query.clone(),
            after,
            limit: Some(self.clamp(limit).max(1)),
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| StoreError::backend(BACKEND, "cannot encode the query", e))?;
        let reply = self.post(&self.url(&["query"]), body).await?;
        if reply.status.is_success() {
            Ok(reply.json::<QueryResult>()?.into())
        } else {
            Err(reply.error().into())
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = self.clamp(limit);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut url = self.url(&["streams", stream.as_str()]);
        url.query_pairs_mut()
            .append_pair("from", &from.to_string())
            .append_pair("limit", &limit.to_string())
            .append_pair(
                "direction",
                match direction {
                    Direction::Forward => "forward",
                    Direction::Backward => "backward",
                },
            );
        Ok(self
            .get::<StreamPage>(url)
            .await?
            .map(|p| p.events)
            .unwrap_or_default())
    }

    async fn read_all(
        &self,
        from: Position,
        filter: &Filter,
        limit: usize,
    ) -> Result<AllPage, StoreError> {
        let limit = self.clamp(limit);
        if limit == 0 {
            let head = self.head().await?;
            return Ok(AllPage {
                events: Vec::new(),
                next_from: from,
                head,
            });
        }
        let mut url = self.url(&["all"]);
        url.query_pairs_mut()
            .append_pair("from", &from.to_string())
            .append_pair("limit", &limit.to_string());
        set_filter(&mut url, filter);
        let page: AllEvents = self.get(url).await?.ok_or_else(|| {
            StoreError::backend(BACKEND, "GET /all answered 404", ClientError::NotFound)
        })?;
        let next_from = page.next.unwrap_or_else(|| page.head.next().max(from));
        Ok(AllPage {
            events: page.events,
            next_from,
            head: page.head,
        })
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        let mut url = self.url(&["streams", stream.as_str()]);
        url.query_pairs_mut()
            .append_pair("limit", "1")
            .append_pair("direction", "backward");
        Ok(self
            .get::<StreamPage>(url)
            .await?
            .map_or(Version::NONE, |p| p.version))
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let limit = self.clamp(limit);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut url = self.url(&["streams"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("prefix", prefix)
                .append_pair("limit", &limit.to_string());
            if let Some(a) = after {
                q.append_pair("after", a.as_str());
            }
        }
        Ok(self
            .get::<StreamList>(url)
            .await?
            .map(|l| l.streams)
            .unwrap_or_default())
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let url = self.url(&["head"]);
        let body: Option<HeadBody> = self.get(url).await?;
        Ok(body.map_or(Position::ZERO, |b| b.head))
    }

    async fn wait_for_head(&self, after: Position) -> Result<Position, StoreError> {
        let mut url = self.url(&["head"]);
        url.query_pairs_mut()
            .append_pair("after", &after.to_string());
        let body: Option<HeadBody> = self.get(url).await?;
        Ok(body.map_or(Position::ZERO, |b| b.head))
    }

    fn subscribe_all(self: Arc<Self>, from: Position, filter: Filter) -> Subscription {
        let mut url = self.subscribe_url(&["subscribe", "all"]);
        url.query_pairs_mut()
            .append_pair("from", &from.max(Position::FIRST).to_string());
        set_filter(&mut url, &filter);
        sse::subscribe(self, url)
    }

    fn subscribe_stream(self: Arc<Self>, stream: StreamName, from: Version) -> Subscription {
        let mut url = self.subscribe_url(&["subscribe", "streams", stream.as_str()]);
        url.query_pairs_mut()
            .append_pair("from", &from.max(Version(1)).to_string());
        sse::subscribe(self, url)
    }
}

/// The read side of the server (`/projections`): what `concord projection` and `concord
/// query` ask a server instead of building read models of their own.
impl ConcordClient {
    /// Sends a request and reads a JSON answer; any other answer is an error (a 404 too).
    async fn call<T: DeserializeOwned>(&self, method: Method, url: Url) -> Result<T, StoreError> {
        let reply = self
            .exchange(method, &url, HeaderMap::new(), Bytes::new())
            .await?;
        if reply.status.is_success() {
            reply.json()
        } else {
            Err(reply.error().into())
        }
    }

    /// `GET /projections`: every projection the server runs.
    ///
    /// # Errors
    /// The server's refusal (401, 403) or a transport failure.
    pub async fn projections(&self) -> Result<concord_api::ProjectionList, StoreError> {
        self.call(Method::GET, self.url(&["projections"])).await
    }

    /// `GET /projections/{name}`: one projection's status.
    ///
    /// # Errors
    /// As [`ConcordClient::projections`]; an unknown projection.
    pub async fn projection(&self, name: &str) -> Result<concord_api::ProjectionInfo, StoreError> {
        self.call(Method::GET, self.url(&["projections", name]))
            .await
    }

    /// `POST /projections/{name}/rebuild`: starts a rebuild; the status right after.
    ///
    /// # Errors
    /// As [`ConcordClient::projection`].
    pub async fn rebuild_projection(
        &self,
        name: &str,
    ) -> Result<concord_api::ProjectionInfo, StoreError> {
        self.call(Method::POST, self.url(&["projections", name, "rebuild"]))
            .await
    }

    /// `GET /projections/{name}/{key}`: one read-model row, once the projection has
    /// processed `min_position` (waiting at most `wait_ms`).
    ///
    /// # Errors
    /// As [`ConcordClient::projection`]; no such row; the projection still behind.
    pub async fn projection_row(
        &self,
        name: &str,
        key: &str,
        min_position: Option<Position>,
        wait_ms: u64,
    ) -> Result<concord_api::ProjectionRow, StoreError> {
        let mut url = self.url(&["projections", name, key]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(p) = min_position {
                q.append_pair("min_position", &p.to_string());
            }
            q.append_pair("wait_ms", &wait_ms.to_string());
        }
        self.call(Method::GET, url).await
    }
}

impl ConcordClient {
    /// Opens one SSE connection to `url`, resuming after `last_id` when given.
    async fn open_sse(
        &self,
        url: &Url,
        last_id: Option<u64>,
    ) -> Result<hyper::Response<Incoming>, StoreError> {
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(id) = last_id {
            headers.insert("last-event-id", HeaderValue::from(id));
        }
        let response = self.send(Method::GET, url, headers, Bytes::new()).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(transport_error)?
            .to_bytes();
        Err(problem_error(status, &body).into())
    }
}
