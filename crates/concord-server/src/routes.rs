//! The endpoints of API.md (`POST /append` and `POST /query` are in `cross`), and
//! the router that ties them to auth, limits and tracing.
//!
//! Handlers validate input into core types, check the caller's grants, call the store
//! and shape the answer; every failure is an [`ApiError`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_api::{
    AllEvents, AppendBody, AppendResult, HeadBody, HeadParams, Health, ListStreamsParams,
    READ_LIMIT_DEFAULT, ReadAllParams, ReadStreamParams, StreamList, StreamPage, split_list,
};
use concord_core::{
    AppendRequest, Category, Direction, EventStore, EventType, ExpectedVersion, Filter, Position,
    StoreError, StreamName, Tag, Version,
};
use tokio::sync::watch;

use crate::auth::{self, Access, Tokens};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::extract::{JsonBody, Params, PathParams};
use crate::finish::finished;
use crate::metrics::{AppendResultKind, Metrics};
use crate::{cross, groups, lifecycle, openapi, projections, sse, ui};

/// What every handler shares, behind one `Arc`: axum clones the state for every
/// middleware and handler of every request, and one reference count is cheaper than five.
#[derive(Clone, Debug)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) tokens: Option<Arc<Tokens>>,
    pub(crate) metrics: Arc<Metrics>,
    /// The consumer groups over `store`.
    pub(crate) groups: Arc<concord_groups::Groups>,
    /// `/openapi.json` for this server's limits and access control, built once.
    pub(crate) openapi: String,
    /// Becomes `true` when the server shuts down: subscriptions and long polls end.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Kept so the receiver above never sees a closed channel while the router lives.
    pub(crate) _shutdown_sender: Arc<watch::Sender<bool>>,
}

impl AppState {
    /// Resolves when the server is shutting down (never, for a router used alone).
    pub(crate) fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.clone();
        async move {
            if rx.wait_for(|down| *down).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Builds the application around `store`. Tokens are taken from `tokens` (already
/// loaded by `ServerConfig::validate`); `groups` are the consumer groups over `store` when
/// the gRPC protocol shares them (`None`: the router's own).
pub(crate) fn build(
    store: Arc<dyn EventStore>,
    config: ServerConfig,
    tokens: Option<Tokens>,
    shutdown_sender: Arc<watch::Sender<bool>>,
    metrics: Arc<Metrics>,
    groups: Option<Arc<concord_groups::Groups>>,
) -> Router {
    let body_max = config.limits.request_bytes_max;
    let openapi = openapi::document_json(&config, tokens.is_some());
    let state = AppState(Arc::new(Shared {
        openapi,
        groups: groups.unwrap_or_else(|| Arc::new(concord_groups::Groups::new(Arc::clone(&store)))),
        store,
        config: Arc::new(config),
        tokens: tokens.map(Arc::new),
        metrics,
        shutdown: shutdown_sender.subscribe(),
        _shutdown_sender: shutdown_sender,
    }));
    Router::new()
        .merge(ui::routes())
        .merge(projections::routes())
        .merge(groups::routes())
        .route("/health", get(health))
        .route("/metrics", get(self::metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/head", get(head))
        .route("/streams", get(list_streams))
        .route(
            "/streams/{stream}",
            post(append)
                .get(read_stream)
                .delete(lifecycle::delete_stream),
        )
        .route(
            "/streams/{stream}/metadata",
            get(lifecycle::stream_metadata).put(lifecycle::set_stream_metadata),
        )
        .route("/streams/{stream}/{version}", get(read_event))
        .route("/admin/scavenge", post(lifecycle::scavenge))
        .route("/all", get(read_all))
        .route("/append", post(cross::append_multi))
        .route("/query", post(cross::query))
        .route("/subscribe/all", get(sse::subscribe_all))
        .route("/subscribe/streams/{stream}", get(sse::subscribe_stream))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_max))
        .layer(axum::middleware::from_fn_with_state(state.clone(), front))
        .with_state(state)
}

/// What every request passes through before its route: the request's span and outcome
/// (when debug logging is on), then access control. One layer rather than two, because
/// each `from_fn` layer costs every request a boxed future and a clone of the routes.
async fn front(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if tracing::enabled!(tracing::Level::DEBUG) {
        trace(app, request, next).await
    } else {
        auth::middleware(app, request, next).await
    }
}

/// One span per request and its outcome, at debug level: a log line per request cost
/// the append path about a tenth of the server's CPU (formatting and a write to stderr),
/// so it is there when asked for (`RUST_LOG=concord_server=debug`) and free otherwise.
async fn trace(
    app: AppState,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let span =
        tracing::debug_span!("request", method = %request.method(), path = %request.uri().path());
    async move {
        let started = Instant::now();
        let response = auth::middleware(app, request, next).await;
        tracing::debug!(
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "answered"
        );
        response
    }
    .instrument(span)
    .await
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

pub(crate) fn stream_name(raw: String) -> Result<StreamName, ApiError> {
    StreamName::new(raw).map_err(|e| ApiError::invalid("stream", e.message))
}

fn limit(state: &AppState, asked: Option<usize>) -> Result<usize, ApiError> {
    let max = state.config.limits.read_limit_max;
    match asked {
        None => Ok(READ_LIMIT_DEFAULT.min(max)),
        Some(0) => Err(ApiError::invalid("limit", "limit must be at least 1")),
        Some(n) if n > max => Err(ApiError::LimitAboveMax { asked: n, max }),
        Some(n) => Ok(n),
    }
}

/// Builds a read filter from query parameters, naming the parameter at fault.
pub(crate) fn filter(
    category: Option<&str>,
    types: Option<&str>,
    tags: Option<&str>,
) -> Result<Filter, ApiError> {
    let mut f = Filter::all();
    if let Some(c) = category {
        f = f.category(Category::new(c).map_err(|e| ApiError::invalid("category", e.message))?);
    }
    f.types = split_list(types)
        .map(|t| EventType::new(t).map_err(|e| ApiError::invalid("types", e.message)))
        .collect::<Result<_, _>>()?;
    f.tags = split_list(tags)
        .map(|t| Tag::new(t).map_err(|e| ApiError::invalid("tags", e.message)))
        .collect::<Result<_, _>>()?;
    f.validate()
        .map_err(|e| ApiError::invalid(e.field, e.message))?;
    Ok(f)
}

fn etag(version: Version) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// `If-Match: "n"` as an expectation; `*` means the stream must exist (RFC 9110).
fn if_match(headers: &HeaderMap) -> Result<Option<ExpectedVersion>, ApiError> {
    let mut values = headers.get_all(IF_MATCH).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "If-Match",
            "If-Match must be one strong ETag \"<version>\" (or *)",
        )
    };
    if values.next().is_some() {
        return Err(bad());
    }
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(Some(ExpectedVersion::Exists));
    }
    let n = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(bad)?;
    n.parse::<u64>()
        .map(|n| Some(ExpectedVersion::Exact(Version(n))))
        .map_err(|_| bad())
}

/// The `If-Match` expectation, parsed where the headers are rather than from a copy of
/// them all; its error is reported after those of the path and body, as before.
struct IfMatch(Result<Option<ExpectedVersion>, ApiError>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IfMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(IfMatch(if_match(&parts.headers)))
    }
}

async fn append(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    IfMatch(from_header): IfMatch,
    body: Result<JsonBody<AppendBody>, ApiError>,
) -> Result<Response, ApiError> {
    let stream = stream_name(raw)?;
    access.write(stream.as_str())?;
    let JsonBody(body) = body?;
    let from_header = from_header?;
    let expected = match (from_header, body.expected_version) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::invalid(
                "expected_version",
                format!(
                    "If-Match says {h} but the body's expected_version says {b}; send one of them"
                ),
            ));
        }
        (h, b) => h.or(b).unwrap_or_default(),
    };
    let request = AppendRequest {
        stream,
        expected,
        events: body.events,
        rebase_unless: body.rebase_unless,
    };
    // The server's own limits apply whatever the backend's are.
    app.config.limits.check_append(&request)?;
    let events = request.events.len() as u64;
    let started = Instant::now();
    // An append that has started finishes even if the client goes away (`finish`).
    let store = Arc::clone(&app.store);
    let result = finished(async move { store.append(request).await }).await?;
    let kind = AppendResultKind::of_append(&result, events);
    app.metrics.append(kind, started.elapsed());
    let outcome = match result {
        Ok(o) => o,
        Err(StoreError::Conflict(c)) if from_header.is_some() => {
            return Err(ApiError::IfMatchConflict(c));
        }
        Err(e) => return Err(e.into()),
    };
    let status = if outcome.is_duplicate() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let tag = etag(outcome.appended().last_version);
    let mut response = (status, Json(AppendResult::from(outcome))).into_response();
    response.headers_mut().insert(ETAG, tag);
    Ok(response)
}

async fn read_stream(
    State(app): State<AppState>,
    access: Access,
    PathParams(raw): PathParams<String>,
    Params(params): Params<ReadStreamParams>,
) -> Result<Response, ApiError> {
    let stream = stream_name(raw)?;
    access.read(stream.as_str())?;
    let limit = limit(&app, params.limit)?;
    let direction = params.direction.unwrap_or_default();
    let from = Version(params.from.unwrap_or(match direction {
        Direction::Forward => 1,
        Direction::Backward => u64::MAX,
    }));
    app.metrics.read();
    let version = app.store.stream_version(&stream).await?;
    if version == Version::NONE {
        return Err(ApiError::StreamNotFound(stream));
    }
    let events = app
        .store
        .read_stream(&stream, from, direction, limit)
        .await?;
    let next = match (direction, events.last()) {
        (Direction::Forward, Some(last)) if events.len() == limit && last.version < version => {
            Some(last.version.next())
        }
        (Direction::Backward, Some(last)) if events.len() == limit && last.version > Version(1) => {
            Some(Version(last.version.get() - 1))
        }
        _ => None,
    };
    let mut response = Json(StreamPage {
        stream,
        version,
        events,
        next,
    })
    .into_response();
    response.headers_mut().insert(ETAG, etag(version));
    Ok(response)
}

async fn read_event(
    State(app): State<AppState>,
    access: Access,
    PathParams((raw, version)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let stream = stream_name(raw)?;
    access.read(stream.as_str())?;
    let version = version
        .parse::<u64>()
        .ok()
        .filter(|v| *v >= 1)
        .map(Version)
        .ok_or_else(|| {
            ApiError::invalid(
                "version",
                format!("version {version:?} is not a number from 1 up"),
            )
        })?;
    app.metrics.read();
    let events = app
        .store
        .read_stream(&stream, version, Direction::Forward, 1)
        .await?;
    match events.into_iter().next() {
        Some(event) if event.version == version => Ok(Json(event).into_response()),
        _ if app.store.stream_version(&stream).await? == Version::NONE => {
            Err(ApiError::StreamNotFound(stream))
        }
        _ => Err(ApiError::EventNotFound { stream, version }),
    }
}

async fn read_all(
    State(app): State<AppState>,
    access: Access,
    Params(params): Params<ReadAllParams>,
) -> Result<Json<AllEvents>, ApiError> {
    access.read_all()?;
    let limit = limit(&app, params.limit)?;
    let filter = filter(
        params.category.as_deref(),
        params.types.as_deref(),
        params.tags.as_deref(),
    )?;
    let from = Position(params.from.unwrap_or(1).max(1));
    app.metrics.read();
    let mut page = app.store.read_all(from, &filter, limit).await?;
    let next = (!page.is_caught_up()).then_some(page.next_from);
    // The store's own streams (a consumer group's state) are not the users' log.
    page.events.retain(|e| !e.stream.is_system());
    Ok(Json(AllEvents {
        events: page.events,
        next,
        head: page.head,
    }))
}

async fn list_streams(
    State(app): State<AppState>,
    access: Access,
    Params(params): Params<ListStreamsParams>,
) -> Result<Json<StreamList>, ApiError> {
    let prefix = params.prefix.unwrap_or_default();
    access.list(&prefix)?;
    let limit = limit(&app, params.limit)?;
    let after = params
        .after
        .map(stream_name)
        .transpose()
        .map_err(|e| match e {
            ApiError::Invalid { detail, .. } => ApiError::invalid("after", detail),
            other => other,
        })?;
    app.metrics.read();
    let mut streams = app
        .store
        .list_streams(&prefix, after.as_ref(), limit)
        .await?;
    let next = if streams.len() == limit {
        streams.last().map(|s| s.stream.clone())
    } else {
        None
    };
    streams.retain(|s| !s.stream.is_system());
    Ok(Json(StreamList { streams, next }))
}

async fn head(
    State(app): State<AppState>,
    access: Access,
    Params(params): Params<HeadParams>,
) -> Result<Json<HeadBody>, ApiError> {
    access.any_read()?;
    let head = match params.after {
        None => app.store.head().await?,
        Some(after) => {
            let after = Position(after);
            let wait = wait_beyond(app.store.as_ref(), after);
            tokio::select! {
                waited = tokio::time::timeout(app.config.head_long_poll, wait) => match waited {
                    Ok(head) => head?,
                    Err(_) => app.store.head().await?,
                },
                () = app.shutting_down() => app.store.head().await?,
            }
        }
    };
    Ok(Json(HeadBody { head }))
}

/// Waits until the head is beyond `after`. A backend's `wait_for_head` may return earlier
/// (Redis after 2 s), so it is asked again until the head has moved; the caller bounds the
/// whole wait.
async fn wait_beyond(store: &dyn EventStore, after: Position) -> Result<Position, StoreError> {
    loop {
        let head = store.wait_for_head(after).await?;
        if head > after {
            return Ok(head);
        }
    }
}

async fn health(State(app): State<AppState>) -> Response {
    let store = app.store.backend().to_owned();
    let version = env!("CARGO_PKG_VERSION").to_owned();
    match app.store.health().await {
        Ok(()) => Json(Health {
            status: "ok".to_owned(),
            store,
            version,
            detail: None,
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: the store cannot serve");
            // The cause stays in the log: /health needs no token.
            let detail = match e {
                StoreError::Poisoned(_) => {
                    "the store refuses appends after a failed write or sync of its files; restart the server (recovery keeps every acknowledged append)"
                }
                _ => "the store cannot be reached; the server log has the cause",
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".to_owned(),
                    store,
                    version,
                    detail: Some(detail.to_owned()),
                }),
            )
                .into_response()
        }
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    let mut text = app.metrics.render(app.store.backend());
    match app.groups.list().await {
        Ok(groups) => text.push_str(&crate::metrics::render_groups(&groups)),
        Err(e) => tracing::error!(error = %e, "metrics: consumer groups unavailable"),
    }
    if let Some(host) = &app.config.projections {
        match host.list().await {
            Ok(statuses) => text.push_str(&crate::metrics::render_projections(&statuses)),
            Err(e) => tracing::error!(error = %e, "metrics: projection statuses unavailable"),
        }
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn openapi_json(State(app): State<AppState>) -> Response {
    ([(CONTENT_TYPE, "application/json")], app.openapi.clone()).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(IF_MATCH, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn if_match_takes_one_strong_version_or_a_star() {
        assert_eq!(if_match(&headers(&[])).unwrap(), None);
        assert_eq!(
            if_match(&headers(&["\"3\""])).unwrap(),
            Some(ExpectedVersion::Exact(Version(3)))
        );
        assert_eq!(
            if_match(&headers(&["*"])).unwrap(),
            Some(ExpectedVersion::Exists)
        );
        for bad in ["3", "W/\"3\"", "\"x\"", "\"-1\""] {
            assert!(if_match(&headers(&[bad])).is_err(), "{bad}");
        }
        assert!(if_match(&headers(&["\"1\"", "\"2\""])).is_err());
    }

    #[test]
    fn filters_name_the_parameter_at_fault() {
        let f = filter(
            Some("account"),
            Some("Deposited, Withdrawn"),
            Some("account:1"),
        )
        .unwrap();
        assert_eq!(f.types.len(), 2);
        assert!(
            matches!(filter(Some("a-b"), None, None), Err(ApiError::Invalid { field, .. }) if field == "category")
        );
        assert!(
            matches!(filter(None, Some("\u{1}"), None), Err(ApiError::Invalid { field, .. }) if field == "types")
        );
    }
}
